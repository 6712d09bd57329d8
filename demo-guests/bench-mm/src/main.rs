//! `bench-mm`: what paravirtualized memory and ring compression cost,
//! counted in instructions.
//!
//! Runs beside `bench` in `scenarios/bench` (same method: under QEMU
//! `-icount shift=0`, `rdtsc` differences are exact instruction counts;
//! each row is a loop whose empty twin is the baseline) and prints the same
//! `BENCH name=... iterations=... total=... baseline=...` lines. Rows:
//!
//! - `update_va_mapping`: one PTE update, remapping a page back and forth
//!   between two frames (writable, so each update also moves a type
//!   reference from one frame to the other);
//! - `mmu_update_512`: one `mmu_update` writing all 512 entries of a level-1
//!   table (alternating between two frames); `iterations` counts PTEs, so
//!   the per-operation figure is per PTE;
//! - `mm_pair_separate`: an `mmuext_op` (one `InvlpgLocal`) then a 2-entry
//!   `mmu_update` (two PTEs of the batch table, alternating between two
//!   frames), as two hypercalls, without `done` counters (as
//!   `workload-pv`'s page-table queue sends them);
//! - `mm_pair_multicall`: the same two calls in one `multicall`;
//! - `process_switch`: one `mmuext_op` with `NewBaseptr` + `NewUserBaseptr`,
//!   alternating between two address spaces (the guest kernel's process
//!   switch, CR3 change included);
//! - `syscall_bounce`: a user process's `syscall`, bounced by the
//!   hypervisor to the guest kernel's entry, which returns at once with
//!   `iret` (a 3-instruction stub): the full user -> kernel -> user round trip;
//! - `page_fault_bounce`: a user load from an unmapped page, bounced to the
//!   guest kernel's page-fault entry, which skips the 3-byte load and
//!   returns with `iret`: what any user page fault costs before the kernel
//!   does its own work (a demand-zero fault adds about one PTE update).
#![no_std]
#![no_main]

extern crate alloc;

use alloc::boxed::Box;
use core::hint::black_box;

use parvus_guest_sdk::frames::PageFrame;
use parvus_guest_sdk::bench::{empty_loop, ticks};
use parvus_guest_sdk::hypercall::{self, raw, Aligned};
use parvus_guest_sdk::hypercall_abi::mm::{uvm_flags, MmuUpdate, MmuextCmd, MulticallEntry};
use parvus_guest_sdk::hypercall_abi::Hypercall;
use parvus_guest_sdk::hypercall_abi::trap::TrapInfo;
use parvus_guest_sdk::paging::{AddressSpace, Pte, PteFlags};
use parvus_guest_sdk::trap::{self, Trap, UserContext};
use parvus_guest_sdk::{console, println, user, user_entry, StartInfo};

/// Iterations of the single-operation rows.
const ITERATIONS: u64 = 10_000;
/// `mmu_update` calls of the 512-entry row.
const BATCH_LOOPS: u64 = 100;
/// Iterations of the two `mm_pair` rows (each a few thousand instructions).
const PAIR_LOOPS: u64 = 1_000;
/// Entries per level-1 table.
const PTES: usize = 512;

/// Top of the user stack (slot 1, as in `minikernel`).
const USER_STACK_TOP: u64 = 0x80_0010_0000;
/// The page `update_va_mapping` remaps.
const REMAP_VA: u64 = 0x80_0020_0000;
/// The 2 MiB region whose level-1 table `mmu_update_512` rewrites.
const BATCH_VA: u64 = 0x80_0040_0000;
/// What the user process loads from: mapped nowhere.
const FAULT_VA: u64 = 0x80_7000_0000;

/// User system calls of this guest.
mod sys {
    /// `report(row, total, baseline)`: prints a `BENCH` line.
    pub const REPORT: u64 = 1;
    /// `exit()`: ends the benchmark (and the domain).
    pub const EXIT: u64 = 2;
    /// Row number of `syscall_bounce` in `report`.
    pub const ROW_SYSCALL: u64 = 0;
    /// Row number of `page_fault_bounce` in `report`.
    pub const ROW_PAGE_FAULT: u64 = 1;
}

const RW: PteFlags = PteFlags::WRITABLE.union(PteFlags::NO_EXECUTE);

parvus_guest_sdk::entry!(main);

/// Prints one row, machine-readable then for people.
fn report(name: &str, iterations: u64, total: u64, baseline: u64) {
    println!("BENCH name={name} iterations={iterations} total={total} baseline={baseline}");
    let hundredths = total.saturating_sub(baseline) * 100 / iterations;
    println!("bench-mm: {name}: {}.{:02} instructions per operation", hundredths / 100, hundredths % 100);
    console::flush();
}



fn main(_start: &'static StartInfo) -> u64 {
    println!("bench-mm: page tables, process switches and trap bounces; ticks are instructions under -icount");
    trap::install(on_trap).expect("registering the trap handler");
    install_fast_paths();

    let mut a = space_with_stack().expect("address space a");
    let b = space_with_stack().expect("address space b");
    // Tables for the two scratch regions: map a page next to REMAP_VA, and
    // map then unmap BATCH_VA (the table stays, empty).
    let mut setup = a.batch();
    setup.map(REMAP_VA + 4096, PageFrame::alloc().expect("frame"), RW).expect("map");
    setup.map(BATCH_VA, PageFrame::alloc().expect("frame"), RW).expect("map");
    setup.finish().expect("setting up");
    a.unmap(BATCH_VA).expect("unmap");
    a.activate().expect("loading address space a");
    let frames = [PageFrame::alloc().expect("frame"), PageFrame::alloc().expect("frame")];
    let ptes = frames.each_ref().map(|f| Pte::new(f.mfn(), RW | PteFlags::PRESENT | PteFlags::USER));
    console::flush();

    // update_va_mapping: one PTE, back and forth.
    let baseline = empty_loop(ITERATIONS);
    let start = ticks();
    for i in 0..ITERATIONS {
        // SAFETY: REMAP_VA is in address space a's user slot, which no Rust
        // object uses; it maps one of `frames` (alive until the end of main).
        let _ = black_box(unsafe { hypercall::update_va_mapping(REMAP_VA, ptes[(i & 1) as usize].0, uvm_flags::INVLPG) });
    }
    let total = ticks() - start;
    // SAFETY: as above: the entry is cleared.
    unsafe { hypercall::update_va_mapping(REMAP_VA, 0, uvm_flags::INVLPG) }.expect("clearing the remapped page");
    report("update_va_mapping", ITERATIONS, total, baseline);

    // mmu_update_512: a whole level-1 table per call.
    let table = a.entry_address(BATCH_VA).expect("the batch table exists");
    let batch = |pte: Pte| {
        let mut reqs = Box::new(Aligned([MmuUpdate { ptr: 0, val: 0 }; PTES]));
        for (i, req) in reqs.0.iter_mut().enumerate() {
            *req = MmuUpdate { ptr: table + i as u64 * 8, val: pte.0 };
        }
        reqs
    };
    let (first, second, clear) = (batch(ptes[0]), batch(ptes[1]), batch(Pte::EMPTY));
    let baseline = empty_loop(BATCH_LOOPS);
    let start = ticks();
    for i in 0..BATCH_LOOPS {
        let reqs = if i & 1 == 0 { &first.0 } else { &second.0 };
        // SAFETY: the requests write the level-1 table of BATCH_VA in
        // address space a's user slot, where no Rust object lives.
        let _ = black_box(unsafe { hypercall::mmu_update(reqs) });
    }
    let total = ticks() - start;
    // SAFETY: as above; the table is emptied again.
    unsafe { hypercall::mmu_update(&clear.0) }.expect("clearing the batch table");
    report("mmu_update_512", BATCH_LOOPS * PTES as u64, total, baseline);

    // mm_pair_separate and mm_pair_multicall: an mmuext_op and a 2-entry
    // mmu_update, as two calls and as one multicall.
    let pair = |pte: Pte| Aligned([MmuUpdate { ptr: table, val: pte.0 }, MmuUpdate { ptr: table + 8, val: pte.0 }]);
    let pairs = [pair(ptes[0]), pair(ptes[1])];
    let invlpg = Aligned([hypercall::mmuext(MmuextCmd::InvlpgLocal, BATCH_VA)]);
    let ext = invlpg.0.as_ptr() as u64;
    let baseline = empty_loop(PAIR_LOOPS);
    let start = ticks();
    for i in 0..PAIR_LOOPS {
        let updates = pairs[(i & 1) as usize].0.as_ptr() as u64;
        // SAFETY: 1. the updates write the batch table of BATCH_VA, where no
        // Rust object lives, and the flush only drops a TLB entry; 2. the
        // records are 16-byte aligned and outlive the calls; no `done`
        // counter is passed.
        let _ = black_box(unsafe { raw::hypercall3(Hypercall::MmuextOp, ext, 1, 0) });
        // SAFETY: as for the flush just above.
        let _ = black_box(unsafe { raw::hypercall3(Hypercall::MmuUpdate, updates, 2, 0) });
    }
    let total = ticks() - start;
    report("mm_pair_separate", PAIR_LOOPS, total, baseline);
    let call = |op: Hypercall, records: u64, count: u64| MulticallEntry { op: op as u64, args: [records, count, 0, 0, 0, 0], result: 0 };
    let mut batches = pairs.each_ref().map(|p| {
        Aligned([call(Hypercall::MmuextOp, ext, 1), call(Hypercall::MmuUpdate, p.0.as_ptr() as u64, 2)])
    });
    let baseline = empty_loop(PAIR_LOOPS);
    let start = ticks();
    for i in 0..PAIR_LOOPS {
        // SAFETY: as above: each entry is one of the two calls just made.
        let _ = black_box(unsafe { hypercall::multicall(&mut batches[(i & 1) as usize].0) });
    }
    let total = ticks() - start;
    report("mm_pair_multicall", PAIR_LOOPS, total, baseline);
    // Each call's result is the number of its records performed.
    assert!(batches.iter().all(|b| b.0.map(|c| c.result) == [1, 2]), "every batched call succeeded");
    // SAFETY: as above; the two entries are cleared.
    unsafe { hypercall::mmu_update(&pair(Pte::EMPTY).0) }.expect("clearing the pair's entries");

    // process_switch: both base pointers, alternating between a and b.
    let switch_to = |s: &AddressSpace| {
        Aligned([
            hypercall::mmuext(MmuextCmd::NewBaseptr, s.kernel_root_mfn()),
            hypercall::mmuext(MmuextCmd::NewUserBaseptr, s.user_root_mfn()),
        ])
    };
    let (to_a, to_b) = (switch_to(&a), switch_to(&b));
    let baseline = empty_loop(ITERATIONS);
    let start = ticks();
    for i in 0..ITERATIONS {
        let ops = if i & 1 == 0 { &to_b.0 } else { &to_a.0 };
        // SAFETY: both kernel tables map slot 0 as the boot tables do, so
        // everything Rust uses stays where it is.
        let _ = black_box(unsafe { hypercall::mmuext_op(ops) });
    }
    let total = ticks() - start;
    report("process_switch", ITERATIONS, total, baseline);

    // The two bounce rows run in a user process in address space b; its
    // system calls report them, and its exit ends the domain.
    b.activate().expect("loading address space b");
    console::flush();
    let context = UserContext::new(bench_user as *const () as u64, USER_STACK_TOP);
    trap::enter_user(&context)
}

/// An address space with the user image and a 4-page stack.
fn space_with_stack() -> Result<AddressSpace, parvus_guest_sdk::paging::PagingError> {
    let mut space = AddressSpace::new()?;
    space.map_user_image()?;
    for i in 1..=4 {
        space.map(USER_STACK_TOP - i * 4096, PageFrame::alloc().expect("frame"), RW)?;
    }
    Ok(space)
}

// The fast kernel entries: a user `syscall` with rax = 0 and any page
// fault return at once; everything else goes to the SDK's entry.
core::arch::global_asm!(
    ".pushsection .text.bench_mm_entries, \"ax\", @progbits",
    ".p2align 4",
    "bench_syscall_entry:",
    "test rax, rax",
    "jnz __parvus_trap_entry",
    "mov eax, {iret}",
    "syscall",
    "ud2",
    ".p2align 4",
    "bench_page_fault_entry:",
    // Skip the faulting `mov rax, qword ptr [rsi]` (3 bytes): frame.rip is at +56.
    "add qword ptr [rsp + 56], 3",
    "mov eax, {iret}",
    "syscall",
    "ud2",
    ".popsection",
    iret = const parvus_guest_sdk::hypercall_abi::Hypercall::Iret as u64,
);

extern "C" {
    fn bench_syscall_entry();
    fn bench_page_fault_entry();
}

/// Points the system-call callback and the page-fault vector at the fast entries.
fn install_fast_paths() {
    let sdk = trap::entry_address();
    let table: [TrapInfo; 32] = core::array::from_fn(|v| TrapInfo {
        vector: v as u64,
        handler: if v == 14 { bench_page_fault_entry as *const () as u64 } else { sdk },
    });
    // SAFETY: both stubs follow the trap protocol: they leave `rsp` at the
    // frame and end in `iret` (or jump to the SDK's entry, which does).
    unsafe {
        hypercall::set_trap_table(&table).expect("set_trap_table");
        hypercall::set_callbacks(bench_syscall_entry as *const () as u64, 0).expect("set_callbacks");
    }
}

/// The SDK-path handler: the user process's reports and its exit.
fn on_trap(trap: &mut Trap<'_>) {
    if !trap.from_user() || !trap.is_syscall() {
        panic!("bench-mm: unexpected {} at rip {:#x}", trap::vector_name(trap.frame.vector), trap.frame.rip);
    }
    match trap.syscall_args() {
        (sys::REPORT, [row, total, baseline]) => {
            let name = if row == sys::ROW_SYSCALL { "syscall_bounce" } else { "page_fault_bounce" };
            report(name, ITERATIONS, total, baseline);
            trap.set_return(0);
        }
        (sys::EXIT, _) => {
            println!("bench-mm: done");
            hypercall::exit(0);
        }
        (number, _) => panic!("bench-mm: unknown system call {number}"),
    }
}

/// `rdtsc` for user code, as one 64-bit value.
#[inline(always)]
fn user_ticks() -> u64 {
    let (low, high): (u32, u32);
    // SAFETY: `rdtsc` only reads the counter, allowed in ring 3.
    unsafe { core::arch::asm!("rdtsc", out("eax") low, out("edx") high, options(nomem, nostack)) };
    (u64::from(high) << 32) | u64::from(low)
}

user_entry! {
    /// The user process: measures both bounce rows and reports them.
    fn bench_user() -> ! {
        // syscall_bounce: `xor eax, eax; syscall` per iteration.
        let start = user_ticks();
        // SAFETY: a counted loop touching only the named registers.
        unsafe { core::arch::asm!("2:", "dec {n}", "jnz 2b", n = inout(reg) ITERATIONS => _, options(nomem, nostack)) };
        let baseline = user_ticks() - start;
        let start = user_ticks();
        // SAFETY: system call 0 is answered by the fast entry with `iret`,
        // which restores every register but rcx/r11 (declared clobbered).
        unsafe {
            core::arch::asm!(
                "2:",
                "xor eax, eax",
                "syscall",
                "dec {n}",
                "jnz 2b",
                n = inout(reg) ITERATIONS => _,
                out("rax") _,
                out("rcx") _,
                out("r11") _,
                options(nostack),
            )
        };
        let total = user_ticks() - start;
        // SAFETY: `report` reads only its register arguments.
        unsafe { user::syscall3(sys::REPORT, sys::ROW_SYSCALL, total, baseline) };

        // page_fault_bounce: a 3-byte load from an unmapped page per iteration.
        let start = user_ticks();
        // SAFETY: as the first loop.
        unsafe { core::arch::asm!("2:", "dec {n}", "jnz 2b", n = inout(reg) ITERATIONS => _, options(nomem, nostack)) };
        let baseline = user_ticks() - start;
        let start = user_ticks();
        // SAFETY: the load faults every time; the fast page-fault entry
        // skips it (exactly 3 bytes: 48 8b 06) and returns with every
        // register intact, so rax is never written.
        unsafe {
            core::arch::asm!(
                "2:",
                "mov rax, qword ptr [rsi]",
                "dec {n}",
                "jnz 2b",
                n = inout(reg) ITERATIONS => _,
                in("rsi") FAULT_VA,
                out("rax") _,
                options(nostack, readonly),
            )
        };
        let total = user_ticks() - start;
        // SAFETY: as above.
        unsafe { user::syscall3(sys::REPORT, sys::ROW_PAGE_FAULT, total, baseline) };
        // SAFETY: `exit` reads nothing and does not return.
        unsafe { user::syscall0(sys::EXIT) };
        loop {
            core::hint::spin_loop();
        }
    }
}
