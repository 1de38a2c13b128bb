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
    /// holds [`Head::scratch_len`] floats. A position whose logits are not finite gets NaN, one
    /// whose target has probability 0 gets -inf: see [`not_a_log_prob`].
    fn log_probs(&self, hs: &[f32], targets: &[u32], out: &mut [f32], scratch: &mut [f32]);

    /// Floats of scratch [`Head::log_probs`] needs for `rows` positions.
    fn scratch_len(&self, rows: usize) -> usize;

    /// Draws the next id after top-layer state `h [H]`, with `u` uniform in `[0, 1)`; `None`
    /// if the logits are not all finite (there is no distribution to draw from).
    fn sample(
        &self,
        h: &[f32],
        draw: &Draw<'_>,
        scratch: &mut SampleScratch,
        u: f64,
    ) -> Option<u32>;
}

/// What the model's logits say when they are not finite: the one wording that `score`,
/// `eval` and `generate` (and training's validation) all give.
pub(crate) const LOGITS_NOT_FINITE: &str =
    "the model's logits are not finite (inf or NaN): its weights overflow, so it gives no \
     probabilities";

/// Why a log-probability (or the negated loss) of [`Head::log_probs`] or of the training
/// forward is no number to report, or `None` if it is one.
///
/// The softmax kernels subtract the row's maximum logit, so an infinite or NaN logit anywhere
/// in the row makes the result NaN, while finite logits always give a finite log-sum-exp: NaN
/// means non-finite logits. -inf means the target's probability is 0 in f32 (its logit more
/// than ~3.4e38 below the largest). This check costs one comparison per position instead of a
/// pass over the `V` logits.
pub(crate) fn not_a_log_prob(lp: f32) -> Option<&'static str> {
    if lp.is_nan() {
        Some(LOGITS_NOT_FINITE)
    } else if lp == f32::NEG_INFINITY {
        Some("the model gives this word probability 0 (its log-probability is -inf in f32)")
    } else {
        None
    }
}

/// Reusable buffers of [`Head::sample`].
#[derive(Default)]
pub(crate) struct SampleScratch {
    pub logits: Vec<f32>,
    pub cand: Vec<u32>,
    pub weights: Vec<f64>,
}
