//! Vectorised exp, softmax, and softmax cross-entropy (loss and gradient) over one row.
//!
//! `exp(x) = 2^n (1 + expm1(r))` with the shared Cody-Waite/minimax core (max relative error
//! 8.4e-8 on the normal range, see the tests). Row kernels make three passes (max;
//! exp, store and sum; scale), each over the row while it is still in cache.

use super::expm1::reduce;
use super::simd::{dispatch, Scalar, Simd};
use crate::cpu::{isa, Isa};

/// `ln(f32::MIN_POSITIVE)` rounded towards zero: below it `exp` returns exactly 0 rather
/// than a subnormal (subnormals are slow and useless as probabilities).
const EXP_LO: f32 = -87.336_54;
/// Above `ln(f32::MAX)` = 88.7228; clamping here keeps `n <= 128`, so `2^n (1 + em)` still
/// overflows to +inf while the exponent arithmetic stays in range.
const EXP_HI: f32 = 89.0;

/// `exp(x)` for one vector.
///
/// # Safety
/// `S`'s ISA must be supported by the running CPU.
#[inline(always)]
pub(super) unsafe fn exp_v<S: Simd>(x: S::V) -> S::V {
    // SAFETY: the caller guarantees `S`'s ISA is supported by this CPU (the `Simd` contract).
    unsafe {
        let (n, em) = reduce::<S>(S::clamp(x, EXP_LO, EXP_HI));
        // 1 + em rounds once, and scaling by 2^n is exact for normal results: exp(0) == 1.
        let e = S::ldexp(S::add(S::splat(1.0), em), n);
        S::zero_where_lt(x, EXP_LO, e)
    }
}

/// Scalar reference of the approximation every path uses: `exp(x)`, relative error ~8.4e-8
/// (measured) on `[-87.33, 88.72]`, 0 below (down to -inf), +inf above, NaN for NaN.
pub fn exp_approx(x: f32) -> f32 {
    // SAFETY: the scalar implementation needs no CPU feature.
    unsafe { exp_v::<Scalar>(x) }
}

/// `x[i] = exp(x[i])`, vectorised, in place.
pub fn exp_inplace(x: &mut [f32]) {
    exp_inplace_with(isa(), x)
}

/// [`exp_inplace`] on the code path of `isa`. Panics if `isa` is unsupported.
pub fn exp_inplace_with(isa: Isa, x: &mut [f32]) {
    exp_inplace_dispatch(isa, x)
}

/// Softmax cross-entropy of one row of logits, gradient written in place:
/// with `m = max(row)`, `s = Σ_j exp(row[j] - m)`, returns `ln(s) - (row[target] - m)`
/// (= `-ln softmax(row)[target]`), then sets `row[j] = scale * exp(row[j] - m) / s` and
/// `row[target] -= scale`. Panics if `target >= row.len()` (so also if `row` is empty).
pub fn softmax_xent_grad_row(row: &mut [f32], target: usize, scale: f32) -> f32 {
    softmax_xent_grad_row_with(isa(), row, target, scale)
}

/// [`softmax_xent_grad_row`] on the code path of `isa`.
/// Panics if `target >= row.len()` or `isa` is unsupported.
pub fn softmax_xent_grad_row_with(isa: Isa, row: &mut [f32], target: usize, scale: f32) -> f32 {
    check_target(row.len(), target);
    softmax_xent_grad_dispatch(isa, row, target, scale)
}

/// Softmax cross-entropy `ln Σ_j exp(row[j] - m) - (row[target] - m)` of one row, without
/// touching it. Panics if `target >= row.len()` (so also if `row` is empty).
pub fn xent_row(row: &[f32], target: usize) -> f32 {
    xent_row_with(isa(), row, target)
}

/// [`xent_row`] on the code path of `isa`. Panics if `target >= row.len()` or `isa` is
/// unsupported.
pub fn xent_row_with(isa: Isa, row: &[f32], target: usize) -> f32 {
    check_target(row.len(), target);
    xent_dispatch(isa, row, target)
}

/// In-place softmax of one row, `row[j] = exp(row[j] - m) / Σ_k exp(row[k] - m)` with
/// `m = max(row)`; an empty row is left alone.
pub fn softmax_row(row: &mut [f32]) {
    softmax_row_with(isa(), row)
}

/// [`softmax_row`] on the code path of `isa`. Panics if `isa` is unsupported.
pub fn softmax_row_with(isa: Isa, row: &mut [f32]) {
    if !row.is_empty() {
        softmax_dispatch(isa, row)
    }
}

/// `(m, s)` of one row: `m = max(row)` and `s = Σ_j exp(row[j] - m)`, without touching it:
/// the pieces of a log-sum-exp over a row split into blocks (`ln s + m` for the whole row).
/// An empty row gives `(-inf, 0)`.
pub fn max_sumexp_row(row: &[f32]) -> (f32, f32) {
    if row.is_empty() {
        return (f32::NEG_INFINITY, 0.0);
    }
    max_sumexp_dispatch(isa(), row)
}

/// `row[j] = c * exp(row[j] - m)`: the softmax's gradient over one block of a row whose
/// maximum is `m`, with `c = scale / Σ exp(row - m)` over the whole row.
pub fn scaled_exp_row(row: &mut [f32], m: f32, c: f32) {
    if !row.is_empty() {
        scaled_exp_dispatch(isa(), row, m, c)
    }
}

fn check_target(len: usize, target: usize) {
    assert!(
        target < len,
        "softmax: target {target} out of range for a row of {len}"
    );
}

dispatch!(fn exp_inplace_dispatch = exp_inplace_body(x: &mut [f32]));
dispatch!(fn softmax_xent_grad_dispatch = softmax_xent_grad_body(
    row: &mut [f32], target: usize, scale: f32) -> f32);
dispatch!(fn xent_dispatch = xent_body(row: &[f32], target: usize) -> f32);
dispatch!(fn softmax_dispatch = softmax_body(row: &mut [f32]));
dispatch!(fn max_sumexp_dispatch = max_sumexp_body(row: &[f32]) -> (f32, f32));
dispatch!(fn scaled_exp_dispatch = scaled_exp_body(row: &mut [f32], m: f32, c: f32));

/// # Safety
/// `S`'s ISA must be supported by the running CPU.
#[inline(always)]
unsafe fn max_sumexp_body<S: Simd>(row: &[f32]) -> (f32, f32) {
    // SAFETY: ISA supported per the contract; with STORE = false the pointer is only read.
    unsafe {
        let m = row_max::<S>(row);
        (
            m,
            exp_shifted_sum::<S, false>(row.as_ptr() as *mut f32, row.len(), m),
        )
    }
}

/// # Safety
/// `S`'s ISA must be supported by the running CPU.
#[inline(always)]
unsafe fn scaled_exp_body<S: Simd>(row: &mut [f32], m: f32, c: f32) {
    // SAFETY: ISA supported per the contract; pointer and length come from the same slice.
    unsafe {
        exp_shifted_sum::<S, true>(row.as_mut_ptr(), row.len(), m);
        scale_in_place::<S>(row, c);
    }
}

/// # Safety
/// `S`'s ISA must be supported by the running CPU.
#[inline(always)]
unsafe fn exp_inplace_body<S: Simd>(x: &mut [f32]) {
    let (p, len) = (x.as_mut_ptr(), x.len());
    let mut i = 0;
    while i + S::LANES <= len {
        // SAFETY: i + LANES <= len; ISA supported per the contract.
        unsafe { S::store(p.add(i), exp_v::<S>(S::load(p.add(i)))) };
        i += S::LANES;
    }
    if i < len {
        // SAFETY: the tail accesses exactly the `len - i` in-bounds values at i.
        unsafe {
            let v = exp_v::<S>(S::load_tail(p.add(i), len - i, 0.0));
            S::store_tail(p.add(i), len - i, v);
        }
    }
}

/// # Safety
/// `S`'s ISA must be supported; `target < row.len()`.
#[inline(always)]
unsafe fn softmax_xent_grad_body<S: Simd>(row: &mut [f32], target: usize, scale: f32) -> f32 {
    // SAFETY: ISA supported per the contract.
    let m = unsafe { row_max::<S>(row) };
    let shifted_target = row[target] as f64 - m as f64;
    // SAFETY: ISA supported; pointer and length come from the same `&mut` slice.
    let s = unsafe { exp_shifted_sum::<S, true>(row.as_mut_ptr(), row.len(), m) };
    // SAFETY: ISA supported per the contract.
    unsafe { scale_in_place::<S>(row, scale / s) };
    row[target] -= scale;
    ((s as f64).ln() - shifted_target) as f32
}

/// # Safety
/// `S`'s ISA must be supported; `target < row.len()`.
#[inline(always)]
unsafe fn xent_body<S: Simd>(row: &[f32], target: usize) -> f32 {
    // SAFETY: ISA supported per the contract; with STORE = false the pointer is only read.
    let (m, s) = unsafe {
        let m = row_max::<S>(row);
        (
            m,
            exp_shifted_sum::<S, false>(row.as_ptr() as *mut f32, row.len(), m),
        )
    };
    ((s as f64).ln() - (row[target] as f64 - m as f64)) as f32
}

/// # Safety
/// `S`'s ISA must be supported by the running CPU.
#[inline(always)]
unsafe fn softmax_body<S: Simd>(row: &mut [f32]) {
    // SAFETY: ISA supported per the contract; pointer/len from `row`.
    unsafe {
        let m = row_max::<S>(row);
        let s = exp_shifted_sum::<S, true>(row.as_mut_ptr(), row.len(), m);
        scale_in_place::<S>(row, 1.0 / s);
    }
}

/// `max(row)` (-inf for an empty row).
///
/// # Safety
/// `S`'s ISA must be supported by the running CPU.
#[inline(always)]
unsafe fn row_max<S: Simd>(row: &[f32]) -> f32 {
    let (p, len) = (row.as_ptr(), row.len());
    // SAFETY: every load covers in-bounds values only (full vectors below len, then the tail).
    unsafe {
        let mut acc = S::splat(f32::NEG_INFINITY);
        let mut i = 0;
        while i + S::LANES <= len {
            acc = S::max(acc, S::load(p.add(i)));
            i += S::LANES;
        }
        if i < len {
            acc = S::max(acc, S::load_tail(p.add(i), len - i, f32::NEG_INFINITY));
        }
        S::reduce_max(acc)
    }
}

/// `Σ_j exp(p[j] - m)`, also storing each `exp(p[j] - m)` back to `p[j]` if `STORE`.
///
/// # Safety
/// `S`'s ISA must be supported; `p` valid for `len` reads, and for `len` writes if `STORE`.
#[inline(always)]
unsafe fn exp_shifted_sum<S: Simd, const STORE: bool>(p: *mut f32, len: usize, m: f32) -> f32 {
    // SAFETY: accesses stay within the `len` values at p (full vectors, then the tail).
    unsafe {
        let mv = S::splat(m);
        let mut acc = S::splat(0.0);
        let mut i = 0;
        while i + S::LANES <= len {
            let e = exp_v::<S>(S::sub(S::load(p.add(i)), mv));
            if STORE {
                S::store(p.add(i), e);
            }
            acc = S::add(acc, e);
            i += S::LANES;
        }
        if i < len {
            // Padding with -inf gives exp = 0 in the unused lanes, so the sum is unaffected.
            let x = S::load_tail(p.add(i), len - i, f32::NEG_INFINITY);
            let e = exp_v::<S>(S::sub(x, mv));
            if STORE {
                S::store_tail(p.add(i), len - i, e);
            }
            acc = S::add(acc, e);
        }
        S::reduce_add(acc)
    }
}

/// `row[j] *= c`.
///
/// # Safety
/// `S`'s ISA must be supported by the running CPU.
#[inline(always)]
unsafe fn scale_in_place<S: Simd>(row: &mut [f32], c: f32) {
    let (p, len) = (row.as_mut_ptr(), row.len());
    // SAFETY: accesses stay within the `len` values of `row` (full vectors, then the tail).
    unsafe {
        let cv = S::splat(c);
        let mut i = 0;
        while i + S::LANES <= len {
            S::store(p.add(i), S::mul(S::load(p.add(i)), cv));
            i += S::LANES;
        }
        if i < len {
            let v = S::mul(S::load_tail(p.add(i), len - i, 0.0), cv);
            S::store_tail(p.add(i), len - i, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::kernels::test_rng::Rng;

    const SIZES: [usize; 11] = [0, 1, 7, 8, 15, 16, 17, 63, 65, 100, 1000];
    const ROW_LENS: [usize; 10] = [1, 7, 15, 16, 17, 63, 65, 100, 418, 10_000];

    /// f64 reference: (loss, gradient) of softmax cross-entropy.
    fn reference(row: &[f32], target: usize, scale: f64) -> (f64, Vec<f64>) {
        let m = row
            .iter()
            .map(|&v| v as f64)
            .fold(f64::NEG_INFINITY, f64::max);
        let s: f64 = row.iter().map(|&v| (v as f64 - m).exp()).sum();
        let loss = s.ln() - (row[target] as f64 - m);
        let mut g: Vec<f64> = row
            .iter()
            .map(|&v| scale * (v as f64 - m).exp() / s)
            .collect();
        g[target] -= scale;
        (loss, g)
    }

    fn rel_err(got: f32, want: f64) -> f64 {
        (got as f64 - want).abs() / want.abs()
    }

    #[test]
    fn exp_accuracy_on_dense_sweep() {
        let n = 2_000_000;
        let (lo, hi) = (-87.3f32, 88.7f32);
        let xs: Vec<f32> = (0..=n)
            .map(|i| lo + (hi - lo) * i as f32 / n as f32)
            .collect();
        let scalar: Vec<f32> = xs.iter().map(|&x| exp_approx(x)).collect();
        for isa in Isa::available() {
            let mut ys = xs.clone();
            exp_inplace_with(isa, &mut ys);
            let mut worst = 0.0f64;
            for (i, (&x, &y)) in xs.iter().zip(&ys).enumerate() {
                worst = worst.max(rel_err(y, (x as f64).exp()));
                let vs_scalar = rel_err(y, scalar[i] as f64);
                assert!(
                    vs_scalar < 2.5e-7,
                    "{isa:?} vs portable at {x}: {vs_scalar:e}"
                );
            }
            println!("{isa:?}: exp max rel err {worst:e}");
            // Measured 8.4e-8 (AVX paths) and 8.2e-8 (portable); the requirement is 2e-7.
            assert!(worst < 1.2e-7, "{isa:?}: exp max rel err {worst:e}");
        }
    }

    #[test]
    fn exp_special_values() {
        let cases: [(f32, f32); 14] = [
            (0.0, 1.0),
            (-0.0, 1.0),
            (-87.34, 0.0),
            (-88.0, 0.0),
            (-100.0, 0.0),
            (-1e30, 0.0),
            (f32::NEG_INFINITY, 0.0),
            (f32::MIN, 0.0),
            (88.73, f32::INFINITY),
            (89.0, f32::INFINITY),
            (100.0, f32::INFINITY),
            (1e30, f32::INFINITY),
            (f32::INFINITY, f32::INFINITY),
            (f32::MAX, f32::INFINITY),
        ];
        for isa in Isa::available() {
            let mut v: Vec<f32> = cases.iter().map(|c| c.0).collect();
            v.extend([f32::NAN, -f32::NAN, 88.72, -87.33, 1e-30, -1e-30]);
            exp_inplace_with(isa, &mut v);
            for (i, &(x, want)) in cases.iter().enumerate() {
                assert_eq!(v[i], want, "{isa:?}: exp({x})");
            }
            let k = cases.len();
            assert!(v[k].is_nan() && v[k + 1].is_nan(), "{isa:?}: exp(NaN)");
            assert!(
                rel_err(v[k + 2], (88.72f32 as f64).exp()) < 2e-7,
                "{isa:?}: exp(88.72)"
            );
            let small = (-87.33f32 as f64).exp();
            assert!(rel_err(v[k + 3], small) < 2e-7, "{isa:?}: exp(-87.33)");
            assert_eq!([v[k + 4], v[k + 5]], [1.0, 1.0], "{isa:?}: exp(±tiny)");
        }
        assert_eq!(exp_approx(0.0), 1.0);
        assert_eq!(exp_approx(f32::NEG_INFINITY), 0.0);
    }

    #[test]
    fn exp_awkward_sizes_and_tails() {
        let mut rng = Rng(11);
        for &n in &SIZES {
            let x0 = rng.vec(n, -20.0, 20.0);
            for isa in Isa::available() {
                let mut buf = x0.clone();
                buf.extend([7.0f32; 19]);
                exp_inplace_with(isa, &mut buf[..n]);
                assert!(
                    buf[n..].iter().all(|&v| v == 7.0),
                    "{isa:?} n={n}: wrote past end"
                );
                for i in 0..n {
                    let e = rel_err(buf[i], (x0[i] as f64).exp());
                    assert!(e < 2e-7, "{isa:?} n={n} i={i}: {e:e}");
                    assert!(rel_err(buf[i], exp_approx(x0[i]) as f64) < 2.5e-7);
                }
            }
        }
    }

    /// Checks one row on every ISA against the f64 reference and the portable path.
    fn check_row(row: &[f32], target: usize, scale: f32) {
        let (want_loss, want_grad) = reference(row, target, scale as f64);
        let mut portable = row.to_vec();
        let portable_loss = softmax_xent_grad_row_with(Isa::Portable, &mut portable, target, scale);
        let n = row.len();
        for isa in Isa::available() {
            let mut g = row.to_vec();
            let loss = softmax_xent_grad_row_with(isa, &mut g, target, scale);
            // Relative 1e-5, plus an absolute floor for losses near 0 where ln(s ≈ 1) is
            // limited by the f32 rounding of s itself.
            let tol = 1e-5 * want_loss.abs() + 1e-6;
            assert!(
                (loss as f64 - want_loss).abs() <= tol,
                "{isa:?} n={n} t={target}: loss {loss} want {want_loss}"
            );
            assert!(
                (loss - portable_loss).abs() as f64 <= tol,
                "{isa:?} vs portable loss"
            );
            assert_eq!(
                xent_row_with(isa, row, target),
                loss,
                "{isa:?}: xent_row != grad loss"
            );
            let mut sum = 0.0f64;
            for j in 0..n {
                let err = (g[j] as f64 - want_grad[j]).abs();
                assert!(
                    err <= 1e-6 * scale as f64,
                    "{isa:?} n={n} j={j}: grad err {err:e}"
                );
                assert!(
                    (g[j] - portable[j]).abs() <= 1e-6 * scale,
                    "{isa:?} vs portable grad"
                );
                sum += g[j] as f64;
            }
            assert!(
                sum.abs() <= 1e-5 * scale as f64,
                "{isa:?} n={n}: grad sum {sum:e}"
            );
        }
    }

    #[test]
    fn softmax_xent_matches_f64_reference() {
        let mut rng = Rng(5);
        for &n in &ROW_LENS {
            for amp in [1.0f32, 30.0] {
                let row = rng.vec(n, -amp, amp);
                for target in [0, n / 2, n - 1] {
                    for scale in [1.0f32, 1.0 / 700.0] {
                        check_row(&row, target, scale);
                    }
                }
            }
        }
    }

    #[test]
    fn softmax_xent_peaked_and_huge_logits() {
        let n = 100;
        let mut rng = Rng(9);
        // Target is the clear winner (loss near 0) and a clear loser (loss near 60).
        let mut peaked = rng.vec(n, -1.0, 1.0);
        peaked[17] = 60.0;
        check_row(&peaked, 17, 1.0);
        check_row(&peaked, 3, 1.0);
        // Huge logits: max-subtraction must prevent overflow.
        let big: Vec<f32> = rng.vec(n, -3.0, 3.0).iter().map(|v| 1e4 + v).collect();
        check_row(&big, 5, 1.0);
        let mut spike = vec![0.0f32; 65];
        spike[64] = 1e4;
        for isa in Isa::available() {
            let mut g = spike.clone();
            let loss = softmax_xent_grad_row_with(isa, &mut g, 0, 1.0);
            assert_eq!(loss, 1e4, "{isa:?}");
            assert_eq!((g[0], g[64]), (-1.0, 1.0), "{isa:?}");
            let mut g = spike.clone();
            assert_eq!(
                softmax_xent_grad_row_with(isa, &mut g, 64, 1.0),
                0.0,
                "{isa:?}"
            );
            assert!(g.iter().all(|&v| v == 0.0), "{isa:?}");
            let big_neg: Vec<f32> = big.iter().map(|v| -v).collect();
            assert!(xent_row_with(isa, &big_neg, 0).is_finite(), "{isa:?}");
        }
    }

    /// `heads::not_a_log_prob` relies on this: a NaN or infinite logit anywhere in the row,
    /// target or not, at any lane or in the tail, makes the loss NaN; finite logits that put
    /// the target ~3.4e38 below the maximum make it +inf (probability 0), never NaN.
    #[test]
    fn non_finite_logits_give_nan_and_probability_zero_gives_inf() {
        for isa in Isa::available() {
            for n in [1usize, 2, 17, 33, 100] {
                for at in [0, n / 2, n - 1] {
                    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -f32::NAN] {
                        let mut row = vec![0.5f32; n];
                        row[at] = bad;
                        for target in [0, n - 1] {
                            let loss = xent_row_with(isa, &row, target);
                            // A lone -inf elsewhere is a probability-0 word, which is fine.
                            if bad == f32::NEG_INFINITY && target != at {
                                assert!(loss.is_finite(), "{isa:?} n={n} at={at}");
                            } else if bad == f32::NEG_INFINITY && n > 1 {
                                assert_eq!(loss, f32::INFINITY, "{isa:?} n={n} at={at}");
                            } else {
                                assert!(loss.is_nan(), "{isa:?} n={n} at={at} {bad} -> {loss}");
                            }
                        }
                    }
                }
                if n > 1 {
                    let mut row = vec![0.0f32; n];
                    row[n - 1] = 3e38;
                    row[0] = -3e38;
                    assert_eq!(xent_row_with(isa, &row, 0), f32::INFINITY, "{isa:?} n={n}");
                }
            }
        }
    }

    #[test]
    fn nan_logit_gives_nan_loss() {
        for isa in Isa::available() {
            for n in [1usize, 17, 100] {
                let mut row = vec![0.5f32; n];
                row[n / 2] = f32::NAN;
                assert!(xent_row_with(isa, &row, 0).is_nan(), "{isa:?} n={n}");
                assert!(softmax_xent_grad_row_with(isa, &mut row, 0, 1.0).is_nan());
            }
        }
    }

    #[test]
    fn softmax_row_matches_reference() {
        let mut rng = Rng(21);
        for &n in SIZES.iter().chain(&ROW_LENS) {
            let row = rng.vec(n, -30.0, 30.0);
            let m = row
                .iter()
                .map(|&v| v as f64)
                .fold(f64::NEG_INFINITY, f64::max);
            let s: f64 = row.iter().map(|&v| (v as f64 - m).exp()).sum();
            for isa in Isa::available() {
                let mut p = row.clone();
                softmax_row_with(isa, &mut p);
                for j in 0..n {
                    let want = (row[j] as f64 - m).exp() / s;
                    assert!((p[j] as f64 - want).abs() <= 1e-6, "{isa:?} n={n} j={j}");
                }
                if n > 0 {
                    let total: f64 = p.iter().map(|&v| v as f64).sum();
                    assert!((total - 1.0).abs() < 1e-5, "{isa:?} n={n}: sums to {total}");
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "out of range")]
    fn target_out_of_range_panics() {
        softmax_xent_grad_row(&mut [0.0; 3], 3, 1.0);
    }

    #[test]
    #[should_panic(expected = "out of range")]
    fn empty_row_panics() {
        xent_row(&[], 0);
    }
}
