//! Readable reports of CPU exceptions, for guests and for the hypervisor itself.

use crate::vcpu::GuestRegs;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// Mnemonic and name of an exception vector.
pub fn exception_name(vector: u64) -> (&'static str, &'static str) {
    match vector {
        0 => ("#DE", "divide error"),
        1 => ("#DB", "debug"),
        2 => ("NMI", "non-maskable interrupt"),
        3 => ("#BP", "breakpoint"),
        4 => ("#OF", "overflow"),
        5 => ("#BR", "bound range exceeded"),
        6 => ("#UD", "invalid opcode"),
        7 => ("#NM", "device not available"),
        8 => ("#DF", "double fault"),
        10 => ("#TS", "invalid TSS"),
        11 => ("#NP", "segment not present"),
        12 => ("#SS", "stack-segment fault"),
        13 => ("#GP", "general protection fault"),
        14 => ("#PF", "page fault"),
        16 => ("#MF", "x87 floating-point error"),
        17 => ("#AC", "alignment check"),
        18 => ("#MC", "machine check"),
        19 => ("#XM", "SIMD floating-point exception"),
        20 => ("#VE", "virtualization exception"),
        21 => ("#CP", "control protection"),
        _ => ("#??", "reserved exception"),
    }
}

/// Page-fault error code in words: "user-mode write to a non-present page".
pub fn describe_page_fault(error_code: u64) -> String {
    let who = if error_code & 4 != 0 { "user-mode" } else { "supervisor-mode" };
    let what = if error_code & 16 != 0 {
        "instruction fetch from"
    } else if error_code & 2 != 0 {
        "write to"
    } else {
        "read from"
    };
    let why = if error_code & 8 != 0 {
        "a page with reserved bits set"
    } else if error_code & 1 != 0 {
        "a page it may not access that way"
    } else {
        "a non-present page"
    };
    format!("{who} {what} {why}")
}

/// A multi-line report of an exception: who, what, where, and all registers.
/// `who` names the culprit ("domain 3 (crash)" or "the hypervisor").
pub fn report(who: &str, regs: &GuestRegs, cr2: u64) -> Vec<String> {
    let (mnemonic, name) = exception_name(regs.vector);
    let mut lines = Vec::new();
    lines.push(format!("{who}: {name} ({mnemonic}, vector {}) at rip={:#x}", regs.vector, regs.rip));
    let detail = match regs.vector {
        14 => format!("error code {:#x}: {}; cr2={:#x}", regs.error_code, describe_page_fault(regs.error_code), cr2),
        _ => format!("error code {:#x}; cr2={:#x}", regs.error_code, cr2),
    };
    lines.push(detail);
    lines.push(format!("rip={:#018x} rsp={:#018x} rflags={:#010x} cs={:#x} ss={:#x}", regs.rip, regs.rsp, regs.rflags, regs.cs, regs.ss));
    lines.push(format!("rax={:#018x} rbx={:#018x} rcx={:#018x} rdx={:#018x}", regs.rax, regs.rbx, regs.rcx, regs.rdx));
    lines.push(format!("rsi={:#018x} rdi={:#018x} rbp={:#018x} r8 ={:#018x}", regs.rsi, regs.rdi, regs.rbp, regs.r8));
    lines.push(format!("r9 ={:#018x} r10={:#018x} r11={:#018x} r12={:#018x}", regs.r9, regs.r10, regs.r11, regs.r12));
    lines.push(format!("r13={:#018x} r14={:#018x} r15={:#018x}", regs.r13, regs.r14, regs.r15));
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_fault_report_names_kind_rip_and_cr2() {
        let regs = GuestRegs { vector: 14, error_code: 6, rip: 0x40_1234, ..Default::default() };
        let lines = report("domain 4 (crash)", &regs, 0xdead_0000);
        assert_eq!(lines[0], "domain 4 (crash): page fault (#PF, vector 14) at rip=0x401234");
        assert_eq!(lines[1], "error code 0x6: user-mode write to a non-present page; cr2=0xdead0000");
        assert_eq!(exception_name(13).0, "#GP");
    }
}
