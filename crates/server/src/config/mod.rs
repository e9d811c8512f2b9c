//! The `skiff` command line and config file: etcd's flag names, `ETCD_*` environment
//! variables, YAML config file and defaults, so Skiff is a drop-in for an etcd member,
//! and the checks etcd makes on them (turned into a validated [`Config`]).
//!
//! Parts: [`flags`] (every etcd 3.4.23 flag), [`values`] (Go's value syntax and
//! etcd's error texts), [`url`] (URL flags), [`file`] (`--config-file`), [`tls`] (the
//! client and peer TLS settings).
//!
//! Guarantees: every flag etcd 3.4.23 accepts is accepted; [`Config::from_flags`]
//! refuses what etcd refuses (each refusal a [`ConfigError`] naming the flag and the
//! value), refuses what Skiff cannot do without changing what clients see (`unix`
//! URLs; `--discovery`, `--force-new-cluster`), and turns
//! every flag whose feature Skiff lacks but whose absence clients cannot notice into
//! one warning line ([`Config::warnings`]). A flag beats its environment variable,
//! as in etcd; with `--config-file` both are ignored, as in etcd. Go-style
//! single-dash long flags (`-name x`) are accepted too, see [`normalize_args`].

pub mod file;
pub mod flags;
pub mod tls;
pub mod url;
pub mod values;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::CommandFactory;

pub use flags::{ClusterState, DiscoveryFallback, Flags, LogLevel, ProxyMode, IGNORED_FLAGS};
pub use tls::TlsInfo;
pub use url::Url;

use crate::ids;
use url::{parse_cors, parse_initial_cluster, parse_urls};

/// etcd's default request size limit: 1.5 MiB.
pub const DEFAULT_MAX_REQUEST_BYTES: u32 = 1024 * 1024 + 512 * 1024;
/// Skiff's default in-flight response budget (`--max-inflight-response-bytes`): 512 MiB.
pub const DEFAULT_MAX_INFLIGHT_RESPONSE_BYTES: u64 = 512 * 1024 * 1024;
/// etcd's default backend quota: 2 GiB.
pub const DEFAULT_QUOTA_BACKEND_BYTES: u64 = 2 * 1024 * 1024 * 1024;
/// etcd 3.4's default number of applied entries between snapshots.
pub const DEFAULT_SNAPSHOT_COUNT: u64 = 100_000;
/// etcd refuses election timeouts above this (milliseconds).
const MAX_ELECTION_TIMEOUT_MS: u64 = 50_000;

/// A flag combination or value that etcd would refuse, or that Skiff cannot honour
/// without changing what clients see.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid value {value:?} for flag -{flag}: {reason}")]
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
    #[error("unknown logger option {0:?}")]
    UnknownLogger(String),
    #[error("unknown log-output {0:?} (only supports \"default\", \"stderr\", \"stdout\")")]
    UnknownLogOutput(String),
    #[error("multi logoutput for \"default\" is not supported yet")]
    MultiDefaultLogOutput,
    #[error("unknown auto-compaction-mode {0:?}")]
    UnknownCompactionMode(String),
    #[error("error parsing CompactionRetention: time: invalid duration {0:?}")]
    BadCompactionRetention(String),
    #[error("auth: invalid auth options (--auth-token={0:?}: 'simple' or 'jwt,...')")]
    BadAuthToken(String),
    #[error("{1} (--auth-token={0:?})")]
    BadJwtOptions(String, crate::auth::jwt::JwtError),
    #[error("--{0} is not supported yet by Skiff; bootstrap with --initial-cluster instead")]
    DiscoveryUnsupported(&'static str),
    #[error("TLS key/cert (--cert-file, --key-file) must be provided for client url {0} with HTTPS scheme")]
    ClientTlsMissing(String),
    #[error("cannot listen on TLS for {0}: KeyFile and CertFile are not presented")]
    PeerTlsMissing(String),
    #[error("unexpected TLS cipher suite {0:?}")]
    UnknownCipherSuite(String),
    #[error("cannot read config file {path}: {reason}")]
    ConfigFile { path: String, reason: String },
}

/// One member of the initial cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialMember {
    pub id: u64,
    pub name: String,
    pub peer_urls: Vec<Url>,
}

/// `--logger`: the log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logger {
    /// etcd 3.4's default: text lines.
    Capnslog,
    /// Structured logging: one JSON object a line.
    Zap,
}

/// One `--log-outputs` target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogOutput {
    /// etcd's `default`: stderr (etcd uses journald under systemd with zap).
    Default,
    Stderr,
    Stdout,
    /// A file, appended to (zap only, as in etcd).
    File(PathBuf),
}

/// `--auto-compaction-mode` with its `--auto-compaction-retention`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoCompaction {
    /// Keep the revisions of the last `retention` (etcd's `periodic`).
    Periodic(Duration),
    /// Keep the last `n` revisions (etcd's `revision`).
    Revision(i64),
}

/// The member's configuration, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub name: String,
    pub data_dir: PathBuf,
    /// `--wal-dir`: the WAL's own directory (`None`: `<data-dir>/member/wal`).
    pub wal_dir: Option<PathBuf>,
    pub listen_client_urls: Vec<Url>,
    pub advertise_client_urls: Vec<Url>,
    pub listen_peer_urls: Vec<Url>,
    pub initial_advertise_peer_urls: Vec<Url>,
    /// `--listen-metrics-urls`: extra listeners serving `/metrics` and `/health`.
    pub listen_metrics_urls: Vec<Url>,
    /// Member name to its peer URLs (each list sorted).
    pub initial_cluster: BTreeMap<String, Vec<Url>>,
    pub initial_cluster_state: ClusterState,
    pub initial_cluster_token: String,
    pub heartbeat_interval: Duration,
    pub election_timeout: Duration,
    pub snapshot_count: u64,
    /// Snapshot files kept (0: all).
    pub max_snapshots: u32,
    /// WAL segment files kept (0: all).
    pub max_wals: u32,
    /// `None`: no quota (a negative `--quota-backend-bytes`).
    pub quota_backend_bytes: Option<u64>,
    pub max_request_bytes: u32,
    pub max_txn_ops: u32,
    /// `--max-inflight-response-bytes` (Skiff's; 0: unlimited): see `crate::budget`.
    pub max_inflight_response_bytes: u64,
    /// `--watch-stream-bytes` (Skiff's): see `skiff_storage::watch`.
    pub watch_stream_bytes: u64,
    /// HTTP/2 streams one client connection may have open at once.
    pub max_concurrent_streams: u32,
    /// `--grpc-keepalive-min-time` (what a client is told; see docs/flags.md).
    pub grpc_keepalive_min_time: Duration,
    /// Server-to-client pings on idle connections (`None`: off).
    pub grpc_keepalive_interval: Option<Duration>,
    /// How long a ping may go unanswered before the connection is closed.
    pub grpc_keepalive_timeout: Option<Duration>,
    pub log_level: LogLevel,
    pub logger: Logger,
    pub log_outputs: Vec<LogOutput>,
    pub pre_vote: bool,
    /// `--initial-election-tick-advance` (etcd's default: on).
    pub initial_election_tick_advance: bool,
    pub strict_reconfig_check: bool,
    /// `--force-new-cluster`: restart as a one-member cluster with this data.
    pub force_new_cluster: bool,
    /// `--enable-grpc-gateway`: serve the JSON gateway on the client port.
    pub enable_grpc_gateway: bool,
    /// `--experimental-watch-progress-notify-interval`.
    pub watch_progress_notify_interval: Duration,
    /// Lease checkpoints (`--experimental-enable-lease-checkpoint`; Skiff's default: on).
    pub lease_checkpoint: bool,
    /// Checkpointed TTLs survive restarts (`--experimental-enable-lease-checkpoint-persist`;
    /// accepted, not used yet: checkpoints live in memory).
    pub lease_checkpoint_persist: bool,
    /// `--cors` origins (empty or containing `*`: any origin).
    pub cors: Vec<String>,
    /// `--host-whitelist` (empty or containing `*`: any host).
    pub host_whitelist: Vec<String>,
    /// `None`: no automatic compaction (a retention of 0).
    pub auto_compaction: Option<AutoCompaction>,
    /// `--experimental-initial-corrupt-check`: compare HashKV with the peers before
    /// serving; a mismatch stops the start.
    pub initial_corrupt_check: bool,
    /// `--experimental-corrupt-check-time` (`None`: no periodic check).
    pub corrupt_check_time: Option<Duration>,
    /// `--metrics=extensive`.
    pub metrics_extensive: bool,
    pub auth_token: String,
    /// `--auth-token jwt,...`'s options (`None`: simple tokens).
    pub jwt: Option<crate::auth::jwt::JwtOptions>,
    pub bcrypt_cost: u32,
    pub auth_token_ttl: Duration,
    pub warning_apply_duration: Duration,
    pub compaction_batch_limit: i64,
    /// `--backend-batch-interval`: the longest time between the backend's durable
    /// commits (`None`: 0 or unset, the backend's default of 1 s).
    pub backend_batch_interval: Option<Duration>,
    /// `--backend-batch-limit`: entries applied since the last durable commit that make
    /// the next one due (`None`: 0 or negative, no entry bound).
    pub backend_batch_limit: Option<u64>,
    /// The client port's TLS (used by its `https` listen URLs).
    pub client_tls: TlsInfo,
    /// The peer port's TLS (used by `https` peer URLs, listening and dialing).
    pub peer_tls: TlsInfo,
    /// One line per flag that was accepted but whose feature Skiff lacks (logged at
    /// start-up, once logging is set up).
    pub warnings: Vec<String>,
}

const DEFAULT_CLIENT_URL: &str = "http://localhost:2379";
const DEFAULT_PEER_URL: &str = "http://localhost:2380";

/// Splits a comma-separated list, dropping empty entries and repeats.
fn unique_list(value: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if !out.iter().any(|o| o == part) {
            out.push(part.to_string());
        }
    }
    out
}

fn parse_log_outputs(logger: Logger, value: &str) -> Result<Vec<LogOutput>, ConfigError> {
    let names = unique_list(value);
    let names = if names.is_empty() {
        vec!["default".to_string()]
    } else {
        names
    };
    if logger == Logger::Zap && names.len() > 1 && names.iter().any(|n| n == "default") {
        return Err(ConfigError::MultiDefaultLogOutput);
    }
    names
        .into_iter()
        .map(|n| match n.as_str() {
            "default" => Ok(LogOutput::Default),
            "stderr" => Ok(LogOutput::Stderr),
            "stdout" => Ok(LogOutput::Stdout),
            _ if logger == Logger::Zap => Ok(LogOutput::File(PathBuf::from(n))),
            _ => Err(ConfigError::UnknownLogOutput(n)),
        })
        .collect()
}

fn parse_auto_compaction(
    mode: &str,
    retention: &str,
) -> Result<Option<AutoCompaction>, ConfigError> {
    let revision = match mode {
        "periodic" => false,
        "revision" => true,
        _ => return Err(ConfigError::UnknownCompactionMode(mode.to_string())),
    };
    let compaction = match retention.parse::<i64>() {
        Ok(0) => return Ok(None),
        Ok(n) if n > 0 && revision => AutoCompaction::Revision(n),
        Ok(n) if n > 0 => AutoCompaction::Periodic(Duration::from_secs(n as u64 * 3600)),
        _ => {
            let d = values::go_duration(retention)
                .map_err(|_| ConfigError::BadCompactionRetention(retention.to_string()))?;
            if d.is_zero() {
                return Ok(None);
            }
            if revision {
                // etcd reads the duration's nanoseconds as a revision count here.
                AutoCompaction::Revision(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
            } else {
                AutoCompaction::Periodic(d)
            }
        }
    };
    Ok(Some(compaction))
}

/// The one-line warnings for flags Skiff accepts without their feature, and the
/// refusals for those whose absence clients would notice.
fn unsupported(flags: &Flags, warnings: &mut Vec<String>) -> Result<(), ConfigError> {
    if !flags.discovery.is_empty() {
        return Err(ConfigError::DiscoveryUnsupported("discovery"));
    }
    if !flags.discovery_srv.is_empty() {
        return Err(ConfigError::DiscoveryUnsupported("discovery-srv"));
    }
    let mut warn = |flag: &str, why: &str| warnings.push(format!("--{flag}: {why}"));
    if !flags.discovery_proxy.is_empty() || !flags.discovery_srv_name.is_empty() {
        warn(
            "discovery-proxy/--discovery-srv-name",
            "ignored: discovery is not supported",
        );
    }
    if flags.enable_v2 {
        warn("enable-v2", "ignored: Skiff serves the v3 API only");
    }
    if !flags.experimental_enable_v2v3.is_empty() {
        warn(
            "experimental-enable-v2v3",
            "ignored: Skiff serves the v3 API only",
        );
    }
    if flags.proxy != ProxyMode::Off {
        warn(
            "proxy",
            "ignored: the v2 proxy is not built; running as a member",
        );
    }
    let proxy_timings = [
        ("proxy-failure-wait", flags.proxy_failure_wait, 5000),
        (
            "proxy-refresh-interval",
            flags.proxy_refresh_interval,
            30000,
        ),
        ("proxy-dial-timeout", flags.proxy_dial_timeout, 1000),
        ("proxy-write-timeout", flags.proxy_write_timeout, 5000),
        ("proxy-read-timeout", flags.proxy_read_timeout, 0),
    ];
    for (flag, value, default) in proxy_timings {
        if value != default {
            warn(flag, "ignored: the v2 proxy is not built");
        }
    }
    if flags.enable_pprof {
        warn(
            "enable-pprof",
            "ignored: Go's pprof endpoints do not exist in Skiff",
        );
    }
    if flags.debug {
        warn(
            "debug",
            "deprecated; logging at debug level (use --log-level=debug)",
        );
    }
    if !flags.log_package_levels.is_empty() {
        warn("log-package-levels", "ignored: capnslog package levels do not exist in Skiff (RUST_LOG sets per-module levels)");
    }
    if flags.log_output.is_some() {
        warn("log-output", "deprecated; use --log-outputs");
    }
    if flags.unsafe_no_fsync {
        warn("unsafe-no-fsync", "ignored: Skiff always syncs its WAL");
    }
    if !(4..=31).contains(&flags.bcrypt_cost) {
        warn(
            "bcrypt-cost",
            &format!("invalid value {}; using the default 10", flags.bcrypt_cost),
        );
    }
    for flag in flags.ignored_given() {
        warnings.push(format!(
            "flag \"-{flag}\" is no longer supported - ignoring."
        ));
    }
    Ok(())
}

impl Config {
    /// Checks the flags as etcd does and fills in etcd's derived defaults.
    pub fn from_flags(flags: Flags) -> Result<Config, ConfigError> {
        let mut warnings = Vec::new();
        unsupported(&flags, &mut warnings)?;
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
        let cipher_suites = tls::parse_cipher_suites(&flags.cipher_suites)?;
        let client_tls = tls::client_tls(&flags, &cipher_suites);
        let peer_tls = tls::peer_tls(&flags, &cipher_suites);
        tls::check_client_urls(&client_tls, &listen_client_urls, &mut warnings)?;
        tls::check_peer_urls(&peer_tls, &listen_peer_urls, &mut warnings)?;
        let listen_metrics_urls = if flags.listen_metrics_urls.trim().is_empty() {
            Vec::new()
        } else {
            parse_urls("listen-metrics-urls", &flags.listen_metrics_urls)?
        };

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

        let logger = match flags.logger.as_str() {
            "capnslog" => Logger::Capnslog,
            "zap" => Logger::Zap,
            other => return Err(ConfigError::UnknownLogger(other.to_string())),
        };
        let outputs = flags
            .log_outputs
            .as_deref()
            .or(flags.log_output.as_deref())
            .unwrap_or("default");
        let log_outputs = parse_log_outputs(logger, outputs)?;
        let log_level = if flags.debug {
            LogLevel::Debug
        } else {
            flags.log_level
        };
        let auto_compaction = parse_auto_compaction(
            &flags.auto_compaction_mode,
            &flags.auto_compaction_retention,
        )?;
        let auth_kind = flags.auth_token.split(',').next().unwrap_or_default();
        let jwt = match auth_kind {
            "simple" => None,
            "jwt" => Some(
                crate::auth::jwt::JwtOptions::parse(&flags.auth_token)
                    .map_err(|e| ConfigError::BadJwtOptions(flags.auth_token.clone(), e))?,
            ),
            _ => return Err(ConfigError::BadAuthToken(flags.auth_token)),
        };

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
        let nonzero = |d: Duration| (!d.is_zero()).then_some(d);
        Ok(Config {
            name: flags.name,
            data_dir,
            wal_dir: flags.wal_dir.filter(|d| !d.as_os_str().is_empty()),
            listen_client_urls,
            advertise_client_urls,
            listen_peer_urls,
            initial_advertise_peer_urls,
            listen_metrics_urls,
            initial_cluster,
            initial_cluster_state: flags.initial_cluster_state,
            initial_cluster_token: flags.initial_cluster_token,
            heartbeat_interval: Duration::from_millis(flags.heartbeat_interval),
            election_timeout: Duration::from_millis(flags.election_timeout),
            snapshot_count,
            max_snapshots: flags.max_snapshots,
            max_wals: flags.max_wals,
            quota_backend_bytes,
            max_request_bytes: flags.max_request_bytes,
            max_txn_ops: flags.max_txn_ops,
            max_inflight_response_bytes: flags.max_inflight_response_bytes,
            watch_stream_bytes: flags.watch_stream_bytes.max(1),
            max_concurrent_streams: flags.max_concurrent_streams,
            grpc_keepalive_min_time: flags.grpc_keepalive_min_time,
            grpc_keepalive_interval: nonzero(flags.grpc_keepalive_interval),
            grpc_keepalive_timeout: nonzero(flags.grpc_keepalive_timeout),
            log_level,
            logger,
            log_outputs,
            pre_vote: flags.pre_vote,
            initial_election_tick_advance: flags.initial_election_tick_advance,
            strict_reconfig_check: flags.strict_reconfig_check,
            force_new_cluster: flags.force_new_cluster,
            enable_grpc_gateway: flags.enable_grpc_gateway,
            watch_progress_notify_interval: flags.experimental_watch_progress_notify_interval,
            lease_checkpoint: flags.experimental_enable_lease_checkpoint,
            lease_checkpoint_persist: flags.experimental_enable_lease_checkpoint_persist,
            cors: parse_cors(&flags.cors)?,
            host_whitelist: unique_list(&flags.host_whitelist),
            auto_compaction,
            initial_corrupt_check: flags.experimental_initial_corrupt_check,
            corrupt_check_time: nonzero(flags.experimental_corrupt_check_time),
            metrics_extensive: flags.metrics == "extensive",
            auth_token: flags.auth_token,
            jwt,
            bcrypt_cost: if (4..=31).contains(&flags.bcrypt_cost) {
                flags.bcrypt_cost
            } else {
                10
            },
            auth_token_ttl: Duration::from_secs(u64::from(flags.auth_token_ttl)),
            warning_apply_duration: flags.experimental_warning_apply_duration,
            compaction_batch_limit: flags.experimental_compaction_batch_limit,
            backend_batch_interval: flags.backend_batch_interval.and_then(nonzero),
            backend_batch_limit: u64::try_from(flags.backend_batch_limit)
                .ok()
                .filter(|&n| n > 0),
            client_tls,
            peer_tls,
            warnings,
        })
    }

    /// Whether an HTTP request's `Host` (without its port) may be served
    /// (`--host-whitelist`; etcd's check against DNS rebinding).
    pub fn host_allowed(&self, host: &str) -> bool {
        self.host_whitelist.is_empty() || self.host_whitelist.iter().any(|h| h == "*" || h == host)
    }

    /// The CORS origin to answer with for a request's `Origin` (`--cors`): `*` when
    /// any origin is allowed, the origin itself when listed, else none.
    pub fn cors_origin<'a>(&self, origin: Option<&'a str>) -> Option<&'a str> {
        if self.cors.is_empty() || self.cors.iter().any(|o| o == "*") {
            return Some("*");
        }
        origin.filter(|o| self.cors.iter().any(|c| c == o))
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
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let mut all = vec!["skiff"];
        all.extend_from_slice(args);
        let flags = Flags::try_parse_from(normalize_args(all)).map_err(|e| e.to_string())?;
        Config::from_flags(flags).map_err(|e| e.to_string())
    }

    #[test]
    fn backend_batch_flags_bound_the_durable_commits() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.backend_batch_interval, None);
        assert_eq!(c.backend_batch_limit, None);
        let c = parse(&[
            "--backend-batch-interval",
            "250ms",
            "--backend-batch-limit=500",
        ])
        .unwrap();
        assert_eq!(c.backend_batch_interval, Some(Duration::from_millis(250)));
        assert_eq!(c.backend_batch_limit, Some(500));
        // etcd's zero values mean "the default"; a negative limit is no bound.
        let c = parse(&["--backend-batch-interval=0s", "--backend-batch-limit=-1"]).unwrap();
        assert_eq!(c.backend_batch_interval, None);
        assert_eq!(c.backend_batch_limit, None);
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
    fn new_defaults_are_etcds_or_skiffs_stated_ones() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.max_snapshots, 5);
        assert_eq!(c.max_wals, 5);
        assert_eq!(c.wal_dir, None);
        assert!(c.listen_metrics_urls.is_empty());
        assert_eq!(c.grpc_keepalive_min_time, Duration::from_secs(5));
        assert_eq!(c.grpc_keepalive_interval, Some(Duration::from_secs(7200)));
        assert_eq!(c.grpc_keepalive_timeout, Some(Duration::from_secs(20)));
        assert_eq!(c.max_concurrent_streams, u32::MAX);
        assert!(c.enable_grpc_gateway);
        assert_eq!(c.watch_progress_notify_interval, Duration::from_secs(600));
        assert!(c.lease_checkpoint && c.lease_checkpoint_persist);
        assert_eq!(c.cors, vec!["*"]);
        assert_eq!(c.host_whitelist, vec!["*"]);
        assert_eq!(c.logger, Logger::Capnslog);
        assert_eq!(c.log_outputs, vec![LogOutput::Default]);
        assert_eq!(c.auto_compaction, None);
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn go_booleans_need_equals() {
        assert!(
            !parse(&["--enable-grpc-gateway=false"])
                .unwrap()
                .enable_grpc_gateway
        );
        assert!(
            !parse(&["--experimental-enable-lease-checkpoint=f"])
                .unwrap()
                .lease_checkpoint
        );
        // As in Go: a bare boolean is true and the next word is not its value.
        assert!(parse(&["--pre-vote", "false"])
            .unwrap_err()
            .contains("false"));
    }

    #[test]
    fn durations_and_lists() {
        let c = parse(&[
            "--experimental-watch-progress-notify-interval=1s",
            "--grpc-keepalive-interval=0",
            "--max-concurrent-streams=10",
            "--cors=http://a.example:80,*",
            "--host-whitelist=a.example,b.example,a.example",
            "--listen-metrics-urls=http://127.0.0.1:1,http://127.0.0.1:2",
            "--wal-dir=/w",
        ])
        .unwrap();
        assert_eq!(c.watch_progress_notify_interval, Duration::from_secs(1));
        assert_eq!(c.grpc_keepalive_interval, None);
        assert_eq!(c.max_concurrent_streams, 10);
        assert_eq!(c.cors, vec!["http://a.example:80", "*"]);
        assert_eq!(c.host_whitelist, vec!["a.example", "b.example"]);
        assert_eq!(c.listen_metrics_urls.len(), 2);
        assert_eq!(c.wal_dir, Some(PathBuf::from("/w")));
    }

    #[test]
    fn logging_flags() {
        let c = parse(&["--logger=zap", "--log-outputs=stdout,/tmp/x.log"]).unwrap();
        assert_eq!(c.logger, Logger::Zap);
        assert_eq!(
            c.log_outputs,
            vec![
                LogOutput::Stdout,
                LogOutput::File(PathBuf::from("/tmp/x.log"))
            ]
        );
        assert_eq!(
            parse(&["--log-outputs=/tmp/x.log"]).unwrap_err(),
            "unknown log-output \"/tmp/x.log\" (only supports \"default\", \"stderr\", \"stdout\")"
        );
        assert_eq!(
            parse(&["--logger=zap", "--log-outputs=default,stderr"]).unwrap_err(),
            "multi logoutput for \"default\" is not supported yet"
        );
        assert_eq!(
            parse(&["--logger=foo"]).unwrap_err(),
            "unknown logger option \"foo\""
        );
        let c = parse(&["--log-output=stdout"]).unwrap();
        assert_eq!(c.log_outputs, vec![LogOutput::Stdout]);
        assert_eq!(c.warnings.len(), 1);
        assert_eq!(parse(&["--debug"]).unwrap().log_level, LogLevel::Debug);
    }

    #[test]
    fn auto_compaction_as_etcd_reads_it() {
        let c = parse(&["--auto-compaction-retention=1"]).unwrap();
        assert_eq!(
            c.auto_compaction,
            Some(AutoCompaction::Periodic(Duration::from_secs(3600)))
        );
        let c = parse(&["--auto-compaction-retention=30m"]).unwrap();
        assert_eq!(
            c.auto_compaction,
            Some(AutoCompaction::Periodic(Duration::from_secs(1800)))
        );
        let c = parse(&[
            "--auto-compaction-mode=revision",
            "--auto-compaction-retention=1000",
        ])
        .unwrap();
        assert_eq!(c.auto_compaction, Some(AutoCompaction::Revision(1000)));
        assert_eq!(
            parse(&["--auto-compaction-retention=foo"]).unwrap_err(),
            "error parsing CompactionRetention: time: invalid duration \"foo\""
        );
        assert_eq!(
            parse(&["--auto-compaction-mode=foo"]).unwrap_err(),
            "unknown auto-compaction-mode \"foo\""
        );
    }

    #[test]
    fn unsupported_features_warn_or_refuse() {
        let c = parse(&[
            "--enable-v2",
            "--proxy=on",
            "--enable-pprof=true",
            "--cert-file=/c.pem",
            "-v",
        ])
        .unwrap();
        assert_eq!(c.warnings.len(), 5, "{:?}", c.warnings);
        assert!(c
            .warnings
            .iter()
            .any(|w| w == "flag \"-v\" is no longer supported - ignoring."));
        assert!(parse(&[
            "--listen-client-urls=https://127.0.0.1:1",
            "--advertise-client-urls=https://127.0.0.1:1"
        ])
        .unwrap_err()
        .contains("must be provided for client url https://127.0.0.1:1 with HTTPS scheme"));
        let c = parse(&[
            "--listen-client-urls=https://127.0.0.1:1",
            "--advertise-client-urls=https://127.0.0.1:1",
            "--cert-file=/c.pem",
            "--key-file=/k.pem",
            "--client-cert-auth",
        ])
        .unwrap();
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert!(c.client_tls.client_cert_auth);
        assert!(c.listen_client_urls[0].is_tls());
        assert!(parse(&["--discovery=http://d.example:80/x"])
            .unwrap_err()
            .contains("not supported yet"));
        assert!(parse(&["--force-new-cluster"]).unwrap().force_new_cluster);
    }

    #[test]
    fn value_errors_read_as_etcds() {
        let msg = |args: &[&str]| {
            let mut all = vec!["skiff"];
            all.extend_from_slice(args);
            values::flag_error_message(&Flags::try_parse_from(all).unwrap_err())
        };
        assert_eq!(
            msg(&["--grpc-keepalive-min-time=x"]),
            "invalid value \"x\" for flag -grpc-keepalive-min-time: parse error"
        );
        assert_eq!(
            msg(&["--max-wals=-1"]),
            "invalid value \"-1\" for flag -max-wals: parse error"
        );
        assert_eq!(
            msg(&["--enable-v2=x"]),
            "invalid boolean value \"x\" for -enable-v2: parse error"
        );
        assert_eq!(
            msg(&["--max-concurrent-streams=-1"]),
            "invalid value \"-1\" for flag -max-concurrent-streams: strconv.ParseUint: parsing \"-1\": invalid syntax"
        );
        assert_eq!(
            msg(&["--proxy=x"]),
            "invalid value \"x\" for flag -proxy: invalid value"
        );
    }

    #[test]
    fn cors_and_host_checks() {
        let c = parse(&["--cors=http://a.example:80", "--host-whitelist=h.example"]).unwrap();
        assert_eq!(
            c.cors_origin(Some("http://a.example:80")),
            Some("http://a.example:80")
        );
        assert_eq!(c.cors_origin(Some("http://b.example:80")), None);
        assert!(c.host_allowed("h.example"));
        assert!(!c.host_allowed("evil.example"));
        let c = parse(&[]).unwrap();
        assert_eq!(c.cors_origin(None), Some("*"));
        assert!(c.host_allowed("anything"));
    }
}
