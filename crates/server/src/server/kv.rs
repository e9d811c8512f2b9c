//! The KV API of the member (requests already checked by the validation layer):
//! writes through Raft, reads after the ReadIndex barrier (or at once when
//! serializable).
//!
//! A range is read within the member's in-flight response budget
//! ([`crate::budget`]): its rows are charged as they are loaded, and the bytes are
//! held until gRPC has encoded the response (the holding is shared by the values'
//! buffers, no copy). A range that finds no room waits up to the budget's wait, then
//! answers `etcdserver: too many requests`; one larger than the whole budget answers
//! `skiff: response is larger than --max-inflight-response-bytes; use a limit`.
//!
//! A `physical` compaction is answered once the rows are removed, however long that
//! takes, as etcd does (its client's deadline bounds the call): an answer bounded by
//! the request timeout made `etcdctl --command-timeout=600s compact --physical` of
//! two million revisions fail with `request timed out` while the removal went on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use skiff_api::EtcdError;
use skiff_proto::etcdserverpb as pb;
use skiff_proto::skiffpb::internal_request::Request as Req;

use skiff_storage::mvcc as st;

use super::EtcdServer;
use crate::budget::Held;
use crate::convert;
use crate::facade::{ApiResult, KvApi};
use crate::inputs::ApplyOutput;

/// How long one step of waiting for a physical compaction blocks a thread.
const PHYSICAL_COMPACTION_STEP: Duration = Duration::from_millis(500);

impl KvApi for EtcdServer {
    async fn range(&self, req: pb::RangeRequest) -> ApiResult<pb::RangeResponse> {
        if !req.serializable {
            self.linearizable_barrier().await?;
        }
        let ids = self.header_ids();
        let store = self.store.clone();
        let budget = self.response_budget.clone();
        let r = Arc::new(convert::range_from_pb(req));
        let deadline = Instant::now() + budget.wait();
        let mut held = budget.hold();
        loop {
            let slot = budget.reader(deadline).await?;
            let read = if r.range_end.is_empty() {
                // One key: an index lookup and at most one value, mostly from the
                // backend's cache. Handing it to another thread and back costs more
                // than the read (two wake-ups per request, measured in PROFILE.md).
                read_within(&store, held, &r)
            } else {
                // A scan may touch much of the disk; keep it off the async workers.
                let (store, r2) = (store.clone(), r.clone());
                tokio::task::spawn_blocking(move || read_within(&store, held, &r2))
                    .await
                    .map_err(|_| EtcdError::Stopped)?
            };
            drop(slot);
            match read.map_err(|e| convert::store_error(&e))? {
                Read::Done(resp, held) => return Ok(range_to_pb_held(resp, held, &ids)),
                // No room: wait for what it needs, holding nothing, then read again.
                Read::NeedRoom(cost) => held = budget.reserve_async(cost, deadline).await?,
            }
        }
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
        let held = self.reserve_for_txn(&req).await?;
        let resp = self
            .propose_for(Req::Txn(req), |o| match o {
                ApplyOutput::Txn(p) => Some(p),
                _ => None,
            })
            .await;
        if let Some(held) = held {
            // The ranges' results stay charged until the response is sent.
            crate::budget::keep_until_sent(&Arc::new(held));
        }
        resp
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
            // As etcd: the answer waits for the physical compaction however long it takes
            // (removing millions of revisions takes longer than the request timeout);
            // the client's deadline bounds the call. Waiting in short steps lets a
            // cancelled call free its blocking thread within one step.
            loop {
                let store = self.store.clone();
                let done = tokio::task::spawn_blocking(move || {
                    store.wait_compacted(revision, PHYSICAL_COMPACTION_STEP)
                })
                .await
                .map_err(|_| EtcdError::Stopped)?;
                if done {
                    break;
                }
            }
        }
        Ok(resp)
    }
}

impl EtcdServer {
    /// Reserves, before a txn is proposed, what its range operations will return
    /// (the larger branch, nested txns included, measured on the current state):
    /// `None` when that cannot matter (no range, or only single-key gets whose values,
    /// at most `--max-request-bytes` each, total under a quarter of the budget).
    async fn reserve_for_txn(&self, req: &pb::TxnRequest) -> ApiResult<Option<Held>> {
        let mut ranges = (Vec::new(), Vec::new());
        txn_ranges(req, &mut ranges.0, &mut ranges.1);
        let (success, failure) = ranges;
        if success.is_empty() && failure.is_empty() {
            return Ok(None);
        }
        let budget = self.response_budget.clone();
        let single_worst = (success.len().max(failure.len()) as u64)
            .saturating_mul(u64::from(self.config.max_request_bytes));
        let all_single = success
            .iter()
            .chain(&failure)
            .all(|r| r.range_end.is_empty());
        if all_single && single_worst < budget.limit() / 4 {
            return Ok(None);
        }
        let store = self.store.clone();
        let cost = move |rs: &[pb::RangeRequest]| -> Result<u64, st::Error> {
            let mut sum = 0u64;
            for r in rs {
                let left = budget.limit().saturating_sub(sum);
                sum += store.range_cost(&convert::range_from_pb(r.clone()), left)?;
                if sum > budget.limit() {
                    break;
                }
            }
            Ok(sum)
        };
        let budget = self.response_budget.clone();
        let deadline = Instant::now() + budget.wait();
        let need = tokio::task::spawn_blocking(move || -> Result<u64, st::Error> {
            Ok(cost(&success)?.max(cost(&failure)?))
        })
        .await
        .map_err(|_| EtcdError::Stopped)?;
        match need {
            Ok(need) => Ok(Some(budget.reserve_async(need, deadline).await?)),
            // A range the store refuses (compacted, future revision) is answered by
            // the txn itself, as before.
            Err(st::Error::Request(
                e @ (EtcdError::ResponseTooLarge | EtcdError::TooManyRequests),
            )) => Err(e),
            Err(st::Error::Request(_)) => Ok(None),
            Err(e) => Err(convert::store_error(&e)),
        }
    }
}

/// The range operations of `t`'s branches (nested txns' ranges count in both of
/// their own branches' larger one, approximated by adding both).
fn txn_ranges(
    t: &pb::TxnRequest,
    success: &mut Vec<pb::RangeRequest>,
    failure: &mut Vec<pb::RangeRequest>,
) {
    for (ops, out) in [(&t.success, success), (&t.failure, failure)] {
        for op in ops.iter() {
            match &op.request {
                Some(pb::request_op::Request::RequestRange(r)) => out.push(r.clone()),
                Some(pb::request_op::Request::RequestTxn(inner)) => {
                    let (mut a, mut b) = (Vec::new(), Vec::new());
                    txn_ranges(inner, &mut a, &mut b);
                    out.extend(a);
                    out.extend(b);
                }
                _ => {}
            }
        }
    }
}

/// What one read within the budget came to.
enum Read {
    Done(st::RangeResponse, Held),
    /// The budget had no room: the response's measured cost, to wait for.
    NeedRoom(u64),
}

/// Reads `r` with its rows charged to `held` (never waiting); without room, gives
/// everything back and measures what the response needs.
fn read_within(
    store: &st::KvStore,
    mut held: Held,
    r: &st::RangeRequest,
) -> Result<Read, st::Error> {
    match store.range_charged(r, &mut |n| held.charge(n)) {
        Ok(resp) => {
            held.trim();
            Ok(Read::Done(resp, held))
        }
        Err(st::Error::Request(EtcdError::TooManyRequests)) => {
            let wanted = held.wanted();
            let limit = held.limit();
            drop(held);
            Ok(Read::NeedRoom(store.range_cost(r, limit)?.max(wanted)))
        }
        Err(e) => Err(e),
    }
}

/// A value's buffer that keeps its response's budget holding alive.
struct Charged {
    bytes: Vec<u8>,
    _held: Arc<Held>,
}

impl AsRef<[u8]> for Charged {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

/// [`convert::range_to_pb`], the values sharing `held`: the bytes go back to the
/// budget when the last value is dropped (after gRPC encoded the response).
fn range_to_pb_held(r: st::RangeResponse, held: Held, ids: &convert::Ids) -> pb::RangeResponse {
    let held = Arc::new(held);
    crate::budget::keep_until_sent(&held);
    pb::RangeResponse {
        header: ids.header(r.header),
        kvs: r
            .kvs
            .into_iter()
            .map(|kv| {
                let value = Bytes::from_owner(Charged {
                    bytes: kv.value,
                    _held: held.clone(),
                });
                skiff_proto::mvccpb::KeyValue {
                    key: Bytes::from(kv.key),
                    create_revision: kv.create_revision,
                    mod_revision: kv.mod_revision,
                    version: kv.version,
                    value,
                    lease: kv.lease,
                }
            })
            .collect(),
        more: r.more,
        count: r.count,
    }
}
