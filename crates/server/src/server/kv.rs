//! The KV API of the member (requests already checked by the validation layer):
//! writes through Raft, reads after the ReadIndex barrier (or at once when
//! serializable).

use skiff_api::EtcdError;
use skiff_proto::etcdserverpb as pb;
use skiff_proto::skiffpb::internal_request::Request as Req;

use super::EtcdServer;
use crate::convert;
use crate::facade::{ApiResult, KvApi};
use crate::inputs::ApplyOutput;

#[tonic::async_trait]
impl KvApi for EtcdServer {
    async fn range(&self, req: pb::RangeRequest) -> ApiResult<pb::RangeResponse> {
        if !req.serializable {
            self.linearizable_barrier().await?;
        }
        let ids = self.header_ids();
        let store = self.store.clone();
        let r = convert::range_from_pb(req);
        // Reading may touch the disk; keep it off the async workers.
        let resp = tokio::task::spawn_blocking(move || store.range(&r))
            .await
            .map_err(|_| EtcdError::Stopped)?;
        resp.map(|r| convert::range_to_pb(r, &ids))
            .map_err(|e| convert::store_error(&e))
    }

    async fn put(&self, req: pb::PutRequest) -> ApiResult<pb::PutResponse> {
        self.propose_for(Req::Put(req), |o| match o {
            ApplyOutput::Put(p) => Some(p),
            _ => None,
        })
        .await
    }

    async fn delete_range(
        &self,
        req: pb::DeleteRangeRequest,
    ) -> ApiResult<pb::DeleteRangeResponse> {
        self.propose_for(Req::DeleteRange(req), |o| match o {
            ApplyOutput::DeleteRange(p) => Some(p),
            _ => None,
        })
        .await
    }

    async fn txn(&self, req: pb::TxnRequest) -> ApiResult<pb::TxnResponse> {
        self.propose_for(Req::Txn(req), |o| match o {
            ApplyOutput::Txn(p) => Some(p),
            _ => None,
        })
        .await
    }

    async fn compact(&self, req: pb::CompactionRequest) -> ApiResult<pb::CompactionResponse> {
        let physical = req.physical;
        let revision = req.revision;
        let resp = self
            .propose_for(Req::Compaction(req), |o| match o {
                ApplyOutput::Compaction(p) => Some(p),
                _ => None,
            })
            .await?;
        if physical {
            let store = self.store.clone();
            let timeout = self.request_timeout;
            let done = tokio::task::spawn_blocking(move || store.wait_compacted(revision, timeout))
                .await
                .map_err(|_| EtcdError::Stopped)?;
            if !done {
                return Err(EtcdError::Timeout);
            }
        }
        Ok(resp)
    }
}
