//! The x86_64 hardware glue: the only place the hypervisor touches the CPU
//! and devices directly. Everything here is thin; decisions live in
//! `parvus-core`.

pub mod boot;
pub mod boot_info;
pub mod cpu;
pub mod entry;
pub mod gdt;
pub mod idt;
pub mod lapic;
pub mod machine_memory;
pub mod paging;
pub mod percpu;
pub mod pic;
pub mod pit;
pub mod power;
pub mod rtc;
pub mod serial;
