//! The `log` facade on the serial console: `parvus: [LEVEL ]message`.
//!
//! Info lines carry no level word so that the console reads like a story;
//! warnings and errors are marked. The level is fixed at build time
//! (`info`); debug lines cost nothing when disabled.

use crate::arch::x86_64::serial::Serial;
use core::fmt::Write;
use log::{Level, LevelFilter, Log, Metadata, Record};

struct SerialLogger;

static LOGGER: SerialLogger = SerialLogger;

/// Serialises whole lines, so that output never interleaves mid-line.
pub static CONSOLE_LOCK: spin::Mutex<()> = spin::Mutex::new(());

impl Log for SerialLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let _guard = CONSOLE_LOCK.lock();
        let tag = match record.level() {
            Level::Error => "ERROR ",
            Level::Warn => "WARN ",
            Level::Info => "",
            Level::Debug => "debug ",
            Level::Trace => "trace ",
        };
        let _ = writeln!(Serial, "parvus: {}{}", tag, record.args());
    }

    fn flush(&self) {}
}

/// Installs the logger.
pub fn init() {
    // Ignoring the error is right: it only says a logger was already set.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(LevelFilter::Info);
}

/// Prints a line without taking the console lock (for panics and faults,
/// which may strike while the lock is held).
pub fn emergency(args: core::fmt::Arguments) {
    let _ = writeln!(Serial, "parvus: {}", args);
}
