//! Header compression (RFC 7541) for the server side of a connection.
//!
//! Decoding keeps the client's dynamic table (at most [`TABLE_SIZE`] bytes, the default
//! we never raise) and reads Huffman-coded strings with a canonical-code decoder built
//! once from RFC 7541's code table; a block it cannot read ends the connection with
//! `COMPRESSION_ERROR` (the caller's part). The `hpack` crate this replaced built a hash
//! map for every Huffman string it decoded: half the leader's CPU under 1000 clients. Encoding never indexes: every field is a
//! literal without indexing (the name taken from the static table when it is there), and
//! `:status: 200` the static entry, so the client's view of our dynamic table is always
//! empty and nothing has to be evicted or agreed on. Responses repeat few and short
//! fields (`:status`, `content-type`, `grpc-status`), so the bytes saved by indexing them
//! would cost more CPU than they save on loopback and LANs.

use std::collections::VecDeque;
use std::sync::OnceLock;

use bytes::{BufMut, BytesMut};

/// The dynamic table size we allow the client (SETTINGS_HEADER_TABLE_SIZE, default).
pub const TABLE_SIZE: usize = 4096;

/// A header block the decoder could not read (the connection must end).
#[derive(Debug, PartialEq, Eq)]
pub struct DecodeError(pub &'static str);

/// The decoder of one connection: the client's dynamic table.
#[derive(Default)]
pub struct Decoder {
    table: VecDeque<(Vec<u8>, Vec<u8>)>,
    size: usize,
    max: Option<usize>,
}

impl Decoder {
    fn max(&self) -> usize {
        self.max.unwrap_or(TABLE_SIZE)
    }

    fn evict_to(&mut self, limit: usize) {
        while self.size > limit {
            match self.table.pop_back() {
                Some((n, v)) => self.size -= n.len() + v.len() + 32,
                None => break,
            }
        }
    }

    fn insert(&mut self, name: Vec<u8>, value: Vec<u8>) {
        let size = name.len() + value.len() + 32;
        let max = self.max();
        self.evict_to(max.saturating_sub(size));
        if size <= max {
            self.size += size;
            self.table.push_front((name, value));
        }
    }

    /// The entry at `index` of the static table followed by the dynamic one.
    fn entry(&self, index: usize) -> Result<(&[u8], &[u8]), DecodeError> {
        if index == 0 {
            return Err(DecodeError("index 0"));
        }
        if let Some((n, v)) = STATIC.get(index - 1) {
            return Ok((n.as_bytes(), v.as_bytes()));
        }
        self.table
            .get(index - 1 - STATIC.len())
            .map(|(n, v)| (n.as_slice(), v.as_slice()))
            .ok_or(DecodeError("index past both tables"))
    }

    /// Decodes one complete header block, calling `field(name, value)` for each field in
    /// order.
    pub fn decode(
        &mut self,
        block: &[u8],
        field: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<(), DecodeError> {
        let mut b = block;
        let mut scratch_name = Vec::new();
        let mut scratch_value = Vec::new();
        while let Some(&first) = b.first() {
            if first & 0x80 != 0 {
                // Indexed field.
                let index = read_int(&mut b, 7)?;
                let (n, v) = self.entry(index)?;
                field(n, v);
            } else if first & 0xe0 == 0x20 {
                // Dynamic table size update.
                let size = read_int(&mut b, 5)?;
                if size > TABLE_SIZE {
                    return Err(DecodeError("table size update above the limit"));
                }
                self.max = Some(size);
                self.evict_to(size);
            } else {
                let (prefix, index_it) = if first & 0xc0 == 0x40 {
                    (6, true)
                } else {
                    (4, false)
                };
                let index = read_int(&mut b, prefix)?;
                scratch_name.clear();
                if index == 0 {
                    read_str(&mut b, &mut scratch_name)?;
                } else {
                    scratch_name.extend_from_slice(self.entry(index)?.0);
                }
                scratch_value.clear();
                read_str(&mut b, &mut scratch_value)?;
                field(&scratch_name, &scratch_value);
                if index_it {
                    self.insert(scratch_name.clone(), scratch_value.clone());
                }
            }
        }
        Ok(())
    }
}

/// An integer with an `n`-bit prefix (RFC 7541 §5.1), advancing `b` past it.
fn read_int(b: &mut &[u8], n: u32) -> Result<usize, DecodeError> {
    let (&first, rest) = b.split_first().ok_or(DecodeError("truncated integer"))?;
    *b = rest;
    let max = (1usize << n) - 1;
    let mut value = usize::from(first) & max;
    if value < max {
        return Ok(value);
    }
    let mut shift = 0u32;
    loop {
        let (&byte, rest) = b.split_first().ok_or(DecodeError("truncated integer"))?;
        *b = rest;
        if shift > 28 {
            return Err(DecodeError("integer too large"));
        }
        value += usize::from(byte & 0x7f) << shift;
        shift += 7;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
}

/// A string literal (RFC 7541 §5.2) appended to `out`, advancing `b` past it.
fn read_str(b: &mut &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
    let huffman = b.first().is_some_and(|f| f & 0x80 != 0);
    let len = read_int(b, 7)?;
    if len > b.len() {
        return Err(DecodeError("truncated string"));
    }
    let (s, rest) = b.split_at(len);
    *b = rest;
    if huffman {
        huffman_decode(s, out)
    } else {
        out.extend_from_slice(s);
        Ok(())
    }
}

/// The Huffman code (RFC 7541 Appendix B) as canonical-code tables: for each length,
/// the first code, how many codes have it, and where its symbols start in `symbols`.
struct Canonical {
    first: [u32; 31],
    count: [u32; 31],
    start: [usize; 31],
    symbols: Vec<u16>,
}

fn canonical() -> &'static Canonical {
    static TABLE: OnceLock<Canonical> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut by_code: Vec<(u8, u32, u16)> = HUFFMAN
            .iter()
            .enumerate()
            .map(|(sym, &(code, len))| (len, code, sym as u16))
            .collect();
        by_code.sort_unstable();
        let mut c = Canonical {
            first: [0; 31],
            count: [0; 31],
            start: [0; 31],
            symbols: Vec::new(),
        };
        for (i, &(len, code, sym)) in by_code.iter().enumerate() {
            let l = usize::from(len);
            if c.count[l] == 0 {
                c.first[l] = code;
                c.start[l] = i;
            }
            c.count[l] += 1;
            c.symbols.push(sym);
        }
        c
    })
}

fn huffman_decode(s: &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
    let t = canonical();
    let mut code = 0u32;
    let mut len = 0usize;
    for &byte in s {
        for shift in (0..8).rev() {
            code = (code << 1) | u32::from((byte >> shift) & 1);
            len += 1;
            if len > 30 {
                return Err(DecodeError("invalid Huffman code"));
            }
            let offset = code.wrapping_sub(t.first[len]);
            if t.count[len] > 0 && code >= t.first[len] && offset < t.count[len] {
                let sym = t.symbols[t.start[len] + offset as usize];
                if sym == 256 {
                    return Err(DecodeError("EOS in a Huffman string"));
                }
                out.push(sym as u8);
                code = 0;
                len = 0;
            }
        }
    }
    // Padding: fewer than 8 bits, all ones (the start of EOS).
    if len > 7 || code != (1u32 << len) - 1 {
        return Err(DecodeError("invalid Huffman padding"));
    }
    Ok(())
}

/// The static table (RFC 7541 Appendix A).
const STATIC: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// The Huffman code of each symbol 0-256 (RFC 7541 Appendix B): code, bit length.
#[rustfmt::skip]
const HUFFMAN: [(u32, u8); 257] = [
    (0x1ff8, 13), (0x7fffd8, 23), (0xfffffe2, 28), (0xfffffe3, 28), (0xfffffe4, 28), (0xfffffe5, 28),
    (0xfffffe6, 28), (0xfffffe7, 28), (0xfffffe8, 28), (0xffffea, 24), (0x3ffffffc, 30), (0xfffffe9, 28),
    (0xfffffea, 28), (0x3ffffffd, 30), (0xfffffeb, 28), (0xfffffec, 28), (0xfffffed, 28), (0xfffffee, 28),
    (0xfffffef, 28), (0xffffff0, 28), (0xffffff1, 28), (0xffffff2, 28), (0x3ffffffe, 30), (0xffffff3, 28),
    (0xffffff4, 28), (0xffffff5, 28), (0xffffff6, 28), (0xffffff7, 28), (0xffffff8, 28), (0xffffff9, 28),
    (0xffffffa, 28), (0xffffffb, 28), (0x14, 6), (0x3f8, 10), (0x3f9, 10), (0xffa, 12),
    (0x1ff9, 13), (0x15, 6), (0xf8, 8), (0x7fa, 11), (0x3fa, 10), (0x3fb, 10),
    (0xf9, 8), (0x7fb, 11), (0xfa, 8), (0x16, 6), (0x17, 6), (0x18, 6),
    (0x0, 5), (0x1, 5), (0x2, 5), (0x19, 6), (0x1a, 6), (0x1b, 6),
    (0x1c, 6), (0x1d, 6), (0x1e, 6), (0x1f, 6), (0x5c, 7), (0xfb, 8),
    (0x7ffc, 15), (0x20, 6), (0xffb, 12), (0x3fc, 10), (0x1ffa, 13), (0x21, 6),
    (0x5d, 7), (0x5e, 7), (0x5f, 7), (0x60, 7), (0x61, 7), (0x62, 7),
    (0x63, 7), (0x64, 7), (0x65, 7), (0x66, 7), (0x67, 7), (0x68, 7),
    (0x69, 7), (0x6a, 7), (0x6b, 7), (0x6c, 7), (0x6d, 7), (0x6e, 7),
    (0x6f, 7), (0x70, 7), (0x71, 7), (0x72, 7), (0xfc, 8), (0x73, 7),
    (0xfd, 8), (0x1ffb, 13), (0x7fff0, 19), (0x1ffc, 13), (0x3ffc, 14), (0x22, 6),
    (0x7ffd, 15), (0x3, 5), (0x23, 6), (0x4, 5), (0x24, 6), (0x5, 5),
    (0x25, 6), (0x26, 6), (0x27, 6), (0x6, 5), (0x74, 7), (0x75, 7),
    (0x28, 6), (0x29, 6), (0x2a, 6), (0x7, 5), (0x2b, 6), (0x76, 7),
    (0x2c, 6), (0x8, 5), (0x9, 5), (0x2d, 6), (0x77, 7), (0x78, 7),
    (0x79, 7), (0x7a, 7), (0x7b, 7), (0x7ffe, 15), (0x7fc, 11), (0x3ffd, 14),
    (0x1ffd, 13), (0xffffffc, 28), (0xfffe6, 20), (0x3fffd2, 22), (0xfffe7, 20), (0xfffe8, 20),
    (0x3fffd3, 22), (0x3fffd4, 22), (0x3fffd5, 22), (0x7fffd9, 23), (0x3fffd6, 22), (0x7fffda, 23),
    (0x7fffdb, 23), (0x7fffdc, 23), (0x7fffdd, 23), (0x7fffde, 23), (0xffffeb, 24), (0x7fffdf, 23),
    (0xffffec, 24), (0xffffed, 24), (0x3fffd7, 22), (0x7fffe0, 23), (0xffffee, 24), (0x7fffe1, 23),
    (0x7fffe2, 23), (0x7fffe3, 23), (0x7fffe4, 23), (0x1fffdc, 21), (0x3fffd8, 22), (0x7fffe5, 23),
    (0x3fffd9, 22), (0x7fffe6, 23), (0x7fffe7, 23), (0xffffef, 24), (0x3fffda, 22), (0x1fffdd, 21),
    (0xfffe9, 20), (0x3fffdb, 22), (0x3fffdc, 22), (0x7fffe8, 23), (0x7fffe9, 23), (0x1fffde, 21),
    (0x7fffea, 23), (0x3fffdd, 22), (0x3fffde, 22), (0xfffff0, 24), (0x1fffdf, 21), (0x3fffdf, 22),
    (0x7fffeb, 23), (0x7fffec, 23), (0x1fffe0, 21), (0x1fffe1, 21), (0x3fffe0, 22), (0x1fffe2, 21),
    (0x7fffed, 23), (0x3fffe1, 22), (0x7fffee, 23), (0x7fffef, 23), (0xfffea, 20), (0x3fffe2, 22),
    (0x3fffe3, 22), (0x3fffe4, 22), (0x7ffff0, 23), (0x3fffe5, 22), (0x3fffe6, 22), (0x7ffff1, 23),
    (0x3ffffe0, 26), (0x3ffffe1, 26), (0xfffeb, 20), (0x7fff1, 19), (0x3fffe7, 22), (0x7ffff2, 23),
    (0x3fffe8, 22), (0x1ffffec, 25), (0x3ffffe2, 26), (0x3ffffe3, 26), (0x3ffffe4, 26), (0x7ffffde, 27),
    (0x7ffffdf, 27), (0x3ffffe5, 26), (0xfffff1, 24), (0x1ffffed, 25), (0x7fff2, 19), (0x1fffe3, 21),
    (0x3ffffe6, 26), (0x7ffffe0, 27), (0x7ffffe1, 27), (0x3ffffe7, 26), (0x7ffffe2, 27), (0xfffff2, 24),
    (0x1fffe4, 21), (0x1fffe5, 21), (0x3ffffe8, 26), (0x3ffffe9, 26), (0xffffffd, 28), (0x7ffffe3, 27),
    (0x7ffffe4, 27), (0x7ffffe5, 27), (0xfffec, 20), (0xfffff3, 24), (0xfffed, 20), (0x1fffe6, 21),
    (0x3fffe9, 22), (0x1fffe7, 21), (0x1fffe8, 21), (0x7ffff3, 23), (0x3fffea, 22), (0x3fffeb, 22),
    (0x1ffffee, 25), (0x1ffffef, 25), (0xfffff4, 24), (0xfffff5, 24), (0x3ffffea, 26), (0x7ffff4, 23),
    (0x3ffffeb, 26), (0x7ffffe6, 27), (0x3ffffec, 26), (0x3ffffed, 26), (0x7ffffe7, 27), (0x7ffffe8, 27),
    (0x7ffffe9, 27), (0x7ffffea, 27), (0x7ffffeb, 27), (0xffffffe, 28), (0x7ffffec, 27), (0x7ffffed, 27),
    (0x7ffffee, 27), (0x7ffffef, 27), (0x7fffff0, 27), (0x3ffffee, 26), (0x3fffffff, 30),
];

/// Static table indices of names a response may carry (RFC 7541 Appendix A).
fn static_name(name: &[u8]) -> Option<usize> {
    Some(match name {
        b":status" => 8,
        b"access-control-allow-origin" => 20,
        b"allow" => 22,
        b"cache-control" => 24,
        b"content-encoding" => 26,
        b"content-length" => 28,
        b"content-type" => 31,
        b"date" => 33,
        b"location" => 46,
        b"server" => 54,
        b"vary" => 59,
        b"www-authenticate" => 61,
        _ => return None,
    })
}

/// An HPACK integer with an `n`-bit prefix whose upper bits are `first` (RFC 7541 §5.1).
fn put_int(dst: &mut BytesMut, first: u8, n: u32, value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        dst.put_u8(first | value as u8);
        return;
    }
    dst.put_u8(first | max as u8);
    let mut rest = value - max;
    while rest >= 128 {
        dst.put_u8((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    dst.put_u8(rest as u8);
}

/// A string literal, not Huffman-coded.
fn put_str(dst: &mut BytesMut, s: &[u8]) {
    put_int(dst, 0, 7, s.len());
    dst.put_slice(s);
}

/// Appends one field.
pub fn encode_field(dst: &mut BytesMut, name: &[u8], value: &[u8]) {
    if name == b":status" && value == b"200" {
        dst.put_u8(0x80 | 8);
        return;
    }
    match static_name(name) {
        Some(index) => put_int(dst, 0x00, 4, index),
        None => {
            dst.put_u8(0x00);
            put_str(dst, name);
        }
    }
    put_str(dst, value);
}

/// Appends a response head's or trailers' fields: `status` first when given, then
/// every header but the connection-specific ones HTTP/2 forbids (RFC 9113 §8.2.2).
pub fn encode_headers(
    dst: &mut BytesMut,
    status: Option<http::StatusCode>,
    headers: &http::HeaderMap,
) {
    if let Some(status) = status {
        encode_field(dst, b":status", status.as_str().as_bytes());
    }
    for (name, value) in headers {
        if is_connection_specific(name) {
            continue;
        }
        encode_field(dst, name.as_str().as_bytes(), value.as_bytes());
    }
}

fn is_connection_specific(name: &http::HeaderName) -> bool {
    use http::header::{CONNECTION, TRANSFER_ENCODING, UPGRADE};
    name == CONNECTION
        || name == TRANSFER_ENCODING
        || name == UPGRADE
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(block: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut d = Decoder::default();
        let mut out = Vec::new();
        d.decode(block, &mut |n, v| out.push((n.to_vec(), v.to_vec())))
            .unwrap();
        out
    }

    #[test]
    fn what_we_encode_another_decoder_reads() {
        let mut h = http::HeaderMap::new();
        h.insert("content-type", "application/grpc".parse().unwrap());
        h.insert("grpc-status", "0".parse().unwrap());
        h.insert("x-long", "v".repeat(300).parse().unwrap());
        h.insert("connection", "close".parse().unwrap());
        let mut b = BytesMut::new();
        encode_headers(&mut b, Some(http::StatusCode::OK), &h);
        encode_headers(
            &mut b,
            Some(http::StatusCode::NOT_FOUND),
            &http::HeaderMap::new(),
        );
        assert_eq!(
            decode_all(&b),
            vec![
                (b":status".to_vec(), b"200".to_vec()),
                (b"content-type".to_vec(), b"application/grpc".to_vec()),
                (b"grpc-status".to_vec(), b"0".to_vec()),
                (b"x-long".to_vec(), "v".repeat(300).into_bytes()),
                (b":status".to_vec(), b"404".to_vec()),
            ]
        );
    }

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// RFC 7541 Appendix C.4: three requests with Huffman-coded strings, one decoder.
    #[test]
    fn the_rfc_examples_decode() {
        let mut d = Decoder::default();
        let mut run = |block: &str| {
            let mut out = Vec::new();
            d.decode(&hex(block), &mut |n, v| {
                out.push(format!(
                    "{}: {}",
                    String::from_utf8_lossy(n),
                    String::from_utf8_lossy(v)
                ))
            })
            .unwrap();
            out
        };
        assert_eq!(
            run("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff"),
            [
                ":method: GET",
                ":scheme: http",
                ":path: /",
                ":authority: www.example.com"
            ]
        );
        assert_eq!(
            run("8286 84be 5886 a8eb 1064 9cbf"),
            [
                ":method: GET",
                ":scheme: http",
                ":path: /",
                ":authority: www.example.com",
                "cache-control: no-cache"
            ]
        );
        assert_eq!(
            run("8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf"),
            [
                ":method: GET",
                ":scheme: https",
                ":path: /index.html",
                ":authority: www.example.com",
                "custom-key: custom-value"
            ]
        );
    }

    #[test]
    fn bad_huffman_and_table_updates_are_refused() {
        // EOS coded inside a string; padding that is not all ones; a size update above
        // what we allow; a literal longer than the block.
        for block in ["0084 ffff ffff", "0081 00", "3fe2 1f", "0085 6162"] {
            assert!(
                Decoder::default()
                    .decode(&hex(block), &mut |_, _| {})
                    .is_err(),
                "{block}"
            );
        }
    }

    #[test]
    fn the_table_evicts_to_its_size() {
        let mut d = Decoder::default();
        // A size update to 64 bytes, then two 40-byte entries: only the second stays.
        let block = hex("3f21 4004 6e61 6d65 0476 616c 31 4004 6e61 6d65 0476 616c 32");
        d.decode(&block, &mut |_, _| {}).unwrap();
        let mut got = Vec::new();
        d.decode(&hex("be"), &mut |n, v| got.push((n.to_vec(), v.to_vec())))
            .unwrap();
        assert_eq!(got, vec![(b"name".to_vec(), b"val2".to_vec())]);
        assert!(d.decode(&hex("bf"), &mut |_, _| {}).is_err());
    }

    #[test]
    fn decoding_keeps_the_clients_table_and_refuses_garbage() {
        let mut e = hpack::Encoder::new();
        let fields: Vec<(&[u8], &[u8])> =
            vec![(b":path", b"/etcdserverpb.KV/Put"), (b"te", b"trailers")];
        let first = e.encode(fields.iter().copied());
        let second = e.encode(fields.iter().copied());
        let mut d = Decoder::default();
        for block in [first, second] {
            let mut got = Vec::new();
            d.decode(&block, &mut |n, v| got.push((n.to_vec(), v.to_vec())))
                .unwrap();
            assert_eq!(got.len(), 2);
            assert_eq!(got[0].1, b"/etcdserverpb.KV/Put");
        }
        // An index past both tables; a size update cut short.
        assert!(d.decode(&[0xff, 0x7f], &mut |_, _| {}).is_err());
        assert!(Decoder::default().decode(&[0x3f], &mut |_, _| {}).is_err());
    }
}
