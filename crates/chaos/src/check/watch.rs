//! Watch checks, and the replay of the store's history that the watches give.
//!
//! Every client runs a watcher over the whole workload prefix from revision 1 with prev_kv,
//! so the union of their events is the store's complete revision log (every revision from
//! 2 on changes at least one key). Checks per watcher:
//! - ordered: revisions increase from response to response and never decrease inside one;
//! - unique: no (revision, key) twice;
//! - atomic: all events of one revision arrive in one response, all of them;
//! - reliable and resumable: the revisions a watcher saw are every revision of the log
//!   from its start to its last event, except those below a compaction it was told of;
//! - prev_kv: equals the key's state just before the event (or is absent when a
//!   compaction at or after the event's revision removed that state, as etcd documents).
//!
//! Checks of the log against the KV history:
//! - two watchers never disagree on a revision;
//! - every acknowledged write is in the log at its revision (no lost write);
//! - every put event's value was written by a client, and only once;
//! - every successful read shows exactly the log's state at the read's header revision.

use std::collections::{BTreeMap, HashMap};

use crate::history::{Event, EventKind, History, Kv, Outcome, Request, Response, WatchRecord};

use super::{Anomaly, Options};

/// The store's revision log as the watchers saw it.
pub struct Log {
    pub events: BTreeMap<i64, Vec<Event>>,
    /// Largest R such that every revision in 2..=R is in the log.
    pub complete_to: i64,
}

/// Builds the log from every watcher, reporting disagreements.
pub fn build_log(history: &History, out: &mut Vec<Anomaly>) -> Log {
    let mut events: BTreeMap<i64, Vec<Event>> = BTreeMap::new();
    let mut source: HashMap<i64, u32> = HashMap::new();
    for w in &history.watches {
        for rec in &w.records {
            let WatchRecord::Events { events: evs, .. } = rec else {
                continue;
            };
            // prev_kv is left out here: it may be missing on one watcher and not another
            // (see check_prev_kv), and it is checked per watcher against the replay.
            let mut by_rev: BTreeMap<i64, Vec<Event>> = BTreeMap::new();
            for e in evs {
                by_rev.entry(e.kv.mod_rev).or_default().push(Event {
                    prev: None,
                    ..e.clone()
                });
            }
            for (rev, group) in by_rev {
                match events.get(&rev) {
                    None => {
                        events.insert(rev, group);
                        source.insert(rev, w.client);
                    }
                    Some(existing) if *existing != group => {
                        // The larger group wins as reference; the atomicity check reports
                        // a watcher that got part of a revision.
                        let other = source.get(&rev).copied().unwrap_or_default();
                        let same_prefix = existing.len() != group.len()
                            && (existing.starts_with(&group) || group.starts_with(existing));
                        if !same_prefix {
                            out.push(Anomaly::new(
                                "watch",
                                format!(
                                    "watchers {other} and {} disagree at revision {rev}: {existing:?} vs {group:?}",
                                    w.client
                                ),
                                vec![],
                            ));
                        }
                        if group.len() > existing.len() {
                            events.insert(rev, group);
                            source.insert(rev, w.client);
                        }
                    }
                    Some(_) => {}
                }
            }
        }
    }
    let mut complete_to = 1;
    for rev in events.keys() {
        if *rev == complete_to + 1 {
            complete_to = *rev;
        } else if *rev > complete_to + 1 {
            break;
        }
    }
    Log {
        events,
        complete_to,
    }
}

pub fn check(
    history: &History,
    log: &Log,
    opts: &Options,
    out: &mut Vec<Anomaly>,
    known: &mut Vec<String>,
) {
    for w in &history.watches {
        let last = check_watcher(w.client, &w.records, log, opts, out, known);
        if history.final_rev > 1 && last < history.final_rev {
            out.push(Anomaly::new(
                "watch",
                format!(
                    "watcher {} stopped at revision {last}; the store reached {} (events withheld)",
                    w.client, history.final_rev
                ),
                vec![],
            ));
        }
    }
    check_writes(history, log, out);
    check_prev_kv(history, log, out);
    check_reads(history, log, out);
}

/// Checks one watcher's stream; returns the revision of its last event.
fn check_watcher(
    client: u32,
    records: &[WatchRecord],
    log: &Log,
    opts: &Options,
    out: &mut Vec<Anomaly>,
    known: &mut Vec<String>,
) -> i64 {
    let mut bad = |msg: String| {
        out.push(Anomaly::new(
            "watch",
            format!("watcher {client}: {msg}"),
            vec![],
        ))
    };
    let mut last = 0i64;
    // Revisions this watcher must see next: everything in the log after `expect_from`.
    let mut expect_from = 1i64;
    // The compaction revision the watcher was last told to resume from.
    let mut compacted_at = 0i64;
    for rec in records {
        match rec {
            WatchRecord::Start { start_rev, .. } => {
                if *start_rev > (last + 1).max(expect_from) {
                    bad(format!("resumed at {start_rev} after last event {last}"));
                }
                expect_from = expect_from.max(*start_rev);
            }
            WatchRecord::Compacted { compact_rev, .. } => {
                expect_from = expect_from.max(*compact_rev);
                compacted_at = *compact_rev;
            }
            WatchRecord::Broken { .. } => {}
            WatchRecord::Events { events, .. } => {
                let mut prev_in_resp = 0i64;
                let mut keys_at_rev: Vec<&str> = Vec::new();
                for e in events {
                    let rev = e.kv.mod_rev;
                    if rev <= last {
                        bad(format!(
                            "event at revision {rev} after an earlier response reached {last} (out of order, duplicate or split revision)"
                        ));
                        continue;
                    }
                    if rev < prev_in_resp {
                        bad(format!(
                            "revision {rev} after {prev_in_resp} in one response"
                        ));
                    }
                    if rev != prev_in_resp {
                        keys_at_rev.clear();
                    }
                    if keys_at_rev.contains(&e.kv.key.as_str()) {
                        bad(format!("key {:?} twice at revision {rev}", e.kv.key));
                    }
                    keys_at_rev.push(&e.kv.key);
                    if rev != prev_in_resp {
                        // Reliable: no log revision between the last seen and this one.
                        let from = expect_from.max(last.max(prev_in_resp) + 1);
                        for (gap, gap_events) in log.events.range(from..rev) {
                            // etcd #19179: a watch resumed at the compaction revision
                            // misses the deletes at that revision (compaction removed
                            // their tombstones). Only that exact pattern is tolerated,
                            // and only when asked to (running etcd itself).
                            let etcd_19179 = *gap == compacted_at
                                && gap_events.iter().all(|e| e.kind == EventKind::Delete);
                            if etcd_19179 && opts.tolerate_known_etcd_bugs {
                                known.push(format!(
                                    "watcher {client}: missed the deletes at compaction revision {gap} (etcd #19179)"
                                ));
                                continue;
                            }
                            let note = if etcd_19179 {
                                " (deletes at the compaction revision: etcd #19179)"
                            } else {
                                ""
                            };
                            bad(format!(
                                "missed revision {gap} (jumped from {last} to {rev}){note}"
                            ));
                            break;
                        }
                        // Atomic: the whole revision in this response.
                        let here = events.iter().filter(|x| x.kv.mod_rev == rev).count();
                        if let Some(all) = log.events.get(&rev) {
                            if here != all.len() {
                                bad(format!(
                                    "got {here} of the {} events of revision {rev} in one response",
                                    all.len()
                                ));
                            }
                        }
                    }
                    prev_in_resp = rev;
                }
                last = last.max(prev_in_resp);
            }
        }
    }
    last
}

fn check_writes(history: &History, log: &Log, out: &mut Vec<Anomaly>) {
    let mut written: HashMap<(&str, &str), u64> = HashMap::new();
    for op in &history.ops {
        if let Request::Put { key, value, .. } | Request::Cas { key, value, .. } = &op.req {
            written.insert((key, value), op.id);
        }
    }
    let mut put_at: HashMap<(&str, &str), i64> = HashMap::new();
    for (rev, evs) in &log.events {
        for e in evs {
            if e.kind != EventKind::Put {
                continue;
            }
            let kv = (e.kv.key.as_str(), e.kv.value.as_str());
            if !written.contains_key(&kv) {
                out.push(Anomaly::new(
                    "watch",
                    format!(
                        "event at revision {rev} puts {:?}={:?}, which no client wrote",
                        kv.0, kv.1
                    ),
                    vec![],
                ));
            }
            if let Some(first) = put_at.insert(kv, *rev) {
                out.push(Anomaly::new(
                    "watch",
                    format!(
                        "{:?}={:?} put at revisions {first} and {rev} (applied twice)",
                        kv.0, kv.1
                    ),
                    written.get(&kv).copied().into_iter().collect(),
                ));
            }
        }
    }
    for op in &history.ops {
        let Some(resp) = op.ok() else { continue };
        let (rev, key, kind, value) = match (&op.req, resp) {
            (Request::Put { key, value, .. }, Response::Put { rev, .. }) => {
                (*rev, key, EventKind::Put, value.as_str())
            }
            (
                Request::Cas { key, value, .. },
                Response::Cas {
                    rev,
                    succeeded: true,
                    ..
                },
            ) => (*rev, key, EventKind::Put, value.as_str()),
            (Request::Delete { key }, Response::Delete { rev, deleted, .. }) if *deleted > 0 => {
                (*rev, key, EventKind::Delete, "")
            }
            _ => continue,
        };
        if rev > log.complete_to {
            continue;
        }
        let found = log.events.get(&rev).is_some_and(|evs| {
            evs.iter().any(|e| {
                e.kind == kind
                    && &e.kv.key == key
                    && (kind == EventKind::Delete || e.kv.value == value)
            })
        });
        if !found {
            out.push(Anomaly::new(
                "watch",
                format!("acknowledged write {} of {key:?} at revision {rev} is not in the log (lost write)", op.id),
                vec![op.id],
            ));
        }
    }
}

/// Replays the log; calls `at(rev, state)` for each revision boundary in `revs` (sorted).
fn replay<'a>(
    log: &'a Log,
    mut visit: impl FnMut(i64, &BTreeMap<&'a str, &'a Kv>, Option<&'a Event>),
) {
    let mut state: BTreeMap<&str, &Kv> = BTreeMap::new();
    for (_, evs) in log.events.range(..=log.complete_to) {
        for e in evs {
            visit(e.kv.mod_rev, &state, Some(e));
            match e.kind {
                EventKind::Put => {
                    state.insert(&e.kv.key, &e.kv);
                }
                EventKind::Delete => {
                    state.remove(e.kv.key.as_str());
                }
            }
        }
    }
    visit(log.complete_to + 1, &state, None);
}

fn check_prev_kv(history: &History, log: &Log, out: &mut Vec<Anomaly>) {
    // The key's state just before each logged event.
    let mut before: HashMap<(i64, &str), Option<&Kv>> = HashMap::new();
    replay(log, |rev, state, e| {
        if let Some(e) = e {
            before.insert(
                (rev, e.kv.key.as_str()),
                state.get(e.kv.key.as_str()).copied(),
            );
        }
    });
    let all = history.watches.iter().flat_map(|w| {
        w.records.iter().flat_map(move |r| match r {
            WatchRecord::Events { events, .. } => events.iter().map(|e| (w.client, e)).collect(),
            _ => Vec::new(),
        })
    });
    // The highest compaction that may have happened (acknowledged or not).
    let compacted_from = history
        .ops
        .iter()
        .filter_map(|op| match (&op.req, &op.outcome) {
            (Request::Compact { .. }, Outcome::Failed(_)) => None,
            (Request::Compact { rev }, _) => Some(*rev),
            _ => None,
        })
        .max();
    for (client, e) in all {
        let rev = e.kv.mod_rev;
        let Some(state) = before.get(&(rev, e.kv.key.as_str())) else {
            continue;
        };
        // etcd fills prev_kv on every event of an existing key; deleting an absent key
        // makes no event.
        let problem = match (e.kind, &e.prev, state) {
            (EventKind::Delete, _, None) => Some("deletes an absent key".to_string()),
            // etcd documents that prev_kv is omitted when the previous version was
            // compacted, which a compaction at or after the event's revision does.
            (_, None, Some(_)) if compacted_from.is_some_and(|c| c >= rev) => None,
            (_, None, Some(_)) => Some("lacks prev_kv".to_string()),
            (_, Some(p), s) if Some(p) != *s => {
                Some(format!("has prev_kv {p:?}, the state was {s:?}"))
            }
            _ => None,
        };
        if let Some(p) = problem {
            out.push(Anomaly::new(
                "watch",
                format!(
                    "watcher {client}: event of {:?} at revision {rev} {p}",
                    e.kv.key
                ),
                vec![],
            ));
        }
    }
}

fn same(a: &Kv, b: &Kv) -> bool {
    // Delete-then-put resets create_rev and version; compare every field the read shows.
    a.key == b.key
        && a.value == b.value
        && a.mod_rev == b.mod_rev
        && a.create_rev == b.create_rev
        && a.version == b.version
}

/// Every successful read equals the log's state at its header revision.
fn check_reads(history: &History, log: &Log, out: &mut Vec<Anomaly>) {
    // (header revision, op id, key or None for a range, range prefix, what it returned)
    type Read<'a> = (i64, u64, Option<&'a str>, &'a str, Vec<&'a Kv>);
    let mut reads: Vec<Read> = Vec::new();
    for op in &history.ops {
        let Some(resp) = op.ok() else { continue };
        match (&op.req, resp) {
            (Request::Get { key, .. }, Response::Get { rev, kv }) => {
                reads.push((*rev, op.id, Some(key), "", kv.iter().collect()))
            }
            (Request::Range { prefix, .. }, Response::Range { rev, kvs }) => {
                reads.push((*rev, op.id, None, prefix, kvs.iter().collect()))
            }
            (
                Request::Cas { key, .. },
                Response::Cas {
                    rev,
                    succeeded: false,
                    current,
                },
            ) => reads.push((*rev, op.id, Some(key), "", current.iter().collect())),
            _ => {}
        }
    }
    reads.retain(|r| r.0 <= log.complete_to);
    reads.sort_by_key(|r| r.0);
    let mut i = 0;
    replay(log, |rev, state, _| {
        // Reads at revisions below `rev` see the state before this event.
        while i < reads.len() && reads[i].0 < rev {
            let (r, id, key, prefix, got) = &reads[i];
            let want: Vec<&Kv> = match key {
                Some(k) => state.get(k).copied().into_iter().collect(),
                None => state
                    .range(*prefix..)
                    .take_while(|(k, _)| k.starts_with(prefix))
                    .map(|(_, v)| *v)
                    .collect(),
            };
            let equal =
                want.len() == got.len() && want.iter().zip(got.iter()).all(|(a, b)| same(a, b));
            if !equal {
                out.push(Anomaly::new(
                    "replay",
                    format!("read {id} at revision {r} returned {got:?}, the store held {want:?}"),
                    vec![*id],
                ));
            }
            i += 1;
        }
    });
}
