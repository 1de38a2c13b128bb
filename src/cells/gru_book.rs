//! The book's appendix GRU (Deep Learning from Scratch 2, appendix C): gate order z, r, h̃
//! along the 3H axis, one bias:
//!
//! `z = σ(x Wxz + h Whz + bz)`, `r = σ(x Wxr + h Whr + br)`,
//! `h̃ = tanh(x Wxh + (r⊙h) Whh + bh)`, `h' = (1−z)⊙h + z⊙h̃`.
//!
//! Unlike PyTorch's form ([`super::gru`]), `r` applies before the product, so a step runs two
//! recurrent products: `h [Whz | Whr]` (`[m,H] x [H,2H]`), then `(r⊙h) Whh` (`[m,H] x [H,H]`).
//! `gates` holds `x Wx`, then z, r, h̃, then their pre-activations' gradient; `aux` holds
//! `r⊙h` (the second product's left operand, kept for `dWhh`).
//!
//! Storage order `Wx, b, Wh`, so that `[dWx; db]` is one product (`[x | 1]^T dA`); the
//! checkpoint names are the book's (`Wx`, `Wh`, `b`). PyTorch has no such cell.

use super::MAX_GRAD_PRODUCTS;
use super::{add_outer, at_step, cols_at_step, cols_at_step_mut, Buffers, CellImpl, Dims};
use super::{GradInputs, LayerRows, StepWeights, TensorSpec, TorchForm, B, WH, WX};
use crate::gemm::{self, Accum, MatMut, MatRef, Packed, Par};
use crate::kernels::gates::sigmoid_approx;
use crate::kernels::tanh;

/// The book's appendix GRU (G = 3).
pub(crate) struct GruBook;

const TENSORS: &[TensorSpec] = &[WX, B, WH];

impl CellImpl for GruBook {
    fn gates(&self) -> usize {
        3
    }

    fn tensors(&self) -> &'static [TensorSpec] {
        TENSORS
    }

    fn torch(&self) -> Option<TorchForm> {
        None
    }

    fn buffers(&self, _train: bool) -> Buffers {
        Buffers {
            gates: 3,
            aux: 1,
            states: 1,
            scratch: 2,
            ..Buffers::default()
        }
    }

    /// Forward: `[Whz | Whr]` packed `[H,2H]`, then `Whh` packed `[H,H]`. Backward: their
    /// transposes, `[2H,H]` then `[H,H]`.
    fn packed_lens(&self, h: usize) -> (usize, usize) {
        let n = gemm::packed_len(h, 2 * h) + gemm::packed_len(h, h);
        (n, gemm::packed_len(2 * h, h) + gemm::packed_len(h, h))
    }

    fn pack_recurrent(&self, wh: &[f32], h: usize, fwd: &mut [f32], bwd: &mut [f32]) {
        let zr = MatRef::rows_strided(wh, h, 2 * h, 3 * h);
        let hh = MatRef::rows_strided(&wh[2 * h..], h, h, 3 * h);
        if !fwd.is_empty() {
            let n = gemm::pack(fwd, zr);
            gemm::pack(&mut fwd[n..], hh);
        }
        if !bwd.is_empty() {
            let n = gemm::pack(bwd, zr.t());
            gemm::pack(&mut bwd[n..], hh.t());
        }
    }

    fn forward_step(&self, rows: &mut LayerRows<'_>, w: &StepWeights<'_>, s: usize, d: Dims) {
        let (m, t, h) = (d.m, d.t, d.h);
        let g = 3 * h;
        let (zr, hh) = w.packed.split_at(gemm::packed_len(h, 2 * h));
        // [z | r] pre-activations += h_{s-1} [Whz | Whr]
        gemm::gemm_packed(
            cols_at_step_mut(rows.gates, s, (0, 2 * h), g, d),
            at_step(rows.hprev, s, h, d),
            Packed::new(zr, h, 2 * h),
            Accum::Add,
        );
        for i in 0..m {
            let (r, ga) = ((i * t + s) * h, (i * t + s) * g);
            let a = &mut rows.gates[ga..ga + 2 * h];
            for (x, &b) in a.iter_mut().zip(&w.b[..2 * h]) {
                *x = sigmoid_approx(*x + b);
            }
            let (hp, rh) = (&rows.hprev[r..r + h], &mut rows.aux[r..r + h]);
            for ((o, &rj), &hj) in rh.iter_mut().zip(&a[h..]).zip(hp) {
                *o = rj * hj;
            }
        }
        // h̃ pre-activation += (r⊙h) Whh
        gemm::gemm_packed(
            cols_at_step_mut(rows.gates, s, (2 * h, h), g, d),
            at_step(rows.aux, s, h, d),
            Packed::new(hh, h, h),
            Accum::Add,
        );
        for i in 0..m {
            let (r, ga) = ((i * t + s) * h, (i * t + s) * g);
            let a = &mut rows.gates[ga..ga + g];
            tanh::bias_tanh(&mut a[2 * h..], &w.b[2 * h..]);
            let (z, cand) = (&a[..h], &a[2 * h..]);
            let (hp, out) = (&rows.hprev[r..r + h], &mut rows.hs[r..r + h]);
            for j in 0..h {
                out[j] = (1.0 - z[j]) * hp[j] + z[j] * cand[j];
            }
        }
    }

    fn backward_step(
        &self,
        rows: &mut LayerRows<'_>,
        dh: &mut [f32],
        scratch: &mut [f32],
        w: &StepWeights<'_>,
        s: usize,
        d: Dims,
    ) {
        let (m, t, h) = (d.m, d.t, d.h);
        let g = 3 * h;
        let (zr_t, hh_t) = w.packed.split_at(gemm::packed_len(2 * h, h));
        let (carry, drh) = scratch.split_at_mut(m * h);
        if s + 1 < t {
            // dh[:, s] += [dz | dr]_{s+1} [Whz | Whr]^T + dh_{s+1} ⊙ (1 - z_{s+1}) (+ the r⊙h path)
            gemm::gemm_packed(
                MatMut::with_row_stride(&mut dh[s * h..], m, h, t * h),
                cols_at_step(rows.gates, s + 1, (0, 2 * h), g, d),
                Packed::new(zr_t, 2 * h, h),
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
            let a = &mut rows.gates[ga..ga + g];
            let (dhr, hp) = (&dh[r..r + h], &rows.hprev[r..r + h]);
            let c = &mut carry[i * h..(i + 1) * h];
            for j in 0..h {
                let (z, cand, dy) = (a[j], a[2 * h + j], dhr[j]);
                c[j] = dy * (1.0 - z);
                let dz = dy * (cand - hp[j]);
                a[j] = dz * z * (1.0 - z);
                a[2 * h + j] = dy * z * (1.0 - cand * cand);
            }
        }
        // d(r⊙h) = dt Whh^T
        gemm::gemm_packed(
            MatMut::new(&mut drh[..m * h], m, h),
            cols_at_step(rows.gates, s, (2 * h, h), g, d),
            Packed::new(hh_t, h, h),
            Accum::Replace,
        );
        for i in 0..m {
            let (r, ga) = ((i * t + s) * h, (i * t + s) * g);
            let a = &mut rows.gates[ga + h..ga + 2 * h];
            let hp = &rows.hprev[r..r + h];
            let (c, dq) = (&mut carry[i * h..(i + 1) * h], &drh[i * h..(i + 1) * h]);
            for j in 0..h {
                let rj = a[j];
                c[j] += dq[j] * rj;
                a[j] = dq[j] * hp[j] * rj * (1.0 - rj);
            }
        }
    }

    fn grad_products(&self, dl: usize, h: usize) -> [(usize, usize); MAX_GRAD_PRODUCTS] {
        [(dl + 1, 3 * h), (h, 2 * h), (h, h)]
    }

    fn weight_grads(&self, g: &GradInputs<'_>, grads: &mut [f32], scratch: &mut [f32], par: Par) {
        let (dl, h, nt) = (g.dl, g.h, g.nt);
        let gh = 3 * h;
        let (rx, wh) = grads.split_at_mut((dl + 1) * gh);
        // [dWx; db] += [x | 1]^T dA
        let da = MatRef::new(g.gates, nt, gh);
        add_outer(
            MatMut::new(rx, dl + 1, gh),
            &[(g.x, dl)],
            true,
            da,
            scratch,
            par,
        );
        // [dWhz | dWhr] += hprev^T [dz | dr]
        let dzr = MatRef::rows_strided(g.gates, nt, 2 * h, gh);
        let c = MatMut::with_row_stride(&mut wh[..], h, 2 * h, gh);
        add_outer(c, &[(g.hprev, h)], false, dzr, scratch, par);
        // dWhh += (r⊙h)^T dt
        let dt = MatRef::rows_strided(&g.gates[2 * h..], nt, h, gh);
        let c = MatMut::with_row_stride(&mut wh[2 * h..], h, h, gh);
        add_outer(c, &[(g.aux, h)], false, dt, scratch, par);
    }
}
