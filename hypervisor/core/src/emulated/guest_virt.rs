//! Reading and writing an emulated kernel's virtual memory, as its CPU would.
//!
//! The emulator touches guest memory on the guest's behalf: it fetches the
//! faulting instruction, reads the operand of `lgdt`, pops the frame of an
//! `iretq`, pushes an interrupt frame onto the guest's stack. Each access
//! goes through the guest's own page tables ([`walk`]) with the rights the
//! guest has at its virtual CPL, so the emulator can never reach what the
//! guest could not, and a failure is the very #PF the guest would take.
//!
//! Writes are reported back ([`GuestVirt::written`]): when one lands in a
//! guest page table that has a shadow, the shadow must drop what it
//! derived from it.

use super::guest_phys::{Gpa, GuestPhys, NotRam};
use super::guest_walk::{walk, Access, WalkFault};
use crate::machine_memory::MachineMemory;
use hypercall_abi::PAGE_SIZE;

/// Why a guest-virtual access failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VirtFault {
    /// The guest would take a page fault at `va` with this error code.
    PageFault {
        /// The faulting address (the guest's CR2).
        va: u64,
        /// The #PF error code.
        error_code: u64,
    },
    /// The tables or the page lead outside the domain's RAM.
    NotRam(NotRam),
    /// `va` is not canonical: no page walk can name it (its table indices
    /// would name another address). The emulator checks every operand
    /// before it gets here ([`super::address`]), so this is a last line,
    /// and the guest's #GP(0).
    NonCanonical {
        /// The address.
        va: u64,
    },
}

impl From<WalkFault> for VirtFault {
    fn from(f: WalkFault) -> Self {
        match f {
            WalkFault::PageFault { error_code } => VirtFault::PageFault { va: 0, error_code },
            WalkFault::NotRam(n) => VirtFault::NotRam(n),
        }
    }
}

/// The guest's virtual memory under its current CR3.
pub struct GuestVirt<'a, M: MachineMemory> {
    /// Machine memory.
    pub mem: &'a mut M,
    /// The domain's RAM.
    pub phys: GuestPhys<'a>,
    /// The guest's CR3.
    pub cr3: u64,
    /// The guest's EFER.NXE.
    pub nxe: bool,
    /// Accesses are made at the guest's user privilege (virtual CPL 3).
    pub user: bool,
    /// Every guest-physical range written so far, for the shadow to resync.
    pub written: Written,
}

/// The guest-physical ranges an emulated instruction wrote, without a heap
/// allocation on the exit path. An instruction writes a few pieces (an
/// interrupt frame straddles at most two pages; a `rep` string store
/// stops after 64 KiB, 17 pieces); should more ever come, `overflowed` says
/// so and the caller must assume any page table may have changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Written {
    /// The ranges, in the order written.
    pub ranges: heapless::Vec<(Gpa, u64), 24>,
    /// Some ranges did not fit in `ranges`.
    pub overflowed: bool,
}

impl Written {
    fn push(&mut self, gpa: Gpa, len: u64) {
        if self.ranges.push((gpa, len)).is_err() {
            self.overflowed = true;
        }
    }
}

impl<'a, M: MachineMemory> GuestVirt<'a, M> {
    /// A view of the memory of a guest whose CR3, NXE and CPL are given.
    pub fn new(mem: &'a mut M, phys: GuestPhys<'a>, cr3: u64, nxe: bool, user: bool) -> Self {
        GuestVirt { mem, phys, cr3, nxe, user, written: Written::default() }
    }

    /// Translates `va` for an access (`write`, `fetch`) at the guest's privilege.
    pub fn translate(&self, va: u64, write: bool, fetch: bool) -> Result<Gpa, VirtFault> {
        if !super::cpu::canonical(va) {
            return Err(VirtFault::NonCanonical { va });
        }
        let access = Access { write, user: self.user, fetch };
        walk(&*self.mem, &self.phys, self.cr3, va, access, self.nxe).map(|t| t.gpa).map_err(|f| match f.into() {
            VirtFault::PageFault { error_code, .. } => VirtFault::PageFault { va, error_code },
            other => other,
        })
    }

    /// Reads `buf.len()` bytes at `va` (`fetch`: as an instruction fetch).
    /// Nothing is read unless every page passes.
    pub fn read(&self, va: u64, buf: &mut [u8], fetch: bool) -> Result<(), VirtFault> {
        for (chunk_va, from, len) in chunks(va, buf.len()) {
            for p in self.pieces(chunk_va, len, false, fetch)? {
                let at = from + p.from;
                self.phys.read(&*self.mem, p.gpa, &mut buf[at..at + p.len]).map_err(VirtFault::NotRam)?;
            }
        }
        Ok(())
    }

    /// Reads as many of `buf.len()` instruction bytes at `va` as are
    /// mapped, stopping at the first page that is not; returns how many,
    /// or the fault if not even the first byte can be fetched.
    pub fn fetch(&self, va: u64, buf: &mut [u8]) -> Result<usize, VirtFault> {
        let first = ((PAGE_SIZE - va % PAGE_SIZE) as usize).min(buf.len());
        self.read(va, &mut buf[..first], true)?;
        if first < buf.len() && self.read(va.wrapping_add(first as u64), &mut buf[first..], true).is_ok() {
            return Ok(buf.len());
        }
        Ok(first)
    }

    /// Writes `data` at `va`. Nothing is written unless every page passes.
    pub fn write(&mut self, va: u64, data: &[u8]) -> Result<(), VirtFault> {
        for (chunk_va, from, len) in chunks(va, data.len()) {
            for p in self.pieces(chunk_va, len, true, false)? {
                let at = from + p.from;
                self.phys.write(self.mem, p.gpa, &data[at..at + p.len]).map_err(VirtFault::NotRam)?;
                self.written.push(p.gpa, p.len as u64);
            }
        }
        Ok(())
    }

    /// Reads a little-endian `u64` at `va`.
    pub fn read_u64(&self, va: u64) -> Result<u64, VirtFault> {
        let mut b = [0; 8];
        self.read(va, &mut b, false)?;
        Ok(u64::from_le_bytes(b))
    }

    /// The guest-physical pieces of `va..va + len` (at most
    /// [`CHUNK_PAGES`] pages), one per page, all translated before any is
    /// used.
    fn pieces(&self, va: u64, len: usize, write: bool, fetch: bool) -> Result<heapless::Vec<Piece, CHUNK_PAGES>, VirtFault> {
        let mut pieces = heapless::Vec::new();
        let mut done = 0;
        while done < len {
            let at = va.wrapping_add(done as u64);
            let n = (len - done).min((PAGE_SIZE - at % PAGE_SIZE) as usize);
            let piece = Piece { gpa: self.translate(at, write, fetch)?, from: done, len: n };
            pieces.push(piece).expect("chunks() keeps a range within CHUNK_PAGES pages");
            done += n;
        }
        Ok(pieces)
    }
}

/// Pages of one all-or-nothing access; a longer range is done in chunks
/// (no caller needs one: the longest access is a 48-byte interrupt frame,
/// and the store emulator's string instructions go a page at a time).
pub const CHUNK_PAGES: usize = 4;

/// One page's part of an access.
#[derive(Clone, Copy, Debug)]
struct Piece {
    gpa: Gpa,
    /// Offset of this part in the caller's buffer (from the chunk's start).
    from: usize,
    len: usize,
}

/// `va..va + len` cut into chunks of whole pages' worth (at most
/// `CHUNK_PAGES - 1` bytes past a page start, so each spans at most
/// `CHUNK_PAGES` pages): (chunk start, offset in the buffer, length).
fn chunks(va: u64, len: usize) -> impl Iterator<Item = (u64, usize, usize)> {
    const CHUNK: usize = (CHUNK_PAGES - 1) * PAGE_SIZE as usize;
    (0..len.div_ceil(CHUNK).max(1)).map(move |i| {
        let from = i * CHUNK;
        (va.wrapping_add(from as u64), from, (len - from.min(len)).min(CHUNK))
    })
}

/// The store emulator reaches guest memory the same way as everything else.
impl<M: MachineMemory> super::store::GuestMemoryAccess for GuestVirt<'_, M> {
    type Error = VirtFault;
    fn read(&mut self, va: u64, buf: &mut [u8]) -> Result<(), VirtFault> {
        GuestVirt::read(self, va, buf, false)
    }
    fn write(&mut self, va: u64, data: &[u8]) -> Result<(), VirtFault> {
        GuestVirt::write(self, va, data)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::machine_memory::TestMemory;
    use crate::paging::{flags, table_index};

    /// Guest RAM of `frames` frames (machine frame = gfn + 64) with an
    /// identity map of all of it at 0 (4 KiB pages, writable; user when
    /// `user`), tables at gfn 1 (L4), 2 (L3), 3 (L2), 4.. (L1s).
    pub fn identity_guest(frames: u64, user: bool) -> (TestMemory, Vec<u64>) {
        let mut mem = TestMemory::new(64 + frames);
        let map: Vec<u64> = (0..frames).map(|g| g + 64).collect();
        let phys = GuestPhys::new(&map);
        let u = if user { flags::USER } else { 0 };
        let rw = flags::PRESENT | flags::WRITABLE | u;
        phys.write_u64(&mut mem, Gpa(0x1000), 0x2000 | rw).unwrap();
        phys.write_u64(&mut mem, Gpa(0x2000), 0x3000 | rw).unwrap();
        for gfn in 0..frames {
            let l1 = 4 + gfn / 512;
            if gfn % 512 == 0 {
                let slot = Gpa(0x3000 + table_index(gfn * 4096, 2) as u64 * 8);
                phys.write_u64(&mut mem, slot, (l1 * 4096) | rw).unwrap();
            }
            phys.write_u64(&mut mem, Gpa(l1 * 4096 + (gfn % 512) * 8), (gfn * 4096) | rw).unwrap();
        }
        (mem, map)
    }

    #[test]
    fn reads_and_writes_cross_pages_and_are_recorded() {
        let (mut mem, map) = identity_guest(32, false);
        let mut v = GuestVirt::new(&mut mem, GuestPhys::new(&map), 0x1000, true, false);
        v.write(0x9ffc, &[1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
        assert_eq!(v.read_u64(0x9ffc).unwrap(), 0x0807_0605_0403_0201);
        assert_eq!(v.written.ranges, [(Gpa(0x9ffc), 4), (Gpa(0xa000), 4)]);
    }

    #[test]
    fn user_privilege_and_unmapped_pages_fault_like_hardware() {
        let (mut mem, map) = identity_guest(32, false);
        let mut v = GuestVirt::new(&mut mem, GuestPhys::new(&map), 0x1000, true, true);
        assert_eq!(v.write(0x5000, &[1]), Err(VirtFault::PageFault { va: 0x5000, error_code: 0b111 }));
        v.user = false;
        assert_eq!(v.read_u64(0x40_0000), Err(VirtFault::PageFault { va: 0x40_0000, error_code: 0 }));
        assert!(v.written.ranges.is_empty());
    }

    #[test]
    fn a_non_canonical_address_is_never_walked() {
        let (mut mem, map) = identity_guest(32, false);
        let mut v = GuestVirt::new(&mut mem, GuestPhys::new(&map), 0x1000, true, false);
        // Bit 47 alone: the walk's indices would be those of 0x5000 but for
        // the top-level slot; every other bit of 63..48 as well.
        let va = 0x0000_8000_0000_5000;
        assert_eq!(v.write(va, &[1]), Err(VirtFault::NonCanonical { va }));
        assert_eq!(v.read_u64(0xff00_0000_0000_5000), Err(VirtFault::NonCanonical { va: 0xff00_0000_0000_5000 }));
        assert!(v.written.ranges.is_empty());
    }

    #[test]
    fn a_fetch_stops_at_an_unmapped_page() {
        let (mut mem, map) = identity_guest(32, false);
        let v = GuestVirt::new(&mut mem, GuestPhys::new(&map), 0x1000, true, false);
        let mut buf = [0; 15];
        assert_eq!(v.fetch(0x1_fffa, &mut buf), Ok(6));
        assert_eq!(v.fetch(0x1_0000, &mut buf), Ok(15));
        assert!(v.fetch(0x20_0000, &mut buf).is_err());
    }
}
