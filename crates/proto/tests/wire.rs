//! Wire compatibility: encodings compared with bytes computed by hand from the
//! protobuf encoding rules and etcd's field numbers, so a renumbered field or a wrong
//! type fails here rather than against a real client.

use bytes::Bytes;
use skiff_proto::etcdserverpb::{
    compare, request_op, watch_request, Compare, PutRequest, RangeRequest, RequestOp,
    ResponseHeader, TxnRequest, WatchCreateRequest, WatchRequest, WatchResponse,
};
use skiff_proto::mvccpb::{event::EventType, Event, KeyValue};
use skiff_proto::Message;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn put_request_bytes() {
    let req = PutRequest {
        key: Bytes::from_static(b"foo"),
        value: Bytes::from_static(b"bar"),
        lease: 0x1234,
        prev_kv: true,
        ignore_value: false,
        ignore_lease: true,
    };
    // key=1 (LEN), value=2 (LEN), lease=3 (varint 4660 = b4 24), prev_kv=4, ignore_lease=6.
    let want = "0a03666f6f1203626172".to_string() + "18b424" + "2001" + "3001";
    assert_eq!(hex(&req.encode_to_vec()), want);
    assert_eq!(
        PutRequest::decode(req.encode_to_vec().as_slice()).unwrap(),
        req
    );
}

#[test]
fn range_request_bytes() {
    let req = RangeRequest {
        key: Bytes::from_static(b"a"),
        range_end: Bytes::from_static(b"b"),
        limit: 10,
        revision: 5,
        sort_order: 2,  // DESCEND
        sort_target: 3, // MOD
        serializable: true,
        keys_only: true,
        count_only: false,
        min_mod_revision: 1,
        max_mod_revision: 0,
        min_create_revision: 0,
        max_create_revision: 7,
    };
    let want = "0a0161".to_string()
        + "120162"
        + "180a"
        + "2005"
        + "2802"
        + "3003"
        + "3801"
        + "4001"
        + "5001" // min_mod_revision = 10
        + "6807"; // max_create_revision = 13
    assert_eq!(hex(&req.encode_to_vec()), want);
}

#[test]
fn txn_with_compare_range_end_uses_field_64() {
    let txn = TxnRequest {
        compare: vec![Compare {
            result: 3, // NOT_EQUAL
            target: 2, // MOD
            key: Bytes::from_static(b"k"),
            range_end: Bytes::from_static(b"l"),
            target_union: Some(compare::TargetUnion::ModRevision(9)),
        }],
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: Bytes::from_static(b"k"),
                value: Bytes::from_static(b"v"),
                ..Default::default()
            })),
        }],
        failure: vec![],
    };
    // Compare: result=1 (3), target=2 (2), key=3 "k", mod_revision=6 (9), range_end=64:
    // tag (64<<3|2)=514 = varint 82 04.
    let compare = "0803".to_string() + "1002" + "1a016b" + "3009" + "8204016c";
    let put = "0a016b120176";
    let op = format!("12{:02x}{}", put.len() / 2, put);
    let want = format!(
        "0a{:02x}{}12{:02x}{}",
        compare.len() / 2,
        compare,
        op.len() / 2,
        op
    );
    assert_eq!(hex(&txn.encode_to_vec()), want);
    assert_eq!(
        TxnRequest::decode(txn.encode_to_vec().as_slice()).unwrap(),
        txn
    );
}

#[test]
fn watch_messages_bytes() {
    let req = WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(
            WatchCreateRequest {
                key: Bytes::from_static(b"x"),
                start_revision: 3,
                prev_kv: true,
                watch_id: 4,
                fragment: true,
                filters: vec![1], // NODELETE
                ..Default::default()
            },
        )),
    };
    // create_request=1: key=1, start_revision=3, filters=5 (packed), prev_kv=6,
    // watch_id=7, fragment=8.
    let inner = "0a0178".to_string() + "1803" + "2a0101" + "3001" + "3804" + "4001";
    assert_eq!(
        hex(&req.encode_to_vec()),
        format!("0a{:02x}{}", inner.len() / 2, inner)
    );

    let resp = WatchResponse {
        header: Some(ResponseHeader {
            cluster_id: 1,
            member_id: 2,
            revision: 3,
            raft_term: 4,
        }),
        watch_id: 0,
        events: vec![Event {
            r#type: EventType::Delete as i32,
            kv: Some(KeyValue {
                key: Bytes::from_static(b"x"),
                mod_revision: 3,
                ..Default::default()
            }),
            prev_kv: None,
        }],
        ..Default::default()
    };
    let header = "0801100218032004";
    let kv = "0a0178".to_string() + "1803";
    let event = "0801".to_string() + &format!("12{:02x}{}", kv.len() / 2, kv);
    // events is field 11: tag (11<<3|2) = 0x5a.
    let want = format!(
        "0a{:02x}{}5a{:02x}{}",
        header.len() / 2,
        header,
        event.len() / 2,
        event
    );
    assert_eq!(hex(&resp.encode_to_vec()), want);
}

#[test]
fn service_names_match_etcd() {
    use skiff_proto::etcdserverpb::*;
    assert_eq!(kv_server::SERVICE_NAME, "etcdserverpb.KV");
    assert_eq!(watch_server::SERVICE_NAME, "etcdserverpb.Watch");
    assert_eq!(lease_server::SERVICE_NAME, "etcdserverpb.Lease");
    assert_eq!(cluster_server::SERVICE_NAME, "etcdserverpb.Cluster");
    assert_eq!(maintenance_server::SERVICE_NAME, "etcdserverpb.Maintenance");
    assert_eq!(auth_server::SERVICE_NAME, "etcdserverpb.Auth");
    assert_eq!(
        skiff_proto::v3lockpb::lock_server::SERVICE_NAME,
        "v3lockpb.Lock"
    );
    assert_eq!(
        skiff_proto::v3electionpb::election_server::SERVICE_NAME,
        "v3electionpb.Election"
    );
}
