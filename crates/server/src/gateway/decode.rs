//! Reading request JSON the way etcd 3.4's grpc-gateway does (golang/protobuf's
//! `jsonpb` over Go's `encoding/json`), for the messages the gateway serves.
//!
//! Guarantees, each one jsonpb's rule: a message is a JSON object (or `null`); a
//! field is found by its proto name or its lowerCamel JSON name (`range_end` or
//! `rangeEnd`); unknown fields are ignored; `null` leaves a field at its default;
//! strings are JSON strings; bytes are standard base64; 64- and 32-bit integers are
//! numbers or strings holding one; enums are names or numbers; the first bad field
//! fails the whole request with the text Go would give (`json: cannot unmarshal ...`,
//! `illegal base64 data at input byte N`, `unknown value "X" for enum
//! etcdserverpb.T`). Malformed JSON is reported in Go's words for the common cases
//! ([`syntax_error`]).

use std::collections::HashMap;

use bytes::Bytes;
use serde_json::value::RawValue;

use super::base64;

/// A request that cannot be decoded: the text etcd's gateway answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

type Result<T> = std::result::Result<T, DecodeError>;

/// A message type the gateway reads from JSON.
pub trait Decode: Default {
    /// Reads the fields of an object (unknown ones are left in `f`).
    fn decode(f: &mut Fields<'_>) -> Result<Self>;
}

/// An enum as jsonpb knows it: the Go type name (for error texts) and the names of
/// its values, by number from 0.
pub struct EnumDef {
    pub go_type: &'static str,
    pub names: &'static [&'static str],
}

/// What kind of JSON value `raw` is, in Go's error words.
fn kind(raw: &str) -> &'static str {
    match raw.as_bytes().first() {
        Some(b'{') => "object",
        Some(b'[') => "array",
        Some(b'"') => "string",
        Some(b't') | Some(b'f') => "bool",
        Some(b'n') => "null",
        _ => "number",
    }
}

fn type_error(what: &str, go_type: &str) -> DecodeError {
    DecodeError(format!(
        "json: cannot unmarshal {what} into Go value of type {go_type}"
    ))
}

/// Decodes one JSON value holding a message.
pub fn message<T: Decode>(raw: &str) -> Result<T> {
    let raw = raw.trim();
    if raw == "null" {
        return Ok(T::default());
    }
    if !raw.starts_with('{') {
        return Err(type_error(kind(raw), "map[string]json.RawMessage"));
    }
    let map: HashMap<String, &RawValue> =
        serde_json::from_str(raw).map_err(|e| syntax_error(raw, &e))?;
    let mut fields = Fields { map };
    T::decode(&mut fields)
}

/// The fields of one JSON object, taken one by one.
pub struct Fields<'a> {
    map: HashMap<String, &'a RawValue>,
}

/// protoc's JSON name of a field: underscores dropped, the next letter upper-cased.
fn json_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = false;
    for c in name.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// A JSON string's contents.
fn string_of(raw: &str) -> Result<String> {
    serde_json::from_str::<String>(raw).map_err(|e| syntax_error(raw, &e))
}

/// Go's `strconv.ParseInt`/`ParseUint` over a JSON number literal, for a Go integer
/// type of `bits` bits.
fn integer(raw: &str, go_type: &str, signed: bool, bits: u32) -> Result<i128> {
    // jsonpb strips the quotes of a quoted number and parses what is inside.
    let inner = match raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        Some(inner) => {
            let trimmed = inner.trim();
            if trimmed.is_empty() {
                return Err(DecodeError("unexpected end of JSON input".into()));
            }
            // What is inside must itself be valid JSON.
            if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(trimmed) {
                return Err(syntax_error(trimmed, &e));
            }
            trimmed
        }
        None => raw,
    };
    if kind(inner) != "number" {
        return Err(type_error(kind(inner), go_type));
    }
    let bad = || type_error(&format!("number {inner}"), go_type);
    let n: i128 = inner.parse().map_err(|_| bad())?;
    let (min, max) = if signed {
        (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
    } else {
        (0, (1i128 << bits) - 1)
    };
    if n < min || n > max {
        return Err(bad());
    }
    Ok(n)
}

impl<'a> Fields<'a> {
    /// The raw value of a field (by proto name, then JSON name), unless absent or null.
    fn take(&mut self, name: &str) -> Option<&'a str> {
        let raw = self
            .map
            .remove(name)
            .or_else(|| self.map.remove(&json_name(name)))?
            .get()
            .trim();
        (raw != "null").then_some(raw)
    }

    pub fn bytes(&mut self, name: &str) -> Result<Bytes> {
        match self.take(name) {
            None => Ok(Bytes::new()),
            Some(raw) => bytes_value(raw),
        }
    }

    pub fn string(&mut self, name: &str) -> Result<String> {
        match self.take(name) {
            None => Ok(String::new()),
            Some(raw) if raw.starts_with('"') => string_of(raw),
            Some(raw) => Err(type_error(kind(raw), "string")),
        }
    }

    pub fn bool(&mut self, name: &str) -> Result<bool> {
        match self.take(name) {
            None => Ok(false),
            Some("true") => Ok(true),
            Some("false") => Ok(false),
            Some(raw) => Err(type_error(kind(raw), "bool")),
        }
    }

    pub fn i64(&mut self, name: &str) -> Result<i64> {
        match self.take(name) {
            None => Ok(0),
            Some(raw) => integer(raw, "int64", true, 64).map(|n| n as i64),
        }
    }

    pub fn u64(&mut self, name: &str) -> Result<u64> {
        match self.take(name) {
            None => Ok(0),
            Some(raw) => integer(raw, "uint64", false, 64).map(|n| n as u64),
        }
    }

    pub fn enumeration(&mut self, name: &str, def: &EnumDef) -> Result<i32> {
        match self.take(name) {
            None => Ok(0),
            Some(raw) => enum_value(raw, def),
        }
    }

    pub fn message<T: Decode>(&mut self, name: &str) -> Result<Option<T>> {
        self.take(name).map(message::<T>).transpose()
    }

    /// Whether a field is present (not null): for oneof members.
    pub fn has(&self, name: &str) -> bool {
        self.map
            .get(name)
            .or_else(|| self.map.get(&json_name(name)))
            .is_some_and(|raw| raw.get().trim() != "null")
    }

    fn list(&mut self, name: &str) -> Result<Vec<&'a str>> {
        let Some(raw) = self.take(name) else {
            return Ok(Vec::new());
        };
        if !raw.starts_with('[') {
            return Err(type_error(kind(raw), "[]json.RawMessage"));
        }
        let items: Vec<&RawValue> = serde_json::from_str(raw).map_err(|e| syntax_error(raw, &e))?;
        Ok(items.into_iter().map(|r| r.get().trim()).collect())
    }

    pub fn messages<T: Decode>(&mut self, name: &str) -> Result<Vec<T>> {
        self.list(name)?.into_iter().map(message::<T>).collect()
    }

    pub fn strings(&mut self, name: &str) -> Result<Vec<String>> {
        self.list(name)?
            .into_iter()
            .map(|raw| match raw {
                "null" => Ok(String::new()),
                r if r.starts_with('"') => string_of(r),
                r => Err(type_error(kind(r), "string")),
            })
            .collect()
    }

    pub fn enumerations(&mut self, name: &str, def: &EnumDef) -> Result<Vec<i32>> {
        self.list(name)?
            .into_iter()
            .map(|raw| {
                if raw == "null" {
                    Ok(0)
                } else {
                    enum_value(raw, def)
                }
            })
            .collect()
    }
}

fn bytes_value(raw: &str) -> Result<Bytes> {
    if raw.starts_with('[') {
        // Go also reads a []byte from an array of small numbers.
        let items: Vec<&RawValue> = serde_json::from_str(raw).map_err(|e| syntax_error(raw, &e))?;
        return items
            .into_iter()
            .map(|r| integer(r.get().trim(), "uint8", false, 8).map(|n| n as u8))
            .collect::<Result<Vec<u8>>>()
            .map(Bytes::from);
    }
    if !raw.starts_with('"') {
        return Err(type_error(kind(raw), "[]uint8"));
    }
    let s = string_of(raw)?;
    base64::decode(s.as_bytes())
        .map(Bytes::from)
        .map_err(|at| DecodeError(format!("illegal base64 data at input byte {at}")))
}

fn enum_value(raw: &str, def: &EnumDef) -> Result<i32> {
    if raw.starts_with('"') {
        let name = string_of(raw)?;
        return def
            .names
            .iter()
            .position(|n| *n == name)
            .map(|i| i as i32)
            .ok_or_else(|| {
                DecodeError(format!(
                    "unknown value {} for enum {}",
                    serde_json::to_string(&name).unwrap_or_default(),
                    def.go_type
                ))
            });
    }
    integer(raw, def.go_type, true, 32).map(|n| n as i32)
}

/// Go's `quoteChar`: how its JSON scanner names an unexpected character.
fn quote_char(c: char) -> String {
    match c {
        '\'' => r"'\''".to_string(),
        '"' => "'\"'".to_string(),
        '\n' => r"'\n'".to_string(),
        '\r' => r"'\r'".to_string(),
        '\t' => r"'\t'".to_string(),
        c if (c as u32) < 0x20 || c == '\u{7f}' => format!("'\\x{:02x}'", c as u32),
        c => format!("'{c}'"),
    }
}

/// Go's scanner error for malformed JSON, from serde_json's error of the same input
/// (the common cases; anything else keeps serde's wording).
pub fn syntax_error(input: &str, e: &serde_json::Error) -> DecodeError {
    if e.is_eof() {
        return DecodeError("unexpected EOF".into());
    }
    // serde's position: 1-based line and column (in bytes) of the offending byte.
    let line_start: usize = input
        .split_inclusive('\n')
        .take(e.line().saturating_sub(1))
        .map(str::len)
        .sum();
    let at = line_start + e.column().saturating_sub(1);
    let c = input
        .get(at..)
        .and_then(|s| s.chars().next())
        .unwrap_or(' ');
    let text = e.to_string();
    let what = text.split(" at line ").next().unwrap_or(&text);
    let context = match what {
        "expected value" => "looking for beginning of value",
        "key must be a string" => "looking for beginning of object key string",
        "trailing comma" if c == '}' => "looking for beginning of object key string",
        "trailing comma" => "looking for beginning of value",
        "expected `:`" => "after object key",
        "expected `,` or `}`" => "after object key:value pair",
        "expected `,` or `]`" => "after array element",
        "invalid escape" => "in string escape code",
        "invalid number" => "in numeric literal",
        w if w.starts_with("control character") => "in string literal",
        "expected ident" => return literal_error(input, at, c),
        _ => return DecodeError(what.to_string()),
    };
    DecodeError(format!("invalid character {} {context}", quote_char(c)))
}

/// A misspelled `true`, `false` or `null`.
fn literal_error(input: &str, at: usize, c: char) -> DecodeError {
    let before = &input.as_bytes()[..at.min(input.len())];
    let start = before
        .iter()
        .rposition(|b| matches!(b, b't' | b'f' | b'n'))
        .unwrap_or(0);
    let literal = match before.get(start) {
        Some(b't') => "true",
        Some(b'f') => "false",
        _ => "null",
    };
    let expected = literal
        .chars()
        .nth(at - start)
        .map(|e| format!(" (expecting '{e}')"))
        .unwrap_or_default();
    DecodeError(format!(
        "invalid character {} in literal {literal}{expected}",
        quote_char(c)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default, Debug, PartialEq)]
    struct T {
        key: Bytes,
        limit: i64,
        id: u64,
        on: bool,
        order: i32,
        names: Vec<String>,
    }

    const ORDER: EnumDef = EnumDef {
        go_type: "etcdserverpb.RangeRequest_SortOrder",
        names: &["NONE", "ASCEND", "DESCEND"],
    };

    impl Decode for T {
        fn decode(f: &mut Fields<'_>) -> Result<T> {
            Ok(T {
                key: f.bytes("key")?,
                limit: f.i64("limit")?,
                id: f.u64("member_id")?,
                on: f.bool("keys_only")?,
                order: f.enumeration("sort_order", &ORDER)?,
                names: f.strings("peerURLs")?,
            })
        }
    }

    /// A message of one string field.
    #[derive(Default, Debug)]
    struct N(String);

    impl Decode for N {
        fn decode(f: &mut Fields<'_>) -> Result<N> {
            Ok(N(f.string("name")?))
        }
    }

    fn err(s: &str) -> String {
        message::<T>(s).unwrap_err().0
    }

    #[test]
    fn reads_what_jsonpb_reads() {
        let t: T = message(
            r#"{"key":"Zm9v","limit":"5","memberId":7,"keys_only":true,"sortOrder":"DESCEND","peerURLs":["a"],"x":1}"#,
        )
        .unwrap();
        assert_eq!(
            t,
            T {
                key: Bytes::from_static(b"foo"),
                limit: 5,
                id: 7,
                on: true,
                order: 2,
                names: vec!["a".into()],
            }
        );
        assert_eq!(message::<T>("null").unwrap(), T::default());
        assert_eq!(
            message::<T>(r#"{"key":null,"sort_order":1}"#)
                .unwrap()
                .order,
            1
        );
    }

    #[test]
    fn fails_with_gos_words() {
        // Each text as etcd 3.4's gateway answers it.
        assert_eq!(
            err("[]"),
            "json: cannot unmarshal array into Go value of type map[string]json.RawMessage"
        );
        assert_eq!(
            err(r#"{"limit":1.5}"#),
            "json: cannot unmarshal number 1.5 into Go value of type int64"
        );
        assert_eq!(
            err(r#"{"limit":"1.5"}"#),
            "json: cannot unmarshal number 1.5 into Go value of type int64"
        );
        assert_eq!(
            err(r#"{"limit":"x"}"#),
            "invalid character 'x' looking for beginning of value"
        );
        assert_eq!(
            err(r#"{"keys_only":"true"}"#),
            "json: cannot unmarshal string into Go value of type bool"
        );
        assert_eq!(
            err(r#"{"key":5}"#),
            "json: cannot unmarshal number into Go value of type []uint8"
        );
        assert_eq!(
            err(r#"{"key":"YQ"}"#),
            "illegal base64 data at input byte 0"
        );
        assert_eq!(
            err(r#"{"sort_order":"BAD"}"#),
            r#"unknown value "BAD" for enum etcdserverpb.RangeRequest_SortOrder"#
        );
        assert_eq!(
            message::<N>(r#"{"name":5}"#).unwrap_err().0,
            "json: cannot unmarshal number into Go value of type string"
        );
        assert_eq!(message::<N>(r#"{"name":"a\u00e9"}"#).unwrap().0, "a\u{e9}");
        assert_eq!(message::<N>(r#"{"name":null}"#).unwrap().0, "");
        assert_eq!(
            err(r#"{"member_id":-1}"#),
            "json: cannot unmarshal number -1 into Go value of type uint64"
        );
    }

    #[test]
    fn syntax_errors_in_gos_words() {
        let e = |s: &str| {
            let err = serde_json::from_str::<serde::de::IgnoredAny>(s).unwrap_err();
            syntax_error(s, &err).0
        };
        assert_eq!(
            e("garbage"),
            "invalid character 'g' looking for beginning of value"
        );
        assert_eq!(
            e(r#"{"key":"YQ==",}"#),
            "invalid character '}' looking for beginning of object key string"
        );
        assert_eq!(e(r#"{"key""#), "unexpected EOF");
        assert_eq!(e(r#"{"a" 1}"#), "invalid character '1' after object key");
        assert_eq!(
            e(r#"{"a":1 "b":2}"#),
            "invalid character '\"' after object key:value pair"
        );
        assert_eq!(
            e(r#"{"a":tru}"#),
            "invalid character '}' in literal true (expecting 'e')"
        );
    }
}
