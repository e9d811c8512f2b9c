//! Accepting TLS connections on a listener: every handshake runs in its own task, so
//! a slow or hostile client never holds up the next connection.
//!
//! Guarantees: only connections whose handshake completed (with the configuration's
//! client certificate checks) are yielded; a failed handshake is logged as etcd logs
//! it ("rejected connection") and dropped; a handshake that takes longer than
//! [`HANDSHAKE_TIMEOUT`] is dropped; the accept loop ends when the stream is dropped.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;

/// How long a client may take to complete its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The completed TLS connections of `listener`; `what` names the port in logs.
pub fn accept(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    what: &'static str,
) -> ReceiverStream<io::Result<TlsStream<TcpStream>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let acceptor = TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = tx.closed() => return,
            };
            let (tcp, remote) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: pause instead of spinning.
                    tracing::warn!(port = what, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Ok(Err(e)) => tracing::warn!(
                        port = what,
                        %remote,
                        error = %e,
                        "rejected connection (TLS handshake failed)"
                    ),
                    Err(_) => tracing::warn!(
                        port = what,
                        %remote,
                        "rejected connection (TLS handshake timed out)"
                    ),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}
