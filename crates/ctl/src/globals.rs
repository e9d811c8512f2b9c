//! etcdctl 3.4's global flags, each also read from its `ETCDCTL_*` variable (a flag on
//! the command line wins), and the client they describe.
//!
//! TLS (`--cert`, `--key`, `--cacert`, `--insecure-skip-tls-verify`) and authentication
//! (`--user`, `--password`) are accepted but refused with a clear error until the
//! client has them; DNS discovery (`--discovery-srv`) likewise.

use std::time::Duration;

use clap::{ArgAction, Parser};
use skiff_client::{Client, ClientOptions};

use crate::cmd::Cmd;
use crate::exit::{fail, BAD_ARGS};
use crate::output::{go, Format, Printer};

fn duration(s: &str) -> Result<Duration, String> {
    go::parse_duration(s)
}

/// The command line.
#[derive(Parser, Debug)]
#[command(
    name = "skiffctl",
    version,
    about = "A command line client for Skiff and etcd (etcdctl 3.4 compatible)",
    infer_subcommands = true
)]
pub struct Cli {
    /// gRPC endpoints
    #[arg(
        long,
        global = true,
        env = "ETCDCTL_ENDPOINTS",
        value_delimiter = ',',
        default_value = "127.0.0.1:2379"
    )]
    pub endpoints: Vec<String>,
    /// enable client-side debug logging
    #[arg(long, global = true, env = "ETCDCTL_DEBUG")]
    pub debug: bool,
    /// set the output format (fields, json, protobuf, simple, table)
    #[arg(
        short = 'w',
        long = "write-out",
        global = true,
        env = "ETCDCTL_WRITE_OUT",
        default_value = "simple"
    )]
    pub write_out: String,
    /// print byte strings as hex encoded strings
    #[arg(long, global = true, env = "ETCDCTL_HEX")]
    pub hex: bool,
    /// dial timeout for client connections
    #[arg(long, global = true, env = "ETCDCTL_DIAL_TIMEOUT", default_value = "2s", value_parser = duration)]
    pub dial_timeout: Duration,
    /// timeout for short running command (excluding dial timeout)
    #[arg(long, global = true, env = "ETCDCTL_COMMAND_TIMEOUT", default_value = "5s", value_parser = duration)]
    pub command_timeout: Duration,
    /// keepalive time for client connections
    #[arg(long, global = true, env = "ETCDCTL_KEEPALIVE_TIME", default_value = "2s", value_parser = duration)]
    pub keepalive_time: Duration,
    /// keepalive timeout for client connections
    #[arg(long, global = true, env = "ETCDCTL_KEEPALIVE_TIMEOUT", default_value = "6s", value_parser = duration)]
    pub keepalive_timeout: Duration,
    /// disable transport security for client connections
    #[arg(long, global = true, env = "ETCDCTL_INSECURE_TRANSPORT", action = ArgAction::Set, num_args = 0..=1, default_value = "true", default_missing_value = "true")]
    pub insecure_transport: bool,
    /// accept insecure SRV records describing cluster endpoints
    #[arg(long, global = true, env = "ETCDCTL_INSECURE_DISCOVERY", action = ArgAction::Set, num_args = 0..=1, default_value = "true", default_missing_value = "true")]
    pub insecure_discovery: bool,
    /// skip server certificate verification (CAUTION: this option should be enabled only for testing purposes)
    #[arg(long, global = true, env = "ETCDCTL_INSECURE_SKIP_TLS_VERIFY")]
    pub insecure_skip_tls_verify: bool,
    /// identify secure client using this TLS certificate file
    #[arg(long, global = true, env = "ETCDCTL_CERT")]
    pub cert: Option<String>,
    /// identify secure client using this TLS key file
    #[arg(long, global = true, env = "ETCDCTL_KEY")]
    pub key: Option<String>,
    /// verify certificates of TLS-enabled secure servers using this CA bundle
    #[arg(long, global = true, env = "ETCDCTL_CACERT")]
    pub cacert: Option<String>,
    /// username[:password] for authentication (prompt if password is not supplied)
    #[arg(long, global = true, env = "ETCDCTL_USER")]
    pub user: Option<String>,
    /// password for authentication (if this option is used, --user option shouldn't include password)
    #[arg(long, global = true, env = "ETCDCTL_PASSWORD")]
    pub password: Option<String>,
    /// domain name to query for SRV records describing cluster endpoints
    #[arg(short = 'd', long, global = true, env = "ETCDCTL_DISCOVERY_SRV")]
    pub discovery_srv: Option<String>,
    /// service name to query when using DNS discovery
    #[arg(long, global = true, env = "ETCDCTL_DISCOVERY_SRV_NAME")]
    pub discovery_srv_name: Option<String>,
    /// The verb.
    #[command(subcommand)]
    pub cmd: Cmd,
}

impl Cli {
    /// The endpoints, trimmed as etcdctl trims them.
    pub fn endpoint_list(&self) -> Vec<String> {
        self.endpoints
            .iter()
            .map(|e| e.trim().to_string())
            .collect()
    }

    /// Refuses what the client cannot do yet, naming it.
    fn check_supported(&self) -> anyhow::Result<()> {
        let tls = self.cert.is_some()
            || self.key.is_some()
            || self.cacert.is_some()
            || self.insecure_skip_tls_verify
            || !self.insecure_transport;
        if tls {
            return Err(fail(BAD_ARGS, "TLS is not supported by skiffctl yet"));
        }
        if self.user.is_some() || self.password.is_some() {
            return Err(fail(
                BAD_ARGS,
                "authentication is not supported by skiffctl yet",
            ));
        }
        if self.discovery_srv.is_some() {
            return Err(fail(
                BAD_ARGS,
                "DNS discovery is not supported by skiffctl yet",
            ));
        }
        Ok(())
    }

    /// The client options the flags describe (`timeout`: the call deadline).
    pub fn options(&self, timeout: Option<Duration>) -> ClientOptions {
        ClientOptions {
            connect_timeout: self.dial_timeout,
            request_timeout: timeout,
            keep_alive_time: self.keepalive_time,
            keep_alive_timeout: self.keepalive_timeout,
            ..ClientOptions::default()
        }
    }

    /// A client of `endpoints` with the command timeout as each call's deadline.
    pub fn client_of(
        &self,
        endpoints: &[String],
        timeout: Option<Duration>,
    ) -> anyhow::Result<Client> {
        self.check_supported()?;
        // etcdctl sets up its printer before it dials: a bad `-w` fails first.
        Format::parse(&self.write_out)?;
        Client::connect(endpoints, self.options(timeout)).map_err(|e| fail(BAD_ARGS, e))
    }

    /// A client of `--endpoints` whose calls end after `--command-timeout`.
    pub fn client(&self) -> anyhow::Result<Client> {
        self.client_of(&self.endpoint_list(), Some(self.command_timeout))
    }

    /// The printer `-w` and `--hex` ask for.
    pub fn printer(&self) -> anyhow::Result<Printer> {
        Ok(Printer::new(Format::parse(&self.write_out)?, self.hex))
    }
}
