//! Kernel throughput: bias+tanh and exp against the standard library, the fused softmax
//! cross-entropy row pass, and the recurrent small-M GEMM against matrixmultiply.
//! Every available instruction set is measured, so the portable fallback is tracked too.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rnnlm::cpu::Isa;
use rnnlm::internal::{gemm_packed_with, matmul, pack, packed_len, Accum, MatMut, MatRef, Packed};
use rnnlm::internal::{softmax, tanh};

fn data(len: usize, scale: f32) -> Vec<f32> {
    (0..len)
        .map(|i| ((i as f32 * 0.618_034).fract() * 2.0 - 1.0) * scale)
        .collect()
}

fn elementwise(c: &mut Criterion) {
    let n = 100_000;
    let bias = data(n, 0.1);
    let mut g = c.benchmark_group("bias_tanh");
    g.throughput(Throughput::Elements(n as u64));
    let mut x = data(n, 3.0);
    g.bench_function("std", |b| {
        b.iter(|| {
            x.iter_mut()
                .zip(&bias)
                .for_each(|(v, b)| *v = (*v + b).tanh())
        })
    });
    for isa in Isa::available() {
        g.bench_function(isa.name(), |b| {
            b.iter(|| tanh::bias_tanh_with(isa, &mut x, &bias))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("exp");
    g.throughput(Throughput::Elements(n as u64));
    let x0 = data(n, 20.0);
    let mut x = x0.clone();
    g.bench_function("std", |b| {
        b.iter(|| {
            x.copy_from_slice(&x0);
            x.iter_mut().for_each(|v| *v = v.exp())
        })
    });
    for isa in Isa::available() {
        g.bench_function(isa.name(), |b| {
            b.iter(|| {
                x.copy_from_slice(&x0);
                softmax::exp_inplace_with(isa, &mut x)
            })
        });
    }
    g.finish();
}

fn softmax_rows(c: &mut Criterion) {
    // 64 rows of V = 10,000 (one rayon task's worth); throughput in logits.
    let (rows, v) = (64, 10_000);
    let x0 = data(rows * v, 8.0);
    let mut x = x0.clone();
    let mut g = c.benchmark_group("softmax_xent");
    g.throughput(Throughput::Elements((rows * v) as u64));
    for isa in Isa::available() {
        g.bench_function(isa.name(), |b| {
            b.iter(|| {
                x.copy_from_slice(&x0);
                let mut loss = 0.0;
                for (r, row) in x.chunks_exact_mut(v).enumerate() {
                    loss += softmax::softmax_xent_grad_row_with(isa, row, r * 37 % v, 1.0 / 64.0);
                }
                loss
            })
        });
    }
    g.finish();
}

fn recurrent_gemm(c: &mut Criterion) {
    let mut g = c.benchmark_group("recurrent_gemm_gflops");
    for &(m, k) in &[(10usize, 100usize), (20, 650), (64, 256)] {
        let n = k;
        // Throughput in FLOPs: criterion's elements/s reads as FLOP/s.
        g.throughput(Throughput::Elements((2 * m * k * n) as u64));
        let a = data(m * k, 1.0);
        let bm = data(k * n, 1.0);
        let mut cm = vec![0.0f32; m * n];
        let mut packed = vec![0.0f32; packed_len(k, n)];
        pack(&mut packed, MatRef::new(&bm, k, n));
        let shape = format!("{m}x{k}x{n}");
        for isa in Isa::available() {
            g.bench_function(BenchmarkId::new(isa.name(), &shape), |b| {
                b.iter(|| {
                    gemm_packed_with(
                        isa,
                        MatMut::new(&mut cm, m, n),
                        MatRef::new(&a, m, k),
                        Packed::new(&packed, k, n),
                        Accum::Replace,
                    )
                })
            });
        }
        g.bench_function(BenchmarkId::new("matrixmultiply", &shape), |b| {
            b.iter(|| {
                matmul(
                    MatMut::new(&mut cm, m, n),
                    MatRef::new(&a, m, k),
                    MatRef::new(&bm, k, n),
                    Accum::Replace,
                )
            })
        });
    }
    g.finish();
}

/// The seven large products of a training step at the `ptb-small` (B) and `ptb-medium` (C)
/// shapes, our packed driver vs matrixmultiply, in FLOP/s (elements = 2*m*k*n).
fn model_gemms(c: &mut Criterion) {
    use rnnlm::internal::{matmul_packed, scratch_len_for};
    let mut g = c.benchmark_group("model_gemm_flops");
    let r = 700; // N*T = 20*35
    for (cfg, d, h, v) in [("B", 100, 100, 10_000), ("C", 650, 650, 10_000)] {
        // (name, m, k, n, A transposed, B transposed), as in model::simple.
        let shapes = [
            ("emb_wx", r, d, h, false, false),
            ("hs_w", r, h, v, false, false),
            ("dw_aff", h, r, v, true, false),
            ("dh", r, v, h, false, true),
            ("dwx", d, r, h, true, false),
            ("demb", r, h, d, false, true),
        ];
        for (name, m, k, n, at, bt) in shapes {
            let a = data(m * k, 1.0);
            let b = data(k * n, 1.0);
            let av = if at {
                MatRef::new(&a, k, m).t()
            } else {
                MatRef::new(&a, m, k)
            };
            let bv = if bt {
                MatRef::new(&b, n, k).t()
            } else {
                MatRef::new(&b, k, n)
            };
            let mut cm = vec![0.0f32; m * n];
            let mut scratch = vec![0.0f32; scratch_len_for(&av, &bv)];
            g.throughput(Throughput::Elements((2 * m * k * n) as u64));
            let id = format!("{cfg}/{name}/{m}x{k}x{n}");
            g.bench_function(BenchmarkId::new("packed", &id), |bch| {
                bch.iter(|| {
                    matmul_packed(
                        MatMut::new(&mut cm, m, n),
                        av,
                        bv,
                        Accum::Replace,
                        &mut scratch,
                    )
                })
            });
            g.bench_function(BenchmarkId::new("matrixmultiply", &id), |bch| {
                bch.iter(|| matmul(MatMut::new(&mut cm, m, n), av, bv, Accum::Replace))
            });
        }
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = elementwise, softmax_rows, recurrent_gemm, model_gemms
}
criterion_main!(benches);
