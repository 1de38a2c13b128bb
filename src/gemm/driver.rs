//! The large products over the N*T rows of a batch (weight gradients and the like):
//! [`matmul_packed`], the BLIS-style driver around the micro-kernels, and [`matmul`], the only
//! place in the crate that calls `matrixmultiply::sgemm` (the fallback and test oracle).
//!
//! Large products are split into blocks of C whose number depends only on the shape, never on
//! the thread count, and rayon runs the blocks. Each element of C is computed by the same kernel
//! with the same k-order whichever block it lands in, so results are bit-identical for any number
//! of threads. (`matrixmultiply` packs A and B on every call and allocates its packing buffer once
//! per call; [`sgemm_calls`] counts calls so the allocation test can account for them.)

use std::sync::atomic::{AtomicUsize, Ordering};

use rayon::prelude::*;

use super::pack::{copy_rows, pack, pack_rows, packed_len, PANEL};
use super::{gemm_packed_with, span, Accum, ColumnSplit, MatMut, MatRef, Packed, Par};
use crate::cpu::{self, Isa};

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
fn sgemm_block(mut c: MatMut<'_>, a: MatRef<'_>, b: MatRef<'_>, accum: Accum) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if super::empty_product(&mut c, k, accum) {
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

/// Depth of one K block of the packed driver: the packed B block of a thread's columns and the
/// A rows it meets stay in L2. A constant, so the summation order depends on the shape only.
pub const KC: usize = 512;

/// The K blocks `(k0, kc)` the packed driver splits a depth of `k` into: balanced blocks of at
/// most [`KC`].
pub fn k_blocks(k: usize) -> impl Iterator<Item = (usize, usize)> {
    balanced_blocks(k, KC)
}

/// `len` split into `(start, width)` blocks of at most `max` (`max > 0`), as even as possible:
/// all but the last `ceil(len / blocks)` wide. One block `(0, 0)` when `len == 0`.
pub fn balanced_blocks(len: usize, max: usize) -> impl Iterator<Item = (usize, usize)> {
    let blocks = len.div_ceil(max).max(1);
    let w = len.div_ceil(blocks);
    (0..blocks).map(move |b| (b * w, w.min(len - (b * w).min(len))))
}

/// Multiply-adds below which the packed driver runs on the calling thread.
const PAR_MIN_MACS: usize = 1_000_000;

/// Most rows of C for which the column-split path reads a row-major B in place instead of
/// packing it. Each B panel is read once per block of 12 rows: in place that read walks kc
/// rows 4*ldb bytes apart (one page each, so TLB misses every time), packed it is contiguous.
/// Measured on Zen 5 (2 threads, interleaved runs): in place wins at m = H+1 = 101 (config B,
/// +5..15%) and 201 (E), loses at 257 (D, -10%) and 651 (F, -5%). On a Sapphire Rapids class
/// Xeon it loses at 101 too: the dW product of config B took 25% longer in place (its share
/// of the step, per-phase timers in one run: 36% in place, 29% packed), and E (m = 201) went
/// from 7.8k to 8.6k tokens/s packed (interleaved runs, medians), so Intel packs always.
fn strided_b_max_rows() -> usize {
    match cpu::vendor() {
        cpu::Vendor::Intel => 0,
        _ => 256,
    }
}

/// Rows of C up to which B is read in place on every CPU: at most two of the kernel's row
/// blocks (12 rows on AVX-512, 6 on AVX2), so each B value is read once or twice and a packed
/// copy only adds its write and re-read. Measured in the class head's `dX = G W` (a class's
/// few positions against its word rows): +15% class training at V = 100k on an Intel Xeon,
/// where larger products pack always (`strided_b_max_rows`).
const ONE_PASS_ROWS: usize = 12;

/// Whether a product with `m` rows of C reads a row-major B in place rather than packing it
/// (see `ONE_PASS_ROWS` and `strided_b_max_rows`). SIMD kernels only: the portable kernel
/// reads B packed.
pub(crate) fn reads_b_in_place(m: usize) -> bool {
    m <= ONE_PASS_ROWS || m <= strided_b_max_rows()
}

/// Panels per strip in the column-split path of [`matmul_packed`].
const STRIP_PANELS: usize = 4;

/// Floats of scratch [`matmul_packed`] needs for `C [m,n] = A [m,k] B [k,n]`; `a_rows_contiguous`
/// says whether A's rows are contiguous (column stride 1) or must be copied first.
pub fn scratch_len(m: usize, k: usize, n: usize, a_rows_contiguous: bool) -> usize {
    let a_copy = if a_rows_contiguous { 0 } else { m * k };
    a_copy + packed_len(k.min(KC), n)
}

/// Floats of scratch for `C = A B` with these views (see [`scratch_len`]).
pub fn scratch_len_for(a: &MatRef<'_>, b: &MatRef<'_>) -> usize {
    scratch_len(a.rows, a.cols, b.cols, a.cs == 1 || a.rows <= 1)
}

/// `C (=|+=) A B` without heap allocation: the packing buffers live in `scratch`.
///
/// A BLIS-style driver around the register-blocked micro-kernels of [`gemm_packed`]: A is used in place
/// when its rows are contiguous (else copied row-major into `scratch`); for each block of `KC`
/// rows of B, the block is packed into column panels (in parallel) and every row block of C
/// accumulates its product (in parallel, one task per thread). Each element of C is computed
/// by the same instruction sequence whatever the split, so results do not depend on the
/// thread count. On a CPU without AVX2/FMA this falls back to matrixmultiply.
///
/// **Panics** if the shapes disagree or `scratch` is shorter than [`scratch_len_for`].
pub fn matmul_packed(
    c: MatMut<'_>,
    a: MatRef<'_>,
    b: MatRef<'_>,
    accum: Accum,
    scratch: &mut [f32],
) {
    matmul_packed_with(c, a, b, accum, scratch, strided_b_max_rows());
}

/// [`matmul_packed`] reading a row-major B in place (column-split path) when C has at most
/// `in_place_rows` rows; the tests run both ways on any CPU.
fn matmul_packed_with(
    c: MatMut<'_>,
    a: MatRef<'_>,
    b: MatRef<'_>,
    accum: Accum,
    scratch: &mut [f32],
    in_place_rows: usize,
) {
    assert_eq!(a.cols, b.rows, "matmul: inner dimensions differ");
    assert_eq!(c.rows, a.rows, "matmul: C rows != A rows");
    assert_eq!(c.cols, b.cols, "matmul: C cols != B cols");
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let isa = cpu::isa();
    if isa == Isa::Portable {
        return matmul(c, a, b, accum);
    }
    if m == 0 || n == 0 {
        return;
    }
    let need = scratch_len_for(&a, &b);
    assert!(
        scratch.len() >= need,
        "matmul_packed: scratch has {} f32, needs {need}",
        scratch.len()
    );
    if k == 0 {
        return sgemm_block(c, a, b, accum);
    }
    let parallel = m * k * n >= PAR_MIN_MACS;
    let tasks = if parallel {
        rayon::current_num_threads()
    } else {
        1
    };
    let par = if parallel {
        Par::Tasks(tasks)
    } else {
        Par::Seq
    };

    // A with contiguous rows: in place, or a row-major copy (A^T views of activations).
    let (a_copy, packed) = scratch.split_at_mut(if a.cs == 1 || m <= 1 { 0 } else { m * k });
    let (a_data, lda): (&[f32], usize) = if a_copy.is_empty() {
        (a.data, a.rs)
    } else {
        copy_rows(a_copy, &a, par);
        (a_copy, k)
    };
    // Columns k0..k0+kc of A, read with column stride 1.
    let a_block = |k0: usize, kc: usize| MatRef::rows_strided(&a_data[k0..], m, kc, lda);

    let MatMut { data, rs: ldc, .. } = c;
    let c = MatMut::with_row_stride(&mut data[..span(m, n, ldc, 1)], m, n, ldc);
    let panels = n.div_ceil(PANEL);
    if tasks > 1 && m < n && panels >= STRIP_PANELS * tasks {
        // Wide C (the weight gradient dW = hs^T dY: m = H rows, n = V columns): split the
        // columns between tasks. A task walks its columns in strips of STRIP_PANELS panels and,
        // for each strip and K block, packs that piece of B and at once multiplies it, so the
        // packed piece is still in L1/L2 when the kernel reads it and B crosses the memory bus
        // once (packing the whole of B first would write it out and read it back).
        let per = panels.div_ceil(tasks);
        let kc_max = k_blocks(k).next().map_or(0, |(_, kc)| kc);
        let region = STRIP_PANELS * kc_max * PANEL;
        let split = ColumnSplit {
            parts: tasks,
            units: tasks,
            unit_cols: per * PANEL,
        };
        c.par_column_strips(split)
            .zip(packed[..region * tasks].par_chunks_mut(region))
            .for_each(|(mut strip, region)| {
                let (first, last) = (strip.col0(), strip.col0() + strip.cols());
                for c0 in (first..last).step_by(STRIP_PANELS * PANEL) {
                    let cols = (STRIP_PANELS * PANEL).min(last - c0);
                    for (blk, (k0, kc)) in k_blocks(k).enumerate() {
                        let src = &b.data[k0 * b.rs + c0 * b.cs..];
                        let accum = Accum::add_if(blk > 0 || accum == Accum::Add);
                        let j0 = c0 - first;
                        if b.cs == 1 && m <= in_place_rows {
                            // Row-major B (dY, dA) under few rows of C: read in place. B is used
                            // once, so a packed copy would only add its write and re-read; the
                            // results are the same bits (see ColStrip::gemm_strided).
                            let bv = MatRef::rows_strided(src, kc, cols, b.rs);
                            strip.gemm_strided(isa, j0, a_block(k0, kc), bv, accum);
                            continue;
                        }
                        let len = pack(region, MatRef::strided(src, kc, cols, b.rs, b.cs));
                        let pk = Packed::new(&region[..len], kc, cols);
                        strip.gemm_packed(isa, j0, a_block(k0, kc), pk, accum);
                    }
                }
            });
        return;
    }
    // Even row blocks (the kernel splits a block's rows evenly into micro-tiles itself), so
    // two threads get equal work even when m is small.
    let rows_per_task = m.div_ceil(tasks);
    let c_data = c.data;
    for (blk, (k0, kc)) in k_blocks(k).enumerate() {
        let packed = &mut packed[..packed_len(kc, n)];
        pack_rows(packed, &b, k0, kc, par);
        let packed = Packed::new(packed, kc, n);
        let accum = Accum::add_if(blk > 0 || accum == Accum::Add);
        c_data
            .par_chunks_mut(rows_per_task * ldc.max(n))
            .enumerate()
            .for_each(|(t, c_rows)| {
                let i0 = t * rows_per_task;
                let rows = rows_per_task.min(m - i0);
                let a_rows = MatRef::rows_strided(&a_data[i0 * lda + k0..], rows, kc, lda);
                let c_rows = MatMut::with_row_stride(c_rows, rows, n, ldc);
                gemm_packed_with(isa, c_rows, a_rows, packed, accum);
            });
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

    /// The packed driver against the exact reference: every ISA path is exercised by the
    /// dispatch (RNNLM_ISA), shapes cover K blocking, transposed A and B, row strides, Add.
    #[test]
    fn packed_driver_matches_reference() {
        for &(m, k, n) in &[
            (1, 1, 1),
            (7, 15, 17),
            (13, 0, 5),
            (63, 65, 100),
            (100, 700, 65),
            (250, 1100, 33),
            (30, 1300, 200),
        ] {
            let a = ints(m * k, 5);
            let b = ints(k * n, 6);
            let want = reference(m, k, n, &a, &b);
            let at: Vec<f32> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
            let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
            let views = [
                (MatRef::new(&a, m, k), MatRef::new(&b, k, n)),
                (MatRef::new(&at, k, m).t(), MatRef::new(&bt, n, k).t()),
            ];
            for (av, bv) in views {
                let mut scratch = vec![f32::NAN; scratch_len_for(&av, &bv)];
                let rs = n + 2;
                let mut c = vec![f32::NAN; m * rs];
                matmul_packed(
                    MatMut::with_row_stride(&mut c, m, n, rs),
                    av,
                    bv,
                    Accum::Replace,
                    &mut scratch,
                );
                for i in 0..m {
                    assert_eq!(
                        &c[i * rs..i * rs + n],
                        &want[i * n..(i + 1) * n],
                        "{m}x{k}x{n}"
                    );
                    assert!(c[i * rs + n..i * rs + rs].iter().all(|v| v.is_nan()));
                }
                matmul_packed(
                    MatMut::with_row_stride(&mut c, m, n, rs),
                    av,
                    bv,
                    Accum::Add,
                    &mut scratch,
                );
                for i in 0..m {
                    let twice: Vec<f32> =
                        want[i * n..(i + 1) * n].iter().map(|v| 2.0 * v).collect();
                    assert_eq!(&c[i * rs..i * rs + n], &twice[..], "{m}x{k}x{n} add");
                }
            }
        }
    }

    #[test]
    fn packed_driver_is_bit_identical_across_thread_counts() {
        // Tall C (row split) and wide C (column split).
        for (m, k, n) in [(300, 1200, 250), (60, 700, 900)] {
            identical_across_threads(m, k, n);
        }
    }

    fn identical_across_threads(m: usize, k: usize, n: usize) {
        let a: Vec<f32> = ints(m * k, 7).iter().map(|x| x * 0.37 + 0.011).collect();
        let b: Vec<f32> = ints(k * n, 8).iter().map(|x| x * 0.53 - 0.007).collect();
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let av = MatRef::new(&a, m, k);
                let bv = MatRef::new(&b, k, n);
                let mut scratch = vec![0.0; scratch_len_for(&av, &bv)];
                let mut c = vec![0.0f32; m * n];
                matmul_packed(
                    MatMut::new(&mut c, m, n),
                    av,
                    bv,
                    Accum::Replace,
                    &mut scratch,
                );
                c.iter().map(|x| x.to_bits()).collect::<Vec<u32>>()
            })
        };
        let one = run(1);
        assert!(one == run(2) && one == run(3), "{m}x{k}x{n}");
    }

    /// The column-split path gives the same bits whether it packs B or reads it in place (the
    /// CPU vendor picks one; both must stay right), accumulating or not.
    #[test]
    fn in_place_and_packed_b_agree() {
        let (m, k, n) = (60, 700, 900);
        let a: Vec<f32> = ints(m * k, 9).iter().map(|x| x * 0.37 + 0.011).collect();
        let b: Vec<f32> = ints(k * n, 10).iter().map(|x| x * 0.53 - 0.007).collect();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let run = |in_place_rows: usize| {
            pool.install(|| {
                let (av, bv) = (MatRef::new(&a, m, k), MatRef::new(&b, k, n));
                let mut scratch = vec![0.0; scratch_len_for(&av, &bv)];
                let mut c: Vec<f32> = (0..m * n).map(|i| (i % 7) as f32 - 3.0).collect();
                for accum in [Accum::Add, Accum::Replace, Accum::Add] {
                    let cm = MatMut::new(&mut c, m, n);
                    matmul_packed_with(cm, av, bv, accum, &mut scratch, in_place_rows);
                }
                c.iter().map(|x| x.to_bits()).collect::<Vec<u32>>()
            })
        };
        let packed = run(0);
        assert!(packed == run(m), "{m}x{k}x{n}");
        // And against the exact products: integers scaled, so compare loosely.
        let want = reference(m, k, n, &a, &b);
        for (g, w) in packed.iter().zip(&want) {
            let g = f32::from_bits(*g);
            assert!(
                (g - 2.0 * w).abs() <= 1e-3 * w.abs().max(1.0),
                "{g} vs 2 * {w}"
            );
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
