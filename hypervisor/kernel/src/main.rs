//! # The Parvus ring-0 hypervisor
//!
//! The thin, hardware-facing half of Parvus: boot, CPU tables, paging, the
//! hypercall and exception entry paths, and the loop that runs domains. All
//! policy (what a hypercall may do, who owns a frame, which domain runs next)
//! is in `parvus-core`, which is tested on the host.
//!
//! Boot, in the order [`kmain`] does it: serial console; read QEMU's
//! start-info block; CPU protections (WP, NX, SMEP, SMAP, UMIP); final
//! page tables; the heap, carved from RAM for the frame table; per-CPU
//! data, GDT/TSS, IDT and the `syscall` MSRs; the frame table; check the
//! boot bundle and grow the heap by what its domains may hold; build every
//! domain; run the first one.
#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn)]

extern crate alloc;
// `memcpy` and the other C-library symbols the prebuilt `core` calls,
// shared with the guest SDK, bare-rt and the boot shim (see that crate).
extern crate parvus_intrinsics;

mod arch;
mod exclusive;
mod heap;
mod logger;
mod trap;

use arch::x86_64::boot_info::{self, BootInfo};
use arch::x86_64::power::{exit_qemu, ExitCode};
use core::ops::Range;
use arch::x86_64::{cpu, entry, gdt, idt, lapic, paging, percpu, pic, rtc, serial::Serial};
use hypercall_abi::PAGE_SIZE;
use arch::x86_64::machine_memory::{self, PhysMap};
use parvus_core::builder::{build, DomainPlan};
use parvus_core::bundle::check_bundle;
use parvus_core::domain::DomainId;
use parvus_core::frame_table::FrameTable;
use parvus_core::heap_account::{heap_size, DOMAIN_RECORD_BYTES};
use parvus_core::plural::count;
use parvus_core::system::{Next, Platform, System};
use parvus_core::time::{TimeBase, TscClock};
use parvus_core::vcpu::GuestRegs;

/// Machine memory below this address is never handed out (firmware, boot data).
const LOW_MEMORY_RESERVED: u64 = 1 << 20;

/// The first Rust code: called from `boot64_high` with the physical address
/// of QEMU's `hvm_start_info`.
#[no_mangle]
extern "C" fn kmain(hvm_start_info: u64) -> ! {
    pic::disable();
    Serial::init();
    logger::init();
    log::info!("Parvus {} (ABI {}) starting", env!("CARGO_PKG_VERSION"), hypercall_abi::ABI_VERSION);

    // SAFETY: the address is the one QEMU passed in ebx, and the boot
    // identity map is still active (paging::init has not run yet).
    let boot = match unsafe { boot_info::read(hvm_start_info) } {
        Ok(b) => b,
        Err(e) => fail_boot(format_args!("{e}")),
    };
    if !boot.cmdline.is_empty() {
        log::info!("command line: {}", boot.cmdline);
    }
    let ram_end = boot.ram.iter().map(|r| r.end).max().unwrap_or(0);
    let protections = cpu::init();
    log::info!(
        "memory: {} MiB in {}; SMEP {}, SMAP {}, UMIP {}",
        boot.ram.iter().map(|r| r.end - r.start).sum::<u64>() >> 20,
        count(boot.ram.len(), "range", "ranges"),
        on_off(protections.smep),
        on_off(protections.smap),
        on_off(protections.umip)
    );
    paging::init(ram_end);
    // Nothing allocates before this: the heap's place depends on the
    // memory map, and its first part holds the frame table.
    let ram_end = ram_end.min(paging::PHYSMAP_LIMIT);
    let nr_frames = ram_end / PAGE_SIZE;
    let taken: heapless::Vec<_, { 2 * boot_info::MAX_RANGES }> = boot.reserved.iter().chain(&boot.modules).cloned().collect();
    let floor = LOW_MEMORY_RESERVED.max(paging::image_phys_range().end);
    let heap_range = match heap::init(&boot.ram, &taken, floor, heap_size(nr_frames, [])) {
        Ok(range) => range,
        Err(e) => fail_boot(format_args!("{e}")),
    };
    let stack_top = percpu::init_bsp();
    gdt::init(stack_top, entry::syscall_entry as *const () as u64);
    idt::init();
    lapic::init();
    let (tsc_hz, apic_hz) = lapic::calibrate();
    trap::timer_rate::set(apic_hz, tsc_hz);
    log::info!("timer: TSC {} MHz, APIC timer {} MHz (measured against the PIT)", tsc_hz / 1_000_000, apic_hz / 1_000_000);

    let mut frames = frame_table(&boot, ram_end, heap_range);
    let Some(bundle_range) = boot.modules.first().cloned() else {
        fail_boot(format_args!("no boot bundle: pass the bundle with -initrd (cargo xtask run does)"));
    };
    // SAFETY: the bundle's frames were reserved in `frame_table`, so nothing
    // allocates or writes them for the rest of the run.
    let bundle_bytes = unsafe { machine_memory::static_bytes(bundle_range.clone()) };
    let checked = match check_bundle(bundle_bytes) {
        Ok(c) => c,
        Err(e) => fail_boot(format_args!("bundle: {e}")),
    };
    log::info!("boot bundle: {}, {} KiB", count(checked.domains.len(), "domain", "domains"), bundle_bytes.len() / 1024);
    let allowances = checked.domains.iter().map(|d| d.spec.heap_allowance());
    let heap_bytes = heap_size(nr_frames, allowances.clone());
    if let Err(e) = heap::grow(&mut frames, heap_bytes) {
        fail_boot(format_args!("{e}"));
    }
    log::info!(
        "heap: {} KiB ({} KiB for the frame table, {} KiB for what the {} may hold)",
        heap::size() / 1024,
        nr_frames as usize * FrameTable::BYTES_PER_FRAME / 1024,
        allowances.map(|a| a + DOMAIN_RECORD_BYTES).sum::<usize>() / 1024,
        count(checked.domains.len(), "domain", "domains")
    );

    let upper = paging::hypervisor_pml4_entries();
    let mut system = System::new(frames, upper, checked.domains.len());
    let wall_clock_sec = rtc::unix_time().unwrap_or(0);
    system.time = TimeBase { clock: TscClock::new(tsc_hz), boot_tsc: cpu::rdtsc(), wall_clock_sec };
    log::info!("wall clock at boot: {} s since 1970", wall_clock_sec);
    // What must be free again when every domain has ended (the domain
    // table is allocated already: see `System::new`).
    let boot_level = trap::Level { free_frames: system.frames.free_count(), heap_used: heap::used() };
    for (i, d) in checked.domains.iter().enumerate() {
        let id = DomainId(i as u16);
        let mut plan = DomainPlan::from_checked(id, d);
        plan.time = system.time;
        match build(&plan, &mut system.frames, &mut PhysMap, &upper) {
            Ok(domain) => {
                log::info!(
                    "domain {} ({}): {} KiB, entry {:#x}, cmdline \"{}\"{}",
                    id,
                    d.spec.name,
                    d.spec.memory.bytes() / 1024,
                    d.image.entry,
                    d.spec.cmdline,
                    if domain.is_emulated() { ", emulated (trap-and-emulate, shadow paging)" } else { "" }
                );
                system.add_domain(domain);
            }
            Err(e) => fail_boot(format_args!("domain {} ({}): {e}", id, d.spec.name)),
        }
    }
    log::info!("{} frames free after building the domains", system.frames.free_count());
    trap::BOOT_LEVEL.call_once(|| boot_level);

    let mut regs = GuestRegs::default();
    let mut platform = Platform { mem: &mut PhysMap, console: &mut trap::SerialConsole, tsc: cpu::rdtsc() };
    let next = system.start(&mut platform, &mut regs);
    let Next::Switch { root, door } = next else {
        fail_boot(format_args!("the bundle has no domain to run"));
    };
    entry::set_syscall_path(door);
    trap::arm_timer(&mut system);
    trap::SYSTEM.with(|s| {
        // After the move into SYSTEM: the vCPU's address is final now.
        let system = s.insert(system);
        trap::point_at_current_vcpu(system);
    });
    // SAFETY: the root was built by build_domain with the hypervisor's upper half.
    unsafe { paging::switch_address_space(root) };
    entry::enter_guest(&regs)
}

/// Every RAM frame is free but low memory, the hypervisor image, QEMU's
/// start-info data, the boot bundle and the heap.
fn frame_table(boot: &BootInfo, ram_end: u64, heap: Range<u64>) -> FrameTable {
    let mut frames = FrameTable::new(ram_end / PAGE_SIZE);
    for r in &boot.ram {
        frames.add_free(r.start.div_ceil(PAGE_SIZE), r.end / PAGE_SIZE);
    }
    let image = paging::image_phys_range();
    frames.reserve(0, LOW_MEMORY_RESERVED.max(image.end).div_ceil(PAGE_SIZE));
    for r in boot.reserved.iter().chain(&boot.modules).chain([&heap]) {
        frames.reserve(r.start / PAGE_SIZE, r.end.div_ceil(PAGE_SIZE));
    }
    frames
}

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

/// Stops before any guest runs, with a one-line reason.
fn fail_boot(reason: core::fmt::Arguments) -> ! {
    log::error!("{reason}");
    exit_qemu(ExitCode::NotAsExpected)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    logger::emergency(format_args!("PANIC {info}"));
    exit_qemu(ExitCode::HypervisorFailure)
}

/// Named by the prebuilt `alloc` (built with unwinding) on its cleanup
/// paths. With `panic = "abort"` no unwinding starts, so this is
/// unreachable. (`rust_eh_personality`, which `core` names, is in
/// `parvus-intrinsics` with `memcpy`.)
#[no_mangle]
extern "C" fn _Unwind_Resume() -> ! {
    panic!("_Unwind_Resume called, but Parvus never unwinds")
}
