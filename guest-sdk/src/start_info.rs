//! The start-info page: checked once at boot, then readable from anywhere.

use core::fmt;

use hypercall_abi::start_info::START_INFO_MAGIC;
use hypercall_abi::{StartInfo, ABI_VERSION, PAGE_SIZE};
use spin::Once;

static START_INFO: Once<&'static StartInfo> = Once::new();

/// The start-info page the hypervisor gave this domain: its id, name,
/// memory layout and command line.
///
/// # Panics
///
/// If called before the SDK's entry code has run, which only code that runs
/// before `main` (there is none in a normal guest) could do.
pub fn start_info() -> &'static StartInfo {
    START_INFO
        .get()
        .copied()
        .expect("start_info() called before the SDK's entry code ran")
}

/// Why the SDK refused to call `main`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StartInfoError {
    /// `rdi` did not hold an aligned, non-null address.
    BadPointer(u64),
    /// The page does not begin with `START_INFO_MAGIC`.
    BadMagic(u64),
    /// The hypervisor speaks another ABI version than this guest was built for.
    AbiMismatch { hypervisor: u32 },
}

impl fmt::Display for StartInfoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartInfoError::BadPointer(addr) => {
                write!(f, "start info pointer {addr:#x} is null or misaligned")
            }
            StartInfoError::BadMagic(magic) => {
                write!(f, "start info magic is {magic:#x}, expected {START_INFO_MAGIC:#x}")
            }
            StartInfoError::AbiMismatch { hypervisor } => write!(
                f,
                "this guest was built for ABI version {ABI_VERSION}, the hypervisor speaks version {hypervisor}"
            ),
        }
    }
}

/// Checks the page and makes it available through [`start_info`].
pub(crate) fn install(info: &'static StartInfo) -> Result<(), StartInfoError> {
    if info.magic != START_INFO_MAGIC {
        return Err(StartInfoError::BadMagic(info.magic));
    }
    if info.abi_version != ABI_VERSION {
        return Err(StartInfoError::AbiMismatch { hypervisor: info.abi_version });
    }
    START_INFO.call_once(|| info);
    Ok(())
}

/// Whether `[start, start + len)` lies inside the domain's memory window.
/// The SDK checks the addresses it is about to use as memory (console ring,
/// heap) so a confused hypervisor shows up as a message, not a wild write.
pub(crate) fn in_domain_memory(info: &StartInfo, start: u64, len: u64) -> bool {
    let window_end = info.nr_pages.checked_mul(PAGE_SIZE).and_then(|size| info.virt_base.checked_add(size));
    match (window_end, start.checked_add(len)) {
        (Some(window_end), Some(end)) => start >= info.virt_base && end <= window_end,
        _ => false,
    }
}
