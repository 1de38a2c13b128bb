//! Small-M GEMM against a right-hand matrix packed once, for the RNN time loop.
//!
//! Every step of the recurrence computes `h_pre += h_prev · Wh` (forward) and
//! `dh_prev (+)= dt · Whᵀ` (backward) with M = a few batch rows and K = N = H. A general GEMM
//! re-packs `Wh` and allocates on every call, which at these sizes costs as much as the
//! arithmetic. Here `Wh` (or `Whᵀ`, read through strides) is packed once per batch with
//! [`pack_b`] into caller memory and [`gemm_packed`] reuses it for all T steps with no heap
//! allocation.
//!
//! Determinism: every output element is `acc = 0; for p in 0..k { acc = acc + A[i,p]·B[p,j] };
//! C = acc` (or `C = C + acc`), with the multiply-add fused on the FMA ISAs and unfused in the
//! portable kernel. Vector lanes map to columns only, so neither register blocking, nor the
//! row-block size, nor the column tail changes that sequence: row `i` of `C` is bit-identical
//! whatever `m` is and however rows are split across calls or threads (for a given [`Isa`]).
#![warn(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

use crate::cpu::{isa, Isa};

/// Width of a packed column panel in f32 (ISA-independent so one packed buffer serves every ISA).
///
/// 16 = one AVX-512 register = two AVX2 registers = one 64-byte cache line per packed row.
/// Wider panels would not make the kernels faster (they can already process two panels at a
/// time) but would pad more: H = 650 pads to 656 columns here, to 672 with 32.
pub const PANEL: usize = 16;

/// Number of f32 a packed copy of a k x n matrix needs (n rounded up to PANEL, zero-padded).
///
/// That is `k * ceil(n / PANEL) * PANEL`.
///
/// Panics if the length overflows `usize`.
pub fn packed_len(k: usize, n: usize) -> usize {
    k.checked_mul(n.div_ceil(PANEL) * PANEL)
        .expect("packed_len: size overflows usize")
}

/// Pack B (k x n, element (r, c) at b[r*rs + c*cs]) into `out` as column panels of PANEL columns,
/// each panel k rows of PANEL contiguous floats, padding columns zero-filled.
///
/// Layout: `out[(jp * k + p) * PANEL + l] = B[p, jp * PANEL + l]` (0 where that column is `>= n`),
/// for panel `jp`, row `p < k`, lane `l < PANEL`; `out[packed_len(k, n)..]` is left untouched.
/// rs/cs strides let the caller pack Wh (rs=n, cs=1) or Wh^T from Wh's buffer (rs=1, cs=H)
/// without a transpose copy.
///
/// For speed, start `out` on a 64-byte boundary: each packed row is then exactly one cache line
/// and the AVX-512 kernel never issues a line-splitting load.
///
/// Panics if out.len() < packed_len(k, n) or b is too short for the strides
/// (`b.len() <= (k-1)*rs + (n-1)*cs` when k, n > 0).
pub fn pack_b(k: usize, n: usize, b: &[f32], rs: usize, cs: usize, out: &mut [f32]) {
    let len = packed_len(k, n);
    assert!(
        out.len() >= len,
        "pack_b: out has {} f32, needs packed_len({k}, {n}) = {len}",
        out.len()
    );
    if k == 0 || n == 0 {
        return;
    }
    let last = (k - 1)
        .checked_mul(rs)
        .and_then(|r| (n - 1).checked_mul(cs).and_then(|c| r.checked_add(c)))
        .expect("pack_b: strides overflow usize");
    assert!(
        b.len() > last,
        "pack_b: b has {} f32, needs {} for k={k}, n={n}, rs={rs}, cs={cs}",
        b.len(),
        last + 1
    );
    // Transposed packing (Wh^T, W^T) is a 16 x 16 block transpose in registers on AVX-512.
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
    let fast_transpose = cfg!(target_arch = "x86_64") && rs == 1 && isa() == Isa::Avx512;
    for (jp, panel) in out[..len].chunks_exact_mut(k * PANEL).enumerate() {
        let j0 = jp * PANEL;
        let w = PANEL.min(n - j0);
        // Walk B along its contiguous direction so the reads stay sequential: row-major B (Wh,
        // activations) row by row, column-major B (Wh^T read from Wh) column by column.
        if cs == 1 {
            // Row-major B: whole rows of the panel are contiguous in B.
            let (rows, _) = panel.as_chunks_mut::<PANEL>();
            if w == PANEL {
                // Fixed-size copies inline to two vector moves (a memcpy call per 64 bytes
                // cost more than the copy).
                for (p, row) in rows.iter_mut().enumerate() {
                    let src: &[f32; PANEL] = b[p * rs + j0..p * rs + j0 + PANEL]
                        .try_into()
                        .expect("slice of PANEL elements");
                    *row = *src;
                }
            } else {
                for (p, row) in rows.iter_mut().enumerate() {
                    row[..w].copy_from_slice(&b[p * rs + j0..p * rs + j0 + w]);
                    row[w..].fill(0.0);
                }
            }
        } else if rs == 1 {
            // Column-major B (a transposed row-major weight): each panel column is contiguous
            // in B; write it with stride PANEL. The panel (k x 64 bytes) stays in cache.
            if w < PANEL {
                panel.fill(0.0);
            }
            // In blocks of PANEL rows, so the strided writes land in one 1 KiB block (L1).
            for (blk, dst) in panel.chunks_mut(PANEL * PANEL).enumerate() {
                let p0 = blk * PANEL;
                let rows = dst.len() / PANEL;
                #[cfg(target_arch = "x86_64")]
                if rows == PANEL && w == PANEL && fast_transpose {
                    // SAFETY: AVX-512F is available (checked into `fast_transpose`); the 16
                    // source rows (j0+l)*cs + p0 .. +16, l < 16, lie inside `b` because
                    // columns j0..j0+16 < n and rows p0..p0+16 <= k were bounds-checked
                    // against b.len() above; `dst` holds exactly 16 x 16 floats.
                    unsafe {
                        x86::transpose16_avx512(b.as_ptr().add(j0 * cs + p0), cs, dst.as_mut_ptr())
                    };
                    continue;
                }
                for l in 0..w {
                    let src = &b[(j0 + l) * cs + p0..(j0 + l) * cs + p0 + rows];
                    for (d, &x) in dst[l..].iter_mut().step_by(PANEL).zip(src) {
                        *d = x;
                    }
                }
            }
        } else {
            // General strides: element by element, along B's smaller stride.
            for (p, row) in panel.chunks_exact_mut(PANEL).enumerate() {
                for (l, x) in row.iter_mut().enumerate() {
                    *x = if l < w {
                        b[p * rs + (j0 + l) * cs]
                    } else {
                        0.0
                    };
                }
            }
        }
    }
}

/// C[i, j] (=|+=) sum_p A[i, p] * B[p, j]  for i < m, j < n, where A[i, p] = a[i*lda + p],
/// C[i, j] = c[i*ldc + j], B packed by pack_b(k, n, ..). `accumulate=false` overwrites C.
///
/// Uses the ISA chosen by [`isa()`]; see [`gemm_packed_with`].
///
/// Panics if slices are too short for m/k/n/lda/ldc, or packed.len() < packed_len(k, n).
#[allow(clippy::too_many_arguments)]
pub fn gemm_packed(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    lda: usize,
    packed: &[f32],
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) {
    gemm_packed_with(isa(), m, k, n, a, lda, packed, c, ldc, accumulate);
}

/// [`gemm_packed`] on an explicit instruction set.
///
/// Element `C[i, j]` is computed as `acc = 0; for p in 0..k { acc = acc + A[i,p]·B[p,j] }` in
/// increasing `p` (fused multiply-add on `Avx512`/`Avx2Fma`, separate multiply and add on
/// `Portable`), then `C = acc` or `C = C + acc`. Results are therefore bit-identical across `m`
/// and row splits for a given `isa`, but differ in the last bits between FMA and portable ISAs.
/// With `k == 0`, C is zeroed (`accumulate == false`) or left unchanged. Only `c[i*ldc + j]`
/// for `i < m`, `j < n` is written. Allocates nothing.
///
/// Panics if `isa` is not supported by this CPU, if `packed.len() < packed_len(k, n)`, if
/// `a.len() < (m-1)*lda + k` (m, k > 0), if `c.len() < (m-1)*ldc + n` (m, n > 0), or if
/// `ldc < n` with `m > 1` (output rows would overlap).
#[allow(clippy::too_many_arguments)]
pub fn gemm_packed_with(
    isa: Isa,
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    lda: usize,
    packed: &[f32],
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) {
    assert!(
        isa.is_supported(),
        "gemm_packed: {isa:?} is not supported by this CPU"
    );
    let plen = packed_len(k, n);
    assert!(
        packed.len() >= plen,
        "gemm_packed: packed has {} f32, needs packed_len({k}, {n}) = {plen}",
        packed.len()
    );
    if m == 0 || n == 0 {
        return;
    }
    assert!(m == 1 || ldc >= n, "gemm_packed: ldc = {ldc} < n = {n}");
    let c_need = (m - 1)
        .checked_mul(ldc)
        .and_then(|x| x.checked_add(n))
        .expect("gemm_packed: C extent overflows usize");
    assert!(
        c.len() >= c_need,
        "gemm_packed: c has {} f32, needs {c_need}",
        c.len()
    );
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                c[i * ldc..i * ldc + n].fill(0.0);
            }
        }
        return;
    }
    let a_need = (m - 1)
        .checked_mul(lda)
        .and_then(|x| x.checked_add(k))
        .expect("gemm_packed: A extent overflows usize");
    assert!(
        a.len() >= a_need,
        "gemm_packed: a has {} f32, needs {a_need}",
        a.len()
    );
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `isa.is_supported()` was asserted, so AVX-512F and FMA are available. The
        // asserts above give: A rows i < m hold k readable f32 at a + i*lda; packed holds
        // k * ceil(n/PANEL) * PANEL readable f32; C rows i < m hold n writable f32 at c + i*ldc
        // (and they do not overlap since ldc >= n). `c` is borrowed mutably, so nothing aliases.
        Isa::Avx512 => unsafe {
            x86::gemm_avx512(
                m,
                k,
                n,
                a.as_ptr(),
                lda,
                packed.as_ptr(),
                c.as_mut_ptr(),
                ldc,
                accumulate,
            )
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as for Avx512, with AVX2 and FMA asserted available.
        Isa::Avx2Fma => unsafe {
            x86::gemm_avx2(
                m,
                k,
                n,
                a.as_ptr(),
                lda,
                packed.as_ptr(),
                c.as_mut_ptr(),
                ldc,
                accumulate,
            )
        },
        _ => gemm_portable(m, k, n, a, lda, packed, c, ldc, accumulate),
    }
}

/// [`gemm_packed_with`] writing C through a raw pointer, for callers that give threads disjoint
/// column strips of one row-major C (which safe slices cannot express). SIMD ISAs only.
///
/// **Panics** if `isa` is not a supported SIMD level, or A / packed are too short.
///
/// # Safety
/// For every row `i < m`, the `n` floats at `c.add(i * ldc)` must be valid for reads and
/// writes and must not be accessed by anything else for the duration of the call.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_packed_raw(
    isa: Isa,
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    lda: usize,
    packed: &[f32],
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    assert!(
        isa != Isa::Portable && isa.is_supported(),
        "gemm_packed_raw: needs a supported SIMD ISA, got {isa:?}"
    );
    assert!(
        packed.len() >= packed_len(k, n),
        "gemm_packed_raw: packed too short"
    );
    if m == 0 || n == 0 || k == 0 {
        assert!(
            k != 0 || accumulate,
            "gemm_packed_raw: k = 0 without accumulate"
        );
        return;
    }
    assert!(a.len() >= (m - 1) * lda + k, "gemm_packed_raw: a too short");
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: ISA support asserted; A and packed extents asserted; C is the caller's
        // contract.
        Isa::Avx512 => unsafe {
            x86::gemm_avx512(
                m,
                k,
                n,
                a.as_ptr(),
                lda,
                packed.as_ptr(),
                c,
                ldc,
                accumulate,
            )
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Isa::Avx2Fma => unsafe {
            x86::gemm_avx2(
                m,
                k,
                n,
                a.as_ptr(),
                lda,
                packed.as_ptr(),
                c,
                ldc,
                accumulate,
            )
        },
        _ => unreachable!("portable was rejected above"),
    }
}

/// [`gemm_packed_raw`] reading B in place instead of from a packed copy: `B [k, n]` row-major
/// at `b` with row stride `ldb`. Each element of C gets exactly the sum it gets from the
/// packed kernel (same k order, the column tail's missing lanes loaded as zero like the
/// packing's padding), so the two are bit-identical; this one skips writing and re-reading
/// the packed copy, which for a wide B read once (`dW = Aᵀ dY`) is pure memory traffic.
///
/// **Panics** if `isa` is not a supported SIMD level, or A / B are too short.
///
/// # Safety
/// As [`gemm_packed_raw`] for C.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_strided_raw(
    isa: Isa,
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    assert!(
        isa != Isa::Portable && isa.is_supported(),
        "gemm_strided_raw: needs a supported SIMD ISA, got {isa:?}"
    );
    if m == 0 || n == 0 || k == 0 {
        assert!(
            k != 0 || accumulate,
            "gemm_strided_raw: k = 0 without accumulate"
        );
        return;
    }
    assert!(
        a.len() >= (m - 1) * lda + k,
        "gemm_strided_raw: a too short"
    );
    assert!(
        ldb >= n && b.len() >= (k - 1) * ldb + n,
        "gemm_strided_raw: b too short for k = {k}, n = {n}, ldb = {ldb}"
    );
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: ISA support asserted; A and B extents asserted (full-panel loads stay inside
        // each row's n columns, tail loads are masked); C is the caller's contract.
        Isa::Avx512 => unsafe {
            x86::gemm_avx512_b::<true>(
                m,
                k,
                n,
                a.as_ptr(),
                lda,
                b.as_ptr(),
                ldb,
                c,
                ldc,
                accumulate,
            )
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Isa::Avx2Fma => unsafe {
            x86::gemm_avx2_b::<true>(
                m,
                k,
                n,
                a.as_ptr(),
                lda,
                b.as_ptr(),
                ldb,
                c,
                ldc,
                accumulate,
            )
        },
        _ => unreachable!("portable was rejected above"),
    }
}

/// Visits the output in blocks: column blocks of up to `np_max` panels (outer loop), then row
/// blocks of at most `mr_max` rows (inner loop), calling `f(i0, rows, jp, np, cols)` for rows
/// `i0..i0+rows`, panels `jp..jp+np` and the `cols <= np*PANEL` real columns among them.
///
/// Columns outer: the panels of one column block (k*np*64 bytes, 83 KB at k = 650, np = 2) stay
/// in L2 while every row block streams them, so B comes from memory once per call; A (m*k*4
/// bytes) is small and is the one re-read. Rows are split into equal-as-possible blocks
/// (m = 20, mr_max = 12 gives 10 + 10, not 12 + 8) so no block runs with few accumulators.
fn for_each_block(
    m: usize,
    n: usize,
    mr_max: usize,
    np_max: usize,
    mut f: impl FnMut(usize, usize, usize, usize, usize),
) {
    let panels = n.div_ceil(PANEL);
    let nblk = m.div_ceil(mr_max);
    let mut jp = 0;
    while jp < panels {
        let np = np_max.min(panels - jp);
        let cols = (np * PANEL).min(n - jp * PANEL);
        let mut i0 = 0;
        for blk in 0..nblk {
            let rows = m / nblk + usize::from(blk < m % nblk);
            f(i0, rows, jp, np, cols);
            i0 += rows;
        }
        jp += np;
    }
}

/// Rows per block of the portable kernel: 2 x 16 accumulators = 8 SSE registers, leaving room
/// for the 4 B vectors and the broadcast on baseline x86-64 (4 rows spilled and ran slower).
const MR_PORTABLE: usize = 2;

#[allow(clippy::too_many_arguments)]
fn gemm_portable(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    lda: usize,
    packed: &[f32],
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) {
    for_each_block(m, n, MR_PORTABLE, 1, |i0, rows, jp, _, cols| {
        let a = &a[i0 * lda..];
        let panel = &packed[jp * k * PANEL..(jp + 1) * k * PANEL];
        let c = &mut c[i0 * ldc + jp * PANEL..];
        match rows {
            1 => block_portable::<1>(k, a, lda, panel, c, ldc, cols, accumulate),
            2 => block_portable::<2>(k, a, lda, panel, c, ldc, cols, accumulate),
            3 => block_portable::<3>(k, a, lda, panel, c, ldc, cols, accumulate),
            4 => block_portable::<4>(k, a, lda, panel, c, ldc, cols, accumulate),
            r => unreachable!("row block of {r} rows"),
        }
    });
}

/// One MR x PANEL block in plain Rust: `acc = acc + a*b` (unfused, as Rust never contracts),
/// lanes are columns so the compiler vectorises across them without reordering any sum.
#[allow(clippy::too_many_arguments)]
#[inline]
fn block_portable<const MR: usize>(
    k: usize,
    a: &[f32],
    lda: usize,
    panel: &[f32],
    c: &mut [f32],
    ldc: usize,
    cols: usize,
    accumulate: bool,
) {
    // Slices of exactly k elements / rows, so the indexing below needs no bounds checks.
    let rows: [&[f32]; MR] = std::array::from_fn(|i| &a[i * lda..i * lda + k]);
    let panel = &panel.as_chunks::<PANEL>().0[..k];
    let mut acc = [[0.0f32; PANEL]; MR];
    for p in 0..k {
        let brow = &panel[p];
        for (acc, row) in acc.iter_mut().zip(&rows) {
            let av = row[p];
            for (s, &bv) in acc.iter_mut().zip(brow) {
                *s += av * bv;
            }
        }
    }
    for (i, acc) in acc.iter().enumerate() {
        let row = &mut c[i * ldc..i * ldc + cols];
        for (x, &s) in row.iter_mut().zip(acc) {
            *x = if accumulate { *x + s } else { s };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{for_each_block, PANEL};
    use std::arch::x86_64::*;

    /// Writes the transpose of the 16 x 16 block at `src` (row `l` at `src + l*lds`) to `dst`
    /// as 16 rows of 16 (`dst[p*16 + l] = src[l*lds + p]`): unpack pairs of rows, shuffle
    /// 4 x 4 blocks inside 128-bit lanes, then gather the lanes (64 shuffles per block).
    ///
    /// # Safety
    /// AVX-512F must be available; 16 floats must be readable at `src + l*lds` for l < 16 and
    /// 256 floats writable at `dst`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn transpose16_avx512(src: *const f32, lds: usize, dst: *mut f32) {
        // SAFETY: the caller guarantees the 16 rows of 16 readable floats and 256 writable.
        unsafe {
            let r: [__m512; 16] = std::array::from_fn(|l| _mm512_loadu_ps(src.add(l * lds)));
            // t: per lane k, pairs of rows interleaved.
            let mut t = [_mm512_setzero_ps(); 16];
            for g in 0..8 {
                t[2 * g] = _mm512_unpacklo_ps(r[2 * g], r[2 * g + 1]);
                t[2 * g + 1] = _mm512_unpackhi_ps(r[2 * g], r[2 * g + 1]);
            }
            // u[4*q + c], lane k: column 4k + c of rows 4q..4q+4.
            let mut u = [_mm512_setzero_ps(); 16];
            for q in 0..4 {
                let (a, b, c, d) = (t[4 * q], t[4 * q + 1], t[4 * q + 2], t[4 * q + 3]);
                u[4 * q] = _mm512_shuffle_ps::<0x44>(a, c);
                u[4 * q + 1] = _mm512_shuffle_ps::<0xEE>(a, c);
                u[4 * q + 2] = _mm512_shuffle_ps::<0x44>(b, d);
                u[4 * q + 3] = _mm512_shuffle_ps::<0xEE>(b, d);
            }
            for c in 0..4 {
                let p = _mm512_shuffle_f32x4::<0x88>(u[c], u[4 + c]);
                let q = _mm512_shuffle_f32x4::<0xDD>(u[c], u[4 + c]);
                let s = _mm512_shuffle_f32x4::<0x88>(u[8 + c], u[12 + c]);
                let z = _mm512_shuffle_f32x4::<0xDD>(u[8 + c], u[12 + c]);
                // Output row j = 4k + c for lanes k = 0, 1, 2, 3.
                _mm512_storeu_ps(dst.add(c * 16), _mm512_shuffle_f32x4::<0x88>(p, s));
                _mm512_storeu_ps(dst.add((4 + c) * 16), _mm512_shuffle_f32x4::<0x88>(q, z));
                _mm512_storeu_ps(dst.add((8 + c) * 16), _mm512_shuffle_f32x4::<0xDD>(p, s));
                _mm512_storeu_ps(dst.add((12 + c) * 16), _mm512_shuffle_f32x4::<0xDD>(q, z));
            }
        }
    }

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

    /// AVX-512F kernel over the whole output.
    ///
    /// # Safety
    /// AVX-512F and FMA must be available. For k > 0: rows i < m of A hold k readable f32 at
    /// `a + i*lda`; `packed` holds `packed_len(k, n)` readable f32; rows i < m of C hold n
    /// writable f32 at `c + i*ldc`, not overlapping each other nor A or packed.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,fma")]
    pub(super) unsafe fn gemm_avx512(
        m: usize,
        k: usize,
        n: usize,
        a: *const f32,
        lda: usize,
        packed: *const f32,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
    ) {
        // SAFETY: the caller's contract, with B packed.
        unsafe { gemm_avx512_b::<false>(m, k, n, a, lda, packed, 0, c, ldc, accumulate) }
    }

    /// The AVX-512 driver for either B layout: packed panels (`STRIDED = false`, `ldb`
    /// unused) or B in place, row-major `k x n` with row stride `ldb`.
    ///
    /// # Safety
    /// As [`gemm_avx512`]; with `STRIDED`, `b + p*ldb + j` readable for p < k, j < n instead
    /// of a packed copy.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,fma")]
    pub(super) unsafe fn gemm_avx512_b<const STRIDED: bool>(
        m: usize,
        k: usize,
        n: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        ldb: usize,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
    ) {
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

    /// AVX2+FMA kernel over the whole output.
    ///
    /// # Safety
    /// As [`gemm_avx512`], with AVX2 and FMA available instead.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn gemm_avx2(
        m: usize,
        k: usize,
        n: usize,
        a: *const f32,
        lda: usize,
        packed: *const f32,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
    ) {
        // SAFETY: the caller's contract, with B packed.
        unsafe { gemm_avx2_b::<false>(m, k, n, a, lda, packed, 0, c, ldc, accumulate) }
    }

    /// The AVX2 driver for either B layout (see [`gemm_avx512_b`]).
    ///
    /// # Safety
    /// As [`gemm_avx512_b`], with AVX2 and FMA available instead.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn gemm_avx2_b<const STRIDED: bool>(
        m: usize,
        k: usize,
        n: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        ldb: usize,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
    ) {
        for_each_block(m, n, MR_256, 1, |i0, rows, jp, _, cols| {
            // SAFETY: as in gemm_avx512_b: the block lies inside the caller-guaranteed ranges.
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
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64*: deterministic, no dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        /// Integer in -4..=4: products and sums of up to 100 terms stay exact in f32.
        fn small(&mut self) -> f32 {
            (self.next() % 9) as f32 - 4.0
        }
        /// Uniform in [-1, 1).
        fn unit(&mut self) -> f32 {
            (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        }
    }

    const MS: [usize; 9] = [0, 1, 2, 3, 5, 7, 10, 17, 20];
    const KNS: [usize; 8] = [0, 1, 7, 15, 17, 63, 65, 100];

    /// C (=|+=) A·B in f64, B given as (r, c) -> b[r*rs + c*cs].
    #[allow(clippy::too_many_arguments)]
    fn reference(
        m: usize,
        k: usize,
        n: usize,
        a: &[f32],
        lda: usize,
        b: &[f32],
        rs: usize,
        cs: usize,
        c: &mut [f32],
        ldc: usize,
        accumulate: bool,
    ) {
        for i in 0..m {
            for j in 0..n {
                let s: f64 = (0..k)
                    .map(|p| a[i * lda + p] as f64 * b[p * rs + j * cs] as f64)
                    .sum();
                let x = &mut c[i * ldc + j];
                *x = if accumulate {
                    (*x as f64 + s) as f32
                } else {
                    s as f32
                };
            }
        }
    }

    fn packed(k: usize, n: usize, b: &[f32], rs: usize, cs: usize) -> Vec<f32> {
        let mut out = vec![f32::NAN; packed_len(k, n)];
        pack_b(k, n, b, rs, cs, &mut out);
        out
    }

    /// C buffer with NaN everywhere outside the m x n output (row padding and tail), integer
    /// values inside.
    fn c_buffer(m: usize, n: usize, ldc: usize, rng: &mut Rng) -> Vec<f32> {
        let mut c = vec![f32::NAN; m * ldc + 3];
        for i in 0..m {
            for x in &mut c[i * ldc..i * ldc + n] {
                *x = rng.small();
            }
        }
        c
    }

    fn assert_same(got: &[f32], want: &[f32], what: &str) {
        assert_eq!(got.len(), want.len());
        for (idx, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()) || g == w,
                "{what}: index {idx}: got {g}, want {w}"
            );
        }
    }

    #[test]
    fn packed_layout() {
        let (k, n) = (3, 20);
        let b: Vec<f32> = (0..k * n).map(|x| x as f32).collect();
        let p = packed(k, n, &b, n, 1);
        assert_eq!(p.len(), k * 32);
        for jp in 0..2 {
            for r in 0..k {
                for l in 0..PANEL {
                    let col = jp * PANEL + l;
                    let want = if col < n { b[r * n + col] } else { 0.0 };
                    assert_eq!(p[(jp * k + r) * PANEL + l], want);
                }
            }
        }
        // Transposed strides give the transposed matrix.
        let t = packed(n, k, &b, 1, n);
        for r in 0..n {
            for col in 0..k {
                assert_eq!(t[r * PANEL + col], b[col * n + r]);
            }
        }
        // Nothing beyond packed_len is written.
        let mut out = vec![f32::NAN; packed_len(k, n) + 5];
        pack_b(k, n, &b, n, 1, &mut out);
        assert!(out[packed_len(k, n)..].iter().all(|x| x.is_nan()));
    }

    /// Exact comparison with the f64 reference on integer data, all sizes, both modes, every
    /// ISA, strided A and C, NaN sentinels outside the output.
    #[test]
    fn exact_against_reference() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for isa in Isa::available() {
            for &m in &MS {
                for &k in &KNS {
                    for &n in &KNS {
                        let (lda, ldc) = (k + 5, n + 3);
                        let a: Vec<f32> = (0..m * lda).map(|_| rng.small()).collect();
                        let b: Vec<f32> = (0..k * n).map(|_| rng.small()).collect();
                        let pb = packed(k, n, &b, n, 1);
                        for accumulate in [false, true] {
                            let mut want = c_buffer(m, n, ldc, &mut rng);
                            let mut got = want.clone();
                            reference(m, k, n, &a, lda, &b, n, 1, &mut want, ldc, accumulate);
                            gemm_packed_with(isa, m, k, n, &a, lda, &pb, &mut got, ldc, accumulate);
                            let what = format!("{isa:?} m={m} k={k} n={n} acc={accumulate}");
                            assert_same(&got, &want, &what);
                            for i in 0..m {
                                let pad = &got[i * ldc + n..(i + 1) * ldc];
                                assert!(pad.iter().all(|x| x.is_nan()), "{what}: row pad");
                            }
                            assert!(got[m * ldc..].iter().all(|x| x.is_nan()), "{what}: tail");
                        }
                    }
                }
            }
        }
    }

    /// B read in place gives the same bits as B packed, on random floats (so any change of
    /// summation order would show), every size, both modes, every SIMD ISA, with B's rows
    /// strided and NaN between them. (Lanes are columns, so a stray load past the columns
    /// could only touch lanes that are never stored; the tail loads are masked so that they
    /// never read past B's last row, which this test cannot observe.)
    #[test]
    fn strided_b_is_bit_identical_to_packed() {
        let mut rng = Rng(0x5eed);
        for isa in Isa::available().into_iter().filter(|&i| i != Isa::Portable) {
            for &m in &MS {
                for &k in &KNS {
                    for &n in &KNS {
                        let (lda, ldb, ldc) = (k + 3, n + 7, n + 2);
                        let a: Vec<f32> = (0..m * lda).map(|_| rng.unit()).collect();
                        let mut b = vec![f32::NAN; k * ldb];
                        for p in 0..k {
                            for x in &mut b[p * ldb..p * ldb + n] {
                                *x = rng.unit();
                            }
                        }
                        // The last row ends the slice: nothing readable after its n columns.
                        let b = &b[..if k == 0 { 0 } else { (k - 1) * ldb + n }];
                        let pb = packed(k, n, b, ldb, 1);
                        for accumulate in [false, true] {
                            if k == 0 && !accumulate {
                                continue;
                            }
                            let mut want = c_buffer(m, n, ldc, &mut rng);
                            let mut got = want.clone();
                            // SAFETY: both C buffers hold m rows of ldc >= n floats, owned here.
                            unsafe {
                                gemm_packed_raw(
                                    isa,
                                    m,
                                    k,
                                    n,
                                    &a,
                                    lda,
                                    &pb,
                                    want.as_mut_ptr(),
                                    ldc,
                                    accumulate,
                                );
                                gemm_strided_raw(
                                    isa,
                                    m,
                                    k,
                                    n,
                                    &a,
                                    lda,
                                    b,
                                    ldb,
                                    got.as_mut_ptr(),
                                    ldc,
                                    accumulate,
                                );
                            }
                            let what = format!("{isa:?} m={m} k={k} n={n} acc={accumulate}");
                            assert_same(&got, &want, &what);
                        }
                    }
                }
            }
        }
    }

    /// A·Bᵀ with B packed through transposed strides (the backward `dt · Whᵀ`).
    #[test]
    fn transposed_pack() {
        let mut rng = Rng(7);
        for isa in Isa::available() {
            for &(m, k, n) in &[(1, 17, 7), (5, 100, 65), (10, 63, 100), (20, 15, 17)] {
                // B is n x k row-major; we multiply by its transpose (k x n): rs = 1, cs = k.
                let bt: Vec<f32> = (0..n * k).map(|_| rng.small()).collect();
                let a: Vec<f32> = (0..m * k).map(|_| rng.small()).collect();
                let pb = packed(k, n, &bt, 1, k);
                let mut want = c_buffer(m, n, n, &mut rng);
                let mut got = want.clone();
                reference(m, k, n, &a, k, &bt, 1, k, &mut want, n, true);
                gemm_packed_with(isa, m, k, n, &a, k, &pb, &mut got, n, true);
                assert_same(
                    &got,
                    &want,
                    &format!("{isa:?} transposed m={m} k={k} n={n}"),
                );
            }
        }
    }

    /// Random floats: close to the f64 reference (rounding differs, so a tolerance).
    #[test]
    fn random_floats_close() {
        let mut rng = Rng(12345);
        for isa in Isa::available() {
            for &(m, k, n) in &[(10, 100, 100), (17, 650, 131), (3, 256, 33)] {
                let a: Vec<f32> = (0..m * k).map(|_| rng.unit()).collect();
                let b: Vec<f32> = (0..k * n).map(|_| rng.unit()).collect();
                let pb = packed(k, n, &b, n, 1);
                let mut want = vec![0.0; m * n];
                let mut got = vec![f32::NAN; m * n];
                reference(m, k, n, &a, k, &b, n, 1, &mut want, n, false);
                gemm_packed_with(isa, m, k, n, &a, k, &pb, &mut got, n, false);
                for (g, w) in got.iter().zip(&want) {
                    assert!(
                        (g - w).abs() <= 1e-5 * k as f32,
                        "{isa:?} {m}x{k}x{n}: {g} vs {w}"
                    );
                }
            }
        }
    }

    /// Requirement: row i of C is bit-identical whether computed with all m rows at once, alone,
    /// or in blocks of 2, 3, 5 (as different thread counts would split the batch).
    #[test]
    fn rows_independent_bit_exact() {
        let mut rng = Rng(99);
        for isa in Isa::available() {
            for &(m, k, n) in &[(20, 100, 100), (17, 65, 63), (13, 650, 37), (25, 7, 33)] {
                let a: Vec<f32> = (0..m * k).map(|_| rng.unit()).collect();
                let b: Vec<f32> = (0..k * n).map(|_| rng.unit()).collect();
                let c0: Vec<f32> = (0..m * n).map(|_| rng.unit()).collect();
                let pb = packed(k, n, &b, n, 1);
                for accumulate in [false, true] {
                    let mut all = c0.clone();
                    gemm_packed_with(isa, m, k, n, &a, k, &pb, &mut all, n, accumulate);
                    for step in [1, 2, 3, 5] {
                        let mut split = c0.clone();
                        for i0 in (0..m).step_by(step) {
                            let rows = step.min(m - i0);
                            gemm_packed_with(
                                isa,
                                rows,
                                k,
                                n,
                                &a[i0 * k..],
                                k,
                                &pb,
                                &mut split[i0 * n..],
                                n,
                                accumulate,
                            );
                        }
                        let same = all
                            .iter()
                            .zip(&split)
                            .all(|(x, y)| x.to_bits() == y.to_bits());
                        assert!(
                            same,
                            "{isa:?} m={m} k={k} n={n} acc={accumulate} step={step}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn k_zero() {
        for isa in Isa::available() {
            let mut c = vec![5.0f32; 7];
            gemm_packed_with(isa, 2, 0, 3, &[], 0, &[], &mut c, 4, true);
            assert_eq!(c, [5.0; 7]);
            gemm_packed_with(isa, 2, 0, 3, &[], 0, &[], &mut c, 4, false);
            assert_eq!(c, [0.0, 0.0, 0.0, 5.0, 0.0, 0.0, 0.0]);
        }
    }

    #[test]
    #[should_panic(expected = "packed")]
    fn short_packed_panics() {
        let mut c = vec![0.0; 4];
        gemm_packed(1, 2, 4, &[1.0, 2.0], 2, &[0.0; 16], &mut c, 4, false);
    }

    #[test]
    #[should_panic(expected = "c has")]
    fn short_c_panics() {
        let mut c = vec![0.0; 7];
        gemm_packed(2, 1, 4, &[1.0, 2.0], 1, &[0.0; 16], &mut c, 4, false);
    }

    #[test]
    #[should_panic(expected = "a has")]
    fn short_a_panics() {
        let mut c = vec![0.0; 8];
        gemm_packed(2, 2, 4, &[1.0, 2.0, 3.0], 2, &[0.0; 32], &mut c, 4, false);
    }

    #[test]
    #[should_panic(expected = "b has")]
    fn short_b_panics() {
        let mut out = vec![0.0; 32];
        pack_b(2, 3, &[0.0; 5], 3, 1, &mut out);
    }
}
