//! `defrag`, as etcdctl 3.4 runs it, with a spinner on stderr while a member
//! defragments when (and only when) stderr is a terminal. Scripts and pipes see
//! exactly etcdctl's output.
//!
//! `defrag --data-dir <dir>` defragments a stopped member's backend,
//! `<dir>/member/snap/db`, as etcdctl 3.4 does: silent and exit 0 when done; while a
//! running member holds the file it waits, saying so after a second (etcdctl's
//! "waiting for etcd to close and release its lock ..."); a missing or unreadable file
//! is etcdctl's `cannot open database at <file> (<why>)`, exit 2 (etcdctl panics with
//! that message). A Skiff backend (its page store) is rebuilt by the backend's own
//! defragmentation; etcd's bbolt file is refused (`Failed to defragment etcd
//! data[<dir>] (...)`, exit 1): skiffctl does not rewrite bbolt files.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use clap::Args;
use indicatif::ProgressBar;

use skiff_storage::backend::{Backend, BackendConfig};

use crate::cmd::cluster::cluster_endpoints;
use crate::exit::ERROR;
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
pub fn spinner(msg: String) -> Option<ProgressBar> {
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
        return defrag_data(&a.data_dir);
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

/// `defrag --data-dir`: see the module docs.
fn defrag_data(dir: &str) -> anyhow::Result<()> {
    let db = std::path::Path::new(dir)
        .join("member")
        .join("snap")
        .join("db");
    let cannot_open = |why: String| -> ! {
        eprintln!("cannot open database at {} ({why})", db.display());
        std::process::exit(2);
    };
    if let Err(e) = std::fs::metadata(&db) {
        cannot_open(format!(
            "open {}: {}",
            db.display(),
            crate::output::go::io_error(&e)
        ));
    }
    if skiff_storage::bbolt::is_bbolt(&db) {
        eprintln!(
            "Failed to defragment etcd data[{dir}] (skiffctl cannot defragment etcd's bbolt \
             backend; use etcdctl 3.4 for an etcd data dir)"
        );
        std::process::exit(ERROR);
    }
    let started = std::time::Instant::now();
    let mut warned = false;
    let backend = loop {
        match Backend::open(&db, BackendConfig::default()) {
            Ok(b) => break b,
            Err(e) if e.is_already_open() => {
                if !warned && started.elapsed() >= Duration::from_secs(1) {
                    eprintln!(
                        "waiting for etcd to close and release its lock on {}. To defrag a \
                         running etcd instance, omit --data-dir.",
                        crate::output::go::quote(db.to_string_lossy().as_bytes())
                    );
                    warned = true;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => cannot_open(e.to_string()),
        }
    };
    if let Err(e) = backend.defragment() {
        eprintln!("Failed to defragment etcd data[{dir}] ({e})");
        std::process::exit(ERROR);
    }
    Ok(())
}
