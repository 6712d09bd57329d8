//! Hypercall numbers.

/// Every hypercall the hypervisor implements, by number (the value in `rax`).
///
/// The arguments of each are listed in its doc comment in register order
/// (`rdi`, `rsi`, `rdx`, `r10`, `r8`, `r9`); see the crate documentation for
/// the full register convention. An unknown number returns
/// [`HypercallError::UnknownHypercall`](crate::HypercallError::UnknownHypercall).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u64)]
pub enum Hypercall {
    /// Does nothing and returns 0. Exists to measure the bare cost of a
    /// hypercall round trip; it is served on the entry path's fast lane.
    Null = 0,
    /// Returns the hypervisor's [`ABI_VERSION`](crate::ABI_VERSION).
    AbiVersion = 1,
    /// `console_write(buf: *const u8, len: u64)`: writes bytes to the
    /// hypervisor console, prefixed per line with the domain's name. Returns
    /// the number of bytes written, at most
    /// [`CONSOLE_WRITE_MAX`](crate::console::CONSOLE_WRITE_MAX); a caller
    /// loops for more. Before writing it drains the domain's console ring, so
    /// output stays in order. A zero `len` only drains the ring. Nothing is
    /// written unless the whole buffer is readable.
    ConsoleWrite = 2,
    /// `domain_info(domain_id: u64, out: *mut DomainInfo)`: fills `out` with
    /// the [`DomainInfo`](crate::DomainInfo) of a domain;
    /// [`DOMID_SELF`](crate::domain_info::DOMID_SELF) names the caller.
    DomainInfo = 3,
    /// `yield()`: gives the CPU to the next runnable domain; returns 0 when
    /// the caller runs again.
    Yield = 4,
    /// `exit(status: u64)`: ends the calling domain with `status` (0 means
    /// success). Never returns.
    Exit = 5,
    /// `bench_floor()`: for benchmarks only. Until the caller next enters
    /// the hypervisor other than by `syscall` (any exception, typically the
    /// `int3` the caller ends with), every `syscall` it makes returns at once
    /// through a bare `sysretq`, doing nothing, with `rax` unchanged. This
    /// measures the architectural floor of a `syscall` round trip on the
    /// machine, so the `null` hypercall can be reported beside it. Returns 0.
    BenchFloor = 6,
}

impl Hypercall {
    /// Every hypercall, in number order.
    pub const ALL: [Hypercall; 7] = [
        Hypercall::Null,
        Hypercall::AbiVersion,
        Hypercall::ConsoleWrite,
        Hypercall::DomainInfo,
        Hypercall::Yield,
        Hypercall::Exit,
        Hypercall::BenchFloor,
    ];

    /// The hypercall's name as it appears in logs and documentation.
    pub const fn name(self) -> &'static str {
        match self {
            Hypercall::Null => "null",
            Hypercall::AbiVersion => "abi_version",
            Hypercall::ConsoleWrite => "console_write",
            Hypercall::DomainInfo => "domain_info",
            Hypercall::Yield => "yield",
            Hypercall::Exit => "exit",
            Hypercall::BenchFloor => "bench_floor",
        }
    }
}

impl TryFrom<u64> for Hypercall {
    type Error = crate::HypercallError;

    fn try_from(number: u64) -> Result<Self, Self::Error> {
        Hypercall::ALL
            .get(usize::try_from(number).map_err(|_| crate::HypercallError::UnknownHypercall)?)
            .copied()
            .ok_or(crate::HypercallError::UnknownHypercall)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_round_trip() {
        for (i, h) in Hypercall::ALL.iter().enumerate() {
            assert_eq!(*h as u64, i as u64, "ALL must be in number order");
            assert_eq!(Hypercall::try_from(i as u64), Ok(*h));
        }
        assert_eq!(
            Hypercall::try_from(Hypercall::ALL.len() as u64),
            Err(crate::HypercallError::UnknownHypercall)
        );
        assert_eq!(Hypercall::try_from(u64::MAX), Err(crate::HypercallError::UnknownHypercall));
    }
}
