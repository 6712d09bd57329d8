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
    assert_eq!(d(&[0x0f, 0x01, 0xe0]), (Op::Smsw(Operand::Reg(Reg(0)), 4), 3), "smsw eax");
    assert_eq!(decode(&[0x0f, 0x01, 0xd0]), Err(DecodeError::Unsupported), "xgetbv-like forms are not ours");
}

#[test]
fn control_registers_msrs_and_flags() {
    use ControlRegister::*;
    assert_eq!(d(&[0x0f, 0x22, 0xd8]), (Op::MovToCr(Cr3, Reg(0)), 3), "mov cr3, rax");
    assert_eq!(d(&[0x0f, 0x20, 0xd0]), (Op::MovFromCr(Reg(0), Cr2), 3), "mov rax, cr2");
    assert_eq!(d(&[0x44, 0x0f, 0x22, 0xc0]), (Op::MovToCr(Cr8, Reg(0)), 4), "mov cr8, rax");
    assert_eq!(d(&[0x41, 0x0f, 0x22, 0xe1]), (Op::MovToCr(Cr4, Reg(9)), 4), "mov cr4, r9");
    assert_eq!(d(&[0x0f, 0x30]), (Op::Wrmsr, 2));
    assert_eq!(d(&[0x0f, 0x32]), (Op::Rdmsr, 2));
    assert_eq!(d(&[0x0f, 0xa2]), (Op::Cpuid, 2));
    assert_eq!(d(&[0xfa]), (Op::Cli, 1));
    assert_eq!(d(&[0xfb]), (Op::Sti, 1));
    assert_eq!(d(&[0xf4]), (Op::Hlt, 1));
    assert_eq!(d(&[0x9c]), (Op::Pushf(8), 1));
    assert_eq!(d(&[0x66, 0x9d]), (Op::Popf(2), 2));
    assert_eq!(d(&[0x48, 0xcf]), (Op::Iret(8), 2), "iretq");
    assert_eq!(d(&[0x48, 0xcb]), (Op::Retf(8), 2), "lretq");
    assert_eq!(d(&[0xcb]), (Op::Retf(4), 1), "retf");
    assert_eq!(d(&[0x48, 0x0f, 0x07]), (Op::Sysret(true), 3), "sysretq");
}

#[test]
fn control_and_debug_registers_that_do_not_exist_are_invalid_opcodes() {
    assert_eq!(decode(&[0x0f, 0x20, 0xe8]), Err(DecodeError::Invalid), "mov rax, cr5");
    assert_eq!(decode(&[0x0f, 0x22, 0xc8]), Err(DecodeError::Invalid), "mov cr1, rax");
    assert_eq!(decode(&[0x44, 0x0f, 0x20, 0xc8]), Err(DecodeError::Invalid), "mov rax, cr9 (REX.R)");
    assert_eq!(decode(&[0x44, 0x0f, 0x23, 0xc0]), Err(DecodeError::Invalid), "mov dr8, rax (REX.R)");
    assert_eq!(d(&[0x0f, 0x21, 0xf8]), (Op::MovFromDr(Reg(0), 7), 3), "mov rax, dr7");
}

/// 0x66 makes the operand 16 bits, REX.W 64, and REX.W wins over 0x66
/// (SDM vol. 1, 3.6.1): the register forms of smsw, sldt, str, lar, lsl
/// and mov from a segment register write that many bits, pushf/popf move
/// that many, and port I/O, which stops at 32, gets 32.
#[test]
fn operand_size_prefixes_set_the_width_and_rex_w_wins() {
    let eax = Operand::Reg(Reg(0));
    assert_eq!(d(&[0x66, 0x0f, 0x01, 0xe0]), (Op::Smsw(eax, 2), 4), "smsw ax");
    assert_eq!(d(&[0x48, 0x0f, 0x01, 0xe0]), (Op::Smsw(eax, 8), 4), "smsw rax");
    assert_eq!(d(&[0x66, 0x0f, 0x00, 0xc0]), (Op::Sldt(eax, 2), 4), "sldt ax");
    assert_eq!(d(&[0x66, 0x48, 0x0f, 0x00, 0xc8]), (Op::Str(eax, 8), 5), "str rax: REX.W wins");
    assert_eq!(d(&[0x66, 0x0f, 0x02, 0xc1]), (Op::Lar(Reg(0), Operand::Reg(Reg(1)), 2), 4), "lar ax, cx");
    assert_eq!(d(&[0x48, 0x0f, 0x03, 0xc1]), (Op::Lsl(Reg(0), Operand::Reg(Reg(1)), 8), 4), "lsl rax, rcx");
    assert_eq!(d(&[0x66, 0x8c, 0xc8]), (Op::MovFromSreg(eax, 1, 2), 3), "mov ax, cs");
    assert_eq!(d(&[0x66, 0x48, 0x9c]), (Op::Pushf(8), 3), "pushfq: REX.W wins");
    assert_eq!(d(&[0x66, 0x48, 0x9d]), (Op::Popf(8), 3), "popfq: REX.W wins");
    assert_eq!(d(&[0x66, 0x48, 0xed]), (Op::In(4, PortOperand::Dx), 3), "in eax, dx: REX.W wins");
    assert_eq!(d(&[0x66, 0x48, 0xe7, 0x80]), (Op::Out(4, PortOperand::Imm(0x80)), 4), "out 0x80, eax");
    assert_eq!(d(&[0x48, 0xed]), (Op::In(4, PortOperand::Dx), 2), "in eax, dx: no 64-bit port I/O");
}

#[test]
fn port_io_and_segments() {
    assert_eq!(d(&[0xec]), (Op::In(1, PortOperand::Dx), 1), "in al, dx");
    assert_eq!(d(&[0xee]), (Op::Out(1, PortOperand::Dx), 1), "out dx, al");
    assert_eq!(d(&[0xe6, 0x80]), (Op::Out(1, PortOperand::Imm(0x80)), 2), "out 0x80, al");
    assert_eq!(d(&[0x66, 0xed]), (Op::In(2, PortOperand::Dx), 2), "in ax, dx");
    assert_eq!(d(&[0xe5, 0x40]), (Op::In(4, PortOperand::Imm(0x40)), 2), "in eax, 0x40");
    assert_eq!(d(&[0x8c, 0xc8]), (Op::MovFromSreg(Operand::Reg(Reg(0)), 1, 4), 2), "mov eax, cs");
    assert_eq!(d(&[0x8c, 0xd0]), (Op::MovFromSreg(Operand::Reg(Reg(0)), 2, 4), 2), "mov eax, ss");
    assert_eq!(d(&[0x0f, 0x00, 0xc0]), (Op::Sldt(Operand::Reg(Reg(0)), 4), 3));
    assert_eq!(d(&[0x0f, 0x00, 0xc8]), (Op::Str(Operand::Reg(Reg(0)), 4), 3));
    assert_eq!(d(&[0x0f, 0x00, 0xd8]), (Op::Ltr(Operand::Reg(Reg(0))), 3));
    assert_eq!(d(&[0x0f, 0x00, 0xe0]), (Op::Verr(Operand::Reg(Reg(0))), 3));
    assert_eq!(d(&[0x0f, 0x00, 0xe8]), (Op::Verw(Operand::Reg(Reg(0))), 3));
    assert_eq!(d(&[0x0f, 0x02, 0xc1]), (Op::Lar(Reg(0), Operand::Reg(Reg(1)), 4), 3), "lar eax, ecx");
    assert_eq!(d(&[0x0f, 0x03, 0xc1]), (Op::Lsl(Reg(0), Operand::Reg(Reg(1)), 4), 3), "lsl eax, ecx");
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
    // 13 prefixes leave room for 0F 01 but not for its third byte.
    let swapgs_at_16 = [[0x66; 13].as_slice(), &[0x0f, 0x01, 0xf8]].concat();
    assert_eq!(decode(&swapgs_at_16), Err(DecodeError::Unsupported), "swapgs ending at byte 16");
    let rdtscp_at_16 = [[0x2e; 13].as_slice(), &[0x0f, 0x01, 0xf9]].concat();
    assert_eq!(decode(&rdtscp_at_16), Err(DecodeError::Unsupported), "rdtscp ending at byte 16");
    let movups_at_16 = [[0x3e; 13].as_slice(), &[0x0f, 0x11, 0x07]].concat();
    assert_eq!(decode(&movups_at_16), Err(DecodeError::Unsupported), "movups ending at byte 16");
}

#[test]
fn the_documented_table_lists_every_op_once() {
    let mnemonics: std::collections::HashSet<_> = SUPPORTED.iter().map(|(m, _)| *m).collect();
    assert_eq!(mnemonics.len(), SUPPORTED.len());
    assert!(SUPPORTED.len() >= 40);
}

// The memory-writing instructions: bytes as GNU as emits them.

fn store(bytes: &[u8]) -> (StoreOp, usize) {
    match d(bytes) {
        (Op::Store(s), len) => (s, len),
        other => panic!("{bytes:02x?}: not a store: {other:?}"),
    }
}

fn at(base: u8, disp: i64) -> Mem {
    mem(Some(base), disp)
}

const RAX: u8 = 0;
const RBX: u8 = 3;
const RSI: u8 = 6;
const RDI: u8 = 7;

fn gpr(n: u8) -> DataReg {
    DataReg::Gpr(Reg(n))
}

#[test]
fn movs_to_memory_with_every_size_and_byte_register() {
    let mov = |dst, src, size| StoreOp::Mov { dst, src, size };
    assert_eq!(store(&[0x88, 0x08]), (mov(at(RAX, 0), Source::Reg(gpr(1)), 1), 2), "mov [rax], cl");
    let ah = Source::Reg(DataReg::HighByte(0));
    assert_eq!(store(&[0x88, 0x67, 0x08]), (mov(at(RDI, 8), ah, 1), 3), "mov [rdi+8], ah");
    assert_eq!(store(&[0x40, 0x88, 0x77, 0x08]), (mov(at(RDI, 8), Source::Reg(gpr(6)), 1), 4), "sil with REX");
    let sib = Mem { base: Some(Reg(RDI)), index: Some((Reg(1), 8)), disp: 0, rip_relative: false, segment: None };
    assert_eq!(store(&[0x48, 0x89, 0x14, 0xcf]), (mov(sib, Source::Reg(gpr(2)), 8), 4), "mov [rdi+rcx*8], rdx");
    assert_eq!(store(&[0x44, 0x89, 0x0b]), (mov(at(RBX, 0), Source::Reg(gpr(9)), 4), 3), "mov [rbx], r9d");
    assert_eq!(store(&[0x66, 0x89, 0x03]), (mov(at(RBX, 0), Source::Reg(gpr(0)), 2), 3), "mov [rbx], ax");
    // Immediates: the RIP-relative displacement comes before the immediate.
    let rip = Mem { base: None, index: None, disp: 0x10, rip_relative: true, segment: None };
    assert_eq!(store(&[0xc6, 0x05, 0x10, 0, 0, 0, 0x7f]), (mov(rip, Source::Imm(0x7f), 1), 7));
    assert_eq!(store(&[0x48, 0xc7, 0x00, 0xfe, 0xff, 0xff, 0xff]), (mov(at(RAX, 0), Source::Imm(-2), 8), 7));
    assert_eq!(store(&[0x66, 0xc7, 0x40, 0x04, 0x34, 0x12]), (mov(at(RAX, 4), Source::Imm(0x1234), 2), 6));
    let gs = Mem { base: None, index: None, disp: 0x10, rip_relative: false, segment: Some(Segment::Gs) };
    let gs_mov = [0x65, 0xc7, 0x04, 0x25, 0x10, 0, 0, 0, 0x05, 0, 0, 0];
    assert_eq!(store(&gs_mov), (mov(gs, Source::Imm(5), 4), 12), "mov dword gs:[0x10], 5");
    assert_eq!(store(&[0x48, 0x0f, 0xc3, 0x07]), (mov(at(RDI, 0), Source::Reg(gpr(0)), 8), 4), "movnti");
    assert_eq!(store(&[0x0f, 0xc3, 0x07]), (mov(at(RDI, 0), Source::Reg(gpr(0)), 4), 3), "movnti 32");
}

#[test]
fn read_modify_write_forms() {
    let alu = |op, dst, src, size, locked| StoreOp::Alu { op, dst, src, size, locked };
    let r = |n| Source::Reg(gpr(n));
    assert_eq!(store(&[0xf0, 0x48, 0x09, 0x37]), (alu(AluOp::Or, at(RDI, 0), r(RSI), 8, true), 4), "lock or");
    assert_eq!(store(&[0x20, 0x13]), (alu(AluOp::And, at(RBX, 0), r(2), 1, false), 2), "and [rbx], dl");
    let sib = Mem { base: Some(Reg(RBX)), index: Some((Reg(0), 4)), disp: -4, rip_relative: false, segment: None };
    assert_eq!(store(&[0x44, 0x29, 0x44, 0x83, 0xfc]), (alu(AluOp::Sub, sib, r(8), 4, false), 5), "sub r8d");
    let bh = Source::Reg(DataReg::HighByte(3));
    let rsp = Mem { base: Some(Reg(4)), index: None, disp: 0, rip_relative: false, segment: None };
    assert_eq!(store(&[0x30, 0x3c, 0x24]), (alu(AluOp::Xor, rsp, bh, 1, false), 3), "xor [rsp], bh");
    assert_eq!(store(&[0x01, 0x07]), (alu(AluOp::Add, at(RDI, 0), r(0), 4, false), 2), "add [rdi], eax");
    let add_imm = [0x48, 0x81, 0x07, 0x78, 0x56, 0x34, 0x12];
    assert_eq!(store(&add_imm), (alu(AluOp::Add, at(RDI, 0), Source::Imm(0x1234_5678), 8, false), 7));
    let and_imm8 = [0xf0, 0x48, 0x83, 0x27, 0x80];
    assert_eq!(store(&and_imm8), (alu(AluOp::And, at(RDI, 0), Source::Imm(-0x80), 8, true), 5), "sign-extended");
    assert_eq!(store(&[0x80, 0x0f, 0x80]), (alu(AluOp::Or, at(RDI, 0), Source::Imm(-0x80), 1, false), 3));
    let sub16 = [0x66, 0x81, 0x2f, 0x00, 0x01];
    assert_eq!(store(&sub16), (alu(AluOp::Sub, at(RDI, 0), Source::Imm(0x100), 2, false), 5));
    assert_eq!(store(&[0x48, 0x87, 0x07]), (StoreOp::Xchg { dst: at(RDI, 0), reg: gpr(0), size: 8 }, 3));
    assert_eq!(store(&[0x86, 0x1e]), (StoreOp::Xchg { dst: at(RSI, 0), reg: gpr(3), size: 1 }, 2), "xchg [rsi], bl");
    let cmpxchg = |dst, reg, size, locked| StoreOp::Cmpxchg { dst, reg, size, locked };
    assert_eq!(store(&[0xf0, 0x48, 0x0f, 0xb1, 0x17]), (cmpxchg(at(RDI, 0), gpr(2), 8, true), 5));
    assert_eq!(store(&[0x0f, 0xb0, 0x2f]), (cmpxchg(at(RDI, 0), DataReg::HighByte(1), 1, false), 3), "ch");
    assert_eq!(store(&[0x45, 0x0f, 0xb1, 0x2c, 0x24]), (cmpxchg(at(12, 0), gpr(13), 4, false), 5), "[r12], r13d");
}

#[test]
fn string_stores() {
    let stos = |size, rep, addr32| StoreOp::Stos { size, rep, addr32 };
    assert_eq!(store(&[0xaa]), (stos(1, false, false), 1));
    assert_eq!(store(&[0x48, 0xab]), (stos(8, false, false), 2));
    assert_eq!(store(&[0xf3, 0x48, 0xab]), (stos(8, true, false), 3), "rep stosq");
    assert_eq!(store(&[0xf3, 0xab]), (stos(4, true, false), 2));
    assert_eq!(store(&[0x66, 0xf3, 0xab]), (stos(2, true, false), 3));
    assert_eq!(store(&[0x67, 0xf3, 0xaa]), (stos(1, true, true), 3), "addr32 rep stosb");
    let movs = |size, rep, src_segment| StoreOp::Movs { size, rep, addr32: false, src_segment };
    assert_eq!(store(&[0xa4]), (movs(1, false, None), 1));
    assert_eq!(store(&[0xf3, 0x48, 0xa5]), (movs(8, true, None), 3), "rep movsq");
    assert_eq!(store(&[0x64, 0x48, 0xa5]), (movs(8, false, Some(Segment::Fs)), 3), "movsq from fs:[rsi]");
}

#[test]
fn sse_stores() {
    let sse = |dst, xmm, bytes, from, aligned| StoreOp::SseStore { dst, xmm, bytes, from, aligned };
    let rdi = at(RDI, 0);
    assert_eq!(store(&[0x0f, 0x11, 0x0f]), (sse(rdi, 1, 16, 0, false), 3), "movups");
    assert_eq!(store(&[0x44, 0x0f, 0x29, 0x7f, 0x10]), (sse(at(RDI, 16), 15, 16, 0, true), 5), "movaps xmm15");
    assert_eq!(store(&[0xf3, 0x0f, 0x7f, 0x07]), (sse(rdi, 0, 16, 0, false), 4), "movdqu");
    assert_eq!(store(&[0x66, 0x44, 0x0f, 0x7f, 0x07]), (sse(rdi, 8, 16, 0, true), 5), "movdqa xmm8");
    assert_eq!(store(&[0x66, 0x0f, 0xd6, 0x17]), (sse(rdi, 2, 8, 0, false), 4), "movq");
    assert_eq!(store(&[0xf3, 0x0f, 0x11, 0x1f]), (sse(rdi, 3, 4, 0, false), 4), "movss");
    assert_eq!(store(&[0xf2, 0x0f, 0x11, 0x27]), (sse(rdi, 4, 8, 0, false), 4), "movsd");
    assert_eq!(store(&[0x0f, 0x13, 0x2f]), (sse(rdi, 5, 8, 0, false), 3), "movlps");
    assert_eq!(store(&[0x0f, 0x17, 0x37]), (sse(rdi, 6, 8, 8, false), 3), "movhps: the high half");
    assert_eq!(store(&[0x66, 0x0f, 0x11, 0x3f]), (sse(rdi, 7, 16, 0, false), 4), "movupd");
    assert_eq!(store(&[0x66, 0x0f, 0x29, 0x0f]), (sse(rdi, 1, 16, 0, true), 4), "movapd");
    assert_eq!(store(&[0x66, 0x0f, 0x13, 0x0f]), (sse(rdi, 1, 8, 0, false), 4), "movlpd");
    assert_eq!(store(&[0x66, 0x0f, 0x17, 0x0f]), (sse(rdi, 1, 8, 8, false), 4), "movhpd");
}

#[test]
fn stores_refuse_what_does_not_write_memory_or_is_not_theirs() {
    let refused = |bytes: &[u8], why: &str| assert_eq!(decode(bytes), Err(DecodeError::Unsupported), "{why}");
    refused(&[0x48, 0x89, 0xd8], "mov rax, rbx: a register destination");
    refused(&[0x0f, 0x11, 0xc1], "movups xmm1, xmm0");
    refused(&[0xf0, 0x48, 0x89, 0x07], "lock mov");
    refused(&[0xf3, 0x48, 0x89, 0x07], "rep mov");
    refused(&[0x67, 0x48, 0x89, 0x07], "32-bit addressing outside string instructions");
    refused(&[0xf2, 0xab], "repne stos");
    refused(&[0xf0, 0xab], "lock stos");
    refused(&[0x48, 0x83, 0x3f, 0x00], "cmp [rdi], 0: /7 does not write");
    refused(&[0x48, 0x83, 0x17, 0x01], "adc [rdi], 1: /2 is not supported");
    refused(&[0xc6, 0xf8, 0x00], "xabort");
    refused(&[0x0f, 0x7f, 0x07], "movq [rdi], mm0: MMX");
    refused(&[0x66, 0xf3, 0x0f, 0x7f, 0x07], "two mandatory prefixes");
    refused(&[0x66, 0x0f, 0xc3, 0x07], "movnti has no 16-bit form");
    refused(&[0xf3, 0x0f, 0x29, 0x07], "no movaps with F3");
    refused(&[0xf0, 0x0f, 0x11, 0x07], "lock movups");
    assert_eq!(decode(&[0x48, 0xc7, 0x00, 0xfe, 0xff]), Err(DecodeError::Truncated), "immediate cut short");
    assert_eq!(decode(&[0x0f, 0xa2]), Ok(Decoded { op: Op::Cpuid, len: 2 }), "0F still leads to system instructions");
}

#[test]
fn the_store_table_lists_every_form_once() {
    let mnemonics: std::collections::HashSet<_> = SUPPORTED_STORES.iter().map(|(m, _)| *m).collect();
    assert_eq!(mnemonics.len(), SUPPORTED_STORES.len());
    let all: std::collections::HashSet<_> = SUPPORTED.iter().chain(SUPPORTED_STORES).map(|(m, _)| *m).collect();
    assert_eq!(all.len(), SUPPORTED.len() + SUPPORTED_STORES.len(), "no mnemonic in both tables");
}

#[test]
fn only_the_instructions_that_can_trap_for_privilege_are_sensitive() {
    let ordinary: [&[u8]; 10] = [
        &[0x48, 0x8b, 0x07],             // mov rax, [rdi]
        &[0x0f, 0x28, 0x07],             // movaps xmm0, [rdi]
        &[0x66, 0x0f, 0x6f, 0x07],       // movdqa xmm0, [rdi]
        &[0xc5, 0xf8, 0x28, 0x07],       // vmovaps xmm0, [rdi]
        &[0xf3, 0x48, 0x0f, 0xae, 0xd7], // wrfsbase rdi (#UD without CR4.FSGSBASE, never #GP)
        &[0x0f, 0xc7, 0xf0],             // rdrand eax
        &[0x48, 0x0f, 0xc7, 0x0f],       // cmpxchg16b [rdi]
        &[0xff, 0x10],                   // call [rax]
        &[0x65, 0x48, 0x8b, 0x04, 0x25, 0, 0, 0, 0], // mov rax, gs:[0]
        &[0x0f, 0x0b],                   // ud2
    ];
    for bytes in ordinary {
        assert!(!may_trap_for_privilege(bytes), "{bytes:02x?}");
    }
    let sensitive: [&[u8]; 10] = [
        &[0x0f, 0x01, 0xd1],             // xsetbv
        &[0x0f, 0xc7, 0x2f],             // xsaves [rdi]
        &[0xff, 0x18],                   // call far [rax]
        &[0x66, 0x0f, 0x38, 0x82, 0x07], // invpcid
        &[0xec],                         // in al, dx
        &[0x8e, 0xd8],                   // mov ds, eax
        &[0x48, 0xcf],                   // iretq
        &[0x0f, 0xb2, 0x07],             // lss
        &[0x0f, 0x04],                   // no such instruction
        &[0x66],                         // cut short
    ];
    for bytes in sensitive {
        assert!(may_trap_for_privilege(bytes), "{bytes:02x?}");
    }
}

/// In 64-bit mode ES, CS, SS and DS overrides add no base: one after an FS
/// or GS override leaves it in force (as the CPU and iced-x86 take it),
/// while among themselves the last one counts.
#[test]
fn a_null_segment_override_never_displaces_fs_or_gs() {
    use crate::decode::{Segment, StoreOp};
    let segment_of = |bytes: &[u8]| match decode(bytes).expect("a store").op {
        Op::Store(StoreOp::Mov { dst, .. }) => dst.segment,
        other => panic!("{other:?}"),
    };
    // mov [rcx], bl with prefixes.
    assert_eq!(segment_of(&[0x64, 0x3e, 0x88, 0x19]), Some(Segment::Fs));
    assert_eq!(segment_of(&[0x65, 0x2e, 0x88, 0x19]), Some(Segment::Gs));
    assert_eq!(segment_of(&[0x3e, 0x36, 0x88, 0x19]), Some(Segment::Ss));
    assert_eq!(segment_of(&[0x36, 0x65, 0x88, 0x19]), Some(Segment::Gs));
}
