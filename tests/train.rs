//! The trainer: perplexity falls, the learning-rate schedule, the kept model, clipping.

use rnnlm::train::{Event, TrainConfig, Trainer};
use rnnlm::{eval_perplexity, Config};

/// A corpus with structure (a noisy repeating pattern) so a model can learn it.
fn corpus(len: usize, v: u32, salt: u32) -> Vec<u32> {
    let mut x = 12345u32.wrapping_add(salt);
    (0..len as u32)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            if x.is_multiple_of(10) {
                x % v
            } else {
                (i * 7 + i / 3) % v
            }
        })
        .collect()
}

fn cfg() -> TrainConfig {
    TrainConfig {
        batch_size: 4,
        time_size: 8,
        lr: 0.5,
        max_grad: Some(1.0),
        epochs: 3,
        eval_interval: Some(10),
        seed: 3,
        eval_batch: 2,
        eval_time: 8,
        ..TrainConfig::default()
    }
}

#[test]
fn perplexity_falls_and_the_best_model_is_kept() {
    let v = 31;
    let train = corpus(6000, v, 0);
    let valid = corpus(1500, v, 1);
    let test = corpus(1500, v, 2);
    let mut trainer = Trainer::new(Config::new(v as usize, 24, 24).unwrap(), cfg()).unwrap();
    let initial = eval_perplexity(trainer.model().params(), &valid, 2, 8).unwrap();
    let mut progress = Vec::new();
    let report = trainer
        .fit(&train, Some(&valid), Some(&test), |e| {
            if let Event::Progress { point, .. } = e {
                progress.push(point.train_ppl.unwrap());
            }
        })
        .unwrap();
    let best = report.best_valid.unwrap();
    assert!(
        best.perplexity < initial.perplexity / 3.0,
        "valid {} from {}",
        best.perplexity,
        initial.perplexity
    );
    assert!(
        progress.last().unwrap() < &(progress[0] / 3.0),
        "{progress:?}"
    );
    // The kept parameters are the ones that scored best_valid, and test used them.
    let again = eval_perplexity(trainer.best_params(), &valid, 2, 8).unwrap();
    assert_eq!(again.perplexity, best.perplexity);
    let test_again = eval_perplexity(trainer.best_params(), &test, 2, 8).unwrap();
    assert_eq!(test_again.perplexity, report.test.unwrap().perplexity);
    // 6000 tokens / (4*8) = 187 batches per epoch, 3 epochs.
    assert_eq!(report.steps, 3 * 187);
    assert_eq!(report.tokens, 3 * 187 * 32);
    // Log: progress points every 10 batches plus one validation point per epoch.
    assert_eq!(
        report.log.iter().filter(|p| p.valid_ppl.is_some()).count(),
        3
    );
    assert_eq!(
        report.log.iter().filter(|p| p.train_ppl.is_some()).count(),
        3 * 19
    );
}

#[test]
fn lr_is_divided_by_four_when_validation_does_not_improve() {
    let v = 31;
    let train = corpus(4000, v, 0);
    // Validation text from another distribution: once the model fits the training pattern,
    // validation stops improving.
    let valid: Vec<u32> = (0..800u32).map(|i| (i * i * 13 + 5) % v).collect();
    let mut c = cfg();
    c.epochs = 6;
    c.lr = 2.0;
    let mut trainer = Trainer::new(Config::new(v as usize, 16, 16).unwrap(), c).unwrap();
    let mut epochs = Vec::new();
    trainer
        .fit(&train, Some(&valid), None, |e| {
            if let Event::Epoch {
                improved,
                lr,
                valid,
                ..
            } = e
            {
                epochs.push((improved, lr, valid.unwrap().perplexity));
            }
        })
        .unwrap();
    let mut lr = 2.0f32;
    let mut best = f64::INFINITY;
    for &(improved, new_lr, ppl) in &epochs {
        assert_eq!(improved, ppl < best, "improved flag");
        best = best.min(ppl);
        if !improved {
            lr /= 4.0;
        }
        assert_eq!(new_lr, lr, "{epochs:?}");
    }
    assert!(
        epochs.iter().any(|e| !e.0),
        "no epoch without improvement: {epochs:?}"
    );
}

#[test]
fn clipping_changes_the_run_and_bad_settings_are_errors() {
    let v = 17;
    let train = corpus(2000, v, 4);
    let run = |max_grad| {
        let mut c = cfg();
        c.epochs = 1;
        c.max_grad = max_grad;
        let mut t = Trainer::new(Config::new(v as usize, 8, 8).unwrap(), c).unwrap();
        t.fit(&train, None, None, |_| {}).unwrap();
        t.model().params().clone()
    };
    assert_ne!(
        run(None),
        run(Some(1e-3)),
        "a tight clip changes the updates"
    );
    assert_eq!(run(Some(1e-3)), run(Some(1e-3)), "runs are repeatable");

    let model = Config::new(5, 4, 4).unwrap();
    for bad in [
        TrainConfig { lr: -1.0, ..cfg() },
        TrainConfig {
            max_grad: Some(0.0),
            ..cfg()
        },
        TrainConfig {
            batch_size: 0,
            ..cfg()
        },
        TrainConfig {
            eval_interval: Some(0),
            ..cfg()
        },
    ] {
        assert!(Trainer::new(model, bad).is_err());
    }
    let mut t = Trainer::new(model, cfg()).unwrap();
    assert!(
        t.fit(&[0, 1, 2], None, None, |_| {}).is_err(),
        "corpus too short"
    );
    assert!(
        t.fit(&[9; 100], None, None, |_| {}).is_err(),
        "id outside the vocabulary"
    );
}

#[test]
fn resume_gives_the_same_results_as_an_uninterrupted_run() {
    check_resume(Config::new(29, 12, 12).unwrap(), 0.0, "rnn");
}

/// LSTM and GRU stacks with dropout: the carried c, every layer's h and the dropout step
/// count survive the resume file.
#[test]
fn stacked_lstm_and_gru_with_dropout_resume_exactly() {
    use rnnlm::model::config::Cell;
    let base = Config::new(29, 12, 12).unwrap().with_layers(2);
    check_resume(base.with_cell(Cell::Lstm).with_tied(true), 0.5, "lstm");
    check_resume(base.with_cell(Cell::Gru), 0.3, "gru");
}

fn check_resume(model: Config, dropout: f32, tag: &str) {
    let v = model.vocab_size as u32;
    let train = corpus(3000, v, 5);
    let valid = corpus(600, v, 6);
    let test = corpus(600, v, 7);
    let mut c = cfg();
    c.epochs = 3;
    c.eval_interval = Some(7);
    c.dropout = dropout;
    let vocab = rnnlm::Vocab::from_words((0..v).map(|i| format!("w{i}")).collect()).unwrap();

    let mut whole = Trainer::new(model, c.clone()).unwrap();
    let full = whole
        .fit(&train, Some(&valid), Some(&test), |_| {})
        .unwrap();

    let dir = std::env::temp_dir().join(format!("rnnlm-resume-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("run.resume");
    // Interrupt mid-epoch (batch 100 of 93 per epoch = epoch 2), then twice more.
    let mut first = Trainer::new(model, c.clone()).unwrap();
    first.stop_after_steps(100);
    let r = first
        .fit(&train, Some(&valid), Some(&test), |_| {})
        .unwrap();
    assert!(r.interrupted && r.test.is_none());
    first.save_resume(&path, Some(&vocab)).unwrap();
    // The resume file is also a loadable model (its current weights).
    let as_model = rnnlm::checkpoint::load(&path).unwrap();
    assert_eq!(&as_model.params, first.model().params());

    let (mut second, vocab2) = Trainer::load_resume(&path).unwrap();
    assert_eq!(vocab2.as_ref(), Some(&vocab));
    second.stop_after_steps(200);
    second
        .fit(&train, Some(&valid), Some(&test), |_| {})
        .unwrap();
    second.save_resume(&path, Some(&vocab)).unwrap();
    let (mut third, _) = Trainer::load_resume(&path).unwrap();
    let resumed = third
        .fit(&train, Some(&valid), Some(&test), |_| {})
        .unwrap();

    assert!(!resumed.interrupted);
    assert_eq!(
        third.model().params(),
        whole.model().params(),
        "final weights"
    );
    assert_eq!(third.best_params(), whole.best_params(), "kept model");
    assert_eq!(
        third.model().state(),
        whole.model().state(),
        "carried state"
    );
    assert_eq!(resumed.best_valid, full.best_valid);
    assert_eq!(resumed.test, full.test);
    assert_eq!((resumed.steps, resumed.tokens), (full.steps, full.tokens));
    // The same log, apart from wall-clock times.
    let strip = |log: &[rnnlm::report::EvalPoint]| -> Vec<_> {
        log.iter()
            .map(|p| (p.epoch, p.iter, p.step, p.lr, p.train_ppl, p.valid_ppl))
            .collect()
    };
    assert_eq!(strip(&resumed.log), strip(&full.log));

    // A plain model is not a resume file.
    rnnlm::checkpoint::save(&dir.join("m"), whole.model().params(), None).unwrap();
    let err = Trainer::load_resume(&dir.join("m"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a resumable checkpoint"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// A run that blows up stops before the update that would spoil the weights: they are those
/// of the step before, the run stands at the failing batch, and a resume point saved then
/// reproduces the same failure (runs are deterministic).
#[test]
fn divergence_stops_before_the_bad_update() {
    let v = 23;
    let train = corpus(3000, v, 8);
    let valid = corpus(600, v, 9);
    let mut c = cfg();
    c.lr = 1000.0;
    c.max_grad = None;
    let model = Config::new(v as usize, 16, 16).unwrap();
    let mut run = Trainer::new(model, c.clone()).unwrap();
    let err = run.fit(&train, Some(&valid), None, |_| {}).unwrap_err();
    let rnnlm::Error::Diverged {
        epoch, step, what, ..
    } = &err
    else {
        panic!("{err}")
    };
    assert_eq!(*epoch, 1);
    assert!(what.contains("loss"), "{err}");
    assert!(err
        .to_string()
        .starts_with("training diverged at epoch 1, step "));
    assert!(run.best_valid().is_none(), "no validation ran");

    // The same run stopped just before that step has the same weights and carried state.
    let mut twin = Trainer::new(model, c.clone()).unwrap();
    twin.stop_after_steps(step - 1);
    assert!(
        twin.fit(&train, Some(&valid), None, |_| {})
            .unwrap()
            .interrupted
    );
    assert_eq!(run.model().params(), twin.model().params());
    assert_eq!(run.model().state(), twin.model().state());
    assert!(run
        .model()
        .params()
        .as_slice()
        .iter()
        .all(|x| x.is_finite()));

    let dir = std::env::temp_dir().join(format!("rnnlm-diverge-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("run.resume");
    run.save_resume(&path, None).unwrap();
    let (mut again, _) = Trainer::load_resume(&path).unwrap();
    let err2 = again.fit(&train, Some(&valid), None, |_| {}).unwrap_err();
    assert_eq!(
        err2.to_string(),
        err.to_string(),
        "the same step fails again"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// Weights that are no longer finite are never written (loading would refuse the file): a
/// resume point and a model save of such a run are refused naming the tensor and the flat
/// index, and leave nothing behind.
#[test]
fn weights_that_are_no_longer_finite_are_not_saved() {
    let v = 11;
    let train = corpus(600, v, 4);
    let model = Config::new(v as usize, 8, 8).unwrap();
    let mut params = rnnlm::Params::zeros(model);
    params.tensor_mut("rnn.0.Wh").unwrap()[3] = f32::NAN;
    let mut run = Trainer::from_params(params, cfg()).unwrap();
    let err = run.fit(&train, None, None, |_| {}).unwrap_err();
    assert!(
        matches!(&err, rnnlm::Error::Diverged { what, .. } if what.contains("NaN")),
        "{err}"
    );
    let dir = std::env::temp_dir().join(format!("rnnlm-nonfinite-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let want = "tensor \"rnn.0.Wh\" holds NaN at flat index 3";
    let e = run.save_resume(&dir.join("run.resume"), None).unwrap_err();
    assert!(e.to_string().contains(want), "{e}");
    let e = rnnlm::checkpoint::save(&dir.join("m"), run.best_params(), None).unwrap_err();
    assert!(e.to_string().contains(want), "{e}");
    assert!(std::fs::read_dir(&dir).unwrap().next().is_none());
    std::fs::remove_dir_all(dir).unwrap();
}

/// Everything is checked before the first step: a short validation or test corpus, and for
/// a resumed run, training data other than the run's.
#[test]
fn bad_corpora_are_refused_before_any_step() {
    let v = 17;
    let train = corpus(2000, v, 1);
    let model = Config::new(v as usize, 8, 8).unwrap();
    let mut t = Trainer::new(model, cfg()).unwrap();
    let before = t.model().params().clone();
    let short = corpus(16, v, 2); // eval batch 2 x 8 needs 17 tokens
    let err = t
        .fit(&train, Some(&train), Some(&short), |_| {})
        .unwrap_err();
    assert!(
        err.to_string().contains("test corpus") && err.to_string().contains("needs at least 17"),
        "{err}"
    );
    assert_eq!(t.model().params(), &before, "no step was taken");
    assert!(t.log().is_empty());

    t.stop_after_steps(10);
    t.fit(&train, None, None, |_| {}).unwrap();
    let fp = t.data_fingerprint().unwrap();
    assert_eq!(fp, rnnlm::train::DataFingerprint::of(&train));
    let mut other = train.clone();
    other[1000] = (other[1000] + 1) % v;
    let err = t.fit(&other, None, None, |_| {}).unwrap_err().to_string();
    assert!(err.contains("not the same ones"), "{err}");
    let err = t
        .fit(&train[..1500], None, None, |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("1500 tokens") && err.contains("2000"), "{err}");
}
