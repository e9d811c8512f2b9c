//! The member's background tasks, each a loop that ends when the member stops:
//! publishing this member's name and client URLs through Raft, revoking leases whose
//! deadline passed (the lease clock names them, Raft applies the revoke), lease
//! checkpoints (renewals made durable before they are answered), progress
//! notifications for watchers that asked for them, the size gauges, and automatic
//! compaction (`--auto-compaction-*`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use skiff_api::EtcdError;
use skiff_proto::etcdserverpb::{LeaseCheckpoint, LeaseCheckpointRequest};
use skiff_proto::skiffpb::internal_request::Request as Req;
use tokio::sync::{mpsc, watch};

use crate::config::AutoCompaction;
use crate::facade::KvApi;
use crate::lease::{LeaseId, Renewal};
use crate::server::EtcdServer;

/// Publishes this member's name and client URLs through Raft once there is a leader,
/// so every member can list them (etcd's publish); retried until it commits.
pub async fn publish_attributes(server: Arc<EtcdServer>, mut stop: watch::Receiver<bool>) {
    let attrs = skiff_proto::skiffpb::MemberAttributes {
        member_id: server.member_id,
        name: server.config.name.clone(),
        client_urls: server
            .config
            .advertise_client_urls
            .iter()
            .map(|u| u.to_string())
            .collect(),
    };
    loop {
        if server.leader() != 0 {
            let req = Req::MemberAttributes(attrs.clone());
            match tokio::time::timeout(server.request_timeout, server.propose(req)).await {
                Ok(Ok(_)) => {
                    tracing::info!(name = %attrs.name, "published member attributes");
                    return;
                }
                Ok(Err(e)) => tracing::debug!(error = %e, "publishing member attributes"),
                Err(_) => tracing::debug!("publishing member attributes timed out"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Proposes the revoke of every lease the clock reports expired.
pub async fn revoke_expired(
    server: Arc<EtcdServer>,
    mut expired: mpsc::UnboundedReceiver<LeaseId>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let id = tokio::select! {
            id = expired.recv() => match id {
                Some(id) => id,
                None => return,
            },
            _ = stop.wait_for(|s| *s) => return,
        };
        let s = server.clone();
        tokio::spawn(async move {
            let req = Req::LeaseRevoke(skiff_proto::etcdserverpb::LeaseRevokeRequest { id });
            match s.propose(req).await {
                Ok(_) | Err(EtcdError::LeaseNotFound) => {}
                Err(e) => {
                    tracing::warn!(lease = %format!("{id:x}"), error = %e, "revoking an expired lease failed")
                }
            }
        });
    }
}

/// Most renewals carried by one checkpoint entry.
const MAX_CHECKPOINTS_PER_ENTRY: usize = 1000;

/// Makes lease renewals durable before they are answered: every renewal waiting when
/// the previous checkpoint committed goes into one `LeaseCheckpoint` entry (so many
/// keep-alives share one Raft round), and each is answered once that entry commits.
pub async fn checkpoint_renewals(
    server: Arc<EtcdServer>,
    mut renewals: mpsc::UnboundedReceiver<Renewal>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let first = tokio::select! {
            r = renewals.recv() => match r {
                Some(r) => r,
                None => return,
            },
            _ = stop.wait_for(|s| *s) => return,
        };
        let mut batch = vec![first];
        while batch.len() < MAX_CHECKPOINTS_PER_ENTRY {
            match renewals.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let mut checkpoints: Vec<LeaseCheckpoint> = Vec::with_capacity(batch.len());
        for r in &batch {
            match checkpoints.iter_mut().find(|c| c.id == r.id) {
                Some(c) => c.remaining_ttl = r.ttl,
                None => checkpoints.push(LeaseCheckpoint {
                    id: r.id,
                    remaining_ttl: r.ttl,
                }),
            }
        }
        let req = Req::LeaseCheckpoint(LeaseCheckpointRequest { checkpoints });
        let result = server.propose_committed(req).await;
        if let Err(e) = &result {
            tracing::debug!(error = %e, renewals = batch.len(), "lease checkpoint not committed");
        }
        for r in batch {
            let _ = r.reply.send(result.map(|()| r.ttl));
        }
    }
}

/// Progress notifications (every `--experimental-watch-progress-notify-interval`,
/// checked at least twice an interval) and the size gauges.
pub async fn housekeeping(server: Arc<EtcdServer>, mut stop: watch::Receiver<bool>) {
    let progress_every = server.config.watch_progress_notify_interval;
    let mut last_progress = Instant::now();
    let tick = Duration::from_millis(500)
        .min(progress_every / 4)
        .max(Duration::from_millis(10));
    let mut interval = tokio::time::interval(tick);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let now = Instant::now();
        if !progress_every.is_zero() && now.duration_since(last_progress) >= progress_every {
            server.watchable.progress_notify();
            last_progress = now;
        }
        server
            .metrics
            .keys_total
            .set(server.store.index_len() as i64);
        if let Ok(size) = server.store.backend().size_bytes() {
            server.metrics.db_total_size_bytes.set(size as i64);
            server.metrics.db_total_size_in_use_bytes.set(size as i64);
        }
    }
}

/// etcd 3.4's automatic compaction (`--auto-compaction-mode` and `-retention`), run
/// by the leader only (the compaction goes through Raft, so every member compacts):
///
/// - periodic, retention `R`: the revision is sampled every `min(R, 1h) / 10`; the
///   first compaction comes `R` after start, then one every `min(R, 1h)`, each at
///   the revision sampled `R` earlier (everything older than `R` goes);
/// - revision, retention `N`: every 5 minutes, compact at `current - N`.
pub async fn auto_compact(
    server: Arc<EtcdServer>,
    mode: AutoCompaction,
    mut stop: watch::Receiver<bool>,
) {
    match mode {
        AutoCompaction::Periodic(retention) => {
            let every = retention.min(Duration::from_secs(3600));
            let sample_every = (every / 10).max(Duration::from_millis(10));
            let keep = (retention.as_nanos() / sample_every.as_nanos()) as usize + 1;
            let mut revs = std::collections::VecDeque::new();
            let mut last = Instant::now();
            let mut wait = retention;
            loop {
                revs.push_back(server.store.current_revision());
                if revs.len() > keep {
                    revs.pop_front();
                }
                tokio::select! {
                    _ = tokio::time::sleep(sample_every) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                if last.elapsed() < wait || server.leader() != server.member_id {
                    continue;
                }
                let Some(&rev) = revs.front() else { continue };
                if compact(&server, rev).await {
                    last = Instant::now();
                    wait = every;
                }
            }
        }
        AutoCompaction::Revision(keep) => {
            let mut previous = 0;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(300)) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                let rev = server.store.current_revision() - keep;
                if rev <= 0 || rev == previous || server.leader() != server.member_id {
                    continue;
                }
                if compact(&server, rev).await {
                    previous = rev;
                }
            }
        }
    }
}

/// One automatic compaction at `rev`; whether it is done (an already compacted
/// revision counts as done).
async fn compact(server: &EtcdServer, rev: i64) -> bool {
    if rev <= server.store.compact_revision() {
        return true;
    }
    let req = skiff_proto::etcdserverpb::CompactionRequest {
        revision: rev,
        physical: false,
    };
    match KvApi::compact(server, req).await {
        Ok(_) => {
            tracing::info!(revision = rev, "finished auto-compaction");
            true
        }
        Err(EtcdError::Compacted) => true,
        Err(e) => {
            tracing::warn!(revision = rev, error = %e, "auto-compaction failed");
            false
        }
    }
}
