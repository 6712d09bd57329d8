//! `cargo xtask`: the one tool for building, running, testing,
//! benchmarking and comparing Parvus.
//!
//! Each subcommand lives in its own module ([`build`], [`run`],
//! [`test`](mod@test), [`fuzz`], [`bench`](mod@bench), [`compare`], [`doc`],
//! [`setup`]); what they share is split by job: [`repo`] (where things are), [`cargo_build`] (the nested bare-metal cargo builds, one per
//! kind of crate), [`manifest`] (reading and checking a manifest file),
//! [`bundle`] (writing the boot archive), [`native`] (booting a bare-metal
//! kernel under the boot shim, without the hypervisor), [`qemu`] (finding,
//! installing and running QEMU), [`scenario`] (what a QEMU test expects
//! and how its log is judged) [`verdict`] (how a `run` ended, from
//! QEMU's status and the serial log) and [`book`] (building the book with
//! mdBook and checking its links).
//!
//! Every error is printed as one line, `error: <what> ...`, and makes the
//! process exit non-zero.

mod bench;
mod book;
mod build;
mod bundle;
mod cargo_build;
mod compare;
mod doc;
mod fuzz;
mod manifest;
mod native;
mod qemu;
mod repo;
mod run;
mod scenario;
mod setup;
mod test;
mod verdict;

#[cfg(test)]
#[path = "../tests/common/elf.rs"]
mod test_elf;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Build, run, test, benchmark and compare the Parvus hypervisor and its guests.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build the hypervisor and every demo guest, check a manifest and pack
    /// its boot bundle (`target/bundles/<name>.tar`).
    Build(build::BuildArgs),
    /// Build, then boot a manifest (or, with --native, a bare-metal kernel
    /// under the boot shim) under QEMU with the serial console on this
    /// terminal; the exit status says whether every domain ended as
    /// expected (or the kernel's exit status).
    Run(run::RunArgs),
    /// Run the host unit tests, then every QEMU scenario under scenarios/.
    Test(test::TestArgs),
    /// Run the fuzzing scenario (scenarios/hypercall-fuzz) with other seeds
    /// and sizes, judged as the test judges it; prints the command that
    /// replays a failed seed.
    Fuzz(fuzz::FuzzArgs),
    /// Count the instructions of a hypercall round trip under QEMU -icount;
    /// prints a table and writes target/bench.json.
    Bench(bench::BenchArgs),
    /// Run the workload natively, under trap-and-emulate and
    /// paravirtualized under QEMU -icount; prints a table of instructions,
    /// ratios, exits and hypercalls per operation and writes
    /// target/compare/compare.json and compare.svg.
    Compare(compare::CompareArgs),
    /// Build the API documentation of the guest SDK, the ABI, bare-rt and
    /// the hypervisor (target/doc/) and the book (docs/book/), and check
    /// their links.
    Doc,
    /// Install what run, test, bench and doc need (QEMU, mdBook), if it is missing.
    Setup,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Build(args) => build::main(&args),
        Command::Run(args) => run::main(&args),
        Command::Test(args) => test::main(&args),
        Command::Fuzz(args) => fuzz::main(&args),
        Command::Bench(args) => bench::main(&args),
        Command::Compare(args) => compare::main(&args),
        Command::Doc => doc::main(),
        Command::Setup => setup::main(),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            // `{:#}` prints the whole context chain on one line.
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
