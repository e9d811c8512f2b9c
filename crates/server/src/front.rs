//! The client port's front: the one tower service between an accepted connection's
//! requests and etcd's services, so that a gRPC call costs one boxed future and one
//! dispatch on its way in, not a stack of routers and middlewares.
//!
//! Per request, in this order:
//! - A request whose `content-type` is not `application/grpc*` goes to the HTTP router
//!   (`/health`, `/metrics`, `/version`, the JSON gateway; `serve` adds etcd's access
//!   controller and the 404 fallback), as etcd's `cmux` splits its client port.
//! - A gRPC call names its service in the first part of its path; a service Skiff does
//!   not serve gets `Unimplemented` naming the path (tonic's own answer has no message).
//!   The service's generated server answers an unknown method of a known service.
//! - The call is measured (`metrics::grpc`: started, messages and bytes both ways,
//!   handled with its status, handling time) when the front has metrics.
//! - With `hasleader: true` metadata and no leader known, the call is refused with
//!   `etcdserver: no leader` (`api::leader`) before the service sees it.
//! - The service runs as the caller its metadata and client certificate name
//!   (`facade::caller`), and the response budget a handler holds for its response
//!   (`budget::keep_until_sent`) stays held until the response body is dropped.
//! - tonic's refusal of a too-large request message is rewritten into the status
//!   grpc-go (so etcd) sends for it, which etcd's clients expect.
//!
//! Guarantees: every gRPC call passes through exactly these steps, whatever service it
//! names; nothing here decodes a message. Measured cost (bench/PROFILE.md): the three
//! nested axum routers, five middlewares and tonic's `hasleader` interceptor that this
//! replaced took a fifth of the leader's samples under 1000 writing clients.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::http::{HeaderMap, HeaderValue, Request, Response};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::sync::watch;
use tonic::codegen::BoxFuture;
use tonic::server::NamedService;
use tower::{Service, ServiceExt};

use crate::budget::{self, Held};
use crate::facade::caller;
use crate::metrics::grpc::{BodyMeter, CallMeter, GrpcMetrics, ReceiveMeter};

/// A body the front passes on: the connection's or a service's, counted by its meter
/// when the call is measured, holding what must live as long as it does.
pub struct Metered<M> {
    inner: tonic::body::Body,
    meter: Option<M>,
    /// The response budget a handler kept (`budget::keep_until_sent`): returned when
    /// the connection drops the response body, once its last frame went to the write
    /// buffer (`skiff_h2`; hyper for HTTP/1.1) (always empty on a request body).
    _held: Vec<Arc<Held>>,
}

/// The body a gRPC service receives.
pub type InBody = Metered<ReceiveMeter>;

/// The body of every response the front sends, a service's or the HTTP router's.
pub type OutBody = Metered<CallMeter>;

impl<M> Metered<M> {
    /// `inner` as it is: not measured, holding nothing.
    pub fn plain(inner: tonic::body::Body) -> Metered<M> {
        Metered {
            inner,
            meter: None,
            _held: Vec::new(),
        }
    }
}

impl<M: BodyMeter + Unpin> http_body::Body for Metered<M> {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Some(meter) = &mut this.meter {
            meter.observe(&polled);
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

/// What a gRPC service answers the front with.
pub type GrpcResponse = Response<tonic::body::Body>;

/// A generated gRPC server (tonic's `KvServer<T>` and the like), callable through a
/// shared reference. tonic's generated servers are always ready (`poll_ready` returns
/// `Ready(Ok)` without looking at anything), so a clone of one (an `Arc` and a few
/// numbers) is called directly.
pub trait Dispatch: Send + Sync {
    fn dispatch(&self, req: Request<InBody>) -> BoxFuture<GrpcResponse, Infallible>;
}

impl<S> Dispatch for S
where
    S: Service<
            Request<InBody>,
            Response = GrpcResponse,
            Error = Infallible,
            Future = BoxFuture<GrpcResponse, Infallible>,
        > + Clone
        + Send
        + Sync,
{
    fn dispatch(&self, req: Request<InBody>) -> BoxFuture<GrpcResponse, Infallible> {
        Service::call(&mut self.clone(), req)
    }
}

/// The gRPC services of a client port, by service name, and what the front does
/// around every call to them (see the module docs).
#[derive(Clone, Default)]
pub struct GrpcServices {
    services: Vec<(&'static str, Arc<dyn Dispatch>)>,
    leader: Option<watch::Receiver<u64>>,
    metrics: Option<Arc<GrpcMetrics>>,
}

impl GrpcServices {
    pub fn new() -> GrpcServices {
        GrpcServices::default()
    }

    /// Serves `service` under its gRPC name (a later one of the same name replaces it).
    pub fn with<S: NamedService + Dispatch + 'static>(mut self, service: S) -> GrpcServices {
        self.services.retain(|(name, _)| *name != S::NAME);
        self.services.push((S::NAME, Arc::new(service)));
        self
    }

    /// Refuses `hasleader` calls while `leader` (the member's leader id) is 0.
    pub fn require_leader(mut self, leader: watch::Receiver<u64>) -> GrpcServices {
        self.leader = Some(leader);
        self
    }

    /// Measures every call (`grpc_server_*`, see `metrics::grpc`).
    pub fn measured(mut self, metrics: Arc<GrpcMetrics>) -> GrpcServices {
        self.metrics = Some(metrics);
        self
    }

    /// The service a `/service/method` path names (`None` without a method).
    fn service(&self, path: &str) -> Option<&Arc<dyn Dispatch>> {
        let (name, method) = path.strip_prefix('/')?.split_once('/')?;
        if method.is_empty() {
            return None;
        }
        self.services
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, s)| s)
    }

    fn no_leader(&self, headers: &HeaderMap) -> bool {
        self.leader.as_ref().is_some_and(|l| {
            crate::api::leader::requires_leader_header(headers) && *l.borrow() == 0
        })
    }

    async fn call(&self, req: Request<tonic::body::Body>) -> Response<OutBody> {
        let path = req.uri().path();
        let Some(service) = self.service(path).cloned() else {
            let status =
                tonic::Status::unimplemented(format!("skiff: {path} is not implemented yet"));
            return status.into_http::<tonic::body::Body>().map(OutBody::plain);
        };
        let (received, meter) = match self.metrics.as_ref().and_then(|m| m.start(path)) {
            Some((r, c)) => (Some(r), Some(c)),
            None => (None, None),
        };
        let mut resp = if self.no_leader(req.headers()) {
            crate::api::leader::no_leader()
                .into_http::<tonic::body::Body>()
                .map(OutBody::plain)
        } else {
            let who = caller::of_request(req.headers(), req.extensions());
            let req = req.map(|inner| InBody {
                inner,
                meter: received,
                _held: Vec::new(),
            });
            let (Ok(resp), held) =
                budget::holding_until_sent(caller::with_caller(who, service.dispatch(req))).await;
            let mut resp = resp.map(|inner| OutBody {
                inner,
                meter: None,
                _held: held,
            });
            as_grpc_go_size_error(resp.headers_mut());
            resp
        };
        if let Some(mut meter) = meter {
            meter.status_from(resp.headers());
            resp.body_mut().meter = Some(meter);
        }
        resp
    }
}

/// Rewrites tonic's "decoded message length too large" refusal (OutOfRange) into the
/// status grpc-go sends for the same refusal, which etcd clients expect. Only unary
/// calls can be refused this way before a response starts, so the status is in the
/// response headers.
fn as_grpc_go_size_error(headers: &mut HeaderMap) {
    const TONIC_PREFIX: &str = "Error, decoded message length too large: found ";
    let Some(status) = tonic::Status::from_header_map(headers) else {
        return;
    };
    if status.code() != tonic::Code::OutOfRange {
        return;
    }
    // "... found {len} bytes, the limit is: {limit} bytes"
    let Some(rest) = status.message().strip_prefix(TONIC_PREFIX) else {
        return;
    };
    let numbers: Vec<&str> = rest
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .collect();
    let [found, limit] = numbers[..] else {
        return;
    };
    let text = format!("grpc: received message larger than max ({found} vs. {limit})");
    if let Ok(value) = HeaderValue::from_str(&text) {
        headers.insert("grpc-status", HeaderValue::from_static("8"));
        headers.insert("grpc-message", value);
    }
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"))
}

/// The client port's service (see the module docs); cloning it is an `Arc` clone.
#[derive(Clone)]
pub struct Front {
    shared: Arc<(GrpcServices, axum::Router)>,
}

impl Front {
    pub fn new(grpc: GrpcServices, http: axum::Router) -> Front {
        Front {
            shared: Arc::new((grpc, http)),
        }
    }
}

impl Service<Request<tonic::body::Body>> for Front {
    type Response = Response<OutBody>;
    type Error = Infallible;
    type Future = BoxFuture<Response<OutBody>, Infallible>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<tonic::body::Body>) -> Self::Future {
        let shared = self.shared.clone();
        Box::pin(async move {
            let (grpc, http) = &*shared;
            if is_grpc(req.headers()) {
                return Ok(grpc.call(req).await);
            }
            let Ok(resp) = http.clone().oneshot(req).await;
            Ok(resp.map(|b| OutBody::plain(tonic::body::Body::new(b))))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read(body: OutBody) -> Bytes {
        axum::body::to_bytes(axum::body::Body::new(body), usize::MAX)
            .await
            .expect("body")
    }

    /// A KV service that refuses every call the way tonic refuses a message over its
    /// decoding limit.
    #[derive(Clone)]
    struct TooLarge;

    impl NamedService for TooLarge {
        const NAME: &'static str = "etcdserverpb.KV";
    }

    impl Service<Request<InBody>> for TooLarge {
        type Response = GrpcResponse;
        type Error = Infallible;
        type Future = BoxFuture<GrpcResponse, Infallible>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: Request<InBody>) -> Self::Future {
            let status = tonic::Status::out_of_range(
                "Error, decoded message length too large: found 3000010 bytes, the limit is: 2097152 bytes",
            );
            Box::pin(async move { Ok(status.into_http()) })
        }
    }

    fn grpc_call(path: &str) -> Request<tonic::body::Body> {
        Request::builder()
            .uri(path)
            .header("content-type", "application/grpc")
            .body(tonic::body::Body::empty())
            .expect("request")
    }

    /// The status `front` answers `req` with (from the response headers).
    async fn status_of(front: &mut Front, req: Request<tonic::body::Body>) -> tonic::Status {
        let resp = front.call(req).await.expect("infallible");
        tonic::Status::from_header_map(resp.headers()).expect("a status")
    }

    fn metric_line(r: &prometheus::Registry, prefix: &str) -> Option<String> {
        crate::metrics::encode(r)
            .lines()
            .find(|l| l.starts_with(prefix))
            .map(str::to_string)
    }

    #[tokio::test]
    async fn a_size_refusal_reaches_the_client_and_the_metrics_as_grpc_gos() {
        let r = prometheus::Registry::new();
        let metrics = Arc::new(GrpcMetrics::new(&r));
        let mut front = Front::new(
            GrpcServices::new().with(TooLarge).measured(metrics),
            axum::Router::new(),
        );
        let status = status_of(&mut front, grpc_call("/etcdserverpb.KV/Put")).await;
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert_eq!(
            status.message(),
            "grpc: received message larger than max (3000010 vs. 2097152)"
        );
        // (The response, body and all, is dropped: the call is handled.)
        let handled = "grpc_server_handled_total{grpc_code=\"ResourceExhausted\",grpc_method=\"Put\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"}";
        assert_eq!(
            metric_line(&r, handled).as_deref(),
            Some(format!("{handled} 1").as_str())
        );
    }

    #[tokio::test]
    async fn calls_are_routed_by_content_type_and_service() {
        let http = axum::Router::new().route("/health", axum::routing::get(|| async { "fine" }));
        let (_tx, leaderless) = watch::channel(0u64);
        let mut front = Front::new(
            GrpcServices::new()
                .with(TooLarge)
                .require_leader(leaderless),
            http,
        );
        // Plain HTTP goes to the router, whatever the path.
        let plain = Request::builder()
            .uri("/health")
            .body(tonic::body::Body::empty())
            .expect("request");
        let resp = front.call(plain).await.expect("infallible");
        assert_eq!(resp.status(), 200);
        let body = read(resp.into_body()).await;
        assert_eq!(&body[..], b"fine");
        // gRPC to a service nobody serves: Unimplemented, naming it.
        for path in [
            "/etcdserverpb.Nope/Get",
            "/etcdserverpb.KV",
            "/etcdserverpb.KV/",
        ] {
            let status = status_of(&mut front, grpc_call(path)).await;
            assert_eq!(status.code(), tonic::Code::Unimplemented, "{path}");
            assert_eq!(
                status.message(),
                format!("skiff: {path} is not implemented yet")
            );
        }
        // hasleader without a leader: refused before the service runs.
        let mut asks = grpc_call("/etcdserverpb.KV/Put");
        asks.headers_mut()
            .insert("hasleader", HeaderValue::from_static("true"));
        let status = status_of(&mut front, asks).await;
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_eq!(status.message(), "etcdserver: no leader");
        // Without the metadata the same call reaches the service.
        let status = status_of(&mut front, grpc_call("/etcdserverpb.KV/Put")).await;
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    }
}
