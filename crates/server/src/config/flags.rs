//! The flags themselves: every flag etcd 3.4.23 accepts, with its name, its `ETCD_*`
//! environment variable, its default and its value syntax (Go's, see
//! [`super::values`]). What each one means to Skiff is decided in [`super::Config`];
//! `docs/flags.md` lists the status of each.
//!
//! Guarantees: a name etcd accepts is accepted here (including the ones etcd accepts
//! without listing them in `--help`: `--enable-grpc-gateway`, `--log-output`,
//! `--experimental-enable-lease-checkpoint-persist`, `--unsafe-no-fsync`, and the
//! long-gone v0.4 flags etcd ignores with a warning); booleans take Go's forms and
//! need `=` for a value (`--pre-vote=false`), as Go's flag package does.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Parser, ValueEnum};

use super::values::{go_bool, go_duration, go_i64, go_max_streams, go_u32, go_u64};
use super::{
    DEFAULT_MAX_INFLIGHT_RESPONSE_BYTES, DEFAULT_MAX_REQUEST_BYTES, DEFAULT_SNAPSHOT_COUNT,
};

/// Flags etcd 3.4 still accepts from etcd 0.4 and ignores with a warning.
pub const IGNORED_FLAGS: &[&str] = &[
    "cluster-active-size",
    "cluster-remove-delay",
    "cluster-sync-interval",
    "config",
    "force",
    "max-result-buffer",
    "max-retry-attempts",
    "peer-heartbeat-interval",
    "peer-election-timeout",
    "retry-interval",
    "snapshot",
    "v",
    "vv",
];

/// The flags, as parsed. Names, environment variables and defaults are etcd's.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "skiff",
    version,
    about = "Skiff: an etcd-compatible, Raft-replicated key-value store (one member)",
    after_help = "See docs/flags.md for what each flag does in Skiff."
)]
pub struct Flags {
    /// Path to the server configuration file (etcd's YAML format). When given, other
    /// command line flags and environment variables are ignored.
    #[arg(long, env = "ETCD_CONFIG_FILE", help_heading = "Member")]
    pub config_file: Option<PathBuf>,

    /// Human-readable name for this member.
    #[arg(
        long,
        env = "ETCD_NAME",
        help_heading = "Member",
        default_value = "default"
    )]
    pub name: String,

    /// Path to the data directory [default: <name>.skiff].
    #[arg(long, env = "ETCD_DATA_DIR", help_heading = "Member")]
    pub data_dir: Option<PathBuf>,

    /// Path to the dedicated wal directory [default: <data-dir>/member/wal].
    #[arg(long, env = "ETCD_WAL_DIR", help_heading = "Member")]
    pub wal_dir: Option<PathBuf>,

    /// Number of committed transactions to trigger a snapshot to disk.
    #[arg(long, env = "ETCD_SNAPSHOT_COUNT", help_heading = "Member", value_parser = go_u64, default_value_t = DEFAULT_SNAPSHOT_COUNT)]
    pub snapshot_count: u64,

    /// Time (in milliseconds) of a heartbeat interval.
    #[arg(long, env = "ETCD_HEARTBEAT_INTERVAL", help_heading = "Member", value_parser = go_u64, default_value_t = 100)]
    pub heartbeat_interval: u64,

    /// Time (in milliseconds) for an election to timeout.
    #[arg(long, env = "ETCD_ELECTION_TIMEOUT", help_heading = "Member", value_parser = go_u64, default_value_t = 1000)]
    pub election_timeout: u64,

    /// Whether to fast-forward initial election ticks on boot for faster election.
    #[arg(long, env = "ETCD_INITIAL_ELECTION_TICK_ADVANCE", help_heading = "Member", default_value = "true", value_parser = go_bool, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set)]
    pub initial_election_tick_advance: bool,

    /// List of URLs to listen on for peer traffic [default: http://localhost:2380].
    #[arg(long, env = "ETCD_LISTEN_PEER_URLS", help_heading = "Member")]
    pub listen_peer_urls: Option<String>,

    /// List of URLs to listen on for client traffic [default: http://localhost:2379].
    #[arg(long, env = "ETCD_LISTEN_CLIENT_URLS", help_heading = "Member")]
    pub listen_client_urls: Option<String>,

    /// Maximum number of snapshot files to retain (0 is unlimited).
    #[arg(long, env = "ETCD_MAX_SNAPSHOTS", help_heading = "Member", value_parser = go_u32, default_value_t = 5)]
    pub max_snapshots: u32,

    /// Maximum number of wal files to retain (0 is unlimited).
    #[arg(long, env = "ETCD_MAX_WALS", help_heading = "Member", value_parser = go_u32, default_value_t = 5)]
    pub max_wals: u32,

    /// Raise alarms when backend size exceeds the given quota (0 defaults to 2 GiB, a negative value disables the quota).
    #[arg(long, env = "ETCD_QUOTA_BACKEND_BYTES", help_heading = "Member", value_parser = go_i64, default_value_t = 0, allow_negative_numbers = true)]
    pub quota_backend_bytes: i64,

    /// BackendBatchInterval is the maximum time before commit the backend transaction.
    #[arg(long, env = "ETCD_BACKEND_BATCH_INTERVAL", help_heading = "Member", value_parser = go_duration)]
    pub backend_batch_interval: Option<Duration>,

    /// BackendBatchLimit is the maximum operations before commit the backend transaction.
    #[arg(long, env = "ETCD_BACKEND_BATCH_LIMIT", help_heading = "Member", value_parser = go_i64, default_value_t = 0, allow_negative_numbers = true)]
    pub backend_batch_limit: i64,

    /// Maximum number of operations permitted in a transaction.
    #[arg(long, env = "ETCD_MAX_TXN_OPS", help_heading = "Member", value_parser = go_u32, default_value_t = 128)]
    pub max_txn_ops: u32,

    /// Maximum client request size in bytes the server will accept.
    #[arg(long, env = "ETCD_MAX_REQUEST_BYTES", help_heading = "Member", value_parser = go_u32, default_value_t = DEFAULT_MAX_REQUEST_BYTES)]
    pub max_request_bytes: u32,

    /// Skiff: bytes of range results all requests may hold at once (0: unlimited); a range larger than this answers ResourceExhausted, others wait for room.
    #[arg(long, env = "SKIFF_MAX_INFLIGHT_RESPONSE_BYTES", help_heading = "Skiff", value_parser = go_u64, default_value_t = DEFAULT_MAX_INFLIGHT_RESPONSE_BYTES)]
    pub max_inflight_response_bytes: u64,

    /// Skiff: bytes of watch responses queued for one watch stream at or above which its watchers are caught up from the store later.
    #[arg(long, env = "SKIFF_WATCH_STREAM_BYTES", help_heading = "Skiff", value_parser = go_u64, default_value_t = skiff_storage::watch::DEFAULT_STREAM_BYTES)]
    pub watch_stream_bytes: u64,

    /// Maximum concurrent streams that each client can open at a time.
    #[arg(long, env = "ETCD_MAX_CONCURRENT_STREAMS", help_heading = "Member", value_parser = go_max_streams, default_value_t = u32::MAX)]
    pub max_concurrent_streams: u32,

    /// Minimum duration interval that a client should wait before pinging server.
    #[arg(long, env = "ETCD_GRPC_KEEPALIVE_MIN_TIME", help_heading = "Member", value_parser = go_duration, default_value = "5s")]
    pub grpc_keepalive_min_time: Duration,

    /// Frequency duration of server-to-client ping to check if a connection is alive (0 to disable).
    #[arg(long, env = "ETCD_GRPC_KEEPALIVE_INTERVAL", help_heading = "Member", value_parser = go_duration, default_value = "2h")]
    pub grpc_keepalive_interval: Duration,

    /// Additional duration of wait before closing a non-responsive connection (0 to disable).
    #[arg(long, env = "ETCD_GRPC_KEEPALIVE_TIMEOUT", help_heading = "Member", value_parser = go_duration, default_value = "20s")]
    pub grpc_keepalive_timeout: Duration,

    /// List of this member's peer URLs to advertise to the rest of the cluster [default: http://localhost:2380].
    #[arg(
        long,
        env = "ETCD_INITIAL_ADVERTISE_PEER_URLS",
        help_heading = "Clustering"
    )]
    pub initial_advertise_peer_urls: Option<String>,

    /// Initial cluster configuration for bootstrapping, `name=url,...` [default: <name>=<initial-advertise-peer-urls>].
    #[arg(long, env = "ETCD_INITIAL_CLUSTER", help_heading = "Clustering")]
    pub initial_cluster: Option<String>,

    /// Initial cluster state ('new' or 'existing').
    #[arg(long, env = "ETCD_INITIAL_CLUSTER_STATE", help_heading = "Clustering", value_enum, default_value_t = ClusterState::New)]
    pub initial_cluster_state: ClusterState,

    /// Initial cluster token for the etcd cluster during bootstrap.
    #[arg(
        long,
        env = "ETCD_INITIAL_CLUSTER_TOKEN",
        help_heading = "Clustering",
        default_value = "etcd-cluster"
    )]
    pub initial_cluster_token: String,

    /// List of this member's client URLs to advertise to the public [default: http://localhost:2379].
    #[arg(long, env = "ETCD_ADVERTISE_CLIENT_URLS", help_heading = "Clustering")]
    pub advertise_client_urls: Option<String>,

    /// Discovery URL used to bootstrap the cluster (not supported yet: refused when set).
    #[arg(
        long,
        env = "ETCD_DISCOVERY",
        help_heading = "Clustering",
        default_value = ""
    )]
    pub discovery: String,

    /// Expected behavior ('exit' or 'proxy') when discovery services fails.
    #[arg(long, env = "ETCD_DISCOVERY_FALLBACK", help_heading = "Clustering", value_enum, default_value_t = DiscoveryFallback::Proxy)]
    pub discovery_fallback: DiscoveryFallback,

    /// HTTP proxy to use for traffic to discovery service.
    #[arg(
        long,
        env = "ETCD_DISCOVERY_PROXY",
        help_heading = "Clustering",
        default_value = ""
    )]
    pub discovery_proxy: String,

    /// DNS srv domain used to bootstrap the cluster (not supported yet: refused when set).
    #[arg(
        long,
        env = "ETCD_DISCOVERY_SRV",
        help_heading = "Clustering",
        default_value = ""
    )]
    pub discovery_srv: String,

    /// Suffix to the dns srv name queried when bootstrapping.
    #[arg(
        long,
        env = "ETCD_DISCOVERY_SRV_NAME",
        help_heading = "Clustering",
        default_value = ""
    )]
    pub discovery_srv_name: String,

    /// Reject reconfiguration requests that would cause quorum loss.
    #[arg(long, env = "ETCD_STRICT_RECONFIG_CHECK", help_heading = "Clustering", default_value = "true", value_parser = go_bool, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set)]
    pub strict_reconfig_check: bool,

    /// Enable to run an additional Raft election phase (Skiff's default is on; etcd 3.4's was off).
    #[arg(long, env = "ETCD_PRE_VOTE", help_heading = "Clustering", default_value = "true", value_parser = go_bool, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set)]
    pub pre_vote: bool,

    /// Auto compaction retention length. 0 means disable auto compaction.
    #[arg(
        long,
        env = "ETCD_AUTO_COMPACTION_RETENTION",
        help_heading = "Clustering",
        default_value = "0"
    )]
    pub auto_compaction_retention: String,

    /// Interpret 'auto-compaction-retention' one of: periodic|revision.
    #[arg(
        long,
        env = "ETCD_AUTO_COMPACTION_MODE",
        help_heading = "Clustering",
        default_value = "periodic"
    )]
    pub auto_compaction_mode: String,

    /// Accept etcd V2 client requests (not served by Skiff: a warning).
    #[arg(long, env = "ETCD_ENABLE_V2", help_heading = "Clustering", default_value = "false", value_parser = go_bool, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set)]
    pub enable_v2: bool,

    /// Path to the client server TLS cert file.
    #[arg(
        long,
        env = "ETCD_CERT_FILE",
        help_heading = "Security",
        default_value = ""
    )]
    pub cert_file: String,

    /// Path to the client server TLS key file.
    #[arg(
        long,
        env = "ETCD_KEY_FILE",
        help_heading = "Security",
        default_value = ""
    )]
    pub key_file: String,

    /// Enable client cert authentication.
    #[arg(long, env = "ETCD_CLIENT_CERT_AUTH", help_heading = "Security", default_value = "false", value_parser = go_bool, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set)]
    pub client_cert_auth: bool,

    /// Path to the client certificate revocation list file.
    #[arg(
        long,
        env = "ETCD_CLIENT_CRL_FILE",
        help_heading = "Security",
        default_value = ""
    )]
    pub client_crl_file: String,

    /// Allowed TLS hostname for client cert authentication.
    #[arg(
        long,
        env = "ETCD_CLIENT_CERT_ALLOWED_HOSTNAME",
        help_heading = "Security",
        default_value = ""
    )]
    pub client_cert_allowed_hostname: String,

    /// Path to the client server TLS trusted CA cert file.
    #[arg(
        long,
        env = "ETCD_TRUSTED_CA_FILE",
        help_heading = "Security",
        default_value = ""
    )]
    pub trusted_ca_file: String,

    /// Client TLS using generated certificates.
    #[arg(long, env = "ETCD_AUTO_TLS", help_heading = "Security", default_value = "false", value_parser = go_bool, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set)]
    pub auto_tls: bool,

    /// Path to the peer server TLS cert file.
    #[arg(
        long,
        env = "ETCD_PEER_CERT_FILE",
        help_heading = "Security",
        default_value = ""
    )]
    pub peer_cert_file: String,

    /// Path to the peer server TLS key file.
    #[arg(
        long,
        env = "ETCD_PEER_KEY_FILE",
        help_heading = "Security",
        default_value = ""
    )]
    pub peer_key_file: String,

    /// Enable peer client cert authentication.
    #[arg(long, env = "ETCD_PEER_CLIENT_CERT_AUTH", help_heading = "Security", default_value = "false", value_parser = go_bool, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set)]
    pub peer_client_cert_auth: bool,

    /// Path to the peer server TLS trusted CA file.
    #[arg(
        long,
        env = "ETCD_PEER_TRUSTED_CA_FILE",
        help_heading = "Security",
        default_value = ""
    )]
    pub peer_trusted_ca_file: String,

    /// Required CN for client certs connecting to the peer endpoint.
    #[arg(
        long,
        env = "ETCD_PEER_CERT_ALLOWED_CN",
        help_heading = "Security",
        default_value = ""
    )]
    pub peer_cert_allowed_cn: String,

    /// Allowed TLS hostname for inter peer authentication.
    #[arg(
        long,
        env = "ETCD_PEER_CERT_ALLOWED_HOSTNAME",
        help_heading = "Security",
        default_value = ""
    )]
    pub peer_cert_allowed_hostname: String,

    /// Peer TLS using self-generated certificates if --peer-key-file and --peer-cert-file are not provided.
    #[arg(long, env = "ETCD_PEER_AUTO_TLS", help_heading = "Security", default_value = "false", value_parser = go_bool, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set)]
    pub peer_auto_tls: bool,

    /// Path to the peer certificate revocation list file.
    #[arg(
        long,
        env = "ETCD_PEER_CRL_FILE",
        help_heading = "Security",
        default_value = ""
    )]
    pub peer_crl_file: String,

    /// Comma-separated list of supported TLS cipher suites between client/server and peers.
    #[arg(
        long,
        env = "ETCD_CIPHER_SUITES",
        help_heading = "Security",
        default_value = ""
    )]
    pub cipher_suites: String,

    /// Comma-separated whitelist of origins for CORS, or cross-origin resource sharing, (empty or * means allow all).
    #[arg(
        long,
        env = "ETCD_CORS",
        help_heading = "Security",
        default_value = "*"
    )]
    pub cors: String,

    /// Acceptable hostnames from HTTP client requests, if server is not secure (empty or * means allow all).
    #[arg(
        long,
        env = "ETCD_HOST_WHITELIST",
        help_heading = "Security",
        default_value = "*"
    )]
    pub host_whitelist: String,

    /// Skip verification of SAN field in client certificate for peer connections.
    #[arg(long, env = "ETCD_EXPERIMENTAL_PEER_SKIP_CLIENT_SAN_VERIFICATION", help_heading = "Security", default_value = "false", value_parser = go_bool, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set)]
    pub experimental_peer_skip_client_san_verification: bool,

    /// Specify a v3 authentication token type and its options ('simple' or 'jwt').
    #[arg(
        long,
        env = "ETCD_AUTH_TOKEN",
        help_heading = "Auth",
        default_value = "simple"
    )]
    pub auth_token: String,

    /// Specify the cost / strength of the bcrypt algorithm for hashing auth passwords. Valid values are between 4 and 31.
    #[arg(long, env = "ETCD_BCRYPT_COST", help_heading = "Auth", value_parser = go_u32, default_value_t = 10)]
    pub bcrypt_cost: u32,

    /// Time (in seconds) of the auth-token-ttl.
    #[arg(long, env = "ETCD_AUTH_TOKEN_TTL", help_heading = "Auth", value_parser = go_u32, default_value_t = 300)]
    pub auth_token_ttl: u32,

    /// Enable runtime profiling data via HTTP server (not served by Skiff: a warning).
    #[arg(long, env = "ETCD_ENABLE_PPROF", help_heading = "Monitoring", default_value = "false", value_parser = go_bool, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set)]
    pub enable_pprof: bool,

    /// Set level of detail for exported metrics, specify 'extensive' to include histogram metrics.
    #[arg(
        long,
        env = "ETCD_METRICS",
        help_heading = "Monitoring",
        default_value = "basic"
    )]
    pub metrics: String,

    /// List of URLs to listen on for the metrics and health endpoints.
    #[arg(
        long,
        env = "ETCD_LISTEN_METRICS_URLS",
        help_heading = "Monitoring",
        default_value = ""
    )]
    pub listen_metrics_urls: String,

    /// Specify 'zap' for structured (JSON) logging or 'capnslog' (text).
    #[arg(
        long,
        env = "ETCD_LOGGER",
        help_heading = "Logging",
        default_value = "capnslog"
    )]
    pub logger: String,

    /// Specify 'stdout' or 'stderr', or a list of comma separated output targets (with --logger=zap also file paths) [default: default].
    #[arg(long, env = "ETCD_LOG_OUTPUTS", help_heading = "Logging")]
    pub log_outputs: Option<String>,

    /// Deprecated alias of --log-outputs.
    #[arg(long, env = "ETCD_LOG_OUTPUT", help_heading = "Logging")]
    pub log_output: Option<String>,

    /// Configures log level. Only supports debug, info, warn, error, panic, or fatal.
    #[arg(long, env = "ETCD_LOG_LEVEL", help_heading = "Logging", value_enum, default_value_t = LogLevel::Info)]
    pub log_level: LogLevel,

    /// Enable debug-level logging (deprecated: use '--log-level=debug').
    #[arg(long, env = "ETCD_DEBUG", help_heading = "Logging", default_value = "false", value_parser = go_bool, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set)]
    pub debug: bool,

    /// Per-package log levels of capnslog (not supported by Skiff: a warning).
    #[arg(
        long,
        env = "ETCD_LOG_PACKAGE_LEVELS",
        help_heading = "Logging",
        default_value = ""
    )]
    pub log_package_levels: String,

    /// Proxy mode setting ('off', 'readonly' or 'on'); the v2 proxy is not built: a warning.
    #[arg(long, env = "ETCD_PROXY", help_heading = "Proxy", value_enum, default_value_t = ProxyMode::Off)]
    pub proxy: ProxyMode,

    /// Time (in milliseconds) an endpoint will be held in a failed state.
    #[arg(long, env = "ETCD_PROXY_FAILURE_WAIT", help_heading = "Proxy", value_parser = go_u32, default_value_t = 5000)]
    pub proxy_failure_wait: u32,

    /// Time (in milliseconds) of the endpoints refresh interval.
    #[arg(long, env = "ETCD_PROXY_REFRESH_INTERVAL", help_heading = "Proxy", value_parser = go_u32, default_value_t = 30000)]
    pub proxy_refresh_interval: u32,

    /// Time (in milliseconds) for a dial to timeout.
    #[arg(long, env = "ETCD_PROXY_DIAL_TIMEOUT", help_heading = "Proxy", value_parser = go_u32, default_value_t = 1000)]
    pub proxy_dial_timeout: u32,

    /// Time (in milliseconds) for a write to timeout.
    #[arg(long, env = "ETCD_PROXY_WRITE_TIMEOUT", help_heading = "Proxy", value_parser = go_u32, default_value_t = 5000)]
    pub proxy_write_timeout: u32,

    /// Time (in milliseconds) for a read to timeout.
    #[arg(long, env = "ETCD_PROXY_READ_TIMEOUT", help_heading = "Proxy", value_parser = go_u32, default_value_t = 0)]
    pub proxy_read_timeout: u32,

    /// Enable to check data corruption before serving any client/peer traffic.
    #[arg(long, env = "ETCD_EXPERIMENTAL_INITIAL_CORRUPT_CHECK", help_heading = "Experimental", default_value = "false", value_parser = go_bool, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set)]
    pub experimental_initial_corrupt_check: bool,

    /// Duration of time between cluster corruption check passes.
    #[arg(long, env = "ETCD_EXPERIMENTAL_CORRUPT_CHECK_TIME", help_heading = "Experimental", value_parser = go_duration, default_value = "0s")]
    pub experimental_corrupt_check_time: Duration,

    /// Serve v2 requests through the v3 backend under a given prefix.
    #[arg(
        long,
        env = "ETCD_EXPERIMENTAL_ENABLE_V2V3",
        help_heading = "Experimental",
        default_value = ""
    )]
    pub experimental_enable_v2v3: String,

    /// The type of freelist that boltdb backend uses (array and map).
    #[arg(
        long,
        env = "ETCD_EXPERIMENTAL_BACKEND_BBOLT_FREELIST_TYPE",
        help_heading = "Experimental",
        default_value = "array"
    )]
    pub experimental_backend_bbolt_freelist_type: String,

    /// Persist lease remaining TTLs so a new leader resumes them (Skiff's default is on; etcd 3.4's was off).
    #[arg(long, env = "ETCD_EXPERIMENTAL_ENABLE_LEASE_CHECKPOINT", help_heading = "Experimental", default_value = "true", value_parser = go_bool, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set)]
    pub experimental_enable_lease_checkpoint: bool,

    /// Keep checkpointed remaining TTLs across restarts (Skiff's default is on).
    #[arg(long, env = "ETCD_EXPERIMENTAL_ENABLE_LEASE_CHECKPOINT_PERSIST", help_heading = "Experimental", default_value = "true", value_parser = go_bool, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set)]
    pub experimental_enable_lease_checkpoint_persist: bool,

    /// The maximum revisions deleted in each compaction batch.
    #[arg(long, env = "ETCD_EXPERIMENTAL_COMPACTION_BATCH_LIMIT", help_heading = "Experimental", value_parser = go_i64, default_value_t = 1000, allow_negative_numbers = true)]
    pub experimental_compaction_batch_limit: i64,

    /// Duration of periodical watch progress notification.
    #[arg(long, env = "ETCD_EXPERIMENTAL_WATCH_PROGRESS_NOTIFY_INTERVAL", help_heading = "Experimental", value_parser = go_duration, default_value = "10m")]
    pub experimental_watch_progress_notify_interval: Duration,

    /// Warning is generated if requests take more than this duration.
    #[arg(long, env = "ETCD_EXPERIMENTAL_WARNING_APPLY_DURATION", help_heading = "Experimental", value_parser = go_duration, default_value = "100ms")]
    pub experimental_warning_apply_duration: Duration,

    /// Enable the gRPC gateway (JSON over HTTP) on the client port.
    #[arg(long, env = "ETCD_ENABLE_GRPC_GATEWAY", help_heading = "Gateway", default_value = "true", value_parser = go_bool, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set)]
    pub enable_grpc_gateway: bool,

    /// Force to create a new one-member cluster (not supported yet: refused when true).
    #[arg(long, env = "ETCD_FORCE_NEW_CLUSTER", help_heading = "Unsafe", default_value = "false", value_parser = go_bool, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set)]
    pub force_new_cluster: bool,

    /// Disables fsync, unsafe, will cause data loss (Skiff always syncs: a warning).
    #[arg(long, env = "ETCD_UNSAFE_NO_FSYNC", help_heading = "Unsafe", default_value = "false", value_parser = go_bool, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set)]
    pub unsafe_no_fsync: bool,

    /// etcd 0.4's `--cluster-active-size`: ignored with a warning, as etcd does.
    #[arg(long = "cluster-active-size", hide = true, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub ignored_cluster_active_size: Option<String>,

    /// etcd 0.4's `--cluster-remove-delay`: ignored with a warning, as etcd does.
    #[arg(long = "cluster-remove-delay", hide = true, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub ignored_cluster_remove_delay: Option<String>,

    /// etcd 0.4's `--cluster-sync-interval`: ignored with a warning, as etcd does.
    #[arg(long = "cluster-sync-interval", hide = true, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub ignored_cluster_sync_interval: Option<String>,

    /// etcd 0.4's `--config`: ignored with a warning, as etcd does.
    #[arg(long = "config", hide = true, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub ignored_config: Option<String>,

    /// etcd 0.4's `--force`: ignored with a warning, as etcd does.
    #[arg(long = "force", hide = true, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub ignored_force: Option<String>,

    /// etcd 0.4's `--max-result-buffer`: ignored with a warning, as etcd does.
    #[arg(long = "max-result-buffer", hide = true, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub ignored_max_result_buffer: Option<String>,

    /// etcd 0.4's `--max-retry-attempts`: ignored with a warning, as etcd does.
    #[arg(long = "max-retry-attempts", hide = true, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub ignored_max_retry_attempts: Option<String>,

    /// etcd 0.4's `--peer-heartbeat-interval`: ignored with a warning, as etcd does.
    #[arg(long = "peer-heartbeat-interval", hide = true, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub ignored_peer_heartbeat_interval: Option<String>,

    /// etcd 0.4's `--peer-election-timeout`: ignored with a warning, as etcd does.
    #[arg(long = "peer-election-timeout", hide = true, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub ignored_peer_election_timeout: Option<String>,

    /// etcd 0.4's `--retry-interval`: ignored with a warning, as etcd does.
    #[arg(long = "retry-interval", hide = true, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub ignored_retry_interval: Option<String>,

    /// etcd 0.4's `--snapshot`: ignored with a warning, as etcd does.
    #[arg(long = "snapshot", hide = true, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub ignored_snapshot: Option<String>,

    /// etcd 0.4's `--v`: ignored with a warning, as etcd does.
    #[arg(long = "v", hide = true, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub ignored_v: Option<String>,

    /// etcd 0.4's `--vv`: ignored with a warning, as etcd does.
    #[arg(long = "vv", hide = true, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub ignored_vv: Option<String>,
}

impl Flags {
    /// The etcd 0.4 flags that were given (each is ignored with a warning).
    pub fn ignored_given(&self) -> Vec<&'static str> {
        let given = [
            (
                "cluster-active-size",
                self.ignored_cluster_active_size.is_some(),
            ),
            (
                "cluster-remove-delay",
                self.ignored_cluster_remove_delay.is_some(),
            ),
            (
                "cluster-sync-interval",
                self.ignored_cluster_sync_interval.is_some(),
            ),
            ("config", self.ignored_config.is_some()),
            ("force", self.ignored_force.is_some()),
            (
                "max-result-buffer",
                self.ignored_max_result_buffer.is_some(),
            ),
            (
                "max-retry-attempts",
                self.ignored_max_retry_attempts.is_some(),
            ),
            (
                "peer-heartbeat-interval",
                self.ignored_peer_heartbeat_interval.is_some(),
            ),
            (
                "peer-election-timeout",
                self.ignored_peer_election_timeout.is_some(),
            ),
            ("retry-interval", self.ignored_retry_interval.is_some()),
            ("snapshot", self.ignored_snapshot.is_some()),
            ("v", self.ignored_v.is_some()),
            ("vv", self.ignored_vv.is_some()),
        ];
        given
            .into_iter()
            .filter(|(_, set)| *set)
            .map(|(name, _)| name)
            .collect()
    }
}

/// `--initial-cluster-state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ClusterState {
    /// Bootstrap a new cluster from `--initial-cluster`.
    New,
    /// Join a cluster that already runs.
    Existing,
}

/// `--discovery-fallback`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DiscoveryFallback {
    Exit,
    Proxy,
}

/// `--proxy` (etcd's v2 proxy mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProxyMode {
    Off,
    Readonly,
    On,
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
