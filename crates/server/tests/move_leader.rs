//! `etcdctl move-leader` against a 3-member etcd 3.4 and a 3-member Skiff, the
//! transcripts compared after masking member IDs and ports: leadership handed to a
//! follower (and the follower then leads), a target that is no member refused with
//! etcd's error, etcdctl's own refusal when no endpoint given is the leader, and
//! leadership handed back with the endpoints written as `host:port`.
//! Ports 28100-28111 belong to this file.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{cluster_members, have};
use etcd_client::Client;
use regex::Regex;

fn etcdctl(endpoints: &str, args: &[&str]) -> String {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .arg("--command-timeout=10s")
        .args(args)
        .output()
        .unwrap();
    format!(
        "{}{}[exit {}]",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        out.status.code().unwrap_or(-1)
    )
}

/// (leader, every member's ID), asking member `url`.
async fn ids(url: &str) -> (u64, Vec<u64>) {
    let mut c = Client::connect([url], None).await.unwrap();
    let status = c.status().await.unwrap();
    let members = c.member_list().await.unwrap();
    (
        status.leader(),
        members.members().iter().map(|m| m.id()).collect(),
    )
}

/// Whether member `url` names `want` as the leader within 3 s. etcdctl's "Leadership
/// transferred" means the old leader saw the new one; a third member learns of it from
/// the new leader's first message, which a loaded machine can delay past an immediate
/// question. A leadership that moved elsewhere still fails: nothing moves it back.
async fn leads_within(url: &str, want: u64) -> bool {
    for _ in 0..60 {
        if ids(url).await.0 == want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

async fn transcript(bin: &Path, base_port: u16) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut members = cluster_members(bin, 3, base_port, dir.path(), &[]);
    for m in members.iter_mut() {
        m.spawn();
    }
    for m in members.iter_mut() {
        m.wait_serving(Duration::from_secs(30));
    }
    let urls: Vec<String> = members.iter().map(|m| m.url()).collect();
    let all = urls.join(",");
    let mut leader = 0;
    let mut member_ids = Vec::new();
    for _ in 0..50 {
        (leader, member_ids) = ids(&urls[0]).await;
        if leader != 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let target = *member_ids.iter().find(|id| **id != leader).unwrap();
    let mut out = String::new();
    let hex = format!("{target:x}");
    out.push_str(&etcdctl(&all, &["move-leader", &hex]));
    out.push('\n');
    let led = leads_within(&urls[0], target).await;
    out.push_str(&format!("the target leads: {led}\n"));
    // A target that is not a member.
    out.push_str(&etcdctl(&all, &["move-leader", "1234"]));
    out.push('\n');
    // Only a follower as endpoint: etcdctl finds no leader to ask.
    let mut follower_url = String::new();
    // The old leader is a follower now.
    for u in &urls {
        let (l, _) = ids(u).await;
        let mut c = Client::connect([u.as_str()], None).await.unwrap();
        let me = c.status().await.unwrap().header().unwrap().member_id();
        if me != l {
            follower_url = u.clone();
            break;
        }
    }
    out.push_str(&etcdctl(&follower_url, &["move-leader", &hex]));
    out.push('\n');
    // Back to the first leader, every endpoint written as host:port (no scheme).
    let bare = all.replace("http://", "");
    out.push_str(&etcdctl(&bare, &["move-leader", &format!("{leader:x}")]));
    out.push('\n');
    let led = leads_within(&urls[0], leader).await;
    out.push_str(&format!("the first leader leads again: {led}\n"));
    drop(members);
    let masks = [
        (r"\b[0-9a-f]{14,16}\b", "ID"),
        (r"127\.0\.0\.1:\d+", "127.0.0.1:PORT"),
        (r#"(?m)^\{"level":"warn".*\n"#, ""),
    ];
    let mut s = out;
    for (re, with) in masks {
        s = Regex::new(re).unwrap().replace_all(&s, with).into_owned();
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn move_leader_matches_etcd() {
    if !have("etcd") || !have("etcdctl") {
        eprintln!("note: etcd/etcdctl not installed; skipped");
        return;
    }
    let skiff = transcript(Path::new(env!("CARGO_BIN_EXE_skiff")), 28100).await;
    println!("skiff:\n{skiff}");
    assert!(
        skiff.contains("Leadership transferred from ID to ID"),
        "{skiff}"
    );
    assert!(skiff.contains("the target leads: true"), "{skiff}");
    let etcd = transcript(Path::new("etcd"), 28106).await;
    println!("etcd 3.4:\n{etcd}");
    assert_eq!(skiff, etcd, "move-leader transcripts differ");
}
