//! Sessions: writes that apply at most once, even when retried (Skiff only).
//!
//! A plain write whose outcome is unknown (a deadline, a connection lost with the call
//! in flight, a leader change) is never repeated by this client, because repeating it
//! could apply it twice (etcd-io/etcd #14890). A [`Session`] lifts that limit: every
//! write it sends carries the session's ID and a sequence number of its own as gRPC
//! metadata, and a Skiff member applies each (session, sequence) at most once,
//! answering a repeat with the answer of the first apply. So a session's write whose
//! outcome is unknown is repeated, with the same sequence number, on any member, until
//! its answer is known or [`Session::retry_for`] has passed.
//!
//! The wire protocol, checked by Skiff's apply (`skiff-server`'s `session` module):
//! - opening: a `LeaseGrant` with `skiff-session: open`. The session is that lease,
//!   kept alive by the session; revoking it ([`Session::close`]) or its expiry ends the
//!   session, and any later use of it fails with
//!   [`EtcdError::SessionNotFound`] (never a second apply).
//! - each write: `skiff-session: <id>`, `skiff-seq: <n>`, `skiff-acked: <m>`, where
//!   every sequence up to `m` has been answered, so the server may forget those.
//!
//! etcd ignores this metadata: against etcd a session's writes are plain writes
//! (retried ones may apply twice), so use sessions only with Skiff.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use skiff_api::EtcdError;
use skiff_proto::etcdserverpb::kv_client::KvClient;
use skiff_proto::etcdserverpb::lease_client::LeaseClient;
use skiff_proto::etcdserverpb::{
    DeleteRangeRequest, DeleteRangeResponse, LeaseGrantRequest, LeaseGrantResponse, PutRequest,
    PutResponse, TxnRequest, TxnResponse,
};
use tonic::metadata::MetadataValue;

use crate::error::Error;
use crate::lease::LeaseKeepAlive;
use crate::pool::Safety;
use crate::{Client, Result};

/// The metadata names of the protocol (see the module docs).
pub const SESSION_HEADER: &str = "skiff-session";
/// The sequence number of a session's write.
pub const SEQ_HEADER: &str = "skiff-seq";
/// Every sequence up to this one has been answered.
pub const ACKED_HEADER: &str = "skiff-acked";

/// Sequence numbers handed out and not yet answered.
#[derive(Debug, Default)]
struct Seqs {
    last: u64,
    unanswered: BTreeSet<u64>,
}

impl Seqs {
    fn next(&mut self) -> u64 {
        self.last += 1;
        self.unanswered.insert(self.last);
        self.last
    }

    /// Every sequence below the oldest unanswered one has been answered.
    fn acked(&self) -> u64 {
        self.unanswered
            .first()
            .map_or(self.last, |oldest| oldest - 1)
    }
}

/// A session of at-most-once writes (see the module docs). Dropping it stops keeping
/// its lease alive; the server forgets the session when the lease expires.
#[derive(Debug)]
pub struct Session {
    client: Client,
    id: i64,
    seqs: Mutex<Seqs>,
    keep_alive: LeaseKeepAlive,
    retry_for: Duration,
}

/// Whether a failed attempt may have reached a member and its outcome is unknown, so
/// that the session repeats it: deadlines, connections lost in flight, and the
/// `Unavailable` answers (no leader, a request that timed out in the server, a member
/// stopping).
fn outcome_unknown(e: &Error) -> bool {
    match e {
        Error::Timeout(_) => true,
        Error::Etcd(e) => e.code() == tonic::Code::Unavailable,
        Error::Rpc(s) => s.code() == tonic::Code::Unavailable || crate::pool::transport_failed(s),
        _ => false,
    }
}

impl Client {
    /// Opens a session whose lease lives `ttl` seconds past the last renewal (the
    /// session keeps it alive). Like any lease grant, an open whose outcome is unknown
    /// is an error; open again (an orphaned lease just expires).
    pub async fn session(&self, ttl: i64) -> Result<Session> {
        let resp = self
            .unary(Safety::NotIdempotent, |ch| async move {
                let mut req = tonic::Request::new(LeaseGrantRequest { ttl, id: 0 });
                req.metadata_mut()
                    .insert(SESSION_HEADER, MetadataValue::from_static("open"));
                LeaseClient::new(ch).lease_grant(req).await
            })
            .await?;
        if !resp.error.is_empty() {
            return Err(Error::Malformed(
                "lease grant for a session answered an error",
            ));
        }
        Ok(Session {
            client: self.clone(),
            id: resp.id,
            seqs: Mutex::new(Seqs::default()),
            keep_alive: self.lease_keep_alive(resp.id),
            retry_for: Duration::from_secs(60),
        })
    }
}

impl Session {
    /// The session's ID (its lease's).
    pub fn id(&self) -> i64 {
        self.id
    }

    /// How long a write whose outcome is unknown is repeated before the session gives
    /// up with the last error (default 60 s).
    pub fn retry_for(mut self, limit: Duration) -> Session {
        self.retry_for = limit;
        self
    }

    /// How many times the session's lease has been renewed.
    pub fn renewals(&self) -> u64 {
        self.keep_alive.renewals()
    }

    /// Puts a key at most once.
    pub async fn put(&self, key: impl Into<Bytes>, value: impl Into<Bytes>) -> Result<PutResponse> {
        self.put_request(PutRequest {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        })
        .await
    }

    /// A put request as given, applied at most once.
    pub async fn put_request(&self, req: PutRequest) -> Result<PutResponse> {
        self.write(req, |ch, r| async move { KvClient::new(ch).put(r).await })
            .await
    }

    /// A delete-range request as given, applied at most once.
    pub async fn delete_range(&self, req: DeleteRangeRequest) -> Result<DeleteRangeResponse> {
        self.write(req, |ch, r| async move {
            KvClient::new(ch).delete_range(r).await
        })
        .await
    }

    /// A transaction, applied at most once: a repeat after an unknown outcome gets the
    /// first apply's answer (`succeeded` and responses included).
    pub async fn txn(&self, req: TxnRequest) -> Result<TxnResponse> {
        self.write(req, |ch, r| async move { KvClient::new(ch).txn(r).await })
            .await
    }

    /// Grants a lease at most once: a repeat after an unknown outcome gets the lease
    /// the first attempt granted, never a second one.
    pub async fn lease_grant(&self, ttl: i64) -> Result<LeaseGrantResponse> {
        self.write(LeaseGrantRequest { ttl, id: 0 }, |ch, r| async move {
            LeaseClient::new(ch).lease_grant(r).await
        })
        .await
    }

    /// Ends the session: revokes its lease, after which the server refuses the
    /// session's requests.
    pub async fn close(self) -> Result<()> {
        self.client.lease_revoke(self.id).await.map(|_| ())
    }

    /// Sends `req` with the next sequence number, repeating it with the same number
    /// while its outcome is unknown.
    async fn write<Q, T, F, Fut>(&self, req: Q, call: F) -> Result<T>
    where
        Q: Clone,
        F: Fn(crate::auth::AuthChannel, tonic::Request<Q>) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let seq = self.lock().next();
        let started = Instant::now();
        let result = loop {
            let acked = self.lock().acked();
            let result = self
                .client
                // Repeating the call is safe: the server applies (session, seq) once.
                .unary(Safety::Idempotent, |ch| {
                    let mut r = tonic::Request::new(req.clone());
                    let md = r.metadata_mut();
                    md.insert(SESSION_HEADER, number(self.id));
                    md.insert(SEQ_HEADER, number(seq));
                    md.insert(ACKED_HEADER, number(acked));
                    call(ch, r)
                })
                .await;
            match result {
                Err(e) if outcome_unknown(&e) && started.elapsed() < self.retry_for => {
                    tracing::debug!(session = self.id, seq, error = %e, "outcome unknown; repeating in the session");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                r => break r,
            }
        };
        // Answered, or given up on: either way the server may forget it (a late
        // original arriving after the server learnt this is refused, not applied).
        self.lock().unanswered.remove(&seq);
        if let Err(Error::Etcd(EtcdError::SessionNotFound)) = &result {
            tracing::warn!(session = self.id, "session expired or closed");
        }
        result
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Seqs> {
        self.seqs.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn number<N: ToString>(n: N) -> MetadataValue<tonic::metadata::Ascii> {
    // A decimal number is always valid ASCII metadata.
    MetadataValue::try_from(n.to_string()).unwrap_or_else(|_| MetadataValue::from_static("0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acked_is_below_the_oldest_unanswered_sequence() {
        let mut s = Seqs::default();
        assert_eq!(s.acked(), 0);
        let a = s.next();
        let b = s.next();
        assert_eq!((a, b, s.acked()), (1, 2, 0));
        s.unanswered.remove(&b);
        assert_eq!(s.acked(), 0, "1 is still unanswered");
        s.unanswered.remove(&a);
        assert_eq!(s.acked(), 2);
        let c = s.next();
        assert_eq!((c, s.acked()), (3, 2));
    }

    #[test]
    fn only_unknown_outcomes_are_repeated() {
        assert!(outcome_unknown(&Error::Timeout(Duration::from_secs(1))));
        assert!(outcome_unknown(&Error::Etcd(EtcdError::Timeout)));
        assert!(outcome_unknown(&Error::Etcd(EtcdError::NoLeader)));
        assert!(!outcome_unknown(&Error::Etcd(EtcdError::SessionNotFound)));
        assert!(!outcome_unknown(&Error::Etcd(EtcdError::Compacted)));
        assert!(!outcome_unknown(&Error::Rpc(
            tonic::Status::invalid_argument("x")
        )));
    }
}
