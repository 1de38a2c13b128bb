//! Word <-> id maps.

use std::collections::HashMap;
use std::path::Path;

use crate::error::{Error, Result};

/// The unknown-word token: when a vocabulary has it, words outside the vocabulary map to it.
///
/// ```
/// use rnnlm::{data::vocab::UNK, Vocab};
/// let v = Vocab::from_words(vec!["the".into(), UNK.into()]).unwrap();
/// assert_eq!((UNK, v.unk_id()), ("<unk>", Some(1)));
/// ```
pub const UNK: &str = "<unk>";

/// A vocabulary: ids are dense `0..len` in insertion order (the book assigns them in order of
/// first appearance in the training text).
///
/// ```
/// let mut v = rnnlm::Vocab::new();
/// for w in "the cat sat on the mat".split_whitespace() {
///     v.add(w);
/// }
/// assert_eq!(v.words(), ["the", "cat", "sat", "on", "mat"]); // first appearance order
/// assert_eq!((v.id("mat"), v.word(1)), (Some(4), Some("cat")));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Vocab {
    words: Vec<String>,
    ids: HashMap<String, u32>,
}

impl Vocab {
    /// An empty vocabulary.
    ///
    /// ```
    /// let v = rnnlm::Vocab::new();
    /// assert!(v.is_empty() && v.unk_id().is_none());
    /// assert_eq!(v, rnnlm::Vocab::from_words(vec![]).unwrap());
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// A vocabulary with the given words as ids `0..len`.
    ///
    /// # Errors
    /// If a word appears twice or is empty.
    ///
    /// ```
    /// let v = rnnlm::Vocab::from_words(vec!["<eos>".into(), "cat".into(), "<unk>".into()]).unwrap();
    /// assert_eq!((v.id("cat"), v.word(0), v.unk_id()), (Some(1), Some("<eos>"), Some(2)));
    /// assert!(rnnlm::Vocab::from_words(vec!["a".into(), "a".into()]).is_err());
    /// ```
    pub fn from_words(words: Vec<String>) -> Result<Self> {
        let mut ids = HashMap::with_capacity(words.len());
        for (i, w) in words.iter().enumerate() {
            if w.is_empty() || w.chars().any(char::is_whitespace) {
                return Err(Error::invalid(
                    "vocabulary",
                    format!("entry {i} ({w:?}) is empty or contains whitespace"),
                ));
            }
            if ids.insert(w.clone(), i as u32).is_some() {
                return Err(Error::invalid(
                    "vocabulary",
                    format!("word {w:?} appears more than once"),
                ));
            }
        }
        Ok(Self { words, ids })
    }

    /// The id of `word`, adding it with the next id if it is new.
    ///
    /// ```
    /// let mut v = rnnlm::Vocab::new();
    /// assert_eq!((v.add("the"), v.add("cat"), v.add("the")), (0, 1, 0)); // "the" is kept once
    /// assert_eq!(v.len(), 2);
    /// ```
    pub fn add(&mut self, word: &str) -> u32 {
        if let Some(&id) = self.ids.get(word) {
            return id;
        }
        let id = self.words.len() as u32;
        self.words.push(word.to_owned());
        self.ids.insert(word.to_owned(), id);
        id
    }

    /// The id of `word`, if present.
    ///
    /// ```
    /// let v = rnnlm::Vocab::from_words(vec!["a".into(), "b".into()]).unwrap();
    /// assert_eq!((v.id("b"), v.id("z")), (Some(1), None));
    /// ```
    pub fn id(&self, word: &str) -> Option<u32> {
        self.ids.get(word).copied()
    }

    /// The word of `id`, if present.
    ///
    /// ```
    /// let v = rnnlm::Vocab::from_words(vec!["a".into(), "b".into()]).unwrap();
    /// assert_eq!((v.word(0), v.word(2)), (Some("a"), None));
    /// assert_eq!(v.id(v.word(1).unwrap()), Some(1));
    /// ```
    pub fn word(&self, id: u32) -> Option<&str> {
        self.words.get(id as usize).map(String::as_str)
    }

    /// The id of [`UNK`], if the vocabulary has it.
    ///
    /// ```
    /// let v = rnnlm::Vocab::from_words(vec!["<eos>".into(), "<unk>".into()]).unwrap();
    /// assert_eq!(v.unk_id(), Some(1));
    /// assert_eq!(rnnlm::Vocab::from_words(vec!["a".into()]).unwrap().unk_id(), None);
    /// ```
    pub fn unk_id(&self) -> Option<u32> {
        self.id(UNK)
    }

    /// The id of [`EOS`](super::corpus::EOS), which ends every sentence: text is read one
    /// sentence a line, `<eos>` after each, and scored from `<eos>`.
    ///
    /// # Errors
    /// [`Error::NoEos`] naming `path`, where the vocabulary came from (or the text it was to
    /// read), and the vocabulary as `what` (e.g. `its vocabulary`). Every reader and command
    /// that needs `<eos>` refuses a vocabulary without it through here, with the one wording.
    ///
    /// ```
    /// let v = rnnlm::Vocab::from_words(vec!["a".into(), "<eos>".into()]).unwrap();
    /// assert_eq!(v.require_eos("m.safetensors".as_ref(), "its vocabulary").unwrap(), 1);
    /// let v = rnnlm::Vocab::from_words(vec!["a".into(), "<unk>".into()]).unwrap();
    /// let err = v.require_eos("m.safetensors".as_ref(), "its vocabulary").unwrap_err();
    /// assert_eq!(
    ///     err.to_string(),
    ///     "m.safetensors: its vocabulary has no <eos> (the end of every sentence), so \
    ///      sentences cannot be delimited"
    /// );
    /// ```
    pub fn require_eos(&self, path: &Path, what: &str) -> Result<u32> {
        self.id(super::corpus::EOS).ok_or_else(|| Error::NoEos {
            path: path.to_owned(),
            what: what.to_owned(),
        })
    }

    /// Number of words.
    ///
    /// ```
    /// let v = rnnlm::Vocab::from_words(vec!["a".into(), "b".into(), "c".into()]).unwrap();
    /// assert_eq!(v.len(), 3);
    /// ```
    pub fn len(&self) -> usize {
        self.words.len()
    }

    /// Whether the vocabulary is empty.
    ///
    /// ```
    /// let mut v = rnnlm::Vocab::new();
    /// assert!(v.is_empty());
    /// v.add("a");
    /// assert!(!v.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// All words in id order.
    ///
    /// ```
    /// let v = rnnlm::Vocab::from_words(vec!["b".into(), "a".into()]).unwrap();
    /// assert_eq!(v.words(), ["b", "a"]); // id order, not sorted
    /// assert_eq!(rnnlm::Vocab::from_words(v.words().to_vec()).unwrap(), v);
    /// ```
    pub fn words(&self) -> &[String] {
        &self.words
    }
}
