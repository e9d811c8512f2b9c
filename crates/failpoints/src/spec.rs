//! The `SKIFF_FAILPOINTS` grammar and the table of armed points it describes.
//!
//! This part is plain code, compiled with or without the `enabled` feature (only the
//! call sites are compiled out), so its tests run in every `cargo test`. It guarantees:
//! a spec either parses completely or is rejected with a message naming the bad entry;
//! a point armed with `N*action` fires exactly `N` times however many threads hit it,
//! and one armed with `S+action` lets exactly its first `S` hits pass;
//! an unarmed name costs one lookup and does nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What an armed point does when hit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Nothing (the same as not naming the point).
    Off,
    /// `panic!` with this message.
    Panic(String),
    /// Make the point return an error built from this message.
    Error(String),
    /// Sleep, then carry on.
    Pause(Duration),
    /// Write this message to stderr and abort the process: a crash at exactly this
    /// spot whatever thread hits it (a panic in a thread whose panics are caught, such
    /// as a blocking task's, would not end the process), with no unwinding.
    Abort(String),
}

/// One armed point: its action, how many hits still pass before it fires, and how
/// many more hits may fire it (`None`: all).
#[derive(Debug)]
struct Armed {
    action: Action,
    skip: AtomicU64,
    remaining: Option<AtomicU64>,
}

/// A parsed spec: point name to action. Hits are counted here, so one `Registry` is
/// meant to live for the whole process (the crate keeps one in a `OnceLock`).
#[derive(Debug, Default)]
pub struct Registry {
    points: HashMap<String, Armed>,
}

impl Registry {
    /// Parses a spec (see the crate docs for the grammar). Any point name is accepted;
    /// [`Registry::check_names`] restricts them to the points that exist.
    pub fn parse(spec: &str) -> Result<Registry, String> {
        let mut points = HashMap::new();
        for entry in spec.split(';').map(str::trim).filter(|e| !e.is_empty()) {
            let (name, action) = entry
                .split_once('=')
                .ok_or_else(|| format!("failpoint entry `{entry}` is not `name=action`"))?;
            let name = name.trim();
            if name.is_empty() || name.contains(char::is_whitespace) {
                return Err(format!("failpoint entry `{entry}` has a bad point name"));
            }
            let (skip, count, action) = parse_action(name, action.trim())
                .map_err(|why| format!("failpoint entry `{entry}`: {why}"))?;
            let armed = Armed {
                action,
                skip: AtomicU64::new(skip),
                remaining: count.map(AtomicU64::new),
            };
            if points.insert(name.to_string(), armed).is_some() {
                return Err(format!("failpoint `{name}` is named twice"));
            }
        }
        Ok(Registry { points })
    }

    /// Fails if the spec names a point not in `known` (a typo would otherwise leave a
    /// test silently not injecting anything).
    pub fn check_names(&self, known: &[&str]) -> Result<(), String> {
        let mut unknown: Vec<&str> = self
            .points
            .keys()
            .map(String::as_str)
            .filter(|n| !known.contains(n))
            .collect();
        if unknown.is_empty() {
            return Ok(());
        }
        unknown.sort_unstable();
        Err(format!(
            "unknown failpoint(s) {}; the points are: {}",
            unknown.join(", "),
            known.join(", ")
        ))
    }

    /// The action `name` is armed with, if any (whatever its remaining count).
    pub fn action(&self, name: &str) -> Option<&Action> {
        self.points.get(name).map(|a| &a.action)
    }

    /// Hits point `name`: does nothing if it is not armed (or its count is used up),
    /// sleeps for `pause`, panics for `panic`, and returns the message for `error`
    /// (the call site turns it into its own error type). A panic reports the caller's
    /// location.
    #[track_caller]
    pub fn hit(&self, name: &str) -> Option<String> {
        let armed = self.points.get(name)?;
        // The first `skip` hits pass (taken one at a time, atomically).
        if armed
            .skip
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return None;
        }
        if let Some(left) = &armed.remaining {
            // Take one hit from the count, atomically, or stay off once it is zero.
            left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .ok()?;
        }
        match &armed.action {
            Action::Off => None,
            Action::Pause(d) => {
                std::thread::sleep(*d);
                None
            }
            Action::Panic(msg) => panic!("{msg}"),
            Action::Error(msg) => Some(msg.clone()),
            Action::Abort(msg) => {
                eprintln!("{msg}");
                std::process::abort()
            }
        }
    }
}

/// Parses `[S+][N*]action` for point `name`: hits to let pass, hits that fire, action.
fn parse_action(name: &str, text: &str) -> Result<(u64, Option<u64>, Action), String> {
    let (skip, text) = match text.split_once('+') {
        Some((s, rest)) if !s.contains('(') => {
            let s: u64 = s
                .trim()
                .parse()
                .map_err(|_| format!("skip `{}` is not a whole number", s.trim()))?;
            (s, rest.trim())
        }
        _ => (0, text),
    };
    let (count, text) = match text.split_once('*') {
        Some((n, rest)) => {
            let n: u64 = n
                .trim()
                .parse()
                .map_err(|_| format!("count `{}` is not a whole number", n.trim()))?;
            if n == 0 {
                return Err("count must be at least 1 (use `off` to disarm)".into());
            }
            (Some(n), rest.trim())
        }
        None => (None, text),
    };
    let (verb, arg) = match text.split_once('(') {
        Some((verb, rest)) => {
            let arg = rest
                .strip_suffix(')')
                .ok_or_else(|| format!("`{text}` has no closing parenthesis"))?;
            (verb.trim(), Some(arg))
        }
        None => (text, None),
    };
    let fired = || format!("failpoint {name} fired");
    let action = match (verb, arg) {
        ("off", None) => Action::Off,
        ("panic", None) => Action::Panic(fired()),
        ("panic", Some(m)) => Action::Panic(m.to_string()),
        ("error", None) => Action::Error(fired()),
        ("abort", None) => Action::Abort(fired()),
        ("abort", Some(m)) => Action::Abort(m.to_string()),
        ("error", Some(m)) => Action::Error(m.to_string()),
        ("pause", Some(ms)) => {
            let ms: u64 = ms
                .trim()
                .parse()
                .map_err(|_| format!("pause needs milliseconds, got `{ms}`"))?;
            Action::Pause(Duration::from_millis(ms))
        }
        ("pause", None) => return Err("pause needs milliseconds: `pause(MS)`".into()),
        ("off", Some(_)) => return Err("`off` takes no argument".into()),
        _ => {
            return Err(format!(
                "unknown action `{verb}` (expected off, panic, panic(msg), abort, \
                 abort(msg), error, error(msg) or pause(ms))"
            ))
        }
    };
    Ok((skip, count, action))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Instant;

    #[test]
    fn parses_every_action_and_count() {
        let r = Registry::parse(
            " a=panic ; b=panic(disk on fire); c=error;d=error(no space);e=pause(25);\
             f=off;g=3*pause(0);h = 2 * error(x) ;i=abort;j=5+abort(gone)",
        )
        .unwrap();
        let fired = |n: &str| format!("failpoint {n} fired");
        assert_eq!(r.action("a"), Some(&Action::Panic(fired("a"))));
        assert_eq!(
            r.action("b"),
            Some(&Action::Panic("disk on fire".to_string()))
        );
        assert_eq!(r.action("c"), Some(&Action::Error(fired("c"))));
        assert_eq!(r.action("d"), Some(&Action::Error("no space".to_string())));
        assert_eq!(
            r.action("e"),
            Some(&Action::Pause(Duration::from_millis(25)))
        );
        assert_eq!(r.action("f"), Some(&Action::Off));
        assert_eq!(r.action("g"), Some(&Action::Pause(Duration::ZERO)));
        assert_eq!(r.action("h"), Some(&Action::Error("x".to_string())));
        assert_eq!(r.action("i"), Some(&Action::Abort(fired("i"))));
        assert_eq!(r.action("j"), Some(&Action::Abort("gone".to_string())));
        assert_eq!(r.action("z"), None);
        assert!(Registry::parse("").unwrap().points.is_empty());
        assert!(Registry::parse(" ; ;").unwrap().points.is_empty());
    }

    #[test]
    fn malformed_specs_are_rejected_with_the_entry() {
        for (spec, needle) in [
            ("apply-entries", "is not `name=action`"),
            ("=panic", "bad point name"),
            ("a b=panic", "bad point name"),
            ("a=explode", "unknown action `explode`"),
            ("a=pause", "pause needs milliseconds"),
            ("a=pause(soon)", "pause needs milliseconds, got `soon`"),
            ("a=panic(oops", "no closing parenthesis"),
            ("a=off(1)", "takes no argument"),
            ("a=x*panic", "count `x` is not a whole number"),
            ("a=0*panic", "count must be at least 1"),
            ("a=panic;a=off", "named twice"),
        ] {
            let err = Registry::parse(spec).unwrap_err();
            assert!(err.contains(needle), "{spec}: {err}");
        }
        let err = Registry::parse("ok=off;a=explode").unwrap_err();
        assert!(err.contains("`a=explode`"), "{err}");
    }

    #[test]
    fn unknown_names_are_reported() {
        let r = Registry::parse("backend-comit=panic;apply-entries=off").unwrap();
        let err = r
            .check_names(&["apply-entries", "backend-commit"])
            .unwrap_err();
        assert!(err.contains("backend-comit"), "{err}");
        assert!(err.contains("apply-entries, backend-commit"), "{err}");
        let r = Registry::parse("backend-commit=panic").unwrap();
        assert_eq!(r.check_names(&["apply-entries", "backend-commit"]), Ok(()));
    }

    #[test]
    fn error_returns_the_message_and_off_or_unarmed_do_nothing() {
        let r = Registry::parse("e=error(disk gone);o=off").unwrap();
        assert_eq!(r.hit("e"), Some("disk gone".to_string()));
        assert_eq!(r.hit("e"), Some("disk gone".to_string()));
        assert_eq!(r.hit("o"), None);
        assert_eq!(r.hit("unarmed"), None);
    }

    #[test]
    fn panic_panics_with_its_message() {
        let r = Registry::parse("p=panic(boom);q=panic").unwrap();
        let err = std::panic::catch_unwind(|| r.hit("p")).unwrap_err();
        assert_eq!(
            err.downcast_ref::<String>().map(String::as_str),
            Some("boom")
        );
        let err = std::panic::catch_unwind(|| r.hit("q")).unwrap_err();
        assert_eq!(
            err.downcast_ref::<String>().map(String::as_str),
            Some("failpoint q fired")
        );
    }

    #[test]
    fn pause_sleeps_then_continues() {
        let r = Registry::parse("s=pause(60)").unwrap();
        let t = Instant::now();
        assert_eq!(r.hit("s"), None);
        assert!(
            t.elapsed() >= Duration::from_millis(60),
            "{:?}",
            t.elapsed()
        );
    }

    #[test]
    fn count_limits_the_hits_that_fire() {
        let r = Registry::parse("e=2*error;p=1*panic").unwrap();
        assert!(r.hit("e").is_some());
        assert!(r.hit("e").is_some());
        assert_eq!(r.hit("e"), None);
        assert_eq!(r.hit("e"), None);
        assert!(std::panic::catch_unwind(|| r.hit("p")).is_err());
        assert_eq!(r.hit("p"), None);
    }

    #[test]
    fn skip_lets_the_first_hits_pass() {
        let r = Registry::parse("e=3+2*error;m=1+error(a+b);n=0+error").unwrap();
        let fired: Vec<bool> = (0..7).map(|_| r.hit("e").is_some()).collect();
        assert_eq!(fired, [false, false, false, true, true, false, false]);
        assert_eq!(r.hit("m"), None);
        assert_eq!(r.hit("m"), Some("a+b".to_string()));
        assert!(r.hit("n").is_some());
        let err = Registry::parse("x=soon+panic").unwrap_err();
        assert!(err.contains("skip `soon` is not a whole number"), "{err}");
    }

    #[test]
    fn count_is_exact_across_threads() {
        let r = Arc::new(Registry::parse("e=100*error").unwrap());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let r = Arc::clone(&r);
                std::thread::spawn(move || (0..1000).filter(|_| r.hit("e").is_some()).count())
            })
            .collect();
        let fired: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(fired, 100);
    }
}
