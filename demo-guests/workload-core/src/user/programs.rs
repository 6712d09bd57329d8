//! The seven programs, one per operation. Each times its loop of `n`
//! iterations with the time-stamp counter, hands result and ticks to the
//! kernel with `report`, and exits 0 (see `ops.rs` for how the kernel
//! checks the result).

use super::status;
use super::sys::{self, Forked};
use super::user_program;
use crate::layout::PAGE_WORDS;
use crate::work::{self, APP_PAGES, MMAP_ROUND_PAGES};

user_program! {
    /// `syscall`: `n` trivial system calls; the result is the sum of the
    /// ids `getpid` returned.
    pub fn syscall_loop(n: u64, _unused: u64) -> ! {
        let start = sys::ticks();
        let mut sum = 0u64;
        let mut i = 0;
        while i < n {
            sum = sum.wrapping_add(sys::getpid());
            i += 1;
        }
        let ticks = sys::ticks().wrapping_sub(start);
        sys::report(sum, ticks);
        sys::exit(0)
    }
}

user_program! {
    /// `fork`: `n` times, store `i` in a page of its own, fork, and wait.
    /// The child reads `i` from its copy, overwrites it (which the parent
    /// must not see) and exits with `mix(i)`; the parent folds the
    /// statuses into its result and checks that its page still holds `i`.
    pub fn fork_loop(n: u64, _unused: u64) -> ! {
        let Some(mut data) = sys::mmap(1) else { sys::exit(status::NO_MEMORY) };
        let start = sys::ticks();
        let mut acc = 0u64;
        let mut leaks = 0u64;
        let mut i = 0;
        while i < n {
            data.write(0, i);
            match sys::fork() {
                Forked::Child => {
                    let inherited = data.read(0);
                    data.write(0, !inherited);
                    sys::exit(work::mix(inherited))
                }
                Forked::Failed => sys::exit(status::FORK_FAILED),
                Forked::Parent(_) => {}
            }
            let child_status = sys::wait();
            if data.read(0) != i {
                leaks += 1;
            }
            acc = work::fold(acc, child_status);
            i += 1;
        }
        let ticks = sys::ticks().wrapping_sub(start);
        // A child's write that reached the parent spoils the checksum.
        sys::report(acc ^ leaks, ticks);
        sys::munmap(data);
        sys::exit(0)
    }
}

user_program! {
    /// `switch`: `n` yields; two copies run side by side, so every yield
    /// switches to the other. Copy 0 measures and reports.
    pub fn switch_loop(n: u64, copy: u64) -> ! {
        let start = sys::ticks();
        let mut i = 0;
        while i < n {
            sys::yield_now();
            i += 1;
        }
        let ticks = sys::ticks().wrapping_sub(start);
        if copy == 0 {
            sys::report(n, ticks);
        }
        sys::exit(0)
    }
}

user_program! {
    /// `fault`: reads the first word of `n` fresh pages of one `mmap`
    /// region (each read is a demand-zero page fault), stores `i + 1`
    /// there, then sums the pages back. A page that was not zero spoils
    /// the sum.
    pub fn fault_loop(n: u64, _unused: u64) -> ! {
        let Some(mut region) = sys::mmap(n) else { sys::exit(status::NO_MEMORY) };
        let start = sys::ticks();
        let mut dirty = 0u64;
        let mut page = 0;
        while page < n {
            dirty |= region.read(page * PAGE_WORDS);
            region.write(page * PAGE_WORDS, page + 1);
            page += 1;
        }
        let ticks = sys::ticks().wrapping_sub(start);
        let mut sum = 0u64;
        page = 0;
        while page < n {
            sum = sum.wrapping_add(region.read(page * PAGE_WORDS));
            page += 1;
        }
        sys::report(sum ^ dirty, ticks);
        sys::munmap(region);
        sys::exit(0)
    }
}

user_program! {
    /// `mmap`: `n` rounds of mapping MMAP_ROUND_PAGES pages, touching each
    /// (a fault per page), summing them and unmapping them.
    pub fn mmap_loop(n: u64, _unused: u64) -> ! {
        let start = sys::ticks();
        let mut sum = 0u64;
        let mut dirty = 0u64;
        let mut round = 0;
        while round < n {
            let Some(mut region) = sys::mmap(MMAP_ROUND_PAGES) else { sys::exit(status::NO_MEMORY) };
            let mut page = 0;
            while page < MMAP_ROUND_PAGES {
                dirty |= region.read(page * PAGE_WORDS);
                region.write(page * PAGE_WORDS, round * MMAP_ROUND_PAGES + page);
                page += 1;
            }
            page = 0;
            while page < MMAP_ROUND_PAGES {
                sum = sum.wrapping_add(region.read(page * PAGE_WORDS));
                page += 1;
            }
            sys::munmap(region);
            round += 1;
        }
        let ticks = sys::ticks().wrapping_sub(start);
        sys::report(sum ^ dirty, ticks);
        sys::exit(0)
    }
}

user_program! {
    /// `compute`: `n` rounds of arithmetic, no system call.
    pub fn compute_loop(n: u64, _unused: u64) -> ! {
        let start = sys::ticks();
        let mut state = work::COMPUTE_SEED;
        let mut round = 0;
        while round < n {
            state = work::compute_round(state);
            round += 1;
        }
        let ticks = sys::ticks().wrapping_sub(start);
        sys::report(state, ticks);
        sys::exit(0)
    }
}

user_program! {
    /// `app`: an application's shape, mostly computation with a few kernel
    /// entries. Each of `n` rounds maps [`APP_PAGES`] pages, computes into
    /// them one after the other (the first touch of each is a demand-zero
    /// fault), reads them back, asks for its id and unmaps them: seven
    /// kernel entries for about 200,000 instructions of its own. A page
    /// that was not zero or did not keep what was written spoils the result.
    pub fn app_loop(n: u64, _unused: u64) -> ! {
        let start = sys::ticks();
        let mut state = work::COMPUTE_SEED;
        let mut spoiled = 0u64;
        let mut round = 0;
        while round < n {
            let Some(mut region) = sys::mmap(APP_PAGES) else { sys::exit(status::NO_MEMORY) };
            let mut page = 0;
            while page < APP_PAGES {
                spoiled |= region.read(page * PAGE_WORDS);
                state = work::app_page(state);
                region.write(page * PAGE_WORDS, state);
                page += 1;
            }
            spoiled |= region.read((APP_PAGES - 1) * PAGE_WORDS) ^ state;
            state = work::fold(state, sys::getpid());
            sys::munmap(region);
            round += 1;
        }
        let ticks = sys::ticks().wrapping_sub(start);
        sys::report(state ^ spoiled, ticks);
        sys::exit(0)
    }
}
