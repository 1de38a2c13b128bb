//! Training-step and forward-only throughput in tokens per second (`N*T` per iteration).
//!
//! `cargo bench` runs the book's ch05 shape (`seed`) and the PTB small shape (`ptb-small`);
//! synthetic ids, so no data files are needed.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rnnlm::{Config, Sgd, SimpleRnnlm, Workspace};

struct Shape {
    name: &'static str,
    v: usize,
    d: usize,
    h: usize,
    n: usize,
    t: usize,
}

const SHAPES: [Shape; 2] = [
    Shape {
        name: "seed",
        v: 418,
        d: 100,
        h: 100,
        n: 10,
        t: 5,
    },
    Shape {
        name: "ptb-small",
        v: 10_000,
        d: 100,
        h: 100,
        n: 20,
        t: 35,
    },
];

fn ids(len: usize, v: usize, salt: usize) -> Vec<u32> {
    (0..len)
        .map(|i| ((i * 7919 + salt * 104_729) % v) as u32)
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("tokens");
    group.sample_size(20);
    for s in &SHAPES {
        let cfg = Config::new(s.v, s.d, s.h).unwrap();
        let nt = s.n * s.t;
        let xs = ids(nt, s.v, 1);
        let ts: Vec<i32> = ids(nt, s.v, 2).into_iter().map(|x| x as i32).collect();
        group.throughput(Throughput::Elements(nt as u64));

        let mut model = SimpleRnnlm::new(cfg, s.n, s.t, 0).unwrap();
        let sgd = Sgd::new(0.01);
        group.bench_function(BenchmarkId::new("train", s.name), |b| {
            b.iter(|| {
                model.forward(&xs, &ts).unwrap();
                model.backward().unwrap();
                sgd.update(model.params_mut_and_grads());
            })
        });

        let mut ws = Workspace::new(cfg, s.n, s.t, false).unwrap();
        let params = model.params().clone();
        group.bench_function(BenchmarkId::new("infer", s.name), |b| {
            b.iter(|| rnnlm::model::simple::forward(&params, &mut ws, &xs, &ts).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
