//! The Lease calls on the gateway: grant, revoke, time-to-live and leases (each also
//! under etcd's `/v3/kv/lease/...` alias), and the keep-alive stream.
//!
//! Keep-alive, as etcd's gateway: the body is a stream of `{"ID":N}` requests; each
//! is answered, in order, by a `{"result":{...}}` line; the response ends when the
//! body ends (or at the first request that cannot be read). A first request that
//! cannot be read is a 500 with code 2 (grpc-gateway's answer); a failed keep-alive
//! ends the stream with grpc-gateway's error chunk.

use skiff_proto::etcdserverpb as pb;

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use tonic::Code;

use super::decode::{Decode, DecodeError, Fields};
use super::encode::{Encode, Obj};
use super::reply;
use super::stream::JsonValues;
use super::Gw;
use crate::facade::Facade;

type Result<T> = std::result::Result<T, DecodeError>;

unary_handlers! {
    grant => lease_grant,
    revoke => lease_revoke,
    time_to_live => lease_time_to_live,
    leases => lease_leases,
}

/// `/v3/lease/keepalive`.
pub(super) async fn keep_alive<F: Facade>(State(gw): State<Gw<F>>, body: Body) -> Response {
    let mut input = JsonValues::new(body, gw.max_body);
    let first = match input.next_message::<pb::LeaseKeepAliveRequest>().await {
        Ok(Some(req)) => req,
        // No request: the stream ends at once.
        Ok(None) => return reply::stream().1,
        Err(e) => return reply::error(Code::Unknown, &e.0),
    };
    // The first answer decides the HTTP status.
    let first = match gw.facade.lease_keep_alive(first).await {
        Ok(resp) => resp,
        Err(e) => return reply::stream_error(e.code(), e.message()),
    };
    let (tx, resp) = reply::stream();
    tokio::spawn(async move {
        if tx.send(Ok(reply::result_line(&first))).await.is_err() {
            return;
        }
        while let Ok(Some(req)) = input.next_message::<pb::LeaseKeepAliveRequest>().await {
            let chunk = match gw.facade.lease_keep_alive(req).await {
                Ok(resp) => reply::result_line(&resp),
                Err(e) => {
                    let _ = tx
                        .send(Ok(reply::stream_error_chunk(e.code(), e.message())))
                        .await;
                    return;
                }
            };
            if tx.send(Ok(chunk)).await.is_err() {
                return;
            }
        }
    });
    resp
}

impl Decode for pb::LeaseGrantRequest {
    fn decode(f: &mut Fields<'_>) -> Result<Self> {
        Ok(pb::LeaseGrantRequest {
            ttl: f.i64("TTL")?,
            id: f.i64("ID")?,
        })
    }
}

impl Encode for pb::LeaseGrantResponse {
    fn encode(&self, o: &mut Obj) {
        o.message("header", self.header.as_ref());
        o.i64("ID", self.id);
        o.i64("TTL", self.ttl);
        o.string("error", &self.error);
    }
}

impl Decode for pb::LeaseRevokeRequest {
    fn decode(f: &mut Fields<'_>) -> Result<Self> {
        Ok(pb::LeaseRevokeRequest { id: f.i64("ID")? })
    }
}

impl Encode for pb::LeaseRevokeResponse {
    fn encode(&self, o: &mut Obj) {
        o.message("header", self.header.as_ref());
    }
}

impl Decode for pb::LeaseKeepAliveRequest {
    fn decode(f: &mut Fields<'_>) -> Result<Self> {
        Ok(pb::LeaseKeepAliveRequest { id: f.i64("ID")? })
    }
}

impl Encode for pb::LeaseKeepAliveResponse {
    fn encode(&self, o: &mut Obj) {
        o.message("header", self.header.as_ref());
        o.i64("ID", self.id);
        o.i64("TTL", self.ttl);
    }
}

impl Decode for pb::LeaseTimeToLiveRequest {
    fn decode(f: &mut Fields<'_>) -> Result<Self> {
        Ok(pb::LeaseTimeToLiveRequest {
            id: f.i64("ID")?,
            keys: f.bool("keys")?,
        })
    }
}

impl Encode for pb::LeaseTimeToLiveResponse {
    fn encode(&self, o: &mut Obj) {
        o.message("header", self.header.as_ref());
        o.i64("ID", self.id);
        o.i64("TTL", self.ttl);
        o.i64("grantedTTL", self.granted_ttl);
        o.bytes_list("keys", &self.keys);
    }
}

impl Decode for pb::LeaseLeasesRequest {
    fn decode(_: &mut Fields<'_>) -> Result<Self> {
        Ok(pb::LeaseLeasesRequest {})
    }
}

impl Encode for pb::LeaseStatus {
    fn encode(&self, o: &mut Obj) {
        o.i64("ID", self.id);
    }
}

impl Encode for pb::LeaseLeasesResponse {
    fn encode(&self, o: &mut Obj) {
        o.message("header", self.header.as_ref());
        o.messages("leases", &self.leases);
    }
}
