//! Carrying out a guest's store to memory, as its CPU would have.
//!
//! Shadow paging write-protects an emulated kernel's page tables (see
//! [`super::shadow`]), so when the kernel writes one, the store faults and
//! the hypervisor must do it instead: fetch the instruction at RIP, decode
//! it ([`crate::decode`], which knows the memory-writing instructions in
//! [`crate::decode::SUPPORTED_STORES`]), and call [`emulate_store`]. The
//! store must then look exactly as if the CPU had done it: the same bytes
//! written, the same registers and RFLAGS afterwards, RIP past the
//! instruction, and on a fault the same #PF (nothing written by the
//! faulting access, RIP still at the instruction).
//!
//! Guest memory is reached through [`GuestMemoryAccess`], which the
//! integrator implements over guest-virtual memory at the guest's
//! privilege (and which reports every write to the shadow, since it may
//! land in a page table: [`super::shadow::Shadow::guest_wrote`]).
//!
//! ## String instructions
//!
//! `rep stos` and `rep movs` are done in chunks that stay within one page
//! of each operand, so every call to the memory trait translates one page.
//! After each chunk rcx, rsi and rdi are updated, just as the CPU leaves
//! them when an interrupt or fault stops a `rep` instruction midway; so a
//! fault in a later chunk leaves the registers showing the work done, RIP
//! at the instruction, and the guest resumes the rest after handling it.
//! The same property bounds the time spent per exit: after
//! [`MAX_STRING_BYTES`] the emulator stops with RIP unchanged, and the guest
//! continues the instruction natively (or traps again on the next
//! write-protected page). Elements are processed in the CPU's order: when
//! source and destination of `movs` overlap, chunks are shortened so that
//! no chunk reads what it writes.

mod alu;
mod strings;
#[cfg(test)]
mod tests;

use super::address::{self, OperandFault, SegmentBases};
use crate::decode::{DataReg, Decoded, Op, Size, Source, StoreOp};
use crate::vcpu::{FpuState, GuestRegs};

/// The most bytes one call moves for a `rep` string instruction before it
/// lets the guest continue (the instruction resumes where it stopped).
pub const MAX_STRING_BYTES: u64 = 16 * hypercall_abi::PAGE_SIZE;

/// Offset of xmm0 in the `fxsave` area; register n is 16 bytes further per n.
const FXSAVE_XMM0: usize = 160;

/// Guest-virtual memory as the emulated instruction sees it: at the guest's
/// current privilege and CR3, with its own page tables' rights.
///
/// Each call is all or nothing: if any byte of the range cannot be
/// accessed, nothing is read or written and the error says why (typically
/// the #PF to inject, with the faulting address). A range never spans more
/// than two pages.
pub trait GuestMemoryAccess {
    /// Why an access failed (for instance a #PF with its address and error code).
    type Error;
    /// Reads `buf.len()` bytes at guest-virtual `va`.
    fn read(&mut self, va: u64, buf: &mut [u8]) -> Result<(), Self::Error>;
    /// Writes `data` at guest-virtual `va`.
    fn write(&mut self, va: u64, data: &[u8]) -> Result<(), Self::Error>;
}

/// Why a store was not (fully) carried out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreError<E> {
    /// The instruction is not a store ([`Op::Store`]).
    NotAStore,
    /// A memory access failed: inject the fault it carries. Nothing of the
    /// failed access was written; RIP is unchanged; a string instruction's
    /// registers show the elements already done.
    Memory(E),
    /// The CPU would raise this before touching the operand: its address
    /// is not canonical (#GP(0), or #SS(0) through SS), or an aligned SSE
    /// store (`movaps`, `movdqa`) names an address that is not 16-byte
    /// aligned (#GP(0)). As for `Memory`, nothing of it was written.
    Operand(OperandFault),
}

/// Carries out the store `insn` (decoded from the bytes at `regs.rip`) for
/// the guest whose registers are `regs`, XMM registers in `fpu` (current:
/// saved since the guest last ran) and FS/GS bases in `seg`. On success RIP
/// is past the instruction, except when a long `rep` instruction stopped
/// after [`MAX_STRING_BYTES`] (then it resumes where it left off).
pub fn emulate_store<M: GuestMemoryAccess>(
    insn: &Decoded,
    regs: &mut GuestRegs,
    fpu: &FpuState,
    seg: SegmentBases,
    mem: &mut M,
) -> Result<(), StoreError<M::Error>> {
    let Op::Store(op) = insn.op else { return Err(StoreError::NotAStore) };
    let next_rip = regs.rip.wrapping_add(insn.len as u64);
    let address = |regs: &GuestRegs, m, len: Size| {
        address::operand(&m, u64::from(len), regs, next_rip, seg).map_err(StoreError::Operand)
    };
    match op {
        StoreOp::Mov { dst, src, size } => {
            let value = source(regs, src, size);
            write_value(mem, address(regs, dst, size)?, value, size)?;
        }
        StoreOp::Alu { op, dst, src, size, .. } => {
            let at = address(regs, dst, size)?;
            let old = read_value(mem, at, size)?;
            let (result, flags) = alu::compute(op, old, source(regs, src, size), size);
            write_value(mem, at, result, size)?;
            regs.rflags = alu::merge(regs.rflags, flags);
        }
        StoreOp::Xchg { dst, reg, size } => {
            let at = address(regs, dst, size)?;
            let old = read_value(mem, at, size)?;
            write_value(mem, at, reg_value(regs, reg, size), size)?;
            set_reg(regs, reg, size, old);
        }
        StoreOp::Cmpxchg { dst, reg, size, .. } => {
            let at = address(regs, dst, size)?;
            let old = read_value(mem, at, size)?;
            let accumulator = DataReg::Gpr(crate::decode::Reg(0));
            let expected = reg_value(regs, accumulator, size);
            let (_, flags) = alu::compute(crate::decode::AluOp::Sub, expected, old, size);
            if expected == old {
                write_value(mem, at, reg_value(regs, reg, size), size)?;
            } else {
                // The CPU writes the old value back (the access is a locked
                // read-modify-write either way), then loads the accumulator.
                write_value(mem, at, old, size)?;
                set_reg(regs, accumulator, size, old);
            }
            regs.rflags = alu::merge(regs.rflags, flags);
        }
        StoreOp::SseStore { dst, xmm, bytes, from, aligned } => {
            let at = address(regs, dst, bytes)?;
            if aligned && at % 16 != 0 {
                return Err(StoreError::Operand(OperandFault::GeneralProtection));
            }
            let start = FXSAVE_XMM0 + 16 * usize::from(xmm) + usize::from(from);
            mem.write(at, &fpu.0[start..start + usize::from(bytes)]).map_err(StoreError::Memory)?;
        }
        StoreOp::Stos { .. } | StoreOp::Movs { .. } => {
            if !strings::run(op, regs, seg, mem)? {
                return Ok(()); // more to do: the guest resumes the instruction
            }
        }
    }
    regs.rip = next_rip;
    Ok(())
}

/// The mask of an operand of `size` bytes.
fn mask(size: Size) -> u64 {
    if size >= 8 {
        u64::MAX
    } else {
        (1u64 << (8 * u32::from(size))) - 1
    }
}

/// A register's value at the operand size.
fn reg_value(regs: &GuestRegs, reg: DataReg, size: Size) -> u64 {
    match reg {
        DataReg::Gpr(r) => regs.gpr(r.0) & mask(size),
        DataReg::HighByte(n) => (regs.gpr(n) >> 8) & 0xff,
    }
}

/// Writes a register at the operand size as the CPU does: 8- and 16-bit
/// writes keep the other bits, a 32-bit write clears the upper half.
fn set_reg(regs: &mut GuestRegs, reg: DataReg, size: Size, value: u64) {
    let (n, shift) = match reg {
        DataReg::Gpr(r) => (r.0, 0),
        DataReg::HighByte(n) => (n, 8),
    };
    let new = if size == 4 {
        value & mask(4)
    } else {
        let m = mask(size) << shift;
        (regs.gpr(n) & !m) | ((value << shift) & m)
    };
    regs.set_gpr(n, new);
}

/// The value a store writes, at the operand size.
fn source(regs: &GuestRegs, src: Source, size: Size) -> u64 {
    match src {
        Source::Reg(r) => reg_value(regs, r, size),
        Source::Imm(i) => i as u64 & mask(size),
    }
}

fn read_value<M: GuestMemoryAccess>(mem: &mut M, va: u64, size: Size) -> Result<u64, StoreError<M::Error>> {
    let mut b = [0u8; 8];
    mem.read(va, &mut b[..usize::from(size)]).map_err(StoreError::Memory)?;
    Ok(u64::from_le_bytes(b))
}

fn write_value<M: GuestMemoryAccess>(mem: &mut M, va: u64, value: u64, size: Size) -> Result<(), StoreError<M::Error>> {
    mem.write(va, &value.to_le_bytes()[..usize::from(size)]).map_err(StoreError::Memory)
}
