//! Where an emulated instruction's memory operands are, and whether the
//! CPU would let it reach them.
//!
//! In 64-bit mode the CPU checks, before paging, that every byte a memory
//! reference touches has a canonical linear address (bits 63 to 47 all
//! equal). If one does not, it raises #SS(0) for a reference through SS
//! (rsp- or rbp-based addressing, pushes and pops, an `ss:` override) and
//! #GP(0) for any other, whatever the instruction and the privilege level
//! (Intel SDM vol. 3, 3.3.7.1, and the "64-Bit Mode Exceptions" of every
//! instruction). The emulator computes the address of every operand it
//! reads or writes here and nowhere else, so every emulated instruction
//! raises those faults as the CPU would; and a page walk never sees a
//! non-canonical address, whose table indices would name another one
//! ([`super::guest_virt::GuestVirt`] refuses them as well).

use super::cpu::canonical;
use crate::decode::{Mem, Segment};
use crate::vcpu::GuestRegs;

/// The FS and GS bases, the only segment bases that count in 64-bit mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SegmentBases {
    /// FS base.
    pub fs: u64,
    /// GS base.
    pub gs: u64,
}

impl SegmentBases {
    /// The base an override adds (none but FS and GS do in 64-bit mode).
    pub fn base(&self, segment: Option<Segment>) -> u64 {
        match segment {
            Some(Segment::Fs) => self.fs,
            Some(Segment::Gs) => self.gs,
            _ => 0,
        }
    }
}

/// The exception an operand raises before any byte of it is accessed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OperandFault {
    /// #GP(0): a non-canonical address through any segment but SS (or an
    /// operand that breaks an alignment rule, such as `movaps`'s).
    GeneralProtection,
    /// #SS(0): a non-canonical address through SS.
    StackSegment,
}

impl OperandFault {
    /// The exception's vector (its error code is 0).
    pub const fn vector(self) -> u8 {
        match self {
            OperandFault::GeneralProtection => 13,
            OperandFault::StackSegment => 12,
        }
    }
}

/// The linear address of the `len` bytes of memory operand `m` of the
/// instruction before `next_rip`, with the guest's registers and FS/GS
/// bases, if the CPU would access them.
pub fn operand(m: &Mem, len: u64, regs: &GuestRegs, next_rip: u64, bases: SegmentBases) -> Result<u64, OperandFault> {
    let va = m.address(|r| regs.gpr(r.0), next_rip).wrapping_add(bases.base(m.segment));
    checked(va, len, m.through_stack())
}

/// The address of `len` bytes on the stack at `rsp` (a pop, or the frame
/// of a far return), if the CPU would access them.
pub fn stack(rsp: u64, len: u64) -> Result<u64, OperandFault> {
    checked(rsp, len, true)
}

/// `va` if all `len` bytes from it are canonical, else the fault of a
/// reference through SS (`through_stack`) or another segment.
pub fn checked(va: u64, len: u64, through_stack: bool) -> Result<u64, OperandFault> {
    let last = va.wrapping_add(len.max(1) - 1);
    if canonical(va) && canonical(last) {
        Ok(va)
    } else if through_stack {
        Err(OperandFault::StackSegment)
    } else {
        Err(OperandFault::GeneralProtection)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::Reg;

    const LOW_TOP: u64 = 0x0000_7fff_ffff_ffff;

    fn mem(base: u8, disp: i64, segment: Option<Segment>) -> Mem {
        Mem { base: Some(Reg(base)), index: None, disp, rip_relative: false, segment }
    }

    #[test]
    fn every_byte_must_be_canonical_and_the_segment_picks_the_fault() {
        let regs = GuestRegs { rdi: LOW_TOP - 1, rbp: LOW_TOP - 1, r13: LOW_TOP - 1, ..GuestRegs::default() };
        let none = SegmentBases::default();
        assert_eq!(operand(&mem(7, 0, None), 2, &regs, 0, none), Ok(LOW_TOP - 1));
        assert_eq!(operand(&mem(7, 0, None), 3, &regs, 0, none), Err(OperandFault::GeneralProtection), "the last byte");
        assert_eq!(operand(&mem(5, 0, None), 3, &regs, 0, none), Err(OperandFault::StackSegment), "rbp-based");
        assert_eq!(operand(&mem(13, 0, None), 3, &regs, 0, none), Err(OperandFault::GeneralProtection), "r13 is not rbp");
        assert_eq!(operand(&mem(5, 0, Some(Segment::Ds)), 3, &regs, 0, none), Err(OperandFault::GeneralProtection));
        assert_eq!(operand(&mem(7, 0, Some(Segment::Ss)), 3, &regs, 0, none), Err(OperandFault::StackSegment));
        let gs = SegmentBases { fs: 0, gs: 0xffff_8000_0000_0000 - LOW_TOP - 1 };
        assert_eq!(operand(&mem(7, 0, Some(Segment::Gs)), 1, &regs, 0, gs), Err(OperandFault::GeneralProtection), "with its base");
        assert_eq!(operand(&mem(7, 2, Some(Segment::Gs)), 1, &regs, 0, gs), Ok(0xffff_8000_0000_0000), "the upper half");
        assert_eq!(stack(0x8000_0000_0000, 8), Err(OperandFault::StackSegment));
        assert_eq!((OperandFault::GeneralProtection.vector(), OperandFault::StackSegment.vector()), (13, 12));
    }
}
