//! The KV service (`etcdserverpb.KV`): Range, Put, DeleteRange, Txn, Compact, each
//! handed to the facade, which checks the request as etcd does (empty key, bad sort
//! option, ignore_value with a value, too many txn ops, a key written twice in a
//! txn...) before it reaches the store.
//!
//! The client port serves it as [`KvCalls`]: its five calls through `api::unary`, one
//! future each, and anything else (a compressed request, an unknown method) through
//! tonic's generated server over [`KvService`], which answers those as tonic does.

use std::convert::Infallible;
use std::sync::Arc;

use axum::http::Request;
use skiff_proto::etcdserverpb::{
    kv_server::{Kv, KvServer},
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use tonic::codegen::BoxFuture;
use tonic::server::NamedService;
use tonic::{Response, Status};

use crate::api::unary;
use crate::facade::KvApi;
use crate::front::{Dispatch, GrpcResponse, InBody};

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
    async fn range(
        &self,
        req: tonic::Request<RangeRequest>,
    ) -> Result<Response<RangeResponse>, Status> {
        Ok(Response::new(self.facade.range(req.into_inner()).await?))
    }

    async fn put(&self, req: tonic::Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        Ok(Response::new(self.facade.put(req.into_inner()).await?))
    }

    async fn delete_range(
        &self,
        req: tonic::Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        Ok(Response::new(
            self.facade.delete_range(req.into_inner()).await?,
        ))
    }

    async fn txn(&self, req: tonic::Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        Ok(Response::new(self.facade.txn(req.into_inner()).await?))
    }

    async fn compact(
        &self,
        req: tonic::Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        Ok(Response::new(self.facade.compact(req.into_inner()).await?))
    }
}

/// The KV service as the client port's front calls it (see the module docs).
pub struct KvCalls<F> {
    facade: Arc<F>,
    /// The longest request message accepted (`serve::max_recv_bytes`).
    max: usize,
    generated: KvServer<KvService<F>>,
}

impl<F: KvApi> KvCalls<F> {
    /// The KV service over `facade`, accepting request messages up to `max` bytes on
    /// either path (responses unlimited, as `api::routes` sets for every service).
    pub fn new(facade: Arc<F>, max: usize) -> KvCalls<F> {
        let generated = KvServer::new(KvService::new(facade.clone()))
            .max_decoding_message_size(max)
            .max_encoding_message_size(usize::MAX);
        KvCalls {
            facade,
            max,
            generated,
        }
    }
}

impl<F> NamedService for KvCalls<F> {
    const NAME: &'static str = "etcdserverpb.KV";
}

impl<F: KvApi> Dispatch for KvCalls<F> {
    fn dispatch(&self, req: Request<InBody>) -> BoxFuture<GrpcResponse, Infallible> {
        if !unary::plain_encoding(req.headers()) {
            return self.generated.dispatch(req);
        }
        let (facade, max) = (self.facade.clone(), self.max);
        macro_rules! serve {
            ($method:ident) => {
                Box::pin(async move {
                    Ok(
                        unary::call(req, max, |m| async move { Ok(facade.$method(m).await?) })
                            .await,
                    )
                })
            };
        }
        match req.uri().path() {
            "/etcdserverpb.KV/Range" => serve!(range),
            "/etcdserverpb.KV/Put" => serve!(put),
            "/etcdserverpb.KV/DeleteRange" => serve!(delete_range),
            "/etcdserverpb.KV/Txn" => serve!(txn),
            "/etcdserverpb.KV/Compact" => serve!(compact),
            _ => self.generated.dispatch(req),
        }
    }
}
