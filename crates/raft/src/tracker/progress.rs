//! `Progress`: what the leader knows of one follower's log, and the state machine of
//! how it replicates to it (probe -> replicate, snapshot when the log was compacted).

use super::inflights::Inflights;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProgressState {
    /// At most one append in flight until the follower's position is known.
    #[default]
    Probe,
    /// Optimistically streaming appends, bounded by the inflight window.
    Replicate,
    /// A snapshot is on its way; nothing else is sent until it is reported.
    Snapshot,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// Highest index known to be replicated on the follower.
    pub matched: u64,
    /// Next index to send.
    pub next_idx: u64,
    pub state: ProgressState,
    /// Index of the snapshot being sent (snapshot state).
    pub pending_snapshot: u64,
    /// Heard from since the last check-quorum round.
    pub recent_active: bool,
    /// In probe state: an append was sent and not yet answered.
    pub probe_sent: bool,
    pub inflights: Inflights,
    pub is_learner: bool,
}

impl Progress {
    pub fn new(next_idx: u64, max_inflight: usize, max_inflight_bytes: u64) -> Progress {
        Progress {
            matched: 0,
            next_idx,
            state: ProgressState::Probe,
            pending_snapshot: 0,
            recent_active: false,
            probe_sent: false,
            inflights: Inflights::new(max_inflight, max_inflight_bytes),
            is_learner: false,
        }
    }

    fn reset_state(&mut self, state: ProgressState) {
        self.probe_sent = false;
        self.pending_snapshot = 0;
        self.state = state;
        self.inflights.reset();
    }

    pub fn become_probe(&mut self) {
        if self.state == ProgressState::Snapshot {
            let pending = self.pending_snapshot;
            self.reset_state(ProgressState::Probe);
            self.next_idx = (self.matched + 1).max(pending + 1);
        } else {
            self.reset_state(ProgressState::Probe);
            self.next_idx = self.matched + 1;
        }
    }

    pub fn become_replicate(&mut self) {
        self.reset_state(ProgressState::Replicate);
        self.next_idx = self.matched + 1;
    }

    pub fn become_snapshot(&mut self, snapshot_index: u64) {
        self.reset_state(ProgressState::Snapshot);
        self.pending_snapshot = snapshot_index;
    }

    /// The follower acknowledged `n`. Returns whether `matched` moved.
    pub fn maybe_update(&mut self, n: u64) -> bool {
        let updated = self.matched < n;
        if updated {
            self.matched = n;
            self.probe_sent = false;
        }
        self.next_idx = self.next_idx.max(n + 1);
        updated
    }

    /// Entries up to `n` were sent (replicate state pipelining).
    pub fn optimistic_update(&mut self, n: u64) {
        self.next_idx = n + 1;
    }

    /// The follower rejected an append at `rejected`; `match_hint` is where the logs may
    /// agree. Returns false for a stale rejection.
    pub fn maybe_decr_to(&mut self, rejected: u64, match_hint: u64) -> bool {
        if self.state == ProgressState::Replicate {
            if rejected <= self.matched {
                return false;
            }
            self.next_idx = self.matched + 1;
            return true;
        }
        if self.next_idx == 0 || self.next_idx - 1 != rejected {
            return false;
        }
        self.next_idx = rejected.min(match_hint + 1).max(self.matched + 1).max(1);
        self.probe_sent = false;
        true
    }

    /// Whether sending more appends to this follower should wait.
    pub fn is_paused(&self) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflights.full(),
            ProgressState::Snapshot => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_backs_off_with_hint_and_ignores_stale_rejections() {
        let mut p = Progress::new(10, 4, 0);
        p.probe_sent = true;
        assert!(!p.maybe_decr_to(5, 3), "stale: not the index we probed");
        assert!(p.maybe_decr_to(9, 4));
        assert_eq!(p.next_idx, 5);
        assert!(!p.probe_sent);
    }

    #[test]
    fn replicate_rejection_falls_back_to_match() {
        let mut p = Progress::new(10, 4, 0);
        p.maybe_update(6);
        p.become_replicate();
        p.optimistic_update(12);
        assert!(!p.maybe_decr_to(6, 0));
        assert!(p.maybe_decr_to(9, 0));
        assert_eq!(p.next_idx, 7);
    }

    #[test]
    fn snapshot_then_probe_resumes_after_snapshot() {
        let mut p = Progress::new(3, 4, 0);
        p.become_snapshot(20);
        assert!(p.is_paused());
        p.become_probe();
        assert_eq!(p.next_idx, 21);
    }
}
