//! Failpoints: named places in Skiff's code where a test can make the process panic,
//! return an error or pause, chosen at run time through the `SKIFF_FAILPOINTS`
//! environment variable.
//!
//! # Mechanism
//!
//! A call site names a point with [`fail_point!`]:
//!
//! ```ignore
//! skiff_failpoints::fail_point!("apply-entries");
//! skiff_failpoints::fail_point!("backend-commit", |msg| Err(MyError::Injected(msg)));
//! ```
//!
//! Unless this crate's feature `enabled` is on, both forms expand to nothing: release
//! and test builds carry no trace of them (and the crate has no dependencies). The
//! feature is switched on only through `skiff-storage/failpoints` and
//! `skiff-server/failpoints`; the server's feature builds a separate binary,
//! `skiff-failpoints` (`cargo build -p skiff-server --features failpoints --bin
//! skiff-failpoints`), so the normal `skiff` binary never has them.
//!
//! With the feature on, the first hit of any point (or [`init`], which the server calls
//! at start-up so a bad spec exits with status 1 instead of panicking later) parses
//! `SKIFF_FAILPOINTS` once into a process-wide table. Each hit then looks its name up:
//! an unarmed point does nothing. Without the feature, [`init`] fails if
//! `SKIFF_FAILPOINTS` is set to anything, so a test that starts the wrong binary learns
//! it at once instead of injecting nothing.
//!
//! # `SKIFF_FAILPOINTS`
//!
//! ```text
//! spec   := entry (';' entry)*          whitespace around parts is ignored
//! entry  := point '=' [S '+'] [N '*'] action
//!                                       S: the first S hits pass, then it fires;
//!                                       N >= 1: only N hits fire, then off
//! action := 'off'                       do nothing
//!         | 'panic' | 'panic(' msg ')'  panic!, with msg or "failpoint <point> fired"
//!         | 'abort' | 'abort(' msg ')'  msg (or the same default) to stderr, then
//!                                       abort the process: a crash right there in
//!                                       any thread, with no unwinding
//!         | 'error' | 'error(' msg ')'  the point returns an error built from msg
//!         | 'pause(' ms ')'             sleep ms milliseconds, then carry on
//! ```
//!
//! For example `SKIFF_FAILPOINTS='apply-entries=panic;backend-commit=2*pause(2000)'`,
//! or `wal-after-fsync=40+panic` (a crash at the 41st WAL sync).
//! A point may be named once; naming a point that does not exist is an error (a typo
//! would otherwise inject nothing, silently). `error` needs a call site written with a
//! handler (the second macro form); at a point without one it panics, saying so.
//!
//! # Knobs
//!
//! Failpoints builds also read these variables (whole numbers), which make rare
//! write-path events frequent enough for a short test to reach their points; [`init`]
//! refuses a value that is not a number, and builds without the feature refuse them
//! being set at all, as they refuse `SKIFF_FAILPOINTS`:
//!
//! - `SKIFF_FAILPOINTS_WAL_SEGMENT_BYTES`: the WAL's segment size (default 64 MiB), so
//!   segments are cut (`wal-segment-cut`) every few hundred entries.
//! - `SKIFF_FAILPOINTS_CATCH_UP_ENTRIES`: the entries a member keeps in memory behind
//!   its snapshot for slow followers (default 5000); a follower further behind gets a
//!   snapshot (`snapshot-install`).
//!
//! # Points
//!
//! This list is the one place the points are documented (a test checks it against
//! [`POINTS`], which is what a spec is checked against):
//!
//! - `apply-entries`: the server's apply thread, at the start of each batch of committed
//!   entries, before any of them is applied. `panic` panics the apply thread with the
//!   batch unapplied (a restart replays it from the WAL); `pause` stalls applies while
//!   raft goes on committing. No handler: `error` panics.
//! - `backend-commit`: inside the storage backend's commit, just before the redb
//!   transaction commits, with the backend's durability lock and whatever locks the
//!   caller (the MVCC store) holds at that moment. `pause` holds a real commit open;
//!   `error` fails the commit with an I/O error (the transaction is dropped, nothing is
//!   written) and, as a real failure, the backend refuses every later commit (a failed
//!   commit is final), which stops the member as a disk failure would; `panic` dies
//!   mid-commit.
//! - `backend-after-commit`: right after that redb commit returned, before the backend
//!   records what it made durable. `panic` dies with the commit on disk.
//! - `wal-before-write`: in the WAL's sync, with the batch's records framed in memory
//!   and not yet written to the segment file. `panic` loses them (none was
//!   acknowledged: acks follow the sync).
//! - `wal-before-fsync`: the records written to the file, before `fdatasync`.
//! - `wal-fsync`: the `fdatasync` itself. `error` makes it fail as a disk would (EIO):
//!   the WAL refuses every later write and the member stops (fsyncgate: a failed fsync
//!   is never retried); `panic` dies there.
//! - `wal-after-fsync`: the batch durable, before the node goes on to acknowledge and
//!   apply it (a crash between the fsync and the apply).
//! - `wal-segment-cut`: cutting a full segment, after the old one is trimmed and synced
//!   and before the next one exists.
//! - `snapshot-save`: a snapshot file written and synced under its `.tmp` name, before
//!   the rename that makes it count.
//! - `snapshot-install`: the apply thread installing a snapshot received from the
//!   leader, after the backend holds the snapshot's data and before the leases, alarms,
//!   members and auth are reloaded from it.
//! - `defrag-swap`: a defragmentation's copy complete and checked, before it is renamed
//!   over the backend file.
//! - `defrag-after-swap`: the copy renamed over the backend file and in use, its last
//!   rows committed without an fsync, before the directory is synced and the copy
//!   committed durably.

mod spec;

pub use spec::{Action, Registry};

/// The environment variable holding the spec.
pub const ENV_VAR: &str = "SKIFF_FAILPOINTS";

/// Whether this build has failpoints compiled in (the `enabled` feature).
pub const ENABLED: bool = cfg!(feature = "enabled");

/// The WAL segment size knob (see "Knobs" in the crate docs).
pub const WAL_SEGMENT_BYTES: &str = "SKIFF_FAILPOINTS_WAL_SEGMENT_BYTES";

/// The catch-up entries knob (see "Knobs" in the crate docs).
pub const CATCH_UP_ENTRIES: &str = "SKIFF_FAILPOINTS_CATCH_UP_ENTRIES";

const KNOBS: &[&str] = &[WAL_SEGMENT_BYTES, CATCH_UP_ENTRIES];

/// A knob's value: `None` when it is not set, or always in a build without failpoints
/// (where [`init`] refuses it being set). A value that is not a whole number is
/// `None` too; [`init`] reports it.
pub fn knob(name: &str) -> Option<u64> {
    if !ENABLED {
        return None;
    }
    std::env::var(name).ok()?.trim().parse().ok()
}

/// Checks that every knob that is set is a whole number (with failpoints) or that none
/// is set (without).
fn check_knobs() -> Result<(), String> {
    for k in KNOBS {
        let Some(v) = std::env::var_os(k) else {
            continue;
        };
        if !ENABLED {
            return Err(format!(
                "{k} is set but this binary was built without failpoints (build the \
                 skiff-failpoints binary: cargo build -p skiff-server --features \
                 failpoints --bin skiff-failpoints)"
            ));
        }
        let ok = v
            .to_str()
            .is_some_and(|s| s.trim().parse::<u64>().is_ok_and(|n| n > 0));
        if !ok {
            return Err(format!("{k}={v:?} is not a whole number above 0"));
        }
    }
    Ok(())
}

/// Every point that exists; documented in the crate docs' "Points" list.
pub const POINTS: &[&str] = &[
    "apply-entries",
    "backend-commit",
    "backend-after-commit",
    "wal-before-write",
    "wal-before-fsync",
    "wal-fsync",
    "wal-after-fsync",
    "wal-segment-cut",
    "snapshot-save",
    "snapshot-install",
    "defrag-swap",
    "defrag-after-swap",
];

/// Reads and checks `SKIFF_FAILPOINTS` and the knobs: the error says what is wrong. With the
/// feature on, the parsed spec is what every point uses from then on (it is parsed once
/// per process); without it, any non-empty value is an error.
pub fn init() -> Result<(), String> {
    check_knobs()?;
    #[cfg(feature = "enabled")]
    {
        armed::registry().map(|_| ())
    }
    #[cfg(not(feature = "enabled"))]
    {
        match std::env::var_os(ENV_VAR) {
            Some(v) if !v.is_empty() => Err(format!(
                "{ENV_VAR} is set but this binary was built without failpoints (build \
                 the skiff-failpoints binary: cargo build -p skiff-server --features \
                 failpoints --bin skiff-failpoints)"
            )),
            _ => Ok(()),
        }
    }
}

/// Parses a spec and checks its point names against [`POINTS`].
#[cfg(any(test, feature = "enabled"))]
fn parse_checked(spec: &str) -> Result<Registry, String> {
    let r = Registry::parse(spec).map_err(|e| format!("{ENV_VAR}: {e}"))?;
    r.check_names(POINTS)
        .map_err(|e| format!("{ENV_VAR}: {e}"))?;
    Ok(r)
}

#[cfg(feature = "enabled")]
mod armed {
    //! The process-wide table, parsed from the environment once.

    use std::sync::OnceLock;

    use super::{parse_checked, Registry, ENV_VAR};

    static REGISTRY: OnceLock<Result<Registry, String>> = OnceLock::new();

    pub(crate) fn registry() -> Result<&'static Registry, String> {
        REGISTRY
            .get_or_init(|| match std::env::var(ENV_VAR) {
                Ok(spec) => parse_checked(&spec),
                Err(std::env::VarError::NotPresent) => Ok(Registry::default()),
                Err(std::env::VarError::NotUnicode(_)) => {
                    Err(format!("{ENV_VAR} is not valid UTF-8"))
                }
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

/// Used by [`fail_point!`]: hits `name` in the process-wide table.
#[cfg(feature = "enabled")]
#[doc(hidden)]
#[track_caller]
pub fn __hit(name: &str) -> Option<String> {
    match armed::registry() {
        Ok(r) => r.hit(name),
        // A test tool: a bad spec must not be mistaken for "nothing armed".
        Err(e) => panic!("{e}"),
    }
}

/// Used by [`fail_point!`]: gives the handler closure its argument type.
#[cfg(feature = "enabled")]
#[doc(hidden)]
pub fn __on_error<R>(handler: impl FnOnce(String) -> R, msg: String) -> R {
    handler(msg)
}

/// Marks a failpoint (see the crate docs).
///
/// `fail_point!("name")` pauses or panics as armed; `fail_point!("name", |msg| expr)`
/// also supports `error`: the enclosing function returns `expr` (built from the
/// message). Expands to nothing unless the `enabled` feature is on.
#[cfg(feature = "enabled")]
#[macro_export]
macro_rules! fail_point {
    ($name:expr) => {
        if let ::std::option::Option::Some(msg) = $crate::__hit($name) {
            ::std::panic!(
                "failpoint {}: `error` is armed but this point has no error handler ({})",
                $name,
                msg
            );
        }
    };
    ($name:expr, $on_error:expr) => {
        if let ::std::option::Option::Some(msg) = $crate::__hit($name) {
            return $crate::__on_error($on_error, msg);
        }
    };
}

/// Marks a failpoint (see the crate docs). This build has the `enabled` feature off,
/// so it expands to nothing.
#[cfg(not(feature = "enabled"))]
#[macro_export]
macro_rules! fail_point {
    ($name:expr) => {};
    ($name:expr, $on_error:expr) => {};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_points_are_the_points() {
        let doc = include_str!("lib.rs");
        let section = doc
            .split("//! # Points")
            .nth(1)
            .expect("the crate docs have a Points section");
        let documented: Vec<&str> = section
            .lines()
            .skip(1)
            .take_while(|l| l.starts_with("//!"))
            .filter_map(|l| l.strip_prefix("//! - `"))
            .filter_map(|l| l.split('`').next())
            .collect();
        assert_eq!(documented, POINTS);
    }

    #[test]
    fn specs_naming_unknown_points_are_refused() {
        let err = parse_checked("apply-entries=off;backend-commmit=panic").unwrap_err();
        assert!(err.starts_with("SKIFF_FAILPOINTS: "), "{err}");
        assert!(err.contains("backend-commmit"), "{err}");
        assert!(parse_checked("apply-entries=panic;backend-commit=pause(5)").is_ok());
        let err = parse_checked("backend-commit=pause").unwrap_err();
        assert!(err.contains("`backend-commit=pause`"), "{err}");
    }

    /// Without the feature the macros must not evaluate anything, not even their
    /// arguments.
    #[cfg(not(feature = "enabled"))]
    #[test]
    fn disabled_points_expand_to_nothing() {
        fn point() -> Result<u32, String> {
            fail_point!(unreachable!("the name is never evaluated"));
            fail_point!("backend-commit", |_msg: String| -> Result<u32, String> {
                unreachable!("the handler is never built")
            });
            Ok(7)
        }
        assert_eq!(point(), Ok(7));
    }
}
