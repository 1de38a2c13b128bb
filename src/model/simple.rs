//! `SimpleRnnlm`: `TimeEmbedding -> TimeRNN -> TimeAffine -> TimeSoftmaxWithLoss`.

use rand::SeedableRng;

use super::config::Config;
use super::params::Params;
use super::workspace::Workspace;
use crate::error::{Error, Result};
use crate::gemm::{matmul_packed, Accum, MatMut, MatRef};
use crate::layers::{affine, embedding, rnn, softmax_loss};

/// Forward pass over one batch; returns the mean cross-entropy over unmasked positions.
///
/// `xs [N,T]` are input ids, `ts [N,T]` target ids (`-1` masks a position). In a training
/// workspace the gradient of the loss w.r.t. the logits is computed in the same pass, ready
/// for [`backward`]. The carried state advances to the last hidden state.
///
/// # Errors
/// If a buffer has the wrong length, or an id is outside the vocabulary (nothing is changed).
pub fn forward(params: &Params, ws: &mut Workspace, xs: &[u32], ts: &[i32]) -> Result<f32> {
    check_batch(params, ws, xs, ts)?;
    ws.xs.copy_from_slice(xs);
    ws.ts.copy_from_slice(ts);
    Ok(forward_loaded(params, ws))
}

/// Forward over the ids already in `ws.xs` / `ws.ts` (validated by the caller).
fn forward_loaded(params: &Params, ws: &mut Workspace) -> f32 {
    let p = params.views();
    let Config {
        vocab_size: v,
        wordvec_size: d,
        hidden_size: h,
    } = ws.cfg;
    let (n, t) = (ws.n, ws.t);
    let nt = n * t;

    embedding::forward(&mut ws.emb, &ws.xs, p.embed_w, d);
    // Input projection for every step at once: hs = emb Wx   [N*T,D] x [D,H]
    matmul_packed(
        MatMut::new(&mut ws.hs, nt, h),
        MatRef::new(&ws.emb, nt, d),
        MatRef::new(p.wx, d, h),
        Accum::Replace,
        &mut ws.gemm_scratch,
    );
    rnn::pack_wh(&mut ws.wh_packed, p.wh, h);
    rnn::forward_time_loop(
        &mut ws.hs,
        &mut ws.hprev,
        &mut ws.state,
        &ws.wh_packed,
        p.b,
        (n, t, h),
    );
    // Output affine: logits = hs W   [N*T,H] x [H,V]; the bias is added in the softmax pass.
    matmul_packed(
        MatMut::new(&mut ws.logits, nt, v),
        MatRef::new(&ws.hs, nt, h),
        MatRef::new(p.affine_w, h, v),
        Accum::Replace,
        &mut ws.gemm_scratch,
    );
    if ws.train {
        ws.ready_for_backward = true;
        softmax_loss::forward_backward(&mut ws.logits, p.affine_b, &ws.ts, &mut ws.losses)
    } else {
        softmax_loss::forward(&mut ws.logits, p.affine_b, &ws.ts, &mut ws.losses)
    }
}

/// Backward pass of the last [`forward`]: overwrites every tensor of `grads` with the gradient
/// of the mean loss (the book's layers assign their grads; nothing needs zeroing first).
///
/// # Errors
/// If `ws` is not a training workspace, no training forward preceded, or `grads` has another
/// configuration.
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
    let p = params.views();
    let g = grads.views_mut();
    let Config {
        vocab_size: v,
        wordvec_size: d,
        hidden_size: h,
    } = ws.cfg;
    let (n, t) = (ws.n, ws.t);
    let nt = n * t;

    // Affine: dW = hs^T dY, db = colsum dY, dhs = dY W^T.
    matmul_packed(
        MatMut::new(g.affine_w, h, v),
        MatRef::new(&ws.hs, nt, h).t(),
        MatRef::new(&ws.logits, nt, v),
        Accum::Replace,
        &mut ws.gemm_scratch,
    );
    affine::bias_grad(g.affine_b, &ws.logits);
    matmul_packed(
        MatMut::new(&mut ws.dh, nt, h),
        MatRef::new(&ws.logits, nt, v),
        MatRef::new(p.affine_w, h, v).t(),
        Accum::Replace,
        &mut ws.gemm_scratch,
    );
    // Recurrence: dh -> dt (gradient of the pre-activation) in place.
    rnn::pack_wh_t(&mut ws.wht_packed, p.wh, h);
    rnn::backward_time_loop(
        &mut ws.dh,
        &ws.hs,
        &mut ws.scratch,
        &ws.wht_packed,
        (n, t, h),
    );
    // RNN weights over all N*T rows at once: db = colsum dt, dWx = emb^T dt, dWh = hprev^T dt.
    affine::bias_grad(g.b, &ws.dh);
    matmul_packed(
        MatMut::new(g.wx, d, h),
        MatRef::new(&ws.emb, nt, d).t(),
        MatRef::new(&ws.dh, nt, h),
        Accum::Replace,
        &mut ws.gemm_scratch,
    );
    matmul_packed(
        MatMut::new(g.wh, h, h),
        MatRef::new(&ws.hprev, nt, h).t(),
        MatRef::new(&ws.dh, nt, h),
        Accum::Replace,
        &mut ws.gemm_scratch,
    );
    // dx = dt Wx^T, then the embedding's scatter-add.
    matmul_packed(
        MatMut::new(&mut ws.demb, nt, d),
        MatRef::new(&ws.dh, nt, h),
        MatRef::new(p.wx, d, h).t(),
        Accum::Replace,
        &mut ws.gemm_scratch,
    );
    g.embed_w.fill(0.0);
    embedding::backward(g.embed_w, &ws.xs, &ws.demb, d);
    Ok(())
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
    pub fn new(cfg: Config, n: usize, t: usize, seed: u64) -> Result<Self> {
        cfg.validate()?;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        Self::from_params(Params::init_book(cfg, &mut rng), n, t)
    }

    /// A model around existing parameters (e.g. loaded from a checkpoint).
    ///
    /// # Errors
    /// If `n` or `t` is zero.
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
    pub fn forward(&mut self, xs: &[u32], ts: &[i32]) -> Result<f32> {
        forward(&self.params, &mut self.ws, xs, ts)
    }

    /// See [`backward`].
    ///
    /// # Errors
    /// If no forward preceded.
    pub fn backward(&mut self) -> Result<()> {
        backward(&self.params, &mut self.ws, &mut self.grads)
    }

    /// Zeroes the carried hidden state.
    pub fn reset_state(&mut self) {
        self.ws.reset_state();
    }

    /// Sets the carried hidden state `[N,H]`.
    ///
    /// # Errors
    /// If `h` has the wrong length.
    pub fn set_state(&mut self, h: &[f32]) -> Result<()> {
        self.ws.set_state(h)
    }

    /// The carried hidden state `[N,H]`.
    pub fn state(&self) -> &[f32] {
        self.ws.state()
    }

    /// The model's configuration.
    pub fn config(&self) -> &Config {
        self.params.config()
    }

    /// Parameters.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// Gradients of the last backward.
    pub fn grads(&self) -> &Params {
        &self.grads
    }

    /// Parameters (mutable) and gradients together, for an optimizer step.
    pub fn params_mut_and_grads(&mut self) -> (&mut Params, &Params) {
        (&mut self.params, &self.grads)
    }

    /// The workspace (activations of the last batch).
    pub fn workspace(&self) -> &Workspace {
        &self.ws
    }

    /// Consumes the model, returning its parameters.
    pub fn into_params(self) -> Params {
        self.params
    }
}
