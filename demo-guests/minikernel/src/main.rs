//! `minikernel`: a guest kernel with user processes, on the SDK.
//!
//! The idea shown: a paravirtualized guest is a real kernel. It builds an
//! address space per process with page tables the hypervisor validates
//! (*direct paging*), runs each process in guest user mode (ring 3, like
//! the kernel itself, kept apart by two top-level tables: *ring
//! compression*), serves its system calls, fills its memory on demand, and
//! kills it when it misbehaves, without the hypervisor knowing what a
//! process is.
//!
//! Four processes run round-robin (they switch on `yield` and `exit`):
//!
//! 1. sums 1..=1000 over memory from `mmap`;
//! 2. writes a pattern over 16 pages from `mmap` and checks it;
//! 3. reads kernel memory: killed (page fault, not mapped in user space);
//! 4. executes `hlt`: killed (general protection fault).
//!
//! `mmap` only reserves addresses; each page is allocated, zeroed and
//! mapped on its first page fault. At the end the kernel prints how many
//! such faults it served and checks that every table and frame went back
//! to the heap, then exits 0 (1 if a process reported a wrong result).
#![no_std]
#![no_main]

extern crate alloc;

mod programs;
mod syscall;

use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::ops::Range;

use parvus_guest_sdk::frames::PageFrame;
use parvus_guest_sdk::paging::{self, AddressSpace, PagingError, PteFlags};
use parvus_guest_sdk::trap::{self, page_fault, vector, vector_name, Trap, UserContext};
use parvus_guest_sdk::{heap, hypercall, println, StartInfo};
use spin::Mutex;

/// Top of every process's stack: the start of PML4 slot 1 plus 1 MiB.
const USER_STACK_TOP: u64 = 0x80_0010_0000;
/// Pages of user stack, mapped up front.
const USER_STACK_PAGES: u64 = 4;
/// Where `mmap` hands out addresses (1 GiB into slot 1).
const MMAP_BASE: u64 = 0x80_4000_0000;
/// Most bytes one `mmap` may ask for.
const MMAP_MAX: u64 = 16 << 20;
/// Longest `write`.
const WRITE_MAX: u64 = 4096;
/// What a failed system call returns.
const SYSCALL_ERROR: u64 = u64::MAX;
const PAGE: u64 = 4096;

/// One user process.
struct Process {
    pid: u64,
    space: AddressSpace,
    /// Where it resumes (kept up to date while it is not running).
    context: UserContext,
    /// Address ranges `mmap` gave it: faults there are served.
    regions: Vec<Range<u64>>,
    mmap_next: u64,
}

impl Process {
    /// A process that will run `entry` in a fresh address space with the
    /// user image and a stack mapped.
    fn new(pid: u64, entry: extern "C" fn() -> !) -> Result<Process, PagingError> {
        let mut space = AddressSpace::new()?;
        space.map_user_image()?;
        let mut batch = space.batch();
        for i in 1..=USER_STACK_PAGES {
            let frame = PageFrame::alloc().ok_or(PagingError::OutOfFrames)?;
            batch.map(USER_STACK_TOP - i * PAGE, frame, PteFlags::WRITABLE | PteFlags::NO_EXECUTE)?;
        }
        batch.finish()?;
        let context = UserContext::new(entry as *const () as u64, USER_STACK_TOP);
        Ok(Process { pid, space, context, regions: Vec::new(), mmap_next: MMAP_BASE })
    }
}

/// The kernel's state, reached from the trap handler.
struct Kernel {
    /// Runnable processes; the front one is running.
    run_queue: VecDeque<Process>,
    demand_faults: u64,
    killed: u64,
    ended: u64,
    /// Processes that exited with a non-zero status.
    failed: u64,
    /// Free heap bytes before any process existed.
    heap_free_at_start: usize,
}

static KERNEL: Mutex<Option<Kernel>> = Mutex::new(None);

parvus_guest_sdk::entry!(main);

fn main(_start: &'static StartInfo) -> u64 {
    let heap_free_at_start = heap::free();
    trap::install(on_trap).expect("registering the trap handler");
    let programs: [extern "C" fn() -> !; 4] =
        [programs::summer, programs::patterner, programs::kernel_reader, programs::privileged];
    let mut run_queue = VecDeque::new();
    for (pid, entry) in (1..).zip(programs) {
        let process = Process::new(pid, entry).expect("building a process");
        run_queue.push_back(process);
    }
    println!(
        "minikernel: {} processes, each in its own address space ({} table pages, {} pages mapped)",
        run_queue.len(),
        run_queue[0].space.table_pages(),
        run_queue[0].space.mapped_pages()
    );
    let first = &run_queue[0];
    first.space.activate().expect("loading the first address space");
    let context = first.context;
    *KERNEL.lock() = Some(Kernel {
        run_queue,
        demand_faults: 0,
        killed: 0,
        ended: 0,
        failed: 0,
        heap_free_at_start,
    });
    trap::enter_user(&context)
}

/// Every system call and exception of a process lands here.
fn on_trap(trap: &mut Trap<'_>) {
    if !trap.from_user() {
        panic!(
            "minikernel: {} in kernel mode at rip {:#x}, cr2 {:#x}",
            vector_name(trap.frame.vector),
            trap.frame.rip,
            trap.frame.cr2
        );
    }
    let mut guard = KERNEL.lock();
    let kernel = guard.as_mut().expect("processes run only once the kernel is set up");
    let running = match trap.frame.vector {
        vector::SYSCALL => kernel.syscall(trap),
        vector::PAGE_FAULT => kernel.page_fault(trap),
        vector::GENERAL_PROTECTION => {
            let what = kernel.describe_gp(trap);
            kernel.kill(trap, &what)
        }
        v => kernel.kill(trap, &alloc::format!("{} (vector {v})", vector_name(v))),
    };
    if !running {
        let kernel = guard.take().expect("checked above");
        drop(guard);
        finish(kernel);
    }
}

impl Kernel {
    fn current(&mut self) -> &mut Process {
        self.run_queue.front_mut().expect("a process is running")
    }

    /// Serves a system call; returns whether any process is left.
    fn syscall(&mut self, trap: &mut Trap<'_>) -> bool {
        let (number, [a0, a1, _]) = trap.syscall_args();
        let result = match number {
            syscall::WRITE => self.write(a0, a1),
            syscall::GETPID => self.current().pid,
            syscall::YIELD => {
                trap.set_return(0);
                self.switch_away(trap);
                return true;
            }
            syscall::EXIT => {
                let pid = self.current().pid;
                println!("minikernel: pid {pid} exited with status {a0}");
                if a0 != 0 {
                    self.failed += 1;
                }
                return self.end_current(trap);
            }
            syscall::MMAP => self.mmap(a0),
            _ => SYSCALL_ERROR,
        };
        trap.set_return(result);
        true
    }

    /// `write(buf, len)`: prints the process's bytes; returns `len`.
    fn write(&mut self, buf: u64, len: u64) -> u64 {
        if len > WRITE_MAX {
            return SYSCALL_ERROR;
        }
        let mut bytes = vec![0u8; len as usize];
        if self.current().space.copy_from_user(buf, &mut bytes).is_err() {
            return SYSCALL_ERROR;
        }
        match core::str::from_utf8(&bytes) {
            Ok(text) => parvus_guest_sdk::print!("{text}"),
            Err(_) => parvus_guest_sdk::print!("<{len} bytes, not UTF-8>"),
        }
        len
    }

    /// `mmap(len)`: reserves `len` bytes (rounded up to pages) of
    /// demand-zero memory; returns its address, or 0.
    fn mmap(&mut self, len: u64) -> u64 {
        if len == 0 || len > MMAP_MAX {
            return 0;
        }
        let process = self.current();
        let size = len.div_ceil(PAGE) * PAGE;
        let start = process.mmap_next;
        process.regions.push(start..start + size);
        // One unmapped page between regions catches overruns.
        process.mmap_next += size + PAGE;
        println!(
            "minikernel: pid {} mmap({len}) -> {start:#x}: {} pages, zero-filled on first touch",
            process.pid,
            size / PAGE
        );
        start
    }

    /// A page fault: served if it is the first touch of an `mmap` page,
    /// else the process is killed.
    fn page_fault(&mut self, trap: &mut Trap<'_>) -> bool {
        let (address, error) = (trap.frame.cr2, trap.frame.error_code);
        let process = self.current();
        let in_region = process.regions.iter().any(|r| r.contains(&address));
        if !in_region {
            return self.kill(trap, &alloc::format!("page fault at {address:#x} (not mapped in user space)"));
        }
        if error & page_fault::PRESENT != 0 {
            return self.kill(trap, &alloc::format!("page fault at {address:#x} (protection violation)"));
        }
        let Some(frame) = PageFrame::alloc() else {
            return self.kill(trap, &alloc::format!("page fault at {address:#x} (out of memory)"));
        };
        let page = address & !(PAGE - 1);
        if let Err(e) = process.space.map(page, frame, PteFlags::WRITABLE | PteFlags::NO_EXECUTE) {
            return self.kill(trap, &alloc::format!("page fault at {address:#x} ({e})"));
        }
        self.demand_faults += 1;
        // Returning retries the access, which now succeeds.
        true
    }

    /// Names a #GP: ring 3 raises it for privileged instructions, which
    /// the byte at `rip` tells apart.
    fn describe_gp(&mut self, trap: &Trap<'_>) -> String {
        let mut opcode = [0u8; 1];
        let rip = trap.frame.rip;
        let instruction = match self.current().space.copy_from_user(rip, &mut opcode) {
            Ok(()) => match opcode[0] {
                0xf4 => Some("hlt"),
                0xfa => Some("cli"),
                0xfb => Some("sti"),
                _ => None,
            },
            Err(_) => None,
        };
        match instruction {
            Some(name) => alloc::format!("general protection fault (privileged instruction {name})"),
            None => alloc::format!("general protection fault at rip {rip:#x}"),
        }
    }

    /// Ends the running process with a message; returns whether any is left.
    fn kill(&mut self, trap: &mut Trap<'_>, what: &str) -> bool {
        println!("minikernel: killed pid {}: {what}", self.current().pid);
        self.killed += 1;
        self.end_current(trap)
    }

    /// Puts the running process at the back of the queue and resumes the next.
    fn switch_away(&mut self, trap: &mut Trap<'_>) {
        if self.run_queue.len() < 2 {
            return;
        }
        let mut current = self.run_queue.pop_front().expect("a process is running");
        current.context = trap.save();
        self.run_queue.push_back(current);
        self.resume_front(trap);
    }

    /// Makes the trap return into the process at the front of the queue.
    fn resume_front(&mut self, trap: &mut Trap<'_>) {
        let next = self.current();
        next.space.activate().expect("loading an address space");
        trap.load(&next.context);
    }

    /// Removes the running process and resumes the next; returns whether
    /// any is left. The dead address space is freed after the switch (a
    /// loaded table cannot be).
    fn end_current(&mut self, trap: &mut Trap<'_>) -> bool {
        let dead = self.run_queue.pop_front().expect("a process is running");
        self.ended += 1;
        if !self.run_queue.is_empty() {
            self.resume_front(trap);
        }
        drop(dead);
        !self.run_queue.is_empty()
    }
}

/// After the last process: report, check that everything was given back, exit.
fn finish(kernel: Kernel) -> ! {
    println!(
        "minikernel: all {} processes ended: {} demand-zero page faults served, {} processes killed",
        kernel.ended, kernel.demand_faults, kernel.killed
    );
    let (heap_free_at_start, failed) = (kernel.heap_free_at_start, kernel.failed);
    // The last address space was dropped while loaded, so the boot tables
    // are back; dropping the kernel frees the queue itself.
    drop(kernel);
    let leaked = paging::leaked_tables();
    let in_use = heap_free_at_start.saturating_sub(heap::free());
    if leaked == 0 && in_use == 0 {
        println!("minikernel: every page table and frame went back to the heap");
    } else {
        println!("minikernel: ERROR: {leaked} page tables leaked, {in_use} heap bytes still in use");
    }
    let failed = failed + u64::from(leaked != 0 || in_use != 0);
    hypercall::exit(if failed == 0 { 0 } else { 1 })
}
