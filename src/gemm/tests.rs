//! The micro-kernels and packing against exact references: sweeps of sizes, NaN-filled C,
//! every available ISA compared. (The drivers' tests are in `driver.rs`.)

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

/// C (=|+=) A·B in f64 into `c` (row stride `ldc`), B any strided view.
fn reference(a: MatRef<'_>, b: MatRef<'_>, c: &mut [f32], ldc: usize, accumulate: bool) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    for i in 0..m {
        for j in 0..n {
            let s: f64 = (0..k)
                .map(|p| a.data[i * a.rs + p * a.cs] as f64 * b.data[p * b.rs + j * b.cs] as f64)
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

/// `gemm_packed_with` on plain slices: `C [m, n]` with row stride `ldc` (=|+=) `A [m, k]` with
/// row stride `lda` times B packed.
fn run(
    isa: Isa,
    (m, k, n): (usize, usize, usize),
    (a, lda): (&[f32], usize),
    pb: &[f32],
    (c, ldc): (&mut [f32], usize),
    accumulate: bool,
) {
    gemm_packed_with(
        isa,
        MatMut::with_row_stride(c, m, n, ldc),
        MatRef::rows_strided(a, m, k, lda),
        Packed::new(pb, k, n),
        Accum::add_if(accumulate),
    );
}

/// Runs `f` on the one strip covering all of `c`.
fn whole_strip(c: MatMut<'_>, f: impl Fn(ColStrip<'_>) + Sync + Send) {
    let n = c.cols();
    let split = ColumnSplit {
        parts: 1,
        units: 1,
        unit_cols: n,
    };
    c.par_column_strips(split).for_each(f);
}

fn packed(k: usize, n: usize, b: &[f32], rs: usize, cs: usize) -> Vec<f32> {
    let mut out = vec![f32::NAN; packed_len(k, n)];
    assert_eq!(pack(&mut out, MatRef::strided(b, k, n, rs, cs)), out.len());
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
    pack(&mut out, MatRef::new(&b, k, n));
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
                        let (av, bv) = (MatRef::rows_strided(&a, m, k, lda), MatRef::new(&b, k, n));
                        reference(av, bv, &mut want, ldc, accumulate);
                        run(isa, (m, k, n), (&a, lda), &pb, (&mut got, ldc), accumulate);
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
                        let (av, accum) = (
                            MatRef::rows_strided(&a, m, k, lda),
                            Accum::add_if(accumulate),
                        );
                        let (pv, bv) = (Packed::new(&pb, k, n), MatRef::rows_strided(b, k, n, ldb));
                        whole_strip(MatMut::with_row_stride(&mut want, m, n, ldc), |mut s| {
                            s.gemm_packed(isa, 0, av, pv, accum)
                        });
                        whole_strip(MatMut::with_row_stride(&mut got, m, n, ldc), |mut s| {
                            s.gemm_strided(isa, 0, av, bv, accum)
                        });
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
            reference(
                MatRef::new(&a, m, k),
                MatRef::new(&bt, n, k).t(),
                &mut want,
                n,
                true,
            );
            run(isa, (m, k, n), (&a, k), &pb, (&mut got, n), true);
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
            reference(
                MatRef::new(&a, m, k),
                MatRef::new(&b, k, n),
                &mut want,
                n,
                false,
            );
            run(isa, (m, k, n), (&a, k), &pb, (&mut got, n), false);
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
                run(isa, (m, k, n), (&a, k), &pb, (&mut all, n), accumulate);
                for step in [1, 2, 3, 5] {
                    let mut split = c0.clone();
                    for i0 in (0..m).step_by(step) {
                        let rows = step.min(m - i0);
                        let a = &a[i0 * k..];
                        run(
                            isa,
                            (rows, k, n),
                            (a, k),
                            &pb,
                            (&mut split[i0 * n..], n),
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
        run(isa, (2, 0, 3), (&[], 0), &[], (&mut c, 4), true);
        assert_eq!(c, [5.0; 7]);
        run(isa, (2, 0, 3), (&[], 0), &[], (&mut c, 4), false);
        assert_eq!(c, [0.0, 0.0, 0.0, 5.0, 0.0, 0.0, 0.0]);
    }
}

#[test]
#[should_panic(expected = "packed")]
fn short_packed_panics() {
    let mut c = vec![0.0; 4];
    let (a, b) = (
        MatRef::new(&[1.0, 2.0], 1, 2),
        Packed::new(&[0.0; 16], 2, 4),
    );
    gemm_packed(MatMut::new(&mut c, 1, 4), a, b, Accum::Replace);
}

#[test]
#[should_panic(expected = "MatMut 2x4 (rs 4) does not fit in 7")]
fn short_c_panics() {
    let mut c = vec![0.0; 7];
    let (a, b) = (
        MatRef::new(&[1.0, 2.0], 2, 1),
        Packed::new(&[0.0; 16], 1, 4),
    );
    gemm_packed(MatMut::new(&mut c, 2, 4), a, b, Accum::Replace);
}

#[test]
#[should_panic(expected = "MatRef 2x2 (rs 2, cs 1) does not fit in 3")]
fn short_a_panics() {
    let mut c = vec![0.0; 8];
    let (a, b) = (
        MatRef::new(&[1.0, 2.0, 3.0], 2, 2),
        Packed::new(&[0.0; 32], 2, 4),
    );
    gemm_packed(MatMut::new(&mut c, 2, 4), a, b, Accum::Replace);
}

#[test]
#[should_panic(expected = "MatRef 2x3 (rs 3, cs 1) does not fit in 5")]
fn short_b_panics() {
    let mut out = vec![0.0; 32];
    pack(&mut out, MatRef::new(&[0.0; 5], 2, 3));
}

#[test]
#[should_panic(expected = "b has")]
fn pack_checks_b_itself() {
    // The packing's own bounds check (the AVX-512 transpose relies on it) stays armed.
    let mut out = vec![0.0; 32];
    pack::pack_b_for_tests(2, 3, &[0.0; 5], 3, 1, &mut out);
}

#[test]
#[should_panic(expected = "A needs column stride 1")]
fn strided_a_panics() {
    let mut c = vec![0.0; 4];
    let at = [1.0, 2.0, 3.0, 4.0];
    let (a, b) = (MatRef::new(&at, 2, 2).t(), Packed::new(&[0.0; 32], 2, 2));
    gemm_packed(MatMut::new(&mut c, 2, 2), a, b, Accum::Replace);
}

#[test]
fn column_strips_are_disjoint_and_cover_c() {
    let mut c = vec![0.0f32; 3 * 50];
    for (parts, units, unit_cols) in [(4, 4, 16), (3, 7, 8), (8, 2, 30), (5, 13, 4)] {
        let split = ColumnSplit {
            parts,
            units,
            unit_cols,
        };
        let strips: Vec<(usize, usize)> = MatMut::new(&mut c, 3, 50)
            .par_column_strips(split)
            .map(|s| (s.col0(), s.cols()))
            .collect();
        assert_eq!(strips.len(), parts);
        let mut next = 0;
        for (c0, w) in strips {
            assert_eq!(c0, next.min(50), "{parts} {units} {unit_cols}");
            next = c0 + w;
        }
        assert_eq!(next, (units * unit_cols).min(50));
    }
}

#[test]
#[should_panic(expected = "outside a strip")]
fn strip_rejects_foreign_columns() {
    let isa = Isa::available().into_iter().find(|&i| i != Isa::Portable);
    let Some(isa) = isa else {
        panic!("outside a strip (no SIMD ISA here)");
    };
    let mut c = vec![0.0f32; 2 * 32];
    let a = [1.0f32; 2];
    let pb = vec![0.0f32; packed_len(1, 16)];
    let split = ColumnSplit {
        parts: 2,
        units: 2,
        unit_cols: 16,
    };
    MatMut::new(&mut c, 2, 32)
        .par_column_strips(split)
        .for_each(|mut s| {
            s.gemm_packed(
                isa,
                8,
                MatRef::new(&a, 2, 1),
                Packed::new(&pb, 1, 16),
                Accum::Add,
            )
        });
}

/// `gemm_strided_with` gives exactly the bits of `gemm_packed_with` over B packed, on every
/// SIMD ISA the CPU has, for sizes with column tails and a row stride wider than B.
#[test]
fn strided_b_in_place_is_bit_identical_to_packed() {
    let mut rng = Rng(0x5eed);
    let isas = [Isa::Avx512, Isa::Avx2Fma];
    for isa in isas.into_iter().filter(|i| i.is_supported()) {
        for &m in &MS {
            for &k in &KNS {
                for n in [1usize, 15, 17, 40] {
                    let ldb = n + 3;
                    let a: Vec<f32> = (0..m * k).map(|_| rng.unit()).collect();
                    let b: Vec<f32> = (0..k * ldb).map(|_| rng.unit()).collect();
                    let c0: Vec<f32> = (0..m * n).map(|_| rng.unit()).collect();
                    let bv = MatRef::rows_strided(&b, k, n, ldb);
                    let pb = packed(k, n, &b, ldb, 1);
                    for accum in [Accum::Replace, Accum::Add] {
                        let (mut c1, mut c2) = (c0.clone(), c0.clone());
                        let av = MatRef::new(&a, m, k);
                        gemm_packed_with(
                            isa,
                            MatMut::new(&mut c1, m, n),
                            av,
                            Packed::new(&pb, k, n),
                            accum,
                        );
                        gemm_strided_with(isa, MatMut::new(&mut c2, m, n), av, bv, accum);
                        let bits = |c: &[f32]| c.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                        assert_eq!(bits(&c1), bits(&c2), "{isa:?} m={m} k={k} n={n} {accum:?}");
                    }
                }
            }
        }
    }
}
