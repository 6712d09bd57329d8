//! Fuzzing of the manifest parser: generated manifests, valid ones and
//! ones with one field made wrong, and mutations of them and of the
//! scenarios' own manifests (bit flips, truncation, splices, duplicated and
//! dropped lines, swapped values, huge numbers, unicode...).
//!
//! Properties: [`Manifest::parse`] never panics and never hangs; a
//! rejection is a [`ManifestError`] displayed as one line after the file
//! name, with a line number inside the text when it gives one; a manifest
//! with one field made wrong is rejected naming that domain and that
//! field; an accepted manifest serializes and parses back to itself.
//!
//! Run and replay as `crate::testing::fuzz` says, e.g.
//! `PARVUS_FUZZ_SEED=0x... PARVUS_FUZZ_CASE=... cargo test -p parvus-core fuzz_manifest`.

use super::*;
use crate::testing::fuzz::{self, Rng};
use alloc::format;
use alloc::vec;

/// Cases per run.
const CASES: u64 = 100_000;

/// The scenarios' manifests, as people write them.
const SCENARIOS: [&str; 5] = [
    include_str!("../../../../scenarios/demo/manifest.toml"),
    include_str!("../../../../scenarios/events/manifest.toml"),
    include_str!("../../../../scenarios/side-by-side/manifest.toml"),
    include_str!("../../../../scenarios/pt-attacks/manifest.toml"),
    include_str!("../../../../scenarios/emulation-abuse/manifest.toml"),
];

/// Characters for strings: ASCII, TOML's own punctuation, escapes'
/// raw material, and unicode (accents, CJK, right-to-left override,
/// zero-width joiner, an emoji, the replacement character).
const CHARS: &[char] = &[
    'a', 'z', 'A', '0', '9', '-', '_', ' ', '.', '/', '=', '"', '\'', '\\', '#', '[', ']', '{', '}', ',', '\t', 'é',
    '名', '\u{202e}', '\u{200d}', '🦀', '\u{fffd}', '\u{7f}', '\u{1}', '\n', '\r',
];

/// Values a field may be given, right or wrong.
const WILD_VALUES: &[&str] = &[
    "0",
    "1",
    "-1",
    "256",
    "4096",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "1e400",
    "nan",
    "-inf",
    "1.5",
    "0x10",
    "0o777",
    "true",
    "false",
    "\"\"",
    "\" \"",
    "\"2M\"",
    "\"16E\"",
    "\"17179869183G\"",
    "\"17179869184G\"",
    "\"18446744073709551615\"",
    "\"99999999999999999999K\"",
    "\"1 MiB\"",
    "\"300ms\"",
    "\"18446744073709551615s\"",
    "\"crash\"",
    "\"time-limit\"",
    "\"emulated\"",
    "\"名前\"",
    "\"a\\u0000b\"",
    "\"\\uD800\"",
    "'literal'",
    "\"\"\"multi\nline\"\"\"",
    "[]",
    "[1, \"2\"]",
    "{}",
    "{ a = 1 }",
    "1979-05-27T07:32:00Z",
    "07:32:00",
];

/// A TOML basic string holding `s`.
fn quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn random_string(rng: &mut Rng, max: u64) -> String {
    (0..rng.below(max + 1)).map(|_| *rng.pick(CHARS)).collect()
}

/// A size in one of the ways a manifest may write it.
fn size_text(rng: &mut Rng, bytes: u64) -> String {
    let forms = [(GIB, ["G", "GiB", "g", " gib"]), (MIB, ["M", "MiB", "m", " MIB"]), (KIB, ["K", "KiB", "k", " kib"])];
    for (unit, suffixes) in forms {
        if bytes.is_multiple_of(unit) && rng.chance(2, 3) {
            return format!("\"{}{}\"", bytes / unit, rng.pick(&suffixes));
        }
    }
    if rng.chance(1, 2) {
        format!("\"{bytes}\"")
    } else {
        bytes.to_string()
    }
}

/// One domain of a generated manifest: its fields as `(key, value)` text.
struct GenDomain {
    name: String,
    fields: Vec<(&'static str, String)>,
}

/// A generated manifest: the machine table's fields, and the domains.
struct GenManifest {
    machine: Option<String>,
    domains: Vec<GenDomain>,
    inline: bool,
    crlf: bool,
}

impl GenManifest {
    /// A valid manifest of 1 to 4 domains, every optional field present or
    /// not, in random order and spelling.
    fn valid(rng: &mut Rng) -> GenManifest {
        static MIN: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
        let min = *MIN.get_or_init(|| min_domain_memory().bytes());
        let count = 1 + rng.below(4);
        let mut total = 0;
        let mut domains = Vec::new();
        for i in 0..count {
            let name = format!("{}{i}", ["d", "web", "a_b", "x-1", "0"][rng.index(5)]);
            let memory = min + rng.below(2048) * PAGE_SIZE;
            total += memory;
            let mut fields = vec![
                ("name", quoted(&name)),
                ("image", quoted(*rng.pick(&["hello", "images/a.elf", "../guests/crash.elf", "名前.elf", "a b"]))),
                ("memory", size_text(rng, memory)),
            ];
            if rng.chance(1, 2) {
                fields.push(("cmdline", quoted(&random_string(rng, 40))));
            }
            if rng.chance(1, 3) {
                let expect = match rng.below(3) {
                    0 => rng.below(256).to_string(),
                    1 => "\"crash\"".into(),
                    _ => "\"time-limit\"".into(),
                };
                fields.push(("expect", expect));
            }
            if rng.chance(1, 3) {
                let max = memory + rng.below(512) * PAGE_SIZE;
                fields.push(("max_memory", size_text(rng, max)));
            }
            if rng.chance(1, 3) {
                fields.push(("weight", (1 + rng.below(100_000)).to_string()));
            }
            if rng.chance(1, 3) {
                let n = 1 + rng.below(10_000);
                let limit = match rng.below(3) {
                    0 => format!("\"{n}ms\""),
                    1 => format!("\"{n}s\""),
                    _ => n.to_string(),
                };
                fields.push(("time_limit", limit));
            }
            if rng.chance(1, 4) {
                fields.push(("umip", rng.pick(&["true", "false"]).to_string()));
            }
            if rng.chance(1, 4) {
                fields.push(("mode", rng.pick(&["\"paravirtualized\"", "\"emulated\""]).to_string()));
            }
            // Shuffle the keys: order means nothing in TOML.
            for k in (1..fields.len()).rev() {
                fields.swap(k, rng.index(k + 1));
            }
            domains.push(GenDomain { name, fields });
        }
        let machine = rng.chance(1, 2).then(|| {
            // Room for the hypervisor's reserve and its heap (a few MiB
            // at these sizes).
            let mib = (total + HYPERVISOR_RESERVE).div_ceil(MIB) + 32 + rng.below(64);
            size_text(rng, mib * MIB)
        });
        GenManifest { machine, domains, inline: rng.chance(1, 5), crlf: rng.chance(1, 8) }
    }

    fn text(&self, rng: &mut Rng) -> String {
        let mut out = String::new();
        let line = |out: &mut String, text: &str| {
            out.push_str(text);
            out.push_str("\n");
        };
        if rng.chance(1, 3) {
            line(&mut out, "# a comment, with \"quotes\" and = signs");
        }
        if self.inline {
            // Top-level keys come before any table header.
            let tables: Vec<String> = self
                .domains
                .iter()
                .map(|d| {
                    let fields: Vec<String> = d.fields.iter().map(|(k, v)| format!("{k} = {v}")).collect();
                    format!("{{ {} }}", fields.join(", "))
                })
                .collect();
            line(&mut out, &format!("domain = [{}]", tables.join(", ")));
        }
        if let Some(memory) = &self.machine {
            line(&mut out, "[machine]");
            line(&mut out, &format!("memory = {memory}"));
        }
        if !self.inline {
            for d in &self.domains {
                line(&mut out, "");
                line(&mut out, "[[domain]]");
                for (k, v) in &d.fields {
                    line(&mut out, &format!("{k} = {v}"));
                }
            }
        }
        if self.crlf {
            out = out.replace('\n', "\r\n");
        }
        out
    }
}

/// Checks what every answer of the parser must satisfy; returns the
/// manifest when it was accepted.
fn check_answer(text: &str, answer: &Result<Manifest, ManifestError>) -> Option<Manifest> {
    match answer {
        Ok(manifest) => {
            // Serialized and parsed again, it is the same manifest.
            let again = toml::to_string(manifest)
                .unwrap_or_else(|e| panic!("an accepted manifest must serialize: {e}\n{text}"));
            let back = Manifest::parse(&again)
                .unwrap_or_else(|e| panic!("reparsing failed: {e}\n--- input\n{text}\n--- serialized\n{again}"));
            assert_eq!(&back, manifest, "round trip changed it\n--- input\n{text}\n--- serialized\n{again}");
            // Sizes print as they read.
            for d in &manifest.domains {
                assert_eq!(MemorySize::parse(&d.memory.to_string()), Ok(d.memory));
            }
            Some(manifest.clone())
        }
        Err(e) => {
            let shown = e.in_file("m.toml").to_string();
            assert!(!shown.chars().any(char::is_control), "not one printable line: {shown:?}\n--- input\n{text}");
            assert!(shown.starts_with("m.toml:"), "{shown}");
            if let Some(line) = e.line() {
                let lines = text.split('\n').count();
                assert!((1..=lines).contains(&line), "line {line} of {lines}: {shown}\n--- input\n{text}");
            }
            None
        }
    }
}

/// A valid manifest is accepted, as generated.
fn valid(rng: &mut Rng) {
    let generated = GenManifest::valid(rng);
    let text = generated.text(rng);
    let answer = Manifest::parse(&text);
    let manifest = check_answer(&text, &answer).unwrap_or_else(|| panic!("refused: {:?}\n{text}", answer.err()));
    let names: Vec<&str> = manifest.domains.iter().map(|d| d.name.as_str()).collect();
    let want: Vec<&str> = generated.domains.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, want);
}

/// Values that are wrong for a field, whatever the other fields say.
fn wrong_value(rng: &mut Rng, field: &str, others: &[String]) -> String {
    let long = || quoted(&"x".repeat(CMDLINE_MAX + 1));
    let candidates: Vec<String> = match field {
        "name" => {
            let mut v: Vec<String> =
                ["\"\"", "\"A\"", "\"a b\"", "\"é\"", "\"a\\u0000\"", "7", "true", "[]"].map(String::from).to_vec();
            v.push(quoted(&"n".repeat(NAME_MAX + 1)));
            v.extend(others.iter().map(|n| quoted(n)));
            v
        }
        "image" => ["\"\"", "\"   \"", "5", "[]", "{ a = 1 }"].map(String::from).to_vec(),
        "memory" => [
            "\"2X\"",
            "\"-1\"",
            "-4096",
            "true",
            "\"12345\"",
            "\"4K\"",
            "1.5",
            "\"\"",
            "\"M\"",
            "\"99999999999999999999\"",
        ]
        .map(String::from)
        .to_vec(),
        "max_memory" => ["\"4K\"", "12345", "\"x\"", "true", "-1"].map(String::from).to_vec(),
        "cmdline" => vec![long(), "7".into(), "true".into()],
        "expect" => ["\"crashed\"", "-1", "1.5", "true", "\"\"", "[0]"].map(String::from).to_vec(),
        "weight" => ["0", "-1", "4294967296", "\"256\"", "1.0"].map(String::from).to_vec(),
        "time_limit" => ["\"1h\"", "-5", "\"ms\"", "\"18446744073709551615s\"", "true", "18446744073709551615"]
            .map(String::from)
            .to_vec(),
        "umip" => ["\"yes\"", "1"].map(String::from).to_vec(),
        "mode" => ["\"hvm\"", "1", "\"\""].map(String::from).to_vec(),
        _ => unreachable!("no such field {field}"),
    };
    rng.pick(&candidates).clone()
}

/// One field of one domain made wrong: refused, naming that domain and
/// that field.
fn one_wrong_field(rng: &mut Rng) {
    let mut generated = GenManifest::valid(rng);
    let i = rng.index(generated.domains.len());
    let fields = [
        "name",
        "image",
        "memory",
        "max_memory",
        "cmdline",
        "expect",
        "weight",
        "time_limit",
        "umip",
        "mode",
        "colour",
        "-missing",
    ];
    let field = *rng.pick(&fields);
    let others: Vec<String> = generated.domains[..i].iter().map(|d| d.name.clone()).collect();
    let d = &mut generated.domains[i];
    let named = match field {
        "colour" => {
            d.fields.insert(rng.index(d.fields.len() + 1), ("colour", "\"blue\"".into()));
            "colour"
        }
        "-missing" => {
            let required = ["name", "image", "memory"];
            let gone = *rng.pick(&required);
            d.fields.retain(|(k, _)| *k != gone);
            gone
        }
        field => {
            let value = wrong_value(rng, field, &others);
            if field == "memory" {
                // `max_memory` is checked against `memory` first.
                d.fields.retain(|(k, _)| *k != "max_memory");
            }
            match d.fields.iter_mut().find(|(k, _)| *k == field) {
                Some(slot) => slot.1 = value,
                None => d.fields.push((field, value)),
            }
            field
        }
    };
    // The name the domain is known by, if it still has one as a string
    // (read back only when it was the field made wrong).
    let written_name = match named {
        "name" => d
            .fields
            .iter()
            .find(|(k, _)| *k == "name")
            .and_then(|(_, v)| toml::from_str::<toml::Table>(&format!("n = {v}")).ok())
            .and_then(|t| t.get("n").and_then(|n| n.as_str().map(String::from))),
        _ => Some(d.name.clone()),
    };
    let text = generated.text(rng);
    let answer = Manifest::parse(&text);
    check_answer(&text, &answer);
    let e = answer.as_ref().err().unwrap_or_else(|| panic!("accepted with a wrong `{named}`:\n{text}"));
    let shown = e.in_file("m.toml").to_string();
    let by_position = format!("domain #{}", i + 1);
    let by_name = written_name.map(|n| format!("domain \"{}\"", n.escape_debug()));
    assert!(
        shown.contains(&by_position) || by_name.is_some_and(|n| shown.contains(&n)),
        "does not name domain #{} ({named}): {shown}\n--- input\n{text}",
        i + 1
    );
    assert!(shown.contains(&format!("`{named}`")), "does not name the field `{named}`: {shown}\n--- input\n{text}");
}

/// A text changed at random, in one to four steps.
fn mutate(rng: &mut Rng, text: &str) -> String {
    let mut bytes = text.as_bytes().to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = bytes.len();
        let at = rng.index(len + 1);
        match rng.below(10) {
            // A bit flipped.
            0 if len > 0 => bytes[at.min(len - 1)] ^= 1 << rng.below(8),
            // Cut short.
            1 => bytes.truncate(at),
            // A piece of itself, or of a scenario's manifest, spliced in.
            2 => {
                let from = if rng.chance(1, 2) { bytes.clone() } else { rng.pick(&SCENARIOS).as_bytes().to_vec() };
                let start = rng.index(from.len() + 1);
                let end = (start + rng.index(200)).min(from.len());
                bytes.splice(at..at, from[start..end].iter().copied());
            }
            // A line doubled (duplicate keys, duplicate tables), dropped or moved.
            3 | 4 => {
                let mut lines: Vec<Vec<u8>> = bytes.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
                let l = rng.index(lines.len());
                match rng.below(3) {
                    0 => {
                        let copy = lines[l].clone();
                        lines.insert(rng.index(lines.len() + 1), copy);
                    }
                    1 => {
                        lines.remove(l);
                    }
                    _ => {
                        let m = rng.index(lines.len());
                        lines.swap(l, m);
                    }
                }
                bytes = lines.join(&b'\n');
            }
            // A value replaced by another one, right or wrong.
            5 | 6 => {
                let text = String::from_utf8_lossy(&bytes).into_owned();
                let mut lines: Vec<String> = text.split('\n').map(String::from).collect();
                let with_values: Vec<usize> = (0..lines.len()).filter(|&l| lines[l].contains('=')).collect();
                if !with_values.is_empty() {
                    let l = *rng.pick(&with_values);
                    let eq = lines[l].find('=').unwrap_or(0);
                    let value = if rng.chance(1, 4) {
                        quoted(&random_string(rng, 30))
                    } else {
                        rng.pick(WILD_VALUES).to_string()
                    };
                    lines[l] = format!("{}= {value}", &lines[l][..eq]);
                }
                bytes = lines.join("\n").into_bytes();
            }
            // Characters inserted: punctuation, quotes, unicode.
            7 => {
                let s = random_string(rng, 4);
                bytes.splice(at..at, s.bytes());
            }
            // A key renamed or mis-cased.
            8 => {
                let keys = ["name", "image", "memory", "cmdline", "expect", "weight", "domain", "machine", "mode"];
                let key = *rng.pick(&keys);
                let text = String::from_utf8_lossy(&bytes).into_owned();
                let replacement = *rng.pick(&["Name", "imagee", "", "memory.x", "\"memory\"", "domain.name", "名"]);
                bytes = text.replacen(key, replacement, 1 + rng.index(2)).into_bytes();
            }
            // A byte set to something structural.
            _ if len > 0 => bytes[at.min(len - 1)] = *rng.pick(b"[]{}=\"'\\#\n\r\t ,.0"),
            _ => {}
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A mutated manifest: whatever the answer, it satisfies [`check_answer`].
fn mutated(rng: &mut Rng) {
    let base = if rng.chance(1, 3) { rng.pick(&SCENARIOS).to_string() } else { GenManifest::valid(rng).text(rng) };
    let text = mutate(rng, &base);
    let answer = Manifest::parse(&text);
    check_answer(&text, &answer);
}

/// Text that need not look like a manifest at all.
fn garbage(rng: &mut Rng) {
    let tokens = [
        "[[domain]]",
        "[machine]",
        "name",
        "=",
        "\"x\"",
        "memory",
        "\"1M\"",
        "\n",
        " ",
        "[",
        "]",
        "{",
        "}",
        ",",
        ".",
        "#",
        "'",
        "\"\"\"",
        "1",
        "-",
        "é",
        "\\",
    ];
    let text: String = (0..rng.below(60)).map(|_| *rng.pick(&tokens)).collect();
    check_answer(&text, &Manifest::parse(&text));
}

fn case(rng: &mut Rng) {
    match rng.below(20) {
        0..=3 => valid(rng),
        4..=8 => one_wrong_field(rng),
        9..=18 => mutated(rng),
        _ => garbage(rng),
    }
}

#[test]
fn fuzz_manifest() {
    fuzz::run("fuzz_manifest", CASES, case);
}
