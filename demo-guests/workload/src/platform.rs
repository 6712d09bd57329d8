//! [`NativePlatform`]: the workload's platform layer made of privileged
//! instructions.
//!
//! | the kernel asks       | here                                              |
//! |-----------------------|---------------------------------------------------|
//! | new/destroy a space   | a PML4 sharing slot 0, tables zeroed or recycled  |
//! | map/unmap a page      | one 64-bit store (`invlpg` if the space is active) |
//! | activate a space      | `mov cr3`                                         |
//! | run a process         | `sysretq` or `iretq`, back by `syscall` or a trap |
//! | the 100 Hz tick       | PIT channel 0, IRQ 0 through the 8259             |
//! | frames                | a pool over `[__kernel_end, mem_bytes)`            |
//!
//! Under trap-and-emulate the hypervisor runs this very code in ring 3:
//! the stores into page tables are trapped and emulated (shadow paging),
//! and so are `mov cr3`, `invlpg`, `swapgs`, `sysretq`, `iretq` and the
//! port accesses.

use bare_rt::pic::{self, IRQ_TIMER};
use bare_rt::{cpu, memory, pit, BootInfo};
use workload_core::frames::FramePool;
use workload_core::layout::pte::{ADDRESS_MASK, PRESENT, USER_DATA};
use workload_core::platform::PAGE_FAULT_VECTOR;
use workload_core::{Platform, PlatformError, Trap, UserContext};

use crate::entry::{self, VECTOR_SYSCALL, VECTOR_TIMER};
use crate::paging::{self, Pools, Space, Table, TableLists, TablePool};
use crate::phys;

/// Most frames the pool can manage: all of the largest memory the boot
/// contract allows (256 MiB).
const FRAMES: usize = (bare_rt::bare_metal::MAX_MEMORY / 4096) as usize;

/// Scheduler ticks per second.
const TICK_HZ: u32 = 100;

/// A page frame (its physical address).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame(u64);

/// The native platform (see the module docs).
pub struct NativePlatform {
    frames: FramePool<FRAMES>,
    tables: TablePool,
    lists: TableLists,
    /// The kernel's own PML4 (slot 0 only), active when no process is.
    kernel_root: u64,
    /// Slot 0 of every PML4: the identity map.
    slot0: u64,
    /// The PML4 in CR3.
    active_root: u64,
}

impl NativePlatform {
    /// A platform that owns nothing yet (see [`NativePlatform::boot`]).
    pub const fn new() -> Self {
        NativePlatform {
            frames: FramePool::empty(),
            tables: TablePool::new(),
            lists: TableLists::new(Table::UNUSED),
            kernel_root: 0,
            slot0: 0,
            active_root: 0,
        }
    }

    /// Takes the free memory, builds and loads the kernel's page tables,
    /// sets up the system-call and trap entries and starts the tick.
    pub fn boot(&mut self, boot: &BootInfo) -> Result<(), PlatformError> {
        let free = memory::free_memory(boot);
        self.frames.add_run(free.start, free.end, 4096);
        let (root, slot0) =
            paging::build_identity_map(boot.mem_bytes, memory::user_text(), memory::user_rodata(), &mut self.pools())?;
        self.kernel_root = root;
        self.slot0 = slot0;
        self.load_cr3(root);
        entry::init();
        pit::start_periodic(TICK_HZ);
        pic::unmask(IRQ_TIMER);
        Ok(())
    }

    fn pools(&mut self) -> Pools<'_, FRAMES> {
        Pools { tables: &mut self.tables, lists: &mut self.lists, frames: &mut self.frames }
    }

    fn load_cr3(&mut self, root: u64) {
        // SAFETY: `root` is the kernel's PML4 or a process's, and each maps
        // slot 0, where all of the kernel's code, data, stacks and free
        // memory are, exactly as every other (they share its entry).
        unsafe { cpu::write_cr3(root) };
        self.active_root = root;
    }
}

impl Platform for NativePlatform {
    type Space = Space;
    type Frame = Frame;

    fn new_space(&mut self) -> Result<Space, PlatformError> {
        let slot0 = self.slot0;
        Space::new(slot0, &mut self.pools())
    }

    fn destroy_space(&mut self, space: Space) {
        assert_ne!(space.root(), self.active_root, "destroying the active address space");
        space.destroy(&mut self.pools());
    }

    fn map(&mut self, space: &mut Space, va: u64, frame: Frame) -> Result<(), PlatformError> {
        let l1 = space.l1_table(va, &mut self.pools())?;
        // Not present before: no TLB entry to drop.
        phys::write_entry(l1 + workload_core::layout::table_index(va, 1) as u64 * 8, frame.0 | USER_DATA);
        Ok(())
    }

    fn unmap(&mut self, space: &mut Space, va: u64) -> Option<Frame> {
        let leaf = space.leaf(va)?;
        let entry = phys::read_entry(leaf);
        if entry & PRESENT == 0 {
            return None;
        }
        phys::write_entry(leaf, 0);
        if space.root() == self.active_root {
            cpu::invlpg(va);
        }
        Some(Frame(entry & ADDRESS_MASK))
    }

    fn translate(&mut self, space: &Space, va: u64) -> Option<Frame> {
        let entry = phys::read_entry(space.leaf(va)?);
        (entry & PRESENT != 0).then_some(Frame(entry & ADDRESS_MASK))
    }

    fn activate(&mut self, space: &Space) {
        if space.root() != self.active_root {
            self.load_cr3(space.root());
        }
    }

    fn deactivate(&mut self) {
        self.load_cr3(self.kernel_root);
    }

    fn alloc_frame(&mut self) -> Option<Frame> {
        self.frames.alloc().map(Frame)
    }

    fn free_frame(&mut self, frame: Frame) {
        self.frames.free(frame.0);
    }

    fn zero_frame(&mut self, frame: Frame) {
        phys::zero(frame.0);
    }

    fn copy_frame(&mut self, dst: Frame, src: Frame) {
        phys::copy(dst.0, src.0);
    }

    fn run_user(&mut self, context: &mut UserContext) -> Trap {
        let raw = entry::enter(context);
        match raw.vector {
            VECTOR_SYSCALL => Trap::Syscall,
            v if v == u64::from(VECTOR_TIMER) => {
                pic::eoi(IRQ_TIMER);
                Trap::Timer
            }
            PAGE_FAULT_VECTOR => Trap::page_fault(cpu::read_cr2(), raw.error_code),
            vector => Trap::Fault { vector: vector as u8, error_code: raw.error_code },
        }
    }

    fn console_write(&mut self, text: &str) {
        bare_rt::print!("{text}");
    }
}
