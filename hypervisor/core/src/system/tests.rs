//! Host tests of [`super`].
use super::*;
use crate::manifest::Expect;
use crate::testing::{system_with, DATA};
use hypercall_abi::{decode_result, Hypercall, HypercallError};

fn call(number: Hypercall, args: &[u64]) -> GuestRegs {
    let mut r = GuestRegs { rax: number as u64, ..Default::default() };
    let slots = [&mut r.rdi, &mut r.rsi, &mut r.rdx, &mut r.r10, &mut r.r8, &mut r.r9];
    for (slot, a) in slots.into_iter().zip(args) {
        *slot = *a;
    }
    r
}

#[test]
fn console_write_prints_whole_lines_with_the_domain_name() {
    let (mut sys, mut mem) = system_with(1, Expect::Exit(0));
    let mut frame = GuestRegs::default();
    assert!(matches!(sys.start(&mut Platform { mem: &mut mem, console: &mut String::new(), tsc: 0 }, &mut frame), Next::Switch { .. }));
    let mut out = String::new();
    let mut p = Platform { mem: &mut mem, console: &mut out, tsc: 0 };
    frame = call(Hypercall::ConsoleWrite, &[DATA, 5]);
    assert_eq!(sys.on_hypercall(&mut p, &mut frame), Next::RESUME);
    assert_eq!(decode_result(frame.rax), Ok(5));
    assert_eq!(p.console.as_str(), "", "no newline yet");
    frame = call(Hypercall::Exit, &[0]);
    assert_eq!(sys.on_hypercall(&mut p, &mut frame), Next::Finished { all_as_expected: true });
    assert_eq!(p.console.as_str(), "[d0] hello\n", "the pending line is flushed at exit");
}

#[test]
fn the_summary_counts_its_domains_in_the_right_number() {
    for (n, heading) in [(1, "summary of 1 domain:"), (2, "summary of 2 domains:")] {
        let (sys, _mem) = system_with(n, Expect::Exit(0));
        assert_eq!(sys.summary()[0], heading);
    }
}

#[test]
fn every_rejection_is_a_typed_error() {
    let (mut sys, mut mem) = system_with(1, Expect::Exit(0));
    let mut frame = GuestRegs::default();
    sys.start(&mut Platform { mem: &mut mem, console: &mut String::new(), tsc: 0 }, &mut frame);
    let mut out = String::new();
    let mut p = Platform { mem: &mut mem, console: &mut out, tsc: 0 };
    let start_info = frame.rdi;
    let cases: &[(GuestRegs, HypercallError)] = &[
        (GuestRegs { rax: 99, ..Default::default() }, HypercallError::UnknownHypercall),
        (GuestRegs { rax: u64::MAX, ..Default::default() }, HypercallError::UnknownHypercall),
        (call(Hypercall::ConsoleWrite, &[0x1000, 4]), HypercallError::BadAddress),
        (call(Hypercall::ConsoleWrite, &[0xffff_8000_0000_0000, 4]), HypercallError::BadAddress),
        (call(Hypercall::ConsoleWrite, &[u64::MAX - 1, 4]), HypercallError::BadAddress),
        (call(Hypercall::ConsoleWrite, &[hypercall_abi::layout::GUEST_VIRT_BASE + 0x10_0000 - 2, 16]), HypercallError::BadAddress),
        (call(Hypercall::DomainInfo, &[7, DATA]), HypercallError::NoSuchDomain),
        (call(Hypercall::DomainInfo, &[u64::MAX, DATA]), HypercallError::NoSuchDomain),
        (call(Hypercall::DomainInfo, &[0, start_info]), HypercallError::BadAddress),
        (call(Hypercall::DomainInfo, &[0, hypercall_abi::layout::GUEST_VIRT_BASE]), HypercallError::BadAddress),
    ];
    for (regs, want) in cases {
        frame = *regs;
        assert_eq!(sys.on_hypercall(&mut p, &mut frame), Next::RESUME);
        assert_eq!(decode_result(frame.rax), Err(*want), "{regs:x?}");
    }
    assert_eq!(p.console.as_str(), "", "a refused console_write prints nothing");
}

#[test]
fn domain_info_fills_the_callers_buffer() {
    let (mut sys, mut mem) = system_with(2, Expect::Exit(0));
    let mut frame = GuestRegs::default();
    sys.start(&mut Platform { mem: &mut mem, console: &mut String::new(), tsc: 0 }, &mut frame);
    let mut out = String::new();
    let mut p = Platform { mem: &mut mem, console: &mut out, tsc: 0 };
    frame = call(Hypercall::DomainInfo, &[hypercall_abi::domain_info::DOMID_SELF, DATA]);
    sys.on_hypercall(&mut p, &mut frame);
    assert_eq!(decode_result(frame.rax), Ok(0));
    let d = &sys.domains[0];
    let mut bytes = [0u8; core::mem::size_of::<hypercall_abi::DomainInfo>()];
    let mut view = crate::guest_memory::GuestView { mem: p.mem, frames: &sys.frames, domain: d.id, root: d.root() };
    view.read(crate::guest_memory::GuestSlice::new(DATA, bytes.len() as u64), &mut bytes).unwrap();
    let info = <hypercall_abi::DomainInfo as zerocopy::FromBytes>::read_from_bytes(&bytes).unwrap();
    assert_eq!((info.domain_id, info.nr_pages, info.nr_domains, info.name()), (0, 256, 2, "d0"));
}

#[test]
fn yield_round_robin_and_isolated_crash() {
    let (mut sys, mut mem) = system_with(3, Expect::Exit(0));
    let mut frame = GuestRegs::default();
    sys.start(&mut Platform { mem: &mut mem, console: &mut String::new(), tsc: 0 }, &mut frame);
    let mut out = String::new();
    let mut p = Platform { mem: &mut mem, console: &mut out, tsc: 0 };
    let running = |sys: &System| sys.current().map(|d| d.id.0);
    assert_eq!(running(&sys), Some(0));
    frame.rbx = 0xd0; // a register d0 must get back
    frame.rax = Hypercall::Yield as u64;
    let Next::Switch { root, .. } = sys.on_hypercall(&mut p, &mut frame) else { panic!("switch") };
    assert_eq!((running(&sys), root), (Some(1), sys.domains[1].root()));
    // d1 crashes: it is stopped alone, its memory is freed, d2 runs.
    let free_before = sys.frames.free_count();
    frame.vector = 14;
    assert!(matches!(sys.on_guest_exception(&mut p, &mut frame, 0xdead), Next::Switch { .. }));
    assert_eq!(running(&sys), Some(2));
    assert_eq!(sys.frames.free_count(), free_before + 256);
    frame.rax = Hypercall::Yield as u64;
    sys.on_hypercall(&mut p, &mut frame);
    assert_eq!(running(&sys), Some(0));
    assert_eq!((frame.rbx, frame.rax), (0xd0, 0), "d0 resumes where it yielded, with result 0");
    for _ in 0..2 {
        frame.rax = Hypercall::Exit as u64;
        frame.rdi = 0;
        sys.on_hypercall(&mut p, &mut frame);
    }
    assert_eq!(sys.current().map(|d| d.id.0), None);
    let summary = sys.summary().join("\n");
    assert!(summary.contains("crashed (#PF at 0x400000)") && summary.contains("UNEXPECTED"), "{summary}");
    assert_eq!(sys.domains[1].stats.bounces, 0, "a fault with no handler to bounce to is no bounce");
}

#[test]
fn the_timer_preempts_at_the_slice_and_stops_at_the_time_limit() {
    let (mut sys, mut mem) = system_with(2, Expect::TimeLimit);
    sys.domains[0].time_limit_ns = Some(25_000_000);
    sys.domains[1].expect = Expect::Exit(0);
    let mut frame = GuestRegs::default();
    sys.start(&mut Platform { mem: &mut mem, console: &mut String::new(), tsc: 0 }, &mut frame);
    let mut out = String::new();
    // 1 GHz test clock: ticks are nanoseconds, and a deadline is armed 6
    // ticks past its instant (`TscClock::ticks`: never short of it).
    assert_eq!(sys.next_deadline(), Some(SLICE_NS + 6), "slice end: another domain waits");
    let mut p = Platform { mem: &mut mem, console: &mut out, tsc: SLICE_NS / 2 };
    assert_eq!(sys.on_timer(&mut p, &mut frame), Next::RESUME, "slice not over");
    p.tsc = SLICE_NS;
    assert!(matches!(sys.on_timer(&mut p, &mut frame), Next::Switch { .. }));
    assert_eq!(sys.current().map(|d| d.id.0), Some(1));
    // d1 yields; d0 runs on until its 25 ms of CPU are used.
    p.tsc += 1_000;
    frame.rax = Hypercall::Yield as u64;
    sys.on_hypercall(&mut p, &mut frame);
    assert_eq!(sys.current().map(|d| d.id.0), Some(0));
    assert_eq!(sys.next_deadline(), Some(p.tsc + SLICE_NS + 6), "the slice ends before the limit");
    p.tsc += 15_000_000;
    assert!(matches!(sys.on_timer(&mut p, &mut frame), Next::Switch { .. }), "limit reached: stopped");
    assert_eq!(sys.domains[0].ending, Some(Ending::TimeLimit));
    assert_eq!(sys.domains[0].stats.cpu_ns, 25_000_000);
    frame.rax = Hypercall::Exit as u64;
    frame.rdi = 0;
    assert_eq!(sys.on_hypercall(&mut p, &mut frame), Next::Finished { all_as_expected: true });
}

