//! `make-mirror [options] <destination>`: keeps a destination cluster a copy of the
//! source's keys (under `--prefix`), as etcdctl 3.4 does, until killed.
//!
//! Guarantees (etcdctl 3.4's semantics):
//! - **order of checks**: exactly one destination argument (else exit 128); the
//!   destination's TLS flags (`--dest-cert`, `--dest-key`, `--dest-cacert`,
//!   `--dest-insecure-transport`; no authentication, as etcdctl) and then the source's
//!   global flags; the source's current revision `R` (a read of `foo`); then
//!   `--dest-prefix` with `--no-dest-prefix` is refused (exit 128).
//! - **base copy at one revision**: every key under the prefix as of `R`, read in pages
//!   of 1000, each put on the destination (value only: leases are not mirrored), keys
//!   renamed by replacing the first occurrence of `--prefix` with the destination prefix
//!   (`--dest-prefix`, the empty one with `--no-dest-prefix`, else `--prefix` itself).
//! - **updates**: a watch of the prefix from `R + 1`; each source revision's events
//!   (puts and single-key deletes) are applied as one destination txn, in order. A
//!   compacted revision (the base range or the watch) ends the command with
//!   `Error: etcdserver: mvcc: required revision has been compacted`, exit 1: never a
//!   silent gap. Any other failed call on either side ends it with exit 1.
//! - **an unreachable destination** is waited for (writes are retried while they provably
//!   never reached it), as etcdctl's client does, not an error.
//! - **output**: every 30 s, the number of keys processed so far (base keys plus watched
//!   events) on its own line on stdout. `SKIFFCTL_MIRROR_REPORT_INTERVAL` (a Go
//!   duration, not an etcdctl setting) changes the interval, for tests.
//! - Beyond etcdctl: on a terminal, a progress bar on stderr for the base copy, then a
//!   spinner counting the events mirrored.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::{ArgAction, Args};
use indicatif::{ProgressBar, ProgressStyle};
use skiff_client::proto::etcdserverpb::request_op::Request;
use skiff_client::proto::etcdserverpb::{
    DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest, WatchCreateRequest,
};
use skiff_client::proto::mvccpb::event::EventType;
use skiff_client::proto::mvccpb::Event;
use skiff_client::{prefix_end, Client, ClientOptions, Error};

use crate::exit::{fail, BAD_ARGS, ERROR};
use crate::globals::{tls_options, Cli};
use crate::output::go;

/// Keys per range page of the base copy (etcd's mirror `batchLimit`).
const PAGE: i64 = 1000;
/// How often the count of processed keys is printed (etcdctl's period).
const REPORT_EVERY: Duration = Duration::from_secs(30);
/// The variable that overrides [`REPORT_EVERY`].
const REPORT_ENV: &str = "SKIFFCTL_MIRROR_REPORT_INTERVAL";
/// etcd's message for a compacted revision.
const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";

fn go_bool(s: &str) -> Result<bool, String> {
    go::parse_bool(s)
}

/// `make-mirror`'s flags and argument.
#[derive(Args, Debug)]
pub struct MakeMirrorArgs {
    /// Key-value prefix to mirror
    #[arg(long, default_value = "")]
    pub prefix: String,
    /// destination prefix to mirror a prefix to a different prefix in the destination cluster
    #[arg(long, default_value = "")]
    pub dest_prefix: String,
    /// mirror key-values to the root of the destination cluster
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true", value_parser = go_bool)]
    pub no_dest_prefix: bool,
    /// Identify secure client using this TLS certificate file for the destination cluster
    #[arg(long)]
    pub dest_cert: Option<String>,
    /// Identify secure client using this TLS key file
    #[arg(long)]
    pub dest_key: Option<String>,
    /// Verify certificates of TLS enabled secure servers using this CA bundle
    #[arg(long)]
    pub dest_cacert: Option<String>,
    /// Disable transport security for client connections
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_value = "true", default_missing_value = "true", value_parser = go_bool)]
    pub dest_insecure_transport: bool,
    /// <destination>
    pub args: Vec<String>,
}

/// Runs `make-mirror` until it fails (it does not end otherwise).
pub async fn make_mirror(cli: &Cli, a: &MakeMirrorArgs) -> anyhow::Result<()> {
    let [destination] = a.args.as_slice() else {
        return Err(fail(BAD_ARGS, "make-mirror takes one destination argument"));
    };
    let dest = destination_client(cli, a, destination)?;
    let src = cli.client_of(&cli.endpoint_list(), None).await?;

    let total = Arc::new(AtomicI64::new(0));
    let bar = progress_bar();
    let reporter = tokio::spawn(report(total.clone(), bar.clone(), report_interval()?));
    let result = mirror(&src, &dest, a, &total, &bar).await;
    reporter.abort();
    bar.finish_and_clear();
    result
}

/// The destination's client: its own TLS flags, the global timeouts, no credentials;
/// calls without a deadline and writes retried for as long as they provably did not
/// reach the destination (etcdctl waits for an unreachable destination).
fn destination_client(cli: &Cli, a: &MakeMirrorArgs, endpoint: &str) -> anyhow::Result<Client> {
    let tls = tls_options(
        &a.dest_cert,
        &a.dest_key,
        &a.dest_cacert,
        a.dest_insecure_transport,
        false,
    )?;
    let opts = ClientOptions {
        tls,
        max_attempts: u32::MAX,
        ..cli.options(None)
    };
    Client::connect([endpoint.trim()], opts).map_err(|e| fail(BAD_ARGS, e))
}

/// The base copy, then the updates, until a failure.
async fn mirror(
    src: &Client,
    dest: &Client,
    a: &MakeMirrorArgs,
    total: &AtomicI64,
    bar: &ProgressBar,
) -> anyhow::Result<()> {
    // etcd's syncer takes the current revision from a read of "foo".
    let rev = src
        .get("foo")
        .await
        .map_err(failure)?
        .header
        .map(|h| h.revision)
        .unwrap_or(0);
    if a.no_dest_prefix && !a.dest_prefix.is_empty() {
        return Err(fail(
            BAD_ARGS,
            "`--dest-prefix` and `--no-dest-prefix` cannot be set at the same time, choose one",
        ));
    }
    let rename = Rename {
        from: a.prefix.as_bytes().to_vec(),
        to: if a.no_dest_prefix || !a.dest_prefix.is_empty() {
            a.dest_prefix.as_bytes().to_vec()
        } else {
            a.prefix.as_bytes().to_vec()
        },
    };
    let (key, range_end) = if a.prefix.is_empty() {
        (vec![0u8], vec![0u8])
    } else {
        (
            a.prefix.as_bytes().to_vec(),
            prefix_end(a.prefix.as_bytes()),
        )
    };
    copy_base(src, dest, &rename, (&key, &range_end), rev, total, bar).await?;
    follow(src, dest, &rename, (key, range_end), rev, total, bar).await
}

/// Copies every key of `[key, range_end)` as of `rev`, page by page.
async fn copy_base(
    src: &Client,
    dest: &Client,
    rename: &Rename,
    (key, range_end): (&[u8], &[u8]),
    rev: i64,
    total: &AtomicI64,
    bar: &ProgressBar,
) -> anyhow::Result<()> {
    let mut from = key.to_vec();
    let mut first = true;
    loop {
        let page = src
            .range(RangeRequest {
                key: from.clone().into(),
                range_end: range_end.to_vec().into(),
                limit: PAGE,
                revision: rev,
                ..RangeRequest::default()
            })
            .await
            .map_err(failure)?;
        if first {
            first = false;
            bar.set_length(u64::try_from(page.count).unwrap_or(0));
        }
        for kv in &page.kvs {
            dest.put_request(PutRequest {
                key: rename.apply(&kv.key).into(),
                value: kv.value.clone(),
                ..PutRequest::default()
            })
            .await
            .map_err(failure)?;
            total.fetch_add(1, Ordering::Relaxed);
            bar.inc(1);
        }
        match page.kvs.last() {
            Some(last) if page.more => {
                from = last.key.to_vec();
                from.push(0);
            }
            _ => return Ok(()),
        }
    }
}

/// Watches `[key, range_end)` from `rev + 1` and applies each revision's events to the
/// destination as one txn.
async fn follow(
    src: &Client,
    dest: &Client,
    rename: &Rename,
    (key, range_end): (Vec<u8>, Vec<u8>),
    rev: i64,
    total: &AtomicI64,
    bar: &ProgressBar,
) -> anyhow::Result<()> {
    if let Ok(style) = ProgressStyle::with_template("{spinner} {pos} keys processed; {msg}") {
        bar.set_style(style);
    }
    bar.set_message(format!("mirroring from revision {}", rev + 1));
    bar.set_position(u64::try_from(total.load(Ordering::Relaxed)).unwrap_or(0));
    let mut watcher = src
        .watch(WatchCreateRequest {
            key: key.into(),
            range_end: range_end.into(),
            start_revision: rev + 1,
            ..WatchCreateRequest::default()
        })
        .await
        .map_err(failure)?;
    loop {
        let resp = match watcher.message().await {
            Some(Ok(r)) => r,
            Some(Err(e)) => return Err(failure(e)),
            None => return Err(fail(ERROR, "watch ended")),
        };
        if resp.compact_revision != 0 {
            return Err(fail(ERROR, COMPACTED));
        }
        for group in by_revision(&resp.events) {
            let ops = group.iter().map(|ev| rename.op(ev)).collect::<Vec<_>>();
            dest.txn(TxnRequest {
                success: ops,
                ..TxnRequest::default()
            })
            .await
            .map_err(failure)?;
            total.fetch_add(group.len() as i64, Ordering::Relaxed);
            bar.inc(group.len() as u64);
        }
    }
}

/// Runs of consecutive events with the same mod revision.
fn by_revision(events: &[Event]) -> Vec<&[Event]> {
    let rev = |e: &Event| e.kv.as_ref().map(|kv| kv.mod_revision).unwrap_or(0);
    events.chunk_by(|a, b| rev(a) == rev(b)).collect()
}

/// The key renaming: the first occurrence of `from` replaced by `to` (Go's
/// `strings.Replace(key, from, to, 1)`; an empty `from` puts `to` in front).
struct Rename {
    from: Vec<u8>,
    to: Vec<u8>,
}

impl Rename {
    fn apply(&self, key: &[u8]) -> Vec<u8> {
        let at = if self.from.is_empty() {
            Some(0)
        } else {
            key.windows(self.from.len()).position(|w| w == self.from)
        };
        match at {
            Some(i) => [&key[..i], &self.to[..], &key[i + self.from.len()..]].concat(),
            None => key.to_vec(),
        }
    }

    /// The destination operation an event stands for.
    fn op(&self, ev: &Event) -> RequestOp {
        let (key, value) = ev
            .kv
            .as_ref()
            .map(|kv| (self.apply(&kv.key), kv.value.clone()))
            .unwrap_or_default();
        let request = if ev.r#type == EventType::Delete as i32 {
            Request::RequestDeleteRange(DeleteRangeRequest {
                key: key.into(),
                ..DeleteRangeRequest::default()
            })
        } else {
            Request::RequestPut(PutRequest {
                key: key.into(),
                value,
                ..PutRequest::default()
            })
        };
        RequestOp {
            request: Some(request),
        }
    }
}

/// A failed call as etcdctl reports it (exit 1); a compacted revision in etcd's words.
fn failure(e: Error) -> anyhow::Error {
    match e {
        Error::WatchCompacted { .. } => fail(ERROR, COMPACTED),
        e => fail(ERROR, e),
    }
}

/// The interval of the count lines: 30 s, or `SKIFFCTL_MIRROR_REPORT_INTERVAL`.
fn report_interval() -> anyhow::Result<Duration> {
    match std::env::var(REPORT_ENV) {
        Ok(v) => go::parse_duration(&v).map_err(|e| fail(BAD_ARGS, format!("{REPORT_ENV}: {e}"))),
        Err(_) => Ok(REPORT_EVERY),
    }
}

/// Prints the count every `every`, above the bar when there is one.
async fn report(total: Arc<AtomicI64>, bar: ProgressBar, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let n = total.load(Ordering::Relaxed);
        bar.suspend(|| println!("{n}"));
    }
}

/// A bar on stderr when it is a terminal; a hidden one otherwise.
fn progress_bar() -> ProgressBar {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(0);
    if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len} keys copied") {
        pb.set_style(style);
    }
    pb.enable_steady_tick(Duration::from_millis(100));
    pb
}

/// etcdctl's usage text of `make-mirror`, printed on stdout after a bad flag.
const USAGE: &str = include_str!("make_mirror_usage.txt");

/// Whether the command line runs `make-mirror` (its bad flags are reported as
/// etcdctl reports them, see [`flag_failure`]).
pub fn is_make_mirror(args: &[std::ffi::OsString]) -> bool {
    args.iter().skip(1).any(|a| a == "make-mirror")
}

/// Reports a command line clap refused as cobra and etcdctl 3.4 do for `make-mirror`:
/// the usage on stdout, pflag's message twice on stderr (cobra's line, a blank line,
/// etcdctl's `Error:` line), exit code 1. `None` for help and version requests.
pub fn flag_failure(e: &clap::Error) -> Option<i32> {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        return None;
    }
    let msg = pflag_message(e);
    print!("{USAGE}");
    eprintln!("Error: {msg}\n\nError: {msg}");
    Some(ERROR)
}

/// pflag's wording of the error clap found.
fn pflag_message(e: &clap::Error) -> String {
    use clap::error::{ContextKind, ErrorKind};
    let arg = e
        .get(ContextKind::InvalidArg)
        .map(|v| v.to_string())
        .unwrap_or_default();
    let flag = arg
        .split(['=', ' ', '['])
        .next()
        .unwrap_or_default()
        .to_string();
    let value = e
        .get(ContextKind::InvalidValue)
        .map(|v| v.to_string())
        .unwrap_or_default();
    match e.kind() {
        ErrorKind::UnknownArgument => match arg.strip_prefix('-') {
            Some(short) if !short.starts_with('-') => format!(
                "unknown shorthand flag: '{}' in {arg}",
                short.chars().next().unwrap_or('-')
            ),
            _ => format!(
                "unknown flag: {}",
                arg.split('=').next().unwrap_or_default()
            ),
        },
        ErrorKind::InvalidValue if value.is_empty() => {
            format!("flag needs an argument: {flag}")
        }
        ErrorKind::InvalidValue | ErrorKind::ValueValidation => {
            let why = std::error::Error::source(e)
                .map(|s| s.to_string())
                .unwrap_or_default();
            format!(
                "invalid argument {} for {} flag: {why}",
                go::quote(value.as_bytes()),
                go::quote(flag.as_bytes()),
            )
        }
        _ => e.to_string().lines().next().unwrap_or_default().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rename(from: &str, to: &str, key: &str) -> String {
        let r = Rename {
            from: from.as_bytes().to_vec(),
            to: to.as_bytes().to_vec(),
        };
        String::from_utf8(r.apply(key.as_bytes())).unwrap()
    }

    #[test]
    fn keys_are_renamed_as_go_strings_replace_does() {
        assert_eq!(rename("a/", "b/", "a/x"), "b/x");
        assert_eq!(rename("a/", "", "a/x"), "x");
        assert_eq!(rename("", "d/", "x"), "d/x");
        assert_eq!(rename("", "", "x"), "x");
        assert_eq!(rename("a/", "a/", "a/a/"), "a/a/");
        assert_eq!(rename("a/", "z", "a/a/"), "za/");
    }
}
