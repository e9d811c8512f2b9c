//! The apply thread: committed entries, in log order, into the MVCC store and the
//! lessor; each result to the request waiting for it.
//!
//! Runs of plain KV writes are applied in one backend transaction
//! (`KvStore::apply_batch`); a lease grant or revoke ends a run, because what it does
//! depends on the lessor, which the run's puts change (key attachments) and which
//! later puts consult (lease existence). Entries the backend already holds (at or
//! below its consistent index, replayed from the WAL after a restart) are skipped by
//! the store; their waiters, if any, get nothing and time out, which cannot happen
//! for a live request since the index only passes entries once.
//!
//! Guarantees: every member applies the same entries to the same state and gets the
//! same results (no clock is read here; lease deadlines are the leader's business);
//! a backend failure stops the thread and with it the member (its in-memory state may
//! be ahead of the disk); the applied index moves only after the entry's effects are
//! visible to readers.

use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use prost::Message as _;
use skiff_proto::etcdserverpb as pb;
use skiff_proto::skiffpb::{internal_request::Request as Req, InternalRequest, SnapshotPayload};
use skiff_raft::{Entry, EntryType};
use skiff_storage::mvcc::{self as st, Applied, ApplyEntry, AuxOp, AuxTable, KvStore, LeaseCheck};

use crate::convert::{self, Ids};
use crate::inputs::{ApplyInput, NodeInput};
use crate::lessor::Lessor;
use crate::metrics::Metrics;
use crate::wait::{AppliedIndex, Wait};
use skiff_api::EtcdError;

/// What a waiting request gets back.
#[derive(Debug, Clone)]
pub enum ApplyOutput {
    Put(pb::PutResponse),
    DeleteRange(pb::DeleteRangeResponse),
    Txn(pb::TxnResponse),
    Compaction(pb::CompactionResponse),
    LeaseGrant(pb::LeaseGrantResponse),
    LeaseRevoke(pb::LeaseRevokeResponse),
    Alarm(pb::AlarmResponse),
    Noop,
}

pub type ApplyResult = Result<ApplyOutput, EtcdError>;

/// Lease existence as the store asks it, answered by the lessor.
struct LessorCheck<'a>(&'a Lessor);

impl LeaseCheck for LessorCheck<'_> {
    fn lease_exists(&self, id: i64) -> bool {
        self.0.lookup(id).is_some()
    }
}

/// The key a lease is stored under in the backend's lease table.
pub fn lease_key(id: i64) -> Vec<u8> {
    id.to_be_bytes().to_vec()
}

/// Everything the apply thread works on.
pub struct Applier {
    pub store: Arc<KvStore>,
    /// Applies go through the watch hub so watchers see every revision.
    pub watchable: Arc<skiff_storage::watch::WatchableStore>,
    pub lessor: Arc<Mutex<Lessor>>,
    pub wait: Arc<Wait<ApplyResult>>,
    pub applied: Arc<AppliedIndex>,
    pub metrics: Metrics,
    pub cluster_id: u64,
    pub member_id: u64,
    pub snapshot_count: u64,
    pub node: Sender<NodeInput>,
    pub alarms: Arc<Mutex<crate::alarms::Alarms>>,
    /// Membership to put in snapshot payloads.
    pub members: Arc<std::sync::RwLock<Vec<skiff_proto::skiffpb::MemberRecord>>>,
}

/// A decoded entry waiting in the current run.
struct Pending {
    index: u64,
    term: u64,
    id: u64,
    request: st::WriteRequest,
}

impl Applier {
    /// Runs until the node stops or the store fails.
    pub fn run(self, inputs: Receiver<ApplyInput>) -> Result<(), st::Error> {
        let mut last_snapshot = self.store.consistent_index();
        while let Ok(input) = inputs.recv() {
            let (entries, term) = match input {
                ApplyInput::Entries { entries, term } => (entries, term),
                ApplyInput::Snapshot(snap) => {
                    self.install_snapshot(&snap)?;
                    last_snapshot = last_snapshot.max(snap.metadata.index);
                    continue;
                }
                ApplyInput::Stopped => break,
            };
            skiff_failpoints::fail_point!("apply-entries");
            self.apply_entries(&entries, term)?;
            let applied = self.applied.get();
            if applied.saturating_sub(last_snapshot) >= self.snapshot_count {
                // The snapshot lets the WAL be released, so the backend must hold
                // everything up to it durably first.
                self.store.sync()?;
                let payload = SnapshotPayload {
                    members: self.members.read().map(|m| m.clone()).unwrap_or_default(),
                    backend: Bytes::new(),
                };
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
    /// (watchers catch up from it), then leases, alarms and membership are reloaded
    /// from it. A snapshot the backend already covers changes nothing but membership.
    fn install_snapshot(&self, snap: &skiff_raft::Snapshot) -> Result<(), st::Error> {
        let corrupt =
            |why: String| st::Error::Backend(skiff_storage::backend::BackendError::Corrupt(why));
        let index = snap.metadata.index;
        let payload = SnapshotPayload::decode(snap.data.as_ref())
            .map_err(|e| corrupt(format!("snapshot at {index}: undecodable payload: {e}")))?;
        if self.store.consistent_index() < index {
            if payload.backend.is_empty() {
                return Err(corrupt(format!(
                    "snapshot at {index} carries no backend data, and the backend is only at {}",
                    self.store.consistent_index()
                )));
            }
            let summary = self.watchable.restore_from_dump(payload.backend.as_ref())?;
            {
                let mut lessor = self.lessor.lock().unwrap_or_else(|p| p.into_inner());
                for id in lessor.ids() {
                    let _ = lessor.revoke(id);
                }
                crate::member::restore_lessor(&self.store, &mut lessor)
                    .map_err(|e| corrupt(format!("snapshot at {index}: leases: {e}")))?;
            }
            let rows = self
                .store
                .backend()
                .scan(skiff_storage::backend::Table::Alarm)?;
            let alarms = crate::alarms::Alarms::from_keys(rows.iter().map(|(k, _)| k.as_slice()))
                .map_err(|e| corrupt(format!("snapshot at {index}: alarms: {e}")))?;
            *self.alarms.lock().unwrap_or_else(|p| p.into_inner()) = alarms;
            self.applied.advance(summary.consistent_index);
            tracing::info!(
                index,
                term = snap.metadata.term,
                consistent_index = summary.consistent_index,
                revision = self.store.current_revision(),
                bytes = summary.bytes,
                "snapshot installed"
            );
        }
        if !payload.members.is_empty() {
            if let Ok(mut m) = self.members.write() {
                *m = payload.members;
            }
        }
        Ok(())
    }

    fn ids(&self, term: u64) -> Ids {
        Ids {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            term,
        }
    }

    fn apply_entries(&self, entries: &[Entry], term: u64) -> Result<(), st::Error> {
        let mut run: Vec<Pending> = Vec::new();
        for e in entries {
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
            let (id, request) = match decoded {
                Some(InternalRequest {
                    id,
                    request: Some(r),
                }) => (id, r),
                // Leader no-ops, conf changes, unreadable entries: only the index moves.
                _ => {
                    run.push(Pending {
                        index: e.index,
                        term: e.term,
                        id: 0,
                        request: st::WriteRequest::Noop,
                    });
                    continue;
                }
            };
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
                Req::MemberAttributes(a) => {
                    // A member publishing how clients reach it (etcd's publish).
                    if let Ok(mut ms) = self.members.write() {
                        if let Some(m) = ms.iter_mut().find(|m| m.id == a.member_id) {
                            m.name = a.name.clone();
                            m.client_urls = a.client_urls.clone();
                        }
                    }
                    Some(st::WriteRequest::Noop)
                }
                Req::Noop(_) | Req::LeaseCheckpoint(_) => Some(st::WriteRequest::Noop),
                Req::Alarm(a) => {
                    self.flush(&mut run, term)?;
                    self.apply_alarm(e, id, a, term)?;
                    None
                }
                Req::LeaseGrant(g) => {
                    self.flush(&mut run, term)?;
                    self.apply_grant(e, id, g, term)?;
                    None
                }
                Req::LeaseRevoke(r) => {
                    self.flush(&mut run, term)?;
                    self.apply_revoke(e, id, r.id, term)?;
                    None
                }
            };
            if let Some(request) = kv {
                run.push(Pending {
                    index: e.index,
                    term: e.term,
                    id,
                    request,
                });
            }
        }
        self.flush(&mut run, term)
    }

    /// Applies the current run of KV writes in one backend transaction.
    fn flush(&self, run: &mut Vec<Pending>, term: u64) -> Result<(), st::Error> {
        if run.is_empty() {
            return Ok(());
        }
        let batch: Vec<ApplyEntry<'_>> = run
            .iter()
            .map(|p| ApplyEntry {
                index: p.index,
                term: p.term,
                request: &p.request,
                aux: &[],
            })
            .collect();
        let results = {
            let lessor = self.lessor.lock().unwrap_or_else(|p| p.into_inner());
            self.watchable.apply_batch(&batch, &LessorCheck(&lessor))?
        };
        let ids = self.ids(term);
        let last = run.last().map(|p| p.index).unwrap_or(0);
        for (p, applied) in run.drain(..).zip(results) {
            let Applied::Done {
                response, events, ..
            } = applied
            else {
                continue;
            };
            self.track_leases(&events);
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
            if p.id != 0 {
                self.wait.trigger(p.id, result);
            }
        }
        self.advance(last);
        Ok(())
    }

    /// Keeps the lessor's key attachments in step with the store.
    fn track_leases(&self, events: &[st::Event]) {
        if events.is_empty() {
            return;
        }
        let mut lessor = self.lessor.lock().unwrap_or_else(|p| p.into_inner());
        for ev in events {
            let key = Bytes::copy_from_slice(&ev.kv.key);
            match ev.kind {
                st::EventType::Put if ev.kv.lease != 0 => {
                    // The store checked the lease exists before the put.
                    let _ = lessor.attach(ev.kv.lease, key);
                }
                _ => lessor.detach(&key),
            }
        }
    }

    fn advance(&self, index: u64) {
        self.applied.advance(index);
        self.metrics.proposals_applied.set(index as i64);
    }

    /// Applies a single entry with its own transaction and answers its waiter.
    fn apply_one(
        &self,
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
        };
        let applied = {
            let lessor = self.lessor.lock().unwrap_or_else(|p| p.into_inner());
            self.watchable.apply(entry, &LessorCheck(&lessor))?
        };
        let revision = match applied {
            Applied::Done {
                events, revision, ..
            } => {
                self.track_leases(&events);
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

    fn apply_grant(
        &self,
        e: &Entry,
        id: u64,
        g: pb::LeaseGrantRequest,
        term: u64,
    ) -> Result<(), st::Error> {
        if e.index <= self.store.consistent_index() {
            // Replayed: the lease is in the backend and was restored from there.
            self.advance(e.index);
            return Ok(());
        }
        let granted = {
            let mut lessor = self.lessor.lock().unwrap_or_else(|p| p.into_inner());
            lessor.grant(g.id, g.ttl, Instant::now()).map(|l| l.ttl)
        };
        let ids = self.ids(term);
        match granted {
            Ok(ttl) => {
                let aux = [AuxOp {
                    table: AuxTable::Lease,
                    key: lease_key(g.id),
                    value: Some(ttl.to_be_bytes().to_vec()),
                }];
                let revision = self.store.current_revision();
                let resp = pb::LeaseGrantResponse {
                    header: ids.header(st::ResponseHeader::at(revision)),
                    id: g.id,
                    ttl,
                    error: String::new(),
                };
                self.apply_one(
                    e,
                    id,
                    st::WriteRequest::Noop,
                    &aux,
                    Ok(ApplyOutput::LeaseGrant(resp)),
                )?;
            }
            Err(err) => {
                self.apply_one(e, id, st::WriteRequest::Noop, &[], Err(err))?;
            }
        }
        Ok(())
    }

    fn apply_alarm(
        &self,
        e: &Entry,
        id: u64,
        a: pb::AlarmRequest,
        term: u64,
    ) -> Result<(), st::Error> {
        use pb::alarm_request::AlarmAction;
        if e.index <= self.store.consistent_index() {
            // Replayed: the alarm table in the backend already has its effect.
            self.advance(e.index);
            return Ok(());
        }
        let mut aux = Vec::new();
        let alarms = {
            let mut set = self.alarms.lock().unwrap_or_else(|p| p.into_inner());
            match AlarmAction::try_from(a.action) {
                Ok(AlarmAction::Activate) => {
                    if set.activate(a.member_id, a.alarm) {
                        aux.push(AuxOp {
                            table: AuxTable::Alarm,
                            key: crate::alarms::Alarms::key(a.member_id, a.alarm),
                            value: Some(Vec::new()),
                        });
                        tracing::warn!(member = %format!("{:x}", a.member_id), alarm = a.alarm, "alarm raised");
                        vec![pb::AlarmMember {
                            member_id: a.member_id,
                            alarm: a.alarm,
                        }]
                    } else {
                        Vec::new()
                    }
                }
                Ok(AlarmAction::Deactivate) => {
                    if set.deactivate(a.member_id, a.alarm) {
                        aux.push(AuxOp {
                            table: AuxTable::Alarm,
                            key: crate::alarms::Alarms::key(a.member_id, a.alarm),
                            value: None,
                        });
                        vec![pb::AlarmMember {
                            member_id: a.member_id,
                            alarm: a.alarm,
                        }]
                    } else {
                        Vec::new()
                    }
                }
                _ => set.get(a.alarm),
            }
        };
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

    fn apply_revoke(&self, e: &Entry, id: u64, lease: i64, term: u64) -> Result<(), st::Error> {
        if e.index <= self.store.consistent_index() {
            self.advance(e.index);
            return Ok(());
        }
        let keys = {
            let mut lessor = self.lessor.lock().unwrap_or_else(|p| p.into_inner());
            lessor.revoke(lease)
        };
        let keys = match keys {
            Ok(keys) => keys,
            Err(err) => {
                self.apply_one(e, id, st::WriteRequest::Noop, &[], Err(err))?;
                return Ok(());
            }
        };
        // All of the lease's keys go in one revision, as etcd deletes them.
        let request = if keys.is_empty() {
            st::WriteRequest::Noop
        } else {
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
        };
        let aux = [AuxOp {
            table: AuxTable::Lease,
            key: lease_key(lease),
            value: None,
        }];
        let ids = self.ids(term);
        // The header's revision is the store's after the deletes: known only once
        // applied, so the waiter is answered here rather than through apply_one.
        let entry = ApplyEntry {
            index: e.index,
            term: e.term,
            request: &request,
            aux: &aux,
        };
        let applied = {
            let lessor = self.lessor.lock().unwrap_or_else(|p| p.into_inner());
            self.watchable.apply(entry, &LessorCheck(&lessor))?
        };
        if let Applied::Done {
            revision, events, ..
        } = applied
        {
            self.track_leases(&events);
            if id != 0 {
                self.wait.trigger(
                    id,
                    Ok(ApplyOutput::LeaseRevoke(pb::LeaseRevokeResponse {
                        header: ids.header(st::ResponseHeader::at(revision)),
                    })),
                );
            }
        }
        self.advance(e.index);
        Ok(())
    }
}
