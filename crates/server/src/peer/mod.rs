//! The peer transport: how Raft messages travel between members.
//!
//! Outbound, each peer has a bounded queue drained by one task that keeps a
//! long-lived gRPC stream (`skiffpb.Peer/Stream`) open to it, packing whatever is
//! queued into one frame per write (batching). [`PeerTransport::send`] never blocks
//! the Raft node loop: when a peer's queue is full the message is dropped and the
//! peer is reported unreachable, and Raft retransmits (a dropped append is just a
//! lost message to Raft). A broken stream is reopened with exponential backoff.
//! Before streaming, a `Hello` handshake checks that the listener is the member we
//! meant (its member ID) in the cluster we belong to (the cluster ID), so a stray or
//! foreign process on a reused port is refused instead of fed our log. `https` peer
//! URLs are dialed with TLS ([`tls_dialer`]: the peer's certificate verified as
//! `crate::tls` says, ours presented as the client certificate).
//!
//! Snapshots (MsgSnap) go on a separate connection as a chunked stream with a CRC32C
//! over the payload ([`snapshot`]), throttled to a byte rate, so a large snapshot
//! never delays the heartbeats and appends of the main stream; the outcome is
//! reported to Raft (`SnapshotStatus`).
//!
//! Inbound, [`PeerService`] accepts streams only from current members of the same
//! cluster, checks every frame and message is addressed to this member, and hands
//! decoded messages to the [`EventSink`].
//!
//! Measured on the way (etcd's `etcd_network_peer_*`, see `crate::metrics::peer`):
//! bytes of the Raft messages sent and received per peer, messages that could not be
//! sent, and the round-trip time of a `Hello` at connect and every [`PROBE_INTERVAL`].

pub mod lease;
pub mod members;
mod service;
pub mod snapshot;
mod tls_dialer;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use skiff_proto::skiffpb::peer_client::PeerClient;
use skiff_proto::skiffpb::{HelloRequest, RaftFrame};
use skiff_raft::{Encode, Message, MessageType, NodeId};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};

use crate::metrics::{PeerLink, PeerMetrics};

pub use lease::{Forwarder, LeaseHandler};
pub use members::{fetch_members, MembershipHandler, MembershipSlot, PeerActivity};
pub use service::PeerService;

/// Turns the Raft snapshot's own data into the payload sent to a follower (the member
/// adds a dump of its backend); runs on a blocking thread at send time.
pub type SnapshotSource = Arc<dyn Fn(Bytes) -> Result<Bytes, String> + Send + Sync>;
type SourceSlot = Arc<std::sync::OnceLock<SnapshotSource>>;

/// Where the leader-side lease handler lives once the member installs it.
pub type LeaseSlot = Arc<std::sync::OnceLock<Arc<dyn LeaseHandler>>>;

/// What the transport tells the member.
// Nearly every event is a Message; boxing it would add an allocation per message to
// save space only in the rare small variants.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum PeerEvent {
    /// A message from a peer, to step into Raft.
    Message(Message),
    /// A peer could not be reached (or its queue overflowed): Raft should stop
    /// pipelining to it and probe.
    Unreachable(NodeId),
    /// A snapshot send to `to` finished (`ok`) or failed.
    SnapshotStatus { to: NodeId, ok: bool },
    /// A peer refused us as a member it removed: this member must stop.
    Removed,
}

/// What a member says to a peer it removed (etcd's words), and what that peer then
/// stops with.
pub const REMOVED: &str = "the member has been permanently removed from the cluster";

/// Where transport events go (typically: into the node loop's input queue).
pub type EventSink = Arc<dyn Fn(PeerEvent) + Send + Sync>;

/// Transport settings.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    pub local_id: NodeId,
    pub cluster_id: u64,
    /// Messages queued per peer before new ones are dropped.
    pub queue_capacity: usize,
    /// Most messages and bytes packed into one frame.
    pub max_batch_messages: usize,
    pub max_batch_bytes: usize,
    pub dial_timeout: Duration,
    /// Snapshot payload bytes per chunk.
    pub snapshot_chunk_bytes: usize,
    /// Snapshot send rate in bytes per second (0 = unlimited).
    pub snapshot_rate: u64,
    /// Largest snapshot payload a receiver accepts.
    pub max_snapshot_bytes: u64,
    /// Where the transport's measurements go (unregistered series by default).
    pub metrics: PeerMetrics,
    /// How `https` peer URLs are dialed (`None`: no peer TLS; such URLs are refused).
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// How often an open stream's peer is probed for the round-trip time.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(5);

impl PeerConfig {
    pub fn new(local_id: NodeId, cluster_id: u64) -> PeerConfig {
        PeerConfig {
            local_id,
            cluster_id,
            queue_capacity: 4096,
            max_batch_messages: 512,
            max_batch_bytes: 4 * 1024 * 1024,
            dial_timeout: Duration::from_secs(1),
            snapshot_chunk_bytes: 1024 * 1024,
            snapshot_rate: 256 * 1024 * 1024,
            max_snapshot_bytes: 16 * 1024 * 1024 * 1024,
            metrics: PeerMetrics::default(),
            tls: None,
        }
    }
}

/// Why talking to a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("invalid peer URL {0:?}: {1}")]
    Url(String, String),
    #[error("connect to {0}: {1}")]
    Connect(String, tonic::transport::Error),
    #[error("peer refused: {0}")]
    Refused(tonic::Status),
    #[error("{url} is member {got:x} of cluster {cluster:x}, expected member {want:x} of cluster {our_cluster:x}")]
    WrongPeer {
        url: String,
        got: u64,
        want: u64,
        cluster: u64,
        our_cluster: u64,
    },
    #[error("peer has no URLs")]
    NoUrls,
    #[error("snapshot send: {0}")]
    Snapshot(String),
}

struct PeerHandle {
    queue: mpsc::Sender<Message>,
    snapshots: mpsc::Sender<Message>,
    urls: Arc<RwLock<Vec<String>>>,
    tasks: Vec<JoinHandle<()>>,
}

/// Sends Raft messages to the other members; see the module docs.
pub struct PeerTransport {
    cfg: Arc<PeerConfig>,
    lease: LeaseSlot,
    membership: MembershipSlot,
    source: SourceSlot,
    activity: PeerActivity,
    peers: HashMap<NodeId, PeerHandle>,
    members: Arc<RwLock<HashSet<NodeId>>>,
    /// Members removed while this member ran: told so when they call.
    removed: Arc<RwLock<HashSet<NodeId>>>,
    sink: EventSink,
    rt: tokio::runtime::Handle,
    /// This member's lease forwarder, told of leadership changes.
    forwarder: Arc<Forwarder>,
}

impl PeerTransport {
    pub fn new(cfg: PeerConfig, sink: EventSink, rt: tokio::runtime::Handle) -> PeerTransport {
        let members = Arc::new(RwLock::new(HashSet::from([cfg.local_id])));
        let cfg = Arc::new(cfg);
        PeerTransport {
            forwarder: Arc::new(Forwarder::new(cfg.clone())),
            cfg,
            lease: LeaseSlot::default(),
            membership: MembershipSlot::default(),
            source: SourceSlot::default(),
            activity: PeerActivity::default(),
            peers: HashMap::new(),
            members,
            removed: Arc::default(),
            sink,
            rt,
        }
    }

    /// The gRPC service that receives from peers; mount it on the peer listener.
    pub fn service(&self) -> PeerService {
        PeerService::new(
            self.cfg.clone(),
            self.members.clone(),
            self.removed.clone(),
            self.sink.clone(),
            self.lease.clone(),
            self.membership.clone(),
        )
    }

    /// Installs the handler that answers membership questions from peers.
    pub fn set_membership_handler(&self, handler: Arc<dyn MembershipHandler>) {
        let _ = self.membership.set(handler);
    }

    /// Since when each peer's stream has been up.
    pub fn activity(&self) -> PeerActivity {
        self.activity.clone()
    }

    /// Installs the handler that answers lease requests forwarded by followers.
    pub fn set_lease_handler(&self, handler: Arc<dyn LeaseHandler>) {
        let _ = self.lease.set(handler);
    }

    /// Installs what fills in snapshot payloads before they are sent.
    pub fn set_snapshot_source(&self, source: SnapshotSource) {
        let _ = self.source.set(source);
    }

    /// The forwarder of this member's lease requests to the leader (one per member:
    /// [`crate::inputs::Transport::leader_is`] closes its renewal stream to a former
    /// leader).
    pub fn forwarder(&self) -> Arc<Forwarder> {
        self.forwarder.clone()
    }

    /// Starts talking to `id` at `urls` (or updates its URLs).
    pub fn add_peer(&mut self, id: NodeId, urls: Vec<String>) {
        if id == self.cfg.local_id {
            return;
        }
        write_lock(&self.members).insert(id);
        if let Some(p) = self.peers.get(&id) {
            *write_lock(&p.urls) = urls;
            return;
        }
        let urls = Arc::new(RwLock::new(urls));
        let (qtx, qrx) = mpsc::channel(self.cfg.queue_capacity);
        // One snapshot in flight (or waiting) per peer: Raft sends no more anyway.
        let (stx, srx) = mpsc::channel(1);
        let writer = self.rt.spawn(stream_writer(
            self.cfg.clone(),
            id,
            urls.clone(),
            qrx,
            self.sink.clone(),
            self.activity.clone(),
        ));
        let snapper = self.rt.spawn(snapshot::snapshot_sender(
            self.cfg.clone(),
            id,
            urls.clone(),
            srx,
            self.sink.clone(),
            self.source.clone(),
        ));
        self.peers.insert(
            id,
            PeerHandle {
                queue: qtx,
                snapshots: stx,
                urls,
                tasks: vec![writer, snapper],
            },
        );
    }

    /// Stops talking to `id` and refuses its streams from now on.
    pub fn remove_peer(&mut self, id: NodeId) {
        write_lock(&self.members).remove(&id);
        if id != self.cfg.local_id {
            write_lock(&self.removed).insert(id);
        }
        self.activity.down(id);
        if let Some(p) = self.peers.remove(&id) {
            for t in p.tasks {
                t.abort();
            }
        }
    }

    /// Peers currently configured.
    pub fn peer_ids(&self) -> Vec<NodeId> {
        let mut ids: Vec<NodeId> = self.peers.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Queues messages for their peers without blocking. See the module docs for
    /// what happens when a queue is full.
    pub fn send(&mut self, msgs: Vec<Message>) {
        for m in msgs {
            let to = m.to;
            let is_snap = m.msg_type == MessageType::Snapshot;
            let Some(p) = self.peers.get(&to) else {
                tracing::debug!(to, kind = ?m.msg_type, "dropping a message to an unknown peer");
                if is_snap {
                    (self.sink)(PeerEvent::SnapshotStatus { to, ok: false });
                }
                continue;
            };
            let queue = if is_snap { &p.snapshots } else { &p.queue };
            if let Err(e) = queue.try_send(m) {
                let dropped = match e {
                    mpsc::error::TrySendError::Full(m) | mpsc::error::TrySendError::Closed(m) => m,
                };
                tracing::debug!(to, kind = ?dropped.msg_type, "peer queue full: message dropped");
                self.cfg.metrics.sending_to(to).sent_failures.inc();
                (self.sink)(if is_snap {
                    PeerEvent::SnapshotStatus { to, ok: false }
                } else {
                    PeerEvent::Unreachable(to)
                });
            }
        }
    }
}

impl crate::inputs::Transport for PeerTransport {
    fn send(&mut self, msgs: Vec<Message>) {
        PeerTransport::send(self, msgs)
    }

    fn add_peer(&mut self, id: u64, urls: Vec<String>) {
        PeerTransport::add_peer(self, id, urls)
    }

    fn remove_peer(&mut self, id: u64) {
        PeerTransport::remove_peer(self, id)
    }

    fn leader_is(&mut self, leader: u64) {
        self.forwarder.leader_is(leader)
    }
}

/// Routes transport events into the Raft node loop's inputs.
pub fn node_sink(node: std::sync::mpsc::Sender<crate::inputs::NodeInput>) -> EventSink {
    use crate::inputs::NodeInput;
    let node = std::sync::Mutex::new(node);
    Arc::new(move |e: PeerEvent| {
        let input = match e {
            PeerEvent::Message(m) => NodeInput::Step(Box::new(m)),
            PeerEvent::Unreachable(id) => NodeInput::Unreachable(id),
            PeerEvent::SnapshotStatus { to, ok } => NodeInput::SnapshotStatus { to, ok },
            PeerEvent::Removed => NodeInput::Removed,
        };
        // A gone node loop means the member is stopping: nothing left to tell.
        let _ = node.lock().unwrap_or_else(|p| p.into_inner()).send(input);
    })
}

impl Drop for PeerTransport {
    fn drop(&mut self) {
        for p in self.peers.values() {
            for t in &p.tasks {
                t.abort();
            }
        }
    }
}

fn write_lock<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    // The data behind these locks (URL lists, member sets) is replaced whole, so a
    // panic mid-write cannot leave it torn; keep going with it.
    l.write().unwrap_or_else(|p| p.into_inner())
}

fn read_lock<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

/// Connects to the first reachable URL of `peer` and checks its identity.
async fn connect(
    cfg: &PeerConfig,
    peer: NodeId,
    urls: &RwLock<Vec<String>>,
) -> Result<PeerClient<Channel>, PeerError> {
    let urls = read_lock(urls).clone();
    if urls.is_empty() {
        return Err(PeerError::NoUrls);
    }
    let mut last = None;
    for url in urls {
        match connect_one(cfg, peer, &url).await {
            Ok(c) => return Ok(c),
            Err(e) => last = Some(e),
        }
    }
    Err(last.expect("at least one URL was tried"))
}

/// A connection to `url` (TLS for `https`), without any identity check.
async fn dial(cfg: &PeerConfig, url: &str) -> Result<Channel, PeerError> {
    match url.strip_prefix("https://") {
        Some(host_port) => {
            let Some(tls) = cfg.tls.clone() else {
                return Err(PeerError::Url(
                    url.to_string(),
                    "an https peer URL needs peer TLS (--peer-cert-file/--peer-key-file or --peer-auto-tls)"
                        .to_string(),
                ));
            };
            // tonic dials plain http://; the connector below does the TLS.
            endpoint(cfg, &format!("http://{host_port}"))?
                .connect_with_connector(tls_dialer::TlsDialer::new(tls, host_port)?)
                .await
        }
        None => endpoint(cfg, url)?.connect().await,
    }
    .map_err(|e| PeerError::Connect(url.to_string(), e))
}

async fn connect_one(
    cfg: &PeerConfig,
    peer: NodeId,
    url: &str,
) -> Result<PeerClient<Channel>, PeerError> {
    let channel = dial(cfg, url).await?;
    let mut client = PeerClient::new(channel).max_decoding_message_size(64 * 1024 * 1024);
    let started = std::time::Instant::now();
    let hello = client
        .hello(HelloRequest {
            cluster_id: cfg.cluster_id,
            from: cfg.local_id,
            version: crate::version::SKIFF_VERSION.to_string(),
        })
        .await
        .map_err(PeerError::Refused)?
        .into_inner();
    if hello.cluster_id != cfg.cluster_id || hello.member_id != peer {
        return Err(PeerError::WrongPeer {
            url: url.to_string(),
            got: hello.member_id,
            want: peer,
            cluster: hello.cluster_id,
            our_cluster: cfg.cluster_id,
        });
    }
    cfg.metrics
        .sending_to(peer)
        .rtt
        .observe(started.elapsed().as_secs_f64());
    Ok(client)
}

fn endpoint(cfg: &PeerConfig, url: &str) -> Result<Endpoint, PeerError> {
    Ok(Endpoint::from_shared(url.to_string())
        .map_err(|e| PeerError::Url(url.to_string(), e.to_string()))?
        .connect_timeout(cfg.dial_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5)))
}

/// Exponential backoff between reconnects, 50 ms doubling up to 1 s, with jitter so
/// members do not reconnect in lockstep.
struct Backoff {
    next: Duration,
    seed: u64,
}

impl Backoff {
    fn new(seed: u64) -> Backoff {
        Backoff {
            next: Duration::from_millis(50),
            seed: seed | 1,
        }
    }
    fn reset(&mut self) {
        self.next = Duration::from_millis(50);
    }
    fn step(&mut self) -> Duration {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let base = self.next;
        self.next = (self.next * 2).min(Duration::from_secs(1));
        let jitter = Duration::from_millis(self.seed % (base.as_millis() as u64 / 2 + 1));
        base + jitter
    }
}

/// Keeps a stream open to `peer` and feeds it what is queued.
async fn stream_writer(
    cfg: Arc<PeerConfig>,
    peer: NodeId,
    urls: Arc<RwLock<Vec<String>>>,
    mut queue: mpsc::Receiver<Message>,
    sink: EventSink,
    activity: PeerActivity,
) {
    let mut backoff = Backoff::new(cfg.local_id ^ peer.rotate_left(17));
    let mut reported = false;
    let link = cfg.metrics.sending_to(peer);
    loop {
        match connect(&cfg, peer, &urls).await {
            Ok(client) => {
                tracing::info!(peer = format!("{peer:x}"), "peer stream established");
                backoff.reset();
                reported = false;
                activity.up(peer);
                let pumped = pump(&cfg, peer, client, &mut queue, &link).await;
                activity.down(peer);
                match pumped {
                    Pump::QueueClosed => return,
                    Pump::StreamBroken(why) => {
                        tracing::warn!(peer = format!("{peer:x}"), %why, "peer stream broken");
                    }
                }
            }
            Err(PeerError::Refused(s)) if s.message() == REMOVED => {
                tracing::error!(peer = format!("{peer:x}"), "{REMOVED}");
                sink(PeerEvent::Removed);
                return;
            }
            Err(e) => {
                if !reported {
                    tracing::warn!(peer = format!("{peer:x}"), error = %e, "cannot reach peer");
                } else {
                    tracing::debug!(peer = format!("{peer:x}"), error = %e, "cannot reach peer");
                }
            }
        }
        if !reported {
            sink(PeerEvent::Unreachable(peer));
            reported = true;
        }
        // The failed stream or connection attempt.
        link.sent_failures.inc();
        // What queued while we could not send is stale; Raft resends what matters.
        loop {
            match queue.try_recv() {
                Ok(_) => link.sent_failures.inc(),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => return,
            }
        }
        tokio::time::sleep(backoff.step()).await;
    }
}

enum Pump {
    QueueClosed,
    StreamBroken(String),
}

/// Moves queued messages into the open stream, batching what is waiting.
async fn pump(
    cfg: &PeerConfig,
    peer: NodeId,
    mut client: PeerClient<Channel>,
    queue: &mut mpsc::Receiver<Message>,
    link: &PeerLink,
) -> Pump {
    let prober = client.clone();
    let mut probe =
        tokio::time::interval_at(tokio::time::Instant::now() + PROBE_INTERVAL, PROBE_INTERVAL);
    let (frames, frames_rx) = mpsc::channel::<RaftFrame>(8);
    let mut call = tokio::spawn(async move {
        client
            .stream(tokio_stream::wrappers::ReceiverStream::new(frames_rx))
            .await
    });
    loop {
        let first = tokio::select! {
            m = queue.recv() => m,
            _ = probe.tick() => {
                let hello = HelloRequest {
                    cluster_id: cfg.cluster_id,
                    from: cfg.local_id,
                    version: crate::version::SKIFF_VERSION.to_string(),
                };
                tokio::spawn(probe_rtt(hello, prober.clone(), link.rtt.clone()));
                continue;
            }
            res = &mut call => {
                return Pump::StreamBroken(match res {
                    Ok(Ok(resp)) => format!("closed by peer: {}", resp.into_inner().reason),
                    Ok(Err(status)) => status.to_string(),
                    Err(e) => e.to_string(),
                });
            }
        };
        let Some(first) = first else {
            call.abort();
            return Pump::QueueClosed;
        };
        let mut batch: Vec<Bytes> = vec![first.encode()];
        let mut bytes = batch[0].len();
        while batch.len() < cfg.max_batch_messages && bytes < cfg.max_batch_bytes {
            match queue.try_recv() {
                Ok(m) => {
                    let b = m.encode();
                    bytes += b.len();
                    batch.push(b);
                }
                Err(_) => break,
            }
        }
        let frame = RaftFrame {
            cluster_id: cfg.cluster_id,
            from: cfg.local_id,
            to: peer,
            messages: batch,
        };
        if let Err(unsent) = frames.send(frame).await {
            link.sent_failures.inc_by(unsent.0.messages.len() as u64);
            let why = match call.await {
                Ok(Err(status)) => status.to_string(),
                _ => "stream ended".to_string(),
            };
            return Pump::StreamBroken(why);
        }
        link.sent_bytes.inc_by(bytes as u64);
    }
}

/// One round trip to the peer on the stream's connection (a `Hello`), timed into `rtt`;
/// a probe that fails or takes longer than [`PROBE_INTERVAL`] records nothing (the
/// stream's own failure handling deals with a dead peer).
async fn probe_rtt(
    hello: HelloRequest,
    mut client: PeerClient<Channel>,
    rtt: prometheus::Histogram,
) {
    let started = std::time::Instant::now();
    if let Ok(Ok(_)) = tokio::time::timeout(PROBE_INTERVAL, client.hello(hello)).await {
        rtt.observe(started.elapsed().as_secs_f64());
    }
}
