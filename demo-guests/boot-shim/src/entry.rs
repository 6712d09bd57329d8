//! From QEMU's PVH entry to Rust, and from Rust to the kernel.
//!
//! QEMU finds `pvh_start32` through the PVH ELF note and enters it in
//! 32-bit protected mode with paging off and `ebx` holding the physical
//! address of the `hvm_start_info` block. The assembly below does the least
//! that gets to 64-bit Rust:
//!
//! 1. puts the local APIC in *virtual-wire mode* (LINT0 delivers the
//!    8259 PIC's interrupts as ExtINT), as a PC's BIOS does before it
//!    boots anything: QEMU's microvm leaves LINT0 masked, and a kernel
//!    written for a PC drives only the 8259 and expects its IRQs to arrive;
//! 2. loads the shim's GDT (null, 64-bit ring-0 code at
//!    [`BOOT_CS`](hypercall_abi::bare_metal::BOOT_CS), ring-0 data at
//!    [`BOOT_DS`](hypercall_abi::bare_metal::BOOT_DS), exactly what the
//!    kernel will be entered with);
//! 3. enables PAE, long mode (EFER.LME), NX (EFER.NXE), paging with the
//!    static identity tables below (the first GiB in 2 MiB pages, writable,
//!    executable: they cover [`MAX_MEMORY`](hypercall_abi::bare_metal::MAX_MEMORY)
//!    and more), CR0.WP, and SSE for the shim's own Rust code;
//! 4. far-jumps into the 64-bit code segment, loads the data segments,
//!    switches to the shim's stack and calls [`crate::shim_main`].
//!
//! [`enter_kernel`] is the way out: it undoes the SSE set-up (the contract
//! says the kernel must do it itself, and a kernel that forgets should fail
//! here as it would under trap-and-emulate), resets RFLAGS (IF = 0,
//! DF = 0), clears the general registers, and jumps to the kernel's entry
//! with `rdi` = the BootInfo and `rsp` = the kernel's boot stack.

use core::arch::global_asm;

use hypercall_abi::pvh::PvhNote;

/// The shim's own stack (its Rust code runs on it; the kernel gets another).
pub const SHIM_STACK_SIZE: usize = 16 * 1024;

/// A 16-byte aligned stack.
#[repr(C, align(16))]
pub struct Stack<const N: usize>(pub [u8; N]);

/// Only the entry assembly uses it, by address.
static mut SHIM_STACK: Stack<SHIM_STACK_SIZE> = Stack([0; SHIM_STACK_SIZE]);

extern "C" {
    /// The 32-bit entry below (only its address is used, in the note).
    fn pvh_start32();
}

/// The PVH note that tells QEMU to enter at `pvh_start32` (`shim.ld`
/// points a `PT_NOTE` header at its section).
#[used]
#[link_section = ".note.pvh"]
static PVH_NOTE: PvhNote = PvhNote::new(pvh_start32);

global_asm!(
    r#"
    .section .text.pvh_start32, "ax"
    .code32
    .global pvh_start32
pvh_start32:
    cli
    cld
    movl %ebx, %esi                 /* hvm_start_info (esi survives into 64-bit) */

    /* The local APIC in virtual-wire mode, as a PC BIOS leaves it: software
       enabled (SVR bit 8, spurious vector 0xff), LINT0 = ExtINT (the 8259's
       INTR goes straight to the CPU), LINT1 = NMI. Paging is still off, so
       its registers are reached at their physical address, from the
       IA32_APIC_BASE MSR. */
    movl $0x1b, %ecx
    rdmsr
    andl $0xfffff000, %eax
    movl $0x1ff, 0xf0(%eax)         /* spurious-interrupt vector register */
    movl $0x700, 0x350(%eax)        /* LVT LINT0: ExtINT, unmasked */
    movl $0x400, 0x360(%eax)        /* LVT LINT1: NMI */

    lgdt shim_gdt_ptr

    /* CR4: PAE | OSFXSR | OSXMMEXCPT */
    movl %cr4, %eax
    orl $((1 << 5) | (1 << 9) | (1 << 10)), %eax
    movl %eax, %cr4
    movl $shim_pml4, %eax
    movl %eax, %cr3
    /* EFER: LME | NXE */
    movl $0xC0000080, %ecx
    rdmsr
    orl $((1 << 8) | (1 << 11)), %eax
    wrmsr
    /* CR0: PG | WP | MP | PE, and EM, TS clear */
    movl %cr0, %eax
    andl $~((1 << 2) | (1 << 3)), %eax
    orl $((1 << 31) | (1 << 16) | (1 << 1) | (1 << 0)), %eax
    movl %eax, %cr0
    ljmp $0x08, $shim64

    .code64
shim64:
    movl $0x10, %eax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    xorl %eax, %eax
    movw %ax, %fs
    movw %ax, %gs
    leaq ({shim_stack} + {shim_stack_size})(%rip), %rsp
    fninit
    movl %esi, %edi                 /* zero-extends the start-info address */
    xorl %ebp, %ebp
    call {shim_main}
    ud2

    .section .data.shim_tables, "aw"
    .p2align 12
shim_pml4:
    .quad shim_pdpt + 0x3           /* present, writable */
    .fill 511, 8, 0
shim_pdpt:
    .quad shim_pd + 0x3
    .fill 511, 8, 0
shim_pd:
    .set shim_i, 0
    .rept 512
    .quad (shim_i << 21) | 0x83     /* present, writable, 2 MiB */
    .set shim_i, shim_i + 1
    .endr
    .p2align 3
shim_gdt:
    .quad 0
    .quad 0x00af9b000000ffff        /* 0x08: 64-bit ring-0 code */
    .quad 0x00cf93000000ffff        /* 0x10: ring-0 data */
shim_gdt_end:
    .p2align 3
shim_gdt_ptr:
    .word shim_gdt_end - shim_gdt - 1
    .long shim_gdt
"#,
    shim_stack = sym SHIM_STACK,
    shim_stack_size = const SHIM_STACK_SIZE,
    shim_main = sym crate::shim_main,
    options(att_syntax)
);

global_asm!(
    r#"
    .section .text.enter_kernel, "ax"
    .global bare_shim_enter_kernel
bare_shim_enter_kernel:
    /* rdi = entry, rsi = BootInfo, rdx = stack top. No SSE from here on. */
    mov rax, cr4
    and rax, {cr4_keep}
    mov cr4, rax
    mov rax, cr0
    and rax, {cr0_keep}
    mov cr0, rax
    mov rsp, rdx
    push 2                          /* RFLAGS: only the always-one bit (IF = 0, DF = 0) */
    popfq
    mov rax, rdi
    mov rdi, rsi
    xor esi, esi
    xor edx, edx
    xor ecx, ecx
    xor ebx, ebx
    xor ebp, ebp
    xor r8d, r8d
    xor r9d, r9d
    xor r10d, r10d
    xor r11d, r11d
    xor r12d, r12d
    xor r13d, r13d
    xor r14d, r14d
    xor r15d, r15d
    jmp rax
"#,
    cr4_keep = const !((1u64 << 9) | (1 << 10)) as i64,
    cr0_keep = const !((1u64 << 1) | (1 << 2) | (1 << 3)) as i64,
);

extern "C" {
    fn bare_shim_enter_kernel(entry: u64, boot_info: u64, stack_top: u64) -> !;
}

/// Jumps to the kernel at `entry` in ring 0 with `rdi = boot_info` and
/// `rsp = stack_top`, as the boot contract describes; never returns.
///
/// # Safety
///
/// The kernel image is loaded, `entry` is inside it, `boot_info` points at
/// a filled-in `BootInfo` and `stack_top` at the 16-byte aligned top of a
/// stack, all identity-mapped by the shim's tables, which stay in place.
pub unsafe fn enter_kernel(entry: u64, boot_info: u64, stack_top: u64) -> ! {
    // SAFETY: the caller guarantees the kernel and its arguments; the
    // assembly only sets registers and jumps.
    unsafe { bare_shim_enter_kernel(entry, boot_info, stack_top) }
}
