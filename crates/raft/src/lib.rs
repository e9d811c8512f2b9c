//! # skiff-raft: Skiff's consensus core
//!
//! A Raft library in the style of etcd-raft: **pure and deterministic**. It does no
//! I/O, reads no clock, starts no threads and has no async: time enters as
//! [`RawNode::tick`], input as [`RawNode::step`] (and `propose`, `read_index`, ...),
//! and everything the application must do leaves through [`RawNode::ready`] and is
//! acknowledged with [`RawNode::advance`]. The same inputs always produce the same
//! outputs (election timeouts are randomized from [`Config::seed`] and the node id),
//! which is what makes the scripted and simulated tests reproducible.
//!
//! ## The parts
//! - [`Config`] and its `validate()`; [`ReadOnlyOption`] (`Safe` ReadIndex with a
//!   heartbeat round, or `LeaseBased`, refused without `check_quorum`).
//! - [`Storage`] (what Raft reads of the durable log) and [`MemStorage`];
//!   [`log_unstable::Unstable`] (accepted but not yet persisted);
//!   [`raft_log::RaftLog`] (one view over both, with commit and applied indexes).
//! - [`Raft`]: follower / pre-candidate / candidate / leader; randomized election
//!   timeout in `[election_tick, 2 * election_tick)`; PreVote; check quorum with a
//!   leader lease (vote requests are ignored while a leader is heard from); an empty
//!   entry appended on election; commit only by counting entries of the current term;
//!   fast conflict backtracking (one round trip per divergent term); proposal
//!   batching; leader transfer (`MsgTimeoutNow`, abandoned after an election timeout);
//!   a removed leader steps down and hands over to an up-to-date voter.
//! - [`tracker`]: per-follower [`tracker::Progress`] in probe / replicate / snapshot
//!   states with an inflight window (count and bytes); [`quorum`] arithmetic for
//!   majority and joint configurations; [`confchange`] for simple and joint
//!   (`ConfChangeV2`, auto-leave or explicit) membership changes and learners.
//! - Log compaction and snapshots: `MemStorage::compact` / `create_snapshot`, a leader
//!   sends `MsgSnap` when a follower needs compacted entries, the follower restores it,
//!   and the transport reports the outcome with `report_snapshot`.
//! - Reads: [`RawNode::read_index`] with a caller-chosen context (never reuse one on a
//!   retry: etcd #20418); deferred until the leader has committed in its term;
//!   forwarded from followers; answered as [`ReadState`]s in `Ready`.
//! - [`codec`]: a bounds-checked binary encoding of every type, for the WAL and the
//!   peer transport.
//!
//! ## Durability contract (what `Ready` asks of the application)
//! See [`raw_node`] for the full loop. In short: `messages` may be sent at once;
//! `snapshot`, `entries` and `hard_state` are persisted with one fsync; only then are
//! `persisted_messages` sent (votes, vote and append responses) and
//! `committed_entries` applied. A leader counts its own log toward a quorum only for
//! entries the application has reported persisted (through `advance`), so replication
//! overlaps the leader's own fsync (Raft thesis §10.2.1) and an acknowledged entry is
//! still on a quorum of disks if the leader crashes right after acknowledging it.
//!
//! ## How it is tested
//! - Unit tests per module (log, storage, progress, quorum, conf changes, codec).
//! - Scripted interaction tests (`tests/interaction.rs`, scenarios in
//!   `tests/scripts/*.txt`, each a list of commands with the exact trace expected;
//!   `UPDATE_GOLDENFILES=1` rewrites them). The scenarios:
//!   - `001_single_node`
//!   - `002_three_node_election`
//!   - `003_split_vote`
//!   - `004_prevote_rejoin`
//!   - `005_no_prevote_disruption`
//!   - `006_check_quorum_step_down`
//!   - `007_figure7_divergent_logs`
//!   - `008_figure8_old_term_not_committed`
//!   - `009_snapshot_catch_up`
//!   - `010_read_index_deferred`
//!   - `011_read_index_partitioned_old_leader`
//!   - `012_learner_promotion`
//!   - `013_joint_add_remove`
//!   - `014_joint_replace_leader`
//!   - `015_transfer_leader`
//!   - `016_transfer_leader_abort`
//!   - `017_proposal_dropped_no_leader`
//!   - `018_uncommitted_size_limit`
//!   - `019_follower_forwards_proposal`
//!   - `020_follower_read_index`
//!   - `021_lease_read`
//!   - `022_check_quorum_lease_ignores_vote`
//!   - `023_heartbeat_commit`
//!   - `024_fast_backtracking`
//!   - `025_restart_loses_unstable`
//!   - `026_restart_keeps_term_and_vote`
//!   - `027_one_conf_change_at_a_time`
//!   - `028_explicit_joint`
//!   - `029_remove_follower`
//!   - `030_demote_voter_via_joint`
//!   - `031_vote_rejected_stale_log`
//!   - `032_candidate_steps_down_on_append`
//!   - `033_stale_leader_learns_term`
//!   - `034_snapshot_failure_report`
//!   - `035_unreachable_to_probe`
//!   - `036_inflight_window`
//!   - `037_learner_never_campaigns`
//!   - `038_pre_vote_election`
//!   - `039_campaign_waits_for_conf_apply`
//!   - `040_read_index_single_node`
//!   - `041_duplicate_messages`
//!   - `042_minority_cannot_commit`
//!   - `043_transfer_to_learner_ignored`
//!   - `044_snapshot_to_new_node`
//!   - `045_vote_survives_restart`
//! - A seeded simulator (`tests/simulation.rs`) of 3- and 5-node clusters with
//!   drops, duplicates, reordering, partitions, crashes that lose unpersisted state,
//!   membership changes, compaction and snapshots, checking election safety, log
//!   matching, leader completeness, state machine safety, membership agreement,
//!   monotonic commit and linearizable ReadIndex after every step, and liveness after
//!   healing. `SKIFF_SIM_SEEDS=N` runs N seeds (default 1000), `SKIFF_SIM_SEED=S`
//!   replays one. Planted bugs (feature `planted-bugs`, enabled only for this crate's
//!   tests) prove the checks fail: voting without the log check is caught by the
//!   simulator, committing an old-term entry by counting by a step-by-step Figure 8.
//! - A benchmark: `cargo bench -p skiff-raft --bench throughput`.

pub mod codec;
pub mod confchange;
pub mod config;
pub mod log_unstable;
pub mod peer_check;
pub mod quorum;
pub mod raft;
pub mod raft_log;
pub mod raw_node;
pub mod read_only;
pub mod storage;
pub mod tracker;
pub mod types;
mod util;

pub use codec::{CodecError, Decode, Encode};
pub use config::{Config, ConfigError, ReadOnlyOption};
#[cfg(feature = "planted-bugs")]
pub use raft::PlantedBug;
pub use raft::{Raft, RaftError, SoftState, StateRole, CAMPAIGN_TRANSFER};
pub use raw_node::{may_send_before_persist, RawNode, Ready, SnapshotStatus, Status};
pub use read_only::ReadState;
pub use storage::{MemStorage, RaftState, Storage, StorageError};
pub use types::*;
