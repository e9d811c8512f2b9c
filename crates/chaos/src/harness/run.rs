//! One run, end to end: start the cluster in a temporary directory, run the workload and
//! the fault injector until the deadline, heal, let the watchers catch up, take every
//! member's HashKV, stop the cluster, check the history, and write the artifacts of a
//! failing run under `<out-dir>/<seed>/`.
//!
//! Every wait here is bounded; the cluster (and its network namespaces) is torn down on
//! every path out of [`run`], errors and panics included, by the cluster's Drop.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use etcd_client::GetOptions;
use serde::Serialize;
use tokio::sync::watch;

use skiff_chaos::check::{self, Report};
use skiff_chaos::cluster::{Cluster, ClusterSpec};
use skiff_chaos::history::{History, MemberHash, Op, Outcome, Request, Response, WatchRecord};
use skiff_chaos::net::Net;

use super::counter::{count_of, counter_key, run_counter_client, Tally};
use super::crash;
use super::disk;
use super::faults::{run_faults, Fault, FaultSpec};
use super::workload::{
    connect, run_client, run_watcher, use_client_tls, Drain, Mix, Recorder, WorkloadSpec, PREFIX,
};

/// Everything that defines a run.
#[derive(Debug, Clone)]
pub struct RunSpec {
    pub server_bin: PathBuf,
    pub members: usize,
    pub base_port: u16,
    pub server_args: Vec<String>,
    pub duration: Duration,
    pub faults: Vec<Fault>,
    pub workload: String,
    pub seed: u64,
    pub clients: usize,
    pub keys: usize,
    pub op_timeout: Duration,
    pub out_dir: PathBuf,
    pub budget: u64,
    pub unsafe_serializable: bool,
    pub unsafe_wipe_wal: bool,
    /// How long members get to serve again once the faults are healed.
    pub recover_timeout: Duration,
    /// See `check::Options::tolerate_known_etcd_bugs`.
    pub tolerate_known_etcd_bugs: bool,
    /// Client and peer mTLS (`https` URLs, certificates made for the run).
    pub tls: bool,
    /// The counting clients use Skiff client sessions.
    pub sessions: bool,
}

/// What a run produced.
pub struct RunResult {
    pub summary: String,
    /// Lines printed after the summary (per-point crash tallies).
    pub details: Vec<String>,
    pub report: Report,
    /// Where the artifacts of a failing run were written.
    pub artifacts: Option<PathBuf>,
}

/// Waits until member `i` answers a linearizable read, up to `limit`.
async fn wait_member(url: &str, limit: Duration) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if let Ok(mut c) = connect(url, Duration::from_secs(2)).await {
            if let Ok(Ok(_)) =
                tokio::time::timeout(Duration::from_secs(2), c.get(PREFIX, None)).await
            {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// The members that did not answer a linearizable read within `limit` (all members are
/// waited for at once).
async fn wait_ready(cluster: &Cluster, limit: Duration) -> Vec<usize> {
    let tasks: Vec<_> = cluster
        .client_urls()
        .into_iter()
        .map(|url| tokio::spawn(async move { wait_member(&url, limit).await }))
        .collect();
    let mut down = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        if !matches!(t.await, Ok(true)) {
            down.push(i);
        }
    }
    down
}

fn log_tail(path: &std::path::Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// The store's current revision, by a linearizable read through any member.
async fn current_revision(cluster: &Cluster) -> Option<i64> {
    for url in cluster.client_urls() {
        if let Ok(mut c) = connect(&url, Duration::from_secs(2)).await {
            if let Ok(Ok(r)) =
                tokio::time::timeout(Duration::from_secs(2), c.get(PREFIX, None)).await
            {
                return r.header().map(|h| h.revision());
            }
        }
    }
    None
}

/// Each member's HashKV at `rev`, once it has applied `rev` (bounded wait per member).
async fn hashes(cluster: &Cluster, rev: i64) -> Vec<MemberHash> {
    let tasks: Vec<_> = cluster
        .client_urls()
        .into_iter()
        .enumerate()
        .map(|(i, url)| tokio::spawn(async move { member_hash(i, &url, rev).await }))
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        if let Ok(Some(h)) = t.await {
            out.push(h);
        }
    }
    out
}

async fn member_hash(i: usize, url: &str, rev: i64) -> Option<MemberHash> {
    let Ok(mut c) = connect(url, Duration::from_secs(2)).await else {
        return None;
    };
    let end = Instant::now() + Duration::from_secs(15);
    while Instant::now() < end {
        let r = tokio::time::timeout(
            Duration::from_secs(2),
            c.get(PREFIX, Some(GetOptions::new().with_serializable())),
        )
        .await;
        if matches!(r, Ok(Ok(ref g)) if g.header().is_some_and(|h| h.revision() >= rev)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let h = tokio::time::timeout(Duration::from_secs(5), c.hash_kv(rev)).await;
    let Ok(Ok(h)) = h else { return None };
    Some(MemberHash {
        member: i as u32,
        rev,
        compact_rev: h.compact_version(),
        hash: h.hash(),
    })
}

pub async fn run(spec: &RunSpec) -> Result<RunResult> {
    if spec.members == 0 || spec.clients == 0 || spec.keys == 0 {
        bail!("--members, --clients and --keys must be at least 1");
    }
    let counting = spec.workload == "counter";
    if spec.sessions && !counting {
        bail!("--sessions is for --workload counter");
    }
    if spec.sessions && spec.tls {
        bail!("--sessions runs over plaintext connections only (no --tls)");
    }
    // The counting clients do not draw from a mix.
    let mix = Mix::named(if counting { "kv" } else { &spec.workload })?;
    let tmp = tempfile::Builder::new()
        .prefix("skiff-chaos-")
        .tempdir()
        .context("creating the run's temporary directory")?;
    let proxies = spec
        .faults
        .iter()
        .any(|f| matches!(f, Fault::Delay | Fault::Drop));
    if proxies && spec.faults.contains(&Fault::Partition) {
        // In namespaces the members would reach each other's proxies through the bridge,
        // around the cuts; keep the two kinds of network fault to separate runs.
        bail!("the partition fault cannot be combined with delay or drop in one run");
    }
    let net = if spec.faults.contains(&Fault::Partition) {
        Some(Net::setup(spec.base_port, spec.members)?)
    } else {
        None
    };
    let tls = if spec.tls {
        let mut hosts = vec!["127.0.0.1".to_string(), "localhost".to_string()];
        if let Some(net) = &net {
            hosts.extend((0..spec.members).map(|i| net.member_ip(i)));
        }
        let files = skiff_chaos::tls::generate(tmp.path(), &hosts)?;
        use_client_tls(files.client_options()?);
        Some(files)
    } else {
        None
    };
    let crash_points = spec.faults.contains(&Fault::CrashPoints);
    let disk_faults = spec.faults.contains(&Fault::Disk);
    // Before anything starts: no C compiler, no disk fault.
    let disk_shim = if disk_faults {
        Some(disk::build_shim(tmp.path())?)
    } else {
        None
    };
    let mut extra_args = spec.server_args.clone();
    if crash_points {
        // Before anything starts: etcd and plain skiff have no failpoints.
        crash::check_binary(&spec.server_bin, tmp.path(), spec.base_port).await?;
        if !extra_args.iter().any(|a| a.starts_with("--snapshot-count")) {
            extra_args.push(format!("--snapshot-count={}", crash::SNAPSHOT_COUNT));
        }
    }
    let cluster_spec = ClusterSpec {
        bin: spec.server_bin.clone(),
        members: spec.members,
        base_port: spec.base_port,
        token: format!("skiff-chaos-{}", spec.seed),
        extra_args,
        peer_proxies: proxies,
        tls,
    };
    let mut cluster = Cluster::new(cluster_spec, tmp.path(), net);
    if crash_points {
        cluster.env = crash::member_env();
    }
    cluster.start_proxies().await?;
    cluster.start_all()?;
    let down = wait_ready(&cluster, Duration::from_secs(30)).await;
    if let Some(i) = down.first() {
        bail!(
            "member {i} did not become ready within 30 s; last lines of its log:\n{}",
            log_tail(&cluster.members[*i].log_path)
        );
    }

    let rec = Arc::new(Recorder::new());
    let deadline = Instant::now() + spec.duration;
    let wspec = Arc::new(WorkloadSpec {
        keys: spec.keys,
        mix,
        op_timeout: spec.op_timeout,
        lease_ttl: (spec.duration.as_secs() as i64) + 300,
        unsafe_serializable: spec.unsafe_serializable,
        deadline,
    });
    let urls = cluster.client_urls();
    let (drain_tx, drain_rx) = watch::channel(None);
    let hard_deadline = deadline + Duration::from_secs(120);
    let mut clients = Vec::new();
    let mut watchers = Vec::new();
    let tally = Arc::new(Tally::default());
    // A counting client finishes the increment it is in (faults healed by then).
    let finish_by = deadline + COUNTER_FINISH;
    for id in 0..spec.clients {
        let member = id % spec.members;
        clients.push(if counting {
            tokio::spawn(run_counter_client(
                id as u32,
                member as u32,
                urls[member].clone(),
                cluster.incarnations.clone(),
                rec.clone(),
                wspec.clone(),
                tally.clone(),
                finish_by,
                spec.sessions,
            ))
        } else {
            tokio::spawn(run_client(
                id as u32,
                member as u32,
                urls[member].clone(),
                cluster.incarnations.clone(),
                rec.clone(),
                wspec.clone(),
                spec.seed,
            ))
        });
        watchers.push(tokio::spawn(run_watcher(
            id as u32,
            urls[member].clone(),
            rec.clone(),
            drain_rx.clone(),
            hard_deadline,
            spec.op_timeout,
        )));
    }

    let fspec = FaultSpec {
        faults: spec.faults.clone(),
        deadline,
        op_timeout: spec.op_timeout,
        client_id: spec.clients as u32,
        unsafe_wipe_wal: spec.unsafe_wipe_wal,
        disk_shim,
    };
    let done = run_faults(&mut cluster, &rec, &fspec, spec.seed).await?;
    let fault_log = done.log;
    for c in clients {
        // Each client stops by the deadline plus one op timeout (a counting one by
        // `finish_by`); abort a stuck one.
        let stop_by = if counting {
            finish_by.saturating_duration_since(Instant::now())
        } else {
            Duration::ZERO
        };
        let abort = c.abort_handle();
        if tokio::time::timeout(stop_by + spec.op_timeout + Duration::from_secs(10), c)
            .await
            .is_err()
        {
            abort.abort();
        }
    }

    let unavailable: Vec<u32> = wait_ready(&cluster, spec.recover_timeout)
        .await
        .into_iter()
        .map(|i| i as u32)
        .collect();
    let final_rev = current_revision(&cluster).await.unwrap_or(0);
    let final_count = if counting {
        final_counter(&cluster).await
    } else {
        None
    };
    let _ = drain_tx.send(Some(Drain {
        target: final_rev,
        deadline: Instant::now() + Duration::from_secs(20),
    }));
    let mut watches = Vec::new();
    for w in watchers {
        let abort = w.abort_handle();
        match tokio::time::timeout(Duration::from_secs(30), w).await {
            Ok(Ok(log)) => watches.push(log),
            _ => abort.abort(),
        }
    }
    let member_hashes = if final_rev > 0 {
        hashes(&cluster, final_rev).await
    } else {
        Vec::new()
    };
    cluster.stop_all();

    let history = History {
        ops: rec.take_ops(),
        watches,
        hashes: member_hashes,
        unsafe_serializable: spec.unsafe_serializable,
        faults: fault_log,
        final_rev,
        members: spec.members,
        unavailable,
    };
    let opts = check::Options {
        budget: spec.budget,
        members: Some(spec.members),
        tolerate_known_etcd_bugs: spec.tolerate_known_etcd_bugs,
    };
    let history = Arc::new(history);
    let h2 = history.clone();
    let mut report = tokio::task::spawn_blocking(move || check::check(&h2, &opts)).await?;

    if disk_faults && done.disk.did_not_stop > 0 {
        report.anomalies.push(check::Anomaly::new(
            "disk",
            format!(
                "{} member(s) kept running after a failed fdatasync (fsyncgate: a \
                 retried sync may report lost data as durable)",
                done.disk.did_not_stop
            ),
            Vec::new(),
        ));
    }
    let mut summary = summary_line(&history, &report);
    let mut details = Vec::new();
    if disk_faults {
        summary.push_str(&done.disk.summary());
    }
    if crash_points {
        let tally = done.crash.tally();
        let fired: u32 = tally.iter().map(|(_, t)| t.fired).sum();
        let armed: u32 = tally.iter().map(|(_, t)| t.armed).sum();
        let never: Vec<&str> = tally
            .iter()
            .filter(|(_, t)| t.fired == 0)
            .map(|(p, _)| *p)
            .collect();
        summary.push_str(&format!(
            " crash_points_fired={fired}/{armed} crash_points_never={} other_exits={}",
            if never.is_empty() {
                "none".to_string()
            } else {
                never.join(",")
            },
            done.crash.other_exits
        ));
        details.push(format!(
            "crash points (fired/armed): {}",
            tally
                .iter()
                .map(|(p, t)| format!("{p} {}/{}", t.fired, t.armed))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if counting {
        let counted = counter_tally(&history, &tally, final_count, spec.sessions);
        summary.push_str(&format!(" {}", counted.summary()));
        if let Some(lost) = counted.lost() {
            report
                .anomalies
                .push(check::Anomaly::new("counter", lost, Vec::new()));
        }
        if let Some(doubled) = counted.doubled() {
            report
                .anomalies
                .push(check::Anomaly::new("counter", doubled, Vec::new()));
        }
    }
    let artifacts = if report.ok() {
        None
    } else {
        Some(write_artifacts(spec, &cluster, &history, &report)?)
    };
    drop(cluster);
    drop(tmp);
    Ok(RunResult {
        summary,
        details,
        report,
        artifacts,
    })
}

/// How long a counting client may take, after the deadline, to finish its increment.
const COUNTER_FINISH: Duration = Duration::from_secs(60);

/// The counting workload's result: the counter's final value against the increments
/// the clients know they made.
struct Counted {
    /// The final read's count, or (no read answered) the highest the history shows.
    counter: u64,
    /// The highest count any successful read or write of the history shows.
    seen: u64,
    acknowledged: u64,
    unknown_attempts: u64,
    unresolved: u64,
    sessions: bool,
    sessions_lost: u64,
}

impl Counted {
    fn summary(&self) -> String {
        let mut s = format!(
            "counter={} acknowledged={} excess={} unknown_attempts={} unresolved={} sessions={}",
            self.counter,
            self.acknowledged,
            self.counter as i64 - self.acknowledged as i64,
            self.unknown_attempts,
            self.unresolved,
            if self.sessions { "on" } else { "off" }
        );
        if self.sessions {
            s.push_str(&format!(" sessions_lost={}", self.sessions_lost));
        }
        s
    }

    /// With sessions, a counter above the acknowledged increments (and those whose
    /// outcome stayed unknown): a repeated increment applied twice, which sessions
    /// exist to prevent (etcd ignores their metadata, so there it can happen).
    fn doubled(&self) -> Option<String> {
        (self.sessions && self.counter > self.acknowledged + self.unresolved).then(|| {
            format!(
                "with sessions the counter is {} but only {} increments were acknowledged \
                 ({} unresolved): an increment was applied twice",
                self.counter, self.acknowledged, self.unresolved
            )
        })
    }

    /// A counter below the acknowledged increments, or below a count once seen:
    /// increments were lost.
    fn lost(&self) -> Option<String> {
        (self.counter < self.acknowledged.max(self.seen)).then(|| {
            format!(
                "the counter is {} but {} increments were acknowledged and {} was seen",
                self.counter, self.acknowledged, self.seen
            )
        })
    }
}

/// The counter as a linearizable read through any member sees it once every client
/// has stopped.
async fn final_counter(cluster: &Cluster) -> Option<u64> {
    for url in cluster.client_urls() {
        if let Ok(mut c) = connect(&url, Duration::from_secs(2)).await {
            if let Ok(Ok(r)) =
                tokio::time::timeout(Duration::from_secs(2), c.get(counter_key(), None)).await
            {
                let value = r
                    .kvs()
                    .first()
                    .map(|kv| kv.value_str().unwrap_or("").to_string());
                return Some(value.as_deref().and_then(count_of).unwrap_or(0));
            }
        }
    }
    None
}

/// The counter's final value (the final read) and the highest count the history shows
/// (a successful compare-and-put or a read; the counter only grows).
fn counter_tally(h: &History, tally: &Tally, final_read: Option<u64>, sessions: bool) -> Counted {
    let seen = h
        .ops
        .iter()
        .filter_map(|op| match &op.outcome {
            Outcome::Ok(Response::Get { kv: Some(kv), .. }) => count_of(&kv.value),
            Outcome::Ok(Response::Cas {
                succeeded: true, ..
            }) => match &op.req {
                Request::Cas { value, .. } => count_of(value),
                _ => None,
            },
            _ => None,
        })
        .max()
        .unwrap_or(0);
    Counted {
        counter: final_read.unwrap_or(seen),
        seen,
        acknowledged: tally.acknowledged.load(Ordering::Relaxed),
        unknown_attempts: tally.unknown_attempts.load(Ordering::Relaxed),
        unresolved: tally.unresolved.load(Ordering::Relaxed),
        sessions,
        sessions_lost: tally.sessions_lost.load(Ordering::Relaxed),
    }
}

fn summary_line(h: &History, r: &Report) -> String {
    let unknown = h.ops.iter().filter(|o| o.is_unknown()).count();
    let failed = h
        .ops
        .iter()
        .filter(|o| matches!(o.outcome, Outcome::Failed(_)))
        .count();
    let events: usize = h
        .watches
        .iter()
        .flat_map(|w| &w.records)
        .map(|r| match r {
            WatchRecord::Events { events, .. } => events.len(),
            _ => 0,
        })
        .sum();
    format!(
        "ops={} unknown={} anomalies={} checker={} failed={} watch_events={} faults={} revision={} known_etcd_bugs={}",
        h.ops.len(),
        unknown,
        r.anomalies.len(),
        r.verdict(),
        failed,
        events,
        h.faults.len(),
        h.final_rev,
        r.known.len()
    )
}

#[derive(Serialize)]
struct MinimalAnomaly<'a> {
    checker: &'a str,
    message: &'a str,
    ops: Vec<&'a Op>,
}

fn write_artifacts(spec: &RunSpec, cluster: &Cluster, h: &History, r: &Report) -> Result<PathBuf> {
    let dir = spec.out_dir.join(spec.seed.to_string());
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let write = |name: &str, text: String| {
        let p = dir.join(name);
        std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))
    };
    write("history.json", serde_json::to_string(h)?)?;
    write("report.json", serde_json::to_string_pretty(r)?)?;
    let minimal: Vec<MinimalAnomaly> = r
        .anomalies
        .iter()
        .map(|a| MinimalAnomaly {
            checker: a.checker,
            message: &a.message,
            ops: h.ops.iter().filter(|o| a.ops.contains(&o.id)).collect(),
        })
        .collect();
    write("minimal.json", serde_json::to_string_pretty(&minimal)?)?;
    for m in &cluster.members {
        if m.log_path.exists() {
            std::fs::copy(&m.log_path, dir.join(format!("{}.log", m.name)))?;
        }
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counted(counter: u64, seen: u64, acknowledged: u64) -> Counted {
        Counted {
            counter,
            seen,
            acknowledged,
            unknown_attempts: 0,
            unresolved: 0,
            sessions: false,
            sessions_lost: 0,
        }
    }

    #[test]
    fn a_counter_below_what_was_acknowledged_or_seen_is_a_loss() {
        assert!(counted(10, 10, 10).lost().is_none());
        // Double applies: more than acknowledged, reported in the summary only.
        assert!(counted(12, 12, 10).lost().is_none());
        assert!(counted(12, 12, 10).summary().contains("excess=2"));
        assert!(counted(12, 12, 10).summary().ends_with("sessions=off"));
        assert!(counted(9, 9, 10).lost().is_some());
        assert!(counted(9, 11, 8).lost().is_some());
    }

    #[test]
    fn with_sessions_a_double_apply_is_an_anomaly() {
        assert!(
            counted(12, 12, 10).doubled().is_none(),
            "without sessions: expected"
        );
        let on = |counter, acknowledged, unresolved| Counted {
            sessions: true,
            unresolved,
            ..counted(counter, counter, acknowledged)
        };
        assert!(on(10, 10, 0).doubled().is_none());
        assert!(
            on(11, 10, 1).doubled().is_none(),
            "one outcome never learnt"
        );
        assert!(on(12, 10, 1).doubled().is_some());
    }
}
