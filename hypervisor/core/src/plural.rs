//! Counts in messages, with the noun in the number it takes: `1 domain`,
//! `5 domains`, `0 domains`. Every line the hypervisor and `cargo xtask`
//! print with a count of things goes through [`count`], so none says
//! `1 domains`.

use core::fmt;

/// A number of things: `n` followed by `one` or `many`; see [`count`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Count<'a, N> {
    n: N,
    one: &'a str,
    many: &'a str,
}

/// `n` things, displayed as `1 domain` or `2 domains`: `one` is the
/// singular, `many` the plural (given whole, so `entry`/`entries` works).
/// `n` is any unsigned integer type.
pub fn count<'a, N: fmt::Display + PartialEq + From<u8>>(n: N, one: &'a str, many: &'a str) -> Count<'a, N> {
    Count { n, one, many }
}

impl<N: fmt::Display + PartialEq + From<u8>> fmt::Display for Count<'_, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let noun = if self.n == N::from(1) { self.one } else { self.many };
        write!(f, "{} {noun}", self.n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_takes_the_singular_and_every_other_number_the_plural() {
        assert_eq!(count(1usize, "domain", "domains").to_string(), "1 domain");
        assert_eq!(count(0usize, "domain", "domains").to_string(), "0 domains");
        assert_eq!(count(5u32, "domain", "domains").to_string(), "5 domains");
        assert_eq!(count(2u64, "entry", "entries").to_string(), "2 entries");
    }
}
