//! Go's formatting rules that etcdctl's output depends on, reproduced byte for byte:
//! `strconv.Quote` (`%q`), `encoding/json` string escaping, `time.Duration.String`,
//! go-humanize's `Bytes`, and etcdctl's `--hex` form (`\x66\x6f\x6f`).

use std::fmt::Write;
use std::time::Duration;

/// Go's `strconv.Quote` of `bytes` taken as a string (`%q` of `string(b)`).
pub fn quote(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 2);
    out.push('"');
    let mut rest = bytes;
    while !rest.is_empty() {
        let (ch, len) = match std::str::from_utf8(rest) {
            Ok(s) => {
                let c = s.chars().next().expect("non-empty str has a char");
                (Some(c), c.len_utf8())
            }
            Err(e) if e.valid_up_to() > 0 => {
                let s = std::str::from_utf8(&rest[..e.valid_up_to()])
                    .expect("prefix up to valid_up_to is UTF-8");
                let c = s.chars().next().expect("non-empty str has a char");
                (Some(c), c.len_utf8())
            }
            Err(_) => (None, 1),
        };
        match ch {
            None => {
                let _ = write!(out, "\\x{:02x}", rest[0]);
            }
            Some(c) => match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\u{7}' => out.push_str("\\a"),
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{b}' => out.push_str("\\v"),
                c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                    let _ = write!(out, "\\x{:02x}", c as u32);
                }
                c if c.is_control() => {
                    if (c as u32) < 0x10000 {
                        let _ = write!(out, "\\u{:04x}", c as u32);
                    } else {
                        let _ = write!(out, "\\U{:08x}", c as u32);
                    }
                }
                c => out.push(c),
            },
        }
        rest = &rest[len..];
    }
    out.push('"');
    out
}

/// A JSON string as Go's `encoding/json` writes it (HTML-safe escaping, invalid UTF-8
/// replaced by U+FFFD).
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Go's `time.Duration.String()`.
pub fn duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".into();
    }
    if ns < 1_000 {
        return format!("{ns}ns");
    }
    if ns < 1_000_000 {
        return format!("{}µs", frac(ns, 1_000));
    }
    if ns < 1_000_000_000 {
        return format!("{}ms", frac(ns, 1_000_000));
    }
    let total_s = ns / 1_000_000_000;
    let sub = ns % 1_000_000_000;
    let (h, m, s) = (total_s / 3600, (total_s / 60) % 60, total_s % 60);
    let secs = frac(s * 1_000_000_000 + sub, 1_000_000_000);
    match (h, m) {
        (0, 0) => format!("{secs}s"),
        (0, m) => format!("{m}m{secs}s"),
        (h, m) => format!("{h}h{m}m{secs}s"),
    }
}

/// `n / unit` with the fraction's trailing zeros removed (Go's style).
fn frac(n: u128, unit: u128) -> String {
    let whole = n / unit;
    let rem = n % unit;
    if rem == 0 {
        return whole.to_string();
    }
    let digits = unit.to_string().len() - 1;
    let f = format!("{rem:0digits$}");
    format!("{whole}.{}", f.trim_end_matches('0'))
}

/// go-humanize's `Bytes` (SI units: `20 kB`, `1.2 MB`).
pub fn humanize_bytes(s: u64) -> String {
    const SIZES: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    if s < 10 {
        return format!("{s} B");
    }
    let sf = s as f64;
    let e = (sf.ln() / 1000f64.ln()).floor();
    let suffix = SIZES[(e as usize).min(SIZES.len() - 1)];
    let val = (sf / 1000f64.powf(e) * 10.0 + 0.5).floor() / 10.0;
    if val < 10.0 {
        format!("{val:.1} {suffix}")
    } else {
        format!("{val:.0} {suffix}")
    }
}

/// etcdctl's `--hex` form of bytes: `\x` before each hex pair.
pub fn hex_escaped(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 4);
    for b in bytes {
        let _ = write!(out, "\\x{b:02x}");
    }
    out
}

/// Parses a Go duration (`5s`, `100ms`, `1m30s`, `2h`, `1.5s`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("time: invalid duration {}", json_string(text));
    let mut rest = text;
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        if num_len == 0 {
            return Err(bad());
        }
        let n: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += n * scale;
        rest = &rest[unit_len..];
    }
    Ok(Duration::from_secs_f64(total))
}

/// Parses a boolean as Go's `strconv.ParseBool` (pflag's bool flags) does.
pub fn parse_bool(text: &str) -> Result<bool, String> {
    match text {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(format!(
            "strconv.ParseBool: parsing {}: invalid syntax",
            quote(text.as_bytes())
        )),
    }
}

/// Go's text for an I/O error (`no such file or directory`, ...).
pub fn io_error(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => {
            let s = e.to_string();
            match s.find(" (os error") {
                Some(i) => s[..i].to_lowercase(),
                None => s,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_go() {
        assert_eq!(quote(b"bar-again"), "\"bar-again\"");
        assert_eq!(quote(b"a\"b\\\n\x01\xff"), "\"a\\\"b\\\\\\n\\x01\\xff\"");
        assert_eq!(quote("é".as_bytes()), "\"é\"");
        assert_eq!(json_string("<a&b>"), "\"\\u003ca\\u0026b\\u003e\"");
        assert_eq!(duration(Duration::from_micros(1500)), "1.5ms");
        assert_eq!(duration(Duration::from_nanos(2_160_354)), "2.160354ms");
        assert_eq!(duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(duration(Duration::from_millis(12)), "12ms");
        assert_eq!(humanize_bytes(5), "5 B");
        assert_eq!(humanize_bytes(20480), "20 kB");
        assert_eq!(humanize_bytes(1_234_567), "1.2 MB");
        assert_eq!(hex_escaped(b"fo"), "\\x66\\x6f");
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("100ms").unwrap(), Duration::from_millis(100));
        assert!(parse_duration("5").is_err());
    }
}
