//! The micro-kernels' common ground: the raw operands, the block walk, the portable kernel
//! and the dispatch to the x86 kernels ([`super::x86`]).
//!
//! Determinism: every output element is `acc = 0; for p in 0..k { acc = acc + A[i,p]·B[p,j] };
//! C = acc` (or `C = C + acc`), with the multiply-add fused on the FMA ISAs and unfused in the
//! portable kernel. Vector lanes map to columns only, so neither register blocking, nor the
//! row-block size, nor the column tail changes that sequence: row `i` of `C` is bit-identical
//! whatever `m` is and however rows are split across calls or threads (for a given [`Isa`]).

use super::pack::PANEL;
use super::{Accum, MatMut, MatRef, Packed};
use crate::cpu::Isa;

/// The raw operands of one product `C [m, n] (=|+=) A [m, k] B [k, n]`, as the SIMD kernels
/// take them: `A[i, p] = a[i*lda + p]`, `C[i, j] = c[i*ldc + j]`, and B either packed into
/// column panels (the layout of [`super::pack()`], `ldb` unused) or row-major in place
/// (`B[p, j] = b[p*ldb + j]`).
///
/// The contract every kernel taking it relies on (for `m, k, n > 0`): rows `i < m` of A hold
/// `k` readable f32; B holds `packed_len(k, n)` readable f32 (packed) or rows `p < k` of `n`
/// readable f32 (in place); rows `i < m` of C hold `n` readable and writable f32, overlap
/// neither each other (`ldc >= n` when `m > 1`) nor A or B, and nothing else accesses them
/// during the call.
#[derive(Clone, Copy, Debug)]
pub(super) struct Operands {
    pub(super) m: usize,
    pub(super) k: usize,
    pub(super) n: usize,
    pub(super) a: *const f32,
    pub(super) lda: usize,
    pub(super) b: *const f32,
    pub(super) ldb: usize,
    pub(super) c: *mut f32,
    pub(super) ldc: usize,
    pub(super) accum: Accum,
}

/// Runs the SIMD kernel of `isa` on `ops`, B packed (`STRIDED = false`) or in place.
///
/// # Safety
/// `isa` must be `Avx512` or `Avx2Fma` and supported by this CPU, and `ops` must satisfy the
/// contract of [`Operands`] for this B layout.
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
pub(super) unsafe fn run_simd<const STRIDED: bool>(isa: Isa, ops: Operands) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX-512F and FMA are available and `ops` is valid (the caller's contract).
        Isa::Avx512 => unsafe { super::x86::gemm_avx512::<STRIDED>(ops) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX2 and FMA are available and `ops` is valid (the caller's contract).
        Isa::Avx2Fma => unsafe { super::x86::gemm_avx2::<STRIDED>(ops) },
        _ => unreachable!("no SIMD kernel for {isa:?}"),
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
pub(super) fn for_each_block(
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

/// The portable kernel over the whole output: `C (=|+=) A B` with B packed. The caller has
/// checked the shapes (`a.cols == b.k`, `c.rows == a.rows`, `c.cols == b.n`, `a.cs == 1`,
/// `k > 0`).
pub(super) fn gemm_portable(c: MatMut<'_>, a: MatRef<'_>, b: Packed<'_>, accum: Accum) {
    let (m, k, n) = (a.rows, a.cols, b.n);
    let (a, lda, packed) = (a.data, a.rs, b.data);
    let (c, ldc) = (c.data, c.rs);
    let accumulate = accum == Accum::Add;
    for_each_block(m, n, MR_PORTABLE, 1, |i0, rows, jp, _, cols| {
        let blk = PortableBlock {
            k,
            a: &a[i0 * lda..],
            lda,
            panel: &packed[jp * k * PANEL..(jp + 1) * k * PANEL],
            c: &mut c[i0 * ldc + jp * PANEL..],
            ldc,
            cols,
            accumulate,
        };
        match rows {
            1 => block_portable::<1>(blk),
            2 => block_portable::<2>(blk),
            3 => block_portable::<3>(blk),
            4 => block_portable::<4>(blk),
            r => unreachable!("row block of {r} rows"),
        }
    });
}

/// One row block of the portable kernel: MR rows of A from `a` (row stride `lda`), one packed
/// panel of k rows, and the `cols` real columns of C at `c` (row stride `ldc`).
struct PortableBlock<'x> {
    k: usize,
    a: &'x [f32],
    lda: usize,
    panel: &'x [f32],
    c: &'x mut [f32],
    ldc: usize,
    cols: usize,
    accumulate: bool,
}

/// One MR x PANEL block in plain Rust: `acc = acc + a*b` (unfused, as Rust never contracts),
/// lanes are columns so the compiler vectorises across them without reordering any sum.
#[inline]
fn block_portable<const MR: usize>(blk: PortableBlock<'_>) {
    let PortableBlock {
        k,
        a,
        lda,
        panel,
        c,
        ldc,
        cols,
        accumulate,
    } = blk;
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
