//! Output layers ("heads"): from the top layer's `h` to the loss, its gradient, exact
//! log-probabilities for scoring, and samples for generation.
//!
//! [`Head`] is the seam: training calls [`Head::forward_rows`] / [`Head::backward_rows`] per
//! block of rows and [`Head::weight_grads`] once per batch; inference calls
//! [`Head::log_probs`] and [`Head::sample`]. Today's one implementation is the full softmax
//! ([`full::FullSoftmax`]); tying works through it (its weight view is `embed.W` transposed).

pub(crate) mod full;

use crate::gemm::Par;

/// How a forward treats its rows.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Loss {
    /// Loss only.
    Eval,
    /// Loss and, in place of the logits, their gradient scaled by `scale` (`1/count`).
    Train { scale: f32 },
}

/// Sampling settings a head needs (the caller has checked them).
pub(crate) struct Draw<'a> {
    /// Softmax temperature, finite and > 0.
    pub temperature: f64,
    /// Keep the `k` most likely candidates.
    pub top_k: usize,
    /// `allowed[id]`: the id may be drawn.
    pub allowed: &'a [bool],
}

/// An output layer.
pub(crate) trait Head: Sync {
    /// Forward over a block of positions: `x [r,H]` in, `logits [r,·]` as scratch (the full
    /// softmax: its gradient on exit in training), per-position losses out (0 where masked).
    fn forward_rows(
        &self,
        x: &[f32],
        ts: &[i32],
        logits: &mut [f32],
        losses: &mut [f32],
        loss: Loss,
    );

    /// `dx [r,H] = dL/dx` for a block of positions, from what the training forward left in
    /// `logits`.
    fn backward_rows(&self, logits: &[f32], dx: &mut [f32]);

    /// Adds the head's weight gradients (`[dW; db]`, `[H+1, V]` for the full softmax) over all
    /// `nt` positions into `dw`.
    fn weight_grads(
        &self,
        x: &[f32],
        logits: &[f32],
        dw: &mut [f32],
        scratch: &mut [f32],
        par: Par,
    );

    /// `out[i] = ln p(targets[i] | hs[i])` for `hs [rows,H]`, exact and normalised; `scratch`
    /// holds [`Head::scratch_len`] floats.
    fn log_probs(&self, hs: &[f32], targets: &[u32], out: &mut [f32], scratch: &mut [f32]);

    /// Floats of scratch [`Head::log_probs`] needs for `rows` positions.
    fn scratch_len(&self, rows: usize) -> usize;

    /// Draws the next id after top-layer state `h [H]`, with `u` uniform in `[0, 1)`.
    fn sample(&self, h: &[f32], draw: &Draw<'_>, scratch: &mut SampleScratch, u: f64) -> u32;
}

/// Reusable buffers of [`Head::sample`].
#[derive(Default)]
pub(crate) struct SampleScratch {
    pub logits: Vec<f32>,
    pub cand: Vec<u32>,
    pub weights: Vec<f64>,
}
