//! Fidelity tests from the second review of trap-and-emulate: each drives
//! the system with an emulated kernel (or its user process) doing what a
//! real CPU answers in a particular way, and checks the guest sees that
//! answer, not a stop of the domain or a different fault.

use super::super::emulated_regression_tests::{assert_safe_to_return, set_gate, started, write_guest, GP_HANDLER, IDT};
use super::super::emulated_tests::KERNEL;
use super::super::{Next, Platform, System};
use crate::emulated::guest_phys::{Gpa, GuestPhys};
use crate::machine_memory::{MachineMemory, TestMemory};
use crate::manifest::Expect;
use crate::vcpu::GuestRegs;
use alloc::string::String;

/// Where the tests put the guest's TSS, and the kernel stack it names.
const TSS: u64 = 0x30_8000;
const RSP0: u64 = 0x3f_8000;

/// `n` words of the guest's memory at `va` (its RAM is identity-mapped).
fn words(sys: &System, mem: &TestMemory, va: u64, n: u64) -> alloc::vec::Vec<u64> {
    let phys = GuestPhys::new(&sys.domains[0].frames);
    (0..n).map(|i| phys.read_u64(mem, Gpa(va + 8 * i)).unwrap()).collect()
}

/// Puts the guest in its user mode (virtual CPL 3), with a TSS whose RSP0
/// is `RSP0`.
fn to_user_mode(sys: &mut System, mem: &mut TestMemory) {
    write_guest(sys, mem, TSS + 4, &RSP0.to_le_bytes());
    let vm = sys.domains[0].vm.as_deref_mut().unwrap();
    (vm.cpu.cpl, vm.cpu.cs, vm.cpu.ss, vm.cpu.tss_base, vm.cpu.tss_limit) = (3, 0x23, 0x1b, TSS, 0x67);
}

/// Runs one exit of the guest with `frame`, as the CPU raised it.
fn exit(sys: &mut System, mem: &mut TestMemory, frame: &mut GuestRegs, cr2: u64) -> Next {
    let next = sys.on_guest_exception(&mut Platform { mem, console: &mut String::new(), tsc: 0 }, frame, cr2);
    assert_safe_to_return(next, frame);
    next
}

/// Review item: `int3` from the guest's user mode reached the hypervisor's
/// own DPL-3 gate and was delivered as an exception, whatever the DPL of
/// the guest's gate. It is a software interrupt: a DPL-0 gate gives #GP
/// naming the gate, at the `int3`.
#[test]
fn int3_from_user_mode_respects_the_guests_gate_dpl() {
    let (mut sys, mut mem, frame) = started(&[0xcc], Expect::Exit(0));
    to_user_mode(&mut sys, &mut mem);
    set_gate(&mut sys, &mut mem, 3, 0x20_0900); // DPL 0
    let mut f = GuestRegs { vector: 3, error_code: 0, rip: KERNEL + 1, ..frame };
    exit(&mut sys, &mut mem, &mut f, 0);
    assert_eq!(f.rip, GP_HANDLER);
    assert_eq!(words(&sys, &mem, f.rsp, 3), [3 * 8 + 2, KERNEL, 0x23], "#GP names gate 3; points at the int3");
    // A DPL-3 gate lets it through, returning after the int3.
    to_user_mode(&mut sys, &mut mem);
    write_guest(&sys, &mut mem, IDT + 3 * 16 + 5, &[0xee]);
    let mut f = GuestRegs { vector: 3, error_code: 0, rip: KERNEL + 1, ..frame };
    exit(&mut sys, &mut mem, &mut f, 0);
    assert_eq!(f.rip, 0x20_0900);
    assert_eq!(words(&sys, &mem, f.rsp, 2), [KERNEL + 1, 0x23]);
}

/// Review item: `wrmsr` to EFER changing NXE kept the shadows built under
/// the old NXE until the next CR3 load: with NXE going off, shadow leaves
/// kept refusing execution where the guest's NX bit no longer meant
/// anything (and the reverse). A real CPU reinterprets every entry at once.
#[test]
fn changing_efer_nxe_drops_the_shadows_at_once() {
    use crate::emulated::cpu::{cr, msr};
    let (mut sys, mut mem, frame) = started(&[0x0f, 0x30], Expect::Exit(0));
    // Fill the shadow for the kernel's code (a fetch fault).
    let mut f = GuestRegs { vector: 14, error_code: 0x15, rip: KERNEL, ..frame };
    exit(&mut sys, &mut mem, &mut f, KERNEL);
    let resets = sys.domains[0].vm.as_ref().unwrap().shadow.stats().resets;
    let efer = cr::EFER_LME | cr::EFER_SCE; // NXE off
    let mut f = GuestRegs { vector: 13, rip: KERNEL, rcx: u64::from(msr::EFER), rax: efer, rdx: 0, ..frame };
    let next = exit(&mut sys, &mut mem, &mut f, 0);
    let Next::Switch { root, .. } = next else { panic!("the shadow root must be reloaded: {next:?}") };
    assert_eq!(mem.read_u64(root), 0, "a new, empty shadow");
    let vm = sys.domains[0].vm.as_ref().unwrap();
    assert_eq!(vm.shadow.stats().resets, resets + 1);
    assert!(!vm.cpu.nxe());
    assert_eq!(f.rip, KERNEL + 2);
}

/// Sets U/S along the guest's own walk of `va`, so its user mode may use
/// the page (the loader maps everything for the kernel only).
fn open_to_user(sys: &System, mem: &mut TestMemory, va: u64) {
    use crate::paging::{flags::USER, table_index, ADDRESS_MASK};
    let phys = GuestPhys::new(&sys.domains[0].frames);
    let mut table = sys.domains[0].vm.as_ref().unwrap().cpu.cr3 & ADDRESS_MASK;
    for level in (1..=4u8).rev() {
        let slot = Gpa(table + table_index(va, level) as u64 * 8);
        let entry = phys.read_u64(mem, slot).unwrap();
        phys.write_u64(mem, slot, entry | USER).unwrap();
        if level > 1 && entry & crate::paging::flags::HUGE != 0 {
            return;
        }
        table = entry & ADDRESS_MASK;
    }
}

/// Review item: every privileged instruction of a user process went to its
/// kernel as the fault the CPU raised, even those a real CPU lets user mode
/// run: `sgdt` with the guest's CR4.UMIP clear, an `iretq` to its own level.
#[test]
fn a_user_process_runs_what_a_real_cpu_lets_it_run() {
    use crate::emulated::cpu::cr;
    let code = [0x0f, 0x01, 0x03, 0x48, 0xcf]; // sgdt [rbx]; iretq
    let (mut sys, mut mem, frame) = started(&code, Expect::Exit(0));
    let (data, stack) = (0x3e_0000u64, 0x3e_1000u64);
    for va in [KERNEL, data, stack] {
        open_to_user(&sys, &mut mem, va);
    }
    to_user_mode(&mut sys, &mut mem);
    let gdtr = sys.domains[0].vm.as_ref().unwrap().cpu.gdtr;
    let mut f = GuestRegs { vector: 13, error_code: 0, rip: KERNEL, rbx: data, ..frame };
    exit(&mut sys, &mut mem, &mut f, 0);
    assert_eq!(f.rip, KERNEL + 3, "sgdt ran");
    let stored = words(&sys, &mem, data, 2);
    assert_eq!(stored[0] & 0xffff, u64::from(gdtr.limit));
    assert_eq!((stored[0] >> 16) | (stored[1] << 48), gdtr.base);
    // An iretq to its own level (the CPU raised #NP on the user selector).
    let ret: [u64; 5] = [KERNEL, 0x23, 0x202, stack + 0x800, 0x1b];
    let bytes: alloc::vec::Vec<u8> = ret.iter().flat_map(|w| w.to_le_bytes()).collect();
    write_guest(&sys, &mut mem, stack, &bytes);
    let mut f = GuestRegs { vector: 11, error_code: 0x20, rip: KERNEL + 3, rsp: stack, ..f };
    exit(&mut sys, &mut mem, &mut f, 0);
    assert_eq!((f.rip, f.rsp), (KERNEL, stack + 0x800), "returned");
    assert_eq!(sys.domains[0].vm.as_ref().unwrap().cpu.cpl, 3);
    // With the guest's UMIP set, sgdt is its kernel's #GP.
    sys.domains[0].vm.as_deref_mut().unwrap().cpu.cr4 |= cr::CR4_UMIP;
    let mut f = GuestRegs { vector: 13, error_code: 0, rip: KERNEL, rbx: data, ..f };
    exit(&mut sys, &mut mem, &mut f, 0);
    assert_eq!(f.rip, GP_HANDLER);
    assert_eq!(words(&sys, &mem, f.rsp, 2), [0, KERNEL]);
}

/// The RFLAGS bits ring 3 can set with `popf` on the real CPU (status
/// flags, TF, DF, NT, AC, ID): what a real exit frame may hold besides IF
/// and bit 1.
const RING3_SETTABLE: u64 = 0x24_4dd5;
/// RFLAGS bits the hypervisor must never return to a guest with: IOPL
/// (ports of the machine), VM, VIF, VIP, and everything above ID.
const NEVER_REAL: u64 = (3 << 12) | (1 << 17) | (1 << 19) | (1 << 20) | !0x3f_ffff;

/// Review property: whatever a hostile guest (kernel or user process) does
/// at one exit, with any virtual IOPL, TSS, IDT gates or stack contents,
/// the frame the hypervisor returns with keeps the real IF on and the real
/// IOPL at 0, and a user process never reaches virtual CPL 0 except at one
/// of its kernel's entry points, nor raises its virtual IOPL.
mod real_flags {
    use super::*;
    use crate::emulated::cpu::{cr, TableRegister};
    use proptest::prelude::*;

    const HANDLERS: [u64; 2] = [0x20_0800, 0x20_0900];

    proptest! {
        #![proptest_config(ProptestConfig { cases: 768, ..ProptestConfig::default() })]
        #[test]
        fn the_real_iopl_stays_0_and_the_real_if_1(
            code in proptest::sample::select(alloc::vec![
                alloc::vec![0x48u8, 0xcf], alloc::vec![0x48, 0xcb], alloc::vec![0x48, 0x0f, 0x07],
                alloc::vec![0xfa], alloc::vec![0xfb], alloc::vec![0xee], alloc::vec![0xef], alloc::vec![0xec],
                alloc::vec![0xe6, 0xf4], alloc::vec![0xcd, 0x80], alloc::vec![0xcd, 0x0d], alloc::vec![0xcc],
                alloc::vec![0x0f, 0x01, 0x03], alloc::vec![0x0f, 0x00, 0xc8], alloc::vec![0xf4],
            ]),
            vector in proptest::sample::select(alloc::vec![13u64, 11, 3, 14, 0x100]),
            user in any::<bool>(),
            iopl in 0u8..4,
            interrupts in any::<bool>(),
            popped in proptest::array::uniform5(any::<u64>()),
            popped_small in any::<bool>(),
            gates in proptest::array::uniform8((0usize..2, any::<u8>(), 0u8..8)),
            tss_limit in any::<u32>(),
            bitmap_base in any::<u16>(),
            flags in any::<u64>(),
            rdx in any::<u64>(),
            sfmask in any::<u64>(),
        ) {
            let (mut sys, mut mem, frame) = started(&code, Expect::Exit(0));
            let stack = 0x3e_1000u64;
            for va in [KERNEL, stack, TSS] {
                open_to_user(&sys, &mut mem, va);
            }
            // The guest's IDT: gates with any attributes to known handlers.
            for (i, &(h, attributes, ist)) in gates.iter().enumerate() {
                let vector = [3u8, 4, 8, 10, 11, 12, 13, 14][i];
                let mut gate = [0u8; 16];
                gate[0..2].copy_from_slice(&(HANDLERS[h] as u16).to_le_bytes());
                gate[2..4].copy_from_slice(&0x08u16.to_le_bytes());
                (gate[4], gate[5]) = (ist, attributes);
                gate[6..8].copy_from_slice(&((HANDLERS[h] >> 16) as u16).to_le_bytes());
                write_guest(&sys, &mut mem, IDT + u64::from(vector) * 16, &gate);
            }
            let mut gate80 = [0u8; 16];
            gate80[0..2].copy_from_slice(&(HANDLERS[1] as u16).to_le_bytes());
            gate80[5] = 0xee;
            gate80[6..8].copy_from_slice(&((HANDLERS[1] >> 16) as u16).to_le_bytes());
            write_guest(&sys, &mut mem, IDT + 0x80 * 16, &gate80);
            // A TSS with stacks and an I/O bitmap base, and what an iretq or lretq pops.
            write_guest(&sys, &mut mem, TSS + 4, &RSP0.to_le_bytes());
            write_guest(&sys, &mut mem, TSS + 0x66, &bitmap_base.to_le_bytes());
            let mut words_ = popped;
            if popped_small {
                words_[0] = KERNEL + (words_[0] & 0xfff);
                words_[1] &= 0xffff;
            }
            let bytes: alloc::vec::Vec<u8> = words_.iter().flat_map(|w| w.to_le_bytes()).collect();
            write_guest(&sys, &mut mem, stack, &bytes);
            {
                let vm = sys.domains[0].vm.as_deref_mut().unwrap();
                let cpu = &mut vm.cpu;
                cpu.idtr = TableRegister { base: IDT, limit: 0xfff };
                (cpu.iopl, cpu.interrupts, cpu.tss_base, cpu.tss_limit) = (iopl, interrupts, TSS, tss_limit);
                (cpu.efer, cpu.lstar, cpu.sfmask, cpu.star) = (cpu.efer | cr::EFER_SCE, 0x20_0a00, sfmask & 0xffff_ffff, 0x0013_0008 << 32);
                if user {
                    (cpu.cpl, cpu.cs, cpu.ss) = (3, 0x23, 0x1b);
                }
            }
            let before = sys.domains[0].vm.as_ref().unwrap().cpu.clone();
            let len = code.len() as u64;
            let mut f = GuestRegs {
                vector,
                error_code: 0,
                rip: if matches!(vector, 3 | 0x100) { KERNEL + len } else { KERNEL },
                rsp: stack,
                rdx,
                rax: 0x41,
                rcx: KERNEL + len,
                r11: 0x202 | (flags & RING3_SETTABLE),
                rflags: 0x202 | (flags & RING3_SETTABLE),
                ..frame
            };
            let next = if vector == 0x100 {
                sys.on_hypercall(&mut Platform { mem: &mut mem, console: &mut String::new(), tsc: 0 }, &mut f)
            } else {
                sys.on_guest_exception(&mut Platform { mem: &mut mem, console: &mut String::new(), tsc: 0 }, &mut f, 0)
            };
            assert_safe_to_return(next, &f);
            if matches!(next, Next::Resume { .. } | Next::Switch { .. }) {
                prop_assert!(f.rflags & (1 << 9) != 0, "the real IF is off: {:#x}", f.rflags);
                prop_assert!(f.rflags & 2 != 0);
                prop_assert_eq!(f.rflags & NEVER_REAL, 0, "{:#x}", f.rflags);
                let cpu = &sys.domains[0].vm.as_ref().unwrap().cpu;
                prop_assert!(cpu.cpl == 0 || cpu.cpl == 3);
                if user {
                    prop_assert_eq!(cpu.iopl & !before.iopl, 0, "a user process raised its IOPL");
                    if cpu.cpl == 0 {
                        prop_assert!(HANDLERS.contains(&f.rip) || f.rip == before.lstar, "entered its kernel at {:#x}", f.rip);
                    }
                }
            }
        }
    }
}

/// `mov rax, cr5` names a control register that does not exist: at CPL 0
/// a real CPU raises #UD, so the emulated kernel gets its own #UD through
/// its IDT, pointing at the instruction, and runs on.
#[test]
fn a_control_register_that_does_not_exist_is_the_kernels_invalid_opcode() {
    const UD_HANDLER: u64 = 0x20_0a00;
    let (mut sys, mut mem, frame) = started(&[0x0f, 0x20, 0xe8], Expect::Exit(0));
    set_gate(&mut sys, &mut mem, 6, UD_HANDLER);
    let mut f = GuestRegs { vector: 13, error_code: 0, rip: KERNEL, ..frame };
    let next = exit(&mut sys, &mut mem, &mut f, 0);
    assert!(matches!(next, Next::Resume { .. } | Next::Switch { .. }), "{next:?}");
    assert_eq!(f.rip, UD_HANDLER);
    assert_eq!(words(&sys, &mem, f.rsp, 2), [KERNEL, 0x08], "no error code; at the mov");
    assert!(sys.domains[0].ending.is_none(), "it runs on");
}
