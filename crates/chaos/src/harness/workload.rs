//! The client workload: concurrent clients, each sending one request at a time to one
//! member on a small key set, and one watcher per client over the whole key prefix from
//! revision 1 with prev_kv. Every request is recorded with its invoke and complete times;
//! a timeout or a lost connection is an unknown outcome for a write and a failure for a
//! read (a read changes nothing).
//!
//! Every value written is unique in the run (`c<client>-<seq>`), as the checkers require.
//! Every loop here stops by the run's deadline; each request is bounded by the op timeout.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, KeyValue,
    PutOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;

use skiff_chaos::history::{
    Event, EventKind, Kv, Op, Outcome, Request, Response, WatchLog, WatchRecord,
};

/// Prefix of every key the workload touches (and the watchers watch).
pub const PREFIX: &str = "k/";

/// Shared clock and op log of a run.
pub struct Recorder {
    start: Instant,
    ops: Mutex<Vec<Op>>,
    next_id: AtomicU64,
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder {
            start: Instant::now(),
            ops: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(0),
        }
    }
    pub fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }
    pub fn record(&self, mut op: Op) {
        op.id = self.next_id.fetch_add(1, Ordering::SeqCst);
        self.ops.lock().expect("recorder lock").push(op);
    }
    pub fn take_ops(&self) -> Vec<Op> {
        std::mem::take(&mut *self.ops.lock().expect("recorder lock"))
    }
}

/// Relative weights of the request kinds.
#[derive(Debug, Clone, Copy)]
pub struct Mix {
    pub get: u32,
    pub get_serializable: u32,
    pub put: u32,
    pub delete: u32,
    pub cas: u32,
    pub range: u32,
    pub range_serializable: u32,
    pub lease_put: u32,
    pub lease_revoke: u32,
}

impl Mix {
    /// `kv`: reads and writes of every kind; `watch`: write-heavy, to stress the watchers;
    /// `lease`: many lease puts and revokes.
    pub fn named(name: &str) -> Result<Mix> {
        let m = |w: [u32; 9]| Mix {
            get: w[0],
            get_serializable: w[1],
            put: w[2],
            delete: w[3],
            cas: w[4],
            range: w[5],
            range_serializable: w[6],
            lease_put: w[7],
            lease_revoke: w[8],
        };
        match name {
            "kv" => Ok(m([20, 10, 20, 5, 20, 8, 5, 10, 2])),
            "watch" => Ok(m([10, 5, 40, 10, 15, 5, 5, 8, 2])),
            "lease" => Ok(m([15, 5, 10, 5, 10, 5, 5, 35, 10])),
            other => Err(anyhow!(
                "unknown workload {other:?} (kv, watch, lease or counter)"
            )),
        }
    }
    fn total(&self) -> u32 {
        self.get
            + self.get_serializable
            + self.put
            + self.delete
            + self.cas
            + self.range
            + self.range_serializable
            + self.lease_put
            + self.lease_revoke
    }
}

/// What every client shares.
pub struct WorkloadSpec {
    pub keys: usize,
    pub mix: Mix,
    pub op_timeout: Duration,
    pub lease_ttl: i64,
    /// Send "linearizable" reads as serializable but record them as linearizable: the
    /// deliberately unsafe mode the checker must catch.
    pub unsafe_serializable: bool,
    pub deadline: Instant,
}

/// The client TLS of `https` endpoints (set once, by a run with `--tls`).
static CLIENT_TLS: std::sync::OnceLock<etcd_client::TlsOptions> = std::sync::OnceLock::new();

/// Makes [`connect`] use `tls` for `https` endpoints (the first call wins).
pub fn use_client_tls(tls: etcd_client::TlsOptions) {
    let _ = CLIENT_TLS.set(tls);
}

pub async fn connect(endpoint: &str, timeout: Duration) -> Result<Client> {
    let mut opts = ConnectOptions::new()
        .with_connect_timeout(timeout)
        .with_timeout(timeout);
    if endpoint.starts_with("https://") {
        let tls = CLIENT_TLS
            .get()
            .ok_or_else(|| anyhow::anyhow!("{endpoint}: https endpoint without client TLS"))?;
        opts = opts.with_tls(tls.clone());
    }
    let c = tokio::time::timeout(timeout, Client::connect([endpoint], Some(opts))).await??;
    Ok(c)
}

fn kv_of(kv: &KeyValue) -> Kv {
    Kv {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: String::from_utf8_lossy(kv.value()).into_owned(),
        mod_rev: kv.mod_revision(),
        create_rev: kv.create_revision(),
        version: kv.version(),
        lease: kv.lease(),
    }
}

fn header_rev(h: Option<&etcd_client::ResponseHeader>) -> i64 {
    h.map(|h| h.revision()).unwrap_or_default()
}

/// Sends one request.
async fn send(
    c: &mut Client,
    req: &Request,
    unsafe_ser: bool,
) -> Result<Response, etcd_client::Error> {
    Ok(match req {
        Request::Get { key, serializable } => {
            let mut o = GetOptions::new();
            if *serializable || unsafe_ser {
                o = o.with_serializable();
            }
            let r = c.get(key.as_str(), Some(o)).await?;
            Response::Get {
                rev: header_rev(r.header()),
                kv: r.kvs().first().map(kv_of),
            }
        }
        Request::Range {
            prefix,
            serializable,
        } => {
            let mut o = GetOptions::new().with_prefix();
            if *serializable || unsafe_ser {
                o = o.with_serializable();
            }
            let r = c.get(prefix.as_str(), Some(o)).await?;
            Response::Range {
                rev: header_rev(r.header()),
                kvs: r.kvs().iter().map(kv_of).collect(),
            }
        }
        Request::Put { key, value, lease } => {
            let mut o = PutOptions::new().with_prev_key();
            if *lease != 0 {
                o = o.with_lease(*lease);
            }
            let r = c.put(key.as_str(), value.as_str(), Some(o)).await?;
            Response::Put {
                rev: header_rev(r.header()),
                prev: r.prev_key().map(kv_of),
            }
        }
        Request::Delete { key } => {
            let r = c
                .delete(key.as_str(), Some(DeleteOptions::new().with_prev_key()))
                .await?;
            Response::Delete {
                rev: header_rev(r.header()),
                deleted: r.deleted(),
                prev: r.prev_kvs().first().map(kv_of),
            }
        }
        Request::Cas {
            key,
            expect_mod_rev,
            value,
        } => {
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    key.as_str(),
                    CompareOp::Equal,
                    *expect_mod_rev,
                )])
                .and_then([TxnOp::put(key.as_str(), value.as_str(), None)])
                .or_else([TxnOp::get(key.as_str(), None)]);
            let r = c.txn(txn).await?;
            let current = match r.op_responses().first() {
                Some(TxnOpResponse::Get(g)) => g.kvs().first().map(kv_of),
                _ => None,
            };
            Response::Cas {
                rev: header_rev(r.header()),
                succeeded: r.succeeded(),
                current,
            }
        }
        Request::LeaseGrant { ttl } => {
            let r = c.lease_grant(*ttl, None).await?;
            Response::LeaseGrant {
                rev: header_rev(r.header()),
                lease: r.id(),
            }
        }
        Request::LeaseRevoke { lease } => {
            let r = c.lease_revoke(*lease).await?;
            Response::LeaseRevoke {
                rev: header_rev(r.header()),
            }
        }
        Request::Compact { rev } => {
            let r = c.compact(*rev, None).await?;
            Response::Compact {
                rev: header_rev(r.header()),
            }
        }
    })
}

fn is_read(req: &Request) -> bool {
    matches!(req, Request::Get { .. } | Request::Range { .. })
}

/// Sends `req` with a deadline and records it. Returns the response when it succeeded.
#[allow(clippy::too_many_arguments)]
pub async fn execute(
    rec: &Recorder,
    c: &mut Client,
    client: u32,
    member: u32,
    incarnation: u32,
    req: Request,
    timeout: Duration,
    unsafe_ser: bool,
) -> Option<Response> {
    let invoke = rec.now();
    let result = tokio::time::timeout(timeout, send(c, &req, unsafe_ser)).await;
    let complete = rec.now();
    let outcome = match result {
        Ok(Ok(r)) => Outcome::Ok(r),
        Ok(Err(e)) if is_read(&req) => Outcome::Failed(e.to_string()),
        Ok(Err(e)) => Outcome::Unknown(e.to_string()),
        Err(_) if is_read(&req) => Outcome::Failed("timeout".into()),
        Err(_) => Outcome::Unknown("timeout".into()),
    };
    let ok = match &outcome {
        Outcome::Ok(r) => Some(r.clone()),
        _ => None,
    };
    rec.record(Op {
        id: 0,
        client,
        member,
        incarnation,
        invoke,
        complete,
        req,
        outcome,
    });
    ok
}

/// One client: one request at a time until the deadline.
pub async fn run_client(
    id: u32,
    member: u32,
    endpoint: String,
    incarnations: Arc<Vec<AtomicU32>>,
    rec: Arc<Recorder>,
    spec: Arc<WorkloadSpec>,
    seed: u64,
) {
    let mut rng = StdRng::seed_from_u64(seed ^ (u64::from(id) << 32));
    let mut seq = 0u64;
    let mut known_rev: HashMap<String, i64> = HashMap::new();
    let mut lease: Option<i64> = None;
    let mut client: Option<Client> = None;
    while Instant::now() < spec.deadline {
        let c = match &mut client {
            Some(c) => c,
            None => match connect(&endpoint, spec.op_timeout).await {
                Ok(c) => client.insert(c),
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            },
        };
        let key = format!("{PREFIX}{}", rng.random_range(0..spec.keys));
        seq += 1;
        let value = format!("c{id}-{seq}");
        let m = spec.mix;
        let mut pick = rng.random_range(0..m.total());
        let mut take = |w: u32| {
            let hit = pick < w;
            pick = pick.saturating_sub(w);
            hit
        };
        let req = if take(m.get) {
            Request::Get {
                key,
                serializable: false,
            }
        } else if take(m.get_serializable) {
            Request::Get {
                key,
                serializable: true,
            }
        } else if take(m.put) {
            Request::Put {
                key,
                value,
                lease: 0,
            }
        } else if take(m.delete) {
            Request::Delete { key }
        } else if take(m.cas) {
            // Compare against a revision this client saw (or 0: create if absent); a
            // random stale one sometimes, so both branches run.
            let seen = known_rev.get(&key).copied().unwrap_or(0);
            let expect = if rng.random_bool(0.2) {
                (seen - 1).max(0)
            } else {
                seen
            };
            Request::Cas {
                key,
                expect_mod_rev: expect,
                value,
            }
        } else if take(m.range) {
            Request::Range {
                prefix: PREFIX.into(),
                serializable: false,
            }
        } else if take(m.range_serializable) {
            Request::Range {
                prefix: PREFIX.into(),
                serializable: true,
            }
        } else if take(m.lease_put) {
            match lease {
                Some(l) => Request::Put {
                    key,
                    value,
                    lease: l,
                },
                None => Request::LeaseGrant {
                    ttl: spec.lease_ttl,
                },
            }
        } else {
            match lease.take() {
                Some(l) => Request::LeaseRevoke { lease: l },
                None => Request::LeaseGrant {
                    ttl: spec.lease_ttl,
                },
            }
        };
        let inc = incarnations[member as usize].load(Ordering::SeqCst);
        let resp = execute(
            &rec,
            c,
            id,
            member,
            inc,
            req.clone(),
            spec.op_timeout,
            spec.unsafe_serializable,
        )
        .await;
        match (&req, resp) {
            (_, None) => {
                // Let a down member come back instead of spinning on errors.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (Request::Get { key, .. }, Some(Response::Get { kv, .. })) => {
                known_rev.insert(key.clone(), kv.map(|k| k.mod_rev).unwrap_or(0));
            }
            (Request::Range { .. }, Some(Response::Range { kvs, .. })) => {
                for kv in kvs {
                    known_rev.insert(kv.key.clone(), kv.mod_rev);
                }
            }
            (Request::Put { key, .. }, Some(Response::Put { rev, .. }))
            | (
                Request::Cas { key, .. },
                Some(Response::Cas {
                    rev,
                    succeeded: true,
                    ..
                }),
            ) => {
                known_rev.insert(key.clone(), rev);
            }
            (_, Some(Response::LeaseGrant { lease: l, .. })) => lease = Some(l),
            _ => {}
        }
    }
}

/// When watchers may stop: once they have seen `target` (the store's final revision), or
/// at `deadline` in any case.
#[derive(Debug, Clone, Copy)]
pub struct Drain {
    pub target: i64,
    pub deadline: Instant,
}

fn event_of(e: &etcd_client::Event) -> Option<Event> {
    let kv = kv_of(e.kv()?);
    Some(Event {
        kind: match e.event_type() {
            EventType::Put => EventKind::Put,
            EventType::Delete => EventKind::Delete,
        },
        kv,
        prev: e.prev_kv().map(kv_of),
    })
}

/// One watcher: watches the prefix from revision 1 with prev_kv, resuming after its last
/// event whenever the stream breaks, until told to drain and done (or out of time).
pub async fn run_watcher(
    id: u32,
    endpoint: String,
    rec: Arc<Recorder>,
    drain: watch::Receiver<Option<Drain>>,
    hard_deadline: Instant,
    timeout: Duration,
) -> WatchLog {
    let mut log = WatchLog {
        client: id,
        records: Vec::new(),
    };
    let mut next = 1i64;
    let mut client: Option<Client> = None;
    let done = |next: i64, d: &Option<Drain>| {
        Instant::now() >= hard_deadline
            || d.is_some_and(|d| next > d.target || Instant::now() >= d.deadline)
    };
    'outer: while !done(next, &drain.borrow()) {
        let c = match &mut client {
            Some(c) => c,
            None => match connect(&endpoint, timeout).await {
                Ok(c) => client.insert(c),
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            },
        };
        let opts = WatchOptions::new()
            .with_prefix()
            .with_start_revision(next)
            .with_prev_key();
        let mut stream = match tokio::time::timeout(timeout, c.watch(PREFIX, Some(opts))).await {
            Ok(Ok(s)) => s,
            _ => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        log.records.push(WatchRecord::Start {
            time: rec.now(),
            start_rev: next,
        });
        loop {
            let msg = tokio::select! {
                m = stream.message() => m,
                _ = tokio::time::sleep(Duration::from_millis(300)) => {
                    if done(next, &drain.borrow()) { break 'outer; }
                    continue;
                }
            };
            let resp = match msg {
                Ok(Some(r)) => r,
                Ok(None) | Err(_) => {
                    let error = match msg {
                        Err(e) => e.to_string(),
                        _ => "stream closed".into(),
                    };
                    log.records.push(WatchRecord::Broken {
                        time: rec.now(),
                        error,
                    });
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue 'outer;
                }
            };
            if resp.canceled() {
                if resp.compact_revision() > 0 {
                    log.records.push(WatchRecord::Compacted {
                        time: rec.now(),
                        compact_rev: resp.compact_revision(),
                    });
                    next = next.max(resp.compact_revision());
                } else {
                    log.records.push(WatchRecord::Broken {
                        time: rec.now(),
                        error: format!("cancelled: {}", resp.cancel_reason()),
                    });
                }
                continue 'outer;
            }
            let events: Vec<Event> = resp.events().iter().filter_map(event_of).collect();
            if let Some(last) = events.last() {
                next = next.max(last.kv.mod_rev + 1);
                log.records.push(WatchRecord::Events {
                    time: rec.now(),
                    header_rev: header_rev(resp.header()),
                    events,
                });
            }
            if done(next, &drain.borrow()) {
                break 'outer;
            }
        }
    }
    log
}
