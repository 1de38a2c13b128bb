//! `SimpleRnnlm`: `TimeEmbedding -> TimeRNN -> TimeAffine -> TimeSoftmaxWithLoss`.

use rand::SeedableRng;

use super::config::Config;
use super::params::Params;
use super::workspace::Workspace;
use crate::error::{Error, Result};
use rayon::prelude::*;

use crate::gemm::{self, matmul_packed, Accum, MatMut, MatRef};
use crate::kernels::recurrent;
use crate::layers::{embedding, rnn, softmax_loss};
use crate::par::on_worker;

/// Forward pass over one batch; returns the mean cross-entropy over unmasked positions.
///
/// `xs [N,T]` are input ids, `ts [N,T]` target ids (`-1` masks a position). In a training
/// workspace the gradient of the loss w.r.t. the logits is computed in the same pass, ready
/// for [`backward`]. The carried state advances to the last hidden state.
///
/// # Errors
/// If a buffer has the wrong length, or an id is outside the vocabulary (nothing is changed).
///
/// ```
/// use rand::SeedableRng;
/// use rnnlm::{model::simple::forward, Config, Params, Workspace};
/// let cfg = Config::new(10, 4, 6).unwrap();
/// let params = Params::init_book(cfg, &mut rand_chacha::ChaCha8Rng::seed_from_u64(1));
/// let mut ws = Workspace::new(cfg, 1, 3, false).unwrap();
/// let loss = forward(&params, &mut ws, &[1, 2, 3], &[2, 3, -1]).unwrap(); // last target masked
/// assert!((loss - 10f32.ln()).abs() < 0.05); // near ln V at initialisation
/// let before = ws.clone();
/// assert!(forward(&params, &mut ws, &[1, 2, 10], &[2, 3, 4]).is_err()); // id 10 >= V
/// assert_eq!((ws.state(), ws.hidden()), (before.state(), before.hidden())); // untouched
/// ```
pub fn forward(params: &Params, ws: &mut Workspace, xs: &[u32], ts: &[i32]) -> Result<f32> {
    check_batch(params, ws, xs, ts)?;
    ws.xs.copy_from_slice(xs);
    ws.ts.copy_from_slice(ts);
    Ok(on_worker(|| forward_loaded(params, ws)))
}

/// Rows of logits computed and then softmaxed together (16 x V = 640 KB at V = 10,000: L2).
const SOFTMAX_FUSE_ROWS: usize = 16;

/// Largest packed `affine.W` for which the output layer goes row slice by row slice: each
/// slice re-reads all of it (from L3 while it fits there).
const SOFTMAX_FUSE_MAX_W_BYTES: usize = 8 << 20;

/// Multiply-adds per batch below which a pass runs as one block on the calling thread.
const PARALLEL_MIN_MACS: usize = 1_000_000;

/// Batch rows per parallel block: one block per thread once the batch is worth splitting.
/// Every row is computed by the same instruction sequence whatever block it is in, so the
/// split never changes a result.
fn rows_per_block(ws: &Workspace) -> usize {
    let Config {
        vocab_size: v,
        wordvec_size: d,
        hidden_size: h,
    } = ws.cfg;
    let macs = ws.n * ws.t * (d * h + h * h + h * v);
    let blocks = if macs < PARALLEL_MIN_MACS {
        1
    } else {
        rayon::current_num_threads()
    };
    ws.n.div_ceil(blocks).max(1)
}

/// Forward over the ids already in `ws.xs` / `ws.ts` (validated by the caller).
///
/// After packing the weights, the whole forward runs in one parallel region over blocks of
/// batch rows: a block's rows of every activation depend only on that block's inputs and its
/// carried state (gather, `x Wx`, the time loop, `h W`, softmax), so threads meet once.
fn forward_loaded(params: &Params, ws: &mut Workspace) -> f32 {
    let p = params.views();
    let Config {
        vocab_size: v,
        wordvec_size: d,
        hidden_size: h,
    } = ws.cfg;
    let (n, t) = (ws.n, ws.t);
    let rb = rows_per_block(ws);
    let tasks = n.div_ceil(rb);
    gemm::pack_rows(&mut ws.wx_packed, &MatRef::new(p.wx, d, h), 0, d, tasks);
    gemm::pack_rows(
        &mut ws.w_packed,
        &MatRef::new(p.affine_w, h, v),
        0,
        h,
        tasks,
    );
    rnn::pack_wh(&mut ws.wh_packed, p.wh, h);

    let count = softmax_loss::count(&ws.ts);
    let scale = if count == 0 { 0.0 } else { 1.0 / count as f32 };
    let train = ws.train;
    let Workspace {
        xs,
        ts,
        emb,
        hs,
        hprev,
        state,
        logits,
        losses,
        wh_packed,
        wx_packed,
        w_packed,
        ..
    } = ws;
    let (wh_packed, wx_packed, w_packed) = (&*wh_packed, &*wx_packed, &*w_packed);
    emb.par_chunks_mut(rb * t * d)
        .zip(hs.par_chunks_mut(rb * t * h))
        .zip(hprev.par_chunks_mut(rb * t * h))
        .zip(state.par_chunks_mut(rb * h))
        .zip(logits.par_chunks_mut(rb * t * v))
        .zip(losses.par_chunks_mut(rb * t))
        .zip(xs.par_chunks(rb * t).zip(ts.par_chunks(rb * t)))
        .for_each(
            |((((((emb, hs), hprev), state), logits), losses), (xs, ts))| {
                let m = state.len() / h;
                let r = m * t;
                embedding::forward(emb, xs, p.embed_w, d);
                // Input projection for every step of the block: hs = emb Wx   [r,D] x [D,H]
                recurrent::gemm_packed(r, d, h, emb, d, wx_packed, hs, h, false);
                rnn::forward_rows(hs, hprev, state, wh_packed, p.b, (m, t, h));
                // Output affine, logits = hs W   [r,H] x [H,V], then the softmax pass (which adds
                // the bias), a few rows at a time: each slice of logits is still in L2 when
                // the softmax reads and rewrites it, so it crosses the memory bus once instead
                // of three times. Worth it while packed W stays cheap to re-read from L3.
                let sub = if h * v * 4 <= SOFTMAX_FUSE_MAX_W_BYTES {
                    SOFTMAX_FUSE_ROWS
                } else {
                    r
                };
                for r0 in (0..r).step_by(sub.max(1)) {
                    let rows = sub.min(r - r0);
                    let l = &mut logits[r0 * v..(r0 + rows) * v];
                    let (ts, losses) = (&ts[r0..r0 + rows], &mut losses[r0..r0 + rows]);
                    recurrent::gemm_packed(rows, h, v, &hs[r0 * h..], h, w_packed, l, v, false);
                    if train {
                        softmax_loss::rows_forward_backward(l, p.affine_b, ts, losses, scale);
                    } else {
                        softmax_loss::rows_forward(l, p.affine_b, ts, losses);
                    }
                }
            },
        );
    ws.ready_for_backward = train;
    softmax_loss::mean(&ws.losses, count)
}

/// Backward pass of the last [`forward`]: overwrites every tensor of `grads` with the gradient
/// of the mean loss (the book's layers assign their grads; nothing needs zeroing first).
///
/// The per-row part (`dhs = dY W^T`, the reverse time loop, `demb = dt Wx^T`) runs in one
/// parallel region over blocks of batch rows; the weight gradients, which sum over all N*T
/// rows, are then two large GEMMs (biases included) with a fixed summation order.
///
/// # Errors
/// If `ws` is not a training workspace, no training forward preceded, or `grads` has another
/// configuration.
///
/// ```
/// use rand::SeedableRng;
/// use rnnlm::{model::simple::{backward, forward}, Config, Params, Workspace};
/// let cfg = Config::new(10, 4, 6).unwrap();
/// let params = Params::init_book(cfg, &mut rand_chacha::ChaCha8Rng::seed_from_u64(1));
/// let (xs, ts) = ([1, 2, 3], [2, 3, 4]);
/// let mut ws = Workspace::new(cfg, 1, 3, true).unwrap();
/// let loss = forward(&params, &mut ws, &xs, &ts).unwrap();
/// let mut grads = Params::zeros(cfg);
/// backward(&params, &mut ws, &mut grads).unwrap();
/// // The gradient of affine.b[0] against a finite difference of the loss:
/// let mut moved = params.clone();
/// moved.views_mut().affine_b[0] += 1e-2;
/// let mut fresh = Workspace::new(cfg, 1, 3, false).unwrap(); // from the zero state again
/// let moved_loss = forward(&moved, &mut fresh, &xs, &ts).unwrap();
/// assert!(((moved_loss - loss) / 1e-2 - grads.views().affine_b[0]).abs() < 1e-3);
/// assert!(backward(&params, &mut ws, &mut grads).is_err()); // one backward per forward
/// ```
pub fn backward(params: &Params, ws: &mut Workspace, grads: &mut Params) -> Result<()> {
    if !ws.train || !ws.ready_for_backward {
        return Err(Error::invalid(
            "backward",
            "needs a training workspace and a forward pass first",
        ));
    }
    if grads.config() != params.config() || params.config() != &ws.cfg {
        return Err(Error::invalid(
            "backward",
            "parameters, gradients and workspace have different configurations",
        ));
    }
    ws.ready_for_backward = false;
    on_worker(|| backward_checked(params, ws, grads));
    Ok(())
}

/// [`backward`] after its checks.
fn backward_checked(params: &Params, ws: &mut Workspace, grads: &mut Params) {
    let p = params.views();
    let Config {
        vocab_size: v,
        wordvec_size: d,
        hidden_size: h,
    } = ws.cfg;
    let (n, t) = (ws.n, ws.t);
    let nt = n * t;
    let rb = rows_per_block(ws);
    let tasks = n.div_ceil(rb);

    // W^T in K blocks over V, so each block's panels stay in cache during dY W^T.
    let wt = MatRef::new(p.affine_w, h, v).t();
    let mut off = 0;
    for (k0, kc) in gemm::k_blocks(v) {
        gemm::pack_rows(&mut ws.wt_packed[off..], &wt, k0, kc, tasks);
        off += recurrent::packed_len(kc, h);
    }
    gemm::pack_rows(
        &mut ws.wxt_packed,
        &MatRef::new(p.wx, d, h).t(),
        0,
        h,
        tasks,
    );
    rnn::pack_wh_t(&mut ws.wht_packed, p.wh, h);

    let Workspace {
        hs,
        logits,
        dh,
        demb,
        scratch,
        wt_packed,
        wxt_packed,
        wht_packed,
        ..
    } = &mut *ws;
    let (wt_packed, wxt_packed, wht_packed) = (&*wt_packed, &*wxt_packed, &*wht_packed);
    logits
        .par_chunks(rb * t * v)
        .zip(dh.par_chunks_mut(rb * t * h))
        .zip(hs.par_chunks(rb * t * h))
        .zip(scratch.par_chunks_mut(rb * h))
        .zip(demb.par_chunks_mut(rb * t * d))
        .for_each(|((((dy, dh), hs), scratch), demb)| {
            let m = scratch.len() / h;
            let r = m * t;
            // dhs = dY W^T   [r,V] x [V,H], accumulated over the K blocks of V.
            let mut off = 0;
            for (blk, (k0, kc)) in gemm::k_blocks(v).enumerate() {
                let packed = &wt_packed[off..off + recurrent::packed_len(kc, h)];
                recurrent::gemm_packed(r, kc, h, &dy[k0..], v, packed, dh, h, blk > 0);
                off += packed.len();
            }
            // The recurrence: dh -> dt (gradient of the pre-activation) in place.
            rnn::backward_rows(dh, hs, scratch, wht_packed, (m, t, h));
            // demb = dt Wx^T   [r,H] x [H,D]
            recurrent::gemm_packed(r, h, d, dh, h, wxt_packed, demb, d, false);
        });

    // Weight gradients, sums over all N*T rows. The biases ride along as a row of ones in A:
    // [dW; db] = [hs | 1]^T dY, and [dWx; dWh; db] = [emb | hprev | 1]^T dt, each one product
    // writing straight into the adjacent tensors of the flat gradient buffer.
    let (a, rest) = ws.gemm_scratch.split_at_mut((h + 1) * nt);
    gemm::copy_rows(a, &MatRef::new(&ws.hs, nt, h).t(), tasks);
    a[h * nt..].fill(1.0);
    matmul_packed(
        MatMut::new(grads.affine_rows_mut(), h + 1, v),
        MatRef::new(a, h + 1, nt),
        MatRef::new(&ws.logits, nt, v),
        Accum::Replace,
        rest,
    );
    let (a, rest) = ws.gemm_scratch.split_at_mut((d + h + 1) * nt);
    gemm::copy_rows(a, &MatRef::new(&ws.emb, nt, d).t(), tasks);
    gemm::copy_rows(&mut a[d * nt..], &MatRef::new(&ws.hprev, nt, h).t(), tasks);
    a[(d + h) * nt..].fill(1.0);
    matmul_packed(
        MatMut::new(grads.rnn_rows_mut(), d + h + 1, h),
        MatRef::new(a, d + h + 1, nt),
        MatRef::new(&ws.dh, nt, h),
        Accum::Replace,
        rest,
    );
    let g = grads.views_mut();
    g.embed_w.fill(0.0);
    embedding::backward(g.embed_w, &ws.xs, &ws.demb, d);
}

/// Checks shapes and id ranges before anything is written.
fn check_batch(params: &Params, ws: &Workspace, xs: &[u32], ts: &[i32]) -> Result<()> {
    if params.config() != &ws.cfg {
        return Err(Error::invalid(
            "forward",
            "parameters and workspace have different configurations",
        ));
    }
    for (what, len) in [("xs", xs.len()), ("ts", ts.len())] {
        if len != ws.n * ws.t {
            return Err(Error::Shape {
                what: what.into(),
                expected: vec![ws.n, ws.t],
                found: vec![len],
            });
        }
    }
    let v = ws.cfg.vocab_size;
    if let Some(&bad) = xs.iter().find(|&&x| x as usize >= v) {
        return Err(Error::invalid(
            "input id",
            format!("{bad} is outside the vocabulary (size {v})"),
        ));
    }
    if let Some(&bad) = ts
        .iter()
        .find(|&&x| x != softmax_loss::IGNORE && (x < 0 || x as usize >= v))
    {
        return Err(Error::invalid(
            "target id",
            format!("{bad} is outside the vocabulary (size {v}) and is not the ignore label -1"),
        ));
    }
    Ok(())
}

/// The book's `SimpleRnnlm` as one stateful object: parameters, their gradients and a
/// training workspace for one batch shape, with `forward` / `backward` / `reset_state` /
/// `set_state` as in the book.
///
/// ```
/// use rnnlm::{Config, SimpleRnnlm, Sgd};
/// let cfg = Config::new(20, 8, 8).unwrap();
/// let mut model = SimpleRnnlm::new(cfg, 2, 3, 42).unwrap();
/// let xs = [1, 2, 3, 4, 5, 6];
/// let ts = [2, 3, 4, 5, 6, 7];
/// let loss = model.forward(&xs, &ts).unwrap();
/// assert!((loss - (20f32).ln()).abs() < 0.1); // near ln V at initialisation
/// model.backward().unwrap();
/// Sgd::new(0.1).update(model.params_mut_and_grads());
/// ```
#[derive(Clone, Debug)]
pub struct SimpleRnnlm {
    params: Params,
    grads: Params,
    ws: Workspace,
}

impl SimpleRnnlm {
    /// A model with the book's initialisation drawn from `seed` (ChaCha8), for batches of
    /// `n` rows and `t` steps.
    ///
    /// # Errors
    /// If a size is zero.
    ///
    /// ```
    /// # use rnnlm::{Config, SimpleRnnlm};
    /// # let cfg = Config::new(10, 4, 6).unwrap();
    /// let a = SimpleRnnlm::new(cfg, 2, 3, 7).unwrap();
    /// assert_eq!(a.params(), SimpleRnnlm::new(cfg, 1, 1, 7).unwrap().params()); // the seed decides
    /// assert_ne!(a.params(), SimpleRnnlm::new(cfg, 2, 3, 8).unwrap().params());
    /// assert!(SimpleRnnlm::new(cfg, 0, 3, 7).is_err());
    /// ```
    pub fn new(cfg: Config, n: usize, t: usize, seed: u64) -> Result<Self> {
        cfg.validate()?;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        Self::from_params(Params::init_book(cfg, &mut rng), n, t)
    }

    /// A model around existing parameters (e.g. loaded from a checkpoint).
    ///
    /// # Errors
    /// If `n` or `t` is zero.
    ///
    /// ```
    /// use rand::SeedableRng;
    /// # use rnnlm::{Config, SimpleRnnlm};
    /// # let cfg = Config::new(10, 4, 6).unwrap();
    /// let params = rnnlm::Params::init_book(cfg, &mut rand_chacha::ChaCha8Rng::seed_from_u64(7));
    /// let model = SimpleRnnlm::from_params(params.clone(), 2, 3).unwrap();
    /// assert_eq!(model.params(), &params);
    /// assert_eq!(model.params(), SimpleRnnlm::new(cfg, 2, 3, 7).unwrap().params()); // same draw
    /// assert!(SimpleRnnlm::from_params(params, 2, 0).is_err());
    /// ```
    pub fn from_params(params: Params, n: usize, t: usize) -> Result<Self> {
        let cfg = *params.config();
        Ok(Self {
            grads: Params::zeros(cfg),
            ws: Workspace::new(cfg, n, t, true)?,
            params,
        })
    }

    /// See [`forward`].
    ///
    /// # Errors
    /// If `xs`/`ts` are not `[N,T]` or hold ids outside the vocabulary.
    ///
    /// ```
    /// # use rnnlm::{Config, SimpleRnnlm};
    /// # let cfg = Config::new(10, 4, 6).unwrap();
    /// let mut model = SimpleRnnlm::new(cfg, 1, 3, 7).unwrap();
    /// let loss = model.forward(&[1, 2, 3], &[2, 3, 4]).unwrap();
    /// assert!((loss - 10f32.ln()).abs() < 0.1);
    /// assert!(model.forward(&[1, 2], &[2, 3]).is_err()); // not [N, T] = [1, 3]
    /// assert!(model.forward(&[1, 2, 3], &[2, 3, 10]).is_err()); // target outside V = 10
    /// ```
    pub fn forward(&mut self, xs: &[u32], ts: &[i32]) -> Result<f32> {
        forward(&self.params, &mut self.ws, xs, ts)
    }

    /// See [`backward`].
    ///
    /// # Errors
    /// If no forward preceded.
    ///
    /// ```
    /// # use rnnlm::{Config, SimpleRnnlm};
    /// # let cfg = Config::new(10, 4, 6).unwrap();
    /// let mut model = SimpleRnnlm::new(cfg, 1, 3, 7).unwrap();
    /// assert!(model.backward().is_err()); // no forward yet
    /// model.forward(&[1, 2, 3], &[2, 3, 4]).unwrap();
    /// model.backward().unwrap();
    /// assert!(model.grads().as_slice().iter().any(|&g| g != 0.0));
    /// assert!(model.backward().is_err()); // each backward needs its own forward
    /// ```
    pub fn backward(&mut self) -> Result<()> {
        backward(&self.params, &mut self.ws, &mut self.grads)
    }

    /// Zeroes the carried hidden state.
    ///
    /// ```
    /// # use rnnlm::{Config, SimpleRnnlm};
    /// # let cfg = Config::new(10, 4, 6).unwrap();
    /// let mut model = SimpleRnnlm::new(cfg, 1, 3, 7).unwrap();
    /// let (xs, ts) = ([1, 2, 3], [2, 3, 4]);
    /// let first = model.forward(&xs, &ts).unwrap();
    /// assert_ne!(model.forward(&xs, &ts).unwrap(), first); // carried state: a different loss
    /// model.reset_state();
    /// assert_eq!(model.state(), [0.0; 6]);
    /// assert_eq!(model.forward(&xs, &ts).unwrap(), first);
    /// ```
    pub fn reset_state(&mut self) {
        self.ws.reset_state();
    }

    /// Sets the carried hidden state `[N,H]`.
    ///
    /// # Errors
    /// If `h` has the wrong length.
    ///
    /// ```
    /// # use rnnlm::{Config, SimpleRnnlm};
    /// # let cfg = Config::new(10, 4, 6).unwrap();
    /// let mut model = SimpleRnnlm::new(cfg, 1, 3, 7).unwrap();
    /// let (xs, ts) = ([1, 2, 3], [2, 3, 4]);
    /// model.forward(&xs, &ts).unwrap();
    /// let saved = model.state().to_vec();
    /// let next = model.forward(&xs, &ts).unwrap();
    /// model.set_state(&saved).unwrap(); // rewind one batch
    /// assert_eq!(model.forward(&xs, &ts).unwrap(), next);
    /// assert!(model.set_state(&[0.0; 3]).is_err()); // not [N, H] = [1, 6]
    /// ```
    pub fn set_state(&mut self, h: &[f32]) -> Result<()> {
        self.ws.set_state(h)
    }

    /// The carried hidden state `[N,H]`.
    ///
    /// ```
    /// # use rnnlm::{Config, SimpleRnnlm};
    /// # let cfg = Config::new(10, 4, 6).unwrap();
    /// let mut model = SimpleRnnlm::new(cfg, 2, 3, 7).unwrap();
    /// assert_eq!(model.state(), [0.0; 2 * 6]); // [N, H], zero at the start
    /// model.forward(&[1, 2, 3, 4, 5, 6], &[2, 3, 4, 5, 6, 7]).unwrap();
    /// assert!(model.state().iter().all(|h| h.abs() < 1.0) && model.state()[0] != 0.0);
    /// ```
    pub fn state(&self) -> &[f32] {
        self.ws.state()
    }

    /// The model's configuration.
    ///
    /// ```
    /// # use rnnlm::{Config, SimpleRnnlm};
    /// # let cfg = Config::new(10, 4, 6).unwrap();
    /// let model = SimpleRnnlm::new(cfg, 2, 3, 7).unwrap();
    /// assert_eq!(model.config(), &cfg);
    /// ```
    pub fn config(&self) -> &Config {
        self.params.config()
    }

    /// Parameters.
    ///
    /// ```
    /// use rand::SeedableRng;
    /// # use rnnlm::{Config, SimpleRnnlm};
    /// # let cfg = Config::new(10, 4, 6).unwrap();
    /// let model = SimpleRnnlm::new(cfg, 2, 3, 7).unwrap();
    /// let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    /// assert_eq!(model.params(), &rnnlm::Params::init_book(cfg, &mut rng));
    /// ```
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// Gradients of the last backward.
    ///
    /// ```
    /// # use rnnlm::{Config, SimpleRnnlm};
    /// # let cfg = Config::new(10, 4, 6).unwrap();
    /// let mut model = SimpleRnnlm::new(cfg, 1, 3, 7).unwrap();
    /// assert_eq!(model.grads(), &rnnlm::Params::zeros(cfg)); // nothing computed yet
    /// model.forward(&[1, 2, 3], &[2, 3, 4]).unwrap();
    /// model.backward().unwrap();
    /// // dL/d(affine.b) is a mean of (softmax - one-hot) rows, which sum to zero.
    /// let sum: f32 = model.grads().views().affine_b.iter().sum();
    /// assert!(sum.abs() < 1e-6);
    /// ```
    pub fn grads(&self) -> &Params {
        &self.grads
    }

    /// Gradients of the last backward, mutable (for clipping).
    ///
    /// ```
    /// # use rnnlm::{Config, SimpleRnnlm};
    /// # let cfg = Config::new(10, 4, 6).unwrap();
    /// let mut model = SimpleRnnlm::new(cfg, 1, 3, 7).unwrap();
    /// model.forward(&[1, 2, 3], &[2, 3, 4]).unwrap();
    /// model.backward().unwrap();
    /// let norm = rnnlm::optim::ClipGrads::new().clip(model.grads_mut().as_mut_slice(), 1e-3);
    /// let clipped: f32 = model.grads().as_slice().iter().map(|g| g * g).sum::<f32>().sqrt();
    /// assert!(norm > 1e-3 && (clipped - 1e-3).abs() < 1e-6);
    /// ```
    pub fn grads_mut(&mut self) -> &mut Params {
        &mut self.grads
    }

    /// Parameters (mutable) and gradients together, for an optimizer step.
    ///
    /// ```
    /// # use rnnlm::{Config, SimpleRnnlm};
    /// # let cfg = Config::new(10, 4, 6).unwrap();
    /// let mut model = SimpleRnnlm::new(cfg, 1, 3, 7).unwrap();
    /// model.forward(&[1, 2, 3], &[2, 3, 4]).unwrap();
    /// model.backward().unwrap();
    /// let (before, g) = (model.params().clone(), model.grads().clone());
    /// rnnlm::Sgd::new(0.5).update(model.params_mut_and_grads());
    /// let after = model.params().as_slice();
    /// assert!((0..after.len()).all(|i| after[i] == before.as_slice()[i] - 0.5 * g.as_slice()[i]));
    /// ```
    pub fn params_mut_and_grads(&mut self) -> (&mut Params, &Params) {
        (&mut self.params, &self.grads)
    }

    /// The workspace (activations of the last batch).
    ///
    /// ```
    /// # use rnnlm::{Config, SimpleRnnlm};
    /// # let cfg = Config::new(10, 4, 6).unwrap();
    /// let mut model = SimpleRnnlm::new(cfg, 2, 3, 7).unwrap();
    /// let loss = model.forward(&[1, 2, 3, 4, 5, 6], &[2, 3, 4, 5, 6, 7]).unwrap();
    /// let ws = model.workspace();
    /// assert!(ws.is_train() && (ws.batch_size(), ws.time_size()) == (2, 3));
    /// let mean = ws.position_losses().iter().map(|&l| l as f64).sum::<f64>() / 6.0;
    /// assert_eq!(loss, mean as f32);
    /// ```
    pub fn workspace(&self) -> &Workspace {
        &self.ws
    }

    /// Consumes the model, returning its parameters.
    ///
    /// ```
    /// # use rnnlm::{Config, SimpleRnnlm};
    /// # let cfg = Config::new(10, 4, 6).unwrap();
    /// let model = SimpleRnnlm::new(cfg, 2, 3, 7).unwrap(); // ... trained ...
    /// let kept = model.params().clone();
    /// let vocab = rnnlm::Vocab::from_words((0..10).map(|i| format!("w{i}")).collect()).unwrap();
    /// let lm = rnnlm::Rnnlm::new(model.into_params(), vocab).unwrap(); // hand over for inference
    /// assert_eq!(lm.params(), &kept);
    /// ```
    pub fn into_params(self) -> Params {
        self.params
    }
}
