//! The hypercall table: decode, validate, act.
//!
//! [`dispatch`] is called for every hypercall that leaves the entry path's
//! fast lane. It turns `rax` into a [`Hypercall`] (an unknown number is one
//! error, like NOVA's fixed table), checks the arguments, and either answers
//! (the result goes back in `rax`) or tells the [`System`](crate::system::System)
//! to yield or end the domain. The handlers are grouped by subject:
//! [`console`] (output and domain info), [`mm`] (direct paging and
//! ballooning), [`multicall`], and [`traps`] (ring compression). Every
//! argument check lives in them or in [`guest_memory`](crate::guest_memory)
//! and [`page_type`](crate::page_type), and each rejection has a test.

pub mod console;
pub mod events;
pub mod mm;
pub mod multicall;
pub mod traps;

#[cfg(test)]
mod tests;

use crate::console::ConsoleSink;
use crate::domain::{Domain, DomainId};
use crate::frame_table::FrameTable;
use crate::guest_memory::GuestView;
use crate::machine_memory::MachineMemory;
use crate::page_type::PageTables;
use crate::paging::ENTRIES;
use crate::vcpu::GuestRegs;
use hypercall_abi::{Hypercall, HypercallError, ABI_VERSION};

/// What the system must do after a hypercall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Put this result in `rax` and return to the caller.
    Return(Result<u64, HypercallError>),
    /// The caller's registers were replaced (`iret`): return to them as they are.
    Resumed,
    /// Return 0 to the caller when it next runs; run someone else first.
    Yield,
    /// End the caller with this status.
    Exit(u64),
    /// Return 0 and switch the caller's `syscall` path to the bare floor
    /// path until its next exception (see [`Hypercall::BenchFloor`]).
    BenchFloor,
    /// The caller waits (its `events.wait` says for what): run someone else.
    Block,
}

/// Which TLB entries must go before the guest runs again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TlbFlush {
    /// Nothing changed that the TLB may hold.
    #[default]
    None,
    /// The entry of one virtual address.
    Page(u64),
    /// Everything (a CR3 reload).
    All,
}

impl TlbFlush {
    /// Both flushes at once.
    pub fn and(self, other: TlbFlush) -> TlbFlush {
        match (self, other) {
            (TlbFlush::None, x) | (x, TlbFlush::None) => x,
            (TlbFlush::Page(a), TlbFlush::Page(b)) if a == b => TlbFlush::Page(a),
            _ => TlbFlush::All,
        }
    }
}

/// Everything a hypercall may look at besides the caller's registers.
pub struct Context<'a, M: MachineMemory, C: ConsoleSink> {
    /// Machine memory.
    pub mem: &'a mut M,
    /// Where console lines go.
    pub console: &'a mut C,
    /// Frame ownership and types.
    pub frames: &'a mut FrameTable,
    /// All domains (the caller included).
    pub domains: &'a mut [Domain],
    /// The caller.
    pub caller: DomainId,
    /// The hypervisor's half of every top-level table.
    pub hypervisor_half: &'a [u64; ENTRIES / 2],
    /// TLB flushing the hypercall made necessary.
    pub tlb: TlbFlush,
    /// The TSC when the entry began.
    pub tsc: u64,
    /// How TSC values become system time.
    pub time: &'a crate::time::TimeBase,
    /// The hypercall woke some domain(s): each has `events.wake_port` set
    /// (several in a `multicall`). A flag, so that the common case costs
    /// nothing.
    pub woke: bool,
    /// The hypercall set or cancelled a timer or a poll deadline.
    pub timer_changed: bool,
}

impl<M: MachineMemory, C: ConsoleSink> Context<'_, M, C> {
    /// The calling domain.
    pub fn caller(&mut self) -> &mut Domain {
        &mut self.domains[usize::from(self.caller.0)]
    }

    /// The caller's address space (its current mode's), for reading and
    /// writing the buffers it passed.
    pub fn view(&mut self) -> GuestView<'_, M> {
        let root = self.domains[usize::from(self.caller.0)].root();
        GuestView { mem: self.mem, frames: self.frames, domain: self.caller, root }
    }

    /// System time now (nanoseconds since boot); computed only by the
    /// hypercalls that need it.
    pub fn now_ns(&self) -> u64 {
        self.time.now_ns(self.tsc)
    }

    /// The caller's page tables under the typing rules.
    pub fn tables(&mut self) -> PageTables<'_, M> {
        PageTables { frames: self.frames, mem: self.mem, domain: self.caller, hypervisor_half: self.hypervisor_half }
    }
}

/// Decodes and performs the hypercall in `regs`. Inlined (into
/// [`System::on_hypercall`](crate::system::System::on_hypercall)) so that
/// the hypercalls answered here cost no call.
#[inline(always)]
pub fn dispatch<M: MachineMemory, C: ConsoleSink>(ctx: &mut Context<'_, M, C>, regs: &mut GuestRegs) -> Outcome {
    let call = match Hypercall::try_from(regs.rax) {
        Ok(call) => call,
        Err(e) => return Outcome::Return(Err(e)),
    };
    match call {
        Hypercall::Yield => Outcome::Yield,
        Hypercall::Exit => Outcome::Exit(regs.rdi),
        Hypercall::BenchFloor => Outcome::BenchFloor,
        Hypercall::SchedOp => events::sched_op(ctx, regs.rdi, regs.rsi, regs.rdx, regs.r10),
        Hypercall::Iret => match traps::iret(ctx, regs) {
            Ok(()) => Outcome::Resumed,
            Err(e) => Outcome::Return(Err(e)),
        },
        Hypercall::Multicall => {
            let (a0, a1) = (regs.rdi, regs.rsi);
            Outcome::Return(mm::forget_stack_page(ctx, |ctx| multicall::multicall(ctx, a0, a1)))
        }
        // The calls that only answer, each named so that `answer`, inlined
        // with a constant call, folds into this one jump table. (A `_` arm
        // here made `answer` match a second time: about ten instructions on
        // every hypercall.) Arguments are read inside `answer`'s arms, so a
        // call that takes none loads none.
        Hypercall::Null => answered(ctx, Hypercall::Null, regs),
        Hypercall::AbiVersion => answered(ctx, Hypercall::AbiVersion, regs),
        Hypercall::ConsoleWrite => answered(ctx, Hypercall::ConsoleWrite, regs),
        Hypercall::DomainInfo => answered(ctx, Hypercall::DomainInfo, regs),
        Hypercall::MmuUpdate => answered(ctx, Hypercall::MmuUpdate, regs),
        Hypercall::MmuextOp => answered(ctx, Hypercall::MmuextOp, regs),
        Hypercall::UpdateVaMapping => answered(ctx, Hypercall::UpdateVaMapping, regs),
        Hypercall::MemoryOp => answered(ctx, Hypercall::MemoryOp, regs),
        Hypercall::SetTrapTable => answered(ctx, Hypercall::SetTrapTable, regs),
        Hypercall::SetCallbacks => Outcome::Return(out_of_line(ctx, |ctx| traps::set_callbacks(ctx, regs.rdi, regs.rsi))),
        Hypercall::StackSwitch => Outcome::Return(out_of_line(ctx, |ctx| traps::stack_switch(ctx, regs.rdi))),
        Hypercall::EventChannelOp => answered(ctx, Hypercall::EventChannelOp, regs),
        Hypercall::SetTimer => answered(ctx, Hypercall::SetTimer, regs),
    }
}

/// [`answer`] with the arguments in the caller's registers (`rdi rsi rdx`,
/// see [`GuestRegs::hypercall_args`]).
#[inline(always)]
fn answered<M: MachineMemory, C: ConsoleSink>(ctx: &mut Context<'_, M, C>, call: Hypercall, regs: &GuestRegs) -> Outcome {
    Outcome::Return(answer(ctx, call, regs))
}

/// A call's result, out of line: for the calls that check the caller's
/// index in the domain table but that no fast path makes (`set_callbacks`,
/// `stack_switch`). Inlined into the entry, that bounds check keeps the
/// table's length in a register across the whole dispatch, and the entry
/// then copies the table into the [`Context`] with two moves instead of
/// one: every hypercall would pay for it. ([`multicall`](multicall::multicall)
/// inlines them: it copies no table.)
#[inline(never)]
fn out_of_line<M: MachineMemory, C: ConsoleSink>(
    ctx: &mut Context<'_, M, C>,
    call: impl FnOnce(&mut Context<'_, M, C>) -> Result<u64, HypercallError>,
) -> Result<u64, HypercallError> {
    call(ctx)
}

/// The first three arguments of a call, read only by the calls that take
/// them: the caller's registers, or a multicall entry's `args`.
pub(crate) trait Args {
    /// Argument `n` (0, 1 or 2).
    fn arg(&self, n: usize) -> u64;
}

impl Args for GuestRegs {
    #[inline(always)]
    fn arg(&self, n: usize) -> u64 {
        match n {
            0 => self.rdi,
            1 => self.rsi,
            _ => self.rdx,
        }
    }
}

impl Args for [u64; 6] {
    #[inline(always)]
    fn arg(&self, n: usize) -> u64 {
        self[n]
    }
}

/// Performs one of the hypercalls that only answer: they return a result
/// to the caller and leave its registers, its mode and the scheduler alone.
/// These, and only these, can be batched by [`multicall`](multicall::multicall),
/// which calls this directly with an entry's arguments (no registers to
/// build). Every other call (`yield`, `exit`, `bench_floor`, `sched_op`,
/// `iret`, and `multicall` itself) is refused here with `BadArgument`:
/// [`dispatch`] handles them before it gets here.
#[inline(always)]
pub(crate) fn answer<M: MachineMemory, C: ConsoleSink>(ctx: &mut Context<'_, M, C>, call: Hypercall, args: &impl Args) -> Result<u64, HypercallError> {
    let a = |n| args.arg(n);
    match call {
        Hypercall::Null => Ok(0),
        Hypercall::AbiVersion => Ok(u64::from(ABI_VERSION)),
        Hypercall::ConsoleWrite => console::console_write(ctx, a(0), a(1)),
        Hypercall::DomainInfo => console::domain_info(ctx, a(0), a(1)),
        // Any change to the page tables forgets the cached kernel-stack translation.
        Hypercall::MmuUpdate => mm::forget_stack_page(ctx, |ctx| mm::mmu_update(ctx, a(0), a(1), a(2))),
        Hypercall::MmuextOp => mm::forget_stack_page(ctx, |ctx| mm::mmuext_op(ctx, a(0), a(1), a(2))),
        Hypercall::UpdateVaMapping => mm::forget_stack_page(ctx, |ctx| mm::update_va_mapping(ctx, a(0), a(1), a(2))),
        Hypercall::MemoryOp => mm::forget_stack_page(ctx, |ctx| mm::memory_op(ctx, a(0), a(1), a(2))),
        Hypercall::SetTrapTable => traps::set_trap_table(ctx, a(0), a(1)),
        Hypercall::SetCallbacks => traps::set_callbacks(ctx, a(0), a(1)),
        Hypercall::StackSwitch => traps::stack_switch(ctx, a(0)),
        Hypercall::EventChannelOp => events::event_channel_op(ctx, a(0), a(1), a(2)),
        Hypercall::SetTimer => events::set_timer(ctx, a(0)),
        // Calls that leave the caller or change its registers cannot be batched.
        Hypercall::Multicall
        | Hypercall::Yield
        | Hypercall::Exit
        | Hypercall::Iret
        | Hypercall::BenchFloor
        | Hypercall::SchedOp => Err(HypercallError::BadArgument),
    }
}

/// Prints what a domain left in its line buffer (on exit or crash).
pub fn flush_console(domain: &mut Domain, sink: &mut impl ConsoleSink) {
    domain.console.flush(&domain.name, sink);
}

/// Whether a guest-virtual address is one a guest may use as code or stack.
pub(crate) fn is_guest_address(va: u64) -> bool {
    va < hypercall_abi::layout::GUEST_VIRT_LIMIT
}
