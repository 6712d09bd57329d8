//! Segments: the GDT, the TSS and the `syscall` MSRs.
//!
//! ```text
//! selector  descriptor
//! 0x08      ring-0 64-bit code        (syscall CS)
//! 0x10      ring-0 data               (syscall SS; also sysret's base)
//! 0x18|3    ring-3 data               (sysret SS = base + 8)
//! 0x20|3    ring-3 64-bit code        (sysret CS = base + 16)
//! 0x28      TSS (two slots)
//! 0x70|3    ring-3 data               (emulated kernels; see select_guest_segments)
//! 0x78|3    ring-3 64-bit code        (emulated kernels)
//! ```
//! The TSS gives the stack a fault from ring 3 lands on (RSP0: the per-CPU
//! stack, where the guest frame is built) and a separate known-good stack
//! (IST1..4) each for double faults, NMIs, machine checks and debug
//! exceptions (a `syscall` made with TF set traps in ring 0 before the
//! entry code has left the guest's stack: see `init`).

use core::mem::size_of;
use x86_64::registers::model_specific::{LStar, SFMask, Star};
use x86_64::registers::rflags::RFlags;
use x86_64::registers::segmentation::{Segment, CS, DS, ES, SS};
use x86_64::structures::gdt::SegmentSelector;
use x86_64::structures::tss::TaskStateSegment;
use x86_64::structures::DescriptorTablePointer;
use x86_64::{PrivilegeLevel, VirtAddr};

/// Ring-0 code selector.
pub const KERNEL_CS: u16 = 0x08;
/// Ring-0 data selector.
pub const KERNEL_SS: u16 = 0x10;
const TSS_SELECTOR: u16 = 0x28;

/// IST slots (1-based as in IDT entries) for the faults that need a fresh
/// stack, one each, so that one cannot overwrite another's frame.
pub const IST_DOUBLE_FAULT: u8 = 1;
/// IST slot of the NMI.
pub const IST_NMI: u8 = 2;
/// IST slot of the machine check.
pub const IST_MACHINE_CHECK: u8 = 3;
/// IST slot of the debug exception.
pub const IST_DEBUG: u8 = 4;
const IST_STACK_SIZE: usize = 16 * 1024;
const IST_STACK_COUNT: usize = 4;

#[repr(C, align(16))]
struct IstStack([u8; IST_STACK_SIZE]);
static mut IST_STACKS: [IstStack; IST_STACK_COUNT] = [const { IstStack([0; IST_STACK_SIZE]) }; IST_STACK_COUNT];

static mut TSS: TaskStateSegment = TaskStateSegment::new();

/// The present bit of a segment descriptor.
const PRESENT: u64 = 1 << 47;
/// Ring-3 data descriptor.
const USER_DATA: u64 = 0x00cf_f200_0000_ffff;
/// Ring-3 64-bit code descriptor.
const USER_CODE: u64 = 0x00af_fa00_0000_ffff;
/// Slots of the ring-3 selectors of paravirtualized guests.
const PV_SLOTS: [usize; 2] = [3, 4];
/// Slots of the ring-3 selectors of emulated kernels (see
/// `parvus_core::emulated::REAL_CS`).
const EMULATED_SLOTS: [usize; 2] = [14, 15];
const GDT_ENTRIES: usize = 16;

static mut GDT: [u64; GDT_ENTRIES] = [
    0,
    0x00af_9a00_0000_ffff, // 0x08 ring-0 code, 64-bit
    0x00cf_9200_0000_ffff, // 0x10 ring-0 data
    USER_DATA,             // 0x18 ring-3 data (paravirtualized guests)
    USER_CODE,             // 0x20 ring-3 code, 64-bit (paravirtualized guests)
    0,                     // 0x28 TSS, low half (filled in at init)
    0,                     // 0x30 TSS, high half
    0, 0, 0, 0, 0, 0, 0,   // 0x38..0x68 unused
    USER_DATA & !PRESENT,  // 0x70 ring-3 data (emulated kernels)
    USER_CODE & !PRESENT,  // 0x78 ring-3 code, 64-bit (emulated kernels)
];

const _: () = assert!(parvus_core::emulated::REAL_SS == (EMULATED_SLOTS[0] as u64) << 3 | 3);
const _: () = assert!(parvus_core::emulated::REAL_CS == (EMULATED_SLOTS[1] as u64) << 3 | 3);

/// Makes present the ring-3 selectors of the kind of guest that runs next,
/// and not present those of the other kind.
///
/// This is the segment trick of ring compression under pure
/// virtualization: an emulated kernel runs on slots 14 and 15, and when it
/// `iretq`s to its user mode with its own selector 0x23 (slot 4), the CPU
/// finds that descriptor not present and raises #NP instead of silently
/// returning from ring 3 to ring 3, so the hypervisor sees the switch.
pub fn select_guest_segments(emulated: bool) {
    let gdt = core::ptr::addr_of_mut!(GDT);
    // SAFETY: one CPU with interrupts off in ring 0: no other access to the GDT.
    if unsafe { (*gdt)[EMULATED_SLOTS[1]] } & PRESENT != 0 && emulated {
        return;
    }
    let (on, off) = if emulated { (EMULATED_SLOTS, PV_SLOTS) } else { (PV_SLOTS, EMULATED_SLOTS) };
    // SAFETY: (1) one CPU, interrupts off in ring 0, so nothing else reads or
    // writes the GDT now; (2) the descriptors changed are ring-3 ones, which
    // no segment register holds while the hypervisor runs (CS and SS are
    // ring 0, DS and ES null), so the CPU's cached copies are unaffected
    // until the guest's own `iretq` loads them.
    unsafe {
        for slot in on {
            (*gdt)[slot] |= PRESENT;
        }
        for slot in off {
            (*gdt)[slot] &= !PRESENT;
        }
    }
}

/// Loads the GDT and TSS, reloads the segment registers, and programs the
/// `syscall` MSRs to enter at `syscall_entry` with IF, DF, AC and NT cleared.
pub fn init(stack_top: u64, syscall_entry: u64) {
    let tss = core::ptr::addr_of_mut!(TSS);
    let gdt = core::ptr::addr_of_mut!(GDT);
    // SAFETY: init runs once on the boot CPU before anything else uses the
    // GDT or TSS, so these are the only references.
    unsafe {
        (*tss).privilege_stack_table[0] = VirtAddr::new(stack_top);
        for i in 0..IST_STACK_COUNT {
            let stack = core::ptr::addr_of!(IST_STACKS[i]) as u64;
            (*tss).interrupt_stack_table[i] = VirtAddr::new(stack + IST_STACK_SIZE as u64);
        }
        (*tss).iomap_base = size_of::<TaskStateSegment>() as u16; // no I/O bitmap: all ports denied to ring 3
        let base = tss as u64;
        let limit = (size_of::<TaskStateSegment>() - 1) as u64;
        (*gdt)[5] = (limit & 0xffff)
            | ((base & 0xff_ffff) << 16)
            | (0x89 << 40) // present, 64-bit TSS (available)
            | (((limit >> 16) & 0xf) << 48)
            | (((base >> 24) & 0xff) << 56);
        (*gdt)[6] = base >> 32;
    }
    let pointer = DescriptorTablePointer {
        limit: (size_of::<[u64; GDT_ENTRIES]>() - 1) as u16,
        base: VirtAddr::new(gdt as u64),
    };
    // SAFETY: (1) the GDT is static and valid for the rest of the run; (2) the
    // selectors loaded next name its ring-0 code and data descriptors; (3) the
    // TSS descriptor points at the static TSS filled in above.
    unsafe {
        x86_64::instructions::tables::lgdt(&pointer);
        CS::set_reg(SegmentSelector::new(KERNEL_CS >> 3, PrivilegeLevel::Ring0));
        SS::set_reg(SegmentSelector::new(KERNEL_SS >> 3, PrivilegeLevel::Ring0));
        DS::set_reg(SegmentSelector(0));
        ES::set_reg(SegmentSelector(0));
        x86_64::instructions::tables::load_tss(SegmentSelector(TSS_SELECTOR));
    }
    Star::write(
        SegmentSelector(0x20 | 3),
        SegmentSelector(0x18 | 3),
        SegmentSelector(KERNEL_CS),
        SegmentSelector(KERNEL_SS),
    )
    .expect("the GDT layout above satisfies STAR's ordering rules");
    LStar::write(VirtAddr::new(syscall_entry));
    // Cleared on `syscall`: interrupts (ring 0 runs with them off), DF
    // (memcpy), AC (SMAP) and NT (a set NT makes `iretq` fault). Not TF:
    // a `syscall` made with TF set traps (#DB) right after it, on the
    // door's first instruction, and that trap is how the entry code learns
    // that a guest single-steps across a hypercall without testing the
    // flags on every one (`entry.rs`, `debug_entry`). The #DB gate has its
    // own IST stack because the trap strikes on the guest's stack.
    SFMask::write(RFlags::INTERRUPT_FLAG | RFlags::DIRECTION_FLAG | RFlags::ALIGNMENT_CHECK | RFlags::NESTED_TASK);
}
