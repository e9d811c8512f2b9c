//! Accepts the `:authority` etcd's clients send when an endpoint is written as a URL.
//!
//! etcdctl 3.4 and the Go client dial `--endpoints http://127.0.0.1:2379` as
//! `passthrough:///http://127.0.0.1:2379` and send the whole URL as the HTTP/2
//! `:authority` of every request. etcd (Go's HTTP/2 server) accepts it; the `h2` crate
//! under tonic does not (an authority cannot hold `//`) and resets every stream with
//! `PROTOCOL_ERROR`, so `etcdctl --endpoints http://host:port endpoint status` failed
//! against Skiff although the same command with `host:port` worked.
//!
//! [`AuthorityFix`] wraps a client connection and rewrites, on the way in, any
//! `:authority` that carries a scheme (`http://host:port` becomes `host:port`). It reads
//! the connection as HTTP/2 frames; HTTP/1.1 connections (`/health`, `/metrics`) pass
//! untouched. Every header block is decoded (HPACK, tracking the client's dynamic
//! table); while no rewrite was needed the original bytes go through unchanged. From
//! the first block that needs one, every block of the connection is re-encoded with
//! literals that never index (so the server's dynamic table stays untouched and cannot
//! disagree with the client's), split into frames no larger than HTTP/2's default
//! maximum frame size.
//!
//! The first header block that carries an `:authority` decides for the connection: a
//! client sends one authority on all of a connection's requests (a gRPC channel has
//! one target; Go's HTTP/2 client pools connections per authority), so when that one
//! needs no rewrite the wrapper steps aside for good and the connection's bytes reach
//! the server with no decoding and no copy. Decoding every block of every connection
//! cost the member about a fifth of its CPU under many small requests (the profile is in
//! `bench/PROFILE.md`).
//!
//! Guarantees: bytes that are not header blocks are passed through unchanged and in
//! order; a connection that is not HTTP/2 with prior knowledge is not touched; a
//! header block the decoder cannot read is passed through as it is (the HTTP/2 server
//! then answers it as it would have), unless blocks were already re-encoded, in which
//! case the connection is closed with an error rather than mis-decoded.

use std::io;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

/// The HTTP/2 client connection preface.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// HTTP/2's default SETTINGS_MAX_FRAME_SIZE, which the server does not raise.
const MAX_FRAME: usize = 16_384;
/// Refuse to buffer a frame larger than HTTP/2 allows at all (2^24 - 1).
const MAX_FRAME_LIMIT: usize = (1 << 24) - 1;

/// Where the connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Waiting for enough bytes to tell HTTP/2 from anything else.
    Start,
    /// Not HTTP/2 with prior knowledge: everything passes untouched.
    Opaque,
    /// HTTP/2 frames, header blocks passed as they came, until one carries an
    /// `:authority`.
    Frames,
    /// The connection's authority needed no rewrite: bytes pass straight through.
    Passthrough,
    /// HTTP/2 frames, header blocks re-encoded (a rewrite happened).
    Reencoding,
}

/// A header block being collected (HEADERS then CONTINUATIONs until END_HEADERS).
struct Block {
    stream_id: u32,
    flags: u8,
    /// The 5 priority bytes of the HEADERS frame, if it had them.
    priority: Option<[u8; 5]>,
    fragment: Vec<u8>,
    /// The frames as they arrived, to pass on unchanged when nothing is rewritten.
    original: Vec<u8>,
}

/// A client connection whose HTTP/2 `:authority` values are made acceptable.
pub struct AuthorityFix<S> {
    inner: S,
    mode: Mode,
    /// Bytes read from the client, not yet processed.
    raw: BytesMut,
    /// Processed bytes, ready for the server.
    ready: BytesMut,
    block: Option<Block>,
    decoder: hpack::Decoder<'static>,
    eof: bool,
}

impl<S> AuthorityFix<S> {
    pub fn new(inner: S) -> AuthorityFix<S> {
        AuthorityFix {
            inner,
            mode: Mode::Start,
            raw: BytesMut::new(),
            ready: BytesMut::new(),
            block: None,
            decoder: hpack::Decoder::new(),
            eof: false,
        }
    }

    /// Moves what can be processed from `raw` to `ready`.
    fn process(&mut self) -> io::Result<()> {
        loop {
            match self.mode {
                Mode::Start => {
                    let n = self.raw.len().min(PREFACE.len());
                    if self.raw[..n] != PREFACE[..n] {
                        self.mode = Mode::Opaque;
                        continue;
                    }
                    if n < PREFACE.len() {
                        return Ok(());
                    }
                    self.ready.put(self.raw.split_to(PREFACE.len()));
                    self.mode = Mode::Frames;
                }
                Mode::Opaque | Mode::Passthrough => {
                    let all = self.raw.split();
                    self.ready.put(all);
                    return Ok(());
                }
                Mode::Frames | Mode::Reencoding => {
                    if self.raw.len() < FRAME_HEADER {
                        return Ok(());
                    }
                    let len = (usize::from(self.raw[0]) << 16)
                        | (usize::from(self.raw[1]) << 8)
                        | usize::from(self.raw[2]);
                    if len > MAX_FRAME_LIMIT {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "frame too large",
                        ));
                    }
                    if self.raw.len() < FRAME_HEADER + len {
                        return Ok(());
                    }
                    let frame = self.raw.split_to(FRAME_HEADER + len);
                    self.frame(&frame)?;
                }
            }
        }
    }

    /// One complete frame from the client.
    fn frame(&mut self, frame: &[u8]) -> io::Result<()> {
        let kind = frame[3];
        let flags = frame[4];
        let stream_id = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
        let payload = &frame[FRAME_HEADER..];
        match (kind, self.block.as_mut()) {
            (HEADERS, None) => {
                let Some((priority, fragment)) = split_headers_payload(flags, payload) else {
                    // Malformed: let the HTTP/2 server answer it.
                    self.ready.put_slice(frame);
                    return Ok(());
                };
                self.block = Some(Block {
                    stream_id,
                    flags,
                    priority,
                    fragment: fragment.to_vec(),
                    original: frame.to_vec(),
                });
            }
            (CONTINUATION, Some(block)) if block.stream_id == stream_id => {
                block.fragment.extend_from_slice(payload);
                block.original.extend_from_slice(frame);
                if block.fragment.len() > MAX_FRAME_LIMIT {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "header block too large",
                    ));
                }
            }
            (_, Some(_)) => {
                // A frame inside a header block is a protocol error: pass what we have
                // and let the server say so.
                if let Some(block) = self.block.take() {
                    self.ready.put_slice(&block.original);
                }
                self.ready.put_slice(frame);
                return Ok(());
            }
            (_, None) => {
                self.ready.put_slice(frame);
                return Ok(());
            }
        }
        if flags & END_HEADERS != 0 {
            if let Some(block) = self.block.take() {
                self.finish(block)?;
            }
        }
        Ok(())
    }

    /// A complete header block: passed on as it came, or re-encoded.
    fn finish(&mut self, block: Block) -> io::Result<()> {
        let decoder = &mut self.decoder;
        let decoded =
            std::panic::catch_unwind(AssertUnwindSafe(|| decoder.decode(&block.fragment)));
        let headers = match decoded {
            Ok(Ok(headers)) => headers,
            _ if self.mode == Mode::Frames => {
                // Unreadable to us: the server decides, and we stop interfering.
                self.mode = Mode::Opaque;
                self.ready.put_slice(&block.original);
                return Ok(());
            }
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "undecodable HTTP/2 header block",
                ))
            }
        };
        let mut rewritten = false;
        let mut has_authority = false;
        let headers: Vec<(Vec<u8>, Vec<u8>)> = headers
            .into_iter()
            .map(|(name, value)| {
                if name == b":authority" {
                    has_authority = true;
                    if let Some(fixed) = strip_scheme(&value) {
                        rewritten = true;
                        return (name, fixed);
                    }
                }
                (name, value)
            })
            .collect();
        if self.mode == Mode::Frames {
            if rewritten {
                tracing::debug!(
                    "rewriting a URL :authority (an endpoint written as http://host:port)"
                );
                self.mode = Mode::Reencoding;
            } else if has_authority {
                // The connection's authority is fine: stop decoding (see the module docs).
                self.mode = Mode::Passthrough;
            }
        }
        if self.mode != Mode::Reencoding {
            self.ready.put_slice(&block.original);
            return Ok(());
        }
        let encoded = encode_literals(&headers);
        write_header_frames(&mut self.ready, &block, &encoded);
        Ok(())
    }
}

/// The priority bytes and the header block fragment of a HEADERS payload.
fn split_headers_payload(flags: u8, payload: &[u8]) -> Option<(Option<[u8; 5]>, &[u8])> {
    let mut p = payload;
    let mut pad = 0usize;
    if flags & PADDED != 0 {
        pad = usize::from(*p.first()?);
        p = &p[1..];
    }
    let priority = if flags & PRIORITY != 0 {
        let bytes: [u8; 5] = p.get(..5)?.try_into().ok()?;
        p = &p[5..];
        Some(bytes)
    } else {
        None
    };
    let end = p.len().checked_sub(pad)?;
    Some((priority, &p[..end]))
}

/// `scheme://host:port[/...]` as `host:port`; `None` when there is no scheme.
fn strip_scheme(value: &[u8]) -> Option<Vec<u8>> {
    let at = value.windows(3).position(|w| w == b"://")?;
    let rest = &value[at + 3..];
    let end = rest.iter().position(|b| *b == b'/').unwrap_or(rest.len());
    Some(rest[..end].to_vec())
}

/// An HPACK integer with an `n`-bit prefix, the prefix's other bits set to `first`.
fn put_int(out: &mut Vec<u8>, first: u8, n: u32, mut value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

/// Every header as "literal without indexing, new name", strings not Huffman-coded.
fn encode_literals(headers: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in headers {
        out.push(0x00);
        put_int(&mut out, 0x00, 7, name.len());
        out.extend_from_slice(name);
        put_int(&mut out, 0x00, 7, value.len());
        out.extend_from_slice(value);
    }
    out
}

/// `fragment` as a HEADERS frame (with the block's stream, END_STREAM and priority)
/// followed by CONTINUATION frames, none larger than [`MAX_FRAME`].
fn write_header_frames(out: &mut BytesMut, block: &Block, fragment: &[u8]) {
    let mut first = true;
    let mut rest = fragment;
    loop {
        let mut flags = 0u8;
        let mut prefix: &[u8] = &[];
        if first {
            flags |= block.flags & END_STREAM;
            if let Some(p) = &block.priority {
                flags |= PRIORITY;
                prefix = p;
            }
        }
        let room = MAX_FRAME - prefix.len();
        let take = rest.len().min(room);
        let last = take == rest.len();
        if last {
            flags |= END_HEADERS;
        }
        let len = prefix.len() + take;
        out.put_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8]);
        out.put_u8(if first { HEADERS } else { CONTINUATION });
        out.put_u8(flags);
        out.put_u32(block.stream_id);
        out.put_slice(prefix);
        out.put_slice(&rest[..take]);
        rest = &rest[take..];
        first = false;
        if last {
            return;
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityFix<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.mode == Mode::Passthrough && this.ready.is_empty() && this.raw.is_empty() {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            if !this.ready.is_empty() {
                let n = this.ready.len().min(buf.remaining());
                buf.put_slice(&this.ready[..n]);
                this.ready.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                // Whatever is left unprocessed (a partial frame) goes as it is.
                if !this.raw.is_empty() {
                    let rest = this.raw.split();
                    this.ready.put(rest);
                    continue;
                }
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; 16 * 1024];
            let mut rb = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.inner).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    let filled = rb.filled();
                    if filled.is_empty() {
                        this.eof = true;
                        continue;
                    }
                    this.raw.extend_from_slice(filled);
                    this.process()?;
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl<S: Connected> Connected for AuthorityFix<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        let len = payload.len();
        f.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// Feeds `input` through the wrapper and returns what the server would read.
    async fn through(input: Vec<u8>) -> Vec<u8> {
        through_to_mode(input).await.0
    }

    /// [`through`], plus the mode the wrapper ended in.
    async fn through_to_mode(input: Vec<u8>) -> (Vec<u8>, Mode) {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let mut fixed = AuthorityFix::new(server);
        client.write_all(&input).await.unwrap();
        drop(client);
        let mut out = Vec::new();
        fixed.read_to_end(&mut out).await.unwrap();
        (out, fixed.mode)
    }

    /// Decodes the header blocks of `bytes` (after the preface) as a server would.
    fn server_view(bytes: &[u8]) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut d = hpack::Decoder::new();
        let mut p = &bytes[PREFACE.len()..];
        let mut blocks = Vec::new();
        let mut frag = Vec::new();
        while p.len() >= FRAME_HEADER {
            let len = (usize::from(p[0]) << 16) | (usize::from(p[1]) << 8) | usize::from(p[2]);
            let (kind, flags) = (p[3], p[4]);
            let payload = &p[FRAME_HEADER..FRAME_HEADER + len];
            if kind == HEADERS {
                let (_, f) = split_headers_payload(flags, payload).unwrap();
                frag.extend_from_slice(f);
            } else if kind == CONTINUATION {
                frag.extend_from_slice(payload);
            }
            if (kind == HEADERS || kind == CONTINUATION) && flags & END_HEADERS != 0 {
                blocks.push(d.decode(&frag).unwrap());
                frag.clear();
            }
            p = &p[FRAME_HEADER + len..];
        }
        blocks
    }

    fn request(authority: &str, path: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
        vec![
            (b":method".to_vec(), b"POST".to_vec()),
            (b":scheme".to_vec(), b"http".to_vec()),
            (b":path".to_vec(), path.as_bytes().to_vec()),
            (b":authority".to_vec(), authority.as_bytes().to_vec()),
            (b"content-type".to_vec(), b"application/grpc".to_vec()),
        ]
    }

    /// Two requests encoded by one stateful encoder, as a client does (the second
    /// refers to dynamic table entries the first created).
    fn client_bytes(authority: &str) -> Vec<u8> {
        let mut e = hpack::Encoder::new();
        let mut out = PREFACE.to_vec();
        out.extend(frame(0x4, 0, 0, &[])); // SETTINGS
        for (stream, path) in [
            (1u32, "/etcdserverpb.Maintenance/Status"),
            (3, "/etcdserverpb.KV/Range"),
        ] {
            let h = request(authority, path);
            let block = e.encode(h.iter().map(|(n, v)| (&n[..], &v[..])));
            out.extend(frame(HEADERS, END_HEADERS, stream, &block));
            out.extend(frame(0x0, END_STREAM, stream, b"\0\0\0\0\0"));
        }
        out
    }

    #[tokio::test]
    async fn a_url_authority_is_rewritten_and_later_blocks_stay_consistent() {
        let out = through(client_bytes("http://127.0.0.1:2379")).await;
        let blocks = server_view(&out);
        assert_eq!(blocks.len(), 2);
        for (b, path) in blocks
            .iter()
            .zip(["/etcdserverpb.Maintenance/Status", "/etcdserverpb.KV/Range"])
        {
            assert_eq!(b, &request("127.0.0.1:2379", path));
        }
        // DATA frames are untouched.
        for stream in [1u32, 3] {
            let data = frame(0x0, END_STREAM, stream, b"\0\0\0\0\0");
            assert!(out.windows(data.len()).any(|w| w == data.as_slice()));
        }
    }

    #[tokio::test]
    async fn a_plain_authority_passes_byte_for_byte() {
        let input = client_bytes("127.0.0.1:2379");
        assert_eq!(through(input.clone()).await, input);
    }

    #[tokio::test]
    async fn a_plain_first_authority_hands_the_connection_over() {
        // The first block decides; bytes after it are not parsed at all (a frame
        // header that would be refused as too large while parsing passes untouched).
        let mut input = client_bytes("127.0.0.1:2379");
        input.extend_from_slice(&[0xff, 0xff, 0xff, HEADERS, 0, 0, 0, 0, 7]);
        let (out, mode) = through_to_mode(input.clone()).await;
        assert_eq!(out, input);
        assert_eq!(mode, Mode::Passthrough);
    }

    #[tokio::test]
    async fn blocks_without_an_authority_do_not_decide() {
        let mut e = hpack::Encoder::new();
        let mut input = PREFACE.to_vec();
        let plain = [(b":method".to_vec(), b"GET".to_vec())];
        let block = e.encode(plain.iter().map(|(n, v)| (&n[..], &v[..])));
        input.extend(frame(HEADERS, END_HEADERS | END_STREAM, 1, &block));
        let h = request("http://127.0.0.1:2379", "/p");
        let block = e.encode(h.iter().map(|(n, v)| (&n[..], &v[..])));
        input.extend(frame(HEADERS, END_HEADERS | END_STREAM, 3, &block));
        let blocks = server_view(&through(input).await);
        assert_eq!(blocks[1], request("127.0.0.1:2379", "/p"));
    }

    #[tokio::test]
    async fn http1_passes_untouched() {
        let input = b"GET /health HTTP/1.1\r\nHost: http://x\r\n\r\n".to_vec();
        assert_eq!(through(input.clone()).await, input);
    }

    #[tokio::test]
    async fn large_blocks_are_split_into_continuations_and_priority_kept() {
        let mut e = hpack::Encoder::new();
        let mut h = request("http://h:1", "/p");
        h.push((b"x-big".to_vec(), vec![b'a'; 40_000]));
        let block = e.encode(h.iter().map(|(n, v)| (&n[..], &v[..])));
        let mut payload = vec![0, 0, 0, 0, 16];
        payload.extend_from_slice(&block[..10]);
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, PRIORITY | END_STREAM, 5, &payload));
        input.extend(frame(CONTINUATION, END_HEADERS, 5, &block[10..]));
        let out = through(input).await;
        let blocks = server_view(&out);
        assert_eq!(blocks[0][3], (b":authority".to_vec(), b"h:1".to_vec()));
        assert_eq!(blocks[0][5].1.len(), 40_000);
        // Every frame respects the default maximum frame size.
        let mut p = &out[PREFACE.len()..];
        let mut frames = 0;
        while !p.is_empty() {
            let len = (usize::from(p[0]) << 16) | (usize::from(p[1]) << 8) | usize::from(p[2]);
            assert!(len <= MAX_FRAME);
            if frames == 0 {
                assert_eq!(p[4] & (PRIORITY | END_STREAM), PRIORITY | END_STREAM);
            }
            frames += 1;
            p = &p[FRAME_HEADER + len..];
        }
        assert!(frames >= 3);
    }

    #[tokio::test]
    async fn garbage_is_passed_on_for_the_server_to_refuse() {
        let mut input = PREFACE.to_vec();
        input.extend(frame(
            HEADERS,
            END_HEADERS,
            1,
            &[0xff, 0xff, 0xff, 0xff, 0xff],
        ));
        assert_eq!(through(input.clone()).await, input);
    }

    #[test]
    fn schemes_are_stripped() {
        assert_eq!(strip_scheme(b"http://a:1"), Some(b"a:1".to_vec()));
        assert_eq!(strip_scheme(b"https://a:1/x"), Some(b"a:1".to_vec()));
        assert_eq!(strip_scheme(b"a:1"), None);
    }
}
