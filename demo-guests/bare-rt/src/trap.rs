//! The way in for every interrupt and exception: 256 stubs, one common
//! path, one Rust dispatcher.
//!
//! When a vector arrives, the CPU pushes the interrupted SS, RSP, RFLAGS,
//! CS and RIP (switching first to TSS.RSP0 if it came from ring 3), and for
//! some exceptions an error code. Each vector's stub makes the stack look
//! the same for all of them, pushing a zero error code where the CPU pushed
//! none, then the vector number. The common path saves the 15 general
//! registers and the x87/SSE state (`fxsave64`: a handler is compiled Rust
//! and may use SSE registers that the interrupted code was using), and
//! calls `dispatch` with a pointer to the whole [`TrapFrame`].
//!
//! The handler registered for the vector (see
//! [`idt::set_handler`](crate::idt::set_handler)) may read and change the
//! frame; the common path then restores whatever the frame holds and
//! returns with `iretq`. Replacing the frame with another one saved earlier
//! is a context switch: that is how a kernel's scheduler can switch between
//! user processes from its timer handler.
//!
//! A vector without a handler gets the default: a one-line report
//! (`unhandled exception: page fault (#PF, vector 14), error code 0x2,
//! rip=..., cr2=...`) and [`exit`](crate::exit()) with
//! [`status::EXCEPTION`].

use core::sync::atomic::{AtomicUsize, Ordering};

use crate::{cpu, exit, println, status};

/// The x87/SSE state as `fxsave64` stores it (512 bytes, 16-byte aligned).
#[derive(Clone, Copy)]
#[repr(C, align(16))]
pub struct FpuState(pub [u8; 512]);

impl FpuState {
    /// The state after `fninit` and `ldmxcsr` with the default MXCSR: what a
    /// new user process should start with.
    pub const fn initial() -> Self {
        let mut bytes = [0u8; 512];
        // FCW = 0x037f (all x87 exceptions masked, 64-bit precision).
        bytes[0] = 0x7f;
        bytes[1] = 0x03;
        // MXCSR = 0x1f80 at offset 24.
        let mxcsr = crate::start::MXCSR_DEFAULT.to_le_bytes();
        bytes[24] = mxcsr[0];
        bytes[25] = mxcsr[1];
        bytes[26] = mxcsr[2];
        bytes[27] = mxcsr[3];
        FpuState(bytes)
    }
}

/// Everything the interrupted code had, as the entry path saved it (lowest
/// address first).
#[derive(Clone, Copy)]
#[repr(C, align(16))]
pub struct TrapFrame {
    /// The x87/SSE registers.
    pub fpu: FpuState,
    /// General registers, in the reverse order of their pushes.
    pub r15: u64,
    #[allow(missing_docs)]
    pub r14: u64,
    #[allow(missing_docs)]
    pub r13: u64,
    #[allow(missing_docs)]
    pub r12: u64,
    #[allow(missing_docs)]
    pub r11: u64,
    #[allow(missing_docs)]
    pub r10: u64,
    #[allow(missing_docs)]
    pub r9: u64,
    #[allow(missing_docs)]
    pub r8: u64,
    #[allow(missing_docs)]
    pub rbp: u64,
    #[allow(missing_docs)]
    pub rdi: u64,
    #[allow(missing_docs)]
    pub rsi: u64,
    #[allow(missing_docs)]
    pub rdx: u64,
    #[allow(missing_docs)]
    pub rcx: u64,
    #[allow(missing_docs)]
    pub rbx: u64,
    #[allow(missing_docs)]
    pub rax: u64,
    /// The vector (pushed by the stub).
    pub vector: u64,
    /// The CPU's error code, or 0 for vectors without one.
    pub error_code: u64,
    /// Where the interrupted code resumes.
    pub rip: u64,
    /// Its code selector (RPL = the ring it ran in).
    pub cs: u64,
    /// Its flags.
    pub rflags: u64,
    /// Its stack pointer.
    pub rsp: u64,
    /// Its stack selector.
    pub ss: u64,
}

const _: () = assert!(core::mem::size_of::<TrapFrame>() == 512 + 22 * 8);
const _: () = assert!(core::mem::offset_of!(TrapFrame, vector) == 512 + 15 * 8);

impl TrapFrame {
    /// Whether the interrupted code ran in ring 3.
    pub fn from_user(&self) -> bool {
        self.cs & 3 == 3
    }
}

/// A Rust handler for one vector.
pub type Handler = fn(&mut TrapFrame);

/// Size of each stub in the stub table (checked by the assembler's `.org`).
const STUB_SIZE: usize = 16;

extern "C" {
    /// The 256 stubs, [`STUB_SIZE`] bytes apart: stub `v` handles vector `v`.
    static trap_stubs: [u8; 256 * STUB_SIZE];
}

/// The address of vector `vector`'s stub (for its IDT gate).
pub fn stub_address(vector: u8) -> u64 {
    (&raw const trap_stubs) as u64 + u64::from(vector) * STUB_SIZE as u64
}

core::arch::global_asm!(
    r#"
    .pushsection .text.bare_rt_traps, "ax", @progbits
    .p2align 4
    .globl trap_stubs
trap_stubs:
    .set bare_rt_vector, 0
    .rept 256
    .p2align 4
    /* The CPU pushes an error code for these exceptions only. */
    .if bare_rt_vector == 8 || (bare_rt_vector >= 10 && bare_rt_vector <= 14) || bare_rt_vector == 17 || bare_rt_vector == 21 || bare_rt_vector == 29 || bare_rt_vector == 30
    .else
    push 0
    .endif
    push bare_rt_vector
    jmp trap_common
    .set bare_rt_vector, bare_rt_vector + 1
    .endr
    /* Every stub takes at least STUB_SIZE bytes, so one that is longer
       pushes the end past this point, and the assembler refuses to move
       `.org` backwards. */
    .org trap_stubs + 256 * {stub_size}

trap_common:
    cld
    push rax
    push rbx
    push rcx
    push rdx
    push rsi
    push rdi
    push rbp
    push r8
    push r9
    push r10
    push r11
    push r12
    push r13
    push r14
    push r15
    /* 5 + 2 + 15 quadwords = 176 bytes; the CPU aligned the stack to 16
       before its pushes, so it is still aligned here. */
    sub rsp, 512
    fxsave64 [rsp]
    mov rdi, rsp
    call {dispatch}
    fxrstor64 [rsp]
    add rsp, 512
    pop r15
    pop r14
    pop r13
    pop r12
    pop r11
    pop r10
    pop r9
    pop r8
    pop rbp
    pop rdi
    pop rsi
    pop rdx
    pop rcx
    pop rbx
    pop rax
    add rsp, 16                 /* vector, error code */
    iretq
    .popsection
"#,
    stub_size = const STUB_SIZE,
    dispatch = sym dispatch,
);

/// The registered handlers, as `fn` addresses (0: none).
static HANDLERS: [AtomicUsize; 256] = [const { AtomicUsize::new(0) }; 256];

/// Registers `handler` for `vector` (replacing any earlier one).
pub(crate) fn register(vector: u8, handler: Handler) {
    HANDLERS[usize::from(vector)].store(handler as usize, Ordering::Relaxed);
}

/// Called by the common path with the frame it built.
///
/// # Safety
///
/// `frame` points at a complete [`TrapFrame`] on the current stack that
/// nothing else references until this returns.
unsafe extern "C" fn dispatch(frame: *mut TrapFrame) {
    // SAFETY: the common path built the frame just below its stack pointer
    // and passes its only reference (this function's contract).
    let frame = unsafe { &mut *frame };
    let vector = (frame.vector & 0xff) as usize;
    let address = HANDLERS[vector].load(Ordering::Relaxed);
    if address == 0 {
        unhandled(frame);
    }
    // SAFETY: only `register` stores into HANDLERS, and it stores `Handler`
    // values; `fn` pointers are never 0, so a non-zero entry is one of them.
    let handler: Handler = unsafe { core::mem::transmute::<usize, Handler>(address) };
    handler(frame);
}

/// The name and mnemonic of exception `vector`, if it is one.
pub fn exception_name(vector: u64) -> Option<(&'static str, &'static str)> {
    Some(match vector {
        0 => ("divide error", "#DE"),
        1 => ("debug", "#DB"),
        2 => ("non-maskable interrupt", "NMI"),
        3 => ("breakpoint", "#BP"),
        4 => ("overflow", "#OF"),
        5 => ("bound range exceeded", "#BR"),
        6 => ("invalid opcode", "#UD"),
        7 => ("device not available", "#NM"),
        8 => ("double fault", "#DF"),
        9 => ("coprocessor segment overrun", "#MF"),
        10 => ("invalid TSS", "#TS"),
        11 => ("segment not present", "#NP"),
        12 => ("stack fault", "#SS"),
        13 => ("general protection", "#GP"),
        14 => ("page fault", "#PF"),
        16 => ("x87 floating-point error", "#MF"),
        17 => ("alignment check", "#AC"),
        18 => ("machine check", "#MC"),
        19 => ("SIMD floating-point error", "#XM"),
        20 => ("virtualization exception", "#VE"),
        21 => ("control protection", "#CP"),
        28 => ("hypervisor injection", "#HV"),
        29 => ("VMM communication", "#VC"),
        30 => ("security exception", "#SX"),
        _ => return None,
    })
}

/// The default for a vector without a handler: a report of the frame (the
/// vector's name, error code, RIP, CR2 for a page fault, the main
/// registers), then [`exit`](crate::exit()) with [`status::EXCEPTION`]. A
/// handler that meets a case it does not handle can end the same way.
pub fn unhandled(frame: &TrapFrame) -> ! {
    let ring = frame.cs & 3;
    match exception_name(frame.vector) {
        Some((name, mnemonic)) => {
            print_report(format_args!("unhandled exception: {name} ({mnemonic}, vector {})", frame.vector), frame, ring);
        }
        None => print_report(format_args!("unhandled interrupt: vector {}", frame.vector), frame, ring),
    }
    exit(status::EXCEPTION)
}

fn print_report(what: core::fmt::Arguments<'_>, frame: &TrapFrame, ring: u64) {
    if frame.vector == 14 {
        println!(
            "{what}, error code {:#x}, rip={:#x} (ring {ring}), cr2={:#x}",
            frame.error_code,
            frame.rip,
            cpu::read_cr2()
        );
    } else {
        println!("{what}, error code {:#x}, rip={:#x} (ring {ring})", frame.error_code, frame.rip);
    }
    println!(
        "  rax={:#x} rbx={:#x} rcx={:#x} rdx={:#x} rsi={:#x} rdi={:#x} rsp={:#x} rflags={:#x}",
        frame.rax, frame.rbx, frame.rcx, frame.rdx, frame.rsi, frame.rdi, frame.rsp, frame.rflags
    );
}
