//! The member as the gRPC services see it: propose a write and wait for its result,
//! read linearizably or serializably, and the facts Status and MemberList report.
//!
//! Guarantees: a write is answered only with the result its own log entry produced
//! when applied (matched by a cluster-unique request ID), so an answer always means
//! "durable and applied"; a write that does not complete within the request timeout
//! is answered `etcdserver: request timed out` and its outcome is unknown (as etcd);
//! a linearizable read waits for a ReadIndex that many concurrent reads share and for
//! the apply loop to reach it, then reads the store; a serializable read reads the
//! store at once. Requests larger than `--max-request-bytes` are refused before they
//! are proposed; when the apply loop lags far behind the commit index new proposals are
//! refused with `etcdserver: too many requests`, as etcd does.

use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use prost::Message as _;
use skiff_proto::etcdserverpb as pb;
use skiff_proto::skiffpb::{internal_request::Request as Req, InternalRequest, MemberRecord};
use skiff_storage::mvcc::KvStore;
use tokio::sync::oneshot;

use crate::apply::{ApplyOutput, ApplyResult};
use crate::config::Config;
use crate::convert::{self, Ids};
use crate::ids::RequestIdGen;
use crate::inputs::{NodeInput, RaftStatus};
use crate::lessor::Lessor;
use crate::metrics::Metrics;
use crate::wait::{AppliedIndex, Wait};
use skiff_api::validate;
use skiff_api::EtcdError;

/// etcd refuses proposals when the apply loop is this many entries behind the commit.
const MAX_GAP_BETWEEN_APPLY_AND_COMMIT: u64 = 5000;

/// Shared state of a running member.
pub struct EtcdServer {
    pub config: Config,
    pub member_id: u64,
    pub cluster_id: u64,
    pub store: Arc<KvStore>,
    /// The same store with watchers: every apply goes through it.
    pub watchable: Arc<skiff_storage::watch::WatchableStore>,
    pub lessor: Arc<Mutex<Lessor>>,
    pub wait: Arc<Wait<ApplyResult>>,
    pub applied: Arc<AppliedIndex>,
    pub raft: Arc<RaftStatus>,
    pub node: Mutex<Sender<NodeInput>>,
    pub ids: RequestIdGen,
    pub metrics: Metrics,
    pub members: Arc<RwLock<Vec<MemberRecord>>>,
    pub alarms: Arc<Mutex<crate::alarms::Alarms>>,
    pub request_timeout: Duration,
    /// Sends lease requests only the leader can answer to the leader.
    pub forwarder: Arc<crate::peer::Forwarder>,
}

impl EtcdServer {
    /// etcd's request timeout: 5 s plus two election timeouts.
    pub fn request_timeout_for(config: &Config) -> Duration {
        Duration::from_secs(5) + 2 * config.election_timeout
    }

    pub fn term(&self) -> u64 {
        self.raft.term.load(Ordering::Acquire)
    }

    pub fn leader(&self) -> u64 {
        self.raft.leader.load(Ordering::Acquire)
    }

    /// The leader and its peer URLs, when another member leads.
    pub fn remote_leader(&self) -> Result<(u64, Vec<String>), EtcdError> {
        let leader = self.leader();
        if leader == 0 {
            return Err(EtcdError::NoLeader);
        }
        let urls = self
            .members
            .read()
            .map(|ms| {
                ms.iter()
                    .find(|m| m.id == leader)
                    .map(|m| m.peer_urls.clone())
                    .unwrap_or_default()
            })
            .unwrap_or_default();
        if urls.is_empty() {
            return Err(EtcdError::NoLeader);
        }
        Ok((leader, urls))
    }

    pub fn header_ids(&self) -> Ids {
        Ids {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            term: self.term(),
        }
    }

    /// A header at the store's current revision.
    pub fn header(&self) -> Option<pb::ResponseHeader> {
        Some(pb::ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            revision: self.store.current_revision(),
            raft_term: self.term(),
        })
    }

    fn send(&self, input: NodeInput) -> Result<(), EtcdError> {
        self.node
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(input)
            .map_err(|_| EtcdError::Stopped)
    }

    /// Whether `request` may grow the database: refused while NOSPACE is raised.
    fn check_quota(&self, request: &Req) -> Result<(), EtcdError> {
        let grows =
            match request {
                Req::Put(_) | Req::LeaseGrant(_) => true,
                Req::Txn(t) => t.success.iter().chain(&t.failure).any(|op| {
                    !matches!(op.request, Some(pb::request_op::Request::RequestRange(_)))
                }),
                _ => false,
            };
        if !grows {
            return Ok(());
        }
        let raised = self
            .alarms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_raised(pb::AlarmType::Nospace);
        if raised {
            return Err(EtcdError::NoSpace);
        }
        let Some(quota) = self.config.quota_backend_bytes else {
            return Ok(());
        };
        let size = std::fs::metadata(self.store.backend().path())
            .map(|m| m.len())
            .unwrap_or(0);
        if size > quota {
            // Raise the alarm through Raft (every member refuses writes from then on)
            // without holding this request up.
            let alarm = Req::Alarm(pb::AlarmRequest {
                action: pb::alarm_request::AlarmAction::Activate as i32,
                member_id: self.member_id,
                alarm: pb::AlarmType::Nospace as i32,
            });
            let id = self.ids.next_id();
            let data = InternalRequest {
                id,
                request: Some(alarm),
            }
            .encode_to_vec();
            let _ = self.send(NodeInput::Propose(data.into()));
            return Err(EtcdError::NoSpace);
        }
        Ok(())
    }

    /// Proposes `request` through Raft and waits for its apply result.
    pub async fn propose(&self, request: Req) -> ApplyResult {
        self.check_quota(&request)?;
        let commit = self.raft.commit.load(Ordering::Acquire);
        if commit > self.applied.get() + MAX_GAP_BETWEEN_APPLY_AND_COMMIT {
            return Err(EtcdError::TooManyRequests);
        }
        let id = self.ids.next_id();
        let data = InternalRequest {
            id,
            request: Some(request),
        }
        .encode_to_vec();
        validate::check_request_size(data.len(), self.config.max_request_bytes)?;
        let rx = self.wait.register(id);
        self.metrics.proposals_pending.inc();
        let result = match self.send(NodeInput::Propose(data.into())) {
            Err(e) => Err(e),
            Ok(()) => match tokio::time::timeout(self.request_timeout, rx).await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => Err(EtcdError::Stopped),
                Err(_) => {
                    self.metrics.proposals_failed.inc();
                    Err(if self.leader() == 0 {
                        EtcdError::TimeoutDueToLeaderFail
                    } else {
                        EtcdError::Timeout
                    })
                }
            },
        };
        self.wait.cancel(id);
        self.metrics.proposals_pending.dec();
        result
    }

    /// Waits until this member has applied everything committed before the call:
    /// after it, a read of the local store is linearizable.
    pub async fn linearizable_barrier(&self) -> Result<(), EtcdError> {
        let (tx, rx) = oneshot::channel();
        self.send(NodeInput::ReadIndex(tx))?;
        let index = match tokio::time::timeout(self.request_timeout, rx).await {
            Ok(Ok(r)) => r?,
            Ok(Err(_)) => return Err(EtcdError::Stopped),
            Err(_) => {
                self.metrics.slow_read_indexes.inc();
                return Err(EtcdError::Timeout);
            }
        };
        tokio::time::timeout(self.request_timeout, self.applied.wait_for(index))
            .await
            .map_err(|_| EtcdError::Timeout)
    }

    /// A Range request, linearizable unless `serializable`.
    pub async fn range(&self, req: pb::RangeRequest) -> Result<pb::RangeResponse, EtcdError> {
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

    /// Unwraps an apply result of the expected kind.
    pub fn expect<T>(
        result: ApplyResult,
        pick: impl FnOnce(ApplyOutput) -> Option<T>,
    ) -> Result<T, EtcdError> {
        // Any other kind would be a routing bug: report it as a stopped server
        // rather than panicking in a request.
        pick(result?).ok_or(EtcdError::Stopped)
    }
}
