//! `emulation-abuse`: an unmodified kernel that misbehaves on purpose.
//!
//! The idea shown: under trap-and-emulate the hypervisor carries out a
//! kernel's privileged instructions itself, so it must also refuse what it
//! cannot or will not do, and then stop that kernel alone, with a report
//! that says what it tried, while the other domains run on. The command
//! line `attack=<name>` picks one misdeed:
//!
//! | attack | what the kernel does | what a real CPU would do |
//! |---|---|---|
//! | `debug-register` | `mov dr7, rax` | set a breakpoint (not emulated) |
//! | `big-gdt` | `lgdt` of a 32-entry GDT | load it (but slots 14 and up are the hypervisor's) |
//! | `paging-off` | clears CR0.PG | leave long mode (#GP) |
//! | `string-io` | `rep outsb` | write a string to a port (not emulated) |
//! | `upper-half` | maps and touches a page at 0xffff_8000_0000_0000 | use it (the hypervisor's half) |
//! | `cr3-outside-ram` | loads CR3 with an address beyond its RAM | read garbage tables |
//! | `no-idt` | `lidt` with limit 0, then `ud2` | triple-fault: #UD finds no gate |
//! | `halt-forever` | `cli; hlt` | hang until reset |
//!
//! Each line the kernel prints before the attack names it; if the attack
//! somehow "works", the kernel says so and exits with status 1, which the
//! scenario (expecting a crash) reports as unexpected.
#![no_std]
#![no_main]

use bare_rt::{cpu, println, BootInfo};

bare_rt::entry!(main);

fn main(boot: &'static BootInfo) -> u8 {
    let cmdline = core::str::from_utf8(boot.cmdline()).unwrap_or("");
    let attack = cmdline.split_whitespace().find_map(|w| w.strip_prefix("attack=")).unwrap_or("");
    println!("emulation-abuse: attack {attack}");
    match attack {
        "debug-register" => {
            // SAFETY: a breakpoint register write; on bare metal DR7 = 0
            // disables every breakpoint, which is harmless.
            unsafe { core::arch::asm!("xor eax, eax", "mov dr7, rax", out("rax") _, options(nomem, nostack)) };
        }
        "big-gdt" => big_gdt(),
        "paging-off" => {
            // SAFETY: not safe at all on bare metal (long mode needs paging):
            // that is the point; the hypervisor must refuse it.
            unsafe { cpu::write_cr0(cpu::read_cr0() & !(1 << 31)) };
        }
        "string-io" => {
            let text = b"hi";
            // SAFETY: writes two bytes from `text` to COM1's data port.
            unsafe {
                core::arch::asm!("rep outsb", in("dx") 0x3f8u16, inout("rsi") text.as_ptr() => _, inout("rcx") 2u64 => _, options(nostack, readonly))
            };
        }
        "upper-half" => upper_half(),
        "cr3-outside-ram" => {
            // SAFETY: on bare metal this would load garbage tables: the
            // hypervisor must refuse to shadow them.
            unsafe { cpu::write_cr3(boot.mem_bytes + 0x1000_0000) };
        }
        "no-idt" => {
            let empty = [0u8; 10];
            // SAFETY: an IDT of limit 0: the next exception finds no gate.
            unsafe { core::arch::asm!("lidt [{}]", "ud2", in(reg) empty.as_ptr(), options(nostack, readonly)) };
        }
        "halt-forever" => {
            cpu::cli();
            cpu::hlt();
        }
        other => {
            println!("emulation-abuse: unknown attack {other:?}");
            return 2;
        }
    }
    println!("emulation-abuse: the attack {attack} was not stopped");
    1
}

/// Loads a GDT of 32 entries (the boot GDT's three, then null ones).
fn big_gdt() {
    static GDT: [u64; 32] = {
        let mut g = [0u64; 32];
        g[1] = 0x00af_9a00_0000_ffff;
        g[2] = 0x00cf_9200_0000_ffff;
        g
    };
    let mut pointer = [0u8; 10];
    pointer[..2].copy_from_slice(&((32 * 8 - 1) as u16).to_le_bytes());
    pointer[2..].copy_from_slice(&(GDT.as_ptr() as u64).to_le_bytes());
    // SAFETY: the GDT is static and valid; its code and data descriptors
    // are the ones CS and SS already hold.
    unsafe { core::arch::asm!("lgdt [{}]", in(reg) pointer.as_ptr(), options(nostack, readonly)) };
}

/// Maps one page at the start of the upper half (PML4 slot 256) in the
/// current tables and reads it.
fn upper_half() {
    #[repr(C, align(4096))]
    struct Table([u64; 512]);
    static mut TABLES: [Table; 3] = [const { Table([0; 512]) }; 3];
    let tables = &raw mut TABLES;
    // SAFETY: (1) one CPU, interrupts off: nothing else uses TABLES; (2) the
    // kernel is identity-mapped, so a static's address is its physical
    // address; (3) CR3 holds the loader's tables, identity-mapped too, and
    // slot 256 of its top level is empty.
    unsafe {
        let (l3, l2, l1) = (&raw mut (*tables)[0], &raw mut (*tables)[1], &raw mut (*tables)[2]);
        let rw = 0b11u64;
        (*l1).0[0] = (l1 as u64) | rw; // any page will do: this table itself
        (*l2).0[0] = (l1 as u64) | rw;
        (*l3).0[0] = (l2 as u64) | rw;
        let top = (cpu::read_cr3() & !0xfff) as *mut u64;
        top.add(256).write_volatile((l3 as u64) | rw);
        let upper = 0xffff_8000_0000_0000u64 as *const u64;
        let value = upper.read_volatile();
        println!("emulation-abuse: read {value:#x} from the upper half");
    }
}
