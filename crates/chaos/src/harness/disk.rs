//! The `disk` fault (issue 17): a real failed `fdatasync`, under the checkers. A member
//! is restarted with an `LD_PRELOAD` shim around libc's `fsync`/`fdatasync`
//! (`crates/server/tests/shim/fsync_eio.c`, compiled with `cc` at the start of the run);
//! once it serves, the shim is armed and the member's next WAL sync fails with EIO, as
//! a disk whose write-back failed would. Skiff's answer (ARCHITECTURE.md, "Failure
//! model") is to stop, never acknowledging the write whose sync failed; the member is
//! then restarted without the shim and the checkers verify that no acknowledged write
//! was lost and the history stayed linearizable.
//!
//! Guarantees: [`build_shim`] refuses the fault when no C compiler is found, before the
//! cluster starts; what each fault did is read from the member's log (the shim's own
//! line, `fsync_eio shim: failing ...`) and its exit, not assumed: a sync that failed
//! but did not stop the member within [`STOP_WITHIN`] is counted as `did_not_stop`
//! (and the member killed). Go's runtime calls `fsync` without libc, so against etcd
//! the shim never fires; the summary says so (`disk_eio_fired=0`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use skiff_chaos::cluster::Cluster;

/// The shim's source, shared with the server's disk-fault tests.
const SHIM_SOURCE: &str = include_str!("../../../server/tests/shim/fsync_eio.c");

/// How long an armed member may take to stop after its failed sync.
pub const STOP_WITHIN: Duration = Duration::from_secs(10);

/// Compiles the shim into `dir`; its path.
pub fn build_shim(dir: &Path) -> Result<PathBuf> {
    let src = dir.join("fsync_eio.c");
    let lib = dir.join("libfsync_eio.so");
    std::fs::write(&src, SHIM_SOURCE)?;
    let out = Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&lib)
        .arg(&src)
        .arg("-ldl")
        .output()
        .context("--faults disk needs a C compiler (cc) to build its fsync shim")?;
    if !out.status.success() {
        bail!(
            "building the fsync shim failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(lib)
}

/// What the disk faults did.
#[derive(Debug, Default, Clone, Copy)]
pub struct DiskTally {
    /// Faults injected (the shim armed).
    pub armed: u32,
    /// A sync failed (the shim's line in the member's log).
    pub fired: u32,
    /// The member stopped by itself after its sync failed.
    pub stopped: u32,
    /// The sync failed and the member was still running after [`STOP_WITHIN`].
    pub did_not_stop: u32,
}

impl DiskTally {
    /// The summary's words.
    pub fn summary(&self) -> String {
        format!(
            " disk_eio_fired={}/{} disk_eio_stopped={} disk_eio_did_not_stop={}",
            self.fired, self.armed, self.stopped, self.did_not_stop
        )
    }
}

/// The disk fault's state: the shim and the tally.
#[derive(Debug)]
pub struct DiskFaults {
    shim: PathBuf,
    pub tally: DiskTally,
}

impl DiskFaults {
    pub fn new(shim: PathBuf) -> DiskFaults {
        DiskFaults {
            shim,
            tally: DiskTally::default(),
        }
    }

    /// One fault on member `i`: restart it with the shim, arm it once the member
    /// serves, wait for the member to stop, restart it without the shim. The notes for
    /// the fault log.
    pub async fn one(&mut self, cluster: &mut Cluster, i: usize) -> Result<Vec<String>> {
        let mut notes = Vec::new();
        let trigger = self.shim.with_file_name(format!("eio-trigger-{i}"));
        let _ = std::fs::remove_file(&trigger);
        cluster.kill(i).await?;
        let env = [
            ("LD_PRELOAD".to_string(), self.shim.display().to_string()),
            (
                "FSYNC_EIO_TRIGGER".to_string(),
                trigger.display().to_string(),
            ),
            ("FSYNC_EIO_MATCH".to_string(), "/member/wal/".to_string()),
        ];
        cluster.start_with_env(i, &env)?;
        // Let it rejoin and take writes before its disk fails.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let log = cluster.members[i].log_path.clone();
        let from = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        std::fs::write(&trigger, b"")?;
        self.tally.armed += 1;
        notes.push(format!(
            "disk: member {i}'s next WAL fdatasync fails with EIO"
        ));
        let exited = cluster.wait_exit(i, STOP_WITHIN).await;
        let fired = log_has(&log, from, "fsync_eio shim: failing");
        let _ = std::fs::remove_file(&trigger);
        if fired {
            self.tally.fired += 1;
        }
        match (fired, exited) {
            (true, Some(status)) => {
                self.tally.stopped += 1;
                notes.push(format!(
                    "disk: member {i} stopped after its failed sync ({status})"
                ));
            }
            (true, None) => {
                self.tally.did_not_stop += 1;
                cluster.kill(i).await?;
                notes.push(format!(
                    "disk: member {i} still running {STOP_WITHIN:?} after its failed sync: killed"
                ));
            }
            (false, Some(status)) => {
                notes.push(format!(
                    "disk: member {i} exited ({status}) before any sync failed"
                ));
            }
            (false, None) => {
                cluster.kill(i).await?;
                notes.push(format!(
                    "disk: no sync of member {i} failed within {STOP_WITHIN:?} (the shim only \
                     reaches libc's fsync; Go calls the kernel directly): killed"
                ));
            }
        }
        cluster.start(i)?;
        notes.push(format!("disk: member {i} restarted on a healthy disk"));
        Ok(notes)
    }
}

/// Whether the member's log has `needle` past byte `from`.
fn log_has(log: &Path, from: u64, needle: &str) -> bool {
    let text = std::fs::read(log).unwrap_or_default();
    let tail = text.get(from as usize..).unwrap_or_default();
    String::from_utf8_lossy(tail).contains(needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shim_builds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let lib = build_shim(dir.path()).expect("cc builds the shim");
        assert!(lib.exists());
    }

    #[test]
    fn the_summary_names_every_count() {
        let t = DiskTally {
            armed: 3,
            fired: 2,
            stopped: 2,
            did_not_stop: 0,
        };
        assert_eq!(
            t.summary(),
            " disk_eio_fired=2/3 disk_eio_stopped=2 disk_eio_did_not_stop=0"
        );
    }
}
