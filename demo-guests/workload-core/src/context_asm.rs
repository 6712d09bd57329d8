//! The assembly both platforms use to fill and empty a [`UserContext`].
//!
//! Each platform leaves and enters user mode its own way: natively with
//! `syscall`, the CPU's interrupt frames, `sysretq` and `iretq`;
//! paravirtualized with the hypervisor's trap frame and the `iret`
//! hypercall. That part is privileged, or stands in for what is, and stays
//! in each platform's entry file (`workload/src/entry.rs`,
//! `workload-pv/src/trap.rs`). Between the way out and the way back in,
//! both do the same thing, and that is what these macros write once:
//!
//! - `enter(context)` is a C function that saves the kernel's callee-saved
//!   registers ([`push_callee_saved!`](crate::push_callee_saved!)) and its stack pointer, and runs
//!   the process; the entry code of the next trap stores the process's
//!   registers into its context ([`store_user_registers!`](crate::store_user_registers!)), switches back
//!   to the saved stack pointer and *returns from* `enter`
//!   ([`pop_callee_saved_and_return!`](crate::pop_callee_saved_and_return!)). Seen from the kernel, `enter`
//!   runs the process until its next trap.
//! - On the way back in, the registers come out of the context again
//!   ([`load_user_registers!`](crate::load_user_registers!)) just before the final `sysretq`, `iretq`
//!   or `iret` hypercall.
//!
//! The store and load macros cover the general registers that no way in
//! or out treats specially: all but `rax` (the entries need one free
//! register to address the context), `rcx` and `r11` (`syscall` and
//! `sysretq` use them for RIP and RFLAGS; the hypervisor keeps the
//! process's in its trap frame), and, for loads, `rdi` (which holds the
//! context's address until the very last load) and `rsp`. Each path adds
//! those in its own way.
//!
//! They expand to assembly text for [`user_context_asm!`](crate::user_context_asm!), a
//! `global_asm!` that also supplies the offsets of the context's fields
//! ([`offset`](crate::context::offset)) as named operands, so the text
//! can say `mov [rax + {rbx}], rbx` with `{rbx}` the byte offset of
//! `regs.rbx`.
//!
//! [`UserContext`]: crate::UserContext

/// `global_asm!` with the [`UserContext`](crate::UserContext) offsets as
/// named operands.
///
/// The templates come first, then a `;`, then the caller's own operands,
/// each followed by a comma (or none). The templates may use `{rax}`,
/// `{rbx}`, `{rcx}`, `{rdx}`, `{rsi}`, `{rdi}`, `{rbp}`, `{r8}` to `{r15}`,
/// `{rip}`, `{rflags}`, `{rsp}`, `{resume}` and `{fpu}`: the byte offsets
/// of those fields in a context ([`offset`](crate::context::offset)).
///
/// ```ignore
/// workload_core::user_context_asm!(
///     ".globl my_entry",
///     "my_entry:",
///     workload_core::store_user_registers!("rax"),
///     "mov [rax + {rcx}], rcx",
///     "jmp {next}",
///     ;
///     next = sym next,
/// );
/// ```
#[macro_export]
macro_rules! user_context_asm {
    ($($template:expr),+ $(,)? ; $($operands:tt)*) => {
        ::core::arch::global_asm!(
            $($template),+,
            // `global_asm!` refuses an operand that no template names, and
            // not every platform needs every offset: this comment names
            // them all.
            "/* UserContext: rax {rax} rbx {rbx} rcx {rcx} rdx {rdx} rsi {rsi} rdi {rdi} rbp {rbp} r8 {r8} r9 {r9} r10 {r10} r11 {r11} r12 {r12} r13 {r13} r14 {r14} r15 {r15} rip {rip} rflags {rflags} rsp {rsp} resume {resume} fpu {fpu} */",
            $($operands)*
            rax = const $crate::context::offset::RAX,
            rbx = const $crate::context::offset::RBX,
            rcx = const $crate::context::offset::RCX,
            rdx = const $crate::context::offset::RDX,
            rsi = const $crate::context::offset::RSI,
            rdi = const $crate::context::offset::RDI,
            rbp = const $crate::context::offset::RBP,
            r8 = const $crate::context::offset::R8,
            r9 = const $crate::context::offset::R9,
            r10 = const $crate::context::offset::R10,
            r11 = const $crate::context::offset::R11,
            r12 = const $crate::context::offset::R12,
            r13 = const $crate::context::offset::R13,
            r14 = const $crate::context::offset::R14,
            r15 = const $crate::context::offset::R15,
            rip = const $crate::context::offset::RIP,
            rflags = const $crate::context::offset::RFLAGS,
            rsp = const $crate::context::offset::RSP,
            resume = const $crate::context::offset::RESUME,
            fpu = const $crate::context::offset::FPU,
        );
    };
}

/// Assembly for [`user_context_asm!`](crate::user_context_asm!): stores `rbx`, `rdx`, `rsi`, `rdi`,
/// `rbp` and `r8`-`r10`, `r12`-`r15` into the context whose address is in
/// register `$base` (see the module docs for the other four).
#[macro_export]
macro_rules! store_user_registers {
    ($base:literal) => {
        concat!(
            "mov [", $base, " + {rbx}], rbx\n",
            "mov [", $base, " + {rdx}], rdx\n",
            "mov [", $base, " + {rsi}], rsi\n",
            "mov [", $base, " + {rdi}], rdi\n",
            "mov [", $base, " + {rbp}], rbp\n",
            "mov [", $base, " + {r8}], r8\n",
            "mov [", $base, " + {r9}], r9\n",
            "mov [", $base, " + {r10}], r10\n",
            "mov [", $base, " + {r12}], r12\n",
            "mov [", $base, " + {r13}], r13\n",
            "mov [", $base, " + {r14}], r14\n",
            "mov [", $base, " + {r15}], r15",
        )
    };
}

/// Assembly for [`user_context_asm!`](crate::user_context_asm!): loads `rbx`, `rdx`, `rsi`, `rbp`
/// and `r8`-`r10`, `r12`-`r15` from the context whose address is in
/// register `$base` (see the module docs for the others).
#[macro_export]
macro_rules! load_user_registers {
    ($base:literal) => {
        concat!(
            "mov rbx, [", $base, " + {rbx}]\n",
            "mov rdx, [", $base, " + {rdx}]\n",
            "mov rsi, [", $base, " + {rsi}]\n",
            "mov rbp, [", $base, " + {rbp}]\n",
            "mov r8, [", $base, " + {r8}]\n",
            "mov r9, [", $base, " + {r9}]\n",
            "mov r10, [", $base, " + {r10}]\n",
            "mov r12, [", $base, " + {r12}]\n",
            "mov r13, [", $base, " + {r13}]\n",
            "mov r14, [", $base, " + {r14}]\n",
            "mov r15, [", $base, " + {r15}]",
        )
    };
}

/// Assembly: the start of `enter`, which pushes the registers the C
/// calling convention makes it keep for its caller (`rbx`, `rbp`,
/// `r12`-`r15`). The entry of the next trap ends with
/// [`pop_callee_saved_and_return!`](crate::pop_callee_saved_and_return!) on the same stack.
#[macro_export]
macro_rules! push_callee_saved {
    () => {
        "push rbx\npush rbp\npush r12\npush r13\npush r14\npush r15"
    };
}

/// Assembly: with `rsp` back where [`push_callee_saved!`](crate::push_callee_saved!) left it, pops
/// those registers and returns from `enter` to its caller.
#[macro_export]
macro_rules! pop_callee_saved_and_return {
    () => {
        "pop r15\npop r14\npop r13\npop r12\npop rbp\npop rbx\nret"
    };
}
