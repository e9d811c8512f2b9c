//! The Lock service (`v3lockpb.Lock`), served the way etcd serves it: a lock named
//! `name` held by lease `L` is the key `name/<L in hex>`; the holder is the key with
//! the smallest create revision under `name/`. Lock creates the caller's key (once:
//! a retry with the same lease finds it) and waits until every key created before it
//! under the prefix is gone; Unlock deletes the key.
//!
//! Guarantees: the response's `key` is the caller's ownership key; its create
//! revision fences later writes (compare it in a Txn), because a lock alone gives no
//! mutual exclusion once the lease may expire. The wait watches the one predecessor
//! key at a time from the revision it was read at, so no delete is missed.

use std::sync::Arc;

use bytes::Bytes;
use skiff_api::EtcdError;
use skiff_proto::etcdserverpb::{
    compare::{CompareResult, CompareTarget, TargetUnion},
    range_request::{SortOrder, SortTarget},
    request_op::Request as Op,
    response_op::Response as OpResp,
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, ResponseHeader, TxnRequest,
};
use skiff_proto::etcdserverpb::{watch_create_request::FilterType, WatchCreateRequest};
use skiff_proto::v3lockpb::{
    lock_server::Lock, LockRequest, LockResponse, UnlockRequest, UnlockResponse,
};
use tonic::{Request, Response, Status};

use crate::facade::{KvApi, WatchApi};

/// The Lock service over the KV and watch facade, as etcd builds it on its client.
pub struct LockService<F> {
    facade: Arc<F>,
}

impl<F: KvApi + WatchApi> LockService<F> {
    pub fn new(facade: Arc<F>) -> LockService<F> {
        LockService { facade }
    }
}

/// The end of the range of every key starting with `prefix`.
pub(crate) fn prefix_end(prefix: &[u8]) -> Bytes {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Bytes::from(end);
        }
    }
    Bytes::from_static(b"\0")
}

fn range_op(r: RangeRequest) -> RequestOp {
    RequestOp {
        request: Some(Op::RequestRange(r)),
    }
}

/// The oldest key under `prefix` (by create revision), or the newest created before
/// `before` when given.
pub(crate) fn oldest_or_predecessor(prefix: &[u8], before: Option<i64>) -> RangeRequest {
    RangeRequest {
        key: Bytes::copy_from_slice(prefix),
        range_end: prefix_end(prefix),
        limit: 1,
        sort_target: SortTarget::Create as i32,
        sort_order: if before.is_some() {
            SortOrder::Descend as i32
        } else {
            SortOrder::Ascend as i32
        },
        max_create_revision: before.map(|b| b - 1).unwrap_or(0),
        ..Default::default()
    }
}

fn first_create_revision(resp: Option<&OpResp>) -> Option<i64> {
    match resp {
        Some(OpResp::ResponseRange(r)) => r.kvs.first().map(|kv| kv.create_revision),
        _ => None,
    }
}

impl<F: KvApi + WatchApi> LockService<F> {
    /// Creates (or finds) the caller's key; returns its create revision, whether it
    /// already holds the lock, and the header.
    async fn enqueue(
        &self,
        prefix: &[u8],
        key: &Bytes,
        lease: i64,
    ) -> Result<(i64, bool, Option<ResponseHeader>), EtcdError> {
        let get_own = range_op(RangeRequest {
            key: key.clone(),
            ..Default::default()
        });
        let get_owner = range_op(oldest_or_predecessor(prefix, None));
        let txn = TxnRequest {
            compare: vec![Compare {
                result: CompareResult::Equal as i32,
                target: CompareTarget::Create as i32,
                key: key.clone(),
                target_union: Some(TargetUnion::CreateRevision(0)),
                range_end: Bytes::new(),
            }],
            success: vec![
                RequestOp {
                    request: Some(Op::RequestPut(PutRequest {
                        key: key.clone(),
                        value: Bytes::new(),
                        lease,
                        ..Default::default()
                    })),
                },
                get_owner.clone(),
            ],
            failure: vec![get_own, get_owner],
        };
        let resp = self.facade.txn(txn).await?;
        let revision = resp.header.as_ref().map(|h| h.revision).unwrap_or(0);
        let ops: Vec<Option<OpResp>> = resp.responses.into_iter().map(|r| r.response).collect();
        let mine = if resp.succeeded {
            // The put created the key at this txn's revision.
            revision
        } else {
            first_create_revision(ops.first().and_then(Option::as_ref))
                .ok_or(EtcdError::KeyNotFound)?
        };
        let owner = first_create_revision(ops.get(1).and_then(Option::as_ref));
        Ok((mine, owner == Some(mine), resp.header))
    }
}

/// Waits until no key under `prefix` was created before `mine`; returns the header
/// of the read that found none (etcd's lock and campaign answer with it).
pub(crate) async fn wait_predecessors<F: KvApi + WatchApi>(
    facade: &F,
    prefix: &[u8],
    mine: i64,
) -> Result<Option<ResponseHeader>, EtcdError> {
    loop {
        let pred = facade
            .range(oldest_or_predecessor(prefix, Some(mine)))
            .await?;
        let Some(kv) = pred.kvs.first() else {
            return Ok(pred.header);
        };
        let read_at = pred.header.as_ref().map(|h| h.revision).unwrap_or(0);
        // Watch just that key for its delete, from right after the read.
        let mut session = facade.watch()?;
        let created = session.create(WatchCreateRequest {
            key: kv.key.clone(),
            start_revision: read_at + 1,
            filters: vec![FilterType::Noput as i32],
            ..Default::default()
        });
        if created.canceled {
            return Err(EtcdError::Stopped);
        }
        loop {
            let Some(resp) = session.next().await else {
                return Err(EtcdError::Stopped);
            };
            if resp.canceled || !resp.events.is_empty() {
                break;
            }
        }
    }
}

#[tonic::async_trait]
impl<F: KvApi + WatchApi> Lock for LockService<F> {
    async fn lock(&self, req: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        let req = req.into_inner();
        let mut prefix = req.name.to_vec();
        prefix.push(b'/');
        let mut key = prefix.clone();
        key.extend_from_slice(format!("{:x}", req.lease).as_bytes());
        let key = Bytes::from(key);
        let (mine, held, mut header) = self.enqueue(&prefix, &key, req.lease).await?;
        if !held {
            header = wait_predecessors(self.facade.as_ref(), &prefix, mine).await?;
        }
        Ok(Response::new(LockResponse { header, key }))
    }

    async fn unlock(
        &self,
        req: Request<UnlockRequest>,
    ) -> Result<Response<UnlockResponse>, Status> {
        let del = DeleteRangeRequest {
            key: req.into_inner().key,
            ..Default::default()
        };
        let resp = self.facade.delete_range(del).await?;
        Ok(Response::new(UnlockResponse {
            header: resp.header,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"a/"), Bytes::from_static(b"a0"));
        assert_eq!(prefix_end(b"a\xff"), Bytes::from_static(b"b"));
        assert_eq!(prefix_end(b"\xff\xff"), Bytes::from_static(b"\0"));
    }
}
