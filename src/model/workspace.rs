//! Activation buffers sized once from `(N, T, V, D, H)`.

use super::config::Config;
use crate::error::{Error, Result};
use crate::gemm;
use crate::kernels::recurrent;
use crate::layers::rnn;

/// Every activation (and, for training, every activation gradient) of one batch shape, allocated
/// once. Row-major: `[N,T,D]` embeddings, `[N,T,H]` hidden states, `[N*T,V]` logits.
///
/// The workspace also holds the recurrent state `h` `[N,H]` that carries from batch to batch
/// (the book's stateful `TimeRNN`).
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
    /// Embedded inputs `[N,T,D]`.
    pub(crate) emb: Vec<f32>,
    /// Hidden states `h_t` `[N,T,H]`.
    pub(crate) hs: Vec<f32>,
    /// `h_{t-1}` for every step `[N,T,H]`: left operand of the recurrence and of `dWh`.
    pub(crate) hprev: Vec<f32>,
    /// Carried state `[N,H]`.
    pub(crate) state: Vec<f32>,
    /// Logits, then probabilities' gradient `[N*T,V]`.
    pub(crate) logits: Vec<f32>,
    /// Per-position losses `[N*T]`.
    pub(crate) losses: Vec<f32>,
    /// `Wh` packed for the recurrent kernel.
    pub(crate) wh_packed: Vec<f32>,
    /// `Wh^T` packed (training only).
    pub(crate) wht_packed: Vec<f32>,
    /// `Wx` packed `[D,H]`, refreshed every forward.
    pub(crate) wx_packed: Vec<f32>,
    /// `affine.W` packed `[H,V]`, refreshed every forward.
    pub(crate) w_packed: Vec<f32>,
    /// `affine.W^T` packed `[V,H]` in K blocks (training only).
    pub(crate) wt_packed: Vec<f32>,
    /// `Wx^T` packed `[H,D]` (training only).
    pub(crate) wxt_packed: Vec<f32>,
    /// `dL/dh`, then `dL/da` `[N,T,H]` (training only).
    pub(crate) dh: Vec<f32>,
    /// `dL/demb` `[N,T,D]` (training only).
    pub(crate) demb: Vec<f32>,
    /// Per-row scratch of the backward recurrence `[N,H]` (training only).
    pub(crate) scratch: Vec<f32>,
    /// Packing buffers of the large GEMMs (sized for the largest of the step's products).
    pub(crate) gemm_scratch: Vec<f32>,
    /// Whether `logits` holds the gradient of a training forward not yet consumed.
    pub(crate) ready_for_backward: bool,
}

impl Workspace {
    /// A workspace for batches of `n` rows of `t` steps. `train` adds the gradient buffers.
    ///
    /// # Errors
    /// If `n` or `t` is zero or the buffers would not fit in memory.
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
        cfg.validate()?;
        if n == 0 || t == 0 {
            return Err(Error::invalid(
                "batch shape",
                format!("batch size and time size must be at least 1 (got N={n}, T={t})"),
            ));
        }
        let (v, d, h) = (cfg.vocab_size, cfg.wordvec_size, cfg.hidden_size);
        let nt = n
            .checked_mul(t)
            .ok_or_else(|| Error::invalid("batch shape", "N*T overflows"))?;
        // The largest buffer is [N*T, max(V,D,H)]; refuse shapes whose size overflows.
        if nt.checked_mul(v.max(d).max(h)).is_none_or(|x| x >= 1 << 40) {
            return Err(Error::invalid(
                "batch shape",
                format!("N*T*V = {nt}*{v} values is too large"),
            ));
        }
        let g = |len: usize| if train { vec![0.0f32; len] } else { Vec::new() };
        // The weight gradients are two products through gemm::matmul_packed, each with its
        // A = [activations | 1]^T built row-major at the front of the scratch; see
        // model::simple::backward.
        let scratch = if train {
            [(h + 1, nt, v), (d + h + 1, nt, h)]
                .into_iter()
                .map(|(m, k, n)| m * k + gemm::scratch_len(m, k, n, true))
                .max()
                .unwrap_or(0)
        } else {
            0
        };
        Ok(Self {
            cfg,
            n,
            t,
            train,
            xs: vec![0; nt],
            ts: vec![0; nt],
            emb: vec![0.0; nt * d],
            hs: vec![0.0; nt * h],
            hprev: vec![0.0; nt * h],
            state: vec![0.0; n * h],
            logits: vec![0.0; nt * v],
            losses: vec![0.0; nt],
            wh_packed: vec![0.0; rnn::packed_len(h)],
            wht_packed: g(rnn::packed_len(h)),
            wx_packed: vec![0.0; recurrent::packed_len(d, h)],
            w_packed: vec![0.0; recurrent::packed_len(h, v)],
            wt_packed: g(recurrent::packed_len(v, h)),
            wxt_packed: g(recurrent::packed_len(h, d)),
            dh: g(nt * h),
            demb: g(nt * d),
            scratch: g(n * h),
            gemm_scratch: vec![0.0; scratch],
            ready_for_backward: false,
        })
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
    ///
    /// ```
    /// # use rand::SeedableRng;
    /// # use rnnlm::{model::simple::forward, Config, Params, Workspace};
    /// # let cfg = Config::new(10, 4, 6).unwrap();
    /// # let params = Params::init_book(cfg, &mut rand_chacha::ChaCha8Rng::seed_from_u64(1));
    /// use rnnlm::model::simple::backward;
    /// let mut ws = Workspace::new(cfg, 1, 2, false).unwrap();
    /// assert!(!ws.is_train());
    /// forward(&params, &mut ws, &[1, 2], &[2, 3]).unwrap();
    /// assert!(backward(&params, &mut ws, &mut Params::zeros(cfg)).is_err()); // no gradients here
    /// ```
    pub fn is_train(&self) -> bool {
        self.train
    }

    /// The hidden state `[N,H]` that the next batch starts from.
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
    ///
    /// ```
    /// # use rand::SeedableRng;
    /// # use rnnlm::{model::simple::forward, Config, Params, Workspace};
    /// # let cfg = Config::new(10, 4, 6).unwrap();
    /// # let params = Params::init_book(cfg, &mut rand_chacha::ChaCha8Rng::seed_from_u64(1));
    /// let mut ws = Workspace::new(cfg, 1, 3, false).unwrap();
    /// let (xs, ts) = ([1, 2, 3], [2, 3, 4]);
    /// let first = forward(&params, &mut ws, &xs, &ts).unwrap();
    /// let second = forward(&params, &mut ws, &xs, &ts).unwrap(); // from the carried state
    /// assert_ne!(second, first);
    /// ws.reset_state();
    /// assert_eq!(forward(&params, &mut ws, &xs, &ts).unwrap(), first); // starts from zero again
    /// ```
    pub fn reset_state(&mut self) {
        self.state.fill(0.0);
    }

    /// Sets the carried state (the book's `set_state`).
    ///
    /// # Errors
    /// If `h` is not `[N,H]`.
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
    pub fn set_state(&mut self, h: &[f32]) -> Result<()> {
        if h.len() != self.state.len() {
            return Err(Error::Shape {
                what: "state".into(),
                expected: vec![self.n, self.cfg.hidden_size],
                found: vec![h.len()],
            });
        }
        self.state.copy_from_slice(h);
        Ok(())
    }

    /// Logits (after a forward in evaluation mode) `[N*T,V]`.
    ///
    /// ```
    /// # use rand::SeedableRng;
    /// # use rnnlm::{model::simple::forward, Config, Params, Workspace};
    /// # let cfg = Config::new(10, 4, 6).unwrap();
    /// # let params = Params::init_book(cfg, &mut rand_chacha::ChaCha8Rng::seed_from_u64(1));
    /// let mut ws = Workspace::new(cfg, 1, 2, false).unwrap();
    /// forward(&params, &mut ws, &[1, 2], &[2, 3]).unwrap();
    /// assert_eq!(ws.logits().len(), 2 * 10); // [N*T, V]
    /// // Position 0's loss is the cross-entropy of its logits row (bias included) for target 2.
    /// let row = &ws.logits()[..10];
    /// let lse = row.iter().map(|&l| (l as f64).exp()).sum::<f64>().ln();
    /// assert!((lse - row[2] as f64 - ws.position_losses()[0] as f64).abs() < 1e-5);
    /// ```
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

    /// Hidden states `h_t` of the last forward, `[N,T,H]`.
    ///
    /// ```
    /// # use rand::SeedableRng;
    /// # use rnnlm::{model::simple::forward, Config, Params, Workspace};
    /// # let cfg = Config::new(10, 4, 6).unwrap();
    /// # let params = Params::init_book(cfg, &mut rand_chacha::ChaCha8Rng::seed_from_u64(1));
    /// let mut ws = Workspace::new(cfg, 2, 3, false).unwrap();
    /// forward(&params, &mut ws, &[1, 2, 3, 4, 5, 6], &[2, 3, 4, 5, 6, 7]).unwrap();
    /// assert_eq!(ws.hidden().len(), 2 * 3 * 6);
    /// assert!(ws.hidden().iter().all(|h| h.abs() < 1.0)); // tanh outputs
    /// ```
    pub fn hidden(&self) -> &[f32] {
        &self.hs
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
            + self.emb.len()
            + self.hs.len()
            + self.hprev.len()
            + self.state.len()
            + self.logits.len()
            + self.losses.len()
            + self.wh_packed.len()
            + self.wht_packed.len()
            + self.wx_packed.len()
            + self.w_packed.len()
            + self.wt_packed.len()
            + self.wxt_packed.len()
            + self.dh.len()
            + self.demb.len()
            + self.scratch.len()
            + self.gemm_scratch.len())
    }
}
