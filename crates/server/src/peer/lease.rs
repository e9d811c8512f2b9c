//! Lease requests that only the leader can answer (keep-alive, time-to-live: only its
//! lessor tracks expiry), forwarded by followers over the peer protocol.
//!
//! The leader side is a [`LeaseHandler`] the member installs on its transport; the
//! follower side is the [`Forwarder`], which keeps one client per leader so a stream
//! of keep-alives reuses one connection.
//!
//! Keep-alives travel over one long-lived `LeaseRenewStream` to the leader
//! ([`RenewStream`]): a request names its sequence number and its answer repeats it, so
//! a renewal costs one message each way instead of a gRPC call (a new HTTP/2 stream,
//! its headers and trailers, and a task on the leader). With 100 clients renewing
//! through all three members, a unary call per forwarded keep-alive made each follower
//! spend 18-19 ms of CPU per 1000 keep-alives, against 27 for the leader, which
//! serves a third of them itself. The stream is opened on the first renewal for a
//! leader and closed when Raft reports another leader ([`Forwarder::leader_is`], from
//! the node loop through the transport), this member included: the former leader
//! answers what it was sent and ends the stream, so a member that takes over
//! leadership keeps no idle stream to its predecessor (it renews with its own clock).
//! A renewal that sees the new leader before that report opens the new stream itself
//! and closes the former one the same way. When a stream breaks, the renewals waiting
//! on it fail as a lost connection (etcd's words) and the next one opens a new
//! stream. A renewal that finds its stream closed before it could be sent (replaced or
//! broken in between) reached no leader, so it goes again on a fresh route. A leader
//! that answers the stream with `Unimplemented`, a Skiff from before it (rolling
//! upgrade), is asked with unary calls, and the stream is tried again after
//! [`UNARY_RETRY`]. Time-to-live queries, rare, stay unary calls.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use skiff_proto::skiffpb::peer_client::PeerClient;
use skiff_proto::skiffpb::{LeaseRenewRequest, LeaseRenewResponse, LeaseTtlRequest};
use skiff_raft::NodeId;
use tokio::sync::mpsc;
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};

use super::{connect_one, PeerConfig};
use crate::wait::Wait;

/// The leader's answers to forwarded lease requests.
#[tonic::async_trait]
pub trait LeaseHandler: Send + Sync {
    /// Renews lease `id`: its TTL in seconds, 0 if it does not exist, or an error
    /// (e.g. `etcdserver: not leader` when leadership moved meanwhile).
    async fn renew(&self, id: i64) -> Result<i64, Status>;
    /// (remaining seconds or -1, granted TTL, attached keys when asked).
    async fn time_to_live(&self, id: i64, keys: bool) -> Result<(i64, i64, Vec<Bytes>), Status>;
}

/// The remaining TTL of a forwarded time-to-live query.
pub struct TimeToLive {
    pub ttl: i64,
    pub granted_ttl: i64,
    pub keys: Vec<Bytes>,
}

/// How long a leader that does not serve `LeaseRenewStream` is asked with unary calls
/// before the stream is tried again (it may have been upgraded meanwhile).
pub const UNARY_RETRY: Duration = Duration::from_secs(30);

/// What a renewal waiting on a stream that broke is answered (etcd's words for a
/// request whose connection to the leader was lost).
fn connection_lost() -> Status {
    Status::unavailable("etcdserver: request timed out, possibly due to connection lost")
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section below leaves its data whole; keep going after a panic.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Forwards lease requests to the leader.
pub struct Forwarder {
    pub(super) cfg: Arc<PeerConfig>,
    clients: tokio::sync::Mutex<HashMap<NodeId, PeerClient<Channel>>>,
    renewals: Mutex<Renewals>,
    /// Held while a stream is opened, so concurrent renewals open one.
    opening: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Renewals {
    /// The stream to the leader renewals last went to.
    stream: Option<(NodeId, Arc<RenewStream>)>,
    /// Leaders that answered the stream with `Unimplemented`, and when.
    unary_since: HashMap<NodeId, Instant>,
}

/// Which way a renewal goes.
enum Route {
    Stream(Arc<RenewStream>),
    Unary,
}

impl Renewals {
    /// The way to `leader` if it is known without opening anything.
    fn route(&self, leader: NodeId) -> Option<Route> {
        if let Some((to, stream)) = &self.stream {
            if *to == leader && stream.is_open() {
                return Some(Route::Stream(stream.clone()));
            }
        }
        match self.unary_since.get(&leader) {
            Some(since) if since.elapsed() < UNARY_RETRY => Some(Route::Unary),
            _ => None,
        }
    }
}

impl Forwarder {
    pub(super) fn new(cfg: Arc<PeerConfig>) -> Forwarder {
        Forwarder {
            cfg,
            clients: tokio::sync::Mutex::new(HashMap::new()),
            renewals: Mutex::new(Renewals::default()),
            opening: tokio::sync::Mutex::new(()),
        }
    }

    pub(super) async fn client(
        &self,
        leader: NodeId,
        urls: &[String],
    ) -> Result<PeerClient<Channel>, Status> {
        if let Some(c) = self.clients.lock().await.get(&leader) {
            return Ok(c.clone());
        }
        let mut last = Status::unavailable("etcdserver: no leader");
        for url in urls {
            match connect_one(&self.cfg, leader, url).await {
                Ok(c) => {
                    self.clients.lock().await.insert(leader, c.clone());
                    return Ok(c);
                }
                Err(e) => {
                    tracing::debug!(leader = format!("{leader:x}"), error = %e, "cannot reach the leader");
                    last = Status::unavailable(
                        "etcdserver: request timed out, possibly due to connection lost",
                    );
                }
            }
        }
        Err(last)
    }

    /// Forgets the client of `leader` after a connection failure, so the next call
    /// reconnects; passes the outcome through.
    pub(super) async fn forget_on_failure<T>(
        &self,
        leader: NodeId,
        r: Result<T, Status>,
    ) -> Result<T, Status> {
        if let Err(e) = &r {
            if matches!(e.code(), tonic::Code::Unavailable | tonic::Code::Unknown) {
                self.clients.lock().await.remove(&leader);
            }
        }
        r
    }

    /// Renews lease `id` at `leader`: over the renewal stream, or a unary call if the
    /// leader does not serve it (see the module docs).
    pub async fn renew(&self, leader: NodeId, urls: &[String], id: i64) -> Result<i64, Status> {
        // A stream closed between the lookup and the send (replaced for a new leader,
        // or just broken) took nothing: the renewal goes again, on a fresh route.
        for _ in 0..2 {
            match self.route(leader, urls).await? {
                Route::Stream(stream) => {
                    match stream
                        .renew(self.cfg.cluster_id, self.cfg.local_id, id)
                        .await
                    {
                        Renewed::Answered(r) => return r,
                        Renewed::Unsent => continue,
                    }
                }
                Route::Unary => return self.renew_unary(leader, urls, id).await,
            }
        }
        Err(connection_lost())
    }

    /// Raft now sees `leader` (0: none known) as the leader: a renewal stream to any
    /// other member is closed (it answers what it was sent, then ends). Without a
    /// leader the stream stays, as the same leader may well be back.
    pub fn leader_is(&self, leader: NodeId) {
        let former = lock(&self.renewals)
            .stream
            .take_if(|(to, _)| leader != 0 && *to != leader);
        if let Some((former, stream)) = former {
            tracing::debug!(
                former = format!("{former:x}"),
                leader = format!("{leader:x}"),
                "the leader changed: closing the renewal stream to the former one"
            );
            stream.close_requests();
        }
    }

    /// Whether a renewal stream to `leader` is open (tests).
    pub fn streams_to(&self, leader: NodeId) -> bool {
        matches!(lock(&self.renewals).route(leader), Some(Route::Stream(_)))
    }

    async fn route(&self, leader: NodeId, urls: &[String]) -> Result<Route, Status> {
        if let Some(route) = lock(&self.renewals).route(leader) {
            return Ok(route);
        }
        let _opening = self.opening.lock().await;
        if let Some(route) = lock(&self.renewals).route(leader) {
            return Ok(route);
        }
        let mut client = self.client(leader, urls).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        let opened = client
            .lease_renew_stream(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
            .await;
        match opened {
            Ok(answers) => {
                let stream = Arc::new(RenewStream::new(tx));
                tokio::spawn(read_answers(answers.into_inner(), stream.clone()));
                let mut renewals = lock(&self.renewals);
                renewals.unary_since.remove(&leader);
                if let Some((_, former)) = renewals.stream.replace((leader, stream.clone())) {
                    // Its renewals still get their answers; then it ends.
                    former.close_requests();
                }
                Ok(Route::Stream(stream))
            }
            Err(status) if status.code() == Code::Unimplemented => {
                tracing::debug!(
                    leader = format!("{leader:x}"),
                    "the leader does not serve the lease renewal stream: unary calls"
                );
                lock(&self.renewals)
                    .unary_since
                    .insert(leader, Instant::now());
                Ok(Route::Unary)
            }
            Err(status) => self.forget_on_failure(leader, Err(status)).await,
        }
    }

    async fn renew_unary(&self, leader: NodeId, urls: &[String], id: i64) -> Result<i64, Status> {
        let mut c = self.client(leader, urls).await?;
        let req = LeaseRenewRequest {
            cluster_id: self.cfg.cluster_id,
            from: self.cfg.local_id,
            id,
            seq: 0,
        };
        let r = c.lease_renew(req).await.map(|r| r.into_inner().ttl);
        self.forget_on_failure(leader, r).await
    }

    pub async fn time_to_live(
        &self,
        leader: NodeId,
        urls: &[String],
        id: i64,
        keys: bool,
    ) -> Result<TimeToLive, Status> {
        let mut c = self.client(leader, urls).await?;
        let req = LeaseTtlRequest {
            cluster_id: self.cfg.cluster_id,
            from: self.cfg.local_id,
            id,
            keys,
        };
        let r = c.lease_time_to_live(req).await.map(|r| {
            let r = r.into_inner();
            TimeToLive {
                ttl: r.ttl,
                granted_ttl: r.granted_ttl,
                keys: r.keys,
            }
        });
        self.forget_on_failure(leader, r).await
    }
}

/// One open `LeaseRenewStream`: its request side and the renewals waiting for answers
/// (a [`Wait`] keyed by sequence number, which forgets a renewal whose caller gives
/// up).
pub(super) struct RenewStream {
    /// `None` once closed: a replaced stream takes no new renewals.
    requests: Mutex<Option<mpsc::UnboundedSender<LeaseRenewRequest>>>,
    waiting: Wait<Result<i64, Status>>,
    next_seq: AtomicU64,
    /// The answers ended: nothing more will be answered.
    ended: AtomicBool,
}

/// What became of a renewal sent on a stream.
enum Renewed {
    /// The leader's answer, or the stream broke after the renewal was sent.
    Answered(Result<i64, Status>),
    /// The stream was closed before the renewal could be sent: nothing reached the
    /// leader.
    Unsent,
}

impl RenewStream {
    fn new(requests: mpsc::UnboundedSender<LeaseRenewRequest>) -> RenewStream {
        RenewStream {
            requests: Mutex::new(Some(requests)),
            waiting: Wait::default(),
            next_seq: AtomicU64::new(0),
            ended: AtomicBool::new(false),
        }
    }

    fn is_open(&self) -> bool {
        !self.ended.load(Ordering::Acquire) && lock(&self.requests).is_some()
    }

    /// Ends the request side: the leader answers what it has, then ends the stream.
    fn close_requests(&self) {
        lock(&self.requests).take();
    }

    async fn renew(&self, cluster_id: u64, from: NodeId, id: i64) -> Renewed {
        if self.ended.load(Ordering::Acquire) {
            return Renewed::Unsent;
        }
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed) + 1;
        let answer = self.waiting.register(seq);
        let req = LeaseRenewRequest {
            cluster_id,
            from,
            id,
            seq,
        };
        // `end` closes the request side before it fails the waiting renewals, so a
        // renewal registered after that finds no sender here.
        let sent = lock(&self.requests)
            .as_ref()
            .is_some_and(|requests| requests.send(req).is_ok());
        if !sent {
            return Renewed::Unsent;
        }
        Renewed::Answered(answer.await.unwrap_or_else(|_| Err(connection_lost())))
    }

    fn answer(&self, a: LeaseRenewResponse) {
        self.waiting.trigger(
            a.seq,
            if a.error_code == 0 {
                Ok(a.ttl)
            } else {
                Err(Status::new(Code::from_i32(a.error_code), a.error_message))
            },
        );
    }

    /// The answers ended: every renewal still waiting fails as a lost connection.
    fn end(&self) {
        self.close_requests();
        self.ended.store(true, Ordering::Release);
        self.waiting.fail_all();
    }
}

/// Hands each answer to its renewal until the stream ends or breaks.
async fn read_answers(mut answers: Streaming<LeaseRenewResponse>, stream: Arc<RenewStream>) {
    loop {
        match answers.message().await {
            Ok(Some(a)) => stream.answer(a),
            Ok(None) => break,
            Err(status) => {
                tracing::debug!(error = %status, "the lease renewal stream broke");
                break;
            }
        }
    }
    stream.end();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(r: Renewed) -> Option<Result<i64, Status>> {
        match r {
            Renewed::Answered(r) => Some(r),
            Renewed::Unsent => None,
        }
    }

    #[tokio::test]
    async fn answers_pair_by_sequence_and_a_closed_stream_takes_nothing() {
        let (tx, mut requests) = mpsc::unbounded_channel();
        let stream = Arc::new(RenewStream::new(tx));
        let renew = |id| {
            let stream = stream.clone();
            tokio::spawn(async move { answered(stream.renew(7, 2, id).await) })
        };
        let (first, second) = (renew(10), renew(20));
        let mut sent = [
            requests.recv().await.unwrap(),
            requests.recv().await.unwrap(),
        ];
        sent.sort_by_key(|r| r.id);
        assert_eq!((sent[0].cluster_id, sent[0].from), (7, 2));
        // Answered in the other order; the second with an error.
        stream.answer(LeaseRenewResponse {
            seq: sent[1].seq,
            error_code: Code::NotFound as i32,
            error_message: "etcdserver: requested lease not found".into(),
            ..Default::default()
        });
        stream.answer(LeaseRenewResponse {
            seq: sent[0].seq,
            ttl: 100,
            ..Default::default()
        });
        assert_eq!(first.await.unwrap().unwrap().unwrap(), 100);
        let e = second.await.unwrap().unwrap().unwrap_err();
        assert_eq!(e.code(), Code::NotFound);
        assert_eq!(e.message(), "etcdserver: requested lease not found");

        // A renewal waiting when the answers end fails as a lost connection...
        let waiting = renew(30);
        requests.recv().await.unwrap();
        stream.end();
        let e = waiting.await.unwrap().unwrap().unwrap_err();
        assert_eq!(e.code(), Code::Unavailable);
        // ...and one after that is not sent at all (the forwarder opens a new stream).
        assert!(renew(40).await.unwrap().is_none());
        assert!(!stream.is_open());
    }

    #[tokio::test]
    async fn a_replaced_stream_sends_nothing_more() {
        let (tx, mut requests) = mpsc::unbounded_channel();
        let stream = RenewStream::new(tx);
        stream.close_requests();
        assert!(answered(stream.renew(7, 2, 1).await).is_none());
        assert!(requests.recv().await.is_none(), "the request side ended");
        assert!(stream.waiting.is_empty(), "its slot was forgotten");
    }
}
