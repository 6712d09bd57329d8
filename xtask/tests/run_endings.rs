//! `cargo xtask run` says how a run ended, in one `xtask:` line, and exits
//! with a status that does not lie: QEMU failing to start is not the
//! hypervisor's success, and a guest that never ends is stopped at the
//! timeout with the domains still running named.
//!
//! Each test runs the real `xtask` binary, which builds the hypervisor and
//! the guests first (`cargo xtask test` has built them before the host
//! tests, so there this costs a few cargo no-op builds), then QEMU.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Runs `xtask run <args>` from the repository root.
fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask")).current_dir(repo()).arg("run").args(args).output().expect("xtask runs")
}

/// The lines on stderr after the QEMU command line (before it, the nested
/// cargo builds print their own).
fn after_qemu_line(output: &Output) -> Vec<String> {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    let qemu = lines.iter().position(|l| l.starts_with("xtask: qemu-system-x86_64 ")).unwrap_or_else(|| {
        panic!("QEMU never ran:\n{stderr}");
    });
    lines[qemu + 1..].iter().map(|l| l.to_string()).collect()
}

#[test]
fn qemu_that_does_not_start_is_a_failure_with_its_reason() {
    let output = run(&["--", "-bogus-option"]);
    assert_eq!(output.status.code(), Some(125), "{output:?}");
    assert_eq!(
        after_qemu_line(&output),
        ["xtask: QEMU failed to start: qemu-system-x86_64: -bogus-option: invalid option"]
    );
    assert!(output.stdout.is_empty(), "{}", String::from_utf8_lossy(&output.stdout));
}

#[test]
fn the_timeout_names_the_domains_still_running() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("manifest.toml");
    // The spinner has no time_limit: it would run forever.
    std::fs::write(
        &manifest,
        "[[domain]]\nname = \"spinner\"\nimage = \"spinner\"\nmemory = \"1M\"\n\n\
         [[domain]]\nname = \"hello\"\nimage = \"hello\"\nmemory = \"2M\"\n",
    )
    .unwrap();
    let output = run(&["--manifest", manifest.to_str().unwrap(), "--timeout", "5s"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(124), "{output:?}");
    assert!(stdout.contains("parvus: domain 1 (hello) exited with status 0"), "{stdout}");
    assert!(stdout.contains("[spinner] spinner: spinning forever"), "{stdout}");
    assert_eq!(
        after_qemu_line(&output),
        ["xtask: timed out after 5s and stopped QEMU (change the timeout with --timeout, e.g. --timeout 5m or \
          --timeout none); still running: domain 0 (spinner)"]
    );
}
