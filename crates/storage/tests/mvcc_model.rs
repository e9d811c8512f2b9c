//! Property test: the MVCC store against a simple model (the full key -> KeyValue map at
//! every revision) over seeded random puts, deletes, txns (with nested txns and compares),
//! ranges at old revisions, compactions and restarts. A second store applies the same
//! entries in batches and is never restarted; both must always agree on HashKV.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

mod common;

use std::collections::BTreeMap;

use common::{Applier, Rng};
use skiff_api::EtcdError;
use skiff_storage::mvcc::*;

type Map = BTreeMap<Vec<u8>, KeyValue>;

struct Model {
    /// `snaps[r]` is the state at revision r (r >= 1).
    snaps: Vec<Map>,
    compact: i64,
}

fn in_range(k: &[u8], key: &[u8], end: &[u8]) -> bool {
    if end.is_empty() {
        k == key
    } else if end == [0] {
        k >= key
    } else {
        k >= key && k < end
    }
}

impl Model {
    fn rev(&self) -> i64 {
        self.snaps.len() as i64 - 1
    }
    fn cur(&self) -> &Map {
        self.snaps.last().unwrap()
    }

    fn put(m: &mut Map, rev: i64, p: &PutRequest) -> Option<KeyValue> {
        let prev = m.get(&p.key).cloned();
        let kv = KeyValue {
            key: p.key.clone(),
            create_revision: prev.as_ref().map_or(rev, |k| k.create_revision),
            mod_revision: rev,
            version: prev.as_ref().map_or(1, |k| k.version + 1),
            value: if p.ignore_value {
                prev.as_ref().unwrap().value.clone()
            } else {
                p.value.clone()
            },
            lease: p.lease,
        };
        m.insert(p.key.clone(), kv);
        prev
    }

    fn delete(m: &mut Map, d: &DeleteRangeRequest) -> Vec<KeyValue> {
        let keys: Vec<_> = m
            .keys()
            .filter(|k| in_range(k, &d.key, &d.range_end))
            .cloned()
            .collect();
        keys.iter().map(|k| m.remove(k).unwrap()).collect()
    }

    fn compare(m: &Map, c: &Compare) -> bool {
        let kvs: Vec<_> = m
            .values()
            .filter(|kv| in_range(&kv.key, &c.key, &c.range_end))
            .collect();
        let check = |kv: &KeyValue| {
            let ord = match (&c.target, &c.target_union) {
                (CompareTarget::Value, Some(TargetUnion::Value(v))) => kv.value.cmp(v),
                (CompareTarget::Version, Some(TargetUnion::Version(v))) => kv.version.cmp(v),
                (CompareTarget::Create, Some(TargetUnion::CreateRevision(v))) => {
                    kv.create_revision.cmp(v)
                }
                (CompareTarget::Mod, Some(TargetUnion::ModRevision(v))) => kv.mod_revision.cmp(v),
                _ => unreachable!("generator pairs target and union"),
            };
            match c.result {
                CompareResult::Equal => ord.is_eq(),
                CompareResult::NotEqual => ord.is_ne(),
                CompareResult::Greater => ord.is_gt(),
                CompareResult::Less => ord.is_lt(),
            }
        };
        if kvs.is_empty() {
            if c.target == CompareTarget::Value {
                return false;
            }
            return check(&KeyValue::default());
        }
        kvs.into_iter().all(check)
    }

    /// Path of branch choices against the pre-txn state.
    fn path(m: &Map, t: &TxnRequest, out: &mut Vec<bool>) {
        let ok = t.compare.iter().all(|c| Model::compare(m, c));
        out.push(ok);
        for op in if ok { &t.success } else { &t.failure } {
            if let RequestOp::Txn(n) = op {
                Model::path(m, n, out);
            }
        }
    }

    /// Runs the txn on `m` (the working state), returns whether anything changed and the
    /// range results seen inside, in order.
    fn txn(
        m: &mut Map,
        t: &TxnRequest,
        path: &[bool],
        pos: &mut usize,
        rev: i64,
        changed: &mut bool,
        reads: &mut Vec<Vec<KeyValue>>,
    ) {
        let ok = path[*pos];
        *pos += 1;
        for op in if ok { &t.success } else { &t.failure } {
            match op {
                RequestOp::Put(p) => {
                    Model::put(m, rev, p);
                    *changed = true;
                }
                RequestOp::DeleteRange(d) => {
                    if !Model::delete(m, d).is_empty() {
                        *changed = true;
                    }
                }
                RequestOp::Range(r) => reads.push(
                    m.values()
                        .filter(|kv| in_range(&kv.key, &r.key, &r.range_end))
                        .cloned()
                        .collect(),
                ),
                RequestOp::Txn(n) => Model::txn(m, n, path, pos, rev, changed, reads),
            }
        }
    }
}

fn key(rng: &mut Rng) -> Vec<u8> {
    format!("k{}", rng.below(12)).into_bytes()
}

fn range_end(rng: &mut Rng, k: &[u8]) -> Vec<u8> {
    match rng.below(4) {
        0 => Vec::new(),
        1 => vec![0],
        2 => {
            let mut e = k.to_vec();
            e.push(b'5');
            e
        }
        _ => format!("k{}", rng.below(12)).into_bytes(),
    }
}

fn gen_compare(rng: &mut Rng) -> Compare {
    let k = key(rng);
    let (target, tu) = match rng.below(4) {
        0 => (
            CompareTarget::Value,
            TargetUnion::Value(format!("v{}", rng.below(4)).into_bytes()),
        ),
        1 => (
            CompareTarget::Version,
            TargetUnion::Version(rng.below(4) as i64),
        ),
        2 => (
            CompareTarget::Create,
            TargetUnion::CreateRevision(rng.below(40) as i64),
        ),
        _ => (
            CompareTarget::Mod,
            TargetUnion::ModRevision(rng.below(40) as i64),
        ),
    };
    let result = match rng.below(4) {
        0 => CompareResult::Equal,
        1 => CompareResult::NotEqual,
        2 => CompareResult::Greater,
        _ => CompareResult::Less,
    };
    Compare {
        result,
        target,
        key: k.clone(),
        target_union: Some(tu),
        range_end: if rng.chance(20) {
            range_end(rng, &k)
        } else {
            Vec::new()
        },
    }
}

/// Ops on distinct single keys (puts and deletes never share a key), so no duplicate-key
/// rejections; ranges anywhere.
fn gen_ops(rng: &mut Rng, used: &mut Vec<Vec<u8>>, depth: u32) -> Vec<RequestOp> {
    let mut ops = Vec::new();
    for _ in 0..rng.below(4) {
        match rng.below(if depth > 0 { 4 } else { 3 }) {
            0 | 1 => {
                let k = key(rng);
                if used.contains(&k) {
                    continue;
                }
                used.push(k.clone());
                if rng.below(3) == 0 {
                    ops.push(RequestOp::DeleteRange(DeleteRangeRequest {
                        key: k,
                        range_end: Vec::new(),
                        prev_kv: true,
                    }));
                } else {
                    ops.push(RequestOp::Put(PutRequest {
                        key: k,
                        value: format!("v{}", rng.below(4)).into_bytes(),
                        ..Default::default()
                    }));
                }
            }
            2 => {
                let k = key(rng);
                ops.push(RequestOp::Range(RangeRequest {
                    range_end: range_end(rng, &k),
                    key: k,
                    ..Default::default()
                }));
            }
            _ => {
                let t = gen_txn(rng, used, depth - 1);
                ops.push(RequestOp::Txn(t));
            }
        }
    }
    ops
}

fn gen_txn(rng: &mut Rng, used: &mut Vec<Vec<u8>>, depth: u32) -> TxnRequest {
    let compare = (0..rng.below(3)).map(|_| gen_compare(rng)).collect();
    // Both branches draw from the same used-set: simpler than etcd's rule, still valid.
    let success = gen_ops(rng, used, depth);
    let failure = gen_ops(rng, used, depth);
    TxnRequest {
        compare,
        success,
        failure,
    }
}

fn flatten_reads(resps: &[ResponseOp], out: &mut Vec<Vec<KeyValue>>) {
    for r in resps {
        match r {
            ResponseOp::Range(r) => out.push(r.kvs.clone()),
            ResponseOp::Txn(t) => flatten_reads(&t.responses, out),
            _ => {}
        }
    }
}

fn check_state(store: &KvStore, model: &Model, rng: &mut Rng, seed: u64) {
    let cur = common::range_all(store, 0).unwrap();
    assert_eq!(cur.header.revision, model.rev(), "seed {seed}: revision");
    let want: Vec<_> = model.cur().values().cloned().collect();
    assert_eq!(cur.kvs, want, "seed {seed}: state at head");
    assert_eq!(cur.count, want.len() as i64);
    // A random old revision.
    let r = 1 + rng.below(model.rev() as u64) as i64;
    let res = common::range_all(store, r);
    if r < model.compact {
        assert!(
            matches!(res, Err(Error::Request(EtcdError::Compacted))),
            "seed {seed}: rev {r} compacted"
        );
    } else {
        let want: Vec<_> = model.snaps[r as usize].values().cloned().collect();
        assert_eq!(res.unwrap().kvs, want, "seed {seed}: state at rev {r}");
    }
    assert!(matches!(
        common::range_all(store, model.rev() + 1),
        Err(Error::Request(EtcdError::FutureRev))
    ));
}

fn run(seed: u64, steps: usize) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let mut store = KvStore::open(&path, common::small_config()).unwrap();
    let twin = KvStore::open(dir.path().join("twin"), StoreConfig::default()).unwrap();
    let mut pending_twin: Vec<(u64, WriteRequest)> = Vec::new();
    let mut ap = Applier::new(&store);
    let mut rng = Rng::new(seed);
    let mut model = Model {
        snaps: vec![Map::new(), Map::new()],
        compact: 0,
    };
    for step in 0..steps {
        let req = match rng.below(100) {
            0..=34 => {
                let k = key(&mut rng);
                let ignore = rng.chance(10) && model.cur().contains_key(&k);
                WriteRequest::Put(PutRequest {
                    key: k,
                    value: if ignore {
                        vec![]
                    } else {
                        format!("v{}", rng.below(4)).into_bytes()
                    },
                    prev_kv: rng.chance(50),
                    ignore_value: ignore,
                    ..Default::default()
                })
            }
            35..=49 => {
                let k = key(&mut rng);
                WriteRequest::DeleteRange(DeleteRangeRequest {
                    range_end: range_end(&mut rng, &k),
                    key: k,
                    prev_kv: true,
                })
            }
            50..=79 => WriteRequest::Txn(gen_txn(&mut rng, &mut Vec::new(), 2)),
            80..=89 => {
                let rev = if rng.chance(80) {
                    model.compact.max(1)
                        + rng.below((model.rev() - model.compact.max(1) + 1) as u64) as i64
                } else {
                    rng.below(model.rev() as u64 + 3) as i64
                };
                WriteRequest::Compaction(CompactionRequest {
                    revision: rev,
                    physical: false,
                })
            }
            90..=94 => {
                // Restart: everything must survive a reopen.
                drop(store);
                store = KvStore::open(&path, common::small_config()).unwrap();
                assert_eq!(store.consistent_index(), ap.index, "seed {seed}");
                check_state(&store, &model, &mut rng, seed);
                continue;
            }
            _ => {
                check_state(&store, &model, &mut rng, seed);
                continue;
            }
        };
        let rev_before = model.rev();
        let (resp, events) = ap.apply(&store, req.clone());
        pending_twin.push((ap.index, req.clone()));
        let mut next = model.cur().clone();
        let new_rev = rev_before + 1;
        match &req {
            WriteRequest::Put(p) => {
                let prev = Model::put(&mut next, new_rev, p);
                let r = resp.unwrap();
                let WriteResponse::Put(pr) = r else { panic!() };
                assert_eq!(pr.header.revision, new_rev, "seed {seed} step {step}");
                assert_eq!(pr.prev_kv, if p.prev_kv { prev } else { None });
                assert_eq!(events.len(), 1);
                model.snaps.push(next);
            }
            WriteRequest::DeleteRange(d) => {
                let gone = Model::delete(&mut next, d);
                let WriteResponse::DeleteRange(dr) = resp.unwrap() else {
                    panic!()
                };
                assert_eq!(dr.deleted, gone.len() as i64, "seed {seed} step {step}");
                assert_eq!(dr.prev_kvs, gone);
                assert_eq!(events.len(), gone.len());
                if !gone.is_empty() {
                    model.snaps.push(next);
                }
                assert_eq!(dr.header.revision, model.rev());
            }
            WriteRequest::Txn(t) => {
                let mut path = Vec::new();
                Model::path(model.cur(), t, &mut path);
                let mut changed = false;
                let mut reads = Vec::new();
                Model::txn(
                    &mut next,
                    t,
                    &path,
                    &mut 0,
                    new_rev,
                    &mut changed,
                    &mut reads,
                );
                let WriteResponse::Txn(tr) = resp.unwrap() else {
                    panic!()
                };
                assert_eq!(tr.succeeded, path[0], "seed {seed} step {step}");
                let mut got_reads = Vec::new();
                flatten_reads(&tr.responses, &mut got_reads);
                assert_eq!(
                    got_reads, reads,
                    "seed {seed} step {step}: reads inside txn"
                );
                if changed {
                    model.snaps.push(next);
                }
                assert_eq!(tr.header.revision, model.rev(), "seed {seed} step {step}");
                // One main revision, sub-revisions in order.
                assert!(events.iter().all(|e| e.kv.mod_revision == new_rev));
            }
            WriteRequest::Compaction(c) => {
                if c.revision <= model.compact {
                    assert!(
                        matches!(resp, Err(Error::Request(EtcdError::Compacted))),
                        "seed {seed} step {step}"
                    );
                } else if c.revision > model.rev() {
                    assert!(
                        matches!(resp, Err(Error::Request(EtcdError::FutureRev))),
                        "seed {seed} step {step}"
                    );
                } else {
                    resp.unwrap();
                    model.compact = c.revision;
                }
            }
            WriteRequest::Noop => unreachable!(),
        }
        if pending_twin.len() >= 5 || rng.chance(10) {
            let entries: Vec<_> = pending_twin
                .iter()
                .map(|(i, r)| ApplyEntry {
                    index: *i,
                    term: 1,
                    request: r,
                    aux: &[],
                    record: None,
                })
                .collect();
            twin.apply_batch(&entries, &AnyLease).unwrap();
            pending_twin.clear();
            for r in [0, model.compact.max(1), model.rev()] {
                let a = store.hash_kv(r).unwrap();
                let b = twin.hash_kv(r).unwrap();
                assert_eq!(
                    a, b,
                    "seed {seed} step {step}: HashKV({r}) differs from twin"
                );
            }
        }
    }
    check_state(&store, &model, &mut rng, seed);
}

#[test]
fn mvcc_matches_model() {
    let seeds: u64 = std::env::var("MVCC_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    for seed in 0..seeds {
        run(seed, 300);
    }
}
