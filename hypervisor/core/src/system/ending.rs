//! How a domain ends: the crash report of a guest that could not go on,
//! the bookkeeping of every ending (last output, ports closed, the others
//! told, memory freed), and the final summary of how each domain ended.
//!
//! An ended domain gives back everything it made the hypervisor hold:
//! every frame (its own and its shadow tables) to the free pool, and every
//! heap block charged to it (frame list, port table, virtual machine with
//! its shadow bookkeeping), so that its account reads 0. What stays is its
//! fixed-size record in the domain table, allocated before any domain was
//! built: this is what makes the final conservation check exact.

use super::{d_id, Next, Platform, System};
use crate::console::ConsoleSink;
use crate::domain::{crash_what, DomainId, EmulatedRecord, Ending};
use crate::event_channel::{self, Port, Wait};
use crate::fault;
use crate::frame_table::Owner;
use crate::heap_account::release;
use crate::hypercall;
use hypercall_abi::event::virq;
use hypercall_abi::trap::VECTOR_SYSCALL;
use crate::machine_memory::MachineMemory;
use crate::plural::count;
use crate::vcpu::GuestRegs;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

/// The hypervisor's last line when every domain ended as its manifest
/// expected. QEMU's exit status for it (1) is also what QEMU exits with
/// when it cannot start at all, so `cargo xtask run` takes success from
/// this line and the status together.
pub const ALL_AS_EXPECTED: &str = "all domains ended as expected";

/// The hypervisor's last line when some domain did not end as expected.
pub const NOT_AS_EXPECTED: &str = "some domains did not end as expected";

impl System {
    /// Stops the current domain with a report and runs the next.
    pub(super) fn crash<M: MachineMemory, C: ConsoleSink>(
        &mut self,
        p: &mut Platform<'_, M, C>,
        frame: &mut GuestRegs,
        why: &str,
        cr2: u64,
    ) -> Next {
        let culprit = self.current.expect("running");
        // Its last words, even an unfinished line, come before the report.
        self.drain_console(p, culprit);
        hypercall::flush_console(self.domain(culprit), p.console);
        let domain = &self.domains[usize::from(culprit.0)];
        for line in fault::report(&format!("{} crashed", domain.label()), frame, cr2) {
            log::error!("{}", line);
        }
        if let Some(vm) = &domain.vm {
            let c = &vm.cpu;
            log::error!(
                "virtual cpu: cpl={} if={} cr0={:#x} cr2={:#x} cr3={:#x} cr4={:#x} cs={:#x} ss={:#x}",
                c.cpl,
                u8::from(c.interrupts),
                c.cr0,
                c.cr2,
                c.cr3,
                c.cr4,
                c.cs,
                c.ss
            );
        }
        log::error!("why: {why}");
        let what = if frame.vector == VECTOR_SYSCALL {
            format!("syscall at {:#x}", frame.rip)
        } else {
            format!("{} at {:#x}", fault::exception_name(frame.vector).0, frame.rip)
        };
        self.leave_cpu(culprit, p.tsc, 0);
        self.end(p, culprit, Ending::Crashed(crash_what(&what)));
        self.dispatch_next(p, frame)
    }

    /// Records how a domain ended, prints its last output, closes its
    /// ports, tells the others if it did not end by itself, and frees its
    /// memory and everything it held on the heap.
    pub(super) fn end<M: MachineMemory, C: ConsoleSink>(&mut self, p: &mut Platform<'_, M, C>, id: DomainId, ending: Ending) {
        self.end_with(p, id, ending, true);
    }

    /// [`Self::end`] without raising VIRQ_DOM_EXC in the others.
    pub(super) fn end_quietly<M: MachineMemory, C: ConsoleSink>(&mut self, p: &mut Platform<'_, M, C>, id: DomainId, ending: Ending) {
        self.end_with(p, id, ending, false);
    }

    fn end_with<M: MachineMemory, C: ConsoleSink>(&mut self, p: &mut Platform<'_, M, C>, id: DomainId, ending: Ending, announce: bool) {
        self.drain_console(p, id);
        let d = &mut self.domains[usize::from(id.0)];
        hypercall::flush_console(d, p.console);
        match &ending {
            Ending::Exited(status) => log::info!("{} exited with status {}", d.label(), status),
            Ending::Crashed(what) => log::info!("{} stopped after {}; the other domains run on", d.label(), what),
            Ending::TimeLimit => log::info!("{} stopped at its CPU time limit; the other domains run on", d.label()),
        }
        let abnormal = announce && !matches!(ending, Ending::Exited(_));
        d.ending = Some(ending);
        d.events.wait = Wait::None;
        d.events.timer_deadline_ns = None;
        // Its ports go (a loopback channel with them), and the other ends
        // of its channels go back to unbound. Its table is taken out while
        // the others' are written (`close_all` never names it as a peer).
        let (mut events, mut heap) = (core::mem::take(&mut d.events), d.heap);
        events.close_all(id, &mut heap, |remote, port| {
            self.domains[usize::from(remote.0)].events.set(port, Port::Unbound { remote: id });
        });
        let d = &mut self.domains[usize::from(id.0)];
        (d.events, d.heap) = (events, heap);
        // The frames are freed while this domain's tables may still be loaded:
        // nothing allocates before the kernel loads the next address space.
        self.drop_shadows(p.mem, id);
        // Only a refund: the bookkeeping is empty now.
        let _ = self.settle_shadow_charge(id);
        let d = &mut self.domains[usize::from(id.0)];
        for &mfn in &d.frames {
            self.frames.free(mfn, Owner::Domain(id)).expect("a domain's frame list holds only its own frames");
        }
        release(&mut d.frames, &mut d.heap);
        if let Some(vm) = d.vm.take() {
            d.emulated = Some(EmulatedRecord { exits: vm.exits, shadow: vm.shadow.stats() });
            d.heap.refund(core::mem::size_of_val(&*vm) + vm.shadow_charged);
        }
        debug_assert_eq!(d.heap.charged(), 0, "{} still holds heap", d.label());
        self.scheduler.set_runnable(id, false);
        if self.current == Some(id) {
            self.current = None;
        }
        if abnormal {
            for i in 0..self.domains.len() {
                let other = &mut self.domains[i];
                if let (true, Some(port)) = (other.is_alive(), other.events.virq_port(virq::DOM_EXC)) {
                    if event_channel::raise(p.mem, other.shared_info, &mut other.events, port) {
                        self.wake(d_id(i), Some(port));
                    }
                }
            }
        }
    }

    /// The final report: one line per domain, then the verdict.
    pub fn summary(&self) -> Vec<String> {
        let mut lines = Vec::new();
        lines.push(format!("summary of {}:", count(self.domains.len(), "domain", "domains")));
        for d in &self.domains {
            let ended = match &d.ending {
                None => String::from("still running"),
                Some(Ending::Exited(s)) => format!("exited {s}"),
                Some(Ending::Crashed(what)) => format!("crashed ({what})"),
                Some(Ending::TimeLimit) => String::from("stopped at time limit"),
            };
            let verdict = if d.ended_as_expected() { "ok" } else { "UNEXPECTED" };
            lines.push(format!(
                "  {:<3} {:<14} {:<26} expected {:<10} {:<10} cpu={}.{:03}ms weight={} hypercalls={} preemptions={} bounces={}",
                d.id.0,
                d.name,
                ended,
                d.expect.to_string(),
                verdict,
                d.stats.cpu_ns / 1_000_000,
                d.stats.cpu_ns / 1_000 % 1_000,
                d.weight,
                d.stats.hypercalls,
                d.stats.preemptions,
                d.stats.bounces
            ));
            let emulated = d.vm.as_ref().map(|vm| EmulatedRecord { exits: vm.exits, shadow: vm.shadow.stats() });
            if let Some(EmulatedRecord { exits, shadow: sh }) = emulated.or(d.emulated) {
                lines.push(format!(
                    "      emulated: {} shadow: tables={} resets={} frames={}",
                    exits, sh.tables_created, sh.resets, sh.frames
                ));
            }
        }
        lines
    }
}
