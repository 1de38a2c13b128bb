//! The training step performs zero heap allocations: the time loops never allocate, and the
//! large GEMMs pack into the workspace. (On a CPU without AVX2/FMA the large GEMMs fall back to
//! matrixmultiply, which allocates its packing buffer once per call: then the step allocates
//! exactly once per such call and nowhere else.)
//!
//! A counting `#[global_allocator]` counts every allocation on every thread. The step runs
//! inside one rayon pool (`pool.install`), as the trainer does: rayon jobs pushed from a worker
//! thread go to its local deque and do not allocate once warmed up.

use rnnlm::model::config::Cell;
use rnnlm::{BookBatches, Config, Sgd, SimpleRnnlm, Softmax};

mod counting_alloc;
use counting_alloc::allocs;

#[test]
fn training_step_allocates_only_inside_large_gemms() {
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            // Large enough that the big GEMMs are split across threads.
            let cfg = Config::new(2000, 64, 96).unwrap();
            check_step(threads, cfg, 0.0);
            check_time_loops(threads, cfg);
            // Every cell, one and two layers, with and without dropout and tying. (In this
            // one test: the allocation counter is global, tests running beside it would
            // disturb it.)
            for &cell in Cell::ALL {
                for (layers, dropout, tied) in [
                    (1, 0.0, false),
                    (2, 0.0, false),
                    (1, 0.0, true),
                    (1, 0.3, false),
                    (2, 0.5, true),
                ] {
                    let cfg = Config::new(1500, 48, 48)
                        .unwrap()
                        .with_cell(cell)
                        .with_layers(layers)
                        .with_tied(tied)
                        .validated()
                        .unwrap();
                    check_step(threads, cfg, dropout);
                    check_step_with(threads, cfg, dropout, true);
                    // The class head (its own gather, slabs and word products).
                    check_step(
                        threads,
                        cfg.with_softmax(Softmax::Class { classes: 40 }),
                        dropout,
                    );
                    // The adaptive head (untied only: it has nothing to tie), with a cluster
                    // of two parallel ranges.
                    if !tied {
                        let a = Softmax::adaptive(&[50, 200], 4.0, layers == 2, 48).unwrap();
                        check_step(threads, cfg.with_softmax(a), dropout);
                    }
                }
            }
        });
    }
}

fn check_step(threads: usize, cfg: Config, dropout: f32) {
    check_step_with(threads, cfg, dropout, false);
}

/// One configuration, with the output layer's backward pass by column strips or not.
fn check_step_with(threads: usize, cfg: Config, dropout: f32, strips: bool) {
    let (n, t) = (12, 7);
    let v = cfg.vocab_size as u32;
    let corpus: Vec<u32> = (0..5000u32).map(|i| (i * 7919) % v).collect();
    let mut model = SimpleRnnlm::new(cfg, n, t, 3).unwrap();
    model.set_dropout(dropout, 5).unwrap();
    model.set_output_strips(strips).unwrap();
    let mut batches = BookBatches::new(&corpus, n, t).unwrap();
    let (mut xs, mut ts) = (vec![0; n * t], vec![0; n * t]);
    let sgd = Sgd::new(0.1);
    let mut clip = rnnlm::optim::ClipGrads::new();
    // The trainer's step: clipping and SGD over the parts the batch touched.
    let mut step = |model: &mut SimpleRnnlm| {
        batches.next_batch(&mut xs, &mut ts);
        model.forward(&xs, &ts).unwrap();
        model.backward().unwrap();
        let (p, g, r) = model.params_mut_grads_ranges();
        clip.clip_ranges(g.as_mut_slice(), r, 0.25);
        sgd.update_ranges((p, g), r);
    };
    for _ in 0..3 {
        step(&mut model); // warm-up: rayon's deques and thread-locals reach their size
    }
    let (a0, g0) = (allocs(), rnnlm::internal::sgemm_calls());
    for _ in 0..4 {
        step(&mut model);
    }
    let (a1, g1) = (allocs(), rnnlm::internal::sgemm_calls());
    let gemms = g1 - g0;
    assert_eq!(
        a1 - a0,
        gemms,
        "{threads} threads, {cfg:?}, dropout {dropout}: allocations other than GEMM packing buffers"
    );
    if rnnlm::cpu::isa() != rnnlm::cpu::Isa::Portable {
        // The packed GEMM driver works in the workspace: the whole step is allocation-free.
        assert_eq!(gemms, 0, "matrixmultiply was called on an AVX machine");
    } else {
        // The weight-gradient products fall back to matrixmultiply.
        assert!(gemms >= 4 * 2, "weight-gradient GEMMs per step: {gemms}");
    }
}

/// The tanh RNN's time loops, at the model's sizes: zero allocations in the forward and in the
/// backward, each counted alone (the whole step is counted by `check_step`). The time loops
/// are internal (`src/cells/`); the forward and backward passes run them.
fn check_time_loops(threads: usize, cfg: Config) {
    let (n, t) = (12, 7);
    let mut model = SimpleRnnlm::new(cfg, n, t, 3).unwrap();
    let v = cfg.vocab_size as u32;
    let xs: Vec<u32> = (0..(n * t) as u32).map(|i| (i * 31) % v).collect();
    let ts: Vec<i32> = xs.iter().map(|&x| ((x + 1) % v) as i32).collect();
    for _ in 0..2 {
        model.forward(&xs, &ts).unwrap(); // warm-up
        model.backward().unwrap();
    }
    let portable = rnnlm::cpu::isa() == rnnlm::cpu::Isa::Portable;
    for _ in 0..3 {
        let a0 = allocs();
        model.forward(&xs, &ts).unwrap();
        assert_eq!(
            allocs(),
            a0,
            "{threads} threads: forward (time loops) allocated"
        );
        let (before, g0) = (allocs(), rnnlm::internal::sgemm_calls());
        model.backward().unwrap();
        let gemms = rnnlm::internal::sgemm_calls() - g0;
        let extra = if portable { gemms } else { 0 };
        assert_eq!(allocs() - before, extra, "backward time loop allocated");
    }
}
