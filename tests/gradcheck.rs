//! Finite-difference gradient checks for each layer and for the whole model (the tanh RNN's
//! time loops alone are checked in `src/cells/rnn.rs`).
//!
//! Tiny sizes, weights of order one so every gradient is well above f32 noise, central
//! differences with the losses accumulated in f64, every parameter tensor sampled.

// Index loops read naturally here: each index is perturbed in one tensor and read in another.
#![allow(clippy::needless_range_loop)]

use rnnlm::internal::{embedding, softmax_loss};
use rnnlm::model::config::Cell;
use rnnlm::model::simple::{backward, forward};
use rnnlm::{Config, Params, Softmax, Workspace};

/// Deterministic uniform numbers in [-scale, scale).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, scale: f32) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
    }
    fn vec(&mut self, len: usize, scale: f32) -> Vec<f32> {
        (0..len).map(|_| self.next(scale)).collect()
    }
}

const EPS: f32 = 1e-2;

/// Central difference of `f` w.r.t. `x[i]`.
fn numeric(x: &mut [f32], i: usize, mut f: impl FnMut(&[f32]) -> f64) -> f64 {
    let orig = x[i];
    x[i] = orig + EPS;
    let plus = f(x);
    x[i] = orig - EPS;
    let minus = f(x);
    x[i] = orig;
    // Divide by the step actually taken in f32.
    (plus - minus) / ((orig + EPS) as f64 - (orig - EPS) as f64)
}

fn check(what: &str, i: usize, num: f64, ana: f64) {
    let err = (num - ana).abs();
    assert!(
        err <= 2e-3 + 1e-2 * ana.abs(),
        "{what}[{i}]: numeric {num:.6e} vs analytic {ana:.6e}"
    );
}

/// Indices to sample: all of a small tensor, else an even spread.
fn sample(len: usize) -> Vec<usize> {
    if len <= 24 {
        (0..len).collect()
    } else {
        (0..24)
            .map(|k| (k * len / 24 + k % 3).min(len - 1))
            .collect()
    }
}

#[test]
fn embedding_backward_is_the_gradient_of_the_gather() {
    let (v, d) = (6, 3);
    let mut rng = Lcg(1);
    let mut w = rng.vec(v * d, 1.0);
    let ids = [2u32, 5, 2, 0, 2]; // repeated ids must accumulate
    let r = rng.vec(ids.len() * d, 1.0);
    let loss = |w: &[f32]| {
        let mut out = vec![0.0; ids.len() * d];
        embedding::forward(&mut out, &ids, w, d);
        out.iter()
            .zip(&r)
            .map(|(&o, &r)| o as f64 * r as f64)
            .sum::<f64>()
    };
    let mut dw = vec![0.0; v * d];
    embedding::backward(&mut dw, &ids, &r, d);
    for i in 0..v * d {
        let num = numeric(&mut w, i, loss);
        check("dW", i, num, dw[i] as f64);
    }
    // Row 1 never appears: exactly zero.
    assert!(dw[d..2 * d].iter().all(|&g| g == 0.0));
}

#[test]
fn softmax_loss_gradient_with_ignored_positions() {
    let (rows, v) = (5, 7);
    let mut rng = Lcg(3);
    let mut logits = rng.vec(rows * v, 2.0);
    let mut bias = rng.vec(v, 0.5);
    let ts = [3, -1, 0, 6, 2];
    let loss = |x: &[f32], b: &[f32]| {
        let mut l = x.to_vec();
        let mut per = vec![0.0; rows];
        softmax_loss::forward(&mut l, b, &ts, &mut per);
        per.iter().map(|&p| p as f64).sum::<f64>() / 4.0
    };
    let mut grad = logits.clone();
    let mut per = vec![0.0; rows];
    let mean = softmax_loss::forward_backward(&mut grad, &bias, &ts, &mut per);
    assert!((mean as f64 - loss(&logits, &bias)).abs() < 1e-6);
    assert_eq!(per[1], 0.0, "masked position has no loss");
    assert!(
        grad[v..2 * v].iter().all(|&g| g == 0.0),
        "masked row has zero gradient"
    );
    for i in 0..rows * v {
        let b = bias.clone();
        let num = numeric(&mut logits, i, |x| loss(x, &b));
        check("dlogits", i, num, grad[i] as f64);
    }
    for j in 0..v {
        let ana: f64 = (0..rows).map(|r| grad[r * v + j] as f64).sum();
        let x = logits.clone();
        let num = numeric(&mut bias, j, |b| loss(&x, b));
        check("dbias", j, num, ana);
    }
}

/// The whole model's backward against central differences of its loss, every tensor sampled,
/// from a nonzero carried state (h, and c for an LSTM), with dropout masks held fixed.
fn check_model(cfg: Config, dropout: f32) {
    check_model_classes(cfg, dropout, None)
}

/// [`check_model`] with a class head's partition of the ids.
fn check_model_classes(cfg: Config, dropout: f32, starts: Option<&[u32]>) {
    let (n, t) = (2, 3);
    let mut rng = Lcg(4);
    let with_starts = |mut p: Params| {
        if let Some(s) = starts {
            p.set_class_starts(s).unwrap();
        }
        p
    };
    let mut params = with_starts(Params::from_vec(cfg, rng.vec(Params::len_of(&cfg), 0.5)));
    let xs = [0u32, 3, 6, 3, 1, 5];
    let ts = [3i32, 6, -1, 1, 5, 2];

    let mut ws = Workspace::new(cfg, n, t, true).unwrap();
    ws.set_dropout(dropout, 11).unwrap();
    let state0 = rng.vec(ws.state().len(), 0.5);
    let mut loss = |p: &[f32]| -> f64 {
        let p = with_starts(Params::from_vec(cfg, p.to_vec()));
        ws.set_state(&state0).unwrap();
        ws.set_dropout_step(0); // the same masks every time
        forward(&p, &mut ws, &xs, &ts).unwrap();
        ws.position_losses().iter().map(|&l| l as f64).sum::<f64>() / 5.0
    };
    let mut ws2 = Workspace::new(cfg, n, t, true).unwrap();
    ws2.set_dropout(dropout, 11).unwrap();
    ws2.set_state(&state0).unwrap();
    forward(&params, &mut ws2, &xs, &ts).unwrap();
    let mut grads = Params::zeros(cfg);
    backward(&params, &mut ws2, &mut grads).unwrap();

    let mut start = 0;
    for (name, shape) in Params::layout(&cfg) {
        let len: usize = shape.iter().product();
        for i in sample(len) {
            let j = start + i;
            let ana = grads.as_slice()[j] as f64;
            let num = numeric(params.as_mut_slice(), j, &mut loss);
            check(&format!("{name} ({cfg:?}, dropout {dropout})"), i, num, ana);
        }
        start += len;
    }
    // Embedding rows of words that are neither inputs nor (tied) outputs get no gradient.
    if !cfg.tied {
        let d = cfg.wordvec_size;
        assert!(grads.embed_w()[2 * d..3 * d].iter().all(|&x| x == 0.0));
    }
}

#[test]
fn whole_model_matches_finite_differences() {
    check_model(Config::new(7, 4, 5).unwrap(), 0.0);
}

#[test]
fn lstm_and_gru_match_finite_differences() {
    // Every gated cell: the book's LSTM, PyTorch's GRU and the book's appendix GRU.
    for cell in [Cell::Lstm, Cell::Gru, Cell::GruBook] {
        check_model(Config::new(7, 4, 5).unwrap().with_cell(cell), 0.0);
        check_model(
            Config::new(7, 4, 5).unwrap().with_cell(cell).with_layers(2),
            0.0,
        );
    }
}

#[test]
fn stacked_tied_and_dropout_models_match_finite_differences() {
    for &cell in Cell::ALL {
        let cfg = Config::new(7, 5, 5)
            .unwrap()
            .with_cell(cell)
            .with_layers(2)
            .with_tied(true);
        check_model(cfg, 0.0);
        check_model(cfg, 0.4);
        check_model(cfg.with_layers(3).with_tied(false), 0.3);
    }
}

#[test]
fn class_heads_match_finite_differences() {
    // Classes of 1, 2 and 4 words over V = 7 (the targets 3, 6, 1, 5, 2 fall in all three),
    // every cell, tied and untied, stacked and with dropout.
    let starts = [0u32, 1, 3];
    for &cell in Cell::ALL {
        let cfg = Config::new(7, 5, 5)
            .unwrap()
            .with_cell(cell)
            .with_softmax(Softmax::Class { classes: 3 });
        check_model_classes(cfg, 0.0, Some(&starts));
        check_model_classes(cfg.with_tied(true).with_layers(2), 0.3, Some(&starts));
    }
    // One class (a plain softmax, computed the class head's way) and one word per class.
    let one = Config::new(7, 4, 5)
        .unwrap()
        .with_softmax(Softmax::Class { classes: 1 });
    check_model_classes(one, 0.0, Some(&[0]));
    let each = Config::new(7, 4, 5)
        .unwrap()
        .with_softmax(Softmax::Class { classes: 7 });
    check_model_classes(each, 0.0, Some(&[0, 1, 2, 3, 4, 5, 6]));
}

#[test]
fn backward_without_forward_is_an_error() {
    let cfg = Config::new(5, 2, 3).unwrap();
    let params = Params::zeros(cfg);
    let mut grads = Params::zeros(cfg);
    let mut ws = Workspace::new(cfg, 1, 2, true).unwrap();
    assert!(backward(&params, &mut ws, &mut grads).is_err());
    let mut eval_ws = Workspace::new(cfg, 1, 2, false).unwrap();
    forward(&params, &mut eval_ws, &[0, 1], &[1, 2]).unwrap();
    assert!(backward(&params, &mut eval_ws, &mut grads).is_err());
    // Out-of-range ids are errors, not panics.
    assert!(forward(&params, &mut ws, &[0, 5], &[1, 2]).is_err());
    assert!(forward(&params, &mut ws, &[0, 1], &[1, -2]).is_err());
    assert!(forward(&params, &mut ws, &[0, 1, 2], &[1, 2, 3]).is_err());
}

/// A class head's backward against central differences on one batch `xs`/`ts` (`[n*t]`)
/// from the zero state: every tensor sampled, plus the `extra` indices of each tensor.
fn check_class_batch(
    what: &str,
    cfg: Config,
    starts: &[u32],
    (n, t): (usize, usize),
    (xs, ts): (&[u32], &[i32]),
    extra: &dyn Fn(&str) -> Vec<usize>,
    seed: u64,
) {
    let mut rng = Lcg(seed);
    let mk = |data: Vec<f32>| {
        let mut p = Params::from_vec(cfg, data);
        if cfg.softmax.is_class() {
            p.set_class_starts(starts).unwrap();
        }
        p
    };
    let mut params = mk(rng.vec(Params::len_of(&cfg), 0.5));
    let count = ts.iter().filter(|&&t| t >= 0).count() as f64;
    let mut ws = Workspace::new(cfg, n, t, true).unwrap();
    let mut loss = |p: &[f32]| -> f64 {
        let p = mk(p.to_vec());
        ws.reset_state();
        forward(&p, &mut ws, xs, ts).unwrap();
        ws.position_losses().iter().map(|&l| l as f64).sum::<f64>() / count
    };
    let mut ws2 = Workspace::new(cfg, n, t, true).unwrap();
    forward(&params, &mut ws2, xs, ts).unwrap();
    let mut grads = Params::zeros(cfg);
    backward(&params, &mut ws2, &mut grads).unwrap();
    let mut start = 0;
    for (name, shape) in Params::layout(&cfg) {
        let len: usize = shape.iter().product();
        let mut idx = sample(len);
        idx.extend(extra(&name));
        for i in idx {
            let j = start + i;
            let ana = grads.as_slice()[j] as f64;
            let num = numeric(params.as_mut_slice(), j, &mut loss);
            check(&format!("{name} ({what})"), i, num, ana);
        }
        start += len;
    }
}

#[test]
fn a_class_wider_than_a_column_block_matches_finite_differences() {
    // Class 1 holds 2,500 words: three column blocks of the online log-sum-exp, with targets
    // in each block, so the blocks' merge and the per-block gradient are both checked.
    let cfg = Config::new(2600, 4, 5)
        .unwrap()
        .with_softmax(Softmax::Class { classes: 2 });
    let words = [150usize, 1200, 2599, 1900, 333, 7, 1030, 2100];
    // The rows of the targets and of a word in every block, whole.
    let extra = |name: &str| -> Vec<usize> {
        match name {
            "words.W" | "embed.W" => words
                .iter()
                .flat_map(|&w| (0..4).map(move |k| w * 4 + k))
                .collect(),
            "words.b" => words.to_vec(),
            _ => Vec::new(),
        }
    };
    let xs = [0u32, 3, 150, 1200, 1, 2500];
    let ts = [150i32, 1200, 2599, 7, 1900, 333];
    check_class_batch(
        "a class of 2,500 words",
        cfg,
        &[0, 100],
        (2, 3),
        (&xs, &ts),
        &extra,
        8,
    );
}

/// 90 positions (one masked) over 40 words, with targets from `target`.
fn ninety(target: impl Fn(i32) -> i32) -> (Vec<u32>, Vec<i32>) {
    let xs: Vec<u32> = (0..90u32).map(|i| (i * 7) % 40).collect();
    let mut ts: Vec<i32> = (0..90i32).map(target).collect();
    ts[5] = 1;
    ts[17] = 4;
    ts[40] = -1;
    (xs, ts)
}

#[test]
fn a_class_with_more_rows_than_a_chunk_matches_finite_differences() {
    // 90 positions whose targets all fall in one class (ids 9..40, all but a few): two row
    // chunks of the word products.
    let cfg = Config::new(40, 4, 5)
        .unwrap()
        .with_softmax(Softmax::Class { classes: 3 });
    let (xs, ts) = ninety(|i| 9 + (i * 11) % 31);
    let none = |_: &str| Vec::new();
    check_class_batch(
        "90 rows in one class",
        cfg,
        &[0, 2, 9],
        (3, 30),
        (&xs, &ts),
        &none,
        9,
    );
}

#[test]
fn classes_in_every_parallel_group_match_finite_differences() {
    // 90 positions spread over 8 classes, so the parallel groups of classes all have work.
    let cfg = Config::new(40, 4, 5)
        .unwrap()
        .with_softmax(Softmax::Class { classes: 8 });
    let (xs, ts) = ninety(|i| (i * 13) % 40);
    let starts = [0u32, 1, 3, 6, 10, 15, 22, 30];
    let none = |_: &str| Vec::new();
    check_class_batch(
        "8 classes, every group",
        cfg,
        &starts,
        (3, 30),
        (&xs, &ts),
        &none,
        9,
    );
}

/// An adaptive head of `cutoffs` with projections `H / div^(i+1)`.
fn adaptive(cfg: Config, cutoffs: &[usize], div: f64, bias: bool) -> Config {
    cfg.with_softmax(Softmax::adaptive(cutoffs, div, bias, cfg.hidden_size).unwrap())
}

#[test]
fn adaptive_heads_match_finite_differences() {
    // The shortlist 0..2 and clusters 2..4 and 4..7 (projections 2 and 1 wide); the targets
    // 3, 6, 1, 5, 2 fall in all three. Every cell, with and without a head bias, stacked and
    // with dropout.
    for &cell in Cell::ALL {
        let base = Config::new(7, 5, 5).unwrap().with_cell(cell);
        check_model(adaptive(base, &[2, 4], 2.0, false), 0.0);
        check_model(adaptive(base.with_layers(2), &[2, 4], 2.0, true), 0.3);
    }
    // One cluster holding every word but one.
    check_model(
        adaptive(Config::new(7, 4, 5).unwrap(), &[1], 1.0, true),
        0.0,
    );
}

#[test]
fn an_adaptive_cluster_in_several_ranges_matches_finite_differences() {
    // Cluster 1 holds 5,900 words: four parallel ranges of two column blocks each, with
    // targets in every range, so the ranges' merge and their summed dZ are both checked.
    let cfg = adaptive(Config::new(6000, 4, 5).unwrap(), &[10, 100], 1.0, false);
    let words = [150usize, 1600, 3100, 4700, 5999, 20, 99, 7];
    let extra = |name: &str| -> Vec<usize> {
        match name {
            "tail.1.W" => words
                .iter()
                .filter(|&&w| w >= 100)
                .flat_map(|&w| (0..5).map(move |k| (w - 100) * 5 + k))
                .collect(),
            _ => Vec::new(),
        }
    };
    let xs = [0u32, 3, 150, 1200, 1, 2500];
    let ts = [150i32, 1600, 3100, 4700, 5999, 20];
    check_class_batch(
        "a cluster of 5,900 words",
        cfg,
        &[],
        (2, 3),
        (&xs, &ts),
        &extra,
        8,
    );
    // 90 positions in every part of a small adaptive head, one masked.
    let cfg = adaptive(Config::new(40, 4, 5).unwrap(), &[4, 9, 30], 1.3, true);
    let (xs, ts) = ninety(|i| (i * 13) % 40);
    let none = |_: &str| Vec::new();
    check_class_batch(
        "90 rows, 3 clusters",
        cfg,
        &[],
        (3, 30),
        (&xs, &ts),
        &none,
        9,
    );
}
