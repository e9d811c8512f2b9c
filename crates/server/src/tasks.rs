//! The member's background tasks, each a loop that ends when the member stops:
//! publishing this member's name and client URLs through Raft, revoking leases whose
//! deadline passed (the lease clock names them, Raft applies the revoke), lease
//! checkpoints (renewals made durable before they are answered), progress
//! notifications for watchers that asked for them, and the size gauges.

use std::sync::Arc;
use std::time::{Duration, Instant};

use skiff_api::EtcdError;
use skiff_proto::etcdserverpb::{LeaseCheckpoint, LeaseCheckpointRequest};
use skiff_proto::skiffpb::internal_request::Request as Req;
use tokio::sync::{mpsc, watch};

use crate::lease::{LeaseId, Renewal};
use crate::server::EtcdServer;

/// etcd's default progress-notify interval for watchers that asked for it.
const PROGRESS_NOTIFY_INTERVAL: Duration = Duration::from_secs(600);

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

/// Progress notifications and the size gauges.
pub async fn housekeeping(server: Arc<EtcdServer>, mut stop: watch::Receiver<bool>) {
    let mut last_progress = Instant::now();
    let mut interval = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let now = Instant::now();
        if now.duration_since(last_progress) >= PROGRESS_NOTIFY_INTERVAL {
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
