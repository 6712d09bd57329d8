//! Where things are in the repository and under `target/`.

use std::path::{Path, PathBuf};

/// The one target triple everything is built for (host == target; the
/// bare-metal behaviour comes from RUSTFLAGS, see [`crate::cargo_build`]).
pub const TARGET: &str = "x86_64-unknown-linux-gnu";

/// The repository this xtask was built from.
#[derive(Clone, Debug)]
pub struct Repo {
    /// The workspace root.
    pub root: PathBuf,
}

impl Repo {
    /// The workspace that contains this crate (xtask is always run from its
    /// own checkout through the `cargo xtask` alias).
    pub fn locate() -> Repo {
        let xtask_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        Repo { root: xtask_dir.parent().unwrap_or(xtask_dir).to_path_buf() }
    }

    /// The ring-0 binary.
    pub fn hypervisor_elf(&self) -> PathBuf {
        self.root.join("target/hypervisor").join(TARGET).join("release/parvus")
    }

    /// Target directory of the hypervisor build.
    pub fn hypervisor_target_dir(&self) -> PathBuf {
        self.root.join("target/hypervisor")
    }

    /// Target directory of the guest builds.
    pub fn guests_target_dir(&self) -> PathBuf {
        self.root.join("target/guests")
    }

    /// A demo guest's binary.
    pub fn guest_elf(&self, crate_name: &str) -> PathBuf {
        self.guests_target_dir().join(TARGET).join("release").join(crate_name)
    }

    /// Target directory of the bare-metal kernels.
    pub fn bare_metal_target_dir(&self) -> PathBuf {
        self.root.join("target/bare-metal")
    }

    /// A bare-metal kernel's binary.
    pub fn bare_metal_elf(&self, crate_name: &str) -> PathBuf {
        self.bare_metal_target_dir().join(TARGET).join("release").join(crate_name)
    }

    /// Target directory of the boot shim.
    pub fn boot_shim_target_dir(&self) -> PathBuf {
        self.root.join("target/boot-shim")
    }

    /// The boot shim's binary (QEMU's `-kernel` for native runs).
    pub fn boot_shim_elf(&self) -> PathBuf {
        self.boot_shim_target_dir().join(TARGET).join("release/boot-shim")
    }

    /// The binary of a demo-guest crate of `kind` (`None` for a library).
    pub fn crate_elf(&self, crate_name: &str, kind: crate::cargo_build::CrateKind) -> Option<PathBuf> {
        use crate::cargo_build::CrateKind;
        match kind {
            CrateKind::Paravirtualized => Some(self.guest_elf(crate_name)),
            CrateKind::BareMetal => Some(self.bare_metal_elf(crate_name)),
            CrateKind::BootShim => Some(self.boot_shim_elf()),
            CrateKind::Library => None,
        }
    }

    /// Where boot bundles are written.
    pub fn bundles_dir(&self) -> PathBuf {
        self.root.join("target/bundles")
    }

    /// The folder of QEMU scenarios.
    pub fn scenarios_dir(&self) -> PathBuf {
        self.root.join("scenarios")
    }

    /// The manifest `build` and `run` use without `--manifest`.
    pub fn default_manifest(&self) -> PathBuf {
        self.scenarios_dir().join("demo/manifest.toml")
    }

    /// The manifest `bench` runs.
    pub fn bench_manifest(&self) -> PathBuf {
        self.scenarios_dir().join("bench/manifest.toml")
    }

    /// Where `bench` writes its JSON.
    pub fn bench_json(&self) -> PathBuf {
        self.root.join("target/bench.json")
    }

    /// Where `compare` writes its JSON, chart and manifests.
    pub fn compare_dir(&self) -> PathBuf {
        self.root.join("target/compare")
    }

    /// The book's folder (mdBook's `book.toml` and `src/`).
    pub fn book_dir(&self) -> PathBuf {
        self.root.join("docs")
    }

    /// Where the book is built (`build-dir` in `docs/book.toml`, so that
    /// `mdbook build docs` writes to the same place).
    pub fn book_output_dir(&self) -> PathBuf {
        self.book_dir().join("book")
    }

    /// The folder of demo-guest crates.
    pub fn demo_guests_dir(&self) -> PathBuf {
        self.root.join("demo-guests")
    }

    /// `path` for messages: relative to the repository root when inside it.
    pub fn show(&self, path: &Path) -> String {
        path.strip_prefix(&self.root).unwrap_or(path).display().to_string()
    }
}

/// Why `path`, named by a manifest or a scenario as an ELF file, cannot
/// be read as one (it does not exist, it is a directory...), for messages
/// of the form `... nor a file (<why>)`; `None` when it is a file.
pub fn not_a_file(repo: &Repo, path: &Path) -> Option<String> {
    // Printable: an `image` may hold a control character (a newline).
    let shown = parvus_core::manifest::printable(&repo.show(path));
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => None,
        Ok(meta) if meta.is_dir() => Some(format!("{shown} is a directory")),
        Ok(_) => Some(format!("{shown} is not a regular file")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(format!("{shown} does not exist")),
        Err(e) => Some(format!("{shown}: {e}")),
    }
}

/// Makes a path given on the command line absolute (relative to the
/// current directory), without touching the file system.
pub fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// `path` as the shortest way to name it from the current directory, for
/// commands the user will copy (such as the gdb line).
pub fn from_cwd(path: &Path) -> String {
    match std::env::current_dir() {
        Ok(cwd) => path.strip_prefix(&cwd).unwrap_or(path).display().to_string(),
        Err(_) => path.display().to_string(),
    }
}
