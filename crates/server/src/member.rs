//! A running member: start-up, the threads and tasks it runs, and shutdown.
//!
//! Start-up order: the data directory (created with mode 0700 when missing); the
//! Raft state from the WAL and snapshots, or a new one ([`crate::bootstrap`]); the
//! MVCC store; the lessor rebuilt from the backend (leases and their keys); the Raft
//! node thread ([`crate::node`]) and the apply thread ([`crate::apply`]); the lease
//! expiry task; then every client URL is bound (a port in use fails the start) and
//! serves gRPC and HTTP.
//!
//! [`Member::stop`] stops accepting, lets in-flight requests finish, stops the node
//! (which stops the apply thread) and waits for both. If the node stops on its own (a
//! WAL failure), [`Member::failed`] completes so the process can exit non-zero.

use std::future::Future;
use std::pin::Pin;
use std::sync::{mpsc, Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use prost::Message as _;
use skiff_proto::etcdserverpb::{
    cluster_server::ClusterServer, kv_server::KvServer, lease_server::LeaseServer,
    maintenance_server::MaintenanceServer, watch_server::WatchServer,
};
use skiff_proto::skiffpb::internal_request::Request as Req;
use skiff_proto::v3electionpb::election_server::ElectionServer;
use skiff_proto::v3lockpb::lock_server::LockServer;
use skiff_storage::backend::Table;
use skiff_storage::mvcc::{self as st, KvStore, StoreConfig};
use skiff_storage::watch::{WatchConfig, WatchableStore};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::service::Routes;

use crate::api::{
    ClusterService, ElectionService, KvService, LeaseService, LockService, MaintenanceService,
    WatchService,
};
use crate::apply::Applier;
use crate::bootstrap::{self, Layout};
use crate::config::Config;
use crate::http::{self, HealthCheck, Unhealthy};
use crate::ids::RequestIdGen;
use crate::inputs::{NodeInput, RaftStatus};
use crate::lessor::Lessor;
use crate::metrics::Metrics;
use crate::node::Node;
use crate::peer::{PeerConfig, PeerTransport};
use crate::serve;
use crate::server::EtcdServer;
use crate::wait::{AppliedIndex, Wait};
use skiff_api::EtcdError;

/// How long a stopping member waits for open client streams before cutting them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Entries kept in memory behind a snapshot for slow followers (etcd's default).
const CATCH_UP_ENTRIES: u64 = 5000;

impl HealthCheck for EtcdServer {
    fn check(
        &self,
        serializable: bool,
    ) -> Pin<Box<dyn Future<Output = Result<(), Unhealthy>> + Send + '_>> {
        Box::pin(async move {
            let alarms = self
                .alarms
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .describe();
            if let Some(first) = alarms.into_iter().next() {
                return Err(Unhealthy::Alarm(first));
            }
            if self.leader() == 0 {
                return Err(Unhealthy::NoLeader);
            }
            if serializable {
                return Ok(());
            }
            // Like etcd: a request must make it through Raft within a second.
            let noop = Req::Noop(skiff_proto::skiffpb::Noop {});
            match tokio::time::timeout(Duration::from_secs(1), self.propose(noop)).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(Unhealthy::CommitFailed(e.to_string())),
                Err(_) => Err(Unhealthy::CommitFailed("timed out".to_string())),
            }
        })
    }
}

/// Answers lease requests forwarded by followers from this member's lessor.
struct LessorHandler(Arc<Mutex<Lessor>>);

impl crate::peer::LeaseHandler for LessorHandler {
    fn renew(&self, id: i64) -> Result<i64, tonic::Status> {
        let mut lessor = self.0.lock().unwrap_or_else(|p| p.into_inner());
        Ok(lessor.keep_alive(id, Instant::now())?)
    }

    fn time_to_live(&self, id: i64, keys: bool) -> Result<(i64, i64, Vec<Bytes>), tonic::Status> {
        let lessor = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if !lessor.is_primary() {
            return Err(EtcdError::NotLeader.into());
        }
        Ok(lessor.time_to_live(id, keys, Instant::now()))
    }
}

/// A started member.
pub struct Member {
    pub server: Arc<EtcdServer>,
    /// The addresses actually bound, one per `--listen-client-urls` entry.
    pub client_addrs: Vec<std::net::SocketAddr>,
    shutdown: watch::Sender<bool>,
    listeners: Vec<JoinHandle<Result<(), tonic::transport::Error>>>,
    node_thread: Option<std::thread::JoinHandle<()>>,
    apply_thread: Option<std::thread::JoinHandle<()>>,
    failed: watch::Receiver<Option<String>>,
}

fn prepare_data_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        // Like etcd: the data directory is private to the member's user.
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .with_context(|| format!("cannot create data dir {}", dir.display()))
}

/// Rebuilds the lessor from the backend: every lease, then every key's attachment.
pub(crate) fn restore_lessor(store: &KvStore, lessor: &mut Lessor) -> anyhow::Result<()> {
    let now = Instant::now();
    for (key, value) in store.backend().scan(Table::Lease)? {
        let (Ok(id), Ok(ttl)) = (
            <[u8; 8]>::try_from(&key[..]),
            <[u8; 8]>::try_from(&value[..]),
        ) else {
            anyhow::bail!("corrupt lease record in the backend (key {key:?})");
        };
        let (id, ttl) = (i64::from_be_bytes(id), i64::from_be_bytes(ttl));
        lessor
            .grant(id, ttl, now)
            .map_err(|e| anyhow::anyhow!("restoring lease {id:x}: {e}"))?;
    }
    if lessor.ids().is_empty() {
        return Ok(());
    }
    let all = st::RangeRequest {
        key: vec![0],
        range_end: vec![0],
        ..Default::default()
    };
    for kv in store.range(&all)?.kvs {
        if kv.lease != 0 && lessor.attach(kv.lease, Bytes::from(kv.key)).is_err() {
            tracing::warn!(
                lease = kv.lease,
                "a key names a lease that no longer exists"
            );
        }
    }
    Ok(())
}

impl Member {
    /// Starts the member described by `config`.
    pub async fn start(config: Config) -> anyhow::Result<Member> {
        prepare_data_dir(&config.data_dir)?;
        let layout = Layout::new(&config.data_dir);
        let rec = bootstrap::open(&config, &layout)?;
        let member_id = rec.meta.member_id;
        let cluster_id = rec.meta.cluster_id;
        if !rec.fresh && member_id != config.member_id() {
            tracing::warn!(
                "flags describe member {:x} but the data dir holds member {:x}; keeping the data dir's identity",
                config.member_id(),
                member_id
            );
        }
        let metrics = Metrics::new(member_id);
        tracing::info!(
            name = %config.name,
            member_id = %format!("{member_id:x}"),
            cluster_id = %format!("{cluster_id:x}"),
            data_dir = %config.data_dir.display(),
            restarted = !rec.fresh,
            "starting member"
        );

        let store = Arc::new(
            KvStore::open(&layout.db_path, StoreConfig::default())
                .with_context(|| format!("opening the backend {}", layout.db_path.display()))?,
        );
        // A snapshot received from the leader may be newer than the backend (a crash
        // between saving it and loading it): load its backend dump first.
        if let Some(snap) = &rec.snapshot {
            if store.consistent_index() < snap.metadata.index {
                let p = skiff_proto::skiffpb::SnapshotPayload::decode(snap.data.as_ref())
                    .context("undecodable snapshot payload")?;
                if !p.backend.is_empty() {
                    let summary = store
                        .restore_from_dump(p.backend.as_ref())
                        .context("restoring the backend from the snapshot")?;
                    tracing::info!(
                        index = snap.metadata.index,
                        consistent_index = summary.consistent_index,
                        "backend restored from the snapshot"
                    );
                }
            }
        }
        let watchable = Arc::new(WatchableStore::new(store.clone(), WatchConfig::default()));
        let mut lessor = Lessor::new(config.min_lease_ttl_secs());
        restore_lessor(&store, &mut lessor)?;
        let lessor = Arc::new(Mutex::new(lessor));
        let alarm_rows = store.backend().scan(Table::Alarm)?;
        let alarms = crate::alarms::Alarms::from_keys(alarm_rows.iter().map(|(k, _)| k.as_slice()))
            .map_err(|e| anyhow::anyhow!("backend alarm table: {e}"))?;
        let alarms = Arc::new(Mutex::new(alarms));

        let applied = bootstrap::reconcile_applied(&rec.storage, store.consistent_index());
        let voters: Vec<u64> = rec.meta.members.iter().map(|m| m.id).collect();
        let raft_config = skiff_raft::Config {
            id: member_id,
            election_tick: config.election_ticks() as usize,
            heartbeat_tick: 1,
            applied,
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 512,
            check_quorum: true,
            pre_vote: config.pre_vote,
            max_uncommitted_entries_size: 1 << 30,
            seed: member_id ^ std::process::id() as u64,
            ..Default::default()
        };
        raft_config.validate()?;
        let mut raw = skiff_raft::RawNode::new(&raft_config, rec.storage.clone())?;
        if voters == [member_id] {
            // Alone in the cluster: no reason to wait an election timeout.
            raw.campaign()?;
        }

        let (node_tx, node_rx) = mpsc::channel();
        let (apply_tx, apply_rx) = mpsc::channel();
        // Peers: the transport to every other member (its listeners start below).
        let mut transport = PeerTransport::new(
            PeerConfig::new(member_id, cluster_id),
            crate::peer::node_sink(node_tx.clone()),
            tokio::runtime::Handle::current(),
        );
        for m in rec.meta.members.iter().filter(|m| m.id != member_id) {
            transport.add_peer(m.id, m.peer_urls.clone());
        }
        transport.set_lease_handler(Arc::new(LessorHandler(lessor.clone())));
        // A snapshot sent to a follower carries a consistent dump of our backend.
        let dump_from = store.clone();
        transport.set_snapshot_source(Arc::new(move |data: Bytes| {
            let mut p = skiff_proto::skiffpb::SnapshotPayload::decode(data.as_ref())
                .map_err(|e| format!("undecodable snapshot payload: {e}"))?;
            let mut dump = Vec::new();
            dump_from
                .backend()
                .dump(&mut dump)
                .map_err(|e| format!("backend dump: {e}"))?;
            p.backend = Bytes::from(dump);
            Ok(Bytes::from(p.encode_to_vec()))
        }));
        let status = Arc::new(RaftStatus::default());
        let members = Arc::new(RwLock::new(rec.meta.members.clone()));
        let server = Arc::new(EtcdServer {
            request_timeout: EtcdServer::request_timeout_for(&config),
            config: config.clone(),
            member_id,
            cluster_id,
            store: store.clone(),
            watchable: watchable.clone(),
            lessor: lessor.clone(),
            wait: Arc::new(Wait::default()),
            applied: Arc::new(AppliedIndex::new(applied)),
            raft: status.clone(),
            node: Mutex::new(node_tx.clone()),
            ids: RequestIdGen::new(member_id),
            metrics: metrics.clone(),
            members: members.clone(),
            alarms: alarms.clone(),
            forwarder: Arc::new(transport.forwarder()),
        });

        let (failed_tx, failed) = watch::channel(None);
        let failed_tx = Arc::new(failed_tx);
        let (shutdown, _) = watch::channel(false);

        // The peer listeners (bound even for a single member, as etcd does).
        let mut peer_listeners = Vec::new();
        for url in &config.listen_peer_urls {
            let listener = serve::bind(url)
                .await
                .with_context(|| format!("cannot listen for peers on {url}"))?;
            tracing::info!(%url, addr = %listener.local_addr()?, "serving peer traffic");
            let svc = transport.service().into_server();
            let mut stop = shutdown.subscribe();
            peer_listeners.push(tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(svc)
                    .serve_with_incoming_shutdown(
                        tokio_stream::wrappers::TcpListenerStream::new(listener),
                        async move {
                            let _ = stop.wait_for(|s| *s).await;
                        },
                    ),
            ));
        }
        let node = Node {
            raw,
            storage: rec.storage,
            wal: rec.wal,
            snapshotter: rec.snapshotter,
            transport,
            inputs: node_rx,
            apply: apply_tx,
            status,
            metrics: metrics.clone(),
            tick: config.heartbeat_interval,
            catch_up_entries: CATCH_UP_ENTRIES,
            lessor: lessor.clone(),
            lease_extend: config.election_timeout,
        };
        let node_failed = failed_tx.clone();
        let node_thread =
            std::thread::Builder::new()
                .name("raft-node".into())
                .spawn(move || {
                    if let Err(e) = node.run() {
                        tracing::error!(error = %e, "raft node stopped");
                        node_failed.send_replace(Some(format!("raft node: {e}")));
                    }
                })?;
        let applier = Applier {
            store: store.clone(),
            watchable,
            lessor: lessor.clone(),
            wait: server.wait.clone(),
            applied: server.applied.clone(),
            metrics: metrics.clone(),
            cluster_id,
            member_id,
            snapshot_count: config.snapshot_count,
            node: node_tx,
            members,
            alarms,
        };
        let apply_failed = failed_tx.clone();
        let apply_thread = std::thread::Builder::new()
            .name("apply".into())
            .spawn(move || {
                if let Err(e) = applier.run(apply_rx) {
                    tracing::error!(error = %e, "apply stopped");
                    apply_failed.send_replace(Some(format!("apply: {e}")));
                }
            })?;

        tokio::spawn(publish_attributes(server.clone(), shutdown.subscribe()));
        tokio::spawn(housekeeping(server.clone(), shutdown.subscribe()));

        let mut listeners = peer_listeners;
        let mut client_addrs = Vec::new();
        for url in &config.listen_client_urls {
            let listener = serve::bind(url).await?;
            let addr = listener.local_addr()?;
            client_addrs.push(addr);
            tracing::info!(%url, %addr, "serving client traffic (gRPC and HTTP)");
            let http = http::router(metrics.clone(), server.clone() as Arc<dyn HealthCheck>);
            let mut stop = shutdown.subscribe();
            listeners.push(tokio::spawn(serve::serve_client(
                listener,
                grpc_routes(&server),
                http,
                async move {
                    // A dropped sender also means stop.
                    let _ = stop.wait_for(|s| *s).await;
                },
            )));
        }
        Ok(Member {
            server,
            client_addrs,
            shutdown,
            listeners,
            node_thread: Some(node_thread),
            apply_thread: Some(apply_thread),
            failed,
        })
    }

    /// Completes if the member stops on its own (storage failure), with the reason.
    pub async fn failed(&mut self) -> String {
        match self.failed.wait_for(|f| f.is_some()).await {
            Ok(reason) => reason.clone().unwrap_or_default(),
            Err(_) => "member threads are gone".to_string(),
        }
    }

    /// Stops accepting, finishes in-flight requests, stops the node and waits.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.send_replace(true);
        // In-flight unary requests finish; long-lived streams (watches, keep-alives)
        // never would, so they get a grace period and are then cut.
        let listeners = std::mem::take(&mut self.listeners);
        let aborts: Vec<_> = listeners.iter().map(|t| t.abort_handle()).collect();
        let drain = async {
            for task in listeners {
                match task.await {
                    Ok(r) => r?,
                    Err(e) if e.is_cancelled() => {}
                    Err(e) => return Err(anyhow::anyhow!("listener task panicked: {e}")),
                }
            }
            Ok::<(), anyhow::Error>(())
        };
        tokio::pin!(drain);
        if tokio::time::timeout(SHUTDOWN_GRACE, &mut drain)
            .await
            .is_err()
        {
            tracing::info!("closing client streams still open after {SHUTDOWN_GRACE:?}");
            for a in &aborts {
                a.abort();
            }
            drain.await?;
        }
        let _ = self
            .server
            .node
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(NodeInput::Stop);
        let threads = [self.node_thread.take(), self.apply_thread.take()];
        tokio::task::spawn_blocking(move || {
            for t in threads.into_iter().flatten() {
                let _ = t.join();
            }
        })
        .await?;
        // The store's background compactor stops when the last reference goes.
        self.server.store.sync().context("final backend sync")?;
        Ok(())
    }
}

/// The gRPC services served on every client URL.
fn grpc_routes(server: &Arc<EtcdServer>) -> Routes {
    let max = serve::max_recv_bytes(server.config.max_request_bytes);
    Routes::new(
        KvServer::new(KvService::new(server.clone(), server.config.max_txn_ops))
            .max_decoding_message_size(max)
            .max_encoding_message_size(usize::MAX),
    )
    .add_service(
        WatchServer::new(WatchService::new(server.clone()))
            .max_decoding_message_size(max)
            .max_encoding_message_size(usize::MAX),
    )
    .add_service(
        LeaseServer::new(LeaseService::new(server.clone()))
            .max_decoding_message_size(max)
            .max_encoding_message_size(usize::MAX),
    )
    .add_service(
        LockServer::new(LockService::new(server.clone()))
            .max_decoding_message_size(max)
            .max_encoding_message_size(usize::MAX),
    )
    .add_service(
        ElectionServer::new(ElectionService::new(server.clone()))
            .max_decoding_message_size(max)
            .max_encoding_message_size(usize::MAX),
    )
    .add_service(
        ClusterServer::new(ClusterService::new(server.clone()))
            .max_decoding_message_size(max)
            .max_encoding_message_size(usize::MAX),
    )
    .add_service(
        MaintenanceServer::new(MaintenanceService::new(server.clone()))
            .max_decoding_message_size(max)
            .max_encoding_message_size(usize::MAX),
    )
}

/// Publishes this member's name and client URLs through Raft once there is a leader,
/// so every member can list them (etcd's publish); retried until it commits.
async fn publish_attributes(server: Arc<EtcdServer>, mut stop: watch::Receiver<bool>) {
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

/// Periodic work: revoking expired leases (the leader decides, Raft applies) and the
/// backend size gauge.
async fn housekeeping(server: Arc<EtcdServer>, mut stop: watch::Receiver<bool>) {
    let mut revoking: std::collections::HashMap<i64, Instant> = Default::default();
    // etcd's default progress-notify interval for watchers that asked for it.
    const PROGRESS_NOTIFY_INTERVAL: Duration = Duration::from_secs(600);
    let mut last_progress = Instant::now();
    let mut interval = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let now = Instant::now();
        let expired = server
            .lessor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .expired(now);
        // A revoke already on its way is not proposed again for a while.
        revoking.retain(|_, at| now.duration_since(*at) < server.request_timeout);
        for id in expired {
            if revoking.insert(id, now).is_some() {
                continue;
            }
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
        if now.duration_since(last_progress) >= PROGRESS_NOTIFY_INTERVAL {
            server.watchable.progress_notify();
            last_progress = now;
        }
        server
            .metrics
            .keys_total
            .set(server.store.index_len() as i64);
        if let Ok(meta) = std::fs::metadata(server.store.backend().path()) {
            server.metrics.db_total_size_bytes.set(meta.len() as i64);
            server
                .metrics
                .db_total_size_in_use_bytes
                .set(meta.len() as i64);
        }
    }
}
