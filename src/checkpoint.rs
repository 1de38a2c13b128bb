//! Checkpoints in the `safetensors` format, with the book's parameter names.
//!
//! Tensors (all f32, row-major): `embed.W [V,D]`, `rnn.Wx [D,H]`, `rnn.Wh [H,H]`, `rnn.b [H]`,
//! `affine.W [H,V]`, `affine.b [V]`. Metadata: `config` (JSON:
//! `{"cell":"rnn","vocab_size":V,"wordvec_size":D,"hidden_size":H}`) and `vocab` (JSON array of
//! the words in id order). numpy (`safetensors.numpy.save_file`) and PyTorch
//! (`safetensors.torch.save_file`) write and read the same layout.
//!
//! Files this crate writes also carry a `checksum` metadata entry (see [`to_bytes_with`]) that
//! loading verifies, so a flipped bit anywhere in the weights or metadata is an error rather
//! than a silently different model. Loading reads the header first and checks the sizes it
//! declares against the file before reading (or allocating for) the data, and refuses weights
//! that are NaN or infinite.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::Path;

use safetensors::tensor::{TensorInfo, TensorView};
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::data::vocab::Vocab;
use crate::error::{Error, Result};
use crate::model::config::{Cell, Config, Softmax};
use crate::model::params::Params;
use crate::outputs::{not_regular, write_atomic_streamed};

/// The largest header a checkpoint may declare: 100 MB (10^8 bytes). A header is about 100
/// bytes a tensor plus the vocabulary (a 1M-word vocabulary is about 10 MB), so a larger length
/// means a file that is not a checkpoint; refusing it bounds what loading reads before it
/// knows. The `safetensors` crate refuses larger headers too.
pub const MAX_HEADER_BYTES: u64 = 100_000_000;

/// The metadata key of the checksum this crate writes (see [`to_bytes_with`]).
pub const CHECKSUM_KEY: &str = "checksum";

/// The `config` metadata entry.
#[derive(Debug, Serialize, Deserialize)]
struct ConfigMeta {
    cell: String,
    vocab_size: usize,
    wordvec_size: usize,
    hidden_size: usize,
    /// Absent in files of version 0.1 (one layer).
    #[serde(default = "one")]
    layers: usize,
    /// Absent in files of version 0.1 (untied).
    #[serde(default)]
    tied: bool,
    /// Absent for the full softmax (every file before the class head).
    #[serde(default, skip_serializing_if = "Softmax::is_full")]
    softmax: Softmax,
}

/// The metadata key of a class head's partition: a JSON array of the first id of each class
/// (see [`Params::class_starts`]), which with the vocabulary's order is the word-to-class map.
pub const CLASSES_KEY: &str = "classes";

fn one() -> usize {
    1
}

/// A loaded checkpoint: parameters and, when the file has one, the vocabulary.
///
/// ```
/// use rand::SeedableRng;
/// use rnnlm::checkpoint::{from_bytes, to_bytes};
/// let cfg = rnnlm::Config::new(3, 2, 2).unwrap();
/// let params = rnnlm::Params::init_book(cfg, &mut rand_chacha::ChaCha8Rng::seed_from_u64(1));
/// let ck = from_bytes(&to_bytes(&params, None).unwrap(), "mem".as_ref()).unwrap();
/// assert_eq!(ck.params, params);
/// assert!(ck.vocab.is_none() && ck.extra_tensors.is_empty()); // saved without them
/// let config = r#"{"cell":"rnn","vocab_size":3,"wordvec_size":2,"hidden_size":2,"layers":1,"tied":false}"#;
/// assert_eq!(ck.metadata["config"], config);
/// ```
#[derive(Clone, Debug)]
pub struct Checkpoint {
    /// The weights.
    pub params: Params,
    /// The words of ids `0..V`, if the file carries a `vocab` entry.
    pub vocab: Option<Vocab>,
    /// Tensors under the [`EXTRA_PREFIX`] (a resumable training state), by name.
    pub extra_tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
    /// Every metadata entry (including `config`, `vocab` and, in files written here,
    /// the verified [`CHECKSUM_KEY`]).
    pub metadata: HashMap<String, String>,
}

/// Name prefix of tensors that are not model weights (a trainer's best model and hidden state
/// in a resumable checkpoint). Model loading keeps them aside, so a resume file is also a
/// loadable model (its current weights).
///
/// ```
/// use rnnlm::checkpoint::{to_bytes_with, EXTRA_PREFIX};
/// let params = rnnlm::Params::zeros(rnnlm::Config::new(3, 2, 2).unwrap());
/// let h = [0.5f32, -0.5];
/// let named = |name: &str| vec![(name.to_string(), vec![1, 2], &h[..])];
/// assert!(to_bytes_with(&params, None, &named(&format!("{EXTRA_PREFIX}h")), &[]).is_ok());
/// assert!(to_bytes_with(&params, None, &named("h"), &[]).is_err()); // not "trainer."
/// ```
pub const EXTRA_PREFIX: &str = "trainer.";

fn bad(path: &Path, msg: impl Into<String>) -> Error {
    Error::Checkpoint {
        path: path.to_owned(),
        msg: msg.into(),
    }
}

/// Serialises parameters and vocabulary to safetensors bytes.
///
/// # Errors
/// If the vocabulary's length is not `V`, or a weight is NaN or infinite (see
/// [`to_bytes_with`]).
///
/// ```
/// use rand::SeedableRng;
/// use rnnlm::checkpoint::{from_bytes, to_bytes};
/// let cfg = rnnlm::Config::new(3, 2, 2).unwrap();
/// let params = rnnlm::Params::init_book(cfg, &mut rand_chacha::ChaCha8Rng::seed_from_u64(1));
/// let vocab = rnnlm::Vocab::from_words(vec!["a".into(), "b".into(), "c".into()]).unwrap();
/// let bytes = to_bytes(&params, Some(&vocab)).unwrap();
/// let back = from_bytes(&bytes, "mem".as_ref()).unwrap();
/// assert_eq!((back.params, back.vocab), (params.clone(), Some(vocab)));
/// let short = rnnlm::Vocab::from_words(vec!["a".into()]).unwrap();
/// assert!(to_bytes(&params, Some(&short)).is_err()); // 1 word for V = 3
/// ```
pub fn to_bytes(params: &Params, vocab: Option<&Vocab>) -> Result<Vec<u8>> {
    to_bytes_with(params, vocab, &[], &[])
}

/// [`to_bytes`] with extra tensors (names must start with [`EXTRA_PREFIX`]) and extra
/// metadata entries.
///
/// The file's header is canonical (keys sorted, compact JSON, padded with spaces to a multiple
/// of 8 bytes), so the same weights and metadata always give the same bytes, and it carries a
/// [`CHECKSUM_KEY`] metadata entry `"sha256:<64 lower-case hex digits>"`: the SHA-256 of the
/// file as it would be without that entry and without padding, that is of
/// `len(H) as u64 little-endian ‖ H ‖ data`, where `H` is the header JSON with the `checksum`
/// entry removed from `__metadata__` (and `__metadata__` removed if that leaves it empty),
/// printed compactly with every object's keys sorted, and `data` is the data section. It thus
/// covers every tensor's name, dtype, shape, offsets and bytes, and every other metadata entry.
/// [`load`] and [`from_bytes`] verify it when present (files of version 0.1 and files written
/// by numpy or PyTorch have none and load unchecked).
///
/// # Errors
/// If the vocabulary's length is not `V`, an extra tensor is misnamed or its data does not
/// match its shape, an extra metadata entry is named [`CHECKSUM_KEY`] (the writer's own), or a
/// weight or extra tensor holds a NaN or an infinity ([`Error::Invalid`] naming the tensor and
/// the flat index: [`load`] refuses such a file, so none is made).
///
/// ```
/// use rnnlm::checkpoint::{from_bytes, to_bytes_with};
/// let params = rnnlm::Params::zeros(rnnlm::Config::new(3, 2, 2).unwrap());
/// let h = [0.5f32, -0.5];
/// let extra = [("trainer.h".to_string(), vec![1, 2], &h[..])];
/// let bytes = to_bytes_with(&params, None, &extra, &[("note", "hello".into())]).unwrap();
/// let ck = from_bytes(&bytes, "mem".as_ref()).unwrap();
/// assert_eq!(ck.extra_tensors["trainer.h"], (vec![1, 2], h.to_vec()));
/// assert_eq!(ck.metadata["note"], "hello");
/// assert!(ck.metadata["checksum"].starts_with("sha256:"));
/// assert_eq!(ck.params, params); // the extra tensor is kept apart from the weights
/// // One flipped bit in the data section (here in the last weight) is caught.
/// let mut flipped = bytes.clone();
/// *flipped.last_mut().unwrap() ^= 0x01;
/// let err = from_bytes(&flipped, "mem".as_ref()).unwrap_err().to_string();
/// assert!(err.contains("checksum mismatch"), "{err}");
/// // A diverged hidden state is refused, naming the tensor and the flat index.
/// let nan = [0.5f32, f32::NAN];
/// let extra = [("trainer.h".to_string(), vec![1, 2], &nan[..])];
/// let err = to_bytes_with(&params, None, &extra, &[]).unwrap_err().to_string();
/// assert!(err.contains("\"trainer.h\" holds NaN at flat index 1"), "{err}");
/// ```
pub fn to_bytes_with(
    params: &Params,
    vocab: Option<&Vocab>,
    extra_tensors: &[(String, Vec<usize>, &[f32])],
    extra_meta: &[(&str, String)],
) -> Result<Vec<u8>> {
    Ok(prepare(params, vocab, extra_tensors, extra_meta)?.to_vec())
}

/// The encoding of [`to_bytes_with`], borrowing the tensors (nothing copied yet).
fn prepare<'a>(
    params: &'a Params,
    vocab: Option<&Vocab>,
    extra_tensors: &[(String, Vec<usize>, &'a [f32])],
    extra_meta: &[(&str, String)],
) -> Result<Encoded<'a>> {
    let cfg = params.config();
    let mut meta = HashMap::new();
    let config = ConfigMeta {
        cell: cfg.cell.name().into(),
        vocab_size: cfg.vocab_size,
        wordvec_size: cfg.wordvec_size,
        hidden_size: cfg.hidden_size,
        layers: cfg.layers,
        tied: cfg.tied,
        softmax: cfg.softmax,
    };
    meta.insert("config".to_owned(), json(&config));
    if cfg.softmax.is_class() {
        meta.insert(CLASSES_KEY.to_owned(), json(params.class_starts()));
    }
    if let Some(v) = vocab {
        if v.len() != cfg.vocab_size {
            return Err(Error::Shape {
                what: "vocabulary".into(),
                expected: vec![cfg.vocab_size],
                found: vec![v.len()],
            });
        }
        meta.insert("vocab".to_owned(), json(v.words()));
    }
    for (k, v) in extra_meta {
        if *k == CHECKSUM_KEY || *k == CLASSES_KEY {
            return Err(Error::invalid(
                "checkpoint",
                format!("metadata entry {k:?} is the writer's own; pick another name"),
            ));
        }
        meta.insert((*k).to_owned(), v.clone());
    }
    for (name, shape, data) in extra_tensors {
        if !name.starts_with(EXTRA_PREFIX) || shape.iter().product::<usize>() != data.len() {
            return Err(Error::invalid(
                "checkpoint",
                format!(
                    "extra tensor {name:?} must start with {EXTRA_PREFIX:?} and match its shape"
                ),
            ));
        }
    }
    let mut tensors = params.tensors();
    tensors.extend(
        extra_tensors
            .iter()
            .map(|(n, s, t)| (n.clone(), s.clone(), *t)),
    );
    encode(&tensors, meta)
}

/// f32 tensors and metadata encoded as this crate writes every safetensors file (checkpoints,
/// resume files, PyTorch state dicts): every value finite, little-endian, the header canonical
/// (every object's keys sorted, compact, padded with spaces to a multiple of 8 bytes) with the
/// [`CHECKSUM_KEY`] entry of [`to_bytes_with`]. The tensors are borrowed, not copied: the
/// bytes are produced as they are written ([`Encoded::write_to`]), so saving a model needs no
/// second copy of it in memory (at V = 200k the serialised copies were what set the training
/// run's peak RSS).
pub(crate) struct Encoded<'a> {
    /// The 8-byte header length and the padded header.
    head: Vec<u8>,
    /// The data section, in file order.
    data: Vec<&'a [f32]>,
}

/// Floats converted to bytes at a time when writing or hashing the data section.
const CHUNK: usize = 16 * 1024;

/// Encodes `tensors` and `meta` (see [`Encoded`]). The data section holds the tensors sorted
/// by name, the order of the `safetensors` crate's writer (which sorts by dtype, then name;
/// here every dtype is F32), so files are byte-identical to those it wrote before.
///
/// # Errors
/// [`Error::Invalid`] naming the tensor and the flat index of a NaN or infinite value (loading
/// refuses such a file, so it is never written), or a name given twice.
pub(crate) fn encode<'a>(
    tensors: &[(String, Vec<usize>, &'a [f32])],
    meta: HashMap<String, String>,
) -> Result<Encoded<'a>> {
    for (name, _, t) in tensors {
        check_finite(name, t).map_err(|msg| Error::invalid("weights", msg))?;
    }
    let mut order: Vec<&(String, Vec<usize>, &[f32])> = tensors.iter().collect();
    order.sort_by(|a, b| a.0.cmp(&b.0));
    if let Some(w) = order.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(Error::invalid(
            "checkpoint",
            format!("tensor {:?} is given twice", w[0].0),
        ));
    }
    let mut header = Map::new();
    let mut offset = 0usize;
    for (name, shape, t) in &order {
        debug_assert_eq!(shape.iter().product::<usize>(), t.len());
        let end = offset + 4 * t.len();
        let info =
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, end]});
        header.insert(name.clone(), info);
        offset = end;
    }
    if !meta.is_empty() {
        let meta = meta.into_iter().map(|(k, v)| (k, Value::String(v)));
        header.insert("__metadata__".to_owned(), Value::Object(meta.collect()));
    }
    let data: Vec<&[f32]> = order.iter().map(|t| t.2).collect();
    let sum = checksum_with(&header, |hasher| {
        le_chunks(&data, |bytes| {
            hasher.update(bytes);
            Ok(())
        })
        .expect("hashing cannot fail");
    });
    header
        .entry("__metadata__")
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
        .expect("__metadata__ is an object")
        .insert(CHECKSUM_KEY.to_owned(), Value::String(sum));
    let mut text = serde_json::to_string(&sorted(Value::Object(header)))
        .expect("plain JSON always serialises");
    while !text.len().is_multiple_of(8) {
        text.push(' ');
    }
    let mut head = Vec::with_capacity(8 + text.len());
    head.extend_from_slice(&(text.len() as u64).to_le_bytes());
    head.extend_from_slice(text.as_bytes());
    Ok(Encoded { head, data })
}

/// Feeds the little-endian bytes of `data`'s floats to `f`, [`CHUNK`] floats at a time
/// (explicit conversion, so big-endian hosts write the same files).
fn le_chunks(data: &[&[f32]], mut f: impl FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
    let mut buf = Vec::with_capacity(4 * CHUNK.min(data.iter().map(|t| t.len()).sum()));
    for t in data {
        for c in t.chunks(CHUNK) {
            buf.clear();
            for x in c {
                buf.extend_from_slice(&x.to_le_bytes());
            }
            f(&buf)?;
        }
    }
    Ok(())
}

impl Encoded<'_> {
    /// The file's size in bytes.
    pub(crate) fn len(&self) -> usize {
        self.head.len() + 4 * self.data.iter().map(|t| t.len()).sum::<usize>()
    }

    /// Writes the file's bytes to `w` (unbuffered writes of [`CHUNK`] floats: give a file
    /// directly or through a `BufWriter`).
    pub(crate) fn write_to(&self, w: &mut impl Write) -> io::Result<()> {
        w.write_all(&self.head)?;
        le_chunks(&self.data, |bytes| w.write_all(bytes))
    }

    /// The file's bytes in memory.
    pub(crate) fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len());
        self.write_to(&mut out)
            .expect("writing to a Vec cannot fail");
        out
    }

    /// Writes the file atomically ([`write_atomic_streamed`]): never a partial file.
    pub(crate) fn write_atomic(&self, path: &Path) -> Result<()> {
        write_atomic_streamed(path, |f, _| self.write_to(f))
    }
}

/// `v` with every object's keys in sorted order. serde_json's default map is sorted already;
/// rebuilding in order keeps the bytes canonical even if a dependency turns on its
/// `preserve_order` feature (insertion order).
fn sorted(v: Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut pairs: Vec<(String, Value)> = m.into_iter().collect();
            pairs.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(pairs.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(a) => Value::Array(a.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// The checksum entry of a file with this header and data section, as defined on
/// [`to_bytes_with`] (any `checksum` entry in `header` is left out).
fn checksum_of(header: &Map<String, Value>, data: &[u8]) -> String {
    checksum_with(header, |hasher| hasher.update(data))
}

/// [`checksum_of`] with the data section fed to the hasher by `data`.
fn checksum_with(header: &Map<String, Value>, data: impl FnOnce(&mut Sha256)) -> String {
    let mut h = header.clone();
    if let Some(Value::Object(meta)) = h.get_mut("__metadata__") {
        meta.remove(CHECKSUM_KEY);
        if meta.is_empty() {
            h.remove("__metadata__");
        }
    }
    let text = serde_json::to_string(&sorted(Value::Object(h))).expect("plain JSON serialises");
    let mut hasher = Sha256::new();
    hasher.update((text.len() as u64).to_le_bytes());
    hasher.update(text.as_bytes());
    data(&mut hasher);
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for b in hasher.finalize() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

fn json<T: Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).expect("plain data always serialises")
}

/// Writes a checkpoint atomically with [`write_atomic`](crate::outputs::write_atomic): a
/// temporary file is written (streamed: no copy of the weights is made), fsynced and renamed
/// over `path`, so a crash or a full disk never leaves a broken or half-written file. A symlink is written through (the link stays a link); a directory, device, FIFO or
/// socket is refused.
///
/// # Errors
/// As [`to_bytes`] (NaN or infinite weights are refused before anything is written) and
/// [`write_atomic`](crate::outputs::write_atomic) (the temporary file is removed and an
/// existing `path` is left untouched).
///
/// ```
/// use rand::SeedableRng;
/// let cfg = rnnlm::Config::new(3, 2, 2).unwrap();
/// let params = rnnlm::Params::init_book(cfg, &mut rand_chacha::ChaCha8Rng::seed_from_u64(1));
/// let vocab = rnnlm::Vocab::from_words(vec!["<eos>".into(), "a".into(), "b".into()]).unwrap();
/// let path = std::env::temp_dir().join(format!("rnnlm-doc-{}.safetensors", std::process::id()));
/// rnnlm::checkpoint::save(&path, &params, Some(&vocab)).unwrap();
/// let back = rnnlm::checkpoint::load(&path).unwrap();
/// assert_eq!(back.params, params);
/// assert_eq!(back.vocab.unwrap().id("b"), Some(2));
/// # std::fs::remove_file(&path).unwrap();
/// ```
pub fn save(path: &Path, params: &Params, vocab: Option<&Vocab>) -> Result<()> {
    save_with(path, params, vocab, &[], &[])
}

/// [`save`] with the extra tensors and metadata of [`to_bytes_with`] (the bytes it returns),
/// streamed to the file: no serialised copy of the weights is held in memory.
///
/// # Errors
/// As [`to_bytes_with`] and [`save`].
pub fn save_with(
    path: &Path,
    params: &Params,
    vocab: Option<&Vocab>,
    extra_tensors: &[(String, Vec<usize>, &[f32])],
    extra_meta: &[(&str, String)],
) -> Result<()> {
    prepare(params, vocab, extra_tensors, extra_meta)?.write_atomic(path)
}

/// Loads a checkpoint file.
///
/// The file is read header first: it must be a regular file (or a symlink to one); its 8-byte
/// header length must be at most [`MAX_HEADER_BYTES`] and fit in the file; the header's
/// tensors must be stored back to back, each as many bytes as its dtype and shape need; and
/// `8 + header + data` must be the file's size. Only then is the data read, into one buffer of
/// exactly that size, so a huge or endless file is refused without reading it. The
/// [`CHECKSUM_KEY`] entry is verified when present, and every weight (and `trainer.*` tensor)
/// must be finite.
///
/// # Errors
/// [`Error::Io`] if the file cannot be opened or read; [`Error::Checkpoint`] naming the file
/// if it is not a regular file, is not safetensors (header length, JSON, offsets, declared
/// versus actual size), fails its checksum, lacks a tensor, has a tensor of the wrong dtype or
/// shape, an unknown tensor, a NaN or infinite value (the message names the tensor, the flat
/// index and the value), or `config` / `vocab` entries that are malformed or disagree with the
/// tensors.
///
/// ```
/// use rnnlm::checkpoint::{load, save};
/// let params = rnnlm::Params::zeros(rnnlm::Config::new(3, 2, 2).unwrap());
/// let path = std::env::temp_dir().join(format!("rnnlm-doc-load-{}", std::process::id()));
/// save(&path, &params, None).unwrap();
/// assert_eq!(load(&path).unwrap().params, params);
/// // Seven bytes short: the header's declared size says so before any data is read.
/// let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
/// f.set_len(f.metadata().unwrap().len() - 7).unwrap();
/// let err = load(&path).unwrap_err().to_string();
/// assert!(err.contains("truncated"), "{err}");
/// std::fs::remove_file(&path).unwrap();
/// assert!(matches!(load(&path), Err(rnnlm::Error::Io { .. }))); // the error names the file
/// let err = load(&std::env::temp_dir()).unwrap_err().to_string();
/// assert!(err.contains("is a directory"), "{err}");
/// ```
pub fn load(path: &Path) -> Result<Checkpoint> {
    let bytes = read_file(path)?;
    parse_verified(&bytes, path)
}

/// Reads a safetensors file header first (see [`load`]) and returns its whole bytes, checked:
/// a regular file whose header parses, whose sizes agree with the file, and whose checksum,
/// when present, matches. `load` and [`crate::convert::load_torch`] both read through here.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>> {
    // Look before opening: opening a FIFO blocks until a writer appears.
    let meta = fs::metadata(path).map_err(|e| Error::io(path, e))?;
    require_regular(path, &meta)?;
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    // Look again at what was opened, in case the path changed in between.
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    require_regular(path, &meta)?;
    let size = meta.len();
    if size < 8 {
        return Err(not_safetensors(
            path,
            format!("{size} bytes, fewer than the 8 of the header length"),
        ));
    }
    let read = |file: &mut File, buf: &mut [u8]| {
        file.read_exact(buf).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                bad(
                    path,
                    "the file shrank while being read (is something writing it?)",
                )
            } else {
                Error::io(path, e)
            }
        })
    };
    let mut first = [0u8; 8];
    read(&mut file, &mut first)?;
    let n = header_len(path, first, size)?;
    let mut buf = Vec::new();
    reserve(path, &mut buf, 8 + n)?;
    buf.extend_from_slice(&first);
    buf.resize(8 + n, 0);
    read(&mut file, &mut buf[8..])?;
    let header = parse_header(path, &buf[8..])?;
    check_size(path, &header, size)?;
    // The declared total equals `size`, a length this platform can address only if it fits.
    let data_len = usize::try_from(header.data_len).map_err(|_| {
        bad(
            path,
            format!("{size} bytes is more than this platform can hold in memory"),
        )
    })?;
    reserve(path, &mut buf, data_len)?;
    buf.resize(8 + n + data_len, 0);
    read(&mut file, &mut buf[8 + n..])?;
    verify_checksum(path, &header, &buf[8 + n..])?;
    Ok(buf)
}

/// Grows `buf`'s capacity by exactly `more` bytes, as an error (not an abort) when the memory
/// is not there.
fn reserve(path: &Path, buf: &mut Vec<u8>, more: usize) -> Result<()> {
    buf.try_reserve_exact(more).map_err(|e| {
        bad(
            path,
            format!("cannot allocate {more} bytes to read it ({e})"),
        )
    })
}

fn require_regular(path: &Path, meta: &fs::Metadata) -> Result<()> {
    match not_regular(&meta.file_type()) {
        None => Ok(()),
        Some(why) => Err(bad(path, format!("{why}; a checkpoint is a file"))),
    }
}

fn not_safetensors(path: &Path, why: impl std::fmt::Display) -> Error {
    bad(path, format!("not a valid safetensors file: {why}"))
}

/// The header length a file's first 8 bytes declare, checked against the limit and the file.
fn header_len(path: &Path, first: [u8; 8], size: u64) -> Result<usize> {
    let n = u64::from_le_bytes(first);
    if n > MAX_HEADER_BYTES {
        return Err(not_safetensors(
            path,
            format!("its first 8 bytes declare a {n}-byte header, more than the {MAX_HEADER_BYTES} allowed"),
        ));
    }
    if n > size - 8 {
        return Err(not_safetensors(
            path,
            format!(
                "its first 8 bytes declare a {n}-byte header but only {} bytes follow (truncated)",
                size - 8
            ),
        ));
    }
    Ok(n as usize)
}

/// A safetensors header, parsed and checked on its own (before any data is read).
struct Header {
    /// Its length in bytes.
    len: usize,
    /// The JSON object.
    json: Map<String, Value>,
    /// The data section's size the tensors declare (the largest `data_offsets` end).
    data_len: u64,
}

/// Parses a header: a JSON object of tensors (`dtype`, `shape`, `data_offsets`) and an optional
/// `__metadata__` object of strings. Each tensor's byte length must be its dtype's size times
/// its element count, and the tensors, in offset order, must fill the data section back to
/// back from byte 0 (as the `safetensors` crate requires).
fn parse_header(path: &Path, text: &[u8]) -> Result<Header> {
    let json: Value = serde_json::from_slice(text)
        .map_err(|e| not_safetensors(path, format!("its header is not JSON ({e})")))?;
    let Value::Object(json) = json else {
        return Err(not_safetensors(path, "its header is not a JSON object"));
    };
    let mut spans: Vec<(usize, usize, &str)> = Vec::with_capacity(json.len());
    for (name, v) in &json {
        if name == "__metadata__" {
            let ok = match v {
                Value::Null => true,
                Value::Object(m) => m.values().all(Value::is_string),
                _ => false,
            };
            if !ok {
                return Err(not_safetensors(
                    path,
                    "its __metadata__ is not an object of strings",
                ));
            }
            continue;
        }
        let info: TensorInfo = serde_json::from_value(v.clone()).map_err(|e| {
            not_safetensors(
                path,
                format!("tensor {name:?} is not described right ({e})"),
            )
        })?;
        let (start, end) = info.data_offsets;
        let bits = info
            .shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .and_then(|count| count.checked_mul(info.dtype.bitsize()));
        let held = end.checked_sub(start);
        if bits.is_none_or(|b| b % 8 != 0 || held != Some(b / 8)) {
            let need = match bits {
                Some(b) if b % 8 == 0 => format!("{} bytes", b / 8),
                Some(b) => format!("{b} bits, not whole bytes"),
                None => "more bytes than can be counted".into(),
            };
            return Err(not_safetensors(
                path,
                format!(
                    "tensor {name:?} has data_offsets [{start}, {end}] but a {:?} tensor of shape {:?} needs {need}",
                    info.dtype, info.shape
                ),
            ));
        }
        spans.push((start, end, name));
    }
    spans.sort_unstable();
    let mut at = 0;
    for (start, end, name) in spans {
        if start != at {
            return Err(not_safetensors(
                path,
                format!(
                    "tensor {name:?} starts at data byte {start}, expected {at} (tensors must be stored back to back without gaps or overlaps)"
                ),
            ));
        }
        at = end;
    }
    Ok(Header {
        len: text.len(),
        json,
        data_len: at as u64,
    })
}

/// Compares the size a header declares (`8 + header + data`) with the file's.
fn check_size(path: &Path, h: &Header, actual: u64) -> Result<()> {
    let declared = (8 + h.len as u64).saturating_add(h.data_len);
    if declared == actual {
        return Ok(());
    }
    let how = if actual < declared {
        "truncated"
    } else {
        "trailing bytes after the data"
    };
    Err(not_safetensors(
        path,
        format!(
            "its header declares {declared} bytes (8 + {} header + {} data) but the file has {actual} ({how})",
            h.len, h.data_len
        ),
    ))
}

/// Verifies the [`CHECKSUM_KEY`] metadata entry, when the file has one.
fn verify_checksum(path: &Path, h: &Header, data: &[u8]) -> Result<()> {
    let Some(Value::Object(meta)) = h.json.get("__metadata__") else {
        return Ok(());
    };
    let Some(expected) = meta.get(CHECKSUM_KEY).and_then(Value::as_str) else {
        return Ok(());
    };
    let well_formed = expected
        .strip_prefix("sha256:")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()));
    if !well_formed {
        return Err(bad(
            path,
            format!("metadata {CHECKSUM_KEY:?} is {expected:?}, not sha256:<64 hex digits>"),
        ));
    }
    let found = checksum_of(&h.json, data);
    if !found.eq_ignore_ascii_case(expected) {
        return Err(bad(
            path,
            format!("checksum mismatch: the file is corrupt (expected {expected}, found {found})"),
        ));
    }
    Ok(())
}

/// Checks whole safetensors bytes as [`read_file`] checks a file: header, sizes, checksum.
fn check_bytes(bytes: &[u8], path: &Path) -> Result<()> {
    let size = bytes.len() as u64;
    let Some(first) = bytes.first_chunk::<8>() else {
        return Err(not_safetensors(
            path,
            format!("{size} bytes, fewer than the 8 of the header length"),
        ));
    };
    let n = header_len(path, *first, size)?;
    let header = parse_header(path, &bytes[8..8 + n])?;
    check_size(path, &header, size)?;
    verify_checksum(path, &header, &bytes[8 + n..])
}

/// Refuses a NaN or infinite value in tensor `name` (the file's name for it), naming the flat
/// index and the value: such a model only produces NaN perplexities and samples. The one check
/// of weights, for loading (the caller names the file) and for saving ([`encode`]). The error
/// is the message.
pub(crate) fn check_finite(name: &str, values: &[f32]) -> std::result::Result<(), String> {
    match values.iter().position(|x| !x.is_finite()) {
        None => Ok(()),
        Some(i) => Err(format!(
            "tensor {name:?} holds {} at flat index {i}; weights must be finite (a diverged or corrupt model)",
            values[i]
        )),
    }
}

/// Parses checkpoint bytes; `path` only labels errors.
///
/// The bytes get the checks of [`load`] (header, declared versus actual size, checksum when
/// present, finite weights).
///
/// # Errors
/// As [`load`].
///
/// ```
/// let err = rnnlm::checkpoint::from_bytes(b"not safetensors", "model.safetensors".as_ref())
///     .unwrap_err();
/// assert!(matches!(err, rnnlm::Error::Checkpoint { .. }));
/// assert!(err.to_string().starts_with("checkpoint model.safetensors: "));
/// ```
pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Checkpoint> {
    check_bytes(bytes, path)?;
    parse_verified(bytes, path)
}

/// Builds a checkpoint from bytes whose header, sizes and checksum are already checked.
fn parse_verified(bytes: &[u8], path: &Path) -> Result<Checkpoint> {
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| bad(path, format!("not a valid safetensors file ({e})")))?;
    let (_, header) = SafeTensors::read_metadata(bytes)
        .map_err(|e| bad(path, format!("not a valid safetensors file ({e})")))?;
    let meta = header.metadata().clone().unwrap_or_default();

    let mut names: Vec<String> = st.names().into_iter().map(str::to_owned).collect();
    names.sort();
    let get = |name: &str| -> Result<TensorView<'_>> {
        let t = st
            .tensor(name)
            .map_err(|_| bad(path, format!("missing tensor {name:?}")))?;
        if !matches!(t.dtype(), Dtype::F32 | Dtype::F16 | Dtype::BF16) {
            return Err(bad(
                path,
                format!(
                    "tensor {name:?} is {:?}, expected F32 (or F16/BF16)",
                    t.dtype()
                ),
            ));
        }
        Ok(t)
    };
    let cfg = match meta.get("config") {
        Some(text) => config_from_meta(text, path)?,
        None => infer_config(&names, &get, path)?,
    };
    // The one-layer names without an index (files of version 0.1, the book's `lstm.*`) stand
    // for layer 0.
    let file_name = |name: &str| -> String {
        let prefix = format!("{}.0.", cfg.cell.name());
        match name.strip_prefix(&prefix) {
            Some(rest) if cfg.layers == 1 && !names.iter().any(|n| n == name) => {
                format!("{}.{rest}", cfg.cell.name())
            }
            _ => name.to_owned(),
        }
    };
    let layout = Params::layout(&cfg);
    let expected: Vec<String> = layout.iter().map(|(n, _)| file_name(n)).collect();
    for n in &names {
        if !expected.contains(n) && !n.starts_with(EXTRA_PREFIX) {
            return Err(bad(
                path,
                format!(
                    "unexpected tensor {n:?} (a {} model with {} layer(s){} has {expected:?})",
                    cfg.cell,
                    cfg.layers,
                    if cfg.tied { ", tied" } else { "" }
                ),
            ));
        }
    }
    let mut data: Vec<f32> = Vec::with_capacity(Params::len_of(&cfg));
    for ((name, shape), file) in layout.iter().zip(&expected) {
        let t = get(file)?;
        if t.shape() != shape.as_slice() {
            return Err(bad(
                path,
                format!(
                    "tensor {file:?} has shape {:?}, expected {shape:?} for {}",
                    t.shape(),
                    describe(&cfg)
                ),
            ));
        }
        let _ = name;
        let start = data.len();
        widen_into(&mut data, &t);
        check_finite(file, &data[start..]).map_err(|m| bad(path, m))?;
    }
    let v = cfg.vocab_size;
    let mut params = Params::from_vec(cfg, data);
    if cfg.softmax.is_class() {
        let text = meta.get(CLASSES_KEY).ok_or_else(|| {
            bad(
                path,
                format!("a class head needs the {CLASSES_KEY:?} metadata entry (the first id of each class)"),
            )
        })?;
        let starts: Vec<u32> = serde_json::from_str(text).map_err(|e| {
            bad(
                path,
                format!("metadata {CLASSES_KEY:?} is not a JSON array of ids ({e})"),
            )
        })?;
        params
            .set_class_starts(&starts)
            .map_err(|e| bad(path, format!("metadata {CLASSES_KEY:?}: {e}")))?;
    }

    let vocab = match meta.get("vocab") {
        None => None,
        // A free-text note where the words would be (the book's converted weights say
        // "PTB first-appearance ids"): no vocabulary, the note stays in `metadata`.
        Some(text) if !text.trim_start().starts_with('[') => None,
        Some(text) => {
            let words: Vec<String> = serde_json::from_str(text).map_err(|e| {
                bad(
                    path,
                    format!("metadata 'vocab' is not a JSON array of strings ({e})"),
                )
            })?;
            if words.len() != v {
                return Err(bad(
                    path,
                    format!(
                        "vocab has {} words, expected {v} (embed.W rows)",
                        words.len()
                    ),
                ));
            }
            Some(Vocab::from_words(words).map_err(|e| bad(path, e.to_string()))?)
        }
    };
    let mut extra_tensors = HashMap::new();
    for n in names.iter().filter(|n| n.starts_with(EXTRA_PREFIX)) {
        let t = get(n)?;
        let mut data = Vec::new();
        widen_into(&mut data, &t);
        check_finite(n, &data).map_err(|m| bad(path, m))?;
        extra_tensors.insert(n.clone(), (t.shape().to_vec(), data));
    }
    Ok(Checkpoint {
        params,
        vocab,
        extra_tensors,
        metadata: meta,
    })
}

fn describe(cfg: &Config) -> String {
    format!(
        "{} x {} (V={}, D={}, H={}{})",
        cfg.layers,
        cfg.cell,
        cfg.vocab_size,
        cfg.wordvec_size,
        cfg.hidden_size,
        if cfg.tied { ", tied" } else { "" }
    )
}

/// The configuration a `config` metadata entry declares.
fn config_from_meta(text: &str, path: &Path) -> Result<Config> {
    let c: ConfigMeta = serde_json::from_str(text)
        .map_err(|e| bad(path, format!("metadata 'config' is not valid JSON ({e})")))?;
    let cell: Cell = c.cell.parse().map_err(|_| {
        bad(
            path,
            format!("cell {:?} is not one of rnn, lstm, gru", c.cell),
        )
    })?;
    Config {
        vocab_size: c.vocab_size,
        wordvec_size: c.wordvec_size,
        hidden_size: c.hidden_size,
        cell,
        layers: c.layers,
        tied: c.tied,
        softmax: c.softmax,
    }
    .validated()
    .map_err(|e| bad(path, format!("metadata config: {e}")))
}

/// The configuration of a file without `config` metadata (such as the book's weights), read
/// off its tensor names and shapes: the cell from the prefix, the depth from the layer
/// indices, `V, D` from `embed.W`, `H` from the first `Wh`, tied when `affine.W` is absent.
fn infer_config<'a>(
    names: &[String],
    get: &dyn Fn(&str) -> Result<TensorView<'a>>,
    path: &Path,
) -> Result<Config> {
    let cell = Cell::ALL
        .iter()
        .copied()
        .find(|c| {
            names
                .iter()
                .any(|n| n.starts_with(&format!("{}.", c.name())))
        })
        .ok_or_else(|| {
            let prefixes: Vec<String> = Cell::ALL.iter().map(|c| format!("{c}.*")).collect();
            bad(
                path,
                format!(
                    "has no config metadata and no {} tensors: not a model",
                    prefixes.join(", ")
                ),
            )
        })?;
    let c = cell.name();
    let indexed = |l: usize| names.iter().any(|n| n.starts_with(&format!("{c}.{l}.")));
    let (layers, wh_name) = if indexed(0) {
        (
            (0..).take_while(|&l| indexed(l)).count(),
            format!("{c}.0.Wh"),
        )
    } else {
        (1, format!("{c}.Wh"))
    };
    let embed = get("embed.W")?;
    let wh = get(&wh_name)?;
    let ([v, d], [h, _]) = (embed.shape(), wh.shape()) else {
        return Err(bad(
            path,
            format!(
                "embed.W must be [V,D] and {wh_name} [H,GH]; found {:?} and {:?}",
                embed.shape(),
                wh.shape()
            ),
        ));
    };
    Config {
        vocab_size: *v,
        wordvec_size: *d,
        hidden_size: *h,
        cell,
        layers,
        tied: !names.iter().any(|n| n == "affine.W"),
        softmax: Softmax::Full,
    }
    .validated()
    .map_err(|e| bad(path, e.to_string()))
}

/// Appends a tensor's values as f32: F32 as stored, F16 and BF16 widened exactly (every
/// half-precision value is an f32). Other dtypes are refused before this is called.
fn widen_into(out: &mut Vec<f32>, t: &TensorView<'_>) {
    let b = t.data();
    match t.dtype() {
        Dtype::F16 => out.extend(
            b.chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()),
        ),
        Dtype::BF16 => out.extend(
            b.chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()),
        ),
        _ => out.extend(
            b.chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checksum_covers_metadata_and_data_but_not_itself_or_padding() {
        let params = Params::zeros(Config::new(3, 2, 2).unwrap());
        let bytes = to_bytes(&params, None).unwrap();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let Value::Object(h) = serde_json::from_slice(&bytes[8..8 + n]).unwrap() else {
            panic!()
        };
        let stored = h["__metadata__"][CHECKSUM_KEY].as_str().unwrap().to_owned();
        assert_eq!(checksum_of(&h, &bytes[8 + n..]), stored);
        // The checksum depends on every metadata entry and every data byte.
        let mut other = h.clone();
        other["__metadata__"]["config"] = Value::String("{}".into());
        assert_ne!(checksum_of(&other, &bytes[8 + n..]), stored);
        let mut data = bytes[8 + n..].to_vec();
        data[0] ^= 0x80;
        assert_ne!(checksum_of(&h, &data), stored);
    }
}
