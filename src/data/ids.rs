//! Compact binary ids files (what `rnnlm prepare` writes), read memory-mapped, and
//! [`Tokens`], the corpus view that batching, training and evaluation read.
//!
//! The format (`.ids`), all integers little-endian:
//!
//! | offset | bytes | field |
//! |---:|---:|---|
//! | 0 | 8 | magic `RNNLMIDS` |
//! | 8 | 4 | format version, 1 |
//! | 12 | 4 | id width in bytes, 4 |
//! | 16 | 8 | token count `n` |
//! | 24 | 8 | vocabulary size `V` |
//! | 32 | 32 | SHA-256 of the vocabulary file (its words in id order, each followed by `\n`) |
//! | 64 | 4 n | the ids, `u32`, each `< V` |
//!
//! The vocabulary file (`.vocab`) holds one word per line in id order, UTF-8, each line ended
//! by `\n` ([`write_vocab`], [`read_vocab`]). It is not the `--vocab-text` format (a training
//! text, see [`read_dictionary`](super::corpus::read_dictionary)).
//!
//! Opening checks everything once: the magic, version and width, that the file holds exactly
//! the `n` ids its header announces, and that every id is below `V`; errors name the file and
//! the byte offset. [`IdsFile::check_vocab`] compares the header's checksum with a vocabulary
//! (a checkpoint's, the one a run trains with).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use sha2::{Digest, Sha256};

use super::vocab::Vocab;
use crate::error::{Error, Result};

/// The first 8 bytes of every ids file.
pub const MAGIC: &[u8; 8] = b"RNNLMIDS";
/// The format version this crate writes and reads.
pub const VERSION: u32 = 1;
/// The header's size in bytes: the ids start here (a multiple of 4, so they are aligned in a
/// mapping).
pub const HEADER_BYTES: usize = 64;

/// The header of an ids file.
///
/// ```
/// use rnnlm::data::ids::{vocab_checksum, IdsHeader, HEADER_BYTES};
/// let vocab = rnnlm::Vocab::from_words(vec!["<eos>".into(), "a".into()]).unwrap();
/// let h = IdsHeader { tokens: 5, vocab_size: 2, vocab_checksum: vocab_checksum(&vocab) };
/// let bytes = h.to_bytes();
/// assert_eq!((bytes.len(), &bytes[..8]), (HEADER_BYTES, &b"RNNLMIDS"[..]));
/// assert_eq!(IdsHeader::parse(&bytes, "x.ids".as_ref()).unwrap(), h);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdsHeader {
    /// Number of ids after the header.
    pub tokens: u64,
    /// Size of the vocabulary the ids index.
    pub vocab_size: u64,
    /// SHA-256 of the vocabulary's file form ([`vocab_checksum`]).
    pub vocab_checksum: [u8; 32],
}

impl IdsHeader {
    /// The 64 header bytes.
    pub fn to_bytes(&self) -> [u8; HEADER_BYTES] {
        let mut b = [0u8; HEADER_BYTES];
        b[..8].copy_from_slice(MAGIC);
        b[8..12].copy_from_slice(&VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&4u32.to_le_bytes());
        b[16..24].copy_from_slice(&self.tokens.to_le_bytes());
        b[24..32].copy_from_slice(&self.vocab_size.to_le_bytes());
        b[32..64].copy_from_slice(&self.vocab_checksum);
        b
    }

    /// Reads a header from the first bytes of the file at `path` (named in errors).
    ///
    /// # Errors
    /// [`Error::Parse`] naming `path` and the offset of the field that is wrong: fewer than 64
    /// bytes, a bad magic, an unknown version or an id width other than 4.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Self> {
        let bad = |offset: usize, msg: String| Error::Parse {
            path: path.to_owned(),
            line: None,
            msg: format!("byte offset {offset}: {msg}"),
        };
        if bytes.len() < HEADER_BYTES {
            return Err(bad(
                bytes.len(),
                format!(
                    "the file ends inside the header ({} bytes, an ids file's header has \
                     {HEADER_BYTES}): not an ids file written by `rnnlm prepare`, or truncated",
                    bytes.len()
                ),
            ));
        }
        if &bytes[..8] != MAGIC {
            return Err(bad(
                0,
                format!(
                    "bad magic {:?} (expected {:?}): not an ids file written by `rnnlm prepare`",
                    String::from_utf8_lossy(&bytes[..8]),
                    String::from_utf8_lossy(MAGIC)
                ),
            ));
        }
        let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().expect("4 bytes"));
        let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().expect("8 bytes"));
        let version = u32_at(8);
        if version != VERSION {
            return Err(bad(
                8,
                format!("format version {version}, this rnnlm reads version {VERSION}"),
            ));
        }
        let width = u32_at(12);
        if width != 4 {
            return Err(bad(
                12,
                format!("id width {width} bytes, this rnnlm reads 4-byte ids"),
            ));
        }
        Ok(Self {
            tokens: u64_at(16),
            vocab_size: u64_at(24),
            vocab_checksum: bytes[32..64].try_into().expect("32 bytes"),
        })
    }
}

/// SHA-256 of a vocabulary's file form: its words in id order, each followed by `\n` (the
/// bytes [`write_vocab`] writes).
///
/// ```
/// use rnnlm::data::ids::vocab_checksum;
/// let v = |w: &[&str]| rnnlm::Vocab::from_words(w.iter().map(|w| w.to_string()).collect()).unwrap();
/// assert_eq!(vocab_checksum(&v(&["a", "b"])), vocab_checksum(&v(&["a", "b"])));
/// assert_ne!(vocab_checksum(&v(&["a", "b"])), vocab_checksum(&v(&["b", "a"])));
/// ```
pub fn vocab_checksum(vocab: &Vocab) -> [u8; 32] {
    let mut h = Sha256::new();
    for w in vocab.words() {
        h.update(w.as_bytes());
        h.update(b"\n");
    }
    h.finalize().into()
}

/// The first 6 bytes of a checksum in hex, for messages.
fn short(sum: &[u8; 32]) -> String {
    sum[..6].iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `vocab` to `path`, one word per line in id order, atomically
/// ([`write_atomic`](crate::outputs::write_atomic)).
///
/// # Errors
/// [`Error::Io`] naming the file if it cannot be written.
pub fn write_vocab(path: &Path, vocab: &Vocab) -> Result<()> {
    let mut text = String::new();
    for w in vocab.words() {
        text.push_str(w);
        text.push('\n');
    }
    crate::outputs::write_atomic(path, text.as_bytes())
}

/// Reads a vocabulary file written by [`write_vocab`]: one word per line, in id order.
///
/// # Errors
/// [`Error::Io`] if it cannot be read; [`Error::Parse`] naming the file and line if it is not
/// UTF-8, a line is empty or holds whitespace, or a word appears twice.
///
/// ```
/// use rnnlm::data::ids::{read_vocab, write_vocab};
/// let path = std::env::temp_dir().join(format!("rnnlm-doc-vocab-file-{}", std::process::id()));
/// let v = rnnlm::Vocab::from_words(vec!["<eos>".into(), "the".into(), "<unk>".into()]).unwrap();
/// write_vocab(&path, &v).unwrap();
/// assert_eq!(std::fs::read_to_string(&path).unwrap(), "<eos>\nthe\n<unk>\n");
/// assert_eq!(read_vocab(&path).unwrap(), v);
/// std::fs::write(&path, "a\nb c\n").unwrap();
/// assert!(read_vocab(&path).unwrap_err().to_string().contains(":2: "));
/// # std::fs::remove_file(&path).unwrap();
/// ```
pub fn read_vocab(path: &Path) -> Result<Vocab> {
    let mut lines = super::lines::Lines::open(path)?;
    let mut words = Vec::new();
    let mut seen = std::collections::HashSet::new();
    while let Some((line, w)) = lines.next_line()? {
        let bad = |msg: String| Error::Parse {
            path: path.to_owned(),
            line: Some(line),
            msg,
        };
        if w.is_empty() || w.chars().any(char::is_whitespace) {
            return Err(bad(format!(
                "{w:?} is not a word (a vocabulary file holds one word per line, without \
                 whitespace)"
            )));
        }
        if !seen.insert(w.to_owned()) {
            return Err(bad(format!("word {w:?} appears a second time")));
        }
        words.push(w.to_owned());
    }
    Vocab::from_words(words)
}

/// A temporary file, removed when dropped: `rnnlm prepare`'s provisional ids.
#[derive(Debug)]
pub(crate) struct TempPath(pub(crate) PathBuf);

impl TempPath {
    /// `PATH.TAG.PID` beside `path` (in its folder, so the final rename stays on one file
    /// system).
    pub(crate) fn beside(path: &Path, tag: &str) -> Self {
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".{tag}.{}", std::process::id()));
        Self(PathBuf::from(name))
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// After readers have moved over this many bytes of a mapped corpus, the pages they left
/// behind are given back ([`Tokens::consumed`]): the resident part of a mapping stays below
/// about this much plus the pages the readers are on.
const RELEASE_BYTES: usize = 32 << 20;

/// How many ids a chunked scan reads at a time ([`Tokens::for_each_chunk`]).
const SCAN_IDS: usize = 1 << 20;

/// The ids of a file, read memory-mapped (see the [module docs](self) for the format).
///
/// The file must not be changed while it is open: `rnnlm prepare` replaces its outputs by a
/// rename, never writing into an existing file, so a new prepare of the same name is safe.
///
/// ```
/// use rnnlm::data::ids::{write_ids, IdsFile};
/// let path = std::env::temp_dir().join(format!("rnnlm-doc-ids-{}.ids", std::process::id()));
/// let vocab = rnnlm::Vocab::from_words(vec!["<eos>".into(), "a".into(), "b".into()]).unwrap();
/// write_ids(&path, &vocab, &[1, 2, 0, 1, 0]).unwrap();
/// let file = IdsFile::open(&path).unwrap();
/// assert_eq!(&file.tokens()[..], [1, 2, 0, 1, 0]);
/// file.check_vocab(&vocab, "the model's vocabulary").unwrap();
/// let other = rnnlm::Vocab::from_words(vec!["<eos>".into(), "b".into(), "a".into()]).unwrap();
/// let err = file.check_vocab(&other, "the model's vocabulary").unwrap_err().to_string();
/// assert!(err.contains("does not match the model's vocabulary"), "{err}");
/// # std::fs::remove_file(&path).unwrap();
/// ```
#[derive(Debug)]
pub struct IdsFile {
    path: PathBuf,
    header: IdsHeader,
    pages: Pages,
}

/// Where the ids are: the mapping itself (little-endian targets), or a decoded copy.
#[derive(Debug)]
struct Pages {
    #[cfg(target_endian = "little")]
    map: memmap2::Mmap,
    #[cfg(target_endian = "big")]
    ids: Vec<u32>,
    /// Bytes the readers have moved over since the last release.
    consumed: AtomicUsize,
}

impl Pages {
    fn ids(&self) -> &[u32] {
        #[cfg(target_endian = "little")]
        {
            let bytes = &self.map[HEADER_BYTES..];
            // SAFETY: the mapping starts on a page boundary, so `HEADER_BYTES` (a multiple of
            // 4) keeps the pointer aligned for u32; `IdsFile::open` checked that exactly
            // `bytes.len() / 4` ids follow the header; every bit pattern is a valid u32, and on
            // a little-endian target the file's byte order is the native one. The bytes live
            // as long as `self.map`, which the returned borrow cannot outlive.
            unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<u32>(), bytes.len() / 4) }
        }
        #[cfg(target_endian = "big")]
        {
            &self.ids
        }
    }

    /// Gives the resident pages of the mapping back to the system (they stay in the page
    /// cache: reading them again is a minor fault, not a disk read).
    fn release(&self) {
        #[cfg(all(unix, target_endian = "little"))]
        {
            // SAFETY: a read-only shared file mapping: after MADV_DONTNEED the next access
            // maps the file's pages again, with the same contents (the file is not changed
            // while open, see `IdsFile`), so the `&[u32]` borrowed from it still reads the
            // same ids. Nothing ever writes through this mapping.
            let _ = unsafe {
                self.map
                    .unchecked_advise(memmap2::UncheckedAdvice::DontNeed)
            };
        }
    }
}

impl IdsFile {
    /// Maps the ids file at `path` and checks it: its header, that it holds exactly the ids the
    /// header announces, and that each is below the header's vocabulary size.
    ///
    /// # Errors
    /// [`Error::Io`] if it cannot be opened or mapped; [`Error::Parse`] naming `path` and the
    /// byte offset for a bad header ([`IdsHeader::parse`]), a file shorter or longer than its
    /// header says, or an id `>= V` (with its token index).
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let meta = file.metadata().map_err(|e| Error::io(path, e))?;
        if !meta.is_file() {
            return Err(Error::io(
                path,
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "is not a regular file (an ids file is mapped into memory)",
                ),
            ));
        }
        // SAFETY: the file is opened read-only and must not be
        // changed while mapped (see the type's docs); `rnnlm prepare` only ever renames new
        // files into place.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let header = IdsHeader::parse(&map, path)?;
        let have = map.len() as u64;
        let want = (HEADER_BYTES as u64).saturating_add(header.tokens.saturating_mul(4));
        if have != want {
            let msg = if have < want {
                let whole = (have - HEADER_BYTES as u64) / 4;
                format!(
                    "byte offset {have}: the file ends after {whole} of the {} ids its header \
                     announces ({want} bytes expected, {have} found): truncated?",
                    header.tokens
                )
            } else {
                format!(
                    "byte offset {want}: {} bytes after the {} ids its header announces (the \
                     file should end here)",
                    have - want,
                    header.tokens
                )
            };
            return Err(Error::Parse {
                path: path.to_owned(),
                line: None,
                msg,
            });
        }
        #[cfg(target_endian = "little")]
        let pages = Pages {
            map,
            consumed: AtomicUsize::new(0),
        };
        #[cfg(target_endian = "big")]
        let pages = Pages {
            ids: map[HEADER_BYTES..]
                .chunks_exact(4)
                .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
                .collect(),
            consumed: AtomicUsize::new(0),
        };
        let file = Self {
            path: path.to_owned(),
            header,
            pages,
        };
        file.check_ids()?;
        Ok(file)
    }

    /// Every id below the header's vocabulary size, read in chunks that are released behind.
    fn check_ids(&self) -> Result<()> {
        let v = self.header.vocab_size;
        self.tokens().for_each_chunk(|start, chunk| {
            match chunk.iter().position(|&id| id as u64 >= v) {
                None => Ok(()),
                Some(k) => {
                    let index = start + k;
                    Err(Error::Parse {
                        path: self.path.clone(),
                        line: None,
                        msg: format!(
                            "byte offset {}: token {index} has id {}, expected < {v} (the \
                             vocabulary size in the header)",
                            HEADER_BYTES + 4 * index,
                            chunk[k]
                        ),
                    })
                }
            }
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's header.
    pub fn header(&self) -> &IdsHeader {
        &self.header
    }

    /// The ids, as a corpus view that gives pages back as it is read.
    pub fn tokens(&self) -> Tokens<'_> {
        Tokens {
            ids: self.pages.ids(),
            pages: Some(&self.pages),
        }
    }

    /// Checks that the ids were written for `vocab` (its size and the header's checksum);
    /// `what` names the vocabulary in the error, e.g. `the model's vocabulary (m.safetensors)`.
    ///
    /// # Errors
    /// [`Error::Parse`] naming the file (and the header's offset of the field that differs).
    pub fn check_vocab(&self, vocab: &Vocab, what: &str) -> Result<()> {
        let h = &self.header;
        let (offset, detail) = if h.vocab_size != vocab.len() as u64 {
            (
                24,
                format!("{} words, {what} has {}", h.vocab_size, vocab.len()),
            )
        } else {
            let sum = vocab_checksum(vocab);
            if sum == h.vocab_checksum {
                return Ok(());
            }
            (
                32,
                format!(
                    "the same size ({}) but other words or another order (SHA-256 {}… in the \
                     header, {}… for {what})",
                    h.vocab_size,
                    short(&h.vocab_checksum),
                    short(&sum)
                ),
            )
        };
        Err(Error::Parse {
            path: self.path.clone(),
            line: None,
            msg: format!(
                "byte offset {offset}: the vocabulary its ids were written for does not match \
                 {what}: {detail}; prepare it again with that vocabulary (`rnnlm prepare \
                 --vocab`)"
            ),
        })
    }
}

/// Writes `ids` (each `< vocab.len()`) as an ids file for `vocab`, atomically
/// ([`write_atomic_streamed`](crate::outputs::write_atomic_streamed)).
///
/// # Errors
/// [`Error::Invalid`] if an id is outside the vocabulary; [`Error::Io`] if the file cannot be
/// written.
pub fn write_ids(path: &Path, vocab: &Vocab, ids: &[u32]) -> Result<()> {
    if let Some(i) = ids.iter().position(|&id| id as usize >= vocab.len()) {
        return Err(Error::invalid(
            "ids",
            format!("token {i} has id {}, expected < {}", ids[i], vocab.len()),
        ));
    }
    let header = IdsHeader {
        tokens: ids.len() as u64,
        vocab_size: vocab.len() as u64,
        vocab_checksum: vocab_checksum(vocab),
    };
    crate::outputs::write_atomic_streamed(path, |f, _| {
        use std::io::Write;
        let mut w = std::io::BufWriter::new(f);
        w.write_all(&header.to_bytes())?;
        for id in ids {
            w.write_all(&id.to_le_bytes())?;
        }
        w.flush()
    })
}

/// A corpus of ids as the batching, training and evaluation read it: a `&[u32]` (it derefs to
/// one), which for a memory-mapped [`IdsFile`] also gives the pages its readers have moved
/// past back to the system, so that reading a corpus of any size keeps only a few tens of
/// megabytes of it resident. Made from a slice, a `Vec` or an array with `.into()`.
///
/// ```
/// use rnnlm::data::ids::Tokens;
/// let v = vec![3u32, 1, 4, 1, 5];
/// let t = Tokens::from(&v);
/// assert_eq!((t.len(), t[2]), (5, 4));
/// let mut sum = 0;
/// t.for_each_chunk(|_, chunk| {
///     sum += chunk.iter().sum::<u32>();
///     Ok(())
/// })
/// .unwrap();
/// assert_eq!(sum, 14);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Tokens<'a> {
    ids: &'a [u32],
    pages: Option<&'a Pages>,
}

impl<'a> Tokens<'a> {
    /// The ids.
    pub fn as_slice(&self) -> &'a [u32] {
        self.ids
    }

    /// Notes that the readers have moved over about `bytes` more of the corpus; every 32 MiB
    /// the mapping's resident pages are given back. Free for a corpus in memory.
    pub fn consumed(&self, bytes: usize) {
        if let Some(p) = self.pages {
            let before = p.consumed.fetch_add(bytes, Ordering::Relaxed);
            if before + bytes >= RELEASE_BYTES {
                p.consumed.store(0, Ordering::Relaxed);
                p.release();
            }
        }
    }

    /// Calls `f(start, chunk)` for consecutive chunks of the ids in order (`start`: the index
    /// of the chunk's first id), releasing the pages behind; stops at the first error.
    ///
    /// # Errors
    /// What `f` returns.
    pub fn for_each_chunk(&self, mut f: impl FnMut(usize, &[u32]) -> Result<()>) -> Result<()> {
        for (k, chunk) in self.ids.chunks(SCAN_IDS).enumerate() {
            let r = f(k * SCAN_IDS, chunk);
            self.consumed(4 * chunk.len());
            r?;
        }
        Ok(())
    }
}

impl std::ops::Deref for Tokens<'_> {
    type Target = [u32];
    fn deref(&self) -> &[u32] {
        self.ids
    }
}

impl<'a> From<&'a [u32]> for Tokens<'a> {
    fn from(ids: &'a [u32]) -> Self {
        Self { ids, pages: None }
    }
}

impl<'a> From<&'a Vec<u32>> for Tokens<'a> {
    fn from(ids: &'a Vec<u32>) -> Self {
        Self::from(ids.as_slice())
    }
}

impl<'a, const N: usize> From<&'a [u32; N]> for Tokens<'a> {
    fn from(ids: &'a [u32; N]) -> Self {
        Self::from(ids.as_slice())
    }
}

impl<'a> From<&'a IdsFile> for Tokens<'a> {
    fn from(file: &'a IdsFile) -> Self {
        file.tokens()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab(n: usize) -> Vocab {
        Vocab::from_words((0..n).map(|i| format!("w{i}")).collect()).unwrap()
    }

    fn temp(tag: &str) -> PathBuf {
        std::env::temp_dir().join(format!("rnnlm-ids-unit-{tag}-{}.ids", std::process::id()))
    }

    fn err(path: &Path) -> String {
        IdsFile::open(path).unwrap_err().to_string()
    }

    #[test]
    fn round_trip_and_release_keep_the_ids() {
        let path = temp("rt");
        let ids: Vec<u32> = (0..3_000_000u32).map(|i| i * 7 % 10).collect();
        write_ids(&path, &vocab(10), &ids).unwrap();
        let file = IdsFile::open(&path).unwrap();
        assert_eq!(file.header().tokens, ids.len() as u64);
        let t = file.tokens();
        assert_eq!(&t[..], &ids[..]);
        // Released pages read back the same.
        t.consumed(RELEASE_BYTES);
        assert_eq!(&t[..], &ids[..]);
        let mut seen = Vec::new();
        t.for_each_chunk(|start, c| {
            assert_eq!(start, seen.len());
            seen.extend_from_slice(c);
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, ids);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn errors_name_the_file_and_the_offset() {
        let path = temp("err");
        let p = path.display().to_string();
        write_ids(&path, &vocab(4), &[0, 1, 2, 3, 2, 1]).unwrap();
        let good = std::fs::read(&path).unwrap();

        // Truncated: the header says 6 ids, the file holds 4 and a half.
        std::fs::write(&path, &good[..HEADER_BYTES + 18]).unwrap();
        let e = err(&path);
        assert!(e.starts_with(&format!("{p}: byte offset 82: ")), "{e}");
        assert!(e.contains("after 4 of the 6 ids"), "{e}");
        // Too long.
        let mut long = good.clone();
        long.extend_from_slice(&[0; 4]);
        std::fs::write(&path, &long).unwrap();
        assert!(err(&path).contains("byte offset 88: 4 bytes after the 6 ids"));
        // Inside the header.
        std::fs::write(&path, &good[..10]).unwrap();
        assert!(err(&path).starts_with(&format!("{p}: byte offset 10: the file ends inside")));
        // Bad magic, version, width.
        for (at, byte, want) in [
            (0, b'X', "byte offset 0: bad magic"),
            (8, 2, "byte offset 8: format version 2"),
            (12, 2, "byte offset 12: id width 2"),
        ] {
            let mut b = good.clone();
            b[at] = byte;
            std::fs::write(&path, &b).unwrap();
            let e = err(&path);
            assert!(e.starts_with(&format!("{p}: {want}")), "{e}");
        }
        // An id >= V: token 4 (at byte 64 + 16).
        let mut b = good.clone();
        b[HEADER_BYTES + 16..HEADER_BYTES + 20].copy_from_slice(&9u32.to_le_bytes());
        std::fs::write(&path, &b).unwrap();
        let e = err(&path);
        assert_eq!(
            e,
            format!(
                "{p}: byte offset 80: token 4 has id 9, expected < 4 (the vocabulary size in \
                 the header)"
            )
        );
        // Another vocabulary.
        std::fs::write(&path, &good).unwrap();
        let f = IdsFile::open(&path).unwrap();
        let e = f
            .check_vocab(&vocab(5), "the model's")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with(&format!("{p}: byte offset 24: ")), "{e}");
        let swapped = Vocab::from_words(vec!["w1".into(), "w0".into(), "w2".into(), "w3".into()]);
        let e = f
            .check_vocab(&swapped.unwrap(), "the model's")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with(&format!("{p}: byte offset 32: ")), "{e}");
        std::fs::remove_file(&path).unwrap();
    }
}
