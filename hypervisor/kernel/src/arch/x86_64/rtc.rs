//! The CMOS real-time clock, read once at boot for the wall-clock time.

use x86_64::instructions::port::Port;

fn read(reg: u8) -> u8 {
    // SAFETY: ports 0x70/0x71 are the CMOS index and data registers; bit 7
    // of the index (NMI disable) is left clear, and only this module uses them.
    unsafe {
        Port::<u8>::new(0x70).write(reg);
        Port::<u8>::new(0x71).read()
    }
}

fn update_in_progress() -> bool {
    read(0x0a) & 0x80 != 0
}

/// Seconds since 1970-01-01 00:00 UTC, or `None` if the clock reads nonsense.
pub fn unix_time() -> Option<u64> {
    let mut spins = 0;
    while update_in_progress() {
        spins += 1;
        if spins > 1_000_000 {
            return None;
        }
    }
    let binary = read(0x0b) & 0x04 != 0;
    let h24 = read(0x0b) & 0x02 != 0;
    let decode = |v: u8| if binary { u64::from(v) } else { u64::from((v >> 4) * 10 + (v & 0x0f)) };
    let sec = decode(read(0x00));
    let min = decode(read(0x02));
    let hour_raw = read(0x04);
    let mut hour = decode(hour_raw & 0x7f);
    if !h24 {
        // 12-hour mode: 12 AM is hour 0, 12 PM is hour 12.
        hour = hour % 12 + if hour_raw & 0x80 != 0 { 12 } else { 0 };
    }
    let day = decode(read(0x07));
    let month = decode(read(0x08));
    let year = 2000 + decode(read(0x09));
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + min * 60 + sec)
}

/// Days from 1970-01-01 to the given date (proleptic Gregorian calendar),
/// after Howard Hinnant's well-known algorithm.
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}
