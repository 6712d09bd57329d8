//! Entering user mode and coming back: the native `run_user`.
//!
//! A user process leaves user mode three ways, and each lands in assembly
//! here that stores its registers into the [`UserContext`] being run and
//! then *returns from* [`enter`], the function that started it (its stack
//! pointer was saved in the per-CPU area). Seen from the kernel, `enter`
//! runs the process until its next trap and returns which one it was.
//!
//! - `syscall` jumps to the LSTAR entry with interrupts off (SFMASK clears
//!   IF) and the user's `rsp` still loaded. `swapgs` makes GS point at the
//!   per-CPU area (KERNEL_GS_BASE held it), which holds the context pointer
//!   and the kernel stack pointer to return on.
//! - An exception or the timer interrupt (IRQ 0 through the remapped PIC,
//!   vector 32) makes the CPU switch to TSS.RSP0 and push the user's SS,
//!   RSP, RFLAGS, CS, RIP (and an error code for some exceptions). A stub
//!   per vector evens out the error code, pushes the vector, and the
//!   common path does the rest. A fault *in the kernel* (CS shows ring 0)
//!   is sent on to bare-rt's stub for the vector, which reports it and
//!   ends the kernel: it is a bug.
//!
//! Back to user mode: after a system call the context is marked
//! [`resume::AFTER_SYSCALL`] and `sysretq` returns (it reloads RIP from
//! RCX and RFLAGS from R11, which `syscall` had clobbered anyway);
//! otherwise `iretq` restores everything exactly.
//!
//! The kernel keeps its own x87/SSE control state: after `fxsave64` of the
//! user's state the entry does `fninit` and loads the default MXCSR, so
//! whatever a process set there never leaks into the kernel.
//!
//! Privileged instructions here: `swapgs`, `sysretq`, `iretq` (and, in
//! [`init`], `wrmsr`/`rdmsr` through bare-rt).
//!
//! What the paravirtualized build does the same way (storing and loading
//! the registers a context holds, `enter`'s callee-saved registers) is
//! written once in [`workload_core::context_asm`]; what is left here is
//! the native way in and out.

use core::cell::UnsafeCell;

use bare_rt::cpu::{self, EFER_SCE, MSR_EFER, MSR_GS_BASE, MSR_KERNEL_GS_BASE, MSR_LSTAR, MSR_SFMASK, MSR_STAR};
use bare_rt::gdt::{self, KERNEL_CS, KERNEL_DS, USER_CS, USER_DS};
use bare_rt::idt;
use bare_rt::pic::IRQ_BASE;
use workload_core::context::{resume, UserContext, MXCSR_DEFAULT};
use x86_64::PrivilegeLevel;

/// The vector [`enter`] reports for a system call (beyond the IDT's 256).
pub const VECTOR_SYSCALL: u64 = 0x100;

/// The timer's vector (IRQ 0).
pub const VECTOR_TIMER: u8 = IRQ_BASE;

/// Vectors routed to this module's stubs: the exceptions and IRQ 0.
const STUB_VECTORS: u8 = VECTOR_TIMER + 1;

/// The vector of IRQ 7, which the 8259 raises for a *spurious* interrupt
/// (a request that went away before it was acknowledged).
const VECTOR_SPURIOUS: u8 = IRQ_BASE + 7;

/// Size of each stub (checked by the assembler's `.org`).
const STUB_SIZE: u64 = 32;

/// RFLAGS bits `syscall` clears: TF, IF, DF, NT, AC (the kernel runs with
/// interrupts off and the direction flag clear).
const SFMASK: u64 = (1 << 8) | (1 << 9) | (1 << 10) | (1 << 14) | (1 << 18);

/// The per-CPU area GS points at in the kernel (offsets used by the assembly).
#[repr(C)]
struct PerCpu {
    /// +0: the kernel's `rsp` inside `enter`.
    kernel_rsp: u64,
    /// +8: the context being run.
    context: u64,
    /// +16: scratch for the entries.
    scratch: u64,
    /// +24: the vector of the last trap ([`VECTOR_SYSCALL`] for a system call).
    vector: u64,
    /// +32: its error code.
    error_code: u64,
    /// +40: `mxcsr` for the kernel.
    mxcsr: u64,
}

const _: () = {
    use core::mem::offset_of;
    assert!(offset_of!(PerCpu, kernel_rsp) == 0);
    assert!(offset_of!(PerCpu, context) == 8);
    assert!(offset_of!(PerCpu, scratch) == 16);
    assert!(offset_of!(PerCpu, vector) == 24);
    assert!(offset_of!(PerCpu, error_code) == 32);
    assert!(offset_of!(PerCpu, mxcsr) == 40);
};

struct PerCpuCell(UnsafeCell<PerCpu>);

// SAFETY: one CPU; the area is touched by the assembly (while no Rust code
// runs) and by `enter` between traps, never concurrently.
unsafe impl Sync for PerCpuCell {}

static PER_CPU: PerCpuCell =
    PerCpuCell(UnsafeCell::new(PerCpu { kernel_rsp: 0, context: 0, scratch: 0, vector: 0, error_code: 0, mxcsr: MXCSR_DEFAULT as u64 }));

/// Size of the stack the CPU switches to on an interrupt from user mode
/// (only the hardware frame and the stub's two words ever go there).
const INTERRUPT_STACK_SIZE: usize = 4096;

#[repr(C, align(16))]
struct InterruptStack(UnsafeCell<[u8; INTERRUPT_STACK_SIZE]>);

// SAFETY: only the CPU (pushing frames) and the stubs use it, as a stack.
unsafe impl Sync for InterruptStack {}

static INTERRUPT_STACK: InterruptStack = InterruptStack(UnsafeCell::new([0; INTERRUPT_STACK_SIZE]));

workload_core::user_context_asm!(
    ".pushsection .text.workload_entry, \"ax\", @progbits",
    // ---- one stub per vector 0..=32 ------------------------------------
    ".p2align 5",
    ".globl workload_trap_stubs",
    "workload_trap_stubs:",
    ".set wl_vector, 0",
    ".rept {stub_vectors}",
    ".p2align 5",
    ".if wl_vector == 8 || (wl_vector >= 10 && wl_vector <= 14) || wl_vector == 17 || wl_vector == 21 || wl_vector == 29 || wl_vector == 30",
    "test byte ptr [rsp + 16], 3",
    "jnz 1f",
    "jmp trap_stubs + wl_vector * 16",
    "1:",
    ".else",
    "test byte ptr [rsp + 8], 3",
    "jnz 1f",
    "jmp trap_stubs + wl_vector * 16",
    "1:",
    "push 0",
    ".endif",
    "push wl_vector",
    "jmp workload_user_trap",
    ".set wl_vector, wl_vector + 1",
    ".endr",
    ".org workload_trap_stubs + {stub_vectors} * {stub_size}",
    // ---- an exception or interrupt from user mode ----------------------
    // [rsp]: vector, error code, rip, cs, rflags, rsp, ss.
    "workload_user_trap:",
    "swapgs",
    "mov qword ptr gs:[16], rax",
    "mov rax, qword ptr gs:[8]",
    workload_core::store_user_registers!("rax"),
    "mov [rax + {rcx}], rcx",
    "mov [rax + {r11}], r11",
    "mov rbx, qword ptr gs:[16]",
    "mov [rax + {rax}], rbx",
    "mov rbx, [rsp + 16]",
    "mov [rax + {rip}], rbx",
    "mov rbx, [rsp + 32]",
    "mov [rax + {rflags}], rbx",
    "mov rbx, [rsp + 40]",
    "mov [rax + {rsp}], rbx",
    "mov qword ptr [rax + {resume}], {resume_full}",
    "fxsave64 [rax + {fpu}]",
    "fninit",
    "ldmxcsr dword ptr gs:[40]",
    "mov rbx, [rsp]",
    "mov qword ptr gs:[24], rbx",
    "mov rbx, [rsp + 8]",
    "mov qword ptr gs:[32], rbx",
    "jmp 3f",
    // ---- syscall from user mode (LSTAR) --------------------------------
    ".p2align 4",
    ".globl workload_syscall_entry",
    "workload_syscall_entry:",
    "swapgs",
    "mov qword ptr gs:[16], rsp",
    "mov rsp, qword ptr gs:[8]",
    "mov [rsp + {rax}], rax",
    workload_core::store_user_registers!("rsp"),
    "mov [rsp + {rcx}], rcx",
    "mov [rsp + {r11}], r11",
    "mov [rsp + {rip}], rcx",
    "mov [rsp + {rflags}], r11",
    "mov rax, qword ptr gs:[16]",
    "mov [rsp + {rsp}], rax",
    "mov qword ptr [rsp + {resume}], {resume_syscall}",
    "fxsave64 [rsp + {fpu}]",
    "fninit",
    "ldmxcsr dword ptr gs:[40]",
    "mov qword ptr gs:[24], {vector_syscall}",
    // ---- both: back into `enter`'s caller --------------------------------
    "3:",
    "mov rsp, qword ptr gs:[0]",
    workload_core::pop_callee_saved_and_return!(),
    // ---- enter(context): run a process until its next trap -------------
    ".p2align 4",
    ".globl workload_enter",
    "workload_enter:",
    workload_core::push_callee_saved!(),
    "mov qword ptr gs:[0], rsp",
    "mov qword ptr gs:[8], rdi",
    "fxrstor64 [rdi + {fpu}]",
    "cmp qword ptr [rdi + {resume}], {resume_syscall}",
    "je 4f",
    "push {user_ds}",
    "push qword ptr [rdi + {rsp}]",
    "push qword ptr [rdi + {rflags}]",
    "push {user_cs}",
    "push qword ptr [rdi + {rip}]",
    "mov rax, [rdi + {rax}]",
    "mov rcx, [rdi + {rcx}]",
    "mov r11, [rdi + {r11}]",
    workload_core::load_user_registers!("rdi"),
    "mov rdi, [rdi + {rdi}]",
    "swapgs",
    "iretq",
    "4:",
    "mov rcx, [rdi + {rip}]",
    "mov r11, [rdi + {rflags}]",
    "mov rax, [rdi + {rax}]",
    workload_core::load_user_registers!("rdi"),
    "mov rsp, [rdi + {rsp}]",
    "mov rdi, [rdi + {rdi}]",
    "swapgs",
    "sysretq",
    ".popsection",
    ;
    stub_vectors = const STUB_VECTORS,
    stub_size = const STUB_SIZE,
    vector_syscall = const VECTOR_SYSCALL,
    resume_full = const resume::FULL,
    resume_syscall = const resume::AFTER_SYSCALL,
    user_ds = const USER_DS,
    user_cs = const USER_CS,
);

extern "C" {
    /// The per-vector stubs above (only their addresses are used).
    static workload_trap_stubs: [u8; STUB_VECTORS as usize * STUB_SIZE as usize];
    /// The `syscall` entry above.
    fn workload_syscall_entry();
    /// Runs `context` in user mode until its next trap (see the module docs).
    fn workload_enter(context: *mut UserContext);
}

/// Points `syscall`, every exception and IRQ 0 at this module's entries
/// (and the spurious IRQ 7 at nothing), the TSS at the interrupt stack,
/// and GS at the per-CPU area.
pub fn init() {
    let stubs = (&raw const workload_trap_stubs) as u64;
    for vector in 0..STUB_VECTORS {
        let stub = stubs + u64::from(vector) * STUB_SIZE;
        // SAFETY: stub `vector` expects exactly the frame the CPU pushes for
        // this vector (it evens out the error code), hands a kernel-mode
        // fault to bare-rt's own stub for the vector unchanged, and from
        // user mode never returns to the frame but to `enter`'s caller.
        unsafe {
            let entry: unsafe extern "C" fn() = core::mem::transmute::<u64, unsafe extern "C" fn()>(stub);
            idt::set_gate(vector, entry, PrivilegeLevel::Ring0);
        }
    }
    // A spurious IRQ 7 needs no end of interrupt and means nothing: bare-rt's
    // common path runs the empty handler and returns (it touches no GS).
    idt::set_handler(VECTOR_SPURIOUS, idt::ignore, PrivilegeLevel::Ring0);
    gdt::set_kernel_stack(INTERRUPT_STACK.0.get() as u64 + INTERRUPT_STACK_SIZE as u64);
    let star = (u64::from(KERNEL_DS) << 48) | (u64::from(KERNEL_CS) << 32);
    // SAFETY: 1. EFER exists on every x86_64 CPU and only SCE is added. 2.
    // STAR holds bare-rt's selectors, laid out for syscall/sysret (its GDT
    // module checks that). 3. LSTAR is the entry above, which switches to
    // the kernel's state before touching memory. 4. SFMASK turns off IF,
    // so no interrupt arrives before the entry has switched stacks. 5. GS
    // bases: the kernel runs with GS at the per-CPU area, user mode with 0;
    // every entry and exit above does `swapgs` once.
    unsafe {
        cpu::wrmsr(MSR_EFER, cpu::rdmsr(MSR_EFER) | EFER_SCE);
        cpu::wrmsr(MSR_STAR, star);
        cpu::wrmsr(MSR_LSTAR, workload_syscall_entry as *const () as u64);
        cpu::wrmsr(MSR_SFMASK, SFMASK);
        cpu::wrmsr(MSR_GS_BASE, PER_CPU.0.get() as u64);
        cpu::wrmsr(MSR_KERNEL_GS_BASE, 0);
    }
}

/// A trap as the entries noted it.
pub struct RawTrap {
    /// The vector ([`VECTOR_SYSCALL`] for a system call).
    pub vector: u64,
    /// The error code (0 if none).
    pub error_code: u64,
}

/// Runs `context` in user mode, in the active address space, until its
/// next trap.
pub fn enter(context: &mut UserContext) -> RawTrap {
    // SAFETY: 1. `workload_enter` follows the C calling convention: it
    // saves the callee-saved registers and returns to us, through one of
    // the entries, once the process traps; interrupts stay off in the
    // kernel (IF is set only in the user's RFLAGS). 2. `context` is
    // exclusively borrowed for the call, 16-aligned as `fxrstor64`/
    // `fxsave64` need, and the entries write exactly a `UserContext` into
    // it. 3. Its RIP and RSP come from the kernel logic (a program entry,
    // the stack top, or a saved trap), and its CS/SS are forced to
    // bare-rt's ring-3 selectors, so it can only run user code.
    unsafe { workload_enter(context) };
    // SAFETY: the process trapped and the entries are done with the area;
    // nothing touches it until the next `enter` (see `PerCpuCell`).
    let per_cpu = unsafe { &*PER_CPU.0.get() };
    RawTrap { vector: per_cpu.vector, error_code: per_cpu.error_code }
}
