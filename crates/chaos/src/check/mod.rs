//! The checkers. [`check`] runs them all over a recorded [`History`] and returns a
//! [`Report`]: the anomalies found, and the checks that could not finish (search budget
//! exhausted). A report passes only with no anomaly and nothing unknown.

pub mod converge;
pub mod linear;
pub mod revision;
pub mod serializable;
pub mod watch;

use serde::Serialize;

use crate::history::History;

/// One violation of a guarantee, with the ops that show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Anomaly {
    /// Which checker found it: linearizability, revision, serializable, watch, replay,
    /// convergence, availability.
    pub checker: &'static str,
    pub message: String,
    /// Ids of the operations involved (for linearizability: a minimal failing
    /// sub-history).
    pub ops: Vec<u64>,
}

impl Anomaly {
    pub fn new(checker: &'static str, message: String, ops: Vec<u64>) -> Self {
        Anomaly {
            checker,
            message,
            ops,
        }
    }
}

/// What to check and how hard.
#[derive(Debug, Clone)]
pub struct Options {
    /// States the linearizability search may explore per key before answering unknown.
    pub budget: u64,
    /// Members expected to report a HashKV; None skips the convergence check (histories
    /// built by hand have no hashes).
    pub members: Option<usize>,
    /// Report occurrences of known etcd bugs (today etcd #19179: a watch resumed at the
    /// compaction revision misses the deletes at that revision) in `Report::known` instead
    /// of as anomalies. For runs against etcd itself; never for Skiff.
    pub tolerate_known_etcd_bugs: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            budget: 2_000_000,
            members: None,
            tolerate_known_etcd_bugs: false,
        }
    }
}

/// The checkers' findings.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub anomalies: Vec<Anomaly>,
    /// Checks that ran out of budget, described.
    pub unknown: Vec<String>,
    /// Occurrences of known etcd bugs, when tolerated (see `Options`).
    pub known: Vec<String>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.anomalies.is_empty() && self.unknown.is_empty()
    }
    /// `ok`, `fail` or `unknown`, as printed in the summary line.
    pub fn verdict(&self) -> &'static str {
        if !self.anomalies.is_empty() {
            "fail"
        } else if !self.unknown.is_empty() {
            "unknown"
        } else {
            "ok"
        }
    }
}

/// Runs every checker over `history`.
pub fn check(history: &History, opts: &Options) -> Report {
    let mut report = Report::default();
    for k in linear::check(history, opts.budget) {
        match k.verdict {
            linear::Verdict::Ok => {}
            linear::Verdict::Violation => report.anomalies.push(Anomaly::new(
                "linearizability",
                format!(
                    "key {:?}: no linearization of its {} ops; minimal failing sub-history has {} ops",
                    k.key,
                    k.ops,
                    k.minimal.len()
                ),
                k.minimal,
            )),
            linear::Verdict::Unknown => report.unknown.push(format!(
                "linearizability of key {:?} ({} ops): search budget of {} states exhausted",
                k.key, k.ops, opts.budget
            )),
        }
    }
    revision::check(history, &mut report.anomalies);
    serializable::check(history, &mut report.anomalies);
    let log = watch::build_log(history, &mut report.anomalies);
    watch::check(
        history,
        &log,
        opts,
        &mut report.anomalies,
        &mut report.known,
    );
    if let Some(members) = opts.members {
        converge::check(history, members, &mut report.anomalies);
    }
    for m in &history.unavailable {
        report.anomalies.push(Anomaly::new(
            "availability",
            format!("member {m} did not serve a linearizable read after every fault was healed"),
            vec![],
        ));
    }
    report
}
