//! The virtual machine of one emulated domain.

use super::cpu::VirtualCpu;
use super::devices::Devices;
use super::exits::ExitCounters;
use super::shadow::{Mode, Shadow};

/// Shadow frames a domain may hold before its shadows are dropped and
/// rebuilt (4 MiB of tables).
pub const SHADOW_BUDGET_FRAMES: u64 = 1024;

/// Everything an emulated domain has that a paravirtualized one does not.
#[derive(Debug)]
pub struct VirtualMachine {
    /// Its virtual CPU.
    pub cpu: VirtualCpu,
    /// Its devices.
    pub devices: Devices,
    /// The shadow page tables of its address spaces.
    pub shadow: Shadow,
    /// Its exits by cause.
    pub exits: ExitCounters,
    /// Machine address of the shadow top-level table for its current CR3
    /// and mode (what the real CR3 holds while it runs), once made.
    pub root: Option<u64>,
    /// Waiting in `hlt` for a virtual interrupt.
    pub halted: bool,
    /// An `sti` was just emulated: no interrupt may be delivered before the
    /// next instruction has run (the CPU's interrupt shadow; `sti; hlt`
    /// relies on it to sleep without losing a wake-up).
    pub interrupt_shadow: Option<StiShadow>,
    /// What the domain's heap account holds for the shadows' bookkeeping:
    /// their [`Shadow::heap_bytes`] when they were last settled (at the
    /// end of every exit, see `System::settle_shadow_charge`).
    pub shadow_charged: usize,
}

/// The CPU's interrupt shadow after an emulated `sti`, which the hypervisor
/// cannot give the real CPU: interrupts wait while the guest is still at
/// the instruction after `sti`. That holds through the `sti` exit itself and
/// through one more exit at that instruction: one that comes before it ran
/// (the platform timer fired while the `sti` exit was handled, and struck
/// right after the `iretq`). A second exit there means it has run (as in
/// `sti; jmp .`), and the interrupt goes in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StiShadow {
    /// The address of the instruction after `sti`.
    pub rip: u64,
    /// Whether this is still the `sti` exit (one more exit may be held).
    pub sti_exit: bool,
}

impl VirtualMachine {
    /// A machine with this CPU, powered-on devices and no shadows yet.
    pub fn new(cpu: VirtualCpu) -> Self {
        let shadow = Shadow::new(SHADOW_BUDGET_FRAMES);
        VirtualMachine {
            cpu,
            devices: Devices::default(),
            shadow_charged: shadow.heap_bytes(),
            shadow,
            exits: ExitCounters::default(),
            root: None,
            halted: false,
            interrupt_shadow: None,
        }
    }

    /// Which shadow the guest runs on: its kernel's or its user mode's.
    pub fn mode(&self) -> Mode {
        if self.cpu.user_mode() {
            Mode::User
        } else {
            Mode::Kernel
        }
    }
}
