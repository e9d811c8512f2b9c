//! `skiff-chaos`: runs an etcd-flag-compatible server cluster under faults with a recorded
//! client workload, then checks the history. Prints one summary line
//! (`ops=… unknown=… anomalies=… checker=ok|fail|unknown …`); exits 0 when the checkers
//! pass, 1 on any anomaly or unknown verdict (artifacts under `<out-dir>/<seed>/`), and 2
//! when the harness itself could not run.

mod harness;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Result};
use clap::Parser;

use harness::faults::Fault;
use harness::run::{run, RunSpec};

/// Parses `500ms`, `20s`, `2m` or a plain number of seconds.
fn parse_duration(s: &str) -> Result<Duration> {
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map(|i| s.split_at(i))
        .unwrap_or((s, "s"));
    let n: u64 = num.parse().map_err(|_| anyhow!("bad duration {s:?}"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(60 * n)),
        _ => Err(anyhow!("bad duration {s:?} (use ms, s or m)")),
    }
}

fn parse_faults(s: &str) -> Result<Vec<Fault>> {
    if s.is_empty() || s == "none" {
        return Ok(Vec::new());
    }
    s.split(',').map(|f| f.trim().parse()).collect()
}

#[derive(Parser, Debug)]
#[command(
    name = "skiff-chaos",
    about = "Fault-injection harness with linearizability and watch checkers"
)]
struct Args {
    /// Server binary taking etcd's flags (etcd, skiff).
    #[arg(long, default_value = "etcd")]
    server_bin: PathBuf,
    #[arg(long, default_value_t = 3)]
    members: usize,
    /// How long the workload and faults run (500ms, 20s, 2m).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// Comma-separated: kill, pause, partition, restart-all, compact, delay, drop, membership,
    /// crash-points, disk (or none). partition needs root; it cannot be combined with delay/drop
    /// in one run. crash-points needs Skiff's skiff-failpoints binary as --server-bin;
    /// disk (a WAL fdatasync failing with EIO through an LD_PRELOAD shim) needs cc.
    #[arg(long, default_value = "kill,pause,restart-all,compact")]
    faults: String,
    /// kv, watch, lease or counter (every client increments one counter by
    /// read-compare-put, retrying increments whose outcome is unknown).
    #[arg(long, default_value = "kv")]
    workload: String,
    /// With --workload counter: the clients use Skiff client sessions (a retry of an
    /// increment whose outcome is unknown carries the same sequence number, so Skiff
    /// applies it at most once; etcd ignores the session metadata).
    #[arg(long)]
    sessions: bool,
    /// Seed of the run's random choices (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    #[arg(long, default_value_t = 6)]
    clients: usize,
    #[arg(long, default_value_t = 5)]
    keys: usize,
    /// Member i listens on base+2i (clients) and base+2i+1 (peers).
    #[arg(long, default_value_t = 22000)]
    base_port: u16,
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    op_timeout: Duration,
    /// Failing runs write history.json, report.json, minimal.json and member logs here.
    #[arg(long, default_value = "target/chaos")]
    out_dir: PathBuf,
    /// States the linearizability search may explore per key before answering unknown.
    #[arg(long, default_value_t = 2_000_000)]
    budget: u64,
    /// Extra flag for every member (repeatable), e.g. --server-arg=--snapshot-count=500.
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    server_args: Vec<String>,
    /// How long members get to serve linearizable reads again once the faults are healed
    /// (longer is an availability anomaly).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    recover_timeout: Duration,
    /// Report occurrences of known etcd bugs (etcd #19179: a watch resumed at the
    /// compaction revision misses the deletes there) without failing: for runs against etcd
    /// itself, never for Skiff.
    #[arg(long)]
    tolerate_known_etcd_bugs: bool,
    /// Check a history.json written by an earlier run instead of running anything.
    #[arg(long)]
    check_history: Option<PathBuf>,
    /// UNSAFE, to prove the checker: send linearizable reads as serializable.
    #[arg(long)]
    unsafe_serializable_reads: bool,
    /// UNSAFE, to prove the checker: delete a killed member's WAL before restarting it.
    #[arg(long)]
    unsafe_wipe_wal: bool,
    /// Run the cluster with client and peer mTLS (`https` URLs, etcd's TLS flags, a CA
    /// and member certificate made for the run).
    #[arg(long)]
    tls: bool,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if let Some(path) = &args.check_history {
        return recheck(path, args.budget, args.tolerate_known_etcd_bugs);
    }
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default()
    });
    let faults = match parse_faults(&args.faults) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("skiff-chaos: {e:#}");
            return ExitCode::from(2);
        }
    };
    let spec = RunSpec {
        server_bin: args.server_bin,
        members: args.members,
        base_port: args.base_port,
        server_args: args.server_args,
        duration: args.duration,
        faults,
        workload: args.workload,
        seed,
        clients: args.clients,
        keys: args.keys,
        op_timeout: args.op_timeout,
        out_dir: args.out_dir,
        budget: args.budget,
        unsafe_serializable: args.unsafe_serializable_reads,
        unsafe_wipe_wal: args.unsafe_wipe_wal,
        recover_timeout: args.recover_timeout,
        tolerate_known_etcd_bugs: args.tolerate_known_etcd_bugs,
        tls: args.tls,
        sessions: args.sessions,
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("skiff-chaos: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    // On SIGINT or SIGTERM the run is dropped, which kills the members and removes the
    // namespaces (the cluster's Drop) before exiting.
    let outcome = rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = run(&spec) => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
            _ = term.recv() => Err(anyhow!("terminated")),
        }
    });
    match outcome {
        Ok(result) => {
            println!("{}", result.summary);
            for line in &result.details {
                println!("{line}");
            }
            for k in &result.report.known {
                eprintln!("known etcd bug (tolerated): {k}");
            }
            if let Some(dir) = &result.artifacts {
                for a in result.report.anomalies.iter().take(10) {
                    eprintln!("anomaly [{}]: {}", a.checker, a.message);
                }
                for u in &result.report.unknown {
                    eprintln!("unknown: {u}");
                }
                eprintln!(
                    "seed {seed}: history, minimal failing sub-histories and member logs in {}",
                    dir.display()
                );
            }
            if result.report.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("skiff-chaos: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Re-checks a saved history and prints its anomalies.
fn recheck(path: &std::path::Path, budget: u64, tolerate_known_etcd_bugs: bool) -> ExitCode {
    let history: skiff_chaos::history::History = match std::fs::read(path)
        .map_err(anyhow::Error::from)
        .and_then(|b| Ok(serde_json::from_slice(&b)?))
    {
        Ok(h) => h,
        Err(e) => {
            eprintln!("skiff-chaos: cannot read {}: {e:#}", path.display());
            return ExitCode::from(2);
        }
    };
    // Histories from runs carry their cluster size; without it (a history made by hand)
    // the convergence check is skipped.
    let members = (history.members > 0).then_some(history.members);
    let opts = skiff_chaos::check::Options {
        budget,
        members,
        tolerate_known_etcd_bugs,
    };
    let started = std::time::Instant::now();
    let report = skiff_chaos::check::check(&history, &opts);
    for a in &report.anomalies {
        println!("anomaly [{}]: {} (ops {:?})", a.checker, a.message, a.ops);
    }
    for u in &report.unknown {
        println!("unknown: {u}");
    }
    for k in &report.known {
        println!("known etcd bug: {k}");
    }
    println!(
        "ops={} anomalies={} checker={} check_ms={}",
        history.ops.len(),
        report.anomalies.len(),
        report.verdict(),
        started.elapsed().as_millis()
    );
    if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_faults_parse() {
        assert_eq!(parse_duration("20s").unwrap(), Duration::from_secs(20));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert!(parse_duration("5h").is_err());
        assert_eq!(
            parse_faults("kill,pause").unwrap(),
            vec![Fault::Kill, Fault::Pause]
        );
        assert_eq!(parse_faults("membership").unwrap(), vec![Fault::Membership]);
        assert_eq!(
            parse_faults("crash-points").unwrap(),
            vec![Fault::CrashPoints]
        );
        assert!(parse_faults("none").unwrap().is_empty());
        assert!(parse_faults("kill,flood").is_err());
    }
}
