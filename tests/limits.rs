//! Limits: text that is not one sentence per line, and sizes beyond the machine's memory, are
//! errors naming the problem (file and line; the bytes needed and available), never a panic,
//! an abort or a hang.

mod common;

use std::path::Path;

use common::{one_line_error, rnnlm, tmpdir};
use rand::SeedableRng;
use rnnlm::bench::{run, BenchSpec, Mode};
use rnnlm::data::corpus::{for_each_token, read_building_vocab, read_dictionary, read_with_vocab};
use rnnlm::data::lines::MAX_LINE_BYTES;
use rnnlm::model::config::Cell;
use rnnlm::{available_bytes, format_bytes};
use rnnlm::{
    checkpoint, eval_full, eval_perplexity, Config, Error, Params, SimpleRnnlm, Vocab,
    VocabOptions, Workspace,
};

/// The line of a parse error, and its message.
fn parse_error(e: &Error) -> (Option<usize>, String) {
    match e {
        Error::Parse { line, .. } => (*line, e.to_string()),
        other => panic!("expected a parse error, got {other}"),
    }
}

/// Every text reader of the library on `path`.
fn all_readers(path: &Path) -> Vec<(&'static str, Error)> {
    let vocab = Vocab::from_words(vec!["<eos>".into(), "<unk>".into()]).unwrap();
    vec![
        (
            "for_each_token",
            for_each_token(path, |_, _| Ok(())).unwrap_err(),
        ),
        (
            "read_building_vocab",
            read_building_vocab(path, &mut Vocab::new()).unwrap_err(),
        ),
        (
            "read_with_vocab",
            read_with_vocab(path, &vocab).unwrap_err(),
        ),
        (
            "Vocab::build",
            Vocab::build(path, &VocabOptions::default()).unwrap_err(),
        ),
        ("read_dictionary", read_dictionary(path).unwrap_err()),
    ]
}

#[test]
fn a_file_without_newlines_is_refused_at_line_1() {
    let dir = tmpdir("limits-long");
    let path = dir.join("one-line.txt");
    std::fs::write(&path, "word ".repeat((3 << 20) / 5)).unwrap(); // 3 MiB, no newline
    let start = std::time::Instant::now();
    for (reader, e) in all_readers(&path) {
        let (line, msg) = parse_error(&e);
        assert_eq!(line, Some(1), "{reader}: {msg}");
        assert!(
            msg.starts_with(&format!("{}:1: line is longer than", path.display())),
            "{msg}"
        );
        assert!(msg.contains(&MAX_LINE_BYTES.to_string()), "{msg}");
    }
    assert!(start.elapsed().as_secs() < 10, "took {:?}", start.elapsed());

    // Line 5, after four ordinary ones; PTB loading reads through the same reader.
    let mut text = "a b\n".repeat(4);
    text.push_str(&"w".repeat(MAX_LINE_BYTES + 10));
    text.push_str("\nc\n");
    std::fs::write(dir.join("ptb.train.txt"), &text).unwrap();
    for (reader, e) in all_readers(&dir.join("ptb.train.txt")) {
        assert_eq!(parse_error(&e).0, Some(5), "{reader}: {e}");
    }
    let e = rnnlm::Ptb::load(&dir).unwrap_err();
    assert_eq!(parse_error(&e).0, Some(5), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn dev_zero_is_an_error_not_a_hang() {
    let zero = Path::new("/dev/zero");
    if !zero.exists() {
        eprintln!("SKIPPED: no /dev/zero");
        return;
    }
    for (reader, e) in all_readers(zero) {
        let (line, msg) = parse_error(&e);
        assert_eq!(line, Some(1), "{reader}: {msg}");
        assert!(msg.starts_with("/dev/zero:1: line is longer than"), "{msg}");
    }
}

#[test]
fn crlf_final_lines_and_bad_utf8_read_as_before() {
    let dir = tmpdir("limits-text");
    let crlf = dir.join("crlf.txt");
    std::fs::write(&crlf, "a b\r\nc\r\n\r\nd").unwrap(); // CRLF, a blank line, no final newline
    let mut vocab = Vocab::new();
    let ids = read_building_vocab(&crlf, &mut vocab).unwrap();
    assert_eq!(vocab.words(), ["a", "b", "<eos>", "c", "d"]);
    assert_eq!(ids, [0, 1, 2, 3, 2, 2, 4, 2]);
    assert_eq!(read_dictionary(&crlf).unwrap(), vocab.words());

    let bad = dir.join("bad.txt");
    std::fs::write(&bad, b"fine\nfine too\n\nbad \xe9 latin-1\n").unwrap();
    for (reader, e) in all_readers(&bad) {
        let (line, msg) = parse_error(&e);
        assert_eq!(line, Some(4), "{reader}: {msg}");
        assert!(msg.contains("not valid UTF-8"), "{msg}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_directory_is_refused_with_its_name() {
    let dir = tmpdir("limits-dir");
    for (reader, e) in all_readers(&dir) {
        assert!(matches!(e, Error::Io { .. }), "{reader}: {e}");
        let msg = e.to_string();
        assert!(
            msg.starts_with(&dir.display().to_string()),
            "{reader}: {msg}"
        );
        assert!(
            msg.contains("is a directory, not a text file"),
            "{reader}: {msg}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `Some(bytes)` when the memory check can refuse `bytes` on this machine.
fn refusable(bytes: usize) -> bool {
    match available_bytes() {
        Some(a) => (bytes as u64) > a,
        None => {
            eprintln!("SKIPPED: the available memory is unknown on this platform");
            false
        }
    }
}

#[test]
fn a_workspace_beyond_memory_is_refused_with_the_figures() {
    // Logits [N*T, V] of 2^38 floats: 1 TiB, and then some.
    let cfg = Config::new(1 << 16, 16, 16).unwrap();
    let (n, t) = (1, 1 << 22);
    let bytes = Workspace::bytes_for(&cfg, n, t, false).unwrap();
    assert!(bytes > 1 << 40);
    if !refusable(bytes) {
        return;
    }
    let e = Workspace::new(cfg, n, t, false).unwrap_err();
    assert!(matches!(e, Error::Memory { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains(&format!("needs {}", format_bytes(bytes as u64))),
        "{msg}"
    );
    assert!(msg.contains("needs 1.0 TiB"), "{msg}");
    assert!(msg.contains("N=1, T=4194304, V=65536"), "{msg}");
    assert!(msg.contains("available"), "{msg}");

    // The library entry points that build one go through the same check.
    let e = SimpleRnnlm::new(cfg, n, t, 1).unwrap_err();
    assert!(matches!(e, Error::Memory { .. }), "{e}");
    let params = Params::init_book(cfg, &mut rand_chacha::ChaCha8Rng::seed_from_u64(1));
    let corpus: Vec<u32> = (0..t as u32 + 1).map(|i| i % 1000).collect();
    let e = eval_perplexity(&params, &corpus, n, t).unwrap_err();
    assert!(matches!(e, Error::Memory { .. }), "{e}");
}

#[test]
fn parameters_beyond_memory_are_refused_before_any_work() {
    // `rnnlm bench --hidden 16777216`: Wh alone is 2^48 floats.
    let cfg = Config::new(10_000, 100, 1 << 24).unwrap();
    let bytes = Params::bytes_for(&cfg).unwrap();
    if !refusable(bytes) {
        return;
    }
    for e in [
        Params::try_zeros(cfg).unwrap_err(),
        SimpleRnnlm::new(cfg, 20, 35, 1).unwrap_err(),
    ] {
        assert!(matches!(e, Error::Memory { .. }), "{e}");
        assert!(e.to_string().contains("PiB"), "{e}");
    }
    for mode in [Mode::Train, Mode::Infer] {
        let spec = BenchSpec {
            cfg,
            n: 20,
            t: 35,
            mode,
            warmup: std::time::Duration::ZERO,
            windows: 1,
            window: std::time::Duration::ZERO,
            dropout: 0.0,
            output_strips: false,
            zipf: false,
        };
        let e = run(&spec).unwrap_err();
        assert!(matches!(e, Error::Memory { .. }), "{e}");
    }
}

#[test]
fn eval_full_and_torch_cut_an_overlong_chunk_to_the_text() {
    let cfg = Config::new(50, 8, 8).unwrap().with_cell(Cell::Lstm);
    let params = Params::init_book(cfg, &mut rand_chacha::ChaCha8Rng::seed_from_u64(3));
    let corpus: Vec<u32> = (0..300u32).map(|i| (i * 7 + i / 3) % 50).collect();
    let huge = 100_000_000;
    for n in [1, 3] {
        let sensible = eval_full(&params, &corpus, n, 35).unwrap();
        let long = eval_full(&params, &corpus, n, huge).unwrap();
        assert_eq!((long.tokens, long.batches), (299, 1));
        let rel = (long.mean_loss - sensible.mean_loss).abs() / sensible.mean_loss;
        assert!(rel < 1e-9, "{long:?} vs {sensible:?}");
        // One chunk of exactly the stream length is the same computation.
        let seg = 299usize.div_ceil(n);
        assert_eq!(eval_full(&params, &corpus, n, seg).unwrap(), long);

        let sensible = rnnlm::eval_torch(&params, &corpus, n, 35).unwrap();
        let long = rnnlm::eval_torch(&params, &corpus, n, huge).unwrap();
        assert_eq!(long.tokens, sensible.tokens);
        let rel = (long.mean_loss - sensible.mean_loss).abs() / sensible.mean_loss;
        assert!(rel < 1e-9, "{long:?} vs {sensible:?}");
    }
}

#[test]
fn cli_reports_limits_in_one_line() {
    let dir = tmpdir("limits-cli");
    let words = ["<eos>", "a", "b", "c", "<unk>"];
    let cfg = Config::new(words.len(), 8, 8).unwrap();
    let p = Params::init_book(cfg, &mut rand_chacha::ChaCha8Rng::seed_from_u64(1));
    let v = Vocab::from_words(words.iter().map(|w| w.to_string()).collect()).unwrap();
    let model = dir.join("m.safetensors");
    checkpoint::save(&model, &p, Some(&v)).unwrap();
    let text = dir.join("t.txt");
    std::fs::write(&text, "a b c\nb c a\n").unwrap();
    let (m, t) = (model.to_str().unwrap(), text.to_str().unwrap());

    // A chunk far longer than the text: cut to it, a result rather than an abort.
    let out = rnnlm(&[
        "eval",
        "--model",
        m,
        "--data",
        t,
        "--protocol",
        "full",
        "--batch",
        "1",
        "--time",
        "100000000",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A text without newlines.
    let long = dir.join("long.txt");
    std::fs::write(&long, "a ".repeat(MAX_LINE_BYTES)).unwrap();
    let out = rnnlm(&["eval", "--model", m, "--data", long.to_str().unwrap()]);
    let err = one_line_error(&out);
    assert!(err.contains("long.txt:1: line is longer than"), "{err}");

    // Parameters no machine has: refused before any work, with the figure.
    if refusable(Params::bytes_for(&Config::new(10_000, 100, 1 << 24).unwrap()).unwrap()) {
        let out = rnnlm(&["bench", "--hidden", "16777216", "--windows", "1"]);
        let err = one_line_error(&out);
        assert!(
            err.contains("not enough memory") && err.contains("PiB"),
            "{err}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
