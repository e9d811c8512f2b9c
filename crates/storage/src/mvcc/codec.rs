//! On-disk encodings of the `key` table, identical to etcd's so HashKV values can be
//! compared with etcd's for the same history:
//!
//! - row key: the revision as 8 bytes big-endian `main`, the byte `_`, 8 bytes big-endian
//!   `sub` (17 bytes, so rows sort by revision); a tombstone (delete) appends `t`.
//! - row value: the protobuf encoding of `mvccpb.KeyValue` (fields 1..6, proto3 rules:
//!   zero values omitted). A tombstone's value holds only the key.
//!
//! Decoding is strict and bounded: a malformed row is reported as corruption, never a panic.

use super::types::KeyValue;

/// A revision: `main` is the store revision of a write (one per txn), `sub` orders the
/// writes inside it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Revision {
    pub main: i64,
    pub sub: i64,
}

impl Revision {
    pub fn new(main: i64, sub: i64) -> Self {
        Revision { main, sub }
    }
}

pub(crate) const REV_LEN: usize = 17;
pub(crate) const TOMBSTONE_MARK: u8 = b't';

/// Row key for a revision; `tombstone` appends the delete marker.
pub(crate) fn rev_key(rev: Revision, tombstone: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(REV_LEN + 1);
    out.extend_from_slice(&rev.main.to_be_bytes());
    out.push(b'_');
    out.extend_from_slice(&rev.sub.to_be_bytes());
    if tombstone {
        out.push(TOMBSTONE_MARK);
    }
    out
}

/// The smallest row key at main revision `main` (a bound for range scans).
pub(crate) fn rev_lower_bound(main: i64) -> Vec<u8> {
    rev_key(Revision::new(main, 0), false)
}

/// Parses a row key; `None` if it is not a valid revision key.
pub(crate) fn parse_rev_key(k: &[u8]) -> Option<(Revision, bool)> {
    if k.len() != REV_LEN && !(k.len() == REV_LEN + 1 && k[REV_LEN] == TOMBSTONE_MARK) {
        return None;
    }
    if k[8] != b'_' {
        return None;
    }
    let main = i64::from_be_bytes(k[0..8].try_into().ok()?);
    let sub = i64::from_be_bytes(k[9..17].try_into().ok()?);
    Some((Revision { main, sub }, k.len() == REV_LEN + 1))
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bytes_field(out: &mut Vec<u8>, field: u64, b: &[u8]) {
    if b.is_empty() {
        return;
    }
    put_varint(out, field << 3 | 2);
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn put_int_field(out: &mut Vec<u8>, field: u64, v: i64) {
    if v == 0 {
        return;
    }
    put_varint(out, field << 3);
    // int64 is encoded as its two's complement u64 (negative numbers take 10 bytes).
    put_varint(out, v as u64);
}

/// Protobuf encoding of `mvccpb.KeyValue`.
pub(crate) fn encode_kv(kv: &KeyValue) -> Vec<u8> {
    let mut out = Vec::with_capacity(kv.key.len() + kv.value.len() + 24);
    put_bytes_field(&mut out, 1, &kv.key);
    put_int_field(&mut out, 2, kv.create_revision);
    put_int_field(&mut out, 3, kv.mod_revision);
    put_int_field(&mut out, 4, kv.version);
    put_bytes_field(&mut out, 5, &kv.value);
    put_int_field(&mut out, 6, kv.lease);
    out
}

/// Decodes a protobuf varint at `*pos`, advancing it; `None` if the bytes end first or
/// it runs past 10 bytes.
pub(crate) fn get_varint(b: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*pos)?;
        *pos += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// A field of an encoded message: a varint or a length-delimited run of bytes.
enum Field<'a> {
    Varint(i64),
    Bytes(&'a [u8]),
}

/// Calls `f(field number, value)` for each field of the encoded message `b`, in order,
/// until it returns false; `None` if the bytes are not a valid encoding (as far as read).
fn for_each_field<'a>(b: &'a [u8], mut f: impl FnMut(u64, Field<'a>) -> bool) -> Option<()> {
    let mut pos = 0;
    while pos < b.len() {
        let tag = get_varint(b, &mut pos)?;
        let (field, wire) = (tag >> 3, tag & 7);
        let value = match wire {
            0 => Field::Varint(get_varint(b, &mut pos)? as i64),
            2 => {
                let len = usize::try_from(get_varint(b, &mut pos)?).ok()?;
                let end = pos.checked_add(len)?;
                let bytes = b.get(pos..end)?;
                pos = end;
                Field::Bytes(bytes)
            }
            _ => return None,
        };
        if !f(field, value) {
            break;
        }
    }
    Some(())
}

/// Decodes `mvccpb.KeyValue`; `None` if the bytes are not a valid encoding.
pub(crate) fn decode_kv(b: &[u8]) -> Option<KeyValue> {
    let mut kv = KeyValue::default();
    for_each_field(b, |field, value| {
        match (field, value) {
            (1, Field::Bytes(v)) => kv.key = v.to_vec(),
            (2, Field::Varint(v)) => kv.create_revision = v,
            (3, Field::Varint(v)) => kv.mod_revision = v,
            (4, Field::Varint(v)) => kv.version = v,
            (5, Field::Bytes(v)) => kv.value = v.to_vec(),
            (6, Field::Varint(v)) => kv.lease = v,
            _ => {}
        }
        true
    })?;
    Some(kv)
}

/// Only the key of an encoded KeyValue (cheaper than a full decode; used by compaction,
/// which does not need the value).
pub(crate) fn decode_kv_key(b: &[u8]) -> Option<Vec<u8>> {
    let mut key = None;
    for_each_field(b, |field, value| match (field, value) {
        (1, Field::Bytes(v)) => {
            key = Some(v.to_vec());
            false
        }
        _ => true,
    })?;
    Some(key.unwrap_or_default())
}

/// The key, `create_revision` and `version` of an encoded KeyValue, without copying its
/// value (the index rebuild needs no more).
pub(crate) fn decode_kv_head(b: &[u8]) -> Option<(Vec<u8>, i64, i64)> {
    let (mut key, mut created, mut version) = (Vec::new(), 0, 0);
    for_each_field(b, |field, value| {
        match (field, value) {
            (1, Field::Bytes(v)) => key = v.to_vec(),
            (2, Field::Varint(v)) => created = v,
            (4, Field::Varint(v)) => version = v,
            _ => {}
        }
        true
    })?;
    Some((key, created, version))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_roundtrip_and_known_bytes() {
        let kv = KeyValue {
            key: b"foo".to_vec(),
            create_revision: 2,
            mod_revision: 300,
            version: 1,
            value: b"bar".to_vec(),
            lease: -1,
        };
        let enc = encode_kv(&kv);
        assert_eq!(decode_kv(&enc), Some(kv.clone()));
        assert_eq!(decode_kv_key(&enc), Some(b"foo".to_vec()));
        assert_eq!(
            decode_kv_head(&enc),
            Some((b"foo".to_vec(), kv.create_revision, kv.version))
        );
        // Field 1 (key), length 3; field 2 varint 2; field 3 varint 300 = ac 02.
        assert_eq!(
            &enc[..10],
            &[0x0a, 3, b'f', b'o', b'o', 0x10, 2, 0x18, 0xac, 0x02]
        );
        assert!(decode_kv(&[0x0a, 0xff]).is_none());
        assert!(decode_kv(&[0x0b]).is_none());
    }

    #[test]
    fn rev_key_roundtrip_and_order() {
        let a = rev_key(Revision::new(5, 1), false);
        let b = rev_key(Revision::new(5, 2), true);
        let c = rev_key(Revision::new(6, 0), false);
        assert!(a < b && b < c);
        assert_eq!(parse_rev_key(&b), Some((Revision::new(5, 2), true)));
        assert_eq!(parse_rev_key(&a), Some((Revision::new(5, 1), false)));
        assert_eq!(parse_rev_key(b"short"), None);
    }
}
