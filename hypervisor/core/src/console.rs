//! Guest console output: the per-domain line buffer and the console ring.
//!
//! Bytes a guest writes (by `console_write` or through its
//! [`ConsoleRing`](hypercall_abi::ConsoleRing)) are collected per domain and
//! printed a whole line at a time as `[name] text`, so lines of different
//! domains never mix. Control characters other than tab are shown as `?`.

use crate::machine_memory::MachineMemory;
use alloc::string::String;
use hypercall_abi::console::{CONSOLE_OUT_SIZE, OUT_CONS_OFFSET, OUT_OFFSET, OUT_PROD_OFFSET};

/// Where finished lines go (the serial port in the kernel, a `String` in tests).
pub trait ConsoleSink {
    /// Prints one whole line, `[prefix] text`, with its newline.
    fn line(&mut self, prefix: &str, text: &str);
}

impl ConsoleSink for String {
    fn line(&mut self, prefix: &str, text: &str) {
        self.push('[');
        self.push_str(prefix);
        self.push_str("] ");
        self.push_str(text);
        self.push('\n');
    }
}

/// Longest line printed in one piece; longer ones are split.
pub const MAX_LINE: usize = 200;

/// Bytes of a line not yet ended: a fixed buffer inside the domain, so
/// that a guest's output costs the hypervisor no heap.
#[derive(Clone, Debug, Default)]
pub struct LineBuffer {
    pending: heapless::Vec<u8, MAX_LINE>,
}

impl LineBuffer {
    /// Adds bytes, printing every line they complete.
    pub fn push(&mut self, bytes: &[u8], name: &str, sink: &mut impl ConsoleSink) {
        for &b in bytes {
            match b {
                b'\n' => self.flush(name, sink),
                b'\r' => {}
                _ => {
                    // Never full here: a full buffer is printed at once.
                    let _ = self.pending.push(b);
                    if self.pending.is_full() {
                        self.flush(name, sink);
                    }
                }
            }
        }
    }

    /// Prints what is pending as a line, if anything is: invalid UTF-8
    /// shown as U+FFFD (as `String::from_utf8_lossy` would) and control
    /// characters other than tab as `?`.
    pub fn flush(&mut self, name: &str, sink: &mut impl ConsoleSink) {
        if self.pending.is_empty() {
            return;
        }
        // Each byte becomes at most 3 (a U+FFFD per invalid byte).
        let mut text = heapless::String::<{ 3 * MAX_LINE }>::new();
        for chunk in self.pending.utf8_chunks() {
            for c in chunk.valid().chars() {
                let _ = text.push(if c.is_control() && c != '\t' { '?' } else { c });
            }
            if !chunk.invalid().is_empty() {
                let _ = text.push(char::REPLACEMENT_CHARACTER);
            }
        }
        sink.line(name, &text);
        self.pending.clear();
    }
}

/// Empties a domain's console ring at machine address `ring` into `out`.
///
/// The indexes are the guest's to corrupt: a producer more than a ring's
/// length ahead of the consumer drains nothing and resynchronises the
/// consumer, so a hostile guest can lose its own output but nothing else.
/// Returns the number of bytes taken.
pub fn drain_ring(mem: &mut impl MachineMemory, ring: u64, out: &mut LineBuffer, name: &str, sink: &mut impl ConsoleSink) -> usize {
    let prod = mem.read_u32(ring + OUT_PROD_OFFSET as u64);
    let cons = mem.read_u32(ring + OUT_CONS_OFFSET as u64);
    let waiting = prod.wrapping_sub(cons) as usize;
    if waiting == 0 {
        return 0;
    }
    if waiting > CONSOLE_OUT_SIZE {
        mem.write_u32(ring + OUT_CONS_OFFSET as u64, prod);
        return 0;
    }
    let mut bytes = [0u8; CONSOLE_OUT_SIZE];
    let start = cons as usize % CONSOLE_OUT_SIZE;
    let first = waiting.min(CONSOLE_OUT_SIZE - start);
    mem.read(ring + (OUT_OFFSET + start) as u64, &mut bytes[..first]);
    mem.read(ring + OUT_OFFSET as u64, &mut bytes[first..waiting]);
    mem.write_u32(ring + OUT_CONS_OFFSET as u64, prod);
    out.push(&bytes[..waiting], name, sink);
    waiting
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine_memory::TestMemory;

    #[test]
    fn lines_are_prefixed_and_split() {
        let mut out = String::new();
        let mut lb = LineBuffer::default();
        lb.push(b"one\ntw", "d", &mut out);
        assert_eq!(out, "[d] one\n");
        lb.push(b"o\r\n\x07x", "d", &mut out);
        lb.flush("d", &mut out);
        assert_eq!(out, "[d] one\n[d] two\n[d] ?x\n");
        out.clear();
        lb.push(b"\xff\xfe caf\xc3\xa9 \xe2\x82", "d", &mut out);
        lb.flush("d", &mut out);
        assert_eq!(out, "[d] \u{fffd}\u{fffd} caf\u{e9} \u{fffd}\n", "as String::from_utf8_lossy shows it");
        out.clear();
        let invalid = [0xffu8; MAX_LINE];
        lb.push(&invalid, "d", &mut out);
        assert_eq!(out.chars().filter(|c| *c == char::REPLACEMENT_CHARACTER).count(), MAX_LINE, "the longest text fits");
        out.clear();
        lb.push(&[b'a'; MAX_LINE + 1], "d", &mut out);
        assert_eq!(out.lines().count(), 1);
    }

    #[test]
    fn ring_drains_with_wraparound_and_survives_garbage() {
        let mut mem = TestMemory::new(1);
        let mut out = String::new();
        let mut lb = LineBuffer::default();
        // Producer at 2^32 + 3 (wrapped), consumer 5 bytes earlier.
        let cons = u32::MAX - 1;
        let prod = cons.wrapping_add(5);
        mem.write_u32(OUT_PROD_OFFSET as u64, prod);
        mem.write_u32(OUT_CONS_OFFSET as u64, cons);
        let start = cons as usize % CONSOLE_OUT_SIZE;
        let text = b"hey!\n";
        for (i, b) in text.iter().enumerate() {
            mem.write((OUT_OFFSET + (start + i) % CONSOLE_OUT_SIZE) as u64, &[*b]);
        }
        assert_eq!(drain_ring(&mut mem, 0, &mut lb, "g", &mut out), 5);
        assert_eq!(out, "[g] hey!\n");
        assert_eq!(mem.read_u32(OUT_CONS_OFFSET as u64), prod);
        // A producer far ahead is ignored and the consumer resynchronised.
        mem.write_u32(OUT_PROD_OFFSET as u64, prod.wrapping_add(100_000));
        assert_eq!(drain_ring(&mut mem, 0, &mut lb, "g", &mut out), 0);
        assert_eq!(mem.read_u32(OUT_CONS_OFFSET as u64), prod.wrapping_add(100_000));
    }
}
