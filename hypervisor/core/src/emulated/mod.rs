//! Trap-and-emulate: running an unmodified kernel deprivileged.
//!
//! A domain with `mode = "emulated"` in its manifest runs a kernel written
//! for a real PC (see `hypercall_abi::bare_metal`). It runs in ring 3, like
//! every guest, but it does not know: it executes privileged instructions,
//! which fault into the hypervisor, which decodes them
//! ([`crate::decode`]), carries them out against a *virtual* CPU, and
//! resumes the guest after them. Its page tables are never loaded into CR3:
//! the hypervisor walks them ([`guest_walk`]) and builds *shadow* tables
//! that map its virtual addresses to machine frames.
//!
//! The pieces, one file each:
//! - [`address`]: where an instruction's memory operands are, and the
//!   #GP(0) or #SS(0) of a non-canonical one;
//! - [`machine`]: the virtual machine of one emulated domain;
//! - [`cpu`]: its virtual CPU (privilege level, IF, control registers, MSRs);
//! - [`loader`]: what the hypervisor puts in its memory before it starts;
//! - [`guest_phys`]: guest-physical memory and its machine frames;
//! - [`guest_walk`]: the guest's own page tables, walked as its MMU would;
//! - [`guest_virt`]: guest-virtual memory, reached through that walk;
//! - [`shadow`]: the shadow page tables the CPU walks instead;
//! - [`store`]: a guest's store to a write-protected page table, carried out;
//! - [`instructions`]: privileged instructions carried out on the virtual CPU;
//! - [`inject`]: interrupts and exceptions delivered through the guest's IDT;
//! - [`devices`]: the UART, PICs and PIT behind its I/O ports;
//! - [`exits`]: why it left the guest, counted.
//!
//! The system's side (which exit goes where) is `crate::system::emulated`.

pub mod address;
pub mod cpu;
pub mod devices;
pub mod exits;
pub mod guest_phys;
pub mod guest_virt;
pub mod guest_walk;
pub mod inject;
pub mod instructions;
pub mod loader;
pub mod machine;
pub mod shadow;
pub mod store;

/// The real code selector an emulated kernel runs on, in either of its
/// modes: GDT slot 15 (`hypercall_abi::bare_metal::RESERVED_GDT_SLOT` + 1),
/// ring 3. While it runs, the paravirtualized guests' ring-3 selectors
/// (slots 3 and 4) are marked not present, so that the kernel's `iretq` to
/// its own user selectors faults (#NP) and can be emulated: ring 3 to ring
/// 3 would not fault by itself.
pub const REAL_CS: u64 = ((hypercall_abi::bare_metal::RESERVED_GDT_SLOT as u64 + 1) << 3) | 3;
/// The real stack selector an emulated kernel runs on: GDT slot 14, ring 3.
pub const REAL_SS: u64 = ((hypercall_abi::bare_metal::RESERVED_GDT_SLOT as u64) << 3) | 3;
