//! The ways into and out of the hypervisor: `syscall` and exceptions.
//!
//! ## Hypercalls
//! `syscall` lands at [`syscall_entry`] with interrupts off (SFMASK) and the
//! guest's stack still in `rsp`. The `null` hypercall (number 0) is answered
//! right there: `rax` is already 0, which encodes `Ok(0)`, so the fast lane is
//! `test`, `jnz`, `sysretq` and touches no memory. Every other number takes
//! the slow lane: `swapgs` to reach the per-CPU data, switch to the per-CPU
//! stack, build a [`GuestRegs`] frame at its top exactly like the one a fault
//! from ring 3 produces, save the x87/SSE state (Rust code may use SSE), and
//! call [`crate::trap::hypercall`].
//!
//! ## Exceptions
//! A fault in ring 3 makes the CPU push SS, RSP, RFLAGS, CS, RIP (and an
//! error code for some vectors) at TSS.RSP0, the same per-CPU stack top, so
//! the stubs below only add a zero error code where the CPU pushes none and
//! the vector, then share the hypercall path's frame building and call
//! [`crate::trap::guest_exception`]. A fault in ring 0 is a hypervisor bug:
//! the frame is built wherever the stack is and
//! [`crate::trap::hypervisor_fault`] reports it and stops the machine.
//!
//! ## Single-stepping
//! FMASK leaves TF alone (see `gdt::init`), so a `syscall` made with TF set
//! traps (#DB) right after it, in ring 0, on the first instruction of the
//! door, before that has touched anything. The #DB gate has its own IST
//! stack (the trap strikes on the guest's stack), and `debug_entry` sends
//! the door on its way without TF: the kernel door to its stepped copy,
//! whose slow lane calls [`crate::trap::stepped_hypercall`] (the guest is
//! owed a step after its hypercall), every other door to itself. So a
//! guest's TF costs the hypercall path nothing while it is clear. A #DB
//! from ring 3 (a guest's own step) is moved from the IST stack to the
//! per-CPU stack top and handled like any other exception, with the cause
//! (DR6.BS) as its error code.
//!
//! ## Back to a guest
//! Both paths leave through `return_to_guest`, which restores whatever frame
//! sits at the stack top (the handler may have replaced it with another
//! domain's) and `iretq`s. The same code starts a domain for the first time.

use super::percpu::{GUEST_FPU_OFFSET, SCRATCH_RSP_OFFSET, STACK_TOP_OFFSET};
use core::arch::global_asm;
use parvus_core::emulated::{REAL_CS, REAL_SS};
use parvus_core::system::Door;
use parvus_core::vcpu::{GuestRegs, GUEST_CS, GUEST_SS, VECTOR_SYSCALL};

/// Offset of CS in the frame as the exception stubs see it (vector, error code, RIP, CS).
const STUB_CS_OFFSET: usize = 24;
/// DR6 with no debug condition recorded (its reserved bits read as ones).
const DR6_RESET: u32 = 0xffff_0ff0;

extern "C" {
    /// The `syscall` target (LSTAR).
    pub fn syscall_entry();
    /// The bare `sysretq` used while a benchmark measures the floor.
    fn syscall_floor_entry();
    /// The `syscall` target while the guest is in its user mode.
    fn syscall_user_entry();
    /// The `syscall` target while an emulated kernel runs.
    fn syscall_emulated_entry();
    /// Restores the [`GuestRegs`] frame at `rsp` and returns to ring 3.
    fn return_to_guest_from(frame: *const GuestRegs) -> !;
    /// Addresses of the 32 exception stubs, by vector.
    pub static exception_stubs: [u64; 32];
    /// Entry of the APIC timer interrupt.
    pub fn timer_interrupt_stub();
    /// Entry of spurious APIC interrupts.
    pub fn spurious_interrupt_stub();
}

global_asm!(
    r#"
    .macro PUSH_GPRS
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
    .endm
    .macro POP_GPRS
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
    .endm

    /* The slow lane of every syscall door: switch to the per-CPU stack and
       build the GuestRegs frame a fault from ring 3 would build, with the
       selectors the guest runs on (`ss`, `cs`), then call the logic
       (`handler`). */
    .macro SYSCALL_FRAME ss, cs, handler
    swapgs
    mov gs:[{scratch}], rsp
    mov rsp, gs:[{stack_top}]
    push \ss
    push qword ptr gs:[{scratch}]
    push r11                               /* guest RFLAGS */
    push \cs
    push rcx                               /* guest RIP */
    push 0                                 /* error code */
    push {vector_syscall}
    PUSH_GPRS
    mov rax, gs:[{fpu}]                    /* rax is saved: free */
    fxsave64 [rax]
    mov rdi, rsp
    call \handler
    jmp return_to_guest
    .endm

    .section .text, "ax"
    .p2align 6
    .global syscall_entry
syscall_entry:
    test rax, rax
    jnz 1f
    sysretq                                /* null hypercall: rax = 0 = Ok(0) */
1:
    SYSCALL_FRAME {guest_ss}, {guest_cs}, {hypercall}

    /* Not a door: where a `syscall` through the kernel door continues
       after its single-step trap (debug_entry), without TF. The same two
       lanes; the fast one's `sysretq` restores TF from r11, and the CPU
       traps right after it, in ring 3, at the guest's next instruction,
       which is the step; the slow one owes the guest that step itself. */
    .p2align 6
syscall_stepped_entry:
    test rax, rax
    jnz 1f
    sysretq                                /* null hypercall: rax = 0 = Ok(0) */
1:
    SYSCALL_FRAME {guest_ss}, {guest_cs}, {stepped_hypercall}

    /* LSTAR points here while the guest is in its user mode: every syscall
       is a system call for the guest kernel, so there is no fast lane, and
       the logic has an entry of its own for it. */
    .p2align 6
    .global syscall_user_entry
syscall_user_entry:
    SYSCALL_FRAME {guest_ss}, {guest_cs}, {user_syscall}

    /* LSTAR points here while an emulated kernel runs: `syscall` is one of
       its instructions, emulated like any other, and the frame records the
       selectors it really runs on (GDT slots 14 and 15). */
    .p2align 6
    .global syscall_emulated_entry
syscall_emulated_entry:
    SYSCALL_FRAME {real_ss}, {real_cs}, {hypercall}

    /* The floor path (bench_floor): a syscall round trip that does nothing. */
    .p2align 6
    .global syscall_floor_entry
syscall_floor_entry:
    sysretq

    /* Entered with rsp at a complete GuestRegs frame and GS = per-CPU data. */
return_to_guest:
    mov rax, gs:[{fpu}]                    /* restored by POP_GPRS below */
    fxrstor64 [rax]
    POP_GPRS
    add rsp, 16                            /* vector, error code */
    swapgs
    iretq

    .global return_to_guest_from
return_to_guest_from:
    mov rsp, rdi
    jmp return_to_guest

    /* NMI, double fault and machine check are the machine's, not the
       guest's: their stubs come here, and they are reported as hypervisor
       faults, without trusting GS. */
machine_fault_common:
    push 2                                 /* known flags, as below */
    popfq
    jmp hypervisor_fault_common

exception_common:
    /* Known flags first: clear DF (the string instructions in memcpy),
       AC (SMAP), NT (iretq) and TF, whatever the guest left in them; its
       own RFLAGS are in the frame. */
    push 2
    popfq
    test byte ptr [rsp + {stub_cs}], 3
    jz hypervisor_fault_common
    swapgs
guest_exception_common:
    PUSH_GPRS
    mov rax, gs:[{fpu}]                    /* rax is saved: free */
    fxsave64 [rax]
    mov rdi, rsp
    call {guest_exception}
    jmp return_to_guest
hypervisor_fault_common:
    PUSH_GPRS
    mov rdi, rsp
    and rsp, -16
    call {hypervisor_fault}
    ud2

    /* The debug exception, on its own IST stack, with the CPU's frame
       (RIP, CS, RFLAGS, RSP, SS) and no error code. DR6 says why, and
       keeps saying it until it is reset, so it is reset on every #DB. */
debug_entry:
    push 2                                 /* known flags, as above */
    popfq
    test byte ptr [rsp + 8], 3             /* the frame's CS */
    jz 4f
    /* From ring 3: a guest's own single step (or `int1`). The frame moves
       to the per-CPU stack top, where every guest entry is built, with
       the cause as its error code (hypercall_abi::trap::debug_cause). */
    swapgs
    mov gs:[{scratch}], rax
    mov rax, rsp
    mov rsp, gs:[{stack_top}]
    push qword ptr [rax + 32]              /* SS */
    push qword ptr [rax + 24]              /* RSP */
    push qword ptr [rax + 16]              /* RFLAGS */
    push qword ptr [rax + 8]               /* CS */
    push qword ptr [rax]                   /* RIP */
    mov rax, dr6
    and eax, {single_step}
    push rax                               /* error code: the cause */
    push 1                                 /* vector */
    mov eax, {dr6_reset}
    mov dr6, rax
    mov rax, gs:[{scratch}]
    jmp guest_exception_common
    /* In ring 0 it can only be the trap after a `syscall` made with TF
       set, on a door's first instruction (GS is still the guest's, the
       stack the guest's). The door runs again without TF: the kernel door
       as its stepped copy, the others as they are (the user and emulated
       doors deliver the `syscall` to a kernel that sees the TF in r11, the
       floor's `sysretq` traps in ring 3 after it). Anything else is a
       hypervisor fault. */
4:  push rax
    mov eax, {dr6_reset}
    mov dr6, rax
    .macro JUMP_IF_AT entry, to             /* if the frame's RIP is `entry` */
    lea rax, [rip + \entry]
    cmp [rsp + 8], rax
    je \to
    .endm
    JUMP_IF_AT syscall_entry, 5f
    JUMP_IF_AT syscall_user_entry, 6f
    JUMP_IF_AT syscall_emulated_entry, 6f
    JUMP_IF_AT syscall_floor_entry, 6f
    pop rax
    push 0                                 /* error code */
    push 1                                 /* vector */
    jmp hypervisor_fault_common
5:  lea rax, [rip + syscall_stepped_entry]
    mov [rsp + 8], rax                     /* RIP */
6:  and qword ptr [rsp + 24], {no_tf}      /* RFLAGS */
    pop rax
    iretq

    /* External interrupts (the APIC timer, spurious): no error code. From
       ring 3 they enter like an exception; in ring 0 they can only strike
       in the idle loop's `sti; hlt`, and return to it at once. */
interrupt_common:
    push 2                                 /* known flags, as above */
    popfq
    test byte ptr [rsp + {stub_cs}], 3
    jz 3f
    swapgs
    PUSH_GPRS
    mov rax, gs:[{fpu}]                    /* rax is saved: free */
    fxsave64 [rax]
    mov rdi, rsp
    call {guest_interrupt}
    jmp return_to_guest
3:  PUSH_GPRS
    mov rdi, [rsp + 15 * 8]                /* the vector */
    call {idle_interrupt}
    POP_GPRS
    add rsp, 16
    iretq

    .p2align 4
    .global timer_interrupt_stub
timer_interrupt_stub:
    push 0
    push {timer_vector}
    jmp interrupt_common

    .p2align 4
    .global spurious_interrupt_stub
spurious_interrupt_stub:
    push 0
    push {spurious_vector}
    jmp interrupt_common

    /* One stub per exception vector; the CPU pushes an error code only for
       vectors 8, 10-14, 17, 21, 29 and 30, the others get a zero. */
    .altmacro
    .macro EXCEPTION_STUB n
    .p2align 4
exception_stub_\n:
    .if (\n == 1)
    jmp debug_entry
    .else
    .if (\n == 8) || ((\n >= 10) && (\n <= 14)) || (\n == 17) || (\n == 21) || (\n == 29) || (\n == 30)
    .else
    push 0
    .endif
    push \n
    .if (\n == 2) || (\n == 8) || (\n == 18)
    jmp machine_fault_common
    .else
    jmp exception_common
    .endif
    .endif
    .endm
    .macro EXCEPTION_STUB_ADDRESS n
    .quad exception_stub_\n
    .endm
    .set vector, 0
    .rept 32
    EXCEPTION_STUB %vector
    .set vector, vector + 1
    .endr

    .section .rodata, "a"
    .p2align 3
    .global exception_stubs
exception_stubs:
    .set vector, 0
    .rept 32
    EXCEPTION_STUB_ADDRESS %vector
    .set vector, vector + 1
    .endr
    .noaltmacro
"#,
    scratch = const SCRATCH_RSP_OFFSET,
    stack_top = const STACK_TOP_OFFSET,
    fpu = const GUEST_FPU_OFFSET,
    guest_ss = const GUEST_SS,
    guest_cs = const GUEST_CS,
    real_ss = const REAL_SS,
    real_cs = const REAL_CS,
    vector_syscall = const VECTOR_SYSCALL,
    stub_cs = const STUB_CS_OFFSET,
    hypercall = sym crate::trap::hypercall,
    stepped_hypercall = sym crate::trap::stepped_hypercall,
    single_step = const hypercall_abi::trap::debug_cause::SINGLE_STEP,
    dr6_reset = const DR6_RESET,
    no_tf = const !(parvus_core::vcpu::RFLAGS_TF as i64),
    user_syscall = sym crate::trap::user_syscall,
    guest_exception = sym crate::trap::guest_exception,
    hypervisor_fault = sym crate::trap::hypervisor_fault,
    guest_interrupt = sym crate::trap::guest_interrupt,
    idle_interrupt = sym crate::trap::idle_interrupt,
    timer_vector = const super::lapic::TIMER_VECTOR,
    spurious_vector = const super::lapic::SPURIOUS_VECTOR,
);

/// Enters a guest for the first time (or after a switch done outside an
/// entry): copies `regs` to the frame slot at the top of this CPU's stack and
/// returns to ring 3 from it. The caller has already loaded the guest's CR3
/// and its x87/SSE state into the per-CPU area.
pub fn enter_guest(regs: &GuestRegs) -> ! {
    let frame = (super::percpu::this_cpu().stack_top as usize - core::mem::size_of::<GuestRegs>()) as *mut GuestRegs;
    // SAFETY: (1) the frame slot lies at the top of this CPU's hypervisor
    // stack, which nothing else uses at this point (we are on the boot stack
    // or deeper in the same stack, below the slot); (2) return_to_guest_from
    // never returns, so abandoning the current stack is fine.
    unsafe {
        frame.write(*regs);
        return_to_guest_from(frame)
    }
}

/// Where `syscall` enters for each [`Door`], indexed by its discriminant.
static DOOR_ENTRIES: [unsafe extern "C" fn(); 4] = {
    let mut t: [unsafe extern "C" fn(); 4] = [syscall_entry; 4];
    t[Door::Kernel as usize] = syscall_entry;
    t[Door::User as usize] = syscall_user_entry;
    t[Door::Floor as usize] = syscall_floor_entry;
    t[Door::Emulated as usize] = syscall_emulated_entry;
    t
};

/// The `IA32_LSTAR` MSR: where `syscall` enters in 64-bit mode.
const IA32_LSTAR: u32 = 0xC000_0082;

/// Points `syscall` (LSTAR) at the entry for `door` (a no-op when it
/// already is). On every bounce and every `iret` of a paravirtualized
/// guest, so it is a table load and one `wrmsr`.
#[inline]
pub fn set_syscall_path(door: Door) {
    let cpu = super::percpu::this_cpu();
    if cpu.syscall_path == door {
        return;
    }
    let target = DOOR_ENTRIES[door as usize] as usize as u64;
    // SAFETY: (1) LSTAR exists on every x86_64 CPU; (2) the value is the
    // address of one of the entry stubs above, canonical and mapped in every
    // address space (the hypervisor's upper half), so the next `syscall`
    // lands on code that expects it.
    unsafe { x86_64::registers::model_specific::Msr::new(IA32_LSTAR).write(target) };
    cpu.syscall_path = door;
}
