//! Event channels: one domain's ports, and raising an event on one.
//!
//! A port is free, *unbound* (allocated for a named remote domain to bind
//! to), *interdomain* (connected to a port of another domain) or bound to
//! a virtual IRQ. Raising an event sets the port's pending bit in the
//! domain's shared-info page; unless the port is masked it also sets the
//! selector bit and `upcall_pending`, and marks the domain so that the
//! hypervisor delivers an upcall before it next returns to it (see
//! [`hypercall_abi::event`] for the guest's side). Port 0 is never
//! allocated, so that 0 can mean "no port".

use crate::heap_account::{release, try_grow, vec_bytes, HeapAccount};
use crate::machine_memory::MachineMemory;
use alloc::vec::Vec;
use hypercall_abi::event::{
    port_state, virq, EventChannelStatus, BITS_PER_WORD, MASK_OFFSET, NR_PORTS, PENDING_OFFSET, PENDING_SEL_OFFSET,
    POLL_MAX, UPCALL_PENDING_OFFSET,
};
use hypercall_abi::HypercallError;

use crate::domain::DomainId;

/// The state of one port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Port {
    /// Not allocated.
    Free,
    /// Allocated for `remote` to bind to.
    Unbound {
        /// The domain allowed to bind.
        remote: DomainId,
    },
    /// Connected to `remote_port` of `remote`.
    Interdomain {
        /// The peer domain.
        remote: DomainId,
        /// The peer's port.
        remote_port: u32,
    },
    /// Bound to a virtual IRQ.
    Virq(u64),
}

/// What a domain waits for, when it is not runnable.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Wait {
    /// It is not waiting.
    #[default]
    None,
    /// `sched_op(Block)`: any event that produces an upcall.
    Block,
    /// `sched_op(Poll)`: one of these ports pending (masked or not), or the deadline.
    Poll {
        /// The ports (held in place: a poll costs the hypervisor no heap).
        ports: PollPorts,
        /// System time at which the poll times out.
        deadline_ns: Option<u64>,
    },
}

/// The ports of one `sched_op(Poll)`.
pub type PollPorts = heapless::Vec<u32, { POLL_MAX as usize }>;

/// One domain's ports and timer.
///
/// The port table grows as ports are allocated, charged to the domain's
/// [`HeapAccount`], up to [`NR_PORTS`] entries; it is dropped, and
/// refunded, when the domain ends.
#[derive(Clone, Debug, Default)]
pub struct EventChannels {
    ports: Vec<Port>,
    /// No port below this one is free: allocation looks from here, so that
    /// taking every port one by one costs linear time, not quadratic.
    free_from: usize,
    virqs: [Option<u32>; virq::COUNT as usize],
    /// The one-shot timer's deadline (system time), if set.
    pub timer_deadline_ns: Option<u64>,
    /// An event was raised since the last upcall check (or a single-step
    /// trap is owed: see `Vcpu::single_step_owed`): the resume path looks
    /// at what to deliver before the domain runs.
    pub upcall_due: bool,
    /// What the domain is waiting for.
    pub wait: Wait,
    /// Set by a hypercall that raised an event which must wake this
    /// domain (the port, for `poll`'s result); the system wakes it after
    /// the hypercall.
    pub wake_port: Option<u32>,
}

impl EventChannels {
    /// The state of `port` (`NoSuchPort` if it is free or out of range).
    pub fn get(&self, port: u64) -> Result<Port, HypercallError> {
        match usize::try_from(port).ok().and_then(|p| self.ports.get(p)) {
            Some(Port::Free) | None => Err(HypercallError::NoSuchPort),
            Some(p) => Ok(*p),
        }
    }

    /// Allocates a port in state `state`; returns its number. A longer
    /// table is charged to `account`: `OutOfMemory` if it cannot hold it,
    /// `PortInUse` once all [`NR_PORTS`] ports are taken.
    pub fn alloc(&mut self, state: Port, account: &mut HeapAccount) -> Result<u32, HypercallError> {
        if self.ports.is_empty() {
            try_grow(&mut self.ports, NR_PORTS, account)?;
            self.ports.push(Port::Free); // port 0: never used
        }
        let from = self.free_from.max(1);
        let port = match self.ports.iter().skip(from).position(|p| *p == Port::Free) {
            Some(i) => from + i,
            None if self.ports.len() < NR_PORTS => {
                try_grow(&mut self.ports, NR_PORTS, account)?;
                self.ports.push(Port::Free);
                self.ports.len() - 1
            }
            None => return Err(HypercallError::PortInUse),
        };
        self.ports[port] = state;
        self.free_from = port + 1;
        if let Port::Virq(v) = state {
            self.virqs[v as usize] = Some(port as u32);
        }
        Ok(port as u32)
    }

    /// Sets the state of an allocated port.
    pub fn set(&mut self, port: u32, state: Port) {
        if let Port::Virq(v) = self.ports[port as usize] {
            self.virqs[v as usize] = None;
        }
        if let Port::Virq(v) = state {
            self.virqs[v as usize] = Some(port);
        }
        if state == Port::Free {
            self.free_from = self.free_from.min(port as usize);
        }
        self.ports[port as usize] = state;
    }

    /// Frees every port of domain `owner`, and the table's memory with
    /// them (refunded to `account`); calls `peer(domain, port)` for each
    /// port of *another* domain that was connected to one of these and
    /// must go back to unbound.
    ///
    /// A channel whose two ends are both `owner`'s (a loopback: a domain
    /// may offer a port to itself and bind it) dies with the table, so the
    /// caller never reaches back into a table this call has emptied. The
    /// peers are handed out as they are found rather than collected, so
    /// that ending a domain needs no memory.
    pub fn close_all(&mut self, owner: DomainId, account: &mut HeapAccount, mut peer: impl FnMut(DomainId, u32)) {
        for p in &self.ports {
            match *p {
                Port::Interdomain { remote, remote_port } if remote != owner => peer(remote, remote_port),
                _ => {}
            }
        }
        release(&mut self.ports, account);
        self.free_from = 0;
        self.virqs = [None; virq::COUNT as usize];
    }

    /// Heap bytes the port table holds (what is charged for it).
    pub fn table_bytes(&self) -> usize {
        vec_bytes(&self.ports)
    }

    /// The port bound to virtual IRQ `v`, if any.
    pub fn virq_port(&self, v: u64) -> Option<u32> {
        self.virqs.get(v as usize).copied().flatten()
    }

    /// The port table itself, indexed by port number (for the tests'
    /// consistency checks).
    #[cfg(test)]
    pub(crate) fn port_table(&self) -> &[Port] {
        &self.ports
    }

    /// What `Status` reports.
    pub fn status(&self, port: u64) -> Result<EventChannelStatus, HypercallError> {
        let mut s = EventChannelStatus::default();
        match self.get(port)? {
            Port::Free => unreachable!("get refuses free ports"),
            Port::Unbound { remote } => {
                s.state = port_state::UNBOUND;
                s.remote_domain = u32::from(remote.0);
            }
            Port::Interdomain { remote, remote_port } => {
                s.state = port_state::INTERDOMAIN;
                s.remote_domain = u32::from(remote.0);
                s.remote_port = remote_port;
            }
            Port::Virq(v) => {
                s.state = port_state::VIRQ;
                s.virq = v as u32;
            }
        }
        Ok(s)
    }
}

fn word_and_bit(port: u32) -> (u64, u64) {
    let word = port as usize / BITS_PER_WORD;
    (word as u64 * 8, 1u64 << (port as usize % BITS_PER_WORD))
}

/// Raises an event on `port` of the domain whose shared-info page is at
/// machine address `shared`. Returns whether the domain should be woken
/// (a pending, unmasked event, or a port it polls).
pub fn raise(mem: &mut impl MachineMemory, shared: u64, events: &mut EventChannels, port: u32) -> bool {
    let (offset, bit) = word_and_bit(port);
    let pending = shared + PENDING_OFFSET as u64 + offset;
    let was = mem.read_u64(pending);
    mem.write_u64(pending, was | bit);
    let masked = mem.read_u64(shared + MASK_OFFSET as u64 + offset) & bit != 0;
    if !masked {
        let sel = shared + PENDING_SEL_OFFSET as u64;
        mem.write_u64(sel, mem.read_u64(sel) | (1 << (offset / 8)));
        mem.write(shared + UPCALL_PENDING_OFFSET as u64, &[1]);
        events.upcall_due = true;
    }
    match &events.wait {
        Wait::Block => !masked,
        Wait::Poll { ports, .. } => ports.contains(&port),
        Wait::None => false,
    }
}

/// Clears `port`'s mask bit; if it is pending, re-raises it (so that an
/// event that came while it was masked is delivered). Returns whether the
/// domain should be woken.
pub fn unmask(mem: &mut impl MachineMemory, shared: u64, events: &mut EventChannels, port: u32) -> bool {
    let (offset, bit) = word_and_bit(port);
    let mask = shared + MASK_OFFSET as u64 + offset;
    mem.write_u64(mask, mem.read_u64(mask) & !bit);
    if mem.read_u64(shared + PENDING_OFFSET as u64 + offset) & bit != 0 {
        return raise(mem, shared, events, port);
    }
    false
}

/// Clears `port`'s pending and mask bits (when it is freed).
pub fn clear(mem: &mut impl MachineMemory, shared: u64, port: u32) {
    let (offset, bit) = word_and_bit(port);
    for base in [PENDING_OFFSET, MASK_OFFSET] {
        let word = shared + base as u64 + offset;
        mem.write_u64(word, mem.read_u64(word) & !bit);
    }
}

/// Whether `port` is pending (masked or not).
pub fn is_pending(mem: &impl MachineMemory, shared: u64, port: u32) -> bool {
    let (offset, bit) = word_and_bit(port);
    mem.read_u64(shared + PENDING_OFFSET as u64 + offset) & bit != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine_memory::TestMemory;

    #[test]
    fn ports_allocate_from_one_and_are_reused() {
        let mut e = EventChannels::default();
        let a = &mut HeapAccount::new(usize::MAX);
        assert_eq!(e.alloc(Port::Unbound { remote: DomainId(1) }, a), Ok(1));
        assert_eq!(e.alloc(Port::Virq(virq::TIMER), a), Ok(2));
        assert_eq!(e.virq_port(virq::TIMER), Some(2));
        e.set(1, Port::Free);
        assert_eq!(e.get(1), Err(HypercallError::NoSuchPort));
        assert_eq!(e.get(0), Err(HypercallError::NoSuchPort));
        assert_eq!(e.get(99_999), Err(HypercallError::NoSuchPort));
        assert_eq!(e.alloc(Port::Unbound { remote: DomainId(2) }, a), Ok(1));
        e.set(2, Port::Free);
        assert_eq!(e.virq_port(virq::TIMER), None);
    }

    #[test]
    fn the_table_is_charged_as_it_grows_and_refused_past_the_allowance() {
        let mut e = EventChannels::default();
        // Room for a table of 8 ports, not 16.
        let a = &mut HeapAccount::new(8 * core::mem::size_of::<Port>() + 1);
        for port in 1..8 {
            assert_eq!(e.alloc(Port::Unbound { remote: DomainId(0) }, a), Ok(port));
            assert_eq!(a.charged(), e.table_bytes());
        }
        assert_eq!(e.alloc(Port::Unbound { remote: DomainId(0) }, a), Err(HypercallError::OutOfMemory));
        assert_eq!(a.charged(), 8 * core::mem::size_of::<Port>(), "nothing more charged");
        assert_eq!(e.get(8), Err(HypercallError::NoSuchPort), "and no port allocated");
        e.set(3, Port::Free);
        assert_eq!(e.alloc(Port::Virq(virq::TIMER), a), Ok(3), "a free port is reused without growing");
        // With the whole allowance, the ABI's limit comes first.
        let mut e = EventChannels::default();
        let a = &mut HeapAccount::new(crate::heap_account::PORT_TABLE_BYTES);
        for port in 1..NR_PORTS as u32 {
            assert_eq!(e.alloc(Port::Unbound { remote: DomainId(0) }, a), Ok(port));
        }
        assert_eq!(e.alloc(Port::Unbound { remote: DomainId(0) }, a), Err(HypercallError::PortInUse));
        assert_eq!(a.charged(), crate::heap_account::PORT_TABLE_BYTES);
        e.close_all(DomainId(0), a, |_, _| unreachable!("no peers"));
        assert_eq!(a.charged(), 0);
    }

    #[test]
    fn closing_all_names_only_other_domains_and_returns_the_memory() {
        let me = DomainId(3);
        let mut e = EventChannels::default();
        let a = &mut HeapAccount::new(usize::MAX);
        let offered = e.alloc(Port::Unbound { remote: me }, a).unwrap();
        let bound = e.alloc(Port::Interdomain { remote: me, remote_port: offered }, a).unwrap();
        e.set(offered, Port::Interdomain { remote: me, remote_port: bound });
        let to_other = e.alloc(Port::Interdomain { remote: DomainId(1), remote_port: 7 }, a).unwrap();
        let mut peers = alloc::vec::Vec::new();
        e.close_all(me, a, |d, p| peers.push((d, p)));
        assert_eq!(peers, [(DomainId(1), 7)], "the loopback pair is not a peer");
        assert_eq!(e.get(u64::from(to_other)), Err(HypercallError::NoSuchPort));
        assert_eq!(e.ports.capacity(), 0, "an ended domain keeps no port table");
        assert_eq!(a.charged(), 0, "and is charged nothing for it");
    }

    #[test]
    fn raising_sets_the_bits_a_guest_reads_and_respects_masks() {
        let mut mem = TestMemory::new(1);
        let mut e = EventChannels { wait: Wait::Block, ..Default::default() };
        // Port 70: word 1, bit 6.
        mem.write_u64(MASK_OFFSET as u64 + 8, 1 << 6);
        assert!(!raise(&mut mem, 0, &mut e, 70), "masked: pending, but no wake-up");
        assert_eq!(mem.read_u64(PENDING_OFFSET as u64 + 8), 1 << 6);
        assert_eq!(mem.read_u64(PENDING_SEL_OFFSET as u64), 0);
        assert!(!e.upcall_due);
        assert!(unmask(&mut mem, 0, &mut e, 70), "unmasking a pending port delivers it");
        assert_eq!(mem.read_u64(PENDING_SEL_OFFSET as u64), 1 << 1);
        let mut flag = [0u8];
        mem.read(UPCALL_PENDING_OFFSET as u64, &mut flag);
        assert_eq!(flag, [1]);
        assert!(e.upcall_due);
        e.wait = Wait::Poll { ports: PollPorts::from_slice(&[5]).unwrap(), deadline_ns: None };
        mem.write_u64(MASK_OFFSET as u64, 1 << 5);
        assert!(raise(&mut mem, 0, &mut e, 5), "a poll wakes even for a masked port");
        assert!(is_pending(&mem, 0, 5));
    }
}
