//! A TCP proxy in front of a member's peer port, owned by the harness, to delay or drop
//! the peer traffic going into that member without root or netem.
//!
//! The cluster advertises the proxy's address as the member's peer URL, so every
//! connection another member opens to it passes through here (in both directions: etcd's
//! peer streams are dialled by the receiver of one direction and the sender of the other).
//! - delay: each chunk read is forwarded `delay` later, order kept per direction;
//! - drop: every open connection is reset and new ones are refused until healed.
//!
//! Guarantee: dropping the [`Proxy`] aborts its listener and every connection task; all
//! tasks also stop when either side closes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio::time::Instant;

#[derive(Debug, Error)]
#[error("cannot listen on {addr} for the peer proxy: {source}")]
pub struct ProxyError {
    addr: SocketAddr,
    source: std::io::Error,
}

#[derive(Default)]
struct State {
    delay_ms: AtomicU64,
    dropping: AtomicBool,
    /// Bumped when dropping starts, so running connections notice and close.
    epoch: AtomicU64,
    tasks: Mutex<Vec<AbortHandle>>,
}

impl State {
    fn track(&self, h: AbortHandle) {
        let mut tasks = self.tasks.lock().expect("proxy task list");
        tasks.retain(|t| !t.is_finished());
        tasks.push(h);
    }
}

pub struct Proxy {
    pub listen: SocketAddr,
    state: Arc<State>,
}

impl Proxy {
    /// Listens on `listen` and forwards every connection to `target`.
    pub async fn start(listen: SocketAddr, target: SocketAddr) -> Result<Proxy, ProxyError> {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| ProxyError {
                addr: listen,
                source,
            })?;
        let state = Arc::new(State::default());
        let st = state.clone();
        let accept = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                if st.dropping.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let st2 = st.clone();
                let h = tokio::spawn(async move { serve(inbound, target, st2).await });
                st.track(h.abort_handle());
            }
        });
        state.track(accept.abort_handle());
        Ok(Proxy { listen, state })
    }

    /// Delays every chunk forwarded from now on by `d` (zero heals).
    pub fn set_delay(&self, d: Duration) {
        self.state
            .delay_ms
            .store(d.as_millis() as u64, Ordering::SeqCst);
    }

    /// Resets every connection and refuses new ones until [`Proxy::heal`].
    pub fn drop_all(&self) {
        self.state.dropping.store(true, Ordering::SeqCst);
        self.state.epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// Ends delay and drop.
    pub fn heal(&self) {
        self.state.dropping.store(false, Ordering::SeqCst);
        self.state.delay_ms.store(0, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        for t in self.state.tasks.lock().expect("proxy task list").drain(..) {
            t.abort();
        }
    }
}

async fn serve(inbound: TcpStream, target: SocketAddr, st: Arc<State>) {
    let Ok(Ok(outbound)) =
        tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(target)).await
    else {
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let epoch = st.epoch.load(Ordering::SeqCst);
    let (ri, wi) = inbound.into_split();
    let (ro, wo) = outbound.into_split();
    // Either direction ending (or a drop) ends both.
    tokio::select! {
        _ = pipe(ri, wo, st.clone(), epoch) => {}
        _ = pipe(ro, wi, st.clone(), epoch) => {}
    }
}

/// Copies one direction, each chunk held back by the current delay. A reader task feeds
/// a writer task through a channel so that a delay does not stall reading.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    st: Arc<State>,
    epoch: u64,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(1024);
    let st2 = st.clone();
    let writer = async move {
        while let Some((at, buf)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if st2.epoch.load(Ordering::SeqCst) != epoch || to.write_all(&buf).await.is_err() {
                return;
            }
        }
    };
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if st.epoch.load(Ordering::SeqCst) != epoch {
                return;
            }
            let at = Instant::now() + Duration::from_millis(st.delay_ms.load(Ordering::SeqCst));
            if tx.send((at, buf[..n].to_vec())).await.is_err() {
                return;
            }
        }
    };
    // The reader finishing drops the sender; the writer then drains what is queued.
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn roundtrip(addr: SocketAddr) -> std::io::Result<Duration> {
        let mut c = TcpStream::connect(addr).await?;
        let t = std::time::Instant::now();
        c.write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf).await?;
        assert_eq!(&buf, b"ping");
        Ok(t.elapsed())
    }

    #[tokio::test]
    async fn forwards_delays_drops_and_heals() {
        let echo = echo_server().await;
        let p = Proxy::start("127.0.0.1:22990".parse().unwrap(), echo)
            .await
            .unwrap();
        assert!(roundtrip(p.listen).await.unwrap() < Duration::from_millis(150));
        p.set_delay(Duration::from_millis(200));
        // Both directions are delayed: at least 400 ms for a round trip.
        assert!(roundtrip(p.listen).await.unwrap() >= Duration::from_millis(400));
        p.heal();
        p.drop_all();
        let r = tokio::time::timeout(Duration::from_secs(2), roundtrip(p.listen)).await;
        assert!(!matches!(r, Ok(Ok(_))), "a dropping proxy forwarded: {r:?}");
        p.heal();
        assert!(roundtrip(p.listen).await.is_ok());
    }
}
