//! The fault injector: until the deadline, every 1-3 s, one fault from the enabled list,
//! held for 1-3 s and then healed. Faults: kill -9 and restart (a random member or the
//! leader), SIGSTOP/SIGCONT, restart of all members, compaction during traffic, network
//! partition (isolate a member from its peers, or take its link down), delay or drop of
//! the peer traffic into a member through its proxy, and replacement of a member
//! (removed, its data dir wiped, added back as a learner, started with `existing` and
//! promoted once caught up: an operator replacing a member whose disk died), and a
//! restart with one of Skiff's failpoints armed until it crashes there (`crash-points`).
//!
//! Guarantee: when [`run_faults`] returns, every member is running, resumed and connected
//! (or an error says which could not be restarted).

use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use skiff_chaos::cluster::Cluster;
use skiff_chaos::history::{FaultEvent, Request, Response};

use super::crash::CrashPoints;
use super::disk::{DiskFaults, DiskTally};
use super::workload::{connect, execute, Recorder, PREFIX};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Kill,
    Pause,
    Partition,
    RestartAll,
    Compact,
    /// Delay the peer traffic into a member (through its proxy).
    Delay,
    /// Reset and refuse the peer connections into a member (through its proxy).
    Drop,
    /// Remove a member, wipe it, add it back as a learner and promote it.
    Membership,
    /// Restart a member with one of Skiff's failpoints armed until it crashes there
    /// (see [`super::crash`]).
    CrashPoints,
    /// A member's WAL `fdatasync` fails with EIO through an `LD_PRELOAD` shim (see
    /// [`super::disk`]).
    Disk,
}

impl FromStr for Fault {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Fault> {
        Ok(match s {
            "kill" => Fault::Kill,
            "pause" => Fault::Pause,
            "partition" => Fault::Partition,
            "restart-all" => Fault::RestartAll,
            "compact" => Fault::Compact,
            "delay" => Fault::Delay,
            "drop" => Fault::Drop,
            "membership" => Fault::Membership,
            "crash-points" => Fault::CrashPoints,
            "disk" => Fault::Disk,
            other => bail!(
                "unknown fault {other:?} (kill, pause, partition, restart-all, compact, delay, drop, membership, crash-points, disk)"
            ),
        })
    }
}

/// Knobs of the injector.
pub struct FaultSpec {
    pub faults: Vec<Fault>,
    pub deadline: Instant,
    pub op_timeout: Duration,
    /// Client id used for the injector's own requests (compaction) in the history.
    pub client_id: u32,
    /// Delete a killed member's WAL before restarting it: deliberately unsafe, to prove
    /// the checker catches lost data.
    pub unsafe_wipe_wal: bool,
    /// The fsync shim of the `disk` fault (built by the run when it is enabled).
    pub disk_shim: Option<std::path::PathBuf>,
}

/// The timeout of one membership call.
const MEMBERSHIP_CALL: Duration = Duration::from_secs(3);
/// How long one step of a member's replacement is retried.
const MEMBERSHIP_STEP: Duration = Duration::from_secs(20);

struct Injector<'a> {
    cluster: &'a mut Cluster,
    rec: &'a Recorder,
    spec: &'a FaultSpec,
    rng: StdRng,
    log: Vec<FaultEvent>,
    crash: CrashPoints,
    disk: Option<DiskFaults>,
}

impl Injector<'_> {
    fn note(&mut self, what: String) {
        tracing::info!(fault = %what);
        self.log.push(FaultEvent {
            time: self.rec.now(),
            what,
        });
    }

    async fn sleep_upto(&self, d: Duration) {
        let left = self.spec.deadline.saturating_duration_since(Instant::now());
        tokio::time::sleep(d.min(left)).await;
    }

    fn hold(&mut self) -> Duration {
        Duration::from_millis(self.rng.random_range(1000..3000))
    }

    /// The member the others agree is leader, if one answers in time.
    async fn leader(&self) -> Option<usize> {
        for (i, url) in self.cluster.client_urls().iter().enumerate() {
            if !self.cluster.is_running(i) || self.cluster.is_paused(i) {
                continue;
            }
            let Ok(mut c) = connect(url, Duration::from_secs(1)).await else {
                continue;
            };
            let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(1), c.status()).await else {
                continue;
            };
            let me = s.header().map(|h| h.member_id());
            if me == Some(s.leader()) {
                return Some(i);
            }
        }
        None
    }

    async fn target(&mut self) -> usize {
        let n = self.cluster.members.len();
        if self.rng.random_bool(0.5) {
            if let Some(l) = self.leader().await {
                return l;
            }
        }
        self.rng.random_range(0..n)
    }

    async fn restart(&mut self, i: usize) -> Result<()> {
        if self.spec.unsafe_wipe_wal {
            let wal = self.cluster.members[i].data_dir.join("member").join("wal");
            if wal.exists() {
                std::fs::remove_dir_all(&wal)?;
                self.note(format!("UNSAFE: deleted the WAL of member {i}"));
            }
        }
        self.cluster.start(i)?;
        Ok(())
    }

    async fn one(&mut self, fault: Fault) -> Result<()> {
        match fault {
            Fault::Kill => {
                let i = self.target().await;
                self.cluster.kill(i).await?;
                self.note(format!("kill -9 member {i}"));
                let d = Duration::from_millis(self.rng.random_range(200..2000));
                self.sleep_upto(d).await;
                self.restart(i).await?;
                self.note(format!("restart member {i}"));
            }
            Fault::Pause => {
                let i = self.target().await;
                self.cluster.pause(i)?;
                self.note(format!("SIGSTOP member {i}"));
                let d = self.hold();
                self.sleep_upto(d).await;
                self.cluster.resume(i)?;
                self.note(format!("SIGCONT member {i}"));
            }
            Fault::RestartAll => {
                for i in 0..self.cluster.members.len() {
                    self.cluster.kill(i).await?;
                }
                self.note("kill -9 all members".into());
                self.sleep_upto(Duration::from_millis(300)).await;
                for i in 0..self.cluster.members.len() {
                    self.restart(i).await?;
                }
                self.note("restart all members".into());
            }
            Fault::Compact => self.compact().await,
            Fault::CrashPoints => {
                let i = self.target().await;
                let notes = self
                    .crash
                    .one(self.cluster, i, &mut self.rng, self.spec.op_timeout)
                    .await?;
                for n in notes {
                    self.note(n);
                }
            }
            Fault::Disk => {
                let i = self.target().await;
                let disk = self
                    .disk
                    .as_mut()
                    .ok_or_else(|| anyhow!("disk fault without its fsync shim"))?;
                let notes = disk.one(self.cluster, i).await?;
                for n in notes {
                    self.note(n);
                }
            }
            Fault::Membership => self.replace_member().await?,
            Fault::Delay | Fault::Drop => {
                let i = self.target().await;
                let ms = self.rng.random_range(50..400);
                let proxy = self
                    .cluster
                    .proxies
                    .get(i)
                    .ok_or_else(|| anyhow!("delay/drop fault without peer proxies"))?;
                let what = if fault == Fault::Delay {
                    proxy.set_delay(Duration::from_millis(ms));
                    format!("delay peer traffic into member {i} by {ms} ms")
                } else {
                    proxy.drop_all();
                    format!("drop peer connections into member {i}")
                };
                self.note(what);
                let d = self.hold();
                self.sleep_upto(d).await;
                self.cluster.proxies[i].heal();
                self.note(format!("peer proxy of member {i} healed"));
            }
            Fault::Partition => {
                let i = self.target().await;
                let isolate = self.rng.random_bool(0.6);
                let net = self
                    .cluster
                    .net
                    .as_mut()
                    .ok_or_else(|| anyhow!("partition fault without network namespaces"))?;
                if isolate {
                    net.isolate(i)?;
                } else {
                    net.link_down(i)?;
                }
                let what = if isolate {
                    "isolate from peers"
                } else {
                    "link down"
                };
                self.note(format!("partition: {what} member {i}"));
                let d = self.hold();
                self.sleep_upto(d).await;
                if let Some(net) = self.cluster.net.as_mut() {
                    net.heal()?;
                }
                self.note("partition healed".into());
            }
        }
        Ok(())
    }

    /// Compacts a little behind the current revision, through a random running member.
    async fn compact(&mut self) {
        let n = self.cluster.members.len();
        let i = self.rng.random_range(0..n);
        if !self.cluster.is_running(i) || self.cluster.is_paused(i) {
            return;
        }
        let url = self.cluster.members[i].client_url();
        let Ok(mut c) = connect(&url, self.spec.op_timeout).await else {
            return;
        };
        let Ok(Ok(r)) = tokio::time::timeout(self.spec.op_timeout, c.get(PREFIX, None)).await
        else {
            return;
        };
        let rev = r.header().map(|h| h.revision()).unwrap_or(1);
        let at = (rev - self.rng.random_range(0..20)).max(1);
        let inc = self.cluster.incarnations[i].load(std::sync::atomic::Ordering::SeqCst);
        let resp = execute(
            self.rec,
            &mut c,
            self.spec.client_id,
            i as u32,
            inc,
            Request::Compact { rev: at },
            self.spec.op_timeout,
            false,
        )
        .await;
        let ok = matches!(resp, Some(Response::Compact { .. }));
        self.note(format!(
            "compact at revision {at} via member {i} (ok: {ok})"
        ));
    }

    /// A client of any member but `i` (membership calls go through another member).
    async fn admin(&self, i: usize) -> Option<etcd_client::Client> {
        for (j, url) in self.cluster.client_urls().iter().enumerate() {
            if j == i || !self.cluster.is_running(j) || self.cluster.is_paused(j) {
                continue;
            }
            if let Ok(c) = connect(url, MEMBERSHIP_CALL).await {
                return Some(c);
            }
        }
        None
    }

    /// Runs a membership call through another member than `i` until it succeeds or
    /// `within` has passed (the cluster refuses changes while a member has just
    /// restarted, and a learner's promotion until it has caught up). The last error
    /// when it never succeeds.
    async fn until_ok<T, F, Fut>(
        &self,
        i: usize,
        within: Duration,
        mut call: F,
    ) -> std::result::Result<T, String>
    where
        F: FnMut(etcd_client::Client) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let give_up = Instant::now() + within;
        loop {
            let last = match self.admin(i).await {
                Some(c) => match tokio::time::timeout(MEMBERSHIP_CALL, call(c)).await {
                    Ok(Ok(v)) => return Ok(v),
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => "timed out".to_string(),
                },
                None => "no other member answers".to_string(),
            };
            if Instant::now() >= give_up {
                return Err(last);
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Replaces a random member as an operator replaces one whose disk died: remove it,
    /// stop it, wipe its data dir, add it back as a learner on the same peer URL, start
    /// it with `--initial-cluster-state=existing` and promote it once it has caught up.
    /// A removal the cluster keeps refusing is noted and skipped; a member removed but
    /// not brought back is an error (the cluster would be left short of a member).
    async fn replace_member(&mut self) -> Result<()> {
        let i = self.rng.random_range(0..self.cluster.members.len());
        let name = self.cluster.members[i].name.clone();
        let peer = self.cluster.members[i].advertised_peer_url();
        let id = self
            .until_ok(i, MEMBERSHIP_STEP, |mut c| {
                let name = name.clone();
                async move {
                    let list = c.member_list().await?;
                    Ok(list
                        .members()
                        .iter()
                        .find(|m| m.name() == name)
                        .map(|m| m.id()))
                }
            })
            .await;
        let Ok(Some(id)) = id else {
            self.note(format!(
                "membership: member {i} not found in the member list: {id:?}"
            ));
            return Ok(());
        };
        if let Err(e) = self
            .until_ok(i, MEMBERSHIP_STEP, |mut c| async move {
                c.member_remove(id).await
            })
            .await
        {
            self.note(format!("membership: removal of member {i} refused: {e}"));
            return Ok(());
        }
        self.note(format!("membership: member {i} ({id:x}) removed"));
        self.cluster.kill(i).await?;
        let data = self.cluster.members[i].data_dir.clone();
        if data.exists() {
            std::fs::remove_dir_all(&data)?;
        }
        let added = self
            .until_ok(i, MEMBERSHIP_STEP, |mut c| {
                let peer = peer.clone();
                async move {
                    let learner = etcd_client::MemberAddOptions::new().with_is_learner();
                    c.member_add([peer], Some(learner)).await
                }
            })
            .await
            .map_err(|e| anyhow!("member {i} removed but not added back: {e}"))?;
        let new_id = added
            .member()
            .map(|m| m.id())
            .ok_or_else(|| anyhow!("member add answered without the member"))?;
        self.cluster.members[i].joins_existing = true;
        self.cluster.start(i)?;
        self.note(format!(
            "membership: member {i} wiped, added back as learner {new_id:x} and started"
        ));
        self.until_ok(i, MEMBERSHIP_STEP * 3, |mut c| async move {
            c.member_promote(new_id).await
        })
        .await
        .map_err(|e| anyhow!("member {i} added back but never promoted: {e}"))?;
        self.note(format!("membership: member {i} ({new_id:x}) promoted"));
        Ok(())
    }

    /// Undoes every fault: resume, heal the network, restart what is down.
    async fn heal_all(&mut self) -> Result<()> {
        if let Some(net) = self.cluster.net.as_mut() {
            net.heal()?;
        }
        for p in &self.cluster.proxies {
            p.heal();
        }
        for i in 0..self.cluster.members.len() {
            if self.cluster.is_paused(i) {
                self.cluster.resume(i)?;
            }
            if !self.cluster.is_running(i) {
                self.cluster.start(i)?;
            }
        }
        self.note("healed everything".into());
        Ok(())
    }
}

/// What the injector did.
pub struct FaultsDone {
    pub log: Vec<FaultEvent>,
    /// The crash-points fault's tally (all zero when it was not enabled).
    pub crash: CrashPoints,
    /// The disk fault's tally (all zero when it was not enabled).
    pub disk: DiskTally,
}

/// Injects faults until the deadline, then heals. Returns what it did.
pub async fn run_faults(
    cluster: &mut Cluster,
    rec: &Recorder,
    spec: &FaultSpec,
    seed: u64,
) -> Result<FaultsDone> {
    let mut inj = Injector {
        cluster,
        rec,
        spec,
        rng: StdRng::seed_from_u64(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        log: Vec::new(),
        crash: CrashPoints::default(),
        disk: spec.disk_shim.clone().map(DiskFaults::new),
    };
    let mut result = Ok(());
    if !spec.faults.is_empty() {
        // Let the workload start before the first fault.
        inj.sleep_upto(Duration::from_millis(1000)).await;
        while Instant::now() < spec.deadline {
            let fault = spec.faults[inj.rng.random_range(0..spec.faults.len())];
            if let Err(e) = inj.one(fault).await {
                result = Err(e);
                break;
            }
            let gap = Duration::from_millis(inj.rng.random_range(500..2000));
            inj.sleep_upto(gap).await;
        }
    }
    let healed = inj.heal_all().await;
    result.and(healed)?;
    Ok(FaultsDone {
        log: inj.log,
        crash: inj.crash,
        disk: inj.disk.map(|d| d.tally).unwrap_or_default(),
    })
}
