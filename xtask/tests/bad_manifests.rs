//! A bad manifest is refused before QEMU starts (before anything is even
//! built), with one line naming the file, the domain and the field.
//!
//! Each test runs the real `xtask` binary on a fixture from
//! `tests/fixtures/`, or on a manifest and ELF it writes to a temporary
//! folder, and checks the exit status and the exact error line.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::elf::{bare_metal_elf, guest_elf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Runs `xtask <subcommand> --manifest <manifest>` from the repository
/// root; returns stderr, which must be exactly one line, after checking the
/// command failed.
fn error_line(subcommand: &str, manifest: &Path) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .current_dir(repo())
        .arg(subcommand)
        .arg("--manifest")
        .arg(manifest)
        .output()
        .expect("xtask runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "xtask succeeded on {}:\n{stdout}{stderr}", manifest.display());
    assert_eq!(stderr.lines().count(), 1, "not one line:\n{stderr}");
    assert!(stdout.is_empty(), "printed on stdout:\n{stdout}");
    stderr.trim_end().to_string()
}

fn fixture(name: &str) -> PathBuf {
    Path::new("xtask/tests/fixtures").join(name)
}

#[test]
fn duplicate_name() {
    assert_eq!(
        error_line("build", &fixture("duplicate-name.toml")),
        "error: xtask/tests/fixtures/duplicate-name.toml: domain \"twin\", field `name`: \
         domains #1 and #2 are both named \"twin\""
    );
}

#[test]
fn unknown_key() {
    assert_eq!(
        error_line("build", &fixture("unknown-key.toml")),
        "error: xtask/tests/fixtures/unknown-key.toml:10: domain \"painted\": unknown field `colour`, \
         expected one of `name`, `image`, `memory`, `max_memory`, `cmdline`, `expect`, `weight`, `time_limit`, `umip`, `mode`"
    );
}

#[test]
fn memory_larger_than_the_machine() {
    assert_eq!(
        error_line("build", &fixture("too-much-memory.toml")),
        "error: xtask/tests/fixtures/too-much-memory.toml: domain \"big\", field `memory`: 62M brings the \
         domains' total to 64M, more than the 46M the machine's 64M leaves after the hypervisor's 18M \
         (raise [machine] memory)"
    );
}

#[test]
fn bad_memory_size() {
    let line = error_line("build", &fixture("bad-memory-size.toml"));
    assert!(
        line.starts_with(
            "error: xtask/tests/fixtures/bad-memory-size.toml:5: domain \"hello\", field `memory`: \
             invalid memory size \"2MB!\""
        ),
        "{line}"
    );
}

#[test]
fn missing_image() {
    let line = error_line("build", &fixture("missing-image.toml"));
    assert!(
        line.starts_with(
            "error: xtask/tests/fixtures/missing-image.toml: domain \"ghost\", field `image`: \
             \"no-such-guest\" is neither a demo guest ("
        ),
        "{line}"
    );
    assert!(line.ends_with("nor a file (xtask/tests/fixtures/no-such-guest does not exist)"), "{line}");
}

#[test]
fn image_is_a_directory() {
    let line = error_line("build", &fixture("image-is-a-directory.toml"));
    assert!(
        line.starts_with(
            "error: xtask/tests/fixtures/image-is-a-directory.toml: domain \"folder\", field `image`: \
             \"../common\" is neither a demo guest ("
        ),
        "{line}"
    );
    assert!(line.ends_with("nor a file (xtask/tests/fixtures/../common is a directory)"), "{line}");
}

#[test]
fn time_limit_of_zero() {
    assert_eq!(
        error_line("build", &fixture("zero-time-limit.toml")),
        "error: xtask/tests/fixtures/zero-time-limit.toml: domain \"hello\", field `time_limit`: a time limit of 0 \
         would stop the domain before it runs (leave `time_limit` out for no limit)"
    );
}

#[test]
fn time_limit_with_a_space() {
    assert_eq!(
        error_line("build", &fixture("time-limit-with-a-space.toml")),
        "error: xtask/tests/fixtures/time-limit-with-a-space.toml:6: domain \"hello\", field `time_limit`: \
         \"2 s\" is not a time: write it like \"500ms\" or \"2s\""
    );
}

#[test]
fn image_is_not_elf() {
    assert_eq!(
        error_line("build", &fixture("not-elf.toml")),
        "error: xtask/tests/fixtures/not-elf.toml: domain \"text\", field `image` \
         (xtask/tests/fixtures/not-an-elf.txt): not an ELF file (no \\x7fELF magic)"
    );
}

#[test]
fn run_refuses_before_qemu_too() {
    assert!(error_line("run", &fixture("duplicate-name.toml")).contains("are both named \"twin\""));
}

#[test]
fn manifest_that_does_not_exist() {
    let line = error_line("build", &fixture("nope.toml"));
    assert!(line.starts_with("error: xtask/tests/fixtures/nope.toml: cannot read the manifest: "), "{line}");
}

/// Writes `image` and a manifest using it (1 MiB of memory) to a temporary
/// folder; returns the folder (kept alive by the caller) and the manifest.
fn manifest_with_image(image: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("guest.elf"), image).unwrap();
    let manifest = dir.path().join("manifest.toml");
    std::fs::write(&manifest, "[[domain]]\nname = \"misplaced\"\nimage = \"guest.elf\"\nmemory = \"1M\"\n").unwrap();
    (dir, manifest)
}

#[test]
fn image_linked_beyond_the_domain_memory() {
    let (dir, manifest) = manifest_with_image(&guest_elf(0x1000_0000));
    let line = error_line("build", &manifest);
    let prefix = format!(
        "error: {}: domain \"misplaced\", field `image` ({}): segment 0 ends at 0x10000010, beyond the domain's 1M",
        manifest.display(),
        dir.path().join("guest.elf").display()
    );
    assert!(line.starts_with(&prefix), "{line}");
}

#[test]
fn image_linked_below_the_guest_base() {
    let (dir, manifest) = manifest_with_image(&guest_elf(0x20_0000));
    let line = error_line("build", &manifest);
    assert_eq!(
        line,
        format!(
            "error: {}: domain \"misplaced\", field `image` ({}): segment 0 starts at 0x200000, below the \
             guest base 0x400000: guests must be linked at 0x400000 (guest-sdk/guest.ld)",
            manifest.display(),
            dir.path().join("guest.elf").display()
        )
    );
}

#[test]
fn bare_metal_kernel_in_a_paravirtualized_domain() {
    assert_eq!(
        error_line("build", &fixture("bare-metal-paravirtualized.toml")),
        "error: xtask/tests/fixtures/bare-metal-paravirtualized.toml: domain \"probe\", field `image`: \
         \"pg-probe-bare\" is a bare-metal kernel, which runs only in a domain with mode = \"emulated\" (or natively)"
    );
}

#[test]
fn sdk_guest_in_an_emulated_domain() {
    assert_eq!(
        error_line("build", &fixture("sdk-guest-emulated.toml")),
        "error: xtask/tests/fixtures/sdk-guest-emulated.toml: domain \"hello\", field `image`: \"hello\" is a \
         paravirtualized guest, which runs only in a domain with mode = \"paravirtualized\" (the default)"
    );
}

#[test]
fn emulated_domain_with_more_than_max_memory() {
    assert_eq!(
        error_line("build", &fixture("emulated-too-much-memory.toml")),
        "error: xtask/tests/fixtures/emulated-too-much-memory.toml: domain \"big\", field `memory`: 512M is more \
         than the 256M an emulated domain may have (hypercall_abi::bare_metal::MAX_MEMORY)"
    );
}

#[test]
fn unknown_mode() {
    assert_eq!(
        error_line("build", &fixture("unknown-mode.toml")),
        "error: xtask/tests/fixtures/unknown-mode.toml:6: domain \"odd\", field `mode`: unknown variant \
         `binary-translated`, expected `paravirtualized` or `emulated`"
    );
}

/// Writes `image` and a manifest with one domain of `mode` using it.
fn manifest_with_mode(image: &[u8], mode: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("kernel.elf"), image).unwrap();
    let manifest = dir.path().join("manifest.toml");
    let text = format!("[[domain]]\nname = \"k\"\nimage = \"kernel.elf\"\nmemory = \"4M\"\nmode = \"{mode}\"\n");
    std::fs::write(&manifest, text).unwrap();
    (dir, manifest)
}

#[test]
fn file_images_are_checked_as_their_mode_needs() {
    let (dir, manifest) = manifest_with_mode(&guest_elf(0x40_0000), "emulated");
    assert_eq!(
        error_line("build", &manifest),
        format!(
            "error: {}: domain \"k\", field `image` ({}): a paravirtualized guest (it carries the Parvus ABI note) \
             in a domain with mode = \"emulated\": remove `mode` or boot a bare-metal kernel",
            manifest.display(),
            dir.path().join("kernel.elf").display()
        )
    );
    let (dir, manifest) = manifest_with_mode(&bare_metal_elf(0x40_0000), "paravirtualized");
    let line = error_line("build", &manifest);
    assert!(
        line.starts_with(&format!(
            "error: {}: domain \"k\", field `image` ({}): no Parvus ABI note",
            manifest.display(),
            dir.path().join("kernel.elf").display()
        )),
        "{line}"
    );
    let (_dir, manifest) = manifest_with_mode(&bare_metal_elf(0x80_0000), "emulated");
    let line = error_line("build", &manifest);
    assert!(line.ends_with("): segment 0 ends at 0x800010, beyond the domain's 4M of memory: raise `memory`"), "{line}");
}
