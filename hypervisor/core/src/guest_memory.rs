//! Guest pointers: untrusted claims until checked against the guest's tables.
//!
//! A hypercall argument that is an address arrives as a [`GuestAddr`] (or,
//! with a length, a [`GuestSlice`]). Neither can be dereferenced. The only
//! way to its bytes is [`GuestView::read`] / [`GuestView::write`], which
//! first translate *every* page of the range through the guest's own page
//! tables, for a ring-3 access with the right needed, and touch nothing
//! unless all pages pass. A bad pointer therefore costs the guest a
//! [`HypercallError::BadAddress`], and the hypervisor never faults on it.

use crate::domain::DomainId;
use crate::frame_table::FrameTable;
use crate::machine_memory::MachineMemory;
use crate::paging::{translate, Access, WalkError};
use hypercall_abi::{HypercallError, PAGE_SIZE};

/// A guest-virtual address as the guest claimed it. Not yet checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestAddr(pub u64);

/// A guest-virtual byte range as the guest claimed it. Not yet checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestSlice {
    /// First byte.
    pub addr: GuestAddr,
    /// Length in bytes.
    pub len: u64,
}

impl GuestSlice {
    /// The claim `addr..addr + len`.
    pub fn new(addr: u64, len: u64) -> Self {
        GuestSlice { addr: GuestAddr(addr), len }
    }
}

impl From<WalkError> for HypercallError {
    fn from(_: WalkError) -> Self {
        HypercallError::BadAddress
    }
}

/// Pages a range may span and still be translated only once.
pub const PIECES: usize = 4;

/// One domain's address space, seen from the hypervisor.
pub struct GuestView<'a, M: MachineMemory> {
    /// Machine memory.
    pub mem: &'a mut M,
    /// Frame ownership, to confirm every frame the walk reaches.
    pub frames: &'a FrameTable,
    /// The domain whose address space this is.
    pub domain: DomainId,
    /// Machine address of its top-level page table.
    pub root: u64,
}

impl<M: MachineMemory> GuestView<'_, M> {
    /// The machine address of guest-virtual `va` for a ring-3 `access`
    /// (valid up to the end of its page).
    pub fn translate(&self, va: u64, access: Access) -> Result<u64, WalkError> {
        let (frames, domain) = (self.frames, self.domain);
        translate(&*self.mem, self.root, va, access, |mfn| frames.is_owned_by(mfn, domain))
    }

    /// Checks that the whole range is accessible, then calls `each(maddr,
    /// offset, len)` for its pieces, page by page. Nothing is touched unless
    /// every page passes. Each page is translated once (ranges of up to
    /// [`PIECES`] pages, which is every structure the ABI passes; longer
    /// ones are checked in a first pass and translated again to copy).
    fn for_each_piece(
        &mut self,
        slice: GuestSlice,
        access: Access,
        mut each: impl FnMut(&mut M, u64, usize, usize),
    ) -> Result<(), HypercallError> {
        if slice.len == 0 {
            return Ok(()); // nothing to touch, wherever it points
        }
        let start = slice.addr.0;
        let end = start.checked_add(slice.len).ok_or(HypercallError::BadAddress)?;
        // The common case, a structure inside one page: one translation.
        if (start & (PAGE_SIZE - 1)) + slice.len <= PAGE_SIZE {
            let maddr = self.translate(start, access)?;
            each(self.mem, maddr, 0, slice.len as usize);
            return Ok(());
        }
        let pages = (end - 1) / PAGE_SIZE - start / PAGE_SIZE + 1;
        let mut pieces = [(0u64, 0u64, 0u64); PIECES];
        let mut va = start;
        let mut n = 0;
        while va < end {
            let len = (PAGE_SIZE - (va & (PAGE_SIZE - 1))).min(end - va);
            let maddr = self.translate(va, access)?;
            if pages as usize <= PIECES {
                pieces[n] = (maddr, va - start, len);
                n += 1;
            }
            va += len;
        }
        if pages as usize <= PIECES {
            for &(maddr, offset, len) in &pieces[..n] {
                each(self.mem, maddr, offset as usize, len as usize);
            }
            return Ok(());
        }
        let mut va = start;
        while va < end {
            let len = (PAGE_SIZE - (va & (PAGE_SIZE - 1))).min(end - va);
            let maddr = self.translate(va, access)?;
            each(self.mem, maddr, (va - start) as usize, len as usize);
            va += len;
        }
        Ok(())
    }

    /// Checks that the whole range may be accessed as `access` says,
    /// touching nothing (for a call that must know before it acts, and
    /// then copies the range piece by piece).
    pub fn check(&mut self, slice: GuestSlice, access: Access) -> Result<(), HypercallError> {
        self.for_each_piece(slice, access, |_, _, _, _| {})
    }

    /// Copies the guest range into `out` (whose length must equal the range's).
    pub fn read(&mut self, slice: GuestSlice, out: &mut [u8]) -> Result<(), HypercallError> {
        assert_eq!(out.len() as u64, slice.len, "caller sizes the buffer from the slice");
        self.for_each_piece(slice, Access::Read, |mem, maddr, offset, len| {
            mem.read(maddr, &mut out[offset..offset + len]);
        })
    }

    /// Copies `data` into the guest range (whose length must equal `data`'s).
    pub fn write(&mut self, slice: GuestSlice, data: &[u8]) -> Result<(), HypercallError> {
        assert_eq!(data.len() as u64, slice.len, "caller sizes the slice from the data");
        self.for_each_piece(slice, Access::Write, |mem, maddr, offset, len| {
            mem.write(maddr, &data[offset..offset + len]);
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame_table::Owner;
    use crate::machine_memory::TestMemory;
    use crate::paging::flags::*;

    /// A 3-page guest: va 0x40_0000 -> frame 10 (RW), 0x40_1000 -> frame 11 (RO),
    /// 0x40_2000 not present; 0x40_3000 -> frame 13 owned by another domain.
    fn setup() -> (TestMemory, FrameTable, u64) {
        let mut mem = TestMemory::new(32);
        let mut frames = FrameTable::new(32);
        frames.add_free(1, 32);
        let d = Owner::Domain(DomainId(0));
        for _ in 0..14 {
            frames.alloc(d).unwrap();
        }
        frames.free(13, d).unwrap();
        frames.alloc(Owner::Domain(DomainId(1))).unwrap(); // takes 13
        let (pml4, pdpt, pd, pt) = (1u64 << 12, 2u64 << 12, 3u64 << 12, 4u64 << 12);
        let t = PRESENT | WRITABLE | USER;
        mem.write_u64(pml4, pdpt | t);
        mem.write_u64(pdpt, pd | t);
        mem.write_u64(pd + 2 * 8, pt | t); // 0x40_0000 is PD index 2
        mem.write_u64(pt, (10 << 12) | t);
        mem.write_u64(pt + 8, (11 << 12) | PRESENT | USER);
        mem.write_u64(pt + 3 * 8, (13 << 12) | t);
        (mem, frames, pml4)
    }

    #[test]
    fn reads_and_writes_across_pages_only_when_all_pages_pass() {
        let (mut mem, frames, root) = setup();
        let mut view = GuestView { mem: &mut mem, frames: &frames, domain: DomainId(0), root };
        view.write(GuestSlice::new(0x40_0ffe, 2), b"hi").unwrap();
        let mut out = [0u8; 4];
        view.read(GuestSlice::new(0x40_0ffe, 4), &mut out).unwrap();
        assert_eq!(&out, b"hi\0\0");
        // Writing across into the read-only page fails and writes nothing.
        assert_eq!(view.write(GuestSlice::new(0x40_0ffe, 4), b"XXXX"), Err(HypercallError::BadAddress));
        view.read(GuestSlice::new(0x40_0ffe, 2), &mut out[..2]).unwrap();
        assert_eq!(&out[..2], b"hi");
    }

    #[test]
    fn rejects_every_kind_of_bad_pointer() {
        let (mut mem, frames, root) = setup();
        let mut view = GuestView { mem: &mut mem, frames: &frames, domain: DomainId(0), root };
        let mut b = [0u8; 16];
        let bad = |view: &mut GuestView<TestMemory>, addr: u64, len: usize, b: &mut [u8]| {
            view.read(GuestSlice::new(addr, len as u64), &mut b[..len])
        };
        assert_eq!(bad(&mut view, 0x1000, 16, &mut b), Err(HypercallError::BadAddress), "unmapped");
        assert_eq!(bad(&mut view, 0x40_2000, 16, &mut b), Err(HypercallError::BadAddress), "not present");
        assert_eq!(bad(&mut view, 0x40_3000, 16, &mut b), Err(HypercallError::BadAddress), "foreign frame");
        assert_eq!(bad(&mut view, 0xffff_8000_0000_0000, 16, &mut b), Err(HypercallError::BadAddress), "hypervisor");
        assert_eq!(bad(&mut view, 0xffff_ffff_8010_0000, 16, &mut b), Err(HypercallError::BadAddress), "hypervisor image");
        assert_eq!(bad(&mut view, u64::MAX - 3, 16, &mut b), Err(HypercallError::BadAddress), "wraps");
        assert_eq!(bad(&mut view, 0x40_1ff8, 16, &mut b), Err(HypercallError::BadAddress), "runs into a hole");
        assert_eq!(view.write(GuestSlice::new(0x40_1000, 1), b"x"), Err(HypercallError::BadAddress), "read-only");
        assert_eq!(bad(&mut view, 0x40_1000, 0, &mut b), Ok(()), "empty range is fine");
        assert_eq!(bad(&mut view, 0x1, 0, &mut b), Ok(()), "even where nothing is mapped (an empty slice's dangling pointer)");
    }

    #[test]
    fn supervisor_entries_are_not_guest_memory() {
        let (mut mem, frames, root) = setup();
        let pt = 4u64 << 12;
        mem.write_u64(pt, (10 << 12) | PRESENT | WRITABLE); // no USER bit
        let mut view = GuestView { mem: &mut mem, frames: &frames, domain: DomainId(0), root };
        let mut b = [0u8; 1];
        assert_eq!(view.read(GuestSlice::new(0x40_0000, 1), &mut b), Err(HypercallError::BadAddress));
    }
}
