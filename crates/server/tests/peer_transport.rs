//! The peer transport between real gRPC endpoints on loopback: delivery and batching,
//! the identity handshake, non-blocking sends, reconnection, removal, and chunked
//! snapshots with their checksum; lease renewals forwarded over the renewal stream, a
//! leader without it, and a stream that breaks.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use skiff_proto::skiffpb::peer_client::PeerClient;
use skiff_raft::{Message, MessageType, Snapshot, SnapshotMetadata};
use skiff_server::peer::{snapshot, Forwarder, LeaseHandler, PeerConfig, PeerEvent, PeerTransport};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::codegen::http;
use tonic::server::NamedService;

struct Member {
    transport: PeerTransport,
    events: std_mpsc::Receiver<PeerEvent>,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
}

async fn serve(transport: &PeerTransport, listener: TcpListener) -> oneshot::Sender<()> {
    serve_service(transport.service().into_server(), listener)
}

/// Serves `svc` on `listener` until the returned sender fires.
fn serve_service<S>(svc: S, listener: TcpListener) -> oneshot::Sender<()>
where
    S: tower::Service<
            http::Request<tonic::body::Body>,
            Response = HttpResponse,
            Error = std::convert::Infallible,
        > + NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async {
                    let _ = rx.await;
                },
            )
            .await
            .expect("peer server");
    });
    tx
}

async fn member(id: u64, cluster: u64, tune: impl FnOnce(&mut PeerConfig)) -> Member {
    member_with(id, cluster, tune, |t, l| {
        serve_service(t.service().into_server(), l)
    })
    .await
}

/// A member whose peer server `serve` starts.
async fn member_with(
    id: u64,
    cluster: u64,
    tune: impl FnOnce(&mut PeerConfig),
    serve: impl FnOnce(&PeerTransport, TcpListener) -> oneshot::Sender<()>,
) -> Member {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = std_mpsc::channel();
    let sink = Arc::new(move |e: PeerEvent| {
        let _ = tx.send(e);
    });
    let mut cfg = PeerConfig::new(id, cluster);
    tune(&mut cfg);
    let transport = PeerTransport::new(cfg, sink, tokio::runtime::Handle::current());
    let stop = serve(&transport, listener);
    Member {
        transport,
        events: rx,
        addr,
        stop: Some(stop),
    }
}

fn url(m: &Member) -> String {
    format!("http://{}", m.addr)
}

fn msg(from: u64, to: u64, index: u64) -> Message {
    Message {
        msg_type: MessageType::Append,
        from,
        to,
        term: 1,
        index,
        ..Default::default()
    }
}

/// Waits (polling, bounded) for events matching `pred`, returning all events seen.
async fn collect_until(
    rx: &std_mpsc::Receiver<PeerEvent>,
    timeout: Duration,
    mut done: impl FnMut(&[PeerEvent]) -> bool,
) -> Vec<PeerEvent> {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        while let Ok(e) = rx.try_recv() {
            seen.push(e);
        }
        if done(&seen) {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    seen
}

fn delivered(events: &[PeerEvent]) -> Vec<u64> {
    events
        .iter()
        .filter_map(|e| match e {
            PeerEvent::Message(m) => Some(m.index),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_arrive_in_order_between_three_members() {
    let mut a = member(1, 7, |_| {}).await;
    let mut b = member(2, 7, |_| {}).await;
    let mut c = member(3, 7, |_| {}).await;
    a.transport.add_peer(2, vec![url(&b)]);
    a.transport.add_peer(3, vec![url(&c)]);
    b.transport.add_peer(1, vec![url(&a)]);
    c.transport.add_peer(1, vec![url(&a)]);
    for i in 1..=2000 {
        a.transport.send(vec![msg(1, 2, i), msg(1, 3, i)]);
    }
    for m in [&b, &c] {
        let got = collect_until(&m.events, Duration::from_secs(10), |e| {
            delivered(e).len() >= 2000
        })
        .await;
        // Messages queued before the stream opened may be dropped (Raft resends),
        // but what arrives arrives in order and exactly once.
        let idx = delivered(&got);
        assert!(!idx.is_empty(), "nothing delivered");
        assert!(
            idx.windows(2).all(|w| w[0] < w[1]),
            "out of order or duplicated"
        );
    }
    // Once connected, nothing is lost: a second burst arrives whole.
    for i in 10_001..=12_000 {
        a.transport.send(vec![msg(1, 2, i)]);
    }
    let got = collect_until(&b.events, Duration::from_secs(10), |e| {
        delivered(e).iter().filter(|i| **i > 10_000).count() == 2000
    })
    .await;
    let burst: Vec<u64> = delivered(&got)
        .into_iter()
        .filter(|i| *i > 10_000)
        .collect();
    assert_eq!(burst, (10_001..=12_000).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_cluster_or_wrong_member_is_refused() {
    let mut a = member(1, 7, |_| {}).await;
    let other_cluster = member(2, 8, |_| {}).await;
    let wrong_member = member(5, 7, |_| {}).await;
    a.transport.add_peer(2, vec![url(&other_cluster)]);
    // Member 3 is expected at an address where member 5 listens (a reused port).
    a.transport.add_peer(3, vec![url(&wrong_member)]);
    for i in 1..=50 {
        a.transport.send(vec![msg(1, 2, i), msg(1, 3, i)]);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let events = collect_until(&a.events, Duration::from_secs(5), |e| {
        e.contains(&PeerEvent::Unreachable(2)) && e.contains(&PeerEvent::Unreachable(3))
    })
    .await;
    assert!(events.contains(&PeerEvent::Unreachable(2)), "{events:?}");
    assert!(events.contains(&PeerEvent::Unreachable(3)), "{events:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(delivered(&other_cluster.events.try_iter().collect::<Vec<_>>()).is_empty());
    assert!(delivered(&wrong_member.events.try_iter().collect::<Vec<_>>()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_never_blocks_when_a_peer_is_down() {
    let mut a = member(1, 7, |c| c.queue_capacity = 16).await;
    // Nothing listens on this port.
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    a.transport.add_peer(2, vec![dead_url]);
    let start = Instant::now();
    for i in 0..100_000 {
        a.transport.send(vec![msg(1, 2, i)]);
    }
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "send blocked: {:?}",
        start.elapsed()
    );
    let events = collect_until(&a.events, Duration::from_secs(3), |e| {
        e.contains(&PeerEvent::Unreachable(2))
    })
    .await;
    assert!(events.contains(&PeerEvent::Unreachable(2)));
}

/// Sends appends from member 1 (`from`) to member 2 (`to`) numbered from `first`, one
/// every 20 ms (as Raft's heartbeats would), until one of them arrives or 10 s pass;
/// returns the indices of those delivered (earlier ones still arriving are ignored).
///
/// A single send is not enough: what was queued while a connection attempt failed is
/// dropped as stale (Raft resends), and the first attempt can fail, for instance when
/// its `Hello` reaches the peer before the peer knows the sender.
async fn send_until_delivered(from: &mut Member, to: &Member, first: u64) -> Vec<u64> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    let mut i = first;
    let ours = |seen: &[PeerEvent]| -> Vec<u64> {
        delivered(seen)
            .into_iter()
            .filter(|n| *n >= first)
            .collect()
    };
    while Instant::now() < deadline && ours(&seen).is_empty() {
        from.transport.send(vec![msg(1, 2, i)]);
        i += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
        seen.extend(to.events.try_iter());
    }
    // Whatever is still on its way.
    tokio::time::sleep(Duration::from_millis(50)).await;
    seen.extend(to.events.try_iter());
    let got = ours(&seen);
    assert!(
        got.iter().all(|n| *n < i),
        "delivered {got:?}, sent {first}..{i}"
    );
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "out of order or duplicated: {got:?}"
    );
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_the_peer_restarts() {
    let mut a = member(1, 7, |_| {}).await;
    let mut b = member(2, 7, |_| {}).await;
    a.transport.add_peer(2, vec![url(&b)]);
    b.transport.add_peer(1, vec![url(&a)]);
    assert!(
        !send_until_delivered(&mut a, &b, 1).await.is_empty(),
        "no delivery before the restart"
    );
    // Stop b's server and start a new one on the same port.
    let addr = b.addr;
    let _ = b.stop.take().unwrap().send(());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let listener = loop {
        match TcpListener::bind(addr).await {
            Ok(l) => break l,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    b.stop = Some(serve(&b.transport, listener).await);
    assert!(
        !send_until_delivered(&mut a, &b, 100_000).await.is_empty(),
        "no delivery after the peer restarted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_member_is_refused() {
    let mut a = member(1, 7, |_| {}).await;
    let mut b = member(2, 7, |_| {}).await;
    a.transport.add_peer(2, vec![url(&b)]);
    b.transport.add_peer(1, vec![url(&a)]);
    b.transport.remove_peer(1);
    for i in 1..=20 {
        a.transport.send(vec![msg(1, 2, i)]);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let events = collect_until(&a.events, Duration::from_secs(3), |e| {
        e.contains(&PeerEvent::Unreachable(2))
    })
    .await;
    assert!(events.contains(&PeerEvent::Unreachable(2)));
    assert!(delivered(&b.events.try_iter().collect::<Vec<_>>()).is_empty());
}

fn snap_msg(from: u64, to: u64, size: usize) -> Message {
    let data: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
    Message {
        msg_type: MessageType::Snapshot,
        from,
        to,
        term: 3,
        snapshot: Some(Snapshot {
            data: Bytes::from(data),
            metadata: SnapshotMetadata {
                index: 42,
                term: 3,
                ..Default::default()
            },
        }),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_travel_in_checked_chunks() {
    let mut a = member(1, 7, |c| c.snapshot_chunk_bytes = 64 * 1024).await;
    let mut b = member(2, 7, |_| {}).await;
    a.transport.add_peer(2, vec![url(&b)]);
    b.transport.add_peer(1, vec![url(&a)]);
    let m = snap_msg(1, 2, 3 * 1024 * 1024 + 17);
    let want = m.snapshot.clone().unwrap();
    a.transport.send(vec![m]);
    let got = collect_until(&b.events, Duration::from_secs(10), |e| {
        e.iter()
            .any(|e| matches!(e, PeerEvent::Message(m) if m.msg_type == MessageType::Snapshot))
    })
    .await;
    let snap = got
        .iter()
        .find_map(|e| match e {
            PeerEvent::Message(m) if m.msg_type == MessageType::Snapshot => m.snapshot.clone(),
            _ => None,
        })
        .expect("snapshot delivered");
    assert_eq!(snap, want);
    let status = collect_until(&a.events, Duration::from_secs(5), |e| {
        e.contains(&PeerEvent::SnapshotStatus { to: 2, ok: true })
    })
    .await;
    assert!(status.contains(&PeerEvent::SnapshotStatus { to: 2, ok: true }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_snapshot_is_refused() {
    let mut b = member(2, 7, |_| {}).await;
    b.transport.add_peer(1, vec!["http://127.0.0.1:1".into()]);
    let cfg = {
        let mut c = PeerConfig::new(1, 7);
        c.snapshot_chunk_bytes = 1000;
        c
    };
    let mut parts = snapshot::chunks(&cfg, snap_msg(1, 2, 10_000));
    assert!(parts.len() > 3);
    assert_eq!(parts.iter().map(|c| c.data.len()).sum::<usize>(), 10_000);
    // Flip one byte in a middle chunk.
    let mut data = parts[2].data.to_vec();
    data[5] ^= 0x40;
    parts[2].data = Bytes::from(data);
    let mut client = PeerClient::connect(url(&b)).await.unwrap();
    let err = client
        .snapshot(tokio_stream::iter(parts))
        .await
        .expect_err("corrupted snapshot accepted");
    assert_eq!(err.code(), tonic::Code::DataLoss, "{err}");
    assert!(err.message().contains("checksum mismatch"), "{err}");
    let reached: Vec<PeerEvent> = b
        .events
        .try_iter()
        .filter(|e| matches!(e, PeerEvent::Message(_)))
        .collect();
    assert!(
        reached.is_empty(),
        "corrupt snapshot reached Raft: {reached:?}"
    );
}

// --- Lease renewals forwarded over the renewal stream -----------------------------------

/// A leader's lease clock for the tests: lease `id` renews to `id * 10`; every 50th
/// is unknown (an error); [`SLOW_LEASE`] takes half a minute. Small delays make the
/// answers come back out of order.
struct FakeLeases;

const SLOW_LEASE: i64 = 999;

#[tonic::async_trait]
impl LeaseHandler for FakeLeases {
    async fn renew(&self, id: i64) -> Result<i64, tonic::Status> {
        if id == SLOW_LEASE {
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
        tokio::time::sleep(Duration::from_millis((id % 7) as u64)).await;
        if id % 50 == 0 {
            return Err(tonic::Status::not_found(
                "etcdserver: requested lease not found",
            ));
        }
        Ok(id * 10)
    }

    async fn time_to_live(
        &self,
        id: i64,
        _keys: bool,
    ) -> Result<(i64, i64, Vec<Bytes>), tonic::Status> {
        Ok((id, id, Vec::new()))
    }
}

/// Calls per gRPC method a member's peer server received.
type Calls = Arc<std::sync::Mutex<HashMap<String, usize>>>;

fn calls_of(calls: &Calls, method: &str) -> usize {
    calls
        .lock()
        .unwrap()
        .get(&format!("/skiffpb.Peer/{method}"))
        .copied()
        .unwrap_or(0)
}

/// The peer service, counting calls per method; with `refuse_stream`, it answers
/// `LeaseRenewStream` as a Skiff from before the stream does (Unimplemented).
#[derive(Clone)]
struct Counting<S> {
    inner: S,
    calls: Calls,
    refuse_stream: bool,
}

impl<S: NamedService> NamedService for Counting<S> {
    const NAME: &'static str = S::NAME;
}

type HttpResponse = http::Response<tonic::body::Body>;

impl<S> tower::Service<http::Request<tonic::body::Body>> for Counting<S>
where
    S: tower::Service<
            http::Request<tonic::body::Body>,
            Response = HttpResponse,
            Error = std::convert::Infallible,
        > + Send,
    S::Future: Send + 'static,
{
    type Response = HttpResponse;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<HttpResponse, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let path = req.uri().path().to_string();
        *self.calls.lock().unwrap().entry(path.clone()).or_default() += 1;
        if self.refuse_stream && path == "/skiffpb.Peer/LeaseRenewStream" {
            return Box::pin(async { Ok(tonic::Status::unimplemented("").into_http()) });
        }
        Box::pin(self.inner.call(req))
    }
}

/// A leader (member 1 of cluster 7) serving [`FakeLeases`] behind [`Counting`], and a
/// follower (member 2) that knows it at its address.
async fn leader_and_follower(refuse_stream: bool) -> (Member, Member, Calls) {
    let calls = Calls::default();
    let counted = calls.clone();
    let mut leader = member_with(
        1,
        7,
        |_| {},
        |t, l| {
            let inner = t.service().into_server();
            serve_service(
                Counting {
                    inner,
                    calls: counted,
                    refuse_stream,
                },
                l,
            )
        },
    )
    .await;
    leader.transport.set_lease_handler(Arc::new(FakeLeases));
    let mut follower = member(2, 7, |_| {}).await;
    leader.transport.add_peer(2, vec![url(&follower)]);
    follower.transport.add_peer(1, vec![url(&leader)]);
    (leader, follower, calls)
}

/// Renews leases `ids` at once through `forwarder`, each answer with its ID.
async fn renew_all(
    forwarder: &Arc<Forwarder>,
    url: &str,
    ids: impl Iterator<Item = i64>,
) -> Vec<(i64, Result<i64, tonic::Status>)> {
    let mut set = tokio::task::JoinSet::new();
    for id in ids {
        let (f, url) = (forwarder.clone(), url.to_string());
        set.spawn(async move { (id, f.renew(1, &[url], id).await) });
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        out.push(r.unwrap());
    }
    out.sort_by_key(|(id, _)| *id);
    out
}

fn assert_renewed(results: &[(i64, Result<i64, tonic::Status>)]) {
    for (id, r) in results {
        if id % 50 == 0 {
            let e = r.as_ref().expect_err("an unknown lease is an error");
            assert_eq!(e.code(), tonic::Code::NotFound, "lease {id}: {e:?}");
            assert_eq!(e.message(), "etcdserver: requested lease not found");
        } else {
            assert_eq!(r.as_ref().ok(), Some(&(id * 10)), "lease {id}: {r:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_renewals_share_one_stream_and_each_gets_its_own_answer() {
    let (leader, follower, calls) = leader_and_follower(false).await;
    let forwarder = follower.transport.forwarder();
    let results = renew_all(&forwarder, &url(&leader), 1..=300).await;
    assert_renewed(&results);
    // Errors travel in their answers: the stream stays open for what follows.
    let again = renew_all(&forwarder, &url(&leader), 301..=400).await;
    assert_renewed(&again);
    assert_eq!(calls_of(&calls, "LeaseRenewStream"), 1);
    assert_eq!(calls_of(&calls, "LeaseRenew"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_stream_to_a_former_leader_is_closed_when_leadership_moves() {
    use skiff_server::inputs::Transport as _;
    let (leader, mut follower, calls) = leader_and_follower(false).await;
    let forwarder = follower.transport.forwarder();
    assert_renewed(&renew_all(&forwarder, &url(&leader), 1..=10).await);
    assert!(forwarder.streams_to(1));
    // No leader known, or the same leader again: the stream stays.
    follower.transport.leader_is(0);
    follower.transport.leader_is(1);
    assert!(forwarder.streams_to(1));
    // The follower itself leads now (it renews with its own clock): the stream to its
    // predecessor goes.
    follower.transport.leader_is(2);
    assert!(!forwarder.streams_to(1));
    // Member 1 leads again: renewals open a new stream and are answered on it.
    follower.transport.leader_is(1);
    assert_renewed(&renew_all(&forwarder, &url(&leader), 11..=20).await);
    assert!(forwarder.streams_to(1));
    assert_eq!(calls_of(&calls, "LeaseRenewStream"), 2);
    assert_eq!(calls_of(&calls, "LeaseRenew"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_without_the_renewal_stream_is_renewed_by_unary_calls() {
    let (leader, follower, calls) = leader_and_follower(true).await;
    let forwarder = follower.transport.forwarder();
    let results = renew_all(&forwarder, &url(&leader), 1..=120).await;
    assert_renewed(&results);
    // Asked once, then remembered for UNARY_RETRY.
    assert_eq!(calls_of(&calls, "LeaseRenewStream"), 1);
    assert_eq!(calls_of(&calls, "LeaseRenew"), 120);
}

/// A TCP relay from a fresh loopback port to `to`, whose connections [`Relay::cut`]
/// drops at once (a crashed leader, as far as its peers can tell).
struct Relay {
    addr: SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    conns: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Relay {
    async fn start(to: SocketAddr, on: Option<SocketAddr>) -> Relay {
        let listener = match on {
            Some(addr) => loop {
                match TcpListener::bind(addr).await {
                    Ok(l) => break l,
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            },
            None => TcpListener::bind("127.0.0.1:0").await.unwrap(),
        };
        let addr = listener.local_addr().unwrap();
        let conns: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let accepted = conns.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let conn = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                accepted.lock().unwrap().push(conn);
            }
        });
        Relay {
            addr,
            tasks: vec![accept],
            conns,
        }
    }

    fn cut(self) -> SocketAddr {
        for t in self.tasks.iter().chain(self.conns.lock().unwrap().iter()) {
            t.abort();
        }
        self.addr
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewals_waiting_on_a_broken_stream_fail_and_the_next_opens_a_new_one() {
    let (leader, follower, calls) = leader_and_follower(false).await;
    let relay = Relay::start(leader.addr, None).await;
    let via = format!("http://{}", relay.addr);
    let forwarder = follower.transport.forwarder();
    assert_renewed(&renew_all(&forwarder, &via, 1..=10).await);
    let waiting = {
        let (f, via) = (forwarder.clone(), via.clone());
        tokio::spawn(async move { f.renew(1, &[via], SLOW_LEASE).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let addr = relay.cut();
    let started = Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("a renewal on a broken stream must not wait for its answer")
        .unwrap()
        .expect_err("its answer cannot come");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    // The leader comes back at the same address: renewals go through again.
    let _relay = Relay::start(leader.addr, Some(addr)).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match forwarder.renew(1, std::slice::from_ref(&via), 7).await {
            Ok(ttl) => {
                assert_eq!(ttl, 70);
                break;
            }
            Err(e) if Instant::now() < deadline => {
                assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("no renewal after the leader came back: {e:?}"),
        }
    }
    assert!(calls_of(&calls, "LeaseRenewStream") >= 2);
    assert_eq!(calls_of(&calls, "LeaseRenew"), 0);
}
