//! gRPC server metrics as etcd exports them: go-grpc-prometheus's `grpc_server_*`
//! series (labels `grpc_type`, `grpc_service`, `grpc_method`, and `grpc_code` on the
//! handled counter) and etcd's `etcd_network_client_grpc_{sent,received}_bytes_total`.
//!
//! Measured by a middleware around the client gRPC routes ([`GrpcMetrics::instrument`]),
//! from what crosses the wire:
//! - `started` when a call to a known method arrives;
//! - `msg_received` / `msg_sent` for every length-prefixed gRPC message in the request
//!   and response bodies (so unary calls count one each, streams one per message), and
//!   the message lengths into the byte counters;
//! - `handled` with the call's `grpc-status` (from the trailers, or the headers of a
//!   trailers-only response) when the response ends, or `Canceled` when it is dropped
//!   unfinished (the client went away), with the call's duration into
//!   `grpc_server_handling_seconds` (which etcd exports with `--metrics=extensive`; the
//!   `etcdGRPCRequestsSlow` alert reads it, so Skiff always exports it).
//!
//! Guarantees: only the methods of [`METHODS`] get series (a bounded label set, as
//! go-grpc-prometheus only sees registered methods), and, as etcd's
//! `grpc_prometheus.Register` does, every one of them is present from the start:
//! `started`, `msg_*` and the handling histogram at 0, `handled` at 0 for every code
//! (go-grpc-prometheus pre-registers the histogram too once it is enabled).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Frame, SizeHint};
use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts};
use tonic::service::Routes;

use super::register;

/// go-grpc-prometheus's method types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallType {
    Unary,
    ClientStream,
    ServerStream,
    BidiStream,
}

impl CallType {
    pub fn label(self) -> &'static str {
        match self {
            CallType::Unary => "unary",
            CallType::ClientStream => "client_stream",
            CallType::ServerStream => "server_stream",
            CallType::BidiStream => "bidi_stream",
        }
    }
}

use CallType::{BidiStream, ServerStream, Unary};

/// Every method of the gRPC services the client listener serves (`api::routes`), as
/// the `.proto` files declare them: (service, method, type).
pub const METHODS: &[(&str, &str, CallType)] = &[
    ("etcdserverpb.KV", "Range", Unary),
    ("etcdserverpb.KV", "Put", Unary),
    ("etcdserverpb.KV", "DeleteRange", Unary),
    ("etcdserverpb.KV", "Txn", Unary),
    ("etcdserverpb.KV", "Compact", Unary),
    ("etcdserverpb.Watch", "Watch", BidiStream),
    ("etcdserverpb.Lease", "LeaseGrant", Unary),
    ("etcdserverpb.Lease", "LeaseRevoke", Unary),
    ("etcdserverpb.Lease", "LeaseKeepAlive", BidiStream),
    ("etcdserverpb.Lease", "LeaseTimeToLive", Unary),
    ("etcdserverpb.Lease", "LeaseLeases", Unary),
    ("etcdserverpb.Cluster", "MemberAdd", Unary),
    ("etcdserverpb.Cluster", "MemberRemove", Unary),
    ("etcdserverpb.Cluster", "MemberUpdate", Unary),
    ("etcdserverpb.Cluster", "MemberList", Unary),
    ("etcdserverpb.Cluster", "MemberPromote", Unary),
    ("etcdserverpb.Maintenance", "Alarm", Unary),
    ("etcdserverpb.Maintenance", "Status", Unary),
    ("etcdserverpb.Maintenance", "Defragment", Unary),
    ("etcdserverpb.Maintenance", "Hash", Unary),
    ("etcdserverpb.Maintenance", "HashKV", Unary),
    ("etcdserverpb.Maintenance", "Snapshot", ServerStream),
    ("etcdserverpb.Maintenance", "MoveLeader", Unary),
    ("etcdserverpb.Maintenance", "Downgrade", Unary),
    ("etcdserverpb.Auth", "AuthEnable", Unary),
    ("etcdserverpb.Auth", "AuthDisable", Unary),
    ("etcdserverpb.Auth", "Authenticate", Unary),
    ("etcdserverpb.Auth", "UserAdd", Unary),
    ("etcdserverpb.Auth", "UserGet", Unary),
    ("etcdserverpb.Auth", "UserList", Unary),
    ("etcdserverpb.Auth", "UserDelete", Unary),
    ("etcdserverpb.Auth", "UserChangePassword", Unary),
    ("etcdserverpb.Auth", "UserGrantRole", Unary),
    ("etcdserverpb.Auth", "UserRevokeRole", Unary),
    ("etcdserverpb.Auth", "RoleAdd", Unary),
    ("etcdserverpb.Auth", "RoleGet", Unary),
    ("etcdserverpb.Auth", "RoleList", Unary),
    ("etcdserverpb.Auth", "RoleDelete", Unary),
    ("etcdserverpb.Auth", "RoleGrantPermission", Unary),
    ("etcdserverpb.Auth", "RoleRevokePermission", Unary),
    ("v3lockpb.Lock", "Lock", Unary),
    ("v3lockpb.Lock", "Unlock", Unary),
    ("v3electionpb.Election", "Campaign", Unary),
    ("v3electionpb.Election", "Proclaim", Unary),
    ("v3electionpb.Election", "Leader", Unary),
    ("v3electionpb.Election", "Observe", ServerStream),
    ("v3electionpb.Election", "Resign", Unary),
];

/// grpc-go's names of the status codes, by code number (`codes.Code.String()`).
pub const CODE_NAMES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

const CANCELED: usize = 1;
const UNKNOWN: usize = 2;
const RESOURCE_EXHAUSTED: usize = 8;
const OUT_OF_RANGE: usize = 11;

/// One method's series, resolved once.
struct MethodMetrics {
    started: IntCounter,
    msg_received: IntCounter,
    msg_sent: IntCounter,
    handled: Vec<IntCounter>,
    handling: Histogram,
}

/// The gRPC series of one member; see the module docs.
pub struct GrpcMetrics {
    /// By request path, `/service/method`.
    methods: HashMap<String, Arc<MethodMetrics>>,
    pub sent_bytes: IntCounter,
    pub received_bytes: IntCounter,
}

impl GrpcMetrics {
    pub(super) fn new(r: &prometheus::Registry) -> GrpcMetrics {
        let labels = &["grpc_type", "grpc_service", "grpc_method"];
        let vec = |name: &str, help: &str, extra: Option<&'static str>| {
            let mut l = labels.to_vec();
            l.extend(extra);
            register(
                r,
                IntCounterVec::new(Opts::new(name, help), &l).expect("valid metric"),
            )
        };
        let started = vec(
            "grpc_server_started_total",
            "Total number of RPCs started on the server.",
            None,
        );
        let handled = vec(
            "grpc_server_handled_total",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            Some("grpc_code"),
        );
        let msg_received = vec(
            "grpc_server_msg_received_total",
            "Total number of RPC stream messages received on the server.",
            None,
        );
        let msg_sent = vec(
            "grpc_server_msg_sent_total",
            "Total number of gRPC stream messages sent by the server.",
            None,
        );
        // go-grpc-prometheus's default buckets (prometheus.DefBuckets).
        let handling = register(
            r,
            HistogramVec::new(
                HistogramOpts::new(
                    "grpc_server_handling_seconds",
                    "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
                )
                .buckets(prometheus::DEFAULT_BUCKETS.to_vec()),
                labels,
            )
            .expect("valid metric"),
        );
        let methods = METHODS
            .iter()
            .map(|&(service, method, kind)| {
                let l = [kind.label(), service, method];
                let m = MethodMetrics {
                    started: started.with_label_values(&l),
                    msg_received: msg_received.with_label_values(&l),
                    msg_sent: msg_sent.with_label_values(&l),
                    handled: CODE_NAMES
                        .iter()
                        .map(|code| handled.with_label_values(&[l[0], l[1], l[2], code]))
                        .collect(),
                    handling: handling.with_label_values(&l),
                };
                (format!("/{service}/{method}"), Arc::new(m))
            })
            .collect();
        let counter = |name: &str, help: &str| {
            register(r, IntCounter::new(name, help).expect("valid metric"))
        };
        GrpcMetrics {
            methods,
            sent_bytes: counter(
                "etcd_network_client_grpc_sent_bytes_total",
                "The total number of bytes sent to grpc clients.",
            ),
            received_bytes: counter(
                "etcd_network_client_grpc_received_bytes_total",
                "The total number of bytes received from grpc clients.",
            ),
        }
    }

    /// `routes` with every call measured (see the module docs).
    pub fn instrument(self: &Arc<Self>, routes: Routes) -> Routes {
        Routes::from(
            routes
                .into_axum_router()
                .layer(axum::middleware::from_fn_with_state(self.clone(), track)),
        )
    }
}

async fn track(State(m): State<Arc<GrpcMetrics>>, req: Request, next: Next) -> Response {
    let Some(method) = m.methods.get(req.uri().path()).cloned() else {
        return next.run(req).await;
    };
    method.started.inc();
    let started = Instant::now();
    let req = req.map(|inner| {
        Body::new(Inbound {
            inner,
            frames: FrameCounter::default(),
            messages: method.msg_received.clone(),
            bytes: m.received_bytes.clone(),
        })
    });
    let resp = next.run(req).await;
    let code = status_code(resp.headers()).map(|c| {
        if c == OUT_OF_RANGE && is_size_refusal(resp.headers()) {
            // The client listener rewrites tonic's size refusal into grpc-go's
            // (serve.rs); count it as what the client sees.
            RESOURCE_EXHAUSTED
        } else {
            c
        }
    });
    resp.map(|inner| {
        Body::new(Outbound {
            inner,
            frames: FrameCounter::default(),
            bytes: m.sent_bytes.clone(),
            code,
            ended: false,
            call: Some((method, started)),
        })
    })
}

/// The `grpc-status` in `headers`, as an index into [`CODE_NAMES`].
fn status_code(headers: &HeaderMap) -> Option<usize> {
    let v = headers.get("grpc-status")?.to_str().ok()?;
    let code: usize = v.trim().parse().ok()?;
    Some(if code < CODE_NAMES.len() {
        code
    } else {
        UNKNOWN
    })
}

fn is_size_refusal(headers: &HeaderMap) -> bool {
    tonic::Status::from_header_map(headers)
        .is_some_and(|s| s.message().contains("message length too large"))
}

/// Counts gRPC's length-prefixed messages (1 flag byte, 4 length bytes, payload) in a
/// byte stream cut anywhere.
#[derive(Debug, Default)]
pub struct FrameCounter {
    header: [u8; 5],
    have: usize,
    remaining: u64,
}

impl FrameCounter {
    /// Feeds the next bytes; returns the messages that began in them and their
    /// declared payload lengths.
    pub fn feed(&mut self, mut data: &[u8]) -> (u64, u64) {
        let (mut messages, mut bytes) = (0, 0);
        while !data.is_empty() {
            if self.remaining > 0 {
                let skip = self.remaining.min(data.len() as u64);
                self.remaining -= skip;
                data = &data[skip as usize..];
                continue;
            }
            let take = (5 - self.have).min(data.len());
            self.header[self.have..self.have + take].copy_from_slice(&data[..take]);
            self.have += take;
            data = &data[take..];
            if self.have == 5 {
                let len = u32::from_be_bytes([
                    self.header[1],
                    self.header[2],
                    self.header[3],
                    self.header[4],
                ]);
                messages += 1;
                bytes += u64::from(len);
                self.remaining = u64::from(len);
                self.have = 0;
            }
        }
        (messages, bytes)
    }
}

/// A request body that counts the messages it carries.
struct Inbound {
    inner: Body,
    frames: FrameCounter,
    messages: IntCounter,
    bytes: IntCounter,
}

impl http_body::Body for Inbound {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                let (n, b) = this.frames.feed(data);
                this.messages.inc_by(n);
                this.bytes.inc_by(b);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that counts the messages it carries and records the call as
/// handled when it ends (or is dropped).
struct Outbound {
    inner: Body,
    frames: FrameCounter,
    bytes: IntCounter,
    /// The status seen so far (headers of a trailers-only response, then trailers).
    code: Option<usize>,
    ended: bool,
    call: Option<(Arc<MethodMetrics>, Instant)>,
}

impl Outbound {
    fn finish(&mut self) {
        let Some((method, started)) = self.call.take() else {
            return;
        };
        let code = match self.code {
            Some(c) => c,
            // Dropped before the end: the client cancelled (or the connection died).
            None if !self.ended => CANCELED,
            None => UNKNOWN,
        };
        method.handled[code].inc();
        method.handling.observe(started.elapsed().as_secs_f64());
    }
}

impl http_body::Body for Outbound {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let (n, b) = this.frames.feed(data);
                    if let Some((method, _)) = &this.call {
                        method.msg_sent.inc_by(n);
                    }
                    this.bytes.inc_by(b);
                } else if let Some(trailers) = frame.trailers_ref() {
                    if let Some(c) = status_code(trailers) {
                        this.code = Some(c);
                    }
                }
            }
            Poll::Ready(Some(Err(_))) => {
                this.code = this.code.or(Some(UNKNOWN));
                this.ended = true;
                this.finish();
            }
            Poll::Ready(None) => {
                this.ended = true;
                this.finish();
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Outbound {
    /// Records the call if the body did not end first: with the status it already has
    /// (a trailers-only response's body may never be polled), else as cancelled.
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(len: u32) -> Vec<u8> {
        let mut v = vec![0u8];
        v.extend_from_slice(&len.to_be_bytes());
        v.extend(std::iter::repeat_n(7u8, len as usize));
        v
    }

    #[test]
    fn counts_messages_cut_anywhere() {
        let mut stream = frame(3);
        stream.extend(frame(0));
        stream.extend(frame(300));
        // Every way of cutting the stream in two gives the same totals.
        for cut in 0..=stream.len() {
            let mut c = FrameCounter::default();
            let (m1, b1) = c.feed(&stream[..cut]);
            let (m2, b2) = c.feed(&stream[cut..]);
            assert_eq!((m1 + m2, b1 + b2), (3, 303), "cut at {cut}");
        }
        // Byte by byte too.
        let mut c = FrameCounter::default();
        let total = stream.iter().fold((0, 0), |(m, b), byte| {
            let (dm, db) = c.feed(std::slice::from_ref(byte));
            (m + dm, b + db)
        });
        assert_eq!(total, (3, 303));
    }

    #[test]
    fn every_method_and_code_is_present_from_the_start() {
        let r = prometheus::Registry::new();
        let _m = GrpcMetrics::new(&r);
        let text = super::super::encode(&r);
        let line = "grpc_server_handled_total{grpc_code=\"Unavailable\",grpc_method=\"Put\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"} 0";
        assert!(text.lines().any(|l| l == line), "{line} missing");
        let started = text
            .lines()
            .filter(|l| l.starts_with("grpc_server_started_total{"))
            .count();
        assert_eq!(started, METHODS.len());
        let handled = text
            .lines()
            .filter(|l| l.starts_with("grpc_server_handled_total{"))
            .count();
        assert_eq!(handled, METHODS.len() * CODE_NAMES.len());
    }
}
