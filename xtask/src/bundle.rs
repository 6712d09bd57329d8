//! Writing the boot bundle: a plain ustar archive (QEMU's `-initrd`) that
//! `tar tvf` lists, holding `manifest.toml` with each `image` rewritten to
//! its bundle path, and the images.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use parvus_core::bundle::{check_bundle, image_path, MANIFEST_PATH};
use parvus_core::manifest::Manifest;

/// One file of the bundle.
struct Entry {
    path: String,
    data: Vec<u8>,
}

/// Writes the bundle for `manifest` to `out`. `images` gives each domain's
/// image file, in domain order. The archive is then read back and checked
/// with parvus-core's [`check_bundle`], the very check the hypervisor runs.
pub fn write(manifest: &Manifest, source: &str, images: &[PathBuf], out: &Path) -> Result<()> {
    let mut bundled = manifest.clone();
    let mut entries = Vec::new();
    for (domain, image) in bundled.domains.iter_mut().zip(images) {
        domain.image = image_path(&domain.name);
        let data = std::fs::read(image).with_context(|| format!("cannot read {}", image.display()))?;
        entries.push(Entry { path: domain.image.clone(), data });
    }
    let text = format!(
        "# Written by `cargo xtask build` from {source}; images are paths in this archive.\n{}",
        toml::to_string(&bundled).context("cannot write the bundle's manifest")?
    );
    entries.insert(0, Entry { path: MANIFEST_PATH.to_string(), data: text.into_bytes() });

    let bytes = archive(&entries)?;
    check_bundle(&bytes).map_err(|e| anyhow!("the bundle for {source} is refused: {e}"))?;
    check_fits(manifest, bytes.len() as u64).map_err(|e| anyhow!("{source}: {e}"))?;
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(out, &bytes).with_context(|| format!("cannot write {}", out.display()))
}

/// Checks that the domains, the hypervisor's share (its reserve and its
/// heap) and the bundle itself (QEMU loads it into the machine's RAM) fit
/// in the machine's memory. The manifest check cannot do this: it does not
/// know the bundle's size.
pub fn check_fits(manifest: &Manifest, bundle_len: u64) -> Result<(), String> {
    let machine = manifest.machine.memory.bytes();
    let domains = manifest.total_domain_memory();
    let hypervisor = manifest.hypervisor_share();
    let needed = domains.saturating_add(hypervisor).saturating_add(bundle_len);
    if needed <= machine {
        return Ok(());
    }
    let mib = |bytes: u64| format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0));
    Err(format!(
        "[machine], field `memory`: the domains ({}), the hypervisor's share ({}) and the boot bundle ({}) \
         need {}, more than the machine's {}",
        mib(domains),
        mib(hypervisor),
        mib(bundle_len),
        mib(needed),
        mib(machine)
    ))
}

/// A ustar archive of `entries`: plain files, mode 0644, owner 0, time 0,
/// so the same inputs give the same bytes.
fn archive(entries: &[Entry]) -> Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut header = tar::Header::new_ustar();
        header.set_path(&entry.path).with_context(|| format!("bad bundle path {}", entry.path))?;
        header.set_size(entry.data.len() as u64);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_cksum();
        builder.append(&header, entry.data.as_slice())?;
    }
    Ok(builder.into_inner()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_elf::guest_elf;
    use parvus_core::bundle::Bundle;

    #[test]
    fn writes_a_bundle_the_hypervisor_accepts() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("g.elf");
        std::fs::write(&image, guest_elf(0x40_0000)).unwrap();
        let manifest = Manifest::parse(
            "[[domain]]\nname = \"one\"\nimage = \"g.elf\"\nmemory = \"1M\"\ncmdline = \"a=1\"\n\
             [[domain]]\nname = \"two\"\nimage = \"g.elf\"\nmemory = \"1M\"\nexpect = \"crash\"\n",
        )
        .unwrap();
        let out = dir.path().join("out/b.tar");
        write(&manifest, "m.toml", &[image.clone(), image.clone()], &out).unwrap();

        let bytes = std::fs::read(&out).unwrap();
        let bundle = Bundle::parse(&bytes).unwrap();
        let paths: Vec<&str> = bundle.files().iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["manifest.toml", "images/one.elf", "images/two.elf"]);
        let back = Manifest::parse(bundle.manifest_text()).unwrap();
        assert_eq!(back.domains[0].image, "images/one.elf");
        assert_eq!(back.domains[0].cmdline, "a=1");
        assert!(back.domains[1].expect.met_by_crash());
        assert_eq!(back.machine, manifest.machine);
        assert!(bundle.manifest_text().starts_with("# Written by `cargo xtask build` from m.toml"));
        let checked = check_bundle(&bytes).unwrap();
        assert_eq!(checked.domains.len(), 2);

        // Same inputs, same bytes.
        let again = dir.path().join("again.tar");
        write(&manifest, "m.toml", &[image.clone(), image], &again).unwrap();
        assert_eq!(std::fs::read(&again).unwrap(), bytes);
    }

    #[test]
    fn the_bundle_must_fit_beside_the_domains() {
        let manifest =
            Manifest::parse("[machine]\nmemory = \"22M\"\n[[domain]]\nname = \"a\"\nimage = \"x\"\nmemory = \"3M\"\n")
                .unwrap();
        // The hypervisor's share: its 16 MiB reserve and 1.2 MiB of heap, rounded up.
        assert_eq!(manifest.hypervisor_share(), 18 << 20);
        assert_eq!(check_fits(&manifest, 1 << 20), Ok(()));
        assert_eq!(
            check_fits(&manifest, (1 << 20) + 1).unwrap_err(),
            "[machine], field `memory`: the domains (3.0 MiB), the hypervisor's share (18.0 MiB) and the boot \
             bundle (1.0 MiB) need 22.0 MiB, more than the machine's 22.0 MiB"
        );
    }

    #[test]
    fn refuses_what_the_hypervisor_would_refuse() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("far.elf");
        std::fs::write(&image, guest_elf(0x1000_0000)).unwrap();
        let manifest = Manifest::parse("[[domain]]\nname = \"one\"\nimage = \"far.elf\"\nmemory = \"1M\"\n").unwrap();
        let e = write(&manifest, "m.toml", &[image], &dir.path().join("b.tar")).unwrap_err().to_string();
        assert!(
            e.starts_with("the bundle for m.toml is refused: manifest.toml: domain \"one\", field `image` (images/one.elf): segment 0"),
            "{e}"
        );
        assert!(!dir.path().join("b.tar").exists());
    }
}
