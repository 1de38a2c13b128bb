//! `rnnlm prepare`, `train --train-ids` and `eval --data-ids`: the same results as from text,
//! and one-line errors naming the file and the byte offset.

mod common;

use std::path::{Path, PathBuf};

use common::{ok_json, one_line_error, rnnlm, tmpdir};
use rnnlm::data::ids::HEADER_BYTES;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A small corpus: train, valid and test texts, and their prepared ids (the training text's
/// vocabulary, at most 120 words).
struct Data {
    dir: PathBuf,
    train: PathBuf,
    valid: PathBuf,
}

impl Data {
    fn new(tag: &str) -> Self {
        let dir = tmpdir(tag);
        let (train, valid) = (dir.join("train.txt"), dir.join("valid.txt"));
        for (p, tokens, seed) in [(&train, "12000", "1"), (&valid, "2000", "2")] {
            let out = rnnlm(&[
                "zipf-text",
                "--tokens",
                tokens,
                "--vocab-size",
                "200",
                "--seed",
                seed,
                "--out",
                s(p),
            ]);
            assert!(out.status.success());
        }
        let prefix = dir.join("train");
        let out = rnnlm(&[
            "prepare",
            "--text",
            s(&train),
            "--out",
            s(&prefix),
            "--max-vocab",
            "120",
            "--json",
        ]);
        let (_, json) = ok_json(&out);
        assert_eq!(json["vocab_size"], 120);
        assert!(json["unk_mapped"].as_u64().unwrap() > 0);
        let out = rnnlm(&[
            "prepare",
            "--text",
            s(&valid),
            "--vocab",
            s(&dir.join("train.vocab")),
            "--out",
            s(&dir.join("valid")),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Data { dir, train, valid }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// The training run of the tests: a class head (so the text's vocabulary is numbered by
/// frequency, as `prepare` numbers it), a few batches.
fn train_args<'a>(save: &'a str, log: &'a str) -> Vec<&'a str> {
    vec![
        "train",
        "--softmax",
        "class",
        "--wordvec",
        "8",
        "--hidden",
        "8",
        "--batch",
        "4",
        "--time",
        "5",
        "--epochs",
        "1",
        "--eval-interval",
        "1",
        "--eval-batch",
        "2",
        "--eval-time",
        "5",
        "--seed",
        "3",
        "--save",
        save,
        "--log",
        log,
        "--json",
    ]
}

/// The train perplexities of a CSV log, bit for bit (the elapsed column dropped).
fn losses(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            format!("{} {} {}", f[2], f[6], f[7])
        })
        .collect()
}

#[test]
fn training_and_evaluating_from_ids_equals_from_text() {
    let d = Data::new("cli-prepare-train");
    let (save_t, log_t) = (d.path("t.safetensors"), d.path("t.csv"));
    let (save_i, log_i) = (d.path("i.safetensors"), d.path("i.csv"));
    let mut text = train_args(s(&save_t), s(&log_t));
    let (tr, va) = (s(&d.train), s(&d.valid));
    text.extend([
        "--train",
        tr,
        "--valid",
        va,
        "--test",
        va,
        "--max-vocab",
        "120",
    ]);
    let (_, jt) = ok_json(&rnnlm(&text));
    let (train_ids, valid_ids) = (d.path("train.ids"), d.path("valid.ids"));
    let mut ids = train_args(s(&save_i), s(&log_i));
    ids.extend(["--train-ids", s(&train_ids), "--valid-ids", s(&valid_ids)]);
    ids.extend(["--test-ids", s(&valid_ids)]);
    let (_, ji) = ok_json(&rnnlm(&ids));
    assert!(losses(&log_t).len() > 10);
    assert_eq!(losses(&log_t), losses(&log_i), "bit-identical losses");
    assert_eq!(jt["valid_perplexity"], ji["valid_perplexity"]);
    assert_eq!(jt["test_perplexity"], ji["test_perplexity"]);
    assert!(ji["unk_mapped"]["train"].is_null());
    assert_eq!(
        std::fs::read(&save_t).unwrap(),
        std::fs::read(&save_i).unwrap()
    );

    // eval --data-ids scores what eval --data scores, for every protocol.
    for protocol in ["book", "full", "torch"] {
        let eval = |flag: &str, data: &Path| {
            let out = rnnlm(&[
                "eval",
                "--model",
                s(&save_t),
                flag,
                s(data),
                "--protocol",
                protocol,
                "--json",
            ]);
            ok_json(&out).1
        };
        let (a, b) = (eval("--data", &d.valid), eval("--data-ids", &valid_ids));
        assert_eq!(a["perplexity"], b["perplexity"], "{protocol}");
        assert_eq!(a["tokens"], b["tokens"]);
    }
    std::fs::remove_dir_all(&d.dir).unwrap();
}

#[test]
fn bad_ids_files_are_one_line_naming_the_file_and_offset() {
    let d = Data::new("cli-prepare-err");
    let (save, log) = (d.path("m.safetensors"), d.path("m.csv"));
    let mut args = train_args(s(&save), s(&log));
    let (train_ids, valid_ids) = (d.path("train.ids"), d.path("valid.ids"));
    args.extend(["--train-ids", s(&train_ids), "--valid-ids", s(&valid_ids)]);
    args.extend(["--test-ids", s(&valid_ids)]);
    ok_json(&rnnlm(&args));
    let good = std::fs::read(&valid_ids).unwrap();
    let bad = d.path("bad.ids");
    let eval = |ids: &Path| {
        let out = rnnlm(&["eval", "--model", s(&save), "--data-ids", s(ids)]);
        one_line_error(&out)
    };
    let cases: Vec<(Vec<u8>, String)> = {
        let mut v = Vec::new();
        // Truncated mid-id: the header announces more ids than the file holds.
        let cut = good.len() - 6;
        v.push((
            good[..cut].to_vec(),
            format!("byte offset {cut}: the file ends after"),
        ));
        let mut b = good.clone();
        b[0] = b'X';
        v.push((b, "byte offset 0: bad magic".to_string()));
        let mut b = good.clone();
        b[8] = 9;
        v.push((b, "byte offset 8: format version 9".to_string()));
        // Token 7 set to an id >= V = 120.
        let mut b = good.clone();
        let at = HEADER_BYTES + 4 * 7;
        b[at..at + 4].copy_from_slice(&500u32.to_le_bytes());
        v.push((
            b,
            format!("byte offset {at}: token 7 has id 500, expected < 120"),
        ));
        v
    };
    for (bytes, want) in cases {
        std::fs::write(&bad, &bytes).unwrap();
        let e = eval(&bad);
        assert!(
            e.starts_with(&format!("rnnlm: error: {}: {want}", bad.display())),
            "{e}"
        );
    }
    // Ids written for another vocabulary than the model's.
    let other = d.dir.join("other");
    let out = rnnlm(&[
        "prepare",
        "--text",
        s(&d.valid),
        "--out",
        s(&other),
        "--max-vocab",
        "120",
    ]);
    assert!(out.status.success());
    let other_ids = d.path("other.ids");
    let e = eval(&other_ids);
    let want = format!(
        "rnnlm: error: {}: byte offset 32: the vocabulary",
        other_ids.display()
    );
    assert!(e.starts_with(&want), "{e}");
    assert!(
        e.contains(&format!("the vocabulary of {}", save.display())),
        "{e}"
    );
    // The same in training: a validation set for another vocabulary.
    let mut args = train_args(s(&save), s(&log));
    args.extend(["--train-ids", s(&train_ids), "--valid-ids", s(&other_ids)]);
    args.extend(["--test-ids", s(&valid_ids)]);
    let e = one_line_error(&rnnlm(&args));
    assert!(e.starts_with(&want), "{e}");
    // And a resumed run given ids of another vocabulary than its own.
    let resume = d.path("r.safetensors.resume");
    {
        use rnnlm::train::{TrainConfig, Trainer};
        let words = (0..120)
            .map(|i| format!("x{i}"))
            .chain(["<eos>".to_string()]);
        let vocab = rnnlm::Vocab::from_words(words.collect()).unwrap();
        let cfg = TrainConfig {
            batch_size: 4,
            time_size: 5,
            ..TrainConfig::default()
        };
        let mut t = Trainer::new(rnnlm::Config::new(121, 8, 8).unwrap(), cfg).unwrap();
        t.stop_after_steps(1);
        let corpus: Vec<u32> = (0..200).map(|i| i % 121).collect();
        t.fit(&corpus, None, None, |_| {}).unwrap();
        t.save_resume(&resume, Some(&vocab)).unwrap();
    }
    let (r_save, r_log) = (d.path("r.safetensors"), d.path("r.csv"));
    let out = rnnlm(&[
        "train",
        "--resume",
        s(&resume),
        "--save",
        s(&r_save),
        "--log",
        s(&r_log),
        "--train-ids",
        s(&d.path("train.ids")),
        "--valid-ids",
        s(&valid_ids),
        "--test-ids",
        s(&valid_ids),
    ]);
    let e = one_line_error(&out);
    let want = format!("{}: byte offset 24: ", d.path("train.ids").display());
    assert!(e.contains(&want), "{e}");
    assert!(
        e.contains(&format!("the vocabulary of {}", resume.display())),
        "{e}"
    );
    std::fs::remove_dir_all(&d.dir).unwrap();
}

#[test]
fn prepare_checks_its_flags_and_is_deterministic() {
    let d = Data::new("cli-prepare-flags");
    let vocab = d.path("train.vocab");
    // --vocab fixes the vocabulary: the limits make no sense with it.
    let out = rnnlm(&[
        "prepare",
        "--text",
        s(&d.train),
        "--out",
        s(&d.path("x")),
        "--vocab",
        s(&vocab),
        "--max-vocab",
        "5",
    ]);
    assert_eq!(out.status.code(), Some(2));
    // The output may not overwrite the input.
    let e = one_line_error(&rnnlm(&[
        "prepare",
        "--text",
        s(&d.path("train.ids")),
        "--out",
        s(&d.path("train")),
    ]));
    assert!(e.contains("same file as --text"), "{e}");
    // The same text gives the same bytes with 1 or 2 threads.
    for threads in ["1", "2"] {
        let out = rnnlm(&[
            "prepare",
            "--text",
            s(&d.train),
            "--out",
            s(&d.path(threads)),
            "--max-vocab",
            "120",
            "--threads",
            threads,
        ]);
        assert!(out.status.success());
    }
    for ext in ["ids", "vocab"] {
        let read = |p: &str| std::fs::read(d.path(&format!("{p}.{ext}"))).unwrap();
        assert_eq!(read("1"), read("2"));
        assert_eq!(read("1"), read("train"));
    }
    // zipf-text: the same seed, the same text.
    let again = d.path("again.txt");
    let out = rnnlm(&[
        "zipf-text",
        "--tokens",
        "12000",
        "--vocab-size",
        "200",
        "--seed",
        "1",
        "--out",
        s(&again),
    ]);
    assert!(out.status.success());
    assert_eq!(
        std::fs::read(&again).unwrap(),
        std::fs::read(&d.train).unwrap()
    );
    std::fs::remove_dir_all(&d.dir).unwrap();
}
