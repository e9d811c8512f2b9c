//! Raft's membership (`ConfState`) as of the applied indexes that changed it, so that a
//! member's own snapshot at index N records the membership of N.
//!
//! The node loop applies a conf change to Raft when it hands the committed entry to the
//! apply thread, and the apply thread asks for a snapshot at what it has applied, which
//! may be behind: a conf change committed in between is already in Raft's current
//! membership. A snapshot that recorded that membership would claim a change its index
//! does not cover; a restart from it applies the change again when it replays the
//! entries after the snapshot (`replay_conf_changes`), which Raft refuses for a joint
//! change ("already joint") and so the member would not start. etcd takes the snapshot's
//! membership from its apply loop for the same reason.

use std::collections::VecDeque;

use skiff_raft::ConfState;

/// The membership from a known index on, and every change after it.
#[derive(Debug)]
pub struct ConfHistory {
    /// (index, membership from that index on), oldest first, never empty.
    states: VecDeque<(u64, ConfState)>,
}

impl ConfHistory {
    /// The membership `cs` holds as of `index` (Raft's applied index at start, or an
    /// installed snapshot's).
    pub fn new(index: u64, cs: ConfState) -> ConfHistory {
        ConfHistory {
            states: VecDeque::from([(index, cs)]),
        }
    }

    /// The conf change at `index` left the membership at `cs`.
    pub fn changed(&mut self, index: u64, cs: ConfState) {
        self.states.push_back((index, cs));
    }

    /// The membership as of `index`, forgetting what came before it (snapshots only move
    /// forward); `None` if `index` precedes everything known.
    pub fn at(&mut self, index: u64) -> Option<ConfState> {
        let newest_before = self.states.iter().rposition(|(i, _)| *i <= index)?;
        self.states.drain(..newest_before);
        self.states.front().map(|(_, cs)| cs.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn voters(v: &[u64]) -> ConfState {
        ConfState {
            voters: v.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn a_snapshot_gets_the_membership_of_its_own_index() {
        let mut h = ConfHistory::new(10, voters(&[1]));
        h.changed(15, voters(&[1, 2]));
        h.changed(20, voters(&[1, 2, 3]));
        assert_eq!(h.at(9), None, "before anything known");
        assert_eq!(h.at(14), Some(voters(&[1])));
        assert_eq!(h.at(15), Some(voters(&[1, 2])));
        assert_eq!(h.at(19), Some(voters(&[1, 2])));
        // What came before 15 is forgotten; 15 and later stay.
        assert_eq!(h.at(14), None);
        assert_eq!(h.at(25), Some(voters(&[1, 2, 3])));
        assert_eq!(h.states.len(), 1);
    }
}
