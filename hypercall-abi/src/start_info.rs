//! The start-info page: what a domain learns about itself at boot.

use static_assertions::{const_assert_eq, const_assert};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Magic value at the start of [`StartInfo`]: `"PARVUSSI"` in little-endian.
pub const START_INFO_MAGIC: u64 = u64::from_le_bytes(*b"PARVUSSI");

/// Maximum length of a domain name, in bytes (UTF-8, no terminator).
pub const NAME_MAX: usize = 32;

/// Maximum length of a domain command line, in bytes (UTF-8, no terminator).
pub const CMDLINE_MAX: usize = 1024;

/// The page the hypervisor fills in before a domain's first instruction.
///
/// The guest's entry point is called with `rdi` holding the guest-virtual
/// address of this page and `rsp` at [`StartInfo::stack_top`] (16-byte
/// aligned); every other register is zero. All addresses are guest-virtual
/// unless the field says machine; see [`layout`](crate::layout) for the
/// picture they describe.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct StartInfo {
    /// [`START_INFO_MAGIC`].
    pub magic: u64,
    /// The [`ABI_VERSION`](crate::ABI_VERSION) of the hypervisor that built this page.
    pub abi_version: u32,
    /// The domain's id (domains are numbered from 0 in manifest order).
    pub domain_id: u32,
    /// Number of 4 KiB frames the domain owns (its memory size).
    pub nr_pages: u64,
    /// Guest-virtual address of pfn 0 ([`GUEST_VIRT_BASE`](crate::layout::GUEST_VIRT_BASE)).
    pub virt_base: u64,
    /// Address of the frame list: `nr_pages` little-endian `u64` machine
    /// frame numbers, indexed by pfn.
    pub frame_list: u64,
    /// Address of the first page-table page. The tables occupy
    /// `nr_page_table_pages` consecutive pages, the top-level (PML4) first;
    /// they are mapped read-only.
    pub page_tables: u64,
    /// Number of page-table pages.
    pub nr_page_table_pages: u64,
    /// Address of the [`ConsoleRing`](crate::ConsoleRing) page.
    pub console_ring: u64,
    /// Address of the [`SharedInfo`](crate::SharedInfo) page (events and time).
    pub shared_info: u64,
    /// Lowest address of the initial stack (a guard page below it is unmapped).
    pub stack_bottom: u64,
    /// One past the highest address of the initial stack.
    pub stack_top: u64,
    /// First address of memory the domain may use freely (page-aligned).
    pub free_start: u64,
    /// One past the last address of free memory (page-aligned).
    pub free_end: u64,
    /// First address of the loaded image.
    pub image_start: u64,
    /// One past the last byte of the loaded image (page-aligned).
    pub image_end: u64,
    /// Length of `name` in bytes.
    pub name_len: u32,
    /// Length of `cmdline` in bytes.
    pub cmdline_len: u32,
    /// The domain's name from the manifest (UTF-8, `name_len` bytes used).
    pub name: [u8; NAME_MAX],
    /// The domain's command line from the manifest (UTF-8, `cmdline_len` bytes used).
    pub cmdline: [u8; CMDLINE_MAX],
}

const_assert_eq!(core::mem::size_of::<StartInfo>(), 1184);
const_assert!(core::mem::size_of::<StartInfo>() <= crate::PAGE_SIZE as usize);
const_assert_eq!(core::mem::offset_of!(StartInfo, nr_pages), 16);
const_assert_eq!(core::mem::offset_of!(StartInfo, name_len), 120);
const_assert_eq!(core::mem::offset_of!(StartInfo, name), 128);
const_assert_eq!(core::mem::offset_of!(StartInfo, cmdline), 160);

impl StartInfo {
    /// The domain's name, or `"?"` if the hypervisor wrote invalid UTF-8.
    pub fn name(&self) -> &str {
        utf8_prefix(&self.name, self.name_len as usize)
    }

    /// The domain's command line, or `"?"` if it is not valid UTF-8.
    pub fn cmdline(&self) -> &str {
        utf8_prefix(&self.cmdline, self.cmdline_len as usize)
    }
}

fn utf8_prefix(bytes: &[u8], len: usize) -> &str {
    core::str::from_utf8(&bytes[..len.min(bytes.len())]).unwrap_or("?")
}
