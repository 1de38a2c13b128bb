//! GRU in PyTorch's form: the time loops of one block of batch rows.
//!
//! `r = σ(x Wx_r + bx_r + h Wh_r + bh_r)`, `z` likewise, `n = tanh(x Wx_n + bx_n +
//! r*(h Wh_n + bh_n))`, `h = (1-z)*n + z*h`; gate order r, z, n along the 3H axis. Because `r`
//! multiplies `h Wh_n + bh_n` (not `h` before the product, as the book's appendix GRU does),
//! one product `h Wh` `[m,H] x [H,3H]` per step serves all three gates. Nothing here
//! allocates.

use crate::gemm::{self, Accum, MatMut, MatRef, Packed};
use crate::kernels::gates;

/// Runs the forward time loop over a block of `m` rows. `gx [m,T,3H]` holds `x Wx` on entry
/// and the activated r, z, n on exit; `gh [m,T,3H]` receives `h_{t-1} Wh + bh`; `hs`, `hprev`
/// `[m,T,H]` receive `h_t` and `h_{t-1}`; `state [m,H]` is the carried `h`; the weights are
/// `(wh_packed, bx, bh)`.
pub fn forward_rows(
    gx: &mut [f32],
    gh: &mut [f32],
    hs: &mut [f32],
    hprev: &mut [f32],
    state: &mut [f32],
    (wh_packed, bx, bh): (&[f32], &[f32], &[f32]),
    (m, t, h): (usize, usize, usize),
) {
    let g = 3 * h;
    let (ld, lda) = (t * h, t * g);
    super::load_state(hprev, state, (m, t, h));
    for step in 0..t {
        let off = step * h;
        // gh[:, step] = h_{step-1} Wh   [m,H] x [H,3H]
        gemm::gemm_packed(
            MatMut::with_row_stride(&mut gh[step * g..], m, g, lda),
            MatRef::rows_strided(&hprev[off..], m, h, ld),
            Packed::new(wh_packed, h, g),
            Accum::Replace,
        );
        for i in 0..m {
            let r = i * ld + off;
            let ga = i * lda + step * g..i * lda + (step + 1) * g;
            let (prev, cur) = (&hprev[r..r + h], &mut hs[r..r + h]);
            gates::gru_forward(&mut gx[ga.clone()], &mut gh[ga], bx, bh, prev, cur);
        }
        if step + 1 < t {
            for i in 0..m {
                let r = i * ld + off;
                hprev[r + h..r + 2 * h].copy_from_slice(&hs[r..r + h]);
            }
        }
    }
    super::store_state(state, hs, (m, t, h));
}

/// Runs the backward time loop over a block of `m` rows: `dh [m,T,H]` holds the gradient
/// reaching each `h_t` from above (it also receives the recurrent parts); `gx` and `gh` are
/// replaced by the gradients w.r.t. `x Wx + bx` and `h Wh + bh`. `carry` `[m,H]` is scratch
/// (the direct path `dh * z` to the previous step). `wht_packed` is `Wh^T [3H,H]` packed.
pub fn backward_rows(
    dh: &mut [f32],
    gx: &mut [f32],
    gh: &mut [f32],
    hprev: &[f32],
    carry: &mut [f32],
    wht_packed: &[f32],
    (m, t, h): (usize, usize, usize),
) {
    let g = 3 * h;
    let (ld, lda) = (t * h, t * g);
    for step in (0..t).rev() {
        let off = step * h;
        if step + 1 < t {
            // dh[:, step] += dgh_{step+1} Wh^T + dh_{step+1} * z_{step+1}
            gemm::gemm_packed(
                MatMut::with_row_stride(&mut dh[off..], m, h, ld),
                MatRef::rows_strided(&gh[(step + 1) * g..], m, g, lda),
                Packed::new(wht_packed, g, h),
                Accum::Add,
            );
            for i in 0..m {
                let d = &mut dh[i * ld + off..i * ld + off + h];
                for (x, &c) in d.iter_mut().zip(&carry[i * h..(i + 1) * h]) {
                    *x += c;
                }
            }
        }
        for i in 0..m {
            let r = i * ld + off;
            let ga = i * lda + step * g..i * lda + (step + 1) * g;
            gates::gru_backward(
                &mut gx[ga.clone()],
                &mut gh[ga],
                &dh[r..r + h],
                &hprev[r..r + h],
                &mut carry[i * h..(i + 1) * h],
            );
        }
    }
}
