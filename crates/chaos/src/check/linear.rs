//! Per-key linearizability: a Wing-Gong search with Lowe's memoisation.
//!
//! Each key is checked alone (linearizability is compositional, and every written value is
//! unique, so a key's sub-history is a register with compare-and-set). The sub-history of a
//! key holds its gets, puts, deletes and CAS txns, the projection of every linearizable
//! prefix range onto the key, and every lease revoke whose lease some put to the key used.
//!
//! The search looks for an order of operations that respects real time (an op may be placed
//! before another only if it was invoked before the other completed) and the register's
//! sequential semantics. Operations with an unknown outcome (timeouts) never complete: they
//! may take effect at any point after their invocation, or never. Failed reads are dropped.
//! The search is bounded by a budget of explored states; running out gives
//! [`Verdict::Unknown`], never a pass.
//!
//! Guarantee: `Verdict::Ok` means a linearization was found; `Verdict::Violation` means the
//! whole space was explored and none exists.

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::history::{EventKind, History, Kv, Outcome, Request, Response, WatchRecord};

/// Result of one search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    Violation,
    /// The budget ran out before the search finished.
    Unknown,
}

/// What an operation did to (or saw of) one key, in the register model.
#[derive(Debug, Clone, PartialEq, Eq)]
enum KOp {
    /// Saw the key holding this value (None = absent).
    Read(Option<u32>),
    /// Put `value`; `prev` is the value the server said was replaced, when known.
    Put {
        value: u32,
        prev: Option<Option<u32>>,
    },
    /// Delete; `prev` is the value the server said it removed (Some(None) = nothing).
    Delete { prev: Option<Option<u32>> },
    /// If the key's mod revision equals `expect` then put `value`. `result` when known:
    /// (succeeded, value seen by the else-branch get).
    Cas {
        expect: i64,
        value: u32,
        result: Option<(bool, Option<u32>)>,
    },
    /// Remove the key if its current value was put with this lease.
    Revoke { lease: i64 },
}

/// One operation of a key's sub-history.
#[derive(Debug, Clone)]
struct Entry {
    op_id: u64,
    invoke: u64,
    /// u64::MAX when the outcome is unknown.
    complete: u64,
    kop: KOp,
}

/// The key's sub-history with the facts the model needs about values.
struct KeyHistory {
    entries: Vec<Entry>,
    /// Revision each value was observed at (index = value id), if ever observed.
    value_rev: Vec<Option<i64>>,
    /// Lease each value was put with (0 = none).
    value_lease: Vec<i64>,
}

/// A failure of one key, with the smallest failing sub-history found by shrinking.
#[derive(Debug, Clone)]
pub struct KeyResult {
    pub key: String,
    pub verdict: Verdict,
    pub ops: usize,
    /// For a violation: ids of the operations of a minimal failing sub-history.
    pub minimal: Vec<u64>,
}

/// Interns value strings of one key into small ids.
#[derive(Default)]
struct Values {
    ids: HashMap<String, u32>,
    rev: Vec<Option<i64>>,
    lease: Vec<i64>,
}

impl Values {
    fn id(&mut self, v: &str) -> u32 {
        if let Some(id) = self.ids.get(v) {
            return *id;
        }
        let id = self.rev.len() as u32;
        self.ids.insert(v.to_string(), id);
        self.rev.push(None);
        self.lease.push(0);
        id
    }
    fn observe(&mut self, kv: &Kv) -> u32 {
        let id = self.id(&kv.value);
        // The first observation wins; disagreements are reported by the revision checker.
        if self.rev[id as usize].is_none() {
            self.rev[id as usize] = Some(kv.mod_rev);
        }
        id
    }
    fn observe_opt(&mut self, kv: &Option<Kv>) -> Option<u32> {
        kv.as_ref().map(|kv| self.observe(kv))
    }
}

fn covers(prefix: &str, key: &str) -> bool {
    key.starts_with(prefix)
}

/// Builds every key's sub-history from the full history.
fn split_by_key(history: &History) -> Vec<(String, KeyHistory)> {
    let mut keys: BTreeSet<String> = BTreeSet::new();
    let mut leases_of_key: HashMap<String, HashSet<i64>> = HashMap::new();
    for op in &history.ops {
        if let Some(k) = op.key() {
            keys.insert(k.to_string());
        }
        if let Request::Put { key, lease, .. } = &op.req {
            if *lease != 0 {
                leases_of_key.entry(key.clone()).or_default().insert(*lease);
            }
        }
        if let Some(Response::Range { kvs, .. }) = op.ok() {
            for kv in kvs {
                keys.insert(kv.key.clone());
            }
        }
    }
    keys.into_iter()
        .map(|key| {
            let leases = leases_of_key.get(&key).cloned().unwrap_or_default();
            let kh = key_history(&key, &leases, history);
            (key, kh)
        })
        .collect()
}

fn key_history(key: &str, leases: &HashSet<i64>, history: &History) -> KeyHistory {
    let mut values = Values::default();
    let mut entries = Vec::new();
    // Serializable reads and watch events are no part of the register's history, but the
    // revision they show a value at is a fact the CAS model needs (a client may compare
    // against a revision only a serializable read showed it).
    for op in &history.ops {
        match op.ok() {
            Some(Response::Get { kv: Some(kv), .. }) if kv.key == key => {
                values.observe(kv);
            }
            Some(Response::Range { kvs, .. }) => {
                kvs.iter().filter(|kv| kv.key == key).for_each(|kv| {
                    values.observe(kv);
                });
            }
            _ => {}
        }
    }
    for w in &history.watches {
        for rec in &w.records {
            if let WatchRecord::Events { events, .. } = rec {
                for e in events.iter().filter(|e| e.kv.key == key) {
                    if e.kind == EventKind::Put {
                        values.observe(&e.kv);
                    }
                    if let Some(p) = &e.prev {
                        values.observe(p);
                    }
                }
            }
        }
    }
    for op in &history.ops {
        let unknown = op.is_unknown();
        let complete = if unknown { u64::MAX } else { op.complete };
        let kop = match (&op.req, &op.outcome) {
            (_, Outcome::Failed(_)) => None,
            (
                Request::Get {
                    key: k,
                    serializable: false,
                },
                Outcome::Ok(Response::Get { kv, .. }),
            ) if k == key => Some(KOp::Read(values.observe_opt(kv))),
            (
                Request::Range {
                    prefix,
                    serializable: false,
                },
                Outcome::Ok(Response::Range { kvs, .. }),
            ) if covers(prefix, key) => {
                let kv = kvs.iter().find(|kv| kv.key == key);
                Some(KOp::Read(kv.map(|kv| values.observe(kv))))
            }
            (
                Request::Put {
                    key: k,
                    value,
                    lease,
                },
                out,
            ) if k == key => {
                let id = values.id(value);
                values.lease[id as usize] = *lease;
                let prev = match out {
                    Outcome::Ok(Response::Put { rev, prev }) => {
                        values.rev[id as usize].get_or_insert(*rev);
                        Some(values.observe_opt(prev))
                    }
                    _ => None,
                };
                Some(KOp::Put { value: id, prev })
            }
            (Request::Delete { key: k }, out) if k == key => {
                let prev = match out {
                    Outcome::Ok(Response::Delete { prev, deleted, .. }) => {
                        // Without prev_kv the count still tells absent from present.
                        let p = values.observe_opt(prev);
                        if *deleted == 0 {
                            Some(None)
                        } else if p.is_some() {
                            Some(p)
                        } else {
                            None
                        }
                    }
                    _ => None,
                };
                Some(KOp::Delete { prev })
            }
            (
                Request::Cas {
                    key: k,
                    expect_mod_rev,
                    value,
                },
                out,
            ) if k == key => {
                let id = values.id(value);
                let result = match out {
                    Outcome::Ok(Response::Cas {
                        rev,
                        succeeded,
                        current,
                    }) => {
                        if *succeeded {
                            values.rev[id as usize].get_or_insert(*rev);
                        }
                        Some((*succeeded, values.observe_opt(current)))
                    }
                    _ => None,
                };
                Some(KOp::Cas {
                    expect: *expect_mod_rev,
                    value: id,
                    result,
                })
            }
            (Request::LeaseRevoke { lease }, _) if leases.contains(lease) => {
                Some(KOp::Revoke { lease: *lease })
            }
            _ => None,
        };
        // Reads with unknown outcome tell nothing.
        let Some(kop) = kop else { continue };
        if unknown && matches!(kop, KOp::Read(_)) {
            continue;
        }
        entries.push(Entry {
            op_id: op.id,
            invoke: op.invoke,
            complete,
            kop,
        });
    }
    prune_unobserved(&mut entries, &values);
    if let Some(effects) = LogEffects::of(key, history) {
        effects.prune(&mut entries, &values);
    }
    entries.sort_by_key(|e| (e.invoke, e.op_id));
    KeyHistory {
        entries,
        value_rev: values.rev,
        value_lease: values.lease,
    }
}

/// Drops unknown-outcome puts and CAS txns (without a lease) whose value no completed op of
/// the key ever observed. Such a write either never happened, or its value was overwritten
/// by another unknown write before anything looked (a completed get, put or delete would
/// have returned it as value or prev_kv, a failed CAS as the current value, and a CAS can
/// only succeed against a revision some op observed, which counts here). Without a lease
/// no revoke can tell it apart either. So the history is linearizable with it exactly when it is without it, and
/// dropping it keeps the search from trying it at every point of the history.
fn prune_unobserved(entries: &mut Vec<Entry>, values: &Values) {
    let mut seen = vec![false; values.rev.len()];
    // A value whose revision some CAS compares against counts as observed.
    let compared: HashSet<i64> = entries
        .iter()
        .filter_map(|e| match e.kop {
            KOp::Cas { expect, .. } => Some(expect),
            _ => None,
        })
        .collect();
    for (v, rev) in values.rev.iter().enumerate() {
        if rev.is_some_and(|r| compared.contains(&r)) {
            seen[v] = true;
        }
    }
    for e in entries.iter() {
        let mut mark = |v: &Option<u32>| {
            if let Some(v) = v {
                seen[*v as usize] = true;
            }
        };
        match &e.kop {
            KOp::Read(v) => mark(v),
            KOp::Put { prev: Some(p), .. } | KOp::Delete { prev: Some(p) } => mark(p),
            KOp::Cas {
                result: Some((_, cur)),
                ..
            } => mark(cur),
            _ => {}
        }
    }
    entries.retain(|e| {
        let written = match &e.kop {
            KOp::Put { value, prev: None } => Some(*value),
            KOp::Cas {
                value,
                result: None,
                ..
            } => Some(*value),
            _ => None,
        };
        match written {
            Some(v) if e.complete == u64::MAX => seen[v as usize] || values.lease[v as usize] != 0,
            _ => true,
        }
    });
}

/// What the watchers' revision log says happened to one key, when the log is complete
/// (every revision from 2 to the run's final revision was seen by some watcher).
struct LogEffects {
    /// Values some put event wrote to the key.
    put_values: HashSet<String>,
    /// Leases whose revoke (or expiry) deleted the key: delete events whose prev_kv
    /// carried them.
    deleting_leases: HashSet<i64>,
    /// Some delete event of the key came without prev_kv: no revoke can be ruled out.
    delete_without_prev: bool,
}

impl LogEffects {
    fn of(key: &str, history: &History) -> Option<LogEffects> {
        if history.final_rev < 2 {
            return None;
        }
        let mut revs: HashSet<i64> = HashSet::new();
        let mut fx = LogEffects {
            put_values: HashSet::new(),
            deleting_leases: HashSet::new(),
            delete_without_prev: false,
        };
        for w in &history.watches {
            for rec in &w.records {
                let WatchRecord::Events { events, .. } = rec else {
                    continue;
                };
                for e in events {
                    revs.insert(e.kv.mod_rev);
                    if e.kv.key != key {
                        continue;
                    }
                    match (e.kind, &e.prev) {
                        (EventKind::Put, _) => {
                            fx.put_values.insert(e.kv.value.clone());
                        }
                        (EventKind::Delete, Some(p)) => {
                            fx.deleting_leases.insert(p.lease);
                        }
                        (EventKind::Delete, None) => fx.delete_without_prev = true,
                    }
                }
            }
        }
        (2..=history.final_rev)
            .all(|r| revs.contains(&r))
            .then_some(fx)
    }

    /// Drops the unknown-outcome ops the complete log shows had no effect on the key: puts
    /// and CAS txns whose value no event wrote, and revokes of leases no delete event of
    /// the key carried. An unknown op is optional to the search, so dropping one only takes
    /// an option away: this can never hide a violation, and it keeps timeouts from
    /// multiplying the search space.
    fn prune(&self, entries: &mut Vec<Entry>, values: &Values) {
        let name: HashMap<u32, &str> = values.ids.iter().map(|(k, v)| (*v, k.as_str())).collect();
        entries.retain(|e| match &e.kop {
            KOp::Put { value, prev: None }
            | KOp::Cas {
                value,
                result: None,
                ..
            } if e.complete == u64::MAX => name
                .get(value)
                .is_some_and(|v| self.put_values.contains(*v)),
            // Only unknown revokes: dropping a completed one would remove a step the
            // search must take, which could hide a revoke that failed to delete the key.
            KOp::Revoke { lease } if e.complete == u64::MAX => {
                self.delete_without_prev || self.deleting_leases.contains(lease)
            }
            _ => true,
        });
    }
}

impl KeyHistory {
    /// The key's mod revision in state `s` (0 when absent, as etcd compares it). None when
    /// the value was never observed with a revision: it cannot equal any compared revision,
    /// since a client only compares against revisions it has seen.
    fn mod_rev(&self, s: Option<u32>) -> Option<i64> {
        match s {
            None => Some(0),
            Some(v) => self.value_rev[v as usize],
        }
    }

    /// Applies entry `e` to state `s`; None when the entry's recorded result contradicts it.
    fn step(&self, s: Option<u32>, e: &Entry) -> Option<Option<u32>> {
        match &e.kop {
            KOp::Read(v) => (*v == s).then_some(s),
            KOp::Put { value, prev } => match prev {
                Some(p) if *p != s => None,
                _ => Some(Some(*value)),
            },
            KOp::Delete { prev } => match prev {
                Some(p) if *p != s => None,
                _ => Some(None),
            },
            KOp::Cas {
                expect,
                value,
                result,
            } => {
                let matches = self.mod_rev(s) == Some(*expect);
                match result {
                    None => Some(if matches { Some(*value) } else { s }),
                    Some((true, _)) => matches.then_some(Some(*value)),
                    Some((false, seen)) => (!matches && *seen == s).then_some(s),
                }
            }
            KOp::Revoke { lease } => match s {
                Some(v) if self.value_lease[v as usize] == *lease => Some(None),
                _ => Some(s),
            },
        }
    }
}

/// Ops that may be linearized next: not yet linearized, and invoked before every other
/// pending op completed. `unlin` holds the unlinearized indices in invoke order, so the
/// scan costs the few pending unknown ops plus the window of concurrent ops, and stops at
/// the first op invoked after the earliest pending completion.
fn candidates(entries: &[Entry], unlin: &BTreeSet<usize>) -> Vec<usize> {
    let mut out = Vec::new();
    let mut min_complete = u64::MAX;
    for &i in unlin {
        let e = &entries[i];
        if e.invoke > min_complete {
            break;
        }
        out.push(i);
        min_complete = min_complete.min(e.complete);
    }
    out
}

/// Random 128-bit keys, one per entry, whose XOR over the linearized set identifies that
/// set (Zobrist hashing): the memo then costs 16 bytes a state, however long the history.
/// Two different sets collide with probability about 2^-128 per pair; a collision could
/// only make the search skip a state (a false violation), never pass a bad history.
fn zobrist(n: usize) -> Vec<u128> {
    // splitmix64, fixed seed: deterministic across runs.
    let mut x: u64 = 0x5eed_c4a0_5c4e_11a1;
    let mut next = || {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    (0..n)
        .map(|_| (u128::from(next()) << 64) | u128::from(next()))
        .collect()
}

struct Frame {
    cands: Vec<usize>,
    next: usize,
    /// The op chosen at this level and the state before it, to undo on backtrack.
    chosen: Option<(usize, Option<u32>)>,
}

/// Depth-first search for a linearization of `kh.entries`, memoising (linearized set,
/// state) pairs already explored (Lowe's improvement of Wing and Gong's algorithm).
fn search(kh: &KeyHistory, budget: u64) -> Verdict {
    let entries = &kh.entries;
    let required = entries.iter().filter(|e| e.complete != u64::MAX).count();
    let zob = zobrist(entries.len());
    let mut unlin: BTreeSet<usize> = (0..entries.len()).collect();
    let mut lin_hash: u128 = 0;
    let mut state: Option<u32> = None;
    let mut done = 0usize;
    let mut visited: HashSet<(u128, Option<u32>)> = HashSet::new();
    let mut stack = vec![Frame {
        cands: candidates(entries, &unlin),
        next: 0,
        chosen: None,
    }];
    let mut spent = 0u64;
    loop {
        if done == required {
            return Verdict::Ok;
        }
        let top = stack
            .last_mut()
            .expect("stack holds the root until it is exhausted");
        if top.next >= top.cands.len() {
            stack.pop();
            let Some(parent) = stack.last_mut() else {
                return Verdict::Violation;
            };
            let (i, prev) = parent.chosen.take().expect("a child frame has a chosen op");
            unlin.insert(i);
            lin_hash ^= zob[i];
            state = prev;
            if entries[i].complete != u64::MAX {
                done -= 1;
            }
            continue;
        }
        let i = top.cands[top.next];
        top.next += 1;
        let Some(next_state) = kh.step(state, &entries[i]) else {
            continue;
        };
        if !visited.insert((lin_hash ^ zob[i], next_state)) {
            continue;
        }
        // The budget counts states entered (the memo's size); the attempts between two
        // states are bounded by the few candidates of a state.
        spent += 1;
        if spent > budget {
            return Verdict::Unknown;
        }
        unlin.remove(&i);
        lin_hash ^= zob[i];
        top.chosen = Some((i, state));
        state = next_state;
        if entries[i].complete != u64::MAX {
            done += 1;
        }
        stack.push(Frame {
            cands: candidates(entries, &unlin),
            next: 0,
            chosen: None,
        });
    }
}

/// The prefix of a sub-history as it stood at time `t`: ops invoked by then, those not
/// yet completed turned into unknown writes (or dropped, for reads).
fn prefix_at(kh: &KeyHistory, t: u64) -> Vec<Entry> {
    kh.entries
        .iter()
        .filter(|e| e.invoke <= t)
        .filter_map(|e| {
            if e.complete <= t {
                return Some(e.clone());
            }
            let kop = match &e.kop {
                KOp::Read(_) => return None,
                KOp::Put { value, .. } => KOp::Put {
                    value: *value,
                    prev: None,
                },
                KOp::Delete { .. } => KOp::Delete { prev: None },
                KOp::Cas { expect, value, .. } => KOp::Cas {
                    expect: *expect,
                    value: *value,
                    result: None,
                },
                KOp::Revoke { lease } => KOp::Revoke { lease: *lease },
            };
            Some(Entry {
                complete: u64::MAX,
                kop,
                ..e.clone()
            })
        })
        .collect()
}

fn with_entries(kh: &KeyHistory, entries: Vec<Entry>) -> KeyHistory {
    KeyHistory {
        entries,
        value_rev: kh.value_rev.clone(),
        value_lease: kh.value_lease.clone(),
    }
}

/// The value an entry writes, if any.
fn written(e: &Entry) -> Option<u32> {
    match &e.kop {
        KOp::Put { value, .. } | KOp::Cas { value, .. } => Some(*value),
        _ => None,
    }
}

/// The state a read (or a failed CAS) observed.
fn reads(e: &Entry) -> Option<Option<u32>> {
    match &e.kop {
        KOp::Read(v) => Some(*v),
        KOp::Cas {
            result: Some((false, cur)),
            ..
        } => Some(*cur),
        _ => None,
    }
}

/// Shrinks a failing sub-history: first the shortest failing prefix in time (a prefix of a
/// linearizable history is linearizable, so failure is monotone in time and a binary search
/// works), then greedy removal of single ops while the rest still fails. Bounded in tries.
fn shrink(kh: &KeyHistory, budget: u64) -> Vec<u64> {
    let mut times: Vec<u64> = kh
        .entries
        .iter()
        .flat_map(|e| [e.invoke, e.complete])
        .filter(|t| *t != u64::MAX)
        .collect();
    times.sort_unstable();
    times.dedup();
    let fails =
        |entries: Vec<Entry>| search(&with_entries(kh, entries), budget) == Verdict::Violation;
    let (mut lo, mut hi) = (0usize, times.len().saturating_sub(1));
    if times.is_empty() || !fails(prefix_at(kh, times[hi])) {
        return kh.entries.iter().map(|e| e.op_id).collect();
    }
    while lo < hi {
        let mid = (lo + hi) / 2;
        if fails(prefix_at(kh, times[mid])) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    let mut current = prefix_at(kh, times[hi]);
    // Then remove chunks of ops, halving the chunk size down to single ops, keeping each
    // removal after which the rest still fails.
    let mut tries = 0;
    let mut chunk = current.len().div_ceil(2).max(1);
    loop {
        let mut start = 0;
        while start < current.len() && tries < MAX_SHRINK_TRIES {
            let end = (start + chunk).min(current.len());
            if let Some(candidate) = without(kh, &current, start..end) {
                tries += 1;
                if fails(candidate.clone()) {
                    current = candidate;
                    continue;
                }
            }
            start = end;
        }
        if chunk == 1 || tries >= MAX_SHRINK_TRIES {
            break;
        }
        chunk = chunk.div_ceil(2);
    }
    current.iter().map(|e| e.op_id).collect()
}

/// Searches a shrinking run may spend per failing key.
const MAX_SHRINK_TRIES: usize = 2000;

/// `entries` without those in `range`, or None when that would remove the write of a
/// value a remaining read observes (or whose revision a successful CAS compared against): the rest would then fail trivially (a value from
/// nowhere), which explains nothing. A remaining put's or delete's prev_kv naming a removed
/// value is forgotten instead.
fn without(
    kh: &KeyHistory,
    entries: &[Entry],
    range: std::ops::Range<usize>,
) -> Option<Vec<Entry>> {
    let removed: Vec<u32> = entries[range.clone()].iter().filter_map(written).collect();
    let removed_revs: Vec<i64> = removed
        .iter()
        .filter_map(|v| kh.value_rev[*v as usize])
        .collect();
    let mut rest: Vec<Entry> = entries[..range.start]
        .iter()
        .chain(&entries[range.end..])
        .cloned()
        .collect();
    let depends = |e: &Entry| match &e.kop {
        // A successful CAS compared against the revision of a write.
        KOp::Cas {
            expect,
            result: Some((true, _)),
            ..
        } => removed_revs.contains(expect),
        _ => matches!(reads(e), Some(Some(v)) if removed.contains(&v)),
    };
    // Likewise keep a delete or revoke while a later op saw the key absent.
    let first_removal = entries[range.clone()]
        .iter()
        .filter(|e| matches!(e.kop, KOp::Delete { .. } | KOp::Revoke { .. }))
        .map(|e| e.invoke)
        .min();
    let sees_absent = |e: &Entry| {
        first_removal.is_some_and(|t| e.invoke >= t) && matches!(reads(e), Some(None))
            || matches!(&e.kop, KOp::Put { prev: Some(None), .. } | KOp::Delete { prev: Some(None) } if first_removal.is_some_and(|t| e.invoke >= t))
    };
    if rest.iter().any(|e| depends(e) || sees_absent(e)) {
        return None;
    }
    for e in &mut rest {
        if let KOp::Put { prev, .. } | KOp::Delete { prev } = &mut e.kop {
            if matches!(prev, Some(Some(v)) if removed.contains(v)) {
                *prev = None;
            }
        }
    }
    Some(rest)
}

/// Checks every key's sub-history. `budget` bounds the states explored per key.
pub fn check(history: &History, budget: u64) -> Vec<KeyResult> {
    split_by_key(history)
        .into_iter()
        .map(|(key, kh)| {
            let verdict = search(&kh, budget);
            let minimal = if verdict == Verdict::Violation {
                shrink(&kh, budget)
            } else {
                Vec::new()
            };
            KeyResult {
                key,
                verdict,
                ops: kh.entries.len(),
                minimal,
            }
        })
        .collect()
}
