//! The book's tanh cell (`TimeRNN`): `h_t = tanh(h_{t-1} Wh + x_t Wx + b)`.
//!
//! Its pre-activation lives in `hs` (the input projection lands there, the step adds the
//! recurrent product, then bias+tanh in place), and its backward differentiates in place in
//! `gates`, which then holds `dL/da` for the weight gradient.

use super::{add_outer, at_step, at_step_mut, Buffers, CellImpl, Dims, GradInputs, LayerRows};
use super::{StepWeights, TensorSpec, TorchForm, MAX_GRAD_PRODUCTS};
use crate::gemm::{self, Accum, MatMut, MatRef, Packed, Par};
use crate::kernels::tanh;

/// The tanh RNN (G = 1).
pub(crate) struct Rnn;

const TENSORS: &[TensorSpec] = super::WX_WH_B;

impl CellImpl for Rnn {
    fn gates(&self) -> usize {
        1
    }

    fn tensors(&self) -> &'static [TensorSpec] {
        TENSORS
    }

    fn torch(&self) -> Option<TorchForm> {
        Some(TorchForm {
            block: &[0],
            summed_bias: true,
        })
    }

    fn buffers(&self, train: bool) -> Buffers {
        Buffers {
            gates: usize::from(train),
            states: 1,
            scratch: 1,
            ..Buffers::default()
        }
    }

    fn in_place(&self) -> bool {
        true
    }

    fn forward_step(&self, rows: &mut LayerRows<'_>, w: &StepWeights<'_>, s: usize, d: Dims) {
        let (m, h) = (d.m, d.h);
        // hs[:, s] += hprev[:, s] Wh
        gemm::gemm_packed(
            at_step_mut(rows.hs, s, h, d),
            at_step(rows.hprev, s, h, d),
            Packed::new(w.packed, h, h),
            Accum::Add,
        );
        for i in 0..m {
            let r = (i * d.t + s) * h;
            tanh::bias_tanh(&mut rows.hs[r..r + h], w.b);
        }
    }

    fn backward_step(
        &self,
        rows: &mut LayerRows<'_>,
        _dh: &mut [f32],
        scratch: &mut [f32],
        w: &StepWeights<'_>,
        s: usize,
        d: Dims,
    ) {
        let (m, h) = (d.m, d.h);
        let da = &mut *rows.gates;
        if s + 1 < d.t {
            // scratch = dt_{s+1} Wh^T: the gradient reaching h_s through the recurrence.
            gemm::gemm_packed(
                MatMut::new(&mut scratch[..m * h], m, h),
                at_step(da, s + 1, h, d),
                Packed::new(w.packed, h, h),
                Accum::Replace,
            );
            for i in 0..m {
                let r = (i * d.t + s) * h;
                for (g, &x) in da[r..r + h].iter_mut().zip(&scratch[i * h..(i + 1) * h]) {
                    *g += x;
                }
            }
        }
        for i in 0..m {
            let r = (i * d.t + s) * h;
            tanh::tanh_backward(&mut da[r..r + h], &rows.hs[r..r + h]);
        }
    }

    fn grad_products(&self, dl: usize, h: usize) -> [(usize, usize); MAX_GRAD_PRODUCTS] {
        [(dl + h + 1, h), (0, 0), (0, 0)]
    }

    fn weight_grads(&self, g: &GradInputs<'_>, grads: &mut [f32], scratch: &mut [f32], par: Par) {
        // [dWx; dWh; db] += [x | hprev | 1]^T dA
        let (dl, h) = (g.dl, g.h);
        add_outer(
            MatMut::new(grads, dl + h + 1, h),
            &[(g.x, dl), (g.hprev, h)],
            true,
            MatRef::new(g.gates, g.nt, h),
            scratch,
            par,
        );
    }
}

#[cfg(test)]
mod tests {
    //! The time loops alone against finite differences (moved from tests/gradcheck.rs).
    #![allow(clippy::needless_range_loop)]
    use super::*;
    use crate::cells::{backward_rows, forward_rows};

    /// Deterministic uniform numbers in [-scale, scale).
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self, scale: f32) -> f32 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((self.0 >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        }
        fn vec(&mut self, len: usize, scale: f32) -> Vec<f32> {
            (0..len).map(|_| self.next(scale)).collect()
        }
    }

    const EPS: f32 = 1e-2;

    /// Central difference of `f` w.r.t. `x[i]`.
    fn numeric(x: &mut [f32], i: usize, mut f: impl FnMut(&[f32]) -> f64) -> f64 {
        let orig = x[i];
        x[i] = orig + EPS;
        let plus = f(x);
        x[i] = orig - EPS;
        let minus = f(x);
        x[i] = orig;
        // Divide by the step actually taken in f32.
        (plus - minus) / ((orig + EPS) as f64 - (orig - EPS) as f64)
    }

    fn check(what: &str, i: usize, num: f64, ana: f64) {
        let err = (num - ana).abs();
        assert!(
            err <= 2e-3 + 1e-2 * ana.abs(),
            "{what}[{i}]: numeric {num:.6e} vs analytic {ana:.6e}"
        );
    }

    /// Indices to sample: all of a small tensor, else an even spread.
    fn sample(len: usize) -> Vec<usize> {
        if len <= 24 {
            (0..len).collect()
        } else {
            (0..24)
                .map(|k| (k * len / 24 + k % 3).min(len - 1))
                .collect()
        }
    }

    #[test]
    fn rnn_time_loops_match_finite_differences() {
        let (n, t, h) = (3, 4, 5);
        let mut rng = Lcg(2);
        let xproj = rng.vec(n * t * h, 0.8);
        let mut wh = rng.vec(h * h, 0.6);
        let mut b = rng.vec(h, 0.3);
        let state0 = rng.vec(n * h, 0.5);
        let r = rng.vec(n * t * h, 1.0);

        // L = sum(R * hs); returns L and (hs, hprev).
        let run = |xproj: &[f32], wh: &[f32], b: &[f32]| {
            let mut hs = xproj.to_vec();
            let mut hprev = vec![0.0; n * t * h];
            let mut state = state0.clone();
            let mut packed = vec![0.0; gemm::packed_len(h, h)];
            Rnn.pack_recurrent(wh, h, &mut packed, &mut []);
            let mut rows = LayerRows {
                hs: &mut hs,
                hprev: &mut hprev,
                state: [&mut state, &mut []],
                ..LayerRows::default()
            };
            let w = StepWeights {
                packed: &packed,
                b,
                bh: &[],
            };
            forward_rows(&Rnn, &mut rows, &w, Dims { m: n, t, h });
            let l = hs
                .iter()
                .zip(&r)
                .map(|(&a, &r)| a as f64 * r as f64)
                .sum::<f64>();
            (l, hs, hprev, state)
        };
        let (_, hs, hprev, state) = run(&xproj, &wh, &b);
        assert_eq!(
            &state[..h],
            &hs[(t - 1) * h..t * h],
            "state is the last hidden state"
        );
        assert_eq!(&hprev[..h], &state0[..h], "h_-1 is the carried state");

        let mut dt = r.clone();
        let mut packed_t = vec![0.0; gemm::packed_len(h, h)];
        Rnn.pack_recurrent(&wh, h, &mut [], &mut packed_t);
        let mut scratch = vec![0.0; n * h];
        let (mut hs2, mut hp2) = (hs.clone(), hprev.clone());
        let mut rows = LayerRows {
            gates: &mut dt,
            hs: &mut hs2,
            hprev: &mut hp2,
            ..LayerRows::default()
        };
        let w = StepWeights {
            packed: &packed_t,
            b: &b,
            bh: &[],
        };
        backward_rows(
            &Rnn,
            &mut rows,
            &mut [],
            &mut scratch,
            &w,
            Dims { m: n, t, h },
        );
        // dWh = hprev^T dt, db = colsum dt (what the model's GEMMs compute), in f64.
        let mut dwh = vec![0.0f64; h * h];
        let mut db = vec![0.0f64; h];
        for row in 0..n * t {
            for i in 0..h {
                db[i] += dt[row * h + i] as f64;
                for j in 0..h {
                    dwh[i * h + j] += hprev[row * h + i] as f64 * dt[row * h + j] as f64;
                }
            }
        }
        for i in sample(xproj.len()) {
            let num = numeric(&mut xproj.clone(), i, |x| run(x, &wh, &b).0);
            check("dxproj", i, num, dt[i] as f64);
        }
        for i in sample(wh.len()) {
            let xp = xproj.clone();
            let bb = b.clone();
            let num = numeric(&mut wh, i, |w| run(&xp, w, &bb).0);
            check("dWh", i, num, dwh[i]);
        }
        for i in 0..h {
            let xp = xproj.clone();
            let w = wh.clone();
            let num = numeric(&mut b, i, |bb| run(&xp, &w, bb).0);
            check("db", i, num, db[i]);
        }
    }
}
