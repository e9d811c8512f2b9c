//! The KV service (`etcdserverpb.KV`): Range, Put, DeleteRange, Txn, Compact.
//!
//! Guarantees: a request that etcd would refuse before touching its store (empty
//! key, bad sort option, ignore_value with a value, too many txn ops, a key written
//! twice in a txn...) is refused here with etcd's code and message, and never reaches
//! the backend.

use std::sync::Arc;

use skiff_proto::etcdserverpb::{
    kv_server::Kv, CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse,
    PutRequest, PutResponse, RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use tonic::{Request, Response, Status};

use crate::apply::ApplyOutput;
use skiff_api::validate;
use skiff_api::EtcdError;
use skiff_proto::skiffpb::internal_request::Request as Req;

/// What the KV service needs from the member, for requests that passed validation.
#[tonic::async_trait]
pub trait KvBackend: Send + Sync + 'static {
    async fn range(&self, req: RangeRequest) -> Result<RangeResponse, EtcdError>;
    async fn put(&self, req: PutRequest) -> Result<PutResponse, EtcdError>;
    async fn delete_range(&self, req: DeleteRangeRequest)
        -> Result<DeleteRangeResponse, EtcdError>;
    async fn txn(&self, req: TxnRequest) -> Result<TxnResponse, EtcdError>;
    async fn compact(&self, req: CompactionRequest) -> Result<CompactionResponse, EtcdError>;
}

/// The gRPC KV service over a backend.
pub struct KvService<B> {
    backend: Arc<B>,
    max_txn_ops: usize,
}

impl<B: KvBackend> KvService<B> {
    pub fn new(backend: Arc<B>, max_txn_ops: u32) -> KvService<B> {
        KvService {
            backend,
            max_txn_ops: max_txn_ops as usize,
        }
    }
}

#[tonic::async_trait]
impl<B: KvBackend> Kv for KvService<B> {
    async fn range(&self, req: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        let req = req.into_inner();
        validate::check_range(&req)?;
        Ok(Response::new(self.backend.range(req).await?))
    }

    async fn put(&self, req: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let req = req.into_inner();
        validate::check_put(&req)?;
        Ok(Response::new(self.backend.put(req).await?))
    }

    async fn delete_range(
        &self,
        req: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let req = req.into_inner();
        validate::check_delete(&req)?;
        Ok(Response::new(self.backend.delete_range(req).await?))
    }

    async fn txn(&self, req: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let req = req.into_inner();
        validate::check_txn(&req, self.max_txn_ops)?;
        Ok(Response::new(self.backend.txn(req).await?))
    }

    async fn compact(
        &self,
        req: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        Ok(Response::new(self.backend.compact(req.into_inner()).await?))
    }
}

/// The member serves KV requests: writes through Raft, reads after a ReadIndex (or
/// locally when serializable).
#[tonic::async_trait]
impl KvBackend for crate::server::EtcdServer {
    async fn range(&self, req: RangeRequest) -> Result<RangeResponse, EtcdError> {
        crate::server::EtcdServer::range(self, req).await
    }

    async fn put(&self, req: PutRequest) -> Result<PutResponse, EtcdError> {
        let r = self.propose(Req::Put(req)).await;
        crate::server::EtcdServer::expect(r, |o| match o {
            ApplyOutput::Put(p) => Some(p),
            _ => None,
        })
    }

    async fn delete_range(
        &self,
        req: DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, EtcdError> {
        let r = self.propose(Req::DeleteRange(req)).await;
        crate::server::EtcdServer::expect(r, |o| match o {
            ApplyOutput::DeleteRange(p) => Some(p),
            _ => None,
        })
    }

    async fn txn(&self, req: TxnRequest) -> Result<TxnResponse, EtcdError> {
        let r = self.propose(Req::Txn(req)).await;
        crate::server::EtcdServer::expect(r, |o| match o {
            ApplyOutput::Txn(p) => Some(p),
            _ => None,
        })
    }

    async fn compact(&self, req: CompactionRequest) -> Result<CompactionResponse, EtcdError> {
        let physical = req.physical;
        let revision = req.revision;
        let r = self.propose(Req::Compaction(req)).await;
        let resp = crate::server::EtcdServer::expect(r, |o| match o {
            ApplyOutput::Compaction(p) => Some(p),
            _ => None,
        })?;
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
