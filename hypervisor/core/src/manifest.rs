//! The domain manifest: which domains to start, with what image, memory and
//! command line, and how each is expected to end.
//!
//! The same code reads the manifest twice: `cargo xtask` checks the file a
//! person wrote before QEMU starts, and the hypervisor checks the copy inside
//! the boot bundle again, because a bundle can be made by hand. Both print a
//! [`ManifestError`] as one line naming the domain and the field, so a bad
//! manifest is fixed from the message alone.
//!
//! ```toml
//! [machine]              # optional
//! memory = "128M"        # QEMU -m, at most 15G; domains + the hypervisor's share must fit
//! [[domain]]
//! name = "hello"         # unique, [a-z0-9_-]+, at most 32 bytes
//! image = "hello"        # demo-guest crate name or path (xtask); bundle path (hypervisor)
//! memory = "2M"          # K/M/G suffix or integer bytes, multiple of 4 KiB
//! cmdline = "x=1"        # optional, at most 1024 bytes
//! expect = 0             # optional: exit status (default 0), "crash" or "time-limit"
//! max_memory = "4M"      # optional: what memory_op may grow it to (default: memory)
//! weight = 256           # optional: CPU share (default 256)
//! time_limit = "300ms"   # optional: CPU time (more than 0) after which it is stopped
//! umip = false           # optional: run without CR4.UMIP (default true)
//! mode = "emulated"      # optional: "paravirtualized" (default) or "emulated"
//! ```

use alloc::borrow::ToOwned;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use crate::heap_account::{allowance, heap_size};
use hypercall_abi::start_info::{CMDLINE_MAX, NAME_MAX};
use hypercall_abi::PAGE_SIZE;
use serde::{Deserialize, Serialize};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

mod values;
pub use values::{Expect, MemorySize, MemorySizeError, TimeSpan};

/// Machine memory when the manifest has no `[machine]` table.
pub const DEFAULT_MACHINE_MEMORY: MemorySize = MemorySize(128 * MIB);

/// Memory the hypervisor keeps for itself besides its heap (its image,
/// page tables, the boot bundle and the firmware's holes) and never gives
/// to domains. With the heap it makes the hypervisor's share
/// ([`Manifest::hypervisor_share`]): a manifest whose domains need more
/// than machine memory minus that share is refused before anything boots,
/// rather than failing half-way through building domains.
pub const HYPERVISOR_RESERVE: u64 = 16 * MIB;

/// The most machine memory the hypervisor can use: its physical map
/// covers 16 GiB of machine addresses (`PHYSMAP_LIMIT` in the kernel), and
/// QEMU puts RAM beyond 3 GiB above a 1 GiB hole, at 4 GiB.
pub const MAX_MACHINE_MEMORY: MemorySize = MemorySize(15 * GIB);

/// Below 4 GiB, QEMU's microvm maps at most this much RAM; the rest starts at 4 GiB.
const RAM_BELOW_HOLE: u64 = 3 * GIB;

/// Frames the hypervisor's frame table describes on a machine with
/// `memory` of RAM: every address up to the end of RAM, the 1 GiB hole
/// below 4 GiB included once RAM reaches past it.
pub fn machine_frames(memory: MemorySize) -> u64 {
    let end = if memory.bytes() > RAM_BELOW_HOLE { memory.bytes() + GIB } else { memory.bytes() };
    end / PAGE_SIZE
}

/// Machine memory must be a whole number of these, because QEMU's `-m`
/// rounds anything else.
pub const MACHINE_MEMORY_GRANULE: u64 = MIB;

/// The `[machine]` table.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MachineSpec {
    /// RAM of the whole (virtual) machine, QEMU's `-m`.
    #[serde(default = "default_machine_memory")]
    pub memory: MemorySize,
}

fn default_machine_memory() -> MemorySize {
    DEFAULT_MACHINE_MEMORY
}

impl Default for MachineSpec {
    fn default() -> Self {
        MachineSpec { memory: DEFAULT_MACHINE_MEMORY }
    }
}

/// One `[[domain]]` table.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DomainSpec {
    /// Unique name, `[a-z0-9_-]+`, at most [`NAME_MAX`] bytes; prefixes the
    /// domain's console lines.
    pub name: String,
    /// Where the guest ELF comes from. For `cargo xtask`: a demo-guest crate
    /// name or a path relative to the manifest; inside a boot bundle: the
    /// bundle path (see [`crate::bundle::image_path`]).
    pub image: String,
    /// The domain's memory: a multiple of 4 KiB.
    pub memory: MemorySize,
    /// The most memory it may grow to with `memory_op` (ballooning); at
    /// least `memory`, which is also the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory: Option<MemorySize>,
    /// Given to the guest in its start-info page; at most [`CMDLINE_MAX`] bytes.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cmdline: String,
    /// How the domain is expected to end (default: `exit 0`).
    #[serde(default)]
    pub expect: Expect,
    /// Its share of the CPU against the others (default 256, like Xen's
    /// credit scheduler): a domain of weight 512 gets twice the CPU of one
    /// of weight 256 when both want it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// CPU time after which the hypervisor stops the domain, as `"500ms"`,
    /// `"2s"` or milliseconds, more than 0 (no limit when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_limit: Option<TimeSpan>,
    /// Whether CR4.UMIP is on while the domain runs (default true, when
    /// the CPU has it): with it, SGDT, SIDT, SLDT, SMSW and STR fault in
    /// ring 3; without it they run and reveal the hypervisor's tables (the
    /// Popek-Goldberg probe shows both).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub umip: Option<bool>,
    /// How the guest is virtualized (default: paravirtualized).
    #[serde(default, skip_serializing_if = "Mode::is_default")]
    pub mode: Mode,
}

/// How a domain's guest is virtualized.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A guest built with the guest SDK, asking for everything by hypercall.
    #[default]
    Paravirtualized,
    /// An unmodified kernel (`hypercall_abi::bare_metal`), deprivileged:
    /// trap-and-emulate with shadow page tables.
    Emulated,
}

impl Mode {
    fn is_default(&self) -> bool {
        *self == Mode::Paravirtualized
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Paravirtualized => "paravirtualized",
            Mode::Emulated => "emulated",
        })
    }
}

impl DomainSpec {
    /// `max_memory`, or `memory` when it is not given.
    pub fn max_memory_bytes(&self) -> u64 {
        self.max_memory.unwrap_or(self.memory).bytes()
    }

    /// The hypervisor heap this domain may hold ([`allowance`]).
    pub fn heap_allowance(&self) -> usize {
        allowance(self.max_memory_bytes() / PAGE_SIZE, self.mode == Mode::Emulated)
    }
}

/// A parsed manifest: the machine and the domains in the order they are
/// written (which is also their domain id order).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The `[machine]` table (defaults when absent).
    #[serde(default)]
    pub machine: MachineSpec,
    /// The `[[domain]]` tables.
    #[serde(rename = "domain", default)]
    pub domains: Vec<DomainSpec>,
}

/// Names a domain in an error: by name when it has a usable one, otherwise
/// by its position (`domain #2` is the second `[[domain]]` table).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainRef {
    /// Zero-based position in the manifest.
    pub index: usize,
    /// The name as written, if any.
    pub name: Option<String>,
}

impl DomainRef {
    fn of(index: usize, name: &str) -> DomainRef {
        DomainRef { index, name: Some(name.to_owned()) }
    }
}

impl fmt::Display for DomainRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) if !name.is_empty() => write!(f, "domain \"{}\"", name.escape_debug()),
            _ => write!(f, "domain #{}", self.index + 1),
        }
    }
}

/// What is wrong with a domain name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NameProblem {
    /// The name is empty.
    Empty,
    /// The name is longer than [`NAME_MAX`] bytes.
    TooLong(usize),
    /// The name holds a character outside `[a-z0-9_-]`.
    BadChar(char),
}

/// Why a manifest was refused. [`Display`](fmt::Display) gives one line
/// naming the domain and the field; [`ManifestError::in_file`] adds the file
/// (and line, when known) in front.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ManifestError {
    /// Not TOML, or TOML that does not fit the schema: an unknown or missing
    /// key, a value of the wrong type, an unreadable memory size.
    Toml {
        /// 1-based line of the offending text, when the parser knows it.
        line: Option<usize>,
        /// The domain the error is in, if it is in one.
        domain: Option<DomainRef>,
        /// The key whose value is wrong, when the message does not name it.
        field: Option<String>,
        /// The parser's message, on one line.
        message: String,
    },
    /// There is no `[[domain]]` table.
    NoDomains,
    /// A name is empty, too long or has a character outside `[a-z0-9_-]`.
    BadName {
        /// The domain.
        domain: DomainRef,
        /// What is wrong.
        problem: NameProblem,
    },
    /// Two domains have the same name.
    DuplicateName {
        /// The name.
        name: String,
        /// Zero-based positions of the first and the second domain.
        first: usize,
        /// See `first`.
        second: usize,
    },
    /// `image` is empty.
    EmptyImage {
        /// The domain.
        domain: DomainRef,
    },
    /// `cmdline` is longer than [`CMDLINE_MAX`] bytes.
    CmdlineTooLong {
        /// The domain.
        domain: DomainRef,
        /// Its length in bytes.
        len: usize,
    },
    /// A domain's `weight` is 0.
    ZeroWeight {
        /// The domain.
        domain: DomainRef,
    },
    /// A domain's `time_limit` is 0, which would stop it before it runs.
    ZeroTimeLimit {
        /// The domain.
        domain: DomainRef,
    },
    /// A domain's `max_memory` is below its `memory` or not a multiple of 4 KiB.
    BadMaxMemory {
        /// The domain.
        domain: DomainRef,
        /// The size written.
        size: MemorySize,
        /// The domain's `memory`.
        memory: MemorySize,
    },
    /// A domain's `memory` is not a multiple of 4 KiB.
    MemoryNotPageMultiple {
        /// The domain.
        domain: DomainRef,
        /// The size written.
        size: MemorySize,
    },
    /// A domain's `memory` cannot hold even a one-page image with its start
    /// info, console ring, page tables and stack.
    MemoryTooSmall {
        /// The domain.
        domain: DomainRef,
        /// The size written.
        size: MemorySize,
        /// The smallest size that can work.
        min: MemorySize,
    },
    /// `[machine] memory` is not a multiple of [`MACHINE_MEMORY_GRANULE`].
    MachineMemoryNotMiB {
        /// The size written.
        size: MemorySize,
    },
    /// `[machine] memory` is more than [`MAX_MACHINE_MEMORY`].
    MachineMemoryTooLarge {
        /// The size written.
        size: MemorySize,
    },
    /// The domains together need more than the machine has after the
    /// hypervisor's share; names the domain that crosses the limit.
    TooMuchMemory {
        /// The first domain with which the total no longer fits.
        domain: DomainRef,
        /// That domain's memory.
        size: MemorySize,
        /// Total memory of the domains up to and including it.
        total: u64,
        /// The machine's memory.
        machine: MemorySize,
        /// The hypervisor's share ([`Manifest::hypervisor_share`]).
        hypervisor: u64,
    },
}

impl ManifestError {
    /// The 1-based line of the error in the manifest text, when known.
    pub fn line(&self) -> Option<usize> {
        match self {
            ManifestError::Toml { line, .. } => *line,
            _ => None,
        }
    }

    /// Displays the error after `file` (and `:line`, when known), e.g.
    /// `scenarios/demo/manifest.toml:7: domain "b": unknown field ...`.
    pub fn in_file<'a>(&'a self, file: &'a str) -> InFile<'a> {
        InFile { file, error: self }
    }

    fn fmt_body(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ManifestError::Toml { domain, field, message, .. } => {
                match (domain, field) {
                    (Some(d), Some(k)) => write!(f, "{d}, field `{k}`: ")?,
                    (Some(d), None) => write!(f, "{d}: ")?,
                    (None, Some(k)) => write!(f, "field `{k}`: ")?,
                    (None, None) => {}
                }
                f.write_str(message)
            }
            ManifestError::NoDomains => f.write_str("no [[domain]] table: a manifest must start at least one domain"),
            ManifestError::BadName { domain, problem } => {
                write!(f, "{domain}, field `name`: ")?;
                match problem {
                    NameProblem::Empty => f.write_str("the name is empty"),
                    NameProblem::TooLong(len) => {
                        write!(f, "the name is {len} bytes long, at most {NAME_MAX} are allowed")
                    }
                    NameProblem::BadChar(c) => write!(
                        f,
                        "the name has '{}': use only lower-case letters, digits, '-' and '_'",
                        c.escape_debug()
                    ),
                }
            }
            ManifestError::DuplicateName { name, first, second } => write!(
                f,
                "domain \"{}\", field `name`: domains #{} and #{} are both named \"{}\"",
                name.escape_debug(),
                first + 1,
                second + 1,
                name.escape_debug()
            ),
            ManifestError::EmptyImage { domain } => write!(f, "{domain}, field `image`: the image is empty"),
            ManifestError::ZeroWeight { domain } => {
                write!(f, "{domain}, field `weight`: a weight must be at least 1 (the default is 256)")
            }
            ManifestError::ZeroTimeLimit { domain } => write!(
                f,
                "{domain}, field `time_limit`: a time limit of 0 would stop the domain before it runs \
                 (leave `time_limit` out for no limit)"
            ),
            ManifestError::BadMaxMemory { domain, size, memory } => write!(
                f,
                "{domain}, field `max_memory`: {size} must be a multiple of 4 KiB and at least `memory` ({memory})"
            ),
            ManifestError::CmdlineTooLong { domain, len } => write!(
                f,
                "{domain}, field `cmdline`: the command line is {len} bytes long, at most {CMDLINE_MAX} are allowed"
            ),
            ManifestError::MemoryNotPageMultiple { domain, size } => {
                write!(f, "{domain}, field `memory`: {size} ({} bytes) is not a multiple of 4 KiB", size.bytes())
            }
            ManifestError::MemoryTooSmall { domain, size, min } => write!(
                f,
                "{domain}, field `memory`: {size} is too small, a domain needs at least {min} \
                 for its image, start info, console ring, page tables and stack"
            ),
            ManifestError::MachineMemoryNotMiB { size } => {
                write!(f, "[machine], field `memory`: {size} is not a whole number of MiB (QEMU -m would round it)")
            }
            ManifestError::MachineMemoryTooLarge { size } => write!(
                f,
                "[machine], field `memory`: {size} is more than the {MAX_MACHINE_MEMORY} the hypervisor can use \
                 (its physical map covers 16 GiB of addresses, and RAM beyond 3 GiB starts at 4 GiB)"
            ),
            ManifestError::TooMuchMemory { domain, size, total, machine, hypervisor } => write!(
                f,
                "{domain}, field `memory`: {size} brings the domains' total to {}, more than the {} \
                 the machine's {machine} leaves after the hypervisor's {} (raise [machine] memory)",
                MemorySize(*total),
                MemorySize(machine.bytes().saturating_sub(*hypervisor)),
                MemorySize(*hypervisor)
            ),
        }
    }
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line() {
            write!(f, "line {line}: ")?;
        }
        self.fmt_body(f)
    }
}

/// A [`ManifestError`] displayed after the file it is in; see
/// [`ManifestError::in_file`].
pub struct InFile<'a> {
    file: &'a str,
    error: &'a ManifestError,
}

impl fmt::Display for InFile<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.error.line() {
            Some(line) => write!(f, "{}:{line}: ", self.file)?,
            None => write!(f, "{}: ", self.file)?,
        }
        self.error.fmt_body(f)
    }
}

/// The smallest domain memory that can hold a one-page image and everything
/// the hypervisor puts after it (see [`crate::initial_layout::initial_layout`]).
pub fn min_domain_memory() -> MemorySize {
    let mut pages = 1;
    while crate::initial_layout::initial_layout(1, pages).is_err() {
        pages += 1;
    }
    MemorySize(pages * PAGE_SIZE)
}

impl Manifest {
    /// Parses and validates a manifest.
    pub fn parse(text: &str) -> Result<Manifest, ManifestError> {
        let manifest = Manifest::from_toml(text)?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// Parses a manifest without [`validate`](Manifest::validate)-ing it.
    pub fn from_toml(text: &str) -> Result<Manifest, ManifestError> {
        toml::from_str::<Manifest>(text).map_err(|e| toml_error(text, &e))
    }

    /// Checks everything that can be checked without the images; returns the
    /// first problem in manifest order.
    pub fn validate(&self) -> Result<(), ManifestError> {
        if self.domains.is_empty() {
            return Err(ManifestError::NoDomains);
        }
        let min = min_domain_memory();
        for (index, d) in self.domains.iter().enumerate() {
            let domain = DomainRef::of(index, &d.name);
            check_name(&d.name).map_err(|problem| ManifestError::BadName { domain: domain.clone(), problem })?;
            if let Some(first) = self.domains[..index].iter().position(|o| o.name == d.name) {
                return Err(ManifestError::DuplicateName { name: d.name.clone(), first, second: index });
            }
            if d.image.trim().is_empty() {
                return Err(ManifestError::EmptyImage { domain });
            }
            if d.cmdline.len() > CMDLINE_MAX {
                return Err(ManifestError::CmdlineTooLong { domain, len: d.cmdline.len() });
            }
            if d.weight == Some(0) {
                return Err(ManifestError::ZeroWeight { domain });
            }
            if d.time_limit.is_some_and(|limit| limit.ns() == 0) {
                return Err(ManifestError::ZeroTimeLimit { domain });
            }
            if let Some(max) = d.max_memory {
                if max.bytes() < d.memory.bytes() || !max.bytes().is_multiple_of(PAGE_SIZE) {
                    return Err(ManifestError::BadMaxMemory { domain, size: max, memory: d.memory });
                }
            }
            if !d.memory.bytes().is_multiple_of(PAGE_SIZE) {
                return Err(ManifestError::MemoryNotPageMultiple { domain, size: d.memory });
            }
            if d.memory < min {
                return Err(ManifestError::MemoryTooSmall { domain, size: d.memory, min });
            }
        }
        let machine = self.machine.memory;
        if !machine.bytes().is_multiple_of(MACHINE_MEMORY_GRANULE) {
            return Err(ManifestError::MachineMemoryNotMiB { size: machine });
        }
        if machine > MAX_MACHINE_MEMORY {
            return Err(ManifestError::MachineMemoryTooLarge { size: machine });
        }
        let hypervisor = self.hypervisor_share();
        let available = machine.bytes().saturating_sub(hypervisor);
        let mut total: u64 = 0;
        for (index, d) in self.domains.iter().enumerate() {
            total = total.saturating_add(d.memory.bytes());
            if total > available {
                return Err(ManifestError::TooMuchMemory {
                    domain: DomainRef::of(index, &d.name),
                    size: d.memory,
                    total,
                    machine,
                    hypervisor,
                });
            }
        }
        Ok(())
    }

    /// The domain with this name.
    pub fn domain(&self, name: &str) -> Option<&DomainSpec> {
        self.domains.iter().find(|d| d.name == name)
    }

    /// Total memory of all domains, in bytes.
    pub fn total_domain_memory(&self) -> u64 {
        self.domains.iter().map(|d| d.memory.bytes()).fold(0, u64::saturating_add)
    }

    /// The heap the hypervisor carves for this machine and these domains
    /// (see [`heap_size`]).
    pub fn heap_bytes(&self) -> u64 {
        heap_size(machine_frames(self.machine.memory), self.domains.iter().map(DomainSpec::heap_allowance)) as u64
    }

    /// What the hypervisor keeps of the machine's memory: the
    /// [`HYPERVISOR_RESERVE`] and its heap, rounded up to a MiB.
    pub fn hypervisor_share(&self) -> u64 {
        HYPERVISOR_RESERVE + self.heap_bytes().div_ceil(MIB) * MIB
    }
}

/// Checks a domain name: `[a-z0-9_-]+`, at most [`NAME_MAX`] bytes.
pub fn check_name(name: &str) -> Result<(), NameProblem> {
    if name.is_empty() {
        return Err(NameProblem::Empty);
    }
    if let Some(c) = name.chars().find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '-' | '_')) {
        return Err(NameProblem::BadChar(c));
    }
    if name.len() > NAME_MAX {
        return Err(NameProblem::TooLong(name.len()));
    }
    Ok(())
}

/// Turns a TOML/serde error into a one-line [`ManifestError::Toml`] with the
/// line, the domain and the field, as far as they can be found.
fn toml_error(text: &str, error: &toml::de::Error) -> ManifestError {
    let message = one_line(error.message());
    let span = error.span();
    let line = span.as_ref().map(|s| line_of(text, s.start));
    // The message already names the key for unknown/missing keys; for a bad
    // value, the key is whatever stands before `=` on the offending line.
    let names_key = message.starts_with("unknown field") || message.starts_with("missing field");
    let field = match (&span, names_key) {
        (Some(s), false) => key_before(text, s.start),
        _ => None,
    };
    let domain = span.as_ref().and_then(|s| failing_domain(text, s.start));
    ManifestError::Toml { line, domain, field, message }
}

/// Finds the domain an error at byte `at` of the text is in: the one whose
/// `[[domain]]` header is the last table header before it, or whose inline
/// table in a `domain = [...]` array holds it. The text is read again
/// leniently (`parse_recoverable`), so that a syntax error, a number beyond
/// TOML's 64-bit integers and a value only the schema refuses are all
/// placed. `None` outside the domains.
fn failing_domain(text: &str, at: usize) -> Option<DomainRef> {
    let (document, _) = toml::de::DeTable::parse_recoverable(text);
    let is_header = |span: &core::ops::Range<usize>| text.get(span.clone()).is_some_and(|s| s.starts_with('['));
    // The last table header at or before `at`, and the domain it opens.
    let mut last: Option<(usize, Option<DomainRef>)> = None;
    let mut header = |start: usize, domain: Option<DomainRef>| {
        if start <= at && last.as_ref().is_none_or(|(before, _)| start > *before) {
            last = Some((start, domain));
        }
    };
    for (key, value) in document.get_ref().iter() {
        match value.get_ref().as_array() {
            Some(domains) if key.get_ref() == "domain" => {
                for (index, d) in domains.iter().enumerate() {
                    let name = d.get_ref().get("name").and_then(|n| n.get_ref().as_str()).map(ToString::to_string);
                    let domain = DomainRef { index, name };
                    if is_header(&d.span()) {
                        header(d.span().start, Some(domain));
                    } else if d.span().contains(&at) {
                        return Some(domain);
                    }
                }
            }
            _ if is_header(&value.span()) => header(value.span().start, None),
            _ => {}
        }
    }
    last.and_then(|(_, domain)| domain)
}

/// The parser's message on one line: its lines joined, and any control
/// character left (a value may hold a lone `\r`, which a console would
/// take as the start of a line) escaped.
fn one_line(message: &str) -> String {
    printable(&message.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; "))
}

/// `text` with its control characters escaped (`\r`, `\u{1b}`...), so
/// that it prints on the one line of a message: for anything a manifest
/// or a bundle names (a value, a key, a path).
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

fn line_of(text: &str, offset: usize) -> usize {
    let offset = offset.min(text.len());
    text.as_bytes()[..offset].iter().filter(|&&b| b == b'\n').count() + 1
}

/// The key of a `key = value` line when `offset` is in the value part.
fn key_before(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let before = &text[start..offset];
    let eq = before.rfind('=')?;
    let key = before[..eq].trim().trim_matches(|c| c == '"' || c == '\'');
    let key = key.rsplit(['{', ',']).next().unwrap_or(key).trim();
    (!key.is_empty()).then(|| printable(key))
}

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;
