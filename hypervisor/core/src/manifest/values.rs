//! The value types of the manifest: memory sizes, time spans and how a
//! domain is expected to end, each with the one-line parse errors a person
//! sees.

use super::{GIB, KIB, MIB};
use alloc::format;
use hypercall_abi::PAGE_SIZE;
use core::fmt;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A size in bytes, written in a manifest as `"2M"`, `"512K"`, `"1G"` or an
/// integer number of bytes.
///
/// Suffixes are binary (K = 1024). `KiB`, `MiB` and `GiB` are accepted too,
/// in either case. Its [`Display`](fmt::Display) uses the largest suffix that
/// is exact, so a printed size reads back as the same size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MemorySize(pub u64);

impl MemorySize {
    /// The size in bytes.
    pub const fn bytes(self) -> u64 {
        self.0
    }

    /// Number of whole 4 KiB pages.
    pub const fn pages(self) -> u64 {
        self.0 / PAGE_SIZE
    }

    /// Parses `"2M"`, `"512K"`, `"1G"`, `"2MiB"` or `"4096"`.
    pub fn parse(text: &str) -> Result<MemorySize, MemorySizeError> {
        let trimmed = text.trim();
        let digits_end = trimmed.find(|c: char| !c.is_ascii_digit()).unwrap_or(trimmed.len());
        let (digits, suffix) = trimmed.split_at(digits_end);
        if digits.is_empty() {
            return Err(MemorySizeError::NotANumber);
        }
        let unit = match suffix.trim_start().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kib" => KIB,
            "m" | "mib" => MIB,
            "g" | "gib" => GIB,
            _ => return Err(MemorySizeError::BadSuffix),
        };
        let value: u64 = digits.parse().map_err(|_| MemorySizeError::TooLarge)?;
        value.checked_mul(unit).map(MemorySize).ok_or(MemorySizeError::TooLarge)
    }
}

impl fmt::Display for MemorySize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.0;
        if bytes == 0 {
            return f.write_str("0");
        }
        for (unit, suffix) in [(GIB, "G"), (MIB, "M"), (KIB, "K")] {
            if bytes.is_multiple_of(unit) {
                return write!(f, "{}{}", bytes / unit, suffix);
            }
        }
        write!(f, "{bytes}")
    }
}

/// Why a memory size string was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemorySizeError {
    /// It does not start with a decimal number.
    NotANumber,
    /// The suffix is not K, M, G (or KiB, MiB, GiB).
    BadSuffix,
    /// The size does not fit in 64 bits.
    TooLarge,
}

impl fmt::Display for MemorySizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MemorySizeError::NotANumber => "it does not start with a number",
            MemorySizeError::BadSuffix => "the suffix is not K, M or G",
            MemorySizeError::TooLarge => "it does not fit in 64 bits",
        })
    }
}

impl<'de> Deserialize<'de> for MemorySize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = MemorySize;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a memory size such as \"2M\", \"512K\", \"1G\" or a number of bytes")
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<MemorySize, E> {
                Ok(MemorySize(v))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<MemorySize, E> {
                u64::try_from(v).map(MemorySize).map_err(|_| E::custom(format!("memory size {v} is negative")))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<MemorySize, E> {
                MemorySize::parse(v).map_err(|e| {
                    E::custom(format!(
                        "invalid memory size \"{}\": {e} (write e.g. \"2M\", \"512K\", \"1G\" or a number of bytes)",
                        v.escape_debug()
                    ))
                })
            }
        }
        deserializer.deserialize_any(SizeVisitor)
    }
}

impl Serialize for MemorySize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.0.is_multiple_of(KIB) && self.0 != 0 {
            serializer.collect_str(self)
        } else {
            serializer.serialize_u64(self.0)
        }
    }
}

/// How a domain is expected to end; the hypervisor's final summary compares
/// every domain's end with this, and QEMU exits with success only if all match.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Expect {
    /// The domain calls `exit` with this status. The default is `Exit(0)`.
    Exit(u64),
    /// The domain is stopped by the hypervisor after a fault (a demo of fault
    /// isolation). Written `expect = "crash"`.
    Crash,
    /// The domain is stopped by the hypervisor when it has used its
    /// `time_limit` of CPU time (a demo of a guest that never yields).
    /// Written `expect = "time-limit"`.
    TimeLimit,
}

impl Default for Expect {
    fn default() -> Self {
        Expect::Exit(0)
    }
}

impl Expect {
    /// Whether a domain that called `exit(status)` met this expectation.
    pub fn met_by_exit(self, status: u64) -> bool {
        self == Expect::Exit(status)
    }

    /// Whether a domain that crashed met this expectation.
    pub fn met_by_crash(self) -> bool {
        self == Expect::Crash
    }
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expect::Exit(status) => write!(f, "exit {status}"),
            Expect::Crash => f.write_str("crash"),
            Expect::TimeLimit => f.write_str("time-limit"),
        }
    }
}

impl<'de> Deserialize<'de> for Expect {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ExpectVisitor;
        impl Visitor<'_> for ExpectVisitor {
            type Value = Expect;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an exit status (a non-negative integer), \"crash\" or \"time-limit\"")
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Expect, E> {
                Ok(Expect::Exit(v))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Expect, E> {
                u64::try_from(v).map(Expect::Exit).map_err(|_| {
                    E::custom(format!("exit status {v} is negative: expected an exit status or \"crash\""))
                })
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Expect, E> {
                if v == "crash" {
                    Ok(Expect::Crash)
                } else if v == "time-limit" {
                    Ok(Expect::TimeLimit)
                } else {
                    Err(E::custom(format!(
                        "\"{}\" is not an expectation: expected an exit status, \"crash\" or \"time-limit\"",
                        v.escape_debug()
                    )))
                }
            }
        }
        deserializer.deserialize_any(ExpectVisitor)
    }
}

impl Serialize for Expect {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Expect::Exit(status) => serializer.serialize_u64(*status),
            Expect::Crash => serializer.serialize_str("crash"),
            Expect::TimeLimit => serializer.serialize_str("time-limit"),
        }
    }
}

/// A span of time from the manifest: `"250ms"`, `"2s"`, or an integer
/// number of milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeSpan(pub u64);

impl TimeSpan {
    /// The span in nanoseconds.
    pub fn ns(self) -> u64 {
        self.0
    }

    /// Parses `"250ms"`, `"2s"` or `"1500"` (milliseconds): decimal digits
    /// and the unit, nothing else: a space or a sign is refused, not
    /// guessed at.
    pub fn parse(text: &str) -> Option<TimeSpan> {
        let (digits, unit) = if let Some(d) = text.strip_suffix("ms") {
            (d, 1_000_000)
        } else if let Some(d) = text.strip_suffix('s') {
            (d, 1_000_000_000)
        } else {
            (text, 1_000_000)
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse::<u64>().ok()?.checked_mul(unit).map(TimeSpan)
    }
}

impl fmt::Display for TimeSpan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_multiple_of(1_000_000_000) {
            write!(f, "{}s", self.0 / 1_000_000_000)
        } else {
            write!(f, "{}ms", self.0 / 1_000_000)
        }
    }
}

impl<'de> Deserialize<'de> for TimeSpan {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SpanVisitor;
        impl Visitor<'_> for SpanVisitor {
            type Value = TimeSpan;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a time such as \"500ms\" or \"2s\", or a number of milliseconds")
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<TimeSpan, E> {
                v.checked_mul(1_000_000).map(TimeSpan).ok_or_else(|| E::custom("time too long"))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<TimeSpan, E> {
                u64::try_from(v).map_err(|_| E::custom("a time cannot be negative")).and_then(|v| self.visit_u64(v))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<TimeSpan, E> {
                TimeSpan::parse(v).ok_or_else(|| {
                    E::custom(format!("\"{}\" is not a time: write it like \"500ms\" or \"2s\"", v.escape_debug()))
                })
            }
        }
        deserializer.deserialize_any(SpanVisitor)
    }
}

impl Serialize for TimeSpan {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&alloc::format!("{self}"))
    }
}
