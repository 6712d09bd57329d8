//! Regression tests from the review of trap-and-emulate: each drives the
//! system with a hostile emulated kernel and names the bug it caught.
//!
//! Two families:
//! - **Non-canonical RIP.** The hypervisor returns to a guest with
//!   `iretq`, which raises #GP *in ring 0* when the RIP it pops is not
//!   canonical (Intel SDM vol. 2, IRET: "#GP(0) if the return instruction
//!   pointer is non-canonical"); a fault in ring 0 stops the machine. So an
//!   emulated instruction must never leave a non-canonical RIP in the frame:
//!   where a real CPU refuses (`sysretq`, `iretq`, `lretq`, `wrmsr` of an
//!   address MSR) the guest gets its #GP, and where a real CPU would
//!   double-fault (an IDT gate to a non-canonical handler) the domain is
//!   stopped.
//! - **Shadow memory.** The shadow budget must hold while the guest runs on
//!   one CR3, and the reverse map of writable leaves (hypervisor heap) must
//!   stay bounded: the heap is a fixed 8 MiB, and running out of it panics
//!   the hypervisor.

use super::emulated_tests::{emulated_system, gp_at, KERNEL};
use super::*;
use crate::emulated::guest_phys::{Gpa, GuestPhys};
use crate::emulated::machine::SHADOW_BUDGET_FRAMES;
use crate::emulated::{REAL_CS, REAL_SS};
use crate::frame_table::Owner;
use crate::machine_memory::TestMemory;
use crate::manifest::Expect;
use crate::paging::flags::{ACCESSED, DIRTY, HUGE, PRESENT, USER, WRITABLE};

/// Where the tests put the guest's IDT and its #GP handler.
pub(super) const IDT: u64 = 0x30_0000;
pub(super) const GP_HANDLER: u64 = 0x20_0800;
/// A non-canonical address (bit 47 set, bits 63..48 clear).
const NON_CANONICAL: u64 = 0x0000_8000_0000_0000;

fn canonical(v: u64) -> bool {
    ((v as i64) << 16 >> 16) as u64 == v
}

pub(super) fn write_guest(sys: &System, mem: &mut TestMemory, gpa: u64, bytes: &[u8]) {
    GuestPhys::new(&sys.domains[0].frames).write(mem, Gpa(gpa), bytes).unwrap();
}

/// Gives the guest an IDT whose gate `vector` goes to `handler` (an
/// interrupt gate, DPL 0, code selector 0x08).
pub(super) fn set_gate(sys: &mut System, mem: &mut TestMemory, vector: u8, handler: u64) {
    let mut gate = [0u8; 16];
    gate[0..2].copy_from_slice(&(handler as u16).to_le_bytes());
    gate[2..4].copy_from_slice(&0x08u16.to_le_bytes());
    gate[5] = 0x8e;
    gate[6..8].copy_from_slice(&((handler >> 16) as u16).to_le_bytes());
    gate[8..12].copy_from_slice(&((handler >> 32) as u32).to_le_bytes());
    write_guest(sys, mem, IDT + u64::from(vector) * 16, &gate);
    let vm = sys.domains[0].vm.as_deref_mut().unwrap();
    vm.cpu.idtr = crate::emulated::cpu::TableRegister { base: IDT, limit: 0xfff };
}

/// Starts a one-domain system running `code` at `KERNEL`, with a #GP gate.
pub(super) fn started(code: &[u8], expect: Expect) -> (System, TestMemory, GuestRegs) {
    let (mut sys, mut mem) = emulated_system(code, expect);
    let mut frame = GuestRegs::default();
    sys.start(&mut Platform { mem: &mut mem, console: &mut String::new(), tsc: 0 }, &mut frame);
    set_gate(&mut sys, &mut mem, 13, GP_HANDLER);
    (sys, mem, frame)
}

/// What the kernel's `return_to_guest` needs to `iretq` without faulting in
/// ring 0: a canonical RIP and the emulated-mode selectors.
pub(super) fn assert_safe_to_return(next: Next, frame: &GuestRegs) {
    if matches!(next, Next::Resume { .. } | Next::Switch { .. }) {
        assert!(canonical(frame.rip), "the hypervisor would iretq to rip={:#x} and #GP in ring 0", frame.rip);
        assert_eq!((frame.cs, frame.ss), (REAL_CS, REAL_SS));
    }
}

/// Bug: `sysretq` set RIP from RCX unchecked; with a non-canonical RCX the
/// hypervisor's own `iretq` faulted in ring 0 (machine down). Intel raises
/// #GP(0) in the kernel for it (SDM vol. 2, SYSRET).
#[test]
fn sysretq_to_a_non_canonical_rcx_is_a_gp_in_the_guest_kernel() {
    let (mut sys, mut mem, mut frame) = started(&[0x48, 0x0f, 0x07], Expect::Exit(0));
    {
        let cpu = &mut sys.domains[0].vm.as_deref_mut().unwrap().cpu;
        cpu.efer |= crate::emulated::cpu::cr::EFER_SCE;
        cpu.star = (0x10 << 48) | (0x08 << 32);
    }
    frame = GuestRegs { rcx: NON_CANONICAL, r11: 0x202, ..gp_at(&frame, KERNEL) };
    let next = sys.on_guest_exception(&mut Platform { mem: &mut mem, console: &mut String::new(), tsc: 0 }, &mut frame, 0);
    assert_safe_to_return(next, &frame);
    assert_eq!(frame.rip, GP_HANDLER);
    assert_eq!(sys.domains[0].vm.as_ref().unwrap().cpu.cpl, 0, "still in the kernel");
}

/// Bug: `iretq` set RIP from the popped frame unchecked (machine down, as
/// above). A real CPU raises #GP(0) at the `iretq`.
#[test]
fn iretq_to_a_non_canonical_rip_is_a_gp_in_the_guest_kernel() {
    let (mut sys, mut mem, mut frame) = started(&[0x48, 0xcf], Expect::Exit(0));
    let stack = 0x3f_0000;
    let words = [NON_CANONICAL, 0x2b, 0x202, 0x3f_8000, 0x23];
    let bytes: alloc::vec::Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    write_guest(&sys, &mut mem, stack, &bytes);
    frame = GuestRegs { rsp: stack, ..gp_at(&frame, KERNEL) };
    frame.vector = 11; // #NP: the user selector's slot is not present
    let next = sys.on_guest_exception(&mut Platform { mem: &mut mem, console: &mut String::new(), tsc: 0 }, &mut frame, 0);
    assert_safe_to_return(next, &frame);
    assert_eq!(frame.rip, GP_HANDLER);
    assert_eq!(sys.domains[0].vm.as_ref().unwrap().cpu.cpl, 0, "the return did not happen");
}

/// Bug: `lretq` likewise (machine down).
#[test]
fn lretq_to_a_non_canonical_rip_is_a_gp_in_the_guest_kernel() {
    let (mut sys, mut mem, mut frame) = started(&[0x48, 0xcb], Expect::Exit(0));
    let stack = 0x3f_0000;
    let bytes: alloc::vec::Vec<u8> = [NON_CANONICAL, 0x08].iter().flat_map(|w: &u64| w.to_le_bytes()).collect();
    write_guest(&sys, &mut mem, stack, &bytes);
    frame = GuestRegs { rsp: stack, ..gp_at(&frame, KERNEL) };
    let next = sys.on_guest_exception(&mut Platform { mem: &mut mem, console: &mut String::new(), tsc: 0 }, &mut frame, 0);
    assert_safe_to_return(next, &frame);
    assert_eq!(frame.rip, GP_HANDLER);
}

/// Bug: `wrmsr` stored any LSTAR, and the next `syscall` jumped there
/// (machine down on the way back). A real CPU raises #GP(0) for a
/// non-canonical address in LSTAR, CSTAR, FS_BASE, GS_BASE or
/// KERNEL_GS_BASE (SDM vol. 2, WRMSR).
#[test]
fn wrmsr_of_a_non_canonical_address_is_a_gp_and_syscall_cannot_reach_it() {
    use crate::emulated::cpu::msr;
    for which in [msr::LSTAR, msr::CSTAR, msr::FS_BASE, msr::GS_BASE, msr::KERNEL_GS_BASE] {
        let (mut sys, mut mem, mut frame) = started(&[0x0f, 0x30], Expect::Exit(0));
        sys.domains[0].vm.as_deref_mut().unwrap().cpu.efer |= crate::emulated::cpu::cr::EFER_SCE;
        frame = GuestRegs { rcx: u64::from(which), rdx: NON_CANONICAL >> 32, rax: 0, ..gp_at(&frame, KERNEL) };
        let mut p = Platform { mem: &mut mem, console: &mut String::new(), tsc: 0 };
        let next = sys.on_guest_exception(&mut p, &mut frame, 0);
        assert_safe_to_return(next, &frame);
        assert_eq!(frame.rip, GP_HANDLER, "msr {which:#x}");
        // A `syscall` now enters where LSTAR says.
        frame = GuestRegs { rip: KERNEL + 2, rcx: KERNEL + 2, r11: 0x202, vector: VECTOR_SYSCALL, ..frame };
        let next = sys.on_hypercall(&mut p, &mut frame);
        assert_safe_to_return(next, &frame);
    }
}

/// Bug: an IDT gate's offset was used unchecked as the handler's RIP
/// (machine down). A real CPU cannot deliver through it: it raises #GP
/// (error code EXT), and if the #GP gate is no better, a double fault,
/// then shuts down: only then is the domain stopped.
#[test]
fn a_gate_to_a_non_canonical_handler_is_a_general_protection_fault_then_a_triple_fault() {
    let (mut sys, mut mem, mut frame) = started(&[0x0f, 0x0b], Expect::Crash); // ud2
    set_gate(&mut sys, &mut mem, 6, NON_CANONICAL);
    let ud = GuestRegs { vector: 6, error_code: 0, rip: KERNEL, ..frame };
    frame = ud;
    let next = sys.on_guest_exception(&mut Platform { mem: &mut mem, console: &mut String::new(), tsc: 0 }, &mut frame, 0);
    assert_safe_to_return(next, &frame);
    assert_eq!(frame.rip, GP_HANDLER);
    let pushed = GuestPhys::new(&sys.domains[0].frames).read_u64(&mem, Gpa(frame.rsp)).unwrap();
    assert_eq!(pushed, 1, "#GP(EXT): the CPU was delivering an exception");
    // The #GP gate is no better: #DF, which has no gate: a triple fault.
    set_gate(&mut sys, &mut mem, 13, NON_CANONICAL);
    frame = ud;
    let next = sys.on_guest_exception(&mut Platform { mem: &mut mem, console: &mut String::new(), tsc: 0 }, &mut frame, 0);
    assert_safe_to_return(next, &frame);
    assert_eq!(next, Next::Finished { all_as_expected: true });
}

/// Maps 1 GiB pages at guest-physical 0 (writable, dirty, user) in every
/// slot of a new guest level-3 table at 0x31_0000, which the kernel's
/// top-level table links at slot 1 (from 0x80_0000_0000).
fn map_gigabyte_pages(sys: &System, mem: &mut TestMemory) -> u64 {
    let l3 = 0x31_0000u64;
    let large = PRESENT | WRITABLE | USER | ACCESSED | DIRTY | HUGE;
    let table: alloc::vec::Vec<u8> = (0..512).flat_map(|_| large.to_le_bytes()).collect();
    write_guest(sys, mem, l3, &table);
    let l4 = sys.domains[0].vm.as_ref().unwrap().cpu.cr3;
    write_guest(sys, mem, l4 + 8, &(l3 | PRESENT | WRITABLE | USER | ACCESSED).to_le_bytes());
    1 << 39
}

/// The guest writes `va` and the shadow misses: the page fault the CPU reports.
fn write_fault(sys: &mut System, mem: &mut TestMemory, frame: &mut GuestRegs, va: u64) -> Next {
    *frame = GuestRegs { vector: 14, error_code: 0x6, rip: KERNEL, ..*frame };
    sys.on_guest_exception(&mut Platform { mem, console: &mut String::new(), tsc: 0 }, frame, va)
}

/// Bug: the shadow budget was checked only when CR3 was loaded, so a
/// kernel that never reloads CR3 grew its shadows without limit: every
/// 2 MiB of a 1 GiB guest page is one more shadow frame, until the
/// machine's free frames ran out (and another domain's next shadow table
/// or memory reservation failed).
#[test]
fn the_shadow_budget_holds_without_cr3_loads() {
    let (mut sys, mut mem, mut frame) = started(&[0x90], Expect::Exit(0));
    let base = map_gigabyte_pages(&sys, &mut mem);
    // Two 2 MiB splinters per 1 GiB page (the guest has 4 MiB of RAM).
    for gib in 0..512u64 {
        for half in 0..2u64 {
            let next = write_fault(&mut sys, &mut mem, &mut frame, base + (gib << 30) + (half << 21));
            assert!(matches!(next, Next::Resume { .. } | Next::Switch { .. }), "{next:?}");
            assert_safe_to_return(next, &frame);
        }
    }
    let held = sys.frames.count_owned(Owner::Hypervisor);
    assert!(held <= SHADOW_BUDGET_FRAMES + 8, "{held} shadow frames held, budget {SHADOW_BUDGET_FRAMES}");
}

/// Bug: the reverse map of writable shadow leaves (16 bytes of hypervisor
/// heap per leaf) was bounded only by the shadow frames, 512 leaves each:
/// within the frame budget a kernel could make 1024 * 512 leaves, 8 MiB,
/// the whole hypervisor heap, and the allocation failure panics the
/// machine. Here 40 of its 1 GiB pages are written page by page (the
/// 512 pages of guest RAM from 1 MiB, where none of its tables is).
#[test]
fn the_reverse_map_of_writable_leaves_stays_bounded() {
    let (mut sys, mut mem, mut frame) = started(&[0x90], Expect::Exit(0));
    let base = map_gigabyte_pages(&sys, &mut mem);
    let mut most = 0;
    for gib in 0..40u64 {
        for page in 0x100..0x300u64 {
            let next = write_fault(&mut sys, &mut mem, &mut frame, base + (gib << 30) + (page << 12));
            assert!(matches!(next, Next::Resume { .. } | Next::Switch { .. }), "{next:?}");
            most = most.max(sys.domains[0].vm.as_ref().unwrap().shadow.reverse_map_len());
        }
    }
    assert!(most <= crate::emulated::shadow::REVERSE_MAP_BUDGET + 1, "{most} slots in the reverse map");
}

/// Bug: the platform timer followed the virtual PIT of every live emulated
/// domain, running or not. A kernel that programs its PIT with reload 2
/// (a tick every 1.7 us) and is then preempted made the hypervisor take a
/// timer interrupt every 1.7 us while the *other* domains ran, charged to
/// them (a paravirtualized workload beside it lost about a third of its
/// throughput under QEMU). A preempted kernel cannot see its IRQ 0 before
/// it runs again, so only the running domain's PIT (and a halted one's
/// that a tick would wake) may arm the platform timer; the others' ticks
/// are caught up when they run.
#[test]
fn a_preempted_kernels_fast_pit_does_not_interrupt_the_others() {
    let (mut sys, mut mem) = emulated_system(&[0x90], Expect::Exit(0));
    // A second emulated domain, the victim.
    let victim = {
        let plan = crate::builder::DomainPlan {
            id: DomainId(1),
            name: "victim",
            cmdline: "",
            memory: 4 << 20,
            max_memory: 4 << 20,
            expect: Expect::Exit(0),
            weight: 256,
            time_limit_ns: None,
            umip: true,
            mode: crate::manifest::Mode::Emulated,
            entry: KERNEL,
            segments: alloc::vec![crate::builder::Segment { vaddr: KERNEL, data: &[0x90], mem_size: 0x1000, writable: false, executable: true }],
            time: sys.time,
        };
        crate::builder::build(&plan, &mut sys.frames, &mut mem, &[0; ENTRIES / 2]).unwrap()
    };
    sys.add_domain(victim);
    let mut frame = GuestRegs::default();
    let mut out = String::new();
    sys.start(&mut Platform { mem: &mut mem, console: &mut out, tsc: 0 }, &mut frame);
    assert_eq!(sys.current_id(), Some(DomainId(0)));
    // Domain 0 programs PIT channel 0: mode 2, reload 2.
    let pit = &mut sys.domains[0].vm.as_deref_mut().unwrap().devices.pit;
    pit.write_command(0x34, 0);
    pit.write_data(2, 0);
    pit.write_data(0, 0);
    let period = pit.period_ns();
    // Its slice ends: the victim runs.
    let tsc = crate::scheduler::SLICE_NS + 1; // the test clock: 1 tick = 1 ns
    sys.on_timer(&mut Platform { mem: &mut mem, console: &mut out, tsc }, &mut frame);
    assert_eq!(sys.current_id(), Some(DomainId(1)));
    let deadline = sys.next_deadline().unwrap_or(u64::MAX);
    assert!(deadline > tsc + 100 * period, "the platform timer fires {} ns into the victim's slice", deadline - tsc);
    // Back on the CPU, the kernel finds the tick it missed pending.
    let tsc = tsc + 2 * crate::scheduler::SLICE_NS + 2;
    sys.on_timer(&mut Platform { mem: &mut mem, console: &mut out, tsc }, &mut frame);
    assert_eq!(sys.current_id(), Some(DomainId(0)));
    assert_eq!(sys.domains[0].vm.as_ref().unwrap().devices.pic.irr & 1, 1);
}

/// Bug: the `sti` shadow lasted only to the end of the `sti` exit. If the
/// platform timer fired while the hypervisor handled that exit, the CPU
/// took it right after the `iretq`, before the guest's `hlt`, and the
/// virtual interrupt was delivered *before* the `hlt` instead of waking it.
/// With a one-shot PIT (a tickless kernel's idle loop: arm, `sti; hlt`)
/// the `hlt` then found no timer armed and the domain was stopped; on a
/// real CPU nothing can come between `sti` and `hlt`.
#[test]
fn an_interrupt_between_sti_and_hlt_waits_for_the_hlt() {
    let (mut sys, mut mem, mut frame) = started(&[0xfb, 0xf4], Expect::Exit(0)); // sti; hlt
    set_gate(&mut sys, &mut mem, 0x20, GP_HANDLER + 0x100);
    let deadline = {
        let devices = &mut sys.domains[0].vm.as_deref_mut().unwrap().devices;
        for (p, v) in [(0x20u16, 0x11u8), (0x21, 0x20), (0x21, 0x04), (0x21, 0x01), (0x21, 0xfe)] {
            devices.write(p, v, 0);
        }
        // PIT mode 0 (one-shot), 1000 counts.
        devices.write(0x43, 0x30, 0);
        devices.write(0x40, 0xe8, 0);
        devices.write(0x40, 0x03, 0);
        devices.pit.deadline_ns().unwrap()
    };
    let mut out = String::new();
    frame = gp_at(&frame, KERNEL);
    let mut p = Platform { mem: &mut mem, console: &mut out, tsc: deadline - 10 };
    assert_eq!(sys.on_guest_exception(&mut p, &mut frame, 0), Next::RESUME); // sti
    assert_eq!(frame.rip, KERNEL + 1);
    // The tick came due while the `sti` exit was handled: the timer
    // interrupt strikes before the `hlt` has run.
    p.tsc = deadline;
    let next = sys.on_timer(&mut p, &mut frame);
    assert_safe_to_return(next, &frame);
    assert_eq!(frame.rip, KERNEL + 1, "nothing is delivered before the instruction after sti");
    // The `hlt` traps, and the interrupt wakes it at once.
    frame = gp_at(&frame, KERNEL + 1);
    let next = sys.on_guest_exception(&mut p, &mut frame, 0);
    assert_safe_to_return(next, &frame);
    assert!(sys.domains[0].is_alive());
    assert_eq!(frame.rip, GP_HANDLER + 0x100, "in its timer handler");
    let pushed = GuestPhys::new(&sys.domains[0].frames).read_u64(&mem, Gpa(frame.rsp)).unwrap();
    assert_eq!(pushed, KERNEL + 2, "returning after the hlt");
}

/// Bug: the PIT's counter-latch command latched the count at the moment
/// counting *started*, not now, so a kernel that reads channel 0 the usual
/// way (latch, then low and high byte) always saw the full reload value: a
/// delay or calibration loop on it never ends.
#[test]
fn a_latched_pit_count_is_the_count_now() {
    let mut d = crate::emulated::devices::Devices::default();
    d.write(0x43, 0x34, 0); // channel 0, low/high, mode 2
    d.write(0x40, 0x9b, 0);
    d.write(0x40, 0x2e, 0); // 11931 counts
    let half = d.pit.period_ns() / 2;
    d.write(0x43, 0x00, half); // latch channel 0
    let count = u16::from(d.read(0x40, half + 1000)) | (u16::from(d.read(0x40, half + 2000)) << 8);
    assert!((5900..6020).contains(&count), "latched {count}, expected about 11931 / 2");
}
