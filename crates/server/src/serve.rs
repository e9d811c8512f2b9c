//! One client listener serving both gRPC (HTTP/2) and the HTTP endpoints
//! (HTTP/1.1), as etcd does on its client port, with etcd's message size limits.
//!
//! Guarantees: a request message larger than `--max-request-bytes` plus etcd's 512 KiB
//! of gRPC overhead is refused by the transport before it is decoded, with the code
//! and message grpc-go (so etcd) sends: `ResourceExhausted`, "grpc: received message
//! larger than max (N vs. M)"; responses are not size-limited (etcd allows 2 GiB). The listener stops accepting when the
//! shutdown future completes and in-flight requests finish first.
//!
//! [`serve_client_with`] applies the client-port flags: HTTP/2 keepalive pings and
//! the per-connection stream limit (`--grpc-keepalive-*`, `--max-concurrent-streams`),
//! and, on plain HTTP requests only (never gRPC), etcd's access controller: a `Host`
//! not in `--host-whitelist` gets 421 with etcd's DNS-rebinding text, allowed origins
//! (`--cors`) get etcd's CORS headers, and `OPTIONS` is answered 200 at once.
//!
//! An `https` client URL is served with TLS (`crate::tls`): the same router behind a
//! rustls handshake (ALPN `h2` and `http/1.1`), so gRPC and HTTPS share the port as
//! in etcd; as in etcd, requests over TLS skip the `--host-whitelist` check.

use std::future::Future;
use std::io;
use std::sync::Arc;

use axum::response::IntoResponse;
use skiff_coalesce::Coalesce;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt;

use crate::config::{Config, Url};
use crate::front::{Front, GrpcServices};
use crate::h2c_authority::AuthorityFix;

/// etcd's allowance for gRPC framing on top of `--max-request-bytes`.
pub const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// The largest request message the transport decodes.
pub fn max_recv_bytes(max_request_bytes: u32) -> usize {
    max_request_bytes as usize + GRPC_OVERHEAD_BYTES
}

/// An HTTP request to a path nothing serves: a plain 404, as Go's mux answers (gRPC
/// calls to services Skiff does not serve are answered by `crate::front`).
async fn not_served() -> axum::response::Response {
    (axum::http::StatusCode::NOT_FOUND, "404 page not found\n").into_response()
}

/// Serves `http` alone (HTTP/1.1) on `listener` until `shutdown` completes: the
/// `--listen-metrics-urls` listeners.
pub async fn serve_http(
    listener: TcpListener,
    http: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    axum::serve(listener, http)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Binds `url`'s `host:port` (a name such as `localhost` resolves to its first
/// address that can be bound, as Go's listener does).
pub async fn bind(url: &Url) -> io::Result<TcpListener> {
    TcpListener::bind(url.host_port())
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("listen on {url}: {e}")))
}

/// Serves `grpc` and `http` on `listener` until `shutdown` completes, with etcd's
/// default client-port settings.
pub async fn serve_client(
    listener: TcpListener,
    grpc: GrpcServices,
    http: axum::Router,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    serve_client_with(listener, grpc, http, None, None, shutdown).await
}

/// Why a client listener stopped serving.
pub type ServeError = Box<dyn std::error::Error + Send + Sync>;

/// The `Host` of a request without its port (Go's `net.SplitHostPort`, else as is).
fn request_host(req: &axum::extract::Request) -> String {
    let host = req
        .headers()
        .get(axum::http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .unwrap_or_default();
    if let Some(rest) = host.strip_prefix('[') {
        if let Some((h, _)) = rest.split_once("]:") {
            return h.to_string();
        }
    }
    match host.rsplit_once(':') {
        Some((h, port)) if !h.contains(':') && port.chars().all(|c| c.is_ascii_digit()) => {
            h.to_string()
        }
        _ => host.to_string(),
    }
}

/// etcd's `accessController` for plain HTTP requests (see the module doc).
async fn access_control(
    axum::extract::State((config, tls)): axum::extract::State<(Arc<Config>, bool)>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::{header, HeaderValue, Method, StatusCode};
    let host = request_host(&req);
    if !tls && !config.host_allowed(&host) {
        tracing::warn!(%host, "rejecting HTTP request to prevent DNS rebinding attacks");
        let body = format!(
            "\netcd received your request, but the Host header was unrecognized.\n\n\
             To fix this, choose one of the following options:\n\
             - Enable TLS, then any HTTPS request will be allowed.\n\
             - Add the hostname you want to use to the whitelist in settings.\n  \
             - e.g. etcd --host-whitelist {host:?}\n\n\
             This requirement has been added to help prevent \"DNS Rebinding\" attacks (CVE-2018-5702).\n\n"
        );
        return (
            StatusCode::MISDIRECTED_REQUEST,
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            body,
        )
            .into_response();
    }
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let allow = config.cors_origin(origin.as_deref()).map(str::to_string);
    let mut resp = if req.method() == Method::OPTIONS {
        StatusCode::OK.into_response()
    } else {
        next.run(req).await
    };
    if let Some(value) = allow.and_then(|o| HeaderValue::from_str(&o).ok()) {
        let headers = resp.headers_mut();
        headers.append(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("POST, GET, OPTIONS, PUT, DELETE"),
        );
        headers.append(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        headers.append(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("accept, content-type, authorization"),
        );
    }
    resp
}

/// The plain TCP connections `listener` accepts, with `TCP_NODELAY` set: small gRPC
/// messages (and the HTTP/2 window updates a sender waits for) must not wait for
/// Nagle's algorithm, and tonic sets nothing on connections it is handed. (TLS
/// listeners set it in `tls::listen`.)
pub fn accept_nodelay(
    listener: TcpListener,
) -> impl tokio_stream::Stream<Item = io::Result<tokio::net::TcpStream>> {
    TcpListenerStream::new(listener).map(|conn| {
        let conn = conn?;
        conn.set_nodelay(true)?;
        Ok(conn)
    })
}

/// [`serve_client`] with the member's client-port flags (`None`: etcd's defaults)
/// and, for an `https` URL, its TLS configuration.
pub async fn serve_client_with(
    listener: TcpListener,
    grpc: GrpcServices,
    http: axum::Router,
    config: Option<Arc<Config>>,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let mut http = http.fallback(not_served);
    let mut builder = tonic::transport::Server::builder().accept_http1(true);
    if let Some(config) = &config {
        builder = builder
            .http2_keepalive_interval(config.grpc_keepalive_interval)
            .http2_keepalive_timeout(config.grpc_keepalive_timeout)
            .max_concurrent_streams(config.max_concurrent_streams);
        http = http.layer(axum::middleware::from_fn_with_state(
            (config.clone(), tls.is_some()),
            access_control,
        ));
    }
    let front = Front::new(grpc, http);
    if crate::client_conns::enabled() {
        return Ok(crate::client_conns::serve(listener, front, config, tls, shutdown).await?);
    }
    match tls {
        Some(tls) => {
            // Endpoints written as https://host:port arrive with that URL as :authority.
            let incoming = crate::tls::listen::accept(listener, tls, "client")
                .map(|conn| conn.map(|c| Coalesce::new(AuthorityFix::new(c))));
            Ok(builder
                .serve_with_incoming_shutdown(front, incoming, shutdown)
                .await?)
        }
        None => {
            // Endpoints written as http://host:port arrive with that URL as :authority.
            let incoming = accept_nodelay(listener)
                .map(|conn| conn.map(|c| Coalesce::new(AuthorityFix::new(c))));
            Ok(builder
                .serve_with_incoming_shutdown(front, incoming, shutdown)
                .await?)
        }
    }
}
