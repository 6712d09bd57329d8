//! [`Platform`]: the only thing the builds of the workload do differently.
//!
//! The kernel logic ([`Kernel`](crate::Kernel)) decides *what* happens:
//! which process runs, what a system call does, when a page is allocated,
//! copied or freed. A platform decides *how* the machine does it:
//!
//! - natively (`demo-guests/workload`) with privileged instructions: its
//!   own page tables written with plain stores, `mov cr3`, `invlpg`,
//!   `sysretq`/`iretq` into user mode and the PIT for the tick;
//! - paravirtualized (`demo-guests/workload-pv`) with hypercalls: page
//!   tables changed through batched `mmu_update`, `mmuext_op` to switch
//!   the user address space, the `iret` hypercall into user mode and the
//!   hypervisor's timer event for the tick.
//!
//! The interface is shaped so that nothing a platform does is hidden in a
//! callback: [`Platform::run_user`] runs a process until its next trap and
//! *returns* that trap as a value, so the kernel is one loop over the
//! traps (see `kernel.rs`), the same in every build.
//!
//! Contracts the kernel keeps, which platforms may rely on:
//!
//! - user addresses given to `map`, `unmap` and `translate` are
//!   page-aligned and inside [`layout::USER`](crate::layout::USER);
//! - a page is mapped at most once before it is unmapped, and the frame
//!   of a mapped page is freed only after its `unmap`;
//! - `destroy_space` is called only on a space that is not active and has
//!   no page mapped any more;
//! - everything done to a space before `run_user` is in effect when the
//!   process runs (a platform that batches changes sends them there).

use core::fmt;

use crate::context::UserContext;

/// What brought a process back into the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trap {
    /// It executed `syscall`: number and arguments are in its context.
    Syscall,
    /// It touched `address`, which is not mapped (`present` false) or
    /// not mapped for this access (`present` true).
    PageFault {
        /// The faulting address (CR2).
        address: u64,
        /// Whether the page was present (a protection violation).
        present: bool,
        /// Whether the access was a write.
        write: bool,
    },
    /// The scheduler's periodic tick interrupted it.
    Timer,
    /// Any other exception (an invalid opcode, a general protection
    /// fault...): the process is killed.
    Fault {
        /// The exception vector.
        vector: u8,
        /// Its error code (0 if it has none).
        error_code: u64,
    },
}

/// The vector of a page fault (#PF).
pub const PAGE_FAULT_VECTOR: u64 = 14;

/// Page-fault error code bit: the page was present (a protection violation).
const PF_PRESENT: u64 = 1;

/// Page-fault error code bit: the access was a write.
const PF_WRITE: u64 = 1 << 1;

impl Trap {
    /// The page fault at `address` (CR2) with the CPU's `error_code`.
    pub fn page_fault(address: u64, error_code: u64) -> Trap {
        Trap::PageFault { address, present: error_code & PF_PRESENT != 0, write: error_code & PF_WRITE != 0 }
    }
}

/// Why a platform could not do what the kernel asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlatformError {
    /// No free frame left (for a page or a page table).
    OutOfFrames,
    /// The platform's bookkeeping is full (of page tables, or of spaces).
    TooManyTables,
    /// The hypervisor refused a request (paravirtualized build only).
    Refused,
}

impl fmt::Display for PlatformError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlatformError::OutOfFrames => f.write_str("out of frames"),
            PlatformError::TooManyTables => f.write_str("too many page tables in one address space"),
            PlatformError::Refused => f.write_str("refused by the hypervisor"),
        }
    }
}

/// The machine under the kernel logic (see the module docs).
pub trait Platform {
    /// One user address space: page tables that map the user programs'
    /// code (read-only, shared by all) and whatever `map` put in it.
    type Space;
    /// One page frame of the kernel's memory.
    type Frame: Copy + fmt::Debug + PartialEq;

    /// A new address space with only the user programs' code mapped. The
    /// kernel holds at most [`MAX_SPACES`](crate::kernel::MAX_SPACES) at
    /// once. A space is moved around with its process, so it should be a
    /// small handle: under `-icount` every byte a `memcpy` moves counts as
    /// an instruction.
    fn new_space(&mut self) -> Result<Self::Space, PlatformError>;

    /// Gives back the page tables of a space that is not active and has
    /// no page mapped.
    fn destroy_space(&mut self, space: Self::Space);

    /// Maps `frame` at user address `va` of `space` as a user data page:
    /// readable, writable, not executable.
    fn map(&mut self, space: &mut Self::Space, va: u64, frame: Self::Frame) -> Result<(), PlatformError>;

    /// Unmaps the page at `va` (invalidating its translation if `space` is
    /// active) and returns its frame, or `None` if nothing was mapped.
    fn unmap(&mut self, space: &mut Self::Space, va: u64) -> Option<Self::Frame>;

    /// The frame mapped at `va`, if any.
    fn translate(&mut self, space: &Self::Space, va: u64) -> Option<Self::Frame>;

    /// Makes `space` the one user mode runs in.
    fn activate(&mut self, space: &Self::Space);

    /// Makes no process's space active (before the last one is destroyed).
    fn deactivate(&mut self);

    /// A free frame (its contents are whatever they were).
    fn alloc_frame(&mut self) -> Option<Self::Frame>;

    /// Gives a frame back.
    fn free_frame(&mut self, frame: Self::Frame);

    /// Fills a frame with zeros.
    fn zero_frame(&mut self, frame: Self::Frame);

    /// Copies the contents of `src` into `dst`.
    fn copy_frame(&mut self, dst: Self::Frame, src: Self::Frame);

    /// Runs `context` in user mode, in the active space, until its next
    /// trap; `context` then holds the state at the trap.
    fn run_user(&mut self, context: &mut UserContext) -> Trap;

    /// Writes text to the console (whole lines, each ending in `\n`).
    fn console_write(&mut self, text: &str);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_fault_decodes_its_error_code() {
        let fault = |present, write| Trap::PageFault { address: 0x8000_1000, present, write };
        assert_eq!(Trap::page_fault(0x8000_1000, 0b11), fault(true, true));
        assert_eq!(Trap::page_fault(0x8000_1000, 0b01), fault(true, false));
        assert_eq!(Trap::page_fault(0x8000_1000, 0b10), fault(false, true));
        assert_eq!(Trap::page_fault(0x8000_1000, 0b100), fault(false, false), "bit 2 (user mode) is not asked");
    }
}
