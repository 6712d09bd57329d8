//! The whole machine as the hypervisor's logic sees it, and what happens on
//! each entry from a guest.
//!
//! The kernel's entry code saves the running guest's registers in a frame
//! and calls [`System::on_hypercall`] or [`System::on_guest_exception`]. The
//! answer, a [`Next`], tells it whether to return to the same guest, load
//! another address space (the frame and x87/SSE area then already hold the
//! next domain's state), or stop because every domain has ended.

use crate::console::{drain_ring, ConsoleSink};
use crate::domain::{Domain, DomainId, Ending};
use crate::fault;
use crate::frame_table::{FrameTable, Owner};
use crate::hypercall::{self, Context, Outcome};
use crate::machine_memory::MachineMemory;
use crate::manifest::Expect;
use crate::scheduler::RunQueue;
use crate::vcpu::{FpuState, GuestRegs};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use hypercall_abi::encode_result;

/// What the kernel does after an entry has been handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Return to the same guest from the frame.
    Resume,
    /// Load the address space rooted at this machine address, then return
    /// to the frame (it holds the next domain's registers).
    Switch {
        /// Machine address of the next domain's top-level table.
        root: u64,
    },
    /// Return to the same guest, with `syscall` pointed at the bare
    /// `sysretq` floor path until the guest's next exception.
    ResumeOnFloorPath,
    /// Every domain has ended.
    Finished {
        /// Whether each ended as its manifest expected.
        all_as_expected: bool,
    },
}

/// The kernel's hardware, lent to the logic for one entry.
pub struct Platform<'a, M: MachineMemory, C: ConsoleSink> {
    /// Machine memory.
    pub mem: &'a mut M,
    /// Console for guest lines.
    pub console: &'a mut C,
}

/// All domains, all frames, and who runs.
#[derive(Debug)]
pub struct System {
    /// Frame ownership.
    pub frames: FrameTable,
    /// Every domain, indexed by id.
    pub domains: Vec<Domain>,
    run_queue: RunQueue,
    current: Option<DomainId>,
}

impl System {
    /// A system with these frames and no domain yet.
    pub fn new(frames: FrameTable) -> Self {
        System { frames, domains: Vec::new(), run_queue: RunQueue::default(), current: None }
    }

    /// Adds a built domain (its id must be the next index) and makes it runnable.
    pub fn add_domain(&mut self, domain: Domain) {
        assert_eq!(usize::from(domain.id.0), self.domains.len(), "domains are added in id order");
        self.run_queue.push(domain.id);
        self.domains.push(domain);
    }

    /// The running domain.
    pub fn current(&self) -> Option<&Domain> {
        self.current.map(|id| &self.domains[usize::from(id.0)])
    }

    /// Picks the first domain to run and loads its state into `frame`/`fpu`.
    pub fn start(&mut self, frame: &mut GuestRegs, fpu: &mut FpuState) -> Next {
        self.dispatch_next(frame, fpu)
    }

    /// Handles a hypercall from the current domain (its registers in `frame`).
    pub fn on_hypercall<M: MachineMemory, C: ConsoleSink>(
        &mut self,
        p: &mut Platform<'_, M, C>,
        frame: &mut GuestRegs,
        fpu: &mut FpuState,
    ) -> Next {
        let caller = self.current.expect("a hypercall comes from a running domain");
        self.domains[usize::from(caller.0)].stats.hypercalls += 1;
        let outcome = {
            let mut ctx = Context { mem: p.mem, console: p.console, frames: &self.frames, domains: &mut self.domains, caller };
            hypercall::dispatch(&mut ctx, frame)
        };
        match outcome {
            Outcome::Return(result) => {
                frame.rax = encode_result(result);
                Next::Resume
            }
            Outcome::Yield => {
                frame.rax = 0;
                if self.run_queue.is_empty() {
                    return Next::Resume;
                }
                self.drain_console(p, caller);
                self.save_current(frame, fpu);
                self.run_queue.push(caller);
                self.dispatch_next(frame, fpu)
            }
            Outcome::BenchFloor => {
                frame.rax = 0;
                Next::ResumeOnFloorPath
            }
            Outcome::Exit(status) => {
                self.end(p, caller, Ending::Exited(status));
                self.dispatch_next(frame, fpu)
            }
        }
    }

    /// Handles an exception raised by the current domain. Parvus has no way
    /// yet to give a fault back to a guest, so the domain is stopped, with a
    /// report, and the others run on.
    pub fn on_guest_exception<M: MachineMemory, C: ConsoleSink>(
        &mut self,
        p: &mut Platform<'_, M, C>,
        frame: &mut GuestRegs,
        fpu: &mut FpuState,
        cr2: u64,
    ) -> Next {
        let culprit = self.current.expect("a guest exception comes from a running domain");
        self.drain_console(p, culprit); // its last words come before the report
        let domain = &self.domains[usize::from(culprit.0)];
        let lines = fault::report(&format!("{} crashed", domain.label()), frame, cr2);
        for line in &lines {
            log::error!("{}", line);
        }
        let (mnemonic, _) = fault::exception_name(frame.vector);
        self.end(p, culprit, Ending::Crashed(format!("{mnemonic} at {:#x}", frame.rip)));
        self.dispatch_next(frame, fpu)
    }

    fn drain_console<M: MachineMemory, C: ConsoleSink>(&mut self, p: &mut Platform<'_, M, C>, id: DomainId) {
        let d = &mut self.domains[usize::from(id.0)];
        drain_ring(p.mem, d.console_ring, &mut d.console, &d.name, p.console);
    }

    /// Records how a domain ended, prints its last output and frees its memory.
    fn end<M: MachineMemory, C: ConsoleSink>(&mut self, p: &mut Platform<'_, M, C>, id: DomainId, ending: Ending) {
        self.drain_console(p, id);
        let d = &mut self.domains[usize::from(id.0)];
        hypercall::flush_console(d, p.console);
        match &ending {
            Ending::Exited(status) => log::info!("{} exited with status {}", d.label(), status),
            Ending::Crashed(what) => log::info!("{} stopped after {}; the other domains run on", d.label(), what),
        }
        d.ending = Some(ending);
        // The frames are freed while this domain's tables may still be loaded:
        // nothing allocates before the kernel loads the next address space.
        for mfn in core::mem::take(&mut d.frames) {
            self.frames.free(mfn, Owner::Domain(id)).expect("a domain's frame list holds only its own frames");
        }
        self.run_queue.remove(id);
        if self.current == Some(id) {
            self.current = None;
        }
    }

    fn save_current(&mut self, frame: &GuestRegs, fpu: &FpuState) {
        if let Some(id) = self.current.take() {
            let vcpu = &mut self.domains[usize::from(id.0)].vcpu;
            vcpu.regs = *frame;
            vcpu.fpu = *fpu;
        }
    }

    /// Loads the next runnable domain into the frame, or reports the end.
    fn dispatch_next(&mut self, frame: &mut GuestRegs, fpu: &mut FpuState) -> Next {
        let Some(next) = self.run_queue.pop() else {
            return Next::Finished { all_as_expected: self.domains.iter().all(Domain::ended_as_expected) };
        };
        let d = &mut self.domains[usize::from(next.0)];
        d.stats.dispatches += 1;
        *frame = d.vcpu.regs;
        *fpu = d.vcpu.fpu;
        self.current = Some(next);
        Next::Switch { root: d.root }
    }

    /// The final report: one line per domain, then the verdict.
    pub fn summary(&self) -> Vec<String> {
        let mut lines = Vec::new();
        lines.push(format!("summary of {} domains:", self.domains.len()));
        for d in &self.domains {
            let ended = match &d.ending {
                None => String::from("still running"),
                Some(Ending::Exited(s)) => format!("exited {s}"),
                Some(Ending::Crashed(what)) => format!("crashed ({what})"),
            };
            let expected = match d.expect {
                Expect::Exit(s) => format!("exit {s}"),
                Expect::Crash => String::from("crash"),
            };
            let verdict = if d.ended_as_expected() { "ok" } else { "UNEXPECTED" };
            lines.push(format!(
                "  {:<3} {:<14} {:<26} expected {:<8} {:<10} hypercalls={}",
                d.id.0, d.name, ended, expected, verdict, d.stats.hypercalls
            ));
        }
        lines
    }
}
