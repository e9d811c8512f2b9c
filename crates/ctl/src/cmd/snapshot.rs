//! `snapshot save|status|restore`, as etcdctl 3.4 runs them.
//!
//! - `save` streams `Maintenance.Snapshot` from one endpoint into `<file>.part`,
//!   checks that it ends with etcd's sha256, syncs and renames it into place; a byte
//!   bar on stderr while it streams when (and only when) stderr is a terminal.
//! - `status` reads the file with skiff-storage's bbolt reader and prints etcd's
//!   figures (`skiff_storage::bbolt::status`: CRC-32C over the buckets, revision,
//!   total keys, total size) in each `-w` format as etcdctl prints them.
//! - `restore` checks the file as etcdctl does (sha256 unless `--skip-hash-check`,
//!   every page read) and writes a new Skiff data dir from it
//!   (`skiff_server::restore`): the backend, and a WAL holding the identity the flags
//!   give; with `--etcd-layout`, etcd 3.4's data dir instead
//!   (`skiff_server::restore_etcd`: the db, the `.snap` and the WAL etcdctl writes, on
//!   which etcd 3.4 starts); a spinner on stderr while it runs on a terminal. Its log lines on stderr
//!   carry etcdctl's messages (`restoring snapshot`, `restored snapshot`) in the same
//!   JSON shape.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use crate::cmd::maint::spinner;
use crate::exit::{fail, BAD_ARGS, ERROR, INTERRUPTED};
use crate::globals::Cli;
use crate::output::go;

/// The snapshot verbs.
#[derive(Subcommand, Debug)]
pub enum SnapshotCmd {
    /// Stores an etcd node backend snapshot to a given file
    Save(Plain),
    /// Gets backend snapshot status of a given file
    Status(Plain),
    /// Restores an etcd member snapshot to an etcd directory
    Restore(RestoreArgs),
}

/// Positional arguments.
#[derive(Args, Debug)]
pub struct Plain {
    /// <filename>
    pub args: Vec<String>,
}

/// `snapshot restore <filename> [options]`
#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// Path to the data directory
    #[arg(long = "data-dir", default_value = "")]
    pub data_dir: String,
    /// Path to the WAL directory (use --data-dir if none given)
    #[arg(long = "wal-dir", default_value = "")]
    pub wal_dir: String,
    /// Initial cluster configuration for restore bootstrap
    #[arg(
        long = "initial-cluster",
        default_value = "default=http://localhost:2380"
    )]
    pub initial_cluster: String,
    /// Initial cluster token for the etcd cluster during restore bootstrap
    #[arg(long = "initial-cluster-token", default_value = "etcd-cluster")]
    pub initial_cluster_token: String,
    /// List of this member's peer URLs to advertise to the rest of the cluster
    #[arg(
        long = "initial-advertise-peer-urls",
        default_value = "http://localhost:2380"
    )]
    pub initial_advertise_peer_urls: String,
    /// Human-readable name for this member
    #[arg(long, default_value = "default")]
    pub name: String,
    /// Ignore snapshot integrity hash value (required if copied from data directory)
    #[arg(long = "skip-hash-check")]
    pub skip_hash_check: bool,
    /// Write etcd 3.4's data dir layout (member/snap/db, the .snap file and the WAL, as
    /// etcdctl writes them: etcd starts on it) instead of Skiff's
    #[arg(long = "etcd-layout")]
    pub etcd_layout: bool,
    /// <filename>
    pub args: Vec<String>,
}

/// Whether a snapshot of `size` bytes ends with etcd's sha256 (etcd's `hasChecksum`).
fn has_checksum(size: u64) -> bool {
    size % 512 == 32
}

/// Runs a snapshot verb.
pub async fn snapshot(cli: &Cli, c: &SnapshotCmd) -> anyhow::Result<()> {
    match c {
        SnapshotCmd::Save(a) => save(cli, a).await,
        SnapshotCmd::Status(a) => status(cli, a),
        SnapshotCmd::Restore(a) => restore(a),
    }
}

/// `snapshot status <file>`.
fn status(cli: &Cli, a: &Plain) -> anyhow::Result<()> {
    if a.args.len() != 1 {
        return Err(fail(
            BAD_ARGS,
            "snapshot status requires exactly one argument",
        ));
    }
    let mut printer = cli.printer()?;
    let path = Path::new(&a.args[0]);
    if let Err(e) = std::fs::metadata(path) {
        return Err(fail(
            ERROR,
            format!("stat {}: {}", a.args[0], go::io_error(&e)),
        ));
    }
    let st = skiff_storage::bbolt::status::status(path).map_err(|e| {
        // bbolt's own word for a file that is not a database at all.
        if skiff_storage::bbolt::is_bbolt(path) {
            fail(ERROR, e)
        } else {
            fail(ERROR, "invalid database")
        }
    })?;
    printer.db_status(&st)
}

/// One of etcdctl's zap log lines on stderr (`level` info, `msg`, then string fields).
fn log_line(msg: &str, fields: &[(&str, String)]) {
    let mut line = format!("{{\"level\":\"info\",\"msg\":{}", go::json_string(msg));
    for (k, v) in fields {
        line.push_str(&format!(",{}:{}", go::json_string(k), go::json_string(v)));
    }
    line.push('}');
    eprintln!("{line}");
}

/// `snapshot restore <file> [options]`.
fn restore(a: &RestoreArgs) -> anyhow::Result<()> {
    if a.args.len() != 1 {
        return Err(fail(
            BAD_ARGS,
            "snapshot restore requires exactly one argument",
        ));
    }
    let file = PathBuf::from(&a.args[0]);
    let data_dir = if a.data_dir.is_empty() {
        PathBuf::from(format!("{}.etcd", a.name))
    } else {
        PathBuf::from(&a.data_dir)
    };
    let wal_dir = (!a.wal_dir.is_empty()).then(|| PathBuf::from(&a.wal_dir));
    let flags = skiff_server::restore::RestoreFlags {
        name: a.name.clone(),
        data_dir: data_dir.clone(),
        wal_dir: wal_dir.clone(),
        initial_cluster: a.initial_cluster.clone(),
        initial_cluster_token: a.initial_cluster_token.clone(),
        initial_advertise_peer_urls: a.initial_advertise_peer_urls.clone(),
        skip_hash_check: a.skip_hash_check,
    };
    let member = data_dir.join("member");
    let dirs = [
        ("path", file.display().to_string()),
        (
            "wal-dir",
            wal_dir
                .clone()
                .unwrap_or_else(|| member.join("wal"))
                .display()
                .to_string(),
        ),
        ("data-dir", data_dir.display().to_string()),
        ("snap-dir", member.join("snap").display().to_string()),
    ];
    log_line("restoring snapshot", &dirs);
    let pb = spinner(format!("restoring {}", file.display()));
    let result = if a.etcd_layout {
        skiff_server::restore_etcd::restore(&file, &flags).map(|d| (d.member_id, d.cluster_id))
    } else {
        skiff_server::restore::restore(&file, &flags).map(|d| (d.member_id, d.cluster_id))
    };
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    let (member_id, cluster_id) = result.map_err(|e| fail(ERROR, format!("{e:#}")))?;
    let mut fields = dirs.to_vec();
    fields.push(("member-id", format!("{member_id:x}")));
    fields.push(("cluster-id", format!("{cluster_id:x}")));
    log_line("restored snapshot", &fields);
    Ok(())
}

/// `snapshot save <file>`.
async fn save(cli: &Cli, a: &Plain) -> anyhow::Result<()> {
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
    let result = stream_to(cli, &eps, timeout, path, &part).await;
    let _ = std::fs::remove_file(&part);
    result?;
    println!("Snapshot saved at {path}");
    Ok(())
}

/// Streams the snapshot into `part`, checks, syncs and renames it to `path`.
async fn stream_to(
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
