//! Helpers for the host tests of the modules that need built domains.

use crate::builder::{build_domain, DomainPlan, Segment};
use crate::domain::DomainId;
use crate::frame_table::FrameTable;
use crate::machine_memory::TestMemory;
use crate::manifest::Expect;
use crate::paging::ENTRIES;
use crate::system::System;
use hypercall_abi::layout::GUEST_VIRT_BASE;

/// Frames of test machine memory (16 MiB).
pub const TEST_FRAMES: u64 = 4096;

/// A system of `n` 1 MiB domains named `d0`, `d1`... built in test memory;
/// the code page holds `code`, the data page (RW) at `GUEST_VIRT_BASE + 0x1000`
/// holds "hello, world".
pub fn system_with(n: u16, expect: Expect) -> (System, TestMemory) {
    let mut mem = TestMemory::new(TEST_FRAMES);
    let mut frames = FrameTable::new(TEST_FRAMES);
    frames.add_free(256, TEST_FRAMES);
    let upper = [0; ENTRIES / 2];
    let mut system = System::new(frames, upper, usize::from(n));
    let code = [0x90u8, 0xc3];
    let data = b"hello, world";
    for i in 0..n {
        let name = alloc::format!("d{i}");
        let plan = DomainPlan {
            id: DomainId(i),
            name: &name,
            cmdline: "",
            memory: 1 << 20,
            max_memory: 2 << 20,
            expect,
            weight: 256,
            time_limit_ns: None,
            umip: true,
            mode: crate::manifest::Mode::Paravirtualized,
            time: crate::time::TimeBase::default(),
            entry: GUEST_VIRT_BASE,
            segments: alloc::vec![
                Segment { vaddr: GUEST_VIRT_BASE, data: &code, mem_size: 2, writable: false, executable: true },
                Segment { vaddr: GUEST_VIRT_BASE + 0x1000, data, mem_size: 0x1000, writable: true, executable: false },
            ],
        };
        let d = build_domain(&plan, &mut system.frames, &mut mem, &upper).expect("test domain builds");
        system.add_domain(d);
    }
    (system, mem)
}

/// Guest-virtual address of the test domains' data page.
pub const DATA: u64 = GUEST_VIRT_BASE + 0x1000;

pub mod fuzz;
pub mod invariants;
