//! Seeded randomized simulation of 3- and 5-node clusters.
//!
//! Each seed drives a cluster through random proposals, membership changes, ReadIndex
//! requests, message drops, duplicates, reordering and delay, partitions, crashes and
//! restarts from durable state only (unstable entries are lost), and log compaction
//! with snapshots. After every step the checker verifies:
//! - election safety: at most one leader per term;
//! - log matching: two persisted logs with an entry of the same index and term agree
//!   on every entry up to it (checked with a hash chain per log);
//! - leader completeness: every leader holds every entry known committed;
//! - state machine safety: every node applies the same entry at each index, in order
//!   (so applied sequences are prefixes of one another);
//! - commit indexes never decrease, not even across restarts;
//! - linearizable reads: every ReadIndex answer is >= the index of every write
//!   acknowledged (applied anywhere) before the read was requested.
//!
//! Then the network heals, every crashed member restarts, and a leader must be elected
//! and a new proposal committed within a bounded number of ticks.
//!
//! `SKIFF_SIM_SEEDS=N` runs N seeds (default 1000); `SKIFF_SIM_SEED=S` replays one.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};

use common::*;
use skiff_raft::*;

/// The simulator's own PRNG (xorshift64*), seeded per run.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

fn chain(prev: u64, e: &Entry) -> u64 {
    let mut h = DefaultHasher::new();
    prev.hash(&mut h);
    e.term.hash(&mut h);
    e.index.hash(&mut h);
    (e.entry_type == EntryType::ConfChange).hash(&mut h);
    e.data.hash(&mut h);
    h.finish()
}

/// The checker's record of what has been observed, across all nodes.
#[derive(Default)]
struct Checker {
    leaders: HashMap<u64, u64>,
    /// index -> (term, chain hash) of entries known committed (applied somewhere).
    committed: BTreeMap<u64, (u64, u64)>,
    /// (index, term) -> chain hash of persisted entries on any node.
    chains: HashMap<(u64, u64), u64>,
    /// Per node: index -> chain hash of its persisted log.
    node_chains: HashMap<u64, BTreeMap<u64, u64>>,
    /// Per node: applied index (to check applies are consecutive).
    applied: HashMap<u64, u64>,
    /// Per node: highest commit persisted.
    commits: HashMap<u64, u64>,
    /// Highest index of a write acknowledged to a client.
    max_acked: u64,
    /// Read ctx -> max_acked when it was requested.
    reads: HashMap<Vec<u8>, u64>,
    reads_answered: usize,
    /// Applied conf change index -> the membership it produced (or its refusal).
    confs: HashMap<u64, Result<ConfState, String>>,
}

type Check = Result<(), String>;

impl Checker {
    fn on_persist(&mut self, id: u64, rd: &Ready) -> Check {
        let chains = self.node_chains.entry(id).or_default();
        if let Some(s) = &rd.snapshot {
            let i = s.metadata.index;
            let Some((t, h)) = self.committed.get(&i).copied() else {
                return Err(format!(
                    "node {id}: snapshot at {i} of an index nobody applied"
                ));
            };
            if t != s.metadata.term {
                return Err(format!(
                    "node {id}: snapshot at {i} has term {} but committed term is {t}",
                    s.metadata.term
                ));
            }
            chains.clear();
            chains.insert(i, h);
        }
        if let Some(first) = rd.entries.first() {
            let _ = chains.split_off(&first.index);
            for e in &rd.entries {
                let prev = if e.index == 1 {
                    0
                } else {
                    match chains.get(&(e.index - 1)) {
                        Some(h) => *h,
                        // The node's log starts after a compaction we did not see
                        // persisted here (bootstrap snapshot): start a fresh chain.
                        None => self.committed.get(&(e.index - 1)).map_or(0, |c| c.1),
                    }
                };
                let h = chain(prev, e);
                chains.insert(e.index, h);
                match self.chains.get(&(e.index, e.term)) {
                    Some(other) if *other != h => {
                        return Err(format!(
                            "log matching violated: node {id} entry {}/{} differs in content or prefix from another log's",
                            e.term, e.index
                        ))
                    }
                    Some(_) => {}
                    None => {
                        self.chains.insert((e.index, e.term), h);
                    }
                }
            }
        }
        if let Some(hs) = rd.hard_state {
            let c = self.commits.entry(id).or_default();
            if hs.commit < *c {
                return Err(format!(
                    "node {id}: commit went back from {c} to {}",
                    hs.commit
                ));
            }
            *c = hs.commit;
        }
        Ok(())
    }

    fn on_apply(&mut self, id: u64, applied_before: u64, rd: &Ready) -> Check {
        // A snapshot in the same Ready moved the state machine forward first.
        let applied_before = match &rd.snapshot {
            Some(s) => applied_before.max(s.metadata.index),
            None => applied_before,
        };
        let chains = self.node_chains.entry(id).or_default();
        for e in &rd.committed_entries {
            if e.index <= applied_before {
                continue;
            }
            let last = self.applied.entry(id).or_insert(applied_before);
            if *last < applied_before {
                *last = applied_before;
            }
            if e.index != *last + 1 {
                return Err(format!("node {id}: applied {} after {}", e.index, last));
            }
            *last = e.index;
            let h = chains.get(&e.index).copied().unwrap_or_else(|| {
                let prev = chains.get(&(e.index - 1)).copied().unwrap_or(0);
                chain(prev, e)
            });
            match self.committed.get(&e.index) {
                Some((t, ch)) if *t != e.term || *ch != h => {
                    return Err(format!(
                        "state machine safety violated: node {id} applied {}/{} but {t}/{} was applied elsewhere",
                        e.term, e.index, e.index
                    ))
                }
                Some(_) => {}
                None => {
                    self.committed.insert(e.index, (e.term, h));
                }
            }
            if e.entry_type == EntryType::Normal && !e.data.is_empty() {
                self.max_acked = self.max_acked.max(e.index);
            }
        }
        for rs in &rd.read_states {
            if let Some(min) = self.reads.get(rs.request_ctx.as_ref()) {
                if rs.index < *min {
                    return Err(format!(
                        "stale read: ReadIndex {:?} answered {} but a write at {min} was acknowledged before it was requested",
                        String::from_utf8_lossy(&rs.request_ctx), rs.index
                    ));
                }
                self.reads_answered += 1;
            }
        }
        Ok(())
    }

    fn check_leaders(&mut self, c: &Cluster) -> Check {
        for (id, n) in &c.nodes {
            if c.down.contains(id) {
                continue;
            }
            let r = &n.raw.raft;
            if r.state != StateRole::Leader {
                continue;
            }
            if let Some(other) = self.leaders.insert(r.term, *id) {
                if other != *id {
                    return Err(format!("two leaders in term {}: {other} and {id}", r.term));
                }
            }
            // Leader completeness for entries committed in earlier terms.
            let log = &r.raft_log;
            let first = log.first_index();
            for (i, (t, _)) in self.committed.range(first..) {
                if *t >= r.term {
                    continue;
                }
                match log.term(*i) {
                    Ok(lt) if lt == *t => {}
                    other => {
                        return Err(format!(
                            "leader completeness violated: leader {id} (term {}) has {other:?} at {i}, committed entry has term {t}",
                            r.term
                        ))
                    }
                }
            }
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug)]
struct SimOpts {
    steps: usize,
    #[allow(dead_code)]
    planted: Option<PlantedBug>,
}

struct Sim {
    rng: Rng,
    c: Cluster,
    chk: Checker,
    next_id: u64,
    removed: BTreeSet<u64>,
    crashed: BTreeSet<u64>,
    value: u64,
    planted: Option<PlantedBug>,
    initial_voters: Vec<u64>,
}

impl Sim {
    fn new(seed: u64, opts: SimOpts) -> Sim {
        let mut rng = Rng::new(seed);
        let n = if seed.is_multiple_of(2) { 3 } else { 5 };
        let nopts = NodeOpts {
            election: 10,
            heartbeat: 1 + rng.below(2) as usize,
            pre_vote: rng.chance(50),
            check_quorum: rng.chance(50),
            read_only: ReadOnlyOption::Safe,
            max_uncommitted: if rng.chance(20) { 64 } else { 0 },
            max_inflight: 1 + rng.below(8) as usize,
            max_size_per_msg: if rng.chance(50) { 64 } else { u64::MAX },
            seed,
        };
        let mut c = Cluster::new(nopts);
        let voters: Vec<u64> = (1..=n).collect();
        for id in 1..=n {
            c.add_node(
                id,
                ConfState {
                    voters: voters.clone(),
                    ..Default::default()
                },
                0,
            );
        }
        let mut sim = Sim {
            rng,
            c,
            chk: Checker::default(),
            next_id: n + 1,
            removed: BTreeSet::new(),
            crashed: BTreeSet::new(),
            value: 0,
            planted: opts.planted,
            initial_voters: voters,
        };
        sim.plant_all();
        sim
    }

    fn with_opts(n: u64, nopts: NodeOpts, planted: Option<PlantedBug>) -> Sim {
        let mut c = Cluster::new(nopts);
        let voters: Vec<u64> = (1..=n).collect();
        for id in 1..=n {
            let cs = ConfState {
                voters: voters.clone(),
                ..Default::default()
            };
            c.add_node(id, cs, 0);
        }
        let mut sim = Sim {
            rng: Rng::new(0),
            c,
            chk: Checker::default(),
            next_id: n + 1,
            removed: BTreeSet::new(),
            crashed: BTreeSet::new(),
            value: 0,
            planted,
            initial_voters: voters,
        };
        sim.plant_all();
        sim
    }

    /// Like `settle`, restricted to `ids`, delivering only messages that `keep`
    /// accepts (others are dropped).
    fn settle_only(&mut self, ids: &[u64], keep: impl Fn(&Cluster, &Message) -> bool) -> Check {
        for _ in 0..100 {
            let mut busy = false;
            for &id in ids {
                if !self.c.down.contains(&id) && self.c.nodes[&id].raw.has_ready() {
                    self.process(id)?;
                    busy = true;
                }
            }
            for m in std::mem::take(&mut self.c.queue) {
                if ids.contains(&m.to) && ids.contains(&m.from) && keep(&self.c, &m) {
                    let _ = self.c.deliver(m);
                    busy = true;
                }
            }
            self.chk.check_leaders(&self.c)?;
            if !busy {
                break;
            }
        }
        Ok(())
    }

    /// Loads a node's log (see `Node::load_log`) and shows it to the checker as if
    /// it had been persisted through a Ready.
    fn load(&mut self, id: u64, terms: &[u64], hs: HardState) -> Check {
        self.c.node(id).load_log(terms, hs);
        let entries = self.c.nodes[&id].raw.raft.raft_log.all_entries();
        let rd = Ready {
            entries,
            ..Default::default()
        };
        self.chk.on_persist(id, &rd)
    }

    fn plant_all(&mut self) {
        if let Some(b) = self.planted {
            for n in self.c.nodes.values_mut() {
                n.raw.raft.planted_bug = b;
            }
        }
    }

    fn live(&self) -> Vec<u64> {
        self.c
            .nodes
            .keys()
            .copied()
            .filter(|id| !self.c.down.contains(id))
            .collect()
    }

    fn leader(&self) -> Option<u64> {
        self.c
            .nodes
            .iter()
            .filter(|(id, _)| !self.c.down.contains(id))
            .filter(|(_, n)| n.raw.raft.state == StateRole::Leader)
            .max_by_key(|(_, n)| n.raw.raft.term)
            .map(|(id, _)| *id)
    }

    fn process(&mut self, id: u64) -> Check {
        if self.c.down.contains(&id) {
            return Ok(());
        }
        let applied_before = self.c.node(id).sm.applied_index;
        let Some(out) = self.c.process_ready(id) else {
            return Ok(());
        };
        // Snapshots sent to a node that is down fail in the transport.
        let lost: Vec<u64> = out
            .ready
            .messages
            .iter()
            .filter(|m| m.msg_type == MessageType::Snapshot && self.c.down.contains(&m.to))
            .map(|m| m.to)
            .collect();
        for to in lost {
            self.report_snapshot(id, to, SnapshotStatus::Failure);
        }
        self.chk.on_persist(id, &out.ready)?;
        self.chk.on_apply(id, applied_before, &out.ready)?;
        // The application stops members that a committed change removed (as etcd
        // does); a removed node that kept campaigning would only disrupt.
        for (index, _, res) in &out.applied_conf {
            match self.chk.confs.get(index) {
                Some(other) if other != res => {
                    return Err(format!(
                    "membership diverged at {index}: node {id} got {res:?}, another node {other:?}"
                ))
                }
                Some(_) => {}
                None => {
                    self.chk.confs.insert(*index, res.clone());
                }
            }
            if let Ok(cs) = res {
                let members: BTreeSet<u64> = cs
                    .voters
                    .iter()
                    .chain(&cs.learners)
                    .chain(&cs.voters_outgoing)
                    .copied()
                    .collect();
                for nid in self.c.nodes.keys().copied().collect::<Vec<_>>() {
                    if !members.contains(&nid) && self.was_member(nid) {
                        self.removed.insert(nid);
                        self.c.down.insert(nid);
                    }
                }
            }
        }
        Ok(())
    }

    /// A node that has ever been in a configuration (so its absence means removal).
    fn was_member(&self, id: u64) -> bool {
        id < self.next_id
            && self
                .c
                .nodes
                .get(&id)
                .is_some_and(|n| n.raw.raft.prs.progress.contains_key(&id) || n.raw.raft.term > 0)
    }

    fn deliver_one(&mut self) -> Check {
        if self.c.queue.is_empty() {
            return Ok(());
        }
        let i = if self.rng.chance(70) {
            0
        } else {
            self.rng.below(self.c.queue.len() as u64) as usize
        };
        let m = self.c.queue.remove(i);
        let is_snap = m.msg_type == MessageType::Snapshot;
        let (from, to) = (m.from, m.to);
        if self.rng.chance(5) {
            // Dropped; a snapshot's sender learns of it from its transport.
            if is_snap {
                self.report_snapshot(from, to, SnapshotStatus::Failure);
            }
            return Ok(());
        }
        if self.rng.chance(3) {
            let at = self.rng.below(self.c.queue.len() as u64 + 1) as usize;
            self.c.queue.insert(at, m.clone()); // duplicated
        }
        self.deliver_reporting(m);
        Ok(())
    }

    /// Delivers `m`; a snapshot's sender learns the outcome, as from its transport.
    fn deliver_reporting(&mut self, m: Message) {
        let (is_snap, from, to) = (m.msg_type == MessageType::Snapshot, m.from, m.to);
        let delivered = self.c.deliver(m).unwrap_or(false);
        if is_snap {
            let st = if delivered {
                SnapshotStatus::Finish
            } else {
                SnapshotStatus::Failure
            };
            self.report_snapshot(from, to, st);
        }
    }

    fn report_snapshot(&mut self, from: u64, to: u64, st: SnapshotStatus) {
        if !self.c.down.contains(&from) {
            self.c.node(from).raw.report_snapshot(to, st);
        }
    }

    fn propose(&mut self) {
        let live = self.live();
        if live.is_empty() {
            return;
        }
        let id = match self.leader() {
            Some(l) if self.rng.chance(80) => l,
            _ => self.rng.pick(&live),
        };
        self.value += 1;
        let data = format!("v{}", self.value);
        let _ = self.c.node(id).raw.propose(data.into_bytes());
    }

    fn read(&mut self) {
        let live = self.live();
        if live.is_empty() {
            return;
        }
        let id = self.rng.pick(&live);
        self.value += 1;
        let ctx = format!("r{}", self.value).into_bytes();
        self.chk.reads.insert(ctx.clone(), self.chk.max_acked);
        let _ = self.c.node(id).raw.read_index(ctx);
    }

    fn conf_change(&mut self) {
        let Some(l) = self.leader() else { return };
        let cs = self.c.node(l).raw.raft.prs.conf_state();
        if !cs.voters_outgoing.is_empty() {
            return;
        }
        let members = cs.voters.len() + cs.learners.len();
        let mut changes = Vec::new();
        let single = |t, id| ConfChangeSingle {
            change_type: t,
            node_id: id,
        };
        match self.rng.below(5) {
            0 if members < 7 => {
                let id = self.next_id;
                self.next_id += 1;
                // A new member starts from the cluster's initial membership, as a
                // joining etcd member learns the member list, and replays the log.
                let voters = self.initial_voters.clone();
                self.c.add_node(
                    id,
                    ConfState {
                        voters,
                        ..Default::default()
                    },
                    0,
                );
                if let Some(b) = self.planted {
                    self.c.node(id).raw.raft.planted_bug = b;
                }
                changes.push(single(ConfChangeType::AddLearnerNode, id));
            }
            1 if !cs.learners.is_empty() => {
                changes.push(single(ConfChangeType::AddNode, self.rng.pick(&cs.learners)));
            }
            2 if cs.voters.len() > 3 => {
                changes.push(single(
                    ConfChangeType::RemoveNode,
                    self.rng.pick(&cs.voters),
                ));
            }
            3 if !cs.learners.is_empty() && cs.voters.len() >= 3 => {
                // Replace a voter by a learner through a joint configuration.
                changes.push(single(ConfChangeType::AddNode, self.rng.pick(&cs.learners)));
                changes.push(single(
                    ConfChangeType::RemoveNode,
                    self.rng.pick(&cs.voters),
                ));
            }
            4 if cs.voters.len() > 3 => {
                changes.push(single(
                    ConfChangeType::AddLearnerNode,
                    self.rng.pick(&cs.voters),
                ));
            }
            _ => return,
        }
        let transition = if changes.len() > 1 || self.rng.chance(20) {
            ConfChangeTransition::Implicit
        } else {
            ConfChangeTransition::Auto
        };
        let cc = ConfChangeV2 {
            transition,
            changes,
            context: Default::default(),
        };
        let _ = self.c.node(l).raw.propose_conf_change(&cc);
    }

    fn crash_or_restart(&mut self) {
        if !self.crashed.is_empty() && self.rng.chance(60) {
            let id = self
                .rng
                .pick(&self.crashed.iter().copied().collect::<Vec<_>>());
            self.restart(id);
            return;
        }
        let live = self.live();
        if live.len() <= 1 {
            return;
        }
        let id = self.rng.pick(&live);
        self.c.down.insert(id);
        self.crashed.insert(id);
        let lost: Vec<Message> = self
            .c
            .queue
            .iter()
            .filter(|m| m.to == id)
            .cloned()
            .collect();
        self.c.queue.retain(|m| m.to != id);
        for m in lost {
            if m.msg_type == MessageType::Snapshot {
                self.report_snapshot(m.from, id, SnapshotStatus::Failure);
            }
        }
    }

    fn restart(&mut self, id: u64) {
        self.crashed.remove(&id);
        if self.removed.contains(&id) {
            return;
        }
        self.c.down.remove(&id);
        self.c.node(id).restart();
        if let Some(b) = self.planted {
            self.c.node(id).raw.raft.planted_bug = b;
        }
    }

    fn partition(&mut self) {
        if !self.c.partitions.is_empty() || self.rng.chance(30) {
            self.c.partitions.clear();
            return;
        }
        let ids: Vec<u64> = self.c.nodes.keys().copied().collect();
        let (mut a, mut b) = (BTreeSet::new(), BTreeSet::new());
        for id in ids {
            if self.rng.chance(50) {
                a.insert(id);
            } else {
                b.insert(id);
            }
        }
        self.c.partitions = vec![a, b];
    }

    fn compact(&mut self) {
        let live = self.live();
        if live.is_empty() {
            return;
        }
        let id = self.rng.pick(&live);
        let applied = self.c.node(id).sm.applied_index;
        if applied > 1 {
            let _ = self
                .c
                .node(id)
                .compact(applied - self.rng.below(applied.min(5)));
        }
    }

    fn step(&mut self) -> Check {
        match self.rng.below(100) {
            0..=34 => self.deliver_one()?,
            35..=59 => {
                let live = self.live();
                if !live.is_empty() {
                    let id = self.rng.pick(&live);
                    self.process(id)?;
                }
            }
            60..=74 => {
                let live = self.live();
                if !live.is_empty() {
                    let id = self.rng.pick(&live);
                    self.c.node(id).raw.tick();
                }
            }
            75..=84 => self.propose(),
            85..=89 => self.read(),
            90..=91 => self.conf_change(),
            92..=93 => self.crash_or_restart(),
            94..=95 => self.partition(),
            96..=97 => self.compact(),
            _ => {
                // A burst of ticks on every live node (time passes for everyone).
                for id in self.live() {
                    self.c.node(id).raw.tick();
                }
            }
        }
        self.chk.check_leaders(&self.c)
    }

    fn describe(&self) -> String {
        let mut s = String::new();
        for (id, n) in &self.c.nodes {
            let r = &n.raw.raft;
            s += &format!(
                "  {id}: {} term={} lead={} commit={} applied={} last={} down={} removed={} {}\n",
                fmt_role(r.state),
                r.term,
                r.leader_id,
                r.raft_log.committed,
                r.raft_log.applied,
                r.raft_log.last_index(),
                self.c.down.contains(id),
                self.removed.contains(id),
                fmt_conf_state(&r.prs.conf_state())
            );
            if r.state == StateRole::Leader {
                for (pid, p) in &r.prs.progress {
                    s += &format!(
                        "     {pid}: {:?} match={} next={} active={} paused={}\n",
                        p.state,
                        p.matched,
                        p.next_idx,
                        p.recent_active,
                        p.is_paused()
                    );
                }
            }
        }
        s
    }

    /// Processes all Readys and delivers all messages until quiet (bounded).
    fn settle(&mut self) -> Check {
        for _ in 0..200 {
            let mut busy = false;
            for id in self.live() {
                if self.c.nodes[&id].raw.has_ready() {
                    self.process(id)?;
                    busy = true;
                }
            }
            while !self.c.queue.is_empty() {
                let m = self.c.queue.remove(0);
                self.deliver_reporting(m);
                busy = true;
            }
            self.chk.check_leaders(&self.c)?;
            if !busy {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Heal everything; a leader must emerge and commit a new proposal in bounded time.
    fn check_liveness(&mut self) -> Check {
        self.c.partitions.clear();
        for id in self.crashed.clone() {
            self.restart(id);
        }
        let budget = 60 * self.c.opts.election;
        let mut proposed: Option<(u64, String)> = None;
        for tick in 0..budget {
            for id in self.live() {
                self.c.node(id).raw.tick();
            }
            self.settle()?;
            if let Some(l) = self.leader() {
                let need_new = match &proposed {
                    None => true,
                    // Re-propose if the leader changed and the old one was lost.
                    Some((pl, _)) => *pl != l && tick % self.c.opts.election == 0,
                };
                if need_new {
                    self.value += 1;
                    let v = format!("final{}", self.value);
                    if self.c.node(l).raw.propose(v.clone().into_bytes()).is_ok() {
                        proposed = Some((l, v));
                    }
                    self.settle()?;
                }
            }
            if let Some((_, v)) = &proposed {
                if let Some(l) = self.leader() {
                    let applied = self.c.nodes[&l]
                        .sm
                        .entries
                        .iter()
                        .any(|(_, d)| d.as_ref() == v.as_bytes());
                    if applied {
                        return Ok(());
                    }
                }
            }
        }
        Err(format!(
            "liveness: no proposal committed within {budget} ticks after healing (leader: {:?})\n{}",
            self.leader(),
            self.describe()
        ))
    }
}

fn run_seed(seed: u64, opts: SimOpts) -> Result<(usize, usize), String> {
    let mut sim = Sim::new(seed, opts);
    for step in 0..opts.steps {
        sim.step().map_err(|e| format!("step {step}: {e}"))?;
    }
    sim.check_liveness()?;
    Ok((sim.chk.committed.len(), sim.chk.reads_answered))
}

/// Runs a seed, turning a panic inside Raft (one of its own assertions) into an error.
fn run_seed_caught(seed: u64, opts: SimOpts) -> Result<(usize, usize), String> {
    match std::panic::catch_unwind(|| run_seed(seed, opts)) {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into());
            Err(format!("raft panicked: {msg}"))
        }
    }
}

fn seeds() -> Vec<u64> {
    if let Ok(s) = std::env::var("SKIFF_SIM_SEED") {
        return vec![s.parse().expect("SKIFF_SIM_SEED is a number")];
    }
    let n: u64 = std::env::var("SKIFF_SIM_SEEDS")
        .ok()
        .map(|s| s.parse().expect("SKIFF_SIM_SEEDS is a number"))
        .unwrap_or(1000);
    (0..n).collect()
}

#[test]
fn random_clusters_stay_safe_and_live() {
    let opts = SimOpts {
        steps: 2000,
        planted: None,
    };
    let (mut entries, mut reads) = (0, 0);
    let seeds = seeds();
    for &seed in &seeds {
        match run_seed_caught(seed, opts) {
            Ok((e, r)) => {
                entries += e;
                reads += r;
            }
            Err(e) => panic!(
                "seed {seed} failed: {e}\nreplay: SKIFF_SIM_SEED={seed} cargo test -p skiff-raft --test simulation random_clusters -- --nocapture"
            ),
        }
    }
    println!(
        "{} seeds passed: {entries} entries committed, {reads} linearizable reads checked",
        seeds.len()
    );
    assert!(
        entries > seeds.len() * 10,
        "the workload committed too little to mean anything"
    );
    assert!(reads > 0, "no ReadIndex was ever answered");
}

/// The checks can fail: with a known bug planted, some seed must be caught.
fn find_violation(bug: PlantedBug, max_seeds: u64) -> Option<(u64, String)> {
    let opts = SimOpts {
        steps: 2000,
        planted: Some(bug),
    };
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let found =
        (0..max_seeds).find_map(|seed| run_seed_caught(seed, opts).err().map(|e| (seed, e)));
    std::panic::set_hook(hook);
    found
}

/// Figure 8 of the Raft paper, played step by step through the checker. Node 1
/// leads term 4 holding entry 2 from term 2; it gets entry 2 onto a majority (1, 2,
/// 3) but not its own term-4 entry, then crashes. Node 5, holding a conflicting entry
/// 2 from term 3, is then elected and overwrites entry 2 everywhere. Correct Raft never
/// committed entry 2 in term 4, so nothing was lost; with the planted bug node 1
/// commits and applies it by counting, and the checker must report that node 5 leads
/// without an entry that was applied (and would then apply a different one there).
fn figure8(planted: Option<PlantedBug>) -> Check {
    let nopts = NodeOpts {
        max_size_per_msg: 1,
        ..NodeOpts::default()
    };
    let mut sim = Sim::with_opts(5, nopts, planted);
    let hs = |term| HardState {
        term,
        ..Default::default()
    };
    sim.load(1, &[1, 2], hs(3))?;
    for id in [2, 3, 4] {
        sim.load(id, &[1], hs(3))?;
    }
    sim.load(5, &[1, 3], hs(3))?;
    sim.plant_all();
    // Node 1 wins term 4 with the votes of 2 and 3 (4 and 5 do not hear it). Nodes 2
    // and 3 reject its first probe (they lack entry 2), receive entry 2, and node 1
    // crashes before anyone gets its term-4 entry.
    sim.c.node(1).raw.campaign().unwrap();
    sim.settle_only(&[1, 2, 3], |c, m| {
        let has_2 = c.nodes[&m.to].raw.raft.raft_log.last_index() >= 2;
        !(m.msg_type == MessageType::Append && m.entries.iter().any(|e| e.term == 4) && has_2)
    })?;
    assert_eq!(sim.leader(), Some(1));
    if std::env::var_os("FIG8_DEBUG").is_some() {
        eprintln!("after term 4:\n{}{:?}", sim.describe(), sim.chk.committed);
    }
    sim.c.down.insert(1);
    sim.c.queue.clear();
    // Node 5 needs two elections: everyone already voted in term 4.
    for _ in 0..2 {
        if sim.leader() != Some(5) {
            sim.c.node(5).raw.campaign().unwrap();
            sim.settle_only(&[2, 3, 4, 5], |_, _| true)?;
        }
    }
    assert_eq!(sim.leader(), Some(5), "node 5 should win term 5");
    sim.c.node(5).raw.propose(b"after".to_vec()).unwrap();
    let r = sim.settle_only(&[2, 3, 4, 5], |_, _| true);
    if std::env::var_os("FIG8_DEBUG").is_some() {
        eprintln!("end:\n{}{:?}", sim.describe(), sim.chk.committed);
    }
    r
}

#[test]
fn figure8_is_safe_and_the_planted_bug_is_caught() {
    figure8(None).expect("correct Raft passes Figure 8");
    let err = figure8(Some(PlantedBug::CommitOldTermByCounting))
        .expect_err("committing old-term entries by counting went unnoticed");
    // Caught as soon as node 5 leads without the entry node 1 applied.
    assert!(err.contains("leader completeness violated"), "{err}");
    println!("CommitOldTermByCounting caught: {err}");
}

#[test]
fn planted_bug_vote_without_log_check_is_caught() {
    let (seed, err) = find_violation(PlantedBug::VoteWithoutLogCheck, 2000)
        .expect("voting without the log check went unnoticed");
    println!("VoteWithoutLogCheck caught at seed {seed}: {err}");
}
