//! `elect <election-name> [proposal]` as etcdctl 3.4 runs it, on the Election service
//! (whose keys are those of etcd's client-side election: `<name>/<lease ID in hex>`):
//!
//! - with a proposal: a session lease (60 s, etcd's default, kept alive), a campaign
//!   that waits until elected, then the leader key and value printed as `get` prints
//!   them; held until SIGINT/SIGTERM, then resigned (the lease is left to expire, as
//!   etcdctl leaves it). A lost session ends it with `elect: session expired`.
//! - `-l/--listen`: observes the election, printing each leader (key and value) as it
//!   is elected or proclaims a value, until SIGINT/SIGTERM; a broken stream ends it
//!   with `elect: observer lost`.

use clap::Args;
use skiff_client::proto::etcdserverpb::{RangeRequest, RangeResponse};

use crate::cmd::err1;
use crate::exit::{fail, BAD_ARGS, ERROR};
use crate::globals::Cli;

/// etcd's client session TTL (`concurrency.NewSession`'s default).
const SESSION_TTL: i64 = 60;

/// `elect` flags.
#[derive(Args, Debug)]
pub struct ElectArgs {
    /// observation mode
    #[arg(short = 'l', long)]
    pub listen: bool,
    /// <election-name> [proposal]
    pub args: Vec<String>,
}

/// Resolves on SIGINT or SIGTERM.
async fn interrupted() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| fail(ERROR, e))?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    Ok(())
}

/// `elect`.
pub async fn elect(cli: &Cli, a: &ElectArgs) -> anyhow::Result<()> {
    if a.args.len() != 1 && a.args.len() != 2 {
        return Err(fail(
            BAD_ARGS,
            "elect takes one election name argument and an optional proposal argument",
        ));
    }
    if a.args.len() == 1 && !a.listen {
        return Err(fail(BAD_ARGS, "no proposal argument but -l not set"));
    }
    if a.args.len() == 2 && a.listen {
        return Err(fail(BAD_ARGS, "proposal given but -l is set"));
    }
    // Campaigns and observations wait: no deadline on the calls.
    let client = cli.client_of(&cli.endpoint_list(), None).await?;
    let mut printer = cli.printer()?;
    let name = a.args[0].clone();
    if a.listen {
        // etcdctl opens a session before observing.
        let lease = client.lease_grant(SESSION_TTL, 0).await.map_err(err1)?;
        let _session = client.lease_keep_alive(lease.id);
        let mut stream = client.observe(name).await.map_err(err1)?;
        let watch = async {
            while let Ok(Some(leader)) = stream.message().await {
                let resp = RangeResponse {
                    header: leader.header,
                    kvs: leader.kv.into_iter().collect(),
                    count: 1,
                    ..Default::default()
                };
                printer.get(&resp)?;
                printer.flush();
            }
            Ok::<(), anyhow::Error>(())
        };
        tokio::select! {
            r = interrupted() => return r,
            r = watch => r?,
        }
        return Err(fail(ERROR, "elect: observer lost"));
    }
    let lease = client.lease_grant(SESSION_TTL, 0).await.map_err(err1)?;
    let mut session = client.lease_keep_alive(lease.id);
    let campaign = async { client.campaign(name, a.args[1].clone(), lease.id).await };
    let elected = tokio::select! {
        r = interrupted() => return r,
        r = campaign => r.map_err(err1)?,
    };
    let leader = elected
        .leader
        .ok_or_else(|| fail(ERROR, "elect: the campaign answered no leader key"))?;
    let got = client
        .range(RangeRequest {
            key: leader.key.clone(),
            ..Default::default()
        })
        .await
        .map_err(err1)?;
    printer.get(&got)?;
    printer.flush();
    tokio::select! {
        r = interrupted() => r?,
        _ = async { while let Some(Ok(_)) = session.message().await {} } => {
            return Err(fail(ERROR, "elect: session expired"));
        }
    }
    client.resign(leader).await.map_err(err1)?;
    Ok(())
}
