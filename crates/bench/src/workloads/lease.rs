//! lease-keepalive: each client grants one lease, opens one keep-alive stream, and each
//! request is one keep-alive sent and its response received on that stream (the round
//! trip a client library's keep-alive loop waits for).

use anyhow::{Context, Result};
use etcd_client::{Client, LeaseKeepAliveStream, LeaseKeeper};

use crate::cli::{GlobalOpts, LeaseOpts};
use crate::runner::Worker;

pub struct LeaseWorker {
    keeper: LeaseKeeper,
    stream: LeaseKeepAliveStream,
}

impl Worker for LeaseWorker {
    async fn call(&mut self, _idx: u64) -> Result<&'static str, etcd_client::Error> {
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

pub async fn workers(g: &GlobalOpts, o: &LeaseOpts, conns: &[Client]) -> Result<Vec<LeaseWorker>> {
    let mut out = Vec::with_capacity(g.clients);
    for i in 0..g.clients {
        let mut lease = conns[i % conns.len()].lease_client();
        let grant = lease
            .grant(o.ttl, None)
            .await
            .with_context(|| format!("granting the lease of client {i}"))?;
        let (keeper, stream) = lease
            .keep_alive(grant.id())
            .await
            .with_context(|| format!("opening the keep-alive stream of client {i}"))?;
        out.push(LeaseWorker { keeper, stream });
    }
    Ok(out)
}
