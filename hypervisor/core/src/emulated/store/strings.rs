//! `stos` and `movs`, with or without `rep`, in chunks of one page.
//!
//! The CPU runs a string instruction one element at a time: store (or
//! copy) at rdi, step rdi (and rsi) by the element size, backwards when
//! RFLAGS.DF is set, and with `rep` count rcx down to zero. Here a *chunk*
//! of elements is done at once: as many as fit in the current page of each
//! operand (at least one: an element may straddle two pages), so that every
//! memory call stays on one page (two for a straddling element). After each
//! chunk the registers are written back, so a fault in the next chunk
//! leaves them exactly as the CPU would (the elements before the fault are
//! done, rcx counts the rest).
//!
//! A chunk reads all its source bytes before writing, which equals the
//! element-by-element order unless the chunk would read bytes that it has
//! itself written: when the destination runs ahead of the source by less
//! than a chunk, the chunk is cut to that distance.
//!
//! With a 0x67 prefix the registers are 32 bits wide: ecx, esi and edi are
//! used and written back zero-extended, as any 32-bit register write.

use super::{mask, GuestMemoryAccess, SegmentBases, StoreError, MAX_STRING_BYTES};
use crate::decode::{Segment, Size, StoreOp};
use crate::emulated::address::{self, OperandFault};
use crate::vcpu::GuestRegs;
use hypercall_abi::PAGE_SIZE;

/// RFLAGS.DF: string instructions step downwards.
const DF: u64 = 1 << 10;
const RAX: u8 = 0;
const RCX: u8 = 1;
const RSI: u8 = 6;
const RDI: u8 = 7;

/// Runs `stos` or `movs`; `Ok(true)` when the instruction is complete,
/// `Ok(false)` when it stopped after [`MAX_STRING_BYTES`] with the rest to
/// do (RIP stays on it).
pub(super) fn run<M: GuestMemoryAccess>(
    op: StoreOp,
    regs: &mut GuestRegs,
    seg: SegmentBases,
    mem: &mut M,
) -> Result<bool, StoreError<M::Error>> {
    let (size, rep, addr32, src_base, src_stack, copy) = match op {
        StoreOp::Stos { size, rep, addr32 } => (size, rep, addr32, 0, false, false),
        StoreOp::Movs { size, rep, addr32, src_segment } => {
            (size, rep, addr32, seg.base(src_segment), src_segment == Some(Segment::Ss), true)
        }
        _ => unreachable!("only string stores come here"),
    };
    let s = u64::from(size);
    let width = if addr32 { mask(4) } else { u64::MAX };
    let backward = regs.rflags & DF != 0;
    let mut count = if rep { regs.gpr(RCX) & width } else { 1 };
    let pattern = (regs.gpr(RAX) & mask(size)).to_le_bytes();
    let mut budget = MAX_STRING_BYTES;
    let mut buf = [0u8; PAGE_SIZE as usize];
    while count > 0 {
        if budget < s {
            return Ok(false);
        }
        let dst = regs.gpr(RDI) & width;
        let src = (regs.gpr(RSI) & width).wrapping_add(src_base);
        let mut n = count.min(budget / s).min(room(dst, size, backward));
        if copy {
            n = n.min(room(src, size, backward));
            let ahead = if backward { src.wrapping_sub(dst) } else { dst.wrapping_sub(src) };
            if ahead != 0 && ahead < n * s {
                n = (ahead / s).max(1);
            }
        }
        let c = Chunk { dst, src: copy.then_some(src), n, size, backward, pattern };
        c.reachable(src_stack).map_err(StoreError::Operand)?;
        if let Err(e) = c.run(mem, &mut buf) {
            // The chunk's page refused it. The CPU faults on the first
            // element, whose address the guest sees in CR2: redo it alone.
            if n == 1 {
                return Err(StoreError::Memory(e));
            }
            n = 1;
            Chunk { n, ..c }.run(mem, &mut buf).map_err(StoreError::Memory)?;
        }
        let step = |a: u64| (if backward { a.wrapping_sub(n * s) } else { a.wrapping_add(n * s) }) & width;
        regs.set_gpr(RDI, step(dst));
        if copy {
            regs.set_gpr(RSI, step(regs.gpr(RSI) & width));
        }
        count -= n;
        if rep {
            regs.set_gpr(RCX, count);
        }
        budget -= n * s;
    }
    Ok(true)
}

/// Elements done with one read (for `movs`) and one write.
#[derive(Clone, Copy)]
struct Chunk {
    /// Address of the first element's destination.
    dst: u64,
    /// Address of the first element's source (`movs`), or none (`stos`).
    src: Option<u64>,
    /// Elements.
    n: u64,
    /// Element size.
    size: Size,
    /// Going down (RFLAGS.DF).
    backward: bool,
    /// What `stos` stores (its low `size` bytes).
    pattern: [u8; 8],
}

impl Chunk {
    /// Whether the CPU may reach the chunk's bytes: canonical addresses,
    /// else #GP(0) (#SS(0) for a source through SS). Canonical form changes
    /// only at a page boundary and a chunk stays in one page of each
    /// operand unless it is one element, so if the chunk is not reachable,
    /// its first element is not, which is where the CPU faults.
    fn reachable(&self, src_stack: bool) -> Result<(), OperandFault> {
        let len = self.n * u64::from(self.size);
        address::checked(self.low(self.dst), len, false)?;
        if let Some(src) = self.src {
            address::checked(self.low(src), len, src_stack)?;
        }
        Ok(())
    }

    /// The lowest address of the elements starting at `a`.
    fn low(&self, a: u64) -> u64 {
        if self.backward {
            a.wrapping_sub((self.n - 1) * u64::from(self.size))
        } else {
            a
        }
    }

    fn run<M: GuestMemoryAccess>(&self, mem: &mut M, buf: &mut [u8; PAGE_SIZE as usize]) -> Result<(), M::Error> {
        let s = u64::from(self.size);
        let bytes = &mut buf[..(self.n * s) as usize];
        match self.src {
            Some(src) => mem.read(self.low(src), bytes)?,
            None => {
                for element in bytes.chunks_exact_mut(usize::from(self.size)) {
                    element.copy_from_slice(&self.pattern[..usize::from(self.size)]);
                }
            }
        }
        mem.write(self.low(self.dst), bytes)
    }
}

/// How many elements of `size` bytes, starting with the one at `a` and
/// going in the string's direction, lie in `a`'s page (at least one: an
/// element that straddles two pages goes alone).
fn room(a: u64, size: Size, backward: bool) -> u64 {
    let (offset, s) = (a % PAGE_SIZE, u64::from(size));
    let fit = if offset + s > PAGE_SIZE {
        0
    } else if backward {
        offset / s + 1
    } else {
        (PAGE_SIZE - offset) / s
    };
    fit.max(1)
}
