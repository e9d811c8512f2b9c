//! Membership survives restarts, as in etcd 3.4, which persists every member (ID, peer
//! URLs, and the name and client URLs it published) in its backend.
//!
//! A 3-member cluster is started, restarted as a whole (SIGTERM to each PID, then the
//! same flags again), stopped and started with only two members, then given its third
//! back and restarted one member at a time. After every step each running member is
//! asked `etcdctl member list -w json` (endpoints alternately as `127.0.0.1:port` and
//! `http://127.0.0.1:port`, as users write both); with the header's cluster ID, member
//! ID, term and revision masked, every answer must equal the first one: in particular a
//! stopped member keeps its name and client URLs. Skiff's answers must also equal etcd's
//! byte for byte: both servers run on the same ports with the same (default) cluster
//! token, so the member IDs, which Skiff derives as etcd does, and their order match.
//!
//! Ports 27300-27305 belong to this file. Needs `etcd` and `etcdctl` 3.4 (Debian's
//! etcd-server / etcd-client, installed by .ci/run); without them (and not under CI) the
//! tests say so and check nothing.

use crate::common;

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{cluster_members, have, Member};
use regex::Regex;

const BASE_PORT: u16 = 27300;

/// Short Raft timings (both servers take these flags) keep the restarts quick.
const TIMING: &[&str] = &["--heartbeat-interval", "50", "--election-timeout", "500"];

const START_WITHIN: Duration = Duration::from_secs(20);
const STOP_WITHIN: Duration = Duration::from_secs(10);

/// How long an answer that differs from the reference is asked again before it counts
/// (a member that just restarted may still be applying its log).
const SETTLE: Duration = Duration::from_secs(2);

/// One `member list -w json` answer, masked.
#[derive(Clone)]
struct Answer {
    step: String,
    endpoint: String,
    json: String,
}

/// Serializes the clusters of this file (they share ports; two cores leave no room for
/// two clusters at once) and keeps etcd's answers, which both tests need.
static ETCD_ANSWERS: Mutex<Option<Vec<Answer>>> = Mutex::new(None);

/// Masks what differs between runs and servers: the header's cluster ID, member ID,
/// term and revision.
fn mask(json: &str) -> String {
    Regex::new(r#""(cluster_id|member_id|raft_term|revision)":\d+"#)
        .expect("valid regex")
        .replace_all(json.trim(), "\"$1\":N")
        .into_owned()
}

/// One line per member, for readable diffs.
fn pretty(json: &str) -> String {
    json.replace("\"members\":[", "\"members\":[\n  ")
        .replace("},{", "},\n  {")
}

/// `etcdctl member list -w json` against `endpoint`, masked; a failure is reported as
/// its exit code and stderr, which no reference equals.
fn member_list(endpoint: &str) -> String {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([
            &format!("--endpoints={endpoint}"),
            "--command-timeout=5s",
            "member",
            "list",
            "-w",
            "json",
        ])
        .output()
        .expect("run etcdctl");
    if out.status.success() {
        mask(&String::from_utf8_lossy(&out.stdout))
    } else {
        format!(
            "etcdctl failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
    }
}

/// Asks `endpoint` until `done` holds of the answer or `within` passes; the last answer.
fn ask_until(endpoint: &str, within: Duration, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + within;
    loop {
        let got = member_list(endpoint);
        if done(&got) || Instant::now() >= deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs the scenario against `bin` and returns every answer, the reference first.
fn run(bin: &Path) -> Vec<Answer> {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut m = cluster_members(bin, 3, BASE_PORT, dir.path(), TIMING);
    let mut answers: Vec<Answer> = Vec::new();
    let mut asked = 0usize;
    // Every running member is asked, in turn without and with a scheme.
    let mut ask_all = |m: &[Member], step: &str, answers: &mut Vec<Answer>| {
        for member in m.iter().filter(|x| x.is_running()) {
            let endpoint = if asked.is_multiple_of(2) {
                member.endpoint()
            } else {
                member.url()
            };
            asked += 1;
            let json = match answers.first() {
                // A fresh member serves before every peer's name and client URLs are
                // applied everywhere: wait until the list is complete.
                None => ask_until(&endpoint, START_WITHIN, |a| {
                    a.matches("\"name\":\"m").count() == 3
                        && a.matches("\"clientURLs\":[\"http").count() == 3
                }),
                Some(reference) => {
                    let want = reference.json.clone();
                    ask_until(&endpoint, SETTLE, move |a| a == want)
                }
            };
            answers.push(Answer {
                step: step.to_string(),
                endpoint,
                json,
            });
        }
    };
    let began = Instant::now();
    let mut timings = Vec::new();
    let mut lap = |step: &str| timings.push(format!("{step} at {:.1?}", began.elapsed()));
    let start = |m: &mut [Member], which: &[usize]| {
        for &i in which {
            m[i].spawn();
        }
        for &i in which {
            m[i].wait_serving(START_WITHIN);
        }
    };

    // 1. A fresh cluster: the reference.
    start(&mut m, &[0, 1, 2]);
    ask_all(&m, "1. fresh cluster", &mut answers);
    lap("1");

    // 2. Every member stopped, then every member started again.
    for x in m.iter_mut() {
        x.terminate(STOP_WITHIN);
    }
    start(&mut m, &[0, 1, 2]);
    ask_all(&m, "2. after restarting all three", &mut answers);
    lap("2");

    // 3. Every member stopped, two started: m2's name and client URLs are only known
    //    from what the others persisted.
    for x in m.iter_mut() {
        x.terminate(STOP_WITHIN);
    }
    start(&mut m, &[0, 1]);
    ask_all(&m, "3. all stopped, m0 and m1 started", &mut answers);
    lap("3");

    // 4. The third back, then a rolling restart.
    start(&mut m, &[2]);
    ask_all(&m, "4. m2 started again", &mut answers);
    for i in 0..3 {
        m[i].terminate(STOP_WITHIN);
        start(&mut m, &[i]);
        ask_all(&m, &format!("4. rolling restart of m{i}"), &mut answers);
    }
    lap("4");
    println!("{}: steps done {}", bin.display(), timings.join(", "));
    answers
}

/// Every answer that differs from `reference`, as a line diff.
fn differences(reference: &str, answers: &[Answer]) -> Vec<String> {
    answers
        .iter()
        .filter(|a| a.json != reference)
        .map(|a| {
            let (want, got) = (pretty(reference), pretty(&a.json));
            let (w, g): (Vec<&str>, Vec<&str>) = (want.lines().collect(), got.lines().collect());
            let mut diff = format!("{}, asked {}:\n", a.step, a.endpoint);
            for i in 0..w.len().max(g.len()) {
                match (w.get(i), g.get(i)) {
                    (Some(x), Some(y)) if x == y => diff.push_str(&format!("    {x}\n")),
                    (x, y) => {
                        if let Some(x) = x {
                            diff.push_str(&format!("  - {x}\n"));
                        }
                        if let Some(y) = y {
                            diff.push_str(&format!("  + {y}\n"));
                        }
                    }
                }
            }
            diff
        })
        .collect()
}

/// etcd's answers, running the scenario against etcd the first time.
fn etcd_answers(cache: &mut Option<Vec<Answer>>) -> Vec<Answer> {
    cache
        .get_or_insert_with(|| {
            let t = Instant::now();
            let answers = run(Path::new("etcd"));
            println!(
                "etcd 3.4: scenario ran in {:?}, {} answers",
                t.elapsed(),
                answers.len()
            );
            answers
        })
        .clone()
}

fn tools_present() -> bool {
    if !have("etcd") || !have("etcdctl") {
        eprintln!("note: etcd/etcdctl not installed; membership restart test skipped");
        return false;
    }
    true
}

/// The scenario's own check, against etcd 3.4: every answer equals the first.
#[test]
fn etcd_keeps_membership_across_restarts() {
    if !tools_present() {
        return;
    }
    let mut cache = ETCD_ANSWERS.lock().unwrap_or_else(|e| e.into_inner());
    let answers = etcd_answers(&mut cache);
    let reference = &answers[0].json;
    let diffs = differences(reference, &answers);
    assert!(
        diffs.is_empty(),
        "etcd's member lists differ from the reference:\n{}",
        diffs.join("\n")
    );
    // The reference names all three members with their client URLs.
    for i in 0..3u16 {
        let member = format!(
            "\"name\":\"m{i}\",\"peerURLs\":[\"http://127.0.0.1:{}\"],\"clientURLs\":[\"http://127.0.0.1:{}\"]",
            BASE_PORT + 2 * i + 1,
            BASE_PORT + 2 * i
        );
        assert!(reference.contains(&member), "{member} not in {reference}");
    }
    println!("reference (every answer):\n{}", pretty(reference));
}

/// Skiff answers as etcd does after every step: its reference equals etcd's byte for
/// byte, and every later answer equals that reference.
#[test]
fn skiff_keeps_membership_across_restarts_like_etcd() {
    if !tools_present() {
        return;
    }
    let mut cache = ETCD_ANSWERS.lock().unwrap_or_else(|e| e.into_inner());
    let etcd = etcd_answers(&mut cache);
    let t = Instant::now();
    let skiff = run(Path::new(env!("CARGO_BIN_EXE_skiff")));
    println!(
        "skiff: scenario ran in {:?}, {} answers",
        t.elapsed(),
        skiff.len()
    );
    assert_eq!(
        skiff.len(),
        etcd.len(),
        "the scenario asks as many questions of both servers"
    );
    let reference = &etcd[0].json;
    let diffs = differences(reference, &skiff);
    assert!(
        diffs.is_empty(),
        "{} of {} Skiff member lists differ from etcd's (- etcd's reference, + Skiff):\n{}",
        diffs.len(),
        skiff.len(),
        diffs.join("\n")
    );
}
