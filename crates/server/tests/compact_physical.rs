//! `compact --physical` is answered once the rows are removed, however long that takes.
//!
//! etcd 3.4 waits for its physical compaction without a server-side deadline (the
//! client's deadline bounds the call). Skiff answered `etcdserver: request timed out`
//! once its request timeout (5 s plus two election timeouts) had passed, although the
//! removal went on: `etcdctl --command-timeout=600s compact --physical` of two million
//! revisions failed that way in `bench/defrag.sh`. Here
//! `--experimental-compaction-batch-limit=1` (one row per transaction, then a pause)
//! makes 6,000 revisions take longer than a request timeout of 5.2 s
//! (`--election-timeout=100`), and etcdctl is called as an operator calls it.
//!
//! Ports 29680-29681 belong to this file. Needs `etcdctl`; without it the test says so
//! and checks nothing.

use crate::common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{have, Kind, Proc};

const ROWS: usize = 6_000;
/// The member's request timeout with `--election-timeout=100`.
const REQUEST_TIMEOUT: Duration = Duration::from_millis(5_200);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_physical_compaction_is_answered_when_done_not_timed_out() {
    if !have("etcdctl") {
        eprintln!("etcdctl not found: skipped");
        return;
    }
    let member = tokio::task::block_in_place(|| {
        Proc::start_with(
            Kind::Skiff,
            "cp",
            29680,
            29681,
            None,
            &[
                "--experimental-compaction-batch-limit=1",
                "--election-timeout=100",
                "--heartbeat-interval=10",
            ],
        )
    });
    let ep = format!("127.0.0.1:{}", member.client_port);
    let mut client = etcd_client::Client::connect([ep.as_str()], None)
        .await
        .expect("connect");
    let mut revision = 0;
    for chunk in 0..ROWS / 100 {
        let puts: Vec<etcd_client::TxnOp> = (0..100)
            .map(|i| etcd_client::TxnOp::put(format!("k{:05}", chunk * 100 + i), "v", None))
            .collect();
        let r = client
            .txn(etcd_client::Txn::new().and_then(puts))
            .await
            .expect("txn");
        revision = r.header().expect("header").revision();
    }
    // Every row goes: the keys are deleted at `revision + 1`, compacted there.
    let del = client
        .delete("k", Some(etcd_client::DeleteOptions::new().with_prefix()))
        .await
        .expect("delete");
    assert_eq!(del.deleted(), ROWS as i64);
    let at = revision + 1;

    let started = Instant::now();
    let out = tokio::task::block_in_place(|| {
        Command::new("etcdctl")
            .args([
                &format!("--endpoints={ep}"),
                "--command-timeout=120s",
                "compact",
                &at.to_string(),
                "--physical",
            ])
            .env("ETCDCTL_API", "3")
            .output()
            .expect("run etcdctl")
    });
    let took = started.elapsed();
    assert_eq!(
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            out.status.code()
        ),
        (format!("compacted revision {at}\n"), String::new(), Some(0)),
        "after {took:?}"
    );
    assert!(
        took > REQUEST_TIMEOUT,
        "the compaction took {took:?}, under the request timeout: the test no longer \
         shows anything; make ROWS larger"
    );
    // The rows are gone: the revision before is compacted.
    let old = client
        .get(
            "k",
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_revision(revision),
            ),
        )
        .await
        .expect_err("compacted");
    assert!(
        old.to_string()
            .contains("required revision has been compacted"),
        "{old}"
    );
    drop(member);
}
