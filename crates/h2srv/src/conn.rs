//! One HTTP/2 connection, served by one future: frames in, the service called for each
//! request, responses out.
//!
//! hyper's server spawns a task per stream and hands every frame between it and the
//! connection's task through shared state; here the connection's future polls the
//! service's futures and response bodies itself, each stream with a waker that queues
//! its id, so a unary call is read, dispatched, answered and written by one task, and
//! every frame produced in one turn goes out in one write.
//!
//! What it keeps (RFC 9113): stream states and ids, both directions' flow control
//! (a request body gives its window back as the service reads it, see `body`; a response
//! waits for the client's window), SETTINGS and their acknowledgement, PING answers, a
//! keepalive PING that closes the connection when unanswered, `MAX_CONCURRENT_STREAMS`
//! (a stream past it is refused with `REFUSED_STREAM`), header blocks split across
//! CONTINUATION frames, padding, trailers both ways, RST_STREAM both ways, GOAWAY on a
//! graceful shutdown (streams already open finish) and on a protocol error. A request's
//! `grpc-timeout` bounds the wait for its response head, as tonic's server did.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use http_body::Body;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;
use tower_service::Service;

use crate::body::{self, Recv, RecvBody, RecvState, Returns};
use crate::frame::{self, Head, Reason};
use crate::hpack;

/// What a connection advertises and enforces.
#[derive(Clone, Debug)]
pub struct Config {
    /// Streams open at once; more are refused (`REFUSED_STREAM`).
    pub max_concurrent_streams: u32,
    /// Each request stream's receive window.
    pub stream_window: u32,
    /// The connection's receive window.
    pub conn_window: u32,
    /// The largest header block accepted (decoded fields, 32 bytes of overhead each).
    pub max_header_list_size: u32,
    /// A PING after this long, answered within `keepalive_timeout` or the connection
    /// closes.
    pub keepalive_interval: Option<Duration>,
    pub keepalive_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_concurrent_streams: u32::MAX,
            stream_window: 1 << 20,
            conn_window: 1 << 21,
            max_header_list_size: 1 << 20,
            keepalive_interval: None,
            keepalive_timeout: Duration::from_secs(20),
        }
    }
}

/// Why a connection ended other than by the client closing it.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("connection I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("HTTP/2 protocol error ({reason:?}): {what}")]
    Protocol { reason: Reason, what: &'static str },
    #[error("the client did not answer a keepalive ping in time")]
    KeepaliveTimeout,
}

fn proto(reason: Reason, what: &'static str) -> ConnError {
    ConnError::Protocol { reason, what }
}

/// Serves HTTP/2 (prior knowledge: the client's preface is the first thing read) on
/// `io` until the client closes it, an error, or `shutdown` completes and the streams
/// open then have finished. Every request carries a clone of `extensions`. The service
/// must be ready whenever a request arrives (the client port's front always is); a
/// request arriving while it is not is refused with `REFUSED_STREAM`.
pub async fn serve<IO, S, B>(
    io: IO,
    service: S,
    config: Config,
    extensions: http::Extensions,
    shutdown: Pin<Box<dyn Future<Output = ()> + Send>>,
) -> Result<(), ConnError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    S: Service<Request<RecvBody>, Response = Response<B>, Error = Infallible> + Unpin,
    S::Future: Unpin,
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    Conn::new(io, service, config, extensions, shutdown).await
}

/// Stream ids whose futures or bodies woke, and the connection's own waker.
#[derive(Default)]
struct Wakeups {
    ready: Mutex<Vec<u32>>,
    conn: Mutex<Option<Waker>>,
}

impl Wakeups {
    fn wake_conn(&self) {
        let w = body::lock(&self.conn).clone();
        if let Some(w) = w {
            w.wake();
        }
    }
}

struct StreamWake {
    id: u32,
    wakeups: Arc<Wakeups>,
}

impl Wake for StreamWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        body::lock(&self.wakeups.ready).push(self.id);
        self.wakeups.wake_conn();
    }
}

struct ConnWake(Arc<Wakeups>);

impl Wake for ConnWake {
    fn wake(self: Arc<Self>) {
        self.0.wake_conn();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.wake_conn();
    }
}

/// How a response ends once its pending data is out.
enum End {
    Trailers(HeaderMap),
    Plain,
}

struct Stream<F, B> {
    waker: Waker,
    future: Option<F>,
    deadline: Option<Pin<Box<Sleep>>>,
    body: Option<B>,
    /// Response data waiting for the client's window.
    pending: Bytes,
    end: Option<End>,
    send_window: i64,
    recv: Option<Recv>,
    recv_window: i64,
    recv_closed: bool,
    /// In `Conn::blocked` (waiting for the connection's window).
    blocked: bool,
    /// In `Conn::deferred` (waiting for the write buffer to drain).
    deferred: bool,
    /// The last turn of `poll_streams` that polled it.
    turn: u64,
}

impl<F, B> Drop for Stream<F, B> {
    /// However a stream goes (answered, reset, or with its connection), a request body
    /// still open sees a reset, so a service reading it in a task of its own (a watch,
    /// keep-alives) learns the call is over.
    fn drop(&mut self) {
        if !self.recv_closed {
            if let Some(recv) = &self.recv {
                body::lock(recv).reset();
            }
        }
    }
}

/// The writes queued past this many bytes stop response bodies being polled until
/// the socket takes them.
const WRITE_HIGH_WATER: usize = 256 * 1024;
/// Room kept free in the read buffer for each read (a connection's read buffer starts at
/// twice this and grows only for what a partial frame needs).
const READ_CHUNK: usize = 16 * 1024;
/// Rounds of reading, polling and writing in one poll of the connection at most.
const MAX_TURNS: usize = 32;
/// A write buffer grown past this (a large response) is given back once empty.
const WRITE_KEEP: usize = 64 * 1024;

struct Conn<IO, S, F, B> {
    io: IO,
    service: S,
    config: Config,
    extensions: http::Extensions,
    shutdown: Pin<Box<dyn Future<Output = ()> + Send>>,
    rbuf: Vec<u8>,
    rstart: usize,
    rend: usize,
    wbuf: BytesMut,
    decoder: hpack::Decoder,
    streams: HashMap<u32, Stream<F, B>>,
    wakeups: Arc<Wakeups>,
    returns: Arc<Returns>,
    conn_waker: Waker,
    preface_seen: bool,
    /// The client acknowledged our SETTINGS: until then it may use the default window.
    settings_acked: bool,
    /// The highest stream id the client opened.
    last_stream: u32,
    /// A header block still waiting for CONTINUATION frames: stream, END_STREAM, bytes.
    continuation: Option<(u32, bool, Vec<u8>)>,
    peer_max_frame: usize,
    peer_initial_window: i64,
    send_window: i64,
    recv_window: i64,
    /// Streams with data waiting for the connection's window.
    blocked: Vec<u32>,
    /// Streams whose bodies were not polled because the writes queued were many.
    deferred: Vec<u32>,
    /// Turns of `poll_streams` so far.
    turn: u64,
    /// No new streams: a GOAWAY was sent or received.
    going_away: bool,
    read_closed: bool,
    keepalive: Option<Pin<Box<Sleep>>>,
    ping_out: bool,
    /// Bytes were written and the transport not yet flushed.
    unflushed: bool,
    failed: Option<ConnError>,
}

impl<IO, S, B> Conn<IO, S, S::Future, B>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    S: Service<Request<RecvBody>, Response = Response<B>, Error = Infallible> + Unpin,
    S::Future: Unpin,
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    fn new(
        io: IO,
        service: S,
        config: Config,
        extensions: http::Extensions,
        shutdown: Pin<Box<dyn Future<Output = ()> + Send>>,
    ) -> Self {
        let wakeups = Arc::new(Wakeups::default());
        let conn_waker = Waker::from(Arc::new(ConnWake(wakeups.clone())));
        let mut wbuf = BytesMut::with_capacity(16 * 1024);
        frame::put_settings(
            &mut wbuf,
            &[
                (
                    frame::SETTINGS_MAX_CONCURRENT_STREAMS,
                    config.max_concurrent_streams,
                ),
                (frame::SETTINGS_INITIAL_WINDOW_SIZE, config.stream_window),
                (
                    frame::SETTINGS_MAX_HEADER_LIST_SIZE,
                    config.max_header_list_size,
                ),
            ],
        );
        let conn_window = i64::from(config.conn_window).max(i64::from(frame::DEFAULT_WINDOW));
        if conn_window > i64::from(frame::DEFAULT_WINDOW) {
            frame::put_window_update(
                &mut wbuf,
                0,
                (conn_window - i64::from(frame::DEFAULT_WINDOW)) as u32,
            );
        }
        let keepalive = config
            .keepalive_interval
            .map(|d| Box::pin(tokio::time::sleep(d)));
        Conn {
            io,
            service,
            config,
            extensions,
            shutdown,
            rbuf: vec![0; READ_CHUNK * 2],
            rstart: 0,
            rend: 0,
            wbuf,
            decoder: hpack::Decoder::default(),
            streams: HashMap::new(),
            wakeups,
            returns: Arc::new(Returns::default()),
            conn_waker,
            preface_seen: false,
            settings_acked: false,
            last_stream: 0,
            continuation: None,
            peer_max_frame: frame::DEFAULT_MAX_FRAME_SIZE as usize,
            peer_initial_window: i64::from(frame::DEFAULT_WINDOW),
            send_window: i64::from(frame::DEFAULT_WINDOW),
            recv_window: conn_window,
            blocked: Vec::new(),
            deferred: Vec::new(),
            turn: 0,
            going_away: false,
            read_closed: false,
            keepalive,
            ping_out: false,
            unflushed: false,
            failed: None,
        }
    }

    /// Ends the connection with `err`: a GOAWAY naming it goes out first.
    fn fail(&mut self, err: ConnError) {
        if let ConnError::Protocol { reason, what } = &err {
            frame::put_goaway(&mut self.wbuf, self.last_stream, *reason, what.as_bytes());
        }
        self.streams.clear();
        self.going_away = true;
        self.failed = Some(err);
    }

    // ---- reading ----

    /// Reads what the socket has; `Ok(true)` if anything was read.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Result<bool, ConnError> {
        if self.rstart == self.rend {
            self.rstart = 0;
            self.rend = 0;
        } else if self.rbuf.len() - self.rend < READ_CHUNK {
            self.rbuf.copy_within(self.rstart..self.rend, 0);
            self.rend -= self.rstart;
            self.rstart = 0;
            if self.rbuf.len() - self.rend < READ_CHUNK {
                let grow = self.rend + READ_CHUNK;
                self.rbuf.resize(grow, 0);
            }
        }
        let mut rb = ReadBuf::new(&mut self.rbuf[self.rend..]);
        match Pin::new(&mut self.io).poll_read(cx, &mut rb) {
            Poll::Pending => Ok(false),
            Poll::Ready(Err(e)) => Err(e.into()),
            Poll::Ready(Ok(())) => {
                let n = rb.filled().len();
                if n == 0 {
                    self.read_closed = true;
                    return Ok(false);
                }
                self.rend += n;
                Ok(true)
            }
        }
    }

    /// Handles every complete frame read so far.
    fn process_frames(&mut self) -> Result<(), ConnError> {
        if !self.preface_seen {
            if self.rend - self.rstart < frame::PREFACE.len() {
                return Ok(());
            }
            if &self.rbuf[self.rstart..self.rstart + frame::PREFACE.len()] != frame::PREFACE {
                return Err(proto(
                    Reason::ProtocolError,
                    "not an HTTP/2 connection preface",
                ));
            }
            self.rstart += frame::PREFACE.len();
            self.preface_seen = true;
        }
        while self.rend - self.rstart >= frame::HEADER_LEN {
            let head = Head::parse(&self.rbuf[self.rstart..]);
            if head.len > frame::DEFAULT_MAX_FRAME_SIZE as usize {
                return Err(proto(
                    Reason::FrameSizeError,
                    "frame larger than SETTINGS_MAX_FRAME_SIZE",
                ));
            }
            if self.rend - self.rstart < frame::HEADER_LEN + head.len {
                break;
            }
            let from = self.rstart + frame::HEADER_LEN;
            self.rstart = from + head.len;
            // The buffer is lent out while the frame is handled, so the payload is
            // read in place.
            let buf = std::mem::take(&mut self.rbuf);
            let handled = self.on_frame(head, &buf[from..from + head.len]);
            self.rbuf = buf;
            handled?;
            if self.failed.is_some() {
                break;
            }
        }
        Ok(())
    }

    fn on_frame(&mut self, head: Head, payload: &[u8]) -> Result<(), ConnError> {
        if let Some((stream, _, _)) = &self.continuation {
            if head.kind != frame::CONTINUATION || head.stream != *stream {
                return Err(proto(
                    Reason::ProtocolError,
                    "a header block was interrupted",
                ));
            }
        }
        match head.kind {
            frame::DATA => self.on_data(head, payload),
            frame::HEADERS => self.on_headers(head, payload),
            frame::CONTINUATION => self.on_continuation(head, payload),
            frame::RST_STREAM => {
                if head.stream == 0 {
                    return Err(proto(Reason::ProtocolError, "RST_STREAM on stream 0"));
                }
                if payload.len() != 4 {
                    return Err(proto(Reason::FrameSizeError, "RST_STREAM of a wrong size"));
                }
                if head.stream > self.last_stream {
                    return Err(proto(Reason::ProtocolError, "RST_STREAM on an idle stream"));
                }
                self.remove_stream(head.stream);
                Ok(())
            }
            frame::SETTINGS => self.on_settings(head, payload),
            frame::PING => {
                if head.stream != 0 {
                    return Err(proto(Reason::ProtocolError, "PING on a stream"));
                }
                let Ok(data) = <[u8; 8]>::try_from(payload) else {
                    return Err(proto(Reason::FrameSizeError, "PING of a wrong size"));
                };
                if head.flags & frame::ACK != 0 {
                    self.ping_out = false;
                    self.reset_keepalive(None);
                } else {
                    frame::put_ping(&mut self.wbuf, frame::ACK, data);
                }
                Ok(())
            }
            frame::GOAWAY => {
                self.going_away = true;
                Ok(())
            }
            frame::WINDOW_UPDATE => self.on_window_update(head, payload),
            frame::PRIORITY => {
                if head.stream == 0 {
                    return Err(proto(Reason::ProtocolError, "PRIORITY on stream 0"));
                }
                if payload.len() != 5 {
                    frame::put_rst(&mut self.wbuf, head.stream, Reason::FrameSizeError);
                }
                Ok(())
            }
            frame::PUSH_PROMISE => Err(proto(Reason::ProtocolError, "PUSH_PROMISE from a client")),
            _ => Ok(()), // Unknown frame types are ignored (RFC 9113 §4.1).
        }
    }

    fn on_settings(&mut self, head: Head, payload: &[u8]) -> Result<(), ConnError> {
        if head.stream != 0 {
            return Err(proto(Reason::ProtocolError, "SETTINGS on a stream"));
        }
        if head.flags & frame::ACK != 0 {
            if !payload.is_empty() {
                return Err(proto(
                    Reason::FrameSizeError,
                    "SETTINGS acknowledgement with a payload",
                ));
            }
            if !self.settings_acked {
                // Streams opened before the client saw our window were allowed the
                // default; it now counts ours, and so do we.
                self.settings_acked = true;
                let shrink =
                    i64::from(frame::DEFAULT_WINDOW) - i64::from(self.config.stream_window);
                if shrink > 0 {
                    for s in self.streams.values_mut() {
                        s.recv_window -= shrink;
                    }
                }
            }
            return Ok(());
        }
        if !payload.len().is_multiple_of(6) {
            return Err(proto(Reason::FrameSizeError, "SETTINGS of a wrong size"));
        }
        for p in payload.chunks_exact(6) {
            let id = u16::from_be_bytes([p[0], p[1]]);
            let value = u32::from_be_bytes([p[2], p[3], p[4], p[5]]);
            match id {
                frame::SETTINGS_INITIAL_WINDOW_SIZE => {
                    if i64::from(value) > frame::MAX_WINDOW {
                        return Err(proto(
                            Reason::FlowControlError,
                            "SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1",
                        ));
                    }
                    let delta = i64::from(value) - self.peer_initial_window;
                    self.peer_initial_window = i64::from(value);
                    let mut woke = Vec::new();
                    for (id, s) in self.streams.iter_mut() {
                        s.send_window += delta;
                        if s.send_window > frame::MAX_WINDOW {
                            return Err(proto(
                                Reason::FlowControlError,
                                "a stream's window above 2^31-1",
                            ));
                        }
                        if delta > 0 && !s.pending.is_empty() {
                            woke.push(*id);
                        }
                    }
                    body::lock(&self.wakeups.ready).extend(woke);
                }
                frame::SETTINGS_MAX_FRAME_SIZE => {
                    if !(frame::DEFAULT_MAX_FRAME_SIZE..=frame::MAX_MAX_FRAME_SIZE).contains(&value)
                    {
                        return Err(proto(
                            Reason::ProtocolError,
                            "SETTINGS_MAX_FRAME_SIZE out of range",
                        ));
                    }
                    self.peer_max_frame = value as usize;
                }
                frame::SETTINGS_ENABLE_PUSH if value > 1 => {
                    return Err(proto(
                        Reason::ProtocolError,
                        "SETTINGS_ENABLE_PUSH not 0 or 1",
                    ));
                }
                // The header table size bounds a table our encoder never uses; the rest
                // limit what a server does not do (push) or are advisory.
                _ => {}
            }
        }
        frame::put_settings_ack(&mut self.wbuf);
        Ok(())
    }

    fn on_window_update(&mut self, head: Head, payload: &[u8]) -> Result<(), ConnError> {
        let Ok(b) = <[u8; 4]>::try_from(payload) else {
            return Err(proto(
                Reason::FrameSizeError,
                "WINDOW_UPDATE of a wrong size",
            ));
        };
        let inc = i64::from(u32::from_be_bytes(b) & 0x7fff_ffff);
        if head.stream == 0 {
            if inc == 0 {
                return Err(proto(
                    Reason::ProtocolError,
                    "WINDOW_UPDATE of 0 on the connection",
                ));
            }
            self.send_window += inc;
            if self.send_window > frame::MAX_WINDOW {
                return Err(proto(
                    Reason::FlowControlError,
                    "the connection's window above 2^31-1",
                ));
            }
            let blocked = std::mem::take(&mut self.blocked);
            for id in &blocked {
                if let Some(s) = self.streams.get_mut(id) {
                    s.blocked = false;
                }
            }
            body::lock(&self.wakeups.ready).extend(blocked);
            return Ok(());
        }
        let Some(s) = self.streams.get_mut(&head.stream) else {
            return Ok(()); // A stream that closed meanwhile.
        };
        if inc == 0 {
            frame::put_rst(&mut self.wbuf, head.stream, Reason::ProtocolError);
            self.remove_stream(head.stream);
            return Ok(());
        }
        s.send_window += inc;
        if s.send_window > frame::MAX_WINDOW {
            frame::put_rst(&mut self.wbuf, head.stream, Reason::FlowControlError);
            self.remove_stream(head.stream);
            return Ok(());
        }
        if !s.pending.is_empty() {
            body::lock(&self.wakeups.ready).push(head.stream);
        }
        Ok(())
    }

    fn on_data(&mut self, head: Head, payload: &[u8]) -> Result<(), ConnError> {
        if head.stream == 0 {
            return Err(proto(Reason::ProtocolError, "DATA on stream 0"));
        }
        let len = payload.len() as i64;
        self.recv_window -= len;
        if self.recv_window < 0 {
            return Err(proto(
                Reason::FlowControlError,
                "DATA past the connection's window",
            ));
        }
        let Some(data) = frame::strip_padding(head.flags, payload) else {
            return Err(proto(
                Reason::ProtocolError,
                "padding longer than the frame",
            ));
        };
        let give_back = |me: &mut Self, n: usize| {
            me.returns.conn.fetch_add(n, Ordering::Relaxed);
        };
        let open = self
            .streams
            .get(&head.stream)
            .is_some_and(|s| !s.recv_closed);
        if !open {
            if head.stream > self.last_stream {
                return Err(proto(Reason::ProtocolError, "DATA on an idle stream"));
            }
            give_back(self, payload.len());
            // DATA after the client's END_STREAM is its error; DATA for a stream we
            // already reset or answered may have been in flight, and is dropped.
            if self.streams.contains_key(&head.stream) {
                frame::put_rst(&mut self.wbuf, head.stream, Reason::StreamClosed);
                self.remove_stream(head.stream);
            }
            return Ok(());
        }
        let padding = payload.len() - data.len();
        let Some(s) = self.streams.get_mut(&head.stream) else {
            return Ok(());
        };
        s.recv_window -= len;
        if s.recv_window < 0 {
            give_back(self, payload.len());
            frame::put_rst(&mut self.wbuf, head.stream, Reason::FlowControlError);
            self.remove_stream(head.stream);
            return Ok(());
        }
        let end = head.flags & frame::END_STREAM != 0;
        let mut unread = padding;
        match &s.recv {
            Some(recv) => {
                let mut r = body::lock(recv);
                if !data.is_empty() && !r.push(Bytes::copy_from_slice(data)) {
                    unread += data.len();
                }
                if end {
                    r.end(None);
                }
            }
            None => unread += data.len(),
        }
        if end {
            s.recv_closed = true;
        }
        // Padding counts against both windows and nobody reads it: given back at once.
        if padding > 0 && !end {
            s.recv_window += padding as i64;
            frame::put_window_update(&mut self.wbuf, head.stream, padding as u32);
        }
        if unread > 0 {
            give_back(self, unread);
        }
        if end {
            self.close_if_done(head.stream);
        }
        Ok(())
    }

    fn on_headers(&mut self, head: Head, payload: &[u8]) -> Result<(), ConnError> {
        if head.stream == 0 {
            return Err(proto(Reason::ProtocolError, "HEADERS on stream 0"));
        }
        let Some(mut block) = frame::strip_padding(head.flags, payload) else {
            return Err(proto(
                Reason::ProtocolError,
                "padding longer than the frame",
            ));
        };
        if head.flags & frame::PRIORITY_FLAG != 0 {
            if block.len() < 5 {
                return Err(proto(
                    Reason::FrameSizeError,
                    "HEADERS too short for its priority",
                ));
            }
            block = &block[5..];
        }
        let end_stream = head.flags & frame::END_STREAM != 0;
        if head.flags & frame::END_HEADERS == 0 {
            self.continuation = Some((head.stream, end_stream, block.to_vec()));
            return Ok(());
        }
        self.on_header_block(head.stream, end_stream, block)
    }

    fn on_continuation(&mut self, head: Head, payload: &[u8]) -> Result<(), ConnError> {
        let Some((stream, end_stream, mut block)) = self.continuation.take() else {
            return Err(proto(Reason::ProtocolError, "CONTINUATION without HEADERS"));
        };
        block.extend_from_slice(payload);
        if block.len() > self.config.max_header_list_size as usize * 2 {
            return Err(proto(Reason::ProtocolError, "a header block too large"));
        }
        if head.flags & frame::END_HEADERS == 0 {
            self.continuation = Some((stream, end_stream, block));
            return Ok(());
        }
        self.on_header_block(stream, end_stream, &block)
    }

    fn on_header_block(
        &mut self,
        id: u32,
        end_stream: bool,
        block: &[u8],
    ) -> Result<(), ConnError> {
        // Decoded whatever happens to the stream: the table must follow the client's.
        let mut fields = Fields::default();
        let limit = self.config.max_header_list_size as usize;
        self.decoder
            .decode(block, &mut |n, v| fields.add(n, v, limit))
            .map_err(|_| proto(Reason::CompressionError, "an undecodable header block"))?;
        if let Some(s) = self.streams.get_mut(&id) {
            // Trailers.
            if s.recv_closed || !end_stream {
                frame::put_rst(&mut self.wbuf, id, Reason::ProtocolError);
                self.remove_stream(id);
                return Ok(());
            }
            s.recv_closed = true;
            if let Some(recv) = &s.recv {
                body::lock(recv).end(Some(fields.headers));
            }
            self.close_if_done(id);
            return Ok(());
        }
        if id <= self.last_stream {
            // Trailers for a stream we already answered or reset, sent before the
            // client saw that: dropped (the block was decoded above).
            return Ok(());
        }
        if id.is_multiple_of(2) {
            return Err(proto(
                Reason::ProtocolError,
                "a stream id a client may not open",
            ));
        }
        self.last_stream = id;
        if self.going_away || self.streams.len() >= self.config.max_concurrent_streams as usize {
            frame::put_rst(&mut self.wbuf, id, Reason::RefusedStream);
            return Ok(());
        }
        let Some(request) = fields.into_request(&self.extensions) else {
            frame::put_rst(&mut self.wbuf, id, Reason::ProtocolError);
            return Ok(());
        };
        let recv = (!end_stream).then(|| Arc::new(Mutex::new(RecvState::default())));
        let thresholds = (self.stream_threshold(), self.conn_threshold());
        let body = RecvBody::new(
            recv.clone(),
            id,
            self.returns.clone(),
            thresholds,
            self.conn_waker.clone(),
        );
        let timeout = request
            .headers()
            .get("grpc-timeout")
            .and_then(|v| parse_grpc_timeout(v.as_bytes()));
        let request = request.map(|()| body);
        let ready = self
            .service
            .poll_ready(&mut Context::from_waker(&self.conn_waker));
        if !matches!(ready, Poll::Ready(Ok(()))) {
            frame::put_rst(&mut self.wbuf, id, Reason::RefusedStream);
            return Ok(());
        }
        let future = self.service.call(request);
        let waker = Waker::from(Arc::new(StreamWake {
            id,
            wakeups: self.wakeups.clone(),
        }));
        self.streams.insert(
            id,
            Stream {
                waker,
                future: Some(future),
                deadline: timeout.map(|d| Box::pin(tokio::time::sleep(d))),
                body: None,
                pending: Bytes::new(),
                end: None,
                send_window: self.peer_initial_window,
                recv,
                recv_window: if self.settings_acked {
                    i64::from(self.config.stream_window)
                } else {
                    i64::from(self.config.stream_window.max(frame::DEFAULT_WINDOW))
                },
                recv_closed: end_stream,
                blocked: false,
                deferred: false,
                turn: 0,
            },
        );
        body::lock(&self.wakeups.ready).push(id);
        Ok(())
    }

    /// Drops a stream: its future and body are cancelled, its request body sees a reset
    /// (`Stream`'s `Drop`).
    fn remove_stream(&mut self, id: u32) {
        self.streams.remove(&id);
    }

    /// Removes a stream both sides have finished.
    fn close_if_done(&mut self, id: u32) {
        let done = self.streams.get(&id).is_some_and(|s| {
            s.recv_closed
                && s.future.is_none()
                && s.body.is_none()
                && s.end.is_none()
                && s.pending.is_empty()
                && s.deadline.is_none()
        });
        if done {
            self.streams.remove(&id);
        }
    }

    // ---- window updates for what request bodies gave back ----

    /// A stream's window is given back once half of it was read.
    fn stream_threshold(&self) -> u32 {
        (self.config.stream_window / 2).max(1)
    }

    /// The connection's window is given back once a quarter of it was read.
    fn conn_threshold(&self) -> usize {
        (self.config.conn_window / 4).max(1) as usize
    }

    fn return_windows(&mut self) {
        let ids = std::mem::take(&mut *body::lock(&self.returns.streams));
        for id in ids {
            if let Some(s) = self.streams.get_mut(&id) {
                let n = s
                    .recv
                    .as_ref()
                    .map(|r| body::lock(r).take_released())
                    .unwrap_or(0);
                if n > 0 && !s.recv_closed {
                    s.recv_window += i64::from(n);
                    frame::put_window_update(&mut self.wbuf, id, n);
                }
            }
        }
        let due = self.conn_threshold();
        if self.returns.conn.load(Ordering::Relaxed) >= due {
            let n = self.returns.conn.swap(0, Ordering::Relaxed);
            self.recv_window += n as i64;
            frame::put_window_update(&mut self.wbuf, 0, n as u32);
        }
    }

    // ---- responses ----

    /// Polls the streams that woke (or all deferred ones once writes drained).
    /// Streams are polled in the order they woke, then those deferred earlier, each at
    /// most once a turn; one that fills the write buffer goes to the back of the
    /// deferred ones, so a long answer does not hold back calls that came after it.
    fn poll_streams(&mut self) {
        self.turn += 1;
        let mut ids = std::mem::take(&mut *body::lock(&self.wakeups.ready));
        if self.wbuf.len() < WRITE_HIGH_WATER {
            for id in &self.deferred {
                if let Some(s) = self.streams.get_mut(id) {
                    s.deferred = false;
                }
            }
            ids.append(&mut self.deferred);
        }
        for id in ids {
            let Some(s) = self.streams.get_mut(&id) else {
                continue;
            };
            if self.wbuf.len() >= WRITE_HIGH_WATER {
                self.defer(id);
                continue;
            }
            if s.turn == self.turn {
                continue;
            }
            s.turn = self.turn;
            self.poll_stream(id);
        }
    }

    fn defer(&mut self, id: u32) {
        if let Some(s) = self.streams.get_mut(&id) {
            if !s.deferred {
                s.deferred = true;
                self.deferred.push(id);
            }
        }
    }

    fn poll_stream(&mut self, id: u32) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        let waker = s.waker.clone();
        let mut cx = Context::from_waker(&waker);
        if let Some(future) = s.future.as_mut() {
            if let Some(deadline) = s.deadline.as_mut() {
                if deadline.as_mut().poll(&mut cx).is_ready() {
                    s.future = None;
                    s.deadline = None;
                    let mut h = HeaderMap::new();
                    h.insert(
                        http::header::CONTENT_TYPE,
                        HeaderValue::from_static("application/grpc"),
                    );
                    h.insert("grpc-status", HeaderValue::from_static("1"));
                    h.insert("grpc-message", HeaderValue::from_static("Timeout expired"));
                    self.send_head(id, Some(http::StatusCode::OK), &h, true);
                    self.finish(id);
                    return;
                }
            }
            let Poll::Ready(Ok(response)) = Pin::new(future).poll(&mut cx) else {
                return;
            };
            s.future = None;
            s.deadline = None;
            let (parts, body) = response.into_parts();
            let end = body.is_end_stream();
            if !end {
                s.body = Some(body);
            }
            self.send_head(id, Some(parts.status), &parts.headers, end);
            if end {
                self.finish(id);
                return;
            }
        }
        loop {
            if !self.send_pending(id) {
                return;
            }
            let Some(s) = self.streams.get_mut(&id) else {
                return;
            };
            if let Some(end) = s.end.take() {
                match end {
                    End::Trailers(t) => self.send_head(id, None, &t, true),
                    End::Plain => {
                        frame::put_head(&mut self.wbuf, 0, frame::DATA, frame::END_STREAM, id);
                    }
                }
                self.finish(id);
                return;
            }
            if self.wbuf.len() >= WRITE_HIGH_WATER {
                self.defer(id);
                return;
            }
            let Some(body) = s.body.as_mut() else { return };
            match Pin::new(body).poll_frame(&mut cx) {
                Poll::Pending => return,
                Poll::Ready(None) => {
                    s.body = None;
                    s.end = Some(End::Plain);
                }
                Poll::Ready(Some(Err(e))) => {
                    tracing::debug!(stream = id, error = %e, "response body failed; stream reset");
                    frame::put_rst(&mut self.wbuf, id, Reason::InternalError);
                    self.remove_stream(id);
                    return;
                }
                Poll::Ready(Some(Ok(f))) => match f.into_data() {
                    Ok(data) => {
                        if s.pending.is_empty() {
                            s.pending = data;
                        } else {
                            let mut joined = BytesMut::from(&s.pending[..]);
                            joined.extend_from_slice(&data);
                            s.pending = joined.freeze();
                        }
                    }
                    Err(f) => {
                        if let Ok(t) = f.into_trailers() {
                            s.body = None;
                            s.end = Some(End::Trailers(t));
                        }
                    }
                },
            }
        }
    }

    /// Sends what the windows allow of a stream's pending data; `true` when none is left.
    fn send_pending(&mut self, id: u32) -> bool {
        let Some(s) = self.streams.get_mut(&id) else {
            return false;
        };
        while !s.pending.is_empty() {
            let room = s.send_window.min(self.send_window);
            if room <= 0 {
                if self.send_window <= 0 && !s.blocked {
                    s.blocked = true;
                    self.blocked.push(id);
                }
                return false;
            }
            let n = s.pending.len().min(room as usize).min(self.peer_max_frame);
            let chunk = s.pending.split_to(n);
            frame::put_head(&mut self.wbuf, n, frame::DATA, 0, id);
            self.wbuf.put_slice(&chunk);
            s.send_window -= n as i64;
            self.send_window -= n as i64;
        }
        true
    }

    /// A header block: a response head (`status` given) or trailers (`None`).
    fn send_head(
        &mut self,
        id: u32,
        status: Option<http::StatusCode>,
        headers: &HeaderMap,
        end_stream: bool,
    ) {
        let mut block = BytesMut::with_capacity(64);
        hpack::encode_headers(&mut block, status, headers);
        frame::put_header_block(&mut self.wbuf, id, &block, end_stream, self.peer_max_frame);
    }

    /// Our side of a stream is done: it goes once the client's side is too (a request
    /// body still coming is refused with `NO_ERROR`, as RFC 9113 §8.1 allows).
    fn finish(&mut self, id: u32) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        s.future = None;
        s.body = None;
        s.deadline = None;
        if !s.recv_closed {
            frame::put_rst(&mut self.wbuf, id, Reason::NoError);
            self.remove_stream(id);
        } else {
            self.streams.remove(&id);
        }
    }

    // ---- keepalive, writing ----

    fn reset_keepalive(&mut self, after: Option<Duration>) {
        if let (Some(t), Some(d)) = (
            self.keepalive.as_mut(),
            after.or(self.config.keepalive_interval),
        ) {
            t.as_mut().reset(tokio::time::Instant::now() + d);
        }
    }

    fn poll_keepalive(&mut self, cx: &mut Context<'_>) {
        let Some(t) = self.keepalive.as_mut() else {
            return;
        };
        if t.as_mut().poll(cx).is_pending() {
            return;
        }
        if self.ping_out {
            self.fail(ConnError::KeepaliveTimeout);
            return;
        }
        frame::put_ping(&mut self.wbuf, 0, *b"skiffka!");
        self.ping_out = true;
        let timeout = self.config.keepalive_timeout;
        self.reset_keepalive(Some(timeout));
        if let Some(t) = self.keepalive.as_mut() {
            let _ = t.as_mut().poll(cx);
        }
    }

    /// Writes what is queued; `Ok(true)` when all of it went.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Result<bool, ConnError> {
        let mut wrote = false;
        while !self.wbuf.is_empty() {
            match Pin::new(&mut self.io).poll_write(cx, &self.wbuf) {
                Poll::Pending => break,
                Poll::Ready(Err(e)) => return Err(e.into()),
                Poll::Ready(Ok(0)) => {
                    return Err(std::io::Error::from(std::io::ErrorKind::WriteZero).into())
                }
                Poll::Ready(Ok(n)) => {
                    self.wbuf.advance(n);
                    wrote = true;
                }
            }
        }
        if self.wbuf.is_empty() && self.wbuf.capacity() > WRITE_KEEP {
            self.wbuf = BytesMut::with_capacity(16 * 1024);
        }
        self.unflushed |= wrote;
        if self.unflushed {
            // A buffering transport may say Pending here and want the flush again.
            match Pin::new(&mut self.io).poll_flush(cx) {
                Poll::Ready(Err(e)) => return Err(e.into()),
                Poll::Ready(Ok(())) => self.unflushed = false,
                Poll::Pending => {}
            }
        }
        Ok(self.wbuf.is_empty() && !self.unflushed)
    }
}

impl<IO, S, B> Future for Conn<IO, S, S::Future, B>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    S: Service<Request<RecvBody>, Response = Response<B>, Error = Infallible> + Unpin,
    S::Future: Unpin,
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    type Output = Result<(), ConnError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        {
            let mut w = body::lock(&this.wakeups.conn);
            if !w.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *w = Some(cx.waker().clone());
            }
        }
        for _ in 0..MAX_TURNS {
            if this.failed.is_none()
                && !this.going_away
                && this.shutdown.as_mut().poll(cx).is_ready()
            {
                frame::put_goaway(&mut this.wbuf, this.last_stream, Reason::NoError, b"");
                this.going_away = true;
            }
            let mut read = false;
            // Requests are not read while the answers to earlier ones wait for the
            // socket: the client's sending is held back by TCP, not by our memory. (Once
            // the answers are out, the loop goes round again to read, which registers
            // the socket's waker.)
            let can_read = this.failed.is_none() && !this.read_closed;
            let read_held = can_read && this.wbuf.len() >= WRITE_HIGH_WATER;
            if can_read && !read_held {
                match this.poll_read(cx) {
                    Ok(r) => read = r,
                    Err(ConnError::Io(e)) => return Poll::Ready(Err(ConnError::Io(e))),
                    Err(e) => this.fail(e),
                }
                if read {
                    if let Err(e) = this.process_frames() {
                        this.fail(e);
                    }
                }
            }
            if this.failed.is_none() {
                this.return_windows();
                this.poll_streams();
                this.poll_keepalive(cx);
            }
            let flushed = match this.poll_write(cx) {
                Ok(f) => f,
                Err(e) => return Poll::Ready(Err(e)),
            };
            if flushed {
                if let Some(e) = this.failed.take() {
                    let _ = Pin::new(&mut this.io).poll_shutdown(cx);
                    return Poll::Ready(match e {
                        ConnError::Protocol {
                            reason: Reason::NoError,
                            ..
                        } => Ok(()),
                        e => Err(e),
                    });
                }
                if this.read_closed || (this.going_away && this.streams.is_empty()) {
                    let _ = Pin::new(&mut this.io).poll_shutdown(cx);
                    return Poll::Ready(Ok(()));
                }
                if !this.deferred.is_empty() || read_held {
                    continue;
                }
            }
            let more_ready = !body::lock(&this.wakeups.ready).is_empty();
            if !read && !more_ready {
                return Poll::Pending;
            }
        }
        // A call that keeps waking itself (or a client that keeps sending) must not hold
        // the worker: the other tasks run, then this connection again.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// The fields of a request's header block, gathered for a `Request`.
#[derive(Default)]
struct Fields {
    method: Option<http::Method>,
    scheme: Option<Bytes>,
    authority: Option<Bytes>,
    path: Option<Bytes>,
    headers: HeaderMap,
    size: usize,
    malformed: bool,
}

impl Fields {
    fn add(&mut self, name: &[u8], value: &[u8], limit: usize) {
        self.size += name.len() + value.len() + 32;
        if self.size > limit {
            self.malformed = true;
            return;
        }
        if let Some(pseudo) = name.strip_prefix(b":") {
            if !self.headers.is_empty() {
                self.malformed = true;
                return;
            }
            match pseudo {
                b"method" => self.method = http::Method::from_bytes(value).ok(),
                b"scheme" => self.scheme = Some(Bytes::copy_from_slice(value)),
                b"authority" => self.authority = Some(Bytes::copy_from_slice(strip_scheme(value))),
                b"path" => self.path = Some(Bytes::copy_from_slice(value)),
                _ => self.malformed = true,
            }
            return;
        }
        match (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            (Ok(n), Ok(v)) => {
                self.headers.append(n, v);
            }
            _ => self.malformed = true,
        }
    }

    fn into_request(self, extensions: &http::Extensions) -> Option<Request<()>> {
        if self.malformed {
            return None;
        }
        let method = self.method?;
        let path = self.path?;
        let mut uri = http::uri::Builder::new()
            .path_and_query(http::uri::PathAndQuery::from_maybe_shared(path).ok()?);
        if let (Some(scheme), Some(authority)) = (&self.scheme, &self.authority) {
            if let (Ok(s), Ok(a)) = (
                http::uri::Scheme::try_from(&scheme[..]),
                http::uri::Authority::from_maybe_shared(authority.clone()),
            ) {
                uri = uri.scheme(s).authority(a);
            }
        }
        let mut request = Request::builder()
            .method(method)
            .uri(uri.build().ok()?)
            .version(http::Version::HTTP_2)
            .body(())
            .ok()?;
        *request.headers_mut() = self.headers;
        *request.extensions_mut() = extensions.clone();
        Some(request)
    }
}

/// `http://host:port` as `host:port`: etcd's clients send an endpoint written as a URL
/// as the whole `:authority` (see the server's `h2c_authority`).
fn strip_scheme(value: &[u8]) -> &[u8] {
    for prefix in [&b"http://"[..], b"https://", b"unix://", b"unixs://"] {
        if let Some(rest) = value.strip_prefix(prefix) {
            return rest.strip_suffix(b"/").unwrap_or(rest);
        }
    }
    value
}

/// A `grpc-timeout` value (gRPC over HTTP/2: up to 8 digits and a unit).
fn parse_grpc_timeout(v: &[u8]) -> Option<Duration> {
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b"H" => Duration::from_secs(n * 3600),
        b"M" => Duration::from_secs(n * 60),
        b"S" => Duration::from_secs(n),
        b"m" => Duration::from_millis(n),
        b"u" => Duration::from_micros(n),
        b"n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_as_grpc_defines_them() {
        assert_eq!(parse_grpc_timeout(b"5S"), Some(Duration::from_secs(5)));
        assert_eq!(
            parse_grpc_timeout(b"250m"),
            Some(Duration::from_millis(250))
        );
        assert_eq!(parse_grpc_timeout(b"1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout(b"123456789S"), None);
        assert_eq!(parse_grpc_timeout(b"S"), None);
        assert_eq!(parse_grpc_timeout(b"5x"), None);
    }

    #[test]
    fn url_authorities_lose_their_scheme() {
        assert_eq!(strip_scheme(b"http://127.0.0.1:2379"), b"127.0.0.1:2379");
        assert_eq!(strip_scheme(b"https://host:1/"), b"host:1");
        assert_eq!(strip_scheme(b"host:1"), b"host:1");
    }
}
