//! Host tests of [`super`]: byte sequences as assemblers emit them.

use super::*;

fn d(bytes: &[u8]) -> (Op, usize) {
    let r = decode(bytes).unwrap_or_else(|e| panic!("{bytes:02x?}: {e}"));
    (r.op, r.len)
}

fn mem(base: Option<u8>, disp: i64) -> Mem {
    Mem { base: base.map(Reg), index: None, disp, rip_relative: false, segment: None }
}

#[test]
fn system_table_and_tlb_instructions() {
    assert_eq!(d(&[0x0f, 0x01, 0x10]), (Op::Lgdt(mem(Some(0), 0)), 3), "lgdt [rax]");
    assert_eq!(d(&[0x0f, 0x01, 0x54, 0x24, 0x08]), (Op::Lgdt(mem(Some(4), 8)), 5), "lgdt [rsp+8]");
    assert_eq!(d(&[0x41, 0x0f, 0x01, 0x54, 0x24, 0x08]), (Op::Lgdt(mem(Some(12), 8)), 6), "lgdt [r12+8]");
    let rip_rel = Mem { base: None, index: None, disp: 0x100, rip_relative: true, segment: None };
    assert_eq!(d(&[0x0f, 0x01, 0x1d, 0x00, 0x01, 0x00, 0x00]), (Op::Lidt(rip_rel), 7), "lidt [rip+0x100]");
    assert_eq!(d(&[0x0f, 0x01, 0x3f]), (Op::Invlpg(mem(Some(7), 0)), 3), "invlpg [rdi]");
    assert_eq!(d(&[0x0f, 0x01, 0xf8]), (Op::Swapgs, 3));
    assert_eq!(d(&[0x0f, 0x01, 0x00]), (Op::Sgdt(mem(Some(0), 0)), 3), "sgdt [rax]");
    assert_eq!(d(&[0x0f, 0x01, 0x08]), (Op::Sidt(mem(Some(0), 0)), 3), "sidt [rax]");
    assert_eq!(d(&[0x0f, 0x01, 0xe0]), (Op::Smsw(Operand::Reg(Reg(0))), 3), "smsw eax");
    assert_eq!(decode(&[0x0f, 0x01, 0xd0]), Err(DecodeError::Unsupported), "xgetbv-like forms are not ours");
}

#[test]
fn control_registers_msrs_and_flags() {
    assert_eq!(d(&[0x0f, 0x22, 0xd8]), (Op::MovToCr(3, Reg(0)), 3), "mov cr3, rax");
    assert_eq!(d(&[0x0f, 0x20, 0xd0]), (Op::MovFromCr(Reg(0), 2), 3), "mov rax, cr2");
    assert_eq!(d(&[0x44, 0x0f, 0x22, 0xc0]), (Op::MovToCr(8, Reg(0)), 4), "mov cr8, rax");
    assert_eq!(d(&[0x41, 0x0f, 0x22, 0xe1]), (Op::MovToCr(4, Reg(9)), 4), "mov cr4, r9");
    assert_eq!(d(&[0x0f, 0x30]), (Op::Wrmsr, 2));
    assert_eq!(d(&[0x0f, 0x32]), (Op::Rdmsr, 2));
    assert_eq!(d(&[0x0f, 0xa2]), (Op::Cpuid, 2));
    assert_eq!(d(&[0xfa]), (Op::Cli, 1));
    assert_eq!(d(&[0xfb]), (Op::Sti, 1));
    assert_eq!(d(&[0xf4]), (Op::Hlt, 1));
    assert_eq!(d(&[0x9c]), (Op::Pushf(8), 1));
    assert_eq!(d(&[0x66, 0x9d]), (Op::Popf(2), 2));
    assert_eq!(d(&[0x48, 0xcf]), (Op::Iret(8), 2), "iretq");
    assert_eq!(d(&[0x48, 0x0f, 0x07]), (Op::Sysret(true), 3), "sysretq");
}

#[test]
fn port_io_and_segments() {
    assert_eq!(d(&[0xec]), (Op::In(1, PortOperand::Dx), 1), "in al, dx");
    assert_eq!(d(&[0xee]), (Op::Out(1, PortOperand::Dx), 1), "out dx, al");
    assert_eq!(d(&[0xe6, 0x80]), (Op::Out(1, PortOperand::Imm(0x80)), 2), "out 0x80, al");
    assert_eq!(d(&[0x66, 0xed]), (Op::In(2, PortOperand::Dx), 2), "in ax, dx");
    assert_eq!(d(&[0xe5, 0x40]), (Op::In(4, PortOperand::Imm(0x40)), 2), "in eax, 0x40");
    assert_eq!(d(&[0x8c, 0xc8]), (Op::MovFromSreg(Operand::Reg(Reg(0)), 1), 2), "mov eax, cs");
    assert_eq!(d(&[0x8c, 0xd0]), (Op::MovFromSreg(Operand::Reg(Reg(0)), 2), 2), "mov eax, ss");
    assert_eq!(d(&[0x0f, 0x00, 0xc0]), (Op::Sldt(Operand::Reg(Reg(0))), 3));
    assert_eq!(d(&[0x0f, 0x00, 0xc8]), (Op::Str(Operand::Reg(Reg(0))), 3));
    assert_eq!(d(&[0x0f, 0x00, 0xd8]), (Op::Ltr(Operand::Reg(Reg(0))), 3));
    assert_eq!(d(&[0x0f, 0x00, 0xe0]), (Op::Verr(Operand::Reg(Reg(0))), 3));
    assert_eq!(d(&[0x0f, 0x00, 0xe8]), (Op::Verw(Operand::Reg(Reg(0))), 3));
    assert_eq!(d(&[0x0f, 0x02, 0xc1]), (Op::Lar(Reg(0), Operand::Reg(Reg(1))), 3), "lar eax, ecx");
    assert_eq!(d(&[0x0f, 0x03, 0xc1]), (Op::Lsl(Reg(0), Operand::Reg(Reg(1))), 3), "lsl eax, ecx");
    assert_eq!(d(&[0xcd, 0x80]), (Op::Int(0x80), 2));
}

#[test]
fn addressing_forms() {
    // lgdt [rax + rcx*8 + 0x12345678]: ModRM 10 010 100, SIB 11 001 000, disp32.
    let m = Mem { base: Some(Reg(0)), index: Some((Reg(1), 8)), disp: 0x1234_5678, rip_relative: false, segment: None };
    assert_eq!(d(&[0x0f, 0x01, 0x94, 0xc8, 0x78, 0x56, 0x34, 0x12]), (Op::Lgdt(m), 8));
    assert_eq!(m.address(|r| [0x1000, 2][r.0 as usize], 0), 0x1000 + 16 + 0x1234_5678);
    // invlpg [0x1000] via SIB with no base (base = 101, mod = 00).
    let abs = Mem { base: None, index: None, disp: 0x1000, rip_relative: false, segment: None };
    assert_eq!(d(&[0x0f, 0x01, 0x3c, 0x25, 0x00, 0x10, 0x00, 0x00]), (Op::Invlpg(abs), 8));
    // gs-relative, negative disp8.
    let gs = Mem { base: Some(Reg(3)), index: None, disp: -8, rip_relative: false, segment: Some(Segment::Gs) };
    assert_eq!(d(&[0x65, 0x0f, 0x01, 0x7b, 0xf8]), (Op::Invlpg(gs), 5), "invlpg gs:[rbx-8]");
    let rip = Mem { base: None, index: None, disp: -16, rip_relative: true, segment: None };
    assert_eq!(rip.address(|_| 0, 0x40_1000), 0x40_0ff0);
}

#[test]
fn refusals() {
    assert_eq!(decode(&[]), Err(DecodeError::Truncated));
    assert_eq!(decode(&[0x0f]), Err(DecodeError::Truncated));
    assert_eq!(decode(&[0x0f, 0x01, 0x94, 0xc8, 0x78]), Err(DecodeError::Truncated), "disp32 cut short");
    assert_eq!(decode(&[0x90]), Err(DecodeError::Unsupported), "nop is not sensitive");
    assert_eq!(decode(&[0xf3, 0x6c]), Err(DecodeError::Unsupported), "rep ins");
    assert_eq!(decode(&[0x0f, 0x01, 0xc8]), Err(DecodeError::Unsupported), "monitor (0F 01 C8) is not in the set");
    assert_eq!(d(&[0x0f, 0x01, 0xf0]), (Op::Lmsw(Operand::Reg(Reg(0))), 3), "lmsw ax");
    assert_eq!(decode(&[0x8e, 0xc8]), Err(DecodeError::Unsupported), "mov cs, ax does not exist");
    assert_eq!(decode(&[0x66; 16]), Err(DecodeError::Unsupported), "longer than 15 bytes");
}

#[test]
fn the_documented_table_lists_every_op_once() {
    let mnemonics: std::collections::HashSet<_> = SUPPORTED.iter().map(|(m, _)| *m).collect();
    assert_eq!(mnemonics.len(), SUPPORTED.len());
    assert!(SUPPORTED.len() >= 40);
}
