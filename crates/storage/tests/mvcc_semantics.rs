//! Table tests of etcd's documented KV semantics: every Range option, put options, txn
//! compares and nesting, errors and their messages, compaction, and HashKV values taken
//! from etcd 3.4.23 for the same history. Expected values were checked against etcd 3.4
//! with etcdctl where etcdctl can express the request.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

mod common;

use common::{range_all, Applier};
use skiff_api::EtcdError;
use skiff_storage::mvcc::*;

fn open() -> (tempfile::TempDir, KvStore, Applier) {
    let dir = tempfile::tempdir().unwrap();
    let store = KvStore::open(dir.path().join("db"), common::small_config()).unwrap();
    let ap = Applier::new(&store);
    (dir, store, ap)
}

fn keys(r: &RangeResponse) -> Vec<String> {
    r.kvs
        .iter()
        .map(|kv| String::from_utf8(kv.key.clone()).unwrap())
        .collect()
}

fn rr(key: &str, end: &str) -> RangeRequest {
    RangeRequest {
        key: key.into(),
        range_end: end.into(),
        ..Default::default()
    }
}

/// a@2 b@3 c@4 d@5, then b rewritten at 6 ("vb2"), foo/1@7 foo/2@8 fop@9.
fn fixture() -> (tempfile::TempDir, KvStore, Applier) {
    let (d, s, mut ap) = open();
    for k in ["a", "b", "c", "d"] {
        ap.put(&s, k, &format!("v{k}"));
    }
    ap.put(&s, "b", "vb2");
    ap.put(&s, "foo/1", "x");
    ap.put(&s, "foo/2", "y");
    ap.put(&s, "fop", "z");
    (d, s, ap)
}

#[test]
fn fresh_store_is_at_revision_1_and_first_put_is_2() {
    let (_d, s, mut ap) = open();
    assert_eq!(s.current_revision(), 1);
    assert_eq!(range_all(&s, 0).unwrap().header.revision, 1);
    assert_eq!(ap.put(&s, "k", "v"), 2);
}

#[test]
fn range_single_key_range_end_and_from_key() {
    let (_d, s, _) = fixture();
    assert_eq!(keys(&s.range(&rr("b", "")).unwrap()), ["b"]);
    assert_eq!(keys(&s.range(&rr("zz", "")).unwrap()), Vec::<String>::new());
    assert_eq!(keys(&s.range(&rr("b", "d")).unwrap()), ["b", "c"]);
    // range_end "\0": every key >= key.
    assert_eq!(
        keys(&s.range(&rr("d", "\0")).unwrap()),
        ["d", "foo/1", "foo/2", "fop"]
    );
    // key "\0" + range_end "\0": everything.
    assert_eq!(s.range(&rr("\0", "\0")).unwrap().count, 7);
    // Prefix: range_end = prefix with its last byte + 1 ("foo/" -> "foo0").
    assert_eq!(
        keys(&s.range(&rr("foo/", "foo0")).unwrap()),
        ["foo/1", "foo/2"]
    );
    // range_end <= key: empty, not an error.
    assert_eq!(s.range(&rr("d", "a")).unwrap().count, 0);
    // Empty key is refused with etcd's message.
    let e = s.range(&rr("", "")).unwrap_err();
    assert_eq!(e.to_string(), "etcdserver: key is not provided");
    assert_eq!(e.request_error(), Some(EtcdError::EmptyKey));
}

#[test]
fn range_limit_more_and_count() {
    let (_d, s, _) = fixture();
    // As etcd 3.4: `get a --from-key --limit 2` -> a, b, more, count = all keys in range.
    let r = s
        .range(&RangeRequest {
            limit: 2,
            ..rr("a", "\0")
        })
        .unwrap();
    assert_eq!(keys(&r), ["a", "b"]);
    assert!(r.more);
    assert_eq!(r.count, 7);
    // A limit equal to the number of keys: no `more`.
    let r = s
        .range(&RangeRequest {
            limit: 4,
            ..rr("a", "e")
        })
        .unwrap();
    assert!(!r.more);
    assert_eq!(r.kvs.len(), 4);
    // count_only: no kvs, count set, no `more` even with a limit.
    let r = s
        .range(&RangeRequest {
            count_only: true,
            limit: 1,
            ..rr("a", "e")
        })
        .unwrap();
    assert!(r.kvs.is_empty());
    assert_eq!(r.count, 4);
    assert!(!r.more);
}

#[test]
fn range_keys_only() {
    let (_d, s, _) = fixture();
    let r = s
        .range(&RangeRequest {
            keys_only: true,
            limit: 1,
            ..rr("a", "e")
        })
        .unwrap();
    assert_eq!(keys(&r), ["a"]);
    assert!(r.kvs[0].value.is_empty());
    assert_eq!(r.kvs[0].mod_revision, 2);
    assert!(r.more);
}

#[test]
fn range_at_revision_and_errors() {
    let (_d, s, mut ap) = fixture();
    // At rev 3 only a and b existed; b still had its first value. Header = current rev.
    let r = s
        .range(&RangeRequest {
            revision: 3,
            ..rr("a", "e")
        })
        .unwrap();
    assert_eq!(keys(&r), ["a", "b"]);
    assert_eq!(r.kvs[1].value, b"vb");
    assert_eq!(r.count, 2);
    assert_eq!(r.header.revision, 9);
    let e = s
        .range(&RangeRequest {
            revision: 10,
            ..rr("a", "")
        })
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "etcdserver: mvcc: required revision is a future revision"
    );
    assert_eq!(e.request_error(), Some(EtcdError::FutureRev));
    ap.compact(&s, 4).unwrap();
    let e = s
        .range(&RangeRequest {
            revision: 3,
            ..rr("a", "")
        })
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "etcdserver: mvcc: required revision has been compacted"
    );
    // Reading at exactly the compaction revision is allowed.
    let r = s
        .range(&RangeRequest {
            revision: 4,
            ..rr("a", "e")
        })
        .unwrap();
    assert_eq!(keys(&r), ["a", "b", "c"]);
}

#[test]
fn range_sort_orders_and_targets() {
    let (_d, s, _) = fixture();
    let sorted = |order, target| {
        keys(
            &s.range(&RangeRequest {
                sort_order: order,
                sort_target: target,
                ..rr("a", "e")
            })
            .unwrap(),
        )
    };
    use SortOrder::*;
    use SortTarget as T;
    assert_eq!(sorted(None, T::Key), ["a", "b", "c", "d"]);
    assert_eq!(sorted(Descend, T::Key), ["d", "c", "b", "a"]);
    // Target other than KEY with order NONE sorts ascending (etcd).
    assert_eq!(sorted(None, T::Mod), ["a", "c", "d", "b"]);
    assert_eq!(sorted(Ascend, T::Mod), ["a", "c", "d", "b"]);
    assert_eq!(sorted(Descend, T::Mod), ["b", "d", "c", "a"]);
    assert_eq!(sorted(Ascend, T::Create), ["a", "b", "c", "d"]);
    assert_eq!(sorted(Descend, T::Create), ["d", "c", "b", "a"]);
    // Version ties keep key order; b has version 2.
    assert_eq!(sorted(Ascend, T::Version), ["a", "c", "d", "b"]);
    assert_eq!(sorted(Descend, T::Version), ["b", "a", "c", "d"]);
    // Values: va < vb2 < vc < vd.
    assert_eq!(sorted(Descend, T::Value), ["d", "c", "b", "a"]);
    // Sort with limit: the whole range is sorted, then cut (etcd: `get a e --limit 2
    // --sort-by=MODIFY --order=DESCEND` -> b, d, more, count 4).
    let r = s
        .range(&RangeRequest {
            sort_order: Descend,
            sort_target: T::Mod,
            limit: 2,
            ..rr("a", "e")
        })
        .unwrap();
    assert_eq!(keys(&r), ["b", "d"]);
    assert!(r.more);
    assert_eq!(r.count, 4);
}

#[test]
fn range_min_max_mod_and_create_revision() {
    let (_d, s, _) = fixture();
    let filtered = |f: fn(&mut RangeRequest)| {
        let mut q = rr("a", "e");
        f(&mut q);
        let r = s.range(&q).unwrap();
        // count is the number of keys in the range, before these filters (etcd).
        assert_eq!(r.count, 4);
        keys(&r)
    };
    assert_eq!(filtered(|q| q.min_mod_revision = 4), ["b", "c", "d"]);
    assert_eq!(filtered(|q| q.max_mod_revision = 4), ["a", "c"]);
    assert_eq!(filtered(|q| q.min_create_revision = 4), ["c", "d"]);
    assert_eq!(filtered(|q| q.max_create_revision = 3), ["a", "b"]);
    assert_eq!(
        filtered(|q| {
            q.min_mod_revision = 3;
            q.max_create_revision = 4;
        }),
        ["b", "c"]
    );
    // Filters apply before the limit.
    assert_eq!(
        filtered(|q| {
            q.min_mod_revision = 4;
            q.limit = 1;
        }),
        ["b"]
    );
}

#[test]
fn put_options_and_versions() {
    let (_d, s, mut ap) = open();
    let put = |ap: &mut Applier, p: PutRequest| match ap.apply(&s, WriteRequest::Put(p)).0 {
        Ok(WriteResponse::Put(r)) => Ok(r),
        Ok(other) => panic!("{other:?}"),
        Err(e) => Err(e),
    };
    let p1 = put(
        &mut ap,
        PutRequest {
            key: b"k".to_vec(),
            value: b"v1".to_vec(),
            lease: 7,
            prev_kv: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(p1.prev_kv, None);
    assert_eq!(p1.header.revision, 2);
    // ignore_value keeps the value, ignore_lease the lease.
    let p2 = put(
        &mut ap,
        PutRequest {
            key: b"k".to_vec(),
            ignore_value: true,
            ignore_lease: true,
            prev_kv: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(p2.prev_kv.as_ref().unwrap().value, b"v1");
    let kv = &range_all(&s, 0).unwrap().kvs[0];
    assert_eq!(
        (
            kv.value.as_slice(),
            kv.lease,
            kv.version,
            kv.create_revision,
            kv.mod_revision
        ),
        (b"v1".as_slice(), 7, 2, 2, 3)
    );
    // A plain put drops the lease.
    put(
        &mut ap,
        PutRequest {
            key: b"k".to_vec(),
            value: b"v3".to_vec(),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(range_all(&s, 0).unwrap().kvs[0].lease, 0);
    // ignore_value on a missing key: key not found, no revision consumed.
    let e = put(
        &mut ap,
        PutRequest {
            key: b"nokey".to_vec(),
            ignore_value: true,
            ..Default::default()
        },
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "etcdserver: key not found");
    assert_eq!(s.current_revision(), 4);
    let e = put(
        &mut ap,
        PutRequest {
            key: b"k".to_vec(),
            value: b"x".to_vec(),
            ignore_value: true,
            ..Default::default()
        },
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "etcdserver: value is provided");
    // Delete then re-create: a new generation (version 1, new create revision).
    ap.delete(&s, "k", "");
    ap.put(&s, "k", "again");
    let kv = &range_all(&s, 0).unwrap().kvs[0];
    assert_eq!((kv.version, kv.create_revision, kv.mod_revision), (1, 6, 6));
    // The failed entries still advanced the consistent index.
    assert_eq!(s.consistent_index(), ap.index);
}

struct NoLeases;
impl LeaseCheck for NoLeases {
    fn lease_exists(&self, _: i64) -> bool {
        false
    }
}

#[test]
fn unknown_lease_is_refused() {
    let (_d, s, _) = open();
    let req = WriteRequest::Put(PutRequest {
        key: b"k".to_vec(),
        lease: 42,
        ..Default::default()
    });
    let out = s
        .apply(
            ApplyEntry {
                index: 1,
                term: 1,
                request: &req,
                aux: &[],
                record: None,
            },
            &NoLeases,
        )
        .unwrap();
    let Applied::Done { response, .. } = out else {
        panic!()
    };
    let e = response.unwrap_err();
    assert_eq!(e.to_string(), "etcdserver: requested lease not found");
    assert_eq!(e.request_error(), Some(EtcdError::LeaseNotFound));
}

#[test]
fn delete_range_prev_kv_and_events() {
    let (_d, s, mut ap) = fixture();
    let (r, events) = ap.apply(
        &s,
        WriteRequest::DeleteRange(DeleteRangeRequest {
            key: b"foo/".to_vec(),
            range_end: b"foo0".to_vec(),
            prev_kv: true,
        }),
    );
    let WriteResponse::DeleteRange(r) = r.unwrap() else {
        panic!()
    };
    assert_eq!(r.deleted, 2);
    assert_eq!(r.prev_kvs.len(), 2);
    assert_eq!(r.header.revision, 10);
    assert_eq!(events.len(), 2);
    for e in &events {
        assert_eq!(e.kind, EventType::Delete);
        assert_eq!(e.kv.mod_revision, 10);
        assert_eq!(e.kv.version, 0);
        assert!(e.prev_kv.is_some());
    }
    // Deleting nothing creates no revision.
    assert_eq!(ap.delete(&s, "nothing", ""), 10);
}

fn cmp(key: &str, target: CompareTarget, result: CompareResult, tu: TargetUnion) -> Compare {
    Compare {
        result,
        target,
        key: key.into(),
        target_union: Some(tu),
        range_end: Vec::new(),
    }
}

fn put_op(k: &str, v: &str) -> RequestOp {
    RequestOp::Put(PutRequest {
        key: k.into(),
        value: v.into(),
        ..Default::default()
    })
}

fn txn_resp(ap: &mut Applier, s: &KvStore, t: TxnRequest) -> Result<TxnResponse> {
    ap.apply(s, WriteRequest::Txn(t)).0.map(|r| match r {
        WriteResponse::Txn(t) => t,
        other => panic!("{other:?}"),
    })
}

#[test]
fn txn_compares_all_targets_and_results() {
    let (_d, s, mut ap) = fixture();
    use CompareResult::*;
    use CompareTarget as T;
    use TargetUnion as U;
    // b: value vb2, version 2, create 3, mod 6, lease 0.
    let cases = [
        (cmp("b", T::Value, Equal, U::Value(b"vb2".to_vec())), true),
        (cmp("b", T::Value, Less, U::Value(b"vc".to_vec())), true),
        (cmp("b", T::Value, Greater, U::Value(b"vc".to_vec())), false),
        (
            cmp("b", T::Value, NotEqual, U::Value(b"vb2".to_vec())),
            false,
        ),
        (cmp("b", T::Version, Equal, U::Version(2)), true),
        (cmp("b", T::Version, Greater, U::Version(1)), true),
        (cmp("b", T::Create, Equal, U::CreateRevision(3)), true),
        (cmp("b", T::Create, Less, U::CreateRevision(3)), false),
        (cmp("b", T::Mod, Equal, U::ModRevision(6)), true),
        (cmp("b", T::Mod, NotEqual, U::ModRevision(6)), false),
        (cmp("b", T::Lease, Equal, U::Lease(0)), true),
        // Missing key: version/create/mod compare as 0 ...
        (cmp("nokey", T::Version, Equal, U::Version(0)), true),
        (cmp("nokey", T::Create, Equal, U::CreateRevision(0)), true),
        // ... but a value compare on a missing key is always false.
        (
            cmp("nokey", T::Value, NotEqual, U::Value(b"x".to_vec())),
            false,
        ),
        // A mismatched operand compares against zero.
        (cmp("b", T::Version, Greater, U::Value(b"x".to_vec())), true),
        // A range compare must hold for every key: all of a..e have version >= 1.
        (
            Compare {
                range_end: b"e".to_vec(),
                ..cmp("a", T::Version, Greater, U::Version(0))
            },
            true,
        ),
        (
            Compare {
                range_end: b"e".to_vec(),
                ..cmp("a", T::Version, Equal, U::Version(1))
            },
            false,
        ),
    ];
    for (i, (c, want)) in cases.into_iter().enumerate() {
        let r = txn_resp(
            &mut ap,
            &s,
            TxnRequest {
                compare: vec![c],
                success: vec![],
                failure: vec![],
            },
        )
        .unwrap();
        assert_eq!(r.succeeded, want, "case {i}");
        // A read-only txn keeps the revision.
        assert_eq!(r.header.revision, 9);
    }
}

#[test]
fn txn_one_revision_nested_and_reads_own_writes() {
    let (_d, s, mut ap) = fixture();
    let inner = TxnRequest {
        // Evaluated against the state before the outer txn's writes: x does not exist.
        compare: vec![cmp(
            "x",
            CompareTarget::Version,
            CompareResult::Equal,
            TargetUnion::Version(0),
        )],
        success: vec![put_op("y", "1")],
        failure: vec![put_op("z", "1")],
    };
    let t = TxnRequest {
        compare: vec![],
        success: vec![
            put_op("x", "1"),
            RequestOp::Range(rr("x", "")),
            RequestOp::Txn(inner),
            RequestOp::DeleteRange(DeleteRangeRequest {
                key: b"a".to_vec(),
                range_end: Vec::new(),
                prev_kv: true,
            }),
        ],
        failure: vec![],
    };
    let (r, events) = ap.apply(&s, WriteRequest::Txn(t));
    let WriteResponse::Txn(r) = r.unwrap() else {
        panic!()
    };
    assert!(r.succeeded);
    assert_eq!(r.header.revision, 10);
    let ResponseOp::Range(rg) = &r.responses[1] else {
        panic!()
    };
    assert_eq!(
        rg.kvs[0].value, b"1",
        "a range after a put in the same txn sees it"
    );
    let ResponseOp::Txn(nested) = &r.responses[2] else {
        panic!()
    };
    assert!(nested.succeeded);
    let subs: Vec<_> = events.iter().map(|e| (e.kv.mod_revision, e.kind)).collect();
    assert_eq!(
        subs,
        [
            (10, EventType::Put),
            (10, EventType::Put),
            (10, EventType::Delete)
        ]
    );
    assert_eq!(keys(&s.range(&rr("x", "z")).unwrap()), ["x", "y"]);
}

#[test]
fn txn_errors_apply_nothing() {
    let (_d, s, mut ap) = fixture();
    ap.compact(&s, 5).unwrap();
    // Duplicate key.
    let e = txn_resp(
        &mut ap,
        &s,
        TxnRequest {
            success: vec![put_op("q", "1"), put_op("q", "2")],
            ..Default::default()
        },
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "etcdserver: duplicate key given in txn request"
    );
    // A range at a compacted revision after a put: nothing written (etcd #18667).
    let e = txn_resp(
        &mut ap,
        &s,
        TxnRequest {
            success: vec![
                put_op("q", "1"),
                RequestOp::Range(RangeRequest {
                    revision: 2,
                    ..rr("a", "")
                }),
            ],
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(matches!(e, Error::Request(EtcdError::Compacted)));
    let e = txn_resp(
        &mut ap,
        &s,
        TxnRequest {
            success: vec![
                put_op("q", "1"),
                RequestOp::Range(RangeRequest {
                    revision: 99,
                    ..rr("a", "")
                }),
            ],
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(matches!(e, Error::Request(EtcdError::FutureRev)));
    assert_eq!(s.current_revision(), 9);
    assert_eq!(s.range(&rr("q", "")).unwrap().count, 0);
}

#[test]
fn compaction_rules_and_physical_deletion() {
    let (_d, s, mut ap) = fixture();
    let rows_before = s.backend_rows().unwrap();
    assert!(matches!(
        ap.compact(&s, 10),
        Err(Error::Request(EtcdError::FutureRev))
    ));
    ap.compact(&s, 6).unwrap();
    assert!(matches!(
        ap.compact(&s, 6),
        Err(Error::Request(EtcdError::Compacted))
    ));
    assert!(matches!(
        ap.compact(&s, 3),
        Err(Error::Request(EtcdError::Compacted))
    ));
    assert_eq!(s.compact_revision(), 6);
    assert!(s.wait_compacted(6, std::time::Duration::from_secs(10)));
    // Only b@3 (superseded by b@6) was deletable.
    assert_eq!(s.backend_rows().unwrap(), rows_before - 1);
    // Compacting a delete: the tombstone at the compaction revision stays (a watcher may
    // start there), older ones go.
    let del_rev = ap.delete(&s, "a", "");
    ap.compact(&s, del_rev).unwrap();
    assert!(s.wait_compacted(del_rev, std::time::Duration::from_secs(10)));
    let evs = s.events_since(del_rev, del_rev, 100).unwrap().0;
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0].kind, EventType::Delete);
    ap.put(&s, "z", "1");
    ap.compact(&s, del_rev + 1).unwrap();
    assert!(s.wait_compacted(del_rev + 1, std::time::Duration::from_secs(10)));
    assert!(matches!(
        s.events_since(del_rev, del_rev, 100),
        Err(Error::Request(EtcdError::Compacted))
    ));
    // a@2 and its tombstone are both gone now.
    assert_eq!(s.backend_rows().unwrap(), rows_before - 1 - 1 + 1);
}

/// HashKV values printed by etcd 3.4.23 (`etcdctl endpoint hashkv --rev R`) for the
/// history: put a 1, put b 2, put a 3, del b, put c 4 (revisions 2..6); compact 4;
/// put a 5, del [a, c), compact 8. Same bytes in, same CRC out.
#[test]
fn hash_kv_matches_etcd() {
    let (_d, s, mut ap) = open();
    ap.put(&s, "a", "1");
    ap.put(&s, "b", "2");
    ap.put(&s, "a", "3");
    ap.delete(&s, "b", "");
    ap.put(&s, "c", "4");
    assert_eq!(s.hash_kv(0).unwrap().hash, 2750537463);
    // etcd's compaction revision before any compaction.
    assert_eq!(s.hash_kv(0).unwrap().compact_revision, -1);
    assert_eq!(s.hash_kv(4).unwrap().hash, 2069675932);
    assert_eq!(s.hash_kv(6).unwrap().hash, 2750537463);
    ap.compact(&s, 4).unwrap();
    let h = s.hash_kv(6).unwrap();
    assert_eq!(
        (h.hash, h.compact_revision, h.hash_revision),
        (2450235489, 4, 6)
    );
    // Independent of physical compaction progress.
    assert!(s.wait_compacted(4, std::time::Duration::from_secs(10)));
    assert_eq!(s.hash_kv(6).unwrap().hash, 2450235489);
    ap.put(&s, "a", "5");
    ap.delete(&s, "a", "c");
    ap.compact(&s, 8).unwrap();
    assert!(s.wait_compacted(8, std::time::Duration::from_secs(10)));
    assert_eq!(s.hash_kv(0).unwrap().hash, 3671818571);
    assert!(matches!(
        s.hash_kv(3),
        Err(Error::Request(EtcdError::Compacted))
    ));
    assert!(matches!(
        s.hash_kv(9),
        Err(Error::Request(EtcdError::FutureRev))
    ));
}

#[test]
fn aux_tables_commit_with_the_entry() {
    let (_d, s, _) = open();
    let req = WriteRequest::Noop;
    let aux = [AuxOp {
        table: AuxTable::Lease,
        key: b"lease/1".to_vec(),
        value: Some(b"ttl=5".to_vec()),
    }];
    s.apply(
        ApplyEntry {
            index: 5,
            term: 2,
            request: &req,
            aux: &aux,
            record: None,
        },
        &AnyLease,
    )
    .unwrap();
    assert_eq!(
        s.backend()
            .get(skiff_storage::backend::Table::Lease, b"lease/1")
            .unwrap(),
        Some(b"ttl=5".to_vec())
    );
    assert_eq!(s.backend().consistent_index().unwrap(), (5, 2));
    // Replays at or below the consistent index are skipped.
    let out = s
        .apply(
            ApplyEntry {
                index: 5,
                term: 2,
                request: &req,
                aux: &aux,
                record: None,
            },
            &AnyLease,
        )
        .unwrap();
    assert!(matches!(out, Applied::Skipped));
}

/// A snapshot is a dump of the backend; a store opened on the restored file has the same
/// data, revisions, compaction and HashKV, and its consistent index says where the WAL
/// replay starts.
#[test]
fn snapshot_dump_restore_roundtrip() {
    let (d, s, mut ap) = fixture();
    ap.delete(&s, "c", "");
    ap.compact(&s, 5).unwrap();
    s.sync().unwrap();
    let mut dump = Vec::new();
    let summary = s.backend().dump(&mut dump).unwrap();
    assert_eq!(summary.consistent_index, ap.index);
    let target = d.path().join("restored");
    skiff_storage::backend::Backend::restore(&target, dump.as_slice()).unwrap();
    let r = KvStore::open(&target, common::small_config()).unwrap();
    assert_eq!(r.consistent_index(), ap.index);
    assert_eq!(r.current_revision(), s.current_revision());
    assert_eq!(r.compact_revision(), 5);
    for rev in 5..=s.current_revision() {
        assert_eq!(range_all(&r, rev).unwrap(), range_all(&s, rev).unwrap());
    }
    assert_eq!(r.hash_kv(0).unwrap(), s.hash_kv(0).unwrap());
    // Entries already in the snapshot are skipped; the next one applies.
    let mut ap2 = Applier::new(&r);
    assert_eq!(ap2.put(&r, "new", "1"), s.current_revision() + 1);
}

/// Installing a leader's snapshot in place: an open store with other data becomes the
/// snapshot's store (data, revisions, compaction, HashKV, consistent index), and a
/// corrupted dump changes nothing.
#[test]
fn snapshot_restore_in_place_replaces_everything_or_nothing() {
    let (_d, s, mut ap) = fixture();
    ap.delete(&s, "c", "");
    ap.compact(&s, 5).unwrap();
    let mut dump = Vec::new();
    s.backend().dump(&mut dump).unwrap();

    let (_d2, t, mut tap) = open();
    tap.put(&t, "stale", "x");
    let before = t.hash_kv(0).unwrap();
    let mut bad = dump.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x01;
    assert!(t.restore_from_dump(bad.as_slice()).is_err());
    assert_eq!(
        t.hash_kv(0).unwrap(),
        before,
        "a bad dump changed the store"
    );

    t.restore_from_dump(dump.as_slice()).unwrap();
    assert_eq!(t.consistent_index(), ap.index);
    assert_eq!(t.current_revision(), s.current_revision());
    assert_eq!(t.compact_revision(), 5);
    for rev in 5..=s.current_revision() {
        assert_eq!(range_all(&t, rev).unwrap(), range_all(&s, rev).unwrap());
    }
    assert_eq!(t.hash_kv(0).unwrap(), s.hash_kv(0).unwrap());
}

/// Idle non-durable applies become durable within about `durable_interval`, so the WAL
/// can be released up to them without an explicit sync.
#[test]
fn idle_applies_become_durable() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StoreConfig {
        backend: skiff_storage::backend::BackendConfig {
            durable_interval: std::time::Duration::from_millis(500),
            ..Default::default()
        },
        ..common::small_config()
    };
    let s = KvStore::open(dir.path().join("db"), cfg).unwrap();
    let mut ap = Applier::new(&s);
    std::thread::sleep(std::time::Duration::from_millis(520));
    // Applies never commit durably themselves while the maintenance thread keeps pace:
    // the interval has passed, yet neither is durable at once.
    ap.put(&s, "a", "1");
    ap.put(&s, "b", "1");
    assert!(s.backend().durable_consistent_index() < ap.index);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while s.backend().durable_consistent_index() < ap.index {
        assert!(std::time::Instant::now() < deadline, "never made durable");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(s.backend().size_bytes().unwrap() > 0);
}

/// etcd lets a txn put a key and also delete it with a from-key delete (its duplicate
/// check sees `[key, "\0")` as empty): both writes happen, in op order, in one revision.
#[test]
fn txn_put_and_from_key_delete_of_the_same_key() {
    let (_d, s, mut ap) = fixture();
    let del_all = || {
        RequestOp::DeleteRange(DeleteRangeRequest {
            key: b"x".to_vec(),
            range_end: vec![0],
            prev_kv: false,
        })
    };
    let (r, events) = ap.apply(
        &s,
        WriteRequest::Txn(TxnRequest {
            success: vec![put_op("x1", "a"), del_all()],
            ..Default::default()
        }),
    );
    assert_eq!(r.unwrap().header().revision, 10);
    assert_eq!(
        events.iter().map(|e| e.kind).collect::<Vec<_>>(),
        [EventType::Put, EventType::Delete]
    );
    assert_eq!(s.range(&rr("x1", "")).unwrap().count, 0);
    let (r, _) = ap.apply(
        &s,
        WriteRequest::Txn(TxnRequest {
            success: vec![del_all(), put_op("x1", "b")],
            ..Default::default()
        }),
    );
    assert_eq!(r.unwrap().header().revision, 11);
    let got = s.range(&rr("x1", "")).unwrap();
    assert_eq!(got.kvs[0].value, b"b");
    assert_eq!((got.kvs[0].version, got.kvs[0].create_revision), (1, 11));
    // Both survive a restart (rows at the same main revision, ordered by sub).
    let path = s.backend().path().to_path_buf();
    drop(s);
    let s = KvStore::open(&path, common::small_config()).unwrap();
    assert_eq!(s.range(&rr("x1", "")).unwrap().kvs[0].value, b"b");
    assert_eq!(
        s.range(&RangeRequest {
            revision: 10,
            ..rr("x1", "")
        })
        .unwrap()
        .count,
        0
    );
}

/// Sub-revisions and leases in the hash, against etcd 3.4.23: `put a 1`; a txn
/// `mod("a") > "0"` then {put b 2, put c 3, del a} (revision 3, subs 0..2); `put l 5` with
/// lease 0x4f9ea20846a68b07 (revision 4). etcd printed HashKV 3026293217.
#[test]
fn hash_kv_with_txn_and_lease_matches_etcd() {
    let (_d, s, mut ap) = open();
    ap.put(&s, "a", "1");
    let t = txn_resp(
        &mut ap,
        &s,
        TxnRequest {
            compare: vec![cmp(
                "a",
                CompareTarget::Mod,
                CompareResult::Greater,
                TargetUnion::ModRevision(0),
            )],
            success: vec![
                put_op("b", "2"),
                put_op("c", "3"),
                RequestOp::DeleteRange(DeleteRangeRequest {
                    key: b"a".to_vec(),
                    ..Default::default()
                }),
            ],
            failure: vec![put_op("z", "9")],
        },
    )
    .unwrap();
    assert!(t.succeeded);
    ap.apply(
        &s,
        WriteRequest::Put(PutRequest {
            key: b"l".to_vec(),
            value: b"5".to_vec(),
            lease: 0x4f9e_a208_46a6_8b07,
            ..Default::default()
        }),
    )
    .0
    .unwrap();
    let h = s.hash_kv(0).unwrap();
    assert_eq!((h.hash, h.hash_revision), (3026293217, 4));
}
