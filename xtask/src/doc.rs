//! `cargo xtask doc`: all the documentation, checked. The API
//! documentation of the crates a guest-kernel or hypervisor writer
//! programs against goes to `target/doc/` (start at
//! `target/doc/parvus_guest_sdk/index.html`), and the book (`docs/`,
//! [`crate::book`]) to `docs/book/`. The test command runs it, so a broken
//! intra-doc link or a broken link in the book fails the tests.
//!
//! Why not `cargo doc --workspace`: cargo resolves features once for all
//! the packages of one invocation, so xtask's host dependencies turn on the
//! `std` features of crates the bare-metal ones share (rustix turns on
//! `bitflags/std`, plotters `num-traits/std`). `std` then sits in the SDK's
//! dependency graph beside the SDK's own panic handler, and rustc refuses
//! the second one (E0152, duplicate lang item `panic_impl`); `cargo build
//! --workspace` fails the same way. Documenting [`DOCUMENTED`] alone, in an
//! invocation without xtask, resolves their features as the real
//! bare-metal builds do.

use std::process::ExitCode;

use anyhow::{bail, Context, Result};

use crate::book;
use crate::cargo_build::cargo;
use crate::repo::Repo;

/// The packages documented, the SDK first: the guest SDK and the C-library
/// symbols it links, the ABI, the runtime of unmodified kernels, the
/// hypervisor's logic and its ring-0 binary (a binary, so private items
/// are documented too).
pub const DOCUMENTED: [&str; 6] =
    ["parvus-guest-sdk", "parvus-intrinsics", "hypercall-abi", "bare-rt", "parvus-core", "parvus-hypervisor"];

/// Builds the API documentation of [`DOCUMENTED`] into `target/doc/`;
/// warnings (a broken intra-doc link, say) are errors.
pub fn api(repo: &Repo) -> Result<()> {
    let mut command = cargo(repo);
    command.args(["doc", "--no-deps"]);
    for package in DOCUMENTED {
        command.args(["-p", package]);
    }
    command.env("RUSTDOCFLAGS", "-D warnings");
    let status = command.status().context("cannot start cargo doc")?;
    if !status.success() {
        bail!("cargo doc failed ({status})");
    }
    Ok(())
}

/// `cargo xtask doc`.
pub fn main() -> Result<ExitCode> {
    let repo = Repo::locate();
    api(&repo)?;
    let book = book::build(&repo)?;
    println!(
        "API documentation: {} (the other crates are in its sidebar)",
        repo.show(&repo.root.join("target/doc/parvus_guest_sdk/index.html"))
    );
    println!("book: {}", repo.show(&book.join("index.html")));
    Ok(ExitCode::SUCCESS)
}
