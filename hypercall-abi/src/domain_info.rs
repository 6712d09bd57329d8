//! What `domain_info` reports about a domain.

use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Domain id meaning "the calling domain" in `domain_info`.
pub const DOMID_SELF: u64 = 0x7ff0;

/// The life cycle of a domain, as reported in [`DomainInfo::state`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum DomainState {
    /// Can run and is waiting for the CPU (or has it).
    Runnable = 0,
    /// Waiting for an event; takes no CPU.
    Blocked = 1,
    /// Ended by its own `exit`.
    Exited = 2,
    /// Stopped by the hypervisor: after a fault it could not give back, at
    /// its CPU time limit, or waiting for an event nothing could send.
    Crashed = 3,
}

impl DomainState {
    /// The state for a raw value, if it is one.
    pub fn from_raw(raw: u32) -> Option<Self> {
        [Self::Runnable, Self::Blocked, Self::Exited, Self::Crashed]
            .into_iter()
            .find(|s| *s as u32 == raw)
    }

    /// Lower-case name for logs.
    pub const fn name(self) -> &'static str {
        match self {
            DomainState::Runnable => "runnable",
            DomainState::Blocked => "blocked",
            DomainState::Exited => "exited",
            DomainState::Crashed => "crashed",
        }
    }
}

/// Filled in by the `domain_info` hypercall.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct DomainInfo {
    /// The domain's id.
    pub domain_id: u32,
    /// A [`DomainState`] as `u32`.
    pub state: u32,
    /// Number of frames the domain owns.
    pub nr_pages: u64,
    /// Exit status, meaningful when `state` is `Exited`.
    pub exit_status: u64,
    /// Number of domains in the system.
    pub nr_domains: u32,
    /// Length of `name` in bytes.
    pub name_len: u32,
    /// The domain's name (UTF-8, `name_len` bytes used).
    pub name: [u8; crate::start_info::NAME_MAX],
}

const_assert_eq!(core::mem::size_of::<DomainInfo>(), 64);
const_assert_eq!(core::mem::offset_of!(DomainInfo, name), 32);

impl DomainInfo {
    /// The name as a string, or `"?"` if it is not valid UTF-8.
    pub fn name(&self) -> &str {
        core::str::from_utf8(&self.name[..(self.name_len as usize).min(self.name.len())]).unwrap_or("?")
    }
}
