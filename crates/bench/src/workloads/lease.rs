//! Lease workloads.
//!
//! - lease-keepalive (default): each client grants one lease, opens one keep-alive stream,
//!   and each request is one keep-alive sent and its response received on that stream
//!   (the round trip a client library's keep-alive loop waits for).
//! - lease-keepalive `--ids-file F`: keeps alive the leases listed in F (granted earlier,
//!   e.g. by lease-grant) instead: client i owns the leases at positions i, i + clients,
//!   ... and sends their keep-alives in turn on its one stream, so a few streams keep many
//!   leases alive, as a server holding many sessions sees it.
//! - lease-grant: `--total` grants with `--ttl`, their IDs written one per line to
//!   `--ids-file`, so that holding leases and keeping them alive can be measured apart.

use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use etcd_client::{Client, LeaseClient, LeaseKeepAliveStream, LeaseKeeper};

use crate::cli::{GlobalOpts, LeaseGrantOpts, LeaseOpts};
use crate::runner::Worker;

pub struct LeaseWorker {
    keeper: LeaseKeeper,
    stream: LeaseKeepAliveStream,
    /// The leases this client keeps alive, in turn (one lease without --ids-file).
    ids: Vec<i64>,
    next: usize,
}

impl Worker for LeaseWorker {
    async fn call(&mut self, _idx: u64) -> Result<&'static str, etcd_client::Error> {
        self.keeper.id = self.ids[self.next];
        self.next = (self.next + 1) % self.ids.len();
        self.keeper.keep_alive().await?;
        match self.stream.message().await? {
            Some(resp) if resp.ttl() > 0 => Ok("keepalive"),
            Some(_) => Err(etcd_client::Error::LeaseKeepAliveError(
                "lease expired or not found (TTL 0 in keep-alive response)".into(),
            )),
            None => Err(etcd_client::Error::LeaseKeepAliveError(
                "keep-alive stream closed by the server".into(),
            )),
        }
    }
}

fn read_ids(path: &Path) -> Result<Vec<i64>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading lease IDs from {}", path.display()))?;
    let ids = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            l.trim()
                .parse::<i64>()
                .with_context(|| format!("bad lease ID {l:?} in {}", path.display()))
        })
        .collect::<Result<Vec<_>>>()?;
    if ids.is_empty() {
        bail!("no lease IDs in {}", path.display());
    }
    Ok(ids)
}

pub async fn workers(g: &GlobalOpts, o: &LeaseOpts, conns: &[Client]) -> Result<Vec<LeaseWorker>> {
    let given = match &o.ids_file {
        Some(p) => Some(read_ids(p)?),
        None => None,
    };
    let clients = match &given {
        Some(ids) => g.clients.min(ids.len()),
        None => g.clients,
    };
    let mut out = Vec::with_capacity(clients);
    for i in 0..clients {
        let mut lease = conns[i % conns.len()].lease_client();
        let ids = match &given {
            Some(all) => all.iter().skip(i).step_by(clients).copied().collect(),
            None => vec![lease
                .grant(o.ttl, None)
                .await
                .with_context(|| format!("granting the lease of client {i}"))?
                .id()],
        };
        let (keeper, stream) = lease
            .keep_alive(ids[0])
            .await
            .with_context(|| format!("opening the keep-alive stream of client {i}"))?;
        out.push(LeaseWorker {
            keeper,
            stream,
            ids,
            next: 0,
        });
    }
    Ok(out)
}

/// Grants leases; every granted ID is pushed to the shared list.
pub struct GrantWorker {
    lease: LeaseClient,
    ttl: i64,
    granted: Arc<Mutex<Vec<i64>>>,
}

impl Worker for GrantWorker {
    async fn call(&mut self, _idx: u64) -> Result<&'static str, etcd_client::Error> {
        let id = self.lease.grant(self.ttl, None).await?.id();
        self.granted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(id);
        Ok("grant")
    }
}

pub fn grant_workers(
    g: &GlobalOpts,
    o: &LeaseGrantOpts,
    conns: &[Client],
    granted: &Arc<Mutex<Vec<i64>>>,
) -> Vec<GrantWorker> {
    (0..g.clients)
        .map(|i| GrantWorker {
            lease: conns[i % conns.len()].lease_client(),
            ttl: o.ttl,
            granted: granted.clone(),
        })
        .collect()
}

/// Writes the granted IDs, one per line.
pub fn write_ids(path: &Path, granted: &Arc<Mutex<Vec<i64>>>) -> Result<()> {
    let ids = granted.lock().unwrap_or_else(|p| p.into_inner());
    let mut text = String::with_capacity(ids.len() * 20);
    for id in ids.iter() {
        text.push_str(&id.to_string());
        text.push('\n');
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}
