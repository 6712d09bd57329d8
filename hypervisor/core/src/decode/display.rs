//! Decoded instructions printed as assembly (Intel syntax), for reports:
//! "it ran 0f 01 10 (lgdt [rax])" reads better than the decoder's structs.

use super::data::{AluOp, DataReg, Source, StoreOp};
use super::{Mem, Op, Operand, PortOperand, Reg, Segment};
use core::fmt;

const REGS: [&str; 16] =
    ["rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"];

impl fmt::Display for Reg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REGS[usize::from(self.0 & 15)])
    }
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

impl fmt::Display for Operand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Operand::Reg(r) => write!(f, "{r}"),
            Operand::Mem(m) => write!(f, "{m}"),
        }
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

impl fmt::Display for DataReg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataReg::Gpr(r) => write!(f, "{r}"),
            DataReg::HighByte(n) => f.write_str(["ah", "ch", "dh", "bh"].get(usize::from(*n)).copied().unwrap_or("?h")),
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Reg(r) => write!(f, "{r}"),
            Source::Imm(v) => write!(f, "{v:#x}"),
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
            StoreOp::Mov { dst, src, size } => write!(f, "mov {}{dst}, {src}", ptr(*size)),
            StoreOp::Alu { op, dst, src, size, locked } => {
                let name = match op {
                    AluOp::Add => "add",
                    AluOp::Or => "or",
                    AluOp::And => "and",
                    AluOp::Sub => "sub",
                    AluOp::Xor => "xor",
                };
                write!(f, "{}{name} {}{dst}, {src}", lock(*locked), ptr(*size))
            }
            StoreOp::Xchg { dst, reg, size } => write!(f, "xchg {}{dst}, {reg}", ptr(*size)),
            StoreOp::Cmpxchg { dst, reg, size, locked } => {
                write!(f, "{}cmpxchg {}{dst}, {reg}", lock(*locked), ptr(*size))
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
            Op::Smsw(o) => write!(f, "smsw {o}"),
            Op::Lmsw(o) => write!(f, "lmsw {o}"),
            Op::Invlpg(m) => write!(f, "invlpg {m}"),
            Op::Swapgs => f.write_str("swapgs"),
            Op::Rdtscp => f.write_str("rdtscp"),
            Op::Sldt(o) => write!(f, "sldt {o}"),
            Op::Str(o) => write!(f, "str {o}"),
            Op::Lldt(o) => write!(f, "lldt {o}"),
            Op::Ltr(o) => write!(f, "ltr {o}"),
            Op::Verr(o) => write!(f, "verr {o}"),
            Op::Verw(o) => write!(f, "verw {o}"),
            Op::Lar(r, o) => write!(f, "lar {r}, {o}"),
            Op::Lsl(r, o) => write!(f, "lsl {r}, {o}"),
            Op::MovFromCr(r, n) => write!(f, "mov {r}, cr{n}"),
            Op::MovToCr(n, r) => write!(f, "mov cr{n}, {r}"),
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
            Op::MovFromSreg(o, s) => write!(f, "mov {o}, {}", sreg(*s)),
            Op::MovToSreg(s, o) => write!(f, "mov {}, {o}", sreg(*s)),
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
        assert_eq!(shown(&[0x8e, 0xd7]), "mov ss, rdi");
        assert_eq!(shown(&[0x0f, 0x01, 0x7c, 0x24, 0xf8]), "invlpg [rsp - 0x8]");
        assert_eq!(shown(&[0x65, 0x0f, 0x01, 0x14, 0x25, 0x10, 0, 0, 0]), "lgdt gs:[0x10]");
        assert_eq!(shown(&[0x49, 0x89, 0x06]), "mov qword ptr [r14], rax");
        assert_eq!(shown(&[0xf3, 0x48, 0xab]), "rep stosq");
        assert_eq!(shown(&[0xf0, 0x48, 0x0f, 0xb1, 0x0c, 0xc7]), "lock cmpxchg qword ptr [rdi + rax*8], rcx");
    }
}
