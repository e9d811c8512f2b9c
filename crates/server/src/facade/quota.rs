//! The quota layer: etcd 3.4's `quotaKVServer` / `quotaLeaseServer`. A request that
//! may grow the database has a *cost* (etcd's estimate: 256 bytes plus key and value
//! per put, the larger branch of a txn, 64 bytes per lease grant; see
//! [`crate::alarms::space_cost`]); it is admitted only if the backend file's size plus
//! that cost stays under `--quota-backend-bytes`. Otherwise the layer raises the
//! NOSPACE alarm (through Raft, waiting for it as etcd does) and answers etcd's
//! `etcdserver: mvcc: database space exceeded`. Requests that cost nothing (reads,
//! deletes, txns without a put, compaction, revokes, keep-alives, every maintenance
//! call) always pass, so an operator can free space, defragment and disarm.
//!
//! The layer does not look at raised alarms: while NOSPACE is raised, the apply thread
//! refuses costly requests (etcd's capped applier), in log order, so the answer is the
//! same on every member whatever each one's file size.

use std::sync::Arc;

use skiff_api::EtcdError;
use skiff_proto::etcdserverpb as pb;

use super::{ApiResult, KvApi, LeaseApi};
use crate::alarms::space_cost;

/// What the quota layer asks the member about space.
#[tonic::async_trait]
pub trait SpaceProbe: Send + Sync + 'static {
    /// Whether the backend file plus `cost` bytes stays under the quota (always true
    /// without a quota).
    fn fits(&self, cost: u64) -> bool;
    /// Raises NOSPACE through Raft and returns once it applied here (or failed).
    async fn raise_nospace(&self);
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

    /// Refuses a request of `cost` bytes when space is exhausted (etcd's
    /// `quotaAlarmer.check`); a request that costs nothing always passes.
    async fn admit(&self, cost: u64) -> Result<(), EtcdError> {
        if cost == 0 {
            return Ok(());
        }
        // A raised alarm alone does not refuse here (etcd neither): the apply thread
        // does, in log order, so the answer never depends on this member's view.
        if !self.probe.fits(cost) {
            self.probe.raise_nospace().await;
            return Err(EtcdError::NoSpace);
        }
        Ok(())
    }
}

impl<F: KvApi> KvApi for Quota<F> {
    async fn range(&self, req: pb::RangeRequest) -> ApiResult<pb::RangeResponse> {
        self.inner.range(req).await
    }
    async fn put(&self, req: pb::PutRequest) -> ApiResult<pb::PutResponse> {
        self.admit(space_cost::put(&req)).await?;
        self.inner.put(req).await
    }
    async fn delete_range(
        &self,
        req: pb::DeleteRangeRequest,
    ) -> ApiResult<pb::DeleteRangeResponse> {
        self.inner.delete_range(req).await
    }
    async fn txn(&self, req: pb::TxnRequest) -> ApiResult<pb::TxnResponse> {
        self.admit(space_cost::txn(&req)).await?;
        self.inner.txn(req).await
    }
    async fn compact(&self, req: pb::CompactionRequest) -> ApiResult<pb::CompactionResponse> {
        self.inner.compact(req).await
    }
}

pass_through!(Quota: Watch, Cluster, Maintenance, Auth);

#[tonic::async_trait]
impl<F: LeaseApi> LeaseApi for Quota<F> {
    async fn lease_grant(&self, req: pb::LeaseGrantRequest) -> ApiResult<pb::LeaseGrantResponse> {
        self.admit(space_cost::LEASE_OVERHEAD).await?;
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
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;
    use crate::facade::ApiResult;

    /// A member whose file has `size` bytes under a quota of 1000.
    #[derive(Default)]
    struct Probe {
        size: AtomicU64,
        raise_calls: AtomicU64,
    }

    #[tonic::async_trait]
    impl SpaceProbe for Probe {
        fn fits(&self, cost: u64) -> bool {
            self.size.load(Ordering::SeqCst) + cost < 1000
        }
        async fn raise_nospace(&self) {
            self.raise_calls.fetch_add(1, Ordering::SeqCst);
        }
    }

    struct Inner;

    impl KvApi for Inner {
        async fn range(&self, _: pb::RangeRequest) -> ApiResult<pb::RangeResponse> {
            Ok(Default::default())
        }
        async fn put(&self, _: pb::PutRequest) -> ApiResult<pb::PutResponse> {
            Ok(Default::default())
        }
        async fn delete_range(
            &self,
            _: pb::DeleteRangeRequest,
        ) -> ApiResult<pb::DeleteRangeResponse> {
            Ok(Default::default())
        }
        async fn txn(&self, _: pb::TxnRequest) -> ApiResult<pb::TxnResponse> {
            Ok(Default::default())
        }
        async fn compact(&self, _: pb::CompactionRequest) -> ApiResult<pb::CompactionResponse> {
            Ok(Default::default())
        }
    }

    fn put(value: usize) -> pb::PutRequest {
        pb::PutRequest {
            key: b"k".to_vec().into(),
            value: vec![0; value].into(),
            ..Default::default()
        }
    }

    fn op(r: pb::request_op::Request) -> pb::RequestOp {
        pb::RequestOp { request: Some(r) }
    }

    #[tokio::test]
    async fn admits_by_cost_and_raises_nospace_once_over() {
        let probe = Arc::new(Probe::default());
        let q = Quota::new(Arc::new(Inner), probe.clone());
        // 700 + 256 + 1 = 957 < 1000.
        assert!(q.put(put(700)).await.is_ok());
        probe.size.store(100, Ordering::SeqCst);
        let err = q.put(put(700)).await.unwrap_err();
        assert_eq!(err, EtcdError::NoSpace);
        assert_eq!(probe.raise_calls.load(Ordering::SeqCst), 1);
        // Over the quota, what costs nothing still passes: reads, deletes, compaction
        // and txns without a put (etcd 3.4 lets a txn of deletes through).
        probe.size.store(5000, Ordering::SeqCst);
        assert!(q.range(Default::default()).await.is_ok());
        assert!(q.delete_range(Default::default()).await.is_ok());
        assert!(q.compact(Default::default()).await.is_ok());
        let deletes = pb::TxnRequest {
            success: vec![op(pb::request_op::Request::RequestDeleteRange(
                Default::default(),
            ))],
            ..Default::default()
        };
        assert!(q.txn(deletes).await.is_ok());
        let put_on_failure = pb::TxnRequest {
            failure: vec![op(pb::request_op::Request::RequestPut(put(1)))],
            ..Default::default()
        };
        assert_eq!(q.txn(put_on_failure).await.unwrap_err(), EtcdError::NoSpace);
    }
}
