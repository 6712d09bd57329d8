//! The boot bundle: one plain ustar archive (QEMU's `-initrd`) holding
//! `manifest.toml` and the guest images, so a person can list it with
//! `tar tvf`.
//!
//! `cargo xtask build` writes it with each domain's `image` rewritten to
//! [`image_path`] (`images/<domain name>.elf`). The hypervisor trusts none of
//! it: [`check_bundle`] runs the very checks xtask ran (manifest, every
//! image, every placement) and returns everything the domain builder needs,
//! or the first problem as a one-line [`BundleError`].

use alloc::borrow::ToOwned;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use tar_no_std::{CorruptDataError, TarArchiveRef};

use crate::image::{GuestImage, ImageError, Placement};
use crate::manifest::{DomainSpec, MachineSpec, Manifest, ManifestError, Mode};

/// Path of the manifest inside a bundle.
pub const MANIFEST_PATH: &str = "manifest.toml";

/// Path of a domain's image inside a bundle.
pub fn image_path(domain_name: &str) -> String {
    format!("images/{domain_name}.elf")
}

/// One regular file of a bundle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BundleFile<'a> {
    /// Its path, without a leading `./`.
    pub path: String,
    /// Its bytes.
    pub data: &'a [u8],
}

/// A readable bundle with a UTF-8 `manifest.toml` (not yet validated).
#[derive(Clone, Debug)]
pub struct Bundle<'a> {
    files: Vec<BundleFile<'a>>,
    manifest: &'a str,
}

/// Why a bundle was refused. Displays as one line that names the file (and
/// the domain and field, for manifest and image problems).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BundleError {
    /// The bytes are not a ustar archive.
    NotTar(CorruptDataError),
    /// A file name in the archive is not UTF-8.
    BadFileName,
    /// The same path appears twice.
    DuplicateFile(String),
    /// There is no `manifest.toml`.
    NoManifest,
    /// `manifest.toml` is not UTF-8.
    ManifestNotUtf8 {
        /// Offset of the first bad byte.
        offset: usize,
    },
    /// The manifest is refused.
    Manifest(ManifestError),
    /// A domain's image is not in the bundle.
    MissingImage {
        /// The domain's name.
        domain: String,
        /// The path its `image` names.
        path: String,
    },
    /// A domain's image is refused.
    Image {
        /// The domain's name.
        domain: String,
        /// The path its `image` names.
        path: String,
        /// Why.
        error: ImageError,
    },
}

impl fmt::Display for BundleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BundleError::NotTar(e) => write!(f, "not a tar archive: {e}"),
            BundleError::BadFileName => f.write_str("a file name in the archive is not UTF-8"),
            BundleError::DuplicateFile(path) => write!(f, "{} appears twice in the archive", path.escape_debug()),
            BundleError::NoManifest => write!(f, "no {MANIFEST_PATH} in the archive"),
            BundleError::ManifestNotUtf8 { offset } => {
                write!(f, "{MANIFEST_PATH}: not UTF-8 (bad byte at offset {offset})")
            }
            BundleError::Manifest(e) => write!(f, "{}", e.in_file(MANIFEST_PATH)),
            BundleError::MissingImage { domain, path } => write!(
                f,
                "{MANIFEST_PATH}: domain \"{}\", field `image`: no file {} in the archive",
                domain.escape_debug(),
                path.escape_debug()
            ),
            BundleError::Image { domain, path, error } => write!(
                f,
                "{MANIFEST_PATH}: domain \"{}\", field `image` ({}): {error}",
                domain.escape_debug(),
                path.escape_debug()
            ),
        }
    }
}

impl<'a> Bundle<'a> {
    /// Reads the archive's file list and its manifest text.
    pub fn parse(bytes: &'a [u8]) -> Result<Bundle<'a>, BundleError> {
        let archive = TarArchiveRef::new(bytes).map_err(BundleError::NotTar)?;
        let mut files: Vec<BundleFile<'a>> = Vec::new();
        for entry in archive.entries() {
            let name = entry.filename();
            let name = name.as_str().map_err(|_| BundleError::BadFileName)?;
            let path = name.strip_prefix("./").unwrap_or(name).to_owned();
            if files.iter().any(|f| f.path == path) {
                return Err(BundleError::DuplicateFile(path));
            }
            files.push(BundleFile { path, data: entry.data() });
        }
        let manifest = files.iter().find(|f| f.path == MANIFEST_PATH).ok_or(BundleError::NoManifest)?.data;
        let manifest =
            core::str::from_utf8(manifest).map_err(|e| BundleError::ManifestNotUtf8 { offset: e.valid_up_to() })?;
        Ok(Bundle { files, manifest })
    }

    /// The text of `manifest.toml`.
    pub fn manifest_text(&self) -> &'a str {
        self.manifest
    }

    /// The bytes of the file at `path` (a leading `./` is ignored).
    pub fn file(&self, path: &str) -> Option<&'a [u8]> {
        let path = path.strip_prefix("./").unwrap_or(path);
        self.files.iter().find(|f| f.path == path).map(|f| f.data)
    }

    /// Every regular file, in archive order.
    pub fn files(&self) -> &[BundleFile<'a>] {
        &self.files
    }
}

/// A domain whose manifest entry, image and placement all passed.
#[derive(Clone, Debug)]
pub struct CheckedDomain<'a> {
    /// Its manifest entry.
    pub spec: DomainSpec,
    /// The image file's bytes (segment data is read from here).
    pub image_bytes: &'a [u8],
    /// The checked image.
    pub image: GuestImage,
    /// Where everything goes in a paravirtualized domain's memory (`None`
    /// for an emulated one: its kernel lays out its own memory).
    pub placement: Option<Placement>,
}

/// A bundle that passed every check, in manifest (domain id) order.
#[derive(Clone, Debug)]
pub struct CheckedBundle<'a> {
    /// The `[machine]` table.
    pub machine: MachineSpec,
    /// The domains.
    pub domains: Vec<CheckedDomain<'a>>,
}

/// Checks a whole bundle the way the hypervisor must before building
/// anything: the archive, the manifest, and for every domain its image and
/// its placement in the domain's memory. Returns the first problem.
pub fn check_bundle(bytes: &[u8]) -> Result<CheckedBundle<'_>, BundleError> {
    let bundle = Bundle::parse(bytes)?;
    let manifest = Manifest::parse(bundle.manifest_text()).map_err(BundleError::Manifest)?;
    let mut domains = Vec::with_capacity(manifest.domains.len());
    for spec in manifest.domains {
        let image_bytes = bundle
            .file(&spec.image)
            .ok_or_else(|| BundleError::MissingImage { domain: spec.name.clone(), path: spec.image.clone() })?;
        let image_error = |error| BundleError::Image { domain: spec.name.clone(), path: spec.image.clone(), error };
        let (image, placement) = match spec.mode {
            Mode::Paravirtualized => {
                let image = GuestImage::parse(image_bytes).map_err(image_error)?;
                let placement = image.check_placement(spec.memory.bytes()).map_err(image_error)?;
                (image, Some(placement))
            }
            Mode::Emulated => {
                let image = GuestImage::parse_bare_metal(image_bytes).map_err(image_error)?;
                image.check_bare_metal_placement(spec.memory.bytes()).map_err(image_error)?;
                (image, None)
            }
        };
        domains.push(CheckedDomain { spec, image_bytes, image, placement });
    }
    Ok(CheckedBundle { machine: manifest.machine, domains })
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::test_elf::{ElfSpec, SegSpec};

    /// A ustar archive written by hand (the same layout `tar` and the xtask
    /// writer produce): a 512-byte header per file, the data padded to 512,
    /// then two zero blocks.
    pub(super) fn tar(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, data) in files {
            let mut header = [0u8; 512];
            header[..name.len()].copy_from_slice(name.as_bytes());
            header[100..108].copy_from_slice(b"0000644\0");
            header[108..116].copy_from_slice(b"0000000\0");
            header[116..124].copy_from_slice(b"0000000\0");
            header[124..136].copy_from_slice(format!("{:011o}\0", data.len()).as_bytes());
            header[136..148].copy_from_slice(b"00000000000\0");
            header[156] = b'0';
            header[257..263].copy_from_slice(b"ustar\0");
            header[263..265].copy_from_slice(b"00");
            set_checksum(&mut header);
            out.extend_from_slice(&header);
            out.extend_from_slice(data);
            out.extend_from_slice(&ZEROS[..out.len().next_multiple_of(512) - out.len()]);
        }
        out.extend_from_slice(&ZEROS);
        out
    }

    /// Zeros for padding. (Copied rather than `resize`d: the fuzz test
    /// writes many archives, and unoptimized `resize` fills byte by byte.)
    const ZEROS: [u8; 1024] = [0; 1024];

    /// Writes the checksum of a ustar header: the sum of its bytes, with
    /// the checksum field counted as spaces. (Summed 8 bytes at a time, for
    /// the same reason as [`ZEROS`].)
    pub(super) fn set_checksum(header: &mut [u8; 512]) {
        header[148..156].copy_from_slice(b"        ");
        let mut sum = 0u64;
        for word in header.chunks_exact(8) {
            let w = u64::from_le_bytes(word.try_into().expect("8 bytes"));
            // The eight bytes summed in pairs, then the pairs in fours...
            let pairs = (w & 0x00ff_00ff_00ff_00ff) + ((w >> 8) & 0x00ff_00ff_00ff_00ff);
            let quads = (pairs & 0x0000_ffff_0000_ffff) + ((pairs >> 16) & 0x0000_ffff_0000_ffff);
            sum += (quads & 0xffff_ffff) + (quads >> 32);
        }
        header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    }

    fn guest() -> Vec<u8> {
        ElfSpec::guest(vec![
            SegSpec::new(0x40_0000, vec![0x90; 64], 64, 5),
            SegSpec::new(0x40_1000, vec![7; 8], 0x1000, 6),
        ])
        .build()
    }

    const MANIFEST: &str = "[[domain]]\nname = \"a\"\nimage = \"images/a.elf\"\nmemory = \"1M\"\n\n\
                            [[domain]]\nname = \"b\"\nimage = \"images/b.elf\"\nmemory = \"2M\"\nexpect = \"crash\"\n";

    #[test]
    fn reads_files() {
        let image = guest();
        let bytes = tar(&[("manifest.toml", MANIFEST.as_bytes()), ("./images/a.elf", &image)]);
        let bundle = Bundle::parse(&bytes).unwrap();
        assert_eq!(bundle.manifest_text(), MANIFEST);
        assert_eq!(bundle.file("images/a.elf"), Some(image.as_slice()));
        assert_eq!(bundle.file("./images/a.elf"), Some(image.as_slice()));
        assert_eq!(bundle.file("images/b.elf"), None);
        let paths: Vec<&str> = bundle.files().iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["manifest.toml", "images/a.elf"]);
    }

    #[test]
    fn checks_a_good_bundle() {
        let image = guest();
        let bytes = tar(&[("manifest.toml", MANIFEST.as_bytes()), ("images/a.elf", &image), ("images/b.elf", &image)]);
        let checked = check_bundle(&bytes).unwrap();
        assert_eq!(checked.domains.len(), 2);
        assert_eq!(checked.domains[0].spec.name, "a");
        assert_eq!(checked.domains[1].placement.as_ref().unwrap().layout.nr_pages, 512);
        assert!(checked.domains[1].spec.expect.met_by_crash());
        assert_eq!(checked.domains[0].image.segments[1].file_bytes(checked.domains[0].image_bytes), &[7u8; 8]);
        assert_eq!(image_path("a"), "images/a.elf");
    }

    #[test]
    fn not_a_tar() {
        assert_eq!(
            Bundle::parse(b"hello").unwrap_err().to_string(),
            "not a tar archive: archive length is not a multiple of 512 bytes"
        );
        assert_eq!(Bundle::parse(&[]).unwrap_err(), BundleError::NotTar(CorruptDataError::EmptyArchive));
        let garbage = [0x55u8; 2048];
        assert!(matches!(Bundle::parse(&garbage), Err(BundleError::NotTar(_))));
    }

    #[test]
    fn no_manifest() {
        let bytes = tar(&[("images/a.elf", b"x")]);
        assert_eq!(Bundle::parse(&bytes).unwrap_err().to_string(), "no manifest.toml in the archive");
    }

    #[test]
    fn manifest_not_utf8() {
        let bytes = tar(&[("manifest.toml", b"name = \"\xff\"")]);
        assert_eq!(Bundle::parse(&bytes).unwrap_err().to_string(), "manifest.toml: not UTF-8 (bad byte at offset 8)");
    }

    #[test]
    fn duplicate_file() {
        let bytes = tar(&[("manifest.toml", b""), ("./manifest.toml", b"")]);
        assert_eq!(Bundle::parse(&bytes).unwrap_err(), BundleError::DuplicateFile("manifest.toml".into()));
    }

    #[test]
    fn bad_manifest() {
        let bytes = tar(&[("manifest.toml", b"[[domain]]\nname = \"a\"\nimage = \"x\"\nmemory = \"1M\"\nbad = 1\n")]);
        let e = check_bundle(&bytes).unwrap_err();
        assert!(e.to_string().starts_with("manifest.toml:5: domain \"a\": unknown field `bad`"), "{e}");
    }

    #[test]
    fn missing_image() {
        let image = guest();
        let bytes = tar(&[("manifest.toml", MANIFEST.as_bytes()), ("images/a.elf", &image)]);
        assert_eq!(
            check_bundle(&bytes).unwrap_err().to_string(),
            "manifest.toml: domain \"b\", field `image`: no file images/b.elf in the archive"
        );
    }

    #[test]
    fn bad_image() {
        let image = guest();
        let bytes = tar(&[("manifest.toml", MANIFEST.as_bytes()), ("images/a.elf", &image), ("images/b.elf", b"MZ")]);
        assert_eq!(
            check_bundle(&bytes).unwrap_err().to_string(),
            "manifest.toml: domain \"b\", field `image` (images/b.elf): not an ELF file (no \\x7fELF magic)"
        );
    }

    #[test]
    fn image_that_cannot_be_placed() {
        let far = ElfSpec::guest(vec![SegSpec::new(0x1000_0000, vec![0x90; 16], 16, 5)]).build();
        let image = guest();
        let bytes = tar(&[("manifest.toml", MANIFEST.as_bytes()), ("images/a.elf", &far), ("images/b.elf", &image)]);
        let e = check_bundle(&bytes).unwrap_err();
        assert!(
            e.to_string().starts_with(
                "manifest.toml: domain \"a\", field `image` (images/a.elf): segment 0 ends at 0x10000010, beyond the domain's 1M"
            ),
            "{e}"
        );
    }
}
