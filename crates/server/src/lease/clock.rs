//! Lease deadlines, tracked by the leader only, in one task that owns them.
//!
//! [`Deadlines`] is the pure state (time passed in, so tests are deterministic);
//! [`LeaseClock`] runs it as a task fed through a channel: the apply thread reports
//! grants and revokes after they apply, the node loop reports leadership, requests
//! ask for keep-alives, remaining TTLs and the lease list. Nothing here waits for the
//! backend, so a keep-alive is answered while a commit is slow.
//!
//! Guarantees: a lease lives at least its granted TTL after its last keep-alive on
//! the current leader; a follower answers `etcdserver: not leader` to renewals and
//! remaining-TTL questions (the member forwards them); an expired lease (its revoke
//! proposed, not yet applied) is not renewed (etcd: TTL 0); an expired lease is
//! handed out for revocation once, and again only if its revoke has not applied
//! within the retry interval.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use skiff_api::EtcdError;
use tokio::sync::{mpsc, oneshot};

use super::LeaseId;

/// The deadlines of every lease, meaningful on the primary only.
#[derive(Debug)]
pub struct Deadlines {
    /// Granted TTL and, on the primary, when the lease expires.
    leases: BTreeMap<LeaseId, (i64, Option<Instant>)>,
    primary: bool,
    /// How much a new leader extends every lease (one election timeout).
    extend: Duration,
    /// Expired leases handed out for revocation, and when.
    revoking: HashMap<LeaseId, Instant>,
    /// How long before an unapplied revoke is handed out again.
    retry: Duration,
    /// With checkpoints, a follower's view of each lease's deadline (its local time
    /// when the grant or the last checkpoint applied, plus the TTL it carried), which
    /// a new leader resumes from instead of giving every lease its full TTL again.
    known: HashMap<LeaseId, Instant>,
    checkpointing: bool,
}

impl Deadlines {
    pub fn new(extend: Duration, retry: Duration) -> Deadlines {
        Deadlines {
            leases: BTreeMap::new(),
            primary: false,
            extend,
            revoking: HashMap::new(),
            retry,
            known: HashMap::new(),
            checkpointing: false,
        }
    }

    /// Resume leases from checkpoints after a leader change (see [`LeaseClock`]).
    pub fn with_checkpoints(mut self) -> Deadlines {
        self.checkpointing = true;
        self
    }

    /// A checkpoint applied: lease `id` has `remaining` seconds from `now`. A follower
    /// notes the deadline; a leader only ever extends its own with it (a checkpoint the
    /// previous leader committed, and acknowledged, may be applied here only after this
    /// member took over), so a deadline never moves earlier.
    pub fn checkpointed(&mut self, id: LeaseId, remaining: i64, now: Instant) {
        if !self.checkpointing {
            return;
        }
        let deadline = now + secs(remaining);
        match self.leases.get_mut(&id) {
            None => {}
            Some((_, Some(expiry))) if self.primary && deadline > *expiry => {
                *expiry = deadline;
            }
            Some(_) if !self.primary => {
                self.known.insert(id, deadline);
            }
            Some(_) => {}
        }
    }

    /// A grant was applied: on the primary its deadline starts now.
    pub fn granted(&mut self, id: LeaseId, ttl: i64, now: Instant) {
        let expiry = self.primary.then(|| now + secs(ttl));
        self.leases.insert(id, (ttl, expiry));
        if self.checkpointing && !self.primary {
            self.known.insert(id, now + secs(ttl));
        }
    }

    /// A revoke was applied.
    pub fn revoked(&mut self, id: LeaseId) {
        self.leases.remove(&id);
        self.revoking.remove(&id);
        self.known.remove(&id);
    }

    /// The lease set was replaced (start-up, snapshot installed).
    pub fn reset(&mut self, leases: Vec<(LeaseId, i64)>, now: Instant) {
        self.leases.clear();
        self.revoking.clear();
        self.known.clear();
        for (id, ttl) in leases {
            let expiry = self.primary.then(|| now + secs(ttl) + self.extend);
            self.leases.insert(id, (ttl, expiry));
        }
    }

    /// Leadership changed. A new primary resumes each lease at its known deadline
    /// (checkpoints) plus `extend`, or restarts it at `now + ttl + extend` when no
    /// deadline is known; a former primary keeps its deadlines as known ones.
    pub fn set_primary(&mut self, primary: bool, now: Instant) {
        if primary == self.primary {
            return;
        }
        self.primary = primary;
        self.revoking.clear();
        for (id, (ttl, expiry)) in self.leases.iter_mut() {
            if primary {
                let resumed = self.known.get(id).map(|d| *d + self.extend);
                *expiry = Some(resumed.unwrap_or(now + secs(*ttl) + self.extend));
            } else {
                if let (true, Some(at)) = (self.checkpointing, *expiry) {
                    self.known.insert(*id, at);
                }
                *expiry = None;
            }
        }
        if primary {
            self.known.clear();
        }
    }

    /// A keep-alive: restarts the deadline; returns the TTL, or 0 when the lease does
    /// not exist or has expired (etcd's answer).
    pub fn renew(&mut self, id: LeaseId, now: Instant) -> Result<i64, EtcdError> {
        if !self.primary {
            return Err(EtcdError::NotLeader);
        }
        let Some((ttl, expiry)) = self.leases.get_mut(&id) else {
            return Ok(0);
        };
        if expiry.is_some_and(|at| at <= now) {
            return Ok(0);
        }
        *expiry = Some(now + secs(*ttl));
        Ok(*ttl)
    }

    /// (remaining whole seconds, granted TTL), or `None` when the lease does not exist.
    pub fn time_to_live(&self, id: LeaseId, now: Instant) -> Result<Option<(i64, i64)>, EtcdError> {
        if !self.primary {
            return Err(EtcdError::NotLeader);
        }
        Ok(self.leases.get(&id).map(|(ttl, expiry)| {
            let left = match expiry {
                // etcd truncates to whole seconds.
                Some(at) => at.saturating_duration_since(now).as_secs() as i64,
                None => *ttl,
            };
            (left, *ttl)
        }))
    }

    /// Every lease ID, ascending.
    pub fn ids(&self) -> Vec<LeaseId> {
        self.leases.keys().copied().collect()
    }

    /// Expired leases not already handed out recently, ascending by ID; marks them
    /// as handed out.
    pub fn take_expired(&mut self, now: Instant) -> Vec<LeaseId> {
        if !self.primary {
            return Vec::new();
        }
        let retry = self.retry;
        self.revoking
            .retain(|_, at| now.saturating_duration_since(*at) < retry);
        let expired: Vec<LeaseId> = self
            .leases
            .iter()
            .filter(|(id, (_, e))| e.is_some_and(|at| at <= now) && !self.revoking.contains_key(id))
            .map(|(id, _)| *id)
            .collect();
        for id in &expired {
            self.revoking.insert(*id, now);
        }
        expired
    }
}

fn secs(s: i64) -> Duration {
    Duration::from_secs(s.max(0) as u64)
}

/// What the clock task is told or asked.
enum Input {
    Granted(LeaseId, i64),
    Revoked(LeaseId),
    Reset(Vec<(LeaseId, i64)>),
    Primary(bool),
    Checkpointed(LeaseId, i64),
    Renew(LeaseId, oneshot::Sender<Result<i64, EtcdError>>),
    TimeToLive(
        LeaseId,
        oneshot::Sender<Result<Option<(i64, i64)>, EtcdError>>,
    ),
    Ids(oneshot::Sender<Vec<LeaseId>>),
}

/// A handle to the clock task; cheap to clone, usable from any thread.
#[derive(Clone)]
pub struct ClockHandle {
    tx: mpsc::UnboundedSender<Input>,
}

impl ClockHandle {
    /// A grant applied (called by the apply thread before answering the request).
    pub fn granted(&self, id: LeaseId, ttl: i64) {
        let _ = self.tx.send(Input::Granted(id, ttl));
    }

    /// A revoke applied.
    pub fn revoked(&self, id: LeaseId) {
        let _ = self.tx.send(Input::Revoked(id));
    }

    /// The whole lease set was replaced.
    pub fn reset(&self, leases: Vec<(LeaseId, i64)>) {
        let _ = self.tx.send(Input::Reset(leases));
    }

    /// This member became (or stopped being) the leader.
    pub fn set_primary(&self, primary: bool) {
        let _ = self.tx.send(Input::Primary(primary));
    }

    /// A lease checkpoint applied: `id` has `remaining` seconds left.
    pub fn checkpointed(&self, id: LeaseId, remaining: i64) {
        let _ = self.tx.send(Input::Checkpointed(id, remaining));
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Input) -> Result<T, EtcdError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).map_err(|_| EtcdError::Stopped)?;
        rx.await.map_err(|_| EtcdError::Stopped)
    }

    /// A keep-alive (primary only): the TTL, or 0 when the lease is gone.
    pub async fn renew(&self, id: LeaseId) -> Result<i64, EtcdError> {
        self.ask(|tx| Input::Renew(id, tx)).await?
    }

    /// (remaining, granted) TTL (primary only), `None` for an unknown lease.
    pub async fn time_to_live(&self, id: LeaseId) -> Result<Option<(i64, i64)>, EtcdError> {
        self.ask(|tx| Input::TimeToLive(id, tx)).await?
    }

    /// Every lease ID, ascending.
    pub async fn ids(&self) -> Result<Vec<LeaseId>, EtcdError> {
        self.ask(Input::Ids).await
    }
}

/// A renewal the leader made, to be checkpointed through Raft before it is answered.
pub struct Renewal {
    pub id: LeaseId,
    pub ttl: i64,
    pub reply: oneshot::Sender<Result<i64, EtcdError>>,
}

/// The clock task.
pub struct LeaseClock {
    deadlines: Deadlines,
    inputs: mpsc::UnboundedReceiver<Input>,
    expired: mpsc::UnboundedSender<LeaseId>,
    /// With checkpoints: where renewals go to be made durable before their answer.
    renewals: Option<mpsc::UnboundedSender<Renewal>>,
    check_every: Duration,
}

impl LeaseClock {
    /// A clock and its handle; expired leases are sent to `expired`, once per
    /// `retry` at most, for the member to revoke through Raft.
    pub fn new(
        extend: Duration,
        retry: Duration,
        expired: mpsc::UnboundedSender<LeaseId>,
    ) -> (LeaseClock, ClockHandle) {
        let (tx, inputs) = mpsc::unbounded_channel();
        let clock = LeaseClock {
            deadlines: Deadlines::new(extend, retry),
            inputs,
            expired,
            renewals: None,
            check_every: Duration::from_millis(100),
        };
        (clock, ClockHandle { tx })
    }

    /// Lease checkpoints: every renewal is sent to `renewals`, which answers it once a
    /// checkpoint carrying it is committed, and a new leader resumes every lease from
    /// the deadline the checkpoints (and grants) told it, instead of its full TTL.
    pub fn with_checkpoints(mut self, renewals: mpsc::UnboundedSender<Renewal>) -> LeaseClock {
        self.deadlines = std::mem::replace(
            &mut self.deadlines,
            Deadlines::new(Duration::ZERO, Duration::ZERO),
        )
        .with_checkpoints();
        self.renewals = Some(renewals);
        self
    }

    /// Runs until every handle is dropped or the expiry receiver is gone.
    pub async fn run(mut self) {
        let mut tick = tokio::time::interval(self.check_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                input = self.inputs.recv() => {
                    let Some(input) = input else { return };
                    self.handle(input, Instant::now());
                }
                _ = tick.tick() => {
                    for id in self.deadlines.take_expired(Instant::now()) {
                        if self.expired.send(id).is_err() {
                            return;
                        }
                    }
                }
            }
        }
    }

    fn handle(&mut self, input: Input, now: Instant) {
        let d = &mut self.deadlines;
        match input {
            Input::Granted(id, ttl) => d.granted(id, ttl, now),
            Input::Revoked(id) => d.revoked(id),
            Input::Reset(leases) => d.reset(leases, now),
            Input::Primary(p) => d.set_primary(p, now),
            Input::Checkpointed(id, remaining) => d.checkpointed(id, remaining, now),
            Input::Renew(id, reply) => match (d.renew(id, now), &self.renewals) {
                (Ok(ttl), Some(renewals)) if ttl > 0 => {
                    if let Err(e) = renewals.send(Renewal { id, ttl, reply }) {
                        let _ = e.0.reply.send(Err(EtcdError::Stopped));
                    }
                }
                (result, _) => {
                    let _ = reply.send(result);
                }
            },
            Input::TimeToLive(id, reply) => {
                let _ = reply.send(d.time_to_live(id, now));
            }
            Input::Ids(reply) => {
                let _ = reply.send(d.ids());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn only_the_primary_tracks_deadlines() {
        let t0 = Instant::now();
        let mut d = Deadlines::new(s(1), s(5));
        d.granted(1, 10, t0);
        assert!(d.take_expired(t0 + s(100)).is_empty());
        assert_eq!(d.renew(1, t0).unwrap_err(), EtcdError::NotLeader);
        assert_eq!(d.time_to_live(1, t0).unwrap_err(), EtcdError::NotLeader);

        d.set_primary(true, t0);
        assert_eq!(d.time_to_live(1, t0).unwrap(), Some((11, 10)));
        assert!(d.take_expired(t0 + s(10)).is_empty());
        assert_eq!(d.take_expired(t0 + s(11)), vec![1]);
        // Handed out once; again only after the retry interval.
        assert!(d.take_expired(t0 + s(12)).is_empty());
        assert_eq!(d.take_expired(t0 + s(16)), vec![1]);

        d.set_primary(false, t0 + s(20));
        assert!(d.take_expired(t0 + s(100)).is_empty());
    }

    #[test]
    fn keep_alive_restarts_the_deadline_and_expired_leases_answer_zero() {
        let t0 = Instant::now();
        let mut d = Deadlines::new(Duration::ZERO, s(5));
        d.set_primary(true, t0);
        d.granted(5, 10, t0);
        assert_eq!(d.time_to_live(5, t0 + s(3)).unwrap(), Some((7, 10)));
        assert_eq!(d.renew(5, t0 + s(8)).unwrap(), 10);
        assert!(d.take_expired(t0 + s(17)).is_empty());
        assert_eq!(d.take_expired(t0 + s(18)), vec![5]);
        // Past its deadline a lease is not renewed: its revoke is on the way.
        assert_eq!(d.renew(5, t0 + s(18)).unwrap(), 0);
        assert_eq!(d.renew(6, t0).unwrap(), 0);
        assert_eq!(d.time_to_live(6, t0).unwrap(), None);
        d.revoked(5);
        assert!(d.ids().is_empty());
    }

    #[test]
    fn a_new_leader_extends_every_lease_and_reset_replaces_the_set() {
        let t0 = Instant::now();
        let mut d = Deadlines::new(s(2), s(5));
        d.granted(1, 10, t0);
        d.granted(2, 30, t0);
        d.set_primary(true, t0 + s(50));
        assert_eq!(d.time_to_live(1, t0 + s(50)).unwrap(), Some((12, 10)));
        d.reset(vec![(3, 5)], t0 + s(60));
        assert_eq!(d.ids(), vec![3]);
        assert_eq!(d.time_to_live(3, t0 + s(60)).unwrap(), Some((7, 5)));
    }

    #[test]
    fn with_checkpoints_a_new_leader_resumes_known_deadlines() {
        let t0 = Instant::now();
        let mut d = Deadlines::new(s(1), s(5)).with_checkpoints();
        // A follower learns the deadline from the grant, then from a checkpoint.
        d.granted(1, 20, t0);
        d.granted(2, 20, t0);
        d.checkpointed(2, 20, t0 + s(5));
        // Lease 3 is restored from the backend with no deadline known: full TTL.
        d.reset(vec![(1, 20), (2, 20), (3, 20)], t0);
        d.granted(1, 20, t0);
        d.checkpointed(2, 20, t0 + s(5));
        d.set_primary(true, t0 + s(10));
        assert_eq!(d.time_to_live(1, t0 + s(10)).unwrap(), Some((11, 20)));
        assert_eq!(d.time_to_live(2, t0 + s(10)).unwrap(), Some((16, 20)));
        assert_eq!(d.time_to_live(3, t0 + s(10)).unwrap(), Some((21, 20)));
        // Stepping down keeps this member's deadlines as known ones for the next time.
        d.renew(1, t0 + s(12)).unwrap();
        d.set_primary(false, t0 + s(12));
        d.set_primary(true, t0 + s(13));
        assert_eq!(d.time_to_live(1, t0 + s(13)).unwrap(), Some((20, 20)));
        // A checkpoint the previous leader committed, applied after this member took
        // over, extends the deadline (never shortens it).
        d.checkpointed(1, 20, t0 + s(14));
        assert_eq!(d.time_to_live(1, t0 + s(14)).unwrap(), Some((20, 20)));
        d.checkpointed(1, 1, t0 + s(14));
        assert_eq!(d.time_to_live(1, t0 + s(14)).unwrap(), Some((20, 20)));
        // Without checkpoints every lease restarts at its full TTL.
        let mut plain = Deadlines::new(s(1), s(5));
        plain.granted(1, 20, t0);
        plain.checkpointed(1, 3, t0);
        plain.set_primary(true, t0 + s(10));
        assert_eq!(plain.time_to_live(1, t0 + s(10)).unwrap(), Some((21, 20)));
    }

    #[tokio::test]
    async fn with_checkpoints_renewals_wait_for_the_checkpointer() {
        let (tx, _expired) = mpsc::unbounded_channel();
        let (cp_tx, mut cp_rx) = mpsc::unbounded_channel();
        let (clock, handle) = LeaseClock::new(Duration::ZERO, s(60), tx);
        tokio::spawn(clock.with_checkpoints(cp_tx).run());
        handle.set_primary(true);
        handle.granted(9, 30);
        let renew = tokio::spawn({
            let h = handle.clone();
            async move { h.renew(9).await }
        });
        let r: Renewal = cp_rx.recv().await.unwrap();
        assert_eq!((r.id, r.ttl), (9, 30));
        assert!(!renew.is_finished());
        r.reply.send(Ok(r.ttl)).unwrap();
        assert_eq!(renew.await.unwrap().unwrap(), 30);
        // An unknown lease is answered at once (TTL 0), with nothing to checkpoint.
        assert_eq!(handle.renew(10).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn the_task_answers_and_hands_out_expired_leases() {
        let (tx, mut expired) = mpsc::unbounded_channel();
        let (clock, handle) = LeaseClock::new(Duration::ZERO, s(60), tx);
        tokio::spawn(clock.run());
        handle.granted(7, 1);
        assert_eq!(handle.renew(7).await.unwrap_err(), EtcdError::NotLeader);
        handle.set_primary(true);
        assert_eq!(handle.renew(7).await.unwrap(), 1);
        assert_eq!(handle.ids().await.unwrap(), vec![7]);
        let id = tokio::time::timeout(s(5), expired.recv()).await.unwrap();
        assert_eq!(id, Some(7));
        handle.revoked(7);
        assert_eq!(handle.time_to_live(7).await.unwrap(), None);
    }
}
