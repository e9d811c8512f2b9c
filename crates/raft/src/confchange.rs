//! Membership changes: turns a `ConfChangeV2` into a new tracker configuration, either
//! directly (one voter at a time) or through a joint configuration (Raft thesis §4.3),
//! and rebuilds a configuration from a `ConfState`.
//!
//! Guarantees: the result is checked for the invariants below before it is returned,
//! and an invalid change returns an error without touching the current configuration.
//! - every voter and learner has a `Progress`; nothing else does;
//! - a node is never both voter (incoming) and learner;
//! - `learners_next` only holds outgoing voters, and only while joint;
//! - outside a joint configuration `auto_leave` is false.

use crate::quorum::MajorityConfig;
use crate::tracker::{Progress, ProgressMap, TrackerConfig};
use crate::types::{ConfChangeSingle, ConfChangeType, ConfState, NodeId};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfChangeError {
    #[error("config is already joint")]
    AlreadyJoint,
    #[error("can't leave a non-joint config")]
    NotJoint,
    #[error("can't make a zero-voter config joint")]
    ZeroVoterJoint,
    #[error("removed all voters")]
    RemovedAllVoters,
    #[error("more than one voter changed without entering joint config")]
    TooManyVoterChanges,
    #[error("invalid configuration: {0}")]
    Invariant(String),
}

/// Applies changes to a copy of the current configuration.
pub struct Changer<'a> {
    pub config: &'a TrackerConfig,
    pub progress: &'a ProgressMap,
    /// Where new members' replication starts (`next_idx`).
    pub last_index: u64,
    pub max_inflight: usize,
    pub max_inflight_bytes: u64,
}

type Outcome = Result<(TrackerConfig, ProgressMap), ConfChangeError>;

impl Changer<'_> {
    /// Enters a joint configuration: outgoing = current voters, incoming = current
    /// voters with `changes` applied.
    pub fn enter_joint(&self, auto_leave: bool, changes: &[ConfChangeSingle]) -> Outcome {
        if self.config.voters.is_joint() {
            return Err(ConfChangeError::AlreadyJoint);
        }
        if self.config.voters.incoming.is_empty() {
            return Err(ConfChangeError::ZeroVoterJoint);
        }
        let (mut cfg, mut prs) = (self.config.clone(), self.progress.clone());
        cfg.voters.outgoing = cfg.voters.incoming.clone();
        self.apply(&mut cfg, &mut prs, changes)?;
        cfg.auto_leave = auto_leave;
        check_invariants(&cfg, &prs)?;
        Ok((cfg, prs))
    }

    /// Leaves a joint configuration: outgoing voters not kept are dropped, and
    /// `learners_next` become learners.
    pub fn leave_joint(&self) -> Outcome {
        if !self.config.voters.is_joint() {
            return Err(ConfChangeError::NotJoint);
        }
        let (mut cfg, mut prs) = (self.config.clone(), self.progress.clone());
        for id in std::mem::take(&mut cfg.learners_next) {
            cfg.learners.insert(id);
            if let Some(p) = prs.get_mut(&id) {
                p.is_learner = true;
            }
        }
        let outgoing = std::mem::take(&mut cfg.voters.outgoing);
        for id in outgoing.voters {
            if !cfg.voters.incoming.contains(id) && !cfg.learners.contains(&id) {
                prs.remove(&id);
            }
        }
        cfg.auto_leave = false;
        check_invariants(&cfg, &prs)?;
        Ok((cfg, prs))
    }

    /// Applies changes that alter at most one voter, without a joint configuration.
    pub fn simple(&self, changes: &[ConfChangeSingle]) -> Outcome {
        if self.config.voters.is_joint() {
            return Err(ConfChangeError::AlreadyJoint);
        }
        let (mut cfg, mut prs) = (self.config.clone(), self.progress.clone());
        self.apply(&mut cfg, &mut prs, changes)?;
        let before = &self.config.voters.incoming.voters;
        let after = &cfg.voters.incoming.voters;
        if before.symmetric_difference(after).count() > 1 {
            return Err(ConfChangeError::TooManyVoterChanges);
        }
        check_invariants(&cfg, &prs)?;
        Ok((cfg, prs))
    }

    fn apply(
        &self,
        cfg: &mut TrackerConfig,
        prs: &mut ProgressMap,
        changes: &[ConfChangeSingle],
    ) -> Result<(), ConfChangeError> {
        for cc in changes {
            if cc.node_id == 0 {
                continue;
            }
            match cc.change_type {
                ConfChangeType::AddNode => self.make_voter(cfg, prs, cc.node_id),
                ConfChangeType::AddLearnerNode => self.make_learner(cfg, prs, cc.node_id),
                ConfChangeType::RemoveNode => remove(cfg, prs, cc.node_id),
            }
        }
        if cfg.voters.incoming.is_empty() {
            return Err(ConfChangeError::RemovedAllVoters);
        }
        Ok(())
    }

    fn new_progress(&self, is_learner: bool) -> Progress {
        let mut p = Progress::new(
            self.last_index.max(1),
            self.max_inflight,
            self.max_inflight_bytes,
        );
        p.is_learner = is_learner;
        // A new member counts as active so check quorum does not step the leader down
        // before it has had a chance to hear from it.
        p.recent_active = true;
        p
    }

    fn make_voter(&self, cfg: &mut TrackerConfig, prs: &mut ProgressMap, id: NodeId) {
        match prs.get_mut(&id) {
            None => {
                prs.insert(id, self.new_progress(false));
            }
            Some(p) => p.is_learner = false,
        }
        cfg.learners.remove(&id);
        cfg.learners_next.remove(&id);
        cfg.voters.incoming.voters.insert(id);
    }

    fn make_learner(&self, cfg: &mut TrackerConfig, prs: &mut ProgressMap, id: NodeId) {
        let Some(p) = prs.get_mut(&id) else {
            prs.insert(id, self.new_progress(true));
            cfg.learners.insert(id);
            return;
        };
        if p.is_learner {
            return;
        }
        cfg.voters.incoming.voters.remove(&id);
        cfg.learners.remove(&id);
        cfg.learners_next.remove(&id);
        if cfg.voters.outgoing.contains(id) {
            // Still a voter of the outgoing config: it becomes a learner on leaving.
            cfg.learners_next.insert(id);
        } else {
            p.is_learner = true;
            cfg.learners.insert(id);
        }
    }
}

fn remove(cfg: &mut TrackerConfig, prs: &mut ProgressMap, id: NodeId) {
    if !prs.contains_key(&id) {
        return;
    }
    cfg.voters.incoming.voters.remove(&id);
    cfg.learners.remove(&id);
    cfg.learners_next.remove(&id);
    if !cfg.voters.outgoing.contains(id) {
        prs.remove(&id);
    }
}

fn check_invariants(cfg: &TrackerConfig, prs: &ProgressMap) -> Result<(), ConfChangeError> {
    let bad = |s: String| Err(ConfChangeError::Invariant(s));
    for id in cfg.voters.ids().iter().chain(&cfg.learners) {
        if !prs.contains_key(id) {
            return bad(format!("no progress for {id}"));
        }
    }
    for id in &cfg.learners_next {
        if !cfg.voters.outgoing.contains(*id) {
            return bad(format!(
                "{id} is in learners_next but not an outgoing voter"
            ));
        }
        if prs.get(id).is_some_and(|p| p.is_learner) {
            return bad(format!("{id} is in learners_next but already a learner"));
        }
    }
    for id in &cfg.learners {
        if cfg.voters.contains(*id) {
            return bad(format!("{id} is both learner and voter"));
        }
        if !prs.get(id).is_some_and(|p| p.is_learner) {
            return bad(format!("{id} is a learner but its progress says voter"));
        }
    }
    for id in prs.keys() {
        if !cfg.voters.contains(*id) && !cfg.learners.contains(id) {
            return bad(format!("progress for {id}, which is not a member"));
        }
    }
    if !cfg.voters.is_joint() && (!cfg.learners_next.is_empty() || cfg.auto_leave) {
        return bad("learners_next or auto_leave outside a joint config".into());
    }
    Ok(())
}

/// Rebuilds the configuration described by `cs` (from a snapshot or at start).
pub fn restore(
    cs: &ConfState,
    last_index: u64,
    max_inflight: usize,
    max_inflight_bytes: u64,
) -> Result<(TrackerConfig, ProgressMap), ConfChangeError> {
    let cfg = TrackerConfig {
        voters: crate::quorum::JointConfig {
            incoming: MajorityConfig::new(cs.voters.iter().copied()),
            outgoing: MajorityConfig::new(cs.voters_outgoing.iter().copied()),
        },
        learners: cs.learners.iter().copied().collect(),
        learners_next: cs.learners_next.iter().copied().collect(),
        auto_leave: cs.auto_leave && !cs.voters_outgoing.is_empty(),
    };
    let mut prs = ProgressMap::new();
    for id in cfg.voters.ids().iter().chain(&cfg.learners) {
        let mut p = Progress::new(last_index + 1, max_inflight, max_inflight_bytes);
        p.is_learner = cfg.learners.contains(id);
        p.recent_active = true;
        prs.insert(*id, p);
    }
    check_invariants(&cfg, &prs)?;
    Ok((cfg, prs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ConfChangeType::*;

    fn cc(change_type: ConfChangeType, node_id: NodeId) -> ConfChangeSingle {
        ConfChangeSingle {
            change_type,
            node_id,
        }
    }

    fn start(voters: &[NodeId]) -> (TrackerConfig, ProgressMap) {
        restore(
            &ConfState {
                voters: voters.to_vec(),
                ..Default::default()
            },
            10,
            16,
            0,
        )
        .unwrap()
    }

    fn changer<'a>(cfg: &'a TrackerConfig, prs: &'a ProgressMap) -> Changer<'a> {
        Changer {
            config: cfg,
            progress: prs,
            last_index: 10,
            max_inflight: 16,
            max_inflight_bytes: 0,
        }
    }

    #[test]
    fn simple_refuses_two_voter_changes() {
        let (cfg, prs) = start(&[1, 2, 3]);
        let ch = changer(&cfg, &prs);
        assert_eq!(
            ch.simple(&[cc(AddNode, 4), cc(AddNode, 5)]).unwrap_err(),
            ConfChangeError::TooManyVoterChanges
        );
        let (c2, _) = ch.simple(&[cc(AddNode, 4), cc(AddLearnerNode, 5)]).unwrap();
        assert_eq!(c2.voters.incoming.len(), 4);
        assert!(c2.learners.contains(&5));
        assert_eq!(
            ch.simple(&[cc(RemoveNode, 1), cc(RemoveNode, 2), cc(RemoveNode, 3)])
                .unwrap_err(),
            ConfChangeError::RemovedAllVoters
        );
    }

    #[test]
    fn joint_demotion_goes_through_learners_next() {
        let (cfg, prs) = start(&[1, 2, 3]);
        let (j, jp) = changer(&cfg, &prs)
            .enter_joint(true, &[cc(AddLearnerNode, 3), cc(AddNode, 4)])
            .unwrap();
        assert!(j.voters.is_joint());
        assert!(j.learners_next.contains(&3));
        assert!(!jp[&3].is_learner);
        assert_eq!(
            changer(&j, &jp).enter_joint(false, &[]).unwrap_err(),
            ConfChangeError::AlreadyJoint
        );
        let (l, lp) = changer(&j, &jp).leave_joint().unwrap();
        assert!(!l.voters.is_joint());
        assert!(l.learners.contains(&3) && lp[&3].is_learner);
        assert_eq!(
            l.voters.incoming.voters.iter().copied().collect::<Vec<_>>(),
            vec![1, 2, 4]
        );
        assert_eq!(
            changer(&l, &lp).leave_joint().unwrap_err(),
            ConfChangeError::NotJoint
        );
    }

    #[test]
    fn joint_removal_keeps_progress_until_leaving() {
        let (cfg, prs) = start(&[1, 2, 3]);
        let (j, jp) = changer(&cfg, &prs)
            .enter_joint(false, &[cc(RemoveNode, 1), cc(AddNode, 4)])
            .unwrap();
        assert!(jp.contains_key(&1), "outgoing voter keeps its progress");
        let (_, lp) = changer(&j, &jp).leave_joint().unwrap();
        assert!(!lp.contains_key(&1));
    }
}
