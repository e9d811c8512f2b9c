//! `skiffctl make-mirror` (issue 16) against `etcdctl make-mirror` 3.4.
//!
//! - Mirroring: an etcd 3.4 member and a Skiff member, each in turn the source and the
//!   destination; for each direction the variants no `--prefix`, `--prefix p/`,
//!   `--prefix p/ --dest-prefix m/` and `--prefix p/ --no-dest-prefix` (from Skiff all
//!   but `--prefix p/` alone, which the count run below repeats), run once with
//!   etcdctl and once with skiffctl: keys existing before the start (one outside the
//!   prefix), then while mirroring puts, an overwrite, a delete and a txn (two puts and
//!   a delete in one revision). The destination must reach the source's keys (renamed)
//!   and values; its `get --prefix ''` (keys and values) must be the same after
//!   etcdctl's and skiffctl's runs (read and written by the test through
//!   `etcd-client`, not the skiff-client skiffctl uses), and both CLIs must have printed the same (nothing
//!   within 30 s) on stdout and stderr.
//! - The count line: skiffctl with `SKIFFCTL_MIRROR_REPORT_INTERVAL=200ms` prints the
//!   keys processed (base keys + events), reaching 3 + 6 in the run above.
//! - A source compacted while the base copy runs: both exit 1 with `Error: etcdserver:
//!   mvcc: required revision has been compacted`.
//! - An unreachable destination: both keep running silently, and copy once it starts.
//! - Refusals: a bad flag, a bad flag value, a missing or an extra destination, both
//!   `--dest-prefix` and `--no-dest-prefix`, `--dest-cert` without `--dest-key`: same
//!   stdout (the usage, `etcdctl` read as `skiffctl`), stderr and exit code.
//!
//! Ports 29300-29309 belong to this file. Needs `etcd` and `etcdctl` 3.4 (under `CI`
//! their absence fails the test); `skiffctl` is the binary next to `skiff` (`cargo
//! build -p skiff-ctl` when running this file alone). make-mirror runs until killed:
//! each run is a child process killed by its PID.

use crate::common;
use crate::common::skiffctl;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{have, Kind, Proc};
use etcd_client::{DeleteOptions, GetOptions, Txn, TxnOp};

fn etcdctl() -> PathBuf {
    PathBuf::from("etcdctl")
}

fn command(ctl: &Path) -> Command {
    let mut c = Command::new(ctl);
    for (k, _) in std::env::vars() {
        if k.starts_with("ETCDCTL_") || k == "SKIFFCTL_MIRROR_REPORT_INTERVAL" {
            c.env_remove(k);
        }
    }
    c.env("ETCDCTL_API", "3");
    c
}

/// Runs `ctl` with `args` to its end; (stdout, stderr, exit code).
fn run(ctl: &Path, args: &[&str]) -> (String, String, i32) {
    let out = command(ctl).args(args).output().expect("run the CLI");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.code().unwrap_or(-1),
    )
}

thread_local! {
    /// The test's own client of each member (etcd-client, independent of the
    /// skiff-client that skiffctl is built on), with the runtime it runs on.
    static KV: (tokio::runtime::Runtime, RefCell<HashMap<String, etcd_client::Client>>) = (
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime"),
        RefCell::new(HashMap::new()),
    );
}

/// Runs `f` with the client of `ep` and waits for its answer.
fn kv<T, F>(ep: &str, f: impl FnOnce(etcd_client::Client) -> F) -> T
where
    F: std::future::Future<Output = Result<T, etcd_client::Error>>,
{
    KV.with(|(rt, clients)| {
        let client = clients
            .borrow_mut()
            .entry(ep.to_string())
            .or_insert_with(|| {
                rt.block_on(etcd_client::Client::connect([format!("http://{ep}")], None))
                    .expect("connect")
            })
            .clone();
        rt.block_on(f(client))
            .unwrap_or_else(|e| panic!("call to {ep}: {e}"))
    })
}

fn put(ep: &str, key: &str, value: &str) -> i64 {
    let (key, value) = (key.to_string(), value.to_string());
    kv(ep, |mut c| async move { c.put(key, value, None).await })
        .header()
        .map(|h| h.revision())
        .unwrap_or(0)
}

fn del(ep: &str, key: &str) {
    let key = key.to_string();
    kv(ep, |mut c| async move { c.delete(key, None).await });
}

/// Deletes every key (`del --prefix ''`).
fn clear(ep: &str) {
    kv(ep, |mut c| async move {
        c.delete("", Some(DeleteOptions::new().with_all_keys()))
            .await
    });
}

fn compact(ep: &str, rev: i64) {
    kv(ep, |mut c| async move { c.compact(rev, None).await });
}

/// A txn whose success branch is `ops` (`put <key> <value>` or `del <key>`).
fn txn(ep: &str, ops: &[String]) {
    let ops: Vec<TxnOp> = ops
        .iter()
        .map(|op| match op.split(' ').collect::<Vec<_>>()[..] {
            ["put", k, v] => TxnOp::put(k, v, None),
            ["del", k] => TxnOp::delete(k, None),
            _ => panic!("bad op {op:?}"),
        })
        .collect();
    let resp = kv(
        ep,
        |mut c| async move { c.txn(Txn::new().and_then(ops)).await },
    );
    assert!(resp.succeeded());
}

/// Every key and value on `ep` (`get --prefix ''`).
fn dump(ep: &str) -> BTreeMap<String, String> {
    let resp = kv(ep, |mut c| async move {
        c.get("", Some(GetOptions::new().with_all_keys())).await
    });
    resp.kvs()
        .iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(kv.key()).into_owned(),
                String::from_utf8_lossy(kv.value()).into_owned(),
            )
        })
        .collect()
}

/// Waits until `ep` holds exactly `want`; panics with what it holds after `within`.
fn wait_for(ep: &str, want: &BTreeMap<String, String>, within: Duration, what: &str) {
    let deadline = Instant::now() + within;
    loop {
        let got = dump(ep);
        if &got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {ep} holds {got:?}, wanted {want:?}"
        );
        std::thread::sleep(Duration::from_millis(40));
    }
}

/// A running `make-mirror`.
struct Mirror {
    child: Child,
}

impl Mirror {
    fn start(ctl: &Path, src: &str, args: &[&str], env: &[(&str, &str)]) -> Mirror {
        let child = command(ctl)
            .arg(format!("--endpoints={src}"))
            .arg("make-mirror")
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn make-mirror");
        Mirror { child }
    }

    /// Whether it has exited.
    fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Kills it (by its PID) if still running; (stdout, stderr, exit code or -1).
    fn stop(mut self) -> (String, String, i32) {
        let _ = self.child.kill();
        let status = self.child.wait().expect("wait make-mirror");
        let (mut out, mut err) = (String::new(), String::new());
        if let Some(mut o) = self.child.stdout.take() {
            let _ = o.read_to_string(&mut out);
        }
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        (out, err, status.code().unwrap_or(-1))
    }

    /// Waits for it to exit by itself within `within`.
    fn wait_exit(mut self, within: Duration) -> (String, String, i32) {
        let deadline = Instant::now() + within;
        while !self.exited() {
            assert!(Instant::now() < deadline, "make-mirror did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stop()
    }
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `src`'s keys under `prefix`, with `prefix` replaced by `dest_prefix`.
fn expected(
    src: &BTreeMap<String, String>,
    prefix: &str,
    dest_prefix: &str,
) -> BTreeMap<String, String> {
    src.iter()
        .filter_map(|(k, v)| {
            k.strip_prefix(prefix)
                .map(|rest| (format!("{dest_prefix}{rest}"), v.clone()))
        })
        .collect()
}

/// One mirroring run of `tool` from `src` to `dst` with `flags` (`prefix` mirrored to
/// `dest_prefix`); returns the destination's keys, and what the CLI printed.
fn mirror_run(
    tool: &Path,
    (src, dst): (&str, &str),
    flags: &[&str],
    (prefix, dest_prefix): (&str, &str),
    env: &[(&str, &str)],
) -> (BTreeMap<String, String>, String, String) {
    clear(src);
    clear(dst);
    txn(
        src,
        &[
            "put p/a 1".into(),
            "put p/b 2".into(),
            "put p/c 3".into(),
            "put q/x 9".into(),
        ],
    );
    let args = [flags, &[dst]].concat();
    let m = Mirror::start(tool, src, &args, env);
    let what = format!("{} {args:?} from {src}", tool.display());
    wait_for(
        dst,
        &expected(&dump(src), prefix, dest_prefix),
        Duration::from_secs(10),
        &what,
    );
    put(src, "p/d", "4");
    put(src, "p/a", "1b");
    del(src, "p/b");
    txn(
        src,
        &["put p/e 5".into(), "put p/f 6".into(), "del p/c".into()],
    );
    put(src, "q/y", "8");
    let want = expected(&dump(src), prefix, dest_prefix);
    wait_for(dst, &want, Duration::from_secs(10), &what);
    if !env.is_empty() {
        // Two report intervals after the last event: the count line is final.
        std::thread::sleep(Duration::from_millis(500));
    }
    let (out, err, code) = m.stop();
    assert_eq!(code, -1, "{what} exited by itself:\n{out}{err}");
    (dump(dst), out, err)
}

#[test]
fn make_mirror_matches_etcdctl() {
    if !have("etcd") || !have("etcdctl") {
        eprintln!("skipping: etcd/etcdctl not installed");
        return;
    }
    let skiffctl = skiffctl();
    let etcd = Proc::start(Kind::Etcd, "mm-etcd", 29300, 29301, None);
    let skiff = Proc::start(Kind::Skiff, "mm-skiff", 29302, 29303, None);
    let (e, s) = (etcd.endpoint(), skiff.endpoint());

    let variants: [(&[&str], &str, &str); 4] = [
        (&[], "", ""),
        (&["--prefix", "p/"], "p/", "p/"),
        (&["--prefix", "p/", "--dest-prefix", "m/"], "p/", "m/"),
        (&["--prefix", "p/", "--no-dest-prefix"], "p/", ""),
    ];
    for (src, dst) in [(e.as_str(), s.as_str()), (s.as_str(), e.as_str())] {
        for (flags, prefix, dest_prefix) in variants {
            if src == s && flags == ["--prefix", "p/"] {
                // The default destination prefix is run from etcd and in the count run.
                continue;
            }
            let theirs = mirror_run(&etcdctl(), (src, dst), flags, (prefix, dest_prefix), &[]);
            let ours = mirror_run(&skiffctl, (src, dst), flags, (prefix, dest_prefix), &[]);
            assert_eq!(ours, theirs, "{src} -> {dst} with {flags:?}");
        }
    }

    // The count of processed keys, at a test's pace: 3 base keys and 6 events.
    let (_, out, err) = mirror_run(
        &skiffctl,
        (e.as_str(), s.as_str()),
        &["--prefix", "p/"],
        ("p/", "p/"),
        &[("SKIFFCTL_MIRROR_REPORT_INTERVAL", "200ms")],
    );
    assert_eq!(err, "");
    let counts: Vec<i64> = out
        .lines()
        .map(|l| l.parse().unwrap_or_else(|_| panic!("not a count: {l:?}")))
        .collect();
    assert!(counts.len() >= 2, "count lines: {out:?}");
    assert!(counts.windows(2).all(|w| w[0] <= w[1]), "{counts:?}");
    assert_eq!(counts.last(), Some(&9), "{counts:?}");

    compaction_is_an_error(&skiffctl, &e, &s);
    unreachable_destination_is_waited_for(&skiffctl, &e);
    refusals_match(&skiffctl, &e, &s);
}

/// A source compacted past the mirror's revision while its base copy runs: exit 1 with
/// etcd's compaction error, from both CLIs.
fn compaction_is_an_error(skiffctl: &Path, src: &str, dst: &str) {
    const KEYS: usize = 200;
    let mut results = Vec::new();
    for tool in [etcdctl(), skiffctl.to_path_buf()] {
        clear(src);
        clear(dst);
        let ops: Vec<String> = (0..KEYS).map(|i| format!("put c/{i:04} v{i}")).collect();
        for chunk in ops.chunks(100) {
            txn(src, chunk);
        }
        let m = Mirror::start(&tool, src, &["--prefix", "c/", dst], &[]);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if !dump(dst).is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{}: nothing copied",
                tool.display()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        // The watch would start at the revision after the copied one: compact past it.
        put(src, "c/late", "x");
        let rev = put(src, "c/later", "y");
        compact(src, rev);
        let copied = dump(dst).len();
        assert!(
            copied < KEYS,
            "{}: the base copy ended before the compaction; make KEYS larger",
            tool.display()
        );
        results.push(m.wait_exit(Duration::from_secs(15)));
    }
    assert_eq!(
        results[0],
        (
            String::new(),
            "Error: etcdserver: mvcc: required revision has been compacted\n".to_string(),
            1
        )
    );
    assert_eq!(results[1], results[0]);
}

/// Both CLIs wait for a destination that does not answer yet, silently, and copy to it
/// once it starts.
fn unreachable_destination_is_waited_for(skiffctl: &Path, src: &str) {
    clear(src);
    put(src, "u/k", "v");
    let down = "127.0.0.1:29304";
    let theirs = Mirror::start(
        &etcdctl(),
        src,
        &["--prefix", "u/", "--dest-prefix", "e/", down],
        &[],
    );
    let mut ours = Mirror::start(
        skiffctl,
        src,
        &["--prefix", "u/", "--dest-prefix", "s/", down],
        &[],
    );
    std::thread::sleep(Duration::from_millis(1000));
    let late = Proc::start(Kind::Skiff, "mm-late", 29304, 29305, None);
    assert!(
        !ours.exited(),
        "skiffctl gave up on an unreachable destination"
    );
    wait_for(
        &late.endpoint(),
        &map(&[("e/k", "v"), ("s/k", "v")]),
        Duration::from_secs(10),
        "mirroring to a destination that started late",
    );
    let (theirs, ours) = (theirs.stop(), ours.stop());
    assert_eq!(ours, theirs);
    assert_eq!(ours, (String::new(), String::new(), -1));
}

/// Refused command lines: the same stdout, stderr and exit code.
fn refusals_match(skiffctl: &Path, src: &str, dst: &str) {
    let cases: [&[&str]; 8] = [
        &[],
        &["a", "b"],
        &["--bogus", dst],
        &["-x", dst],
        &["--prefix"],
        &["--no-dest-prefix=maybe", dst],
        &["--dest-prefix", "x", "--no-dest-prefix", dst],
        &["--dest-cert", "/nonexistent.pem", dst],
    ];
    let e = format!("--endpoints={src}");
    for args in cases {
        let args = [&[e.as_str(), "make-mirror"][..], args].concat();
        let (out, err, code) = run(&etcdctl(), &args);
        let theirs = (out.replace("etcdctl", "skiffctl"), err, code);
        let ours = run(skiffctl, &args);
        assert_eq!(ours, theirs, "make-mirror {args:?}");
        assert_ne!(ours.2, 0);
    }
}
