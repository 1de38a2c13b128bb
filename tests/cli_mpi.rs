//! `mpirun -np 2 rnnlm train ...` (the `mpi` feature; `.ci/run` installs OpenMPI and runs
//! these): two ranks train one model data-parallel, rank 0 alone prints and writes the model,
//! the test perplexity is the single process's within 1e-3 after 2 epochs, the same run gives
//! the same bits, over shared memory and over TCP (`--mca btl tcp,self`, as between nodes); an
//! interrupted run's resume file continues it on 2 ranks with the bits of a run never
//! interrupted, and on 1 or 3; a rank that fails ends the job with its error instead of
//! leaving the other waiting, and a rank killed mid-run ends the job with the last model
//! intact.

#![cfg(feature = "mpi")]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Output, Stdio};

use common::{ok_json, rnnlm, tmpdir};

const BIN: &str = env!("CARGO_BIN_EXE_rnnlm");

fn mpirun(np: usize, mca: &[&str], args: &[&str]) -> Output {
    Command::new("mpirun")
        .args([
            "--allow-run-as-root",
            "--oversubscribe",
            "-np",
            &np.to_string(),
        ])
        .args(mca)
        .arg(BIN)
        .args(args)
        .output()
        .expect("mpirun is on the PATH (OpenMPI's openmpi-bin)")
}

fn train_args<'a>(dir: &'a str, save: &'a str) -> Vec<String> {
    let f = |name: &str| format!("{dir}/{name}");
    [
        "train",
        "--train",
        &f("train.txt"),
        "--valid",
        &f("valid.txt"),
        "--test",
        &f("valid.txt"),
        "--cell",
        "lstm",
        "--layers",
        "2",
        "--wordvec",
        "32",
        "--hidden",
        "32",
        "--batch",
        "8",
        "--time",
        "10",
        "--epochs",
        "2",
        "--dropout",
        "0.2",
        "--lr",
        "5",
        "--threads",
        "1",
        "--json",
        "--save",
        &f(save),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn test_ppl(out: &Output) -> f64 {
    let (stdout, json) = ok_json(out);
    // Rank 0 alone prints: one closing line and one JSON object.
    assert_eq!(stdout.matches("test perplexity").count(), 1, "{stdout}");
    json["test_perplexity"].as_f64().unwrap()
}

#[test]
fn two_ranks_train_the_single_process_model() {
    let dir = tmpdir("mpi");
    let d = dir.to_str().unwrap();
    zipf_texts(d);
    let one_args = train_args(d, "one.safetensors");
    let one_refs: Vec<&str> = one_args.iter().map(|s| s.as_str()).collect();
    let one = test_ppl(&rnnlm(&one_refs));
    let mut seen = Vec::new();
    for mca in [&[][..], &["--mca", "btl", "tcp,self"][..]] {
        let args = train_args(d, "two.safetensors");
        let refs: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        let two = test_ppl(&mpirun(2, mca, &refs));
        assert!(
            (two - one).abs() <= 1e-3 * one,
            "{mca:?}: 2 ranks {two} vs 1 process {one}"
        );
        assert!(
            dir.join("two.safetensors").exists(),
            "rank 0 wrote no model"
        );
        seen.push(two);
    }
    // The same ranks and data: the same bits, whichever transport carried the sums.
    assert_eq!(seen[0].to_bits(), seen[1].to_bits(), "{seen:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_failing_rank_ends_the_job_with_its_error() {
    let dir = tmpdir("mpi-fail");
    let d = dir.to_str().unwrap();
    for name in ["train.txt", "valid.txt"] {
        let path = format!("{d}/{name}");
        let out = rnnlm(&[
            "zipf-text",
            "--tokens",
            "6000",
            "--vocab-size",
            "100",
            "--out",
            &path,
        ]);
        assert!(out.status.success());
    }
    // More ranks than batch rows: every rank refuses before training, and mpirun ends.
    let mut args = train_args(d, "m.safetensors");
    let at = args.iter().position(|a| a == "--batch").unwrap();
    args[at + 1] = "1".into();
    let refs: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    let out = mpirun(2, &[], &refs);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("2 ranks") && err.contains("1 rows"), "{err}");
    assert!(!dir.join("m.safetensors").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_interrupted_run_resumes_on_any_number_of_ranks() {
    let dir = tmpdir("mpi-resume");
    let d = dir.to_str().unwrap();
    zipf_texts(d);
    let args = |save: &str| -> Vec<String> {
        let mut a = train_args(d, save);
        // ~5 s of training, so the signal lands mid-run.
        let at = a.iter().position(|x| x == "--epochs").unwrap();
        a[at + 1] = "8".into();
        a.extend(["--eval-interval".into(), "10".into()]);
        a
    };
    let whole = args("whole.safetensors");
    let (_, whole_json) = ok_json(&mpirun(2, &[], &refs(&whole)));

    // SIGTERM to mpirun once training is under way (it passes the signal to the ranks).
    let cut = args("cut.safetensors");
    let (mut child, lines) = training(&cut);
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    let _ = child.wait().unwrap();
    assert!(
        rest.iter()
            .any(|l| l.contains("interrupted by") && l.contains("--resume")),
        "{rest:?}"
    );
    let resume = dir.join("cut.safetensors.resume");
    assert!(resume.exists(), "no resume file: {rest:?}");
    let resume = resume.to_str().unwrap().to_string();
    let saved = dir.join("resume-copy");
    std::fs::copy(&resume, &saved).unwrap();

    // On 2 ranks: the uninterrupted run's bits.
    let mut again = cut.clone();
    again.extend(["--resume".into(), resume.clone()]);
    let (_, resumed) = ok_json(&mpirun(2, &[], &refs(&again)));
    for key in ["valid_perplexity", "test_perplexity", "steps", "tokens"] {
        assert_eq!(resumed[key], whole_json[key], "{key}");
    }
    let (a, b) = (
        rnnlm::checkpoint::load(&dir.join("cut.safetensors")).unwrap(),
        rnnlm::checkpoint::load(&dir.join("whole.safetensors")).unwrap(),
    );
    assert!(a.params == b.params, "the resumed model's weights differ");
    // On 1 and 3 ranks: the same run up to the order of the sums.
    for np in [1, 3] {
        std::fs::copy(&saved, &resume).unwrap();
        let (_, other) = ok_json(&mpirun(np, &[], &refs(&again)));
        let (x, y) = (
            other["test_perplexity"].as_f64().unwrap(),
            whole_json["test_perplexity"].as_f64().unwrap(),
        );
        assert!((x - y).abs() <= 1e-3 * y, "resumed on {np}: {x} vs {y}");
        assert_eq!(other["steps"], whole_json["steps"]);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn refs(a: &[String]) -> Vec<&str> {
    a.iter().map(String::as_str).collect()
}

/// A Zipf training text of 60,000 words and a validation text of 6,000 in `dir`.
fn zipf_texts(dir: &str) {
    for (name, words, seed) in [("train.txt", "60000", "1"), ("valid.txt", "6000", "2")] {
        let path = format!("{dir}/{name}");
        let out = rnnlm(&[
            "zipf-text",
            "--tokens",
            words,
            "--vocab-size",
            "500",
            "--seed",
            seed,
            "--out",
            &path,
        ]);
        assert!(out.status.success());
    }
}

#[test]
fn a_killed_rank_ends_the_job_and_the_last_model_still_loads() {
    let dir = tmpdir("mpi-kill");
    let d = dir.to_str().unwrap();
    zipf_texts(d);
    let mut args = train_args(d, "m.safetensors");
    let (_, _) = ok_json(&mpirun(2, &[], &refs(&args)));
    let before = rnnlm::checkpoint::load(&dir.join("m.safetensors")).unwrap();
    // The same run again, longer, into the same file; one rank is killed once it trains.
    let at = args.iter().position(|x| x == "--epochs").unwrap();
    args[at + 1] = "50".into();
    args.extend(["--eval-interval".into(), "10".into()]);
    let (mut child, _lines) = training(&args);
    // The ranks are mpirun's children running the binary: kill the last one.
    let ranks = Command::new("pgrep")
        .args(["-P", &child.id().to_string(), "-f", BIN])
        .output()
        .unwrap();
    let pids = String::from_utf8(ranks.stdout).unwrap();
    let victim = pids
        .lines()
        .last()
        .expect("mpirun's rank processes")
        .trim()
        .to_string();
    assert!(Command::new("kill")
        .args(["-KILL", &victim])
        .status()
        .unwrap()
        .success());
    // The job ends: no rank waits forever in a sum.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("mpirun still runs 60 s after a rank was killed");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(!status.success(), "a killed rank must fail the job");
    // The model of the earlier run is still there, whole.
    let after = rnnlm::checkpoint::load(&dir.join("m.safetensors")).unwrap();
    assert!(after.params == before.params, "the last model changed");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `mpirun -np 2 rnnlm ARGS` started, once its training is under way (a progress line past
/// batch 50 printed), with the rest of its output.
fn training(args: &[String]) -> (Child, std::io::Lines<BufReader<ChildStdout>>) {
    let mut child = Command::new("mpirun")
        .args(["--allow-run-as-root", "--oversubscribe", "-np", "2", BIN])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        if line.unwrap().contains("| iter 51 /") {
            break;
        }
    }
    (child, lines)
}
