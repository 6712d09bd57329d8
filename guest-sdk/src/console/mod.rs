//! Console output: [`print!`](crate::print) and [`println!`](crate::println).
//!
//! Text goes into the console ring, a page shared with the hypervisor (see
//! [`hypercall_abi::ConsoleRing`]), instead of costing a hypercall per line:
//! the hypervisor drains the ring whenever the domain gives up the CPU
//! (`yield`, `exit`, a fault) or calls `console_write`, and prints it line by
//! line as `[<domain name>] <text>`. So a line printed just before a
//! `yield`, an `exit` or a crash appears before whatever the hypervisor
//! prints about that event. [`flush`] asks for a drain explicitly.
//!
//! Before the ring is set up, and if the start-info page names an
//! impossible ring address, output falls back to one `console_write`
//! hypercall per piece of text.

mod ring;

use core::fmt::{self, Write};

use hypercall_abi::{StartInfo, PAGE_SIZE};
use spin::Mutex;

use crate::hypercall;
use crate::start_info::in_domain_memory;
use ring::Ring;

/// The guest's console. One domain has one vCPU, but the lock still keeps
/// two writers (say, a panic inside a `print!`) from interleaving bytes.
static CONSOLE: Mutex<Console> = Mutex::new(Console { ring: None });

/// Where console text goes: the ring once it is set up, hypercalls before.
struct Console {
    ring: Option<Ring>,
}

impl Write for Console {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        match &mut self.ring {
            Some(ring) => ring.write(text.as_bytes()),
            None => HypercallWriter.write_str(text)?,
        }
        Ok(())
    }
}

/// Writes straight through the `console_write` hypercall, bypassing the
/// ring (and its lock). Used before the ring exists and by the panic
/// handler.
pub(crate) struct HypercallWriter;

impl Write for HypercallWriter {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        hypercall::console_write_all(text.as_bytes()).map_err(|_| fmt::Error)
    }
}

/// Starts using the ring named in the start-info page, if it is a sane
/// address: a page inside the domain's memory.
pub(crate) fn init(info: &StartInfo) {
    let addr = info.console_ring;
    if !addr.is_multiple_of(PAGE_SIZE) || !in_domain_memory(info, addr, PAGE_SIZE) {
        let _ = writeln!(
            HypercallWriter,
            "parvus-guest-sdk: console ring address {addr:#x} is outside this domain's memory; using console_write"
        );
        return;
    }
    // SAFETY: the hypervisor's start-info page names this page as the
    // domain's console ring (mapped writable for the domain's whole life),
    // we checked it lies in the domain's memory, and only `CONSOLE` uses it.
    CONSOLE.lock().ring = unsafe { Ring::new(addr) };
}

/// Asks the hypervisor to print everything in the ring now. The hypervisor
/// also drains the ring when the domain gives up the CPU (yield, block,
/// exit, a fault, preemption) and on every `console_write`; call this
/// before output of another domain must follow yours.
pub fn flush() {
    let _ = hypercall::console_write(&[]);
}

/// Implementation of [`print!`](crate::print); not for direct use.
#[doc(hidden)]
pub fn _print(args: fmt::Arguments<'_>) {
    // Writing to the console cannot fail in a way a caller could handle.
    let _ = CONSOLE.lock().write_fmt(args);
}

/// Prints for the panic handler. If the console lock is taken, the panic
/// happened inside a `print!`; waiting would deadlock, so this writes
/// through the hypercall instead (which drains the ring first, keeping
/// order).
pub(crate) fn print_for_panic(args: fmt::Arguments<'_>) {
    let _ = match CONSOLE.try_lock() {
        Some(mut console) => console.write_fmt(args),
        None => HypercallWriter.write_fmt(args),
    };
}

/// Prints to the domain's console, like `std::print!`.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => {
        $crate::console::_print(::core::format_args!($($arg)*))
    };
}

/// Prints a line to the domain's console, like `std::println!`.
#[macro_export]
macro_rules! println {
    () => {
        $crate::print!("\n")
    };
    ($($arg:tt)*) => {
        $crate::console::_print(::core::format_args!("{}\n", ::core::format_args!($($arg)*)))
    };
}
