//! The counting workload (`--workload counter`, issue 17): every client adds 1 to one
//! counter, again and again, as an application without exactly-once support must: read
//! the counter, then a txn that writes the value + 1 if the key's mod revision is still
//! the one read. An attempt whose outcome is unknown (a timeout, a connection broken in
//! flight) is retried as a whole (read again, compare-and-put again) until one attempt
//! is known to have succeeded; only then is the increment acknowledged.
//!
//! So the final counter equals the acknowledged increments plus the attempts that took
//! effect although their client never learnt it and added 1 again: the double applies
//! that retried non-idempotent writes cause (etcd-io/etcd #14890). A counter *below* the
//! acknowledged increments is a lost write, which no store may show.
//!
//! With `--sessions` ([`super::session`]) each client opens a Skiff client session and
//! sends its compare-and-put within it: an attempt whose outcome is unknown is sent
//! again with the same seq (and body) until its answer is known, and that answer (the
//! stored one, if the first attempt was applied) decides: succeeded, the increment is
//! acknowledged; compare failed, the client reads again and starts a new increment
//! with a new seq. On Skiff the counter must then equal the acknowledged increments;
//! etcd ignores the metadata, so there a retried compare-and-put that had been applied
//! fails its compare and the increment is made again. All the attempts of one seq are
//! one operation of the history (invoked with the first, completed with the answer);
//! a failed compare answered after unknown attempts is recorded as unknown (etcd may
//! have applied an earlier attempt and failed the retry's compare because of it).
//!
//! Every read and txn is recorded in the history like the other workloads' (the
//! linearizability and watch checkers see them); each written value is unique in the
//! run (`<count>:c<client>-<seq>`), as the checkers require. New increments start only
//! before the deadline; the one in progress is finished (bounded by `finish_by`) so that
//! the tally is exact, and one that cannot finish is counted as unresolved.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::Client;

use skiff_chaos::history::{Op, Outcome, Request, Response};

use super::session::{is_session_error, Session, SessionClient};
use super::workload::{connect, execute, Recorder, WorkloadSpec, PREFIX};

/// The counter's key (under the watched prefix).
pub fn counter_key() -> String {
    format!("{PREFIX}counter")
}

/// The count a written value carries (`<count>:<writer>`; none: 0).
pub fn count_of(value: &str) -> Option<u64> {
    value.split(':').next()?.parse().ok()
}

/// What the counting clients did, summed over all of them.
#[derive(Default)]
pub struct Tally {
    /// Increments some attempt of which is known to have succeeded.
    pub acknowledged: AtomicU64,
    /// Attempts whose outcome stayed unknown (each was followed by a retry).
    pub unknown_attempts: AtomicU64,
    /// Increments abandoned at `finish_by` with no attempt known to have succeeded.
    pub unresolved: AtomicU64,
    /// Sessions the server said were not found (expired or closed) while a seq of
    /// theirs was unanswered: that increment's outcome can no longer be learnt.
    pub sessions_lost: AtomicU64,
}

/// Where one client is.
struct Counter<'a> {
    id: u32,
    member: u32,
    endpoint: &'a str,
    incarnations: &'a [AtomicU32],
    rec: &'a Recorder,
    spec: &'a WorkloadSpec,
    seq: u64,
    client: Option<Client>,
    /// `--sessions`: the session client and the open session.
    sessions: Option<(SessionClient, Option<Session>)>,
}

impl Counter<'_> {
    async fn client(&mut self) -> Option<&mut Client> {
        if self.client.is_none() {
            match connect(self.endpoint, self.spec.op_timeout).await {
                Ok(c) => self.client = Some(c),
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    return None;
                }
            }
        }
        self.client.as_mut()
    }

    async fn send(&mut self, req: Request) -> Option<Response> {
        let (id, member) = (self.id, self.member);
        let inc = self.incarnations[member as usize].load(Ordering::SeqCst);
        let (rec, timeout) = (self.rec, self.spec.op_timeout);
        let c = self.client().await?;
        let r = execute(rec, c, id, member, inc, req, timeout, false).await;
        if r.is_none() {
            // Let a down member come back instead of spinning on errors.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        r
    }

    /// One increment: attempts until one is known to have succeeded (true), or until
    /// `finish_by` (false). Counts the attempts whose outcome stayed unknown.
    async fn increment(&mut self, tally: &Tally, finish_by: Instant) -> bool {
        let key = counter_key();
        while Instant::now() < finish_by {
            let read = self
                .send(Request::Get {
                    key: key.clone(),
                    serializable: false,
                })
                .await;
            let Some(Response::Get { kv, .. }) = read else {
                continue;
            };
            let (count, mod_rev) = match &kv {
                Some(kv) => (count_of(&kv.value).unwrap_or(0), kv.mod_rev),
                None => (0, 0),
            };
            self.seq += 1;
            let cas = Request::Cas {
                key: key.clone(),
                expect_mod_rev: mod_rev,
                value: format!("{}:c{}-{}", count + 1, self.id, self.seq),
            };
            match self.send(cas).await {
                Some(Response::Cas {
                    succeeded: true, ..
                }) => return true,
                // Definitely not applied: someone else incremented first.
                Some(_) => {}
                None => {
                    tally.unknown_attempts.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        false
    }

    fn incarnation(&self) -> u32 {
        self.incarnations[self.member as usize].load(Ordering::SeqCst)
    }

    fn record(&self, invoke: u64, incarnation: u32, req: Request, outcome: Outcome) {
        self.rec.record(Op {
            id: 0,
            client: self.id,
            member: self.member,
            incarnation,
            invoke,
            complete: self.rec.now(),
            req,
            outcome,
        });
    }

    /// The session client's linearizable read of the counter, recorded.
    async fn session_get(&mut self, key: &str) -> Option<Response> {
        let (invoke, inc, timeout) = (self.rec.now(), self.incarnation(), self.spec.op_timeout);
        let (client, _) = self.sessions.as_mut()?;
        let r = tokio::time::timeout(timeout, client.get(key)).await;
        let req = Request::Get {
            key: key.to_string(),
            serializable: false,
        };
        let outcome = match r {
            Ok(Ok(resp)) => Outcome::Ok(resp),
            Ok(Err(e)) => Outcome::Failed(e.to_string()),
            Err(_) => Outcome::Failed("timeout".into()),
        };
        let ok = match &outcome {
            Outcome::Ok(resp) => Some(resp.clone()),
            _ => None,
        };
        self.record(invoke, inc, req, outcome);
        if ok.is_none() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        ok
    }

    /// The open session, opening one if there is none (None: could not, yet).
    async fn session(&mut self) -> Option<Session> {
        let (ttl, timeout) = (self.spec.lease_ttl, self.spec.op_timeout);
        let (client, session) = self.sessions.as_mut()?;
        if session.is_none() {
            match tokio::time::timeout(timeout, client.open(ttl)).await {
                Ok(Ok(s)) => *session = Some(s),
                r => {
                    tracing::debug!(client = self.id, ?r, "opening a session failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    return None;
                }
            }
        }
        session.take()
    }

    /// One increment within a session: read, then the compare-and-put as one seq,
    /// sent again with that seq while its outcome is unknown. True once a known
    /// answer says it succeeded; false at `finish_by`.
    async fn increment_in_session(&mut self, tally: &Tally, finish_by: Instant) -> bool {
        let key = counter_key();
        while Instant::now() < finish_by {
            let Some(mut session) = self.session().await else {
                continue;
            };
            let read = self.session_get(&key).await;
            let Some(Response::Get { kv, .. }) = read else {
                self.put_back(session);
                continue;
            };
            let (count, mod_rev) = match &kv {
                Some(kv) => (count_of(&kv.value).unwrap_or(0), kv.mod_rev),
                None => (0, 0),
            };
            self.seq += 1;
            let value = format!("{}:c{}-{}", count + 1, self.id, self.seq);
            let req = Request::Cas {
                key: key.clone(),
                expect_mod_rev: mod_rev,
                value: value.clone(),
            };
            let seq = session.next();
            let invoke = self.rec.now();
            let timeout = self.spec.op_timeout;
            // Sent until its answer is known (or `finish_by`).
            let mut unknowns = 0;
            let answer = loop {
                if Instant::now() >= finish_by {
                    break None;
                }
                let inc = self.incarnation();
                let Some((client, _)) = self.sessions.as_mut() else {
                    return false;
                };
                let r =
                    tokio::time::timeout(timeout, client.cas(&session, seq, &key, mod_rev, &value))
                        .await;
                match r {
                    // A failed compare after unknown attempts: on Skiff the stored
                    // answer of the one apply, but a server that ignores sessions
                    // (etcd) applied the retry anew, and its compare may have failed
                    // because the earlier attempt had written: the history cannot
                    // claim that attempt wrote nothing.
                    Ok(Ok(Response::Cas {
                        succeeded: false, ..
                    })) if unknowns > 0 => {
                        break Some((inc, Outcome::Unknown("compare failed on a retry".into())))
                    }
                    Ok(Ok(resp)) => break Some((inc, Outcome::Ok(resp))),
                    // Nothing applied for this attempt; but a session closed since
                    // an earlier attempt may have forgotten that one's apply.
                    Ok(Err(status)) if is_session_error(&status) && unknowns == 0 => {
                        break Some((inc, Outcome::Failed(status.to_string())))
                    }
                    Ok(Err(status)) if is_session_error(&status) => {
                        break Some((inc, Outcome::Unknown(status.to_string())))
                    }
                    Ok(Err(_)) | Err(_) => {
                        unknowns += 1;
                        tally.unknown_attempts.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            };
            let Some((inc, outcome)) = answer else {
                let inc = self.incarnation();
                self.record(
                    invoke,
                    inc,
                    req,
                    Outcome::Unknown("no answer by the end of the run".into()),
                );
                self.put_back(session);
                return false;
            };
            session.answered(seq);
            let done = match &outcome {
                Outcome::Ok(Response::Cas { succeeded, .. }) => *succeeded,
                Outcome::Failed(msg) | Outcome::Unknown(msg) => {
                    if msg.contains("session not found") {
                        // Closed or expired: open a new session. (Recorded as
                        // unknown when an earlier attempt's outcome was unknown.)
                        tally.sessions_lost.fetch_add(1, Ordering::Relaxed);
                        self.record(invoke, inc, req, outcome);
                        continue;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    false
                }
                _ => false,
            };
            self.record(invoke, inc, req, outcome);
            self.put_back(session);
            if done {
                return true;
            }
        }
        false
    }

    fn put_back(&mut self, session: Session) {
        if let Some((_, slot)) = self.sessions.as_mut() {
            *slot = Some(session);
        }
    }
}

/// One counting client: increments until the deadline, finishing the last one by
/// `finish_by`.
#[allow(clippy::too_many_arguments)]
pub async fn run_counter_client(
    id: u32,
    member: u32,
    endpoint: String,
    incarnations: Arc<Vec<AtomicU32>>,
    rec: Arc<Recorder>,
    spec: Arc<WorkloadSpec>,
    tally: Arc<Tally>,
    finish_by: Instant,
    sessions: bool,
) {
    let sessions = if sessions {
        match SessionClient::new(&endpoint, spec.op_timeout) {
            Ok(c) => Some((c, None)),
            Err(e) => {
                tracing::error!(client = id, error = %e, "no session client");
                return;
            }
        }
    } else {
        None
    };
    let mut me = Counter {
        id,
        member,
        endpoint: &endpoint,
        incarnations: &incarnations,
        rec: &rec,
        spec: &spec,
        seq: 0,
        client: None,
        sessions,
    };
    while Instant::now() < spec.deadline {
        let acked = if me.sessions.is_some() {
            me.increment_in_session(&tally, finish_by).await
        } else {
            me.increment(&tally, finish_by).await
        };
        if acked {
            tally.acknowledged.fetch_add(1, Ordering::Relaxed);
        } else {
            tally.unresolved.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_is_read_from_the_value() {
        assert_eq!(count_of("17:c3-9"), Some(17));
        assert_eq!(count_of("x:c3-9"), None);
    }
}
