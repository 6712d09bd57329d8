//! Host tests of the faults an emulated kernel's own handlers get: where
//! a real CPU raises an exception in ring 0, the kernel gets that very
//! exception through its IDT, neither another one nor a stop.
//!
//! Two rules are at stake:
//! - the operands of every emulated instruction are checked for canonical
//!   form before any access (`emulated::address`): #GP(0), or #SS(0)
//!   through SS, as the CPU raises them, never a #PF from a page walk of
//!   an address no walk can name;
//! - a #GP raised by an instruction that does not trap for privilege (a
//!   load, a store, an SSE operation) is the kernel's own: the CPU raises
//!   it in ring 0 just the same, so it is delivered as raised.

use super::emulated_regression_tests::{set_gate, started, GP_HANDLER};
use super::emulated_tests::{gp_at, KERNEL};
use super::*;
use crate::emulated::guest_phys::{Gpa, GuestPhys};
use crate::machine_memory::TestMemory;
use crate::manifest::Expect;

/// The kernel's #SS handler.
const SS_HANDLER: u64 = GP_HANDLER + 0x200;
/// Bit 47 set, 63..48 clear: the first non-canonical address.
const NON_CANONICAL: u64 = 0x0000_8000_0000_0000;
/// A kernel stack in its RAM.
const STACK: u64 = 0x3f_0000;

/// The kernel runs `code` at `KERNEL`; the CPU reports exception `vector`
/// (error code 0) there, with the registers `regs` sets. Returns the
/// system, its memory, what the hypervisor does next and the registers
/// the kernel continues with.
fn exit(code: &[u8], vector: u64, regs: impl FnOnce(&mut GuestRegs)) -> (System, TestMemory, Next, GuestRegs) {
    let (mut sys, mut mem, frame) = started(code, Expect::Exit(0));
    set_gate(&mut sys, &mut mem, 12, SS_HANDLER);
    let mut frame = GuestRegs { vector, rsp: STACK, ..gp_at(&frame, KERNEL) };
    regs(&mut frame);
    let next = sys.on_guest_exception(&mut Platform { mem: &mut mem, console: &mut String::new(), tsc: 0 }, &mut frame, 0);
    (sys, mem, next, frame)
}

/// The error code on top of the kernel's stack.
fn pushed(sys: &System, mem: &TestMemory, frame: &GuestRegs) -> u64 {
    GuestPhys::new(&sys.domains[0].frames).read_u64(mem, Gpa(frame.rsp)).unwrap()
}

/// Bug: the emulator walked the guest's tables with a non-canonical
/// operand address (whose table indices name another address) and gave
/// the kernel a #PF for `sldt [rdi]`; a real CPU raises #GP(0), and #SS(0)
/// for a reference through SS.
#[test]
fn a_non_canonical_operand_of_an_emulated_instruction_is_the_kernels_gp_or_ss() {
    for (code, rdi, rbp, handler) in [
        (&[0x0f, 0x00, 0x07][..], NON_CANONICAL, 0, GP_HANDLER), // sldt [rdi]
        (&[0x0f, 0x00, 0x45, 0x00], 0, NON_CANONICAL, SS_HANDLER), // sldt [rbp]
        (&[0x0f, 0x01, 0x17], NON_CANONICAL - 4, 0, GP_HANDLER),   // lgdt [rdi], 10 bytes across the top
    ] {
        let (sys, mem, next, frame) = exit(code, 13, |r| (r.rdi, r.rbp) = (rdi, rbp));
        assert!(sys.domains[0].is_alive(), "{code:02x?}: {next:?}");
        assert_eq!(frame.rip, handler, "{code:02x?}");
        assert_eq!(pushed(&sys, &mem, &frame), 0, "error code 0");
        let vm = sys.domains[0].vm.as_ref().unwrap();
        assert_eq!((vm.cpu.cr2, vm.exits.guest_page_faults), (0, 0), "no page fault");
    }
}

/// Bug: a #GP from an instruction that does not trap for privilege
/// stopped the kernel ("it ran ... which cannot be emulated", or "the
/// decoder says ..."); on a real CPU it is the kernel's own #GP, raised in
/// ring 0 just the same: a store or a load through a non-canonical
/// pointer, a `movaps` to an address that is not 16-byte aligned.
#[test]
fn a_gp_from_an_instruction_that_does_not_trap_for_privilege_is_the_kernels_own() {
    for (name, code, rdi) in [
        ("mov [rdi], rax (a store the decoder knows)", &[0x48, 0x89, 0x07][..], NON_CANONICAL),
        ("movaps [rdi], xmm0 (misaligned)", &[0x0f, 0x29, 0x07], 0x3f_0008),
        ("mov rax, [rdi] (a load it does not)", &[0x48, 0x8b, 0x07], NON_CANONICAL),
        ("lar eax, [rdi]", &[0x0f, 0x02, 0x07], NON_CANONICAL),
        ("mov [rdi], ds", &[0x8c, 0x1f], NON_CANONICAL),
    ] {
        let (sys, mem, next, frame) = exit(code, 13, |r| r.rdi = rdi);
        assert!(sys.domains[0].is_alive(), "{name}: {next:?}");
        assert_eq!(frame.rip, GP_HANDLER, "{name}");
        assert_eq!(pushed(&sys, &mem, &frame), 0, "{name}: the CPU's error code");
    }
    // A privileged instruction the emulator does not know still stops the
    // kernel: in ring 0 it would not have faulted.
    let (sys, _, next, _) = exit(&[0x0f, 0x01, 0xd1], 13, |_| {}); // xsetbv
    assert_eq!(next, Next::Finished { all_as_expected: false });
    assert!(!sys.domains[0].is_alive());
}

/// Bug: `lldt` of any non-null selector stopped the kernel ("only the null
/// LDT is supported"), though one that names no LDT is the kernel's
/// #GP(selector) on a real CPU.
#[test]
fn lldt_of_a_selector_that_names_no_ldt_is_the_kernels_gp() {
    let (sys, mem, next, frame) = exit(&[0x0f, 0x00, 0xd0], 13, |r| r.rax = 0x7f8); // lldt ax, far beyond the GDT
    assert!(sys.domains[0].is_alive(), "{next:?}");
    assert_eq!(frame.rip, GP_HANDLER);
    assert_eq!(pushed(&sys, &mem, &frame), 0x7f8, "#GP(selector)");
}
