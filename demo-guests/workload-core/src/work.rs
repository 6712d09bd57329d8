//! The arithmetic of the operations, computed twice: by the user programs
//! (inlined into `.user_text`) and by the kernel, which checks their
//! results against its own.
//!
//! Everything is `#[inline(always)]`, wrapping and free of constants that
//! would land in `.rodata`, so user code can use it (see
//! [`user`](crate::user)).

/// Inner steps of one `compute` round.
pub const COMPUTE_STEPS: u64 = 1000;

/// Where the `compute` state starts.
pub const COMPUTE_SEED: u64 = 0x2545_f491_4f6c_dd1d;

/// Pages each round of the `mmap` operation maps.
pub const MMAP_ROUND_PAGES: u64 = 4;

/// Pages each round of the `app` operation maps and fills.
pub const APP_PAGES: u64 = 4;

/// `compute` rounds an `app` round does per page: with [`APP_PAGES`] pages,
/// 16 rounds of [`COMPUTE_STEPS`] steps (about 200,000 instructions) for
/// seven kernel entries (`mmap`, four demand-zero faults, `getpid`,
/// `munmap`), one entry per ~30,000 instructions of user work.
pub const APP_ROUNDS_PER_PAGE: u64 = 4;

/// A bijective scramble of 64 bits (the finaliser of SplitMix64): what a
/// `fork` child computes from the value it inherited.
#[inline(always)]
pub fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Folds `value` into a running checksum (order-sensitive, FNV-1a style).
#[inline(always)]
pub fn fold(acc: u64, value: u64) -> u64 {
    (acc ^ value).wrapping_mul(0x0000_0100_0000_01b3)
}

/// One round of `compute`: [`COMPUTE_STEPS`] xorshift steps.
#[inline(always)]
pub fn compute_round(mut state: u64) -> u64 {
    let mut step = 0;
    while step < COMPUTE_STEPS {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state = state.wrapping_add(step);
        step += 1;
    }
    state
}

/// What the `fork` parent's checksum must be after `n` children.
pub fn expected_fork(n: u64) -> u64 {
    (0..n).fold(0, |acc, i| fold(acc, mix(i)))
}

/// What `compute` must end with after `n` rounds.
pub fn expected_compute(n: u64) -> u64 {
    (0..n).fold(COMPUTE_SEED, |state, _| compute_round(state))
}

/// The work an `app` round does for each of its pages:
/// [`APP_ROUNDS_PER_PAGE`] `compute` rounds.
#[inline(always)]
pub fn app_page(mut state: u64) -> u64 {
    let mut round = 0;
    while round < APP_ROUNDS_PER_PAGE {
        state = compute_round(state);
        round += 1;
    }
    state
}

/// What `app` must end with after `n` rounds, run by process `pid`.
/// (The user program does the same with its pages and system calls in
/// between: [`app_page`] per page, then the `getpid` result folded in.)
pub fn expected_app(n: u64, pid: u64) -> u64 {
    (0..n).fold(COMPUTE_SEED, |state, _| fold((0..APP_PAGES).fold(state, |state, _| app_page(state)), pid))
}

/// The sum `0 + 1 + ... + (count - 1)`, wrapping.
pub fn sum_below(count: u64) -> u64 {
    let (a, b) = if count.is_multiple_of(2) { (count / 2, count.wrapping_sub(1)) } else { (count, (count.wrapping_sub(1)) / 2) };
    a.wrapping_mul(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sum_below_is_the_triangle_number() {
        for count in 0..100u64 {
            assert_eq!(sum_below(count), (0..count).sum::<u64>(), "{count}");
        }
    }

    #[test]
    fn mix_scrambles_and_fold_depends_on_order() {
        assert_ne!(mix(1), mix(2));
        assert_eq!(mix(0), 0);
        assert_ne!(fold(fold(0, 1), 2), fold(fold(0, 2), 1));
    }

    #[test]
    fn compute_is_deterministic() {
        assert_eq!(expected_compute(3), compute_round(compute_round(compute_round(COMPUTE_SEED))));
        assert_ne!(expected_compute(1), COMPUTE_SEED);
    }
}
