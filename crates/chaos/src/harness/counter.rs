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
//! Every read and txn is recorded in the history like the other workloads' (the
//! linearizability and watch checkers see them); each written value is unique in the
//! run (`<count>:c<client>-<seq>`), as the checkers require. New increments start only
//! before the deadline; the one in progress is finished (bounded by `finish_by`) so that
//! the tally is exact, and one that cannot finish is counted as unresolved.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::Client;

use skiff_chaos::history::{Request, Response};

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
) {
    let mut me = Counter {
        id,
        member,
        endpoint: &endpoint,
        incarnations: &incarnations,
        rec: &rec,
        spec: &spec,
        seq: 0,
        client: None,
    };
    while Instant::now() < spec.deadline {
        if me.increment(&tally, finish_by).await {
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
