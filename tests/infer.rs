//! The inference API: `Rnnlm::step` against the training forward (bit for bit), scoring
//! against the forward's per-position losses, sampling, threads, checkpoints and errors.

use std::path::PathBuf;
use std::sync::Arc;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rnnlm::model::simple::forward;
use rnnlm::{checkpoint, Config, Error, Params, Rnnlm, Sampling, Vocab, Workspace};

#[allow(dead_code)]
mod heads_common;

/// A random model of shape `(v, d, h)`: the book's initialisation, then the embedding scaled up
/// (the book's `randn/100` keeps `x Wx` tiny) and random biases, so every term of the step
/// matters and the hidden states leave tanh's linear region.
fn random_params(v: usize, d: usize, h: usize, seed: u64) -> Params {
    random_params_of(Config::new(v, d, h).unwrap(), seed)
}

/// As [`random_params`] for any configuration (every bias random, a GRU's `bh` too).
fn random_params_of(cfg: Config, seed: u64) -> Params {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut p = Params::init_book(cfg, &mut rng);
    for x in p.embed_w_mut() {
        *x *= 100.0;
    }
    for l in 0..cfg.layers {
        let m = p.layer_mut(l);
        for x in m.b.iter_mut().chain(m.bh.iter_mut()) {
            *x = rng.random_range(-0.5f32..0.5);
        }
    }
    for x in p.affine_b_mut() {
        *x = rng.random_range(-0.5f32..0.5);
    }
    p
}

fn vocab(v: usize) -> Vocab {
    let mut words = vec!["<eos>".to_string()];
    words.extend((1..v).map(|i| format!("w{i}")));
    Vocab::from_words(words).unwrap()
}

fn model(v: usize, d: usize, h: usize, seed: u64) -> Rnnlm {
    Rnnlm::new(random_params(v, d, h, seed), vocab(v)).unwrap()
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rnnlm-infer-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs `forward` over two consecutive batches (state carried) and steps the same streams
/// token by token: every logit and hidden state must be bit-identical.
fn check_step_matches_forward(v: usize, d: usize, h: usize, n: usize, t: usize) {
    check_step_matches_forward_of(Config::new(v, d, h).unwrap(), n, t);
}

fn check_step_matches_forward_of(cfg: Config, n: usize, t: usize) {
    let (v, h) = (cfg.vocab_size, cfg.hidden_size);
    let params = random_params_of(cfg, 11);
    let m = Rnnlm::new(params.clone(), vocab(v)).unwrap();
    let mut ws = Workspace::new(*params.config(), n, t, false).unwrap();
    let mut state = m.zero_state(n);
    let mut logits = vec![0.0f32; n * v];
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for batch in 0..2 {
        let xs: Vec<u32> = (0..n * t).map(|_| rng.random_range(0..v as u32)).collect();
        let ts: Vec<i32> = (0..n * t).map(|_| rng.random_range(0..v as i32)).collect();
        forward(&params, &mut ws, &xs, &ts).unwrap();
        for s in 0..t {
            let tokens: Vec<u32> = (0..n).map(|i| xs[i * t + s]).collect();
            m.step(&mut state, &tokens, &mut logits).unwrap();
            let top = &state.hidden()[(cfg.layers - 1) * n * h..];
            for i in 0..n {
                let r = i * t + s;
                assert_eq!(
                    top[i * h..(i + 1) * h],
                    ws.hidden()[r * h..(r + 1) * h],
                    "hidden state, batch {batch}, row {i}, step {s}"
                );
                assert_eq!(
                    logits[i * v..(i + 1) * v],
                    ws.logits()[r * v..(r + 1) * v],
                    "logits, batch {batch}, row {i}, step {s}"
                );
            }
        }
        let (hs, cs) = ws.state().split_at(state.hidden().len());
        assert_eq!(state.hidden(), hs, "carried h, batch {batch}");
        assert_eq!(state.cell(), cs, "carried c, batch {batch}");
    }
    // The hidden states are not trivially small: the test exercises tanh's non-linear range.
    let max = state.hidden().iter().fold(0.0f32, |a, &x| a.max(x.abs()));
    assert!(max > 0.5, "max |h| = {max}");
}

#[test]
fn step_reproduces_training_forward_bit_for_bit() {
    // Awkward sizes (H, V not multiples of the 16-column panel), one block of rows.
    check_step_matches_forward(37, 19, 23, 3, 6);
    // Large enough that forward splits the batch into parallel row blocks and its packing runs
    // in parallel: results must not depend on it.
    check_step_matches_forward(517, 40, 70, 8, 10);
}

#[test]
fn step_reproduces_every_cell_depth_and_tying_bit_for_bit() {
    use rnnlm::model::config::Cell;
    for &cell in Cell::ALL {
        let c = Config::new(37, 19, 23).unwrap().with_cell(cell);
        check_step_matches_forward_of(c, 3, 6);
        check_step_matches_forward_of(c.with_layers(3), 3, 5);
        let tied = Config::new(517, 40, 40)
            .unwrap()
            .with_cell(cell)
            .with_layers(2)
            .with_tied(true);
        check_step_matches_forward_of(tied, 8, 10);
    }
}

#[test]
fn streams_of_a_batch_are_independent() {
    let m = model(29, 7, 13, 3);
    let v = 29;
    let seqs: [[u32; 5]; 3] = [[1, 2, 3, 4, 5], [0, 0, 28, 7, 7], [9, 8, 7, 6, 5]];
    let mut batch_state = m.zero_state(3);
    let mut batch_logits = vec![0.0f32; 3 * v];
    let mut single: Vec<_> = (0..3).map(|_| m.zero_state(1)).collect();
    let mut one = vec![0.0f32; v];
    for s in 0..5 {
        let tokens: Vec<u32> = seqs.iter().map(|q| q[s]).collect();
        m.step(&mut batch_state, &tokens, &mut batch_logits)
            .unwrap();
        for (i, st) in single.iter_mut().enumerate() {
            m.step(st, &[seqs[i][s]], &mut one).unwrap();
            assert_eq!(one[..], batch_logits[i * v..(i + 1) * v]);
        }
    }
    batch_state.reset();
    assert!(batch_state.hidden().iter().all(|&x| x == 0.0));
    assert_eq!(batch_state, m.zero_state(3));
}

#[test]
fn score_equals_forward_position_losses() {
    let (v, d, h) = (41, 12, 18);
    let params = random_params(v, d, h, 21);
    let m = Rnnlm::new(params.clone(), vocab(v)).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    for len in [2usize, 3, 17, 60] {
        let tokens: Vec<u32> = (0..len).map(|_| rng.random_range(0..v as u32)).collect();
        let t = len - 1;
        let mut ws = Workspace::new(*params.config(), 1, t, false).unwrap();
        let ts: Vec<i32> = tokens[1..].iter().map(|&x| x as i32).collect();
        forward(&params, &mut ws, &tokens[..t], &ts).unwrap();
        let want: f64 = ws.position_losses().iter().map(|&l| -(l as f64)).sum();
        let got = m.score(&tokens).unwrap();
        assert_eq!(got.tokens, t);
        assert!(
            (got.log_prob - want).abs() <= 1e-5 * want.abs(),
            "len {len}: {} vs {want}",
            got.log_prob
        );
        // Same kernels on the same logits, summed in the same order: exact in fact.
        assert_eq!(got.log_prob, want, "len {len}");
        let ppl = (-want / t as f64).exp();
        assert!((got.perplexity() - ppl).abs() <= 1e-12 * ppl);
    }
    let one = m.score(&[4]).unwrap();
    assert_eq!((one.log_prob, one.tokens, one.perplexity()), (0.0, 0, 1.0));
    assert!(matches!(m.score(&[]), Err(Error::Invalid { .. })));
    assert!(matches!(
        m.score(&[1, v as u32]),
        Err(Error::Invalid { .. })
    ));
}

#[test]
fn generate_is_repeatable_per_seed() {
    let m = model(50, 10, 16, 4);
    let s = Sampling::default();
    let gen = |seed| {
        m.generate(&mut ChaCha8Rng::seed_from_u64(seed), &[0, 3], 40, &s)
            .unwrap()
    };
    let a = gen(1);
    assert_eq!(a.len(), 40);
    assert_eq!(a, gen(1), "same seed, same words");
    assert_ne!(a, gen(2), "different seeds, different words");
    // Through a `dyn Rng` as well.
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let dyn_rng: &mut dyn rand::Rng = &mut rng;
    assert_eq!(m.generate(dyn_rng, &[0, 3], 40, &s).unwrap(), a);
    assert!(m.generate(&mut rng, &[0], 0, &s).unwrap().is_empty());
}

#[test]
fn generate_never_emits_skipped_ids() {
    let v = 30;
    let m = model(v, 8, 12, 6);
    // Skip all but 5 ids.
    let skip: Vec<u32> = (0..v as u32).filter(|i| i % 6 != 1).collect();
    let s = Sampling {
        skip: skip.clone(),
        ..Sampling::default()
    };
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let out = m.generate(&mut rng, &[0], 500, &s).unwrap();
    assert!(out.iter().all(|id| !skip.contains(id)), "{out:?}");
    // Every allowed id shows up in 500 draws (5 allowed ids).
    for id in (0..v as u32).filter(|i| i % 6 == 1) {
        assert!(out.contains(&id), "id {id} never sampled");
    }
    // With top_k as well: top-k is taken among the ids left after the skip.
    let s = Sampling {
        top_k: Some(2),
        ..s
    };
    let out = m.generate(&mut rng, &[0], 200, &s).unwrap();
    assert!(out.iter().all(|id| !skip.contains(id)));
}

/// Steps `start` then `out[..]` manually, returning the logits before each generated word.
fn logits_along(m: &Rnnlm, start: &[u32], out: &[u32]) -> Vec<Vec<f32>> {
    let v = m.config().vocab_size;
    let mut st = m.zero_state(1);
    let mut logits = vec![0.0f32; v];
    for &id in start {
        m.step(&mut st, &[id], &mut logits).unwrap();
    }
    let mut all = Vec::new();
    for &id in out {
        all.push(logits.clone());
        m.step(&mut st, &[id], &mut logits).unwrap();
    }
    all
}

#[test]
fn top_k_one_is_greedy_and_top_k_restricts() {
    let m = model(64, 16, 24, 12);
    let start = [0u32, 5, 9];
    let greedy = Sampling {
        top_k: Some(1),
        ..Sampling::default()
    };
    let out = m
        .generate(&mut ChaCha8Rng::seed_from_u64(1), &start, 30, &greedy)
        .unwrap();
    // Greedy does not depend on the RNG.
    let out2 = m
        .generate(&mut ChaCha8Rng::seed_from_u64(99), &start, 30, &greedy)
        .unwrap();
    assert_eq!(out, out2);
    for (i, (logits, &id)) in logits_along(&m, &start, &out).iter().zip(&out).enumerate() {
        let argmax = (0..logits.len())
            .max_by(|&a, &b| logits[a].total_cmp(&logits[b]).then(b.cmp(&a)))
            .unwrap();
        assert_eq!(id as usize, argmax, "word {i}");
    }

    let k = 5;
    let s = Sampling {
        top_k: Some(k),
        temperature: 2.0,
        ..Sampling::default()
    };
    let out = m
        .generate(&mut ChaCha8Rng::seed_from_u64(3), &start, 100, &s)
        .unwrap();
    for (logits, &id) in logits_along(&m, &start, &out).iter().zip(&out) {
        let above = logits.iter().filter(|&&l| l > logits[id as usize]).count();
        assert!(above < k, "id {id} has {above} ids more likely than it");
    }
    // top_k larger than V is plain sampling.
    let all = Sampling {
        top_k: Some(1000),
        ..Sampling::default()
    };
    assert_eq!(
        m.generate(&mut ChaCha8Rng::seed_from_u64(4), &start, 20, &all)
            .unwrap(),
        m.generate(
            &mut ChaCha8Rng::seed_from_u64(4),
            &start,
            20,
            &Sampling::default()
        )
        .unwrap()
    );
}

#[test]
fn sampling_follows_softmax_with_temperature() {
    let v = 6;
    let m = model(v, 5, 7, 2);
    let start = [0u32, 1];
    let logits = &logits_along(&m, &start, &[0])[0];
    let draws = 20_000;
    for temperature in [1.0f32, 0.5, 3.0] {
        let mx = logits.iter().fold(f32::NEG_INFINITY, |a, &x| a.max(x)) as f64;
        let w: Vec<f64> = logits
            .iter()
            .map(|&l| ((l as f64 - mx) / temperature as f64).exp())
            .collect();
        let z: f64 = w.iter().sum();
        let s = Sampling {
            temperature,
            ..Sampling::default()
        };
        let mut rng = ChaCha8Rng::seed_from_u64(temperature.to_bits() as u64);
        let mut counts = vec![0usize; v];
        for _ in 0..draws {
            counts[m.generate(&mut rng, &start, 1, &s).unwrap()[0] as usize] += 1;
        }
        for j in 0..v {
            let p = w[j] / z;
            let f = counts[j] as f64 / draws as f64;
            // 5 standard deviations of a binomial proportion.
            let tol = 5.0 * (p * (1.0 - p) / draws as f64).sqrt() + 1e-4;
            assert!((f - p).abs() <= tol, "T={temperature} id {j}: {f} vs {p}");
        }
    }
}

#[test]
fn generate_validates_its_arguments() {
    let m = model(10, 4, 6, 1);
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let bad = |s: Sampling, start: &[u32]| {
        let r = m.generate(&mut ChaCha8Rng::seed_from_u64(0), start, 3, &s);
        match r {
            Err(e @ Error::Invalid { .. }) => e.to_string(),
            other => panic!("expected Error::Invalid, got {other:?}"),
        }
    };
    for t in [0.0, -1.0, f32::NAN, f32::INFINITY] {
        let msg = bad(
            Sampling {
                temperature: t,
                ..Sampling::default()
            },
            &[0],
        );
        assert!(msg.contains("temperature"), "{msg}");
    }
    let msg = bad(
        Sampling {
            top_k: Some(0),
            ..Sampling::default()
        },
        &[0],
    );
    assert!(msg.contains("top_k"), "{msg}");
    assert!(bad(
        Sampling {
            skip: vec![10],
            ..Sampling::default()
        },
        &[0]
    )
    .contains("skip"));
    assert!(bad(
        Sampling {
            skip: (0..10).collect(),
            ..Sampling::default()
        },
        &[0]
    )
    .contains("skip"));
    assert!(bad(Sampling::default(), &[]).contains("start"));
    assert!(bad(Sampling::default(), &[3, 10]).contains("start"));
    // A tiny positive temperature is valid (near-greedy).
    let s = Sampling {
        temperature: 1e-6,
        ..Sampling::default()
    };
    let near = m.generate(&mut rng, &[0], 5, &s).unwrap();
    let greedy = Sampling {
        top_k: Some(1),
        ..Sampling::default()
    };
    assert_eq!(near, m.generate(&mut rng, &[0], 5, &greedy).unwrap());
}

fn assert_send_sync<T: Send + Sync>() {}

#[test]
fn shared_across_threads() {
    assert_send_sync::<Rnnlm>();
    let m = Arc::new(model(300, 32, 48, 17));
    let inputs: Vec<Vec<u32>> = (0..4u32)
        .map(|k| (0..200u32).map(|i| (i * 37 + k * 101) % 300).collect())
        .collect();
    let sequential: Vec<_> = inputs.iter().map(|x| m.score(x).unwrap()).collect();
    let handles: Vec<_> = inputs
        .iter()
        .cloned()
        .map(|x| {
            let m = Arc::clone(&m);
            std::thread::spawn(move || {
                let s = m.score(&x).unwrap();
                let g = m
                    .generate(
                        &mut ChaCha8Rng::seed_from_u64(x[0] as u64),
                        &x[..3],
                        25,
                        &Sampling::default(),
                    )
                    .unwrap();
                (s, g)
            })
        })
        .collect();
    for ((h, want), x) in handles.into_iter().zip(&sequential).zip(&inputs) {
        let (s, g) = h.join().unwrap();
        assert_eq!(&s, want);
        let g_seq = m
            .generate(
                &mut ChaCha8Rng::seed_from_u64(x[0] as u64),
                &x[..3],
                25,
                &Sampling::default(),
            )
            .unwrap();
        assert_eq!(g, g_seq);
    }
}

#[test]
fn save_load_round_trip() {
    let dir = tmpdir("roundtrip");
    let path = dir.join("m.safetensors");
    let m = model(25, 6, 9, 30);
    m.save(&path).unwrap();
    let back = Rnnlm::load(&path).unwrap();
    assert_eq!(back.params(), m.params());
    assert_eq!(back.vocab(), m.vocab());
    assert_eq!(back.config(), m.config());
    let ids = [0u32, 3, 24, 7, 7, 1];
    assert_eq!(back.score(&ids).unwrap(), m.score(&ids).unwrap());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn load_without_vocab_is_a_clear_error() {
    let dir = tmpdir("novocab");
    let path = dir.join("m.safetensors");
    checkpoint::save(&path, &random_params(8, 3, 4, 1), None).unwrap();
    match Rnnlm::load(&path) {
        Err(e @ Error::Checkpoint { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("vocab") && msg.contains("m.safetensors"),
                "{msg}"
            );
        }
        other => panic!("expected a checkpoint error, got {other:?}"),
    }
    let missing = Rnnlm::load(&dir.join("missing.safetensors"));
    assert!(matches!(missing, Err(Error::Io { .. })));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn new_checks_the_vocabulary_size() {
    let r = Rnnlm::new(random_params(8, 3, 4, 1), vocab(7));
    assert!(matches!(r, Err(Error::Shape { .. })), "{r:?}");
}

#[test]
fn step_errors_do_not_panic_or_change_the_state() {
    let v = 12;
    let m = model(v, 4, 5, 1);
    let mut st = m.zero_state(2);
    let mut logits = vec![0.0f32; 2 * v];
    m.step(&mut st, &[1, 2], &mut logits).unwrap();
    let before = st.clone();
    assert!(matches!(
        m.step(&mut st, &[1], &mut logits),
        Err(Error::Shape { .. })
    ));
    assert!(matches!(
        m.step(&mut st, &[1, 2, 3], &mut logits),
        Err(Error::Shape { .. })
    ));
    assert!(matches!(
        m.step(&mut st, &[1, 2], &mut logits[..v]),
        Err(Error::Shape { .. })
    ));
    assert!(matches!(
        m.step(&mut st, &[1, v as u32], &mut logits),
        Err(Error::Invalid { .. })
    ));
    assert!(matches!(
        m.step(&mut st, &[u32::MAX, 0], &mut logits),
        Err(Error::Invalid { .. })
    ));
    // A state made by a model of another shape.
    let other = model(v, 4, 6, 1);
    let mut foreign = other.zero_state(2);
    assert!(matches!(
        m.step(&mut foreign, &[1, 2], &mut logits),
        Err(Error::Invalid { .. })
    ));
    assert_eq!(st, before, "a failed step changed the state");
    // An empty batch is a no-op.
    let mut empty = m.zero_state(0);
    m.step(&mut empty, &[], &mut []).unwrap();
    assert_eq!(empty.batch(), 0);
}

#[test]
fn encode_decode() {
    let m = model(6, 3, 4, 1);
    let ids = m.encode("  <eos> w1\tw5\nw2 ").unwrap();
    assert_eq!(ids, [0, 1, 5, 2]);
    assert_eq!(m.decode(&ids), "<eos> w1 w5 w2");
    assert_eq!(m.decode(&[]), "");
    assert_eq!(m.decode(&[1, 99]), "w1 <invalid:99>");
    match m.encode("w1 zebra w2") {
        Err(e @ Error::Invalid { .. }) => assert!(e.to_string().contains("zebra"), "{e}"),
        other => panic!("expected Error::Invalid, got {other:?}"),
    }
    // With <unk> in the vocabulary, unknown words map to it.
    let words = ["<eos>", "a", "<unk>", "b"].map(String::from).to_vec();
    let m = Rnnlm::new(random_params(4, 3, 4, 1), Vocab::from_words(words).unwrap()).unwrap();
    assert_eq!(m.encode("a zebra b").unwrap(), [1, 2, 3]);
}

/// `score_batch` gives the same bits as `score` of each sequence alone, for every cell, with
/// lengths from 1 token to more than `SCORE_POSITIONS`, more sequences than a group, and any
/// thread count (212 sequences: 4 groups cut in length order on 1 thread, dealt round robin on
/// 2 and 3).
#[test]
fn score_batch_is_bit_identical_to_scoring_each_sequence_alone() {
    use rnnlm::model::config::Cell;
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    for cfg in [
        Config::new(53, 12, 17).unwrap(),
        Config::new(53, 16, 16)
            .unwrap()
            .with_cell(Cell::Lstm)
            .with_layers(2)
            .with_tied(true),
        Config::new(53, 12, 17)
            .unwrap()
            .with_cell(Cell::Gru)
            .with_layers(2),
    ] {
        let m = Rnnlm::new(random_params_of(cfg, 3), vocab(53)).unwrap();
        let mut seqs: Vec<Vec<u32>> = (0..210)
            .map(|i| {
                let len = 1 + (i * 37) % 23;
                (0..len).map(|_| rng.random_range(0..53u32)).collect()
            })
            .collect();
        seqs.push(
            (0..rnnlm::infer::SCORE_POSITIONS + 70)
                .map(|_| rng.random_range(0..53u32))
                .collect(),
        );
        seqs.push(vec![4]);
        let refs: Vec<&[u32]> = seqs.iter().map(|s| s.as_slice()).collect();
        let alone: Vec<_> = refs.iter().map(|s| m.score(s).unwrap()).collect();
        for threads in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let batch = pool.install(|| m.score_batch(&refs).unwrap());
            for (k, (a, b)) in alone.iter().zip(&batch).enumerate() {
                assert_eq!(
                    a.log_prob.to_bits(),
                    b.log_prob.to_bits(),
                    "{cfg:?}, sequence {k}, {threads} threads"
                );
                assert_eq!(a.tokens, b.tokens);
            }
        }
        assert!(m.score_batch(&[]).unwrap().is_empty());
        let err = m.score_batch(&[&[1, 2], &[]]).unwrap_err().to_string();
        assert!(err.contains("sequence 1"), "{err}");
        let err = m.score_batch(&[&[1, 2], &[3, 99]]).unwrap_err().to_string();
        assert!(err.contains("sequence 1") && err.contains("99"), "{err}");
    }
}

/// Weights whose products overflow (saturated hidden units times an output column of 3e38)
/// give infinite logits: `score`, `score_batch` and `generate` return `Error::NotFinite` at the
/// first such position instead of NaN. `score_batch` names the first failing sequence in input
/// order, though it runs the longest first.
#[test]
fn overflowing_logits_are_not_finite_errors() {
    let words = ["<eos>", "a", "b"];
    let cfg = Config::new(3, 8, 8).unwrap();
    let mut p = Params::init_book(cfg, &mut ChaCha8Rng::seed_from_u64(1));
    p.tensor_mut("rnn.0.b").unwrap().fill(100.0);
    for row in p.affine_w_mut().unwrap().chunks_exact_mut(3) {
        row[2] = 3e38;
    }
    let vocab = Vocab::from_words(words.iter().map(|w| w.to_string()).collect()).unwrap();
    let model = Rnnlm::new(p, vocab).unwrap();
    let not_finite = |e: Error| match e {
        Error::NotFinite {
            sequence,
            position,
            what,
        } => {
            assert!(what.contains("logits are not finite"), "{what}");
            (sequence, position)
        }
        e => panic!("{e}"),
    };
    assert_eq!(not_finite(model.score(&[0, 1, 2]).unwrap_err()), (None, 1));
    // A one-token sequence predicts nothing, so it scores fine.
    assert_eq!(model.score(&[0]).unwrap().tokens, 0);
    let seqs: [&[u32]; 3] = [&[0], &[0, 1], &[0, 1, 1, 1, 2]];
    let err = model.score_batch(&seqs).unwrap_err();
    assert_eq!(not_finite(err), (Some(1), 1));
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let err = model
        .generate(&mut rng, &[0], 5, &Sampling::default())
        .unwrap_err();
    assert_eq!(not_finite(err), (None, 0));
    let err = rnnlm::evaluate(
        model.params(),
        &[1, 2, 1, 0, 1, 2],
        rnnlm::Protocol::Full,
        2,
        3,
    )
    .unwrap_err();
    assert_eq!(not_finite(err), (None, 1));
}

/// A full head whose packed `W` (H = 64, V = 33,000: 8.4 MB) is past the size that is re-read
/// per 16 positions: scoring takes it in wider slices, with the same bits as the evaluation
/// forward.
#[test]
fn wide_full_head_scores_as_the_evaluation_forward() {
    let v = 33_000;
    let cfg = Config::new(v, 16, 64).unwrap();
    let p = Params::init_book(cfg, &mut ChaCha8Rng::seed_from_u64(4));
    let vocab = Vocab::from_words((0..v).map(|i| format!("w{i}")).collect()).unwrap();
    heads_common::check_score_bits(p, vocab, "wide full");
}
