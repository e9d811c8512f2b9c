//! etcdctl 3.4's global flags, each also read from its `ETCDCTL_*` variable (a flag on
//! the command line wins), and the client they describe.
//!
//! - TLS as etcdctl 3.4 sets it up: any of `--cacert`, `--cert`, `--key` (or
//!   `--insecure-transport=false`) gives the client TLS options, which `host:port`
//!   endpoints then use; `https://` endpoints always use TLS (without options: the
//!   system's CA bundle) and `http://` ones never do. `--insecure-skip-tls-verify`
//!   applies only when there are TLS options (as in etcdctl 3.4, where it is ignored
//!   otherwise). A certificate without its key (or the reverse) and unreadable files
//!   are refused with exit code 128 before dialling.
//! - Authentication: `--user name:password`, or `--user name --password p` (then the
//!   whole `--user` is the name), or `--user name` alone, which prompts `Password: `.
//!   The client authenticates before the verb runs; a refused password is etcdctl's
//!   `Error: etcdserver: authentication failed, invalid user ID or password` with exit
//!   code 2. An empty password means no authentication (as etcd's client).
//! - DNS discovery (`--discovery-srv`) is refused with a clear error.

use std::time::Duration;

use clap::{ArgAction, Parser};
use skiff_client::{Client, ClientOptions, Credentials, Identity, TlsOptions};

use crate::cmd::Cmd;
use crate::exit::{fail, BAD_ARGS, BAD_CONNECTION, ERROR};
use crate::output::{go, Format, Printer};
use crate::prompt;

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
        if self.discovery_srv.is_some() {
            return Err(fail(
                BAD_ARGS,
                "DNS discovery is not supported by skiffctl yet",
            ));
        }
        Ok(())
    }

    /// The credentials `--user` and `--password` give (prompting for the password when
    /// `--user` has none), or `None` without `--user`.
    fn credentials(&self) -> anyhow::Result<Option<Credentials>> {
        let user = match self.user.as_deref() {
            None | Some("") => return Ok(None),
            Some(u) => u,
        };
        if let Some(p) = self.password.as_deref().filter(|p| !p.is_empty()) {
            return Ok(Some(Credentials::new(user, p)));
        }
        Ok(Some(match user.split_once(':') {
            Some((name, password)) => Credentials::new(name, password),
            None => {
                let password = prompt::ask("Password: ").map_err(|e| fail(ERROR, e))?;
                Credentials::new(user, password)
            }
        }))
    }

    /// The TLS options the flags describe (see the module docs), files read.
    fn tls(&self) -> anyhow::Result<Option<TlsOptions>> {
        tls_options(
            &self.cert,
            &self.key,
            &self.cacert,
            self.insecure_transport,
            self.insecure_skip_tls_verify,
        )
    }

    /// The client options the flags describe (`timeout`: the call deadline), without
    /// TLS and credentials.
    pub fn options(&self, timeout: Option<Duration>) -> ClientOptions {
        ClientOptions {
            connect_timeout: self.dial_timeout,
            request_timeout: timeout,
            keep_alive_time: self.keepalive_time,
            keep_alive_timeout: self.keepalive_timeout,
            ..ClientOptions::default()
        }
    }

    /// A client of `endpoints` with `timeout` as each call's deadline, authenticated
    /// when `--user` is given (etcdctl's order: the password prompt, the output format,
    /// the TLS files, then the connection and authentication).
    pub async fn client_of(
        &self,
        endpoints: &[String],
        timeout: Option<Duration>,
    ) -> anyhow::Result<Client> {
        self.check_supported()?;
        let credentials = self.credentials()?;
        // etcdctl sets up its printer before it dials: a bad `-w` fails first.
        Format::parse(&self.write_out)?;
        let opts = ClientOptions {
            tls: self.tls()?,
            credentials,
            ..self.options(timeout)
        };
        let client = Client::connect(endpoints, opts).map_err(|e| fail(BAD_ARGS, e))?;
        // etcd's client authenticates while it dials, within the dial timeout, and
        // etcdctl reports a failure as a bad connection.
        match tokio::time::timeout(self.dial_timeout, client.authenticate()).await {
            Ok(Ok(())) => Ok(client),
            Ok(Err(e)) => Err(fail(BAD_CONNECTION, e)),
            Err(_) => Err(fail(BAD_CONNECTION, "context deadline exceeded")),
        }
    }

    /// A client of `--endpoints` whose calls end after `--command-timeout`.
    pub async fn client(&self) -> anyhow::Result<Client> {
        self.client_of(&self.endpoint_list(), Some(self.command_timeout))
            .await
    }

    /// The printer `-w` and `--hex` ask for.
    pub fn printer(&self) -> anyhow::Result<Printer> {
        Ok(Printer::new(Format::parse(&self.write_out)?, self.hex))
    }
}

/// TLS options as etcdctl 3.4 builds them from a certificate, key and CA bundle (each
/// unset when empty) and its transport flags (see the module docs), files read: `None`
/// for plain text. A certificate without its key (or the reverse) and unreadable files
/// are refused with exit code 128.
pub fn tls_options(
    cert: &Option<String>,
    key: &Option<String>,
    cacert: &Option<String>,
    insecure_transport: bool,
    insecure_skip_verify: bool,
) -> anyhow::Result<Option<TlsOptions>> {
    let nonempty = |o: &Option<String>| o.clone().filter(|s| !s.is_empty());
    let (cert, key, ca) = (nonempty(cert), nonempty(key), nonempty(cacert));
    if cert.is_none() && key.is_none() && ca.is_none() {
        return Ok((!insecure_transport).then(|| TlsOptions {
            insecure_skip_verify,
            ..TlsOptions::default()
        }));
    }
    let read = |path: &str| {
        std::fs::read(path)
            .map_err(|e| fail(BAD_ARGS, format!("open {path}: {}", go::io_error(&e))))
    };
    let identity = match (&cert, &key) {
        (None, None) => None,
        (Some(c), Some(k)) => Some(Identity {
            cert_pem: read(c)?,
            key_pem: read(k)?,
        }),
        _ => {
            return Err(fail(
                BAD_ARGS,
                format!(
                    "KeyFile and CertFile must both be present[key: {}, cert: {}]",
                    key.unwrap_or_default(),
                    cert.unwrap_or_default()
                ),
            ))
        }
    };
    let ca_pem = match &ca {
        Some(path) => Some(read(path)?),
        None => None,
    };
    Ok(Some(TlsOptions {
        ca_pem,
        identity,
        insecure_skip_verify,
        server_name: None,
    }))
}
