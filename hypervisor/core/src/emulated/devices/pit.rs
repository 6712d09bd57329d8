//! Channel 0 of the 8254 programmable interval timer (IRQ 0).
//!
//! A kernel writes a mode byte to port 0x43 and a 16-bit reload value to
//! port 0x40 (low byte, then high byte); the counter then runs down at
//! 1.193182 MHz and raises IRQ 0 every `reload` ticks (modes 2 and 3) or
//! once (mode 0). The model keeps no counter that runs: it turns the reload
//! value into a period in nanoseconds of the hypervisor's system time and a
//! deadline, which the hypervisor's own timer honours like any other.
//! Reading the counter computes it from the time since it was loaded.

use hypercall_abi::bare_metal::PIT_HZ;

/// How bytes at port 0x40 are taken.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Access {
    /// Low byte only.
    Low,
    /// High byte only.
    High,
    /// Low byte, then high byte.
    #[default]
    LowHigh,
}

/// Channel 0.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pit {
    access: Access,
    mode: u8,
    /// The reload value being written (low byte waiting for its high byte).
    partial: Option<u8>,
    /// The reload value (0 stands for 65536).
    reload: u16,
    /// System time (ns) when counting started; `None`: not counting.
    started_ns: Option<u64>,
    /// System time (ns) of the next IRQ 0.
    deadline_ns: Option<u64>,
    /// A latched count and whether its high byte was read already.
    latched: Option<(u16, bool)>,
    /// Whether the next unlatched read returns the high byte.
    read_high: bool,
    /// Ticks that came due while an earlier one was still pending.
    pub missed: u64,
}

impl Pit {
    /// The period of one count cycle, in ns.
    pub fn period_ns(&self) -> u64 {
        let ticks = if self.reload == 0 { 65536 } else { u64::from(self.reload) };
        ticks * 1_000_000_000 / PIT_HZ
    }

    /// When IRQ 0 is next due, in system-time ns.
    pub fn deadline_ns(&self) -> Option<u64> {
        self.deadline_ns
    }

    /// A write to the mode/command port (0x43) at system time `now_ns`.
    /// Returns whether the deadline changed.
    pub fn write_command(&mut self, value: u8, now_ns: u64) -> bool {
        if value >> 6 != 0 {
            return false; // channels 1 and 2, read-back: not modelled
        }
        let access = (value >> 4) & 3;
        if access == 0 {
            // Counter latch: the count as it is now, until read.
            self.latched = Some((self.current_count_at(now_ns), false));
            return false;
        }
        self.access = match access {
            1 => Access::Low,
            2 => Access::High,
            _ => Access::LowHigh,
        };
        self.mode = (value >> 1) & 7;
        self.partial = None;
        self.read_high = false;
        // Writing the mode stops the counter until a reload value arrives.
        let changed = self.deadline_ns.is_some();
        self.deadline_ns = None;
        self.started_ns = None;
        changed
    }

    /// A write to channel 0's data port (0x40) at system time `now_ns`.
    /// Returns whether the deadline changed.
    pub fn write_data(&mut self, value: u8, now_ns: u64) -> bool {
        let reload = match (self.access, self.partial.take()) {
            (Access::Low, _) => u16::from(value),
            (Access::High, _) => u16::from(value) << 8,
            (Access::LowHigh, None) => {
                self.partial = Some(value);
                return false;
            }
            (Access::LowHigh, Some(low)) => u16::from(low) | (u16::from(value) << 8),
        };
        self.reload = reload;
        self.started_ns = Some(now_ns);
        self.deadline_ns = Some(now_ns + self.period_ns());
        true
    }

    /// A read of channel 0's data port at `now_ns`: the latched count, or
    /// the running one, a byte at a time as the access mode says.
    pub fn read_data(&mut self, now_ns: u64) -> u8 {
        if let Some((count, high_done)) = self.latched {
            return match (self.access, high_done) {
                (Access::LowHigh, false) => {
                    self.latched = Some((count, true));
                    count as u8
                }
                (Access::High, _) | (Access::LowHigh, true) => {
                    self.latched = None;
                    (count >> 8) as u8
                }
                (Access::Low, _) => {
                    self.latched = None;
                    count as u8
                }
            };
        }
        let count = self.current_count_at(now_ns);
        match self.access {
            Access::Low => count as u8,
            Access::High => (count >> 8) as u8,
            Access::LowHigh => {
                self.read_high = !self.read_high;
                if self.read_high {
                    count as u8
                } else {
                    (count >> 8) as u8
                }
            }
        }
    }

    /// Takes IRQ 0 if it is due at `now_ns`; periodic modes re-arm for the
    /// next period after `now_ns` (counting the periods skipped).
    pub fn expire(&mut self, now_ns: u64) -> bool {
        let Some(deadline) = self.deadline_ns.filter(|d| *d <= now_ns) else {
            return false;
        };
        if matches!(self.mode, 2 | 3 | 6 | 7) {
            let period = self.period_ns().max(1);
            let late = (now_ns - deadline) / period;
            self.missed += late;
            self.deadline_ns = Some(deadline + (late + 1) * period);
        } else {
            self.deadline_ns = None;
        }
        true
    }

    fn current_count_at(&self, now_ns: u64) -> u16 {
        let Some(start) = self.started_ns else { return self.reload };
        let ticks = (now_ns.saturating_sub(start) as u128 * u128::from(PIT_HZ) / 1_000_000_000) as u64;
        let cycle = if self.reload == 0 { 65536 } else { u64::from(self.reload) };
        (cycle - ticks % cycle) as u16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn periodic(hz: u64, now: u64) -> Pit {
        let mut p = Pit::default();
        p.write_command(0x34, now); // channel 0, low/high, mode 2
        let reload = (PIT_HZ / hz) as u16;
        assert!(!p.write_data(reload as u8, now));
        assert!(p.write_data((reload >> 8) as u8, now));
        p
    }

    #[test]
    fn a_hundred_hertz_is_ten_milliseconds() {
        let p = periodic(100, 1_000);
        assert_eq!(p.period_ns(), 9_999_312); // 11931 ticks
        assert_eq!(p.deadline_ns(), Some(1_000 + 9_999_312));
    }

    #[test]
    fn periodic_ticks_rearm_and_count_what_they_missed() {
        let mut p = periodic(100, 0);
        let period = p.period_ns();
        assert!(!p.expire(period - 1));
        assert!(p.expire(period));
        assert_eq!(p.deadline_ns(), Some(2 * period));
        assert!(p.expire(5 * period + 3));
        assert_eq!((p.deadline_ns(), p.missed), (Some(6 * period), 3));
    }

    #[test]
    fn one_shot_fires_once_and_a_new_mode_stops_it() {
        let mut p = Pit::default();
        p.write_command(0x30, 0); // mode 0
        p.write_data(0x10, 0);
        p.write_data(0x00, 0);
        assert!(p.expire(u64::MAX / 2));
        assert_eq!(p.deadline_ns(), None);
        let mut q = periodic(100, 0);
        assert!(q.write_command(0x34, 0));
        assert_eq!(q.deadline_ns(), None);
    }

    #[test]
    fn the_counter_runs_down_and_can_be_latched() {
        let mut p = periodic(100, 0);
        let half = p.period_ns() / 2;
        let low = p.read_data(half);
        let high = p.read_data(half);
        let count = u16::from(low) | (u16::from(high) << 8);
        assert!((5900..6020).contains(&count), "{count}");
        p.write_command(0x00, 0); // latch
        let l = p.read_data(0);
        let h = p.read_data(0);
        assert_eq!(u16::from(l) | (u16::from(h) << 8), 11931, "latched at start");
    }
}
