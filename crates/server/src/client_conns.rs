//! The client port's connections served without tonic's server: HTTP/2 by `skiff-h2`'s
//! one-task-per-connection driver, HTTP/1.1 (`/health`, `/metrics`, the JSON gateway)
//! by hyper, both in front of the same [`Front`].
//!
//! A plain connection is HTTP/2 when its first bytes are the HTTP/2 preface (gRPC
//! clients send it at once, "prior knowledge"); a TLS one when ALPN chose `h2`. Every
//! request carries the connection's connect info (tonic's `TcpConnectInfo`, and
//! `TlsConnectInfo` over TLS, as tonic's server put them) so that a client
//! certificate's common name reaches `facade::caller`. The `:authority` etcd's clients
//! send for a URL endpoint is accepted by the driver itself (no `h2c_authority` pass).
//!
//! Guarantees, as with tonic's server: once `shutdown` completes no connection is
//! accepted; HTTP/2 connections get a GOAWAY and HTTP/1.1 ones close after their
//! request in flight; [`serve`] returns when every connection has finished. A call
//! whose `grpc-timeout` passes before its response head is answered `Cancelled`,
//! "Timeout expired" (tonic's answer).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use skiff_coalesce::Coalesce;
use skiff_h2::RecvBody;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_stream::StreamExt;
use tonic::transport::server::Connected;
use tower::Service;

use crate::config::Config;
use crate::front::{Front, OutBody};

/// Whether the client port uses this module: always, unless `SKIFF_CLIENT_H2=tonic`
/// asks for tonic's server (kept for comparison runs, `bench/ab_cpu.sh`).
pub fn enabled() -> bool {
    std::env::var_os("SKIFF_CLIENT_H2").is_none_or(|v| v != "tonic")
}

/// The front for a connection whose request bodies are `B` (the HTTP/2 driver's,
/// hyper's for HTTP/1.1): each body is boxed into the one the front takes.
struct Adapt<B>(Front, std::marker::PhantomData<fn(B)>);

impl<B> Adapt<B> {
    fn new(front: Front) -> Self {
        Adapt(front, std::marker::PhantomData)
    }
}

impl<B> Clone for Adapt<B> {
    fn clone(&self) -> Self {
        Adapt::new(self.0.clone())
    }
}

impl<B> Service<Request<B>> for Adapt<B>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<OutBody>;
    type Error = Infallible;
    type Future = <Front as Service<Request<tonic::body::Body>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        self.0.call(req.map(tonic::body::Body::new))
    }
}

/// What every connection of one listener shares.
#[derive(Clone)]
struct Shared {
    front: Front,
    h2: skiff_h2::Config,
    stop: watch::Receiver<bool>,
}

impl Shared {
    fn stopping(&self) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let mut stop = self.stop.clone();
        Box::pin(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
    }
}

/// Serves `front` on `listener` until `shutdown` completes (see the module docs).
pub async fn serve(
    listener: TcpListener,
    front: Front,
    config: Option<Arc<Config>>,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    let mut h2 = skiff_h2::Config::default();
    if let Some(config) = &config {
        h2.max_concurrent_streams = config.max_concurrent_streams;
        h2.keepalive_interval = config.grpc_keepalive_interval;
        if let Some(t) = config.grpc_keepalive_timeout {
            h2.keepalive_timeout = t;
        }
    }
    let (stop_tx, stop) = watch::channel(false);
    let shared = Shared { front, h2, stop };
    let mut conns = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    match tls {
        None => loop {
            let accepted = tokio::select! {
                _ = &mut shutdown => break,
                a = listener.accept() => a,
            };
            match accepted {
                Ok((tcp, _)) => {
                    let _ = tcp.set_nodelay(true);
                    conns.spawn(plain(tcp, shared.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "client port: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            reap(&mut conns);
        },
        Some(tls) => {
            let mut incoming = crate::tls::listen::accept(listener, tls, "client");
            loop {
                let next = tokio::select! {
                    _ = &mut shutdown => break,
                    n = incoming.next() => n,
                };
                match next {
                    Some(Ok(conn)) => {
                        conns.spawn(secure(conn, shared.clone()));
                    }
                    Some(Err(e)) => tracing::warn!(error = %e, "client port: accept failed"),
                    None => break,
                }
                reap(&mut conns);
            }
        }
    }
    let _ = stop_tx.send(true);
    while conns.join_next().await.is_some() {}
    Ok(())
}

/// Collects the connections that finished (their results were logged).
fn reap(conns: &mut tokio::task::JoinSet<()>) {
    while conns.try_join_next().is_some() {}
}

/// A plain connection: HTTP/2 if it starts with the preface, else HTTP/1.1.
async fn plain(tcp: TcpStream, shared: Shared) {
    let info = tcp.connect_info();
    let mut stop = shared.stop.clone();
    // A connection that sends nothing does not hold up a shutdown.
    let is_h2 = tokio::select! {
        r = starts_with_preface(&tcp) => match r {
            Ok(v) => v,
            Err(_) => return,
        },
        _ = stop.wait_for(|s| *s) => return,
    };
    if is_h2 {
        let mut ext = axum::http::Extensions::new();
        ext.insert(info);
        h2(Coalesce::new(tcp), ext, shared).await;
    } else {
        h1(tcp, info, shared).await;
    }
}

/// A TLS connection: HTTP/2 if ALPN chose it, else HTTP/1.1.
async fn secure(tls: tokio_rustls::server::TlsStream<TcpStream>, shared: Shared) {
    let info = tls.connect_info();
    if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
        let mut ext = axum::http::Extensions::new();
        ext.insert(info);
        h2(Coalesce::new(tls), ext, shared).await;
    } else {
        h1(tls, info, shared).await;
    }
}

async fn h2<IO>(io: IO, ext: axum::http::Extensions, shared: Shared)
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let stopping = shared.stopping();
    if let Err(e) = skiff_h2::serve(
        io,
        Adapt::<RecvBody>::new(shared.front),
        shared.h2,
        ext,
        stopping,
    )
    .await
    {
        tracing::debug!(error = %e, "client connection ended");
    }
}

async fn h1<IO, I>(io: IO, info: I, shared: Shared)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    I: Clone + Send + Sync + 'static,
{
    let front = Adapt::<hyper::body::Incoming>::new(shared.front.clone());
    let svc = tower::ServiceBuilder::new()
        .map_request(move |mut req: Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(info.clone());
            req
        })
        .service(front);
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let conn =
        builder.serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(svc));
    tokio::pin!(conn);
    let mut stop = shared.stop.clone();
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "client HTTP/1.1 connection ended");
            }
            return;
        }
        _ = stop.wait_for(|s| *s) => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

/// Whether the connection's first bytes are HTTP/2's preface (read without consuming
/// them). A client that sends a prefix of it and stops is given a second to finish.
async fn starts_with_preface(tcp: &TcpStream) -> io::Result<bool> {
    let want = skiff_h2::PREFACE;
    let mut buf = [0u8; 24];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    loop {
        let n = tcp.peek(&mut buf).await?;
        if n == 0 || buf[..n] != want[..n] {
            return Ok(false);
        }
        if n == want.len() {
            return Ok(true);
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
