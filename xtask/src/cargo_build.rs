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

/// What a crate under `demo-guests/` is, from `[package.metadata.parvus]
/// kind` in its `Cargo.toml` (and whether it has a binary at all). Each
/// kind of binary is linked with its own script, so each is built in its
/// own cargo invocation, into its own target directory (cargo would
/// otherwise rebuild the shared dependencies every time the flags change).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrateKind {
    /// A guest built with the guest SDK, for a paravirtualized domain (the
    /// default); linked with `guest-sdk/guest.ld`.
    Paravirtualized,
    /// An unmodified kernel (`kind = "bare-metal"`), for an emulated domain
    /// or a native run; linked with `demo-guests/bare-rt/kernel.ld`.
    BareMetal,
    /// The boot shim (`kind = "boot-shim"`) that runs a bare-metal kernel
    /// natively; linked with its own `shim.ld`.
    BootShim,
    /// A library (no binary target, e.g. `bare-rt`): built only as a
    /// dependency of the others.
    Library,
}

impl CrateKind {
    /// How messages name it.
    pub fn describe(self) -> &'static str {
        match self {
            CrateKind::Paravirtualized => "a paravirtualized guest",
            CrateKind::BareMetal => "a bare-metal kernel",
            CrateKind::BootShim => "the boot shim",
            CrateKind::Library => "a library",
        }
    }
}

/// A crate under `demo-guests/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestCrate {
    /// Package (and binary) name.
    pub name: String,
    /// Its folder.
    pub dir: PathBuf,
    /// What it is.
    pub kind: CrateKind,
}

#[derive(Deserialize)]
struct CargoToml {
    package: Package,
    /// `[[bin]]` tables.
    #[serde(default)]
    bin: Vec<toml::Value>,
}

#[derive(Deserialize)]
struct Package {
    name: String,
    #[serde(default)]
    metadata: Option<Metadata>,
}

#[derive(Deserialize)]
struct Metadata {
    parvus: Option<ParvusMetadata>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ParvusMetadata {
    kind: String,
}

/// The kind a `Cargo.toml` declares; `has_bin`: it has a binary target
/// (a `[[bin]]` table or `src/main.rs`).
fn crate_kind(parsed: &CargoToml, has_bin: bool) -> Result<CrateKind, String> {
    let declared = parsed.package.metadata.as_ref().and_then(|m| m.parvus.as_ref()).map(|p| p.kind.as_str());
    match (declared, has_bin) {
        (None, false) => Ok(CrateKind::Library),
        (None, true) => Ok(CrateKind::Paravirtualized),
        (Some(kind), false) => Err(format!("[package.metadata.parvus] kind = {kind:?}, but the crate has no binary")),
        (Some("paravirtualized"), true) => Ok(CrateKind::Paravirtualized),
        (Some("bare-metal"), true) => Ok(CrateKind::BareMetal),
        (Some("boot-shim"), true) => Ok(CrateKind::BootShim),
        (Some(other), true) => Err(format!(
            "[package.metadata.parvus] kind = {other:?}: expected \"paravirtualized\" (the default), \"bare-metal\" or \"boot-shim\""
        )),
    }
}

/// Every demo-guest crate (libraries and the boot shim included), sorted by name.
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
        let has_bin = !parsed.bin.is_empty() || crate_dir.join("src/main.rs").is_file();
        let kind = crate_kind(&parsed, has_bin).map_err(|e| anyhow::anyhow!("{}: {e}", repo.show(&cargo_toml)))?;
        guests.push(GuestCrate { name: parsed.package.name, dir: crate_dir, kind });
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

/// Builds the binary crates among `guests`: one cargo invocation per kind,
/// each with its linker script and target directory. Libraries are built
/// only as the others' dependencies.
pub fn build_guests(repo: &Repo, guests: &[GuestCrate]) -> Result<()> {
    let kinds = [
        (CrateKind::Paravirtualized, "guest-sdk/guest.ld", repo.guests_target_dir(), "the demo guests"),
        (CrateKind::BareMetal, "demo-guests/bare-rt/kernel.ld", repo.bare_metal_target_dir(), "the bare-metal kernels"),
        (CrateKind::BootShim, "demo-guests/boot-shim/shim.ld", repo.boot_shim_target_dir(), "the boot shim"),
    ];
    for (kind, script, target_dir, what) in kinds {
        let crates: Vec<&GuestCrate> = guests.iter().filter(|g| g.kind == kind).collect();
        if crates.is_empty() {
            continue;
        }
        let linker_script = repo.root.join(script);
        let flags = ["-C".to_string(), format!("link-arg=-T{}", linker_script.display())];
        let mut command = release_build(repo, target_dir, &flags);
        for guest in crates {
            command.args([OsStr::new("-p"), OsStr::new(&guest.name)]);
        }
        run(command, what)?;
    }
    Ok(())
}

/// Builds the bare-metal kernels (`kind = "bare-metal"`); returns their
/// ELF files.
pub fn build_bare_metal_kernels(repo: &Repo) -> Result<Vec<PathBuf>> {
    let kernels: Vec<GuestCrate> = demo_guests(repo)?.into_iter().filter(|g| g.kind == CrateKind::BareMetal).collect();
    build_guests(repo, &kernels)?;
    Ok(kernels.iter().map(|k| repo.bare_metal_elf(&k.name)).collect())
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
        let kind = |name: &str| guests.iter().find(|g| g.name == name).map(|g| g.kind);
        assert_eq!(kind("hello"), Some(CrateKind::Paravirtualized), "{guests:?}");
        assert_eq!(kind("pg-probe-bare"), Some(CrateKind::BareMetal));
        assert_eq!(kind("boot-shim"), Some(CrateKind::BootShim));
        assert_eq!(kind("bare-rt"), Some(CrateKind::Library));
        assert!(guests.windows(2).all(|w| w[0].name < w[1].name));
    }

    fn kind_of(cargo_toml: &str, has_bin: bool) -> Result<CrateKind, String> {
        crate_kind(&toml::from_str(cargo_toml).unwrap(), has_bin)
    }

    #[test]
    fn crate_kinds_from_metadata() {
        let plain = "[package]\nname = \"x\"\n";
        assert_eq!(kind_of(plain, true), Ok(CrateKind::Paravirtualized));
        assert_eq!(kind_of(plain, false), Ok(CrateKind::Library));
        let with = |kind: &str| format!("{plain}[package.metadata.parvus]\nkind = \"{kind}\"\n");
        assert_eq!(kind_of(&with("bare-metal"), true), Ok(CrateKind::BareMetal));
        assert_eq!(kind_of(&with("boot-shim"), true), Ok(CrateKind::BootShim));
        assert_eq!(kind_of(&with("paravirtualized"), true), Ok(CrateKind::Paravirtualized));
        assert!(kind_of(&with("bare-metal"), false).unwrap_err().contains("has no binary"));
        let e = kind_of(&with("unikernel"), true).unwrap_err();
        assert!(e.starts_with("[package.metadata.parvus] kind = \"unikernel\": expected"), "{e}");
    }
}
