//! GRU in PyTorch's form: `r = σ(x Wx_r + bx_r + h Wh_r + bh_r)`, `z` likewise,
//! `n = tanh(x Wx_n + bx_n + r*(h Wh_n + bh_n))`, `h = (1-z)*n + z*h`; gate order r, z, n
//! along the 3H axis.
//!
//! Because `r` multiplies `h Wh_n + bh_n` (not `h` before the product, as the book's appendix
//! GRU does, see [`super::gru_book`]), one product `h Wh` `[m,H] x [H,3H]` per step serves all
//! three gates, and PyTorch models import without change. `gates` holds the input side
//! (`x Wx`, then r, z, n, then its gradient), `aux` the recurrent side (`h Wh + bh`, then its
//! gradient).

use super::{add_outer, at_step, at_step_mut, Buffers, CellImpl, Dims, GradInputs, LayerRows};
use super::{Role, StepWeights, TensorSpec, TorchForm, B, MAX_GRAD_PRODUCTS, WH, WX};
use crate::gemm::{self, Accum, MatMut, MatRef, Packed, Par};
use crate::kernels::gates;

/// PyTorch's GRU (G = 3).
pub(crate) struct Gru;

/// `Wx`, `bx`, `Wh`, `bh`: `[dWx; dbx]` and `[dWh; dbh]` are one product each.
const TENSORS: &[TensorSpec] = &[
    WX,
    TensorSpec { name: "bx", ..B },
    WH,
    TensorSpec {
        name: "bh",
        role: Role::Bh,
        ..B
    },
];

impl CellImpl for Gru {
    fn gates(&self) -> usize {
        3
    }

    fn tensors(&self) -> &'static [TensorSpec] {
        TENSORS
    }

    fn torch(&self) -> Option<TorchForm> {
        Some(TorchForm {
            block: &[0, 1, 2],
            summed_bias: false,
        })
    }

    fn buffers(&self, _train: bool) -> Buffers {
        Buffers {
            gates: 3,
            aux: 3,
            states: 1,
            scratch: 1,
            ..Buffers::default()
        }
    }

    fn forward_step(&self, rows: &mut LayerRows<'_>, w: &StepWeights<'_>, s: usize, d: Dims) {
        let (m, t, h) = (d.m, d.t, d.h);
        let g = 3 * h;
        // gh[:, s] = h_{s-1} Wh   [m,H] x [H,3H]
        gemm::gemm_packed(
            at_step_mut(rows.aux, s, g, d),
            at_step(rows.hprev, s, h, d),
            Packed::new(w.packed, h, g),
            Accum::Replace,
        );
        for i in 0..m {
            let (r, ga) = ((i * t + s) * h, (i * t + s) * g);
            gates::gru_forward(
                &mut rows.gates[ga..ga + g],
                &mut rows.aux[ga..ga + g],
                w.b,
                w.bh,
                &rows.hprev[r..r + h],
                &mut rows.hs[r..r + h],
            );
        }
    }

    fn backward_step(
        &self,
        rows: &mut LayerRows<'_>,
        dh: &mut [f32],
        carry: &mut [f32],
        w: &StepWeights<'_>,
        s: usize,
        d: Dims,
    ) {
        let (m, t, h) = (d.m, d.t, d.h);
        let g = 3 * h;
        if s + 1 < t {
            // dh[:, s] += dgh_{s+1} Wh^T + dh_{s+1} * z_{s+1}
            gemm::gemm_packed(
                at_step_mut(dh, s, h, d),
                at_step(rows.aux, s + 1, g, d),
                Packed::new(w.packed, g, h),
                Accum::Add,
            );
            for i in 0..m {
                let r = (i * t + s) * h;
                for (x, &c) in dh[r..r + h].iter_mut().zip(&carry[i * h..(i + 1) * h]) {
                    *x += c;
                }
            }
        }
        for i in 0..m {
            let (r, ga) = ((i * t + s) * h, (i * t + s) * g);
            gates::gru_backward(
                &mut rows.gates[ga..ga + g],
                &mut rows.aux[ga..ga + g],
                &dh[r..r + h],
                &rows.hprev[r..r + h],
                &mut carry[i * h..(i + 1) * h],
            );
        }
    }

    fn grad_products(&self, dl: usize, h: usize) -> [(usize, usize); MAX_GRAD_PRODUCTS] {
        [(dl + 1, 3 * h), (h + 1, 3 * h), (0, 0)]
    }

    fn weight_grads(&self, g: &GradInputs<'_>, grads: &mut [f32], scratch: &mut [f32], par: Par) {
        // [dWx; dbx] += [x | 1]^T dAx and [dWh; dbh] += [hprev | 1]^T dAh
        let (dl, h, gh) = (g.dl, g.h, 3 * g.h);
        let (rx, rh) = grads.split_at_mut((dl + 1) * gh);
        let dax = MatRef::new(g.gates, g.nt, gh);
        add_outer(
            MatMut::new(rx, dl + 1, gh),
            &[(g.x, dl)],
            true,
            dax,
            scratch,
            par,
        );
        let dah = MatRef::new(g.aux, g.nt, gh);
        add_outer(
            MatMut::new(rh, h + 1, gh),
            &[(g.hprev, h)],
            true,
            dah,
            scratch,
            par,
        );
    }
}
