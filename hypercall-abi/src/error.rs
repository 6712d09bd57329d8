//! Typed hypercall errors and their encoding in `rax`.

/// Why a hypercall failed. Encoded in `rax` as the negated code (see
/// [`encode_result`]); codes are stable within an [`ABI_VERSION`](crate::ABI_VERSION).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u64)]
pub enum HypercallError {
    /// `rax` held a number that is not a [`Hypercall`](crate::Hypercall).
    UnknownHypercall = 1,
    /// A pointer argument (with its length) is not entirely mapped in the
    /// caller's address space with the access the call needs, wraps around,
    /// or reaches hypervisor memory.
    BadAddress = 2,
    /// A non-pointer argument is out of range or malformed (for example an
    /// unknown flag or an impossible size).
    BadArgument = 3,
    /// The caller may not do this to the object it named.
    PermissionDenied = 4,
    /// The hypervisor, or the caller's memory allowance, has no room left.
    OutOfMemory = 5,
    /// The caller was built for another [`ABI_VERSION`](crate::ABI_VERSION).
    AbiMismatch = 6,
    /// The domain id names no domain.
    NoSuchDomain = 7,
    /// A page-table entry or operation names a frame the caller does not own.
    FrameNotOwned = 8,
    /// A writable mapping of a frame that is (or is about to be) a page
    /// table: page tables are read-only to their guest.
    FrameIsPageTable = 9,
    /// The entry would reach memory of the hypervisor (or memory nobody
    /// owns), or a top-level slot the hypervisor reserves.
    HypervisorMemory = 10,
    /// The frame is in use as another type of page (for example an L1 table
    /// where an L3 is needed, which is how a self-referencing L4 is caught).
    PageTypeConflict = 11,
    /// The frame is mapped writable somewhere, so it cannot become a page table.
    FrameMappedWritable = 12,
    /// The frame is still referenced (by a mapping, a page table or a base
    /// pointer) and cannot be released or retyped.
    TypeCountInUse = 13,
    /// Guest mappings must be user mappings (the guest kernel runs in ring 3
    /// too); an entry without the user bit is refused.
    SupervisorMapping = 14,
    /// Large pages, global pages and reserved bits are not accepted in guest entries.
    UnsupportedEntryBits = 15,
    /// The machine address is not inside one of the caller's validated page tables.
    NotAPageTable = 16,
    /// An address that must be aligned (an entry address to 8, a frame to 4 KiB) is not.
    Misaligned = 17,
    /// The request would take the domain above its memory limit.
    OverLimit = 18,
    /// Unpinning a table that is not pinned.
    NotPinned = 19,
    /// Pinning a table that is already pinned.
    AlreadyPinned = 20,
    /// The port number is out of range or not allocated.
    NoSuchPort = 21,
    /// The port is not in the state the operation needs (for example a send
    /// on an unbound port, or binding a port that is already connected).
    WrongPortState = 22,
    /// No free port is left, or the virtual interrupt is already bound.
    PortInUse = 23,
    /// `poll` ended at its timeout with none of its ports pending.
    TimedOut = 24,
    /// The hypervisor returned a code this version of the ABI does not know
    /// (only produced by [`decode_result`], never sent by the hypervisor).
    Unrecognized = 4095,
}

impl HypercallError {
    /// Every error the hypervisor can return.
    pub const ALL: [HypercallError; 24] = [
        HypercallError::UnknownHypercall,
        HypercallError::BadAddress,
        HypercallError::BadArgument,
        HypercallError::PermissionDenied,
        HypercallError::OutOfMemory,
        HypercallError::AbiMismatch,
        HypercallError::NoSuchDomain,
        HypercallError::FrameNotOwned,
        HypercallError::FrameIsPageTable,
        HypercallError::HypervisorMemory,
        HypercallError::PageTypeConflict,
        HypercallError::FrameMappedWritable,
        HypercallError::TypeCountInUse,
        HypercallError::SupervisorMapping,
        HypercallError::UnsupportedEntryBits,
        HypercallError::NotAPageTable,
        HypercallError::Misaligned,
        HypercallError::OverLimit,
        HypercallError::NotPinned,
        HypercallError::AlreadyPinned,
        HypercallError::NoSuchPort,
        HypercallError::WrongPortState,
        HypercallError::PortInUse,
        HypercallError::TimedOut,
    ];

    /// The error's stable code (positive; `rax` carries its negation).
    pub const fn code(self) -> u64 {
        self as u64
    }

    /// The error for a code, or [`HypercallError::Unrecognized`].
    pub fn from_code(code: u64) -> Self {
        HypercallError::ALL
            .iter()
            .copied()
            .find(|e| e.code() == code)
            .unwrap_or(HypercallError::Unrecognized)
    }

    /// A short human-readable description, used in logs and guest output.
    pub const fn describe(self) -> &'static str {
        match self {
            HypercallError::UnknownHypercall => "unknown hypercall",
            HypercallError::BadAddress => "bad guest address",
            HypercallError::BadArgument => "bad argument",
            HypercallError::PermissionDenied => "permission denied",
            HypercallError::OutOfMemory => "out of memory",
            HypercallError::AbiMismatch => "ABI version mismatch",
            HypercallError::NoSuchDomain => "no such domain",
            HypercallError::FrameNotOwned => "frame not owned",
            HypercallError::FrameIsPageTable => "frame is a page table",
            HypercallError::HypervisorMemory => "would map hypervisor memory",
            HypercallError::PageTypeConflict => "frame in use as another page type",
            HypercallError::FrameMappedWritable => "frame is mapped writable",
            HypercallError::TypeCountInUse => "type count in use",
            HypercallError::SupervisorMapping => "supervisor mapping not allowed",
            HypercallError::UnsupportedEntryBits => "large, global or reserved bits not allowed",
            HypercallError::NotAPageTable => "not a page table of the caller",
            HypercallError::Misaligned => "misaligned address",
            HypercallError::OverLimit => "memory limit reached",
            HypercallError::NotPinned => "table not pinned",
            HypercallError::AlreadyPinned => "table already pinned",
            HypercallError::NoSuchPort => "no such port",
            HypercallError::WrongPortState => "port in the wrong state",
            HypercallError::PortInUse => "port in use",
            HypercallError::TimedOut => "timed out",
            HypercallError::Unrecognized => "unrecognized error code",
        }
    }
}

impl core::fmt::Display for HypercallError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.describe())
    }
}

/// Largest error code; results at or above `2^64 - MAX_ERROR_CODE` are errors.
pub const MAX_ERROR_CODE: u64 = 4095;

/// Encodes a hypercall result for `rax`: a value as itself, an error as its
/// negated code. Values at or above `2^64 - 4095` cannot be returned; no
/// hypercall produces one.
pub const fn encode_result(result: Result<u64, HypercallError>) -> u64 {
    match result {
        Ok(value) => value,
        Err(e) => e.code().wrapping_neg(),
    }
}

/// Decodes `rax` after a hypercall.
pub fn decode_result(rax: u64) -> Result<u64, HypercallError> {
    if rax >= MAX_ERROR_CODE.wrapping_neg() {
        Err(HypercallError::from_code(rax.wrapping_neg()))
    } else {
        Ok(rax)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_round_trip() {
        for v in [0u64, 1, 42, 1 << 40, u64::MAX - 4095] {
            assert_eq!(decode_result(encode_result(Ok(v))), Ok(v));
        }
        for e in HypercallError::ALL {
            assert_eq!(decode_result(encode_result(Err(e))), Err(e));
        }
        assert_eq!(decode_result(u64::MAX - 4094 + 1000), Err(HypercallError::Unrecognized));
        assert_eq!(decode_result(u64::MAX - 4094), Err(HypercallError::Unrecognized));
        assert_eq!(HypercallError::BadAddress.to_string(), "bad guest address");
    }
}
