//! skiff-client's authentication and TLS (issue 16), against a single Skiff and a
//! single etcd 3.4 (the same steps, the same expectations):
//! - a user's token is sent with every call: what its role permits works, the rest is
//!   `permission denied`; a wrong password is `authentication failed`; no credentials
//!   is `user name is empty`;
//! - a token that expired (`--auth-token-ttl 2`, unused for longer) is renewed once
//!   and the refused call repeated, and a repeated put is applied exactly once (the
//!   key's version counts the puts);
//! - TLS with client certificates: an `https://` endpoint with the CA and a client
//!   certificate works, so does `host:port` with TLS options and skipping verification;
//!   a server certificate from another CA, or no client certificate, is refused (and a
//!   write refused at the handshake is never applied); bad PEM is refused up front.
//!
//! Ports 29730-29739 belong to this file. Needs `etcd` for the etcd half and `curl`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::time::Duration;

use common::pki::Pki;
use common::{have, Kind, Proc};
use skiff_client::proto::authpb::permission::Type as Perm;
use skiff_client::{
    prefix_end, Client, ClientOptions, Credentials, EtcdError, Identity, TlsOptions,
};

fn opts(credentials: Option<Credentials>) -> ClientOptions {
    ClientOptions {
        request_timeout: Some(Duration::from_secs(5)),
        credentials,
        ..ClientOptions::default()
    }
}

async fn auth_steps(kind: Kind, port: u16) {
    let server = Proc::start_with(
        kind,
        "sec",
        port,
        port + 1,
        None,
        &["--auth-token-ttl", "2", "--bcrypt-cost", "4"],
    );
    let ep = [server.endpoint()];
    let admin = Client::connect(ep.clone(), opts(None)).unwrap();
    admin.user_add("root", "rootpw", false).await.unwrap();
    admin.role_add("root").await.unwrap();
    admin.user_grant_role("root", "root").await.unwrap();
    admin.user_add("app", "apw", false).await.unwrap();
    admin.role_add("app-role").await.unwrap();
    admin
        .role_grant_permission("app-role", Perm::Readwrite, "app/", prefix_end(b"app/"))
        .await
        .unwrap();
    admin.user_grant_role("app", "app-role").await.unwrap();
    admin.auth_enable().await.unwrap();

    let app = Client::connect(ep.clone(), opts(Some(Credentials::new("app", "apw")))).unwrap();
    app.authenticate().await.unwrap();
    assert_eq!(app.authentications(), 1);
    app.put("app/x", "v1").await.unwrap();
    assert!(
        matches!(
            app.get("other").await,
            Err(skiff_client::Error::Etcd(EtcdError::PermissionDenied))
        ),
        "{kind:?}: outside its role's range"
    );
    let wrong = Client::connect(ep.clone(), opts(Some(Credentials::new("app", "nope")))).unwrap();
    assert!(
        matches!(
            wrong.authenticate().await,
            Err(skiff_client::Error::Etcd(EtcdError::AuthFailed))
        ),
        "{kind:?}: wrong password"
    );
    assert!(
        matches!(
            admin.get("app/x").await,
            Err(skiff_client::Error::Etcd(EtcdError::UserEmpty))
        ),
        "{kind:?}: no token"
    );

    // The token expires unused; the next put is refused for its token, the client
    // authenticates again and repeats it once.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    app.put("app/x", "v2").await.unwrap();
    assert_eq!(app.authentications(), 2, "{kind:?}: renewed once");
    let got = app.get("app/x").await.unwrap();
    assert_eq!(&got.kvs[0].value[..], b"v2");
    assert_eq!(got.kvs[0].version, 2, "{kind:?}: each put applied once");
    assert_eq!(app.authentications(), 2);

    // Back to no authentication: a client with credentials goes on without a token.
    let root = Client::connect(ep.clone(), opts(Some(Credentials::new("root", "rootpw")))).unwrap();
    root.auth_disable().await.unwrap();
    let late = Client::connect(ep, opts(Some(Credentials::new("app", "apw")))).unwrap();
    late.put("other", "v").await.unwrap();
    assert_eq!(
        late.authentications(),
        0,
        "{kind:?}: authentication disabled"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_against_skiff() {
    auth_steps(Kind::Skiff, 29730).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_against_etcd() {
    if !have("etcd") {
        eprintln!("note: etcd not installed; skipped");
        return;
    }
    auth_steps(Kind::Etcd, 29732).await;
}

fn tls_opts(ca: Option<&str>, identity: Option<(&str, &str)>, skip: bool) -> TlsOptions {
    TlsOptions {
        ca_pem: ca.map(|p| std::fs::read(p).unwrap()),
        identity: identity.map(|(c, k)| Identity {
            cert_pem: std::fs::read(c).unwrap(),
            key_pem: std::fs::read(k).unwrap(),
        }),
        insecure_skip_verify: skip,
        server_name: None,
    }
}

fn tls_client(endpoint: &str, tls: TlsOptions) -> Client {
    Client::connect(
        [endpoint],
        ClientOptions {
            request_timeout: Some(Duration::from_secs(3)),
            connect_timeout: Duration::from_secs(1),
            tls: Some(tls),
            ..ClientOptions::default()
        },
    )
    .unwrap()
}

async fn tls_steps(kind: Kind, port: u16) {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "test");
    let rogue = Pki::new(dir.path(), "rogue");
    let ca = pki.ca("test");
    let (srv, srv_key) = pki.issue("server", "server");
    let (cli, cli_key) = pki.issue("client", "client");
    let rogue_ca = rogue.ca("rogue");
    let url = format!("https://127.0.0.1:{port}");
    let flags = [
        format!("--cert-file={srv}"),
        format!("--key-file={srv_key}"),
        format!("--trusted-ca-file={ca}"),
        "--client-cert-auth".to_string(),
    ];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let _server = Proc::start_https(
        kind,
        "sec",
        port,
        port + 1,
        &flags,
        &["--cacert", &ca, "--cert", &cli, "--key", &cli_key],
    );

    let good = tls_client(&url, tls_opts(Some(&ca), Some((&cli, &cli_key)), false));
    good.put("k", "v1").await.unwrap();
    assert_eq!(&good.get("k").await.unwrap().kvs[0].value[..], b"v1");

    // host:port: TLS because the client has TLS options.
    let bare = tls_client(
        &format!("127.0.0.1:{port}"),
        tls_opts(Some(&ca), Some((&cli, &cli_key)), false),
    );
    assert_eq!(&bare.get("k").await.unwrap().kvs[0].value[..], b"v1");

    // Skipping verification: no CA needed.
    let skip = tls_client(&url, tls_opts(None, Some((&cli, &cli_key)), true));
    assert_eq!(&skip.get("k").await.unwrap().kvs[0].value[..], b"v1");

    // A server certificate from another CA: refused at the handshake, so the put is
    // never sent (and never applied), and the call ends at its deadline.
    let wrong_ca = tls_client(
        &url,
        tls_opts(Some(&rogue_ca), Some((&cli, &cli_key)), false),
    );
    assert!(
        matches!(
            wrong_ca.put("k", "rogue").await,
            Err(skiff_client::Error::Timeout(_))
        ),
        "{kind:?}: untrusted server certificate"
    );
    // No client certificate: the member refuses the connection.
    let anonymous = tls_client(&url, tls_opts(Some(&ca), None, false));
    assert!(
        anonymous.get("k").await.is_err(),
        "{kind:?}: no client certificate"
    );
    let got = good.get("k").await.unwrap();
    assert_eq!(
        (&got.kvs[0].value[..], got.kvs[0].version),
        (&b"v1"[..], 1),
        "{kind:?}: nothing else was written"
    );

    // Bad PEM is refused when the client is built.
    let bad = Client::connect(
        [url.as_str()],
        ClientOptions {
            tls: Some(TlsOptions {
                ca_pem: Some(b"garbage".to_vec()),
                ..TlsOptions::default()
            }),
            ..ClientOptions::default()
        },
    );
    assert!(matches!(bad, Err(skiff_client::Error::Tls(_))), "{bad:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_against_skiff() {
    if !have("curl") {
        eprintln!("note: curl not installed; skipped");
        return;
    }
    tls_steps(Kind::Skiff, 29734).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_against_etcd() {
    if !have("etcd") || !have("curl") {
        eprintln!("note: etcd/curl not installed; skipped");
        return;
    }
    tls_steps(Kind::Etcd, 29736).await;
}
