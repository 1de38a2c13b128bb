//! `rnnlm prepare`: a text corpus to an ids file ([`super::ids`]) in one pass over the text,
//! building the vocabulary on the way or encoding with a given one; and the synthetic Zipf
//! corpora its speed is measured on ([`write_zipf_text`]).
//!
//! The text is tokenised exactly as [`for_each_token`](super::corpus::for_each_token) does
//! (`split_whitespace()` on each line, `<eos>` at each line's end; UTF-8; lines of at most
//! [`MAX_LINE_BYTES`]), and a built vocabulary is the one [`Vocab::build`] gives with
//! `frequency_order` (the same code chooses it). How:
//!
//! 1. the text is mapped and cut into `parts` byte ranges at line boundaries;
//! 2. each range is tokenised on its own rayon task (a byte-level fast path for ASCII, with
//!    every non-ASCII character decoded and tested with `char::is_whitespace`), counting its
//!    words in its own hash map and writing *provisional* ids (its words in order of first
//!    appearance) to a temporary file;
//! 3. the ranges' words are merged in range order, which gives the text's order of first
//!    appearance and the counts whatever the number of ranges, and the vocabulary is chosen;
//! 4. the provisional ids are mapped to the final ones (a second pass over binary ids, not
//!    text), each range into its place of the output, which is then renamed into place.
//!
//! So the output is the same, byte for byte, for any number of ranges or threads.

use std::collections::hash_map::Entry;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use rayon::prelude::*;

use super::corpus::EOS;
use super::ids::{vocab_checksum, IdsHeader, TempPath, HEADER_BYTES};
use super::lines::MAX_LINE_BYTES;
use super::vocab::Vocab;
use super::vocab_build::{check_max_vocab, choose_words};
use crate::error::{Error, Result};
use crate::VocabOptions;

/// Where the vocabulary of [`prepare`] comes from.
#[derive(Clone, Copy, Debug)]
pub enum VocabSource<'a> {
    /// Built from the text's counts: `max_vocab`, `min_count`, the rest mapped to `<unk>`,
    /// numbered by frequency (`frequency_order` is taken as set).
    Build {
        /// The largest vocabulary, `<eos>` and `<unk>` included (`None`: no limit).
        max_vocab: Option<usize>,
        /// Words seen fewer times are dropped.
        min_count: usize,
    },
    /// A fixed vocabulary (such as the training text's, to encode valid and test): words
    /// outside it map to its `<unk>`, or are an error naming the file and line if it has none.
    Fixed(&'a Vocab),
}

/// What [`prepare`] did.
#[derive(Clone, Debug)]
pub struct Prepared {
    /// The vocabulary the ids index (built, or the one given).
    pub vocab: Vocab,
    /// Ids written (words and `<eos>`).
    pub tokens: u64,
    /// Tokens mapped to `<unk>` because their word is not in the vocabulary (a literal
    /// `<unk>` in the text is not counted).
    pub unk_mapped: u64,
    /// Distinct tokens of the text (`<eos>` included).
    pub distinct: usize,
}

/// Reads the text at `text` once and writes its ids to `ids_out` (atomically, see
/// [`write_atomic_streamed`](crate::outputs::write_atomic_streamed): a failure leaves no
/// partial file), tokenising `parts` byte ranges in parallel on the current rayon
/// pool. The output does not depend on `parts`.
///
/// ```
/// use rnnlm::data::{ids::IdsFile, prepare::{prepare, VocabSource}};
/// let dir = std::env::temp_dir();
/// let (text, out) = (dir.join(format!("rnnlm-doc-prep-{}.txt", std::process::id())),
///                    dir.join(format!("rnnlm-doc-prep-{}.ids", std::process::id())));
/// std::fs::write(&text, "b a b\nc b\n").unwrap();
/// let p = prepare(&text, &out, VocabSource::Build { max_vocab: Some(3), min_count: 1 }, 2).unwrap();
/// // b: 3, <eos>: 2, <unk>: 2 (a and c; last among its equals).
/// assert_eq!(p.vocab.words(), ["b", "<eos>", "<unk>"]);
/// assert_eq!((p.tokens, p.unk_mapped), (7, 2));
/// assert_eq!(&IdsFile::open(&out).unwrap().tokens()[..], [0, 2, 0, 1, 2, 0, 1]);
/// # std::fs::remove_file(&text).unwrap();
/// # std::fs::remove_file(&out).unwrap();
/// ```
///
/// # Errors
/// - [`Error::Io`] if the text cannot be read or the output written;
/// - [`Error::Parse`] naming the file and line if a line is not UTF-8 or longer than
///   [`MAX_LINE_BYTES`];
/// - [`Error::Invalid`] as [`Vocab::build`] (`max_vocab < 2`, a text without words);
/// - with a fixed vocabulary: [`Error::NoEos`] if it has no `<eos>`, [`Error::UnknownWord`]
///   (the first such word's line) if a word is outside it and it has no `<unk>`.
pub fn prepare(
    text: &Path,
    ids_out: &Path,
    source: VocabSource<'_>,
    parts: usize,
) -> Result<Prepared> {
    match source {
        VocabSource::Build {
            max_vocab,
            min_count,
        } => check_max_vocab(&VocabOptions {
            max_vocab,
            min_count,
            frequency_order: true,
        })?,
        VocabSource::Fixed(v) => {
            v.require_eos(text, "the vocabulary it is prepared with")?;
        }
    }
    let file = super::lines::open_text(text)?;
    let len = file.metadata().map_err(|e| Error::io(text, e))?.len();
    // An empty file cannot be mapped on every system; it has no tokens.
    let map = if len == 0 {
        None
    } else {
        // SAFETY: read-only; a text changed while it is being prepared
        // gives wrong ids, not unsafety in this code, which only reads bytes (and checks them
        // as UTF-8 before use as text).
        Some(unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(text, e))?)
    };
    let bytes: &[u8] = map.as_deref().unwrap_or(&[]);
    let ranges = line_ranges(bytes, parts.max(1));
    let scanned: Vec<Result<Part<'_>>> = ranges
        .par_iter()
        .enumerate()
        .map(|(k, r)| scan(bytes, r.clone(), text, ids_out, k))
        .collect();
    let mut parts = Vec::with_capacity(scanned.len());
    for s in scanned {
        parts.push(s?); // the first range's error is the first in the text
    }

    // Merge in range order: the text's order of first appearance, and its counts.
    let mut index: foldhash::HashMap<&[u8], usize> = Default::default();
    let (mut order, mut counts, mut first_at) = (Vec::<&str>::new(), Vec::new(), Vec::new());
    for part in &mut parts {
        part.global = part
            .words
            .iter()
            .zip(&part.counts)
            .zip(&part.first_at)
            .map(|((&w, &c), &at)| {
                let g = *index.entry(w).or_insert_with(|| {
                    // UTF-8: the range was checked before it was tokenised.
                    order.push(std::str::from_utf8(w).expect("checked UTF-8"));
                    counts.push(0);
                    first_at.push(at);
                    order.len() - 1
                });
                counts[g] += c;
                g
            })
            .collect();
    }
    let built;
    let vocab = match source {
        VocabSource::Build {
            max_vocab,
            min_count,
        } => {
            let opts = VocabOptions {
                max_vocab,
                min_count,
                frequency_order: true,
            };
            built = Vocab::from_words(choose_words(text, &order, &counts, &opts)?)?;
            &built
        }
        VocabSource::Fixed(v) => v,
    };
    let unk = vocab.unk_id();
    let mut unk_mapped = 0;
    let mut unknown: Option<usize> = None; // the first word outside a vocabulary without <unk>
    let final_ids: Vec<u32> = (0..order.len())
        .map(|g| match (vocab.id(order[g]), unk) {
            (Some(id), _) => id,
            (None, Some(u)) => {
                unk_mapped += counts[g];
                u
            }
            (None, None) => {
                if unknown.is_none_or(|f| first_at[g] < first_at[f]) {
                    unknown = Some(g);
                }
                0
            }
        })
        .collect();
    if let Some(g) = unknown {
        return Err(Error::UnknownWord {
            path: text.to_owned(),
            line: line_of(bytes, first_at[g]),
            word: order[g].to_owned(),
        });
    }

    // The final ids, each range into its place of the output.
    let tokens: u64 = parts.iter().map(|p| p.tokens).sum();
    let header = IdsHeader {
        tokens,
        vocab_size: vocab.len() as u64,
        vocab_checksum: vocab_checksum(vocab),
    };
    let mut starts = Vec::with_capacity(parts.len());
    let mut at = HEADER_BYTES as u64;
    for p in &parts {
        starts.push(at);
        at += 4 * p.tokens;
    }
    crate::outputs::write_atomic_streamed(ids_out, |out, tmp| {
        out.set_len(at)?;
        out.write_all(&header.to_bytes())?;
        parts
            .par_iter()
            .zip(starts)
            .try_for_each(|(p, start)| remap(p, &final_ids, tmp, start))
    })?;
    Ok(Prepared {
        vocab: vocab.clone(),
        tokens,
        unk_mapped,
        distinct: order.len(),
    })
}

/// One byte range's scan: its distinct words in order of first appearance, their counts and
/// the byte offset (in the whole text) of each one's first occurrence, and its provisional
/// ids (indices into `words`) in a temporary file.
struct Part<'t> {
    words: Vec<&'t [u8]>,
    counts: Vec<u64>,
    first_at: Vec<usize>,
    tokens: u64,
    ids: TempPath,
    /// Each word's index in the merged order (set by the merge).
    global: Vec<usize>,
}

/// Provisional ids are written in blocks of this many bytes.
const WRITE_BYTES: usize = 1 << 20;

fn scan<'t>(
    text: &'t [u8],
    range: std::ops::Range<usize>,
    path: &Path,
    ids_out: &Path,
    k: usize,
) -> Result<Part<'t>> {
    let base = range.start;
    let bytes = &text[range];
    if let Err(e) = std::str::from_utf8(bytes) {
        let at = base + e.valid_up_to();
        let line_start = text[..at]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |p| p + 1);
        return Err(Error::Parse {
            path: path.to_owned(),
            line: Some(line_of(text, at)),
            msg: format!(
                "not valid UTF-8 text (byte 0x{:02x} at byte {} of the line, byte offset {at} \
                 of the file)",
                text[at],
                at - line_start + 1
            ),
        });
    }
    let ids = TempPath::beside(ids_out, &format!("part{k}"));
    let mut file = File::create(&ids.0).map_err(|e| Error::io(&ids.0, e))?;
    let mut local = Local {
        short: ShortWords::new(),
        long: Default::default(),
        words: Vec::new(),
        first_at: Vec::new(),
        buf: Vec::with_capacity(WRITE_BYTES),
        tokens: 0,
    };
    let mut write_err: Option<std::io::Error> = None;
    let eos = EOS.as_bytes();
    let scanned = tokenize(bytes, |w, at| {
        match w {
            Some(w) => local.push(w, &bytes[at..], base + at),
            None => local.push(eos, eos, base + at),
        }
        if local.buf.len() >= WRITE_BYTES {
            if write_err.is_none() {
                write_err = file.write_all(&local.buf).err();
            }
            local.buf.clear();
        }
    });
    if let Err(line_start) = scanned {
        let at = base + line_start;
        return Err(Error::Parse {
            path: path.to_owned(),
            line: Some(line_of(text, at)),
            msg: format!(
                "line is longer than {MAX_LINE_BYTES} bytes ({} MiB; the text readers expect \
                 one sentence per line): is this a text file with newlines?",
                MAX_LINE_BYTES >> 20
            ),
        });
    }
    let io = |e| Error::io(&ids.0, e);
    if let Some(e) = write_err {
        return Err(io(e));
    }
    file.write_all(&local.buf).map_err(io)?;
    drop(file);
    Ok(Part {
        counts: local.counts(),
        words: local.words,
        first_at: local.first_at,
        tokens: local.tokens,
        ids,
        global: Vec::new(),
    })
}

/// A range's words while it is scanned: their provisional ids (in order of first
/// appearance) and counts.
///
/// Words of up to 15 bytes (nearly all) live in [`ShortWords`], by value; longer ones in a
/// map by reference.
struct Local<'t> {
    short: ShortWords,
    long: foldhash::HashMap<&'t [u8], (u32, u64)>,
    words: Vec<&'t [u8]>,
    first_at: Vec<usize>,
    /// Provisional ids not yet written.
    buf: Vec<u8>,
    tokens: u64,
}

/// The longest word [`pack`] holds.
const SHORT: usize = 15;

/// `w` (1 to [`SHORT`] bytes) as a key: its bytes, zero-padded, and its length in the last
/// byte (so the second word is never 0). `rest` starts with `w`; when it has 16 bytes they
/// are loaded at once and masked.
#[inline]
fn pack(w: &[u8], rest: &[u8]) -> [u64; 2] {
    let mut b = [0u8; 16];
    match rest.get(..16) {
        Some(r) => b.copy_from_slice(r),
        None => b[..w.len()].copy_from_slice(w),
    }
    let lo = u64::from_le_bytes(b[..8].try_into().expect("8 bytes"));
    let hi = u64::from_le_bytes(b[8..].try_into().expect("8 bytes"));
    let keep = |x: u64, n: usize| {
        if n >= 8 {
            x
        } else {
            x & !(u64::MAX << (8 * n))
        }
    };
    let n = w.len();
    [
        keep(lo, n),
        keep(hi, n.saturating_sub(8)) | (n as u64) << 56,
    ]
}

/// An open-addressing table (linear probing, at most 3/4 full) from a packed short word to
/// its provisional id and count, all in one 24-byte slot: a lookup touches one cache line,
/// where std's map keyed by a reference into the text also touched the word's first
/// occurrence, at a random place of a file of hundreds of megabytes, and a separate count
/// array a second line (together 2.3x slower on 100M Zipf tokens). The hash is a
/// multiply-fold of the packed word: fast, not built to resist crafted input (a corpus is not
/// an attacker).
struct ShortWords {
    /// `[lo, hi, id | count << 32]`; `hi == 0` marks an empty slot.
    slots: Slots,
    len: usize,
    shift: u32,
    /// Counts past `u32::MAX` (by id): a slot keeps the low 32 bits.
    overflow: foldhash::HashMap<u32, u64>,
}

impl ShortWords {
    fn new() -> Self {
        Self {
            slots: Slots::zeroed(1 << 12),
            len: 0,
            shift: 64 - 12,
            overflow: Default::default(),
        }
    }

    #[inline]
    fn slot(&self, key: [u64; 2]) -> usize {
        let m = (key[0] ^ 0x243f_6a88_85a3_08d3) as u128 * (key[1] ^ 0x1319_8a2e_0370_7344) as u128;
        let h = (m as u64 ^ (m >> 64) as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (h >> self.shift) as usize
    }

    /// Counts one occurrence of `key`: its id, or `None` (and it is added with id `next`) if
    /// it is new.
    #[inline]
    fn count(&mut self, key: [u64; 2], next: u32) -> Option<u32> {
        let mask = self.slots.len() - 1;
        let mut i = self.slot(key);
        loop {
            let s = &mut self.slots[i];
            if s[1] == 0 {
                *s = [key[0], key[1], next as u64 | 1 << 32];
                self.len += 1;
                if 4 * self.len > 3 * self.slots.len() {
                    self.grow();
                }
                return None;
            }
            if s[0] == key[0] && s[1] == key[1] {
                let id = s[2] as u32;
                if s[2] >> 32 == u32::MAX as u64 {
                    *self.overflow.entry(id).or_insert(0) += 1 << 32;
                    s[2] = id as u64;
                } else {
                    s[2] += 1 << 32;
                }
                return Some(id);
            }
            i = (i + 1) & mask;
        }
    }

    fn grow(&mut self) {
        let bigger = Slots::zeroed(2 * self.slots.len());
        let old = std::mem::replace(&mut self.slots, bigger);
        self.shift -= 1;
        let mask = self.slots.len() - 1;
        for &s in old.iter().filter(|s| s[1] != 0) {
            let mut i = self.slot([s[0], s[1]]);
            while self.slots[i][1] != 0 {
                i = (i + 1) & mask;
            }
            self.slots[i] = s;
        }
    }

    /// Adds every word's count to `counts` (indexed by id).
    fn counts_into(&self, counts: &mut [u64]) {
        for s in self.slots.iter().filter(|s| s[1] != 0) {
            counts[s[2] as u32 as usize] += s[2] >> 32;
        }
        for (&id, &c) in &self.overflow {
            counts[id as usize] += c;
        }
    }
}

/// Zeroed slots of [`ShortWords`] in anonymous memory that asks for transparent huge pages:
/// a table of a few hundred thousand words spans megabytes read at random, and with 4 KiB
/// pages nearly every lookup also misses the TLB (huge pages saved ~8% of `prepare`'s CPU
/// time on 100M Zipf tokens, V = 200k).
struct Slots(memmap2::MmapMut);

impl Slots {
    fn zeroed(n: usize) -> Self {
        // An anonymous mapping failing is running out of memory, as a Vec's would be.
        let map = memmap2::MmapMut::map_anon(n * 24).expect("memory for the word table");
        #[cfg(target_os = "linux")]
        let _ = map.advise(memmap2::Advice::HugePage); // a hint: without it, 4 KiB pages
        Self(map)
    }
}

impl std::ops::Deref for Slots {
    type Target = [[u64; 3]];
    fn deref(&self) -> &[[u64; 3]] {
        // SAFETY: the mapping is page-aligned (so aligned for u64), `len / 24` whole slots
        // long, zero-filled when made and only ever written as u64s; every bit pattern is a
        // valid u64; the borrow cannot outlive `self.0`.
        unsafe { std::slice::from_raw_parts(self.0.as_ptr().cast(), self.0.len() / 24) }
    }
}

impl std::ops::DerefMut for Slots {
    fn deref_mut(&mut self) -> &mut [[u64; 3]] {
        // SAFETY: as in `deref`, and `&mut self` makes this the only borrow.
        unsafe { std::slice::from_raw_parts_mut(self.0.as_mut_ptr().cast(), self.0.len() / 24) }
    }
}

impl<'t> Local<'t> {
    /// Counts one occurrence of `w` (at byte `at`; `rest`, the text from `w` on) and appends
    /// its provisional id, a new one if it is new.
    #[inline]
    fn push(&mut self, w: &'t [u8], rest: &[u8], at: usize) {
        let next = self.words.len() as u32;
        let seen = if w.len() <= SHORT {
            self.short.count(pack(w, rest), next)
        } else {
            match self.long.entry(w) {
                Entry::Occupied(mut e) => {
                    e.get_mut().1 += 1;
                    Some(e.get().0)
                }
                Entry::Vacant(e) => {
                    e.insert((next, 1));
                    None
                }
            }
        };
        let id = seen.unwrap_or_else(|| {
            self.words.push(w);
            self.first_at.push(at);
            next
        });
        self.buf.extend_from_slice(&id.to_le_bytes());
        self.tokens += 1;
    }

    /// Each word's count, by provisional id.
    fn counts(&self) -> Vec<u64> {
        let mut counts = vec![0; self.words.len()];
        self.short.counts_into(&mut counts);
        for &(id, c) in self.long.values() {
            counts[id as usize] += c;
        }
        counts
    }
}

/// Maps a range's provisional ids through `global` and `final_ids` into the output file at
/// byte `start`.
fn remap(p: &Part<'_>, final_ids: &[u32], out: &Path, start: u64) -> std::io::Result<()> {
    let table: Vec<u32> = p.global.iter().map(|&g| final_ids[g]).collect();
    let mut src = File::open(&p.ids.0)?;
    let mut dst = std::fs::OpenOptions::new().write(true).open(out)?;
    dst.seek(SeekFrom::Start(start))?;
    let mut inp = vec![0u8; WRITE_BYTES];
    let mut left = 4 * p.tokens as usize;
    while left > 0 {
        let n = left.min(WRITE_BYTES);
        src.read_exact(&mut inp[..n])?;
        for b in inp[..n].chunks_exact_mut(4) {
            let id = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            b.copy_from_slice(&table[id as usize].to_le_bytes());
        }
        dst.write_all(&inp[..n])?;
        left -= n;
    }
    Ok(())
}

/// The 1-based line of byte `at` of `text`.
fn line_of(text: &[u8], at: usize) -> usize {
    1 + text[..at.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
}

/// `parts` consecutive byte ranges covering `text`, each ending just after a `\n` (but the
/// last): cut at the first line end at or after each even share. Some may be empty.
fn line_ranges(text: &[u8], parts: usize) -> Vec<std::ops::Range<usize>> {
    let mut cuts = vec![0];
    for k in 1..parts {
        let want = (text.len() as u128 * k as u128 / parts as u128) as usize;
        let from = want.max(*cuts.last().expect("non-empty"));
        let cut = text[from..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(text.len(), |p| from + p + 1);
        cuts.push(cut);
    }
    cuts.push(text.len());
    cuts.windows(2).map(|w| w[0]..w[1]).collect()
}

/// Byte classes of the tokenizer: ASCII white space (as `char::is_whitespace` has it: tab,
/// line feed, vertical tab, form feed, carriage return, space), the line end, a byte of a
/// non-ASCII character, anything else.
const WORD: u8 = 0;
const SPACE: u8 = 1;
const NEWLINE: u8 = 2;
const HIGH: u8 = 3;

static CLASS: [u8; 256] = {
    let mut c = [WORD; 256];
    c[b'\t' as usize] = SPACE;
    c[b'\n' as usize] = NEWLINE;
    c[0x0b] = SPACE;
    c[0x0c] = SPACE;
    c[b'\r' as usize] = SPACE;
    c[b' ' as usize] = SPACE;
    let mut i = 0x80;
    while i < 256 {
        c[i] = HIGH;
        i += 1;
    }
    c
};

/// The length of the white-space character that starts at `text[i]` (a non-ASCII byte), or 0
/// if it is none (or `i` is inside a character).
#[inline]
fn unicode_space(text: &[u8], i: usize) -> usize {
    let len = match text[i] {
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf7 => 4,
        _ => return 0,
    };
    match text
        .get(i..i + len)
        .and_then(|s| std::str::from_utf8(s).ok())
    {
        Some(s) if s.chars().next().is_some_and(char::is_whitespace) => len,
        _ => 0,
    }
}

/// Tokenises UTF-8 `text` as the crate's text readers do (each `\n`-ended line's
/// `split_whitespace()`, then `<eos>`): `token(Some(word), offset)` for each word and
/// `token(None, offset)` at each line end (the last line's too when the text does not end
/// with `\n`), offsets in `text`. Returns the offset of the first line longer than
/// [`MAX_LINE_BYTES`] (bytes before its `\n`) as the error, having stopped there.
fn tokenize<'t>(
    text: &'t [u8],
    mut token: impl FnMut(Option<&'t [u8]>, usize),
) -> std::result::Result<(), usize> {
    let n = text.len();
    let (mut i, mut line_start) = (0, 0);
    while i < n {
        match CLASS[text[i] as usize] {
            SPACE => {
                i += 1;
                continue;
            }
            NEWLINE => {
                if i - line_start > MAX_LINE_BYTES {
                    return Err(line_start);
                }
                token(None, i);
                i += 1;
                line_start = i;
                continue;
            }
            HIGH => {
                let s = unicode_space(text, i);
                if s > 0 {
                    i += s;
                    continue;
                }
            }
            _ => {}
        }
        let start = i;
        i += 1;
        while i < n {
            match CLASS[text[i] as usize] {
                WORD => i += 1,
                HIGH if unicode_space(text, i) == 0 => i += 1,
                _ => break,
            }
        }
        if i - line_start > MAX_LINE_BYTES {
            return Err(line_start);
        }
        token(Some(&text[start..i]), start);
    }
    if n > 0 && text[n - 1] != b'\n' {
        if n - line_start > MAX_LINE_BYTES {
            return Err(line_start);
        }
        token(None, n);
    }
    Ok(())
}

/// Writes a synthetic corpus of `tokens` words to `path` (atomically): lines of 10 to 30
/// words (20 on average), word `w{k}` of rank `k` in `0..vocab_size` drawn with
/// `p(k) ∝ 1/(k+1)`, as `rnnlm bench --ids zipf` draws ids. The same seed gives the same
/// text, byte for byte.
///
/// ```
/// let path = std::env::temp_dir().join(format!("rnnlm-doc-zipf-{}.txt", std::process::id()));
/// rnnlm::data::prepare::write_zipf_text(&path, 50, 1000, 1).unwrap();
/// let text = std::fs::read_to_string(&path).unwrap();
/// assert_eq!(text.split_whitespace().count(), 50);
/// assert!(text.split_whitespace().all(|w| w.starts_with('w')));
/// # std::fs::remove_file(&path).unwrap();
/// ```
///
/// # Errors
/// [`Error::Invalid`] if `vocab_size` is 0; [`Error::Io`] if the file cannot be written.
pub fn write_zipf_text(path: &Path, tokens: u64, vocab_size: usize, seed: u64) -> Result<()> {
    use rand::{RngExt, SeedableRng};
    if vocab_size == 0 {
        return Err(Error::invalid("vocabulary size", "must be at least 1"));
    }
    let zipf = crate::bench::Zipf::new(vocab_size);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    crate::outputs::write_atomic_streamed(path, |f, _| {
        let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
        let mut line = Vec::with_capacity(512);
        let mut left = tokens;
        while left > 0 {
            let len = rng.random_range(10..=30u64).min(left);
            line.clear();
            for j in 0..len {
                if j > 0 {
                    line.push(b' ');
                }
                line.push(b'w');
                push_decimal(&mut line, zipf.sample(&mut rng));
            }
            line.push(b'\n');
            w.write_all(&line)?;
            left -= len;
        }
        w.flush()
    })
}

/// Appends `x` in decimal.
fn push_decimal(out: &mut Vec<u8>, mut x: u32) {
    let mut digits = [0u8; 10];
    let mut k = digits.len();
    loop {
        k -= 1;
        digits[k] = b'0' + (x % 10) as u8;
        x /= 10;
        if x == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[k..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};

    /// What the crate's text readers produce: `split_whitespace` per `\n`-line (a `\r` before
    /// it is white space anyway), `<eos>` after each.
    fn reference(text: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut lines: Vec<&str> = text.split('\n').collect();
        if text.ends_with('\n') || text.is_empty() {
            lines.pop();
        }
        for l in lines {
            out.extend(l.split_whitespace().map(str::to_owned));
            out.push(EOS.to_owned());
        }
        out
    }

    fn fast(text: &str) -> Vec<String> {
        let mut out = Vec::new();
        tokenize(text.as_bytes(), |w, at| match w {
            Some(w) => {
                assert_eq!(&text.as_bytes()[at..at + w.len()], w);
                out.push(std::str::from_utf8(w).unwrap().to_owned())
            }
            None => out.push(EOS.to_owned()),
        })
        .unwrap();
        out
    }

    #[test]
    fn the_fast_tokenizer_is_split_whitespace() {
        // Every white-space character Rust knows, some that look like it but are not (the
        // separators U+001C..U+001F that Python splits on, zero-width space U+200B, U+FEFF),
        // and multi-byte words around them.
        let crafted = [
            "",
            "\n",
            "a",
            "a\n",
            "a b\r\nc\rd\n\n  e \t f\u{0b}g\u{0c}h",
            "x\u{a0}y\u{3000}z\u{85}w\u{2028}v\u{2029}u\u{1680}t\u{202f}s\u{205f}r",
            "\u{2000}\u{2001}\u{2002}\u{2003}\u{2004}\u{2005}\u{2006}\u{2007}\u{2008}\u{2009}\u{200a}q",
            "a\u{1c}b\u{1d}c\u{1e}d\u{1f}e f\u{200b}g h\u{feff}i",
            "é\u{a0}ü ∑\u{3000}日本語\u{3000}\n\u{a0}\n\u{3000}",
            "😀 a😀b \u{a0}😀\u{a0}",
            "  \n \u{85}\n",
        ];
        for text in crafted {
            assert_eq!(fast(text), reference(text), "{text:?}");
        }
        // Random texts over an alphabet rich in white space and multi-byte characters.
        let alphabet: Vec<char> = "ab \t\n\r\u{0b}\u{0c}\u{1c}\u{1f}\u{85}\u{a0}\u{1680}\u{2000}\
                                   \u{200a}\u{200b}\u{2028}\u{202f}\u{205f}\u{3000}\u{feff}é日😀"
            .chars()
            .collect();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for _ in 0..2000 {
            let len = rng.random_range(0..40);
            let text: String = (0..len)
                .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                .collect();
            assert_eq!(fast(&text), reference(&text), "{text:?}");
        }
    }

    #[test]
    fn short_words_pack_by_value_and_count_past_u32() {
        // The same word packs the same from a 16-byte window or on its own; lengths differ.
        let text = b"abc abcdefghijklmno xyz";
        assert_eq!(pack(b"abc", &text[..]), pack(b"abc", b"abc"));
        assert_ne!(pack(b"ab", b"ab"), pack(b"ab\0", b"ab\0"));
        assert_eq!(
            pack(&text[4..19], &text[4..]),
            pack(&text[4..19], &text[4..19])
        );
        let mut t = ShortWords::new();
        let keys: Vec<[u64; 2]> = (0..10_000u32)
            .map(|i| {
                let w = format!("w{i}");
                pack(w.as_bytes(), w.as_bytes())
            })
            .collect();
        for (i, &k) in keys.iter().enumerate() {
            assert_eq!(t.count(k, i as u32), None);
        }
        for (i, &k) in keys.iter().enumerate() {
            assert_eq!(t.count(k, 0), Some(i as u32), "found again after growing");
        }
        // A count past u32::MAX moves its high part aside.
        let slot = t.slots.iter().position(|s| s[2] as u32 == 7).unwrap();
        t.slots[slot][2] = 7 | (u32::MAX as u64) << 32;
        t.count(keys[7], 0);
        t.count(keys[7], 0);
        let mut counts = vec![0; keys.len()];
        t.counts_into(&mut counts);
        assert_eq!(counts[7], u32::MAX as u64 + 2);
        assert_eq!(counts[8], 2);
    }

    #[test]
    fn ranges_cut_at_line_ends() {
        let text = b"aa b\ncc\n\nddd e\nf";
        for parts in 1..8 {
            let r = line_ranges(text, parts);
            assert_eq!(r.len(), parts);
            assert_eq!((r[0].start, r[parts - 1].end), (0, text.len()));
            for w in r.windows(2) {
                assert_eq!(w[0].end, w[1].start);
                assert!(w[0].is_empty() || w[0].end == text.len() || text[w[0].end - 1] == b'\n');
            }
        }
        assert_eq!(line_ranges(b"", 3), [0..0, 0..0, 0..0]);
    }

    #[test]
    fn zipf_text_is_deterministic_and_zipf_shaped() {
        let dir = std::env::temp_dir();
        let (a, b) = (
            dir.join(format!("rnnlm-zipf-a-{}.txt", std::process::id())),
            dir.join(format!("rnnlm-zipf-b-{}.txt", std::process::id())),
        );
        write_zipf_text(&a, 20_000, 100, 3).unwrap();
        write_zipf_text(&b, 20_000, 100, 3).unwrap();
        let text = std::fs::read_to_string(&a).unwrap();
        assert_eq!(text, std::fs::read_to_string(&b).unwrap());
        write_zipf_text(&b, 20_000, 100, 4).unwrap();
        assert_ne!(text, std::fs::read_to_string(&b).unwrap());
        let count = |w: &str| text.split_whitespace().filter(|&x| x == w).count() as f64;
        // p(k) ∝ 1/(k+1): w0 twice as frequent as w1, ten times w9.
        let (c0, c1, c9) = (count("w0"), count("w1"), count("w9"));
        assert!((c0 / c1 - 2.0).abs() < 0.2, "{c0} {c1}");
        assert!((c0 / c9 - 10.0).abs() < 2.0, "{c0} {c9}");
        let lines: Vec<usize> = text.lines().map(|l| l.split_whitespace().count()).collect();
        let (last, full) = lines.split_last().unwrap();
        assert!(full.iter().all(|n| (10..=30).contains(n)), "{lines:?}");
        assert!(
            (1..=30).contains(last),
            "the last line is cut to the word count"
        );
        std::fs::remove_file(&a).unwrap();
        std::fs::remove_file(&b).unwrap();
    }
}
