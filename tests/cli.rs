//! The `rnnlm` binary: output contract and one-line errors with exit status 2.

mod common;

use common::{ok_json, one_line_error, rnnlm, rnnlm_piped, tmpdir};
use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rnnlm::{checkpoint, Config, Params, Vocab};

fn model(dir: &Path, words: &[&str]) -> PathBuf {
    let cfg = Config::new(words.len(), 8, 8).unwrap();
    let p = Params::init_book(cfg, &mut rand_chacha::ChaCha8Rng::seed_from_u64(1));
    let v = Vocab::from_words(words.iter().map(|w| w.to_string()).collect()).unwrap();
    let path = dir.join("m.safetensors");
    checkpoint::save(&path, &p, Some(&v)).unwrap();
    path
}

#[test]
fn eval_prints_perplexity_and_json() {
    let dir = tmpdir("eval");
    let words = ["<eos>", "a", "b", "c", "<unk>"];
    let m = model(&dir, &words);
    let text = dir.join("t.txt");
    std::fs::write(&text, "a b c a b\nc c a zebra\n".repeat(20)).unwrap();
    let (m_s, t_s) = (m.to_str().unwrap(), text.to_str().unwrap());

    let out = rnnlm(&[
        "eval", "--model", m_s, "--data", t_s, "--batch", "2", "--time", "5", "--json",
    ]);
    let (_, json) = ok_json(&out);
    let ppl = json["perplexity"].as_f64().unwrap();
    assert_eq!(json["protocol"], "book");
    assert_eq!(json["unk_mapped"], 20, "each 'zebra' maps to <unk>");
    assert_eq!(json["tokens"], 220);

    // The same number as the library's book-protocol evaluation.
    let ckpt = checkpoint::load(&m).unwrap();
    let ids = rnnlm::data::corpus::read_with_vocab(&text, ckpt.vocab.as_ref().unwrap()).unwrap();
    let want = rnnlm::eval_perplexity(&ckpt.params, &ids, 2, 5).unwrap();
    assert!(
        (ppl - want.perplexity).abs() < 1e-9 * want.perplexity,
        "{ppl} vs {}",
        want.perplexity
    );
    assert_eq!(json["tokens_scored"], want.tokens);

    let out = rnnlm(&[
        "eval", "--model", m_s, "--data", t_s, "--batch", "2", "--time", "5",
    ]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.starts_with("perplexity ") && stdout.contains("protocol book"),
        "{stdout}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bad_input_gives_one_line_and_status_2() {
    let dir = tmpdir("bad");
    let m = model(&dir, &["<eos>", "a", "b"]);
    let m_s = m.to_str().unwrap();
    let text = dir.join("t.txt");

    std::fs::write(&text, "a b a\nb a b\na q b\n").unwrap();
    let err = one_line_error(&rnnlm(&[
        "eval",
        "--model",
        m_s,
        "--data",
        text.to_str().unwrap(),
    ]));
    assert!(err.contains("t.txt:3") && err.contains("\"q\""), "{err}");

    std::fs::write(&text, "a b\n").unwrap();
    let err = one_line_error(&rnnlm(&[
        "eval",
        "--model",
        m_s,
        "--data",
        text.to_str().unwrap(),
    ]));
    assert!(err.contains("cannot fill one batch"), "{err}");

    std::fs::write(&text, b"a b\n\xff\xfe a\n").unwrap();
    let err = one_line_error(&rnnlm(&[
        "eval",
        "--model",
        m_s,
        "--data",
        text.to_str().unwrap(),
    ]));
    assert!(err.contains("t.txt:2") && err.contains("UTF-8"), "{err}");

    let err = one_line_error(&rnnlm(&[
        "eval",
        "--model",
        "/no/such.safetensors",
        "--data",
        "x",
    ]));
    assert!(err.contains("/no/such.safetensors"), "{err}");

    let junk = dir.join("junk.safetensors");
    std::fs::write(&junk, "definitely not a checkpoint").unwrap();
    let err = one_line_error(&rnnlm(&[
        "eval",
        "--model",
        junk.to_str().unwrap(),
        "--data",
        "x",
    ]));
    assert!(
        err.contains("junk.safetensors") && err.contains("safetensors"),
        "{err}"
    );

    let out = rnnlm(&["eval", "--model", m_s]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "missing --data is a usage error"
    );
    let out = rnnlm(&["eval", "--model", m_s, "--data", "x", "--batch", "0"]);
    assert_eq!(out.status.code(), Some(2), "--batch 0 is a usage error");
    std::fs::remove_dir_all(dir).unwrap();
}

/// convert's OUT is checked before any work, as train's outputs are.
#[test]
fn convert_checks_its_output_first() {
    let dir = tmpdir("convert-out");
    let m = model(&dir, &["<eos>", "a", "b"]);
    let before = std::fs::read(&m).unwrap();
    let m_s = m.to_str().unwrap();
    let err = one_line_error(&rnnlm(&["convert", "--to", "torch", m_s, m_s]));
    assert!(
        err.contains("OUT") && err.contains("same file as IN"),
        "{err}"
    );
    assert_eq!(std::fs::read(&m).unwrap(), before, "the input is intact");
    let err = one_line_error(&rnnlm(&[
        "convert",
        "--to",
        "torch",
        m_s,
        dir.to_str().unwrap(),
    ]));
    assert!(err.contains("is a directory"), "{err}");
    let slash = format!("{}/", dir.join("t.safetensors").display());
    let err = one_line_error(&rnnlm(&["convert", "--to", "torch", m_s, &slash]));
    assert!(err.contains("names a folder"), "{err}");
    #[cfg(unix)]
    {
        let err = one_line_error(&rnnlm(&["convert", "--to", "torch", m_s, "/dev/null"]));
        assert!(err.contains("character device"), "{err}");
    }
    let out = dir.join("t.safetensors");
    let ok = rnnlm(&["convert", "--to", "torch", m_s, out.to_str().unwrap()]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(out.exists());
    std::fs::remove_dir_all(dir).unwrap();
}

/// score reads through the bounded line reader: a line over the limit, from a file or from
/// standard input, is one line naming the input and the line, after the lines before it.
#[test]
fn score_refuses_a_huge_line_naming_the_input_and_line() {
    use std::io::Write;
    let dir = tmpdir("score-huge");
    let m = model(&dir, &["<eos>", "a", "b"]);
    let m_s = m.to_str().unwrap();
    let mut text = b"a b\n".to_vec();
    text.resize(4 + rnnlm::data::lines::MAX_LINE_BYTES + 1, b'a');
    text.extend_from_slice(b"\nb a\n");
    let want = format!(
        ":2: line is longer than {} bytes",
        rnnlm::data::lines::MAX_LINE_BYTES
    );

    let input = dir.join("huge.txt");
    std::fs::write(&input, &text).unwrap();
    let out = rnnlm(&["score", "--model", m_s, input.to_str().unwrap()]);
    let err = one_line_error(&out);
    assert!(err.contains(&format!("huge.txt{want}")), "{err}");
    let scored = String::from_utf8(out.stdout).unwrap();
    assert_eq!(scored.lines().count(), 2, "the header and line 1: {scored}");

    let mut child = rnnlm_piped(&["score", "--model", m_s]);
    let mut stdin = child.stdin.take().unwrap();
    // The command stops reading at the limit: the rest may meet a closed pipe.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&text);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    let err = one_line_error(&out);
    assert!(err.contains(&format!("<stdin>{want}")), "{err}");

    let err = one_line_error(&rnnlm(&["score", "--model", m_s, dir.to_str().unwrap()]));
    assert!(err.contains("is a directory, not a text file"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// A model that gives a word probability 0 in f32 has no finite perplexity: eval says so and
/// fails instead of printing `inf` with status 0.
#[test]
fn eval_refuses_a_non_finite_perplexity() {
    let dir = tmpdir("eval-inf");
    let words = ["<eos>", "a", "b"];
    let cfg = Config::new(3, 8, 8).unwrap();
    let mut p = Params::init_book(cfg, &mut rand_chacha::ChaCha8Rng::seed_from_u64(1));
    p.affine_b_mut()[2] = -1e38; // "b" is never predicted
    let v = Vocab::from_words(words.iter().map(|w| w.to_string()).collect()).unwrap();
    let m = dir.join("m.safetensors");
    checkpoint::save(&m, &p, Some(&v)).unwrap();
    let text = dir.join("t.txt");
    std::fs::write(&text, "a b a b\n".repeat(100)).unwrap();
    let err = one_line_error(&rnnlm(&[
        "eval",
        "--model",
        m.to_str().unwrap(),
        "--data",
        text.to_str().unwrap(),
    ]));
    assert!(
        err.contains("t.txt") && err.contains("perplexity overflows"),
        "{err}"
    );
    // score: each log-probability is finite (about -1e38), but the line's perplexity is not.
    // Before, it printed `"perplexity": null` and exited 0.
    for json in [false, true] {
        let mut args = vec![
            "score",
            "--model",
            m.to_str().unwrap(),
            text.to_str().unwrap(),
        ];
        if json {
            args.push("--json");
        }
        let err = one_line_error(&rnnlm(&args));
        assert!(
            err.contains("t.txt:1:") && err.contains("perplexity overflows"),
            "{err}"
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// Finite weights whose products overflow: every hidden unit saturates at 1 (a bias of 100)
/// and the output column of "b" holds 3e38, so its logit is 8 x 3e38 = inf at every position.
/// Before, `score` printed NaN (JSON `null`) with status 0, `generate` kept drawing id 0 from
/// the NaN distribution, and `eval` blamed "probability 0". Now all three give one error, in
/// the same words, naming the first line and word where it happens.
#[test]
fn overflowing_logits_are_one_clear_error_everywhere() {
    let dir = tmpdir("logits-inf");
    let words = ["<eos>", "a", "b"];
    let cfg = Config::new(3, 8, 8).unwrap();
    let mut p = Params::init_book(cfg, &mut rand_chacha::ChaCha8Rng::seed_from_u64(1));
    p.tensor_mut("rnn.0.b").unwrap().fill(100.0);
    for row in p.affine_w_mut().unwrap().chunks_exact_mut(3) {
        row[2] = 3e38;
    }
    let v = Vocab::from_words(words.iter().map(|w| w.to_string()).collect()).unwrap();
    let m = dir.join("m.safetensors");
    checkpoint::save(&m, &p, Some(&v)).unwrap();
    let m_s = m.to_str().unwrap();
    let text = dir.join("t.txt");
    std::fs::write(&text, "a b a\nb a\n".repeat(60)).unwrap();
    let t_s = text.to_str().unwrap();
    let want = "the model's logits are not finite (inf or NaN): its weights overflow";

    // The first prediction (of "a", word 1 of line 1) already has infinite logits.
    for json in [false, true] {
        let mut args = vec!["score", "--model", m_s, t_s];
        if json {
            args.push("--json");
        }
        let out = rnnlm(&args);
        let err = one_line_error(&out);
        assert!(
            err.contains(&format!("t.txt:1: word 1 (\"a\"): {want}")),
            "{err}"
        );
        let printed = String::from_utf8(out.stdout).unwrap();
        assert!(
            !printed.contains("NaN") && !printed.contains("null"),
            "{printed}"
        );
    }
    // eval reads the text as one stream: its first target is the second token, "b".
    for protocol in ["book", "full", "torch"] {
        let err = one_line_error(&rnnlm(&[
            "eval",
            "--model",
            m_s,
            "--data",
            t_s,
            "--protocol",
            protocol,
        ]));
        assert!(
            err.contains(&format!("t.txt:1: word 2 (\"b\"): {want}")),
            "{protocol}: {err}"
        );
    }
    let out = rnnlm(&["generate", "--model", m_s, "--start", "a", "--words", "20"]);
    let err = one_line_error(&out);
    assert!(
        err.contains("m.safetensors") && err.contains(&format!("word 1 of the output: {want}")),
        "{err}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// `generate --start` prints the start words as the model reads them: before, an unknown word
/// was echoed as typed though the model saw `<unk>`. A note on stderr says so.
#[test]
fn generate_shows_unknown_start_words_as_unk() {
    let dir = tmpdir("gen-unk");
    let m = model(&dir, &["<eos>", "a", "b", "<unk>"]);
    let out = rnnlm(&[
        "generate",
        "--model",
        m.to_str().unwrap(),
        "--start",
        "a xyzzy b",
        "--words",
        "3",
        "--skip",
        "<eos>",
    ]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("a <unk> b "), "{text}");
    assert!(!text.contains("xyzzy"), "{text}");
    let note = String::from_utf8(out.stderr).unwrap();
    assert!(
        note.contains("\"xyzzy\" is not in the model's vocabulary: the model reads <unk>"),
        "{note}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// score on a pipe answers each line once it has arrived: a client that writes one line and
/// waits for its answer gets it, rather than both waiting forever (the command for a full chunk
/// of lines or the end of its input, the client for the answer). The answers are those of the
/// same lines read from a file.
#[test]
fn score_on_a_pipe_answers_a_line_before_the_next_arrives() {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::process::Child;
    use std::sync::mpsc;
    use std::time::Duration;
    let dir = tmpdir("score-interactive");
    let m = model(&dir, &["<eos>", "a", "b"]);
    let m_s = m.to_str().unwrap();
    let lines = ["a b a", "b b"];

    let mut child = rnnlm_piped(&["score", "--model", m_s]);
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    // Lines of stdout through a channel, so that a missing answer fails the test after a
    // generous wait instead of hanging it.
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let next = |child: &mut Child| match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(line) => line,
        Err(e) => {
            let _ = child.kill();
            panic!("no output line within 30 s ({e}): score is waiting for more input");
        }
    };
    let mut answers = vec![next(&mut child)];
    assert!(
        answers[0].starts_with("# log_prob"),
        "the header: {answers:?}"
    );
    for line in lines {
        // ChildStdin is unbuffered: the line is in the pipe once written.
        writeln!(stdin, "{line}").unwrap();
        answers.push(next(&mut child));
    }
    drop(stdin);
    let status = child.wait().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "{err}");
    reader.join().unwrap();
    assert_eq!(rx.try_iter().count(), 0, "nothing after the answers");

    let text = dir.join("t.txt");
    std::fs::write(&text, lines.join("\n")).unwrap();
    let out = rnnlm(&["score", "--model", m_s, text.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let from_file: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(answers, from_file);
    std::fs::remove_dir_all(dir).unwrap();
}

/// A vocabulary without `<eos>` cannot delimit sentences: eval refuses it with score's
/// message, naming the model (it used to read every line end as `<unk>` and print a
/// perplexity), and the library's reader refuses it naming the text.
#[test]
fn eval_and_score_refuse_a_vocabulary_without_eos_alike() {
    let dir = tmpdir("no-eos");
    let m = model(&dir, &["a", "b", "<unk>"]);
    let m_s = m.to_str().unwrap();
    let text = dir.join("t.txt");
    std::fs::write(&text, "a b a b\n".repeat(100)).unwrap();
    let t_s = text.to_str().unwrap();
    let eval = one_line_error(&rnnlm(&["eval", "--model", m_s, "--data", t_s]));
    let score = one_line_error(&rnnlm(&["score", "--model", m_s, t_s]));
    assert_eq!(eval, score);
    assert!(
        eval.contains(
            "m.safetensors: its vocabulary has no <eos> (the end of every sentence), so \
             sentences cannot be delimited"
        ),
        "{eval}"
    );
    let vocab = checkpoint::load(&m).unwrap().vocab.unwrap();
    let e = rnnlm::data::corpus::read_counting_unk(&text, &vocab).unwrap_err();
    assert!(
        matches!(&e, rnnlm::Error::NoEos { path, .. } if path == &text),
        "{e:?}"
    );
    assert!(e.to_string().starts_with(&format!("{t_s}: ")), "{e}");
    std::fs::remove_dir_all(dir).unwrap();
}
