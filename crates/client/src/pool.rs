//! The member pool: one lazily connected gRPC channel per endpoint, a health mark per
//! member, round-robin over the healthy ones, and the one place that decides whether a
//! failed call may be tried again.
//!
//! Guarantees:
//! - **Reads and other idempotent calls** ([`Safety::Idempotent`]) are retried on
//!   another member after any `Unavailable` answer (a dead or partitioned member, "no
//!   leader", "request timed out", ...) and after the connection broke with the call in
//!   flight ([`transport_failed`]), with exponential backoff once every member has
//!   failed, until the call's deadline.
//! - **Writes** ([`Safety::NotIdempotent`]) are retried only when the request provably
//!   never left this process: the TCP connection to the member could not be
//!   established (refused, unreachable, connect timeout). Those failures come from this
//!   module's own connector and carry [`NOT_SENT`] in their message, so they cannot be
//!   confused with a failure after sending. Any other failure of a write (a reset
//!   connection, a server-side timeout, a deadline) is returned to the caller: the write
//!   may have been applied, and retrying it blindly could apply it twice.
//! - **A call that goes unanswered** is how a stalled member (stopped, or partitioned
//!   without its connection closing) looks. A read attempt gets at most
//!   `ClientOptions::attempt_timeout`, then the member is marked down and the read
//!   tried on another member; a write waits for its deadline (it is never repeated) and
//!   its member is then marked down too, so the next calls go elsewhere. Streams rely
//!   on the channel's HTTP/2 keep-alive pings to notice a stalled member.
//! - A member that failed is skipped for a short while (`ClientOptions::backoff_max`)
//!   unless every member is marked down.
//! - A TLS handshake that fails (an untrusted certificate, a refused client
//!   certificate) is a connection that could not be established: it carries
//!   [`NOT_SENT`] like a refused TCP connection (nothing of the request was sent).
//! - Every channel carries the client's token (see [`crate::auth`]); only
//!   `Authenticate` goes out on a channel without it.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use std::sync::Arc;

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::service::interceptor::InterceptedService;
use tonic::{Code, Status};

use crate::auth::{AuthChannel, TokenInterceptor, TokenState};
use crate::endpoint::{Endpoint, Scheme};
use crate::error::Error;
use crate::ClientOptions;

/// The marker in the message of a call that failed before anything was sent.
pub const NOT_SENT: &str = "skiff-client: not sent";

/// Whether a call may be repeated after a failure whose outcome is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Safety {
    /// Repeating it cannot change the store (reads, status, member list, ...).
    Idempotent,
    /// It changes state (put, delete, txn, grant, revoke, compact, ...): only retried
    /// when it provably did not reach a server.
    NotIdempotent,
}

/// Whether `status` says the request never left this process (see the module docs).
pub fn not_sent(status: &Status) -> bool {
    status.code() == Code::Unavailable && status.message().contains(NOT_SENT)
}

/// Whether `status` was raised here by the transport rather than answered by a server:
/// the connection broke with the call in flight (tonic answers `Unknown` "transport
/// error"), closed under it (`Cancelled` "operation was canceled", e.g. a TLS member
/// refusing the client's certificate after the handshake) or spoke garbage (`Internal`
/// "h2 protocol error", e.g. a plain-text client at a TLS port). A status decoded from
/// the wire never carries a source error; these carry the transport's. The member is
/// then as good as unavailable; the request may have reached it, so only an
/// idempotent call is tried again.
pub fn transport_failed(status: &Status) -> bool {
    std::error::Error::source(status).is_some_and(|e| e.is::<tonic::transport::Error>())
}

/// One member: its endpoint, its channel (with the client's token, and without it for
/// `Authenticate`) and when it may be tried again.
pub(crate) struct Member {
    pub(crate) endpoint: Endpoint,
    pub(crate) channel: AuthChannel,
    anonymous: AuthChannel,
    down_until: Mutex<Option<Instant>>,
}

/// All members of the client.
pub(crate) struct Pool {
    pub(crate) members: Vec<Member>,
    next: AtomicUsize,
    pub(crate) opts: ClientOptions,
    pub(crate) auth: Arc<TokenState>,
}

impl Pool {
    /// Builds channels for `endpoints` (nothing is dialled until the first call).
    pub(crate) fn new(endpoints: Vec<Endpoint>, opts: ClientOptions) -> Result<Pool, Error> {
        if endpoints.is_empty() {
            return Err(Error::NoEndpoints);
        }
        let auth = Arc::new(TokenState::new(opts.credentials.clone()));
        // One rustls configuration for the whole client (built once: bad PEM fails here).
        let configured = opts.tls.as_ref().map(|t| t.client_config()).transpose()?;
        let mut default_tls = None;
        let mut members = Vec::with_capacity(endpoints.len());
        for endpoint in endpoints {
            let invalid = |reason: String| Error::InvalidEndpoint {
                endpoint: endpoint.original.clone(),
                reason,
            };
            // etcd's client: `http://` is plain text, `https://` is TLS (with the
            // configured options, else the defaults), no scheme is TLS iff configured.
            let tls = match endpoint.scheme {
                Scheme::Http => None,
                Scheme::Unspecified => configured.clone(),
                Scheme::Https => match &configured {
                    Some(c) => Some(c.clone()),
                    None => {
                        if default_tls.is_none() {
                            default_tls = Some(crate::tls::TlsOptions::default().client_config()?);
                        }
                        default_tls.clone()
                    }
                },
            };
            let tls = match tls {
                None => None,
                Some(config) => {
                    let options = opts.tls.clone().unwrap_or_default();
                    Some((config, options.server_name(&endpoint.host)?))
                }
            };
            // The connector is handed an `http` URI (it does the TLS itself); with TLS
            // the requests still say `https` in their `:scheme`.
            let mut ep = tonic::transport::Endpoint::from_shared(endpoint.uri())
                .map_err(|e| invalid(e.to_string()))?;
            if tls.is_some() {
                let origin: http::Uri =
                    endpoint
                        .uri()
                        .replacen("http://", "https://", 1)
                        .parse()
                        .map_err(|e: http::uri::InvalidUri| invalid(e.to_string()))?;
                ep = ep.origin(origin);
            }
            let ch = ep
                .http2_keep_alive_interval(opts.keep_alive_time)
                .keep_alive_timeout(opts.keep_alive_timeout)
                .keep_alive_while_idle(true)
                .connect_with_connector_lazy(Connector {
                    timeout: opts.connect_timeout,
                    tls,
                });
            members.push(Member {
                endpoint,
                channel: InterceptedService::new(ch.clone(), TokenInterceptor::new(auth.clone())),
                anonymous: InterceptedService::new(ch, TokenInterceptor::anonymous(auth.clone())),
                down_until: Mutex::new(None),
            });
        }
        Ok(Pool {
            members,
            next: AtomicUsize::new(0),
            opts,
            auth,
        })
    }

    /// The next member to use: round-robin over members not marked down, never
    /// `avoid` when another is up; if all are down, the one that comes back first.
    pub(crate) fn pick(&self, avoid: Option<usize>) -> usize {
        let n = self.members.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut fallback: Option<(usize, Option<Instant>)> = None;
        for k in 0..n {
            let i = (start + k) % n;
            let until = *self.members[i]
                .down_until
                .lock()
                .expect("health mutex is never poisoned: no code panics holding it");
            let up = until.is_none_or(|t| t <= now);
            if up && (Some(i) != avoid || n == 1) {
                return i;
            }
            let better = match fallback {
                None => true,
                Some((f, t)) => Some(f) == avoid || (Some(i) != avoid && until < t),
            };
            if better {
                fallback = Some((i, until));
            }
        }
        fallback.map(|(i, _)| i).unwrap_or(0)
    }

    /// Whether every member is currently marked down.
    pub(crate) fn all_down(&self) -> bool {
        let now = Instant::now();
        self.members.iter().all(|m| {
            m.down_until
                .lock()
                .expect("health mutex is never poisoned")
                .is_some_and(|t| t > now)
        })
    }

    /// Marks member `i` as failed: skipped for `backoff_max`.
    pub(crate) fn mark_down(&self, i: usize) {
        let until = Instant::now() + self.opts.backoff_max;
        *self.members[i]
            .down_until
            .lock()
            .expect("health mutex is never poisoned") = Some(until);
        tracing::debug!(endpoint = %self.members[i].endpoint, "member marked down");
    }

    /// Marks member `i` as working.
    pub(crate) fn mark_up(&self, i: usize) {
        *self.members[i]
            .down_until
            .lock()
            .expect("health mutex is never poisoned") = None;
    }

    /// The backoff before attempt `attempt` (1-based) when every member has failed.
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .opts
            .backoff_initial
            .saturating_mul(1u32 << attempt.min(16).saturating_sub(1));
        exp.min(self.opts.backoff_max)
    }

    /// The deadline error.
    fn timeout(&self) -> Error {
        Error::Timeout(self.opts.request_timeout.unwrap_or_default())
    }

    /// Runs one unary call with the retry rules of the module docs, or, with `pin`,
    /// once on that member. `call` gets the channel of the member to use (without the
    /// token if `anonymous`); `deadline` bounds the whole call.
    pub(crate) async fn unary_on<T, F, Fut>(
        &self,
        safety: Safety,
        deadline: Option<Instant>,
        pin: Option<usize>,
        anonymous: bool,
        mut call: F,
    ) -> Result<T, Error>
    where
        F: FnMut(AuthChannel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let channel = |i: usize| {
            let m = &self.members[i];
            if anonymous {
                m.anonymous.clone()
            } else {
                m.channel.clone()
            }
        };
        if let Some(i) = pin {
            let fut = call(channel(i));
            let r = match deadline {
                Some(d) => tokio::time::timeout_at(d.into(), fut)
                    .await
                    .map_err(|_| self.timeout())?,
                None => fut.await,
            };
            return r
                .map(tonic::Response::into_inner)
                .map_err(Error::from_status);
        }
        let mut attempt: u32 = 0;
        let mut last: Option<usize> = None;
        loop {
            if attempt > 0 && self.all_down() {
                let pause = self.backoff(attempt);
                if deadline.is_some_and(|d| Instant::now() + pause >= d) {
                    return Err(self.timeout());
                }
                tokio::time::sleep(pause).await;
            }
            let i = self.pick(last);
            let fut = call(channel(i));
            // A read's attempt ends at its own limit or the call's deadline, whichever
            // comes first; a write's only at the deadline (it is never repeated).
            let limit = match safety {
                Safety::Idempotent => self.opts.attempt_timeout,
                Safety::NotIdempotent => None,
            };
            let attempt_end = limit.map(|l| Instant::now() + l);
            let end = match (deadline, attempt_end) {
                (Some(d), Some(a)) => Some(d.min(a)),
                (d, a) => d.or(a),
            };
            let result = match end {
                Some(e) => match tokio::time::timeout_at(e.into(), fut).await {
                    Ok(r) => r,
                    Err(_) => {
                        // No answer in time: a stalled (stopped, partitioned) member
                        // looks like this; skip it for a while either way.
                        self.mark_down(i);
                        attempt += 1;
                        let deadline_passed = deadline.is_some_and(|d| Instant::now() >= d);
                        if deadline_passed || attempt >= self.opts.max_attempts {
                            return Err(self.timeout());
                        }
                        tracing::debug!(
                            endpoint = %self.members[i].endpoint,
                            attempt,
                            "read attempt unanswered; retrying on another member"
                        );
                        last = Some(i);
                        continue;
                    }
                },
                None => fut.await,
            };
            let status = match result {
                Ok(resp) => {
                    self.mark_up(i);
                    return Ok(resp.into_inner());
                }
                Err(status) => status,
            };
            let retry = if status.code() == Code::Unavailable || transport_failed(&status) {
                self.mark_down(i);
                safety == Safety::Idempotent || not_sent(&status)
            } else {
                false
            };
            attempt += 1;
            if !retry || attempt >= self.opts.max_attempts {
                return Err(Error::from_status(status));
            }
            tracing::debug!(
                endpoint = %self.members[i].endpoint,
                code = ?status.code(),
                message = status.message(),
                attempt,
                "retrying on another member"
            );
            last = Some(i);
        }
    }
}

/// Dials members over TCP, then TLS when the member's endpoint asks for it; its
/// failures carry [`NOT_SENT`] (nothing of the request can have been sent before the
/// connection exists).
#[derive(Clone)]
struct Connector {
    timeout: Duration,
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
}

/// A connection that could not be established.
#[derive(Debug, thiserror::Error)]
#[error("{NOT_SENT}: connect to {target} failed: {reason}")]
struct ConnectFailed {
    target: String,
    reason: String,
}

/// A member connection: plain TCP or TLS over TCP.
enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s) => s.is_write_vectored(),
            Conn::Tls(s) => s.is_write_vectored(),
        }
    }
}

impl tower_service::Service<http::Uri> for Connector {
    type Response = TokioIo<Conn>;
    type Error = ConnectFailed;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let limit = self.timeout;
        let tls = self.tls.clone();
        Box::pin(async move {
            let target = uri.authority().map(|a| a.to_string()).unwrap_or_default();
            let fail = |reason: String| ConnectFailed {
                target: target.clone(),
                reason,
            };
            let host = uri
                .host()
                .ok_or_else(|| fail("no host".into()))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri.port_u16().unwrap_or(80);
            let connect = async {
                let stream = TcpStream::connect((host.as_str(), port))
                    .await
                    .map_err(|e| fail(e.to_string()))?;
                // Latency matters more than packet count for small RPCs.
                let _ = stream.set_nodelay(true);
                match tls {
                    None => Ok(Conn::Plain(stream)),
                    Some((config, name)) => tokio_rustls::TlsConnector::from(config)
                        .connect(name, stream)
                        .await
                        .map(|s| Conn::Tls(Box::new(s)))
                        .map_err(|e| fail(format!("TLS handshake: {e}"))),
                }
            };
            match tokio::time::timeout(limit, connect).await {
                Ok(Ok(conn)) => Ok(TokioIo::new(conn)),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(fail(format!("timed out after {limit:?}"))),
            }
        })
    }
}
