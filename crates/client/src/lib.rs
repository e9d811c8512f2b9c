//! `skiff-client`: an async etcd v3 client for Skiff (and etcd itself) that takes the
//! whole member list and survives the loss of members.
//!
//! # Guide
//!
//! ```no_run
//! use skiff_client::{Client, ClientOptions};
//!
//! # async fn demo() -> Result<(), skiff_client::Error> {
//! // Give the client every member, not a load balancer: it balances and fails over.
//! let client = Client::connect(
//!     ["127.0.0.1:2379", "http://127.0.0.1:22379", "127.0.0.1:32379"],
//!     ClientOptions::default(),
//! )?;
//! client.put("greeting", "hello").await?;
//! let resp = client.get("greeting").await?;
//! assert_eq!(&resp.kvs[0].value[..], b"hello");
//! # Ok(()) }
//! ```
//!
//! The request and response types are etcd's own protobuf messages from
//! [`skiff_proto`] (re-exported as [`proto`]), so every field of the API is reachable;
//! short helpers ([`Client::get`], [`Client::put`], [`Client::delete`]) cover the
//! common cases. Errors are typed ([`Error::Etcd`] carries `skiff-api`'s
//! [`EtcdError`] for every error etcd defines).
//!
//! ## Endpoints and balancing
//! Endpoints are written `host:port` or `http://host:port`. Each gets one lazily
//! dialled HTTP/2 channel with keep-alive pings (a partitioned member is noticed).
//! Calls go round-robin over members that have not failed recently.
//!
//! ## Retries: what is safe
//! - **Reads** (range, status, member list, time-to-live, ...) are retried on another
//!   member after an `Unavailable` answer or a connection that broke with the call in
//!   flight (`pool::transport_failed`), with exponential backoff once all members
//!   failed, until the call's deadline ([`ClientOptions::request_timeout`]).
//! - **Writes** (put, delete, txn, compact, lease grant/revoke, member changes, ...)
//!   are retried **only when the request provably never reached a server**: the TCP
//!   connection could not be established. A write that failed in any other way
//!   (connection reset mid-call, "request timed out", a deadline) has an **unknown
//!   outcome** and is returned as an error: it may have been applied, and the client
//!   never repeats it on its own, because repeating a put could apply it twice. A caller
//!   that needs exactly-once writes makes them conditional (a [`Client::txn`] comparing
//!   the key's `mod_revision`), then retries.
//!
//! ## Watches
//! [`Client::watch`] returns a [`Watcher`] that survives member failures: after a
//! broken stream it re-creates the watch on another member starting at the last
//! delivered revision + 1, so every event arrives exactly once and in order. If that
//! revision has been compacted meanwhile, the watcher yields
//! [`Error::WatchCompacted`] and ends: a gap is never silent.
//!
//! ## Leases
//! [`Client::lease_keep_alive`] starts a [`LeaseKeepAlive`] task that renews a lease
//! at a third of its TTL over a stream, moving to another member when one fails, and
//! reports the lease's end.
//!
//! ## What needs other parts of Skiff
//! Every call of the API is built and passes the server's answer through: a server
//! that does not implement one answers `Unimplemented` naming the call
//! ([`Error::is_unimplemented`]). Authentication and
//! TLS are not in this version; `https://` endpoints are refused at parse time.

#![warn(missing_docs)]

pub mod endpoint;
pub mod error;
mod kv;
mod lease;
mod lock;
mod maintenance;
mod member;
pub mod pool;
mod watch;

use std::sync::Arc;
use std::time::{Duration, Instant};

pub use endpoint::Endpoint;
pub use error::Error;
pub use kv::prefix_end;
pub use lease::LeaseKeepAlive;
pub use pool::Safety;
pub use skiff_api::EtcdError;
pub use skiff_proto as proto;
pub use watch::Watcher;

use pool::Pool;

/// A `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// How the client connects and retries.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Limit for establishing a TCP connection to one member (etcdctl `--dial-timeout`).
    pub connect_timeout: Duration,
    /// Deadline of one call including its retries; `None` waits as long as it takes.
    pub request_timeout: Option<Duration>,
    /// Interval of HTTP/2 keep-alive pings (etcdctl `--keepalive-time`).
    pub keep_alive_time: Duration,
    /// How long a ping may stay unanswered before the connection is dropped
    /// (etcdctl `--keepalive-timeout`).
    pub keep_alive_timeout: Duration,
    /// First backoff once every member has failed.
    pub backoff_initial: Duration,
    /// Largest backoff, and how long a failed member is skipped.
    pub backoff_max: Duration,
    /// Most attempts of one unary call (the first one included).
    pub max_attempts: u32,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Some(Duration::from_secs(10)),
            keep_alive_time: Duration::from_secs(2),
            keep_alive_timeout: Duration::from_secs(6),
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_secs(1),
            max_attempts: 20,
        }
    }
}

/// A client of one cluster. Cheap to clone; clones share connections.
#[derive(Clone)]
pub struct Client {
    pool: Arc<Pool>,
    /// When set, every call goes to this member only (see [`Client::pinned`]).
    pin: Option<usize>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoints", &self.endpoints())
            .field("pin", &self.pin)
            .finish()
    }
}

impl Client {
    /// A client of the members at `endpoints` (`host:port` or `http://host:port`).
    /// Nothing is dialled yet; the first call connects.
    pub fn connect<I, S>(endpoints: I, opts: ClientOptions) -> Result<Client>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let eps = endpoints
            .into_iter()
            .map(|e| Endpoint::parse(e.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        Ok(Client {
            pool: Arc::new(Pool::new(eps, opts)?),
            pin: None,
        })
    }

    /// The endpoints, in the order given.
    pub fn endpoints(&self) -> Vec<Endpoint> {
        self.pool
            .members
            .iter()
            .map(|m| m.endpoint.clone())
            .collect()
    }

    /// A view of this client that sends every call to the member at `index` of
    /// [`Client::endpoints`] only (for per-member calls: status, hash, defragment).
    /// `None` if there is no such member.
    pub fn pinned(&self, index: usize) -> Option<Client> {
        (index < self.pool.members.len()).then(|| Client {
            pool: self.pool.clone(),
            pin: Some(index),
        })
    }

    /// The options the client was built with.
    pub fn options(&self) -> &ClientOptions {
        &self.pool.opts
    }

    fn deadline(&self) -> Option<Instant> {
        self.pool.opts.request_timeout.map(|t| Instant::now() + t)
    }

    /// Runs a unary call under the pool's retry rules (or on the pinned member).
    async fn unary<T, F, Fut>(&self, safety: Safety, mut call: F) -> Result<T>
    where
        F: FnMut(tonic::transport::Channel) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let deadline = self.deadline();
        match self.pin {
            None => self.pool.unary(safety, deadline, call).await,
            Some(i) => {
                let fut = call(self.pool.members[i].channel.clone());
                let r = match deadline {
                    Some(d) => tokio::time::timeout_at(d.into(), fut).await.map_err(|_| {
                        Error::Timeout(self.pool.opts.request_timeout.unwrap_or_default())
                    })?,
                    None => fut.await,
                };
                r.map(tonic::Response::into_inner)
                    .map_err(Error::from_status)
            }
        }
    }
}
