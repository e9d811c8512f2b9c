//! Raised alarms (etcd's alarm store): which member raised which alarm. Raised and
//! cleared through Raft so every member agrees; persisted in the backend's alarm table
//! with the apply that changed them, so they survive restarts.
//!
//! A raised NOSPACE alarm makes every member refuse, when it applies them, the requests
//! that could grow the database (those whose [`space_cost`] is not zero: puts, txns with
//! a put, lease grants) with `etcdserver: mvcc: database space exceeded`, until an
//! operator disarms it, as etcd's capped applier does.

use std::collections::BTreeSet;

use skiff_api::EtcdError;
use skiff_proto::etcdserverpb::{AlarmMember, AlarmType};
use skiff_proto::skiffpb::internal_request::Request as Req;

/// etcd 3.4's estimate of what a request adds to the backend (`etcdserver/quota.go`):
/// zero for a request that cannot grow it.
pub mod space_cost {
    use skiff_proto::etcdserverpb as pb;

    /// Estimated cost of storing a key's metadata.
    pub const KV_OVERHEAD: u64 = 256;
    /// Estimated cost of storing a lease (what a grant costs).
    pub const LEASE_OVERHEAD: u64 = 64;

    pub fn put(p: &pb::PutRequest) -> u64 {
        KV_OVERHEAD + p.key.len() as u64 + p.value.len() as u64
    }

    /// The larger of the two branches' puts. Unlike etcd 3.4 (which counts only a
    /// branch's own puts), the puts of nested txns count too, so a nested put cannot
    /// slip past a raised NOSPACE.
    pub fn txn(t: &pb::TxnRequest) -> u64 {
        let branch = |ops: &[pb::RequestOp]| -> u64 {
            ops.iter()
                .map(|op| match &op.request {
                    Some(pb::request_op::Request::RequestPut(p)) => put(p),
                    Some(pb::request_op::Request::RequestTxn(t)) => txn(t),
                    _ => 0,
                })
                .sum()
        };
        branch(&t.success).max(branch(&t.failure))
    }
}

/// The set of raised alarms.
#[derive(Debug, Default, Clone)]
pub struct Alarms {
    raised: BTreeSet<(u64, i32)>,
}

impl Alarms {
    /// The backend key of an alarm: member ID then alarm type, big-endian.
    pub fn key(member: u64, alarm: i32) -> Vec<u8> {
        let mut k = member.to_be_bytes().to_vec();
        k.extend_from_slice(&alarm.to_be_bytes());
        k
    }

    /// The (member ID, alarm type) of a backend key made by [`Alarms::key`]; `None` if
    /// it is not 12 bytes.
    pub fn parse_key(k: &[u8]) -> Option<(u64, i32)> {
        let (Ok(m), Ok(t)) = (
            <[u8; 8]>::try_from(k.get(..8).unwrap_or_default()),
            <[u8; 4]>::try_from(k.get(8..).unwrap_or_default()),
        ) else {
            return None;
        };
        Some((u64::from_be_bytes(m), i32::from_be_bytes(t)))
    }

    /// Rebuilds the set from backend keys; malformed keys are reported.
    pub fn from_keys<'a>(keys: impl IntoIterator<Item = &'a [u8]>) -> Result<Alarms, String> {
        let mut a = Alarms::default();
        for k in keys {
            let alarm = Alarms::parse_key(k).ok_or_else(|| format!("malformed alarm key {k:?}"))?;
            a.raised.insert(alarm);
        }
        Ok(a)
    }

    /// Raises `alarm` for `member`; returns whether it was new. NONE is not an alarm.
    pub fn activate(&mut self, member: u64, alarm: i32) -> bool {
        alarm != AlarmType::None as i32 && self.raised.insert((member, alarm))
    }

    /// Clears `alarm` for `member`; returns whether it was raised.
    pub fn deactivate(&mut self, member: u64, alarm: i32) -> bool {
        self.raised.remove(&(member, alarm))
    }

    /// Raised alarms of type `alarm` (every type for NONE), by member.
    pub fn get(&self, alarm: i32) -> Vec<AlarmMember> {
        self.raised
            .iter()
            .filter(|(_, a)| alarm == AlarmType::None as i32 || *a == alarm)
            .map(|&(member_id, alarm)| AlarmMember { member_id, alarm })
            .collect()
    }

    /// The error `request` is refused with at apply because of a raised alarm (etcd's
    /// corrupt and capped appliers): CORRUPT refuses every KV write, compaction, lease
    /// grant and revoke; NOSPACE what may grow the database (a non-zero space cost).
    pub fn refusal(&self, request: &Req) -> Option<EtcdError> {
        let data = matches!(
            request,
            Req::Put(_)
                | Req::DeleteRange(_)
                | Req::Txn(_)
                | Req::Compaction(_)
                | Req::LeaseGrant(_)
                | Req::LeaseRevoke(_)
        );
        if data && self.is_raised(AlarmType::Corrupt) {
            return Some(EtcdError::Corrupt);
        }
        // The cost (a walk of a whole txn) is worked out only while NOSPACE is raised:
        // the quota layer already priced the request before it was proposed.
        if !self.is_raised(AlarmType::Nospace) {
            return None;
        }
        let cost = match request {
            Req::Put(p) => space_cost::put(p),
            Req::Txn(t) => space_cost::txn(t),
            Req::LeaseGrant(_) => space_cost::LEASE_OVERHEAD,
            _ => 0,
        };
        (cost > 0).then_some(EtcdError::NoSpace)
    }

    pub fn is_raised(&self, alarm: AlarmType) -> bool {
        self.raised.iter().any(|(_, a)| *a == alarm as i32)
    }

    pub fn is_empty(&self) -> bool {
        self.raised.is_empty()
    }

    /// Status `errors` lines, as etcd formats them.
    pub fn describe(&self) -> Vec<String> {
        self.raised
            .iter()
            .map(|&(m, a)| {
                let name = AlarmType::try_from(a)
                    .map(|t| t.as_str_name())
                    .unwrap_or("UNKNOWN");
                format!("memberID:{m} alarm:{name} ")
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn space_costs_are_etcds() {
        use skiff_proto::etcdserverpb as pb;
        let put = |k: &str, v: usize| pb::RequestOp {
            request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                key: k.as_bytes().to_vec().into(),
                value: vec![0; v].into(),
                ..Default::default()
            })),
        };
        let range = pb::RequestOp {
            request: Some(pb::request_op::Request::RequestRange(Default::default())),
        };
        let delete = pb::RequestOp {
            request: Some(pb::request_op::Request::RequestDeleteRange(
                Default::default(),
            )),
        };
        let read_and_delete = pb::TxnRequest {
            success: vec![range.clone()],
            failure: vec![delete],
            ..Default::default()
        };
        assert_eq!(space_cost::txn(&read_and_delete), 0);
        let t = pb::TxnRequest {
            success: vec![put("a", 10), range],
            failure: vec![put("b", 1), put("c", 1)],
            ..Default::default()
        };
        // max(256+1+10, 2*(256+1+1))
        assert_eq!(space_cost::txn(&t), 516);
        let nested = pb::TxnRequest {
            success: vec![pb::RequestOp {
                request: Some(pb::request_op::Request::RequestTxn(t)),
            }],
            ..Default::default()
        };
        assert_eq!(space_cost::txn(&nested), 516);
    }

    #[test]
    fn activate_deactivate_get_and_keys_round_trip() {
        let mut a = Alarms::default();
        assert!(!a.activate(1, AlarmType::None as i32));
        assert!(a.activate(1, AlarmType::Nospace as i32));
        assert!(!a.activate(1, AlarmType::Nospace as i32));
        assert!(a.activate(2, AlarmType::Corrupt as i32));
        assert_eq!(a.get(AlarmType::None as i32).len(), 2);
        assert_eq!(a.get(AlarmType::Corrupt as i32)[0].member_id, 2);
        assert!(a.is_raised(AlarmType::Nospace));
        let keys = [Alarms::key(1, 1), Alarms::key(2, 2)];
        let back = Alarms::from_keys(keys.iter().map(|k| k.as_slice())).unwrap();
        assert_eq!(back.get(0), a.get(0));
        assert!(a.deactivate(1, AlarmType::Nospace as i32));
        assert!(!a.deactivate(1, AlarmType::Nospace as i32));
        assert!(!a.is_raised(AlarmType::Nospace));
        assert!(Alarms::from_keys([&b"short"[..]]).is_err());
    }
}
