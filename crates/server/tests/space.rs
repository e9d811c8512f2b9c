//! Space: the backend quota (NOSPACE) as etcd 3.4 behaves, checked by running the same
//! etcdctl script against a fresh single `etcd` 3.4 and a fresh single `skiff`, each
//! with a small `--quota-backend-bytes`, and comparing the masked transcripts: the
//! refused put, the alarm, what still works while it is raised (reads, read-only and
//! delete-only txns, deletes), what does not (puts, txns with a put, lease grants), a
//! disarm that does not help while the file is still over the quota, and the recovery
//! etcd documents: delete, compact, defragment (the file shrinks under the quota),
//! disarm, and writes work again.
//!
//! A second test raises NOSPACE by hand (an Alarm ACTIVATE request, which etcdctl cannot
//! send) on servers far under their quota: then the apply step alone refuses, in log
//! order, what may grow the database; the answers must be etcd's.
//!
//! Also here: a defragment under writes (Skiff only), and periodic auto-compaction
//! compared with etcd's (the same writes at the same moments, the same compaction
//! revisions).
//!
//! Both servers get the same quota (1 MB; both empty files are 20 kB), and the script
//! fills it with 50 kB values until refused. Ports 29500-29519 belong to this file. Needs `etcd` and
//! `etcdctl`; without them the test says so and checks nothing.

use crate::common;

use common::{assert_same_transcript, have, Kind, Proc};
use regex::Regex;

/// The script: `$E` is etcdctl aimed at the server, `$V` a file of 50,000 bytes.
const NOSPACE_SCRIPT: &[&str] = &[
    // Fill until refused; the count differs between the servers, what matters is that
    // the quota was reached after some puts.
    "i=0; while [ $i -lt 1000 ] && $E put k$i < $V > /dev/null 2>&1; do i=$((i+1)); done; \
     if [ $i -gt 5 ] && [ $i -lt 1000 ]; then echo 'refused after some puts'; else echo \"refused after $i puts\"; fi",
    "$E put one-more x",
    "$E alarm list",
    "$E endpoint status",
    "$E get k1 --keys-only",
    "printf '\\nget k1 --keys-only\\n\\n\\n' | $E txn",
    "printf '\\nget k1 --keys-only\\n\\nput z z\\n\\n' | $E txn",
    "printf '\\ndel k2\\n\\n\\n' | $E txn",
    "$E lease grant 10",
    "$E del k3",
    "$E get k3",
    // Disarming while the file is still over the quota: the next put as large as the
    // one refused raises it again. (A tiny put passes or not depending on how many
    // bytes the last admitted put left under the quota, on either server.)
    "$E alarm disarm",
    "$E put after-disarm < $V",
    "$E alarm list",
    "$E endpoint health",
    // Recovery as etcd's docs say: free space, compact, defragment, disarm.
    "$E del k --prefix",
    "$E compact $($E get nothing -w json | grep -o '\"revision\":[0-9]*' | head -1 | cut -d: -f2)",
    "$E defrag",
    "$E put still-armed x",
    "$E alarm disarm",
    "$E alarm list",
    "$E put after-recovery x",
    "$E lease grant 100",
    "$E get after-recovery",
    "$E endpoint status",
];

fn run_script(script: &[&str], endpoint: &str, value: &std::path::Path) -> String {
    let vars = [
        (
            "E",
            format!("etcdctl --endpoints={endpoint} --command-timeout=10s"),
        ),
        ("V", value.display().to_string()),
    ];
    common::sh_transcript(script, &vars)
}

/// Masks what legitimately differs between two servers.
fn mask(transcript: &str) -> String {
    let rules: &[(&str, &str)] = &[
        (r#"(?m)^\{"level":"warn".*\n"#, ""),
        (r"127\.0\.0\.1:\d+", "127.0.0.1:PORT"),
        (r"memberID:\d+", "memberID:ID"),
        (r"\b[0-9a-f]{10,16}\b", "ID"),
        (
            r"(?m)^(127\.0\.0\.1:PORT, ID), [^,]+, [^,]+, (true|false), (true|false), \d+, \d+, \d+, ",
            "$1, VERSION, DBSIZE, $2, $3, TERM, INDEX, INDEX, ",
        ),
        (r"took = \S+", "took = T"),
        (r"compacted revision \d+", "compacted revision N"),
        (r"(?m)^\d+$", "N"),
    ];
    let mut s = transcript.to_string();
    for (re, with) in rules {
        s = Regex::new(re)
            .expect("valid regex")
            .replace_all(&s, *with)
            .into_owned();
    }
    s
}

/// Runs `script` against etcd and Skiff (each with its own extra flags) and asserts the
/// masked transcripts are identical; returns Skiff's.
fn compare(script: &[&str], etcd_flags: &[&str], skiff_flags: &[&str], ports: u16) -> String {
    let value = std::env::temp_dir().join(format!("skiff-space-50k-{}", std::process::id()));
    std::fs::write(&value, vec![b'v'; 50_000]).expect("write value");

    let etcd = Proc::start_with(Kind::Etcd, "sp", ports, ports + 1, None, etcd_flags);
    let etcd_out = run_script(script, &etcd.endpoint(), &value);
    drop(etcd);
    let skiff = Proc::start_with(Kind::Skiff, "sp", ports + 2, ports + 3, None, skiff_flags);
    let skiff_out = run_script(script, &skiff.endpoint(), &value);
    drop(skiff);
    let _ = std::fs::remove_file(&value);

    let (a, b) = (mask(&etcd_out), mask(&skiff_out));
    assert_same_transcript("skiff-space", &a, &b);
    b
}

#[test]
fn nospace_matches_etcd() {
    if !have("etcd") || !have("etcdctl") {
        eprintln!("note: etcd/etcdctl not installed; NOSPACE comparison skipped");
        return;
    }
    let out = compare(
        NOSPACE_SCRIPT,
        &["--quota-backend-bytes", "1000000"],
        &["--quota-backend-bytes", "1000000"],
        29500,
    );
    // The comparison means something only if the quota really was reached.
    assert!(out.contains("refused after some puts"), "{out}");
    assert!(
        out.contains("alarm:NOSPACE") && out.contains("database space exceeded"),
        "{out}"
    );
    assert!(out.contains("Finished defragmenting etcd member"), "{out}");
    assert!(out.ends_with("[exit 0]\n"), "{out}");
}

/// What each request answered, as text (`ok` or the error message).
async fn answers_under_a_raised_alarm(p: &Proc) -> Vec<String> {
    use etcd_client::{AlarmAction, AlarmOptions, AlarmType, Compare, CompareOp, TxnOp};
    let mut c = etcd_client::Client::connect([p.url()], None)
        .await
        .expect("connect");
    c.put("a", "1", None).await.expect("put before the alarm");
    let me = c
        .status()
        .await
        .expect("status")
        .header()
        .expect("header")
        .member_id();
    let mut opts = AlarmOptions::new();
    opts.with_member(me);
    c.alarm(
        AlarmAction::Activate,
        AlarmType::Nospace,
        Some(opts.clone()),
    )
    .await
    .expect("activate");
    let text = |r: Result<(), etcd_client::Error>| match r {
        Ok(()) => "ok".to_string(),
        Err(e) => e.to_string(),
    };
    let mut out = Vec::new();
    out.push(format!(
        "put: {}",
        text(c.put("b", "2", None).await.map(drop))
    ));
    let put_on_failure = etcd_client::Txn::new()
        .when([Compare::value("a", CompareOp::Equal, "1")])
        .and_then([TxnOp::get("a", None)])
        .or_else([TxnOp::put("c", "3", None)]);
    out.push(format!(
        "txn with a put not taken: {}",
        text(c.txn(put_on_failure).await.map(drop))
    ));
    let deletes = etcd_client::Txn::new().and_then([TxnOp::delete("a", None)]);
    out.push(format!(
        "txn of deletes: {}",
        text(c.txn(deletes).await.map(drop))
    ));
    out.push(format!(
        "lease grant: {}",
        text(c.lease_grant(10, None).await.map(drop))
    ));
    out.push(format!("get: {}", text(c.get("a", None).await.map(drop))));
    out.push(format!(
        "delete: {}",
        text(c.delete("a", None).await.map(drop))
    ));
    let alarms = c
        .alarm(AlarmAction::Get, AlarmType::None, None)
        .await
        .expect("alarm list");
    out.push(format!(
        "alarms: {:?}",
        alarms
            .alarms()
            .iter()
            .map(|a| (a.member_id() == me, a.alarm()))
            .collect::<Vec<_>>()
    ));
    c.alarm(AlarmAction::Deactivate, AlarmType::Nospace, Some(opts))
        .await
        .expect("deactivate");
    out.push(format!(
        "put after disarm: {}",
        text(c.put("b", "2", None).await.map(drop))
    ));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raised_nospace_refuses_at_apply_as_etcd() {
    if !have("etcd") {
        eprintln!("note: etcd not installed; comparison skipped");
        return;
    }
    let etcd = Proc::start(Kind::Etcd, "al", 29510, 29511, None);
    let want = answers_under_a_raised_alarm(&etcd).await;
    drop(etcd);
    let skiff = Proc::start(Kind::Skiff, "al", 29512, 29513, None);
    let got = answers_under_a_raised_alarm(&skiff).await;
    drop(skiff);
    eprintln!("etcd answered {want:#?}");
    assert_eq!(got, want);
    // And etcd's answers are what the alarm should do (so the comparison is not vacuous).
    assert!(want[0].contains("database space exceeded"), "{want:?}");
    assert!(want.last().is_some_and(|l| l.ends_with("ok")), "{want:?}");
}

/// Skiff only: a defragment of a member holding mostly deleted, compacted history gives
/// the space back (`dbSize` in Status), while a client keeps writing; every write made
/// meanwhile succeeds and is there afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defragment_returns_space_while_writes_continue() {
    use etcd_client::{CompactionOptions, GetOptions, Txn, TxnOp};
    let p = Proc::start(Kind::Skiff, "df", 29514, 29515, None);
    let mut c = etcd_client::Client::connect([p.url()], None)
        .await
        .expect("connect");
    let value = "v".repeat(2000);
    let n = 10_000;
    // In txns of 100 ops, to keep the test short.
    for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
        let ops = chunk
            .iter()
            .map(|i| TxnOp::put(format!("k{i:05}"), value.clone(), None));
        c.txn(Txn::new().and_then(ops.collect::<Vec<_>>()))
            .await
            .expect("fill");
    }
    let doomed: Vec<_> = (0..n).filter(|i| i % 10 != 0).collect();
    for chunk in doomed.chunks(100) {
        let ops = chunk
            .iter()
            .map(|i| TxnOp::delete(format!("k{i:05}"), None));
        c.txn(Txn::new().and_then(ops.collect::<Vec<_>>()))
            .await
            .expect("delete");
    }
    let rev = c
        .get("k", None)
        .await
        .expect("get")
        .header()
        .expect("header")
        .revision();
    c.compact(rev, Some(CompactionOptions::new().with_physical()))
        .await
        .expect("compact");
    let before = c.status().await.expect("status").db_size();

    let writer = {
        let mut c = c.clone();
        tokio::spawn(async move {
            let mut written = 0u32;
            let mut longest = std::time::Duration::ZERO;
            let stop = std::time::Instant::now() + std::time::Duration::from_secs(3);
            while std::time::Instant::now() < stop {
                let t = std::time::Instant::now();
                c.put(format!("w{written:05}"), "x", None)
                    .await
                    .expect("a put during the defragment");
                longest = longest.max(t.elapsed());
                written += 1;
            }
            (written, longest)
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    c.defragment().await.expect("defragment");
    let after = c.status().await.expect("status").db_size();
    let (written, longest) = writer.await.expect("writer");
    let later = c.status().await.expect("status").db_size();
    eprintln!(
        "dbSize {before} -> {after} ({later} once the writer stopped); \
         {written} puts meanwhile, longest {longest:?}"
    );
    assert!(after * 3 < before, "space returned: {before} -> {after}");
    let w = c
        .get("w", Some(GetOptions::new().with_prefix().with_count_only()))
        .await
        .expect("count");
    assert_eq!(w.count(), i64::from(written));
    let k = c
        .get("k", Some(GetOptions::new().with_prefix().with_count_only()))
        .await
        .expect("count");
    assert_eq!(k.count(), i64::from(n / 10));
}

/// The compaction revision a server has now (0 if none): a watch from revision 1 is
/// cancelled with it once history was compacted.
async fn compact_revision(c: &mut etcd_client::Client) -> i64 {
    let mut stream = c
        .watch(
            "nothing",
            Some(etcd_client::WatchOptions::new().with_start_revision(1)),
        )
        .await
        .expect("watch");
    // The created response comes first; a compacted start revision then cancels the
    // watch at once, naming the compaction revision.
    loop {
        let next = tokio::time::timeout(std::time::Duration::from_millis(300), stream.message());
        let Ok(r) = next.await else {
            return 0;
        };
        let r = r.expect("watch stream").expect("watch response");
        if r.compact_revision() > 0 || r.canceled() {
            return r.compact_revision();
        }
    }
}

/// `--auto-compaction-mode periodic` as etcd 3.4 runs it: the same writes, at the same
/// moments, to etcd and Skiff started together; the compaction revisions each reaches
/// follow the same timeline (every retention, at the revision of one retention
/// earlier), up to the phase of their clocks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_auto_compaction_follows_etcds_timeline() {
    if !have("etcd") {
        eprintln!("note: etcd not installed; comparison skipped");
        return;
    }
    let flags = [
        "--auto-compaction-mode",
        "periodic",
        "--auto-compaction-retention",
        "3s",
    ];
    let etcd =
        std::thread::spawn(move || Proc::start_with(Kind::Etcd, "ac", 29516, 29517, None, &flags));
    let skiff =
        std::thread::spawn(move || Proc::start_with(Kind::Skiff, "ac", 29518, 29519, None, &flags));
    let (etcd, skiff) = (etcd.join().expect("etcd"), skiff.join().expect("skiff"));
    let mut ce = etcd_client::Client::connect([etcd.url()], None)
        .await
        .expect("etcd");
    let mut cs = etcd_client::Client::connect([skiff.url()], None)
        .await
        .expect("skiff");

    // 10 writes a second to both, for 10.5 s; meanwhile the compaction revisions are
    // sampled.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (mut ce, mut cs, stop) = (ce.clone(), cs.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut seen_e, mut seen_s) = (vec![0i64], vec![0i64]);
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let (e, s) = tokio::join!(compact_revision(&mut ce), compact_revision(&mut cs));
                if e != *seen_e.last().expect("non-empty") {
                    seen_e.push(e);
                }
                if s != *seen_s.last().expect("non-empty") {
                    seen_s.push(s);
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            (seen_e, seen_s)
        })
    };
    let start = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
    let mut i = 0u32;
    while start.elapsed() < std::time::Duration::from_millis(10_500) {
        tick.tick().await;
        let (a, b) = tokio::join!(
            ce.put(format!("k{}", i % 10), "v", None),
            cs.put(format!("k{}", i % 10), "v", None)
        );
        a.expect("etcd put");
        b.expect("skiff put");
        i += 1;
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (seen_e, seen_s) = sampler.await.expect("sampler");
    eprintln!("compaction revisions: etcd {seen_e:?}, skiff {seen_s:?} ({i} writes)");
    drop((etcd, skiff));
    // Retention 3 s: compactions near 3, 6 and 9 s after start, each keeping ~3 s of
    // writes (~30 revisions).
    assert!(
        seen_e.len() >= 3,
        "etcd compacted at least twice: {seen_e:?}"
    );
    assert!(
        seen_s.len().abs_diff(seen_e.len()) <= 1,
        "as many compactions: etcd {seen_e:?}, skiff {seen_s:?}"
    );
    for (e, s) in seen_e.iter().zip(&seen_s).skip(1) {
        assert!(
            (e - s).abs() <= 10,
            "compaction revisions within 1 s of writes: etcd {seen_e:?}, skiff {seen_s:?}"
        );
    }
}
