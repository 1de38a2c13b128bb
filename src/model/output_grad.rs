//! The output layer's backward pass by column strips of the logits' gradient.
//!
//! After the training forward, `dY [N*T, V]` (the logits buffer, rewritten in place by the
//! softmax) feeds two products: `dX = dY W^T` (the gradient flowing into the top layer) and
//! `[dW; db] = [X | 1]^T dY`. Done separately, each streams all of dY from memory (28 MB per
//! step at N*T = 700, V = 10,000). Here dY is walked in strips of S columns sized so that a
//! strip `[N*T, S]` stays in L2: the strip's share of dW (`[X | 1]^T dY[:, s]`, complete, as
//! it sums over every row) and its contribution to dX (`dY[:, s] W^T[s, :]`) are computed
//! back to back, so dY crosses the memory bus once.
//!
//! dX is then a sum over strips. The strips are split into a fixed number of [`GROUPS`]; each
//! group accumulates its strips in order into its own partial `[N*T, H]`, and the partials
//! are added in group order. Neither the grouping nor any order depends on the thread count,
//! so the results do not either. The partials cost `2 * N*T * H` floats of traffic per strip
//! against the `N*T * S` of dY they save, so this path is offered only while `2H <= S`
//! (small hidden sizes, where the output layer is most of the step). It is opt-in
//! ([`crate::Workspace::set_output_strips`]): on the CPUs measured so far the narrower
//! products cost as much as the read of dY saves, so the row-block path of `model::simple`
//! stays the default.

use rayon::prelude::*;

use crate::cpu::{isa, Isa};
use crate::gemm::{self, Accum, ColumnSplit, MatMut, MatRef, Packed, PANEL};

/// Bytes of one strip of dY meant to stay in L2 between its two uses (half of a 2 MB L2,
/// all of a 1 MB one: the other operands are small at the sizes this path is taken for).
const STRIP_BYTES: usize = 1 << 20;

/// Widest strip (a K block of the dX product, whose packed W^T block stays in L2 too).
const MAX_STRIP: usize = 512;

/// Partial sums of dX: a constant, so the summation order is the same on any machine.
pub(crate) const GROUPS: usize = 8;

/// The strip width for this shape, or 0 where the row-block path is cheaper (wide hidden
/// layers, batches too tall for a useful strip to fit L2, or no SIMD kernel).
pub(crate) fn strip_width(nt: usize, h: usize) -> usize {
    if isa() == Isa::Portable || nt == 0 {
        return 0;
    }
    let s = (STRIP_BYTES / (4 * nt)).min(MAX_STRIP) / PANEL * PANEL;
    if s >= PANEL && 2 * h <= s {
        s
    } else {
        0
    }
}

/// The number of groups for `v` columns in strips of `strip` (at most [`GROUPS`], at least 1).
pub(crate) fn groups(v: usize, strip: usize) -> usize {
    GROUPS.min(v.div_ceil(strip.max(1))).max(1)
}

/// Floats of packed dY strips (one per group) where the dW product packs B rather than
/// reading it in place (see `gemm::reads_b_in_place`).
pub(crate) fn packs_len(nt: usize, h: usize, v: usize, strip: usize) -> usize {
    if strip == 0 || gemm::reads_b_in_place(h + 1) {
        0
    } else {
        groups(v, strip) * gemm::packed_len(nt, strip)
    }
}

/// Floats of dX partials beyond the first (which is dX itself).
pub(crate) fn parts_len(nt: usize, h: usize, v: usize, strip: usize) -> Option<usize> {
    if strip == 0 {
        return Some(0);
    }
    (groups(v, strip) - 1).checked_mul(nt)?.checked_mul(h)
}

/// The operands of [`backward`].
pub(crate) struct StripGrads<'a> {
    /// dY `[nt, v]`.
    pub dy: &'a [f32],
    /// `[X | 1]^T`, row-major `[h + 1, nt]`.
    pub xt: &'a [f32],
    /// W^T `[v, h]` packed strip by strip ([`gemm::pack`] layout per strip).
    pub wt_packed: &'a [f32],
    /// dX `[nt, h]`: group 0's partial, overwritten.
    pub dx: &'a mut [f32],
    /// Groups 1.. partials, `[groups - 1, nt, h]`, overwritten.
    pub parts: &'a mut [f32],
    /// `[dW; db]` `[h + 1, v]`, overwritten.
    pub dw: &'a mut [f32],
    /// [`packs_len`] floats of scratch for packed dY strips.
    pub dy_packed: &'a mut [f32],
}

/// `dX = dY W^T` into `g.dx` (plus the partials in `g.parts`, which the caller adds with
/// [`add_parts`]) and `[dW; db] = [X | 1]^T dY` into `g.dw`, strip by strip; see the module
/// docs. Call only with `strip = strip_width(..) > 0`.
///
/// **Panics** if a buffer is shorter than its shape says.
pub(crate) fn backward(g: StripGrads<'_>, (nt, h, v): (usize, usize, usize), strip: usize) {
    let isa = isa();
    assert!(strip > 0 && isa != Isa::Portable, "strip path without SIMD");
    assert!(nt > 0, "strip path without rows");
    assert!(g.dy.len() >= nt * v && g.xt.len() >= (h + 1) * nt && g.dx.len() >= nt * h);
    assert!(g.dw.len() >= (h + 1) * v);
    let ng = groups(v, strip);
    assert!(g.parts.len() >= (ng - 1) * nt * h);
    let ns = v.div_ceil(strip);
    let (dy, wt) = (g.dy, g.wt_packed);
    let xt = MatRef::new(g.xt, h + 1, nt);
    let plen = gemm::packed_len(nt, strip);
    let pack = !gemm::reads_b_in_place(h + 1);
    assert!(!pack || g.dy_packed.len() >= ng * plen);
    // Offset of strip i's packed W^T block.
    let packed_off = |i: usize| -> usize {
        gemm::balanced_blocks(v, strip)
            .take(i)
            .map(|(_, w)| gemm::packed_len(w, h))
            .sum()
    };
    // Group `grp` owns the dW columns of its strips `grp * ns / ng .. (grp + 1) * ns / ng`
    // (strip j starts at column j * width), its dX partial and its region of the packs.
    let width = gemm::balanced_blocks(v, strip).next().map_or(0, |(_, w)| w);
    let split = ColumnSplit {
        parts: ng,
        units: ns,
        unit_cols: width,
    };
    let dw = MatMut::new(&mut g.dw[..(h + 1) * v], h + 1, v).par_column_strips(split);
    let regions = g.dy_packed[..if pack { ng * plen } else { 0 }]
        .par_chunks_mut(plen)
        .map(Some)
        .chain(rayon::iter::repeat_n((), if pack { 0 } else { ng }).map(|()| None));
    rayon::iter::once(&mut g.dx[..nt * h])
        .chain(g.parts[..(ng - 1) * nt * h].par_chunks_mut(nt * h))
        .zip(dw)
        .zip(regions)
        .enumerate()
        .for_each(|(grp, ((dx, mut dw), mut region))| {
            let first = grp * ns / ng;
            let last = (grp + 1) * ns / ng;
            let mut off = packed_off(first);
            for (j, (s0, w)) in gemm::balanced_blocks(v, strip)
                .enumerate()
                .take(last)
                .skip(first)
            {
                let packed = &wt[off..off + gemm::packed_len(w, h)];
                off += packed.len();
                let strip_dy = MatRef::rows_strided(&dy[s0..], nt, w, v);
                // This strip's dW columns, complete: [h+1, nt] x [nt, w], B packed or in place.
                let j0 = s0 - dw.col0();
                if let Some(region) = region.as_deref_mut() {
                    let len = gemm::pack(region, strip_dy);
                    let pk = Packed::new(&region[..len], nt, w);
                    dw.gemm_packed(isa, j0, xt, pk, Accum::Replace);
                } else {
                    dw.gemm_strided(isa, j0, xt, strip_dy, Accum::Replace);
                }
                // While the strip is in L2: its share of dX, [nt, w] x [w, h].
                gemm::gemm_packed(
                    MatMut::new(&mut *dx, nt, h),
                    strip_dy,
                    Packed::new(packed, w, h),
                    Accum::add_if(j > first),
                );
            }
        });
}

/// Adds the partials of groups 1.. to `dx`, the rows from `p0` on of a `[nt, h]` dX, in group
/// order.
pub(crate) fn add_parts(dx: &mut [f32], parts: &[f32], (nt, h): (usize, usize), p0: usize) {
    if parts.is_empty() {
        return;
    }
    let len = dx.len();
    for part in parts.chunks_exact(nt * h) {
        for (x, &p) in dx.iter_mut().zip(&part[p0 * h..p0 * h + len]) {
            *x += p;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_width_follows_the_cost_model() {
        if isa() == Isa::Portable {
            assert_eq!(strip_width(700, 100), 0);
            return;
        }
        // N*T = 700: 1 MB / 2800 B = 374 columns, rounded down to 368.
        assert_eq!(strip_width(700, 100), 368);
        assert_eq!(strip_width(700, 184), 368);
        assert_eq!(strip_width(700, 185), 0); // 2H > S: the partials cost more than they save
        assert_eq!(strip_width(700, 650), 0);
        assert_eq!(strip_width(4480, 100), 0); // a 1 MB strip is 48 columns wide
        assert_eq!(strip_width(10, 6), MAX_STRIP);
        assert_eq!(groups(10_000, 368), GROUPS);
        assert_eq!(groups(418, 512), 1);
        assert_eq!(parts_len(700, 100, 10_000, 368), Some(7 * 700 * 100));
        assert_eq!(parts_len(700, 650, 10_000, 0), Some(0));
        let s: Vec<_> = gemm::balanced_blocks(10, 4).collect();
        assert_eq!(s, vec![(0, 4), (4, 4), (8, 2)]);
    }

    /// dX and dW against a plain f64 product, with V spread over more strips than groups.
    #[test]
    fn matches_the_plain_products() {
        if isa() == Isa::Portable {
            return;
        }
        let (nt, h, v, strip) = (13, 5, 300, 16);
        let val = |i: usize, m: usize| ((i * 7919 + m) % 97) as f32 / 97.0 - 0.5;
        let dy: Vec<f32> = (0..nt * v).map(|i| val(i, 1)).collect();
        let x: Vec<f32> = (0..nt * h).map(|i| val(i, 2)).collect();
        let w: Vec<f32> = (0..h * v).map(|i| val(i, 3)).collect(); // W [h, v]
        let mut xt = vec![1.0f32; (h + 1) * nt];
        for r in 0..nt {
            for c in 0..h {
                xt[c * nt + r] = x[r * h + c];
            }
        }
        let mut wt_packed = vec![0.0f32; gemm::packed_len(v, h)];
        let mut off = 0;
        for (s0, sw) in gemm::balanced_blocks(v, strip) {
            // W^T rows s0..s0+sw: element (p, c) = W[c, s0 + p].
            gemm::pack(
                &mut wt_packed[off..],
                MatRef::strided(&w[s0..], sw, h, 1, v),
            );
            off += gemm::packed_len(sw, h);
        }
        let ng = groups(v, strip);
        assert!(ng == GROUPS && v.div_ceil(strip) > ng);
        let mut dx = vec![f32::NAN; nt * h];
        let mut parts = vec![f32::NAN; parts_len(nt, h, v, strip).unwrap()];
        let mut dw = vec![f32::NAN; (h + 1) * v];
        let mut dy_packed = vec![0.0; packs_len(nt, h, v, strip)];
        let g = StripGrads {
            dy: &dy,
            xt: &xt,
            wt_packed: &wt_packed,
            dx: &mut dx,
            parts: &mut parts,
            dw: &mut dw,
            dy_packed: &mut dy_packed,
        };
        backward(g, (nt, h, v), strip);
        add_parts(&mut dx, &parts, (nt, h), 0);
        for r in 0..nt {
            for c in 0..h {
                let want: f64 = (0..v)
                    .map(|j| dy[r * v + j] as f64 * w[c * v + j] as f64)
                    .sum();
                assert!((dx[r * h + c] as f64 - want).abs() < 1e-4, "dx[{r},{c}]");
            }
        }
        for c in 0..=h {
            for j in 0..v {
                let want: f64 = (0..nt)
                    .map(|r| xt[c * nt + r] as f64 * dy[r * v + j] as f64)
                    .sum();
                assert!((dw[c * v + j] as f64 - want).abs() < 1e-4, "dw[{c},{j}]");
            }
        }
    }
}
