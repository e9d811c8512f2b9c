//! etcdctl's exit codes and its error line (`Error: <message>` on stderr).
//!
//! Every failure of a verb is an [`Exit`] carrying the code etcdctl uses for that case,
//! so scripts that test `$?` behave the same with skiffctl.

use std::fmt;

/// A generic failure (`ExitError`).
pub const ERROR: i32 = 1;
/// The connection failed (`ExitBadConnection`).
pub const BAD_CONNECTION: i32 = 2;
/// Bad input on stdin (`ExitInvalidInput`).
pub const INVALID_INPUT: i32 = 3;
/// A valid flag with an unsupported value (`ExitBadFeature`).
pub const BAD_FEATURE: i32 = 4;
/// Interrupted, e.g. a watch canceled by the server (`ExitInterrupted`).
pub const INTERRUPTED: i32 = 5;
/// Bad arguments (`ExitBadArgs`).
pub const BAD_ARGS: i32 = 128;

/// A failure with its exit code; printed as `Error: <msg>`.
#[derive(Debug)]
pub struct Exit {
    /// The process exit code.
    pub code: i32,
    /// The message after `Error: `.
    pub msg: String,
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for Exit {}

/// An [`Exit`] as an `anyhow::Error`.
pub fn fail(code: i32, msg: impl fmt::Display) -> anyhow::Error {
    anyhow::Error::new(Exit {
        code,
        msg: msg.to_string(),
    })
}

/// Go's `strconv` parse error text for `text`.
pub fn strconv_err(func: &str, text: &str) -> String {
    format!(
        "strconv.{func}: parsing {}: invalid syntax",
        crate::output::go::quote(text.as_bytes())
    )
}
