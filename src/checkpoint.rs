//! Checkpoints in the `safetensors` format, with the book's parameter names.
//!
//! Tensors (all f32, row-major): `embed.W [V,D]`, `rnn.Wx [D,H]`, `rnn.Wh [H,H]`, `rnn.b [H]`,
//! `affine.W [H,V]`, `affine.b [V]`. Metadata: `config` (JSON:
//! `{"cell":"rnn","vocab_size":V,"wordvec_size":D,"hidden_size":H}`) and `vocab` (JSON array of
//! the words in id order). numpy (`safetensors.numpy.save_file`) and PyTorch
//! (`safetensors.torch.save_file`) write and read the same layout.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

use crate::data::vocab::Vocab;
use crate::error::{Error, Result};
use crate::model::config::{Cell, Config};
use crate::model::params::Params;

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
}

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
    /// Every metadata entry (including `config` and `vocab`).
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
/// If the vocabulary's length is not `V`.
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
/// # Errors
/// If the vocabulary's length is not `V`, an extra tensor is misnamed or its data does not
/// match its shape.
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
/// assert_eq!(ck.params, params); // the extra tensor is kept apart from the weights
/// ```
pub fn to_bytes_with(
    params: &Params,
    vocab: Option<&Vocab>,
    extra_tensors: &[(String, Vec<usize>, &[f32])],
    extra_meta: &[(&str, String)],
) -> Result<Vec<u8>> {
    let cfg = params.config();
    let mut meta = HashMap::new();
    let config = ConfigMeta {
        cell: cfg.cell.name().into(),
        vocab_size: cfg.vocab_size,
        wordvec_size: cfg.wordvec_size,
        hidden_size: cfg.hidden_size,
        layers: cfg.layers,
        tied: cfg.tied,
    };
    meta.insert("config".to_owned(), json(&config));
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
    // safetensors stores little-endian bytes; convert explicitly so big-endian hosts work.
    let le = |t: &[f32]| -> Vec<u8> { t.iter().flat_map(|x| x.to_le_bytes()).collect() };
    let mut named: Vec<(String, Vec<usize>, Vec<u8>)> = params
        .tensors()
        .into_iter()
        .map(|(n, s, t)| (n, s, le(t)))
        .collect();
    named.extend(
        extra_tensors
            .iter()
            .map(|(n, s, t)| (n.clone(), s.clone(), le(t))),
    );
    let views = named.iter().map(|(name, shape, data)| {
        let view = TensorView::new(Dtype::F32, shape.clone(), data)
            .expect("shape and byte length agree by construction");
        (name.clone(), view)
    });
    let bytes = safetensors::serialize(views, Some(meta))
        .map_err(|e| Error::invalid("checkpoint", e.to_string()))?;
    Ok(canonical_header(bytes))
}

/// Rewrites a safetensors file's JSON header with its keys sorted, so the same weights and
/// metadata always give the same bytes (the crate writes its metadata map in hash order).
/// The header stays padded with spaces to a multiple of 8 bytes, as the format asks.
pub(crate) fn canonical_header(bytes: Vec<u8>) -> Vec<u8> {
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8-byte length")) as usize;
    // serde_json's default map is ordered by key: parsing and printing sorts every object.
    let header: serde_json::Value =
        serde_json::from_slice(&bytes[8..8 + n]).expect("the crate wrote valid JSON");
    let mut text = serde_json::to_string(&header).expect("plain JSON always serialises");
    while !text.len().is_multiple_of(8) {
        text.push(' ');
    }
    let mut out = Vec::with_capacity(8 + text.len() + bytes.len() - 8 - n);
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(&bytes[8 + n..]);
    out
}

fn json<T: Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).expect("plain data always serialises")
}

/// Writes a checkpoint atomically: a sibling temporary file is written, fsynced and renamed
/// over `path`, so a crash or a full disk never leaves a broken or half-written file.
///
/// # Errors
/// On I/O failure (the temporary file is removed and an existing `path` is left untouched).
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
    let bytes = to_bytes(params, vocab)?;
    write_atomic(path, &bytes)
}

/// Writes `bytes` to `path` through a temporary sibling file, fsync and rename.
///
/// # Errors
/// On I/O failure; nothing is left behind.
///
/// ```
/// use rnnlm::checkpoint::write_atomic;
/// let path = std::env::temp_dir().join(format!("rnnlm-doc-atomic-{}.bin", std::process::id()));
/// write_atomic(&path, b"old").unwrap();
/// write_atomic(&path, b"new").unwrap(); // replaces the file whole
/// assert_eq!(std::fs::read(&path).unwrap(), b"new");
/// let missing = std::env::temp_dir().join(format!("rnnlm-doc-no-dir-{}", std::process::id()));
/// assert!(matches!(write_atomic(&missing.join("x"), b"x"), Err(rnnlm::Error::Io { .. })));
/// # std::fs::remove_file(&path).unwrap();
/// ```
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().ok_or_else(|| {
        Error::invalid(
            "output path",
            format!("{} has no file name", path.display()),
        )
    })?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        // Persist the rename itself; not every platform can open a directory, so best effort.
        if let Ok(d) = File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    result.map_err(|e: std::io::Error| {
        let _ = fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

/// Loads a checkpoint file.
///
/// # Errors
/// If the file cannot be read, is not safetensors, lacks a tensor, has a tensor of the wrong
/// dtype or shape, an unknown tensor, or `config` / `vocab` entries that are malformed or
/// disagree with the tensors. Every message names the file and the problem.
///
/// ```
/// use rnnlm::checkpoint::{load, save};
/// let params = rnnlm::Params::zeros(rnnlm::Config::new(3, 2, 2).unwrap());
/// let path = std::env::temp_dir().join(format!("rnnlm-doc-load-{}", std::process::id()));
/// save(&path, &params, None).unwrap();
/// assert_eq!(load(&path).unwrap().params, params);
/// std::fs::remove_file(&path).unwrap();
/// assert!(matches!(load(&path), Err(rnnlm::Error::Io { .. }))); // the error names the file
/// ```
pub fn load(path: &Path) -> Result<Checkpoint> {
    let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
    from_bytes(&bytes, path)
}

/// Parses checkpoint bytes; `path` only labels errors.
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
        widen_into(&mut data, &t);
    }
    let v = cfg.vocab_size;
    let params = Params::from_vec(cfg, data);

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
    let cell = [Cell::Rnn, Cell::Lstm, Cell::Gru]
        .into_iter()
        .find(|c| {
            names
                .iter()
                .any(|n| n.starts_with(&format!("{}.", c.name())))
        })
        .ok_or_else(|| {
            bad(
                path,
                "has no config metadata and no rnn.*, lstm.* or gru.* tensors: not a model",
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
