//! Linearizable reads waiting for a ReadIndex, batched: all reads that arrive in one
//! turn of the node loop share one ReadIndex request (one heartbeat round).
//!
//! Guarantees: a context is unique in the cluster and never reused (etcd #20418); a
//! batch unanswered for [`READ_INDEX_RETRY`] is asked again under a new context; a
//! leader change re-asks every batch; when the loop stops every waiter is answered.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use skiff_api::EtcdError;
use skiff_raft::{MemStorage, RawNode};
use tokio::sync::oneshot;

/// Reads waiting for a ReadIndex, by the context of their batch.
///
/// A context is this member's ID followed by a counter, so it is unique in the
/// cluster: the leader keys pending ReadIndex requests by context and ignores a
/// duplicate, so two followers using the same bare counter would have one of their
/// batches silently dropped. A batch not answered within [`READ_INDEX_RETRY`] (its
/// request or the heartbeat round was lost) is asked again under a new context, as
/// etcd retries; a retry never reuses a context (etcd #20418).
pub(super) struct PendingReads {
    member_id: u64,
    next_ctx: u64,
    by_ctx: HashMap<u64, (Instant, Vec<ReadWaiter>)>,
}

/// Where a linearizable read learns its read index.
pub type ReadWaiter = oneshot::Sender<Result<u64, EtcdError>>;

/// How long a ReadIndex batch may wait before it is asked again.
const READ_INDEX_RETRY: Duration = Duration::from_millis(500);

impl PendingReads {
    pub(super) fn new(member_id: u64) -> PendingReads {
        PendingReads {
            member_id,
            next_ctx: 0,
            by_ctx: HashMap::new(),
        }
    }

    pub(super) fn issue(&mut self, raw: &mut RawNode<MemStorage>, waiters: Vec<ReadWaiter>) {
        if waiters.is_empty() {
            return;
        }
        self.next_ctx += 1;
        let ctx = self.next_ctx;
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.member_id.to_be_bytes());
        bytes[8..].copy_from_slice(&ctx.to_be_bytes());
        match raw.read_index(Bytes::copy_from_slice(&bytes)) {
            Ok(()) => {
                self.by_ctx.insert(ctx, (Instant::now(), waiters));
            }
            Err(e) => {
                tracing::debug!(error = %e, "read index refused");
                for w in waiters {
                    let _ = w.send(Err(EtcdError::NoLeader));
                }
            }
        }
    }

    pub(super) fn resolve(&mut self, ctx: &[u8], index: u64) {
        let Ok(raw) = <[u8; 16]>::try_from(ctx) else {
            return;
        };
        let (member, counter) = raw.split_at(8);
        if member != self.member_id.to_be_bytes() {
            return;
        }
        let counter = u64::from_be_bytes(counter.try_into().expect("8 bytes"));
        if let Some((_, waiters)) = self.by_ctx.remove(&counter) {
            for w in waiters {
                let _ = w.send(Ok(index));
            }
        }
    }

    /// After a leader change the old requests may never be answered: ask again,
    /// each batch under a new context.
    pub(super) fn reissue_all(&mut self, raw: &mut RawNode<MemStorage>) {
        let old: Vec<_> = std::mem::take(&mut self.by_ctx).into_values().collect();
        for (_, waiters) in old {
            let live: Vec<_> = waiters.into_iter().filter(|w| !w.is_closed()).collect();
            self.issue(raw, live);
        }
    }

    /// Asks again for batches waiting longer than [`READ_INDEX_RETRY`].
    pub(super) fn retry_stale(&mut self, raw: &mut RawNode<MemStorage>) {
        let now = Instant::now();
        let stale: Vec<u64> = self
            .by_ctx
            .iter()
            .filter(|(_, (at, _))| now.duration_since(*at) >= READ_INDEX_RETRY)
            .map(|(ctx, _)| *ctx)
            .collect();
        for ctx in stale {
            if let Some((_, waiters)) = self.by_ctx.remove(&ctx) {
                let live: Vec<_> = waiters.into_iter().filter(|w| !w.is_closed()).collect();
                if !live.is_empty() {
                    tracing::debug!(
                        waiters = live.len(),
                        "ReadIndex not answered in time, retrying"
                    );
                    self.issue(raw, live);
                }
            }
        }
    }

    pub(super) fn fail_all(&mut self, err: EtcdError) {
        for (_, (_, waiters)) in self.by_ctx.drain() {
            for w in waiters {
                let _ = w.send(Err(err));
            }
        }
    }
}
