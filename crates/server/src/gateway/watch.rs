//! `/v3/watch` on the gateway: the body is a stream of `WatchRequest`s (create,
//! cancel, progress), the response a stream of `{"result":WatchResponse}` lines that
//! lasts until the client goes away, as etcd's gateway serves it.
//!
//! Guarantees: the same session rules as the gRPC Watch service (a watcher's
//! `created` line before any of its events; a cancel of an unknown watcher answered by
//! nothing; a progress request answered with `watch_id` -1); the stream stays open
//! after the request body ends (etcd keeps the watchers) and its watchers are removed
//! as soon as the client disconnects. A first request that cannot be read is a 500
//! with code 2 (grpc-gateway's answer); a later one stops reading requests.

use skiff_proto::etcdserverpb::{self as pb, watch_request::RequestUnion};

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use tonic::Code;

use super::decode::{Decode, DecodeError, EnumDef, Fields};
use super::encode::{Encode, Obj};
use super::reply;
use super::stream::JsonValues;
use super::Gw;
use crate::facade::{Facade, WatchSession};

type Result<T> = std::result::Result<T, DecodeError>;

const FILTER_TYPE: EnumDef = EnumDef {
    go_type: "etcdserverpb.WatchCreateRequest_FilterType",
    names: &["NOPUT", "NODELETE"],
};

/// One client request: the response to send for it, if any.
fn handle(session: &mut dyn WatchSession, req: pb::WatchRequest) -> Option<pb::WatchResponse> {
    match req.request_union? {
        RequestUnion::CreateRequest(c) => Some(session.create(c)),
        RequestUnion::CancelRequest(c) => session.cancel(c.watch_id),
        RequestUnion::ProgressRequest(_) => {
            session.request_progress();
            None
        }
    }
}

/// `/v3/watch`.
pub(super) async fn watch<F: Facade>(State(gw): State<Gw<F>>, body: Body) -> Response {
    let mut input = JsonValues::new(body, gw.max_body);
    let first = match input.next_message::<pb::WatchRequest>().await {
        Ok(first) => first,
        Err(e) => return reply::error(Code::Unknown, &e.0),
    };
    let mut session = match gw.facade.watch() {
        Ok(s) => s,
        Err(e) => return reply::stream_error(e.code(), e.message()),
    };
    let (tx, resp) = reply::stream();
    tokio::spawn(async move {
        let mut reading = first.is_some();
        let mut pending = first.and_then(|req| handle(session.as_mut(), req));
        loop {
            if let Some(r) = pending.take() {
                if tx.send(Ok(reply::result_line(&r))).await.is_err() {
                    break;
                }
            }
            // Requests first: a create sent together with others is answered before
            // the catch-up events of the earlier ones, as etcd does.
            pending = tokio::select! {
                biased;
                req = input.next_message::<pb::WatchRequest>(), if reading => match req {
                    Ok(Some(req)) => handle(session.as_mut(), req),
                    // The body ended or cannot be read: the watchers stay.
                    Ok(None) | Err(_) => {
                        reading = false;
                        None
                    }
                },
                // The client went away.
                _ = tx.closed() => break,
                r = session.next() => match r {
                    Some(r) => Some(r),
                    None => break,
                },
            };
        }
        // Dropping the session removes its watchers.
        drop(session);
    });
    resp
}

impl Decode for pb::WatchCreateRequest {
    fn decode(f: &mut Fields<'_>) -> Result<Self> {
        Ok(pb::WatchCreateRequest {
            key: f.bytes("key")?,
            range_end: f.bytes("range_end")?,
            start_revision: f.i64("start_revision")?,
            progress_notify: f.bool("progress_notify")?,
            filters: f.enumerations("filters", &FILTER_TYPE)?,
            prev_kv: f.bool("prev_kv")?,
            watch_id: f.i64("watch_id")?,
            fragment: f.bool("fragment")?,
        })
    }
}

impl Decode for pb::WatchCancelRequest {
    fn decode(f: &mut Fields<'_>) -> Result<Self> {
        Ok(pb::WatchCancelRequest {
            watch_id: f.i64("watch_id")?,
        })
    }
}

impl Decode for pb::WatchProgressRequest {
    fn decode(_: &mut Fields<'_>) -> Result<Self> {
        Ok(pb::WatchProgressRequest {})
    }
}

impl Decode for pb::WatchRequest {
    fn decode(f: &mut Fields<'_>) -> Result<Self> {
        let request_union = if f.has("create_request") {
            f.message("create_request")?
                .map(RequestUnion::CreateRequest)
        } else if f.has("cancel_request") {
            f.message("cancel_request")?
                .map(RequestUnion::CancelRequest)
        } else if f.has("progress_request") {
            f.message("progress_request")?
                .map(RequestUnion::ProgressRequest)
        } else {
            None
        };
        Ok(pb::WatchRequest { request_union })
    }
}

impl Encode for pb::WatchResponse {
    fn encode(&self, o: &mut Obj) {
        o.message("header", self.header.as_ref());
        o.i64("watch_id", self.watch_id);
        o.bool("created", self.created);
        o.bool("canceled", self.canceled);
        o.i64("compact_revision", self.compact_revision);
        o.string("cancel_reason", &self.cancel_reason);
        o.bool("fragment", self.fragment);
        o.messages("events", &self.events);
    }
}
