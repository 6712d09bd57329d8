//! The decoder against a reference decoder, iced-x86.
//!
//! The hand-written expectations of `tests.rs` test what their author
//! thought of; this module asks a maintained x86 decoder about everything
//! else. For each byte sequence the decoder accepts, iced must decode an
//! instruction of the same length, with the same mnemonic (and the same
//! operand-size variant of it), the same operands (registers at their
//! width, memory base, index, scale, displacement, effective address,
//! segment and size, immediates at the operand size), the same `lock` and
//! `rep` prefixes, and it must print it as the decoder's `Display` does
//! (after the normalisations of [`shown_alike`]). Where the decoder refuses
//! what iced decodes, that is its choice: it knows a subset. Where it
//! accepts what iced calls invalid, or the two disagree, the test fails
//! and prints the bytes and both readings.
//!
//! The bytes come from two places:
//! - [`random_sequences_decode_as_iced_does`]: 100,000 sequences per run
//!   from a seeded generator biased towards what the decoder knows:
//!   legacy prefixes (up to the 15-byte limit), REX, the opcodes of its
//!   tables and their neighbours, 0F-escape opcodes, ModRM, SIB,
//!   displacement and RIP-relative forms. The seed is fixed, so every run
//!   checks the same sequences; `PARVUS_FUZZ_SEED=<n>` (decimal or `0x`
//!   hex) checks others and replays a failure, whose message prints its
//!   seed; `PARVUS_FUZZ_CASES=<n>` checks more.
//! - [`bare_metal_kernels_decode_as_iced_does`]: every instruction of the
//!   project's own bare-metal kernels, by a linear sweep of their
//!   executable sections. `cargo xtask test` builds the kernels before the
//!   host tests and names their ELF files in [`KERNELS_TO_SWEEP`]; a plain
//!   `cargo test` has no bare-metal build to read, and this test says so
//!   and checks nothing.

mod expected;
mod sequences;

use super::*;
use expected::{expected, operand_agrees, Name};
use iced_x86::{Decoder, DecoderOptions, Formatter, IntelFormatter, MemorySizeOptions};
use sequences::{sequence, SplitMix};
use std::string::{String, ToString};
use std::vec::Vec;

/// Where the random sequences are taken to sit (RIP-relative operands are
/// compared as addresses, so the address matters).
const RANDOM_IP: u64 = 0x20_1000;

/// Random sequences per run unless `PARVUS_FUZZ_CASES` says otherwise.
const DEFAULT_CASES: u64 = 100_000;

/// The seed unless `PARVUS_FUZZ_SEED` says otherwise.
const DEFAULT_SEED: u64 = 0x5061_7276_7573_0001;

/// Disagreements printed in full before the test gives up counting.
const SHOWN_FAILURES: usize = 20;

/// The Intel syntax iced prints, set up to read as the decoder's Display:
/// `0x` hex everywhere, spaces around `+` and after commas, RIP-relative
/// operands as `[rip + d]`, no memory-size keywords (the decoder prints
/// them only where the other operand does not give the size; the sizes
/// are compared as operands).
fn formatter() -> IntelFormatter {
    let mut f = IntelFormatter::new();
    let o = f.options_mut();
    o.set_hex_prefix("0x");
    o.set_hex_suffix("");
    o.set_uppercase_hex(false);
    o.set_small_hex_numbers_in_decimal(false);
    o.set_space_after_operand_separator(true);
    o.set_space_between_memory_add_operators(true);
    o.set_rip_relative_addresses(true);
    o.set_always_show_scale(true);
    o.set_memory_size_options(MemorySizeOptions::Never);
    f
}

/// Whether the decoder's text for `op` and iced's say the same, once each
/// is brought to one convention:
/// - the memory-size keywords of ours are dropped (iced prints none, see
///   [`formatter`]; the sizes themselves are compared as operands);
/// - a string instruction's operands are implicit in ours (`rep stosq`),
///   iced prints them;
/// - where the decoder keeps what an instruction does but not which of
///   several mnemonics encoded it (`movnti` is a `mov`; `movapd` and
///   `movdqa` are `movaps`), the mnemonic was compared with [`Name`], and
///   only the operands are compared here;
/// - `ins`/`outs` are one op for the decoder, printed as such;
/// - `xchg` with memory is locked with or without the prefix, and the
///   decoder does not keep it;
/// - iced spells the far return `ret far` (`data16`, `data64` for the
///   other operand sizes), ours `retf`, and `lretq` as GNU as does for the
///   64-bit one (the size was compared with [`Name`]).
fn shown_alike(op: Op, name: &Name, ours: &str, theirs: &str) -> bool {
    // Ours names every segment override (an `ss:` one decides between #SS
    // and #GP); iced's Intel syntax shows only FS and GS, the two that
    // add a base in 64-bit mode.
    let mut ours =
        ours.replace("byte ptr ", "").replace("qword ptr ", "").replace("dword ptr ", "").replace("word ptr ", "");
    for null_override in ["es:[", "cs:[", "ss:[", "ds:["] {
        ours = ours.replace(null_override, "[");
    }
    let mut theirs: Vec<&str> = theirs.split(' ').collect();
    match op {
        Op::StringIo => return true,
        Op::Store(StoreOp::Stos { .. } | StoreOp::Movs { .. }) => theirs.retain(|word| !word.contains('[')),
        Op::Store(StoreOp::Xchg { .. }) => theirs.retain(|word| *word != "lock"),
        Op::Retf(size) if theirs.ends_with(&["ret", "far"]) => theirs = vec![if size == 8 { "lretq" } else { "retf" }],
        _ => {}
    }
    if matches!(name, Name::Mnemonic(alternatives) if alternatives.len() > 1) {
        let prefixes = ["lock", "rep"];
        let mnemonic = |words: &[&str]| words.iter().position(|w| !prefixes.contains(w));
        let ours_words: Vec<&str> = ours.split(' ').collect();
        if let (Some(i), Some(j)) = (mnemonic(&theirs), mnemonic(&ours_words)) {
            theirs[i] = ours_words[j];
        }
    }
    ours == theirs.join(" ")
}

/// Checks the decoder against iced on `bytes` (at address `ip`): `Ok(false)`
/// when the decoder refuses them, `Ok(true)` when it accepts them and both
/// agree.
fn check(bytes: &[u8], ip: u64, formatter: &mut IntelFormatter) -> Result<bool, String> {
    let Ok(ours) = decode(bytes) else { return Ok(false) };
    let insn = Decoder::with_ip(64, bytes, ip, DecoderOptions::NONE).decode();
    let mut text = String::new();
    formatter.format(&insn, &mut text);
    let fail = |why: String| {
        Err(format!("{bytes:02x?}: {why}\n    ours: {:?} = {}\n    iced: {:?} = {text}", ours.op, ours.op, insn.code()))
    };
    if insn.is_invalid() {
        return fail(format!("the decoder reads {} bytes, iced says invalid", ours.len));
    }
    if insn.len() != ours.len {
        return fail(format!("length {} where iced has {}", ours.len, insn.len()));
    }
    let want = expected(ours.op);
    let named = match want.name {
        Name::Code(codes) => codes.contains(&insn.code()),
        Name::Mnemonic(mnemonics) => mnemonics.contains(&insn.mnemonic()),
    };
    if !named {
        return fail(format!("{:?} where iced has {:?}", want.name, insn.code()));
    }
    if let Some(operands) = &want.operands {
        if operands.len() != insn.op_count() as usize {
            return fail(format!("{} operands where iced has {}", operands.len(), insn.op_count()));
        }
        for (i, w) in operands.iter().enumerate() {
            if let Err(why) = operand_agrees(&insn, i as u32, *w) {
                return fail(format!("operand {i}: {why}"));
            }
        }
    }
    if want.lock.is_some_and(|lock| lock != insn.has_lock_prefix()) {
        return fail(format!("lock {:?} where iced has {}", want.lock, insn.has_lock_prefix()));
    }
    if want.rep.is_some_and(|rep| rep != insn.has_rep_prefix() || insn.has_repne_prefix()) {
        return fail(format!(
            "rep {:?} where iced has rep {} repne {}",
            want.rep,
            insn.has_rep_prefix(),
            insn.has_repne_prefix()
        ));
    }
    if !shown_alike(ours.op, &want.name, &ours.op.to_string(), &text) {
        return fail(format!("shown as {:?}, iced shows {text:?}", ours.op.to_string()));
    }
    Ok(true)
}

fn env_number(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    Some(parsed.unwrap_or_else(|e| panic!("{name}={text:?}: not a number ({e})")))
}

#[test]
fn random_sequences_decode_as_iced_does() {
    let seed = env_number("PARVUS_FUZZ_SEED").unwrap_or(DEFAULT_SEED);
    let cases = env_number("PARVUS_FUZZ_CASES").unwrap_or(DEFAULT_CASES);
    let mut rng = SplitMix(seed);
    let mut formatter = formatter();
    let (mut decoded, mut failures) = (0u64, Vec::new());
    for _ in 0..cases {
        let bytes = sequence(&mut rng);
        match check(&bytes, RANDOM_IP, &mut formatter) {
            Ok(true) => decoded += 1,
            Ok(false) => {}
            Err(why) => failures.push(why),
        }
    }
    eprintln!(
        "{cases} random sequences (seed {seed:#x}): the decoder accepted {decoded}, {} disagreements",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {cases} sequences decode otherwise than iced (seed {seed:#x}; replay with PARVUS_FUZZ_SEED={seed:#x}):\n{}",
        failures.len(),
        failures.iter().take(SHOWN_FAILURES).cloned().collect::<Vec<_>>().join("\n")
    );
    // The bias must reach the decoder's forms, or the run proves little.
    assert!(decoded * 10 >= cases, "only {decoded} of {cases} sequences decoded: the generator misses the decoder");
}

/// What a linear sweep of a kernel found.
#[derive(Default)]
struct Sweep {
    /// Instructions iced found in the executable sections.
    instructions: u64,
    /// Of those, the ones the decoder accepts (each compared).
    decoded: u64,
}

/// Sweeps the executable sections of the ELF file `image`, comparing every
/// instruction the decoder accepts; disagreements go to `failures`.
fn sweep(image: &[u8], failures: &mut Vec<String>) -> Result<Sweep, String> {
    use elf::{abi, endian::AnyEndian, ElfBytes};
    let file = ElfBytes::<AnyEndian>::minimal_parse(image).map_err(|e| format!("not an ELF file: {e}"))?;
    let sections = file.section_headers().ok_or("no section headers")?;
    let mut formatter = formatter();
    let mut found = Sweep::default();
    for header in sections.iter() {
        if header.sh_flags & u64::from(abi::SHF_EXECINSTR) == 0 || header.sh_type == abi::SHT_NOBITS {
            continue;
        }
        let (code, _) = file.section_data(&header).map_err(|e| format!("a section cannot be read: {e}"))?;
        let mut decoder = Decoder::with_ip(64, code, header.sh_addr, DecoderOptions::NONE);
        while decoder.can_decode() {
            let (at, ip) = (decoder.position(), decoder.ip());
            let _ = decoder.decode(); // a step of the sweep; `check` decodes the bytes itself
            found.instructions += 1;
            // As many bytes as the hypervisor fetches at a fault.
            match check(&code[at..code.len().min(at + MAX_LEN)], ip, &mut formatter) {
                Ok(true) => found.decoded += 1,
                Ok(false) => {}
                Err(why) => failures.push(format!("at {ip:#x}: {why}")),
            }
        }
    }
    Ok(found)
}

#[test]
fn bare_metal_kernels_decode_as_iced_does() {
    let Some(list) = std::env::var_os(KERNELS_TO_SWEEP) else {
        eprintln!(
            "{KERNELS_TO_SWEEP} is not set: no bare-metal kernel to sweep (cargo xtask test builds and names them)"
        );
        return;
    };
    let mut failures = Vec::new();
    let mut kernels = 0;
    for path in std::env::split_paths(&list) {
        let image = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let found = sweep(&image, &mut failures).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        eprintln!(
            "{}: {} instructions, {} accepted by the decoder and compared",
            path.display(),
            found.instructions,
            found.decoded
        );
        assert!(found.decoded > 0, "{}: no instruction the decoder knows: not a kernel?", path.display());
        kernels += 1;
    }
    assert!(kernels > 0, "{KERNELS_TO_SWEEP} names no file");
    assert!(
        failures.is_empty(),
        "{} instructions of the bare-metal kernels decode otherwise than iced:\n{}",
        failures.len(),
        failures.iter().take(SHOWN_FAILURES).cloned().collect::<Vec<_>>().join("\n")
    );
}
