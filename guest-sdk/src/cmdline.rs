//! Reading `key=value` settings from the domain's command line.
//!
//! The command line comes from the manifest's `cmdline` field through the
//! start-info page. Words are separated by spaces; a word `key=value` sets
//! `key`, and a later word overrides an earlier one.

use core::str::FromStr;

use crate::start_info::start_info;

/// The value of the last `key=value` word in this domain's command line.
pub fn value(key: &str) -> Option<&'static str> {
    value_in(start_info().cmdline(), key)
}

/// The value of the last `key=value` word in `cmdline`.
pub fn value_in<'a>(cmdline: &'a str, key: &str) -> Option<&'a str> {
    cmdline
        .split_ascii_whitespace()
        .rev()
        .filter_map(|word| word.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// Why [`parse`] could not produce a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmdlineError<'a> {
    /// The key is not on the command line.
    Missing,
    /// The key is there, but its value does not parse as the wanted type.
    Malformed(&'a str),
}

/// The value of `key` parsed as a `T` (a number, for example).
pub fn parse<T: FromStr>(key: &str) -> Result<T, CmdlineError<'static>> {
    let text = value(key).ok_or(CmdlineError::Missing)?;
    text.parse().map_err(|_| CmdlineError::Malformed(text))
}
