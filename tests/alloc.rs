//! The training step performs zero heap allocations: the time loops never allocate, and the
//! large GEMMs pack into the workspace. (On a CPU without AVX2/FMA the large GEMMs fall back to
//! matrixmultiply, which allocates its packing buffer once per call: then the step allocates
//! exactly once per such call and nowhere else.)
//!
//! A counting `#[global_allocator]` counts every allocation on every thread. The step runs
//! inside one rayon pool (`pool.install`), as the trainer does: rayon jobs pushed from a worker
//! thread go to its local deque and do not allocate once warmed up.

use rnnlm::layers::rnn;
use rnnlm::model::config::Cell;
use rnnlm::{BookBatches, Config, Sgd, SimpleRnnlm};

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
            for cell in [Cell::Rnn, Cell::Lstm, Cell::Gru] {
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
    let mut step = |model: &mut SimpleRnnlm| {
        batches.next_batch(&mut xs, &mut ts);
        model.forward(&xs, &ts).unwrap();
        model.backward().unwrap();
        sgd.update(model.params_mut_and_grads());
    };
    for _ in 0..3 {
        step(&mut model); // warm-up: rayon's deques and thread-locals reach their size
    }
    let (a0, g0) = (allocs(), rnnlm::gemm::sgemm_calls());
    for _ in 0..4 {
        step(&mut model);
    }
    let (a1, g1) = (allocs(), rnnlm::gemm::sgemm_calls());
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

/// The tanh RNN's time loops alone, at the model's sizes: zero allocations.
fn check_time_loops(threads: usize, cfg: Config) {
    let (n, t) = (12, 7);
    let model = SimpleRnnlm::new(cfg, n, t, 3).unwrap();
    let h = cfg.hidden_size;
    let wh = model.params().layer(0).wh.to_vec();
    let b = model.params().layer(0).b.to_vec();
    let mut hs = vec![0.1f32; n * t * h];
    let mut hprev = vec![0.0f32; n * t * h];
    let mut state = vec![0.0f32; n * h];
    let mut packed = vec![0.0f32; rnn::packed_len(h)];
    let mut scratch = vec![0.0f32; n * h];
    let a0 = allocs();
    for _ in 0..3 {
        rnn::pack_wh(&mut packed, &wh, h);
        rnn::forward_time_loop(&mut hs, &mut hprev, &mut state, &packed, &b, (n, t, h));
        rnn::pack_wh_t(&mut packed, &wh, h);
        let mut dh = hprev.clone(); // allocation outside the counted window below
        let before = allocs();
        rnn::backward_time_loop(&mut dh, &hs, &mut scratch, &packed, (n, t, h));
        assert_eq!(allocs(), before, "backward time loop allocated");
        std::hint::black_box(&dh);
    }
    // Three clones of dh were the only allocations of this window.
    assert_eq!(
        allocs() - a0,
        3,
        "{threads} threads: forward time loop allocated"
    );
}
