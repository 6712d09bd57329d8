//! Shadow page tables: what the CPU walks while an emulated kernel runs.
//!
//! An unmodified kernel believes it owns the MMU: it builds page tables
//! holding guest-physical addresses and loads them into CR3. Under
//! trap-and-emulate that CR3 load traps, and the hypervisor loads a
//! *shadow* table instead: a table it built itself, which maps the same
//! guest-virtual addresses to the *machine* frames behind the guest's
//! "physical" pages. This module builds and maintains those shadows.
//!
//! ## One shadow table per guest table
//!
//! Shadow tables mirror guest tables one to one: for each guest table
//! (its guest frame and the level it is used at) and each [`Mode`] there is
//! at most one shadow table, a frame the hypervisor allocated for itself.
//! A shadow entry is a function of the guest entry it mirrors *alone*
//! (`entries.rs`): present when the guest entry is; writable and executable
//! as the guest entry says; always user-accessible (the guest kernel runs
//! in ring 3 too); a non-leaf entry points to the shadow of the guest's
//! child table. Because an entry never depends on the path that reached
//! it, a guest table shared by several address spaces (a kernel's upper
//! tables, typically) is shadowed once and serves them all, and the shadows
//! are kept across CR3 switches, looked up by the guest CR3's frame.
//!
//! ## Two modes, so the guest's processes cannot touch its kernel
//!
//! The guest's kernel and its user processes both run in ring 3, so the
//! real U/S bit cannot separate them. Each guest address space therefore
//! has two shadows: the [`Mode::Kernel`] one maps everything the guest's
//! tables map, and the [`Mode::User`] one leaves out every entry whose
//! guest entry lacks U/S, so a mapping reaches the user shadow only if all
//! its guest levels allow user mode, exactly the MMU's rule. The integrator
//! loads the shadow of the guest's current virtual CPL.
//!
//! ## Filled lazily, on page faults
//!
//! [`Shadow::root`] returns an empty top-level table (plus the hypervisor's
//! upper half). Every page fault the guest takes then comes to
//! [`Shadow::on_page_fault`], which walks the *guest's* tables
//! ([`guest_walk`](super::guest_walk)): if the guest itself would fault, the
//! fault is reflected to it ([`FaultOutcome::GuestFault`]); otherwise the
//! missing shadow entries along the path are filled in and the guest
//! retries ([`FaultOutcome::Filled`]). The guest's accessed and dirty bits
//! are kept the way the MMU keeps them: a fill sets *accessed* at every
//! level, and a shadow leaf is writable only once the guest leaf is
//! *dirty*, so the first write to a page faults here and sets it.
//!
//! ## Large pages are splintered
//!
//! A guest 2 MiB or 1 GiB page is mapped with 4 KiB shadow entries, in
//! shadow tables that belong to the guest *entry* holding the large page
//! rather than to a guest table (they have no guest table to mirror). This
//! keeps every shadow leaf the same size, so write protection (below) can
//! be applied to one 4 KiB frame at a time.
//!
//! ## Coherence: guest page tables are write-protected
//!
//! A guest frame that has a shadow table is *tracked*, and every shadow
//! leaf maps a tracked frame read-only. So the guest cannot change its own
//! page tables behind the hypervisor's back: each such write faults, the
//! fault reports [`FaultOutcome::WriteToPageTable`], the integrator
//! emulates the store (`emulated::store`) and then calls
//! [`Shadow::guest_wrote`], which clears every shadow entry derived from
//! the entries that changed (they refill lazily). When a frame becomes
//! tracked, shadow leaves that already map it writable are downgraded,
//! found through a reverse map of writable leaves.
//!
//! Since every write to a guest page table is seen, the shadows are always
//! exactly as current as the guest's tables. Hence the guest's `invlpg`
//! and CR3 loads need no resynchronisation at all: `invlpg` only has to
//! drop the real TLB entry, and a CR3 load only has to pick the right
//! cached shadow ([`Shadow::root`]). Writes the *hypervisor* makes into
//! guest memory on the guest's behalf (an emulated store, an exception
//! frame pushed on the guest's stack, an `sgdt` result) bypass the MMU, so
//! they must call [`Shadow::guest_wrote`] too: it costs one map lookup on a
//! frame that is not tracked.
//!
//! ## A budget instead of freeing
//!
//! Shadow frames are never freed one by one: the reverse map may hold
//! stale entries, and they are harmless only because they can never point
//! at a frame that was reused for something else. Instead the frames, and
//! the reverse map's slots (hypervisor heap), are counted, and when either
//! is above its budget ([`Shadow::over_budget`]) at a CR3 load
//! ([`Shadow::root`]) or before a fill (the integrator asks), everything is
//! dropped (a *shadow reset*) and rebuilt lazily. Checking at fills too
//! matters: a kernel that never loads CR3 would otherwise grow its shadows
//! until the machine has no frame (or heap) left. [`Shadow::drop_all`]
//! does the same when the domain ends.
//!
//! The bookkeeping (the maps below and the frame list) is hypervisor heap
//! charged to the domain (see [`crate::heap_account`]). Each map's entries
//! are plain keys, with no vector inside, so that what it holds follows
//! from its length alone: [`Shadow::heap_bytes`] bounds it, and the budgets
//! bound that by [`HEAP_MAX`], the share of the domain's allowance its
//! shadows may use.
//!
//! ## What the shadows do not copy
//!
//! The guest's caching bits (PWT, PCD, PAT) are not copied: guest memory
//! is ordinary RAM, always write-back. Its global bit is not copied
//! either: a global shadow entry would survive the CR3 load that switches
//! from the kernel's shadow to the user's, and leak kernel mappings into
//! its user mode. The emulated CPU has CR0.WP set, no SMEP and no SMAP
//! (see [`guest_walk`](super::guest_walk)); the host must run with
//! EFER.NXE, since shadow entries carry the guest's NX bit.

mod coherence;
mod entries;
mod fill;
#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod test_world;
#[cfg(test)]
mod tests;

use super::guest_phys::{Gpa, GuestPhys, NotRam};
use crate::frame_table::{FrameError, FrameTable, Mfn, Owner};
use crate::machine_memory::MachineMemory;
use crate::heap_account::{btree_bytes, vec_bytes};
use crate::paging::{ADDRESS_MASK, ENTRIES};
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;
use hypercall_abi::PAGE_SIZE;

pub use fill::FaultOutcome;

/// Top-level slots the guest's own entries may fill: `0..GUEST_SLOTS`.
/// Slot 255 stays empty and 256..511 hold the hypervisor's half (see
/// `hypercall_abi::bare_metal::KERNEL_PML4_SLOTS`).
pub const GUEST_SLOTS: usize = hypercall_abi::bare_metal::KERNEL_PML4_SLOTS;

/// Which of the guest's privilege levels a shadow serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mode {
    /// The guest kernel (virtual CPL 0): everything the guest maps.
    Kernel,
    /// The guest's user mode (virtual CPL 3): only what its tables allow
    /// user mode at every level.
    User,
}

impl Mode {
    fn index(self) -> usize {
        match self {
            Mode::Kernel => 0,
            Mode::User => 1,
        }
    }
}

/// Everything the shadow code touches besides its own bookkeeping.
pub struct ShadowEnv<'a, M: MachineMemory> {
    /// Machine memory (guest tables are read, shadow tables written).
    pub mem: &'a mut M,
    /// Where shadow frames come from (as [`Owner::Hypervisor`]).
    pub frames: &'a mut FrameTable,
    /// The domain's guest-physical memory.
    pub guest: GuestPhys<'a>,
    /// The hypervisor's half of every top-level table (slots 256..511).
    pub hypervisor_half: &'a [u64; ENTRIES / 2],
    /// The guest's EFER.NXE.
    pub nxe: bool,
}

/// Why the shadow code could not do what was asked; each stops the domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShadowError {
    /// The guest's CR3 or one of its tables points outside its RAM.
    NotRam(NotRam),
    /// The guest mapped `va` in top-level slot 255 or above, which is the
    /// hypervisor's and cannot be shadowed.
    HypervisorHalf {
        /// The guest-virtual address.
        va: u64,
    },
    /// No machine frame was left for a shadow table.
    OutOfFrames(FrameError),
    /// A fault came for an address space whose shadow root does not exist:
    /// the integrator loaded a CR3 that [`Shadow::root`] did not return (or
    /// kept one across a call that reset the shadows).
    NoRoot {
        /// The guest CR3 of the fault.
        guest_cr3: u64,
        /// The mode of the fault.
        mode: Mode,
    },
}

impl core::fmt::Display for ShadowError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ShadowError::NotRam(e) => write!(f, "guest page tables lead outside RAM: {e}"),
            ShadowError::HypervisorHalf { va } => {
                write!(f, "guest mapped {va:#x}, in the hypervisor's part of the address space")
            }
            ShadowError::OutOfFrames(e) => write!(f, "no frame for a shadow page table: {e}"),
            ShadowError::NoRoot { guest_cr3, mode } => {
                write!(f, "no shadow for guest cr3 {guest_cr3:#x} in {mode:?} mode")
            }
        }
    }
}

impl From<NotRam> for ShadowError {
    fn from(e: NotRam) -> Self {
        ShadowError::NotRam(e)
    }
}

/// Counters for the domain's summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShadowStats {
    /// Page faults answered by filling shadow entries.
    pub fills: u64,
    /// Page faults reflected to the guest (its own tables said no).
    pub guest_faults: u64,
    /// Page faults that were writes to a write-protected guest page table.
    pub table_write_faults: u64,
    /// Shadow tables created.
    pub tables_created: u64,
    /// Shadow resets (everything dropped over budget or on an EFER.NXE change).
    pub resets: u64,
    /// Writes to tracked guest frames synced by [`Shadow::guest_wrote`].
    pub table_writes: u64,
    /// Writable shadow leaves made read-only because their frame became a
    /// page table.
    pub downgrades: u64,
    /// Shadow frames held now.
    pub frames: u64,
}

/// Shadows of one guest frame, indexed by `(level - 1) * 2 + mode`.
type TableSet = [Option<Mfn>; 8];

fn set_index(level: u8, mode: Mode) -> usize {
    usize::from(level - 1) * 2 + mode.index()
}

/// A shadow table of a splintered large page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct SplinterKey {
    /// Guest-physical address of the guest entry holding the large page.
    entry: u64,
    /// The guest level of that entry: 2 (2 MiB) or 3 (1 GiB).
    large_level: u8,
    /// The shadow level of this table: 1, or 2 under a 1 GiB page.
    level: u8,
    /// Under a 1 GiB page, which 2 MiB part a level-1 table covers.
    chunk: u16,
    /// The mode it serves.
    mode: Mode,
}

/// One entry of a shadow table: the reverse map's unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct ShadowSlot {
    table: Mfn,
    index: u16,
}

impl ShadowSlot {
    fn maddr(self) -> u64 {
        self.table * PAGE_SIZE + u64::from(self.index) * 8
    }
}

/// The shadow page tables of one domain.
#[derive(Debug)]
pub struct Shadow {
    /// Frames above which [`Shadow::root`] resets.
    budget_frames: u64,
    /// Shadows of guest tables by guest frame: the *tracked* frames.
    tables: BTreeMap<u64, TableSet>,
    /// Shadows of splintered large pages.
    splinters: BTreeMap<SplinterKey, Mfn>,
    /// The splinter tables derived from each large guest entry, as (the
    /// entry's guest-physical address, table), to clear them when it
    /// changes.
    splinters_of: BTreeSet<(u64, Mfn)>,
    /// Reverse map: (guest frame, shadow leaf that mapped it writable).
    /// May hold stale slots (checked before use, pruned now and then).
    writable: BTreeSet<(u64, ShadowSlot)>,
    /// `writable.len()` at which stale slots are pruned next.
    prune_at: usize,
    /// Every shadow frame held, in allocation order; room for the most
    /// there can be is made up front, so that it never grows.
    frames: Vec<Mfn>,
    /// The EFER.NXE the shadows were built with (`None`: no shadows).
    nxe: Option<bool>,
    stats: ShadowStats,
}

/// Slots the reverse map of writable leaves may hold before the shadows
/// are reset, like the frame budget: each takes at most 80 bytes of
/// hypervisor heap (so 1.3 MiB), whereas the frame budget alone would
/// allow 512 per shadow frame, 512,000 slots.
pub const REVERSE_MAP_BUDGET: usize = 16 * 1024;

/// Shadow frames one page fault's fill may add (three tables below the
/// root, the last two of which may be splinters), and one more for a
/// root: the budgets are checked before each, so the frames never pass
/// the budget by more than this.
const STEP_FRAMES: usize = 4;

/// The most heap a domain's shadows hold with `budget_frames` frames: the
/// three maps of tables (whose entries are each one shadow frame) and the
/// reverse map at their budgets plus one fill, and the frame list.
pub const fn heap_max(budget_frames: u64) -> usize {
    let frames = budget_frames as usize + STEP_FRAMES;
    btree_bytes::<u64, TableSet>(frames)
        + btree_bytes::<SplinterKey, Mfn>(frames)
        + btree_bytes::<(u64, Mfn), ()>(frames)
        + btree_bytes::<(u64, ShadowSlot), ()>(REVERSE_MAP_BUDGET + 1)
        + frames * core::mem::size_of::<Mfn>()
}

/// [`heap_max`] of an emulated domain's shadows (1.7 MiB).
pub const HEAP_MAX: usize = heap_max(super::machine::SHADOW_BUDGET_FRAMES);

/// The reverse map is pruned no earlier than this many slots (tests prune
/// early and often).
const PRUNE_MIN: usize = if cfg!(test) { 2 } else { 1024 };

impl Shadow {
    /// No shadows yet; at most about `budget_frames` frames are kept
    /// between resets.
    pub fn new(budget_frames: u64) -> Self {
        Shadow {
            budget_frames,
            tables: BTreeMap::new(),
            splinters: BTreeMap::new(),
            splinters_of: BTreeSet::new(),
            writable: BTreeSet::new(),
            prune_at: PRUNE_MIN,
            frames: Vec::with_capacity(budget_frames as usize + STEP_FRAMES),
            nxe: None,
            stats: ShadowStats::default(),
        }
    }

    /// The machine address to load into CR3 for guest CR3 `guest_cr3` in
    /// `mode`: the cached shadow, or a new empty one (its slots 256..511 the
    /// hypervisor's half). Call it at *every* load of CR3 and never keep its
    /// answer: a call may first drop every shadow (over budget, or the
    /// guest changed EFER.NXE), which invalidates every earlier answer.
    ///
    /// Creating the root may write-protect the guest frame it mirrors; the
    /// CR3 load that follows flushes the stale writable TLB entries.
    pub fn root<M: MachineMemory>(
        &mut self,
        env: &mut ShadowEnv<'_, M>,
        guest_cr3: u64,
        mode: Mode,
    ) -> Result<u64, ShadowError> {
        let gfn = (guest_cr3 & ADDRESS_MASK) / PAGE_SIZE;
        env.guest.mfn(gfn).map_err(|_| NotRam(Gpa(guest_cr3 & ADDRESS_MASK)))?;
        if self.over_budget(env) || self.nxe.is_some_and(|n| n != env.nxe) {
            self.reset(env);
        }
        self.nxe = Some(env.nxe);
        if let Some(mfn) = self.table(gfn, 4, mode) {
            return Ok(mfn * PAGE_SIZE);
        }
        // The reset above may have freed the very frame CR3 still points
        // to, and the allocator may hand it back now. Writing the upper half
        // first (the values it already holds) and only then clearing the
        // lower half keeps the hypervisor's own mappings intact meanwhile.
        let mfn = self.alloc_frame(env, false)?;
        for (i, e) in env.hypervisor_half.iter().enumerate() {
            env.mem.write_u64(mfn * PAGE_SIZE + (ENTRIES / 2 + i) as u64 * 8, *e);
        }
        env.mem.write(mfn * PAGE_SIZE, &[0; PAGE_SIZE as usize / 2]);
        self.add_table(env, gfn, 4, mode, mfn);
        Ok(mfn * PAGE_SIZE)
    }

    /// Whether the shadows hold more than their budget: more frames than
    /// `budget_frames`, or more live slots in the reverse map than
    /// [`REVERSE_MAP_BUDGET`] (stale ones are pruned first). [`Shadow::root`]
    /// then resets; the integrator must check it before every fill too, or
    /// a kernel that never loads CR3 grows its shadows without limit.
    pub fn over_budget<M: MachineMemory>(&mut self, env: &mut ShadowEnv<'_, M>) -> bool {
        if self.writable.len() > REVERSE_MAP_BUDGET {
            self.prune(env);
        }
        self.frames.len() as u64 > self.budget_frames || self.writable.len() > REVERSE_MAP_BUDGET
    }

    /// Drops every shadow and counts a shadow reset. The guest may still
    /// run on one of them: the caller must get a new root from
    /// [`Shadow::root`] and load it before the guest runs again (the root
    /// is made so that reusing the loaded table's frame is safe).
    pub fn reset<M: MachineMemory>(&mut self, env: &mut ShadowEnv<'_, M>) {
        self.drop_all(env);
        self.stats.resets += 1;
    }

    /// Whether guest frame `gfn` has a shadow table (so every shadow leaf
    /// maps it read-only and writes to it must be reported through
    /// [`Shadow::guest_wrote`]).
    pub fn is_tracked(&self, gfn: u64) -> bool {
        self.tables.contains_key(&gfn)
    }

    /// Frees every shadow frame and forgets all tracking. The caller must
    /// not be running on a shadow table when the freed frames are reused:
    /// at the domain's end, load another CR3 first. ([`Shadow::root`]
    /// resets safely: see there.)
    pub fn drop_all<M: MachineMemory>(&mut self, env: &mut ShadowEnv<'_, M>) {
        for mfn in self.frames.drain(..) {
            env.frames.free(mfn, Owner::Hypervisor).expect("shadow frames are the hypervisor's");
        }
        self.tables.clear();
        self.splinters.clear();
        self.splinters_of.clear();
        self.writable.clear();
        self.prune_at = PRUNE_MIN;
        self.nxe = None;
        self.stats.frames = 0;
    }

    /// The counters.
    pub fn stats(&self) -> ShadowStats {
        self.stats
    }

    /// Slots in the reverse map of writable leaves (hypervisor heap).
    pub fn reverse_map_len(&self) -> usize {
        self.writable.len()
    }

    /// The most hypervisor heap the bookkeeping holds now (its maps by
    /// their lengths, see [`btree_bytes`], and the frame list): what the
    /// domain is charged for it. At most [`heap_max`] of the budget.
    pub fn heap_bytes(&self) -> usize {
        btree_bytes::<u64, TableSet>(self.tables.len())
            + btree_bytes::<SplinterKey, Mfn>(self.splinters.len())
            + btree_bytes::<(u64, Mfn), ()>(self.splinters_of.len())
            + btree_bytes::<(u64, ShadowSlot), ()>(self.writable.len())
            + vec_bytes(&self.frames)
    }

    /// The shadow of guest table `gfn` used at `level` in `mode`, if any.
    fn table(&self, gfn: u64, level: u8, mode: Mode) -> Option<Mfn> {
        self.tables.get(&gfn).and_then(|set| set[set_index(level, mode)])
    }

    /// A zeroed frame for a shadow table (`zero`: clear it here; a root
    /// is written by its caller).
    fn alloc_frame<M: MachineMemory>(&mut self, env: &mut ShadowEnv<'_, M>, zero: bool) -> Result<Mfn, ShadowError> {
        let mfn = env.frames.alloc(Owner::Hypervisor).map_err(ShadowError::OutOfFrames)?;
        if zero {
            env.mem.zero_frame(mfn);
        }
        self.frames.push(mfn);
        self.stats.frames += 1;
        self.stats.tables_created += 1;
        Ok(mfn)
    }

    /// Records `mfn` as the shadow of guest table `gfn` at `level` in
    /// `mode`; when that makes `gfn` tracked, write-protects it. Returns
    /// whether writable shadow leaves were downgraded (a TLB flush is due).
    fn add_table<M: MachineMemory>(
        &mut self,
        env: &mut ShadowEnv<'_, M>,
        gfn: u64,
        level: u8,
        mode: Mode,
        mfn: Mfn,
    ) -> bool {
        let newly_tracked = !self.tables.contains_key(&gfn);
        self.tables.entry(gfn).or_default()[set_index(level, mode)] = Some(mfn);
        newly_tracked && self.write_protect(env, gfn)
    }
}
