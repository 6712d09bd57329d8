//! A domain: one guest, its memory, its vCPU and how it ended.

use crate::console::LineBuffer;
use crate::emulated::exits::ExitCounters;
use crate::emulated::machine::VirtualMachine;
use crate::emulated::shadow::ShadowStats;
use crate::event_channel::{EventChannels, Port};
use crate::frame_table::Mfn;
use crate::heap_account::{vec_bytes, HeapAccount};
use crate::manifest::Expect;
use crate::vcpu::Vcpu;
use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use hypercall_abi::start_info::NAME_MAX;
use hypercall_abi::{DomainState, HypercallError};

/// A domain's id: its position in the manifest, from 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DomainId(pub u16);

impl core::fmt::Display for DomainId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A domain's name: at most [`NAME_MAX`] bytes (the manifest's rule),
/// held in place.
pub type DomainName = heapless::String<NAME_MAX>;

/// What an ended domain's summary says it crashed for ("#PF at 0x4000b2",
/// "blocked forever"), held in place and cut to fit.
pub type CrashWhat = heapless::String<48>;

/// [`CrashWhat`] from any text, cut at a character boundary if too long.
pub fn crash_what(text: &str) -> CrashWhat {
    let mut what = CrashWhat::new();
    for c in text.chars() {
        if what.push(c).is_err() {
            break;
        }
    }
    what
}

/// How a domain ended, once it has. An ended domain keeps only fixed-size
/// records (this, its name, its counters), so that everything it made the
/// hypervisor allocate is freed when it ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    /// It called `exit(status)`.
    Exited(u64),
    /// The hypervisor stopped it after a fault; the text names the fault.
    Crashed(CrashWhat),
    /// The hypervisor stopped it when it had used its CPU time limit.
    TimeLimit,
}

/// Counters shown in the final summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DomainStats {
    /// Hypercalls that took the slow path.
    pub hypercalls: u64,
    /// Times the domain was given the CPU.
    pub dispatches: u64,
    /// Times it lost the CPU at the end of its slice.
    pub preemptions: u64,
    /// CPU time used, in nanoseconds.
    pub cpu_ns: u64,
    /// Traps delivered to the guest kernel by [`crate::trap_bounce::bounce`]:
    /// its user processes' system calls and the exceptions it handles
    /// (event upcalls are not counted). With `hypercalls`, what a
    /// paravirtualized kernel costs the hypervisor; `cargo xtask compare`
    /// divides both by the workload's operations.
    pub bounces: u64,
}

/// One guest.
#[derive(Debug)]
pub struct Domain {
    /// Its id.
    pub id: DomainId,
    /// Its name from the manifest.
    pub name: DomainName,
    /// What the manifest expects of its end.
    pub expect: Expect,
    /// Its memory: machine frame of each pfn (frames added by ballooning
    /// come last; frames given back are removed). Its capacity is
    /// `max_pages` from the start (charged to `heap`), so growing needs
    /// no memory.
    pub frames: Vec<Mfn>,
    /// Most frames it may own (`max_memory` in the manifest).
    pub max_pages: u64,
    /// Its scheduling weight.
    pub weight: u32,
    /// CPU time after which it is stopped.
    pub time_limit_ns: Option<u64>,
    /// Whether CR4.UMIP is on while it runs.
    pub umip: bool,
    /// Machine address of its console ring page.
    pub console_ring: u64,
    /// Machine address of its shared-info page.
    pub shared_info: u64,
    /// Its event channels, timer and wait state.
    pub events: EventChannels,
    /// Its one virtual CPU.
    pub vcpu: Vcpu,
    /// Output not yet printed as a whole line.
    pub console: LineBuffer,
    /// Set once it has ended.
    pub ending: Option<Ending>,
    /// Counters.
    pub stats: DomainStats,
    /// The virtual machine of an emulated domain (`mode = "emulated"`)
    /// while it runs; `None` for a paravirtualized one, and once it ended.
    pub vm: Option<Box<VirtualMachine>>,
    /// What an emulated domain's summary shows, kept when its machine is
    /// freed at its end.
    pub emulated: Option<EmulatedRecord>,
    /// The hypervisor heap held for it, against its allowance.
    pub heap: HeapAccount,
}

/// What the summary of an emulated domain shows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EmulatedRecord {
    /// Its exits by cause.
    pub exits: ExitCounters,
    /// Its shadow counters.
    pub shadow: ShadowStats,
}

impl Domain {
    /// The state `domain_info` reports.
    pub fn state(&self) -> DomainState {
        match self.ending {
            None if self.events.wait != crate::event_channel::Wait::None => DomainState::Blocked,
            None => DomainState::Runnable,
            Some(Ending::Exited(_)) => DomainState::Exited,
            Some(Ending::Crashed(_)) | Some(Ending::TimeLimit) => DomainState::Crashed,
        }
    }

    /// Whether it has not ended yet.
    pub fn is_alive(&self) -> bool {
        self.ending.is_none()
    }

    /// Whether it ended the way its manifest said it would.
    pub fn ended_as_expected(&self) -> bool {
        matches!(
            (&self.ending, &self.expect),
            (Some(Ending::Exited(s)), Expect::Exit(e)) if s == e
        ) || matches!(
            (&self.ending, &self.expect),
            (Some(Ending::Crashed(_)), Expect::Crash) | (Some(Ending::TimeLimit), Expect::TimeLimit)
        )
    }

    /// Machine address of the top-level table of its current mode (for an
    /// emulated domain: the shadow table of its current CR3 and mode).
    #[inline]
    pub fn root(&self) -> u64 {
        match &self.vm {
            None => self.vcpu.current_root(),
            Some(vm) => vm.root.expect("an emulated domain runs only on a shadow root"),
        }
    }

    /// Where `syscall` must enter while it runs.
    pub fn door(&self) -> crate::system::Door {
        match self.vm {
            None => crate::system::Door::paravirtualized(self.vcpu.kernel_mode, self.vcpu.bench_floor),
            Some(_) => crate::system::Door::Emulated,
        }
    }

    /// Whether it runs an unmodified kernel under trap-and-emulate.
    pub fn is_emulated(&self) -> bool {
        self.vm.is_some()
    }

    /// Allocates a port in state `state`, a longer port table charged to
    /// its allowance (see [`EventChannels::alloc`]).
    pub fn alloc_port(&mut self, state: Port) -> Result<u32, HypercallError> {
        self.events.alloc(state, &mut self.heap)
    }

    /// The hypervisor heap it holds, recomputed from its structures: its
    /// frame list, its port table, and its virtual machine with the shadow
    /// bookkeeping (their bound). `heap.charged()` always equals this.
    pub fn heap_held(&self) -> usize {
        let vm = self.vm.as_ref().map_or(0, |vm| core::mem::size_of::<VirtualMachine>() + vm.shadow.heap_bytes());
        vec_bytes(&self.frames) + self.events.table_bytes() + vm
    }

    /// The FS and GS bases the real CPU must hold while it runs (a
    /// paravirtualized guest has none of its own).
    pub fn segment_bases(&self) -> (u64, u64) {
        self.vm.as_ref().map_or((0, 0), |vm| (vm.cpu.fs_base, vm.cpu.gs_base))
    }

    /// "domain 3 (crash)": how reports name it.
    pub fn label(&self) -> String {
        alloc::format!("domain {} ({})", self.id, self.name)
    }
}
