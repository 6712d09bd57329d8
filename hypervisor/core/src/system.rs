//! The whole machine as the hypervisor's logic sees it, and what happens on
//! each entry from a guest.
//!
//! The kernel's entry code saves the running guest's registers in a frame
//! and calls [`System::on_hypercall`] or [`System::on_guest_exception`]. The
//! answer, a [`Next`], tells it whether to return to the same guest, load
//! another address space (the frame and x87/SSE area then already hold the
//! next domain's state), or stop because every domain has ended.

use crate::console::{drain_ring, ConsoleSink};
use crate::domain::{crash_what, Domain, DomainId, Ending};
use crate::fault;
use crate::frame_table::FrameTable;
use crate::hypercall::{self, Context, Outcome, TlbFlush};
use crate::paging::ENTRIES;
use crate::trap_bounce::bounce;
use hypercall_abi::trap::VECTOR_SYSCALL;
use crate::machine_memory::MachineMemory;
use crate::scheduler::{Scheduler, SLICE_NS};
use crate::time::TimeBase;
use crate::trap_bounce::BounceError;
use hypercall_abi::event::{UPCALL_MASK_OFFSET, UPCALL_PENDING_OFFSET};
use hypercall_abi::trap::{debug_cause, VECTOR_DEBUG, VECTOR_EVENT};
use crate::vcpu::GuestRegs;
use alloc::format;
use alloc::vec::Vec;
use hypercall_abi::{encode_result, Hypercall};

/// Vector of the page fault, whose CR2 the guest kernel gets.
const PAGE_FAULT: u64 = 14;
/// Vector of the breakpoint (`int3`) that ends a floor measurement.
const BREAKPOINT: u64 = 3;

/// What the kernel does after an entry has been handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Return to the same guest from the frame, after this TLB flush.
    Resume {
        /// Translations that must go first.
        tlb: TlbFlush,
    },
    /// Load the address space rooted at this machine address (which flushes
    /// the TLB), then return to the frame: it holds the registers of the
    /// domain and mode that run next.
    Switch {
        /// Machine address of the top-level table to load.
        root: u64,
        /// Where `syscall` must enter while it runs.
        door: Door,
    },
    /// Return to the same guest, with `syscall` pointed at the bare
    /// `sysretq` floor path until the guest's next exception.
    ResumeOnFloorPath,
    /// No domain can run now, but one will when a timer expires: halt
    /// until the platform timer fires, then call [`System::on_timer`].
    Idle,
    /// Every domain has ended.
    Finished {
        /// Whether each ended as its manifest expected.
        all_as_expected: bool,
    },
}

impl Next {
    /// Resume without flushing anything.
    pub const RESUME: Next = Next::Resume { tlb: TlbFlush::None };
}

/// Where the `syscall` instruction enters the hypervisor (LSTAR) while a
/// domain runs: one door per situation, so that the entry code never has
/// to ask which situation it is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Door {
    /// A paravirtualized guest in its kernel mode: hypercalls, with the
    /// `null` fast lane.
    Kernel,
    /// A paravirtualized guest in its user mode: system calls to bounce to
    /// its kernel.
    User,
    /// A guest measuring the bare `syscall` + `sysretq` floor (see
    /// [`Hypercall::BenchFloor`]).
    Floor,
    /// An emulated kernel (either mode): `syscall` is an instruction to
    /// emulate, and the guest runs on the emulated-mode selectors.
    Emulated,
}

impl Door {
    /// The door of a paravirtualized guest's current mode.
    pub fn paravirtualized(kernel_mode: bool, bench_floor: bool) -> Door {
        match (bench_floor, kernel_mode) {
            (true, _) => Door::Floor,
            (false, true) => Door::Kernel,
            (false, false) => Door::User,
        }
    }
}

/// The kernel's hardware, lent to the logic for one entry.
pub struct Platform<'a, M: MachineMemory, C: ConsoleSink> {
    /// Machine memory.
    pub mem: &'a mut M,
    /// Console for guest lines.
    pub console: &'a mut C,
    /// The TSC, read when the entry began.
    pub tsc: u64,
}

/// All domains, all frames, and who runs.
#[derive(Debug)]
pub struct System {
    /// Frame ownership and types.
    pub frames: FrameTable,
    /// Every domain, indexed by id.
    pub domains: Vec<Domain>,
    /// The hypervisor's half of every top-level table.
    pub hypervisor_half: [u64; ENTRIES / 2],
    /// System time: the TSC at boot and how it turns into nanoseconds.
    pub time: TimeBase,
    scheduler: Scheduler,
    /// A deadline may have changed since the platform timer was last armed.
    pub timer_dirty: bool,
    current: Option<DomainId>,
    /// TSC when the current domain was given the CPU.
    dispatched_at: u64,
    /// The deadline (and its domain) of the last idle that
    /// `note_long_wait` announced, so that the idle loop says it once.
    long_wait_noted: Option<(u64, DomainId)>,
}

impl System {
    /// A system with these frames, the hypervisor's upper-half PML4
    /// entries, and no domain yet, with room for `nr_domains` domains: the
    /// domain table and the scheduler are allocated now, once, so that
    /// what the heap holds after this call is the level it returns to when
    /// every domain has ended (see `system::ending`).
    pub fn new(frames: FrameTable, hypervisor_half: [u64; ENTRIES / 2], nr_domains: usize) -> Self {
        System {
            frames,
            domains: Vec::with_capacity(nr_domains),
            hypervisor_half,
            time: TimeBase::default(),
            scheduler: Scheduler::with_capacity(nr_domains),
            timer_dirty: true,
            current: None,
            dispatched_at: 0,
            long_wait_noted: None,
        }
    }

    /// Adds a built domain (its id must be the next index) and makes it
    /// runnable. (Past the `nr_domains` given to [`System::new`], the
    /// table would have to grow.)
    pub fn add_domain(&mut self, domain: Domain) {
        self.scheduler.add(domain.id, domain.weight);
        self.domains.push(domain);
    }

    /// The heap bytes charged to each domain, by id.
    pub fn heap_charged(&self) -> impl Iterator<Item = (DomainId, usize)> + '_ {
        self.domains.iter().map(|d| (d.id, d.heap.charged()))
    }

    /// Checks every domain's heap account against what its structures
    /// hold ([`Domain::heap_held`]): the first domain whose charge differs,
    /// with (charged, held), if any. Holds after every entry.
    pub fn check_heap_accounts(&self) -> Result<(), (DomainId, usize, usize)> {
        match self.domains.iter().find(|d| d.heap.charged() != d.heap_held()) {
            Some(d) => Err((d.id, d.heap.charged(), d.heap_held())),
            None => Ok(()),
        }
    }

    /// The running domain.
    pub fn current(&self) -> Option<&Domain> {
        self.current.map(|id| &self.domains[usize::from(id.0)])
    }

    /// The id of the running domain.
    #[inline]
    pub fn current_id(&self) -> Option<DomainId> {
        self.current
    }

    /// The running domain, mutably (the kernel points its per-CPU data at
    /// the vCPU's x87/SSE area).
    pub fn current_mut(&mut self) -> Option<&mut Domain> {
        self.current.map(|id| &mut self.domains[usize::from(id.0)])
    }

    /// Whether the scheduler may pick domain `id` (for the tests'
    /// consistency checks).
    #[cfg(test)]
    pub(crate) fn is_runnable(&self, id: DomainId) -> bool {
        self.scheduler.is_runnable(id)
    }

    fn domain(&mut self, id: DomainId) -> &mut Domain {
        &mut self.domains[usize::from(id.0)]
    }

    /// Picks the first domain to run and loads its registers into `frame`.
    pub fn start<M: MachineMemory, C: ConsoleSink>(&mut self, p: &mut Platform<'_, M, C>, frame: &mut GuestRegs) -> Next {
        self.dispatch_next(p, frame)
    }

    /// Handles a `syscall` from the current domain (its registers in
    /// `frame`): a hypercall in guest kernel mode, a system call to bounce
    /// to the guest kernel in guest user mode.
    ///
    /// This and [`Self::on_user_syscall`] are the paravirtualized hot paths:
    /// the domain is looked up once, `iret` and the common outcomes (a
    /// result, or the registers replaced) go straight to
    /// `resume_paravirtualized`, and everything rarer is out of line.
    #[inline]
    pub fn on_hypercall<M: MachineMemory, C: ConsoleSink>(
        &mut self,
        p: &mut Platform<'_, M, C>,
        frame: &mut GuestRegs,
    ) -> Next {
        let Some(caller) = self.current else { no_current_domain() };
        let d = &mut self.domains[usize::from(caller.0)];
        if !d.vcpu.kernel_mode {
            return self.user_syscall_out_of_line(p, caller, frame);
        }
        if d.vm.is_some() {
            return self.emulated_syscall(p, frame);
        }
        d.stats.hypercalls += 1;
        let root_before = d.vcpu.kernel_root;
        if frame.rax == Hypercall::Iret as u64 {
            // Every trap the guest kernel handles ends here; `iret` needs
            // only the caller's vCPU and stack (no table, no other domain,
            // no timer), so it skips the table. Same checks, same errors.
            if let Err(e) = hypercall::traps::pop_trap_frame(p.mem, &self.frames, caller, &mut d.vcpu, frame) {
                frame.rax = encode_result(Err(e));
            }
            return self.resume_paravirtualized(p, caller, frame, root_before, true, TlbFlush::None);
        }
        let mut ctx = Context {
            mem: p.mem,
            console: p.console,
            frames: &mut self.frames,
            domains: &mut self.domains,
            caller,
            hypervisor_half: &self.hypervisor_half,
            tlb: TlbFlush::None,
            tsc: p.tsc,
            time: &self.time,
            woke: false,
            timer_changed: false,
        };
        let outcome = hypercall::dispatch(&mut ctx, frame);
        let (tlb, woke, timer_changed) = (ctx.tlb, ctx.woke, ctx.timer_changed);
        self.timer_dirty |= timer_changed;
        if woke {
            self.wake_marked();
        }
        match outcome {
            // The common cases, kept short: a result, or `iret`'s new
            // registers, for the same domain.
            Outcome::Return(result) => {
                frame.rax = encode_result(result);
                self.resume_paravirtualized(p, caller, frame, root_before, true, tlb)
            }
            Outcome::Resumed => self.resume_paravirtualized(p, caller, frame, root_before, true, tlb),
            other => self.after_hypercall(p, frame, other, root_before, tlb),
        }
    }

    /// Handles a `syscall` that came through the user door ([`Door::User`]):
    /// the guest's own system call, to bounce to its kernel. The same as
    /// [`Self::on_hypercall`] (which it falls back to if the domain is not
    /// in fact a paravirtualized guest in user mode), but a separate entry,
    /// so that the bounce and the hypercall table are each compiled as one
    /// straight path with no call between the entry and the frame write.
    #[inline]
    pub fn on_user_syscall<M: MachineMemory, C: ConsoleSink>(
        &mut self,
        p: &mut Platform<'_, M, C>,
        frame: &mut GuestRegs,
    ) -> Next {
        let Some(caller) = self.current else { no_current_domain() };
        let d = &self.domains[usize::from(caller.0)];
        if d.vcpu.kernel_mode || d.vm.is_some() {
            return self.on_hypercall_out_of_line(p, frame);
        }
        self.user_syscall(p, caller, frame)
    }

    /// [`Self::on_hypercall`] for [`Self::on_user_syscall`]'s unexpected case.
    #[cold]
    #[inline(never)]
    fn on_hypercall_out_of_line<M: MachineMemory, C: ConsoleSink>(
        &mut self,
        p: &mut Platform<'_, M, C>,
        frame: &mut GuestRegs,
    ) -> Next {
        self.on_hypercall(p, frame)
    }

    /// Handles a `syscall` made with TF set: FMASK leaves TF set, so the
    /// CPU traps on the kernel door's first instruction, and the kernel's
    /// entry code comes here instead of [`Self::on_hypercall`] (a
    /// `syscall` made with TF clear pays nothing for this).
    ///
    /// The hypercall is one instruction of the guest's: it is carried out
    /// as usual, and then the guest kernel's #DB handler gets the step,
    /// with `rip` after the `syscall` (or wherever the hypercall left the
    /// guest: `iret`'s frame, or the point it resumes from after `yield`).
    /// The trap is owed ([`Vcpu::single_step_owed`](crate::vcpu::Vcpu))
    /// with `upcall_due` set, so that the paths back to the domain deliver
    /// it where they deliver upcalls, and before one: at once if it keeps
    /// the CPU, when it is dispatched again if it gave the CPU up.
    #[cold]
    #[inline(never)]
    pub fn on_stepped_hypercall<M: MachineMemory, C: ConsoleSink>(
        &mut self,
        p: &mut Platform<'_, M, C>,
        frame: &mut GuestRegs,
    ) -> Next {
        let Some(caller) = self.current else { no_current_domain() };
        let d = &mut self.domains[usize::from(caller.0)];
        if !d.vcpu.kernel_mode || d.vm.is_some() {
            // Not a hypercall (a door the kernel did not switch): the
            // single-step rules of that door apply, see `on_hypercall`.
            return self.on_hypercall(p, frame);
        }
        d.vcpu.single_step_owed = true;
        d.events.upcall_due = true;
        match self.on_hypercall(p, frame) {
            Next::ResumeOnFloorPath => {
                // `bench_floor` itself was stepped: the #DB is an exception,
                // which ends the floor measurement at once.
                self.domain(caller).vcpu.bench_floor = false;
                if let Some(stopped) = self.deliver_owed_single_step(p, caller, frame) {
                    return stopped;
                }
                let d = &self.domains[usize::from(caller.0)];
                Next::Switch { root: d.vcpu.current_root(), door: d.door() }
            }
            next => next,
        }
    }

    /// The hypercall outcomes that change more than `rax` and the registers.
    #[cold]
    #[inline(never)]
    fn after_hypercall<M: MachineMemory, C: ConsoleSink>(
        &mut self,
        p: &mut Platform<'_, M, C>,
        frame: &mut GuestRegs,
        outcome: Outcome,
        root_before: u64,
        tlb: TlbFlush,
    ) -> Next {
        let caller = self.current.expect("running");
        match outcome {
            Outcome::Return(_) | Outcome::Resumed => unreachable!("handled by on_hypercall"),
            Outcome::BenchFloor => {
                frame.rax = 0;
                self.domain(caller).vcpu.bench_floor = true;
                Next::ResumeOnFloorPath
            }
            Outcome::Yield => {
                frame.rax = 0;
                if !self.scheduler.others_runnable(caller) {
                    return self.resume_current(p, frame, root_before, true, tlb);
                }
                self.drain_console(p, caller);
                // A yield is charged a whole slice, so that the others really run.
                self.leave_cpu(caller, p.tsc, SLICE_NS);
                self.save_current(frame);
                self.dispatch_next(p, frame)
            }
            Outcome::Block => {
                frame.rax = 0;
                self.drain_console(p, caller);
                self.leave_cpu(caller, p.tsc, 0);
                self.scheduler.set_runnable(caller, false);
                self.save_current(frame);
                self.dispatch_next(p, frame)
            }
            Outcome::Exit(status) => {
                self.leave_cpu(caller, p.tsc, 0);
                self.end(p, caller, Ending::Exited(status));
                self.dispatch_next(p, frame)
            }
        }
    }

    /// A `syscall` in guest user mode: the guest's own system call, bounced
    /// to its kernel. Out of line in [`Self::on_hypercall`], where it only
    /// serves a user door the kernel did not use; inline in
    /// [`Self::on_user_syscall`].
    #[inline]
    fn user_syscall<M: MachineMemory, C: ConsoleSink>(
        &mut self,
        p: &mut Platform<'_, M, C>,
        id: DomainId,
        frame: &mut GuestRegs,
    ) -> Next {
        let d = &mut self.domains[usize::from(id.0)];
        let root_before = d.root();
        match bounce(p.mem, &self.frames, d, frame, VECTOR_SYSCALL, 0, 0) {
            Ok(()) => {
                d.stats.bounces += 1;
                // `id` is current and paravirtualized (only such a domain
                // is ever in user mode): no need to look either up again.
                self.resume_paravirtualized(p, id, frame, root_before, false, TlbFlush::None)
            }
            Err(e) => self.user_syscall_failed(p, frame, e),
        }
    }

    /// [`Self::user_syscall`] as a call, for [`Self::on_hypercall`].
    #[inline(never)]
    fn user_syscall_out_of_line<M: MachineMemory, C: ConsoleSink>(
        &mut self,
        p: &mut Platform<'_, M, C>,
        id: DomainId,
        frame: &mut GuestRegs,
    ) -> Next {
        self.user_syscall(p, id, frame)
    }

    /// A user-mode system call that could not be bounced: the domain stops.
    #[cold]
    #[inline(never)]
    fn user_syscall_failed<M: MachineMemory, C: ConsoleSink>(
        &mut self,
        p: &mut Platform<'_, M, C>,
        frame: &mut GuestRegs,
        e: BounceError,
    ) -> Next {
        self.crash(p, frame, &format!("system call from guest user mode, but {e}"), 0)
    }

    /// Returns to the current domain: delivers a due upcall first, then a
    /// new address space if its table or mode changed, else the flush the
    /// entry needs.
    #[inline(always)]
    fn resume_current<M: MachineMemory, C: ConsoleSink>(
        &mut self,
        p: &mut Platform<'_, M, C>,
        frame: &mut GuestRegs,
        root_before: u64,
        kernel_mode_before: bool,
        tlb: TlbFlush,
    ) -> Next {
        let Some(id) = self.current else { no_current_domain() };
        if self.domains[usize::from(id.0)].vm.is_some() {
            return self.emulated_resume(p, frame, false, tlb);
        }
        self.resume_paravirtualized(p, id, frame, root_before, kernel_mode_before, tlb)
    }

    /// [`Self::resume_current`] for a domain known to be the current,
    /// paravirtualized one.
    #[inline(always)]
    fn resume_paravirtualized<M: MachineMemory, C: ConsoleSink>(
        &mut self,
        p: &mut Platform<'_, M, C>,
        id: DomainId,
        frame: &mut GuestRegs,
        root_before: u64,
        kernel_mode_before: bool,
        tlb: TlbFlush,
    ) -> Next {
        let mut d = &self.domains[usize::from(id.0)];
        if d.events.upcall_due {
            if let Some(crashed) = self.upcall_before_resume(p, id, frame) {
                return crashed;
            }
            d = &self.domains[usize::from(id.0)];
        }
        let vcpu = &d.vcpu;
        let root = vcpu.current_root();
        if root != root_before || vcpu.kernel_mode != kernel_mode_before {
            Next::Switch { root, door: Door::paravirtualized(vcpu.kernel_mode, false) }
        } else {
            Next::Resume { tlb }
        }
    }

    /// The rare part of [`Self::resume_current`]: an upcall (or a
    /// single-step trap) may be due. Returns what to do instead of resuming
    /// if the domain had to be stopped.
    #[cold]
    #[inline(never)]
    fn upcall_before_resume<M: MachineMemory, C: ConsoleSink>(
        &mut self,
        p: &mut Platform<'_, M, C>,
        id: DomainId,
        frame: &mut GuestRegs,
    ) -> Option<Next> {
        if let Some(stopped) = self.deliver_owed_single_step(p, id, frame) {
            return Some(stopped);
        }
        let e = self.deliver_upcall(p, id, frame).err()?;
        Some(self.crash(p, frame, &format!("an event upcall was due, but {e}"), 0))
    }

    /// Delivers the single-step trap domain `id` (whose registers are in
    /// `frame`) is owed for a hypercall it made with TF set, if it is: on
    /// the way back to it, before an event upcall (a trap on the previous
    /// instruction comes before an interrupt, Intel SDM vol. 3, 6.9).
    /// Returns what to do instead of going on if the domain had to be
    /// stopped.
    #[cold]
    #[inline(never)]
    fn deliver_owed_single_step<M: MachineMemory, C: ConsoleSink>(
        &mut self,
        p: &mut Platform<'_, M, C>,
        id: DomainId,
        frame: &mut GuestRegs,
    ) -> Option<Next> {
        let d = &mut self.domains[usize::from(id.0)];
        if !core::mem::take(&mut d.vcpu.single_step_owed) {
            return None;
        }
        match bounce(p.mem, &self.frames, d, frame, VECTOR_DEBUG, debug_cause::SINGLE_STEP, 0) {
            Ok(()) => {
                d.stats.bounces += 1;
                None
            }
            Err(e) => {
                frame.vector = VECTOR_DEBUG; // reported as the exception it is
                Some(self.crash(p, frame, &format!("a single-step trap was due after its hypercall, but {e}"), 0))
            }
        }
    }

    /// Delivers an event upcall to domain `id` (whose registers are in
    /// `frame`) if one is pending and not masked.
    fn deliver_upcall<M: MachineMemory, C: ConsoleSink>(
        &mut self,
        p: &mut Platform<'_, M, C>,
        id: DomainId,
        frame: &mut GuestRegs,
    ) -> Result<(), BounceError> {
        let d = &mut self.domains[usize::from(id.0)];
        let mut flags = [0u8; 2];
        p.mem.read(d.shared_info + UPCALL_PENDING_OFFSET as u64, &mut flags);
        let (pending, masked) = (flags[0] != 0, flags[1] != 0);
        if !pending || d.vcpu.event_callback == 0 {
            d.events.upcall_due = false;
            return Ok(());
        }
        if masked {
            return Ok(()); // stays due until the guest unmasks and asks
        }
        d.events.upcall_due = false;
        p.mem.write(d.shared_info + UPCALL_MASK_OFFSET as u64, &[1]);
        bounce(p.mem, &self.frames, d, frame, VECTOR_EVENT, 0, 0)
    }

    /// Handles an exception raised by the current domain: delivered to its
    /// kernel's handler if it registered one, else the domain is stopped,
    /// with a report, and the others run on.
    ///
    /// Inline (into the kernel's exception entry) with the bounce: a
    /// paravirtualized kernel's page faults come this way.
    #[inline]
    pub fn on_guest_exception<M: MachineMemory, C: ConsoleSink>(
        &mut self,
        p: &mut Platform<'_, M, C>,
        frame: &mut GuestRegs,
        cr2: u64,
    ) -> Next {
        let Some(culprit) = self.current else { no_current_domain() };
        let d = &mut self.domains[usize::from(culprit.0)];
        if core::mem::take(&mut d.vcpu.bench_floor) {
            // Any exception ends a floor measurement (the `int3` that ends
            // it on purpose, or a fault in the middle): back to the real
            // door before anything else, so that no later `syscall` of
            // this guest takes the floor path that does nothing.
            if frame.vector == BREAKPOINT {
                return Next::Switch { root: d.root(), door: Door::paravirtualized(d.vcpu.kernel_mode, false) };
            }
            return self.off_the_floor(p, frame, cr2);
        }
        if d.vm.is_some() {
            return self.emulated_exception(p, frame, cr2);
        }
        let (root_before, mode_before) = (d.vcpu.current_root(), d.vcpu.kernel_mode);
        let cr2 = if frame.vector == PAGE_FAULT { cr2 } else { 0 };
        match bounce(p.mem, &self.frames, d, frame, frame.vector, frame.error_code, cr2) {
            Ok(()) => {
                d.stats.bounces += 1;
                self.resume_paravirtualized(p, culprit, frame, root_before, mode_before, TlbFlush::None)
            }
            Err(e) => self.exception_not_delivered(p, frame, e, cr2),
        }
    }

    /// An exception other than the closing `int3` while the current domain
    /// was on the floor path (its flag is already clear): handled as
    /// usual, then resumed through the door of the mode it is in now, even
    /// if neither mode nor table changed.
    #[cold]
    #[inline(never)]
    fn off_the_floor<M: MachineMemory, C: ConsoleSink>(
        &mut self,
        p: &mut Platform<'_, M, C>,
        frame: &mut GuestRegs,
        cr2: u64,
    ) -> Next {
        let id = self.current.expect("running");
        match self.on_guest_exception(p, frame, cr2) {
            Next::Resume { .. } if self.current == Some(id) => {
                let d = &self.domains[usize::from(id.0)];
                Next::Switch { root: d.vcpu.current_root(), door: Door::paravirtualized(d.vcpu.kernel_mode, false) }
            }
            next => next,
        }
    }

    /// An exception the guest kernel cannot take: the domain stops.
    #[cold]
    #[inline(never)]
    fn exception_not_delivered<M: MachineMemory, C: ConsoleSink>(
        &mut self,
        p: &mut Platform<'_, M, C>,
        frame: &mut GuestRegs,
        e: BounceError,
        cr2: u64,
    ) -> Next {
        let culprit = self.current.expect("running");
        let kernel_mode = self.domains[usize::from(culprit.0)].vcpu.kernel_mode;
        let (mnemonic, _) = fault::exception_name(frame.vector);
        let why = format!("{mnemonic} in guest {} mode, and {e}", if kernel_mode { "kernel" } else { "user" });
        self.crash(p, frame, &why, cr2)
    }

    fn drain_console<M: MachineMemory, C: ConsoleSink>(&mut self, p: &mut Platform<'_, M, C>, id: DomainId) {
        let d = &mut self.domains[usize::from(id.0)];
        if d.vm.is_none() {
            // (An emulated kernel has no ring: it prints through its UART.)
            drain_ring(p.mem, d.console_ring, &mut d.console, &d.name, p.console);
        }
    }

    fn save_current(&mut self, frame: &GuestRegs) {
        if let Some(id) = self.current.take() {
            let vcpu = &mut self.domain(id).vcpu;
            vcpu.regs = *frame;
        }
    }

    /// Loads the next runnable domain into the frame; or idles until a
    /// timer; or reports the end (or that the remaining domains can never
    /// run again).
    fn dispatch_next<M: MachineMemory, C: ConsoleSink>(
        &mut self,
        p: &mut Platform<'_, M, C>,
        frame: &mut GuestRegs,
    ) -> Next {
        self.dispatched_at = p.tsc;
        self.timer_dirty = true;
        let Some(next) = self.scheduler.pick() else {
            if !self.domains.iter().any(Domain::is_alive) {
                return Next::Finished { all_as_expected: self.domains.iter().all(Domain::ended_as_expected) };
            }
            if self.next_deadline().is_some() {
                self.note_long_wait(p.tsc);
                return Next::Idle;
            }
            // Everyone left waits, with no deadline at all (a deadline,
            // however far, is something to wait for: see `next_deadline`),
            // for an event nobody can send. (Their ends are not announced
            // to each other: that would wake the next.)
            for i in 0..self.domains.len() {
                if self.domains[i].is_alive() {
                    log::error!("{} waits for an event that nothing can send any more", self.domains[i].label());
                    self.end_quietly(p, d_id(i), Ending::Crashed(crash_what("blocked forever")));
                }
            }
            return Next::Finished { all_as_expected: self.domains.iter().all(Domain::ended_as_expected) };
        };
        let d = &mut self.domains[usize::from(next.0)];
        d.stats.dispatches += 1;
        *frame = d.vcpu.regs;
        let (upcall_due, single_step_owed) = (d.events.upcall_due, d.vcpu.single_step_owed);
        self.current = Some(next);
        if let Some(vm) = d.vm.as_deref_mut() {
            // The PIT ticks it missed while preempted (they did not arm the
            // platform timer: see `emulated_deadline_ns`).
            vm.devices.tick(self.time.now_ns(p.tsc));
            // Its root may have to be made, and a virtual interrupt may be due.
            return match self.emulated_resume(p, frame, true, TlbFlush::None) {
                Next::Resume { .. } => unreachable!("a dispatch always switches"),
                next => next,
            };
        }
        if upcall_due {
            // (A single-step trap is owed only with `upcall_due` set.)
            if single_step_owed {
                if let Some(stopped) = self.deliver_owed_single_step(p, next, frame) {
                    return stopped;
                }
            }
            if let Err(e) = self.deliver_upcall(p, next, frame) {
                return self.crash(p, frame, &format!("an event upcall was due, but {e}"), 0);
            }
        }
        let d = &self.domains[usize::from(next.0)];
        Next::Switch { root: d.root(), door: d.door() }
    }

}

/// An entry from a guest while no domain is current: a hypervisor bug.
#[cold]
#[inline(never)]
fn no_current_domain() -> ! {
    panic!("a guest entered, but no domain is current")
}

fn d_id(index: usize) -> DomainId {
    DomainId(index as u16)
}

mod emulated;
mod ending;
mod time;

pub use emulated::emulated_initial_regs;
pub use ending::{ALL_AS_EXPECTED, NOT_AS_EXPECTED};

#[cfg(test)]
mod tests;
#[cfg(test)]
mod event_tests;
#[cfg(test)]
mod emulated_tests;
#[cfg(test)]
mod emulated_regression_tests;
#[cfg(test)]
mod emulated_fault_tests;
#[cfg(test)]
mod single_step_tests;
#[cfg(test)]
mod fuzz_tests;
