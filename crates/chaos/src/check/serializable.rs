//! Serializable-read checks. A serializable read may be stale, but it must
//! - return only values some client wrote (and invoked before the read completed), and
//! - never go back in revision on one connection (one client, one member incarnation).
//!
//! Whether its content is exactly the store at its header revision is checked by the
//! replay checker in `watch`.

use std::collections::HashMap;

use crate::history::{History, Kv, Op, Request, Response};

use super::Anomaly;

fn serializable_read(op: &Op) -> Option<(i64, Vec<&Kv>)> {
    match (&op.req, op.ok()?) {
        (
            Request::Get {
                serializable: true, ..
            },
            Response::Get { rev, kv },
        ) => Some((*rev, kv.iter().collect())),
        (
            Request::Range {
                serializable: true, ..
            },
            Response::Range { rev, kvs },
        ) => Some((*rev, kvs.iter().collect())),
        _ => None,
    }
}

pub fn check(history: &History, out: &mut Vec<Anomaly>) {
    // Earliest invocation of each written (key, value).
    let mut written: HashMap<(&str, &str), u64> = HashMap::new();
    for op in &history.ops {
        let kv = match &op.req {
            Request::Put { key, value, .. } | Request::Cas { key, value, .. } => (key, value),
            _ => continue,
        };
        let t = written.entry((kv.0, kv.1)).or_insert(op.invoke);
        *t = (*t).min(op.invoke);
    }
    let mut last: HashMap<(u32, u32, u32), (i64, u64)> = HashMap::new();
    let mut ops: Vec<&Op> = history.ops.iter().collect();
    ops.sort_by_key(|op| op.invoke);
    for op in ops {
        let Some((rev, kvs)) = serializable_read(op) else {
            continue;
        };
        for kv in kvs {
            match written.get(&(kv.key.as_str(), kv.value.as_str())) {
                Some(t) if *t <= op.complete => {}
                _ => out.push(Anomaly::new(
                    "serializable",
                    format!(
                        "read {} returned {:?}={:?}, which no client had written",
                        op.id, kv.key, kv.value
                    ),
                    vec![op.id],
                )),
            }
        }
        let conn = (op.client, op.member, op.incarnation);
        if let Some((prev, pid)) = last.get(&conn) {
            if rev < *prev {
                out.push(Anomaly::new(
                    "serializable",
                    format!(
                        "read {} on client {} went back to revision {rev} from {prev} on the same connection",
                        op.id, op.client
                    ),
                    vec![*pid, op.id],
                ));
            }
        }
        last.insert(conn, (rev, op.id));
    }
}
