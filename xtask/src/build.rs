//! `cargo xtask build [--manifest FILE]`: check a manifest, build the
//! hypervisor and every demo guest, and pack the boot bundle.
//!
//! The order matters for error messages: everything that needs no compiler
//! (the manifest, image files named by path) is checked first, so a bad
//! manifest is reported in a second, before any build starts; crate images
//! are checked right after they are built, before QEMU ever starts.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use crate::cargo_build::{build_guests, build_hypervisor, demo_guests};
use crate::manifest::ManifestFile;
use crate::qemu::QemuConfig;
use crate::repo::{absolute, Repo};
use parvus_core::plural::count;

/// Arguments of `build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The domain manifest (default: scenarios/demo/manifest.toml).
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,
}

/// A manifest ready to boot.
#[derive(Clone, Debug)]
pub struct Prepared {
    /// The manifest.
    pub file: ManifestFile,
    /// The hypervisor ELF.
    pub hypervisor: PathBuf,
    /// The boot bundle.
    pub bundle: PathBuf,
    /// Each domain's name and image file (for gdb).
    pub images: Vec<(String, PathBuf)>,
}

impl Prepared {
    /// The QEMU boot of this bundle.
    pub fn qemu(&self, icount: bool, gdb: bool, extra_args: Vec<String>) -> QemuConfig {
        QemuConfig {
            kernel: self.hypervisor.clone(),
            initrd: self.bundle.clone(),
            memory: self.file.manifest.machine.memory,
            append: None,
            icount,
            gdb,
            extra_args,
        }
    }
}

/// The manifest path from `--manifest`, or `default`.
pub fn manifest_path(given: Option<&Path>, default: PathBuf) -> PathBuf {
    given.map(absolute).unwrap_or(default)
}

/// Step 1, no compiler needed: reads and checks the manifest and the image
/// files it names by path.
pub fn check_manifest(repo: &Repo, path: &Path) -> Result<ManifestFile> {
    let guests = demo_guests(repo)?;
    let file = ManifestFile::load(repo, path, &guests)?;
    file.check_file_images(repo)?;
    Ok(file)
}

/// Step 2: builds the hypervisor and every demo guest (paravirtualized
/// guests, bare-metal kernels and the boot shim); returns the hypervisor's
/// path.
pub fn build_binaries(repo: &Repo) -> Result<PathBuf> {
    let hypervisor = build_hypervisor(repo)?;
    build_guests(repo, &demo_guests(repo)?)?;
    Ok(hypervisor)
}

/// Step 3: checks the built images and writes `target/bundles/<name>.tar`.
pub fn pack(repo: &Repo, file: ManifestFile, hypervisor: PathBuf) -> Result<Prepared> {
    file.check_all_images(repo)?;
    let images: Vec<(String, PathBuf)> =
        file.image_files(repo).into_iter().map(|(domain, path)| (domain.name.clone(), path)).collect();
    let bundle = repo.bundles_dir().join(format!("{}.tar", file.bundle_name()));
    let paths: Vec<PathBuf> = images.iter().map(|(_, p)| p.clone()).collect();
    crate::bundle::write(&file.manifest, &file.shown, &paths, &bundle)?;
    Ok(Prepared { file, hypervisor, bundle, images })
}

/// All three steps.
pub fn build(repo: &Repo, manifest: &Path) -> Result<Prepared> {
    let file = check_manifest(repo, manifest)?;
    let hypervisor = build_binaries(repo)?;
    pack(repo, file, hypervisor)
}

/// `cargo xtask build`.
pub fn main(args: &BuildArgs) -> Result<ExitCode> {
    let repo = Repo::locate();
    let manifest = manifest_path(args.manifest.as_deref(), repo.default_manifest());
    let prepared = build(&repo, &manifest)?;
    println!("hypervisor: {}", repo.show(&prepared.hypervisor));
    println!("{}", bundle_line(&repo, &prepared));
    Ok(ExitCode::SUCCESS)
}

/// What `build` says about the bundle it wrote.
fn bundle_line(repo: &Repo, prepared: &Prepared) -> String {
    format!(
        "bundle: {} ({} from {}; list it with `tar tvf`)",
        repo.show(&prepared.bundle),
        count(prepared.images.len(), "domain", "domains"),
        prepared.file.shown
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use parvus_core::manifest::Manifest;

    #[test]
    fn the_bundle_line_counts_domains_in_the_right_number() {
        let repo = Repo::locate();
        let prepared = |images: usize| Prepared {
            file: ManifestFile {
                path: "m.toml".into(),
                shown: "m.toml".into(),
                manifest: Manifest { machine: Default::default(), domains: vec![] },
                sources: vec![],
            },
            hypervisor: "parvus".into(),
            bundle: "m.tar".into(),
            images: vec![("a".into(), "a.elf".into()); images],
        };
        assert_eq!(bundle_line(&repo, &prepared(1)), "bundle: m.tar (1 domain from m.toml; list it with `tar tvf`)");
        assert_eq!(bundle_line(&repo, &prepared(2)), "bundle: m.tar (2 domains from m.toml; list it with `tar tvf`)");
    }
}
