//! Host tests of event channels, blocking, timers and upcalls through
//! [`System`], two domains at a time.

use crate::domain::Ending;
use crate::machine_memory::{MachineMemory, TestMemory};
use crate::manifest::Expect;
use crate::system::{Next, Platform, System};
use crate::testing::system_with;
use crate::vcpu::GuestRegs;
use hypercall_abi::event::{virq, EventChannelCmd, SchedCmd, MASK_OFFSET, PENDING_OFFSET, UPCALL_MASK_OFFSET, UPCALL_PENDING_OFFSET};
use hypercall_abi::trap::VECTOR_EVENT;
use hypercall_abi::{decode_result, Hypercall, HypercallError};

struct World {
    sys: System,
    mem: TestMemory,
    regs: GuestRegs,
    tsc: u64,
}

impl World {
    fn new(n: u16) -> World {
        let (mut sys, mut mem) = system_with(n, Expect::Exit(0));
        let mut regs = GuestRegs::default();
        sys.start(&mut Platform { mem: &mut mem, console: &mut String::new(), tsc: 0 }, &mut regs);
        World { sys, mem, regs, tsc: 0 }
    }

    fn running(&self) -> Option<u16> {
        self.sys.current().map(|d| d.id.0)
    }

    fn call(&mut self, h: Hypercall, args: &[u64]) -> (Next, Result<u64, HypercallError>) {
        self.regs.rax = h as u64;
        let slots = [&mut self.regs.rdi, &mut self.regs.rsi, &mut self.regs.rdx, &mut self.regs.r10];
        for (slot, a) in slots.into_iter().zip(args) {
            *slot = *a;
        }
        let mut out = String::new();
        let mut p = Platform { mem: &mut self.mem, console: &mut out, tsc: self.tsc };
        let next = self.sys.on_hypercall(&mut p, &mut self.regs);
        (next, decode_result(self.regs.rax))
    }

    fn evtchn(&mut self, cmd: EventChannelCmd, a: u64, b: u64) -> Result<u64, HypercallError> {
        self.call(Hypercall::EventChannelOp, &[cmd as u64, a, b]).1
    }

    fn timer(&mut self) -> Next {
        let mut out = String::new();
        let mut p = Platform { mem: &mut self.mem, console: &mut out, tsc: self.tsc };
        self.sys.on_timer(&mut p, &mut self.regs)
    }

    /// Writes `port` as a one-port `Poll` array at `at` in domain `d`.
    fn poke_port(&mut self, d: usize, at: u64, port: u64) {
        let mut view = crate::guest_memory::GuestView {
            mem: &mut self.mem,
            frames: &self.sys.frames,
            domain: crate::domain::DomainId(d as u16),
            root: self.sys.domains[d].vcpu.kernel_root,
        };
        view.write(crate::guest_memory::GuestSlice::new(at, 4), &(port as u32).to_le_bytes()).unwrap();
    }

    fn shared(&self, d: usize) -> u64 {
        self.sys.domains[d].shared_info
    }

    fn byte(&self, addr: u64) -> u8 {
        let mut b = [0u8];
        self.mem.read(addr, &mut b);
        b[0]
    }
}

#[test]
fn interdomain_ports_connect_only_whom_they_were_offered_to() {
    let mut w = World::new(3);
    // d0 offers a port to d1.
    let offered = w.evtchn(EventChannelCmd::AllocUnbound, 1, 0).unwrap();
    assert_eq!(offered, 1, "ports start at 1");
    assert_eq!(w.evtchn(EventChannelCmd::AllocUnbound, 9, 0), Err(HypercallError::NoSuchDomain));
    assert_eq!(w.evtchn(EventChannelCmd::Send, offered, 0), Err(HypercallError::WrongPortState), "not connected yet");
    assert_eq!(w.evtchn(EventChannelCmd::Send, 77, 0), Err(HypercallError::NoSuchPort));
    let _ = w.call(Hypercall::Yield, &[]);
    assert_eq!(w.running(), Some(1));
    let mine = w.evtchn(EventChannelCmd::BindInterdomain, 0, offered).unwrap();
    assert_eq!(w.evtchn(EventChannelCmd::BindInterdomain, 0, offered), Err(HypercallError::WrongPortState), "already connected");
    let _ = w.call(Hypercall::Yield, &[]);
    assert_eq!(w.running(), Some(2));
    // d2 was not offered anything: a fresh offer to d1 cannot be taken by d2.
    assert_eq!(w.evtchn(EventChannelCmd::BindInterdomain, 0, offered), Err(HypercallError::WrongPortState));
    let _ = w.call(Hypercall::Yield, &[]);
    assert_eq!(w.running(), Some(0));
    let for_d1 = w.evtchn(EventChannelCmd::AllocUnbound, 1, 0).unwrap();
    let _ = w.call(Hypercall::Yield, &[]);
    let _ = w.call(Hypercall::Yield, &[]);
    assert_eq!(w.running(), Some(2));
    assert_eq!(w.evtchn(EventChannelCmd::BindInterdomain, 0, for_d1), Err(HypercallError::PermissionDenied));
    // Close twice.
    let p = w.evtchn(EventChannelCmd::BindVirq, virq::TIMER, 0).unwrap();
    assert_eq!(w.evtchn(EventChannelCmd::BindVirq, virq::TIMER, 0), Err(HypercallError::PortInUse));
    assert_eq!(w.evtchn(EventChannelCmd::BindVirq, virq::COUNT, 0), Err(HypercallError::BadArgument));
    assert_eq!(w.evtchn(EventChannelCmd::Send, p, 0), Ok(0), "raise the virq port on itself");
    assert_eq!(w.evtchn(EventChannelCmd::Close, p, 0), Ok(0));
    assert_eq!(w.evtchn(EventChannelCmd::Close, p, 0), Err(HypercallError::NoSuchPort));
    assert_eq!(w.mem.read_u64(w.shared(2) + PENDING_OFFSET as u64) & (1 << p), 0, "a closed port is not left pending");
    let _ = mine;
}

#[test]
fn a_send_wakes_a_blocked_peer_and_an_upcall_is_delivered() {
    let mut w = World::new(2);
    w.sys.domains[1].vcpu.event_callback = 0x40_0100;
    let offered = w.evtchn(EventChannelCmd::AllocUnbound, 1, 0).unwrap();
    let _ = w.call(Hypercall::Yield, &[]);
    let d1_port = w.evtchn(EventChannelCmd::BindInterdomain, 0, offered).unwrap();
    // d1 blocks: upcalls are unmasked by Block, d0 runs.
    let rsp_before = w.regs.rsp;
    let (next, _) = w.call(Hypercall::SchedOp, &[SchedCmd::Block as u64]);
    assert!(matches!(next, Next::Switch { .. }));
    assert_eq!(w.running(), Some(0));
    assert_eq!(w.byte(w.shared(1) + UPCALL_MASK_OFFSET as u64), 0);
    // d0 sends: d1's bit is pending and d1 is runnable again.
    assert_eq!(w.evtchn(EventChannelCmd::Send, offered, 0), Ok(0));
    assert_eq!(w.mem.read_u64(w.shared(1) + PENDING_OFFSET as u64), 1 << d1_port);
    assert_eq!(w.byte(w.shared(1) + UPCALL_PENDING_OFFSET as u64), 1);
    // d0 yields: d1 resumes inside its event handler, with upcalls masked.
    let _ = w.call(Hypercall::Yield, &[]);
    assert_eq!(w.running(), Some(1));
    assert_eq!(w.regs.rip, 0x40_0100);
    assert!(w.regs.rsp < rsp_before - 128, "frame below the red zone");
    assert_eq!(w.byte(w.shared(1) + UPCALL_MASK_OFFSET as u64), 1);
    let vector = w.mem.read_u64(crate::guest_memory::GuestView {
        mem: &mut w.mem.clone(),
        frames: &w.sys.frames,
        domain: crate::domain::DomainId(1),
        root: w.sys.domains[1].vcpu.kernel_root,
    }
    .translate(w.regs.rsp + 24, crate::paging::Access::Read)
    .unwrap());
    assert_eq!(vector, VECTOR_EVENT);
}

#[test]
fn masked_ports_stay_pending_and_unmask_delivers() {
    let mut w = World::new(1);
    w.sys.domains[0].vcpu.event_callback = 0x40_0100;
    let p = w.evtchn(EventChannelCmd::BindVirq, virq::DOM_EXC, 0).unwrap();
    w.mem.write(w.shared(0) + UPCALL_MASK_OFFSET as u64, &[0]);
    w.mem.write_u64(w.shared(0) + MASK_OFFSET as u64, 1 << p);
    assert_eq!(w.evtchn(EventChannelCmd::Send, p, 0), Ok(0), "a virq port raises itself");
    assert_eq!(w.byte(w.shared(0) + UPCALL_PENDING_OFFSET as u64), 0, "masked");
    let rip = w.regs.rip;
    assert_eq!(w.evtchn(EventChannelCmd::Unmask, p, 0), Ok(0));
    assert_eq!(w.regs.rip, 0x40_0100, "the upcall comes on the way out of unmask");
    assert_ne!(rip, w.regs.rip);
}

#[test]
fn timers_fire_and_polls_time_out() {
    let mut w = World::new(2);
    let tp = w.evtchn(EventChannelCmd::BindVirq, virq::TIMER, 0).unwrap();
    assert_eq!(w.call(Hypercall::SetTimer, &[5_000_000]).1, Ok(0));
    // Poll the timer port with a deadline after the timer: the timer wins.
    let at = w.regs.rsp - 256; // any writable place: the stack
    w.poke_port(0, at, tp);
    let (next, _) = w.call(Hypercall::SchedOp, &[SchedCmd::Poll as u64, at, 1, 50_000_000]);
    assert!(matches!(next, Next::Switch { .. }));
    assert_eq!(w.running(), Some(1));
    assert_eq!(w.sys.next_deadline(), Some(w.sys.time.tsc_at(5_000_000)), "the timer is the earliest deadline");
    let _ = w.call(Hypercall::Exit, &[0]);
    assert_eq!(w.running(), None);
    w.tsc = 5_000_001;
    // Nobody runnable until the timer: idle, then the poll returns the port.
    assert!(matches!(w.timer(), Next::Switch { .. }));
    assert_eq!(w.running(), Some(0));
    assert_eq!(decode_result(w.regs.rax), Ok(tp));
    // The timer's pending bit stays set until the guest clears it: a poll returns at once.
    let (next, r) = w.call(Hypercall::SchedOp, &[SchedCmd::Poll as u64, at, 1, 9_000_000]);
    assert_eq!((next, r), (Next::RESUME, Ok(tp)));
    w.mem.write_u64(w.shared(0) + PENDING_OFFSET as u64, 0);
    // A poll whose deadline has passed returns TimedOut.
    let (_, r) = w.call(Hypercall::SchedOp, &[SchedCmd::Poll as u64, at, 1, 1]);
    assert_eq!(r, Err(HypercallError::TimedOut), "deadline already past");
    let (next, _) = w.call(Hypercall::SchedOp, &[SchedCmd::Poll as u64, at, 1, 9_000_000]);
    assert_eq!(next, Next::Idle, "alone and waiting for a deadline");
    w.tsc = 9_000_001;
    assert!(matches!(w.timer(), Next::Switch { .. }));
    assert_eq!(decode_result(w.regs.rax), Err(HypercallError::TimedOut));
}

#[test]
fn a_crash_is_announced_and_a_wait_nobody_can_end_is_reported() {
    let mut w = World::new(2);
    let p = w.evtchn(EventChannelCmd::BindVirq, virq::DOM_EXC, 0).unwrap();
    let _ = w.call(Hypercall::SchedOp, &[SchedCmd::Block as u64]);
    assert_eq!(w.running(), Some(1));
    w.regs.vector = 14;
    let mut out = String::new();
    let mut plat = Platform { mem: &mut w.mem, console: &mut out, tsc: 0 };
    let next = w.sys.on_guest_exception(&mut plat, &mut w.regs, 0);
    assert!(matches!(next, Next::Switch { .. }), "d0 woken by the crash notice");
    assert_eq!(w.running(), Some(0));
    assert_eq!(w.mem.read_u64(w.shared(0) + PENDING_OFFSET as u64), 1 << p);
    // d0 blocks again: nothing can ever wake it.
    w.mem.write(w.shared(0) + UPCALL_PENDING_OFFSET as u64, &[0]);
    let (next, _) = w.call(Hypercall::SchedOp, &[SchedCmd::Block as u64]);
    assert_eq!(next, Next::Finished { all_as_expected: false });
    assert_eq!(w.sys.domains[0].ending, Some(Ending::Crashed(crate::domain::crash_what("blocked forever"))));
}

#[test]
fn one_multicall_can_wake_two_domains() {
    let mut w = World::new(3);
    let to_d1 = w.evtchn(EventChannelCmd::AllocUnbound, 1, 0).unwrap();
    let to_d2 = w.evtchn(EventChannelCmd::AllocUnbound, 2, 0).unwrap();
    let _ = w.call(Hypercall::Yield, &[]);
    w.evtchn(EventChannelCmd::BindInterdomain, 0, to_d1).unwrap();
    let _ = w.call(Hypercall::SchedOp, &[SchedCmd::Block as u64]);
    assert_eq!(w.running(), Some(2));
    w.evtchn(EventChannelCmd::BindInterdomain, 0, to_d2).unwrap();
    let _ = w.call(Hypercall::SchedOp, &[SchedCmd::Block as u64]);
    assert_eq!(w.running(), Some(0));
    // Two sends in one multicall: both sleepers wake.
    let entry = |port: u64| hypercall_abi::mm::MulticallEntry {
        op: Hypercall::EventChannelOp as u64,
        args: [EventChannelCmd::Send as u64, port, 0, 0, 0, 0],
        result: 0,
    };
    let at = w.regs.rsp - 512;
    let calls = [entry(to_d1), entry(to_d2)];
    let mut view = crate::guest_memory::GuestView {
        mem: &mut w.mem,
        frames: &w.sys.frames,
        domain: crate::domain::DomainId(0),
        root: w.sys.domains[0].vcpu.kernel_root,
    };
    view.write(crate::guest_memory::GuestSlice::new(at, 128), zerocopy::IntoBytes::as_bytes(&calls)).unwrap();
    assert_eq!(w.call(Hypercall::Multicall, &[at, 2]).1, Ok(2));
    let _ = w.call(Hypercall::Exit, &[0]);
    assert_eq!(w.running(), Some(1), "d1 woke");
    let _ = w.call(Hypercall::Exit, &[0]);
    assert_eq!(w.running(), Some(2), "and d2 too");
}

/// A domain connects a channel to itself (it offers a port to its own id
/// and binds it), then ends: by exiting or by crashing. Teardown must free
/// both ends without reaching into the table it is emptying, and the
/// others run on.
#[test]
fn a_loopback_channel_dies_with_its_domain() {
    for crash in [false, true] {
        let mut w = World::new(2);
        let offered = w.evtchn(EventChannelCmd::AllocUnbound, 0, 0).unwrap();
        let bound = w.evtchn(EventChannelCmd::BindInterdomain, 0, offered).unwrap();
        assert_ne!(offered, bound);
        w.evtchn(EventChannelCmd::Send, bound, 0).unwrap();
        // A port to d1 as well: d1's end goes back to unbound, the loopback pair does not count.
        let to_d1 = w.evtchn(EventChannelCmd::AllocUnbound, 1, 0).unwrap();
        let _ = w.call(Hypercall::Yield, &[]);
        assert_eq!(w.running(), Some(1));
        let d1_end = w.evtchn(EventChannelCmd::BindInterdomain, 0, to_d1).unwrap();
        let _ = w.call(Hypercall::Yield, &[]);
        assert_eq!(w.running(), Some(0));
        if crash {
            w.regs.vector = 6; // #UD, and d0 registered no handler
            let mut p = Platform { mem: &mut w.mem, console: &mut String::new(), tsc: w.tsc };
            w.sys.on_guest_exception(&mut p, &mut w.regs, 0);
        } else {
            let _ = w.call(Hypercall::Exit, &[0]);
        }
        assert_eq!(w.running(), Some(1), "d1 runs on");
        assert!(!w.sys.domains[0].is_alive());
        let mut status = hypercall_abi::event::EventChannelStatus::default();
        let at = w.regs.rsp - 256;
        w.evtchn(EventChannelCmd::Status, d1_end, at).unwrap();
        let mut view = crate::guest_memory::GuestView {
            mem: &mut w.mem,
            frames: &w.sys.frames,
            domain: crate::domain::DomainId(1),
            root: w.sys.domains[1].vcpu.kernel_root,
        };
        view.read(crate::guest_memory::GuestSlice::new(at, 16), zerocopy::IntoBytes::as_mut_bytes(&mut status)).unwrap();
        assert_eq!(status.state, hypercall_abi::event::port_state::UNBOUND, "d1's end is unbound again");
        let _ = w.call(Hypercall::Exit, &[0]);
    }
}

/// A domain takes ports until it is refused: at the ABI's limit with its
/// whole allowance, with `OutOfMemory` when its allowance is smaller; each
/// longer table is charged to it, and the domain that ends gives it all
/// back, while the others are not charged for anything it did.
#[test]
fn ports_are_charged_to_their_domain_and_refused_past_its_allowance() {
    use crate::heap_account::{HeapAccount, PORT_TABLE_BYTES};
    let mut w = World::new(2);
    let free_at_start = w.sys.frames.free_count();
    let d1_charged = w.sys.domains[1].heap.charged();
    for port in 1..hypercall_abi::event::NR_PORTS as u64 {
        assert_eq!(w.evtchn(EventChannelCmd::AllocUnbound, 0, 0), Ok(port));
        assert_eq!(w.sys.check_heap_accounts(), Ok(()), "after port {port}");
    }
    assert_eq!(w.evtchn(EventChannelCmd::AllocUnbound, 0, 0), Err(HypercallError::PortInUse), "the ABI's limit first");
    assert_eq!(w.sys.domains[0].events.table_bytes(), PORT_TABLE_BYTES);
    assert_eq!(w.sys.domains[1].heap.charged(), d1_charged, "nothing charged to d1");
    let _ = w.call(Hypercall::Exit, &[0]);
    assert_eq!(w.running(), Some(1));
    assert_eq!((w.sys.domains[0].heap.charged(), w.sys.domains[0].heap_held()), (0, 0), "d0 gave everything back");

    // d1's allowance leaves room for its frame list and 8 ports' table, not 16.
    let d = &mut w.sys.domains[1];
    let mut small = HeapAccount::new(d.heap.charged() + 8 * core::mem::size_of::<crate::event_channel::Port>());
    small.charge(d.heap.charged()).unwrap();
    d.heap = small;
    for port in 1..8 {
        assert_eq!(w.evtchn(EventChannelCmd::AllocUnbound, 1, 0), Ok(port));
    }
    assert_eq!(w.evtchn(EventChannelCmd::AllocUnbound, 1, 0), Err(HypercallError::OutOfMemory));
    assert_eq!(w.evtchn(EventChannelCmd::BindVirq, virq::TIMER, 0), Err(HypercallError::OutOfMemory));
    assert_eq!(w.sys.check_heap_accounts(), Ok(()), "a refusal charges nothing");
    assert_eq!(w.evtchn(EventChannelCmd::Close, 3, 0), Ok(0));
    assert_eq!(w.evtchn(EventChannelCmd::BindVirq, virq::TIMER, 0), Ok(3), "a freed port is reused without memory");
    let _ = w.call(Hypercall::Exit, &[0]);
    assert!(w.sys.heap_charged().all(|(_, charged)| charged == 0), "every domain ended and was refunded");
    assert_eq!(w.sys.frames.free_count(), free_at_start + 2 * 256, "and every frame is free again");
}

/// A deadline is a deadline however far away it is: a domain that set its
/// timer to `u64::MAX` ns (or polls with that deadline), or to a time past
/// what the TSC can count, and blocks, waits for it. Alone, it idles
/// rather than being stopped as `blocked forever`; an event still wakes it.
#[test]
fn a_far_deadline_is_waited_for_not_taken_for_none() {
    // At 3 GHz, every deadline past about 195 years is beyond the TSC.
    for (tsc_hz, far) in [(1_000_000_000, u64::MAX), (3_000_000_000, u64::MAX), (3_000_000_000, 1 << 63)] {
        for poll in [false, true] {
            let mut w = World::new(3);
            w.sys.time = crate::time::TimeBase { clock: crate::time::TscClock::new(tsc_hz), ..Default::default() };
            let offered = w.evtchn(EventChannelCmd::AllocUnbound, 1, 0).unwrap();
            let (next, _) = if poll {
                let at = w.regs.rsp - 256;
                w.poke_port(0, at, offered);
                w.call(Hypercall::SchedOp, &[SchedCmd::Poll as u64, at, 1, far])
            } else {
                assert_eq!(w.call(Hypercall::SetTimer, &[far]).1, Ok(0));
                w.call(Hypercall::SchedOp, &[SchedCmd::Block as u64])
            };
            assert!(matches!(next, Next::Switch { .. }), "{tsc_hz} {far:#x} poll={poll}: d0 sleeps");
            assert_eq!(w.running(), Some(1));
            let mine = w.evtchn(EventChannelCmd::BindInterdomain, 0, offered).unwrap();
            // d1 blocks with no deadline, d2 exits: everyone left waits, and
            // d0 for a time. That is idling, not a deadlock.
            let _ = w.call(Hypercall::SchedOp, &[SchedCmd::Block as u64]);
            assert_eq!(w.running(), Some(2));
            let (next, _) = w.call(Hypercall::Exit, &[0]);
            let what = format!("{tsc_hz} Hz, deadline {far:#x}, poll={poll}");
            assert_eq!(next, Next::Idle, "{what}: the system idles until d0's deadline");
            assert!(w.sys.domains[0].is_alive() && w.sys.domains[1].is_alive(), "{what}: nobody is stopped");
            assert_eq!(w.sys.long_wait_noted, Some((far, crate::domain::DomainId(0))), "{what}: and says so");
            let deadline = w.sys.next_deadline();
            assert_eq!(deadline, Some(w.sys.time.tsc_at(far)), "{what}: the platform timer is armed for it");
            // The platform timer fires long before the deadline (it cannot
            // count that far): nothing is due, the system idles on.
            w.tsc = 1 << 50;
            assert_eq!(w.timer(), Next::Idle, "{what}");
            assert!(w.sys.domains[0].is_alive() && w.sys.domains[1].is_alive(), "{what}");
            // An event still wakes d0. (Here d1 is woken by hand, as a
            // device interrupt would; then it sends.)
            w.sys.wake(crate::domain::DomainId(1), None);
            assert!(matches!(w.timer(), Next::Switch { .. }), "{what}");
            assert_eq!(w.running(), Some(1));
            assert_eq!(w.evtchn(EventChannelCmd::Send, mine, 0), Ok(0));
            let _ = w.call(Hypercall::Exit, &[0]);
            assert_eq!(w.running(), Some(0), "{what}: d0 woke");
            assert_eq!(decode_result(w.regs.rax), Ok(if poll { offered } else { 0 }), "{what}");
        }
    }
}

/// The platform timer, armed for the next deadline, finds it reached when
/// it fires, at any TSC rate and however far ahead the deadline is. Armed
/// short by the rounding of the two conversions (for a guest timer 10
/// hours ahead at 2.4 GHz, by 12 µs), it would find nothing due and ask to
/// be armed again at once for the same instant, until the TSC caught up.
#[test]
fn the_platform_timer_fires_where_the_deadline_is_reached() {
    for deadline_ns in [36_000_000_000_000u64, 5_000_000, 1] {
        let mut w = World::new(1);
        w.sys.time = crate::time::TimeBase { clock: crate::time::TscClock::new(2_400_000_000), boot_tsc: 0, wall_clock_sec: 0 };
        let tp = w.evtchn(EventChannelCmd::BindVirq, virq::TIMER, 0).unwrap();
        assert_eq!(w.call(Hypercall::SetTimer, &[deadline_ns]).1, Ok(0));
        let at = w.regs.rsp - 256;
        w.poke_port(0, at, tp);
        let (next, _) = w.call(Hypercall::SchedOp, &[SchedCmd::Poll as u64, at, 1, 0]);
        assert_eq!(next, Next::Idle, "it waits for its timer alone");
        w.tsc = w.sys.next_deadline().expect("the timer is a deadline");
        assert!(matches!(w.timer(), Next::Switch { .. }), "{deadline_ns} ns: the timer fired where it was armed");
        assert_eq!(decode_result(w.regs.rax), Ok(tp));
    }
}
