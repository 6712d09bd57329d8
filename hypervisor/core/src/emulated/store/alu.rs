//! The arithmetic of the read-modify-write stores, and the RFLAGS they set.
//!
//! `add`, `sub` (and `cmpxchg`, which compares by subtracting) set the six
//! status flags from the result: CF the unsigned carry or borrow, OF the
//! signed overflow, SF the sign, ZF zero, AF the carry out of bit 3, PF the
//! even parity of the low byte. `and`, `or` and `xor` clear CF and OF and
//! set SF, ZF and PF; the manuals leave AF undefined, and it is cleared, as
//! QEMU and Bochs do.

use super::mask;
use crate::decode::{AluOp, Size};

/// Carry.
pub const CF: u64 = 1 << 0;
/// Parity of the low byte (set when even).
pub const PF: u64 = 1 << 2;
/// Carry out of bit 3.
pub const AF: u64 = 1 << 4;
/// Zero.
pub const ZF: u64 = 1 << 6;
/// Sign.
pub const SF: u64 = 1 << 7;
/// Signed overflow.
pub const OF: u64 = 1 << 11;
/// The status flags these instructions write.
pub const STATUS: u64 = CF | PF | AF | ZF | SF | OF;

/// `a op b` at `size` bytes: the result and the status flags.
pub fn compute(op: AluOp, a: u64, b: u64, size: Size) -> (u64, u64) {
    let m = mask(size);
    let sign = 1u64 << (8 * u32::from(size) - 1);
    let (a, b) = (a & m, b & m);
    let (result, carry, overflow, adjust) = match op {
        AluOp::Add => {
            let r = a.wrapping_add(b) & m;
            (r, r < a, (a ^ r) & (b ^ r) & sign != 0, (a ^ b ^ r) & 0x10 != 0)
        }
        AluOp::Sub => {
            let r = a.wrapping_sub(b) & m;
            (r, a < b, (a ^ b) & (a ^ r) & sign != 0, (a ^ b ^ r) & 0x10 != 0)
        }
        AluOp::And => (a & b, false, false, false),
        AluOp::Or => (a | b, false, false, false),
        AluOp::Xor => (a ^ b, false, false, false),
    };
    let bit = |set: bool, flag: u64| if set { flag } else { 0 };
    let flags = bit(carry, CF)
        | bit((result as u8).count_ones() & 1 == 0, PF)
        | bit(adjust, AF)
        | bit(result == 0, ZF)
        | bit(result & sign != 0, SF)
        | bit(overflow, OF);
    (result, flags)
}

/// RFLAGS with its status flags replaced by `flags`.
pub fn merge(rflags: u64, flags: u64) -> u64 {
    (rflags & !STATUS) | flags
}
