//! The v2 store etcd 3.4 keeps in its `.snap` files, as `etcdctl snapshot restore`
//! leaves it for a new cluster: a store holding only the initial members, written as Go's
//! `encoding/json` writes etcd's `v2store` types (struct fields in declaration order, map
//! keys sorted, strings escaped as Go escapes them).
//!
//! What the restore does to a new store, and what the JSON therefore holds: for each
//! member in ID order (the i-th at store index i), a create of
//! `/0/members/<id hex>/raftAttributes` holding `{"peerURLs":[...]}`, which creates the
//! directories on the way at that index; the watcher hub's event history (a ring of 1000)
//! records each create; the stats count the creates; `/1` (the v2 keys) is an empty
//! directory. Member names are not in it: a restored etcd member learns them when each
//! member publishes its attributes.
//!
//! Guarantees: a pure function of the members; byte-identical to what etcd 3.4.23's
//! restore writes for the same members (checked against etcdctl in
//! `tests/skiffctl_restore_etcd.rs`).

use std::collections::BTreeMap;

use crate::gateway::encode::push_string;

/// etcd's `Permanent` expire time, as Go's `time.Time` zero value marshals.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// The event history's capacity (etcd's `newWatchHub(1000)`).
const HISTORY: usize = 1000;

/// One member of the new cluster.
pub struct StoreMember<'a> {
    pub id: u64,
    /// Sorted, as etcd keeps them.
    pub peer_urls: &'a [String],
}

/// `{"peerURLs":[...]}`: etcd's `RaftAttributes` JSON (never a learner here).
pub fn raft_attributes(peer_urls: &[String]) -> String {
    let mut out = String::from("{\"peerURLs\":");
    push_strings(&mut out, peer_urls);
    out.push('}');
    out
}

/// `{"id":N,"peerURLs":[...],"name":"..."}`: etcd's `Member` JSON for a member not yet
/// started (no client URLs), what the ConfChange context and the backend carry.
pub fn member_json(id: u64, peer_urls: &[String], name: &str) -> String {
    let mut out = format!("{{\"id\":{id},\"peerURLs\":");
    push_strings(&mut out, peer_urls);
    if !name.is_empty() {
        out.push_str(",\"name\":");
        push_string(&mut out, name);
    }
    out.push('}');
    out
}

fn push_strings(out: &mut String, items: &[String]) {
    out.push('[');
    for (i, s) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_string(out, s);
    }
    out.push(']');
}

/// A `node`: `children` is `None` for a key (Go's nil map), `Some` for a directory.
fn node(
    path: &str,
    index: u64,
    value: &str,
    children: Option<&BTreeMap<String, String>>,
) -> String {
    let mut out = String::from("{\"Path\":");
    push_string(&mut out, path);
    out.push_str(&format!(
        ",\"CreatedIndex\":{index},\"ModifiedIndex\":{index},\"ExpireTime\":\"{ZERO_TIME}\",\"Value\":"
    ));
    push_string(&mut out, value);
    out.push_str(",\"Children\":");
    match children {
        None => out.push_str("null"),
        Some(c) => {
            out.push('{');
            for (i, (k, v)) in c.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_string(&mut out, k);
                out.push(':');
                out.push_str(v);
            }
            out.push('}');
        }
    }
    out.push('}');
    out
}

/// The store's JSON (`store.Save()`) after adding `members` (in any order).
pub fn store_json(members: &[StoreMember<'_>]) -> String {
    let mut sorted: Vec<&StoreMember<'_>> = members.iter().collect();
    sorted.sort_by_key(|m| m.id);
    let n = sorted.len();
    let mut member_dirs = BTreeMap::new();
    let mut events = Vec::with_capacity(n);
    for (i, m) in sorted.iter().enumerate() {
        let index = i as u64 + 1;
        let hex = format!("{:x}", m.id);
        let dir = format!("/0/members/{hex}");
        let key = format!("{dir}/raftAttributes");
        let value = raft_attributes(m.peer_urls);
        let leaf = node(&key, index, &value, None);
        let attrs = BTreeMap::from([("raftAttributes".to_string(), leaf)]);
        member_dirs.insert(hex, node(&dir, index, "", Some(&attrs)));
        let mut ev = String::from("{\"action\":\"create\",\"node\":{\"key\":");
        push_string(&mut ev, &key);
        ev.push_str(",\"value\":");
        push_string(&mut ev, &value);
        ev.push_str(&format!(
            ",\"modifiedIndex\":{index},\"createdIndex\":{index}}}}}"
        ));
        events.push(ev);
    }
    let mut cluster = BTreeMap::new();
    if n > 0 {
        cluster.insert(
            "members".to_string(),
            node("/0/members", 1, "", Some(&member_dirs)),
        );
    }
    let root_children = BTreeMap::from([
        ("0".to_string(), node("/0", 0, "", Some(&cluster))),
        ("1".to_string(), node("/1", 0, "", Some(&BTreeMap::new()))),
    ]);
    let root = node("/", 0, "", Some(&root_children));

    // The event history ring: event i at slot (i - 1) % 1000.
    let mut ring: Vec<Option<&str>> = vec![None; HISTORY];
    for (i, ev) in events.iter().enumerate() {
        ring[i % HISTORY] = Some(ev);
    }
    let size = n.min(HISTORY);
    let back = n % HISTORY;
    let front = if n > HISTORY { n % HISTORY } else { 0 };
    let start = if n == 0 { 0 } else { (n - size) as u64 + 1 };
    let slots: Vec<&str> = ring.iter().map(|e| e.unwrap_or("null")).collect();
    format!(
        "{{\"Root\":{root},\"WatcherHub\":{{\"EventHistory\":{{\"Queue\":{{\"Events\":[{}],\
         \"Size\":{size},\"Front\":{front},\"Back\":{back},\"Capacity\":{HISTORY}}},\
         \"StartIndex\":{start},\"LastIndex\":{n}}}}},\"CurrentIndex\":{n},\"Stats\":{{\
         \"getsSuccess\":0,\"getsFail\":0,\"setsSuccess\":0,\"setsFail\":0,\
         \"deleteSuccess\":0,\"deleteFail\":0,\"updateSuccess\":0,\"updateFail\":0,\
         \"createSuccess\":{n},\"createFail\":0,\"compareAndSwapSuccess\":0,\
         \"compareAndSwapFail\":0,\"compareAndDeleteSuccess\":0,\"compareAndDeleteFail\":0,\
         \"expireCount\":0,\"watchers\":0}},\"CurrentVersion\":2}}",
        slots.join(",")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What etcdctl 3.4.23 wrote restoring a snapshot as member `m1` on
    /// `http://127.0.0.1:29961` (token `etcd-cluster`), the 999 empty slots elided.
    #[test]
    fn one_member_store_is_etcds() {
        let urls = vec!["http://127.0.0.1:29961".to_string()];
        let id = 0x380d_cc14_2d5e_c290;
        let got = store_json(&[StoreMember {
            id,
            peer_urls: &urls,
        }]);
        let nulls = vec!["null"; 999].join(",");
        let want = format!(
            r#"{{"Root":{{"Path":"/","CreatedIndex":0,"ModifiedIndex":0,"ExpireTime":"0001-01-01T00:00:00Z","Value":"","Children":{{"0":{{"Path":"/0","CreatedIndex":0,"ModifiedIndex":0,"ExpireTime":"0001-01-01T00:00:00Z","Value":"","Children":{{"members":{{"Path":"/0/members","CreatedIndex":1,"ModifiedIndex":1,"ExpireTime":"0001-01-01T00:00:00Z","Value":"","Children":{{"380dcc142d5ec290":{{"Path":"/0/members/380dcc142d5ec290","CreatedIndex":1,"ModifiedIndex":1,"ExpireTime":"0001-01-01T00:00:00Z","Value":"","Children":{{"raftAttributes":{{"Path":"/0/members/380dcc142d5ec290/raftAttributes","CreatedIndex":1,"ModifiedIndex":1,"ExpireTime":"0001-01-01T00:00:00Z","Value":"{{\"peerURLs\":[\"http://127.0.0.1:29961\"]}}","Children":null}}}}}}}}}}}}}},"1":{{"Path":"/1","CreatedIndex":0,"ModifiedIndex":0,"ExpireTime":"0001-01-01T00:00:00Z","Value":"","Children":{{}}}}}}}},"WatcherHub":{{"EventHistory":{{"Queue":{{"Events":[{{"action":"create","node":{{"key":"/0/members/380dcc142d5ec290/raftAttributes","value":"{{\"peerURLs\":[\"http://127.0.0.1:29961\"]}}","modifiedIndex":1,"createdIndex":1}}}},{nulls}],"Size":1,"Front":0,"Back":1,"Capacity":1000}},"StartIndex":1,"LastIndex":1}}}},"CurrentIndex":1,"Stats":{{"getsSuccess":0,"getsFail":0,"setsSuccess":0,"setsFail":0,"deleteSuccess":0,"deleteFail":0,"updateSuccess":0,"updateFail":0,"createSuccess":1,"createFail":0,"compareAndSwapSuccess":0,"compareAndSwapFail":0,"compareAndDeleteSuccess":0,"compareAndDeleteFail":0,"expireCount":0,"watchers":0}},"CurrentVersion":2}}"#
        );
        assert_eq!(got, want);
    }

    #[test]
    fn member_json_is_etcds_and_escapes_as_go() {
        let urls = vec!["http://127.0.0.1:29961".to_string()];
        assert_eq!(
            member_json(4039108827853800080, &urls, "m1"),
            r#"{"id":4039108827853800080,"peerURLs":["http://127.0.0.1:29961"],"name":"m1"}"#
        );
        assert_eq!(
            member_json(1, &["http://h:1/?a&b".to_string()], "<x>"),
            r#"{"id":1,"peerURLs":["http://h:1/?a\u0026b"],"name":"\u003cx\u003e"}"#
        );
    }

    #[test]
    fn members_are_indexed_by_id_and_listed_by_hex_string() {
        let a = vec!["http://a:1".to_string()];
        let b = vec!["http://b:1".to_string()];
        // 0xf < 0xa0 numerically, "a0" < "f" as strings.
        let json = store_json(&[
            StoreMember {
                id: 0xa0,
                peer_urls: &a,
            },
            StoreMember {
                id: 0xf,
                peer_urls: &b,
            },
        ]);
        assert!(json.contains(r#""Children":{"a0":{"Path":"/0/members/a0","CreatedIndex":2"#));
        assert!(json.contains(r#"},"f":{"Path":"/0/members/f","CreatedIndex":1"#));
        assert!(json.contains(
            r#""Size":2,"Front":0,"Back":2,"Capacity":1000},"StartIndex":1,"LastIndex":2}"#
        ));
        assert!(json.contains(r#""CurrentIndex":2,"#) && json.contains(r#""createSuccess":2,"#));
    }
}
