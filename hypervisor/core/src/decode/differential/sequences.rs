//! The random byte sequences: seeded, and biased towards the forms the
//! decoder knows.

use iced_x86::{Decoder, DecoderOptions};

/// SplitMix64: a small, well-mixed generator, so a seed names a run.
pub(super) struct SplitMix(pub(super) u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `n`.
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.below(from.len())]
    }
}

/// The legacy prefixes: operand and address size, segments, lock, rep.
const PREFIXES: &[u8] = &[0x66, 0x67, 0xf0, 0xf2, 0xf3, 0x26, 0x2e, 0x36, 0x3e, 0x64, 0x65];

/// One-byte opcodes: those of the tables and their neighbours.
const ONE_BYTE: &[u8] = &[
    0x00, 0x01, 0x02, 0x03, 0x08, 0x09, 0x0a, 0x10, 0x11, 0x18, 0x20, 0x21, 0x22, 0x28, 0x29, 0x2a, 0x30, 0x31, 0x32,
    0x38, 0x39, 0x6a, 0x6c, 0x6d, 0x6e, 0x6f, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a, 0x8b,
    0x8c, 0x8d, 0x8e, 0x8f, 0x9a, 0x9b, 0x9c, 0x9d, 0x9e, 0xa4, 0xa5, 0xa6, 0xa7, 0xaa, 0xab, 0xac, 0xad, 0xc6, 0xc7,
    0xca, 0xcb, 0xcc, 0xcd, 0xce, 0xcf, 0xe4, 0xe5, 0xe6, 0xe7, 0xea, 0xec, 0xed, 0xee, 0xef, 0xf1, 0xf4, 0xf6, 0xf7,
    0xfa, 0xfb, 0xfe, 0xff,
];

/// Second bytes after 0F: those of the tables and their neighbours.
const TWO_BYTE: &[u8] = &[
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0b, 0x0d, 0x10, 0x11, 0x12, 0x13, 0x16, 0x17, 0x18,
    0x1f, 0x20, 0x21, 0x22, 0x23, 0x24, 0x26, 0x28, 0x29, 0x2b, 0x30, 0x31, 0x32, 0x33, 0x34, 0x35, 0x6f, 0x7e, 0x7f,
    0xa2, 0xa3, 0xae, 0xb0, 0xb1, 0xb2, 0xb3, 0xc3, 0xc7, 0xd6, 0xe7,
];

/// A byte sequence longer than any instruction (so a decoder that reads
/// past 15 bytes shows), biased towards the forms the decoder knows.
pub(super) fn sequence(rng: &mut SplitMix) -> [u8; 24] {
    let mut random = || {
        let mut bytes = [0u8; 24];
        for chunk in bytes.chunks_mut(8) {
            chunk.copy_from_slice(&rng.next().to_le_bytes()[..chunk.len()]);
        }
        bytes
    };
    let (out, mut body) = (random(), random());
    if rng.below(20) == 0 {
        return out; // uniform bytes
    }
    // The instruction after its legacy prefixes: REX, opcode, ModRM, and
    // random bytes for the SIB, displacement and immediate.
    let mut at = 0;
    if rng.below(2) == 0 {
        body[at] = 0x40 | rng.below(16) as u8;
        at += 1;
    }
    match rng.below(20) {
        0..=7 => {
            body[at] = rng.pick(ONE_BYTE);
            at += 1;
        }
        8..=16 => {
            body[at] = 0x0f;
            body[at + 1] = if rng.below(8) == 0 { rng.next() as u8 } else { rng.pick(TWO_BYTE) };
            at += 2;
        }
        17 => {
            // 0F 01 with mod = 11: whole instructions (swapgs, rdtscp...).
            body[at..at + 3].copy_from_slice(&[0x0f, 0x01, 0xc0 | rng.next() as u8]);
            return with_prefixes(rng, out, body);
        }
        _ => at += 1, // a random opcode byte
    }
    if rng.below(4) != 0 {
        // ModRM: every mod; rm 100 (a SIB follows) and 101 (no base or RIP-relative) often.
        let rm = match rng.below(8) {
            0..=1 => 4,
            2..=3 => 5,
            _ => rng.below(8) as u8,
        };
        body[at] = (rng.below(4) as u8) << 6 | (rng.below(8) as u8) << 3 | rm;
        if rm == 4 && rng.below(2) == 0 {
            // SIB with no index (100) or no base (101 with mod 00).
            let sib = body[at + 1];
            body[at + 1] = if rng.below(2) == 0 { sib & !0x38 | 0x20 } else { sib & !0x07 | 0x05 };
        }
    }
    with_prefixes(rng, out, body)
}

/// `body` after legacy prefixes, in `out` (whose tail stays random).
fn with_prefixes(rng: &mut SplitMix, mut out: [u8; 24], body: [u8; 24]) -> [u8; 24] {
    let filler = rng.pick(PREFIXES);
    let (prefixes, padded) = if rng.below(8) == 0 {
        // Padded to within a byte of the 15-byte limit, either side, with
        // one prefix repeated (a mix would nearly always hold one the
        // decoder refuses, and the limit would go untested).
        let len = Decoder::new(64, &body, DecoderOptions::NONE).decode().len();
        ((14 + rng.below(3)).saturating_sub(len), true)
    } else {
        let n = match rng.below(16) {
            0..=7 => 0,
            8..=11 => 1,
            12..=14 => 2,
            _ => 3 + rng.below(3),
        };
        (n, false)
    };
    for byte in &mut out[..prefixes] {
        *byte = if padded { filler } else { rng.pick(PREFIXES) };
    }
    out[prefixes..].copy_from_slice(&body[..24 - prefixes]);
    out
}
