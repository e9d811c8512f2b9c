//! The connector tonic uses for `https` peer URLs: TCP, then a rustls handshake with
//! the member's peer client configuration, presenting our certificate.
//!
//! Guarantees: the server name checked against the peer's certificate is the URL's
//! host (an IP address checked against the IP SANs); a failed handshake fails the dial
//! (so the transport's backoff retries it) and never falls back to plaintext.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::PeerError;

/// Dials one `host:port` with TLS (tonic hands it the `http://` URI it connects to).
#[derive(Clone)]
pub struct TlsDialer {
    connector: TlsConnector,
    host_port: String,
    name: ServerName<'static>,
}

impl TlsDialer {
    pub fn new(config: Arc<rustls::ClientConfig>, host_port: &str) -> Result<TlsDialer, PeerError> {
        let host = crate::config::url::host_of(host_port);
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| PeerError::Url(format!("https://{host_port}"), e.to_string()))?;
        Ok(TlsDialer {
            connector: TlsConnector::from(config),
            host_port: host_port.to_string(),
            name,
        })
    }
}

type Dialing = Pin<Box<dyn Future<Output = std::io::Result<TokioIo<TlsStream<TcpStream>>>> + Send>>;

impl tower::Service<axum::http::Uri> for TlsDialer {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = Dialing;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: axum::http::Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let tcp = TcpStream::connect(&this.host_port).await?;
            tcp.set_nodelay(true)?;
            let tls = this.connector.connect(this.name.clone(), tcp).await?;
            Ok(TokioIo::new(tls))
        })
    }
}
