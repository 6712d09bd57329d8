//! A domain: one guest, its memory, its vCPU and how it ended.

use crate::console::LineBuffer;
use crate::event_channel::EventChannels;
use crate::frame_table::Mfn;
use crate::manifest::Expect;
use crate::vcpu::Vcpu;
use alloc::string::String;
use alloc::vec::Vec;
use hypercall_abi::DomainState;

/// A domain's id: its position in the manifest, from 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DomainId(pub u16);

impl core::fmt::Display for DomainId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// How a domain ended, once it has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    /// It called `exit(status)`.
    Exited(u64),
    /// The hypervisor stopped it after a fault; the text names the fault.
    Crashed(String),
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
    pub name: String,
    /// What the manifest expects of its end.
    pub expect: Expect,
    /// Its memory: machine frame of each pfn (frames added by ballooning
    /// come last; frames given back are removed).
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
    /// The virtual machine of an emulated domain (`mode = "emulated"`);
    /// `None` for a paravirtualized one.
    pub vm: Option<alloc::boxed::Box<crate::emulated::machine::VirtualMachine>>,
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
