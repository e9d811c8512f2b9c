//! The output formats of etcdctl 3.4 (`-w simple|json|fields|table|protobuf`), one
//! method per verb, each writing exactly what etcdctl's printer for that verb writes
//! (including which formats a verb refuses: etcdctl answers
//! `<format> not supported as output format` with exit code 4).

mod auth;
pub mod go;
pub mod json;
mod snapshot;
mod table;

pub use auth::revoked_line;

use std::io::Write;

use skiff_proto::etcdserverpb::{
    response_op, AlarmResponse, DeleteRangeResponse, HashKvResponse, LeaseGrantResponse,
    LeaseKeepAliveResponse, LeaseLeasesResponse, LeaseRevokeResponse, LeaseTimeToLiveResponse,
    MemberListResponse, PutResponse, RangeResponse, ResponseHeader, StatusResponse, TxnResponse,
    WatchResponse,
};
use skiff_proto::mvccpb::KeyValue;
use skiff_proto::Message;

use crate::exit::{fail, BAD_FEATURE};
use go::quote;

/// An output format (`-w`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Human-readable lines.
    Simple,
    /// Go's `encoding/json` of the response.
    Json,
    /// `"Field" : value` lines.
    Fields,
    /// ASCII tables (member and endpoint verbs only).
    Table,
    /// The response's protobuf encoding.
    Protobuf,
}

impl Format {
    /// Parses `-w`; etcdctl's message for anything else.
    pub fn parse(s: &str) -> anyhow::Result<Format> {
        Ok(match s {
            "simple" => Format::Simple,
            "json" => Format::Json,
            "fields" => Format::Fields,
            "table" => Format::Table,
            "protobuf" => Format::Protobuf,
            _ => return Err(fail(BAD_FEATURE, "unsupported output format")),
        })
    }

    fn name(self) -> &'static str {
        match self {
            Format::Simple => "simple",
            Format::Json => "json",
            Format::Fields => "fields",
            Format::Table => "table",
            Format::Protobuf => "protobuf",
        }
    }
}

/// One endpoint's health (etcdctl's `epHealth`).
pub struct EpHealth {
    /// The endpoint as given.
    pub ep: String,
    /// Whether a read through it succeeded.
    pub health: bool,
    /// How long the check took (Go duration text).
    pub took: String,
    /// The error, empty when healthy.
    pub error: String,
}

/// Writes responses in one format.
pub struct Printer {
    /// The format.
    pub format: Format,
    /// `--hex`: keys and values as `\x..` escapes (simple format).
    pub hex: bool,
    /// `--print-value-only`.
    pub value_only: bool,
    out: String,
}

impl Drop for Printer {
    fn drop(&mut self) {
        self.flush();
    }
}

impl Printer {
    /// A printer for `format`.
    pub fn new(format: Format, hex: bool) -> Printer {
        Printer {
            format,
            hex,
            value_only: false,
            out: String::new(),
        }
    }

    /// Writes what has been printed so far to stdout.
    pub fn flush(&mut self) {
        if !self.out.is_empty() {
            let mut so = std::io::stdout().lock();
            let _ = so.write_all(self.out.as_bytes());
            let _ = so.flush();
            self.out.clear();
        }
    }

    fn line(&mut self, s: impl AsRef<str>) {
        self.out.push_str(s.as_ref());
        self.out.push('\n');
    }

    fn unsupported(&self) -> anyhow::Error {
        fail(
            BAD_FEATURE,
            format!("{} not supported as output format", self.format.name()),
        )
    }

    fn raw_pb(&mut self, m: &impl Message) {
        self.flush();
        let mut so = std::io::stdout().lock();
        let _ = so.write_all(&m.encode_to_vec());
        let _ = so.flush();
    }

    fn kv_simple(&mut self, kv: &KeyValue) {
        let (k, v) = if self.hex {
            (go::hex_escaped(&kv.key), go::hex_escaped(&kv.value))
        } else {
            (
                String::from_utf8_lossy(&kv.key).into_owned(),
                String::from_utf8_lossy(&kv.value).into_owned(),
            )
        };
        if !self.value_only {
            self.line(k);
        }
        self.line(v);
    }

    fn kv_fields(&mut self, pfx: &str, kv: &KeyValue) {
        self.line(format!("\"{pfx}Key\" : {}", quote(&kv.key)));
        self.line(format!("\"{pfx}CreateRevision\" : {}", kv.create_revision));
        self.line(format!("\"{pfx}ModRevision\" : {}", kv.mod_revision));
        self.line(format!("\"{pfx}Version\" : {}", kv.version));
        self.line(format!("\"{pfx}Value\" : {}", quote(&kv.value)));
        self.line(format!("\"{pfx}Lease\" : {}", kv.lease));
    }

    fn hdr_fields(&mut self, h: Option<&ResponseHeader>) {
        let h = h.cloned().unwrap_or_default();
        self.line(format!("\"ClusterID\" : {}", h.cluster_id));
        self.line(format!("\"MemberID\" : {}", h.member_id));
        self.line(format!("\"Revision\" : {}", h.revision));
        self.line(format!("\"RaftTerm\" : {}", h.raft_term));
    }

    /// `get`.
    pub fn get(&mut self, r: &RangeResponse) -> anyhow::Result<()> {
        match self.format {
            Format::Simple => r.kvs.iter().for_each(|kv| self.kv_simple(kv)),
            Format::Json => self.line(json::range(r)),
            Format::Fields => {
                self.hdr_fields(r.header.as_ref());
                r.kvs.iter().for_each(|kv| self.kv_fields("", kv));
                self.line(format!("\"More\" : {}", r.more));
                self.line(format!("\"Count\" : {}", r.count));
            }
            Format::Protobuf => self.raw_pb(r),
            Format::Table => return Err(self.unsupported()),
        }
        Ok(())
    }

    /// `put`.
    pub fn put(&mut self, r: &PutResponse) -> anyhow::Result<()> {
        match self.format {
            Format::Simple => {
                self.line("OK");
                if let Some(kv) = &r.prev_kv {
                    self.kv_simple(kv);
                }
            }
            Format::Json => self.line(json::put(r)),
            Format::Fields => {
                self.hdr_fields(r.header.as_ref());
                if let Some(kv) = &r.prev_kv {
                    self.kv_fields("Prev", kv);
                }
            }
            Format::Protobuf => self.raw_pb(r),
            Format::Table => return Err(self.unsupported()),
        }
        Ok(())
    }

    /// `del`.
    pub fn del(&mut self, r: &DeleteRangeResponse) -> anyhow::Result<()> {
        match self.format {
            Format::Simple => {
                self.line(r.deleted.to_string());
                r.prev_kvs.iter().for_each(|kv| self.kv_simple(kv));
            }
            Format::Json => self.line(json::delete(r)),
            Format::Fields => {
                self.hdr_fields(r.header.as_ref());
                self.line(format!("\"Deleted\" : {}", r.deleted));
                r.prev_kvs.iter().for_each(|kv| self.kv_fields("Prev", kv));
            }
            Format::Protobuf => self.raw_pb(r),
            Format::Table => return Err(self.unsupported()),
        }
        Ok(())
    }

    /// `txn`.
    pub fn txn(&mut self, r: &TxnResponse) -> anyhow::Result<()> {
        match self.format {
            Format::Simple => {
                self.line(if r.succeeded { "SUCCESS" } else { "FAILURE" });
                for op in &r.responses {
                    self.line("");
                    match &op.response {
                        Some(response_op::Response::ResponseDeleteRange(d)) => self.del(d)?,
                        Some(response_op::Response::ResponsePut(p)) => self.put(p)?,
                        Some(response_op::Response::ResponseRange(g)) => self.get(g)?,
                        other => self.line(format!("unexpected response {other:?}")),
                    }
                }
            }
            Format::Json => self.line(json::txn(r)),
            Format::Fields => {
                self.hdr_fields(r.header.as_ref());
                self.line(format!("\"Succeeded\" : {}", r.succeeded));
                for op in &r.responses {
                    match &op.response {
                        Some(response_op::Response::ResponseDeleteRange(d)) => self.del(d)?,
                        Some(response_op::Response::ResponsePut(p)) => self.put(p)?,
                        Some(response_op::Response::ResponseRange(g)) => self.get(g)?,
                        other => self.line(format!(
                            "\"Unknown\" : {}",
                            quote(format!("{other:?}").as_bytes())
                        )),
                    }
                }
            }
            Format::Protobuf => self.raw_pb(r),
            Format::Table => return Err(self.unsupported()),
        }
        Ok(())
    }

    /// One `watch` response.
    pub fn watch(&mut self, r: &WatchResponse) -> anyhow::Result<()> {
        match self.format {
            Format::Simple => {
                for e in &r.events {
                    self.line(if e.r#type == 1 { "DELETE" } else { "PUT" });
                    if let Some(p) = &e.prev_kv {
                        self.kv_simple(p);
                    }
                    self.kv_simple(&e.kv.clone().unwrap_or_default());
                }
            }
            Format::Json => self.line(json::watch(r)),
            Format::Fields => {
                self.hdr_fields(r.header.as_ref());
                for e in &r.events {
                    self.line(format!(
                        "\"Type\" : {}",
                        if e.r#type == 1 { "DELETE" } else { "PUT" }
                    ));
                    if let Some(p) = &e.prev_kv {
                        self.kv_fields("Prev", p);
                    }
                    self.kv_fields("", &e.kv.clone().unwrap_or_default());
                }
            }
            Format::Protobuf => {
                let wr = WatchResponse {
                    header: Some(r.header.unwrap_or_default()),
                    events: r.events.clone(),
                    compact_revision: r.compact_revision,
                    canceled: r.canceled,
                    created: r.created,
                    ..Default::default()
                };
                self.raw_pb(&wr)
            }
            Format::Table => return Err(self.unsupported()),
        }
        self.flush();
        Ok(())
    }

    /// `lease grant`.
    pub fn grant(&mut self, r: &LeaseGrantResponse) -> anyhow::Result<()> {
        match self.format {
            Format::Simple => {
                self.line(format!("lease {:016x} granted with TTL({}s)", r.id, r.ttl))
            }
            Format::Json => self.line(json::lease_grant(r)),
            Format::Fields => {
                self.hdr_fields(r.header.as_ref());
                self.line(format!("\"ID\" : {}", r.id));
                self.line(format!("\"TTL\" : {}", r.ttl));
            }
            _ => return Err(self.unsupported()),
        }
        Ok(())
    }

    /// `lease revoke`.
    pub fn revoke(&mut self, id: i64, r: &LeaseRevokeResponse) -> anyhow::Result<()> {
        match self.format {
            Format::Simple => self.line(format!("lease {id:016x} revoked")),
            Format::Json => self.line(json::lease_revoke(r)),
            Format::Fields => self.hdr_fields(r.header.as_ref()),
            _ => return Err(self.unsupported()),
        }
        Ok(())
    }

    /// `lease keep-alive` (one answer).
    pub fn keep_alive(&mut self, r: &LeaseKeepAliveResponse) -> anyhow::Result<()> {
        match self.format {
            Format::Simple => self.line(format!(
                "lease {:016x} keepalived with TTL({})",
                r.id, r.ttl
            )),
            Format::Json => self.line(json::lease_keep_alive(r)),
            Format::Fields => {
                self.hdr_fields(r.header.as_ref());
                self.line(format!("\"ID\" : {}", r.id));
                self.line(format!("\"TTL\" : {}", r.ttl));
            }
            _ => return Err(self.unsupported()),
        }
        self.flush();
        Ok(())
    }

    /// `lease timetolive`.
    pub fn time_to_live(&mut self, r: &LeaseTimeToLiveResponse, keys: bool) -> anyhow::Result<()> {
        match self.format {
            Format::Simple => {
                if r.granted_ttl == 0 && r.ttl == -1 {
                    self.line(format!("lease {:016x} already expired", r.id));
                    return Ok(());
                }
                let mut txt = format!(
                    "lease {:016x} granted with TTL({}s), remaining({}s)",
                    r.id, r.granted_ttl, r.ttl
                );
                if keys {
                    let ks: Vec<String> = r
                        .keys
                        .iter()
                        .map(|k| String::from_utf8_lossy(k).into_owned())
                        .collect();
                    txt.push_str(&format!(", attached keys([{}])", ks.join(" ")));
                }
                self.line(txt);
            }
            Format::Json => self.line(json::lease_time_to_live(r)),
            Format::Fields => {
                self.hdr_fields(r.header.as_ref());
                self.line(format!("\"ID\" : {}", r.id));
                self.line(format!("\"TTL\" : {}", r.ttl));
                self.line(format!("\"GrantedTTL\" : {}", r.granted_ttl));
                for k in &r.keys {
                    self.line(format!("\"Key\" : {}", quote(k)));
                }
            }
            _ => return Err(self.unsupported()),
        }
        Ok(())
    }

    /// `lease list`.
    pub fn leases(&mut self, r: &LeaseLeasesResponse) -> anyhow::Result<()> {
        match self.format {
            Format::Simple => {
                self.line(format!("found {} leases", r.leases.len()));
                for l in &r.leases {
                    self.line(format!("{:016x}", l.id));
                }
            }
            Format::Json => self.line(json::lease_leases(r)),
            Format::Fields => {
                self.hdr_fields(r.header.as_ref());
                for l in &r.leases {
                    self.line(format!("\"ID\" : {}", l.id));
                }
            }
            _ => return Err(self.unsupported()),
        }
        Ok(())
    }

    fn member_rows(r: &MemberListResponse) -> (Vec<&'static str>, Vec<Vec<String>>) {
        let hdr = vec![
            "ID",
            "Status",
            "Name",
            "Peer Addrs",
            "Client Addrs",
            "Is Learner",
        ];
        let rows = r
            .members
            .iter()
            .map(|m| {
                vec![
                    format!("{:x}", m.id),
                    if m.name.is_empty() {
                        "unstarted"
                    } else {
                        "started"
                    }
                    .to_string(),
                    m.name.clone(),
                    m.peer_ur_ls.join(","),
                    m.client_ur_ls.join(","),
                    m.is_learner.to_string(),
                ]
            })
            .collect();
        (hdr, rows)
    }

    /// `member list`.
    pub fn member_list(&mut self, r: &MemberListResponse) -> anyhow::Result<()> {
        match self.format {
            Format::Simple => {
                let (_, rows) = Self::member_rows(r);
                rows.iter().for_each(|row| self.line(row.join(", ")));
            }
            Format::Json => self.line(json::member_list(r)),
            Format::Fields => {
                self.hdr_fields(r.header.as_ref());
                for m in &r.members {
                    self.line(format!("\"ID\" : {}", m.id));
                    self.line(format!("\"Name\" : {}", quote(m.name.as_bytes())));
                    for u in &m.peer_ur_ls {
                        self.line(format!("\"PeerURL\" : {}", quote(u.as_bytes())));
                    }
                    for u in &m.client_ur_ls {
                        self.line(format!("\"ClientURL\" : {}", quote(u.as_bytes())));
                    }
                    self.line(format!("\"IsLearner\" : {}", m.is_learner));
                    self.line("");
                }
            }
            Format::Table => {
                let (hdr, rows) = Self::member_rows(r);
                self.out.push_str(&table::render(&hdr, &rows));
            }
            Format::Protobuf => self.raw_pb(r),
        }
        Ok(())
    }

    /// `endpoint health` (the simple form goes to stderr, as etcdctl's does).
    pub fn endpoint_health(&mut self, hs: &[EpHealth]) -> anyhow::Result<()> {
        match self.format {
            Format::Simple => {
                for h in hs {
                    if h.error.is_empty() {
                        eprintln!(
                            "{} is healthy: successfully committed proposal: took = {}",
                            h.ep, h.took
                        );
                    } else {
                        eprintln!(
                            "{} is unhealthy: failed to commit proposal: {}",
                            h.ep, h.error
                        );
                    }
                }
            }
            Format::Json => {
                let items = hs
                    .iter()
                    .map(|h| {
                        json::Obj::new()
                            .str("endpoint", &h.ep)
                            .bool("health", h.health)
                            .str("took", &h.took)
                            .str_oe("error", &h.error)
                            .end()
                    })
                    .collect();
                self.line(json::arr(items));
            }
            Format::Fields => {
                for h in hs {
                    self.line(format!("\"Endpoint\" : {}", quote(h.ep.as_bytes())));
                    self.line(format!("\"Health\" : {}", h.health));
                    self.line(format!("\"Took\" : {}", h.took));
                    self.line(format!("\"Error\" : {}", h.error));
                    self.line("");
                }
            }
            Format::Table => {
                let rows: Vec<Vec<String>> = hs
                    .iter()
                    .map(|h| {
                        vec![
                            h.ep.clone(),
                            h.health.to_string(),
                            h.took.clone(),
                            h.error.clone(),
                        ]
                    })
                    .collect();
                self.out.push_str(&table::render(
                    &["endpoint", "health", "took", "error"],
                    &rows,
                ));
            }
            Format::Protobuf => return Err(self.unsupported()),
        }
        Ok(())
    }

    fn status_rows(list: &[(String, StatusResponse)]) -> Vec<Vec<String>> {
        list.iter()
            .map(|(ep, s)| {
                let me = s.header.as_ref().map(|h| h.member_id).unwrap_or(0);
                vec![
                    ep.clone(),
                    format!("{me:x}"),
                    s.version.clone(),
                    go::humanize_bytes(s.db_size.max(0) as u64),
                    (s.leader == me).to_string(),
                    s.is_learner.to_string(),
                    s.raft_term.to_string(),
                    s.raft_index.to_string(),
                    s.raft_applied_index.to_string(),
                    s.errors.join(", "),
                ]
            })
            .collect()
    }

    /// `endpoint status`.
    pub fn endpoint_status(&mut self, list: &[(String, StatusResponse)]) -> anyhow::Result<()> {
        match self.format {
            Format::Simple => {
                for row in Self::status_rows(list) {
                    self.line(row.join(", "));
                }
            }
            Format::Json => {
                let items = list
                    .iter()
                    .map(|(ep, s)| {
                        json::Obj::new()
                            .str("Endpoint", ep)
                            .raw("Status", json::status(s))
                            .end()
                    })
                    .collect();
                self.line(json::arr(items));
            }
            Format::Fields => {
                for (ep, s) in list {
                    self.hdr_fields(s.header.as_ref());
                    self.line(format!("\"Version\" : {}", quote(s.version.as_bytes())));
                    self.line(format!("\"DBSize\" : {}", s.db_size));
                    self.line(format!("\"Leader\" : {}", s.leader));
                    self.line(format!("\"IsLearner\" : {}", s.is_learner));
                    self.line(format!("\"RaftIndex\" : {}", s.raft_index));
                    self.line(format!("\"RaftTerm\" : {}", s.raft_term));
                    self.line(format!("\"RaftAppliedIndex\" : {}", s.raft_applied_index));
                    self.line(format!("\"Errors\" : [{}]", s.errors.join(" ")));
                    self.line(format!("\"Endpoint\" : {}", quote(ep.as_bytes())));
                    self.line("");
                }
            }
            Format::Table => {
                let hdr = [
                    "endpoint",
                    "ID",
                    "version",
                    "db size",
                    "is leader",
                    "is learner",
                    "raft term",
                    "raft index",
                    "raft applied index",
                    "errors",
                ];
                self.out
                    .push_str(&table::render(&hdr, &Self::status_rows(list)));
            }
            Format::Protobuf => return Err(self.unsupported()),
        }
        Ok(())
    }

    /// `endpoint hashkv`.
    pub fn endpoint_hashkv(&mut self, list: &[(String, HashKvResponse)]) -> anyhow::Result<()> {
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|(ep, h)| vec![ep.clone(), h.hash.to_string()])
            .collect();
        match self.format {
            Format::Simple => rows.iter().for_each(|r| self.line(r.join(", "))),
            Format::Json => {
                let items = list
                    .iter()
                    .map(|(ep, h)| {
                        json::Obj::new()
                            .str("Endpoint", ep)
                            .raw("HashKV", json::hash_kv(h))
                            .end()
                    })
                    .collect();
                self.line(json::arr(items));
            }
            Format::Fields => {
                for (ep, h) in list {
                    self.hdr_fields(h.header.as_ref());
                    self.line(format!("\"Endpoint\" : {}", quote(ep.as_bytes())));
                    self.line(format!("\"Hash\" : {}", h.hash));
                    self.line("");
                }
            }
            Format::Table => self
                .out
                .push_str(&table::render(&["endpoint", "hash"], &rows)),
            Format::Protobuf => return Err(self.unsupported()),
        }
        Ok(())
    }

    /// `alarm list` / `alarm disarm`.
    pub fn alarm(&mut self, r: &AlarmResponse) -> anyhow::Result<()> {
        match self.format {
            Format::Simple => {
                for a in &r.alarms {
                    self.line(format!(
                        "memberID:{} alarm:{} ",
                        a.member_id,
                        alarm_name(a.alarm)
                    ));
                }
            }
            Format::Json => self.line(json::alarm(r)),
            Format::Fields => {
                self.hdr_fields(r.header.as_ref());
                for a in &r.alarms {
                    self.line(format!("\"MemberID\" : {}", a.member_id));
                    self.line(format!("\"AlarmType\" : {}", alarm_name(a.alarm)));
                    self.line("");
                }
            }
            Format::Protobuf => self.raw_pb(r),
            Format::Table => return Err(self.unsupported()),
        }
        Ok(())
    }

    /// `move-leader`.
    pub fn move_leader(&mut self, leader: u64, target: u64) -> anyhow::Result<()> {
        match self.format {
            Format::Simple => self.line(format!(
                "Leadership transferred from {leader:x} to {target:x}"
            )),
            _ => return Err(self.unsupported()),
        }
        Ok(())
    }

    /// A plain line (verbs whose output does not depend on the format).
    pub fn text(&mut self, s: impl AsRef<str>) {
        self.line(s);
    }
}

/// etcd's `AlarmType` names.
fn alarm_name(a: i32) -> &'static str {
    match a {
        0 => "NONE",
        1 => "NOSPACE",
        2 => "CORRUPT",
        _ => "UNKNOWN",
    }
}
