//! `watch [options] <key or prefix> [range_end]`: prints events as etcdctl does until
//! interrupted. The watch runs on skiff-client's resuming watcher, so a member failure
//! does not end it; a compacted start revision ends it as etcdctl's does ("watch was
//! canceled (...)", then `Error: watch is canceled by the server`, exit 5).
//!
//! `watch [options] <key> [range_end] -- <command> [args...]` prints each response's
//! events and then runs the command once per event with etcdctl's `ETCD_WATCH_*`
//! variables; the arguments are split where etcdctl 3.4 splits them (the first `--`
//! after `watch` on the command line; the watch arguments end at the last occurrence of
//! the command's name), so `watch k --` is refused as etcdctl refuses it (exit 128).
//! As in etcdctl, arguments past `range_end` are ignored (the key alone is watched).
//!
//! `watch -i` reads etcdctl 3.4's interactive lines from stdin: `watch [options] <key
//! or prefix> [range_end]` starts one more watch (its events printed as they come, each
//! watch independently), `progress` asks every watch for a progress notification
//! (`progress notify: <revision>`), anything else is reported on stderr as etcdctl
//! reports it and skipped; `watch <key> -- <command>` runs the command for each event
//! (etcdctl's `ETCD_WATCH_*` variables); a bad flag or no key in a line ends the command
//! (exit 128) and so does the end of stdin (`Error reading watch request line: EOF`,
//! exit 3), as in etcdctl.

use clap::{Args, Parser};
use skiff_client::proto::etcdserverpb::{WatchCreateRequest, WatchResponse};
use skiff_client::{Client, ProgressRequester, Watcher};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::cmd::err1;
use crate::cmd::txn::argify;
use crate::exit::{fail, strconv_err, BAD_ARGS, ERROR, INTERRUPTED, INVALID_INPUT};
use crate::globals::Cli;
use crate::output::{go, Printer};

/// `watch` flags.
#[derive(Args, Debug, Clone)]
pub struct WatchArgs {
    /// Interactive mode
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Watch on a prefix if prefix is set
    #[arg(long)]
    pub prefix: bool,
    /// Revision to start watching
    #[arg(long, default_value_t = 0)]
    pub rev: i64,
    /// get the previous key-value pair before the event happens
    #[arg(long = "prev-kv")]
    pub prev_kv: bool,
    /// [key or prefix] [range_end]
    pub args: Vec<String>,
}

/// One interactive `watch ...` line (the same flags as the command).
#[derive(Parser, Debug)]
#[command(no_binary_name = true, disable_help_flag = true)]
struct WatchLine {
    #[command(flatten)]
    args: WatchArgs,
}

/// The request `a` describes, or etcdctl's complaint about its arguments. More than
/// two arguments: etcdctl then watches the key alone.
fn request(a: &WatchArgs) -> Result<WatchCreateRequest, String> {
    if a.args.is_empty() {
        return Err("bad number of arguments".into());
    }
    if a.args.len() == 2 && a.prefix {
        return Err("`range_end` and `--prefix` are mutually exclusive".into());
    }
    let mut key = bytes::Bytes::copy_from_slice(a.args[0].as_bytes());
    let mut range_end = match a.args.len() {
        2 => bytes::Bytes::copy_from_slice(a.args[1].as_bytes()),
        _ => bytes::Bytes::new(),
    };
    if a.prefix {
        if key.is_empty() {
            key = bytes::Bytes::from_static(b"\0");
            range_end = bytes::Bytes::from_static(b"\0");
        } else {
            range_end = skiff_client::prefix_end(&key).into();
        }
    }
    Ok(WatchCreateRequest {
        key,
        range_end,
        start_revision: a.rev,
        prev_kv: a.prev_kv,
        ..Default::default()
    })
}

/// Runs `exec` once for each event of `resp`, as etcdctl does: stdout and stderr
/// shared, the event in `ETCD_WATCH_REVISION`, `ETCD_WATCH_EVENT_TYPE`, `ETCD_WATCH_KEY`
/// and `ETCD_WATCH_VALUE` (Go-quoted); a command that fails ends skiffctl (exit 1).
async fn run_exec(exec: &[String], resp: &WatchResponse) {
    let rev = resp.header.as_ref().map(|h| h.revision).unwrap_or(0);
    for ev in &resp.events {
        let kind = if ev.r#type == 1 { "DELETE" } else { "PUT" };
        let (key, value) = ev
            .kv
            .as_ref()
            .map(|kv| (go::quote(&kv.key), go::quote(&kv.value)))
            .unwrap_or_else(|| (go::quote(b""), go::quote(b"")));
        let status = tokio::process::Command::new(&exec[0])
            .args(&exec[1..])
            .env("ETCD_WATCH_REVISION", rev.to_string())
            .env("ETCD_WATCH_EVENT_TYPE", format!("\"{kind}\""))
            .env("ETCD_WATCH_KEY", key)
            .env("ETCD_WATCH_VALUE", value)
            .status()
            .await;
        let failed = match status {
            Ok(s) if s.success() => None,
            Ok(s) => Some(match s.code() {
                Some(c) => format!("exit status {c}"),
                None => s.to_string(),
            }),
            Err(e) => Some(format!(
                "exec: {}: {}",
                go::quote(exec[0].as_bytes()),
                go::io_error(&e)
            )),
        };
        if let Some(why) = failed {
            let quoted: Vec<String> = exec.iter().map(|a| go::quote(a.as_bytes())).collect();
            eprintln!("command [{}] error ({why})", quoted.join(" "));
            std::process::exit(ERROR);
        }
    }
}

/// Prints a watch's responses as etcdctl's `printWatchCh` does, until it ends, running
/// `exec` (if not empty) for each event.
async fn print_watch(
    mut watcher: Watcher,
    printer: &mut Printer,
    exec: &[String],
) -> anyhow::Result<()> {
    while let Some(msg) = watcher.message().await {
        match msg {
            Ok(resp) if resp.created => continue,
            Ok(resp) => {
                let progress = resp.events.is_empty()
                    && !resp.canceled
                    && resp.compact_revision == 0
                    && resp.header.as_ref().is_some_and(|h| h.revision != 0);
                if progress {
                    printer.text(format!(
                        "progress notify: {}",
                        resp.header.as_ref().map(|h| h.revision).unwrap_or(0)
                    ));
                }
                printer.watch(&resp)?;
                printer.flush();
                if !exec.is_empty() {
                    run_exec(exec, &resp).await;
                }
            }
            Err(skiff_client::Error::WatchCompacted { .. }) => {
                eprintln!(
                    "watch was canceled (etcdserver: mvcc: required revision has been compacted)"
                );
                break;
            }
            Err(e) => {
                eprintln!("watch was canceled ({e})");
                break;
            }
        }
    }
    Ok(())
}

/// `watch`.
pub async fn watch(cli: &Cli, a: &WatchArgs) -> anyhow::Result<()> {
    if a.interactive {
        return interactive(cli).await;
    }
    let raw: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let (keys, exec) = split_exec(&raw, &a.args).map_err(|e| fail(BAD_ARGS, e))?;
    let req = request(&WatchArgs {
        args: keys,
        ..a.clone()
    })
    .map_err(|e| fail(BAD_ARGS, e))?;
    let client = cli.client_of(&cli.endpoint_list(), None).await?;
    let mut printer = cli.printer()?;
    let watcher = client.watch(req).await.map_err(err1)?;
    print_watch(watcher, &mut printer, &exec).await?;
    Err(fail(INTERRUPTED, "watch is canceled by the server"))
}

/// Splits a non-interactive watch's arguments as etcdctl 3.4 does: `raw` is the whole
/// command line, `positional` what the flag parser left (it keeps what follows `--`).
/// The command is what follows the first `--` after the first `watch`; the watch
/// arguments are `positional` up to the last occurrence of the command's name. A `--`
/// ending the line is etcdctl's separator error.
fn split_exec(
    raw: &[String],
    positional: &[String],
) -> Result<(Vec<String>, Vec<String>), &'static str> {
    let after = match raw.iter().position(|a| a == "watch") {
        Some(i) => &raw[i + 1..],
        None => raw,
    };
    let Some(sep) = after.iter().position(|a| a == "--") else {
        return Ok((positional.to_vec(), Vec::new()));
    };
    let exec = after[sep + 1..].to_vec();
    let Some(name) = exec.first() else {
        return Err("bad number of arguments (found separator --, but no commands)");
    };
    let end = positional.iter().rposition(|a| a == name).unwrap_or(0);
    Ok((positional[..end].to_vec(), exec))
}

/// `watch -i`.
async fn interactive(cli: &Cli) -> anyhow::Result<()> {
    let client = cli.client_of(&cli.endpoint_list(), None).await?;
    cli.printer()?;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    // Each watch's progress requests, by watch.
    let mut watches: Vec<ProgressRequester> = Vec::new();
    loop {
        let line = match lines.next_line().await {
            Ok(Some(l)) => l,
            Ok(None) => return Err(fail(INVALID_INPUT, "Error reading watch request line: EOF")),
            Err(e) => {
                return Err(fail(
                    INVALID_INPUT,
                    format!("Error reading watch request line: {e}"),
                ))
            }
        };
        let args = argify(&line).unwrap_or_default();
        match args.first().map(String::as_str) {
            None => {
                eprintln!("Invalid command: {line} (watch and progress supported)");
            }
            Some("watch") if args.len() < 2 => {
                eprintln!("Invalid command {line} (command type or key is not provided)");
            }
            Some("watch") => {
                // `watch <key> -- <command> [args]` runs the command for each event.
                let (flags, exec) = match args.iter().position(|a| a == "--") {
                    Some(i) if i == args.len() - 1 => {
                        return Err(fail(
                            BAD_ARGS,
                            "bad number of arguments (found separator --, but no commands)",
                        ))
                    }
                    Some(i) => (&args[1..i], args[i + 1..].to_vec()),
                    None => (&args[1..], Vec::new()),
                };
                let parsed =
                    WatchLine::try_parse_from(flags).map_err(|e| fail(BAD_ARGS, flag_error(&e)))?;
                if parsed.args.args.is_empty() {
                    return Err(fail(BAD_ARGS, "bad number of arguments"));
                }
                let req = match request(&parsed.args) {
                    Ok(r) => r,
                    Err(e) => {
                        eprintln!("Invalid command {line} ({e})");
                        continue;
                    }
                };
                watches.extend(start(cli, &client, req, exec).await?);
            }
            Some("progress") => {
                watches.retain(ProgressRequester::request);
            }
            Some(_) => eprintln!("Invalid command {line} (only support watch)"),
        }
    }
}

/// Starts one interactive watch printing on its own; returns its progress requester.
async fn start(
    cli: &Cli,
    client: &Client,
    req: WatchCreateRequest,
    exec: Vec<String>,
) -> anyhow::Result<Option<ProgressRequester>> {
    let mut printer = cli.printer()?;
    let watcher = match client.watch(req).await {
        Ok(w) => w,
        Err(e) => {
            eprintln!("watch was canceled ({e})");
            return Ok(None);
        }
    };
    let asker = watcher.progress_requester();
    tokio::spawn(async move {
        let _ = print_watch(watcher, &mut printer, &exec).await;
    });
    Ok(Some(asker))
}

/// pflag's wording of a bad flag in an interactive line.
fn flag_error(e: &clap::Error) -> String {
    use clap::error::{ContextKind, ErrorKind};
    let arg = e
        .get(ContextKind::InvalidArg)
        .map(|v| v.to_string())
        .unwrap_or_default();
    match e.kind() {
        ErrorKind::UnknownArgument => match arg.strip_prefix('-') {
            Some(long) if long.starts_with('-') => format!("unknown flag: {arg}"),
            Some(short) => format!(
                "unknown shorthand flag: '{}' in {arg}",
                short.chars().next().unwrap_or('-')
            ),
            None => format!("unknown flag: {arg}"),
        },
        ErrorKind::InvalidValue | ErrorKind::ValueValidation => {
            let value = e
                .get(ContextKind::InvalidValue)
                .map(|v| v.to_string())
                .unwrap_or_default();
            let flag = arg.split_whitespace().next().unwrap_or_default();
            format!(
                "invalid argument {} for {} flag: {}",
                go::quote(value.as_bytes()),
                go::quote(flag.as_bytes()),
                strconv_err("ParseInt", &value)
            )
        }
        _ => e.to_string().lines().next().unwrap_or_default().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn split_exec_splits_like_etcdctl() {
        let raw = v(&[
            "skiffctl",
            "--endpoints=x",
            "watch",
            "k",
            "--rev",
            "1",
            "--",
            "echo",
            "hi",
        ]);
        assert_eq!(
            split_exec(&raw, &v(&["k", "echo", "hi"])),
            Ok((v(&["k"]), v(&["echo", "hi"])))
        );
        // etcdctl cuts at the last occurrence of the command's name.
        let raw = v(&["skiffctl", "watch", "k", "--", "echo", "echo"]);
        assert_eq!(
            split_exec(&raw, &v(&["k", "echo", "echo"])),
            Ok((v(&["k", "echo"]), v(&["echo", "echo"])))
        );
        let raw = v(&["skiffctl", "watch", "--", "echo"]);
        assert_eq!(split_exec(&raw, &v(&["echo"])), Ok((v(&[]), v(&["echo"]))));
        let raw = v(&["skiffctl", "watch", "k", "--"]);
        assert!(split_exec(&raw, &v(&["k"])).is_err());
        let raw = v(&["skiffctl", "watch", "k", "e"]);
        assert_eq!(
            split_exec(&raw, &v(&["k", "e"])),
            Ok((v(&["k", "e"]), v(&[])))
        );
    }
}
