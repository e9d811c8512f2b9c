//! Lease calls and the keep-alive helper.
//!
//! Guarantees: grant and revoke follow the write rule (retried only when provably not
//! sent); time-to-live, the lease list and a single keep-alive are retried on another
//! member. [`LeaseKeepAlive`] renews at a third of the TTL the server last granted,
//! moves to another member as soon as a stream breaks or a renewal goes unanswered
//! for that long, and ends with [`Error::LeaseExpired`] when the server says the lease
//! is gone (TTL ≤ 0) — never by silently stopping. A renewal refused for its token
//! (expired, or forgotten by a restarted member) authenticates again (shared with the
//! client's other calls) and reopens the stream on the same member; a token refused
//! again right after that renewal ends the keep-alive with the error.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use skiff_proto::etcdserverpb::lease_client::LeaseClient;
use skiff_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;

use crate::pool::Pool;
use crate::{Client, Error, Result, Safety};

impl Client {
    /// Grants a lease of `ttl` seconds (`id` 0: the server chooses the ID).
    pub async fn lease_grant(&self, ttl: i64, id: i64) -> Result<LeaseGrantResponse> {
        let req = LeaseGrantRequest { ttl, id };
        self.unary(Safety::NotIdempotent, |ch| async move {
            LeaseClient::new(ch).lease_grant(req).await
        })
        .await
    }

    /// Revokes lease `id`, deleting its keys.
    pub async fn lease_revoke(&self, id: i64) -> Result<LeaseRevokeResponse> {
        let req = LeaseRevokeRequest { id };
        self.unary(Safety::NotIdempotent, |ch| async move {
            LeaseClient::new(ch).lease_revoke(req).await
        })
        .await
    }

    /// Lease `id`'s remaining and granted TTL (and its keys if `keys`).
    pub async fn lease_time_to_live(&self, id: i64, keys: bool) -> Result<LeaseTimeToLiveResponse> {
        let req = LeaseTimeToLiveRequest { id, keys };
        self.unary(Safety::Idempotent, |ch| async move {
            LeaseClient::new(ch).lease_time_to_live(req).await
        })
        .await
    }

    /// Every lease.
    pub async fn lease_leases(&self) -> Result<LeaseLeasesResponse> {
        self.unary(Safety::Idempotent, |ch| async move {
            LeaseClient::new(ch)
                .lease_leases(LeaseLeasesRequest {})
                .await
        })
        .await
    }

    /// One renewal of lease `id` (a TTL ≤ 0 in the answer: the lease does not exist).
    pub async fn lease_keep_alive_once(&self, id: i64) -> Result<LeaseKeepAliveResponse> {
        self.unary(Safety::Idempotent, |ch| async move {
            let (tx, rx) = mpsc::channel(1);
            let _ = tx.send(LeaseKeepAliveRequest { id }).await;
            let resp = LeaseClient::new(ch)
                .lease_keep_alive(ReceiverStream::new(rx))
                .await?;
            let mut stream = resp.into_inner();
            match stream.message().await? {
                Some(m) => Ok(tonic::Response::new(m)),
                None => Err(tonic::Status::unavailable("keep-alive stream ended")),
            }
        })
        .await
    }

    /// Keeps lease `id` alive until the returned handle is dropped or the lease ends.
    pub fn lease_keep_alive(&self, id: i64) -> LeaseKeepAlive {
        let (tx, rx) = mpsc::channel(16);
        let stats = Arc::new(Stats::default());
        let task = tokio::spawn(keep_alive(
            self.pool.clone(),
            self.pin,
            id,
            tx,
            stats.clone(),
        ));
        LeaseKeepAlive {
            id,
            rx,
            stats,
            task,
        }
    }
}

#[derive(Default)]
struct Stats {
    renewals: AtomicU64,
    reconnects: AtomicU64,
    ttl: AtomicI64,
}

/// A running keep-alive of one lease (see the module docs). Dropping it stops renewing.
pub struct LeaseKeepAlive {
    id: i64,
    rx: mpsc::Receiver<Result<LeaseKeepAliveResponse>>,
    stats: Arc<Stats>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for LeaseKeepAlive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseKeepAlive")
            .field("id", &self.id)
            .field("renewals", &self.renewals())
            .finish()
    }
}

impl LeaseKeepAlive {
    /// The lease kept alive.
    pub fn id(&self) -> i64 {
        self.id
    }

    /// The next renewal answer; `Err(LeaseExpired)` once the lease is gone, then `None`.
    /// Answers not read are dropped (renewal never waits for the reader).
    pub async fn message(&mut self) -> Option<Result<LeaseKeepAliveResponse>> {
        self.rx.recv().await
    }

    /// Renewals answered so far.
    pub fn renewals(&self) -> u64 {
        self.stats.renewals.load(Ordering::Relaxed)
    }

    /// How many times the keep-alive moved to another stream after a failure.
    pub fn reconnects(&self) -> u64 {
        self.stats.reconnects.load(Ordering::Relaxed)
    }

    /// The TTL the last renewal granted (0 before the first one).
    pub fn ttl(&self) -> i64 {
        self.stats.ttl.load(Ordering::Relaxed)
    }
}

impl Drop for LeaseKeepAlive {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The renewal interval for a granted TTL: a third of it, at least 500 ms.
fn interval(ttl: i64) -> Duration {
    Duration::from_millis((ttl.max(0) as u64 * 1000 / 3).max(500))
}

/// How one keep-alive stream ended.
enum Ended {
    /// Broken, ended or unanswered: move to another member.
    Moved,
    /// The token was refused: authenticate again, then reopen on the same member.
    Refused(Error),
    /// Final: the caller has been told (or is gone).
    Done,
}

async fn keep_alive(
    pool: Arc<Pool>,
    pin: Option<usize>,
    id: i64,
    tx: mpsc::Sender<Result<LeaseKeepAliveResponse>>,
    stats: Arc<Stats>,
) {
    // The keep-alive stream carries the token (etcd 3.4 asks none for it, Skiff may).
    if let Err(e) = pool.ensure_token(None).await {
        let _ = tx.send(Err(e)).await;
        return;
    }
    let mut attempt: u32 = 0;
    let mut last = None;
    // The member to use next regardless of health (after a refused token).
    let mut again: Option<usize> = None;
    // Whether this stream's token was renewed just before it opened and no renewal
    // has been answered since (a second refusal then is final).
    let mut renewed = false;
    loop {
        if tx.is_closed() {
            return;
        }
        if attempt > 0 && (pin.is_some() || pool.all_down()) {
            tokio::time::sleep(pool.backoff(attempt)).await;
        }
        let i = again.take().or(pin).unwrap_or_else(|| pool.pick(last));
        let generation = pool.auth.generation();
        match one_stream(&pool, i, id, &tx, &stats, &mut renewed, &mut attempt).await {
            Ended::Done => return,
            Ended::Refused(e) => {
                if !pool.auth.enabled() || renewed {
                    // No credentials to renew with, or a fresh token refused too.
                    let _ = tx.send(Err(e)).await;
                    return;
                }
                tracing::debug!(id, "keep-alive token refused; authenticating again");
                match pool.renew(generation, None).await {
                    Ok(()) => {
                        renewed = true;
                        again = Some(i);
                        continue;
                    }
                    Err(e) if crate::watch::transient(&e) => {}
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                }
            }
            Ended::Moved => {
                tracing::debug!(endpoint = %pool.members[i].endpoint, id, "keep-alive stream lost; moving");
            }
        }
        pool.mark_down(i);
        attempt += 1;
        last = Some(i);
        stats.reconnects.fetch_add(1, Ordering::Relaxed);
    }
}

/// Renews lease `id` over one stream to member `i` until the stream fails.
async fn one_stream(
    pool: &Pool,
    i: usize,
    id: i64,
    tx: &mpsc::Sender<Result<LeaseKeepAliveResponse>>,
    stats: &Stats,
    renewed: &mut bool,
    attempt: &mut u32,
) -> Ended {
    let refused = |status: tonic::Status| {
        let e = Error::from_status(status);
        crate::auth::token_refused(&e).then_some(e)
    };
    let (req_tx, req_rx) = mpsc::channel(1);
    let opened = LeaseClient::new(pool.members[i].channel.clone())
        .lease_keep_alive(ReceiverStream::new(req_rx))
        .await;
    let mut stream = match opened {
        Ok(s) => s.into_inner(),
        Err(status) => return refused(status).map_or(Ended::Moved, Ended::Refused),
    };
    loop {
        let wait = interval(stats.ttl.load(Ordering::Relaxed).max(3));
        if req_tx.send(LeaseKeepAliveRequest { id }).await.is_err() {
            return Ended::Moved;
        }
        let answer = tokio::time::timeout(wait, stream.message()).await;
        match answer {
            Ok(Ok(Some(resp))) => {
                *renewed = false;
                *attempt = 0;
                pool.mark_up(i);
                if resp.ttl <= 0 {
                    let _ = tx.send(Err(Error::LeaseExpired(id))).await;
                    return Ended::Done;
                }
                stats.ttl.store(resp.ttl, Ordering::Relaxed);
                stats.renewals.fetch_add(1, Ordering::Relaxed);
                let next = interval(resp.ttl);
                match tx.try_send(Ok(resp)) {
                    Err(mpsc::error::TrySendError::Closed(_)) => return Ended::Done,
                    _ => tokio::time::sleep(next).await,
                }
            }
            Ok(Err(status))
                if Error::from_status(status.clone()).code() == Some(tonic::Code::NotFound) =>
            {
                let _ = tx.send(Err(Error::LeaseExpired(id))).await;
                return Ended::Done;
            }
            Ok(Err(status)) => return refused(status).map_or(Ended::Moved, Ended::Refused),
            // End of stream or no answer in time.
            _ => return Ended::Moved,
        }
    }
}
