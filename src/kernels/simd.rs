//! Lane abstraction shared by the element-wise kernels.
//!
//! Each kernel is written once as an `#[inline(always)]` body generic over [`Simd`] and compiled
//! into thin `#[target_feature]` shells (see [`dispatch!`]), the way the `matrixmultiply` crate
//! does it. [`Scalar`] (one lane, plain `f32`, mul+add where x86 paths use FMA) is the scalar
//! reference of every formula; [`Portable`] runs it on 8 lanes for non-x86 or old CPUs.

/// Vector operations one kernel body needs.
///
/// # Safety
/// Every method may execute instructions of the implementing ISA: callers must only call them
/// when that ISA is supported by the running CPU (checked by [`dispatch!`] through
/// [`crate::cpu::Isa::is_supported`]). Pointers must be valid for the stated number of `f32`s.
pub(crate) trait Simd {
    /// One vector of `LANES` f32 values.
    type V: Copy;
    /// Number of f32 lanes in [`Simd::V`].
    const LANES: usize;

    unsafe fn splat(x: f32) -> Self::V;
    /// Loads `LANES` values from `p`.
    unsafe fn load(p: *const f32) -> Self::V;
    /// Stores `LANES` values to `p`.
    unsafe fn store(p: *mut f32, v: Self::V);
    /// Loads `n < LANES` values from `p`; the other lanes are `pad`. Reads only `n` values.
    unsafe fn load_tail(p: *const f32, n: usize, pad: f32) -> Self::V;
    /// Stores the first `n < LANES` lanes of `v` to `p`. Writes only `n` values.
    unsafe fn store_tail(p: *mut f32, n: usize, v: Self::V);

    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn sub(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn div(a: Self::V, b: Self::V) -> Self::V;
    /// `a * b + c`, fused where the ISA has FMA (one rounding), else two roundings.
    unsafe fn mul_add(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// `max` for reductions (NaN handling unspecified).
    unsafe fn max(a: Self::V, b: Self::V) -> Self::V;
    /// `|a|` (clears the sign bit).
    unsafe fn abs(a: Self::V) -> Self::V;
    /// `mag` with the sign bit of `sign`; `mag` must have a clear sign bit.
    unsafe fn copysign(mag: Self::V, sign: Self::V) -> Self::V;
    /// `x` limited to `[lo, hi]`; a NaN `x` stays NaN.
    unsafe fn clamp(x: Self::V, lo: f32, hi: f32) -> Self::V;
    /// Round to the nearest integer, ties to even (only used for `|x| < 2^22`).
    unsafe fn round(x: Self::V) -> Self::V;
    /// `2^n` for integral `n` in `[-126, 127]`.
    unsafe fn pow2(n: Self::V) -> Self::V;
    /// `t * 2^n` for integral `n` in `[-126, 128]` and `t` in `[0.5, 2]`, overflowing to inf.
    unsafe fn ldexp(t: Self::V, n: Self::V) -> Self::V;
    /// `0` in lanes where `x < thr` (false for NaN), `v` elsewhere.
    unsafe fn zero_where_lt(x: Self::V, thr: f32, v: Self::V) -> Self::V;
    /// Sum of all lanes.
    unsafe fn reduce_add(v: Self::V) -> f32;
    /// Maximum of all lanes (NaN handling unspecified).
    unsafe fn reduce_max(v: Self::V) -> f32;
}

/// One-lane implementation: the scalar reference of every formula, and the per-lane
/// arithmetic of [`Portable`].
pub(crate) struct Scalar;

/// 1.5 * 2^23: adding and subtracting it rounds an `|x| < 2^22` to an integer (ties to even),
/// and the low mantissa bits of `x + MAGIC` then hold that integer in two's complement.
const ROUND_MAGIC: f32 = 12_582_912.0;

impl Simd for Scalar {
    type V = f32;
    const LANES: usize = 1;

    #[inline(always)]
    unsafe fn splat(x: f32) -> f32 {
        x
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> f32 {
        // SAFETY: the caller guarantees `p` is valid for one f32 (the `Simd` contract).
        unsafe { *p }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: f32) {
        // SAFETY: the caller guarantees `p` is valid for one f32 (the `Simd` contract).
        unsafe { *p = v }
    }
    #[inline(always)]
    unsafe fn load_tail(_p: *const f32, _n: usize, pad: f32) -> f32 {
        // With one lane the tail is always empty (n == 0).
        pad
    }
    #[inline(always)]
    unsafe fn store_tail(_p: *mut f32, _n: usize, _v: f32) {}

    #[inline(always)]
    unsafe fn add(a: f32, b: f32) -> f32 {
        a + b
    }
    #[inline(always)]
    unsafe fn sub(a: f32, b: f32) -> f32 {
        a - b
    }
    #[inline(always)]
    unsafe fn mul(a: f32, b: f32) -> f32 {
        a * b
    }
    #[inline(always)]
    unsafe fn div(a: f32, b: f32) -> f32 {
        a / b
    }
    #[inline(always)]
    unsafe fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        // Not `f32::mul_add`: without hardware FMA that is a slow libm call.
        a * b + c
    }
    #[inline(always)]
    unsafe fn max(a: f32, b: f32) -> f32 {
        if a > b {
            a
        } else {
            b
        }
    }
    #[inline(always)]
    unsafe fn abs(a: f32) -> f32 {
        a.abs()
    }
    #[inline(always)]
    unsafe fn copysign(mag: f32, sign: f32) -> f32 {
        mag.copysign(sign)
    }
    #[inline(always)]
    unsafe fn clamp(x: f32, lo: f32, hi: f32) -> f32 {
        // Comparisons (not f32::min/max, which drop NaN) so that NaN passes through.
        let x = if x < lo { lo } else { x };
        if x > hi {
            hi
        } else {
            x
        }
    }
    #[inline(always)]
    unsafe fn round(x: f32) -> f32 {
        // Branch-free and free of float->int casts, so loops over it still auto-vectorise.
        (x + ROUND_MAGIC) - ROUND_MAGIC
    }
    #[inline(always)]
    unsafe fn pow2(n: f32) -> f32 {
        pow2_of_int(int_of_integral(n))
    }
    #[inline(always)]
    unsafe fn ldexp(t: f32, n: f32) -> f32 {
        // Two factors 2^(n - n/2) and 2^(n/2), each a normal float, so that n = 128 (exp near
        // f32::MAX) is representable; only the last product rounds.
        let n = int_of_integral(n);
        let half = n >> 1;
        t * pow2_of_int(n.wrapping_sub(half)) * pow2_of_int(half)
    }
    #[inline(always)]
    unsafe fn zero_where_lt(x: f32, thr: f32, v: f32) -> f32 {
        if x < thr {
            0.0
        } else {
            v
        }
    }
    #[inline(always)]
    unsafe fn reduce_add(v: f32) -> f32 {
        v
    }
    #[inline(always)]
    unsafe fn reduce_max(v: f32) -> f32 {
        v
    }
}

/// The integer value of an integral `|n| < 2^22`, read from the bits of `n + ROUND_MAGIC`
/// (an `as` cast would stop auto-vectorisation). Wrapping arithmetic keeps a NaN `n` from
/// panicking in debug builds; the garbage result then only ever multiplies a NaN.
#[inline(always)]
fn int_of_integral(n: f32) -> i32 {
    ((n + ROUND_MAGIC).to_bits() as i32).wrapping_sub(ROUND_MAGIC.to_bits() as i32)
}

/// `2^i` for `i` in `[-126, 127]`, built from its exponent bits.
#[inline(always)]
fn pow2_of_int(i: i32) -> f32 {
    f32::from_bits((i.wrapping_add(127) as u32).wrapping_shl(23))
}

/// Portable path: 8 independent lanes of [`Scalar`] arithmetic in an array, so results equal
/// the scalar reference bit for bit while LLVM can still vectorise the lane loops (SSE2,
/// NEON, ...) and the row sums get 8 accumulators instead of one serial chain.
pub(crate) struct Portable;

type Lanes = [f32; 8];

/// Applies a [`Scalar`] operation lane-wise.
#[inline(always)]
fn lanewise(f: impl Fn(usize) -> f32) -> Lanes {
    std::array::from_fn(f)
}

impl Simd for Portable {
    type V = Lanes;
    const LANES: usize = 8;

    #[inline(always)]
    unsafe fn splat(x: f32) -> Lanes {
        [x; 8]
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Lanes {
        // SAFETY: the caller guarantees `p` is valid for 8 f32s (the `Simd` contract).
        unsafe { p.cast::<Lanes>().read_unaligned() }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: Lanes) {
        // SAFETY: the caller guarantees `p` is valid for 8 f32s (the `Simd` contract).
        unsafe { p.cast::<Lanes>().write_unaligned(v) }
    }
    #[inline(always)]
    unsafe fn load_tail(p: *const f32, n: usize, pad: f32) -> Lanes {
        // SAFETY: the caller guarantees `p` is valid for `n < 8` f32s (the `Simd` contract).
        unsafe {
            let mut buf = [pad; 8];
            std::ptr::copy_nonoverlapping(p, buf.as_mut_ptr(), n);
            buf
        }
    }
    #[inline(always)]
    unsafe fn store_tail(p: *mut f32, n: usize, v: Lanes) {
        // SAFETY: the caller guarantees `p` is valid for `n < 8` f32s (the `Simd` contract).
        unsafe {
            std::ptr::copy_nonoverlapping(v.as_ptr(), p, n);
        }
    }
    #[inline(always)]
    unsafe fn add(a: Lanes, b: Lanes) -> Lanes {
        // SAFETY: `Scalar`'s methods need no CPU feature and access no memory.
        unsafe { lanewise(|i| Scalar::add(a[i], b[i])) }
    }
    #[inline(always)]
    unsafe fn sub(a: Lanes, b: Lanes) -> Lanes {
        // SAFETY: `Scalar`'s methods need no CPU feature and access no memory.
        unsafe { lanewise(|i| Scalar::sub(a[i], b[i])) }
    }
    #[inline(always)]
    unsafe fn mul(a: Lanes, b: Lanes) -> Lanes {
        // SAFETY: `Scalar`'s methods need no CPU feature and access no memory.
        unsafe { lanewise(|i| Scalar::mul(a[i], b[i])) }
    }
    #[inline(always)]
    unsafe fn div(a: Lanes, b: Lanes) -> Lanes {
        // SAFETY: `Scalar`'s methods need no CPU feature and access no memory.
        unsafe { lanewise(|i| Scalar::div(a[i], b[i])) }
    }
    #[inline(always)]
    unsafe fn mul_add(a: Lanes, b: Lanes, c: Lanes) -> Lanes {
        // SAFETY: `Scalar`'s methods need no CPU feature and access no memory.
        unsafe { lanewise(|i| Scalar::mul_add(a[i], b[i], c[i])) }
    }
    #[inline(always)]
    unsafe fn max(a: Lanes, b: Lanes) -> Lanes {
        // SAFETY: `Scalar`'s methods need no CPU feature and access no memory.
        unsafe { lanewise(|i| Scalar::max(a[i], b[i])) }
    }
    #[inline(always)]
    unsafe fn abs(a: Lanes) -> Lanes {
        // SAFETY: `Scalar`'s methods need no CPU feature and access no memory.
        unsafe { lanewise(|i| Scalar::abs(a[i])) }
    }
    #[inline(always)]
    unsafe fn copysign(mag: Lanes, sign: Lanes) -> Lanes {
        // SAFETY: `Scalar`'s methods need no CPU feature and access no memory.
        unsafe { lanewise(|i| Scalar::copysign(mag[i], sign[i])) }
    }
    #[inline(always)]
    unsafe fn clamp(x: Lanes, lo: f32, hi: f32) -> Lanes {
        // SAFETY: `Scalar`'s methods need no CPU feature and access no memory.
        unsafe { lanewise(|i| Scalar::clamp(x[i], lo, hi)) }
    }
    #[inline(always)]
    unsafe fn round(x: Lanes) -> Lanes {
        // SAFETY: `Scalar`'s methods need no CPU feature and access no memory.
        unsafe { lanewise(|i| Scalar::round(x[i])) }
    }
    #[inline(always)]
    unsafe fn pow2(n: Lanes) -> Lanes {
        // SAFETY: `Scalar`'s methods need no CPU feature and access no memory.
        unsafe { lanewise(|i| Scalar::pow2(n[i])) }
    }
    #[inline(always)]
    unsafe fn ldexp(t: Lanes, n: Lanes) -> Lanes {
        // SAFETY: `Scalar`'s methods need no CPU feature and access no memory.
        unsafe { lanewise(|i| Scalar::ldexp(t[i], n[i])) }
    }
    #[inline(always)]
    unsafe fn zero_where_lt(x: Lanes, thr: f32, v: Lanes) -> Lanes {
        // SAFETY: `Scalar`'s methods need no CPU feature and access no memory.
        unsafe { lanewise(|i| Scalar::zero_where_lt(x[i], thr, v[i])) }
    }
    #[inline(always)]
    unsafe fn reduce_add(v: Lanes) -> f32 {
        // Pairwise, matching the shape of the x86 horizontal sums.
        let q: [f32; 4] = std::array::from_fn(|i| v[i] + v[i + 4]);
        (q[0] + q[2]) + (q[1] + q[3])
    }
    #[inline(always)]
    unsafe fn reduce_max(v: Lanes) -> f32 {
        // SAFETY: `Scalar`'s methods need no CPU feature and access no memory.
        unsafe {
            v.into_iter()
                .fold(f32::NEG_INFINITY, |a, b| Scalar::max(a, b))
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) use x86::{Avx2Fma, Avx512};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Simd;
    use std::arch::x86_64::*;

    /// AVX-512F + FMA, 16 lanes; tails use masked loads and stores.
    pub(crate) struct Avx512;

    /// Mask selecting the first `n < 16` lanes.
    #[inline(always)]
    fn tail_mask(n: usize) -> __mmask16 {
        ((1u32 << n) - 1) as __mmask16
    }

    impl Simd for Avx512 {
        type V = __m512;
        const LANES: usize = 16;

        #[inline(always)]
        unsafe fn splat(x: f32) -> __m512 {
            // SAFETY: the `Simd` contract: AVX-512F/FMA are supported by the running CPU.
            unsafe { _mm512_set1_ps(x) }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> __m512 {
            // SAFETY: the `Simd` contract: AVX-512F/FMA are supported and `p` is valid for 16 f32s.
            unsafe { _mm512_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: __m512) {
            // SAFETY: the `Simd` contract: AVX-512F/FMA are supported and `p` is valid for 16 f32s.
            unsafe { _mm512_storeu_ps(p, v) }
        }
        #[inline(always)]
        unsafe fn load_tail(p: *const f32, n: usize, pad: f32) -> __m512 {
            // SAFETY: the `Simd` contract: AVX-512F/FMA are supported, `p` is valid for `n` f32s.
            unsafe {
                // Masked-off lanes are not accessed (no fault), so only n values must be valid.
                _mm512_mask_loadu_ps(_mm512_set1_ps(pad), tail_mask(n), p)
            }
        }
        #[inline(always)]
        unsafe fn store_tail(p: *mut f32, n: usize, v: __m512) {
            // SAFETY: the `Simd` contract: AVX-512F/FMA are supported, `p` is valid for `n` f32s.
            unsafe { _mm512_mask_storeu_ps(p, tail_mask(n), v) }
        }
        #[inline(always)]
        unsafe fn add(a: __m512, b: __m512) -> __m512 {
            // SAFETY: the `Simd` contract: AVX-512F/FMA are supported by the running CPU.
            unsafe { _mm512_add_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn sub(a: __m512, b: __m512) -> __m512 {
            // SAFETY: the `Simd` contract: AVX-512F/FMA are supported by the running CPU.
            unsafe { _mm512_sub_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn mul(a: __m512, b: __m512) -> __m512 {
            // SAFETY: the `Simd` contract: AVX-512F/FMA are supported by the running CPU.
            unsafe { _mm512_mul_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn div(a: __m512, b: __m512) -> __m512 {
            // SAFETY: the `Simd` contract: AVX-512F/FMA are supported by the running CPU.
            unsafe { _mm512_div_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn mul_add(a: __m512, b: __m512, c: __m512) -> __m512 {
            // SAFETY: the `Simd` contract: AVX-512F/FMA are supported by the running CPU.
            unsafe { _mm512_fmadd_ps(a, b, c) }
        }
        #[inline(always)]
        unsafe fn max(a: __m512, b: __m512) -> __m512 {
            // SAFETY: the `Simd` contract: AVX-512F/FMA are supported by the running CPU.
            unsafe { _mm512_max_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn abs(a: __m512) -> __m512 {
            // SAFETY: the `Simd` contract: AVX-512F/FMA are supported by the running CPU.
            unsafe { _mm512_abs_ps(a) }
        }
        #[inline(always)]
        unsafe fn copysign(mag: __m512, sign: __m512) -> __m512 {
            // SAFETY: the `Simd` contract: AVX-512F/FMA are supported by the running CPU.
            unsafe {
                // AVX-512F has no float and/or (that is DQ), so go through the integer domain.
                let s = _mm512_and_si512(_mm512_castps_si512(sign), _mm512_set1_epi32(i32::MIN));
                _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(mag), s))
            }
        }
        #[inline(always)]
        unsafe fn clamp(x: __m512, lo: f32, hi: f32) -> __m512 {
            // SAFETY: the `Simd` contract: AVX-512F/FMA are supported by the running CPU.
            unsafe {
                // vminps/vmaxps return the second operand when either is NaN: keep x second.
                _mm512_max_ps(_mm512_set1_ps(lo), _mm512_min_ps(_mm512_set1_ps(hi), x))
            }
        }
        #[inline(always)]
        unsafe fn round(x: __m512) -> __m512 {
            // SAFETY: the `Simd` contract: AVX-512F/FMA are supported by the running CPU.
            unsafe { _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(x) }
        }
        #[inline(always)]
        unsafe fn pow2(n: __m512) -> __m512 {
            // SAFETY: the `Simd` contract: AVX-512F/FMA are supported by the running CPU.
            unsafe { _mm512_scalef_ps(_mm512_set1_ps(1.0), n) }
        }
        #[inline(always)]
        unsafe fn ldexp(t: __m512, n: __m512) -> __m512 {
            // SAFETY: the `Simd` contract: AVX-512F/FMA are supported by the running CPU.
            unsafe {
                // vscalefps handles every exponent (overflow to inf) in one exact step.
                _mm512_scalef_ps(t, n)
            }
        }
        #[inline(always)]
        unsafe fn zero_where_lt(x: __m512, thr: f32, v: __m512) -> __m512 {
            // SAFETY: the `Simd` contract: AVX-512F/FMA are supported by the running CPU.
            unsafe {
                let lt = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, _mm512_set1_ps(thr));
                _mm512_mask_mov_ps(v, lt, _mm512_setzero_ps())
            }
        }
        #[inline(always)]
        unsafe fn reduce_add(v: __m512) -> f32 {
            // SAFETY: the `Simd` contract: AVX-512F/FMA are supported by the running CPU.
            unsafe { _mm512_reduce_add_ps(v) }
        }
        #[inline(always)]
        unsafe fn reduce_max(v: __m512) -> f32 {
            // SAFETY: the `Simd` contract: AVX-512F/FMA are supported by the running CPU.
            unsafe { _mm512_reduce_max_ps(v) }
        }
    }

    /// AVX2 + FMA, 8 lanes; tails go through a padded stack buffer.
    pub(crate) struct Avx2Fma;

    #[inline(always)]
    unsafe fn exponent_bits(n: __m256i) -> __m256 {
        // SAFETY: the caller guarantees AVX2 is supported by the running CPU.
        unsafe {
            _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
                n,
                _mm256_set1_epi32(127),
            )))
        }
    }

    impl Simd for Avx2Fma {
        type V = __m256;
        const LANES: usize = 8;

        #[inline(always)]
        unsafe fn splat(x: f32) -> __m256 {
            // SAFETY: the `Simd` contract: AVX2/FMA are supported by the running CPU.
            unsafe { _mm256_set1_ps(x) }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> __m256 {
            // SAFETY: the `Simd` contract: AVX2/FMA are supported and `p` is valid for 8 f32s.
            unsafe { _mm256_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: __m256) {
            // SAFETY: the `Simd` contract: AVX2/FMA are supported and `p` is valid for 8 f32s.
            unsafe { _mm256_storeu_ps(p, v) }
        }
        #[inline(always)]
        unsafe fn load_tail(p: *const f32, n: usize, pad: f32) -> __m256 {
            // SAFETY: the `Simd` contract: AVX2/FMA are supported and `p` is valid for `n` f32s.
            unsafe {
                let mut buf = [pad; 8];
                std::ptr::copy_nonoverlapping(p, buf.as_mut_ptr(), n);
                _mm256_loadu_ps(buf.as_ptr())
            }
        }
        #[inline(always)]
        unsafe fn store_tail(p: *mut f32, n: usize, v: __m256) {
            // SAFETY: the `Simd` contract: AVX2/FMA are supported and `p` is valid for `n` f32s.
            unsafe {
                let mut buf = [0.0f32; 8];
                _mm256_storeu_ps(buf.as_mut_ptr(), v);
                std::ptr::copy_nonoverlapping(buf.as_ptr(), p, n);
            }
        }
        #[inline(always)]
        unsafe fn add(a: __m256, b: __m256) -> __m256 {
            // SAFETY: the `Simd` contract: AVX2/FMA are supported by the running CPU.
            unsafe { _mm256_add_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn sub(a: __m256, b: __m256) -> __m256 {
            // SAFETY: the `Simd` contract: AVX2/FMA are supported by the running CPU.
            unsafe { _mm256_sub_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn mul(a: __m256, b: __m256) -> __m256 {
            // SAFETY: the `Simd` contract: AVX2/FMA are supported by the running CPU.
            unsafe { _mm256_mul_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn div(a: __m256, b: __m256) -> __m256 {
            // SAFETY: the `Simd` contract: AVX2/FMA are supported by the running CPU.
            unsafe { _mm256_div_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn mul_add(a: __m256, b: __m256, c: __m256) -> __m256 {
            // SAFETY: the `Simd` contract: AVX2/FMA are supported by the running CPU.
            unsafe { _mm256_fmadd_ps(a, b, c) }
        }
        #[inline(always)]
        unsafe fn max(a: __m256, b: __m256) -> __m256 {
            // SAFETY: the `Simd` contract: AVX2/FMA are supported by the running CPU.
            unsafe { _mm256_max_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn abs(a: __m256) -> __m256 {
            // SAFETY: the `Simd` contract: AVX2/FMA are supported by the running CPU.
            unsafe { _mm256_andnot_ps(_mm256_set1_ps(-0.0), a) }
        }
        #[inline(always)]
        unsafe fn copysign(mag: __m256, sign: __m256) -> __m256 {
            // SAFETY: the `Simd` contract: AVX2/FMA are supported by the running CPU.
            unsafe { _mm256_or_ps(mag, _mm256_and_ps(sign, _mm256_set1_ps(-0.0))) }
        }
        #[inline(always)]
        unsafe fn clamp(x: __m256, lo: f32, hi: f32) -> __m256 {
            // SAFETY: the `Simd` contract: AVX2/FMA are supported by the running CPU.
            unsafe {
                // vminps/vmaxps return the second operand when either is NaN: keep x second.
                _mm256_max_ps(_mm256_set1_ps(lo), _mm256_min_ps(_mm256_set1_ps(hi), x))
            }
        }
        #[inline(always)]
        unsafe fn round(x: __m256) -> __m256 {
            // SAFETY: the `Simd` contract: AVX2/FMA are supported by the running CPU.
            unsafe { _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(x) }
        }
        #[inline(always)]
        unsafe fn pow2(n: __m256) -> __m256 {
            // SAFETY: the `Simd` contract: AVX2/FMA are supported by the running CPU.
            unsafe { exponent_bits(_mm256_cvtps_epi32(n)) }
        }
        #[inline(always)]
        unsafe fn ldexp(t: __m256, n: __m256) -> __m256 {
            // SAFETY: the `Simd` contract: AVX2/FMA are supported by the running CPU.
            unsafe {
                // Two normal factors 2^(n - n/2) and 2^(n/2) so that n = 128 is representable.
                let n = _mm256_cvtps_epi32(n);
                let half = _mm256_srai_epi32::<1>(n);
                let s1 = exponent_bits(_mm256_sub_epi32(n, half));
                _mm256_mul_ps(_mm256_mul_ps(t, s1), exponent_bits(half))
            }
        }
        #[inline(always)]
        unsafe fn zero_where_lt(x: __m256, thr: f32, v: __m256) -> __m256 {
            // SAFETY: the `Simd` contract: AVX2/FMA are supported by the running CPU.
            unsafe {
                let lt = _mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_set1_ps(thr));
                _mm256_andnot_ps(lt, v)
            }
        }
        #[inline(always)]
        unsafe fn reduce_add(v: __m256) -> f32 {
            // SAFETY: the `Simd` contract: AVX2/FMA are supported by the running CPU.
            unsafe {
                let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
                let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
                _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps::<1>(s, s)))
            }
        }
        #[inline(always)]
        unsafe fn reduce_max(v: __m256) -> f32 {
            // SAFETY: the `Simd` contract: AVX2/FMA are supported by the running CPU.
            unsafe {
                let s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
                let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
                _mm_cvtss_f32(_mm_max_ss(s, _mm_shuffle_ps::<1>(s, s)))
            }
        }
    }
}

/// Defines a private `fn $name(isa: Isa, args..) -> ret` that runs the generic
/// `unsafe fn $body::<S: Simd>(args..)` compiled for `isa`: AVX-512 and AVX2 bodies are
/// instantiated inside `#[target_feature]` shells so their intrinsics inline. The portable
/// body uses [`Portable`] unless `; portable = Scalar` is given (better for simple map
/// loops, which LLVM vectorises on its own). Panics if `isa` is not supported by this CPU.
macro_rules! dispatch {
    (fn $name:ident = $body:ident ( $($arg:ident : $ty:ty),* $(,)? ) $(-> $ret:ty)?) => {
        dispatch!(fn $name = $body($($arg: $ty),*) $(-> $ret)?; portable = Portable);
    };
    (fn $name:ident = $body:ident ( $($arg:ident : $ty:ty),* $(,)? ) $(-> $ret:ty)?;
     portable = $portable:ident) => {
        fn $name(isa: $crate::cpu::Isa, $($arg: $ty),*) $(-> $ret)? {
            assert!(isa.is_supported(), "{} is not supported by this CPU", isa.name());
            match isa {
                #[cfg(target_arch = "x86_64")]
                $crate::cpu::Isa::Avx512 => {
                    #[target_feature(enable = "avx512f,fma")]
                    unsafe fn shell($($arg: $ty),*) $(-> $ret)? {
                        // SAFETY: this shell is only entered after the AVX-512F/FMA check.
                        unsafe { $body::<$crate::kernels::simd::Avx512>($($arg),*) }
                    }
                    // SAFETY: `isa.is_supported()` asserted above, so AVX-512F and FMA exist.
                    unsafe { shell($($arg),*) }
                }
                #[cfg(target_arch = "x86_64")]
                $crate::cpu::Isa::Avx2Fma => {
                    #[target_feature(enable = "avx2,fma")]
                    unsafe fn shell($($arg: $ty),*) $(-> $ret)? {
                        // SAFETY: this shell is only entered after the AVX2/FMA check.
                        unsafe { $body::<$crate::kernels::simd::Avx2Fma>($($arg),*) }
                    }
                    // SAFETY: `isa.is_supported()` asserted above, so AVX2 and FMA exist.
                    unsafe { shell($($arg),*) }
                }
                // SAFETY: the portable implementation needs no CPU feature.
                _ => unsafe { $body::<$crate::kernels::simd::$portable>($($arg),*) },
            }
        }
    };
}
pub(crate) use dispatch;
