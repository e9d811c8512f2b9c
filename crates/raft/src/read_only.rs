//! ReadIndex bookkeeping on the leader: requests waiting for a quorum of heartbeat
//! acknowledgements (the Safe option), kept in arrival order so one acknowledged
//! heartbeat round answers every request queued before it.

use std::collections::{BTreeSet, HashMap, VecDeque};

use bytes::Bytes;

use crate::config::ReadOnlyOption;
use crate::types::{Message, NodeId};

/// A linearizable read point: once the application has applied `index`, a read of the
/// state machine answers the request identified by `request_ctx`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReadState {
    pub index: u64,
    pub request_ctx: Bytes,
}

#[derive(Debug, Clone)]
pub struct ReadIndexStatus {
    pub req: Message,
    pub index: u64,
    pub acks: BTreeSet<NodeId>,
}

#[derive(Debug, Clone, Default)]
pub struct ReadOnly {
    pub option: ReadOnlyOption,
    pending: HashMap<Bytes, ReadIndexStatus>,
    queue: VecDeque<Bytes>,
}

impl ReadOnly {
    pub fn new(option: ReadOnlyOption) -> ReadOnly {
        ReadOnly {
            option,
            ..Default::default()
        }
    }

    /// Queues a read request `req` (its context is `entries[0].data`) at commit index
    /// `index`. A duplicate context is ignored.
    pub fn add_request(&mut self, index: u64, req: Message) {
        let ctx = req.entries[0].data.clone();
        if self.pending.contains_key(&ctx) {
            return;
        }
        self.pending.insert(
            ctx.clone(),
            ReadIndexStatus {
                req,
                index,
                acks: BTreeSet::new(),
            },
        );
        self.queue.push_back(ctx);
    }

    /// Records that `id` acknowledged the heartbeat carrying `ctx`; returns the acks so
    /// far, or None for an unknown context.
    pub fn recv_ack(&mut self, id: NodeId, ctx: &[u8]) -> Option<&BTreeSet<NodeId>> {
        let rs = self.pending.get_mut(ctx)?;
        rs.acks.insert(id);
        Some(&rs.acks)
    }

    /// Dequeues every request up to and including the one with context `ctx`: a quorum
    /// acknowledged a heartbeat sent after all of them were queued.
    pub fn advance(&mut self, ctx: &[u8]) -> Vec<ReadIndexStatus> {
        let Some(pos) = self.queue.iter().position(|c| c.as_ref() == ctx) else {
            return Vec::new();
        };
        self.queue
            .drain(..=pos)
            .filter_map(|c| self.pending.remove(&c))
            .collect()
    }

    /// The context of the newest pending request: heartbeats carry it.
    pub fn last_pending_request_ctx(&self) -> Option<Bytes> {
        self.queue.back().cloned()
    }

    pub fn pending_count(&self) -> usize {
        self.queue.len()
    }
}
