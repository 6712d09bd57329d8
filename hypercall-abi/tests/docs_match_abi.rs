//! The ABI chapter of the book (`docs/src/abi.md`) must say what this crate
//! says.
//!
//! The chapter is the specification people read; this crate is the one the
//! compiler reads. Nothing forces the two to agree except this test: it
//! reads the chapter's tables and checks them, in both directions, against
//! the crate: every hypercall with its number and name, the errors its row
//! names (exactly [`Hypercall::errors`]) and the calls `multicall` refuses
//! ([`Hypercall::batchable`]), every error with its code, name and text, the
//! offsets and sizes of every shared structure (start info, domain info,
//! console ring, shared-info page and its parts, the paging, trap and
//! event-channel records), every command number (`MmuextCmd`,
//! `MemoryOpCmd`, `EventChannelCmd`, `SchedCmd`), the port states and
//! virtual IRQs, the constants the prose quotes, and `ABI_VERSION` with a
//! history row for every version. When you change the ABI, this test tells
//! you which table of the chapter to update.

use core::mem::{offset_of, size_of};

use hypercall_abi::console::{CONSOLE_OUT_SIZE, CONSOLE_WRITE_MAX};
use hypercall_abi::domain_info::DOMID_SELF;
use hypercall_abi::elf_note::{NOTE_OWNER, NOTE_TYPE_ABI_VERSION};
use hypercall_abi::event::{
    port_state, virq, EventChannelCmd, EventChannelStatus, SchedCmd, VcpuInfo, VcpuTime, WallClock, BITS_PER_WORD,
    MASK_OFFSET, NR_PORTS, PENDING_OFFSET, PENDING_SEL_OFFSET, POLL_MAX, PORT_WORDS, UPCALL_MASK_OFFSET,
    UPCALL_PENDING_OFFSET,
};
use hypercall_abi::error::MAX_ERROR_CODE;
use hypercall_abi::layout::{GUEST_PML4_SLOTS, GUEST_STACK_PAGES, GUEST_VIRT_BASE, GUEST_VIRT_LIMIT, HYPERVISOR_BASE};
use hypercall_abi::mm::{
    uvm_flags, MemoryOpCmd, MmuUpdate, MmuextCmd, MmuextOp, MulticallEntry, BATCH_MAX, MULTICALL_MAX,
};
use hypercall_abi::start_info::START_INFO_MAGIC;
use hypercall_abi::trap::{
    debug_cause, frame_flags, TrapFrame, TrapInfo, HANDLER_RFLAGS, RED_ZONE, TRAP_VECTORS, VECTOR_DEBUG, VECTOR_EVENT,
    VECTOR_SYSCALL,
};
use hypercall_abi::{ConsoleRing, DomainInfo, Hypercall, HypercallError, SharedInfo, StartInfo, ABI_VERSION};

/// The chapter, as it will be published.
const DOC: &str = include_str!("../../docs/src/abi.md");

/// The text from the heading line `heading` (exactly, e.g. `"## Errors"`) to
/// the next heading of any level. Lines inside code blocks are not headings.
fn section(heading: &str) -> &'static str {
    let mut offset = 0;
    let mut start = None;
    let mut in_code = false;
    for line in DOC.split_inclusive('\n') {
        let text = line.trim_end();
        if text.starts_with("```") {
            in_code = !in_code;
        }
        let is_heading = !in_code && text.starts_with('#');
        match start {
            None if is_heading && text == heading => start = Some(offset + line.len()),
            Some(from) if is_heading => return &DOC[from..offset],
            _ => {}
        }
        offset += line.len();
    }
    match start {
        Some(from) => &DOC[from..],
        None => panic!("docs/src/abi.md has no heading {heading:?}"),
    }
}

/// The cells of a Markdown table row, trimmed.
fn cells(line: &str) -> Vec<String> {
    let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
    inner.split('|').map(|cell| cell.trim().to_string()).collect()
}

/// The body rows (header and separator skipped) of the `index`-th table in
/// `text`.
fn table(text: &str, index: usize) -> Vec<Vec<String>> {
    let mut tables: Vec<Vec<Vec<String>>> = Vec::new();
    let mut in_table = false;
    for line in text.lines() {
        if line.trim_start().starts_with('|') {
            if !in_table {
                tables.push(Vec::new());
                in_table = true;
            }
            tables.last_mut().expect("a table was started").push(cells(line));
        } else {
            in_table = false;
        }
    }
    let rows = tables.get(index).unwrap_or_else(|| panic!("no table #{index} in:\n{text}"));
    assert!(rows.len() >= 2, "a table needs a header and a separator row");
    assert!(
        rows[1].iter().all(|c| c.chars().all(|ch| matches!(ch, '-' | ':'))),
        "row 2 is not a separator: {:?}",
        rows[1]
    );
    rows[2..].to_vec()
}

fn code(name: &str) -> String {
    format!("`{name}`")
}

/// `0x40_0000` style: hex digits grouped by four from the right.
fn grouped_hex(value: u64, width: usize) -> String {
    let digits = format!("{value:0width$x}");
    let mut groups: Vec<&str> = Vec::new();
    let mut end = digits.len();
    while end > 0 {
        let start = end.saturating_sub(4);
        groups.push(&digits[start..end]);
        end = start;
    }
    groups.reverse();
    format!("0x{}", groups.join("_"))
}

/// Fails unless the chapter contains `text`; line breaks and runs of spaces
/// count as one space, so the prose may be re-wrapped freely.
fn assert_doc_says(text: &str) {
    let flat = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(flat(DOC).contains(&flat(text)), "docs/src/abi.md should say {text:?}");
}

/// Fails unless the text under `heading` contains `text` (spacing as for
/// [`assert_doc_says`]).
fn assert_section_says(heading: &str, text: &str) {
    let flat = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(flat(section(heading)).contains(&flat(text)), "the section {heading:?} of docs/src/abi.md should say {text:?}");
}

/// The words in backticks in `cell` that start with a capital letter (in
/// the hypercall table's errors column, those are error names).
fn capitalised_code_words(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .filter(|w| w.chars().next().is_some_and(|c| c.is_ascii_uppercase()))
        .map(str::to_string)
        .collect()
}

#[test]
fn every_hypercall_is_in_the_table_with_its_number_and_name() {
    let rows = table(section("## Hypercalls"), 0);
    for call in Hypercall::ALL {
        let number = (call as u64).to_string();
        assert!(
            rows.iter().any(|row| row[0] == number && row[1] == code(call.name())),
            "the hypercall table has no row `| {number} | `{}` | ...`",
            call.name()
        );
        let heading = format!("### {number}: `{}`", call.name());
        assert!(DOC.lines().any(|line| line == heading), "no section {heading:?} describing it");
    }
    for row in &rows {
        let number: u64 = row[0].parse().unwrap_or_else(|_| panic!("not a hypercall number: {row:?}"));
        let call = Hypercall::try_from(number).unwrap_or_else(|_| panic!("the table lists unknown hypercall {number}"));
        assert_eq!(row[1], code(call.name()), "hypercall {number} has another name in the crate");
    }
    assert_eq!(rows.len(), Hypercall::ALL.len(), "one row per hypercall");
}

#[test]
fn every_hypercall_row_names_exactly_the_errors_it_may_return() {
    let rows = table(section("## Hypercalls"), 0);
    for call in Hypercall::ALL {
        let row = rows.iter().find(|row| row[1] == code(call.name())).expect("a row per hypercall");
        let cell = row.last().expect("a row has cells");
        let mut named = capitalised_code_words(cell);
        named.sort();
        named.dedup();
        let mut listed: Vec<String> = call.errors().iter().map(|e| format!("{e:?}")).collect();
        listed.sort();
        assert_eq!(named, listed, "the errors column of `{}` must name exactly `Hypercall::errors`", call.name());
        if call.errors().is_empty() {
            assert_eq!(cell, "none", "the errors column of `{}`", call.name());
        }
    }
}

#[test]
fn the_calls_multicall_refuses_are_named() {
    let prose = section("### 10: `multicall`");
    let (_, after) = prose.split_once("cannot be batched:").expect("the multicall section says what cannot be batched");
    let (sentence, _) = after.split_once("each get").expect("... and what those entries get");
    for call in Hypercall::ALL {
        let named = sentence.contains(&code(call.name()));
        assert_eq!(named, !call.batchable(), "the multicall section and `Hypercall::batchable` disagree on `{}`", call.name());
    }
}

#[test]
fn every_error_is_in_the_table_with_its_code_name_and_text() {
    let rows = table(section("## Errors"), 0);
    for error in HypercallError::ALL.into_iter().chain([HypercallError::Unrecognized]) {
        let number = error.code().to_string();
        assert!(
            rows.iter().any(|row| row[0] == number
                && row[1] == code(&format!("{error:?}"))
                && row[2] == code(error.describe())),
            "the error table has no row `| {number} | `{error:?}` | `{}` | ...`",
            error.describe()
        );
    }
    for row in &rows {
        let number: u64 = row[0].parse().unwrap_or_else(|_| panic!("not an error code: {row:?}"));
        let error = HypercallError::from_code(number);
        assert_eq!(row[1], code(&format!("{error:?}")), "error code {number} has another name in the crate");
    }
    assert_eq!(rows.len(), HypercallError::ALL.len() + 1, "one row per error, plus Unrecognized");
    assert_doc_says(&format!("`MAX_ERROR_CODE` is {MAX_ERROR_CODE}"));
}

#[test]
fn abi_version_is_stated() {
    assert_doc_says(&format!("`ABI_VERSION = {ABI_VERSION}`"));
    let history = table(section("## Versioning"), 0);
    let listed: Vec<u32> = history.iter().filter_map(|row| row[0].parse::<u32>().ok()).collect();
    let every: Vec<u32> = (1..=ABI_VERSION).collect();
    assert_eq!(listed, every, "the version history must have one row per version, in order, up to the current one");
}

/// Checks that the first table under `heading` lists exactly `fields`, in
/// order, at their offsets.
fn assert_layout(heading: &str, fields: &[(&str, usize)]) {
    let rows = table(section(heading), 0);
    let documented: Vec<(String, String)> = rows.iter().map(|row| (row[0].clone(), row[1].clone())).collect();
    let actual: Vec<(String, String)> = fields.iter().map(|(name, offset)| (offset.to_string(), code(name))).collect();
    assert_eq!(
        documented, actual,
        "the table under {heading:?} must list (offset, field) exactly as the crate has them"
    );
}

macro_rules! fields {
    ($ty:ty: $($field:ident),* $(,)?) => {
        &[$((stringify!($field), offset_of!($ty, $field))),*]
    };
}

#[test]
fn shared_structures_have_the_documented_offsets() {
    assert_layout(
        "### Start-info page fields",
        fields!(StartInfo: magic, abi_version, domain_id, nr_pages, virt_base, frame_list, page_tables,
            nr_page_table_pages, console_ring, shared_info, stack_bottom, stack_top, free_start, free_end,
            image_start, image_end, name_len, cmdline_len, name, cmdline),
    );
    assert_doc_says(&format!("The structure is {} bytes", size_of::<StartInfo>()));
    assert_layout(
        "## `DomainInfo`",
        fields!(DomainInfo: domain_id, state, nr_pages, exit_status, nr_domains, name_len, name),
    );
    assert_doc_says(&format!("; {} bytes.", size_of::<DomainInfo>()));
    assert_layout(
        "## The console ring",
        fields!(ConsoleRing: out_prod, out_cons, in_prod, in_cons, out, input, reserved),
    );
    assert_layout("### `MmuUpdate`", fields!(MmuUpdate: ptr, val));
    assert_layout("### `MmuextOp` and `MmuextCmd`", fields!(MmuextOp: cmd, reserved, arg));
    assert_layout("### `MulticallEntry`", fields!(MulticallEntry: op, args, result));
    assert_layout(
        "### `TrapFrame`",
        fields!(TrapFrame: rax, r11, rcx, vector, error_code, cr2, flags, rip, rflags, rsp),
    );
    assert_doc_says(&format!("{} bytes, lowest address first", size_of::<TrapFrame>()));
    assert_layout("### `TrapInfo`", fields!(TrapInfo: vector, handler));

    assert_layout("### `SharedInfo`", fields!(SharedInfo: vcpu, time, wall_clock, evtchn_pending, evtchn_mask, tail));
    assert_section_says("### `SharedInfo`", &format!("{} bytes", size_of::<SharedInfo>()));
    assert_layout("### `VcpuInfo`", fields!(VcpuInfo: upcall_pending, upcall_mask, reserved, pending_sel));
    assert_section_says("### `VcpuInfo`", &format!("{} bytes", size_of::<VcpuInfo>()));
    assert_layout(
        "### `VcpuTime`",
        fields!(VcpuTime: version, reserved, tsc_timestamp, system_time, tsc_to_system_mul, tsc_shift, reserved2),
    );
    assert_section_says("### `VcpuTime`", &format!("{} bytes", size_of::<VcpuTime>()));
    assert_layout("### `WallClock`", fields!(WallClock: version, nsec, sec));
    assert_section_says("### `WallClock`", &format!("{} bytes", size_of::<WallClock>()));
    assert_layout("### `EventChannelStatus`", fields!(EventChannelStatus: state, remote_domain, remote_port, virq));
    assert_section_says("### `EventChannelStatus`", &format!("{} bytes", size_of::<EventChannelStatus>()));
    for (heading, size) in [
        ("### `MmuUpdate`", size_of::<MmuUpdate>()),
        ("### `MmuextOp` and `MmuextCmd`", size_of::<MmuextOp>()),
        ("### `MulticallEntry`", size_of::<MulticallEntry>()),
        ("### `TrapInfo`", size_of::<TrapInfo>()),
    ] {
        assert_section_says(heading, &format!("{size} bytes"));
    }
}

/// The (number, name) pairs of the first two columns of table `index`
/// under `heading`.
fn numbered_names(heading: &str, index: usize) -> Vec<(String, String)> {
    table(section(heading), index).iter().map(|row| (row[0].clone(), row[1].clone())).collect()
}

#[test]
fn event_channel_commands_states_and_virqs_match() {
    let actual: Vec<(String, String)> = (0..)
        .map_while(EventChannelCmd::from_raw)
        .map(|cmd| ((cmd as u64).to_string(), code(&format!("{cmd:?}"))))
        .collect();
    assert_eq!(numbered_names("### 16: `event_channel_op`", 0), actual, "the EventChannelCmd table");

    let actual: Vec<(String, String)> =
        (0..).map_while(SchedCmd::from_raw).map(|cmd| ((cmd as u64).to_string(), code(&format!("{cmd:?}")))).collect();
    assert_eq!(numbered_names("### 17: `sched_op`", 0), actual, "the SchedCmd table");

    let states = [
        (port_state::FREE, "FREE"),
        (port_state::UNBOUND, "UNBOUND"),
        (port_state::INTERDOMAIN, "INTERDOMAIN"),
        (port_state::VIRQ, "VIRQ"),
    ];
    let actual: Vec<(String, String)> = states.iter().map(|(v, n)| (v.to_string(), code(n))).collect();
    assert_eq!(numbered_names("### Ports and their states", 0), actual, "the port_state table");

    let virqs = [(virq::TIMER, "TIMER"), (virq::CONSOLE, "CONSOLE"), (virq::DOM_EXC, "DOM_EXC")];
    assert_eq!(virqs.len() as u64, virq::COUNT, "a virq was added: list it here and in the chapter");
    let actual: Vec<(String, String)> = virqs.iter().map(|(v, n)| (v.to_string(), code(n))).collect();
    assert_eq!(numbered_names("### Virtual IRQs", 0), actual, "the virq table");
}

#[test]
fn command_numbers_match() {
    let rows = table(section("### `MmuextOp` and `MmuextCmd`"), 1);
    let documented: Vec<(String, String)> = rows.iter().map(|row| (row[0].clone(), row[1].clone())).collect();
    let actual: Vec<(String, String)> =
        MmuextCmd::ALL.iter().map(|cmd| ((*cmd as u32).to_string(), code(&format!("{cmd:?}")))).collect();
    assert_eq!(documented, actual, "the MmuextCmd table");

    let rows = table(section("### 11: `memory_op`"), 0);
    let documented: Vec<(String, String)> = rows.iter().map(|row| (row[0].clone(), row[1].clone())).collect();
    let actual: Vec<(String, String)> = (0..)
        .map_while(MemoryOpCmd::from_raw)
        .map(|cmd| ((cmd as u64).to_string(), code(&format!("{cmd:?}"))))
        .collect();
    assert_eq!(documented, actual, "the MemoryOpCmd table");
}

#[test]
fn quoted_constants_match() {
    assert_doc_says(&format!("`GUEST_VIRT_BASE = {}`", grouped_hex(GUEST_VIRT_BASE, 0)));
    assert_doc_says(&grouped_hex(GUEST_VIRT_LIMIT, 16));
    assert_doc_says(&format!("`GUEST_PML4_SLOTS` = {GUEST_PML4_SLOTS}"));
    assert_doc_says(&grouped_hex(HYPERVISOR_BASE, 16));
    assert_doc_says(&format!("`GUEST_STACK_PAGES` = {GUEST_STACK_PAGES}"));
    assert_doc_says(&format!("`DOMID_SELF` (`{DOMID_SELF:#x}`)"));
    assert_doc_says(&format!("`CONSOLE_WRITE_MAX` ({CONSOLE_WRITE_MAX})"));
    assert_doc_says(&format!("`CONSOLE_OUT_SIZE` = {CONSOLE_OUT_SIZE}"));
    assert_doc_says(&format!("`MULTICALL_MAX` ({MULTICALL_MAX})"));
    assert_doc_says(&format!("`BATCH_MAX` ({BATCH_MAX}"));
    assert_doc_says(&format!("`INVLPG` ({})", uvm_flags::INVLPG));
    assert_doc_says(&format!("`TLB_FLUSH` ({})", uvm_flags::TLB_FLUSH));
    assert_doc_says(&format!("`TRAP_VECTORS` ({TRAP_VECTORS}"));
    assert_doc_says(&format!("`RED_ZONE` ({RED_ZONE})"));
    assert_doc_says(&format!("`VECTOR_SYSCALL` (`{VECTOR_SYSCALL:#x}`)"));
    assert_doc_says(&format!("`FROM_USER` ({})", frame_flags::FROM_USER));
    assert_doc_says(&format!("`VECTOR_DEBUG` ({VECTOR_DEBUG})"));
    assert_doc_says(&format!("`HANDLER_RFLAGS`\n  (`{HANDLER_RFLAGS:#x}`"));
    assert_doc_says(&format!("`SINGLE_STEP` (`{:#x}`", debug_cause::SINGLE_STEP));
    assert_doc_says(&format!("`NOTE_TYPE_ABI_VERSION` = {NOTE_TYPE_ABI_VERSION}"));
    assert_doc_says(&format!("`NOTE_OWNER` = `\"{NOTE_OWNER}\"`"));
    assert_doc_says(&format!("`VECTOR_EVENT` (`{VECTOR_EVENT:#x}`)"));
    assert_doc_says(&format!("`NR_PORTS` ({NR_PORTS})"));
    assert_doc_says(&format!("`PORT_WORDS` ({PORT_WORDS})"));
    assert_doc_says(&format!("`BITS_PER_WORD` ({BITS_PER_WORD})"));
    assert_doc_says(&format!("`POLL_MAX` ({POLL_MAX})"));
    assert_doc_says(&format!("`virq::COUNT` ({})", virq::COUNT));
    assert_doc_says(&format!("`UPCALL_PENDING_OFFSET` ({UPCALL_PENDING_OFFSET})"));
    assert_doc_says(&format!("`UPCALL_MASK_OFFSET` ({UPCALL_MASK_OFFSET})"));
    assert_doc_says(&format!("`PENDING_SEL_OFFSET` ({PENDING_SEL_OFFSET})"));
    assert_doc_says(&format!("`PENDING_OFFSET` ({PENDING_OFFSET})"));
    assert_doc_says(&format!("`MASK_OFFSET` ({MASK_OFFSET})"));
    let magic = START_INFO_MAGIC.to_le_bytes();
    assert_doc_says(&format!("the bytes `{}`", core::str::from_utf8(&magic).expect("the magic is ASCII")));
}
