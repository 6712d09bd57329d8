//! The fuzzer's three ways into the hypervisor: any number with six
//! arguments, `iret` from a frame it built, and a `bench_floor`
//! measurement ended at once.

use core::arch::asm;

use parvus_guest_sdk::hypercall_abi::Hypercall;

/// TF, DF and AC: what a successful `iret` may leave set that the code
/// after it must not run with.
const CLEAR_AFTER_IRET: u64 = !((1 << 8) | (1 << 10) | (1 << 18));

/// `syscall` with `rax = number` and six arguments; returns `rax`.
///
/// # Safety
///
/// Whatever the call does to memory and mappings must leave the fuzzer's
/// own code, stack and data as they were: the generators guarantee it by
/// the rules of [`crate::space`].
pub unsafe fn call(number: u64, args: [u64; 6]) -> u64 {
    let rax: u64;
    // SAFETY: the register convention of the ABI (every register but rax,
    // rcx and r11 preserved); memory is the caller's contract.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") number => rax,
            in("rdi") args[0],
            in("rsi") args[1],
            in("rdx") args[2],
            in("r10") args[3],
            in("r8") args[4],
            in("r9") args[5],
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    rax
}

/// `iret` with `rsp` at `frame`. With `resume_here`, the frame's `rip` is
/// first set to the instruction after the `syscall`, which is also where
/// a refused `iret` returns: either way execution goes on here, `rsp` is
/// put back and the flags an accepted frame may set (TF excepted, which
/// the generator never sets) are cleared. Returns `rax`: the frame's
/// `rax` if it was accepted, an error otherwise.
///
/// # Safety
///
/// `frame` must be in the arena when `resume_here` is set (the frame's
/// `rip` is written there), and a frame the hypervisor could accept must
/// have its `rip` here and no TF: then whatever the frame says, the fuzzer
/// resumes right after the call with its own stack.
pub unsafe fn iret(frame: u64, resume_here: bool) -> u64 {
    let rax: u64;
    // SAFETY: r12 keeps the stack pointer across the call (the hypervisor
    // preserves it, and `iret` does not load it); the frame's `rip` slot
    // (offset 56) is written only in the arena (the caller's contract);
    // the stack is used only after `rsp` is put back.
    unsafe {
        asm!(
            "test {resume}, {resume}",
            "jz 2f",
            "lea {tmp}, [rip + 3f]",
            "mov [{frame} + 56], {tmp}",
            "2:",
            "mov r12, rsp",
            "mov rsp, {frame}",
            "syscall",
            "3:",
            "mov rsp, r12",
            "pushfq",
            "and qword ptr [rsp], {clear}",
            "popfq",
            resume = in(reg) u64::from(resume_here),
            frame = in(reg) frame,
            tmp = out(reg) _,
            clear = in(reg) CLEAR_AFTER_IRET,
            inlateout("rax") Hypercall::Iret as u64 => rax,
            out("r12") _,
            // Not `lateout`: an input placed there would be lost to the `syscall`.
            out("rcx") _,
            out("r11") _,
        );
    }
    rax
}

/// `bench_floor`, then one `syscall` with `rax = probe` on the floor path,
/// then the `int3` that ends the measurement. Returns what `bench_floor`
/// returned and what the probe returned (its `rax` unchanged, if the
/// floor path did nothing), or `None` for the probe when `bench_floor`
/// failed (then neither the probe nor the `int3` is made).
pub fn bench_floor(probe: u64) -> (u64, Option<u64>) {
    let (floor, seen): (u64, u64);
    let mut made: u64;
    // SAFETY: `bench_floor` and the floor path write no memory; the `int3`
    // that ends the measurement returns to the next instruction with every
    // register as it was (the hypervisor's contract for `bench_floor`); it
    // is made only when `bench_floor` succeeded, so it never reaches a trap
    // handler.
    unsafe {
        asm!(
            "syscall",
            "mov {floor}, rax",
            "xor {made:e}, {made:e}",
            "test rax, rax",
            "jnz 2f",
            "mov rax, {probe}",
            "syscall",
            "int3",
            "mov {made:e}, 1",
            "2:",
            floor = out(reg) floor,
            made = out(reg) made,
            probe = in(reg) probe,
            inlateout("rax") Hypercall::BenchFloor as u64 => seen,
            // Not `lateout`: `probe` must not be placed where the first
            // `syscall` overwrites it.
            out("rcx") _,
            out("r11") _,
            options(nostack),
        );
    }
    (floor, (made != 0).then_some(seen))
}
