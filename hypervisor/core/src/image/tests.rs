//! Host tests of [`super`].
use super::test_elf::{ElfSpec, SegSpec};
use super::*;

const R: u32 = PF_R;
const RX: u32 = PF_R | PF_X;
const RW: u32 = PF_R | PF_W;

fn good() -> ElfSpec {
    ElfSpec::guest(vec![
        SegSpec::new(0x40_0000, vec![0x90; 100], 100, RX),
        SegSpec::new(0x40_1000, vec![1; 10], 10, R),
        SegSpec::new(0x40_2000, vec![2; 16], 0x2000, RW),
    ])
}

#[test]
fn parses_a_good_guest() {
    let bytes = good().build();
    let image = GuestImage::parse(&bytes).unwrap();
    assert_eq!(image.entry, 0x40_0000);
    assert_eq!(image.abi_version, ABI_VERSION);
    assert_eq!(image.segments.len(), 3);
    let data = &image.segments[2];
    assert_eq!((data.vaddr, data.memsz, data.filesz), (0x40_2000, 0x2000, 16));
    assert_eq!(data.flags.to_string(), "RW-");
    assert_eq!(image.segments[0].flags.to_string(), "R-X");
    assert_eq!(data.file_bytes(&bytes), &[2u8; 16]);
    assert_eq!(image.segments[0].file_bytes(&bytes), &[0x90u8; 100]);
    assert_eq!(image.start(), 0x40_0000);
    assert_eq!(image.end(), 0x40_4000);
}

#[test]
fn segments_are_sorted_and_empty_ones_skipped() {
    let mut spec = good();
    spec.segments.swap(0, 2);
    spec.segments.push(SegSpec::new(0x50_0000, vec![], 0, R));
    let image = GuestImage::parse(&spec.build()).unwrap();
    let addrs: Vec<u64> = image.segments.iter().map(|s| s.vaddr).collect();
    assert_eq!(addrs, [0x40_0000, 0x40_1000, 0x40_2000]);
    assert_eq!(image.segments[0].index, 2);
}

fn parse_err(bytes: &[u8]) -> ImageError {
    GuestImage::parse(bytes).unwrap_err()
}

#[test]
fn not_elf() {
    assert_eq!(parse_err(b"hello world"), ImageError::NotElf);
    assert_eq!(parse_err(b""), ImageError::NotElf);
    assert_eq!(parse_err(b"\x7fEL"), ImageError::NotElf);
    assert_eq!(parse_err(b"\x7fELF").to_string(), "malformed ELF: file ends inside the ELF header");
    assert!(matches!(parse_err(&good().build()[..40]), ImageError::Malformed { .. }));
}

#[test]
fn header_checks() {
    let mut bytes = good().build();
    bytes[EI_CLASS] = ELFCLASS32;
    assert_eq!(parse_err(&bytes), ImageError::NotElf64 { class: 1 });
    let mut bytes = good().build();
    bytes[EI_DATA] = ELFDATA2MSB;
    assert_eq!(parse_err(&bytes).to_string(), "a big-endian ELF: guests must be little-endian x86_64 executables");
    let mut spec = good();
    spec.machine = 183; // EM_AARCH64
    assert_eq!(parse_err(&spec.build()).to_string(), "an ELF for machine 183, not x86_64 (62)");
    let mut spec = good();
    spec.e_type = 3;
    assert!(parse_err(&spec.build()).to_string().starts_with("a position-independent executable"));
    spec.e_type = 1;
    assert_eq!(parse_err(&spec.build()), ImageError::NotExecutable { e_type: 1 });
}

#[test]
fn abi_note() {
    let mut spec = good();
    spec.note = None;
    assert_eq!(parse_err(&spec.build()), ImageError::NoAbiNote);
    spec.note = Some(ABI_VERSION + 2);
    let e = parse_err(&spec.build());
    assert_eq!(e, ImageError::AbiMismatch { image: ABI_VERSION + 2, hypervisor: ABI_VERSION });
    assert_eq!(
        e.to_string(),
        format!(
            "built for ABI {}, this hypervisor speaks ABI {}: rebuild the guest with this tree's guest SDK",
            ABI_VERSION + 2,
            ABI_VERSION
        )
    );
    let mut spec = good();
    spec.note_owner = "Xen";
    assert_eq!(parse_err(&spec.build()), ImageError::NoAbiNote);
    let mut spec = good();
    spec.note_desc = Some(vec![1, 0]);
    assert_eq!(parse_err(&spec.build()), ImageError::BadAbiNote { desc_len: 2 });
}

#[test]
fn no_load_segments() {
    let mut spec = good();
    spec.segments = vec![SegSpec::new(0x40_0000, vec![], 0, RX)];
    assert_eq!(parse_err(&spec.build()), ImageError::NoLoadSegments);
}

#[test]
fn segment_size_checks() {
    let mut spec = good();
    spec.segments[1].memsz = 5;
    assert_eq!(parse_err(&spec.build()), ImageError::FileSizeExceedsMemSize { index: 1, filesz: 10, memsz: 5 });

    let mut spec = good();
    spec.segments[1].offset_override = Some(1 << 20);
    assert!(matches!(parse_err(&spec.build()), ImageError::SegmentOutsideFile { index: 1, .. }));
    let mut spec = good();
    spec.segments[1].offset_override = Some(u64::MAX - 4);
    assert!(matches!(parse_err(&spec.build()), ImageError::SegmentOutsideFile { index: 1, .. }));

    let mut spec = good();
    spec.segments[2].vaddr = u64::MAX - 0xfff;
    assert_eq!(parse_err(&spec.build()), ImageError::SegmentWraps { index: 2 });
}

#[test]
fn w_xor_x() {
    let mut spec = good();
    spec.segments[2].flags = PF_R | PF_W | PF_X;
    let e = parse_err(&spec.build());
    assert_eq!(e, ImageError::WritableAndExecutable { index: 2, vaddr: 0x40_2000 });
    assert!(e.to_string().contains("both writable and executable (W^X)"));
}

#[test]
fn overlap_and_shared_pages() {
    let mut spec = good();
    spec.segments[1].vaddr = 0x40_0050;
    assert_eq!(parse_err(&spec.build()), ImageError::SegmentsOverlap { first: 0, second: 1, at: 0x40_0050 });
    let mut spec = good();
    spec.segments[1].vaddr = 0x40_0800;
    assert_eq!(parse_err(&spec.build()), ImageError::SegmentsSharePage { first: 0, second: 1, page: 0x40_0000 });
    // Same rights may share a page.
    let mut spec = good();
    spec.segments[1].vaddr = 0x40_0800;
    spec.segments[1].flags = RX;
    assert!(GuestImage::parse(&spec.build()).is_ok());
}

#[test]
fn entry_must_be_executable() {
    let mut spec = good();
    spec.entry = 0x40_1000;
    assert_eq!(parse_err(&spec.build()), ImageError::EntryNotExecutable { entry: 0x40_1000 });
    spec.entry = 0x40_0064; // one past the code
    assert_eq!(parse_err(&spec.build()), ImageError::EntryNotExecutable { entry: 0x40_0064 });
}

#[test]
fn placement() {
    let image = GuestImage::parse(&good().build()).unwrap();
    let p = image.check_placement(2 << 20).unwrap();
    assert_eq!(p.image_start, 0x40_0000);
    assert_eq!(p.image_end, 0x40_4000);
    assert_eq!(p.layout.image, 0..4);
    assert_eq!(p.layout.start_info, 4);
    assert_eq!(p.layout.nr_pages, 512);
    assert_eq!(p.layout, initial_layout(4, 512).unwrap());
}

#[test]
fn placement_below_base() {
    let mut spec = good();
    for s in &mut spec.segments {
        s.vaddr -= 0x20_0000;
    }
    spec.entry -= 0x20_0000;
    let image = GuestImage::parse(&spec.build()).unwrap();
    let e = image.check_placement(2 << 20).unwrap_err();
    assert_eq!(e, ImageError::SegmentBelowBase { index: 0, vaddr: 0x20_0000 });
    assert_eq!(
        e.to_string(),
        "segment 0 starts at 0x200000, below the guest base 0x400000: guests must be linked at 0x400000 (guest-sdk/guest.ld)"
    );
}

#[test]
fn placement_beyond_memory() {
    let mut spec = good();
    spec.segments[2].vaddr = 0x8000_0000;
    let image = GuestImage::parse(&spec.build()).unwrap();
    let e = image.check_placement(2 << 20).unwrap_err();
    assert_eq!(
        e,
        ImageError::SegmentBeyondMemory { index: 2, end: 0x8000_2000, memory_end: 0x60_0000, memory: 2 << 20 }
    );
    assert!(e.to_string().starts_with("segment 2 ends at 0x80002000, beyond the domain's 2M of memory"));
}

#[test]
fn placement_without_room_after_the_image() {
    let mut spec = good();
    spec.segments[2].memsz = 0x1f_0000; // data/bss up to 0x5f2000, 14 pages before the end
    let image = GuestImage::parse(&spec.build()).unwrap();
    let e = image.check_placement(2 << 20).unwrap_err();
    assert!(matches!(e, ImageError::DoesNotFit(LayoutError::TooSmall { have: 512, .. })), "{e:?}");
    assert!(e.to_string().contains("raise `memory`"));
    assert!(image.check_placement(4 << 20).is_ok());
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Parsing never panics, whatever bytes follow a valid header.
        #[test]
        fn parse_never_panics(tail in proptest::collection::vec(any::<u8>(), 0..512), cut in 0usize..600) {
            let mut bytes = good().build();
            let cut = cut.min(bytes.len());
            bytes.truncate(cut.max(64));
            bytes.extend_from_slice(&tail);
            let _ = GuestImage::parse(&bytes);
        }
    }
}


/// A bare-metal kernel: linked and loaded at 2 MiB, no ABI note.
fn kernel() -> ElfSpec {
    let mut spec = ElfSpec::guest(vec![
        SegSpec::new(0x20_0000, vec![0x90; 100], 100, RX),
        SegSpec::new(0x20_1000, vec![2; 16], 0x2000, RW),
    ]);
    spec.note = None;
    spec
}

#[test]
fn a_bare_metal_kernel_parses_and_fits_an_emulated_domain() {
    let image = GuestImage::parse_bare_metal(&kernel().build()).unwrap();
    assert_eq!((image.entry, image.abi_version, image.segments.len()), (0x20_0000, 0, 2));
    assert_eq!(image.check_bare_metal_placement(4 << 20), Ok(()));
    assert_eq!(
        image.check_bare_metal_placement(0x20_2000).unwrap_err().to_string(),
        "segment 1 ends at 0x203000, beyond the domain's 2056K of memory: raise `memory`"
    );
    assert_eq!(
        image.check_bare_metal_placement(512 << 20).unwrap_err().to_string(),
        "an emulated domain may have at most 256M of memory, not 512M"
    );
}

#[test]
fn each_kind_of_image_is_refused_in_the_other_mode() {
    assert_eq!(GuestImage::parse_bare_metal(&good().build()), Err(ImageError::ParavirtualizedInEmulatedDomain));
    let message = GuestImage::parse(&kernel().build()).unwrap_err().to_string();
    assert!(message.contains("an unmodified kernel needs mode = \"emulated\""), "{message}");
}

#[test]
fn bare_metal_segments_load_at_their_own_address_above_the_loader_area() {
    let mut spec = kernel();
    spec.segments[1].paddr_override = Some(0x30_0000);
    assert_eq!(
        GuestImage::parse_bare_metal(&spec.build()),
        Err(ImageError::PhysicalAddressDiffers { index: 1, vaddr: 0x20_1000, paddr: 0x30_0000 })
    );
    let mut spec = kernel();
    spec.segments[0].vaddr = 0x10_0000;
    spec.entry = 0x10_0000;
    let image = GuestImage::parse_bare_metal(&spec.build()).unwrap();
    assert_eq!(image.check_bare_metal_placement(4 << 20), Err(ImageError::SegmentInLoaderArea { index: 0, vaddr: 0x10_0000 }));
}
