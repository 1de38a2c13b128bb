//! Model hyper-parameters: the cell, the sizes, the depth and whether the output layer is tied.

use serde::{Deserialize, Serialize};

use crate::cells::CellImpl;
use crate::error::{Error, Result};

/// Declares `Cell`, its names and implementations from one list.
macro_rules! cells {
    ($(#[$emeta:meta])* pub enum Cell {
        $($(#[$meta:meta])* $variant:ident = $name:literal => $imp:path;)*
    }) => {
        $(#[$emeta])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum Cell {
            $($(#[$meta])* #[serde(rename = $name)] $variant,)*
        }

        impl Cell {
            /// Every cell.
            pub const ALL: &'static [Cell] = &[$(Cell::$variant),*];

            /// The name used on the command line and in checkpoints (`rnn`, `lstm`, `gru`,
            /// `gru-book`).
            pub fn name(self) -> &'static str {
                match self {
                    $(Cell::$variant => $name,)*
                }
            }

            /// The cell's implementation.
            pub(crate) fn imp(self) -> &'static dyn CellImpl {
                match self {
                    $(Cell::$variant => &$imp,)*
                }
            }
        }
    };
}

cells! {
    /// The recurrent cell.
    ///
    /// - `Rnn`: the book's tanh cell, `h = tanh(x Wx + h Wh + b)`.
    /// - `Lstm`: the book's ch06 `TimeLSTM`, one bias, gate order f, g, i, o along the 4H axis:
    ///   `A = x Wx + h Wh + b`, `f = σ(A[:H])`, `g = tanh(A[H:2H])`, `i = σ(A[2H:3H])`,
    ///   `o = σ(A[3H:])`, `c = f*c + g*i`, `h = o*tanh(c)`.
    /// - `GruBook`: the book's appendix C GRU, one bias, gate order z, r, h̃:
///   `z = σ(x Wxz + h Whz + bz)`, `r = σ(...)`, `h̃ = tanh(x Wxh + (r⊙h) Whh + bh)`,
///   `h' = (1−z)⊙h + z⊙h̃` (see `src/cells/gru_book.rs`).
/// - `Gru`: PyTorch's `nn.GRU`, two biases, gate order r, z, n along the 3H axis:
    ///   `r = σ(x Wx_r + bx_r + h Wh_r + bh_r)`, `z` likewise,
    ///   `n = tanh(x Wx_n + bx_n + r*(h Wh_n + bh_n))`, `h = (1-z)*n + z*h`. The book's appendix
    ///   GRU applies `r` before the product (`tanh(x Wx_n + (r*h) Wh_n)`); PyTorch's form lets the
    ///   product `h Wh` for all three gates be one GEMM per step, and PyTorch models import
    ///   without change.
    ///
    /// ```
    /// use rnnlm::model::config::Cell;
    /// assert_eq!(Cell::Lstm.gates(), 4);
    /// assert_eq!("gru".parse::<Cell>().unwrap(), Cell::Gru);
    /// assert!("transformer".parse::<Cell>().is_err());
    /// ```
    ///
    /// The cells are listed once, in the `cells!` invocation below: a new cell is a file in
    /// `src/cells/` and one line there.
    pub enum Cell {
    /// tanh RNN (G = 1).
    #[default]
    Rnn = "rnn" => crate::cells::rnn::Rnn;
    /// LSTM, book form (G = 4).
    Lstm = "lstm" => crate::cells::lstm::Lstm;
    /// GRU, PyTorch form (G = 3).
    Gru = "gru" => crate::cells::gru::Gru;
    /// GRU, the book's appendix form (G = 3): `r` applies to `h` before the product.
    GruBook = "gru-book" => crate::cells::gru_book::GruBook;
    }
}

impl Cell {
    /// Number of gate blocks `G` along the `G*H` axis of `Wx`, `Wh` and the biases.
    pub fn gates(self) -> usize {
        self.imp().gates()
    }
}

impl std::fmt::Display for Cell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Cell {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Cell::ALL
            .iter()
            .copied()
            .find(|c| c.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Cell::ALL.iter().map(|c| c.name()).collect();
                Error::invalid(
                    "cell",
                    format!("{s:?} (expected one of {})", names.join(", ")),
                )
            })
    }
}

/// Most layers a model may have.
pub const MAX_LAYERS: usize = 64;

/// The shape of a model: cell, vocabulary `V`, word-vector size `D`, hidden size `H`, number
/// of stacked layers `L`, and whether the output weights are `embed.W` transposed (`tied`,
/// which needs `D == H`).
///
/// Checkpoints store it as the `config` metadata entry
/// `{"cell":"lstm","vocab_size":V,"wordvec_size":D,"hidden_size":H,"layers":L,"tied":false}`
/// (see [`crate::checkpoint`]).
///
/// ```
/// use rnnlm::{model::config::Cell, Config, Params};
/// let cfg = Config::new(10_000, 100, 100).unwrap(); // the book's SimpleRnnlm on PTB
/// assert_eq!((cfg.cell, cfg.layers, cfg.tied), (Cell::Rnn, 1, false));
/// let better = Config::new(10_000, 650, 650).unwrap()
///     .with_cell(Cell::Lstm).with_layers(2).with_tied(true).validated().unwrap(); // BetterRnnlm
/// assert_eq!(Params::zeros(better).as_slice().len(),
///     10_000 * 650 + 2 * (650 + 650 + 1) * 4 * 650 + 10_000);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// `V`: number of words.
    pub vocab_size: usize,
    /// `D`: embedding width.
    pub wordvec_size: usize,
    /// `H`: hidden-state width.
    pub hidden_size: usize,
    /// The recurrent cell.
    #[serde(default)]
    pub cell: Cell,
    /// `L`: stacked layers (layer `l > 0` reads layer `l-1`'s `h`).
    #[serde(default = "one")]
    pub layers: usize,
    /// Output weights are `embed.W` transposed (no `affine.W`).
    #[serde(default)]
    pub tied: bool,
    /// The output layer (the full softmax unless a checkpoint says otherwise).
    #[serde(default, skip_serializing_if = "Softmax::is_full")]
    pub softmax: Softmax,
}

/// The output layer ("head") of a model.
///
/// - `Full`: one softmax over all `V` words (the book's `TimeAffine -> TimeSoftmaxWithLoss`):
///   `affine.W [H,V]`, `affine.b [V]`.
/// - `Class { classes: C }`: Mikolov's class factorisation `p(w|h) = p(c(w)|h) p(w|c(w),h)`
///   (Mikolov et al. 2011, "Extensions of recurrent neural network language model"): a softmax
///   over the `C` classes (`class.W [H,C]`, `class.b [C]`), then one over the words of the
///   target's class only (the columns of `affine.W`/`affine.b`, or of `embed.W` transposed when
///   tied, that belong to it). Classes are contiguous ranges of ids, so ids must be in
///   frequency order for the classes to mean anything (the crate builds vocabularies that way
///   for this head); the ranges themselves live with the weights
///   ([`crate::Params::class_starts`]).
///
/// ```
/// use rnnlm::{model::config::Softmax, Config};
/// let cfg = Config::new(10_000, 100, 100).unwrap().with_softmax(Softmax::Class { classes: 100 });
/// assert!(cfg.validated().is_ok());
/// assert_eq!(cfg.softmax.outputs(cfg.vocab_size), 100); // the first softmax's width
/// assert!(Config::new(10, 4, 4).unwrap().with_softmax(Softmax::Class { classes: 11 })
///     .validate().is_err()); // more classes than words
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Softmax {
    /// The full softmax over the vocabulary.
    #[default]
    Full,
    /// Mikolov's class-based softmax with `classes` classes.
    Class {
        /// `C`, at least 1 and at most `V`.
        classes: usize,
    },
}

impl Softmax {
    /// Whether this is the full softmax.
    pub fn is_full(&self) -> bool {
        matches!(self, Softmax::Full)
    }

    /// Width of the first (or only) softmax for a vocabulary of `v` words: `V` for the full
    /// softmax, `C` for the class head.
    pub fn outputs(&self, v: usize) -> usize {
        match *self {
            Softmax::Full => v,
            Softmax::Class { classes } => classes,
        }
    }

    /// The name used on the command line (`full`, `class`).
    pub fn name(&self) -> &'static str {
        match self {
            Softmax::Full => "full",
            Softmax::Class { .. } => "class",
        }
    }
}

fn one() -> usize {
    1
}

impl Config {
    /// A one-layer, untied tanh-RNN configuration; see [`Config::validate`].
    ///
    /// ```
    /// use rnnlm::Config;
    /// assert!(Config::new(10, 4, 6).is_ok());
    /// assert!(Config::new(10, 0, 6).is_err()); // every size must be at least 1
    /// assert!(Config::new(1 << 25, 4, 6).is_err()); // and at most 2^24
    /// ```
    pub fn new(vocab_size: usize, wordvec_size: usize, hidden_size: usize) -> Result<Self> {
        Self {
            vocab_size,
            wordvec_size,
            hidden_size,
            cell: Cell::Rnn,
            layers: 1,
            tied: false,
            softmax: Softmax::Full,
        }
        .validated()
    }

    /// The same sizes with another cell (check with [`Config::validated`]).
    pub fn with_cell(self, cell: Cell) -> Self {
        Self { cell, ..self }
    }

    /// The same model with `layers` stacked layers (check with [`Config::validated`]).
    pub fn with_layers(self, layers: usize) -> Self {
        Self { layers, ..self }
    }

    /// The same model with tied (or untied) output weights (check with [`Config::validated`]).
    pub fn with_tied(self, tied: bool) -> Self {
        Self { tied, ..self }
    }

    /// The same model with another output layer (check with [`Config::validated`]).
    pub fn with_softmax(self, softmax: Softmax) -> Self {
        Self { softmax, ..self }
    }

    /// `self` if it is valid.
    ///
    /// # Errors
    /// As [`Config::validate`].
    pub fn validated(self) -> Result<Self> {
        self.validate()?;
        Ok(self)
    }

    /// Input width of layer `l`: `D` for the first layer, `H` above it.
    pub fn layer_input(&self, l: usize) -> usize {
        if l == 0 {
            self.wordvec_size
        } else {
            self.hidden_size
        }
    }

    /// Checks that every size is at least 1 and at most 2^24, that there are 1 to
    /// [`MAX_LAYERS`] layers, and that a tied model has `D == H`.
    ///
    /// # Errors
    /// Naming the field and the value that is out of range.
    ///
    /// ```
    /// let mut cfg = rnnlm::Config::new(10, 4, 6).unwrap();
    /// assert!(cfg.validate().is_ok());
    /// cfg.hidden_size = 0; // the fields are public: check after editing them
    /// assert!(cfg.validate().is_err());
    /// let tied = rnnlm::Config::new(10, 4, 6).unwrap().with_tied(true);
    /// assert!(tied.validate().unwrap_err().to_string().contains("wordvec_size == hidden_size"));
    /// ```
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("wordvec_size", self.wordvec_size),
            ("hidden_size", self.hidden_size),
        ] {
            if v == 0 {
                return Err(Error::invalid(name, "must be at least 1"));
            }
            if v > (1 << 24) {
                return Err(Error::invalid(name, format!("{v} is larger than 2^24")));
            }
        }
        if self.layers == 0 || self.layers > MAX_LAYERS {
            return Err(Error::invalid(
                "layers",
                format!("{} (must be 1 to {MAX_LAYERS})", self.layers),
            ));
        }
        if let Softmax::Class { classes } = self.softmax {
            if classes == 0 || classes > self.vocab_size {
                return Err(Error::invalid(
                    "classes",
                    format!(
                        "{classes} (must be 1 to the vocabulary size, {})",
                        self.vocab_size
                    ),
                ));
            }
        }
        if self.tied && self.wordvec_size != self.hidden_size {
            return Err(Error::invalid(
                "tied",
                format!(
                    "tying the output weights to embed.W needs wordvec_size == hidden_size \
                     (got D = {}, H = {})",
                    self.wordvec_size, self.hidden_size
                ),
            ));
        }
        Ok(())
    }
}
