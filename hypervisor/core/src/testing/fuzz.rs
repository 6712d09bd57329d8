//! Seeded, replayable fuzzing for the host tests.
//!
//! [`run`] checks a property on many generated inputs ("cases"). Each case
//! draws from its own [`Rng`], derived from the run's seed and the case's
//! number, so any single case can be replayed alone. The seed is
//! [`DEFAULT_SEED`] (so that the test command judges the same inputs on
//! every run, as the other fuzzers do) unless `PARVUS_FUZZ_SEED` gives one,
//! or `PARVUS_FUZZ_SEED=random` asks for a new one (a longer exploring
//! run, which prints the seed it drew); a failure, whether a panic of the
//! property or a case that does not finish, names the seed, the case and
//! the command that replays exactly that case:
//!
//! ```text
//! PARVUS_FUZZ_SEED=0x1234 PARVUS_FUZZ_CASE=5678 cargo test -p parvus-core fuzz_manifest
//! ```
//!
//! `PARVUS_FUZZ_CASES=n` runs `n` cases instead of the test's own number
//! (a longer nightly run, say). Every run prints its seed, its count and
//! its wall time (`cargo test ... -- --nocapture` shows them).

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A case that takes longer than this is taken to hang.
const HANG_AFTER: Duration = Duration::from_secs(20);

/// SplitMix64: small, fast, and good enough to drive generators.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// The generator of case `case` of a run seeded with `seed`.
    pub fn for_case(seed: u64, case: u64) -> Rng {
        let mut rng = Rng(seed ^ case.wrapping_mul(0xd1b5_4a32_d192_ed03));
        rng.next_u64();
        rng
    }

    /// 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
        }
    }

    /// An index into something of length `len` (at least 1).
    pub fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }

    /// True `n` times in `d`.
    pub fn chance(&mut self, n: u64, d: u64) -> bool {
        self.below(d) < n
    }

    /// One of `items`.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.index(items.len())]
    }
}

/// The seed of the test command's runs.
pub const DEFAULT_SEED: u64 = 0x5061_7276_7573_0011;

/// A number from `PARVUS_FUZZ_<name>` (decimal, or hex with `0x`).
pub fn from_env(name: &str) -> Option<u64> {
    let text = std::env::var(format!("PARVUS_FUZZ_{name}")).ok()?;
    let text = text.trim();
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("PARVUS_FUZZ_{name}={text:?} is not a number")))
}

/// The run's seed: `PARVUS_FUZZ_SEED`, a fresh one if it says `random`,
/// else [`DEFAULT_SEED`].
pub fn seed() -> u64 {
    match std::env::var("PARVUS_FUZZ_SEED").as_deref().map(str::trim) {
        Ok("random") => fresh_seed(),
        _ => from_env("SEED").unwrap_or(DEFAULT_SEED),
    }
}

/// A fresh seed: the clock's nanoseconds, mixed.
fn fresh_seed() -> u64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    Rng::for_case(nanos as u64, u64::from(std::process::id())).next_u64()
}

/// Checks `property` on `cases` generated cases (see the module's
/// documentation), on a thread watched for hangs. `test` is the test's
/// name, for the replay command. Returns the number of cases run.
pub fn run(test: &str, cases: u64, property: fn(&mut Rng)) -> u64 {
    let seed = seed();
    let only = from_env("CASE");
    let cases = from_env("CASES").unwrap_or(cases);
    let replay =
        |case: u64| format!("PARVUS_FUZZ_SEED={seed:#x} PARVUS_FUZZ_CASE={case} cargo test -p parvus-core {test}");
    let started = Instant::now();
    let current = Arc::new(AtomicU64::new(only.unwrap_or(0)));
    let done = Arc::new(AtomicBool::new(false));
    let worker = {
        let (current, done) = (Arc::clone(&current), Arc::clone(&done));
        std::thread::spawn(move || {
            let range = only.map_or(0..cases, |case| case..case + 1);
            for case in range {
                current.store(case, Ordering::Relaxed);
                let mut rng = Rng::for_case(seed, case);
                if panic::catch_unwind(AssertUnwindSafe(|| property(&mut rng))).is_err() {
                    return Err(case);
                }
            }
            done.store(true, Ordering::Release);
            Ok(())
        })
    };
    // Watch: the case number must move at least every HANG_AFTER.
    let (mut seen, mut since) = (u64::MAX, Instant::now());
    while !worker.is_finished() {
        std::thread::sleep(Duration::from_millis(10));
        let now = current.load(Ordering::Relaxed);
        if now != seen {
            (seen, since) = (now, Instant::now());
        } else if since.elapsed() > HANG_AFTER && !done.load(Ordering::Acquire) {
            panic!(
                "{test}: case {now} (seed {seed:#x}) has not finished after {HANG_AFTER:?}; replay: {}",
                replay(now)
            );
        }
    }
    match worker.join().expect("the fuzz worker catches the property's panics") {
        Ok(()) => {
            let ran = if only.is_some() { 1 } else { cases };
            println!("{test}: {ran} cases, seed {seed:#x}, {:.2} s", started.elapsed().as_secs_f64());
            ran
        }
        Err(case) => panic!("{test}: case {case} failed (seed {seed:#x}, panic above); replay: {}", replay(case)),
    }
}
