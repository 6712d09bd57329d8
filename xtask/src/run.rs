//! `cargo xtask run [--manifest FILE] [--gdb] [-- QEMU ARGS]`: build, then
//! boot under QEMU with the serial console on this terminal.
//!
//! The exit status passes the hypervisor's verdict through: 0 when every
//! domain ended as expected, the hypervisor's exit code otherwise (1: some
//! domain did not, 2: the hypervisor panicked or faulted), and
//! [`NO_HYPERVISOR_EXIT`] when QEMU ended without the hypervisor's exit (a
//! triple fault or reset exits QEMU with 0, which is *not* success).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;

use crate::build::{build_binaries, check_manifest, manifest_path, pack, Prepared};
use crate::qemu::{self, describe_status, STATUS_ALL_AS_EXPECTED};
use crate::repo::{from_cwd, Repo};

/// Exit status of `run` when QEMU stopped without the hypervisor's exit.
pub const NO_HYPERVISOR_EXIT: u8 = 125;

/// Arguments of `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The domain manifest (default: scenarios/demo/manifest.toml).
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,
    /// Start QEMU halted, waiting for gdb on port 1234, and print the gdb command.
    #[arg(long)]
    pub gdb: bool,
    /// Extra arguments for QEMU (after `--`).
    #[arg(last = true, value_name = "QEMU ARGS")]
    pub qemu_args: Vec<String>,
}

/// Maps QEMU's exit status to `run`'s.
pub fn exit_code(status: Option<i32>) -> u8 {
    match status {
        Some(STATUS_ALL_AS_EXPECTED) => 0,
        Some(s) if s > 1 && s % 2 == 1 && s >> 1 <= 255 => (s >> 1) as u8,
        _ => NO_HYPERVISOR_EXIT,
    }
}

/// The gdb command that loads the hypervisor's and the guests' symbols and
/// attaches to QEMU.
pub fn gdb_command(prepared: &Prepared) -> String {
    let mut command = format!("gdb {} -ex 'target remote :1234'", from_cwd(&prepared.hypervisor));
    let mut seen: Vec<&PathBuf> = Vec::new();
    for (_, image) in &prepared.images {
        if !seen.contains(&image) {
            seen.push(image);
            command.push_str(&format!(" -ex 'add-symbol-file {}'", from_cwd(image)));
        }
    }
    command
}

/// `cargo xtask run`.
pub fn main(args: &RunArgs) -> Result<ExitCode> {
    let repo = Repo::locate();
    let manifest = manifest_path(args.manifest.as_deref(), repo.default_manifest());
    let file = check_manifest(&repo, &manifest)?;
    qemu::ensure_installed()?;
    let hypervisor = build_binaries(&repo)?;
    let prepared = pack(&repo, file, hypervisor)?;
    // -icount: virtual time follows instructions, so a run prints the same
    // thing every time (see the scenarios).
    let config = prepared.qemu(true, args.gdb, args.qemu_args.clone());

    if args.gdb {
        eprintln!("xtask: QEMU is waiting for gdb on localhost:1234; in another terminal run:");
        eprintln!("  {}", gdb_command(&prepared));
        eprintln!("xtask: every guest is linked at 0x400000, so symbols of different guests overlap.");
    }
    eprintln!("xtask: {}", config.shell_line());
    let status = config.command().status().with_context(|| format!("cannot start {}", qemu::QEMU))?;
    let code = status.code();
    if code != Some(STATUS_ALL_AS_EXPECTED) {
        eprintln!("xtask: {}", describe_status(code));
    }
    Ok(ExitCode::from(exit_code(code)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::ManifestFile;
    use parvus_core::manifest::Manifest;

    #[test]
    fn exit_codes_pass_through() {
        assert_eq!(exit_code(Some(1)), 0);
        assert_eq!(exit_code(Some(3)), 1);
        assert_eq!(exit_code(Some(5)), 2);
        assert_eq!(exit_code(Some(0)), NO_HYPERVISOR_EXIT);
        assert_eq!(exit_code(None), NO_HYPERVISOR_EXIT);
        assert_eq!(exit_code(Some(2)), NO_HYPERVISOR_EXIT);
    }

    #[test]
    fn gdb_command_names_every_image_once() {
        let prepared = Prepared {
            file: ManifestFile {
                path: "m.toml".into(),
                shown: "m.toml".into(),
                manifest: Manifest { machine: Default::default(), domains: vec![] },
                sources: vec![],
            },
            hypervisor: "/nonexistent/parvus".into(),
            bundle: "/nonexistent/b.tar".into(),
            images: vec![
                ("a".into(), "/nonexistent/yielder".into()),
                ("b".into(), "/nonexistent/yielder".into()),
                ("c".into(), "/nonexistent/hello".into()),
            ],
        };
        assert_eq!(
            gdb_command(&prepared),
            "gdb /nonexistent/parvus -ex 'target remote :1234' -ex 'add-symbol-file /nonexistent/yielder' \
             -ex 'add-symbol-file /nonexistent/hello'"
        );
    }
}
