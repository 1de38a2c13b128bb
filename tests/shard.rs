//! Data-parallel shards (`SimpleRnnlm::set_shard`, `BookBatches::next_rows`): the book's `N`
//! rows split among "ranks", each running its own rows, with the gradients summed as an
//! allreduce would sum them, give the single-process losses and weights up to the order of
//! the sums: every head, cell, dropout, tying, and uneven splits.

use rand::SeedableRng;
use rnnlm::model::config::Cell;
use rnnlm::optim::ClipGrads;
use rnnlm::{
    class_starts_from_counts, BookBatches, Config, Init, Params, Sgd, Shard, SimpleRnnlm, Softmax,
};

const V: usize = 300;
const N: usize = 7;
const T: usize = 5;

fn corpus() -> Vec<u32> {
    // Zipf-like ids in frequency order, as the factorised heads expect.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    (0..6_000)
        .map(|_| {
            let u: f64 = rand::RngExt::random(&mut rng);
            ((V as f64).powf(u) - 1.0) as u32 % V as u32
        })
        .collect()
}

fn params(softmax: &str, cell: Cell, tied: bool) -> Params {
    let base = Config::new(V, 16, 16)
        .unwrap()
        .with_cell(cell)
        .with_layers(2)
        .with_tied(tied);
    let counts: Vec<u64> = (1..=V as u64).map(|r| 100_000 / r + 1).collect();
    let starts = class_starts_from_counts(&counts, 12).unwrap();
    let cfg = match softmax {
        "full" => base,
        "class" => base.with_softmax(Softmax::Class {
            classes: starts.len(),
        }),
        _ => base.with_softmax(Softmax::adaptive(&[40, 150], 2.0, true, 16).unwrap()),
    }
    .validated()
    .unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let mut p = Params::try_init(cfg, Init::Torch, &mut rng).unwrap();
    if softmax == "class" {
        p.set_class_starts(&starts).unwrap();
    }
    p
}

/// `steps` SGD steps (clipped to `clip`, lr 1) over the book's batches, as one process
/// (`splits == [N]`) or as one shard per entry of `splits` (row counts summing to `N`) whose
/// gradients are summed before the step. Returns the losses and the final weights.
fn run(p: &Params, splits: &[usize], dropout: f32, steps: usize) -> (Vec<f64>, Vec<f32>) {
    assert_eq!(splits.iter().sum::<usize>(), N);
    let data = corpus();
    let whole = splits.len() == 1;
    let mut row0 = 0;
    let mut ranks: Vec<(SimpleRnnlm, BookBatches<'_>, std::ops::Range<usize>)> = splits
        .iter()
        .map(|&m| {
            let mut model = SimpleRnnlm::from_params(p.clone(), m, T).unwrap();
            model.set_dropout(dropout, 3).unwrap();
            if !whole {
                model
                    .set_shard(Some(Shard {
                        row0,
                        targets: N * T,
                    }))
                    .unwrap();
            }
            let rows = row0..row0 + m;
            row0 += m;
            (model, BookBatches::new(&data, N, T).unwrap(), rows)
        })
        .collect();
    let len = p.as_slice().len();
    let (mut sum, mut clip, sgd) = (vec![0.0f32; len], ClipGrads::new(), Sgd::new(1.0));
    let mut losses = Vec::new();
    for _ in 0..steps {
        sum.fill(0.0);
        let mut loss = 0.0f64;
        for (model, batches, rows) in &mut ranks {
            let (mut xs, mut ts) = (vec![0; rows.len() * T], vec![0; rows.len() * T]);
            batches.next_rows(rows.clone(), &mut xs, &mut ts);
            loss += model.forward(&xs, &ts).unwrap() as f64;
            model.backward().unwrap();
            for (s, &g) in sum.iter_mut().zip(model.grads().as_slice()) {
                *s += g;
            }
        }
        losses.push(loss);
        clip.clip(&mut sum, 0.5);
        for (model, ..) in &mut ranks {
            // Every rank applies the same summed gradient; the rows another rank wrote are
            // zeroed again, as the next backward only clears the rows its rank wrote.
            model.grads_mut().as_mut_slice().copy_from_slice(&sum);
            sgd.update(model.params_mut_and_grads());
            model.grads_mut().zero();
        }
    }
    let weights = ranks[0].0.params().as_slice().to_vec();
    for (model, ..) in &ranks[1..] {
        assert_eq!(model.params().as_slice(), &weights[..], "ranks disagree");
    }
    (losses, weights)
}

/// Largest difference relative to the largest magnitude.
fn rel_diff(a: &[f32], b: &[f32]) -> f64 {
    let scale = a
        .iter()
        .map(|x| x.abs() as f64)
        .fold(0.0, f64::max)
        .max(1e-30);
    let diff = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).abs())
        .fold(0.0, f64::max);
    diff / scale
}

#[test]
fn shards_summed_give_the_single_process_losses_and_weights() {
    for softmax in ["full", "class", "adaptive"] {
        for (cell, tied, dropout) in [
            (Cell::Rnn, false, 0.0),
            (Cell::Lstm, true, 0.3),
            (Cell::Gru, false, 0.2),
        ] {
            if tied && softmax == "adaptive" {
                continue; // an adaptive head has no tied form
            }
            let p = params(softmax, cell, tied);
            let (l1, w1) = run(&p, &[N], dropout, 10);
            for splits in [&[4usize, 3][..], &[2, 2, 3], &[1, 6]] {
                let what = format!("{softmax} {cell:?} tied {tied} dropout {dropout} {splits:?}");
                let (lr, wr) = run(&p, splits, dropout, 10);
                for (a, b) in l1.iter().zip(&lr) {
                    assert!((a - b).abs() <= 1e-5 * a.abs(), "{what}: loss {a} vs {b}");
                }
                let d = rel_diff(&w1, &wr);
                assert!(
                    d <= 1e-5,
                    "{what}: weights differ by {d:e} of their largest"
                );
                // The weights moved: the comparison above is not of the initial ones.
                assert!(
                    rel_diff(&w1, p.as_slice()) > 1e-3,
                    "{what}: nothing trained"
                );
            }
        }
    }
}

#[test]
fn a_shard_needs_the_whole_batch_count() {
    let p = params("full", Cell::Rnn, false);
    let mut m = SimpleRnnlm::from_params(p, 3, T).unwrap();
    for targets in [0, 3 * T - 1] {
        let err = m.set_shard(Some(Shard { row0: 0, targets })).unwrap_err();
        assert!(err.to_string().contains("targets"), "{err}");
    }
    m.set_shard(Some(Shard {
        row0: 4,
        targets: 3 * T,
    }))
    .unwrap();
    m.set_shard(None).unwrap();
}
