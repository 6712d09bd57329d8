//! An x86-64 decoder for the instructions a deprivileged kernel traps on.
//!
//! Trap-and-emulate runs an unmodified kernel in ring 3: every privileged
//! or sensitive instruction it executes faults (#GP, #UD), and the
//! hypervisor must find out which instruction it was, with which operands,
//! before it can emulate it against the virtual CPU. This module does the
//! first half: bytes in, a [`Decoded`] instruction out. It knows exactly the
//! instructions in [`SUPPORTED`] (a table the documentation shows) and
//! refuses anything else with [`DecodeError::Unsupported`], so the
//! emulator can stop a guest with a report that prints the bytes.
//!
//! Besides the privileged and sensitive instructions, it knows the data
//! instructions that *write memory* (see [`data`]): under shadow paging an
//! emulated kernel's page tables are write-protected, so its stores to
//! them fault and must be carried out by the hypervisor
//! (`emulated::store`).
//!
//! Encoding facts used here (Intel SDM vol. 2, chapter 2): legacy prefixes,
//! then an optional REX prefix (0x40-0x4f: W = 64-bit operand, R/X/B =
//! extend ModRM.reg / SIB.index / ModRM.rm or SIB.base), the opcode (one
//! byte, or 0x0f and a second), a ModRM byte (mod, reg, rm), an optional
//! SIB byte (rm = 100 with mod != 11), and an 8- or 32-bit displacement;
//! mod = 00 with rm = 101 is RIP-relative in 64-bit mode.

/// A general-purpose register, by its 4-bit number (0 = rax ... 15 = r15).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reg(pub u8);

/// A memory operand: `base + index * scale + disp`, or RIP-relative.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mem {
    /// Base register, if any.
    pub base: Option<Reg>,
    /// Index register and scale (1, 2, 4 or 8), if any.
    pub index: Option<(Reg, u8)>,
    /// Displacement (sign-extended).
    pub disp: i64,
    /// Relative to the address of the next instruction.
    pub rip_relative: bool,
    /// A segment override prefix: the last FS or GS one, else the last
    /// of the others (which add no base in 64-bit mode).
    pub segment: Option<Segment>,
}

impl Mem {
    /// The effective address, given a register reader and the address of
    /// the next instruction (segment bases not included).
    pub fn address(&self, reg: impl Fn(Reg) -> u64, next_rip: u64) -> u64 {
        let mut a = self.disp as u64;
        if self.rip_relative {
            a = a.wrapping_add(next_rip);
        }
        if let Some(b) = self.base {
            a = a.wrapping_add(reg(b));
        }
        if let Some((i, scale)) = self.index {
            a = a.wrapping_add(reg(i).wrapping_mul(u64::from(scale)));
        }
        a
    }

    /// Whether the reference goes through SS: its base is rsp or rbp and
    /// no override names another segment, or an `ss:` override names SS
    /// (Intel SDM vol. 1, 3.7.4). A non-canonical address there is #SS(0),
    /// elsewhere #GP(0).
    pub fn through_stack(&self) -> bool {
        match self.segment {
            Some(segment) => segment == Segment::Ss,
            None => matches!(self.base, Some(Reg(4 | 5))),
        }
    }
}

/// A segment override prefix. In 64-bit mode only FS and GS add a base;
/// SS makes the reference a stack one ([`Mem::through_stack`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Segment {
    /// 0x26.
    Es,
    /// 0x2e.
    Cs,
    /// 0x36.
    Ss,
    /// 0x3e.
    Ds,
    /// 0x64.
    Fs,
    /// 0x65.
    Gs,
}

/// A register or memory operand (ModRM.rm).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operand {
    /// A register.
    Reg(Reg),
    /// Memory.
    Mem(Mem),
}

/// Where an `in`/`out` gets its port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortOperand {
    /// An immediate byte.
    Imm(u8),
    /// The `dx` register.
    Dx,
}

/// Operand size in bytes.
pub type Size = u8;

/// A control register that exists in 64-bit mode (`mov` to or from any
/// other is an invalid opcode, [`DecodeError::Invalid`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlRegister {
    /// CR0: protection, paging, caching and the FPU.
    Cr0,
    /// CR2: the page-fault address.
    Cr2,
    /// CR3: the page-table root.
    Cr3,
    /// CR4: feature enables.
    Cr4,
    /// CR8: the task-priority register.
    Cr8,
}

impl ControlRegister {
    /// The register named by ModRM.reg (with REX.R), if it exists.
    fn from_number(n: u8) -> Option<Self> {
        Some(match n {
            0 => ControlRegister::Cr0,
            2 => ControlRegister::Cr2,
            3 => ControlRegister::Cr3,
            4 => ControlRegister::Cr4,
            8 => ControlRegister::Cr8,
            _ => return None,
        })
    }

    /// Its number (the N of crN).
    pub fn number(self) -> u8 {
        match self {
            ControlRegister::Cr0 => 0,
            ControlRegister::Cr2 => 2,
            ControlRegister::Cr3 => 3,
            ControlRegister::Cr4 => 4,
            ControlRegister::Cr8 => 8,
        }
    }
}

/// A decoded instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `lgdt m`.
    Lgdt(Mem),
    /// `lidt m`.
    Lidt(Mem),
    /// `sgdt m`.
    Sgdt(Mem),
    /// `sidt m`.
    Sidt(Mem),
    /// `smsw r/m`, at an operand size (2, 4 or 8) that sets how much of
    /// a register destination is written; memory takes 2 bytes.
    Smsw(Operand, Size),
    /// `lmsw r/m`.
    Lmsw(Operand),
    /// `invlpg m`.
    Invlpg(Mem),
    /// `swapgs`.
    Swapgs,
    /// `rdtscp`.
    Rdtscp,
    /// `sldt r/m`, at an operand size as for [`Op::Smsw`].
    Sldt(Operand, Size),
    /// `str r/m`, at an operand size as for [`Op::Smsw`].
    Str(Operand, Size),
    /// `lldt r/m`.
    Lldt(Operand),
    /// `ltr r/m`.
    Ltr(Operand),
    /// `verr r/m`.
    Verr(Operand),
    /// `verw r/m`.
    Verw(Operand),
    /// `lar r, r/m16`, at the operand size (2, 4 or 8) of the register.
    Lar(Reg, Operand, Size),
    /// `lsl r, r/m16`, at the operand size (2, 4 or 8) of the register.
    Lsl(Reg, Operand, Size),
    /// `mov r64, crN`.
    MovFromCr(Reg, ControlRegister),
    /// `mov crN, r64`.
    MovToCr(ControlRegister, Reg),
    /// `mov r64, drN` (dr0..dr7).
    MovFromDr(Reg, u8),
    /// `mov drN, r64` (dr0..dr7).
    MovToDr(u8, Reg),
    /// `wrmsr`.
    Wrmsr,
    /// `rdmsr`.
    Rdmsr,
    /// `rdtsc`.
    Rdtsc,
    /// `rdpmc`.
    Rdpmc,
    /// `cpuid`.
    Cpuid,
    /// `syscall`.
    Syscall,
    /// `sysret` (`true`: `sysretq`, to 64-bit code).
    Sysret(bool),
    /// `clts`.
    Clts,
    /// `invd`.
    Invd,
    /// `wbinvd`.
    Wbinvd,
    /// `cli`.
    Cli,
    /// `sti`.
    Sti,
    /// `hlt`.
    Hlt,
    /// `pushf` (operand size 8 or 2).
    Pushf(Size),
    /// `popf` (operand size 8 or 2).
    Popf(Size),
    /// `iret` (operand size 8: `iretq`, 4: `iretd`, 2).
    Iret(Size),
    /// `retf` (operand size 8: `lretq`, the far return a kernel reloads
    /// CS with after `lgdt`; 4 or 2 otherwise).
    Retf(Size),
    /// `in al/ax/eax, port`.
    In(Size, PortOperand),
    /// `out port, al/ax/eax`.
    Out(Size, PortOperand),
    /// `ins`/`outs` and other string I/O (refused by the emulator, named in reports).
    StringIo,
    /// `mov r/m, sreg` (sreg 0 es, 1 cs, 2 ss, 3 ds, 4 fs, 5 gs), at an
    /// operand size as for [`Op::Smsw`].
    MovFromSreg(Operand, u8, Size),
    /// `mov sreg, r/m`.
    MovToSreg(u8, Operand),
    /// `int n`.
    Int(u8),
    /// `int3`.
    Int3,
    /// An instruction that writes memory (see [`data`]).
    Store(StoreOp),
}

/// A decoded instruction and its length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decoded {
    /// The instruction.
    pub op: Op,
    /// Its length in bytes (the emulator advances `rip` by it).
    pub len: usize,
}

/// Why bytes could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The bytes end inside the instruction (x86 instructions are at most 15 bytes).
    Truncated,
    /// Not an instruction this decoder knows (the emulator's report prints the bytes).
    Unsupported,
    /// An instruction the decoder knows, in a form the CPU refuses with an
    /// invalid-opcode exception (#UD) at any privilege: a control register
    /// other than CR0, CR2, CR3, CR4 and CR8, a debug register above DR7.
    Invalid,
}

impl core::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            DecodeError::Truncated => "the instruction bytes end early",
            DecodeError::Unsupported => "not an instruction the emulator supports",
            DecodeError::Invalid => "not a valid instruction (an invalid opcode for the CPU)",
        })
    }
}

/// Every instruction the decoder knows: mnemonic and encoding, for the docs.
pub const SUPPORTED: &[(&str, &str)] = &[
    ("lgdt m", "0F 01 /2"),
    ("lidt m", "0F 01 /3"),
    ("sgdt m", "0F 01 /0"),
    ("sidt m", "0F 01 /1"),
    ("smsw r/m16", "0F 01 /4"),
    ("lmsw r/m16", "0F 01 /6"),
    ("invlpg m", "0F 01 /7 (memory)"),
    ("swapgs", "0F 01 F8"),
    ("rdtscp", "0F 01 F9"),
    ("sldt r/m16", "0F 00 /0"),
    ("str r/m16", "0F 00 /1"),
    ("lldt r/m16", "0F 00 /2"),
    ("ltr r/m16", "0F 00 /3"),
    ("verr r/m16", "0F 00 /4"),
    ("verw r/m16", "0F 00 /5"),
    ("lar r, r/m16", "0F 02 /r"),
    ("lsl r, r/m16", "0F 03 /r"),
    ("mov r64, crN (cr0, cr2, cr3, cr4, cr8)", "0F 20 /r"),
    ("mov crN, r64 (cr0, cr2, cr3, cr4, cr8)", "0F 22 /r"),
    ("mov r64, drN (dr0-dr7)", "0F 21 /r"),
    ("mov drN, r64 (dr0-dr7)", "0F 23 /r"),
    ("syscall", "0F 05"),
    ("clts", "0F 06"),
    ("sysret / sysretq", "0F 07 / REX.W 0F 07"),
    ("invd", "0F 08"),
    ("wbinvd", "0F 09"),
    ("wrmsr", "0F 30"),
    ("rdtsc", "0F 31"),
    ("rdmsr", "0F 32"),
    ("rdpmc", "0F 33"),
    ("cpuid", "0F A2"),
    ("cli", "FA"),
    ("sti", "FB"),
    ("hlt", "F4"),
    ("pushf / pushfq", "9C"),
    ("popf / popfq", "9D"),
    ("iret / iretd / iretq", "CF"),
    ("retf / lretq (far return)", "CB / REX.W CB"),
    ("in al|ax|eax, imm8", "E4 ib / E5 ib"),
    ("out imm8, al|ax|eax", "E6 ib / E7 ib"),
    ("in al|ax|eax, dx", "EC / ED"),
    ("out dx, al|ax|eax", "EE / EF"),
    ("ins / outs", "6C-6F"),
    ("mov r/m, sreg", "8C /r"),
    ("mov sreg, r/m", "8E /r"),
    ("int imm8", "CD ib"),
    ("int3", "CC"),
];

/// The memory-writing data instructions the decoder knows (register
/// forms are refused: they never write memory), for the docs.
pub const SUPPORTED_STORES: &[(&str, &str)] = data::SUPPORTED;

/// The longest x86 instruction.
pub const MAX_LEN: usize = 15;

/// The environment variable in which `cargo xtask test` names the ELF
/// files of the bare-metal kernels (separated as in `PATH`), whose every
/// instruction the decoder's differential test compares with a reference
/// decoder.
pub const KERNELS_TO_SWEEP: &str = "PARVUS_BARE_METAL_KERNELS";

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

/// The bytes of one instruction, read in order. Every byte is consumed
/// through [`Cursor::next`], which holds the 15-byte limit.
impl Cursor<'_> {
    /// The next byte, not consumed (a choice between encodings; the one
    /// chosen then consumes it with [`Cursor::next`]).
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn next(&mut self) -> Result<u8, DecodeError> {
        if self.at >= MAX_LEN {
            return Err(DecodeError::Unsupported);
        }
        let b = *self.bytes.get(self.at).ok_or(DecodeError::Truncated)?;
        self.at += 1;
        Ok(b)
    }

    fn imm32(&mut self) -> Result<i64, DecodeError> {
        let mut v = [0u8; 4];
        for b in &mut v {
            *b = self.next()?;
        }
        Ok(i64::from(i32::from_le_bytes(v)))
    }
}

#[derive(Clone, Copy, Default)]
struct Prefixes {
    opsize16: bool,
    /// 0x67: 32-bit addresses.
    addr32: bool,
    /// 0xf0.
    lock: bool,
    /// 0xf3: `rep`, or a mandatory SSE prefix.
    rep: bool,
    /// 0xf2: `repne`, or a mandatory SSE prefix.
    repne: bool,
    /// Some REX prefix (then byte registers 4..7 are spl..dil, not ah..bh).
    rex: bool,
    rex_w: bool,
    rex_r: bool,
    rex_x: bool,
    rex_b: bool,
    segment: Option<Segment>,
}

struct ModRm {
    md: u8,
    reg: u8,
    rm: Operand,
}

impl Prefixes {
    /// The operand size of an instruction whose default is 32 bits: 8
    /// with REX.W (which wins over 0x66), 2 with 0x66, 4 otherwise.
    fn word_size(&self) -> Size {
        if self.rex_w {
            8
        } else if self.opsize16 {
            2
        } else {
            4
        }
    }
}

fn modrm(c: &mut Cursor<'_>, p: &Prefixes) -> Result<ModRm, DecodeError> {
    let b = c.next()?;
    let (md, reg, rm) = (b >> 6, (b >> 3) & 7, b & 7);
    let reg = reg | if p.rex_r { 8 } else { 0 };
    if md == 3 {
        return Ok(ModRm { md, reg, rm: Operand::Reg(Reg(rm | if p.rex_b { 8 } else { 0 })) });
    }
    let mut mem = Mem { base: None, index: None, disp: 0, rip_relative: false, segment: p.segment };
    if rm == 4 {
        let sib = c.next()?;
        let (scale, index, base) = (1u8 << (sib >> 6), ((sib >> 3) & 7) | if p.rex_x { 8 } else { 0 }, sib & 7);
        if index != 4 {
            mem.index = Some((Reg(index), scale));
        }
        if base == 5 && md == 0 {
            mem.disp = c.imm32()?;
        } else {
            mem.base = Some(Reg(base | if p.rex_b { 8 } else { 0 }));
        }
    } else if rm == 5 && md == 0 {
        mem.rip_relative = true;
        mem.disp = c.imm32()?;
    } else {
        mem.base = Some(Reg(rm | if p.rex_b { 8 } else { 0 }));
    }
    match md {
        1 => mem.disp += i64::from(c.next()? as i8),
        2 => mem.disp += c.imm32()?,
        _ => {}
    }
    Ok(ModRm { md, reg, rm: Operand::Mem(mem) })
}

fn mem_only(m: &ModRm) -> Result<Mem, DecodeError> {
    match m.rm {
        Operand::Mem(mem) => Ok(mem),
        Operand::Reg(_) => Err(DecodeError::Unsupported),
    }
}

/// Decodes the instruction at the start of `bytes`.
pub fn decode(bytes: &[u8]) -> Result<Decoded, DecodeError> {
    let mut c = Cursor { bytes, at: 0 };
    let mut p = Prefixes::default();
    let mut b = c.next()?;
    loop {
        match b {
            0x66 => p.opsize16 = true,
            // In 64-bit mode ES, CS, SS and DS add no base, so one of them
            // never displaces an FS or GS override met before it; it is kept
            // otherwise, for `Mem::through_stack`.
            0x26 | 0x2e | 0x36 | 0x3e if matches!(p.segment, Some(Segment::Fs | Segment::Gs)) => {}
            0x26 => p.segment = Some(Segment::Es),
            0x2e => p.segment = Some(Segment::Cs),
            0x36 => p.segment = Some(Segment::Ss),
            0x3e => p.segment = Some(Segment::Ds),
            0x64 => p.segment = Some(Segment::Fs),
            0x65 => p.segment = Some(Segment::Gs),
            0x67 => p.addr32 = true,
            0xf0 => p.lock = true,
            0xf2 => p.repne = true,
            0xf3 => p.rep = true,
            _ => break,
        }
        b = c.next()?;
    }
    if (0x40..=0x4f).contains(&b) {
        p.rex = true;
        p.rex_w = b & 8 != 0;
        p.rex_r = b & 4 != 0;
        p.rex_x = b & 2 != 0;
        p.rex_b = b & 1 != 0;
        b = c.next()?;
    }
    if let Some(store) = data::decode(b, &mut c, &p)? {
        return Ok(Decoded { op: Op::Store(store), len: c.at });
    }
    if p.addr32 || p.lock || p.rep || p.repne {
        return Err(DecodeError::Unsupported); // no system instruction takes them
    }
    // Port I/O moves at most 32 bits: REX.W only cancels a 0x66.
    let io_size = p.word_size().min(4);
    // pushf/popf default to 64 bits; 0x66 makes them 16 unless REX.W wins.
    let stack_size = if p.word_size() == 2 { 2 } else { 8 };
    let op = match b {
        0x0f => two_byte(&mut c, &p)?,
        0xfa => Op::Cli,
        0xfb => Op::Sti,
        0xf4 => Op::Hlt,
        0x9c => Op::Pushf(stack_size),
        0x9d => Op::Popf(stack_size),
        0xcf => Op::Iret(if p.rex_w { 8 } else if p.opsize16 { 2 } else { 4 }),
        0xcb => Op::Retf(if p.rex_w { 8 } else if p.opsize16 { 2 } else { 4 }),
        0xe4 => Op::In(1, PortOperand::Imm(c.next()?)),
        0xe5 => Op::In(io_size, PortOperand::Imm(c.next()?)),
        0xe6 => Op::Out(1, PortOperand::Imm(c.next()?)),
        0xe7 => Op::Out(io_size, PortOperand::Imm(c.next()?)),
        0xec => Op::In(1, PortOperand::Dx),
        0xed => Op::In(io_size, PortOperand::Dx),
        0xee => Op::Out(1, PortOperand::Dx),
        0xef => Op::Out(io_size, PortOperand::Dx),
        0x6c..=0x6f => Op::StringIo,
        0x8c => {
            let m = modrm(&mut c, &p)?;
            let sreg = m.reg & 7;
            if sreg > 5 {
                return Err(DecodeError::Unsupported);
            }
            Op::MovFromSreg(m.rm, sreg, p.word_size())
        }
        0x8e => {
            let m = modrm(&mut c, &p)?;
            let sreg = m.reg & 7;
            if sreg > 5 || sreg == 1 {
                return Err(DecodeError::Unsupported); // mov cs, r/m does not exist
            }
            Op::MovToSreg(sreg, m.rm)
        }
        0xcd => Op::Int(c.next()?),
        0xcc => Op::Int3,
        _ => return Err(DecodeError::Unsupported),
    };
    Ok(Decoded { op, len: c.at })
}

/// Whether the instruction at the start of `bytes` is one whose execution
/// in ring 3 can fault where ring 0 would not: a system instruction, I/O,
/// `cli`/`sti`, a segment-register load, a far transfer, an interrupt or
/// its return (Intel SDM vol. 3, 5.9, and each instruction's exceptions).
/// It is judged from the prefixes and the opcode alone, conservatively: an
/// opcode not known to be an ordinary one (the one-byte map, the two-byte
/// map's data and vector instructions, VEX and EVEX) counts.
///
/// The emulator asks it about the instructions [`decode`] does not know: a
/// #GP raised by any other (a load from a non-canonical address, an SSE
/// operand that breaks its alignment rule) is the guest's own, raised in
/// ring 0 just the same.
pub fn may_trap_for_privilege(bytes: &[u8]) -> bool {
    let legacy_prefix = |b: &u8| matches!(b, 0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 | 0x66 | 0x67 | 0xf0 | 0xf2 | 0xf3);
    let mut rest = bytes;
    while rest.first().is_some_and(legacy_prefix) {
        rest = &rest[1..];
    }
    if rest.first().is_some_and(|b| (0x40..=0x4f).contains(b)) {
        rest = &rest[1..]; // REX
    }
    let Some((&opcode, rest)) = rest.split_first() else { return true };
    let modrm = rest.first().copied();
    match opcode {
        0x0f => two_byte_may_trap(rest),
        // VEX and EVEX in 64-bit mode: vector instructions only.
        0xc4 | 0xc5 | 0x62 => false,
        // `call far` and `jmp far` through memory (FF /3, FF /5).
        0xff => modrm.is_none_or(|m| matches!((m >> 3) & 7, 3 | 5)),
        // Segment pushes and pops, BCD and the other opcodes invalid in
        // 64-bit mode (#UD anyway); string I/O; `mov sreg`; far call, far
        // return, `int3`, `int`, `into`, `iret`; I/O; `int1`, `hlt`, `cli`,
        // `sti`.
        0x06 | 0x07 | 0x0e | 0x16 | 0x17 | 0x1e | 0x1f | 0x27 | 0x2f | 0x37 | 0x3f | 0x60 | 0x61 | 0x82 | 0xd4..=0xd6
        | 0x6c..=0x6f | 0x8e | 0x9a | 0xca..=0xcf | 0xe4..=0xe7 | 0xea | 0xec..=0xef | 0xf1 | 0xf4 | 0xfa | 0xfb => true,
        _ => false,
    }
}

/// [`may_trap_for_privilege`] after 0x0f.
fn two_byte_may_trap(bytes: &[u8]) -> bool {
    let Some((&opcode, rest)) = bytes.split_first() else { return true };
    let modrm = rest.first().copied();
    match opcode {
        // The system groups, `lar`, `lsl`, `syscall`, `clts`, `sysret`,
        // `invd`, `wbinvd`, `mov` to and from control and debug registers,
        // `wrmsr`, `rdtsc`, `rdmsr`, `rdpmc`, `sysenter`, `sysexit`,
        // `getsec`, `vmread`, `vmwrite`, `pop fs`, `cpuid`, `pop gs`, `rsm`,
        // `lss`, `lfs`, `lgs`, and the opcodes no CPU defines.
        0x00..=0x0a | 0x0c | 0x20..=0x27 | 0x30..=0x37 | 0x39 | 0x3b..=0x3f | 0x78..=0x7b | 0xa1 | 0xa2 | 0xa6 | 0xa7
        | 0xa9 | 0xaa | 0xb2 | 0xb4 | 0xb5 => true,
        // `invept`, `invvpid`, `invpcid`, and ENQCMDS and its neighbours.
        0x38 => rest.first().is_none_or(|b| matches!(b, 0x80..=0x82 | 0xf8..=0xff)),
        // Group 9 in memory, but `cmpxchg8b`/`cmpxchg16b`: `xrstors`,
        // `xsaves`, the VMX pointer instructions.
        0xc7 => modrm.is_none_or(|m| m >> 6 != 3 && (m >> 3) & 7 != 1),
        _ => false,
    }
}

fn two_byte(c: &mut Cursor<'_>, p: &Prefixes) -> Result<Op, DecodeError> {
    let b = c.next()?;
    Ok(match b {
        0x00 => {
            let m = modrm(c, p)?;
            match m.reg & 7 {
                0 => Op::Sldt(m.rm, p.word_size()),
                1 => Op::Str(m.rm, p.word_size()),
                2 => Op::Lldt(m.rm),
                3 => Op::Ltr(m.rm),
                4 => Op::Verr(m.rm),
                5 => Op::Verw(m.rm),
                _ => return Err(DecodeError::Unsupported),
            }
        }
        0x01 => {
            // 0F 01 with mod = 11 encodes instructions in the rm field.
            match c.peek().ok_or(DecodeError::Truncated)? {
                0xf8 => {
                    c.next()?;
                    return Ok(Op::Swapgs);
                }
                0xf9 => {
                    c.next()?;
                    return Ok(Op::Rdtscp);
                }
                _ => {}
            }
            let m = modrm(c, p)?;
            match (m.reg & 7, m.md == 3) {
                (0, false) => Op::Sgdt(mem_only(&m)?),
                (1, false) => Op::Sidt(mem_only(&m)?),
                (2, false) => Op::Lgdt(mem_only(&m)?),
                (3, false) => Op::Lidt(mem_only(&m)?),
                (4, _) => Op::Smsw(m.rm, p.word_size()),
                (6, _) => Op::Lmsw(m.rm),
                (7, false) => Op::Invlpg(mem_only(&m)?),
                _ => return Err(DecodeError::Unsupported),
            }
        }
        0x02 | 0x03 => {
            let m = modrm(c, p)?;
            let dst = Reg(m.reg);
            if b == 0x02 {
                Op::Lar(dst, m.rm, p.word_size())
            } else {
                Op::Lsl(dst, m.rm, p.word_size())
            }
        }
        0x20..=0x23 => {
            // mov to/from control and debug registers: always register forms.
            let m = modrm(c, p)?;
            let Operand::Reg(gpr) = m.rm else { return Err(DecodeError::Unsupported) };
            let cr = || ControlRegister::from_number(m.reg).ok_or(DecodeError::Invalid);
            let dr = if m.reg < 8 { Ok(m.reg) } else { Err(DecodeError::Invalid) };
            match b {
                0x20 => Op::MovFromCr(gpr, cr()?),
                0x22 => Op::MovToCr(cr()?, gpr),
                0x21 => Op::MovFromDr(gpr, dr?),
                _ => Op::MovToDr(dr?, gpr),
            }
        }
        0x05 => Op::Syscall,
        0x06 => Op::Clts,
        0x07 => Op::Sysret(p.rex_w),
        0x08 => Op::Invd,
        0x09 => Op::Wbinvd,
        0x30 => Op::Wrmsr,
        0x31 => Op::Rdtsc,
        0x32 => Op::Rdmsr,
        0x33 => Op::Rdpmc,
        0xa2 => Op::Cpuid,
        _ => return Err(DecodeError::Unsupported),
    })
}

pub mod data;
#[cfg(test)]
mod differential;
mod display;
#[cfg(test)]
mod tests;

pub use data::{AluOp, DataReg, Source, StoreOp};
