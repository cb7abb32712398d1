//! transport-discovery API on the embedded store: every status code path, the signed requests,
//! TTL expiry and refresh on paused time, concurrent upserts.

mod tpd_common;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use http::{Method, StatusCode};
use skytower_services::auth;
use skytower_services::transport_discovery::{
    Config, Deleted, TransportDiscovery, TransportRecord, TransportType,
};
use skytower_services::ttl_store::MemoryTtlStore;
use skytower_transports::dmsg::replay::unix_ms_now;
use skytower_transports::identity::contexts;
use tpd_common::*;

fn app_with(config: Config, max_records: usize) -> Router {
    TransportDiscovery::new(&config, Arc::new(MemoryTtlStore::new(max_records))).router()
}

fn app() -> Router {
    app_with(Config::default(), 10_000)
}

#[tokio::test]
async fn register_then_read_by_id_edge_and_all_then_delete() {
    let app = app();
    let (a, b, c) = (key(), key(), key());
    let ab = signed(&a, &b, TransportType::Stcpr);
    let bc = signed(&b, &c, TransportType::Dmsg);
    let before = unix_ms_now();
    let stored = register_entries(&app, &a, &[ab]).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].signed(), ab);
    assert!(stored[0].registered_at.abs_diff(before) < 1000);
    assert_eq!(stored[0].expires_at - stored[0].registered_at, 300_000);
    // The trailing-slash path of upstream clients works too.
    let _: Vec<TransportRecord> = ok_json(
        &app,
        signed_req(&c, Method::POST, "/transports/", &json(&[bc])),
    )
    .await;

    let id = ab.entry.id;
    let got: TransportRecord = ok_json(&app, get(&id_path(id))).await;
    assert_eq!(got.signed(), ab);
    let of_b = of_edge(&app, b.public_key()).await;
    assert_eq!(of_b.len(), 2);
    let of_a = of_edge(&app, a.public_key()).await;
    assert_eq!(ids(&of_a), [id]);
    // A key with no transports: an empty list, not an error.
    let none = of_edge(&app, key().public_key()).await;
    assert!(none.is_empty());
    let all = all_transports(&app).await;
    assert_eq!(all.len(), 2);
    assert!(all[0].entry.id < all[1].entry.id, "sorted by id");

    // Delete by an edge (b, who did not register it).
    let path = id_path(id);
    let d: Deleted = ok_json(&app, signed_req(&b, Method::DELETE, &path, b"")).await;
    assert_eq!(d.deleted, id);
    refused(&app, get(&path), StatusCode::NOT_FOUND, "not_found").await;
    refused(
        &app,
        signed_req(&b, Method::DELETE, &path, b""),
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let all = all_transports(&app).await;
    assert_eq!(all.len(), 1);
}

#[tokio::test]
async fn every_refusal_of_a_registration() {
    let app = app_with(
        Config {
            max_batch: 2,
            max_body: 4096,
            ..Config::default()
        },
        10_000,
    );
    let (a, b) = (key(), key());
    let good = signed(&a, &b, TransportType::Sudph);

    refused(
        &app,
        plain_req(Method::POST, "/transports", &json(&[good])),
        StatusCode::UNAUTHORIZED,
        "missing_signature",
    )
    .await;
    refused(
        &app,
        signed_req(&a, Method::POST, "/transports", b"[{,"),
        StatusCode::BAD_REQUEST,
        "malformed_json",
    )
    .await;
    refused(
        &app,
        signed_req(&a, Method::POST, "/transports", br#"[{"entry":1}]"#),
        StatusCode::UNPROCESSABLE_ENTITY,
        "malformed_entry",
    )
    .await;
    refused(
        &app,
        signed_req(&a, Method::POST, "/transports", b"[]"),
        StatusCode::UNPROCESSABLE_ENTITY,
        "empty_batch",
    )
    .await;
    let m = refused(
        &app,
        post_entries(&a, &[good, good, good]),
        StatusCode::UNPROCESSABLE_ENTITY,
        "batch_too_large",
    )
    .await;
    assert!(m.contains("at most 2"), "{m}");
    let big = vec![b' '; 5000];
    refused(
        &app,
        signed_req(&a, Method::POST, "/transports", &big),
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
    )
    .await;

    let mut unsorted = good;
    unsorted.entry.edges.swap(0, 1);
    refused(
        &app,
        post_entries(&a, &[unsorted]),
        StatusCode::UNPROCESSABLE_ENTITY,
        "edges_not_sorted",
    )
    .await;
    let mut same = good;
    same.entry.edges[1] = same.entry.edges[0];
    refused(
        &app,
        post_entries(&a, &[same]),
        StatusCode::UNPROCESSABLE_ENTITY,
        "same_edges",
    )
    .await;
    let mut wrong_id = good;
    wrong_id.entry.kind = TransportType::Tcp;
    refused(
        &app,
        post_entries(&a, &[wrong_id]),
        StatusCode::UNPROCESSABLE_ENTITY,
        "id_mismatch",
    )
    .await;
    // Signed by one edge only: the other signature is a stranger's.
    let stranger = key();
    let mut half = good;
    let ib = good.entry.edge_index(&b.public_key()).unwrap();
    half.signatures[ib] = stranger.sign(contexts::TRANSPORT_ENTRY, &good.entry.canonical_bytes());
    let m = refused(
        &app,
        post_entries(&a, &[good, half]),
        StatusCode::UNPROCESSABLE_ENTITY,
        "bad_entry_signature",
    )
    .await;
    assert!(m.starts_with("entry 1:"), "the failing entry is named: {m}");
    // All or nothing: the good entry of the refused batch was not stored.
    let all = all_transports(&app).await;
    assert!(all.is_empty());
    // A correctly signed entry registered by someone who is not an edge.
    refused(
        &app,
        post_entries(&stranger, &[good]),
        StatusCode::FORBIDDEN,
        "caller_not_edge",
    )
    .await;

    // The good one goes through, and a second registration is an upsert (still one record).
    register_entries(&app, &a, &[good]).await;
    register_entries(&app, &b, &[good]).await;
    let all = all_transports(&app).await;
    assert_eq!(all.len(), 1);
}

#[tokio::test]
async fn request_signatures_wrong_key_wrong_path_replayed_expired() {
    let app = app();
    let (a, b) = (key(), key());
    let body = json(&[signed(&a, &b, TransportType::Dmsg)]);

    // Wrong key: signed by a stranger but claiming to be a.
    let mut req = signed_req(&key(), Method::POST, "/transports", &body);
    req.headers_mut()
        .insert(auth::PUBLIC, a.public_key().to_string().parse().unwrap());
    refused(&app, req, StatusCode::UNAUTHORIZED, "bad_signature").await;

    // Wrong path: a signature for DELETE /transports/… sent on POST /transports.
    let headers = auth::sign_now(&a, &Method::POST, "/transports/", &body).unwrap();
    let mut req = plain_req(Method::POST, "/transports", &body);
    req.headers_mut().extend(headers);
    refused(&app, req, StatusCode::UNAUTHORIZED, "bad_signature").await;

    // Replayed: the same signed request twice.
    let headers = auth::sign_now(&a, &Method::POST, "/transports", &body).unwrap();
    let mut first = plain_req(Method::POST, "/transports", &body);
    first.headers_mut().extend(headers.clone());
    let _: Vec<TransportRecord> = ok_json(&app, first).await;
    let mut again = plain_req(Method::POST, "/transports", &body);
    again.headers_mut().extend(headers);
    refused(&app, again, StatusCode::UNAUTHORIZED, "replayed_request").await;

    // Expired: timestamped outside the 30 s window.
    let old = unix_ms_now() - 31_000;
    let headers = auth::sign(&a, &Method::POST, "/transports", &body, old, [9; 16]);
    let mut req = plain_req(Method::POST, "/transports", &body);
    req.headers_mut().extend(headers);
    refused(&app, req, StatusCode::UNAUTHORIZED, "stale_timestamp").await;

    // Malformed header.
    let mut req = signed_req(&a, Method::POST, "/transports", &body);
    req.headers_mut()
        .insert(auth::NONCE, "xyz".parse().unwrap());
    refused(&app, req, StatusCode::UNAUTHORIZED, "bad_signature_header").await;
}

#[tokio::test]
async fn reads_and_deletes_refusals() {
    let app = app();
    let (a, b) = (key(), key());
    let e = signed(&a, &b, TransportType::Dmsg);
    register_entries(&app, &a, &[e]).await;
    let path = id_path(e.entry.id);

    refused(
        &app,
        get("/transports/id:nope"),
        StatusCode::BAD_REQUEST,
        "bad_id",
    )
    .await;
    refused(
        &app,
        get("/transports/edge:nope"),
        StatusCode::BAD_REQUEST,
        "bad_key",
    )
    .await;
    refused(
        &app,
        get("/transports/what"),
        StatusCode::BAD_REQUEST,
        "bad_selector",
    )
    .await;
    let unknown = signed(&key(), &key(), TransportType::Dmsg).entry.id;
    refused(
        &app,
        get(&id_path(unknown)),
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    // Reads need no signature; deletes do.
    refused(
        &app,
        plain_req(Method::DELETE, &path, b""),
        StatusCode::UNAUTHORIZED,
        "missing_signature",
    )
    .await;
    refused(
        &app,
        signed_req(&key(), Method::DELETE, &path, b""),
        StatusCode::FORBIDDEN,
        "caller_not_edge",
    )
    .await;
    let edge_path = format!("/transports/edge:{}", a.public_key());
    refused(
        &app,
        signed_req(&a, Method::DELETE, &edge_path, b""),
        StatusCode::BAD_REQUEST,
        "bad_selector",
    )
    .await;
    refused(
        &app,
        signed_req(&a, Method::DELETE, "/transports/id:nope", b""),
        StatusCode::BAD_REQUEST,
        "bad_id",
    )
    .await;
    // Routing errors have the envelope too.
    refused(
        &app,
        plain_req(Method::PUT, &path, b""),
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    )
    .await;
    refused(&app, get("/nope"), StatusCode::NOT_FOUND, "not_found").await;
    // The refused deletes did not delete.
    let _: TransportRecord = ok_json(&app, get(&path)).await;
}

#[tokio::test]
async fn a_full_store_refuses_with_503() {
    let app = app_with(Config::default(), 1);
    let (a, b, c) = (key(), key(), key());
    register_entries(&app, &a, &[signed(&a, &b, TransportType::Dmsg)]).await;
    let (s, body) = call(
        &app,
        post_entries(&a, &[signed(&a, &c, TransportType::Dmsg)]),
    )
    .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert!(String::from_utf8_lossy(&body).contains("store_full"));
}

#[tokio::test(start_paused = true)]
async fn entries_expire_after_the_ttl_unless_registered_again() {
    let app = app();
    let (a, b, c) = (key(), key(), key());
    let ab = signed(&a, &b, TransportType::Dmsg);
    let ac = signed(&a, &c, TransportType::Dmsg);
    register_entries(&app, &a, &[ab, ac]).await;
    // A node re-registers every 90 s: ab is refreshed, ac is not.
    for _ in 0..3 {
        tokio::time::advance(Duration::from_secs(90)).await;
        register_entries(&app, &a, &[ab]).await;
    }
    // 270 s: both live. 301 s: ac is gone, ab is not.
    let all = all_transports(&app).await;
    assert_eq!(all.len(), 2);
    tokio::time::advance(Duration::from_secs(31)).await;
    let all = all_transports(&app).await;
    assert_eq!(ids(&all), [ab.entry.id]);
    refused(
        &app,
        get(&id_path(ac.entry.id)),
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let of_c = of_edge(&app, c.public_key()).await;
    assert!(of_c.is_empty());
    // Without re-registration, ab goes too, 300 s after its last refresh.
    tokio::time::advance(Duration::from_secs(300)).await;
    let all = all_transports(&app).await;
    assert!(all.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_upserts_from_many_keys() {
    let app = app();
    let hub = Arc::new(key());
    let mut tasks = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..64 {
        let k = key();
        let e = signed(&hub, &k, TransportType::Stcpr);
        ids.push(e.entry.id);
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            // Each node registers its transport three times, concurrently with the others.
            for _ in 0..3 {
                register_entries(&app, &k, &[e]).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let of_hub = of_edge(&app, hub.public_key()).await;
    let mut got: Vec<_> = of_hub.iter().map(|r| r.entry.id).collect();
    ids.sort();
    got.sort();
    assert_eq!(got, ids);
}
