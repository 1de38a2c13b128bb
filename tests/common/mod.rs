//! Helpers shared by the integration tests (each test binary includes what it uses).

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

/// A fresh, empty scratch folder for one test (removed by the test when it passes).
pub fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rnnlm-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs the `rnnlm` binary built for these tests.
pub fn rnnlm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rnnlm"))
        .args(args)
        .output()
        .unwrap()
}

/// Starts the `rnnlm` binary built for these tests with its standard input, output and error
/// piped.
pub fn rnnlm_piped(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_rnnlm"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Asserts exit status 2 with exactly one line on stderr and no panic; returns that line.
pub fn one_line_error(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(2), "exit status");
    let err = String::from_utf8(out.stderr.clone()).unwrap();
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one line on stderr: {err:?}"
    );
    assert!(!err.contains("panicked"), "{err}");
    err
}

/// Asserts the command succeeded (showing its stderr if not) and returns its stdout and the
/// JSON object on its last line.
pub fn ok_json(out: &Output) -> (String, serde_json::Value) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    let json = serde_json::from_str(stdout.lines().last().expect("some output")).unwrap();
    (stdout, json)
}
