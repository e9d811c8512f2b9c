//! `lock <lockname> [exec-command arg1 arg2 ...]` as etcdctl 3.4 runs it: a session
//! lease (`--ttl`, kept alive), the lock taken through the Lock service (the same key,
//! `<lockname>/<lease ID in hex>`, as etcd's client mutex), then either the command run
//! with `ETCD_LOCK_KEY` and `ETCD_LOCK_REV` and the lock released, or the key printed
//! and held until SIGINT/SIGTERM.

use clap::Args;
use skiff_client::proto::etcdserverpb::RangeRequest;

use crate::cmd::err1;
use crate::exit::{fail, BAD_ARGS, ERROR};
use crate::globals::Cli;

/// `lock` flags.
#[derive(Args, Debug)]
pub struct LockArgs {
    /// timeout for session
    #[arg(long, default_value_t = 10)]
    pub ttl: i64,
    /// <lockname> [exec-command arg1 arg2 ...]
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

/// `lock`.
pub async fn lock(cli: &Cli, a: &LockArgs) -> anyhow::Result<()> {
    if a.args.is_empty() {
        return Err(fail(
            BAD_ARGS,
            "lock takes a lock name argument and an optional command to execute",
        ));
    }
    // The lock call waits for the lock: no deadline on it.
    let client = cli.client_of(&cli.endpoint_list(), None).await?;
    let lease = client.lease_grant(a.ttl, 0).await.map_err(err1)?;
    let mut session = client.lease_keep_alive(lease.id);
    let locked = client
        .lock(a.args[0].clone(), lease.id)
        .await
        .map_err(err1)?;
    let key = locked.key.clone();
    // `lock name -- cmd -flag`: the separator is not part of the command.
    let command: &[String] = match a.args.get(1).map(String::as_str) {
        Some("--") => &a.args[2..],
        _ => &a.args[1..],
    };
    if !command.is_empty() {
        let status = tokio::process::Command::new(&command[0])
            .args(&command[1..])
            .env("ETCD_LOCK_KEY", String::from_utf8_lossy(&key).as_ref())
            .env(
                "ETCD_LOCK_REV",
                locked.header.map(|h| h.revision).unwrap_or(0).to_string(),
            )
            .status()
            .await;
        let unlocked = client.unlock(key).await;
        let status = status.map_err(|e| fail(ERROR, e))?;
        if !status.success() {
            // Go's exec.ExitError text.
            let what = match status.code() {
                Some(c) => format!("exit status {c}"),
                None => status.to_string(),
            };
            return Err(fail(ERROR, what));
        }
        unlocked.map_err(err1)?;
        return Ok(());
    }
    let got = client
        .range(RangeRequest {
            key: key.clone(),
            ..Default::default()
        })
        .await
        .map_err(err1)?;
    if got.kvs.is_empty() {
        return Err(fail(ERROR, "lock lost on init"));
    }
    let mut printer = cli.printer()?;
    printer.get(&got)?;
    printer.flush();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| fail(ERROR, e))?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        _ = async { while let Some(Ok(_)) = session.message().await {} } => {
            return Err(fail(ERROR, "session expired"));
        }
    }
    client.unlock(key).await.map_err(err1)?;
    Ok(())
}
