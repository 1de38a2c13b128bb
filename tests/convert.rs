//! PyTorch word_language_model interop against fixtures made by PyTorch itself
//! (`tests/fixtures/torch` and, for decoders that are an `nn.AdaptiveLogSoftmaxWithLoss`,
//! `tests/fixtures/torch_adaptive`; see their READMEs): conversion, the two evaluation
//! protocols, per-position log-probabilities, round trips and the `rnnlm convert` command.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use common::{ok_json, one_line_error, rnnlm, tmpdir};
use rnnlm::convert::{from_torch, load_torch, save_torch, to_torch, Tensors};
use rnnlm::data::corpus::read_dictionary;
use rnnlm::{checkpoint, eval_full, eval_torch, Params, Rnnlm, Softmax, Vocab};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

const FILES: [&str; 5] = [
    "lstm1.safetensors",
    "lstm2_tied.safetensors",
    "gru2.safetensors",
    "gru1_tied.safetensors",
    "rnn2.safetensors",
];

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torch")
}

fn corpus() -> PathBuf {
    dir().join("corpus.txt")
}

/// The `expected.json` of a fixture folder.
fn expected_in(dir: &Path) -> Value {
    let text = std::fs::read_to_string(dir.join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn expected() -> Value {
    expected_in(&dir())
}

/// The fixture's entry in expected.json.
fn entry(file: &str) -> Value {
    expected()["models"][file].clone()
}

/// Loads a fixture, giving the training text only when the file has no vocab metadata.
fn load(file: &str) -> (Params, Vocab) {
    let with_meta = entry(file)["vocab_metadata"].as_bool().unwrap();
    let text = corpus();
    load_torch(&dir().join(file), (!with_meta).then_some(text.as_path()))
        .unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// The corpus as word_language_model's `Corpus.tokenize` numbers it.
fn ids(vocab: &Vocab) -> Vec<u32> {
    let ids = rnnlm::data::corpus::read_with_vocab(&corpus(), vocab).unwrap();
    assert_eq!(
        ids.len() as u64,
        expected()["corpus"]["tokens"].as_u64().unwrap()
    );
    ids
}

fn rel(got: f64, want: f64) -> f64 {
    (got / want - 1.0).abs()
}

fn bits(p: &Params) -> Vec<u32> {
    p.as_slice().iter().map(|x| x.to_bits()).collect()
}

/// `cfg` is the architecture of the fixture's entry `e` in expected.json (untied when the
/// entry does not say).
fn assert_architecture(file: &str, e: &Value, cfg: &rnnlm::Config) {
    let cell = match e["cell"].as_str().unwrap() {
        "LSTM" => "lstm",
        "GRU" => "gru",
        "RNN_TANH" => "rnn",
        other => panic!("{other}"),
    };
    assert_eq!(cfg.cell.name(), cell, "{file}");
    let n = |k: &str| e[k].as_u64().unwrap() as usize;
    assert_eq!(cfg.layers, n("layers"), "{file}");
    assert_eq!(cfg.tied, e["tied"].as_bool().unwrap_or(false), "{file}");
    assert_eq!(cfg.vocab_size, n("V"), "{file}");
    assert_eq!(cfg.wordvec_size, n("ninp"), "{file}");
    assert_eq!(cfg.hidden_size, n("nhid"), "{file}");
}

#[test]
fn fixtures_convert_to_the_expected_architecture() {
    let words = read_dictionary(&corpus()).unwrap();
    for file in FILES {
        let (params, vocab) = load(file);
        assert_architecture(file, &entry(file), params.config());
        // Metadata and the rebuilt Dictionary give the same words.
        assert_eq!(vocab.words(), words.as_slice(), "{file}");
    }
}

#[test]
fn full_protocol_matches_pytorch() {
    let ex = expected();
    let (n, t) = (
        ex["full_protocol"]["n"].as_u64().unwrap() as usize,
        ex["full_protocol"]["t"].as_u64().unwrap() as usize,
    );
    for file in FILES {
        let (params, vocab) = load(file);
        let want = entry(file)["full_ppl"].as_f64().unwrap();
        let got = eval_full(&params, &ids(&vocab), n, t).unwrap();
        let err = rel(got.perplexity, want);
        println!(
            "{file}: full ppl {:.6} vs torch {want:.6}, rel err {err:.2e}",
            got.perplexity
        );
        assert!(
            err < 1e-4,
            "{file}: eval_full {} vs PyTorch {want}: relative error {err:.3e}",
            got.perplexity
        );
    }
}

#[test]
fn torch_protocol_matches_word_language_model_evaluate() {
    let ex = expected();
    let (bsz, bptt) = (
        ex["wlm_protocol"]["eval_batch_size"].as_u64().unwrap() as usize,
        ex["wlm_protocol"]["bptt"].as_u64().unwrap() as usize,
    );
    for file in FILES {
        let (params, vocab) = load(file);
        let ids = ids(&vocab);
        let want = entry(file)["wlm_ppl"].as_f64().unwrap();
        let got = eval_torch(&params, &ids, bsz, bptt).unwrap();
        assert_eq!(got.tokens, bsz * (ids.len() / bsz - 1));
        let err = rel(got.perplexity, want);
        println!(
            "{file}: torch ppl {:.6} vs wlm {want:.6}, rel err {err:.2e}",
            got.perplexity
        );
        assert!(
            err < 1e-4,
            "{file}: eval_torch {} vs word_language_model {want}: relative error {err:.3e}",
            got.perplexity
        );
    }
}

#[test]
fn per_position_log_probs_match_pytorch() {
    for file in FILES {
        let (params, vocab) = load(file);
        let ids = ids(&vocab);
        let want: Vec<f64> = entry(file)["logprobs_first_40"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(want.len(), 40);
        let model = Rnnlm::new(params, vocab).unwrap();
        let v = model.config().vocab_size;
        let mut state = model.zero_state(1);
        let mut logits = vec![0.0f32; v];
        let mut max_err = 0.0f64;
        let mut total = 0.0f64;
        for (k, &w) in want.iter().enumerate() {
            model.step(&mut state, &ids[k..k + 1], &mut logits).unwrap();
            let m = logits
                .iter()
                .fold(f64::NEG_INFINITY, |a, &x| a.max(x as f64));
            let lse = m + logits
                .iter()
                .map(|&x| (x as f64 - m).exp())
                .sum::<f64>()
                .ln();
            let lp = logits[ids[k + 1] as usize] as f64 - lse;
            total += lp;
            max_err = max_err.max((lp - w).abs());
        }
        println!("{file}: log-probs of the first 40 targets, max abs err {max_err:.2e}");
        assert!(max_err < 1e-4, "{file}: max |ours - torch| = {max_err:.3e}");
        // score gives the same total.
        let score = model.score(&ids[..41]).unwrap();
        assert!((score.log_prob - total).abs() < 1e-3, "{file}");
    }
}

/// Every tensor of a safetensors file, as (shape, raw bytes), and its metadata.
type Raw = (
    HashMap<String, (Dtype, Vec<usize>, Vec<u8>)>,
    HashMap<String, String>,
);

fn read_raw(path: &Path) -> Raw {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let tensors = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, (v.dtype(), v.shape().to_vec(), v.data().to_vec())))
        .collect();
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    (tensors, header.metadata().clone().unwrap_or_default())
}

fn write_raw(path: &Path, (tensors, meta): &Raw) {
    let views = tensors.iter().map(|(n, (dtype, shape, data))| {
        (
            n.clone(),
            TensorView::new(*dtype, shape.clone(), data).unwrap(),
        )
    });
    let bytes = safetensors::serialize(views, Some(meta.clone())).unwrap();
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn save_torch_then_load_torch_is_exact() {
    let dir = tmpdir("convert-roundtrip");
    for file in FILES {
        let (params, vocab) = load(file);
        let out = dir.join(file);
        save_torch(&out, &params, Some(&vocab)).unwrap();
        let (back, back_vocab) = load_torch(&out, None).unwrap();
        assert_eq!(back.config(), params.config(), "{file}");
        assert_eq!(bits(&back), bits(&params), "{file}");
        assert_eq!(back_vocab, vocab, "{file}");
        // Without a vocabulary: no metadata, the training text then gives it.
        save_torch(&out, &params, None).unwrap();
        assert!(load_torch(&out, None).is_err());
        let (back, back_vocab) = load_torch(&out, Some(&corpus())).unwrap();
        assert_eq!((bits(&back), back_vocab), (bits(&params), vocab), "{file}");
        // A GRU keeps both biases, so its file comes back byte for byte (RNN and LSTM biases
        // are summed on import and written whole to bias_ih).
        if file.starts_with("gru") {
            let (orig, _) = read_raw(&self::dir().join(file));
            let (ours, _) = read_raw(&out);
            assert_eq!(orig, ours, "{file}");
        }
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// Runs `rnnlm convert DIRECTION torch IN OUT EXTRA...`, which must succeed with one line;
/// returns it.
fn convert_ok(direction: &str, input: &Path, out: &Path, extra: &[&str]) -> String {
    let (i, o) = (input.to_str().unwrap(), out.to_str().unwrap());
    let mut args = vec!["convert", direction, "torch", i, o];
    args.extend(extra);
    let o = rnnlm(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8(o.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    stdout
}

/// `rnnlm eval --protocol full --batch 4 --time 7` of `model` over the corpus is `want`
/// (PyTorch's `full_ppl`) within `tol`, relative.
fn cli_full_ppl_matches(file: &str, model: &Path, want: f64, tol: f64) {
    let o = rnnlm(&[
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--data",
        corpus().to_str().unwrap(),
        "--protocol",
        "full",
        "--batch",
        "4",
        "--time",
        "7",
        "--json",
    ]);
    let (_, json) = ok_json(&o);
    let got = json["perplexity"].as_f64().unwrap();
    let err = rel(got, want);
    println!("{file} via the CLI: full ppl {got:.6}, rel err {err:.2e}");
    assert!(err < tol, "{file}: {got} vs {want}: rel err {err:.3e}");
}

#[test]
fn cli_convert_from_torch_then_eval_and_back() {
    let dir = tmpdir("convert-cli");
    let s = |p: &Path| p.to_str().unwrap().to_owned();
    let file = "lstm2_tied.safetensors"; // no vocab metadata
    let input = self::dir().join(file);
    let out = dir.join("ours.safetensors");

    // Without --vocab-text: one line that says what to do, nothing written.
    let err = one_line_error(&rnnlm(&[
        "convert",
        "--from",
        "torch",
        &s(&input),
        &s(&out),
    ]));
    assert!(err.contains("--vocab-text") && err.contains(file), "{err}");
    assert!(!out.exists());

    let stdout = convert_ok("--from", &input, &out, &["--vocab-text", &s(&corpus())]);
    assert!(
        stdout.contains("lstm, 2 layers, V=41, D=16, H=16, tied"),
        "{stdout}"
    );
    let ck = checkpoint::load(&out).unwrap();
    let (params, vocab) = load(file);
    assert_eq!(bits(&ck.params), bits(&params));
    assert_eq!(ck.vocab.as_ref(), Some(&vocab));

    // eval --protocol torch gives word_language_model's own number.
    let e = entry(file);
    let o = rnnlm(&[
        "eval",
        "--model",
        &s(&out),
        "--data",
        &s(&corpus()),
        "--protocol",
        "torch",
        "--batch",
        "10",
        "--time",
        "35",
        "--json",
    ]);
    let (_, json) = ok_json(&o);
    assert_eq!(json["protocol"], "torch");
    let (got, want) = (
        json["perplexity"].as_f64().unwrap(),
        e["wlm_ppl"].as_f64().unwrap(),
    );
    println!(
        "{file} via the CLI: torch ppl {got:.6}, rel err {:.2e}",
        rel(got, want)
    );
    assert!(
        rel(got, want) < 1e-4,
        "{got} vs {want}: rel err {:.3e}",
        rel(got, want)
    );
    // And --protocol full with 4 x 7 gives the full_ppl PyTorch computed.
    cli_full_ppl_matches(file, &out, e["full_ppl"].as_f64().unwrap(), 1e-4);

    // --to torch, then back: the same weights and words (now carried as metadata).
    let torch = dir.join("torch.safetensors");
    let stdout = convert_ok("--to", &out, &torch, &[]);
    assert!(
        stdout.contains("tied") && stdout.contains("41-word vocabulary"),
        "{stdout}"
    );
    let again = dir.join("again.safetensors");
    convert_ok("--from", &torch, &again, &[]);
    let ck2 = checkpoint::load(&again).unwrap();
    assert_eq!(bits(&ck2.params), bits(&ck.params));
    assert_eq!(ck2.vocab, ck.vocab);
    // The file PyTorch would load holds exactly word_language_model's names.
    let (tensors, meta) = read_raw(&torch);
    let mut names: Vec<&str> = tensors.keys().map(String::as_str).collect();
    names.sort();
    let mut want: Vec<String> = read_raw(&input).0.into_keys().collect();
    want.sort();
    assert_eq!(names, want);
    assert!(
        meta["vocab"].starts_with("[\"elbo\",\"mirt\","),
        "{}",
        meta["vocab"]
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn cli_convert_usage_errors() {
    let dir = tmpdir("convert-usage");
    let s = |p: &Path| p.to_str().unwrap().to_owned();
    let input = s(&self::dir().join("lstm1.safetensors"));
    let out = dir.join("out.safetensors");
    let o = s(&out);
    let (i, o) = (input.as_str(), o.as_str());
    for args in [
        // No direction, both directions, an unknown format, --vocab-text with --to, no OUT.
        vec!["convert", i, o],
        vec!["convert", "--from", "torch", "--to", "torch", i, o],
        vec!["convert", "--from", "numpy", i, o],
        vec!["convert", "--to", "torch", "--vocab-text", i, i, o],
        vec!["convert", "--from", "torch", i],
    ] {
        let o = rnnlm(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(!out.exists(), "{args:?}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn cli_convert_bad_inputs_give_one_line_and_write_nothing() {
    let dir = tmpdir("convert-bad");
    let s = |p: &Path| p.to_str().unwrap().to_owned();
    let out = dir.join("out.safetensors");
    let fixture = self::dir().join("lstm1.safetensors");
    let fail = |args: &[&str], must: &[&str]| {
        let err = one_line_error(&rnnlm(args));
        for m in must {
            assert!(err.contains(m), "{args:?}: {err:?} lacks {m:?}");
        }
        assert!(!out.exists(), "{args:?} created OUT");
        // No temporary file left behind either.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 4, "{args:?}");
    };

    // Inputs the failures below read (4 files in the folder; OUT never appears).
    let missing = dir.join("no-such.safetensors");
    let junk = dir.join("junk.safetensors");
    std::fs::write(&junk, "definitely not safetensors").unwrap();
    let extra = dir.join("extra.safetensors");
    let mut raw = read_raw(&fixture);
    let wih = raw.0["rnn.weight_ih_l0"].clone();
    raw.0.insert("rnn.weight_ih_l0_reverse".into(), wih);
    write_raw(&extra, &raw);
    let f64s = dir.join("f64.safetensors");
    let mut raw = read_raw(&fixture);
    let v = raw.0["decoder.bias"].1.clone();
    let data: Vec<u8> = (0..v[0]).flat_map(|i| (i as f64).to_le_bytes()).collect();
    raw.0.insert("decoder.bias".into(), (Dtype::F64, v, data));
    write_raw(&f64s, &raw);
    let text = dir.join("short.txt");
    std::fs::write(&text, "just three words\n").unwrap();

    let m = s(&missing);
    fail(
        &["convert", "--from", "torch", &m, &s(&out)],
        &["no-such.safetensors"],
    );
    fail(
        &["convert", "--to", "torch", &m, &s(&out)],
        &["no-such.safetensors"],
    );
    let j = s(&junk);
    fail(
        &["convert", "--from", "torch", &j, &s(&out)],
        &["junk.safetensors", "safetensors file"],
    );
    fail(
        &["convert", "--to", "torch", &j, &s(&out)],
        &["junk.safetensors", "safetensors file"],
    );
    fail(
        &["convert", "--from", "torch", &s(&extra), &s(&out)],
        &[
            "extra.safetensors",
            "\"rnn.weight_ih_l0_reverse\"",
            "unexpected",
        ],
    );
    fail(
        &["convert", "--from", "torch", &s(&f64s), &s(&out)],
        &["f64.safetensors", "\"decoder.bias\"", "F64", "expected F32"],
    );
    // A vocabulary of the wrong length names both numbers.
    let gru = s(&self::dir().join("gru1_tied.safetensors"));
    fail(
        &[
            "convert",
            "--from",
            "torch",
            &gru,
            &s(&out),
            "--vocab-text",
            &s(&text),
        ],
        &["gru1_tied.safetensors", "short.txt", "4 words", "V = 41"],
    );
    // A torch file given to --to (and ours to --from) fails without writing.
    fail(
        &["convert", "--to", "torch", &s(&fixture), &s(&out)],
        &["lstm1.safetensors"],
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn load_torch_reads_through_the_checkpoint_reader() {
    let dir = tmpdir("convert-reader");
    let fixture = self::dir().join("gru2.safetensors");
    // A directory and a truncated file are refused by the header-first reader.
    let e = load_torch(&dir, None).unwrap_err().to_string();
    assert!(e.contains("is a directory"), "{e}");
    let bytes = std::fs::read(&fixture).unwrap();
    let cut = dir.join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() - 4]).unwrap();
    let e = load_torch(&cut, None).unwrap_err().to_string();
    assert!(
        e.contains("cut.safetensors") && e.contains("(truncated)"),
        "{e}"
    );
    // A NaN in a PyTorch tensor is named with its index.
    let nan = dir.join("nan.safetensors");
    let mut raw = read_raw(&fixture);
    raw.0.get_mut("rnn.weight_hh_l1").unwrap().2[12..16].copy_from_slice(&f32::NAN.to_le_bytes());
    write_raw(&nan, &raw);
    let e = load_torch(&nan, None).unwrap_err().to_string();
    assert!(
        e.contains("\"rnn.weight_hh_l1\" holds NaN at flat index 3"),
        "{e}"
    );
    // save_torch's files carry the checksum, which load_torch verifies.
    let (params, vocab) = load("gru2.safetensors");
    let out = dir.join("out.safetensors");
    save_torch(&out, &params, Some(&vocab)).unwrap();
    let (_, meta) = read_raw(&out);
    assert!(meta["checksum"].starts_with("sha256:"), "{meta:?}");
    let mut bytes = std::fs::read(&out).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x02;
    std::fs::write(&out, &bytes).unwrap();
    let e = load_torch(&out, None).unwrap_err().to_string();
    assert!(e.contains("checksum mismatch"), "{e}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// Runs `rnnlm convert DIRECTION torch IN OUT`, which must fail with one line and write no
/// OUT; returns the line.
fn convert_fails(direction: &str, input: &Path, out: &Path) -> String {
    let (i, o) = (input.to_str().unwrap(), out.to_str().unwrap());
    let err = one_line_error(&rnnlm(&["convert", direction, "torch", i, o]));
    assert!(!out.exists(), "{err}");
    err
}

/// An RNN's or LSTM's two biases become one, their f32 sum: biases whose sum overflows are
/// refused naming the file and both PyTorch tensors, with the index and the addends (they used
/// to be refused only when the checkpoint was written, under our name `lstm.0.b` and without
/// the file). A GRU keeps both, so the same values convert.
#[test]
fn a_bias_sum_that_overflows_names_the_file_and_both_pytorch_biases() {
    let dir = tmpdir("convert-overflow");
    let out = dir.join("out.safetensors");
    let big = 3e38f32.to_le_bytes(); // finite; 3e38 + 3e38 is not
    for (fixture, layer) in [("lstm1.safetensors", 0), ("rnn2.safetensors", 1)] {
        let crafted = dir.join(format!("overflow-{fixture}"));
        let mut raw = read_raw(&self::dir().join(fixture));
        for b in ["bias_ih", "bias_hh"] {
            let t = raw.0.get_mut(&format!("rnn.{b}_l{layer}")).unwrap();
            t.2[4 * 5..4 * 6].copy_from_slice(&big);
        }
        write_raw(&crafted, &raw);
        let (bih, bhh) = (
            format!("rnn.bias_ih_l{layer}"),
            format!("rnn.bias_hh_l{layer}"),
        );
        let e = load_torch(&crafted, None).unwrap_err();
        assert!(
            matches!(&e, rnnlm::Error::TensorSum { path: Some(p), a, b, index: 5, .. }
                if p == &crafted && a == &bih && b == &bhh),
            "{fixture}: {e:?}"
        );
        let err = convert_fails("--from", &crafted, &out);
        for must in [
            crafted.file_name().unwrap().to_str().unwrap(),
            &format!("\"{bih}\" + \"{bhh}\""),
            "overflows f32 at index 5: 3e38 + 3e38",
        ] {
            assert!(err.contains(must), "{fixture}: {err:?} lacks {must:?}");
        }
        assert!(!err.contains(".b\""), "{fixture}: our tensor name: {err}");
    }
    let gru = dir.join("overflow-gru2.safetensors");
    let mut raw = read_raw(&self::dir().join("gru2.safetensors"));
    for b in ["rnn.bias_ih_l0", "rnn.bias_hh_l0"] {
        raw.0.get_mut(b).unwrap().2[..4].copy_from_slice(&big);
    }
    write_raw(&gru, &raw);
    let (params, _) = load_torch(&gru, None).unwrap();
    assert!(params.as_slice().contains(&3e38));
    std::fs::remove_dir_all(dir).unwrap();
}

/// A tensor with no place in the model is named, whether it sits next to the proper ones
/// (`_l00` beside `_l0`, a layer far past the last) or stands in for one (`_l00` instead of
/// `_l0`, which used to be reported only as `_l0` missing); a tensor that is only missing is
/// still reported as missing.
#[test]
fn a_stray_tensor_is_named_not_reported_as_another_missing() {
    let dir = tmpdir("convert-stray");
    let out = dir.join("out.safetensors");
    let fixture = read_raw(&self::dir().join("lstm1.safetensors"));
    let craft = |name: &str, f: &dyn Fn(&mut Raw)| {
        let path = dir.join(name);
        let mut raw = fixture.clone();
        f(&mut raw);
        write_raw(&path, &raw);
        let e = load_torch(&path, None).unwrap_err();
        (path, e)
    };
    // (file, the stray, whether it replaces rnn.weight_ih_l0 rather than sits beside it)
    for (file, stray, replaces) in [
        ("beside.safetensors", "rnn.weight_ih_l00", false),
        ("renamed.safetensors", "rnn.weight_ih_l00", true),
        ("far.safetensors", "rnn.weight_ih_l4294967296", false),
    ] {
        let (path, e) = craft(file, &|r| {
            let t = if replaces {
                r.0.remove("rnn.weight_ih_l0").unwrap()
            } else {
                r.0["rnn.weight_ih_l0"].clone()
            };
            r.0.insert(stray.into(), t);
        });
        assert!(
            matches!(&e, rnnlm::Error::TensorUnexpected { path: Some(p), name, found, .. }
                if p == &path && name == stray && found == &[64, 16]),
            "{file}: {e:?}"
        );
        let err = convert_fails("--from", &path, &out);
        let want =
            format!("{file}: tensor \"{stray}\": unexpected in the tensors of a 1-layer lstm");
        assert!(err.contains(&want), "{err}");
        if replaces {
            assert!(
                err.contains("where \"rnn.weight_ih_l0\" is missing"),
                "{err}"
            );
        } else {
            assert!(!err.contains("missing"), "{err}");
        }
    }
    // Only missing: missing, as before.
    let (path, e) = craft("missing.safetensors", &|r| {
        r.0.remove("rnn.bias_hh_l0");
    });
    assert!(
        matches!(&e, rnnlm::Error::TensorMissing { path: Some(p), name, .. }
            if p == &path && name == "rnn.bias_hh_l0"),
        "{e:?}"
    );
    let err = convert_fails("--from", &path, &out);
    assert!(
        err.contains(
            "missing.safetensors: tensor \"rnn.bias_hh_l0\": missing (expected shape [64])"
        ),
        "{err}"
    );
    // A lone tensor of the next layer makes that layer's others missing.
    let (_, e) = craft("lone.safetensors", &|r| {
        let t = r.0["rnn.bias_ih_l0"].clone();
        r.0.insert("rnn.bias_ih_l1".into(), t);
    });
    assert!(
        matches!(&e, rnnlm::Error::TensorMissing { name, .. } if name == "rnn.weight_ih_l1"),
        "{e:?}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// Every line ends with `<eos>`, so a vocabulary without it cannot read or score text:
/// convert refuses it in both directions (it used to write the file, which score then refused
/// and eval read with every line end as `<unk>`), naming the file and the vocabulary.
#[test]
fn a_vocabulary_without_eos_is_refused_in_both_directions() {
    let dir = tmpdir("convert-no-eos");
    let out = dir.join("out.safetensors");
    let no_eos = |v: &Vocab| -> Vec<String> {
        v.words()
            .iter()
            .map(|w| {
                if w == "<eos>" {
                    "EOS".into()
                } else {
                    w.clone()
                }
            })
            .collect()
    };
    let want = "has no <eos> (the end of every sentence), so sentences cannot be delimited";

    // --from torch: 'vocab' metadata without <eos>.
    let torch = dir.join("no-eos.safetensors");
    let (params, vocab) = load("gru2.safetensors");
    let mut raw = read_raw(&self::dir().join("gru2.safetensors"));
    raw.1.insert(
        "vocab".into(),
        serde_json::to_string(&no_eos(&vocab)).unwrap(),
    );
    write_raw(&torch, &raw);
    let e = load_torch(&torch, None).unwrap_err();
    assert!(
        matches!(&e, rnnlm::Error::NoEos { path, what } if path == &torch && what == "its 'vocab' metadata"),
        "{e:?}"
    );
    let err = convert_fails("--from", &torch, &out);
    assert!(
        err.contains(&format!("no-eos.safetensors: its 'vocab' metadata {want}")),
        "{err}"
    );

    // --to torch: an rnnlm checkpoint whose vocabulary has no <eos>.
    let ours = dir.join("ours.safetensors");
    let words = Vocab::from_words(no_eos(&vocab)).unwrap();
    checkpoint::save(&ours, &params, Some(&words)).unwrap();
    let err = convert_fails("--to", &ours, &out);
    assert!(
        err.contains(&format!("ours.safetensors: its vocabulary {want}")),
        "{err}"
    );
    // And the library's writer, which would make a file load_torch refuses.
    let e = save_torch(&out, &params, Some(&words)).unwrap_err();
    assert!(matches!(e, rnnlm::Error::NoEos { .. }), "{e:?}");
    assert!(!out.exists());
    std::fs::remove_dir_all(dir).unwrap();
}

// ---- adaptive heads: PyTorch's AdaptiveLogSoftmaxWithLoss (tests/fixtures/torch_adaptive) ----

/// The adaptive fixtures: (file, the prefix its criterion is saved under).
const ADAPTIVE: [(&str, &str); 3] = [
    ("lstm1_adaptive.safetensors", "decoder."),
    ("gru2_adaptive_bias.safetensors", "crit."),
    ("rnn1_adaptive_div4.safetensors", "out.adaptive."),
];

fn adaptive_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torch_adaptive")
}

fn adaptive_expected() -> Value {
    expected_in(&adaptive_dir())
}

fn adaptive_entry(file: &str) -> Value {
    adaptive_expected()["models"][file].clone()
}

/// Loads an adaptive fixture (its words are in its metadata).
fn load_adaptive(file: &str) -> (Params, Vocab) {
    load_torch(&adaptive_dir().join(file), None).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn sizes(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn adaptive_fixtures_convert_to_the_expected_head() {
    let ex = adaptive_expected();
    let words: Vec<String> = serde_json::from_value(ex["vocab"].clone()).unwrap();
    for (file, prefix) in ADAPTIVE {
        let e = adaptive_entry(file);
        assert_eq!(e["prefix"], prefix, "{file}");
        let (params, vocab) = load_adaptive(file);
        let cfg = params.config();
        assert_architecture(file, &e, cfg);
        assert!(!cfg.tied, "{file}");
        let Softmax::Adaptive {
            cutoffs,
            projections,
            head_bias,
        } = cfg.softmax
        else {
            panic!("{file}: {:?}", cfg.softmax)
        };
        assert_eq!(cutoffs.as_slice(), sizes(&e["cutoffs"]), "{file}");
        let proj: Vec<u32> = e["layout"]["clusters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["proj"].as_u64().unwrap() as u32)
            .collect();
        assert_eq!(projections.as_slice(), proj, "{file}");
        assert_eq!(head_bias, e["head_bias"].as_bool().unwrap(), "{file}");
        // The widths read from the shapes are PyTorch's H // div^(i+1).
        let cut: Vec<usize> = cutoffs.as_slice().iter().map(|&c| c as usize).collect();
        let div = e["div_value"].as_f64().unwrap();
        assert_eq!(
            Softmax::adaptive(&cut, div, head_bias, cfg.hidden_size).unwrap(),
            cfg.softmax,
            "{file}"
        );
        // The frequency-ordered vocabulary of the metadata.
        assert_eq!(vocab.words(), words.as_slice(), "{file}");
        assert_eq!(vocab.words()[0], "<eos>");
    }
}

/// Per position, `Rnnlm::score` and `Rnnlm::step` give PyTorch's `log_prob` of the target, and
/// each row of `step` is a distribution.
#[test]
fn adaptive_log_probs_match_pytorch() {
    for (file, _) in ADAPTIVE {
        let e = adaptive_entry(file);
        let (params, vocab) = load_adaptive(file);
        let ids = ids(&vocab);
        let want = floats(&e["logprobs_first_40"]);
        assert_eq!(want.len(), 40);
        let model = Rnnlm::new(params, vocab).unwrap();
        let v = model.config().vocab_size;
        let mut state = model.zero_state(1);
        let mut row = vec![0.0f32; v];
        let (mut max_score, mut max_step, mut max_sum) = (0.0f64, 0.0f64, 0.0f64);
        for (k, &w) in want.iter().enumerate() {
            // score's terms: the log-probability of target k is what its prefix adds.
            let lp = model.score(&ids[..k + 2]).unwrap().log_prob
                - model.score(&ids[..k + 1]).unwrap().log_prob;
            max_score = max_score.max((lp - w).abs());
            model.step(&mut state, &ids[k..k + 1], &mut row).unwrap();
            let m = row.iter().fold(f64::NEG_INFINITY, |a, &x| a.max(x as f64));
            let lse = m + row.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln();
            max_sum = max_sum.max(lse.abs());
            max_step = max_step.max((row[ids[k + 1] as usize] as f64 - w).abs());
        }
        println!(
            "{file}: log-probs of the first 40 targets, max abs err {max_score:.2e} (score), \
             {max_step:.2e} (step); max |logsumexp| of a row {max_sum:.2e}"
        );
        assert!(
            max_score < 1e-5,
            "{file}: score: max |ours - torch| = {max_score:.3e}"
        );
        assert!(
            max_step < 1e-5,
            "{file}: step: max |ours - torch| = {max_step:.3e}"
        );
        assert!(max_sum < 1e-5, "{file}: a row's Σp is off by {max_sum:.3e}");
    }
}

#[test]
fn adaptive_perplexities_match_pytorch() {
    let ex = adaptive_expected();
    let n = |p: &str, k: &str| ex[p][k].as_u64().unwrap() as usize;
    for (file, _) in ADAPTIVE {
        let e = adaptive_entry(file);
        let (params, vocab) = load_adaptive(file);
        let ids = ids(&vocab);
        let full = eval_full(
            &params,
            &ids,
            n("full_protocol", "n"),
            n("full_protocol", "t"),
        )
        .unwrap()
        .perplexity;
        let want = e["full_ppl"].as_f64().unwrap();
        let (bsz, bptt) = (
            n("wlm_protocol", "eval_batch_size"),
            n("wlm_protocol", "bptt"),
        );
        let wlm = eval_torch(&params, &ids, bsz, bptt).unwrap().perplexity;
        let want_wlm = e["wlm_ppl"].as_f64().unwrap();
        println!(
            "{file}: full ppl {full:.6} vs torch {want:.6} (rel err {:.2e}); torch protocol \
             {wlm:.6} vs word_language_model {want_wlm:.6} (rel err {:.2e})",
            rel(full, want),
            rel(wlm, want_wlm)
        );
        assert!(rel(full, want) < 1e-5, "{file}: {full} vs {want}");
        assert!(rel(wlm, want_wlm) < 1e-5, "{file}: {wlm} vs {want_wlm}");
    }
}

/// The tensors of a raw file, as f32.
fn tensors_of(raw: &Raw) -> Tensors {
    raw.0
        .iter()
        .map(|(name, (dtype, shape, data))| {
            assert_eq!(*dtype, Dtype::F32, "{name}");
            let x = data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            (name.clone(), (shape.clone(), x))
        })
        .collect()
}

/// `name` with an adaptive head's prefix `from` replaced by `decoder.`.
fn renamed(name: &str, from: &str) -> String {
    match name.strip_prefix(from) {
        Some(rest) if rest.starts_with("head.") || rest.starts_with("tail.") => {
            format!("decoder.{rest}")
        }
        _ => name.to_string(),
    }
}

/// torch -> ours -> torch gives the file's tensors bit for bit under `decoder.` (RNN and LSTM
/// biases as their sum, all in `bias_ih`), and ours -> torch -> ours the same parameters.
#[test]
fn adaptive_round_trips_are_exact() {
    let dir = tmpdir("convert-adaptive-roundtrip");
    for (file, prefix) in ADAPTIVE {
        let orig = read_raw(&adaptive_dir().join(file));
        let (params, vocab) = load_adaptive(file);
        let out = dir.join(file);
        save_torch(&out, &params, Some(&vocab)).unwrap();
        let back = read_raw(&out);
        let want: HashMap<String, _> = orig
            .0
            .iter()
            .map(|(n, t)| (renamed(n, prefix), t.clone()))
            .collect();
        let mut names: Vec<&String> = back.0.keys().collect();
        let mut want_names: Vec<&String> = want.keys().collect();
        names.sort();
        want_names.sort();
        assert_eq!(names, want_names, "{file}");
        let gru = file.starts_with("gru");
        for (name, t) in &want {
            if gru || !name.starts_with("rnn.bias_") {
                assert_eq!(&back.0[name], t, "{file}: {name}");
            }
        }
        if gru {
            // Both biases kept: the whole file is the same but for the prefix.
            assert_eq!(back.0, want, "{file}");
        } else {
            let (b, w) = (tensors_of(&back), tensors_of(&orig));
            for l in 0..params.config().layers {
                let sum = |t: &Tensors| -> Vec<u32> {
                    let (a, c) = (
                        &t[&format!("rnn.bias_ih_l{l}")].1,
                        &t[&format!("rnn.bias_hh_l{l}")].1,
                    );
                    a.iter().zip(c).map(|(a, c)| (a + c).to_bits()).collect()
                };
                assert_eq!(sum(&b), sum(&w), "{file} layer {l}");
            }
        }
        let words = |raw: &Raw| serde_json::from_str::<Vec<String>>(&raw.1["vocab"]).unwrap();
        assert_eq!(words(&back), words(&orig), "{file}");
        // ours -> torch -> ours.
        let (again, again_vocab) = load_torch(&out, None).unwrap();
        assert_eq!(again.config(), params.config(), "{file}");
        assert_eq!(bits(&again), bits(&params), "{file}");
        assert_eq!(again_vocab, vocab, "{file}");
        // The same through the pure mapping, whatever the prefix.
        let (m, ours) = from_torch(&tensors_of(&orig)).unwrap();
        assert_eq!(m.softmax, params.config().softmax, "{file}");
        let torch = to_torch(&m, &ours).unwrap();
        assert_eq!(from_torch(&torch).unwrap(), (m, ours), "{file}");
        let names: Vec<String> = orig.0.keys().map(|n| renamed(n, prefix)).collect();
        assert!(names.iter().all(|n| torch.contains_key(n)), "{file}");
        assert_eq!(torch.len(), names.len(), "{file}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// A crafted copy of the `lstm1_adaptive` fixture (`decoder.`, cutoffs 8, 20; V = 41): the
/// error load_torch gives and the one line `rnnlm convert --from torch` prints (nothing
/// written).
fn adaptive_fails(dir: &Path, file: &str, f: &dyn Fn(&mut Raw)) -> (rnnlm::Error, String) {
    let path = dir.join(file);
    let mut raw = read_raw(&adaptive_dir().join("lstm1_adaptive.safetensors"));
    f(&mut raw);
    write_raw(&path, &raw);
    let e = load_torch(&path, None).unwrap_err();
    let line = convert_fails("--from", &path, &dir.join("out.safetensors"));
    assert!(line.contains(file), "{line}");
    assert_eq!(line.trim_end(), format!("rnnlm: error: {e}"), "{file}");
    (e, line)
}

/// The tensor a [`rnnlm::Error::TensorMissing`] names.
fn missing(e: &rnnlm::Error) -> Option<&str> {
    match e {
        rnnlm::Error::TensorMissing { name, .. } => Some(name),
        _ => None,
    }
}

/// An all-zero F32 tensor of shape `shape`, raw.
fn zeros(shape: &[usize]) -> (Dtype, Vec<usize>, Vec<u8>) {
    let n: usize = shape.iter().product();
    (Dtype::F32, shape.to_vec(), vec![0; 4 * n])
}

#[test]
fn adaptive_errors_name_the_tensors() {
    let dir = tmpdir("convert-adaptive-errors");
    // A missing tail: named, with the shape the last cluster's words must have.
    let (e, line) = adaptive_fails(&dir, "missing.safetensors", &|r| {
        r.0.remove("decoder.tail.1.1.weight");
    });
    assert!(
        matches!(&e, rnnlm::Error::TensorMissing { path: Some(_), name, expected }
            if name == "decoder.tail.1.1.weight" && expected.starts_with("[21, 4]")),
        "{e:?}"
    );
    assert!(
        line.contains("tensor \"decoder.tail.1.1.weight\": missing"),
        "{line}"
    );
    // The clusters cover 42 words, encoder.weight 41.
    let (_, line) = adaptive_fails(&dir, "v.safetensors", &|r| {
        r.0.insert("decoder.tail.1.1.weight".into(), zeros(&[22, 4]));
    });
    for must in [
        "decoder.head.weight [10, 16]",
        "decoder.tail.0.1.weight [12, 8]",
        "decoder.tail.1.1.weight [22, 4]",
        "cover 42 words",
        "encoder.weight [41, 16] has V = 41",
    ] {
        assert!(line.contains(must), "{line:?} lacks {must:?}");
    }
    // A shortlist one word too long: the head's rows are named.
    let (_, line) = adaptive_fails(&dir, "head.safetensors", &|r| {
        r.0.insert("decoder.head.weight".into(), zeros(&[11, 16]));
    });
    assert!(
        line.contains("decoder.head.weight [11, 16] (a shortlist of 9 words and 2 cluster")
            && line.contains("cover 42 words"),
        "{line}"
    );
    // Two prefixes with a head.
    let (_, line) = adaptive_fails(&dir, "two.safetensors", &|r| {
        let h = r.0["decoder.head.weight"].clone();
        r.0.insert("crit.head.weight".into(), h);
    });
    assert!(
        line.contains("2 prefixes hold an AdaptiveLogSoftmaxWithLoss")
            && line.contains("\"crit.\" (\"crit.head.weight\" [10, 16])")
            && line.contains("\"decoder.\" (\"decoder.head.weight\" [10, 16])"),
        "{line}"
    );
    // A stray tail past the last, a tail under another prefix, a Linear decoder beside the
    // head: each is unexpected, by name.
    for (file, stray, shape) in [
        ("stray.safetensors", "decoder.tail.5.0.weight", &[2, 16][..]),
        ("other.safetensors", "crit.tail.0.0.weight", &[8, 16]),
        ("linear.safetensors", "decoder.weight", &[41, 16]),
        ("tail01.safetensors", "decoder.tail.01.0.weight", &[8, 16]),
    ] {
        let (e, line) = adaptive_fails(&dir, file, &|r| {
            r.0.insert(stray.into(), zeros(shape));
        });
        assert!(
            matches!(&e, rnnlm::Error::TensorUnexpected { name, found, .. }
                if name == stray && found == shape),
            "{file}: {e:?}"
        );
        assert!(
            line.contains(&format!(
                "tensor \"{stray}\": unexpected in the tensors of a 1-layer lstm model \
                 (word_language_model RNNModel) with an AdaptiveLogSoftmaxWithLoss of 2 \
                 clusters under \"decoder.\""
            )),
            "{line}"
        );
    }
    // A gap: tail 1 renamed to tail 2 is unexpected, with tail 1 missing.
    let (e, line) = adaptive_fails(&dir, "gap.safetensors", &|r| {
        for j in 0..2 {
            let t = r.0.remove(&format!("decoder.tail.1.{j}.weight")).unwrap();
            r.0.insert(format!("decoder.tail.2.{j}.weight"), t);
        }
    });
    assert!(
        matches!(&e, rnnlm::Error::TensorUnexpected { name, .. } if name == "decoder.tail.2.0.weight"),
        "{e:?}"
    );
    assert!(line.contains("1 cluster under"), "{line}");
    // The cluster count comes from the tails: with tail 1 gone, the head has one logit too
    // many for one cluster (9 shortlist words + 12 cover 21 of 41).
    let (_, line) = adaptive_fails(&dir, "one.safetensors", &|r| {
        r.0.retain(|n, _| !n.starts_with("decoder.tail.1."));
    });
    assert!(line.contains("cover 21 words"), "{line}");
    // A projection of the wrong width, a tail's words of the wrong width.
    let (e, _) = adaptive_fails(&dir, "proj.safetensors", &|r| {
        r.0.insert("decoder.tail.0.0.weight".into(), zeros(&[8, 15]));
    });
    assert!(
        matches!(&e, rnnlm::Error::TensorShape { name, .. } if name == "decoder.tail.0.0.weight"),
        "{e:?}"
    );
    let (e, _) = adaptive_fails(&dir, "words.safetensors", &|r| {
        r.0.insert("decoder.tail.0.1.weight".into(), zeros(&[12, 7]));
    });
    assert!(
        matches!(&e, rnnlm::Error::TensorShape { name, expected, .. }
            if name == "decoder.tail.0.1.weight" && expected.starts_with("[n_0, 8]")),
        "{e:?}"
    );
    // A bias of the wrong length; a head without tails.
    let (e, _) = adaptive_fails(&dir, "bias.safetensors", &|r| {
        r.0.insert("decoder.head.bias".into(), zeros(&[9]));
    });
    assert_eq!(
        e.to_string(),
        format!(
            "{}: tensor \"decoder.head.bias\": expected shape [10], found [9]",
            dir.join("bias.safetensors").display()
        )
    );
    let (e, _) = adaptive_fails(&dir, "tails.safetensors", &|r| {
        r.0.retain(|n, _| !n.starts_with("decoder.tail."));
    });
    assert_eq!(missing(&e), Some("decoder.tail.0.0.weight"), "{e:?}");
    // No head.weight, but the rest of a head and no Linear decoder: the weight is missing.
    let (e, _) = adaptive_fails(&dir, "noweight.safetensors", &|r| {
        r.0.remove("decoder.head.weight");
    });
    assert_eq!(missing(&e), Some("decoder.head.weight"), "{e:?}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// `convert --to torch` still refuses a class head, by name; an adaptive head converts.
#[test]
fn save_torch_refuses_a_class_head() {
    let dir = tmpdir("convert-class");
    let out = dir.join("out.safetensors");
    let cfg = rnnlm::Config::new(6, 4, 4)
        .unwrap()
        .with_softmax(Softmax::Class { classes: 2 });
    let params = Params::zeros(cfg);
    let e = save_torch(&out, &params, None).unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid convert --to torch: the model's output layer is a class softmax, which \
         PyTorch's word_language_model (a full softmax) has no form for"
    );
    assert!(!out.exists());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn cli_convert_adaptive_then_score_eval_and_back() {
    let dir = tmpdir("convert-adaptive-cli");
    let s = |p: &Path| p.to_str().unwrap().to_owned();
    let file = "gru2_adaptive_bias.safetensors";
    let e = adaptive_entry(file);
    let input = adaptive_dir().join(file);
    let out = dir.join("ours.safetensors");
    let stdout = convert_ok("--from", &input, &out, &[]);
    assert!(
        stdout.contains(
            "gru, 2 layers, V=41, D=16, H=16, untied, adaptive softmax cutoffs=6,14,30 \
             projections=8,4,2 head bias"
        ),
        "{stdout}"
    );
    let (params, vocab) = load_adaptive(file);
    let ck = checkpoint::load(&out).unwrap();
    assert_eq!(ck.params.config(), params.config());
    assert_eq!(bits(&ck.params), bits(&params));
    assert_eq!(ck.vocab.as_ref(), Some(&vocab));

    // eval --protocol full with 4 x 7 gives the full_ppl PyTorch computed.
    cli_full_ppl_matches(file, &out, e["full_ppl"].as_f64().unwrap(), 1e-5);

    // score: each line's log-probability from <eos>, as the library's.
    let lines: Vec<&str> = std::fs::read_to_string(corpus())
        .unwrap()
        .leak()
        .lines()
        .take(5)
        .collect();
    let text = dir.join("five.txt");
    std::fs::write(&text, lines.join("\n") + "\n").unwrap();
    let o = rnnlm(&["score", "--model", &s(&out), &s(&text), "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let model = Rnnlm::new(params, vocab.clone()).unwrap();
    let eos = vocab.id("<eos>").unwrap();
    let stdout = String::from_utf8(o.stdout).unwrap();
    let scored: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(scored.len(), lines.len(), "{stdout}");
    for (line, json) in lines.iter().zip(&scored) {
        let mut ids = vec![eos];
        ids.extend(line.split_whitespace().map(|w| vocab.id(w).unwrap()));
        ids.push(eos);
        let want = model.score(&ids).unwrap();
        assert_eq!(json["tokens"].as_u64().unwrap() as usize, want.tokens);
        let got = json["log_prob"].as_f64().unwrap();
        assert!((got - want.log_prob).abs() < 1e-9, "{got} vs {want:?}");
    }

    // --to torch, then back: the fixture's tensors under decoder., the same parameters.
    let torch = dir.join("torch.safetensors");
    let stdout = convert_ok("--to", &out, &torch, &[]);
    assert!(stdout.contains("adaptive softmax"), "{stdout}");
    let (back, _) = read_raw(&torch);
    let (orig, _) = read_raw(&input);
    let orig: HashMap<String, _> = orig
        .into_iter()
        .map(|(n, t)| (renamed(&n, "crit."), t))
        .collect();
    assert_eq!(back, orig);
    let again = dir.join("again.safetensors");
    convert_ok("--from", &torch, &again, &[]);
    let ck2 = checkpoint::load(&again).unwrap();
    assert_eq!(bits(&ck2.params), bits(&ck.params));
    assert_eq!(ck2.vocab, ck.vocab);
    std::fs::remove_dir_all(dir).unwrap();
}
