//! Native runs: a bare-metal kernel booted by the boot shim, no hypervisor.
//!
//! An unmodified kernel (a crate with `kind = "bare-metal"`) runs three
//! ways; natively, QEMU boots the boot shim (`demo-guests/boot-shim`) with
//! the kernel ELF as its module and the kernel's command line as its own:
//!
//! ```text
//! qemu-system-x86_64 ... -kernel <boot-shim> -initrd <kernel ELF> -append <cmdline>
//! ```
//!
//! with the same machine and `-icount` as every other run. A scenario asks
//! for one with a `[native]` table in its `scenario.toml` instead of a
//! `manifest.toml`; `cargo xtask run --native <crate>` does the same by hand.
//! The kernel's exit status comes back through `isa-debug-exit` as QEMU's
//! `(status << 1) | 1`, so a kernel that returns 0 makes QEMU exit 1, the
//! status scenarios expect by default.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use hypercall_abi::bare_metal::{BOOT_CMDLINE_MAX, LOADER_AREA_END};
use parvus_core::manifest::{MemorySize, MACHINE_MEMORY_GRANULE};
use serde::Deserialize;

use crate::cargo_build::{CrateKind, GuestCrate};
use crate::qemu::QemuConfig;
use crate::repo::{not_a_file, Repo};

/// Machine memory of a native run when the scenario does not say.
pub const DEFAULT_NATIVE_MEMORY: MemorySize = MemorySize(64 << 20);

/// The `[native]` table of a `scenario.toml`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NativeSpec {
    /// A bare-metal kernel crate, or an ELF path relative to the scenario.
    pub kernel: String,
    /// The kernel's command line (QEMU's `-append`), at most
    /// [`BOOT_CMDLINE_MAX`] bytes.
    #[serde(default)]
    pub cmdline: String,
    /// Machine memory (QEMU's `-m`), a whole number of MiB; default 64M.
    #[serde(default = "default_memory")]
    pub memory: MemorySize,
}

fn default_memory() -> MemorySize {
    DEFAULT_NATIVE_MEMORY
}

impl NativeSpec {
    /// Checks what can be checked without the kernel; `shown` is the file
    /// for messages.
    pub fn validate(&self, shown: &str) -> Result<()> {
        if self.cmdline.len() > BOOT_CMDLINE_MAX {
            bail!(
                "{shown}: [native], field `cmdline`: the command line is {} bytes long, at most {BOOT_CMDLINE_MAX} fit in BootInfo",
                self.cmdline.len()
            );
        }
        let bytes = self.memory.bytes();
        if !bytes.is_multiple_of(MACHINE_MEMORY_GRANULE) || bytes <= LOADER_AREA_END {
            bail!(
                "{shown}: [native], field `memory`: {} must be a whole number of MiB above the loader's {}",
                self.memory,
                MemorySize(LOADER_AREA_END)
            );
        }
        Ok(())
    }
}

/// Finds the kernel ELF a native run boots: a bare-metal crate's build
/// output, or a file relative to `dir` (booted as it is: the shim itself
/// reports a bad one). `shown` and `field` name the source for messages.
pub fn resolve_kernel(
    repo: &Repo,
    shown: &str,
    field: &str,
    dir: &Path,
    kernel: &str,
    guests: &[GuestCrate],
) -> Result<PathBuf> {
    if let Some(guest) = guests.iter().find(|g| g.name == kernel) {
        if guest.kind != CrateKind::BareMetal {
            bail!(
                "{shown}: {field}: \"{}\" is {}; a native run boots a bare-metal kernel (kind = \"bare-metal\")",
                guest.name,
                guest.kind.describe()
            );
        }
        return Ok(repo.bare_metal_elf(&guest.name));
    }
    let path = dir.join(kernel);
    let Some(why) = not_a_file(repo, &path) else {
        return Ok(path);
    };
    let known =
        guests.iter().filter(|g| g.kind == CrateKind::BareMetal).map(|g| g.name.as_str()).collect::<Vec<_>>().join(", ");
    Err(anyhow!(
        "{shown}: {field}: \"{}\" is neither a bare-metal kernel crate ({known}) nor a file ({why})",
        kernel.escape_debug(),
    ))
}

/// The crates a native run of `kernel` needs built: the boot shim and the
/// kernel (when it is a crate).
pub fn crates_to_build(guests: &[GuestCrate], kernel: &str) -> Vec<GuestCrate> {
    guests.iter().filter(|g| g.kind == CrateKind::BootShim || g.name == kernel).cloned().collect()
}

/// The QEMU boot of `kernel` under the boot shim.
pub fn qemu_config(repo: &Repo, kernel: PathBuf, spec: &NativeSpec, gdb: bool, extra_args: Vec<String>) -> QemuConfig {
    QemuConfig {
        kernel: repo.boot_shim_elf(),
        initrd: kernel,
        memory: spec.memory,
        append: (!spec.cmdline.is_empty()).then(|| spec.cmdline.clone()),
        icount: true,
        gdb,
        extra_args,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guests() -> Vec<GuestCrate> {
        vec![
            GuestCrate { name: "hello".into(), dir: "demo-guests/hello".into(), kind: CrateKind::Paravirtualized },
            GuestCrate { name: "probe".into(), dir: "demo-guests/probe".into(), kind: CrateKind::BareMetal },
            GuestCrate { name: "boot-shim".into(), dir: "demo-guests/boot-shim".into(), kind: CrateKind::BootShim },
        ]
    }

    fn spec(text: &str) -> Result<NativeSpec, String> {
        toml::from_str(text).map_err(|e| e.message().to_string())
    }

    #[test]
    fn parses_the_native_table() {
        let s = spec("kernel = \"probe\"\n").unwrap();
        assert_eq!(s, NativeSpec { kernel: "probe".into(), cmdline: String::new(), memory: DEFAULT_NATIVE_MEMORY });
        let s = spec("kernel = \"probe\"\ncmdline = \"quick\"\nmemory = \"128M\"\n").unwrap();
        assert_eq!((s.cmdline.as_str(), s.memory), ("quick", MemorySize(128 << 20)));
        assert!(spec("kernel = \"probe\"\ncolour = 1\n").unwrap_err().starts_with("unknown field `colour`"));
        assert!(spec("cmdline = \"x\"\n").unwrap_err().starts_with("missing field `kernel`"));
    }

    #[test]
    fn validates_cmdline_and_memory() {
        let mut s = spec("kernel = \"probe\"\n").unwrap();
        s.validate("s.toml").unwrap();
        s.memory = MemorySize(1 << 20);
        let e = s.validate("s.toml").unwrap_err().to_string();
        assert_eq!(e, "s.toml: [native], field `memory`: 1M must be a whole number of MiB above the loader's 2M");
        s.memory = DEFAULT_NATIVE_MEMORY;
        s.cmdline = "x".repeat(BOOT_CMDLINE_MAX + 1);
        let e = s.validate("s.toml").unwrap_err().to_string();
        assert!(e.starts_with("s.toml: [native], field `cmdline`: the command line is 257 bytes long"), "{e}");
    }

    #[test]
    fn resolves_crates_and_files() {
        let repo = Repo::locate();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("k.elf"), b"anything").unwrap();
        let resolve = |k: &str| resolve_kernel(&repo, "s.toml", "[native], field `kernel`", dir.path(), k, &guests());
        assert_eq!(resolve("probe").unwrap(), repo.bare_metal_elf("probe"));
        assert_eq!(resolve("k.elf").unwrap(), dir.path().join("k.elf"));
        let e = resolve("hello").unwrap_err().to_string();
        assert_eq!(
            e,
            "s.toml: [native], field `kernel`: \"hello\" is a paravirtualized guest; a native run boots a bare-metal \
             kernel (kind = \"bare-metal\")"
        );
        let e = resolve("nope").unwrap_err().to_string();
        assert!(e.starts_with("s.toml: [native], field `kernel`: \"nope\" is neither a bare-metal kernel crate (probe) nor a file ("), "{e}");
    }

    #[test]
    fn boots_the_shim_with_the_kernel_as_module() {
        let repo = Repo::locate();
        let s = spec("kernel = \"probe\"\ncmdline = \"a=1\"\n").unwrap();
        let config = qemu_config(&repo, "k.elf".into(), &s, false, vec![]);
        let line = config.shell_line();
        assert!(line.contains(&format!("-kernel {} -initrd k.elf -append a=1", repo.boot_shim_elf().display())), "{line}");
        assert!(line.contains("-m 64M"), "{line}");
        assert!(line.ends_with("-icount shift=0,align=off,sleep=off"), "{line}");
        assert_eq!(crates_to_build(&guests(), "probe").iter().map(|g| g.name.as_str()).collect::<Vec<_>>(), ["probe", "boot-shim"]);
    }
}
