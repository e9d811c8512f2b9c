//! The quota layer: refuses requests that could grow the database while the NOSPACE
//! alarm is raised, and raises it when the backend outgrows `--quota-backend-bytes`,
//! with etcd's error (`etcdserver: mvcc: database space exceeded`). Reads, deletes,
//! compaction, revokes and every maintenance call pass, so an operator can always
//! free space and disarm the alarm (etcd's `quotaKVServer` / `quotaLeaseServer`).

use std::sync::Arc;

use skiff_api::EtcdError;
use skiff_proto::etcdserverpb as pb;

use super::{ApiResult, KvApi, LeaseApi};

/// What the quota layer asks the member about space.
pub trait SpaceProbe: Send + Sync + 'static {
    /// Whether a NOSPACE alarm is raised (by any member).
    fn nospace_raised(&self) -> bool;
    /// Whether the backend is larger than the quota (false without a quota).
    fn over_quota(&self) -> bool;
    /// Raises NOSPACE through Raft without waiting for it.
    fn raise_nospace(&self);
}

/// The quota layer around an inner facade.
pub struct Quota<F> {
    inner: Arc<F>,
    probe: Arc<dyn SpaceProbe>,
}

impl<F> Quota<F> {
    pub fn new(inner: Arc<F>, probe: Arc<dyn SpaceProbe>) -> Quota<F> {
        Quota { inner, probe }
    }

    /// Refuses a request that may grow the database when space is exhausted.
    fn admit(&self) -> Result<(), EtcdError> {
        if self.probe.nospace_raised() {
            return Err(EtcdError::NoSpace);
        }
        if self.probe.over_quota() {
            // Every member refuses writes from the moment the alarm applies.
            self.probe.raise_nospace();
            return Err(EtcdError::NoSpace);
        }
        Ok(())
    }
}

/// Whether a txn may write (any op that is not a range, nested txns included).
fn txn_grows(t: &pb::TxnRequest) -> bool {
    t.success
        .iter()
        .chain(&t.failure)
        .any(|op| !matches!(op.request, Some(pb::request_op::Request::RequestRange(_))))
}

#[tonic::async_trait]
impl<F: KvApi> KvApi for Quota<F> {
    async fn range(&self, req: pb::RangeRequest) -> ApiResult<pb::RangeResponse> {
        self.inner.range(req).await
    }
    async fn put(&self, req: pb::PutRequest) -> ApiResult<pb::PutResponse> {
        self.admit()?;
        self.inner.put(req).await
    }
    async fn delete_range(
        &self,
        req: pb::DeleteRangeRequest,
    ) -> ApiResult<pb::DeleteRangeResponse> {
        self.inner.delete_range(req).await
    }
    async fn txn(&self, req: pb::TxnRequest) -> ApiResult<pb::TxnResponse> {
        if txn_grows(&req) {
            self.admit()?;
        }
        self.inner.txn(req).await
    }
    async fn compact(&self, req: pb::CompactionRequest) -> ApiResult<pb::CompactionResponse> {
        self.inner.compact(req).await
    }
}

pass_through!(Quota: Watch, Cluster, Maintenance);

#[tonic::async_trait]
impl<F: LeaseApi> LeaseApi for Quota<F> {
    async fn lease_grant(&self, req: pb::LeaseGrantRequest) -> ApiResult<pb::LeaseGrantResponse> {
        self.admit()?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_writing_txns_grow() {
        let range = pb::RequestOp {
            request: Some(pb::request_op::Request::RequestRange(Default::default())),
        };
        let put = pb::RequestOp {
            request: Some(pb::request_op::Request::RequestPut(Default::default())),
        };
        let read_only = pb::TxnRequest {
            success: vec![range.clone()],
            failure: vec![range.clone()],
            ..Default::default()
        };
        assert!(!txn_grows(&read_only));
        let writes_on_failure = pb::TxnRequest {
            success: vec![range],
            failure: vec![put],
            ..Default::default()
        };
        assert!(txn_grows(&writes_on_failure));
    }
}
