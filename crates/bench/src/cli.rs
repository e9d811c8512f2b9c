//! Command-line interface: global flags and subcommands, named as in etcd's `benchmark`
//! tool so that the same command line can be replayed against either tool.
//!
//! Parsing is pure (no I/O) and [`Cli::validate`] rejects out-of-range values with a clear
//! message before any connection is made.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "skiff-bench",
    version,
    about = "Load generator for any etcd v3 endpoint (Skiff or etcd)"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOpts,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags shared by every subcommand.
#[derive(Args, Debug, Clone)]
pub struct GlobalOpts {
    /// Client endpoints, comma-separated: host:port or http://host:port.
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        default_value = "127.0.0.1:2379"
    )]
    pub endpoints: Vec<String>,
    /// Number of gRPC connections; connection i goes to endpoint i mod len(endpoints).
    #[arg(long, global = true, default_value_t = 1)]
    pub conns: usize,
    /// Number of concurrent clients; client i uses connection i mod conns.
    #[arg(long, global = true, default_value_t = 1)]
    pub clients: usize,
    /// Send every request to the current leader only (found with Status at start).
    #[arg(long, global = true)]
    pub target_leader: bool,
    /// Total number of requests (watch-latency uses --put-total, fdatasync --count).
    #[arg(long, global = true, default_value_t = 10000)]
    pub total: u64,
    /// Maximum requests per second over all clients, 0 = unlimited (watch-latency paces
    /// its puts with --put-rate instead).
    #[arg(long, global = true, default_value_t = 0)]
    pub rate: u64,
    /// Print times with full (nanosecond) precision instead of four decimals.
    #[arg(long, global = true)]
    pub precise: bool,
    /// Output format.
    #[arg(short = 'w', long = "write-out", global = true, value_enum, default_value_t = OutputFormat::Text)]
    pub write_out: OutputFormat,
    /// Exit non-zero when failed requests / all requests exceeds this fraction.
    #[arg(long, global = true, default_value_t = 0.0)]
    pub max_error_rate: f64,
    /// Per-request timeout in seconds (a timed-out request counts as DeadlineExceeded).
    #[arg(long, global = true, default_value_t = 10.0)]
    pub request_timeout: f64,
    /// How many of the slowest requests the JSON report lists, each with its start
    /// (`slowest_requests`: to place a run's tail against what the server was doing).
    #[arg(long, global = true, default_value_t = crate::stats::DEFAULT_SLOWEST_LISTED)]
    pub slowest_listed: usize,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    /// Linearizable (goes through the leader's read index).
    #[value(name = "l")]
    Linearizable,
    /// Serializable (answered from the local member).
    #[value(name = "s")]
    Serializable,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Write keys.
    Put(PutOpts),
    /// Read a key or range [KEY, END).
    Range(RangeOpts),
    /// Transactions of --txn-ops puts each.
    TxnPut(TxnPutOpts),
    /// Latency from a put to its event arriving on every watcher.
    WatchLatency(WatchOpts),
    /// Lease keep-alive round trips (one lease and one keep-alive stream per client, or
    /// the leases of --ids-file shared out over the clients' streams).
    LeaseKeepalive(LeaseOpts),
    /// Grant --total leases and write their IDs to --ids-file (for lease-keepalive).
    LeaseGrant(LeaseGrantOpts),
    /// Mixed reads and writes over a key space.
    Mixed(MixedOpts),
    /// fdatasync latency of a directory's filesystem (what a WAL append waits for).
    Fdatasync(FdatasyncOpts),
    /// Draw requests/s against clients from a CSV (system,workload,clients,requests_per_s)
    /// as a PNG line chart; connects to nothing.
    Plot(PlotOpts),
}

/// Key and value shape, shared by the writing subcommands.
#[derive(Args, Debug, Clone)]
pub struct KeyOpts {
    /// Key size in bytes.
    #[arg(long, default_value_t = 8)]
    pub key_size: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 8)]
    pub val_size: usize,
    /// Number of distinct keys written.
    #[arg(long, default_value_t = 1)]
    pub key_space_size: u64,
    /// Walk the key space in order instead of picking keys at random.
    #[arg(long)]
    pub sequential_keys: bool,
    /// With --sequential-keys, the first key number written (e.g. to add keys
    /// [start, key-space-size) after loading [0, start)).
    #[arg(long, default_value_t = 0)]
    pub key_start: u64,
}

#[derive(Args, Debug, Clone)]
pub struct PutOpts {
    #[command(flatten)]
    pub keys: KeyOpts,
}

#[derive(Args, Debug, Clone)]
pub struct RangeOpts {
    /// Key to read (or start of the range).
    pub key: String,
    /// End of the range (exclusive); omitted = the single key.
    pub end: Option<String>,
    /// l = linearizable, s = serializable.
    #[arg(long, value_enum, default_value_t = Consistency::Linearizable)]
    pub consistency: Consistency,
}

#[derive(Args, Debug, Clone)]
pub struct TxnPutOpts {
    #[command(flatten)]
    pub keys: KeyOpts,
    /// Puts per transaction (distinct keys).
    #[arg(long, default_value_t = 1)]
    pub txn_ops: u64,
}

#[derive(Args, Debug, Clone)]
pub struct WatchOpts {
    /// Number of puts to the watched key.
    #[arg(long, default_value_t = 10000)]
    pub put_total: u64,
    /// Puts per second.
    #[arg(long, default_value_t = 100)]
    pub put_rate: u64,
    /// Number of watch streams (spread over the connections).
    #[arg(long, default_value_t = 10)]
    pub streams: usize,
    /// Watchers on each stream.
    #[arg(long, default_value_t = 10)]
    pub watchers_per_stream: usize,
    /// Distinct keys watched: watcher j (counting over all streams) watches key j mod
    /// --keys, and put i writes key i mod --keys, so each put reaches
    /// streams x watchers-per-stream / keys watchers.
    #[arg(long, default_value_t = 1)]
    pub keys: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 8)]
    pub val_size: usize,
}

#[derive(Args, Debug, Clone)]
pub struct LeaseOpts {
    /// TTL of each client's lease, in seconds.
    #[arg(long, default_value_t = 60)]
    pub ttl: i64,
    /// Keep alive the leases listed in this file (one ID a line, as lease-grant writes)
    /// instead of granting one per client.
    #[arg(long)]
    pub ids_file: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct LeaseGrantOpts {
    /// TTL of each lease, in seconds.
    #[arg(long, default_value_t = 600)]
    pub ttl: i64,
    /// Where the granted IDs are written, one a line.
    #[arg(long)]
    pub ids_file: PathBuf,
}

#[derive(Args, Debug, Clone)]
pub struct PlotOpts {
    /// CSV with a header line and columns system,workload,clients,requests_per_s; one line
    /// is drawn per (system, workload).
    #[arg(long)]
    pub input: PathBuf,
    /// PNG file to write.
    #[arg(long)]
    pub out: PathBuf,
    /// TrueType font for the labels.
    #[arg(
        long,
        default_value = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
    )]
    pub font: PathBuf,
    /// Chart title.
    #[arg(long, default_value = "requests/s vs clients")]
    pub title: String,
}

#[derive(Args, Debug, Clone)]
pub struct MixedOpts {
    #[command(flatten)]
    pub keys: KeyOpts,
    /// Fraction of requests that are reads (0.0 to 1.0).
    #[arg(long, default_value_t = 0.5)]
    pub read_ratio: f64,
    /// Consistency of the reads: l = linearizable, s = serializable.
    #[arg(long, value_enum, default_value_t = Consistency::Linearizable)]
    pub consistency: Consistency,
}

#[derive(Args, Debug, Clone)]
pub struct FdatasyncOpts {
    /// Directory to test (a scratch file is created and removed there).
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// Number of write + fdatasync rounds.
    #[arg(long, default_value_t = 300)]
    pub count: u64,
    /// Bytes written before each fdatasync (2300 ≈ one small WAL append).
    #[arg(long, default_value_t = 2300)]
    pub block_size: usize,
}

/// Turns `host:port` into `http://host:port`; rejects schemes this tool cannot speak.
pub fn normalize_endpoint(ep: &str) -> Result<String> {
    let ep = ep.trim();
    if ep.is_empty() {
        bail!("empty endpoint in --endpoints");
    }
    if ep.starts_with("https://") {
        bail!("endpoint {ep}: TLS is not supported by skiff-bench; use http://");
    }
    let url = if ep.starts_with("http://") {
        ep.to_string()
    } else if ep.contains("://") {
        bail!("endpoint {ep}: unsupported scheme (use host:port or http://host:port)");
    } else {
        format!("http://{ep}")
    };
    let rest = &url["http://".len()..];
    let hostport = rest.trim_end_matches('/');
    let Some((host, port)) = hostport.rsplit_once(':') else {
        bail!("endpoint {ep}: missing port (use host:port)");
    };
    if host.is_empty() || port.parse::<u16>().is_err() {
        bail!("endpoint {ep}: expected host:port with a numeric port");
    }
    Ok(format!("http://{hostport}"))
}

fn check_keys(k: &KeyOpts) -> Result<()> {
    if k.key_size == 0 {
        bail!("--key-size must be at least 1");
    }
    if k.key_space_size == 0 {
        bail!("--key-space-size must be at least 1");
    }
    if k.key_size < 8 && k.key_space_size > 1u64 << (8 * k.key_size) {
        bail!(
            "--key-space-size {} does not fit in --key-size {} bytes",
            k.key_space_size,
            k.key_size
        );
    }
    Ok(())
}

impl Cli {
    /// Checks value ranges and normalizes endpoints in place.
    pub fn validate(&mut self) -> Result<()> {
        let g = &mut self.global;
        g.endpoints = g
            .endpoints
            .iter()
            .map(|e| normalize_endpoint(e))
            .collect::<Result<_>>()?;
        if g.endpoints.is_empty() {
            bail!("--endpoints is empty");
        }
        if g.conns == 0 {
            bail!("--conns must be at least 1");
        }
        if g.clients == 0 {
            bail!("--clients must be at least 1");
        }
        if g.total == 0 {
            bail!("--total must be at least 1");
        }
        if !(0.0..=1.0).contains(&g.max_error_rate) {
            bail!("--max-error-rate must be between 0 and 1");
        }
        if !(g.request_timeout > 0.0 && g.request_timeout.is_finite()) {
            bail!("--request-timeout must be a positive number of seconds");
        }
        match &self.command {
            Command::Put(o) => check_keys(&o.keys)?,
            Command::Range(_) => {}
            Command::TxnPut(o) => {
                check_keys(&o.keys)?;
                if o.txn_ops == 0 {
                    bail!("--txn-ops must be at least 1");
                }
                if o.txn_ops > o.keys.key_space_size {
                    bail!("--txn-ops must not exceed --key-space-size (keys in one txn must be distinct)");
                }
            }
            Command::WatchLatency(o) => {
                if o.put_total == 0 || o.streams == 0 || o.watchers_per_stream == 0 {
                    bail!("--put-total, --streams and --watchers-per-stream must be at least 1");
                }
                if o.put_rate == 0 {
                    bail!("--put-rate must be at least 1");
                }
                if o.keys == 0 || o.keys > o.streams * o.watchers_per_stream {
                    bail!("--keys must be between 1 and streams x watchers-per-stream");
                }
            }
            Command::LeaseKeepalive(LeaseOpts { ttl, .. })
            | Command::LeaseGrant(LeaseGrantOpts { ttl, .. }) => {
                if *ttl <= 0 {
                    bail!("--ttl must be positive");
                }
            }
            Command::Plot(_) => {}
            Command::Mixed(o) => {
                check_keys(&o.keys)?;
                if !(0.0..=1.0).contains(&o.read_ratio) {
                    bail!("--read-ratio must be between 0 and 1");
                }
            }
            Command::Fdatasync(o) => {
                if o.count == 0 || o.block_size == 0 {
                    bail!("--count and --block-size must be at least 1");
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli> {
        let mut cli =
            Cli::try_parse_from(std::iter::once("skiff-bench").chain(args.iter().copied()))?;
        cli.validate()?;
        Ok(cli)
    }

    #[test]
    fn defaults_match_etcd_benchmark() {
        let cli = parse(&["put"]).expect("parses");
        let g = &cli.global;
        assert_eq!(g.endpoints, vec!["http://127.0.0.1:2379"]);
        assert_eq!((g.conns, g.clients, g.total, g.rate), (1, 1, 10000, 0));
        assert!(!g.target_leader && !g.precise);
        assert_eq!(g.write_out, OutputFormat::Text);
        let Command::Put(p) = cli.command else {
            panic!("not put")
        };
        assert_eq!(
            (p.keys.key_size, p.keys.val_size, p.keys.key_space_size),
            (8, 8, 1)
        );
        assert!(!p.keys.sequential_keys);
    }

    #[test]
    fn global_flags_before_or_after_subcommand() {
        let a = parse(&[
            "--endpoints",
            "127.0.0.1:21001,http://localhost:21002",
            "--conns",
            "100",
            "--clients",
            "1000",
            "--target-leader",
            "--total",
            "500",
            "--rate",
            "50",
            "--precise",
            "-w",
            "json",
            "put",
            "--key-size",
            "8",
            "--val-size",
            "256",
            "--sequential-keys",
            "--key-space-size",
            "1000",
        ])
        .expect("parses");
        assert_eq!(
            a.global.endpoints,
            vec!["http://127.0.0.1:21001", "http://localhost:21002"]
        );
        assert_eq!(
            (
                a.global.conns,
                a.global.clients,
                a.global.total,
                a.global.rate
            ),
            (100, 1000, 500, 50)
        );
        assert!(a.global.target_leader && a.global.precise);
        assert_eq!(a.global.write_out, OutputFormat::Json);
        let b = parse(&[
            "range",
            "foo",
            "--consistency",
            "s",
            "--total",
            "7",
            "-w",
            "json",
        ])
        .expect("parses");
        assert_eq!(b.global.total, 7);
        let Command::Range(r) = b.command else {
            panic!("not range")
        };
        assert_eq!(
            (r.key.as_str(), r.end, r.consistency),
            ("foo", None, Consistency::Serializable)
        );
    }

    #[test]
    fn every_subcommand_parses() {
        parse(&["range", "a", "z"]).expect("range with end");
        parse(&["txn-put", "--txn-ops", "4", "--key-space-size", "100"]).expect("txn-put");
        parse(&[
            "watch-latency",
            "--put-total",
            "10",
            "--streams",
            "2",
            "--watchers-per-stream",
            "3",
        ])
        .expect("watch");
        parse(&["lease-keepalive"]).expect("lease");
        parse(&["lease-keepalive", "--ids-file", "ids"]).expect("lease with ids");
        parse(&["lease-grant", "--ids-file", "ids", "--ttl", "30"]).expect("lease-grant");
        parse(&["plot", "--input", "a.csv", "--out", "a.png"]).expect("plot");
        parse(&["mixed", "--read-ratio", "0.9", "--key-space-size", "10"]).expect("mixed");
        parse(&["fdatasync", "--dir", "bench/tmp", "--count", "3"]).expect("fdatasync");
    }

    #[test]
    fn bad_values_are_rejected_with_a_message() {
        let msg = |args: &[&str]| parse(args).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(msg(&["--conns", "0", "put"]).contains("--conns"));
        assert!(msg(&["--clients", "0", "put"]).contains("--clients"));
        assert!(msg(&["--total", "0", "put"]).contains("--total"));
        assert!(msg(&["--max-error-rate", "2", "put"]).contains("--max-error-rate"));
        assert!(msg(&["-w", "yaml", "put"]).contains("yaml"));
        assert!(msg(&["range", "k", "--consistency", "x"]).contains("x"));
        assert!(
            msg(&["put", "--key-size", "1", "--key-space-size", "300"]).contains("does not fit")
        );
        assert!(msg(&["txn-put", "--txn-ops", "5", "--key-space-size", "2"]).contains("distinct"));
        assert!(msg(&["mixed", "--read-ratio", "1.5"]).contains("--read-ratio"));
        assert!(msg(&[
            "watch-latency",
            "--streams",
            "2",
            "--watchers-per-stream",
            "2",
            "--keys",
            "5"
        ])
        .contains("--keys"));
        assert!(msg(&["lease-grant", "--ids-file", "f", "--ttl", "0"]).contains("--ttl"));
        assert!(msg(&["--endpoints", "https://h:1", "put"]).contains("TLS"));
        assert!(msg(&["--endpoints", "localhost", "put"]).contains("port"));
        assert!(msg(&["--endpoints", "unix://x:1", "put"]).contains("scheme"));
    }

    #[test]
    fn endpoint_normalization() {
        assert_eq!(
            normalize_endpoint("127.0.0.1:2379").ok().as_deref(),
            Some("http://127.0.0.1:2379")
        );
        assert_eq!(
            normalize_endpoint(" http://h:1/ ").ok().as_deref(),
            Some("http://h:1")
        );
        assert_eq!(
            normalize_endpoint("[::1]:2379").ok().as_deref(),
            Some("http://[::1]:2379")
        );
        assert!(normalize_endpoint("h:port").is_err());
        assert!(normalize_endpoint("").is_err());
    }
}
