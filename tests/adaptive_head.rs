//! The adaptive softmax (`Softmax::Adaptive`, PyTorch's `AdaptiveLogSoftmaxWithLoss`): exact
//! probabilities, the same numbers in training, evaluation and scoring, sampling from the
//! model's distribution, thread-count independence, learning, and checkpoints.

use rand::SeedableRng;
use rnnlm::model::config::Cell;

mod heads_common;
use rnnlm::{BookBatches, Config, Init, Params, Rnnlm, Sgd, SimpleRnnlm, Softmax, Vocab};

/// An adaptive head over `v` words with weights large enough that the distribution is far
/// from uniform.
fn model(cell: Cell, v: usize, cutoffs: &[usize], bias: bool, seed: u64) -> Params {
    let cfg = Config::new(v, 12, 12)
        .unwrap()
        .with_cell(cell)
        .with_softmax(Softmax::adaptive(cutoffs, 2.0, bias, 12).unwrap())
        .validated()
        .unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut p = Params::try_init(cfg, Init::Torch, &mut rng).unwrap();
    for x in p.as_mut_slice() {
        *x *= 8.0;
    }
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
        for bias in [false, true] {
            // Clusters of 40, 460 and 2,500 words (the last wider than a column block).
            let (v, cutoffs) = (3000, [20usize, 60, 500]);
            let p = model(cell, v, &cutoffs, bias, 3);
            let m = Rnnlm::new(p, vocab(v)).unwrap();
            let mut state = m.zero_state(2);
            let mut lp = vec![0.0f32; 2 * v];
            for (s, tokens) in [[1u32, 7], [400, 3], [0, 2999]].iter().enumerate() {
                m.step(&mut state, tokens, &mut lp).unwrap();
                for r in 0..2 {
                    let row = &lp[r * v..(r + 1) * v];
                    let total: f64 = row.iter().map(|&x| (x as f64).exp()).sum();
                    assert!(
                        (total - 1.0).abs() < 1e-5,
                        "{cell} bias={bias} step {s} row {r}: Σp = {total}"
                    );
                    let spread = row.iter().cloned().fold(f32::MIN, f32::max)
                        - row.iter().cloned().fold(f32::MAX, f32::min);
                    assert!(
                        spread > 3.0,
                        "{cell}: a near-uniform distribution (spread {spread}) tests little"
                    );
                }
            }
            // score of [a, w] is ln p(w | a): the step's row, for words of every part.
            let mut st = m.zero_state(1);
            let mut row = vec![0.0f32; v];
            m.step(&mut st, &[5], &mut row).unwrap();
            for w in [0u32, 1, 19, 20, 59, 60, 499, 500, 1700, v as u32 - 1] {
                let s = m.score(&[5, w]).unwrap();
                assert!(
                    (s.log_prob - row[w as usize] as f64).abs() < 2e-5,
                    "{cell} bias={bias} word {w}: score {} vs step {}",
                    s.log_prob,
                    row[w as usize]
                );
            }
        }
    }
}

#[test]
fn evaluation_forward_and_score_give_the_same_bits() {
    for &cell in Cell::ALL {
        let v = 2600;
        heads_common::check_score_bits(
            model(cell, v, &[30, 200], cell == Cell::Lstm, 5),
            vocab(v),
            &cell.to_string(),
        );
    }
    // A last cluster of 10,970 words: four ranges of three 1024-word blocks or fewer each,
    // which inference takes from the blocks it packed at load time.
    let v = 11_000;
    heads_common::check_score_bits(model(Cell::Rnn, v, &[30], false, 6), vocab(v), "wide");
}

#[test]
fn sampling_draws_from_the_models_distribution() {
    // Words 3 (shortlist), 25 and 26 (cluster 1) barred in one case.
    let v = 60;
    let p = model(Cell::Rnn, v, &[6, 20], true, 7);
    heads_common::check_sampling(&Rnnlm::new(p, vocab(v)).unwrap(), &[3, 25, 26]);
}

fn train(threads: usize, cell: Cell, layers: usize, dropout: f32) -> (Vec<u32>, Vec<u32>) {
    let v = 6000;
    let cfg = Config::new(v, 40, 40)
        .unwrap()
        .with_cell(cell)
        .with_layers(layers)
        .with_softmax(Softmax::adaptive(&[100, 1000], 4.0, layers == 2, 40).unwrap())
        .validated()
        .unwrap();
    // Zipf-like ids, so the last cluster (5,000 words, four ranges) gets rows.
    let corpus: Vec<u32> = (0..20_000u64)
        .map(|i| ((i * 2654435761 % 1000) * (i * 40503 % 1000) / 150) as u32 % v as u32)
        .collect();
    heads_common::train_bits(threads, cfg, None, &corpus, dropout)
}

#[test]
fn training_is_bit_identical_across_thread_counts() {
    for &cell in Cell::ALL {
        for (layers, dropout) in [(1, 0.0), (2, 0.3)] {
            let one = train(1, cell, layers, dropout);
            for threads in [2, 3] {
                let other = train(threads, cell, layers, dropout);
                let what = format!("{cell} x{layers} dropout={dropout}");
                assert_eq!(one.0, other.0, "{what}: losses, {threads} threads");
                assert!(one.1 == other.1, "{what}: weights, {threads} threads");
            }
        }
    }
}

#[test]
fn training_learns_a_sequence() {
    // A deterministic successor (w -> w + 7 mod 50) over 200 words, most in the clusters.
    let v = 200;
    let cfg = Config::new(v, 16, 16)
        .unwrap()
        .with_cell(Cell::Lstm)
        .with_softmax(Softmax::adaptive(&[10, 30], 2.0, false, 16).unwrap());
    let (n, t) = (4, 10);
    let corpus: Vec<u32> = (0..4000u32).map(|i| (i * 7) % 50).collect();
    let mut model = SimpleRnnlm::new(cfg, n, t, 1).unwrap();
    let mut batches = BookBatches::new(&corpus, n, t).unwrap();
    let (mut xs, mut ts) = (vec![0; n * t], vec![0; n * t]);
    let sgd = Sgd::new(1.0);
    let mut losses = Vec::new();
    for _ in 0..400 {
        batches.next_batch(&mut xs, &mut ts);
        losses.push(model.forward(&xs, &ts).unwrap());
        model.backward().unwrap();
        sgd.update(model.params_mut_and_grads());
    }
    assert!(losses[0] > 3.0, "first loss {}", losses[0]);
    let last = losses[390..].iter().sum::<f32>() / 10.0;
    assert!(
        last < 0.5,
        "the adaptive head did not learn the sequence: loss {last}"
    );
}

#[test]
fn checkpoints_keep_the_head() {
    let v = 300;
    let p = model(Cell::Gru, v, &[20, 100], true, 1);
    let bytes = rnnlm::checkpoint::to_bytes(&p, Some(&vocab(v))).unwrap();
    let back = rnnlm::checkpoint::from_bytes(&bytes, "mem".as_ref()).unwrap();
    assert_eq!(back.params, p);
    let layout: Vec<(String, Vec<usize>)> = back
        .params
        .tensors()
        .into_iter()
        .map(|t| (t.0, t.1))
        .collect();
    assert!(layout.ends_with(&[
        ("head.W".to_string(), vec![12, 22]),
        ("head.b".into(), vec![22]),
        ("tail.0.proj".into(), vec![12, 6]),
        ("tail.0.W".into(), vec![80, 6]),
        ("tail.1.proj".into(), vec![12, 3]),
        ("tail.1.W".into(), vec![200, 3]),
    ]));
    assert!(back.metadata["config"].contains(
        r#""softmax":{"kind":"adaptive","cutoffs":[20,100],"projections":[6,3],"head_bias":true}"#
    ));
}

#[test]
fn bad_heads_are_refused() {
    let base = Config::new(100, 8, 8).unwrap();
    let bad = |s: Softmax| base.with_softmax(s).validate().unwrap_err().to_string();
    // A cutoff at V leaves its cluster empty.
    let at_v = Softmax::adaptive(&[10, 100], 2.0, false, 8).unwrap();
    assert!(
        bad(at_v).contains("below the vocabulary size 100"),
        "{}",
        bad(at_v)
    );
    // Tying has nothing to tie to.
    let ok = Softmax::adaptive(&[10, 50], 2.0, false, 8).unwrap();
    let tied = Config::new(100, 8, 8)
        .unwrap()
        .with_tied(true)
        .with_softmax(ok);
    assert!(tied.validate().unwrap_err().to_string().contains("tie"));
    // Checkpoint configs with broken cutoffs are refused, not trusted.
    let json = r#"{"kind":"adaptive","cutoffs":[50,10],"projections":[4,2]}"#;
    let s: Softmax = serde_json::from_str(json).unwrap();
    assert!(bad(s).contains("strictly"));
    let too_many = format!(
        r#"{{"kind":"adaptive","cutoffs":{:?},"projections":[1]}}"#,
        (1..=17).collect::<Vec<u32>>()
    );
    assert!(serde_json::from_str::<Softmax>(&too_many).is_err());
}
