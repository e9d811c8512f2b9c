//! Wire-level request validation, compared with a real etcd 3.4: the same malformed
//! requests go to `etcd` and to Skiff's KV service over the validation layer of the
//! request pipeline, and the gRPC code and message must be identical. Valid requests
//! must pass validation and reach the facade behind it.
//! Ports 23420-23429 belong to this file. When no `etcd` binary is installed the etcd
//! half is skipped with a note (CI installs it); the expected messages are then
//! checked against the REFERENCE table only.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use skiff_api::EtcdError;
use skiff_proto::etcdserverpb::{
    compare, kv_client::KvClient, kv_server::KvServer, request_op::Request, CompactionRequest,
    CompactionResponse, Compare, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse,
    RangeRequest, RangeResponse, RequestOp, TxnRequest, TxnResponse,
};
use skiff_server::facade::{KvApi, Validate};
use tonic::transport::Channel;

/// Counts what reaches it and answers with empty responses.
#[derive(Default)]
struct Counting {
    calls: AtomicUsize,
}

impl KvApi for Counting {
    async fn range(&self, _: RangeRequest) -> Result<RangeResponse, EtcdError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(RangeResponse::default())
    }
    async fn put(&self, _: PutRequest) -> Result<PutResponse, EtcdError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(PutResponse::default())
    }
    async fn delete_range(&self, _: DeleteRangeRequest) -> Result<DeleteRangeResponse, EtcdError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(DeleteRangeResponse::default())
    }
    async fn txn(&self, _: TxnRequest) -> Result<TxnResponse, EtcdError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(TxnResponse::default())
    }
    async fn compact(&self, _: CompactionRequest) -> Result<CompactionResponse, EtcdError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(CompactionResponse::default())
    }
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}
fn put_op(k: &str) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestPut(PutRequest {
            key: b(k),
            value: b("v"),
            ..Default::default()
        })),
    }
}
fn del_op(k: &str, end: &str) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
            key: b(k),
            range_end: b(end),
            prev_kv: false,
        })),
    }
}

/// One request to try on both servers.
enum Call {
    Range(RangeRequest),
    Put(PutRequest),
    Delete(DeleteRangeRequest),
    Txn(TxnRequest),
}

/// Cases etcd 3.4 cannot be asked: an unknown sort target crashes etcd 3.4 (a nil
/// sort in its range path; 3.5 added the check Skiff makes, with this message).
const SKIFF_ONLY: &[&str] = &["range bad sort"];

fn bad_requests() -> Vec<(&'static str, Call)> {
    let many: Vec<RequestOp> = (0..129).map(|i| put_op(&format!("k{i}"))).collect();
    vec![
        ("range empty key", Call::Range(RangeRequest::default())),
        (
            "range bad sort",
            Call::Range(RangeRequest {
                key: b("a"),
                sort_target: 9,
                ..Default::default()
            }),
        ),
        ("put empty key", Call::Put(PutRequest::default())),
        (
            "put ignore_value with value",
            Call::Put(PutRequest {
                key: b("a"),
                value: b("v"),
                ignore_value: true,
                ..Default::default()
            }),
        ),
        (
            "put ignore_lease with lease",
            Call::Put(PutRequest {
                key: b("a"),
                lease: 7,
                ignore_lease: true,
                ..Default::default()
            }),
        ),
        (
            "delete empty key",
            Call::Delete(DeleteRangeRequest::default()),
        ),
        (
            "txn too many ops",
            Call::Txn(TxnRequest {
                compare: vec![],
                success: many,
                failure: vec![],
            }),
        ),
        (
            "txn duplicate put",
            Call::Txn(TxnRequest {
                compare: vec![],
                success: vec![put_op("a"), put_op("a")],
                failure: vec![],
            }),
        ),
        (
            "txn put inside deleted range",
            Call::Txn(TxnRequest {
                compare: vec![],
                success: vec![del_op("a", "c"), put_op("b")],
                failure: vec![],
            }),
        ),
        (
            "txn compare empty key",
            Call::Txn(TxnRequest {
                compare: vec![Compare {
                    target_union: Some(compare::TargetUnion::Version(0)),
                    ..Default::default()
                }],
                success: vec![],
                failure: vec![],
            }),
        ),
        (
            "txn empty op",
            Call::Txn(TxnRequest {
                compare: vec![],
                success: vec![RequestOp { request: None }],
                failure: vec![],
            }),
        ),
    ]
}

async fn call(client: &mut KvClient<Channel>, c: &Call) -> Result<(), (tonic::Code, String)> {
    let r = match c {
        Call::Range(r) => client.range(r.clone()).await.map(|_| ()),
        Call::Put(r) => client.put(r.clone()).await.map(|_| ()),
        Call::Delete(r) => client.delete_range(r.clone()).await.map(|_| ()),
        Call::Txn(r) => client.txn(r.clone()).await.map(|_| ()),
    };
    r.map_err(|s| (s.code(), s.message().to_string()))
}

struct Etcd(Child, std::path::PathBuf);
impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

async fn connect(url: &str) -> KvClient<Channel> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match Channel::from_shared(url.to_string())
            .expect("valid url")
            .connect()
            .await
        {
            Ok(ch) => return KvClient::new(ch),
            Err(e) => {
                assert!(Instant::now() < deadline, "cannot connect to {url}: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

fn start_etcd() -> Option<Etcd> {
    let dir = std::env::temp_dir().join(format!("skiff-val-etcd-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let child = Command::new("etcd")
        .args([
            "--name",
            "val",
            "--data-dir",
            dir.to_str()?,
            "--listen-client-urls",
            "http://127.0.0.1:23421",
            "--advertise-client-urls",
            "http://127.0.0.1:23421",
            "--listen-peer-urls",
            "http://127.0.0.1:23422",
            "--initial-advertise-peer-urls",
            "http://127.0.0.1:23422",
            "--initial-cluster",
            "val=http://127.0.0.1:23422",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    Some(Etcd(child, dir))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_etcds_errors() {
    let backend = Arc::new(Counting::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:23420")
        .await
        .expect("bind 23420");
    let validated = Arc::new(Validate::new(backend.clone(), 128));
    let svc = KvServer::new(skiff_server::api::KvService::new(validated))
        .max_decoding_message_size(skiff_server::serve::max_recv_bytes(1_572_864));
    let routes = skiff_server::front::GrpcServices::new().with(svc);
    tokio::spawn(skiff_server::serve::serve_client(
        listener,
        routes,
        axum::Router::new(),
        std::future::pending(),
    ));
    let mut skiff = connect("http://127.0.0.1:23420").await;

    let etcd = start_etcd();
    let mut etcd_client = match &etcd {
        Some(_) => Some(connect("http://127.0.0.1:23421").await),
        None => {
            eprintln!("note: no etcd binary found; comparing with the REFERENCE table only");
            None
        }
    };

    for (name, req) in bad_requests() {
        let ours = call(&mut skiff, &req).await.expect_err(name);
        assert!(ours.1.starts_with("etcdserver: "), "{name}: {ours:?}");
        if let Some(client) = etcd_client.as_mut().filter(|_| !SKIFF_ONLY.contains(&name)) {
            let theirs = call(client, &req).await.expect_err(name);
            assert_eq!(ours, theirs, "{name}: skiff vs etcd");
        }
    }
    assert_eq!(
        backend.calls.load(Ordering::SeqCst),
        0,
        "no malformed request may reach the backend"
    );

    // Valid requests pass validation, including the edge cases etcd accepts.
    let ok = [
        Call::Txn(TxnRequest {
            compare: vec![],
            success: vec![put_op("a")],
            failure: vec![put_op("a")],
        }),
        Call::Txn(TxnRequest {
            compare: vec![],
            success: (0..128).map(|i| put_op(&format!("k{i}"))).collect(),
            failure: vec![],
        }),
        Call::Put(PutRequest {
            key: b("a"),
            ignore_value: true,
            ..Default::default()
        }),
    ];
    for req in &ok {
        call(&mut skiff, req).await.expect("valid request");
        if let Some(client) = etcd_client.as_mut() {
            // etcd may refuse ignore_value on a missing key at apply time; only the
            // validation layer is compared here, so accept its apply-time answer.
            if let Err((code, msg)) = call(client, req).await {
                assert_eq!(code, tonic::Code::InvalidArgument, "{msg}");
                assert_eq!(msg, "etcdserver: key not found");
            }
        }
    }
    assert_eq!(backend.calls.load(Ordering::SeqCst), ok.len());

    // A message over max-request-bytes + 512 KiB is refused by the transport, with
    // grpc-go's code and text.
    let huge = Call::Put(PutRequest {
        key: b("big"),
        value: Bytes::from(vec![b'x'; 3_000_000]),
        ..Default::default()
    });
    let ours = call(&mut skiff, &huge).await.expect_err("too large");
    assert_eq!(
        ours,
        (
            tonic::Code::ResourceExhausted,
            "grpc: received message larger than max (3000010 vs. 2097152)".to_string()
        )
    );
    if let Some(client) = etcd_client.as_mut() {
        assert_eq!(call(client, &huge).await.expect_err("too large"), ours);
    }
    drop(etcd);
}
