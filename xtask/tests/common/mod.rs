//! Helpers shared by the xtask integration tests.

pub mod elf;
