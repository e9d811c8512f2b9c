//! Skiff client sessions as the counting workload uses them (`--sessions`), written
//! here from the wire protocol (`notes/sessions.md`), on tonic and the generated
//! `skiff-proto` clients, sharing no code with `skiff-client`: a checker must not share
//! a bug with what it checks.
//!
//! - Opening: `LeaseGrant` with metadata `skiff-session: open`; the session's ID is the
//!   lease's. etcd ignores the metadata, so against etcd this is a plain lease grant.
//! - Every write carries `skiff-session: <id>`, `skiff-seq: <n>` (counting up from 1)
//!   and `skiff-acked: <m>`, the highest m such that every seq <= m has been answered
//!   ([`Session`] keeps that mark).
//! - A write whose outcome is unknown is sent again with the same seq and body; the
//!   session errors (`FailedPrecondition`, `ResourceExhausted`, `InvalidArgument`
//!   whose message starts `skiff:`) say nothing was applied ([`is_session_error`]).
//!
//! Guarantee: [`Session`] never reuses a seq for a different request and never
//! announces as acknowledged a seq whose answer it has not seen.

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use skiff_proto::etcdserverpb as pb;
use skiff_proto::etcdserverpb::kv_client::KvClient;
use skiff_proto::etcdserverpb::lease_client::LeaseClient;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request as GrpcRequest, Status};

use skiff_chaos::history::{Kv, Response};

pub const SESSION: &str = "skiff-session";
pub const SEQ: &str = "skiff-seq";
pub const ACKED: &str = "skiff-acked";

/// The client side of one session: the seqs handed out and which have been answered.
#[derive(Debug)]
pub struct Session {
    pub id: i64,
    /// The last seq handed out (0: none yet).
    last: u64,
    /// Handed out and not answered yet.
    unanswered: BTreeSet<u64>,
}

impl Session {
    pub fn new(id: i64) -> Session {
        Session {
            id,
            last: 0,
            unanswered: BTreeSet::new(),
        }
    }

    /// A new seq for a new request.
    pub fn next(&mut self) -> u64 {
        self.last += 1;
        self.unanswered.insert(self.last);
        self.last
    }

    /// The answer of `seq` has been received.
    pub fn answered(&mut self, seq: u64) {
        self.unanswered.remove(&seq);
    }

    /// Every seq up to this one has been answered.
    pub fn acked(&self) -> u64 {
        match self.unanswered.first() {
            Some(first) => first - 1,
            None => self.last,
        }
    }

    /// The three metadata entries of a write with `seq`.
    pub fn metadata(&self, seq: u64) -> [(&'static str, String); 3] {
        // `acked` < seq always: seq itself is unanswered while it is sent.
        let acked = self.acked().min(seq.saturating_sub(1));
        [
            (SESSION, self.id.to_string()),
            (SEQ, seq.to_string()),
            (ACKED, acked.to_string()),
        ]
    }
}

/// Whether `status` is one of the session layer's refusals (nothing was applied).
pub fn is_session_error(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::FailedPrecondition | Code::ResourceExhausted | Code::InvalidArgument
    ) && status.message().starts_with("skiff:")
}

/// A KV and Lease client of one member (a lazily connected channel: a member that is
/// down is dialled again at the next call).
#[derive(Clone)]
pub struct SessionClient {
    kv: KvClient<Channel>,
    lease: LeaseClient<Channel>,
}

fn kv_of(kv: &skiff_proto::mvccpb::KeyValue) -> Kv {
    Kv {
        key: String::from_utf8_lossy(&kv.key).into_owned(),
        value: String::from_utf8_lossy(&kv.value).into_owned(),
        mod_rev: kv.mod_revision,
        create_rev: kv.create_revision,
        version: kv.version,
        lease: kv.lease,
    }
}

fn with_metadata<T>(msg: T, entries: &[(&'static str, String)]) -> Result<GrpcRequest<T>, Status> {
    let mut req = GrpcRequest::new(msg);
    for (k, v) in entries {
        let v: MetadataValue<_> = v
            .parse()
            .map_err(|_| Status::internal(format!("metadata {k}={v} is not ASCII")))?;
        req.metadata_mut().insert(*k, v);
    }
    Ok(req)
}

impl SessionClient {
    /// A client of `url` (`http://host:port`); connects on first use.
    pub fn new(url: &str, connect_timeout: Duration) -> Result<SessionClient, Status> {
        let ch = Endpoint::from_shared(url.to_string())
            .map_err(|e| Status::invalid_argument(format!("{url}: {e}")))?
            .connect_timeout(connect_timeout)
            .connect_lazy();
        Ok(SessionClient {
            kv: KvClient::new(ch.clone()),
            lease: LeaseClient::new(ch),
        })
    }

    /// Opens a session: a lease of `ttl` seconds granted with `skiff-session: open`.
    pub async fn open(&mut self, ttl: i64) -> Result<Session, Status> {
        let req = with_metadata(
            pb::LeaseGrantRequest { ttl, id: 0 },
            &[(SESSION, "open".to_string())],
        )?;
        let r = self.lease.lease_grant(req).await?.into_inner();
        if !r.error.is_empty() {
            return Err(Status::unknown(r.error));
        }
        Ok(Session::new(r.id))
    }

    /// A linearizable get of `key`.
    pub async fn get(&mut self, key: &str) -> Result<Response, Status> {
        let r = self
            .kv
            .range(pb::RangeRequest {
                key: Bytes::from(key.to_string()),
                ..Default::default()
            })
            .await?
            .into_inner();
        Ok(Response::Get {
            rev: r.header.map(|h| h.revision).unwrap_or_default(),
            kv: r.kvs.first().map(kv_of),
        })
    }

    /// Within `session` as `seq`: if the mod revision of `key` is `expect` then put
    /// `value` else get `key` (the workload's compare-and-put).
    pub async fn cas(
        &mut self,
        session: &Session,
        seq: u64,
        key: &str,
        expect: i64,
        value: &str,
    ) -> Result<Response, Status> {
        let key = Bytes::from(key.to_string());
        let txn = pb::TxnRequest {
            compare: vec![pb::Compare {
                result: pb::compare::CompareResult::Equal as i32,
                target: pb::compare::CompareTarget::Mod as i32,
                key: key.clone(),
                target_union: Some(pb::compare::TargetUnion::ModRevision(expect)),
                ..Default::default()
            }],
            success: vec![pb::RequestOp {
                request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                    key: key.clone(),
                    value: Bytes::from(value.to_string()),
                    ..Default::default()
                })),
            }],
            failure: vec![pb::RequestOp {
                request: Some(pb::request_op::Request::RequestRange(pb::RangeRequest {
                    key,
                    ..Default::default()
                })),
            }],
        };
        let req = with_metadata(txn, &session.metadata(seq))?;
        let r = self.kv.txn(req).await?.into_inner();
        let current = match r.responses.first().and_then(|o| o.response.as_ref()) {
            Some(pb::response_op::Response::ResponseRange(g)) => g.kvs.first().map(kv_of),
            _ => None,
        };
        Ok(Response::Cas {
            rev: r.header.map(|h| h.revision).unwrap_or_default(),
            succeeded: r.succeeded,
            current,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acked_stops_below_the_first_unanswered_seq() {
        let mut s = Session::new(-7);
        assert_eq!(s.acked(), 0);
        let a = s.next();
        assert_eq!(a, 1);
        assert_eq!(
            s.metadata(a),
            [
                (SESSION, "-7".to_string()),
                (SEQ, "1".to_string()),
                (ACKED, "0".to_string())
            ]
        );
        s.answered(a);
        assert_eq!(s.acked(), 1);
        let (b, c) = (s.next(), s.next());
        assert_eq!((b, c), (2, 3));
        // 3 answered, 2 not: nothing beyond 1 may be announced.
        s.answered(c);
        assert_eq!(s.acked(), 1);
        let d = s.next();
        assert_eq!(s.metadata(d)[2], (ACKED, "1".to_string()));
        s.answered(b);
        assert_eq!(s.acked(), 3);
        // A retry of d (still unanswered) carries acked < d.
        assert_eq!(s.metadata(d)[1], (SEQ, "4".to_string()));
        assert_eq!(s.metadata(d)[2], (ACKED, "3".to_string()));
        s.answered(d);
        assert_eq!(s.acked(), 4);
    }

    #[test]
    fn only_the_session_layers_refusals_are_definite() {
        assert!(is_session_error(&Status::failed_precondition(
            "skiff: session not found (expired or closed)"
        )));
        assert!(is_session_error(&Status::resource_exhausted(
            "skiff: too many unacknowledged requests in session"
        )));
        assert!(is_session_error(&Status::invalid_argument(
            "skiff: bad session metadata"
        )));
        // etcd's own errors, and losses in flight, leave the outcome unknown.
        assert!(!is_session_error(&Status::unavailable(
            "etcdserver: request timed out"
        )));
        assert!(!is_session_error(&Status::failed_precondition(
            "etcdserver: requested lease not found"
        )));
        assert!(!is_session_error(&Status::deadline_exceeded("timeout")));
    }

    #[test]
    fn the_compare_and_put_carries_the_session_metadata() {
        let s = Session::new(42);
        let req = with_metadata((), &s.metadata(1)).expect("ascii");
        let md = req.metadata();
        assert_eq!(md.get(SESSION).and_then(|v| v.to_str().ok()), Some("42"));
        assert_eq!(md.get(SEQ).and_then(|v| v.to_str().ok()), Some("1"));
        assert_eq!(md.get(ACKED).and_then(|v| v.to_str().ok()), Some("0"));
    }
}
