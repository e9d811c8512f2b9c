//! The workloads, one module each; [`run`] connects, builds one worker per client and
//! drives them, returning the report to print.
//!
//! The request/response workloads (put, range, txn-put, lease-keepalive, mixed) share the
//! closed-loop driver in `runner`; watch-latency has its own shape (one paced writer,
//! many watchers) and fdatasync touches only the local disk.

mod fdatasync;
mod kv;
mod lease;
mod watch;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;

use crate::cli::{Cli, Command, GlobalOpts};
use crate::conn::connect_all;
use crate::progress::Progress;
use crate::rate::RateLimiter;
use crate::report::Report;
use crate::runner::{self, Worker};
use crate::stats::summarize;

/// Runs the subcommand selected on the command line.
pub async fn run(cli: &Cli) -> Result<Report> {
    let g = &cli.global;
    match &cli.command {
        Command::Fdatasync(o) => return fdatasync::run(o),
        Command::Plot(_) => anyhow::bail!("plot is not a workload"),
        _ => {}
    }
    let conns = connect_all(g).await?;
    match &cli.command {
        // Already handled above; kept so the match stays exhaustive without a panic.
        Command::Fdatasync(o) => fdatasync::run(o),
        Command::WatchLatency(o) => watch::run(g, o, conns).await,
        Command::Put(o) => drive("put", g, kv::put_workers(g, o, &conns)).await,
        Command::Range(o) => drive("range", g, kv::range_workers(g, o, &conns)).await,
        Command::TxnPut(o) => drive("txn-put", g, kv::txn_workers(g, o, &conns)).await,
        Command::Mixed(o) => drive("mixed", g, kv::mixed_workers(g, o, &conns)).await,
        Command::LeaseKeepalive(o) => {
            let workers = lease::workers(g, o, &conns).await?;
            drive("lease-keepalive", g, workers).await
        }
        Command::LeaseGrant(o) => {
            let granted = Arc::new(std::sync::Mutex::new(Vec::new()));
            let report = drive(
                "lease-grant",
                g,
                lease::grant_workers(g, o, &conns, &granted),
            )
            .await?;
            lease::write_ids(&o.ids_file, &granted)?;
            Ok(report)
        }
        Command::Plot(_) => anyhow::bail!("plot is not a workload"),
    }
}

async fn drive<W: Worker>(workload: &str, g: &GlobalOpts, workers: Vec<W>) -> Result<Report> {
    let progress = Progress::new(g.total);
    let out = runner::run(
        workers,
        g.total,
        Arc::new(RateLimiter::new(g.rate)),
        Duration::from_secs_f64(g.request_timeout),
        &progress,
    )
    .await;
    progress.finish();
    let out = out?;
    // Per-kind figures only add information when a workload mixes operations.
    let by_kind: BTreeMap<String, _> = if out.by_kind.len() > 1 {
        out.by_kind
            .into_iter()
            .map(|(k, r)| (k.to_string(), summarize(r, out.elapsed)))
            .collect()
    } else {
        BTreeMap::new()
    };
    Ok(Report {
        workload: workload.to_string(),
        unit: "request".to_string(),
        summary: summarize(out.overall, out.elapsed),
        by_kind,
    })
}
