//! Activation buffers sized once from the configuration and the batch shape `(N, T)`.

use super::config::{Cell, Config};
use super::output_grad;
use crate::error::{Error, Result};
use crate::gemm;
use crate::gemm::PANEL;
use crate::mem::{check_memory, try_zeros};

/// The buffers of one recurrent layer.
#[derive(Clone, Debug, Default)]
pub(crate) struct LayerWs {
    /// Gates `[N,T,GH]`: `x Wx` for every step, then the activated gates, then (training) the
    /// gradient w.r.t. the pre-activation. For the tanh RNN (whose pre-activation lives in
    /// `hs`) only training has it, as `dL/dh` then `dL/da`.
    pub(crate) gates: Vec<f32>,
    /// `h_t` `[N,T,H]`.
    pub(crate) hs: Vec<f32>,
    /// `h_{t-1}` for every step `[N,T,H]`: left operand of the recurrence and of `dWh`.
    pub(crate) hprev: Vec<f32>,
    /// LSTM: `c_t` `[N,T,H]`, `tanh(c_t)` `[N,T,H]` and `c` at the batch start `[N,H]`.
    pub(crate) cs: Vec<f32>,
    pub(crate) tc: Vec<f32>,
    pub(crate) c0: Vec<f32>,
    /// GRU: `h_{t-1} Wh + bh` `[N,T,3H]`, then (training) its gradient.
    pub(crate) gh: Vec<f32>,
    /// Dropout of this layer's output `[N,T,H]` (training with dropout only).
    pub(crate) drop: Vec<f32>,
    /// `Wx` packed `[D_l, GH]` and `Wh` packed `[H, GH]`, refreshed every forward.
    pub(crate) wx_packed: Vec<f32>,
    pub(crate) wh_packed: Vec<f32>,
    /// `Wx^T` packed `[GH, D_l]` and `Wh^T` packed `[GH, H]` (training only).
    pub(crate) wxt_packed: Vec<f32>,
    pub(crate) wht_packed: Vec<f32>,
}

/// Every activation (and, for training, every activation gradient) of one batch shape,
/// allocated once. Row-major: `[N,T,D]` embeddings, `[N,T,H]` hidden states, `[N*T,V]` logits.
///
/// The workspace also holds the recurrent state that carries from batch to batch (the book's
/// stateful time layers): `h` of every layer, and an LSTM's `c` (see [`Workspace::state`]),
/// and the dropout setting of training (see [`Workspace::set_dropout`]).
///
/// ```
/// use rnnlm::{Config, Workspace};
/// let cfg = Config::new(10, 4, 6).unwrap();
/// let train = Workspace::new(cfg, 2, 3, true).unwrap();
/// let infer = Workspace::new(cfg, 2, 3, false).unwrap();
/// assert!(train.is_train() && !infer.is_train());
/// assert!(infer.bytes() < train.bytes()); // no gradient buffers
/// assert_eq!(infer.state(), [0.0; 2 * 6]); // the carried state [N, H] starts at zero
/// ```
#[derive(Clone, Debug)]
pub struct Workspace {
    pub(crate) cfg: Config,
    pub(crate) n: usize,
    pub(crate) t: usize,
    pub(crate) train: bool,
    /// Input ids `[N,T]`.
    pub(crate) xs: Vec<u32>,
    /// Targets `[N,T]` (`-1` = ignore).
    pub(crate) ts: Vec<i32>,
    /// Embedded inputs `[N,T,D]` (after dropout, when training with dropout).
    pub(crate) emb: Vec<f32>,
    /// Per-layer buffers.
    pub(crate) layers: Vec<LayerWs>,
    /// Carried state: `h` of every layer `[L,N,H]`, then (LSTM) `c` of every layer `[L,N,H]`.
    pub(crate) state: Vec<f32>,
    /// Logits, then probabilities' gradient `[N*T,V]`.
    pub(crate) logits: Vec<f32>,
    /// Per-position losses `[N*T]`.
    pub(crate) losses: Vec<f32>,
    /// Output weights packed `[H,V]` (`affine.W`, or `embed.W^T` when tied), every forward.
    pub(crate) w_packed: Vec<f32>,
    /// Their transpose packed `[V,H]` in K blocks (training only).
    pub(crate) wt_packed: Vec<f32>,
    /// `dL/dh` of the LSTM / GRU layer being differentiated `[N,T,H]` (training only).
    pub(crate) dh: Vec<f32>,
    /// `dL/demb` `[N,T,D]` (training only).
    pub(crate) demb: Vec<f32>,
    /// Per-row scratch of the backward recurrence: two `[N,H]` (training only).
    pub(crate) scratch: Vec<f32>,
    /// Packing buffers of the large GEMMs (sized for the largest of the step's products).
    pub(crate) gemm_scratch: Vec<f32>,
    /// Tied training: `[dW; db]` `[H+1, V]` of the output layer before it is added to `embed.W`.
    pub(crate) tied_grad: Vec<f32>,
    /// Column strip width of the output layer's backward pass, 0 for the row-block path (see
    /// `model::output_grad`); the packed W^T is laid out in these strips.
    pub(crate) out_strip: usize,
    /// That path's partial sums of dX beyond the first, `[groups - 1, N*T, H]`.
    pub(crate) dx_parts: Vec<f32>,
    /// That path's packed dY strips, one per group, where the dW product packs B.
    pub(crate) dy_packed: Vec<f32>,
    /// Dropout probability (0 = off), seed, and the step counter of the masks.
    pub(crate) dropout: f32,
    pub(crate) dropout_seed: u64,
    pub(crate) dropout_step: u64,
    /// Whether `logits` holds the gradient of a training forward not yet consumed.
    pub(crate) ready_for_backward: bool,
}

impl Workspace {
    /// A workspace for batches of `n` rows of `t` steps. `train` adds the gradient buffers.
    ///
    /// The sizes are computed first ([`Workspace::bytes_for`]) and compared with the memory
    /// available ([`crate::mem::check_memory`]); the buffers are then allocated so that a
    /// refusal is an error, not an abort.
    ///
    /// # Errors
    /// [`Error::Invalid`] if `n` or `t` is zero or the sizes overflow; [`Error::Memory`] if the
    /// buffers need more memory than is available (the message gives both figures) or the
    /// allocator refuses them.
    ///
    /// ```
    /// use rand::SeedableRng;
    /// let cfg = rnnlm::Config::new(10, 4, 6).unwrap();
    /// let params = rnnlm::Params::init_book(cfg, &mut rand_chacha::ChaCha8Rng::seed_from_u64(1));
    /// let mut ws = rnnlm::Workspace::new(cfg, 2, 3, false).unwrap(); // inference: no gradients
    /// let loss = rnnlm::model::simple::forward(&params, &mut ws, &[1, 2, 3, 4, 5, 6], &[2, 3, 4, 5, 6, 7]).unwrap();
    /// assert!((loss - 10f32.ln()).abs() < 0.05);
    /// assert_eq!(ws.state().len(), 2 * 6); // the carried hidden state [N, H]
    /// ```
    pub fn new(cfg: Config, n: usize, t: usize, train: bool) -> Result<Self> {
        let plan = Plan::new(&cfg, n, t, train)?;
        let what = plan.describe();
        check_memory(&what, plan.bytes()?)?;
        let f = |len: usize| try_zeros::<f32>(len, &what);
        let layers = plan
            .layers
            .iter()
            .map(|p| {
                Ok(LayerWs {
                    gates: f(p.gates)?,
                    hs: f(p.hs)?,
                    hprev: f(p.hprev)?,
                    cs: f(p.cs)?,
                    tc: f(p.tc)?,
                    c0: f(p.c0)?,
                    gh: f(p.gh)?,
                    drop: Vec::new(),
                    wx_packed: f(p.wx_packed)?,
                    wh_packed: f(p.wh_packed)?,
                    wxt_packed: f(p.wxt_packed)?,
                    wht_packed: f(p.wht_packed)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            cfg,
            n,
            t,
            train,
            xs: try_zeros(plan.xs, &what)?,
            ts: try_zeros(plan.ts, &what)?,
            emb: f(plan.emb)?,
            layers,
            state: f(plan.state)?,
            logits: f(plan.logits)?,
            losses: f(plan.losses)?,
            w_packed: f(plan.w_packed)?,
            wt_packed: f(plan.wt_packed)?,
            dh: f(plan.dh)?,
            demb: f(plan.demb)?,
            scratch: f(plan.scratch)?,
            gemm_scratch: f(plan.gemm_scratch)?,
            tied_grad: f(plan.tied_grad)?,
            out_strip: 0,
            dx_parts: Vec::new(),
            dy_packed: Vec::new(),
            dropout: 0.0,
            dropout_seed: 0,
            dropout_step: 0,
            ready_for_backward: false,
        })
    }

    /// The bytes [`Workspace::new`] would allocate for this configuration and batch shape
    /// (before dropout, which adds `L*N*T*H*4` bytes of masks to a training workspace, see
    /// [`Workspace::set_dropout`], and the opt-in output strips' buffers, see
    /// [`Workspace::set_output_strips`]): what [`Workspace::bytes`] reports once it exists.
    /// Both read the buffer lengths from one place, so they cannot disagree.
    ///
    /// # Errors
    /// As [`Workspace::new`] for an invalid configuration or batch shape, or one whose size
    /// overflows `usize`; the memory available is not consulted.
    ///
    /// ```
    /// use rnnlm::{Config, Workspace};
    /// let cfg = Config::new(10_000, 100, 100).unwrap();
    /// let bytes = Workspace::bytes_for(&cfg, 10, 35, false).unwrap();
    /// assert_eq!(bytes, Workspace::new(cfg, 10, 35, false).unwrap().bytes());
    /// assert!(bytes > 4 * 10 * 35 * 10_000); // the logits [N*T, V] alone
    /// // Sizes for an allocation the machine could never make are still computed.
    /// assert!(Workspace::bytes_for(&cfg, 1, 100_000_000, false).unwrap() > 4_000_000_000_000);
    /// ```
    pub fn bytes_for(cfg: &Config, n: usize, t: usize, train: bool) -> Result<usize> {
        Plan::new(cfg, n, t, train)?.bytes()
    }

    /// Turns inverted dropout on (`p > 0`) or off (`p == 0`) for the training forwards of this
    /// workspace: after the embedding, between layers and before the output layer, as the
    /// book's `BetterRnnlm` and PyTorch's word_language_model place it. Masks are a pure
    /// function of `(seed, step, site, row, time step, unit)` (see
    /// [`crate::kernels::dropout`]), so results do not depend on the thread count; `step`
    /// counts training forwards from 0 (see [`Workspace::dropout_step`]). An evaluation
    /// workspace ignores the setting.
    ///
    /// # Errors
    /// If `p` is not in `[0, 1)`, or the masks (`L*N*T*H` floats) do not fit in memory (see
    /// [`crate::mem::check_memory`]).
    ///
    /// ```
    /// let cfg = rnnlm::Config::new(10, 4, 6).unwrap();
    /// let mut ws = rnnlm::Workspace::new(cfg, 2, 3, true).unwrap();
    /// ws.set_dropout(0.5, 7).unwrap();
    /// assert_eq!(ws.dropout(), 0.5);
    /// assert!(ws.set_dropout(1.0, 7).is_err());
    /// ```
    pub fn set_dropout(&mut self, p: f32, seed: u64) -> Result<()> {
        if !(0.0..1.0).contains(&p) {
            return Err(Error::invalid(
                "dropout",
                format!("{p} (must be at least 0 and below 1)"),
            ));
        }
        let len = self.n * self.t * self.cfg.hidden_size; // the size of `hs`: no overflow
        let on = p > 0.0 && self.train;
        if on {
            let what = format!(
                "the dropout masks (N={}, T={}, H={}, {} layer(s))",
                self.n, self.t, self.cfg.hidden_size, self.cfg.layers
            );
            check_memory(&what, len.saturating_mul(4 * self.layers.len()))?;
            for l in &mut self.layers {
                l.drop = try_zeros(len, &what)?;
            }
        } else {
            for l in &mut self.layers {
                l.drop = Vec::new();
            }
        }
        self.dropout = p;
        self.dropout_seed = seed;
        Ok(())
    }

    /// Turns the output layer's backward pass by column strips of dY on or off (off by
    /// default) and returns whether it is now in use.
    ///
    /// The strip path reads the logits' gradient from memory once for both of its products
    /// instead of twice, at the price of narrower products and `dX` partial sums (see
    /// `model::output_grad`); results stay thread-count independent but differ from the
    /// default path in the last bits. It applies to training workspaces whose shape lets a
    /// strip of dY stay in L2 with `2H` at most the strip width (small hidden layers, e.g.
    /// `H <= 184` at N*T = 700) on an AVX2 or AVX-512 CPU; elsewhere it stays off (`Ok(false)`).
    /// It is off by default because it measured no faster on the CPUs at hand (see the
    /// README's performance notes): measure it on yours with `rnnlm bench --output-strips`.
    ///
    /// # Errors
    /// If its buffers (up to 8 partial sums of `dX`, `[N*T, H]` each, and 8 packed strips of
    /// dY) do not fit in memory.
    ///
    /// ```
    /// let cfg = rnnlm::Config::new(1000, 16, 16).unwrap();
    /// let mut ws = rnnlm::Workspace::new(cfg, 4, 8, true).unwrap();
    /// let on = ws.set_output_strips(true).unwrap(); // true on an AVX2 / AVX-512 CPU
    /// assert_eq!(ws.output_strips(), on);
    /// assert!(!ws.set_output_strips(false).unwrap());
    /// let mut eval = rnnlm::Workspace::new(cfg, 4, 8, false).unwrap();
    /// assert!(!eval.set_output_strips(true).unwrap()); // training only
    /// ```
    pub fn set_output_strips(&mut self, on: bool) -> Result<bool> {
        let (nt, h, v) = (self.n * self.t, self.cfg.hidden_size, self.cfg.vocab_size);
        let strip = if on && self.train {
            output_grad::strip_width(nt, h)
        } else {
            0
        };
        if strip == 0 {
            self.out_strip = 0;
            self.dx_parts = Vec::new();
            self.dy_packed = Vec::new();
            return Ok(false);
        }
        let what = format!(
            "the output strips' buffers (N={}, T={}, H={h}, V={v})",
            self.n, self.t
        );
        let overflow = || Error::invalid("output strips", format!("{what} overflow"));
        let parts = output_grad::parts_len(nt, h, v, strip).ok_or_else(overflow)?;
        let packs = output_grad::packs_len(nt, h, v, strip);
        check_memory(&what, parts.saturating_add(packs).saturating_mul(4))?;
        self.dx_parts = try_zeros(parts, &what)?;
        self.dy_packed = try_zeros(packs, &what)?;
        self.out_strip = strip;
        Ok(true)
    }

    /// Whether the output layer's backward pass runs by column strips (see
    /// [`Workspace::set_output_strips`]).
    pub fn output_strips(&self) -> bool {
        self.out_strip > 0
    }

    /// The dropout probability (0 when off).
    pub fn dropout(&self) -> f32 {
        self.dropout
    }

    /// The step counter of the dropout masks: the number of training forwards run so far (a
    /// resumed run sets it back with [`Workspace::set_dropout_step`]).
    pub fn dropout_step(&self) -> u64 {
        self.dropout_step
    }

    /// Sets the step counter of the dropout masks.
    pub fn set_dropout_step(&mut self, step: u64) {
        self.dropout_step = step;
    }

    /// Whether training forwards apply dropout.
    pub(crate) fn dropout_on(&self) -> bool {
        self.train && self.dropout > 0.0
    }

    /// The model configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Batch size `N`.
    ///
    /// ```
    /// let ws = rnnlm::Workspace::new(rnnlm::Config::new(10, 4, 6).unwrap(), 2, 3, false).unwrap();
    /// assert_eq!(ws.batch_size(), 2);
    /// assert_eq!(ws.state().len(), ws.batch_size() * 6); // one state row per batch row
    /// ```
    pub fn batch_size(&self) -> usize {
        self.n
    }

    /// Time steps per batch `T`.
    ///
    /// ```
    /// let ws = rnnlm::Workspace::new(rnnlm::Config::new(10, 4, 6).unwrap(), 2, 3, false).unwrap();
    /// assert_eq!(ws.time_size(), 3);
    /// assert_eq!(ws.hidden().len(), ws.batch_size() * ws.time_size() * 6); // [N, T, H]
    /// ```
    pub fn time_size(&self) -> usize {
        self.t
    }

    /// Whether the gradient buffers exist.
    pub fn is_train(&self) -> bool {
        self.train
    }

    /// The state the next batch starts from: `h` of every layer `[L,N,H]`, followed for an
    /// LSTM by `c` of every layer `[L,N,H]` (so `[N,H]` for the one-layer tanh RNN).
    ///
    /// ```
    /// # use rand::SeedableRng;
    /// # use rnnlm::{model::simple::forward, Config, Params, Workspace};
    /// # let cfg = Config::new(10, 4, 6).unwrap();
    /// # let params = Params::init_book(cfg, &mut rand_chacha::ChaCha8Rng::seed_from_u64(1));
    /// let mut ws = Workspace::new(cfg, 2, 3, false).unwrap();
    /// forward(&params, &mut ws, &[1, 2, 3, 4, 5, 6], &[2, 3, 4, 5, 6, 7]).unwrap();
    /// let (h, hs) = (ws.state(), ws.hidden()); // [N, H] and [N, T, H], H = 6
    /// assert_eq!(h[..6], hs[2 * 6..3 * 6]); // row 0's state is its last step's h
    /// assert_eq!(h[6..], hs[5 * 6..6 * 6]); // row 1's likewise
    /// ```
    pub fn state(&self) -> &[f32] {
        &self.state
    }

    /// Sets the carried state to zero (the book's `reset_state`).
    pub fn reset_state(&mut self) {
        self.state.fill(0.0);
    }

    /// Sets the carried state (the book's `set_state`), laid out as [`Workspace::state`].
    ///
    /// # Errors
    /// If `s` has another length.
    ///
    /// ```
    /// # use rand::SeedableRng;
    /// # use rnnlm::{model::simple::forward, Config, Params, Workspace};
    /// # let cfg = Config::new(10, 4, 6).unwrap();
    /// # let params = Params::init_book(cfg, &mut rand_chacha::ChaCha8Rng::seed_from_u64(1));
    /// let mut ws = Workspace::new(cfg, 1, 3, false).unwrap();
    /// let (xs, ts) = ([1, 2, 3], [2, 3, 4]);
    /// forward(&params, &mut ws, &xs, &ts).unwrap();
    /// let saved = ws.state().to_vec();
    /// let next = forward(&params, &mut ws, &xs, &ts).unwrap();
    /// ws.set_state(&saved).unwrap(); // rewind
    /// assert_eq!(forward(&params, &mut ws, &xs, &ts).unwrap(), next);
    /// assert!(ws.set_state(&[0.0; 5]).is_err()); // not [N, H] = [1, 6]
    /// ```
    pub fn set_state(&mut self, s: &[f32]) -> Result<()> {
        if s.len() != self.state.len() {
            let k = self.state.len() / (self.n * self.cfg.hidden_size);
            return Err(Error::Shape {
                what: "state".into(),
                expected: vec![k, self.n, self.cfg.hidden_size],
                found: vec![s.len()],
            });
        }
        self.state.copy_from_slice(s);
        Ok(())
    }

    /// Logits (after a forward in evaluation mode) `[N*T,V]`.
    pub fn logits(&self) -> &[f32] {
        &self.logits
    }

    /// Per-position cross-entropies of the last forward `[N*T]` (0 where masked).
    ///
    /// ```
    /// # use rand::SeedableRng;
    /// # use rnnlm::{model::simple::forward, Config, Params, Workspace};
    /// # let cfg = Config::new(10, 4, 6).unwrap();
    /// # let params = Params::init_book(cfg, &mut rand_chacha::ChaCha8Rng::seed_from_u64(1));
    /// let mut ws = Workspace::new(cfg, 2, 3, false).unwrap();
    /// let loss = forward(&params, &mut ws, &[1, 2, 3, 4, 5, 6], &[2, 3, -1, 5, 6, -1]).unwrap();
    /// let l = ws.position_losses();
    /// assert_eq!((l[2], l[5]), (0.0, 0.0)); // masked positions
    /// let mean = l.iter().map(|&x| x as f64).sum::<f64>() / 4.0; // over the 4 unmasked
    /// assert_eq!(loss, mean as f32);
    /// ```
    pub fn position_losses(&self) -> &[f32] {
        &self.losses
    }

    /// Hidden states `h_t` of the last layer in the last forward, `[N,T,H]`.
    pub fn hidden(&self) -> &[f32] {
        &self.layers[self.layers.len() - 1].hs
    }

    /// Bytes held by the buffers.
    ///
    /// ```
    /// use rnnlm::{Config, Workspace};
    /// let cfg = Config::new(10, 4, 6).unwrap();
    /// let small = Workspace::new(cfg, 2, 3, false).unwrap();
    /// assert!(small.bytes() >= 4 * (small.logits().len() + small.hidden().len()));
    /// assert!(Workspace::new(cfg, 4, 3, false).unwrap().bytes() > small.bytes());
    /// ```
    pub fn bytes(&self) -> usize {
        let layers: usize = self
            .layers
            .iter()
            .map(|l| {
                l.gates.len()
                    + l.hs.len()
                    + l.hprev.len()
                    + l.cs.len()
                    + l.tc.len()
                    + l.c0.len()
                    + l.gh.len()
                    + l.drop.len()
                    + l.wx_packed.len()
                    + l.wh_packed.len()
                    + l.wxt_packed.len()
                    + l.wht_packed.len()
            })
            .sum();
        4 * (self.xs.len()
            + self.ts.len()
            + self.emb.len()
            + layers
            + self.state.len()
            + self.logits.len()
            + self.losses.len()
            + self.w_packed.len()
            + self.wt_packed.len()
            + self.dh.len()
            + self.demb.len()
            + self.scratch.len()
            + self.gemm_scratch.len()
            + self.tied_grad.len()
            + self.dx_parts.len()
            + self.dy_packed.len())
    }
}

/// The lengths (in 4-byte values) of the buffers of one recurrent layer; see [`LayerWs`].
struct LayerPlan {
    gates: usize,
    hs: usize,
    hprev: usize,
    cs: usize,
    tc: usize,
    c0: usize,
    gh: usize,
    wx_packed: usize,
    wh_packed: usize,
    wxt_packed: usize,
    wht_packed: usize,
}

impl LayerPlan {
    fn len(&self) -> Option<usize> {
        [
            self.gates,
            self.hs,
            self.hprev,
            self.cs,
            self.tc,
            self.c0,
            self.gh,
            self.wx_packed,
            self.wh_packed,
            self.wxt_packed,
            self.wht_packed,
        ]
        .into_iter()
        .try_fold(0usize, usize::checked_add)
    }
}

/// The length of every buffer of a workspace (every one holds 4-byte values: `f32`, `u32` or
/// `i32`), computed with checked arithmetic. [`Workspace::new`] allocates exactly these and
/// [`Workspace::bytes_for`] sums them: one source, so the estimate and the allocation cannot
/// drift apart.
struct Plan {
    cfg: Config,
    n: usize,
    t: usize,
    train: bool,
    layers: Vec<LayerPlan>,
    xs: usize,
    ts: usize,
    emb: usize,
    state: usize,
    logits: usize,
    losses: usize,
    w_packed: usize,
    wt_packed: usize,
    dh: usize,
    demb: usize,
    scratch: usize,
    gemm_scratch: usize,
    tied_grad: usize,
}

impl Plan {
    fn new(cfg: &Config, n: usize, t: usize, train: bool) -> Result<Self> {
        cfg.validate()?;
        if n == 0 || t == 0 {
            return Err(Error::invalid(
                "batch shape",
                format!("batch size and time size must be at least 1 (got N={n}, T={t})"),
            ));
        }
        let (v, d, h) = (cfg.vocab_size, cfg.wordvec_size, cfg.hidden_size);
        let gh = cfg.cell.gates() * h;
        let overflow = || {
            Error::invalid(
                "batch shape",
                format!("N={n}, T={t} with V={v}, D={d}, H={h}: the workspace's size overflows"),
            )
        };
        let mul = |a: usize, b: usize| a.checked_mul(b).ok_or_else(overflow);
        // A packed copy of a k x m matrix: m rounded up to the kernel's panel width.
        let packed = |k: usize, m: usize| mul(k, m.div_ceil(PANEL) * PANEL);
        let nt = n
            .checked_mul(t)
            .ok_or_else(|| Error::invalid("batch shape", "N*T overflows"))?;
        // The largest buffer is [N*T, max(V,D,GH)]; refuse shapes whose size overflows.
        if nt
            .checked_mul(v.max(d).max(gh))
            .is_none_or(|x| x >= 1 << 40)
        {
            return Err(Error::invalid(
                "batch shape",
                format!("N*T*V = {nt}*{v} values is too large"),
            ));
        }
        let when = |on: bool, len: usize| if on { len } else { 0 };
        let (lstm, gru, rnn) = (
            cfg.cell == Cell::Lstm,
            cfg.cell == Cell::Gru,
            cfg.cell == Cell::Rnn,
        );
        let layers = (0..cfg.layers)
            .map(|l| {
                let dl = cfg.layer_input(l);
                Ok(LayerPlan {
                    gates: when(train || !rnn, mul(nt, gh)?),
                    hs: mul(nt, h)?,
                    hprev: mul(nt, h)?,
                    cs: when(lstm, mul(nt, h)?),
                    tc: when(lstm, mul(nt, h)?),
                    c0: when(lstm, mul(n, h)?),
                    gh: when(gru, mul(nt, gh)?),
                    wx_packed: packed(dl, gh)?,
                    wh_packed: packed(h, gh)?,
                    wxt_packed: when(train, packed(gh, dl)?),
                    wht_packed: when(train, packed(gh, h)?),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        // The weight gradients are products through gemm::matmul_packed, each with its
        // A = [activations | 1]^T built row-major at the front of the scratch; see
        // model::simple::backward.
        let gemm_scratch = if train {
            let mut shapes = vec![(h + 1, v)];
            for l in 0..cfg.layers {
                let dl = cfg.layer_input(l);
                if gru {
                    shapes.push((dl + 1, gh));
                    shapes.push((h + 1, gh));
                } else {
                    shapes.push((dl + h + 1, gh));
                }
            }
            let mut most = 0;
            for (m, cols) in shapes {
                let len = mul(m, nt)?
                    .checked_add(gemm::scratch_len(m, nt, cols, true))
                    .ok_or_else(overflow)?;
                most = most.max(len);
            }
            most
        } else {
            0
        };
        let states = if lstm { 2 } else { 1 };
        Ok(Self {
            cfg: *cfg,
            n,
            t,
            train,
            layers,
            xs: nt,
            ts: nt,
            emb: mul(nt, d)?,
            state: mul(mul(states * cfg.layers, n)?, h)?,
            logits: mul(nt, v)?,
            losses: nt,
            w_packed: packed(h, v)?,
            wt_packed: when(train, packed(v, h)?),
            dh: when(train && !rnn, mul(nt, h)?),
            demb: when(train, mul(nt, d)?),
            scratch: when(train, mul(2 * n, h)?),
            gemm_scratch,
            tied_grad: when(train && cfg.tied, mul(h + 1, v)?),
        })
    }

    /// Total bytes.
    fn bytes(&self) -> Result<usize> {
        let mut total = [
            self.xs,
            self.ts,
            self.emb,
            self.state,
            self.logits,
            self.losses,
            self.w_packed,
            self.wt_packed,
            self.dh,
            self.demb,
            self.scratch,
            self.gemm_scratch,
            self.tied_grad,
        ]
        .into_iter()
        .try_fold(0usize, usize::checked_add);
        for l in &self.layers {
            total = total.and_then(|t| t.checked_add(l.len()?));
        }
        total.and_then(|t| t.checked_mul(4)).ok_or_else(|| {
            Error::invalid(
                "batch shape",
                format!(
                    "N={}, T={}: the workspace's size in bytes overflows",
                    self.n, self.t
                ),
            )
        })
    }

    /// What the workspace is, for memory errors.
    fn describe(&self) -> String {
        let c = &self.cfg;
        format!(
            "the {} workspace (N={}, T={}, V={}, D={}, H={}, {} {} layer{})",
            if self.train { "training" } else { "evaluation" },
            self.n,
            self.t,
            c.vocab_size,
            c.wordvec_size,
            c.hidden_size,
            c.layers,
            c.cell,
            if c.layers == 1 { "" } else { "s" }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_for_is_what_new_allocates() {
        for cell in [Cell::Rnn, Cell::Lstm, Cell::Gru] {
            for layers in 1..=3 {
                for (d, tied) in [(7, false), (12, true)] {
                    let cfg = Config::new(53, d, 12)
                        .unwrap()
                        .with_cell(cell)
                        .with_layers(layers)
                        .with_tied(tied)
                        .validated()
                        .unwrap();
                    for (n, t) in [(1, 1), (3, 5), (20, 35)] {
                        for train in [false, true] {
                            let ws = Workspace::new(cfg, n, t, train).unwrap();
                            let want = Workspace::bytes_for(&cfg, n, t, train).unwrap();
                            assert_eq!(ws.bytes(), want, "{cfg:?} N={n} T={t} train={train}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn dropout_masks_add_their_bytes() {
        let cfg = Config::new(30, 8, 8).unwrap().with_layers(2);
        let mut ws = Workspace::new(cfg, 3, 4, true).unwrap();
        let base = Workspace::bytes_for(&cfg, 3, 4, true).unwrap();
        ws.set_dropout(0.5, 1).unwrap();
        assert_eq!(ws.bytes(), base + 4 * 2 * 3 * 4 * 8);
        ws.set_dropout(0.0, 1).unwrap();
        assert_eq!(ws.bytes(), base);
    }

    #[test]
    fn sizes_that_overflow_are_errors() {
        let cfg = Config::new(1 << 24, 1 << 24, 1 << 24).unwrap();
        for (n, t) in [(usize::MAX, 2), (1 << 40, 1 << 30), (1 << 20, 1 << 20)] {
            let e = Workspace::bytes_for(&cfg, n, t, true).unwrap_err();
            assert!(matches!(e, Error::Invalid { .. }), "{e}");
            let e = Workspace::new(cfg, n, t, true).unwrap_err();
            assert!(matches!(e, Error::Invalid { .. }), "{e}");
        }
    }
}
