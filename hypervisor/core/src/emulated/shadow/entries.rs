//! How a shadow entry follows from the guest entry it mirrors.
//!
//! These two functions are the whole contract between guest and shadow
//! tables: an entry is computed from one guest entry (plus, at a leaf,
//! whether the target frame is write-protected), never from the path that
//! reached it. That is what lets one shadow table serve every address
//! space that shares the guest table, and what lets [`super::Shadow::guest_wrote`]
//! fix the shadows by clearing the entries of the guest entries that
//! changed, without knowing where else they are used.

use super::Mode;
use crate::frame_table::Mfn;
use crate::paging::flags::{ACCESSED, DIRTY, NO_EXECUTE, PRESENT, USER, WRITABLE};
use hypercall_abi::PAGE_SIZE;

/// Bits every present shadow entry has: the guest runs in ring 3 whatever
/// its virtual CPL, and presetting *accessed* spares the CPU a write.
const BASE: u64 = PRESENT | USER | ACCESSED;

/// Whether the guest entry is left out of a `mode` shadow.
fn hidden(guest: u64, mode: Mode) -> bool {
    guest & PRESENT == 0 || (mode == Mode::User && guest & USER == 0)
}

/// The guest's NX bit, when its EFER.NXE gives it meaning.
fn no_execute(guest: u64, nxe: bool) -> u64 {
    if nxe {
        guest & NO_EXECUTE
    } else {
        0
    }
}

/// The shadow of a non-leaf guest entry, or of a large-page entry above
/// its splinter tables: a link to shadow table `child`.
pub(super) fn link(guest: u64, child: Mfn, mode: Mode, nxe: bool) -> u64 {
    if hidden(guest, mode) {
        return 0;
    }
    (child * PAGE_SIZE) | BASE | (guest & WRITABLE) | no_execute(guest, nxe)
}

/// The shadow of a guest leaf (a 4 KiB entry, or a large-page entry for one
/// of its 4 KiB parts) whose page is machine frame `mfn`. It is writable
/// only if the guest allows writes, the guest entry is already dirty (so
/// the first write faults and sets it, as the MMU would), and the page is
/// not a tracked guest page table (`protected`).
pub(super) fn leaf(guest: u64, mfn: Mfn, protected: bool, mode: Mode, nxe: bool) -> u64 {
    if hidden(guest, mode) {
        return 0;
    }
    let writable = guest & WRITABLE != 0 && guest & DIRTY != 0 && !protected;
    let write_bits = if writable { WRITABLE | DIRTY } else { 0 };
    (mfn * PAGE_SIZE) | BASE | write_bits | no_execute(guest, nxe)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_mode_leaves_out_supervisor_entries() {
        let g = 0x5000 | PRESENT | WRITABLE;
        assert_eq!(link(g, 9, Mode::User, true), 0);
        assert_eq!(link(g, 9, Mode::Kernel, true), (9 * 4096) | BASE | WRITABLE);
        assert_eq!(link(g | USER, 9, Mode::User, true), (9 * 4096) | BASE | WRITABLE);
        assert_eq!(link(0, 9, Mode::Kernel, true), 0, "not present");
    }

    #[test]
    fn leaves_are_writable_only_when_dirty_and_unprotected() {
        let g = 0x5000 | PRESENT | WRITABLE | USER;
        assert_eq!(leaf(g, 7, false, Mode::User, true) & WRITABLE, 0, "clean: the first write must fault");
        assert_eq!(leaf(g | DIRTY, 7, false, Mode::User, true), (7 * 4096) | BASE | WRITABLE | DIRTY);
        assert_eq!(leaf(g | DIRTY, 7, true, Mode::User, true) & WRITABLE, 0, "a page table");
        assert_eq!(leaf(g | NO_EXECUTE, 7, false, Mode::Kernel, true) & NO_EXECUTE, NO_EXECUTE);
        assert_eq!(leaf(g | NO_EXECUTE, 7, false, Mode::Kernel, false) & NO_EXECUTE, 0);
        assert_eq!(leaf(g | flags_not_copied(), 7, false, Mode::Kernel, true) & flags_not_copied(), 0);
    }

    /// Global and caching bits.
    fn flags_not_copied() -> u64 {
        use crate::paging::flags::{GLOBAL, NO_CACHE, WRITE_THROUGH};
        GLOBAL | NO_CACHE | WRITE_THROUGH
    }
}
