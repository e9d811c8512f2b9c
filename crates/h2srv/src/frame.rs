//! HTTP/2 frames (RFC 9113 §4 and §6): the 9-byte header, the codes, and writers for
//! the frames a server sends. Reading is done by the connection (`conn`), which checks
//! each frame's length against what it advertised before it looks at the payload.

use bytes::{BufMut, BytesMut};

pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
pub const HEADER_LEN: usize = 9;

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const PRIORITY: u8 = 0x2;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PUSH_PROMISE: u8 = 0x5;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;

pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;
pub const PADDED: u8 = 0x8;
pub const PRIORITY_FLAG: u8 = 0x20;

pub const SETTINGS_ENABLE_PUSH: u16 = 0x2;
pub const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
pub const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
pub const SETTINGS_MAX_FRAME_SIZE: u16 = 0x5;
pub const SETTINGS_MAX_HEADER_LIST_SIZE: u16 = 0x6;

/// The default and smallest maximum frame size, and the largest one allowed.
pub const DEFAULT_MAX_FRAME_SIZE: u32 = 16_384;
pub const MAX_MAX_FRAME_SIZE: u32 = 16_777_215;
/// The initial flow-control window of every stream and of the connection.
pub const DEFAULT_WINDOW: u32 = 65_535;
/// The largest flow-control window.
pub const MAX_WINDOW: i64 = (1 << 31) - 1;

/// Error codes (RFC 9113 §7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Reason {
    NoError = 0x0,
    ProtocolError = 0x1,
    InternalError = 0x2,
    FlowControlError = 0x3,
    StreamClosed = 0x5,
    FrameSizeError = 0x6,
    RefusedStream = 0x7,
    Cancel = 0x8,
    CompressionError = 0x9,
}

/// A frame's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    pub len: usize,
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
}

impl Head {
    /// Reads the header at the start of `b` (at least [`HEADER_LEN`] bytes).
    pub fn parse(b: &[u8]) -> Head {
        Head {
            len: (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]),
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        }
    }
}

/// Appends a frame header.
pub fn put_head(dst: &mut BytesMut, len: usize, kind: u8, flags: u8, stream: u32) {
    debug_assert!(len <= MAX_MAX_FRAME_SIZE as usize);
    dst.put_u8((len >> 16) as u8);
    dst.put_u8((len >> 8) as u8);
    dst.put_u8(len as u8);
    dst.put_u8(kind);
    dst.put_u8(flags);
    dst.put_u32(stream & 0x7fff_ffff);
}

/// Appends a SETTINGS frame with `params`.
pub fn put_settings(dst: &mut BytesMut, params: &[(u16, u32)]) {
    put_head(dst, params.len() * 6, SETTINGS, 0, 0);
    for (id, value) in params {
        dst.put_u16(*id);
        dst.put_u32(*value);
    }
}

pub fn put_settings_ack(dst: &mut BytesMut) {
    put_head(dst, 0, SETTINGS, ACK, 0);
}

pub fn put_window_update(dst: &mut BytesMut, stream: u32, increment: u32) {
    put_head(dst, 4, WINDOW_UPDATE, 0, stream);
    dst.put_u32(increment & 0x7fff_ffff);
}

pub fn put_ping(dst: &mut BytesMut, flags: u8, payload: [u8; 8]) {
    put_head(dst, 8, PING, flags, 0);
    dst.put_slice(&payload);
}

pub fn put_rst(dst: &mut BytesMut, stream: u32, reason: Reason) {
    put_head(dst, 4, RST_STREAM, 0, stream);
    dst.put_u32(reason as u32);
}

pub fn put_goaway(dst: &mut BytesMut, last_stream: u32, reason: Reason, debug: &[u8]) {
    put_head(dst, 8 + debug.len(), GOAWAY, 0, 0);
    dst.put_u32(last_stream & 0x7fff_ffff);
    dst.put_u32(reason as u32);
    dst.put_slice(debug);
}

/// Appends a header block as a HEADERS frame and as many CONTINUATION frames as
/// `max_frame` requires.
pub fn put_header_block(
    dst: &mut BytesMut,
    stream: u32,
    block: &[u8],
    end_stream: bool,
    max_frame: usize,
) {
    let mut rest = block;
    let mut first = true;
    loop {
        let n = rest.len().min(max_frame);
        let last = n == rest.len();
        let (kind, mut flags) = if first {
            (HEADERS, 0)
        } else {
            (CONTINUATION, 0)
        };
        if first && end_stream {
            flags |= END_STREAM;
        }
        if last {
            flags |= END_HEADERS;
        }
        put_head(dst, n, kind, flags, stream);
        dst.put_slice(&rest[..n]);
        rest = &rest[n..];
        first = false;
        if last {
            return;
        }
    }
}

/// Removes a padded frame's padding (RFC 9113 §6.1): the payload without its pad-length
/// byte and padding, or `None` if the padding is longer than the payload.
pub fn strip_padding(flags: u8, payload: &[u8]) -> Option<&[u8]> {
    if flags & PADDED == 0 {
        return Some(payload);
    }
    let (&pad, rest) = payload.split_first()?;
    rest.len()
        .checked_sub(usize::from(pad))
        .map(|end| &rest[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_reads_back_as_written() {
        let mut b = BytesMut::new();
        put_head(
            &mut b,
            70_000,
            HEADERS,
            END_HEADERS | END_STREAM,
            0x8000_0003,
        );
        let h = Head::parse(&b);
        assert_eq!(
            h,
            Head {
                len: 70_000,
                kind: HEADERS,
                flags: 5,
                stream: 3
            }
        );
    }

    #[test]
    fn a_large_header_block_is_split_into_continuations() {
        let mut b = BytesMut::new();
        let block = vec![7u8; 40];
        put_header_block(&mut b, 5, &block, true, 16);
        let heads: Vec<Head> = [0, 25, 50].iter().map(|&o| Head::parse(&b[o..])).collect();
        assert_eq!(
            heads[0],
            Head {
                len: 16,
                kind: HEADERS,
                flags: END_STREAM,
                stream: 5
            }
        );
        assert_eq!(
            heads[1],
            Head {
                len: 16,
                kind: CONTINUATION,
                flags: 0,
                stream: 5
            }
        );
        assert_eq!(
            heads[2],
            Head {
                len: 8,
                kind: CONTINUATION,
                flags: END_HEADERS,
                stream: 5
            }
        );
        assert_eq!(b.len(), 27 + 40);
    }

    #[test]
    fn padding_is_removed_and_overlong_padding_refused() {
        assert_eq!(
            strip_padding(PADDED, &[2, 1, 2, 3, 0, 0]),
            Some(&[1u8, 2, 3][..])
        );
        assert_eq!(strip_padding(0, &[2, 1]), Some(&[2u8, 1][..]));
        assert_eq!(strip_padding(PADDED, &[5, 1, 2]), None);
        assert_eq!(strip_padding(PADDED, &[]), None);
    }
}
