//! A unary gRPC call served without tonic's generic machinery: the request's one
//! message read from the body, the handler run, its answer encoded as one frame.
//!
//! tonic's generated server wraps every call in a boxed future of its own, a second
//! one for the service trait's `async_trait`, a decoding stream, metadata maps built
//! from the headers and an encoding stream for the answer. For the KV calls, the most
//! frequent of all, that was about a sixth of the leader's samples under 1000 writing
//! clients (`bench/PROFILE.md`). [`call`] does the same work in one future.
//!
//! Guarantee: for a request tonic would decode (no `grpc-encoding`, or `identity`), the
//! answer is the one tonic's unary path gives, status text included:
//! - a message whose compressed flag is set, or is neither 0 nor 1, is refused with
//!   `Internal` and tonic's text (`grpc-encoding` is what would make it legal, and such
//!   calls are not served here: [`plain_encoding`]);
//! - a message longer than the limit is refused with tonic's `OutOfRange` text, which
//!   the client port's front rewrites into grpc-go's, as it does for tonic's;
//! - a body that ends before its first message is `Internal` "Missing request
//!   message.", one that ends inside a message "Unexpected EOF decoding stream.", a
//!   message that does not decode `Internal` with prost's error; every further message
//!   is read and decoded the same way (and its errors answered), then ignored;
//! - a request body cancelled by the client ends it, as tonic treats it;
//! - the answer: `content-type: application/grpc`, one DATA frame, trailers with
//!   `grpc-status: 0`; an error is a trailers-only response (`Status::into_http`).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::http::{header, HeaderMap, HeaderValue, Request, Response};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use prost::Message;
use tonic::{Code, Status};

use crate::front::InBody;

/// gRPC's message prefix: a compressed flag and a 4-byte big-endian length.
const PREFIX: usize = 5;

/// Whether tonic would read this request's messages as they are (no `grpc-encoding`,
/// or `identity`): only such calls are served by [`call`].
pub fn plain_encoding(headers: &HeaderMap) -> bool {
    headers
        .get("grpc-encoding")
        .is_none_or(|v| v.as_bytes() == b"identity")
}

/// Serves one unary call: the request's message, `handle`'s answer (see the module
/// docs). `max` is the longest request message accepted.
pub async fn call<Req, Resp, Fut>(
    req: Request<InBody>,
    max: usize,
    handle: impl FnOnce(Req) -> Fut,
) -> Response<tonic::body::Body>
where
    Req: Message + Default,
    Resp: Message,
    Fut: Future<Output = Result<Resp, Status>>,
{
    let message = match read_one::<Req>(req.into_body(), max).await {
        Ok(message) => message,
        Err(status) => return status.into_http(),
    };
    match handle(message).await.and_then(encode) {
        Ok(frame) => {
            let mut resp = Response::new(tonic::body::Body::new(Answer::new(frame)));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            resp
        }
        Err(status) => status.into_http(),
    }
}

/// The first message of `body`, after reading (and decoding) the rest.
async fn read_one<Req: Message + Default>(body: InBody, max: usize) -> Result<Req, Status> {
    let mut reader = Messages {
        body,
        buf: BytesMut::new(),
        max,
    };
    let first = reader
        .next()
        .await?
        .ok_or_else(|| Status::internal("Missing request message."))?;
    let message = decode::<Req>(first)?;
    while let Some(more) = reader.next().await? {
        decode::<Req>(more)?;
    }
    Ok(message)
}

fn decode<Req: Message + Default>(bytes: Bytes) -> Result<Req, Status> {
    Req::decode(bytes).map_err(|e| Status::internal(e.to_string()))
}

/// The messages of a request body, checked as tonic checks them.
struct Messages {
    body: InBody,
    buf: BytesMut,
    max: usize,
}

impl Messages {
    async fn next(&mut self) -> Result<Option<Bytes>, Status> {
        loop {
            if let Some(message) = self.split_message()? {
                return Ok(Some(message));
            }
            match self.body.frame().await {
                None => {
                    return if self.buf.is_empty() {
                        Ok(None)
                    } else {
                        Err(Status::internal("Unexpected EOF decoding stream."))
                    };
                }
                Some(Err(status)) if status.code() == Code::Cancelled => return Ok(None),
                Some(Err(status)) => return Err(status),
                Some(Ok(frame)) => {
                    // Trailers on a request carry nothing the KV calls read.
                    if let Ok(data) = frame.into_data() {
                        self.buf.put(data);
                    }
                }
            }
        }
    }

    /// The next whole message in the buffer, if there is one.
    fn split_message(&mut self) -> Result<Option<Bytes>, Status> {
        let Some(prefix) = self.buf.get(..PREFIX) else {
            return Ok(None);
        };
        match prefix[0] {
            0 => {}
            1 => {
                return Err(Status::internal(
                    "protocol error: received message with compressed-flag but no grpc-encoding was specified",
                ))
            }
            f => {
                return Err(Status::internal(format!(
                    "protocol error: received message with invalid compression flag: {f} (valid flags are 0 and 1), while sending request"
                )))
            }
        }
        let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
        if len > self.max {
            return Err(Status::out_of_range(format!(
                "Error, decoded message length too large: found {len} bytes, the limit is: {} bytes",
                self.max
            )));
        }
        if self.buf.len() < PREFIX + len {
            self.buf.reserve(PREFIX + len - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(PREFIX);
        Ok(Some(self.buf.split_to(len).freeze()))
    }
}

/// `message` with its gRPC prefix, as one frame's bytes.
fn encode<M: Message>(message: M) -> Result<Bytes, Status> {
    let len = message.encoded_len();
    let Ok(prefix_len) = u32::try_from(len) else {
        return Err(Status::resource_exhausted(format!(
            "Cannot return body with more than 4GB of data but got {len} bytes"
        )));
    };
    let mut buf = BytesMut::with_capacity(PREFIX + len);
    buf.put_u8(0);
    buf.put_u32(prefix_len);
    message
        .encode(&mut buf)
        .map_err(|e| Status::internal(e.to_string()))?;
    Ok(buf.freeze())
}

/// A successful unary answer: one DATA frame, then the OK trailers.
struct Answer {
    message: Option<Bytes>,
    done: bool,
}

impl Answer {
    fn new(message: Bytes) -> Answer {
        Answer {
            message: Some(message),
            done: false,
        }
    }
}

impl Body for Answer {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if let Some(message) = self.message.take() {
            return Poll::Ready(Some(Ok(Frame::data(message))));
        }
        if self.done {
            return Poll::Ready(None);
        }
        self.done = true;
        let mut trailers = HeaderMap::with_capacity(1);
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_proto::etcdserverpb::{self as pb, PutRequest, PutResponse};

    fn framed(flag: u8, message: &[u8]) -> Vec<u8> {
        let mut v = vec![flag];
        v.extend_from_slice(&(message.len() as u32).to_be_bytes());
        v.extend_from_slice(message);
        v
    }

    /// A request whose body is `chunks`, one DATA frame each.
    fn request(chunks: Vec<Vec<u8>>) -> Request<InBody> {
        let frames = chunks
            .into_iter()
            .map(|c| Ok::<_, Status>(Frame::data(Bytes::from(c))));
        let body = http_body_util::StreamBody::new(tokio_stream::iter(frames));
        Request::new(InBody::plain(tonic::body::Body::new(body)))
    }

    fn put(key: &[u8]) -> Vec<u8> {
        PutRequest {
            key: Bytes::copy_from_slice(key),
            value: Bytes::from_static(b"v"),
            ..Default::default()
        }
        .encode_to_vec()
    }

    async fn echo_key(req: Request<InBody>, max: usize) -> Response<tonic::body::Body> {
        call(req, max, |p: PutRequest| async move {
            if p.key.is_empty() {
                return Err(Status::invalid_argument("etcdserver: key is not provided"));
            }
            Ok(PutResponse {
                prev_kv: Some(skiff_proto::mvccpb::KeyValue {
                    key: p.key,
                    ..Default::default()
                }),
                ..Default::default()
            })
        })
        .await
    }

    /// The response's frames: its data, then its trailers' status (or the headers'
    /// status of a trailers-only response).
    async fn answer(resp: Response<tonic::body::Body>) -> (Vec<u8>, Status) {
        if let Some(status) = Status::from_header_map(resp.headers()) {
            return (Vec::new(), status);
        }
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/grpc");
        let collected = resp.into_body().collect().await.expect("body");
        let trailers = collected.trailers().cloned().expect("trailers");
        let status = Status::from_header_map(&trailers).expect("a status in the trailers");
        (collected.to_bytes().to_vec(), status)
    }

    #[tokio::test]
    async fn a_message_in_pieces_is_answered_in_one_frame() {
        let whole = framed(0, &put(b"k1"));
        let (a, b) = whole.split_at(3);
        let resp = echo_key(request(vec![a.to_vec(), b.to_vec()]), 1024).await;
        let (data, status) = answer(resp).await;
        assert_eq!(status.code(), Code::Ok);
        assert_eq!(data[0], 0);
        let len = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
        assert_eq!(len, data.len() - PREFIX);
        let got = PutResponse::decode(&data[PREFIX..]).expect("decodes");
        assert_eq!(got.prev_kv.expect("prev_kv").key, &b"k1"[..]);
    }

    /// tonic's generated KV server, its `Put` doing what [`echo_key`]'s handler does.
    struct TonicKv;

    #[tonic::async_trait]
    impl pb::kv_server::Kv for TonicKv {
        async fn put(
            &self,
            req: tonic::Request<PutRequest>,
        ) -> Result<tonic::Response<PutResponse>, Status> {
            let p = req.into_inner();
            if p.key.is_empty() {
                return Err(Status::invalid_argument("etcdserver: key is not provided"));
            }
            Ok(tonic::Response::new(PutResponse {
                prev_kv: Some(skiff_proto::mvccpb::KeyValue {
                    key: p.key,
                    ..Default::default()
                }),
                ..Default::default()
            }))
        }
        async fn range(
            &self,
            _: tonic::Request<pb::RangeRequest>,
        ) -> Result<tonic::Response<pb::RangeResponse>, Status> {
            Err(Status::unimplemented("range"))
        }
        async fn delete_range(
            &self,
            _: tonic::Request<pb::DeleteRangeRequest>,
        ) -> Result<tonic::Response<pb::DeleteRangeResponse>, Status> {
            Err(Status::unimplemented("delete_range"))
        }
        async fn txn(
            &self,
            _: tonic::Request<pb::TxnRequest>,
        ) -> Result<tonic::Response<pb::TxnResponse>, Status> {
            Err(Status::unimplemented("txn"))
        }
        async fn compact(
            &self,
            _: tonic::Request<pb::CompactionRequest>,
        ) -> Result<tonic::Response<pb::CompactionResponse>, Status> {
            Err(Status::unimplemented("compact"))
        }
    }

    /// The same body answered by tonic's generated server and by [`call`]: asserts the
    /// same data and the same status, and returns them.
    async fn same_as_tonic(chunks: Vec<Vec<u8>>, max: usize) -> (Vec<u8>, Status) {
        use crate::front::Dispatch;
        let tonic = pb::kv_server::KvServer::new(TonicKv).max_decoding_message_size(max);
        let mut req = request(chunks.clone());
        *req.uri_mut() = "/etcdserverpb.KV/Put".parse().expect("uri");
        let Ok(theirs) = tonic.dispatch(req).await;
        let theirs = answer(theirs).await;
        let ours = answer(echo_key(request(chunks), max).await).await;
        assert_eq!(ours.0, theirs.0, "data");
        assert_eq!(
            (ours.1.code(), ours.1.message()),
            (theirs.1.code(), theirs.1.message()),
            "status"
        );
        ours
    }

    #[tokio::test]
    async fn every_body_is_answered_as_tonic_answers_it() {
        let whole = framed(0, &put(b"k1"));
        let mut two = framed(0, &put(b"first"));
        two.extend(framed(0, &put(b"second")));
        let not_a_message = PutRequest::decode(&[0xffu8, 0xff][..])
            .expect_err("not a message")
            .to_string();
        let cases: Vec<(Vec<Vec<u8>>, Code, String)> = vec![
            (vec![whole[..3].to_vec(), whole[3..].to_vec()], Code::Ok, String::new()),
            (vec![two], Code::Ok, String::new()),
            (
                vec![framed(0, &put(b""))],
                Code::InvalidArgument,
                "etcdserver: key is not provided".into(),
            ),
            (vec![], Code::Internal, "Missing request message.".into()),
            (
                vec![framed(0, &put(b"k"))[..7].to_vec()],
                Code::Internal,
                "Unexpected EOF decoding stream.".into(),
            ),
            (
                vec![framed(1, &put(b"k"))],
                Code::Internal,
                "protocol error: received message with compressed-flag but no grpc-encoding was specified".into(),
            ),
            (
                vec![framed(7, &put(b"k"))],
                Code::Internal,
                "protocol error: received message with invalid compression flag: 7 (valid flags are 0 and 1), while sending request".into(),
            ),
            (
                vec![framed(0, &[0u8; 40])],
                Code::OutOfRange,
                "Error, decoded message length too large: found 40 bytes, the limit is: 32 bytes".into(),
            ),
            (vec![framed(0, &[0xff, 0xff])], Code::Internal, not_a_message.clone()),
            (
                // A broken second message fails the call.
                vec![framed(0, &put(b"k")), framed(0, &[0xff, 0xff])],
                Code::Internal,
                not_a_message,
            ),
        ];
        for (chunks, code, message) in cases {
            let (_, status) = same_as_tonic(chunks, 32).await;
            assert_eq!((status.code(), status.message()), (code, message.as_str()));
        }
    }

    #[tokio::test]
    async fn the_handlers_error_is_the_calls_status() {
        let (_, status) = answer(echo_key(request(vec![framed(0, &put(b""))]), 1024).await).await;
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "etcdserver: key is not provided");
    }

    #[test]
    fn only_identity_encoded_calls_are_served_here() {
        let mut h = HeaderMap::new();
        assert!(plain_encoding(&h));
        h.insert("grpc-encoding", HeaderValue::from_static("identity"));
        assert!(plain_encoding(&h));
        h.insert("grpc-encoding", HeaderValue::from_static("gzip"));
        assert!(!plain_encoding(&h));
    }
}
