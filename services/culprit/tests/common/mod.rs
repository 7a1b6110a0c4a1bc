//! Runs the real `culprit` binary for the end-to-end tests.

use std::process::{Command, Output};

/// Runs `culprit args` with `envs` set and returns its output; fails the test, showing both
/// streams, when it exits non-zero.
pub fn culprit_with(args: &[&str], envs: &[(&str, String)]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_culprit"))
        .args(args)
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("culprit runs");
    assert!(
        out.status.success(),
        "culprit {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// [`culprit_with`] without extra environment.
#[allow(dead_code)] // not every test binary that includes this module calls it
pub fn culprit(args: &[&str]) -> Output {
    culprit_with(args, &[])
}
