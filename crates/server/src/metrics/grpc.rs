//! gRPC server metrics as etcd exports them: go-grpc-prometheus's `grpc_server_*`
//! series (labels `grpc_type`, `grpc_service`, `grpc_method`, and `grpc_code` on the
//! handled counter) and etcd's `etcd_network_client_grpc_{sent,received}_bytes_total`.
//!
//! Measured by the client port's front (`crate::front`, [`GrpcMetrics::start`]), from
//! what crosses the wire:
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
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use axum::http::HeaderMap;
use bytes::Bytes;
use http_body::Frame;
use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts};

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
    pub(crate) fn new(r: &prometheus::Registry) -> GrpcMetrics {
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

    /// Starts measuring a call to `path` (`/service/method`): `None` for a method not
    /// in [`METHODS`]. The call counts as started now; it is handled when its
    /// [`CallMeter`] is dropped.
    pub fn start(&self, path: &str) -> Option<(ReceiveMeter, CallMeter)> {
        let method = self.methods.get(path)?.clone();
        method.started.inc();
        let received = ReceiveMeter {
            frames: FrameCounter::default(),
            messages: method.msg_received.clone(),
            bytes: self.received_bytes.clone(),
        };
        let call = CallMeter {
            frames: FrameCounter::default(),
            bytes: self.sent_bytes.clone(),
            code: None,
            ended: false,
            call: Some((method, Instant::now())),
        };
        Some((received, call))
    }
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

/// What counts a body's frames as they are polled (`crate::front::Metered`).
pub trait BodyMeter {
    fn observe<E>(&mut self, polled: &Poll<Option<Result<Frame<Bytes>, E>>>);
}

/// Counts the messages of a call's request body.
pub struct ReceiveMeter {
    frames: FrameCounter,
    messages: IntCounter,
    bytes: IntCounter,
}

impl BodyMeter for ReceiveMeter {
    fn observe<E>(&mut self, polled: &Poll<Option<Result<Frame<Bytes>, E>>>) {
        if let Poll::Ready(Some(Ok(frame))) = polled {
            if let Some(data) = frame.data_ref() {
                let (n, b) = self.frames.feed(data);
                self.messages.inc_by(n);
                self.bytes.inc_by(b);
            }
        }
    }
}

/// Counts the messages of a call's response body and records the call as handled
/// when the body ends, or when the meter is dropped (the call or its body dropped
/// unfinished: the client went away).
pub struct CallMeter {
    frames: FrameCounter,
    bytes: IntCounter,
    /// The status seen so far (headers of a trailers-only response, then trailers).
    code: Option<usize>,
    ended: bool,
    call: Option<(Arc<MethodMetrics>, Instant)>,
}

impl CallMeter {
    /// Takes the status of a trailers-only response from its headers.
    pub fn status_from(&mut self, headers: &HeaderMap) {
        if let Some(c) = status_code(headers) {
            self.code = Some(c);
        }
    }

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

impl BodyMeter for CallMeter {
    /// Looks at what polling the response body gave.
    fn observe<E>(&mut self, polled: &Poll<Option<Result<Frame<Bytes>, E>>>) {
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let (n, b) = self.frames.feed(data);
                    if let Some((method, _)) = &self.call {
                        method.msg_sent.inc_by(n);
                    }
                    self.bytes.inc_by(b);
                } else if let Some(trailers) = frame.trailers_ref() {
                    self.status_from(trailers);
                }
            }
            Poll::Ready(Some(Err(_))) => {
                self.code = self.code.or(Some(UNKNOWN));
                self.ended = true;
                self.finish();
            }
            Poll::Ready(None) => {
                self.ended = true;
                self.finish();
            }
            Poll::Pending => {}
        }
    }
}

impl Drop for CallMeter {
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
