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
//! - [`guest_phys`]: guest-physical memory and its machine frames;
//! - [`guest_walk`]: the guest's own page tables, walked as its MMU would;
//! - [`shadow`]: the shadow page tables the CPU walks instead;
//! - [`store`]: a guest's store to a write-protected page table, carried out.

pub mod guest_phys;
pub mod guest_walk;
pub mod shadow;
pub mod store;
