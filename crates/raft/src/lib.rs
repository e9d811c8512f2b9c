//! Skiff's consensus core (documentation expanded below once scenarios land).

pub mod codec;
pub mod confchange;
pub mod config;
pub mod log_unstable;
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
