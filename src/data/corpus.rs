//! Text corpora: one sentence per line, whitespace-separated tokens, `<eos>` after each line.

use std::path::{Path, PathBuf};

use super::lines::{open_text, read_line_limited, Lines};
use super::vocab::Vocab;
use crate::error::{Error, Result};

/// End-of-sentence token appended to every line.
///
/// ```
/// use rnnlm::data::corpus::{read_building_vocab, EOS};
/// let path = std::env::temp_dir().join(format!("rnnlm-doc-eos-{}.txt", std::process::id()));
/// std::fs::write(&path, "a b\nc\n").unwrap();
/// let mut vocab = rnnlm::Vocab::new();
/// let ids = read_building_vocab(&path, &mut vocab).unwrap();
/// assert_eq!((EOS, vocab.id(EOS)), ("<eos>", Some(2)));
/// assert_eq!(ids, [0, 1, 2, 3, 2]); // a b <eos> c <eos>
/// # std::fs::remove_file(&path).unwrap();
/// ```
pub const EOS: &str = "<eos>";

/// Calls `f(word, line_number)` for every token of the text at `path` (line numbers from 1),
/// `<eos>` included at the end of each line.
///
/// Lines are read with [`Lines`]: a line longer than
/// [`MAX_LINE_BYTES`](super::lines::MAX_LINE_BYTES) is refused rather than buffered.
///
/// # Errors
/// [`Error::Io`] if the file cannot be read (or is a directory); [`Error::Parse`] naming the
/// file and line if a line is not UTF-8 or is longer than the limit; or what `f` returns.
///
/// ```
/// use rnnlm::data::corpus::for_each_token;
/// let path = std::env::temp_dir().join(format!("rnnlm-doc-tokens-{}.txt", std::process::id()));
/// std::fs::write(&path, " a  b\n\nc").unwrap(); // a blank line; no final newline
/// let mut seen = Vec::new();
/// for_each_token(&path, |w, line| {
///     seen.push((w.to_string(), line));
///     Ok(())
/// })
/// .unwrap();
/// let want = [("a", 1), ("b", 1), ("<eos>", 1), ("<eos>", 2), ("c", 3), ("<eos>", 3)];
/// assert_eq!(seen, want.map(|(w, l)| (w.to_string(), l)));
/// # std::fs::remove_file(&path).unwrap();
/// ```
pub fn for_each_token(path: &Path, mut f: impl FnMut(&str, usize) -> Result<()>) -> Result<()> {
    let mut lines = Lines::open(path)?;
    while let Some((line_no, line)) = lines.next_line()? {
        for w in line.split_whitespace() {
            f(w, line_no)?;
        }
        f(EOS, line_no)?;
    }
    Ok(())
}

/// Reads `path` into ids, adding new words to `vocab` in order of first appearance (how the
/// book numbers PTB).
///
/// # Errors
/// As [`for_each_token`].
///
/// ```
/// use rnnlm::data::corpus::read_building_vocab;
/// let dir = std::env::temp_dir();
/// let (a, b) = (dir.join(format!("rnnlm-doc-rbv-a-{}", std::process::id())),
///               dir.join(format!("rnnlm-doc-rbv-b-{}", std::process::id())));
/// std::fs::write(&a, "the cat\n").unwrap();
/// std::fs::write(&b, "the dog\n").unwrap();
/// let mut vocab = rnnlm::Vocab::new();
/// assert_eq!(read_building_vocab(&a, &mut vocab).unwrap(), [0, 1, 2]); // the cat <eos>
/// assert_eq!(read_building_vocab(&b, &mut vocab).unwrap(), [0, 3, 2]); // dog is new: id 3
/// # std::fs::remove_file(&a).unwrap();
/// # std::fs::remove_file(&b).unwrap();
/// ```
pub fn read_building_vocab(path: &Path, vocab: &mut Vocab) -> Result<Vec<u32>> {
    let mut ids = Vec::new();
    for_each_token(path, |w, _| {
        ids.push(vocab.add(w));
        Ok(())
    })?;
    Ok(ids)
}

/// Reads `path` into ids of a fixed vocabulary. A word outside it maps to `<unk>` when the
/// vocabulary has one; otherwise it is an error naming the word, file and line. The vocabulary
/// must have [`EOS`], which ends every line (a line end is never mapped to `<unk>`).
///
/// # Errors
/// As [`for_each_token`], plus [`Error::UnknownWord`], and [`Error::NoEos`] naming `path`
/// (before reading it) if the vocabulary has no `<eos>`.
///
/// ```
/// use rnnlm::{data::corpus::read_with_vocab, Error, Vocab};
/// let path = std::env::temp_dir().join(format!("rnnlm-doc-rwv-{}.txt", std::process::id()));
/// std::fs::write(&path, "the cat\nthe dog\n").unwrap();
/// let words = |w: &[&str]| Vocab::from_words(w.iter().map(|w| w.to_string()).collect()).unwrap();
/// let with_unk = words(&["<eos>", "the", "cat", "<unk>"]);
/// assert_eq!(read_with_vocab(&path, &with_unk).unwrap(), [1, 2, 0, 1, 3, 0]); // dog -> <unk>
/// let err = read_with_vocab(&path, &words(&["<eos>", "the", "cat"])).unwrap_err();
/// assert!(matches!(err, Error::UnknownWord { line: 2, ref word, .. } if word == "dog"));
/// // Without <eos> the line ends have no id: refused, even with <unk>.
/// let err = read_with_vocab(&path, &words(&["the", "cat", "<unk>"])).unwrap_err();
/// assert!(matches!(err, Error::NoEos { .. }), "{err}");
/// # std::fs::remove_file(&path).unwrap();
/// ```
pub fn read_with_vocab(path: &Path, vocab: &Vocab) -> Result<Vec<u32>> {
    read_counting_unk(path, vocab).map(|(ids, _)| ids)
}

/// As [`read_with_vocab`], also returning how many tokens were mapped to `<unk>` because they
/// are not in the vocabulary.
///
/// # Errors
/// As [`read_with_vocab`].
///
/// ```
/// use rnnlm::{data::corpus::read_counting_unk, Vocab};
/// let path = std::env::temp_dir().join(format!("rnnlm-doc-rcu-{}.txt", std::process::id()));
/// std::fs::write(&path, "the dog\na <unk> cat\n").unwrap();
/// let words = ["<eos>", "the", "cat", "<unk>"];
/// let vocab = Vocab::from_words(words.iter().map(|w| w.to_string()).collect()).unwrap();
/// let (ids, mapped) = read_counting_unk(&path, &vocab).unwrap();
/// assert_eq!(ids, [1, 3, 0, 3, 3, 2, 0]);
/// assert_eq!(mapped, 2); // "dog" and "a"; the literal <unk> in the text is not counted
/// # std::fs::remove_file(&path).unwrap();
/// ```
pub fn read_counting_unk(path: &Path, vocab: &Vocab) -> Result<(Vec<u32>, usize)> {
    vocab.require_eos(path, "the vocabulary it is read with")?;
    let unk = vocab.unk_id();
    let mut ids = Vec::new();
    let mut mapped = 0;
    for_each_token(path, |w, line| {
        let id = match (vocab.id(w), unk) {
            (Some(id), _) => id,
            (None, Some(u)) => {
                mapped += 1;
                u
            }
            (None, None) => {
                return Err(Error::UnknownWord {
                    path: path.to_owned(),
                    line,
                    word: w.to_owned(),
                })
            }
        };
        ids.push(id);
        Ok(())
    })?;
    Ok((ids, mapped))
}

/// PyTorch word_language_model's `data.Dictionary` over the text at `path`: the words in order
/// of first appearance, reading line by line (`\n`, `\r\n` and `\r` end a line, as Python's
/// text mode reads them) each line's words, split as Python's `str.split()` splits, followed by
/// `"<eos>"`. Lines are read with the bound of
/// [`read_line_limited`], not whole into memory. This is how
/// `--vocab-text` gives the words of a converted model's ids.
///
/// # Errors
/// As [`for_each_token`].
///
/// ```
/// use rnnlm::data::corpus::read_dictionary;
/// let path = std::env::temp_dir().join(format!("rnnlm-doc-dict-{}.txt", std::process::id()));
/// std::fs::write(&path, "the cat\r\n\nthe dog\rsat").unwrap();
/// assert_eq!(read_dictionary(&path).unwrap(), ["the", "cat", "<eos>", "dog", "sat"]);
/// std::fs::write(&path, "").unwrap();
/// assert!(read_dictionary(&path).unwrap().is_empty());
/// # std::fs::remove_file(&path).unwrap();
/// ```
pub fn read_dictionary(path: &Path) -> Result<Vec<String>> {
    let mut reader = std::io::BufReader::with_capacity(1 << 16, open_text(path)?);
    let (mut buf, mut line) = (String::new(), 0);
    let mut seen = std::collections::HashSet::new();
    let mut words = Vec::new();
    let mut add = |w: &str| {
        if seen.insert(w.to_string()) {
            words.push(w.to_string());
        }
    };
    while read_line_limited(&mut reader, &mut buf, path, line + 1)? {
        line += 1;
        // The line with its terminator: a `\r\n` never straddles two reads (which end after a
        // `\n`), and a lone `\r` inside ends a line too.
        let mut rest = buf.as_str();
        while !rest.is_empty() {
            let (text, next) = match rest.find(['\n', '\r']) {
                Some(i) => {
                    let skip = if rest[i..].starts_with("\r\n") { 2 } else { 1 };
                    (&rest[..i], &rest[i + skip..])
                }
                None => (rest, ""),
            };
            for w in text.split(py_space).filter(|w| !w.is_empty()) {
                add(w);
            }
            add(EOS);
            rest = next;
        }
    }
    Ok(words)
}

/// Python's `str.isspace` for the characters `str.split()` splits on: Unicode white space plus
/// the separators U+001C..U+001F, which Rust does not count as white space.
fn py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// The Penn Treebank as the book loads it: ids by first appearance in train.
///
/// ```
/// let dir = std::env::temp_dir().join(format!("rnnlm-doc-ptb-type-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// for (split, text) in [("train", "a b\nb c\n"), ("valid", "c a\n"), ("test", "b\n")] {
///     std::fs::write(dir.join(format!("ptb.{split}.txt")), text).unwrap();
/// }
/// let ptb = rnnlm::Ptb::load(&dir).unwrap();
/// assert_eq!(ptb.vocab.words(), ["a", "b", "<eos>", "c"]);
/// assert_eq!((ptb.train.len(), ptb.valid.len(), ptb.test.len()), (6, 3, 2));
/// assert_eq!(ptb.test, [1, 2]); // b <eos>
/// # std::fs::remove_dir_all(&dir).unwrap();
/// ```
#[derive(Clone, Debug)]
pub struct Ptb {
    /// 10,000 words for Mikolov's PTB.
    pub vocab: Vocab,
    /// 929,589 tokens.
    pub train: Vec<u32>,
    /// 73,760 tokens.
    pub valid: Vec<u32>,
    /// 82,430 tokens.
    pub test: Vec<u32>,
}

impl Ptb {
    /// Loads `ptb.{train,valid,test}.txt` from `dir`.
    ///
    /// # Errors
    /// If a file is missing or unreadable, or valid/test hold a word train does not.
    ///
    /// ```
    /// let dir = std::env::temp_dir().join(format!("rnnlm-doc-ptb-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir).unwrap();
    /// std::fs::write(dir.join("ptb.train.txt"), " the cat sat \n the dog \n").unwrap();
    /// std::fs::write(dir.join("ptb.valid.txt"), " the dog sat \n").unwrap();
    /// std::fs::write(dir.join("ptb.test.txt"), " the cat \n").unwrap();
    /// let ptb = rnnlm::Ptb::load(&dir).unwrap();
    /// // Ids by first appearance in train, <eos> after every line.
    /// assert_eq!(ptb.train, [0, 1, 2, 3, 0, 4, 3]);
    /// assert_eq!(ptb.valid, [0, 4, 2, 3]);
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// ```
    pub fn load(dir: &Path) -> Result<Self> {
        let file = |name: &str| -> PathBuf { dir.join(name) };
        let mut vocab = Vocab::new();
        let train = read_building_vocab(&file("ptb.train.txt"), &mut vocab)?;
        let valid = read_with_vocab(&file("ptb.valid.txt"), &vocab)?;
        let test = read_with_vocab(&file("ptb.test.txt"), &vocab)?;
        Ok(Self {
            vocab,
            train,
            valid,
            test,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_dictionary_is_word_language_models() {
        let path = std::env::temp_dir().join(format!("rnnlm-dict-unit-{}", std::process::id()));
        let dict = |text: &str| {
            std::fs::write(&path, text).unwrap();
            read_dictionary(&path).unwrap()
        };
        assert_eq!(
            dict("b a  b\r\nc\rb\n\n d \t e\u{1f}f"),
            ["b", "a", "<eos>", "c", "d", "e", "f"]
        );
        assert_eq!(dict("\n"), ["<eos>"]);
        assert_eq!(dict("x"), ["x", "<eos>"]);
        assert_eq!(dict("x\n"), ["x", "<eos>"]);
        assert_eq!(dict("x\r"), ["x", "<eos>"]);
        std::fs::remove_file(&path).unwrap();
    }
}
