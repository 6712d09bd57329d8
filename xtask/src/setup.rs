//! `cargo xtask setup`: installs what `run`, `test`, `bench` and `doc` need
//! that cargo does not bring: QEMU (see [`crate::qemu::ensure_installed`])
//! and mdBook (see [`crate::book::ensure_mdbook`]). Those commands install
//! them themselves when missing; this one exists so a fresh machine (or
//! CI) can be prepared on its own.

use std::process::{Command, ExitCode};

use anyhow::Result;

use crate::book::ensure_mdbook;
use crate::qemu::{ensure_installed, QEMU};
use crate::repo::Repo;

/// `cargo xtask setup`.
pub fn main() -> Result<ExitCode> {
    ensure_installed()?;
    let version = Command::new(QEMU).arg("--version").output()?;
    let first_line = String::from_utf8_lossy(&version.stdout).lines().next().unwrap_or("").to_string();
    println!("{QEMU}: {first_line}");
    let mdbook = ensure_mdbook(&Repo::locate())?;
    let version = Command::new(&mdbook).arg("--version").output()?;
    println!("mdbook: {} ({})", String::from_utf8_lossy(&version.stdout).trim(), mdbook.display());
    Ok(ExitCode::SUCCESS)
}
