//! Big corpora: `prepare` gives the ids and the vocabulary the text readers give, whatever the
//! number of ranges and threads; mapped ids files train and evaluate exactly as the text does.

mod common;

use std::path::{Path, PathBuf};

use common::tmpdir;
use rand::{RngExt, SeedableRng};
use rnnlm::data::corpus::{read_counting_unk, read_with_vocab};
use rnnlm::data::ids::IdsFile;
use rnnlm::data::prepare::{prepare, write_zipf_text, VocabSource};
use rnnlm::train::{TrainConfig, Trainer};
use rnnlm::{Error, Vocab, VocabOptions};

/// A text with repeated and rare words, Unicode white space (U+00A0, U+3000), `\r\n` ends,
/// blank lines, a literal `<eos>` and a last line without `\n`.
fn crafted_text(seed: u64, lines: usize) -> String {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let seps = [" ", "  ", "\t", "\u{a0}", "\u{3000}", " \u{0b} "];
    let mut text = String::new();
    for l in 0..lines {
        let n = rng.random_range(0..12);
        for k in 0..n {
            if k > 0 {
                text.push_str(seps[rng.random_range(0..seps.len())]);
            }
            let r: f64 = rng.random();
            let w = (1.0 / (r + 0.002)) as usize; // Zipf-like: many small ranks
            match w % 17 {
                0 => text.push_str(&format!("é{w}")),
                1 => text.push_str("<eos>"),
                2 => text.push_str(&format!("a-much-longer-word-than-fifteen-bytes-{}", w % 5)),
                _ => text.push_str(&format!("w{w}")),
            }
        }
        text.push_str(if l % 7 == 3 { "\r\n" } else { "\n" });
    }
    text.push_str("tail words without newline");
    text
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn in_pool<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

#[test]
fn prepare_gives_the_readers_ids_and_vocab_build_s_vocabulary() {
    let dir = tmpdir("prepare-rt");
    let text = write(&dir, "t.txt", &crafted_text(1, 3000));
    let out = dir.join("t.ids");
    for (max_vocab, min_count) in [
        (None, 1),
        (Some(50), 1),
        (None, 3),
        (Some(20), 2),
        (Some(2), 1),
    ] {
        let opts = VocabOptions {
            max_vocab,
            min_count,
            frequency_order: true,
        };
        let want_vocab = Vocab::build(&text, &opts).unwrap();
        let (want_ids, want_unk) = read_counting_unk(&text, &want_vocab).unwrap();
        let mut first: Option<Vec<u8>> = None;
        for parts in [1, 2, 3, 8] {
            let got = prepare(
                &text,
                &out,
                VocabSource::Build {
                    max_vocab,
                    min_count,
                },
                parts,
            )
            .unwrap();
            assert_eq!(got.vocab, want_vocab, "{max_vocab:?} {min_count} {parts}");
            assert_eq!(got.tokens, want_ids.len() as u64);
            assert_eq!(got.unk_mapped, want_unk as u64);
            let file = IdsFile::open(&out).unwrap();
            assert_eq!(&file.tokens()[..], &want_ids[..]);
            file.check_vocab(&want_vocab, "the built vocabulary")
                .unwrap();
            let bytes = std::fs::read(&out).unwrap();
            match &first {
                None => first = Some(bytes),
                Some(b) => assert!(*b == bytes, "{parts} parts changed the bytes"),
            }
        }
        if max_vocab.is_some() || min_count > 1 {
            assert!(want_unk > 0, "the limits cut words to <unk>");
            assert!(want_vocab.unk_id().is_some());
        }
    }

    // Encoding another text with a fixed vocabulary: read_with_vocab's ids, <unk> counted.
    let vocab = Vocab::build(
        &text,
        &VocabOptions {
            max_vocab: Some(40),
            ..VocabOptions::default()
        },
    )
    .unwrap();
    let other = write(&dir, "o.txt", &crafted_text(2, 500));
    let got = prepare(&other, &out, VocabSource::Fixed(&vocab), 3).unwrap();
    let (ids, unk) = read_counting_unk(&other, &vocab).unwrap();
    assert_eq!(&IdsFile::open(&out).unwrap().tokens()[..], &ids[..]);
    assert_eq!(got.unk_mapped, unk as u64);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_bytes_do_not_depend_on_the_thread_count() {
    let dir = tmpdir("prepare-threads");
    let text = dir.join("z.txt");
    write_zipf_text(&text, 300_000, 5_000, 5).unwrap();
    let mut outputs = Vec::new();
    for threads in [1, 2, 3, 4] {
        let out = dir.join(format!("z{threads}.ids"));
        let src = VocabSource::Build {
            max_vocab: Some(3000),
            min_count: 1,
        };
        in_pool(threads, || prepare(&text, &out, src, threads)).unwrap();
        outputs.push(std::fs::read(&out).unwrap());
    }
    assert!(outputs.windows(2).all(|w| w[0] == w[1]));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn errors_name_the_file_and_line_and_leave_no_output() {
    let dir = tmpdir("prepare-err");
    let out = dir.join("x.ids");
    std::fs::write(&out, b"old").unwrap();
    let build = VocabSource::Build {
        max_vocab: None,
        min_count: 1,
    };
    let mut bad = crafted_text(3, 300).into_bytes();
    let nl = bad.iter().filter(|&&b| b == b'\n').count();
    bad.extend_from_slice(b"\nok\nbad \xff here\n");
    let p = dir.join("bad.txt");
    std::fs::write(&p, &bad).unwrap();
    for parts in [1, 2, 5] {
        let e = prepare(&p, &out, build, parts).unwrap_err();
        let line = nl + 3; // the tail line, "ok", then the bad one
        assert!(
            matches!(e, Error::Parse { line: Some(l), .. } if l == line),
            "{e}"
        );
        assert!(e
            .to_string()
            .starts_with(&format!("{}:{line}: not valid UTF-8", p.display())));
    }
    // A line longer than the readers accept, as they refuse it.
    let long = write(&dir, "long.txt", &format!("a\n{}\n", "w ".repeat(600_000)));
    let e = prepare(&long, &out, build, 2).unwrap_err();
    let want = read_with_vocab(
        &long,
        &Vocab::from_words(vec!["<eos>".into(), "<unk>".into()]).unwrap(),
    );
    assert_eq!(e.to_string(), want.unwrap_err().to_string());
    // No words; a vocabulary without <unk> meets an unknown word (the first one's line).
    let empty = write(&dir, "empty.txt", "\n \n");
    assert!(prepare(&empty, &out, build, 2)
        .unwrap_err()
        .to_string()
        .contains("contains no words"));
    let v = Vocab::from_words(vec!["<eos>".into(), "a".into()]).unwrap();
    let t = write(&dir, "u.txt", "a a\na\na zz a\nyy\n");
    let e = prepare(&t, &out, VocabSource::Fixed(&v), 3).unwrap_err();
    assert_eq!(
        e.to_string(),
        read_with_vocab(&t, &v).unwrap_err().to_string()
    );
    assert!(matches!(e, Error::UnknownWord { line: 3, .. }), "{e}");
    // None of these touched the old output or left a temporary file.
    assert_eq!(std::fs::read(&out).unwrap(), b"old");
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("x.ids"))
        .collect();
    assert_eq!(names, ["x.ids"]);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn training_and_evaluating_from_an_ids_file_is_training_from_the_text() {
    let dir = tmpdir("prepare-train");
    let text = dir.join("z.txt");
    write_zipf_text(&text, 20_000, 300, 2).unwrap();
    let out = dir.join("z.ids");
    let src = VocabSource::Build {
        max_vocab: Some(200),
        min_count: 1,
    };
    let vocab = prepare(&text, &out, src, 2).unwrap().vocab;
    let ids = read_with_vocab(&text, &vocab).unwrap();
    let file = IdsFile::open(&out).unwrap();
    let cfg = TrainConfig {
        batch_size: 4,
        time_size: 7,
        lr: 1.0,
        epochs: 1,
        eval_interval: Some(1),
        eval_batch: 3,
        eval_time: 5,
        ..TrainConfig::default()
    };
    let model = rnnlm::Config::new(vocab.len(), 8, 8).unwrap();
    let run = |tokens: rnnlm::data::ids::Tokens<'_>| {
        let mut t = Trainer::new(model, cfg.clone()).unwrap();
        t.stop_after_steps(30);
        let valid = Some(tokens.as_slice().get(..2000).unwrap().into());
        t.fit_tokens(tokens, valid, None, |_| {}).unwrap();
        let losses: Vec<u64> = t
            .log()
            .iter()
            .filter_map(|p| p.train_ppl)
            .map(f64::to_bits)
            .collect();
        (losses, t.model().params().as_slice().to_vec())
    };
    let (from_text, w_text) = run((&ids).into());
    let (from_ids, w_ids) = run(file.tokens());
    assert_eq!(from_text.len(), 30);
    assert_eq!(from_text, from_ids, "bit-identical losses");
    assert!(w_text
        .iter()
        .zip(&w_ids)
        .all(|(a, b)| a.to_bits() == b.to_bits()));

    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let params = rnnlm::Params::init_book(model, &mut rng);
    for protocol in [
        rnnlm::Protocol::Book,
        rnnlm::Protocol::Full,
        rnnlm::Protocol::Torch,
    ] {
        let a = rnnlm::evaluate(&params, &ids, protocol, 5, 9).unwrap();
        let b = rnnlm::evaluate(&params, file.tokens(), protocol, 5, 9).unwrap();
        assert_eq!(a.mean_loss.to_bits(), b.mean_loss.to_bits(), "{protocol:?}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}
