//! `mpirun -np 2 rnnlm train ...` (the `mpi` feature; `.ci/run` installs OpenMPI and runs
//! these): two ranks train one model data-parallel, rank 0 alone prints and writes the model,
//! the test perplexity is the single process's within 1e-3 after 2 epochs, the same run gives
//! the same bits, over shared memory and over TCP (`--mca btl tcp,self`, as between nodes); a
//! rank that fails ends the job with its error instead of leaving the other waiting.

#![cfg(feature = "mpi")]

mod common;

use std::process::{Command, Output};

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
    for (name, words, seed) in [("train.txt", "60000", "1"), ("valid.txt", "6000", "2")] {
        let path = format!("{d}/{name}");
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
