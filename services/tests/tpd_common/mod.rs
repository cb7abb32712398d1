//! Helpers shared by the transport-discovery and route-finder tests: keys, signed entries,
//! signed requests, and one-shot calls against a router.

#![allow(dead_code)]

use axum::Router;
use axum::body::Body;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use skytower_services::api::ErrorBody;
use skytower_services::auth;
use skytower_services::transport_discovery::{
    Label, SignedEntry, TransportEntry, TransportId, TransportRecord, TransportType,
};
use skytower_transports::identity::{PublicKey, SecretKey};
use tower::ServiceExt;

pub fn key() -> SecretKey {
    SecretKey::generate().unwrap()
}

/// The entry of a transport between `a` and `b`, signed by both.
pub fn signed(a: &SecretKey, b: &SecretKey, kind: TransportType) -> SignedEntry {
    let e = TransportEntry::new(a.public_key(), b.public_key(), kind, Label::User);
    SignedEntry::sign_both(e, a, b).unwrap()
}

/// A request signed by `key` now, with a fresh nonce.
pub fn signed_req(key: &SecretKey, method: Method, path: &str, body: &[u8]) -> Request<Body> {
    let headers = auth::sign_now(key, &method, path, body).unwrap();
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(Body::from(body.to_vec()))
        .unwrap();
    req.headers_mut().extend(headers);
    req
}

pub fn plain_req(method: Method, path: &str, body: &[u8]) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(Body::from(body.to_vec()))
        .unwrap()
}

/// An unsigned `GET path`.
pub fn get(path: &str) -> Request<Body> {
    plain_req(Method::GET, path, b"")
}

/// `POST /transports` of `entries`, signed by `key`.
pub fn post_entries(key: &SecretKey, entries: &[SignedEntry]) -> Request<Body> {
    signed_req(key, Method::POST, "/transports", &json(&entries))
}

/// Registers `entries` as `key`; asserts a 200 and returns the stored records.
pub async fn register_entries(
    app: &Router,
    key: &SecretKey,
    entries: &[SignedEntry],
) -> Vec<TransportRecord> {
    ok_json(app, post_entries(key, entries)).await
}

/// `GET /transports/edge:{pk}`, asserted to be a 200.
pub async fn of_edge(app: &Router, pk: PublicKey) -> Vec<TransportRecord> {
    ok_json(app, get(&format!("/transports/edge:{pk}"))).await
}

/// `GET /all-transports`, asserted to be a 200.
pub async fn all_transports(app: &Router) -> Vec<TransportRecord> {
    ok_json(app, get("/all-transports")).await
}

/// The path of one transport by its id.
pub fn id_path(id: TransportId) -> String {
    format!("/transports/id:{id}")
}

/// The ids of `records`, in their order.
pub fn ids(records: &[TransportRecord]) -> Vec<TransportId> {
    records.iter().map(|r| r.entry.id).collect()
}

/// Calls the router; returns the status and the body.
pub async fn call(app: &Router, req: Request<Body>) -> (StatusCode, Vec<u8>) {
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let body = res.into_body().collect().await.unwrap().to_bytes().to_vec();
    (status, body)
}

/// Calls the router and decodes a 200 JSON answer.
pub async fn ok_json<T: serde::de::DeserializeOwned>(app: &Router, req: Request<Body>) -> T {
    let (status, body) = call(app, req).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

/// Calls the router and returns the status, the error code and the message.
pub async fn refusal(app: &Router, req: Request<Body>) -> (StatusCode, String, String) {
    let (status, body) = call(app, req).await;
    let e = ErrorBody::parse(&body).unwrap_or_else(|| {
        panic!(
            "{status}: not an error envelope: {}",
            String::from_utf8_lossy(&body)
        )
    });
    (status, e.code, e.message)
}

/// Asserts a refusal's status and code; returns the message.
pub async fn refused(app: &Router, req: Request<Body>, status: StatusCode, code: &str) -> String {
    let (s, c, m) = refusal(app, req).await;
    assert_eq!((s, c.as_str()), (status, code), "{m}");
    m
}

pub fn json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}
