//! One client listener serving both gRPC (HTTP/2) and the HTTP endpoints
//! (HTTP/1.1), as etcd does on its client port, with etcd's message size limits.
//!
//! Guarantees: a request message larger than `--max-request-bytes` plus etcd's 512 KiB
//! of gRPC overhead is refused by the transport before it is decoded; responses are
//! not size-limited (etcd allows up to 2 GiB). The listener stops accepting when the
//! shutdown future completes and in-flight requests finish first.

use std::future::Future;
use std::io;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt;
use tonic::service::Routes;

use crate::config::Url;

/// etcd's allowance for gRPC framing on top of `--max-request-bytes`.
pub const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// The largest request message the transport decodes.
pub fn max_recv_bytes(max_request_bytes: u32) -> usize {
    max_request_bytes as usize + GRPC_OVERHEAD_BYTES
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
    let router = grpc.into_axum_router().merge(http);
    let incoming = TcpListenerStream::new(listener).map(|conn| {
        let conn = conn?;
        // Small gRPC messages must not wait for Nagle's algorithm.
        conn.set_nodelay(true)?;
        Ok::<_, io::Error>(conn)
    });
    tonic::transport::Server::builder()
        .accept_http1(true)
        .add_routes(Routes::from(router))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}
