//! `skiff`: runs one Skiff member. Accepts etcd's flags and `ETCD_*` environment
//! variables; with no flags it is a single member named `default` on
//! localhost:2379/2380 with its data in `default.skiff`, as etcd is.
//!
//! `--config-file` (or `ETCD_CONFIG_FILE`) replaces the flags and environment, as in
//! etcd. Logging follows `--logger` (capnslog: text lines; zap: JSON lines),
//! `--log-outputs` (stderr, stdout, files) and `--log-level`; `RUST_LOG` refines it.
//!
//! Exit codes: 0 after a clean shutdown (SIGINT/SIGTERM) or `--help`/`--version`;
//! 1 for unknown or contradictory flags and for any start-up failure.

use std::process::ExitCode;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::Parser;
use skiff_server::config::values::flag_error_message;
use skiff_server::config::{
    file, normalize_args, unrecognized_env_vars, Config, Flags, LogOutput, Logger,
};
use skiff_server::member::Member;
use tracing_subscriber::fmt::writer::{BoxMakeWriter, MakeWriterExt};
use tracing_subscriber::EnvFilter;

/// Also the entry point of the `skiff-failpoints` binary (src/bin), hence `pub`.
// glibc's malloc/free were a sixth of a member's CPU under a thousand clients (each
// request allocates its frames, messages and futures on one worker and frees them on
// another); mimalloc's per-thread free lists take most of that away (bench/PROFILE.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub fn main() -> ExitCode {
    // SAFETY: no other thread exists yet (mimalloc's option setter is not thread-safe).
    #[allow(unsafe_code)]
    unsafe {
        skiff_server::allocator::return_freed_memory_promptly();
    }
    // mimalloc asks for transparent huge pages, so a fresh allocation faults in and zeroes
    // 2 MiB at a time: the redb engine's allocator-state copy at each durable commit
    // spent a third of its time there, holding the writer (bench/PROFILE.md); fresh
    // buffers of any kind pay it. 4 KiB pages do not.
    #[cfg(target_os = "linux")]
    let _ = rustix::thread::disable_transparent_huge_pages(true);
    let args = normalize_args(std::env::args());
    let flags = match Flags::try_parse_from(args) {
        Ok(flags) => flags,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            // Printing help to a closed stdout is not worth a failure exit.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("{}", flag_error_message(&e).trim_end());
            return ExitCode::from(1);
        }
    };
    if let Err(e) = skiff_failpoints::init() {
        eprintln!("skiff: {e}");
        return ExitCode::from(1);
    }
    let (flags, file_warnings, config_file) = match flags.config_file.clone() {
        None => (flags, Vec::new(), None),
        Some(path) => match file::load(&path) {
            Ok(loaded) => (loaded.flags, loaded.warnings, Some(path)),
            Err(e) => {
                eprintln!("skiff: error verifying flags, {e}. See 'skiff --help'.");
                return ExitCode::from(1);
            }
        },
    };
    let config = match Config::from_flags(flags) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("skiff: error verifying flags, {e}. See 'skiff --help'.");
            return ExitCode::from(1);
        }
    };
    if let Err(e) = init_logging(&config) {
        eprintln!("skiff: error verifying flags, {e}. See 'skiff --help'.");
        return ExitCode::from(1);
    }
    if let Some(path) = &config_file {
        tracing::info!(path = %path.display(), "loaded the config file; command line flags and environment variables are ignored");
    } else {
        for var in unrecognized_env_vars() {
            tracing::warn!(%var, "unrecognized environment variable");
        }
    }
    for warning in file_warnings.iter().chain(&config.warnings) {
        tracing::warn!("{warning}");
    }
    if skiff_failpoints::ENABLED {
        if let Ok(spec) = std::env::var(skiff_failpoints::ENV_VAR) {
            tracing::warn!(%spec, "failpoints armed");
        }
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(run(config));
    // A failed member exits at once: whatever is still running (a stuck request, a
    // thread blocked on the disk) must not keep the process, and with it a voting
    // member, alive.
    tracing::debug!("runtime stopping");
    runtime.shutdown_timeout(Duration::from_millis(500));
    tracing::debug!("runtime stopped");
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "skiff stopped");
            ExitCode::from(1)
        }
    }
}

/// Sets up `tracing` as `--logger`, `--log-outputs` and `--log-level` say (`RUST_LOG`,
/// when set, refines the level, e.g. per module). A log file that cannot be opened
/// is an error, with etcd's wording.
fn init_logging(config: &Config) -> Result<(), String> {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(config.log_level.as_filter()));
    let mut writer: Option<BoxMakeWriter> = None;
    let mut ansi = false;
    for output in &config.log_outputs {
        let next = match output {
            LogOutput::Default | LogOutput::Stderr => {
                ansi = config.log_outputs.len() == 1
                    && std::io::IsTerminal::is_terminal(&std::io::stderr());
                BoxMakeWriter::new(std::io::stderr)
            }
            LogOutput::Stdout => BoxMakeWriter::new(std::io::stdout),
            LogOutput::File(path) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| {
                        format!(
                            "open sink {:?}: open {}: {e}",
                            path.display().to_string(),
                            path.display()
                        )
                    })?;
                BoxMakeWriter::new(std::sync::Arc::new(file))
            }
        };
        writer = Some(match writer {
            None => next,
            Some(prev) => BoxMakeWriter::new(prev.and(next)),
        });
    }
    let writer = writer.unwrap_or_else(|| BoxMakeWriter::new(std::io::stderr));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi);
    let result = match config.logger {
        Logger::Capnslog => builder.try_init(),
        Logger::Zap => builder.json().try_init(),
    };
    result.map_err(|e| format!("cannot set up logging: {e}"))
}

async fn run(config: Config) -> anyhow::Result<()> {
    let mut member = Member::start(config).await?;
    tokio::select! {
        _ = shutdown_signal() => {
            tracing::info!("received a stop signal, shutting down");
            member.stop().await
        }
        reason = member.failed() => {
            // Nothing acknowledged can be lost (the WAL is synced before any answer),
            // so there is nothing to wait for: report and exit.
            anyhow::bail!("member failed: {reason}")
        }
    }
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
