//! `pg-probe`: the instructions that made x86 not classically virtualizable.
//!
//! The idea shown: Popek and Goldberg (1974) require every *sensitive*
//! instruction (one that reads or changes privileged state) to be
//! *privileged* (to trap outside ring 0), so that a hypervisor sees them
//! all. Robin and Irvine (2000) listed the x86 ones that are sensitive but
//! do not trap. This guest kernel runs in ring 3 under Parvus and executes
//! each, printing what it observed: a trap (the hypervisor delivered #GP to
//! the guest's handler, which skips the instruction), or the value it read.
//! Run it with CR4.UMIP on (the default) and off (`umip = false` in the
//! manifest): UMIP makes the five store instructions (SGDT, SIDT, SLDT,
//! SMSW, STR) trap; PUSHF/POPF and the segment-register reads stay holes,
//! which only binary translation or paravirtualization close. (The native
//! and trap-and-emulate columns of the table come with the workload kernel.)
#![no_std]
#![no_main]

use core::arch::asm;
use core::sync::atomic::{AtomicBool, Ordering};
use parvus_guest_sdk::trap::{self, Trap};
use parvus_guest_sdk::{println, status, StartInfo};

parvus_guest_sdk::entry!(main);

/// A probe is running and expects that it may trap.
static PROBING: AtomicBool = AtomicBool::new(false);
/// The running probe trapped.
static TRAPPED: AtomicBool = AtomicBool::new(false);

/// Length of every probe instruction that may trap (all are 3-byte
/// `0F 00 /r` or `0F 01 /r` forms with a register or `[rdi]` operand).
const PROBE_LEN: u64 = 3;

/// #GP from a probe: note it and skip the instruction.
fn on_trap(t: &mut Trap<'_>) {
    if t.frame.vector == 13 && PROBING.load(Ordering::Relaxed) {
        TRAPPED.store(true, Ordering::Relaxed);
        t.frame.rip += PROBE_LEN;
        return;
    }
    println!("pg-probe: unexpected trap, vector {} at {:#x}", t.frame.vector, t.frame.rip);
    parvus_guest_sdk::hypercall::exit(1);
}

/// Runs `probe`, returning `None` if it trapped, else what it read.
fn run(probe: impl FnOnce() -> u64) -> Option<u64> {
    TRAPPED.store(false, Ordering::Relaxed);
    PROBING.store(true, Ordering::Relaxed);
    let value = probe();
    PROBING.store(false, Ordering::Relaxed);
    (!TRAPPED.load(Ordering::Relaxed)).then_some(value)
}

fn report(name: &str, what: &str, result: Option<u64>) {
    match result {
        None => println!("pg-probe: {name:<6} trapped (#GP): the hypervisor sees it"),
        Some(v) => println!("pg-probe: {name:<6} ran without trapping: {what} = {v:#x}"),
    }
}

fn main(_start: &'static StartInfo) -> u64 {
    if let Err(e) = trap::install(on_trap) {
        println!("pg-probe: cannot install a trap handler: {e}");
        return 1;
    }
    let mut table = [0u8; 10];
    // Each probe only reads CPU state into the named register or the
    // 10-byte buffer; if it traps, the handler skips exactly its 3 bytes
    // (checked with objdump: 0F 01 07, 0F 01 0F, 0F 00 C0, 0F 01 E0, 0F 00 C8).
    let sgdt = run(|| {
        // SAFETY: stores at most 10 bytes into `table` (10 bytes long), or traps and is skipped.
        unsafe { asm!("sgdt [rdi]", in("rdi") table.as_mut_ptr(), options(nostack)) };
        u64::from_le_bytes(table[2..10].try_into().unwrap_or([0; 8]))
    });
    report("SGDT", "GDT base", sgdt);
    table = [0; 10];
    let sidt = run(|| {
        // SAFETY: stores at most 10 bytes into `table` (10 bytes long), or traps and is skipped.
        unsafe { asm!("sidt [rdi]", in("rdi") table.as_mut_ptr(), options(nostack)) };
        u64::from_le_bytes(table[2..10].try_into().unwrap_or([0; 8]))
    });
    report("SIDT", "IDT base", sidt);
    let sldt = run(|| {
        let mut v: u64 = 0;
        // SAFETY: writes only eax (declared), or traps and is skipped.
        unsafe { asm!("sldt eax", inout("rax") v, options(nostack)) };
        v & 0xffff
    });
    report("SLDT", "LDT selector", sldt);
    let smsw = run(|| {
        let mut v: u64 = 0;
        // SAFETY: writes only eax (declared), or traps and is skipped.
        unsafe { asm!("smsw eax", inout("rax") v, options(nostack)) };
        v & 0xffff_ffff
    });
    report("SMSW", "CR0 low bits", smsw);
    let str_ = run(|| {
        let mut v: u64 = 0;
        // SAFETY: writes only eax (declared), or traps and is skipped.
        unsafe { asm!("str eax", inout("rax") v, options(nostack)) };
        v & 0xffff
    });
    report("STR", "task register", str_);

    // The holes UMIP does not close.
    let (before, after): (u64, u64);
    // SAFETY: pushes and pops flags on our own stack; popf in ring 3 cannot
    // change IF or IOPL (that is the point), only arithmetic flags.
    unsafe {
        asm!(
            "pushfq",
            "pop {b}",
            "mov {a}, {b}",
            "and {a}, {mask}",
            "push {a}",
            "popfq",
            "pushfq",
            "pop {a}",
            b = out(reg) before,
            a = out(reg) after,
            mask = const !(1u64 << 9),
        );
    }
    println!(
        "pg-probe: PUSHF  ran without trapping: IF = {} (the guest kernel sees interrupts as they really are)",
        (before >> 9) & 1
    );
    println!(
        "pg-probe: POPF   clearing IF ran without trapping and was ignored: IF = {} afterwards",
        (after >> 9) & 1
    );
    let (cs, ss): (u64, u64);
    // SAFETY: reads the segment selectors into registers.
    unsafe { asm!("mov {c:x}, cs", "mov {s:x}, ss", c = out(reg) cs, s = out(reg) ss) };
    println!("pg-probe: MOV CS ran without trapping: CS = {:#x}, so the kernel can see it runs in ring {}", cs & 0xffff, cs & 3);
    println!("pg-probe: MOV SS ran without trapping: SS = {:#x}", ss & 0xffff);
    let (lar, lsl, verr, verw): (u64, u64, u8, u8);
    // SAFETY: queries the access rights and limit of our own code selector.
    unsafe {
        asm!(
            "lar {r}, {sel}",
            "lsl {l}, {sel}",
            "verr {sel:x}",
            "setz {vr}",
            "verw {sel:x}",
            "setz {vw}",
            sel = in(reg) cs & 0xffff,
            r = out(reg) lar,
            l = out(reg) lsl,
            vr = out(reg_byte) verr,
            vw = out(reg_byte) verw,
        );
    }
    println!("pg-probe: LAR    ran without trapping: CS access rights = {:#x} (DPL {})", (lar >> 8) & 0xffff, (lar >> 13) & 3);
    println!("pg-probe: LSL    ran without trapping: CS limit = {:#x}", lsl);
    println!("pg-probe: VERR   ran without trapping: CS readable = {}", verr);
    println!("pg-probe: VERW   ran without trapping: CS writable = {}", verw);
    let leaked = [sgdt, sidt, sldt, smsw, str_].iter().filter(|r| r.is_some()).count();
    println!("pg-probe: {leaked} of the 5 store instructions ran without trapping; PUSHF, POPF, MOV from CS/SS, LAR, LSL, VERR and VERW never trap");
    status::SUCCESS
}
