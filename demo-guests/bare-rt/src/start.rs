//! How a kernel starts: from the loader's jump to `main`.
//!
//! The loader (the boot shim natively, the hypervisor under
//! trap-and-emulate) jumps to the ELF entry point `_start` in 64-bit ring 0
//! with interrupts off, `rdi` holding the address of the [`BootInfo`] and
//! `rsp` on a small stack in the loader's area (see
//! [`hypercall_abi::bare_metal`]). `_start`, in assembly because no Rust may
//! run before it is done:
//!
//! 1. enables SSE, which the contract leaves to the kernel and compiled
//!    Rust uses freely: CR0.MP set, CR0.EM and CR0.TS clear,
//!    CR4.OSFXSR and CR4.OSXMMEXCPT set; then puts the x87 and SSE units in
//!    their default state (`fninit`, and `ldmxcsr` with [`MXCSR_DEFAULT`]);
//! 2. zeroes `.bss` (`__bss_start`..`__bss_end`, from `kernel.ld`). The
//!    loader zero-fills it already, as ELF requires; doing it again costs a
//!    few thousand instructions and makes the kernel independent of that;
//! 3. switches to the runtime's own 64 KiB stack in `.bss`, because the
//!    loader's stack is in the loader's area, which the kernel may reuse;
//! 4. calls `rust_start` with the [`BootInfo`] address.
//!
//! `rust_start` sets up COM1, checks the [`BootInfo`] (a bad one is reported
//! and the kernel exits with [`status::BAD_BOOT_INFO`]) and copies it into
//! the image (the original lives in the loader's area too), loads the GDT,
//! the TSS and the IDT, remaps and masks the PICs, and calls the kernel's
//! `main` (registered with [`entry!`](crate::entry!)); the status `main`
//! returns goes to [`exit`](crate::exit()).

use core::fmt;

use hypercall_abi::bare_metal::{BOOT_INFO_MAGIC, BOOT_INFO_VERSION};
use spin::Once;

use crate::cpu::{CR0_EM, CR0_MP, CR0_TS, CR4_OSFXSR, CR4_OSXMMEXCPT};
use crate::{exit, gdt, idt, pic, println, serial, status, BootInfo};

/// The power-on value of `mxcsr`: every SSE exception masked, round to
/// nearest, no flush-to-zero.
pub const MXCSR_DEFAULT: u32 = 0x1f80;

/// Size of the stack `main` runs on.
pub const STACK_SIZE: usize = 64 * 1024;

/// The runtime's stack, in `.bss`.
#[repr(C, align(16))]
struct Stack([u8; STACK_SIZE]);

/// Only `_start` uses it, by address.
static mut STACK: Stack = Stack([0; STACK_SIZE]);

core::arch::global_asm!(
    ".pushsection .text._start, \"ax\", @progbits",
    ".globl _start",
    ".type _start, @function",
    "_start:",
    "cld",
    // Keep the BootInfo address; `rep stosb` below needs rdi.
    "mov r12, rdi",
    // 1. SSE.
    "mov rax, cr0",
    "and rax, {cr0_clear}",
    "or rax, {cr0_set}",
    "mov cr0, rax",
    "mov rax, cr4",
    "or rax, {cr4_set}",
    "mov cr4, rax",
    "fninit",
    "push {mxcsr}",
    "ldmxcsr [rsp]",
    "add rsp, 8",
    // 2. bss (the new stack included: we are still on the loader's).
    "lea rdi, [rip + __bss_start]",
    "lea rcx, [rip + __bss_end]",
    "sub rcx, rdi",
    "xor eax, eax",
    "rep stosb",
    // 3. Our own stack, 16-byte aligned as the System V ABI wants at a call.
    "lea rsp, [rip + {stack} + {stack_size}]",
    "xor ebp, ebp",
    // 4. Rust.
    "mov rdi, r12",
    "call {rust_start}",
    // `rust_start` never returns; trap if it somehow did.
    "ud2",
    ".size _start, . - _start",
    ".popsection",
    cr0_clear = const !(CR0_EM | CR0_TS) as i64,
    cr0_set = const CR0_MP,
    cr4_set = const CR4_OSFXSR | CR4_OSXMMEXCPT,
    mxcsr = const MXCSR_DEFAULT,
    stack = sym STACK,
    stack_size = const STACK_SIZE,
    rust_start = sym rust_start,
);

extern "Rust" {
    /// Defined by the kernel's [`entry!`] invocation.
    fn __bare_rt_main(boot: &'static BootInfo) -> u8;
}

/// The kernel's copy of the [`BootInfo`], made before `main` runs.
static BOOT_INFO: Once<BootInfo> = Once::new();

/// The [`BootInfo`] the kernel was started with (the runtime's copy).
///
/// # Panics
///
/// If called before the runtime has checked it, which cannot happen from
/// `main` or anything it calls.
pub fn boot_info() -> &'static BootInfo {
    BOOT_INFO.get().expect("bare-rt copies the BootInfo before main runs")
}

/// Why the loader's [`BootInfo`] cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootInfoError {
    /// `rdi` was null or not 8-byte aligned.
    BadPointer(u64),
    /// The magic is not [`BOOT_INFO_MAGIC`]: not loaded by a Parvus loader.
    BadMagic(u64),
    /// A layout version this runtime does not know.
    BadVersion(u32),
}

impl fmt::Display for BootInfoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootInfoError::BadPointer(addr) => write!(f, "boot info pointer {addr:#x} is null or misaligned"),
            BootInfoError::BadMagic(magic) => {
                write!(f, "boot info magic is {magic:#x}, expected {BOOT_INFO_MAGIC:#x} (\"PRVSBOOT\")")
            }
            BootInfoError::BadVersion(v) => {
                write!(f, "boot info version is {v}, this runtime knows {BOOT_INFO_VERSION}")
            }
        }
    }
}

/// Checks the loader's [`BootInfo`] and copies it.
///
/// # Safety
///
/// `boot` is the value the loader put in `rdi`: null or misaligned (both
/// rejected), or the address of 312 readable bytes (the contract).
unsafe fn copy_boot_info(boot: *const BootInfo) -> Result<BootInfo, BootInfoError> {
    let addr = boot as u64;
    if boot.is_null() || !boot.is_aligned() {
        return Err(BootInfoError::BadPointer(addr));
    }
    // SAFETY: non-null, aligned and readable (the contract); every bit
    // pattern is a valid `BootInfo` (integers and byte arrays only).
    let info = unsafe { boot.read_volatile() };
    if info.magic != BOOT_INFO_MAGIC {
        return Err(BootInfoError::BadMagic(info.magic));
    }
    if info.version != BOOT_INFO_VERSION {
        return Err(BootInfoError::BadVersion(info.version));
    }
    Ok(info)
}

/// The Rust half of the entry code, called by `_start` only.
///
/// # Safety
///
/// Called once, by `_start`, with the loader's `rdi`, on the runtime's
/// stack, with SSE enabled and interrupts off.
unsafe extern "C" fn rust_start(boot: *const BootInfo) -> ! {
    serial::init();
    // SAFETY: `boot` is the loader's `rdi` (this function's contract).
    let info = match unsafe { copy_boot_info(boot) } {
        Ok(info) => BOOT_INFO.call_once(|| info),
        Err(error) => {
            println!("bare-rt: cannot start: {error}");
            exit(status::BAD_BOOT_INFO)
        }
    };
    gdt::init();
    idt::init();
    pic::init();
    // SAFETY: `entry!` defines `__bare_rt_main` with exactly this signature;
    // a kernel without `entry!` fails to link and never gets here.
    let exit_status = unsafe { __bare_rt_main(info) };
    exit(exit_status)
}

/// Declares the kernel's `main` function.
///
/// `main` receives the [`BootInfo`] (the runtime's copy, valid for ever) and
/// returns the exit status (`0` for success, see [`status`](crate::status)),
/// which the runtime passes to [`exit`](crate::exit()). When `main` runs,
/// `print!`/`println!`, the GDT, the TSS and the IDT are set up and the PICs
/// are masked; interrupts are off.
///
/// ```ignore
/// bare_rt::entry!(main);
///
/// fn main(boot: &'static bare_rt::BootInfo) -> u8 {
///     0
/// }
/// ```
///
/// The macro defines one function with a fixed symbol name that the
/// runtime's entry code calls; using it twice is a duplicate-symbol link
/// error, and forgetting it an undefined-symbol one.
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        /// The kernel's `main`, as the runtime's entry code calls it.
        #[doc(hidden)]
        #[no_mangle]
        pub fn __bare_rt_main(boot: &'static $crate::BootInfo) -> u8 {
            // Check the signature here, where a mismatch is a clear type error.
            let main: fn(&'static $crate::BootInfo) -> u8 = $main;
            main(boot)
        }
    };
}
