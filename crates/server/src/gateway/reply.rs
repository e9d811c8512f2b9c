//! The HTTP side of the gateway's answers, as etcd 3.4's grpc-gateway (v1.9) writes
//! them: a response as JSON with status 200; an error as
//! `{"error":MSG,"message":MSG,"code":GRPC_CODE}` with the HTTP status grpc-gateway
//! maps the gRPC code to; a stream as one `{"result":...}` line per message and, if
//! the stream fails, a last `{"error":{"grpc_code":..,"http_code":..,"message":..,
//! "http_status":..}}` chunk; unknown paths and wrong methods as Go's plain-text 404
//! and 405.

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

use super::encode::{push_string, to_json, Encode, Obj};
use crate::facade::ApiResult;

/// grpc-gateway v1.9's `HTTPStatusFromCode` (as etcd 3.4 answers: FailedPrecondition
/// is 412, ResourceExhausted 429).
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::FailedPrecondition => StatusCode::PRECONDITION_FAILED,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    }
}

fn json_response(status: StatusCode, body: String, grpc_metadata: bool) -> Response {
    let mut resp = (status, body).into_response();
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if grpc_metadata {
        headers.insert(
            "grpc-metadata-content-type",
            HeaderValue::from_static("application/grpc"),
        );
    }
    resp
}

/// A unary call's error.
pub fn error(code: Code, message: &str) -> Response {
    let mut o = Obj::new();
    o.string("error", message);
    o.string("message", message);
    o.raw("code", &(code as i32).to_string());
    json_response(http_status(code), o.finish(), false)
}

/// A unary call's answer.
pub fn unary<T: Encode>(result: ApiResult<T>) -> Response {
    match result {
        Ok(msg) => json_response(StatusCode::OK, to_json(&msg), true),
        Err(e) => error(e.code(), e.message()),
    }
}

/// One line of a stream: `{"result":MSG}` and the delimiter.
pub fn result_line<T: Encode>(msg: &T) -> Bytes {
    Bytes::from(format!("{{\"result\":{}}}\n", to_json(msg)))
}

/// The chunk that ends a failed stream (no delimiter after it, as grpc-gateway).
pub fn stream_error_chunk(code: Code, message: &str) -> Bytes {
    let status = http_status(code);
    let mut inner = String::from("{");
    inner.push_str(&format!("\"grpc_code\":{}", code as i32));
    inner.push_str(&format!(",\"http_code\":{}", status.as_u16()));
    if !message.is_empty() {
        inner.push_str(",\"message\":");
        push_string(&mut inner, message);
    }
    inner.push_str(",\"http_status\":");
    push_string(&mut inner, status.canonical_reason().unwrap_or_default());
    inner.push('}');
    Bytes::from(format!("{{\"error\":{inner}}}"))
}

/// A stream that failed before its first message: the HTTP status of the error and
/// the error chunk.
pub fn stream_error(code: Code, message: &str) -> Response {
    let mut resp = json_response(http_status(code), String::new(), false);
    *resp.body_mut() = Body::from(stream_error_chunk(code, message));
    resp
}

/// The sender of a streaming response's chunks; the response ends when it is dropped.
pub type ChunkSender = mpsc::Sender<Result<Bytes, Infallible>>;

/// A streaming response (status 200) and the sender of its chunks.
pub fn stream() -> (ChunkSender, Response) {
    let (tx, rx) = mpsc::channel(64);
    let resp = json_response(StatusCode::OK, String::new(), true);
    let (parts, _) = resp.into_parts();
    (
        tx,
        Response::from_parts(parts, Body::from_stream(ReceiverStream::new(rx))),
    )
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        text,
    )
        .into_response()
}

/// An unknown path under `/v3/` or `/v3beta/`.
pub async fn not_found() -> Response {
    plain(StatusCode::NOT_FOUND, "Not Found\n")
}

/// A known path asked with a method other than POST.
pub async fn method_not_allowed() -> Response {
    plain(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n")
}

/// A prefix without its slash (`/v3`): Go's mux redirects to `/v3/`.
pub async fn add_slash(uri: axum::http::Uri) -> Response {
    (
        StatusCode::MOVED_PERMANENTLY,
        [(header::LOCATION, format!("{}/", uri.path()))],
    )
        .into_response()
}
