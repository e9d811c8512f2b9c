//! Replaying the entries of an etcd 3.4 member's WAL that its `db` does not hold yet
//! (committed after the db's consistent index: etcd commits its backend in batches, so a
//! member that stopped, or was killed, between two batches has them only in its WAL)
//! into the backend `etcd_import` built from that db, with etcd's apply semantics.
//!
//! Each entry is first [`plan`]ned, all of them before anything is written:
//! - **applied**: put, delete range, txn and compaction (the MVCC store applies them
//!   with etcd's revision rules), lease grant and revoke (a revoke deletes the lease's
//!   keys in one revision), alarms, and every auth change (etcd 3.4 proposes
//!   passwords in clear and hashes them when it applies; so does the replay, with
//!   `--bcrypt-cost`). etcd 3.4 checks permissions when it applies a KV write (its
//!   `authApplierV3`), so the replay does too, with 3.4's rules (write on a put's key
//!   and on a delete's range, read for `prev_kv`, read on a txn's compares and its
//!   top-level ops' keys, write on a revoked lease's keys, root for auth changes; a
//!   request checked at an older auth revision is refused); a refused request changes
//!   nothing, as in etcd. Raised alarms refuse what they refuse in etcd.
//! - **skipped knowingly** (they change nothing etcd's db would hold): the leader's
//!   empty entries, conf changes and etcd's v2 member-attribute and cluster-version
//!   requests (Skiff's members come from its flags, as on a restored data dir), reads
//!   (range, auth status/get/list), authentications (tokens do not survive a restart),
//!   lease checkpoints (etcd 3.4 keeps them in memory only) and v2 `SYNC`s.
//! - **refused**: anything else (a v2 write, a request this import does not know): the
//!   import stops with an error naming the entry's index, WAL file and offset.
//!
//! Guarantees: entries are applied in index order, each at most once; nothing is
//! written unless every entry was planned; afterwards the backend's consistent index
//! is set back to 0 (Skiff's own log starts afresh) and the import mark records the
//! last etcd index applied.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use prost::Message as _;
use skiff_api::EtcdError;
use skiff_proto::etcdserverpb::{
    self as pb, request_op::Request as Op, InternalRaftRequest, Request as V2Request, RequestHeader,
};
use skiff_proto::raftpb::EntryType;
use skiff_proto::skiffpb::internal_request::Request as Req;
use skiff_storage::backend::Table;
use skiff_storage::bbolt::etcd;
use skiff_storage::mvcc::{self as st, Applied, ApplyEntry, AuxOp, AuxTable, KvStore, StoreConfig};

use crate::alarms::Alarms;
use crate::apply::{auth_change, revoke_request};
use crate::auth::{AuthChange, AuthStore, Need};
use crate::convert;
use crate::lease::{lease_key, LeaseTable};

/// One entry of etcd's WAL, with where it was read.
#[derive(Debug, Clone)]
pub struct WalEntry {
    pub index: u64,
    pub term: u64,
    pub entry_type: i32,
    pub data: Vec<u8>,
    pub file: PathBuf,
    pub offset: u64,
}

/// What one entry does.
#[derive(Debug)]
pub enum Step {
    /// Changes nothing etcd's db holds (why).
    Skip(&'static str),
    /// A request to apply, with the header etcd checks its permissions against.
    Apply(Req, Option<RequestHeader>),
}

/// A planned entry.
#[derive(Debug)]
pub struct Planned {
    pub index: u64,
    pub term: u64,
    pub step: Step,
}

/// How entries are planned and applied.
#[derive(Debug, Clone, Copy)]
pub struct ReplayOptions {
    /// `--bcrypt-cost`, for passwords etcd 3.4 logged in clear.
    pub bcrypt_cost: u32,
    /// The member's minimum lease TTL.
    pub min_lease_ttl: i64,
}

/// What a replay did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplaySummary {
    pub applied: u64,
    /// Requests that etcd would have refused too (permissions, alarms, errors).
    pub refused: u64,
    pub skipped: u64,
    pub last_index: u64,
    pub revision: i64,
}

/// Plans every entry (see the module docs); the first one that cannot be applied is an
/// error naming it.
pub fn plan(entries: &[WalEntry], opts: ReplayOptions) -> anyhow::Result<Vec<Planned>> {
    entries
        .iter()
        .map(|e| {
            let step = plan_one(e, opts).map_err(|reason| {
                anyhow::anyhow!(
                    "{}: entry {} (term {}) at byte {}: {reason}; Skiff cannot import this \
                     etcd member's WAL. Migrate with `etcdctl snapshot save` and \
                     `etcdctl snapshot restore`",
                    e.file.display(),
                    e.index,
                    e.term,
                    e.offset
                )
            })?;
            Ok(Planned {
                index: e.index,
                term: e.term,
                step,
            })
        })
        .collect()
}

fn plan_one(e: &WalEntry, opts: ReplayOptions) -> Result<Step, String> {
    if e.entry_type != EntryType::EntryNormal as i32 {
        return Ok(Step::Skip("conf change"));
    }
    if e.data.is_empty() {
        return Ok(Step::Skip("leader's empty entry"));
    }
    // etcd's own order: an InternalRaftRequest, else a v2 Request.
    match InternalRaftRequest::decode(e.data.as_slice()) {
        Ok(r) => plan_v3(r, opts),
        Err(v3_err) => match V2Request::decode(e.data.as_slice()) {
            Ok(r) => plan_v2(&r),
            Err(v2_err) => Err(format!(
                "neither an InternalRaftRequest ({v3_err}) nor a v2 Request ({v2_err})"
            )),
        },
    }
}

fn plan_v2(r: &V2Request) -> Result<Step, String> {
    let member_attributes = r.path.starts_with("/0/members/") && r.path.ends_with("/attributes");
    match r.method.as_str() {
        "PUT" if member_attributes => Ok(Step::Skip("v2 member attributes")),
        "PUT" if r.path == "/0/version" => Ok(Step::Skip("v2 cluster version")),
        "SYNC" => Ok(Step::Skip("v2 SYNC")),
        "GET" | "QGET" | "HEAD" => Ok(Step::Skip("v2 read")),
        m => Err(format!("a v2 {m} of {:?} (Skiff has no v2 store)", r.path)),
    }
}

/// A bcrypt hash of `password`, as etcd 3.4 makes one when it applies a user add or
/// password change.
fn hash(password: &str, cost: u32) -> Result<String, String> {
    bcrypt::hash(password, cost).map_err(|e| format!("bcrypt: {e}"))
}

fn plan_v3(r: InternalRaftRequest, opts: ReplayOptions) -> Result<Step, String> {
    let header = r.header;
    let apply = |req: Req| Ok(Step::Apply(req, header.clone()));
    if let Some(v2) = r.v2 {
        return plan_v2(&v2);
    }
    if let Some(x) = r.put {
        return apply(Req::Put(x));
    }
    if let Some(x) = r.delete_range {
        return apply(Req::DeleteRange(x));
    }
    if let Some(x) = r.txn {
        return apply(Req::Txn(x));
    }
    if let Some(x) = r.compaction {
        return apply(Req::Compaction(x));
    }
    if let Some(x) = r.lease_grant {
        return apply(Req::LeaseGrant(x));
    }
    if let Some(x) = r.lease_revoke {
        return apply(Req::LeaseRevoke(x));
    }
    if let Some(x) = r.alarm {
        return apply(Req::Alarm(x));
    }
    if r.auth_enable.is_some() {
        return apply(Req::AuthEnable(Default::default()));
    }
    if r.auth_disable.is_some() {
        return apply(Req::AuthDisable(Default::default()));
    }
    if let Some(mut x) = r.auth_user_add {
        let no_password = x.options.as_ref().is_some_and(|o| o.no_password);
        if !no_password && x.hashed_password.is_empty() {
            x.hashed_password = hash(&x.password, opts.bcrypt_cost)?;
        }
        x.password.clear();
        return apply(Req::UserAdd(x));
    }
    if let Some(mut x) = r.auth_user_change_password {
        if x.hashed_password.is_empty() {
            x.hashed_password = hash(&x.password, opts.bcrypt_cost)?;
        }
        x.password.clear();
        return apply(Req::UserChangePassword(x));
    }
    if let Some(x) = r.auth_user_delete {
        return apply(Req::UserDelete(x));
    }
    if let Some(x) = r.auth_user_grant_role {
        return apply(Req::UserGrantRole(x));
    }
    if let Some(x) = r.auth_user_revoke_role {
        return apply(Req::UserRevokeRole(x));
    }
    if let Some(x) = r.auth_role_add {
        return apply(Req::RoleAdd(x));
    }
    if let Some(x) = r.auth_role_delete {
        return apply(Req::RoleDelete(x));
    }
    if let Some(x) = r.auth_role_grant_permission {
        return apply(Req::RoleGrantPermission(x));
    }
    if let Some(x) = r.auth_role_revoke_permission {
        return apply(Req::RoleRevokePermission(x));
    }
    if r.range.is_some()
        || r.auth_user_get.is_some()
        || r.auth_user_list.is_some()
        || r.auth_role_get.is_some()
        || r.auth_role_list.is_some()
    {
        return Ok(Step::Skip("read"));
    }
    if r.authenticate.is_some() {
        return Ok(Step::Skip("authentication"));
    }
    if r.lease_checkpoint.is_some() {
        return Ok(Step::Skip("lease checkpoint"));
    }
    Err("an InternalRaftRequest carrying no request this import knows".into())
}

/// etcd 3.4's apply-time permission check of a KV request (`authApplierV3`), with auth
/// enabled: `Err` is what etcd answered (and applied nothing).
fn permitted(
    auth: &AuthStore,
    leases: &LeaseTable,
    header: Option<&RequestHeader>,
    req: &Req,
) -> Result<(), EtcdError> {
    if !auth.enabled {
        return Ok(());
    }
    let (user, revision) = header.map_or(("", 0), |h| (h.username.as_str(), h.auth_revision));
    let need = |need: Need, key: &[u8], range_end: &[u8]| -> Result<(), EtcdError> {
        if revision == 0 {
            return Err(EtcdError::UserEmpty);
        }
        if revision < auth.revision {
            return Err(EtcdError::AuthOldRevision);
        }
        auth.check(user, need, key, range_end)
    };
    let lease_keys = |lease: i64| -> Result<(), EtcdError> {
        for k in leases.keys(lease) {
            need(Need::Write, &k, &[])?;
        }
        Ok(())
    };
    match req {
        Req::Put(p) => {
            need(Need::Write, &p.key, &[])?;
            if p.prev_kv {
                need(Need::Read, &p.key, &[])?;
            }
            if p.lease != 0 {
                lease_keys(p.lease)?;
            }
        }
        Req::DeleteRange(d) => {
            need(Need::Write, &d.key, &d.range_end)?;
            if d.prev_kv {
                need(Need::Read, &d.key, &d.range_end)?;
            }
        }
        Req::Txn(t) => {
            for c in &t.compare {
                need(Need::Read, &c.key, &c.range_end)?;
            }
            // 3.4 checks the top-level ops of both branches only.
            for op in t.success.iter().chain(&t.failure) {
                match &op.request {
                    Some(Op::RequestRange(r)) => need(Need::Read, &r.key, &r.range_end)?,
                    Some(Op::RequestPut(p)) => need(Need::Write, &p.key, &[])?,
                    Some(Op::RequestDeleteRange(d)) => need(Need::Write, &d.key, &d.range_end)?,
                    Some(Op::RequestTxn(_)) | None => {}
                }
            }
        }
        Req::LeaseRevoke(r) => lease_keys(r.id)?,
        _ => {}
    }
    Ok(())
}

/// The state the replay applies to.
struct Replayer {
    store: KvStore,
    leases: LeaseTable,
    auth: AuthStore,
    alarms: Alarms,
    summary: ReplaySummary,
}

impl Replayer {
    /// Applies `request` at `p`'s index with the table writes `aux`: whether it was
    /// applied without a request error.
    fn write(
        &mut self,
        p: &Planned,
        request: &st::WriteRequest,
        aux: &[AuxOp],
    ) -> anyhow::Result<bool> {
        let entry = ApplyEntry {
            index: p.index,
            term: p.term,
            request,
            aux,
            record: None,
        };
        match self.store.apply(entry, &self.leases)? {
            Applied::Done {
                response, events, ..
            } => {
                self.leases.track(&events);
                Ok(response.is_ok())
            }
            Applied::Skipped => anyhow::bail!(
                "entry {} is at or below the backend's consistent index",
                p.index
            ),
        }
    }

    /// Applies one planned request: whether it changed anything (`false`: etcd refused
    /// it too).
    fn apply(
        &mut self,
        p: &Planned,
        req: Req,
        header: Option<&RequestHeader>,
    ) -> anyhow::Result<bool> {
        if let Some(err) = self.alarms.refusal(&req) {
            tracing::debug!(index = p.index, error = %err, "refused by an alarm");
            return Ok(false);
        }
        let req = match auth_change(req) {
            Ok(change) => return self.apply_auth(p, &change, header),
            Err(req) => req,
        };
        if let Err(err) = permitted(&self.auth, &self.leases, header, &req) {
            tracing::debug!(index = p.index, error = %err, "refused by auth");
            return Ok(false);
        }
        let request = match req {
            Req::Put(r) => st::WriteRequest::Put(convert::put_from_pb(r)),
            Req::DeleteRange(r) => st::WriteRequest::DeleteRange(convert::delete_from_pb(r)),
            Req::Txn(t) => match convert::txn_from_pb(t) {
                Ok(t) => st::WriteRequest::Txn(t),
                Err(_) => return Ok(false),
            },
            Req::Compaction(r) => st::WriteRequest::Compaction(convert::compaction_from_pb(r)),
            Req::LeaseGrant(g) => {
                let Ok(ttl) = self.leases.grant(g.id, g.ttl) else {
                    return Ok(false);
                };
                let aux = [AuxOp {
                    table: AuxTable::Lease,
                    key: lease_key(g.id),
                    value: Some(ttl.to_be_bytes().to_vec()),
                }];
                return self.write(p, &st::WriteRequest::Noop, &aux);
            }
            Req::LeaseRevoke(r) => {
                let Ok(keys) = self.leases.revoke(r.id) else {
                    return Ok(false);
                };
                let aux = [AuxOp {
                    table: AuxTable::Lease,
                    key: lease_key(r.id),
                    value: None,
                }];
                return self.write(p, &revoke_request(&keys), &aux);
            }
            Req::Alarm(a) => return self.apply_alarm(p, &a),
            other => anyhow::bail!("entry {}: {other:?} was not planned", p.index),
        };
        self.write(p, &request, &[])
    }

    fn apply_auth(
        &mut self,
        p: &Planned,
        change: &AuthChange,
        header: Option<&RequestHeader>,
    ) -> anyhow::Result<bool> {
        // etcd 3.4's IsAdminPermitted: root only, while auth is on.
        if self.auth.enabled {
            let user = header.map_or("", |h| h.username.as_str());
            if user.is_empty() || self.auth.check_admin(user).is_err() {
                return Ok(false);
            }
        }
        match self.auth.apply(change) {
            Ok((rows, _)) => self.write(p, &st::WriteRequest::Noop, &rows),
            Err(_) => Ok(false),
        }
    }

    fn apply_alarm(&mut self, p: &Planned, a: &pb::AlarmRequest) -> anyhow::Result<bool> {
        use pb::alarm_request::AlarmAction;
        let raised = match AlarmAction::try_from(a.action) {
            Ok(AlarmAction::Activate) if self.alarms.activate(a.member_id, a.alarm) => true,
            Ok(AlarmAction::Deactivate) if self.alarms.deactivate(a.member_id, a.alarm) => false,
            _ => return Ok(false),
        };
        let aux = [AuxOp {
            table: AuxTable::Alarm,
            key: Alarms::key(a.member_id, a.alarm),
            value: raised.then(Vec::new),
        }];
        self.write(p, &st::WriteRequest::Noop, &aux)
    }
}

/// Applies `planned` (in index order) to the backend at `db_path`, which `etcd_import`
/// just built from etcd's db (consistent index 0), then sets its consistent index to
/// `consistent_index` (0: Skiff's log starts afresh; etcd's last index: the import keeps
/// etcd's log, see `etcd_in_place`).
pub fn replay(
    db_path: &Path,
    planned: Vec<Planned>,
    opts: ReplayOptions,
    consistent_index: u64,
) -> anyhow::Result<ReplaySummary> {
    let store = KvStore::open(db_path, StoreConfig::default())
        .with_context(|| format!("opening {}", db_path.display()))?;
    let leases = LeaseTable::restore(&store, opts.min_lease_ttl)?;
    let auth = AuthStore::from_rows(&store.backend().scan(Table::Auth)?)?;
    let alarm_rows = store.backend().scan(Table::Alarm)?;
    let alarms = Alarms::from_keys(alarm_rows.iter().map(|(k, _)| k.as_slice()))
        .map_err(|e| anyhow::anyhow!("alarm table: {e}"))?;
    let mut r = Replayer {
        store,
        leases,
        auth,
        alarms,
        summary: ReplaySummary::default(),
    };
    for p in planned {
        r.summary.last_index = p.index;
        match p.step {
            Step::Skip(why) => {
                tracing::debug!(index = p.index, why, "etcd WAL entry skipped");
                r.summary.skipped += 1;
            }
            Step::Apply(ref req, ref header) => {
                let (req, header) = (req.clone(), header.clone());
                if r.apply(&p, req, header.as_ref())? {
                    r.summary.applied += 1;
                } else {
                    r.summary.refused += 1;
                }
            }
        }
    }
    let compacted = r.store.compact_revision();
    if compacted > 0 && !r.store.wait_compacted(compacted, Duration::from_secs(600)) {
        anyhow::bail!("the compaction at revision {compacted} did not finish");
    }
    r.store.sync()?;
    etcd::finish_replay(r.store.backend(), consistent_index, r.summary.last_index)?;
    r.summary.revision = r.store.current_revision();
    Ok(r.summary)
}

/// Turns etcd's uncommitted WAL entries (`planned`, past the index the backend at
/// `db_path` holds) into Skiff log entries at the same indexes and terms, for an import
/// that keeps etcd's log: a request becomes Skiff's, to be applied if the cluster commits
/// it; what changes nothing, and a KV request etcd's apply-time permission check
/// refuses (checked against the state the backend holds), becomes an empty entry. An
/// auth change is refused (the permissions of the entries after it could not be
/// checked here).
pub fn uncommitted_entries(
    db_path: &Path,
    planned: Vec<Planned>,
    opts: ReplayOptions,
) -> anyhow::Result<Vec<skiff_raft::Entry>> {
    use skiff_proto::skiffpb::InternalRequest;
    let store = KvStore::open(db_path, StoreConfig::default())
        .with_context(|| format!("opening {}", db_path.display()))?;
    let leases = LeaseTable::restore(&store, opts.min_lease_ttl)?;
    let auth = AuthStore::from_rows(&store.backend().scan(Table::Auth)?)?;
    let mut out = Vec::with_capacity(planned.len());
    for p in planned {
        let data = match p.step {
            Step::Skip(_) => Vec::new(),
            Step::Apply(req, header) => {
                let req = match auth_change(req) {
                    Ok(_) => anyhow::bail!(
                        "entry {} (term {}), not known to be committed, changes the auth \
                         store; start the etcd cluster once more so that it commits, or \
                         migrate with `etcdctl snapshot save` and `etcdctl snapshot restore`",
                        p.index,
                        p.term
                    ),
                    Err(req) => req,
                };
                match permitted(&auth, &leases, header.as_ref(), &req) {
                    Err(_) => Vec::new(),
                    Ok(()) => InternalRequest {
                        request: Some(req),
                        auth_revision: header.map_or(0, |h| h.auth_revision),
                        ..Default::default()
                    }
                    .encode_to_vec(),
                }
            }
        };
        out.push(skiff_raft::Entry {
            term: p.term,
            index: p.index,
            entry_type: skiff_raft::EntryType::Normal,
            data: data.into(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTS: ReplayOptions = ReplayOptions {
        bcrypt_cost: 4,
        min_lease_ttl: 1,
    };

    fn entry(entry_type: EntryType, data: Vec<u8>) -> WalEntry {
        WalEntry {
            index: 7,
            term: 2,
            entry_type: entry_type as i32,
            data,
            file: PathBuf::from("0000000000000000-0000000000000000.wal"),
            offset: 4096,
        }
    }

    fn v2(method: &str, path: &str) -> Vec<u8> {
        V2Request {
            id: 1,
            method: method.into(),
            path: path.into(),
            val: String::new(),
        }
        .encode_to_vec()
    }

    #[test]
    fn entries_are_applied_skipped_knowingly_or_refused_by_name() {
        let plan1 = |e: WalEntry| plan(&[e], OPTS).map(|mut p| p.remove(0).step);
        let skip = |e: WalEntry| match plan1(e).unwrap() {
            Step::Skip(why) => why,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            skip(entry(EntryType::EntryConfChange, vec![1])),
            "conf change"
        );
        assert_eq!(
            skip(entry(EntryType::EntryNormal, Vec::new())),
            "leader's empty entry"
        );
        let attrs = v2("PUT", "/0/members/8e9e05c52164694d/attributes");
        assert_eq!(
            skip(entry(EntryType::EntryNormal, attrs)),
            "v2 member attributes"
        );
        assert_eq!(
            skip(entry(EntryType::EntryNormal, v2("PUT", "/0/version"))),
            "v2 cluster version"
        );
        let err = plan1(entry(EntryType::EntryNormal, v2("PUT", "/foo"))).unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("0000000000000000-0000000000000000.wal: entry 7 (term 2) at byte 4096")
                && msg.contains("a v2 PUT of \"/foo\""),
            "{msg}"
        );
        // A header alone (a request this import does not know, skipped by the decoder).
        let unknown = InternalRaftRequest {
            header: Some(RequestHeader::default()),
            ..Default::default()
        };
        let err = plan1(entry(EntryType::EntryNormal, unknown.encode_to_vec())).unwrap_err();
        assert!(
            format!("{err:#}").contains("no request this import knows"),
            "{err:#}"
        );
        assert!(plan1(entry(EntryType::EntryNormal, vec![0xff; 5])).is_err());

        // A put is applied with its header; a user add's clear password is hashed.
        let put = InternalRaftRequest {
            header: Some(RequestHeader {
                username: "alice".into(),
                auth_revision: 3,
                ..Default::default()
            }),
            put: Some(pb::PutRequest {
                key: "k".into(),
                value: "v".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        match plan1(entry(EntryType::EntryNormal, put.encode_to_vec())).unwrap() {
            Step::Apply(Req::Put(p), Some(h)) => {
                assert_eq!((&p.key[..], h.auth_revision), (&b"k"[..], 3));
            }
            other => panic!("{other:?}"),
        }
        let add = InternalRaftRequest {
            auth_user_add: Some(pb::AuthUserAddRequest {
                name: "bob".into(),
                password: "secret".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        match plan1(entry(EntryType::EntryNormal, add.encode_to_vec())).unwrap() {
            Step::Apply(Req::UserAdd(u), _) => {
                assert!(u.password.is_empty());
                assert!(bcrypt::verify("secret", &u.hashed_password).unwrap());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn kv_writes_are_checked_as_etcd_3_4_checks_them_when_it_applies_them() {
        let mut auth = AuthStore::default();
        let leases = LeaseTable::new(1);
        let put = |key: &str| {
            Req::Put(pb::PutRequest {
                key: key.to_string().into(),
                ..Default::default()
            })
        };
        let header = |user: &str, rev: u64| RequestHeader {
            username: user.into(),
            auth_revision: rev,
            ..Default::default()
        };
        // Auth off: anything goes.
        assert!(permitted(&auth, &leases, None, &put("x")).is_ok());
        for change in [
            AuthChange::UserAdd(pb::AuthUserAddRequest {
                name: "root".into(),
                hashed_password: "h".into(),
                ..Default::default()
            }),
            AuthChange::UserGrantRole(pb::AuthUserGrantRoleRequest {
                user: "root".into(),
                role: "root".into(),
            }),
            AuthChange::UserAdd(pb::AuthUserAddRequest {
                name: "u".into(),
                hashed_password: "h".into(),
                ..Default::default()
            }),
            AuthChange::Enable,
        ] {
            auth.apply(&change).unwrap();
        }
        let rev = auth.revision;
        assert_eq!(
            permitted(&auth, &leases, None, &put("x")),
            Err(EtcdError::UserEmpty)
        );
        assert_eq!(
            permitted(&auth, &leases, Some(&header("root", rev - 1)), &put("x")),
            Err(EtcdError::AuthOldRevision)
        );
        assert!(permitted(&auth, &leases, Some(&header("root", rev)), &put("x")).is_ok());
        assert_eq!(
            permitted(&auth, &leases, Some(&header("u", rev)), &put("x")),
            Err(EtcdError::PermissionDenied)
        );
        // etcd 3.4 does not look into a nested txn (Skiff's own requests are checked
        // when proposed, see facade::auth); the replay applies what etcd applied.
        let nested = Req::Txn(pb::TxnRequest {
            success: vec![pb::RequestOp {
                request: Some(Op::RequestTxn(pb::TxnRequest::default())),
            }],
            ..Default::default()
        });
        assert!(permitted(&auth, &leases, Some(&header("u", rev)), &nested).is_ok());
    }
}
