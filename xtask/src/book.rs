//! The book (`docs/`, mdBook): built with a pinned mdBook, which is
//! installed with cargo the first time it is needed (as QEMU is with
//! apt-get, see [`crate::qemu::ensure_installed`]), and every link in the
//! pages it built checked, because mdBook checks none: a link to a page
//! that does not exist, to an anchor the page does not have, or out of the
//! book (to a file of the repository, which the built book does not hold)
//! fails the build.
//!
//! The links are checked in the HTML, not in the Markdown, so what is
//! checked is what a reader follows, and an anchor is checked against the
//! `id`s mdBook really gave the headings.

use std::collections::{HashMap, HashSet};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, Context, Result};

use crate::cargo_build::cargo;
use crate::qemu::which;
use crate::repo::Repo;

/// The mdBook the book is built with; another 0.5 release is used as it is.
pub const MDBOOK_VERSION: &str = "0.5.4";

/// The `cargo install` arguments that install [`MDBOOK_VERSION`]: without
/// the `serve` and `watch` features (a web server and a file watcher, which
/// nothing here uses and which double the build), with `search`.
fn install_args() -> [String; 8] {
    [
        "install".into(),
        "mdbook".into(),
        "--version".into(),
        format!("={MDBOOK_VERSION}"),
        "--locked".into(),
        "--no-default-features".into(),
        "--features".into(),
        "search".into(),
    ]
}

/// Where `cargo install` puts binaries: `$CARGO_HOME/bin`, by default
/// `~/.cargo/bin` (which need not be on `PATH`).
fn cargo_bin_dir() -> Option<PathBuf> {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
    Some(home.join("bin"))
}

/// The version `mdbook --version` prints (`mdbook v0.5.4` -> `0.5.4`).
fn version_in(output: &str) -> Option<&str> {
    output.split_whitespace().nth(1).map(|v| v.trim_start_matches('v'))
}

/// Whether a version has the same major and minor number as
/// [`MDBOOK_VERSION`] (0.x releases change the book format between minors).
fn compatible(version: &str) -> bool {
    fn major_minor(v: &str) -> Vec<&str> {
        v.split('.').take(2).collect()
    }
    major_minor(version) == major_minor(MDBOOK_VERSION)
}

/// The version of the mdBook at `path`, if it runs.
fn version_of(path: &Path) -> Option<String> {
    let output = Command::new(path).arg("--version").output().ok()?;
    version_in(&String::from_utf8_lossy(&output.stdout)).map(str::to_string)
}

/// The mdBook to build with: `mdbook` on `PATH` or in cargo's bin
/// directory, if it is a 0.5 release; installs [`MDBOOK_VERSION`] with
/// `cargo install` (a few minutes, once) when there is none. Another
/// version already installed is left alone: the error says what to run.
pub fn ensure_mdbook(repo: &Repo) -> Result<PathBuf> {
    let installed = cargo_bin_dir().map(|dir| dir.join("mdbook")).filter(|p| p.is_file());
    let found = which("mdbook").or(installed.clone());
    if let Some(path) = &found {
        match version_of(path) {
            Some(version) if compatible(&version) => return Ok(path.clone()),
            Some(version) => bail!(
                "{} is mdBook {version}; the book is built with {MDBOOK_VERSION}: cargo {}",
                path.display(),
                install_args().join(" ")
            ),
            None => {}
        }
    }
    let command = format!("cargo {}", install_args().join(" "));
    println!("xtask: mdBook is not installed; running: {command} (a few minutes, once)");
    let status = cargo(repo).args(install_args()).status().context("cannot run cargo install")?;
    let path = cargo_bin_dir().map(|dir| dir.join("mdbook")).filter(|p| p.is_file());
    match path {
        Some(path) if status.success() => Ok(path),
        _ => bail!("installing mdBook failed ({status}); try: {command}"),
    }
}

/// Builds the book into `docs/book/` and checks its links; returns the
/// folder.
pub fn build(repo: &Repo) -> Result<PathBuf> {
    let mdbook = ensure_mdbook(repo)?;
    let src = repo.book_dir().join("src");
    let out = repo.book_output_dir();
    let status = Command::new(&mdbook)
        .arg("build")
        .arg(repo.book_dir())
        .arg("--dest-dir")
        .arg(&out)
        .status()
        .with_context(|| format!("cannot run {}", mdbook.display()))?;
    if !status.success() {
        bail!("mdbook build {} failed ({status})", repo.show(&repo.book_dir()));
    }
    let broken = check_links(&src, &out)?;
    for link in &broken {
        eprintln!("xtask: {}: {}", repo.show(&src.join(&link.chapter)), link.problem);
    }
    if !broken.is_empty() {
        bail!("{} in the book", parvus_core::plural::count(broken.len(), "broken link", "broken links"));
    }
    Ok(out)
}

/// A link in the built book that leads nowhere.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokenLink {
    /// The chapter's source, relative to `src/` (`testing.md`).
    pub chapter: PathBuf,
    /// What is wrong, naming the link as the page has it.
    pub problem: String,
}

/// The values of every `name="..."` attribute in `html`.
fn attribute_values<'a>(html: &'a str, name: &str) -> Vec<&'a str> {
    let pattern = format!("{name}=\"");
    html.match_indices(&pattern)
        .filter(|(at, _)| html[..*at].ends_with(|c: char| c.is_ascii_whitespace()))
        .filter_map(|(at, _)| {
            let value = &html[at + pattern.len()..];
            value.find('"').map(|end| &value[..end])
        })
        .collect()
}

/// Whether a link leaves the book on purpose (`https:`, `mailto:`...).
fn has_scheme(link: &str) -> bool {
    let end = link.find(['/', '?', '#']).unwrap_or(link.len());
    link[..end].contains(':')
}

/// `path` with `.` and `..` taken out, without touching the file system;
/// `None` if it climbs above its start.
fn lexically_normal(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::Normal(part) => out.push(part),
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Checks every `href` and `src` of every chapter's page in `out` (the
/// built book of the Markdown files under `src`).
pub fn check_links(src: &Path, out: &Path) -> Result<Vec<BrokenLink>> {
    let mut chapters = Vec::new();
    markdown_files(src, Path::new(""), &mut chapters)?;
    chapters.retain(|c| c != Path::new("SUMMARY.md"));
    chapters.sort();
    let mut ids: HashMap<PathBuf, HashSet<String>> = HashMap::new();
    let mut ids_of = |page: &Path| -> Result<HashSet<String>> {
        if let Some(known) = ids.get(page) {
            return Ok(known.clone());
        }
        let html =
            std::fs::read_to_string(out.join(page)).with_context(|| format!("cannot read {}", page.display()))?;
        let found: HashSet<String> = attribute_values(&html, "id").into_iter().map(str::to_string).collect();
        ids.insert(page.to_path_buf(), found.clone());
        Ok(found)
    };
    let mut broken = Vec::new();
    for chapter in chapters {
        let page = chapter.with_extension("html");
        let html = std::fs::read_to_string(out.join(&page)).map_err(|e| {
            anyhow!("{}: mdBook wrote no page {} ({e}): is it in SUMMARY.md?", chapter.display(), page.display())
        })?;
        let dir = page.parent().unwrap_or(Path::new("")).to_path_buf();
        let mut links = attribute_values(&html, "href");
        links.extend(attribute_values(&html, "src"));
        for link in links {
            if link.is_empty() || has_scheme(link) {
                continue;
            }
            let link_decoded = link.replace("&amp;", "&");
            let (path, anchor) = match link_decoded.split_once('#') {
                Some((path, anchor)) => (path, Some(anchor)),
                None => (link_decoded.as_str(), None),
            };
            let path = path.split('?').next().unwrap_or("");
            let target = if path.is_empty() { Some(page.clone()) } else { lexically_normal(&dir.join(path)) };
            let problem = match target {
                None => Some(format!("the link to {link} leads out of the book (the built book holds only docs/src/)")),
                Some(target) if !out.join(&target).is_file() => {
                    Some(format!("the link to {link} leads nowhere: the book has no {}", target.display()))
                }
                Some(target) => match anchor {
                    Some(anchor) if target.extension().is_some_and(|e| e == "html") && !anchor.is_empty() => {
                        (!ids_of(&target)?.contains(anchor)).then(|| {
                            format!("the link to {link} leads nowhere: {} has no anchor #{anchor}", target.display())
                        })
                    }
                    _ => None,
                },
            };
            if let Some(problem) = problem {
                broken.push(BrokenLink { chapter: chapter.clone(), problem });
            }
        }
    }
    Ok(broken)
}

/// Every `.md` file under `root.join(rel)`, relative to `root`.
fn markdown_files(root: &Path, rel: &Path, into: &mut Vec<PathBuf>) -> Result<()> {
    let dir = root.join(rel);
    for entry in std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let entry = entry?;
        let path = rel.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            markdown_files(root, &path, into)?;
        } else if path.extension().is_some_and(|e| e == "md") {
            into.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn every_kind_of_broken_link_is_found_and_nothing_else() {
        let src = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        for chapter in ["SUMMARY.md", "intro.md", "abi.md", "part/deep.md"] {
            write(src.path(), chapter, "# x\n");
        }
        write(out.path(), "chart.svg", "<svg/>");
        write(out.path(), "abi.html", "<h2 id=\"the-elf-note\">The ELF note</h2><p data-id=\"not-an-id\"></p>");
        write(
            out.path(),
            "intro.html",
            "<link href=\"chart.svg\"> <a href=\"abi.html#the-elf-note\">ok</a> <a href=\"#top\">ok</a> <h1 id=\"top\"></h1>\n\
             <a href=\"https://example.org/x.html\">ok</a> <a href=\"mailto:a@b\">ok</a> <img src=\"chart.svg\">\n\
             <a href=\"nope.html\">1</a> <a href=\"abi.html#not-an-id\">2</a> <a href=\"../../README.html\">3</a>\n\
             <a href=\"#missing\">4</a> <img src=\"gone.png\">",
        );
        write(out.path(), "part/deep.html", "<a href=\"../abi.html\">ok</a> <a href=\"../part/deep.html#x\">5</a>");
        let problems: Vec<(String, String)> = check_links(src.path(), out.path())
            .unwrap()
            .into_iter()
            .map(|b| (b.chapter.display().to_string(), b.problem))
            .collect();
        let expect = |chapter: &str, problem: &str| (chapter.to_string(), problem.to_string());
        assert_eq!(
            problems,
            [
                expect("intro.md", "the link to nope.html leads nowhere: the book has no nope.html"),
                expect("intro.md", "the link to abi.html#not-an-id leads nowhere: abi.html has no anchor #not-an-id"),
                expect(
                    "intro.md",
                    "the link to ../../README.html leads out of the book (the built book holds only docs/src/)"
                ),
                expect("intro.md", "the link to #missing leads nowhere: intro.html has no anchor #missing"),
                expect("intro.md", "the link to gone.png leads nowhere: the book has no gone.png"),
                expect(
                    "part/deep.md",
                    "the link to ../part/deep.html#x leads nowhere: part/deep.html has no anchor #x"
                ),
            ]
        );
    }

    #[test]
    fn a_chapter_mdbook_did_not_build_is_an_error() {
        let src = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        write(src.path(), "orphan.md", "# x\n");
        let e = check_links(src.path(), out.path()).unwrap_err().to_string();
        assert!(e.starts_with("orphan.md: mdBook wrote no page orphan.html ("), "{e}");
        assert!(e.ends_with("is it in SUMMARY.md?"), "{e}");
    }

    #[test]
    fn mdbook_versions() {
        assert_eq!(version_in("mdbook v0.5.4\n"), Some("0.5.4"));
        assert!(compatible("0.5.4") && compatible("0.5.11"));
        assert!(!compatible("0.4.40") && !compatible("1.0.0"));
        assert_eq!(
            install_args().join(" "),
            format!("install mdbook --version ={MDBOOK_VERSION} --locked --no-default-features --features search")
        );
    }

    #[test]
    fn the_book_builds_where_book_toml_says() {
        let repo = Repo::locate();
        let text = std::fs::read_to_string(repo.book_dir().join("book.toml")).unwrap();
        let book: toml::Table = toml::from_str(&text).unwrap();
        let build_dir = book["build"]["build-dir"].as_str().unwrap();
        assert_eq!(
            repo.book_dir().join(build_dir),
            repo.book_output_dir(),
            "mdbook build docs and cargo xtask doc agree"
        );
    }
}
