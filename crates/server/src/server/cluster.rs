//! The Cluster API of the member, in etcd 3.4's semantics: the member list from the
//! member table (persisted in the backend, so names and client URLs of members that
//! are down are kept), sorted by ID; add (voter or learner), remove and promote as
//! Raft conf changes, update as a logged request.
//!
//! Checks, in etcd's order and words: peer URLs must be `scheme://host:port`; with
//! `--strict-reconfig-check` (the default) a change that would leave fewer started
//! members (members that published their name) than a quorum is refused ("not enough
//! started members"), and so is one made while a voter's peer stream has been down in
//! the last 5 s ("unhealthy cluster"; a down member may still be removed); a learner
//! is promoted only by the leader (a follower forwards the call), once it has 90% of
//! the leader's log. Checks on IDs and learner counts are made again when the change
//! commits ([`crate::membership::check_change`]), which is where a refusal of two
//! racing changes is decided. One membership change at a time per member.
//!
//! The member ID of an added member is etcd's: the first 8 bytes of SHA-1 over its
//! sorted peer URLs and the Unix time in seconds, so adding the same URLs twice in a
//! second answers "member ID already exist", as etcd does.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use skiff_api::EtcdError;
use skiff_proto::etcdserverpb as pb;
use skiff_proto::skiffpb::internal_request::Request as Req;
use skiff_proto::skiffpb::{ConfChangeContext, MemberRecord, MemberUpdate, MembersResponse};

use super::EtcdServer;
use crate::facade::{ApiResult, ClusterApi};
use crate::inputs::{ApplyOutput, NodeInput};
use crate::membership::{peer_urls_taken, ChangeKind, MemberChange, MAX_LEARNERS};

/// How long every voter's stream must have been up for a change (etcd's
/// `HealthInterval`).
const HEALTH_INTERVAL: Duration = Duration::from_secs(5);

/// How long a proposed conf change may take to commit before it is proposed again.
const CONF_CHANGE_RETRY: Duration = Duration::from_secs(1);

/// A learner is in sync once its log has this share of the leader's (etcd's).
const READY_PERCENT: f64 = 0.9;

fn to_pb(m: &MemberRecord) -> pb::Member {
    pb::Member {
        id: m.id,
        name: m.name.clone(),
        peer_ur_ls: m.peer_urls.clone(),
        client_ur_ls: m.client_urls.clone(),
        is_learner: m.is_learner,
    }
}

/// etcd's `types.NewURLs`: every URL `scheme://host:port` without a path; sorted.
fn peer_urls(urls: &[String]) -> Result<Vec<String>, EtcdError> {
    let mut out = Vec::with_capacity(urls.len());
    for u in urls {
        crate::config::url::check_syntax(u).map_err(|_| EtcdError::MemberBadUrls)?;
        out.push(u.trim().to_string());
    }
    if out.is_empty() {
        return Err(EtcdError::MemberBadUrls);
    }
    out.sort();
    Ok(out)
}

/// Started voters and all voters, not counting `except`.
fn voters(members: &[MemberRecord], except: u64) -> (usize, usize) {
    let voters = members.iter().filter(|m| !m.is_learner && m.id != except);
    let (mut started, mut all) = (0, 0);
    for m in voters {
        all += 1;
        if !m.name.is_empty() {
            started += 1;
        }
    }
    (started, all)
}

impl EtcdServer {
    /// The current members in etcd's wire form.
    fn members_pb(&self) -> Vec<pb::Member> {
        self.members_now().iter().map(to_pb).collect()
    }

    /// A header for membership answers: no revision, as etcd.
    fn member_header(&self) -> Option<pb::ResponseHeader> {
        self.header()
            .map(|h| pb::ResponseHeader { revision: 0, ..h })
    }

    /// Whether every voter's stream has been up for [`HEALTH_INTERVAL`] (etcd's
    /// `isConnectedFullySince`).
    fn all_voters_connected(&self, members: &[MemberRecord]) -> bool {
        self.connected_voters(members) == members.iter().filter(|m| !m.is_learner).count()
    }

    /// Voters (this member included) whose stream has been up for [`HEALTH_INTERVAL`].
    fn connected_voters(&self, members: &[MemberRecord]) -> usize {
        let since = Instant::now().checked_sub(HEALTH_INTERVAL);
        members
            .iter()
            .filter(|m| !m.is_learner)
            .filter(|m| {
                m.id == self.member_id
                    || match (self.peers.active_since(m.id), since) {
                        (Some(up), Some(since)) => up <= since,
                        _ => false,
                    }
            })
            .count()
    }

    /// The node loop's view of replication: each member's matched index, `None`
    /// unless this member leads.
    async fn progress(&self) -> Result<Option<BTreeMap<u64, u64>>, EtcdError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.node
            .send(NodeInput::Progress(tx))
            .map_err(|_| EtcdError::Stopped)?;
        rx.await.map_err(|_| EtcdError::Stopped)
    }

    /// etcd's `mayAddMember`.
    fn may_add(&self, members: &[MemberRecord], learner: bool) -> Result<(), EtcdError> {
        if !self.config.strict_reconfig_check {
            return Ok(());
        }
        if !learner {
            // The new member counts as a member that has not started.
            let (started, all) = voters(members, 0);
            let all = all + 1;
            let restoring = started == 1 && all == 2;
            if !restoring && started < all / 2 + 1 {
                return Err(EtcdError::MemberNotEnoughStarted);
            }
        }
        if !self.all_voters_connected(members) {
            return Err(EtcdError::Unhealthy);
        }
        Ok(())
    }

    /// etcd's `mayRemoveMember`.
    fn may_remove(&self, members: &[MemberRecord], id: u64) -> Result<(), EtcdError> {
        if !self.config.strict_reconfig_check {
            return Ok(());
        }
        if members.iter().any(|m| m.id == id && m.is_learner) {
            return Ok(());
        }
        let (started, all) = voters(members, id);
        if started < all / 2 + 1 {
            return Err(EtcdError::MemberNotEnoughStarted);
        }
        // A member that is down is safe to remove: it is not part of the quorum.
        if id != self.member_id && self.peers.active_since(id).is_none() {
            return Ok(());
        }
        let voters = members.iter().filter(|m| !m.is_learner).count();
        let active = self.connected_voters(members);
        if active.saturating_sub(1) < 1 + voters.saturating_sub(1) / 2 {
            return Err(EtcdError::Unhealthy);
        }
        Ok(())
    }

    /// etcd's `mayPromoteMember`, on the leader: the learner's log is in sync, and the
    /// promoted learner (counted as started) keeps a quorum of started voters.
    async fn may_promote(&self, members: &[MemberRecord], id: u64) -> Result<(), EtcdError> {
        let progress = self.progress().await?.ok_or(EtcdError::NotLeader)?;
        if let Some(learner) = progress.get(&id) {
            let leader = progress.get(&self.member_id).copied().unwrap_or(0);
            if (*learner as f64) < (leader as f64) * READY_PERCENT {
                return Err(EtcdError::LearnerNotReady);
            }
        }
        if !self.config.strict_reconfig_check {
            return Ok(());
        }
        let (started, all) = voters(members, 0);
        if started + 1 < all.div_ceil(2) + 1 {
            return Err(EtcdError::MemberNotEnoughStarted);
        }
        Ok(())
    }

    /// Proposes a membership conf change and waits for its result: the members after
    /// it, or etcd's refusal. Raft drops a conf change while there is no leader or
    /// another one is pending (a new leader has one until it applied its log), so the
    /// proposal is repeated until it commits: a second copy that commits too is refused
    /// by the commit-time check and changes nothing.
    async fn change_membership(
        &self,
        change: MemberChange,
    ) -> Result<Vec<MemberRecord>, EtcdError> {
        let id = change.context.request_id;
        let cc = change.encode();
        let mut rx = self.wait.register(id);
        let deadline = tokio::time::Instant::now() + self.request_timeout;
        let result = loop {
            if self
                .node
                .send(NodeInput::ProposeConfChange(cc.clone()))
                .is_err()
            {
                break Err(EtcdError::Stopped);
            }
            let retry = (tokio::time::Instant::now() + CONF_CHANGE_RETRY).min(deadline);
            match tokio::time::timeout_at(retry, &mut rx).await {
                Ok(Ok(result)) => break result,
                Ok(Err(_)) => break Err(EtcdError::Stopped),
                Err(_) if tokio::time::Instant::now() < deadline => continue,
                Err(_) => {
                    break Err(if self.leader() == 0 {
                        EtcdError::TimeoutDueToLeaderFail
                    } else {
                        EtcdError::Timeout
                    })
                }
            }
        };
        match result? {
            ApplyOutput::Members(members) => Ok(members),
            // Any other kind would be a routing bug.
            _ => Err(EtcdError::Stopped),
        }
    }

    /// If this member leads, hands leadership to the voter whose log is the most up to
    /// date among those this member's stream reaches (as etcd picks a connected peer),
    /// and waits (at most two election timeouts) until it leads; whether it moved. Used
    /// before stopping (SIGTERM) and before removing this member, so writes move to the
    /// new leader at once instead of waiting for an election timeout. With no voter
    /// reachable it returns at once (a leader stopping last does not wait for nobody).
    pub async fn hand_off_leadership(&self) -> bool {
        if self.leader() != self.member_id {
            return false;
        }
        let Ok(Some(progress)) = self.progress().await else {
            return false;
        };
        let heir = self
            .members_now()
            .iter()
            .filter(|m| !m.is_learner && m.id != self.member_id)
            .filter(|m| self.peers.active_since(m.id).is_some())
            .filter_map(|m| progress.get(&m.id).map(|matched| (*matched, m.id)))
            .max();
        let Some((_, heir)) = heir else {
            return false;
        };
        let mut leader = self.raft.leader.subscribe();
        if self.node.send(NodeInput::TransferLeader(heir)).is_err() {
            return false;
        }
        let moved = tokio::time::timeout(2 * self.config.election_timeout, async {
            leader
                .wait_for(|l| *l != self.member_id && *l != 0)
                .await
                .is_ok()
        })
        .await;
        let moved = matches!(moved, Ok(true));
        tracing::info!(heir = %format!("{heir:x}"), moved, "handed leadership over");
        moved
    }

    /// Promotes learner `id`; on a follower, asks the leader to.
    pub async fn promote_member(&self, id: u64) -> Result<Vec<MemberRecord>, EtcdError> {
        let _one_at_a_time = self.membership_lock.lock().await;
        let members = self.members_now();
        match self.may_promote(&members, id).await {
            Err(EtcdError::NotLeader) => {
                drop(_one_at_a_time);
                let (leader, urls) = self.remote_leader()?;
                return self.forwarder.promote(leader, &urls, id).await;
            }
            other => other?,
        }
        self.change_membership(MemberChange {
            id,
            kind: ChangeKind::Promote,
            context: ConfChangeContext {
                request_id: self.ids.next_id(),
                member: Some(MemberRecord {
                    id,
                    ..Default::default()
                }),
                is_promote: true,
            },
        })
        .await
    }
}

#[tonic::async_trait]
impl ClusterApi for EtcdServer {
    async fn member_add(&self, req: pb::MemberAddRequest) -> ApiResult<pb::MemberAddResponse> {
        let urls = peer_urls(&req.peer_ur_ls)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let id = crate::ids::member_id(&urls, &now.to_string());
        let member = MemberRecord {
            id,
            name: String::new(),
            peer_urls: urls.clone(),
            client_urls: Vec::new(),
            is_learner: req.is_learner,
        };
        let _one_at_a_time = self.membership_lock.lock().await;
        let members = self.members_now();
        self.may_add(&members, req.is_learner)?;
        // The checks the change gets when it commits, made early for a clear answer;
        // the peer URL check is made only here, as etcd's API layer sees it.
        if members.iter().any(|m| m.id == id) {
            return Err(EtcdError::MemberExist);
        }
        if peer_urls_taken(members.iter(), &urls) {
            return Err(EtcdError::PeerUrlExist);
        }
        if req.is_learner && members.iter().filter(|m| m.is_learner).count() >= MAX_LEARNERS {
            return Err(EtcdError::TooManyLearners);
        }
        let after = self
            .change_membership(MemberChange {
                id,
                kind: ChangeKind::Add {
                    learner: req.is_learner,
                },
                context: ConfChangeContext {
                    request_id: self.ids.next_id(),
                    member: Some(member.clone()),
                    is_promote: false,
                },
            })
            .await?;
        Ok(pb::MemberAddResponse {
            header: self.member_header(),
            member: Some(to_pb(&member)),
            members: after.iter().map(to_pb).collect(),
        })
    }

    async fn member_remove(
        &self,
        req: pb::MemberRemoveRequest,
    ) -> ApiResult<pb::MemberRemoveResponse> {
        let _one_at_a_time = self.membership_lock.lock().await;
        let members = self.members_now();
        self.may_remove(&members, req.id)?;
        // Better than etcd 3.4 (whose leader applies its own removal and leaves the
        // others to an election timeout): the leader first hands over to a caught-up
        // voter, which then commits the removal. Asked of a follower, the follower asks
        // the leader to.
        if req.id == self.member_id {
            self.hand_off_leadership().await;
        } else if req.id == self.leader() {
            if let Ok((leader, urls)) = self.remote_leader() {
                let moved = self.forwarder.hand_off(leader, &urls).await;
                tracing::info!(leader = %format!("{leader:x}"), moved, "asked the leader to hand over before its removal");
            }
        }
        let after = self
            .change_membership(MemberChange {
                id: req.id,
                kind: ChangeKind::Remove,
                context: ConfChangeContext {
                    request_id: self.ids.next_id(),
                    member: None,
                    is_promote: false,
                },
            })
            .await?;
        Ok(pb::MemberRemoveResponse {
            header: self.member_header(),
            members: after.iter().map(to_pb).collect(),
        })
    }

    async fn member_update(
        &self,
        req: pb::MemberUpdateRequest,
    ) -> ApiResult<pb::MemberUpdateResponse> {
        let urls = peer_urls(&req.peer_ur_ls)?;
        let update = Req::MemberUpdate(MemberUpdate {
            member_id: req.id,
            peer_urls: urls,
        });
        let after = self
            .propose_for(update, |o| match o {
                ApplyOutput::Members(m) => Some(m),
                _ => None,
            })
            .await?;
        Ok(pb::MemberUpdateResponse {
            header: self.member_header(),
            members: after.iter().map(to_pb).collect(),
        })
    }

    async fn member_list(&self, _: pb::MemberListRequest) -> ApiResult<pb::MemberListResponse> {
        Ok(pb::MemberListResponse {
            header: self.member_header(),
            members: self.members_pb(),
        })
    }

    async fn member_promote(
        &self,
        req: pb::MemberPromoteRequest,
    ) -> ApiResult<pb::MemberPromoteResponse> {
        let after = self.promote_member(req.id).await?;
        Ok(pb::MemberPromoteResponse {
            header: self.member_header(),
            members: after.iter().map(to_pb).collect(),
        })
    }
}

/// Answers peers' membership questions for the member (held weakly: the transport
/// must not keep the member alive).
pub struct PeerMembership(pub std::sync::Weak<EtcdServer>);

#[tonic::async_trait]
impl crate::peer::MembershipHandler for PeerMembership {
    fn members(&self) -> MembersResponse {
        let Some(server) = self.0.upgrade() else {
            return MembersResponse::default();
        };
        MembersResponse {
            cluster_id: server.cluster_id,
            members: server.members_now().to_vec(),
            bootstrap: server.bootstrap_members.clone(),
        }
    }

    async fn promote(&self, id: u64) -> Result<Vec<MemberRecord>, EtcdError> {
        match self.0.upgrade() {
            // Only the leader answers: a forwarded call never forwards again.
            Some(server) if server.leader() == server.member_id => server.promote_member(id).await,
            Some(_) => Err(EtcdError::NotLeader),
            None => Err(EtcdError::Stopped),
        }
    }

    async fn hand_off(&self) -> bool {
        match self.0.upgrade() {
            Some(server) => server.hand_off_leadership().await,
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(id: u64, name: &str, learner: bool) -> MemberRecord {
        MemberRecord {
            id,
            name: name.into(),
            is_learner: learner,
            ..Default::default()
        }
    }

    #[test]
    fn peer_urls_are_checked_and_sorted() {
        assert_eq!(
            peer_urls(&["http://b:2".into(), "http://a:1".into()]).unwrap(),
            vec!["http://a:1".to_string(), "http://b:2".to_string()]
        );
        for bad in ["foo", "http://a:1/x", "127.0.0.1:1", "http://a"] {
            assert_eq!(
                peer_urls(&[bad.into()]),
                Err(EtcdError::MemberBadUrls),
                "{bad}"
            );
        }
        assert_eq!(peer_urls(&[]), Err(EtcdError::MemberBadUrls));
    }

    #[test]
    fn voters_count_started_ones_and_skip_learners() {
        let ms = [m(1, "a", false), m(2, "", false), m(3, "c", true)];
        assert_eq!(voters(&ms, 0), (1, 2));
        assert_eq!(voters(&ms, 1), (0, 1));
    }
}
