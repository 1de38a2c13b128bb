//! Parameters (and gradients, which have the same layout) in one flat buffer.

use rand::{Rng, RngExt};
use rand_distr::{Distribution, StandardNormal};

use std::sync::Arc;

use super::config::{Config, Softmax};
use crate::cells::Role;
use crate::error::{Error, Result};
use crate::mem::{check_memory, try_zeros};

/// Weights of a model in one contiguous f32 buffer, so the optimizer and gradient clipping are
/// single loops. Gradients use the same type.
///
/// Storage order (row-major tensors), which groups the tensors that one weight-gradient
/// product writes:
/// - `embed.W [V,D]`;
/// - per layer `l` (input width `D_l` = `D` for `l = 0`, else `H`; `G` gates):
///   - rnn, lstm: `Wx [D_l,GH]`, `Wh [H,GH]`, `b [GH]`, together one `[D_l+H+1, GH]` matrix;
///   - gru: `Wx [D_l,3H]`, `bx [3H]`, then `Wh [H,3H]`, `bh [3H]`: two matrices
///     `[D_l+1, 3H]` and `[H+1, 3H]`;
/// - class head only: `class.W [H,C]` and `class.b [C]`, together `[H+1, C]`;
/// - `affine.W [H,V]` (untied only) and `affine.b [V]`, together `[H+1, V]`.
///
/// A class head's partition of the ids into classes is part of the parameters too
/// ([`Params::class_starts`]).
///
/// Checkpoint names are given by [`Params::layout`].
///
/// ```
/// use rnnlm::{Config, Params};
/// let cfg = Config::new(10, 4, 6).unwrap();
/// let mut p = Params::zeros(cfg);
/// p.layer_mut(0).b.fill(1.0); // rnn.0.b, after embed.W, Wx and Wh
/// let start = 10 * 4 + 4 * 6 + 6 * 6;
/// assert_eq!(p.as_slice()[start..start + 6], [1.0; 6]);
/// assert_eq!(p.as_slice().iter().sum::<f32>(), 6.0);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Params {
    cfg: Config,
    data: Vec<f32>,
    /// The first id of each class (class head only, else empty); see [`Params::class_starts`].
    starts: Arc<[u32]>,
}

/// Borrowed tensors of one recurrent layer. For a GRU `b` is `bx` and `bh` is the hidden bias;
/// for rnn and lstm `bh` is empty.
#[derive(Debug)]
pub struct LayerRefs<'a> {
    /// `[D_l, G*H]`
    pub wx: &'a [f32],
    /// `[H, G*H]`
    pub wh: &'a [f32],
    /// `[G*H]` (a GRU's `bx`)
    pub b: &'a [f32],
    /// `[3H]` for a GRU, else empty
    pub bh: &'a [f32],
}

/// Mutable tensors of one recurrent layer (see [`LayerRefs`]).
#[derive(Debug)]
pub struct LayerMuts<'a> {
    /// `[D_l, G*H]`
    pub wx: &'a mut [f32],
    /// `[H, G*H]`
    pub wh: &'a mut [f32],
    /// `[G*H]` (a GRU's `bx`)
    pub b: &'a mut [f32],
    /// `[3H]` for a GRU, else empty
    pub bh: &'a mut [f32],
}

/// How new weights are drawn (`rnnlm train --init`).
///
/// ```
/// assert_eq!(serde_json::to_string(&rnnlm::Init::Torch).unwrap(), r#""torch""#);
/// assert_eq!(rnnlm::Init::default(), rnnlm::Init::Book);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Init {
    /// The book's: `embed.W ~ N(0,1)/100`, `Wx ~ N(0,1)/sqrt(D_l)`, `Wh` and `affine.W ~
    /// N(0,1)/sqrt(H)`, biases zero (see [`Params::init_book`]).
    #[default]
    Book,
    /// PyTorch word_language_model's `RNNModel`: `embed.W` and `affine.W ~ U(-0.1, 0.1)`,
    /// `affine.b = 0` (its `init_weights`), and every weight and bias of the recurrent layers
    /// `~ U(-1/sqrt(H), 1/sqrt(H))` (`nn.LSTM`/`nn.GRU`'s `reset_parameters`; a summed
    /// `b_ih + b_hh` is the sum of two such draws). Tied, `embed.W` is the output matrix.
    Torch,
}

/// Where each part of the flat buffer starts (computed arithmetically: views are taken on
/// every step, which must not allocate).
#[derive(Clone, Copy)]
struct Offsets {
    cfg: Config,
}

impl Offsets {
    fn gh(&self) -> usize {
        self.cfg.cell.gates() * self.cfg.hidden_size
    }
    fn layer_len(&self, l: usize) -> usize {
        let (dl, h, gh) = (self.cfg.layer_input(l), self.cfg.hidden_size, self.gh());
        let tensors = self.cfg.cell.imp().tensors();
        tensors.iter().map(|t| t.row_count(dl, h) * gh).sum()
    }
    fn embed_len(&self) -> usize {
        self.cfg.vocab_size * self.cfg.wordvec_size
    }
    fn layer_start(&self, l: usize) -> usize {
        // Layers above 0 all have the same length.
        let first = self.embed_len();
        if l == 0 {
            first
        } else {
            first + self.layer_len(0) + (l - 1) * self.layer_len(1)
        }
    }
    /// Width of a factorised head's first softmax (0 for the full softmax).
    fn head_outs(&self) -> usize {
        match self.cfg.softmax {
            Softmax::Full => 0,
            s => s.outputs(self.cfg.vocab_size),
        }
    }
    fn class_w_len(&self) -> usize {
        self.cfg.hidden_size * self.head_outs()
    }
    fn class_b_len(&self) -> usize {
        if self.cfg.softmax.first_bias() {
            self.head_outs()
        } else {
            0
        }
    }
    fn class_len(&self) -> usize {
        self.class_w_len() + self.class_b_len()
    }
    /// An adaptive head's clusters: `(first id, end id, projection width)`.
    fn clusters(&self) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
        let (c, p): (&[u32], &[u32]) = match &self.cfg.softmax {
            Softmax::Adaptive {
                cutoffs,
                projections,
                ..
            } => (cutoffs.as_slice(), projections.as_slice()),
            _ => (&[], &[]),
        };
        let v = self.cfg.vocab_size;
        (0..c.len()).map(move |i| {
            let end = c.get(i + 1).map_or(v, |&e| e as usize);
            (c[i] as usize, end, p[i] as usize)
        })
    }
    /// Length of cluster `(s, e, p)`'s tensors: `proj [H,p]` and `W [e-s, p]`.
    fn tail_len(&self, (s, e, p): (usize, usize, usize)) -> usize {
        (self.cfg.hidden_size + e - s) * p
    }
    fn class_start(&self) -> usize {
        self.layer_start(self.cfg.layers)
    }
    fn output_start(&self) -> usize {
        self.class_start() + self.class_len()
    }
    fn affine_w_len(&self) -> usize {
        if self.cfg.softmax.is_adaptive() {
            // The tails take the output matrix's place.
            self.clusters().map(|c| self.tail_len(c)).sum()
        } else if self.cfg.tied {
            0
        } else {
            self.cfg.hidden_size * self.cfg.vocab_size
        }
    }
    /// `affine.b` / `words.b` (`V`), none for an adaptive head.
    fn out_b_len(&self) -> usize {
        if self.cfg.softmax.is_adaptive() {
            0
        } else {
            self.cfg.vocab_size
        }
    }
    fn total(&self) -> usize {
        self.output_start() + self.affine_w_len() + self.out_b_len()
    }
    /// The layer's tensors by role, in the cell's storage order.
    fn split_layer<'a>(&self, l: usize, mut s: &'a [f32]) -> LayerRefs<'a> {
        let (dl, h, gh) = (self.cfg.layer_input(l), self.cfg.hidden_size, self.gh());
        let mut out = LayerRefs {
            wx: &[],
            wh: &[],
            b: &[],
            bh: &[],
        };
        for t in self.cfg.cell.imp().tensors() {
            let (x, rest) = s.split_at(t.row_count(dl, h) * gh);
            s = rest;
            match t.role {
                Role::Wx => out.wx = x,
                Role::Wh => out.wh = x,
                Role::B => out.b = x,
                Role::Bh => out.bh = x,
            }
        }
        out
    }
    fn split_layer_mut<'a>(&self, l: usize, mut s: &'a mut [f32]) -> LayerMuts<'a> {
        let (dl, h, gh) = (self.cfg.layer_input(l), self.cfg.hidden_size, self.gh());
        let mut out = LayerMuts {
            wx: &mut [],
            wh: &mut [],
            b: &mut [],
            bh: &mut [],
        };
        for t in self.cfg.cell.imp().tensors() {
            let (x, rest) = std::mem::take(&mut s).split_at_mut(t.row_count(dl, h) * gh);
            s = rest;
            match t.role {
                Role::Wx => out.wx = x,
                Role::Wh => out.wh = x,
                Role::B => out.b = x,
                Role::Bh => out.bh = x,
            }
        }
        out
    }
}

impl Params {
    fn off(&self) -> Offsets {
        Offsets { cfg: self.cfg }
    }

    /// Checkpoint names and shapes of the tensors of `cfg`, in storage order.
    ///
    /// ```
    /// use rnnlm::{model::config::Cell, Config, Params};
    /// let cfg = Config::new(10, 4, 6).unwrap();
    /// let names: Vec<String> = Params::layout(&cfg).into_iter().map(|(n, _)| n).collect();
    /// assert_eq!(names, ["embed.W", "rnn.0.Wx", "rnn.0.Wh", "rnn.0.b", "affine.W", "affine.b"]);
    /// let gru = cfg.with_cell(Cell::Gru).with_layers(2);
    /// let layout = Params::layout(&gru);
    /// assert_eq!(layout[5], ("gru.1.Wx".to_string(), vec![6, 18])); // layer 1 reads H = 6
    /// assert_eq!(layout[6], ("gru.1.bx".to_string(), vec![18]));
    /// let tied = Config::new(10, 6, 6).unwrap().with_tied(true);
    /// assert_eq!(Params::layout(&tied).last().unwrap().0, "affine.b"); // no affine.W
    /// ```
    pub fn layout(cfg: &Config) -> Vec<(String, Vec<usize>)> {
        let (v, d, h) = (cfg.vocab_size, cfg.wordvec_size, cfg.hidden_size);
        let gh = cfg.cell.gates() * h;
        let c = cfg.cell.name();
        let mut out = vec![("embed.W".to_string(), vec![v, d])];
        for l in 0..cfg.layers {
            let dl = cfg.layer_input(l);
            for t in cfg.cell.imp().tensors() {
                out.push((format!("{c}.{l}.{}", t.name), t.shape(dl, gh, h)));
            }
        }
        if let Softmax::Class { classes } = cfg.softmax {
            out.push(("class.W".to_string(), vec![h, classes]));
            out.push(("class.b".to_string(), vec![classes]));
        }
        if let Softmax::Adaptive { head_bias, .. } = cfg.softmax {
            // The head, then each cluster's projection and word vectors (rows, as a class
            // head's `words.W`), PyTorch's `head`, `tail.i.0`, `tail.i.1`.
            let outs = cfg.softmax.outputs(v);
            out.push(("head.W".to_string(), vec![h, outs]));
            if head_bias {
                out.push(("head.b".to_string(), vec![outs]));
            }
            for (i, (s, e, p)) in (Offsets { cfg: *cfg }).clusters().enumerate() {
                out.push((format!("tail.{i}.proj"), vec![h, p]));
                out.push((format!("tail.{i}.W"), vec![e - s, p]));
            }
            return out;
        }
        // A class head stores its word vectors as rows, `[V,H]` (like `embed.W`, which takes
        // their place when tied), so each class's words are one block of rows.
        let (w, b) = if cfg.softmax.is_full() {
            (("affine.W", vec![h, v]), "affine.b")
        } else {
            (("words.W", vec![v, h]), "words.b")
        };
        if !cfg.tied {
            out.push((w.0.to_string(), w.1));
        }
        out.push((b.to_string(), vec![v]));
        out
    }

    /// The default partition of `cfg`'s ids into classes: `C` contiguous ranges of nearly
    /// equal size (class `k` starts at `k * V / C`). Training replaces it with Mikolov's
    /// frequency-based classes (see [`crate::heads::class_starts_from_counts`]).
    fn default_starts(cfg: &Config) -> Arc<[u32]> {
        match cfg.softmax {
            Softmax::Full | Softmax::Adaptive { .. } => Arc::from(Vec::new()),
            Softmax::Class { classes } => (0..classes)
                .map(|k| (k as u64 * cfg.vocab_size as u64 / classes as u64) as u32)
                .collect(),
        }
    }

    /// Floating-point operations of the products in a forward pass, per token: two for every
    /// element of every weight matrix a token multiplies through (`Wx`, `Wh`, the output
    /// matrix, `embed.W` again when tied), since each is used once per token. The embedding
    /// lookup and the element-wise work are not counted. Training (forward, then `dX` and `dW`)
    /// is three times this.
    ///
    /// ```
    /// use rnnlm::{Config, Params};
    /// let cfg = Config::new(10, 4, 6).unwrap(); // Wx [4,6], Wh [6,6], affine.W [6,10]
    /// assert_eq!(Params::forward_flops_per_token(&cfg), 2 * (24 + 36 + 60));
    /// let tied = Config::new(10, 6, 6).unwrap().with_tied(true); // embed.W [10,6] as output
    /// assert_eq!(Params::forward_flops_per_token(&tied), 2 * (36 + 36 + 60));
    /// ```
    pub fn forward_flops_per_token(cfg: &Config) -> u64 {
        let class_head = matches!(cfg.softmax, Softmax::Class { .. });
        let products: u64 = Self::layout(cfg)
            .iter()
            .filter(|(name, shape)| {
                shape.len() == 2
                    && (name != "embed.W" || (cfg.tied && !class_head))
                    && (name != "affine.W" || !class_head)
            })
            .map(|(_, shape)| (shape[0] * shape[1]) as u64)
            .sum();
        // A class head multiplies a token through the words of its class only: count a class
        // of average size, V / C words.
        let words = match cfg.softmax {
            Softmax::Full => 0,
            Softmax::Class { classes } => {
                (cfg.vocab_size.div_ceil(classes) * cfg.hidden_size) as u64
            }
            // An adaptive head's tails are counted above as if every token went through every
            // cluster; count instead the head and one cluster of average size.
            Softmax::Adaptive { .. } => {
                let o = Offsets { cfg: *cfg };
                let k = o.clusters().count() as u64;
                let tails: u64 = o.clusters().map(|c| o.tail_len(c) as u64).sum();
                return 2 * (products - tails + tails / k);
            }
        };
        2 * (products + words)
    }

    /// Number of f32 values of `cfg`'s parameters.
    ///
    /// ```
    /// let cfg = rnnlm::Config::new(10, 4, 6).unwrap();
    /// assert_eq!(rnnlm::Params::len_of(&cfg), 10 * 4 + 4 * 6 + 6 * 6 + 6 + 6 * 10 + 10);
    /// ```
    pub fn len_of(cfg: &Config) -> usize {
        Offsets { cfg: *cfg }.total()
    }

    /// All-zero parameters (also the gradient buffer). Aborts, as `vec!` does, if the memory
    /// cannot be allocated: for sizes from user input use [`Params::try_zeros`].
    ///
    /// ```
    /// use rnnlm::{Config, Params};
    /// let cfg = Config::new(10, 4, 6).unwrap();
    /// let p = Params::zeros(cfg);
    /// let total: usize = Params::layout(&cfg).iter().map(|(_, s)| s.iter().product::<usize>()).sum();
    /// assert_eq!(p.as_slice().len(), total);
    /// assert!(p.as_slice().iter().all(|&x| x == 0.0));
    /// ```
    pub fn zeros(cfg: Config) -> Self {
        Self {
            cfg,
            data: vec![0.0; Self::len_of(&cfg)],
            starts: Self::default_starts(&cfg),
        }
    }

    /// Bytes of `cfg`'s parameters (`4 *` [`Params::len_of`]); a gradient buffer is as large.
    ///
    /// # Errors
    /// If `cfg` is invalid or the size overflows `usize`.
    ///
    /// ```
    /// use rnnlm::{Config, Params};
    /// let cfg = Config::new(10, 4, 6).unwrap();
    /// assert_eq!(Params::bytes_for(&cfg).unwrap(), 4 * Params::len_of(&cfg));
    /// let huge = Config::new(10, 4, 1 << 24).unwrap(); // Wh alone is 2^48 floats
    /// assert_eq!(Params::bytes_for(&huge).unwrap() >> 50, 1); // a PiB: computed, not allocated
    /// ```
    pub fn bytes_for(cfg: &Config) -> Result<usize> {
        cfg.validate()?;
        // Validated sizes (each at most 2^24, at most 64 layers) keep len_of below 2^58.
        Self::len_of(cfg).checked_mul(4).ok_or_else(|| {
            Error::invalid(
                "model size",
                format!("{cfg:?}: the parameters' size overflows"),
            )
        })
    }

    /// What a buffer of `cfg`'s parameters is, for memory errors.
    pub(crate) fn describe(cfg: &Config) -> String {
        format!(
            "V={}, D={}, H={}, {} {} layer{}{}",
            cfg.vocab_size,
            cfg.wordvec_size,
            cfg.hidden_size,
            cfg.layers,
            cfg.cell,
            if cfg.layers == 1 { "" } else { "s" },
            if cfg.tied { ", tied" } else { "" }
        )
    }

    /// All-zero parameters, as [`Params::zeros`], after checking that they fit in the memory
    /// available ([`crate::mem::check_memory`]) and allocating so that a refusal is an error
    /// rather than an abort.
    ///
    /// # Errors
    /// [`Error::Invalid`] if `cfg` is invalid, [`Error::Memory`] if the parameters do not fit.
    ///
    /// ```
    /// use rnnlm::{Config, Params};
    /// let cfg = Config::new(10, 4, 6).unwrap();
    /// assert_eq!(Params::try_zeros(cfg).unwrap(), Params::zeros(cfg));
    /// let huge = Config::new(10, 4, 1 << 24).unwrap(); // a PiB of weights
    /// assert!(Params::try_zeros(huge).unwrap_err().to_string().contains("not enough memory"));
    /// ```
    pub fn try_zeros(cfg: Config) -> Result<Self> {
        let bytes = Self::bytes_for(&cfg)?;
        let what = format!("the parameters ({})", Self::describe(&cfg));
        check_memory(&what, bytes)?;
        Ok(Self {
            cfg,
            data: try_zeros(Self::len_of(&cfg), &what)?,
            starts: Self::default_starts(&cfg),
        })
    }

    /// [`Params::init_book`] through [`Params::try_zeros`]: the memory is checked before
    /// anything is drawn.
    ///
    /// # Errors
    /// As [`Params::try_zeros`].
    ///
    /// ```
    /// use rand::SeedableRng;
    /// use rnnlm::{Config, Params};
    /// let cfg = Config::new(10, 4, 6).unwrap();
    /// let rng = || rand_chacha::ChaCha8Rng::seed_from_u64(3);
    /// assert_eq!(Params::try_init_book(cfg, &mut rng()).unwrap(), Params::init_book(cfg, &mut rng()));
    /// ```
    pub fn try_init_book<R: Rng + ?Sized>(cfg: Config, rng: &mut R) -> Result<Self> {
        let mut p = Self::try_zeros(cfg)?;
        p.fill_book(rng);
        Ok(p)
    }

    /// The book's initialisation, drawn in the book's order from `rng`: `embed.W =
    /// randn(V,D)/100`, then for each layer `Wx = randn(D_l,GH)/sqrt(D_l)` and
    /// `Wh = randn(H,GH)/sqrt(H)`, then (untied) `affine.W = randn(H,V)/sqrt(H)`; biases zero.
    /// Normals are drawn in f64 and rounded to f32 after scaling, as numpy's
    /// `(rn(V, D) / 100).astype('f')` does. Aborts if the memory cannot be allocated, as
    /// [`Params::zeros`]; [`Params::try_init_book`] returns an error instead.
    ///
    /// ```
    /// use rand::SeedableRng;
    /// let cfg = rnnlm::Config::new(100, 8, 16).unwrap();
    /// let p = rnnlm::Params::init_book(cfg, &mut rand_chacha::ChaCha8Rng::seed_from_u64(7));
    /// assert!(p.affine_b().iter().all(|&b| b == 0.0));
    /// assert_eq!(p.as_slice().len(), 100 * 8 + 8 * 16 + 16 * 16 + 16 + 16 * 100 + 100);
    /// ```
    pub fn init_book<R: Rng + ?Sized>(cfg: Config, rng: &mut R) -> Self {
        let mut p = Self::zeros(cfg);
        p.fill_book(rng);
        p
    }

    /// New parameters initialised as `init` says, drawn from `rng`; the memory is checked
    /// first.
    ///
    /// # Errors
    /// As [`Params::try_zeros`].
    ///
    /// ```
    /// use rand::SeedableRng;
    /// use rnnlm::{Config, Init, Params};
    /// let cfg = Config::new(10, 4, 16).unwrap().with_cell(rnnlm::model::config::Cell::Gru);
    /// let rng = || rand_chacha::ChaCha8Rng::seed_from_u64(3);
    /// let book = Params::try_init(cfg, Init::Book, &mut rng()).unwrap();
    /// assert_eq!(book, Params::init_book(cfg, &mut rng()));
    /// let torch = Params::try_init(cfg, Init::Torch, &mut rng()).unwrap();
    /// assert!(torch.embed_w().iter().all(|x| x.abs() <= 0.1));
    /// assert!(torch.layer(0).wh.iter().all(|x| x.abs() <= 0.25)); // 1/sqrt(16)
    /// assert!(torch.affine_b().iter().all(|&b| b == 0.0));
    /// ```
    pub fn try_init<R: Rng + ?Sized>(cfg: Config, init: Init, rng: &mut R) -> Result<Self> {
        let mut p = Self::try_zeros(cfg)?;
        match init {
            Init::Book => p.fill_book(rng),
            Init::Torch => p.fill_torch(rng),
        }
        Ok(p)
    }

    /// PyTorch word_language_model's initialisation (see [`Init::Torch`]), in storage order.
    fn fill_torch<R: Rng + ?Sized>(&mut self, rng: &mut R) {
        let cfg = self.cfg;
        let mut uniform = |dst: &mut [f32], k: f64, draws: usize| {
            for x in dst {
                // A bias PyTorch keeps as two (`b_ih + b_hh`) and we as their sum is the sum
                // of two draws, so its distribution is PyTorch's.
                let sum: f64 = (0..draws)
                    .map(|_| (2.0 * rng.random::<f64>() - 1.0) * k)
                    .sum();
                *x = sum as f32;
            }
        };
        uniform(self.embed_w_mut(), 0.1, 1);
        let k = 1.0 / (cfg.hidden_size as f64).sqrt();
        let summed = cfg.cell.imp().torch().is_some_and(|t| t.summed_bias);
        for l in 0..cfg.layers {
            let m = self.layer_mut(l);
            uniform(m.wx, k, 1);
            uniform(m.wh, k, 1);
            uniform(m.b, k, if summed { 2 } else { 1 });
            uniform(m.bh, k, 1);
        }
        if let Some(w) = self.affine_w_mut() {
            uniform(w, 0.1, 1);
        }
        if cfg.softmax.is_adaptive() {
            // nn.AdaptiveLogSoftmaxWithLoss's nn.Linear layers: U(-1/sqrt(fan_in), ..).
            let o = self.off();
            let (s, e) = (o.class_start(), o.output_start());
            uniform(&mut self.data[s..e], k, 1);
            for i in 0..o.clusters().count() {
                let (proj, w, p) = self.tail_mut(i);
                uniform(proj, k, 1);
                uniform(w, 1.0 / (p as f64).sqrt(), 1);
            }
        } else if let Some(w) = self.class_w_mut() {
            uniform(w, 0.1, 1);
        }
    }

    /// Draws the book's initialisation into zeroed parameters (see [`Params::init_book`]).
    fn fill_book<R: Rng + ?Sized>(&mut self, rng: &mut R) {
        let cfg = self.cfg;
        let p = self;
        let h = cfg.hidden_size as f64;
        let mut fill = |dst: &mut [f32], scale: f64| {
            for x in dst {
                let z: f64 = StandardNormal.sample(rng);
                *x = (z / scale) as f32;
            }
        };
        fill(p.embed_w_mut(), 100.0);
        for l in 0..cfg.layers {
            let dl = cfg.layer_input(l) as f64;
            let m = p.layer_mut(l);
            fill(m.wx, dl.sqrt());
            fill(m.wh, h.sqrt());
        }
        if let Some(w) = p.affine_w_mut() {
            fill(w, h.sqrt());
        }
        // After affine.W, so a class head leaves every other draw where the full softmax has it.
        if let Some(w) = p.class_w_mut() {
            fill(w, h.sqrt());
        }
        // An adaptive head's tails: the book's `randn / sqrt(fan_in)` for each product.
        for i in 0..p.off().clusters().count() {
            let (proj, w, pw) = p.tail_mut(i);
            fill(proj, h.sqrt());
            fill(w, (pw as f64).sqrt());
        }
    }

    /// Builds parameters from a flat buffer in storage order.
    ///
    /// **Panics** if `data.len()` is not [`Params::len_of`]`(&cfg)` (callers validate first).
    ///
    /// ```
    /// use rand::SeedableRng;
    /// use rnnlm::{Config, Params};
    /// let cfg = Config::new(10, 4, 6).unwrap();
    /// let p = Params::init_book(cfg, &mut rand_chacha::ChaCha8Rng::seed_from_u64(2));
    /// assert_eq!(Params::from_vec(cfg, p.as_slice().to_vec()), p);
    /// ```
    pub fn from_vec(cfg: Config, data: Vec<f32>) -> Self {
        assert_eq!(
            data.len(),
            Self::len_of(&cfg),
            "parameter buffer length does not match the config"
        );
        let starts = Self::default_starts(&cfg);
        Self { cfg, data, starts }
    }

    /// The configuration these parameters belong to.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The whole flat buffer.
    pub fn as_slice(&self) -> &[f32] {
        &self.data
    }

    /// The whole flat buffer, mutable.
    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        &mut self.data
    }

    /// Sets every value to zero.
    pub fn zero(&mut self) {
        self.data.fill(0.0);
    }

    /// Every tensor with its checkpoint name and shape, in storage order.
    ///
    /// ```
    /// use rnnlm::{Config, Params};
    /// let p = Params::zeros(Config::new(10, 4, 6).unwrap());
    /// for (name, shape, t) in p.tensors() {
    ///     assert_eq!(t.len(), shape.iter().product::<usize>(), "{name}");
    /// }
    /// ```
    pub fn tensors(&self) -> Vec<(String, Vec<usize>, &[f32])> {
        let mut rest = self.data.as_slice();
        Self::layout(&self.cfg)
            .into_iter()
            .map(|(name, shape)| {
                let (t, r) = rest.split_at(shape.iter().product());
                rest = r;
                (name, shape, t)
            })
            .collect()
    }

    /// The tensor named `name` (a checkpoint name of [`Params::layout`]), mutable.
    ///
    /// ```
    /// let mut p = rnnlm::Params::zeros(rnnlm::Config::new(10, 4, 6).unwrap());
    /// p.tensor_mut("rnn.0.Wh").unwrap()[0] = 3.0;
    /// assert_eq!(p.layer(0).wh[0], 3.0);
    /// assert!(p.tensor_mut("lstm.0.Wh").is_none());
    /// ```
    pub fn tensor_mut(&mut self, name: &str) -> Option<&mut [f32]> {
        let mut start = 0;
        for (n, shape) in Self::layout(&self.cfg) {
            let len: usize = shape.iter().product();
            if n == name {
                return Some(&mut self.data[start..start + len]);
            }
            start += len;
        }
        None
    }

    /// `embed.W [V,D]`.
    pub fn embed_w(&self) -> &[f32] {
        &self.data[..self.off().embed_len()]
    }

    /// `embed.W [V,D]`, mutable.
    pub fn embed_w_mut(&mut self) -> &mut [f32] {
        let n = self.off().embed_len();
        &mut self.data[..n]
    }

    /// The tensors of layer `l`. **Panics** if `l >= layers`.
    pub fn layer(&self, l: usize) -> LayerRefs<'_> {
        assert!(l < self.cfg.layers, "layer {l} of {}", self.cfg.layers);
        let o = self.off();
        let s = o.layer_start(l);
        o.split_layer(l, &self.data[s..s + o.layer_len(l)])
    }

    /// The tensors of layer `l`, mutable. **Panics** if `l >= layers`.
    pub fn layer_mut(&mut self, l: usize) -> LayerMuts<'_> {
        assert!(l < self.cfg.layers, "layer {l} of {}", self.cfg.layers);
        let o = self.off();
        let s = o.layer_start(l);
        o.split_layer_mut(l, &mut self.data[s..s + o.layer_len(l)])
    }

    /// All of layer `l` as one buffer: for rnn and lstm the `[D_l+H+1, GH]` matrix
    /// `[Wx; Wh; b]`, for a GRU `[Wx; bx]` (`[D_l+1, 3H]`) followed by `[Wh; bh]`
    /// (`[H+1, 3H]`). Lets the backward pass write a layer's weight gradients with one product
    /// (two for a GRU).
    ///
    /// ```
    /// let (d, h) = (4, 6);
    /// let mut p = rnnlm::Params::zeros(rnnlm::Config::new(10, d, h).unwrap());
    /// let rows = p.layer_rows_mut(0); // [D + H + 1, H]: Wx, then Wh, then b
    /// assert_eq!(rows.len(), (d + h + 1) * h);
    /// rows[d * h] = 1.0; // Wh[0][0]
    /// rows[(d + h) * h..].fill(2.0); // the last row
    /// assert_eq!((p.layer(0).wh[0], p.layer(0).b), (1.0, &[2.0; 6][..]));
    /// ```
    pub fn layer_rows_mut(&mut self, l: usize) -> &mut [f32] {
        assert!(l < self.cfg.layers, "layer {l} of {}", self.cfg.layers);
        let o = self.off();
        let s = o.layer_start(l);
        &mut self.data[s..s + o.layer_len(l)]
    }

    /// Where the parts of the flat buffer lie, for updates that touch only some rows:
    /// `embed.W`, then everything up to the output matrix (the layers and a class head's
    /// `class.*`), the output matrix (`affine.W` / `words.W`, empty when tied) and its bias.
    pub(crate) fn parts(cfg: &Config) -> Parts {
        let o = Offsets { cfg: *cfg };
        let (e, os, total) = (o.embed_len(), o.output_start(), o.total());
        let ow = os + o.affine_w_len();
        Parts {
            embed: 0..e,
            middle: e..os,
            out_w: os..ow,
            out_b: ow..total,
        }
    }

    /// Copies `other`'s weights and class partition into `self` (no allocation: the
    /// partition is shared).
    ///
    /// **Panics** if the configurations differ.
    pub fn copy_from(&mut self, other: &Params) {
        assert_eq!(self.cfg, other.cfg, "copy_from: the configurations differ");
        self.data.copy_from_slice(&other.data);
        self.starts = other.starts.clone();
    }

    /// The first id of each class of a class head, in order (`starts[0] = 0`; class `k` holds
    /// the ids `starts[k]..starts[k + 1]`, the last one up to `V`); empty for the full softmax.
    ///
    /// ```
    /// use rnnlm::{model::config::Softmax, Config, Params};
    /// let cfg = Config::new(10, 4, 4).unwrap().with_softmax(Softmax::Class { classes: 3 });
    /// let mut p = Params::zeros(cfg);
    /// assert_eq!(p.class_starts(), [0, 3, 6]); // the default: nearly equal ranges
    /// p.set_class_starts(&[0, 1, 4]).unwrap();
    /// assert_eq!(p.class_range(2), 4..10);
    /// assert!(p.set_class_starts(&[0, 4, 4]).is_err()); // an empty class
    /// ```
    pub fn class_starts(&self) -> &[u32] {
        &self.starts
    }

    /// The ids of class `k` (see [`Params::class_starts`]).
    ///
    /// **Panics** if `k` is not a class.
    pub fn class_range(&self, k: usize) -> std::ops::Range<usize> {
        let end = self
            .starts
            .get(k + 1)
            .map_or(self.cfg.vocab_size, |&e| e as usize);
        self.starts[k] as usize..end
    }

    /// Sets the partition of the ids into classes (see [`Params::class_starts`]).
    ///
    /// # Errors
    /// If the model has no class head, or `starts` is not `C` strictly increasing ids from 0,
    /// all below `V` (naming the first bad entry).
    pub fn set_class_starts(&mut self, starts: &[u32]) -> Result<()> {
        check_class_starts(&self.cfg, starts)?;
        self.starts = Arc::from(starts);
        Ok(())
    }

    /// The first softmax of a factorised head: `class.W [H,C]` of a class head, `head.W
    /// [H, c_0 + clusters]` of an adaptive head; `None` for the full softmax.
    pub fn class_w(&self) -> Option<&[f32]> {
        let o = self.off();
        let (s, len) = (o.class_start(), o.class_w_len());
        (len > 0).then(|| &self.data[s..s + len])
    }

    /// [`Params::class_w`] mutable.
    pub fn class_w_mut(&mut self) -> Option<&mut [f32]> {
        let o = self.off();
        let (s, len) = (o.class_start(), o.class_w_len());
        (len > 0).then(|| &mut self.data[s..s + len])
    }

    /// `class.b [C]` of a class head, `head.b` of an adaptive head with a head bias, else
    /// empty.
    pub fn class_b(&self) -> &[f32] {
        let o = self.off();
        &self.data[o.output_start() - o.class_b_len()..o.output_start()]
    }

    /// Cluster `i` of an adaptive head: its projection `[H, p]`, its word vectors `[n, p]`
    /// (row `j` is id `c_i + j`), and `p`.
    ///
    /// **Panics** if `i` is not a cluster.
    pub fn tail(&self, i: usize) -> (&[f32], &[f32], usize) {
        let r = self.tail_range(i);
        let (s, e, p) = self
            .off()
            .clusters()
            .nth(i)
            .expect("an adaptive head's cluster");
        let (proj, w) = self.data[r].split_at(self.cfg.hidden_size * p);
        debug_assert_eq!(w.len(), (e - s) * p);
        (proj, w, p)
    }

    /// [`Params::tail`], mutable.
    pub fn tail_mut(&mut self, i: usize) -> (&mut [f32], &mut [f32], usize) {
        let r = self.tail_range(i);
        let p = self
            .off()
            .clusters()
            .nth(i)
            .expect("an adaptive head's cluster")
            .2;
        let (proj, w) = self.data[r].split_at_mut(self.cfg.hidden_size * p);
        (proj, w, p)
    }

    /// Where cluster `i`'s tensors lie in the flat buffer.
    pub(crate) fn tail_range(&self, i: usize) -> std::ops::Range<usize> {
        let o = self.off();
        let mut s = o.output_start();
        for (k, c) in o.clusters().enumerate() {
            if k == i {
                return s..s + o.tail_len(c);
            }
            s += o.tail_len(c);
        }
        panic!(
            "cluster {i} of an adaptive head with {} clusters",
            o.clusters().count()
        )
    }

    /// `class.W` and `class.b` as one `[H+1, C]` matrix (`head.W [H, outs]` and the head bias
    /// if any; empty for the full softmax).
    pub fn class_rows_mut(&mut self) -> &mut [f32] {
        let o = self.off();
        &mut self.data[o.class_start()..o.output_start()]
    }

    /// `affine.W [H,V]`, or `None` when tied (the output weights are then `embed.W`
    /// transposed).
    pub fn affine_w(&self) -> Option<&[f32]> {
        let o = self.off();
        let s = o.output_start();
        (!self.cfg.tied && !self.cfg.softmax.is_adaptive())
            .then(|| &self.data[s..s + o.affine_w_len()])
    }

    /// `affine.W [H,V]` mutable, or `None` when tied.
    pub fn affine_w_mut(&mut self) -> Option<&mut [f32]> {
        let o = self.off();
        let s = o.output_start();
        (!self.cfg.tied && !self.cfg.softmax.is_adaptive())
            .then(|| &mut self.data[s..s + o.affine_w_len()])
    }

    /// `affine.b [V]` (`words.b` of a class head; empty for an adaptive head).
    pub fn affine_b(&self) -> &[f32] {
        let s = self.data.len() - self.off().out_b_len();
        &self.data[s..]
    }

    /// `affine.b [V]`, mutable.
    pub fn affine_b_mut(&mut self) -> &mut [f32] {
        let s = self.data.len() - self.off().out_b_len();
        &mut self.data[s..]
    }

    /// `affine.W [H,V]` and `affine.b [V]` as one `[H+1, V]` matrix (adjacent in the flat
    /// buffer; the bias is the last row), or `affine.b` alone (`[1, V]`) when tied. Lets the
    /// backward pass compute both gradients with one product, `[hs | 1]^T dY`.
    ///
    /// ```
    /// let (h, v) = (6, 10);
    /// let mut p = rnnlm::Params::zeros(rnnlm::Config::new(v, 4, h).unwrap());
    /// let rows = p.affine_rows_mut(); // [H + 1, V]
    /// assert_eq!(rows.len(), (h + 1) * v);
    /// rows[h * v..].fill(1.0); // the last row
    /// assert_eq!(p.affine_b(), [1.0; 10]);
    /// ```
    pub fn affine_rows_mut(&mut self) -> &mut [f32] {
        let s = self.off().output_start();
        &mut self.data[s..]
    }

    /// `embed.W` (mutable) and the rest of the buffer, disjoint (the tied backward writes the
    /// output layer's gradient into `embed.W` and its bias into `affine.b` at once).
    pub(crate) fn embed_and_affine_b_mut(&mut self) -> (&mut [f32], &mut [f32]) {
        let b = self.off().out_b_len();
        let (e, rest) = self
            .data
            .split_at_mut(self.cfg.vocab_size * self.cfg.wordvec_size);
        let n = rest.len() - b;
        (e, &mut rest[n..])
    }
}

/// The parts of a flat parameter (or gradient) buffer; see [`Params::parts`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Parts {
    pub embed: std::ops::Range<usize>,
    pub middle: std::ops::Range<usize>,
    pub out_w: std::ops::Range<usize>,
    pub out_b: std::ops::Range<usize>,
}

/// Checks a partition of `cfg`'s ids into classes (see [`Params::class_starts`]).
pub(crate) fn check_class_starts(cfg: &Config, starts: &[u32]) -> Result<()> {
    let Softmax::Class { classes } = cfg.softmax else {
        return Err(Error::invalid(
            "class starts",
            "the model has no class head",
        ));
    };
    if starts.len() != classes {
        return Err(Error::invalid(
            "class starts",
            format!("{} entries for {classes} classes", starts.len()),
        ));
    }
    if starts.first() != Some(&0) {
        return Err(Error::invalid("class starts", "class 0 must start at id 0"));
    }
    for (k, w) in starts.windows(2).enumerate() {
        if w[1] <= w[0] {
            return Err(Error::invalid(
                "class starts",
                format!(
                    "class {} starts at id {}, not after class {k}'s start {}: every class needs at least one word",
                    k + 1, w[1], w[0]
                ),
            ));
        }
    }
    let last = starts[classes - 1] as usize;
    if last >= cfg.vocab_size {
        return Err(Error::invalid(
            "class starts",
            format!(
                "class {} starts at id {last}, outside the vocabulary (size {})",
                classes - 1,
                cfg.vocab_size
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::Cell;
    use rand::SeedableRng;

    #[test]
    fn layout_and_init_scales() {
        let cfg = Config::new(400, 50, 60).unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let p = Params::init_book(cfg, &mut rng);
        let l = p.layer(0);
        assert_eq!(p.embed_w().len(), 400 * 50);
        assert_eq!(l.wx.len(), 50 * 60);
        assert_eq!(l.wh.len(), 60 * 60);
        assert_eq!(p.affine_w().unwrap().len(), 60 * 400);
        assert!(l.b.iter().chain(p.affine_b()).all(|&x| x == 0.0));
        let std = |x: &[f32]| {
            let n = x.len() as f64;
            let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
            (x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n).sqrt()
        };
        // Sample standard deviations within 5% of the book's scales.
        for (x, want) in [
            (p.embed_w(), 0.01),
            (l.wx, 1.0 / 50f64.sqrt()),
            (l.wh, 1.0 / 60f64.sqrt()),
            (p.affine_w().unwrap(), 1.0 / 60f64.sqrt()),
        ] {
            let s = std(x);
            assert!((s / want - 1.0).abs() < 0.05, "std {s} vs {want}");
        }
        let mut rng2 = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        assert_eq!(
            p,
            Params::init_book(cfg, &mut rng2),
            "same seed, same weights"
        );
    }

    #[test]
    fn views_agree_with_the_layout_for_every_cell() {
        for &cell in Cell::ALL {
            for (layers, tied) in [(1, false), (2, true), (3, false)] {
                let cfg = Config::new(11, 5, 5)
                    .unwrap()
                    .with_cell(cell)
                    .with_layers(layers)
                    .with_tied(tied);
                let mut p = Params::zeros(cfg);
                // Number every value by position, then read it back through the named views.
                for (i, x) in p.as_mut_slice().iter_mut().enumerate() {
                    *x = i as f32;
                }
                let tensors: Vec<(String, Vec<usize>, Vec<f32>)> = p
                    .tensors()
                    .into_iter()
                    .map(|(n, s, t)| (n, s, t.to_vec()))
                    .collect();
                let total: usize = tensors.iter().map(|t| t.2.len()).sum();
                assert_eq!(total, p.as_slice().len());
                let find = |name: &str| &tensors.iter().find(|t| t.0 == name).unwrap().2;
                assert_eq!(p.embed_w(), find("embed.W").as_slice());
                for l in 0..layers {
                    let c = cell.name();
                    let v = p.layer(l);
                    assert_eq!(v.wx, find(&format!("{c}.{l}.Wx")).as_slice());
                    assert_eq!(v.wh, find(&format!("{c}.{l}.Wh")).as_slice());
                    if cell == Cell::Gru {
                        assert_eq!(v.b, find(&format!("gru.{l}.bx")).as_slice());
                        assert_eq!(v.bh, find(&format!("gru.{l}.bh")).as_slice());
                    } else {
                        assert_eq!(v.b, find(&format!("{c}.{l}.b")).as_slice());
                        assert!(v.bh.is_empty());
                    }
                }
                assert_eq!(p.affine_b(), find("affine.b").as_slice());
                assert_eq!(p.affine_w().is_none(), tied);
            }
        }
    }

    /// `Init::Torch` draws PyTorch's distributions: U(-k, k) has variance k²/3, a bias PyTorch
    /// keeps as `b_ih + b_hh` (LSTM, tanh RNN) twice that, a GRU's `bx` and `bh` once each;
    /// the embedding and output matrix U(-0.1, 0.1), the output bias zero.
    #[test]
    fn torch_init_has_pytorchs_variances() {
        use crate::model::config::Cell;
        use rand::SeedableRng;
        let var = |x: &[f32]| {
            let n = x.len() as f64;
            let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
            x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n
        };
        let close = |got: f64, want: f64, what: &str| {
            assert!(
                (got / want - 1.0).abs() < 0.05,
                "{what}: variance {got}, want {want}"
            );
        };
        let h = 64;
        let k2 = 1.0 / h as f64;
        for (cell, bias_draws) in [(Cell::Lstm, 2.0), (Cell::Rnn, 2.0), (Cell::Gru, 1.0)] {
            let cfg = Config::new(2000, h, h).unwrap().with_cell(cell);
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
            let p = Params::try_init(cfg, Init::Torch, &mut rng).unwrap();
            close(var(p.embed_w()), 0.01 / 3.0, "embed.W");
            close(var(p.affine_w().unwrap()), 0.01 / 3.0, "affine.W");
            assert!(p.affine_b().iter().all(|&b| b == 0.0));
            let l = p.layer(0);
            close(var(l.wx), k2 / 3.0, "Wx");
            close(var(l.wh), k2 / 3.0, "Wh");
            // Biases are short (G*H values): a looser check.
            let b = var(l.b) / (bias_draws * k2 / 3.0);
            assert!((b - 1.0).abs() < 0.2, "{cell:?} b: {b}");
            let bound = (bias_draws * k2.sqrt()) as f32 * 1.0001;
            assert!(
                l.b.iter().all(|x| x.abs() <= bound),
                "{cell:?} b within {bound}"
            );
            if cell == Cell::Gru {
                let bh = var(l.bh) / (k2 / 3.0);
                assert!((bh - 1.0).abs() < 0.2, "bh: {bh}");
            }
        }
    }
}
