//! Checkpoint round trip, foreign-writer interop, and bad files returning clear errors.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rnnlm::checkpoint::{self, from_bytes, to_bytes};
use rnnlm::{Config, Error, Params, Vocab};
use safetensors::tensor::TensorView;
use safetensors::Dtype;

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rnnlm-ckpt-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn sample() -> (Params, Vocab) {
    let cfg = Config::new(6, 3, 4).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let p = Params::init_book(cfg, &mut rng);
    let words = ["<eos>", "the", "<unk>", "cat", "sat", "mat"];
    (
        p,
        Vocab::from_words(words.map(String::from).to_vec()).unwrap(),
    )
}

fn msg(r: rnnlm::Result<rnnlm::Checkpoint>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e @ Error::Checkpoint { .. }) => e.to_string(),
        Err(e) => panic!("expected a checkpoint error, got {e:?}"),
    }
}

/// Serialises named tensors the way any safetensors writer (numpy, PyTorch) does.
fn write_tensors(tensors: &[(&str, Vec<usize>, Vec<f32>)], meta: &[(&str, &str)]) -> Vec<u8> {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, d)| d.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views = tensors.iter().zip(&bytes).map(|((name, shape, _), b)| {
        (
            *name,
            TensorView::new(Dtype::F32, shape.clone(), b).unwrap(),
        )
    });
    let meta: HashMap<String, String> = meta
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    safetensors::serialize(views, Some(meta)).unwrap()
}

/// The tensors under the names of version 0.1 files (`rnn.Wx`, no layer index).
fn book_tensors(p: &Params) -> Vec<(&'static str, Vec<usize>, Vec<f32>)> {
    p.tensors()
        .into_iter()
        .map(|(n, s, t)| {
            let legacy: &'static str = n.replace("rnn.0.", "rnn.").leak();
            (legacy, s, t.to_vec())
        })
        .collect()
}

/// The `config` entry of version 0.1 files (no `layers`, no `tied`).
const CONFIG: &str = r#"{"cell":"rnn","vocab_size":6,"wordvec_size":3,"hidden_size":4}"#;
/// The `config` entry this version writes.
const CONFIG_NOW: &str =
    r#"{"cell":"rnn","vocab_size":6,"wordvec_size":3,"hidden_size":4,"layers":1,"tied":false}"#;

#[test]
fn round_trip_is_bit_exact() {
    let (p, v) = sample();
    let dir = tmpdir("roundtrip");
    let path = dir.join("m.safetensors");
    checkpoint::save(&path, &p, Some(&v)).unwrap();
    let c = checkpoint::load(&path).unwrap();
    assert_eq!(c.params, p);
    assert_eq!(c.vocab.as_ref(), Some(&v));
    // Saving again over it works and leaves no temporary files behind.
    checkpoint::save(&path, &p, None).unwrap();
    assert!(checkpoint::load(&path).unwrap().vocab.is_none());
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_same_model_always_gives_the_same_bytes() {
    let (p, v) = sample();
    let first = to_bytes(&p, Some(&v)).unwrap();
    for _ in 0..5 {
        assert!(to_bytes(&p, Some(&v)).unwrap() == first);
    }
    // The canonical header is still a valid safetensors header.
    assert_eq!(from_bytes(&first, Path::new("x")).unwrap().params, p);
    let n = u64::from_le_bytes(first[..8].try_into().unwrap()) as usize;
    assert_eq!(n % 8, 0, "header padded to 8 bytes");
}

#[test]
fn a_file_written_by_another_safetensors_writer_loads() {
    // Tensors in another order, metadata as numpy's `save_file(..., metadata={...})` writes it.
    let (p, _) = sample();
    let mut t = book_tensors(&p);
    t.reverse();
    let vocab = r#"["<eos>","the","<unk>","cat","sat","mat"]"#;
    let bytes = write_tensors(
        &t,
        &[("config", CONFIG), ("vocab", vocab), ("format", "np")],
    );
    let c = from_bytes(&bytes, Path::new("numpy.safetensors")).unwrap();
    assert_eq!(c.params, p);
    assert_eq!(c.vocab.unwrap().id("cat"), Some(3));
    // Without any metadata the shapes alone define the model.
    let bytes = write_tensors(&book_tensors(&p), &[]);
    assert_eq!(from_bytes(&bytes, Path::new("x")).unwrap().params, p);
}

#[test]
fn bad_files_are_clear_errors() {
    let (p, v) = sample();
    let good = to_bytes(&p, Some(&v)).unwrap();
    let path = Path::new("bad.safetensors");

    let m = msg(from_bytes(&good[..good.len() - 7], path));
    assert!(
        m.contains("bad.safetensors") && m.contains("not a valid safetensors"),
        "{m}"
    );
    let m = msg(from_bytes(&good[..5], path));
    assert!(m.contains("not a valid safetensors"), "{m}");
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    msg(from_bytes(&garbage, path));
    msg(from_bytes(b"", path));

    let mut t = book_tensors(&p);
    t.retain(|(n, _, _)| *n != "rnn.b");
    let m = msg(from_bytes(&write_tensors(&t, &[]), path));
    assert!(m.contains("missing tensor \"rnn.b\""), "{m}");

    let mut t = book_tensors(&p);
    t[4].1 = vec![4, 5];
    t[4].2.truncate(20);
    let m = msg(from_bytes(&write_tensors(&t, &[]), path));
    assert!(
        m.contains("affine.W") && m.contains("[4, 5]") && m.contains("[4, 6]"),
        "{m}"
    );

    let mut t = book_tensors(&p);
    t.push(("lstm.Wx", vec![1], vec![0.0]));
    let m = msg(from_bytes(&write_tensors(&t, &[]), path));
    assert!(m.contains("unexpected tensor \"lstm.Wx\""), "{m}");

    let wrong = CONFIG.replace("\"hidden_size\":4", "\"hidden_size\":5");
    let m = msg(from_bytes(
        &write_tensors(&book_tensors(&p), &[("config", &wrong)]),
        path,
    ));
    // The config says H = 5; the tensors say 4: the message names the tensor and both shapes.
    assert!(
        m.contains("rnn.Wx") && m.contains("[3, 4]") && m.contains("expected [3, 5]"),
        "{m}"
    );
    let lstm = CONFIG.replace("\"rnn\"", "\"lstm\"");
    let m = msg(from_bytes(
        &write_tensors(&book_tensors(&p), &[("config", &lstm)]),
        path,
    ));
    assert!(m.contains("lstm"), "{m}");
    let m = msg(from_bytes(
        &write_tensors(&book_tensors(&p), &[("config", "{oops")]),
        path,
    ));
    assert!(m.contains("config"), "{m}");
    let m = msg(from_bytes(
        &write_tensors(&book_tensors(&p), &[("vocab", r#"["a","b"]"#)]),
        path,
    ));
    assert!(m.contains("vocab has 2 words, expected 6"), "{m}");
    let dup = r#"["a","b","c","d","e","a"]"#;
    let m = msg(from_bytes(
        &write_tensors(&book_tensors(&p), &[("vocab", dup)]),
        path,
    ));
    assert!(m.contains("more than once"), "{m}");

    // A tensor stored as f64 is refused by dtype (f16 and bf16 are widened, tested below).
    let mut bytes_t: Vec<(String, Vec<usize>, Vec<u8>)> = book_tensors(&p)
        .into_iter()
        .map(|(n, s, d)| {
            (
                n.to_string(),
                s,
                d.iter().flat_map(|x| x.to_le_bytes()).collect(),
            )
        })
        .collect();
    let wide: Vec<u8> = bytes_t[3]
        .2
        .chunks(4)
        .flat_map(|_| 0.5f64.to_le_bytes())
        .collect();
    bytes_t[3].2 = wide;
    let views = bytes_t.iter().enumerate().map(|(i, (n, s, b))| {
        let dt = if i == 3 { Dtype::F64 } else { Dtype::F32 };
        (n.as_str(), TensorView::new(dt, s.clone(), b).unwrap())
    });
    let m = msg(from_bytes(
        &safetensors::serialize(views, None).unwrap(),
        path,
    ));
    assert!(m.contains("rnn.b") && m.contains("F64"), "{m}");

    // Half precision (the book ships float16 weights) is widened exactly.
    for dt in [Dtype::F16, Dtype::BF16] {
        let vals = [0.5f32, -2.0, 0.0, 1.0];
        let halves: Vec<u8> = vals
            .iter()
            .flat_map(|&x| match dt {
                Dtype::F16 => half::f16::from_f32(x).to_le_bytes(),
                _ => half::bf16::from_f32(x).to_le_bytes(),
            })
            .collect();
        let views = bytes_t.iter().enumerate().map(|(i, (n, s, b))| {
            if i == 3 {
                (n.as_str(), TensorView::new(dt, s.clone(), &halves).unwrap())
            } else {
                (
                    n.as_str(),
                    TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
                )
            }
        });
        let c = from_bytes(&safetensors::serialize(views, None).unwrap(), path).unwrap();
        assert_eq!(c.params.layer(0).b, vals, "{dt:?}");
    }

    // Missing file: an I/O error naming the path.
    let e = checkpoint::load(Path::new("/nonexistent/m.safetensors")).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/m.safetensors"), "{e}");
}

#[test]
fn failed_save_leaves_nothing_and_keeps_the_old_file() {
    let (p, v) = sample();
    let dir = tmpdir("atomic");
    let path = dir.join("m.safetensors");
    checkpoint::save(&path, &p, Some(&v)).unwrap();
    let before = std::fs::read(&path).unwrap();
    // A vocabulary of the wrong size is refused before anything is written.
    let small = Vocab::from_words(vec!["a".into()]).unwrap();
    assert!(checkpoint::save(&path, &p, Some(&small)).is_err());
    assert_eq!(std::fs::read(&path).unwrap(), before);
    // A target whose folder does not exist: error, nothing created.
    let missing = dir.join("no/such/dir/m.safetensors");
    assert!(matches!(
        checkpoint::save(&missing, &p, None),
        Err(Error::Io { .. })
    ));
    let names: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert_eq!(names.len(), 1);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn numpy_reads_our_files_and_we_read_numpys_when_available() {
    // Interop with numpy, checked when python3 has numpy + safetensors (not required for CI).
    let probe = std::process::Command::new("python3")
        .args(["-c", "import numpy, safetensors.numpy"])
        .output();
    if !probe.map(|o| o.status.success()).unwrap_or(false) {
        eprintln!("SKIPPED: python3 with numpy and safetensors is not installed");
        return;
    }
    let (p, v) = sample();
    let dir = tmpdir("numpy");
    let path = dir.join("m.safetensors");
    checkpoint::save(&path, &p, Some(&v)).unwrap();
    let script = format!(
        "import json, numpy as np\nfrom safetensors.numpy import load_file\nfrom safetensors import safe_open\n\
         t = load_file({path:?})\nwith safe_open({path:?}, 'np') as f: meta = f.metadata()\n\
         print(json.dumps({{k: [list(v.shape), str(v.dtype), float(np.float64(v.astype(np.float64).sum()))] for k, v in t.items()}}))\n\
         print(meta['config']); print(meta['vocab'])",
        path = path.to_str().unwrap()
    );
    let out = std::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    let sums: HashMap<String, (Vec<usize>, String, f64)> =
        serde_json::from_str(lines.next().unwrap()).unwrap();
    for (name, shape, t) in p.tensors() {
        let (s, dtype, sum) = &sums[&name];
        assert_eq!(s, &shape);
        assert_eq!(dtype, "float32");
        let want: f64 = t.iter().map(|&x| x as f64).sum();
        assert!((sum - want).abs() < 1e-9, "{name}: {sum} vs {want}");
    }
    assert_eq!(lines.next().unwrap(), CONFIG_NOW);
    assert!(lines.next().unwrap().contains("\"cat\""));

    // And the other way: a file numpy writes loads here, values intact.
    let theirs = dir.join("numpy.safetensors");
    let script = format!(
        "import numpy as np\nfrom safetensors.numpy import save_file\n\
         V, D, H = 6, 3, 4\n\
         f = lambda *s: (np.arange(np.prod(s)).reshape(s) * 0.25 - 1).astype(np.float32)\n\
         t = {{'embed.W': f(V, D), 'rnn.Wx': f(D, H), 'rnn.Wh': f(H, H), 'rnn.b': f(H),\n\
              'affine.W': f(H, V), 'affine.b': f(V)}}\n\
         save_file(t, {path:?}, metadata={{'config': '{CONFIG}',\n\
                   'vocab': '[\"<eos>\",\"the\",\"<unk>\",\"cat\",\"sat\",\"mat\"]'}})",
        path = theirs.to_str().unwrap()
    );
    let out = std::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let c = checkpoint::load(&theirs).unwrap();
    for (_, _, t) in c.params.tensors() {
        for (i, &x) in t.iter().enumerate() {
            assert_eq!(x, i as f32 * 0.25 - 1.0);
        }
    }
    assert_eq!(c.vocab.unwrap().word(5), Some("mat"));
    std::fs::remove_dir_all(dir).unwrap();
}
