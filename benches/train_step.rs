//! Training-step (forward + backward + SGD) and forward-only throughput in tokens per second
//! (`Throughput::Elements(N*T)`), on the configurations the throughput goals use:
//!
//! | name | model | V | D | H | N | T | warm-up | measurement | samples |
//! |---|---|---|---|---|---|---|---|---|---|
//! | A `seed` (the book's ch05 run) | tanh RNN | 418 | 100 | 100 | 10 | 5 | 1 s | 3 s | 10, auto |
//! | B `ptb-small` | tanh RNN | 10000 | 100 | 100 | 20 | 35 | 1 s | 6 s | 10, auto |
//! | C `ptb-medium` | tanh RNN | 10000 | 650 | 650 | 20 | 35 | 1 s | 6 s | 10, auto |
//! | D `big-batch` | tanh RNN | 10000 | 256 | 256 | 128 | 35 | 1 s | 6 s | 10, auto |
//! | E `lstm-small` (Zaremba small, word_language_model's default size) | LSTM, 2 layers, untied | 10000 | 200 | 200 | 20 | 35 | 1 s | 3 s | 10, flat |
//! | F `better` (the book's BetterRnnlm) | LSTM, 2 layers, tied, dropout 0.5 | 10000 | 650 | 650 | 20 | 35 | 1 s | 5 s | 10, flat |
//! | G `gru-small` | GRU (PyTorch form), 2 layers, untied | 10000 | 200 | 200 | 20 | 35 | 1 s | 3 s | 10, flat |
//! | R `lstm-book` (the book's ch06 Rnnlm) | LSTM, 1 layer | 10000 | 100 | 100 | 20 | 35 | 1 s | 3 s | 10, flat |
//!
//! Each configuration is timed twice, `train` and `infer` (forward only, no dropout), with the
//! settings of its row. A-D keep the settings they always had (criterion's automatic sampling:
//! linear, 55 iterations at least, unless that would take over twice the measurement time,
//! then flat). E-G and R use criterion's flat sampling (10 samples of equal iteration counts,
//! 10 iterations at least) and short measurements, so that the whole `cargo bench` (this file
//! and `kernels`) stays under 6 minutes on 2 cores: F's training step is about 56 GFLOP.
//!
//! `--warm-up-time`, `--measurement-time` and `--sample-size` on the command line replace the
//! per-configuration values (criterion would otherwise let a group's own settings win), so a
//! smoke run is quick:
//!
//! ```text
//! cargo bench --bench train_step -- --warm-up-time 0.1 --measurement-time 0.2 --sample-size 10 'tokens/train/R-'
//! ```
//!
//! Synthetic ids, so no data files are needed. Runs inside one rayon pool, as the trainer does.

use std::time::Duration;

use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use rnnlm::model::config::Cell;
use rnnlm::{Config, Sgd, SimpleRnnlm, Workspace};

struct Shape {
    name: &'static str,
    cell: Cell,
    layers: usize,
    tied: bool,
    dropout: f32,
    v: usize,
    d: usize,
    h: usize,
    n: usize,
    t: usize,
    /// Criterion settings: measurement seconds, and flat sampling (else automatic).
    measure_s: u64,
    flat: bool,
}

/// The book's tanh RNN, as A-D have always been measured.
const fn rnn(name: &'static str, v: usize, d: usize, h: usize, n: usize, t: usize) -> Shape {
    // The old rule: N*T*V*H over 5e8 measures 6 s, else 3 s.
    let big = n * t * v * h > 500_000_000;
    Shape {
        name,
        cell: Cell::Rnn,
        layers: 1,
        tied: false,
        dropout: 0.0,
        v,
        d,
        h,
        n,
        t,
        measure_s: if big { 6 } else { 3 },
        flat: false,
    }
}

const SHAPES: [Shape; 8] = [
    rnn("A-seed", 418, 100, 100, 10, 5),
    rnn("B-ptb-small", 10_000, 100, 100, 20, 35),
    rnn("C-ptb-medium", 10_000, 650, 650, 20, 35),
    rnn("D-big-batch", 10_000, 256, 256, 128, 35),
    Shape {
        name: "E-lstm-small",
        cell: Cell::Lstm,
        layers: 2,
        tied: false,
        dropout: 0.0,
        v: 10_000,
        d: 200,
        h: 200,
        n: 20,
        t: 35,
        measure_s: 3,
        flat: true,
    },
    Shape {
        name: "F-better",
        cell: Cell::Lstm,
        layers: 2,
        tied: true,
        dropout: 0.5,
        v: 10_000,
        d: 650,
        h: 650,
        n: 20,
        t: 35,
        measure_s: 5,
        flat: true,
    },
    Shape {
        name: "G-gru-small",
        cell: Cell::Gru,
        layers: 2,
        tied: false,
        dropout: 0.0,
        v: 10_000,
        d: 200,
        h: 200,
        n: 20,
        t: 35,
        measure_s: 3,
        flat: true,
    },
    Shape {
        name: "R-lstm-book",
        cell: Cell::Lstm,
        layers: 1,
        tied: false,
        dropout: 0.0,
        v: 10_000,
        d: 100,
        h: 100,
        n: 20,
        t: 35,
        measure_s: 3,
        flat: true,
    },
];

fn ids(len: usize, v: usize, salt: usize) -> Vec<u32> {
    (0..len)
        .map(|i| ((i * 7919 + salt * 104_729) % v) as u32)
        .collect()
}

/// Whether criterion's command line sets `flag` (`--flag VALUE` or `--flag=VALUE`).
fn cli_sets(flag: &str) -> bool {
    std::env::args().any(|a| a == flag || a.starts_with(&format!("{flag}=")))
}

fn bench(c: &mut Criterion) {
    let pool = rayon::ThreadPoolBuilder::new().build().unwrap();
    let (cli_warm, cli_measure, cli_samples) = (
        cli_sets("--warm-up-time"),
        cli_sets("--measurement-time"),
        cli_sets("--sample-size"),
    );
    let mut group = c.benchmark_group("tokens");
    for s in &SHAPES {
        if !cli_samples {
            group.sample_size(10);
        }
        if !cli_warm {
            group.warm_up_time(Duration::from_secs(1));
        }
        if !cli_measure {
            group.measurement_time(Duration::from_secs(s.measure_s));
        }
        group.sampling_mode(if s.flat {
            SamplingMode::Flat
        } else {
            SamplingMode::Auto
        });
        let cfg = Config::new(s.v, s.d, s.h)
            .unwrap()
            .with_cell(s.cell)
            .with_layers(s.layers)
            .with_tied(s.tied)
            .validated()
            .unwrap();
        let nt = s.n * s.t;
        let xs = ids(nt, s.v, 1);
        let ts: Vec<i32> = ids(nt, s.v, 2).into_iter().map(|x| x as i32).collect();
        group.throughput(Throughput::Elements(nt as u64));

        let mut model = SimpleRnnlm::new(cfg, s.n, s.t, 0).unwrap();
        model.set_dropout(s.dropout, 0).unwrap();
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
