//! Lease checkpoints: keep-alive renewals made durable through Raft before they are
//! answered (see the module doc of [`crate::lease`] for why).
//!
//! One `LeaseCheckpoint` entry is in flight at a time, and it carries every renewal
//! waiting when it is proposed. The cost of a checkpoint is mostly the entry's (the
//! fsyncs of the leader and the followers, an apply on every member), not the
//! renewals', so entries are spaced: the next one is proposed no sooner than
//! [`SPACING`] after the previous one, unless [`FULL_BATCH`] renewals are already
//! waiting. Guarantees:
//!
//! - a renewal that finds the checkpointer idle for [`SPACING`] is proposed at once (a
//!   client renewing a lease now and then sees no added latency);
//! - under a steady stream the member writes at most one checkpoint entry per
//!   [`SPACING`] (100 a second) unless batches are full, so the stream of 10,000
//!   leases kept alive at 500 a second costs about a hundred Raft entries a second, not
//!   five hundred (`bench/compare.sh`'s lease rows: before this, 2.39x etcd 3.4's CPU);
//! - many clients renewing in a loop are never slowed by the spacing once their
//!   renewals fill a batch, and never wait more than [`SPACING`] for it otherwise.
//!
//! The spacing only delays the answer: the leader's clock restarted the lease's
//! deadline when the renewal arrived, and the checkpoint carries the full TTL from the
//! moment each member applies it, so no deadline moves earlier.

use std::sync::Arc;
use std::time::Duration;

use skiff_proto::etcdserverpb::{LeaseCheckpoint, LeaseCheckpointRequest};
use skiff_proto::skiffpb::internal_request::Request as Req;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::Renewal;
use crate::server::EtcdServer;

/// The least time between two checkpoint entries while renewals trickle in.
pub const SPACING: Duration = Duration::from_millis(10);

/// Renewals that make a batch worth an entry of its own at once.
pub const FULL_BATCH: usize = 32;

/// Most renewals carried by one checkpoint entry.
const MAX_PER_ENTRY: usize = 1000;

/// Makes lease renewals durable before they are answered: each batch (see
/// [`next_batch`]) becomes one `LeaseCheckpoint` entry, and each renewal in it is
/// answered once that entry commits.
pub async fn checkpoint_renewals(
    server: Arc<EtcdServer>,
    mut renewals: mpsc::UnboundedReceiver<Renewal>,
    mut stop: watch::Receiver<bool>,
) {
    let mut last_proposed: Option<Instant> = None;
    loop {
        let batch = tokio::select! {
            batch = next_batch(&mut renewals, last_proposed) => match batch {
                Some(batch) => batch,
                None => return,
            },
            _ = stop.wait_for(|s| *s) => return,
        };
        last_proposed = Some(Instant::now());
        let req = Req::LeaseCheckpoint(LeaseCheckpointRequest {
            checkpoints: checkpoints_of(&batch),
        });
        let result = server.propose_committed(req).await;
        if let Err(e) = &result {
            tracing::debug!(error = %e, renewals = batch.len(), "lease checkpoint not committed");
        }
        for r in batch {
            let _ = r.reply.send(result.map(|()| r.ttl));
        }
    }
}

/// The renewals of the next checkpoint: waits for the first, then gathers what
/// arrives until [`SPACING`] after `last_proposed` has passed or [`FULL_BATCH`]
/// renewals are in hand (at most [`MAX_PER_ENTRY`]). `None` once the channel closed
/// with nothing waiting.
pub async fn next_batch(
    renewals: &mut mpsc::UnboundedReceiver<Renewal>,
    last_proposed: Option<Instant>,
) -> Option<Vec<Renewal>> {
    let mut batch = vec![renewals.recv().await?];
    let not_before = last_proposed.map(|at| at + SPACING);
    loop {
        while batch.len() < MAX_PER_ENTRY {
            match renewals.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let wait_until = not_before.filter(|at| Instant::now() < *at);
        let Some(at) = wait_until.filter(|_| batch.len() < FULL_BATCH) else {
            return Some(batch);
        };
        tokio::select! {
            r = renewals.recv() => match r {
                Some(r) => batch.push(r),
                None => return Some(batch),
            },
            _ = tokio::time::sleep_until(at) => {}
        }
    }
}

/// One checkpoint per lease, with the TTL of its latest renewal in the batch.
fn checkpoints_of(batch: &[Renewal]) -> Vec<LeaseCheckpoint> {
    let mut checkpoints: Vec<LeaseCheckpoint> = Vec::with_capacity(batch.len());
    for r in batch {
        match checkpoints.iter_mut().find(|c| c.id == r.id) {
            Some(c) => c.remaining_ttl = r.ttl,
            None => checkpoints.push(LeaseCheckpoint {
                id: r.id,
                remaining_ttl: r.ttl,
            }),
        }
    }
    checkpoints
}

#[cfg(test)]
mod tests {
    use tokio::sync::oneshot;

    use super::*;

    fn renewal(
        id: i64,
    ) -> (
        Renewal,
        oneshot::Receiver<Result<i64, skiff_api::EtcdError>>,
    ) {
        let (reply, rx) = oneshot::channel();
        (Renewal { id, ttl: 60, reply }, rx)
    }

    fn send(tx: &mpsc::UnboundedSender<Renewal>, id: i64) {
        let (r, _rx) = renewal(id);
        tx.send(r).unwrap();
    }

    /// An idle checkpointer proposes the first renewal at once: no added latency.
    #[tokio::test(start_paused = true)]
    async fn a_renewal_after_a_quiet_spell_is_not_delayed() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        send(&tx, 1);
        let start = Instant::now();
        let batch = next_batch(&mut rx, None).await.unwrap();
        assert_eq!(batch.len(), 1);
        assert_eq!(Instant::now(), start);

        send(&tx, 2);
        let long_ago = Instant::now() - SPACING * 3;
        let batch = next_batch(&mut rx, Some(long_ago)).await.unwrap();
        assert_eq!(batch.len(), 1);
        assert_eq!(Instant::now(), start);
    }

    /// Renewals 2 ms apart right after a proposal wait out the spacing together.
    #[tokio::test(start_paused = true)]
    async fn a_trickle_of_renewals_shares_one_entry_per_spacing() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let proposed = Instant::now();
        let sender = tokio::spawn(async move {
            for id in 0..20 {
                send(&tx, id);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
        let mut batches = Vec::new();
        let mut last = Some(proposed);
        while let Some(batch) = next_batch(&mut rx, last).await {
            let now = Instant::now();
            if let Some(prev) = last {
                assert!(
                    now >= prev + SPACING,
                    "proposed {:?} after the last",
                    now - prev
                );
            }
            last = Some(now);
            batches.push(batch.len());
        }
        sender.await.unwrap();
        assert_eq!(batches.iter().sum::<usize>(), 20);
        // 40 ms of renewals, one entry per 10 ms at most.
        assert!(batches.len() <= 5, "{batches:?}");
        assert!(batches.iter().all(|n| *n >= 4), "{batches:?}");
    }

    /// A full batch goes at once, however recent the last proposal.
    #[tokio::test(start_paused = true)]
    async fn a_full_batch_is_not_held_back() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        for id in 0..(FULL_BATCH as i64 + 5) {
            send(&tx, id);
        }
        let start = Instant::now();
        let batch = next_batch(&mut rx, Some(start)).await.unwrap();
        assert_eq!(batch.len(), FULL_BATCH + 5);
        assert_eq!(Instant::now(), start);
    }

    /// The same lease renewed twice in a batch is checkpointed once, with its last TTL.
    #[test]
    fn one_checkpoint_per_lease() {
        let (mut a, _ra) = renewal(7);
        let (b, _rb) = renewal(8);
        let (mut c, _rc) = renewal(7);
        a.ttl = 10;
        c.ttl = 30;
        let cps = checkpoints_of(&[a, b, c]);
        assert_eq!(cps.len(), 2);
        assert_eq!((cps[0].id, cps[0].remaining_ttl), (7, 30));
        assert_eq!((cps[1].id, cps[1].remaining_ttl), (8, 60));
    }
}
