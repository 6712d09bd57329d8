//! Judging a result against the ABI, and counting.
//!
//! An error must be one of [`Hypercall::errors`] for the call (for a call a
//! `multicall` cannot batch, inside one: exactly `BadArgument`; for a
//! number that is no hypercall: exactly `UnknownHypercall`); a value must
//! be what the call's documentation promises ([`Expect`]).

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;

use parvus_guest_sdk::hypercall_abi::error::MAX_ERROR_CODE;
use parvus_guest_sdk::hypercall_abi::event::NR_PORTS;
use parvus_guest_sdk::hypercall_abi::{decode_result, Hypercall, HypercallError};
use parvus_guest_sdk::println;

/// What a successful call must return.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    /// This value.
    Exactly(u64),
    /// At most this value.
    AtMost(u64),
    /// A port number (1 to `NR_PORTS - 1`).
    Port,
    /// One of these ports.
    PortIn(Vec<u32>),
    /// Anything (the call cannot succeed, or its value is not known).
    Any,
}

impl Expect {
    fn admits(&self, value: u64) -> bool {
        match self {
            Expect::Exactly(v) => value == *v,
            Expect::AtMost(v) => value <= *v,
            Expect::Port => (1..NR_PORTS as u64).contains(&value),
            Expect::PortIn(ports) => ports.iter().any(|p| u64::from(*p) == value),
            Expect::Any => true,
        }
    }
}

/// Why a result is wrong, if it is.
pub fn verdict(number: u64, batched: bool, expect: &Expect, rax: u64) -> Option<&'static str> {
    let result = decode_result(rax);
    let Ok(call) = Hypercall::try_from(number) else {
        return (result != Err(HypercallError::UnknownHypercall)).then_some("no hypercall: must be UnknownHypercall");
    };
    if batched && !call.batchable() {
        return (result != Err(HypercallError::BadArgument)).then_some("cannot be batched: must be BadArgument");
    }
    match result {
        Err(e) if call.errors().contains(&e) => None,
        Err(_) => Some("not in the ABI's errors of this call"),
        Ok(value) if expect.admits(value) => None,
        Ok(_) => Some("not the value the ABI promises"),
    }
}

/// Results seen, by kind.
pub struct Tally {
    /// Index 0: values; index `c`: error code `c`; the last: codes this ABI
    /// does not know.
    results: [u64; 26],
    /// Top-level calls by number (the last: numbers that are no hypercall).
    pub calls: [u64; Hypercall::ALL.len() + 1],
    /// Multicalls made at the top level, the entries they carried, and
    /// those whose entries lay in a window page the batch took away.
    pub multicalls: u64,
    pub entries: u64,
    pub window_multicalls: u64,
    /// Findings, and the first few in full.
    pub findings: u64,
}

/// Findings printed in full (the rest are counted).
const PRINTED_FINDINGS: u64 = 20;

impl Tally {
    /// Nothing counted yet.
    pub fn new() -> Tally {
        Tally { results: [0; 26], calls: [0; Hypercall::ALL.len() + 1], multicalls: 0, entries: 0, window_multicalls: 0, findings: 0 }
    }

    /// Counts a result.
    pub fn result(&mut self, rax: u64) {
        let slot = match decode_result(rax) {
            Ok(_) => 0,
            Err(HypercallError::Unrecognized) => 25,
            Err(e) => e.code() as usize,
        };
        self.results[slot.min(25)] += 1;
    }

    /// Counts a top-level call.
    pub fn call(&mut self, number: u64) {
        let slot = Hypercall::try_from(number).map_or(Hypercall::ALL.len(), |c| c as usize);
        self.calls[slot] += 1;
    }

    /// Reports a finding: a result the ABI does not allow, or damage.
    pub fn finding(&mut self, seed: u64, at: &str, what: &str) {
        self.findings += 1;
        if self.findings <= PRINTED_FINDINGS {
            println!("hypercall-fuzz: FINDING: seed={seed} {at}: {what}");
        }
    }

    /// `Ok 41230`, `BadAddress 2210`, ...: every kind seen, in code order.
    pub fn results(&self) -> Vec<String> {
        let named = |slot: usize| match slot {
            0 => String::from("Ok"),
            25 => String::from("Unrecognized"),
            code => alloc::format!("{:?}", HypercallError::from_code(code as u64)),
        };
        self.results.iter().enumerate().filter(|(_, n)| **n > 0).map(|(slot, n)| alloc::format!("{} {n}", named(slot))).collect()
    }

    /// `null 5012`, `abi_version 4980`, ..., `unknown 7011`.
    pub fn calls(&self) -> Vec<String> {
        let name = |slot: usize| Hypercall::ALL.get(slot).map_or("unknown", |c| c.name());
        self.calls.iter().enumerate().map(|(slot, n)| alloc::format!("{} {n}", name(slot))).collect()
    }
}

/// A call as a finding names it: `#number name(a, b, ...) -> result`.
pub fn describe(number: u64, args: &[u64], rax: u64) -> String {
    let result = if rax >= MAX_ERROR_CODE.wrapping_neg() {
        alloc::format!("{:?}", HypercallError::from_code(rax.wrapping_neg()))
    } else {
        alloc::format!("Ok({rax:#x})")
    };
    alloc::format!("{} -> {result}", describe_call(number, args))
}

/// A call before it is made: `#number name(a, b, ...)`.
pub fn describe_call(number: u64, args: &[u64]) -> String {
    let mut text = match Hypercall::try_from(number) {
        Ok(call) => alloc::format!("#{number} {}(", call.name()),
        Err(_) => alloc::format!("#{number:#x} (no hypercall)("),
    };
    for (i, a) in args.iter().enumerate() {
        let _ = write!(text, "{}{a:#x}", if i == 0 { "" } else { ", " });
    }
    text.push(')');
    text
}
