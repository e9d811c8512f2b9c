//! One client listener serving both gRPC (HTTP/2) and the HTTP endpoints
//! (HTTP/1.1), as etcd does on its client port, with etcd's message size limits.
//!
//! Guarantees: a request message larger than `--max-request-bytes` plus etcd's 512 KiB
//! of gRPC overhead is refused by the transport before it is decoded, with the code
//! and message grpc-go (so etcd) sends: `ResourceExhausted`, "grpc: received message
//! larger than max (N vs. M)"; responses are not size-limited (etcd allows 2 GiB). The listener stops accepting when the
//! shutdown future completes and in-flight requests finish first.

use std::future::Future;
use std::io;

use axum::response::IntoResponse;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt;
use tonic::service::Routes;

use crate::config::Url;
use crate::h2c_authority::AuthorityFix;

/// etcd's allowance for gRPC framing on top of `--max-request-bytes`.
pub const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// The largest request message the transport decodes.
pub fn max_recv_bytes(max_request_bytes: u32) -> usize {
    max_request_bytes as usize + GRPC_OVERHEAD_BYTES
}

/// Rewrites tonic's "decoded message length too large" refusal (OutOfRange) into the
/// status grpc-go sends for the same refusal, which etcd clients expect. Only unary
/// calls can be refused this way before a response starts, so the status is in the
/// response headers.
async fn as_grpc_go_size_error(mut resp: axum::response::Response) -> axum::response::Response {
    const TONIC_PREFIX: &str = "Error, decoded message length too large: found ";
    let Some(status) = tonic::Status::from_header_map(resp.headers()) else {
        return resp;
    };
    if status.code() != tonic::Code::OutOfRange {
        return resp;
    }
    // "... found {len} bytes, the limit is: {limit} bytes"
    let Some(rest) = status.message().strip_prefix(TONIC_PREFIX) else {
        return resp;
    };
    let numbers: Vec<&str> = rest
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .collect();
    let [found, limit] = numbers[..] else {
        return resp;
    };
    let text = format!("grpc: received message larger than max ({found} vs. {limit})");
    if let Ok(value) = axum::http::HeaderValue::from_str(&text) {
        let headers = resp.headers_mut();
        headers.insert("grpc-status", axum::http::HeaderValue::from_static("8"));
        headers.insert("grpc-message", value);
    }
    resp
}

/// Anything not routed: a gRPC call to a service or method Skiff does not serve (the
/// Auth service, for now) gets `Unimplemented` naming it, instead of tonic's empty
/// message; anything else a plain 404.
async fn not_served(req: axum::extract::Request) -> axum::response::Response {
    let grpc = req
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"));
    if grpc {
        let status = tonic::Status::unimplemented(format!(
            "skiff: {} is not implemented yet",
            req.uri().path()
        ));
        return status.into_http::<axum::body::Body>();
    }
    (axum::http::StatusCode::NOT_FOUND, "404 page not found\n").into_response()
}

/// Binds `url`'s `host:port` (a name such as `localhost` resolves to its first
/// address that can be bound, as Go's listener does).
pub async fn bind(url: &Url) -> io::Result<TcpListener> {
    TcpListener::bind(url.host_port())
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("listen on {url}: {e}")))
}

/// Serves `grpc` and `http` on `listener` until `shutdown` completes.
pub async fn serve_client(
    listener: TcpListener,
    grpc: Routes,
    http: axum::Router,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let router = grpc
        .into_axum_router()
        .merge(http)
        .fallback(not_served)
        .layer(axum::middleware::map_response(as_grpc_go_size_error));
    let incoming = TcpListenerStream::new(listener).map(|conn| {
        let conn = conn?;
        // Small gRPC messages must not wait for Nagle's algorithm.
        conn.set_nodelay(true)?;
        // Endpoints written as http://host:port arrive with that URL as :authority.
        Ok::<_, io::Error>(AuthorityFix::new(conn))
    });
    tonic::transport::Server::builder()
        .accept_http1(true)
        .add_routes(Routes::from(router))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}
