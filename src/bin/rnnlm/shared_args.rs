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
    /// Output layer: full (a softmax over the whole vocabulary), class (Mikolov's class
    /// factorisation p(w|h) = p(class|h) p(w|class,h): a softmax over --classes classes,
    /// then one over the words of the target's class) or adaptive (Grave et al.'s adaptive
    /// softmax as PyTorch's AdaptiveLogSoftmaxWithLoss: a head over the --cutoffs shortlist
    /// and one logit per cluster, then the target's cluster through a projection). Both
    /// factorised heads number the words by frequency.
    #[arg(long, value_enum, default_value = "full")]
    pub(crate) softmax: SoftmaxKind,
    /// Classes of --softmax class, built from the training text's word counts as Mikolov's
    /// toolkit does (default: the square root of the vocabulary size).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) classes: Option<u32>,
    /// Cutoffs of --softmax adaptive, increasing and below the vocabulary size: ids
    /// 0..c0 are the shortlist, c_i..c_(i+1) cluster i (default: those of 2000,10000,50000
    /// below the vocabulary size).
    #[arg(long, value_delimiter = ',')]
    pub(crate) cutoffs: Option<Vec<usize>>,
    /// --softmax adaptive: cluster i projects to H / div^(i+1) dimensions (PyTorch's
    /// div_value).
    #[arg(long, allow_negative_numbers = true)]
    pub(crate) div_value: Option<f64>,
    /// --softmax adaptive: a bias on the head (PyTorch's head_bias).
    #[arg(long)]
    pub(crate) head_bias: bool,
}

/// `--softmax`.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum SoftmaxKind {
    Full,
    Class,
    Adaptive,
}

/// The cutoffs `--softmax adaptive` takes without `--cutoffs`: those of PyTorch's usual
/// `[2000, 10000, 50000]` that are below the vocabulary size.
const DEFAULT_CUTOFFS: [usize; 3] = [2000, 10000, 50000];

/// The default cutoffs for `v` words (at least one: `v / 2` when even 2000 is too many).
pub(crate) fn default_cutoffs(v: usize) -> Vec<usize> {
    let c: Vec<usize> = DEFAULT_CUTOFFS.iter().copied().filter(|&c| c < v).collect();
    if c.is_empty() {
        vec![(v / 2).max(1)]
    } else {
        c
    }
}

impl ModelArgs {
    pub(crate) fn config(&self, vocab: usize, shape: &Shape) -> Result<rnnlm::Config, Error> {
        self.check()?;
        let softmax = match self.softmax {
            SoftmaxKind::Full => rnnlm::Softmax::Full,
            SoftmaxKind::Class => rnnlm::Softmax::Class {
                classes: self
                    .classes
                    .map_or_else(|| default_classes(vocab), |c| c as usize),
            },
            SoftmaxKind::Adaptive => {
                let cutoffs = self
                    .cutoffs
                    .clone()
                    .unwrap_or_else(|| default_cutoffs(vocab));
                if let Some(&c) = cutoffs.iter().find(|&&c| c >= vocab) {
                    return Err(Error::invalid(
                        "--cutoffs",
                        format!(
                            "{c} is not below the vocabulary size {vocab} (every cluster needs \
                             at least one word)"
                        ),
                    ));
                }
                rnnlm::Softmax::adaptive(
                    &cutoffs,
                    self.div_value.unwrap_or(4.0),
                    self.head_bias,
                    shape.hidden as usize,
                )?
            }
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
        rnnlm::Softmax::Adaptive {
            cutoffs,
            projections,
            head_bias,
        } => format!(
            " adaptive softmax cutoffs={} projections={}{}",
            join(cutoffs.as_slice()),
            join(projections.as_slice()),
            if head_bias { " head bias" } else { "" }
        ),
    }
}

fn join(x: &[u32]) -> String {
    x.iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// The default number of classes for `v` words: the nearest integer to sqrt(V) (Mikolov's
/// rule of thumb: the two softmaxes are then about equally wide), at least 1.
pub(crate) fn default_classes(v: usize) -> usize {
    ((v as f64).sqrt().round() as usize).clamp(1, v.max(1))
}

impl ModelArgs {
    /// The flag combinations that are wrong whatever the data (checked before reading it).
    pub(crate) fn check(&self) -> Result<(), Error> {
        if self.softmax != SoftmaxKind::Class && self.classes.is_some() {
            return Err(Error::invalid("--classes", "needs --softmax class"));
        }
        let adaptive = self.softmax == SoftmaxKind::Adaptive;
        for (flag, given) in [
            ("--cutoffs", self.cutoffs.is_some()),
            ("--div-value", self.div_value.is_some()),
            ("--head-bias", self.head_bias),
        ] {
            if given && !adaptive {
                return Err(Error::invalid(flag, "needs --softmax adaptive"));
            }
        }
        if adaptive && self.tie {
            return Err(Error::invalid(
                "--tie",
                "an adaptive head has no output matrix of the embedding's shape to tie (use \
                 --softmax full or class with --tie)",
            ));
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
