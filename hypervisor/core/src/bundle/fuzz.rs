//! Fuzzing of the boot bundle and the guest images in it: valid bundles,
//! and bundles whose archive (bit flips, truncation, repeated or dropped
//! blocks, header fields set to odd values with their checksum made right
//! again), manifest or ELF images (header fields set to boundary values,
//! bit flips, truncation) are mutated; and ELF images alone, with odd
//! memory sizes.
//!
//! Properties: [`check_bundle`], [`GuestImage::parse`] (either kind) and
//! the placement checks never panic and never hang; a rejection is a typed
//! error displayed as one printable line, which for the manifest and the
//! images names `manifest.toml`, the domain and the field; an accepted
//! bundle keeps every promise the domain builder relies on (segments
//! inside the file and the domain, sorted, the entry executable), and,
//! written out again from its files, is accepted as the same bundle.
//!
//! Replay as `crate::testing::fuzz` says, e.g.
//! `PARVUS_FUZZ_SEED=0x... PARVUS_FUZZ_CASE=... cargo test -p parvus-core fuzz_bundle`.

use std::sync::OnceLock;

use super::tests::{set_checksum, tar};
use super::*;
use crate::image::test_elf::{ElfSpec, SegSpec};
use crate::testing::fuzz::{self, Rng};
use hypercall_abi::bare_metal::LOADER_AREA_END;
use hypercall_abi::layout::GUEST_VIRT_BASE;
use hypercall_abi::PAGE_SIZE;

/// Cases per run.
const CASES: u64 = 100_000;

const RX: u32 = 5;
const RW: u32 = 6;
const R: u32 = 4;

/// An image to put in a bundle, and the domain that can run it.
struct Image {
    bytes: Vec<u8>,
    emulated: bool,
    /// The least memory that holds it (with what the hypervisor adds).
    memory: &'static str,
}

/// A few valid images of both kinds, built once (`object`'s writer is
/// slow next to a case).
fn images() -> &'static [Image] {
    static IMAGES: OnceLock<Vec<Image>> = OnceLock::new();
    IMAGES.get_or_init(|| {
        let guest = |segments: Vec<SegSpec>| ElfSpec::guest(segments).build();
        let mut kernel = ElfSpec::guest(vec![
            SegSpec::new(LOADER_AREA_END, vec![0x90; 100], 100, RX),
            SegSpec::new(LOADER_AREA_END + 0x1000, vec![2; 16], 0x2000, RW),
        ]);
        kernel.note = None;
        vec![
            Image {
                bytes: guest(vec![
                    SegSpec::new(GUEST_VIRT_BASE, vec![0x90; 64], 64, RX),
                    SegSpec::new(GUEST_VIRT_BASE + 0x1000, vec![7; 8], 0x1000, RW),
                ]),
                emulated: false,
                memory: "1M",
            },
            Image {
                bytes: guest(vec![SegSpec::new(GUEST_VIRT_BASE, vec![0xc3; 16], 16, RX)]),
                emulated: false,
                memory: "1M",
            },
            Image {
                bytes: guest(vec![
                    SegSpec::new(GUEST_VIRT_BASE + 0x2000, vec![0x90; 300], 300, RX),
                    SegSpec::new(GUEST_VIRT_BASE + 0x3000, vec![1; 40], 40, R),
                    SegSpec::new(GUEST_VIRT_BASE + 0x4000, vec![], 0x8000, RW),
                ]),
                emulated: false,
                memory: "2M",
            },
            Image { bytes: kernel.build(), emulated: true, memory: "4M" },
        ]
    })
}

/// A valid bundle of 1 to 3 domains: its files and manifest.
fn valid_files(rng: &mut Rng) -> Vec<(String, Vec<u8>)> {
    let mut manifest = String::new();
    let mut files = Vec::new();
    for i in 0..1 + rng.below(3) {
        let image = rng.pick(images());
        let name = format!("d{i}");
        let path = if rng.chance(1, 4) { format!("./{}", image_path(&name)) } else { image_path(&name) };
        manifest.push_str(&format!(
            "[[domain]]\nname = \"{name}\"\nimage = \"{}\"\nmemory = \"{}\"\n",
            image_path(&name),
            image.memory
        ));
        if image.emulated {
            manifest.push_str("mode = \"emulated\"\n");
        }
        files.push((path, image.bytes.clone()));
    }
    files.insert(rng.index(files.len() + 1), (MANIFEST_PATH.to_string(), manifest.into_bytes()));
    files
}

fn archive(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let refs: Vec<(&str, &[u8])> = files.iter().map(|(p, d)| (p.as_str(), d.as_slice())).collect();
    tar(&refs)
}

/// Boundary values for a 64-bit field of an ELF header.
fn odd_u64(rng: &mut Rng, file_len: u64) -> u64 {
    let values = [
        0,
        1,
        0xfff,
        PAGE_SIZE,
        file_len,
        file_len.wrapping_sub(1),
        file_len + 1,
        GUEST_VIRT_BASE,
        GUEST_VIRT_BASE - 1,
        LOADER_AREA_END,
        0x7fff_ffff_f000,
        1 << 47,
        1 << 63,
        u64::MAX - 0xfff,
        u64::MAX,
    ];
    if rng.chance(1, 5) {
        rng.next_u64()
    } else {
        *rng.pick(&values)
    }
}

/// An ELF image changed at random: header fields set to boundary values,
/// bits flipped, bytes cut.
fn mutate_elf(rng: &mut Rng, bytes: &mut Vec<u8>) {
    const EHDR_FIELDS: [(usize, usize); 8] = [(24, 8), (32, 8), (40, 8), (52, 2), (54, 2), (56, 2), (16, 2), (18, 2)];
    const PHDR_FIELDS: [(usize, usize); 8] = [(0, 4), (4, 4), (8, 8), (16, 8), (24, 8), (32, 8), (40, 8), (48, 8)];
    for _ in 0..1 + rng.below(3) {
        let len = bytes.len();
        match rng.below(6) {
            0 => {
                let (at, size) = *rng.pick(&EHDR_FIELDS);
                let value = odd_u64(rng, len as u64);
                put(bytes, at, size, value);
            }
            1 | 2 => {
                // A field of one of the program headers (or just past them).
                let phoff = read(bytes, 32, 8) as usize;
                let phnum = read(bytes, 56, 2) as usize;
                let index = rng.index(phnum + 1);
                let (at, size) = *rng.pick(&PHDR_FIELDS);
                let value = odd_u64(rng, len as u64);
                put(bytes, phoff.saturating_add(index * 56).saturating_add(at), size, value);
            }
            3 if len > 0 => {
                let at = rng.index(len.min(1024));
                bytes[at] ^= 1 << rng.below(8);
            }
            4 => bytes.truncate(rng.index(len + 1)),
            _ => {
                // The note's sizes (after the program headers, near the end).
                let at = len.saturating_sub(rng.index(64) + 1);
                let value = odd_u64(rng, len as u64);
                put(bytes, at, 4, value);
            }
        }
    }
}

/// Little-endian `size` bytes at `at`, if they are in `bytes`.
fn put(bytes: &mut [u8], at: usize, size: usize, value: u64) {
    if let Some(field) = at.checked_add(size).and_then(|end| bytes.get_mut(at..end)) {
        field.copy_from_slice(&value.to_le_bytes()[..size]);
    }
}

fn read(bytes: &[u8], at: usize, size: usize) -> u64 {
    let mut word = [0u8; 8];
    if let Some(field) = bytes.get(at..at + size) {
        word[..size].copy_from_slice(field);
    }
    u64::from_le_bytes(word)
}

/// A tar header field (offset, length).
const TAR_FIELDS: [(usize, usize); 9] =
    [(0, 100), (100, 8), (124, 12), (136, 12), (156, 1), (157, 100), (257, 6), (263, 2), (345, 155)];

/// Values for a tar header field: odd octal numbers, the base-256 form,
/// names without their terminator, other file types.
fn odd_tar_value(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut v: Vec<u8> = match rng.below(8) {
        0 => b"77777777777\0".to_vec(),
        1 => {
            let mut big = vec![0x80];
            big.extend((1..len).map(|_| rng.below(256) as u8));
            big
        }
        2 => format!("{:o}", rng.below(1 << 20)).into_bytes(),
        3 => vec![b'x'; len],
        4 => (0..len).map(|_| rng.below(256) as u8).collect(),
        5 => rng.pick(&[b"5".as_slice(), b"1", b"2", b"L", b"x", b"g", b"\0", b"7"]).to_vec(),
        6 => rng
            .pick(&[
                b"manifest.toml".as_slice(),
                b"./manifest.toml",
                b"images/d0.elf",
                b"images/d1.elf",
                b"\xff\xfe",
                b"a/../manifest.toml",
            ])
            .to_vec(),
        _ => Vec::new(),
    };
    v.resize(len, 0);
    v
}

/// Makes the checksum of the 512-byte header at `at` right again.
fn fix_checksum(bytes: &mut [u8], at: usize) {
    if let Some(header) = bytes.get_mut(at..at + 512).and_then(|h| <&mut [u8; 512]>::try_from(h).ok()) {
        set_checksum(header);
    }
}

/// An archive changed at random.
fn mutate_tar(rng: &mut Rng, bytes: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(3) {
        let blocks = bytes.len() / 512;
        match rng.below(6) {
            0 if !bytes.is_empty() => {
                let at = rng.index(bytes.len());
                bytes[at] ^= 1 << rng.below(8);
            }
            1 => {
                let cut = if rng.chance(1, 2) { rng.index(blocks + 1) * 512 } else { rng.index(bytes.len() + 1) };
                bytes.truncate(cut);
            }
            2 if blocks > 0 => {
                // A block repeated, dropped or moved.
                let b = rng.index(blocks) * 512;
                let block = bytes[b..b + 512].to_vec();
                match rng.below(3) {
                    0 => {
                        let to = rng.index(blocks + 1) * 512;
                        bytes.splice(to..to, block);
                    }
                    1 => {
                        bytes.drain(b..b + 512);
                    }
                    _ => {
                        let to = rng.index(blocks) * 512;
                        bytes.copy_within(to..to + 512, b);
                        bytes[to..to + 512].copy_from_slice(&block);
                    }
                }
            }
            _ if blocks > 0 => {
                // A header field set to an odd value, the checksum made
                // right, so that the reader looks further. (Not every
                // block is a header: then this corrupts data, also fine.)
                let b = rng.index(blocks) * 512;
                let (at, len) = *rng.pick(&TAR_FIELDS);
                let value = odd_tar_value(rng, len);
                bytes[b + at..b + at + len].copy_from_slice(&value);
                fix_checksum(bytes, b);
            }
            _ => {}
        }
    }
}

/// Checks a rejection's message.
fn check_error(e: &BundleError) {
    let shown = e.to_string();
    assert!(!shown.chars().any(char::is_control), "not one printable line: {shown:?}");
    match e {
        BundleError::Manifest(_) => assert!(shown.starts_with("manifest.toml:"), "{shown}"),
        BundleError::MissingImage { .. } | BundleError::Image { .. } => {
            assert!(shown.starts_with("manifest.toml: domain \""), "{shown}");
            assert!(shown.contains("field `image`"), "{shown}");
        }
        _ => {}
    }
}

/// What the domain builder relies on in an accepted image.
fn check_image(image: &GuestImage, bytes: &[u8]) {
    assert!(!image.segments.is_empty());
    for s in &image.segments {
        assert!(s.filesz <= s.memsz && s.memsz > 0);
        assert_eq!(s.file_bytes(bytes).len() as u64, s.filesz);
        assert!(!(s.flags.write && s.flags.execute));
    }
    for pair in image.segments.windows(2) {
        assert!(pair[0].end() <= pair[1].vaddr, "{:?}", image.segments);
    }
    assert!(image.segments.iter().any(|s| s.flags.execute && (s.vaddr..s.end()).contains(&image.entry)));
}

/// What the domain builder relies on in an accepted bundle.
fn check_accepted(checked: &CheckedBundle<'_>) {
    for d in &checked.domains {
        check_image(&d.image, d.image_bytes);
        let memory = d.spec.memory.bytes();
        match (&d.placement, d.spec.mode) {
            (Some(p), Mode::Paravirtualized) => {
                assert_eq!(p.layout.nr_pages, memory / PAGE_SIZE);
                assert!(p.image_start >= GUEST_VIRT_BASE && p.image_end <= GUEST_VIRT_BASE + memory);
            }
            (None, Mode::Emulated) => {
                assert!(d.image.segments.iter().all(|s| s.vaddr >= LOADER_AREA_END && s.end() <= memory));
            }
            (placement, mode) => panic!("{mode} domain with placement {placement:?}"),
        }
    }
}

/// Checks a whole bundle; when accepted, writes it out again from its
/// files and checks that the copy is the same bundle.
fn check(bytes: &[u8]) {
    match check_bundle(bytes) {
        Err(e) => check_error(&e),
        Ok(checked) => {
            check_accepted(&checked);
            let bundle = Bundle::parse(bytes).expect("a checked bundle parses");
            let files: Vec<(String, Vec<u8>)> =
                bundle.files().iter().map(|f| (f.path.clone(), f.data.to_vec())).collect();
            let copy = archive(&files);
            let again = check_bundle(&copy).unwrap_or_else(|e| panic!("the bundle written again is refused: {e}"));
            assert_eq!(again.machine, checked.machine);
            assert_eq!(again.domains.len(), checked.domains.len());
            for (a, b) in again.domains.iter().zip(&checked.domains) {
                assert_eq!(
                    (&a.spec, &a.image, a.image_bytes, &a.placement),
                    (&b.spec, &b.image, b.image_bytes, &b.placement)
                );
            }
        }
    }
}

fn valid(rng: &mut Rng) {
    let bytes = archive(&valid_files(rng));
    let checked = check_bundle(&bytes).unwrap_or_else(|e| panic!("a valid bundle is refused: {e}"));
    check_accepted(&checked);
}

fn archive_mutated(rng: &mut Rng) {
    let mut bytes = archive(&valid_files(rng));
    mutate_tar(rng, &mut bytes);
    check(&bytes);
}

fn image_mutated(rng: &mut Rng) {
    let mut files = valid_files(rng);
    let images: Vec<usize> = (0..files.len()).filter(|&i| files[i].0 != MANIFEST_PATH).collect();
    let i = *rng.pick(&images);
    mutate_elf(rng, &mut files[i].1);
    check(&archive(&files));
    // The image alone, as either kind, in a domain of any size.
    let bytes = &files[i].1;
    let any = rng.next_u64();
    let memory = *rng.pick(&[0, 1, PAGE_SIZE, 1 << 20, 0x20_2000, 4 << 20, 256 << 20, 1 << 40, u64::MAX, any]);
    for kind in [GuestImage::parse, GuestImage::parse_bare_metal] {
        match kind(bytes) {
            Ok(image) => {
                check_image(&image, bytes);
                if let Ok(p) = image.check_placement(memory) {
                    assert!(p.image_end <= GUEST_VIRT_BASE + memory);
                }
                let _ = image.check_bare_metal_placement(memory);
            }
            Err(e) => assert!(!e.to_string().chars().any(char::is_control), "{e}"),
        }
    }
}

fn manifest_mutated(rng: &mut Rng) {
    let mut files = valid_files(rng);
    let m = files.iter().position(|(p, _)| p == MANIFEST_PATH).expect("a manifest");
    let text = &mut files[m].1;
    for _ in 0..1 + rng.below(3) {
        let len = text.len();
        let at = rng.index(len + 1);
        match rng.below(4) {
            0 if len > 0 => text[at.min(len - 1)] ^= 1 << rng.below(8),
            1 => text.truncate(at),
            2 => text
                .splice(
                    at..at,
                    rng.pick(&[
                        b"\xff".as_slice(),
                        b"\"",
                        b"\n[[domain]]\n",
                        b"mode = \"emulated\"\n",
                        b"memory = \"8K\"\n",
                        b"../",
                        b"./",
                    ])
                    .iter()
                    .copied(),
                )
                .for_each(drop),
            _ => {
                let image = format!("images/d{}.elf", rng.below(4));
                let replaced = String::from_utf8_lossy(text).replacen("images/d0.elf", &image, 1);
                *text = replaced.into_bytes();
            }
        }
    }
    check(&archive(&files));
}

fn garbage(rng: &mut Rng) {
    let len = if rng.chance(1, 2) { rng.index(8) * 512 } else { rng.index(4096) };
    let mut bytes = vec![0u8; len];
    match rng.below(3) {
        0 => {}
        1 => bytes.chunks_mut(8).for_each(|chunk| chunk.copy_from_slice(&rng.next_u64().to_le_bytes()[..chunk.len()])),
        _ => {
            // Bytes a tar header is made of, a few of them.
            for _ in 0..rng.below(64) {
                if let Some(b) = bytes.get_mut(rng.index(len.max(1))) {
                    *b = *rng.pick(b"0 \0ustar7\x80");
                }
            }
        }
    }
    check(&bytes);
}

fn case(rng: &mut Rng) {
    match rng.below(20) {
        0..=1 => valid(rng),
        2..=8 => archive_mutated(rng),
        9..=15 => image_mutated(rng),
        16..=18 => manifest_mutated(rng),
        _ => garbage(rng),
    }
}

#[test]
fn fuzz_bundle() {
    fuzz::run("fuzz_bundle", CASES, case);
}
