//! What the factorised heads' tests share: the sampling check and the training harness of
//! the thread-count tests.

use rand::SeedableRng;
use rnnlm::{BookBatches, Config, Params, Rnnlm, Sampling, Sgd, SimpleRnnlm, Vocab, Workspace};

/// Five training steps of `cfg` (batches 13 x 9 of `corpus`, SGD lr 0.5, `dropout`) on a pool
/// of `threads`, from the seed-9 initialisation with the class partition `starts` if given:
/// the losses' and the final weights' bits.
pub fn train_bits(
    threads: usize,
    cfg: Config,
    starts: Option<&[u32]>,
    corpus: &[u32],
    dropout: f32,
) -> (Vec<u32>, Vec<u32>) {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        let (n, t) = (13, 9);
        let mut params = SimpleRnnlm::new(cfg, n, t, 9).unwrap().into_params();
        if let Some(s) = starts {
            params.set_class_starts(s).unwrap();
        }
        let mut model = SimpleRnnlm::from_params(params, n, t).unwrap();
        model.set_dropout(dropout, 9).unwrap();
        let mut batches = BookBatches::new(corpus, n, t).unwrap();
        let (mut xs, mut ts) = (vec![0; n * t], vec![0; n * t]);
        let sgd = Sgd::new(0.5);
        let mut losses = Vec::new();
        for _ in 0..5 {
            batches.next_batch(&mut xs, &mut ts);
            losses.push(model.forward(&xs, &ts).unwrap().to_bits());
            model.backward().unwrap();
            sgd.update(model.params_mut_and_grads());
        }
        let w = model
            .params()
            .as_slice()
            .iter()
            .map(|x| x.to_bits())
            .collect();
        (losses, w)
    })
}

/// The first word after `5`, drawn 40,000 times, against the step's probabilities: at
/// temperature 1 (the factorised heads draw their first softmax, then a word of the chosen
/// group), with the words `barred` skipped (a group's weight is then its allowed share), and
/// with a temperature (the whole distribution).
pub fn check_sampling(m: &Rnnlm, barred: &[u32]) {
    let v = m.config().vocab_size;
    let mut st = m.zero_state(1);
    let mut row = vec![0.0f32; v];
    m.step(&mut st, &[5], &mut row).unwrap();
    let spread =
        row.iter().cloned().fold(f32::MIN, f32::max) - row.iter().cloned().fold(f32::MAX, f32::min);
    assert!(
        spread > 3.0,
        "a near-uniform distribution (spread {spread}) tests little"
    );
    for (skip, temperature) in [
        (vec![], 1.0f32),
        (barred.to_vec(), 1.0),
        (vec![barred[1]], 0.7),
    ] {
        let mut want: Vec<f64> = row
            .iter()
            .enumerate()
            .map(|(w, &l)| {
                if skip.contains(&(w as u32)) {
                    0.0
                } else {
                    (l as f64 / temperature as f64).exp()
                }
            })
            .collect();
        let z: f64 = want.iter().sum();
        want.iter_mut().for_each(|x| *x /= z);
        let sampling = Sampling {
            temperature,
            top_k: None,
            skip: skip.clone(),
        };
        let draws = 40_000;
        let mut seen = vec![0usize; v];
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        for _ in 0..draws {
            let w = m.generate(&mut rng, &[5], 1, &sampling).unwrap()[0];
            seen[w as usize] += 1;
        }
        for &s in &skip {
            assert_eq!(seen[s as usize], 0, "skipped word {s} was drawn");
        }
        // Total variation distance: ~0.5 * sqrt(V / draws) ≈ 0.02 by chance alone.
        let tv: f64 = seen
            .iter()
            .zip(&want)
            .map(|(&c, &p)| (c as f64 / draws as f64 - p).abs())
            .sum::<f64>()
            / 2.0;
        assert!(
            tv < 0.03,
            "skip {skip:?} T={temperature}: total variation {tv}"
        );
    }
}

/// `score` of a 41-token sequence equals the sum of the evaluation forward's per-position
/// log-probabilities bit for bit, and `score_batch` equals `score`.
pub fn check_score_bits(p: Params, vocab: Vocab, what: &str) {
    let (cfg, v) = (*p.config(), vocab.len() as u32);
    let seq: Vec<u32> = (0..41u32).map(|i| (i * i * 37 + 11 * i) % v).collect();
    let m = Rnnlm::new(p.clone(), vocab).unwrap();
    let mut ws = Workspace::new(cfg, 1, 40, false).unwrap();
    let ts: Vec<i32> = seq[1..].iter().map(|&t| t as i32).collect();
    rnnlm::model::simple::forward(&p, &mut ws, &seq[..40], &ts).unwrap();
    let total: f64 = ws.position_losses().iter().map(|&l| -(l as f64)).sum();
    let score = m.score(&seq).unwrap();
    assert_eq!(
        score.log_prob, total,
        "{what}: score and the evaluation forward differ"
    );
    let batch = m.score_batch(&[&seq, &seq[..9], &seq[3..]]).unwrap();
    assert_eq!(batch[0], score, "{what}: score_batch differs from score");
}
