//! Activation buffers sized once from the configuration and the batch shape `(N, T)`.

use super::config::{Config, Softmax, MAX_LAYERS};
use super::output_grad;
use crate::cells::add_outer_scratch;
use crate::error::{Error, Result};
use crate::gemm::PANEL;
use crate::mem::{check_memory, try_zeros};

/// A workspace's rows as one shard of a data-parallel batch: the book's `N` rows split among
/// processes, each running its own rows. A shard's loss and gradient are its rows' share of
/// the whole batch's mean (its losses summed over the whole batch's `targets`), so the shards'
/// losses and gradients add up to the single-process ones (up to the order of the sums), and
/// its dropout masks are those of its rows in the whole batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// The whole batch's index of this shard's first row.
    pub row0: usize,
    /// Targets in the whole batch (the divisor of the loss on every shard).
    pub targets: usize,
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
    /// Where each buffer lives in `acts` and `packs`.
    plan: Plan,
    /// Every per-position and per-row buffer, in one allocation carved by [`Plan`]: per layer
    /// the cell's buffers (gates, `h_t`, `h_{t-1}`, the cell's own), then the embeddings, the
    /// carried state, logits, losses and the gradient buffers.
    acts: Vec<f32>,
    /// Packed weights, the large products' scratch and the tied output gradient, carved by
    /// [`Plan`].
    packs: Vec<f32>,
    /// Dropout of every layer's output `[L,N,T,H]` (training with dropout only).
    drops: Vec<f32>,
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
    /// This workspace's rows as a shard of a larger data-parallel batch, or `None`.
    pub(crate) shard: Option<Shard>,
    /// Whether `logits` holds the gradient of a training forward not yet consumed.
    pub(crate) ready_for_backward: bool,
    /// A class head's buffers (empty for the full softmax).
    pub(crate) class: ClassBufs,
}

/// The buffers of a factorised head's second stage over one batch (see `heads::class` and
/// `heads::adaptive`): the positions gathered by class or cluster, their rows, and each slot's
/// running maximum, sum and loss.
#[derive(Clone, Debug, Default)]
pub(crate) struct ClassBufs {
    /// `[N*T]` class targets.
    pub ts1: Vec<i32>,
    /// `[N*T]` position of each slot.
    pub order: Vec<u32>,
    /// `[N*T]` slot of each position.
    pub slot: Vec<u32>,
    /// `[C+1]` the slots of each class.
    pub offsets: Vec<u32>,
    /// `[N*T]` target within its class, by slot.
    pub tg: Vec<u32>,
    /// `[N*T, H]` the top layer's output, by slot.
    pub xg: Vec<f32>,
    /// `[N*T]` per slot: maximum logit, sum of exponentials, loss.
    pub m: Vec<f32>,
    pub s: Vec<f64>,
    pub loss: Vec<f32>,
    /// `[N*T, H]` (training) the gradient w.r.t. `xg`.
    pub dxg: Vec<f32>,
    /// One scratch slab per parallel group.
    pub slabs: Vec<f32>,
    /// (Training) the second softmax's gradients the forward keeps for the backward, and
    /// where each class's starts (`[C]`; see `heads::class::Keep`).
    pub kept: Vec<f32>,
    pub goff: Vec<u32>,
    /// An adaptive head's buffers (see `heads::adaptive::TailBufs`), and the zeros that
    /// stand for a head without a bias.
    pub zg: Vec<f32>,
    pub gm: Vec<f32>,
    pub gs: Vec<f64>,
    pub gtl: Vec<f32>,
    pub dz: Vec<f32>,
    pub mm: Vec<f32>,
    pub zero_b: Vec<f32>,
    /// Positions that count (set by the forward).
    pub count: usize,
}

impl ClassBufs {
    /// Floats kept for the backward: room for every position's class at twice the average
    /// class size (what Zipf-like text needs), at most 2^24 (64 MB); a step that needs more
    /// recomputes the classes that do not fit.
    fn kept_len(cfg: &Config, nt: usize, classes: usize) -> usize {
        let avg = cfg.vocab_size.div_ceil(classes.max(1));
        nt.saturating_mul(2 * avg).min(1 << 24)
    }

    /// The lengths of every buffer for `cfg`, `nt` positions (all zero for the full softmax).
    fn lens(cfg: &Config, nt: usize, train: bool) -> Option<BufLens> {
        let h = cfg.hidden_size;
        let (groups, pmax, zero_b) = match cfg.softmax {
            Softmax::Full => return Some(BufLens::default()),
            Softmax::Class { classes } => (classes, 0, 0),
            Softmax::Adaptive {
                cutoffs,
                projections,
                head_bias,
            } => (
                cutoffs.len(),
                projections.as_slice().iter().copied().max().unwrap_or(1) as usize,
                if head_bias {
                    0
                } else {
                    cfg.softmax.outputs(cfg.vocab_size)
                },
            ),
        };
        let adaptive = cfg.softmax.is_adaptive();
        let nth = nt.checked_mul(h)?;
        let g = crate::heads::class::GROUPS;
        let when = |on: bool, n: usize| if on { n } else { 0 };
        Some(BufLens {
            nt,
            offsets: groups + 1,
            xg: nth,
            dxg: when(train, nth),
            slabs: g.checked_mul(crate::heads::class::slab_len(h))?,
            kept: when(train && !adaptive, Self::kept_len(cfg, nt, groups)),
            goff: when(train && !adaptive, groups),
            zg: nt.checked_mul(pmax)?,
            gm: when(adaptive, nt.checked_mul(g)?),
            dz: when(train, nt.checked_mul(g)?.checked_mul(pmax)?),
            mm: when(
                adaptive,
                crate::heads::adaptive::AdaptiveSoftmax::mm_len(h, pmax, nt),
            ),
            zero_b,
        })
    }

    /// Values (4-byte units; `f64`s count twice) of the buffers for `cfg`, `nt` positions.
    fn len(cfg: &Config, nt: usize, train: bool) -> Option<usize> {
        let l = Self::lens(cfg, nt, train)?;
        if l.offsets == 0 {
            return Some(0);
        }
        [
            l.nt.checked_mul(6)?, // ts1, order, slot, tg, m, loss; s counts twice below
            l.nt.checked_mul(2)?,
            l.offsets,
            l.xg,
            l.dxg,
            l.slabs,
            l.kept,
            l.goff,
            l.zg,
            l.gm.checked_mul(4)?, // gm, gtl, gs (twice)
            l.dz,
            l.mm,
            l.zero_b,
        ]
        .iter()
        .try_fold(0usize, |a, &b| a.checked_add(b))
    }

    fn new(cfg: &Config, nt: usize, train: bool, what: &str) -> Result<Self> {
        let overflow = || Error::invalid("batch shape", "the head's buffers' size overflows");
        let l = Self::lens(cfg, nt, train).ok_or_else(overflow)?;
        if l.offsets == 0 {
            return Ok(Self::default());
        }
        let f = |n: usize| try_zeros::<f32>(n, what);
        let u = |n: usize| try_zeros::<u32>(n, what);
        Ok(Self {
            ts1: try_zeros(nt, what)?,
            order: u(nt)?,
            slot: u(nt)?,
            offsets: u(l.offsets)?,
            tg: u(nt)?,
            xg: f(l.xg)?,
            m: f(nt)?,
            s: try_zeros(nt, what)?,
            loss: f(nt)?,
            dxg: f(l.dxg)?,
            slabs: f(l.slabs)?,
            kept: f(l.kept)?,
            goff: u(l.goff)?,
            zg: f(l.zg)?,
            gm: f(l.gm)?,
            gs: try_zeros(l.gm, what)?,
            gtl: f(l.gm)?,
            dz: f(l.dz)?,
            mm: f(l.mm)?,
            zero_b: f(l.zero_b)?,
            count: 0,
        })
    }

    fn bytes(&self) -> usize {
        4 * (self.ts1.len()
            + self.order.len()
            + self.slot.len()
            + self.offsets.len()
            + self.tg.len()
            + self.xg.len()
            + self.m.len()
            + 2 * self.s.len()
            + self.loss.len()
            + self.dxg.len()
            + self.slabs.len()
            + self.kept.len()
            + self.goff.len()
            + self.zg.len()
            + self.gm.len()
            + 2 * self.gs.len()
            + self.gtl.len()
            + self.dz.len()
            + self.mm.len()
            + self.zero_b.len())
    }
}

/// The lengths of [`ClassBufs`]' buffers.
#[derive(Default)]
struct BufLens {
    nt: usize,
    offsets: usize,
    xg: usize,
    dxg: usize,
    slabs: usize,
    kept: usize,
    goff: usize,
    zg: usize,
    gm: usize,
    dz: usize,
    mm: usize,
    zero_b: usize,
}

/// Whole-batch mutable views of one layer's activation buffers (see [`crate::cells::Buffers`]).
#[derive(Default)]
pub(crate) struct LayerActs<'a> {
    /// `[N,T,gates*H]`
    pub gates: &'a mut [f32],
    /// `[N,T,H]`
    pub hs: &'a mut [f32],
    /// `[N,T,H]`
    pub hprev: &'a mut [f32],
    /// `[N,T,aux*H]`
    pub aux: &'a mut [f32],
    /// `[N,row_aux*H]`
    pub row_aux: &'a mut [f32],
}

/// Whole-batch mutable views of every activation buffer.
pub(crate) struct Acts<'a> {
    /// `[N,T]` input ids.
    pub xs: &'a [u32],
    /// `[N,T]` targets.
    pub ts: &'a [i32],
    /// The first `L` entries are the layers.
    pub layers: [LayerActs<'a>; MAX_LAYERS],
    /// `[N,T,D]`
    pub emb: &'a mut [f32],
    /// `[S,L,N,H]`: state vector `s` of layer `l` is chunk `s*L + l` of `N*H` floats.
    pub state: &'a mut [f32],
    /// `[N*T,V]`
    pub logits: &'a mut [f32],
    /// `[N*T]`
    pub losses: &'a mut [f32],
    /// `[N,T,H]` (training, cells that are not differentiated in place)
    pub dh: &'a mut [f32],
    /// `[N,T,D]` (training)
    pub demb: &'a mut [f32],
    /// `[N, scratch*H]` (training)
    pub scratch: &'a mut [f32],
    /// `[L,N,T,H]` (training with dropout)
    pub drops: &'a mut [f32],
    /// A class head's buffers.
    pub class: &'a mut ClassBufs,
}

/// One layer's packed weights.
#[derive(Default)]
pub(crate) struct LayerPacks<'a> {
    /// `Wx [D_l, GH]` packed.
    pub wx: &'a mut [f32],
    /// The recurrent weights packed for the forward ([`crate::cells::CellImpl::pack_recurrent`]).
    pub wh: &'a mut [f32],
    /// `Wx^T [GH, D_l]` packed (training).
    pub wxt: &'a mut [f32],
    /// The recurrent weights packed for the backward (training).
    pub wht: &'a mut [f32],
}

/// Mutable views of the packed weights and scratch.
pub(crate) struct Packs<'a> {
    pub layers: [LayerPacks<'a>; MAX_LAYERS],
    /// Output weights packed `[H,V]` (`affine.W`, or `embed.W^T` when tied), every forward.
    pub w: &'a mut [f32],
    /// Their transpose packed `[V,H]` in K blocks (training only).
    pub wt: &'a mut [f32],
    /// Packing and `A^T` scratch of the large weight-gradient products (training).
    pub gemm_scratch: &'a mut [f32],
    /// Tied training: `[dW; db]` `[H+1, V]` of the output layer before it is added to `embed.W`.
    pub tied_grad: &'a mut [f32],
    /// The output strips' dX partials and packed dY (see [`Workspace::set_output_strips`]).
    pub dx_parts: &'a mut [f32],
    pub dy_packed: &'a mut [f32],
}

/// Takes slices of the given lengths off the front of a buffer, in order.
struct Carver<'a>(&'a mut [f32]);

impl<'a> Carver<'a> {
    fn take(&mut self, len: usize) -> &'a mut [f32] {
        let (a, b) = std::mem::take(&mut self.0).split_at_mut(len);
        self.0 = b;
        a
    }
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
        let class = ClassBufs::new(&cfg, plan.nt, train, &what)?;
        Ok(Self {
            cfg,
            n,
            t,
            train,
            xs: try_zeros(plan.nt, &what)?,
            ts: try_zeros(plan.nt, &what)?,
            acts: try_zeros(plan.acts_len, &what)?,
            packs: try_zeros(plan.packs_len, &what)?,
            drops: Vec::new(),
            plan,
            out_strip: 0,
            dx_parts: Vec::new(),
            dy_packed: Vec::new(),
            dropout: 0.0,
            dropout_seed: 0,
            dropout_step: 0,
            shard: None,
            ready_for_backward: false,
            class,
        })
    }

    /// Mutable views of every buffer, carved from the allocations in the plan's order.
    pub(crate) fn split_mut(&mut self) -> (Acts<'_>, Packs<'_>) {
        let p = &self.plan;
        let mut c = Carver(&mut self.acts);
        let mut layers: [LayerActs<'_>; MAX_LAYERS] = std::array::from_fn(|_| LayerActs::default());
        for (lp, la) in p.layers.iter().zip(layers.iter_mut()) {
            *la = LayerActs {
                gates: c.take(lp.gates),
                hs: c.take(lp.hs),
                hprev: c.take(lp.hprev),
                aux: c.take(lp.aux),
                row_aux: c.take(lp.row_aux),
            };
        }
        let acts = Acts {
            xs: &self.xs,
            ts: &self.ts,
            layers,
            emb: c.take(p.emb),
            state: c.take(p.state),
            logits: c.take(p.logits),
            losses: c.take(p.losses),
            dh: c.take(p.dh),
            demb: c.take(p.demb),
            scratch: c.take(p.scratch),
            drops: &mut self.drops,
            class: &mut self.class,
        };
        let mut c = Carver(&mut self.packs);
        let mut layers: [LayerPacks<'_>; MAX_LAYERS] =
            std::array::from_fn(|_| LayerPacks::default());
        for (lp, la) in p.layers.iter().zip(layers.iter_mut()) {
            *la = LayerPacks {
                wx: c.take(lp.wx_packed),
                wh: c.take(lp.wh_packed),
                wxt: c.take(lp.wxt_packed),
                wht: c.take(lp.wht_packed),
            };
        }
        let packs = Packs {
            layers,
            w: c.take(p.w_packed),
            wt: c.take(p.wt_packed),
            gemm_scratch: c.take(p.gemm_scratch),
            tied_grad: c.take(p.tied_grad),
            dx_parts: &mut self.dx_parts,
            dy_packed: &mut self.dy_packed,
        };
        (acts, packs)
    }

    /// A global buffer of `acts` (read-only).
    fn global(&self, which: Global) -> &[f32] {
        &self.acts[self.plan.global(which)]
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
            let all = len.saturating_mul(self.cfg.layers);
            check_memory(&what, all.saturating_mul(4))?;
            self.drops = try_zeros(all, &what)?;
        } else {
            self.drops = Vec::new();
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
        // The strips are a path of the full softmax's backward only.
        let strip = if on && self.train && self.cfg.softmax.is_full() {
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

    /// Makes the `N` rows of this workspace rows `row0..row0 + N` of a data-parallel batch
    /// of `targets` targets in all (or, with `None`, a batch of their own): see [`Shard`].
    ///
    /// # Errors
    /// If `targets` is 0 or fewer than this workspace's `N * T` positions.
    pub fn set_shard(&mut self, shard: Option<Shard>) -> Result<()> {
        if let Some(sh) = shard {
            if sh.targets == 0 || sh.targets < self.n * self.t {
                return Err(Error::invalid(
                    "shard",
                    format!(
                        "{} targets in the whole batch, but this shard alone has {} x {} positions",
                        sh.targets, self.n, self.t
                    ),
                ));
            }
        }
        self.shard = shard;
        Ok(())
    }

    /// The shard set by [`Workspace::set_shard`].
    pub fn shard(&self) -> Option<Shard> {
        self.shard
    }

    /// The divisor of the loss: the whole batch's targets for a shard, else this batch's
    /// (the positions not ignored).
    pub(crate) fn loss_count(&self) -> usize {
        match self.shard {
            Some(sh) => sh.targets,
            None => crate::layers::softmax_loss::count(&self.ts),
        }
    }

    /// The whole batch's position of this workspace's first (0 unless a shard): where its
    /// dropout masks start, so a shard draws the masks of its rows in the whole batch.
    pub(crate) fn position0(&self) -> usize {
        self.shard.map_or(0, |sh| sh.row0 * self.t)
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
        self.global(Global::State)
    }

    /// Sets the carried state to zero (the book's `reset_state`).
    pub fn reset_state(&mut self) {
        let r = self.plan.global(Global::State);
        self.acts[r].fill(0.0);
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
        let r = self.plan.global(Global::State);
        if s.len() != r.len() {
            let k = r.len() / (self.n * self.cfg.hidden_size);
            return Err(Error::Shape {
                what: "state".into(),
                expected: vec![k, self.n, self.cfg.hidden_size],
                found: vec![s.len()],
            });
        }
        self.acts[r].copy_from_slice(s);
        Ok(())
    }

    /// Logits (after a forward in evaluation mode) `[N*T,V]`.
    pub fn logits(&self) -> &[f32] {
        self.global(Global::Logits)
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
        self.global(Global::Losses)
    }

    /// Hidden states `h_t` of the last layer in the last forward, `[N,T,H]`.
    pub fn hidden(&self) -> &[f32] {
        let lp = &self.plan.layers[self.cfg.layers - 1];
        let start = lp.start + lp.gates;
        &self.acts[start..start + lp.hs]
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
        4 * (self.xs.len()
            + self.ts.len()
            + self.acts.len()
            + self.packs.len()
            + self.drops.len()
            + self.dx_parts.len()
            + self.dy_packed.len())
            + self.class.bytes()
    }
}

/// The lengths (in 4-byte values) of the buffers of one recurrent layer, and where they start
/// in `acts`; see [`LayerActs`] and [`LayerPacks`].
#[derive(Clone, Debug)]
struct LayerPlan {
    start: usize,
    gates: usize,
    hs: usize,
    hprev: usize,
    aux: usize,
    row_aux: usize,
    wx_packed: usize,
    wh_packed: usize,
    wxt_packed: usize,
    wht_packed: usize,
}

/// The global buffers of `acts`, in order after the layers'.
#[derive(Clone, Copy)]
enum Global {
    Emb,
    State,
    Logits,
    Losses,
}

/// The length of every buffer of a workspace (every one holds 4-byte values: `f32`, `u32` or
/// `i32`), computed with checked arithmetic from the cell's [`crate::cells::Buffers`].
/// [`Workspace::new`] allocates exactly these and [`Workspace::bytes_for`] sums them: one
/// source, so the estimate and the allocation cannot drift apart.
#[derive(Clone, Debug)]
struct Plan {
    cfg: Config,
    n: usize,
    t: usize,
    train: bool,
    nt: usize,
    layers: Vec<LayerPlan>,
    emb: usize,
    state: usize,
    logits: usize,
    losses: usize,
    dh: usize,
    demb: usize,
    scratch: usize,
    acts_len: usize,
    w_packed: usize,
    wt_packed: usize,
    gemm_scratch: usize,
    tied_grad: usize,
    packs_len: usize,
    /// A class head's buffers, in 4-byte values.
    class_len: usize,
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
        // The (first) softmax's width: V, or C for a class head.
        let outs = cfg.softmax.outputs(v);
        let cell = cfg.cell.imp();
        let gh = cell.gates() * h;
        let overflow = || {
            Error::invalid(
                "batch shape",
                format!("N={n}, T={t} with V={v}, D={d}, H={h}: the workspace's size overflows"),
            )
        };
        let mul = |a: usize, b: usize| a.checked_mul(b).ok_or_else(overflow);
        let add = |a: usize, b: usize| a.checked_add(b).ok_or_else(overflow);
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
        let bufs = cell.buffers(train);
        let nth = mul(nt, h)?;
        let (fwd, bwd) = cell.packed_lens(h);
        let mut start = 0;
        let mut layers = Vec::with_capacity(cfg.layers);
        for l in 0..cfg.layers {
            let dl = cfg.layer_input(l);
            let lp = LayerPlan {
                start,
                gates: mul(nth, bufs.gates)?,
                hs: nth,
                hprev: nth,
                aux: mul(nth, bufs.aux)?,
                row_aux: mul(mul(n, h)?, bufs.row_aux)?,
                wx_packed: packed(dl, gh)?,
                wh_packed: fwd,
                wxt_packed: when(train, packed(gh, dl)?),
                wht_packed: when(train, bwd),
            };
            for len in [lp.gates, lp.hs, lp.hprev, lp.aux, lp.row_aux] {
                start = add(start, len)?;
            }
            layers.push(lp);
        }
        // The weight gradients are products through gemm::matmul_packed, each with its
        // A = [activations | 1]^T built row-major at the front of the scratch; see
        // cells::add_outer.
        let gemm_scratch = if train {
            let mut most = add_outer_scratch(h + 1, outs, nt).ok_or_else(overflow)?;
            for l in 0..cfg.layers {
                for (k, cols) in cell.grad_products(cfg.layer_input(l), h) {
                    most = most.max(add_outer_scratch(k, cols, nt).ok_or_else(overflow)?);
                }
            }
            most
        } else {
            0
        };
        let mut plan = Self {
            cfg: *cfg,
            n,
            t,
            train,
            nt,
            layers,
            emb: mul(nt, d)?,
            state: mul(mul(bufs.states * cfg.layers, n)?, h)?,
            logits: mul(nt, outs)?,
            losses: nt,
            dh: when(train && !cell.in_place(), nth),
            demb: when(train, mul(nt, d)?),
            scratch: when(train, mul(mul(bufs.scratch, n)?, h)?),
            acts_len: 0,
            w_packed: packed(h, outs)?,
            wt_packed: when(train, packed(outs, h)?),
            gemm_scratch,
            tied_grad: when(train && cfg.tied && cfg.softmax.is_full(), mul(h + 1, v)?),
            class_len: ClassBufs::len(cfg, nt, train).ok_or_else(overflow)?,
            packs_len: 0,
        };
        for len in [
            plan.emb,
            plan.state,
            plan.logits,
            plan.losses,
            plan.dh,
            plan.demb,
            plan.scratch,
        ] {
            start = add(start, len)?;
        }
        plan.acts_len = start;
        let mut packs = 0;
        for lp in &plan.layers {
            for len in [lp.wx_packed, lp.wh_packed, lp.wxt_packed, lp.wht_packed] {
                packs = add(packs, len)?;
            }
        }
        for len in [
            plan.w_packed,
            plan.wt_packed,
            plan.gemm_scratch,
            plan.tied_grad,
        ] {
            packs = add(packs, len)?;
        }
        plan.packs_len = packs;
        Ok(plan)
    }

    /// Where a global buffer lives in `acts`.
    fn global(&self, which: Global) -> std::ops::Range<usize> {
        let mut start = self.layers.last().map_or(0, |l| {
            l.start + l.gates + l.hs + l.hprev + l.aux + l.row_aux
        });
        for (g, len) in [
            (Global::Emb, self.emb),
            (Global::State, self.state),
            (Global::Logits, self.logits),
            (Global::Losses, self.losses),
        ] {
            if g as usize == which as usize {
                return start..start + len;
            }
            start += len;
        }
        unreachable!()
    }

    /// Total bytes.
    fn bytes(&self) -> Result<usize> {
        (2 * self.nt)
            .checked_add(self.acts_len)
            .and_then(|x| x.checked_add(self.packs_len))
            .and_then(|x| x.checked_add(self.class_len))
            .and_then(|x| x.checked_mul(4))
            .ok_or_else(|| {
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
    use crate::model::config::Cell;

    #[test]
    fn bytes_for_is_what_new_allocates() {
        for &cell in Cell::ALL {
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
