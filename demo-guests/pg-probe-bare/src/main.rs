//! `pg-probe-bare`: the Popek-Goldberg probe as an unmodified kernel.
//!
//! The idea shown: Popek and Goldberg (1974) call an instruction
//! *sensitive* if it reads or changes privileged state, and *privileged* if
//! it traps outside ring 0; trap-and-emulate works only if every sensitive
//! instruction is privileged. Robin and Irvine (2000) listed the x86
//! instructions that are sensitive but not privileged. This kernel runs
//! them in what it believes is ring 0 and checks each against what it set
//! up itself:
//!
//! - its own GDT (TR = 0x30, not the hypervisor's 0x28) and IDT, loaded by
//!   bare-rt before `main`, and its CR0, read with `mov rax, cr0` (a
//!   privileged instruction, so under trap-and-emulate the answer is the
//!   kernel's virtual CR0: the truth it should see);
//! - the store instructions SGDT, SIDT, SLDT, SMSW, STR: do they show the
//!   kernel's tables, selectors and CR0, or the host's?
//! - PUSHF after `cli` and POPF clearing IF: do they see and change the
//!   kernel's interrupt flag, as in ring 0?
//! - MOV from CS and SS: the kernel's selectors, with RPL 0?
//! - LAR, LSL, VERR, VERW on its own ring-0 selectors: do they answer as
//!   in ring 0, from its own GDT?
//!
//! Each row reads `pg-probe: <NAME> <what it observed> -> <verdict>`, the
//! verdict being `as on bare metal`, `LEAKS the host's value` or `WRONG`
//! (the instruction did not do what it does in ring 0). Natively (booted by
//! the boot shim) all 13 rows are `as on bare metal`; under trap-and-emulate
//! the rows show which holes UMIP closes (the five stores, which then trap
//! and are emulated) and which it does not. The kernel exits 0 once every
//! row is printed, whatever they say: the scenarios check the rows.
#![no_std]
#![no_main]

mod probes;

use core::fmt;

use bare_rt::gdt::{self, KERNEL_CS, KERNEL_DS, TSS_SELECTOR};
use bare_rt::{cpu, idt, println, status, BootInfo};
use probes::{Outcome, SelectorQuery, TableRegister};
use x86_64::PrivilegeLevel;

bare_rt::entry!(main);

/// #GP and #UD, the faults a probe might raise under a hypervisor.
const GENERAL_PROTECTION: u8 = 13;
const INVALID_OPCODE: u8 = 6;

/// The number of rows.
const PROBES: usize = 13;

/// What a row concludes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    /// The instruction did what it does in ring 0 on a real CPU.
    AsOnBareMetal,
    /// It showed a value that is not the one this kernel set.
    LeaksHostValue,
    /// It did not do what it does in ring 0 (faulted, ignored a change,
    /// or refused the kernel's own selectors).
    Wrong,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::AsOnBareMetal => "as on bare metal",
            Verdict::LeaksHostValue => "LEAKS the host's value",
            Verdict::Wrong => "WRONG",
        })
    }
}

/// Counts the rows that behaved as on bare metal.
struct Tally(usize);

impl Tally {
    fn row(&mut self, name: &str, observed: fmt::Arguments<'_>, verdict: Verdict) {
        println!("pg-probe: {name} {observed} -> {verdict}");
        if verdict == Verdict::AsOnBareMetal {
            self.0 += 1;
        }
    }

    /// A row for a probe that may fault: a fault is always `WRONG`.
    fn outcome<T>(&mut self, name: &str, outcome: Outcome<T>, judge: impl FnOnce(&mut Self, T)) {
        match outcome {
            Outcome::Ran(value) => judge(self, value),
            Outcome::Faulted(vector) => {
                self.row(name, format_args!("faulted with vector {vector}"), Verdict::Wrong)
            }
        }
    }

    /// `AsOnBareMetal` if `observed == expected`, else `LeaksHostValue`.
    fn leak_unless(observed: impl PartialEq<u64>, expected: u64) -> Verdict {
        if observed == expected {
            Verdict::AsOnBareMetal
        } else {
            Verdict::LeaksHostValue
        }
    }
}

/// A descriptor of this kernel's own GDT (bare-rt's), by selector.
fn own_descriptor(selector: u16) -> u64 {
    gdt::descriptor(usize::from(selector >> 3)).unwrap_or(0)
}

/// What `lar` returns for a descriptor: the access byte and the flags
/// nibble, in place (bits 8-15 and 20-23).
fn access_rights(descriptor: u64) -> u64 {
    (descriptor >> 32) & 0x00f0_ff00
}

/// What `lsl` returns for a descriptor: the limit in bytes, scaled by the
/// granularity bit.
fn byte_limit(descriptor: u64) -> u64 {
    let limit = (descriptor & 0xffff) | ((descriptor >> 32) & 0xf_0000);
    if descriptor & (1 << 55) != 0 {
        (limit << 12) | 0xfff
    } else {
        limit
    }
}

/// Whether a ring-0 `verr` (`verw`) accepts a segment descriptor: a code
/// or data segment that is readable (writable).
fn readable(descriptor: u64) -> bool {
    let (system, code, rw_bit) = (descriptor & (1 << 44) == 0, descriptor & (1 << 43) != 0, descriptor & (1 << 41) != 0);
    !system && (!code || rw_bit)
}

fn writable(descriptor: u64) -> bool {
    let (system, code, rw_bit) = (descriptor & (1 << 44) == 0, descriptor & (1 << 43) != 0, descriptor & (1 << 41) != 0);
    !system && !code && rw_bit
}

fn table_row(t: &mut Tally, name: &str, what: &str, outcome: Outcome<TableRegister>, own: TableRegister) {
    t.outcome(name, outcome, |t, seen| {
        if seen == own {
            t.row(name, format_args!("base=its own {what}, limit={:#x}", seen.limit), Verdict::AsOnBareMetal);
        } else {
            t.row(
                name,
                format_args!("base={:#x}, limit={:#x} (its own {what} is at {:#x})", seen.base, seen.limit, own.base),
                Verdict::LeaksHostValue,
            );
        }
    });
}

fn selector_row(t: &mut Tally, name: &str, selector: u16, outcome: SelectorQuery, what: &str, expected: u64) {
    t.outcome(name, outcome, |t, seen| match seen {
        None => t.row(name, format_args!("{selector:#x}: refused (ZF=0)"), Verdict::Wrong),
        Some(value) => {
            t.row(name, format_args!("{selector:#x}: {what} {value:#x}"), Tally::leak_unless(value, expected))
        }
    });
}

fn verify_row(t: &mut Tally, name: &str, selector: u16, outcome: Outcome<bool>, what: &str, expected: bool) {
    t.outcome(name, outcome, |t, ok| {
        let verdict = if ok == expected { Verdict::AsOnBareMetal } else { Verdict::Wrong };
        let answer = if ok { what } else { "refused (ZF=0)" };
        t.row(name, format_args!("{selector:#x}: {answer}"), verdict);
    });
}

fn main(boot: &'static BootInfo) -> u8 {
    println!("pg-probe: loaded by {}", core::str::from_utf8(boot.loader_name()).unwrap_or("(not ASCII)"));
    idt::set_handler(GENERAL_PROTECTION, probes::on_fault, PrivilegeLevel::Ring0);
    idt::set_handler(INVALID_OPCODE, probes::on_fault, PrivilegeLevel::Ring0);
    let cr0 = cpu::read_cr0();
    let own_gdt = gdt::table();
    let own_idt = idt::table();
    let own = |p: x86_64::structures::DescriptorTablePointer| TableRegister { limit: p.limit, base: p.base.as_u64() };
    let mut t = Tally(0);

    // The five store instructions (UMIP makes them fault in ring 3).
    table_row(&mut t, "SGDT", "GDT", probes::sgdt(), own(own_gdt));
    table_row(&mut t, "SIDT", "IDT", probes::sidt(), own(own_idt));
    t.outcome("SLDT", probes::sldt(), |t, ldtr| {
        t.row("SLDT", format_args!("LDTR={ldtr:#x}"), Tally::leak_unless(ldtr, 0))
    });
    t.outcome("SMSW", probes::smsw(), |t, msw| {
        t.row("SMSW", format_args!("MSW={msw:#x}, CR0={cr0:#x}"), Tally::leak_unless(msw, cr0 & 0xffff))
    });
    t.outcome("STR", probes::str_(), |t, tr| {
        t.row("STR", format_args!("TR={tr:#x}"), Tally::leak_unless(tr, u64::from(TSS_SELECTOR)))
    });

    // The interrupt flag.
    let if_after_cli = probes::pushf_after_cli();
    let verdict = if if_after_cli { Verdict::Wrong } else { Verdict::AsOnBareMetal };
    t.row("PUSHF", format_args!("IF={} after cli", u8::from(if_after_cli)), verdict);
    let if_after_popf = probes::popf_clearing_if();
    let verdict = if if_after_popf { Verdict::Wrong } else { Verdict::AsOnBareMetal };
    t.row("POPF", format_args!("IF={} after popf cleared it", u8::from(if_after_popf)), verdict);

    // The segment registers.
    let (cs, ss) = probes::segment_selectors();
    t.row("MOV-CS", format_args!("CS={cs:#x}"), Tally::leak_unless(u64::from(cs), u64::from(KERNEL_CS)));
    t.row("MOV-SS", format_args!("SS={ss:#x}"), Tally::leak_unless(u64::from(ss), u64::from(KERNEL_DS)));

    // The descriptor queries, on its own ring-0 selectors.
    let code = own_descriptor(KERNEL_CS);
    let data = own_descriptor(KERNEL_DS);
    selector_row(&mut t, "LAR", KERNEL_CS, probes::lar(KERNEL_CS), "access rights", access_rights(code));
    selector_row(&mut t, "LSL", KERNEL_CS, probes::lsl(KERNEL_CS), "limit", byte_limit(code));
    verify_row(&mut t, "VERR", KERNEL_CS, probes::verr(KERNEL_CS), "readable", readable(code));
    verify_row(&mut t, "VERW", KERNEL_DS, probes::verw(KERNEL_DS), "writable", writable(data));

    println!("pg-probe: {} of {PROBES} as on bare metal", t.0);
    status::SUCCESS
}
