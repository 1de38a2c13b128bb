//! The output layers at large vocabularies: training-step (forward + backward + the
//! trainer's sparse SGD) and forward-only throughput in tokens per second
//! (`Throughput::Elements(N*T)`) of a tanh RNN, `D = H = 256`, `N = 64`, `T = 35`, on Zipf ids
//! (`p(id) ∝ 1/(id+1)`, ids in frequency order as the factorised heads expect), for each head
//! at `V` = 10k, 100k and 800k:
//!
//! | head | V = 10k | V = 100k | V = 800k |
//! |---|---|---|---|
//! | `full` | yes | yes | no (a step is ~2.8 TFLOP: minutes of benchmarking) |
//! | `class` (Mikolov's √f classes, `C` = round(√V)) | yes | yes | yes |
//! | `adaptive` (cutoffs of 2000, 10000, 50000 below V, div 4: PyTorch's usual) | yes | yes | yes |
//!
//! The same shapes as `rnnlm bench --hidden 256 --wordvec 256 --batch 64 --ids zipf
//! --softmax HEAD` and `bench/compare/torch_adaptive.py`. Flat sampling, 10 samples; select
//! with a filter, e.g.
//!
//! ```text
//! cargo bench --bench heads -- 'heads/train/adaptive-100000'
//! ```

use std::time::Duration;

use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use rand::SeedableRng;
use rnnlm::{Config, Sgd, SimpleRnnlm, Softmax, Workspace};

const H: usize = 256;
const N: usize = 64;
const T: usize = 35;

fn head(name: &str, v: usize) -> Softmax {
    match name {
        "full" => Softmax::Full,
        "class" => Softmax::Class {
            classes: ((v as f64).sqrt().round() as usize).max(1),
        },
        _ => {
            let cutoffs: Vec<usize> = [2000, 10000, 50000]
                .into_iter()
                .filter(|&c| c < v)
                .collect();
            Softmax::adaptive(&cutoffs, 4.0, false, H).unwrap()
        }
    }
}

fn bench(c: &mut Criterion) {
    let pool = rayon::ThreadPoolBuilder::new().build().unwrap();
    let mut group = c.benchmark_group("heads");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(4));
    group.sampling_mode(SamplingMode::Flat);
    for v in [10_000, 100_000, 800_000] {
        for name in ["full", "class", "adaptive"] {
            if name == "full" && v > 100_000 {
                continue;
            }
            let cfg = Config::new(v, H, H)
                .unwrap()
                .with_softmax(head(name, v))
                .validated()
                .unwrap();
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
            let mut ids = Vec::new();
            rnnlm::bench::zipf_ids(&mut rng, v, 2 * N * T, &mut ids);
            let xs = &ids[..N * T];
            let ts: Vec<i32> = ids[N * T..].iter().map(|&x| x as i32).collect();
            let mut model = SimpleRnnlm::new(cfg, N, T, 0).unwrap();
            if let Softmax::Class { classes } = cfg.softmax {
                if let Some(starts) = rnnlm::bench::zipf_class_starts(v, classes) {
                    model.set_class_starts(&starts).unwrap();
                }
            }
            group.throughput(Throughput::Elements((N * T) as u64));
            let id = format!("{name}-{v}/{}threads", pool.current_num_threads());
            let sgd = Sgd::new(0.01);
            group.bench_function(BenchmarkId::new("train", &id), |b| {
                pool.install(|| {
                    b.iter(|| {
                        model.forward(xs, &ts).unwrap();
                        model.backward().unwrap();
                        let (p, g, r) = model.params_mut_grads_ranges();
                        sgd.update_ranges((p, g), r);
                    })
                })
            });
            let params = model.params().clone();
            drop(model);
            let mut ws = Workspace::new(cfg, N, T, false).unwrap();
            group.bench_function(BenchmarkId::new("infer", &id), |b| {
                pool.install(|| {
                    b.iter(|| rnnlm::model::simple::forward(&params, &mut ws, xs, &ts).unwrap())
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
