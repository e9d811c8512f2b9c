//! `defrag`, as etcdctl 3.4 runs it, with a spinner on stderr while a member
//! defragments when (and only when) stderr is a terminal. Scripts and pipes see
//! exactly etcdctl's output. `defrag --data-dir` (a stopped member's files) is not
//! built yet: it fails naming what is missing.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use clap::Args;
use indicatif::ProgressBar;

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
