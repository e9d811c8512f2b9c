//! A running member: its identity, data directory, metrics and client listeners.
//!
//! Start-up order follows etcd: validate the data directory (created with mode 0700
//! when missing), derive the member and cluster IDs, bind every client URL (a port
//! already in use fails the start), then serve. [`Member::stop`] stops accepting,
//! lets in-flight requests finish and waits for the listeners to close.
//!
//! Until the Raft node loop is attached, the member knows no leader: `/health`
//! answers `{"health":"false"}` with 503 and the `etcd_server_has_leader` gauge is 0,
//! which is the truth about a member that cannot commit.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::service::Routes;

use crate::config::Config;
use crate::http::{self, HealthCheck, Unhealthy};
use crate::metrics::Metrics;
use crate::serve;

/// State shared by the member's tasks and endpoints.
#[derive(Debug)]
pub struct MemberState {
    pub member_id: u64,
    pub cluster_id: u64,
    /// The leader this member believes in; 0 is none.
    pub leader: AtomicU64,
}

impl HealthCheck for MemberState {
    fn check(
        &self,
        _serializable: bool,
    ) -> Pin<Box<dyn Future<Output = Result<(), Unhealthy>> + Send + '_>> {
        Box::pin(async move {
            if self.leader.load(Ordering::Acquire) == 0 {
                return Err(Unhealthy::NoLeader);
            }
            Ok(())
        })
    }
}

/// A started member.
pub struct Member {
    pub config: Config,
    pub state: Arc<MemberState>,
    pub metrics: Metrics,
    /// The addresses actually bound, one per `--listen-client-urls` entry.
    pub client_addrs: Vec<std::net::SocketAddr>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<Result<(), tonic::transport::Error>>>,
}

fn prepare_data_dir(dir: &Path) -> anyhow::Result<()> {
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

impl Member {
    /// Starts the member described by `config`.
    pub async fn start(config: Config) -> anyhow::Result<Member> {
        prepare_data_dir(&config.data_dir)?;
        let state = Arc::new(MemberState {
            member_id: config.member_id(),
            cluster_id: config.cluster_id(),
            leader: AtomicU64::new(0),
        });
        let metrics = Metrics::new(state.member_id);
        tracing::info!(
            name = %config.name,
            member_id = %format!("{:x}", state.member_id),
            cluster_id = %format!("{:x}", state.cluster_id),
            data_dir = %config.data_dir.display(),
            "starting member"
        );

        let (shutdown, _) = watch::channel(false);
        let mut tasks = Vec::new();
        let mut client_addrs = Vec::new();
        for url in &config.listen_client_urls {
            let listener = serve::bind(url).await?;
            let addr = listener.local_addr()?;
            client_addrs.push(addr);
            tracing::info!(%url, %addr, "serving client traffic (gRPC and HTTP)");
            let http = http::router(metrics.clone(), state.clone() as Arc<dyn HealthCheck>);
            let mut stop = shutdown.subscribe();
            tasks.push(tokio::spawn(serve::serve_client(
                listener,
                Routes::default(),
                http,
                async move {
                    // A dropped sender also means stop.
                    let _ = stop.wait_for(|s| *s).await;
                },
            )));
        }
        Ok(Member {
            config,
            state,
            metrics,
            client_addrs,
            shutdown,
            tasks,
        })
    }

    /// Stops accepting, finishes in-flight requests and waits for the listeners.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.send_replace(true);
        for task in self.tasks {
            task.await.context("listener task panicked")??;
        }
        Ok(())
    }
}
