//! A cluster of server processes under test, run from a temporary directory.
//!
//! The server is a black box that takes etcd's flags (`--name`, `--data-dir`,
//! `--listen-client-urls`, `--initial-cluster`, ...): etcd itself or Skiff. Members listen
//! on loopback, or inside the network namespaces of a [`Net`] when partitions are wanted.
//!
//! With peer proxies, each member's advertised peer URL is its proxy's (loopback only).
//! With TLS ([`ClusterSpec::tls`]), every URL is `https` and the members run with
//! client and peer mTLS (etcd's flags, see [`crate::tls`]).
//!
//! Guarantees: every process this module starts is killed when the [`Cluster`] is dropped
//! (SIGCONT then SIGKILL, synchronously, on every exit path including panics), and each
//! member's stdout/stderr is appended to `<dir>/<name>.log` across restarts.

use std::fs::OpenOptions;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use thiserror::Error;
use tokio::process::{Child, Command};

use crate::net::Net;
use crate::proxy::{Proxy, ProxyError};
use crate::tls::TlsFiles;

#[derive(Debug, Error)]
pub enum ClusterError {
    #[error("cannot start {bin}: {source}")]
    Spawn { bin: String, source: std::io::Error },
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("signal to member {member} failed: {source}")]
    Signal { member: usize, source: nix::Error },
}

/// How to run the cluster.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    pub bin: PathBuf,
    pub members: usize,
    /// Member i uses client port base + 2i and peer port base + 2i + 1.
    pub base_port: u16,
    pub token: String,
    /// Extra flags passed to every member.
    pub extra_args: Vec<String>,
    /// Put a harness-owned TCP proxy in front of every member's peer port (port
    /// base + 2*members + i), advertised as its peer URL, for delay and drop faults.
    pub peer_proxies: bool,
    /// Client and peer mTLS with these files (`None`: plaintext `http`).
    pub tls: Option<TlsFiles>,
}

/// One member process and what it takes to restart it.
pub struct Member {
    pub name: String,
    pub ip: String,
    pub client_port: u16,
    pub peer_port: u16,
    /// Port of the proxy in front of the peer port, when there is one.
    pub proxy_port: Option<u16>,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    /// `http`, or `https` with TLS.
    scheme: &'static str,
    child: Option<Child>,
    paused: bool,
    /// Re-added after a removal: started with `--initial-cluster-state=existing` from
    /// then on (an empty data dir must join, never bootstrap a cluster of its own).
    pub joins_existing: bool,
}

impl Member {
    pub fn client_url(&self) -> String {
        format!("{}://{}:{}", self.scheme, self.ip, self.client_port)
    }
    fn peer_url(&self) -> String {
        format!("{}://{}:{}", self.scheme, self.ip, self.peer_port)
    }
    /// The peer URL the others dial: the proxy's when there is one.
    pub fn advertised_peer_url(&self) -> String {
        match self.proxy_port {
            Some(p) => format!("{}://{}:{p}", self.scheme, self.ip),
            None => self.peer_url(),
        }
    }
    fn pid(&self) -> Option<Pid> {
        self.child
            .as_ref()
            .and_then(|c| c.id())
            .map(|id| Pid::from_raw(id as i32))
    }
}

pub struct Cluster {
    pub spec: ClusterSpec,
    pub members: Vec<Member>,
    /// Restart count per member; a client connection lives within one incarnation.
    pub incarnations: Arc<Vec<AtomicU32>>,
    pub net: Option<Net>,
    /// One per member when `spec.peer_proxies`, in member order.
    pub proxies: Vec<Proxy>,
    /// Environment variables set for every member process started from now on.
    pub env: Vec<(String, String)>,
    dir: PathBuf,
}

impl Cluster {
    /// Lays out the members in `dir` (loopback, or the namespaces of `net`); starts nothing.
    pub fn new(spec: ClusterSpec, dir: &Path, net: Option<Net>) -> Cluster {
        let members = (0..spec.members)
            .map(|i| {
                let name = format!("m{i}");
                let ip = net
                    .as_ref()
                    .map(|n| n.member_ip(i))
                    .unwrap_or_else(|| "127.0.0.1".to_string());
                Member {
                    data_dir: dir.join(format!("{name}.data")),
                    log_path: dir.join(format!("{name}.log")),
                    name,
                    ip,
                    client_port: spec.base_port + 2 * i as u16,
                    peer_port: spec.base_port + 2 * i as u16 + 1,
                    proxy_port: spec
                        .peer_proxies
                        .then_some(spec.base_port + 2 * spec.members as u16 + i as u16),
                    scheme: if spec.tls.is_some() { "https" } else { "http" },
                    child: None,
                    paused: false,
                    joins_existing: false,
                }
            })
            .collect();
        let incarnations = Arc::new((0..spec.members).map(|_| AtomicU32::new(0)).collect());
        Cluster {
            spec,
            members,
            incarnations,
            net,
            proxies: Vec::new(),
            env: Vec::new(),
            dir: dir.to_path_buf(),
        }
    }

    /// Starts the peer proxies (when the spec asks for them); call before starting members.
    pub async fn start_proxies(&mut self) -> Result<(), ProxyError> {
        for m in &self.members {
            if let Some(port) = m.proxy_port {
                let listen = SocketAddr::from(([127, 0, 0, 1], port));
                let target = SocketAddr::from(([127, 0, 0, 1], m.peer_port));
                self.proxies.push(Proxy::start(listen, target).await?);
            }
        }
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn client_urls(&self) -> Vec<String> {
        self.members.iter().map(Member::client_url).collect()
    }

    fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}={}", m.name, m.advertised_peer_url()))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Starts member `i` (again). Its data directory is kept, so a restart recovers.
    pub fn start(&mut self, i: usize) -> Result<(), ClusterError> {
        self.start_with_env(i, &[])
    }

    /// Starts member `i` (again) with `env` added to its environment for this
    /// incarnation only (a later [`Cluster::start`] does not have it).
    pub fn start_with_env(
        &mut self,
        i: usize,
        env: &[(String, String)],
    ) -> Result<(), ClusterError> {
        let initial = self.initial_cluster();
        let m = &mut self.members[i];
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log_path)
            .map_err(|source| ClusterError::Io {
                path: m.log_path.clone(),
                source,
            })?;
        let log2 = log.try_clone().map_err(|source| ClusterError::Io {
            path: m.log_path.clone(),
            source,
        })?;
        let bin = self.spec.bin.display().to_string();
        let mut cmd = match &self.net {
            Some(net) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &net.namespace(i), &bin]);
                c
            }
            None => Command::new(&bin),
        };
        cmd.arg(format!("--name={}", m.name))
            .arg(format!("--data-dir={}", m.data_dir.display()))
            .arg(format!("--listen-client-urls={}", m.client_url()))
            .arg(format!("--advertise-client-urls={}", m.client_url()))
            .arg(format!("--listen-peer-urls={}", m.peer_url()))
            .arg(format!(
                "--initial-advertise-peer-urls={}",
                m.advertised_peer_url()
            ))
            .arg(format!("--initial-cluster={initial}"))
            .arg(if m.joins_existing {
                "--initial-cluster-state=existing"
            } else {
                "--initial-cluster-state=new"
            })
            .arg(format!("--initial-cluster-token={}", self.spec.token))
            .args(self.spec.tls.iter().flat_map(TlsFiles::server_args))
            .args(&self.spec.extra_args)
            .envs(self.env.iter().chain(env).map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .kill_on_drop(true);
        kill_with_parent(&mut cmd);
        let child = cmd.spawn().map_err(|source| ClusterError::Spawn {
            bin: bin.clone(),
            source,
        })?;
        m.child = Some(child);
        m.paused = false;
        self.incarnations[i].fetch_add(1, Ordering::SeqCst);
        tracing::info!(member = i, "started");
        Ok(())
    }

    pub fn start_all(&mut self) -> Result<(), ClusterError> {
        (0..self.members.len()).try_for_each(|i| self.start(i))
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.members[i].child.is_some()
    }

    pub fn is_paused(&self, i: usize) -> bool {
        self.members[i].paused
    }

    fn signal(&self, i: usize, sig: Signal) -> Result<(), ClusterError> {
        match self.members[i].pid() {
            Some(pid) => {
                kill(pid, sig).map_err(|source| ClusterError::Signal { member: i, source })
            }
            None => Ok(()),
        }
    }

    /// SIGKILL, and wait (bounded) for the process to be gone.
    pub async fn kill(&mut self, i: usize) -> Result<(), ClusterError> {
        if self.members[i].paused {
            self.signal(i, Signal::SIGCONT)?;
        }
        self.signal(i, Signal::SIGKILL)?;
        if let Some(mut child) = self.members[i].child.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
        }
        self.members[i].paused = false;
        tracing::info!(member = i, "killed");
        Ok(())
    }

    /// Waits up to `limit` for member `i`'s process to exit by itself; its exit status
    /// if it did (the member then counts as not running), `None` if it still runs (or
    /// was not running).
    pub async fn wait_exit(
        &mut self,
        i: usize,
        limit: Duration,
    ) -> Option<std::process::ExitStatus> {
        let child = self.members[i].child.as_mut()?;
        let status = tokio::time::timeout(limit, child.wait()).await.ok()?.ok()?;
        self.members[i].child = None;
        self.members[i].paused = false;
        tracing::info!(member = i, %status, "exited");
        Some(status)
    }

    pub fn pause(&mut self, i: usize) -> Result<(), ClusterError> {
        self.signal(i, Signal::SIGSTOP)?;
        self.members[i].paused = true;
        tracing::info!(member = i, "paused");
        Ok(())
    }

    pub fn resume(&mut self, i: usize) -> Result<(), ClusterError> {
        self.signal(i, Signal::SIGCONT)?;
        self.members[i].paused = false;
        tracing::info!(member = i, "resumed");
        Ok(())
    }

    /// Kills every process (idempotent). Called by Drop too.
    pub fn stop_all(&mut self) {
        for m in &mut self.members {
            if let Some(pid) = m.pid() {
                let _ = kill(pid, Signal::SIGCONT);
                let _ = kill(pid, Signal::SIGKILL);
            }
            if let Some(mut child) = m.child.take() {
                // Reap synchronously so nothing outlives the harness.
                for _ in 0..50 {
                    if matches!(child.try_wait(), Ok(Some(_)) | Err(_)) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            m.paused = false;
        }
    }
}

/// If the harness itself is killed (SIGKILL runs no destructor), the kernel kills the
/// child too. The signal fires when the spawning thread exits: members are spawned from
/// the runtime's long-lived threads, which live as long as the run.
///
/// The crate's one `unsafe`: std has no safe way to run code between fork and exec.
#[allow(unsafe_code)]
fn kill_with_parent(cmd: &mut Command) {
    // SAFETY: the closure runs in the forked child before exec; it allocates nothing,
    // takes no lock and only makes the async-signal-safe prctl system call.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
        });
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_all();
        self.proxies.clear();
        if let Some(net) = self.net.take() {
            net.teardown();
        }
    }
}
