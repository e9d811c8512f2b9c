//! The connection driver against the `h2` crate's client: requests, bodies both ways
//! past the flow-control windows, trailers, resets, timeouts and a graceful shutdown.

#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body::Frame;
use http_body_util::BodyExt;
use skiff_h2::{serve, Config, RecvBody};
use tokio::net::{TcpListener, TcpStream};

/// Its frames, then the end (or, when `.1`, nothing ever again).
struct TestBody(VecDeque<Frame<Bytes>>, bool);

impl http_body::Body for TestBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.0.pop_front() {
            Some(f) => Poll::Ready(Some(Ok(f))),
            None if self.1 => Poll::Pending,
            None => Poll::Ready(None),
        }
    }
    fn is_end_stream(&self) -> bool {
        self.0.is_empty() && !self.1
    }
}

struct Guard(Arc<AtomicUsize>);
impl Drop for Guard {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[derive(Clone, Default)]
struct Svc {
    dropped: Arc<AtomicUsize>,
}

fn trailers(pairs: &[(&'static str, String)]) -> HeaderMap {
    let mut t = HeaderMap::new();
    for (k, v) in pairs {
        t.insert(*k, v.parse().unwrap());
    }
    t
}

impl tower_service::Service<Request<RecvBody>> for Svc {
    type Response = Response<TestBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<TestBody>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<RecvBody>) -> Self::Future {
        let dropped = self.dropped.clone();
        Box::pin(async move {
            let path = req.uri().path().to_string();
            if path == "/reader" {
                // Reads the request body in a task of its own (as a watch does) and
                // answers with a stream that never ends.
                let mut body = req.into_body();
                tokio::spawn(async move {
                    while let Some(Ok(_)) = body.frame().await {}
                    dropped.fetch_add(1, Ordering::SeqCst);
                });
                return Ok(Response::new(TestBody(
                    [Frame::data(Bytes::from_static(b"hi"))].into(),
                    true,
                )));
            }
            let authority = req
                .uri()
                .authority()
                .map(|a| a.to_string())
                .unwrap_or_default();
            let size: usize = req
                .headers()
                .get("x-size")
                .map(|v| v.to_str().unwrap().parse().unwrap())
                .unwrap_or(0);
            let frames: VecDeque<Frame<Bytes>> = match path.as_str() {
                "/echo" => {
                    let collected = req.into_body().collect().await.unwrap();
                    let client_trailers = collected.trailers().cloned();
                    let data = collected.to_bytes();
                    let mut t = vec![
                        ("grpc-status", "0".to_string()),
                        ("x-len", data.len().to_string()),
                    ];
                    if let Some(ct) = client_trailers {
                        t.push((
                            "x-client-trailer",
                            ct.get("x-t").unwrap().to_str().unwrap().to_string(),
                        ));
                    }
                    [Frame::data(data), Frame::trailers(trailers(&t))].into()
                }
                "/big" => [
                    Frame::data(Bytes::from(vec![7u8; size])),
                    Frame::trailers(trailers(&[("grpc-status", "0".into())])),
                ]
                .into(),
                "/authority" => [Frame::data(Bytes::from(authority))].into(),
                "/empty" => VecDeque::new(),
                "/slow" => {
                    let _g = Guard(dropped);
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    VecDeque::new()
                }
                "/wait" => {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    [Frame::data(Bytes::from_static(b"done"))].into()
                }
                _ => VecDeque::new(),
            };
            let mut resp = Response::new(TestBody(frames, false));
            resp.headers_mut()
                .insert("content-type", "application/grpc".parse().unwrap());
            if path == "/empty" {
                resp.headers_mut()
                    .insert("grpc-status", "5".parse().unwrap());
            }
            Ok(resp)
        })
    }
}

struct Server {
    addr: std::net::SocketAddr,
    svc: Svc,
    stop: tokio::sync::watch::Sender<bool>,
    done: tokio::sync::mpsc::UnboundedReceiver<Result<(), skiff_h2::ConnError>>,
}

async fn start(config: Config) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let svc = Svc::default();
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let (done_tx, done) = tokio::sync::mpsc::unbounded_channel();
    let s = svc.clone();
    tokio::spawn(async move {
        loop {
            let (conn, _) = listener.accept().await.unwrap();
            let mut rx = stop_rx.clone();
            let shutdown = Box::pin(async move {
                let _ = rx.wait_for(|s| *s).await;
            });
            let (svc, config, done_tx) = (s.clone(), config.clone(), done_tx.clone());
            tokio::spawn(async move {
                let r = serve(conn, svc, config, http::Extensions::new(), shutdown).await;
                let _ = done_tx.send(r);
            });
        }
    });
    Server {
        addr,
        svc,
        stop,
        done,
    }
}

async fn client(addr: std::net::SocketAddr) -> h2::client::SendRequest<Bytes> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (send, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send
}

fn post(path: &str) -> Request<()> {
    Request::builder()
        .method("POST")
        .uri(format!("http://localhost{path}"))
        .header("content-type", "application/grpc")
        .body(())
        .unwrap()
}

async fn read_all(
    resp: Response<h2::RecvStream>,
) -> (http::StatusCode, HeaderMap, Vec<u8>, Option<HeaderMap>) {
    let (parts, mut body) = resp.into_parts();
    let mut data = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        body.flow_control().release_capacity(chunk.len()).unwrap();
        data.extend_from_slice(&chunk);
    }
    let t = body.trailers().await.unwrap();
    (parts.status, parts.headers, data, t)
}

#[tokio::test]
async fn concurrent_calls_on_one_connection_get_their_own_answers() {
    let server = start(Config::default()).await;
    let send = client(server.addr).await;
    let mut calls = Vec::new();
    for i in 0..50u32 {
        let mut send = send.clone().ready().await.unwrap();
        let (resp, mut body) = send.send_request(post("/echo"), false).unwrap();
        body.send_data(Bytes::from(format!("call {i}")), true)
            .unwrap();
        calls.push((i, resp));
    }
    for (i, resp) in calls {
        let (status, headers, data, t) = read_all(resp.await.unwrap()).await;
        assert_eq!(status, 200);
        assert_eq!(headers["content-type"], "application/grpc");
        assert_eq!(data, format!("call {i}").into_bytes());
        let t = t.unwrap();
        assert_eq!(t["grpc-status"], "0");
        assert_eq!(t["x-len"], format!("call {i}").len().to_string());
    }
}

#[tokio::test]
async fn bodies_larger_than_every_window_go_through_both_ways() {
    let server = start(Config {
        stream_window: 16 * 1024,
        conn_window: 70_000,
        ..Config::default()
    })
    .await;
    let mut send = client(server.addr).await.ready().await.unwrap();
    // 3 MiB up: the server must give its windows back as the service reads.
    let (resp, mut body) = send.send_request(post("/echo"), false).unwrap();
    let payload = Bytes::from((0..3 << 20).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    body.send_data(payload.clone(), false).unwrap();
    body.send_trailers(trailers(&[("x-t", "after".into())]))
        .unwrap();
    let (_, _, data, t) = read_all(resp.await.unwrap()).await;
    assert_eq!(data, payload);
    assert_eq!(t.unwrap()["x-client-trailer"], "after");
    // 5 MiB down: the server must wait for the client's window (65,535 by default).
    let mut req = post("/big");
    req.headers_mut()
        .insert("x-size", (5 << 20).to_string().parse().unwrap());
    let (resp, _) = send.send_request(req, true).unwrap();
    let (_, _, data, t) = read_all(resp.await.unwrap()).await;
    assert_eq!(data.len(), 5 << 20);
    assert!(data.iter().all(|b| *b == 7));
    assert_eq!(t.unwrap()["grpc-status"], "0");
}

#[tokio::test]
async fn a_response_without_a_body_ends_with_its_head() {
    let server = start(Config::default()).await;
    let mut send = client(server.addr).await.ready().await.unwrap();
    let (resp, _) = send.send_request(post("/empty"), true).unwrap();
    let resp = resp.await.unwrap();
    assert_eq!(resp.headers()["grpc-status"], "5");
    assert!(resp.body().is_end_stream());
}

#[tokio::test]
async fn a_url_authority_reaches_the_service_without_its_scheme() {
    let server = start(Config::default()).await;
    let mut send = client(server.addr).await.ready().await.unwrap();
    let mut req = post("/authority");
    *req.uri_mut() = "http://127.0.0.1:2379/authority".parse().unwrap();
    let (resp, _) = send.send_request(req, true).unwrap();
    let (_, _, data, _) = read_all(resp.await.unwrap()).await;
    assert_eq!(data, b"127.0.0.1:2379");
}

#[tokio::test]
async fn a_reset_from_the_client_cancels_the_call() {
    let server = start(Config::default()).await;
    let mut send = client(server.addr).await.ready().await.unwrap();
    let (resp, mut body) = send.send_request(post("/slow"), false).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    body.send_reset(h2::Reason::CANCEL);
    drop(resp);
    for _ in 0..100 {
        if server.svc.dropped.load(Ordering::SeqCst) == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the call's future was not dropped after the client's RST_STREAM");
}

#[tokio::test]
async fn a_grpc_timeout_ends_a_call_that_does_not_answer() {
    let server = start(Config::default()).await;
    let mut send = client(server.addr).await.ready().await.unwrap();
    let mut req = post("/slow");
    req.headers_mut()
        .insert("grpc-timeout", "200m".parse().unwrap());
    let (resp, _) = send.send_request(req, true).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(5), resp)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.headers()["grpc-status"], "1");
    assert_eq!(resp.headers()["grpc-message"], "Timeout expired");
    assert_eq!(server.svc.dropped.load(Ordering::SeqCst), 1);
}

/// A frame's bytes: length, type, flags, stream id, payload.
fn raw_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut b = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    b.extend_from_slice(&[kind, flags]);
    b.extend_from_slice(&stream.to_be_bytes());
    b.extend_from_slice(payload);
    b
}

/// A HEADERS frame (END_HEADERS, END_STREAM) of a POST to `path`, its fields encoded
/// with HPACK's static table and literals that are not indexed.
fn raw_post(stream: u32, path: &str) -> Vec<u8> {
    let mut block = vec![0x83, 0x86]; // :method POST, :scheme http
    for (name_index, value) in [(&[0x04u8][..], path), (&[0x01], "x")] {
        block.extend_from_slice(name_index); // :path, :authority
        block.push(value.len() as u8);
        block.extend_from_slice(value.as_bytes());
    }
    block.extend_from_slice(&[0x0f, 0x10]); // content-type (static index 31)
    block.push(16);
    block.extend_from_slice(b"application/grpc");
    raw_frame(0x1, 0x4 | 0x1, stream, &block)
}

/// The next frame's (type, stream id, payload).
async fn read_raw_frame(tcp: &mut TcpStream) -> (u8, u32, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    let mut head = [0u8; 9];
    tcp.read_exact(&mut head).await.unwrap();
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    let mut payload = vec![0u8; len];
    tcp.read_exact(&mut payload).await.unwrap();
    (head[3], stream, payload)
}

/// A client that ignores the limit the server announced (the `h2` crate's honours it,
/// waiting for room): the stream past it is reset with REFUSED_STREAM (RFC 7540
/// 5.1.2) and never reaches the service, and the connection goes on: once the client
/// cancels the first stream, the next one is answered.
#[tokio::test]
async fn streams_past_the_limit_are_refused() {
    use tokio::io::AsyncWriteExt;
    let server = start(Config {
        max_concurrent_streams: 1,
        ..Config::default()
    })
    .await;
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    let mut hello = skiff_h2::PREFACE.to_vec();
    hello.extend(raw_frame(0x4, 0, 0, &[])); // SETTINGS
    hello.extend(raw_post(1, "/slow"));
    hello.extend(raw_post(3, "/echo"));
    tcp.write_all(&hello).await.unwrap();
    let refused = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let (kind, stream, payload) = read_raw_frame(&mut tcp).await;
            assert!(
                !(kind == 0x1 && stream == 3),
                "the stream past the limit was answered"
            );
            if kind == 0x3 {
                return (stream, payload);
            }
        }
    })
    .await
    .expect("no RST_STREAM within 5 s");
    assert_eq!(refused, (3, 0x7u32.to_be_bytes().to_vec()), "RST_STREAM");
    // The first stream, cancelled by the client, frees its place for the next.
    let mut more = raw_frame(0x3, 0, 1, &0x8u32.to_be_bytes()); // RST_STREAM CANCEL
    more.extend(raw_post(5, "/empty"));
    tcp.write_all(&more).await.unwrap();
    let answered = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let (kind, stream, _) = read_raw_frame(&mut tcp).await;
            assert!(kind != 0x3, "stream {stream} reset");
            if kind == 0x1 {
                return stream;
            }
        }
    })
    .await
    .expect("no answer to the stream after the cancelled one within 5 s");
    assert_eq!(answered, 5);
    // The slow call was dropped when cancelled.
    tokio::time::timeout(Duration::from_secs(5), async {
        while server.svc.dropped.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the cancelled call was not dropped");
}

#[tokio::test]
async fn a_graceful_shutdown_lets_open_calls_finish() {
    let mut server = start(Config::default()).await;
    let mut send = client(server.addr).await.ready().await.unwrap();
    let (resp, _) = send.send_request(post("/wait"), true).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    server.stop.send(true).unwrap();
    let (_, _, data, _) = read_all(resp.await.unwrap()).await;
    assert_eq!(data, b"done");
    let ended = tokio::time::timeout(Duration::from_secs(5), server.done.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(ended.is_ok(), "{ended:?}");
}

#[tokio::test]
async fn a_connection_that_is_not_http2_is_refused() {
    let mut server = start(Config::default()).await;
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut buf))
        .await
        .unwrap();
    let ended = server.done.recv().await.unwrap();
    assert!(ended.is_err());
}

#[tokio::test]
async fn an_answer_before_the_request_body_ended_leaves_the_connection_usable() {
    let server = start(Config::default()).await;
    let send = client(server.addr).await;
    let mut s = send.clone().ready().await.unwrap();
    let (resp, mut body) = s.send_request(post("/empty"), false).unwrap();
    body.send_data(Bytes::from_static(b"first"), false).unwrap();
    let resp = resp.await.unwrap();
    assert_eq!(resp.headers()["grpc-status"], "5");
    // More of the body, sent while (or after) the server reset the stream: dropped.
    let _ = body.send_data(Bytes::from(vec![1u8; 100_000]), true);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut s = send.clone().ready().await.unwrap();
    let (resp, mut body) = s.send_request(post("/echo"), false).unwrap();
    body.send_data(Bytes::from_static(b"still here"), true)
        .unwrap();
    let (_, _, data, _) = read_all(resp.await.unwrap()).await;
    assert_eq!(data, b"still here");
}

#[tokio::test]
async fn a_call_after_a_long_answer_is_read_and_answered() {
    let server = start(Config::default()).await;
    let mut send = client(server.addr).await.ready().await.unwrap();
    let mut req = post("/big");
    req.headers_mut()
        .insert("x-size", (8 << 20).to_string().parse().unwrap());
    let (resp, _) = send.send_request(req, true).unwrap();
    let (_, _, data, _) = read_all(resp.await.unwrap()).await;
    assert_eq!(data.len(), 8 << 20);
    let mut send = send.ready().await.unwrap();
    let (resp, mut body) = send.send_request(post("/echo"), false).unwrap();
    body.send_data(Bytes::from_static(b"next"), true).unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(5), async {
        read_all(resp.await.unwrap()).await
    })
    .await
    .expect("the call after a long answer was not answered");
    assert_eq!(answer.2, b"next");
}

#[tokio::test]
async fn a_closed_connection_ends_the_request_bodies_it_carried() {
    let server = start(Config::default()).await;
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let (send, conn) = h2::client::handshake(tcp).await.unwrap();
    let conn = tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut send = send.ready().await.unwrap();
    let (resp, mut body) = send.send_request(post("/reader"), false).unwrap();
    body.send_data(Bytes::from_static(b"request"), false)
        .unwrap();
    let resp = resp.await.unwrap();
    assert_eq!(resp.status(), 200);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(server.svc.dropped.load(Ordering::SeqCst), 0);
    // The client goes away without ending its stream.
    conn.abort();
    drop((send, body, resp));
    for _ in 0..200 {
        if server.svc.dropped.load(Ordering::SeqCst) == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the service's reader of the request body never saw the connection end");
}
