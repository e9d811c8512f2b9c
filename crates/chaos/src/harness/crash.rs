//! The `crash-points` fault (issue 17): a member restarted as Skiff's `skiff-failpoints`
//! binary with one failpoint armed (`SKIFF_FAILPOINTS=<point>=<S>+panic|abort`), left to
//! run under the workload until the point crashes it (or killed when it was not reached
//! in time), then restarted without failpoints.
//!
//! Every point is made reachable in a short run: [`member_env`] shrinks the WAL's
//! segments (cuts), [`SNAPSHOT_COUNT`] makes snapshots frequent (saves) and the
//! catch-up window small, so a member kept down while the others write is sent a
//! snapshot (installs); `defrag-swap` and `defrag-after-swap` are provoked by a
//! defragment call to the member.
//! The point to arm is drawn at random among those armed least often so far, so every
//! point is tried in turn.
//!
//! Guarantees: [`check_binary`] refuses any server binary that is not `skiff-failpoints`
//! (etcd has no failpoints) before the cluster starts; when [`CrashPoints::one`]
//! returns Ok the member is running again without failpoints; what each attempt did is
//! tallied per point ([`CrashPoints::tally`]) from the member's own log line
//! (`failpoint <point> fired`), not assumed.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rand::rngs::StdRng;
use rand::Rng;

use skiff_chaos::cluster::Cluster;

use super::workload::{connect, PREFIX};

/// The environment variable that arms Skiff's failpoints.
const ARM: &str = "SKIFF_FAILPOINTS";

/// `--snapshot-count` of a crash-points run (unless the run sets its own).
pub const SNAPSHOT_COUNT: u64 = 100;
/// WAL segment size of a crash-points run: a cut every few dozen entries.
const SEGMENT_BYTES: u64 = 8 << 10;
/// Entries a member keeps behind its snapshot: a member that misses a few hundred
/// entries is sent a snapshot.
const CATCH_UP_ENTRIES: u64 = 50;

/// How long an armed member may run before its point counts as not reached.
const REACH_WITHIN: Duration = Duration::from_secs(10);

/// The environment every member of a crash-points run gets (knobs of the
/// skiff-failpoints binary, see its crate docs).
pub fn member_env() -> Vec<(String, String)> {
    vec![
        (
            skiff_failpoints::WAL_SEGMENT_BYTES.to_string(),
            SEGMENT_BYTES.to_string(),
        ),
        (
            skiff_failpoints::CATCH_UP_ENTRIES.to_string(),
            CATCH_UP_ENTRIES.to_string(),
        ),
    ]
}

/// Fails with a clear error unless `bin` is a server with Skiff's failpoints compiled
/// in: it is run once with a spec naming a point that does not exist, which only
/// `skiff-failpoints` refuses with its list of points (plain `skiff` refuses any spec
/// saying it has no failpoints; etcd ignores the variable and tries to start, and is
/// stopped after a few seconds). `scratch` is a directory for the probe's files.
pub async fn check_binary(bin: &Path, scratch: &Path, port: u16) -> Result<()> {
    let probe = "skiff-chaos-probe";
    // A data dir that is a file: whatever the binary is, it cannot start a member.
    let not_a_dir = scratch.join("probe-data");
    std::fs::write(&not_a_dir, b"").context("writing the probe's file")?;
    let url = |p: u16| format!("http://127.0.0.1:{p}");
    let mut cmd = tokio::process::Command::new(bin);
    cmd.env(ARM, format!("{probe}=off"))
        .arg("--name=probe")
        .arg(format!("--data-dir={}", not_a_dir.display()))
        .arg(format!("--listen-client-urls={}", url(port)))
        .arg(format!("--advertise-client-urls={}", url(port)))
        .arg(format!("--listen-peer-urls={}", url(port + 1)))
        .arg(format!("--initial-advertise-peer-urls={}", url(port + 1)))
        .arg(format!("--initial-cluster=probe={}", url(port + 1)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot run {}", bin.display()))?;
    let out = tokio::time::timeout(Duration::from_secs(5), child.wait_with_output()).await;
    let said = match out {
        Ok(Ok(o)) => String::from_utf8_lossy(&o.stderr).into_owned(),
        Ok(Err(e)) => format!("(could not be waited for: {e})"),
        Err(_) => "(it ignored SKIFF_FAILPOINTS and kept running)".to_string(),
    };
    if said.contains(&format!("unknown failpoint(s) {probe}")) {
        return Ok(());
    }
    let last = said.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("");
    bail!(
        "--faults crash-points needs Skiff's skiff-failpoints binary as --server-bin \
         (cargo build -p skiff-server --features failpoints --bin skiff-failpoints; etcd \
         has no failpoints); {} did not take SKIFF_FAILPOINTS, its last words: {last}",
        bin.display()
    )
}

/// How one armed point fared over a run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PointTally {
    /// Times a member was started with this point armed.
    pub armed: u32,
    /// Times it crashed the member (its `failpoint <point> fired` line was logged).
    pub fired: u32,
}

/// The crash-points fault's state over a run.
pub struct CrashPoints {
    tally: BTreeMap<&'static str, PointTally>,
    /// Exits with no failpoint line (a crash the point did not cause), noted.
    pub other_exits: u32,
}

impl Default for CrashPoints {
    fn default() -> Self {
        CrashPoints {
            tally: skiff_failpoints::POINTS
                .iter()
                .map(|p| (*p, PointTally::default()))
                .collect(),
            other_exits: 0,
        }
    }
}

/// The spec arming `point`, with a skip count drawn so that it fires under load rather
/// than at the first hit (points hit rarely fire at once or within a few hits).
fn arm_spec(point: &str, rng: &mut StdRng) -> String {
    let skip = match point {
        "snapshot-install" | "defrag-swap" | "defrag-after-swap" => 0,
        "snapshot-save" | "wal-segment-cut" => rng.random_range(0..2),
        "backend-commit" | "backend-after-commit" => rng.random_range(5..30),
        _ => rng.random_range(10..60),
    };
    // `abort` crashes without unwinding in any thread; `panic` also goes through the
    // member's panic-to-exit path. A defragment runs in a blocking task, whose panic
    // is caught: only abort crashes there.
    let action = if is_defrag_point(point) || rng.random_bool(0.5) {
        "abort"
    } else {
        "panic"
    };
    format!("{point}={skip}+{action}")
}

/// The points only a defragment call reaches.
fn is_defrag_point(point: &str) -> bool {
    matches!(point, "defrag-swap" | "defrag-after-swap")
}

/// Occurrences of `needle` in the member's log from byte `from` on.
fn log_count(log: &Path, from: u64, needle: &str) -> u32 {
    let text = std::fs::read(log).unwrap_or_default();
    let tail = text.get(from as usize..).unwrap_or_default();
    String::from_utf8_lossy(tail).matches(needle).count() as u32
}

impl CrashPoints {
    /// Per point: armed and fired counts, in the crate's order of points.
    pub fn tally(&self) -> Vec<(&'static str, PointTally)> {
        skiff_failpoints::POINTS
            .iter()
            .map(|p| (*p, self.tally.get(p).copied().unwrap_or_default()))
            .collect()
    }

    /// A point among those armed least often, at random.
    fn pick(&self, rng: &mut StdRng) -> &'static str {
        let least = self.tally.values().map(|t| t.armed).min().unwrap_or(0);
        let candidates: Vec<&'static str> = self
            .tally
            .iter()
            .filter(|(_, t)| t.armed == least)
            .map(|(p, _)| *p)
            .collect();
        candidates[rng.random_range(0..candidates.len())]
    }

    /// One crash-points fault on member `i`: kill it, restart it armed, provoke the
    /// point, wait for the crash (or kill it once `REACH_WITHIN` has passed), restart it
    /// without failpoints. Returns the notes for the fault log.
    pub async fn one(
        &mut self,
        cluster: &mut Cluster,
        i: usize,
        rng: &mut StdRng,
        op_timeout: Duration,
    ) -> Result<Vec<String>> {
        let point = self.pick(rng);
        let spec = arm_spec(point, rng);
        let mut notes = Vec::new();
        cluster.kill(i).await?;
        if point == "snapshot-install" {
            // Let the others write far past what their logs keep for a follower.
            let behind = fall_behind(cluster, i, 3 * (SNAPSHOT_COUNT + CATCH_UP_ENTRIES)).await;
            notes.push(format!(
                "crash-points: member {i} kept down while the others wrote {behind} revisions"
            ));
        }
        let log = cluster.members[i].log_path.clone();
        let from = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        cluster.start_with_env(i, &[(ARM.to_string(), spec.clone())])?;
        notes.push(format!(
            "crash-points: member {i} restarted with {ARM}={spec}"
        ));
        let began = Instant::now();
        let status = if is_defrag_point(point) {
            defragment_until_exit(cluster, i, op_timeout).await
        } else {
            cluster.wait_exit(i, REACH_WITHIN).await
        };
        let entry = self.tally.entry(point).or_default();
        entry.armed += 1;
        let fired = log_count(&log, from, &format!("failpoint {point} fired")) > 0;
        match status {
            Some(status) if fired => {
                entry.fired += 1;
                notes.push(format!(
                    "crash-points: member {i} crashed at {point} after {:.1?} ({status})",
                    began.elapsed()
                ));
            }
            Some(status) => {
                self.other_exits += 1;
                notes.push(format!(
                    "crash-points: member {i} exited ({status}) without reaching {point}"
                ));
            }
            None => {
                cluster.kill(i).await?;
                notes.push(format!(
                    "crash-points: {point} not reached within {REACH_WITHIN:?}: member {i} killed"
                ));
            }
        }
        cluster.start(i)?;
        notes.push(format!(
            "crash-points: member {i} restarted without failpoints"
        ));
        Ok(notes)
    }
}

/// The current revision through any running member but `i`.
async fn revision_without(cluster: &Cluster, i: usize) -> Option<i64> {
    for (j, url) in cluster.client_urls().iter().enumerate() {
        if j == i || !cluster.is_running(j) || cluster.is_paused(j) {
            continue;
        }
        let Ok(mut c) = connect(url, Duration::from_secs(1)).await else {
            continue;
        };
        if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_secs(1), c.get(PREFIX, None)).await {
            return r.header().map(|h| h.revision());
        }
    }
    None
}

/// Waits (up to 10 s) until the cluster's revision has advanced by `revisions` while
/// member `i` is down; how far it advanced.
async fn fall_behind(cluster: &Cluster, i: usize, revisions: u64) -> i64 {
    let start = revision_without(cluster, i).await.unwrap_or(0);
    let end = Instant::now() + Duration::from_secs(10);
    let mut now = start;
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if let Some(r) = revision_without(cluster, i).await {
            now = r;
            if now - start >= revisions as i64 {
                break;
            }
        }
    }
    now - start
}

/// Sends defragment calls to member `i` until its process exits (the armed swap crashed
/// it) or `REACH_WITHIN` has passed; the exit status if it exited.
async fn defragment_until_exit(
    cluster: &mut Cluster,
    i: usize,
    op_timeout: Duration,
) -> Option<std::process::ExitStatus> {
    let url = cluster.members[i].client_url();
    let end = Instant::now() + REACH_WITHIN;
    while Instant::now() < end {
        if let Ok(mut c) = connect(&url, op_timeout).await {
            let _ = tokio::time::timeout(op_timeout * 5, c.defragment()).await;
        }
        if let Some(s) = cluster.wait_exit(i, Duration::from_millis(300)).await {
            return Some(s);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn every_point_is_armed_in_turn_and_specs_parse() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut cp = CrashPoints::default();
        let n = skiff_failpoints::POINTS.len();
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..n {
            let p = cp.pick(&mut rng);
            cp.tally.entry(p).or_default().armed += 1;
            seen.insert(p);
            let spec = arm_spec(p, &mut rng);
            let r = skiff_failpoints::Registry::parse(&spec).expect("spec parses");
            assert!(r.check_names(skiff_failpoints::POINTS).is_ok(), "{spec}");
        }
        assert_eq!(seen.len(), n, "the first {n} picks cover every point");
        assert!(arm_spec("defrag-swap", &mut rng).ends_with("0+abort"));
    }

    #[tokio::test]
    async fn a_server_without_failpoints_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        // `true` exits 0 and says nothing: not skiff-failpoints.
        let err = check_binary(Path::new("true"), dir.path(), 29990)
            .await
            .expect_err("refused");
        assert!(
            err.to_string().contains("needs Skiff's skiff-failpoints"),
            "{err}"
        );
    }
}
