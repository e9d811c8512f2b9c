//! The `skiff` binary as a user meets it: flag errors exit 1 with a clear message, and
//! a started member serves etcd's HTTP endpoints on its client port and stops cleanly
//! on SIGTERM. Ports 23400-23419 belong to this file.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn skiff() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_skiff"));
    // The test must not inherit a developer's etcd settings.
    for (k, _) in std::env::vars() {
        if k.starts_with("ETCD_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

fn run_fail(args: &[&str]) -> String {
    let out = skiff().args(args).output().expect("run skiff");
    assert_eq!(out.status.code(), Some(1), "args {args:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_flags_exit_1_with_a_clear_message() {
    assert!(run_fail(&["--bogus"]).contains("unexpected argument '--bogus'"));
    assert!(run_fail(&["positional"]).contains("positional"));
    assert!(run_fail(&["--initial-cluster-state", "maybe"]).contains("maybe"));
    assert!(run_fail(&["--heartbeat-interval", "500"]).contains(
        "--election-timeout[1000ms] should be at least as 5 times as --heartbeat-interval[500ms]"
    ));
    assert!(
        run_fail(&["--listen-client-urls", "http://127.0.0.1:23401"])
            .contains("--advertise-client-urls is required")
    );
    assert!(run_fail(&[
        "--name",
        "x",
        "--initial-cluster",
        "y=http://127.0.0.1:23402"
    ])
    .contains("couldn't find local name \"x\""));
}

#[test]
fn env_var_is_read_and_flag_wins() {
    let out = skiff()
        .env("ETCD_HEARTBEAT_INTERVAL", "500")
        .output()
        .expect("run skiff");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--heartbeat-interval[500ms]"));
    let out = skiff()
        .env("ETCD_HEARTBEAT_INTERVAL", "500")
        .args(["--heartbeat-interval", "100", "--help"])
        .output()
        .expect("run skiff");
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("--initial-cluster-token"));
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.split(' ').nth(1)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n")?.1.to_string();
    Some((status, body))
}

#[test]
fn serves_version_metrics_health_and_stops_on_sigterm() {
    let dir = std::env::temp_dir().join(format!("skiff-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let child = skiff()
        .args([
            "--name",
            "cli",
            "--data-dir",
            dir.to_str().expect("utf-8 temp dir"),
            "--listen-client-urls",
            "http://127.0.0.1:23410",
            "--advertise-client-urls",
            "http://127.0.0.1:23410",
            "--listen-peer-urls",
            "http://127.0.0.1:23411",
            "--initial-advertise-peer-urls",
            "http://127.0.0.1:23411",
            "--initial-cluster",
            "cli=http://127.0.0.1:23411",
        ])
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn skiff");
    let mut running = Running(child);

    let deadline = Instant::now() + Duration::from_secs(10);
    let version = loop {
        if let Some(v) = http_get(23410, "/version") {
            break v;
        }
        assert!(Instant::now() < deadline, "skiff did not start listening");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(version.0, 200);
    assert!(version
        .1
        .starts_with(r#"{"etcdserver":"3.4.0","etcdcluster":"3.4.0""#));

    let (code, metrics) = http_get(23410, "/metrics").expect("metrics");
    assert_eq!(code, 200);
    for name in [
        "etcd_server_has_leader",
        "etcd_server_leader_changes_seen_total",
        "etcd_disk_wal_fsync_duration_seconds_bucket",
        "etcd_mvcc_db_total_size_in_bytes",
        "etcd_server_proposals_committed_total",
    ] {
        assert!(metrics.contains(name), "missing {name}");
    }
    assert!(dir.is_dir(), "data dir created");

    // A single member elects itself and commits a no-op through Raft for /health.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, body) = http_get(23410, "/health").expect("health");
        if code == 200 {
            assert_eq!(body, r#"{"health":"true"}"#);
            break;
        }
        assert_eq!((code, body.as_str()), (503, r#"{"health":"false"}"#));
        assert!(Instant::now() < deadline, "never became healthy");
        std::thread::sleep(Duration::from_millis(50));
    }

    let pid = running.0.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = running.0.wait().expect("wait");
    assert_eq!(status.code(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_data_dir_that_is_a_file_is_refused_with_a_message_saying_so() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").expect("write file");
    let err = run_fail(&[
        "--data-dir",
        file.to_str().expect("utf-8 path"),
        "--listen-client-urls",
        "http://127.0.0.1:23412",
        "--advertise-client-urls",
        "http://127.0.0.1:23412",
        "--listen-peer-urls",
        "http://127.0.0.1:23413",
        "--initial-advertise-peer-urls",
        "http://127.0.0.1:23413",
        "--initial-cluster",
        "default=http://127.0.0.1:23413",
    ]);
    assert!(
        err.contains("exists and is not a directory"),
        "stderr: {err}"
    );
    // Nothing was written over the file.
    assert_eq!(std::fs::read(&file).expect("read file"), b"x");
}
