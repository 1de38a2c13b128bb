//! Training-step (forward + backward + SGD) and forward-only throughput in tokens per second
//! (`Throughput::Elements(N*T)`), on the four configurations the throughput goals use:
//!
//! | name | V | D | H | N | T |
//! |---|---|---|---|---|---|
//! | A `seed` (the book's ch05 run) | 418 | 100 | 100 | 10 | 5 |
//! | B `ptb-small` | 10000 | 100 | 100 | 20 | 35 |
//! | C `ptb-medium` | 10000 | 650 | 650 | 20 | 35 |
//! | D `big-batch` | 10000 | 256 | 256 | 128 | 35 |
//!
//! Synthetic ids, so no data files are needed. Runs inside one rayon pool, as the trainer does.

use std::time::Duration;

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

const SHAPES: [Shape; 4] = [
    Shape {
        name: "A-seed",
        v: 418,
        d: 100,
        h: 100,
        n: 10,
        t: 5,
    },
    Shape {
        name: "B-ptb-small",
        v: 10_000,
        d: 100,
        h: 100,
        n: 20,
        t: 35,
    },
    Shape {
        name: "C-ptb-medium",
        v: 10_000,
        d: 650,
        h: 650,
        n: 20,
        t: 35,
    },
    Shape {
        name: "D-big-batch",
        v: 10_000,
        d: 256,
        h: 256,
        n: 128,
        t: 35,
    },
];

fn ids(len: usize, v: usize, salt: usize) -> Vec<u32> {
    (0..len)
        .map(|i| ((i * 7919 + salt * 104_729) % v) as u32)
        .collect()
}

fn bench(c: &mut Criterion) {
    let pool = rayon::ThreadPoolBuilder::new().build().unwrap();
    let mut group = c.benchmark_group("tokens");
    for s in &SHAPES {
        let big = s.n * s.t * s.v * s.h > 500_000_000;
        group.sample_size(10);
        group.warm_up_time(Duration::from_secs(1));
        group.measurement_time(Duration::from_secs(if big { 6 } else { 3 }));
        let cfg = Config::new(s.v, s.d, s.h).unwrap();
        let nt = s.n * s.t;
        let xs = ids(nt, s.v, 1);
        let ts: Vec<i32> = ids(nt, s.v, 2).into_iter().map(|x| x as i32).collect();
        group.throughput(Throughput::Elements(nt as u64));

        let mut model = SimpleRnnlm::new(cfg, s.n, s.t, 0).unwrap();
        let sgd = Sgd::new(0.01);
        let id = format!("{}/{}threads", s.name, pool.current_num_threads());
        group.bench_function(BenchmarkId::new("train", &id), |b| {
            pool.install(|| {
                b.iter(|| {
                    model.forward(&xs, &ts).unwrap();
                    model.backward().unwrap();
                    sgd.update(model.params_mut_and_grads());
                })
            })
        });

        let mut ws = Workspace::new(cfg, s.n, s.t, false).unwrap();
        let params = model.params().clone();
        group.bench_function(BenchmarkId::new("infer", &id), |b| {
            pool.install(|| {
                b.iter(|| rnnlm::model::simple::forward(&params, &mut ws, &xs, &ts).unwrap())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
