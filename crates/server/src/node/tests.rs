//! One turn of the node loop at a time, on a recorder instead of disks and sockets:
//! the order of persist, send and apply is pinned here, without processes. Each test
//! reads like a script: inputs in, the expected effects out, in order.

use std::sync::Arc;

use bytes::Bytes;
use skiff_raft::{
    ConfChangeV2, Config, Entry, HardState, MemStorage, Message, MessageType, RawNode, Snapshot,
};

use super::{Node, NodeError, NodeInput, NodeIo, RaftStatus};
use crate::inputs::ApplyInput;
use crate::metrics::Metrics;
use skiff_storage::wal::SnapshotMarker;

/// Records every effect as one line.
#[derive(Default)]
struct Recorder {
    log: Vec<String>,
    /// Own snapshots' files go to a writer off the loop (as the member's `DiskIo`).
    snapshot_writer: bool,
}

fn span(entries: &[Entry]) -> String {
    match (entries.first(), entries.last()) {
        (Some(a), Some(b)) if a.index == b.index => format!("[{}]", a.index),
        (Some(a), Some(b)) => format!("[{}..{}]", a.index, b.index),
        _ => "[]".into(),
    }
}

impl NodeIo for Recorder {
    fn leadership(&mut self, leader: u64, leading: bool) {
        self.log
            .push(format!("leadership leader={leader} leading={leading}"));
    }
    fn send(&mut self, msgs: Vec<Message>) {
        for m in msgs {
            self.log.push(format!(
                "send {:?} {}->{} term={} index={} entries={} commit={}",
                m.msg_type,
                m.from,
                m.to,
                m.term,
                m.index,
                span(&m.entries),
                m.commit
            ));
        }
    }
    fn save_snapshot(&mut self, snap: &Snapshot) -> Result<(), NodeError> {
        self.log
            .push(format!("save snapshot index={}", snap.metadata.index));
        Ok(())
    }
    fn save_own_snapshot(&mut self, snap: Snapshot) -> Result<Option<SnapshotMarker>, NodeError> {
        let index = snap.metadata.index;
        if self.snapshot_writer {
            self.log
                .push(format!("snapshot file index={index} to the writer"));
            return Ok(None);
        }
        self.save_snapshot(&snap)?;
        Ok(Some(SnapshotMarker {
            index,
            term: snap.metadata.term,
        }))
    }
    fn save_snapshot_marker(&mut self, marker: SnapshotMarker) -> Result<(), NodeError> {
        self.log
            .push(format!("save snapshot marker index={}", marker.index));
        Ok(())
    }
    fn persist(
        &mut self,
        hs: Option<HardState>,
        entries: &[Entry],
        sync: bool,
    ) -> Result<(), NodeError> {
        let hs = hs
            .map(|h| format!("term={} vote={} commit={}", h.term, h.vote, h.commit))
            .unwrap_or_else(|| "-".into());
        self.log.push(format!(
            "persist hs=({hs}) entries={} sync={sync}",
            span(entries)
        ));
        Ok(())
    }
    fn apply(&mut self, input: ApplyInput) -> Result<(), NodeError> {
        let line = match input {
            ApplyInput::Entries { entries, term } => {
                format!("apply entries={} term={term}", span(&entries))
            }
            ApplyInput::Snapshot(s) => format!("apply snapshot index={}", s.metadata.index),
            ApplyInput::LeaseKeys { id, .. } => format!("apply lease-keys {id}"),
            ApplyInput::Stopped => "apply stopped".into(),
        };
        self.log.push(line);
        Ok(())
    }
    fn conf_changed(&mut self, cc: &ConfChangeV2) {
        self.log.push(format!("conf change {:?}", cc.changes));
    }
    fn peer_urls(&mut self, id: u64, urls: Vec<String>) {
        self.log.push(format!("peer urls {id} {urls:?}"));
    }
    fn release(&mut self, index: u64) -> Result<(), NodeError> {
        self.log.push(format!("release {index}"));
        Ok(())
    }
}

fn node(id: u64, voters: Vec<u64>) -> Node<Recorder> {
    let storage = MemStorage::new_with_conf_state(voters, Vec::new());
    let cfg = Config {
        id,
        election_tick: 10,
        heartbeat_tick: 1,
        check_quorum: true,
        pre_vote: false,
        max_size_per_msg: 1024 * 1024,
        max_inflight_msgs: 256,
        seed: 7,
        ..Default::default()
    };
    let raw = RawNode::new(&cfg, storage.clone()).expect("valid config");
    Node::new(
        raw,
        storage,
        Recorder::default(),
        Arc::new(RaftStatus::default()),
        Metrics::new(id),
        5000,
    )
}

/// Runs one turn and returns the effects it produced, one per line.
fn turn(n: &mut Node<Recorder>, inputs: Vec<NodeInput>) -> String {
    let stop = n.turn(inputs, false).expect("turn");
    assert!(!stop);
    std::mem::take(&mut n.io.log).join("\n")
}

fn msg(t: MessageType, from: u64, to: u64, term: u64) -> NodeInput {
    let mut m = Message::new(t, from, to);
    m.term = term;
    NodeInput::Step(Box::new(m))
}

fn propose(data: &'static str) -> NodeInput {
    NodeInput::Propose(Bytes::from_static(data.as_bytes()))
}

#[test]
fn single_member_persists_before_it_applies() {
    let mut n = node(1, vec![1]);
    n.raw.campaign().expect("campaign");
    assert_eq!(
        turn(&mut n, vec![]),
        "leadership leader=1 leading=true\n\
         persist hs=(term=1 vote=1 commit=0) entries=[1] sync=true\n\
         persist hs=(term=1 vote=1 commit=1) entries=[] sync=false\n\
         apply entries=[1] term=1"
    );
    // Two proposals in one turn share one fsync (group commit).
    assert_eq!(
        turn(&mut n, vec![propose("a"), propose("b")]),
        "persist hs=(-) entries=[2..3] sync=true\n\
         persist hs=(term=1 vote=1 commit=3) entries=[] sync=false\n\
         apply entries=[2..3] term=1"
    );
}

#[test]
fn a_leader_replicates_before_its_own_fsync_and_applies_after_a_quorum() {
    let mut n = node(1, vec![1, 2, 3]);
    n.raw.campaign().expect("campaign");
    // Votes ask only after the candidate's term and self-vote are durable.
    assert_eq!(
        turn(&mut n, vec![]),
        "leadership leader=0 leading=false\n\
         persist hs=(term=1 vote=1 commit=0) entries=[] sync=true\n\
         send RequestVote 1->2 term=1 index=0 entries=[] commit=0\n\
         send RequestVote 1->3 term=1 index=0 entries=[] commit=0"
    );
    assert_eq!(
        turn(&mut n, vec![msg(MessageType::RequestVoteResponse, 2, 1, 1)]),
        "leadership leader=1 leading=true\n\
         send Append 1->2 term=1 index=0 entries=[1] commit=0\n\
         send Append 1->3 term=1 index=0 entries=[1] commit=0\n\
         persist hs=(-) entries=[1] sync=true"
    );
    // Both followers acknowledge the leader's first entry: it commits and applies,
    // and they move from probing to pipelining.
    assert_eq!(
        turn(&mut n, vec![ack(2, 1), ack(3, 1)]),
        "send Append 1->2 term=1 index=1 entries=[] commit=1\n\
         send Append 1->3 term=1 index=1 entries=[] commit=1\n\
         persist hs=(term=1 vote=1 commit=1) entries=[] sync=false\n\
         apply entries=[1] term=1"
    );
    // A proposal leaves for the followers before the leader's own fsync.
    assert_eq!(
        turn(&mut n, vec![propose("x")]),
        "send Append 1->2 term=1 index=1 entries=[2] commit=1\n\
         send Append 1->3 term=1 index=1 entries=[2] commit=1\n\
         persist hs=(-) entries=[2] sync=true"
    );
    // One follower's acknowledgement makes a quorum with the leader's own disk.
    assert_eq!(
        turn(&mut n, vec![ack(2, 2)]),
        "send Append 1->2 term=1 index=2 entries=[] commit=2\n\
         send Append 1->3 term=1 index=2 entries=[] commit=2\n\
         persist hs=(term=1 vote=1 commit=2) entries=[] sync=false\n\
         apply entries=[2] term=1"
    );
}

fn ack(from: u64, index: u64) -> NodeInput {
    let mut m = Message::new(MessageType::AppendResponse, from, 1);
    m.term = 1;
    m.index = index;
    NodeInput::Step(Box::new(m))
}

#[test]
fn a_follower_acknowledges_only_after_its_fsync() {
    let mut n = node(2, vec![1, 2, 3]);
    let mut app = Message::new(MessageType::Append, 1, 2);
    app.term = 1;
    app.index = 0;
    app.log_term = 0;
    app.entries = vec![Entry {
        term: 1,
        index: 1,
        ..Entry::normal(Bytes::new())
    }];
    app.commit = 1;
    assert_eq!(
        turn(&mut n, vec![NodeInput::Step(Box::new(app))]),
        "leadership leader=1 leading=false\n\
         persist hs=(term=1 vote=0 commit=1) entries=[1] sync=true\n\
         send AppendResponse 2->1 term=1 index=1 entries=[] commit=0\n\
         apply entries=[1] term=1"
    );
}

#[test]
fn a_stop_is_a_turn_that_does_nothing_else() {
    let mut n = node(1, vec![1]);
    assert!(n
        .turn(vec![propose("x"), NodeInput::Stop], false)
        .expect("turn"));
    assert!(n.io.log.is_empty());
}

#[test]
fn only_a_deep_backlog_of_writes_pauses_a_turn() {
    use super::{grouping_pause, GROUPING_BACKLOG, GROUPING_PAUSE};
    for pending in [0, 1, 100, GROUPING_BACKLOG - 1] {
        assert_eq!(grouping_pause(pending), None, "{pending} pending");
    }
    for pending in [GROUPING_BACKLOG, 1000] {
        assert_eq!(
            grouping_pause(pending),
            Some(GROUPING_PAUSE),
            "{pending} pending"
        );
    }
}

/// A member's own snapshot: its WAL marker and the release of the log behind it come
/// only once its file is durable, whether the file is written on the loop or by the
/// writer off it (which reports with `SnapshotSaved`).
#[test]
fn an_own_snapshot_releases_the_log_only_after_its_file_is_durable() {
    for elsewhere in [false, true] {
        let mut n = node(1, vec![1]);
        n.io.snapshot_writer = elsewhere;
        n.raw.campaign().expect("campaign");
        turn(&mut n, vec![]);
        turn(&mut n, vec![propose("a"), propose("b")]);
        let snapshot = NodeInput::Snapshot {
            index: 3,
            payload: Bytes::new(),
        };
        if !elsewhere {
            assert_eq!(
                turn(&mut n, vec![snapshot]),
                "save snapshot index=3\nrelease 3"
            );
            continue;
        }
        assert_eq!(
            turn(&mut n, vec![snapshot]),
            "snapshot file index=3 to the writer"
        );
        let saved = NodeInput::SnapshotSaved(SnapshotMarker { index: 3, term: 1 });
        assert_eq!(
            turn(&mut n, vec![saved]),
            "save snapshot marker index=3\nrelease 3"
        );
    }
}

/// The apply thread asks for a snapshot at what it has applied, which can be behind a
/// conf change the loop already applied to Raft: the snapshot records the membership of
/// its own index (a restart from it replays that change after it, once).
#[test]
fn an_own_snapshot_records_the_membership_of_its_index_not_a_later_one() {
    use skiff_raft::{ConfChangeType, Storage as _};
    let mut n = node(1, vec![1]);
    n.raw.campaign().expect("campaign");
    turn(&mut n, vec![]);
    turn(&mut n, vec![propose("a")]);
    let add = ConfChangeV2::simple(ConfChangeType::AddLearnerNode, 2);
    assert_eq!(
        turn(&mut n, vec![NodeInput::ProposeConfChange(add)]),
        "persist hs=(-) entries=[3] sync=true\n\
         persist hs=(term=1 vote=1 commit=3) entries=[] sync=false\n\
         conf change [ConfChangeSingle { change_type: AddLearnerNode, node_id: 2 }]\n\
         apply entries=[3] term=1\n\
         send Append 1->2 term=1 index=2 entries=[3] commit=3"
    );
    assert_eq!(n.raw.raft.prs.conf_state().learners, vec![2]);
    let snapshot_at = |n: &mut Node<Recorder>, index| {
        turn(
            n,
            vec![NodeInput::Snapshot {
                index,
                payload: Bytes::new(),
            }],
        );
        let snap = n.storage.snapshot(0).expect("snapshot");
        assert_eq!(snap.metadata.index, index);
        snap.metadata.conf_state
    };
    // Past what the loop handed to the apply thread (after a leader's snapshot whose
    // dump was newer than its index): its membership is not known, so no snapshot.
    assert_eq!(
        turn(
            &mut n,
            vec![NodeInput::Snapshot {
                index: 9,
                payload: Bytes::new(),
            }]
        ),
        ""
    );
    assert_eq!(n.storage.snapshot(0).expect("snapshot").metadata.index, 0);
    let at_2 = snapshot_at(&mut n, 2);
    assert_eq!((at_2.voters, at_2.learners), (vec![1], vec![]));
    let at_3 = snapshot_at(&mut n, 3);
    assert_eq!((at_3.voters, at_3.learners), (vec![1], vec![2]));
}
