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
//! | `paging-off` | clears CR0.PG | refuse to leave long mode from 64-bit code: #GP, which the hypervisor delivers through the kernel's IDT too (bare-rt's default handler exits with status 2) |
//! | `string-io` | `rep outsb` | write a string to a port (not emulated) |
//! | `upper-half` | maps and touches a page at 0xffff_8000_0000_0000 | use it (the hypervisor's half) |
//! | `cr3-outside-ram` | loads CR3 with an address beyond its RAM | read garbage tables |
//! | `no-idt` | `lidt` with limit 0, then `ud2` | triple-fault: #UD finds no gate |
//! | `halt-forever` | `cli; hlt` | hang until reset |
//! | `shadow-heap` | maps 1 GiB pages over its RAM in 512 slots and writes every page through each, never loading CR3 | nothing special: 512 aliases of its RAM |
//!
//! Each line the kernel prints before the attack names it; if the attack
//! somehow "works", the kernel says so and exits with status 1, which the
//! scenario (expecting a crash) reports as unexpected. `shadow-heap` is
//! the exception: nothing in it is refused, it is the hypervisor's shadow
//! budget that must hold (half a million shadow leaves once filled the
//! hypervisor's heap and panicked it), so it ends with status 0 (scenario
//! `shadow-exhaustion`).
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
        "shadow-heap" => shadow_heap(boot.mem_bytes),
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

/// Maps 1 GiB pages over its RAM in all 512 slots of a new level-3 table
/// (top-level slot 1) and writes every page of RAM through every one of
/// them, without loading CR3 again: 512 * (RAM / 4 KiB) distinct writable
/// mappings, each one shadow leaf (and one reverse-map slot).
fn shadow_heap(mem_bytes: u64) {
    #[repr(C, align(4096))]
    struct Table([u64; 512]);
    static mut L3: Table = Table([0; 512]);
    let l3 = &raw mut L3;
    // present, writable, accessed, dirty, 1 GiB page at physical 0
    let large = 0b1110_0011u64;
    // SAFETY: (1) one CPU, nothing else uses L3; (2) the kernel is
    // identity-mapped, so the static's address is its physical address;
    // (3) top-level slot 1 of the loader's tables is empty.
    unsafe {
        for e in (*l3).0.iter_mut() {
            *e = large;
        }
        let top = (cpu::read_cr3() & !0xfff) as *mut u64;
        top.add(1).write_volatile((l3 as u64) | 0b11);
    }
    let pages = mem_bytes / 4096;
    for gib in 0..512u64 {
        if gib % 64 == 0 {
            println!("emulation-abuse: shadow-heap: 1 GiB page {gib}");
        }
        for page in 0..pages {
            let p = ((1u64 << 39) + (gib << 30) + (page << 12)) as *mut u8;
            // SAFETY: an alias of RAM page `page`; writing back the byte
            // just read changes nothing.
            unsafe { p.write_volatile(p.read_volatile()) };
        }
    }
    println!("emulation-abuse: shadow-heap: done");
    bare_rt::exit(0);
}
