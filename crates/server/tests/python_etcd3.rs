//! python-etcd3, the Python client many deployments use, against etcd 3.4 and Skiff:
//! the same script (`tests/data/python_etcd3.py`) against one member of each, outputs
//! compared.
//!
//! - Issue 12: `snapshot()` streams a backup that `etcdctl snapshot status` accepts
//!   (bbolt's consistency check) and that holds the member's revision.
//! - Issue 13: with auth enabled, a client without a user, with a wrong password and
//!   with a user but no password get etcd's answers. (Root's own calls are not in the
//!   comparison: the grpcio that pip installs today refuses, in the client, to send call
//!   credentials over a plaintext channel, for etcd as for Skiff.)
//!
//! Needs `etcd`, `etcdctl` and a Python with `etcd3` 0.12 (`SKIFF_PYTHON_ETCD3` names
//! its interpreter; `.ci/run` installs one in a virtualenv under the target dir); under
//! CI a missing one fails the test. Ports 28860-28863 belong to this file.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{have, Kind, Proc};

/// The interpreter that imports `etcd3`, if there is one.
fn python() -> Option<String> {
    let py = std::env::var("SKIFF_PYTHON_ETCD3").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&py)
        .args(["-c", "import etcd3"])
        .env("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok || std::env::var_os("CI").is_none(),
        "{py} cannot import etcd3 under CI (.ci/run installs python-etcd3 and sets SKIFF_PYTHON_ETCD3)"
    );
    ok.then_some(py)
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/python_etcd3.py")
}

/// Stdout and stderr of `cmd`, with its exit code; without etcdctl's retry warnings
/// (timestamps and random target names).
fn output(cmd: &mut Command) -> String {
    let o = cmd.output().expect("run");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let mut out: String = text
        .lines()
        .filter(|l| !l.starts_with(r#"{"level":"warn""#))
        .map(|l| format!("{l}\n"))
        .collect();
    out.push_str(&format!("[exit {}]\n", o.status.code().unwrap_or(-1)));
    out
}

fn etcdctl(port: u16, args: &[&str]) -> String {
    output(
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints=127.0.0.1:{port}"))
            .arg("--command-timeout=5s")
            .args(args),
    )
}

/// The script's session against a fresh member of `kind`.
fn session(py: &str, kind: Kind, port: u16) -> String {
    let member = Proc::start(kind, "py", port, port + 1, None);
    member.wait_serving();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("backup.db");
    let file = file.to_str().expect("utf-8");
    let py_run = |args: &[&str]| {
        output(
            Command::new(py)
                .arg(script())
                .args(args)
                // python-etcd3's generated code predates protobuf 4's C++ runtime.
                .env("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python"),
        )
    };
    let mut out = py_run(&["snapshot", &port.to_string(), file]);
    let status = etcdctl(port, &["snapshot", "status", file, "-w", "json"]);
    let revision = serde_json::from_str::<serde_json::Value>(status.lines().next().unwrap_or(""))
        .ok()
        .and_then(|v| v["revision"].as_i64());
    out.push_str(&format!("snapshot status revision: {revision:?}\n"));
    out.push_str(&etcdctl(port, &["user", "add", "root:pwd"]));
    out.push_str(&etcdctl(port, &["auth", "enable"]));
    out.push_str(&py_run(&["auth", &port.to_string()]));
    out
}

#[test]
fn python_etcd3_snapshot_and_auth_answers_match_etcd() {
    if !have("etcd") || !have("etcdctl") {
        return;
    }
    let Some(py) = python() else {
        eprintln!("note: no Python with etcd3; comparison skipped");
        return;
    };
    let etcd = session(&py, Kind::Etcd, 28860);
    let skiff = session(&py, Kind::Skiff, 28862);
    println!("etcd 3.4:\n{etcd}\nskiff:\n{skiff}");
    assert_eq!(skiff, etcd, "python-etcd3 sessions differ");
    // What the comparison shows, so it cannot pass on two failed sessions.
    assert!(
        skiff.contains("get -> b'bar'\nsnapshot -> None\n[exit 0]"),
        "{skiff}"
    );
    assert!(
        skiff.contains("snapshot status revision: Some(2)"),
        "{skiff}"
    );
    assert!(
        skiff.contains("wrong password -> _InactiveRpcError StatusCode.INVALID_ARGUMENT etcdserver: authentication failed, invalid user ID or password"),
        "{skiff}"
    );
    assert!(
        skiff.contains("anonymous get -> _InactiveRpcError StatusCode.INVALID_ARGUMENT etcdserver: user name is empty"),
        "{skiff}"
    );
}
