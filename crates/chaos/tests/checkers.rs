//! The checkers on hand-written histories: linearizable ones pass, known violations fail.

use skiff_chaos::check::{check, linear, Options, Report};
use skiff_chaos::history::*;

/// Builds histories by hand. Times are in arbitrary units.
#[derive(Default)]
struct H {
    h: History,
}

fn kv(key: &str, value: &str, mod_rev: i64, create_rev: i64, version: i64) -> Kv {
    Kv {
        key: key.into(),
        value: value.into(),
        mod_rev,
        create_rev,
        version,
        lease: 0,
    }
}

impl H {
    fn op(&mut self, client: u32, t: (u64, u64), req: Request, outcome: Outcome) -> u64 {
        let id = self.h.ops.len() as u64;
        self.h.ops.push(Op {
            id,
            client,
            member: client,
            incarnation: 0,
            invoke: t.0,
            complete: t.1,
            req,
            outcome,
        });
        id
    }
    fn put(
        &mut self,
        c: u32,
        t: (u64, u64),
        key: &str,
        v: &str,
        rev: i64,
        prev: Option<Kv>,
    ) -> u64 {
        self.op(
            c,
            t,
            Request::Put {
                key: key.into(),
                value: v.into(),
                lease: 0,
            },
            Outcome::Ok(Response::Put { rev, prev }),
        )
    }
    fn put_unknown(&mut self, c: u32, t: (u64, u64), key: &str, v: &str) -> u64 {
        self.op(
            c,
            t,
            Request::Put {
                key: key.into(),
                value: v.into(),
                lease: 0,
            },
            Outcome::Unknown("timeout".into()),
        )
    }
    fn get(&mut self, c: u32, t: (u64, u64), key: &str, rev: i64, kv: Option<Kv>) -> u64 {
        self.op(
            c,
            t,
            Request::Get {
                key: key.into(),
                serializable: false,
            },
            Outcome::Ok(Response::Get { rev, kv }),
        )
    }
    fn sget(&mut self, c: u32, t: (u64, u64), key: &str, rev: i64, kv: Option<Kv>) -> u64 {
        self.op(
            c,
            t,
            Request::Get {
                key: key.into(),
                serializable: true,
            },
            Outcome::Ok(Response::Get { rev, kv }),
        )
    }
    fn watch(&mut self, client: u32, responses: Vec<Vec<Event>>) {
        let mut records = vec![WatchRecord::Start {
            time: 0,
            start_rev: 1,
        }];
        for evs in responses {
            let header_rev = evs.last().map(|e| e.kv.mod_rev).unwrap_or_default();
            records.push(WatchRecord::Events {
                time: 0,
                header_rev,
                events: evs,
            });
        }
        self.h.watches.push(WatchLog { client, records });
    }
    fn check(&self) -> Report {
        check(&self.h, &Options::default())
    }
}

fn put_ev(kv: Kv, prev: Option<Kv>) -> Event {
    Event {
        kind: EventKind::Put,
        kv,
        prev,
    }
}

fn del_ev(key: &str, rev: i64, prev: Kv) -> Event {
    Event {
        kind: EventKind::Delete,
        kv: kv(key, "", rev, 0, 0),
        prev: Some(prev),
    }
}

fn checkers(r: &Report) -> Vec<&str> {
    r.anomalies.iter().map(|a| a.checker).collect()
}

/// put a=1, get, cas a (mod 2) := 2, get, delete, get; and a watcher that saw it all.
fn sequential() -> H {
    let mut h = H::default();
    h.put(0, (1, 2), "k/a", "1", 2, None);
    h.get(1, (3, 4), "k/a", 2, Some(kv("k/a", "1", 2, 2, 1)));
    h.op(
        0,
        (5, 6),
        Request::Cas {
            key: "k/a".into(),
            expect_mod_rev: 2,
            value: "2".into(),
        },
        Outcome::Ok(Response::Cas {
            rev: 3,
            succeeded: true,
            current: None,
        }),
    );
    h.get(1, (7, 8), "k/a", 3, Some(kv("k/a", "2", 3, 2, 2)));
    h.op(
        0,
        (9, 10),
        Request::Delete { key: "k/a".into() },
        Outcome::Ok(Response::Delete {
            rev: 4,
            deleted: 1,
            prev: Some(kv("k/a", "2", 3, 2, 2)),
        }),
    );
    h.get(1, (11, 12), "k/a", 4, None);
    h.watch(
        0,
        vec![
            vec![put_ev(kv("k/a", "1", 2, 2, 1), None)],
            vec![put_ev(
                kv("k/a", "2", 3, 2, 2),
                Some(kv("k/a", "1", 2, 2, 1)),
            )],
            vec![del_ev("k/a", 4, kv("k/a", "2", 3, 2, 2))],
        ],
    );
    h
}

#[test]
fn sequential_history_passes() {
    let r = sequential().check();
    assert!(r.ok(), "{r:?}");
    assert_eq!(r.verdict(), "ok");
}

#[test]
fn concurrent_reads_may_see_old_or_new_value() {
    let mut h = H::default();
    h.put(0, (1, 2), "k/a", "1", 2, None);
    // A put overlapping two reads: the first sees the new value, the second (which starts
    // after the first completed) too. Also a read that sees the old value while concurrent.
    h.put(0, (10, 20), "k/a", "2", 3, Some(kv("k/a", "1", 2, 2, 1)));
    h.get(1, (11, 12), "k/a", 2, Some(kv("k/a", "1", 2, 2, 1)));
    h.get(2, (13, 14), "k/a", 3, Some(kv("k/a", "2", 3, 2, 2)));
    h.get(1, (15, 16), "k/a", 3, Some(kv("k/a", "2", 3, 2, 2)));
    let r = h.check();
    assert!(r.ok(), "{r:?}");
}

#[test]
fn stale_read_fails() {
    let mut h = H::default();
    h.put(0, (1, 2), "k/a", "1", 2, None);
    h.put(0, (3, 4), "k/a", "2", 3, Some(kv("k/a", "1", 2, 2, 1)));
    // Begins after "2" was acknowledged, yet returns "1" (as a lagging member would).
    let stale = h.get(1, (5, 6), "k/a", 2, Some(kv("k/a", "1", 2, 2, 1)));
    let r = h.check();
    assert!(checkers(&r).contains(&"linearizability"), "{r:?}");
    assert!(checkers(&r).contains(&"revision"), "{r:?}");
    let lin = r
        .anomalies
        .iter()
        .find(|a| a.checker == "linearizability")
        .unwrap();
    assert!(lin.ops.contains(&stale), "{lin:?}");
}

#[test]
fn stale_read_with_current_header_still_fails_linearizability() {
    // The header revision looks fresh, so only the value search can tell.
    let mut h = H::default();
    h.put(0, (1, 2), "k/a", "1", 2, None);
    h.put(0, (3, 4), "k/a", "2", 3, Some(kv("k/a", "1", 2, 2, 1)));
    h.get(1, (5, 6), "k/a", 3, Some(kv("k/a", "1", 2, 2, 1)));
    let r = h.check();
    assert!(checkers(&r).contains(&"linearizability"), "{r:?}");
}

#[test]
fn stale_serializable_read_is_allowed() {
    let mut h = H::default();
    h.put(0, (1, 2), "k/a", "1", 2, None);
    h.put(0, (3, 4), "k/a", "2", 3, Some(kv("k/a", "1", 2, 2, 1)));
    h.sget(1, (5, 6), "k/a", 2, Some(kv("k/a", "1", 2, 2, 1)));
    let r = h.check();
    assert!(r.ok(), "{r:?}");
}

#[test]
fn lost_write_fails() {
    let mut h = H::default();
    h.put(0, (1, 2), "k/a", "1", 2, None);
    h.get(1, (3, 4), "k/a", 2, None);
    let r = h.check();
    assert!(checkers(&r).contains(&"linearizability"), "{r:?}");
}

#[test]
fn lost_write_missing_from_watch_log_fails() {
    let mut h = H::default();
    h.put(0, (1, 2), "k/a", "1", 2, None);
    h.put(0, (3, 4), "k/b", "2", 3, None);
    // The watcher saw revision 3 but revision 2 holds a different write: the ack lied.
    h.watch(
        0,
        vec![
            vec![put_ev(kv("k/c", "x", 2, 2, 1), None)],
            vec![put_ev(kv("k/b", "2", 3, 3, 1), None)],
        ],
    );
    h.op(
        9,
        (0, 0),
        Request::Put {
            key: "k/c".into(),
            value: "x".into(),
            lease: 0,
        },
        Outcome::Unknown("timeout".into()),
    );
    let r = h.check();
    assert!(
        r.anomalies.iter().any(|a| a.message.contains("lost write")),
        "{r:?}"
    );
}

#[test]
fn write_applied_twice_fails() {
    let mut h = H::default();
    h.put(0, (1, 2), "k/a", "1", 2, None);
    h.put(0, (3, 4), "k/a", "2", 3, Some(kv("k/a", "1", 2, 2, 1)));
    // The first put re-applied (a retried proposal): "1" shows up again at revision 4.
    h.get(1, (5, 6), "k/a", 4, Some(kv("k/a", "1", 4, 2, 3)));
    let r = h.check();
    let c = checkers(&r);
    assert!(c.contains(&"linearizability"), "{r:?}");
    assert!(
        r.anomalies
            .iter()
            .any(|a| a.message.contains("applied twice")),
        "{r:?}"
    );
}

#[test]
fn write_applied_twice_in_watch_log_fails() {
    let mut h = sequential();
    // Same value put again at revision 5.
    h.watch(
        1,
        vec![
            vec![put_ev(kv("k/a", "1", 2, 2, 1), None)],
            vec![put_ev(
                kv("k/a", "2", 3, 2, 2),
                Some(kv("k/a", "1", 2, 2, 1)),
            )],
            vec![del_ev("k/a", 4, kv("k/a", "2", 3, 2, 2))],
            vec![put_ev(kv("k/a", "1", 5, 5, 1), None)],
        ],
    );
    let r = h.check();
    assert!(
        r.anomalies
            .iter()
            .any(|a| a.checker == "watch" && a.message.contains("applied twice")),
        "{r:?}"
    );
}

#[test]
fn revision_going_back_fails() {
    let mut h = H::default();
    h.put(0, (1, 2), "k/a", "1", 5, None);
    // A later write on another key gets a smaller revision.
    h.put(1, (3, 4), "k/b", "2", 4, None);
    let r = h.check();
    assert_eq!(checkers(&r), vec!["revision"], "{r:?}");
}

#[test]
fn read_revision_behind_acknowledged_write_fails() {
    let mut h = H::default();
    h.put(0, (1, 2), "k/a", "1", 5, None);
    h.get(1, (3, 4), "k/b", 4, None);
    let r = h.check();
    assert_eq!(checkers(&r), vec!["revision"], "{r:?}");
}

#[test]
fn duplicate_revision_fails() {
    let mut h = H::default();
    h.put(0, (1, 2), "k/a", "1", 2, None);
    h.put(1, (1, 3), "k/b", "2", 2, None);
    let r = h.check();
    assert!(
        r.anomalies
            .iter()
            .any(|a| a.message.contains("two acknowledged writes")),
        "{r:?}"
    );
}

#[test]
fn unknown_write_may_take_effect_late() {
    let mut h = H::default();
    h.put_unknown(0, (1, 2), "k/a", "1");
    h.get(1, (3, 4), "k/a", 1, None);
    h.get(1, (5, 6), "k/a", 2, Some(kv("k/a", "1", 2, 2, 1)));
    let r = h.check();
    assert!(r.ok(), "{r:?}");
}

#[test]
fn unknown_write_may_never_take_effect() {
    let mut h = H::default();
    h.put_unknown(0, (1, 2), "k/a", "1");
    h.get(1, (3, 4), "k/a", 1, None);
    let r = h.check();
    assert!(r.ok(), "{r:?}");
}

#[test]
fn unknown_write_cannot_take_effect_before_invocation() {
    let mut h = H::default();
    h.get(1, (1, 2), "k/a", 2, Some(kv("k/a", "1", 2, 2, 1)));
    h.put_unknown(0, (3, 4), "k/a", "1");
    let r = h.check();
    assert!(checkers(&r).contains(&"linearizability"), "{r:?}");
}

#[test]
fn value_cannot_come_back_without_a_write() {
    let mut h = H::default();
    h.put_unknown(0, (1, 2), "k/a", "1");
    h.get(1, (3, 4), "k/a", 2, Some(kv("k/a", "1", 2, 2, 1)));
    h.get(1, (5, 6), "k/a", 2, None);
    let r = h.check();
    assert!(checkers(&r).contains(&"linearizability"), "{r:?}");
}

#[test]
fn cas_success_against_wrong_revision_fails() {
    let mut h = H::default();
    h.put(0, (1, 2), "k/a", "1", 2, None);
    h.put(0, (3, 4), "k/a", "2", 3, Some(kv("k/a", "1", 2, 2, 1)));
    // Compares against revision 2, which is no longer the key's: must not succeed.
    h.op(
        1,
        (5, 6),
        Request::Cas {
            key: "k/a".into(),
            expect_mod_rev: 2,
            value: "3".into(),
        },
        Outcome::Ok(Response::Cas {
            rev: 4,
            succeeded: true,
            current: None,
        }),
    );
    let r = h.check();
    assert!(checkers(&r).contains(&"linearizability"), "{r:?}");
}

#[test]
fn budget_exhaustion_is_unknown_not_pass() {
    let mut h = H::default();
    // Many concurrent unknown writes and reads that force a deep search.
    for i in 0..12 {
        h.put_unknown(i, (1, 100), "k/a", &format!("v{i}"));
    }
    for i in 0..12 {
        let rev = 2 + i as i64;
        let cur = kv("k/a", &format!("v{}", 11 - i), rev, 2, 1 + i as i64);
        h.get(
            20 + i,
            (200 + 2 * i as u64, 201 + 2 * i as u64),
            "k/a",
            rev,
            Some(cur),
        );
    }
    let r = check(
        &h.h,
        &Options {
            budget: 50,
            members: None,
            ..Options::default()
        },
    );
    assert_eq!(r.verdict(), "unknown", "{r:?}");
    assert!(!r.ok());
    let lin = linear::check(&h.h, 50);
    assert_eq!(lin[0].verdict, linear::Verdict::Unknown);
}

#[test]
fn minimal_sub_history_is_small() {
    let mut h = H::default();
    let mut rev = 1;
    let mut prev: Option<Kv> = None;
    // A long linearizable prefix, then one stale read.
    for i in 0..50u64 {
        rev += 1;
        let v = format!("v{i}");
        h.put(0, (10 * i, 10 * i + 1), "k/a", &v, rev, prev.clone());
        let cur = kv("k/a", &v, rev, 2, i as i64 + 1);
        h.get(1, (10 * i + 2, 10 * i + 3), "k/a", rev, Some(cur.clone()));
        prev = Some(cur);
    }
    h.get(1, (1000, 1001), "k/a", rev, Some(kv("k/a", "v3", 5, 2, 4)));
    let r = h.check();
    let lin = r
        .anomalies
        .iter()
        .find(|a| a.checker == "linearizability")
        .expect("violation");
    assert!(lin.ops.len() <= 3, "{lin:?}");
    assert!(lin.ops.contains(&100), "{lin:?}");
}

#[test]
fn serializable_read_of_unwritten_value_fails() {
    let mut h = H::default();
    h.sget(1, (1, 2), "k/a", 2, Some(kv("k/a", "ghost", 2, 2, 1)));
    let r = h.check();
    assert_eq!(checkers(&r), vec!["serializable"], "{r:?}");
}

#[test]
fn serializable_revision_going_back_on_a_connection_fails() {
    let mut h = H::default();
    h.put(0, (1, 2), "k/a", "1", 2, None);
    h.put(0, (3, 4), "k/a", "2", 3, Some(kv("k/a", "1", 2, 2, 1)));
    h.sget(1, (5, 6), "k/a", 3, Some(kv("k/a", "2", 3, 2, 2)));
    h.sget(1, (7, 8), "k/a", 2, Some(kv("k/a", "1", 2, 2, 1)));
    let r = h.check();
    assert_eq!(checkers(&r), vec!["serializable"], "{r:?}");
}

#[test]
fn read_not_matching_the_store_at_its_revision_fails() {
    let mut h = sequential();
    // Serializable read claiming revision 3 but showing revision 2's value.
    h.sget(2, (20, 21), "k/a", 3, Some(kv("k/a", "1", 2, 2, 1)));
    let r = h.check();
    assert_eq!(checkers(&r), vec!["replay"], "{r:?}");
}

#[test]
fn watch_gap_duplicate_split_and_bad_prev_kv_fail() {
    let base = sequential();
    let a1 = kv("k/a", "1", 2, 2, 1);
    let a2 = kv("k/a", "2", 3, 2, 2);
    let cases: Vec<(&str, Vec<Vec<Event>>)> = vec![
        (
            "missed revision",
            vec![
                vec![put_ev(a1.clone(), None)],
                vec![del_ev("k/a", 4, a2.clone())],
            ],
        ),
        (
            "out of order",
            vec![
                vec![put_ev(a1.clone(), None)],
                vec![put_ev(a2.clone(), Some(a1.clone()))],
                vec![put_ev(a2.clone(), Some(a1.clone()))],
            ],
        ),
        (
            "prev_kv",
            vec![
                vec![put_ev(a1.clone(), None)],
                vec![put_ev(a2.clone(), Some(a2.clone()))],
            ],
        ),
    ];
    for (what, responses) in cases {
        let mut h = H { h: base.h.clone() };
        h.watch(7, responses);
        let r = h.check();
        assert!(
            r.anomalies
                .iter()
                .any(|a| a.checker == "watch" && a.message.contains(what)),
            "{what}: {r:?}"
        );
    }
}

#[test]
fn watch_revision_split_across_responses_fails() {
    // A lease revoke deleting two keys in one revision, delivered in two responses.
    let mut h = H::default();
    let a = kv("k/a", "1", 2, 2, 1);
    let b = kv("k/b", "2", 3, 3, 1);
    h.put(0, (1, 2), "k/a", "1", 2, None);
    h.put(0, (3, 4), "k/b", "2", 3, None);
    let whole = vec![
        vec![put_ev(a.clone(), None)],
        vec![put_ev(b.clone(), None)],
        vec![del_ev("k/a", 4, a.clone()), del_ev("k/b", 4, b.clone())],
    ];
    h.watch(0, whole);
    h.watch(
        1,
        vec![
            vec![put_ev(a.clone(), None)],
            vec![put_ev(b.clone(), None)],
            vec![del_ev("k/a", 4, a.clone())],
            vec![del_ev("k/b", 4, b.clone())],
        ],
    );
    let r = h.check();
    assert!(
        r.anomalies
            .iter()
            .any(|a| a.checker == "watch" && a.message.contains("watcher 1")),
        "{r:?}"
    );
    assert!(
        !r.anomalies.iter().any(|a| a.message.contains("watcher 0")),
        "{r:?}"
    );
}

#[test]
fn watch_resumed_after_compaction_may_skip_compacted_revisions() {
    let mut h = sequential();
    let a2 = kv("k/a", "2", 3, 2, 2);
    h.h.watches.push(WatchLog {
        client: 5,
        records: vec![
            WatchRecord::Start {
                time: 0,
                start_rev: 1,
            },
            WatchRecord::Compacted {
                time: 1,
                compact_rev: 4,
            },
            WatchRecord::Start {
                time: 2,
                start_rev: 4,
            },
            WatchRecord::Events {
                time: 3,
                header_rev: 4,
                events: vec![del_ev("k/a", 4, a2)],
            },
        ],
    });
    let r = h.check();
    assert!(r.ok(), "{r:?}");
}

#[test]
fn convergence_detects_differing_hashes() {
    let mut h = sequential();
    h.h.hashes = (0..3)
        .map(|m| MemberHash {
            member: m,
            rev: 4,
            compact_rev: 0,
            hash: if m == 2 { 7 } else { 9 },
        })
        .collect();
    let opts = Options {
        members: Some(3),
        ..Options::default()
    };
    let r = check(&h.h, &opts);
    assert_eq!(checkers(&r), vec!["convergence"], "{r:?}");
    h.h.hashes[2].hash = 9;
    assert!(check(&h.h, &opts).ok());
}

#[test]
fn many_unobserved_unknown_writes_do_not_exhaust_the_search() {
    // Timeouts whose values nobody ever read: they may have happened or not; the search
    // must still finish quickly with a pass, and still catch the stale read at the end.
    let mut h = H::default();
    for i in 0..40u64 {
        h.put_unknown(i as u32, (i, 10_000), "k/a", &format!("lost{i}"));
    }
    h.put(50, (100, 101), "k/a", "1", 2, None);
    h.get(51, (102, 103), "k/a", 2, Some(kv("k/a", "1", 2, 2, 1)));
    let opts = Options {
        budget: 10_000,
        members: None,
        ..Options::default()
    };
    let r = check(&h.h, &opts);
    assert!(r.ok(), "{r:?}");
    h.put(50, (104, 105), "k/a", "2", 3, Some(kv("k/a", "1", 2, 2, 1)));
    assert!(check(&h.h, &opts).ok());
    h.get(51, (106, 107), "k/a", 3, Some(kv("k/a", "1", 2, 2, 1)));
    let r = check(&h.h, &opts);
    assert_eq!(r.verdict(), "fail", "{r:?}");
}

#[test]
fn lease_revoke_removes_the_keys_put_with_the_lease() {
    let mut h = H::default();
    h.op(
        0,
        (1, 2),
        Request::Put {
            key: "k/a".into(),
            value: "1".into(),
            lease: 77,
        },
        Outcome::Ok(Response::Put { rev: 2, prev: None }),
    );
    h.op(
        0,
        (3, 4),
        Request::LeaseRevoke { lease: 77 },
        Outcome::Ok(Response::LeaseRevoke { rev: 3 }),
    );
    h.get(1, (5, 6), "k/a", 3, None);
    assert!(h.check().ok(), "{:?}", h.check());
    // A read after the revoke that still sees the leased value is stale.
    h.get(1, (7, 8), "k/a", 3, Some(kv("k/a", "1", 2, 2, 1)));
    assert!(checkers(&h.check()).contains(&"linearizability"));
}

#[test]
fn long_history_is_checked_in_about_one_step_per_op() {
    // 20,000 ops on one key: puts and reads from two overlapping clients, with a timeout
    // now and then whose value a later read does see. A search that backtracked over the
    // history would run out of this budget.
    let mut h = H::default();
    let mut prev: Option<Kv> = None;
    let mut rev = 1;
    for i in 0..10_000u64 {
        let t = 10 * i;
        let v = format!("v{i}");
        rev += 1;
        if i % 97 == 0 {
            h.put_unknown(0, (t, t + 4), "k/a", &v);
        } else {
            h.put(0, (t, t + 4), "k/a", &v, rev, prev.clone());
        }
        let cur = kv("k/a", &v, rev, 2, i as i64 + 1);
        // Overlaps the put: sees the new value.
        h.get(1, (t + 2, t + 6), "k/a", rev, Some(cur.clone()));
        prev = Some(cur);
    }
    let r = check(
        &h.h,
        &Options {
            budget: 60_000,
            members: None,
            ..Options::default()
        },
    );
    assert!(r.ok(), "{r:?}");
}

#[test]
fn cas_against_a_revision_only_a_serializable_read_showed_passes() {
    // Found by a run against etcd: a put timed out, a serializable range showed its value
    // at revision 3, and a CAS comparing against revision 3 succeeded. Linearizable.
    let mut h = H::default();
    h.put(0, (1, 2), "k/a", "1", 2, None);
    h.put_unknown(3, (3, 40), "k/a", "2");
    h.op(
        2,
        (5, 6),
        Request::Range {
            prefix: "k/".into(),
            serializable: true,
        },
        Outcome::Ok(Response::Range {
            rev: 3,
            kvs: vec![kv("k/a", "2", 3, 2, 2)],
        }),
    );
    h.op(
        2,
        (7, 20),
        Request::Cas {
            key: "k/a".into(),
            expect_mod_rev: 3,
            value: "3".into(),
        },
        Outcome::Ok(Response::Cas {
            rev: 4,
            succeeded: true,
            current: None,
        }),
    );
    h.put(1, (19, 30), "k/a", "4", 5, Some(kv("k/a", "3", 4, 2, 3)));
    let r = h.check();
    assert!(r.ok(), "{r:?}");
}

#[test]
fn missing_prev_kv_is_allowed_only_at_a_compacted_revision() {
    // Found by a run against etcd: a watcher catching up got the event at the compaction
    // revision without prev_kv, as etcd documents (the previous version was compacted).
    let a1 = kv("k/a", "1", 2, 2, 1);
    let a2 = kv("k/a", "2", 3, 2, 2);
    let build = |compact: bool| {
        let mut h = H::default();
        h.put(0, (1, 2), "k/a", "1", 2, None);
        h.put(0, (3, 4), "k/a", "2", 3, Some(a1.clone()));
        if compact {
            h.op(
                9,
                (5, 6),
                Request::Compact { rev: 3 },
                Outcome::Ok(Response::Compact { rev: 3 }),
            );
        }
        h.watch(
            0,
            vec![
                vec![put_ev(a1.clone(), None)],
                vec![put_ev(a2.clone(), Some(a1.clone()))],
            ],
        );
        h.watch(
            1,
            vec![
                vec![put_ev(a1.clone(), None)],
                vec![put_ev(a2.clone(), None)],
            ],
        );
        h
    };
    let r = build(true).check();
    assert!(r.ok(), "{r:?}");
    let r = build(false).check();
    assert!(
        r.anomalies
            .iter()
            .any(|a| a.message.contains("watcher 1") && a.message.contains("lacks prev_kv")),
        "{r:?}"
    );
}

/// A watcher lagging behind a compaction at a revision holding only deletes, resumed at
/// that revision, missing those deletes: what etcd #19179 does.
fn compacted_delete_history() -> H {
    let mut h = H::default();
    let a1 = kv("k/a", "1", 2, 2, 1);
    let b1 = kv("k/b", "2", 3, 3, 1);
    h.put(0, (1, 2), "k/a", "1", 2, None);
    h.put(0, (3, 4), "k/b", "2", 3, None);
    let del = Request::Delete { key: "k/a".into() };
    let out = Outcome::Ok(Response::Delete {
        rev: 4,
        deleted: 1,
        prev: Some(a1.clone()),
    });
    h.op(0, (5, 6), del, out);
    h.put(0, (7, 8), "k/b", "3", 5, Some(b1.clone()));
    let b2 = kv("k/b", "3", 5, 3, 2);
    h.watch(
        0,
        vec![
            vec![put_ev(a1.clone(), None)],
            vec![put_ev(b1.clone(), None)],
            vec![del_ev("k/a", 4, a1.clone())],
            vec![put_ev(b2.clone(), Some(b1.clone()))],
        ],
    );
    h.h.watches.push(WatchLog {
        client: 1,
        records: vec![
            WatchRecord::Start {
                time: 0,
                start_rev: 1,
            },
            WatchRecord::Events {
                time: 1,
                header_rev: 2,
                events: vec![put_ev(a1, None)],
            },
            WatchRecord::Compacted {
                time: 2,
                compact_rev: 4,
            },
            WatchRecord::Start {
                time: 3,
                start_rev: 4,
            },
            WatchRecord::Events {
                time: 4,
                header_rev: 5,
                events: vec![put_ev(b2, Some(b1))],
            },
        ],
    });
    h
}

#[test]
fn missed_deletes_at_the_compaction_revision_fail_unless_tolerated_for_etcd() {
    let h = compacted_delete_history();
    let r = h.check();
    assert!(
        r.anomalies
            .iter()
            .any(|a| a.message.contains("etcd #19179")),
        "{r:?}"
    );
    let r = check(
        &h.h,
        &Options {
            tolerate_known_etcd_bugs: true,
            ..Options::default()
        },
    );
    assert!(r.ok(), "{r:?}");
    assert_eq!(r.known.len(), 1, "{r:?}");
}

#[test]
fn a_revoke_that_did_not_delete_its_key_fails_even_when_the_log_agrees() {
    // The server forgot to delete the leased key on revoke, and its watch log agrees (no
    // delete event). The completed revoke stays in the search, which catches it.
    let mut h = H::default();
    let a1 = Kv {
        lease: 77,
        ..kv("k/a", "1", 2, 2, 1)
    };
    h.op(
        0,
        (1, 2),
        Request::Put {
            key: "k/a".into(),
            value: "1".into(),
            lease: 77,
        },
        Outcome::Ok(Response::Put { rev: 2, prev: None }),
    );
    h.op(
        0,
        (3, 4),
        Request::LeaseRevoke { lease: 77 },
        Outcome::Ok(Response::LeaseRevoke { rev: 2 }),
    );
    h.get(1, (5, 6), "k/a", 2, Some(a1.clone()));
    h.watch(0, vec![vec![put_ev(a1, None)]]);
    h.h.final_rev = 2;
    let r = h.check();
    assert!(checkers(&r).contains(&"linearizability"), "{r:?}");
}

#[test]
fn unknown_writes_the_complete_log_never_saw_are_dropped_from_the_search() {
    // Timed-out lease puts and revokes interleaved with reads: with a complete watch log
    // that shows none of them took effect, the search needs no more than one step an op.
    let mut h = H::default();
    let a1 = kv("k/a", "1", 2, 2, 1);
    h.put(0, (1, 2), "k/a", "1", 2, None);
    for i in 0..30u64 {
        h.op(
            1 + i as u32,
            (3 + i, 10_000),
            Request::Put {
                key: "k/a".into(),
                value: format!("lost{i}"),
                lease: 100 + i as i64,
            },
            Outcome::Unknown("timeout".into()),
        );
        h.op(
            40 + i as u32,
            (3 + i, 10_000),
            Request::LeaseRevoke {
                lease: 100 + i as i64,
            },
            Outcome::Unknown("timeout".into()),
        );
    }
    for i in 0..30u64 {
        h.get(90, (100 + 2 * i, 101 + 2 * i), "k/a", 2, Some(a1.clone()));
    }
    h.watch(0, vec![vec![put_ev(a1, None)]]);
    let opts = Options {
        budget: 200,
        ..Options::default()
    };
    // Without a final revision the log cannot be known complete: the same budget runs out.
    assert_eq!(check(&h.h, &opts).verdict(), "unknown");
    h.h.final_rev = 2;
    let r = check(&h.h, &opts);
    assert!(r.ok(), "{r:?}");
}
