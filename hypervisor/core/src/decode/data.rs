//! The data instructions that write memory, for the store emulator.
//!
//! Under shadow paging an emulated kernel's page tables are read-only in
//! every shadow, so each store the kernel makes to them faults, and the
//! hypervisor must carry it out instead (`emulated::store`). Which
//! instructions does a compiled kernel write page tables with? A plain
//! `mov` for an entry, `lock cmpxchg` or `xchg` for atomic updates,
//! `lock or`/`and` to set and clear bits, `rep stosq` or SSE stores to
//! clear a new table, `rep movsq` to copy one. Those are the forms known
//! here ([`SUPPORTED`]). Only memory destinations are accepted: a register
//! form never writes memory, so it never reaches the emulator.
//!
//! Encodings (Intel SDM vol. 2): operand size is 1 for the byte opcodes,
//! else 8 with REX.W, 2 with 0x66, 4 otherwise; an immediate is at most 32
//! bits and sign-extended to a 64-bit operand. Byte registers 4..7 are
//! ah, ch, dh, bh *unless* a REX prefix is present (then spl, bpl, sil,
//! dil). SSE stores take 0x66, 0xf3 or 0xf2 as part of the opcode.
//! `lock` is accepted where the CPU accepts it (the read-modify-write
//! forms); `rep` only on the string instructions. A 0x67 prefix (32-bit
//! addresses) is accepted on the string instructions only.

use super::{mem_only, modrm, Cursor, DecodeError, Mem, Prefixes, Reg, Segment, Size};

/// A general-purpose register as a data operand, at the operand size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataReg {
    /// The low bytes of register n (0 = rax ... 15 = r15).
    Gpr(Reg),
    /// ah, ch, dh or bh (0..=3): bits 8..16 of rax, rcx, rdx or rbx.
    HighByte(u8),
}

/// What a store writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// A register.
    Reg(DataReg),
    /// An immediate, sign-extended (the emulator keeps the operand size).
    Imm(i64),
}

/// The read-modify-write operations of [`StoreOp::Alu`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AluOp {
    /// `add`.
    Add,
    /// `or`.
    Or,
    /// `and`.
    And,
    /// `sub`.
    Sub,
    /// `xor`.
    Xor,
}

/// A memory-writing data instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreOp {
    /// `mov m, r` / `mov m, imm` / `movnti m, r`.
    Mov {
        /// Destination.
        dst: Mem,
        /// Value.
        src: Source,
        /// Operand size in bytes.
        size: Size,
    },
    /// `add|or|and|sub|xor m, r|imm`, with RFLAGS results.
    Alu {
        /// The operation.
        op: AluOp,
        /// Destination (and first operand).
        dst: Mem,
        /// Second operand.
        src: Source,
        /// Operand size in bytes.
        size: Size,
        /// A `lock` prefix.
        locked: bool,
    },
    /// `xchg m, r`.
    Xchg {
        /// The memory operand.
        dst: Mem,
        /// The register operand.
        reg: DataReg,
        /// Operand size in bytes.
        size: Size,
    },
    /// `cmpxchg m, r`: compares al/ax/eax/rax with `m`.
    Cmpxchg {
        /// The memory operand.
        dst: Mem,
        /// What is stored when they are equal.
        reg: DataReg,
        /// Operand size in bytes.
        size: Size,
        /// A `lock` prefix.
        locked: bool,
    },
    /// `stos` (`rep stos`): stores al/ax/eax/rax at rdi.
    Stos {
        /// Element size in bytes.
        size: Size,
        /// A `rep` prefix: rcx elements.
        rep: bool,
        /// 32-bit addresses (0x67): edi and ecx.
        addr32: bool,
    },
    /// `movs` (`rep movs`): copies from rsi to rdi.
    Movs {
        /// Element size in bytes.
        size: Size,
        /// A `rep` prefix: rcx elements.
        rep: bool,
        /// 32-bit addresses (0x67): esi, edi and ecx.
        addr32: bool,
        /// A segment override of the source (FS and GS add their base;
        /// SS makes it a stack reference).
        src_segment: Option<Segment>,
    },
    /// An SSE store: `bytes` bytes of register `xmm` from byte `from`.
    SseStore {
        /// Destination.
        dst: Mem,
        /// xmm0..xmm15.
        xmm: u8,
        /// Bytes stored: 16, 8 or 4.
        bytes: u8,
        /// First byte of the register stored (8 for `movhps`).
        from: u8,
        /// The instruction requires a 16-byte aligned address (else #GP).
        aligned: bool,
    },
}

/// Every memory-writing instruction known, for the docs.
pub const SUPPORTED: &[(&str, &str)] = &[
    ("mov m8, r8", "88 /r"),
    ("mov m16|32|64, r", "89 /r"),
    ("mov m8, imm8", "C6 /0 ib"),
    ("mov m16|32|64, imm", "C7 /0 iw|id"),
    ("movnti m32|64, r", "0F C3 /r"),
    ("add m, r", "00 /r / 01 /r"),
    ("or m, r", "08 /r / 09 /r"),
    ("and m, r", "20 /r / 21 /r"),
    ("sub m, r", "28 /r / 29 /r"),
    ("xor m, r", "30 /r / 31 /r"),
    ("add|or|and|sub|xor m8, imm8", "80 /0 /1 /4 /5 /6 ib"),
    ("add|or|and|sub|xor m, imm", "81 /0 /1 /4 /5 /6 iw|id"),
    ("add|or|and|sub|xor m, imm8 (sign-extended)", "83 /0 /1 /4 /5 /6 ib"),
    ("lock add|or|and|sub|xor", "F0 + the above"),
    ("xchg m8, r8 / xchg m, r", "86 /r / 87 /r"),
    ("(lock) cmpxchg m8, r8 / m, r", "(F0) 0F B0 /r / 0F B1 /r"),
    ("stosb / stosw|d|q", "AA / AB"),
    ("rep stos", "F3 AA / F3 AB"),
    ("movsb / movsw|d|q", "A4 / A5"),
    ("rep movs", "F3 A4 / F3 A5"),
    ("movups / movupd m128, xmm", "0F 11 / 66 0F 11"),
    ("movaps / movapd m128, xmm", "0F 29 / 66 0F 29"),
    ("movdqu m128, xmm", "F3 0F 7F"),
    ("movdqa m128, xmm", "66 0F 7F"),
    ("movq m64, xmm", "66 0F D6"),
    ("movss m32, xmm", "F3 0F 11"),
    ("movsd m64, xmm", "F2 0F 11"),
    ("movlps / movlpd m64, xmm", "0F 13 / 66 0F 13"),
    ("movhps / movhpd m64, xmm", "0F 17 / 66 0F 17"),
];

/// Decodes a memory-writing instruction whose first opcode byte is `b`
/// (prefixes already read), or says it is not one (`None`, nothing
/// consumed).
pub(super) fn decode(b: u8, c: &mut Cursor<'_>, p: &Prefixes) -> Result<Option<StoreOp>, DecodeError> {
    let size = if b & 1 == 0 { 1 } else { p.word_size() };
    let op = match b {
        0x88 | 0x89 => {
            plain(p)?;
            let (dst, reg) = mem_reg(c, p, size)?;
            StoreOp::Mov { dst, src: Source::Reg(reg), size }
        }
        0xc6 | 0xc7 => {
            plain(p)?;
            let m = modrm(c, p)?;
            if m.reg & 7 != 0 {
                return Err(DecodeError::Unsupported); // xabort/xbegin and friends
            }
            let dst = mem_only(&m)?;
            StoreOp::Mov { dst, src: Source::Imm(imm(c, size)?), size }
        }
        0x00 | 0x01 | 0x08 | 0x09 | 0x20 | 0x21 | 0x28 | 0x29 | 0x30 | 0x31 => {
            let locked = lockable(p)?;
            let (dst, reg) = mem_reg(c, p, size)?;
            StoreOp::Alu {
                op: alu_op(b >> 3).ok_or(DecodeError::Unsupported)?,
                dst,
                src: Source::Reg(reg),
                size,
                locked,
            }
        }
        0x80 | 0x81 | 0x83 => {
            let locked = lockable(p)?;
            let size = if b == 0x80 { 1 } else { p.word_size() };
            let m = modrm(c, p)?;
            let op = alu_op(m.reg & 7).ok_or(DecodeError::Unsupported)?;
            let dst = mem_only(&m)?;
            let src = if b == 0x83 { i64::from(c.next()? as i8) } else { imm(c, size)? };
            StoreOp::Alu { op, dst, src: Source::Imm(src), size, locked }
        }
        0x86 | 0x87 => {
            lockable(p)?;
            let (dst, reg) = mem_reg(c, p, size)?;
            StoreOp::Xchg { dst, reg, size }
        }
        0xaa | 0xab | 0xa4 | 0xa5 => {
            if p.lock || p.repne {
                return Err(DecodeError::Unsupported);
            }
            let (rep, addr32) = (p.rep, p.addr32);
            if b >= 0xaa {
                StoreOp::Stos { size, rep, addr32 }
            } else {
                StoreOp::Movs { size, rep, addr32, src_segment: p.segment }
            }
        }
        0x0f => match c.peek() {
            Some(second) if is_two_byte_store(second) => {
                c.next()?;
                two_byte(second, c, p)?
            }
            _ => return Ok(None),
        },
        _ => return Ok(None),
    };
    Ok(Some(op))
}

fn is_two_byte_store(b: u8) -> bool {
    matches!(b, 0xc3 | 0x11 | 0x29 | 0x7f | 0xd6 | 0x13 | 0x17 | 0xb0 | 0xb1)
}

fn two_byte(b: u8, c: &mut Cursor<'_>, p: &Prefixes) -> Result<StoreOp, DecodeError> {
    match b {
        0xc3 => {
            plain(p)?;
            if p.opsize16 {
                return Err(DecodeError::Unsupported); // movnti has no 16-bit form
            }
            let size = p.word_size();
            let (dst, reg) = mem_reg(c, p, size)?;
            Ok(StoreOp::Mov { dst, src: Source::Reg(reg), size })
        }
        0xb0 | 0xb1 => {
            let locked = lockable(p)?;
            let size = if b == 0xb0 { 1 } else { p.word_size() };
            let (dst, reg) = mem_reg(c, p, size)?;
            Ok(StoreOp::Cmpxchg { dst, reg, size, locked })
        }
        _ => sse(b, c, p),
    }
}

/// The SSE stores: the mandatory prefix (none, 66, F3 or F2) is part of
/// the opcode, so at most one may be present.
fn sse(b: u8, c: &mut Cursor<'_>, p: &Prefixes) -> Result<StoreOp, DecodeError> {
    if p.lock || p.addr32 || u8::from(p.opsize16) + u8::from(p.rep) + u8::from(p.repne) > 1 {
        return Err(DecodeError::Unsupported);
    }
    // (bytes, from, aligned)
    let shape = match (b, p.opsize16, p.rep, p.repne) {
        (0x11, _, false, false) => (16, 0, false), // movups, movupd
        (0x11, _, true, _) => (4, 0, false),       // movss
        (0x11, _, _, true) => (8, 0, false),       // movsd
        (0x29, _, false, false) => (16, 0, true),  // movaps, movapd
        (0x7f, true, _, _) => (16, 0, true),       // movdqa
        (0x7f, _, true, _) => (16, 0, false),      // movdqu
        (0xd6, true, _, _) => (8, 0, false),       // movq
        (0x13, _, false, false) => (8, 0, false),  // movlps, movlpd
        (0x17, _, false, false) => (8, 8, false),  // movhps, movhpd
        _ => return Err(DecodeError::Unsupported),
    };
    let m = modrm(c, p)?;
    let dst = mem_only(&m)?;
    let (bytes, from, aligned) = shape;
    Ok(StoreOp::SseStore { dst, xmm: m.reg, bytes, from, aligned })
}

/// Refuses the prefixes a plain store does not take.
fn plain(p: &Prefixes) -> Result<(), DecodeError> {
    if p.lock || p.rep || p.repne || p.addr32 {
        return Err(DecodeError::Unsupported);
    }
    Ok(())
}

/// Refuses the prefixes a lockable instruction does not take; says
/// whether it is locked.
fn lockable(p: &Prefixes) -> Result<bool, DecodeError> {
    if p.rep || p.repne || p.addr32 {
        return Err(DecodeError::Unsupported);
    }
    Ok(p.lock)
}

/// A memory destination and a register source (ModRM.reg).
fn mem_reg(c: &mut Cursor<'_>, p: &Prefixes, size: Size) -> Result<(Mem, DataReg), DecodeError> {
    let m = modrm(c, p)?;
    let dst = mem_only(&m)?;
    let reg = if size == 1 && !p.rex && (4..8).contains(&m.reg) {
        DataReg::HighByte(m.reg - 4)
    } else {
        DataReg::Gpr(Reg(m.reg))
    };
    Ok((dst, reg))
}

/// An immediate of the operand size (at most 32 bits), sign-extended.
fn imm(c: &mut Cursor<'_>, size: Size) -> Result<i64, DecodeError> {
    Ok(match size {
        1 => i64::from(c.next()? as i8),
        2 => i64::from(i16::from_le_bytes([c.next()?, c.next()?])),
        _ => c.imm32()?,
    })
}

/// The operation of ALU opcode group `n` (the /digit or opcode bits 3..5).
fn alu_op(n: u8) -> Option<AluOp> {
    match n {
        0 => Some(AluOp::Add),
        1 => Some(AluOp::Or),
        4 => Some(AluOp::And),
        5 => Some(AluOp::Sub),
        6 => Some(AluOp::Xor),
        _ => None,
    }
}
