//! Record framing for WAL segments.
//!
//! A record is a 9-byte header followed by its payload:
//!
//! ```text
//! offset 0  u32 LE  payload length
//! offset 4  u32 LE  CRC32C over (length bytes, type byte, payload), seeded with the
//!                   previous record's CRC (the chain); a `Crc` record is seeded with 0
//! offset 8  u8      record type (never 0)
//! offset 9  payload
//! ```
//!
//! Chaining the CRC means a record cannot be dropped, duplicated or moved without the
//! next record failing its check. An all-zero header (length 0, CRC 0, type 0) is how
//! the preallocated space after the last record reads, so type 0 is never used and a
//! zero header means "no more records".
//!
//! Guarantees of [`Scanner`]: it never panics on any input and never allocates (it
//! hands out slices of the input); a length is compared with [`MAX_RECORD_LEN`] and
//! with the bytes that remain before the payload is touched (etcd CVE-2020-15106).

/// Bytes before the payload.
pub const HEADER_LEN: usize = 9;

/// The largest payload a record may have (64 MiB). Raft entries are bounded far below
/// this by the server's request size limit; anything larger on disk is corruption.
pub const MAX_RECORD_LEN: usize = 64 << 20;

/// What a record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordType {
    /// First record of every segment: the chain CRC at the end of the previous
    /// segment (u32 LE), so segments link up and each can be verified alone.
    Crc = 1,
    /// The caller's opaque metadata (member and cluster ids), repeated per segment.
    Metadata = 2,
    /// A `skiff_raft::HardState` in the raft codec.
    HardState = 3,
    /// A `skiff_raft::Entry` in the raft codec.
    Entry = 4,
    /// A snapshot marker: index u64 LE, term u64 LE.
    Snapshot = 5,
    /// Second record of every segment written since format versions exist: the
    /// segment's format version (u32 LE, see [`super::FORMAT_VERSION`]). Older
    /// segments have none and are version 1.
    Version = 6,
}

impl RecordType {
    fn from_u8(t: u8) -> Option<RecordType> {
        Some(match t {
            1 => RecordType::Crc,
            2 => RecordType::Metadata,
            3 => RecordType::HardState,
            4 => RecordType::Entry,
            5 => RecordType::Snapshot,
            6 => RecordType::Version,
            _ => return None,
        })
    }
}

fn record_crc(seed: u32, len: [u8; 4], rtype: u8, payload: &[u8]) -> u32 {
    let c = crc32c::crc32c_append(seed, &len);
    let c = crc32c::crc32c_append(c, &[rtype]);
    crc32c::crc32c_append(c, payload)
}

/// Appends one framed record to `buf` and advances the chain. The caller checks
/// `payload.len() <= MAX_RECORD_LEN` first.
pub fn encode(buf: &mut Vec<u8>, chain: &mut u32, rtype: RecordType, payload: &[u8]) {
    debug_assert!(payload.len() <= MAX_RECORD_LEN);
    let len = (payload.len() as u32).to_le_bytes();
    let seed = if rtype == RecordType::Crc { 0 } else { *chain };
    let crc = record_crc(seed, len, rtype as u8, payload);
    buf.reserve(HEADER_LEN + payload.len());
    buf.extend_from_slice(&len);
    buf.extend_from_slice(&crc.to_le_bytes());
    buf.push(rtype as u8);
    buf.extend_from_slice(payload);
    *chain = crc;
}

/// Why the bytes at an offset are not a valid record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bad {
    /// The header or payload runs past the end of the file.
    Truncated { len: usize },
    /// The length is larger than [`MAX_RECORD_LEN`].
    TooLong { len: u64 },
    /// The checksum does not match (the chain or the bytes are wrong).
    Crc { stored: u32, computed: u32 },
    /// The checksum matches but the type is unknown.
    UnknownType(u8),
}

impl std::fmt::Display for Bad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bad::Truncated { len } => {
                write!(f, "record of {len} bytes runs past the end of the file")
            }
            Bad::TooLong { len } => {
                write!(f, "impossible record length {len} (limit {MAX_RECORD_LEN})")
            }
            Bad::Crc { stored, computed } => write!(
                f,
                "CRC mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ),
            Bad::UnknownType(t) => write!(f, "unknown record type {t}"),
        }
    }
}

/// One step of a scan.
#[derive(Debug, PartialEq, Eq)]
pub enum Item<'a> {
    /// A record whose CRC verified.
    Record {
        offset: usize,
        rtype: RecordType,
        payload: &'a [u8],
    },
    /// No more records: the end of the input or an all-zero header at `offset`.
    End { offset: usize },
    /// Bytes at `offset` are not a valid record; `extent_end` is where the bad record
    /// would end if its length were right (the end of its header if the length is
    /// impossible, the end of the input if it runs past it).
    Bad {
        offset: usize,
        extent_end: usize,
        /// The record's CRC field, if its header is complete.
        stored_crc: Option<u32>,
        why: Bad,
    },
}

/// Walks the records of one segment's bytes, verifying the CRC chain.
pub struct Scanner<'a> {
    data: &'a [u8],
    pos: usize,
    chain: u32,
}

impl<'a> Scanner<'a> {
    /// A scanner starting at offset 0. `chain` seeds the first non-`Crc` record (a
    /// segment starts with a `Crc` record, which resets the chain itself).
    pub fn new(data: &'a [u8], chain: u32) -> Scanner<'a> {
        Scanner {
            data,
            pos: 0,
            chain,
        }
    }

    /// The chain value after the last record returned.
    pub fn chain(&self) -> u32 {
        self.chain
    }

    /// The next item. After `End` or `Bad` the scanner stays where it is.
    pub fn next_item(&mut self) -> Item<'a> {
        let at = self.pos;
        let rest = &self.data[at..];
        if rest.len() < HEADER_LEN {
            if rest.iter().all(|b| *b == 0) {
                return Item::End { offset: at };
            }
            return Item::Bad {
                offset: at,
                extent_end: self.data.len(),
                stored_crc: None,
                why: Bad::Truncated { len: 0 },
            };
        }
        let header = &rest[..HEADER_LEN];
        if header.iter().all(|b| *b == 0) {
            return Item::End { offset: at };
        }
        let len_bytes = [header[0], header[1], header[2], header[3]];
        let len64 = u64::from(u32::from_le_bytes(len_bytes));
        let stored = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let tbyte = header[8];
        if len64 > MAX_RECORD_LEN as u64 {
            return Item::Bad {
                offset: at,
                extent_end: at + HEADER_LEN,
                stored_crc: Some(stored),
                why: Bad::TooLong { len: len64 },
            };
        }
        // Bounded by MAX_RECORD_LEN above, so this fits in usize.
        let len = len64 as usize;
        if len > rest.len() - HEADER_LEN {
            return Item::Bad {
                offset: at,
                extent_end: self.data.len(),
                stored_crc: Some(stored),
                why: Bad::Truncated { len },
            };
        }
        let payload = &rest[HEADER_LEN..HEADER_LEN + len];
        let rtype = RecordType::from_u8(tbyte);
        let seed = if rtype == Some(RecordType::Crc) {
            0
        } else {
            self.chain
        };
        let computed = record_crc(seed, len_bytes, tbyte, payload);
        let extent_end = at + HEADER_LEN + len;
        if computed != stored {
            return Item::Bad {
                offset: at,
                extent_end,
                stored_crc: Some(stored),
                why: Bad::Crc { stored, computed },
            };
        }
        let Some(rtype) = rtype else {
            return Item::Bad {
                offset: at,
                extent_end,
                stored_crc: Some(stored),
                why: Bad::UnknownType(tbyte),
            };
        };
        self.chain = computed;
        self.pos = extent_end;
        Item::Record {
            offset: at,
            rtype,
            payload,
        }
    }
}

/// The offset of the first record in `data[from..until]` (start offsets) whose CRC
/// verifies when seeded with `seed`, if any. Used to tell a torn write (nothing valid
/// follows the bad record) from a corrupted length that swallowed the records after
/// it: their chain still starts from the bad record's stored CRC. Never allocates.
pub fn find_chained_record(data: &[u8], from: usize, until: usize, seed: u32) -> Option<usize> {
    let until = until.min(data.len());
    (from..until).find(|&p| {
        let rest = &data[p..];
        if rest.len() < HEADER_LEN {
            return false;
        }
        let tbyte = rest[8];
        // CRC and version records never appear mid-segment; unknown types cannot be
        // valid.
        if !matches!(
            RecordType::from_u8(tbyte),
            Some(t) if t != RecordType::Crc && t != RecordType::Version
        ) {
            return false;
        }
        let len_bytes = [rest[0], rest[1], rest[2], rest[3]];
        let len = u32::from_le_bytes(len_bytes) as usize;
        if len > MAX_RECORD_LEN || len > rest.len() - HEADER_LEN {
            return false;
        }
        let stored = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        record_crc(seed, len_bytes, tbyte, &rest[HEADER_LEN..HEADER_LEN + len]) == stored
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_chain() {
        let mut buf = Vec::new();
        let mut chain = 0;
        encode(&mut buf, &mut chain, RecordType::Crc, &7u32.to_le_bytes());
        encode(&mut buf, &mut chain, RecordType::Metadata, b"meta");
        encode(&mut buf, &mut chain, RecordType::Entry, b"");
        buf.extend_from_slice(&[0; 32]);
        let mut s = Scanner::new(&buf, 0);
        assert!(matches!(
            s.next_item(),
            Item::Record {
                rtype: RecordType::Crc,
                ..
            }
        ));
        assert_eq!(
            s.next_item(),
            Item::Record {
                offset: 13,
                rtype: RecordType::Metadata,
                payload: b"meta"
            }
        );
        assert!(matches!(
            s.next_item(),
            Item::Record {
                rtype: RecordType::Entry,
                ..
            }
        ));
        assert_eq!(s.next_item(), Item::End { offset: 35 });
        assert_eq!(s.chain(), chain);
    }

    #[test]
    fn swapped_records_break_the_chain() {
        let mut a = Vec::new();
        let mut chain = 0;
        encode(&mut a, &mut chain, RecordType::Crc, &0u32.to_le_bytes());
        let mut r1 = Vec::new();
        let mut r2 = Vec::new();
        let mut c = chain;
        encode(&mut r1, &mut c, RecordType::Entry, b"one");
        encode(&mut r2, &mut c, RecordType::Entry, b"two");
        a.extend_from_slice(&r2);
        a.extend_from_slice(&r1);
        let mut s = Scanner::new(&a, 0);
        s.next_item();
        assert!(matches!(
            s.next_item(),
            Item::Bad {
                why: Bad::Crc { .. },
                ..
            }
        ));
    }

    #[test]
    fn impossible_length_is_reported_before_reading() {
        let mut buf = vec![0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4, 4];
        buf.extend_from_slice(&[1; 20]);
        let mut s = Scanner::new(&buf, 0);
        assert_eq!(
            s.next_item(),
            Item::Bad {
                offset: 0,
                extent_end: HEADER_LEN,
                stored_crc: Some(0x04030201),
                why: Bad::TooLong {
                    len: u64::from(u32::MAX)
                }
            }
        );
    }
}
