use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Body;
use axum::routing::post;
use axum::{Extension, Router};
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

use super::*;

const NOW: u64 = 1_700_000_000_000;

fn app(verifier: SharedVerifier) -> Router {
    Router::new().route(
        "/things",
        post(
            |Extension(VerifiedKey(pk)): Extension<VerifiedKey>, body: String| async move {
                format!("{pk}:{body}")
            },
        )
        .route_layer(RequireSignatureLayer::with_verifier(verifier)),
    )
}

fn fixed_clock_verifier(config: AuthConfig) -> (SharedVerifier, Arc<AtomicU64>) {
    let clock = Arc::new(AtomicU64::new(NOW));
    let c = clock.clone();
    let verifier = Verifier::with_clock(config, move || c.load(Ordering::Relaxed));
    (Arc::new(verifier), clock)
}

/// A test app whose verifier has the default config and a fixed clock at [`NOW`].
fn default_app() -> Router {
    app(fixed_clock_verifier(AuthConfig::default()).0)
}

/// `POST /things` carrying `body`, signed for exactly that.
fn post_things(key: &SecretKey, body: &str, ts: u64, nonce: [u8; 16]) -> Request<Body> {
    signed(key, Method::POST, "/things", "/things", body, ts, nonce)
}

fn signed(
    key: &SecretKey,
    method: Method,
    signed_target: &str,
    sent_target: &str,
    body: &str,
    ts: u64,
    nonce: [u8; 16],
) -> Request<Body> {
    let headers = sign(key, &method, signed_target, body.as_bytes(), ts, nonce);
    let mut req = Request::builder()
        .method(method)
        .uri(sent_target)
        .body(Body::from(body.to_owned()))
        .unwrap();
    req.headers_mut().extend(headers);
    req
}

async fn answer(app: &Router, req: Request<Body>) -> (StatusCode, String) {
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The status, the error code and the message of an error answer.
async fn refusal(app: &Router, req: Request<Body>) -> (StatusCode, String, String) {
    let (status, body) = answer(app, req).await;
    let parsed = crate::api::ErrorBody::parse(body.as_bytes())
        .unwrap_or_else(|| panic!("not an error envelope: {body}"));
    (status, parsed.code, parsed.message)
}

/// Asserts that a [`refusal`] is `status` with the error code `code` and a message containing
/// `message_has`.
#[track_caller]
fn assert_refused(
    got: &(StatusCode, String, String),
    status: StatusCode,
    code: &str,
    message_has: &str,
) {
    let (got_status, got_code, message) = got;
    assert_eq!(
        (*got_status, got_code.as_str()),
        (status, code),
        "{message}"
    );
    assert!(
        message.contains(message_has),
        "{message:?} lacks {message_has:?}"
    );
}

fn key() -> SecretKey {
    SecretKey::generate().unwrap()
}

#[tokio::test]
async fn a_valid_signature_reaches_the_handler_with_the_key() {
    let app = default_app();
    let k = key();
    let req = signed(
        &k,
        Method::POST,
        "/things?x=1",
        "/things?x=1",
        "hello",
        NOW,
        [1; 16],
    );
    assert_eq!(
        answer(&app, req).await,
        (StatusCode::OK, format!("{}:hello", k.public_key()))
    );
}

#[tokio::test]
async fn each_missing_header_is_a_401_naming_it() {
    let app = default_app();
    let k = key();
    for header in [PUBLIC, TIMESTAMP, NONCE, SIG] {
        let mut req = post_things(&k, "x", NOW, [2; 16]);
        req.headers_mut().remove(&header);
        let got = refusal(&app, req).await;
        assert_refused(&got, StatusCode::UNAUTHORIZED, "missing_signature", "");
        assert!(
            got.2.starts_with(&format!("{header} header missing")),
            "{}",
            got.2
        );
    }
}

#[tokio::test]
async fn malformed_headers_are_401_bad_signature_header() {
    let app = default_app();
    let k = key();
    let cases = [
        (PUBLIC, "not-a-key"),
        (TIMESTAMP, "yesterday"),
        (NONCE, "abcd"),
        (NONCE, &"zz".repeat(16)),
        (SIG, "00"),
    ];
    for (header, value) in cases {
        let mut req = post_things(&k, "x", NOW, [3; 16]);
        req.headers_mut()
            .insert(header.clone(), http::HeaderValue::from_str(value).unwrap());
        assert_refused(
            &refusal(&app, req).await,
            StatusCode::UNAUTHORIZED,
            "bad_signature_header",
            &format!("malformed {header}"),
        );
    }
}

#[tokio::test]
async fn a_signature_does_not_move_to_another_key_path_method_query_or_body() {
    let app = default_app();
    let k = key();
    let other = key();

    // Wrong key: signed by `k`, claims `other`.
    let mut req = post_things(&k, "x", NOW, [4; 16]);
    req.headers_mut()
        .insert(PUBLIC, other.public_key().to_string().try_into().unwrap());
    assert_refused(
        &refusal(&app, req).await,
        StatusCode::UNAUTHORIZED,
        "bad_signature",
        &other.public_key().to_string(),
    );

    // Wrong path, wrong query, wrong method.
    for (signed_method, signed_target) in [
        (Method::POST, "/other"),
        (Method::POST, "/things?admin=1"),
        (Method::PUT, "/things"),
    ] {
        let mut req = signed(
            &k,
            signed_method,
            signed_target,
            "/things",
            "x",
            NOW,
            [5; 16],
        );
        *req.method_mut() = Method::POST;
        assert_refused(
            &refusal(&app, req).await,
            StatusCode::UNAUTHORIZED,
            "bad_signature",
            "",
        );
    }

    // Wrong body: signed "x", sent "y".
    let mut req = post_things(&k, "x", NOW, [6; 16]);
    *req.body_mut() = Body::from("y");
    assert_refused(
        &refusal(&app, req).await,
        StatusCode::UNAUTHORIZED,
        "bad_signature",
        "",
    );
}

#[tokio::test]
async fn replays_are_refused_but_forgeries_do_not_burn_a_nonce() {
    let app = default_app();
    let k = key();

    // A forged request with nonce 7 (bad signature) ...
    let mut forged = post_things(&k, "x", NOW, [7; 16]);
    *forged.body_mut() = Body::from("evil");
    assert_eq!(refusal(&app, forged).await.1, "bad_signature");
    // ... does not stop the real one with the same nonce.
    let req = post_things(&k, "x", NOW, [7; 16]);
    assert_eq!(answer(&app, req).await.0, StatusCode::OK);

    // The same request again is a replay.
    let again = post_things(&k, "x", NOW, [7; 16]);
    assert_refused(
        &refusal(&app, again).await,
        StatusCode::UNAUTHORIZED,
        "replayed_request",
        "nonce already used",
    );

    // Another key may use the same nonce.
    let req = post_things(&key(), "x", NOW, [7; 16]);
    assert_eq!(answer(&app, req).await.0, StatusCode::OK);
}

#[tokio::test]
async fn timestamps_outside_the_window_are_refused_both_ways() {
    let (verifier, clock) = fixed_clock_verifier(AuthConfig::default());
    let app = app(verifier);
    let k = key();
    for ts in [NOW - 30_001, NOW + 30_001] {
        let req = post_things(&k, "x", ts, [8; 16]);
        assert_refused(
            &refusal(&app, req).await,
            StatusCode::UNAUTHORIZED,
            "stale_timestamp",
            "30000 ms",
        );
    }
    // A request signed at the edge of the window is accepted ...
    let req = post_things(&k, "x", NOW - 30_000, [9; 16]);
    assert_eq!(answer(&app, req).await.0, StatusCode::OK);
    // ... and expires once the clock moves on.
    clock.store(NOW + 1, Ordering::Relaxed);
    let req = post_things(&k, "x", NOW - 30_000, [10; 16]);
    assert_eq!(refusal(&app, req).await.1, "stale_timestamp");
}

#[tokio::test]
async fn an_oversized_body_is_413_and_a_full_replay_set_503() {
    let config = AuthConfig {
        max_body: 8,
        max_seen: 2,
        ..AuthConfig::default()
    };
    let (verifier, _) = fixed_clock_verifier(config);
    let app = app(verifier);
    let k = key();
    let req = post_things(&k, "123456789", NOW, [11; 16]);
    assert_refused(
        &refusal(&app, req).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        "8 bytes",
    );

    for n in 0..2 {
        let req = post_things(&k, "x", NOW, [20 + n; 16]);
        assert_eq!(answer(&app, req).await.0, StatusCode::OK);
    }
    let req = post_things(&k, "x", NOW, [30; 16]);
    let res = app.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers()[http::header::RETRY_AFTER], "1");
}

#[tokio::test]
async fn concurrent_requests_from_one_key_all_succeed_over_the_signed_client() {
    let app = app(Arc::new(Verifier::new(AuthConfig::default())));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let k = Arc::new(key());
    let client = SignedClient::new(&url).unwrap().with_key(k.clone());
    let calls = (0..64).map(|i| {
        let client = client.clone();
        async move {
            client
                .send(Method::POST, "/things", Some(format!("{i}").into_bytes()))
                .await
        }
    });
    let results = futures_util::future::join_all(calls).await;
    for (i, r) in results.into_iter().enumerate() {
        let (status, body) = r.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, format!("{}:{i}", k.public_key()).as_bytes());
    }

    // The typed error of a refusal.
    let err = SignedClient::new(&url)
        .unwrap()
        .send(Method::POST, "/things", None)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::UNAUTHORIZED));
    assert_eq!(err.api_code(), Some("missing_signature"));
    assert!(!err.is_retryable());
    server.abort();
}

#[tokio::test]
async fn signed_client_refuses_bad_base_urls_and_reports_unreachable_services() {
    for bad in ["ftp://x", "not a url", "http://127.0.0.1:1/path"] {
        assert!(
            matches!(SignedClient::new(bad), Err(ClientError::Url { .. })),
            "{bad}"
        );
    }
    // A closed port: a transport error, retryable.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let err = SignedClient::new(&format!("http://{addr}"))
        .unwrap()
        .send(Method::GET, "/", None)
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Transport { .. }), "{err}");
    assert!(err.is_retryable());
}

#[test]
fn signing_bytes_layout() {
    let bytes = signing_bytes(&Method::DELETE, "/a?b=c", 42, &[0xab; 16], b"");
    let text = String::from_utf8(bytes).unwrap();
    assert_eq!(
        text,
        format!(
            "DELETE\n/a?b=c\n42\n{}\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "ab".repeat(16)
        )
    );
}

/// A [`SharedNonces`] in memory, as several instances' verifiers would share Redis.
#[derive(Debug, Default)]
struct FakeShared {
    seen: std::sync::Mutex<std::collections::HashSet<(PublicKey, [u8; 16])>>,
    ttls: std::sync::Mutex<Vec<Duration>>,
    down: std::sync::atomic::AtomicBool,
}

impl SharedNonces for FakeShared {
    fn mark_once(&self, pk: &PublicKey, nonce: &[u8; 16], ttl: Duration) -> NonceFuture<'_> {
        let result = if self.down.load(Ordering::Relaxed) {
            Err("connection refused".to_owned())
        } else {
            self.ttls.lock().unwrap().push(ttl);
            Ok(self.seen.lock().unwrap().insert((*pk, *nonce)))
        };
        Box::pin(std::future::ready(result))
    }
}

#[tokio::test]
async fn instances_sharing_nonces_refuse_each_others_replays() {
    let shared = Arc::new(FakeShared::default());
    let instance = |shared: &Arc<FakeShared>| {
        let verifier = Verifier::with_clock(AuthConfig::default(), || NOW)
            .with_shared_nonces(Some(shared.clone() as Arc<dyn SharedNonces>));
        app(Arc::new(verifier))
    };
    let (a, b) = (instance(&shared), instance(&shared));
    let k = key();
    let req = || post_things(&k, "x", NOW, [9; 16]);

    assert_eq!(answer(&a, req()).await.0, StatusCode::OK);
    // Accepted by A: a replay to B (whose own seen-set has never seen it) is refused too.
    assert_refused(
        &refusal(&b, req()).await,
        StatusCode::UNAUTHORIZED,
        "replayed_request",
        "",
    );
    // Kept for twice the window plus a second: any instance's clock may still accept it.
    assert_eq!(
        *shared.ttls.lock().unwrap(),
        vec![Duration::from_secs(61), Duration::from_secs(61)]
    );

    // A forgery is refused before the shared store is asked (it cannot burn the nonce there).
    let mut forged = post_things(&k, "x", NOW, [10; 16]);
    *forged.body_mut() = Body::from("evil");
    assert_eq!(refusal(&b, forged).await.1, "bad_signature");
    assert_eq!(shared.ttls.lock().unwrap().len(), 2);
    let real = post_things(&k, "x", NOW, [10; 16]);
    assert_eq!(answer(&b, real).await.0, StatusCode::OK);
}

#[tokio::test]
async fn an_unreachable_shared_nonce_store_refuses_with_503() {
    let shared = Arc::new(FakeShared::default());
    shared.down.store(true, Ordering::Relaxed);
    let verifier = Verifier::with_clock(AuthConfig::default(), || NOW)
        .with_shared_nonces(Some(shared.clone() as Arc<dyn SharedNonces>));
    let app = app(Arc::new(verifier));
    let k = key();
    let req = post_things(&k, "x", NOW, [3; 16]);
    let res = app.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers()[http::header::RETRY_AFTER], "1");
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let parsed = crate::api::ErrorBody::parse(&body).unwrap();
    assert_eq!(parsed.code, "replay_store_unavailable");
    assert!(
        parsed.message.contains("connection refused"),
        "{}",
        parsed.message
    );
    // Never let through unchecked; once the store is back, a fresh request passes.
    shared.down.store(false, Ordering::Relaxed);
    let req = post_things(&k, "x", NOW, [4; 16]);
    assert_eq!(answer(&app, req).await.0, StatusCode::OK);
}
