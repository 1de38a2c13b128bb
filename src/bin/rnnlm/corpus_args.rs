//! A corpus a command reads: a text (read into ids with a vocabulary) or an ids file of
//! `rnnlm prepare` (mapped, checked against the vocabulary); `train` and `eval` take either.

use std::path::{Path, PathBuf};

use rnnlm::data::corpus::read_counting_unk;
use rnnlm::data::ids::{IdsFile, Tokens};
use rnnlm::{Error, Vocab};

/// Where a corpus comes from.
#[derive(Clone, Debug)]
pub(crate) enum Source {
    /// A text, one sentence per line.
    Text(PathBuf),
    /// An ids file (OUT.ids of `rnnlm prepare`).
    Ids(PathBuf),
}

impl Source {
    /// `--NAME-ids` when given, else the text `--NAME` (or its default).
    pub(crate) fn pick(
        ids: &Option<PathBuf>,
        text: impl FnOnce() -> Result<PathBuf, Error>,
    ) -> Result<Self, Error> {
        match ids {
            Some(p) => Ok(Source::Ids(p.clone())),
            None => text().map(Source::Text),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        match self {
            Source::Text(p) | Source::Ids(p) => p,
        }
    }

    /// Reads the corpus with `vocab` (`what` names it in a mismatch error, e.g. `the
    /// vocabulary of m.safetensors`).
    pub(crate) fn load(&self, vocab: &Vocab, what: &str) -> Result<Corpus, Error> {
        match self {
            Source::Text(p) => {
                let (ids, unk) = read_counting_unk(p, vocab)?;
                Ok(Corpus::Text { ids, unk })
            }
            Source::Ids(p) => {
                let file = IdsFile::open(p)?;
                file.check_vocab(vocab, what)?;
                Ok(Corpus::Mapped(file))
            }
        }
    }
}

/// A corpus read: ids in memory, or a mapped ids file.
pub(crate) enum Corpus {
    Text { ids: Vec<u32>, unk: usize },
    Mapped(IdsFile),
}

impl Corpus {
    pub(crate) fn tokens(&self) -> Tokens<'_> {
        match self {
            Corpus::Text { ids, .. } => Tokens::from(ids),
            Corpus::Mapped(f) => f.tokens(),
        }
    }

    /// Words mapped to `<unk>` when the text was read (`None` for an ids file: `prepare`
    /// reported it).
    pub(crate) fn unk(&self) -> Option<usize> {
        match self {
            Corpus::Text { unk, .. } => Some(*unk),
            Corpus::Mapped(_) => None,
        }
    }

    /// [`Corpus::unk`] for a summary line: the count, or `-`.
    pub(crate) fn unk_note(&self) -> String {
        self.unk().map_or("-".into(), |u| u.to_string())
    }
}

/// The vocabulary file of an ids file: `--vocab` when given, else `X.vocab` beside `X.ids`.
pub(crate) fn vocab_of(ids: &Path, given: Option<&Path>) -> PathBuf {
    match given {
        Some(v) => v.to_owned(),
        None => ids.with_extension("vocab"),
    }
}
