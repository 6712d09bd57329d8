//! Carrying out a trapped privileged instruction against the virtual CPU.
//!
//! The guest executed a privileged instruction in ring 3 and the CPU raised
//! #GP (or #NP, for a selector the hypervisor keeps not present); the
//! hypervisor fetched and decoded the instruction ([`crate::decode`]). Here
//! it does what the instruction would have done at the guest's *virtual*
//! privilege level: at virtual CPL 0 it changes the virtual CPU, a device,
//! or the guest's memory and resumes after the instruction; at virtual CPL
//! 3 it applies the CPU's rules for user mode ([`user_mode_may_try`]): most
//! are refused with the #GP the guest kernel would get on real hardware,
//! and the few a user process may run (by CR4.UMIP, IOPL, the I/O bitmap,
//! a gate's DPL) are carried out.
//!
//! Each case is a few lines and names the manual's rule it follows. What
//! the emulator does not support stops the domain with a report naming the
//! instruction ([`EmulationError::Unsupported`]); nothing here can fault in
//! the hypervisor.

use super::address::{self, OperandFault};
use super::cpu::{canonical, cr, msr, TableRegister, VirtualCpu};
use super::devices::{Devices, PortWrite};
use super::guest_virt::{GuestVirt, VirtFault};
use super::inject::{deliver, EventKind, InjectError};
use crate::decode::{ControlRegister, Decoded, Mem, Op, Operand, PortOperand, Size};
use crate::hypercall::TlbFlush;
use crate::machine_memory::MachineMemory;
use crate::vcpu::{GuestRegs, GUEST_RFLAGS_MASK};
use control::Refused;
use hypercall_abi::bare_metal::RESERVED_GDT_SLOT;

mod control;
pub use control::CR4_SUPPORTED;

/// The interrupt flag in RFLAGS.
const IF: u64 = 1 << 9;
/// General protection fault.
const GP: u8 = 13;
/// Invalid opcode.
const UD: u8 = 6;
/// Segment not present.
const NP: u8 = 11;
/// The system-descriptor type of an available 64-bit TSS.
const AVAILABLE_TSS: u8 = 0x09;
/// The system-descriptor type of an LDT.
const LDT: u8 = 0x02;

/// What the hypervisor must do after an emulated instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Resume the guest (its `rip` is past the instruction).
    Next,
    /// Resume after this TLB flush (`invlpg`).
    Flush(TlbFlush),
    /// The guest's CR3 or its privilege level changed: load the shadow
    /// tables for its new (CR3, mode).
    AddressSpace,
    /// The GS or FS base the real CPU must hold changed (`swapgs`, `wrmsr`).
    SegmentBases,
    /// `hlt`: wait for a virtual interrupt.
    Halt,
    /// A byte for the domain's console.
    Console(u8),
    /// The PIT was reprogrammed: re-arm the platform timer.
    TimerChanged,
    /// The debug-exit port: the domain ends with this status.
    Exit(u8),
    /// The guest must take this exception at the instruction (its `rip`
    /// is unchanged): what real hardware would do.
    Fault {
        /// The vector.
        vector: u8,
        /// Its error code, if the vector has one.
        error_code: Option<u64>,
    },
    /// The guest must take a page fault at `va` (an operand it named is not
    /// mapped for it); its `rip` is unchanged.
    PageFault {
        /// The address (the guest's CR2).
        va: u64,
        /// The #PF error code.
        error_code: u64,
    },
}

/// Why an instruction could not be emulated; the domain is stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmulationError {
    /// The emulator does not do this (the text says what and why).
    Unsupported(&'static str),
    /// An operand leads outside the domain's RAM.
    NotRam(super::guest_phys::NotRam),
    /// An `int n` could not be delivered (a real CPU would triple-fault).
    Inject(InjectError),
}

impl core::fmt::Display for EmulationError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            EmulationError::Unsupported(why) => f.write_str(why),
            EmulationError::NotRam(n) => write!(f, "an operand is outside its RAM ({n})"),
            EmulationError::Inject(e) => write!(f, "the software interrupt cannot be delivered: {e}"),
        }
    }
}

/// A control-register or EFER write the virtual CPU does not take: the
/// guest's #GP(0), or a stop for what the emulator cannot do.
fn refused_write(refused: Refused) -> Result<Outcome, EmulationError> {
    match refused {
        Refused::GeneralProtection => Ok(Outcome::Fault { vector: GP, error_code: Some(0) }),
        Refused::Unsupported(why) => Err(EmulationError::Unsupported(why)),
    }
}

/// A fault while reaching memory becomes the guest's page fault (or its
/// #GP(0) for a non-canonical address that [`address`] did not see first:
/// a descriptor or TSS the guest placed across the canonical boundary).
fn memory_fault(f: VirtFault) -> Result<Outcome, EmulationError> {
    match f {
        VirtFault::PageFault { va, error_code } => Ok(Outcome::PageFault { va, error_code }),
        VirtFault::NonCanonical { .. } => Ok(Outcome::Fault { vector: GP, error_code: Some(0) }),
        VirtFault::NotRam(n) => Err(EmulationError::NotRam(n)),
    }
}

/// Why a memory operand could not be read or written.
#[derive(Clone, Copy, Debug)]
enum OperandError {
    /// Its address is not one the CPU would access (#GP(0) or #SS(0)).
    Address(OperandFault),
    /// Reaching it through the guest's page tables failed.
    Memory(VirtFault),
}

impl From<OperandFault> for OperandError {
    fn from(f: OperandFault) -> Self {
        OperandError::Address(f)
    }
}

impl From<VirtFault> for OperandError {
    fn from(f: VirtFault) -> Self {
        OperandError::Memory(f)
    }
}

/// An operand the guest cannot reach becomes the fault the CPU raises
/// there (or a stop, for memory outside its RAM).
fn operand_fault(e: OperandError) -> Result<Outcome, EmulationError> {
    match e {
        OperandError::Address(f) => Ok(Outcome::Fault { vector: f.vector(), error_code: Some(0) }),
        OperandError::Memory(f) => memory_fault(f),
    }
}

/// Reads memory operand `m` (`buf.len()` bytes) at the guest's privilege.
fn read_operand<M: MachineMemory>(
    m: &Mem,
    buf: &mut [u8],
    cpu: &VirtualCpu,
    regs: &GuestRegs,
    mem: &GuestVirt<'_, M>,
    next_rip: u64,
) -> Result<(), OperandError> {
    let va = address::operand(m, buf.len() as u64, regs, next_rip, cpu.segment_bases())?;
    Ok(mem.read(va, buf, false)?)
}

/// Writes `data` to memory operand `m` at the guest's privilege.
fn write_operand<M: MachineMemory>(
    m: &Mem,
    data: &[u8],
    cpu: &VirtualCpu,
    regs: &GuestRegs,
    mem: &mut GuestVirt<'_, M>,
    next_rip: u64,
) -> Result<(), OperandError> {
    let va = address::operand(m, data.len() as u64, regs, next_rip, cpu.segment_bases())?;
    Ok(mem.write(va, data)?)
}

/// Emulates `insn` for the guest at virtual time `now_ns`.
pub fn emulate<M: MachineMemory>(
    insn: &Decoded,
    cpu: &mut VirtualCpu,
    regs: &mut GuestRegs,
    mem: &mut GuestVirt<'_, M>,
    devices: &mut Devices,
    now_ns: u64,
) -> Result<Outcome, EmulationError> {
    let next_rip = regs.rip.wrapping_add(insn.len as u64);
    if cpu.cpl != 0 {
        match user_mode_allows(insn.op, cpu, regs, mem) {
            Ok(true) => {}
            Ok(false) => return Ok(Outcome::Fault { vector: GP, error_code: Some(0) }),
            Err(f) => return memory_fault(f),
        }
    }
    let outcome = match insn.op {
        Op::Lgdt(m) | Op::Lidt(m) => {
            let mut raw = [0u8; 10];
            if let Err(e) = read_operand(&m, &mut raw, cpu, regs, mem, next_rip) {
                return operand_fault(e);
            }
            let table = TableRegister {
                limit: u16::from_le_bytes([raw[0], raw[1]]),
                base: u64::from_le_bytes(raw[2..10].try_into().expect("8 bytes")),
            };
            if !canonical(table.base) {
                // A descriptor table's base must be canonical in 64-bit
                // mode (AMD APM vol. 3, LGDT/LIDT: #GP).
                return Ok(Outcome::Fault { vector: GP, error_code: Some(0) });
            }
            if matches!(insn.op, Op::Lgdt(_)) {
                if u32::from(table.limit) >= u32::from(RESERVED_GDT_SLOT) * 8 {
                    return Err(EmulationError::Unsupported(
                        "its GDT reaches slot 14, which the hypervisor keeps for itself while an emulated kernel runs",
                    ));
                }
                cpu.gdtr = table;
            } else {
                cpu.idtr = table;
            }
            Outcome::Next
        }
        Op::Sgdt(m) | Op::Sidt(m) => {
            let table = if matches!(insn.op, Op::Sgdt(_)) { cpu.gdtr } else { cpu.idtr };
            let mut raw = [0u8; 10];
            raw[..2].copy_from_slice(&table.limit.to_le_bytes());
            raw[2..].copy_from_slice(&table.base.to_le_bytes());
            if let Err(e) = write_operand(&m, &raw, cpu, regs, mem, next_rip) {
                return operand_fault(e);
            }
            Outcome::Next
        }
        Op::Smsw(dst, size) => return store16(dst, size, cpu.cr0, cpu, regs, mem, next_rip),
        Op::Sldt(dst, size) => return store16(dst, size, u64::from(cpu.ldtr), cpu, regs, mem, next_rip),
        Op::Str(dst, size) => return store16(dst, size, u64::from(cpu.tr), cpu, regs, mem, next_rip),
        Op::Lmsw(src) => {
            let value = match load16(src, cpu, regs, mem, next_rip) {
                Ok(v) => v,
                Err(e) => return operand_fault(e),
            };
            // LMSW sets MP, EM, TS and PE; it can set PE but never clear it.
            cpu.cr0 = (cpu.cr0 & !0xe) | (value & 0xf) | (cpu.cr0 & 1);
            Outcome::Next
        }
        Op::Lldt(src) => match load16(src, cpu, regs, mem, next_rip) {
            Ok(selector) => return load_ldt_register(selector as u16, cpu, regs, mem, next_rip),
            Err(e) => return operand_fault(e),
        },
        Op::Ltr(src) => match load16(src, cpu, regs, mem, next_rip) {
            Ok(selector) => return load_task_register(selector as u16, cpu, regs, mem, next_rip),
            Err(e) => return operand_fault(e),
        },
        Op::Invlpg(m) => {
            // It touches no memory: a non-canonical address makes it a no-op
            // (SDM vol. 2, INVLPG), not a fault.
            let va = m.address(|r| regs.gpr(r.0), next_rip).wrapping_add(cpu.segment_bases().base(m.segment));
            if canonical(va) {
                Outcome::Flush(TlbFlush::Page(va))
            } else {
                Outcome::Next
            }
        }
        Op::Swapgs => {
            core::mem::swap(&mut cpu.gs_base, &mut cpu.kernel_gs_base);
            Outcome::SegmentBases
        }
        Op::MovFromCr(reg, cr) => {
            let value = match cr {
                ControlRegister::Cr0 => cpu.cr0,
                ControlRegister::Cr2 => cpu.cr2,
                ControlRegister::Cr3 => cpu.cr3,
                ControlRegister::Cr4 => cpu.cr4,
                ControlRegister::Cr8 => u64::from(cpu.cr8),
            };
            regs.set_gpr(reg.0, value);
            Outcome::Next
        }
        Op::MovToCr(cr, reg) => {
            let value = regs.gpr(reg.0);
            let checked = match cr {
                ControlRegister::Cr0 => control::cr0(value).map(|v| cpu.cr0 = v),
                ControlRegister::Cr2 => {
                    cpu.cr2 = value;
                    Ok(())
                }
                ControlRegister::Cr3 => match control::cr3(value) {
                    Ok(v) => {
                        cpu.cr3 = v;
                        regs.rip = next_rip;
                        return Ok(Outcome::AddressSpace);
                    }
                    Err(refused) => Err(refused),
                },
                ControlRegister::Cr4 => control::cr4(value).map(|v| cpu.cr4 = v),
                ControlRegister::Cr8 => control::cr8(value).map(|v| cpu.cr8 = v),
            };
            if let Err(refused) = checked {
                return refused_write(refused);
            }
            Outcome::Next
        }
        Op::Wrmsr => {
            let value = (regs.rdx << 32) | (regs.rax & 0xffff_ffff);
            let address_msr = matches!(
                regs.rcx as u32,
                msr::LSTAR | msr::CSTAR | msr::FS_BASE | msr::GS_BASE | msr::KERNEL_GS_BASE
            );
            if address_msr && !canonical(value) {
                // An address MSR holds only canonical addresses (SDM vol. 2,
                // WRMSR); LSTAR becomes RIP at the next `syscall`.
                return Ok(Outcome::Fault { vector: GP, error_code: Some(0) });
            }
            let mut bases = false;
            match regs.rcx as u32 {
                msr::EFER => match control::efer(cpu, value) {
                    Ok(v) => {
                        let nxe_changed = (cpu.efer ^ v) & cr::EFER_NXE != 0;
                        cpu.efer = v;
                        if nxe_changed {
                            // NXE changes what every guest entry means (NX
                            // becomes a reserved bit, or a right): the shadows
                            // built with the old meaning must go before the
                            // guest runs again, which the shadow root does.
                            regs.rip = next_rip;
                            return Ok(Outcome::AddressSpace);
                        }
                    }
                    Err(refused) => return refused_write(refused),
                },
                msr::STAR => cpu.star = value,
                msr::LSTAR => cpu.lstar = value,
                msr::CSTAR => cpu.cstar = value,
                msr::SFMASK => cpu.sfmask = value & 0xffff_ffff,
                msr::FS_BASE => (cpu.fs_base, bases) = (value, true),
                msr::GS_BASE => (cpu.gs_base, bases) = (value, true),
                msr::KERNEL_GS_BASE => cpu.kernel_gs_base = value,
                _ => return Ok(Outcome::Fault { vector: GP, error_code: Some(0) }),
            }
            if bases {
                regs.rip = next_rip;
                return Ok(Outcome::SegmentBases);
            }
            Outcome::Next
        }
        Op::Rdmsr => {
            let value = match regs.rcx as u32 {
                msr::APIC_BASE => 0xfee0_0900, // enabled, bootstrap processor, at the usual place
                msr::EFER => cpu.efer,
                msr::STAR => cpu.star,
                msr::LSTAR => cpu.lstar,
                msr::CSTAR => cpu.cstar,
                msr::SFMASK => cpu.sfmask,
                msr::FS_BASE => cpu.fs_base,
                msr::GS_BASE => cpu.gs_base,
                msr::KERNEL_GS_BASE => cpu.kernel_gs_base,
                _ => return Ok(Outcome::Fault { vector: GP, error_code: Some(0) }),
            };
            regs.rax = value & 0xffff_ffff;
            regs.rdx = value >> 32;
            Outcome::Next
        }
        Op::Clts => {
            cpu.cr0 &= !(1 << 3);
            Outcome::Next
        }
        Op::Invd | Op::Wbinvd => Outcome::Next, // the caches are the machine's
        Op::Cli => {
            cpu.interrupts = false;
            Outcome::Next
        }
        Op::Sti => {
            // A pending interrupt is delivered at the next exit, never
            // before the instruction after `sti` (the CPU's interrupt
            // shadow, which `sti; hlt` depends on).
            cpu.interrupts = true;
            Outcome::Next
        }
        Op::Hlt => {
            regs.rip = next_rip;
            return Ok(Outcome::Halt);
        }
        Op::Sysret(true) => return sysret(cpu, regs),
        Op::Iret(8) => return iret(cpu, regs, mem),
        Op::Retf(8) => return far_return(cpu, regs, mem),
        Op::In(size, port) => {
            let port = port_number(port, regs);
            let mut value = 0u64;
            for i in 0..u16::from(size) {
                value |= u64::from(devices.read(port.wrapping_add(i), now_ns)) << (8 * i);
            }
            regs.rax = match size {
                1 => (regs.rax & !0xff) | value,
                2 => (regs.rax & !0xffff) | value,
                _ => value, // a 32-bit destination zero-extends
            };
            Outcome::Next
        }
        Op::Out(size, port) => {
            let port = port_number(port, regs);
            let mut outcome = Outcome::Next;
            for i in 0..u16::from(size) {
                let byte = (regs.rax >> (8 * i)) as u8;
                outcome = match devices.write(port.wrapping_add(i), byte, now_ns) {
                    PortWrite::Done => outcome,
                    PortWrite::Console(b) => Outcome::Console(b),
                    PortWrite::TimerChanged => Outcome::TimerChanged,
                    PortWrite::Exit(status) => Outcome::Exit(status),
                };
            }
            outcome
        }
        Op::MovToSreg(sreg, src) => {
            let selector = match load16(src, cpu, regs, mem, next_rip) {
                Ok(v) => v as u16,
                Err(e) => return operand_fault(e),
            };
            // Long mode ignores the bases and limits of DS, ES and SS; only
            // the selector values are the guest's to see again.
            match sreg {
                0 => cpu.es = selector,
                2 => cpu.ss = selector,
                3 => cpu.ds = selector,
                _ => return Err(EmulationError::Unsupported("loading FS or GS with a selector is not emulated")),
            }
            Outcome::Next
        }
        Op::Int(vector) => return software_interrupt(cpu, regs, mem, insn.len, vector),
        Op::Int3 => return software_interrupt(cpu, regs, mem, insn.len, 3),
        Op::Sysret(false) => return Err(EmulationError::Unsupported("sysret to 32-bit code is not emulated")),
        Op::Iret(_) => return Err(EmulationError::Unsupported("only the 64-bit iretq is emulated")),
        Op::Retf(_) => return Err(EmulationError::Unsupported("only the 64-bit far return (lretq) is emulated")),
        Op::MovFromDr(..) | Op::MovToDr(..) => {
            return Err(EmulationError::Unsupported("debug registers are not emulated"))
        }
        Op::StringIo => return Err(EmulationError::Unsupported("string I/O (ins/outs) is not emulated")),
        _ => return Err(EmulationError::Unsupported("this instruction does not trap when it is allowed, so it is not emulated")),
    };
    regs.rip = next_rip;
    Ok(outcome)
}

/// Whether `op` faults in ring 3 exactly where it faults in ring 0: it
/// never traps for privilege (a data store, `lar`, `lsl`, `verr`, `verw`,
/// `mov` from a segment register, `pushf`, `popf`, `cpuid`, `syscall`), so
/// a #GP it raises is the guest's own (a non-canonical address, a
/// misaligned `movaps`) and goes to the guest kernel as raised. The others
/// trap because the guest runs in ring 3 (or under the hypervisor's CR4:
/// `rdtsc`, `rdtscp`, `rdpmc`) and are the emulator's to carry out.
pub fn never_traps_for_privilege(op: Op) -> bool {
    matches!(
        op,
        Op::Store(_)
            | Op::Lar(..)
            | Op::Lsl(..)
            | Op::Verr(_)
            | Op::Verw(_)
            | Op::MovFromSreg(..)
            | Op::Pushf(_)
            | Op::Popf(_)
            | Op::Cpuid
            | Op::Syscall
    )
}

/// Whether `op` may run at all in the guest's user mode (virtual CPL 3), as
/// the instructions that trap in ring 3 on the real CPU. Every privileged
/// instruction is refused (#GP(0), as on hardware) except:
/// - `int n`/`int3` (their gate's DPL decides, at delivery);
/// - `iretq` and `lretq` (they check the privilege of where they return);
/// - `sgdt`, `sidt`, `sldt`, `smsw`, `str` while the guest's CR4.UMIP is
///   clear (they trap only because the *real* CR4.UMIP is set, and return
///   the virtual registers);
/// - `cli`, `sti` under virtual IOPL 3, and `in`/`out` under IOPL 3 or where
///   the TSS's I/O permission bitmap allows the ports (SDM vol. 1, 19.5).
pub fn user_mode_may_try(op: Op) -> bool {
    matches!(
        op,
        Op::Int(_)
            | Op::Int3
            | Op::Iret(8)
            | Op::Retf(8)
            | Op::Sgdt(_)
            | Op::Sidt(_)
            | Op::Sldt(..)
            | Op::Smsw(..)
            | Op::Str(..)
            | Op::Cli
            | Op::Sti
            | Op::In(..)
            | Op::Out(..)
    )
}

/// Whether the guest's user mode may run `op` now (see [`user_mode_may_try`]).
fn user_mode_allows<M: MachineMemory>(
    op: Op,
    cpu: &VirtualCpu,
    regs: &GuestRegs,
    mem: &mut GuestVirt<'_, M>,
) -> Result<bool, VirtFault> {
    Ok(match op {
        Op::Int(_) | Op::Int3 | Op::Iret(8) | Op::Retf(8) => true,
        Op::Sgdt(_) | Op::Sidt(_) | Op::Sldt(..) | Op::Smsw(..) | Op::Str(..) => cpu.cr4 & cr::CR4_UMIP == 0,
        Op::Cli | Op::Sti => cpu.iopl == 3,
        Op::In(size, port) | Op::Out(size, port) => cpu.iopl == 3 || io_bitmap_allows(cpu, mem, port_number(port, regs), size)?,
        _ => false,
    })
}

/// Whether the I/O permission bitmap of the guest's TSS allows ports
/// `port..port + size`: each needs its bit clear, and the two bytes the
/// CPU reads must lie within the TSS limit (SDM vol. 1, 19.5.2). The CPU
/// reads the TSS as the kernel.
fn io_bitmap_allows<M: MachineMemory>(cpu: &VirtualCpu, mem: &mut GuestVirt<'_, M>, port: u16, size: u8) -> Result<bool, VirtFault> {
    const BITMAP_BASE_OFFSET: u64 = 0x66;
    if cpu.tss_base == 0 || u64::from(cpu.tss_limit) < BITMAP_BASE_OFFSET + 1 {
        return Ok(false);
    }
    let user = core::mem::replace(&mut mem.user, false);
    let result = (|| {
        let mut base = [0u8; 2];
        mem.read(cpu.tss_base.wrapping_add(BITMAP_BASE_OFFSET), &mut base, false)?;
        let at = u64::from(u16::from_le_bytes(base)) + u64::from(port / 8);
        if at + 1 > u64::from(cpu.tss_limit) {
            return Ok(false);
        }
        let mut bits = [0u8; 2];
        mem.read(cpu.tss_base.wrapping_add(at), &mut bits, false)?;
        let mask = ((1u16 << size) - 1) << (port % 8);
        Ok(u16::from_le_bytes(bits) & mask == 0)
    })();
    mem.user = user;
    result
}

fn port_number(port: PortOperand, regs: &GuestRegs) -> u16 {
    match port {
        PortOperand::Imm(p) => u16::from(p),
        PortOperand::Dx => regs.rdx as u16,
    }
}

/// `smsw`, `sldt`, `str`: a register destination gets the value
/// zero-extended, a memory destination its low 16 bits.
/// Stores `value` (a selector, or CR0 for `smsw`) to `dst`: memory takes
/// its low 2 bytes; a register of operand size 2 keeps its upper bits,
/// one of 4 or 8 gets the value zero-extended from 32 bits (CR0's upper
/// half is reserved zero; SDM vol. 2, SMSW, SLDT, STR).
fn store16<M: MachineMemory>(
    dst: Operand,
    size: Size,
    value: u64,
    cpu: &VirtualCpu,
    regs: &mut GuestRegs,
    mem: &mut GuestVirt<'_, M>,
    next_rip: u64,
) -> Result<Outcome, EmulationError> {
    match dst {
        Operand::Reg(r) => {
            let written = match size {
                2 => (regs.gpr(r.0) & !0xffff) | (value & 0xffff),
                _ => value & 0xffff_ffff,
            };
            regs.set_gpr(r.0, written)
        }
        Operand::Mem(m) => {
            if let Err(e) = write_operand(&m, &(value as u16).to_le_bytes(), cpu, regs, mem, next_rip) {
                return operand_fault(e);
            }
        }
    }
    regs.rip = next_rip;
    Ok(Outcome::Next)
}

fn load16<M: MachineMemory>(
    src: Operand,
    cpu: &VirtualCpu,
    regs: &GuestRegs,
    mem: &GuestVirt<'_, M>,
    next_rip: u64,
) -> Result<u64, OperandError> {
    match src {
        Operand::Reg(r) => Ok(regs.gpr(r.0) & 0xffff),
        Operand::Mem(m) => {
            let mut b = [0u8; 2];
            read_operand(&m, &mut b, cpu, regs, mem, next_rip)?;
            Ok(u64::from(u16::from_le_bytes(b)))
        }
    }
}

/// The 16-byte system descriptor (a TSS or an LDT, `kind` its type) that
/// `selector` names in the guest's GDT, for `ltr` and `lldt`, checked as
/// the CPU checks it (SDM vol. 2, LTR and LLDT, 64-bit mode exceptions):
/// #GP(selector) for a selector into the LDT, beyond the GDT limit, or
/// naming a descriptor of another type (or whose upper half's type field is
/// not zero); #NP(selector) for one not present. The error is the outcome:
/// the guest's fault (or a stop).
fn system_descriptor<M: MachineMemory>(
    selector: u16,
    kind: u8,
    cpu: &VirtualCpu,
    mem: &GuestVirt<'_, M>,
) -> Result<[u8; 16], Result<Outcome, EmulationError>> {
    let named = |vector| Err(Ok(Outcome::Fault { vector, error_code: Some(u64::from(selector & !3)) }));
    let index = u64::from(selector & !7);
    if selector & 4 != 0 || index + 15 > u64::from(cpu.gdtr.limit) {
        return named(GP);
    }
    let mut d = [0u8; 16];
    if let Err(f) = mem.read(cpu.gdtr.base.wrapping_add(index), &mut d, false) {
        return Err(memory_fault(f));
    }
    if d[5] & 0x1f != kind || d[13] & 0x1f != 0 {
        return named(GP); // a code or data segment, another system type, or a bad upper half
    }
    if d[5] & 0x80 == 0 {
        return named(NP);
    }
    Ok(d)
}

/// `ltr`: the selector must name an available 64-bit TSS in the guest's
/// GDT; its base is remembered (interrupts from user mode need its RSP0)
/// and the descriptor is marked busy, as the CPU does.
fn load_task_register<M: MachineMemory>(
    selector: u16,
    cpu: &mut VirtualCpu,
    regs: &mut GuestRegs,
    mem: &mut GuestVirt<'_, M>,
    next_rip: u64,
) -> Result<Outcome, EmulationError> {
    if selector & !3 == 0 {
        return Ok(Outcome::Fault { vector: GP, error_code: Some(0) }); // null
    }
    let d = match system_descriptor(selector, AVAILABLE_TSS, cpu, mem) {
        Ok(d) => d,
        Err(outcome) => return outcome,
    };
    cpu.tss_base = u64::from(u16::from_le_bytes([d[2], d[3]]))
        | (u64::from(d[4]) << 16)
        | (u64::from(d[7]) << 24)
        | (u64::from(u32::from_le_bytes([d[8], d[9], d[10], d[11]])) << 32);
    let limit = u32::from(u16::from_le_bytes([d[0], d[1]])) | (u32::from(d[6] & 0x0f) << 16);
    cpu.tss_limit = if d[6] & 0x80 != 0 { (limit << 12) | 0xfff } else { limit };
    cpu.tr = selector;
    let at = cpu.gdtr.base.wrapping_add(u64::from(selector & !7));
    if let Err(f) = mem.write(at.wrapping_add(5), &[d[5] | 0x02]) {
        return memory_fault(f);
    }
    regs.rip = next_rip;
    Ok(Outcome::Next)
}

/// `lldt`: a null selector loads the null LDT; any other must name an LDT
/// descriptor in the guest's GDT (else the fault the CPU raises), and a
/// real LDT is more than the emulator does.
fn load_ldt_register<M: MachineMemory>(
    selector: u16,
    cpu: &mut VirtualCpu,
    regs: &mut GuestRegs,
    mem: &mut GuestVirt<'_, M>,
    next_rip: u64,
) -> Result<Outcome, EmulationError> {
    if selector & !3 != 0 {
        if let Err(outcome) = system_descriptor(selector, LDT, cpu, mem) {
            return outcome;
        }
        return Err(EmulationError::Unsupported("only the null LDT is supported"));
    }
    cpu.ldtr = 0;
    regs.rip = next_rip;
    Ok(Outcome::Next)
}

/// Pops `buf.len()` bytes from the stack at `rsp`, as the kernel.
fn read_stack<M: MachineMemory>(rsp: u64, buf: &mut [u8], mem: &GuestVirt<'_, M>) -> Result<(), OperandError> {
    let va = address::stack(rsp, buf.len() as u64)?;
    Ok(mem.read(va, buf, false)?)
}

/// `sysretq` (Intel SDM vol. 2, SYSRET): back to user mode at `rcx` with
/// RFLAGS from `r11`; CS and SS come from STAR[63:48] (+16 and +8, RPL 3).
fn sysret(cpu: &mut VirtualCpu, regs: &mut GuestRegs) -> Result<Outcome, EmulationError> {
    if cpu.efer & cr::EFER_SCE == 0 {
        return Ok(Outcome::Fault { vector: UD, error_code: None });
    }
    if !canonical(regs.rcx) {
        // Intel raises #GP(0) in the kernel, before anything changes.
        return Ok(Outcome::Fault { vector: GP, error_code: Some(0) });
    }
    let base = (cpu.star >> 48) as u16;
    regs.rip = regs.rcx;
    cpu.load_rflags(regs.r11);
    regs.rflags = (regs.r11 & GUEST_RFLAGS_MASK) | IF | 2;
    cpu.cs = base.wrapping_add(16) | 3;
    cpu.ss = base.wrapping_add(8) | 3;
    cpu.cpl = 3;
    Ok(Outcome::AddressSpace)
}

/// `iretq` (Intel SDM vol. 2, IRET, 64-bit mode): pops RIP, CS, RFLAGS,
/// RSP and SS; the new privilege level is the RPL of the popped CS.
fn iret<M: MachineMemory>(
    cpu: &mut VirtualCpu,
    regs: &mut GuestRegs,
    mem: &mut GuestVirt<'_, M>,
) -> Result<Outcome, EmulationError> {
    let mut raw = [0u8; 40];
    if let Err(e) = read_stack(regs.rsp, &mut raw, mem) {
        return operand_fault(e);
    }
    let word = |i: usize| u64::from_le_bytes(raw[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
    let (rip, cs, rflags, rsp, ss) = (word(0), word(1) as u16, word(2), word(3), word(4) as u16);
    let rpl = (cs & 3) as u8;
    if (rpl != 0 && rpl != 3) || rpl < cpu.cpl {
        // Rings 1 and 2 are not emulated; a return to a more privileged
        // level is #GP naming the selector.
        return Ok(Outcome::Fault { vector: GP, error_code: Some(u64::from(cs & !3)) });
    }
    if !canonical(rip) {
        return Ok(Outcome::Fault { vector: GP, error_code: Some(0) });
    }
    let mode_changed = rpl != cpu.cpl;
    regs.rip = rip;
    regs.rsp = rsp;
    regs.rflags = (rflags & GUEST_RFLAGS_MASK) | IF | 2;
    cpu.load_rflags(rflags);
    (cpu.cs, cpu.ss, cpu.cpl) = (cs, ss, rpl);
    Ok(if mode_changed { Outcome::AddressSpace } else { Outcome::Next })
}

/// `lretq` (Intel SDM vol. 2, RET, far return in 64-bit mode): pops RIP
/// and CS. A kernel uses it once, to reload CS after `lgdt`; it traps
/// because the selector's RPL (0) is below the real CPL (3). Only a return
/// to the same privilege level is emulated.
fn far_return<M: MachineMemory>(
    cpu: &mut VirtualCpu,
    regs: &mut GuestRegs,
    mem: &mut GuestVirt<'_, M>,
) -> Result<Outcome, EmulationError> {
    let mut raw = [0u8; 16];
    if let Err(e) = read_stack(regs.rsp, &mut raw, mem) {
        return operand_fault(e);
    }
    let rip = u64::from_le_bytes(raw[..8].try_into().expect("8 bytes"));
    let cs = u64::from_le_bytes(raw[8..].try_into().expect("8 bytes")) as u16;
    if ((cs & 3) as u8) < cpu.cpl {
        return Ok(Outcome::Fault { vector: GP, error_code: Some(u64::from(cs & !3)) });
    }
    if (cs & 3) as u8 != cpu.cpl {
        return Err(EmulationError::Unsupported("a far return to another privilege level is not emulated"));
    }
    if !canonical(rip) {
        return Ok(Outcome::Fault { vector: GP, error_code: Some(0) });
    }
    regs.rip = rip;
    regs.rsp = regs.rsp.wrapping_add(16);
    cpu.cs = cs;
    Ok(Outcome::Next)
}

/// `int n` or `int3` of `len` bytes at `rip`: delivered through the
/// guest's IDT, returning after the instruction (or, if its gate refuses
/// the caller, the #GP that names the gate, at the instruction).
fn software_interrupt<M: MachineMemory>(
    cpu: &mut VirtualCpu,
    regs: &mut GuestRegs,
    mem: &mut GuestVirt<'_, M>,
    len: usize,
    vector: u8,
) -> Result<Outcome, EmulationError> {
    let len = u8::try_from(len).unwrap_or(u8::MAX); // at most 15
    match deliver(cpu, regs, mem, vector, EventKind::Software { len }) {
        Ok(true) => Ok(Outcome::AddressSpace),
        Ok(false) => Ok(Outcome::Next),
        Err(e) => Err(EmulationError::Inject(e)),
    }
}

#[cfg(test)]
mod tests;
