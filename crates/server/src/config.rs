//! The `skiff` command line: etcd's flag names, `ETCD_*` environment variables and
//! defaults, so Skiff is a drop-in for an etcd member, and the checks etcd makes on
//! them (turned into a validated [`Config`]).
//!
//! Guarantees: [`Config::from_flags`] accepts exactly the combinations etcd 3.4
//! accepts for these flags (plus `https` being refused until TLS exists), and every
//! refusal is a [`ConfigError`] whose message names the flag and the value. A flag
//! beats its environment variable, as in etcd. Go-style single-dash long flags
//! (`-name x`) are accepted too, see [`normalize_args`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use clap::{CommandFactory, Parser, ValueEnum};

use crate::ids;

/// etcd's default request size limit: 1.5 MiB.
pub const DEFAULT_MAX_REQUEST_BYTES: u32 = 1024 * 1024 + 512 * 1024;
/// etcd's default backend quota: 2 GiB.
pub const DEFAULT_QUOTA_BACKEND_BYTES: u64 = 2 * 1024 * 1024 * 1024;
/// etcd 3.4's default number of applied entries between snapshots.
pub const DEFAULT_SNAPSHOT_COUNT: u64 = 100_000;
/// etcd refuses election timeouts above this (milliseconds).
const MAX_ELECTION_TIMEOUT_MS: u64 = 50_000;

/// The flags, as parsed. Names, environment variables and defaults are etcd's.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "skiff",
    version,
    about = "Skiff: an etcd-compatible, Raft-replicated key-value store (one member)"
)]
pub struct Flags {
    /// Human-readable name for this member.
    #[arg(long, env = "ETCD_NAME", default_value = "default")]
    pub name: String,

    /// Path to the data directory [default: <name>.skiff].
    #[arg(long, env = "ETCD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// URLs to listen on for client traffic [default: http://localhost:2379].
    #[arg(long, env = "ETCD_LISTEN_CLIENT_URLS")]
    pub listen_client_urls: Option<String>,

    /// Client URLs of this member to advertise to the cluster and clients
    /// [default: http://localhost:2379].
    #[arg(long, env = "ETCD_ADVERTISE_CLIENT_URLS")]
    pub advertise_client_urls: Option<String>,

    /// URLs to listen on for peer traffic [default: http://localhost:2380].
    #[arg(long, env = "ETCD_LISTEN_PEER_URLS")]
    pub listen_peer_urls: Option<String>,

    /// Peer URLs of this member to advertise to the rest of the cluster
    /// [default: http://localhost:2380].
    #[arg(long, env = "ETCD_INITIAL_ADVERTISE_PEER_URLS")]
    pub initial_advertise_peer_urls: Option<String>,

    /// Initial cluster configuration for bootstrapping, `name=url,name=url`
    /// [default: <name>=<initial-advertise-peer-urls>].
    #[arg(long, env = "ETCD_INITIAL_CLUSTER")]
    pub initial_cluster: Option<String>,

    /// Initial cluster state: `new` or `existing`.
    #[arg(long, env = "ETCD_INITIAL_CLUSTER_STATE", value_enum, default_value_t = ClusterState::New)]
    pub initial_cluster_state: ClusterState,

    /// Initial cluster token, mixed into member and cluster IDs.
    #[arg(
        long,
        env = "ETCD_INITIAL_CLUSTER_TOKEN",
        default_value = "etcd-cluster"
    )]
    pub initial_cluster_token: String,

    /// Time (in milliseconds) of a heartbeat interval.
    #[arg(long, env = "ETCD_HEARTBEAT_INTERVAL", default_value_t = 100)]
    pub heartbeat_interval: u64,

    /// Time (in milliseconds) for an election to time out.
    #[arg(long, env = "ETCD_ELECTION_TIMEOUT", default_value_t = 1000)]
    pub election_timeout: u64,

    /// Number of committed transactions to trigger a snapshot to disk.
    #[arg(long, env = "ETCD_SNAPSHOT_COUNT", default_value_t = DEFAULT_SNAPSHOT_COUNT)]
    pub snapshot_count: u64,

    /// Raise alarms when backend size exceeds the given quota (0 defaults to 2 GiB,
    /// a negative value disables the quota).
    #[arg(
        long,
        env = "ETCD_QUOTA_BACKEND_BYTES",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    pub quota_backend_bytes: i64,

    /// Maximum client request size in bytes the server will accept.
    #[arg(long, env = "ETCD_MAX_REQUEST_BYTES", default_value_t = DEFAULT_MAX_REQUEST_BYTES)]
    pub max_request_bytes: u32,

    /// Maximum number of operations permitted in a transaction.
    #[arg(long, env = "ETCD_MAX_TXN_OPS", default_value_t = 128)]
    pub max_txn_ops: u32,

    /// Log level: debug, info, warn, error, panic or fatal.
    #[arg(long, env = "ETCD_LOG_LEVEL", value_enum, default_value_t = LogLevel::Info)]
    pub log_level: LogLevel,

    /// Enable the Raft pre-vote phase (Skiff's default is on; etcd 3.4's was off).
    #[arg(
        long,
        env = "ETCD_PRE_VOTE",
        default_value_t = true,
        num_args = 0..=1,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub pre_vote: bool,
}

/// `--initial-cluster-state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ClusterState {
    /// Bootstrap a new cluster from `--initial-cluster`.
    New,
    /// Join a cluster that already runs.
    Existing,
}

/// `--log-level`, with etcd's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
    Panic,
    Fatal,
}

impl LogLevel {
    /// The `tracing` filter directive for this level (panic and fatal log errors only).
    pub fn as_filter(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error | LogLevel::Panic | LogLevel::Fatal => "error",
        }
    }
}

/// A flag combination or value that etcd would refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid value {value:?} for flag --{flag}: {reason}")]
    InvalidValue {
        flag: &'static str,
        value: String,
        reason: String,
    },
    #[error("--advertise-client-urls is required when --listen-client-urls is set explicitly")]
    AdvertiseClientUrlsRequired,
    #[error(
        "--election-timeout[{election}ms] should be at least as 5 times as --heartbeat-interval[{heartbeat}ms]"
    )]
    ElectionTooShort { election: u64, heartbeat: u64 },
    #[error(
        "--election-timeout[{0}ms] is too long, and should be set less than {MAX_ELECTION_TIMEOUT_MS}ms"
    )]
    ElectionTooLong(u64),
    #[error("--heartbeat-interval must be greater than 0")]
    ZeroHeartbeat,
    #[error("couldn't find local name {0:?} in the initial cluster configuration")]
    NameNotInCluster(String),
    #[error(
        "--initial-cluster has {name}={cluster_urls} but missing from --initial-advertise-peer-urls={advertised}"
    )]
    PeerUrlsMismatch {
        name: String,
        cluster_urls: String,
        advertised: String,
    },
    #[error("member {0:?} appears in --initial-cluster with a URL already used by another member")]
    DuplicatePeerUrl(String),
    #[error("--max-request-bytes must be greater than 0")]
    ZeroMaxRequestBytes,
    #[error("--max-txn-ops must be greater than 0")]
    ZeroMaxTxnOps,
}

/// A validated URL in etcd's `scheme://host:port` form, kept as written (etcd hashes
/// the string form of peer URLs into member IDs, so it must not be normalized).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Url {
    text: String,
    scheme_len: usize,
}

impl Url {
    /// Parses one URL with etcd's rules; `Err` carries etcd's reason text.
    pub fn parse(text: &str) -> Result<Url, String> {
        let text = text.trim();
        let Some((scheme, rest)) = text.split_once("://") else {
            return Err(format!(
                "URL scheme must be http, https, unix, or unixs: {text}"
            ));
        };
        let scheme = scheme.to_ascii_lowercase();
        if !matches!(scheme.as_str(), "http" | "https" | "unix" | "unixs") {
            return Err(format!(
                "URL scheme must be http, https, unix, or unixs: {text}"
            ));
        }
        if scheme != "http" {
            return Err(format!(
                "only http URLs are supported by this Skiff build (TLS and unix sockets are not yet): {text}"
            ));
        }
        if rest.contains('/') {
            let (_, path) = rest.split_at(rest.find('/').expect("contains '/'"));
            if path != "/" {
                return Err(format!("URL must not contain a path: {text}"));
            }
        }
        let hostport = rest.trim_end_matches('/');
        if !valid_host_port(hostport) {
            return Err(format!(
                "URL address does not have the form \"host:port\": {text}"
            ));
        }
        Ok(Url {
            text: format!("{scheme}://{hostport}"),
            scheme_len: scheme.len(),
        })
    }

    /// `host:port`, as written (a name such as `localhost` is resolved when binding).
    pub fn host_port(&self) -> &str {
        &self.text[self.scheme_len + 3..]
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn valid_host_port(s: &str) -> bool {
    let Some((host, port)) = s.rsplit_once(':') else {
        return false;
    };
    let host_ok = if let Some(inner) = host.strip_prefix('[') {
        inner.ends_with(']') && inner.len() > 1
    } else {
        !host.is_empty() && !host.contains(':')
    };
    host_ok && port.parse::<u16>().is_ok()
}

fn parse_urls(flag: &'static str, value: &str) -> Result<Vec<Url>, ConfigError> {
    let invalid = |reason: String| ConfigError::InvalidValue {
        flag,
        value: value.to_string(),
        reason,
    };
    let mut urls = Vec::new();
    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        urls.push(Url::parse(part).map_err(invalid)?);
    }
    if urls.is_empty() {
        return Err(invalid("no URL given".to_string()));
    }
    Ok(urls)
}

/// Parses `name=url,name=url,...`; a name may appear several times (several URLs).
fn parse_initial_cluster(value: &str) -> Result<BTreeMap<String, Vec<Url>>, ConfigError> {
    let invalid = |reason: String| ConfigError::InvalidValue {
        flag: "initial-cluster",
        value: value.to_string(),
        reason,
    };
    let mut members: BTreeMap<String, Vec<Url>> = BTreeMap::new();
    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((name, url)) = part.split_once('=') else {
            return Err(invalid(format!("{part:?} is not of the form name=url")));
        };
        let url = Url::parse(url).map_err(invalid)?;
        members.entry(name.to_string()).or_default().push(url);
    }
    if members.is_empty() {
        return Err(invalid("no member given".to_string()));
    }
    Ok(members)
}

/// One member of the initial cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialMember {
    pub id: u64,
    pub name: String,
    pub peer_urls: Vec<Url>,
}

/// The member's configuration, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub name: String,
    pub data_dir: PathBuf,
    pub listen_client_urls: Vec<Url>,
    pub advertise_client_urls: Vec<Url>,
    pub listen_peer_urls: Vec<Url>,
    pub initial_advertise_peer_urls: Vec<Url>,
    /// Member name to its peer URLs (each list sorted).
    pub initial_cluster: BTreeMap<String, Vec<Url>>,
    pub initial_cluster_state: ClusterState,
    pub initial_cluster_token: String,
    pub heartbeat_interval: Duration,
    pub election_timeout: Duration,
    pub snapshot_count: u64,
    /// `None`: no quota (a negative `--quota-backend-bytes`).
    pub quota_backend_bytes: Option<u64>,
    pub max_request_bytes: u32,
    pub max_txn_ops: u32,
    pub log_level: LogLevel,
    pub pre_vote: bool,
}

const DEFAULT_CLIENT_URL: &str = "http://localhost:2379";
const DEFAULT_PEER_URL: &str = "http://localhost:2380";

impl Config {
    /// Checks the flags as etcd does and fills in etcd's derived defaults.
    pub fn from_flags(flags: Flags) -> Result<Config, ConfigError> {
        if flags.listen_client_urls.is_some() && flags.advertise_client_urls.is_none() {
            return Err(ConfigError::AdvertiseClientUrlsRequired);
        }
        let listen_client_urls = parse_urls(
            "listen-client-urls",
            flags
                .listen_client_urls
                .as_deref()
                .unwrap_or(DEFAULT_CLIENT_URL),
        )?;
        let advertise_client_urls = parse_urls(
            "advertise-client-urls",
            flags
                .advertise_client_urls
                .as_deref()
                .unwrap_or(DEFAULT_CLIENT_URL),
        )?;
        let listen_peer_urls = parse_urls(
            "listen-peer-urls",
            flags
                .listen_peer_urls
                .as_deref()
                .unwrap_or(DEFAULT_PEER_URL),
        )?;
        let mut initial_advertise_peer_urls = parse_urls(
            "initial-advertise-peer-urls",
            flags
                .initial_advertise_peer_urls
                .as_deref()
                .unwrap_or(DEFAULT_PEER_URL),
        )?;
        initial_advertise_peer_urls.sort();

        let mut initial_cluster = match &flags.initial_cluster {
            Some(value) => parse_initial_cluster(value)?,
            None => BTreeMap::from([(flags.name.clone(), initial_advertise_peer_urls.clone())]),
        };
        for urls in initial_cluster.values_mut() {
            urls.sort();
            urls.dedup();
        }
        let mut seen = BTreeMap::new();
        for (name, urls) in &initial_cluster {
            for url in urls {
                if let Some(other) = seen.insert(url.clone(), name.clone()) {
                    if &other != name {
                        return Err(ConfigError::DuplicatePeerUrl(name.clone()));
                    }
                }
            }
        }
        let Some(own_urls) = initial_cluster.get(&flags.name) else {
            return Err(ConfigError::NameNotInCluster(flags.name));
        };
        if own_urls != &initial_advertise_peer_urls {
            return Err(ConfigError::PeerUrlsMismatch {
                name: flags.name.clone(),
                cluster_urls: join(own_urls),
                advertised: join(&initial_advertise_peer_urls),
            });
        }

        if flags.heartbeat_interval == 0 {
            return Err(ConfigError::ZeroHeartbeat);
        }
        if flags.election_timeout < 5 * flags.heartbeat_interval {
            return Err(ConfigError::ElectionTooShort {
                election: flags.election_timeout,
                heartbeat: flags.heartbeat_interval,
            });
        }
        if flags.election_timeout > MAX_ELECTION_TIMEOUT_MS {
            return Err(ConfigError::ElectionTooLong(flags.election_timeout));
        }
        if flags.max_request_bytes == 0 {
            return Err(ConfigError::ZeroMaxRequestBytes);
        }
        if flags.max_txn_ops == 0 {
            return Err(ConfigError::ZeroMaxTxnOps);
        }

        let data_dir = flags
            .data_dir
            .unwrap_or_else(|| PathBuf::from(format!("{}.skiff", flags.name)));
        let quota_backend_bytes = match flags.quota_backend_bytes {
            q if q < 0 => None,
            0 => Some(DEFAULT_QUOTA_BACKEND_BYTES),
            q => Some(q as u64),
        };
        let snapshot_count = match flags.snapshot_count {
            0 => DEFAULT_SNAPSHOT_COUNT,
            n => n,
        };
        Ok(Config {
            name: flags.name,
            data_dir,
            listen_client_urls,
            advertise_client_urls,
            listen_peer_urls,
            initial_advertise_peer_urls,
            initial_cluster,
            initial_cluster_state: flags.initial_cluster_state,
            initial_cluster_token: flags.initial_cluster_token,
            heartbeat_interval: Duration::from_millis(flags.heartbeat_interval),
            election_timeout: Duration::from_millis(flags.election_timeout),
            snapshot_count,
            quota_backend_bytes,
            max_request_bytes: flags.max_request_bytes,
            max_txn_ops: flags.max_txn_ops,
            log_level: flags.log_level,
            pre_vote: flags.pre_vote,
        })
    }

    /// The initial members with their IDs, sorted by ID (as `member list` shows them).
    pub fn initial_members(&self) -> Vec<InitialMember> {
        let mut members: Vec<InitialMember> = self
            .initial_cluster
            .iter()
            .map(|(name, urls)| InitialMember {
                id: ids::member_id(
                    &urls.iter().map(Url::as_str).collect::<Vec<_>>(),
                    &self.initial_cluster_token,
                ),
                name: name.clone(),
                peer_urls: urls.clone(),
            })
            .collect();
        members.sort_by_key(|m| m.id);
        members
    }

    /// This member's ID.
    pub fn member_id(&self) -> u64 {
        let urls: Vec<&str> = self
            .initial_advertise_peer_urls
            .iter()
            .map(Url::as_str)
            .collect();
        ids::member_id(&urls, &self.initial_cluster_token)
    }

    /// The cluster ID derived from the initial members.
    pub fn cluster_id(&self) -> u64 {
        let ids: Vec<u64> = self.initial_members().iter().map(|m| m.id).collect();
        ids::cluster_id(&ids)
    }

    /// Election timeout in heartbeat ticks (Raft is driven by one tick per heartbeat).
    pub fn election_ticks(&self) -> u64 {
        (self.election_timeout.as_millis() / self.heartbeat_interval.as_millis()) as u64
    }

    /// The smallest lease TTL granted, in seconds: 1.5 x the election timeout rounded
    /// up to a whole second, as etcd computes it (a shorter lease could expire during
    /// a normal leader election).
    pub fn min_lease_ttl_secs(&self) -> i64 {
        let ms = self.election_timeout.as_millis() as i64 * 3 / 2;
        (ms + 999) / 1000
    }
}

fn join(urls: &[Url]) -> String {
    urls.iter().map(Url::as_str).collect::<Vec<_>>().join(",")
}

/// Accepts Go-style single-dash long flags, as etcd does: `-name x` and `-name=x`
/// become `--name x` and `--name=x` when `name` is one of the long flags.
pub fn normalize_args<I, S>(args: I) -> Vec<String>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let cmd = Flags::command();
    let longs: Vec<String> = cmd
        .get_arguments()
        .filter_map(|a| a.get_long().map(str::to_string))
        .chain(["help".to_string(), "version".to_string()])
        .collect();
    args.into_iter()
        .map(Into::into)
        .enumerate()
        .map(|(i, arg)| {
            if i == 0 || arg.starts_with("--") || !arg.starts_with('-') {
                return arg;
            }
            let name = arg[1..].split('=').next().unwrap_or_default();
            if longs.iter().any(|l| l == name) {
                format!("-{arg}")
            } else {
                arg
            }
        })
        .collect()
}

/// Environment variables that look like etcd configuration but name no flag Skiff
/// knows (etcd warns about these and goes on).
pub fn unrecognized_env_vars() -> Vec<String> {
    let cmd = Flags::command();
    let known: Vec<String> = cmd
        .get_arguments()
        .filter_map(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
        .collect();
    std::env::vars()
        .map(|(k, _)| k)
        .filter(|k| k.starts_with("ETCD_") && !known.contains(k))
        // ETCDCTL_* is the client's; ETCD_UNSUPPORTED_ARCH is a platform switch.
        .filter(|k| k != "ETCD_UNSUPPORTED_ARCH")
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let mut all = vec!["skiff"];
        all.extend_from_slice(args);
        let flags = Flags::try_parse_from(normalize_args(all)).map_err(|e| e.to_string())?;
        Config::from_flags(flags).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_etcds() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.name, "default");
        assert_eq!(c.data_dir, PathBuf::from("default.skiff"));
        assert_eq!(c.listen_client_urls[0].as_str(), "http://localhost:2379");
        assert_eq!(c.advertise_client_urls[0].as_str(), "http://localhost:2379");
        assert_eq!(c.listen_peer_urls[0].as_str(), "http://localhost:2380");
        assert_eq!(
            c.initial_cluster["default"][0].as_str(),
            "http://localhost:2380"
        );
        assert_eq!(c.initial_cluster_token, "etcd-cluster");
        assert_eq!(c.heartbeat_interval, Duration::from_millis(100));
        assert_eq!(c.election_ticks(), 10);
        assert_eq!(c.snapshot_count, 100_000);
        assert_eq!(c.quota_backend_bytes, Some(2 << 30));
        assert_eq!(c.max_request_bytes, 1_572_864);
        assert_eq!(c.max_txn_ops, 128);
        assert!(c.pre_vote);
        assert_eq!(c.min_lease_ttl_secs(), 2);
        assert_eq!(c.initial_cluster_state, ClusterState::New);
    }

    #[test]
    fn default_member_id_is_etcds() {
        // etcd 3.4 started with no flags reports member 8e9e05c52164694d.
        let c = parse(&[]).unwrap();
        assert_eq!(format!("{:x}", c.member_id()), "8e9e05c52164694d");
        assert_eq!(format!("{:x}", c.cluster_id()), "cdf818194e3a8c32");
    }

    #[test]
    fn data_dir_follows_name() {
        let c = parse(&["--name", "n1"]).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("n1.skiff"));
        assert_eq!(c.initial_cluster["n1"][0].as_str(), "http://localhost:2380");
    }

    #[test]
    fn three_member_cluster_ids() {
        let c = parse(&[
            "--name",
            "a",
            "--initial-cluster-token",
            "cluster3",
            "--initial-advertise-peer-urls",
            "http://127.0.0.1:2380",
            "--initial-cluster",
            "a=http://127.0.0.1:2380,b=http://127.0.0.1:22380,c=http://127.0.0.1:32380",
        ])
        .unwrap();
        assert_eq!(c.member_id(), 16406310065595058827);
        assert_eq!(c.cluster_id(), 6857150283879729890);
        let ids: Vec<u64> = c.initial_members().iter().map(|m| m.id).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
    }

    #[test]
    fn single_dash_flags_and_equals() {
        let c = parse(&[
            "-name=x",
            "-heartbeat-interval",
            "50",
            "--election-timeout=500",
        ])
        .unwrap();
        assert_eq!(c.name, "x");
        assert_eq!(c.heartbeat_interval, Duration::from_millis(50));
        assert_eq!(c.election_ticks(), 10);
    }

    #[test]
    fn pre_vote_can_be_switched_off() {
        assert!(!parse(&["--pre-vote=false"]).unwrap().pre_vote);
        assert!(parse(&["--pre-vote"]).unwrap().pre_vote);
    }

    #[test]
    fn negative_quota_disables() {
        let c = parse(&["--quota-backend-bytes", "-1"]).unwrap();
        assert_eq!(c.quota_backend_bytes, None);
        let c = parse(&["--quota-backend-bytes", "1024"]).unwrap();
        assert_eq!(c.quota_backend_bytes, Some(1024));
    }

    #[test]
    fn refusals() {
        let err = |args: &[&str]| parse(args).unwrap_err();
        assert!(err(&["--bogus"]).contains("--bogus"));
        assert!(err(&["positional"]).contains("positional"));
        assert!(err(&["--initial-cluster-state", "foo"]).contains("foo"));
        assert!(err(&["--snapshot-count", "abc"]).contains("abc"));
        assert_eq!(
            err(&["--heartbeat-interval", "500"]),
            "--election-timeout[1000ms] should be at least as 5 times as --heartbeat-interval[500ms]"
        );
        assert!(err(&["--election-timeout", "60000"]).contains("too long"));
        assert_eq!(
            err(&["--listen-client-urls", "http://127.0.0.1:23379"]),
            "--advertise-client-urls is required when --listen-client-urls is set explicitly"
        );
        assert_eq!(
            err(&[
                "--name",
                "x",
                "--initial-cluster",
                "y=http://127.0.0.1:23380"
            ]),
            "couldn't find local name \"x\" in the initial cluster configuration"
        );
        assert!(err(&[
            "--name",
            "x",
            "--initial-cluster",
            "x=http://127.0.0.1:23399",
            "--initial-advertise-peer-urls",
            "http://127.0.0.1:23380"
        ])
        .contains("missing from --initial-advertise-peer-urls"));
        assert!(err(&["--listen-peer-urls", "127.0.0.1:23380"])
            .contains("URL scheme must be http, https, unix, or unixs"));
        assert!(err(&["--listen-peer-urls", "http://127.0.0.1:23380/x"]).contains("path"));
        assert!(err(&["--listen-peer-urls", "http://127.0.0.1"]).contains("host:port"));
        assert!(err(&["--max-txn-ops", "0"]).contains("max-txn-ops"));
    }

    #[test]
    fn url_forms() {
        assert_eq!(
            Url::parse("HTTP://[::1]:2379").unwrap().as_str(),
            "http://[::1]:2379"
        );
        assert_eq!(Url::parse("http://h:1/").unwrap().host_port(), "h:1");
        assert!(Url::parse("http://h:99999").is_err());
        assert!(Url::parse("https://h:1").is_err());
    }
}
