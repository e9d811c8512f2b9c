//! Fuzz targets for the member's decoders that read the network and the log, replayed
//! from a committed corpus as an ordinary stable test (the disk formats' targets are
//! `crates/storage/tests/fuzz_replay.rs`, in the same style):
//! - `peer_frame`: a peer stream's `RaftFrame` (protobuf), each message in it decoded
//!   with the raft codec, checked as the peer service checks it, then stepped into a
//!   Raft node (a follower or a leader of three, with a log) and its `Ready` persisted
//!   and advanced as the node loop does: a crafted message must be refused, never trip
//!   an assertion.
//! - `client_request`: a client request as the gRPC services (protobuf) or the JSON
//!   gateway (jsonpb) read it, then the facade's checks (`skiff_api::validate`), the
//!   conversion to the store's request and the store's own checks; or a log entry's
//!   `InternalRequest` as the apply thread decodes it, converted and checked the same
//!   way. The first input byte picks the codec, the second the request kind.
//!
//! Each must never panic and never make an allocation larger than a fixed cost plus
//! 16 x its input. The corpus is `tests/corpus/<target>/`: every file as it is, then
//! seeded mutations (xorshift, fixed seeds, so a failure reproduces) until the
//! target's time budget is spent; a failing input is written to the temp dir. A
//! fuzzer (cargo-fuzz) can grow the corpus; `cargo test -p skiff-server --test
//! fuzz_replay -- --ignored write_corpus` rewrites the seeds from the encoders.
//!
//! Its own test binary, because it installs a counting global allocator.

#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message as _;
use skiff_api::validate;
use skiff_proto::etcdserverpb as pb;
use skiff_proto::skiffpb::{internal_request::Request as Req, InternalRequest, RaftFrame};
use skiff_raft::{
    ConfState, Config, Decode, Encode, Entry, EntryType, HardState, MemStorage, Message,
    MessageType, RawNode, Snapshot, SnapshotMetadata,
};
use skiff_server::convert;

#[path = "../../storage/tests/common/fuzz.rs"]
mod fuzz;
use fuzz::Rng;

/// How long each target's replay (corpus and mutations) may run: 2 s, or
/// `SKIFF_FUZZ_SECS` (a longer run is a fuzzing session on stable; `SKIFF_FUZZ_SEED`
/// then varies the mutations).
fn budget() -> Duration {
    let secs = std::env::var("SKIFF_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    Duration::from_secs(secs)
}

fn seed_offset() -> u64 {
    std::env::var("SKIFF_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}
/// The member's default `--max-txn-ops`.
const MAX_TXN_OPS: usize = 128;
/// This member's ID in the peer-frame target.
const LOCAL: u64 = 2;

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(target)
}

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = fs::read_dir(corpus_dir(target))
        .unwrap_or_else(|e| panic!("corpus of {target}: {e}"))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let out: Vec<_> = files
        .into_iter()
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                fs::read(&p).unwrap(),
            )
        })
        .collect();
    assert!(!out.is_empty(), "the corpus of {target} is empty");
    out
}

fn mutate(rng: &mut Rng, v: &mut Vec<u8>, others: &[(String, Vec<u8>)]) {
    if v.len() < 2 {
        v.extend(rng.bytes(64));
        return;
    }
    // The first bytes pick the codec and kind, or the node: keep them mostly.
    let from = if rng.below(8) == 0 {
        0
    } else {
        2.min(v.len() - 1)
    };
    let span = (v.len() - from) as u64;
    match rng.below(6) {
        0 => {
            for _ in 0..rng.below(4) + 1 {
                let i = from + rng.below(span) as usize;
                v[i] ^= 1 << rng.below(8);
            }
        }
        1 => {
            // A forged length: a protobuf varint or a raft codec u32 of a huge value.
            let i = from + rng.below(span) as usize;
            let forged: &[u8] = if rng.below(2) == 0 {
                &[0xff, 0xff, 0xff, 0xff, 0x0f]
            } else {
                &[0xff, 0xff, 0xff, 0x7f]
            };
            let end = (i + forged.len()).min(v.len());
            v[i..end].copy_from_slice(&forged[..end - i]);
        }
        2 => v.truncate(from + rng.below(span) as usize),
        3 => {
            let (_, o) = &others[rng.below(others.len() as u64) as usize];
            let cut = from + rng.below(span) as usize;
            let start = rng.below(o.len() as u64 + 1) as usize;
            v.truncate(cut);
            v.extend_from_slice(&o[start.min(o.len())..]);
        }
        4 => {
            let i = from + rng.below(span + 1) as usize;
            let extra = rng.bytes(16);
            v.splice(i..i, extra);
        }
        _ => {
            let i = from + rng.below(span) as usize;
            v[i] = rng.next() as u8;
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Accepted,
    Refused,
}

/// Counts the allocations of `f`, not of the target's setup.
fn tracked<T>(f: impl FnOnce() -> T) -> T {
    fuzz::track(true);
    let out = f();
    fuzz::track(false);
    out
}

fn replay(
    name: &str,
    seed: u64,
    fixed: usize,
    mut target: impl FnMut(&[u8]) -> Outcome,
) -> (usize, usize) {
    // The allocation counter is one for the process: one target at a time.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let files = corpus(name);
    let seed = seed ^ seed_offset();
    let mut rng = Rng(seed);
    let (mut accepted, mut refused) = (0, 0);
    let mut run = |input: &[u8], what: &dyn Fn() -> String| {
        fuzz::reset();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| target(input)))
            .unwrap_or_else(|panic| {
                fuzz::track(false);
                let keep = std::env::temp_dir().join(format!("skiff-fuzz-{name}-failure"));
                let _ = fs::write(&keep, input);
                eprintln!(
                    "{name}: panicked on {}; input written to {}",
                    what(),
                    keep.display()
                );
                std::panic::resume_unwind(panic)
            });
        let largest = fuzz::largest();
        if largest > fixed + 16 * input.len() {
            let keep = std::env::temp_dir().join(format!("skiff-fuzz-{name}-failure"));
            let _ = fs::write(&keep, input);
            eprintln!("{name}: failing input written to {}", keep.display());
        }
        assert!(
            largest <= fixed + 16 * input.len(),
            "{name}: an allocation of {largest} bytes for {} input bytes ({})",
            input.len(),
            what()
        );
        match outcome {
            Outcome::Accepted => accepted += 1,
            Outcome::Refused => refused += 1,
        }
    };
    for (file, data) in &files {
        run(data, &|| format!("corpus file {file}"));
    }
    let (start, budget) = (Instant::now(), budget());
    let mut round = 0u64;
    while start.elapsed() < budget {
        let (file, data) = &files[rng.below(files.len() as u64) as usize];
        let mut input = data.clone();
        for _ in 0..rng.below(3) + 1 {
            mutate(&mut rng, &mut input, &files);
        }
        run(&input, &|| {
            format!("round {round} from {file}, seed {seed:#x}")
        });
        round += 1;
    }
    eprintln!("{name}: {accepted} accepted, {refused} refused in {round} mutated rounds");
    assert!(
        accepted > 0 && refused > 0,
        "{name}: {accepted} accepted, {refused} refused"
    );
    (accepted, refused)
}

// ---- peer_frame ----

/// Member 2 of {1, 2, 3} at term 2 with entries 1..=5 (terms 1,1,2,2,2), commit 3; a
/// follower, or (`leader`) elected at term 3 with 1 and 3 as its followers.
fn node(leader: bool) -> RawNode<MemStorage> {
    let storage = MemStorage::new_with_conf_state(vec![1, 2, 3], vec![]);
    let ents: Vec<Entry> = [1, 1, 2, 2, 2]
        .iter()
        .enumerate()
        .map(|(i, t)| Entry {
            term: *t,
            index: i as u64 + 1,
            entry_type: EntryType::Normal,
            data: "x".into(),
        })
        .collect();
    storage.wl().append(&ents).unwrap();
    storage.wl().set_hard_state(HardState {
        term: 2,
        vote: 1,
        commit: 3,
    });
    let config = Config {
        id: LOCAL,
        election_tick: 10,
        heartbeat_tick: 1,
        pre_vote: false,
        ..Config::default()
    };
    let mut raw = RawNode::new(&config, storage).unwrap();
    if leader {
        raw.campaign().unwrap();
        let term = raw.status().hard_state.term;
        raw.step(Message {
            msg_type: MessageType::RequestVoteResponse,
            from: 1,
            to: LOCAL,
            term,
            ..Default::default()
        })
        .unwrap();
        persist(&mut raw);
    }
    raw
}

/// What the node loop does with a `Ready`: persist, then advance.
fn persist(raw: &mut RawNode<MemStorage>) {
    while raw.has_ready() {
        let rd = raw.ready();
        if let Some(snap) = &rd.snapshot {
            let _ = raw.store().wl().apply_snapshot(snap.clone());
        }
        let _ = raw.store().wl().append(&rd.entries);
        if let Some(hs) = rd.hard_state {
            raw.store().wl().set_hard_state(hs);
        }
        raw.advance(rd);
    }
}

/// The first input byte picks the node (odd: the leader), the rest is the frame.
fn peer_frame_target(input: &[u8]) -> Outcome {
    let Some((role, body)) = input.split_first() else {
        return Outcome::Refused;
    };
    let mut raw = node(role & 1 == 1);
    tracked(|| {
        let Ok(frame) = RaftFrame::decode(body) else {
            return Outcome::Refused;
        };
        let mut stepped = false;
        for bytes in frame.messages {
            let Ok(m) = Message::decode_bytes(bytes) else {
                return Outcome::Refused;
            };
            // The peer service's checks (the frame's sender is a member).
            if m.to != LOCAL || m.from != frame.from || m.msg_type.is_local() {
                return Outcome::Refused;
            }
            if raw.step(m).is_err() {
                return Outcome::Refused;
            }
            stepped = true;
            persist(&mut raw);
        }
        if stepped {
            Outcome::Accepted
        } else {
            Outcome::Refused
        }
    })
}

#[test]
fn peer_frame_corpus_replays() {
    // The node's own bookkeeping for a step (progress, read states): fixed.
    replay("peer_frame", 0x5EED_0101, 64 * 1024, peer_frame_target);
}

// ---- client_request ----

/// The codecs of a client request (first input byte).
const PROTOBUF: u8 = 0;
const JSON: u8 = 1;
const LOG_ENTRY: u8 = 2;

/// The request kinds (second input byte), in this order.
const KINDS: [&str; 6] = [
    "range",
    "put",
    "delete_range",
    "txn",
    "compaction",
    "lease_grant",
];

/// A decoded client request.
enum Request {
    Range(pb::RangeRequest),
    Put(pb::PutRequest),
    Delete(pb::DeleteRangeRequest),
    Txn(pb::TxnRequest),
    Compaction(pb::CompactionRequest),
    LeaseGrant(pb::LeaseGrantRequest),
}

fn decode_wire(kind: u8, body: &[u8]) -> Option<Request> {
    Some(match kind as usize % KINDS.len() {
        0 => Request::Range(pb::RangeRequest::decode(body).ok()?),
        1 => Request::Put(pb::PutRequest::decode(body).ok()?),
        2 => Request::Delete(pb::DeleteRangeRequest::decode(body).ok()?),
        3 => Request::Txn(pb::TxnRequest::decode(body).ok()?),
        4 => Request::Compaction(pb::CompactionRequest::decode(body).ok()?),
        _ => Request::LeaseGrant(pb::LeaseGrantRequest::decode(body).ok()?),
    })
}

fn decode_json(kind: u8, body: &[u8]) -> Option<Request> {
    use skiff_server::gateway::decode::message;
    let text = std::str::from_utf8(body).ok()?;
    Some(match kind as usize % KINDS.len() {
        0 => Request::Range(message(text).ok()?),
        1 => Request::Put(message(text).ok()?),
        2 => Request::Delete(message(text).ok()?),
        3 => Request::Txn(message(text).ok()?),
        4 => Request::Compaction(message(text).ok()?),
        _ => Request::LeaseGrant(message(text).ok()?),
    })
}

fn decode_log_entry(body: &[u8]) -> Option<Request> {
    let entry = InternalRequest::decode(body).ok()?;
    Some(match entry.request? {
        Req::Put(p) => Request::Put(p),
        Req::DeleteRange(d) => Request::Delete(d),
        Req::Txn(t) => Request::Txn(t),
        Req::Compaction(c) => Request::Compaction(c),
        Req::LeaseGrant(l) => Request::LeaseGrant(l),
        _ => return None,
    })
}

/// The facade's checks, the conversion to the store's request, the store's checks.
fn check(req: Request) -> Result<(), skiff_api::EtcdError> {
    match req {
        Request::Range(r) => {
            validate::check_range(&r)?;
            validate::check_range(&convert::range_from_pb(r))
        }
        Request::Put(p) => {
            validate::check_put(&p)?;
            validate::check_put(&convert::put_from_pb(p))
        }
        Request::Delete(d) => {
            validate::check_delete(&d)?;
            validate::check_delete(&convert::delete_from_pb(d))
        }
        Request::Txn(t) => {
            validate::check_txn(&t, MAX_TXN_OPS)?;
            validate::check_txn(&convert::txn_from_pb(t)?, MAX_TXN_OPS)
        }
        Request::Compaction(c) => {
            let _ = convert::compaction_from_pb(c);
            Ok(())
        }
        Request::LeaseGrant(l) => validate::check_lease_ttl(l.ttl),
    }
}

fn client_request_target(input: &[u8]) -> Outcome {
    let (codec, kind, body) = match input {
        [c, k, body @ ..] => (*c, *k, body),
        _ => return Outcome::Refused,
    };
    tracked(|| {
        let req = match codec % 3 {
            PROTOBUF => decode_wire(kind, body),
            JSON => decode_json(kind, body),
            _ => decode_log_entry(body),
        };
        match req.map(check) {
            Some(Ok(())) => Outcome::Accepted,
            _ => Outcome::Refused,
        }
    })
}

#[test]
fn client_request_corpus_replays() {
    // serde_json's and the gateway's maps for a small object: fixed.
    replay(
        "client_request",
        0x5EED_0102,
        64 * 1024,
        client_request_target,
    );
}

// ---- the seeds ----

fn write(target: &str, name: &str, data: &[u8]) {
    let d = corpus_dir(target);
    fs::create_dir_all(&d).unwrap();
    fs::write(d.join(name), data).unwrap();
}

fn frame(from: u64, messages: Vec<Message>) -> Vec<u8> {
    RaftFrame {
        cluster_id: 7,
        from,
        to: LOCAL,
        messages: messages.iter().map(|m| m.encode()).collect(),
    }
    .encode_to_vec()
}

fn ent(index: u64, term: u64) -> Entry {
    Entry {
        term,
        index,
        entry_type: EntryType::Normal,
        data: Bytes::from_static(b"value"),
    }
}

fn msg(t: MessageType, from: u64, term: u64) -> Message {
    Message {
        msg_type: t,
        from,
        to: LOCAL,
        term,
        ..Default::default()
    }
}

/// Rewrites the seed corpus from the current encoders (by hand, when a format changes).
#[test]
#[ignore]
fn write_corpus() {
    // Peer frames, each for the follower (first byte 0) and the leader (1).
    let mut append = msg(MessageType::Append, 1, 2);
    append.index = 5;
    append.log_term = 2;
    append.commit = 5;
    append.entries = vec![ent(6, 2), ent(7, 2)];
    let mut heartbeat = msg(MessageType::Heartbeat, 1, 2);
    heartbeat.commit = 4;
    let mut vote = msg(MessageType::RequestVote, 3, 4);
    vote.index = 5;
    vote.log_term = 2;
    let mut snap = msg(MessageType::Snapshot, 1, 3);
    snap.snapshot = Some(Snapshot {
        data: Bytes::from_static(b"dump"),
        metadata: SnapshotMetadata {
            conf_state: ConfState {
                voters: vec![1, 2, 3],
                ..Default::default()
            },
            index: 9,
            term: 3,
        },
    });
    let mut ack = msg(MessageType::AppendResponse, 1, 3);
    ack.index = 6;
    let mut conflict = msg(MessageType::Append, 1, 2);
    conflict.index = 1;
    conflict.log_term = 1;
    conflict.entries = vec![ent(2, 2)];
    // Found by this replay: a heartbeat without a term went past every term check.
    let mut no_term = msg(MessageType::Heartbeat, 1, 0);
    no_term.commit = 50;
    // And an append after an index we do not have, claiming term 0 there.
    let mut zero_log_term = msg(MessageType::Append, 1, 3);
    zero_log_term.index = 1 << 31;
    zero_log_term.commit = 1 << 62;
    let frames = [
        ("heartbeat-without-term", frame(1, vec![no_term])),
        ("append-at-log-term-0", frame(1, vec![zero_log_term])),
        ("append", frame(1, vec![append.clone()])),
        ("heartbeat", frame(1, vec![heartbeat])),
        ("vote", frame(3, vec![vote])),
        ("snapshot", frame(1, vec![snap])),
        (
            "append-response",
            frame(1, vec![ack, msg(MessageType::HeartbeatResponse, 1, 3)]),
        ),
        ("conflict-below-commit", frame(1, vec![conflict])),
        (
            "batch",
            frame(1, vec![append, msg(MessageType::ReadIndex, 1, 2)]),
        ),
    ];
    for (name, data) in &frames {
        for (role, suffix) in [(0u8, ""), (1, "-leader")] {
            let mut input = vec![role];
            input.extend_from_slice(data);
            write("peer_frame", &format!("{name}{suffix}"), &input);
        }
    }

    // Client requests, each kind in each codec.
    let put = pb::PutRequest {
        key: b"k".to_vec().into(),
        value: b"v".to_vec().into(),
        prev_kv: true,
        ..Default::default()
    };
    let range = pb::RangeRequest {
        key: b"a".to_vec().into(),
        range_end: b"z".to_vec().into(),
        limit: 10,
        sort_order: 1,
        sort_target: 3,
        ..Default::default()
    };
    let delete = pb::DeleteRangeRequest {
        key: b"a".to_vec().into(),
        range_end: vec![0].into(),
        prev_kv: true,
    };
    let txn = pb::TxnRequest {
        compare: vec![pb::Compare {
            result: 0,
            target: 3,
            key: b"k".to_vec().into(),
            target_union: Some(pb::compare::TargetUnion::Value(b"v".to_vec().into())),
            ..Default::default()
        }],
        success: vec![
            pb::RequestOp {
                request: Some(pb::request_op::Request::RequestPut(put.clone())),
            },
            pb::RequestOp {
                request: Some(pb::request_op::Request::RequestTxn(pb::TxnRequest {
                    success: vec![pb::RequestOp {
                        request: Some(pb::request_op::Request::RequestRange(range.clone())),
                    }],
                    ..Default::default()
                })),
            },
        ],
        failure: vec![pb::RequestOp {
            request: Some(pb::request_op::Request::RequestDeleteRange(delete.clone())),
        }],
    };
    let compaction = pb::CompactionRequest {
        revision: 5,
        physical: true,
    };
    let grant = pb::LeaseGrantRequest { ttl: 60, id: 7 };
    let wire: [Vec<u8>; 6] = [
        range.encode_to_vec(),
        put.encode_to_vec(),
        delete.encode_to_vec(),
        txn.encode_to_vec(),
        compaction.encode_to_vec(),
        grant.encode_to_vec(),
    ];
    let json: [&str; 6] = [
        r#"{"key":"YQ==","range_end":"eg==","limit":"10","sort_order":"DESCEND","sortTarget":"VALUE"}"#,
        r#"{"key":"aw==","value":"dg==","prev_kv":true,"lease":"0"}"#,
        r#"{"key":"YQ==","range_end":"AA==","prev_kv":true}"#,
        r#"{"compare":[{"result":"EQUAL","target":"VALUE","key":"aw==","value":"dg=="}],"success":[{"request_put":{"key":"aw==","value":"dg=="}},{"request_txn":{"success":[{"request_range":{"key":"YQ=="}}]}}],"failure":[{"request_delete_range":{"key":"YQ=="}}]}"#,
        r#"{"revision":"5","physical":true}"#,
        r#"{"TTL":"60","ID":"7"}"#,
    ];
    for (k, name) in KINDS.iter().enumerate() {
        let mut w = vec![PROTOBUF, k as u8];
        w.extend_from_slice(&wire[k]);
        write("client_request", &format!("{name}.pb"), &w);
        let mut j = vec![JSON, k as u8];
        j.extend_from_slice(json[k].as_bytes());
        write("client_request", &format!("{name}.json"), &j);
    }
    for (name, request) in [
        ("put", Req::Put(put)),
        ("txn", Req::Txn(txn)),
        ("delete_range", Req::DeleteRange(delete)),
        ("compaction", Req::Compaction(compaction)),
        ("lease_grant", Req::LeaseGrant(grant)),
    ] {
        let entry = InternalRequest {
            id: 42,
            request: Some(request),
            ..Default::default()
        };
        let mut e = vec![LOG_ENTRY, 0];
        e.extend_from_slice(&entry.encode_to_vec());
        write("client_request", &format!("{name}.entry"), &e);
    }
}
