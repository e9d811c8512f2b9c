//! A compact, versionless binary encoding of the Raft types, for the WAL and the peer
//! transport.
//!
//! Guarantees: decoding never panics and never allocates more than the input it was
//! given could hold (every length is checked against the bytes that remain before any
//! allocation: the class of bug behind etcd CVE-2020-15106), and `decode(encode(x)) ==
//! x` for every value. Integers are little-endian; variable parts carry a `u32` length.

use bytes::{BufMut, Bytes, BytesMut};

use crate::types::*;

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("truncated input: needed {needed} more bytes at offset {offset}")]
    Truncated { offset: usize, needed: usize },
    #[error("invalid {what} tag {tag} at offset {offset}")]
    BadTag {
        what: &'static str,
        tag: u8,
        offset: usize,
    },
    #[error("{0} trailing bytes after the value")]
    Trailing(usize),
}

/// Values that can be written with this codec.
pub trait Encode {
    fn encode_to(&self, buf: &mut BytesMut);

    fn encode(&self) -> Bytes {
        let mut buf = BytesMut::new();
        self.encode_to(&mut buf);
        buf.freeze()
    }
}

/// Values that can be read with this codec.
pub trait Decode: Sized {
    fn decode_from(r: &mut Reader) -> Result<Self, CodecError>;

    /// Decodes exactly one value from `data`; trailing bytes are an error.
    fn decode(data: &[u8]) -> Result<Self, CodecError> {
        let owned = Bytes::copy_from_slice(data);
        Self::decode_bytes(owned)
    }

    /// Like [`Decode::decode`], sharing `data` for payloads instead of copying them.
    fn decode_bytes(data: Bytes) -> Result<Self, CodecError> {
        let mut r = Reader { buf: data, pos: 0 };
        let v = Self::decode_from(&mut r)?;
        let rest = r.buf.len() - r.pos;
        if rest != 0 {
            return Err(CodecError::Trailing(rest));
        }
        Ok(v)
    }
}

/// A bounds-checked cursor over encoded bytes.
pub struct Reader {
    buf: Bytes,
    pos: usize,
}

impl Reader {
    fn take(&mut self, n: usize) -> Result<Bytes, CodecError> {
        let remaining = self.buf.len() - self.pos;
        if n > remaining {
            return Err(CodecError::Truncated {
                offset: self.pos,
                needed: n - remaining,
            });
        }
        let out = self.buf.slice(self.pos..self.pos + n);
        self.pos += n;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }

    fn u64(&mut self) -> Result<u64, CodecError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(&b);
        Ok(u64::from_le_bytes(a))
    }

    fn u32(&mut self) -> Result<u32, CodecError> {
        let b = self.take(4)?;
        let mut a = [0u8; 4];
        a.copy_from_slice(&b);
        Ok(u32::from_le_bytes(a))
    }

    fn bytes(&mut self) -> Result<Bytes, CodecError> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    /// A count of items, each at least `min_item` bytes long: checked against the
    /// remaining input so a forged count cannot make us allocate.
    fn count(&mut self, min_item: usize) -> Result<usize, CodecError> {
        let n = self.u32()? as usize;
        let remaining = self.buf.len() - self.pos;
        let need = n.saturating_mul(min_item.max(1));
        if need > remaining {
            return Err(CodecError::Truncated {
                offset: self.pos,
                needed: need - remaining,
            });
        }
        Ok(n)
    }

    fn ids(&mut self) -> Result<Vec<NodeId>, CodecError> {
        let n = self.count(8)?;
        (0..n).map(|_| self.u64()).collect()
    }

    fn bool(&mut self) -> Result<bool, CodecError> {
        let at = self.pos;
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            tag => Err(CodecError::BadTag {
                what: "bool",
                tag,
                offset: at,
            }),
        }
    }
}

fn put_bytes(buf: &mut BytesMut, b: &[u8]) {
    buf.put_u32_le(b.len() as u32);
    buf.put_slice(b);
}

fn put_ids(buf: &mut BytesMut, ids: &[NodeId]) {
    buf.put_u32_le(ids.len() as u32);
    for id in ids {
        buf.put_u64_le(*id);
    }
}

impl Encode for Entry {
    fn encode_to(&self, buf: &mut BytesMut) {
        buf.reserve(21 + self.data.len());
        buf.put_u64_le(self.term);
        buf.put_u64_le(self.index);
        buf.put_u8(match self.entry_type {
            EntryType::Normal => 0,
            EntryType::ConfChange => 1,
        });
        put_bytes(buf, &self.data);
    }
}

impl Decode for Entry {
    fn decode_from(r: &mut Reader) -> Result<Self, CodecError> {
        let term = r.u64()?;
        let index = r.u64()?;
        let at = r.pos;
        let entry_type = match r.u8()? {
            0 => EntryType::Normal,
            1 => EntryType::ConfChange,
            tag => {
                return Err(CodecError::BadTag {
                    what: "entry type",
                    tag,
                    offset: at,
                })
            }
        };
        let data = r.bytes()?;
        Ok(Entry {
            term,
            index,
            entry_type,
            data,
        })
    }
}

impl Encode for HardState {
    fn encode_to(&self, buf: &mut BytesMut) {
        buf.put_u64_le(self.term);
        buf.put_u64_le(self.vote);
        buf.put_u64_le(self.commit);
    }
}

impl Decode for HardState {
    fn decode_from(r: &mut Reader) -> Result<Self, CodecError> {
        Ok(HardState {
            term: r.u64()?,
            vote: r.u64()?,
            commit: r.u64()?,
        })
    }
}

impl Encode for ConfState {
    fn encode_to(&self, buf: &mut BytesMut) {
        put_ids(buf, &self.voters);
        put_ids(buf, &self.learners);
        put_ids(buf, &self.voters_outgoing);
        put_ids(buf, &self.learners_next);
        buf.put_u8(self.auto_leave as u8);
    }
}

impl Decode for ConfState {
    fn decode_from(r: &mut Reader) -> Result<Self, CodecError> {
        Ok(ConfState {
            voters: r.ids()?,
            learners: r.ids()?,
            voters_outgoing: r.ids()?,
            learners_next: r.ids()?,
            auto_leave: r.bool()?,
        })
    }
}

impl Encode for SnapshotMetadata {
    fn encode_to(&self, buf: &mut BytesMut) {
        self.conf_state.encode_to(buf);
        buf.put_u64_le(self.index);
        buf.put_u64_le(self.term);
    }
}

impl Decode for SnapshotMetadata {
    fn decode_from(r: &mut Reader) -> Result<Self, CodecError> {
        Ok(SnapshotMetadata {
            conf_state: ConfState::decode_from(r)?,
            index: r.u64()?,
            term: r.u64()?,
        })
    }
}

impl Encode for Snapshot {
    fn encode_to(&self, buf: &mut BytesMut) {
        self.metadata.encode_to(buf);
        put_bytes(buf, &self.data);
    }
}

impl Decode for Snapshot {
    fn decode_from(r: &mut Reader) -> Result<Self, CodecError> {
        Ok(Snapshot {
            metadata: SnapshotMetadata::decode_from(r)?,
            data: r.bytes()?,
        })
    }
}

impl Encode for ConfChangeV2 {
    fn encode_to(&self, buf: &mut BytesMut) {
        buf.put_u8(match self.transition {
            ConfChangeTransition::Auto => 0,
            ConfChangeTransition::Implicit => 1,
            ConfChangeTransition::Explicit => 2,
        });
        buf.put_u32_le(self.changes.len() as u32);
        for c in &self.changes {
            buf.put_u8(match c.change_type {
                ConfChangeType::AddNode => 0,
                ConfChangeType::RemoveNode => 1,
                ConfChangeType::AddLearnerNode => 2,
            });
            buf.put_u64_le(c.node_id);
        }
        put_bytes(buf, &self.context);
    }
}

impl Decode for ConfChangeV2 {
    fn decode_from(r: &mut Reader) -> Result<Self, CodecError> {
        let at = r.pos;
        let transition = match r.u8()? {
            0 => ConfChangeTransition::Auto,
            1 => ConfChangeTransition::Implicit,
            2 => ConfChangeTransition::Explicit,
            tag => {
                return Err(CodecError::BadTag {
                    what: "conf change transition",
                    tag,
                    offset: at,
                })
            }
        };
        let n = r.count(9)?;
        let mut changes = Vec::with_capacity(n);
        for _ in 0..n {
            let at = r.pos;
            let change_type = match r.u8()? {
                0 => ConfChangeType::AddNode,
                1 => ConfChangeType::RemoveNode,
                2 => ConfChangeType::AddLearnerNode,
                tag => {
                    return Err(CodecError::BadTag {
                        what: "conf change type",
                        tag,
                        offset: at,
                    })
                }
            };
            changes.push(ConfChangeSingle {
                change_type,
                node_id: r.u64()?,
            });
        }
        Ok(ConfChangeV2 {
            transition,
            changes,
            context: r.bytes()?,
        })
    }
}

const MESSAGE_TYPES: [MessageType; 19] = [
    MessageType::Hup,
    MessageType::Beat,
    MessageType::Propose,
    MessageType::Append,
    MessageType::AppendResponse,
    MessageType::RequestVote,
    MessageType::RequestVoteResponse,
    MessageType::RequestPreVote,
    MessageType::RequestPreVoteResponse,
    MessageType::Snapshot,
    MessageType::Heartbeat,
    MessageType::HeartbeatResponse,
    MessageType::SnapStatus,
    MessageType::Unreachable,
    MessageType::TransferLeader,
    MessageType::TimeoutNow,
    MessageType::ReadIndex,
    MessageType::ReadIndexResponse,
    MessageType::CheckQuorum,
];

impl Encode for Message {
    fn encode_to(&self, buf: &mut BytesMut) {
        let tag = MESSAGE_TYPES
            .iter()
            .position(|t| *t == self.msg_type)
            .expect("MESSAGE_TYPES lists every MessageType") as u8;
        buf.put_u8(tag);
        buf.put_u64_le(self.to);
        buf.put_u64_le(self.from);
        buf.put_u64_le(self.term);
        buf.put_u64_le(self.log_term);
        buf.put_u64_le(self.index);
        buf.put_u32_le(self.entries.len() as u32);
        for e in &self.entries {
            e.encode_to(buf);
        }
        buf.put_u64_le(self.commit);
        match &self.snapshot {
            None => buf.put_u8(0),
            Some(s) => {
                buf.put_u8(1);
                s.encode_to(buf);
            }
        }
        buf.put_u8(self.reject as u8);
        buf.put_u64_le(self.reject_hint);
        put_bytes(buf, &self.context);
    }
}

impl Decode for Message {
    fn decode_from(r: &mut Reader) -> Result<Self, CodecError> {
        let at = r.pos;
        let tag = r.u8()?;
        let msg_type = *MESSAGE_TYPES.get(tag as usize).ok_or(CodecError::BadTag {
            what: "message type",
            tag,
            offset: at,
        })?;
        let to = r.u64()?;
        let from = r.u64()?;
        let term = r.u64()?;
        let log_term = r.u64()?;
        let index = r.u64()?;
        let n = r.count(21)?;
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            entries.push(Entry::decode_from(r)?);
        }
        let commit = r.u64()?;
        let snapshot = if r.bool()? {
            Some(Snapshot::decode_from(r)?)
        } else {
            None
        };
        Ok(Message {
            msg_type,
            to,
            from,
            term,
            log_term,
            index,
            entries,
            commit,
            snapshot,
            reject: r.bool()?,
            reject_hint: r.u64()?,
            context: r.bytes()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_message() -> Message {
        Message {
            msg_type: MessageType::Append,
            to: 2,
            from: 1,
            term: 7,
            log_term: 6,
            index: 41,
            entries: vec![
                Entry {
                    term: 7,
                    index: 42,
                    entry_type: EntryType::Normal,
                    data: Bytes::from_static(b"hello"),
                },
                Entry {
                    term: 7,
                    index: 43,
                    entry_type: EntryType::ConfChange,
                    data: ConfChangeV2::simple(ConfChangeType::AddLearnerNode, 4).encode(),
                },
            ],
            commit: 40,
            snapshot: Some(Snapshot {
                data: Bytes::from_static(b"snap"),
                metadata: SnapshotMetadata {
                    conf_state: ConfState {
                        voters: vec![1, 2, 3],
                        learners: vec![4],
                        voters_outgoing: vec![1, 2],
                        learners_next: vec![],
                        auto_leave: true,
                    },
                    index: 30,
                    term: 5,
                },
            }),
            reject: true,
            reject_hint: 12,
            context: Bytes::from_static(b"ctx"),
        }
    }

    #[test]
    fn round_trips() {
        let m = sample_message();
        assert_eq!(Message::decode(&m.encode()).unwrap(), m);
        let hs = HardState {
            term: 3,
            vote: 2,
            commit: 9,
        };
        assert_eq!(HardState::decode(&hs.encode()).unwrap(), hs);
        let cc = ConfChangeV2 {
            transition: ConfChangeTransition::Explicit,
            changes: vec![ConfChangeSingle {
                change_type: ConfChangeType::RemoveNode,
                node_id: 3,
            }],
            context: Bytes::from_static(b"x"),
        };
        assert_eq!(ConfChangeV2::decode(&cc.encode()).unwrap(), cc);
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let enc = sample_message().encode();
        for cut in 0..enc.len() {
            assert!(Message::decode(&enc[..cut]).is_err(), "cut at {cut}");
        }
        let mut extra = enc.to_vec();
        extra.push(0);
        assert_eq!(Message::decode(&extra), Err(CodecError::Trailing(1)));
    }

    #[test]
    fn forged_lengths_do_not_allocate() {
        // An entry claiming a 4 GiB payload in a 25-byte buffer.
        let mut buf = BytesMut::new();
        buf.put_u64_le(1);
        buf.put_u64_le(1);
        buf.put_u8(0);
        buf.put_u32_le(u32::MAX);
        assert!(matches!(
            Entry::decode(&buf),
            Err(CodecError::Truncated { .. })
        ));
        // A message claiming u32::MAX entries.
        let mut buf = BytesMut::new();
        buf.put_u8(3);
        for _ in 0..5 {
            buf.put_u64_le(0);
        }
        buf.put_u32_le(u32::MAX);
        assert!(matches!(
            Message::decode(&buf),
            Err(CodecError::Truncated { .. })
        ));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A deterministic xorshift stream of garbage and mutated valid encodings.
        let valid = sample_message().encode().to_vec();
        let mut x: u64 = 0x9E3779B97F4A7C15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..20_000 {
            let mut v = valid.clone();
            for _ in 0..(next() % 4 + 1) {
                let i = (next() as usize) % v.len();
                v[i] = next() as u8;
            }
            let _ = Message::decode(&v);
            let len = (next() % 64) as usize;
            let garbage: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let _ = Message::decode(&garbage);
            let _ = Entry::decode(&garbage);
            let _ = ConfChangeV2::decode(&garbage);
        }
    }
}
