//! Entering user mode and coming back: the paravirtualized `run_user`.
//!
//! The hypervisor delivers a user process's `syscall`, each of its
//! exceptions and the timer event to one entry point, [`entry`] below,
//! with `rsp` at a [`TrapFrame`] it pushed on the trap stack (registered
//! with `stack_switch`). Instead of calling a handler there, the entry
//! saves the process's registers into its [`UserContext`] and *returns
//! from* [`enter`], the function that started the process: the kernel's
//! stack pointer was saved when it did. So, seen from the kernel, `enter`
//! runs the process until its next trap and returns which one it was.
//!
//! ```text
//!   enter(ctx):  push callee-saved; save rsp; build a TrapFrame from ctx
//!                on the trap stack; fxrstor; load registers;
//!                events on (upcall_mask = 0); iret hypercall ----------+
//!                                                                      | user mode
//!   entry:       events off (upcall_mask = 1); store registers and     |
//!                the frame's rax/rcx/r11/rip/rflags/rsp into ctx;  <---+
//!                fxsave; note vector, error code, cr2; rsp = saved;
//!                pop callee-saved; ret               (enter returns)
//! ```
//!
//! The guest kernel runs with event upcalls masked (the paravirtualized
//! `cli`), except from the instant it unmasks them to the `iret` that
//! enters user mode. An upcall that lands in that window (or in the one
//! the hypervisor leaves between a bounce and the entry's first
//! instruction) finds `FROM_USER` clear: the entry then only notes that
//! the timer fired, unmasks, and returns to where it was with `iret`.
//! Any other trap in kernel mode is a kernel bug and panics.
//!
//! What the native build does the same way (storing and loading the
//! registers a context holds, `enter`'s callee-saved registers) is written
//! once in [`workload_core::context_asm`]; what is left here is the
//! paravirtualized way in and out.

use core::cell::UnsafeCell;

use parvus_guest_sdk::hypercall_abi::trap::{frame_flags, TrapFrame, VECTOR_EVENT};
use parvus_guest_sdk::hypercall_abi::{decode_result, Hypercall, HypercallError};
use parvus_guest_sdk::trap::vector_name;
use workload_core::context::{UserContext, MXCSR_DEFAULT};

/// What the assembly shares with Rust. Offsets are used by the assembly.
#[repr(C)]
struct TrapState {
    /// +0: the kernel's `rsp` inside `enter`.
    kernel_rsp: u64,
    /// +8: the context being run.
    context: u64,
    /// +16: the vector of the last trap (or `VECTOR_SYSCALL`, `VECTOR_EVENT`).
    vector: u64,
    /// +24: its error code.
    error_code: u64,
    /// +32: its faulting address (page faults).
    cr2: u64,
    /// +40: address of `upcall_mask` in the shared-info page.
    mask_byte: u64,
    /// +48: set when an upcall arrived in kernel mode.
    tick_seen: u64,
    /// +56: `mxcsr` for the kernel.
    mxcsr: u64,
}

struct StateCell(UnsafeCell<TrapState>);

// SAFETY: the domain has one vCPU, and the state is only touched by the
// assembly (while no Rust code runs) and by `enter`/`take_*` in between
// traps, never concurrently.
unsafe impl Sync for StateCell {}

static STATE: StateCell = StateCell(UnsafeCell::new(TrapState {
    kernel_rsp: 0,
    context: 0,
    vector: 0,
    error_code: 0,
    cr2: 0,
    mask_byte: 0,
    tick_seen: 0,
    mxcsr: MXCSR_DEFAULT as u64,
}));

/// Size of the trap stack: a trap frame, or an upcall frame below it.
const TRAP_STACK_SIZE: usize = 16 * 1024;

#[repr(C, align(16))]
struct TrapStack(UnsafeCell<[u8; TRAP_STACK_SIZE]>);

// SAFETY: only the hypervisor (pushing frames) and the assembly use it,
// as a stack, never through Rust references.
unsafe impl Sync for TrapStack {}

static TRAP_STACK: TrapStack = TrapStack(UnsafeCell::new([0; TRAP_STACK_SIZE]));

/// The top of the trap stack (for `stack_switch`).
pub fn trap_stack_top() -> u64 {
    TRAP_STACK.0.get() as u64 + TRAP_STACK_SIZE as u64
}

/// Where the hypervisor puts the frame of a trap from user mode (just
/// below the top, 16-aligned), and where `enter` builds its own.
fn frame_slot() -> u64 {
    (trap_stack_top() - core::mem::size_of::<TrapFrame>() as u64) & !15
}

workload_core::user_context_asm!(
    ".pushsection .text.workload_pv_trap, \"ax\", @progbits",
    // ---- entry: every trap, system call and upcall --------------------
    ".globl workload_pv_entry",
    ".type workload_pv_entry, @function",
    ".p2align 4",
    "workload_pv_entry:",
    "test byte ptr [rsp + {f_flags}], {from_user}",
    "jz 3f",
    // From user mode; rax is free (the frame holds it).
    "mov rax, qword ptr [rip + {state} + 40]",
    "mov byte ptr [rax], 1",
    "mov rax, qword ptr [rip + {state} + 8]",
    workload_core::store_user_registers!("rax"),
    "mov rbx, [rsp + {f_rax}]",
    "mov [rax + {rax}], rbx",
    "mov rbx, [rsp + {f_r11}]",
    "mov [rax + {r11}], rbx",
    "mov rbx, [rsp + {f_rcx}]",
    "mov [rax + {rcx}], rbx",
    "mov rbx, [rsp + {f_rip}]",
    "mov [rax + {rip}], rbx",
    "mov rbx, [rsp + {f_rflags}]",
    "mov [rax + {rflags}], rbx",
    "mov rbx, [rsp + {f_rsp}]",
    "mov [rax + {rsp}], rbx",
    "fxsave64 [rax + {fpu}]",
    "fninit",
    "ldmxcsr [rip + {state} + 56]",
    "mov rbx, [rsp + {f_vector}]",
    "mov [rip + {state} + 16], rbx",
    "mov rbx, [rsp + {f_error}]",
    "mov [rip + {state} + 24], rbx",
    "mov rbx, [rsp + {f_cr2}]",
    "mov [rip + {state} + 32], rbx",
    "mov rsp, [rip + {state}]",
    workload_core::pop_callee_saved_and_return!(),
    // From kernel mode: an upcall in the window, or a kernel bug.
    "3:",
    "cmp qword ptr [rsp + {f_vector}], {vector_event}",
    "jne 4f",
    "mov rax, qword ptr [rip + {state} + 40]",
    "mov byte ptr [rax], 0",
    "mov qword ptr [rip + {state} + 48], 1",
    "mov eax, {iret}",
    "syscall",
    "jmp 5f",
    "4:",
    "mov rdi, rsp",
    "and rsp, -16",
    "call {kernel_trap}",
    "ud2",
    "5:",
    "mov rdi, rax",
    "and rsp, -16",
    "call {iret_refused}",
    "ud2",
    ".size workload_pv_entry, . - workload_pv_entry",
    // ---- enter(context, frame): run a process until its next trap -----
    ".globl workload_pv_enter",
    ".type workload_pv_enter, @function",
    ".p2align 4",
    "workload_pv_enter:",
    workload_core::push_callee_saved!(),
    "mov [rip + {state}], rsp",
    "mov [rip + {state} + 8], rdi",
    "mov rax, [rdi + {rax}]",
    "mov [rsi + {f_rax}], rax",
    "mov rax, [rdi + {r11}]",
    "mov [rsi + {f_r11}], rax",
    "mov rax, [rdi + {rcx}]",
    "mov [rsi + {f_rcx}], rax",
    "mov qword ptr [rsi + {f_flags}], {from_user}",
    "mov rax, [rdi + {rip}]",
    "mov [rsi + {f_rip}], rax",
    "mov rax, [rdi + {rflags}]",
    "mov [rsi + {f_rflags}], rax",
    "mov rax, [rdi + {rsp}]",
    "mov [rsi + {f_rsp}], rax",
    "fxrstor64 [rdi + {fpu}]",
    "mov rsp, rsi",
    workload_core::load_user_registers!("rdi"),
    "mov rax, qword ptr [rip + {state} + 40]",
    "mov byte ptr [rax], 0",
    "mov rdi, [rdi + {rdi}]",
    "mov eax, {iret}",
    "syscall",
    "mov rdi, rax",
    "and rsp, -16",
    "call {iret_refused}",
    "ud2",
    ".size workload_pv_enter, . - workload_pv_enter",
    ".popsection",
    ;
    state = sym STATE,
    kernel_trap = sym kernel_trap,
    iret_refused = sym iret_refused,
    iret = const Hypercall::Iret as u64,
    vector_event = const VECTOR_EVENT,
    from_user = const frame_flags::FROM_USER,
    f_rax = const core::mem::offset_of!(TrapFrame, rax),
    f_r11 = const core::mem::offset_of!(TrapFrame, r11),
    f_rcx = const core::mem::offset_of!(TrapFrame, rcx),
    f_vector = const core::mem::offset_of!(TrapFrame, vector),
    f_error = const core::mem::offset_of!(TrapFrame, error_code),
    f_cr2 = const core::mem::offset_of!(TrapFrame, cr2),
    f_flags = const core::mem::offset_of!(TrapFrame, flags),
    f_rip = const core::mem::offset_of!(TrapFrame, rip),
    f_rflags = const core::mem::offset_of!(TrapFrame, rflags),
    f_rsp = const core::mem::offset_of!(TrapFrame, rsp),
);

const _: () = {
    use core::mem::offset_of;
    assert!(offset_of!(TrapState, kernel_rsp) == 0);
    assert!(offset_of!(TrapState, context) == 8);
    assert!(offset_of!(TrapState, vector) == 16);
    assert!(offset_of!(TrapState, error_code) == 24);
    assert!(offset_of!(TrapState, cr2) == 32);
    assert!(offset_of!(TrapState, mask_byte) == 40);
    assert!(offset_of!(TrapState, tick_seen) == 48);
    assert!(offset_of!(TrapState, mxcsr) == 56);
};

extern "C" {
    /// The entry stub above (only its address is used).
    fn workload_pv_entry();
    /// Runs `context` in user mode until its next trap (see the module docs).
    fn workload_pv_enter(context: *mut UserContext, frame: u64);
}

/// Address of the entry stub, for the trap table and `set_callbacks`.
pub fn entry_address() -> u64 {
    workload_pv_entry as *const () as u64
}

/// Tells the assembly where `upcall_mask` is (once, before any trap).
pub fn set_mask_byte(address: u64) {
    // SAFETY: no trap is being handled and no process runs yet, so nothing
    // else accesses the state (see `StateCell`).
    unsafe { (*STATE.0.get()).mask_byte = address };
}

/// A trap as the entry noted it.
pub struct RawTrap {
    /// The frame's vector.
    pub vector: u64,
    /// Its error code.
    pub error_code: u64,
    /// Its faulting address.
    pub cr2: u64,
    /// Whether an upcall arrived in kernel mode meanwhile.
    pub tick_seen: bool,
}

/// Runs `context` in user mode until its next trap. The user page tables
/// must be loaded and every queued change sent.
pub fn enter(context: &mut UserContext) -> RawTrap {
    // SAFETY: 1. `workload_pv_enter` follows the C calling convention: it
    // saves and restores the callee-saved registers and returns to us,
    // through the entry stub, once the process traps. 2. `context` is
    // exclusively borrowed for the call, 16-aligned as `fxrstor`/`fxsave`
    // need, and the stubs write exactly a `UserContext` into it. 3. The
    // frame slot lies inside the trap stack, used by nothing else while
    // no trap is being handled.
    unsafe { workload_pv_enter(context, frame_slot()) };
    // SAFETY: the process trapped and the stubs are done with the state;
    // nothing else touches it until the next `enter` (see `StateCell`).
    let state = unsafe { &mut *STATE.0.get() };
    let tick_seen = core::mem::take(&mut state.tick_seen) != 0;
    RawTrap { vector: state.vector, error_code: state.error_code, cr2: state.cr2, tick_seen }
}

/// Called by the entry for a trap in kernel mode that is not an upcall.
extern "C" fn kernel_trap(frame: &TrapFrame) -> ! {
    panic!(
        "workload-pv: {} (vector {}, error code {:#x}) in the kernel at rip {:#x}, cr2 {:#x}",
        vector_name(frame.vector),
        frame.vector,
        frame.error_code,
        frame.rip,
        frame.cr2
    )
}

/// Called by the stubs when the `iret` hypercall returned (it only does
/// to refuse the frame).
extern "C" fn iret_refused(rax: u64) -> ! {
    let error = decode_result(rax).err().unwrap_or(HypercallError::Unrecognized);
    panic!("workload-pv: the iret hypercall refused the frame: {error}")
}
