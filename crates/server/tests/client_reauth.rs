//! skiff-client's streams when their token goes bad (issue 16): one Skiff member with
//! authentication on and `--auth-token-ttl 1`, a root user, and three clients with
//! credentials (each holds its own token): a writer, a watcher and a lease keep-alive.
//! - keep-alive: a lease of 9 s is renewed every 3 s, so each renewal comes after the
//!   keep-alive client's token expired (1 s after its last use): Skiff refuses it, and
//!   the keep-alive must authenticate again and renew on a new stream. After 10 s the
//!   lease is alive, renewals went on and the client obtained new tokens.
//! - watch: puts, root's password changed (which drops its tokens; the open stream
//!   goes on), the member restarted (the stream breaks), more puts: the watch is
//!   refused with its old token, authenticates again and re-creates itself from the
//!   last delivered revision + 1, so its revisions are exactly start..=last, each once,
//!   and no error reached the caller.
//!
//! Ports 29890-29891 belong to this file.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::time::{Duration, Instant};

use common::{Kind, Proc};
use skiff_client::proto::etcdserverpb::WatchCreateRequest;
use skiff_client::{prefix_end, Client, ClientOptions, Credentials};

const PORT: u16 = 29890;
const FLAGS: &[&str] = &["--auth-token-ttl", "1", "--bcrypt-cost", "4"];

fn opts(credentials: Option<Credentials>) -> ClientOptions {
    ClientOptions {
        request_timeout: Some(Duration::from_secs(10)),
        credentials,
        ..ClientOptions::default()
    }
}

fn root() -> Option<Credentials> {
    Some(Credentials::new("root", "rootpw"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_and_keep_alive_authenticate_again() {
    let server = Proc::start_with(Kind::Skiff, "reauth", PORT, PORT + 1, None, FLAGS);
    let ep = [server.endpoint()];
    let admin = Client::connect(ep.clone(), opts(None)).unwrap();
    admin.user_add("root", "rootpw", false).await.unwrap();
    admin.role_add("root").await.unwrap();
    admin.user_grant_role("root", "root").await.unwrap();
    admin.auth_enable().await.unwrap();

    let writer = Client::connect(ep.clone(), opts(root())).unwrap();
    let watch_client = Client::connect(ep.clone(), opts(root())).unwrap();
    let ka_client = Client::connect(ep.clone(), opts(root())).unwrap();

    // Keep-alive: every renewal (each 3 s) finds its token expired (1 s).
    let lease = writer.lease_grant(9, 0).await.unwrap();
    let mut keep_alive = ka_client.lease_keep_alive(lease.id);
    let first = tokio::time::timeout(Duration::from_secs(5), keep_alive.message())
        .await
        .expect("first renewal in time")
        .expect("keep-alive running");
    assert!(first.is_ok(), "first renewal: {first:?}");
    let auths_before = ka_client.authentications();
    let renewals_before = keep_alive.renewals();
    let began = Instant::now();
    while began.elapsed() < Duration::from_secs(10) {
        match tokio::time::timeout(Duration::from_secs(5), keep_alive.message()).await {
            Ok(Some(Ok(_))) => {}
            other => panic!("keep-alive ended or stalled: {other:?}"),
        }
    }
    let ttl = writer.lease_time_to_live(lease.id, false).await.unwrap();
    eprintln!(
        "keep-alive: renewals {renewals_before} -> {}, tokens {auths_before} -> {}, ttl {}",
        keep_alive.renewals(),
        ka_client.authentications(),
        ttl.ttl
    );
    assert!(ttl.ttl > 0, "lease expired: {ttl:?}");
    assert!(
        keep_alive.renewals() >= renewals_before + 3,
        "renewals stopped"
    );
    assert!(
        ka_client.authentications() >= auths_before + 2,
        "the keep-alive never authenticated again (its token expires between renewals)"
    );
    drop(keep_alive);

    // Watch: 5 puts, a restart that forgets every token, 5 more puts.
    let start = writer
        .put("w/0", "0")
        .await
        .unwrap()
        .header
        .unwrap()
        .revision;
    let mut watcher = watch_client
        .watch(WatchCreateRequest {
            key: "w/".into(),
            range_end: prefix_end(b"w/").into(),
            start_revision: start,
            ..Default::default()
        })
        .await
        .unwrap();
    for i in 1..5 {
        writer.put(format!("w/{i}"), i.to_string()).await.unwrap();
    }
    // Every root token is dropped (a password change, even to the same password),
    // then the member restarts: its log replays the tokens' creation and their drop,
    // so the watch's token is refused when the watch is re-created.
    writer.user_change_password("root", "rootpw").await.unwrap();
    let dir = server.kill9();
    let server = Proc::start_with(Kind::Skiff, "reauth", PORT, PORT + 1, Some(dir), FLAGS);
    let mut last = 0;
    for i in 5..10 {
        last = writer
            .put(format!("w/{i}"), i.to_string())
            .await
            .unwrap()
            .header
            .unwrap()
            .revision;
    }
    let mut revs = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while revs.last() != Some(&last) {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = tokio::time::timeout(left, watcher.message())
            .await
            .unwrap_or_else(|_| panic!("watch stalled at {revs:?}, want up to {last}"))
            .expect("watch running");
        let resp = msg.unwrap_or_else(|e| panic!("the watch ended with {e} after {revs:?}"));
        revs.extend(
            resp.events
                .iter()
                .map(|e| e.kv.as_ref().unwrap().mod_revision),
        );
    }
    eprintln!(
        "watch: revisions {revs:?}, {} reconnects, watch client tokens {}",
        watcher.reconnects(),
        watch_client.authentications()
    );
    assert_eq!(revs, (start..=last).collect::<Vec<_>>(), "gap or duplicate");
    assert!(watcher.reconnects() >= 1, "the watch never reconnected");
    assert!(
        watch_client.authentications() >= 2,
        "the watch never authenticated again after the restart"
    );
    drop(server);
}
