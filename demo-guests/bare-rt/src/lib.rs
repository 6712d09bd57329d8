//! # bare-rt: the runtime of Parvus's unmodified kernels
//!
//! An *unmodified* ("bare-metal") kernel is written for a real PC: it runs
//! in ring 0, loads its own GDT and IDT, and drives the serial port, the
//! 8259 PIC and the 8254 PIT through I/O ports. Parvus runs the very same
//! ELF two ways (see [`hypercall_abi::bare_metal`], the boot contract):
//! natively, started by the boot shim under QEMU, and deprivileged in ring 3
//! under the hypervisor's trap-and-emulate mode, where every privileged
//! instruction faults and is emulated. This crate is what such a kernel
//! links, so that a kernel crate is a plain `#![no_std]` binary:
//!
//! ```ignore
//! #![no_std]
//! #![no_main]
//!
//! use bare_rt::{println, BootInfo};
//!
//! bare_rt::entry!(main);
//!
//! fn main(boot: &'static BootInfo) -> u8 {
//!     println!("hello from a kernel loaded by {:?}", core::str::from_utf8(boot.loader_name()));
//!     0 // the exit status
//! }
//! ```
//!
//! By the time `main` runs, the runtime has enabled SSE, switched to its own
//! 64 KiB stack, checked and copied the [`BootInfo`], set up COM1, loaded its
//! GDT and TSS ([`gdt`]) and its IDT with a report for every exception
//! ([`idt`], [`trap`]), and remapped and masked the PICs ([`pic`]).
//! Interrupts are off; the kernel turns them on only in [`cpu::idle`].
//!
//! The pieces, one module each:
//!
//! - [`entry!`] and `_start` ([`start`]): from the loader's jump to `main`,
//!   and `main`'s status to [`exit`];
//! - [`print!`]/[`println!`] ([`serial`]): COM1, polled;
//! - [`gdt`]: the GDT, the TSS and [`gdt::set_kernel_stack`] (TSS.RSP0);
//! - [`idt`] and [`trap`]: 256 interrupt gates, a Rust handler per vector
//!   ([`idt::set_handler`]) with the interrupted state as a [`TrapFrame`];
//! - [`pic`] and [`pit`]: the timer interrupt (natively the boot shim, like
//!   a PC's BIOS, leaves the local APIC in virtual-wire mode so that the
//!   8259's interrupts reach the CPU; the kernel never touches the APIC);
//! - [`cpu`]: the privileged instructions, one small function each;
//! - [`memory`]: where the image ends and free memory begins, and the
//!   user-program sections;
//! - [`exit`] and [`status`]: ending the machine (QEMU's `isa-debug-exit`,
//!   or the domain under the hypervisor); the panic handler prints
//!   `panic: <message>` and exits with [`status::PANIC`];
//! - `memcpy`, `memmove`, `memset`, `memcmp`, `bcmp` and
//!   `rust_eh_personality`, which the prebuilt `core` needs, by linking
//!   `parvus-intrinsics` (`guest-sdk/intrinsics`);
//! - `kernel.ld`, the linker script (at the crate's root).
//!
//! ## What an unmodified kernel may execute
//!
//! Under trap-and-emulate the kernel runs in ring 3, so each privileged
//! instruction faults and the hypervisor emulates it against a virtual CPU.
//! It emulates exactly this list; a kernel (this runtime included) uses
//! nothing else in ring 0 that would fault:
//!
//! | instruction | used here for |
//! |---|---|
//! | `lgdt`, `lidt`, `ltr` | [`gdt::init`], [`idt::init`] |
//! | `lretq` (REX.W far return) | reloading CS after `lgdt` |
//! | `mov ds/es/ss, r32` | reloading the data segments (FS and GS selectors are never loaded) |
//! | `mov` to and from CR0, CR2, CR3, CR4 | SSE set-up, page tables, page-fault address |
//! | `invlpg` | [`cpu::invlpg`] |
//! | `wrmsr`, `rdmsr` | [`cpu::wrmsr`], [`cpu::rdmsr`] (EFER, STAR, LSTAR, ...) |
//! | `cli`, `sti`, `hlt` | [`cpu::idle`] (`sti; hlt; cli`), [`exit`] (`cli; hlt`) |
//! | byte `in`/`out` (imm8 or `dx` port) | [`cpu::inb`], [`cpu::outb`]: serial, PIC, PIT, debug exit |
//! | `swapgs`, `sysretq`, `iretq` | [`cpu::swapgs`]; `iretq` ends every trap |
//!
//! and, because they behave differently in ring 3 but do not fault,
//! `pushfq`/`popfq` (never relied upon to change IF: use `cli`/`sti`),
//! `cpuid` and `rdtsc`. Every other instruction the kernel runs is an
//! ordinary unprivileged one (`fxsave64`/`fxrstor64` in the trap entry,
//! `fninit`/`ldmxcsr` at start, `rep movs`/`stos`/`cmps` in `memcpy` and
//! friends).
//!
//! Ring-0 code runs with interrupts off, except for the idle
//! `sti; hlt; cli`: an interrupt taken in ring 0 would land on the current
//! stack, and a kernel that keeps them off has one less thing to get right
//! (the build also turns off the red zone, so it would still be safe).
//!
//! Design rule: `unsafe` lives in the small modules whose names say what
//! they touch (`cpu`, `start`, `gdt`, `idt`, `trap`) and in the
//! one-line port accesses of the device drivers (`serial`, `pic`, `pit`,
//! `exit`), and each block says why it is sound.
#![no_std]
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

// `memcpy` and the other C-library symbols the prebuilt `core` calls,
// shared with the hypervisor, the guest SDK and the boot shim (see that crate).
extern crate parvus_intrinsics;

pub mod cpu;
mod exit;
pub mod gdt;
pub mod idt;
pub mod memory;
mod panic;
pub mod pic;
pub mod pit;
pub mod serial;
pub mod start;
pub mod status;
pub mod trap;

pub use exit::exit;
pub use hypercall_abi::bare_metal::{self, BootInfo};
pub use trap::TrapFrame;
