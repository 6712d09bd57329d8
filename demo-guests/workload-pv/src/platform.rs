//! [`PvPlatform`]: the workload's platform layer made of hypercalls.
//!
//! | the kernel asks       | natively                  | here                                        |
//! |-----------------------|---------------------------|---------------------------------------------|
//! | new/destroy a space   | zeroed tables, stores     | pinned tables from a pool, queued links     |
//! | map/unmap a page      | a store (+ `invlpg`)      | a queued `mmu_update` entry                 |
//! | activate a space      | `mov cr3`                 | a queued `mmuext_op(NewUserBaseptr)`        |
//! | run a process         | `sysretq`/`iretq`         | the queue flushed, then the `iret` hypercall |
//! | the 100 Hz tick       | PIT, IRQ 0                | `set_timer` and the timer event             |
//!
//! Everything queued goes to the hypervisor in one hypercall just before
//! user mode runs (see `queue.rs`), so a fault, a munmap or a fork costs
//! one page-table hypercall whatever it changed. A destroyed space's tree
//! is kept linked (every page of it unmapped) for the next space, so a
//! fork child usually needs no table linked or unlinked, only its pages.
//!
//! The guest kernel keeps the boot tables as its own address space for
//! good: it never touches user memory through user addresses (it copies
//! and zeroes frames through the linear window), so a process switch only
//! changes the page tables of guest *user* mode (`NewUserBaseptr`) and
//! every process needs one top-level table, not two.
//!
//! Memory: at boot the platform takes from the SDK heap the page tables it
//! will ever need (pinned once, see `tables.rs`) and then one block for
//! data frames, which `FramePool` hands out; the heap keeps a little for
//! the SDK itself.

extern crate alloc;

use alloc::alloc::{alloc, Layout};
use alloc::vec::Vec;

use parvus_guest_sdk::event::{self, Port};
use parvus_guest_sdk::frames::{frame_list, pfn_to_mfn, va_to_pfn};
use parvus_guest_sdk::hypercall::{self, events as hc};
use parvus_guest_sdk::hypercall_abi::event::{virq, UPCALL_MASK_OFFSET};
use parvus_guest_sdk::hypercall_abi::mm::MmuextCmd;
use parvus_guest_sdk::hypercall_abi::trap::{TrapInfo, TRAP_VECTORS, VECTOR_EVENT, VECTOR_SYSCALL};
use parvus_guest_sdk::hypercall_abi::{HypercallError, PAGE_SIZE};
use parvus_guest_sdk::{heap, start_info, time, user};
use workload_core::frames::FramePool;
use workload_core::layout::pte::{NO_EXECUTE, PRESENT, USER};
use workload_core::platform::PAGE_FAULT_VECTOR;
use workload_core::{Platform, PlatformError, Trap, UserContext};

use crate::memory;
use crate::queue::Queue;
use crate::tables::{self, Table, TableLists, TablePools, Tree, TreeContext, SPARE_TREES};
use crate::trap;

/// Most data frames (64 MiB).
const DATA_FRAMES: usize = 16 * 1024;

/// Heap bytes left to the SDK after the data block is taken.
const HEAP_RESERVE: usize = 256 * 1024;

/// Nanoseconds between scheduler ticks (100 Hz).
const TICK_NS: u64 = 10_000_000;

/// A page frame of the data block (its pfn).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame(u64);

/// A process's address space: a tree under a top-level table whose slot 0
/// links the shared tree of the user programs' code.
pub struct PvSpace {
    tree: Tree,
}

/// Why the platform could not start.
#[derive(Debug)]
pub enum BootError {
    /// A hypercall was refused.
    Hypercall(HypercallError),
    /// Making the pools of page tables failed.
    Paging(parvus_guest_sdk::paging::PagingError),
    /// The platform's own bookkeeping refused (too many image tables).
    Platform(PlatformError),
    /// The heap had no room for the data block.
    NoMemory,
}

impl core::fmt::Display for BootError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BootError::Hypercall(e) => write!(f, "a hypercall was refused: {e}"),
            BootError::Paging(e) => write!(f, "making the page-table pools failed: {e}"),
            BootError::Platform(e) => write!(f, "mapping the user programs failed: {e}"),
            BootError::NoMemory => f.write_str("no heap left for the data frames"),
        }
    }
}

impl From<HypercallError> for BootError {
    fn from(e: HypercallError) -> Self {
        BootError::Hypercall(e)
    }
}

/// The paravirtualized platform (see the module docs).
pub struct PvPlatform {
    queue: Queue,
    tables: TablePools,
    lists: TableLists,
    data: FramePool<DATA_FRAMES>,
    /// The tree of the user programs' code, linked into every space.
    image: Option<Tree>,
    /// Trees of destroyed spaces, still linked, with every page unmapped.
    spare: [Option<Tree>; SPARE_TREES],
    /// pfn of each machine frame (`u32::MAX`: not the domain's).
    mfn_to_pfn: Vec<u32>,
    /// The timer's event port.
    timer_port: Port,
}

impl PvPlatform {
    /// A platform that owns nothing yet (see [`PvPlatform::boot`]).
    pub const fn new() -> Self {
        PvPlatform {
            queue: Queue::new(),
            tables: TablePools::new(),
            lists: TableLists::new(Table::UNUSED),
            data: FramePool::empty(),
            image: None,
            spare: [const { None }; SPARE_TREES],
            mfn_to_pfn: Vec::new(),
            timer_port: Port(0),
        }
    }

    /// Takes the memory, builds the shared code tree, registers the trap
    /// entry and starts the tick.
    pub fn boot(&mut self) -> Result<(), BootError> {
        self.reverse_frame_list();
        self.tables.fill().map_err(BootError::Paging)?;
        self.take_data_block()?;
        self.build_image_tree().map_err(BootError::Platform)?;
        self.queue.flush();
        self.install_traps()?;
        Ok(())
    }

    fn cx(&mut self) -> TreeContext<'_> {
        TreeContext { pools: &mut self.tables, lists: &mut self.lists, queue: &mut self.queue }
    }

    fn reverse_frame_list(&mut self) {
        let list = frame_list();
        let top = list.iter().copied().max().unwrap_or(0) as usize;
        self.mfn_to_pfn = alloc::vec![u32::MAX; top + 1];
        for (pfn, &mfn) in list.iter().enumerate() {
            self.mfn_to_pfn[mfn as usize] = pfn as u32;
        }
    }

    /// Takes most of the heap as one block of data frames.
    fn take_data_block(&mut self) -> Result<(), BootError> {
        let bytes = heap::free().saturating_sub(HEAP_RESERVE) & !(PAGE_SIZE as usize - 1);
        let bytes = bytes.min(DATA_FRAMES * PAGE_SIZE as usize);
        let layout = Layout::from_size_align(bytes, PAGE_SIZE as usize).map_err(|_| BootError::NoMemory)?;
        if bytes == 0 {
            return Err(BootError::NoMemory);
        }
        // SAFETY: the layout has a non-zero size (checked). The block is
        // never freed: it belongs to the data pool for the domain's life,
        // which is what `memory`'s invariant needs.
        let block = unsafe { alloc(layout) };
        if block.is_null() {
            return Err(BootError::NoMemory);
        }
        let first = va_to_pfn(block as u64).expect("the heap is in the linear window");
        self.data.add_run(first, first + (bytes as u64 / PAGE_SIZE), 1);
        Ok(())
    }

    /// Maps `.user_text` (executable) and `.user_rodata` read-only, for
    /// user mode, in a tree under a level-3 table that every space links
    /// at slot 0.
    fn build_image_tree(&mut self) -> Result<(), PlatformError> {
        let mut tree = Tree::new(3, &mut self.cx())?;
        let text = PRESENT | USER;
        for (range, flags) in [(user::text_range(), text), (user::rodata_range(), text | NO_EXECUTE)] {
            for va in range.step_by(PAGE_SIZE as usize) {
                let pfn = va_to_pfn(va).expect("the image is in the linear window");
                let mfn = pfn_to_mfn(pfn).expect("an image frame is the domain's");
                tree.set_leaf(va, (mfn << 12) | flags, &mut self.cx())?;
            }
        }
        self.image = Some(tree);
        Ok(())
    }

    /// Points every exception, user system calls and events at the trap
    /// entry, and starts the tick.
    fn install_traps(&mut self) -> Result<(), BootError> {
        let entry = trap::entry_address();
        let info = start_info();
        trap::set_mask_byte(info.shared_info + UPCALL_MASK_OFFSET as u64);
        let table: [TrapInfo; TRAP_VECTORS as usize] =
            core::array::from_fn(|v| TrapInfo { vector: v as u64, handler: entry });
        // SAFETY: 1. The entry stub follows the trap protocol: from user
        // mode it never returns to the hypervisor's frame but to `enter`,
        // and in kernel mode it ends in `iret` with `rsp` at the frame (or
        // panics). 2. The trap stack is a static used for nothing else.
        unsafe {
            hypercall::set_trap_table(&table)?;
            hypercall::set_callbacks(entry, entry)?;
            hypercall::stack_switch(trap::trap_stack_top())?;
        }
        self.timer_port = Port(hc::bind_virq(virq::TIMER)?);
        hc::set_timer(time::now() + TICK_NS)?;
        Ok(())
    }

    /// The timer event came: takes it and programs the next tick.
    fn take_tick(&mut self) {
        event::take_pending(self.timer_port);
        if let Err(e) = hc::set_timer(time::now() + TICK_NS) {
            panic!("workload-pv: set_timer refused: {e}");
        }
    }

    fn frame_of(&self, entry: u64) -> Frame {
        let pfn = self.mfn_to_pfn.get(tables::entry_mfn(entry) as usize).copied().unwrap_or(u32::MAX);
        assert_ne!(pfn, u32::MAX, "a user page maps a frame that is not the domain's");
        Frame(u64::from(pfn))
    }
}

impl Platform for PvPlatform {
    type Space = PvSpace;
    type Frame = Frame;

    /// A spare tree if there is one: it maps nothing but already links
    /// the code tree and whatever tables its last process made, so a fork
    /// child usually needs no new link at all.
    fn new_space(&mut self) -> Result<PvSpace, PlatformError> {
        if let Some(tree) = self.spare.iter_mut().find_map(Option::take) {
            return Ok(PvSpace { tree });
        }
        let tree = Tree::new(4, &mut self.cx())?;
        let image = self.image.as_ref().expect("booted").root_mfn();
        self.queue.update(tree.root_entry(0), tables::link_entry(image));
        Ok(PvSpace { tree })
    }

    /// Keeps the tree, linked, as a spare (its pages are all unmapped);
    /// unlinks it when there are spares enough.
    fn destroy_space(&mut self, space: PvSpace) {
        if let Some(slot) = self.spare.iter_mut().find(|s| s.is_none()) {
            *slot = Some(space.tree);
            return;
        }
        self.queue.update(space.tree.root_entry(0), 0);
        space.tree.destroy(&mut self.cx());
    }

    fn map(&mut self, space: &mut PvSpace, va: u64, frame: Frame) -> Result<(), PlatformError> {
        let mfn = pfn_to_mfn(frame.0).expect("a data frame is the domain's");
        space.tree.set_leaf(va, tables::data_entry(mfn), &mut self.cx())
    }

    fn unmap(&mut self, space: &mut PvSpace, va: u64) -> Option<Frame> {
        let (ptr, entry) = space.tree.leaf(va, &self.lists, &self.queue)?;
        if !tables::is_present(entry) {
            return None;
        }
        // The hypervisor flushes the TLB when it clears a present entry.
        self.queue.update(ptr, 0);
        Some(self.frame_of(entry))
    }

    fn translate(&mut self, space: &PvSpace, va: u64) -> Option<Frame> {
        let (_, entry) = space.tree.leaf(va, &self.lists, &self.queue)?;
        tables::is_present(entry).then(|| self.frame_of(entry))
    }

    fn activate(&mut self, space: &PvSpace) {
        self.queue.ext(MmuextCmd::NewUserBaseptr, space.tree.root_mfn());
    }

    fn deactivate(&mut self) {
        self.queue.ext(MmuextCmd::NewUserBaseptr, 0);
    }

    fn alloc_frame(&mut self) -> Option<Frame> {
        self.data.alloc().map(Frame)
    }

    fn free_frame(&mut self, frame: Frame) {
        self.data.free(frame.0);
    }

    fn zero_frame(&mut self, frame: Frame) {
        memory::zero(frame.0);
    }

    fn copy_frame(&mut self, dst: Frame, src: Frame) {
        memory::copy(dst.0, src.0);
    }

    fn run_user(&mut self, context: &mut UserContext) -> Trap {
        self.queue.flush();
        let raw = trap::enter(context);
        if raw.tick_seen {
            self.take_tick();
        }
        match raw.vector {
            VECTOR_SYSCALL => Trap::Syscall,
            VECTOR_EVENT => {
                self.take_tick();
                Trap::Timer
            }
            PAGE_FAULT_VECTOR => Trap::page_fault(raw.cr2, raw.error_code),
            vector => Trap::Fault { vector: vector as u8, error_code: raw.error_code },
        }
    }

    fn console_write(&mut self, text: &str) {
        parvus_guest_sdk::print!("{text}");

    }
}
