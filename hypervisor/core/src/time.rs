//! Time from the TSC: a multiply and a shift, as Xen's guests compute it.
//!
//! The hypervisor measures the TSC's rate once at boot (against the PIT)
//! and from then on turns TSC readings into nanoseconds with
//! `ns = ((tsc << shift) * mul) >> 32` (a right shift when `shift` is
//! negative), exact enough and without a division. The same two numbers go
//! to guests, so they can read the time without a hypercall.

/// Where system time starts: the TSC at boot, its rate and the wall clock then.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeBase {
    /// TSC ticks to nanoseconds.
    pub clock: TscClock,
    /// TSC value at system time 0.
    pub boot_tsc: u64,
    /// Seconds since the Unix epoch at system time 0 (0 if unknown).
    pub wall_clock_sec: u64,
}

impl TimeBase {
    /// System time (nanoseconds since boot) at TSC value `tsc`.
    pub fn now_ns(&self, tsc: u64) -> u64 {
        self.clock.ns(tsc.saturating_sub(self.boot_tsc))
    }

    /// The TSC value at which system time reaches `ns` (see [`TscClock::ticks`]).
    pub fn tsc_at(&self, ns: u64) -> u64 {
        self.boot_tsc.saturating_add(self.clock.ticks(ns))
    }
}

impl Default for TimeBase {
    /// A 1 GHz clock from TSC 0 (tests).
    fn default() -> Self {
        TimeBase { clock: TscClock::new(1_000_000_000), boot_tsc: 0, wall_clock_sec: 0 }
    }
}

/// Multiplying by a ratio without dividing: `((x << shift) * mul) >> 32`
/// (a right shift when `shift` is negative). This is how Xen's guests scale
/// TSC deltas, and how the hypervisor converts between its clocks on hot
/// paths (a 128-bit division costs a hundred instructions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scale {
    /// Multiplier, a 32.32 fixed-point fraction.
    pub mul: u32,
    /// Shift applied before multiplying.
    pub shift: i8,
}

impl Scale {
    /// The scale closest to `num / den` (both non-zero).
    pub fn new(num: u64, den: u64) -> Self {
        let (num, den) = (u128::from(num.max(1)), u128::from(den.max(1)));
        let mul_for = |shift: i8| {
            let scaled = if shift >= 0 { den << shift } else { den >> -shift };
            (num << 32) / scaled.max(1)
        };
        let mut shift = 0i8;
        while shift < 63 && mul_for(shift) > u128::from(u32::MAX) {
            shift += 1;
        }
        while shift > -63 && mul_for(shift - 1) <= u128::from(u32::MAX) {
            shift -= 1;
        }
        Scale { mul: mul_for(shift).min(u128::from(u32::MAX)) as u32, shift }
    }

    /// This ratio made larger by at least 2^-29 of itself: what [`Self::new`]
    /// gives is exact to 2^-31 and rounds down, and a conversion that must
    /// never come short needs more than that (see [`TscClock::ticks`]).
    fn enlarged(self) -> Scale {
        // `mul` is at least 2^31 (`new` uses all 32 bits), so this is at least 2^-29 of it.
        let bump = (self.mul >> 29) + 1;
        match self.mul.checked_add(bump) {
            Some(mul) => Scale { mul, shift: self.shift },
            // Past 32 bits: the same ratio with one more bit of shift.
            None => Scale { mul: ((u64::from(self.mul) + u64::from(bump)).div_ceil(2)) as u32, shift: self.shift + 1 },
        }
    }

    /// `x` times the ratio.
    #[inline]
    pub fn apply(self, x: u64) -> u64 {
        let t = u128::from(x);
        let t = if self.shift >= 0 { t << self.shift } else { t >> -self.shift };
        u64::try_from((t * u128::from(self.mul)) >> 32).unwrap_or(u64::MAX)
    }
}

/// Converts TSC ticks to nanoseconds and back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TscClock {
    /// TSC ticks per second.
    pub tsc_hz: u64,
    /// Multiplier of ticks -> nanoseconds (the one guests get).
    pub mul: u32,
    /// Shift of ticks -> nanoseconds.
    pub shift: i8,
    /// Nanoseconds -> ticks, enlarged (see [`Self::ticks`]).
    to_ticks: Scale,
    /// Ticks [`Self::ticks`] adds for the roundings: two nanoseconds' worth
    /// (at least one tick) and four.
    margin: u64,
}

/// Nanoseconds in a second.
pub const NS_PER_S: u64 = 1_000_000_000;

impl TscClock {
    /// The clock of a TSC running at `tsc_hz` (at least 1 kHz).
    pub fn new(tsc_hz: u64) -> Self {
        let tsc_hz = tsc_hz.max(1000);
        let to_ns = Scale::new(NS_PER_S, tsc_hz);
        let margin = tsc_hz.saturating_mul(2).div_ceil(NS_PER_S) + 4;
        TscClock { tsc_hz, mul: to_ns.mul, shift: to_ns.shift, to_ticks: Scale::new(tsc_hz, NS_PER_S).enlarged(), margin }
    }

    /// Nanoseconds in `ticks` TSC ticks.
    #[inline]
    pub fn ns(&self, ticks: u64) -> u64 {
        Scale { mul: self.mul, shift: self.shift }.apply(ticks)
    }

    /// The TSC ticks after which [`Self::ns`] counts at least `ns`
    /// nanoseconds: a timer armed that far ahead finds its deadline
    /// reached, never short of it, and only a few ticks past it.
    ///
    /// The two scales are not exact inverses: their multipliers are exact
    /// to 2^-31 each and both round down, so converting `ns` to ticks and
    /// back could come out short by up to `ns * 2^-30` nanoseconds plus the
    /// floors (two ticks and two nanoseconds): for a deadline a year ahead,
    /// some ten milliseconds. A platform timer armed there would fire
    /// before the deadline, find nothing due, and be armed at once for the
    /// same past instant, again and again until the TSC caught up. The
    /// scale to ticks is therefore enlarged by 2^-29, and a margin
    /// (`margin`: two nanoseconds' worth of ticks, at least one, and four)
    /// is added, which covers every one of those errors (the test
    /// `a_deadline_armed_in_ticks_is_reached_there` checks the bound from a
    /// nanosecond to centuries at usual rates). Both are computed once,
    /// with the clock: a conversion costs what it did with a single tick
    /// added, but for reading the margin (two instructions on `set_timer`).
    #[inline]
    pub fn ticks(&self, ns: u64) -> u64 {
        let ticks = self.to_ticks.apply(ns).saturating_add(self.margin);
        debug_assert!(self.ns(ticks) >= ns || ticks == u64::MAX, "{ns} ns armed short at {ticks} ticks");
        ticks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_are_close_for_usual_rates() {
        for hz in [1_000_000_000u64, 2_400_000_000, 3_000_000_000, 100_000_000, 12_345_678] {
            let c = TscClock::new(hz);
            let one_second = c.ns(hz);
            assert!((999_999_000..=1_000_000_001).contains(&one_second), "{hz}: {one_second} {c:?}");
            let t = c.ticks(10_000_000);
            assert!((hz / 100..=hz / 100 + 12).contains(&t), "{hz}: {t}");
        }
    }

    /// At the TSC a deadline is armed for, the deadline has been reached,
    /// from a nanosecond to centuries ahead, and not long before. (With one
    /// tick for a margin, every rate but 1 GHz armed short somewhere; a year
    /// ahead, by some ten milliseconds.)
    #[test]
    fn a_deadline_armed_in_ticks_is_reached_there() {
        for hz in [1_000_000_000u64, 2_400_000_000, 3_000_000_000, 100_000_000, 12_345_678, 2_894_561_234, 4_000_000_001, 1_999_999_999] {
            let c = TscClock::new(hz);
            let mut span = 1u64;
            while span < u64::MAX / 4 {
                for ns in [span, span + 1, span + 999, span + 12_345] {
                    let t = c.ticks(ns);
                    assert!(c.ns(t) >= ns, "{hz} Hz: {ns} ns armed at {t} ticks, which count {} ns", c.ns(t));
                    // Late by no more than the margin and the enlargement.
                    let early = t.saturating_sub((t >> 28) + c.margin + 2);
                    assert!(c.ns(early) < ns, "{hz} Hz: {ns} ns armed at {t} ticks, far past it");
                }
                span = span * 3 / 2 + 1;
            }
        }
    }
}
