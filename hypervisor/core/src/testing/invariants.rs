//! The invariants of a whole [`System`], recomputed from scratch.
//!
//! Each function checks one family and returns the first violation as a
//! sentence. Nothing here trusts a counter it checks: type and map counts
//! are recomputed from the contents of the validated page tables, the
//! base pointers, the pins and the hypervisor's own references; ownership
//! from the domains' frame lists; port states from both ends of each
//! channel. [`check_all`] runs them all; the host fuzz of `System` calls it
//! after every step, and any other test may call it (or one family) after
//! whatever it does.

use crate::domain::{Domain, DomainId};
use crate::event_channel::{Port, Wait};
use crate::frame_table::{Owner, PageType};
use crate::machine_memory::MachineMemory;
use crate::paging::{flags, ADDRESS_MASK, ENTRIES};
use crate::system::{Door, Next, System};
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use hypercall_abi::event::{virq, NR_PORTS, POLL_MAX};
use hypercall_abi::layout::GUEST_PML4_SLOTS;
use hypercall_abi::mm::GUEST_ENTRY_ALLOWED;
use hypercall_abi::PAGE_SIZE;
use zerocopy::IntoBytes;

/// A broken invariant, said in one sentence.
pub type Violation = String;

/// Every invariant below, in order.
pub fn check_all(sys: &System, mem: &impl MachineMemory) -> Result<(), Violation> {
    frame_ownership(sys)?;
    page_types(sys, mem)?;
    port_tables(sys)?;
    scheduling(sys)?;
    deadlines(sys)?;
    ended_domains_hold_nothing(sys)?;
    heap_accounted(sys)?;
    Ok(())
}

/// Every frame has one owner, and the owners agree with the domains:
/// each domain's frame list holds exactly the frames the frame table says
/// it owns, each once; an ended domain owns none; the hypervisor owns
/// exactly the shadow tables of the emulated domains; a free or reserved
/// frame carries no type, no mapping and no pin; the free count is the
/// number of free frames.
pub fn frame_ownership(sys: &System) -> Result<(), Violation> {
    let infos = sys.frames.infos();
    let mut listed = vec![false; infos.len()];
    for d in &sys.domains {
        for &mfn in &d.frames {
            let owner = infos.get(mfn as usize).map(|i| i.owner);
            if owner != Some(Owner::Domain(d.id)) {
                return Err(format!("{} lists frame {mfn:#x}, owned by {owner:?}", d.label()));
            }
            if core::mem::replace(&mut listed[mfn as usize], true) {
                return Err(format!("{} lists frame {mfn:#x} twice", d.label()));
            }
        }
    }
    // (A `while` over indexes and `matches!`, not iterators and `==`: this
    // runs after every step of the fuzz, in a debug build, where each of
    // those is a call.)
    let (mut free, mut hypervisor, mut mfn) = (0u64, 0u64, 0usize);
    while mfn < infos.len() {
        let info = &infos[mfn];
        match info.owner {
            Owner::Domain(o) if !listed[mfn] => {
                return Err(format!("frame {mfn:#x} is owned by domain {o} but in no domain's frame list"));
            }
            Owner::Domain(_) => {}
            Owner::Hypervisor => hypervisor += 1,
            Owner::Free | Owner::Reserved => {
                free += u64::from(matches!(info.owner, Owner::Free));
                if info.type_count != 0 || info.map_count != 0 || info.pinned || !matches!(info.ty, PageType::None) {
                    return Err(format!("frame {mfn:#x} is {:?} but still typed or referenced: {info:?}", info.owner));
                }
            }
        }
        mfn += 1;
    }
    if sys.frames.free_count() != free {
        return Err(format!("the free count is {} but {free} frames are free", sys.frames.free_count()));
    }
    let shadows: u64 = sys.domains.iter().filter_map(|d| d.vm.as_ref()).map(|vm| vm.shadow.stats().frames).sum();
    if hypervisor != shadows {
        return Err(format!("the hypervisor owns {hypervisor} frames but the shadows hold {shadows}"));
    }
    Ok(())
}

/// The references found so far, frame by frame.
struct Refs {
    /// References that need a type.
    types: Vec<u32>,
    /// Level-1 entries that map the frame.
    maps: Vec<u32>,
    /// The type the references need, as [`type_code`] gives it (0: no
    /// reference; a byte, so that the vector starts as zeroed memory)...
    needed: Vec<u8>,
    /// ...and where the first came from (a machine address, or a name).
    needed_by: Vec<u64>,
    /// The frames referenced, each once.
    touched: Vec<usize>,
}

/// `Refs::needed_by` of a kernel base pointer, and of a user one.
const KERNEL_BASE_POINTER: u64 = u64::MAX;
const USER_BASE_POINTER: u64 = u64::MAX - 1;

impl Refs {
    fn new(n: usize) -> Refs {
        Refs { types: vec![0; n], maps: vec![0; n], needed: vec![0; n], needed_by: vec![0; n], touched: Vec::new() }
    }

    /// Notes that frame `i` has a reference (for the comparison at the end).
    fn touch(&mut self, i: usize) {
        if self.types[i] == 0 && self.maps[i] == 0 {
            self.touched.push(i);
        }
    }

    /// A reference from `from` (of domain `owner`) that needs `mfn` to be `ty`.
    fn need(&mut self, sys: &System, mfn: u64, ty: PageType, from: u64, owner: DomainId) -> Result<(), Violation> {
        match sys.frames.owner(mfn) {
            Some(Owner::Domain(o)) if o == owner => {}
            other => return Err(format!("{} of domain {owner} references frame {mfn:#x}, owned by {other:?}", source(from))),
        }
        let i = mfn as usize;
        self.touch(i);
        self.types[i] += 1;
        match self.needed[i] {
            0 => (self.needed[i], self.needed_by[i]) = (type_code(ty), from),
            first if first == type_code(ty) => {}
            first => {
                let first = PAGE_TYPES[usize::from(first)];
                let writable = first == PageType::Writable || ty == PageType::Writable;
                return Err(format!(
                    "frame {mfn:#x} is needed as {first:?} by {} and as {ty:?} by {}{}",
                    source(self.needed_by[i]),
                    source(from),
                    if writable { ": a page table mapped writable" } else { "" }
                ));
            }
        }
        Ok(())
    }
}

/// Every page type, by [`type_code`].
const PAGE_TYPES: [PageType; 6] = [PageType::None, PageType::Writable, PageType::L1, PageType::L2, PageType::L3, PageType::L4];

/// A page type's index in [`PAGE_TYPES`].
fn type_code(ty: PageType) -> u8 {
    PAGE_TYPES.iter().position(|t| *t == ty).expect("every type is listed") as u8
}

/// What `Refs::needed_by` names.
fn source(from: u64) -> String {
    match from {
        KERNEL_BASE_POINTER => String::from("the kernel base pointer"),
        USER_BASE_POINTER => String::from("the user base pointer"),
        at => format!("{at:#x}"),
    }
}

/// Page typing, recomputed: every type reference (entries of validated
/// tables, writable level-1 mappings, pins, base pointers, and the
/// hypervisor's writable references on each paravirtualized domain's
/// console ring and shared-info page) and every level-1 mapping is
/// counted from what is actually there and compared with the frame
/// table. Along the way: every present entry of a validated table has only
/// allowed bits, the user bit, and maps a frame of the table's own domain;
/// every reference a frame has needs the type it has (so no page table is
/// mapped writable by any validated table, and no table is linked at the
/// wrong level); a top-level table keeps slot 255 empty and the
/// hypervisor's half intact; a frame without references has no type and
/// no pin; no frame of an ended domain is referenced.
pub fn page_types(sys: &System, mem: &impl MachineMemory) -> Result<(), Violation> {
    let infos = sys.frames.infos();
    let mut refs = Refs::new(infos.len());
    for d in sys.domains.iter().filter(|d| d.is_alive() && d.vm.is_none()) {
        refs.need(sys, d.vcpu.kernel_root / PAGE_SIZE, PageType::L4, KERNEL_BASE_POINTER, d.id)?;
        if let Some(user) = d.vcpu.user_root {
            refs.need(sys, user / PAGE_SIZE, PageType::L4, USER_BASE_POINTER, d.id)?;
        }
        refs.need(sys, d.console_ring / PAGE_SIZE, PageType::Writable, d.console_ring, d.id)?;
        refs.need(sys, d.shared_info / PAGE_SIZE, PageType::Writable, d.shared_info, d.id)?;
    }
    // One pass over every frame (a `while` over indexes, `matches!`: it
    // runs after every step of the fuzz, in a debug build) finds the frames
    // the frame table says something about; only those, the tables among
    // them, and the frames the tables reference are looked at again.
    let mut claimed = Vec::new();
    let mut mfn = 0;
    while mfn < infos.len() {
        let info = &infos[mfn];
        if info.type_count != 0 || info.map_count != 0 || info.pinned || !matches!(info.ty, PageType::None) {
            claimed.push(mfn);
        }
        mfn += 1;
    }
    const EMPTY: [u64; 32] = [0; 32];
    let mut page = [0u64; ENTRIES];
    for &mfn in &claimed {
        let info = &infos[mfn];
        let table = mfn as u64 * PAGE_SIZE;
        let Some(level) = info.ty.level() else {
            if info.pinned {
                return Err(format!("frame {mfn:#x} is pinned but is {:?}", info.ty));
            }
            continue;
        };
        let Owner::Domain(owner) = info.owner else {
            return Err(format!("frame {mfn:#x} is an L{level} table owned by {:?}", info.owner));
        };
        if info.pinned {
            refs.need(sys, mfn as u64, info.ty, table, owner)?;
        }
        if info.type_count == 0 {
            continue; // (and so not validated: the comparison below says so)
        }
        mem.read(table, page.as_mut_bytes());
        let guest_slots = if level == 4 { GUEST_PML4_SLOTS } else { ENTRIES };
        let mut from = 0;
        while from < guest_slots {
            let to = (from + EMPTY.len()).min(guest_slots);
            // (Slices of integers compare with one `memcmp`.)
            if page[from..to] != EMPTY[..to - from] {
                for (slot, &entry) in page.iter().enumerate().take(to).skip(from) {
                    if entry & flags::PRESENT != 0 {
                        entry_refs(sys, &mut refs, owner, level, table + slot as u64 * 8, entry)?;
                    }
                }
            }
            from = to;
        }
        if level == 4 {
            if page[GUEST_PML4_SLOTS] & flags::PRESENT != 0 {
                return Err(format!("top-level table {mfn:#x} maps slot {GUEST_PML4_SLOTS}, the hypervisor's"));
            }
            if page[ENTRIES / 2..] != sys.hypervisor_half[..] {
                return Err(format!("top-level table {mfn:#x} does not hold the hypervisor's half"));
            }
        }
    }
    // Every other frame has no claim and no reference: it agrees.
    for &mfn in claimed.iter().chain(&refs.touched) {
        let info = &infos[mfn];
        let ty = PAGE_TYPES[usize::from(refs.needed[mfn])];
        if info.type_count != refs.types[mfn] || info.map_count != refs.maps[mfn] || info.ty != ty {
            return Err(format!(
                "frame {mfn:#x}: {info:?}, but {} type references (the first by {}, needing {ty:?}) and {} mappings exist",
                refs.types[mfn],
                source(refs.needed_by[mfn]),
                refs.maps[mfn]
            ));
        }
        if let Owner::Domain(o) = info.owner {
            if !sys.domains[usize::from(o.0)].is_alive() {
                return Err(format!("frame {mfn:#x} of ended domain {o} is still referenced: {info:?}"));
            }
        }
    }
    Ok(())
}

/// The references a present entry at machine address `at` of a validated
/// level-`level` table of domain `owner` holds.
fn entry_refs(sys: &System, refs: &mut Refs, owner: DomainId, level: u8, at: u64, entry: u64) -> Result<(), Violation> {
    if entry & !GUEST_ENTRY_ALLOWED != 0 || entry & flags::USER == 0 {
        return Err(format!("entry {at:#x} of a validated L{level} table is {entry:#x}: bits a guest may not set"));
    }
    let target = (entry & ADDRESS_MASK) / PAGE_SIZE;
    if level > 1 {
        return refs.need(sys, target, PageType::table(level - 1), at, owner);
    }
    match sys.frames.owner(target) {
        Some(Owner::Domain(o)) if o == owner => {}
        other => return Err(format!("entry {at:#x} of domain {owner} maps frame {target:#x}, owned by {other:?}")),
    }
    refs.touch(target as usize);
    refs.maps[target as usize] += 1;
    if entry & flags::WRITABLE != 0 {
        refs.need(sys, target, PageType::Writable, at, owner)?;
    }
    Ok(())
}

/// The port tables agree with each other: port 0 is never allocated; an
/// interdomain port's peer is alive and names it back (loopback channels
/// included); an unbound port names a domain that exists (a dead one can
/// never bind it, so that is harmless); a virq port is the one its virq
/// index names and the other way round; a poll lists at most `POLL_MAX`
/// ports.
pub fn port_tables(sys: &System) -> Result<(), Violation> {
    for d in sys.domains.iter().filter(|d| d.is_alive()) {
        let table = d.events.port_table();
        if table.len() > NR_PORTS {
            return Err(format!("{} has {} ports, more than {NR_PORTS}", d.label(), table.len()));
        }
        if table.first().is_some_and(|p| *p != Port::Free) {
            return Err(format!("{} has port 0 allocated: {:?}", d.label(), table[0]));
        }
        for (port, state) in table.iter().enumerate() {
            match *state {
                Port::Free => {}
                Port::Unbound { remote } => {
                    if sys.domains.get(usize::from(remote.0)).is_none() {
                        return Err(format!("{} port {port} is offered to domain {remote}, which does not exist", d.label()));
                    }
                }
                Port::Interdomain { remote, remote_port } => {
                    let Some(peer) = sys.domains.get(usize::from(remote.0)).filter(|p| p.is_alive()) else {
                        return Err(format!("{} port {port} is connected to domain {remote}, which is not alive", d.label()));
                    };
                    let back = peer.events.port_table().get(remote_port as usize).copied();
                    if back != Some(Port::Interdomain { remote: d.id, remote_port: port as u32 }) {
                        return Err(format!(
                            "{} port {port} is connected to {} port {remote_port}, which is {back:?}",
                            d.label(),
                            peer.label()
                        ));
                    }
                }
                Port::Virq(v) => {
                    if v >= virq::COUNT || d.events.virq_port(v) != Some(port as u32) {
                        return Err(format!("{} port {port} is bound to virq {v}, whose port is {:?}", d.label(), d.events.virq_port(v)));
                    }
                }
            }
        }
        for v in 0..virq::COUNT {
            if let Some(port) = d.events.virq_port(v) {
                if table.get(port as usize) != Some(&Port::Virq(v)) {
                    return Err(format!("{} virq {v} names port {port}, which is {:?}", d.label(), table.get(port as usize)));
                }
            }
        }
        if let Wait::Poll { ports, .. } = &d.events.wait {
            if ports.is_empty() || ports.len() as u64 > POLL_MAX {
                return Err(format!("{} polls {} ports", d.label(), ports.len()));
            }
        }
    }
    Ok(())
}

/// The scheduler agrees with the domains: a domain may be picked exactly
/// when it is alive, waits for nothing and is not halted; the running
/// domain is one of those.
pub fn scheduling(sys: &System) -> Result<(), Violation> {
    for d in &sys.domains {
        let halted = d.vm.as_ref().is_some_and(|vm| vm.halted);
        let should = d.is_alive() && d.events.wait == Wait::None && !halted;
        if sys.is_runnable(d.id) != should {
            return Err(format!(
                "{} is runnable: {}, but it is {:?}, waits for {:?}, halted: {halted}",
                d.label(),
                sys.is_runnable(d.id),
                d.ending,
                d.events.wait
            ));
        }
    }
    if let Some(d) = sys.current() {
        if !sys.is_runnable(d.id) {
            return Err(format!("{} runs but may not be picked", d.label()));
        }
    }
    Ok(())
}

/// What an entry answered agrees with the system: `Switch` loads the
/// running domain's table and door; `Resume` has a domain running; `Idle`
/// has none running, none runnable, and a deadline to wake at; `Finished`
/// has every domain ended.
pub fn next_agrees(sys: &System, next: Next) -> Result<(), Violation> {
    let current = sys.current();
    let ok = match next {
        Next::Switch { root, door } => current.is_some_and(|d| d.root() == root && d.door() == door),
        Next::Resume { .. } => current.is_some(),
        Next::ResumeOnFloorPath => current.is_some_and(|d| d.door() == Door::Floor),
        Next::Idle => {
            current.is_none() && sys.domains.iter().all(|d| !sys.is_runnable(d.id)) && sys.next_deadline().is_some()
        }
        Next::Finished { all_as_expected } => {
            current.is_none()
                && sys.domains.iter().all(|d| !d.is_alive())
                && all_as_expected == sys.domains.iter().all(Domain::ended_as_expected)
        }
    };
    if ok {
        Ok(())
    } else {
        Err(format!("the entry answered {next:?}, but the running domain is {:?}", current.map(Domain::label)))
    }
}

/// The platform timer comes back for every deadline a live domain waits
/// on: [`System::next_deadline`] is no later than any guest timer or poll
/// timeout, however far (one past what the TSC can count is `u64::MAX`).
pub fn deadlines(sys: &System) -> Result<(), Violation> {
    let next = sys.next_deadline();
    for d in sys.domains.iter().filter(|d| d.is_alive()) {
        let poll = match d.events.wait {
            Wait::Poll { deadline_ns, .. } => deadline_ns,
            _ => None,
        };
        for ns in [d.events.timer_deadline_ns, poll].into_iter().flatten() {
            let tsc = sys.time.tsc_at(ns);
            if next.is_none_or(|n| n > tsc) {
                return Err(format!("{} waits for {ns} ns (TSC {tsc}), but the next deadline is {next:?}", d.label()));
            }
        }
    }
    Ok(())
}

/// An ended domain owns no frame, no port, no timer, no wait, and no
/// shadow table (its frames are checked by [`frame_ownership`]).
pub fn ended_domains_hold_nothing(sys: &System) -> Result<(), Violation> {
    for d in sys.domains.iter().filter(|d| !d.is_alive()) {
        let shadows = d.vm.as_ref().map_or(0, |vm| vm.shadow.stats().frames);
        if !d.frames.is_empty()
            || d.events.port_table().iter().any(|p| *p != Port::Free)
            || d.events.timer_deadline_ns.is_some()
            || d.events.wait != Wait::None
            || shadows != 0
        {
            return Err(format!(
                "{} ended ({:?}) but holds {} frames, ports {:?}, timer {:?}, wait {:?}, {shadows} shadow frames",
                d.label(),
                d.ending,
                d.frames.len(),
                d.events.port_table(),
                d.events.timer_deadline_ns,
                d.events.wait
            ));
        }
    }
    Ok(())
}

/// The hypervisor heap each domain makes it hold is accounted: what is
/// charged to it is exactly what its structures hold, recomputed from
/// them ([`Domain::heap_held`]: its frame list, its port table, its
/// emulated machine), and within its allowance; an ended domain holds, and
/// is charged, nothing.
pub fn heap_accounted(sys: &System) -> Result<(), Violation> {
    for d in &sys.domains {
        let (charged, held, allowance) = (d.heap.charged(), d.heap_held(), d.heap.allowance());
        if charged != held || charged > allowance {
            return Err(format!("{} is charged {charged} heap bytes, holds {held}, and may hold {allowance}", d.label()));
        }
        if !d.is_alive() && held != 0 {
            return Err(format!("{} ended ({:?}) but still holds {held} heap bytes", d.label(), d.ending));
        }
    }
    Ok(())
}
