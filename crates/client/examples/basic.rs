//! A tour of skiff-client against a running cluster:
//!
//! ```text
//! cargo run -p skiff-client --example basic -- 127.0.0.1:2379,127.0.0.1:22379,127.0.0.1:32379
//! ```
//!
//! Puts and reads a key, watches a prefix (the watch resumes on another member if
//! its member fails), and keeps a lease alive while a key is attached to it.

use skiff_client::proto::etcdserverpb::{PutRequest, WatchCreateRequest};
use skiff_client::{prefix_end, Client, ClientOptions};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), skiff_client::Error> {
    let endpoints = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:2379".to_string());
    let client = Client::connect(endpoints.split(','), ClientOptions::default())?;

    // A watch on the prefix "demo/", from now on.
    let mut watcher = client
        .watch(WatchCreateRequest {
            key: "demo/".into(),
            range_end: prefix_end(b"demo/").into(),
            ..Default::default()
        })
        .await?;

    // A lease that lives as long as this program keeps it alive.
    let lease = client.lease_grant(10, 0).await?;
    let keep_alive = client.lease_keep_alive(lease.id);
    client
        .put_request(PutRequest {
            key: "demo/alive".into(),
            value: "yes".into(),
            lease: lease.id,
            ..Default::default()
        })
        .await?;
    client.put("demo/greeting", "hello").await?;

    let got = client.get("demo/greeting").await?;
    for kv in &got.kvs {
        println!(
            "{} = {} (mod revision {})",
            String::from_utf8_lossy(&kv.key),
            String::from_utf8_lossy(&kv.value),
            kv.mod_revision
        );
    }

    // The creation, then the two puts.
    let mut events = 0;
    while events < 2 {
        match watcher.message().await {
            Some(Ok(resp)) => {
                for e in &resp.events {
                    let kv = e.kv.clone().unwrap_or_default();
                    println!(
                        "event at revision {}: {}",
                        kv.mod_revision,
                        String::from_utf8_lossy(&kv.key)
                    );
                    events += 1;
                }
            }
            Some(Err(e)) => return Err(e),
            None => break,
        }
    }
    println!(
        "lease {:x}: {} renewals so far",
        keep_alive.id(),
        keep_alive.renewals()
    );
    drop(keep_alive);
    client.lease_revoke(lease.id).await?;
    Ok(())
}
