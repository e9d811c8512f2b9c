//! The member's background tasks, each a loop that ends when the member stops:
//! publishing this member's name and client URLs through Raft, revoking leases whose
//! deadline passed (the lease clock names them, Raft applies the revoke), progress
//! notifications for watchers that asked for them, the size gauges, automatic
//! compaction (`--auto-compaction-*`), the election tick advance at boot, and the
//! watch on the backend's failure (a failed write-back stops the member).

use std::sync::Arc;
use std::time::{Duration, Instant};

use skiff_api::EtcdError;
use skiff_proto::skiffpb::internal_request::Request as Req;
use tokio::sync::{mpsc, watch};

use crate::config::AutoCompaction;
use crate::facade::KvApi;
use crate::inputs::NodeInput;
use crate::lease::LeaseId;
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

/// etcd's `--initial-election-tick-advance` (on by default): once this member's streams
/// to more than one peer are up (checked every 50 ms for up to 5 s, etcd's
/// `ConnReadTimeout`), Raft is ticked `election_ticks - 2` times at once, so a cluster
/// restarted together elects a leader after a few heartbeats instead of a whole
/// election timeout; the two ticks left give a live leader's heartbeat time to arrive
/// (and PreVote keeps a member that campaigns anyway from disturbing it). A member
/// alone campaigns at once already (see `member`), and one that reaches fewer peers
/// is left as it is, as in etcd.
pub async fn advance_election_ticks(
    server: Arc<EtcdServer>,
    election_ticks: u64,
    mut stop: watch::Receiver<bool>,
) {
    if server.members_now().len() < 2 {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if server.peers.active() > 1 {
            let ticks = election_ticks.saturating_sub(2);
            if server.send(NodeInput::AdvanceTicks(ticks)).is_ok() {
                tracing::info!(ticks, "advanced the election ticks: peers are reachable");
            }
            return;
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
            let in_use = server.store.backend().in_use_bytes().min(size);
            server.metrics.db_total_size_in_use_bytes.set(in_use as i64);
        }
    }
}

/// Stops the member (through `fail`) once the backend records a failed write-back or
/// commit ([`skiff_storage::backend::Backend::failure`]): the file is not written again,
/// and the member must not go on serving and voting on a disk it can no longer trust
/// (fsyncgate). A failure of an apply's commit stops the apply thread itself; this
/// catches the maintenance thread's write-backs and durable commits, which fail
/// nowhere else while no write arrives. Polled every 100 ms (an atomic load).
pub async fn watch_backend(
    store: Arc<skiff_storage::mvcc::KvStore>,
    fail: impl Fn(String) + Send + 'static,
    mut stop: watch::Receiver<bool>,
) {
    let mut interval = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if let Some(reason) = store.backend().failure() {
            fail(format!("backend failed: {reason}"));
            return;
        }
    }
}

/// etcd 3.4's automatic compaction (`--auto-compaction-mode` and `-retention`), run
/// by the leader only (the compaction goes through Raft, so every member compacts):
///
/// - periodic, retention `R`: the revision is sampled every `min(R, 1h) / 10`; the
///   first compaction comes `R` after start, then one every `min(R, 1h)`, each at
///   the revision sampled `R` earlier (everything older than `R` goes);
/// - revision, retention `N`: every 5 minutes, compact at `current - N`
///   ([`RevisionCompactor`]; compared with etcd 3.4 outside CI by
///   `scripts/auto_compaction_revision.sh`, which needs more than 10 minutes).
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
            let mut compactor = RevisionCompactor::new(keep);
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(REVISION_CHECK_INTERVAL) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                compactor.tick(server.as_ref()).await;
            }
        }
    }
}

/// How often the revision compactor looks (etcd 3.4's `revInterval`: 5 minutes).
pub const REVISION_CHECK_INTERVAL: Duration = Duration::from_secs(300);

/// What the revision compactor asks of the member.
#[tonic::async_trait]
trait Compactable: Send + Sync {
    fn current_revision(&self) -> i64;
    fn is_leader(&self) -> bool;
    /// Compacts at `rev` through Raft; whether it is done (already compacted counts).
    async fn compact_at(&self, rev: i64) -> bool;
}

#[tonic::async_trait]
impl Compactable for EtcdServer {
    fn current_revision(&self) -> i64 {
        self.store.current_revision()
    }
    fn is_leader(&self) -> bool {
        self.leader() == self.member_id
    }
    async fn compact_at(&self, rev: i64) -> bool {
        compact(self, rev).await
    }
}

/// etcd 3.4's revision compactor (`compactor.Revision`), one look at a time: at each
/// look, on the leader only (it is paused elsewhere), compact at `current - retention`
/// unless that is not positive or is the revision of the last successful compaction; a
/// failed compaction is tried again at the next look, at the revision of then.
struct RevisionCompactor {
    retention: i64,
    previous: i64,
}

impl RevisionCompactor {
    fn new(retention: i64) -> RevisionCompactor {
        RevisionCompactor {
            retention,
            previous: 0,
        }
    }

    /// One look; the revision compacted at, if it compacted.
    async fn tick(&mut self, member: &impl Compactable) -> Option<i64> {
        if !member.is_leader() {
            return None;
        }
        let rev = member.current_revision() - self.retention;
        if rev <= 0 || rev == self.previous {
            return None;
        }
        tracing::info!(
            revision = rev,
            retention = self.retention,
            "starting auto-compaction"
        );
        if member.compact_at(rev).await {
            self.previous = rev;
            Some(rev)
        } else {
            None
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
    use std::sync::Mutex;

    use super::*;

    /// A member whose revision, leadership and compaction outcome the test sets.
    #[derive(Default)]
    struct Fake {
        revision: AtomicI64,
        follower: AtomicBool,
        failing: AtomicBool,
        asked: Mutex<Vec<i64>>,
    }

    #[tonic::async_trait]
    impl Compactable for Fake {
        fn current_revision(&self) -> i64 {
            self.revision.load(Ordering::SeqCst)
        }
        fn is_leader(&self) -> bool {
            !self.follower.load(Ordering::SeqCst)
        }
        async fn compact_at(&self, rev: i64) -> bool {
            self.asked.lock().unwrap().push(rev);
            !self.failing.load(Ordering::SeqCst)
        }
    }

    /// etcd 3.4's documented revision-mode timeline, look by look.
    #[tokio::test]
    async fn the_revision_compactor_follows_etcds_rules() {
        let m = Fake::default();
        let mut c = RevisionCompactor::new(10);
        let at = |rev: i64| m.revision.store(rev, Ordering::SeqCst);
        // Fewer revisions than the retention: nothing to compact.
        at(8);
        assert_eq!(c.tick(&m).await, None);
        at(10);
        assert_eq!(c.tick(&m).await, None);
        // current - retention.
        at(35);
        assert_eq!(c.tick(&m).await, Some(25));
        // No writes since: the same revision is not compacted twice.
        assert_eq!(c.tick(&m).await, None);
        // Paused while not the leader, resumed at the revision of then.
        at(50);
        m.follower.store(true, Ordering::SeqCst);
        assert_eq!(c.tick(&m).await, None);
        m.follower.store(false, Ordering::SeqCst);
        assert_eq!(c.tick(&m).await, Some(40));
        // A failed compaction is tried again at the next look.
        at(61);
        m.failing.store(true, Ordering::SeqCst);
        assert_eq!(c.tick(&m).await, None);
        m.failing.store(false, Ordering::SeqCst);
        at(62);
        assert_eq!(c.tick(&m).await, Some(52));
        assert_eq!(*m.asked.lock().unwrap(), vec![25, 40, 51, 52]);
        assert_eq!(REVISION_CHECK_INTERVAL, Duration::from_secs(300));
    }
}
