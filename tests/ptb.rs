//! Tests on the real Penn Treebank, found through `RNNLM_PTB_DIR` (`.ci/run` sets it).
//! Skipped, with a notice, when the variable is unset.

use std::path::PathBuf;

use rnnlm::{BookBatches, Config, Ptb, Sgd, SimpleRnnlm};

fn ptb_dir() -> Option<PathBuf> {
    match std::env::var_os("RNNLM_PTB_DIR") {
        Some(d) if !d.is_empty() => Some(PathBuf::from(d)),
        _ => {
            eprintln!(
                "SKIPPED: RNNLM_PTB_DIR is not set (point it at ptb.{{train,valid,test}}.txt)"
            );
            None
        }
    }
}

#[test]
fn corpus_sizes_and_vocabulary_match_the_book() {
    let Some(dir) = ptb_dir() else { return };
    let ptb = Ptb::load(&dir).unwrap();
    assert_eq!(ptb.train.len(), 929_589);
    assert_eq!(ptb.valid.len(), 73_760);
    assert_eq!(ptb.test.len(), 82_430);
    assert_eq!(ptb.vocab.len(), 10_000);
    // First appearance order, as the book's ptb.load_data: the file starts with "aer banknote".
    assert_eq!(ptb.vocab.word(0), Some("aer"));
    assert_eq!(ptb.vocab.word(1), Some("banknote"));
    assert!(ptb.vocab.id("<eos>").is_some() && ptb.vocab.unk_id().is_some());
    // The book's ch05 subset: max id in the first 1000 tokens + 1 = 418.
    assert_eq!(*ptb.train[..1000].iter().max().unwrap(), 417);
}

#[test]
fn checksums_match_the_published_sums() {
    let Some(dir) = ptb_dir() else { return };
    for (name, sum) in rnnlm::data::download::PTB_FILES {
        let got = rnnlm::data::download::sha256_file(&dir.join(name)).unwrap();
        assert_eq!(got, sum, "{name}");
    }
}

#[test]
fn book_ch05_curve_has_the_books_shape() {
    // The book's ch05 run: 1000 tokens, V=418, N=10, T=5, D=H=100, SGD 0.1, 100 epochs.
    // The book prints ~400 at epoch 1 falling to ~5.3-5.6 at epoch 100.
    let Some(dir) = ptb_dir() else { return };
    let ptb = Ptb::load(&dir).unwrap();
    let corpus = &ptb.train[..1000];
    let (n, t) = (10, 5);
    let mut model = SimpleRnnlm::new(Config::new(418, 100, 100).unwrap(), n, t, 1).unwrap();
    let mut batches = BookBatches::new(corpus, n, t).unwrap();
    assert_eq!(batches.iters_per_epoch(), 19);
    let (mut xs, mut ts) = (vec![0; n * t], vec![0; n * t]);
    let sgd = Sgd::new(0.1);
    let mut curve = Vec::new();
    for _ in 0..100 {
        let mut total = 0.0f64;
        for _ in 0..19 {
            batches.next_batch(&mut xs, &mut ts);
            total += model.forward(&xs, &ts).unwrap() as f64;
            model.backward().unwrap();
            sgd.update(model.params_mut_and_grads());
        }
        curve.push((total / 19.0).exp());
    }
    assert!((330.0..480.0).contains(&curve[0]), "epoch 1: {}", curve[0]);
    assert!(curve[9] < 250.0, "epoch 10: {}", curve[9]);
    assert!(curve[49] < 120.0, "epoch 50: {}", curve[49]);
    assert!((3.0..9.0).contains(&curve[99]), "epoch 100: {}", curve[99]);
    // Mostly decreasing: every 10-epoch window is lower than the one before.
    for w in 1..10 {
        let prev: f64 = curve[(w - 1) * 10..w * 10].iter().sum();
        let this: f64 = curve[w * 10..(w + 1) * 10].iter().sum();
        assert!(this < prev, "window {w}: {this} >= {prev}");
    }
}

/// The book's trained ch06 LSTM beside the project, or `None` (with a notice) without it.
fn book_lstm() -> Option<PathBuf> {
    let book = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data/book/ch06_rnnlm_lstm.safetensors");
    if book.exists() {
        Some(book)
    } else {
        eprintln!("SKIPPED: {} not found", book.display());
        None
    }
}

/// The book's trained ch06 LSTM (`../shared/data/book`, converted from the book's float16
/// pickle without change of values) scores the book's perplexities on PTB with the book's
/// `eval_perplexity` (batch 10, time 35): test 136.0776, valid 140.2004. This checks the LSTM
/// cell (gate order f, g, i, o, one bias), the one-layer `lstm.*` names and the book protocol.
#[test]
fn the_books_trained_lstm_scores_the_books_perplexity() {
    let Some(dir) = ptb_dir() else { return };
    let Some(book) = book_lstm() else { return };
    let ptb = Ptb::load(&dir).unwrap();
    let ck = rnnlm::checkpoint::load(&book).unwrap();
    let cfg = *ck.params.config();
    assert_eq!(cfg.cell, rnnlm::model::config::Cell::Lstm);
    assert_eq!(
        (
            cfg.vocab_size,
            cfg.wordvec_size,
            cfg.hidden_size,
            cfg.layers,
            cfg.tied
        ),
        (10_000, 100, 100, 1, false)
    );
    for (corpus, want) in [(&ptb.test, 136.0776), (&ptb.valid, 140.2004)] {
        let ppl = rnnlm::eval_perplexity(&ck.params, corpus, 10, 35)
            .unwrap()
            .perplexity;
        eprintln!("book LSTM: perplexity {ppl:.4} (the book: {want})");
        assert!(
            (ppl / want - 1.0).abs() < 1e-4,
            "perplexity {ppl} vs the book's {want}"
        );
    }
}

/// The same through the command line, as the README shows it: the book's file has no
/// vocabulary, so the training text numbers the words.
#[test]
fn cli_evaluates_the_books_lstm_with_the_training_text_as_vocabulary() {
    let Some(dir) = ptb_dir() else { return };
    let Some(book) = book_lstm() else { return };
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rnnlm"))
        .arg("eval")
        .arg("--model")
        .arg(&book)
        .arg("--vocab-text")
        .arg(dir.join("ptb.train.txt"))
        .arg("--data")
        .arg(dir.join("ptb.test.txt"))
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let json: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    let ppl = json["perplexity"].as_f64().unwrap();
    assert!((ppl / 136.0776 - 1.0).abs() < 1e-4, "{ppl}");
}
