//! `watch [options] <key or prefix> [range_end]`: prints events as etcdctl does until
//! interrupted. The watch runs on skiff-client's resuming watcher, so a member failure
//! does not end it; a compacted start revision ends it as etcdctl's does ("watch was
//! canceled (...)", then `Error: watch is canceled by the server`, exit 5).

use clap::Args;
use skiff_client::proto::etcdserverpb::WatchCreateRequest;

use crate::cmd::err1;
use crate::exit::{fail, BAD_ARGS, INTERRUPTED};
use crate::globals::Cli;

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

/// `watch`.
pub async fn watch(cli: &Cli, a: &WatchArgs) -> anyhow::Result<()> {
    if a.interactive {
        return Err(fail(BAD_ARGS, "watch -i is not supported by skiffctl yet"));
    }
    if a.args.is_empty() || a.args.len() > 2 {
        return Err(fail(BAD_ARGS, "bad number of arguments"));
    }
    if a.args.len() == 2 && a.prefix {
        return Err(fail(
            BAD_ARGS,
            "`range_end` and `--prefix` are mutually exclusive",
        ));
    }
    let mut key = bytes::Bytes::copy_from_slice(a.args[0].as_bytes());
    let mut range_end = a
        .args
        .get(1)
        .map(|e| bytes::Bytes::copy_from_slice(e.as_bytes()))
        .unwrap_or_default();
    if a.prefix {
        if key.is_empty() {
            key = bytes::Bytes::from_static(b"\0");
            range_end = bytes::Bytes::from_static(b"\0");
        } else {
            range_end = skiff_client::prefix_end(&key).into();
        }
    }
    let client = cli.client_of(&cli.endpoint_list(), None).await?;
    let mut printer = cli.printer()?;
    let mut watcher = client
        .watch(WatchCreateRequest {
            key,
            range_end,
            start_revision: a.rev,
            prev_kv: a.prev_kv,
            ..Default::default()
        })
        .await
        .map_err(err1)?;
    while let Some(msg) = watcher.message().await {
        match msg {
            Ok(resp) if resp.created => continue,
            Ok(resp) => {
                let progress = resp.events.is_empty()
                    && !resp.canceled
                    && resp.compact_revision == 0
                    && resp.header.as_ref().is_some_and(|h| h.revision != 0);
                if progress {
                    println!(
                        "progress notify: {}",
                        resp.header.as_ref().map(|h| h.revision).unwrap_or(0)
                    );
                }
                printer.watch(&resp)?;
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
    Err(fail(INTERRUPTED, "watch is canceled by the server"))
}
