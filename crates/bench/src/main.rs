//! `skiff-bench`: a load generator for any etcd v3 endpoint (Skiff or etcd), modelled on
//! etcd's own `benchmark` tool so that figures from both are comparable.
//!
//! It prints a summary (total time, requests/s, slowest/fastest/average/stddev, a latency
//! histogram, p10..p99.9 and errors by gRPC code) as text or JSON, and exits non-zero when
//! the share of failed requests exceeds `--max-error-rate`, so a broken server cannot
//! produce a good-looking table.

mod cli;
mod conn;
mod keys;
mod plot;
mod progress;
mod rate;
mod report;
mod runner;
mod stats;
mod workloads;

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;

use cli::{Cli, OutputFormat};

// The load generator shares the machine's cores with the servers it measures, so its own
// CPU cost matters; with a thousand clients, glibc malloc/free was its largest cost.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code when the run completed but too many requests failed.
const EXIT_ERROR_RATE: u8 = 3;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut cli = Cli::parse();
    match real_main(&mut cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("skiff-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main(cli: &mut Cli) -> Result<ExitCode> {
    cli.validate()?;
    stats::list_slowest(cli.global.slowest_listed);
    if let cli::Command::Plot(o) = &cli.command {
        plot::run(o)?;
        return Ok(ExitCode::SUCCESS);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = rt.block_on(workloads::run(cli))?;
    match cli.global.write_out {
        OutputFormat::Text => print!("{}", report.to_text(cli.global.precise)),
        OutputFormat::Json => println!("{}", report.to_json()),
    }
    let rate = report.error_rate();
    if rate > cli.global.max_error_rate {
        eprintln!(
            "skiff-bench: {} of {} requests failed ({:.4}%), above --max-error-rate {}",
            report.summary.errors,
            report.summary.errors + report.summary.requests,
            rate * 100.0,
            cli.global.max_error_rate
        );
        return Ok(ExitCode::from(EXIT_ERROR_RATE));
    }
    Ok(ExitCode::SUCCESS)
}
