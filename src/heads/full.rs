//! The full softmax over the vocabulary, fused with the output affine: `logits = x W + b`,
//! then the max-subtracted softmax and the cross-entropy of the target (the book's
//! `TimeAffine -> TimeSoftmaxWithLoss`). A training forward writes the gradient
//! `(softmax - onehot) / count` over the logits in place. `W [H,V]` is `affine.W`, or
//! `embed.W` transposed when tied.

use super::{sample_logits, Draw, Head, Loss, SampleScratch, Scratch};
use crate::cells::add_outer;
use crate::gemm::{self, Accum, MatMut, MatRef, Packed, Par};
use crate::kernels::softmax;
use crate::layers::softmax_loss;

/// Rows of logits computed and then softmaxed together (16 x V = 640 KB at V = 10,000: L2).
const FUSE_ROWS: usize = 16;

/// The logits a scoring slice keeps in L2 while `W` is small ([`FUSE_ROWS`] rows at V =
/// 10,000, more for a narrower head, up to [`FUSE_ROWS_MAX`]).
const FUSE_BYTES: usize = 640 << 10;

/// Most rows of a scoring slice over a small `W`: an adaptive head's 2,003 outputs take 64
/// (+8% scoring at V = 100k on an Intel Xeon: `W` is re-read a quarter as often, and the
/// kernel runs 12-row blocks instead of 8).
const FUSE_ROWS_MAX: usize = 64;

/// Largest packed output matrix for which the output layer goes row slice by row slice: each
/// slice re-reads all of it (from L3 while it fits there).
const FUSE_MAX_W_BYTES: usize = 8 << 20;

/// Most logits one slice of [`FullSoftmax::log_probs_into`] holds when `W` is too large to
/// re-read per [`FUSE_ROWS`] rows: each slice streams `W` once from memory, so at V = 100k (a
/// 100 MB `W`) slices of 16 rows moved 6.4 MB a position and made scoring memory-bound.
const SLICE_MAX_BYTES: usize = 48 << 20;

/// The full softmax head over packed weights.
#[derive(Clone, Copy)]
pub(crate) struct FullSoftmax<'a> {
    /// `W [H,V]` packed.
    pub w: Packed<'a>,
    /// `W^T [V,H]` packed in K blocks of [`FullSoftmax::wt_blocks`] (training), else empty.
    pub wt: &'a [f32],
    /// Width of the K blocks of `wt` (the output strips' width on the strip path).
    pub wt_block: usize,
    /// `affine.b [V]`.
    pub bias: &'a [f32],
    pub h: usize,
    pub v: usize,
}

impl<'a> FullSoftmax<'a> {
    /// The K blocks `(k0, kc)` over `V` that `wt` is packed in.
    pub(crate) fn wt_blocks(v: usize, block: usize) -> impl Iterator<Item = (usize, usize)> {
        gemm::balanced_blocks(v, block)
    }

    /// Packs `W^T` (the transpose of the `[H,V]` view `w`) in K blocks of `block` rows.
    pub(crate) fn pack_wt(out: &mut [f32], w: &MatRef<'_>, block: usize, par: Par) {
        let (h, v) = (w.rows(), w.cols());
        let wt = w.t();
        let mut off = 0;
        for (k0, kc) in Self::wt_blocks(v, block) {
            gemm::pack_rows(&mut out[off..], &wt, k0, kc, par);
            off += gemm::packed_len(kc, h);
        }
    }

    /// `logits [rows, V] = hs W + b` for `hs [rows, H]` (the training forward adds the bias in
    /// its softmax pass, in the same order).
    pub(crate) fn logits(&self, hs: &[f32], rows: usize, out: &mut [f32]) {
        let (h, v) = (self.h, self.v);
        gemm::gemm_packed(
            MatMut::new(&mut out[..rows * v], rows, v),
            MatRef::new(&hs[..rows * h], rows, h),
            self.w,
            Accum::Replace,
        );
        for row in out[..rows * v].chunks_exact_mut(v) {
            for (l, &b) in row.iter_mut().zip(self.bias) {
                *l += b;
            }
        }
    }
}

impl FullSoftmax<'_> {
    /// Forward over a block of positions: `x [r,H]` in, `logits [r,V]` as scratch (in training
    /// the gradient on exit), per-position losses out (0 where masked).
    pub(crate) fn forward_rows(
        &self,
        x: &[f32],
        ts: &[i32],
        logits: &mut [f32],
        losses: &mut [f32],
        loss: Loss,
    ) {
        let (h, v) = (self.h, self.v);
        let r = ts.len();
        // Logits = x W [r,H] x [H,V], then the softmax pass (which adds the bias), a few rows
        // at a time: each slice of logits is still in L2 when the softmax reads and rewrites
        // it, so it crosses the memory bus once instead of three times. Worth it while packed
        // W stays cheap to re-read from L3.
        let sub = if h * v * 4 <= FUSE_MAX_W_BYTES {
            FUSE_ROWS
        } else {
            r
        };
        for s0 in (0..r).step_by(sub.max(1)) {
            let rows = sub.min(r - s0);
            let l = &mut logits[s0 * v..(s0 + rows) * v];
            let (ts, losses) = (&ts[s0..s0 + rows], &mut losses[s0..s0 + rows]);
            gemm::gemm_packed(
                MatMut::new(l, rows, v),
                MatRef::new(&x[s0 * h..(s0 + rows) * h], rows, h),
                self.w,
                Accum::Replace,
            );
            match loss {
                Loss::Train { scale } => {
                    softmax_loss::rows_forward_backward(l, self.bias, ts, losses, scale)
                }
                Loss::Eval => softmax_loss::rows_forward(l, self.bias, ts, losses),
            }
        }
    }

    /// `dx [r,H] = dL/dx` for a block of positions, from what the training forward left in
    /// `logits` (`dY`).
    pub(crate) fn backward_rows(&self, dy: &[f32], dx: &mut [f32]) {
        // dx = dY W^T   [r,V] x [V,H], accumulated over the K blocks of V.
        let (h, v) = (self.h, self.v);
        let r = dx.len() / h;
        let mut off = 0;
        for (kb, (k0, kc)) in Self::wt_blocks(v, self.wt_block).enumerate() {
            let len = gemm::packed_len(kc, h);
            let accum = if kb > 0 { Accum::Add } else { Accum::Replace };
            gemm::gemm_packed(
                MatMut::new(dx, r, h),
                MatRef::strided(&dy[k0..], r, kc, v, 1),
                Packed::new(&self.wt[off..off + len], kc, h),
                accum,
            );
            off += len;
        }
    }

    /// Adds `[dW; db]` (`[H+1, V]`; `dW [H,V]` alone without `bias`) over all `nt`
    /// positions into `dw`.
    pub(crate) fn weight_grads(
        &self,
        x: &[f32],
        dy: &[f32],
        dw: &mut [f32],
        bias: bool,
        scratch: &mut [f32],
        par: Par,
    ) {
        // [dW; db] += [x | 1]^T dY
        let (h, v) = (self.h, self.v);
        let nt = x.len() / h;
        let c = MatMut::new(dw, h + bias as usize, v);
        add_outer(c, &[(x, h)], bias, MatRef::new(dy, nt, v), scratch, par);
    }

    /// `out[i] = ln p(targets[i] | hs[i])` with `scratch` of [`FullSoftmax::scratch_len`].
    pub(crate) fn log_probs_into(
        &self,
        hs: &[f32],
        targets: &[u32],
        out: &mut [f32],
        scratch: &mut [f32],
    ) {
        // Slices of positions (see slice_rows): for a small W their logits stay in L2 between
        // the product and the cross-entropies; for a large one, W is streamed once a slice.
        let (h, v) = (self.h, self.v);
        let slice = self.slice_rows();
        for (k, chunk) in targets.chunks(slice).enumerate() {
            let (p0, rows) = (k * slice, chunk.len());
            self.logits(&hs[p0 * h..(p0 + rows) * h], rows, scratch);
            for (r, &target) in chunk.iter().enumerate() {
                out[p0 + r] = -softmax::xent_row(&scratch[r * v..(r + 1) * v], target as usize);
            }
        }
    }

    /// Floats of scratch [`FullSoftmax::log_probs_into`] needs for `rows` positions.
    pub(crate) fn scratch_len(&self, rows: usize) -> usize {
        rows.min(self.slice_rows()) * self.v
    }

    /// Positions per slice of [`FullSoftmax::log_probs_into`]: while `W` is cheap to re-read
    /// (L3), as many as [`FUSE_BYTES`] of logits hold (at least [`FUSE_ROWS`], at most
    /// [`FUSE_ROWS_MAX`]), else as many as [`SLICE_MAX_BYTES`] of logits hold. The logits
    /// and the cross-entropies are the same bits either way (each logit is one dot product in
    /// the kernel's order, each row's softmax one pass).
    fn slice_rows(&self) -> usize {
        if self.h * self.v * 4 <= FUSE_MAX_W_BYTES {
            return (FUSE_BYTES / (4 * self.v.max(1))).clamp(FUSE_ROWS, FUSE_ROWS_MAX);
        }
        (SLICE_MAX_BYTES / (4 * self.v)).max(FUSE_ROWS)
    }
}

impl Head for FullSoftmax<'_> {
    fn log_probs(&self, hs: &[f32], targets: &[u32], out: &mut [f32], scratch: &mut Scratch) {
        let need = self.scratch_len(targets.len());
        if scratch.f.len() < need {
            scratch.f.resize(need, 0.0);
        }
        self.log_probs_into(hs, targets, out, &mut scratch.f);
    }

    fn log_prob_rows(&self, hs: &[f32], rows: usize, out: &mut [f32], _: &mut Scratch) {
        self.logits(hs, rows, out);
    }

    fn sample(&self, hv: &[f32], draw: &Draw<'_>, s: &mut SampleScratch, u: f64) -> Option<u32> {
        let mut logits = std::mem::take(&mut s.logits);
        logits.resize(self.v, 0.0);
        self.logits(hv, 1, &mut logits);
        let pick = sample_logits(&logits, draw, s, u);
        s.logits = logits;
        pick
    }
}
