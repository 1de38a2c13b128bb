//! Every f32 matrix product of the crate, and the only `unsafe` GEMM code.
//!
//! Two families share the strided views [`MatRef`] / [`MatMut`] (a transpose is free:
//! [`MatRef::t`] swaps the strides) and the column-panel layout of [`pack()`]:
//!
//! - **Small-M products against a packed B** ([`gemm_packed`]), on the calling thread, for the
//!   RNN time loop and the per-block products of the model: every step computes
//!   `h_pre += h_prev · Wh` and `dh_prev (+)= dt · Whᵀ` with M = a few batch rows and
//!   K = N = H. `Wh` (or `Whᵀ`, read through strides) is packed once per batch into caller
//!   memory and reused for all T steps with no heap allocation.
//! - **Large products** over the N*T rows of a batch (weight gradients and the like):
//!   [`matmul_packed`], a BLIS-style driver around the same micro-kernels that splits the work
//!   over rayon tasks, and [`matmul`], the only caller of `matrixmultiply::sgemm`.
//!
//! Determinism: every output element is `acc = 0; for p in 0..k { acc = acc + A[i,p]·B[p,j] };
//! C = acc` (or `C = C + acc`), fused on the FMA ISAs, unfused in the portable kernel. Vector
//! lanes map to columns only, so neither register blocking, nor row or column splits, nor the
//! thread count change that sequence (for a given [`Isa`]).
//!
//! What lives where:
//! - `mod.rs` (here): the API: [`Accum`], [`Par`], the views, [`Packed`], [`gemm_packed`],
//!   and [`ColStrip`] (safe disjoint column strips of one C for parallel tasks).
//! - `pack.rs`: [`PANEL`], [`packed_len`], [`pack()`], [`pack_rows`] (with the AVX-512 16 x 16
//!   transpose for column-major B) and [`copy_rows`].
//! - `kernel.rs`: the raw operands of a kernel call, the block walk, the portable micro-kernel
//!   and the dispatch to the SIMD ones.
//! - `x86.rs`: the AVX-512 and AVX2 micro-kernels.
//! - `driver.rs`: [`matmul_packed`] (the BLIS-style loops), [`matmul`] (matrixmultiply) and
//!   their blocking constants.
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

use std::marker::PhantomData;

use rayon::prelude::*;

use crate::cpu::{self, Isa};

mod driver;
mod kernel;
mod pack;
#[cfg(target_arch = "x86_64")]
mod x86;

#[cfg(test)]
mod tests;

pub(crate) use driver::reads_b_in_place;
pub use driver::{
    balanced_blocks, matmul, matmul_packed, scratch_len, scratch_len_for, sgemm_calls, KC,
};
pub use pack::{copy_rows, pack, pack_rows, packed_len, transpose, PANEL};

use kernel::{run_simd, Operands};

/// Whether a product overwrites or adds to its output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accum {
    /// `C = A B`
    Replace,
    /// `C += A B`
    Add,
}

impl Accum {
    /// [`Accum::Add`] if `add`, else [`Accum::Replace`] (e.g. `Accum::add_if(block > 0)` when
    /// summing over K blocks).
    pub fn add_if(add: bool) -> Self {
        if add {
            Self::Add
        } else {
            Self::Replace
        }
    }
}

/// How a packing or copy is parallelised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Par {
    /// On the calling thread.
    Seq,
    /// Split into up to `n` rayon tasks (`Tasks(0)` and `Tasks(1)` mean one).
    Tasks(usize),
}

impl Par {
    /// The number of pieces the work is split into (at least 1).
    fn tasks(self) -> usize {
        match self {
            Par::Seq => 1,
            Par::Tasks(n) => n.max(1),
        }
    }
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
///
/// **Panics** if that length overflows `usize` (the kernels rely on it being exact).
fn span(rows: usize, cols: usize, rs: usize, cs: usize) -> usize {
    if rows == 0 || cols == 0 {
        0
    } else {
        (rows - 1)
            .checked_mul(rs)
            .and_then(|r| (cols - 1).checked_mul(cs).and_then(|c| r.checked_add(c)))
            .and_then(|x| x.checked_add(1))
            .expect("matrix view: extent overflows usize")
    }
}

impl<'a> MatRef<'a> {
    /// A dense row-major `rows x cols` view.
    ///
    /// **Panics** if `data.len() < rows * cols`.
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self::strided(data, rows, cols, cols, 1)
    }

    /// A row-major view whose rows start `rs` elements apart (column stride 1).
    ///
    /// **Panics** if the view reaches past the end of `data`.
    pub fn rows_strided(data: &'a [f32], rows: usize, cols: usize, rs: usize) -> Self {
        Self::strided(data, rows, cols, rs, 1)
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

    /// The number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The number of columns.
    pub fn cols(&self) -> usize {
        self.cols
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
    /// **Panics** if `rs < cols` (with more than one row) or the view reaches past the end of
    /// `data`.
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

    /// The number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Splits the columns of C into `split.parts` disjoint strips, one per item of the
    /// returned parallel iterator (item `t` is strip `t`, see [`ColumnSplit`]), so parallel
    /// tasks can each write their own columns of one row-major C.
    ///
    /// **Panics** if `split.parts == 0` or `parts * units` overflows.
    pub fn par_column_strips(
        self,
        split: ColumnSplit,
    ) -> impl IndexedParallelIterator<Item = ColStrip<'a>> + 'a {
        let ColumnSplit {
            parts,
            units,
            unit_cols,
        } = split;
        assert!(parts > 0, "par_column_strips: no parts");
        assert!(
            parts.checked_mul(units).is_some(),
            "par_column_strips: parts * units overflows"
        );
        let (rows, cols, rs) = (self.rows, self.cols, self.rs);
        let base = SendPtr(self.data.as_mut_ptr());
        // Monotone in t (t * units / parts is, and so are the scaling and the clamp), so the
        // strips [lo(t), lo(t + 1)) are disjoint.
        let lo = move |t: usize| (t * units / parts).saturating_mul(unit_cols).min(cols);
        (0..parts).into_par_iter().map(move |t| {
            let (c0, c1) = (lo(t), lo(t + 1));
            ColStrip {
                base: base.get(),
                rows,
                col0: c0,
                cols: c1 - c0,
                rs,
                _c: PhantomData,
            }
        })
    }
}

/// How [`MatMut::par_column_strips`] deals the columns of C: `units` blocks of `unit_cols`
/// columns (the last ones clipped to C's width) shared out as evenly as possible between
/// `parts` strips, strip `t` taking blocks `t * units / parts .. (t + 1) * units / parts`.
/// With `units == parts`, strip `t` is columns `t * unit_cols .. (t + 1) * unit_cols`.
#[derive(Clone, Copy, Debug)]
pub struct ColumnSplit {
    /// Number of strips.
    pub parts: usize,
    /// Number of column blocks.
    pub units: usize,
    /// Width of a column block.
    pub unit_cols: usize,
}

/// A buffer's base pointer, shared by tasks that write disjoint parts of it.
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);

impl SendPtr {
    /// (A method, so closures capture the whole `Send + Sync` wrapper, not the raw field.)
    fn get(self) -> *mut f32 {
        self.0
    }
}

// SAFETY: the pointer is only turned into `ColStrip`s over disjoint columns, each of which
// borrows C exclusively for the lifetime of the `MatMut` it came from.
unsafe impl Send for SendPtr {}
// SAFETY: as above.
unsafe impl Sync for SendPtr {}

/// Columns `col0() .. col0() + cols()` of all rows of one row-major C, borrowed exclusively
/// (made by [`MatMut::par_column_strips`]); the only thing it can do is run the SIMD
/// micro-kernels onto its own columns.
pub struct ColStrip<'a> {
    /// Element (0, 0) of the whole C.
    base: *mut f32,
    rows: usize,
    col0: usize,
    cols: usize,
    rs: usize,
    _c: PhantomData<&'a mut [f32]>,
}

// SAFETY: a strip is an exclusive borrow of its columns of C (disjoint from every other
// strip's), like a `&mut [f32]`, so another thread may use it.
unsafe impl Send for ColStrip<'_> {}

impl ColStrip<'_> {
    /// The strip's first column in C.
    pub fn col0(&self) -> usize {
        self.col0
    }

    /// The strip's width.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Checks a product onto columns `j0 .. j0 + n` of this strip; returns the pointer to
    /// element (0, j0) of the strip, or `None` if there is nothing to do.
    fn target(
        &self,
        isa: Isa,
        j0: usize,
        a: &MatRef<'_>,
        (k, n): (usize, usize),
        accum: Accum,
    ) -> Option<*mut f32> {
        assert!(
            isa != Isa::Portable && isa.is_supported(),
            "ColStrip: needs a supported SIMD ISA, got {isa:?}"
        );
        assert!(
            a.cs == 1 || a.cols <= 1,
            "ColStrip: A needs column stride 1"
        );
        assert_eq!(a.rows, self.rows, "ColStrip: A rows != C rows");
        assert_eq!(a.cols, k, "ColStrip: inner dimensions differ");
        assert!(
            j0.checked_add(n).is_some_and(|e| e <= self.cols),
            "ColStrip: columns {j0}..+{n} outside a strip of {}",
            self.cols
        );
        if self.rows == 0 || n == 0 || k == 0 {
            assert!(
                k != 0 || accum == Accum::Add,
                "ColStrip: k = 0 without accumulate"
            );
            return None;
        }
        // SAFETY: rows > 0 and n > 0, so column col0 + j0 < col0 + cols <= C's width lies in
        // row 0 of C, inside the buffer C was borrowed from.
        Some(unsafe { self.base.add(self.col0 + j0) })
    }

    /// `C[:, j0 .. j0 + b.n] (=|+=) A B` on `isa`, B packed (see [`gemm_packed`]).
    ///
    /// **Panics** if `isa` is not a supported SIMD ISA, the shapes disagree, the columns leave
    /// the strip, A's column stride is not 1, or `b.k == 0` with [`Accum::Replace`].
    pub fn gemm_packed(&mut self, isa: Isa, j0: usize, a: MatRef<'_>, b: Packed<'_>, accum: Accum) {
        let Some(c) = self.target(isa, j0, &a, (b.k, b.n), accum) else {
            return;
        };
        let ops = Operands {
            m: a.rows,
            k: b.k,
            n: b.n,
            a: a.data.as_ptr(),
            lda: a.rs,
            b: b.data.as_ptr(),
            ldb: 0,
            c,
            ldc: self.rs,
            accum,
        };
        // SAFETY: SIMD support asserted. A: rows i < m hold k floats at i*lda (the view's span
        // was checked, column stride 1); packed B holds packed_len(k, n) floats (`Packed::new`);
        // C: rows i < m hold n floats at c + i*ldc (columns inside this strip, checked by
        // `target`), disjoint from every other strip and borrowed exclusively, so nothing else
        // touches them; rows do not overlap (ldc >= C's width >= n).
        unsafe { run_simd::<false>(isa, ops) }
    }

    /// `C[:, j0 .. j0 + b.cols()] (=|+=) A B` on `isa`, reading a row-major B (with column
    /// stride 1) in place instead of from a packed copy. Each element of C gets exactly the sum it
    /// gets from [`ColStrip::gemm_packed`] (same k order, the column tail's missing lanes
    /// loaded as zero like the packing's padding), so the two are bit-identical; this one
    /// skips writing and re-reading the packed copy, which for a wide B read once
    /// (`dW = Aᵀ dY`) is pure memory traffic.
    ///
    /// **Panics** as [`ColStrip::gemm_packed`], or if B's column stride is not 1 or its row
    /// stride is below its width.
    pub fn gemm_strided(
        &mut self,
        isa: Isa,
        j0: usize,
        a: MatRef<'_>,
        b: MatRef<'_>,
        accum: Accum,
    ) {
        let (k, n) = (b.rows, b.cols);
        assert!(
            (b.cs == 1 || n <= 1) && b.rs >= n,
            "ColStrip::gemm_strided: B needs column stride 1 and row stride >= {n}"
        );
        let Some(c) = self.target(isa, j0, &a, (k, n), accum) else {
            return;
        };
        let ops = Operands {
            m: a.rows,
            k,
            n,
            a: a.data.as_ptr(),
            lda: a.rs,
            b: b.data.as_ptr(),
            ldb: b.rs,
            c,
            ldc: self.rs,
            accum,
        };
        // SAFETY: as in `gemm_packed`, with B's rows p < k holding n floats at p*ldb (the
        // view's span was checked, column stride 1); full-panel loads stay inside each row's
        // n columns, tail loads are masked.
        unsafe { run_simd::<true>(isa, ops) }
    }
}

/// The products with nothing to multiply: C empty (nothing to do) or `k == 0` (C zeroed for
/// [`Accum::Replace`], left as it is for [`Accum::Add`]). Returns whether the product was one.
pub(crate) fn empty_product(c: &mut MatMut<'_>, k: usize, accum: Accum) -> bool {
    let (m, n) = (c.rows, c.cols);
    if m == 0 || n == 0 {
        return true;
    }
    if k != 0 {
        return false;
    }
    if accum == Accum::Replace {
        for i in 0..m {
            c.data[i * c.rs..i * c.rs + n].fill(0.0);
        }
    }
    true
}

/// `C (=|+=) A B` on the calling thread on a SIMD `isa`, reading a row-major B (of column
/// stride one) in place: every element of C gets the sum [`gemm_packed_with`] gives it over B packed
/// (same k order, the tail's missing lanes loaded as zero, as [`ColStrip::gemm_strided`]), so
/// the two are bit-identical. For a B read once or twice (C of a few rows, such as a class's
/// `dX = G W` in the class head's backward), packing B first only adds its copy.
///
/// **Panics** if `isa` is [`Isa::Portable`] or unsupported, the shapes disagree, A's or B's
/// column stride is not 1, or B's row stride is below its width.
pub fn gemm_strided_with(isa: Isa, mut c: MatMut<'_>, a: MatRef<'_>, b: MatRef<'_>, accum: Accum) {
    assert!(
        isa != Isa::Portable && isa.is_supported(),
        "gemm_strided: needs a supported SIMD ISA, got {isa:?}"
    );
    assert_eq!(a.cols, b.rows, "gemm_strided: inner dimensions differ");
    assert_eq!(c.rows, a.rows, "gemm_strided: C rows != A rows");
    assert_eq!(c.cols, b.cols, "gemm_strided: C cols != B cols");
    assert!(
        (a.cs == 1 || a.cols <= 1) && (b.cs == 1 || b.cols <= 1) && b.rs >= b.cols,
        "gemm_strided: A and B need column stride 1, B a row stride >= its width"
    );
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if empty_product(&mut c, k, accum) {
        return;
    }
    let ops = Operands {
        m,
        k,
        n,
        a: a.data.as_ptr(),
        lda: a.rs,
        b: b.data.as_ptr(),
        ldb: b.rs,
        c: c.data.as_mut_ptr(),
        ldc: c.rs,
        accum,
    };
    // SAFETY: `isa` is a supported SIMD ISA (asserted). The views were bounds-checked at
    // construction: rows i < m of A hold k floats at i*lda and rows p < k of B hold n floats
    // at p*ldb (column stride 1 both, asserted; full-panel loads stay inside a row's n
    // columns, tail loads are masked); rows of C hold n floats at i*ldc and do not overlap.
    // C is a unique borrow, so it aliases neither A nor B.
    unsafe { run_simd::<true>(isa, ops) }
}

/// A B matrix `[k, n]` packed into column panels (the layout [`pack()`] writes).
#[derive(Clone, Copy, Debug)]
pub struct Packed<'a> {
    data: &'a [f32],
    k: usize,
    n: usize,
}

impl<'a> Packed<'a> {
    /// The packed `[k, n]` matrix in `data` (written by [`pack()`] or [`pack_rows`]).
    ///
    /// **Panics** if `data.len() < packed_len(k, n)`.
    pub fn new(data: &'a [f32], k: usize, n: usize) -> Self {
        let len = packed_len(k, n);
        assert!(
            data.len() >= len,
            "Packed: packed data has {} f32, needs packed_len({k}, {n}) = {len}",
            data.len()
        );
        Self { data, k, n }
    }

    /// Rows of B.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Columns of B.
    pub fn n(&self) -> usize {
        self.n
    }
}

/// Small-M product on the calling thread against packed B: `C (=|+=) A B`, on the ISA chosen
/// by [`cpu::isa()`]; see [`gemm_packed_with`].
///
/// **Panics** if the shapes disagree or A's column stride is not 1.
pub fn gemm_packed(c: MatMut<'_>, a: MatRef<'_>, b: Packed<'_>, accum: Accum) {
    gemm_packed_with(cpu::isa(), c, a, b, accum);
}

/// [`gemm_packed`] on an explicit instruction set.
///
/// Element `C[i, j]` is computed as `acc = 0; for p in 0..k { acc = acc + A[i,p]·B[p,j] }` in
/// increasing `p` (fused multiply-add on `Avx512`/`Avx2Fma`, separate multiply and add on
/// `Portable`), then `C = acc` or `C = C + acc`. Results are therefore bit-identical across `m`
/// and row splits for a given `isa`, but differ in the last bits between FMA and portable ISAs.
/// With `k == 0`, C is zeroed ([`Accum::Replace`]) or left unchanged. Only the `rows x cols`
/// elements of C are written (not the padding between rows). Allocates nothing.
///
/// **Panics** if `isa` is not supported by this CPU, the shapes disagree (`a.cols() == b.k()`,
/// `c.rows() == a.rows()`, `c.cols() == b.n()`), or A's column stride is not 1.
pub fn gemm_packed_with(isa: Isa, mut c: MatMut<'_>, a: MatRef<'_>, b: Packed<'_>, accum: Accum) {
    assert!(
        isa.is_supported(),
        "gemm_packed: {isa:?} is not supported by this CPU"
    );
    assert_eq!(a.cols, b.k, "gemm_packed: inner dimensions differ");
    assert_eq!(c.rows, a.rows, "gemm_packed: C rows != A rows");
    assert_eq!(c.cols, b.n, "gemm_packed: C cols != B cols");
    assert!(
        a.cs == 1 || a.cols <= 1,
        "gemm_packed: A needs column stride 1"
    );
    let (m, k, n) = (a.rows, a.cols, b.n);
    if empty_product(&mut c, k, accum) {
        return;
    }
    if isa == Isa::Portable {
        return kernel::gemm_portable(c, a, b, accum);
    }
    let ops = Operands {
        m,
        k,
        n,
        a: a.data.as_ptr(),
        lda: a.rs,
        b: b.data.as_ptr(),
        ldb: 0,
        c: c.data.as_mut_ptr(),
        ldc: c.rs,
        accum,
    };
    // SAFETY: `isa` is a supported SIMD ISA (asserted, Portable handled above). The views were
    // bounds-checked at construction: rows i < m of A hold k floats at i*lda (column stride
    // 1), rows of C hold n floats at i*ldc and do not overlap (ldc >= n for m > 1); packed B
    // holds packed_len(k, n) floats (`Packed::new`). C is a unique borrow, so it aliases
    // neither A nor B and nothing else touches it.
    unsafe { run_simd::<false>(isa, ops) }
}
