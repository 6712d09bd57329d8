//! `boot-shim`: runs an unmodified Parvus kernel natively under QEMU.
//!
//! An unmodified ("bare-metal") kernel expects to be entered in 64-bit
//! ring 0 on an identity map with a [`BootInfo`] in `rdi` (the boot
//! contract, [`hypercall_abi::bare_metal`]). Under the hypervisor's
//! trap-and-emulate mode the hypervisor provides that state; natively this
//! shim does, so the very same ELF runs both ways:
//!
//! ```text
//! qemu-system-x86_64 -machine microvm ... -kernel boot-shim -initrd <kernel ELF> -append <cmdline>
//! ```
//!
//! QEMU boots the shim through its PVH note ([`entry`]); the shim reads
//! QEMU's start-info block ([`start_info`]: module 0 is the kernel ELF, the
//! command line, the memory map), checks the kernel and copies its segments
//! into place ([`load`]), fills in the [`BootInfo`] and jumps to the
//! kernel. Everything the shim owns (code, page tables, GDT, BootInfo,
//! stacks) lies between 1 MiB and 2 MiB, in the loader's area the kernel
//! does not load into; the kernel may reuse it once it has its own tables.
//!
//! If there is no kernel or it breaks the contract, the shim prints one
//! line, `boot-shim: error: ...`, and exits with status 3 ([`console`]).
#![no_std]
#![no_main]
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

// `memcpy` and the other C-library symbols the prebuilt `core` calls,
// shared with the hypervisor, the guest SDK and bare-rt (see that crate).
extern crate parvus_intrinsics;

mod console;
mod entry;
mod load;
mod panic;
mod start_info;

use hypercall_abi::bare_metal::{BootInfo, BOOT_INFO_MAGIC, BOOT_INFO_VERSION, LOADER_NAME_MAX};

use crate::entry::Stack;
use crate::load::Kernel;

/// The name the kernel finds in [`BootInfo::loader`].
const LOADER_NAME: &[u8] = b"boot-shim";
const _: () = assert!(LOADER_NAME.len() <= LOADER_NAME_MAX);

/// Size of the stack the kernel starts on (the contract's 16 KiB).
const KERNEL_STACK_SIZE: usize = 16 * 1024;

/// The kernel's boot stack, in the loader's area.
static mut KERNEL_STACK: Stack<KERNEL_STACK_SIZE> = Stack([0; KERNEL_STACK_SIZE]);

/// The BootInfo handed to the kernel, in the loader's area.
static mut BOOT_INFO: BootInfo = BootInfo {
    magic: 0,
    version: 0,
    cmdline_len: 0,
    mem_bytes: 0,
    loader: [0; LOADER_NAME_MAX],
    cmdline: [0; hypercall_abi::bare_metal::BOOT_CMDLINE_MAX],
};

/// Called by the entry assembly, on the shim's stack, in 64-bit mode.
///
/// # Safety
///
/// `start_info` is the address QEMU passed in `ebx`; the shim's identity map
/// is active; called once.
unsafe extern "C" fn shim_main(start_info: u64) -> ! {
    console::init();
    // SAFETY: this function's contract.
    let info = unsafe { start_info::read(start_info) }.unwrap_or_else(|e| console::fail(e));
    let module = info.kernel.clone();
    // SAFETY: QEMU placed the module at this range in RAM, identity-mapped
    // (the map covers the first GiB, and QEMU keeps the initrd below the
    // RAM size, at most what the map covers); nothing writes it while the
    // shim reads it, and loading never overwrites it (checked).
    let file = unsafe { core::slice::from_raw_parts(module.start as *const u8, (module.end - module.start) as usize) };
    let kernel = Kernel::check(file, module, info.mem_bytes).unwrap_or_else(|e| console::fail(e));
    // SAFETY: the identity map covers the first GiB, writable, and the
    // checks put every segment in RAM above the shim and off the module.
    unsafe { kernel.load() };

    let boot_info = &raw mut BOOT_INFO;
    // SAFETY: the only reference to BOOT_INFO, on the only CPU, before the
    // kernel (its next user) runs.
    unsafe {
        let b = &mut *boot_info;
        b.magic = BOOT_INFO_MAGIC;
        b.version = BOOT_INFO_VERSION;
        b.mem_bytes = info.mem_bytes;
        b.loader[..LOADER_NAME.len()].copy_from_slice(LOADER_NAME);
        b.cmdline = info.cmdline;
        b.cmdline_len = info.cmdline_len as u32;
    }
    let stack_top = (&raw const KERNEL_STACK) as u64 + KERNEL_STACK_SIZE as u64;
    // SAFETY: the kernel is loaded and checked (its entry is in one of its
    // executable segments), BOOT_INFO is filled in, and the stack is
    // 16-byte aligned; the shim's tables and GDT stay where they are.
    unsafe { entry::enter_kernel(kernel.entry, boot_info as u64, stack_top) }
}
