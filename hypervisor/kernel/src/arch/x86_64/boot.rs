//! From QEMU's PVH entry to Rust: 32-bit protected mode to 64-bit long mode.
//!
//! QEMU enters `pvh_start32` in 32-bit protected mode with paging off and
//! `ebx` holding the physical address of the `hvm_start_info` block. The
//! code below enables SSE (the prebuilt `core` uses it), PAE, long mode, NX
//! and paging with a static early page table that maps the first GiB twice:
//! at 0 (so the code here keeps running) and at `KERNEL_VIRT_OFFSET` (where
//! the rest of the hypervisor is linked). It then jumps to the linked
//! address of `boot64_high`, which calls [`crate::kmain`] on the boot stack.
//! `kmain` replaces these tables with final ones (W^X, no identity map).

use core::arch::global_asm;

use hypercall_abi::pvh::PvhNote;

/// Size of the stack `kmain` runs on until the first guest is entered.
pub const BOOT_STACK_SIZE: usize = 64 * 1024;

#[repr(C, align(16))]
pub struct BootStack(pub [u8; BOOT_STACK_SIZE]);

/// The boot stack (in `.bss`, so at its linked high address).
#[no_mangle]
pub static mut BOOT_STACK: BootStack = BootStack([0; BOOT_STACK_SIZE]);

extern "C" {
    /// The 32-bit entry below (only its address is used, in the note).
    fn pvh_start32();
}

/// The PVH note that tells QEMU to enter at `pvh_start32` (`linker.ld`
/// points a `PT_NOTE` header at its section).
#[used]
#[link_section = ".note.pvh"]
static PVH_NOTE: PvhNote = PvhNote::new(pvh_start32);

global_asm!(
    r#"
    .section .boot.text, "ax"
    .code32
    .global pvh_start32
pvh_start32:
    cli
    cld
    movl %ebx, %edi                 /* keep hvm_start_info (edi survives into 64-bit) */
    lgdt boot_gdt_ptr

    /* CR4: PAE | OSFXSR | OSXMMEXCPT */
    movl %cr4, %eax
    orl $((1 << 5) | (1 << 9) | (1 << 10)), %eax
    movl %eax, %cr4
    movl $boot_pml4, %eax
    movl %eax, %cr3
    /* EFER: LME | NXE */
    movl $0xC0000080, %ecx
    rdmsr
    orl $((1 << 8) | (1 << 11)), %eax
    wrmsr
    /* CR0: PG | PE | MP, clear EM and TS */
    movl %cr0, %eax
    andl $~((1 << 2) | (1 << 3)), %eax
    orl $((1 << 31) | (1 << 0) | (1 << 1)), %eax
    movl %eax, %cr0
    ljmp $0x08, $boot64_low

    .code64
boot64_low:
    xorl %eax, %eax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw %ax, %fs
    movw %ax, %gs
    movabsq $boot64_high, %rax
    jmp *%rax

    .section .boot.data, "aw"
    .p2align 12
boot_pml4:
    .quad boot_pdpt_low + 0x3
    .fill 510, 8, 0
    .quad boot_pdpt_high + 0x3
boot_pdpt_low:
    .quad boot_pd + 0x3
    .fill 511, 8, 0
boot_pdpt_high:
    .fill 510, 8, 0
    .quad boot_pd + 0x3
    .quad 0
boot_pd:
    .set i, 0
    .rept 512
    .quad (i << 21) | 0x83          /* present, writable, 2 MiB */
    .set i, i + 1
    .endr
boot_gdt:
    .quad 0
    .quad 0x00af9a000000ffff        /* 0x08: 64-bit ring-0 code */
    .quad 0x00cf92000000ffff        /* 0x10: ring-0 data */
boot_gdt_end:
    .p2align 3
boot_gdt_ptr:
    .word boot_gdt_end - boot_gdt - 1
    .long boot_gdt

    .section .text, "ax"
boot64_high:
    movabsq $(BOOT_STACK + {stack_size}), %rsp
    xorl %ebp, %ebp
    movl %edi, %edi                  /* zero-extend the hvm_start_info address */
    call kmain
    ud2
"#,
    stack_size = const BOOT_STACK_SIZE,
    options(att_syntax)
);
