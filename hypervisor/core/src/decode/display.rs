//! Decoded instructions printed as assembly (Intel syntax), for reports:
//! "it ran 0f 01 10 (lgdt [rax])" reads better than the decoder's structs.

use super::data::{AluOp, DataReg, Source, StoreOp};
use super::{Mem, Op, Operand, PortOperand, Reg, Segment, Size};
use core::fmt;

const REGS: [&str; 16] =
    ["rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"];
const REGS32: [&str; 16] = [
    "eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi", "r8d", "r9d", "r10d", "r11d", "r12d", "r13d", "r14d", "r15d",
];
const REGS16: [&str; 16] =
    ["ax", "cx", "dx", "bx", "sp", "bp", "si", "di", "r8w", "r9w", "r10w", "r11w", "r12w", "r13w", "r14w", "r15w"];
/// The low bytes (registers 4..7 as spl..dil: with a REX prefix; without
/// one they are [`DataReg::HighByte`]).
const REGS8: [&str; 16] =
    ["al", "cl", "dl", "bl", "spl", "bpl", "sil", "dil", "r8b", "r9b", "r10b", "r11b", "r12b", "r13b", "r14b", "r15b"];

/// A register printed with its 64-bit name (an address, a control or
/// debug register move).
impl fmt::Display for Reg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REGS[usize::from(self.0 & 15)])
    }
}

/// The name of register `r` at an operand size.
fn sized(r: Reg, size: Size) -> &'static str {
    let table = match size {
        1 => &REGS8,
        2 => &REGS16,
        4 => &REGS32,
        _ => &REGS,
    };
    table[usize::from(r.0 & 15)]
}

/// A register or memory operand; a register at an operand size.
struct SizedOperand(Operand, Size);

impl fmt::Display for SizedOperand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Operand::Reg(r) => f.write_str(sized(r, self.1)),
            Operand::Mem(m) => write!(f, "{m}"),
        }
    }
}

/// The r/m16 operand of an instruction that reads 16 bits (`lldt`,
/// `mov ss, r/m16`...): a register by its 16-bit name.
fn r_m16(o: Operand) -> SizedOperand {
    SizedOperand(o, 2)
}

impl fmt::Display for Mem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(segment) = self.segment {
            f.write_str(match segment {
                Segment::Es => "es:",
                Segment::Cs => "cs:",
                Segment::Ss => "ss:",
                Segment::Ds => "ds:",
                Segment::Fs => "fs:",
                Segment::Gs => "gs:",
            })?;
        }
        f.write_str("[")?;
        let mut first = true;
        let mut term = |f: &mut fmt::Formatter<'_>, text: fmt::Arguments<'_>| -> fmt::Result {
            if !first {
                f.write_str(" + ")?;
            }
            first = false;
            f.write_fmt(text)
        };
        if self.rip_relative {
            term(f, format_args!("rip"))?;
        }
        if let Some(base) = self.base {
            term(f, format_args!("{base}"))?;
        }
        if let Some((index, scale)) = self.index {
            term(f, format_args!("{index}*{scale}"))?;
        }
        match (first, self.disp) {
            (true, d) => write!(f, "{:#x}", d as u64)?,
            (false, 0) => {}
            (false, d) if d < 0 => write!(f, " - {:#x}", d.unsigned_abs())?,
            (false, d) => write!(f, " + {d:#x}")?,
        }
        f.write_str("]")
    }
}

fn sreg(n: u8) -> &'static str {
    ["es", "cs", "ss", "ds", "fs", "gs"].get(usize::from(n)).copied().unwrap_or("?s")
}

fn port(p: &PortOperand) -> String {
    match p {
        PortOperand::Imm(n) => alloc::format!("{n:#x}"),
        PortOperand::Dx => String::from("dx"),
    }
}

use alloc::string::String;

fn accumulator(size: u8) -> &'static str {
    match size {
        1 => "al",
        2 => "ax",
        _ => "eax",
    }
}

fn ptr(size: u8) -> &'static str {
    match size {
        1 => "byte ptr ",
        2 => "word ptr ",
        4 => "dword ptr ",
        8 => "qword ptr ",
        _ => "",
    }
}

/// A data register at an operand size.
fn data_reg(r: DataReg, size: Size) -> &'static str {
    match r {
        DataReg::Gpr(r) => sized(r, size),
        DataReg::HighByte(n) => ["ah", "ch", "dh", "bh"].get(usize::from(n)).copied().unwrap_or("?h"),
    }
}

/// What a store writes, at its operand size (an immediate as the
/// operand-size value the CPU uses).
struct SizedSource(Source, Size);

impl fmt::Display for SizedSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Source::Reg(r) => f.write_str(data_reg(r, self.1)),
            Source::Imm(v) => {
                let mask = u64::MAX >> (64 - 8 * u32::from(self.1.clamp(1, 8)));
                write!(f, "{:#x}", v as u64 & mask)
            }
        }
    }
}

impl fmt::Display for StoreOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lock = |locked: bool| if locked { "lock " } else { "" };
        let rep = |rep: bool| if rep { "rep " } else { "" };
        let suffix = |size: u8| match size {
            1 => 'b',
            2 => 'w',
            4 => 'd',
            _ => 'q',
        };
        match self {
            StoreOp::Mov { dst, src, size } => write!(f, "mov {}{dst}, {}", ptr(*size), SizedSource(*src, *size)),
            StoreOp::Alu { op, dst, src, size, locked } => {
                let name = match op {
                    AluOp::Add => "add",
                    AluOp::Or => "or",
                    AluOp::And => "and",
                    AluOp::Sub => "sub",
                    AluOp::Xor => "xor",
                };
                write!(f, "{}{name} {}{dst}, {}", lock(*locked), ptr(*size), SizedSource(*src, *size))
            }
            StoreOp::Xchg { dst, reg, size } => write!(f, "xchg {}{dst}, {}", ptr(*size), data_reg(*reg, *size)),
            StoreOp::Cmpxchg { dst, reg, size, locked } => {
                write!(f, "{}cmpxchg {}{dst}, {}", lock(*locked), ptr(*size), data_reg(*reg, *size))
            }
            StoreOp::Stos { size, rep: r, .. } => write!(f, "{}stos{}", rep(*r), suffix(*size)),
            StoreOp::Movs { size, rep: r, .. } => write!(f, "{}movs{}", rep(*r), suffix(*size)),
            StoreOp::SseStore { dst, xmm, bytes, from, aligned } => {
                let name = match (bytes, from, aligned) {
                    (16, _, true) => "movaps",
                    (16, _, false) => "movups",
                    (8, 8, _) => "movhps",
                    (8, _, _) => "movq",
                    _ => "movss",
                };
                write!(f, "{name} {dst}, xmm{xmm}")
            }
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Lgdt(m) => write!(f, "lgdt {m}"),
            Op::Lidt(m) => write!(f, "lidt {m}"),
            Op::Sgdt(m) => write!(f, "sgdt {m}"),
            Op::Sidt(m) => write!(f, "sidt {m}"),
            Op::Smsw(o, size) => write!(f, "smsw {}", SizedOperand(*o, *size)),
            Op::Lmsw(o) => write!(f, "lmsw {}", r_m16(*o)),
            Op::Invlpg(m) => write!(f, "invlpg {m}"),
            Op::Swapgs => f.write_str("swapgs"),
            Op::Rdtscp => f.write_str("rdtscp"),
            Op::Sldt(o, size) => write!(f, "sldt {}", SizedOperand(*o, *size)),
            Op::Str(o, size) => write!(f, "str {}", SizedOperand(*o, *size)),
            Op::Lldt(o) => write!(f, "lldt {}", r_m16(*o)),
            Op::Ltr(o) => write!(f, "ltr {}", r_m16(*o)),
            Op::Verr(o) => write!(f, "verr {}", r_m16(*o)),
            Op::Verw(o) => write!(f, "verw {}", r_m16(*o)),
            Op::Lar(r, o, size) => write!(f, "lar {}, {}", sized(*r, *size), SizedOperand(*o, *size)),
            Op::Lsl(r, o, size) => write!(f, "lsl {}, {}", sized(*r, *size), SizedOperand(*o, *size)),
            Op::MovFromCr(r, cr) => write!(f, "mov {r}, cr{}", cr.number()),
            Op::MovToCr(cr, r) => write!(f, "mov cr{}, {r}", cr.number()),
            Op::MovFromDr(r, n) => write!(f, "mov {r}, dr{n}"),
            Op::MovToDr(n, r) => write!(f, "mov dr{n}, {r}"),
            Op::Wrmsr => f.write_str("wrmsr"),
            Op::Rdmsr => f.write_str("rdmsr"),
            Op::Rdtsc => f.write_str("rdtsc"),
            Op::Rdpmc => f.write_str("rdpmc"),
            Op::Cpuid => f.write_str("cpuid"),
            Op::Syscall => f.write_str("syscall"),
            Op::Sysret(true) => f.write_str("sysretq"),
            Op::Sysret(false) => f.write_str("sysret"),
            Op::Clts => f.write_str("clts"),
            Op::Invd => f.write_str("invd"),
            Op::Wbinvd => f.write_str("wbinvd"),
            Op::Cli => f.write_str("cli"),
            Op::Sti => f.write_str("sti"),
            Op::Hlt => f.write_str("hlt"),
            Op::Pushf(8) => f.write_str("pushfq"),
            Op::Pushf(_) => f.write_str("pushf"),
            Op::Popf(8) => f.write_str("popfq"),
            Op::Popf(_) => f.write_str("popf"),
            Op::Iret(8) => f.write_str("iretq"),
            Op::Iret(4) => f.write_str("iretd"),
            Op::Iret(_) => f.write_str("iret"),
            Op::Retf(8) => f.write_str("lretq"),
            Op::Retf(_) => f.write_str("retf"),
            Op::In(size, p) => write!(f, "in {}, {}", accumulator(*size), port(p)),
            Op::Out(size, p) => write!(f, "out {}, {}", port(p), accumulator(*size)),
            Op::StringIo => f.write_str("ins/outs"),
            Op::MovFromSreg(o, s, size) => write!(f, "mov {}, {}", SizedOperand(*o, *size), sreg(*s)),
            Op::MovToSreg(s, o) => write!(f, "mov {}, {}", sreg(*s), r_m16(*o)),
            Op::Int(n) => write!(f, "int {n:#x}"),
            Op::Int3 => f.write_str("int3"),
            Op::Store(s) => write!(f, "{s}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::decode::decode;
    use alloc::string::ToString;

    fn shown(bytes: &[u8]) -> alloc::string::String {
        decode(bytes).expect("decodes").op.to_string()
    }

    #[test]
    fn instructions_read_as_assembly() {
        assert_eq!(shown(&[0x0f, 0x01, 0x10]), "lgdt [rax]");
        assert_eq!(shown(&[0x0f, 0x22, 0xd8]), "mov cr3, rax");
        assert_eq!(shown(&[0x0f, 0x23, 0xf8]), "mov dr7, rax");
        assert_eq!(shown(&[0xe6, 0xf4]), "out 0xf4, al");
        assert_eq!(shown(&[0xec]), "in al, dx");
        assert_eq!(shown(&[0x48, 0xcf]), "iretq");
        assert_eq!(shown(&[0x8e, 0xd7]), "mov ss, di");
        assert_eq!(shown(&[0x0f, 0x01, 0x7c, 0x24, 0xf8]), "invlpg [rsp - 0x8]");
        assert_eq!(shown(&[0x65, 0x0f, 0x01, 0x14, 0x25, 0x10, 0, 0, 0]), "lgdt gs:[0x10]");
        assert_eq!(shown(&[0x49, 0x89, 0x06]), "mov qword ptr [r14], rax");
        assert_eq!(shown(&[0xf3, 0x48, 0xab]), "rep stosq");
        assert_eq!(shown(&[0xf0, 0x48, 0x0f, 0xb1, 0x0c, 0xc7]), "lock cmpxchg qword ptr [rdi + rax*8], rcx");
    }

    /// A register is named at its operand size, an immediate at the
    /// operand size the CPU uses, as an assembler reads them.
    #[test]
    fn registers_and_immediates_at_the_operand_size() {
        assert_eq!(shown(&[0x44, 0x89, 0x0b]), "mov dword ptr [rbx], r9d");
        assert_eq!(shown(&[0x40, 0x88, 0x37]), "mov byte ptr [rdi], sil");
        assert_eq!(shown(&[0x88, 0x37]), "mov byte ptr [rdi], dh");
        assert_eq!(shown(&[0x66, 0x87, 0x07]), "xchg word ptr [rdi], ax");
        assert_eq!(shown(&[0xc7, 0x00, 0xfe, 0xff, 0xff, 0xff]), "mov dword ptr [rax], 0xfffffffe");
        assert_eq!(shown(&[0x80, 0x0f, 0x80]), "or byte ptr [rdi], 0x80");
        assert_eq!(shown(&[0x48, 0x83, 0x27, 0xf0]), "and qword ptr [rdi], 0xfffffffffffffff0");
        assert_eq!(shown(&[0x0f, 0x01, 0xe3]), "smsw ebx");
        assert_eq!(shown(&[0x66, 0x0f, 0x00, 0xc0]), "sldt ax");
        assert_eq!(shown(&[0x0f, 0x02, 0xc1]), "lar eax, ecx");
        assert_eq!(shown(&[0x8c, 0xdd]), "mov ebp, ds");
        assert_eq!(shown(&[0x41, 0x0f, 0x00, 0xda]), "ltr r10w");
    }
}
