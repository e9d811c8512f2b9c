//! Writing response JSON the way etcd 3.4's grpc-gateway does (jsonpb with
//! `OrigName: true`, defaults not emitted), for the messages the gateway serves.
//!
//! Guarantees, each one jsonpb's rule: fields in proto field order under their proto
//! names; a field at its default (0, false, "", empty bytes, empty list, enum value 0,
//! absent message) is left out, a present message is written even when empty (`{}`);
//! 64-bit integers are strings, 32-bit ones numbers; bytes are standard base64; enums
//! are their value names; strings are escaped as Go's `encoding/json` does (including
//! `<`, `>`, `&`, U+2028 and U+2029).

use super::base64;

/// A message type the gateway writes as JSON.
pub trait Encode {
    fn encode(&self, o: &mut Obj);
}

/// The JSON text of a message.
pub fn to_json<T: Encode>(msg: &T) -> String {
    let mut o = Obj::new();
    msg.encode(&mut o);
    o.finish()
}

/// Appends `s` as a JSON string, escaped as Go does.
pub fn push_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", c as u32))
            }
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// One JSON object being written.
pub struct Obj {
    buf: String,
    empty: bool,
}

impl Default for Obj {
    fn default() -> Self {
        Obj::new()
    }
}

impl Obj {
    pub fn new() -> Obj {
        Obj {
            buf: String::from("{"),
            empty: true,
        }
    }

    pub fn finish(mut self) -> String {
        self.buf.push('}');
        self.buf
    }

    fn key(&mut self, name: &str) {
        if !self.empty {
            self.buf.push(',');
        }
        self.empty = false;
        push_string(&mut self.buf, name);
        self.buf.push(':');
    }

    /// A field whose JSON text is already made (written even if empty).
    pub fn raw(&mut self, name: &str, json: &str) {
        self.key(name);
        self.buf.push_str(json);
    }

    pub fn i64(&mut self, name: &str, v: i64) {
        if v != 0 {
            self.raw(name, &format!("\"{v}\""));
        }
    }

    pub fn u64(&mut self, name: &str, v: u64) {
        if v != 0 {
            self.raw(name, &format!("\"{v}\""));
        }
    }

    pub fn u32(&mut self, name: &str, v: u32) {
        if v != 0 {
            self.raw(name, &v.to_string());
        }
    }

    pub fn bool(&mut self, name: &str, v: bool) {
        if v {
            self.raw(name, "true");
        }
    }

    pub fn string(&mut self, name: &str, v: &str) {
        if !v.is_empty() {
            self.key(name);
            push_string(&mut self.buf, v);
        }
    }

    pub fn bytes(&mut self, name: &str, v: &[u8]) {
        if !v.is_empty() {
            self.raw(name, &format!("\"{}\"", base64::encode(v)));
        }
    }

    /// An enum: its value name (`names` by number), or the number if unnamed.
    pub fn enumeration(&mut self, name: &str, v: i32, names: &[&str]) {
        if v != 0 {
            let json = match usize::try_from(v).ok().and_then(|i| names.get(i)) {
                Some(n) => format!("\"{n}\""),
                None => v.to_string(),
            };
            self.raw(name, &json);
        }
    }

    pub fn message<T: Encode>(&mut self, name: &str, v: Option<&T>) {
        if let Some(v) = v {
            self.raw(name, &to_json(v));
        }
    }

    pub fn messages<T: Encode>(&mut self, name: &str, v: &[T]) {
        if !v.is_empty() {
            let items: Vec<String> = v.iter().map(to_json).collect();
            self.raw(name, &format!("[{}]", items.join(",")));
        }
    }

    pub fn strings(&mut self, name: &str, v: &[String]) {
        if !v.is_empty() {
            let mut json = String::from("[");
            for (i, s) in v.iter().enumerate() {
                if i > 0 {
                    json.push(',');
                }
                push_string(&mut json, s);
            }
            json.push(']');
            self.raw(name, &json);
        }
    }

    pub fn bytes_list(&mut self, name: &str, v: &[bytes::Bytes]) {
        if !v.is_empty() {
            let items: Vec<String> = v
                .iter()
                .map(|b| format!("\"{}\"", base64::encode(b)))
                .collect();
            self.raw(name, &format!("[{}]", items.join(",")));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn omits_defaults_and_escapes_as_go() {
        let mut o = Obj::new();
        o.i64("zero", 0);
        o.i64("revision", 5);
        o.u32("hash", 7);
        o.bool("more", false);
        o.string("s", "<a&\"b\">\u{1}");
        o.enumeration("type", 1, &["PUT", "DELETE"]);
        o.bytes("key", b"foo");
        o.strings("none", &[]);
        assert_eq!(
            o.finish(),
            r#"{"revision":"5","hash":7,"s":"\u003ca\u0026\"b\"\u003e\u0001","type":"DELETE","key":"Zm9v"}"#
        );
    }
}
