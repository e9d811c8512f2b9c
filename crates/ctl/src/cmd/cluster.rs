//! `member *`, `endpoint health|status|hashkv` (with `--cluster`), `alarm list|disarm`
//! and `move-leader`, as etcdctl 3.4 runs them: per-endpoint verbs ask each endpoint
//! itself, in the order given.

use std::time::Instant;

use clap::{Args, Subcommand};
use skiff_client::proto::etcdserverpb::{AlarmMember, AlarmResponse};
use skiff_client::{Client, EtcdError};

use crate::cmd::err1;
use crate::exit::{fail, strconv_err, BAD_ARGS, ERROR};
use crate::globals::Cli;
use crate::output::{go, EpHealth, Format};

/// The member verbs.
#[derive(Subcommand, Debug)]
pub enum MemberCmd {
    /// Adds a member into the cluster
    Add(MemberAddArgs),
    /// Removes a member from the cluster
    Remove(MemberIdArgs),
    /// Updates a member in the cluster
    Update(MemberUpdateArgs),
    /// Lists all members in the cluster
    List,
    /// Promotes a non-voting member in the cluster
    Promote(MemberIdArgs),
}

/// `member add <memberName> [options]`
#[derive(Args, Debug)]
pub struct MemberAddArgs {
    /// comma separated peer URLs for the new member.
    #[arg(long = "peer-urls", default_value = "")]
    pub peer_urls: String,
    /// indicates if the new member is raft learner
    #[arg(long)]
    pub learner: bool,
    /// <memberName>
    pub args: Vec<String>,
}

/// `member remove|promote <memberID>`
#[derive(Args, Debug)]
pub struct MemberIdArgs {
    /// <memberID>
    pub args: Vec<String>,
}

/// `member update <memberID> [options]`
#[derive(Args, Debug)]
pub struct MemberUpdateArgs {
    /// comma separated peer URLs for the updated member.
    #[arg(long = "peer-urls", default_value = "")]
    pub peer_urls: String,
    /// <memberID>
    pub args: Vec<String>,
}

fn member_id(args: &[String]) -> anyhow::Result<u64> {
    if args.len() != 1 {
        return Err(fail(BAD_ARGS, "member ID is not provided"));
    }
    u64::from_str_radix(&args[0], 16).map_err(|_| {
        fail(
            BAD_ARGS,
            format!(
                "bad member ID arg ({}), expecting ID in Hex",
                strconv_err("ParseUint", &args[0])
            ),
        )
    })
}

fn simple_only(cli: &Cli) -> anyhow::Result<()> {
    let p = cli.printer()?;
    if p.format != Format::Simple {
        return Err(fail(
            crate::exit::BAD_FEATURE,
            format!("{} not supported as output format", cli.write_out),
        ));
    }
    Ok(())
}

/// Runs a member verb.
pub async fn member(cli: &Cli, c: &MemberCmd) -> anyhow::Result<()> {
    match c {
        MemberCmd::List => {
            let resp = cli.client().await?.member_list(false).await.map_err(err1)?;
            cli.printer()?.member_list(&resp)
        }
        MemberCmd::Add(a) => {
            if a.args.is_empty() {
                return Err(fail(BAD_ARGS, "member name not provided"));
            }
            if a.args.len() > 1 {
                let mut ev = String::from("too many arguments");
                for s in &a.args {
                    if s.to_lowercase().starts_with("http") {
                        ev.push_str(&format!(", did you mean --peer-urls={s}"));
                    }
                }
                return Err(fail(BAD_ARGS, ev));
            }
            if a.peer_urls.is_empty() {
                return Err(fail(BAD_ARGS, "member peer urls not provided"));
            }
            simple_only(cli)?;
            let urls: Vec<String> = a.peer_urls.split(',').map(str::to_string).collect();
            let resp = cli
                .client()
                .await?
                .member_add(urls, a.learner)
                .await
                .map_err(err1)?;
            let new = resp.member.clone().unwrap_or_default();
            let cid = resp.header.as_ref().map(|h| h.cluster_id).unwrap_or(0);
            println!("Member {:16x} added to cluster {:16x}", new.id, cid);
            let mut conf = Vec::new();
            for m in &resp.members {
                for u in &m.peer_ur_ls {
                    let n = if m.id == new.id { &a.args[0] } else { &m.name };
                    conf.push(format!("{n}={u}"));
                }
            }
            println!();
            println!("ETCD_NAME={}", go::quote(a.args[0].as_bytes()));
            println!(
                "ETCD_INITIAL_CLUSTER={}",
                go::quote(conf.join(",").as_bytes())
            );
            println!(
                "ETCD_INITIAL_ADVERTISE_PEER_URLS={}",
                go::quote(a.peer_urls.as_bytes())
            );
            println!("ETCD_INITIAL_CLUSTER_STATE=\"existing\"");
            Ok(())
        }
        MemberCmd::Remove(a) => {
            let id = member_id(&a.args)?;
            simple_only(cli)?;
            let resp = cli.client().await?.member_remove(id).await.map_err(err1)?;
            let cid = resp.header.as_ref().map(|h| h.cluster_id).unwrap_or(0);
            println!("Member {id:16x} removed from cluster {cid:16x}");
            Ok(())
        }
        MemberCmd::Update(a) => {
            let id = member_id(&a.args)?;
            if a.peer_urls.is_empty() {
                return Err(fail(BAD_ARGS, "member peer urls not provided"));
            }
            simple_only(cli)?;
            let urls: Vec<String> = a.peer_urls.split(',').map(str::to_string).collect();
            let resp = cli
                .client()
                .await?
                .member_update(id, urls)
                .await
                .map_err(err1)?;
            let cid = resp.header.as_ref().map(|h| h.cluster_id).unwrap_or(0);
            println!("Member {id:16x} updated in cluster {cid:16x}");
            Ok(())
        }
        MemberCmd::Promote(a) => {
            let id = member_id(&a.args)?;
            simple_only(cli)?;
            let resp = cli.client().await?.member_promote(id).await.map_err(err1)?;
            let cid = resp.header.as_ref().map(|h| h.cluster_id).unwrap_or(0);
            println!("Member {id:16x} promoted in cluster {cid:16x}");
            Ok(())
        }
    }
}

/// `endpoint <subcommand>`
#[derive(Args, Debug)]
pub struct EndpointArgs {
    /// use all endpoints from the cluster member list
    #[arg(long, global = true)]
    pub cluster: bool,
    /// The endpoint verb.
    #[command(subcommand)]
    pub cmd: EndpointCmd,
}

/// The endpoint verbs.
#[derive(Subcommand, Debug)]
pub enum EndpointCmd {
    /// Checks the healthiness of endpoints specified in `--endpoints` flag
    Health,
    /// Prints out the status of endpoints specified in `--endpoints` flag
    Status,
    /// Prints the KV history hash for each endpoint in --endpoints
    Hashkv(HashKvArgs),
}

/// `endpoint hashkv` flags.
#[derive(Args, Debug)]
pub struct HashKvArgs {
    /// maximum revision to hash (default: all revisions)
    #[arg(long, default_value_t = 0)]
    pub rev: i64,
}

/// The endpoints to ask: `--endpoints`, or with `--cluster` every member's client URLs.
pub async fn cluster_endpoints(cli: &Cli, cluster: bool) -> anyhow::Result<Vec<String>> {
    if !cluster {
        return Ok(cli.endpoint_list());
    }
    let resp = cli.client().await?.member_list(false).await.map_err(|e| {
        fail(
            ERROR,
            format!("failed to fetch endpoints from etcd cluster member list: {e}"),
        )
    })?;
    Ok(resp
        .members
        .iter()
        .flat_map(|m| m.client_ur_ls.clone())
        .collect())
}

/// Runs an endpoint verb.
pub async fn endpoint(cli: &Cli, a: &EndpointArgs) -> anyhow::Result<()> {
    let eps = cluster_endpoints(cli, a.cluster).await?;
    let mut printer = cli.printer()?;
    match &a.cmd {
        EndpointCmd::Health => {
            let checks = eps.iter().map(|ep| async move {
                let client = match cli
                    .client_of(std::slice::from_ref(ep), Some(cli.command_timeout))
                    .await
                {
                    Ok(c) => c,
                    Err(e) => {
                        return EpHealth {
                            ep: ep.clone(),
                            health: false,
                            took: String::new(),
                            error: e.to_string(),
                        }
                    }
                };
                let start = Instant::now();
                let r = client.get("health").await;
                let took = go::duration(start.elapsed());
                match r {
                    Ok(_) | Err(skiff_client::Error::Etcd(EtcdError::PermissionDenied)) => {
                        EpHealth {
                            ep: ep.clone(),
                            health: true,
                            took,
                            error: String::new(),
                        }
                    }
                    Err(e) => EpHealth {
                        ep: ep.clone(),
                        health: false,
                        took,
                        error: e.to_string(),
                    },
                }
            });
            let list = join_all(checks).await;
            printer.endpoint_health(&list)?;
            if list.iter().any(|h| !h.error.is_empty()) {
                return Err(fail(ERROR, "unhealthy cluster"));
            }
            Ok(())
        }
        EndpointCmd::Status => {
            let client = cli.client_of(&eps, Some(cli.command_timeout)).await?;
            let mut list = Vec::new();
            let mut failed = false;
            for (i, ep) in eps.iter().enumerate() {
                match pinned(&client, i).status().await {
                    Ok(s) => list.push((ep.clone(), s)),
                    Err(e) => {
                        failed = true;
                        eprintln!("Failed to get the status of endpoint {ep} ({e})");
                    }
                }
            }
            printer.endpoint_status(&list)?;
            printer.flush();
            if failed {
                std::process::exit(ERROR);
            }
            Ok(())
        }
        EndpointCmd::Hashkv(h) => {
            let client = cli.client_of(&eps, Some(cli.command_timeout)).await?;
            let mut list = Vec::new();
            let mut last_err = None;
            for (i, ep) in eps.iter().enumerate() {
                match pinned(&client, i).hash_kv(h.rev).await {
                    Ok(r) => list.push((ep.clone(), r)),
                    Err(e) => {
                        eprintln!("Failed to get the hash of endpoint {ep} ({e})");
                        last_err = Some(e);
                    }
                }
            }
            printer.endpoint_hashkv(&list)?;
            printer.flush();
            match last_err {
                Some(e) => Err(err1(e)),
                None => Ok(()),
            }
        }
    }
}

fn pinned(client: &Client, i: usize) -> Client {
    client
        .pinned(i)
        .expect("index comes from the client's own endpoint list")
}

/// Runs futures concurrently, keeping their order.
async fn join_all<F: std::future::Future>(futs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut out = Vec::new();
    let futs: Vec<F> = futs.collect();
    // Polled together, so one slow endpoint does not delay the others' checks.
    let mut pinned: Vec<std::pin::Pin<Box<F>>> = futs.into_iter().map(Box::pin).collect();
    let mut results: Vec<Option<F::Output>> = (0..pinned.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in pinned.iter_mut().enumerate() {
            if results[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => results[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    for r in results {
        out.push(r.expect("every future completed before poll_fn returned Ready"));
    }
    out
}

/// The alarm verbs.
#[derive(Subcommand, Debug)]
pub enum AlarmCmd {
    /// Disarms all alarms
    Disarm(MemberIdArgs),
    /// Lists all alarms
    List(MemberIdArgs),
}

/// Runs an alarm verb.
pub async fn alarm(cli: &Cli, c: &AlarmCmd) -> anyhow::Result<()> {
    match c {
        AlarmCmd::List(a) => {
            if !a.args.is_empty() {
                return Err(fail(BAD_ARGS, "alarm list command accepts no arguments"));
            }
            let resp = cli.client().await?.alarm_list().await.map_err(err1)?;
            cli.printer()?.alarm(&resp)
        }
        AlarmCmd::Disarm(a) => {
            if !a.args.is_empty() {
                return Err(fail(BAD_ARGS, "alarm disarm command accepts no arguments"));
            }
            // As the etcd client does for "disarm all": list, then disarm each; the
            // answer has no header.
            let client = cli.client().await?;
            let list = client.alarm_list().await.map_err(err1)?;
            let mut ret = AlarmResponse::default();
            for am in &list.alarms {
                let r = client
                    .alarm_disarm(AlarmMember {
                        member_id: am.member_id,
                        alarm: am.alarm,
                    })
                    .await
                    .map_err(err1)?;
                ret.alarms.extend(r.alarms);
            }
            cli.printer()?.alarm(&ret)
        }
    }
}

/// `move-leader <transferee-member-id>`
#[derive(Args, Debug)]
pub struct MoveLeaderArgs {
    /// <transferee-member-id>
    pub args: Vec<String>,
}

/// `move-leader`: finds the leader among `--endpoints` and asks it.
pub async fn move_leader(cli: &Cli, a: &MoveLeaderArgs) -> anyhow::Result<()> {
    if a.args.len() != 1 {
        return Err(fail(BAD_ARGS, "move-leader command needs 1 argument"));
    }
    let target = u64::from_str_radix(&a.args[0], 16)
        .map_err(|_| fail(BAD_ARGS, strconv_err("ParseUint", &a.args[0])))?;
    let eps = cli.endpoint_list();
    let client = cli.client_of(&eps, Some(cli.command_timeout)).await?;
    let mut leader = None;
    for i in 0..eps.len() {
        let c = pinned(&client, i);
        let s = c.status().await.map_err(err1)?;
        let me = s.header.as_ref().map(|h| h.member_id).unwrap_or(0);
        if me == s.leader {
            leader = Some((c, s.leader));
            break;
        }
    }
    let Some((c, leader_id)) = leader else {
        return Err(fail(
            BAD_ARGS,
            format!("no leader endpoint given at [{}]", eps.join(" ")),
        ));
    };
    c.move_leader(target).await.map_err(err1)?;
    cli.printer()?.move_leader(leader_id, target)
}
