//! Connections to the cluster under test.
//!
//! As in etcd's tool, connection `i` is dialled to endpoint `i mod len(endpoints)` only, so
//! `--conns 100` with three endpoints spreads load evenly over the members, while
//! `--target-leader` first asks every endpoint for its Status and keeps only the leader.
//! Every connection is exercised once (a Status call) before the run starts, so an
//! unreachable endpoint fails fast with its address, and no request of the measured run
//! pays for connection setup. A server that answers Status with Unimplemented is still
//! reachable (it answered), so only `--target-leader` needs Status to work.
//!
//! A connection is one HTTP/2 connection to one endpoint (the etcd-client crate's
//! client over a plain tonic channel, not its load-balanced one), and its writes are
//! coalesced ([`skiff_coalesce::Coalesce`]): hyper's client wrote each request's
//! HEADERS and DATA in `writev`s of their own (2.1 per put at 1000 clients over 100
//! connections), where etcd's Go benchmark tool, through grpc-go's buffered writer,
//! sends the requests queued together in one write. The generator shares the cores with
//! the members, so its own cost caps the throughput of both sides (`bench/PROFILE.md`).

use std::io;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use etcd_client::Client;
use hyper_util::rt::TokioIo;
use skiff_coalesce::Coalesce;
use tokio::net::TcpStream;
use tonic::transport::{Endpoint, Uri};

use crate::cli::GlobalOpts;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const KEEP_ALIVE: Duration = Duration::from_secs(10);

/// A TCP connection to `uri`'s host and port within `timeout`, without Nagle's delay,
/// its writes coalesced. A timeout is an `io::Error`, which tonic reports as a connect
/// error (`Unavailable`), as it did for its own connector.
async fn connect_tcp(uri: Uri, timeout: Duration) -> io::Result<TokioIo<Coalesce<TcpStream>>> {
    let invalid = || {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("endpoint {uri}: no host:port"),
        )
    };
    // An IPv6 literal comes bracketed (`[::1]`); the resolver wants it bare.
    let host = uri.host().ok_or_else(invalid)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().ok_or_else(invalid)?;
    let conn = tokio::time::timeout(timeout, TcpStream::connect((host, port)))
        .await
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("endpoint {uri}: no connection within {timeout:?}"),
            )
        })??;
    conn.set_nodelay(true)?;
    Ok(TokioIo::new(Coalesce::new(conn)))
}

/// One connection to `endpoint` (`http://host:port`, `cli::normalize_endpoint`), made
/// within `timeout`; a connection lost later is made again on the next request.
async fn dial(endpoint: &str, timeout: Duration) -> Result<Client> {
    let channel = Endpoint::from_shared(endpoint.to_string())
        .with_context(|| format!("endpoint {endpoint}"))?
        .http2_keep_alive_interval(KEEP_ALIVE)
        .keep_alive_timeout(KEEP_ALIVE)
        .keep_alive_while_idle(true)
        .connect_with_connector(tower::service_fn(move |uri| connect_tcp(uri, timeout)))
        .await
        .with_context(|| format!("connecting to {endpoint}"))?;
    // The channel carries the transport options; etcd-client's own (`ConnectOptions`)
    // would add only a user name, and this tool has none.
    Client::from_channel(etcd_client::Channel::Tonic(channel), None)
        .await
        .with_context(|| format!("connecting to {endpoint}"))
}

async fn warm(
    client: &mut Client,
    endpoint: &str,
    timeout: Duration,
) -> Result<etcd_client::StatusResponse> {
    tokio::time::timeout(timeout, client.status())
        .await
        .map_err(|_| anyhow!("endpoint {endpoint}: no answer to Status within {timeout:?}"))?
        .with_context(|| format!("endpoint {endpoint}: Status failed"))
}

/// Establishes the connection: any gRPC answer except a transport failure will do.
async fn warm_up(client: &mut Client, endpoint: &str, timeout: Duration) -> Result<()> {
    match warm(client, endpoint, timeout).await {
        Ok(_) => Ok(()),
        Err(e) => match e.downcast_ref::<etcd_client::Error>() {
            Some(etcd_client::Error::GRpcStatus(s)) if s.code() == tonic::Code::Unimplemented => {
                Ok(())
            }
            _ => Err(e),
        },
    }
}

/// The endpoint whose member is the leader.
pub async fn find_leader(endpoints: &[String], timeout: Duration) -> Result<String> {
    for ep in endpoints {
        let mut c = dial(ep, timeout).await?;
        let st = warm(&mut c, ep, timeout)
            .await
            .context("--target-leader needs the Maintenance.Status RPC")?;
        let me = st.header().map(|h| h.member_id());
        if me.is_some() && me == Some(st.leader()) {
            return Ok(ep.clone());
        }
    }
    bail!("no leader among endpoints {}", endpoints.join(","))
}

/// Dials `--conns` connections over `--endpoints` (or the leader only) and warms each up.
/// A connection and a warm-up each wait at most 5 s or `--request-timeout`, whichever
/// is shorter, so a readiness probe with a short timeout fails fast on a member that is
/// not serving yet.
pub async fn connect_all(g: &GlobalOpts) -> Result<Vec<Client>> {
    let timeout = CONNECT_TIMEOUT.min(Duration::from_secs_f64(g.request_timeout));
    let endpoints = if g.target_leader {
        vec![find_leader(&g.endpoints, timeout).await?]
    } else {
        g.endpoints.clone()
    };
    let mut out = Vec::with_capacity(g.conns);
    for i in 0..g.conns {
        let ep = &endpoints[i % endpoints.len()];
        let mut c = dial(ep, timeout).await?;
        warm_up(&mut c, ep, timeout).await?;
        out.push(c);
    }
    Ok(out)
}

/// Short error class for the report: the gRPC code where there is one.
pub fn error_code(e: &etcd_client::Error) -> String {
    match e {
        etcd_client::Error::GRpcStatus(s) => format!("{:?}", s.code()),
        etcd_client::Error::TransportError(_) => "Transport".to_string(),
        etcd_client::Error::WatchError(_) => "Watch".to_string(),
        etcd_client::Error::LeaseKeepAliveError(_) => "LeaseKeepAlive".to_string(),
        _ => "Other".to_string(),
    }
}

/// The message to show next to an error class.
pub fn error_message(e: &etcd_client::Error) -> String {
    match e {
        etcd_client::Error::GRpcStatus(s) => s.message().to_string(),
        other => other.to_string(),
    }
}
