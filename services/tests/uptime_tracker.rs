//! uptime-tracker: uptime accounting checked against hand-computed values (paused time driving
//! the tracker's wall clock), retention, signatures, every refusal, the rate limit, the typed
//! client (first heartbeat at start-up) and `--mode dual` answering the same over HTTP and DMSG.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use skytower_services::auth::{self, AuthConfig, Verifier};
use skytower_services::dmsg_discovery::{FakeRelativeClock, KeyedRateLimit};
use skytower_services::svcmode::{Mode, SvcConfig};
use skytower_services::uptime_tracker::{
    Accounting, Day, MemoryUptimeStore, NodeUptime, TokioClock, TrackerConfig, UptimeClient,
    UptimeQuery, UptimeService, UptimeTracker, Uptimes,
};
use skytower_transports::connector::Connector;
use skytower_transports::dmsg::replay::unix_ms_now;
use skytower_transports::identity::SecretKey;
use skytower_transports::testing::{TestNetwork, test_client_config};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

const T: Duration = Duration::from_secs(20);
const MIN: Duration = Duration::from_secs(60);

/// 2026-01-05 00:00 UTC.
const JAN5: u64 = 1_767_571_200_000;
const HOUR_MS: u64 = 3_600_000;

fn config() -> TrackerConfig {
    TrackerConfig {
        rate_per_second: 1_000_000,
        rate_burst: 1_000_000,
        ..TrackerConfig::default()
    }
}

fn service_at(config: &TrackerConfig, start_ms: u64) -> UptimeService {
    let store = Arc::new(MemoryUptimeStore::new(config.accounting));
    UptimeService::new(config, store).with_clock(Arc::new(TokioClock::starting_at(start_ms)))
}

fn key() -> SecretKey {
    SecretKey::generate().unwrap()
}

/// A `POST /heartbeat` carrying `body`, signed by `key` as if it went to `signed_target`.
fn signed_heartbeat(
    key: &SecretKey,
    signed_target: &str,
    body: &str,
    ts: u64,
    nonce: [u8; 16],
) -> Request<Body> {
    let headers = auth::sign(
        key,
        &Method::POST,
        signed_target,
        body.as_bytes(),
        ts,
        nonce,
    );
    let mut req = Request::builder()
        .method(Method::POST)
        .uri("/heartbeat")
        .header("content-type", "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap();
    req.headers_mut().extend(headers);
    req
}

/// A heartbeat carrying `body`, correctly signed now with a fresh nonce.
fn signed_body(key: &SecretKey, body: &str) -> Request<Body> {
    let mut nonce = [0u8; 16];
    getrandom::fill(&mut nonce).unwrap();
    signed_heartbeat(key, "/heartbeat", body, unix_ms_now(), nonce)
}

fn heartbeat_req(key: &SecretKey, version: &str) -> Request<Body> {
    signed_body(key, &format!(r#"{{"version":"{version}"}}"#))
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    json: serde_json::Value,
}

impl Answer {
    fn code(&self) -> &str {
        self.json["error"]["code"].as_str().unwrap_or("")
    }
}

/// Asserts that `a` is the error answer `status` with the error code `code`.
#[track_caller]
fn assert_refused(a: &Answer, status: StatusCode, code: &str) {
    assert_eq!((a.status, a.code()), (status, code), "{}", a.json);
}

async fn send(app: &Router, req: Request<Body>) -> Answer {
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&bytes)));
    Answer {
        status,
        headers,
        json,
    }
}

async fn beat(app: &Router, key: &SecretKey) -> serde_json::Value {
    let a = send(app, heartbeat_req(key, "1.0.0")).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.json);
    a.json
}

fn daily(json: &serde_json::Value) -> Vec<(String, f64)> {
    json["daily"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(d, p)| (d.clone(), p.as_f64().unwrap()))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn uptime_over_several_days_matches_hand_computed_values() {
    // The tracker's clock starts on 2026-01-05 at 23:50 UTC and follows paused tokio time.
    let cfg = config();
    let service = service_at(&cfg, JAN5 + 23 * HOUR_MS + 50 * 60_000);
    let app = service.router();
    let node = key();
    let pk = node.public_key();

    // A: 23:50 (first: credits nothing), then every 5 min up to 00:20 on Jan 6:
    //    Jan 5 gets 23:50–00:00 = 600 s, Jan 6 gets 00:00–00:20 = 1200 s.
    let first = beat(&app, &node).await;
    assert_eq!(first["first"], true);
    assert_eq!(first["credited_ms"], 0);
    assert_eq!(first["interval_secs"], 300);
    for _ in 0..6 {
        tokio::time::advance(5 * MIN).await;
        let ack = beat(&app, &node).await;
        assert_eq!(ack["credited_ms"], 300_000);
    }
    // B: silent for 20 min, heartbeat at 00:40: only 00:20–00:26 counts (+360 s, Jan 6).
    tokio::time::advance(20 * MIN).await;
    assert_eq!(beat(&app, &node).await["credited_ms"], 360_000);
    // C: silent until 23:58 on Jan 6: 00:40–00:46 counts (+360 s, Jan 6).
    tokio::time::advance(23 * 60 * MIN + 18 * MIN).await;
    assert_eq!(beat(&app, &node).await["credited_ms"], 360_000);
    // D: 00:03 on Jan 7: 23:58–00:00 to Jan 6 (+120 s), 00:00–00:03 to Jan 7 (180 s).
    tokio::time::advance(5 * MIN).await;
    assert_eq!(beat(&app, &node).await["credited_ms"], 300_000);
    // E: silent until 00:00 on Jan 8: 00:03–00:09 on Jan 7 (+360 s).
    tokio::time::advance(23 * 60 * MIN + 57 * MIN).await;
    beat(&app, &node).await;
    // F: every 5 min for all of Jan 8 (288 heartbeats, the last at 00:00 on Jan 9).
    for _ in 0..288 {
        tokio::time::advance(5 * MIN).await;
        beat(&app, &node).await;
    }

    // Now 2026-01-09 00:00. By hand:
    //   Jan 5:   600 s / 86400 = 0.694 % → 0.69
    //   Jan 6:  1200 + 360 + 360 + 120 = 2040 s → 2.361 % → 2.36
    //   Jan 7:   180 + 360 = 540 s → 0.625 % → 0.63
    //   Jan 8:  86400 s → 100
    //   Jan 9:  0 (the last heartbeat credits the time before it)
    let a = send(&app, get(&format!("/uptime/{pk}"))).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.json);
    assert_eq!(a.json["online"], true);
    assert_eq!(a.json["version"], "1.0.0");
    assert_eq!(a.json["last_heartbeat"], JAN5 + 4 * 24 * HOUR_MS);
    let expect = [
        ("2026-01-03", 0.0),
        ("2026-01-04", 0.0),
        ("2026-01-05", 0.69),
        ("2026-01-06", 2.36),
        ("2026-01-07", 0.63),
        ("2026-01-08", 100.0),
        ("2026-01-09", 0.0),
    ];
    let expect: Vec<(String, f64)> = expect.iter().map(|(d, p)| ((*d).into(), *p)).collect();
    assert_eq!(
        daily(&a.json),
        expect,
        "the default range is the last 7 days"
    );

    // An explicit range, through /uptimes with a key filter.
    let a = send(
        &app,
        get(&format!("/uptimes?keys={pk}&from=2026-01-06&to=2026-01-07")),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.json);
    assert_eq!(
        (a.json["from"].as_str(), a.json["to"].as_str()),
        (Some("2026-01-06"), Some("2026-01-07"))
    );
    assert_eq!(a.json["truncated"], false);
    let nodes = a.json["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 1);
    assert_eq!(
        daily(&nodes[0]),
        vec![("2026-01-06".into(), 2.36), ("2026-01-07".into(), 0.63)]
    );

    // Online for 6 minutes after the last heartbeat, offline after.
    tokio::time::advance(6 * MIN).await;
    assert_eq!(
        send(&app, get(&format!("/uptime/{pk}"))).await.json["online"],
        true
    );
    tokio::time::advance(Duration::from_secs(1)).await;
    let a = send(&app, get(&format!("/uptime/{pk}"))).await;
    assert_eq!(a.json["online"], false);
    assert_eq!(a.json["daily"]["2026-01-08"], 100.0);
}

#[tokio::test(start_paused = true)]
async fn data_past_the_retention_expires_and_is_purged() {
    let cfg = TrackerConfig {
        accounting: Accounting {
            retention: Duration::from_secs(2 * 86_400),
            ..Accounting::default()
        },
        ..config()
    };
    let service = service_at(&cfg, JAN5);
    let app = service.router();
    let (a, b) = (key(), key());
    beat(&app, &a).await;
    beat(&app, &b).await;
    // `b` keeps heartbeating once a day (a gap: 6 min credited each time), `a` goes silent.
    for _ in 0..2 {
        tokio::time::advance(Duration::from_secs(86_400)).await;
        beat(&app, &b).await;
    }
    tokio::time::advance(Duration::from_secs(1)).await;
    let gone = send(&app, get(&format!("/uptime/{}", a.public_key()))).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert_eq!(gone.code(), "not_found");
    let all = send(&app, get("/uptimes")).await;
    let listed: Vec<&str> = all.json["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["pk"].as_str().unwrap())
        .collect();
    assert_eq!(listed, vec![b.public_key().to_string()]);
    assert_eq!(service.store().len(service.now_ms()).await.unwrap(), 1);
    service.maintain_once().await;
    assert_eq!(service.store().len(service.now_ms()).await.unwrap(), 1);
    // The maintenance task purges on its own on the paused clock.
    let stop = CancellationToken::new();
    let task = tokio::spawn({
        let s = service.clone();
        let stop = stop.clone();
        async move { s.maintain(stop).await }
    });
    tokio::time::advance(Duration::from_secs(3 * 86_400)).await;
    tokio::time::sleep(cfg.purge_interval * 2).await;
    assert_eq!(service.store().len(service.now_ms()).await.unwrap(), 0);
    stop.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn signatures_are_required_and_checked() {
    // The verifier's clock is fixed, so "expired" is exact.
    const NOW: u64 = 1_700_000_000_000;
    let cfg = config();
    let service = service_at(&cfg, JAN5).with_verifier(Arc::new(Verifier::with_clock(
        AuthConfig::default(),
        || NOW,
    )));
    let app = service.router();
    let node = key();
    let body = r#"{"version":"1.0.0"}"#;

    // Missing.
    let unsigned = Request::post("/heartbeat").body(Body::from(body)).unwrap();
    let a = send(&app, unsigned).await;
    assert_refused(&a, StatusCode::UNAUTHORIZED, "missing_signature");
    assert!(
        a.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("sw-public")
    );

    // Valid.
    let ok = signed_heartbeat(&node, "/heartbeat", body, NOW, [1; 16]);
    assert_eq!(send(&app, ok).await.status, StatusCode::OK);

    // Replayed (same nonce).
    let again = signed_heartbeat(&node, "/heartbeat", body, NOW, [1; 16]);
    assert_refused(
        &send(&app, again).await,
        StatusCode::UNAUTHORIZED,
        "replayed_request",
    );

    // Wrong key: signed by one key, claiming another.
    let other = key();
    let mut forged = signed_heartbeat(&node, "/heartbeat", body, NOW, [2; 16]);
    forged.headers_mut().insert(
        auth::PUBLIC,
        other.public_key().to_string().parse().unwrap(),
    );
    assert_refused(
        &send(&app, forged).await,
        StatusCode::UNAUTHORIZED,
        "bad_signature",
    );

    // Wrong path: a signature made for another target.
    let moved = signed_heartbeat(&node, "/heartbeat?x=1", body, NOW, [3; 16]);
    assert_refused(
        &send(&app, moved).await,
        StatusCode::UNAUTHORIZED,
        "bad_signature",
    );

    // Another body than the one signed.
    let mut swapped = signed_heartbeat(&node, "/heartbeat", body, NOW, [4; 16]);
    *swapped.body_mut() = Body::from(r#"{"version":"6.6.6"}"#);
    assert_refused(
        &send(&app, swapped).await,
        StatusCode::UNAUTHORIZED,
        "bad_signature",
    );

    // Expired: 31 s old (the window is 30 s).
    let old = signed_heartbeat(&node, "/heartbeat", body, NOW - 31_000, [5; 16]);
    assert_refused(
        &send(&app, old).await,
        StatusCode::UNAUTHORIZED,
        "stale_timestamp",
    );

    // Malformed header.
    let mut bad = signed_heartbeat(&node, "/heartbeat", body, NOW, [6; 16]);
    bad.headers_mut().insert(auth::SIG, "zz".parse().unwrap());
    assert_refused(
        &send(&app, bad).await,
        StatusCode::UNAUTHORIZED,
        "bad_signature_header",
    );

    // None of the refused ones counted: one heartbeat, by `node`, version 1.0.0.
    let a = send(&app, get(&format!("/uptime/{}", node.public_key()))).await;
    assert_eq!(a.json["version"], "1.0.0");
    let a = send(&app, get(&format!("/uptime/{}", other.public_key()))).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn bad_input_is_refused_with_specific_codes() {
    let cfg = TrackerConfig {
        max_keys: 3,
        max_days: 10,
        ..config()
    };
    let service = service_at(&cfg, JAN5 + 12 * HOUR_MS);
    let app = service.router();
    let node = key();
    beat(&app, &node).await;
    let pk = node.public_key();

    let signed_body = |body: &str| signed_body(&node, body);
    let cases: Vec<(Request<Body>, StatusCode, &str)> = vec![
        (signed_body("{"), StatusCode::BAD_REQUEST, "malformed_json"),
        (
            signed_body("{}"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "malformed_heartbeat",
        ),
        (
            signed_body(r#"{"version":"1","extra":1}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "malformed_heartbeat",
        ),
        (
            signed_body(r#"{"version":"has space"}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_version",
        ),
        (
            signed_body(&format!(r#"{{"version":"{}"}}"#, "1".repeat(65))),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_version",
        ),
        (
            signed_body(&format!(r#"{{"version":"{}"}}"#, "1".repeat(5000))),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
        (get("/uptime/nope"), StatusCode::BAD_REQUEST, "bad_key"),
        (
            get(&format!("/uptime/{}", key().public_key())),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            get(&format!("/uptime/{pk}?keys={pk}")),
            StatusCode::BAD_REQUEST,
            "unknown_parameter",
        ),
        (
            get("/uptimes?days=3"),
            StatusCode::BAD_REQUEST,
            "unknown_parameter",
        ),
        (
            get("/uptimes?from=2026-01-01&from=2026-01-02"),
            StatusCode::BAD_REQUEST,
            "duplicate_parameter",
        ),
        (get("/uptimes?keys=abc"), StatusCode::BAD_REQUEST, "bad_key"),
        (get("/uptimes?keys="), StatusCode::BAD_REQUEST, "bad_key"),
        (
            get(&format!("/uptimes?keys={pk},{pk},{pk},{pk}")),
            StatusCode::BAD_REQUEST,
            "too_many_keys",
        ),
        (
            get("/uptimes?from=2026-02-30"),
            StatusCode::BAD_REQUEST,
            "bad_date",
        ),
        (
            get("/uptimes?to=yesterday"),
            StatusCode::BAD_REQUEST,
            "bad_date",
        ),
        (
            get("/uptimes?from=2026-01-06&to=2026-01-05"),
            StatusCode::BAD_REQUEST,
            "bad_range",
        ),
        (
            get("/uptimes?from=2025-12-01"),
            StatusCode::BAD_REQUEST,
            "range_too_long",
        ),
        (get("/nope"), StatusCode::NOT_FOUND, "not_found"),
        (
            get("/heartbeat"),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
    ];
    for (req, status, code) in cases {
        let what = format!("{} {}", req.method(), req.uri());
        let a = send(&app, req).await;
        assert_eq!((a.status, a.code()), (status, code), "{what}: {}", a.json);
        assert!(
            !a.json["error"]["message"].as_str().unwrap().is_empty(),
            "{what}"
        );
    }
    // A range of exactly max_days is fine, percent-encoded commas too.
    let a = send(
        &app,
        get(&format!(
            "/uptimes?keys={pk}%2C{pk}&from=2025-12-27&to=2026-01-05"
        )),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.json);
    assert_eq!(a.json["nodes"].as_array().unwrap().len(), 1);
    assert_eq!(a.json["nodes"][0]["daily"].as_object().unwrap().len(), 10);
    // The service still works after all that.
    assert_eq!(beat(&app, &node).await["first"], false);
}

#[tokio::test]
async fn a_full_store_answers_503_store_full() {
    let cfg = TrackerConfig {
        accounting: Accounting {
            max_nodes: 1,
            ..Accounting::default()
        },
        ..config()
    };
    let app = service_at(&cfg, JAN5).router();
    beat(&app, &key()).await;
    let a = send(&app, heartbeat_req(&key(), "1")).await;
    assert_refused(&a, StatusCode::SERVICE_UNAVAILABLE, "store_full");
    assert!(a.headers.contains_key("retry-after"));
}

#[tokio::test]
async fn clients_are_rate_limited_per_ip_and_heartbeats_per_key() {
    let cfg = config();
    let clock = FakeRelativeClock::default();
    let service =
        service_at(&cfg, JAN5).with_rate_limit(KeyedRateLimit::with_clock(1, 3, clock.clone()));
    let app = service.router();
    let from = |ip: &str, mut req: Request<Body>| {
        let addr: std::net::SocketAddr = format!("{ip}:4000").parse().unwrap();
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(addr));
        req
    };
    for _ in 0..3 {
        assert_eq!(
            send(&app, from("192.0.2.1", get("/uptimes"))).await.status,
            StatusCode::OK
        );
    }
    let a = send(&app, from("192.0.2.1", get("/uptimes"))).await;
    assert_refused(&a, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    assert_eq!(a.headers["retry-after"], "1");
    // Another client is not affected.
    assert_eq!(
        send(&app, from("192.0.2.2", get("/uptimes"))).await.status,
        StatusCode::OK
    );
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        send(&app, from("192.0.2.1", get("/uptimes"))).await.status,
        StatusCode::OK
    );

    // One key heartbeating from many addresses is limited by its key.
    let node = key();
    for i in 0..3 {
        let a = send(
            &app,
            from(&format!("198.51.100.{i}"), heartbeat_req(&node, "1")),
        )
        .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.json);
    }
    assert_refused(
        &send(&app, from("198.51.100.9", heartbeat_req(&node, "1"))).await,
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
    );
}

fn http_svc() -> SvcConfig {
    SvcConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        grace: Duration::from_secs(2),
        ..SvcConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_heartbeats_at_start_up_and_reads_back() {
    let tracker = UptimeTracker::bind(http_svc(), config()).await.unwrap();
    let url = format!("http://{}", tracker.http_addr().unwrap());
    let store = tracker.service().store().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(tracker.serve(async {
        let _ = stopped.await;
    }));

    // A node started with a one-hour interval: its first heartbeat must not wait for it.
    let node = Arc::new(key());
    let client = UptimeClient::new(&url).unwrap().with_key(node.clone());
    let cancel = CancellationToken::new();
    let beating = tokio::spawn({
        let client = client.clone();
        let cancel = cancel.clone();
        async move {
            client
                .run("2.0.0".into(), Duration::from_secs(3600), cancel)
                .await
        }
    });
    let deadline = tokio::time::Instant::now() + T;
    while store.len(unix_ms_now()).await.unwrap() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no heartbeat at start-up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cancel.cancel();
    tokio::time::timeout(T, beating).await.unwrap().unwrap();

    let me: NodeUptime = client.uptime(&node.public_key()).await.unwrap();
    assert!(me.online);
    assert_eq!(me.version, "2.0.0");
    let all: Uptimes = client
        .uptimes(&UptimeQuery {
            keys: vec![node.public_key()],
            ..UptimeQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(all.nodes, vec![me]);
    // Typed errors.
    let err = client.uptime(&key().public_key()).await.unwrap_err();
    assert_eq!(
        (err.status(), err.api_code()),
        (Some(StatusCode::NOT_FOUND), Some("not_found"))
    );
    let err = client
        .uptimes(&UptimeQuery {
            from: Day::parse("2026-01-02"),
            to: Day::parse("2026-01-01"),
            ..UptimeQuery::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.api_code(), Some("bad_range"));
    let anonymous = UptimeClient::new(&url).unwrap();
    let err = anonymous.heartbeat("1").await.unwrap_err();
    assert_eq!(err.api_code(), Some("missing_signature"));

    // /health (the service mode's) carries the store check.
    let health: serde_json::Value = client.http().get_json("/health").await.unwrap();
    assert_eq!(health["service"], "uptime-tracker");
    assert_eq!(health["checks"]["store"]["details"]["nodes"], 1);

    stop.send(()).unwrap();
    tokio::time::timeout(T, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_mode_answers_the_same_over_http_and_dmsg() {
    let net = TestNetwork::start(1).await;
    let svc = SvcConfig {
        key: Some(key()),
        discovery: Some(Arc::new(net.discovery().clone())),
        mode: Mode::Dual,
        client: test_client_config(),
        ..http_svc()
    };
    let tracker = UptimeTracker::bind(svc, config()).await.unwrap();
    let http_url = format!("http://{}", tracker.http_addr().unwrap());
    let dmsg_url = format!("dmsg://{}", tracker.dmsg_addr().unwrap());
    net.wait_published(tracker.svc().dmsg_client().unwrap())
        .await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(tracker.serve(async {
        let _ = stopped.await;
    }));

    let caller = Arc::new(net.client().await);
    let connector = Connector::with_dmsg(caller.clone()).connect_timeout(Duration::from_secs(10));
    let node = Arc::new(key());
    let over_http = UptimeClient::with_connector(&http_url, connector.clone())
        .unwrap()
        .with_key(node.clone());
    let over_dmsg = UptimeClient::with_connector(&dmsg_url, connector)
        .unwrap()
        .with_key(node.clone());

    // A heartbeat over each transport, both signed and accepted.
    assert!(over_dmsg.heartbeat("3.0.0").await.unwrap().first);
    assert!(!over_http.heartbeat("3.0.0").await.unwrap().first);
    let unknown = key().public_key();
    for path in [
        format!("/uptime/{}", node.public_key()),
        format!("/uptimes?keys={}", node.public_key()),
        format!("/uptime/{unknown}"),
        "/uptime/nope".to_owned(),
        "/uptimes?from=x".to_owned(),
    ] {
        let h = over_http.http().send(Method::GET, &path, None).await;
        let d = over_dmsg.http().send(Method::GET, &path, None).await;
        match (h, d) {
            (Ok((hs, hb)), Ok((ds, db))) => {
                assert_eq!((hs, &hb), (ds, &db), "{path}");
            }
            (Err(he), Err(de)) => {
                assert_eq!(he.to_string(), de.to_string(), "{path}");
                assert!(he.status().is_some(), "{path}: {he}");
            }
            (h, d) => panic!("{path}: http {h:?} vs dmsg {d:?}"),
        }
    }
    let me = over_dmsg.uptime(&node.public_key()).await.unwrap();
    assert!(me.online);
    // /health over DMSG reports the DMSG address and the store.
    let health: serde_json::Value = over_dmsg.http().get_json("/health").await.unwrap();
    assert_eq!(health["checks"]["store"]["status"], "ok");
    assert_eq!(
        health["checks"]["dmsg"]["details"]["address"],
        dmsg_url.trim_start_matches("dmsg://")
    );

    drop((over_http, over_dmsg));
    stop.send(()).unwrap();
    tokio::time::timeout(T, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    if let Ok(c) = Arc::try_unwrap(caller) {
        c.close().await;
    }
}
