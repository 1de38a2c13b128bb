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
