//! Quorum arithmetic for majority and joint (two-majority) configurations: which index
//! a quorum has acknowledged and whether a vote is won, lost or pending.

use std::collections::BTreeSet;

use crate::types::NodeId;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoteResult {
    Pending,
    Lost,
    Won,
}

/// A set of voters decided by simple majority.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MajorityConfig {
    pub voters: BTreeSet<NodeId>,
}

impl MajorityConfig {
    pub fn new(voters: impl IntoIterator<Item = NodeId>) -> MajorityConfig {
        MajorityConfig {
            voters: voters.into_iter().collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.voters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.voters.is_empty()
    }

    pub fn contains(&self, id: NodeId) -> bool {
        self.voters.contains(&id)
    }

    /// The largest index acknowledged by a majority, where `acked(id)` is what `id`
    /// has acknowledged. An empty config returns `u64::MAX` so that it never limits
    /// a joint configuration.
    pub fn committed_index(&self, acked: impl Fn(NodeId) -> u64) -> u64 {
        let n = self.voters.len();
        if n == 0 {
            return u64::MAX;
        }
        // Small clusters are the common case: sort on the stack.
        let mut stack = [0u64; 7];
        let mut heap;
        let vals: &mut [u64] = if n <= stack.len() {
            &mut stack[..n]
        } else {
            heap = vec![0u64; n];
            &mut heap
        };
        for (slot, id) in vals.iter_mut().zip(&self.voters) {
            *slot = acked(*id);
        }
        vals.sort_unstable();
        // Ascending order: the value at n - (n/2 + 1) is held by a majority.
        vals[n - (n / 2 + 1)]
    }

    /// The outcome of a vote where `vote(id)` is `Some(granted)` for those who answered.
    pub fn vote_result(&self, vote: impl Fn(NodeId) -> Option<bool>) -> VoteResult {
        if self.voters.is_empty() {
            return VoteResult::Won;
        }
        let (mut yes, mut missing) = (0, 0);
        for id in &self.voters {
            match vote(*id) {
                Some(true) => yes += 1,
                Some(false) => {}
                None => missing += 1,
            }
        }
        let q = self.voters.len() / 2 + 1;
        if yes >= q {
            VoteResult::Won
        } else if yes + missing >= q {
            VoteResult::Pending
        } else {
            VoteResult::Lost
        }
    }
}

/// The incoming and outgoing majorities of a (possibly joint) configuration. Outside a
/// joint configuration the outgoing one is empty.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JointConfig {
    pub incoming: MajorityConfig,
    pub outgoing: MajorityConfig,
}

impl JointConfig {
    pub fn is_joint(&self) -> bool {
        !self.outgoing.is_empty()
    }

    pub fn contains(&self, id: NodeId) -> bool {
        self.incoming.contains(id) || self.outgoing.contains(id)
    }

    /// Every voter of either half, sorted, without duplicates.
    pub fn ids(&self) -> BTreeSet<NodeId> {
        self.incoming
            .voters
            .union(&self.outgoing.voters)
            .copied()
            .collect()
    }

    pub fn committed_index(&self, acked: impl Fn(NodeId) -> u64 + Copy) -> u64 {
        self.incoming
            .committed_index(acked)
            .min(self.outgoing.committed_index(acked))
    }

    pub fn vote_result(&self, vote: impl Fn(NodeId) -> Option<bool> + Copy) -> VoteResult {
        let a = self.incoming.vote_result(vote);
        let b = self.outgoing.vote_result(vote);
        match (a, b) {
            (VoteResult::Won, VoteResult::Won) => VoteResult::Won,
            (VoteResult::Lost, _) | (_, VoteResult::Lost) => VoteResult::Lost,
            _ => VoteResult::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn majority_committed_index() {
        let c = MajorityConfig::new([1, 2, 3]);
        let acked: HashMap<u64, u64> = [(1, 5), (2, 3), (3, 9)].into();
        assert_eq!(c.committed_index(|id| acked[&id]), 5);
        let c4 = MajorityConfig::new([1, 2, 3, 4]);
        let acked4: HashMap<u64, u64> = [(1, 5), (2, 3), (3, 9), (4, 1)].into();
        assert_eq!(c4.committed_index(|id| acked4[&id]), 3);
        assert_eq!(MajorityConfig::default().committed_index(|_| 0), u64::MAX);
    }

    #[test]
    fn joint_takes_the_minimum_and_needs_both_votes() {
        let j = JointConfig {
            incoming: MajorityConfig::new([1, 2, 3]),
            outgoing: MajorityConfig::new([3, 4, 5]),
        };
        let acked: HashMap<u64, u64> = [(1, 9), (2, 9), (3, 2), (4, 2), (5, 7)].into();
        assert_eq!(j.committed_index(|id| acked[&id]), 2);
        let votes: HashMap<u64, bool> = [(1, true), (2, true), (4, false), (5, false)].into();
        assert_eq!(
            j.vote_result(|id| votes.get(&id).copied()),
            VoteResult::Lost
        );
        let votes: HashMap<u64, bool> = [(1, true), (2, true), (4, true)].into();
        assert_eq!(
            j.vote_result(|id| votes.get(&id).copied()),
            VoteResult::Pending
        );
        let votes: HashMap<u64, bool> = [(1, true), (2, true), (4, true), (5, true)].into();
        assert_eq!(j.vote_result(|id| votes.get(&id).copied()), VoteResult::Won);
    }
}
