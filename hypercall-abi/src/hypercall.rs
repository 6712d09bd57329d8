//! Hypercall numbers.

/// Every hypercall the hypervisor implements, by number (the value in `rax`).
///
/// The arguments of each are listed in its doc comment in register order
/// (`rdi`, `rsi`, `rdx`, `r10`, `r8`, `r9`); see the crate documentation for
/// the full register convention. An unknown number returns
/// [`HypercallError::UnknownHypercall`](crate::HypercallError::UnknownHypercall).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u64)]
pub enum Hypercall {
    /// Does nothing and returns 0. Exists to measure the bare cost of a
    /// hypercall round trip; it is served on the entry path's fast lane.
    Null = 0,
    /// Returns the hypervisor's [`ABI_VERSION`](crate::ABI_VERSION).
    AbiVersion = 1,
    /// `console_write(buf: *const u8, len: u64)`: writes bytes to the
    /// hypervisor console, prefixed per line with the domain's name. Returns
    /// the number of bytes written, at most
    /// [`CONSOLE_WRITE_MAX`](crate::console::CONSOLE_WRITE_MAX); a caller
    /// loops for more. Before writing it drains the domain's console ring, so
    /// output stays in order. A zero `len` only drains the ring. Nothing is
    /// written unless the whole buffer is readable.
    ConsoleWrite = 2,
    /// `domain_info(domain_id: u64, out: *mut DomainInfo)`: fills `out` with
    /// the [`DomainInfo`](crate::DomainInfo) of a domain;
    /// [`DOMID_SELF`](crate::domain_info::DOMID_SELF) names the caller.
    DomainInfo = 3,
    /// `yield()`: gives the CPU to the next runnable domain; returns 0 when
    /// the caller runs again.
    Yield = 4,
    /// `exit(status: u64)`: ends the calling domain with `status` (0 means
    /// success). Never returns.
    Exit = 5,
    /// `bench_floor()`: for benchmarks only. Until the caller next enters
    /// the hypervisor other than by `syscall` (any exception, typically the
    /// `int3` the caller ends with), every `syscall` it makes returns at once
    /// through a bare `sysretq`, doing nothing, with `rax` unchanged. This
    /// measures the architectural floor of a `syscall` round trip on the
    /// machine, so the `null` hypercall can be reported beside it. Returns 0.
    BenchFloor = 6,
    /// `mmu_update(reqs: *const MmuUpdate, count: u64, done: *mut u64)`:
    /// writes page-table entries, in order. Each
    /// [`MmuUpdate`](crate::mm::MmuUpdate) names the machine address of an
    /// entry in one of the caller's page tables and its new value; every
    /// request is validated (see [`mm`](crate::mm)). Returns `count` when all
    /// succeed; on the first failure stops and returns that request's error.
    /// Either way, if `done` is not 0, the number of requests that went in
    /// is written to `*done` (8-byte aligned; a `done` the caller cannot
    /// write is refused with `BadAddress` or `Misaligned` before any
    /// request is applied; if the batch itself made `done` unwritable, the
    /// requests stay applied and the call returns `BadAddress`).
    MmuUpdate = 7,
    /// `mmuext_op(ops: *const MmuextOp, count: u64, done: *mut u64)`:
    /// pins and unpins page tables, loads new base pointers, flushes the
    /// TLB; see [`MmuextCmd`](crate::mm::MmuextCmd). Results as for `mmu_update`.
    MmuextOp = 8,
    /// `update_va_mapping(va: u64, pte: u64, flags: u64)`: sets the level-1
    /// entry that maps `va` in the current kernel address space, validated
    /// like an `mmu_update` request, then flushes as
    /// [`uvm_flags`](crate::mm::uvm_flags) asks (the entry of `va` itself
    /// is always invalidated). Returns 0.
    UpdateVaMapping = 9,
    /// `multicall(calls: *mut MulticallEntry, count: u64)`: performs up to
    /// [`MULTICALL_MAX`](crate::mm::MULTICALL_MAX) hypercalls in one entry,
    /// in order, writing each one's encoded result into its entry (more
    /// entries: `BadArgument`). Calls that leave the caller or replace its
    /// registers (`multicall` itself, `yield`, `exit`, `iret`,
    /// `bench_floor`, `sched_op`) are refused with `BadArgument` in their
    /// entry. An entry is performed only if its `result` can be written:
    /// one that cannot be read, or whose `result` the caller cannot write,
    /// fails the multicall with `BadAddress`, that entry and the rest not
    /// performed. Returns the number of entries performed: `count`, or
    /// fewer when an entry took away the write access to its own `result`
    /// (by remapping the array): that entry was performed, its `result`
    /// is not written, and the batch stops after it.
    Multicall = 10,
    /// `memory_op(cmd: u64, frames: *mut u64, count: u64)`: balloon
    /// operations; see [`MemoryOpCmd`](crate::mm::MemoryOpCmd).
    MemoryOp = 11,
    /// `set_trap_table(table: *const TrapInfo, count: u64)`: registers the
    /// guest kernel's exception handlers (replacing earlier ones; `count` 0
    /// removes all). An exception with no handler stops the domain.
    SetTrapTable = 12,
    /// `set_callbacks(syscall: u64, event: u64)`: where a `syscall` from
    /// guest user mode is delivered (0 = not accepted: the domain is
    /// stopped), and where event upcalls will be delivered (0 = none).
    SetCallbacks = 13,
    /// `stack_switch(kernel_sp: u64)`: the guest kernel stack a trap from
    /// guest user mode is delivered on (like TSS.RSP0 on real hardware).
    StackSwitch = 14,
    /// `iret()`: returns from a [`TrapFrame`](crate::trap::TrapFrame) at the
    /// caller's `rsp`, to user mode if the frame's
    /// [`FROM_USER`](crate::trap::frame_flags::FROM_USER) flag is set. Does
    /// not return to the instruction after the `syscall`.
    Iret = 15,
    /// `event_channel_op(cmd: u64, a: u64, b: u64)`: allocate, bind, send
    /// on, close, query and unmask event-channel ports; see
    /// [`EventChannelCmd`](crate::event::EventChannelCmd) for each command's
    /// arguments and result.
    EventChannelOp = 16,
    /// `sched_op(cmd: u64, a: u64, b: u64, deadline: u64)`: block until an
    /// event, or poll ports until an absolute deadline (system time, in
    /// `r10`); see [`SchedCmd`](crate::event::SchedCmd).
    SchedOp = 17,
    /// `set_timer(deadline: u64)`: raise [`VIRQ_TIMER`](crate::event::virq::TIMER)
    /// once the system time (nanoseconds since boot, see
    /// [`VcpuTime`](crate::event::VcpuTime)) reaches `deadline`; 0 cancels.
    /// A deadline in the past fires at once. Any other deadline is kept,
    /// however far: one beyond what the hypervisor's clock can count (up
    /// to `u64::MAX`, 584 years after boot) is the farthest time it can
    /// wait for, and a domain that blocks with it waits for it: it is
    /// never taken for a domain nothing can wake. Returns 0.
    SetTimer = 18,
}

impl Hypercall {
    /// Every hypercall, in number order.
    pub const ALL: [Hypercall; 19] = [
        Hypercall::Null,
        Hypercall::AbiVersion,
        Hypercall::ConsoleWrite,
        Hypercall::DomainInfo,
        Hypercall::Yield,
        Hypercall::Exit,
        Hypercall::BenchFloor,
        Hypercall::MmuUpdate,
        Hypercall::MmuextOp,
        Hypercall::UpdateVaMapping,
        Hypercall::Multicall,
        Hypercall::MemoryOp,
        Hypercall::SetTrapTable,
        Hypercall::SetCallbacks,
        Hypercall::StackSwitch,
        Hypercall::Iret,
        Hypercall::EventChannelOp,
        Hypercall::SchedOp,
        Hypercall::SetTimer,
    ];

    /// The hypercall's name as it appears in logs and documentation.
    pub const fn name(self) -> &'static str {
        match self {
            Hypercall::Null => "null",
            Hypercall::AbiVersion => "abi_version",
            Hypercall::ConsoleWrite => "console_write",
            Hypercall::DomainInfo => "domain_info",
            Hypercall::Yield => "yield",
            Hypercall::Exit => "exit",
            Hypercall::BenchFloor => "bench_floor",
            Hypercall::MmuUpdate => "mmu_update",
            Hypercall::MmuextOp => "mmuext_op",
            Hypercall::UpdateVaMapping => "update_va_mapping",
            Hypercall::Multicall => "multicall",
            Hypercall::MemoryOp => "memory_op",
            Hypercall::SetTrapTable => "set_trap_table",
            Hypercall::SetCallbacks => "set_callbacks",
            Hypercall::StackSwitch => "stack_switch",
            Hypercall::Iret => "iret",
            Hypercall::EventChannelOp => "event_channel_op",
            Hypercall::SchedOp => "sched_op",
            Hypercall::SetTimer => "set_timer",
        }
    }

    /// Every error the call may return: the hypervisor returns no other.
    ///
    /// Derived from what the hypervisor does (`hypervisor/core/src/hypercall/`)
    /// and written once, here: the ABI chapter's errors column must name
    /// exactly these (`tests/docs_match_abi.rs`), and the fuzzing guest
    /// (`demo-guests/hypercall-fuzz`) reports any other result as a finding.
    /// A number that is no hypercall gets
    /// [`UnknownHypercall`](crate::HypercallError::UnknownHypercall); a call a
    /// `multicall` cannot batch gets [`BadArgument`](crate::HypercallError::BadArgument)
    /// in its entry (see [`Hypercall::batchable`]).
    pub const fn errors(self) -> &'static [crate::HypercallError] {
        use crate::HypercallError::*;
        match self {
            Hypercall::Null
            | Hypercall::AbiVersion
            | Hypercall::Yield
            | Hypercall::Exit
            | Hypercall::BenchFloor
            | Hypercall::SetTimer => &[],
            Hypercall::ConsoleWrite => &[BadAddress],
            Hypercall::DomainInfo => &[BadAddress, NoSuchDomain],
            // The batch (its count, its array, `done`) and each request (its
            // entry address; the entry's bits and frame, and the tables it
            // links, validated on first use).
            Hypercall::MmuUpdate => &[
                BadAddress,
                BadArgument,
                FrameNotOwned,
                FrameIsPageTable,
                HypervisorMemory,
                PageTypeConflict,
                FrameMappedWritable,
                TypeCountInUse,
                SupervisorMapping,
                UnsupportedEntryBits,
                NotAPageTable,
                Misaligned,
            ],
            // The batch (as for `mmu_update`) and each operation (its
            // command, the frame it names, the pin, and a table validated
            // on first use).
            Hypercall::MmuextOp => &[
                BadAddress,
                BadArgument,
                FrameNotOwned,
                FrameIsPageTable,
                HypervisorMemory,
                PageTypeConflict,
                FrameMappedWritable,
                TypeCountInUse,
                SupervisorMapping,
                UnsupportedEntryBits,
                Misaligned,
                NotPinned,
                AlreadyPinned,
            ],
            // One level-1 entry, found by walking the current tables: never
            // misaligned, never a table validated as something else.
            Hypercall::UpdateVaMapping => &[
                BadArgument,
                FrameNotOwned,
                FrameIsPageTable,
                HypervisorMemory,
                TypeCountInUse,
                SupervisorMapping,
                UnsupportedEntryBits,
                NotAPageTable,
            ],
            Hypercall::Multicall => &[BadAddress, BadArgument],
            Hypercall::MemoryOp => {
                &[BadAddress, BadArgument, OutOfMemory, FrameNotOwned, HypervisorMemory, TypeCountInUse, OverLimit]
            }
            Hypercall::SetTrapTable | Hypercall::Iret => &[BadAddress, BadArgument],
            Hypercall::SetCallbacks | Hypercall::StackSwitch => &[BadArgument],
            Hypercall::EventChannelOp => &[
                BadAddress,
                BadArgument,
                PermissionDenied,
                OutOfMemory,
                NoSuchDomain,
                NoSuchPort,
                WrongPortState,
                PortInUse,
            ],
            Hypercall::SchedOp => &[BadAddress, BadArgument, NoSuchPort, TimedOut],
        }
    }

    /// Whether a `multicall` performs the call in one of its entries. The
    /// calls that leave the caller, block it or replace its registers
    /// cannot be batched: their entry gets `BadArgument`.
    pub const fn batchable(self) -> bool {
        !matches!(
            self,
            Hypercall::Yield
                | Hypercall::Exit
                | Hypercall::BenchFloor
                | Hypercall::Multicall
                | Hypercall::Iret
                | Hypercall::SchedOp
        )
    }
}

impl TryFrom<u64> for Hypercall {
    type Error = crate::HypercallError;

    fn try_from(number: u64) -> Result<Self, Self::Error> {
        Hypercall::ALL
            .get(usize::try_from(number).map_err(|_| crate::HypercallError::UnknownHypercall)?)
            .copied()
            .ok_or(crate::HypercallError::UnknownHypercall)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_round_trip() {
        for (i, h) in Hypercall::ALL.iter().enumerate() {
            assert_eq!(*h as u64, i as u64, "ALL must be in number order");
            assert_eq!(Hypercall::try_from(i as u64), Ok(*h));
        }
        assert_eq!(
            Hypercall::try_from(Hypercall::ALL.len() as u64),
            Err(crate::HypercallError::UnknownHypercall)
        );
        assert_eq!(Hypercall::try_from(u64::MAX), Err(crate::HypercallError::UnknownHypercall));
    }

    #[test]
    fn error_lists_are_in_code_order_without_duplicates() {
        for call in Hypercall::ALL {
            let codes: Vec<u64> = call.errors().iter().map(|e| e.code()).collect();
            assert!(codes.windows(2).all(|w| w[0] < w[1]), "{}: errors out of code order or repeated", call.name());
            assert!(!call.errors().contains(&crate::HypercallError::UnknownHypercall), "{}", call.name());
            assert!(!call.errors().contains(&crate::HypercallError::Unrecognized), "{}", call.name());
        }
    }
}
