//! The one safe, shape-checked wrapper around the large f32 GEMMs.
//!
//! Everything that is not on the recurrence is one large product over the N*T rows of a batch
//! (input projection, output affine, weight gradients). They all go through [`matmul`], which is
//! the only place in the crate that calls `matrixmultiply::sgemm`.
//!
//! Views are strided, so a transpose is free: [`MatRef::t`] swaps the strides.
//!
//! Large products are split into row blocks of C whose number depends only on the shape, never on
//! the thread count, and rayon runs the blocks. Each element of C is computed by the same kernel
//! with the same k-order whichever block it lands in, so results are bit-identical for any number
//! of threads. (`matrixmultiply` packs A and B on every call and allocates its packing buffer once
//! per call; [`sgemm_calls`] counts calls so the allocation test can account for them.)

use std::sync::atomic::{AtomicUsize, Ordering};

/// Whether a product overwrites or adds to its output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accum {
    /// `C = A B`
    Replace,
    /// `C += A B`
    Add,
}

/// A read-only strided matrix view: element `(i, j)` is `data[i * rs + j * cs]`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

/// A mutable row-major matrix view with row stride `rs` (`rs >= cols`): element `(i, j)` is
/// `data[i * rs + j]`.
#[derive(Debug)]
pub struct MatMut<'a> {
    data: &'a mut [f32],
    rows: usize,
    cols: usize,
    rs: usize,
}

/// Smallest slice length holding a `rows x cols` view with strides `rs`, `cs`.
fn span(rows: usize, cols: usize, rs: usize, cs: usize) -> usize {
    if rows == 0 || cols == 0 {
        0
    } else {
        (rows - 1) * rs + (cols - 1) * cs + 1
    }
}

impl<'a> MatRef<'a> {
    /// A dense row-major `rows x cols` view.
    ///
    /// **Panics** if `data.len() < rows * cols`.
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self::strided(data, rows, cols, cols, 1)
    }

    /// A view with explicit row and column strides.
    ///
    /// **Panics** if the view reaches past the end of `data`.
    pub fn strided(data: &'a [f32], rows: usize, cols: usize, rs: usize, cs: usize) -> Self {
        assert!(
            span(rows, cols, rs, cs) <= data.len(),
            "MatRef {rows}x{cols} (rs {rs}, cs {cs}) does not fit in {} elements",
            data.len()
        );
        Self {
            data,
            rows,
            cols,
            rs,
            cs,
        }
    }

    /// The transposed view (no copy).
    pub fn t(self) -> Self {
        Self {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }

    /// Rows `r0..r1` of this view.
    fn rows_range(self, r0: usize, r1: usize) -> Self {
        debug_assert!(r0 <= r1 && r1 <= self.rows);
        let start = if r0 == r1 { 0 } else { r0 * self.rs };
        Self {
            data: &self.data[start.min(self.data.len())..],
            rows: r1 - r0,
            ..self
        }
    }
}

impl<'a> MatMut<'a> {
    /// A dense row-major `rows x cols` view.
    ///
    /// **Panics** if `data.len() < rows * cols`.
    pub fn new(data: &'a mut [f32], rows: usize, cols: usize) -> Self {
        Self::with_row_stride(data, rows, cols, cols)
    }

    /// A row-major view whose rows start `rs` elements apart.
    ///
    /// **Panics** if `rs < cols` or the view reaches past the end of `data`.
    pub fn with_row_stride(data: &'a mut [f32], rows: usize, cols: usize, rs: usize) -> Self {
        assert!(
            rs >= cols || rows <= 1,
            "MatMut row stride {rs} < cols {cols}"
        );
        assert!(
            span(rows, cols, rs, 1) <= data.len(),
            "MatMut {rows}x{cols} (rs {rs}) does not fit in {} elements",
            data.len()
        );
        Self {
            data,
            rows,
            cols,
            rs,
        }
    }
}

static SGEMM_CALLS: AtomicUsize = AtomicUsize::new(0);

/// Number of `matrixmultiply::sgemm` calls made by this process so far (each allocates one
/// packing buffer; the allocation test checks that nothing else in a training step allocates).
pub fn sgemm_calls() -> usize {
    SGEMM_CALLS.load(Ordering::Relaxed)
}

/// Work (multiply-adds) below which a product runs as one block on the calling thread.
const SPLIT_MIN_FLOPS: usize = 4_000_000;
/// Number of row blocks a large product is split into. A property of the shape, not of the
/// thread pool, so that results never depend on the thread count.
const SPLIT_BLOCKS: usize = 2;
/// Row blocks are multiples of this, so every block keeps whole micro-kernel tiles.
const SPLIT_ALIGN: usize = 16;

/// `C (=|+=) A B`.
///
/// Shapes: `A [m,k]`, `B [k,n]`, `C [m,n]`. Products of at least a few million multiply-adds
/// are split into two row blocks of C that run in parallel on the current rayon pool.
///
/// **Panics** if the shapes do not agree.
pub fn matmul(c: MatMut<'_>, a: MatRef<'_>, b: MatRef<'_>, accum: Accum) {
    assert_eq!(a.cols, b.rows, "matmul: inner dimensions differ");
    assert_eq!(c.rows, a.rows, "matmul: C rows != A rows");
    assert_eq!(c.cols, b.cols, "matmul: C cols != B cols");
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if m == 0 || n == 0 {
        return;
    }
    if m * k * n < SPLIT_MIN_FLOPS || m < 2 * SPLIT_ALIGN {
        sgemm_block(c, a, b, accum);
        return;
    }
    let per = m
        .div_ceil(SPLIT_BLOCKS)
        .next_multiple_of(SPLIT_ALIGN)
        .min(m);
    let MatMut {
        data,
        rows,
        cols,
        rs,
    } = c;
    let (top, bottom) = data.split_at_mut((per * rs).min(data.len()));
    let c_top = MatMut {
        data: top,
        rows: per,
        cols,
        rs,
    };
    let c_bottom = MatMut {
        data: bottom,
        rows: rows - per,
        cols,
        rs,
    };
    rayon::join(
        || sgemm_block(c_top, a.rows_range(0, per), b, accum),
        || sgemm_block(c_bottom, a.rows_range(per, m), b, accum),
    );
}

/// One `sgemm` call on the calling thread.
fn sgemm_block(c: MatMut<'_>, a: MatRef<'_>, b: MatRef<'_>, accum: Accum) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if accum == Accum::Replace {
            for i in 0..m {
                c.data[i * c.rs..i * c.rs + n].fill(0.0);
            }
        }
        return;
    }
    let beta = match accum {
        Accum::Replace => 0.0,
        Accum::Add => 1.0,
    };
    SGEMM_CALLS.fetch_add(1, Ordering::Relaxed);
    // SAFETY: every view was bounds-checked at construction (`span(..) <= len`), so all
    // (i, j) with i < rows, j < cols index inside its slice; `c` is a unique borrow, so C does
    // not alias A or B; strides are < isize::MAX because they index into live slices. With
    // beta == 0, sgemm does not read C (documented), so uninitialised-looking NaNs are fine.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.data.as_ptr(),
            a.rs as isize,
            a.cs as isize,
            b.data.as_ptr(),
            b.rs as isize,
            b.cs as isize,
            beta,
            c.data.as_mut_ptr(),
            c.rs as isize,
            1,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(m: usize, k: usize, n: usize, a: &[f32], b: &[f32]) -> Vec<f32> {
        let mut c = vec![0.0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0f64;
                for p in 0..k {
                    s += a[i * k + p] as f64 * b[p * n + j] as f64;
                }
                c[i * n + j] = s as f32;
            }
        }
        c
    }

    fn ints(len: usize, seed: u32) -> Vec<f32> {
        let mut x = seed.wrapping_mul(2654435761).wrapping_add(1);
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x % 9) as f32 - 4.0
            })
            .collect()
    }

    #[test]
    fn matches_reference_at_awkward_sizes_including_split() {
        // Small integers make every product exact, so equality is the right comparison.
        for &(m, k, n) in &[
            (0, 3, 4),
            (1, 1, 1),
            (7, 15, 17),
            (17, 0, 5),
            (63, 65, 100),
            (700, 100, 100),
            (100, 700, 65),
        ] {
            let a = ints(m * k, 1);
            let b = ints(k * n, 2);
            let want = reference(m, k, n, &a, &b);
            let mut c = vec![f32::NAN; m * n];
            matmul(
                MatMut::new(&mut c, m, n),
                MatRef::new(&a, m, k),
                MatRef::new(&b, k, n),
                Accum::Replace,
            );
            assert_eq!(c, want, "{m}x{k}x{n}");
            matmul(
                MatMut::new(&mut c, m, n),
                MatRef::new(&a, m, k),
                MatRef::new(&b, k, n),
                Accum::Add,
            );
            let twice: Vec<f32> = want.iter().map(|v| 2.0 * v).collect();
            assert_eq!(c, twice, "{m}x{k}x{n} accumulate");
        }
    }

    #[test]
    fn transposed_views_and_row_stride_leave_padding_alone() {
        let (m, k, n) = (65, 33, 17);
        let at = ints(k * m, 3); // A^T stored [k, m]
        let b = ints(k * n, 4);
        let a: Vec<f32> = (0..m * k).map(|i| at[(i % k) * m + i / k]).collect();
        let want = reference(m, k, n, &a, &b);
        let rs = n + 3;
        let mut c = vec![f32::NAN; m * rs];
        matmul(
            MatMut::with_row_stride(&mut c, m, n, rs),
            MatRef::new(&at, k, m).t(),
            MatRef::new(&b, k, n),
            Accum::Replace,
        );
        for i in 0..m {
            assert_eq!(&c[i * rs..i * rs + n], &want[i * n..(i + 1) * n]);
            assert!(c[i * rs + n..(i * rs + rs).min(c.len())]
                .iter()
                .all(|v| v.is_nan()));
        }
    }

    #[test]
    #[should_panic(expected = "inner dimensions")]
    fn shape_mismatch_panics() {
        let a = [0.0f32; 6];
        let mut c = [0.0f32; 4];
        matmul(
            MatMut::new(&mut c, 2, 2),
            MatRef::new(&a, 2, 3),
            MatRef::new(&a, 2, 3),
            Accum::Replace,
        );
    }
}
