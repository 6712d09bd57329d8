//! The nested cargo builds of the bare-metal crates.
//!
//! The hypervisor and the guests are built for the ordinary host triple
//! (stable Rust has no bare-metal x86_64 target without rust-src), made
//! bare-metal by RUSTFLAGS: static, no red zone, no C start files or libc,
//! and a linker script. Because host == target, the flags go in the
//! environment of a nested cargo with `--target` (so build scripts and proc
//! macros are not built with them), never in `.cargo/config.toml`.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::repo::{Repo, TARGET};

/// RUSTFLAGS every bare-metal crate gets.
const COMMON_RUSTFLAGS: &[&str] = &[
    "-C",
    "relocation-model=static",
    "-C",
    "no-redzone=yes",
    "-C",
    "link-arg=-nostartfiles",
    "-C",
    "link-arg=-nostdlib",
    "-C",
    "link-arg=-static",
    "-C",
    "link-arg=-Wl,--build-id=none",
];

/// A crate under `demo-guests/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestCrate {
    /// Package (and binary) name.
    pub name: String,
    /// Its folder.
    pub dir: PathBuf,
}

#[derive(Deserialize)]
struct CargoToml {
    package: Package,
}

#[derive(Deserialize)]
struct Package {
    name: String,
}

/// Every demo-guest crate, sorted by name.
pub fn demo_guests(repo: &Repo) -> Result<Vec<GuestCrate>> {
    let dir = repo.demo_guests_dir();
    let mut guests = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", repo.show(&dir)))? {
        let crate_dir = entry?.path();
        let cargo_toml = crate_dir.join("Cargo.toml");
        if !cargo_toml.is_file() {
            continue;
        }
        let text =
            std::fs::read_to_string(&cargo_toml).with_context(|| format!("cannot read {}", repo.show(&cargo_toml)))?;
        let parsed: CargoToml =
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {}", repo.show(&cargo_toml), e.message()))?;
        guests.push(GuestCrate { name: parsed.package.name, dir: crate_dir });
    }
    guests.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(guests)
}

/// Whether an environment variable set by an outer cargo (or meant for the
/// host build) must not reach a nested bare-metal build.
fn is_inherited_cargo_var(name: &str) -> bool {
    const EXACT: &[&str] = &[
        "CARGO",
        "RUSTFLAGS",
        "RUSTDOCFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_ENCODED_RUSTDOCFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_TARGET_DIR",
        "CARGO_TARGET_DIR",
        "CARGO_MAKEFLAGS",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_CRATE_NAME",
        "CARGO_BIN_NAME",
        "CARGO_TARGET_TMPDIR",
        "CARGO_RUSTC_CURRENT_DIR",
        "OUT_DIR",
    ];
    const PREFIXES: &[&str] =
        &["CARGO_PKG_", "CARGO_MANIFEST_", "CARGO_CFG_", "CARGO_FEATURE_", "CARGO_BIN_EXE_", "__CARGO"];
    EXACT.contains(&name)
        || PREFIXES.iter().any(|p| name.starts_with(p))
        || (name.starts_with("CARGO_TARGET_") && name.ends_with("_RUSTFLAGS"))
}

/// A `cargo` command at the repository root with the outer cargo's
/// variables removed.
pub fn cargo(repo: &Repo) -> Command {
    let program = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(program);
    command.current_dir(&repo.root);
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(is_inherited_cargo_var) {
            command.env_remove(&name);
        }
    }
    command
}

/// Joins RUSTFLAGS for `CARGO_ENCODED_RUSTFLAGS` (0x1f-separated, so paths
/// with spaces survive).
fn encoded_rustflags(extra: &[String]) -> String {
    COMMON_RUSTFLAGS.iter().map(|s| s.to_string()).chain(extra.iter().cloned()).collect::<Vec<_>>().join("\x1f")
}

fn run(mut command: Command, what: &str) -> Result<()> {
    let status = command.status().with_context(|| format!("cannot start cargo to build {what}"))?;
    if !status.success() {
        bail!("building {what} failed ({status})");
    }
    Ok(())
}

/// The `cargo build` command line for the bare-metal crates, for messages.
fn release_build(repo: &Repo, target_dir: PathBuf, extra_flags: &[String]) -> Command {
    let mut command = cargo(repo);
    command
        .args(["build", "--release", "--target", TARGET, "--target-dir"])
        .arg(target_dir)
        .env("CARGO_ENCODED_RUSTFLAGS", encoded_rustflags(extra_flags));
    command
}

/// Builds the ring-0 binary; returns its path.
pub fn build_hypervisor(repo: &Repo) -> Result<PathBuf> {
    let linker_script = repo.root.join("hypervisor/kernel/linker.ld");
    let flags =
        ["-C".to_string(), "code-model=kernel".into(), "-C".into(), format!("link-arg=-T{}", linker_script.display())];
    let mut command = release_build(repo, repo.hypervisor_target_dir(), &flags);
    command.args(["-p", "parvus-hypervisor"]);
    run(command, "the hypervisor")?;
    let elf = repo.hypervisor_elf();
    if !elf.is_file() {
        bail!("the hypervisor build succeeded but {} is missing", repo.show(&elf));
    }
    Ok(elf)
}

/// Builds the given guest crates in one cargo invocation.
pub fn build_guests(repo: &Repo, guests: &[GuestCrate]) -> Result<()> {
    if guests.is_empty() {
        return Ok(());
    }
    let linker_script = repo.root.join("guest-sdk/guest.ld");
    let flags = ["-C".to_string(), format!("link-arg=-T{}", linker_script.display())];
    let mut command = release_build(repo, repo.guests_target_dir(), &flags);
    for guest in guests {
        command.args([OsStr::new("-p"), OsStr::new(&guest.name)]);
    }
    run(command, "the demo guests")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_only_outer_cargo_variables() {
        for inherited in [
            "CARGO",
            "RUSTFLAGS",
            "CARGO_ENCODED_RUSTFLAGS",
            "CARGO_PKG_NAME",
            "CARGO_MANIFEST_DIR",
            "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
            "CARGO_TARGET_DIR",
            "CARGO_MAKEFLAGS",
        ] {
            assert!(is_inherited_cargo_var(inherited), "{inherited}");
        }
        for kept in
            ["CARGO_HOME", "CARGO_NET_OFFLINE", "RUSTUP_TOOLCHAIN", "PATH", "CARGO_TERM_COLOR", "CARGO_BUILD_JOBS"]
        {
            assert!(!is_inherited_cargo_var(kept), "{kept}");
        }
    }

    #[test]
    fn rustflags_are_encoded() {
        let flags = encoded_rustflags(&["-C".into(), "link-arg=-T/a dir/x.ld".into()]);
        let parts: Vec<&str> = flags.split('\x1f').collect();
        assert_eq!(parts[..2], ["-C", "relocation-model=static"]);
        assert_eq!(parts.last(), Some(&"link-arg=-T/a dir/x.ld"));
        assert!(parts.contains(&"link-arg=-Wl,--build-id=none"));
    }

    #[test]
    fn finds_the_demo_guests() {
        let guests = demo_guests(&Repo::locate()).unwrap();
        assert!(guests.iter().any(|g| g.name == "hello"), "{guests:?}");
        assert!(guests.windows(2).all(|w| w[0].name < w[1].name));
    }
}
