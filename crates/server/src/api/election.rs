//! The Election service (`v3electionpb.Election`), served the way etcd serves it: a
//! candidate in election `name` with lease `L` owns the key `name/<L in hex>`, holding
//! its proclaimed value; the leader is the candidate whose key has the smallest create
//! revision. Campaign creates the key (or finds it, proclaiming the new value) and
//! waits for every older candidate's key to go; Proclaim and Resign act only if the
//! caller's key still has the create revision it campaigned with; Observe streams the
//! leader's value each time it changes, following leadership from key to key.
//!
//! Errors are etcd's texts: "election: no leader", "election: not leader",
//! `"leader" field must be provided`.

use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use skiff_api::EtcdError;
use skiff_proto::etcdserverpb::{
    compare::{CompareResult, CompareTarget, TargetUnion},
    request_op::Request as Op,
    response_op::Response as OpResp,
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest, TxnResponse,
};
use skiff_proto::etcdserverpb::{
    watch_create_request::FilterType, ResponseHeader, WatchCreateRequest,
};
use skiff_proto::mvccpb::{event::EventType, KeyValue};
use skiff_proto::v3electionpb::{
    election_server::Election, CampaignRequest, CampaignResponse, LeaderKey, LeaderRequest,
    LeaderResponse, ProclaimRequest, ProclaimResponse, ResignRequest, ResignResponse,
};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::lock::{oldest_or_predecessor, prefix_end, wait_predecessors};
use crate::facade::{KvApi, WatchApi, WatchSession};

/// The Election service over the KV and watch facade, as etcd builds it on its
/// client.
pub struct ElectionService<F> {
    facade: Arc<F>,
}

impl<F: KvApi + WatchApi> ElectionService<F> {
    pub fn new(facade: Arc<F>) -> ElectionService<F> {
        ElectionService { facade }
    }
}

fn no_leader() -> Status {
    Status::unknown("election: no leader")
}

fn not_leader() -> Status {
    Status::unknown("election: not leader")
}

fn missing_leader() -> Status {
    Status::unknown("\"leader\" field must be provided")
}

fn prefix_of(name: &[u8]) -> Vec<u8> {
    let mut p = name.to_vec();
    p.push(b'/');
    p
}

fn if_created_at(key: &Bytes, rev: i64) -> Compare {
    Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Create as i32,
        key: key.clone(),
        target_union: Some(TargetUnion::CreateRevision(rev)),
        range_end: Bytes::new(),
    }
}

fn put_op(key: &Bytes, value: Bytes, lease: i64) -> RequestOp {
    RequestOp {
        request: Some(Op::RequestPut(PutRequest {
            key: key.clone(),
            value,
            lease,
            ..Default::default()
        })),
    }
}

async fn txn<F: KvApi>(facade: &F, t: TxnRequest) -> Result<TxnResponse, EtcdError> {
    facade.txn(t).await
}

/// The current leader's key-value and the header it was read at.
async fn current_leader<F: KvApi>(
    facade: &F,
    prefix: &[u8],
) -> Result<(Option<KeyValue>, Option<ResponseHeader>), EtcdError> {
    let r = facade.range(oldest_or_predecessor(prefix, None)).await?;
    Ok((r.kvs.into_iter().next(), r.header))
}

/// Opens a watcher on `key` (or the prefix `key..end`) from `from`.
fn watch<F: WatchApi>(
    facade: &F,
    key: &[u8],
    range_end: Vec<u8>,
    from: i64,
    filters: Vec<FilterType>,
) -> Result<Box<dyn WatchSession>, EtcdError> {
    let mut session = facade.watch()?;
    let created = session.create(WatchCreateRequest {
        key: Bytes::copy_from_slice(key),
        range_end: Bytes::from(range_end),
        start_revision: from,
        filters: filters.into_iter().map(|f| f as i32).collect(),
        ..Default::default()
    });
    if created.canceled {
        return Err(EtcdError::Stopped);
    }
    Ok(session)
}

fn revision_of(h: &Option<ResponseHeader>) -> i64 {
    h.as_ref().map(|h| h.revision).unwrap_or(0)
}

type ObserveStream = Pin<Box<dyn Stream<Item = Result<LeaderResponse, Status>> + Send>>;

#[tonic::async_trait]
impl<F: KvApi + WatchApi> Election for ElectionService<F> {
    async fn campaign(
        &self,
        req: Request<CampaignRequest>,
    ) -> Result<Response<CampaignResponse>, Status> {
        let req = req.into_inner();
        let s = self.facade.as_ref();
        let prefix = prefix_of(&req.name);
        let mut key = prefix.clone();
        key.extend_from_slice(format!("{:x}", req.lease).as_bytes());
        let key = Bytes::from(key);
        let get_own = RequestOp {
            request: Some(Op::RequestRange(RangeRequest {
                key: key.clone(),
                ..Default::default()
            })),
        };
        let resp = txn(
            s,
            TxnRequest {
                compare: vec![if_created_at(&key, 0)],
                success: vec![put_op(&key, req.value.clone(), req.lease)],
                failure: vec![get_own],
            },
        )
        .await?;
        let mut rev = resp.header.as_ref().map(|h| h.revision).unwrap_or(0);
        if !resp.succeeded {
            let existing = match resp.responses.into_iter().next().and_then(|r| r.response) {
                Some(OpResp::ResponseRange(r)) => r.kvs.into_iter().next(),
                _ => None,
            }
            .ok_or(EtcdError::KeyNotFound)?;
            rev = existing.create_revision;
            if existing.value != req.value {
                // Already a candidate with another value: proclaim the new one.
                let p = txn(
                    s,
                    TxnRequest {
                        compare: vec![if_created_at(&key, rev)],
                        success: vec![put_op(&key, req.value.clone(), req.lease)],
                        failure: vec![],
                    },
                )
                .await?;
                if !p.succeeded {
                    return Err(not_leader());
                }
            }
        }
        let header = wait_predecessors(s, &prefix, rev).await?;
        Ok(Response::new(CampaignResponse {
            header,
            leader: Some(LeaderKey {
                name: req.name,
                key,
                rev,
                lease: req.lease,
            }),
        }))
    }

    async fn proclaim(
        &self,
        req: Request<ProclaimRequest>,
    ) -> Result<Response<ProclaimResponse>, Status> {
        let req = req.into_inner();
        let leader = req.leader.ok_or_else(missing_leader)?;
        let resp = txn(
            self.facade.as_ref(),
            TxnRequest {
                compare: vec![if_created_at(&leader.key, leader.rev)],
                success: vec![put_op(&leader.key, req.value, leader.lease)],
                failure: vec![],
            },
        )
        .await?;
        if !resp.succeeded {
            return Err(not_leader());
        }
        Ok(Response::new(ProclaimResponse {
            header: resp.header,
        }))
    }

    async fn leader(
        &self,
        req: Request<LeaderRequest>,
    ) -> Result<Response<LeaderResponse>, Status> {
        let prefix = prefix_of(&req.into_inner().name);
        let (kv, header) = current_leader(self.facade.as_ref(), &prefix).await?;
        let kv = kv.ok_or_else(no_leader)?;
        Ok(Response::new(LeaderResponse {
            header,
            kv: Some(kv),
        }))
    }

    type ObserveStream = ObserveStream;

    async fn observe(
        &self,
        req: Request<LeaderRequest>,
    ) -> Result<Response<Self::ObserveStream>, Status> {
        let prefix = prefix_of(&req.into_inner().name);
        let facade = self.facade.clone();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<LeaderResponse, Status>>(16);
        tokio::spawn(crate::facade::caller::inherit(async move {
            if let Err(e) = observe_loop(facade.as_ref(), &prefix, &tx).await {
                let _ = tx.send(Err(e.into())).await;
            }
        }));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn resign(
        &self,
        req: Request<ResignRequest>,
    ) -> Result<Response<ResignResponse>, Status> {
        let leader = req.into_inner().leader.ok_or_else(missing_leader)?;
        let resp = txn(
            self.facade.as_ref(),
            TxnRequest {
                compare: vec![if_created_at(&leader.key, leader.rev)],
                success: vec![RequestOp {
                    request: Some(Op::RequestDeleteRange(DeleteRangeRequest {
                        key: leader.key.clone(),
                        ..Default::default()
                    })),
                }],
                failure: vec![],
            },
        )
        .await?;
        Ok(Response::new(ResignResponse {
            header: resp.header,
        }))
    }
}

/// Sends the leader's value whenever it changes, until the client goes away.
async fn observe_loop<F: KvApi + WatchApi>(
    facade: &F,
    prefix: &[u8],
    tx: &tokio::sync::mpsc::Sender<Result<LeaderResponse, Status>>,
) -> Result<(), EtcdError> {
    loop {
        let (kv, read_header) = current_leader(facade, prefix).await?;
        // No leader yet: wait for the first candidate's put.
        let (kv, header) = match kv {
            Some(kv) => (kv, read_header),
            None => {
                let mut session = watch(
                    facade,
                    prefix,
                    prefix_end(prefix).to_vec(),
                    revision_of(&read_header) + 1,
                    vec![FilterType::Nodelete],
                )?;
                let mut found = None;
                while found.is_none() {
                    let Some(r) = session.next().await else {
                        return Err(EtcdError::Stopped);
                    };
                    if let Some(kv) = r.events.into_iter().next().and_then(|ev| ev.kv) {
                        found = Some((kv, r.header));
                    }
                }
                found.ok_or(EtcdError::Stopped)?
            }
        };
        let key = kv.key.clone();
        let at = revision_of(&header);
        if tx
            .send(Ok(LeaderResponse {
                header,
                kv: Some(kv),
            }))
            .await
            .is_err()
        {
            return Ok(());
        }
        // Follow this leader's key until it is deleted.
        let mut session = watch(facade, &key, Vec::new(), at + 1, Vec::new())?;
        'leader: loop {
            let Some(r) = session.next().await else {
                return Err(EtcdError::Stopped);
            };
            for ev in r.events {
                if ev.r#type == EventType::Delete as i32 {
                    break 'leader;
                }
                if tx
                    .send(Ok(LeaderResponse {
                        header: r.header,
                        kv: ev.kv,
                    }))
                    .await
                    .is_err()
                {
                    return Ok(());
                }
            }
        }
    }
}
