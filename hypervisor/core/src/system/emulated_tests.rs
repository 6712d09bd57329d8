//! Host tests of trap-and-emulate through the system: each exit of an
//! emulated kernel, simulated from the frame the CPU would produce.

use super::*;
use crate::builder::{build, DomainPlan, Segment};
use crate::emulated::{REAL_CS, REAL_SS};
use crate::frame_table::FrameTable;
use crate::machine_memory::TestMemory;
use crate::manifest::{Expect, Mode};
use crate::time::{TimeBase, TscClock};

const FRAMES: u64 = 4096;
pub(super) const KERNEL: u64 = 0x20_0000;
/// 1 GHz: one TSC tick is one nanosecond.
const TSC_HZ: u64 = 1_000_000_000;

/// A system with one emulated 4 MiB domain whose kernel is `code` at 2 MiB.
pub(super) fn emulated_system(code: &[u8], expect: Expect) -> (System, TestMemory) {
    let mut mem = TestMemory::new(FRAMES);
    let mut frames = FrameTable::new(FRAMES);
    frames.add_free(256, FRAMES);
    let mut system = System::new(frames, [0; ENTRIES / 2], 1);
    system.time = TimeBase { clock: TscClock::new(TSC_HZ), boot_tsc: 0, wall_clock_sec: 0 };
    let plan = DomainPlan {
        id: DomainId(0),
        name: "k",
        cmdline: "",
        memory: 4 << 20,
        max_memory: 4 << 20,
        expect,
        weight: 256,
        time_limit_ns: None,
        umip: true,
        mode: Mode::Emulated,
        entry: KERNEL,
        segments: alloc::vec![Segment { vaddr: KERNEL, data: code, mem_size: 0x1000, writable: true, executable: true }],
        time: system.time,
    };
    let d = build(&plan, &mut system.frames, &mut mem, &[0; ENTRIES / 2]).expect("builds");
    system.add_domain(d);
    (system, mem)
}

/// The frame of a #GP raised at `rip` with `regs`.
pub(super) fn gp_at(frame: &GuestRegs, rip: u64) -> GuestRegs {
    GuestRegs { vector: 13, error_code: 0, rip, ..*frame }
}

#[test]
fn an_emulated_kernel_starts_on_a_shadow_root_with_its_own_door_and_selectors() {
    let (mut sys, mut mem) = emulated_system(&[0xf4], Expect::Exit(0));
    let mut frame = GuestRegs::default();
    let next = sys.start(&mut Platform { mem: &mut mem, console: &mut String::new(), tsc: 0 }, &mut frame);
    let Next::Switch { root, door } = next else { panic!("{next:?}") };
    assert_eq!(door, Door::Emulated);
    assert_eq!(mem.read_u64(root), 0, "an empty shadow: filled on demand");
    assert_eq!((frame.rip, frame.rsp, frame.cs, frame.ss), (KERNEL, 0x10000, REAL_CS, REAL_SS));
    assert_eq!(frame.rflags & 0x200, 0x200, "the real IF is on; the virtual one is off");
    assert!(!sys.domains[0].vm.as_ref().unwrap().cpu.interrupts);
}

#[test]
fn page_faults_fill_the_shadow_from_the_guests_identity_map() {
    let (mut sys, mut mem) = emulated_system(&[0xf4], Expect::Exit(0));
    let mut frame = GuestRegs::default();
    let mut out = String::new();
    sys.start(&mut Platform { mem: &mut mem, console: &mut out, tsc: 0 }, &mut frame);
    let mut p = Platform { mem: &mut mem, console: &mut out, tsc: 0 };
    // The first instruction fetch faults on the empty shadow.
    frame.vector = 14;
    frame.error_code = 0x10 | 0x4; // user-mode (ring 3) instruction fetch, not present
    assert!(matches!(sys.on_guest_exception(&mut p, &mut frame, KERNEL), Next::Resume { .. }));
    let vm = sys.domains[0].vm.as_ref().unwrap();
    assert_eq!((vm.exits.shadow_fills, vm.exits.guest_page_faults), (1, 0));
    // Beyond RAM the guest's own tables say no, but it has no IDT yet:
    // a real CPU would triple-fault, so the domain is stopped.
    frame.error_code = 0x4;
    let next = sys.on_guest_exception(&mut p, &mut frame, 0x80_0000);
    assert_eq!(next, Next::Finished { all_as_expected: false });
    assert!(matches!(sys.domains[0].ending, Some(Ending::Crashed(_))));
}

#[test]
fn port_output_reaches_the_console_and_the_debug_exit_ends_the_domain() {
    // out dx, al; out dx, al; out dx, al; out 0xf4, al
    let code = [0xee, 0xee, 0xee, 0xe6, 0xf4];
    let (mut sys, mut mem) = emulated_system(&code, Expect::Exit(7));
    let mut frame = GuestRegs::default();
    let mut out = String::new();
    sys.start(&mut Platform { mem: &mut mem, console: &mut out, tsc: 0 }, &mut frame);
    let mut p = Platform { mem: &mut mem, console: &mut out, tsc: 0 };
    for (i, byte) in b"hi\n".iter().enumerate() {
        frame = GuestRegs { rdx: 0x3f8, rax: u64::from(*byte), ..gp_at(&frame, KERNEL + i as u64) };
        assert_eq!(sys.on_guest_exception(&mut p, &mut frame, 0), Next::RESUME);
        assert_eq!(frame.rip, KERNEL + i as u64 + 1);
    }
    frame = GuestRegs { rax: 7, ..gp_at(&frame, KERNEL + 3) };
    assert_eq!(sys.on_guest_exception(&mut p, &mut frame, 0), Next::Finished { all_as_expected: true });
    assert_eq!(out, "[k] hi\n");
    assert!(sys.domains[0].vm.is_none(), "its virtual machine was freed");
    assert_eq!(sys.domains[0].emulated.unwrap().exits.io, 4, "its counters kept");
    assert_eq!(sys.frames.count_owned(crate::frame_table::Owner::Hypervisor), 0, "its shadows were freed");
    assert!(sys.summary()[2].contains("exits=4 (instructions=0 io=4"), "{:?}", sys.summary());
}

#[test]
fn an_unknown_privileged_instruction_stops_the_domain_with_its_bytes() {
    let (mut sys, mut mem) = emulated_system(&[0x0f, 0x21, 0xc0], Expect::Crash); // mov rax, dr0
    let mut frame = GuestRegs::default();
    let mut out = String::new();
    sys.start(&mut Platform { mem: &mut mem, console: &mut out, tsc: 0 }, &mut frame);
    let mut p = Platform { mem: &mut mem, console: &mut out, tsc: 0 };
    frame = gp_at(&frame, KERNEL);
    assert_eq!(sys.on_guest_exception(&mut p, &mut frame, 0), Next::Finished { all_as_expected: true });
}

/// A kernel that programs the PIC and the PIT, loads an IDT whose vector
/// 0x20 goes to `handler`, enables interrupts and halts.
#[test]
fn a_pit_tick_wakes_a_halted_kernel_through_its_idt() {
    let (mut sys, mut mem) = emulated_system(&[0x90; 16], Expect::Exit(0));
    let mut frame = GuestRegs::default();
    let mut out = String::new();
    sys.start(&mut Platform { mem: &mut mem, console: &mut out, tsc: 0 }, &mut frame);
    // Its IDT at 0x30_0000, the gate of vector 0x20 to 0x20_0800.
    let handler: u64 = 0x20_0800;
    let mut gate = [0u8; 16];
    gate[0..2].copy_from_slice(&(handler as u16).to_le_bytes());
    gate[2..4].copy_from_slice(&0x08u16.to_le_bytes());
    gate[5] = 0x8e;
    gate[6..8].copy_from_slice(&((handler >> 16) as u16).to_le_bytes());
    {
        let d = &sys.domains[0];
        let phys = crate::emulated::guest_phys::GuestPhys::new(&d.frames);
        phys.write(&mut mem, crate::emulated::guest_phys::Gpa(0x30_0000 + 0x20 * 16), &gate).unwrap();
        let vm = sys.domains[0].vm.as_deref_mut().unwrap();
        vm.cpu.idtr = crate::emulated::cpu::TableRegister { base: 0x30_0000, limit: 0xfff };
    }
    let mut p = Platform { mem: &mut mem, console: &mut out, tsc: 0 };
    // Each privileged instruction as the CPU reports it: a #GP at the
    // instruction, whose bytes the test writes first.
    let run = |sys: &mut System, p: &mut Platform<'_, TestMemory, String>, frame: &mut GuestRegs, bytes: &[u8], rax: u64| {
        let rip = KERNEL;
        let d = &sys.domains[0];
        crate::emulated::guest_phys::GuestPhys::new(&d.frames).write(p.mem, crate::emulated::guest_phys::Gpa(rip), bytes).unwrap();
        *frame = GuestRegs { rax, rdx: 0, ..gp_at(frame, rip) };
        sys.on_guest_exception(p, frame, 0)
    };
    for (port, value) in [(0x20u8, 0x11u64), (0x21, 0x20), (0x21, 0x04), (0x21, 0x01), (0x21, 0xfe), (0x43, 0x34), (0x40, 0x9b), (0x40, 0x2e)] {
        run(&mut sys, &mut p, &mut frame, &[0xe6, port], value);
    }
    assert!(sys.timer_dirty, "the PIT's deadline is the platform timer's business");
    let period = sys.domains[0].vm.as_ref().unwrap().devices.pit.period_ns();
    let deadline = sys.next_deadline().expect("the PIT's deadline");
    assert!((period..=period + 6).contains(&deadline), "{deadline} vs {period} (armed a few ticks past, never before)");
    run(&mut sys, &mut p, &mut frame, &[0xfb], 0); // sti
    assert!(sys.domains[0].vm.as_ref().unwrap().cpu.interrupts);
    // hlt with nothing pending: the domain sleeps (nobody else can run).
    assert_eq!(run(&mut sys, &mut p, &mut frame, &[0xf4], 0), Next::Idle);
    // The tick: the kernel wakes in its handler, with IF off and the frame
    // of the interrupted hlt on its stack.
    p.tsc = deadline;
    let next = sys.on_timer(&mut p, &mut frame);
    assert!(matches!(next, Next::Switch { door: Door::Emulated, .. }), "{next:?}");
    assert_eq!(frame.rip, handler);
    let vm = sys.domains[0].vm.as_ref().unwrap();
    assert!(!vm.cpu.interrupts);
    assert_eq!(vm.exits.interrupts, 1);
    let d = &sys.domains[0];
    let phys = crate::emulated::guest_phys::GuestPhys::new(&d.frames);
    let pushed_rip = phys.read_u64(&mem, crate::emulated::guest_phys::Gpa(frame.rsp)).unwrap();
    assert_eq!(pushed_rip, KERNEL + 1, "it resumes after the hlt");
}

mod hostile {
    //! Whatever bytes a hostile emulated kernel faults on, with whatever
    //! registers and virtual CPU state, the hypervisor answers without
    //! panicking: it emulates, reflects, or stops the domain.
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]
        #[test]
        fn no_exit_panics_the_hypervisor(
            code in proptest::collection::vec(any::<u8>(), 1..16),
            prefix in proptest::sample::select(alloc::vec![
                alloc::vec![], alloc::vec![0x0fu8, 0x01], alloc::vec![0x0f, 0x22], alloc::vec![0x0f, 0x20],
                alloc::vec![0x48, 0xcf], alloc::vec![0x48, 0xcb], alloc::vec![0x0f, 0x00], alloc::vec![0x8e],
                alloc::vec![0x48, 0x0f, 0x07], alloc::vec![0x0f, 0x30], alloc::vec![0x0f, 0x32],
            ]),
            regs in proptest::array::uniform16(any::<u64>()),
            vector in proptest::sample::select(alloc::vec![6u64, 11, 13, 14, 0, 3]),
            error_code in any::<u16>(),
            cr2 in any::<u64>(),
            user in any::<bool>(),
            small_rsp in any::<bool>(),
            then_timer in any::<bool>(),
        ) {
            let mut bytes = prefix.clone();
            bytes.extend_from_slice(&code);
            let (mut sys, mut mem) = emulated_system(&bytes, Expect::Crash);
            let mut frame = GuestRegs::default();
            let mut out = String::new();
            sys.start(&mut Platform { mem: &mut mem, console: &mut out, tsc: 0 }, &mut frame);
            {
                let vm = sys.domains[0].vm.as_deref_mut().unwrap();
                vm.cpu.cpl = if user { 3 } else { 0 };
                vm.cpu.idtr = crate::emulated::cpu::TableRegister { base: regs[0] & 0x3f_ffff, limit: regs[1] as u16 };
                (vm.cpu.tss_base, vm.cpu.tss_limit) = (regs[2] & 0x3f_ffff, regs[5] as u32);
                if then_timer {
                    // (Any bit will do: `syscall`/`sysretq` enabled.)
                    vm.cpu.efer |= crate::emulated::cpu::cr::EFER_SCE;
                    vm.cpu.star = regs[3];
                }
            }
            for (n, value) in regs.iter().enumerate() {
                frame.set_gpr(n as u8, *value);
            }
            if small_rsp {
                frame.rsp = regs[4] & 0x3f_fff8;
            }
            frame.vector = vector;
            frame.error_code = u64::from(error_code);
            frame.rip = KERNEL;
            let mut p = Platform { mem: &mut mem, console: &mut out, tsc: 10 };
            // Whatever the guest resumes with, the kernel's `iretq` must
            // take without faulting in ring 0: a canonical RIP, the
            // emulated-mode selectors.
            let resumable = |next: Next, frame: &GuestRegs| {
                !matches!(next, Next::Resume { .. } | Next::Switch { .. })
                    || (crate::emulated::cpu::canonical(frame.rip) && (frame.cs, frame.ss) == (REAL_CS, REAL_SS))
            };
            let next = sys.on_guest_exception(&mut p, &mut frame, cr2);
            prop_assert!(resumable(next, &frame), "{next:?} {frame:x?}");
            if then_timer {
                p.tsc = 50_000_000;
                let next = sys.on_timer(&mut p, &mut frame);
                prop_assert!(resumable(next, &frame), "{next:?} {frame:x?}");
            }
            // Whatever happened, the books balance: a domain that ended
            // holds no frames, shadow frames are only held while it lives.
            let d = &sys.domains[0];
            if !d.is_alive() {
                prop_assert!(d.frames.is_empty());
                prop_assert_eq!(sys.frames.count_owned(crate::frame_table::Owner::Hypervisor), 0);
            }
        }
    }
}

/// An emulated domain's shadow bookkeeping is charged to it at the end of
/// every exit; if it would pass its allowance, the domain is stopped with
/// a report, and everything it held is given back. (Its allowance covers
/// its shadows at their budgets, so only a smaller one shows this.)
#[test]
fn shadows_past_the_allowance_stop_the_domain_alone() {
    for room in [true, false] {
        let (mut sys, mut mem) = emulated_system(&[0xf4], if room { Expect::Exit(0) } else { Expect::Crash });
        let free_at_start = sys.frames.free_count() + sys.domains[0].frames.len() as u64;
        let mut frame = GuestRegs::default();
        let mut out = String::new();
        sys.start(&mut Platform { mem: &mut mem, console: &mut out, tsc: 0 }, &mut frame);
        assert_eq!(sys.check_heap_accounts(), Ok(()), "the root's bookkeeping is charged");
        let mut p = Platform { mem: &mut mem, console: &mut out, tsc: 0 };
        frame.vector = 14;
        frame.error_code = 0x10 | 0x4;
        assert!(matches!(sys.on_guest_exception(&mut p, &mut frame, KERNEL), Next::Resume { .. }));
        assert_eq!(sys.check_heap_accounts(), Ok(()), "so is the fill's");
        let before = sys.domains[0].heap.charged();
        if !room {
            // An allowance with no room left: the next fill cannot be charged.
            let mut full = crate::heap_account::HeapAccount::new(before);
            full.charge(before).unwrap();
            sys.domains[0].heap = full;
        }
        // Writes to fresh pages: each fill notes a writable leaf in the
        // reverse map, and every few the bookkeeping's bound grows.
        let mut next = Next::RESUME;
        for page in 1..16u64 {
            frame.error_code = 0x2 | 0x4;
            next = sys.on_guest_exception(&mut p, &mut frame, page * 0x1000);
            if sys.domains[0].heap.charged() != before || !matches!(next, Next::Resume { .. }) {
                break;
            }
        }
        if room {
            assert!(matches!(next, Next::Resume { .. }), "{next:?}");
            assert!(sys.domains[0].heap.charged() > before, "the fills were charged");
            assert_eq!(sys.check_heap_accounts(), Ok(()));
            continue;
        }
        assert_eq!(next, Next::Finished { all_as_expected: true });
        assert!(matches!(sys.domains[0].ending, Some(Ending::Crashed(_))));
        assert_eq!(sys.domains[0].heap.charged(), 0, "everything it held was given back");
        assert_eq!(sys.frames.free_count(), free_at_start, "and every frame");
    }
}
