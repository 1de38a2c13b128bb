//! Packing B into column panels (the layout every micro-kernel reads), and copying a strided
//! A into contiguous rows.

use rayon::prelude::*;

use super::{MatRef, Par};
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
fn pack_b(k: usize, n: usize, b: &[f32], rs: usize, cs: usize, out: &mut [f32]) {
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
                        transpose16_avx512(b.as_ptr().add(j0 * cs + p0), cs, dst.as_mut_ptr())
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

/// Packs all of `b` (`k = b.rows()`, `n = b.cols()`) into `out` as column panels, on the
/// calling thread, and returns the packed length [`packed_len`]`(k, n)`.
///
/// Layout: `out[(jp * k + p) * PANEL + l] = B[p, jp * PANEL + l]` (0 where that column is
/// `>= n`), for panel `jp`, row `p < k`, lane `l < PANEL`; `out[packed_len(k, n)..]` is left
/// untouched. The view's strides say how B is read, so `Wh^T` packs straight from `Wh`'s
/// buffer as `MatRef::new(wh, h, gh).t()`, without a transpose copy.
///
/// For speed, start `out` on a 64-byte boundary: each packed row is then exactly one cache
/// line and the AVX-512 kernel never issues a line-splitting load.
///
/// **Panics** if `out.len() < packed_len(k, n)`.
pub fn pack(out: &mut [f32], b: MatRef<'_>) -> usize {
    pack_b(b.rows, b.cols, b.data, b.rs, b.cs, out);
    packed_len(b.rows, b.cols)
}

/// Copies the strided view `a` into `out` as a row-major `[rows, cols]` matrix, in parallel
/// over `par` blocks of rows.
///
/// **Panics** if `out` is shorter than `rows * cols`.
pub fn copy_rows(out: &mut [f32], a: &MatRef<'_>, par: Par) {
    let (m, k) = (a.rows, a.cols);
    if m == 0 || k == 0 {
        return;
    }
    let rows_per_task = m.div_ceil(par.tasks());
    let copy = |(t, rows): (usize, &mut [f32])| {
        let i0 = t * rows_per_task;
        // Walk A's source rows (its contiguous direction for a transposed view) in the
        // outer loop so reads stay sequential.
        for p in 0..k {
            for (r, row) in rows.chunks_exact_mut(k).enumerate() {
                row[p] = a.data[(i0 + r) * a.rs + p * a.cs];
            }
        }
    };
    let out = &mut out[..m * k];
    match par {
        Par::Seq => out.chunks_mut(rows_per_task * k).enumerate().for_each(copy),
        Par::Tasks(_) => out
            .par_chunks_mut(rows_per_task * k)
            .enumerate()
            .for_each(copy),
    }
}

/// `out [cols, rows]` = the transpose of the row-major `src [rows, cols]`: `out[j*rows + i] =
/// src[i*cols + j]`. On AVX-512, whole 16 x 16 tiles go through the register transpose of
/// the packing (the class heads' `G^T` of a wide block was a scalar strided copy that took a
/// fifth of an adaptive training step); the edges, and every tile elsewhere, are copied one
/// value at a time.
///
/// **Panics** if `src` or `out` is shorter than `rows * cols`.
pub fn transpose(out: &mut [f32], src: &[f32], rows: usize, cols: usize) {
    let n = rows * cols;
    assert!(
        src.len() >= n && out.len() >= n,
        "transpose: [{rows}, {cols}] needs {n} f32 in and out, got {} and {}",
        src.len(),
        out.len()
    );
    let (r16, c16) = if cfg!(target_arch = "x86_64") && isa() == Isa::Avx512 {
        (rows / PANEL * PANEL, cols / PANEL * PANEL)
    } else {
        (0, 0)
    };
    #[cfg(target_arch = "x86_64")]
    if r16 > 0 && c16 > 0 {
        let mut tile = [0.0f32; PANEL * PANEL];
        for r0 in (0..r16).step_by(PANEL) {
            for c0 in (0..c16).step_by(PANEL) {
                // SAFETY: AVX-512F is available (checked above); source rows r0..r0+16 <= rows
                // each hold columns c0..c0+16 <= cols, inside `src` (its length >= rows*cols
                // was asserted); `tile` holds the 256 floats written.
                unsafe {
                    transpose16_avx512(src.as_ptr().add(r0 * cols + c0), cols, tile.as_mut_ptr())
                };
                // tile row p is source column c0 + p over rows r0..r0+16.
                for (p, t) in tile.chunks_exact(PANEL).enumerate() {
                    out[(c0 + p) * rows + r0..][..PANEL].copy_from_slice(t);
                }
            }
        }
    }
    for (i, row) in src[..n].chunks_exact(cols.max(1)).enumerate().take(rows) {
        let from = if i < r16 { c16 } else { 0 };
        for (j, &v) in row.iter().enumerate().skip(from) {
            out[j * rows + i] = v;
        }
    }
}

/// Packs rows `k0..k0+kc` of `b` into `out` (column panels, the layout of
/// [`pack()`]), in parallel over `par` groups of panels.
///
/// **Panics** if `out` is shorter than [`packed_len`]`(kc, b.cols)` or the rows are
/// outside `b`.
pub fn pack_rows(out: &mut [f32], b: &MatRef<'_>, k0: usize, kc: usize, par: Par) {
    assert!(
        k0 + kc <= b.rows,
        "pack_rows: rows {k0}..{} outside {}",
        k0 + kc,
        b.rows
    );
    if kc == 0 || b.cols == 0 {
        return;
    }
    let n = b.cols;
    let panels = n.div_ceil(PANEL);
    let per_task = panels.div_ceil(par.tasks()).max(1);
    let pack_panels = |(t, chunk): (usize, &mut [f32])| {
        let c0 = t * per_task * PANEL;
        let cols = (per_task * PANEL).min(n - c0);
        let start = k0 * b.rs + c0 * b.cs;
        pack_b(kc, cols, &b.data[start..], b.rs, b.cs, chunk);
    };
    let out = &mut out[..packed_len(kc, n)];
    let chunk = per_task * kc * PANEL;
    match par {
        Par::Seq => out.chunks_mut(chunk).enumerate().for_each(pack_panels),
        Par::Tasks(_) => out.par_chunks_mut(chunk).enumerate().for_each(pack_panels),
    }
}

/// Writes the transpose of the 16 x 16 block at `src` (row `l` at `src + l*lds`) to `dst`
/// as 16 rows of 16 (`dst[p*16 + l] = src[l*lds + p]`): unpack pairs of rows, shuffle
/// 4 x 4 blocks inside 128-bit lanes, then gather the lanes (64 shuffles per block).
///
/// # Safety
/// AVX-512F must be available; 16 floats must be readable at `src + l*lds` for l < 16 and
/// 256 floats writable at `dst`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn transpose16_avx512(src: *const f32, lds: usize, dst: *mut f32) {
    use std::arch::x86_64::*;
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

/// `pack_b` with raw dimensions and strides, for the test of its own bounds check.
#[cfg(test)]
pub(super) fn pack_b_for_tests(
    k: usize,
    n: usize,
    b: &[f32],
    rs: usize,
    cs: usize,
    out: &mut [f32],
) {
    pack_b(k, n, b, rs, cs, out);
}

#[cfg(test)]
mod transpose_tests {
    use super::*;

    #[test]
    fn transpose_matches_the_definition_at_tile_edges() {
        for (rows, cols) in [
            (0, 5),
            (5, 0),
            (1, 1),
            (7, 300),
            (16, 16),
            (17, 33),
            (64, 1000),
            (48, 16),
            (31, 64),
        ] {
            let src: Vec<f32> = (0..rows * cols).map(|i| i as f32 * 0.5 - 3.0).collect();
            let mut out = vec![f32::NAN; rows * cols];
            transpose(&mut out, &src, rows, cols);
            for i in 0..rows {
                for j in 0..cols {
                    assert_eq!(
                        out[j * rows + i].to_bits(),
                        src[i * cols + j].to_bits(),
                        "[{rows},{cols}] ({i},{j})"
                    );
                }
            }
        }
    }
}
