//! Reading a manifest file and checking it, with its images, before QEMU
//! starts.
//!
//! The checks are parvus-core's (the ones the hypervisor repeats on the
//! bundle); this module adds what only the host knows: the file name for
//! messages, and where each `image` comes from. An `image` is a demo-guest
//! crate name when `demo-guests/` has a crate of that name, otherwise a path
//! relative to the manifest file.
//!
//! A domain's `mode` decides which kind of image it takes: a paravirtualized
//! domain an SDK guest, an emulated one a bare-metal kernel (at most
//! [`MAX_MEMORY`] of it). For a crate the kind is known from its
//! `Cargo.toml` before anything is built; a file is parsed as the kind its
//! domain needs, and refused with the reason if it is the other kind.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};
use hypercall_abi::bare_metal::MAX_MEMORY;
use parvus_core::image::GuestImage;
use parvus_core::manifest::{printable, DomainSpec, Manifest, MemorySize, Mode};

use crate::cargo_build::{CrateKind, GuestCrate};
use crate::repo::{not_a_file, Repo};

/// Where a domain's image comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageSource {
    /// A demo-guest crate, built by `cargo xtask build`.
    Crate {
        /// The crate (and binary) name.
        name: String,
        /// What it is (a paravirtualized guest or a bare-metal kernel).
        kind: CrateKind,
    },
    /// A file named by path.
    File(PathBuf),
}

/// A manifest file that passed parvus-core's checks, with its images
/// resolved.
#[derive(Clone, Debug)]
pub struct ManifestFile {
    /// The file.
    pub path: PathBuf,
    /// The file as messages name it.
    pub shown: String,
    /// Its content.
    pub manifest: Manifest,
    /// Each domain's image source, in domain order.
    pub sources: Vec<ImageSource>,
}

impl ManifestFile {
    /// Reads, parses and validates `path`, and resolves every image.
    pub fn load(repo: &Repo, path: &Path, guests: &[GuestCrate]) -> Result<ManifestFile> {
        let shown = printable(&repo.show(path));
        let text = std::fs::read_to_string(path).map_err(|e| anyhow!("{shown}: cannot read the manifest: {e}"))?;
        let manifest = Manifest::parse(&text).map_err(|e| anyhow!("{}", e.in_file(&shown)))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let sources = manifest
            .domains
            .iter()
            .map(|domain| resolve(repo, &shown, dir, domain, guests))
            .collect::<Result<Vec<_>>>()?;
        Ok(ManifestFile { path: path.to_path_buf(), shown, manifest, sources })
    }

    /// Name for the bundle: the folder of a `manifest.toml`, else the file
    /// stem (`scenarios/demo/manifest.toml` -> `demo`).
    pub fn bundle_name(&self) -> String {
        let stem = self.path.file_stem().and_then(|s| s.to_str()).unwrap_or("bundle");
        if stem == "manifest" {
            if let Some(dir) = self.path.parent().and_then(|d| d.file_name()).and_then(|d| d.to_str()) {
                return dir.to_string();
            }
        }
        stem.to_string()
    }

    /// Each domain's image file (crate images at their build output path).
    pub fn image_files(&self, repo: &Repo) -> Vec<(&DomainSpec, PathBuf)> {
        self.manifest
            .domains
            .iter()
            .zip(&self.sources)
            .map(|(domain, source)| {
                let path = match source {
                    // `resolve` accepts only crates that have an image.
                    ImageSource::Crate { name, kind } => {
                        repo.crate_elf(name, *kind).unwrap_or_else(|| repo.guest_elf(name))
                    }
                    ImageSource::File(path) => path.clone(),
                };
                (domain, path)
            })
            .collect()
    }

    /// Checks the images that are plain files (these need no build), so a
    /// bad one is reported before anything is compiled.
    pub fn check_file_images(&self, repo: &Repo) -> Result<()> {
        for ((domain, path), source) in self.image_files(repo).into_iter().zip(&self.sources) {
            if matches!(source, ImageSource::File(_)) {
                self.check_image(repo, domain, &path)?;
            }
        }
        Ok(())
    }

    /// Checks every image (after the guests are built).
    pub fn check_all_images(&self, repo: &Repo) -> Result<()> {
        for (domain, path) in self.image_files(repo) {
            self.check_image(repo, domain, &path)?;
        }
        Ok(())
    }

    /// Checks one image as the hypervisor will: ELF headers, ABI note (an
    /// SDK guest has it, a bare-metal kernel must not) and placement in the
    /// domain's memory.
    fn check_image(&self, repo: &Repo, domain: &DomainSpec, path: &Path) -> Result<()> {
        let prefix = || format!("{}: domain \"{}\", field `image` ({})", self.shown, domain.name, printable(&repo.show(path)));
        let bytes = std::fs::read(path).map_err(|e| anyhow!("{}: cannot read: {e}", prefix()))?;
        let memory = domain.memory.bytes();
        let checked = match domain.mode {
            Mode::Paravirtualized => GuestImage::parse(&bytes).and_then(|image| image.check_placement(memory).map(drop)),
            Mode::Emulated => {
                GuestImage::parse_bare_metal(&bytes).and_then(|image| image.check_bare_metal_placement(memory))
            }
        };
        checked.map_err(|e| anyhow!("{}: {e}", prefix()))
    }
}

/// Decides where a domain's image comes from, and checks that a crate
/// image is the kind its domain's `mode` runs, and that an emulated domain
/// asks for no more memory than an unmodified kernel may have.
fn resolve(repo: &Repo, shown: &str, dir: &Path, domain: &DomainSpec, guests: &[GuestCrate]) -> Result<ImageSource> {
    if domain.mode == Mode::Emulated && domain.memory.bytes() > MAX_MEMORY {
        return Err(anyhow!(
            "{shown}: domain \"{}\", field `memory`: {} is more than the {} an emulated domain may have \
             (hypercall_abi::bare_metal::MAX_MEMORY)",
            domain.name,
            domain.memory,
            MemorySize(MAX_MEMORY)
        ));
    }
    let image = domain.image.as_str();
    if let Some(guest) = guests.iter().find(|g| g.name == image) {
        let wanted = match domain.mode {
            Mode::Paravirtualized => CrateKind::Paravirtualized,
            Mode::Emulated => CrateKind::BareMetal,
        };
        if guest.kind == wanted {
            return Ok(ImageSource::Crate { name: guest.name.clone(), kind: guest.kind });
        }
        let runs_in = match guest.kind {
            CrateKind::Paravirtualized => ", which runs only in a domain with mode = \"paravirtualized\" (the default)",
            CrateKind::BareMetal => ", which runs only in a domain with mode = \"emulated\" (or natively)",
            CrateKind::BootShim | CrateKind::Library => ", not a guest image",
        };
        return Err(anyhow!(
            "{shown}: domain \"{}\", field `image`: \"{}\" is {}{runs_in}",
            domain.name,
            guest.name,
            guest.kind.describe()
        ));
    }
    let path = dir.join(image);
    let Some(why) = not_a_file(repo, &path) else {
        return Ok(ImageSource::File(path));
    };
    let known = guests
        .iter()
        .filter(|g| matches!(g.kind, CrateKind::Paravirtualized | CrateKind::BareMetal))
        .map(|g| g.name.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    Err(anyhow!(
        "{shown}: domain \"{}\", field `image`: \"{}\" is neither a demo guest ({known}) nor a file ({why})",
        domain.name,
        image.escape_debug(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_elf::{bare_metal_elf, guest_elf};

    fn write(dir: &Path, name: &str, text: &[u8]) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn guests() -> Vec<GuestCrate> {
        vec![
            GuestCrate { name: "hello".into(), dir: "demo-guests/hello".into(), kind: CrateKind::Paravirtualized },
            GuestCrate { name: "probe".into(), dir: "demo-guests/probe".into(), kind: CrateKind::BareMetal },
            GuestCrate { name: "rt".into(), dir: "demo-guests/rt".into(), kind: CrateKind::Library },
        ]
    }

    #[test]
    fn resolves_crates_and_files() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "mine.elf", &guest_elf(0x40_0000));
        let path = write(
            dir.path(),
            "manifest.toml",
            b"[[domain]]\nname = \"a\"\nimage = \"hello\"\nmemory = \"1M\"\n\
              [[domain]]\nname = \"b\"\nimage = \"mine.elf\"\nmemory = \"1M\"\n\
              [[domain]]\nname = \"c\"\nimage = \"hello\"\nmemory = \"1M\"\n",
        );
        let repo = Repo::locate();
        let file = ManifestFile::load(&repo, &path, &guests()).unwrap();
        assert_eq!(file.sources[0], ImageSource::Crate { name: "hello".into(), kind: CrateKind::Paravirtualized });
        assert_eq!(file.sources[1], ImageSource::File(dir.path().join("mine.elf")));
        assert_eq!(file.bundle_name(), dir.path().file_name().unwrap().to_str().unwrap());
        file.check_file_images(&repo).unwrap();
        let files = file.image_files(&repo);
        assert_eq!(files[0].1, repo.guest_elf("hello"));
    }

    #[test]
    fn bundle_name_from_file_stem() {
        let file = ManifestFile {
            path: "x/tests/dup.toml".into(),
            shown: String::new(),
            manifest: Manifest { machine: Default::default(), domains: vec![] },
            sources: vec![],
        };
        assert_eq!(file.bundle_name(), "dup");
    }

    #[test]
    fn image_errors_name_file_domain_and_field() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "far.elf", &guest_elf(0x1000_0000));
        write(dir.path(), "text.elf", b"just text\n");
        let path = write(
            dir.path(),
            "m.toml",
            b"[[domain]]\nname = \"far\"\nimage = \"far.elf\"\nmemory = \"1M\"\n\
              [[domain]]\nname = \"text\"\nimage = \"text.elf\"\nmemory = \"1M\"\n",
        );
        let repo = Repo::locate();
        let file = ManifestFile::load(&repo, &path, &guests()).unwrap();
        let e = file.check_file_images(&repo).unwrap_err().to_string();
        let shown = repo.show(&path);
        assert!(
            e.starts_with(&format!(
                "{shown}: domain \"far\", field `image` ({}): segment 0 ends at",
                repo.show(&dir.path().join("far.elf"))
            )),
            "{e}"
        );
        let mut file = file;
        file.manifest.domains.remove(0);
        file.sources.remove(0);
        let e = file.check_file_images(&repo).unwrap_err().to_string();
        assert!(e.ends_with("): not an ELF file (no \\x7fELF magic)"), "{e}");
    }

    #[test]
    fn missing_image() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "m.toml", b"[[domain]]\nname = \"a\"\nimage = \"nope\"\nmemory = \"1M\"\n");
        let repo = Repo::locate();
        let e = ManifestFile::load(&repo, &path, &guests()).unwrap_err().to_string();
        assert!(
            e.contains(": domain \"a\", field `image`: \"nope\" is neither a demo guest (hello, probe) nor a file ("),
            "{e}"
        );
    }

    /// An image path with a control character in it is printed escaped:
    /// the message stays one line.
    #[test]
    fn odd_image_paths_stay_on_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "m.toml", b"[[domain]]\nname = \"a\"\nimage = \"x\\ny\\r\"\nmemory = \"1M\"\n");
        let e = ManifestFile::load(&Repo::locate(), &path, &guests()).unwrap_err().to_string();
        assert!(!e.chars().any(char::is_control), "{e:?}");
        assert!(e.ends_with("/x\\ny\\r does not exist)"), "{e}");
    }

    #[test]
    fn crate_images_follow_the_mode() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repo::locate();
        let load = |domain: &str| {
            let path = write(dir.path(), "m.toml", format!("[machine]\nmemory = \"1G\"\n[[domain]]\nname = \"d\"\n{domain}").as_bytes());
            ManifestFile::load(&repo, &path, &guests()).map(|f| f.sources[0].clone()).map_err(|e| e.to_string())
        };
        assert_eq!(
            load("image = \"probe\"\nmemory = \"4M\"\nmode = \"emulated\"\n"),
            Ok(ImageSource::Crate { name: "probe".into(), kind: CrateKind::BareMetal })
        );
        let e = load("image = \"probe\"\nmemory = \"4M\"\n").unwrap_err();
        assert!(
            e.ends_with(": domain \"d\", field `image`: \"probe\" is a bare-metal kernel, which runs only in a domain with mode = \"emulated\" (or natively)"),
            "{e}"
        );
        let e = load("image = \"hello\"\nmemory = \"4M\"\nmode = \"emulated\"\n").unwrap_err();
        assert!(
            e.ends_with(": domain \"d\", field `image`: \"hello\" is a paravirtualized guest, which runs only in a domain with mode = \"paravirtualized\" (the default)"),
            "{e}"
        );
        let e = load("image = \"rt\"\nmemory = \"4M\"\n").unwrap_err();
        assert!(e.ends_with(": domain \"d\", field `image`: \"rt\" is a library, not a guest image"), "{e}");
        let e = load("image = \"probe\"\nmemory = \"512M\"\nmode = \"emulated\"\n").unwrap_err();
        assert!(
            e.ends_with(": domain \"d\", field `memory`: 512M is more than the 256M an emulated domain may have (hypercall_abi::bare_metal::MAX_MEMORY)"),
            "{e}"
        );
    }

    /// Fuzz: one domain with any `image` (the demo crates of every kind, a
    /// file that exists, relative, absolute and odd paths, unicode and
    /// control characters, NUL...), either mode and several sizes. Loading
    /// never panics; a refusal is one printable line that names the file,
    /// the domain and the field (`image` or `memory`, the only ones that
    /// can be wrong here). proptest prints a failing input, reduced, and
    /// keeps its seed in `xtask/proptest-regressions/` to replay it.
    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        fn image() -> impl Strategy<Value = String> {
            prop_oneof![
                prop::sample::select(vec!["hello", "probe", "rt", "mine.elf", "../mine.elf", "./mine.elf", "/", ".", "..", "/dev/null", " "])
                    .prop_map(String::from),
                "[a-z./é名\\ -]{0,12}",
                prop::collection::vec(any::<char>(), 0..12).prop_map(|c| c.into_iter().collect()),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(10_000))]
            #[test]
            fn fuzz_manifest_load(
                image in image(),
                memory in prop::sample::select(vec!["1M", "4M", "256M", "300M"]),
                emulated in any::<bool>(),
            ) {
                static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
                let dir = DIR.get_or_init(|| {
                    let dir = tempfile::tempdir().unwrap();
                    write(dir.path(), "mine.elf", &guest_elf(0x40_0000));
                    dir
                });
                let mode = if emulated { "mode = \"emulated\"\n" } else { "" };
                let text = format!(
                    "[machine]\nmemory = \"1G\"\n[[domain]]\nname = \"d\"\nimage = {}\nmemory = \"{memory}\"\n{mode}",
                    toml::Value::String(image.clone())
                );
                // What `ManifestFile::load` does once it has read the file
                // (without writing 2,000 files).
                let shown = "fuzz.toml";
                let checked = Manifest::parse(&text).map_err(|e| anyhow!("{}", e.in_file(shown))).and_then(|m| {
                    m.domains.iter().map(|d| resolve(&Repo::locate(), shown, dir.path(), d, &guests())).collect::<Result<Vec<_>>>()
                });
                if let Err(e) = checked {
                    let e = e.to_string();
                    prop_assert!(!e.chars().any(char::is_control), "not one printable line: {e:?}");
                    prop_assert!(e.starts_with(shown), "{e}");
                    prop_assert!(e.contains("domain \"d\", field `image`") || e.contains("domain \"d\", field `memory`"), "{e}");
                }
            }
        }
    }

    #[test]
    fn file_images_follow_the_mode() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "kernel.elf", &bare_metal_elf(0x20_0000));
        write(dir.path(), "guest.elf", &guest_elf(0x40_0000));
        let repo = Repo::locate();
        let check = |domain: &str| {
            let path = write(dir.path(), "m.toml", format!("[[domain]]\nname = \"d\"\nmemory = \"4M\"\n{domain}").as_bytes());
            ManifestFile::load(&repo, &path, &guests()).unwrap().check_file_images(&repo).map_err(|e| e.to_string())
        };
        check("image = \"kernel.elf\"\nmode = \"emulated\"\n").unwrap();
        check("image = \"guest.elf\"\n").unwrap();
        let e = check("image = \"guest.elf\"\nmode = \"emulated\"\n").unwrap_err();
        assert!(e.contains("guest.elf): a paravirtualized guest (it carries the Parvus ABI note)"), "{e}");
        let e = check("image = \"kernel.elf\"\n").unwrap_err();
        assert!(e.contains("kernel.elf): no Parvus ABI note"), "{e}");
        assert!(e.ends_with("(an unmodified kernel needs mode = \"emulated\")"), "{e}");
        write(dir.path(), "low.elf", &bare_metal_elf(0x10_0000));
        let e = check("image = \"low.elf\"\nmode = \"emulated\"\n").unwrap_err();
        assert!(e.contains("low.elf): segment 0 starts at 0x100000, inside the loader's first 2M"), "{e}");
    }
}
