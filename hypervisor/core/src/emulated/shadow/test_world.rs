//! A small machine for the shadow tests: guest RAM on scattered machine
//! frames, a pool of free frames for shadows, and the CPU's walk of a
//! shadow table for a ring-3 access.

use super::{set_index, Mode, Shadow, ShadowEnv, ShadowSlot};
use crate::emulated::guest_phys::{Gpa, GuestPhys};
use crate::frame_table::{FrameTable, Mfn};
use crate::machine_memory::{MachineMemory, TestMemory};
use crate::paging::flags::{HUGE, NO_EXECUTE, PRESENT, USER, WRITABLE};
use crate::paging::{table_index, ADDRESS_MASK, ENTRIES};
use alloc::vec::Vec;

/// Machine frames 0..FIRST_GUEST_MFN are reserved (frame 1 is what the
/// hypervisor half points to).
const FIRST_GUEST_MFN: u64 = 4;

/// Guest RAM, shadow frame pool and the hypervisor half.
pub struct World {
    pub mem: TestMemory,
    pub frames: FrameTable,
    /// Machine frame of each guest frame.
    pub guest: Vec<Mfn>,
    pub half: [u64; ENTRIES / 2],
    pub nxe: bool,
}

impl World {
    /// `guest_pages` of RAM (guest frame `i` at a machine frame that is
    /// not `i`, in a scrambled order) and `pool` free frames for shadows.
    pub fn new(guest_pages: u64, pool: u64) -> Self {
        let total = FIRST_GUEST_MFN + guest_pages + pool;
        let mut frames = FrameTable::new(total);
        frames.add_free(FIRST_GUEST_MFN + guest_pages, total);
        // A stride coprime with the size scrambles the order.
        let stride = (1..).map(|s| 2 * s + 5).find(|s| gcd(*s, guest_pages) == 1).unwrap();
        let guest = (0..guest_pages).map(|i| FIRST_GUEST_MFN + (i * stride) % guest_pages).collect();
        let half = core::array::from_fn(|i| (1 << 12) | PRESENT | WRITABLE | (i as u64) << 52);
        World { mem: TestMemory::new(total), frames, guest, half, nxe: true }
    }

    /// What the shadow code gets.
    pub fn env(&mut self) -> ShadowEnv<'_, TestMemory> {
        ShadowEnv {
            mem: &mut self.mem,
            frames: &mut self.frames,
            guest: GuestPhys::new(&self.guest),
            hypervisor_half: &self.half,
            nxe: self.nxe,
        }
    }

    /// Guest memory as guest-physical.
    pub fn phys(&self) -> GuestPhys<'_> {
        GuestPhys::new(&self.guest)
    }

    /// Reads guest entry `index` of guest table `table`.
    pub fn entry(&self, table: u64, index: usize) -> u64 {
        self.phys().read_u64(&self.mem, Gpa(table * 4096 + index as u64 * 8)).unwrap()
    }

    /// The guest stores `entry` in its table `table`, as it would through a
    /// mapping, and the store is reported if the frame is tracked.
    pub fn store(&mut self, shadow: &mut Shadow, table: u64, index: usize, entry: u64) -> crate::hypercall::TlbFlush {
        let gpa = Gpa(table * 4096 + index as u64 * 8);
        GuestPhys::new(&self.guest).write_u64(&mut self.mem, gpa, entry).unwrap();
        if shadow.is_tracked(gpa.gfn()) {
            shadow.guest_wrote(&mut self.env(), gpa, 8)
        } else {
            crate::hypercall::TlbFlush::None
        }
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// What the CPU finds in a shadow for a ring-3 access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HwTranslation {
    pub mfn: Mfn,
    pub writable: bool,
    pub executable: bool,
}

/// The CPU's walk of the shadow rooted at machine address `root` for a
/// ring-3 access at `va`; `None` where it would fault for any access.
/// Shadow entries never use large pages.
pub fn hw_walk(mem: &TestMemory, root: u64, va: u64) -> Option<HwTranslation> {
    let mut table = root;
    let (mut writable, mut executable) = (true, true);
    for level in (1..=4u8).rev() {
        let e = mem.read_u64(table + table_index(va, level) as u64 * 8);
        if e & PRESENT == 0 || e & USER == 0 {
            return None;
        }
        assert_eq!(e & HUGE, 0, "shadow entries are never large");
        writable &= e & WRITABLE != 0;
        executable &= e & NO_EXECUTE == 0;
        table = e & ADDRESS_MASK;
    }
    Some(HwTranslation { mfn: table / 4096, writable, executable })
}

/// Whether the CPU allows `write`/`fetch` at `va` through shadow `root`.
pub fn hw_allows(mem: &TestMemory, root: u64, va: u64, write: bool, fetch: bool) -> bool {
    hw_walk(mem, root, va).is_some_and(|t| (!write || t.writable) && (!fetch || t.executable))
}

/// The canonical address of top-level slot `l4` and the lower indexes.
pub fn va(l4: usize, l3: usize, l2: usize, l1: usize) -> u64 {
    let raw = (l4 as u64) << 39 | (l3 as u64) << 30 | (l2 as u64) << 21 | (l1 as u64) << 12;
    if l4 >= 256 {
        raw | 0xffff_0000_0000_0000
    } else {
        raw
    }
}

/// What the tests inspect.
impl Shadow {
    /// Every top-level shadow: (guest frame, mode, shadow frame).
    pub(super) fn roots(&self) -> Vec<(u64, Mode, Mfn)> {
        let mut roots = Vec::new();
        for (gfn, set) in &self.tables {
            for mode in [Mode::Kernel, Mode::User] {
                if let Some(mfn) = set[set_index(4, mode)] {
                    roots.push((*gfn, mode, mfn));
                }
            }
        }
        roots
    }

    /// Every shadow table holding leaves.
    pub(super) fn leaf_tables(&self) -> Vec<Mfn> {
        // Level-1 shadows are at indexes 0 and 1 of a set.
        let mut all: Vec<Mfn> = self.tables.values().flat_map(|set| [set[0], set[1]]).flatten().collect();
        all.extend(self.splinters.iter().filter(|(k, _)| k.level == 1).map(|(_, m)| *m));
        all
    }

    /// Whether the reverse map lists this slot under `gfn`.
    pub(super) fn in_reverse_map(&self, gfn: u64, table: Mfn, index: usize) -> bool {
        self.writable.contains(&(gfn, ShadowSlot { table, index: index as u16 }))
    }
}
