//! The leader's view of the cluster: the current (possibly joint) configuration, each
//! member's replication `Progress`, and the votes of an election in progress.

mod inflights;
mod progress;

use std::collections::{BTreeMap, BTreeSet};

pub use inflights::Inflights;
pub use progress::{Progress, ProgressState};

use crate::quorum::{JointConfig, VoteResult};
use crate::types::{ConfState, NodeId};

/// Membership: voters (joint while changing), learners, and the learners-to-be.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TrackerConfig {
    pub voters: JointConfig,
    pub learners: BTreeSet<NodeId>,
    /// Outgoing voters that become learners when the joint configuration is left.
    pub learners_next: BTreeSet<NodeId>,
    pub auto_leave: bool,
}

impl TrackerConfig {
    pub fn to_conf_state(&self) -> ConfState {
        ConfState {
            voters: self.voters.incoming.voters.iter().copied().collect(),
            learners: self.learners.iter().copied().collect(),
            voters_outgoing: self.voters.outgoing.voters.iter().copied().collect(),
            learners_next: self.learners_next.iter().copied().collect(),
            auto_leave: self.auto_leave,
        }
    }
}

pub type ProgressMap = BTreeMap<NodeId, Progress>;

#[derive(Debug, Clone)]
pub struct ProgressTracker {
    pub config: TrackerConfig,
    pub progress: ProgressMap,
    pub votes: BTreeMap<NodeId, bool>,
    pub max_inflight: usize,
    pub max_inflight_bytes: u64,
}

impl ProgressTracker {
    pub fn new(max_inflight: usize, max_inflight_bytes: u64) -> ProgressTracker {
        ProgressTracker {
            config: TrackerConfig::default(),
            progress: ProgressMap::new(),
            votes: BTreeMap::new(),
            max_inflight,
            max_inflight_bytes,
        }
    }

    pub fn conf_state(&self) -> ConfState {
        self.config.to_conf_state()
    }

    pub fn is_singleton(&self) -> bool {
        self.config.voters.incoming.len() == 1 && !self.config.voters.is_joint()
    }

    /// The largest index replicated on a quorum of voters.
    pub fn committed(&self) -> u64 {
        let prs = &self.progress;
        self.config
            .voters
            .committed_index(|id| prs.get(&id).map_or(0, |p| p.matched))
    }

    /// Whether a quorum of voters was heard from recently (check quorum).
    pub fn quorum_active(&self) -> bool {
        let prs = &self.progress;
        self.config.voters.vote_result(|id| {
            prs.get(&id)
                .filter(|p| !p.is_learner)
                .map(|p| p.recent_active)
        }) == VoteResult::Won
    }

    pub fn voter_ids(&self) -> BTreeSet<NodeId> {
        self.config.voters.ids()
    }

    pub fn reset_votes(&mut self) {
        self.votes.clear();
    }

    /// Records `id`'s vote (the first answer counts).
    pub fn record_vote(&mut self, id: NodeId, granted: bool) {
        self.votes.entry(id).or_insert(granted);
    }

    /// (granted, rejected, outcome) of the election in progress.
    pub fn tally_votes(&self) -> (usize, usize, VoteResult) {
        let (mut granted, mut rejected) = (0, 0);
        for (id, v) in &self.votes {
            if !self.config.voters.contains(*id) {
                continue;
            }
            if *v {
                granted += 1;
            } else {
                rejected += 1;
            }
        }
        let votes = &self.votes;
        (
            granted,
            rejected,
            self.config.voters.vote_result(|id| votes.get(&id).copied()),
        )
    }
}
