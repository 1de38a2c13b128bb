//! Mikolov's class-based softmax (`Softmax::Class`): exact probabilities, the same numbers in
//! training, evaluation and scoring, thread-count independence, checkpoints, and the class
//! assignment of his toolkit.

use rand::SeedableRng;
use rnnlm::model::config::Cell;

mod heads_common;
use rnnlm::{
    class_starts_from_counts, BookBatches, Config, Init, Params, Rnnlm, Sgd, SimpleRnnlm, Softmax,
    Vocab,
};

/// Zipf counts of `v` words (rank 1 first).
fn zipf_counts(v: usize) -> Vec<u64> {
    (1..=v as u64).map(|r| 1_000_000 / r + 1).collect()
}

/// A class-head model over `v` words with frequency classes and weights large enough that
/// the distribution is far from uniform.
fn model(cell: Cell, v: usize, classes: usize, tied: bool, seed: u64) -> Params {
    let starts = class_starts_from_counts(&zipf_counts(v), classes).unwrap();
    let cfg = Config::new(v, 12, 12)
        .unwrap()
        .with_cell(cell)
        .with_tied(tied)
        .with_softmax(Softmax::Class {
            classes: starts.len(),
        })
        .validated()
        .unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut p = Params::try_init(cfg, Init::Torch, &mut rng).unwrap();
    for x in p.as_mut_slice() {
        *x *= 8.0;
    }
    // Sharper output layers still, so the distribution is far from uniform.
    for name in ["embed.W", "class.W", "class.b", "words.W", "words.b"] {
        if let Some(t) = p.tensor_mut(name) {
            t.iter_mut().for_each(|x| *x *= 3.0);
        }
    }
    p.set_class_starts(&starts).unwrap();
    p
}

fn vocab(v: usize) -> Vocab {
    let mut words: Vec<String> = (0..v - 1).map(|i| format!("w{i}")).collect();
    words.insert(0, "<eos>".into());
    Vocab::from_words(words).unwrap()
}

#[test]
fn probabilities_sum_to_one_and_match_score() {
    for &cell in Cell::ALL {
        for tied in [false, true] {
            // 1500 words in ~40 classes; one class is wider than a column block when C = 1.
            for (v, classes) in [(1500, 40), (2100, 1)] {
                let p = model(cell, v, classes, tied, 3);
                let m = Rnnlm::new(p, vocab(v)).unwrap();
                let mut state = m.zero_state(2);
                let mut lp = vec![0.0f32; 2 * v];
                for (s, tokens) in [[1u32, 7], [400, 3], [0, 1499]].iter().enumerate() {
                    m.step(&mut state, tokens, &mut lp).unwrap();
                    for r in 0..2 {
                        let row = &lp[r * v..(r + 1) * v];
                        let total: f64 = row.iter().map(|&x| (x as f64).exp()).sum();
                        assert!(
                            (total - 1.0).abs() < 1e-5,
                            "{cell} tied={tied} C={classes} step {s} row {r}: Σp = {total}"
                        );
                        let spread = row.iter().cloned().fold(f32::MIN, f32::max)
                            - row.iter().cloned().fold(f32::MAX, f32::min);
                        assert!(spread > 3.0, "{cell} C={classes}: a near-uniform distribution (spread {spread}) tests little");
                    }
                }
                // score of [a, w] is ln p(w | a): the step's row, for words of every class.
                let mut st = m.zero_state(1);
                let mut row = vec![0.0f32; v];
                m.step(&mut st, &[5], &mut row).unwrap();
                for w in [0u32, 1, 2, 17, 300, v as u32 - 1] {
                    let s = m.score(&[5, w]).unwrap();
                    assert!(
                        (s.log_prob - row[w as usize] as f64).abs() < 2e-5,
                        "{cell} tied={tied}: score {} vs step {}",
                        s.log_prob,
                        row[w as usize]
                    );
                }
            }
        }
    }
}

#[test]
fn sampling_draws_from_the_models_distribution() {
    // 60 words in ~8 classes; words 3, 25 and 26 barred in one case.
    let v = 60;
    let p = model(Cell::Rnn, v, 8, false, 7);
    heads_common::check_sampling(&Rnnlm::new(p, vocab(v)).unwrap(), &[3, 25, 26]);
}

#[test]
fn evaluation_forward_and_score_give_the_same_bits() {
    for &cell in Cell::ALL {
        let v = 900;
        heads_common::check_score_bits(
            model(cell, v, 30, cell == Cell::Lstm, 5),
            vocab(v),
            &cell.to_string(),
        );
    }
    // Three classes over 5,000 words: classes of several 1024-word blocks, which inference
    // takes from the blocks it packed at load time.
    let v = 5000;
    let p = model(Cell::Rnn, v, 3, true, 6);
    let starts = p.class_starts();
    assert!(starts.windows(2).any(|w| w[1] - w[0] > 1024), "{starts:?}");
    heads_common::check_score_bits(p, vocab(v), "wide");
}

fn train(
    threads: usize,
    cell: Cell,
    layers: usize,
    tied: bool,
    dropout: f32,
) -> (Vec<u32>, Vec<u32>) {
    let v = 2500;
    let starts = class_starts_from_counts(&zipf_counts(v), 50).unwrap();
    let cfg = Config::new(v, 40, 40)
        .unwrap()
        .with_cell(cell)
        .with_layers(layers)
        .with_tied(tied)
        .with_softmax(Softmax::Class {
            classes: starts.len(),
        })
        .validated()
        .unwrap();
    // Zipf-like ids, so some classes get many rows and some none.
    let corpus: Vec<u32> = (0..20_000u64)
        .map(|i| ((i * 2654435761 % 1000) * (i * 40503 % 1000) / 400) as u32 % v as u32)
        .collect();
    heads_common::train_bits(threads, cfg, Some(&starts), &corpus, dropout)
}

#[test]
fn training_is_bit_identical_across_thread_counts() {
    // Every cell, one and two layers, tied or not, with and without dropout.
    for &cell in Cell::ALL {
        for (layers, tied, dropout) in [
            (1, false, 0.0),
            (2, false, 0.0),
            (1, true, 0.3),
            (2, true, 0.3),
        ] {
            let one = train(1, cell, layers, tied, dropout);
            for threads in [2, 3] {
                let other = train(threads, cell, layers, tied, dropout);
                let what = format!("{cell} x{layers} tied={tied} dropout={dropout}");
                assert_eq!(one.0, other.0, "{what}: losses, {threads} threads");
                assert!(one.1 == other.1, "{what}: weights, {threads} threads");
            }
        }
    }
}

#[test]
fn training_learns_a_sequence() {
    // A deterministic successor (w -> w + 7 mod 50) over 200 words in frequency classes.
    let v = 200;
    let starts = class_starts_from_counts(&zipf_counts(v), 14).unwrap();
    let cfg = Config::new(v, 16, 16)
        .unwrap()
        .with_cell(Cell::Lstm)
        .with_softmax(Softmax::Class {
            classes: starts.len(),
        });
    let (n, t) = (4, 10);
    let corpus: Vec<u32> = (0..4000u32).map(|i| (i * 7) % 50).collect();
    let mut params = SimpleRnnlm::new(cfg, n, t, 1).unwrap().into_params();
    params.set_class_starts(&starts).unwrap();
    let mut model = SimpleRnnlm::from_params(params, n, t).unwrap();
    let mut batches = BookBatches::new(&corpus, n, t).unwrap();
    let (mut xs, mut ts) = (vec![0; n * t], vec![0; n * t]);
    let sgd = Sgd::new(1.0);
    let mut losses = Vec::new();
    batches.next_batch(&mut xs, &mut ts);
    let first_ts = ts.clone();
    batches = BookBatches::new(&corpus, n, t).unwrap();
    for _ in 0..300 {
        batches.next_batch(&mut xs, &mut ts);
        losses.push(model.forward(&xs, &ts).unwrap());
        model.backward().unwrap();
        sgd.update(model.params_mut_and_grads());
    }
    // Near-uniform at the start: ln C + ln |class of the target|, averaged over the targets.
    let size = |w: usize| {
        let k = starts.partition_point(|&s| s as usize <= w) - 1;
        let end = starts.get(k + 1).map_or(v, |&e| e as usize);
        (end - starts[k] as usize) as f64
    };
    let want: f64 = first_ts
        .iter()
        .map(|&t| (starts.len() as f64).ln() + size(t as usize).ln())
        .sum::<f64>()
        / ts.len() as f64;
    assert!(
        (losses[0] as f64 - want).abs() < 0.1,
        "first loss {} vs {want}",
        losses[0]
    );
    let last = losses[290..].iter().sum::<f32>() / 10.0;
    assert!(
        last < 0.5,
        "the class head did not learn the sequence: loss {last}"
    );
}

#[test]
fn checkpoints_keep_the_classes() {
    let v = 300;
    let p = model(Cell::Gru, v, 20, false, 1);
    let bytes = rnnlm::checkpoint::to_bytes(&p, Some(&vocab(v))).unwrap();
    let back = rnnlm::checkpoint::from_bytes(&bytes, "mem".as_ref()).unwrap();
    assert_eq!(back.params, p);
    assert_eq!(back.params.class_starts(), p.class_starts());
    let names: Vec<String> = back.params.tensors().into_iter().map(|t| t.0).collect();
    assert!(names.ends_with(&[
        "class.W".to_string(),
        "class.b".into(),
        "words.W".into(),
        "words.b".into()
    ]));
    assert!(back.metadata["config"].contains(r#""softmax":{"kind":"class","classes":"#));
    assert!(back.metadata["classes"].starts_with("[0,"));
    // The writer keeps the partition's key to itself.
    let taken = [("classes", "[0]".to_string())];
    assert!(rnnlm::checkpoint::to_bytes_with(&p, None, &[], &taken).is_err());
}

/// Mikolov's toolkit, written out as it assigns a class index to each word (sorted by count).
fn toolkit_classes(counts: &[u64], class_size: usize) -> Vec<usize> {
    let b: f64 = counts.iter().map(|&c| c as f64).sum();
    let dd: f64 = counts.iter().map(|&c| (c as f64 / b).sqrt()).sum();
    let (mut df, mut a) = (0.0f64, 0usize);
    let mut out = Vec::new();
    for &c in counts {
        df += (c as f64 / b).sqrt() / dd;
        if df > 1.0 {
            df = 1.0;
        }
        out.push(a);
        if df > (a + 1) as f64 / class_size as f64 && a < class_size - 1 {
            a += 1;
        }
    }
    out
}

#[test]
fn classes_follow_mikolovs_toolkit() {
    for (v, c) in [(10, 3), (1000, 31), (10_000, 100), (50, 50), (5, 9)] {
        let mut counts = zipf_counts(v);
        counts[v / 2] = counts[v / 2 + 1]; // a tie
        let starts = class_starts_from_counts(&counts, c).unwrap();
        let want = toolkit_classes(&counts, c);
        let got: Vec<usize> = (0..v)
            .map(|w| starts.partition_point(|&s| s as usize <= w) - 1)
            .collect();
        assert_eq!(got, want, "V={v}, C={c}");
        assert!(starts.len() <= c);
    }
    // One very frequent word fills the first class alone.
    let starts = class_starts_from_counts(&[1_000_000, 5, 4, 3, 2, 1], 3).unwrap();
    assert_eq!(starts[..2], [0, 1]);
}

#[test]
fn the_trainer_keeps_the_classes_with_the_best_model_and_in_resume_files() {
    use rnnlm::train::{TrainConfig, Trainer};
    let v = 200;
    let starts = class_starts_from_counts(&zipf_counts(v), 14).unwrap();
    let model = Config::new(v, 16, 16)
        .unwrap()
        .with_cell(Cell::Gru)
        .with_softmax(Softmax::Class {
            classes: starts.len(),
        });
    let corpus: Vec<u32> = (0..6000u32).map(|i| (i * 7 + i / 50) % 60).collect();
    let cfg = TrainConfig {
        batch_size: 4,
        time_size: 10,
        lr: 1.0,
        epochs: 2,
        eval_interval: None,
        eval_batch: 2,
        eval_time: 10,
        ..TrainConfig::default()
    };
    let mut trainer = Trainer::new(model, cfg.clone()).unwrap();
    trainer.set_class_starts(&starts).unwrap();
    let (valid, test) = (&corpus[..800], &corpus[800..1600]);
    let report = trainer
        .fit(&corpus, Some(valid), Some(test), |_| {})
        .unwrap();
    assert_eq!(trainer.best_params().class_starts(), &starts[..]);
    let again = rnnlm::evaluate(trainer.best_params(), test, cfg.protocol, 2, 10).unwrap();
    assert_eq!(report.test.unwrap().perplexity, again.perplexity);
    assert!(
        again.perplexity < 30.0,
        "test perplexity {}",
        again.perplexity
    );
    // A resume point keeps them too.
    let path = std::env::temp_dir().join(format!(
        "rnnlm-class-resume-{}.safetensors",
        std::process::id()
    ));
    trainer.save_resume(&path, None).unwrap();
    let (back, _) = Trainer::load_resume(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(back.model().params().class_starts(), &starts[..]);
    assert_eq!(back.best_params().class_starts(), &starts[..]);
    assert_eq!(back.best_params(), trainer.best_params());
}
