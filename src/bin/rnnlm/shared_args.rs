//! Flags shared by several subcommands: the model's structure (`ModelArgs`, `--cell`), its
//! sizes (`Shape`), and the evaluation protocol (`Protocol`).

use clap::ValueEnum;
use rnnlm::Error;

/// `--cell`: the library's cells, by their names (one list: `Cell::ALL`).
fn cell_parser() -> impl clap::builder::TypedValueParser<Value = rnnlm::model::config::Cell> {
    use clap::builder::TypedValueParser as _;
    use rnnlm::model::config::Cell;
    clap::builder::PossibleValuesParser::new(Cell::ALL.iter().map(|c| c.name()))
        .map(|s| s.parse::<Cell>().expect("a listed cell name"))
}

/// The model's structure, shared by `train` and `bench`.
#[derive(clap::Args)]
pub(crate) struct ModelArgs {
    /// Recurrent cell: rnn (the book's tanh RNN), lstm (the book's ch06 LSTM), gru (PyTorch's
    /// GRU), gru-book (the book's appendix C GRU).
    #[arg(long, default_value = "rnn", value_parser = cell_parser())]
    pub(crate) cell: rnnlm::model::config::Cell,
    /// Stacked recurrent layers (layer l > 0 reads layer l-1's h).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub(crate) layers: u32,
    /// Inverted dropout probability during training, after the embedding, between layers
    /// and before the output layer (0 = off).
    // allow_negative_numbers: `--dropout -1` reaches the range check and its message, instead
    // of clap's "unexpected argument '-1'".
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub(crate) dropout: f32,
    /// Tie the output weights to the embedding (embed.W transposed); needs --wordvec equal
    /// to --hidden.
    #[arg(long)]
    pub(crate) tie: bool,
    /// Output layer: full (a softmax over the whole vocabulary) or class (Mikolov's class
    /// factorisation p(w|h) = p(class|h) p(w|class,h): a softmax over --classes classes,
    /// then one over the words of the target's class; words numbered by frequency).
    #[arg(long, value_enum, default_value = "full")]
    pub(crate) softmax: SoftmaxKind,
    /// Classes of --softmax class, built from the training text's word counts as Mikolov's
    /// toolkit does (default: the square root of the vocabulary size).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) classes: Option<u32>,
}

/// `--softmax`.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum SoftmaxKind {
    Full,
    Class,
}

impl ModelArgs {
    pub(crate) fn config(&self, vocab: usize, shape: &Shape) -> Result<rnnlm::Config, Error> {
        let softmax = match (self.softmax, self.classes) {
            (SoftmaxKind::Full, None) => rnnlm::Softmax::Full,
            (SoftmaxKind::Full, Some(_)) => {
                return Err(Error::invalid("--classes", "needs --softmax class"))
            }
            (SoftmaxKind::Class, c) => rnnlm::Softmax::Class {
                classes: c.map_or_else(|| default_classes(vocab), |c| c as usize),
            },
        };
        rnnlm::Config::new(vocab, shape.wordvec as usize, shape.hidden as usize)?
            .with_cell(self.cell)
            .with_layers(self.layers as usize)
            .with_tied(self.tie)
            .with_softmax(softmax)
            .validated()
    }
}

/// The output layer for summary lines: empty for the full softmax, else e.g.
/// ` class softmax C=100`.
pub(crate) fn head_note(cfg: &rnnlm::Config) -> String {
    match cfg.softmax {
        rnnlm::Softmax::Full => String::new(),
        rnnlm::Softmax::Class { classes } => format!(" class softmax C={classes}"),
    }
}

/// The default number of classes for `v` words: the nearest integer to sqrt(V) (Mikolov's
/// rule of thumb: the two softmaxes are then about equally wide), at least 1.
pub(crate) fn default_classes(v: usize) -> usize {
    ((v as f64).sqrt().round() as usize).clamp(1, v.max(1))
}

impl ModelArgs {
    /// The flag combinations that are wrong whatever the data (checked before reading it).
    pub(crate) fn check(&self) -> Result<(), Error> {
        if self.softmax == SoftmaxKind::Full && self.classes.is_some() {
            return Err(Error::invalid("--classes", "needs --softmax class"));
        }
        Ok(())
    }

    /// Whether the output layer needs the words numbered by frequency.
    pub(crate) fn frequency_order(&self) -> bool {
        self.softmax != SoftmaxKind::Full
    }
}

/// Model and batch sizes shared by `train` and `bench`.
#[derive(clap::Args)]
pub(crate) struct Shape {
    /// Word-vector size D.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) wordvec: u32,
    /// Hidden size H.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) hidden: u32,
    /// Batch rows N.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) batch: u32,
    /// Time steps per batch T (the truncated-BPTT length).
    #[arg(long, default_value_t = 35, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) time: u32,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum Protocol {
    /// The book's eval_perplexity: N rows from offsets k*T + i*jump, the partial last batch
    /// dropped, state carried, exp of the mean per-batch loss.
    Book,
    /// Every token scored once (N contiguous streams, the final partial chunk included),
    /// exp of the mean per-token loss.
    Full,
    /// PyTorch word_language_model's evaluate(): N contiguous streams (the tail dropped), each
    /// scoring its own next tokens in chunks of T, exp of the mean per-token loss.
    Torch,
}

impl From<Protocol> for rnnlm::Protocol {
    fn from(p: Protocol) -> Self {
        match p {
            Protocol::Book => rnnlm::Protocol::Book,
            Protocol::Full => rnnlm::Protocol::Full,
            Protocol::Torch => rnnlm::Protocol::Torch,
        }
    }
}
