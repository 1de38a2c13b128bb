//! `TimeRNN`: `h_t = tanh(h_{t-1} Wh + x_t Wx + b)`, stateful, truncated BPTT.
//!
//! The input projection `x_t Wx` for all steps and the weight gradients are large GEMMs done by
//! the model outside these loops. What runs per step is only the recurrent product (with a
//! copy of `Wh` / `Wh^T` packed once per batch by [`pack_wh`] / [`pack_wh_t`]), the fused
//! bias+tanh and its backward. Each rayon task takes a block of batch rows for the whole time
//! loop, so threads meet once per batch, not once per step. Nothing here allocates.
//!
//! Buffers are row-major `[N,T,H]`: batch row `n` owns the contiguous range
//! `n*T*H..(n+1)*T*H`, which is what lets row blocks be split off as disjoint slices.

use rayon::prelude::*;

use crate::gemm::{self, Accum, MatMut, MatRef, Packed};
use crate::kernels::tanh;

/// Length of a packed `Wh` (or `Wh^T`) for hidden size `h`.
pub fn packed_len(h: usize) -> usize {
    gemm::packed_len(h, h)
}

/// Packs `Wh [H,H]` for `h_{t-1} Wh`.
pub fn pack_wh(out: &mut [f32], wh: &[f32], h: usize) {
    gemm::pack(out, MatRef::new(wh, h, h));
}

/// Packs `Wh^T` (read straight from `Wh [H,H]` with swapped strides) for `dt Wh^T`.
pub fn pack_wh_t(out: &mut [f32], wh: &[f32], h: usize) {
    gemm::pack(out, MatRef::new(wh, h, h).t());
}

/// Multiply-adds per batch below which the time loop runs as one block on the calling thread:
/// waking another thread costs microseconds, more than it saves on the book's 10x100x100 steps.
const PARALLEL_MIN_MACS: usize = 2_000_000;

/// Batch rows per rayon task: one block per thread for large batches, one block for small
/// ones. Any split gives bit-identical results, because the recurrent kernel computes each row
/// with the same operation sequence whatever rows it is batched with.
fn rows_per_task(n: usize, t: usize, h: usize) -> usize {
    if n * t * h * h < PARALLEL_MIN_MACS {
        return n.max(1);
    }
    n.div_ceil(rayon::current_num_threads()).max(1)
}

/// Forward time loop.
///
/// Shapes: `hs [N,T,H]` (in: `x_t Wx` for every step; out: `h_t`), `hprev [N,T,H]` (out:
/// `h_{t-1}`, the left operand of the recurrent product, kept for `dWh`), `state [N,H]` (in:
/// `h_{-1}`; out: `h_{T-1}`, carried to the next batch), `wh_packed` from [`pack_wh`], `b [H]`.
pub fn forward_time_loop(
    hs: &mut [f32],
    hprev: &mut [f32],
    state: &mut [f32],
    wh_packed: &[f32],
    b: &[f32],
    (n, t, h): (usize, usize, usize),
) {
    assert_eq!(hs.len(), n * t * h);
    assert_eq!(hprev.len(), n * t * h);
    assert_eq!(state.len(), n * h);
    assert_eq!(b.len(), h);
    if n == 0 || t == 0 || h == 0 {
        return;
    }
    let rows = rows_per_task(n, t, h);
    hs.par_chunks_mut(rows * t * h)
        .zip(hprev.par_chunks_mut(rows * t * h))
        .zip(state.par_chunks_mut(rows * h))
        .for_each(|((hs, hprev), state)| {
            let m = state.len() / h;
            forward_rows(hs, hprev, state, wh_packed, b, (m, t, h));
        });
}

/// [`forward_time_loop`] for one block of `m` batch rows, on the calling thread.
pub fn forward_rows(
    hs: &mut [f32],
    hprev: &mut [f32],
    state: &mut [f32],
    wh_packed: &[f32],
    b: &[f32],
    (m, t, h): (usize, usize, usize),
) {
    debug_assert_eq!(hs.len(), m * t * h);
    debug_assert_eq!(state.len(), m * h);
    let ld = t * h;
    super::load_state(hprev, state, (m, t, h));
    for step in 0..t {
        let off = step * h;
        // hs[:, step] += hprev[:, step] Wh   (hprev[:, step] = h_{step-1})
        gemm::gemm_packed(
            MatMut::with_row_stride(&mut hs[off..], m, h, ld),
            MatRef::rows_strided(&hprev[off..], m, h, ld),
            Packed::new(wh_packed, h, h),
            Accum::Add,
        );
        for i in 0..m {
            let row = &mut hs[i * ld + off..i * ld + off + h];
            tanh::bias_tanh(row, b);
            let next = if step + 1 < t {
                &mut hprev[i * ld + off + h..i * ld + off + 2 * h]
            } else {
                &mut state[i * h..(i + 1) * h]
            };
            next.copy_from_slice(row);
        }
    }
}

/// Backward time loop (truncated BPTT: the gradient into `h_{-1}` is dropped, as in the book).
///
/// Shapes: `dh [N,T,H]` (in: `dL/dh_t` from the layer above; out: `dt = dL/da_t`, the gradient
/// of the pre-activation, from which the model takes `db`, `dWx`, `dWh` and `dx`), `hs [N,T,H]`
/// (the saved outputs `h_t`), `scratch [N,H]`, `wht_packed` from [`pack_wh_t`].
pub fn backward_time_loop(
    dh: &mut [f32],
    hs: &[f32],
    scratch: &mut [f32],
    wht_packed: &[f32],
    (n, t, h): (usize, usize, usize),
) {
    assert_eq!(dh.len(), n * t * h);
    assert_eq!(hs.len(), n * t * h);
    assert_eq!(scratch.len(), n * h);
    if n == 0 || t == 0 || h == 0 {
        return;
    }
    let rows = rows_per_task(n, t, h);
    dh.par_chunks_mut(rows * t * h)
        .zip(hs.par_chunks(rows * t * h))
        .zip(scratch.par_chunks_mut(rows * h))
        .for_each(|((dh, hs), scratch)| {
            let m = scratch.len() / h;
            backward_rows(dh, hs, scratch, wht_packed, (m, t, h));
        });
}

/// [`backward_time_loop`] for one block of `m` batch rows, on the calling thread.
pub fn backward_rows(
    dh: &mut [f32],
    hs: &[f32],
    scratch: &mut [f32],
    wht_packed: &[f32],
    (m, t, h): (usize, usize, usize),
) {
    debug_assert_eq!(dh.len(), m * t * h);
    debug_assert_eq!(scratch.len(), m * h);
    let ld = t * h;
    for step in (0..t).rev() {
        let off = step * h;
        if step + 1 < t {
            // scratch = dt_{step+1} Wh^T: the gradient reaching h_step through the recurrence.
            // dt_{step+1} already sits in dh[:, step+1].
            gemm::gemm_packed(
                MatMut::new(scratch, m, h),
                MatRef::rows_strided(&dh[off + h..], m, h, ld),
                Packed::new(wht_packed, h, h),
                Accum::Replace,
            );
            for i in 0..m {
                let d = &mut dh[i * ld + off..i * ld + off + h];
                for (g, &s) in d.iter_mut().zip(&scratch[i * h..(i + 1) * h]) {
                    *g += s;
                }
            }
        }
        for i in 0..m {
            let r = i * ld + off..i * ld + off + h;
            tanh::tanh_backward(&mut dh[r.clone()], &hs[r]);
        }
    }
}
