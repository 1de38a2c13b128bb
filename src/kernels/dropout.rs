//! Inverted dropout with counter-based masks, vectorised per ISA.
//!
//! A mask element is a pure function of `(seed, step, site, flat index)`: no generator state is
//! carried between calls. So the forward pass can be split across threads any way (each task
//! passes the flat index of its first element as `base`), and the backward pass regenerates the
//! identical mask from the same [`DropoutKey`] and `base` instead of storing it.
//!
//! The mask is pure 32-bit integer arithmetic (wrapping multiplies, shifts, xors, one unsigned
//! compare), so it is bit-identical on every ISA and however a slice is split into calls; the
//! only float operation is one multiply of kept values by `1 / (1 - p)`.
//!
//! Vectorisation: the body is a plain scalar loop that LLVM auto-vectorises inside the
//! `#[target_feature]` shells of `dispatch!`. `objdump -d` of the release test binary shows
//! the AVX-512 shells' main loops on `zmm` (4 `vpmulld zmm`, `vpternlogd`, `vpcmpnltud` into a
//! mask register for the keep decision) with an `xmm` epilogue, the AVX2 shells on `ymm`
//! (4 `vpmulld ymm`), and the portable SSE2 build 4 lanes wide with each 32-bit multiply
//! emulated by `pmuludq` + `pshufd`. A throwaway timing (2^20 floats in place, p = 0.3,
//! median of 50, on a shared 2-core AVX-512 machine) gave AVX-512 0.145 ms, AVX2 0.32 ms,
//! portable 1.4 ms, against 5.7 ms for a scalar loop kept from vectorising with `black_box`
//! on the counter (there the select becomes an unpredictable branch).

use super::simd::dispatch;
use crate::cpu::{isa, Isa};

/// The per-(seed, step, site) key of a dropout mask.
///
/// Derived by absorbing `seed`, `step` and `site` one after the other into a splitmix64-style
/// 64-bit mix; each absorption is a bijection of the absorbed word, so changing any single one
/// of the three always changes the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DropoutKey {
    /// Xored into the low 32 bits of the counter before the first mixing round.
    k0: u32,
    /// Xored (with the high 32 bits of the counter) between the two mixing rounds.
    k1: u32,
}

/// `"dropout"` in ASCII: the state the key derivation starts from, so that a key is not simply
/// a mix of the raw seed that some other seeded stream might also use.
const KEY_DOMAIN: u64 = 0x0064_726f_706f_7574;
/// The splitmix64 increment (2^64 / golden ratio).
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// The splitmix64 finaliser: a bijection of `u64` with full avalanche.
#[inline]
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Mixes `word` into `state` (bijective in `word` for a fixed `state`, and vice versa).
#[inline]
fn absorb(state: u64, word: u64) -> u64 {
    mix64((state ^ word).wrapping_add(GOLDEN))
}

impl DropoutKey {
    /// The key of dropout site `site` in training step `step` of the run seeded with `seed`.
    ///
    /// `state = absorb(absorb(absorb(0x0064726f706f7574, seed), step), site)` with
    /// `absorb(s, w) = splitmix64_finaliser((s ^ w) + 0x9E3779B97F4A7C15)` (wrapping), then
    /// `k0 = low 32 bits of state`, `k1 = high 32 bits`. Part of the mask definition: see
    /// [`keep`].
    pub fn new(seed: u64, step: u64, site: u32) -> Self {
        let state = absorb(absorb(absorb(KEY_DOMAIN, seed), step), u64::from(site));
        DropoutKey {
            k0: state as u32,
            k1: (state >> 32) as u32,
        }
    }
}

/// The `lowbias32` integer finaliser (Chris Wellons' hash-prospector, bias ~0.17): a bijection
/// of `u32` built only from xorshifts and wrapping multiplies, which vectorise (`vpmulld`).
#[inline(always)]
fn lowbias32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^= x >> 16;
    x
}

/// The 32-bit hash of counter `lo` whose loop-invariant part `k1 ^ hi32(counter)` is `c1`.
#[inline(always)]
fn hash_lo(k0: u32, c1: u32, lo: u32) -> u32 {
    lowbias32(lowbias32(lo ^ k0) ^ c1)
}

/// The mask hash of flat counter `i`:
/// `lowbias32(lowbias32(lo32(i) ^ k0) ^ hi32(i) ^ k1)`.
#[cfg(test)]
pub(crate) fn hash(key: DropoutKey, i: u64) -> u32 {
    hash_lo(key.k0, key.k1 ^ (i >> 32) as u32, i as u32)
}

/// `round(p * 2^24)`: an element is kept iff the top 24 bits of its hash are `>=` this.
///
/// Panics unless `0 <= p < 1` (NaN included), with the message every entry shares.
fn threshold(p: f32) -> u32 {
    assert!(
        (0.0..1.0).contains(&p),
        "dropout: p must be in [0, 1), got {p}"
    );
    // p * 2^24 is exact (a power-of-two scaling) and at most 2^24 - 1 for the largest f32
    // below 1, so the threshold always lets some values through.
    (p * 16_777_216.0).round() as u32
}

/// Whether the element at flat counter `i` is kept (probability `1 - p`, to within 2^-24).
///
/// This is the definition of every mask: with `h = lowbias32(lowbias32(lo32(i) ^ k0) ^
/// hi32(i) ^ k1)` (32-bit wrapping arithmetic; `lowbias32(x)`: `x ^= x >> 16; x *=
/// 0x7feb352d; x ^= x >> 15; x *= 0x846ca68b; x ^= x >> 16`) and `(k0, k1)` from
/// [`DropoutKey::new`], the element is kept iff `(h >> 8) >= round(p * 2^24)`.
///
/// **Stability:** resumed runs regenerate masks from this function, so it must never change:
/// changing the hash, the key derivation or the threshold changes the result of every run that
/// uses dropout (and makes a resumed run diverge from the one it continues).
///
/// Panics unless `0 <= p < 1`.
#[cfg(test)]
pub fn keep(key: DropoutKey, i: u64, p: f32) -> bool {
    (hash(key, i) >> 8) >= threshold(p)
}

/// Inverted dropout in place: `x[j] = keep(key, base + j, p) ? x[j] * (1 / (1 - p)) : 0.0`.
///
/// `1 / (1 - p)` is computed once in f32. Dropped elements become exactly `0.0` by selection,
/// not by multiplying by 0, so a dropped NaN or infinity also becomes `0.0`; a kept NaN stays
/// NaN (and a kept infinity stays infinite). `p == 0` leaves `x` untouched. Counters are
/// `base + j` modulo 2^64. The result is bit-identical on every ISA and however `x` is split
/// into calls (with matching `base`s), so the backward pass can apply the same mask to the
/// gradient by calling this with the same `key` and `base`.
///
/// Panics unless `0 <= p < 1`.
pub fn apply(x: &mut [f32], key: DropoutKey, base: u64, p: f32) {
    apply_with(isa(), x, key, base, p)
}

/// [`apply`] on the code path of `isa`. Panics unless `0 <= p < 1`, or if `isa` is unsupported.
pub fn apply_with(isa: Isa, x: &mut [f32], key: DropoutKey, base: u64, p: f32) {
    let thr = threshold(p);
    if thr == 0 {
        // thr == 0 means p < 2^-25 (in practice p == 0): every element is kept and 1 - p rounds
        // to 1, so the pass would multiply by exactly 1. Skip it (which also keeps signalling
        // NaN payloads as they are).
        return;
    }
    apply_dispatch(isa, x, key, base, thr, 1.0 / (1.0 - p))
}

/// Out-of-place [`apply`]: `out[j] = keep(key, base + j, p) ? x[j] * (1 / (1 - p)) : 0.0`.
///
/// Same mask, scaling and NaN handling as [`apply`] (`p == 0` copies `x`). Panics if the
/// lengths differ or unless `0 <= p < 1`.
pub fn apply_to(out: &mut [f32], x: &[f32], key: DropoutKey, base: u64, p: f32) {
    apply_to_with(isa(), out, x, key, base, p)
}

/// [`apply_to`] on the code path of `isa`. Panics if the lengths differ, unless `0 <= p < 1`,
/// or if `isa` is unsupported.
pub fn apply_to_with(isa: Isa, out: &mut [f32], x: &[f32], key: DropoutKey, base: u64, p: f32) {
    assert_eq!(out.len(), x.len(), "dropout: out and x lengths differ");
    let thr = threshold(p);
    if thr == 0 {
        // As in `apply_with`: all kept with scale 1.
        out.copy_from_slice(x);
        return;
    }
    apply_to_dispatch(isa, out, x, key, base, thr, 1.0 / (1.0 - p))
}

// The bodies are plain scalar loops that LLVM vectorises by itself, so the portable path is the
// same loop compiled for the baseline target.
dispatch!(
    fn apply_dispatch = apply_body(
        x: &mut [f32], key: DropoutKey, base: u64, thr: u32, scale: f32);
    portable = Scalar
);
dispatch!(
    fn apply_to_dispatch = apply_to_body(
        out: &mut [f32], x: &[f32], key: DropoutKey, base: u64, thr: u32, scale: f32);
    portable = Scalar
);

/// Calls `f(range, lo, c1)` for consecutive index ranges of `0..len` within which the high
/// 32 bits of the counter `base + j` are constant: `lo` is the low 32 bits of the counter at
/// `range.start` and `c1 = k1 ^ hi32`. Inside a range the counter is then a `u32` that never
/// wraps and the hash's `c1` is loop-invariant, which is what lets the inner loops vectorise.
/// In practice there is one range (`base + len <= 2^32`).
#[inline(always)]
fn for_each_segment(
    len: usize,
    key: DropoutKey,
    base: u64,
    mut f: impl FnMut(std::ops::Range<usize>, u32, u32),
) {
    let mut j = 0;
    while j < len {
        let i = base.wrapping_add(j as u64);
        let lo = i as u32;
        // Elements left before the low word wraps (at least 1, at most 2^32).
        let room = (1u64 << 32) - u64::from(lo);
        let n = usize::try_from(room).map_or(len - j, |r| r.min(len - j));
        f(j..j + n, lo, key.k1 ^ (i >> 32) as u32);
        j += n;
    }
}

/// The masked value of one element with counter low word `lo`.
#[inline(always)]
fn masked(v: f32, k0: u32, c1: u32, lo: u32, thr: u32, scale: f32) -> f32 {
    // A select, not `v * (0 or scale)`, so that a dropped NaN/inf becomes exactly 0.
    if (hash_lo(k0, c1, lo) >> 8) >= thr {
        v * scale
    } else {
        0.0
    }
}

/// # Safety
/// None of its own: the loop is safe Rust. `unsafe` only because `dispatch!` calls bodies in an
/// `unsafe` block.
// `S` is unused on purpose: `dispatch!` names one instantiation per ISA, and inlining each into
// its `#[target_feature]` shell is what gets the loop auto-vectorised for that ISA.
#[allow(clippy::extra_unused_type_parameters)]
#[inline(always)]
unsafe fn apply_body<S>(x: &mut [f32], key: DropoutKey, base: u64, thr: u32, scale: f32) {
    for_each_segment(x.len(), key, base, |range, lo0, c1| {
        let mut lo = lo0;
        for v in &mut x[range] {
            *v = masked(*v, key.k0, c1, lo, thr, scale);
            // Never wraps inside a segment except after its last element.
            lo = lo.wrapping_add(1);
        }
    })
}

/// # Safety
/// As [`apply_body`]. Panics if `out.len() != x.len()`.
#[allow(clippy::extra_unused_type_parameters)] // see `apply_body`
#[inline(always)]
unsafe fn apply_to_body<S>(
    out: &mut [f32],
    x: &[f32],
    key: DropoutKey,
    base: u64,
    thr: u32,
    scale: f32,
) {
    assert!(out.len() == x.len());
    for_each_segment(x.len(), key, base, |range, lo0, c1| {
        let mut lo = lo0;
        for (o, &v) in out[range.clone()].iter_mut().zip(&x[range]) {
            *o = masked(v, key.k0, c1, lo, thr, scale);
            lo = lo.wrapping_add(1);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::kernels::test_rng::Rng;

    const SIZES: [usize; 6] = [0, 1, 15, 16, 17, 1000];
    const PS: [f32; 5] = [0.1, 0.25, 0.5, 0.65, 0.9];
    const N_STAT: u64 = 1 << 20;

    /// The reference of [`apply`], element by element through [`keep`].
    fn reference(x: &[f32], key: DropoutKey, base: u64, p: f32) -> Vec<f32> {
        let scale = 1.0 / (1.0 - p);
        x.iter()
            .enumerate()
            .map(|(j, &v)| {
                if keep(key, base.wrapping_add(j as u64), p) {
                    v * scale
                } else {
                    0.0
                }
            })
            .collect()
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// Asserts `count / n` is within 5 standard deviations of `prob`.
    fn assert_rate(count: u64, n: u64, prob: f64, what: &str) {
        let rate = count as f64 / n as f64;
        let sd = (prob * (1.0 - prob) / n as f64).sqrt();
        assert!(
            (rate - prob).abs() <= 5.0 * sd,
            "{what}: rate {rate} vs expected {prob} (sd {sd:e})"
        );
    }

    /// Expected agreement of two independent masks with drop probability `p`.
    fn agreement(p: f32) -> f64 {
        let p = p as f64;
        p * p + (1.0 - p) * (1.0 - p)
    }

    /// How many of the first `N_STAT` counters the two keys' masks agree on.
    fn agree_count(a: DropoutKey, b: DropoutKey, p: f32) -> u64 {
        (0..N_STAT)
            .filter(|&i| keep(a, i, p) == keep(b, i, p))
            .count() as u64
    }

    #[test]
    fn every_isa_matches_reference_on_all_sizes() {
        let mut rng = Rng(11);
        let key = DropoutKey::new(1, 2, 3);
        for &n in &SIZES {
            let x = rng.vec(n, -3.0, 3.0);
            for &p in &[0.0, 0.1, 0.5, 0.9] {
                for base in [0u64, 5, 1 << 20, u64::MAX - 3] {
                    let want = bits(&reference(&x, key, base, p));
                    for isa in Isa::available() {
                        let mut y = x.clone();
                        apply_with(isa, &mut y, key, base, p);
                        assert_eq!(bits(&y), want, "{isa:?} n={n} p={p} base={base}");
                        let mut out = vec![f32::NAN; n];
                        apply_to_with(isa, &mut out, &x, key, base, p);
                        assert_eq!(bits(&out), want, "{isa:?} apply_to n={n} p={p}");
                    }
                }
            }
        }
    }

    #[test]
    fn split_invariance_on_every_isa() {
        let mut rng = Rng(5);
        let key = DropoutKey::new(42, 7, 1);
        let n = 3000;
        let x = rng.vec(n, -2.0, 2.0);
        // One base in the usual range, one whose counters cross a 2^32 boundary mid-slice.
        for base in [123_456u64, (1u64 << 32) - 1500] {
            let want = bits(&reference(&x, key, base, 0.35));
            for isa in Isa::available() {
                let mut whole = x.clone();
                apply_with(isa, &mut whole, key, base, 0.35);
                assert_eq!(bits(&whole), want, "{isa:?} base={base}");
                // Arbitrary cuts, including empty and odd-sized pieces.
                let mut split = x.clone();
                let mut out = vec![0.0; n];
                let mut start = 0;
                let mut cuts = [0usize, 1, 17, 16, 0, 333, 15, 1000, 7].into_iter().cycle();
                while start < n {
                    let end = (start + cuts.next().unwrap()).min(n);
                    let b = base + start as u64;
                    apply_with(isa, &mut split[start..end], key, b, 0.35);
                    apply_to_with(isa, &mut out[start..end], &x[start..end], key, b, 0.35);
                    start = end;
                }
                assert_eq!(bits(&split), want, "{isa:?} split base={base}");
                assert_eq!(bits(&out), want, "{isa:?} split apply_to base={base}");
            }
        }
    }

    #[test]
    fn keep_rate_matches_p() {
        let key = DropoutKey::new(2024, 0, 0);
        for p in PS {
            let kept = (0..N_STAT).filter(|&i| keep(key, i, p)).count() as u64;
            assert_rate(kept, N_STAT, 1.0 - p as f64, &format!("keep rate p={p}"));
        }
        // The kernels agree: count the nonzero outputs of an all-ones slice.
        for isa in Isa::available() {
            let mut x = vec![1.0f32; N_STAT as usize];
            apply_with(isa, &mut x, key, 0, 0.25);
            let kept = x.iter().filter(|&&v| v != 0.0).count() as u64;
            assert_rate(kept, N_STAT, 0.75, &format!("{isa:?} kernel keep rate"));
            assert!(x.iter().all(|&v| v == 0.0 || v == 1.0 / 0.75));
        }
    }

    #[test]
    fn p_zero_leaves_values_unchanged() {
        let key = DropoutKey::new(9, 9, 9);
        let mut x = Rng(1).vec(1000, -5.0, 5.0);
        x.extend([f32::NAN, f32::INFINITY, -0.0, f32::from_bits(0x7fa0_0001)]);
        assert!((0..N_STAT).all(|i| keep(key, i, 0.0)));
        for isa in Isa::available() {
            let mut y = x.clone();
            apply_with(isa, &mut y, key, 77, 0.0);
            assert_eq!(bits(&y), bits(&x), "{isa:?}");
            let mut out = vec![0.0; x.len()];
            apply_to_with(isa, &mut out, &x, key, 77, 0.0);
            assert_eq!(bits(&out), bits(&x), "{isa:?} apply_to");
        }
    }

    #[test]
    fn threshold_is_rounded_p_times_2_pow_24() {
        assert_eq!(threshold(0.0), 0);
        assert_eq!(threshold(0.5), 1 << 23);
        assert_eq!(threshold(0.25), 1 << 22);
        // The largest p below 1 still keeps 1 value in 2^24.
        assert_eq!(threshold(1.0 - f32::EPSILON / 2.0), (1 << 24) - 1);
        assert_eq!(threshold(0.1), (0.1f64 * 16_777_216.0).round() as u32);
    }

    #[test]
    fn masks_of_different_sites_steps_and_seeds_are_independent() {
        let base = DropoutKey::new(1, 100, 0);
        let others = [
            ("site", DropoutKey::new(1, 100, 1)),
            ("site", DropoutKey::new(1, 100, 2)),
            ("step", DropoutKey::new(1, 101, 0)),
            ("step", DropoutKey::new(1, 99, 0)),
            ("seed", DropoutKey::new(2, 100, 0)),
            ("seed", DropoutKey::new(0, 100, 0)),
        ];
        for (what, other) in others {
            assert_ne!(base, other, "{what}");
            for p in [0.1, 0.5, 0.65] {
                let n = agree_count(base, other, p);
                assert_rate(n, N_STAT, agreement(p), &format!("{what} agreement p={p}"));
            }
        }
        // Keys are a pure function of their inputs.
        assert_eq!(DropoutKey::new(1, 100, 0), base);
    }

    #[test]
    fn counters_at_common_lags_are_uncorrelated() {
        let key = DropoutKey::new(3, 4, 5);
        // Lag 1 (adjacent units), powers of two, and typical row strides (U, T*U).
        for lag in [1u64, 2, 3, 16, 256, 650, 35 * 650, 1 << 32] {
            for p in [0.1, 0.5, 0.65] {
                // Disjoint pairs (i, i + lag) with i in the even blocks of `lag`, so that the
                // pair agreements are independent trials under the null hypothesis.
                let (mut agree, mut pairs) = (0u64, 0u64);
                let mut i = 0u64;
                while pairs < N_STAT / 2 {
                    if (i / lag.min(1 << 20)).is_multiple_of(2) {
                        agree += u64::from(keep(key, i, p) == keep(key, i + lag, p));
                        pairs += 1;
                    }
                    i += 1;
                }
                assert_rate(agree, pairs, agreement(p), &format!("lag {lag} p={p}"));
            }
        }
    }

    #[test]
    fn hash_bits_pass_chi_square() {
        // 16 buckets, 15 degrees of freedom: mean 15, sd 5.5; P(chi2 > 60) < 1e-7.
        for key in [DropoutKey::new(0, 0, 0), DropoutKey::new(77, 12345, 3)] {
            // The low and the high 4 of the 24 bits the keep decision compares.
            let (mut low, mut high) = ([0u64; 16], [0u64; 16]);
            for i in 0..N_STAT {
                let h = hash(key, i) >> 8;
                low[(h & 15) as usize] += 1;
                high[(h >> 20) as usize] += 1;
            }
            let e = N_STAT as f64 / 16.0;
            for (what, counts) in [("low", low), ("high", high)] {
                let chi2: f64 = counts.iter().map(|&c| (c as f64 - e).powi(2) / e).sum();
                assert!(chi2 < 60.0, "{key:?} {what} bits: chi2 {chi2} {counts:?}");
            }
        }
    }

    #[test]
    fn backward_applies_the_forward_mask() {
        let key = DropoutKey::new(5, 6, 2);
        let (base, p) = (4321u64, 0.4f32);
        let scale = 1.0f32 / (1.0 - p);
        let mut rng = Rng(8);
        // Nonzero activations, so a zero output means "dropped".
        let x: Vec<f32> = rng.vec(5000, 0.5, 2.0);
        let g0 = rng.vec(5000, -1.0, 1.0);
        for isa in Isa::available() {
            let mut y = vec![0.0; x.len()];
            apply_to_with(isa, &mut y, &x, key, base, p);
            let mut g = g0.clone();
            apply_with(isa, &mut g, key, base, p);
            let mut dropped = 0;
            for j in 0..x.len() {
                if y[j] == 0.0 {
                    dropped += 1;
                    assert_eq!(g[j].to_bits(), 0, "{isa:?} j={j}");
                } else {
                    assert_eq!(y[j].to_bits(), (x[j] * scale).to_bits(), "{isa:?} j={j}");
                    assert_eq!(g[j].to_bits(), (g0[j] * scale).to_bits(), "{isa:?} j={j}");
                }
            }
            assert!(
                dropped > 1500 && dropped < 2500,
                "{isa:?} dropped {dropped}"
            );
        }
    }

    #[test]
    fn dropped_nan_becomes_zero_kept_nan_stays() {
        let key = DropoutKey::new(1, 1, 1);
        let p = 0.5;
        let x = vec![f32::NAN; 64];
        let mut inf = vec![f32::INFINITY; 64];
        for isa in Isa::available() {
            let mut y = x.clone();
            apply_with(isa, &mut y, key, 0, p);
            apply_with(isa, &mut inf, key, 0, p);
            for j in 0..64 {
                if keep(key, j as u64, p) {
                    assert!(y[j].is_nan() && inf[j] == f32::INFINITY, "{isa:?} j={j}");
                } else {
                    assert_eq!(y[j].to_bits(), 0, "{isa:?} j={j}");
                    assert_eq!(inf[j].to_bits(), 0, "{isa:?} j={j}");
                }
            }
            inf.fill(f32::INFINITY);
        }
    }

    #[test]
    fn does_not_write_past_the_slice() {
        let key = DropoutKey::new(0, 1, 2);
        for isa in Isa::available() {
            for n in [1usize, 15, 16, 17] {
                let mut buf = vec![0.5f32; n + 20];
                apply_with(isa, &mut buf[..n], key, 0, 0.5);
                assert!(buf[n..].iter().all(|&v| v == 0.5), "{isa:?} n={n}");
                let src = vec![1.0f32; n];
                apply_to_with(isa, &mut buf[..n], &src, key, 0, 0.5);
                assert!(buf[n..].iter().all(|&v| v == 0.5), "{isa:?} n={n}");
            }
        }
    }

    #[test]
    #[should_panic(expected = "p must be in [0, 1)")]
    fn p_one_panics() {
        apply(&mut [1.0; 4], DropoutKey::new(0, 0, 0), 0, 1.0);
    }

    #[test]
    #[should_panic(expected = "p must be in [0, 1)")]
    fn negative_p_panics() {
        apply(&mut [1.0; 4], DropoutKey::new(0, 0, 0), 0, -0.1);
    }

    #[test]
    #[should_panic(expected = "p must be in [0, 1)")]
    fn nan_p_panics() {
        apply_to(
            &mut [0.0; 4],
            &[1.0; 4],
            DropoutKey::new(0, 0, 0),
            0,
            f32::NAN,
        );
    }

    #[test]
    #[should_panic(expected = "p must be in [0, 1)")]
    fn keep_checks_p() {
        keep(DropoutKey::new(0, 0, 0), 0, 1.5);
    }

    #[test]
    #[should_panic(expected = "lengths differ")]
    fn apply_to_length_mismatch_panics() {
        apply_to(&mut [0.0; 3], &[1.0; 4], DropoutKey::new(0, 0, 0), 0, 0.5);
    }
}
