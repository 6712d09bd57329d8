//! Answering a page fault: reflect it to the guest, or fill the shadow.
//!
//! A fault in the guest means the *shadow* said no. Either the guest's own
//! tables say no as well (reflect the fault), or the shadow has not caught
//! up yet: then the path is filled from the top-level table down, creating
//! shadow tables for guest tables seen for the first time, and the guest
//! retries. The one case where the shadow says no on purpose is a write to
//! a guest page table: that must be emulated, not retried.

use super::entries::{leaf, link};
use super::{Mode, Shadow, ShadowEnv, ShadowError, SplinterKey, GUEST_SLOTS};
use crate::emulated::guest_phys::Gpa;
use crate::emulated::guest_walk::{walk, Access, Translation, WalkFault};
use crate::frame_table::Mfn;
use crate::hypercall::TlbFlush;
use crate::machine_memory::MachineMemory;
use crate::paging::flags::{ACCESSED, DIRTY, PRESENT};
use crate::paging::{table_index, ADDRESS_MASK};
use hypercall_abi::PAGE_SIZE;

/// What the integrator does after a page fault in an emulated guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultOutcome {
    /// The shadow now allows the access: apply `tlb`, resume the guest at
    /// the faulting instruction.
    Filled {
        /// The TLB flush needed before resuming.
        tlb: TlbFlush,
    },
    /// The guest's own tables forbid the access: inject #PF with this
    /// error code and CR2 = the faulting address.
    GuestFault {
        /// The error code real hardware would have pushed.
        error_code: u64,
    },
    /// A write to a guest page table, which stays write-protected: apply
    /// `tlb`, emulate the faulting instruction (`emulated::store`), then
    /// call [`Shadow::guest_wrote`]. The shadow path is filled, so a read
    /// of the same address no longer faults.
    WriteToPageTable {
        /// The guest-physical address written.
        gpa: Gpa,
        /// The TLB flush the fill made necessary (filling the path may
        /// have write-protected another frame).
        tlb: TlbFlush,
    },
}

/// What filling one path changed, to choose the TLB flush.
#[derive(Default)]
struct Changes {
    /// Some entry went from not present to present.
    filled: bool,
    /// Some present entry changed (more rights for a leaf).
    upgraded: bool,
    /// Writable leaves elsewhere were downgraded.
    downgraded: bool,
}

impl Shadow {
    /// Handles a page fault at `va` of the guest running on the shadow of
    /// `guest_cr3` in `mode`. `access` comes from the hardware error code
    /// (its `user` field is ignored: `mode` says which it was).
    pub fn on_page_fault<M: MachineMemory>(
        &mut self,
        env: &mut ShadowEnv<'_, M>,
        guest_cr3: u64,
        mode: Mode,
        va: u64,
        access: Access,
    ) -> Result<FaultOutcome, ShadowError> {
        let root = self
            .table((guest_cr3 & ADDRESS_MASK) / PAGE_SIZE, 4, mode)
            .ok_or(ShadowError::NoRoot { guest_cr3, mode })?;
        let access = Access { user: mode == Mode::User, ..access };
        let mut t = match walk(&*env.mem, &env.guest, guest_cr3, va, access, env.nxe) {
            Ok(t) => t,
            Err(WalkFault::PageFault { error_code }) => {
                self.stats.guest_faults += 1;
                return Ok(FaultOutcome::GuestFault { error_code });
            }
            Err(WalkFault::NotRam(e)) => return Err(ShadowError::NotRam(e)),
        };
        if table_index(va, 4) >= GUEST_SLOTS {
            return Err(ShadowError::HypervisorHalf { va });
        }
        set_accessed_dirty(env, &mut t, va, access.write)?;
        let mut changes = Changes::default();
        let leaf_table = self.fill_tables(env, root, &t, va, mode, &mut changes)?;
        let gfn = t.gpa.gfn();
        let mfn = env.guest.mfn(gfn)?;
        let protected = self.is_tracked(gfn);
        let guest_leaf = t.entries[usize::from(t.leaf_level - 1)];
        let entry = leaf(guest_leaf, mfn, protected, mode, env.nxe);
        let index = table_index(va, 1);
        self.set_entry(env, leaf_table, index, entry, &mut changes);
        if entry & crate::paging::flags::WRITABLE != 0 {
            self.note_writable(env, gfn, leaf_table, index);
        }
        if access.write && protected {
            self.stats.table_write_faults += 1;
            let tlb = if changes.downgraded { TlbFlush::All } else { TlbFlush::None };
            return Ok(FaultOutcome::WriteToPageTable { gpa: t.gpa, tlb });
        }
        self.stats.fills += 1;
        let tlb = if changes.downgraded {
            TlbFlush::All
        } else if changes.upgraded || !changes.filled {
            // A present entry changed, or nothing did (the fault came from
            // a stale TLB entry): drop what the TLB holds for `va`.
            TlbFlush::Page(va)
        } else {
            // Only not-present entries were filled, and those are never
            // cached.
            TlbFlush::None
        };
        Ok(FaultOutcome::Filled { tlb })
    }

    /// Fills the non-leaf shadow entries for `va` down to the level-1
    /// shadow table (splinters included) and returns that table.
    fn fill_tables<M: MachineMemory>(
        &mut self,
        env: &mut ShadowEnv<'_, M>,
        root: Mfn,
        t: &Translation,
        va: u64,
        mode: Mode,
        changes: &mut Changes,
    ) -> Result<Mfn, ShadowError> {
        let mut shadow = root;
        for level in ((t.leaf_level + 1)..=4).rev() {
            let guest = t.entries[usize::from(level - 1)];
            let child = self.guest_table(env, (guest & ADDRESS_MASK) / PAGE_SIZE, level - 1, mode, changes)?;
            self.set_entry(env, shadow, table_index(va, level), link(guest, child, mode, env.nxe), changes);
            shadow = child;
        }
        if t.leaf_level == 1 {
            return Ok(shadow);
        }
        // A large page: `shadow` mirrors the guest table holding it, and
        // the rest of the path goes through its splinter tables.
        let large_level = t.leaf_level;
        let guest = t.entries[usize::from(large_level - 1)];
        let entry = t.tables[usize::from(large_level - 1)].0 + table_index(va, large_level) as u64 * 8;
        let mut key = SplinterKey { entry, large_level, level: large_level - 1, chunk: 0, mode };
        for level in (2..=large_level).rev() {
            key.level = level - 1;
            if level == 2 && large_level == 3 {
                key.chunk = table_index(va, 2) as u16;
            }
            let child = self.splinter(env, key)?;
            self.set_entry(env, shadow, table_index(va, level), link(guest, child, mode, env.nxe), changes);
            shadow = child;
        }
        Ok(shadow)
    }

    /// The shadow of guest table `gfn` at `level`, created if new.
    fn guest_table<M: MachineMemory>(
        &mut self,
        env: &mut ShadowEnv<'_, M>,
        gfn: u64,
        level: u8,
        mode: Mode,
        changes: &mut Changes,
    ) -> Result<Mfn, ShadowError> {
        if let Some(mfn) = self.table(gfn, level, mode) {
            return Ok(mfn);
        }
        let mfn = self.alloc_frame(env, true)?;
        changes.downgraded |= self.add_table(env, gfn, level, mode, mfn);
        Ok(mfn)
    }

    /// The splinter table `key`, created if new.
    fn splinter<M: MachineMemory>(&mut self, env: &mut ShadowEnv<'_, M>, key: SplinterKey) -> Result<Mfn, ShadowError> {
        if let Some(mfn) = self.splinters.get(&key) {
            return Ok(*mfn);
        }
        let mfn = self.alloc_frame(env, true)?;
        self.splinters.insert(key, mfn);
        self.splinters_of.insert((key.entry, mfn));
        Ok(mfn)
    }

    /// Writes entry `index` of shadow table `table` if it differs.
    fn set_entry<M: MachineMemory>(
        &mut self,
        env: &mut ShadowEnv<'_, M>,
        table: Mfn,
        index: usize,
        entry: u64,
        changes: &mut Changes,
    ) {
        let maddr = table * PAGE_SIZE + index as u64 * 8;
        let old = env.mem.read_u64(maddr);
        if old == entry {
            return;
        }
        if old & PRESENT != 0 {
            changes.upgraded = true;
        } else {
            changes.filled = true;
        }
        env.mem.write_u64(maddr, entry);
    }
}

/// Sets the guest's accessed bits along the walk, and its dirty bit at the
/// leaf for a write, as the MMU does on a successful walk. These bits
/// never take rights away, so no shadow entry needs clearing for them.
fn set_accessed_dirty<M: MachineMemory>(
    env: &mut ShadowEnv<'_, M>,
    t: &mut Translation,
    va: u64,
    write: bool,
) -> Result<(), ShadowError> {
    for level in t.leaf_level..=4 {
        let i = usize::from(level - 1);
        let dirty = if write && level == t.leaf_level { DIRTY } else { 0 };
        let new = t.entries[i] | ACCESSED | dirty;
        if new != t.entries[i] {
            let slot = Gpa(t.tables[i].0 + table_index(va, level) as u64 * 8);
            env.guest.write_u64(env.mem, slot, new)?;
            t.entries[i] = new;
        }
    }
    Ok(())
}
