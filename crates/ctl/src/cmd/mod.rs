//! The verbs: one module per group, each turning etcdctl's arguments into requests
//! exactly as etcdctl builds them and handing the answer to the printer.

mod auth;
mod check;
mod cluster;
mod completion;
mod elect;
mod kv;
mod lease;
mod lock;
mod maint;
pub mod mirror;
mod snapshot;
mod txn;
mod watch;

use clap::Subcommand;

use crate::exit::{fail, BAD_CONNECTION, ERROR};
use crate::globals::Cli;

/// etcdctl 3.4's verbs (those skiffctl has so far).
#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Gets the key or a range of keys
    Get(kv::GetArgs),
    /// Puts the given key into the store
    Put(kv::PutArgs),
    /// Removes the specified key or range of keys [key, range_end)
    Del(kv::DelArgs),
    /// Txn processes all the requests in one transaction
    Txn(txn::TxnArgs),
    /// Compacts the event history in etcd
    Compaction(kv::CompactionArgs),
    /// Watches events stream on keys or prefixes
    Watch(watch::WatchArgs),
    /// Lease related commands
    #[command(subcommand)]
    Lease(lease::LeaseCmd),
    /// Membership related commands
    #[command(subcommand)]
    Member(cluster::MemberCmd),
    /// Endpoint related commands
    Endpoint(cluster::EndpointArgs),
    /// Alarm related commands
    #[command(subcommand)]
    Alarm(cluster::AlarmCmd),
    /// Defragments the storage of the etcd members with given endpoints
    Defrag(maint::DefragArgs),
    /// Manages etcd node snapshots
    #[command(subcommand)]
    Snapshot(snapshot::SnapshotCmd),
    /// Makes a mirror at the destination etcd cluster
    MakeMirror(mirror::MakeMirrorArgs),
    /// Acquires a named lock
    Lock(lock::LockArgs),
    /// Observes and participates in leader election
    Elect(elect::ElectArgs),
    /// Transfers leadership to another etcd cluster member.
    MoveLeader(cluster::MoveLeaderArgs),
    /// Enable or disable authentication
    #[command(subcommand)]
    Auth(auth::AuthCmd),
    /// User related commands
    #[command(subcommand)]
    User(auth::UserCmd),
    /// Role related commands
    #[command(subcommand)]
    Role(auth::RoleCmd),
    /// commands for checking properties of the etcd cluster
    #[command(subcommand)]
    Check(check::CheckCmd),
    /// Prints a shell completion script (bash, zsh, fish)
    Completion(completion::CompletionArgs),
    /// Prints the version of skiffctl
    Version,
}

/// Runs the verb the command line names.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.cmd {
        Cmd::Get(a) => kv::get(&cli, a).await,
        Cmd::Put(a) => kv::put(&cli, a).await,
        Cmd::Del(a) => kv::del(&cli, a).await,
        Cmd::Txn(a) => txn::txn(&cli, a).await,
        Cmd::Compaction(a) => kv::compaction(&cli, a).await,
        Cmd::Watch(a) => watch::watch(&cli, a).await,
        Cmd::Lease(c) => lease::run(&cli, c).await,
        Cmd::Member(c) => cluster::member(&cli, c).await,
        Cmd::Endpoint(a) => cluster::endpoint(&cli, a).await,
        Cmd::Alarm(c) => cluster::alarm(&cli, c).await,
        Cmd::Defrag(a) => maint::defrag(&cli, a).await,
        Cmd::Snapshot(c) => snapshot::snapshot(&cli, c).await,
        Cmd::MakeMirror(a) => mirror::make_mirror(&cli, a).await,
        Cmd::Lock(a) => lock::lock(&cli, a).await,
        Cmd::Elect(a) => elect::elect(&cli, a).await,
        Cmd::MoveLeader(a) => cluster::move_leader(&cli, a).await,
        Cmd::Auth(c) => auth::auth(&cli, c).await,
        Cmd::User(c) => auth::user(&cli, c).await,
        Cmd::Role(c) => auth::role(&cli, c).await,
        Cmd::Check(c) => check::check(&cli, c).await,
        Cmd::Completion(a) => {
            completion::completion(a);
            Ok(())
        }
        Cmd::Version => {
            println!("skiffctl version: {}", env!("CARGO_PKG_VERSION"));
            println!("API version: 3.4");
            Ok(())
        }
    }
}

/// A client error as etcdctl reports it, with exit code `code`.
pub fn client_fail(code: i32, e: skiff_client::Error) -> anyhow::Error {
    fail(code, e)
}

/// The usual case: `ExitError`.
pub fn err1(e: skiff_client::Error) -> anyhow::Error {
    client_fail(ERROR, e)
}

/// `ExitBadConnection`, which etcdctl uses for some lease verbs.
pub fn err2(e: skiff_client::Error) -> anyhow::Error {
    client_fail(BAD_CONNECTION, e)
}
