//! The privileged instructions, one small function each.
//!
//! Every function here is one instruction of the list in the crate docs
//! ("what an unmodified kernel may execute"), so that a reader can see at a
//! glance what the hypervisor must emulate when the kernel runs in ring 3.
//! The segment and descriptor-table instructions live with their tables in
//! [`crate::gdt`] and [`crate::idt`].
//!
//! Functions that can break memory safety (changing page tables, control
//! registers, MSRs, device state, or enabling interrupts) are `unsafe` and
//! say what the caller promises.

use core::arch::asm;

/// CR0.MP: `wait`/`fwait` honour TS (set for SSE).
pub const CR0_MP: u64 = 1 << 1;
/// CR0.EM: no x87 unit (must be clear for SSE).
pub const CR0_EM: u64 = 1 << 2;
/// CR0.TS: task switched, the next FPU/SSE instruction faults (kept clear).
pub const CR0_TS: u64 = 1 << 3;
/// CR0.WP: ring 0 honours read-only pages.
pub const CR0_WP: u64 = 1 << 16;
/// CR0.PG: paging.
pub const CR0_PG: u64 = 1 << 31;
/// CR4.OSFXSR: the OS saves SSE state with `fxsave` (enables SSE).
pub const CR4_OSFXSR: u64 = 1 << 9;
/// CR4.OSXMMEXCPT: SSE exceptions are reported as #XM.
pub const CR4_OSXMMEXCPT: u64 = 1 << 10;

/// The EFER MSR (long mode, NX, `syscall`).
pub const MSR_EFER: u32 = 0xc000_0080;
/// EFER.SCE: `syscall`/`sysret` enabled.
pub const EFER_SCE: u64 = 1 << 0;
/// EFER.NXE: the no-execute page bit is honoured.
pub const EFER_NXE: u64 = 1 << 11;
/// The STAR MSR: `syscall`/`sysret` selector bases.
pub const MSR_STAR: u32 = 0xc000_0081;
/// The LSTAR MSR: the 64-bit `syscall` entry point.
pub const MSR_LSTAR: u32 = 0xc000_0082;
/// The SFMASK MSR: RFLAGS bits `syscall` clears.
pub const MSR_SFMASK: u32 = 0xc000_0084;
/// The kernel GS base that `swapgs` exchanges with GS.base.
pub const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
/// The GS base.
pub const MSR_GS_BASE: u32 = 0xc000_0101;

/// RFLAGS.IF: maskable interrupts enabled.
pub const RFLAGS_IF: u64 = 1 << 9;

/// Reads a byte from an I/O port (`in al, dx`).
///
/// # Safety
///
/// Reading some device registers has side effects (it acknowledges or
/// consumes data); the caller owns the device behind `port`.
pub unsafe fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: the caller owns the device; `in` touches no memory.
    unsafe { asm!("in al, dx", in("dx") port, out("al") value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Writes a byte to an I/O port (`out dx, al`).
///
/// # Safety
///
/// The caller owns the device behind `port`, and the write leaves it in a
/// state the rest of the kernel expects (a device may write memory or raise
/// interrupts as a result).
pub unsafe fn outb(port: u16, value: u8) {
    // SAFETY: the caller owns the device; `out` touches no memory.
    unsafe { asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags)) };
}

/// Reads CR0.
pub fn read_cr0() -> u64 {
    let value: u64;
    // SAFETY: reading CR0 has no side effect.
    unsafe { asm!("mov {}, cr0", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Writes CR0.
///
/// # Safety
///
/// The new value keeps protected mode, paging and the SSE set-up the running
/// code relies on.
pub unsafe fn write_cr0(value: u64) {
    // SAFETY: the caller keeps the CPU in a mode this code can run in.
    unsafe { asm!("mov cr0, {}", in(reg) value, options(nostack, preserves_flags)) };
}

/// Reads CR2: the address of the last page fault.
pub fn read_cr2() -> u64 {
    let value: u64;
    // SAFETY: reading CR2 has no side effect.
    unsafe { asm!("mov {}, cr2", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Reads CR3: the physical address of the current top-level page table.
pub fn read_cr3() -> u64 {
    let value: u64;
    // SAFETY: reading CR3 has no side effect.
    unsafe { asm!("mov {}, cr3", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Writes CR3: switches address spaces (and flushes non-global TLB entries).
///
/// # Safety
///
/// `value` is the physical address of a valid PML4 that maps the running
/// code, its stack and everything the kernel touches next, as the kernel
/// expects them.
pub unsafe fn write_cr3(value: u64) {
    // SAFETY: the caller guarantees the new tables map the running kernel.
    unsafe { asm!("mov cr3, {}", in(reg) value, options(nostack, preserves_flags)) };
}

/// Reads CR4.
pub fn read_cr4() -> u64 {
    let value: u64;
    // SAFETY: reading CR4 has no side effect.
    unsafe { asm!("mov {}, cr4", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Writes CR4.
///
/// # Safety
///
/// The new value keeps PAE (long mode) and the SSE bits the running code
/// relies on.
pub unsafe fn write_cr4(value: u64) {
    // SAFETY: the caller keeps the features this code relies on.
    unsafe { asm!("mov cr4, {}", in(reg) value, options(nostack, preserves_flags)) };
}

/// Reads a model-specific register.
///
/// # Safety
///
/// `msr` exists on this CPU (reading a missing one raises #GP).
pub unsafe fn rdmsr(msr: u32) -> u64 {
    let (low, high): (u32, u32);
    // SAFETY: the caller guarantees the MSR exists; reading has no side effect.
    unsafe { asm!("rdmsr", in("ecx") msr, out("eax") low, out("edx") high, options(nomem, nostack, preserves_flags)) };
    u64::from(low) | (u64::from(high) << 32)
}

/// Writes a model-specific register.
///
/// # Safety
///
/// `msr` exists, `value` is valid for it, and the change (entry points,
/// segment bases, paging features) is one the kernel is ready for.
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: the caller guarantees the MSR and its new value are sound.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32, options(nostack, preserves_flags))
    };
}

/// Reads the time-stamp counter (under `-icount`, the instruction count).
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC only reads the counter.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Runs `cpuid` for `leaf` and `subleaf`.
pub fn cpuid(leaf: u32, subleaf: u32) -> core::arch::x86_64::CpuidResult {
    core::arch::x86_64::__cpuid_count(leaf, subleaf)
}

/// Drops the TLB entry of the page holding `addr` (`invlpg`), after a change
/// to its page-table entry.
pub fn invlpg(addr: u64) {
    // SAFETY: invalidating a TLB entry only makes the CPU re-read the page
    // tables; it cannot make any mapping appear that the tables do not hold.
    unsafe { asm!("invlpg [{}]", in(reg) addr, options(nostack, preserves_flags)) };
}

/// Disables maskable interrupts (`cli`).
pub fn cli() {
    // SAFETY: turning interrupts off is always sound (ring-0 code runs so).
    // Without `nomem`, this is also a compiler barrier: memory accesses stay
    // on their side of it.
    unsafe { asm!("cli", options(nostack)) };
}

/// Enables maskable interrupts (`sti`).
///
/// # Safety
///
/// Every vector that may arrive has a handler in the IDT, and the code that
/// runs until the next [`cli`] is ready to be interrupted.
pub unsafe fn sti() {
    // SAFETY: the caller guarantees the kernel is ready for interrupts.
    unsafe { asm!("sti", options(nostack)) };
}

/// Waits for an interrupt with interrupts on, then turns them off again:
/// `sti; hlt; cli`. The handler of the interrupt that wakes the CPU runs
/// before this returns. (`sti` takes effect only after the next
/// instruction, so an interrupt cannot slip in between `sti` and `hlt` and
/// leave the CPU halted with nothing to wake it.)
pub fn idle() {
    // SAFETY: the runtime's IDT gives every vector a gate (a default report
    // for those without a handler), so any interrupt is handled; the
    // handlers run on this stack below `rsp` (no red zone in this build) and
    // may write memory, which `asm!` without `nomem` allows for.
    unsafe { asm!("sti", "hlt", "cli", options(nostack)) };
}

/// Halts until the next interrupt, with interrupts as they are (`hlt`); with
/// them off, forever.
pub fn hlt() {
    // SAFETY: halting changes no state.
    unsafe { asm!("hlt", options(nomem, nostack, preserves_flags)) };
}

/// Exchanges GS.base with the kernel GS base MSR (`swapgs`).
///
/// # Safety
///
/// The caller keeps track of which base is live: code that reads `gs:`
/// after this sees the other one.
pub unsafe fn swapgs() {
    // SAFETY: the caller tracks which GS base is live.
    unsafe { asm!("swapgs", options(nomem, nostack, preserves_flags)) };
}

/// Reads RFLAGS (`pushfq; pop`). Under trap-and-emulate IF here is the real
/// one (set), not the kernel's virtual IF: this is one of the
/// Popek-Goldberg holes.
pub fn rflags() -> u64 {
    let value: u64;
    // SAFETY: pushes one quadword on the stack and pops it again.
    unsafe { asm!("pushfq", "pop {}", out(reg) value, options(nomem, preserves_flags)) };
    value
}
