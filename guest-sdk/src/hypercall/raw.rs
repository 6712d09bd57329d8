//! The `syscall` instruction that enters the hypervisor, and nothing else.
//!
//! One function per argument count, following the register convention of
//! [`hypercall_abi`]: the number in `rax`, arguments in `rdi`, `rsi`, `rdx`,
//! `r10`, `r8`, `r9`, the result back in `rax`; `syscall` itself overwrites
//! `rcx` (return address) and `r11` (saved flags). Every other register is
//! preserved by the hypervisor, so the compiler may keep values in them
//! across the call. The hypervisor never touches the guest stack, hence
//! `nostack`. Memory is *not* declared untouched: hypercalls read and write
//! guest buffers.
//!
//! These functions are `unsafe` because a hypercall may write guest memory
//! through a pointer argument; the safe wrappers in
//! [`hypercall`](crate::hypercall) are what guests normally use.

use core::arch::asm;

use hypercall_abi::error::MAX_ERROR_CODE;
use hypercall_abi::{decode_result, Hypercall, HypercallError};

/// Turns `rax` into a `Result`. The success test is written out so that the
/// common path is one compare inlined at every call site; only errors take
/// the out-of-line [`decode_result`].
#[inline(always)]
fn decode(rax: u64) -> Result<u64, HypercallError> {
    if rax < MAX_ERROR_CODE.wrapping_neg() {
        Ok(rax)
    } else {
        decode_result(rax)
    }
}

macro_rules! hypercall_fn {
    ($(#[$doc:meta])* $name:ident($($arg:ident => $reg:tt),*)) => {
        $(#[$doc])*
        ///
        /// # Safety
        ///
        /// Any memory the hypervisor writes on behalf of `call` (through a
        /// pointer argument) must be memory Rust allows to change behind its
        /// back: not borrowed by live references, and valid for whatever the
        /// hypervisor stores there. Calls that take no writable pointer are
        /// always safe.
        #[inline(always)]
        pub unsafe fn $name(call: Hypercall $(, $arg: u64)*) -> Result<u64, HypercallError> {
            let rax: u64;
            // SAFETY: `syscall` transfers to the hypervisor, which follows
            // the register convention described in the module comment (so
            // the operand list is complete) and only touches memory the
            // caller vouched for in this function's contract.
            unsafe {
                asm!(
                    "syscall",
                    inlateout("rax") call as u64 => rax,
                    $(in($reg) $arg,)*
                    lateout("rcx") _,
                    lateout("r11") _,
                    options(nostack),
                );
            }
            decode(rax)
        }
    };
}

hypercall_fn!(
    /// A hypercall with no arguments.
    hypercall0()
);
hypercall_fn!(
    /// A hypercall with one argument (`rdi`).
    hypercall1(a0 => "rdi")
);
hypercall_fn!(
    /// A hypercall with two arguments (`rdi`, `rsi`).
    hypercall2(a0 => "rdi", a1 => "rsi")
);
hypercall_fn!(
    /// A hypercall with three arguments (`rdi`, `rsi`, `rdx`).
    hypercall3(a0 => "rdi", a1 => "rsi", a2 => "rdx")
);
hypercall_fn!(
    /// A hypercall with four arguments (`rdi`, `rsi`, `rdx`, `r10`).
    hypercall4(a0 => "rdi", a1 => "rsi", a2 => "rdx", a3 => "r10")
);
hypercall_fn!(
    /// A hypercall with five arguments (`rdi`, `rsi`, `rdx`, `r10`, `r8`).
    hypercall5(a0 => "rdi", a1 => "rsi", a2 => "rdx", a3 => "r10", a4 => "r8")
);
hypercall_fn!(
    /// A hypercall with six arguments (`rdi`, `rsi`, `rdx`, `r10`, `r8`, `r9`).
    hypercall6(a0 => "rdi", a1 => "rsi", a2 => "rdx", a3 => "r10", a4 => "r8", a5 => "r9")
);

/// The `exit` hypercall. If the hypervisor ever returned from it, the `ud2`
/// after the `syscall` raises an invalid-opcode fault, so the domain is
/// stopped with a crash report instead of running on.
pub fn exit(status: u64) -> ! {
    // SAFETY: `exit` takes no pointer, so the hypervisor writes no guest
    // memory; control never comes back to Rust (the `ud2` fault ends the
    // domain if it somehow did), which is what `noreturn` promises.
    unsafe {
        asm!(
            "syscall",
            "ud2",
            in("rax") Hypercall::Exit as u64,
            in("rdi") status,
            options(noreturn, nostack),
        );
    }
}
