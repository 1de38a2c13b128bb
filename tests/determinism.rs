//! The same seed gives bit-identical losses and weights with 1 or 2 threads (the effect of
//! `RAYON_NUM_THREADS=1` vs `2`), and the same run twice gives the same bits.

use rnnlm::model::config::Cell;
use rnnlm::{BookBatches, Config, Sgd, SimpleRnnlm};

fn train(threads: usize, seed: u64) -> (Vec<u32>, Vec<u32>) {
    train_model(threads, seed, Config::new(3000, 48, 80).unwrap(), 0.0)
}

fn train_model(threads: usize, seed: u64, cfg: Config, dropout: f32) -> (Vec<u32>, Vec<u32>) {
    train_with(threads, seed, cfg, dropout, false)
}

fn train_with(
    threads: usize,
    seed: u64,
    cfg: Config,
    dropout: f32,
    strips: bool,
) -> (Vec<u32>, Vec<u32>) {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        // Big enough that the output GEMMs are split and the batch rows are divided between
        // threads (N = 13 is deliberately odd).
        let (n, t) = (13, 9);
        let corpus: Vec<u32> = (0..20_000u32).map(|i| (i * i + 7 * i) % 3000).collect();
        let mut model = SimpleRnnlm::new(cfg, n, t, seed).unwrap();
        model.set_dropout(dropout, seed).unwrap();
        let simd = rnnlm::cpu::isa() != rnnlm::cpu::Isa::Portable;
        assert_eq!(model.set_output_strips(strips).unwrap(), strips && simd);
        let mut batches = BookBatches::new(&corpus, n, t).unwrap();
        let (mut xs, mut ts) = (vec![0; n * t], vec![0; n * t]);
        let sgd = Sgd::new(0.5);
        let mut losses = Vec::new();
        for _ in 0..6 {
            batches.next_batch(&mut xs, &mut ts);
            losses.push(model.forward(&xs, &ts).unwrap().to_bits());
            model.backward().unwrap();
            sgd.update(model.params_mut_and_grads());
        }
        let weights = model
            .params()
            .as_slice()
            .iter()
            .map(|x| x.to_bits())
            .collect();
        (losses, weights)
    })
}

#[test]
fn one_and_two_threads_give_identical_bits() {
    let (l1, w1) = train(1, 11);
    let (l2, w2) = train(2, 11);
    assert_eq!(l1, l2, "losses differ between 1 and 2 threads");
    assert!(w1 == w2, "weights differ between 1 and 2 threads");
    let (l3, w3) = train(3, 11);
    assert_eq!(l1, l3, "losses differ with 3 threads");
    assert!(w1 == w3, "weights differ with 3 threads");
    let (l4, _) = train(2, 12);
    assert_ne!(l1, l4, "a different seed gives a different run");
}

/// LSTM and GRU, stacked, tied, with dropout: the masks are keyed by (seed, step, site, row,
/// time, unit), never by the thread that draws them, so the bits match too.
#[test]
fn every_cell_with_dropout_is_thread_count_independent() {
    for &cell in Cell::ALL {
        let cfg = Config::new(3000, 64, 64)
            .unwrap()
            .with_cell(cell)
            .with_layers(2)
            .with_tied(true);
        let (l1, w1) = train_model(1, 5, cfg, 0.5);
        let (l2, w2) = train_model(2, 5, cfg, 0.5);
        assert_eq!(l1, l2, "{cell}: losses differ between 1 and 2 threads");
        assert!(w1 == w2, "{cell}: weights differ between 1 and 2 threads");
        let (l3, w3) = train_model(3, 5, cfg.with_tied(false), 0.3);
        let (l3b, w3b) = train_model(2, 5, cfg.with_tied(false), 0.3);
        assert_eq!(l3, l3b, "{cell}: untied, 3 vs 2 threads");
        assert!(w3 == w3b, "{cell}: untied weights, 3 vs 2 threads");
        let (l4, _) = train_model(2, 6, cfg, 0.5);
        assert_ne!(l1, l4, "{cell}: a different seed gives a different run");
        let (l5, _) = train_model(2, 5, cfg, 0.0);
        assert_ne!(l1, l5, "{cell}: dropout changes the run");
    }
}

/// The output layer's backward pass by column strips (opt-in): its `dX` partial sums are
/// grouped the same way whatever the thread count, so the bits match across 1, 2 and 3
/// threads. With at most 8 strips (one per group) it even adds them in the row-block path's
/// order, so the two paths give the same bits; with more, the sums are grouped differently and
/// the runs agree to rounding.
#[test]
fn output_strips_are_thread_count_independent_and_agree_with_the_row_path() {
    if rnnlm::cpu::isa() == rnnlm::cpu::Isa::Portable {
        return; // the strip path needs the SIMD kernels; set_output_strips says so (train_with)
    }
    for &cell in Cell::ALL {
        // V = 3000: 6 strips of 500 (N*T = 117 allows 512-wide ones); V = 6000: 12 strips.
        for (v, tied, dropout) in [(3000, true, 0.5), (6000, false, 0.0), (6000, true, 0.3)] {
            let cfg = Config::new(v, 64, 64)
                .unwrap()
                .with_cell(cell)
                .with_layers(2)
                .with_tied(tied);
            let (l1, w1) = train_with(1, 5, cfg, dropout, true);
            let (l2, w2) = train_with(2, 5, cfg, dropout, true);
            let (l3, w3) = train_with(3, 5, cfg, dropout, true);
            assert!(
                l1 == l2 && l1 == l3,
                "{cell} V={v}: strip losses differ across threads"
            );
            assert!(
                w1 == w2 && w1 == w3,
                "{cell} V={v}: strip weights differ across threads"
            );
            let (lr, wr) = train_with(2, 5, cfg, dropout, false);
            if v == 3000 {
                assert!(
                    l1 == lr && w1 == wr,
                    "{cell}: one strip per group, same bits"
                );
                continue;
            }
            assert_eq!(
                l1[0], lr[0],
                "{cell}: the first forward precedes any backward"
            );
            for (a, b) in l1.iter().zip(&lr) {
                let (a, b) = (f32::from_bits(*a), f32::from_bits(*b));
                assert!((a - b).abs() <= 1e-4 * b.abs(), "{cell}: loss {a} vs {b}");
            }
            let worst = w1
                .iter()
                .zip(&wr)
                .map(|(a, b)| (f32::from_bits(*a) - f32::from_bits(*b)).abs())
                .fold(0.0f32, f32::max);
            assert!(worst < 1e-4, "{cell}, V={v}: weights drift {worst}");
        }
    }
}
