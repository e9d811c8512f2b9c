//! Global revision checks. Revisions are global to the store, so they give checks across
//! keys that the per-key search cannot:
//! - every acknowledged write has its own revision;
//! - a write acknowledged before another write was invoked has a smaller revision;
//! - a linearizable op's header revision is >= that of every write acknowledged before it
//!   was invoked, and >= that of every linearizable read completed before it was invoked;
//! - every value (unique per run) is seen at one mod revision only, and a key's mod
//!   revision names one value only (a value seen at two revisions was applied twice).

use std::collections::HashMap;

use crate::history::{History, Kv, Op, Request, Response};

use super::Anomaly;

/// The revision an op wrote at, if it is an acknowledged write of one key.
fn write_rev(op: &Op) -> Option<i64> {
    match op.ok()? {
        Response::Put { rev, .. } => Some(*rev),
        Response::Delete { rev, deleted, .. } if *deleted > 0 => Some(*rev),
        Response::Cas {
            rev,
            succeeded: true,
            ..
        } => Some(*rev),
        _ => None,
    }
}

/// Whether the op's header revision must reflect every write acknowledged before it.
fn is_linearizable(op: &Op) -> bool {
    match &op.req {
        Request::Get { serializable, .. } | Request::Range { serializable, .. } => !serializable,
        Request::Put { .. } | Request::Delete { .. } | Request::Cas { .. } => true,
        // Lease and compaction headers are not ordered with KV reads in etcd 3.4.
        Request::LeaseGrant { .. } | Request::LeaseRevoke { .. } | Request::Compact { .. } => false,
    }
}

pub fn check(history: &History, out: &mut Vec<Anomaly>) {
    unique_revisions(history, out);
    real_time_order(history, out);
    observations(history, out);
}

fn unique_revisions(history: &History, out: &mut Vec<Anomaly>) {
    let mut by_rev: HashMap<i64, &Op> = HashMap::new();
    for op in &history.ops {
        let Some(rev) = write_rev(op) else { continue };
        if let Some(other) = by_rev.insert(rev, op) {
            out.push(Anomaly::new(
                "revision",
                format!("two acknowledged writes got revision {rev}"),
                vec![other.id, op.id],
            ));
        }
    }
}

fn real_time_order(history: &History, out: &mut Vec<Anomaly>) {
    // Completed linearizable ops sorted by completion; walk ops by invocation and keep the
    // largest write / read revision completed before each invocation.
    let mut done: Vec<(&Op, i64, bool)> = history
        .ops
        .iter()
        .filter(|op| is_linearizable(op))
        .filter_map(|op| {
            let rev = op.ok()?.rev();
            Some((op, rev, write_rev(op).is_some()))
        })
        .collect();
    done.sort_by_key(|(op, _, _)| op.complete);
    let mut by_invoke: Vec<&Op> = history
        .ops
        .iter()
        .filter(|op| is_linearizable(op) && op.ok().is_some())
        .collect();
    by_invoke.sort_by_key(|op| op.invoke);
    let mut j = 0;
    let mut max_write: Option<(i64, u64)> = None;
    let mut max_read: Option<(i64, u64)> = None;
    for op in by_invoke {
        while j < done.len() && done[j].0.complete < op.invoke {
            let (d, rev, is_write) = done[j];
            let slot = if is_write {
                &mut max_write
            } else {
                &mut max_read
            };
            if slot.is_none_or(|(r, _)| rev > r) {
                *slot = Some((rev, d.id));
            }
            j += 1;
        }
        let rev = op.ok().map(Response::rev).unwrap_or_default();
        let is_write = write_rev(op).is_some();
        if let Some((w, wid)) = max_write {
            if (is_write && rev <= w) || rev < w {
                out.push(Anomaly::new(
                    "revision",
                    format!(
                        "op {} has revision {rev}, behind revision {w} of write {wid} acknowledged before it began",
                        op.id
                    ),
                    vec![wid, op.id],
                ));
            }
        }
        if let Some((r, rid)) = max_read {
            if rev < r {
                out.push(Anomaly::new(
                    "revision",
                    format!(
                        "op {} has revision {rev}, behind revision {r} of read {rid} completed before it began",
                        op.id
                    ),
                    vec![rid, op.id],
                ));
            }
        }
    }
}

/// Every (key, value, mod revision) the history shows, with the op that showed it.
fn observed(history: &History) -> Vec<(Kv, u64)> {
    let mut seen = Vec::new();
    for op in &history.ops {
        let Some(resp) = op.ok() else { continue };
        let mut push = |kv: &Kv| seen.push((kv.clone(), op.id));
        match (resp, &op.req) {
            (Response::Get { kv, .. }, _) => kv.iter().for_each(&mut push),
            (Response::Range { kvs, .. }, _) => kvs.iter().for_each(&mut push),
            (Response::Put { rev, prev }, Request::Put { key, value, .. }) => {
                prev.iter().for_each(&mut push);
                push(&Kv {
                    key: key.clone(),
                    value: value.clone(),
                    mod_rev: *rev,
                    create_rev: 0,
                    version: 0,
                    lease: 0,
                });
            }
            (Response::Delete { prev, .. }, _) => prev.iter().for_each(&mut push),
            (
                Response::Cas {
                    rev,
                    succeeded,
                    current,
                },
                Request::Cas { key, value, .. },
            ) => {
                current.iter().for_each(&mut push);
                if *succeeded {
                    push(&Kv {
                        key: key.clone(),
                        value: value.clone(),
                        mod_rev: *rev,
                        create_rev: 0,
                        version: 0,
                        lease: 0,
                    });
                }
            }
            _ => {}
        }
    }
    for w in &history.watches {
        for rec in &w.records {
            if let crate::history::WatchRecord::Events { events, .. } = rec {
                for e in events {
                    if e.kind == crate::history::EventKind::Put {
                        seen.push((e.kv.clone(), u64::MAX));
                    }
                    if let Some(p) = &e.prev {
                        seen.push((p.clone(), u64::MAX));
                    }
                }
            }
        }
    }
    seen
}

fn observations(history: &History, out: &mut Vec<Anomaly>) {
    let mut rev_of: HashMap<(&str, &str), (i64, u64)> = HashMap::new();
    let mut value_at: HashMap<(&str, i64), (&str, u64)> = HashMap::new();
    let seen = observed(history);
    let ids = |a: u64, b: u64| [a, b].into_iter().filter(|i| *i != u64::MAX).collect();
    for (kv, id) in &seen {
        match rev_of.get(&(kv.key.as_str(), kv.value.as_str())) {
            Some((r, other)) if *r != kv.mod_rev => {
                out.push(Anomaly::new(
                    "revision",
                    format!(
                        "value {:?} of key {:?} seen at revisions {r} and {} (applied twice?)",
                        kv.value, kv.key, kv.mod_rev
                    ),
                    ids(*other, *id),
                ));
            }
            Some(_) => {}
            None => {
                rev_of.insert((&kv.key, &kv.value), (kv.mod_rev, *id));
            }
        }
        match value_at.get(&(kv.key.as_str(), kv.mod_rev)) {
            Some((v, other)) if *v != kv.value => {
                out.push(Anomaly::new(
                    "revision",
                    format!(
                        "key {:?} at revision {} holds both {v:?} and {:?}",
                        kv.key, kv.mod_rev, kv.value
                    ),
                    ids(*other, *id),
                ));
            }
            Some(_) => {}
            None => {
                value_at.insert((&kv.key, kv.mod_rev), (&kv.value, *id));
            }
        }
    }
}
