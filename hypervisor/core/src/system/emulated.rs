//! The system's side of trap-and-emulate: where each exit of an emulated
//! domain goes.
//!
//! An emulated kernel leaves the guest for one of four reasons, and each
//! has one path here:
//!
//! - a **page fault** ([`System::emulated_page_fault`]): the shadow tables
//!   fill themselves from the guest's, or the guest gets its own #PF, or a
//!   write to a write-protected guest page table is emulated and synced;
//! - a **#GP or #NP** ([`System::emulated_instruction`]): the guest ran a
//!   privileged instruction (or, through #NP, an `iretq` to its user
//!   mode); it is fetched, decoded and carried out on the virtual CPU;
//! - a **`syscall`** ([`System::emulated_syscall`]): its kernel's system
//!   call entry, emulated from the virtual MSRs;
//! - any **other exception** or the **timer**: reflected to the guest, or a
//!   virtual PIT tick becomes an interrupt through its IDT.
//!
//! Every path ends in [`System::emulated_resume`], which delivers a due
//! virtual interrupt and reloads the shadow root when the guest's CR3 or
//! privilege level changed.

use super::{Door, Next, Platform, System};
use crate::console::ConsoleSink;
use crate::decode::{self, DecodeError, Decoded, Op, MAX_LEN};
use crate::domain::{DomainId, Ending};
use crate::emulated::guest_phys::GuestPhys;
use crate::emulated::guest_virt::{GuestVirt, VirtFault, Written};
use crate::emulated::guest_walk::Access;
use crate::emulated::inject::{deliver, EventKind};
use crate::emulated::instructions::{emulate, never_traps_for_privilege, user_mode_may_try, Outcome};
use crate::emulated::machine::{StiShadow, VirtualMachine};
use crate::emulated::shadow::{FaultOutcome, ShadowEnv};
use crate::emulated::store::{emulate_store, StoreError};
use crate::emulated::{REAL_CS, REAL_SS};
use crate::hypercall::TlbFlush;
use crate::machine_memory::MachineMemory;
use crate::vcpu::{GuestRegs, GUEST_RFLAGS_MASK};
use alloc::format;
use alloc::string::String;

/// The interrupt flag.
const IF: u64 = 1 << 9;
/// General protection fault.
const GP: u8 = 13;
/// Vectors whose exceptions push an error code.
const WITH_ERROR_CODE: [u64; 8] = [8, 10, 11, 12, 13, 14, 17, 21];

impl System {
    /// The running emulated domain and its machine.
    fn vm_parts(&mut self) -> (DomainId, &mut VirtualMachine) {
        let id = self.current.expect("running");
        let vm = self.domains[usize::from(id.0)].vm.as_deref_mut().expect("an emulated domain");
        (id, vm)
    }

    /// An exception raised by the running emulated domain.
    pub(super) fn emulated_exception<M: MachineMemory, C: ConsoleSink>(
        &mut self,
        p: &mut Platform<'_, M, C>,
        frame: &mut GuestRegs,
        cr2: u64,
    ) -> Next {
        match frame.vector {
            // A supervisor-mode access from ring 3 is never the guest's own:
            // the CPU made it for an instruction that works on the stack or
            // the descriptor tables with its own rights (QEMU pops the
            // frame of a far return that way, and SMAP refuses it on our
            // user-mode shadow pages). That instruction is a privileged one
            // the guest must not run in ring 3: emulate it.
            14 if frame.error_code & 4 == 0 => self.emulated_instruction(p, frame),
            14 => self.emulated_page_fault(p, frame, cr2),
            11 | 13 => self.emulated_instruction(p, frame),
            3 | 4 => {
                // `int3`, `int 3` or `int 4`: the hypervisor's own gates for
                // these are open to ring 3, so they arrive as exceptions
                // after the instruction. They are software interrupts: the
                // guest's gate must allow its caller's privilege.
                let len = self.software_interrupt_len(p, frame);
                frame.rip = frame.rip.wrapping_sub(u64::from(len));
                self.vm_parts().1.exits.exceptions += 1;
                self.emulated_inject(p, frame, frame.vector as u8, EventKind::Software { len })
            }
            vector => {
                // The guest's own business: a divide error, a breakpoint,
                // an invalid opcode... delivered through its IDT.
                let (_, vm) = self.vm_parts();
                vm.exits.exceptions += 1;
                let error_code = WITH_ERROR_CODE.contains(&vector).then_some(frame.error_code);
                self.emulated_inject(p, frame, vector as u8, EventKind::Exception { error_code })
            }
        }
    }

    /// The length of the software interrupt that raised `frame.vector`
    /// (3 or 4) and left `frame.rip` after itself: `int3` is one byte
    /// (0xcc), `int 3` and `int 4` two (`into` is invalid in 64-bit mode).
    fn software_interrupt_len<M: MachineMemory, C: ConsoleSink>(&mut self, p: &mut Platform<'_, M, C>, frame: &GuestRegs) -> u8 {
        if frame.vector != 3 {
            return 2;
        }
        let id = self.current.expect("running");
        let d = &self.domains[usize::from(id.0)];
        let vm = d.vm.as_deref().expect("an emulated domain");
        let mem = GuestVirt::new(&mut *p.mem, GuestPhys::new(&d.frames), vm.cpu.cr3, vm.cpu.nxe(), vm.cpu.user_mode());
        let mut byte = [0u8; 1];
        match mem.read(frame.rip.wrapping_sub(1), &mut byte, true) {
            Ok(()) if byte[0] != 0xcc => 2,
            _ => 1,
        }
    }

    /// A page fault: fill the shadow, or give the guest its own fault, or
    /// emulate a write to one of its page tables.
    fn emulated_page_fault<M: MachineMemory, C: ConsoleSink>(
        &mut self,
        p: &mut Platform<'_, M, C>,
        frame: &mut GuestRegs,
        cr2: u64,
    ) -> Next {
        let id = self.current.expect("running");
        let reset = self.with_shadow(p.mem, id, |vm, env| {
            // Over budget: drop every shadow and start again from a new
            // root, on which the guest retries (a fill allocates a few
            // frames, so this bounds them whether or not it loads CR3).
            let over = vm.shadow.over_budget(env);
            if over {
                vm.shadow.reset(env);
                vm.root = None;
                vm.exits.shadow_fills += 1;
            }
            over
        });
        if reset {
            return self.emulated_resume(p, frame, true, TlbFlush::None);
        }
        let (write, fetch) = (frame.error_code & 2 != 0, frame.error_code & 16 != 0);
        let outcome = self.with_shadow(p.mem, id, |vm, env| {
            let access = Access { write, user: vm.cpu.user_mode(), fetch };
            let (cr3, mode) = (vm.cpu.cr3, vm.mode());
            vm.shadow.on_page_fault(env, cr3, mode, cr2, access)
        });
        let vm = self.vm_parts().1;
        match outcome {
            Ok(FaultOutcome::Filled { tlb }) => {
                vm.exits.shadow_fills += 1;
                self.emulated_resume(p, frame, false, tlb)
            }
            Ok(FaultOutcome::GuestFault { error_code }) => {
                vm.exits.guest_page_faults += 1;
                vm.cpu.cr2 = cr2;
                self.emulated_inject(p, frame, 14, EventKind::Exception { error_code: Some(error_code) })
            }
            Ok(FaultOutcome::WriteToPageTable { tlb, .. }) => {
                // Filling the path may have write-protected a new table and
                // downgraded writable leaves: that flush must happen too.
                vm.exits.page_table_writes += 1;
                self.emulated_page_table_write(p, frame, tlb)
            }
            Err(e) => self.crash(p, frame, &format!("its shadow page tables cannot follow its own: {e}"), cr2),
        }
    }

    /// A store into one of the guest's own page tables, which stay
    /// write-protected: carried out by the store emulator, then synced.
    fn emulated_page_table_write<M: MachineMemory, C: ConsoleSink>(
        &mut self,
        p: &mut Platform<'_, M, C>,
        frame: &mut GuestRegs,
        fill_tlb: TlbFlush,
    ) -> Next {
        let (bytes, insn) = match self.fetch_and_decode(p, frame) {
            Ok(x) => x,
            // (A switch reloads CR3, which flushes anyway.)
            Err(Next::Resume { tlb }) => return Next::Resume { tlb: merge(tlb, fill_tlb) },
            Err(next) => return next,
        };
        let id = self.current.expect("running");
        let crate::domain::Domain { vm, vcpu, frames, .. } = &mut self.domains[usize::from(id.0)];
        let vm = vm.as_deref_mut().expect("an emulated domain");
        let seg = vm.cpu.segment_bases();
        let mut mem = GuestVirt::new(&mut *p.mem, GuestPhys::new(frames), vm.cpu.cr3, vm.cpu.nxe(), vm.cpu.user_mode());
        let result = emulate_store(&insn, frame, &vcpu.fpu, seg, &mut mem);
        let written = mem.written; // moved out, not taken: no empty list to build
        let tlb = merge(fill_tlb, self.sync_guest_writes(p, id, &written));
        let vm = self.domains[usize::from(id.0)].vm.as_deref_mut().expect("an emulated domain");
        match result {
            Ok(()) => self.emulated_resume(p, frame, false, tlb),
            Err(StoreError::Memory(VirtFault::PageFault { va, error_code })) => {
                vm.exits.guest_page_faults += 1;
                vm.cpu.cr2 = va;
                self.emulated_inject(p, frame, 14, EventKind::Exception { error_code: Some(error_code) })
            }
            Err(StoreError::Operand(fault)) => {
                vm.exits.exceptions += 1;
                self.emulated_inject(p, frame, fault.vector(), EventKind::Exception { error_code: Some(0) })
            }
            Err(StoreError::Memory(VirtFault::NonCanonical { .. })) => {
                // (The operand was checked first: only a string store's
                // later element can get here, and that is checked too.)
                vm.exits.exceptions += 1;
                self.emulated_inject(p, frame, GP, EventKind::Exception { error_code: Some(0) })
            }
            Err(StoreError::Memory(VirtFault::NotRam(e))) => {
                self.crash(p, frame, &format!("its store to a page table leads outside its RAM: {e}"), 0)
            }
            Err(StoreError::NotAStore) => {
                let why = format!(
                    "it writes to its own page table with {} ({}), which the store emulator does not support",
                    hex(&bytes[..insn.len.min(bytes.len())]),
                    insn.op
                );
                self.crash(p, frame, &why, 0)
            }
        }
    }

    /// A #GP or #NP: the guest ran a privileged instruction (or an `iretq`
    /// to a selector the hypervisor keeps not present), or the fault is
    /// its own: an instruction that does not trap for privilege faults in
    /// ring 3 exactly where it faults in ring 0 (a non-canonical address,
    /// a misaligned `movaps`), and the CPU's #GP is delivered as raised.
    fn emulated_instruction<M: MachineMemory, C: ConsoleSink>(
        &mut self,
        p: &mut Platform<'_, M, C>,
        frame: &mut GuestRegs,
    ) -> Next {
        let (bytes, insn) = match self.fetch_and_decode(p, frame) {
            Ok(x) => x,
            Err(next) => return next,
        };
        let id = self.current.expect("running");
        let now_ns = self.time.now_ns(p.tsc);
        let d = &mut self.domains[usize::from(id.0)];
        let vm = d.vm.as_deref_mut().expect("an emulated domain");
        let own = frame.vector == u64::from(GP) && never_traps_for_privilege(insn.op);
        if own || (vm.cpu.user_mode() && !user_mode_may_try(insn.op)) {
            // The guest's own #GP, or a user process tried something no
            // user process may do (the emulator decides the few that may,
            // by the virtual CPU's rules): the fault is its kernel's, as
            // the CPU raised it.
            vm.exits.exceptions += 1;
            let (vector, error_code) = (frame.vector as u8, Some(frame.error_code));
            return self.emulated_inject(p, frame, vector, EventKind::Exception { error_code });
        }
        if matches!(insn.op, Op::In(..) | Op::Out(..)) {
            vm.exits.io += 1;
        } else {
            vm.exits.instructions += 1;
        }
        let user = vm.cpu.user_mode();
        let mut mem = GuestVirt::new(&mut *p.mem, GuestPhys::new(&d.frames), vm.cpu.cr3, vm.cpu.nxe(), user);
        let result = emulate(&insn, &mut vm.cpu, frame, &mut mem, &mut vm.devices, now_ns);
        let written = mem.written; // moved out, not taken: no empty list to build
        let tlb = self.sync_guest_writes(p, id, &written);
        let vm = self.domains[usize::from(id.0)].vm.as_deref_mut().expect("an emulated domain");
        match result {
            Ok(Outcome::Next) => {
                if insn.op == Op::Sti {
                    vm.interrupt_shadow = Some(StiShadow { rip: frame.rip, sti_exit: true });
                }
                self.emulated_resume(p, frame, false, tlb)
            }
            Ok(Outcome::Flush(flush)) => self.emulated_resume(p, frame, false, merge(tlb, flush)),
            Ok(Outcome::AddressSpace) => self.emulated_resume(p, frame, true, tlb),
            Ok(Outcome::SegmentBases) => match self.emulated_resume(p, frame, false, tlb) {
                // The same tables, but the CPU must load the new FS/GS bases,
                // which it does on a switch (reloading CR3 flushes too).
                Next::Resume { .. } => {
                    let root = self.domains[usize::from(id.0)].root();
                    Next::Switch { root, door: Door::Emulated }
                }
                other => other,
            },
            Ok(Outcome::Halt) => self.emulated_halt(p, frame),
            Ok(Outcome::Console(byte)) => {
                let d = &mut self.domains[usize::from(id.0)];
                d.console.push(&[byte], &d.name, p.console);
                self.emulated_resume(p, frame, false, tlb)
            }
            Ok(Outcome::TimerChanged) => {
                self.timer_dirty = true;
                self.emulated_resume(p, frame, false, tlb)
            }
            Ok(Outcome::Exit(status)) => {
                self.leave_cpu(id, p.tsc, 0);
                self.end(p, id, Ending::Exited(u64::from(status)));
                self.dispatch_next(p, frame)
            }
            Ok(Outcome::Fault { vector, error_code }) => {
                vm.exits.exceptions += 1;
                self.emulated_inject(p, frame, vector, EventKind::Exception { error_code })
            }
            Ok(Outcome::PageFault { va, error_code }) => {
                vm.exits.guest_page_faults += 1;
                vm.cpu.cr2 = va;
                self.emulated_inject(p, frame, 14, EventKind::Exception { error_code: Some(error_code) })
            }
            Err(e) => {
                let why = format!("it ran {} ({}), which cannot be emulated: {e}", hex(&bytes[..insn.len.min(bytes.len())]), insn.op);
                self.crash(p, frame, &why, 0)
            }
        }
    }

    /// Fetches and decodes the instruction at the guest's `rip`. On failure
    /// the domain has been dealt with (its fault reflected, or stopped) and
    /// the error holds what to do next.
    fn fetch_and_decode<M: MachineMemory, C: ConsoleSink>(
        &mut self,
        p: &mut Platform<'_, M, C>,
        frame: &mut GuestRegs,
    ) -> Result<(Fetched, Decoded), Next> {
        let id = self.current.expect("running");
        let d = &self.domains[usize::from(id.0)];
        let vm = d.vm.as_deref().expect("an emulated domain");
        let mem = GuestVirt::new(&mut *p.mem, GuestPhys::new(&d.frames), vm.cpu.cr3, vm.cpu.nxe(), vm.cpu.user_mode());
        let mut buf = [0u8; MAX_LEN];
        let n = match mem.fetch(frame.rip, &mut buf) {
            Ok(n) => n,
            Err(VirtFault::PageFault { va, error_code }) => {
                // It just ran there, so its tables changed under it: its own #PF.
                let vm = self.domains[usize::from(id.0)].vm.as_deref_mut().expect("an emulated domain");
                vm.cpu.cr2 = va;
                vm.exits.guest_page_faults += 1;
                return Err(self.emulated_inject(p, frame, 14, EventKind::Exception { error_code: Some(error_code) }));
            }
            Err(VirtFault::NonCanonical { .. }) => {
                // Its last bytes cross the end of the lower half.
                self.vm_parts().1.exits.exceptions += 1;
                return Err(self.emulated_inject(p, frame, GP, EventKind::Exception { error_code: Some(0) }));
            }
            Err(VirtFault::NotRam(e)) => {
                return Err(self.crash(p, frame, &format!("its instruction pointer leads outside its RAM: {e}"), 0))
            }
        };
        let bytes = Fetched { buf, len: n };
        let user = self.domains[usize::from(id.0)].vm.as_deref().is_some_and(|vm| vm.cpu.user_mode());
        match decode::decode(&bytes) {
            Ok(insn) => Ok((bytes, insn)),
            Err(_) if user || (frame.vector == u64::from(GP) && !decode::may_trap_for_privilege(&bytes)) => {
                // A user process's own fault: its kernel decides. Or an
                // instruction that cannot trap for privilege (a load from a
                // non-canonical address, say) raised the #GP it raises in
                // ring 0 too: the kernel's own.
                let vector = frame.vector as u8;
                let error_code = Some(frame.error_code);
                self.vm_parts().1.exits.exceptions += 1;
                Err(self.emulated_inject(p, frame, vector, EventKind::Exception { error_code }))
            }
            Err(DecodeError::Invalid) => {
                // Bytes the CPU refuses at any privilege (`mov rax, cr5`):
                // at its CPL 0 the kernel gets the #UD a real CPU raises.
                self.vm_parts().1.exits.exceptions += 1;
                Err(self.emulated_inject(p, frame, 6, EventKind::Exception { error_code: None }))
            }
            Err(e) => {
                let what = crate::fault::exception_name(frame.vector).0;
                let why = format!("it raised {what} at the bytes {} and the decoder says: {e}", hex(&bytes));
                Err(self.crash(p, frame, &why, 0))
            }
        }
    }

    /// Tells the shadow about every write the emulator made into guest
    /// memory (a write into a guest page table must drop what the shadow
    /// derived from it). Returns the TLB flush that needs.
    fn sync_guest_writes<M: MachineMemory, C: ConsoleSink>(
        &mut self,
        p: &mut Platform<'_, M, C>,
        id: DomainId,
        written: &Written,
    ) -> TlbFlush {
        self.with_shadow(p.mem, id, |vm, env| {
            if written.overflowed {
                // Too many pieces to follow one by one: any table may have
                // changed, so every shadow goes (rebuilt on demand).
                vm.shadow.drop_all(env);
                vm.root = None;
                return TlbFlush::All;
            }
            written.ranges.iter().fold(TlbFlush::None, |tlb, &(gpa, len)| merge(tlb, vm.shadow.guest_wrote(env, gpa, len)))
        })
    }

    /// Runs `f` on the virtual machine of emulated domain `id` and the
    /// shadow environment of its memory.
    fn with_shadow<M: MachineMemory, R>(
        &mut self,
        mem: &mut M,
        id: DomainId,
        f: impl FnOnce(&mut VirtualMachine, &mut ShadowEnv<'_, M>) -> R,
    ) -> R {
        let d = &mut self.domains[usize::from(id.0)];
        let vm = d.vm.as_deref_mut().expect("an emulated domain");
        let mut env = ShadowEnv {
            mem,
            frames: &mut self.frames,
            guest: GuestPhys::new(&d.frames),
            hypervisor_half: &self.hypervisor_half,
            nxe: vm.cpu.nxe(),
        };
        f(vm, &mut env)
    }

    /// A `syscall` from the emulated domain: done as the CPU would, from
    /// its virtual EFER, STAR, LSTAR and FMASK.
    pub(super) fn emulated_syscall<M: MachineMemory, C: ConsoleSink>(
        &mut self,
        p: &mut Platform<'_, M, C>,
        frame: &mut GuestRegs,
    ) -> Next {
        let (_, vm) = self.vm_parts();
        vm.exits.syscalls += 1;
        let cpu = &mut vm.cpu;
        if cpu.efer & crate::emulated::cpu::cr::EFER_SCE == 0 {
            frame.rip = frame.rip.wrapping_sub(2); // #UD points at the syscall itself
            vm.exits.exceptions += 1;
            return self.emulated_inject(p, frame, 6, EventKind::Exception { error_code: None });
        }
        // The CPU already put the return address in rcx and RFLAGS in r11;
        // the flags the guest must see carry its virtual IF.
        frame.r11 = cpu.visible_rflags(frame.r11);
        let mask = cpu.sfmask;
        if mask & IF != 0 {
            cpu.interrupts = false;
        }
        cpu.iopl &= !(((mask & crate::emulated::cpu::IOPL_MASK) >> 12) as u8);
        frame.rflags = ((frame.r11 & !mask) & GUEST_RFLAGS_MASK) | IF | 2;
        frame.rip = cpu.lstar;
        let was_user = cpu.user_mode();
        cpu.cs = ((cpu.star >> 32) as u16) & !3;
        cpu.ss = cpu.cs.wrapping_add(8);
        cpu.cpl = 0;
        self.emulated_resume(p, frame, was_user, TlbFlush::None)
    }

    /// `hlt`: sleep until a virtual interrupt can be delivered.
    fn emulated_halt<M: MachineMemory, C: ConsoleSink>(&mut self, p: &mut Platform<'_, M, C>, frame: &mut GuestRegs) -> Next {
        let (id, vm) = self.vm_parts();
        vm.interrupt_shadow = None; // the `hlt` is the instruction that ran
        if vm.cpu.interrupts && vm.devices.pending_vector().is_some() {
            return self.emulated_resume(p, frame, false, TlbFlush::None);
        }
        if !vm.cpu.interrupts || vm.devices.pit.deadline_ns().is_none() {
            let why = if vm.cpu.interrupts { "no timer is armed" } else { "interrupts are off" };
            let why = format!("it halted and {why}: nothing could ever wake it (a real CPU would hang)");
            return self.crash(p, frame, &why, 0);
        }
        vm.halted = true;
        // (Only a refund: a `hlt` exit adds no shadow.)
        let _ = self.settle_shadow_charge(id);
        self.drain_console(p, id);
        self.leave_cpu(id, p.tsc, 0);
        self.scheduler.set_runnable(id, false);
        self.timer_dirty = true;
        self.save_current(frame);
        self.dispatch_next(p, frame)
    }

    /// Delivers an exception or software interrupt to the running emulated
    /// domain through its IDT, then resumes it there; a delivery a real
    /// CPU could not make stops the domain.
    fn emulated_inject<M: MachineMemory, C: ConsoleSink>(
        &mut self,
        p: &mut Platform<'_, M, C>,
        frame: &mut GuestRegs,
        vector: u8,
        kind: EventKind,
    ) -> Next {
        let id = self.current.expect("running");
        let d = &mut self.domains[usize::from(id.0)];
        let vm = d.vm.as_deref_mut().expect("an emulated domain");
        let mut mem = GuestVirt::new(&mut *p.mem, GuestPhys::new(&d.frames), vm.cpu.cr3, vm.cpu.nxe(), false);
        let result = deliver(&mut vm.cpu, frame, &mut mem, vector, kind);
        let written = mem.written; // moved out, not taken: no empty list to build
        let tlb = self.sync_guest_writes(p, id, &written);
        match result {
            Ok(mode_changed) => self.emulated_resume(p, frame, mode_changed, tlb),
            Err(e) => {
                let (name, _) = crate::fault::exception_name(u64::from(vector));
                let what = if vector < 32 { String::from(name) } else { format!("vector {vector:#x}") };
                self.crash(p, frame, &format!("{what} could not be delivered (a real CPU would triple-fault): {e}"), 0)
            }
        }
    }

    /// Returns to the running emulated domain: first a due virtual
    /// interrupt (if its IF allows and no `sti` shadow holds it back), then
    /// the shadow root of its CR3 and mode if `space_changed`, else `tlb`.
    pub(super) fn emulated_resume<M: MachineMemory, C: ConsoleSink>(
        &mut self,
        p: &mut Platform<'_, M, C>,
        frame: &mut GuestRegs,
        mut space_changed: bool,
        mut tlb: TlbFlush,
    ) -> Next {
        let id = self.current.expect("running");
        let d = &mut self.domains[usize::from(id.0)];
        let vm = d.vm.as_deref_mut().expect("an emulated domain");
        let held = match vm.interrupt_shadow.take() {
            Some(shadow) if shadow.rip == frame.rip => {
                // The instruction after `sti` runs first (see `StiShadow`).
                if shadow.sti_exit {
                    vm.interrupt_shadow = Some(StiShadow { sti_exit: false, ..shadow });
                }
                true
            }
            _ => false,
        };
        if !held && vm.cpu.interrupts {
            if let Some(vector) = vm.devices.acknowledge() {
                vm.exits.interrupts += 1;
                let mut mem = GuestVirt::new(&mut *p.mem, GuestPhys::new(&d.frames), vm.cpu.cr3, vm.cpu.nxe(), false);
                let result = deliver(&mut vm.cpu, frame, &mut mem, vector, EventKind::External);
                let written = mem.written; // moved out, not taken: no empty list to build
                tlb = merge(tlb, self.sync_guest_writes(p, id, &written));
                match result {
                    Ok(changed) => space_changed |= changed,
                    Err(e) => {
                        let why = format!("its timer interrupt (vector {vector:#x}) could not be delivered: {e}");
                        return self.crash(p, frame, &why, 0);
                    }
                }
            }
        }
        if !crate::emulated::cpu::canonical(frame.rip) {
            // Every emulated path that sets RIP checks it as the CPU would;
            // this is the last line: the kernel's `iretq` to a non-canonical
            // RIP would fault in ring 0 and stop the machine.
            return self.crash(p, frame, "its instruction pointer is not canonical", 0);
        }
        let d = &mut self.domains[usize::from(id.0)];
        let vm = d.vm.as_deref_mut().expect("an emulated domain");
        let next = if !space_changed && vm.root.is_some() {
            Next::Resume { tlb }
        } else {
            let root = self.with_shadow(p.mem, id, |vm, env| {
                let (cr3, mode) = (vm.cpu.cr3, vm.mode());
                let result = vm.shadow.root(env, cr3, mode);
                vm.root = result.as_ref().ok().copied();
                result.map_err(|e| (cr3, e))
            });
            match root {
                Ok(root) => Next::Switch { root, door: Door::Emulated },
                Err((cr3, e)) => return self.crash(p, frame, &format!("no shadow page table for its CR3 {cr3:#x}: {e}"), 0),
            }
        };
        // Every exit that returns to the guest comes here, after whatever
        // the exit did to its shadows: their bookkeeping is charged now.
        if self.settle_shadow_charge(id).is_err() {
            let allowance = self.domains[usize::from(id.0)].heap.allowance();
            let why = format!("its shadow page tables need more hypervisor memory than its allowance of {allowance} bytes");
            return self.crash(p, frame, &why, 0);
        }
        next
    }

    /// Charges (or refunds) emulated domain `id` for what its shadows'
    /// bookkeeping holds now ([`Shadow::heap_bytes`](crate::emulated::shadow::Shadow::heap_bytes)); `OutOfMemory`,
    /// with nothing charged, if that does not fit its allowance. (It
    /// always does while the shadows keep to their budgets, which the
    /// allowance covers: this is the check that proves it.)
    pub(super) fn settle_shadow_charge(&mut self, id: DomainId) -> Result<(), hypercall_abi::HypercallError> {
        let d = &mut self.domains[usize::from(id.0)];
        let Some(vm) = d.vm.as_deref_mut() else { return Ok(()) };
        let now = vm.shadow.heap_bytes();
        d.heap.change(vm.shadow_charged, now)?;
        vm.shadow_charged = now;
        Ok(())
    }

    /// Raises the virtual PIT's IRQ 0 in every emulated domain whose tick
    /// is due, and wakes those halted that can now take it. Returns
    /// whether it woke anyone.
    pub(super) fn tick_emulated_devices(&mut self, now_ns: u64) -> bool {
        let mut woke = false;
        for i in 0..self.domains.len() {
            let d = &mut self.domains[i];
            let (true, Some(vm)) = (d.is_alive(), d.vm.as_deref_mut()) else { continue };
            vm.devices.tick(now_ns);
            if vm.halted && vm.cpu.interrupts && vm.devices.pending_vector().is_some() {
                vm.halted = false;
                self.scheduler.set_runnable(super::d_id(i), true);
                woke = true;
            }
        }
        woke
    }

    /// The virtual PIT deadline (system-time ns) of a live emulated domain
    /// that the platform timer must honour (see `next_deadline`): the
    /// running emulated domain's, and those of halted ones that the tick
    /// would wake. A preempted domain cannot see
    /// its IRQ 0 before it runs again, so its ticks wait for the next time
    /// the timer fires anyway, or its dispatch (see `dispatch_next`):
    /// otherwise a kernel that programs a very fast PIT would have the
    /// hypervisor take an interrupt every few microseconds during the
    /// other domains' slices, at their expense.
    pub(super) fn emulated_deadline_of(&self, id: DomainId, vm: &VirtualMachine) -> Option<u64> {
        let wakes = vm.halted && vm.cpu.interrupts && vm.devices.tick_would_interrupt();
        (self.current == Some(id) || wakes).then(|| vm.devices.pit.deadline_ns()).flatten()
    }

    /// Frees the shadow tables of an emulated domain that ended. The
    /// kernel loads another CR3 before anything is allocated again.
    pub(super) fn drop_shadows<M: MachineMemory>(&mut self, mem: &mut M, id: DomainId) {
        if self.domains[usize::from(id.0)].vm.is_none() {
            return;
        }
        self.with_shadow(mem, id, |vm, env| {
            vm.shadow.drop_all(env);
            vm.root = None;
        });
    }
}

/// Instruction bytes fetched at the guest's RIP (at most 15).
struct Fetched {
    buf: [u8; MAX_LEN],
    len: usize,
}

impl core::ops::Deref for Fetched {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// The stronger of two TLB flushes.
fn merge(a: TlbFlush, b: TlbFlush) -> TlbFlush {
    match (a, b) {
        (TlbFlush::None, x) | (x, TlbFlush::None) => x,
        (TlbFlush::Page(x), TlbFlush::Page(y)) if x == y => a,
        _ => TlbFlush::All,
    }
}

/// Bytes as `0f 01 10`.
fn hex(bytes: &[u8]) -> String {
    let mut s = String::new();
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// The registers an emulated kernel starts with: the loader's, on the
/// real selectors of emulated mode.
pub fn emulated_initial_regs(mut regs: GuestRegs) -> GuestRegs {
    regs.cs = REAL_CS;
    regs.ss = REAL_SS;
    regs
}

#[cfg(test)]
#[path = "emulated_fidelity_tests.rs"]
mod fidelity_tests;
