//! Per-node Raft configuration and its validation.

use crate::types::{NodeId, NONE};

/// How ReadIndex requests are confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadOnlyOption {
    /// The leader confirms it is still leader with a heartbeat round acknowledged by a
    /// quorum before answering. Safe under any clock behaviour.
    #[default]
    Safe,
    /// The leader answers from its lease (it heard from a quorum within the election
    /// timeout). Faster, but relies on bounded clock drift; requires `check_quorum`.
    LeaseBased,
}

/// What `Config::validate` refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot use {0} as id: 0 means no node")]
    InvalidId(NodeId),
    #[error("heartbeat tick must be greater than 0")]
    HeartbeatTick,
    #[error("election tick ({election}) must be greater than heartbeat tick ({heartbeat})")]
    ElectionTick { election: usize, heartbeat: usize },
    #[error("max inflight messages must be greater than 0")]
    MaxInflight,
    #[error("read_only_option LeaseBased requires check_quorum")]
    LeaseWithoutCheckQuorum,
}

/// Configuration of one Raft node, named as etcd-raft names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// This node's id; never 0.
    pub id: NodeId,
    /// Ticks a follower waits without hearing from a leader before campaigning. The
    /// actual timeout is randomized in `[election_tick, 2 * election_tick)`.
    pub election_tick: usize,
    /// Ticks between leader heartbeats.
    pub heartbeat_tick: usize,
    /// The last applied index, when restarting; entries up to it are not returned again.
    pub applied: u64,
    /// Bytes of entries in one append message (at least one entry is always sent).
    pub max_size_per_msg: u64,
    /// Append messages in flight to one follower in the replicate state.
    pub max_inflight_msgs: usize,
    /// Bytes of entries in flight to one follower (0 = unlimited).
    pub max_inflight_bytes: u64,
    /// The leader steps down when it has not heard from a quorum in an election timeout.
    pub check_quorum: bool,
    /// Run a pre-election that does not bump terms, so a rejoining node cannot disrupt.
    pub pre_vote: bool,
    pub read_only_option: ReadOnlyOption,
    /// Bytes of uncommitted entry payloads the leader accepts before refusing
    /// proposals (0 = unlimited).
    pub max_uncommitted_entries_size: u64,
    /// Followers drop proposals instead of forwarding them to the leader.
    pub disable_proposal_forwarding: bool,
    /// Committed entries handed out in one Ready (bytes; at least one entry).
    pub max_committed_size_per_ready: u64,
    /// Seed of the election-timeout randomizer (mixed with `id`), for reproducible runs.
    pub seed: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            id: NONE,
            election_tick: 10,
            heartbeat_tick: 1,
            applied: 0,
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 256,
            max_inflight_bytes: 0,
            check_quorum: false,
            pre_vote: false,
            read_only_option: ReadOnlyOption::Safe,
            max_uncommitted_entries_size: 0,
            disable_proposal_forwarding: false,
            max_committed_size_per_ready: 16 * 1024 * 1024,
            seed: 0,
        }
    }
}

impl Config {
    /// A config for node `id` with defaults elsewhere.
    pub fn new(id: NodeId) -> Config {
        Config {
            id,
            ..Default::default()
        }
    }

    /// Checks the settings make sense together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.id == NONE {
            return Err(ConfigError::InvalidId(self.id));
        }
        if self.heartbeat_tick == 0 {
            return Err(ConfigError::HeartbeatTick);
        }
        if self.election_tick <= self.heartbeat_tick {
            return Err(ConfigError::ElectionTick {
                election: self.election_tick,
                heartbeat: self.heartbeat_tick,
            });
        }
        if self.max_inflight_msgs == 0 {
            return Err(ConfigError::MaxInflight);
        }
        if self.read_only_option == ReadOnlyOption::LeaseBased && !self.check_quorum {
            return Err(ConfigError::LeaseWithoutCheckQuorum);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_refuses_nonsense() {
        assert_eq!(Config::default().validate(), Err(ConfigError::InvalidId(0)));
        let mut c = Config::new(1);
        assert_eq!(c.validate(), Ok(()));
        c.heartbeat_tick = 0;
        assert_eq!(c.validate(), Err(ConfigError::HeartbeatTick));
        c.heartbeat_tick = 10;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::ElectionTick { .. })
        ));
        c.heartbeat_tick = 1;
        c.max_inflight_msgs = 0;
        assert_eq!(c.validate(), Err(ConfigError::MaxInflight));
        c.max_inflight_msgs = 1;
        c.read_only_option = ReadOnlyOption::LeaseBased;
        assert_eq!(c.validate(), Err(ConfigError::LeaseWithoutCheckQuorum));
        c.check_quorum = true;
        assert_eq!(c.validate(), Ok(()));
    }
}
