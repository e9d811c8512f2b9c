//! Flag values in the syntax etcd's Go flag package accepts (booleans such as `t` or
//! `FALSE`, durations such as `1m30s`), and the texts etcd prints when a value does
//! not parse: `invalid value "x" for flag -name: parse error`.
//!
//! Guarantees: every parser here accepts what Go's `strconv`/`time` accept for the
//! flag's type (within the Rust type's range) and refuses the rest with the reason
//! etcd prints; [`flag_error_message`] turns a clap value error into etcd's line.

use std::time::Duration;

/// The reason a boolean does not parse (recognised by [`flag_error_message`]).
const BAD_BOOL: &str = "invalid boolean value";

/// Go's `strconv.ParseBool`: `1 t T TRUE true True` and `0 f F FALSE false False`.
pub fn go_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(BAD_BOOL.to_string()),
    }
}

/// An unsigned 32-bit flag (Go's `UintVar` on etcd's platforms accepts 64 bits, but
/// no etcd flag of this kind means anything beyond 32).
pub fn go_u32(s: &str) -> Result<u32, String> {
    s.parse().map_err(|_| "parse error".to_string())
}

/// An unsigned 64-bit flag.
pub fn go_u64(s: &str) -> Result<u64, String> {
    s.parse().map_err(|_| "parse error".to_string())
}

/// A signed 64-bit flag.
pub fn go_i64(s: &str) -> Result<i64, String> {
    s.parse().map_err(|_| "parse error".to_string())
}

/// `--max-concurrent-streams`: etcd parses it with `strconv.ParseUint(s, 10, 32)`
/// and shows that function's error.
pub fn go_max_streams(s: &str) -> Result<u32, String> {
    if s == "math.MaxUint32" {
        return Ok(u32::MAX);
    }
    s.parse().map_err(|e: std::num::ParseIntError| {
        let why = match e.kind() {
            std::num::IntErrorKind::PosOverflow => "value out of range",
            _ => "invalid syntax",
        };
        format!("strconv.ParseUint: parsing {s:?}: {why}")
    })
}

/// Go's `time.ParseDuration` (negative durations are refused: no etcd flag means
/// anything by them).
pub fn go_duration(text: &str) -> Result<Duration, String> {
    let err = || "parse error".to_string();
    let mut s = text.strip_prefix('+').unwrap_or(text);
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() || s.starts_with('-') {
        return Err(err());
    }
    let mut nanos = 0f64;
    while !s.is_empty() {
        let num_end = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(err)?;
        if num_end == 0 || s[..num_end] == *"." {
            return Err(err());
        }
        let number: f64 = s[..num_end].parse().map_err(|_| err())?;
        s = &s[num_end..];
        let unit_end = s
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(s.len());
        let scale = match &s[..unit_end] {
            "ns" => 1.0,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(err()),
        };
        nanos += number * scale;
        s = &s[unit_end..];
    }
    if nanos > u64::MAX as f64 {
        return Err(err());
    }
    Ok(Duration::from_nanos(nanos as u64))
}

/// Go's `Duration.String()` for the durations etcd's help shows (`5s`, `2h0m0s`).
pub fn show_duration(d: Duration) -> String {
    let total = d.as_secs();
    let (h, m, s) = (total / 3600, total / 60 % 60, total % 60);
    let frac = d.subsec_nanos();
    if total == 0 {
        return match frac {
            0 => "0s".to_string(),
            f if f % 1_000_000 == 0 => format!("{}ms", f / 1_000_000),
            f => format!("{}ns", f),
        };
    }
    let secs = if frac == 0 {
        format!("{s}s")
    } else {
        format!("{}s", s as f64 + f64::from(frac) / 1e9)
    };
    match (h, m) {
        (0, 0) => secs,
        (0, m) => format!("{m}m{secs}"),
        (h, m) => format!("{h}h{m}m{secs}"),
    }
}

/// etcd's text for a flag whose value does not parse, from clap's error; other
/// errors keep clap's text.
pub fn flag_error_message(e: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if !matches!(
        e.kind(),
        ErrorKind::ValueValidation | ErrorKind::InvalidValue
    ) {
        return e.to_string();
    }
    let (Some(ContextValue::String(arg)), Some(ContextValue::String(value))) = (
        e.get(ContextKind::InvalidArg),
        e.get(ContextKind::InvalidValue),
    ) else {
        return e.to_string();
    };
    let name = arg
        .trim_start_matches('-')
        .split([' ', '=', '['])
        .next()
        .unwrap_or_default();
    let reason = std::error::Error::source(e)
        .map(|s| s.to_string())
        .unwrap_or_else(|| "invalid value".to_string());
    if reason == BAD_BOOL {
        format!("invalid boolean value {value:?} for -{name}: parse error")
    } else {
        format!("invalid value {value:?} for flag -{name}: {reason}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_as_go_parses_them() {
        assert_eq!(go_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(go_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(go_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(go_duration("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(go_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(go_duration("0"), Ok(Duration::ZERO));
        assert_eq!(go_duration("300ns"), Ok(Duration::from_nanos(300)));
        for bad in ["", "5", "x", "5x", "s", "-1s", ".s"] {
            assert_eq!(go_duration(bad), Err("parse error".to_string()), "{bad}");
        }
    }

    #[test]
    fn durations_shown_as_go_shows_them() {
        assert_eq!(show_duration(Duration::from_secs(5)), "5s");
        assert_eq!(show_duration(Duration::from_secs(7200)), "2h0m0s");
        assert_eq!(show_duration(Duration::from_secs(600)), "10m0s");
        assert_eq!(show_duration(Duration::from_millis(100)), "100ms");
        assert_eq!(show_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn booleans_as_go_parses_them() {
        assert_eq!(go_bool("t"), Ok(true));
        assert_eq!(go_bool("FALSE"), Ok(false));
        assert!(go_bool("yes").is_err());
        assert_eq!(
            go_max_streams("-1"),
            Err("strconv.ParseUint: parsing \"-1\": invalid syntax".to_string())
        );
        assert_eq!(go_max_streams("math.MaxUint32"), Ok(u32::MAX));
    }
}
