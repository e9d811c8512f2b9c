//! `lease grant|revoke|timetolive|list|keep-alive`, with etcdctl's messages and exit
//! codes (some lease verbs exit 2, "bad connection", on any error, as etcdctl does).

use clap::{Args, Subcommand};

use crate::cmd::err2;
use crate::exit::{fail, strconv_err, BAD_ARGS, ERROR};
use crate::globals::Cli;
use crate::output::Format;

/// The lease verbs.
#[derive(Subcommand, Debug)]
pub enum LeaseCmd {
    /// Creates leases
    Grant(Plain),
    /// Revokes leases
    Revoke(Plain),
    /// Get lease information
    Timetolive(TimeToLiveArgs),
    /// List all active leases
    List(Plain),
    /// Keeps leases alive (renew)
    KeepAlive(KeepAliveArgs),
}

/// Positional arguments only.
#[derive(Args, Debug)]
pub struct Plain {
    /// arguments
    pub args: Vec<String>,
}

/// `lease timetolive <leaseID> [options]`
#[derive(Args, Debug)]
pub struct TimeToLiveArgs {
    /// Get keys attached to this lease
    #[arg(long)]
    pub keys: bool,
    /// <leaseID>
    pub args: Vec<String>,
}

/// `lease keep-alive [options] <leaseID>`
#[derive(Args, Debug)]
pub struct KeepAliveArgs {
    /// Resets the keep-alive time to its original value and exits immediately
    #[arg(long)]
    pub once: bool,
    /// <leaseID>
    pub args: Vec<String>,
}

fn lease_id(arg: &str) -> anyhow::Result<i64> {
    i64::from_str_radix(arg, 16).map_err(|_| {
        fail(
            BAD_ARGS,
            format!(
                "bad lease ID arg ({}), expecting ID in Hex",
                strconv_err("ParseInt", arg)
            ),
        )
    })
}

/// Runs a lease verb.
pub async fn run(cli: &Cli, c: &LeaseCmd) -> anyhow::Result<()> {
    match c {
        LeaseCmd::Grant(a) => {
            if a.args.len() != 1 {
                return Err(fail(BAD_ARGS, "lease grant command needs TTL argument"));
            }
            let ttl: i64 = a.args[0].parse().map_err(|_| {
                fail(
                    BAD_ARGS,
                    format!("bad TTL ({})", strconv_err("ParseInt", &a.args[0])),
                )
            })?;
            let resp = cli
                .client()
                .await?
                .lease_grant(ttl, 0)
                .await
                .map_err(|e| fail(ERROR, format!("failed to grant lease ({e})")))?;
            cli.printer()?.grant(&resp)
        }
        LeaseCmd::Revoke(a) => {
            if a.args.len() != 1 {
                return Err(fail(BAD_ARGS, "lease revoke command needs 1 argument"));
            }
            let id = lease_id(&a.args[0])?;
            let resp = cli
                .client()
                .await?
                .lease_revoke(id)
                .await
                .map_err(|e| fail(ERROR, format!("failed to revoke lease ({e})")))?;
            cli.printer()?.revoke(id, &resp)
        }
        LeaseCmd::Timetolive(a) => {
            if a.args.len() != 1 {
                return Err(fail(
                    BAD_ARGS,
                    "lease timetolive command needs lease ID as argument",
                ));
            }
            let id = lease_id(&a.args[0])?;
            let resp = cli
                .client()
                .await?
                .lease_time_to_live(id, a.keys)
                .await
                .map_err(err2)?;
            cli.printer()?.time_to_live(&resp, a.keys)
        }
        LeaseCmd::List(_) => {
            let resp = cli.client().await?.lease_leases().await.map_err(err2)?;
            cli.printer()?.leases(&resp)
        }
        LeaseCmd::KeepAlive(a) => {
            if a.args.len() != 1 {
                return Err(fail(
                    BAD_ARGS,
                    "lease keep-alive command needs lease ID as argument",
                ));
            }
            let id = lease_id(&a.args[0])?;
            let mut printer = cli.printer()?;
            if a.once {
                let resp = cli
                    .client()
                    .await?
                    .lease_keep_alive_once(id)
                    .await
                    .map_err(err2)?;
                if resp.ttl <= 0 {
                    return Err(err2(skiff_client::Error::Etcd(
                        skiff_client::EtcdError::LeaseNotFound,
                    )));
                }
                return printer.keep_alive(&resp);
            }
            let client = cli
                .client_of(&cli.endpoint_list(), Some(cli.command_timeout))
                .await?;
            let mut ka = client.lease_keep_alive(id);
            while let Some(msg) = ka.message().await {
                match msg {
                    Ok(resp) => printer.keep_alive(&resp)?,
                    Err(_) => break,
                }
            }
            if printer.format == Format::Simple {
                printer.text(format!("lease {id:016x} expired or revoked."));
            }
            Ok(())
        }
    }
}
