//! Keeping shadows coherent: write protection and guest page-table writes.
//!
//! Two rules keep every shadow entry equal to what its guest entry says
//! (or to nothing, which is always safe since it refills on demand):
//!
//! 1. A tracked guest frame (one with a shadow table) is never writable
//!    through a shadow leaf. New leaves respect it when they are filled;
//!    leaves filled *before* the frame became tracked are found through
//!    the reverse map of writable leaves and made read-only.
//! 2. After the guest's write to a tracked frame has been emulated,
//!    [`Shadow::guest_wrote`] clears every shadow entry derived from the
//!    guest entries in the written range, in every shadow of the frame
//!    (any level, either mode), and empties the splinter tables of large
//!    pages held by those entries.
//!
//! The reverse map is kept cheap rather than exact: a slot is added when a
//! writable leaf is written and never removed when the leaf is cleared or
//! reused, so each slot is checked (does it still map this frame,
//! writable?) before it is changed. Stale slots are pruned whenever the map
//! doubles in size since the last pruning, so it stays proportional to the
//! writable leaves that exist. Slots always name shadow frames, since those
//! are only freed all at once, together with the map. The map is a set of
//! (guest frame, slot) pairs, so a slot noted twice is held once, and the
//! slots of one frame are a range of it.

use super::{Shadow, ShadowEnv, ShadowSlot, GUEST_SLOTS, PRUNE_MIN};
use crate::emulated::guest_phys::Gpa;
use crate::frame_table::Mfn;
use crate::hypercall::TlbFlush;
use crate::machine_memory::MachineMemory;
use crate::paging::flags::{DIRTY, PRESENT, WRITABLE};
use crate::paging::{ADDRESS_MASK, ENTRIES};
use hypercall_abi::PAGE_SIZE;

impl Shadow {
    /// Called after the guest's tables in `[gpa, gpa + len)` were written
    /// by anything but the MMU (an emulated store, the hypervisor itself):
    /// drops the shadow entries derived from the guest entries there.
    /// Returns the TLB flush to apply before the guest runs again. Cheap
    /// when no written frame is tracked (one map lookup).
    pub fn guest_wrote<M: MachineMemory>(&mut self, env: &mut ShadowEnv<'_, M>, gpa: Gpa, len: u64) -> TlbFlush {
        let Some(last) = len.checked_sub(1).and_then(|l| gpa.0.checked_add(l)) else {
            return TlbFlush::None;
        };
        let mut flush = false;
        let mut next = gpa.gfn();
        while let Some((&gfn, &set)) = self.tables.range(next..).next().filter(|(g, _)| **g <= Gpa(last).gfn()) {
            next = gfn + 1;
            self.stats.table_writes += 1;
            let from = (gpa.0.max(gfn * PAGE_SIZE) % PAGE_SIZE / 8) as usize;
            let to = (last.min(gfn * PAGE_SIZE + PAGE_SIZE - 1) % PAGE_SIZE / 8) as usize;
            for (i, shadow) in set.iter().enumerate() {
                let Some(shadow) = *shadow else { continue };
                let level = i / 2 + 1;
                let to = if level == 4 { to.min(GUEST_SLOTS - 1) } else { to };
                for index in from..=to {
                    flush |= clear_entry(env.mem, shadow * PAGE_SIZE + index as u64 * 8);
                }
            }
            // Large pages held by the written entries lose their splinters.
            let entries = (gfn * PAGE_SIZE + from as u64 * 8, 0)..=(gfn * PAGE_SIZE + to as u64 * 8, Mfn::MAX);
            for &(_, table) in self.splinters_of.range(entries) {
                for i in 0..ENTRIES {
                    flush |= clear_entry(env.mem, table * PAGE_SIZE + i as u64 * 8);
                }
            }
        }
        if flush {
            // Shadow tables are shared between address spaces and reached
            // by many paths: which addresses used an entry is unknown.
            TlbFlush::All
        } else {
            TlbFlush::None
        }
    }

    /// Makes every writable shadow leaf that maps guest frame `gfn`
    /// read-only, now that it is a page table. Returns whether any was
    /// (a TLB flush is due).
    pub(super) fn write_protect<M: MachineMemory>(&mut self, env: &mut ShadowEnv<'_, M>, gfn: u64) -> bool {
        let (first, last) = (ShadowSlot { table: 0, index: 0 }, ShadowSlot { table: Mfn::MAX, index: u16::MAX });
        let mfn = env.guest.mfn(gfn).ok();
        let mut any = false;
        while let Some(&(_, slot)) = self.writable.range((gfn, first)..=(gfn, last)).next() {
            self.writable.remove(&(gfn, slot));
            let entry = env.mem.read_u64(slot.maddr());
            if mfn.is_some_and(|mfn| maps_writable(entry, mfn)) {
                env.mem.write_u64(slot.maddr(), entry & !(WRITABLE | DIRTY));
                self.stats.downgrades += 1;
                any = true;
            }
        }
        any
    }

    /// Records that entry `index` of shadow table `table` now maps guest
    /// frame `gfn` writable.
    pub(super) fn note_writable<M: MachineMemory>(
        &mut self,
        env: &mut ShadowEnv<'_, M>,
        gfn: u64,
        table: Mfn,
        index: usize,
    ) {
        if self.writable.len() >= self.prune_at {
            self.prune(env);
        }
        self.writable.insert((gfn, ShadowSlot { table, index: index as u16 }));
    }

    /// Drops the slots of the reverse map that no longer map their frame
    /// writable.
    pub(super) fn prune<M: MachineMemory>(&mut self, env: &mut ShadowEnv<'_, M>) {
        let mem = &*env.mem;
        let guest = env.guest;
        self.writable.retain(|(gfn, slot)| guest.mfn(*gfn).is_ok_and(|mfn| maps_writable(mem.read_u64(slot.maddr()), mfn)));
        self.prune_at = (2 * self.writable.len()).max(PRUNE_MIN);
    }
}

/// Whether shadow leaf `entry` maps machine frame `mfn` writable.
fn maps_writable(entry: u64, mfn: Mfn) -> bool {
    entry & (PRESENT | WRITABLE) == PRESENT | WRITABLE && entry & ADDRESS_MASK == mfn * PAGE_SIZE
}

/// Clears the shadow entry at `maddr`; returns whether it was present.
fn clear_entry(mem: &mut impl MachineMemory, maddr: u64) -> bool {
    let old = mem.read_u64(maddr);
    if old != 0 {
        mem.write_u64(maddr, 0);
    }
    old & PRESENT != 0
}
