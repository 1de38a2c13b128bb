//! `TimeLSTM` (the book's ch06 form): the time loops of one block of batch rows.
//!
//! `A = x Wx + h Wh + b`, gate order f, g, i, o along the 4H axis; `c = f*c + g*i`,
//! `h = o*tanh(c)`; `h` and `c` carry between batches, BPTT is truncated at the batch start.
//! As for the tanh RNN, the input projection `x Wx` of every step and the weight gradients are
//! large GEMMs done by the model outside these loops: per step there is one product for all
//! four gates (`h Wh`, `[m,H] x [H,4H]`) and one fused pass over the gates
//! ([`crate::kernels::gates`]). Nothing here allocates.
//!
//! Buffers are row-major `[m,T,·]` over the block's `m` rows.

use crate::gemm::{self, Accum, MatMut, MatRef, Packed};
use crate::kernels::gates;

/// The per-block buffers of one LSTM layer's forward.
pub struct LstmForward<'a> {
    /// `[m,T,4H]` in: `x Wx`; out: the activated gates f, g, i, o.
    pub gates: &'a mut [f32],
    /// `[m,T,H]` out: `h_t`.
    pub hs: &'a mut [f32],
    /// `[m,T,H]` out: `h_{t-1}`.
    pub hprev: &'a mut [f32],
    /// `[m,T,H]` out: `c_t` and `tanh(c_t)`.
    pub cs: &'a mut [f32],
    /// `[m,T,H]` out: `tanh(c_t)`.
    pub tc: &'a mut [f32],
    /// `[m,H]` out: `c` at the batch start (the backward's `c_{-1}`).
    pub c0: &'a mut [f32],
    /// `[m,H]` in/out: the carried `h`.
    pub state_h: &'a mut [f32],
    /// `[m,H]` in/out: the carried `c`.
    pub state_c: &'a mut [f32],
}

/// Runs the forward time loop over a block of `m` rows: per step `gates[:,t] += h_{t-1} Wh`,
/// then the fused gate pass. `wh_packed` is `Wh [H,4H]` packed by
/// [`gemm::pack`]; `b` is `[4H]`.
pub fn forward_rows(
    bufs: LstmForward<'_>,
    wh_packed: &[f32],
    b: &[f32],
    (m, t, h): (usize, usize, usize),
) {
    let LstmForward {
        gates: a,
        hs,
        hprev,
        cs,
        tc,
        c0,
        state_h,
        state_c,
    } = bufs;
    let g = 4 * h;
    let (ld, lda) = (t * h, t * g);
    debug_assert_eq!(a.len(), m * lda);
    debug_assert_eq!(state_c.len(), m * h);
    c0.copy_from_slice(state_c);
    super::load_state(hprev, state_h, (m, t, h));
    for step in 0..t {
        let off = step * h;
        // gates[:, step] += h_{step-1} Wh   [m,H] x [H,4H]
        gemm::gemm_packed(
            MatMut::with_row_stride(&mut a[step * g..], m, g, lda),
            MatRef::rows_strided(&hprev[off..], m, h, ld),
            Packed::new(wh_packed, h, g),
            Accum::Add,
        );
        for i in 0..m {
            let r = i * ld + off;
            let (before, cur) = cs.split_at_mut(r);
            let c_prev = if step == 0 {
                &c0[i * h..(i + 1) * h]
            } else {
                &before[r - h..]
            };
            let row = &mut hs[r..r + h];
            gates::lstm_forward(
                &mut a[i * lda + step * g..i * lda + (step + 1) * g],
                b,
                c_prev,
                &mut cur[..h],
                &mut tc[r..r + h],
                row,
            );
            if step + 1 < t {
                hprev[r + h..r + 2 * h].copy_from_slice(row);
            }
        }
    }
    super::store_state(state_h, hs, (m, t, h));
    super::store_state(state_c, cs, (m, t, h));
}

/// Runs the backward time loop over a block of `m` rows: `dh [m,T,H]` holds the gradient
/// reaching each `h_t` from above (it also receives the recurrent part); the activated gates
/// in `gates` are replaced by `dA`, the gradient w.r.t. the pre-activation. `dc` `[m,H]` is
/// scratch (the gradient carried through `c`). `wht_packed` is `Wh^T [4H,H]` packed. The saved
/// forward state is `(cs, tc, c0)`.
pub fn backward_rows(
    dh: &mut [f32],
    a: &mut [f32],
    (cs, tc, c0): (&[f32], &[f32], &[f32]),
    dc: &mut [f32],
    wht_packed: &[f32],
    (m, t, h): (usize, usize, usize),
) {
    let g = 4 * h;
    let (ld, lda) = (t * h, t * g);
    dc.fill(0.0);
    for step in (0..t).rev() {
        let off = step * h;
        if step + 1 < t {
            // dh[:, step] += dA_{step+1} Wh^T: the gradient reaching h_step through the
            // recurrence.
            gemm::gemm_packed(
                MatMut::with_row_stride(&mut dh[off..], m, h, ld),
                MatRef::rows_strided(&a[(step + 1) * g..], m, g, lda),
                Packed::new(wht_packed, g, h),
                Accum::Add,
            );
        }
        for i in 0..m {
            let r = i * ld + off;
            let c_prev = if step == 0 {
                &c0[i * h..(i + 1) * h]
            } else {
                &cs[r - h..r]
            };
            gates::lstm_backward(
                &mut a[i * lda + step * g..i * lda + (step + 1) * g],
                &dh[r..r + h],
                &mut dc[i * h..(i + 1) * h],
                c_prev,
                &tc[r..r + h],
            );
        }
    }
}
