//! Refusing peer messages that cannot come from a correct member: the Raft core's
//! defence against a hostile or broken peer.
//!
//! [`crate::RawNode::step`] (the entry point for messages that arrived over the
//! network) runs [`Raft::check_peer_message`] before anything else; a refused message
//! changes nothing (not even the term) and comes back as
//! [`crate::RaftError::InvalidMessage`] for the caller to log. What is refused, each
//! a message that would otherwise trip one of the core's invariant assertions or
//! record something the log cannot hold:
//! - a message from node 0 or from ourselves, or with a term no cluster reaches
//!   (above 2^63: a later `term + 1` would overflow), or without a term (0, which the
//!   core takes for a local message and lets past every term check) unless it is a
//!   forwarded proposal or read index;
//! - an append whose entries do not follow `index` one by one, carry a term above
//!   the message's or below `log_term`, or go down in term, or that claims term 0 at
//!   an index past 0 (the core reads term 0 past its last index, so it would "match"
//!   and commit what the log does not hold) (an append that would
//!   replace a committed entry needs no check here: the core answers an append below
//!   its commit with the commit and appends nothing, and the entries of one at or
//!   above the commit all lie above it);
//! - a heartbeat whose commit index is beyond our last index (a leader only sends
//!   what we acknowledged);
//! - a snapshot message without a snapshot, at index 0, with term 0 or above the
//!   message's, or whose membership is empty or inconsistent;
//! - an append response acknowledging an index beyond the leader's last one.
//!
//! Guarantees: a correct member never sends what is refused here (each rule is what
//! the sending side's code guarantees), so the checks cost no liveness.

use crate::confchange;
use crate::raft::Raft;
use crate::storage::Storage;
use crate::types::{Message, MessageType, NONE};
use crate::StateRole;

/// The highest term a message may carry.
pub const MAX_TERM: u64 = u64::MAX / 2;

impl<S: Storage> Raft<S> {
    /// Why `m` (from a peer) cannot be stepped, or `Ok` when it may be.
    pub fn check_peer_message(&self, m: &Message) -> Result<(), String> {
        if m.from == NONE || m.from == self.id {
            return Err(format!("sender {} is not a peer", m.from));
        }
        if m.term > MAX_TERM {
            return Err(format!("term {} is impossibly large", m.term));
        }
        // Term 0 is how the core marks local messages and skips every term check; a
        // member stamps its term on everything it sends but forwarded proposals and
        // reads (`Raft::send`).
        if m.term == 0 && !matches!(m.msg_type, MessageType::Propose | MessageType::ReadIndex) {
            return Err(format!("{:?} without a term", m.msg_type));
        }
        match m.msg_type {
            MessageType::Append => self.check_append(m),
            MessageType::Heartbeat => {
                let last = self.raft_log.last_index();
                if m.term >= self.term && m.commit > last {
                    return Err(format!(
                        "heartbeat commits {} beyond our last index {last}",
                        m.commit
                    ));
                }
                Ok(())
            }
            MessageType::Snapshot => self.check_snapshot(m),
            MessageType::AppendResponse => {
                let last = self.raft_log.last_index();
                if !m.reject
                    && m.term == self.term
                    && self.state == StateRole::Leader
                    && m.index > last
                {
                    return Err(format!(
                        "acknowledges index {} beyond our last index {last}",
                        m.index
                    ));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn check_append(&self, m: &Message) -> Result<(), String> {
        let mut prev_term = m.log_term;
        for (i, e) in m.entries.iter().enumerate() {
            let want = m
                .index
                .checked_add(i as u64 + 1)
                .ok_or_else(|| format!("entry index overflows after {}", m.index))?;
            if e.index != want {
                return Err(format!(
                    "entry {i} has index {}, expected {want} after index {}",
                    e.index, m.index
                ));
            }
            if e.term > m.term {
                return Err(format!(
                    "entry {} has term {} above the message's term {}",
                    e.index, e.term, m.term
                ));
            }
            if e.term < prev_term {
                return Err(format!(
                    "entry {} has term {} below the term {prev_term} before it",
                    e.index, e.term
                ));
            }
            prev_term = e.term;
        }
        if m.log_term > m.term {
            return Err(format!(
                "log term {} above the message's term {}",
                m.log_term, m.term
            ));
        }
        // Only the empty log's position 0 has term 0; the core reads term 0 for any
        // index past its last, so such an append would "match" there and commit it.
        if m.log_term == 0 && m.index > 0 {
            return Err(format!("log term 0 at index {}", m.index));
        }
        Ok(())
    }

    fn check_snapshot(&self, m: &Message) -> Result<(), String> {
        let Some(snap) = &m.snapshot else {
            return Err("snapshot message without a snapshot".to_string());
        };
        let meta = &snap.metadata;
        if meta.index == 0 || meta.term == 0 {
            return Err(format!(
                "snapshot at index {} term {}",
                meta.index, meta.term
            ));
        }
        if meta.term > m.term {
            return Err(format!(
                "snapshot term {} above the message's term {}",
                meta.term, m.term
            ));
        }
        if meta.conf_state.voters.is_empty() {
            return Err("snapshot membership has no voter".to_string());
        }
        confchange::restore(&meta.conf_state, meta.index, 1, 0)
            .map_err(|e| format!("snapshot membership is inconsistent: {e}"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::raw_node::RawNode;
    use crate::storage::MemStorage;
    use crate::types::{ConfState, Entry, EntryType, HardState, Snapshot, SnapshotMetadata};
    use crate::{Config, Message, MessageType, RaftError, StateRole};

    /// Follower 2 of {1, 2, 3} at term 2 with entries 1..=5 (terms 1,1,2,2,2), commit 3.
    fn follower() -> RawNode<MemStorage> {
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
            id: 2,
            election_tick: 10,
            heartbeat_tick: 1,
            ..Config::default()
        };
        RawNode::new(&config, storage).unwrap()
    }

    fn msg(t: MessageType, term: u64) -> Message {
        Message {
            msg_type: t,
            from: 1,
            to: 2,
            term,
            ..Default::default()
        }
    }

    fn ent(index: u64, term: u64) -> Entry {
        Entry {
            term,
            index,
            entry_type: EntryType::Normal,
            data: "y".into(),
        }
    }

    fn snapshot_msg(index: u64, term: u64, voters: Vec<u64>, outgoing: Vec<u64>) -> Message {
        Message {
            snapshot: Some(Snapshot {
                data: Default::default(),
                metadata: SnapshotMetadata {
                    conf_state: ConfState {
                        voters,
                        voters_outgoing: outgoing,
                        learners: vec![2],
                        ..Default::default()
                    },
                    index,
                    term,
                },
            }),
            ..msg(MessageType::Snapshot, 3)
        }
    }

    /// Each crafted message, the invariant it would break without the check.
    fn hostile() -> Vec<(&'static str, Message)> {
        vec![
            (
                "heartbeat commit beyond the last index",
                Message {
                    commit: 99,
                    ..msg(MessageType::Heartbeat, 2)
                },
            ),
            (
                "append whose entries skip back below the commit",
                Message {
                    index: 5,
                    log_term: 2,
                    entries: vec![ent(2, 2)],
                    ..msg(MessageType::Append, 2)
                },
            ),
            (
                "append with a hole",
                Message {
                    index: 5,
                    log_term: 2,
                    entries: vec![ent(6, 2), ent(9, 2)],
                    ..msg(MessageType::Append, 2)
                },
            ),
            (
                "append with a future term",
                Message {
                    index: 5,
                    log_term: 2,
                    entries: vec![ent(6, 7)],
                    ..msg(MessageType::Append, 2)
                },
            ),
            (
                "snapshot message without a snapshot",
                msg(MessageType::Snapshot, 3),
            ),
            (
                "snapshot at index 0",
                snapshot_msg(0, 3, vec![1, 3], vec![]),
            ),
            (
                "snapshot with an inconsistent membership (2 voter and learner)",
                snapshot_msg(10, 3, vec![1, 2], vec![]),
            ),
            (
                "snapshot without voters",
                snapshot_msg(10, 3, vec![], vec![]),
            ),
            (
                "snapshot from a future term",
                snapshot_msg(10, 9, vec![1, 3], vec![]),
            ),
            (
                "unknown sender 0",
                Message {
                    from: 0,
                    ..msg(MessageType::Heartbeat, 2)
                },
            ),
            (
                "ourselves as the sender",
                Message {
                    from: 2,
                    ..msg(MessageType::Heartbeat, 2)
                },
            ),
            ("impossible term", msg(MessageType::Heartbeat, u64::MAX)),
            (
                // Found by crates/server/tests/fuzz_replay.rs (peer_frame).
                "heartbeat without a term committing beyond the last index",
                Message {
                    commit: 50,
                    ..msg(MessageType::Heartbeat, 0)
                },
            ),
            (
                // Found by crates/server/tests/fuzz_replay.rs (peer_frame).
                "append after an index we lack, at log term 0",
                Message {
                    index: 1 << 31,
                    log_term: 0,
                    commit: 1 << 62,
                    ..msg(MessageType::Append, 2)
                },
            ),
            (
                "append without a term",
                Message {
                    index: 5,
                    log_term: 2,
                    commit: 50,
                    ..msg(MessageType::Append, 0)
                },
            ),
        ]
    }

    #[test]
    fn crafted_messages_are_refused_and_the_member_keeps_working() {
        for (what, m) in hostile() {
            let mut node = follower();
            let before = (
                node.raft.term,
                node.raft.raft_log.committed,
                node.raft.raft_log.last_index(),
            );
            match node.step(m) {
                Err(RaftError::InvalidMessage { .. }) => {}
                other => panic!("{what}: not refused: {other:?}"),
            }
            let after = (
                node.raft.term,
                node.raft.raft_log.committed,
                node.raft.raft_log.last_index(),
            );
            assert_eq!(before, after, "{what}: a refused message changes nothing");
            // Still a working follower: a correct append from the leader is accepted.
            node.step(Message {
                index: 5,
                log_term: 2,
                commit: 6,
                entries: vec![ent(6, 2)],
                ..msg(MessageType::Append, 2)
            })
            .unwrap();
            assert_eq!(node.raft.raft_log.last_index(), 6, "{what}");
            assert_eq!(node.raft.raft_log.committed, 6, "{what}");
            assert_eq!(node.raft.state, StateRole::Follower, "{what}");
        }
    }

    /// The checks are not vacuous: the same messages stepped past them (straight into
    /// `Raft::step`) break an invariant assertion, which is what a member hit before.
    #[test]
    fn without_the_check_the_crafted_messages_panic() {
        let fatal = [
            "heartbeat commit beyond the last index",
            "heartbeat without a term committing beyond the last index",
            "append after an index we lack, at log term 0",
            "append whose entries skip back below the commit",
            "snapshot with an inconsistent membership (2 voter and learner)",
        ];
        for (what, m) in hostile().into_iter().filter(|(w, _)| fatal.contains(w)) {
            let mut node = follower();
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let _ = node.raft.step(m);
            }));
            assert!(
                result.is_err(),
                "{what}: expected the unchecked path to panic"
            );
        }
    }

    #[test]
    fn correct_messages_pass() {
        let node = follower();
        let ok = [
            Message {
                commit: 5,
                ..msg(MessageType::Heartbeat, 2)
            },
            // An old append at or below the commit, matching our log.
            Message {
                index: 1,
                log_term: 1,
                entries: vec![ent(2, 1), ent(3, 2)],
                ..msg(MessageType::Append, 2)
            },
            // A new leader overwriting the uncommitted tail.
            Message {
                index: 3,
                log_term: 2,
                entries: vec![ent(4, 3)],
                ..msg(MessageType::Append, 3)
            },
            snapshot_msg(10, 3, vec![1, 3], vec![]),
            // A stale heartbeat (lower term) is answered, not refused.
            Message {
                commit: 99,
                ..msg(MessageType::Heartbeat, 1)
            },
        ];
        for m in ok {
            assert_eq!(node.raft.check_peer_message(&m), Ok(()), "{m:?}");
        }
    }
}
