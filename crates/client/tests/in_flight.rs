//! A member that dies with a call in flight: the connection drops after the request
//! left. A read is then tried on another member; a write is not (its outcome is
//! unknown), and the error says so rather than "not sent".
//!
//! The dying member is a listener that reads what the client sends and then closes the
//! connection; the healthy one is an etcd 3.4 member (required under `CI`).

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use skiff_client::pool::not_sent;
use skiff_client::{Client, ClientOptions, Error};

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("bound socket has an address").port()
}

/// Accepts connections, reads until the client has sent something, then drops them.
fn dying_member() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut buf = [0u8; 4096];
            let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
            let _ = conn.read(&mut buf);
            drop(conn);
        }
    });
    port
}

/// The etcd process this test started (stopped by PID on drop) and its data dir.
struct Etcd {
    child: Child,
    _dir: tempfile::TempDir,
}
impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn etcd() -> Option<(Etcd, u16)> {
    let ok = Command::new("etcd")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok();
    assert!(
        ok || std::env::var_os("CI").is_none(),
        "etcd is required under CI"
    );
    if !ok {
        return None;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (c, p) = (free_port(), free_port());
    let child = Command::new("etcd")
        .args([
            "--data-dir",
            &dir.path().join("d").to_string_lossy(),
            "--listen-client-urls",
            &format!("http://127.0.0.1:{c}"),
            "--advertise-client-urls",
            &format!("http://127.0.0.1:{c}"),
            "--listen-peer-urls",
            &format!("http://127.0.0.1:{p}"),
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{p}"),
            "--initial-cluster",
            &format!("default=http://127.0.0.1:{p}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn etcd");
    Some((Etcd { child, _dir: dir }, c))
}

#[tokio::test]
async fn a_read_in_flight_moves_on_and_a_write_does_not() {
    let Some((_etcd, good)) = etcd() else {
        eprintln!("note: etcd not installed; skipped");
        return;
    };
    let bad = dying_member();
    let opts = ClientOptions {
        max_attempts: 4,
        backoff_initial: Duration::from_millis(10),
        backoff_max: Duration::from_millis(20),
        ..ClientOptions::default()
    };
    let healthy = Client::connect([format!("127.0.0.1:{good}")], opts.clone()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while healthy.put("k", "v").await.is_err() {
        assert!(Instant::now() < deadline, "etcd did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Every read succeeds although half of them are first sent to the dying member.
    for i in 0..6 {
        let client = Client::connect(
            [format!("127.0.0.1:{bad}"), format!("127.0.0.1:{good}")],
            opts.clone(),
        )
        .unwrap();
        let r = client.get("k").await;
        assert!(r.is_ok(), "read {i}: {r:?}");
    }

    // A write sent to the dying member is not retried and not reported as "not sent".
    let only_bad = Client::connect([format!("127.0.0.1:{bad}")], opts.clone()).unwrap();
    match only_bad.put("w", "1").await {
        Err(Error::Rpc(status)) => assert!(!not_sent(&status), "{status:?}"),
        other => panic!("write to a dying member: {other:?}"),
    }
}
