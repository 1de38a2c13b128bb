//! `rnnlm train`, `generate` and `score` as a user runs them.

mod common;

use common::{ok_json, one_line_error, rnnlm, tmpdir};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Sentences from a tiny grammar, so a model can learn something in a second.
fn text(lines: usize, salt: usize) -> String {
    let subj = ["the cat", "a dog", "the bird", "my friend", "the old man"];
    let verb = ["sees", "likes", "follows", "ignores"];
    let obj = [
        "the ball",
        "a tree",
        "the house",
        "the river",
        "a rare stone",
    ];
    (0..lines)
        .map(|i| {
            let k = i * 7 + salt;
            format!(
                "{} {} {}\n",
                subj[k % 5],
                verb[(k / 5) % 4],
                obj[(k / 3) % 5]
            )
        })
        .collect()
}

/// Trains a small model into `dir` and returns its path.
fn trained(dir: &Path) -> PathBuf {
    trained_with(dir, "0.5", &[], "m.safetensors")
}

/// As [`trained`], with extra `train` flags, saving to `name`.
fn trained_with(dir: &Path, lr: &str, extra: &[&str], name: &str) -> PathBuf {
    for (name, lines, salt) in [("train", 600, 0), ("valid", 80, 1), ("test", 80, 2)] {
        std::fs::write(dir.join(format!("{name}.txt")), text(lines, salt)).unwrap();
    }
    let model = dir.join(name);
    let log = dir.join(format!("{name}.csv"));
    let plot = dir.join(format!("{name}.svg"));
    let (tr, va, te) = (
        dir.join("train.txt"),
        dir.join("valid.txt"),
        dir.join("test.txt"),
    );
    let mut args = vec![
        "train",
        "--train",
        s(&tr),
        "--valid",
        s(&va),
        "--test",
        s(&te),
        "--wordvec",
        "16",
        "--hidden",
        "16",
        "--batch",
        "4",
        "--time",
        "5",
        "--lr",
        lr,
        "--epochs",
        "3",
        "--eval-interval",
        "50",
        "--save",
        s(&model),
        "--log",
        s(&log),
        "--plot",
        s(&plot),
        "--json",
    ];
    args.extend_from_slice(extra);
    let out = rnnlm(&args);
    let (stdout, json) = ok_json(&out);
    for key in [
        "valid_perplexity",
        "test_perplexity",
        "tokens_per_sec",
        "seconds",
    ] {
        assert!(json[key].as_f64().unwrap() > 0.0, "{key}: {json}");
    }
    // 20 words + <eos> + <unk>-free: a trained model beats uniform by far.
    assert!(json["valid_perplexity"].as_f64().unwrap() < 6.0, "{json}");
    assert!(stdout.contains("| epoch 1 | valid perplexity"), "{stdout}");
    model
}

#[test]
fn train_then_generate_and_score() {
    let dir = tmpdir("flow");
    let model = trained(&dir);
    let csv = std::fs::read_to_string(dir.join("m.safetensors.csv")).unwrap();
    assert!(csv.lines().count() > 3, "{csv}");
    let svg = std::fs::read_to_string(dir.join("m.safetensors.svg")).unwrap();
    assert!(
        svg.starts_with("<svg") || svg.starts_with("<?xml"),
        "{}",
        &svg[..40]
    );

    // generate: repeatable for a seed, and --skip is honoured.
    let gen = |seed: &str| {
        let out = rnnlm(&[
            "generate",
            "--model",
            s(&model),
            "--words",
            "30",
            "--seed",
            seed,
            "--skip",
            "cat,dog",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let a = gen("7");
    assert_eq!(a, gen("7"));
    assert_ne!(a, gen("8"));
    assert!(
        !a.split_whitespace().any(|w| w == "cat" || w == "dog"),
        "{a}"
    );
    let err = one_line_error(&rnnlm(&[
        "generate",
        "--model",
        s(&model),
        "--skip",
        "zebra",
    ]));
    assert!(err.contains("zebra"), "{err}");

    // score: one result per line; a grammatical line scores better than a shuffled one.
    let input = dir.join("score.txt");
    std::fs::write(&input, "the cat sees the ball\nball the sees cat the\n\n").unwrap();
    let out = rnnlm(&["score", "--model", s(&model), s(&input), "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0]["tokens"], 6, "5 words + <eos>");
    assert_eq!(rows[2]["tokens"], 1, "an empty line is just <eos>");
    assert!(rows[0]["log_prob"].as_f64().unwrap() > rows[1]["log_prob"].as_f64().unwrap());
    // Standard input and the plain format.
    let mut child = Command::new(env!("CARGO_BIN_EXE_rnnlm"))
        .args(["score", "--model", s(&model), "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"a dog likes a tree\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let plain = String::from_utf8(out.stdout).unwrap();
    let row = plain.lines().last().unwrap();
    assert_eq!(row.split('\t').nth(1), Some("6"), "{plain}");
    // An unknown word in a vocabulary without <unk>: one line naming the line number.
    std::fs::write(&input, "the cat sees the ball\nthe zebra sees\n").unwrap();
    let err = one_line_error(&rnnlm(&["score", "--model", s(&model), s(&input)]));
    assert!(err.contains(":2") && err.contains("zebra"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// The other cells, stacked, tied and with dropout, through the whole command line: they
/// learn, their checkpoints say what they are, and eval / score / generate read them.
#[test]
fn lstm_and_gru_stacks_train_and_serve() {
    let dir = tmpdir("cells");
    for (cell, extra) in [
        ("lstm", &["--layers", "2", "--tie", "--dropout", "0.1"][..]),
        ("gru", &["--layers", "2", "--dropout", "0.1"][..]),
    ] {
        let mut flags = vec!["--cell", cell];
        flags.extend_from_slice(extra);
        let name = format!("{cell}.safetensors");
        // Gated cells start slowly with the book's init: a larger step, as the book's ch06.
        let model = trained_with(&dir, "5", &flags, &name);
        let ck = rnnlm::checkpoint::load(&model).unwrap();
        let cfg = ck.params.config();
        assert_eq!(
            (cfg.cell.name(), cfg.layers, cfg.tied),
            (cell, 2, cell == "lstm")
        );
        for protocol in ["book", "full"] {
            let out = rnnlm(&[
                "eval",
                "--model",
                s(&model),
                "--data",
                s(&dir.join("test.txt")),
                "--protocol",
                protocol,
                "--batch",
                "2",
                "--time",
                "5",
                "--json",
            ]);
            let (_, json) = ok_json(&out);
            let ppl = json["perplexity"].as_f64().unwrap();
            assert!(ppl > 1.0 && ppl < 6.0, "{cell} {protocol}: {json}");
        }
        let input = dir.join("score.txt");
        std::fs::write(&input, "the cat sees the ball\nball the sees cat the\n").unwrap();
        let out = rnnlm(&["score", "--model", s(&model), s(&input), "--json"]);
        let rows: Vec<serde_json::Value> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert!(rows[0]["log_prob"].as_f64().unwrap() > rows[1]["log_prob"].as_f64().unwrap());
        let out = rnnlm(&[
            "generate",
            "--model",
            s(&model),
            "--words",
            "12",
            "--seed",
            "3",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8(out.stdout)
                .unwrap()
                .split_whitespace()
                .count()
                >= 10
        );
    }
    // A tied model needs D == H: a one-line error before any work.
    let err = one_line_error(&rnnlm(&[
        "train",
        "--train",
        s(&dir.join("train.txt")),
        "--valid",
        s(&dir.join("valid.txt")),
        "--test",
        s(&dir.join("test.txt")),
        "--cell",
        "lstm",
        "--tie",
        "--wordvec",
        "8",
        "--hidden",
        "16",
        "--save",
        s(&dir.join("x.safetensors")),
    ]));
    assert!(
        err.contains("tied") && err.contains("D = 8, H = 16"),
        "{err}"
    );
    assert!(!dir.join("x.safetensors").exists());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn train_input_errors() {
    let dir = tmpdir("errors");
    let m = dir.join("m.safetensors");
    let err = one_line_error(&rnnlm(&["train", "--save", s(&m)]));
    assert!(
        err.contains("--train") && err.contains("--data-dir"),
        "{err}"
    );
    let err = one_line_error(&rnnlm(&[
        "train",
        "--data-dir",
        s(&dir.join("nowhere")),
        "--save",
        s(&m),
    ]));
    assert!(err.contains("ptb.train.txt"), "{err}");
    std::fs::write(dir.join("t.txt"), text(50, 0)).unwrap();
    let t = dir.join("t.txt");
    let err = one_line_error(&rnnlm(&[
        "train",
        "--train",
        s(&t),
        "--valid",
        s(&t),
        "--test",
        s(&t),
        "--save",
        s(&dir.join("no/such/dir/m.safetensors")),
    ]));
    assert!(err.contains("no/such/dir"), "{err}");
    let err = one_line_error(&rnnlm(&[
        "train",
        "--train",
        s(&t),
        "--valid",
        s(&t),
        "--test",
        s(&t),
        "--save",
        s(&m),
    ]));
    assert!(err.contains("cannot fill one batch"), "{err}");
    let out = rnnlm(&["train", "--save", s(&m), "--lr", "fast"]);
    assert_eq!(out.status.code(), Some(2), "usage error");
    assert!(!m.exists(), "nothing saved by failed runs");
    std::fs::remove_dir_all(dir).unwrap();
}

/// Ctrl-C saves a resumable run; `--resume` finishes it with the same results as a run that
/// was never interrupted.
#[cfg(unix)]
#[test]
fn ctrl_c_then_resume_matches_an_uninterrupted_run() {
    use std::io::{BufRead, BufReader};
    let dir = tmpdir("resume");
    for (name, lines, salt) in [("train", 3000, 0), ("valid", 200, 1), ("test", 200, 2)] {
        std::fs::write(dir.join(format!("{name}.txt")), text(lines, salt)).unwrap();
    }
    let args = |save: &Path| -> Vec<String> {
        [
            "train",
            "--train",
            s(&dir.join("train.txt")),
            "--valid",
            s(&dir.join("valid.txt")),
            "--test",
            s(&dir.join("test.txt")),
            "--wordvec",
            "64",
            "--hidden",
            "64",
            "--batch",
            "4",
            "--time",
            "5",
            "--lr",
            "0.5",
            // Long enough (~1 s) that the interrupt surely lands mid-run, even on a busy
            // machine: it is sent during the first epoch.
            "--epochs",
            "40",
            "--eval-interval",
            "10",
            "--threads",
            "1",
            "--json",
            "--save",
            s(save),
        ]
        .iter()
        .map(|x| x.to_string())
        .collect()
    };
    let whole = rnnlm(
        &args(&dir.join("whole"))
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    let (_, whole) = ok_json(&whole);

    let cut = dir.join("cut");
    let mut child = Command::new(env!("CARGO_BIN_EXE_rnnlm"))
        .args(args(&cut))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // Interrupt once training is under way (a few progress lines in).
    for line in lines.by_ref() {
        if line.unwrap().contains("| iter 31 /") {
            break;
        }
    }
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{rest:?}");
    assert!(rest.last().unwrap().contains("--resume"), "{rest:?}");
    let resume = dir.join("cut.resume");
    assert!(resume.exists() && !cut.exists());

    let mut again = args(&cut);
    again.extend(["--resume".to_string(), s(&resume).to_string()]);
    let out = rnnlm(&again.iter().map(String::as_str).collect::<Vec<_>>());
    let (_, resumed) = ok_json(&out);
    for key in ["valid_perplexity", "test_perplexity", "steps", "tokens"] {
        assert_eq!(resumed[key], whole[key], "{key}");
    }
    let (a, b) = (
        rnnlm::checkpoint::load(&cut).unwrap(),
        rnnlm::checkpoint::load(&dir.join("whole")).unwrap(),
    );
    assert!(
        a.params == b.params,
        "the saved models have identical weights"
    );
    assert_eq!(a.vocab, b.vocab);
    std::fs::remove_dir_all(dir).unwrap();
}
