//! End-to-end: the `skiff-bench` binary against a real single-member etcd 3.4 started on
//! this helper's ports (client 21901, peer 21902). Asserts real effects on the server
//! (key counts, revisions), not only the tool's own counters.
//!
//! Without an `etcd` binary the test is skipped with a message, except under CI=true,
//! where CI's script installs etcd and a missing binary is a failure.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use etcd_client::{Client, GetOptions};
use serde_json::Value;

const CLIENT: &str = "127.0.0.1:21901";
const PEER: &str = "127.0.0.1:21902";

struct Etcd {
    child: Child,
    dir: PathBuf,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn etcd_available() -> bool {
    Command::new("etcd")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn start_etcd() -> Etcd {
    let dir = std::env::temp_dir().join(format!("skiff-bench-it-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let log = std::fs::File::create(dir.join("etcd.log")).expect("log file");
    let child = Command::new("etcd")
        .args(["--name", "it", "--data-dir"])
        .arg(dir.join("data"))
        .args([
            "--listen-client-urls",
            &format!("http://{CLIENT}"),
            "--advertise-client-urls",
            &format!("http://{CLIENT}"),
            "--listen-peer-urls",
            &format!("http://{PEER}"),
            "--initial-advertise-peer-urls",
            &format!("http://{PEER}"),
            "--initial-cluster",
            &format!("it=http://{PEER}"),
        ])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn etcd");
    Etcd { child, dir }
}

async fn wait_ready() -> Client {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut c) = Client::connect([format!("http://{CLIENT}")], None).await {
            if c.status().await.is_ok() {
                return c;
            }
        }
        assert!(
            Instant::now() < deadline,
            "etcd did not become ready on {CLIENT}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs the binary with `-w json`; returns its exit code and parsed report.
fn bench(args: &[&str]) -> (i32, Value) {
    bench_at(CLIENT, args)
}

/// [`bench`] with the endpoints written as `endpoints`.
fn bench_at(endpoints: &str, args: &[&str]) -> (i32, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_skiff-bench"))
        .args(["--endpoints", endpoints, "-w", "json"])
        .args(args)
        .output()
        .expect("run skiff-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "skiff-bench {args:?}: bad JSON ({e}): {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), v)
}

/// The server's current revision.
async fn revision(c: &mut Client) -> i64 {
    let header = c.get("foo", None).await.expect("get foo").header().cloned();
    header.expect("response header").revision()
}

fn assert_clean(v: &Value, requests: u64) {
    assert_eq!(v["requests"], requests, "{v}");
    assert_eq!(v["errors"], 0, "{v}");
    let hist: u64 = v["histogram"]
        .as_array()
        .expect("histogram")
        .iter()
        .map(|b| b["count"].as_u64().expect("count"))
        .sum();
    assert_eq!(hist, requests, "histogram counts every request: {v}");
    assert_eq!(v["percentiles"].as_array().map(Vec::len), Some(6), "{v}");
    assert!(v["fastest_s"].as_f64() <= v["slowest_s"].as_f64(), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_subcommand_against_etcd() {
    if !etcd_available() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("etcd is not installed, but CI=true: .ci/run must install etcd-server");
        }
        eprintln!(
            "SKIPPED: no etcd binary on PATH (install Debian's etcd-server to run this test)"
        );
        return;
    }
    let _etcd = start_etcd();
    let mut c = wait_ready().await;

    // put: 300 requests over 100 sequential keys, 10 clients on 3 connections.
    let (code, v) = bench(&[
        "--clients",
        "10",
        "--conns",
        "3",
        "--total",
        "300",
        "put",
        "--val-size",
        "256",
        "--sequential-keys",
        "--key-space-size",
        "100",
    ]);
    assert_eq!(code, 0, "{v}");
    assert_clean(&v, 300);
    // The server really holds 100 distinct 8-byte keys, at revision 1 + 300 puts.
    let all = c
        .get(
            vec![0u8],
            Some(GetOptions::new().with_from_key().with_count_only()),
        )
        .await
        .expect("count keys");
    assert_eq!(all.count(), 100);
    assert_eq!(all.header().map(|h| h.revision()), Some(301));
    let one = c
        .get(vec![0, 0, 0, 0, 0, 0, 0, 42], None)
        .await
        .expect("get key 42");
    assert_eq!(one.kvs()[0].value().len(), 256);
    assert_eq!(
        one.kvs()[0].version(),
        3,
        "key 42 written once per pass, three passes"
    );

    // range, linearizable and serializable.
    c.put("foo", "bar", None).await.expect("put foo");
    for consistency in ["l", "s"] {
        let (code, v) = bench(&[
            "--clients",
            "5",
            "--conns",
            "2",
            "--total",
            "200",
            "range",
            "foo",
            "--consistency",
            consistency,
        ]);
        assert_eq!(code, 0, "{v}");
        assert_clean(&v, 200);
    }

    // txn-put: 50 txns of 4 puts each = 200 revisions.
    let before = revision(&mut c).await;
    let (code, v) = bench(&[
        "--clients",
        "4",
        "--total",
        "50",
        "txn-put",
        "--txn-ops",
        "4",
        "--key-space-size",
        "1000",
    ]);
    assert_eq!(code, 0, "{v}");
    assert_clean(&v, 50);
    let after = revision(&mut c).await;
    assert_eq!(after - before, 50, "each txn is one revision");

    // lease-keepalive: 4 clients hold 4 leases.
    let (code, v) = bench(&["--clients", "4", "--total", "100", "lease-keepalive"]);
    assert_eq!(code, 0, "{v}");
    assert_clean(&v, 100);
    assert!(c.leases().await.expect("leases").leases().len() >= 4);

    // mixed: reads and writes both happen and are reported per kind.
    let (code, v) = bench(&[
        "--clients",
        "4",
        "--total",
        "200",
        "mixed",
        "--read-ratio",
        "0.5",
        "--key-space-size",
        "10",
    ]);
    assert_eq!(code, 0, "{v}");
    assert_clean(&v, 200);
    let puts = v["by_kind"]["put"]["requests"].as_u64().expect("puts");
    let ranges = v["by_kind"]["range"]["requests"].as_u64().expect("ranges");
    assert_eq!(puts + ranges, 200);
    assert!(puts > 0 && ranges > 0, "{v}");

    // watch-latency: 20 puts seen by 2 streams x 3 watchers = 120 events.
    let (code, v) = bench(&[
        "--conns",
        "2",
        "watch-latency",
        "--put-total",
        "20",
        "--put-rate",
        "200",
        "--streams",
        "2",
        "--watchers-per-stream",
        "3",
    ]);
    assert_eq!(code, 0, "{v}");
    assert_clean(&v, 120);
    assert_eq!(v["by_kind"]["put"]["requests"], 20);

    // Endpoints written as a URL with a host name: 40 puts from 8 clients on 4
    // connections all arrive.
    let before = revision(&mut c).await;
    let (code, v) = bench_at(
        "http://localhost:21901",
        &["--clients", "8", "--conns", "4", "--total", "40", "put"],
    );
    assert_eq!(code, 0, "{v}");
    assert_clean(&v, 40);
    let after = revision(&mut c).await;
    assert_eq!(after - before, 40);

    // A failing workload exits non-zero (3) and reports the gRPC code.
    let (code, v) = bench(&["--total", "3", "put", "--val-size", "2000000"]);
    assert_eq!(code, 3, "{v}");
    assert_eq!(v["errors"], 3);
    assert_eq!(v["errors_by_code"]["InvalidArgument"]["count"], 3, "{v}");
    // ... unless the error budget allows it.
    let (code, _) = bench(&[
        "--total",
        "3",
        "--max-error-rate",
        "1",
        "put",
        "--val-size",
        "2000000",
    ]);
    assert_eq!(code, 0);
}
