//! The shared-info page, seen through atomics, and the time-stamp counter.
//!
//! The hypervisor writes the page (pending bits, selector, flags, time)
//! while this domain is not running, and this domain writes it (masks,
//! flags, clearing pending bits) while it runs, interrupted at any
//! instruction by upcalls. Every field either side writes is therefore an
//! atomic here, and a guest never holds a plain reference into the page.
//! [`SharedPage`] mirrors [`hypercall_abi::SharedInfo`] field for field;
//! the assertions below tie the two layouts together.

use core::sync::atomic::{AtomicI8, AtomicU32, AtomicU64, AtomicU8};

use hypercall_abi::event::{
    MASK_OFFSET, PENDING_OFFSET, PENDING_SEL_OFFSET, PORT_WORDS, UPCALL_MASK_OFFSET, UPCALL_PENDING_OFFSET,
};
use hypercall_abi::{SharedInfo, PAGE_SIZE};
use spin::Once;

use crate::start_info::{in_domain_memory, start_info};

/// [`SharedInfo`] with an atomic for each field that changes.
#[repr(C)]
pub(crate) struct SharedPage {
    /// `vcpu.upcall_pending`.
    pub upcall_pending: AtomicU8,
    /// `vcpu.upcall_mask`.
    pub upcall_mask: AtomicU8,
    _reserved: [u8; 6],
    /// `vcpu.pending_sel`.
    pub pending_sel: AtomicU64,
    /// `time.version`.
    pub time_version: AtomicU32,
    _time_reserved: u32,
    /// `time.tsc_timestamp`.
    pub tsc_timestamp: AtomicU64,
    /// `time.system_time`.
    pub system_time: AtomicU64,
    /// `time.tsc_to_system_mul`.
    pub tsc_to_system_mul: AtomicU32,
    /// `time.tsc_shift`.
    pub tsc_shift: AtomicI8,
    _time_reserved2: [u8; 3],
    /// `wall_clock.version`.
    pub wall_version: AtomicU32,
    /// `wall_clock.nsec`.
    pub wall_nsec: AtomicU32,
    /// `wall_clock.sec`.
    pub wall_sec: AtomicU64,
    /// `evtchn_pending`.
    pub pending: [AtomicU64; PORT_WORDS],
    /// `evtchn_mask`.
    pub mask: [AtomicU64; PORT_WORDS],
}

const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(offset_of!(SharedPage, upcall_pending) == UPCALL_PENDING_OFFSET);
    assert!(offset_of!(SharedPage, upcall_mask) == UPCALL_MASK_OFFSET);
    assert!(offset_of!(SharedPage, pending_sel) == PENDING_SEL_OFFSET);
    assert!(offset_of!(SharedPage, time_version) == offset_of!(SharedInfo, time));
    assert!(offset_of!(SharedPage, tsc_timestamp) == offset_of!(SharedInfo, time) + 8);
    assert!(offset_of!(SharedPage, system_time) == offset_of!(SharedInfo, time) + 16);
    assert!(offset_of!(SharedPage, tsc_to_system_mul) == offset_of!(SharedInfo, time) + 24);
    assert!(offset_of!(SharedPage, tsc_shift) == offset_of!(SharedInfo, time) + 28);
    assert!(offset_of!(SharedPage, wall_version) == offset_of!(SharedInfo, wall_clock));
    assert!(offset_of!(SharedPage, wall_nsec) == offset_of!(SharedInfo, wall_clock) + 4);
    assert!(offset_of!(SharedPage, wall_sec) == offset_of!(SharedInfo, wall_clock) + 8);
    assert!(offset_of!(SharedPage, pending) == PENDING_OFFSET);
    assert!(offset_of!(SharedPage, mask) == MASK_OFFSET);
    assert!(size_of::<SharedPage>() <= size_of::<SharedInfo>());
};

static PAGE: Once<&'static SharedPage> = Once::new();

/// This domain's shared-info page.
///
/// # Panics
///
/// If the start-info page names an address that is not a page inside the
/// domain's memory (a hypervisor bug; the SDK refuses to guess).
#[inline]
pub(crate) fn page() -> &'static SharedPage {
    PAGE.call_once(|| {
        let info = start_info();
        let addr = info.shared_info;
        assert!(
            addr.is_multiple_of(PAGE_SIZE) && in_domain_memory(info, addr, PAGE_SIZE),
            "the shared-info page {addr:#x} named in the start-info page is not inside this domain's memory"
        );
        // SAFETY: 1. The hypervisor maps the shared-info page writable at
        // `addr` for the domain's whole life (its start-info contract), and
        // we checked that `addr` is a page-aligned page of the domain's
        // memory. 2. `SharedPage` fits in the page and needs at most 8-byte
        // alignment. 3. Every field that anyone writes after boot is an
        // atomic, so a shared reference is sound while the hypervisor and
        // upcall handlers change those fields; the padding is never written.
        unsafe { &*(addr as *const SharedPage) }
    })
}

/// The time-stamp counter.
#[inline(always)]
pub(crate) fn rdtsc() -> u64 {
    // SAFETY: `rdtsc` only reads the counter; the hypervisor leaves CR4.TSD
    // clear, so it is allowed in ring 3 (the ABI's time contract relies on it).
    unsafe { core::arch::x86_64::_rdtsc() }
}
