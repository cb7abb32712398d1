use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body::Body;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio_test::{assert_pending, assert_ready, assert_ready_ok, task};
use tower::{Layer, Service, ServiceExt, service_fn};
use tower_test::mock;

use super::*;
use crate::BoxError;
use crate::check::{CheckFuture, CheckReport, HealthCheck};

type Req = Request<String>;
type Rsp = Response<String>;

fn request(method: Method, uri: &str) -> Req {
    Request::builder()
        .method(method)
        .uri(uri)
        .body(String::new())
        .unwrap()
}

fn get(uri: &str) -> Req {
    request(Method::GET, uri)
}

/// An inner service answering `inner <path>`.
async fn echo(req: Req) -> Result<Rsp, Infallible> {
    Ok(Response::new(format!("inner {}", req.uri().path())))
}

async fn body_of(res: Response<ResponseBody<String>>) -> Bytes {
    res.into_body().collect().await.unwrap().to_bytes()
}

async fn json_of(res: Response<ResponseBody<String>>) -> Value {
    serde_json::from_slice(&body_of(res).await).unwrap()
}

/// Calls `uri` with GET on a fresh clone of `svc`.
async fn call<S>(svc: &S, uri: &str) -> Response<ResponseBody<String>>
where
    S: Service<Req, Response = Response<ResponseBody<String>>, Error = BoxError> + Clone,
{
    svc.clone().oneshot(get(uri)).await.unwrap()
}

/// A check that never finishes.
struct Hang;

impl HealthCheck for Hang {
    fn check(&self) -> CheckFuture<'_> {
        Box::pin(std::future::pending())
    }
}

/// A check that answers `ok` after the given (tokio) duration.
struct Slow(Duration);

impl HealthCheck for Slow {
    fn check(&self) -> CheckFuture<'_> {
        let delay = self.0;
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            CheckReport::ok()
        })
    }
}

/// A check whose running future holds a clone of `0` and never finishes.
struct Holding(Arc<()>);

impl HealthCheck for Holding {
    fn check(&self) -> CheckFuture<'_> {
        let guard = Arc::clone(&self.0);
        Box::pin(async move {
            let _guard = guard;
            std::future::pending::<()>().await;
            CheckReport::ok()
        })
    }
}

#[derive(Debug, PartialEq, thiserror::Error)]
#[error("inner failed with {0}")]
struct InnerError(u32);

#[derive(Clone, Debug, PartialEq)]
struct Marker(&'static str);

// ===== answering on the health path =====

#[tokio::test]
async fn get_health_is_answered_without_reaching_inner() {
    let (mut svc, mut handle) = mock::spawn_layer::<Req, Rsp, _>(HealthLayer::new("svc"));
    assert_ready_ok!(svc.poll_ready());
    let res = svc.call(get("/health")).await.unwrap();

    assert_pending!(handle.poll_request());
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.body().is_report());
    assert_eq!(res.headers()["content-type"], "application/json");
    assert_eq!(res.headers()["cache-control"], "no-store");
    let body = body_of(res).await;
    let json: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["service"], "svc");
}

#[tokio::test]
async fn head_has_get_status_and_headers_and_an_empty_body() {
    let layer = HealthLayer::new("svc").check("db", || {
        CheckReport::down(json!({ "error": "connection refused" }))
    });
    let (mut svc, mut handle) = mock::spawn_layer::<Req, Rsp, _>(layer);

    assert_ready_ok!(svc.poll_ready());
    let get_res = svc.call(get("/health")).await.unwrap();
    assert_ready_ok!(svc.poll_ready());
    let head_res = svc.call(request(Method::HEAD, "/health")).await.unwrap();
    assert_pending!(handle.poll_request());

    assert_eq!(head_res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(head_res.status(), get_res.status());
    assert_eq!(head_res.headers(), get_res.headers());
    assert!(head_res.body().is_end_stream());
    assert_eq!(head_res.body().size_hint().exact(), Some(0));

    let get_body = body_of(get_res).await;
    assert!(!get_body.is_empty());
    assert_eq!(
        head_res.headers()["content-length"],
        HeaderValue::from(get_body.len())
    );
    assert!(body_of(head_res).await.is_empty());
}

#[tokio::test]
async fn query_string_is_ignored() {
    let (mut svc, mut handle) = mock::spawn_layer::<Req, Rsp, _>(HealthLayer::new("svc"));
    assert_ready_ok!(svc.poll_ready());
    let res = svc.call(get("/health?verbose=1&x=y")).await.unwrap();
    assert_pending!(handle.poll_request());
    assert!(res.body().is_report());
    assert_eq!(json_of(res).await["service"], "svc");
}

#[tokio::test]
async fn custom_path_is_answered_and_default_path_passes_through() {
    let svc = HealthLayer::new("svc")
        .path("status")
        .layer(service_fn(echo));

    let res = call(&svc, "/status").await;
    assert!(res.body().is_report());
    assert_eq!(json_of(res).await["service"], "svc");

    let res = call(&svc, "/health").await;
    assert!(!res.body().is_report());
    assert_eq!(body_of(res).await, "inner /health");
}

// ===== passing through =====

#[tokio::test]
async fn other_requests_reach_inner_exactly_and_responses_come_back_unchanged() {
    let (mut svc, mut handle) = mock::spawn_layer::<Req, Rsp, _>(HealthLayer::new("svc"));

    let mut req = Request::builder()
        .method(Method::POST)
        .uri("http://relay.example/api/v1/sessions?x=1")
        .version(Version::HTTP_2)
        .header("x-test", "1")
        .body("payload".to_owned())
        .unwrap();
    req.extensions_mut().insert(Marker("request"));

    assert_ready_ok!(svc.poll_ready());
    let mut fut = task::spawn(svc.call(req));
    assert_pending!(fut.poll());

    let (seen, send) = handle.next_request().await.unwrap();
    assert_eq!(seen.method(), Method::POST);
    assert_eq!(
        seen.uri().to_string(),
        "http://relay.example/api/v1/sessions?x=1"
    );
    assert_eq!(seen.version(), Version::HTTP_2);
    assert_eq!(seen.headers().len(), 1);
    assert_eq!(seen.headers()["x-test"], "1");
    assert_eq!(seen.extensions().get::<Marker>(), Some(&Marker("request")));
    assert_eq!(seen.body(), "payload");

    let mut rsp = Response::builder()
        .status(StatusCode::IM_A_TEAPOT)
        .version(Version::HTTP_2)
        .header("x-resp", "2")
        .body("teapot".to_owned())
        .unwrap();
    rsp.extensions_mut().insert(Marker("response"));
    send.send_response(rsp);

    let res = assert_ready_ok!(fut.poll());
    assert_eq!(res.status(), StatusCode::IM_A_TEAPOT);
    assert_eq!(res.version(), Version::HTTP_2);
    assert_eq!(res.headers().len(), 1);
    assert_eq!(res.headers()["x-resp"], "2");
    assert_eq!(res.extensions().get::<Marker>(), Some(&Marker("response")));
    assert!(!res.body().is_report());
    assert_eq!(res.body().size_hint().exact(), Some(6));
    assert_eq!(body_of(res).await, "teapot");
}

#[tokio::test]
async fn other_paths_pass_through() {
    let (mut svc, mut handle) = mock::spawn_layer::<Req, Rsp, _>(HealthLayer::new("svc"));
    for path in [
        "/",
        "/healthz",
        "/health/",
        "/health/db",
        "/Health",
        "/api/health",
    ] {
        assert_ready_ok!(svc.poll_ready());
        let mut fut = task::spawn(svc.call(get(path)));
        let (seen, send) = handle.next_request().await.unwrap();
        assert_eq!(seen.uri().path(), path);
        send.send_response(Response::new(format!("inner {path}")));
        let res = assert_ready_ok!(fut.poll());
        assert!(!res.body().is_report(), "{path}");
        assert_eq!(body_of(res).await, format!("inner {path}"));
    }
}

#[tokio::test]
async fn other_methods_on_the_health_path_pass_through() {
    let (mut svc, mut handle) = mock::spawn_layer::<Req, Rsp, _>(HealthLayer::new("svc"));
    for method in [
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::OPTIONS,
    ] {
        assert_ready_ok!(svc.poll_ready());
        let mut fut = task::spawn(svc.call(request(method.clone(), "/health")));
        let (seen, send) = handle.next_request().await.unwrap();
        assert_eq!(seen.method(), method);
        assert_eq!(seen.uri().path(), "/health");
        send.send_response(Response::new("inner".to_owned()));
        let res = assert_ready_ok!(fut.poll());
        assert!(!res.body().is_report(), "{method}");
        assert_eq!(body_of(res).await, "inner");
    }
}

#[tokio::test]
async fn backpressure_passes_through() {
    let (mut svc, mut handle) = mock::spawn_layer::<Req, Rsp, _>(HealthLayer::new("svc"));
    handle.allow(0);
    assert_pending!(svc.poll_ready());

    handle.allow(1);
    assert!(svc.is_woken());
    assert_ready_ok!(svc.poll_ready());

    // The health path consumes that readiness without calling inner.
    let res = svc.call(get("/health")).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_pending!(handle.poll_request());
}

#[tokio::test]
async fn inner_call_errors_pass_through_unchanged() {
    let (mut svc, mut handle) = mock::spawn_layer::<Req, Rsp, _>(HealthLayer::new("svc"));
    assert_ready_ok!(svc.poll_ready());
    let mut fut = task::spawn(svc.call(get("/api")));
    let (_, send) = handle.next_request().await.unwrap();
    send.send_error(InnerError(7));

    let err = assert_ready!(fut.poll()).unwrap_err();
    assert_eq!(err.downcast_ref::<InnerError>(), Some(&InnerError(7)));
}

#[tokio::test]
async fn inner_readiness_errors_pass_through_unchanged() {
    let (mut svc, mut handle) = mock::spawn_layer::<Req, Rsp, _>(HealthLayer::new("svc"));
    handle.send_error(InnerError(9));
    let err = assert_ready!(svc.poll_ready()).unwrap_err();
    assert_eq!(err.downcast_ref::<InnerError>(), Some(&InnerError(9)));
}

// ===== status =====

#[tokio::test]
async fn no_checks_is_200_ok() {
    let svc = HealthLayer::new("svc").layer(service_fn(echo));
    let res = call(&svc, "/health").await;
    assert_eq!(res.status(), StatusCode::OK);
    let json = json_of(res).await;
    assert_eq!(json["status"], "ok");
    assert_eq!(json["checks"], json!({}));
}

#[tokio::test]
async fn all_checks_ok_is_200() {
    let svc = HealthLayer::new("svc")
        .check("a", CheckReport::ok)
        .check("b", || {
            CheckReport::ok().with_details(json!({ "sessions": 3 }))
        })
        .layer(service_fn(echo));
    let res = call(&svc, "/health").await;
    assert_eq!(res.status(), StatusCode::OK);
    let json = json_of(res).await;
    assert_eq!(json["status"], "ok");
    assert_eq!(json["checks"]["a"], json!({ "status": "ok" }));
    assert_eq!(
        json["checks"]["b"],
        json!({ "status": "ok", "details": { "sessions": 3 } })
    );
}

#[tokio::test]
async fn one_degraded_check_is_503_degraded() {
    let svc = HealthLayer::new("svc")
        .check("a", CheckReport::ok)
        .check("b", || CheckReport::degraded(json!({ "open": 1 })))
        .layer(service_fn(echo));
    let res = call(&svc, "/health").await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let json = json_of(res).await;
    assert_eq!(json["status"], "degraded");
    assert_eq!(json["checks"]["a"]["status"], "ok");
    assert_eq!(json["checks"]["b"]["status"], "degraded");
}

#[tokio::test]
async fn one_down_check_is_503_down() {
    let svc = HealthLayer::new("svc")
        .check("a", CheckReport::ok)
        .check("b", || CheckReport::down(json!({ "error": "refused" })))
        .layer(service_fn(echo));
    let res = call(&svc, "/health").await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let json = json_of(res).await;
    assert_eq!(json["status"], "down");
    assert_eq!(json["checks"]["b"]["details"]["error"], "refused");
}

#[tokio::test]
async fn worst_status_wins_whatever_the_order() {
    // Names chosen so the worst check sorts first, last and in the middle.
    for (names, expected) in [
        (["a", "b", "c"], "down"),
        (["c", "a", "b"], "down"),
        (["b", "c", "a"], "down"),
    ] {
        let svc = HealthLayer::new("svc")
            .check(names[0], || CheckReport::down(Value::Null))
            .check(names[1], || CheckReport::degraded(Value::Null))
            .check(names[2], CheckReport::ok)
            .layer(service_fn(echo));
        let res = call(&svc, "/health").await;
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(json_of(res).await["status"], expected, "{names:?}");
    }

    let svc = HealthLayer::new("svc")
        .check("a", CheckReport::ok)
        .check("b", || CheckReport::degraded(Value::Null))
        .check("c", CheckReport::ok)
        .layer(service_fn(echo));
    assert_eq!(
        json_of(call(&svc, "/health").await).await["status"],
        "degraded"
    );
}

// ===== timeouts, concurrency, cancellation =====

#[tokio::test(start_paused = true)]
async fn check_timeout_reports_down_exactly_at_the_timeout() {
    let layer = HealthLayer::new("svc")
        .check_timeout(Duration::from_millis(500))
        .check("fast", CheckReport::ok)
        .check("hang", Hang);
    let (mut svc, mut handle) = mock::spawn_layer::<Req, Rsp, _>(layer);
    assert_ready_ok!(svc.poll_ready());
    let mut fut = task::spawn(svc.call(get("/health")));
    assert_pending!(fut.poll());

    tokio::time::advance(Duration::from_millis(499)).await;
    assert_pending!(fut.poll());

    tokio::time::advance(Duration::from_millis(1)).await;
    let res = assert_ready_ok!(fut.poll());
    assert_pending!(handle.poll_request());
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let json = json_of(res).await;
    assert_eq!(json["status"], "down");
    assert_eq!(json["checks"]["fast"], json!({ "status": "ok" }));
    assert_eq!(
        json["checks"]["hang"],
        json!({ "status": "down", "details": { "error": "timed out", "timeout_ms": 500 } })
    );
}

#[tokio::test(start_paused = true)]
async fn default_check_timeout_is_two_seconds() {
    let svc = HealthLayer::new("svc")
        .check("hang", Hang)
        .layer(service_fn(echo));
    let mut fut = task::spawn(svc.oneshot(get("/health")));
    assert_pending!(fut.poll());
    tokio::time::advance(Duration::from_millis(1999)).await;
    assert_pending!(fut.poll());
    tokio::time::advance(Duration::from_millis(1)).await;
    let res = assert_ready_ok!(fut.poll());
    assert_eq!(
        json_of(res).await["checks"]["hang"]["details"]["timeout_ms"],
        2000
    );
}

#[tokio::test(start_paused = true)]
async fn checks_run_concurrently() {
    let svc = HealthLayer::new("svc")
        .check("a", Slow(Duration::from_millis(300)))
        .check("b", Slow(Duration::from_millis(300)))
        .check("c", Slow(Duration::from_millis(300)))
        .layer(service_fn(echo));
    let mut fut = task::spawn(svc.oneshot(get("/health")));
    assert_pending!(fut.poll());
    tokio::time::advance(Duration::from_millis(299)).await;
    assert_pending!(fut.poll());
    // Run one after the other they would need 900 ms.
    tokio::time::advance(Duration::from_millis(1)).await;
    let res = assert_ready_ok!(fut.poll());
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_response_future_cancels_running_checks() {
    let held = Arc::new(());
    let layer = HealthLayer::new("svc").check("holding", Holding(Arc::clone(&held)));
    let registry = layer.registry();
    let svc = layer.layer(service_fn(echo));
    assert_eq!(Arc::strong_count(&held), 2);

    let mut fut = task::spawn(svc.oneshot(get("/health")));
    assert_pending!(fut.poll());
    assert_eq!(
        Arc::strong_count(&held),
        3,
        "the running check holds a clone"
    );

    drop(fut);
    assert_eq!(Arc::strong_count(&held), 2);
    assert!(registry.deregister("holding"));
    assert_eq!(Arc::strong_count(&held), 1, "nothing else kept the check");
}

// ===== registry =====

#[tokio::test]
async fn runtime_registration_is_visible_to_existing_clones() {
    let layer = HealthLayer::new("svc");
    let registry = layer.registry();
    let svc = layer.layer(service_fn(echo));
    let clone = svc.clone();
    let from_layer_clone = layer.clone().layer(service_fn(echo));
    assert_eq!(call(&clone, "/health").await.status(), StatusCode::OK);

    registry
        .register("late", || CheckReport::degraded(json!({ "why": "late" })))
        .unwrap();
    svc.registry().register("later", CheckReport::ok).unwrap();

    for svc in [&svc, &clone, &from_layer_clone] {
        let res = call(svc, "/health").await;
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        let json = json_of(res).await;
        assert_eq!(json["checks"]["late"]["details"]["why"], "late");
        assert_eq!(json["checks"]["later"]["status"], "ok");
    }
    assert_eq!(registry.names(), ["late", "later"]);
}

#[tokio::test]
async fn deregister_removes_the_check() {
    let layer = HealthLayer::new("svc")
        .check("db", || CheckReport::down(Value::Null))
        .check("cache", CheckReport::ok);
    let registry = layer.registry();
    let svc = layer.layer(service_fn(echo));
    assert_eq!(
        call(&svc, "/health").await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );

    assert!(registry.deregister("db"));
    assert!(!registry.deregister("db"), "already gone");
    assert!(!registry.contains("db"));

    let res = call(&svc, "/health").await;
    assert_eq!(res.status(), StatusCode::OK);
    let json = json_of(res).await;
    assert_eq!(json["checks"], json!({ "cache": { "status": "ok" } }));
}

#[test]
fn registration_beyond_the_limit_is_refused_with_a_typed_error() {
    let registry = HealthRegistry::with_max_checks(2);
    registry.register("a", CheckReport::ok).unwrap();
    registry.register("b", CheckReport::ok).unwrap();

    let err = registry.register("c", CheckReport::ok).unwrap_err();
    assert_eq!(err.name(), "c");
    assert_eq!(err.max(), 2);
    assert_eq!(registry.len(), 2);
    assert!(!registry.contains("c"));

    // Replacing an existing name needs no new slot; freeing a slot makes room.
    registry
        .register("a", || CheckReport::down(Value::Null))
        .unwrap();
    assert_eq!(registry.len(), 2);
    assert!(registry.deregister("b"));
    registry.register("c", CheckReport::ok).unwrap();
    assert_eq!(registry.names(), ["a", "c"]);
}

#[tokio::test]
async fn registering_an_existing_name_replaces_the_check() {
    let layer = HealthLayer::new("svc").check("db", CheckReport::ok);
    let svc = layer.layer(service_fn(echo));
    layer
        .registry()
        .register("db", || CheckReport::down(Value::Null))
        .unwrap();
    let json = json_of(call(&svc, "/health").await).await;
    assert_eq!(json["checks"], json!({ "db": { "status": "down" } }));
}

#[test]
fn default_registry_holds_64_checks() {
    let registry = HealthLayer::new("svc").registry();
    for i in 0..64 {
        registry.register(format!("c{i}"), CheckReport::ok).unwrap();
    }
    let err = registry.register("c64", CheckReport::ok).unwrap_err();
    assert_eq!(err.max(), 64);
    assert_eq!(registry.len(), 64);
}

#[test]
#[should_panic(expected = "health registry is full (1 checks): cannot register check \"b\"")]
fn layer_check_beyond_the_limit_panics() {
    let _ = HealthLayer::with_registry("svc", HealthRegistry::with_max_checks(1))
        .check("a", CheckReport::ok)
        .check("b", CheckReport::ok);
}

// ===== document =====

#[tokio::test(start_paused = true)]
async fn json_shape_has_every_field() {
    let layer = HealthLayer::new("dmsg-discovery")
        .version("0.1.0")
        .commit("abc1234")
        .check("db", CheckReport::ok)
        .check("breaker", || {
            CheckReport::degraded(json!({ "open": ["pk-a"], "count": 1 }))
        });
    let svc = layer.layer(service_fn(echo));
    tokio::time::advance(Duration::from_secs(3)).await;

    let json = json_of(call(&svc, "/health").await).await;
    let keys: BTreeSet<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from([
            "service",
            "version",
            "commit",
            "status",
            "started_at",
            "uptime_secs",
            "checks"
        ])
    );
    assert_eq!(json["service"], "dmsg-discovery");
    assert_eq!(json["version"], "0.1.0");
    assert_eq!(json["commit"], "abc1234");
    assert_eq!(json["status"], "degraded");
    assert_eq!(json["uptime_secs"], 3);
    assert!(json["started_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        json["checks"],
        json!({
            "breaker": { "status": "degraded", "details": { "open": ["pk-a"], "count": 1 } },
            "db": { "status": "ok" },
        })
    );
}

#[tokio::test]
async fn unknown_version_and_commit_are_omitted() {
    let svc = HealthLayer::new("svc").layer(service_fn(echo));
    let json = json_of(call(&svc, "/health").await).await;
    let object = json.as_object().unwrap();
    assert!(!object.contains_key("version"));
    assert!(!object.contains_key("commit"));
    assert_eq!(object["service"], "svc");
}

#[tokio::test(start_paused = true)]
async fn uptime_follows_advanced_time_and_started_at_is_rfc3339() {
    let before = SystemTime::now() - Duration::from_secs(1);
    let svc = HealthLayer::new("svc").layer(service_fn(echo));
    let after = SystemTime::now() + Duration::from_secs(1);

    let json = json_of(call(&svc, "/health").await).await;
    assert_eq!(json["uptime_secs"], 0);
    let started_at = humantime::parse_rfc3339(json["started_at"].as_str().unwrap()).unwrap();
    assert!(
        before <= started_at && started_at <= after,
        "{started_at:?}"
    );

    tokio::time::advance(Duration::from_millis(11_999)).await;
    assert_eq!(
        json_of(call(&svc, "/health").await).await["uptime_secs"],
        11
    );
    tokio::time::advance(Duration::from_millis(1)).await;
    let json = json_of(call(&svc, "/health").await).await;
    assert_eq!(json["uptime_secs"], 12);
    // `started_at` is fixed at creation.
    assert_eq!(
        humantime::parse_rfc3339(json["started_at"].as_str().unwrap()).unwrap(),
        started_at
    );
}

// ===== bound under load =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_concurrent_calls_never_exceed_the_check_bound() {
    const MAX: usize = 64;
    let layer = HealthLayer::with_registry("svc", HealthRegistry::with_max_checks(MAX));
    let registry = layer.registry();
    let svc = layer.layer(service_fn(echo));

    enum Outcome {
        Registered,
        Refused(TooManyChecks, String),
        Reported(usize, StatusCode),
        Passed(Bytes),
    }

    let mut tasks = Vec::with_capacity(10_000);
    for i in 0..10_000 {
        let registry = registry.clone();
        let svc = svc.clone();
        tasks.push(tokio::spawn(async move {
            match i % 4 {
                0 | 1 => {
                    let name = format!("check-{i}");
                    match registry.register(name.clone(), CheckReport::ok) {
                        Ok(()) => Outcome::Registered,
                        Err(err) => Outcome::Refused(err, name),
                    }
                }
                2 => {
                    let res = call(&svc, "/health").await;
                    let status = res.status();
                    let json = json_of(res).await;
                    Outcome::Reported(json["checks"].as_object().unwrap().len(), status)
                }
                _ => Outcome::Passed(body_of(call(&svc, "/api").await).await),
            }
        }));
    }

    let (mut registered, mut refused, mut reported, mut passed) = (0, 0, 0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Outcome::Registered => registered += 1,
            Outcome::Refused(err, name) => {
                assert_eq!(err.max(), MAX);
                assert_eq!(err.name(), name);
                refused += 1;
            }
            Outcome::Reported(checks, status) => {
                assert!(checks <= MAX, "{checks} checks reported");
                assert_eq!(status, StatusCode::OK);
                reported += 1;
            }
            Outcome::Passed(body) => {
                assert_eq!(body, "inner /api");
                passed += 1;
            }
        }
    }
    assert_eq!(registered, MAX);
    assert_eq!(refused, 5_000 - MAX);
    assert_eq!((reported, passed), (2_500, 2_500));
    assert_eq!(registry.len(), MAX);
    let json = json_of(call(&svc, "/health").await).await;
    assert_eq!(json["checks"].as_object().unwrap().len(), MAX);
}

// ===== composition =====

#[tokio::test]
async fn works_inside_a_service_builder_stack() {
    let svc = tower::ServiceBuilder::new()
        .concurrency_limit(4)
        .layer(HealthLayer::new("svc").check("a", CheckReport::ok))
        .service_fn(echo);
    let res = svc.clone().oneshot(get("/health")).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let res = svc.oneshot(get("/x")).await.unwrap();
    assert_eq!(body_of(res).await, "inner /x");
}
