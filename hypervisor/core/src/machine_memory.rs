//! Machine memory as the logic sees it: a trait the kernel implements.
//!
//! The logic crate contains no `unsafe`, so it cannot dereference a machine
//! address. Instead every read or write of machine memory (a guest's page
//! tables, its console ring, a buffer it passed) goes through
//! [`MachineMemory`]. The kernel implements it over its physical map; tests
//! implement it over a `Vec` ([`TestMemory`]).

use crate::frame_table::Mfn;
use hypercall_abi::trap::TrapFrame;
use hypercall_abi::PAGE_SIZE;
use zerocopy::{FromZeros, IntoBytes};

/// Byte-addressed access to machine (host-physical) memory.
///
/// Callers only pass addresses of frames they have checked (owned by a
/// domain or by the hypervisor); an implementation may panic on an address
/// outside RAM, since that is a bug in the caller, never a guest's doing.
pub trait MachineMemory {
    /// Copies `buf.len()` bytes starting at machine address `maddr` into `buf`.
    fn read(&self, maddr: u64, buf: &mut [u8]);
    /// Copies `data` to machine address `maddr`.
    fn write(&mut self, maddr: u64, data: &[u8]);

    /// Reads a little-endian `u64` (page-table entries, ring indexes).
    fn read_u64(&self, maddr: u64) -> u64 {
        let mut b = [0; 8];
        self.read(maddr, &mut b);
        u64::from_le_bytes(b)
    }
    /// Writes a little-endian `u64`.
    fn write_u64(&mut self, maddr: u64, value: u64) {
        self.write(maddr, &value.to_le_bytes());
    }
    /// Reads a little-endian `u32`.
    fn read_u32(&self, maddr: u64) -> u32 {
        let mut b = [0; 4];
        self.read(maddr, &mut b);
        u32::from_le_bytes(b)
    }
    /// Writes a little-endian `u32`.
    fn write_u32(&mut self, maddr: u64, value: u32) {
        self.write(maddr, &value.to_le_bytes());
    }
    /// Reads the [`TrapFrame`] at `maddr`. Every `iret` does; an
    /// implementation that can copy it as one value (no byte buffer to zero
    /// and copy again) should.
    fn read_trap_frame(&self, maddr: u64) -> TrapFrame {
        let mut frame = TrapFrame::new_zeroed();
        self.read(maddr, frame.as_mut_bytes());
        frame
    }
    /// Writes a [`TrapFrame`] at `maddr` (every bounce does).
    fn write_trap_frame(&mut self, maddr: u64, frame: &TrapFrame) {
        self.write(maddr, frame.as_bytes());
    }
    /// Fills a whole frame with zeroes.
    fn zero_frame(&mut self, mfn: Mfn) {
        const ZEROES: [u8; PAGE_SIZE as usize] = [0; PAGE_SIZE as usize];
        self.write(mfn * PAGE_SIZE, &ZEROES);
    }
}

/// Machine memory for tests: a zero-filled byte vector starting at address 0.
#[derive(Clone, Debug)]
pub struct TestMemory {
    bytes: alloc::vec::Vec<u8>,
}

impl TestMemory {
    /// `frames` frames of zeroed memory.
    pub fn new(frames: u64) -> Self {
        TestMemory { bytes: alloc::vec![0; (frames * PAGE_SIZE) as usize] }
    }
}

impl MachineMemory for TestMemory {
    fn read(&self, maddr: u64, buf: &mut [u8]) {
        let start = maddr as usize;
        buf.copy_from_slice(&self.bytes[start..start + buf.len()]);
    }
    fn write(&mut self, maddr: u64, data: &[u8]) {
        let start = maddr as usize;
        self.bytes[start..start + data.len()].copy_from_slice(data);
    }
}
