//! `bench-events`: what events and time cost, counted in instructions.
//!
//! Runs in `scenarios/bench` with the method of the `bench` guest: under
//! QEMU `-icount shift=0`, `rdtsc` differences are exact instruction
//! counts (the hypervisor's included); each row is a loop whose empty twin
//! is the baseline, printed as `BENCH name=... iterations=... total=...
//! baseline=...` for `cargo xtask bench`. Two domains run this image:
//!
//! - `role=echo peer=<name>`: allocates a port for its peer and answers
//!   every event on it from the event handler, [`ROUND_TRIPS`] +
//!   [`WARM_UP`] times, then exits;
//! - `role=measure peer=<name>`: waits until every domain but the two has
//!   ended (so no third domain runs inside a loop), binds the echo's port
//!   and measures:
//!   - `event_round_trip`: send, block until the reply's upcall. One
//!     iteration is the measurer's `send`, the switch to the echo, its
//!     upcall, handler and reply `send`, its `iret` and `block`, the switch
//!     back, the measurer's upcall, handler and `iret`: six hypercalls,
//!     two upcalls and two domain switches;
//!   - `set_timer`: programming the one-shot timer (a deadline 10 s away);
//!   - `time_now`: reading the system time from the shared-info page (no
//!     hypercall: `rdtsc`, a multiply and the version checks);
//!   - `send_bad_port`: a `send` on a port the domain does not have,
//!     through the SDK wrapper, refused with `NoSuchPort`;
//!   - `send_bad_port_raw`: the same as a bare `syscall` (what the
//!     hypervisor's refusal costs, plus the loop's two instructions).
//!
//! Peers are found by name (`domain_info` of every id), so the manifest
//! may list other domains before these.
#![no_std]
#![no_main]

use core::arch::asm;
use core::hint::black_box;
use core::sync::atomic::{AtomicU32, Ordering};

use parvus_guest_sdk::event::{self, Port};
use parvus_guest_sdk::bench::{empty_loop, ticks};
use parvus_guest_sdk::hypercall::events as hc;
use parvus_guest_sdk::hypercall_abi::event::EventChannelCmd;
use parvus_guest_sdk::hypercall_abi::Hypercall;
use parvus_guest_sdk::{cmdline, console, hypercall, println, status, time, DomainState, HypercallError, StartInfo};

/// Round trips measured.
const ROUND_TRIPS: u32 = 1000;
/// Round trips made before measuring (first-use paths, lazy set-up).
const WARM_UP: u32 = 16;
/// Iterations of the other rows.
const ITERATIONS: u64 = 10_000;
/// A port number no domain here allocates.
const BAD_PORT: u64 = 4000;
/// Attempts to find or bind the peer (each yields once).
const ATTEMPTS: u32 = 10_000;

/// Events received: replies (measurer) or requests answered (echo).
static EVENTS: AtomicU32 = AtomicU32::new(0);

parvus_guest_sdk::entry!(main);

fn main(start: &'static StartInfo) -> u64 {
    let name = start.name();
    let (Some(role), Some(peer_name)) = (cmdline::value("role"), cmdline::value("peer")) else {
        println!("{name}: the command line must say role=measure|echo peer=<domain name>");
        return 2;
    };
    let Some(peer) = find_domain(peer_name) else {
        println!("{name}: no domain is called {peer_name}");
        return 2;
    };
    let result = match role {
        "echo" => echo(peer),
        "measure" => measure(name, u64::from(start.domain_id), peer),
        _ => {
            println!("{name}: role must be measure or echo, not {role}");
            return 2;
        }
    };
    match result {
        Ok(()) => status::SUCCESS,
        Err(e) => {
            println!("{name}: failed: {e}");
            1
        }
    }
}

/// The echo handler: answer on the same port.
fn answer(port: Port) {
    if event::send(port).is_ok() {
        EVENTS.fetch_add(1, Ordering::Relaxed);
    }
}

/// The measurer's handler: count the reply.
fn count(_: Port) {
    EVENTS.fetch_add(1, Ordering::Relaxed);
}

fn echo(peer: u64) -> Result<(), HypercallError> {
    let port = event::alloc_unbound(peer)?;
    event::set_handler(port, answer).map_err(|_| HypercallError::PortInUse)?;
    event::block_until(|| EVENTS.load(Ordering::Relaxed) >= WARM_UP + ROUND_TRIPS);
    Ok(())
}

fn measure(name: &str, me: u64, peer: u64) -> Result<(), HypercallError> {
    wait_for_the_others(me, peer)?;
    let port = bind_first_port(peer)?;
    event::set_handler(port, count).map_err(|_| HypercallError::PortInUse)?;
    // Arm the SDK's clock and timer paths before measuring.
    let _ = time::now();
    console::flush();

    for sent in 0..WARM_UP {
        event::send(port)?;
        event::block_until(|| EVENTS.load(Ordering::Relaxed) > sent);
    }
    let round_trip_base = empty_loop(u64::from(ROUND_TRIPS));
    let round_trip = round_trip_loop(port);

    let baseline = empty_loop(ITERATIONS);
    let far = time::now() + 10_000_000_000;
    let set_timer = set_timer_loop(far);
    hc::set_timer(0)?;
    let time_now = time_now_loop();
    let bad_send = bad_send_loop();
    let bad_send_raw = bad_send_raw_loop();

    let rows = [
        ("event_round_trip", u64::from(ROUND_TRIPS), round_trip, round_trip_base),
        ("set_timer", ITERATIONS, set_timer, baseline),
        ("time_now", ITERATIONS, time_now, baseline),
        ("send_bad_port", ITERATIONS, bad_send, baseline),
        ("send_bad_port_raw", ITERATIONS, bad_send_raw, baseline),
    ];
    for (row, iterations, total, base) in rows {
        println!("BENCH name={row} iterations={iterations} total={total} baseline={base}");
    }
    for (row, iterations, total, base) in rows {
        let hundredths = total.saturating_sub(base) * 100 / iterations;
        println!("{name}: {row}: {}.{:02} instructions per operation", hundredths / 100, hundredths % 100);
    }
    Ok(())
}



#[inline(never)]
fn round_trip_loop(port: Port) -> u64 {
    let first = EVENTS.load(Ordering::Relaxed);
    let start = ticks();
    for i in 0..ROUND_TRIPS {
        let _ = event::send(port);
        event::block_until(|| EVENTS.load(Ordering::Relaxed) > first + i);
    }
    ticks() - start
}

#[inline(never)]
fn set_timer_loop(deadline: u64) -> u64 {
    let start = ticks();
    for i in 0..ITERATIONS {
        let _ = black_box(hc::set_timer(deadline + i));
    }
    ticks() - start
}

#[inline(never)]
fn time_now_loop() -> u64 {
    let start = ticks();
    for _ in 0..ITERATIONS {
        black_box(time::now());
    }
    ticks() - start
}

#[inline(never)]
fn bad_send_loop() -> u64 {
    let start = ticks();
    for _ in 0..ITERATIONS {
        let _ = black_box(event::send(Port(BAD_PORT as u32)));
    }
    ticks() - start
}

#[inline(never)]
fn bad_send_raw_loop() -> u64 {
    let start = ticks();
    for i in 0..ITERATIONS {
        black_box(i);
        // SAFETY: `event_channel_op(Send, BAD_PORT)` writes no memory (it
        // is refused); `syscall` clobbers rcx and r11, rax takes the result.
        unsafe {
            asm!(
                "syscall",
                inout("rax") Hypercall::EventChannelOp as u64 => _,
                in("rdi") EventChannelCmd::Send as u64,
                in("rsi") BAD_PORT,
                out("rcx") _,
                out("r11") _,
                options(nostack),
            );
        }
    }
    ticks() - start
}

/// The id of the domain called `name` (every domain of the manifest exists
/// from the start, running or not).
fn find_domain(name: &str) -> Option<u64> {
    let count = hypercall::domain_info_self().ok()?.nr_domains;
    (0..u64::from(count)).find(|&id| hypercall::domain_info(id).is_ok_and(|info| info.name() == name))
}

/// Sleeps until every domain but `me` and `peer` has ended.
fn wait_for_the_others(me: u64, peer: u64) -> Result<(), HypercallError> {
    let count = u64::from(hypercall::domain_info_self()?.nr_domains);
    for id in (0..count).filter(|&id| id != me && id != peer) {
        loop {
            let state = DomainState::from_raw(hypercall::domain_info(id)?.state);
            if !matches!(state, Some(DomainState::Runnable | DomainState::Blocked)) {
                break;
            }
            // Sleep rather than yield: a yielding domain is always runnable
            // and would be scheduled inside the other guests' measured loops.
            parvus_guest_sdk::time::sleep(core::time::Duration::from_millis(200));
        }
    }
    Ok(())
}

/// Binds the echo's first port (its only one), waiting for it.
fn bind_first_port(peer: u64) -> Result<Port, HypercallError> {
    let mut attempts = 0;
    loop {
        match event::bind_interdomain(peer, Port(1)) {
            Err(HypercallError::NoSuchPort) if attempts < ATTEMPTS => {
                attempts += 1;
                hypercall::yield_now()?;
            }
            other => return other,
        }
    }
}
