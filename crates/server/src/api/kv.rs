//! The KV service (`etcdserverpb.KV`): Range, Put, DeleteRange, Txn, Compact, each
//! handed to the facade, which checks the request as etcd does (empty key, bad sort
//! option, ignore_value with a value, too many txn ops, a key written twice in a
//! txn...) before it reaches the store.

use std::sync::Arc;

use skiff_proto::etcdserverpb::{
    kv_server::Kv, CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse,
    PutRequest, PutResponse, RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use tonic::{Request, Response, Status};

use crate::facade::KvApi;

/// The gRPC KV service over a facade.
pub struct KvService<F> {
    facade: Arc<F>,
}

impl<F: KvApi> KvService<F> {
    pub fn new(facade: Arc<F>) -> KvService<F> {
        KvService { facade }
    }
}

#[tonic::async_trait]
impl<F: KvApi> Kv for KvService<F> {
    async fn range(&self, req: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        Ok(Response::new(self.facade.range(req.into_inner()).await?))
    }

    async fn put(&self, req: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        Ok(Response::new(self.facade.put(req.into_inner()).await?))
    }

    async fn delete_range(
        &self,
        req: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        Ok(Response::new(
            self.facade.delete_range(req.into_inner()).await?,
        ))
    }

    async fn txn(&self, req: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        Ok(Response::new(self.facade.txn(req.into_inner()).await?))
    }

    async fn compact(
        &self,
        req: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        Ok(Response::new(self.facade.compact(req.into_inner()).await?))
    }
}
