//! The book's ch06 `TimeLSTM`: `A = x Wx + h Wh + b`, gate order f, g, i, o along the 4H
//! axis; `c = f*c + g*i`, `h = o*tanh(c)`. `h` and `c` carry between batches.
//!
//! Per step there is one product for all four gates (`h Wh`, `[m,H] x [H,4H]`) and one fused
//! pass over the gates ([`crate::kernels::gates`]). `aux` holds `c_t` then `tanh(c_t)` (two
//! `[m,T,H]` halves), `row_aux` the `c` at the batch start (the backward's `c_{-1}`).

use super::{add_outer, at_step, at_step_mut, Buffers, CellImpl, Dims, GradInputs, LayerRows};
use super::{StepWeights, TensorSpec, TorchForm, MAX_GRAD_PRODUCTS};
use crate::gemm::{self, Accum, MatMut, MatRef, Packed, Par};
use crate::kernels::gates;

/// The book's LSTM (G = 4).
pub(crate) struct Lstm;

const TENSORS: &[TensorSpec] = super::WX_WH_B;

impl CellImpl for Lstm {
    fn gates(&self) -> usize {
        4
    }

    fn tensors(&self) -> &'static [TensorSpec] {
        TENSORS
    }

    fn torch(&self) -> Option<TorchForm> {
        // PyTorch's order is i, f, g, o.
        Some(TorchForm {
            block: &[1, 2, 0, 3],
            summed_bias: true,
        })
    }

    fn buffers(&self, _train: bool) -> Buffers {
        Buffers {
            gates: 4,
            aux: 2,
            row_aux: 1,
            states: 2,
            scratch: 1,
        }
    }

    fn begin_forward(&self, rows: &mut LayerRows<'_>, _d: Dims) {
        rows.row_aux.copy_from_slice(rows.state[1]);
    }

    fn forward_step(&self, rows: &mut LayerRows<'_>, w: &StepWeights<'_>, s: usize, d: Dims) {
        let (m, t, h) = (d.m, d.t, d.h);
        let g = 4 * h;
        // gates[:, s] += h_{s-1} Wh   [m,H] x [H,4H]
        gemm::gemm_packed(
            at_step_mut(rows.gates, s, g, d),
            at_step(rows.hprev, s, h, d),
            Packed::new(w.packed, h, g),
            Accum::Add,
        );
        let (cs, tc) = rows.aux.split_at_mut(m * t * h);
        for i in 0..m {
            let r = (i * t + s) * h;
            let (before, cur) = cs.split_at_mut(r);
            let c_prev = if s == 0 {
                &rows.row_aux[i * h..(i + 1) * h]
            } else {
                &before[r - h..]
            };
            let ga = (i * t + s) * g;
            gates::lstm_forward(
                &mut rows.gates[ga..ga + g],
                w.b,
                c_prev,
                &mut cur[..h],
                &mut tc[r..r + h],
                &mut rows.hs[r..r + h],
            );
        }
    }

    fn end_forward(&self, rows: &mut LayerRows<'_>, d: Dims) {
        let (t, h) = (d.t, d.h);
        for i in 0..d.m {
            let last = (i * t + t - 1) * h;
            rows.state[1][i * h..(i + 1) * h].copy_from_slice(&rows.aux[last..last + h]);
        }
    }

    fn backward_step(
        &self,
        rows: &mut LayerRows<'_>,
        dh: &mut [f32],
        dc: &mut [f32],
        w: &StepWeights<'_>,
        s: usize,
        d: Dims,
    ) {
        let (m, t, h) = (d.m, d.t, d.h);
        let g = 4 * h;
        if s + 1 < t {
            // dh[:, s] += dA_{s+1} Wh^T: the gradient reaching h_s through the recurrence.
            gemm::gemm_packed(
                at_step_mut(dh, s, h, d),
                at_step(rows.gates, s + 1, g, d),
                Packed::new(w.packed, g, h),
                Accum::Add,
            );
        }
        let (cs, tc) = rows.aux.split_at(m * t * h);
        for i in 0..m {
            let r = (i * t + s) * h;
            let c_prev = if s == 0 {
                &rows.row_aux[i * h..(i + 1) * h]
            } else {
                &cs[r - h..r]
            };
            let ga = (i * t + s) * g;
            gates::lstm_backward(
                &mut rows.gates[ga..ga + g],
                &dh[r..r + h],
                &mut dc[i * h..(i + 1) * h],
                c_prev,
                &tc[r..r + h],
            );
        }
    }

    fn grad_products(&self, dl: usize, h: usize) -> [(usize, usize); MAX_GRAD_PRODUCTS] {
        [(dl + h + 1, 4 * h), (0, 0), (0, 0)]
    }

    fn weight_grads(&self, g: &GradInputs<'_>, grads: &mut [f32], scratch: &mut [f32], par: Par) {
        // [dWx; dWh; db] += [x | hprev | 1]^T dA
        let (dl, h, gh) = (g.dl, g.h, 4 * g.h);
        add_outer(
            MatMut::new(grads, dl + h + 1, gh),
            &[(g.x, dl), (g.hprev, h)],
            true,
            MatRef::new(g.gates, g.nt, gh),
            scratch,
            par,
        );
    }
}
