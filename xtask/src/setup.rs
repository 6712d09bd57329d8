//! `cargo xtask setup`: installs what `run`, `test` and `bench` need that
//! cargo does not bring, which is QEMU (see [`crate::qemu::ensure_installed`]).
//! Those commands install it themselves when missing; this one exists so a
//! fresh machine (or CI) can be prepared on its own.

use std::process::{Command, ExitCode};

use anyhow::Result;

use crate::qemu::{ensure_installed, QEMU};

/// `cargo xtask setup`.
pub fn main() -> Result<ExitCode> {
    ensure_installed()?;
    let version = Command::new(QEMU).arg("--version").output()?;
    let first_line = String::from_utf8_lossy(&version.stdout).lines().next().unwrap_or("").to_string();
    println!("{QEMU}: {first_line}");
    Ok(ExitCode::SUCCESS)
}
