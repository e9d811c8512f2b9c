//! Scripted interaction tests: each file under `tests/scripts/` is a scenario, a list
//! of commands each followed by `----` and the trace it must produce. Run with
//! `UPDATE_GOLDENFILES=1` to rewrite the expected traces after an intended change
//! (then read the diff!).
//!
//! Commands (ids are node ids; `N...` means one or more, none = all nodes):
//! - `add-nodes COUNT [voters=1,2,3] [learners=4] [index=I] [election=T]
//!   [heartbeat=T] [pre-vote=true] [check-quorum=true] [read-only=lease]
//!   [max-uncommitted=B] [max-inflight=K] [max-size-per-msg=B]`
//! - `campaign N`, `propose N DATA`, `propose-conf-change N [transition=auto|implicit|explicit] v4 l5 r3`
//! - `tick N [COUNT]` (ticks, printing role changes), `tick-election N` (one full
//!   randomized election timeout), `tick-heartbeat N`
//! - `process-ready N...`, `deliver-msgs [N...] [drop=N,...]`, `stabilize [N...]`
//! - `partition 1 2 / 3`, `heal`, `crash N`, `restart N`
//! - `read-index N CTX`, `transfer-leader FROM TO`, `compact N INDEX`
//! - `report-unreachable N PEER`, `report-snapshot N PEER ok|fail`
//! - `status N`, `raft-log N`, `raft-state`, `sm N`

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

mod common;

use std::collections::BTreeSet;
use std::fmt::Write;
use std::path::Path;

use common::*;
use skiff_raft::*;

struct Runner {
    c: Cluster,
}

fn parse_ids(s: &str) -> Vec<u64> {
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| p.trim().parse().expect("node id"))
        .collect()
}

impl Runner {
    fn ids(&self, args: &[&str]) -> Vec<u64> {
        let ids: Vec<u64> = args
            .iter()
            .filter(|a| !a.contains('='))
            .map(|a| a.parse().expect("node id"))
            .collect();
        if ids.is_empty() {
            self.c.nodes.keys().copied().collect()
        } else {
            ids
        }
    }

    fn run(&mut self, line: &str) -> String {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let (cmd, args) = (parts[0], &parts[1..]);
        let mut out = String::new();
        match cmd {
            "add-nodes" => self.add_nodes(args, &mut out),
            "campaign" => {
                let id = args[0].parse().unwrap();
                if let Err(e) = self.c.node(id).raw.campaign() {
                    writeln!(out, "error: {e}").unwrap();
                }
                self.state_change(id, &mut out);
            }
            "propose" => {
                let id = args[0].parse().unwrap();
                let data = args[1..].join(" ");
                if let Err(e) = self.c.node(id).raw.propose(data.into_bytes()) {
                    writeln!(out, "error: {e}").unwrap();
                }
            }
            "propose-conf-change" => {
                let id = args[0].parse().unwrap();
                let mut cc = ConfChangeV2::default();
                for a in &args[1..] {
                    if let Some(t) = a.strip_prefix("transition=") {
                        cc.transition = match t {
                            "auto" => ConfChangeTransition::Auto,
                            "implicit" => ConfChangeTransition::Implicit,
                            "explicit" => ConfChangeTransition::Explicit,
                            other => panic!("unknown transition {other}"),
                        };
                        continue;
                    }
                    let (kind, nid) = a.split_at(1);
                    cc.changes.push(ConfChangeSingle {
                        change_type: match kind {
                            "v" => ConfChangeType::AddNode,
                            "l" => ConfChangeType::AddLearnerNode,
                            "r" => ConfChangeType::RemoveNode,
                            other => panic!("unknown change {other}"),
                        },
                        node_id: nid.parse().unwrap(),
                    });
                }
                if let Err(e) = self.c.node(id).raw.propose_conf_change(&cc) {
                    writeln!(out, "error: {e}").unwrap();
                }
            }
            "tick" | "tick-election" | "tick-heartbeat" => {
                let id: u64 = args[0].parse().unwrap();
                let n = match cmd {
                    "tick" => args.get(1).map_or(1, |n| n.parse().unwrap()),
                    "tick-election" => self.c.node(id).raw.raft.randomized_election_timeout(),
                    _ => self.c.node(id).config.heartbeat_tick,
                };
                for _ in 0..n {
                    self.c.node(id).raw.tick();
                    self.state_change(id, &mut out);
                }
            }
            "process-ready" => {
                for id in self.ids(args) {
                    match self.c.process_ready(id) {
                        Some(o) => out.push_str(&fmt_ready(id, &o)),
                        None => writeln!(out, "> {id} no Ready").unwrap(),
                    }
                }
            }
            "deliver-msgs" => {
                let drop: BTreeSet<u64> = args
                    .iter()
                    .find_map(|a| a.strip_prefix("drop="))
                    .map(|d| parse_ids(d).into_iter().collect())
                    .unwrap_or_default();
                for id in self.ids(args) {
                    self.deliver_to(id, &drop, &mut out);
                }
            }
            "stabilize" => {
                let ids = self.ids(args);
                self.stabilize(&ids, &mut out);
            }
            "partition" => {
                let spec = args.join(" ");
                self.c.partitions = spec
                    .split('/')
                    .map(|g| g.split_whitespace().map(|i| i.parse().unwrap()).collect())
                    .collect();
            }
            "heal" => self.c.partitions.clear(),
            "crash" => {
                let id: u64 = args[0].parse().unwrap();
                // In-flight messages to and from a crashed node are lost.
                self.c.down.insert(id);
                self.c.queue.retain(|m| m.to != id && m.from != id);
            }
            "restart" => {
                let id: u64 = args[0].parse().unwrap();
                self.c.down.remove(&id);
                self.c.node(id).restart();
                let n = self.c.node(id);
                let hs = n.raw.raft.hard_state();
                writeln!(
                    out,
                    "INFO {id} restarted: term={} vote={} commit={} applied={} last={}",
                    hs.term,
                    hs.vote,
                    hs.commit,
                    n.raw.raft.raft_log.applied,
                    n.raw.raft.raft_log.last_index()
                )
                .unwrap();
            }
            "read-index" => {
                let id = args[0].parse().unwrap();
                let ctx = args[1].to_string();
                if let Err(e) = self.c.node(id).raw.read_index(ctx.into_bytes()) {
                    writeln!(out, "error: {e}").unwrap();
                }
            }
            "transfer-leader" => {
                let from = args[0].parse().unwrap();
                let to = args[1].parse().unwrap();
                self.c.node(from).raw.transfer_leader(to);
            }
            "compact" => {
                let id = args[0].parse().unwrap();
                let index = args[1].parse().unwrap();
                match self.c.node(id).compact(index) {
                    Ok(()) => {}
                    Err(e) => writeln!(out, "error: {e}").unwrap(),
                }
                self.raft_log(id, &mut out);
            }
            "report-unreachable" => {
                let id = args[0].parse().unwrap();
                let peer = args[1].parse().unwrap();
                self.c.node(id).raw.report_unreachable(peer);
            }
            "report-snapshot" => {
                let id = args[0].parse().unwrap();
                let peer = args[1].parse().unwrap();
                let st = if args[2] == "ok" {
                    SnapshotStatus::Finish
                } else {
                    SnapshotStatus::Failure
                };
                self.c.node(id).raw.report_snapshot(peer, st);
            }
            "status" => {
                let id = args[0].parse().unwrap();
                self.status(id, &mut out);
            }
            "raft-log" => {
                let id = args[0].parse().unwrap();
                self.raft_log(id, &mut out);
            }
            "raft-state" => {
                for (id, n) in &self.c.nodes {
                    let r = &n.raw.raft;
                    let down = if self.c.down.contains(id) {
                        " (down)"
                    } else {
                        ""
                    };
                    writeln!(
                        out,
                        "{id}: {} term={} lead={} commit={}{down}",
                        fmt_role(r.state),
                        r.term,
                        r.leader_id,
                        r.raft_log.committed
                    )
                    .unwrap();
                }
            }
            "load-log" => {
                let id: u64 = args[0].parse().unwrap();
                self.load_log(id, &args[1..], &mut out);
            }
            "sm" => {
                let id = args[0].parse().unwrap();
                let n = self.c.node(id);
                let items: Vec<String> =
                    n.sm.entries
                        .iter()
                        .map(|(i, d)| format!("{i}:{}", String::from_utf8_lossy(d)))
                        .collect();
                writeln!(out, "applied={} [{}]", n.sm.applied_index, items.join(" ")).unwrap();
            }
            other => panic!("unknown command {other:?}"),
        }
        if out.is_empty() {
            out.push_str("ok\n");
        }
        out
    }

    fn add_nodes(&mut self, args: &[&str], out: &mut String) {
        let count: u64 = args[0].parse().unwrap();
        let first = self.c.nodes.keys().max().copied().unwrap_or(0) + 1;
        let new_ids: Vec<u64> = (first..first + count).collect();
        let mut cs = ConfState {
            voters: new_ids.clone(),
            ..Default::default()
        };
        let mut index = 0;
        for a in &args[1..] {
            let (k, v) = a.split_once('=').expect("key=value");
            match k {
                "voters" => cs.voters = parse_ids(v),
                "learners" => cs.learners = parse_ids(v),
                "index" => index = v.parse().unwrap(),
                "election" => self.c.opts.election = v.parse().unwrap(),
                "heartbeat" => self.c.opts.heartbeat = v.parse().unwrap(),
                "pre-vote" => self.c.opts.pre_vote = v == "true",
                "check-quorum" => self.c.opts.check_quorum = v == "true",
                "read-only" => {
                    self.c.opts.read_only = if v == "lease" {
                        ReadOnlyOption::LeaseBased
                    } else {
                        ReadOnlyOption::Safe
                    }
                }
                "max-uncommitted" => self.c.opts.max_uncommitted = v.parse().unwrap(),
                "max-inflight" => self.c.opts.max_inflight = v.parse().unwrap(),
                "max-size-per-msg" => self.c.opts.max_size_per_msg = v.parse().unwrap(),
                other => panic!("unknown add-nodes option {other}"),
            }
        }
        for id in new_ids {
            self.c.add_node(id, cs.clone(), index);
            let mut quiet = String::new();
            LAST_STATE.with(|m| {
                m.borrow_mut()
                    .insert(id, (StateRole::Follower, u64::MAX, 0))
            });
            self.state_change(id, &mut quiet);
            let n = self.c.node(id);
            let r = &n.raw.raft;
            writeln!(
                out,
                "INFO {id} created: term={} commit={} applied={} last={} {}",
                r.term,
                r.raft_log.committed,
                r.raft_log.applied,
                r.raft_log.last_index(),
                fmt_conf_state(&r.prs.conf_state())
            )
            .unwrap();
        }
    }

    /// Replaces a node's durable log and hard state, then restarts it: used to set up
    /// the divergent logs of the paper's figures.
    fn load_log(&mut self, id: u64, args: &[&str], out: &mut String) {
        let mut terms = Vec::new();
        let mut hs = HardState::default();
        for a in args {
            let (k, v) = a.split_once('=').expect("key=value");
            match k {
                "terms" => terms = parse_ids(v),
                "term" => hs.term = v.parse().unwrap(),
                "vote" => hs.vote = v.parse().unwrap(),
                "commit" => hs.commit = v.parse().unwrap(),
                other => panic!("unknown load-log option {other}"),
            }
        }
        self.c.node(id).load_log(&terms, hs);
        self.raft_log(id, out);
    }

    fn state_change(&mut self, id: u64, out: &mut String) {
        // Prints the role/term when it differs from the last printed one.
        let n = self.c.node(id);
        let r = &n.raw.raft;
        let now = (r.state, r.term, r.leader_id);
        let key = id;
        let prev = LAST_STATE.with(|m| m.borrow().get(&key).copied());
        if prev != Some(now) {
            LAST_STATE.with(|m| m.borrow_mut().insert(key, now));
            if prev.is_some() {
                writeln!(
                    out,
                    "INFO {id} is {} at term {} (lead {})",
                    fmt_role(now.0),
                    now.1,
                    now.2
                )
                .unwrap();
            }
        }
    }

    fn deliver_to(&mut self, id: u64, drop: &BTreeSet<u64>, out: &mut String) -> bool {
        let msgs = self.c.take_msgs_to(id);
        if msgs.is_empty() {
            return false;
        }
        for m in msgs {
            if drop.contains(&m.to) || !self.c.connected(m.from, m.to) {
                writeln!(out, "dropped: {}", fmt_msg(&m)).unwrap();
                continue;
            }
            writeln!(out, "{}", fmt_msg(&m)).unwrap();
            if let Err(e) = self.c.deliver(m) {
                writeln!(out, "  error: {e}").unwrap();
            }
        }
        self.state_change(id, out);
        true
    }

    fn stabilize(&mut self, ids: &[u64], out: &mut String) {
        for _ in 0..1000 {
            let mut progressed = false;
            for &id in ids {
                if self.c.down.contains(&id) {
                    continue;
                }
                if let Some(o) = self.c.process_ready(id) {
                    out.push_str(&fmt_ready(id, &o));
                    self.state_change(id, out);
                    progressed = true;
                }
            }
            for &id in ids {
                let pending = self.c.queue.iter().any(|m| m.to == id);
                if pending {
                    writeln!(out, "> {id} receiving messages").unwrap();
                    let mut buf = String::new();
                    self.deliver_to(id, &BTreeSet::new(), &mut buf);
                    for l in buf.lines() {
                        writeln!(out, "  {l}").unwrap();
                    }
                    progressed = true;
                }
            }
            if !progressed {
                return;
            }
        }
        panic!("stabilize did not converge in 1000 rounds");
    }

    fn status(&mut self, id: u64, out: &mut String) {
        let st = self.c.node(id).raw.status();
        writeln!(
            out,
            "{id}: {} term={} vote={} lead={} commit={} applied={}{}",
            fmt_role(st.soft_state.raft_state),
            st.hard_state.term,
            st.hard_state.vote,
            st.soft_state.leader_id,
            st.hard_state.commit,
            st.applied,
            st.lead_transferee
                .map(|t| format!(" transferring-to={t}"))
                .unwrap_or_default()
        )
        .unwrap();
        for (pid, p) in st.progress {
            let learner = if p.is_learner { " learner" } else { "" };
            writeln!(
                out,
                "  {pid}: {:?} match={} next={}{learner}{}",
                p.state,
                p.matched,
                p.next_idx,
                if p.state == skiff_raft::tracker::ProgressState::Snapshot {
                    format!(" pending_snap={}", p.pending_snapshot)
                } else {
                    String::new()
                }
            )
            .unwrap();
        }
    }

    fn raft_log(&mut self, id: u64, out: &mut String) {
        let n = self.c.node(id);
        let log = &n.raw.raft.raft_log;
        writeln!(
            out,
            "first={} last={} committed={} applied={}",
            log.first_index(),
            log.last_index(),
            log.committed,
            log.applied
        )
        .unwrap();
        for e in log.all_entries() {
            writeln!(out, "{}", fmt_entry(&e)).unwrap();
        }
    }
}

thread_local! {
    static LAST_STATE: std::cell::RefCell<std::collections::HashMap<u64, (StateRole, u64, u64)>> =
        Default::default();
}

/// One `command ---- output` block of a script.
struct Block {
    comments: Vec<String>,
    command: String,
    expected: String,
}

fn parse_script(text: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut lines = text.lines().peekable();
    let mut comments = Vec::new();
    while let Some(line) = lines.next() {
        if line.trim().is_empty() {
            continue;
        }
        if line.starts_with('#') {
            comments.push(line.to_string());
            continue;
        }
        let command = line.to_string();
        assert_eq!(
            lines.next().map(str::trim),
            Some("----"),
            "expected ---- after {command:?}"
        );
        let mut expected = String::new();
        while let Some(l) = lines.peek() {
            if l.trim().is_empty() {
                break;
            }
            expected.push_str(l);
            expected.push('\n');
            lines.next();
        }
        blocks.push(Block {
            comments: std::mem::take(&mut comments),
            command,
            expected,
        });
    }
    blocks
}

fn run_script(path: &Path) -> Result<(), String> {
    LAST_STATE.with(|m| m.borrow_mut().clear());
    let text = std::fs::read_to_string(path).unwrap();
    let blocks = parse_script(&text);
    let mut runner = Runner {
        c: Cluster::new(NodeOpts::default()),
    };
    let update = std::env::var_os("UPDATE_GOLDENFILES").is_some();
    let mut rewritten = String::new();
    let mut failure = None;
    for b in &blocks {
        let got = runner.run(&b.command);
        for c in &b.comments {
            rewritten.push_str(c);
            rewritten.push('\n');
        }
        write!(rewritten, "{}\n----\n{}\n", b.command, got).unwrap();
        if got != b.expected && failure.is_none() {
            failure = Some(format!(
                "{}: command {:?}\n--- expected\n{}--- got\n{}",
                path.display(),
                b.command,
                b.expected,
                got
            ));
        }
    }
    if update {
        std::fs::write(path, rewritten.trim_end().to_string() + "\n").unwrap();
        return Ok(());
    }
    match failure {
        Some(f) => Err(f),
        None => Ok(()),
    }
}

#[test]
fn scripts() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scripts");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    paths.sort();
    let only = std::env::var("SCRIPT").ok();
    let mut failures = Vec::new();
    let mut ran = 0;
    for p in &paths {
        if let Some(o) = &only {
            if !p.to_string_lossy().contains(o.as_str()) {
                continue;
            }
        }
        ran += 1;
        if let Err(e) = run_script(p) {
            failures.push(e);
        }
    }
    assert!(ran > 0, "no scripts found in {}", dir.display());
    if !failures.is_empty() {
        panic!(
            "{} of {ran} scripts failed (UPDATE_GOLDENFILES=1 rewrites them):\n\n{}",
            failures.len(),
            failures.join("\n")
        );
    }
    println!("{ran} scripts passed");
}
