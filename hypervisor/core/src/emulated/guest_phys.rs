//! Guest-physical memory: what an emulated kernel believes is RAM.
//!
//! An unmodified kernel manages "physical" memory: its page tables and its
//! CR3 hold physical addresses, and it believes RAM starts at 0. Under
//! trap-and-emulate those are *guest-physical* addresses ([`Gpa`]): page
//! `gfn` of the domain's RAM lives in machine frame `frames[gfn]`, and
//! nothing says the machine frames are contiguous. This module is the one
//! place that turns a guest-physical address into a machine address; an
//! address beyond the domain's RAM is an error the caller reports, never a
//! machine access.

use crate::frame_table::Mfn;
use crate::machine_memory::MachineMemory;
use hypercall_abi::PAGE_SIZE;

/// A guest-physical address, as an emulated kernel's page tables hold it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Gpa(pub u64);

impl Gpa {
    /// Its guest frame number.
    pub fn gfn(self) -> u64 {
        self.0 / PAGE_SIZE
    }
    /// Its offset in the page.
    pub fn offset(self) -> u64 {
        self.0 % PAGE_SIZE
    }
}

/// A guest-physical address outside the domain's RAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotRam(pub Gpa);

impl core::fmt::Display for NotRam {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "guest-physical address {:#x} is not RAM", self.0 .0)
    }
}

/// A domain's guest-physical memory: guest frame `gfn` is machine frame
/// `frames[gfn]`.
#[derive(Clone, Copy, Debug)]
pub struct GuestPhys<'a> {
    frames: &'a [Mfn],
}

impl<'a> GuestPhys<'a> {
    /// The RAM made of these machine frames, in guest-frame order.
    pub fn new(frames: &'a [Mfn]) -> Self {
        GuestPhys { frames }
    }

    /// RAM size in bytes.
    pub fn size(&self) -> u64 {
        self.frames.len() as u64 * PAGE_SIZE
    }

    /// The machine frame of guest frame `gfn`.
    #[inline]
    pub fn mfn(&self, gfn: u64) -> Result<Mfn, NotRam> {
        usize::try_from(gfn)
            .ok()
            .and_then(|i| self.frames.get(i).copied())
            .ok_or(NotRam(Gpa(gfn.saturating_mul(PAGE_SIZE))))
    }

    /// The machine address of `gpa` (valid to the end of its page).
    #[inline]
    pub fn maddr(&self, gpa: Gpa) -> Result<u64, NotRam> {
        self.mfn(gpa.gfn()).map(|mfn| mfn * PAGE_SIZE + gpa.offset()).map_err(|_| NotRam(gpa))
    }

    /// Reads `buf.len()` bytes from `gpa`, page by page. Nothing is read
    /// unless the whole range is RAM.
    pub fn read(&self, mem: &impl MachineMemory, gpa: Gpa, buf: &mut [u8]) -> Result<(), NotRam> {
        self.check(gpa, buf.len())?;
        let mut done = 0;
        while done < buf.len() {
            let at = Gpa(gpa.0 + done as u64);
            let n = (buf.len() - done).min((PAGE_SIZE - at.offset()) as usize);
            mem.read(self.maddr(at)?, &mut buf[done..done + n]);
            done += n;
        }
        Ok(())
    }

    /// Writes `data` at `gpa`, page by page. Nothing is written unless the
    /// whole range is RAM.
    pub fn write(&self, mem: &mut impl MachineMemory, gpa: Gpa, data: &[u8]) -> Result<(), NotRam> {
        self.check(gpa, data.len())?;
        let mut done = 0;
        while done < data.len() {
            let at = Gpa(gpa.0 + done as u64);
            let n = (data.len() - done).min((PAGE_SIZE - at.offset()) as usize);
            mem.write(self.maddr(at)?, &data[done..done + n]);
            done += n;
        }
        Ok(())
    }

    /// Reads the little-endian `u64` at `gpa` (a page-table entry: 8-byte
    /// aligned, so it never straddles a page).
    #[inline]
    pub fn read_u64(&self, mem: &impl MachineMemory, gpa: Gpa) -> Result<u64, NotRam> {
        if gpa.0.is_multiple_of(8) {
            // Aligned (every page-table entry): within one page.
            return Ok(mem.read_u64(self.maddr(gpa)?));
        }
        let mut b = [0; 8];
        self.read(mem, gpa, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Writes a little-endian `u64` at `gpa`.
    pub fn write_u64(&self, mem: &mut impl MachineMemory, gpa: Gpa, value: u64) -> Result<(), NotRam> {
        self.write(mem, gpa, &value.to_le_bytes())
    }

    fn check(&self, gpa: Gpa, len: usize) -> Result<(), NotRam> {
        let end = gpa.0.checked_add(len as u64).ok_or(NotRam(gpa))?;
        if end > self.size() {
            return Err(NotRam(Gpa(gpa.0.max(self.size()))));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine_memory::TestMemory;

    #[test]
    fn pages_map_to_scattered_frames_and_ranges_cross_them() {
        let mut mem = TestMemory::new(16);
        // guest frame 0 -> machine 7, 1 -> 3
        let frames = [7, 3];
        let phys = GuestPhys::new(&frames);
        assert_eq!(phys.maddr(Gpa(0x10)), Ok(7 * 4096 + 0x10));
        assert_eq!(phys.maddr(Gpa(0x1008)), Ok(3 * 4096 + 8));
        phys.write(&mut mem, Gpa(0xffe), &[1, 2, 3, 4]).unwrap();
        assert_eq!(mem.read_u32(7 * 4096 + 0xffe) & 0xffff, 0x0201);
        assert_eq!(mem.read_u32(3 * 4096) & 0xffff, 0x0403);
        let mut back = [0; 4];
        phys.read(&mem, Gpa(0xffe), &mut back).unwrap();
        assert_eq!(back, [1, 2, 3, 4]);
    }

    #[test]
    fn nothing_beyond_ram_is_touched() {
        let mut mem = TestMemory::new(16);
        let frames = [7, 3];
        let phys = GuestPhys::new(&frames);
        assert_eq!(phys.maddr(Gpa(0x2000)), Err(NotRam(Gpa(0x2000))));
        assert_eq!(phys.write(&mut mem, Gpa(0x1ffe), &[9; 4]), Err(NotRam(Gpa(0x2000))));
        assert_eq!(mem.read_u32(3 * 4096 + 0xffc), 0, "a refused write leaves the last page alone");
        assert!(phys.read_u64(&mem, Gpa(u64::MAX - 3)).is_err());
    }
}
