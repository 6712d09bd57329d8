//! Why an emulated domain left the guest: counted by cause.
//!
//! Every exit is the price of pure virtualization, paid in hypervisor
//! instructions; the summary prints these per domain and `cargo xtask
//! compare` divides them by the workload's operations.

/// Exits of one emulated domain, by cause.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitCounters {
    /// Privileged instructions emulated (not counting port I/O).
    pub instructions: u64,
    /// Port I/O instructions emulated.
    pub io: u64,
    /// Page faults the guest had to see (its own #PF, reflected).
    pub guest_page_faults: u64,
    /// Page faults that only filled the shadow tables.
    pub shadow_fills: u64,
    /// Guest writes to its own page tables, emulated and synced.
    pub page_table_writes: u64,
    /// Virtual interrupts delivered through the guest's IDT.
    pub interrupts: u64,
    /// Other exceptions reflected to the guest (its processes' errors).
    pub exceptions: u64,
    /// `syscall` from the guest (always an exit: the CPU enters the hypervisor).
    pub syscalls: u64,
}

impl ExitCounters {
    /// All exits.
    pub fn total(&self) -> u64 {
        self.instructions
            + self.io
            + self.guest_page_faults
            + self.shadow_fills
            + self.page_table_writes
            + self.interrupts
            + self.exceptions
            + self.syscalls
    }
}

impl core::fmt::Display for ExitCounters {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "exits={} (instructions={} io={} guest-page-faults={} shadow-fills={} page-table-writes={} interrupts={} exceptions={} syscalls={})",
            self.total(),
            self.instructions,
            self.io,
            self.guest_page_faults,
            self.shadow_fills,
            self.page_table_writes,
            self.interrupts,
            self.exceptions,
            self.syscalls
        )
    }
}
