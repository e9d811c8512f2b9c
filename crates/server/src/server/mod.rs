//! The member as front ends see it: [`EtcdServer`] implements the request facade
//! ([`crate::facade`]), one file per API (`kv`, `watch`, `lease`, `cluster`,
//! `maintenance`). This file holds the two things they all build on: proposing a
//! request through Raft and waiting for its apply result, and the linearizable read
//! barrier.
//!
//! Guarantees: a write is answered only with the result its own log entry produced
//! when applied (matched by a cluster-unique request ID), so an answer always means
//! "durable and applied"; a write that does not complete within the request timeout
//! is answered `etcdserver: request timed out` and its outcome is unknown (as etcd);
//! a linearizable read waits for a ReadIndex that many concurrent reads share and for
//! the apply loop to reach it, then reads the store; a serializable read reads the
//! store at once. Requests larger than `--max-request-bytes` are refused before they
//! are proposed; when the apply loop lags far behind the commit index new proposals are
//! refused with `etcdserver: too many requests`, as etcd does. Nothing here takes a
//! lock the apply thread holds.

mod auth;
mod cluster;
mod kv;
mod lease;
mod maintenance;
mod snapshot;
mod watch;

pub use cluster::PeerMembership;
pub use lease::LeaderLeases;

use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use skiff_api::{validate, EtcdError};
use skiff_proto::etcdserverpb as pb;
use skiff_proto::skiffpb::{internal_request::Request as Req, InternalRequest, MemberRecord};
use skiff_storage::mvcc::KvStore;
use skiff_storage::watch::WatchableStore;
use tokio::sync::oneshot;

use crate::alarms::Alarms;
use crate::config::Config;
use crate::convert::Ids;
use crate::facade::quota::SpaceProbe;
use crate::ids::RequestIdGen;
use crate::inputs::{ApplyInput, ApplyOutput, ApplyResult, NodeInput, RaftStatus};
use crate::lease::ClockHandle;
use crate::membership::MembersView;
use crate::metrics::Metrics;
use crate::peer::{Forwarder, PeerActivity};
use crate::session::{SessionMeta, Tag};
use crate::wait::{AppliedIndex, Wait};

/// etcd refuses proposals when the apply loop is this many entries behind the commit.
const MAX_GAP_BETWEEN_APPLY_AND_COMMIT: u64 = 5000;

/// What the request side of a member holds: handles to the node loop, the apply
/// thread and the lease clock, and read-only views of what they own.
pub struct EtcdServer {
    pub config: Config,
    pub member_id: u64,
    pub cluster_id: u64,
    pub store: Arc<KvStore>,
    /// The same store with watchers.
    pub watchable: Arc<WatchableStore>,
    pub wait: Arc<Wait<ApplyResult>>,
    pub applied: Arc<AppliedIndex>,
    pub raft: Arc<RaftStatus>,
    pub node: Sender<NodeInput>,
    /// Questions for the apply thread (lease keys), answered in log order.
    pub apply: Sender<ApplyInput>,
    pub lease_clock: ClockHandle,
    pub ids: RequestIdGen,
    pub metrics: Metrics,
    pub members: MembersView,
    pub alarms: tokio::sync::watch::Receiver<Arc<Alarms>>,
    pub request_timeout: Duration,
    /// Sends lease requests only the leader can answer to the leader.
    pub forwarder: Arc<Forwarder>,
    /// Since when each peer's stream has been up (membership checks).
    pub peers: PeerActivity,
    /// One membership change at a time on this member.
    pub membership_lock: tokio::sync::Mutex<()>,
    /// The members the cluster was bootstrapped with (told to joining members).
    pub bootstrap_members: Vec<MemberRecord>,
    /// The auth store as the apply thread publishes it, and the member's tokens.
    pub auth: crate::auth::AuthShared,
    /// Bytes of range results held at once (`--max-inflight-response-bytes`).
    pub response_budget: Arc<crate::budget::ResponseBudget>,
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
        *self.raft.leader.borrow()
    }

    /// The current member list, sorted by ID.
    pub fn members_now(&self) -> Arc<Vec<MemberRecord>> {
        self.members.borrow().clone()
    }

    /// Whether this member is a learner (a member of the table, not yet promoted).
    pub fn is_learner(&self) -> bool {
        self.members
            .borrow()
            .iter()
            .any(|m| m.id == self.member_id && m.is_learner)
    }

    /// The leader and its peer URLs, when another member leads.
    pub fn remote_leader(&self) -> Result<(u64, Vec<String>), EtcdError> {
        let leader = self.leader();
        if leader == 0 {
            return Err(EtcdError::NoLeader);
        }
        let urls = self
            .members_now()
            .iter()
            .find(|m| m.id == leader)
            .map(|m| m.peer_urls.clone())
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

    pub(crate) fn send(&self, input: NodeInput) -> Result<(), EtcdError> {
        self.node.send(input).map_err(|_| EtcdError::Stopped)
    }

    /// Proposes `request` through Raft and waits for its apply result.
    pub async fn propose(&self, request: Req) -> ApplyResult {
        let commit = self.raft.commit.load(Ordering::Acquire);
        if commit > self.applied.get() + MAX_GAP_BETWEEN_APPLY_AND_COMMIT {
            return Err(EtcdError::TooManyRequests);
        }
        let id = self.ids.next_id();
        let (tag, open_session) = session_fields(&request)?;
        let data = InternalRequest {
            id,
            request: Some(request),
            // What the auth layer checked this request against (0: internal work).
            auth_revision: crate::facade::caller::checked_revision(),
            session_id: tag.map_or(0, |t| t.id),
            session_seq: tag.map_or(0, |t| t.seq),
            session_acked: tag.map_or(0, |t| t.acked),
            open_session,
            ..Default::default()
        }
        .encode_to_vec();
        validate::check_request_size(data.len(), self.config.max_request_bytes)?;
        let rx = self.wait.register(id);
        let _pending = Pending::count(&self.metrics.proposals_pending);
        match self.send(NodeInput::Propose(data.into())) {
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
        }
    }

    /// Proposes `request` on this member as leader and returns once it is committed
    /// (durable on a quorum), without waiting for it to be applied.
    pub async fn propose_committed(&self, request: Req) -> Result<(), EtcdError> {
        let data = InternalRequest {
            id: self.ids.next_id(),
            request: Some(request),
            ..Default::default()
        }
        .encode_to_vec();
        validate::check_request_size(data.len(), self.config.max_request_bytes)?;
        let (tx, rx) = oneshot::channel();
        self.send(NodeInput::ProposeCommitted(data.into(), tx))?;
        match tokio::time::timeout(self.request_timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(EtcdError::Stopped),
            Err(_) => Err(EtcdError::Timeout),
        }
    }

    /// Proposes `request` and unwraps the apply result of the expected kind.
    pub(crate) async fn propose_for<T>(
        &self,
        request: Req,
        pick: impl FnOnce(ApplyOutput) -> Option<T>,
    ) -> Result<T, EtcdError> {
        let result = self.propose(request).await?;
        // Any other kind would be a routing bug: report it as a stopped server
        // rather than panicking in a request.
        pick(result).ok_or(EtcdError::Stopped)
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

    /// Raises NOSPACE for this member and waits until it is applied here (etcd's
    /// `quotaAlarmer` answers only once its alarm request returned); a failure is only
    /// logged: the next costly request tries again.
    async fn raise_nospace_and_wait(&self) {
        let alarm = Req::Alarm(pb::AlarmRequest {
            action: pb::alarm_request::AlarmAction::Activate as i32,
            member_id: self.member_id,
            alarm: pb::AlarmType::Nospace as i32,
        });
        if let Err(e) = self.propose(alarm).await {
            tracing::warn!(error = %e, "raising the NOSPACE alarm failed");
        }
    }
}

/// The session fields of a proposal (`crate::session`): a KV write takes its caller's
/// session tag, a lease grant the tag or the flag that opens a session; nothing else is tagged, so
/// work a request does on the side (raising an alarm) never is.
fn session_fields(request: &Req) -> Result<(Option<Tag>, bool), EtcdError> {
    let Some(meta) = crate::facade::caller::session() else {
        return Ok((None, false));
    };
    Ok(match (request, meta) {
        (Req::Put(_) | Req::DeleteRange(_) | Req::Txn(_), meta) => match meta? {
            SessionMeta::Tag(tag) => (Some(tag), false),
            SessionMeta::Open => return Err(EtcdError::SessionBadMetadata),
        },
        (Req::LeaseGrant(_), meta) => match meta? {
            SessionMeta::Open => (None, true),
            SessionMeta::Tag(tag) => (Some(tag), false),
        },
        _ => (None, false),
    })
}

#[tonic::async_trait]
impl SpaceProbe for EtcdServer {
    /// etcd's `backendQuota.Available`: the file's size plus the cost stays under.
    fn fits(&self, cost: u64) -> bool {
        let Some(quota) = self.config.quota_backend_bytes else {
            return true;
        };
        self.store
            .backend()
            .cached_size_bytes()
            .saturating_add(cost)
            < quota
    }

    async fn raise_nospace(&self) {
        self.raise_nospace_and_wait().await;
    }
}

/// A proposal waiting for its outcome, counted in `etcd_server_proposals_pending` (which
/// the node loop reads to group writes, `crate::node::grouping_pause`) until it is
/// dropped, on every way out of [`EtcdServer::propose`] including a caller that gave up
/// mid-wait, so the gauge does not creep up (its waiter is forgotten the same way, by
/// `wait::Registration`).
struct Pending<'a>(&'a prometheus::IntGauge);

impl<'a> Pending<'a> {
    fn count(gauge: &'a prometheus::IntGauge) -> Pending<'a> {
        gauge.inc();
        Pending(gauge)
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_proposal_given_up_mid_wait_is_uncounted_and_forgotten() {
        let wait = Wait::<ApplyResult>::default();
        let gauge = prometheus::IntGauge::new("pending", "pending").expect("gauge");
        let waiting = async {
            let rx = wait.register(7);
            let _pending = Pending::count(&gauge);
            let _ = rx.await;
        };
        // The caller gives up (a deadline, a closed connection): the future is dropped
        // while it waits.
        let gave_up = tokio::time::timeout(Duration::from_millis(10), waiting).await;
        assert!(gave_up.is_err(), "nothing answered the proposal");
        assert_eq!(gauge.get(), 0);
        assert_eq!(wait.len(), 0);
    }
}
