//! What the decoder's result says iced must see: the instruction's name,
//! each operand in the decoder's terms, the prefixes; and the comparison
//! of each operand with iced's.

use super::super::*;
use iced_x86::{Code, Instruction, Mnemonic, OpKind, Register};
use std::string::String;
use std::vec::Vec;

/// A register, in the decoder's terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum R {
    /// General-purpose register `n` (0 = rax ... 15 = r15) at a width in bytes.
    Gpr(u8, Size),
    /// ah, ch, dh or bh.
    HighByte(u8),
    /// es, cs, ss, ds, fs, gs.
    Sreg(u8),
    /// crN.
    Cr(u8),
    /// drN.
    Dr(u8),
    /// xmmN.
    Xmm(u8),
}

/// iced's register in the decoder's terms (`None`: one it never names).
fn reg_of(r: Register) -> Option<R> {
    let n = r.number() as u8;
    Some(if r.is_gpr8() {
        // iced numbers the byte registers al..bl, ah..bh, spl..dil, r8l..r15l.
        match n {
            4..=7 => R::HighByte(n - 4),
            8.. => R::Gpr(n - 4, 1),
            _ => R::Gpr(n, 1),
        }
    } else if r.is_gpr() {
        R::Gpr(n, r.size() as Size)
    } else if r.is_segment_register() {
        R::Sreg(n)
    } else if r.is_cr() {
        R::Cr(n)
    } else if r.is_dr() {
        R::Dr(n)
    } else if r.is_xmm() {
        R::Xmm(n)
    } else {
        return None;
    })
}

/// One operand as iced must show it.
#[derive(Clone, Copy, Debug)]
pub(super) enum Want {
    /// A register.
    Reg(R),
    /// A general-purpose register the instruction reads 16 bits of
    /// (`lmsw`, `ltr`, `mov sreg, r`...): iced's code for it depends on
    /// the operand size, which changes nothing the instruction does, so
    /// only the register's number must agree.
    Source16(u8),
    /// Memory, of a size in bytes where the decoder's result implies one.
    Mem(Mem, Option<usize>),
    /// An immediate of `size` bytes, sign-extended.
    Imm(i64, Size),
    /// The destination of a string instruction: es:[rdi], or es:[edi]
    /// with a 0x67 prefix.
    StringDst { addr32: bool },
    /// The source of `movs`: [rsi] or [esi], with an FS or GS override.
    StringSrc { addr32: bool, segment: Option<Segment> },
}

/// Which instruction iced must name.
#[derive(Debug)]
pub(super) enum Name {
    /// Exactly one of these codes (a code is a mnemonic at one operand size
    /// and form, as `Code::Pushfq`).
    Code(&'static [Code]),
    /// One of these mnemonics (the operands say the rest).
    Mnemonic(&'static [Mnemonic]),
}

/// What a decoded instruction says iced must see.
pub(super) struct Expected {
    pub(super) name: Name,
    /// `None`: operands the decoder does not keep (`ins`/`outs`).
    pub(super) operands: Option<Vec<Want>>,
    /// A `lock` prefix (`None`: the decoder does not keep it).
    pub(super) lock: Option<bool>,
    /// A `rep` prefix (`None`: F3 is part of the opcode, as in `movss`).
    pub(super) rep: Option<bool>,
}

fn gpr(r: Reg, size: Size) -> Want {
    Want::Reg(R::Gpr(r.0, size))
}

fn data_reg(r: DataReg, size: Size) -> Want {
    match r {
        DataReg::Gpr(r) => gpr(r, size),
        DataReg::HighByte(n) => Want::Reg(R::HighByte(n)),
    }
}

/// A r/m16 operand that is only read.
fn source16(o: Operand) -> Want {
    match o {
        Operand::Reg(r) => Want::Source16(r.0),
        Operand::Mem(m) => Want::Mem(m, Some(2)),
    }
}

/// A r/m operand whose register form is at the operand size and whose
/// memory form is 16 bits (`smsw`, `sldt`, `str`, `mov r/m, sreg`).
fn destination(o: Operand, size: Size) -> Want {
    match o {
        Operand::Reg(r) => gpr(r, size),
        Operand::Mem(m) => Want::Mem(m, Some(2)),
    }
}

fn accumulator(size: Size) -> Want {
    gpr(Reg(0), size)
}

fn port(p: PortOperand) -> Want {
    match p {
        PortOperand::Imm(n) => Want::Imm(i64::from(n), 1),
        PortOperand::Dx => gpr(Reg(2), 2),
    }
}

fn by_size(size: Size, codes: [&'static [Code]; 4]) -> Name {
    Name::Code(match size {
        1 => codes[0],
        2 => codes[1],
        4 => codes[2],
        _ => codes[3],
    })
}

/// What iced must see for the decoder's `op`.
pub(super) fn expected(op: Op) -> Expected {
    use Mnemonic as M;
    let plain = |name: Name, operands: Vec<Want>| Expected {
        name,
        operands: Some(operands),
        lock: Some(false),
        rep: Some(false),
    };
    let m = |mnemonics: &'static [Mnemonic], operands: Vec<Want>| plain(Name::Mnemonic(mnemonics), operands);
    match op {
        Op::Lgdt(mem) => m(&[M::Lgdt], vec![Want::Mem(mem, Some(10))]),
        Op::Lidt(mem) => m(&[M::Lidt], vec![Want::Mem(mem, Some(10))]),
        Op::Sgdt(mem) => m(&[M::Sgdt], vec![Want::Mem(mem, Some(10))]),
        Op::Sidt(mem) => m(&[M::Sidt], vec![Want::Mem(mem, Some(10))]),
        Op::Smsw(o, size) => m(&[M::Smsw], vec![destination(o, size)]),
        Op::Lmsw(o) => m(&[M::Lmsw], vec![source16(o)]),
        Op::Invlpg(mem) => m(&[M::Invlpg], vec![Want::Mem(mem, None)]),
        Op::Swapgs => m(&[M::Swapgs], vec![]),
        Op::Rdtscp => m(&[M::Rdtscp], vec![]),
        Op::Sldt(o, size) => m(&[M::Sldt], vec![destination(o, size)]),
        Op::Str(o, size) => m(&[M::Str], vec![destination(o, size)]),
        Op::Lldt(o) => m(&[M::Lldt], vec![source16(o)]),
        Op::Ltr(o) => m(&[M::Ltr], vec![source16(o)]),
        Op::Verr(o) => m(&[M::Verr], vec![source16(o)]),
        Op::Verw(o) => m(&[M::Verw], vec![source16(o)]),
        // The source is read as 16 bits; iced names a register source at
        // the operand size, as assemblers do.
        Op::Lar(r, o, size) => m(&[M::Lar], vec![gpr(r, size), destination(o, size)]),
        Op::Lsl(r, o, size) => m(&[M::Lsl], vec![gpr(r, size), destination(o, size)]),
        Op::MovFromCr(r, cr) => m(&[M::Mov], vec![gpr(r, 8), Want::Reg(R::Cr(cr.number()))]),
        Op::MovToCr(cr, r) => m(&[M::Mov], vec![Want::Reg(R::Cr(cr.number())), gpr(r, 8)]),
        Op::MovFromDr(r, n) => m(&[M::Mov], vec![gpr(r, 8), Want::Reg(R::Dr(n))]),
        Op::MovToDr(n, r) => m(&[M::Mov], vec![Want::Reg(R::Dr(n)), gpr(r, 8)]),
        Op::Wrmsr => m(&[M::Wrmsr], vec![]),
        Op::Rdmsr => m(&[M::Rdmsr], vec![]),
        Op::Rdtsc => m(&[M::Rdtsc], vec![]),
        Op::Rdpmc => m(&[M::Rdpmc], vec![]),
        Op::Cpuid => m(&[M::Cpuid], vec![]),
        Op::Syscall => m(&[M::Syscall], vec![]),
        Op::Sysret(q) => plain(Name::Code(if q { &[Code::Sysretq] } else { &[Code::Sysretd] }), vec![]),
        Op::Clts => m(&[M::Clts], vec![]),
        Op::Invd => m(&[M::Invd], vec![]),
        Op::Wbinvd => m(&[M::Wbinvd], vec![]),
        Op::Cli => m(&[M::Cli], vec![]),
        Op::Sti => m(&[M::Sti], vec![]),
        Op::Hlt => m(&[M::Hlt], vec![]),
        Op::Pushf(size) => plain(by_size(size, [&[], &[Code::Pushfw], &[Code::Pushfd], &[Code::Pushfq]]), vec![]),
        Op::Popf(size) => plain(by_size(size, [&[], &[Code::Popfw], &[Code::Popfd], &[Code::Popfq]]), vec![]),
        Op::Iret(size) => plain(by_size(size, [&[], &[Code::Iretw], &[Code::Iretd], &[Code::Iretq]]), vec![]),
        Op::Retf(size) => plain(by_size(size, [&[], &[Code::Retfw], &[Code::Retfd], &[Code::Retfq]]), vec![]),
        Op::In(size, p) => m(&[M::In], vec![accumulator(size), port(p)]),
        Op::Out(size, p) => m(&[M::Out], vec![port(p), accumulator(size)]),
        Op::StringIo => Expected {
            name: Name::Mnemonic(&[M::Insb, M::Insw, M::Insd, M::Outsb, M::Outsw, M::Outsd]),
            operands: None,
            lock: Some(false),
            rep: Some(false),
        },
        Op::MovFromSreg(o, s, size) => m(&[M::Mov], vec![destination(o, size), Want::Reg(R::Sreg(s))]),
        Op::MovToSreg(s, o) => m(&[M::Mov], vec![Want::Reg(R::Sreg(s)), source16(o)]),
        Op::Int(n) => m(&[M::Int], vec![Want::Imm(i64::from(n), 1)]),
        Op::Int3 => m(&[M::Int3], vec![]),
        Op::Store(store) => expected_store(store),
    }
}

/// What iced must see for a memory-writing instruction.
fn expected_store(store: StoreOp) -> Expected {
    use Mnemonic as M;
    let source = |src: Source, size: Size| match src {
        Source::Reg(r) => data_reg(r, size),
        Source::Imm(v) => Want::Imm(v, size),
    };
    let mem = |dst: Mem, size: Size| Want::Mem(dst, Some(usize::from(size)));
    let with = |name: Name, operands: Vec<Want>, lock: Option<bool>, rep: Option<bool>| Expected {
        name,
        operands: Some(operands),
        lock,
        rep,
    };
    match store {
        StoreOp::Mov { dst, src, size } => {
            let name = Name::Mnemonic(match src {
                Source::Reg(_) => &[M::Mov, M::Movnti],
                Source::Imm(_) => &[M::Mov],
            });
            with(name, vec![mem(dst, size), source(src, size)], Some(false), Some(false))
        }
        StoreOp::Alu { op, dst, src, size, locked } => {
            let name: &'static [Mnemonic] = match op {
                AluOp::Add => &[M::Add],
                AluOp::Or => &[M::Or],
                AluOp::And => &[M::And],
                AluOp::Sub => &[M::Sub],
                AluOp::Xor => &[M::Xor],
            };
            with(Name::Mnemonic(name), vec![mem(dst, size), source(src, size)], Some(locked), Some(false))
        }
        // `xchg` with memory is locked with or without the prefix, so the
        // decoder does not keep it.
        StoreOp::Xchg { dst, reg, size } => {
            with(Name::Mnemonic(&[M::Xchg]), vec![mem(dst, size), data_reg(reg, size)], None, Some(false))
        }
        StoreOp::Cmpxchg { dst, reg, size, locked } => {
            with(Name::Mnemonic(&[M::Cmpxchg]), vec![mem(dst, size), data_reg(reg, size)], Some(locked), Some(false))
        }
        StoreOp::Stos { size, rep, addr32 } => with(
            by_size(
                size,
                [&[Code::Stosb_m8_AL], &[Code::Stosw_m16_AX], &[Code::Stosd_m32_EAX], &[Code::Stosq_m64_RAX]],
            ),
            vec![Want::StringDst { addr32 }, accumulator(size)],
            Some(false),
            Some(rep),
        ),
        StoreOp::Movs { size, rep, addr32, src_segment } => with(
            by_size(
                size,
                [&[Code::Movsb_m8_m8], &[Code::Movsw_m16_m16], &[Code::Movsd_m32_m32], &[Code::Movsq_m64_m64]],
            ),
            vec![Want::StringDst { addr32 }, Want::StringSrc { addr32, segment: src_segment }],
            Some(false),
            Some(rep),
        ),
        StoreOp::SseStore { dst, xmm, bytes, from, aligned } => {
            let name: &'static [Mnemonic] = match (bytes, from, aligned) {
                (16, 0, true) => &[M::Movaps, M::Movapd, M::Movdqa],
                (16, 0, false) => &[M::Movups, M::Movupd, M::Movdqu],
                (8, 0, false) => &[M::Movq, M::Movsd, M::Movlps, M::Movlpd],
                (8, 8, false) => &[M::Movhps, M::Movhpd],
                (4, 0, false) => &[M::Movss],
                _ => &[],
            };
            let operands = vec![Want::Mem(dst, Some(usize::from(bytes))), Want::Reg(R::Xmm(xmm))];
            // The F2/F3 of movsd/movss/movdqu is part of the opcode.
            with(Name::Mnemonic(name), operands, Some(false), None)
        }
    }
}

/// A register's value while effective addresses are compared: distinct
/// for every register, so a wrong base or index shows.
fn register_value(n: u8) -> u64 {
    (u64::from(n) + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

fn segment_of(r: Register) -> Option<Segment> {
    match r {
        Register::ES => Some(Segment::Es),
        Register::CS => Some(Segment::Cs),
        Register::SS => Some(Segment::Ss),
        Register::DS => Some(Segment::Ds),
        Register::FS => Some(Segment::Fs),
        Register::GS => Some(Segment::Gs),
        _ => None,
    }
}

/// Compares operand `i` of `insn` with `want`.
pub(super) fn operand_agrees(insn: &Instruction, i: u32, want: Want) -> Result<(), String> {
    let kind = insn.op_kind(i);
    let register = || match kind {
        OpKind::Register => reg_of(insn.op_register(i)).ok_or_else(|| format!("iced names {:?}", insn.op_register(i))),
        other => Err(format!("iced has {other:?}, not a register")),
    };
    match want {
        Want::Reg(r) => {
            let theirs = register()?;
            if theirs != r {
                return Err(format!("register {r:?} where iced has {theirs:?}"));
            }
        }
        Want::Source16(n) => match register()? {
            R::Gpr(theirs, _) if theirs == n => {}
            theirs => return Err(format!("register {n} where iced has {theirs:?}")),
        },
        Want::Imm(value, size) => {
            let immediate = matches!(
                kind,
                OpKind::Immediate8
                    | OpKind::Immediate16
                    | OpKind::Immediate32
                    | OpKind::Immediate8to16
                    | OpKind::Immediate8to32
                    | OpKind::Immediate8to64
                    | OpKind::Immediate32to64
            );
            if !immediate {
                return Err(format!("an immediate where iced has {kind:?}"));
            }
            let mask = if size >= 8 { u64::MAX } else { (1u64 << (8 * size)) - 1 };
            if value as u64 & mask != insn.immediate(i) & mask {
                return Err(format!("immediate {value:#x} where iced has {:#x}", insn.immediate(i)));
            }
        }
        Want::Mem(mem, size) => memory_agrees(insn, i, &mem, size)?,
        Want::StringDst { addr32 } => {
            let expected = if addr32 { OpKind::MemoryESEDI } else { OpKind::MemoryESRDI };
            if kind != expected {
                return Err(format!("{expected:?} where iced has {kind:?}"));
            }
        }
        Want::StringSrc { addr32, segment } => {
            let expected = if addr32 { OpKind::MemorySegESI } else { OpKind::MemorySegRSI };
            if kind != expected {
                return Err(format!("{expected:?} where iced has {kind:?}"));
            }
            // iced names the segment in effect: DS when no prefix names one.
            let theirs = segment_of(insn.memory_segment());
            if theirs != Some(segment.unwrap_or(Segment::Ds)) {
                return Err(format!("source segment {segment:?} where iced has {:?}", insn.memory_segment()));
            }
        }
    }
    Ok(())
}

/// Compares memory operand `i` of `insn` with `mem`: the parts, then the
/// effective address both compute from the same registers.
fn memory_agrees(insn: &Instruction, i: u32, mem: &Mem, size: Option<usize>) -> Result<(), String> {
    if insn.op_kind(i) != OpKind::Memory {
        return Err(format!("memory where iced has {:?}", insn.op_kind(i)));
    }
    let gpr64 = |r: Register| match reg_of(r) {
        Some(R::Gpr(n, 8)) => Ok(Some(n)),
        None if r == Register::None => Ok(None),
        _ => Err(format!("iced addresses with {r:?}")),
    };
    let base = if insn.memory_base() == Register::RIP { None } else { gpr64(insn.memory_base())? };
    if mem.rip_relative != (insn.memory_base() == Register::RIP) || mem.base.map(|r| r.0) != base {
        return Err(format!(
            "base {:?} (rip-relative: {}) where iced has {:?}",
            mem.base,
            mem.rip_relative,
            insn.memory_base()
        ));
    }
    let index = gpr64(insn.memory_index())?.map(|n| (n, insn.memory_index_scale() as u8));
    if mem.index.map(|(r, scale)| (r.0, scale)) != index {
        return Err(format!(
            "index {:?} where iced has {:?}*{}",
            mem.index,
            insn.memory_index(),
            insn.memory_index_scale()
        ));
    }
    let next_rip = insn.next_ip();
    let ours = mem.address(|r| register_value(r.0), next_rip);
    let theirs = insn.virtual_address(i, 0, |r, _, _| match reg_of(r) {
        Some(R::Gpr(n, 8)) => Some(register_value(n)),
        Some(R::Sreg(_)) => Some(0), // segment bases are compared as overrides, below
        _ => None,
    });
    if theirs != Some(ours) {
        return Err(format!("address {ours:#x} where iced computes {theirs:x?}"));
    }
    if mem.segment != segment_of(insn.segment_prefix()) {
        return Err(format!("segment {:?} where iced has {:?}", mem.segment, insn.segment_prefix()));
    }
    if let Some(size) = size {
        if insn.memory_size().size() != size {
            return Err(format!("{size} bytes of memory where iced has {:?}", insn.memory_size()));
        }
    }
    Ok(())
}
