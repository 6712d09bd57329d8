//! Host tests of [`super`].
use super::*;

const GOOD: &str = r#"
[machine]
memory = "64M"

[[domain]]
name = "hello"
image = "hello"
memory = "2M"
cmdline = "x=1"

[[domain]]
name = "crash"
image = "../guests/crash.elf"
memory = 1048576
expect = "crash"

[[domain]]
name = "status"
image = "status"
memory = "512K"
expect = 3
"#;

fn err(text: &str) -> String {
    Manifest::parse(text).unwrap_err().to_string()
}

fn domain(name: &str, memory: &str) -> String {
    format!("[[domain]]\nname = \"{name}\"\nimage = \"x\"\nmemory = \"{memory}\"\n")
}

#[test]
fn parses_a_good_manifest() {
    let m = Manifest::parse(GOOD).unwrap();
    assert_eq!(m.machine.memory, MemorySize(64 * MIB));
    assert_eq!(m.domains.len(), 3);
    assert_eq!(m.domains[0].name, "hello");
    assert_eq!(m.domains[0].memory.pages(), 512);
    assert_eq!(m.domains[0].cmdline, "x=1");
    assert!(m.domains[0].expect.met_by_exit(0));
    assert!(!m.domains[0].expect.met_by_crash());
    assert_eq!(m.domains[1].memory, MemorySize(MIB));
    assert!(m.domains[1].expect.met_by_crash());
    assert_eq!(m.domains[2].expect, Expect::Exit(3));
    assert!(!m.domains[2].expect.met_by_exit(0));
    assert_eq!(m.domain("status").unwrap().memory, MemorySize(512 * KIB));
    assert_eq!(m.total_domain_memory(), 3 * MIB + 512 * KIB);
}

#[test]
fn machine_is_optional() {
    let m = Manifest::parse(&domain("a", "1M")).unwrap();
    assert_eq!(m.machine.memory, DEFAULT_MACHINE_MEMORY);
    assert_eq!(m.domains[0].expect.to_string(), "exit 0");
    assert_eq!(m.domains[0].cmdline, "");
}

#[test]
fn memory_sizes() {
    assert_eq!(MemorySize::parse("2M"), Ok(MemorySize(2 * MIB)));
    assert_eq!(MemorySize::parse("512K"), Ok(MemorySize(512 * KIB)));
    assert_eq!(MemorySize::parse("1G"), Ok(MemorySize(GIB)));
    assert_eq!(MemorySize::parse("3MiB"), Ok(MemorySize(3 * MIB)));
    assert_eq!(MemorySize::parse("4k"), Ok(MemorySize(4 * KIB)));
    assert_eq!(MemorySize::parse("4096"), Ok(MemorySize(4096)));
    assert_eq!(MemorySize::parse("2X"), Err(MemorySizeError::BadSuffix));
    assert_eq!(MemorySize::parse("M"), Err(MemorySizeError::NotANumber));
    assert_eq!(MemorySize::parse("-1M"), Err(MemorySizeError::NotANumber));
    assert_eq!(MemorySize::parse("99999999999999999999"), Err(MemorySizeError::TooLarge));
    assert_eq!(MemorySize::parse("99999999999G"), Err(MemorySizeError::TooLarge));
    for s in ["2M", "512K", "1G", "4097", "0", "1536K"] {
        assert_eq!(MemorySize::parse(s).unwrap().to_string(), s);
    }
    assert_eq!(MemorySize(2048 * KIB).to_string(), "2M");
}

#[test]
fn round_trips_through_serde() {
    let m = Manifest::parse(GOOD).unwrap();
    let value = toml::Value::try_from(&m).unwrap();
    let back = Manifest::deserialize(value).unwrap();
    assert_eq!(back, m);
}

#[test]
fn unknown_key_names_line_domain_and_key() {
    let text = format!("{}\n{}colour = 3\n", domain("a", "1M"), domain("b", "1M"));
    let e = Manifest::parse(&text).unwrap_err();
    assert_eq!(e.line(), Some(10));
    assert_eq!(
        e.to_string(),
        "line 10: domain \"b\": unknown field `colour`, expected one of `name`, `image`, `memory`, `max_memory`, `cmdline`, `expect`, `weight`, `time_limit`, `umip`, `mode`"
    );
    assert_eq!(
        e.in_file("m.toml").to_string(),
        "m.toml:10: domain \"b\": unknown field `colour`, expected one of `name`, `image`, `memory`, `max_memory`, `cmdline`, `expect`, `weight`, `time_limit`, `umip`, `mode`"
    );
}

#[test]
fn unknown_key_outside_domains() {
    let e = err(&format!("{}[machine]\nmemory = \"64M\"\ncpus = 2\n", domain("a", "1M")));
    assert_eq!(e, "line 7: unknown field `cpus`, expected `memory`");
    let e = err(&format!("{}[machin]\n", domain("a", "1M")));
    assert_eq!(e, "line 5: unknown field `machin`, expected `machine` or `domain`");
}

#[test]
fn bad_values_name_the_field() {
    let e = err("[[domain]]\nname = \"a\"\nimage = \"x\"\nmemory = \"2X\"\n");
    assert!(
        e.starts_with(
            "line 4: domain \"a\", field `memory`: invalid memory size \"2X\": the suffix is not K, M or G"
        ),
        "{e}"
    );
    let e = err("[[domain]]\nname = \"a\"\nimage = \"x\"\nmemory = \"1M\"\nexpect = \"boom\"\n");
    assert_eq!(
        e,
        "line 5: domain \"a\", field `expect`: \"boom\" is not an expectation: expected an exit status, \"crash\" or \"time-limit\""
    );
    let e = err("[[domain]]\nname = \"a\"\nimage = \"x\"\nmemory = \"1M\"\nexpect = -1\n");
    assert!(e.contains("field `expect`: exit status -1 is negative"), "{e}");
    let e = err("[[domain]]\nname = 7\nimage = \"x\"\nmemory = \"1M\"\n");
    assert!(e.starts_with("line 2: domain #1, field `name`: invalid type: integer `7`, expected a string"), "{e}");
    let e = err("[machine]\nmemory = true\n");
    assert!(e.starts_with("line 2: field `memory`: invalid type: boolean `true`"), "{e}");
}

#[test]
fn missing_key() {
    let e = err("[[domain]]\nname = \"a\"\nimage = \"x\"\n");
    assert_eq!(e, "line 1: domain \"a\": missing field `memory`");
}

#[test]
fn inline_domains_work_too() {
    let e = err("domain = [{ name = \"a\", image = \"x\", memory = \"1M\", bad = 1 }]\n");
    assert!(e.starts_with("line 1: domain \"a\": unknown field `bad`"), "{e}");
    let e = err("domain = [{ name = \"a\", image = \"x\", memory = \"1Q\" }]\n");
    assert!(e.starts_with("line 1: domain \"a\", field `memory`: invalid memory size"), "{e}");
}

/// The domain of an error is the one the error's position is in, whatever
/// refused it: a value beyond TOML's 64-bit integers, a syntax error, the
/// schema. After the domains, in `[machine]`, there is none.
#[test]
fn errors_are_placed_in_the_domain_they_are_in() {
    let e = err(&format!("{}\n{}time_limit = 18446744073709551615\n", domain("a", "1M"), domain("b", "1M")));
    assert_eq!(e, "line 10: domain \"b\", field `time_limit`: time too long");
    let e = err(&format!("{}\n{}cmdline = \"unterminated\n", domain("a", "1M"), domain("b", "1M")));
    assert!(e.starts_with("line 10: domain \"b\""), "{e}");
    let e = err(&format!("{}[machine]\nmemory = \"1Q\"\n", domain("a", "1M")));
    assert!(e.starts_with("line 6: field `memory`: invalid memory size"), "{e}");
}

/// A message is one printable line, whatever the values hold: a lone
/// carriage return would start a new line on a console.
#[test]
fn control_characters_in_messages_are_escaped() {
    let e = err(&format!("{}mode = \"x\\ry\"\n", domain("a", "1M")));
    assert!(!e.chars().any(char::is_control), "{e:?}");
    assert!(e.contains("unknown variant `x\\ry`"), "{e}");
}

#[test]
fn syntax_error_has_line() {
    let e = err("[[domain]]\nname = \"a\" oops\n");
    assert!(e.starts_with("line 2: "), "{e}");
    assert!(!e.contains('\n'));
}

#[test]
fn no_domains() {
    assert_eq!(
        err("[machine]\nmemory = \"64M\"\n"),
        "no [[domain]] table: a manifest must start at least one domain"
    );
    assert_eq!(err(""), "no [[domain]] table: a manifest must start at least one domain");
}

#[test]
fn names() {
    assert_eq!(check_name("a-b_9"), Ok(()));
    assert_eq!(check_name(""), Err(NameProblem::Empty));
    assert_eq!(check_name("Hello"), Err(NameProblem::BadChar('H')));
    assert_eq!(check_name(&"a".repeat(33)), Err(NameProblem::TooLong(33)));
    assert_eq!(check_name(&"a".repeat(32)), Ok(()));
    assert_eq!(
        err(&domain("has space", "1M")),
        "domain \"has space\", field `name`: the name has ' ': use only lower-case letters, digits, '-' and '_'"
    );
    assert_eq!(err(&domain("", "1M")), "domain #1, field `name`: the name is empty");
    assert_eq!(
        err(&domain(&"x".repeat(40), "1M")),
        format!("domain \"{}\", field `name`: the name is 40 bytes long, at most 32 are allowed", "x".repeat(40))
    );
    let e =
        err(&format!("{}{}", domain("a", "1M"), "[[domain]]\nname = \"a\\nb\"\nimage = \"x\"\nmemory = \"1M\"\n"));
    assert!(!e.contains('\n'), "{e}");
}

#[test]
fn duplicate_name() {
    let text = format!("{}{}{}", domain("a", "1M"), domain("b", "1M"), domain("a", "1M"));
    assert_eq!(err(&text), "domain \"a\", field `name`: domains #1 and #3 are both named \"a\"");
}

#[test]
fn cmdline_too_long() {
    let text = format!("{}cmdline = \"{}\"\n", domain("a", "1M"), "x".repeat(CMDLINE_MAX + 1));
    assert_eq!(
        err(&text),
        "domain \"a\", field `cmdline`: the command line is 1025 bytes long, at most 1024 are allowed"
    );
    let text = format!("{}cmdline = \"{}\"\n", domain("a", "1M"), "x".repeat(CMDLINE_MAX));
    assert!(Manifest::parse(&text).is_ok());
}

#[test]
fn empty_image() {
    let text = "[[domain]]\nname = \"a\"\nimage = \"\"\nmemory = \"1M\"\n";
    assert_eq!(err(text), "domain \"a\", field `image`: the image is empty");
}

#[test]
fn memory_must_be_pages() {
    assert_eq!(
        err(&domain("a", "1025K")),
        "domain \"a\", field `memory`: 1025K (1049600 bytes) is not a multiple of 4 KiB"
    );
}

#[test]
fn memory_minimum() {
    let min = min_domain_memory();
    assert!(crate::initial_layout::initial_layout(1, min.pages()).is_ok());
    assert!(crate::initial_layout::initial_layout(1, min.pages() - 1).is_err());
    let text = domain("a", &(min.bytes() - PAGE_SIZE).to_string());
    let e = err(&text);
    assert!(e.starts_with("domain \"a\", field `memory`: "), "{e}");
    assert!(e.contains(&format!("is too small, a domain needs at least {min}")), "{e}");
    assert!(Manifest::parse(&domain("a", &min.bytes().to_string())).is_ok());
}

#[test]
fn machine_memory_must_be_mib() {
    let text = format!("[machine]\nmemory = \"1500K\"\n{}", domain("a", "1M"));
    assert_eq!(
        err(&text),
        "[machine], field `memory`: 1500K is not a whole number of MiB (QEMU -m would round it)"
    );
}

#[test]
fn too_much_memory_names_the_domain_that_crosses() {
    // The hypervisor's share on 34M with these three domains: 16M, and
    // 1.4 MiB of heap (1 MiB, 8,960 frames at 24 bytes, three records and
    // allowances) rounded up to 2M.
    let text =
        format!("[machine]\nmemory = \"34M\"\n{}{}{}", domain("a", "8M"), domain("b", "8M"), domain("c", "1M"));
    assert_eq!(Manifest::from_toml(&text).unwrap().hypervisor_share(), 18 * MIB);
    assert_eq!(
        err(&text),
        "domain \"c\", field `memory`: 1M brings the domains' total to 17M, more than the 16M \
         the machine's 34M leaves after the hypervisor's 18M (raise [machine] memory)"
    );
    // Exactly full is fine.
    let text = format!("[machine]\nmemory = \"34M\"\n{}{}", domain("a", "8M"), domain("b", "8M"));
    assert!(Manifest::parse(&text).is_ok());
    assert!(
        err(&domain("big", "1G")).starts_with("domain \"big\", field `memory`: 1G brings the domains' total to 1G")
    );
}

#[test]
fn the_machine_is_at_most_what_the_hypervisor_can_map() {
    let text = |size: &str| format!("[machine]\nmemory = \"{size}\"\n{}", domain("a", "1M"));
    assert!(Manifest::parse(&text("15G")).is_ok());
    assert_eq!(
        err(&text("16G")),
        "[machine], field `memory`: 16G is more than the 15G the hypervisor can use \
         (its physical map covers 16 GiB of addresses, and RAM beyond 3 GiB starts at 4 GiB)"
    );
    // Its heap follows the machine: 24 bytes for each frame of addresses
    // up to the end of RAM (past 3 GiB, the 1 GiB hole below 4 GiB too).
    let heap = |size: &str| Manifest::from_toml(&text(size)).unwrap().heap_bytes();
    assert_eq!(heap("2G") - heap("1G"), 256 * 1024 * 24);
    assert_eq!(heap("4G") - heap("3G"), 2 * 256 * 1024 * 24);
}

#[test]
fn expect_display_and_serde() {
    assert_eq!(Expect::Crash.to_string(), "crash");
    assert_eq!(Expect::Exit(4).to_string(), "exit 4");
    assert_eq!(Expect::default(), Expect::Exit(0));
    assert!(Expect::default().met_by_exit(0));
}


#[test]
fn time_spans_are_digits_and_a_unit() {
    assert_eq!(TimeSpan::parse("250ms"), Some(TimeSpan(250_000_000)));
    assert_eq!(TimeSpan::parse("2s"), Some(TimeSpan(2_000_000_000)));
    assert_eq!(TimeSpan::parse("1500"), Some(TimeSpan(1_500_000_000)));
    for bad in ["2 s", " 2s", "2s ", "2 ms", "+2s", "s", "ms", "", "2m", "1.5s"] {
        assert_eq!(TimeSpan::parse(bad), None, "{bad:?}");
    }
    let text = format!("{}time_limit = \"2 s\"\n", domain("a", "1M"));
    assert_eq!(
        err(&text),
        "line 5: domain \"a\", field `time_limit`: \"2 s\" is not a time: write it like \"500ms\" or \"2s\""
    );
}

#[test]
fn a_time_limit_of_zero_is_refused_like_a_weight_of_zero() {
    for zero in ["0", "\"0ms\"", "\"0s\""] {
        let text = format!("{}time_limit = {zero}\n", domain("a", "1M"));
        assert_eq!(
            err(&text),
            "domain \"a\", field `time_limit`: a time limit of 0 would stop the domain before it runs \
             (leave `time_limit` out for no limit)",
            "{zero}"
        );
    }
    assert!(Manifest::parse(&format!("{}time_limit = 1\n", domain("a", "1M"))).is_ok());
    assert_eq!(
        err(&format!("{}weight = 0\n", domain("a", "1M"))),
        "domain \"a\", field `weight`: a weight must be at least 1 (the default is 256)"
    );
}
