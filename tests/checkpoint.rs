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

// ---- hardening: header-first reading, checksums, non-finite weights, atomic writes ----

fn load_err(path: &Path) -> String {
    msg(checkpoint::load(path))
}

/// A file of `len` bytes that starts with `head`, sparse beyond it (it costs no disk).
fn sparse(path: &Path, head: &[u8], len: u64) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(head).unwrap();
    f.set_len(len).unwrap();
}

/// An 8-byte length and a JSON header padded to a multiple of 8.
fn header(json: &str) -> Vec<u8> {
    let mut text = json.to_string();
    while !text.len().is_multiple_of(8) {
        text.push(' ');
    }
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(text.as_bytes());
    out
}

#[test]
fn huge_files_are_refused_from_their_header_without_reading_them() {
    let dir = tmpdir("huge");
    let path = dir.join("huge.safetensors");
    const LEN: u64 = 3 << 30; // 3 GiB, sparse
    let start = std::time::Instant::now();
    let cases: [(Vec<u8>, &[&str]); 4] = [
        // A length field of garbage.
        (
            vec![0xff; 64],
            &["header", "more than the 100000000 allowed"],
        ),
        // A valid empty header: 16 bytes declared, 3 GiB found.
        (
            header("{}"),
            &["declares 16 bytes", &format!("has {LEN}"), "trailing bytes"],
        ),
        // One 4 GiB tensor in a 3 GiB file: truncated, found before reading any of it.
        (
            header(r#"{"w":{"dtype":"F32","shape":[1073741824],"data_offsets":[0,4294967296]}}"#),
            &["4294967296 data", &format!("has {LEN}"), "(truncated)"],
        ),
        // One 1 GiB tensor in a 3 GiB file: the rest is trailing bytes.
        (
            header(r#"{"w":{"dtype":"F32","shape":[268435456],"data_offsets":[0,1073741824]}}"#),
            &["1073741824 data", "trailing bytes"],
        ),
    ];
    for (head, must) in &cases {
        sparse(&path, head, LEN);
        let m = load_err(&path);
        for want in *must {
            assert!(m.contains(want), "{m:?} lacks {want:?}");
        }
        assert!(m.contains("huge.safetensors") && !m.contains('\n'), "{m}");
    }
    let took = start.elapsed();
    // Reading any of these files whole would cost gigabytes and seconds.
    assert!(took.as_secs_f64() < 5.0, "took {took:?}");
    if let Some(peak) = rnnlm::bench::peak_rss_bytes() {
        assert!(peak < 512 << 20, "peak RSS {} MiB", peak >> 20);
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn directories_devices_and_fifos_are_refused_without_hanging() {
    let dir = tmpdir("special");
    let m = load_err(&dir);
    assert!(m.contains("is a directory"), "{m}");
    // Via a symlink too (symlinks to regular files load, tested below).
    #[cfg(unix)]
    {
        let link = dir.join("to-dir");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        assert!(load_err(&link).contains("is a directory"));
    }
    for dev in ["/dev/zero", "/dev/null"] {
        if Path::new(dev).exists() {
            let m = load_err(Path::new(dev));
            assert!(
                m.contains(dev) && m.contains("is not a regular file (a character device)"),
                "{m}"
            );
        }
    }
    let fifo = dir.join("fifo");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    if made.is_ok_and(|s| s.success()) {
        // Opening a FIFO blocks until a writer appears: the load must not even open it.
        let (tx, rx) = std::sync::mpsc::channel();
        let f = fifo.clone();
        std::thread::spawn(move || tx.send(load_err(&f)).unwrap());
        let m = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("loading a FIFO hung");
        assert!(m.contains("is not a regular file (a FIFO)"), "{m}");
        // convert's reader is the same one.
        let e = rnnlm::convert::load_torch(&fifo, None).unwrap_err();
        assert!(e.to_string().contains("(a FIFO)"), "{e}");
    } else {
        eprintln!("SKIPPED the FIFO case: mkfifo is not available");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn truncated_and_trailing_bytes_say_declared_versus_actual() {
    let (p, v) = sample();
    let dir = tmpdir("sizes");
    let path = dir.join("m.safetensors");
    checkpoint::save(&path, &p, Some(&v)).unwrap();
    let good = std::fs::read(&path).unwrap();
    let len = good.len();

    std::fs::write(&path, &good[..len - 7]).unwrap();
    let m = load_err(&path);
    let declared = format!("declares {len} bytes");
    let found = format!("the file has {} (truncated)", len - 7);
    assert!(m.contains(&declared) && m.contains(&found), "{m}");
    let mut more = good.clone();
    more.extend_from_slice(b"extra");
    std::fs::write(&path, &more).unwrap();
    let m = load_err(&path);
    let found = format!("the file has {} (trailing bytes after the data)", len + 5);
    assert!(m.contains(&declared) && m.contains(&found), "{m}");
    // The same checks on bytes in memory.
    assert!(msg(from_bytes(&more, &path)).contains(&found));
    // A header cut short, and a file shorter than the length field.
    std::fs::write(&path, &good[..20]).unwrap();
    let m = load_err(&path);
    assert!(
        m.contains("header but only 12 bytes follow (truncated)"),
        "{m}"
    );
    std::fs::write(&path, &good[..3]).unwrap();
    assert!(load_err(&path).contains("3 bytes, fewer than the 8"));
    std::fs::write(&path, b"").unwrap();
    assert!(load_err(&path).contains("0 bytes"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn headers_with_bad_offsets_are_refused_by_name() {
    let path = Path::new("h.safetensors");
    let data = |n: usize| vec![0u8; n];
    let with = |json: &str, n: usize| {
        let mut b = header(json);
        b.extend(data(n));
        b
    };
    // 3 F32 values need 12 bytes, not 8.
    let m = msg(from_bytes(
        &with(
            r#"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
            8,
        ),
        path,
    ));
    assert!(m.contains("\"w\"") && m.contains("needs 12 bytes"), "{m}");
    // A gap before the second tensor.
    let m = msg(from_bytes(
        &with(
            r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#,
            12,
        ),
        path,
    ));
    assert!(m.contains("\"b\" starts at data byte 8, expected 4"), "{m}");
    // Overflowing shapes, unknown dtypes, non-JSON.
    let m = msg(from_bytes(
        &with(
            r#"{"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}}"#,
            0,
        ),
        path,
    ));
    assert!(m.contains("\"w\""), "{m}");
    let m = msg(from_bytes(
        &with(
            r#"{"w":{"dtype":"F99","shape":[1],"data_offsets":[0,4]}}"#,
            4,
        ),
        path,
    ));
    assert!(m.contains("\"w\"") && m.contains("F99"), "{m}");
    let m = msg(from_bytes(&with("[1,2]", 0), path));
    assert!(m.contains("not a JSON object"), "{m}");
    let m = msg(from_bytes(&with("{oops", 0), path));
    assert!(m.contains("header is not JSON"), "{m}");
}

#[test]
fn nan_and_infinite_weights_are_refused_with_tensor_and_index() {
    let (p, v) = sample();
    let dir = tmpdir("finite");
    let path = dir.join("m.safetensors");
    let named = |p: &Params| -> Vec<(&'static str, Vec<usize>, Vec<f32>)> {
        p.tensors()
            .into_iter()
            .map(|(n, s, t)| (&*n.leak(), s, t.to_vec()))
            .collect()
    };
    for (name, index, value, shown) in [
        ("rnn.0.Wh", 5, f32::NAN, "NaN"),
        ("affine.b", 2, f32::INFINITY, "inf"),
        ("embed.W", 0, f32::NEG_INFINITY, "-inf"),
    ] {
        let mut bad = p.clone();
        bad.tensor_mut(name).unwrap()[index] = value;
        let want = format!("tensor {name:?} holds {shown} at flat index {index}");
        // Saving refuses it (the file would not load), writing nothing...
        let e = checkpoint::save(&path, &bad, Some(&v)).unwrap_err();
        assert!(matches!(e, Error::Invalid { .. }), "{e:?}");
        assert!(e.to_string().contains(&want), "{e} lacks {want:?}");
        assert!(std::fs::read_dir(&dir).unwrap().next().is_none());
        // ...and loading refuses a file another writer made with it.
        std::fs::write(
            &path,
            write_tensors(&named(&bad), &[("config", CONFIG_NOW)]),
        )
        .unwrap();
        let m = load_err(&path);
        assert!(m.contains(&want), "{m:?} lacks {want:?}");
        std::fs::remove_file(&path).unwrap();
    }
    // The trainer's extra tensors too (a resumable checkpoint's hidden state).
    let h = [0.0f32, 1.0, f32::NAN];
    let want = "\"trainer.h\" holds NaN at flat index 2";
    let extra = [("trainer.h".to_string(), vec![1, 3], &h[..])];
    let e = checkpoint::to_bytes_with(&p, None, &extra, &[]).unwrap_err();
    assert!(e.to_string().contains(want), "{e}");
    let mut t = named(&p);
    t.push(("trainer.h", vec![1, 3], h.to_vec()));
    let m = msg(from_bytes(
        &write_tensors(&t, &[("config", CONFIG_NOW)]),
        &path,
    ));
    assert!(m.contains(want), "{m}");
    // A foreign file (no checksum, old names) gets the same check, under its own names.
    let mut t = book_tensors(&p);
    t[2].2[1] = f32::INFINITY;
    let m = msg(from_bytes(&write_tensors(&t, &[]), &path));
    assert!(m.contains("\"rnn.Wh\" holds inf at flat index 1"), "{m}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn flipped_bits_are_caught_by_the_checksum() {
    let (p, v) = sample();
    let dir = tmpdir("checksum");
    let path = dir.join("m.safetensors");
    checkpoint::save(&path, &p, Some(&v)).unwrap();
    let good = std::fs::read(&path).unwrap();
    let n = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let text = std::str::from_utf8(&good[8..8 + n]).unwrap();
    assert!(text.contains("\"checksum\":\"sha256:"), "{text}");

    // One bit in the data section: the weight is still finite, only the checksum sees it.
    let mut flipped = good.clone();
    flipped[8 + n + 13] ^= 0x01;
    std::fs::write(&path, &flipped).unwrap();
    let m = load_err(&path);
    assert!(
        m.contains("checksum mismatch: the file is corrupt (expected sha256:")
            && m.contains(", found sha256:"),
        "{m}"
    );
    // One bit in the vocabulary: "cat" becomes "cau", still valid JSON and a valid vocabulary.
    let at = 8
        + text
            .find("\\\"cat\\\"")
            .expect("the vocab entry is escaped JSON")
        + 4;
    let mut flipped = good.clone();
    assert_eq!(flipped[at], b't');
    flipped[at] ^= 0x01;
    std::fs::write(&path, &flipped).unwrap();
    assert!(load_err(&path).contains("checksum mismatch"));
    assert!(msg(from_bytes(&flipped, &path)).contains("checksum mismatch"));
    // A malformed checksum entry is named.
    let mut flipped = good.clone();
    let at = 8 + text.find("sha256:").unwrap();
    flipped[at..at + 6].copy_from_slice(b"md5:xx");
    let m = msg(from_bytes(&flipped, &path));
    assert!(m.contains("not sha256:<64 hex digits>"), "{m}");
    // Untouched, it loads; so does a file without a checksum (numpy, PyTorch, version 0.1).
    std::fs::write(&path, &good).unwrap();
    assert_eq!(checkpoint::load(&path).unwrap().params, p);
    let vocab = r#"["<eos>","the","<unk>","cat","sat","mat"]"#;
    let theirs = write_tensors(&book_tensors(&p), &[("config", CONFIG), ("vocab", vocab)]);
    std::fs::write(&path, &theirs).unwrap();
    let c = checkpoint::load(&path).unwrap();
    assert_eq!((c.params, c.vocab), (p, Some(v)));
    assert!(!c.metadata.contains_key("checksum"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_checksum_is_reproducible_outside_rust_when_python_is_available() {
    // The definition on `to_bytes_with`, recomputed with python's json and hashlib alone.
    let probe = std::process::Command::new("python3")
        .args(["-c", "import json, hashlib"])
        .output();
    if !probe.map(|o| o.status.success()).unwrap_or(false) {
        eprintln!("SKIPPED: python3 is not installed");
        return;
    }
    let (p, _) = sample();
    let words = ["<eos>", "thé", "<unk>", "c\"at", "s\\at", "mat\u{1}"];
    let v = Vocab::from_words(words.map(String::from).to_vec()).unwrap();
    let dir = tmpdir("python");
    let path = dir.join("m.safetensors");
    checkpoint::save(&path, &p, Some(&v)).unwrap();
    let script = r#"
import hashlib, json, struct, sys
b = open(sys.argv[1], 'rb').read()
n = struct.unpack('<Q', b[:8])[0]
h = json.loads(b[8:8 + n])
stored = h['__metadata__'].pop('checksum')
if not h['__metadata__']:
    del h['__metadata__']
t = json.dumps(h, sort_keys=True, separators=(',', ':'), ensure_ascii=False).encode()
d = hashlib.sha256(struct.pack('<Q', len(t)) + t + b[8 + n:]).hexdigest()
print(stored == 'sha256:' + d, stored, d)
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script, path.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.starts_with("True "), "{text}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[cfg(unix)]
#[test]
fn write_atomic_writes_through_symlinks_and_refuses_special_files() {
    use std::os::unix::fs::{symlink, FileTypeExt};
    let dir = tmpdir("links");
    let sub = dir.join("real");
    std::fs::create_dir(&sub).unwrap();
    let target = sub.join("model.safetensors");
    std::fs::write(&target, b"old").unwrap();
    // A relative link in another folder, and a link to that link.
    let link = dir.join("link");
    symlink("real/model.safetensors", &link).unwrap();
    let link2 = dir.join("link2");
    symlink(&link, &link2).unwrap();
    for (l, bytes) in [(&link, &b"new"[..]), (&link2, &b"newer"[..])] {
        rnnlm::outputs::write_atomic(l, bytes).unwrap();
        assert!(std::fs::symlink_metadata(l)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read(&target).unwrap(), bytes);
    }
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        Path::new("real/model.safetensors")
    );
    // A dangling link: its target is created (as a shell's `>` would).
    let dangling = dir.join("dangling");
    symlink("real/fresh.safetensors", &dangling).unwrap();
    let (p, v) = sample();
    checkpoint::save(&dangling, &p, Some(&v)).unwrap();
    assert_eq!(
        checkpoint::load(&sub.join("fresh.safetensors"))
            .unwrap()
            .params,
        p
    );
    assert_eq!(checkpoint::load(&dangling).unwrap().params, p); // loads through the link
    let listing = |d: &Path| {
        let mut n: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        n.sort();
        n
    };
    assert_eq!(listing(&sub), ["fresh.safetensors", "model.safetensors"]);

    // A FIFO, a directory, a link to a directory and /dev/null: refused, nothing written.
    let fifo = dir.join("fifo");
    let has_fifo = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .is_ok_and(|s| s.success());
    let to_sub = dir.join("to-sub");
    symlink(&sub, &to_sub).unwrap();
    let before = listing(&dir);
    let mut refused = vec![
        (sub.clone(), "is a directory"),
        (to_sub.clone(), "is a directory"),
    ];
    if has_fifo {
        refused.push((fifo.clone(), "is not a regular file (a FIFO)"));
    }
    if Path::new("/dev/null").exists() {
        refused.push((
            "/dev/null".into(),
            "is not a regular file (a character device)",
        ));
    }
    for (path, why) in refused {
        let e = checkpoint::save(&path, &p, None).unwrap_err();
        assert!(matches!(e, Error::Invalid { .. }), "{e:?}");
        let m = e.to_string();
        assert!(m.contains(path.to_str().unwrap()) && m.contains(why), "{m}");
    }
    assert_eq!(listing(&dir), before);
    assert_eq!(listing(&sub), ["fresh.safetensors", "model.safetensors"]);
    if has_fifo {
        assert!(std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo());
    }
    if Path::new("/dev/null").exists() {
        let ft = std::fs::symlink_metadata("/dev/null").unwrap().file_type();
        assert!(ft.is_char_device(), "/dev/null is no longer a device");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// Checkpoints written by 54e3f95 (before the cell trait) still load, and score as that
/// version scored them (see tests/fixtures/ckpt_54e3f95/README.md). The tolerance covers the
/// last-bit differences between instruction sets; on the AVX-512 machine that made them the
/// figures are the same bits.
#[test]
fn checkpoints_of_54e3f95_still_load_and_score_the_same() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ckpt_54e3f95");
    for (file, mean_loss, first_line) in [
        ("lstm2.safetensors", 3.2299399375915527f64, -19.5781f64),
        ("gru1.safetensors", 3.193873882293701, -19.9002),
    ] {
        let ck = rnnlm::checkpoint::load(&dir.join(file)).unwrap();
        let vocab = ck.vocab.clone().expect("a vocabulary");
        let ids = rnnlm::data::corpus::read_with_vocab(&dir.join("test.txt"), &vocab).unwrap();
        let p = rnnlm::eval_perplexity(&ck.params, &ids, 10, 35).unwrap();
        assert!(
            (p.mean_loss - mean_loss).abs() < 1e-5,
            "{file}: {} vs {mean_loss}",
            p.mean_loss
        );
        let lm = rnnlm::Rnnlm::new(ck.params, vocab).unwrap();
        let text = std::fs::read_to_string(dir.join("test.txt")).unwrap();
        let first = text.lines().next().unwrap();
        let mut tokens = lm.encode("<eos>").unwrap();
        tokens.extend(lm.encode(&format!("{first} <eos>")).unwrap());
        let s = lm.score(&tokens).unwrap();
        assert_eq!(s.tokens, 7, "{file}");
        assert!(
            (s.log_prob - first_line).abs() < 1e-3,
            "{file}: {} vs {first_line}",
            s.log_prob
        );
    }
}

/// The SHA-256 of a file's bytes, in hex.
fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The bytes written for given weights, vocabulary, extra tensors and metadata never change:
/// these digests were taken from the writer that went through the `safetensors` crate's
/// in-memory `serialize` before the streamed writer replaced it (so old and new files of the
/// same run compare equal, and a checksum computed by either agrees).
#[test]
fn written_bytes_are_those_of_the_in_memory_writer() {
    let (p, v) = sample();
    let plain = to_bytes(&p, Some(&v)).unwrap();
    let h = [0.25f32, -1.5, 3.0, 0.0];
    let extra = [
        ("trainer.h".to_string(), vec![1, 4], &h[..]),
        ("trainer.a".to_string(), vec![2, 2], &h[..]),
    ];
    let with_extra =
        checkpoint::to_bytes_with(&p, None, &extra, &[("resume", "{\"x\":1}".into())]).unwrap();
    let digests = [sha256_hex(&plain), sha256_hex(&with_extra)];
    assert_eq!(
        digests,
        [
            "c6b001c5d95f9b2b4688566bbfc2831830251993b38120e13c94a65b8c5c9f62",
            "49f913163f5671da21e51cb992139455f3e6fa3facf093d23ec66f62d0bf5ba6"
        ]
    );
}

/// `save` streams the bytes that `to_bytes` returns, and a name given twice is refused
/// before anything is written.
#[test]
fn saved_file_is_to_bytes_and_duplicates_are_refused() {
    let (p, v) = sample();
    let dir = tmpdir("streamed");
    let path = dir.join("m.safetensors");
    checkpoint::save(&path, &p, Some(&v)).unwrap();
    assert_eq!(
        std::fs::read(&path).unwrap(),
        to_bytes(&p, Some(&v)).unwrap()
    );
    let h = [1.0f32; 4];
    let twice = [
        ("trainer.h".to_string(), vec![4], &h[..]),
        ("trainer.h".to_string(), vec![2, 2], &h[..]),
    ];
    let out = dir.join("twice.safetensors");
    let err = checkpoint::save_with(&out, &p, None, &twice, &[]).unwrap_err();
    assert!(
        err.to_string().contains("\"trainer.h\" is given twice"),
        "{err}"
    );
    assert!(!out.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}
