//! The payloads of etcd 3.4's WAL records and `.snap` files, encoded byte for byte as
//! etcd's gogo-protobuf code writes them: etcd's `raftpb`, `walpb`, `snappb` and
//! `etcdserverpb.Metadata` are proto2 messages whose scalar fields are non-nullable, so
//! every scalar is written even when it is zero, in field-number order (Skiff's prost
//! types are proto3 and leave zeros out, which etcd reads the same but does not write).
//!
//! Field numbers (etcd 3.4):
//! - `etcdserverpb.Metadata` {NodeID 1, ClusterID 2};
//! - `walpb.Snapshot` {index 1, term 2} (`conf_state` 3, a nullable message, not written);
//! - `raftpb.Entry` {Type 1, Term 2, Index 3, Data 4 (written when not nil)};
//! - `raftpb.HardState` {term 1, vote 2, commit 3};
//! - `raftpb.ConfChange` {ID 1, Type 2, NodeID 3, Context 4 (written when not nil)};
//! - `raftpb.ConfState` {voters 1, learners 2, voters_outgoing 3, learners_next 4 (all
//!   repeated, not packed), auto_leave 5};
//! - `raftpb.SnapshotMetadata` {conf_state 1, index 2, term 3}; `raftpb.Snapshot` {data 1,
//!   metadata 2};
//! - `snappb.Snapshot` {crc 1 (CRC-32C of data), data 2}: the whole of a `.snap` file.
//!
//! Guarantees: pure functions of their arguments; decodable by Skiff's prost types
//! (`skiff_proto::raftpb`, `etcdserverpb::Metadata`) into the same values.

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn uint(out: &mut Vec<u8>, field: u64, v: u64) {
    varint(out, field << 3);
    varint(out, v);
}

fn bytes(out: &mut Vec<u8>, field: u64, b: &[u8]) {
    varint(out, field << 3 | 2);
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// `raftpb.EntryType::EntryConfChange`.
pub const ENTRY_CONF_CHANGE: u64 = 1;

/// `raftpb.ConfChangeType::ConfChangeAddNode`.
pub const CONF_CHANGE_ADD_NODE: u64 = 0;

/// `etcdserverpb.Metadata`, the WAL's metadata record.
pub fn metadata(node_id: u64, cluster_id: u64) -> Vec<u8> {
    let mut out = Vec::new();
    uint(&mut out, 1, node_id);
    uint(&mut out, 2, cluster_id);
    out
}

/// `walpb.Snapshot`, the WAL's snapshot record.
pub fn wal_snapshot(index: u64, term: u64) -> Vec<u8> {
    let mut out = Vec::new();
    uint(&mut out, 1, index);
    uint(&mut out, 2, term);
    out
}

/// `raftpb.Entry`.
pub fn entry(entry_type: u64, term: u64, index: u64, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    uint(&mut out, 1, entry_type);
    uint(&mut out, 2, term);
    uint(&mut out, 3, index);
    bytes(&mut out, 4, data);
    out
}

/// `raftpb.HardState`.
pub fn hard_state(term: u64, vote: u64, commit: u64) -> Vec<u8> {
    let mut out = Vec::new();
    uint(&mut out, 1, term);
    uint(&mut out, 2, vote);
    uint(&mut out, 3, commit);
    out
}

/// `raftpb.ConfChange`.
pub fn conf_change(id: u64, change_type: u64, node_id: u64, context: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    uint(&mut out, 1, id);
    uint(&mut out, 2, change_type);
    uint(&mut out, 3, node_id);
    bytes(&mut out, 4, context);
    out
}

/// `raftpb.Snapshot` with a conf state of `voters` only.
pub fn raft_snapshot(data: &[u8], index: u64, term: u64, voters: &[u64]) -> Vec<u8> {
    let mut conf = Vec::new();
    for v in voters {
        uint(&mut conf, 1, *v);
    }
    uint(&mut conf, 5, 0); // auto_leave
    let mut meta = Vec::new();
    bytes(&mut meta, 1, &conf);
    uint(&mut meta, 2, index);
    uint(&mut meta, 3, term);
    let mut out = Vec::new();
    bytes(&mut out, 1, data);
    bytes(&mut out, 2, &meta);
    out
}

/// A `.snap` file's bytes: `snappb.Snapshot` {CRC-32C of `raft_snapshot`, it}.
pub fn snap_file(raft_snapshot: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    uint(&mut out, 1, u64::from(crc32c::crc32c(raft_snapshot)));
    bytes(&mut out, 2, raft_snapshot);
    out
}

/// A `.snap` file's name: `<term>-<index>.snap`, 16 hex digits each.
pub fn snap_name(term: u64, index: u64) -> String {
    format!("{term:016x}-{index:016x}.snap")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeros_are_written_as_etcd_writes_them() {
        // etcd's empty walpb.Snapshot{} and the CRC record's absent data.
        assert_eq!(wal_snapshot(0, 0), [0x08, 0x00, 0x10, 0x00]);
        assert_eq!(hard_state(1, 0, 1), [0x08, 1, 0x10, 0, 0x18, 1]);
        // ConfChange{ID 0, AddNode, NodeID 1, Context "x"}.
        assert_eq!(
            conf_change(0, CONF_CHANGE_ADD_NODE, 1, b"x"),
            [0x08, 0, 0x10, 0, 0x18, 1, 0x22, 1, b'x']
        );
    }

    #[test]
    fn snapshot_metadata_carries_voters_unpacked_and_auto_leave() {
        let s = raft_snapshot(b"d", 1, 1, &[5]);
        assert_eq!(
            s,
            [0x0a, 1, b'd', 0x12, 10, 0x0a, 4, 0x08, 5, 0x28, 0, 0x10, 1, 0x18, 1]
        );
        let f = snap_file(&s);
        assert_eq!(f[0], 0x08);
        assert!(f.ends_with(&s));
    }
}
