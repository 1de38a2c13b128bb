//! The x86-64 micro-kernels: AVX-512F (12 rows x 2 panels) and AVX2+FMA (6 rows x 1 panel).
//!
//! Each is a `#[target_feature]` shell around `#[inline]` generic row blocks, one
//! instantiation per row count, so the accumulators stay in registers.

use std::arch::x86_64::*;

use super::kernel::{for_each_block, Operands};
use super::pack::PANEL;
use super::Accum;

/// Expands `match rows { 1 => f::<1, NP>(args), .., MAX => f::<MAX, NP>(args) }` (`args` a
/// Copy tuple) so every row count gets its own fully unrolled, register-allocated
/// instantiation.
macro_rules! by_rows {
    ($rows:expr, $f:ident :: <_, $np:literal, $st:ident>, $args:ident, [$($r:literal),*]) => {
        match $rows {
            $($r => $f::<$r, $np, $st>($args),)*
            r => unreachable!("row block of {r} rows"),
        }
    };
}

/// AVX-512 row block: 12 rows x 2 panels = 24 zmm accumulators, + 2 for B and 1 broadcast
/// out of 32. Per k step: 2 B loads + 12 broadcasts feed 24 FMAs.
const MR_512: usize = 12;
/// AVX2 row block: 6 rows x 1 panel (2 ymm) = 12 ymm accumulators, + 2 for B, 1 broadcast
/// out of 16.
const MR_256: usize = 6;

/// The AVX-512F kernel over the whole output, for either B layout: packed panels
/// (`STRIDED = false`, `ops.ldb` unused) or B in place, row-major `k x n` with row stride
/// `ops.ldb`.
///
/// # Safety
/// AVX-512F and FMA must be available, and `ops` must satisfy the contract of
/// [`Operands`] for this B layout.
#[target_feature(enable = "avx512f,fma")]
pub(super) unsafe fn gemm_avx512<const STRIDED: bool>(ops: Operands) {
    let Operands {
        m,
        k,
        n,
        a,
        lda,
        b,
        ldb,
        c,
        ldc,
        accum,
    } = ops;
    let accumulate = accum == Accum::Add;
    for_each_block(m, n, MR_512, 2, |i0, rows, jp, np, cols| {
        // SAFETY: the block lies inside the caller-guaranteed ranges: rows i0..i0+rows < m,
        // panels jp..jp+np within B, columns jp*PANEL..+cols <= n; ISA support is the
        // caller's contract.
        unsafe {
            let ap = a.add(i0 * lda);
            let bp = if STRIDED {
                b.add(jp * PANEL)
            } else {
                b.add(jp * k * PANEL)
            };
            let cp = c.add(i0 * ldc + jp * PANEL);
            let args = (k, ap, lda, bp, ldb, cp, ldc, cols, accumulate);
            if np == 2 {
                by_rows!(
                    rows,
                    block512::<_, 2, STRIDED>,
                    args,
                    [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
                )
            } else {
                by_rows!(
                    rows,
                    block512::<_, 1, STRIDED>,
                    args,
                    [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
                )
            }
        }
    });
}

/// (k, A, lda, B, ldb (strided B only), C, ldc, cols, accumulate)
type BlockArgs = (
    usize,
    *const f32,
    usize,
    *const f32,
    usize,
    *mut f32,
    usize,
    usize,
    bool,
);

/// MR rows x NP panels with AVX-512: for each k step, load the NP packed B rows, broadcast
/// each A[i, p] and FMA into the MR x NP accumulators; then store (masked for the column
/// tail) or add to C.
///
/// # Safety
/// AVX-512F and FMA available; `a + i*lda + p` readable for i < MR, p < k; `b` holds NP
/// consecutive panels of k*PANEL f32; `c + i*ldc + j` writable for i < MR, j < cols, with
/// `cols` in `(NP-1)*PANEL+1 ..= NP*PANEL`.
#[target_feature(enable = "avx512f,fma")]
#[inline]
unsafe fn block512<const MR: usize, const NP: usize, const STRIDED: bool>(args: BlockArgs) {
    let (k, a, lda, b, ldb, c, ldc, cols, accumulate) = args;
    let mut acc = [[_mm512_setzero_ps(); NP]; MR];
    let mut masks = [0 as __mmask16; NP];
    for (q, mask) in masks.iter_mut().enumerate() {
        let lanes = cols.saturating_sub(q * PANEL).min(PANEL);
        *mask = ((1u32 << lanes) - 1) as __mmask16;
    }
    // B in place has no zero padding: the tail panel's loads are masked (zeroing the lanes
    // past `cols`, as the packed copy's padding does, so every element sees the same sum).
    let full = cols == NP * PANEL;
    // SAFETY: p < k, i < MR, q < NP keep every read inside the ranges of the contract; a
    // strided tail load reads only the lanes below `cols` (masked lanes never fault).
    unsafe {
        for p in 0..k {
            let mut bv = [_mm512_setzero_ps(); NP];
            for (q, bv) in bv.iter_mut().enumerate() {
                *bv = if !STRIDED {
                    _mm512_loadu_ps(b.add((q * k + p) * PANEL))
                } else if full {
                    _mm512_loadu_ps(b.add(p * ldb + q * PANEL))
                } else {
                    _mm512_maskz_loadu_ps(masks[q], b.add(p * ldb + q * PANEL))
                };
            }
            for (i, acc) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_ps(*a.add(i * lda + p));
                for (acc, &bv) in acc.iter_mut().zip(&bv) {
                    *acc = _mm512_fmadd_ps(av, bv, *acc);
                }
            }
        }
    }
    // One straight-line masked path for full and tail panels: the store loops must unroll
    // fully for `acc` to stay in registers, and with separate full/tail branches (or a
    // `break`) LLVM gave up and spilled every accumulator on every k step.
    for (i, acc) in acc.iter().enumerate() {
        for ((q, &v), &mask) in acc.iter().enumerate().zip(&masks) {
            // SAFETY: the contract puts column q*PANEL < cols inside row i of C, so `dst` is
            // in bounds; only lanes below `cols` are enabled, and masked-off lanes are never
            // accessed and never fault.
            unsafe {
                let dst = c.add(i * ldc + q * PANEL);
                let v = if accumulate {
                    _mm512_add_ps(_mm512_maskz_loadu_ps(mask, dst), v)
                } else {
                    v
                };
                _mm512_mask_storeu_ps(dst, mask, v);
            }
        }
    }
}

/// The AVX2+FMA kernel over the whole output (see [`gemm_avx512`]).
///
/// # Safety
/// AVX2 and FMA must be available, and `ops` must satisfy the contract of [`Operands`] for
/// this B layout.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn gemm_avx2<const STRIDED: bool>(ops: Operands) {
    let Operands {
        m,
        k,
        n,
        a,
        lda,
        b,
        ldb,
        c,
        ldc,
        accum,
    } = ops;
    let accumulate = accum == Accum::Add;
    for_each_block(m, n, MR_256, 1, |i0, rows, jp, _, cols| {
        // SAFETY: as in gemm_avx512: the block lies inside the caller-guaranteed ranges.
        unsafe {
            let ap = a.add(i0 * lda);
            let bp = if STRIDED {
                b.add(jp * PANEL)
            } else {
                b.add(jp * k * PANEL)
            };
            let cp = c.add(i0 * ldc + jp * PANEL);
            let args = (k, ap, lda, bp, ldb, cp, ldc, cols, accumulate);
            by_rows!(rows, block256::<_, 1, STRIDED>, args, [1, 2, 3, 4, 5, 6])
        }
    });
}

/// MR rows x NP panels with AVX2: as [`block512`], each panel being two ymm halves.
///
/// # Safety
/// As [`block512`], with AVX2 and FMA available instead.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn block256<const MR: usize, const NP: usize, const STRIDED: bool>(args: BlockArgs) {
    let (k, a, lda, b, ldb, c, ldc, cols, accumulate) = args;
    let mut acc = [[[_mm256_setzero_ps(); 2]; NP]; MR];
    // Strided tail: lanes past `cols` load as zero (the packed copy's padding).
    let full = cols == NP * PANEL;
    let mut lmask = [[_mm256_setzero_si256(); 2]; NP];
    for (q, m) in lmask.iter_mut().enumerate() {
        for (h, m) in m.iter_mut().enumerate() {
            let lanes = cols.saturating_sub(q * PANEL + h * 8).min(8) as i32;
            *m = _mm256_cmpgt_epi32(
                _mm256_set1_epi32(lanes),
                _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
            );
        }
    }
    // SAFETY: p < k, i < MR, q < NP keep every read inside the ranges of the contract; a
    // masked strided load touches only the lanes below `cols`.
    unsafe {
        for p in 0..k {
            let mut bv = [[_mm256_setzero_ps(); 2]; NP];
            for (q, bv) in bv.iter_mut().enumerate() {
                *bv = if !STRIDED {
                    let src = b.add((q * k + p) * PANEL);
                    [_mm256_loadu_ps(src), _mm256_loadu_ps(src.add(8))]
                } else if full {
                    let src = b.add(p * ldb + q * PANEL);
                    [_mm256_loadu_ps(src), _mm256_loadu_ps(src.add(8))]
                } else {
                    let src = b.add(p * ldb + q * PANEL);
                    [
                        _mm256_maskload_ps(src, lmask[q][0]),
                        _mm256_maskload_ps(src.add(8), lmask[q][1]),
                    ]
                };
            }
            for (i, acc) in acc.iter_mut().enumerate() {
                let av = _mm256_set1_ps(*a.add(i * lda + p));
                for (acc, bv) in acc.iter_mut().zip(&bv) {
                    acc[0] = _mm256_fmadd_ps(av, bv[0], acc[0]);
                    acc[1] = _mm256_fmadd_ps(av, bv[1], acc[1]);
                }
            }
        }
    }
    // Constant-trip loops without early exit (see block512).
    for (i, acc) in acc.iter().enumerate() {
        for (q, halves) in acc.iter().enumerate() {
            for (h, &v) in halves.iter().enumerate() {
                let lo = q * PANEL + h * 8;
                if cols <= lo {
                    continue;
                }
                // SAFETY: column lo < cols, so `dst` is in the row; a full store touches lo..lo+8
                // <= cols, a masked one only the lanes below cols (masked lanes never fault).
                unsafe {
                    let dst = c.add(i * ldc + lo);
                    if cols >= lo + 8 {
                        let v = if accumulate {
                            _mm256_add_ps(_mm256_loadu_ps(dst), v)
                        } else {
                            v
                        };
                        _mm256_storeu_ps(dst, v);
                    } else {
                        let mask = _mm256_cmpgt_epi32(
                            _mm256_set1_epi32((cols - lo) as i32),
                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                        );
                        let v = if accumulate {
                            _mm256_add_ps(_mm256_maskload_ps(dst, mask), v)
                        } else {
                            v
                        };
                        _mm256_maskstore_ps(dst, mask, v);
                    }
                }
            }
        }
    }
}
