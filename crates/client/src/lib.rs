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
//! Endpoints are written `host:port`, `http://host:port` or `https://host:port`. Each
//! gets one lazily dialled HTTP/2 channel with keep-alive pings (a partitioned member
//! is noticed). Calls go round-robin over members that have not failed recently.
//!
//! ## TLS
//! [`ClientOptions::tls`] ([`TlsOptions`]) gives the CA bundle that signs the members'
//! certificates (the system's when `None`), a client certificate and key for members
//! that require one, and `insecure_skip_verify` (testing only). As in etcd's client,
//! `https://` endpoints always use TLS, `http://` ones never do, and `host:port` uses
//! TLS exactly when TLS options are set.
//!
//! ```no_run
//! use skiff_client::{Client, ClientOptions, Credentials, Identity, TlsOptions};
//!
//! # fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let tls = TlsOptions {
//!     ca_pem: Some(std::fs::read("ca.pem")?),
//!     identity: Some(Identity {
//!         cert_pem: std::fs::read("client.pem")?,
//!         key_pem: std::fs::read("client.key")?,
//!     }),
//!     ..TlsOptions::default()
//! };
//! let client = Client::connect(
//!     ["https://10.0.0.1:2379", "https://10.0.0.2:2379"],
//!     ClientOptions {
//!         tls: Some(tls),
//!         credentials: Some(Credentials::new("app", "secret")),
//!         ..ClientOptions::default()
//!     },
//! )?;
//! # let _ = client; Ok(()) }
//! ```
//!
//! ## Authentication
//! With [`ClientOptions::credentials`] the client exchanges the user name and password
//! for a token (etcd's `Authenticate`) before its first call ([`Client::authenticate`]
//! does it up front) and sends it with every call as the `token` metadata, as etcd's
//! clients do. When a member answers `etcdserver: invalid auth token` (the token
//! expired, or the member restarted and lost it), the client authenticates again and
//! repeats the call **once**: safe even for a write, because the server refused the
//! call before applying anything. A watch whose (re-)creation is refused for its token, and a
//! lease keep-alive whose renewal is, authenticate again the same way and carry on (the
//! watch from the revision after the last one delivered). A server without authentication enabled is used
//! without a token. The user and role administration calls ([`Client::user_add`],
//! [`Client::role_grant_permission`], [`Client::auth_enable`], ...) are the `Auth`
//! service's.
//!
//! ## Retries: what is safe
//! - **Reads** (range, status, member list, time-to-live, ...) are retried on another
//!   member after an `Unavailable` answer or a connection that broke with the call in
//!   flight (`pool::transport_failed`), with exponential backoff once all members
//!   failed, until the call's deadline ([`ClientOptions::request_timeout`]). A read
//!   attempt that goes unanswered for [`ClientOptions::attempt_timeout`] (a stopped or
//!   partitioned member whose connection stays open) moves to another member too.
//! - **Writes** (put, delete, txn, compact, lease grant/revoke, member changes, ...)
//!   are retried **only when the request provably never reached a server**: the TCP
//!   connection could not be established. A write that failed in any other way
//!   (connection reset mid-call, "request timed out", a deadline) has an **unknown
//!   outcome** and is returned as an error: it may have been applied, and the client
//!   never repeats it on its own, because repeating a put could apply it twice. A caller
//!   that needs exactly-once writes uses a [`Session`] (Skiff only; see below), or
//!   makes them conditional (a [`Client::txn`] comparing the key's `mod_revision`),
//!   then retries.
//!
//! ## Sessions: exactly-once writes (Skiff)
//! [`Client::session`] opens a [`Session`]: its writes carry a session ID and a
//! sequence number, which a Skiff member applies at most once, answering a repeat with
//! the first answer. So a session repeats a write whose outcome is unknown, on any
//! member, until the answer is known: the write applies exactly once. etcd ignores the
//! session's metadata (there a repeated write may apply twice).
//!
//! ```no_run
//! # async fn demo(client: skiff_client::Client) -> Result<(), skiff_client::Error> {
//! let session = client.session(60).await?;
//! session.put("job/42", "done").await?; // applied once, whatever failed meanwhile
//! session.close().await?;
//! # Ok(()) }
//! ```
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
//! ## Software transactions
//! [`Client::stm`] runs a closure that reads and writes keys through an [`Stm`] (etcd
//! `concurrency`'s STM, with its [`Isolation`] levels) and commits the writes with one
//! transaction that checks what was read is unchanged, running the closure again when
//! it is not (`examples/stm.rs`).
//!
//! ## What needs other parts of Skiff
//! Every call of the API is built and passes the server's answer through: a server
//! that does not implement one answers `Unimplemented` naming the call
//! ([`Error::is_unimplemented`]).

#![warn(missing_docs)]

mod auth;
mod auth_api;
pub mod endpoint;
pub mod error;
mod kv;
mod lease;
mod lock;
mod maintenance;
mod member;
pub mod pool;
pub mod session;
pub mod stm;
mod tls;
mod watch;

use std::sync::Arc;
use std::time::{Duration, Instant};

pub use auth::Credentials;
pub use endpoint::{Endpoint, Scheme};
pub use error::Error;
pub use kv::prefix_end;
pub use lease::LeaseKeepAlive;
pub use pool::Safety;
pub use session::Session;
pub use skiff_api::EtcdError;
pub use skiff_proto as proto;
pub use stm::{Isolation, Stm, StmFuture};
pub use tls::{Identity, TlsOptions};
pub use watch::{ProgressRequester, Watcher};

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
    /// How long one attempt of a read (an idempotent call) may go unanswered before the
    /// member is marked down and the read is tried on another member, within
    /// `request_timeout`; `None`: an attempt may take the whole deadline. Writes are
    /// never cut short this way (a repeated write could apply twice). Set it above the
    /// slowest read expected (a large range): a read that times out on every member
    /// fails with [`Error::Timeout`].
    pub attempt_timeout: Option<Duration>,
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
    /// TLS for `https://` endpoints (and for `host:port` ones when set); `None`:
    /// `https://` endpoints use the system's CA bundle, others plain text.
    pub tls: Option<TlsOptions>,
    /// The user to authenticate as; `None` (or an empty name or password): no
    /// authentication.
    pub credentials: Option<Credentials>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Some(Duration::from_secs(10)),
            attempt_timeout: Some(Duration::from_secs(5)),
            keep_alive_time: Duration::from_secs(2),
            keep_alive_timeout: Duration::from_secs(6),
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_secs(1),
            max_attempts: 20,
            tls: None,
            credentials: None,
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
    /// A client of the members at `endpoints` (`host:port`, `http://host:port` or
    /// `https://host:port`). Nothing is dialled yet; the first call connects (and
    /// authenticates, with credentials). Fails on a malformed endpoint and on TLS
    /// options that cannot be used ([`Error::Tls`]).
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

    /// Authenticates now if the client has credentials and has not authenticated yet
    /// (otherwise the first call does). Fails with the server's answer, e.g.
    /// `etcdserver: authentication failed, invalid user ID or password`
    /// ([`EtcdError::AuthFailed`]); a server without authentication enabled is not an
    /// error (the client goes on without a token).
    pub async fn authenticate(&self) -> Result<()> {
        self.pool.ensure_token(self.deadline()).await
    }

    /// How many tokens this client has obtained: 1 after the first authentication, one
    /// more for each renewal after a refused token; 0 without authentication.
    pub fn authentications(&self) -> u64 {
        self.pool.auth.obtained()
    }

    fn deadline(&self) -> Option<Instant> {
        self.pool.opts.request_timeout.map(|t| Instant::now() + t)
    }

    /// Runs a unary call under the pool's retry rules (or on the pinned member), with
    /// the client's token; a refused token is renewed and the call repeated once (see
    /// the crate docs on authentication).
    async fn unary<T, F, Fut>(&self, safety: Safety, mut call: F) -> Result<T>
    where
        F: FnMut(auth::AuthChannel) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let deadline = self.deadline();
        self.pool.ensure_token(deadline).await?;
        let seen = self.pool.auth.generation();
        match self
            .pool
            .unary_on(safety, deadline, self.pin, false, &mut call)
            .await
        {
            Err(e) if self.pool.auth.enabled() && auth::token_refused(&e) => {
                tracing::debug!("token refused; authenticating again");
                self.pool.renew(seen, deadline).await?;
                self.pool
                    .unary_on(safety, deadline, self.pin, false, &mut call)
                    .await
            }
            r => r,
        }
    }
}
