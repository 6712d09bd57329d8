//! Segments: the GDT and the TSS.
//!
//! In long mode segmentation is nearly gone, but the CPU still needs a GDT:
//! the code descriptor says "64-bit" and carries the privilege level, and
//! the TSS descriptor points at the one structure the CPU reads on its own
//! when an interrupt arrives in ring 3 (TSS.RSP0, the kernel stack to
//! switch to). The layout:
//!
//! ```text
//! slot  selector  descriptor
//! 0     0x00      null
//! 1     0x08      ring-0 64-bit code   (BOOT_CS: the loader's, kept)
//! 2     0x10      ring-0 data          (BOOT_DS; syscall SS; sysret base)
//! 3     0x18|3    ring-3 data          (sysret SS = base + 8)
//! 4     0x20|3    ring-3 64-bit code   (sysret CS = base + 16)
//! 5     0x28      null
//! 6-7   0x30      TSS (a 16-byte system descriptor)
//! ```
//!
//! so a kernel that uses `syscall`/`sysretq` programs STAR with
//! [`KERNEL_CS`] and [`KERNEL_DS`] as the `syscall` bases and
//! [`KERNEL_DS`] as the `sysret` base. The TSS sits at 0x30, not at 0x28
//! where the hypervisor keeps its own, so a kernel that reads TR (the
//! `pg-probe-bare` kernel does) can tell whose it sees. The table ends at
//! slot 7, below [`RESERVED_GDT_SLOT`] where the hypervisor keeps the real
//! selectors of an emulated kernel.
//!
//! Loading it takes the instructions a hypervisor can emulate: `lgdt`, a
//! far return (`lretq`) to reload CS, `mov` from a register into DS, ES and
//! SS, and `ltr`. FS and GS are left alone (their selectors are never
//! loaded; a kernel that wants a GS base uses the MSRs and `swapgs`).

use core::arch::asm;
use core::mem::size_of;

use hypercall_abi::bare_metal::{BOOT_CS, BOOT_DS, RESERVED_GDT_SLOT};
use x86_64::structures::tss::TaskStateSegment;
use x86_64::structures::DescriptorTablePointer;
use x86_64::VirtAddr;

/// Ring-0 code selector (the same as the loader's, [`BOOT_CS`]).
pub const KERNEL_CS: u16 = BOOT_CS;
/// Ring-0 data selector (the same as the loader's, [`BOOT_DS`]).
pub const KERNEL_DS: u16 = BOOT_DS;
/// Ring-3 data selector, RPL 3.
pub const USER_DS: u16 = 0x18 | 3;
/// Ring-3 64-bit code selector, RPL 3.
pub const USER_CS: u16 = 0x20 | 3;
/// The TSS selector.
pub const TSS_SELECTOR: u16 = 0x30;

/// Number of 8-byte slots in the GDT (the TSS takes the last two).
pub const GDT_SLOTS: usize = 8;

const _: () = assert!(GDT_SLOTS <= RESERVED_GDT_SLOT as usize, "the GDT must end below the hypervisor's slots");
const _: () = assert!(USER_DS == (KERNEL_DS + 8) | 3 && USER_CS == (KERNEL_DS + 16) | 3, "sysret's layout");

/// The descriptors, as the CPU reads them (flat: base 0, limit 4 GiB,
/// granularity 4 KiB; only the access byte and the L/D bits differ).
/// The accessed bit is set in each, so the CPU never writes the table.
mod descriptor {
    /// Ring-0 code: present, DPL 0, code, execute/read, accessed; L (64-bit).
    pub const KERNEL_CODE: u64 = 0x00af_9b00_0000_ffff;
    /// Ring-0 data: present, DPL 0, data, read/write, accessed.
    pub const KERNEL_DATA: u64 = 0x00cf_9300_0000_ffff;
    /// Ring-3 data: as ring-0 data with DPL 3.
    pub const USER_DATA: u64 = 0x00cf_f300_0000_ffff;
    /// Ring-3 code: as ring-0 code with DPL 3.
    pub const USER_CODE: u64 = 0x00af_fb00_0000_ffff;
    /// Access byte of a present, DPL-0, available 64-bit TSS.
    pub const TSS_AVAILABLE: u64 = 0x89;
}

/// The table; the TSS slots are filled in by [`init`].
static mut GDT: [u64; GDT_SLOTS] = [
    0,
    descriptor::KERNEL_CODE,
    descriptor::KERNEL_DATA,
    descriptor::USER_DATA,
    descriptor::USER_CODE,
    0,
    0, // TSS, low half
    0, // TSS, high half
];

/// The TSS: RSP0 (see [`set_kernel_stack`]) and no I/O bitmap.
static mut TSS: TaskStateSegment = TaskStateSegment::new();

/// The two GDT slots of a 64-bit TSS descriptor for `base`.
fn tss_descriptor(base: u64) -> [u64; 2] {
    let limit = (size_of::<TaskStateSegment>() - 1) as u64;
    let low = (limit & 0xffff)
        | ((base & 0xff_ffff) << 16)
        | (descriptor::TSS_AVAILABLE << 40)
        | (((limit >> 16) & 0xf) << 48)
        | (((base >> 24) & 0xff) << 56);
    [low, base >> 32]
}

/// Loads the GDT and the TSS and reloads CS, DS, ES, SS and TR (called by
/// the runtime before `main`).
pub fn init() {
    let tss = &raw mut TSS;
    let gdt = &raw mut GDT;
    // SAFETY: init runs once, on the only CPU, before anything else uses
    // the GDT or the TSS, so these writes race with nothing.
    unsafe {
        // All ports denied to ring 3: the bitmap would start past the TSS's end.
        (*tss).iomap_base = size_of::<TaskStateSegment>() as u16;
        let [low, high] = tss_descriptor(tss as u64);
        (*gdt)[6] = low;
        (*gdt)[7] = high;
    }
    let pointer = DescriptorTablePointer { limit: (size_of::<[u64; GDT_SLOTS]>() - 1) as u16, base: VirtAddr::new(gdt as u64) };
    // SAFETY: 1. the GDT is a static, valid for the rest of the run, and
    // complete (the TSS slots were filled above); 2. the far return loads CS
    // with its ring-0 64-bit code descriptor and continues at the next
    // instruction, on the same stack; 3. DS, ES and SS get its ring-0 data
    // descriptor; 4. TR gets the TSS descriptor, which `ltr` marks busy (it
    // was available, as `ltr` requires).
    unsafe {
        asm!(
            "lgdt [{pointer}]",
            "push {cs}",
            "lea {tmp}, [rip + 2f]",
            "push {tmp}",
            "retfq", // lretq in AT&T spelling: REX.W far return
            "2:",
            "mov ds, {ds:e}",
            "mov es, {ds:e}",
            "mov ss, {ds:e}",
            "ltr {tss:x}",
            pointer = in(reg) &pointer,
            cs = const KERNEL_CS as u64,
            tmp = out(reg) _,
            ds = in(reg) u32::from(KERNEL_DS),
            tss = in(reg) TSS_SELECTOR,
            options(preserves_flags),
        );
    }
}

/// Sets TSS.RSP0: the stack the CPU switches to when an interrupt,
/// exception or `int n` arrives while ring 3 runs. (`syscall` does not
/// switch stacks; its entry code must.) Under trap-and-emulate the
/// hypervisor reads RSP0 from this TSS in memory when it delivers such an
/// event, so a plain store is enough, as on hardware.
pub fn set_kernel_stack(top: u64) {
    let tss = &raw mut TSS;
    // SAFETY: one CPU with interrupts off in ring 0: the CPU reads RSP0 only
    // when an event arrives in ring 3, never during this store.
    unsafe { (*tss).privilege_stack_table[0] = VirtAddr::new(top) };
}

/// The kernel stack last set with [`set_kernel_stack`] (0 before that).
pub fn kernel_stack() -> u64 {
    let tss = &raw const TSS;
    // SAFETY: as in `set_kernel_stack`: nothing writes the TSS concurrently.
    unsafe { (*tss).privilege_stack_table[0].as_u64() }
}

/// The descriptor in GDT slot `slot` (selector `slot * 8`), as loaded;
/// `None` past the table's end.
pub fn descriptor(slot: usize) -> Option<u64> {
    let gdt = &raw const GDT;
    // SAFETY: a read of the static table; only `init` writes it, before
    // `main` runs, on this one CPU.
    unsafe { (*gdt).get(slot).copied() }
}

/// The GDT's base address and limit, as `lgdt` loaded them (what `sgdt`
/// shows when nothing intercepts it).
pub fn table() -> DescriptorTablePointer {
    let gdt = &raw const GDT;
    DescriptorTablePointer { limit: (size_of::<[u64; GDT_SLOTS]>() - 1) as u16, base: VirtAddr::new(gdt as u64) }
}
