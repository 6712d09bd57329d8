//! `event-abuse`: every misuse of event channels it can think of.
//!
//! The idea shown: every port operation checks ownership and state, and
//! answers a misuse with a typed error, never a crash, and never at the
//! expense of another domain. The guest sends on ports it does not own,
//! binds a port another domain reserved for someone else, binds ports that
//! are free or already connected, names domains and virtual interrupts that
//! do not exist, closes a port twice, polls with a deadline in the past,
//! and floods its victim with 10,000 events. Each refusal is printed as
//! `event-abuse: <what it tried> -> <the error>`, and compared with the
//! error the ABI promises; the last line counts them.
//!
//! Command line: `victim=<id> offered=<port> reserved=<port>`: the victim
//! domain, the port it offered to this domain, and a port it reserved for
//! another domain (see the `victim` guest). With `after=<id>` it first
//! waits until that domain has ended, so a scenario's output has one order.
#![no_std]
#![no_main]
#![deny(unsafe_code)]

extern crate alloc;

use alloc::format;
use core::fmt::Debug;
use core::sync::atomic::{AtomicBool, Ordering};
use core::time::Duration;

use parvus_guest_sdk::event::{self, Port};
use parvus_guest_sdk::hypercall::events as hc;
use parvus_guest_sdk::hypercall_abi::event::{virq, SchedCmd, POLL_MAX};
use parvus_guest_sdk::{cmdline, hypercall, println, time, DomainState, HypercallError, StartInfo};

/// Events sent in the flood.
const FLOOD: u32 = 10_000;
/// A domain id that names no domain.
const NO_DOMAIN: u64 = 99;
/// Attempts to bind the offered port (1 ms apart) before giving up.
const BIND_ATTEMPTS: u32 = 1000;

/// Counts what went as expected and what did not, printing each.
struct Checks {
    name: &'static str,
    expected: u32,
    surprises: u32,
}

impl Checks {
    /// `result` must be the error `want`.
    fn refused<T: Debug>(&mut self, what: &str, result: Result<T, HypercallError>, want: HypercallError) {
        match result {
            Err(e) if e == want => {
                println!("{}: {what} -> {e}", self.name);
                self.expected += 1;
            }
            other => {
                println!("{}: FAILED {what}: expected \"{want}\", got {other:?}", self.name);
                self.surprises += 1;
            }
        }
    }

    /// `result` must be a success; returns its value.
    fn works<T: Debug, E: Debug>(&mut self, what: &str, result: Result<T, E>) -> Option<T> {
        match result {
            Ok(value) => {
                println!("{}: {what} -> ok", self.name);
                self.expected += 1;
                Some(value)
            }
            Err(e) => {
                println!("{}: FAILED {what}: {e:?}", self.name);
                self.surprises += 1;
                None
            }
        }
    }
}

/// Set by the timer set in the past.
static FIRED: AtomicBool = AtomicBool::new(false);

fn on_fired(_: time::TimerId) {
    FIRED.store(true, Ordering::Relaxed);
}

parvus_guest_sdk::entry!(main);

fn main(start: &'static StartInfo) -> u64 {
    let name = start.name();
    let args = (cmdline::parse::<u64>("victim"), cmdline::parse::<u32>("offered"), cmdline::parse::<u32>("reserved"));
    let (Ok(victim), Ok(offered), Ok(reserved)) = args else {
        println!("{name}: the command line must say victim=<domain id> offered=<port> reserved=<port>");
        return 2;
    };
    let (offered, reserved) = (Port(offered), Port(reserved));
    if let Ok(after) = cmdline::parse::<u64>("after") {
        wait_for_end(after);
    }
    let mut c = Checks { name, expected: 0, surprises: 0 };

    // The channel the victim offered: the one legitimate connection.
    let Some(channel) =
        c.works(&format!("bind port {offered} of domain {victim}, offered to us"), connect(victim, offered))
    else {
        return 1;
    };

    // Ports it does not own: port numbers are per domain, so "the victim's
    // port" is just a number this domain never allocated.
    c.refused("send on port 7, never allocated", event::send(Port(7)), HypercallError::NoSuchPort);
    c.refused("send on port 0, never allocated to anyone", event::send(Port(0)), HypercallError::NoSuchPort);
    c.refused("send on port 4096, past the last port", event::send(Port(4096)), HypercallError::NoSuchPort);
    c.refused("send on port 2^32 + 1", hc::send((1 << 32) + 1), HypercallError::NoSuchPort);
    c.refused("unmask port 77, never allocated", event::unmask(Port(77)), HypercallError::NoSuchPort);
    c.refused("status of port 5, never allocated", event::status(Port(5)), HypercallError::NoSuchPort);

    // Other domains' ports.
    c.refused(
        &format!("bind port {reserved} of domain {victim}, reserved for another domain"),
        event::bind_interdomain(victim, reserved),
        HypercallError::PermissionDenied,
    );
    c.refused(
        &format!("bind port 100 of domain {victim}, free"),
        event::bind_interdomain(victim, Port(100)),
        HypercallError::NoSuchPort,
    );
    c.refused(
        &format!("bind port {offered} of domain {victim} again, already connected"),
        event::bind_interdomain(victim, offered),
        HypercallError::WrongPortState,
    );
    c.refused(
        &format!("bind port 1 of domain {NO_DOMAIN}, which does not exist"),
        event::bind_interdomain(NO_DOMAIN, Port(1)),
        HypercallError::NoSuchDomain,
    );
    c.refused(
        &format!("allocate a port for domain {NO_DOMAIN}, which does not exist"),
        event::alloc_unbound(NO_DOMAIN),
        HypercallError::NoSuchDomain,
    );

    // Its own ports in the wrong state.
    if let Some(unbound) = c.works(&format!("allocate a port for domain {victim}"), event::alloc_unbound(victim)) {
        c.refused(
            &format!("send on own port {unbound}, not connected yet"),
            event::send(unbound),
            HypercallError::WrongPortState,
        );
        c.refused(
            &format!("poll own port {unbound} with a deadline in the past"),
            event::poll(&[unbound], Some(1)),
            HypercallError::TimedOut,
        );
        c.works(&format!("close own port {unbound}"), event::close(unbound));
    }

    // Virtual interrupts. The SDK's timer list binds the timer interrupt
    // (`wait_for_end` slept with it, or this timer does).
    c.refused(&format!("bind virtual interrupt {NO_DOMAIN}"), event::bind_virq(NO_DOMAIN), HypercallError::BadArgument);
    c.refused(
        "bind virtual interrupt 3, one past the last",
        event::bind_virq(virq::COUNT),
        HypercallError::BadArgument,
    );
    c.works("a timer set in the past", time::add_timer(1, on_fired));
    event::block_until(|| FIRED.load(Ordering::Relaxed));
    println!("{name}: ... fired at once");
    c.refused("bind the timer interrupt a second time", event::bind_virq(virq::TIMER), HypercallError::PortInUse);

    // Malformed requests.
    c.refused("event_channel_op command 99", raw::event_channel_op(99), HypercallError::BadArgument);
    c.refused("sched_op command 99", raw::sched_op(99, &[], 0), HypercallError::BadArgument);
    c.refused("poll no port at all", raw::sched_op(SchedCmd::Poll as u64, &[], 0), HypercallError::BadArgument);
    let many = [channel.0; POLL_MAX as usize + 1];
    c.refused("poll 65 ports, one more than allowed", hc::sched_poll(&many, 1), HypercallError::BadArgument);
    c.refused("poll port 999, never allocated", hc::sched_poll(&[999], 1), HypercallError::NoSuchPort);
    c.refused("status into an unmapped buffer", raw::status_to_unmapped(channel), HypercallError::BadAddress);

    // The flood: every send is accepted (the channel is legitimate); the
    // victim sees a few upcalls and carries on.
    let mut accepted = 0;
    for _ in 0..FLOOD {
        if event::send(channel).is_ok() {
            accepted += 1;
        }
    }
    c.works(&format!("flood the victim with {FLOOD} events"), if accepted == FLOOD { Ok(()) } else { Err(accepted) });

    // Closing twice.
    c.works(&format!("close port {channel}"), event::close(channel));
    c.refused(&format!("close port {channel} again"), event::close(channel), HypercallError::NoSuchPort);
    c.refused(&format!("send on closed port {channel}"), event::send(channel), HypercallError::NoSuchPort);

    if c.surprises == 0 {
        println!("{name}: all {} misuses answered as the ABI says", c.expected);
        0
    } else {
        println!("{name}: FAILED: {} answers were not what the ABI says ({} were)", c.surprises, c.expected);
        1
    }
}

/// The raw hypercalls this guest makes with arguments no safe wrapper
/// takes: the only `unsafe` code of the guest, each call explained.
#[allow(unsafe_code)]
mod raw {
    use parvus_guest_sdk::event::Port;
    use parvus_guest_sdk::hypercall::events as hc;
    use parvus_guest_sdk::hypercall_abi::event::EventChannelCmd;
    use parvus_guest_sdk::HypercallError;

    /// `event_channel_op(cmd, 0, 0)` for a command number the ABI lacks.
    pub fn event_channel_op(cmd: u64) -> Result<u64, HypercallError> {
        // SAFETY: with both arguments 0 no command can write memory Rust
        // uses: an unknown command is refused before anything is done, and
        // `Status` would be refused for address 0 (never mapped).
        unsafe { hc::event_channel_op_raw(cmd, 0, 0) }
    }

    /// `sched_op(cmd, ports, ports.len(), deadline)`.
    pub fn sched_op(cmd: u64, ports: &[u32], deadline: u64) -> Result<u64, HypercallError> {
        // SAFETY: no `sched_op` command writes memory through its
        // arguments; `Poll` only reads `ports`.
        unsafe { hc::sched_op_raw(cmd, ports.as_ptr() as u64, ports.len() as u64, deadline) }
    }

    /// `event_channel_op(Status, port, 0x1000)`: a status buffer in the
    /// unmapped first 4 MiB.
    pub fn status_to_unmapped(port: Port) -> Result<u64, HypercallError> {
        // SAFETY: 0x1000 is below `GUEST_VIRT_BASE` and never mapped, so
        // the hypervisor refuses to write there (`BadAddress`): no memory
        // changes.
        unsafe { hc::event_channel_op_raw(EventChannelCmd::Status as u64, port.raw(), 0x1000) }
    }
}

/// Binds the victim's offered port, waiting (1 ms naps) for the victim to
/// allocate it.
fn connect(victim: u64, offered: Port) -> Result<Port, HypercallError> {
    let mut attempts = 0;
    loop {
        match event::bind_interdomain(victim, offered) {
            Err(HypercallError::NoSuchPort) if attempts < BIND_ATTEMPTS => {
                attempts += 1;
                time::sleep(Duration::from_millis(1));
            }
            other => return other,
        }
    }
}

/// Sleeps in 5 ms steps until domain `id` has exited or been stopped.
fn wait_for_end(id: u64) {
    loop {
        let state = hypercall::domain_info(id).map(|info| DomainState::from_raw(info.state));
        match state {
            Ok(Some(DomainState::Runnable | DomainState::Blocked)) => time::sleep(Duration::from_millis(5)),
            _ => return,
        }
    }
}
