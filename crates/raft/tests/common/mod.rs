//! A deterministic in-memory cluster for tests: nodes are `RawNode<MemStorage>`s whose
//! Ready loop follows the documented contract (persist, then send after-persist
//! messages, then apply), messages travel through one ordered queue, and faults
//! (drops, partitions, crashes that lose everything not persisted) are explicit.
//! Used by the scripted interaction tests and the randomized simulator.

#![allow(dead_code)]
#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use bytes::Bytes;
use skiff_raft::*;

/// The replicated state machine of a test node: the data of applied normal entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateMachine {
    pub applied_index: u64,
    /// (index, data) of every applied non-empty normal entry.
    pub entries: Vec<(u64, Bytes)>,
}

impl StateMachine {
    fn encode(&self) -> Bytes {
        let mut out = Vec::new();
        out.extend_from_slice(&self.applied_index.to_le_bytes());
        for (i, d) in &self.entries {
            out.extend_from_slice(&i.to_le_bytes());
            out.extend_from_slice(&(d.len() as u32).to_le_bytes());
            out.extend_from_slice(d);
        }
        Bytes::from(out)
    }

    fn decode(b: &[u8]) -> StateMachine {
        let mut sm = StateMachine {
            applied_index: u64::from_le_bytes(b[..8].try_into().unwrap()),
            entries: Vec::new(),
        };
        let mut p = 8;
        while p < b.len() {
            let i = u64::from_le_bytes(b[p..p + 8].try_into().unwrap());
            let n = u32::from_le_bytes(b[p + 8..p + 12].try_into().unwrap()) as usize;
            sm.entries
                .push((i, Bytes::copy_from_slice(&b[p + 12..p + 12 + n])));
            p += 12 + n;
        }
        sm
    }
}

pub struct Node {
    pub id: u64,
    pub raw: RawNode<MemStorage>,
    /// The durable state: everything persisted from Readys survives a restart.
    pub storage: MemStorage,
    pub sm: StateMachine,
    pub conf_state: ConfState,
    pub config: Config,
    /// Read states delivered to the application: (index, ctx).
    pub reads: Vec<ReadState>,
    /// Commit indexes seen, for monotonicity checks.
    pub last_commit: u64,
}

/// Cluster-wide settings for new nodes.
#[derive(Debug, Clone)]
pub struct NodeOpts {
    pub election: usize,
    pub heartbeat: usize,
    pub pre_vote: bool,
    pub check_quorum: bool,
    pub read_only: ReadOnlyOption,
    pub max_uncommitted: u64,
    pub max_inflight: usize,
    pub max_size_per_msg: u64,
    pub seed: u64,
}

impl Default for NodeOpts {
    fn default() -> Self {
        NodeOpts {
            election: 10,
            heartbeat: 1,
            pre_vote: false,
            check_quorum: false,
            read_only: ReadOnlyOption::Safe,
            max_uncommitted: 0,
            max_inflight: 256,
            max_size_per_msg: u64::MAX,
            seed: 0,
        }
    }
}

impl NodeOpts {
    pub fn config(&self, id: u64, applied: u64) -> Config {
        Config {
            id,
            election_tick: self.election,
            heartbeat_tick: self.heartbeat,
            applied,
            max_size_per_msg: self.max_size_per_msg,
            max_inflight_msgs: self.max_inflight,
            check_quorum: self.check_quorum,
            pre_vote: self.pre_vote,
            read_only_option: self.read_only,
            max_uncommitted_entries_size: self.max_uncommitted,
            seed: self.seed,
            ..Config::default()
        }
    }
}

/// What processing one Ready did, for traces and checks.
#[derive(Debug, Default)]
pub struct ReadyOutcome {
    pub ready: Ready,
    /// (index, change, resulting membership or refusal) of applied conf changes.
    pub applied_conf: Vec<(u64, ConfChangeV2, Result<ConfState, String>)>,
}

impl Node {
    /// A node whose storage starts with `conf_state` (and an initial snapshot at
    /// `index` when `index > 0`, as a cluster bootstrapped at that point).
    pub fn bootstrap(id: u64, conf_state: ConfState, index: u64, opts: &NodeOpts) -> Node {
        let storage = MemStorage::new();
        let mut sm = StateMachine::default();
        if index > 0 {
            sm.applied_index = index;
            let snap = Snapshot {
                data: sm.encode(),
                metadata: SnapshotMetadata {
                    conf_state: conf_state.clone(),
                    index,
                    term: 1,
                },
            };
            storage.wl().apply_snapshot(snap).unwrap();
        } else {
            storage.wl().set_conf_state(conf_state.clone());
        }
        let config = opts.config(id, sm.applied_index);
        let raw = RawNode::new(&config, storage.clone()).unwrap();
        Node {
            id,
            raw,
            storage,
            sm,
            conf_state,
            config,
            reads: Vec::new(),
            last_commit: 0,
        }
    }

    /// Crash and restart: everything not persisted (unstable entries, in-flight
    /// state) is lost; the node comes back from its storage and state machine. Raft
    /// restarts from the snapshot's membership, so the entries after the snapshot are
    /// handed out again: data entries the state machine already has are skipped, but
    /// configuration changes are re-applied to Raft (as etcd does).
    pub fn restart(&mut self) {
        let snap = self.storage.snapshot(0).unwrap();
        self.config.applied = snap.metadata.index;
        self.conf_state = snap.metadata.conf_state.clone();
        self.raw = RawNode::new(&self.config, self.storage.clone()).unwrap();
    }

    /// Replaces the durable log and hard state (entries with the given terms at
    /// indexes 1..), then restarts: sets up the divergent logs of the paper's figures.
    pub fn load_log(&mut self, terms: &[u64], hs: HardState) {
        let ents: Vec<Entry> = terms
            .iter()
            .enumerate()
            .map(|(i, t)| Entry {
                term: *t,
                index: i as u64 + 1,
                entry_type: EntryType::Normal,
                data: format!("t{t}").into(),
            })
            .collect();
        let mut hs = hs;
        hs.term = hs.term.max(terms.iter().copied().max().unwrap_or(0));
        let storage = MemStorage::new();
        storage.wl().set_conf_state(self.conf_state.clone());
        storage.wl().append(&ents).unwrap();
        storage.wl().set_hard_state(hs);
        self.storage = storage;
        self.sm = StateMachine::default();
        self.last_commit = hs.commit;
        self.restart();
    }

    /// Processes one Ready following the documented order. Returns the messages to
    /// send (immediate ones first, then the after-persist ones).
    pub fn handle_ready(&mut self) -> ReadyOutcome {
        let rd = self.raw.ready();
        let mut out = ReadyOutcome::default();
        // Persist.
        if let Some(snap) = &rd.snapshot {
            self.storage.wl().apply_snapshot(snap.clone()).unwrap();
            self.sm = StateMachine::decode(&snap.data);
            self.conf_state = snap.metadata.conf_state.clone();
        }
        self.storage.wl().append(&rd.entries).unwrap();
        if let Some(hs) = rd.hard_state {
            self.storage.wl().set_hard_state(hs);
            assert!(
                hs.commit >= self.last_commit,
                "node {}: commit went back from {} to {}",
                self.id,
                self.last_commit,
                hs.commit
            );
            self.last_commit = hs.commit;
        }
        // Apply.
        for e in &rd.committed_entries {
            let replay = e.index <= self.sm.applied_index;
            match e.entry_type {
                EntryType::Normal => {
                    if !e.data.is_empty() && !replay {
                        self.sm.entries.push((e.index, e.data.clone()));
                    }
                }
                EntryType::ConfChange => {
                    let cc = ConfChangeV2::decode(&e.data).unwrap();
                    let res = self.raw.apply_conf_change(&cc).map_err(|e| e.to_string());
                    if let Ok(cs) = &res {
                        self.conf_state = cs.clone();
                    }
                    if !replay {
                        out.applied_conf.push((e.index, cc, res));
                    }
                }
            }
            if !replay {
                self.sm.applied_index = e.index;
            }
        }
        self.reads.extend(rd.read_states.iter().cloned());
        self.raw.advance(rd.clone());
        out.ready = rd;
        out
    }

    /// Takes a snapshot at the applied index and compacts the log up to `index`.
    pub fn compact(&mut self, index: u64) -> Result<(), StorageError> {
        let applied = self.sm.applied_index;
        if self.raw.raft.raft_log.applied != applied {
            // Still replaying after a restart: `conf_state` is not yet the membership
            // as of `applied`, so a snapshot now would record the wrong one.
            return Err(StorageError::SnapshotTemporarilyUnavailable);
        }
        let snap_index = applied;
        if snap_index > self.storage.rl().hard_state().commit {
            return Err(StorageError::Unavailable);
        }
        let res = self.storage.wl().create_snapshot(
            snap_index,
            Some(self.conf_state.clone()),
            self.sm.encode(),
        );
        match res {
            Ok(_) | Err(StorageError::SnapshotOutOfDate) => {}
            Err(e) => return Err(e),
        }
        self.storage.wl().compact(index.min(snap_index))
    }
}

/// An ordered message queue between nodes, with drop rules.
pub struct Cluster {
    pub nodes: BTreeMap<u64, Node>,
    pub opts: NodeOpts,
    /// Messages sent and not yet delivered, in send order.
    pub queue: Vec<Message>,
    /// Node groups; messages between different groups are dropped. Empty = healed.
    pub partitions: Vec<BTreeSet<u64>>,
    /// Nodes that are down (crashed and not restarted): their messages are dropped.
    pub down: BTreeSet<u64>,
}

impl Cluster {
    pub fn new(opts: NodeOpts) -> Cluster {
        Cluster {
            nodes: BTreeMap::new(),
            opts,
            queue: Vec::new(),
            partitions: Vec::new(),
            down: BTreeSet::new(),
        }
    }

    pub fn add_node(&mut self, id: u64, conf_state: ConfState, index: u64) {
        let node = Node::bootstrap(id, conf_state, index, &self.opts);
        self.nodes.insert(id, node);
    }

    pub fn node(&mut self, id: u64) -> &mut Node {
        self.nodes
            .get_mut(&id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    pub fn connected(&self, a: u64, b: u64) -> bool {
        if self.down.contains(&a) || self.down.contains(&b) {
            return false;
        }
        if self.partitions.is_empty() {
            return true;
        }
        let group = |id| self.partitions.iter().position(|g| g.contains(&id));
        group(a) == group(b)
    }

    /// Runs one node's Ready (if any) and queues its messages.
    pub fn process_ready(&mut self, id: u64) -> Option<ReadyOutcome> {
        let node = self.nodes.get_mut(&id)?;
        if !node.raw.has_ready() {
            return None;
        }
        let out = node.handle_ready();
        // Messages sent to a node that is down are lost, even if it comes back.
        let down = &self.down;
        let sent = out
            .ready
            .messages
            .iter()
            .chain(&out.ready.persisted_messages);
        self.queue
            .extend(sent.filter(|m| !down.contains(&m.to)).cloned());
        Some(out)
    }

    /// Takes the queued messages addressed to `to`, in order.
    pub fn take_msgs_to(&mut self, to: u64) -> Vec<Message> {
        let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.queue)
            .into_iter()
            .partition(|m| m.to == to);
        self.queue = rest;
        mine
    }

    /// Delivers one message; returns the step error, if any. Messages crossing a
    /// partition or touching a down node are dropped (returns Ok(false)).
    pub fn deliver(&mut self, m: Message) -> Result<bool, RaftError> {
        if !self.connected(m.from, m.to) || !self.nodes.contains_key(&m.to) {
            return Ok(false);
        }
        self.node(m.to).raw.step(m)?;
        Ok(true)
    }
}

// ---- formatting, for traces ----------------------------------------------------

pub fn fmt_type(t: MessageType) -> &'static str {
    match t {
        MessageType::Hup => "MsgHup",
        MessageType::Beat => "MsgBeat",
        MessageType::Propose => "MsgProp",
        MessageType::Append => "MsgApp",
        MessageType::AppendResponse => "MsgAppResp",
        MessageType::RequestVote => "MsgVote",
        MessageType::RequestVoteResponse => "MsgVoteResp",
        MessageType::RequestPreVote => "MsgPreVote",
        MessageType::RequestPreVoteResponse => "MsgPreVoteResp",
        MessageType::Snapshot => "MsgSnap",
        MessageType::Heartbeat => "MsgHeartbeat",
        MessageType::HeartbeatResponse => "MsgHeartbeatResp",
        MessageType::SnapStatus => "MsgSnapStatus",
        MessageType::Unreachable => "MsgUnreachable",
        MessageType::TransferLeader => "MsgTransferLeader",
        MessageType::TimeoutNow => "MsgTimeoutNow",
        MessageType::ReadIndex => "MsgReadIndex",
        MessageType::ReadIndexResponse => "MsgReadIndexResp",
        MessageType::CheckQuorum => "MsgCheckQuorum",
    }
}

pub fn fmt_cc(cc: &ConfChangeV2) -> String {
    let mut s = String::new();
    for c in &cc.changes {
        if !s.is_empty() {
            s.push(' ');
        }
        let p = match c.change_type {
            ConfChangeType::AddNode => "v",
            ConfChangeType::AddLearnerNode => "l",
            ConfChangeType::RemoveNode => "r",
        };
        write!(s, "{p}{}", c.node_id).unwrap();
    }
    if cc.changes.is_empty() {
        s.push_str("leave-joint");
    }
    match cc.transition {
        ConfChangeTransition::Auto => {}
        ConfChangeTransition::Implicit => s.push_str(" (implicit)"),
        ConfChangeTransition::Explicit => s.push_str(" (explicit)"),
    }
    s
}

pub fn fmt_entry(e: &Entry) -> String {
    match e.entry_type {
        EntryType::Normal => format!(
            "{}/{} {:?}",
            e.term,
            e.index,
            String::from_utf8_lossy(&e.data)
        ),
        EntryType::ConfChange => match ConfChangeV2::decode(&e.data) {
            Ok(cc) => format!("{}/{} ConfChange {}", e.term, e.index, fmt_cc(&cc)),
            Err(_) => format!("{}/{} ConfChange <undecodable>", e.term, e.index),
        },
    }
}

pub fn fmt_entries(es: &[Entry]) -> String {
    es.iter().map(fmt_entry).collect::<Vec<_>>().join(", ")
}

pub fn fmt_ids(ids: &[u64]) -> String {
    ids.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn fmt_conf_state(cs: &ConfState) -> String {
    let mut s = format!("voters=({})", fmt_ids(&cs.voters));
    if !cs.voters_outgoing.is_empty() {
        write!(s, "&&({})", fmt_ids(&cs.voters_outgoing)).unwrap();
    }
    if !cs.learners.is_empty() {
        write!(s, " learners=({})", fmt_ids(&cs.learners)).unwrap();
    }
    if !cs.learners_next.is_empty() {
        write!(s, " learners_next=({})", fmt_ids(&cs.learners_next)).unwrap();
    }
    if cs.auto_leave {
        s.push_str(" autoleave");
    }
    s
}

pub fn fmt_msg(m: &Message) -> String {
    let mut s = format!(
        "{}->{} {} Term:{}",
        m.from,
        m.to,
        fmt_type(m.msg_type),
        m.term
    );
    match m.msg_type {
        MessageType::Append => {
            write!(s, " Log:{}/{} Commit:{}", m.log_term, m.index, m.commit).unwrap();
            if !m.entries.is_empty() {
                write!(s, " Entries:[{}]", fmt_entries(&m.entries)).unwrap();
            }
        }
        MessageType::AppendResponse => {
            write!(s, " Index:{}", m.index).unwrap();
            if m.reject {
                write!(
                    s,
                    " Rejected (Hint: {}, LogTerm: {})",
                    m.reject_hint, m.log_term
                )
                .unwrap();
            }
        }
        MessageType::RequestVote | MessageType::RequestPreVote => {
            write!(s, " Log:{}/{}", m.log_term, m.index).unwrap();
            if !m.context.is_empty() {
                s.push_str(" (transfer)");
            }
        }
        MessageType::RequestVoteResponse | MessageType::RequestPreVoteResponse if m.reject => {
            s.push_str(" Rejected");
        }
        MessageType::Heartbeat | MessageType::HeartbeatResponse => {
            if m.msg_type == MessageType::Heartbeat {
                write!(s, " Commit:{}", m.commit).unwrap();
            }
            if !m.context.is_empty() {
                write!(s, " Ctx:{:?}", String::from_utf8_lossy(&m.context)).unwrap();
            }
        }
        MessageType::Snapshot => {
            let meta = &m.snapshot.as_ref().unwrap().metadata;
            write!(
                s,
                " Snapshot: Index:{} Term:{} {}",
                meta.index,
                meta.term,
                fmt_conf_state(&meta.conf_state)
            )
            .unwrap();
        }
        MessageType::Propose => {
            write!(s, " Entries:[{}]", fmt_entries(&m.entries)).unwrap();
        }
        MessageType::ReadIndex | MessageType::ReadIndexResponse => {
            if m.msg_type == MessageType::ReadIndexResponse {
                write!(s, " Index:{}", m.index).unwrap();
            }
            if let Some(e) = m.entries.first() {
                write!(s, " Ctx:{:?}", String::from_utf8_lossy(&e.data)).unwrap();
            }
        }
        _ => {}
    }
    s
}

pub fn fmt_role(r: StateRole) -> &'static str {
    match r {
        StateRole::Follower => "StateFollower",
        StateRole::PreCandidate => "StatePreCandidate",
        StateRole::Candidate => "StateCandidate",
        StateRole::Leader => "StateLeader",
    }
}

/// A multi-line rendering of what a Ready held.
pub fn fmt_ready(id: u64, out: &ReadyOutcome) -> String {
    let rd = &out.ready;
    let mut s = format!("> {id} handling Ready\n");
    if let Some(ss) = rd.soft_state {
        writeln!(
            s,
            "  Lead:{} State:{}",
            ss.leader_id,
            fmt_role(ss.raft_state)
        )
        .unwrap();
    }
    if let Some(hs) = rd.hard_state {
        writeln!(
            s,
            "  HardState Term:{} Vote:{} Commit:{}",
            hs.term, hs.vote, hs.commit
        )
        .unwrap();
    }
    if !rd.entries.is_empty() {
        writeln!(s, "  Entries:").unwrap();
        for e in &rd.entries {
            writeln!(s, "  {}", fmt_entry(e)).unwrap();
        }
    }
    if let Some(snap) = &rd.snapshot {
        writeln!(
            s,
            "  Snapshot Index:{} Term:{} {}",
            snap.metadata.index,
            snap.metadata.term,
            fmt_conf_state(&snap.metadata.conf_state)
        )
        .unwrap();
    }
    if !rd.committed_entries.is_empty() {
        writeln!(s, "  CommittedEntries:").unwrap();
        for e in &rd.committed_entries {
            writeln!(s, "  {}", fmt_entry(e)).unwrap();
        }
    }
    for (_, cc, res) in &out.applied_conf {
        match res {
            Ok(cs) => writeln!(
                s,
                "  INFO {id} applied {}: {}",
                fmt_cc(cc),
                fmt_conf_state(cs)
            ),
            Err(e) => writeln!(s, "  INFO {id} refused {}: {e}", fmt_cc(cc)),
        }
        .unwrap();
    }
    if !rd.messages.is_empty() {
        writeln!(s, "  Messages:").unwrap();
        for m in &rd.messages {
            writeln!(s, "  {}", fmt_msg(m)).unwrap();
        }
    }
    if !rd.persisted_messages.is_empty() {
        writeln!(s, "  Messages after persisting:").unwrap();
        for m in &rd.persisted_messages {
            writeln!(s, "  {}", fmt_msg(m)).unwrap();
        }
    }
    for rs in &rd.read_states {
        writeln!(
            s,
            "  ReadState Index:{} Ctx:{:?}",
            rs.index,
            String::from_utf8_lossy(&rs.request_ctx)
        )
        .unwrap();
    }
    s
}
