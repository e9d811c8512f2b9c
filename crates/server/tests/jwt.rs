//! `--auth-token jwt,...` against etcd 3.4, with etcd's own test key pairs
//! (`tests/data/jwt`: etcd's `tests/fixtures` RSA and ECDSA pairs, the public key given
//! as the certificate, as etcd's tests give it) and a P-521 pair made with openssl for
//! ES512. An etcd member and a Skiff member are
//! started with the same keys and the same steps; then:
//! - each one's token (from `Authenticate` over gRPC and from the gateway) carries
//!   etcd's claims (`exp`, `revision`, `username`) and is accepted by the other, over
//!   gRPC (metadata `token`) and the gateway (`Authorization` header);
//! - after an auth store change every token issued before it is refused on key access
//!   by both with `etcdserver: revision of auth store is old`;
//! - once `ttl` has passed, a token is refused by both with `etcdserver: invalid auth
//!   token`;
//! - a Skiff member with only the public key accepts etcd's token and answers
//!   `Authenticate` with etcd's verify-only error;
//! - skiff-client, whose token went old when an admin changed a role, renews it once
//!   and its write is applied once, against etcd and Skiff alike.
//!
//! Ports 23600-23619 belong to this file. Needs `etcd`, `etcdctl` and `curl` (fails
//! under `CI` without them).

#![allow(clippy::unwrap_used)]

use crate::common;

use std::process::Command;
use std::time::Duration;

use common::{have, Kind, Proc};
use skiff_proto::etcdserverpb as pb;
use tonic::transport::Channel;
use tonic::Request;

fn key_file(name: &str) -> String {
    format!("{}/tests/data/jwt/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn etcdctl(p: &Proc, args: &[&str]) -> String {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", &p.endpoint()])
        .args(args)
        .output()
        .expect("run etcdctl");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

async fn channel(p: &Proc) -> Channel {
    tonic::transport::Endpoint::from_shared(p.url())
        .unwrap()
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .unwrap()
}

async fn grpc_token(p: &Proc) -> Result<String, String> {
    let mut auth = pb::auth_client::AuthClient::new(channel(p).await);
    auth.authenticate(pb::AuthenticateRequest {
        name: "root".into(),
        password: "pw".into(),
    })
    .await
    .map(|r| r.into_inner().token)
    .map_err(|s| s.message().to_string())
}

/// A gRPC range of `k` with `token`: its value, or the error message.
async fn grpc_get(p: &Proc, token: &str) -> String {
    let mut kv = pb::kv_client::KvClient::new(channel(p).await);
    let mut req = Request::new(pb::RangeRequest {
        key: b"k".to_vec().into(),
        ..Default::default()
    });
    req.metadata_mut()
        .insert("token", token.parse().expect("ascii token"));
    match kv.range(req).await {
        Ok(r) => r
            .into_inner()
            .kvs
            .first()
            .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
            .unwrap_or_else(|| "<none>".into()),
        Err(s) => s.message().to_string(),
    }
}

fn curl(p: &Proc, path: &str, body: &str, header: Option<String>) -> String {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-S", "-X", "POST", "--data-binary", body]);
    if let Some(h) = header {
        cmd.args(["-H", &h]);
    }
    let out = cmd
        .arg(format!("http://{}{path}", p.endpoint()))
        .output()
        .expect("run curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn gateway_token(p: &Proc) -> String {
    let body = curl(
        p,
        "/v3/auth/authenticate",
        r#"{"name":"root","password":"pw"}"#,
        None,
    );
    let v: serde_json::Value = serde_json::from_str(&body).expect(&body);
    v["token"].as_str().expect(&body).to_string()
}

/// A gateway range of `k` (base64 `aw==`) with `token`: its value, or the error.
fn gateway_get(p: &Proc, token: &str) -> String {
    let body = curl(
        p,
        "/v3/kv/range",
        r#"{"key":"aw=="}"#,
        Some(format!("Authorization: {token}")),
    );
    let v: serde_json::Value = serde_json::from_str(&body).expect(&body);
    if let Some(e) = v["error"].as_str() {
        return e.to_string();
    }
    match v["kvs"][0]["value"].as_str() {
        Some("dg==") => "v".into(),
        Some(other) => other.to_string(),
        None => "<none>".into(),
    }
}

/// The claims of a token, as JSON.
fn claims(token: &str) -> serde_json::Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).expect("a JWT has three parts");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url payload");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

fn setup(p: &Proc) {
    for args in [
        &["user", "add", "root:pw"][..],
        &["auth", "enable"],
        &["--user", "root:pw", "put", "k", "v"],
    ] {
        let out = etcdctl(p, args);
        assert!(!out.contains("Error"), "{:?} {args:?}: {out}", p.kind);
    }
}

/// Both members on `ports` (etcd's client and peer, then Skiff's) with the keys.
async fn both_ways(method: &str, public: &str, private: &str, ports: [u16; 4]) {
    if !(have("etcd") && have("etcdctl") && have("curl")) {
        return;
    }
    let ttl_secs = 4;
    let spec = format!(
        "jwt,pub-key={},priv-key={},sign-method={method},ttl={ttl_secs}s",
        key_file(public),
        key_file(private)
    );
    let flags = ["--auth-token", spec.as_str(), "--bcrypt-cost", "4"];
    let etcd = Proc::start_with(Kind::Etcd, "jwt-etcd", ports[0], ports[1], None, &flags);
    let skiff = Proc::start_with(Kind::Skiff, "jwt-skiff", ports[2], ports[3], None, &flags);
    setup(&etcd);
    setup(&skiff);

    // Tokens from both, both ways of asking; the same claims.
    let from_etcd = [grpc_token(&etcd).await.unwrap(), gateway_token(&etcd)];
    let from_skiff = [grpc_token(&skiff).await.unwrap(), gateway_token(&skiff)];
    let (ce, cs) = (claims(&from_etcd[0]), claims(&from_skiff[0]));
    let keys = |c: &serde_json::Value| {
        let mut k: Vec<String> = c.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&ce), ["exp", "revision", "username"], "etcd: {ce}");
    assert_eq!(keys(&cs), keys(&ce), "skiff: {cs}");
    assert_eq!(cs["username"], "root");
    assert_eq!(
        cs["revision"], ce["revision"],
        "the same auth store revision"
    );
    let exp = |c: &serde_json::Value| c["exp"].as_i64().unwrap();
    assert!(
        (exp(&cs) - exp(&ce)).abs() <= 2,
        "exp is issue time + ttl: {cs} {ce}"
    );

    // Every token works on both members, over gRPC and the gateway.
    for token in from_etcd.iter().chain(&from_skiff) {
        for p in [&etcd, &skiff] {
            assert_eq!(grpc_get(p, token).await, "v", "{:?} gRPC {token}", p.kind);
            assert_eq!(gateway_get(p, token), "v", "{:?} gateway {token}", p.kind);
        }
    }
    let forged = format!("{}x", from_etcd[0]);
    for p in [&etcd, &skiff] {
        assert_eq!(
            grpc_get(p, &forged).await,
            "etcdserver: invalid auth token",
            "{:?}",
            p.kind
        );
    }

    // An auth store change makes the tokens issued before it old, on both.
    for p in [&etcd, &skiff] {
        let out = etcdctl(p, &["--user", "root:pw", "role", "add", "r"]);
        assert!(out.contains("Role r created"), "{out}");
    }
    for token in from_etcd.iter().chain(&from_skiff) {
        for p in [&etcd, &skiff] {
            assert_eq!(
                grpc_get(p, token).await,
                "etcdserver: revision of auth store is old",
                "{:?} {token}",
                p.kind
            );
        }
    }

    // New tokens work until their ttl has passed, then neither member takes them.
    let fresh = [
        grpc_token(&etcd).await.unwrap(),
        grpc_token(&skiff).await.unwrap(),
    ];
    for token in &fresh {
        for p in [&etcd, &skiff] {
            assert_eq!(grpc_get(p, token).await, "v", "{:?} {token}", p.kind);
        }
    }
    let latest = fresh.iter().map(|t| exp(&claims(t))).max().unwrap();
    loop {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        if now > latest {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for token in &fresh {
        for p in [&etcd, &skiff] {
            assert_eq!(
                grpc_get(p, token).await,
                "etcdserver: invalid auth token",
                "{:?} {token}",
                p.kind
            );
            assert_eq!(
                gateway_get(p, token),
                "etcdserver: invalid auth token",
                "{:?} {token}",
                p.kind
            );
        }
    }
}

#[tokio::test]
async fn rs256_tokens_cross_between_etcd_and_skiff() {
    both_ways(
        "RS256",
        "server.crt",
        "server.key.insecure",
        [23610, 23611, 23612, 23613],
    )
    .await;
}

#[tokio::test]
async fn es512_tokens_cross_between_etcd_and_skiff() {
    both_ways(
        "ES512",
        "p521.pub",
        "p521.key.insecure",
        [23604, 23605, 23606, 23607],
    )
    .await;
}

#[tokio::test]
async fn es256_tokens_cross_between_etcd_and_skiff() {
    both_ways(
        "ES256",
        "server-ecdsa.crt",
        "server-ecdsa.key.insecure",
        [23614, 23615, 23616, 23617],
    )
    .await;
}

/// Only the public key: etcd's tokens are verified, none are issued.
#[tokio::test]
async fn verify_only_member_accepts_etcd_tokens() {
    if !(have("etcd") && have("etcdctl") && have("curl")) {
        return;
    }
    let signer = format!(
        "jwt,priv-key={},sign-method=RS256,ttl=1h",
        key_file("server.key.insecure")
    );
    let verifier = format!(
        "jwt,pub-key={},sign-method=RS256,ttl=1h",
        key_file("server.crt")
    );
    let etcd = Proc::start_with(
        Kind::Etcd,
        "jwt-signer",
        23618,
        23619,
        None,
        &["--auth-token", &signer, "--bcrypt-cost", "4"],
    );
    // Its peer port is one no member listens on: a single member never dials it.
    let skiff = Proc::start_with(
        Kind::Skiff,
        "jwt-verifier",
        23608,
        23609,
        None,
        &["--auth-token", &verifier],
    );
    setup(&etcd);
    for args in [&["user", "add", "root:pw"][..], &["auth", "enable"]] {
        etcdctl(&skiff, args);
    }
    let token = grpc_token(&etcd).await.unwrap();
    assert_eq!(
        grpc_get(&skiff, &token).await,
        "<none>",
        "etcd's token is a valid caller"
    );
    assert_eq!(
        grpc_token(&skiff).await,
        Err("auth: token signing attempted with verify-only key".to_string())
    );
}

/// skiff-client renews a `jwt` token that an auth change made old (as etcd's client
/// does) and repeats the call once; the write is applied once.
async fn client_renews_old_token(kind: Kind, ports: [u16; 2]) {
    use skiff_client::{Client, ClientOptions, Credentials};
    let spec = format!(
        "jwt,pub-key={},priv-key={},sign-method=RS256,ttl=1h",
        key_file("server.crt"),
        key_file("server.key.insecure")
    );
    let p = Proc::start_with(
        kind,
        "jwt-client",
        ports[0],
        ports[1],
        None,
        &["--auth-token", &spec, "--bcrypt-cost", "4"],
    );
    setup(&p);
    let opts = ClientOptions {
        request_timeout: Some(Duration::from_secs(5)),
        credentials: Some(Credentials::new("root", "pw")),
        ..ClientOptions::default()
    };
    let c = Client::connect([p.endpoint()], opts).unwrap();
    c.put("n", "1").await.unwrap();
    assert_eq!(c.authentications(), 1);
    let out = etcdctl(&p, &["--user", "root:pw", "role", "add", "r"]);
    assert!(out.contains("Role r created"), "{out}");
    c.put("n", "2").await.unwrap();
    assert_eq!(c.authentications(), 2, "{kind:?}: renewed once");
    let got = c.get("n").await.unwrap();
    assert_eq!(&got.kvs[0].value[..], b"2");
    assert_eq!(got.kvs[0].version, 2, "{kind:?}: each put applied once");
}

#[tokio::test]
async fn skiff_client_renews_an_old_token() {
    if !(have("etcd") && have("etcdctl") && have("curl")) {
        return;
    }
    client_renews_old_token(Kind::Etcd, [23600, 23601]).await;
    client_renews_old_token(Kind::Skiff, [23602, 23603]).await;
}
