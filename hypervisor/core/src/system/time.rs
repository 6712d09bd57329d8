//! The platform timer's side of [`System`]: deadlines, preemption, CPU
//! time limits, guest timers and poll timeouts, and waking waiters.

use super::{d_id, Next, Platform, System};
use crate::console::ConsoleSink;
use crate::domain::{Domain, DomainId, Ending};
use crate::event_channel::{self, Wait};
use crate::hypercall::TlbFlush;
use crate::machine_memory::MachineMemory;
use crate::scheduler::SLICE_NS;
use crate::time::NS_PER_S;
use crate::vcpu::GuestRegs;
use hypercall_abi::event::virq;
use hypercall_abi::{encode_result, HypercallError};

const HOUR: u64 = 3_600 * NS_PER_S;

/// A wait for which the machine idles is worth a notice from this long on.
const LONG_WAIT_NS: u64 = HOUR;

/// A long span of time, in the largest unit that fits: years, days or hours.
struct Span(u64);

impl core::fmt::Display for Span {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        const DAY: u64 = 24 * HOUR;
        const YEAR: u64 = 365 * DAY + DAY / 4;
        let (n, unit) = match self.0 {
            t if t >= YEAR => (t / YEAR, "year"),
            t if t >= DAY => (t / DAY, "day"),
            t => (t / HOUR, "hour"),
        };
        write!(f, "{n} {unit}{}", if n == 1 { "" } else { "s" })
    }
}

impl System {
    /// The TSC value at which the hypervisor must next get the CPU back:
    /// the end of the current domain's slice when others wait, when its
    /// CPU time limit runs out, or the earliest guest timer or poll
    /// timeout. `None`: no deadline at all.
    ///
    /// Every deadline counts, however far: one beyond what the TSC can
    /// count (a guest may ask for `u64::MAX` ns) saturates to `u64::MAX`,
    /// the farthest TSC value, and is still a deadline: the domain waits
    /// for it, and is not taken for one that nothing can wake.
    pub fn next_deadline(&self) -> Option<u64> {
        // Called after every dispatch and wake-up (`timer_dirty`), so one
        // pass over the domains, and one conversion to TSC ticks of the
        // earliest of the times kept in nanoseconds (the conversion is
        // monotonic, so the minimum commutes with it).
        let mut deadline = u64::MAX;
        let mut any = false;
        if let Some(id) = self.current {
            let d = &self.domains[usize::from(id.0)];
            if self.scheduler.others_runnable(id) {
                deadline = deadline.min(self.dispatched_at.saturating_add(self.time.clock.ticks(SLICE_NS)));
                any = true;
            }
            if let Some(limit) = d.time_limit_ns {
                deadline = deadline.min(self.dispatched_at.saturating_add(self.time.clock.ticks(limit.saturating_sub(d.stats.cpu_ns))));
                any = true;
            }
        }
        let mut earliest_ns = None::<u64>;
        let mut consider_ns = |t: u64| earliest_ns = Some(earliest_ns.map_or(t, |e| e.min(t)));
        for d in self.domains.iter().filter(|d| d.is_alive()) {
            self.wake_deadlines_ns(d, &mut consider_ns);
        }
        if let Some(t) = earliest_ns {
            deadline = deadline.min(self.time.tsc_at(t));
            any = true;
        }
        // `u64::MAX` is a deadline too (the farthest), not a marker for none.
        any.then_some(deadline)
    }

    /// Calls `f` with each system time (ns) at which `d` must be looked
    /// at again while it waits or runs: its `set_timer` deadline, its poll
    /// deadline, its emulated PIT's next tick. (A callback rather than a
    /// minimum: `next_deadline` then folds all domains' in one pass, as
    /// cheaply as if written out.)
    #[inline(always)]
    fn wake_deadlines_ns(&self, d: &Domain, mut f: impl FnMut(u64)) {
        if let Some(t) = d.events.timer_deadline_ns {
            f(t);
        }
        if let Wait::Poll { deadline_ns: Some(t), .. } = d.events.wait {
            f(t);
        }
        if let Some(t) = d.vm.as_deref().and_then(|vm| self.emulated_deadline_of(d.id, vm)) {
            f(t);
        }
    }

    /// Says once, when every domain waits and the nearest deadline is
    /// [`LONG_WAIT_NS`] or more away, that the machine idles until then:
    /// a run that seems to hang is waiting for what a guest asked for.
    #[cold]
    #[inline(never)]
    pub(super) fn note_long_wait(&mut self, tsc: u64) {
        let mut earliest = None::<(u64, DomainId)>;
        for d in self.domains.iter().filter(|d| d.is_alive()) {
            self.wake_deadlines_ns(d, |t| earliest = Some(earliest.map_or((t, d.id), |e| e.min((t, d.id)))));
        }
        let Some((at, id)) = earliest else {
            return;
        };
        let wait = at.saturating_sub(self.time.now_ns(tsc));
        if wait < LONG_WAIT_NS || self.long_wait_noted == Some((at, id)) {
            return;
        }
        self.long_wait_noted = Some((at, id));
        log::info!(
            "every domain waits; the nearest deadline, {}'s, is {} away: idling until then",
            self.domains[usize::from(id.0)].label(),
            Span(wait)
        );
    }

    /// Handles the platform timer (while a guest ran, or while idle):
    /// fires guest timers and poll timeouts, stops a domain that used up
    /// its CPU time limit, preempts one whose slice is over when others
    /// wait, and delivers upcalls the timers caused.
    pub fn on_timer<M: MachineMemory, C: ConsoleSink>(
        &mut self,
        p: &mut Platform<'_, M, C>,
        frame: &mut GuestRegs,
    ) -> Next {
        let woke = self.fire_timers(p);
        let Some(id) = self.current else {
            return self.dispatch_next(p, frame);
        };
        let ran = self.time.clock.ns(p.tsc.saturating_sub(self.dispatched_at));
        let d = &self.domains[usize::from(id.0)];
        if let Some(limit) = d.time_limit_ns.filter(|limit| d.stats.cpu_ns + ran >= *limit) {
            self.leave_cpu(id, p.tsc, 0);
            self.drain_console(p, id);
            let d = &self.domains[usize::from(id.0)];
            log::error!("{} used its CPU time limit of {} ms at rip={:#x}", d.label(), limit / 1_000_000, frame.rip);
            self.end(p, id, Ending::TimeLimit);
            return self.dispatch_next(p, frame);
        }
        // Preempt at the end of the slice, or when a timer woke a domain
        // that is owed the CPU more than the running one (its pass is lower
        // once the running one is charged): a timer event is not late by
        // the rest of somebody else's slice.
        let preempt = (ran >= SLICE_NS && self.scheduler.others_runnable(id))
            || (woke && self.scheduler.would_preempt(id, ran));
        if preempt {
            self.domain(id).stats.preemptions += 1;
            self.drain_console(p, id);
            self.leave_cpu(id, p.tsc, 0);
            self.save_current(frame);
            return self.dispatch_next(p, frame);
        }
        let d = &self.domains[usize::from(id.0)];
        let (root, mode) = (d.root(), d.vcpu.kernel_mode);
        self.resume_current(p, frame, root, mode, TlbFlush::None)
    }

    /// Raises the timer events and poll timeouts that are due.
    /// Returns whether it woke anyone.
    pub(super) fn fire_timers<M: MachineMemory, C: ConsoleSink>(&mut self, p: &mut Platform<'_, M, C>) -> bool {
        self.timer_dirty = true;
        let now = self.time.now_ns(p.tsc);
        let mut woke = self.tick_emulated_devices(now);
        for i in 0..self.domains.len() {
            let d = &mut self.domains[i];
            if !d.is_alive() {
                continue;
            }
            if d.events.timer_deadline_ns.is_some_and(|t| t <= now) {
                d.events.timer_deadline_ns = None;
                if let Some(port) = d.events.virq_port(virq::TIMER) {
                    if event_channel::raise(p.mem, d.shared_info, &mut d.events, port) {
                        self.wake(d_id(i), Some(port));
                        woke = true;
                    }
                }
            }
            let d = &mut self.domains[i];
            if matches!(d.events.wait, Wait::Poll { deadline_ns: Some(t), .. } if t <= now) {
                d.vcpu.regs.rax = encode_result(Err(HypercallError::TimedOut));
                d.events.wait = Wait::None;
                self.scheduler.set_runnable(d_id(i), true);
                woke = true;
            }
        }
        woke
    }

    /// Wakes every domain a hypercall marked with `events.wake_port`.
    #[cold]
    #[inline(never)]
    pub(super) fn wake_marked(&mut self) {
        for i in 0..self.domains.len() {
            if let Some(port) = self.domains[i].events.wake_port.take() {
                self.wake(d_id(i), Some(port));
            }
        }
    }

    /// Makes a waiting domain runnable, with the result its `sched_op` returns.
    pub(super) fn wake(&mut self, id: DomainId, port: Option<u32>) {
        self.timer_dirty = true;
        let d = self.domain(id);
        let result = match core::mem::take(&mut d.events.wait) {
            Wait::None => return,
            Wait::Block => 0,
            Wait::Poll { .. } => u64::from(port.unwrap_or(0)),
        };
        d.vcpu.regs.rax = result;
        self.scheduler.set_runnable(id, true);
    }

    /// Accounts the CPU time the current domain used since its dispatch,
    /// charging the scheduler at least `min_charge_ns`.
    pub(super) fn leave_cpu(&mut self, id: DomainId, tsc: u64, min_charge_ns: u64) {
        let ran = self.time.clock.ns(tsc.saturating_sub(self.dispatched_at));
        self.domain(id).stats.cpu_ns += ran;
        self.scheduler.charge(id, ran.max(min_charge_ns));
        self.dispatched_at = tsc;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_spans_read_in_the_largest_unit() {
        assert_eq!(Span(HOUR).to_string(), "1 hour");
        assert_eq!(Span(49 * HOUR).to_string(), "2 days");
        assert_eq!(Span(u64::MAX).to_string(), "584 years");
    }
}
