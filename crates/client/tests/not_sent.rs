//! The write rule's evidence: a put to members whose ports refuse connections fails
//! with a status the pool recognises as "not sent" (the only failure after which a
//! write may be tried on another member), after trying the members within the attempt
//! budget and without waiting for a deadline.

use std::time::{Duration, Instant};

use skiff_client::pool::not_sent;
use skiff_client::{Client, ClientOptions, Error};

/// A local port nothing listens on (bound, then released).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("bound socket has an address").port()
}

#[tokio::test]
async fn refused_connection_is_not_sent() {
    let (a, b) = (free_port(), free_port());
    let opts = ClientOptions {
        max_attempts: 4,
        backoff_initial: Duration::from_millis(10),
        backoff_max: Duration::from_millis(20),
        ..ClientOptions::default()
    };
    let client = Client::connect(
        [format!("127.0.0.1:{a}"), format!("http://127.0.0.1:{b}")],
        opts,
    )
    .unwrap();
    let start = Instant::now();
    let err = client.put("k", "v").await.unwrap_err();
    match &err {
        Error::Rpc(status) => assert!(not_sent(status), "not recognised as not sent: {status:?}"),
        other => panic!("unexpected error {other:?}"),
    }
    assert!(err.to_string().contains("skiff-client: not sent"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn endpoints_are_checked_before_dialling() {
    assert!(matches!(
        Client::connect(["unix://127.0.0.1:1"], ClientOptions::default()),
        Err(Error::InvalidEndpoint { .. })
    ));
    assert!(matches!(
        Client::connect(["https://127.0.0.1"], ClientOptions::default()),
        Err(Error::InvalidEndpoint { .. })
    ));
    assert!(matches!(
        Client::connect(Vec::<String>::new(), ClientOptions::default()),
        Err(Error::NoEndpoints)
    ));
}
