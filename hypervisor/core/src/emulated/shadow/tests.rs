//! Host tests of the shadow tables, one behaviour each. The model-based
//! property test is in `model_tests`.

use super::test_world::{hw_allows, hw_walk, va, World};
use super::*;
use crate::emulated::guest_walk::{error_code, Access};
use crate::hypercall::TlbFlush;
use crate::paging::flags::{ACCESSED, DIRTY, HUGE, NO_EXECUTE, PRESENT, USER, WRITABLE};
use crate::paging::table_index;

const P: u64 = PRESENT;
const W: u64 = WRITABLE;
const U: u64 = USER;
const D: u64 = DIRTY;
const NX: u64 = NO_EXECUTE;

/// The guest's tables: L4 at guest frame 1, then one L3 (2), L2 (3) and
/// L1 (4), linked for every address used here with P|W|U.
const CR3: u64 = 0x1000;

const READ: Access = Access { write: false, user: false, fetch: false };
const WRITE: Access = Access { write: true, user: false, fetch: false };
const FETCH: Access = Access { write: false, user: false, fetch: true };

fn map(w: &mut World, s: &mut Shadow, at: u64, gfn: u64, leaf: u64) {
    w.store(s, 1, table_index(at, 4), 0x2000 | P | W | U);
    w.store(s, 2, table_index(at, 3), 0x3000 | P | W | U);
    w.store(s, 3, table_index(at, 2), 0x4000 | P | W | U);
    w.store(s, 4, table_index(at, 1), gfn << 12 | leaf);
}

fn setup() -> (World, Shadow) {
    (World::new(2048, 256), Shadow::new(1024))
}

fn fault(w: &mut World, s: &mut Shadow, mode: Mode, at: u64, access: Access) -> Result<FaultOutcome, ShadowError> {
    s.on_page_fault(&mut w.env(), CR3, mode, at, access)
}

const A: u64 = 0x40_0000; // user RW page, dirty
const B: u64 = 0x40_1000; // supervisor RW page
const C: u64 = 0x40_2000; // user read-only page
const X: u64 = 0x40_3000; // user NX page

fn four_pages(w: &mut World, s: &mut Shadow) {
    map(w, s, A, 10, P | W | U | D);
    map(w, s, B, 11, P | W | D);
    map(w, s, C, 12, P | U);
    map(w, s, X, 13, P | U | NX);
}

#[test]
fn fills_follow_the_guest_mapping_in_both_modes() {
    let (mut w, mut s) = setup();
    four_pages(&mut w, &mut s);
    let root = s.root(&mut w.env(), CR3, Mode::Kernel).unwrap();
    assert_eq!(hw_walk(&w.mem, root, A), None, "a new shadow is empty");
    assert!(matches!(fault(&mut w, &mut s, Mode::Kernel, A, WRITE), Ok(FaultOutcome::Filled { .. })));
    let t = hw_walk(&w.mem, root, A).unwrap();
    assert_eq!((t.mfn, t.writable, t.executable), (w.guest[10], true, true));
    // The kernel sees supervisor pages; read-only and NX hold for it too.
    assert!(matches!(fault(&mut w, &mut s, Mode::Kernel, B, WRITE), Ok(FaultOutcome::Filled { .. })));
    assert!(hw_allows(&w.mem, root, B, true, false));
    let ro = fault(&mut w, &mut s, Mode::Kernel, C, WRITE);
    assert_eq!(ro, Ok(FaultOutcome::GuestFault { error_code: error_code::PRESENT | error_code::WRITE }));
    assert!(matches!(fault(&mut w, &mut s, Mode::Kernel, C, READ), Ok(FaultOutcome::Filled { .. })));
    assert!(hw_allows(&w.mem, root, C, false, false) && !hw_allows(&w.mem, root, C, true, false));
    let nx = fault(&mut w, &mut s, Mode::Kernel, X, FETCH);
    assert_eq!(nx, Ok(FaultOutcome::GuestFault { error_code: error_code::PRESENT | error_code::FETCH }));
    assert!(matches!(fault(&mut w, &mut s, Mode::Kernel, X, READ), Ok(FaultOutcome::Filled { .. })));
    assert!(hw_allows(&w.mem, root, X, false, false) && !hw_allows(&w.mem, root, X, false, true));

    // User mode: its own shadow, without the supervisor page.
    let user_root = s.root(&mut w.env(), CR3, Mode::User).unwrap();
    assert_ne!(user_root, root);
    let sup = fault(&mut w, &mut s, Mode::User, B, READ);
    assert_eq!(sup, Ok(FaultOutcome::GuestFault { error_code: error_code::PRESENT | error_code::USER }));
    assert_eq!(hw_walk(&w.mem, user_root, B), None);
    assert!(matches!(fault(&mut w, &mut s, Mode::User, A, READ), Ok(FaultOutcome::Filled { .. })));
    assert_eq!(hw_walk(&w.mem, user_root, A).unwrap().mfn, w.guest[10]);
    // The kernel's shadow is cached across the switch.
    assert_eq!(s.root(&mut w.env(), CR3, Mode::Kernel), Ok(root));
    let st = s.stats();
    assert_eq!((st.fills, st.guest_faults, st.tables_created), (5, 3, 8));
}

#[test]
fn a_supervisor_entry_at_any_level_hides_the_subtree_from_user_mode() {
    let (mut w, mut s) = setup();
    map(&mut w, &mut s, A, 10, P | W | U | D);
    w.store(&mut s, 2, table_index(A, 3), 0x3000 | P | W); // L3 entry without U/S
    s.root(&mut w.env(), CR3, Mode::User).unwrap();
    let f = fault(&mut w, &mut s, Mode::User, A, READ);
    assert_eq!(f, Ok(FaultOutcome::GuestFault { error_code: error_code::PRESENT | error_code::USER }));
    // Kernel mode fills the same path; the user shadow of the shared
    // tables still leaves the entry out.
    let kroot = s.root(&mut w.env(), CR3, Mode::Kernel).unwrap();
    assert!(matches!(fault(&mut w, &mut s, Mode::Kernel, A, READ), Ok(FaultOutcome::Filled { .. })));
    assert!(hw_allows(&w.mem, kroot, A, false, false));
    let uroot = s.root(&mut w.env(), CR3, Mode::User).unwrap();
    assert_eq!(hw_walk(&w.mem, uroot, A), None);
}

#[test]
fn accessed_and_dirty_bits_are_set_as_the_mmu_would() {
    let (mut w, mut s) = setup();
    map(&mut w, &mut s, A, 10, P | W | U); // clean
    let root = s.root(&mut w.env(), CR3, Mode::Kernel).unwrap();
    assert_eq!(fault(&mut w, &mut s, Mode::Kernel, A, READ), Ok(FaultOutcome::Filled { tlb: TlbFlush::None }));
    assert_eq!(w.entry(4, table_index(A, 1)) & (ACCESSED | D), ACCESSED);
    assert_eq!(w.entry(1, table_index(A, 4)) & ACCESSED, ACCESSED, "every level");
    assert!(!hw_allows(&w.mem, root, A, true, false), "clean pages are read-only in the shadow");
    let f = fault(&mut w, &mut s, Mode::Kernel, A, WRITE);
    assert_eq!(f, Ok(FaultOutcome::Filled { tlb: TlbFlush::Page(A) }), "a present entry gained rights");
    assert_eq!(w.entry(4, table_index(A, 1)) & D, D);
    assert!(hw_allows(&w.mem, root, A, true, false));
    // A spurious fault (say, a stale TLB entry) flushes the page.
    assert_eq!(fault(&mut w, &mut s, Mode::Kernel, A, WRITE), Ok(FaultOutcome::Filled { tlb: TlbFlush::Page(A) }));
}

#[test]
fn writes_to_page_tables_are_caught_and_reads_allowed() {
    let (mut w, mut s) = setup();
    let pt = 0x40_5000; // maps the guest's own L1 table (frame 4)
    map(&mut w, &mut s, pt, 4, P | W | D);
    let root = s.root(&mut w.env(), CR3, Mode::Kernel).unwrap();
    let f = fault(&mut w, &mut s, Mode::Kernel, pt + 0x28, WRITE);
    assert_eq!(f, Ok(FaultOutcome::WriteToPageTable { gpa: Gpa(0x4028), tlb: TlbFlush::None }));
    assert!(hw_allows(&w.mem, root, pt, false, false), "the path is filled for reads");
    assert!(!hw_allows(&w.mem, root, pt, true, false), "but never writable");
    // Asked again (the store was not emulated), it is still not a fill.
    let again = fault(&mut w, &mut s, Mode::Kernel, pt, WRITE);
    assert_eq!(again, Ok(FaultOutcome::WriteToPageTable { gpa: Gpa(0x4000), tlb: TlbFlush::None }));
    assert_eq!(s.stats().table_write_faults, 2);
}

#[test]
fn a_mapped_frame_that_becomes_a_table_is_downgraded() {
    let (mut w, mut s) = setup();
    map(&mut w, &mut s, A, 10, P | W | U | D);
    let root = s.root(&mut w.env(), CR3, Mode::Kernel).unwrap();
    fault(&mut w, &mut s, Mode::Kernel, A, WRITE).unwrap();
    assert!(hw_allows(&w.mem, root, A, true, false));
    // Frame 10 becomes the level-1 table of another 2 MiB region.
    let other = va(0, 0, 5, 0);
    assert_eq!(w.store(&mut s, 3, 5, 0xa000 | P | W | U), TlbFlush::None, "a new entry: nothing to drop");
    w.store(&mut s, 10, 0, 11 << 12 | P | W | D); // still through the writable mapping: frame 10 is not tracked yet
    assert!(!s.is_tracked(10));
    let f = fault(&mut w, &mut s, Mode::Kernel, other, READ);
    assert_eq!(f, Ok(FaultOutcome::Filled { tlb: TlbFlush::All }), "a writable leaf was downgraded");
    assert!(s.is_tracked(10));
    assert!(hw_allows(&w.mem, root, A, false, false) && !hw_allows(&w.mem, root, A, true, false));
    assert_eq!(s.stats().downgrades, 1);
    assert_eq!(hw_walk(&w.mem, root, other).unwrap().mfn, w.guest[11]);
}

#[test]
fn a_write_to_a_table_that_also_downgrades_asks_for_a_flush() {
    let (mut w, mut s) = setup();
    map(&mut w, &mut s, A, 10, P | W | U | D);
    s.root(&mut w.env(), CR3, Mode::Kernel).unwrap();
    fault(&mut w, &mut s, Mode::Kernel, A, WRITE).unwrap();
    // Frame 10 becomes the level-1 table of a page mapping frame 4, the
    // guest's L1 table: the write is emulated, but A's leaf was downgraded
    // on the way and its TLB entry must go.
    let other = va(0, 0, 5, 0);
    w.store(&mut s, 3, 5, 0xa000 | P | W | U);
    w.store(&mut s, 10, 0, 4 << 12 | P | W | D);
    let f = fault(&mut w, &mut s, Mode::Kernel, other, WRITE);
    assert_eq!(f, Ok(FaultOutcome::WriteToPageTable { gpa: Gpa(0x4000), tlb: TlbFlush::All }));
}

#[test]
fn guest_wrote_clears_exactly_the_derived_entries() {
    let (mut w, mut s) = setup();
    let a2 = A + 0x1000;
    map(&mut w, &mut s, A, 10, P | W | U | D);
    map(&mut w, &mut s, a2, 11, P | W | U | D);
    let mut roots = [0; 2];
    for (i, mode) in [Mode::Kernel, Mode::User].into_iter().enumerate() {
        roots[i] = s.root(&mut w.env(), CR3, mode).unwrap();
        fault(&mut w, &mut s, mode, A, READ).unwrap();
        fault(&mut w, &mut s, mode, a2, READ).unwrap();
    }
    // Rewriting the entry of `a2` in the L1 table (frame 4)...
    let flush = w.store(&mut s, 4, table_index(a2, 1), 12 << 12 | P | U);
    assert_eq!(flush, TlbFlush::All);
    for root in roots {
        assert!(hw_walk(&w.mem, root, A).is_some(), "the neighbour stays");
        assert_eq!(hw_walk(&w.mem, root, a2), None, "the changed entry is gone in both modes");
    }
    // ...and part of an entry counts as the entry.
    let g = Gpa(0x4000 + table_index(A, 1) as u64 * 8 + 4);
    assert_eq!(s.guest_wrote(&mut w.env(), g, 2), TlbFlush::All);
    assert_eq!(hw_walk(&w.mem, roots[0], A), None);
    // An untracked frame costs nothing and changes nothing.
    let before = s.stats().table_writes;
    assert_eq!(s.guest_wrote(&mut w.env(), Gpa(0xa000), 4096), TlbFlush::None);
    assert_eq!(s.stats().table_writes, before);
    // Zeroing the whole top-level table leaves the hypervisor half alone.
    assert_eq!(s.guest_wrote(&mut w.env(), Gpa(0x1000), 4096), TlbFlush::All);
    assert_eq!(w.mem.read_u64(roots[0] + 256 * 8), w.half[0]);
    assert_eq!(hw_walk(&w.mem, roots[0], a2), None);
    // Refills work after clearing.
    fault(&mut w, &mut s, Mode::Kernel, a2, READ).unwrap();
    assert_eq!(hw_walk(&w.mem, roots[0], a2).unwrap().mfn, w.guest[12]);
}

#[test]
fn large_pages_are_splintered_and_follow_their_entry() {
    let (mut w, mut s) = setup();
    // 2 MiB page at 1 GiB + 4 MiB -> guest-physical 2 MiB.
    let big = va(0, 1, 2, 0);
    w.store(&mut s, 1, 0, 0x2000 | P | W | U);
    w.store(&mut s, 2, 1, 0x3000 | P | W | U);
    w.store(&mut s, 3, 2, 0x20_0000 | P | W | U | HUGE | D);
    let root = s.root(&mut w.env(), CR3, Mode::User).unwrap();
    assert!(matches!(fault(&mut w, &mut s, Mode::User, big + 0x3123, WRITE), Ok(FaultOutcome::Filled { .. })));
    let t = hw_walk(&w.mem, root, big + 0x3000).unwrap();
    assert_eq!((t.mfn, t.writable), (w.guest[0x203], true));
    assert_eq!(hw_walk(&w.mem, root, big + 0x4000), None, "filled one 4 KiB page at a time");
    let created = s.stats().tables_created;
    assert_eq!(created, 4, "root, L3, L2 shadows and one splinter table");
    // The guest moves the large page to 4 MiB: the splinter is emptied.
    assert_eq!(w.store(&mut s, 3, 2, 0x40_0000 | P | U | HUGE), TlbFlush::All);
    assert_eq!(hw_walk(&w.mem, root, big + 0x3000), None);
    fault(&mut w, &mut s, Mode::User, big + 0x3000, READ).unwrap();
    let t = hw_walk(&w.mem, root, big + 0x3000).unwrap();
    assert_eq!((t.mfn, t.writable), (w.guest[0x403], false));
    assert_eq!(s.stats().tables_created, created, "the splinter table was reused");

    // A 1 GiB page at 2 GiB -> guest-physical 0: a splinter L2 and L1s.
    let huge = va(0, 2, 0, 0);
    w.store(&mut s, 2, 2, P | W | U | HUGE | D);
    fault(&mut w, &mut s, Mode::User, huge + 0x20_5000, WRITE).unwrap();
    assert_eq!(hw_walk(&w.mem, root, huge + 0x20_5000).unwrap().mfn, w.guest[0x205]);
    fault(&mut w, &mut s, Mode::User, huge + 0x5000, READ).unwrap();
    assert_eq!(hw_walk(&w.mem, root, huge + 0x5000).unwrap().mfn, w.guest[5]);
    assert_eq!(s.stats().tables_created, created + 3);
    // A large page over a page table is read-only too (frame 3 is the L2).
    let f = fault(&mut w, &mut s, Mode::User, huge + 0x3000, WRITE);
    assert_eq!(f, Ok(FaultOutcome::WriteToPageTable { gpa: Gpa(0x3000), tlb: TlbFlush::None }));
}

#[test]
fn over_budget_everything_is_dropped_and_every_frame_freed() {
    let mut w = World::new(64, 64);
    let mut s = Shadow::new(3);
    let free = w.frames.free_count();
    map(&mut w, &mut s, A, 10, P | W | U | D);
    s.root(&mut w.env(), CR3, Mode::Kernel).unwrap();
    fault(&mut w, &mut s, Mode::Kernel, A, WRITE).unwrap();
    assert_eq!(s.stats().frames, 4);
    assert_eq!(w.frames.count_owned(crate::frame_table::Owner::Hypervisor), 4);
    assert!(s.is_tracked(4));
    let root = s.root(&mut w.env(), CR3, Mode::Kernel).unwrap();
    assert_eq!(s.stats().resets, 1);
    assert_eq!(s.stats().frames, 1, "only the new root");
    assert_eq!(w.frames.count_owned(crate::frame_table::Owner::Hypervisor), 1);
    assert!(!s.is_tracked(4) && s.is_tracked(1));
    assert_eq!(hw_walk(&w.mem, root, A), None, "refilled lazily");
    assert_eq!(w.mem.read_u64(root + 256 * 8), w.half[0], "the new root has the hypervisor half");
    s.drop_all(&mut w.env());
    assert_eq!(w.frames.free_count(), free);
    assert_eq!(s.stats().frames, 0);
}

#[test]
fn changing_nxe_resets() {
    let (mut w, mut s) = setup();
    map(&mut w, &mut s, X, 13, P | U | NX);
    s.root(&mut w.env(), CR3, Mode::Kernel).unwrap();
    fault(&mut w, &mut s, Mode::Kernel, X, READ).unwrap();
    w.nxe = false;
    let root = s.root(&mut w.env(), CR3, Mode::Kernel).unwrap();
    assert_eq!(s.stats().resets, 1);
    let f = fault(&mut w, &mut s, Mode::Kernel, X, READ);
    assert_eq!(f, Ok(FaultOutcome::GuestFault { error_code: error_code::PRESENT | error_code::RESERVED }));
    assert_eq!(hw_walk(&w.mem, root, X), None);
}

#[test]
fn the_hypervisor_half_is_never_the_guests() {
    let (mut w, mut s) = setup();
    let root = s.root(&mut w.env(), CR3, Mode::Kernel).unwrap();
    for i in 0..256 {
        assert_eq!(w.mem.read_u64(root + (256 + i) * 8), w.half[i as usize]);
    }
    assert_eq!(w.mem.read_u64(root + 255 * 8), 0);
    let last = va(255, 0, 0, 0);
    map(&mut w, &mut s, last, 10, P | W | U | D);
    assert_eq!(fault(&mut w, &mut s, Mode::Kernel, last, READ), Err(ShadowError::HypervisorHalf { va: last }));
    assert_eq!(w.mem.read_u64(root + 255 * 8), 0);
    // An upper-half address the guest does not map is its own fault.
    let upper = va(300, 0, 0, 0);
    assert_eq!(fault(&mut w, &mut s, Mode::Kernel, upper, READ), Ok(FaultOutcome::GuestFault { error_code: 0 }));
    map(&mut w, &mut s, upper, 10, P | W | U | D);
    assert_eq!(fault(&mut w, &mut s, Mode::Kernel, upper, READ), Err(ShadowError::HypervisorHalf { va: upper }));
    assert_eq!(w.mem.read_u64(root + 300 * 8), w.half[300 - 256]);
}

#[test]
fn tables_outside_ram_and_unknown_roots_are_errors() {
    let (mut w, mut s) = setup();
    assert!(matches!(s.root(&mut w.env(), 0x900_0000, Mode::Kernel), Err(ShadowError::NotRam(_))));
    assert_eq!(
        fault(&mut w, &mut s, Mode::Kernel, A, READ),
        Err(ShadowError::NoRoot { guest_cr3: CR3, mode: Mode::Kernel })
    );
    s.root(&mut w.env(), CR3, Mode::Kernel).unwrap();
    w.store(&mut s, 1, 0, 0x900_0000 | P | W | U);
    assert!(matches!(fault(&mut w, &mut s, Mode::Kernel, A, READ), Err(ShadowError::NotRam(_))));
}
