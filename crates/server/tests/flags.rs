//! etcd's flags and config file, against `skiff` (ports 27700-27719):
//!
//! - every flag `etcd --help` (3.4) lists, plus those etcd 3.4.23 accepts without
//!   listing, parses with a sample value and is validated into a `Config`, and has
//!   its `ETCD_*` variable (the names are scraped from etcd's own help);
//! - etcd's sample YAML config file starts a member serving on the URL it names,
//!   with the command line and environment ignored (etcd itself is started with the
//!   same file to prove the file is etcd's format);
//! - the flags that change behaviour do: `--listen-metrics-urls`, `--wal-dir`,
//!   `--experimental-watch-progress-notify-interval`, `--host-whitelist`/`--cors`
//!   (same answers as etcd), `--logger`/`--log-outputs`, `--max-concurrent-streams`
//!   and `--grpc-keepalive-*` (read off the HTTP/2 connection itself).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::{CommandFactory, Parser};
use skiff_server::config::{normalize_args, Config, Flags};

/// Flags etcd 3.4.23 accepts without listing them in `--help`.
const UNLISTED: &[&str] = &[
    "enable-grpc-gateway",
    "log-output",
    "experimental-enable-lease-checkpoint-persist",
    "unsafe-no-fsync",
];

/// The flag names `etcd --help` lists (`--name 'default'` lines), with the default
/// it shows.
fn etcd_help_flags() -> Option<Vec<(String, String)>> {
    if !common::have("etcd") {
        return None;
    }
    let out = Command::new("etcd")
        .arg("--help")
        .output()
        .expect("etcd --help");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let mut flags = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.trim_start().strip_prefix("--") else {
            continue;
        };
        if !line.starts_with("  --") {
            continue;
        }
        let (name, default) = rest.split_once(' ').unwrap_or((rest, ""));
        let default = default.trim().trim_matches('\'').to_string();
        if name == "config-file" || name == "version" || name == "help" {
            continue;
        }
        flags.push((name.to_string(), default));
    }
    assert!(
        flags.len() >= 75,
        "etcd --help listed only {} flags",
        flags.len()
    );
    Some(flags)
}

/// A value for `flag` that etcd accepts: its shown default, or a sample when the
/// default is empty or a placeholder.
fn sample(flag: &str, shown_default: &str) -> String {
    let samples = [
        ("data-dir", "/tmp/skiff-flags-sample"),
        ("wal-dir", "/tmp/skiff-flags-sample-wal"),
        ("backend-batch-interval", "10ms"),
        ("listen-metrics-urls", "http://127.0.0.1:27719"),
        ("initial-cluster", "default=http://localhost:2380"),
        ("experimental-enable-v2v3", "/v2/"),
        ("log-outputs", "stderr"),
        ("log-output", "stdout"),
        ("log-package-levels", "etcdserver=DEBUG"),
        ("discovery-proxy", "http://proxy.example:3128"),
        ("discovery-srv-name", "dev"),
        ("cipher-suites", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"),
        ("client-cert-allowed-hostname", "client.example"),
        ("peer-cert-allowed-cn", "peer"),
        ("peer-cert-allowed-hostname", "peer.example"),
    ];
    if let Some((_, v)) = samples.iter().find(|(f, _)| *f == flag) {
        return v.to_string();
    }
    if flag.ends_with("-file") {
        return "/etc/ssl/sample.pem".to_string();
    }
    // Discovery changes which cluster forms: Skiff accepts the flag but refuses a
    // value (docs/flags.md); the empty value is etcd's default.
    if flag == "discovery" || flag == "discovery-srv" {
        return String::new();
    }
    if shown_default.is_empty() {
        return "true".to_string();
    }
    shown_default.to_string()
}

/// Companion flags etcd requires with some flags.
fn companions(flag: &str) -> Vec<String> {
    match flag {
        "listen-client-urls" => vec!["--advertise-client-urls=http://localhost:2379".into()],
        _ => Vec::new(),
    }
}

#[test]
fn every_etcd_flag_is_accepted_with_its_env_var() {
    let Some(mut listed) = etcd_help_flags() else {
        return;
    };
    for flag in UNLISTED {
        listed.push((flag.to_string(), String::new()));
    }
    let command = Flags::command();
    let mut failures = Vec::new();
    for (flag, shown) in &listed {
        let value = sample(flag, shown);
        let mut args = vec!["skiff".to_string(), format!("--{flag}={value}")];
        args.extend(companions(flag));
        let result = Flags::try_parse_from(normalize_args(args.clone()))
            .map_err(|e| e.to_string())
            .and_then(|f| Config::from_flags(f).map_err(|e| e.to_string()));
        if let Err(e) = result {
            failures.push(format!("{args:?}: {e}"));
        }
        let env = format!("ETCD_{}", flag.to_uppercase().replace('-', "_"));
        let arg = command.get_arguments().find(|a| a.get_long() == Some(flag));
        match arg.and_then(|a| a.get_env()) {
            Some(e) if e.to_str() == Some(env.as_str()) => {}
            other => failures.push(format!("--{flag}: env var {other:?}, want {env}")),
        }
    }
    assert!(
        failures.is_empty(),
        "refused or without env var:\n{}",
        failures.join("\n")
    );
    // Skiff's own flags (docs/flags.md) are under the "Skiff" heading, with `SKIFF_*`
    // variables.
    for a in command
        .get_arguments()
        .filter(|a| a.get_help_heading() == Some("Skiff"))
    {
        let long = a.get_long().expect("long flag");
        let want = format!("SKIFF_{}", long.to_uppercase().replace('-', "_"));
        assert_eq!(a.get_env().and_then(|e| e.to_str()), Some(want.as_str()));
        assert!(!listed.iter().any(|(f, _)| f == long), "--{long} is etcd's");
    }
    // And the reverse: nothing etcd does not accept slipped in under an etcd name.
    let ours: Vec<String> = command
        .get_arguments()
        .filter(|a| !a.is_hide_set())
        .filter(|a| a.get_help_heading() != Some("Skiff"))
        .filter_map(|a| a.get_long().map(str::to_string))
        .filter(|l| l != "config-file")
        .collect();
    for name in &ours {
        assert!(
            listed.iter().any(|(f, _)| f == name),
            "--{name} is not an etcd 3.4 flag"
        );
    }
}

#[test]
fn etcd_defaults_shown_in_help_are_skiffs() {
    let Some(listed) = etcd_help_flags() else {
        return;
    };
    // Defaults Skiff states differently on purpose (docs/flags.md says why).
    let differ = [
        "data-dir",
        "pre-vote",
        "experimental-enable-lease-checkpoint",
        "initial-cluster",
        "listen-peer-urls",
        "listen-client-urls",
        "initial-advertise-peer-urls",
        "advertise-client-urls",
        "log-outputs",
        "max-concurrent-streams",
    ];
    let command = Flags::command();
    for (flag, shown) in &listed {
        if differ.contains(&flag.as_str()) {
            continue;
        }
        let arg = command
            .get_arguments()
            .find(|a| a.get_long() == Some(flag))
            .unwrap();
        let ours: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        let ours = ours.join(",");
        let as_duration = skiff_server::config::values::go_duration;
        let same = ours == *shown
            || matches!((as_duration(&ours), as_duration(shown)), (Ok(a), Ok(b)) if a == b);
        assert!(same, "--{flag}: etcd's default {shown:?}, Skiff's {ours:?}");
    }
}

/// A `skiff` process started with exactly `args` (no `ETCD_*` from the test's
/// environment unless given in `env`), killed by PID when dropped.
struct Skiff {
    child: Child,
    log: PathBuf,
}

impl Skiff {
    fn start(args: &[String], env: &[(&str, &str)], log: &Path) -> Skiff {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_skiff"));
        for (k, _) in std::env::vars() {
            if k.starts_with("ETCD_") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(env.iter().copied())
            .env_remove("RUST_LOG")
            .args(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap());
        Skiff {
            child: cmd.spawn().expect("spawn skiff"),
            log: log.to_path_buf(),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Skiff {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server binary (etcd) started with `args`, killed by PID when dropped.
struct Etcd(Child);

impl Etcd {
    fn start(args: &[String]) -> Etcd {
        let mut cmd = Command::new("etcd");
        for (k, _) in std::env::vars() {
            if k.starts_with("ETCD_") {
                cmd.env_remove(k);
            }
        }
        Etcd(
            cmd.args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn etcd"),
        )
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn member_args(dir: &Path, client: u16, peer: u16) -> Vec<String> {
    let c = format!("http://127.0.0.1:{client}");
    let p = format!("http://127.0.0.1:{peer}");
    [
        "--data-dir",
        dir.to_str().unwrap(),
        "--listen-client-urls",
        &c,
        "--advertise-client-urls",
        &c,
        "--listen-peer-urls",
        &p,
        "--initial-advertise-peer-urls",
        &p,
        "--initial-cluster",
        &format!("default={p}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn wait_healthy(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Some((200, _)) = common::http_get(port, "/health") {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} on {port} did not become healthy");
}

/// A raw HTTP/1.1 request: (status, headers lower-cased, body).
fn http(port: u16, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str("Host: 127.0.0.1\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_ascii_lowercase(), body.to_string())
}

/// A fresh directory for one test, removed when dropped (after the processes using
/// it, which the test declares later and so drops first), even when the test fails.
struct TempDir(PathBuf);

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp(name: &str) -> TempDir {
    let d = std::env::temp_dir().join(format!("skiff-flags-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    TempDir(d)
}

#[test]
fn config_file_in_etcds_sample_format() {
    let dir = temp("config-file");
    let sample = include_str!("data/etcd.conf.yml.sample");
    let write = |name: &str, client: u16, peer: u16| {
        let text = sample
            .replace("@NAME@", name)
            .replace("@DATA_DIR@", dir.join(name).to_str().unwrap())
            .replace("@CLIENT_URL@", &format!("http://127.0.0.1:{client}"))
            .replace("@PEER_URL@", &format!("http://127.0.0.1:{peer}"));
        let path = dir.join(format!("{name}.yml"));
        std::fs::write(&path, text).unwrap();
        path
    };
    // Flags and environment variables that contradict the file are ignored.
    let skiff_file = write("from-file", 27700, 27701);
    let skiff = Skiff::start(
        &[
            "--config-file".to_string(),
            skiff_file.to_str().unwrap().to_string(),
            "--name".to_string(),
            "from-flags".to_string(),
            "--listen-client-urls=http://127.0.0.1:27718".to_string(),
        ],
        &[("ETCD_NAME", "from-env")],
        &dir.join("skiff.log"),
    );
    wait_healthy(27700, "skiff with etcd's sample config file");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let members = rt.block_on(async {
        let mut c = etcd_client::Client::connect(["http://127.0.0.1:27700"], None)
            .await
            .unwrap();
        c.member_list().await.unwrap()
    });
    let m = &members.members()[0];
    assert_eq!(m.name(), "from-file");
    assert_eq!(m.peer_urls(), ["http://127.0.0.1:27701"]);
    // The file says `logger: zap`: JSON lines; `enable-v2: true` and `enable-pprof:
    // true` are warned about.
    let log = skiff.log();
    assert!(log.lines().any(|l| l.starts_with('{')), "not JSON: {log}");
    assert!(log.contains("--enable-v2"), "{log}");
    drop(skiff);

    // etcd takes the same file (so it is etcd's format, not just Skiff's reading).
    if common::have("etcd") {
        let etcd_file = write("etcd-from-file", 27702, 27703);
        let _etcd = Etcd::start(&[
            "--config-file".to_string(),
            etcd_file.to_str().unwrap().to_string(),
        ]);
        wait_healthy(27702, "etcd with its sample config file");
    }
}

#[test]
fn metrics_urls_serve_metrics_and_health_as_etcd() {
    let dir = temp("metrics");
    let mut args = member_args(&dir.join("skiff"), 27704, 27705);
    args.push("--listen-metrics-urls=http://127.0.0.1:27706".into());
    let _skiff = Skiff::start(&args, &[], &dir.join("skiff.log"));
    wait_healthy(27704, "skiff");
    let mut etcd_answers = None;
    let etcd = common::have("etcd").then(|| {
        let mut args = member_args(&dir.join("etcd"), 27707, 27708);
        args.push("--listen-metrics-urls=http://127.0.0.1:27709".into());
        let e = Etcd::start(&args);
        wait_healthy(27707, "etcd");
        e
    });
    if etcd.is_some() {
        etcd_answers = Some(answers(27709));
    }
    let ours = answers(27706);
    assert_eq!(ours.0, (200, r#"{"health":"true"}"#.to_string()));
    assert_eq!(ours.1, 200);
    assert!(ours.2, "etcd_server_has_leader missing from /metrics");
    assert_eq!(ours.3, 404, "/version is not served on a metrics URL");
    if let Some(theirs) = etcd_answers {
        assert_eq!(ours, theirs);
    }

    fn answers(port: u16) -> ((u16, String), u16, bool, u16) {
        let (s, _, body) = http(port, "GET", "/health", &[]);
        let (m, _, metrics) = http(port, "GET", "/metrics", &[]);
        let (v, _, _) = http(port, "GET", "/version", &[]);
        (
            (s, body.trim().to_string()),
            m,
            metrics.contains("etcd_server_has_leader"),
            v,
        )
    }
}

#[test]
fn host_whitelist_and_cors_answer_as_etcd() {
    let dir = temp("access");
    let extra = [
        "--host-whitelist=good.example",
        "--cors=http://a.example:80",
    ];
    let mut args = member_args(&dir.join("skiff"), 27710, 27711);
    args.extend(extra.iter().map(|s| s.to_string()));
    let _skiff = Skiff::start(&args, &[], &dir.join("skiff.log"));
    let have_etcd = common::have("etcd");
    let _etcd = have_etcd.then(|| {
        let mut args = member_args(&dir.join("etcd"), 27712, 27713);
        args.extend(extra.iter().map(|s| s.to_string()));
        Etcd::start(&args)
    });
    let probe = |port: u16| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while http_ok(port).is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let evil = http(port, "GET", "/health", &[("Host", "evil.example")]);
        let good = http(
            port,
            "GET",
            "/health",
            &[
                ("Host", "good.example:2379"),
                ("Origin", "http://a.example:80"),
            ],
        );
        let other_origin = http(
            port,
            "OPTIONS",
            "/v3/kv/range",
            &[("Host", "good.example"), ("Origin", "http://b.example:80")],
        );
        let cors = |h: &str| {
            h.lines()
                .filter(|l| l.starts_with("access-control-"))
                .map(str::to_string)
                .collect::<std::collections::BTreeSet<_>>()
        };
        (
            evil.0,
            evil.2.contains("--host-whitelist \"evil.example\""),
            good.0,
            cors(&good.1),
            other_origin.0,
            cors(&other_origin.1),
        )
    };
    let ours = probe(27710);
    assert_eq!(ours.0, 421);
    assert!(ours.1);
    assert_eq!(ours.2, 200);
    assert!(ours
        .3
        .contains("access-control-allow-origin: http://a.example:80"));
    assert_eq!(ours.4, 200);
    assert!(ours.5.is_empty());
    if have_etcd {
        assert_eq!(ours, probe(27712));
    }

    fn http_ok(port: u16) -> Option<()> {
        TcpStream::connect(("127.0.0.1", port)).ok()?;
        let (s, _, _) = http(port, "GET", "/health", &[("Host", "good.example")]);
        (s == 200).then_some(())
    }
}

#[test]
fn wal_dir_holds_the_wal_across_restarts() {
    let dir = temp("wal-dir");
    let wal = dir.join("wal");
    let mut args = member_args(&dir.join("data"), 27714, 27715);
    args.push(format!("--wal-dir={}", wal.display()));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let connect = || async {
        etcd_client::Client::connect(["http://127.0.0.1:27714"], None)
            .await
            .unwrap()
    };
    {
        let _skiff = Skiff::start(&args, &[], &dir.join("skiff.log"));
        wait_healthy(27714, "skiff");
        rt.block_on(async { connect().await.put("k", "v", None).await.unwrap() });
    }
    let segments = std::fs::read_dir(&wal).unwrap().count();
    assert!(segments > 0, "no WAL files in --wal-dir");
    assert!(
        !dir.join("data/member/wal").exists(),
        "the WAL was written under the data dir too"
    );
    let _skiff = Skiff::start(&args, &[], &dir.join("skiff2.log"));
    wait_healthy(27714, "restarted skiff");
    let got = rt.block_on(async { connect().await.get("k", None).await.unwrap() });
    assert_eq!(got.kvs()[0].value(), b"v");
}

/// One member (the port range is small) for four flags: the progress interval,
/// zap logging to stderr and a file, periodic auto-compaction, and the slow-apply
/// warning (1ns: every apply is slow).
#[test]
fn progress_interval_logging_and_auto_compaction_take_effect() {
    let dir = temp("progress");
    let mut args = member_args(&dir.join("data"), 27716, 27717);
    args.push("--experimental-watch-progress-notify-interval=1s".into());
    args.push("--experimental-warning-apply-duration=1ns".into());
    args.push("--auto-compaction-retention=2s".into());
    args.push("--logger=zap".into());
    let log_file = dir.join("zap.log");
    args.push(format!("--log-outputs=stderr,{}", log_file.display()));
    let skiff = Skiff::start(&args, &[], &dir.join("skiff.log"));
    wait_healthy(27716, "skiff");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let waited = rt.block_on(async {
        let mut c = etcd_client::Client::connect(["http://127.0.0.1:27716"], None)
            .await
            .unwrap();
        for i in 0..3 {
            c.put("k", format!("v{i}"), None).await.unwrap();
        }
        let opts = etcd_client::WatchOptions::new().with_progress_notify();
        let mut stream = c.watch("idle", Some(opts)).await.unwrap();
        let started = Instant::now();
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(5), stream.message())
                .await
                .expect("no progress notification within 5 s")
                .unwrap()
                .expect("stream ended");
            if !msg.created() && msg.events().is_empty() && !msg.canceled() {
                return started.elapsed();
            }
        }
    });
    assert!(
        waited <= Duration::from_millis(2500),
        "first progress after {waited:?}"
    );
    // Retention 2 s: within about 2 s of start the revisions written at start are
    // compacted away (etcd: "required revision has been compacted").
    let compacted = rt.block_on(async {
        let mut c = etcd_client::Client::connect(["http://127.0.0.1:27716"], None)
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(8);
        loop {
            let opts = etcd_client::GetOptions::new().with_revision(2);
            match c.get("k", Some(opts)).await {
                Err(e)
                    if e.to_string()
                        .contains("required revision has been compacted") =>
                {
                    return true
                }
                _ if Instant::now() > deadline => return false,
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    });
    assert!(
        compacted,
        "revision 2 not compacted by --auto-compaction-retention=2s"
    );
    // --logger=zap --log-outputs=stderr,<file>: the same JSON lines in both.
    let file = std::fs::read_to_string(&log_file).unwrap();
    assert!(
        file.lines().count() > 2 && file.lines().all(|l| l.starts_with('{')),
        "{file}"
    );
    assert!(skiff.log().contains(file.lines().next().unwrap()));
    // Every apply took longer than 1ns: etcd's warning and its counter.
    assert!(
        file.contains("apply request took too long"),
        "no slow-apply warning: {file}"
    );
    let (_, _, metrics) = http(27716, "GET", "/metrics", &[]);
    let slow = metrics
        .lines()
        .find_map(|l| l.strip_prefix("etcd_server_slow_apply_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(slow >= 3.0, "etcd_server_slow_apply_total {slow}");
    drop(skiff);
}

/// Reads HTTP/2 frames from `s` until one of `kind` arrives: (flags, payload).
fn h2_frame(s: &mut TcpStream, kind: u8) -> Option<(u8, Vec<u8>)> {
    loop {
        let mut head = [0u8; 9];
        s.read_exact(&mut head).ok()?;
        let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload).ok()?;
        if head[3] == kind {
            return Some((head[4], payload));
        }
    }
}

#[test]
fn http2_stream_limit_and_keepalive_pings() {
    let dir = temp("h2");
    let mut args = member_args(&dir.join("data"), 27718, 27719);
    args.extend([
        "--max-concurrent-streams=7".to_string(),
        "--grpc-keepalive-interval=1s".to_string(),
        "--grpc-keepalive-timeout=1s".to_string(),
    ]);
    let _skiff = Skiff::start(&args, &[], &dir.join("skiff.log"));
    wait_healthy(27718, "skiff");
    let mut s = TcpStream::connect(("127.0.0.1", 27718)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    s.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).unwrap(); // empty SETTINGS
    let (_, settings) = h2_frame(&mut s, 4).expect("server SETTINGS");
    let max_streams = settings
        .chunks(6)
        .find(|c| c[..2] == [0, 3])
        .map(|c| u32::from_be_bytes([c[2], c[3], c[4], c[5]]));
    assert_eq!(max_streams, Some(7));
    // The server pings an idle connection after the interval and, as this client
    // never answers, closes it after the timeout.
    let started = Instant::now();
    let (flags, _) = h2_frame(&mut s, 6).expect("a keepalive PING");
    assert_eq!(flags & 1, 0, "a PING, not an ACK");
    assert!(started.elapsed() < Duration::from_secs(5));
    let closed = loop {
        let mut buf = [0u8; 512];
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break started.elapsed(),
            Ok(_) => {}
        }
    };
    assert!(
        closed < Duration::from_secs(8),
        "still open after {closed:?}"
    );
}
