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
    /// The adaptive softmax of Grave et al. 2017, as PyTorch's
    /// `nn.AdaptiveLogSoftmaxWithLoss` defines it (see [`Softmax::adaptive`]).
    Adaptive {
        /// `c_0 < c_1 < ... < c_{k-1} < V`: the shortlist is ids `0..c_0`, cluster `i` ids
        /// `c_i..c_{i+1}` (the last up to `V`).
        cutoffs: Sizes,
        /// The width `p_i` of each cluster's projection (PyTorch: `H // div^(i+1)`).
        projections: Sizes,
        /// Whether the head (shortlist and cluster logits) has a bias.
        #[serde(default)]
        head_bias: bool,
    },
}

/// Most clusters of an adaptive head.
pub const MAX_CLUSTERS: usize = 16;

/// A short list of sizes (an adaptive head's cutoffs or projection widths), kept inline so
/// that [`Config`] stays `Copy`; serialized as a JSON array.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "Vec<u32>", try_from = "Vec<u32>")]
pub struct Sizes {
    len: u8,
    v: [u32; MAX_CLUSTERS],
}

impl Sizes {
    /// The sizes.
    pub fn as_slice(&self) -> &[u32] {
        &self.v[..self.len as usize]
    }

    /// Number of sizes.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl TryFrom<Vec<u32>> for Sizes {
    type Error = String;
    fn try_from(x: Vec<u32>) -> std::result::Result<Self, String> {
        Sizes::try_from(x.as_slice())
    }
}

impl TryFrom<&[u32]> for Sizes {
    type Error = String;
    fn try_from(x: &[u32]) -> std::result::Result<Self, String> {
        if x.len() > MAX_CLUSTERS {
            return Err(format!(
                "{} clusters: at most {MAX_CLUSTERS} are supported",
                x.len()
            ));
        }
        let mut v = [0; MAX_CLUSTERS];
        v[..x.len()].copy_from_slice(x);
        Ok(Sizes {
            len: x.len() as u8,
            v,
        })
    }
}

impl From<Sizes> for Vec<u32> {
    fn from(s: Sizes) -> Self {
        s.as_slice().to_vec()
    }
}

impl Softmax {
    /// Whether this is the full softmax.
    pub fn is_full(&self) -> bool {
        matches!(self, Softmax::Full)
    }

    /// Whether this is a class head.
    pub fn is_class(&self) -> bool {
        matches!(self, Softmax::Class { .. })
    }

    /// Whether this is an adaptive head.
    pub fn is_adaptive(&self) -> bool {
        matches!(self, Softmax::Adaptive { .. })
    }

    /// An adaptive head as PyTorch's `nn.AdaptiveLogSoftmaxWithLoss(H, V, cutoffs, div_value,
    /// head_bias)` builds it: cluster `i` gets a projection of `floor(H / div_value^(i+1))`.
    ///
    /// # Errors
    /// If the cutoffs are not increasing and positive, there are more than
    /// [`MAX_CLUSTERS`], `div_value` is not finite and positive, or a projection would have
    /// width 0 (naming it). The cutoffs are checked against `V` by [`Config::validate`].
    ///
    /// ```
    /// use rnnlm::Softmax;
    /// let a = Softmax::adaptive(&[2000, 10000, 50000], 4.0, false, 256).unwrap();
    /// let Softmax::Adaptive { projections, .. } = a else { unreachable!() };
    /// assert_eq!(projections.as_slice(), [64, 16, 4]);
    /// assert_eq!(a.outputs(100_000), 2000 + 3); // the shortlist and one logit per cluster
    /// assert!(Softmax::adaptive(&[10, 5], 4.0, false, 256).is_err()); // not increasing
    /// assert!(Softmax::adaptive(&[10, 20, 30, 40, 50], 4.0, false, 256).is_err()); // 256/4^5 < 1
    /// ```
    pub fn adaptive(
        cutoffs: &[usize],
        div_value: f64,
        head_bias: bool,
        hidden: usize,
    ) -> Result<Self> {
        if cutoffs.is_empty() {
            return Err(Error::invalid("cutoffs", "need at least one cutoff"));
        }
        if !(div_value.is_finite() && div_value > 0.0) {
            return Err(Error::invalid(
                "div value",
                format!("{div_value} (must be finite and > 0)"),
            ));
        }
        let mut c = Vec::with_capacity(cutoffs.len());
        let mut p = Vec::with_capacity(cutoffs.len());
        for (i, &x) in cutoffs.iter().enumerate() {
            if x == 0 || x > (1 << 24) || (i > 0 && x <= cutoffs[i - 1]) {
                return Err(Error::invalid(
                    "cutoffs",
                    format!(
                        "{cutoffs:?}: they must be positive and strictly increasing (entry {i} is {x})"
                    ),
                ));
            }
            // PyTorch: `int(in_features // (div_value ** (i + 1)))`.
            let w = (hidden as f64 / div_value.powi(i as i32 + 1)).floor();
            if !(1.0..=(1u64 << 24) as f64).contains(&w) {
                return Err(Error::invalid(
                    "div value",
                    format!(
                        "cluster {i}'s projection would be H / {div_value}^{} = {w} wide (H = \
                         {hidden}): it must be at least 1, so use a smaller --div-value or fewer cutoffs",
                        i + 1
                    ),
                ));
            }
            c.push(x as u32);
            p.push(w as u32);
        }
        let sizes = |x: &[u32]| Sizes::try_from(x).map_err(|m| Error::invalid("cutoffs", m));
        Ok(Softmax::Adaptive {
            cutoffs: sizes(&c)?,
            projections: sizes(&p)?,
            head_bias,
        })
    }

    /// Width of the first (or only) softmax for a vocabulary of `v` words: `V` for the full
    /// softmax, `C` for the class head, the shortlist plus one logit per cluster for the
    /// adaptive head.
    pub fn outputs(&self, v: usize) -> usize {
        match *self {
            Softmax::Full => v,
            Softmax::Class { classes } => classes,
            Softmax::Adaptive { cutoffs, .. } => cutoffs.as_slice()[0] as usize + cutoffs.len(),
        }
    }

    /// Whether the first softmax has a bias (always, but for an adaptive head without one).
    pub fn first_bias(&self) -> bool {
        match *self {
            Softmax::Adaptive { head_bias, .. } => head_bias,
            _ => true,
        }
    }

    /// The name used on the command line (`full`, `class`, `adaptive`).
    pub fn name(&self) -> &'static str {
        match self {
            Softmax::Full => "full",
            Softmax::Class { .. } => "class",
            Softmax::Adaptive { .. } => "adaptive",
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
        if let Softmax::Adaptive {
            cutoffs,
            projections,
            ..
        } = self.softmax
        {
            let c = cutoffs.as_slice();
            let ok = !c.is_empty()
                && c.len() == projections.len()
                && c[0] > 0
                && c.windows(2).all(|w| w[0] < w[1])
                && (c[c.len() - 1] as usize) < self.vocab_size
                && projections
                    .as_slice()
                    .iter()
                    .all(|&p| (1..=1 << 24).contains(&p));
            if !ok {
                return Err(Error::invalid(
                    "cutoffs",
                    format!(
                        "{c:?} with projections {:?}: the cutoffs must be positive, strictly \
                         increasing and below the vocabulary size {} (each cluster holds at \
                         least one word), one projection of width >= 1 per cluster",
                        projections.as_slice(),
                        self.vocab_size
                    ),
                ));
            }
            if self.tied {
                return Err(Error::invalid(
                    "tied",
                    "an adaptive head has no output matrix of the embedding's shape to tie \
                     (use --softmax full or class with --tie)",
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
