//! Range-reduced `exp`/`expm1` core shared by [`super::softmax`] (exp) and [`super::tanh`].

use super::simd::Simd;

/// `ln 2` split for Cody-Waite reduction: `LN2_HI` has 9 significant bits, so `n * LN2_HI` is
/// exact for the `|n| <= 128` used here and `x - n * LN2_HI` loses nothing.
const LN2_HI: f32 = 0.693_359_4; // = 355/512 exactly
/// `ln 2 - LN2_HI`.
const LN2_LO: f32 = -2.121_944_4e-4;

/// Minimax coefficients of `(expm1(r) - r) / r^2 ≈ C2 + C3 r + .. + C6 r^4` on `|r| <= ln2/2`,
/// fitted for the relative error of `expm1(r)` (1.6e-8 with these f32 values).
const C2: f32 = 0.5;
const C3: f32 = 0.166_665_43;
const C4: f32 = 0.041_666_28;
const C5: f32 = 0.008_366_574_5;
const C6: f32 = 0.001_394_644_1;

/// Splits `x = n ln2 + r` with `n` integral and `|r| <= ln2/2`, returning `(n, expm1(r))`.
/// `|x|` must be below `128.5 ln2` so `n` stays in `[-128, 128]`.
///
/// # Safety
/// `S`'s ISA must be supported by the running CPU.
#[inline(always)]
pub(super) unsafe fn reduce<S: Simd>(x: S::V) -> (S::V, S::V) {
    // SAFETY: the caller guarantees `S`'s ISA is supported by this CPU (the `Simd` contract).
    unsafe {
        let n = S::round(S::mul(x, S::splat(std::f32::consts::LOG2_E)));
        let r = S::mul_add(n, S::splat(-LN2_HI), x);
        let r = S::mul_add(n, S::splat(-LN2_LO), r);
        let mut p = S::splat(C6);
        p = S::mul_add(p, r, S::splat(C5));
        p = S::mul_add(p, r, S::splat(C4));
        p = S::mul_add(p, r, S::splat(C3));
        p = S::mul_add(p, r, S::splat(C2));
        // expm1(r) = r + r^2 p keeps full relative accuracy for tiny r (tanh near 0 needs it).
        (n, S::mul_add(p, S::mul(r, r), r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::simd::Scalar;

    #[test]
    fn ln2_split_is_exact_enough() {
        let sum = LN2_HI as f64 + LN2_LO as f64;
        assert!((sum - std::f64::consts::LN_2).abs() < 1e-11);
        // 9 significant bits: n * LN2_HI exact for |n| <= 2^15.
        assert_eq!((LN2_HI * 512.0).fract(), 0.0);
    }

    #[test]
    fn expm1_polynomial_relative_error() {
        let mut worst = 0.0f64;
        for i in -20_000..=20_000 {
            let x = i as f32 * (0.5 * std::f32::consts::LN_2 / 20_000.0);
            // SAFETY: Scalar needs no CPU feature.
            let (n, em) = unsafe { reduce::<Scalar>(x) };
            assert_eq!(n, 0.0);
            let want = (x as f64).exp_m1();
            if x != 0.0 {
                worst = worst.max(((em as f64 - want) / want).abs());
            } else {
                assert_eq!(em, 0.0);
            }
        }
        // Polynomial error 1.6e-8 plus a few f32 roundings of the evaluation.
        assert!(worst < 2.5e-7, "expm1 core rel err {worst:e}");
    }
}
