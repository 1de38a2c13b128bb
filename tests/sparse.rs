//! Sparse updates: `SimpleRnnlm::backward` clears and writes only the parts of the gradient
//! the batch touches, and the trainer's SGD step and clipping run over those parts only
//! (`grad_ranges`). The result must be the dense step's, bit for bit, and the rows a batch
//! does not touch must stay exactly as they were.

use rnnlm::model::config::Cell;
use rnnlm::model::simple::{backward, forward};
use rnnlm::optim::ClipGrads;
use rnnlm::{
    class_starts_from_counts, BookBatches, Config, Params, Sgd, SimpleRnnlm, Softmax, Workspace,
};

fn configs() -> Vec<Config> {
    let v = 3000;
    let counts: Vec<u64> = (1..=v as u64).map(|r| 1_000_000 / r).collect();
    let c = class_starts_from_counts(&counts, 55).unwrap().len();
    let mut out = Vec::new();
    for cell in [Cell::Rnn, Cell::Lstm, Cell::Gru] {
        for tied in [false, true] {
            let base = Config::new(v, 24, 24)
                .unwrap()
                .with_cell(cell)
                .with_tied(tied);
            out.push(base);
            out.push(
                base.with_softmax(Softmax::Class { classes: c })
                    .with_layers(2),
            );
        }
        // The adaptive head (untied): its last cluster (2,500 words, three ranges) is often
        // untouched by a batch, so its tail is skipped whole.
        let a = Softmax::adaptive(&[100, 500], 4.0, cell == Cell::Gru, 24).unwrap();
        out.push(
            Config::new(v, 24, 24)
                .unwrap()
                .with_cell(cell)
                .with_softmax(a),
        );
    }
    out
}

fn starts(cfg: &Config) -> Option<Vec<u32>> {
    let Softmax::Class { classes } = cfg.softmax else {
        return None;
    };
    let counts: Vec<u64> = (1..=cfg.vocab_size as u64).map(|r| 1_000_000 / r).collect();
    let s = class_starts_from_counts(&counts, 55).unwrap();
    assert_eq!(s.len(), classes);
    Some(s)
}

/// Zipf-ish ids: a few frequent words, a long tail the batches mostly miss.
fn corpus(v: u32) -> Vec<u32> {
    (0..30_000u64)
        .map(|i| {
            let u = (i.wrapping_mul(2654435761) % 10_007) as f64 / 10_007.0;
            ((v as f64).powf(u) as u32).min(v) - 1
        })
        .collect()
}

#[test]
fn sparse_steps_give_the_dense_bits() {
    for cfg in configs() {
        let (n, t) = (7, 11);
        let mut a = SimpleRnnlm::new(cfg, n, t, 3).unwrap();
        let mut params = a.params().clone();
        if let Some(s) = starts(&cfg) {
            params.set_class_starts(&s).unwrap();
            a = SimpleRnnlm::from_params(params.clone(), n, t).unwrap();
        }
        let mut grads = Params::zeros(cfg);
        if let Some(s) = starts(&cfg) {
            grads.set_class_starts(&s).unwrap();
        }
        let mut ws = Workspace::new(cfg, n, t, true).unwrap();
        let data = corpus(cfg.vocab_size as u32);
        let mut batches = BookBatches::new(&data, n, t).unwrap();
        let (mut xs, mut ts) = (vec![0; n * t], vec![0; n * t]);
        let sgd = Sgd::new(0.7);
        let (mut ca, mut cb) = (ClipGrads::new(), ClipGrads::new());
        for step in 0..6 {
            batches.next_batch(&mut xs, &mut ts);
            let before = a.params().clone();
            let la = a.forward(&xs, &ts).unwrap();
            a.backward().unwrap();
            let (p, g, r) = a.params_mut_grads_ranges();
            let na = ca.clip_ranges(g.as_mut_slice(), r, 0.25);
            sgd.update_ranges((p, g), r);

            let lb = forward(&params, &mut ws, &xs, &ts).unwrap();
            backward(&params, &mut ws, &mut grads).unwrap();
            let nb = cb.clip(grads.as_mut_slice(), 0.25);
            sgd.update((&mut params, &grads));

            let what = format!("{cfg:?}, step {step}");
            assert_eq!(la.to_bits(), lb.to_bits(), "{what}: loss");
            assert_eq!(na.to_bits(), nb.to_bits(), "{what}: gradient norm");
            let same =
                |x: &[f32], y: &[f32]| x.iter().zip(y).all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(
                same(a.grads().as_slice(), grads.as_slice()),
                "{what}: gradients"
            );
            assert!(
                same(a.params().as_slice(), params.as_slice()),
                "{what}: weights"
            );
            // A word that is no input (and, tied to a class head, in no target class) keeps
            // its embedding row bit for bit; so do the untouched word rows of a class head.
            if cfg.softmax.is_full() && cfg.tied {
                continue; // the full softmax's gradient reaches every row of the tied embed.W
            }
            let d = cfg.wordvec_size;
            let in_batch = |w: u32| xs.contains(&w);
            let untouched = (0..cfg.vocab_size as u32)
                .rev()
                .find(|&w| {
                    !in_batch(w)
                        && !a
                            .grad_ranges()
                            .iter()
                            .any(|r| r.contains(&(w as usize * d)))
                })
                .expect("some word untouched");
            let row = untouched as usize * d..(untouched as usize + 1) * d;
            assert!(
                same(&a.params().as_slice()[row.clone()], &before.as_slice()[row]),
                "{what}"
            );
            {
                let covered: usize = a.grad_ranges().iter().map(|r| r.len()).sum();
                assert!(
                    covered < a.params().as_slice().len(),
                    "{what}: nothing was sparse"
                );
            }
        }
    }
}
