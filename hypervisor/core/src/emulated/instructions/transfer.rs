//! The instructions that move between the guest's privilege levels:
//! `sysretq`, `iretq` and `lretq` back out of its kernel, and `int n`/`int3`
//! into it through its IDT. They are where ring compression is undone by
//! hand (see the chapter on pure virtualization, idea 2): the virtual CPL
//! changes here, and so the shadow the guest runs on.

use super::{memory_fault, EmulationError, Outcome, GP, IF, UD};
use crate::emulated::cpu::{canonical, cr, VirtualCpu};
use crate::emulated::guest_virt::GuestVirt;
use crate::emulated::inject::{deliver, EventKind};
use crate::machine_memory::MachineMemory;
use crate::vcpu::{GuestRegs, GUEST_RFLAGS_MASK};

/// `sysretq` (Intel SDM vol. 2, SYSRET): back to user mode at `rcx` with
/// RFLAGS from `r11`; CS and SS come from STAR[63:48] (+16 and +8, RPL 3).
pub(super) fn sysret(cpu: &mut VirtualCpu, regs: &mut GuestRegs) -> Result<Outcome, EmulationError> {
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
pub(super) fn iret<M: MachineMemory>(
    cpu: &mut VirtualCpu,
    regs: &mut GuestRegs,
    mem: &mut GuestVirt<'_, M>,
) -> Result<Outcome, EmulationError> {
    let mut raw = [0u8; 40];
    if let Err(f) = mem.read(regs.rsp, &mut raw, false) {
        return memory_fault(f);
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
pub(super) fn far_return<M: MachineMemory>(
    cpu: &mut VirtualCpu,
    regs: &mut GuestRegs,
    mem: &mut GuestVirt<'_, M>,
) -> Result<Outcome, EmulationError> {
    let mut raw = [0u8; 16];
    if let Err(f) = mem.read(regs.rsp, &mut raw, false) {
        return memory_fault(f);
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
pub(super) fn software_interrupt<M: MachineMemory>(
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
