//! Software transactions (etcd `concurrency`'s STM) against a running cluster:
//!
//! ```text
//! cargo run -p skiff-client --example stm -- 127.0.0.1:2379,127.0.0.1:22379,127.0.0.1:32379
//! ```
//!
//! Eight tasks each move 1 from account `stm/a` to account `stm/b` ten times, at the
//! same time. Each move reads both balances and writes both; a move that raced with
//! another is run again, so the total never changes and no move is lost.

use skiff_client::{Client, ClientOptions, Isolation};

fn balance(v: Option<bytes::Bytes>) -> i64 {
    v.and_then(|v| String::from_utf8_lossy(&v).parse().ok())
        .unwrap_or(0)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), skiff_client::Error> {
    let endpoints = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:2379".to_string());
    let client = Client::connect(endpoints.split(','), ClientOptions::default())?;
    client.put("stm/a", "100").await?;
    client.put("stm/b", "0").await?;

    let mut tasks = Vec::new();
    for _ in 0..8 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..10 {
                client
                    .stm(Isolation::Serializable, |stm| {
                        Box::pin(async move {
                            let a = balance(stm.get("stm/a").await?);
                            let b = balance(stm.get("stm/b").await?);
                            stm.put("stm/a", (a - 1).to_string());
                            stm.put("stm/b", (b + 1).to_string());
                            Ok(())
                        })
                    })
                    .await?;
            }
            Ok::<(), skiff_client::Error>(())
        }));
    }
    for t in tasks {
        t.await.expect("task panicked")?;
    }
    let a = balance(client.get("stm/a").await?.kvs.pop().map(|kv| kv.value));
    let b = balance(client.get("stm/b").await?.kvs.pop().map(|kv| kv.value));
    println!("stm/a = {a}, stm/b = {b}, total {}", a + b);
    Ok(())
}
