//! The apply thread: committed entries, in log order, into the MVCC store and the
//! state the thread owns (the lease table, the member table, the alarms); each result
//! to the request waiting for it.
//!
//! Ownership: the thread is the only writer of that state and holds no lock that a
//! request path takes. What others need to see is handed over, never shared: the
//! member list and the alarms are published as immutable snapshots after each change
//! (`tokio::sync::watch`); the lease clock ([`crate::lease::clock`]) is told about
//! grants and revokes; a question about lease keys arrives as an input and is answered
//! in log order.
//!
//! Runs of plain KV writes are applied in one backend transaction
//! (`KvStore::apply_batch`); a lease grant or revoke ends a run, because what it does
//! depends on the lease table, which the run's puts change (key attachments) and which
//! later puts consult (lease existence). Member attributes and conf changes ride in the
//! run with the backend rows they change (the same transaction as their index).
//! Entries the backend already holds (at or below its consistent index, replayed from
//! the WAL after a restart) are skipped; their waiters, if any, get nothing and time
//! out, which cannot happen for a live request since the index only passes entries once.
//!
//! Guarantees: every member applies the same entries to the same state and gets the
//! same results (no clock decides anything here: one only times backend batches for
//! the slow-apply warning; lease deadlines are the leader's business);
//! a backend failure stops the thread and with it the member (its in-memory state may
//! be ahead of the disk); the applied index moves only after the entry's effects are
//! visible to readers.

use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;

use bytes::Bytes;
use prost::Message as _;
use skiff_api::EtcdError;
use skiff_proto::etcdserverpb as pb;
use skiff_proto::skiffpb::{internal_request::Request as Req, InternalRequest, SnapshotPayload};
use skiff_raft::{ConfChangeV2, Decode, Entry, EntryType};
use skiff_storage::mvcc::{self as st, Applied, ApplyEntry, AuxOp, AuxTable, KvStore};
use tokio::sync::watch;

use crate::alarms::Alarms;
use crate::auth::{AuthChange, AuthStore, TokenProvider};
use crate::convert::{self, Ids};
use crate::inputs::{ApplyInput, ApplyOutput, ApplyResult, NodeInput};
use crate::lease::{lease_key, ClockHandle, LeaseTable};
use crate::membership::{ChangeKind, MemberChange, MemberTable};
use crate::metrics::Metrics;
use crate::session::{Admission, Record, Sessions, Tag};
use crate::wait::{AppliedIndex, Wait};

/// Everything the apply thread works on.
pub struct Applier {
    pub store: Arc<KvStore>,
    /// Applies go through the watch hub so watchers see every revision.
    pub watchable: Arc<skiff_storage::watch::WatchableStore>,
    pub leases: LeaseTable,
    pub lease_clock: ClockHandle,
    pub members: MemberTable,
    pub alarms: Alarms,
    /// Where the alarms are published after each change.
    pub alarms_view: watch::Sender<Arc<Alarms>>,
    pub wait: Arc<Wait<ApplyResult>>,
    pub applied: Arc<AppliedIndex>,
    pub metrics: Metrics,
    pub cluster_id: u64,
    pub member_id: u64,
    pub snapshot_count: u64,
    pub node: Sender<NodeInput>,
    pub min_lease_ttl: i64,
    /// Called once this member's own removal is applied and durable.
    pub on_removed: Box<dyn Fn() + Send>,
    /// The auth store (users, roles, enabled, revision).
    pub auth: AuthStore,
    /// Where the auth store is published after each change (before the change's index
    /// is reported applied, so a linearizable read sees it).
    pub auth_view: watch::Sender<Arc<AuthStore>>,
    /// The member's tokens: assigned by `Authenticate` entries; simple ones dropped by
    /// password changes, user deletions and auth disable.
    pub tokens: Arc<TokenProvider>,
    /// A backend batch that takes longer is logged and counted as a slow apply
    /// (`--experimental-warning-apply-duration`).
    pub warning_apply_duration: std::time::Duration,
    /// Client sessions: which tagged requests were applied (see `crate::session`).
    pub sessions: Sessions,
}

/// The auth store change a request is, or the request back.
pub(crate) fn auth_change(request: Req) -> Result<AuthChange, Req> {
    Ok(match request {
        Req::AuthEnable(_) => AuthChange::Enable,
        Req::AuthDisable(_) => AuthChange::Disable,
        Req::UserAdd(r) => AuthChange::UserAdd(r),
        Req::UserDelete(r) => AuthChange::UserDelete(r),
        Req::UserChangePassword(r) => AuthChange::UserChangePassword(r),
        Req::UserGrantRole(r) => AuthChange::UserGrantRole(r),
        Req::UserRevokeRole(r) => AuthChange::UserRevokeRole(r),
        Req::RoleAdd(r) => AuthChange::RoleAdd(r),
        Req::RoleDelete(r) => AuthChange::RoleDelete(r),
        Req::RoleGrantPermission(r) => AuthChange::RoleGrantPermission(r),
        Req::RoleRevokePermission(r) => AuthChange::RoleRevokePermission(r),
        other => return Err(other),
    })
}

/// What revoking a lease with `keys` writes: all of its keys deleted in one revision,
/// as etcd deletes them (nothing for a lease without keys).
pub(crate) fn revoke_request(keys: &[Bytes]) -> st::WriteRequest {
    if keys.is_empty() {
        return st::WriteRequest::Noop;
    }
    st::WriteRequest::Txn(st::TxnRequest {
        compare: Vec::new(),
        success: keys
            .iter()
            .map(|k| {
                st::RequestOp::DeleteRange(st::DeleteRangeRequest {
                    key: k.to_vec(),
                    range_end: Vec::new(),
                    prev_kv: false,
                })
            })
            .collect(),
        failure: Vec::new(),
    })
}

/// A decoded entry waiting in the current run.
struct Pending {
    index: u64,
    term: u64,
    id: u64,
    request: st::WriteRequest,
    aux: Vec<AuxOp>,
    /// A session's request: its result is stored with the write.
    record: Option<Record>,
    /// The answer, decided without the store (a session's stored result or refusal).
    answer: Option<ApplyResult>,
}

impl Pending {
    fn noop(e: &Entry, id: u64, aux: Vec<AuxOp>) -> Pending {
        Pending {
            index: e.index,
            term: e.term,
            id,
            request: st::WriteRequest::Noop,
            aux,
            record: None,
            answer: None,
        }
    }

    fn session(&self) -> Option<i64> {
        self.record.as_ref().map(Record::session)
    }
}

/// Why the apply thread stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Store(#[from] st::Error),
    #[error("snapshot at index {index}: {reason}")]
    Snapshot { index: u64, reason: String },
}

impl Applier {
    /// Runs until the node stops or the store fails.
    pub fn run(mut self, inputs: Receiver<ApplyInput>) -> Result<(), ApplyError> {
        let mut last_snapshot = self.store.consistent_index();
        while let Ok(input) = inputs.recv() {
            let (entries, term) = match input {
                ApplyInput::Entries { entries, term } => (entries, term),
                ApplyInput::Snapshot(snap) => {
                    self.install_snapshot(&snap)?;
                    last_snapshot = last_snapshot.max(snap.metadata.index);
                    continue;
                }
                ApplyInput::LeaseKeys { id, reply } => {
                    let _ = reply.send(self.leases.keys(id));
                    continue;
                }
                ApplyInput::Stopped => break,
            };
            skiff_failpoints::fail_point!("apply-entries");
            self.apply_entries(&entries, term)?;
            let applied = self.applied.get();
            if applied.saturating_sub(last_snapshot) >= self.snapshot_count {
                // The snapshot lets the WAL be released, so the backend must hold
                // everything up to it durably first: the snapshot-save thread waits for
                // that (`node::io::SnapshotWriter`), so applies never wait for it.
                // Membership, leases and alarms live in the backend; the payload
                // carries a backend dump only when it is sent to a follower.
                let payload = SnapshotPayload::default();
                let _ = self.node.send(NodeInput::Snapshot {
                    index: applied,
                    payload: Bytes::from(payload.encode_to_vec()),
                });
                last_snapshot = applied;
            }
        }
        self.wait.fail_all();
        Ok(())
    }

    /// Loads a snapshot received from the leader: its backend dump replaces the store
    /// (watchers catch up from it), then the lease table, the alarms and the member
    /// table are reloaded from the new backend.
    fn install_snapshot(&mut self, snap: &skiff_raft::Snapshot) -> Result<(), ApplyError> {
        let index = snap.metadata.index;
        let bad = |reason: String| ApplyError::Snapshot { index, reason };
        let payload = SnapshotPayload::decode(snap.data.as_ref())
            .map_err(|e| bad(format!("undecodable payload: {e}")))?;
        if self.store.consistent_index() >= index {
            return Ok(());
        }
        if payload.backend.is_empty() {
            return Err(bad(format!(
                "carries no backend data, and the backend is only at {}",
                self.store.consistent_index()
            )));
        }
        let summary = self.watchable.restore_from_dump(payload.backend.as_ref())?;
        skiff_failpoints::fail_point!("snapshot-install");
        self.leases = LeaseTable::restore(&self.store, self.min_lease_ttl)
            .map_err(|e| bad(format!("leases: {e}")))?;
        self.lease_clock.reset(self.leases.granted());
        let rows = self
            .store
            .backend()
            .scan(skiff_storage::backend::Table::Alarm)
            .map_err(st::Error::from)?;
        self.alarms = Alarms::from_keys(rows.iter().map(|(k, _)| k.as_slice()))
            .map_err(|e| bad(format!("alarms: {e}")))?;
        self.alarms_view.send_replace(Arc::new(self.alarms.clone()));
        self.members
            .reload(&self.store)
            .map_err(|e| bad(format!("members: {e}")))?;
        let rows = self
            .store
            .backend()
            .scan(skiff_storage::backend::Table::Auth)
            .map_err(st::Error::from)?;
        self.auth = AuthStore::from_rows(&rows).map_err(|e| bad(format!("auth: {e}")))?;
        self.auth_view.send_replace(Arc::new(self.auth.clone()));
        self.sessions = Sessions::load(&self.store).map_err(|e| bad(format!("sessions: {e}")))?;
        self.applied.advance(summary.consistent_index);
        tracing::info!(
            index,
            term = snap.metadata.term,
            consistent_index = summary.consistent_index,
            revision = self.store.current_revision(),
            bytes = summary.bytes,
            "snapshot installed"
        );
        Ok(())
    }

    fn ids(&self, term: u64) -> Ids {
        Ids {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            term,
        }
    }

    /// Whether `e` was applied before a restart (the backend already holds it).
    fn replayed(&self, e: &Entry) -> bool {
        e.index <= self.store.consistent_index()
    }

    fn apply_entries(&mut self, entries: &[Entry], term: u64) -> Result<(), st::Error> {
        let mut run: Vec<Pending> = Vec::new();
        for e in entries {
            if e.entry_type == EntryType::ConfChange {
                // Raft applied the change when it committed (node loop), if the same
                // check passed there; the member table records it with the entry's
                // index and the proposer gets the member list or the refusal.
                self.flush(&mut run, term)?;
                self.apply_conf_change(e)?;
                continue;
            }
            let decoded = if e.entry_type == EntryType::Normal && !e.data.is_empty() {
                match InternalRequest::decode(e.data.as_ref()) {
                    Ok(r) => Some(r),
                    Err(err) => {
                        // Every member sees the same bytes, so every member skips them.
                        tracing::error!(index = e.index, error = %err, "undecodable entry");
                        None
                    }
                }
            } else {
                None
            };
            let (id, request, auth_revision, tag, open_session) = match decoded {
                Some(InternalRequest {
                    id,
                    request: Some(r),
                    auth_revision,
                    session_id,
                    session_seq,
                    session_acked,
                    open_session,
                    ..
                }) => {
                    let tag = (session_id != 0).then_some(Tag {
                        id: session_id,
                        seq: session_seq,
                        acked: session_acked,
                    });
                    (id, r, auth_revision, tag, open_session)
                }
                // Leader no-ops, unreadable entries: only the index moves.
                _ => {
                    run.push(Pending::noop(e, 0, Vec::new()));
                    continue;
                }
            };
            // Checked against an auth store that has changed since: refused (etcd's
            // ErrAuthOldRevision), so no permission revoked meanwhile is bypassed.
            if auth_revision != 0 && self.auth.enabled && auth_revision < self.auth.revision {
                self.flush(&mut run, term)?;
                self.apply_one(
                    e,
                    id,
                    st::WriteRequest::Noop,
                    &[],
                    Err(EtcdError::AuthOldRevision),
                )?;
                continue;
            }
            let request = match auth_change(request) {
                Ok(change) => {
                    self.flush(&mut run, term)?;
                    self.apply_auth(e, id, &change, term)?;
                    continue;
                }
                Err(request) => request,
            };
            if let Some(refused) = self.alarms.refusal(&request) {
                // etcd's corrupt and capped appliers: with CORRUPT raised no request
                // changes the data; with NOSPACE nothing that may grow the database
                // applies (the same on every member: alarms are in the log).
                self.flush(&mut run, term)?;
                self.apply_one(e, id, st::WriteRequest::Noop, &[], Err(refused))?;
                continue;
            }
            if let Some(tag) = tag {
                if let Req::LeaseGrant(g) = request {
                    self.flush(&mut run, term)?;
                    self.apply_tagged_grant(e, id, g, tag, term)?;
                    continue;
                }
                let write = match request {
                    Req::Put(r) => Some(Ok(st::WriteRequest::Put(convert::put_from_pb(r)))),
                    Req::DeleteRange(r) => Some(Ok(st::WriteRequest::DeleteRange(
                        convert::delete_from_pb(r),
                    ))),
                    Req::Txn(t) => Some(convert::txn_from_pb(t).map(st::WriteRequest::Txn)),
                    _ => None,
                };
                if let Some(write) = write {
                    self.push_tagged(&mut run, e, id, write, tag, term)?;
                    continue;
                }
                // Only KV writes are tagged (`EtcdServer::propose`); anything else was
                // consumed by the match above: an unroutable entry.
                tracing::error!(
                    index = e.index,
                    "a session tag on a request that is not a KV write"
                );
                run.push(Pending::noop(e, id, Vec::new()));
                continue;
            }
            let kv = match request {
                Req::Put(r) => Some(st::WriteRequest::Put(convert::put_from_pb(r))),
                Req::DeleteRange(r) => {
                    Some(st::WriteRequest::DeleteRange(convert::delete_from_pb(r)))
                }
                Req::Txn(t) => match convert::txn_from_pb(t) {
                    Ok(t) => Some(st::WriteRequest::Txn(t)),
                    Err(err) => {
                        self.flush(&mut run, term)?;
                        self.apply_one(e, id, st::WriteRequest::Noop, &[], Err(err))?;
                        None
                    }
                },
                Req::Compaction(r) => {
                    Some(st::WriteRequest::Compaction(convert::compaction_from_pb(r)))
                }
                Req::MemberUpdate(u) => {
                    self.flush(&mut run, term)?;
                    self.apply_member_update(e, id, u)?;
                    None
                }
                Req::MemberAttributes(a) => {
                    // A member publishing how clients reach it (etcd's publish).
                    let aux = if self.replayed(e) {
                        Vec::new()
                    } else {
                        self.members.apply_attributes(&a)
                    };
                    run.push(Pending::noop(e, id, aux));
                    None
                }
                Req::LeaseCheckpoint(cp) => {
                    // The deadlines a new leader resumes from (lease clock).
                    if !self.replayed(e) {
                        for c in cp.checkpoints.iter().filter(|c| self.leases.exists(c.id)) {
                            self.lease_clock.checkpointed(c.id, c.remaining_ttl);
                        }
                    }
                    Some(st::WriteRequest::Noop)
                }
                Req::Noop(_) => Some(st::WriteRequest::Noop),
                Req::Alarm(a) => {
                    self.flush(&mut run, term)?;
                    self.apply_alarm(e, id, a, term)?;
                    None
                }
                Req::LeaseGrant(g) => {
                    self.flush(&mut run, term)?;
                    self.apply_grant(e, id, g, open_session, None, term)?;
                    None
                }
                Req::LeaseRevoke(r) => {
                    self.flush(&mut run, term)?;
                    self.apply_revoke(e, id, r.id, term)?;
                    None
                }
                Req::Authenticate(a) => {
                    self.flush(&mut run, term)?;
                    self.apply_authenticate(e, id, a, term)?;
                    None
                }
                // Auth changes were taken above.
                other => {
                    tracing::error!(index = e.index, request = ?other, "unroutable entry");
                    run.push(Pending::noop(e, id, Vec::new()));
                    None
                }
            };
            if let Some(request) = kv {
                run.push(Pending {
                    index: e.index,
                    term: e.term,
                    id,
                    request,
                    aux: Vec::new(),
                    record: None,
                    answer: None,
                });
            }
        }
        self.flush(&mut run, term)
    }

    /// Applies the current run of KV writes in one backend transaction.
    fn flush(&mut self, run: &mut Vec<Pending>, term: u64) -> Result<(), st::Error> {
        if run.is_empty() {
            return Ok(());
        }
        let batch: Vec<ApplyEntry<'_>> = run
            .iter()
            .map(|p| ApplyEntry {
                index: p.index,
                term: p.term,
                request: &p.request,
                aux: &p.aux,
                record: p.record.as_ref().map(|r| r as &dyn st::Recorder),
            })
            .collect();
        let started = std::time::Instant::now();
        let results = self.watchable.apply_batch(&batch, &self.leases)?;
        self.warn_if_slow(started.elapsed(), &batch);
        drop(batch);
        let ids = self.ids(term);
        let last = run.last().map(|p| p.index).unwrap_or(0);
        for (p, applied) in run.drain(..).zip(results) {
            let Applied::Done {
                response, events, ..
            } = applied
            else {
                continue;
            };
            self.leases.track(&events);
            if let Some(record) = &p.record {
                self.sessions.recorded(record);
            }
            let result = match response {
                Ok(resp) => Ok(match resp {
                    st::WriteResponse::Put(r) => ApplyOutput::Put(convert::put_to_pb(r, &ids)),
                    st::WriteResponse::DeleteRange(r) => {
                        ApplyOutput::DeleteRange(convert::delete_to_pb(r, &ids))
                    }
                    st::WriteResponse::Txn(r) => ApplyOutput::Txn(convert::txn_to_pb(r, &ids)),
                    st::WriteResponse::Compaction(r) => {
                        ApplyOutput::Compaction(pb::CompactionResponse {
                            header: ids.header(r.header),
                        })
                    }
                    st::WriteResponse::Noop(_) => ApplyOutput::Noop,
                }),
                Err(e) => Err(convert::store_error(&e)),
            };
            let result = p.answer.unwrap_or(result);
            if p.id != 0 {
                self.wait.trigger(p.id, result);
            }
        }
        self.advance(last);
        Ok(())
    }

    /// A session's KV write into the run: applied with its result recorded, or
    /// answered without applying (`crate::session`). A write of the same session already
    /// in the run is flushed first, so a retry in the same batch as its original finds
    /// the original's stored result.
    fn push_tagged(
        &mut self,
        run: &mut Vec<Pending>,
        e: &Entry,
        id: u64,
        write: Result<st::WriteRequest, EtcdError>,
        tag: Tag,
        term: u64,
    ) -> Result<(), st::Error> {
        if run.iter().any(|p| p.session() == Some(tag.id)) {
            self.flush(run, term)?;
        }
        let mut pending = Pending::noop(e, id, Vec::new());
        match self.sessions.admit(tag, &self.store, &self.ids(term)) {
            Admission::Answer(answer) => pending.answer = Some(answer),
            Admission::Apply(record) => match write {
                Ok(request) => {
                    pending.request = request;
                    pending.record = Some(record);
                }
                // Refused before the store (a malformed txn): nothing to record.
                Err(err) => pending.answer = Some(Err(err)),
            },
        }
        run.push(pending);
        Ok(())
    }

    /// A session's lease grant: granted once, a repeat answered with the same lease.
    fn apply_tagged_grant(
        &mut self,
        e: &Entry,
        id: u64,
        g: pb::LeaseGrantRequest,
        tag: Tag,
        term: u64,
    ) -> Result<(), st::Error> {
        if self.replayed(e) {
            self.advance(e.index);
            return Ok(());
        }
        match self.sessions.admit(tag, &self.store, &self.ids(term)) {
            Admission::Answer(answer) => {
                self.apply_one(e, id, st::WriteRequest::Noop, &[], answer)?;
            }
            Admission::Apply(record) => {
                self.apply_grant(e, id, g, false, Some(&record), term)?;
            }
        }
        Ok(())
    }

    fn advance(&self, index: u64) {
        self.applied.advance(index);
        self.metrics.proposals_applied.set(index as i64);
    }

    /// Applies a single entry with its own transaction and answers its waiter; the
    /// revision it produced, or `None` if the backend already held it.
    /// etcd's slow-apply warning, per backend batch (Skiff applies a run of entries in
    /// one transaction, so the batch is what takes long): logged with the entries'
    /// indexes and counted in `etcd_server_slow_apply_total`. Only a log line and a
    /// counter: what is applied never depends on the clock.
    fn warn_if_slow(&self, took: std::time::Duration, batch: &[ApplyEntry<'_>]) {
        if took <= self.warning_apply_duration {
            return;
        }
        self.metrics.slow_applies.inc();
        tracing::warn!(
            took = ?took,
            expected_duration = ?self.warning_apply_duration,
            entries = batch.len(),
            first_index = batch.first().map(|e| e.index).unwrap_or(0),
            last_index = batch.last().map(|e| e.index).unwrap_or(0),
            "apply request took too long"
        );
    }

    fn apply_one(
        &mut self,
        e: &Entry,
        id: u64,
        request: st::WriteRequest,
        aux: &[AuxOp],
        result: ApplyResult,
    ) -> Result<Option<i64>, st::Error> {
        let entry = ApplyEntry {
            index: e.index,
            term: e.term,
            request: &request,
            aux,
            record: None,
        };
        let revision = match self.watchable.apply(entry, &self.leases)? {
            Applied::Done {
                events, revision, ..
            } => {
                self.leases.track(&events);
                Some(revision)
            }
            Applied::Skipped => None,
        };
        if id != 0 && revision.is_some() {
            self.wait.trigger(id, result);
        }
        self.advance(e.index);
        Ok(revision)
    }

    /// A committed conf change into the member table; the proposer's answer. This
    /// member's own removal is reported once it is durable.
    fn apply_conf_change(&mut self, e: &Entry) -> Result<(), st::Error> {
        let cc = match ConfChangeV2::decode(&e.data) {
            Ok(cc) => cc,
            Err(err) => {
                tracing::error!(index = e.index, error = %err, "undecodable conf change");
                self.apply_one(e, 0, st::WriteRequest::Noop, &[], Ok(ApplyOutput::Noop))?;
                return Ok(());
            }
        };
        if self.replayed(e) {
            self.advance(e.index);
            return Ok(());
        }
        let change = MemberChange::decode(&cc);
        let (aux, outcome) = self.members.apply_conf_change(&cc);
        let result = outcome.map(|()| ApplyOutput::Members(self.members.list()));
        let id = change.as_ref().map_or(0, |c| c.context.request_id);
        let applied = self.apply_one(e, id, st::WriteRequest::Noop, &aux, result.clone())?;
        let removed_self = result.is_ok()
            && change
                .as_ref()
                .is_some_and(|c| c.kind == ChangeKind::Remove && c.id == self.member_id);
        if removed_self && applied.is_some() {
            tracing::warn!(index = e.index, "this member was removed from the cluster");
            (self.on_removed)();
        }
        Ok(())
    }

    /// A member's new peer URLs into the member table; the transport follows them.
    fn apply_member_update(
        &mut self,
        e: &Entry,
        id: u64,
        u: skiff_proto::skiffpb::MemberUpdate,
    ) -> Result<(), st::Error> {
        if self.replayed(e) {
            self.advance(e.index);
            return Ok(());
        }
        let (aux, result) = match self.members.apply_update(&u) {
            Ok(aux) => (aux, Ok(ApplyOutput::Members(self.members.list()))),
            Err(err) => (Vec::new(), Err(err)),
        };
        if result.is_ok() && u.member_id != self.member_id {
            let _ = self.node.send(NodeInput::PeerUrls {
                id: u.member_id,
                urls: u.peer_urls.clone(),
            });
        }
        self.apply_one(e, id, st::WriteRequest::Noop, &aux, result)?;
        Ok(())
    }

    fn apply_grant(
        &mut self,
        e: &Entry,
        id: u64,
        g: pb::LeaseGrantRequest,
        open_session: bool,
        record: Option<&Record>,
        term: u64,
    ) -> Result<(), st::Error> {
        if self.replayed(e) {
            // The lease is in the backend and was restored from there.
            self.advance(e.index);
            return Ok(());
        }
        match self.leases.grant(g.id, g.ttl) {
            Ok(ttl) => {
                let mut aux = vec![AuxOp {
                    table: AuxTable::Lease,
                    key: lease_key(g.id),
                    value: Some(ttl.to_be_bytes().to_vec()),
                }];
                if open_session {
                    aux.extend(Sessions::open_rows(g.id));
                }
                let resp = pb::LeaseGrantResponse {
                    header: self
                        .ids(term)
                        .header(st::ResponseHeader::at(self.store.current_revision())),
                    id: g.id,
                    ttl,
                    error: String::new(),
                };
                if let Some(record) = record {
                    aux.extend(record.grant_rows(Ok(&resp)));
                }
                // The clock hears of the lease before the client does, so a keep-alive
                // sent right after the grant finds it.
                self.lease_clock.granted(g.id, ttl);
                let applied = self.apply_one(
                    e,
                    id,
                    st::WriteRequest::Noop,
                    &aux,
                    Ok(ApplyOutput::LeaseGrant(resp)),
                )?;
                if open_session && applied.is_some() {
                    self.sessions.opened(g.id);
                }
                if let (Some(record), Some(_)) = (record, applied) {
                    self.sessions.recorded(record);
                }
            }
            Err(err) => {
                let aux = record.map_or_else(Vec::new, |r| r.grant_rows(Err(err)));
                let applied = self.apply_one(e, id, st::WriteRequest::Noop, &aux, Err(err))?;
                if let (Some(record), Some(_)) = (record, applied) {
                    self.sessions.recorded(record);
                }
            }
        }
        Ok(())
    }

    /// Applies an auth store change: its rows in the entry's transaction, the new store
    /// published and tokens invalidated before the waiter hears of it.
    fn apply_auth(
        &mut self,
        e: &Entry,
        id: u64,
        change: &AuthChange,
        term: u64,
    ) -> Result<(), st::Error> {
        if self.replayed(e) {
            // The backend holds its effect; the store was loaded from there.
            self.advance(e.index);
            return Ok(());
        }
        match self.auth.apply(change) {
            Ok((rows, invalidate)) => {
                if !rows.is_empty() {
                    self.auth_view.send_replace(Arc::new(self.auth.clone()));
                }
                if invalidate.all {
                    self.tokens.clear();
                } else if let Some(user) = &invalidate.user {
                    self.tokens.invalidate_user(user);
                }
                let header = self
                    .ids(term)
                    .header(st::ResponseHeader::at(self.store.current_revision()));
                self.apply_one(
                    e,
                    id,
                    st::WriteRequest::Noop,
                    &rows,
                    Ok(ApplyOutput::Auth(header)),
                )?;
            }
            Err(err) => {
                self.apply_one(e, id, st::WriteRequest::Noop, &[], Err(err))?;
            }
        }
        Ok(())
    }

    /// Assigns the token of a password check the proposer made (etcd's simple token:
    /// the random part and the entry's index), on every member alike; a `jwt` token
    /// (signed for the store's revision now) only where someone waits for it, as no
    /// other member keeps it.
    fn apply_authenticate(
        &mut self,
        e: &Entry,
        id: u64,
        a: skiff_proto::skiffpb::InternalAuthenticate,
        term: u64,
    ) -> Result<(), st::Error> {
        if self.replayed(e) {
            // Tokens do not survive a restart (etcd's do not either).
            self.advance(e.index);
            return Ok(());
        }
        let result = if !self.auth.enabled {
            Err(EtcdError::AuthNotEnabled)
        } else if !self.auth.users.contains_key(&a.name) {
            Err(EtcdError::AuthFailed)
        } else if matches!(*self.tokens, TokenProvider::Jwt(_)) && !self.wait.is_waiting(id) {
            Ok(ApplyOutput::Noop)
        } else {
            self.tokens
                .assign(&a.simple_token, e.index, a.name, self.auth.revision)
                .map(|token| {
                    ApplyOutput::Authenticate(pb::AuthenticateResponse {
                        header: self
                            .ids(term)
                            .header(st::ResponseHeader::at(self.store.current_revision())),
                        token,
                    })
                })
        };
        self.apply_one(e, id, st::WriteRequest::Noop, &[], result)?;
        Ok(())
    }

    fn apply_alarm(
        &mut self,
        e: &Entry,
        id: u64,
        a: pb::AlarmRequest,
        term: u64,
    ) -> Result<(), st::Error> {
        use pb::alarm_request::AlarmAction;
        if self.replayed(e) {
            // The alarm table in the backend already has its effect.
            self.advance(e.index);
            return Ok(());
        }
        let mut aux = Vec::new();
        let changed = |raised: bool| AuxOp {
            table: AuxTable::Alarm,
            key: Alarms::key(a.member_id, a.alarm),
            value: raised.then(Vec::new),
        };
        let member = pb::AlarmMember {
            member_id: a.member_id,
            alarm: a.alarm,
        };
        let alarms = match AlarmAction::try_from(a.action) {
            Ok(AlarmAction::Activate) if self.alarms.activate(a.member_id, a.alarm) => {
                aux.push(changed(true));
                tracing::warn!(member = %format!("{:x}", a.member_id), alarm = a.alarm, "alarm raised");
                vec![member]
            }
            Ok(AlarmAction::Deactivate) if self.alarms.deactivate(a.member_id, a.alarm) => {
                aux.push(changed(false));
                vec![member]
            }
            Ok(AlarmAction::Activate | AlarmAction::Deactivate) => Vec::new(),
            _ => self.alarms.get(a.alarm),
        };
        if !aux.is_empty() {
            self.alarms_view.send_replace(Arc::new(self.alarms.clone()));
        }
        let resp = pb::AlarmResponse {
            header: self
                .ids(term)
                .header(st::ResponseHeader::at(self.store.current_revision())),
            alarms,
        };
        self.apply_one(
            e,
            id,
            st::WriteRequest::Noop,
            &aux,
            Ok(ApplyOutput::Alarm(resp)),
        )?;
        Ok(())
    }

    fn apply_revoke(&mut self, e: &Entry, id: u64, lease: i64, term: u64) -> Result<(), st::Error> {
        if self.replayed(e) {
            self.advance(e.index);
            return Ok(());
        }
        let keys = match self.leases.revoke(lease) {
            Ok(keys) => keys,
            Err(err) => {
                self.apply_one(e, id, st::WriteRequest::Noop, &[], Err(err))?;
                return Ok(());
            }
        };
        self.lease_clock.revoked(lease);
        let request = revoke_request(&keys);
        // A lease that is a client session takes the session with it.
        let mut aux = vec![AuxOp {
            table: AuxTable::Lease,
            key: lease_key(lease),
            value: None,
        }];
        aux.extend(self.sessions.close_rows(lease));
        // The header's revision is the store's after the deletes: known only once
        // applied, so the waiter is answered here rather than through apply_one.
        let entry = ApplyEntry {
            index: e.index,
            term: e.term,
            request: &request,
            aux: &aux,
            record: None,
        };
        if let Applied::Done {
            revision, events, ..
        } = self.watchable.apply(entry, &self.leases)?
        {
            self.leases.track(&events);
            self.sessions.closed(lease);
            if id != 0 {
                let header = self.ids(term).header(st::ResponseHeader::at(revision));
                self.wait.trigger(
                    id,
                    Ok(ApplyOutput::LeaseRevoke(pb::LeaseRevokeResponse { header })),
                );
            }
        }
        self.advance(e.index);
        Ok(())
    }
}
