//! The console ring: buffered guest output without a hypercall per line.

use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Size of the output buffer of [`ConsoleRing`] (a power of two).
pub const CONSOLE_OUT_SIZE: usize = 2048;

/// Size of the input buffer of [`ConsoleRing`] (a power of two).
pub const CONSOLE_IN_SIZE: usize = 1024;

/// Most bytes one `console_write` hypercall writes.
pub const CONSOLE_WRITE_MAX: u64 = 4096;

/// A page shared between a domain and the hypervisor.
///
/// Output: the guest copies bytes to `out[out_prod % CONSOLE_OUT_SIZE]`,
/// then advances `out_prod`; the hypervisor consumes from `out_cons`. The
/// indexes run freely and wrap at 2^32; `out_prod - out_cons` is the number
/// of bytes waiting and never exceeds `CONSOLE_OUT_SIZE`. The hypervisor
/// drains the ring whenever the domain gives up the CPU (`yield`, `exit`, a
/// fault) and before it writes anything the domain passes to
/// `console_write`, so what a guest wrote appears before anything the
/// hypervisor prints on its behalf, and a crashing guest's last lines are
/// not lost. Other hypercalls leave the ring alone (they stay cheap). A
/// guest that finds the ring full calls `console_write` with length 0 to
/// drain it.
///
/// Input runs the other way (`in_prod` written by the hypervisor, `in_cons`
/// by the guest). It is reserved for the console-input virtual interrupt and
/// stays empty until that exists.
///
/// The hypervisor treats every field as untrusted: an impossible
/// `out_prod - out_cons` drains nothing and resets `out_cons` to `out_prod`.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct ConsoleRing {
    /// Output producer index (written by the guest).
    pub out_prod: u32,
    /// Output consumer index (written by the hypervisor).
    pub out_cons: u32,
    /// Input producer index (written by the hypervisor).
    pub in_prod: u32,
    /// Input consumer index (written by the guest).
    pub in_cons: u32,
    /// Output bytes.
    pub out: [u8; CONSOLE_OUT_SIZE],
    /// Input bytes.
    pub input: [u8; CONSOLE_IN_SIZE],
    /// Pads the ring to one page.
    pub reserved: [u8; 4096 - 16 - CONSOLE_OUT_SIZE - CONSOLE_IN_SIZE],
}

const_assert_eq!(core::mem::size_of::<ConsoleRing>(), 4096);
const_assert_eq!(core::mem::offset_of!(ConsoleRing, out), 16);
const_assert_eq!(core::mem::offset_of!(ConsoleRing, input), 16 + CONSOLE_OUT_SIZE);
const_assert_eq!(CONSOLE_OUT_SIZE & (CONSOLE_OUT_SIZE - 1), 0);
const_assert_eq!(CONSOLE_IN_SIZE & (CONSOLE_IN_SIZE - 1), 0);

/// Byte offset of `out_prod` in the ring.
pub const OUT_PROD_OFFSET: usize = core::mem::offset_of!(ConsoleRing, out_prod);
/// Byte offset of `out_cons` in the ring.
pub const OUT_CONS_OFFSET: usize = core::mem::offset_of!(ConsoleRing, out_cons);
/// Byte offset of `out` in the ring.
pub const OUT_OFFSET: usize = core::mem::offset_of!(ConsoleRing, out);
