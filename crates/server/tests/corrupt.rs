//! Corruption checks (`--experimental-initial-corrupt-check`,
//! `--experimental-corrupt-check-time`) on a 3-member Skiff cluster: one member is
//! stopped, its backend altered behind its back (a stored value changed, with the
//! test-only `skiff_storage::mvcc::testing` tool), and then
//! - started with the initial check, it refuses to start, naming itself, the peer whose
//!   hash differs and the revision;
//! - started without it, the leader's periodic check raises CORRUPT for it (naming it
//!   and the revision in the log), after which writes fail with etcd's
//!   `etcdserver: corrupt cluster`.
//!
//! Not compared with etcd 3.4 here: altering etcd's bbolt file the same way would mean
//! rewriting it (possible with `skiff_storage::bbolt`'s reader and writer, not done
//! yet). Ports 29540-29545.

mod common;

use std::time::{Duration, Instant};

use common::{cluster_members, Member};
use etcd_client::{AlarmAction, AlarmType, Client, GetOptions};

async fn client(m: &Member) -> Client {
    Client::connect([m.url()], None).await.expect("connect")
}

/// The backend file of a stopped Skiff member.
fn db_path(m: &Member) -> std::path::PathBuf {
    let p = m.data_dir.join("member/snap/db");
    assert!(p.exists(), "no backend at {}", p.display());
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_altered_member_is_refused_at_start_and_raises_corrupt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = std::path::PathBuf::from(env!("CARGO_BIN_EXE_skiff"));
    let mut ms = cluster_members(
        &bin,
        3,
        29540,
        dir.path(),
        &["--experimental-corrupt-check-time", "1s"],
    );
    for m in ms.iter_mut() {
        m.spawn();
    }
    for m in ms.iter_mut() {
        m.wait_serving(Duration::from_secs(30));
    }
    let mut c0 = client(&ms[0]).await;
    for (k, v) in [("a", "1"), ("b", "2"), ("a", "3")] {
        c0.put(k, v, None).await.expect("put");
    }
    let rev = c0
        .get("a", None)
        .await
        .expect("get")
        .header()
        .expect("h")
        .revision();
    // The victim has applied everything, then stops.
    let mut c2 = client(&ms[2]).await;
    let victim = c2
        .status()
        .await
        .expect("status")
        .header()
        .expect("h")
        .member_id();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = c2
            .get("a", Some(GetOptions::new().with_serializable()))
            .await
            .expect("serializable get");
        if r.header().expect("h").revision() >= rev {
            break;
        }
        assert!(Instant::now() < deadline, "m2 did not catch up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The check asks peers at the client URLs they published through the log: m2 must
    // have applied every member's publish before it stops (a put can commit before the
    // publishes do, right after the first election).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let list = c2.member_list().await.expect("member list");
        if list.members().iter().all(|m| !m.client_urls().is_empty()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "m2 never learned every member's client URLs: {:?}",
            list.members()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(c2);
    ms[2].terminate(Duration::from_secs(10));
    let altered = skiff_storage::mvcc::testing::alter_newest_value(&db_path(&ms[2]), b"a", b"evil")
        .expect("alter the backend")
        .expect("key a is stored");
    assert_eq!(altered, rev);

    // With the initial check it refuses to start.
    ms[2]
        .args
        .push("--experimental-initial-corrupt-check".to_string());
    ms[2].spawn();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = ms[2].try_exit() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "m2 kept running despite the altered data; log:\n{}",
            ms[2].log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success(), "m2 exited with {status}");
    let log = ms[2].log_tail(30);
    assert!(
        log.contains(&format!("{victim:x} found data inconsistency with peers")),
        "{log}"
    );
    assert!(log.contains(&format!("revision {rev}")), "{log}");
    eprintln!(
        "m2 at start: {}",
        log.lines()
            .filter(|l| l.contains("inconsistency") || l.contains("hash"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // Without it, it starts; the leader's periodic check raises CORRUPT for it.
    ms[2].args.pop();
    ms[2].spawn();
    // (Not waiting for its /health: it turns 503 as soon as the alarm is raised.)
    let deadline = Instant::now() + Duration::from_secs(40);
    let alarms = loop {
        let a = c0
            .alarm(AlarmAction::Get, AlarmType::None, None)
            .await
            .expect("alarm list");
        if !a.alarms().is_empty() {
            break a;
        }
        assert!(
            Instant::now() < deadline,
            "no CORRUPT alarm; logs:\n{}\n{}",
            ms[0].log_tail(10),
            ms[1].log_tail(10)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let raised: Vec<_> = alarms
        .alarms()
        .iter()
        .map(|a| (a.member_id(), a.alarm()))
        .collect();
    assert_eq!(raised, vec![(victim, AlarmType::Corrupt)]);
    assert!(
        ms[2].try_exit().is_none(),
        "m2 runs without the initial check"
    );
    let logs: String = ms[..2]
        .iter()
        .map(|m| std::fs::read_to_string(&m.log_path).unwrap_or_default())
        .collect();
    let line = logs
        .lines()
        .find(|l| l.contains("data inconsistency found"))
        .unwrap_or_else(|| panic!("the leader logs the mismatch:\n{logs}"));
    assert!(
        line.contains(&format!("member {victim:x}")) && line.contains("revision"),
        "{line}"
    );
    eprintln!("leader: {line}");
    let err = c0.put("c", "x", None).await.expect_err("writes refused");
    assert!(
        err.to_string().contains("etcdserver: corrupt cluster"),
        "{err}"
    );
}
