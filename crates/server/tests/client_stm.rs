//! skiff-client's software transactions (issue 16) against one Skiff member: N tasks
//! increment one counter through [`Client::stm`] at the same time, each a
//! read-modify-write that conflicts with the others; the counter ends at exactly N for
//! the serializable and the repeatable-read isolation (a conflict is run again, never
//! lost or applied twice), and the transactions that had to run again are counted
//! (there must be some, or the test proved nothing).
//!
//! Ports 29896-29897 belong to this file.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use common::{Kind, Proc};
use skiff_client::{Client, ClientOptions, Isolation};

const TASKS: u64 = 8;
const EACH: u64 = 10;

async fn increments(client: &Client, key: &'static str, isolation: Isolation) -> (u64, u64) {
    let runs = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let (client, runs) = (client.clone(), runs.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..EACH {
                let runs = runs.clone();
                client
                    .stm(isolation, move |stm| {
                        runs.fetch_add(1, Ordering::Relaxed);
                        Box::pin(async move {
                            let n: u64 = match stm.get(key).await? {
                                Some(v) => String::from_utf8_lossy(&v).parse().unwrap(),
                                None => 0,
                            };
                            // Let the others read the same value meanwhile.
                            tokio::task::yield_now().await;
                            stm.put(key, (n + 1).to_string());
                            Ok(())
                        })
                    })
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let resp = client.get(key).await.unwrap();
    let value: u64 = String::from_utf8_lossy(&resp.kvs[0].value).parse().unwrap();
    (value, runs.load(Ordering::Relaxed))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_increments_through_stm_count_exactly() {
    let server = Proc::start_with(Kind::Skiff, "stm", 29896, 29897, None, &[]);
    let client = Client::connect([server.endpoint()], ClientOptions::default()).unwrap();
    for (key, isolation) in [
        ("ser", Isolation::Serializable),
        ("rr", Isolation::RepeatableRead),
    ] {
        let (value, runs) = increments(&client, key, isolation).await;
        eprintln!(
            "{isolation:?}: counter {value}, {runs} runs for {} increments",
            TASKS * EACH
        );
        assert_eq!(
            value,
            TASKS * EACH,
            "{isolation:?}: increments lost or doubled"
        );
        assert!(runs > TASKS * EACH, "{isolation:?}: no conflict happened");
        // Every increment is one committed write: the key's version counts them.
        let version = client.get(key).await.unwrap().kvs[0].version;
        assert_eq!(version as u64, TASKS * EACH, "{isolation:?}: commits");
    }
}
