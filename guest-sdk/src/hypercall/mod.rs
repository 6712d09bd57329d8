//! Typed wrappers for every hypercall in [`Hypercall`].
//!
//! Each wrapper turns typed Rust arguments into registers, calls
//! [`raw`], and returns `Result<_, HypercallError>` so a guest handles a
//! refusal like any other Rust error. The numbers, argument order and error
//! codes all come from `hypercall-abi`. The direct-paging and ballooning
//! calls are in `hypercall/mm.rs`, the ring-compression registrations in
//! `hypercall/traps.rs` (both re-exported here).
//!
//! A wrapper is safe unless the call can break the calling guest's *own*
//! Rust invariants, which the hypervisor does not protect: changing what
//! the running kernel's address space maps (`mmu_update`,
//! `update_va_mapping`, `mmuext_op`'s `NewBaseptr`, `multicall`) or
//! registering code the hypervisor will jump to (`set_trap_table`,
//! `set_callbacks`, `stack_switch`). Those are `unsafe fn` with their
//! contract spelled out; [`paging`](crate::paging) and [`trap`](crate::trap)
//! build safe interfaces on top of them. `iret` only makes sense at the end
//! of an assembly trap stub and has no Rust wrapper.

pub mod events;
mod mm;
pub mod raw;
mod traps;

pub use mm::{
    current_reservation, decrease_reservation, increase_reservation, invlpg_local, maximum_reservation, mmu_update,
    mmuext, mmuext_op, multicall, new_baseptr, new_user_baseptr, pin_table, tlb_flush_local, unpin_table,
    update_va_mapping, Aligned, BatchError,
};
pub use traps::{set_callbacks, set_trap_table, stack_switch};

use hypercall_abi::console::CONSOLE_WRITE_MAX;
use hypercall_abi::domain_info::DOMID_SELF;
use hypercall_abi::{DomainInfo, Hypercall, HypercallError};
use zerocopy::FromZeros;

/// `null`: enters the hypervisor and comes straight back. It does nothing;
/// it exists to measure the cost of a hypercall round trip.
#[inline]
pub fn null() -> Result<(), HypercallError> {
    // SAFETY: `null` takes no pointer, so no guest memory is written.
    unsafe { raw::hypercall0(Hypercall::Null) }.map(|_| ())
}

/// `abi_version`: the [`ABI_VERSION`](hypercall_abi::ABI_VERSION) the
/// running hypervisor speaks. (The start-info page carries the same number;
/// this asks the hypervisor itself, on its slow path.)
pub fn abi_version() -> Result<u32, HypercallError> {
    // SAFETY: `abi_version` takes no pointer, so no guest memory is written.
    let version = unsafe { raw::hypercall0(Hypercall::AbiVersion) }?;
    u32::try_from(version).map_err(|_| HypercallError::Unrecognized)
}

/// `console_write`: writes `bytes` to the hypervisor console, where they
/// appear line by line prefixed with the domain's name. Returns how many
/// bytes were taken, which may be fewer than `bytes.len()` (at most
/// [`CONSOLE_WRITE_MAX`] per call); [`console_write_all`] loops for you.
/// An empty slice only drains the [console ring](crate::console).
pub fn console_write(bytes: &[u8]) -> Result<usize, HypercallError> {
    // Ask for no more than one call may take, so the result is the same
    // whether the hypervisor would clamp a longer length or refuse it.
    let len = bytes.len().min(CONSOLE_WRITE_MAX as usize);
    console_write_raw(bytes.as_ptr() as u64, len as u64)
}

/// Writes all of `bytes`, calling [`console_write`] until every byte is
/// taken. Stops early (without an error) if the hypervisor takes nothing,
/// rather than spin forever.
pub fn console_write_all(mut bytes: &[u8]) -> Result<(), HypercallError> {
    while !bytes.is_empty() {
        let written = console_write(bytes)?;
        if written == 0 {
            break;
        }
        bytes = &bytes[written.min(bytes.len())..];
    }
    Ok(())
}

/// `console_write` with a guest address and length of your choosing, for
/// demonstrating (and testing) how the hypervisor treats bad pointers.
///
/// This is safe even for a hostile address: the hypervisor only *reads* the
/// buffer, and it checks the whole range against the domain's page tables
/// first, answering [`HypercallError::BadAddress`] instead of faulting.
pub fn console_write_raw(addr: u64, len: u64) -> Result<usize, HypercallError> {
    // SAFETY: `console_write` only reads guest memory; it writes none.
    let written = unsafe { raw::hypercall2(Hypercall::ConsoleWrite, addr, len) }?;
    usize::try_from(written).map_err(|_| HypercallError::Unrecognized)
}

/// `domain_info`: what the hypervisor knows about domain `domain_id`
/// (its state, size, exit status and name).
pub fn domain_info(domain_id: u64) -> Result<DomainInfo, HypercallError> {
    let mut info = DomainInfo::new_zeroed();
    // SAFETY: `info` is a local we own exclusively, and every bit pattern is
    // a valid `DomainInfo` (it is `FromBytes`), so whatever the hypervisor
    // stores there is fine.
    unsafe { domain_info_raw(domain_id, &mut info) }?;
    Ok(info)
}

/// [`domain_info`] for the calling domain (the ABI's `DOMID_SELF`).
pub fn domain_info_self() -> Result<DomainInfo, HypercallError> {
    domain_info(DOMID_SELF)
}

/// `domain_info` with an out pointer of your choosing, for demonstrating
/// that the hypervisor refuses to write where the guest may not (for
/// example into its read-only page tables).
///
/// # Safety
///
/// If `out` is writable guest memory, the hypervisor stores a
/// [`DomainInfo`] there: `out` must then not overlap anything Rust code
/// holds a reference to. An address the guest cannot write is refused with
/// [`HypercallError::BadAddress`] and nothing is written.
pub unsafe fn domain_info_raw(domain_id: u64, out: *mut DomainInfo) -> Result<(), HypercallError> {
    // SAFETY: the only memory written is `*out`, which the caller vouches for.
    unsafe { raw::hypercall2(Hypercall::DomainInfo, domain_id, out as u64) }.map(|_| ())
}

/// `yield`: lets the next runnable domain run; returns when this one is
/// scheduled again. With one domain it returns at once.
pub fn yield_now() -> Result<(), HypercallError> {
    // SAFETY: `yield` takes no pointer, so no guest memory is written.
    unsafe { raw::hypercall0(Hypercall::Yield) }.map(|_| ())
}

/// `exit`: ends this domain with `status` (0 means success; see
/// [`status`](crate::status)). Whatever is still in the console ring is
/// printed first, because the hypervisor drains it when a domain ends.
pub fn exit(status: u64) -> ! {
    raw::exit(status)
}

/// `bench_floor`: for benchmarks only. From now until this domain's next
/// exception, every `syscall` returns at once through a bare `sysretq`
/// (the hypervisor does nothing, not even decode the number). End the
/// measurement with [`bench_floor_end`], which raises that exception.
pub fn bench_floor_begin() -> Result<(), HypercallError> {
    // SAFETY: `bench_floor` takes no pointer, so no guest memory is written.
    unsafe { raw::hypercall0(Hypercall::BenchFloor) }.map(|_| ())
}

/// Ends a floor measurement started by [`bench_floor_begin`] with an `int3`,
/// which the hypervisor treats as "back to the real `syscall` path" and
/// resumes after.
pub fn bench_floor_end() {
    // SAFETY: int3 traps to the hypervisor, which (in floor mode) only
    // restores its syscall entry and returns to the next instruction; no
    // register or memory of ours changes.
    unsafe { core::arch::asm!("int3", options(nomem, nostack)) };
}
