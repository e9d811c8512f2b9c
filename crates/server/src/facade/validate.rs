//! The validation layer: every request checked as etcd checks it before anything
//! else sees it (empty key, bad sort option, ignore_value with a value, too many txn
//! ops, a key written twice in a txn, a lease TTL out of range...), with etcd's code
//! and message ([`skiff_api::validate`]). It is the first layer of the pipeline, so
//! every front end (gRPC, later the JSON gateway and the proxy) refuses the same
//! requests the same way, and a malformed request never reaches quota, auth or Raft.
//! The store checks writes again at apply time, so a bad log entry fails cleanly.

use std::sync::Arc;

use skiff_api::validate;
use skiff_proto::etcdserverpb as pb;

use super::{ApiResult, KvApi, LeaseApi};

/// The validation layer around an inner facade.
pub struct Validate<F> {
    inner: Arc<F>,
    /// `--max-txn-ops`.
    max_txn_ops: usize,
}

impl<F> Validate<F> {
    pub fn new(inner: Arc<F>, max_txn_ops: u32) -> Validate<F> {
        Validate {
            inner,
            max_txn_ops: max_txn_ops as usize,
        }
    }
}

impl<F: KvApi> KvApi for Validate<F> {
    async fn range(&self, req: pb::RangeRequest) -> ApiResult<pb::RangeResponse> {
        validate::check_range(&req)?;
        self.inner.range(req).await
    }
    async fn put(&self, req: pb::PutRequest) -> ApiResult<pb::PutResponse> {
        validate::check_put(&req)?;
        self.inner.put(req).await
    }
    async fn delete_range(
        &self,
        req: pb::DeleteRangeRequest,
    ) -> ApiResult<pb::DeleteRangeResponse> {
        validate::check_delete(&req)?;
        self.inner.delete_range(req).await
    }
    async fn txn(&self, req: pb::TxnRequest) -> ApiResult<pb::TxnResponse> {
        validate::check_txn(&req, self.max_txn_ops)?;
        self.inner.txn(req).await
    }
    async fn compact(&self, req: pb::CompactionRequest) -> ApiResult<pb::CompactionResponse> {
        self.inner.compact(req).await
    }
}

#[tonic::async_trait]
impl<F: LeaseApi> LeaseApi for Validate<F> {
    async fn lease_grant(&self, req: pb::LeaseGrantRequest) -> ApiResult<pb::LeaseGrantResponse> {
        validate::check_lease_ttl(req.ttl)?;
        self.inner.lease_grant(req).await
    }
    async fn lease_revoke(
        &self,
        req: pb::LeaseRevokeRequest,
    ) -> ApiResult<pb::LeaseRevokeResponse> {
        self.inner.lease_revoke(req).await
    }
    async fn lease_keep_alive(
        &self,
        req: pb::LeaseKeepAliveRequest,
    ) -> ApiResult<pb::LeaseKeepAliveResponse> {
        self.inner.lease_keep_alive(req).await
    }
    async fn lease_time_to_live(
        &self,
        req: pb::LeaseTimeToLiveRequest,
    ) -> ApiResult<pb::LeaseTimeToLiveResponse> {
        self.inner.lease_time_to_live(req).await
    }
    async fn lease_leases(
        &self,
        req: pb::LeaseLeasesRequest,
    ) -> ApiResult<pb::LeaseLeasesResponse> {
        self.inner.lease_leases(req).await
    }
}

pass_through!(Validate: Watch, Cluster, Maintenance, Auth);
