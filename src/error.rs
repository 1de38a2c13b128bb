//! The crate's one error type.
//!
//! Every variant carries what a user needs to fix the problem: the file, the line, what was
//! expected and what was found.

use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `rnnlm`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system I/O error on a named file.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },

    /// A file or stream whose content is not what was expected.
    #[error("{}{}: {msg}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    Parse {
        /// The file (or `<stdin>`).
        path: PathBuf,
        /// 1-based line number, when the problem sits on one line.
        line: Option<usize>,
        /// What is wrong.
        msg: String,
    },

    /// A word that is not in the model's vocabulary (and the vocabulary has no `<unk>`).
    #[error("{}:{line}: word {word:?} is not in the model's vocabulary (and it has no <unk>)", path.display())]
    UnknownWord {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The word.
        word: String,
    },

    /// A tensor, buffer or argument with the wrong shape.
    #[error("{what}: expected shape {expected:?}, found {found:?}")]
    Shape {
        /// Which tensor or argument.
        what: String,
        /// The shape it should have.
        expected: Vec<usize>,
        /// The shape it has.
        found: Vec<usize>,
    },

    /// A checkpoint file that cannot be used (missing tensor, bad metadata, wrong dtype, ...).
    #[error("checkpoint {}: {msg}", path.display())]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        msg: String,
    },

    /// A download that failed; `msg` says what to do instead.
    #[error("download of {url} failed: {msg}")]
    Download {
        /// What was being fetched.
        url: String,
        /// The cause and what to do instead.
        msg: String,
    },

    /// A file whose SHA-256 does not match the published checksum.
    #[error("{}: SHA-256 is {found}, expected {expected}; {hint}", path.display())]
    Checksum {
        /// The file.
        path: PathBuf,
        /// The published SHA-256 (hex).
        expected: String,
        /// The file's SHA-256 (hex).
        found: String,
        /// What to do about it.
        hint: String,
    },

    /// Training produced a non-finite loss, gradient norm or validation perplexity. The
    /// trainer stops before the update that would spoil the weights, so they are still the
    /// last finite ones; `hint` says what was kept and what to try.
    #[error("training diverged at epoch {epoch}, step {step}: {what}; {hint}")]
    Diverged {
        /// 1-based epoch.
        epoch: usize,
        /// 1-based optimizer step that failed (for a validation, the last step taken).
        step: usize,
        /// What became non-finite, e.g. "the loss is NaN".
        what: String,
        /// What was kept and what to try.
        hint: String,
    },

    /// An invalid configuration or argument value.
    #[error("invalid {what}: {msg}")]
    Invalid {
        /// Which setting or value.
        what: String,
        /// What is wrong with it.
        msg: String,
    },

    /// A tensor a model conversion needs is absent (`path`: the file, when there is one).
    #[error(
        "{}tensor {name:?}: missing (expected shape {expected})",
        in_file(path)
    )]
    TensorMissing {
        /// The file being converted.
        path: Option<PathBuf>,
        /// The tensor.
        name: String,
        /// The shape it should have, e.g. `[16, 64]` or `[V, D]` when not yet known.
        expected: String,
    },

    /// A tensor that has no place in the model being converted.
    #[error(
        "{}tensor {name:?}: unexpected in {what} (found shape {found:?})",
        in_file(path)
    )]
    TensorUnexpected {
        /// The file being converted.
        path: Option<PathBuf>,
        /// The tensor.
        name: String,
        /// What was being read (e.g. `a 2-layer lstm word_language_model RNNModel`).
        what: String,
        /// Its shape.
        found: Vec<usize>,
    },

    /// A tensor with the wrong shape.
    #[error(
        "{}tensor {name:?}: expected shape {expected}, found {found:?}",
        in_file(path)
    )]
    TensorShape {
        /// The file being converted.
        path: Option<PathBuf>,
        /// The tensor.
        name: String,
        /// The shape it should have.
        expected: String,
        /// The shape it has.
        found: Vec<usize>,
    },

    /// A tensor whose data length is not the product of its shape.
    #[error(
        "{}tensor {name:?}: shape {shape:?} needs {expected} values, found {found}",
        in_file(path)
    )]
    TensorData {
        /// The file being converted.
        path: Option<PathBuf>,
        /// The tensor.
        name: String,
        /// Its shape.
        shape: Vec<usize>,
        /// The product of the shape.
        expected: usize,
        /// The data length.
        found: usize,
    },

    /// The model's output at a position is no probability: its logits are not finite (weights
    /// whose products overflow), or the target's probability is 0. Raised by scoring,
    /// evaluation and generation instead of a NaN or infinite result.
    #[error("{}position {position}: {what}", sequence.map(|s| format!("sequence {s}, ")).unwrap_or_default())]
    NotFinite {
        /// The sequence (of [`crate::Rnnlm::score_batch`]), when there are several.
        sequence: Option<usize>,
        /// The position: of the predicted token in its sequence or corpus (0-based), or of the
        /// word being generated.
        position: usize,
        /// What is wrong.
        what: String,
    },

    /// An output that could not be written where it was asked for (a full disk, a folder gone
    /// or made read-only during the run). `kept` says where it was written instead, or that
    /// it was lost.
    #[error("{source}; {kept}")]
    NotSaved {
        /// Why it could not be written where asked.
        #[source]
        source: Box<Error>,
        /// Where it went instead, or that it is lost.
        kept: String,
    },

    /// Two tensors a conversion adds into one (an RNN's or LSTM's `bias_ih + bias_hh`, which
    /// the converted model keeps as its one bias) whose sum overflows f32.
    #[error(
        "{}tensors {a:?} + {b:?}: their sum (the converted model's one bias) overflows f32 at \
         index {index}: {x:e} + {y:e}",
        in_file(path)
    )]
    TensorSum {
        /// The file being converted.
        path: Option<PathBuf>,
        /// The first addend's tensor.
        a: String,
        /// The second addend's tensor.
        b: String,
        /// The flat index where the sum overflows (the first such).
        index: usize,
        /// The first addend's value there.
        x: f32,
        /// The second addend's value there.
        y: f32,
    },

    /// A vocabulary without `<eos>`. Text is read one sentence a line, each ended by `<eos>`,
    /// so such a vocabulary can neither read, score nor train on text (see
    /// [`Vocab::require_eos`](crate::Vocab::require_eos)).
    #[error(
        "{}: {what} has no <eos> (the end of every sentence), so sentences cannot be delimited",
        path.display()
    )]
    NoEos {
        /// Where the vocabulary came from (a checkpoint, a converted file), or the text that
        /// was to be read with it.
        path: PathBuf,
        /// The vocabulary, as `path` relates to it, e.g. `its vocabulary`.
        what: String,
    },

    /// Not enough memory for a buffer: refused before allocating because it needs more than
    /// the system has available (`available` is `Some`, see [`crate::mem::check_memory`]), or
    /// refused by the allocator (`None`).
    #[error("{}", memory_message(what, *needed, *available))]
    Memory {
        /// What the memory was for, with its shape.
        what: String,
        /// Bytes needed.
        needed: u64,
        /// Bytes available when the request was refused before allocating.
        available: Option<u64>,
    },
}

fn memory_message(what: &str, needed: u64, available: Option<u64>) -> String {
    let needed = crate::mem::format_bytes(needed);
    match available {
        Some(a) => format!(
            "not enough memory: {what} needs {needed}, more than the {} available",
            crate::mem::format_bytes(a)
        ),
        None => format!("not enough memory: allocating {needed} for {what} failed"),
    }
}

impl Error {
    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// The same error, naming `file` if it is about a tensor read from one.
    pub fn in_file(mut self, file: &std::path::Path) -> Self {
        if let Error::TensorMissing { path, .. }
        | Error::TensorUnexpected { path, .. }
        | Error::TensorShape { path, .. }
        | Error::TensorData { path, .. }
        | Error::TensorSum { path, .. } = &mut self
        {
            *path = Some(file.to_owned());
        }
        self
    }

    /// An [`Error::Invalid`].
    pub fn invalid(what: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Invalid {
            what: what.into(),
            msg: msg.into(),
        }
    }
}

/// `"{file}: "` for a tensor error read from a file, else nothing.
fn in_file(path: &Option<PathBuf>) -> String {
    path.as_ref()
        .map(|p| format!("{}: ", p.display()))
        .unwrap_or_default()
}
