//! `defrag` and `snapshot save`, as etcdctl 3.4 runs them, with a progress display on
//! stderr when (and only when) stderr is a terminal: a spinner while a member
//! defragments, a byte bar while a snapshot streams. Scripts and pipes see exactly
//! etcdctl's output. `snapshot status|restore` and `defrag --data-dir` read etcd's
//! bbolt file, which skiffctl cannot yet: they fail naming what is missing.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use crate::cmd::cluster::cluster_endpoints;
use crate::exit::{fail, BAD_ARGS, ERROR, INTERRUPTED};
use crate::globals::Cli;

/// `defrag [options]`
#[derive(Args, Debug)]
pub struct DefragArgs {
    /// use all endpoints from the cluster member list
    #[arg(long)]
    pub cluster: bool,
    /// Optional. If present, defragments a data directory not in use by etcd.
    #[arg(long = "data-dir", default_value = "")]
    pub data_dir: String,
}

/// A spinner on stderr if it is a terminal.
fn spinner(msg: String) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let pb = ProgressBar::new_spinner().with_message(msg);
    pb.enable_steady_tick(Duration::from_millis(100));
    Some(pb)
}

/// `defrag`.
pub async fn defrag(cli: &Cli, a: &DefragArgs) -> anyhow::Result<()> {
    if !a.data_dir.is_empty() {
        eprintln!(
            "Failed to defragment etcd data[{}] (skiffctl cannot defragment a data directory yet)",
            a.data_dir
        );
        std::process::exit(ERROR);
    }
    let eps = cluster_endpoints(cli, a.cluster).await?;
    let client = cli.client_of(&eps, Some(cli.command_timeout)).await?;
    let mut failures = 0;
    for (i, ep) in eps.iter().enumerate() {
        let pb = spinner(format!("defragmenting {ep}"));
        let r = client
            .pinned(i)
            .expect("index comes from the client's own endpoint list")
            .defragment()
            .await;
        if let Some(pb) = pb {
            pb.finish_and_clear();
        }
        match r {
            Ok(_) => println!("Finished defragmenting etcd member[{ep}]"),
            Err(e) => {
                eprintln!("Failed to defragment etcd member[{ep}] ({e})");
                failures += 1;
            }
        }
    }
    if failures != 0 {
        let _ = std::io::stdout().flush();
        std::process::exit(ERROR);
    }
    Ok(())
}

/// The snapshot verbs.
#[derive(Subcommand, Debug)]
pub enum SnapshotCmd {
    /// Stores an etcd node backend snapshot to a given file
    Save(Plain),
    /// Gets backend snapshot status of a given file
    Status(Plain),
    /// Restores an etcd member snapshot to an etcd directory
    Restore(Plain),
}

/// Positional arguments (and, for restore, flags skiffctl does not read yet).
#[derive(Args, Debug)]
pub struct Plain {
    /// arguments
    #[arg(allow_hyphen_values = true, trailing_var_arg = true)]
    pub args: Vec<String>,
}

/// Whether a snapshot of `size` bytes ends with etcd's sha256 (etcd's `hasChecksum`).
fn has_checksum(size: u64) -> bool {
    size % 512 == 32
}

/// Runs a snapshot verb.
pub async fn snapshot(cli: &Cli, c: &SnapshotCmd) -> anyhow::Result<()> {
    let a = match c {
        SnapshotCmd::Save(a) => a,
        SnapshotCmd::Status(_) | SnapshotCmd::Restore(_) => {
            return Err(fail(
                ERROR,
                "skiffctl cannot read snapshot files yet (snapshot status and restore)",
            ))
        }
    };
    if a.args.len() != 1 {
        return Err(fail(BAD_ARGS, "snapshot save expects one argument"));
    }
    let eps = cli.endpoint_list();
    if eps.len() != 1 {
        return Err(fail(
            INTERRUPTED,
            format!(
                "snapshot must be requested to one selected node, not multiple [{}]",
                eps.join(" ")
            ),
        ));
    }
    let path = &a.args[0];
    let part = format!("{path}.part");
    // No deadline unless --command-timeout was given (etcdctl's rule for snapshots).
    let timeout = std::env::args()
        .any(|x| x.starts_with("--command-timeout"))
        .then_some(cli.command_timeout);
    let result = save(cli, &eps, timeout, path, &part).await;
    let _ = std::fs::remove_file(&part);
    result?;
    println!("Snapshot saved at {path}");
    Ok(())
}

async fn save(
    cli: &Cli,
    eps: &[String],
    timeout: Option<Duration>,
    path: &str,
    part: &str,
) -> anyhow::Result<()> {
    let interrupted = |e: String| fail(INTERRUPTED, e);
    let mut f = std::fs::File::create(part)
        .map_err(|e| interrupted(format!("could not open {part} ({e})")))?;
    let client = cli.client_of(eps, timeout).await?;
    let work = async {
        let mut stream = client
            .snapshot()
            .await
            .map_err(|e| interrupted(e.to_string()))?;
        let mut size: u64 = 0;
        let mut bar: Option<ProgressBar> = None;
        while let Some(msg) = stream
            .message()
            .await
            .map_err(|s| interrupted(skiff_client::Error::from_status(s).to_string()))?
        {
            if bar.is_none() && std::io::stderr().is_terminal() {
                let total = size + msg.blob.len() as u64 + msg.remaining_bytes;
                let pb = ProgressBar::new(total);
                if let Ok(style) = ProgressStyle::with_template(
                    "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                ) {
                    pb.set_style(style);
                }
                bar = Some(pb);
            }
            f.write_all(&msg.blob)
                .map_err(|e| interrupted(e.to_string()))?;
            size += msg.blob.len() as u64;
            if let Some(pb) = &bar {
                pb.set_position(size);
            }
        }
        if let Some(pb) = bar {
            pb.finish_and_clear();
        }
        Ok::<u64, anyhow::Error>(size)
    };
    let size = match timeout {
        Some(t) => tokio::time::timeout(t, work)
            .await
            .map_err(|_| interrupted("context deadline exceeded".into()))??,
        None => work.await?,
    };
    if !has_checksum(size) {
        return Err(interrupted(format!(
            "sha256 checksum not found [bytes: {size}]"
        )));
    }
    f.sync_all().map_err(|e| interrupted(e.to_string()))?;
    drop(f);
    std::fs::rename(part, path)
        .map_err(|e| interrupted(format!("could not rename {part} to {path} ({e})")))?;
    Ok(())
}
