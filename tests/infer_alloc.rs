//! `Rnnlm::step` performs zero heap allocations (a counting `#[global_allocator]`; this test
//! binary holds one test so nothing else allocates meanwhile).

use rand::SeedableRng;
use rnnlm::{Config, Params, Rnnlm, Vocab};

mod counting_alloc;
use counting_alloc::allocs;

#[test]
fn step_allocates_nothing() {
    use rnnlm::model::config::Cell;
    let (v, d, h) = (1000, 48, 80);
    check(Config::new(v, d, h).unwrap());
    for &cell in Cell::ALL {
        check(
            Config::new(v, h, h)
                .unwrap()
                .with_cell(cell)
                .with_layers(3)
                .with_tied(true),
        );
        check(Config::new(v, d, h).unwrap().with_cell(cell).with_layers(2));
        // The factorised heads: every word's log-probability, from their own scratch.
        let base = Config::new(2000, d, h).unwrap().with_cell(cell);
        check(base.with_softmax(rnnlm::Softmax::Class { classes: 40 }));
        check(base.with_softmax(rnnlm::Softmax::adaptive(&[50, 200], 2.0, true, h).unwrap()));
    }
}

fn check(cfg: Config) {
    let (v, n) = (cfg.vocab_size, 7);
    let params = Params::init_book(cfg, &mut rand_chacha::ChaCha8Rng::seed_from_u64(1));
    let vocab = Vocab::from_words((0..v).map(|i| format!("w{i}")).collect()).unwrap();
    let model = Rnnlm::new(params, vocab).unwrap();
    let mut state = model.zero_state(n);
    let mut logits = vec![0.0f32; n * v];
    let mut tokens = vec![0u32; n];
    // Warm-up: the first kernel call detects the ISA once (reading RNNLM_ISA allocates).
    model.step(&mut state, &tokens, &mut logits).unwrap();
    // The counter is process-wide: the test harness's own thread may allocate at any moment
    // (seen once under CI load: 4 allocations in a window). A step that allocates does so in
    // every window, so one clean window of 20 steps out of three proves the step clean.
    // On the portable path the products of a factorised head's whole-distribution rows fall
    // back to matrixmultiply, which allocates its packing buffers (as the training step's
    // weight-gradient products do, see tests/alloc.rs): those allocations are counted apart.
    let mut counts = Vec::new();
    for _ in 0..3 {
        let (before, g0) = (allocs(), rnnlm::internal::sgemm_calls());
        for s in 0..20u32 {
            for (i, t) in tokens.iter_mut().enumerate() {
                *t = (s * 31 + i as u32 * 7) % v as u32;
            }
            model.step(&mut state, &tokens, &mut logits).unwrap();
        }
        let gemms = rnnlm::internal::sgemm_calls() - g0;
        if rnnlm::cpu::isa() != rnnlm::cpu::Isa::Portable {
            assert_eq!(
                gemms, 0,
                "matrixmultiply was called on an AVX machine ({cfg:?})"
            );
        }
        counts.push(allocs() - before - gemms);
        if counts.last() == Some(&0) {
            break;
        }
    }
    assert_eq!(
        counts.last(),
        Some(&0),
        "step allocated ({cfg:?}): {counts:?} per 20 steps"
    );
    state.reset();
    std::hint::black_box(&logits);
}
