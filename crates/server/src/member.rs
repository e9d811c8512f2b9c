//! A running member: the wiring of its parts, and shutdown. Domain logic lives in
//! the parts (`lease`, `membership`, `apply`, `node`, `server`, `tasks`); this file
//! only builds them, connects them and starts them.
//!
//! Start-up order: the data directory (created with mode 0700 when missing; a path
//! that is a file is refused); the Raft state from the WAL and snapshots, or a new one
//! ([`crate::bootstrap`]); the MVCC store; the lease table, the alarms, the member
//! table and the auth store from the backend; the lease clock; the Raft node thread
//! ([`crate::node`]) and the apply thread ([`crate::apply`]); the background tasks;
//! then every client URL is
//! bound (a port in use fails the start) and serves gRPC and HTTP through the request
//! facade, wrapped in its layers ([`crate::facade`]).
//!
//! Fail-stop: the node and apply threads are critical. If either returns an error or
//! panics, [`Member::failed`] completes with the reason and the process exits non-zero
//! (`main.rs`): a member that can no longer persist or apply must not keep voting.
//! [`Member::stop`] first hands leadership to a caught-up voter if this member leads
//! (so writes do not wait an election timeout), then stops accepting, lets in-flight
//! requests finish (streams get a
//! short grace), stops the node (which stops the apply thread) and waits for both.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use prost::Message as _;
use skiff_storage::backend::Table;
use skiff_storage::mvcc::{KvStore, StoreConfig};
use skiff_storage::watch::{WatchConfig, WatchableStore};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::alarms::Alarms;
use crate::apply::Applier;
use crate::auth::jwt::JwtTokens;
use crate::auth::{AuthShared, AuthStore, SimpleTokens, TokenProvider};
use crate::bootstrap::{self, Layout};
use crate::config::{ClusterState, Config};
use crate::facade::{Auth, Learner, Quota, Validate};
use crate::ids::RequestIdGen;
use crate::inputs::{NodeInput, RaftStatus};
use crate::lease::{LeaseClock, LeaseTable};
use crate::membership::MemberTable;
use crate::metrics::Metrics;
use crate::node::{DiskIo, Node, SnapshotWriter};
use crate::peer::{PeerConfig, PeerTransport};
use crate::server::{EtcdServer, PeerMembership};
use crate::wait::{AppliedIndex, Wait};
use crate::{api, gateway, http, serve, tasks, tls};

/// How long a stopping member waits for open client streams before cutting them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Entries kept in memory behind a snapshot for slow followers (etcd's default; a
/// failpoints build may take another from `SKIFF_FAILPOINTS_CATCH_UP_ENTRIES`).
const CATCH_UP_ENTRIES: u64 = 5000;

/// A started member.
pub struct Member {
    pub server: Arc<EtcdServer>,
    /// The addresses actually bound, one per `--listen-client-urls` entry.
    pub client_addrs: Vec<std::net::SocketAddr>,
    shutdown: watch::Sender<bool>,
    client_listeners: Vec<JoinHandle<Result<(), serve::ServeError>>>,
    /// Peer listeners carry other members' long-lived streams: cut, not drained.
    peer_listeners: Vec<JoinHandle<Result<(), tonic::transport::Error>>>,
    node_thread: Option<std::thread::JoinHandle<()>>,
    apply_thread: Option<std::thread::JoinHandle<()>>,
    /// Ends soon after the node loop (its writer is the loop's).
    snapshot_thread: Option<std::thread::JoinHandle<()>>,
    failed: watch::Receiver<Option<String>>,
    /// Marks the data dir of a removed member.
    removed_marker: std::path::PathBuf,
}

/// Creates the data directory (private to the member's user, as etcd's is).
fn prepare_data_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() && !dir.is_dir() {
        anyhow::bail!(
            "data dir {} exists and is not a directory; pass a directory to --data-dir",
            dir.display()
        );
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .with_context(|| format!("cannot create data dir {}", dir.display()))
}

/// Where a critical thread reports that it ended on its own; the first report wins.
#[derive(Clone)]
struct FailureReport(Arc<watch::Sender<Option<String>>>);

impl FailureReport {
    fn report(&self, reason: String) {
        tracing::error!(%reason, "member failing");
        self.0.send_if_modified(|slot| {
            if slot.is_none() {
                *slot = Some(reason);
                true
            } else {
                false
            }
        });
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string())
}

/// Runs `work` on a named thread whose error return or panic fails the member.
fn spawn_critical<E: std::fmt::Display>(
    name: &'static str,
    failure: FailureReport,
    work: impl FnOnce() -> Result<(), E> + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(
            move || match std::panic::catch_unwind(AssertUnwindSafe(work)) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failure.report(format!("{name} thread stopped: {e}")),
                Err(panic) => failure.report(format!(
                    "{name} thread panicked: {}",
                    panic_message(panic.as_ref())
                )),
            },
        )
}

/// The hosts of `urls` (the names generated TLS certificates are for).
fn hosts(urls: &[crate::config::Url]) -> Vec<String> {
    urls.iter().map(|u| u.host().to_string()).collect()
}

/// What a member started with `--initial-cluster-state=existing` and an empty data
/// dir learns from the peers `--initial-cluster` names (etcd asks their `/members`):
/// the cluster, and its own ID, the member whose peer URLs are its advertised ones.
/// `peer_dial_tls` is the member's own peer client configuration.
async fn join(
    config: &Config,
    peer_dial_tls: Option<Arc<rustls::ClientConfig>>,
) -> anyhow::Result<Joined> {
    let own: Vec<String> = config
        .initial_advertise_peer_urls
        .iter()
        .map(|u| u.to_string())
        .collect();
    let mut own_sorted = own.clone();
    own_sorted.sort();
    let peers: Vec<String> = config
        .initial_cluster
        .values()
        .flatten()
        .map(|u| u.to_string())
        .filter(|u| !own.contains(u))
        .collect();
    if peers.is_empty() {
        anyhow::bail!("--initial-cluster-state=existing: --initial-cluster names no other member to learn the cluster from");
    }
    let dial = PeerConfig {
        tls: peer_dial_tls,
        dial_timeout: Duration::from_secs(2),
        ..PeerConfig::new(0, 0)
    };
    let mut last: String;
    // The peers may be starting too: keep asking for a while, as etcd does.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let resp = loop {
        match crate::peer::fetch_members(&dial, &peers).await {
            Ok(r) if r.cluster_id != 0 => break r,
            Ok(_) => last = "the peer does not serve the cluster yet".to_string(),
            Err(e) => last = e.to_string(),
        }
        if std::time::Instant::now() > deadline {
            anyhow::bail!("cannot fetch the cluster from the peers {peers:?}: {last}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let me = resp.members.iter().find(|m| {
        let mut urls = m.peer_urls.clone();
        urls.sort();
        urls == own_sorted
    });
    let Some(me) = me else {
        anyhow::bail!(
            "no member of cluster {:x} has the peer URLs {own:?}: add this member first (etcdctl member add --peer-urls={})",
            resp.cluster_id,
            own.join(",")
        );
    };
    tracing::info!(
        member_id = %format!("{:x}", me.id),
        cluster_id = %format!("{:x}", resp.cluster_id),
        members = resp.members.len(),
        "joining a running cluster"
    );
    Ok(Joined {
        boot: bootstrap::Joining {
            member_id: me.id,
            cluster_id: resp.cluster_id,
            bootstrap: resp.bootstrap,
        },
        current: resp.members,
    })
}

/// What [`join`] learned.
struct Joined {
    boot: bootstrap::Joining,
    current: Vec<skiff_proto::skiffpb::MemberRecord>,
}

/// What a removed member says, as etcd does (and then exits non-zero).
pub use crate::peer::REMOVED;

/// The file that marks a data dir whose member was removed: it never starts again.
fn removed_marker(layout: &Layout) -> std::path::PathBuf {
    layout.member_dir.join("removed")
}

/// What the apply thread calls once this member's removal is durable: the data dir
/// is marked, and the member stops a moment later (as etcd, so the answer to the
/// removal still reaches its client).
fn removal_report(layout: &Layout, failure: FailureReport) -> Box<dyn Fn() + Send> {
    let marker = removed_marker(layout);
    Box::new(move || {
        if let Err(e) = std::fs::write(&marker, REMOVED) {
            tracing::error!(file = %marker.display(), error = %e, "cannot mark the data dir as removed");
        }
        let failure = failure.clone();
        let _ = std::thread::Builder::new()
            .name("removed".into())
            .spawn(move || {
                std::thread::sleep(Duration::from_secs(1));
                failure.report(REMOVED.to_string());
            });
    })
}

/// Loads a snapshot received from the leader that is newer than the backend (a crash
/// between saving it and loading it).
fn catch_up_backend(
    store: &KvStore,
    snapshot: Option<&skiff_raft::Snapshot>,
) -> anyhow::Result<()> {
    let Some(snap) = snapshot else {
        return Ok(());
    };
    if store.consistent_index() >= snap.metadata.index {
        return Ok(());
    }
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
    Ok(())
}

impl Member {
    /// Starts the member described by `config`.
    pub async fn start(config: Config) -> anyhow::Result<Member> {
        prepare_data_dir(&config.data_dir)?;
        let layout = crate::etcd_import::layout(&config)?;
        if removed_marker(&layout).exists() {
            anyhow::bail!("{REMOVED}; the data-dir used by this member must be removed");
        }
        // Peer TLS material (given, or generated under <data-dir>/fixtures as etcd
        // does): resolved once, for joining and for the transport.
        let peer_tls = tls::Material::resolve(
            &config.peer_tls,
            &config.data_dir.join("fixtures").join("peer"),
            &hosts(&config.listen_peer_urls),
        )?;
        let peer_dial_tls = peer_tls.as_ref().map(|m| m.client_config()).transpose()?;
        let joining = if config.initial_cluster_state == ClusterState::Existing
            && !skiff_storage::wal::Wal::exists(&layout.wal_dir)
        {
            Some(join(&config, peer_dial_tls.clone()).await?)
        } else {
            None
        };
        let mut rec = bootstrap::open(&config, &layout, joining.as_ref().map(|j| &j.boot))?;
        if config.force_new_cluster && !rec.fresh {
            bootstrap::force_new_cluster(&mut rec)?;
        }
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
        // etcd reports a disabled (negative) quota as the negative flag value.
        metrics
            .quota_backend_bytes
            .set(config.quota_backend_bytes.map_or(-1, |q| q as i64));
        tracing::info!(
            name = %config.name,
            member_id = %format!("{member_id:x}"),
            cluster_id = %format!("{cluster_id:x}"),
            data_dir = %config.data_dir.display(),
            restarted = !rec.fresh,
            "starting member"
        );

        // The state machine's state, from the backend.
        let store = Arc::new(
            KvStore::open(&layout.db_path, store_config(&config))
                .with_context(|| format!("opening the backend {}", layout.db_path.display()))?,
        );
        catch_up_backend(&store, rec.snapshot.as_ref())?;
        store
            .backend()
            .observe_commits(metrics.backend_commit_observer());
        let watchable = Arc::new(WatchableStore::new(
            store.clone(),
            WatchConfig {
                stream_bytes: config.watch_stream_bytes,
                ..WatchConfig::default()
            },
        ));
        let leases = LeaseTable::restore(&store, config.min_lease_ttl_secs())?;
        let alarm_rows = store.backend().scan(Table::Alarm)?;
        let alarms = Alarms::from_keys(alarm_rows.iter().map(|(k, _)| k.as_slice()))
            .map_err(|e| anyhow::anyhow!("backend alarm table: {e}"))?;
        let (alarms_view, alarms_rx) = watch::channel(Arc::new(alarms.clone()));
        let (member_table, members) = MemberTable::open(&store, &rec.meta.members)?;
        let tokens = match &config.jwt {
            None => TokenProvider::Simple(SimpleTokens::new(config.auth_token_ttl)),
            Some(opts) => {
                if !opts.unknown.is_empty() {
                    tracing::warn!(keys = ?opts.unknown, "unknown JWT options");
                }
                TokenProvider::Jwt(Box::new(
                    JwtTokens::load(opts).context("failed to create token provider")?,
                ))
            }
        };
        let auth_rows = store.backend().scan(Table::Auth)?;
        let auth_store = AuthStore::from_rows(&auth_rows)?;
        let (auth_view, auth_rx) = watch::channel(Arc::new(auth_store.clone()));
        let auth = AuthShared {
            view: auth_rx,
            tokens: Arc::new(tokens),
            bcrypt_cost: config.bcrypt_cost,
        };

        // Raft.
        let applied = bootstrap::reconcile_applied(&rec.storage, store.consistent_index());
        // What this member's own log says is committed: client traffic waits until it
        // is applied (see the client listeners below).
        let replay_to = rec.storage.rl().hard_state().commit;
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
        crate::node::replay_conf_changes(&mut raw, &rec.storage, applied)?;
        if raw.raft.prs.conf_state().voters == [member_id] {
            // Alone in the cluster: no reason to wait an election timeout.
            raw.campaign()?;
        }

        let request_timeout = EtcdServer::request_timeout_for(&config);
        let (node_tx, node_rx) = mpsc::channel();
        let (apply_tx, apply_rx) = mpsc::channel();
        let (expired_tx, expired_rx) = tokio::sync::mpsc::unbounded_channel();
        let (lease_clock, clock) =
            LeaseClock::new(config.election_timeout, request_timeout, expired_tx);
        let (renewals_tx, renewals_rx) = tokio::sync::mpsc::unbounded_channel();
        // Lease checkpoints (see `lease`): on by default, unlike etcd 3.4;
        // `--experimental-enable-lease-checkpoint=false` gives etcd 3.4's behaviour.
        let lease_clock = if config.lease_checkpoint {
            lease_clock.with_checkpoints(renewals_tx)
        } else {
            lease_clock
        };
        clock.reset(leases.granted());
        tokio::spawn(lease_clock.run());

        // Client TLS material (given, or generated under <data-dir>/fixtures).
        let client_tls = if config.listen_client_urls.iter().any(|u| u.is_tls()) {
            tls::Material::resolve(
                &config.client_tls,
                &config.data_dir.join("fixtures").join("client"),
                &hosts(&config.listen_client_urls),
            )?
            .map(|m| m.server_config(tls::Port::Client))
            .transpose()?
        } else {
            None
        };
        let peer_serve_tls = peer_tls
            .as_ref()
            .map(|m| m.server_config(tls::Port::Peer))
            .transpose()?;

        // Peers: the transport to every other member (its listeners start below).
        let mut transport = PeerTransport::new(
            PeerConfig {
                metrics: metrics.peer.clone(),
                tls: peer_dial_tls,
                ..PeerConfig::new(member_id, cluster_id)
            },
            crate::peer::node_sink(node_tx.clone()),
            tokio::runtime::Handle::current(),
        );
        for m in members.borrow().iter().filter(|m| m.id != member_id) {
            transport.add_peer(m.id, m.peer_urls.clone());
        }
        // A joining member talks to the members of today, not only to those its
        // member table (as of the start of the log) knows.
        for m in joining.iter().flat_map(|j| &j.current) {
            if m.id != member_id {
                transport.add_peer(m.id, m.peer_urls.clone());
            }
        }
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
        let server = Arc::new(EtcdServer {
            response_budget: crate::budget::ResponseBudget::new(
                config.max_inflight_response_bytes,
                request_timeout,
            ),
            request_timeout,
            config: config.clone(),
            member_id,
            cluster_id,
            store: store.clone(),
            watchable: watchable.clone(),
            wait: Arc::new(Wait::default()),
            applied: Arc::new(AppliedIndex::new(applied)),
            raft: status.clone(),
            node: node_tx.clone(),
            apply: apply_tx.clone(),
            lease_clock: clock.clone(),
            ids: RequestIdGen::new(member_id),
            metrics: metrics.clone(),
            members,
            alarms: alarms_rx,
            forwarder: transport.forwarder(),
            peers: transport.activity(),
            membership_lock: tokio::sync::Mutex::new(()),
            bootstrap_members: rec.meta.members.clone(),
            auth: auth.clone(),
        });
        transport.set_lease_handler(Arc::new(server.leader_leases()));
        transport.set_membership_handler(Arc::new(PeerMembership(Arc::downgrade(&server))));

        let (failed_tx, failed) = watch::channel(None);
        let failure = FailureReport(Arc::new(failed_tx));
        let (shutdown, _) = watch::channel(false);

        // The peer listeners (bound even for a single member, as etcd does).
        let mut peer_listeners = Vec::new();
        for url in &config.listen_peer_urls {
            let listener = serve::bind(url)
                .await
                .with_context(|| format!("cannot listen for peers on {url}"))?;
            tracing::info!(%url, addr = %listener.local_addr()?, "serving peer traffic");
            let svc = transport.service().into_server();
            let server = tonic::transport::Server::builder().add_service(svc);
            peer_listeners.push(if url.is_tls() {
                let tls = peer_serve_tls
                    .clone()
                    .context("an https peer URL needs peer TLS material")?;
                tokio::spawn(server.serve_with_incoming(tls::listen::accept(listener, tls, "peer")))
            } else {
                tokio::spawn(server.serve_with_incoming(serve::accept_nodelay(listener)))
            });
        }

        // The critical threads: the node loop, the apply thread, and the writer of the
        // member's own snapshot files.
        let (snapshot_writer, write_snapshots) = SnapshotWriter::new(
            store.clone(),
            rec.snapshotter.clone(),
            rec.wal.dir().to_path_buf(),
            config.max_snapshots as usize,
            node_tx.clone(),
        );
        let snapshot_thread = spawn_critical("snapshot-save", failure.clone(), write_snapshots)?;
        let io = DiskIo {
            wal: rec.wal,
            snapshotter: rec.snapshotter,
            snapshot_writer,
            transport,
            apply: apply_tx,
            lease_clock: clock.clone(),
            metrics: metrics.clone(),
            max_wals: config.max_wals,
        };
        let node = Node::new(
            raw,
            rec.storage,
            io,
            status,
            metrics.clone(),
            skiff_failpoints::knob(skiff_failpoints::CATCH_UP_ENTRIES).unwrap_or(CATCH_UP_ENTRIES),
        );
        if config.initial_corrupt_check {
            // Before Raft runs and before any client is served (etcd's order).
            crate::corrupt::initial_check(&store, &server.members_now(), member_id).await?;
        }
        let tick = config.heartbeat_interval;
        let node_thread = spawn_critical("raft-node", failure.clone(), move || {
            node.run(node_rx, tick)
        })?;
        let applier = Applier {
            store: store.clone(),
            watchable,
            leases,
            lease_clock: clock,
            members: member_table,
            alarms,
            alarms_view,
            wait: server.wait.clone(),
            applied: server.applied.clone(),
            metrics: metrics.clone(),
            cluster_id,
            member_id,
            snapshot_count: config.snapshot_count,
            node: node_tx,
            min_lease_ttl: config.min_lease_ttl_secs(),
            on_removed: removal_report(&layout, failure.clone()),
            auth: auth_store,
            auth_view,
            tokens: auth.tokens.clone(),
            warning_apply_duration: config.warning_apply_duration,
            sessions: crate::session::Sessions::load(&store)
                .map_err(|e| anyhow::anyhow!("loading client sessions from the backend: {e}"))?,
        };
        let backend_failure = failure.clone();
        let apply_thread = spawn_critical("apply", failure, move || applier.run(apply_rx))?;
        tokio::spawn(tasks::watch_backend(
            store.clone(),
            move |reason| backend_failure.report(reason),
            shutdown.subscribe(),
        ));

        tokio::spawn(tasks::publish_attributes(
            server.clone(),
            shutdown.subscribe(),
        ));
        if config.initial_election_tick_advance {
            tokio::spawn(tasks::advance_election_ticks(
                server.clone(),
                config.election_ticks(),
                shutdown.subscribe(),
            ));
        }
        tokio::spawn(tasks::revoke_expired(
            server.clone(),
            expired_rx,
            shutdown.subscribe(),
        ));
        tokio::spawn(crate::lease::checkpoint::checkpoint_renewals(
            server.clone(),
            renewals_rx,
            shutdown.subscribe(),
        ));
        tokio::spawn(tasks::housekeeping(server.clone(), shutdown.subscribe()));
        if let Some(every) = config.corrupt_check_time {
            tokio::spawn(crate::corrupt::periodic_check(
                server.clone(),
                every,
                shutdown.subscribe(),
            ));
        }
        if let Some(mode) = config.auto_compaction {
            tokio::spawn(tasks::auto_compact(
                server.clone(),
                mode,
                shutdown.subscribe(),
            ));
        }

        // The request pipeline every front end goes through.
        let header_source = server.clone();
        let learner_source = server.clone();
        let facade = Arc::new(Learner::new(
            Arc::new(Validate::new(
                Arc::new(Auth::new(
                    Arc::new(Quota::new(server.clone(), server.clone())),
                    auth.clone(),
                    Arc::new(move || header_source.header()),
                )),
                config.max_txn_ops,
            )),
            Arc::new(move || learner_source.is_learner()),
        ));
        let mut client_addrs = Vec::new();
        let mut client_listeners = Vec::new();
        let serve_config = Arc::new(config.clone());
        for url in &config.listen_metrics_urls {
            let listener = serve::bind(url)
                .await
                .with_context(|| format!("cannot listen for metrics on {url}"))?;
            tracing::info!(%url, addr = %listener.local_addr()?, "serving /metrics and /health");
            let mut stop = shutdown.subscribe();
            let router = http::metrics_router(metrics.clone(), facade.clone());
            tokio::spawn(async move {
                let stopped = async move {
                    let _ = stop.wait_for(|s| *s).await;
                };
                if let Err(e) = serve::serve_http(listener, router, stopped).await {
                    tracing::warn!(error = %e, "metrics listener stopped");
                }
            });
        }
        for url in &config.listen_client_urls {
            let listener = serve::bind(url).await?;
            let addr = listener.local_addr()?;
            client_addrs.push(addr);
            tracing::info!(%url, %addr, "serving client traffic (gRPC and HTTP)");
            let mut stop = shutdown.subscribe();
            let mut http = http::router(metrics.clone(), facade.clone());
            if config.enable_grpc_gateway {
                let auth = auth.clone();
                http = http.merge(gateway::common_name::refuse_common_names(
                    gateway::router(facade.clone(), config.max_request_bytes),
                    Arc::new(move || auth.now().enabled),
                ));
            }
            let serving = serve::serve_client_with(
                listener,
                metrics.instrument_grpc(api::routes(facade.clone(), config.max_request_bytes)),
                http,
                Some(serve_config.clone()),
                url.is_tls().then(|| client_tls.clone()).flatten(),
                async move {
                    // A dropped sender also means stop.
                    let _ = stop.wait_for(|s| *s).await;
                },
            );
            // The port is bound (connections wait in its backlog), but no request is
            // answered before the entries this member's log already committed are
            // applied: until then its store and auth state are older than what it
            // served before a restart (a serializable read could go back in time, a
            // token revoked before the crash would still work). etcd waits longer (for
            // its attributes to be published through Raft, which needs a quorum).
            let applied = server.applied.clone();
            client_listeners.push(tokio::spawn(async move {
                applied.wait_for(replay_to).await;
                serving.await
            }));
        }
        Ok(Member {
            server,
            client_addrs,
            shutdown,
            client_listeners,
            peer_listeners,
            node_thread: Some(node_thread),
            apply_thread: Some(apply_thread),
            snapshot_thread: Some(snapshot_thread),
            failed,
            removed_marker: removed_marker(&layout),
        })
    }

    /// Completes if the member fails on its own (storage failure, a critical thread
    /// gone), with the reason.
    pub async fn failed(&mut self) -> String {
        let reason = match self.failed.wait_for(|f| f.is_some()).await {
            Ok(reason) => reason.clone().unwrap_or_default(),
            Err(_) => "member threads are gone".to_string(),
        };
        if reason.contains(REMOVED) {
            // Learned from a peer (this member missed its own removal): never again.
            if let Err(e) = std::fs::write(&self.removed_marker, REMOVED) {
                tracing::error!(error = %e, "cannot mark the data dir as removed");
            }
        }
        reason
    }

    /// Stops accepting, finishes in-flight requests, stops the node and waits.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let started = std::time::Instant::now();
        // A leader first hands over to a caught-up voter, so the others' writes do
        // not wait an election timeout for a new leader (etcd 3.4 does not).
        self.server.hand_off_leadership().await;
        self.shutdown.send_replace(true);
        // In-flight unary requests finish (their entries still need the peers, so the
        // peer listeners stay up meanwhile); long-lived client streams (watches,
        // keep-alives) never would, so they get a grace period and are then cut.
        let listeners = std::mem::take(&mut self.client_listeners);
        let aborts: Vec<_> = listeners.iter().map(|t| t.abort_handle()).collect();
        let drain = async {
            for task in listeners {
                match task.await {
                    Ok(r) => r.map_err(|e| anyhow::anyhow!(e))?,
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
        for peer in std::mem::take(&mut self.peer_listeners) {
            peer.abort();
        }
        tracing::debug!(elapsed = ?started.elapsed(), "listeners stopped");
        let _ = self.server.node.send(NodeInput::Stop);
        let threads = [
            self.node_thread.take(),
            self.apply_thread.take(),
            self.snapshot_thread.take(),
        ];
        tokio::task::spawn_blocking(move || {
            for t in threads.into_iter().flatten() {
                let _ = t.join();
            }
        })
        .await?;
        tracing::debug!(elapsed = ?started.elapsed(), "node, apply and snapshot threads stopped");
        // The store's background compactor stops when the last reference goes.
        self.server.store.sync().context("final backend sync")?;
        tracing::debug!(elapsed = ?started.elapsed(), "member stopped");
        Ok(())
    }
}

/// The store's tuning from the member's flags: `--experimental-compaction-batch-limit`
/// rows per physical-compaction transaction (etcd's meaning; 0 or less is etcd's
/// default, 1000), and `--backend-batch-interval` / `--backend-batch-limit` as the
/// bounds between the backend's durable commits.
fn store_config(config: &Config) -> StoreConfig {
    let mut cfg = StoreConfig::default();
    if let Ok(limit) = usize::try_from(config.compaction_batch_limit) {
        if limit > 0 {
            cfg.compaction_batch = limit;
        }
    }
    // etcd's backend batch is what its backend commits (and fsyncs) at once; here every
    // apply is visible at once and only the durable commits are batched, so the two
    // flags bound those (what a crash replays from the WAL).
    if let Some(interval) = config.backend_batch_interval {
        cfg.backend.durable_interval = interval;
    }
    cfg.backend.durable_after_entries = config.backend_batch_limit;
    cfg
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser;

    use super::*;
    use crate::config::Flags;

    fn config(args: &[&str]) -> Config {
        let mut all = vec!["skiff"];
        all.extend_from_slice(args);
        Config::from_flags(Flags::try_parse_from(all).unwrap()).unwrap()
    }

    #[test]
    fn the_backend_batch_flags_reach_the_store() {
        let defaults = StoreConfig::default();
        let cfg = store_config(&config(&[]));
        assert_eq!(
            cfg.backend.durable_interval,
            defaults.backend.durable_interval
        );
        assert_eq!(cfg.backend.durable_after_entries, None);
        let cfg = store_config(&config(&[
            "--backend-batch-interval",
            "100ms",
            "--backend-batch-limit",
            "10000",
        ]));
        assert_eq!(cfg.backend.durable_interval, Duration::from_millis(100));
        assert_eq!(cfg.backend.durable_after_entries, Some(10000));
    }
}
