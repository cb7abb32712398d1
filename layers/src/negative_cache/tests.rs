use std::collections::HashSet;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::time::advance;
use tokio_test::{assert_pending, assert_ready, assert_ready_err, assert_ready_ok};
use tower::ServiceBuilder;
use tower::timeout::error::Elapsed;
use tower_test::mock::{self, Mock, Spawn};
use tower_test::mock::{Handle, SendResponse};

use super::*;
use crate::BoxError;
use crate::check::{HealthCheck, HealthStatus};
use crate::key::RequestAsKey;

/// `(destination, server)`: the DMSG dial key.
type Req = (&'static str, &'static str);
type Rsp = &'static str;
type Svc<F> = Spawn<NegativeCache<Mock<Req, Rsp>, RequestAsKey, F, Req>>;

const A: Req = ("pk-a", "srv-1");
const B: Req = ("pk-b", "srv-1");
const TTL: Duration = Duration::from_secs(30);
const NANO: Duration = Duration::from_nanos(1);

#[derive(Debug, PartialEq, thiserror::Error)]
#[error("dial failed with code {0}")]
struct DialError(u16);

#[derive(Debug, thiserror::Error)]
#[error("request failed")]
struct Wrapped(#[source] Cancelled);

fn setup() -> (
    Svc<IgnoreCancelled>,
    Handle<Req, Rsp>,
    NegativeCacheHandle<Req>,
) {
    let layer = NegativeCacheLayer::new(RequestAsKey);
    let cache = layer.handle();
    let (svc, handle) = mock::spawn_layer(layer);
    (svc, handle, cache)
}

/// The request the inner service has received. Never waits: the mock receives requests
/// synchronously in `call`, so a missing request (e.g. a wrong refusal) fails instead of hanging.
#[track_caller]
fn request<T: PartialEq + std::fmt::Debug, U>(
    handle: &mut Handle<T, U>,
    expected: T,
) -> SendResponse<U> {
    let (req, send) = assert_ready!(handle.poll_request()).expect("mock handle open");
    assert_eq!(req, expected);
    send
}

/// Calls `req`, has the inner service fail it with `error`, returns the error seen by the caller.
async fn fail<F: FailureFilter + Clone>(
    svc: &mut Svc<F>,
    handle: &mut Handle<Req, Rsp>,
    req: Req,
    error: impl Into<BoxError>,
) -> BoxError {
    assert_ready_ok!(svc.poll_ready());
    let fut = svc.call(req);
    request(handle, req).send_error(error);
    fut.await.expect_err("inner failed")
}

/// Calls `req`, has the inner service answer it.
async fn succeed<F: FailureFilter + Clone>(
    svc: &mut Svc<F>,
    handle: &mut Handle<Req, Rsp>,
    req: Req,
) {
    assert_ready_ok!(svc.poll_ready());
    let fut = svc.call(req);
    request(handle, req).send_response("stream");
    assert_eq!(fut.await.expect("inner succeeded"), "stream");
}

/// Calls `req`, expects an immediate `KnownBad` without the inner service seeing a request.
fn refused<F: FailureFilter + Clone>(
    svc: &mut Svc<F>,
    handle: &mut Handle<Req, Rsp>,
    req: Req,
) -> KnownBad<Req> {
    assert_ready_ok!(svc.poll_ready());
    let err = svc
        .call(req)
        .now_or_never()
        .expect("a refusal is immediate")
        .expect_err("refused");
    assert_pending!(handle.poll_request());
    *err.downcast::<KnownBad<Req>>().expect("a KnownBad error")
}

#[tokio::test(start_paused = true)]
async fn failure_marks_key_and_next_call_is_refused_without_reaching_inner() {
    let (mut svc, mut handle, cache) = setup();
    fail(&mut svc, &mut handle, A, "connection refused").await;
    assert!(cache.is_bad(&A));

    let known = refused(&mut svc, &mut handle, A);
    assert_eq!(known.key, A);
    assert_eq!(known.expires_in, TTL);
    assert_eq!(
        known.to_string(),
        "known bad: (\"pk-a\", \"srv-1\") failed recently, retry in 30s"
    );

    advance(Duration::from_secs(10)).await;
    let known = refused(&mut svc, &mut handle, A);
    assert_eq!(known.expires_in, Duration::from_secs(20));
    assert_eq!(cache.expires_in(&A), Some(Duration::from_secs(20)));
}

#[tokio::test(start_paused = true)]
async fn expiry_is_exact_at_ttl_boundary() {
    let (mut svc, mut handle, cache) = setup();
    fail(&mut svc, &mut handle, A, "down").await;

    advance(TTL - NANO).await;
    let known = refused(&mut svc, &mut handle, A);
    assert_eq!(known.expires_in, NANO);

    advance(NANO).await;
    assert_eq!(cache.raw_len(), 1, "expired, not yet removed");
    assert!(!cache.is_bad(&A));
    assert_eq!(cache.raw_len(), 0, "removed lazily by the lookup");
    succeed(&mut svc, &mut handle, A).await;
}

#[tokio::test(start_paused = true)]
async fn refailure_after_expiry_remarks_with_fresh_ttl() {
    let (mut svc, mut handle, cache) = setup();
    fail(&mut svc, &mut handle, A, "down").await;
    advance(TTL).await;

    fail(&mut svc, &mut handle, A, "still down").await;
    assert_eq!(refused(&mut svc, &mut handle, A).expires_in, TTL);
    advance(TTL - NANO).await;
    assert!(cache.is_bad(&A));
    advance(NANO).await;
    assert!(!cache.is_bad(&A));
}

#[tokio::test(start_paused = true)]
async fn success_clears_key_marked_while_in_flight() {
    let (mut svc, mut handle, cache) = setup();
    cache.insert(B);

    assert_ready_ok!(svc.poll_ready());
    let fut = svc.call(A);
    let send = request(&mut handle, A);
    cache.insert(A); // manual mark while the call is in flight
    assert!(cache.is_bad(&A));
    send.send_response("stream");
    fut.await.expect("inner succeeded");

    assert!(!cache.is_bad(&A), "the success cleared A");
    assert!(cache.is_bad(&B), "only the succeeding key is cleared");
    succeed(&mut svc, &mut handle, A).await;
}

#[tokio::test(start_paused = true)]
async fn success_clears_key_marked_by_a_concurrent_failure() {
    let (mut svc, mut handle, cache) = setup();
    assert_ready_ok!(svc.poll_ready());
    let first = svc.call(A);
    assert_ready_ok!(svc.poll_ready());
    let second = svc.call(A);
    let fail_first = request(&mut handle, A);
    let answer_second = request(&mut handle, A);

    fail_first.send_error("down");
    first.await.expect_err("failed");
    assert!(cache.is_bad(&A));

    answer_second.send_response("stream");
    second.await.expect("succeeded");
    assert!(!cache.is_bad(&A));
}

#[tokio::test(start_paused = true)]
async fn manual_insert_refuses_and_remove_allows() {
    let (mut svc, mut handle, cache) = setup();
    cache.insert(A);
    assert_eq!(refused(&mut svc, &mut handle, A).expires_in, TTL);
    assert!(cache.remove(&A));
    assert!(!cache.remove(&A));
    succeed(&mut svc, &mut handle, A).await;
}

#[tokio::test(start_paused = true)]
async fn keys_are_independent_per_destination_and_server() {
    let (mut svc, mut handle, cache) = setup();
    fail(&mut svc, &mut handle, ("pk-a", "srv-1"), "down").await;

    refused(&mut svc, &mut handle, ("pk-a", "srv-1"));
    succeed(&mut svc, &mut handle, ("pk-a", "srv-2")).await;
    succeed(&mut svc, &mut handle, ("pk-b", "srv-1")).await;
    assert_eq!(cache.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn closure_extractor_keys_by_pair() {
    // A request carrying a payload; the key is only its (dst, server) pair.
    let layer = NegativeCacheLayer::new(|r: &(Req, u32)| r.0);
    let cache = layer.handle();
    let (mut svc, mut handle) = mock::spawn_layer::<(Req, u32), Rsp, _>(layer);

    assert_ready_ok!(svc.poll_ready());
    let fut = svc.call((A, 1));
    request(&mut handle, (A, 1)).send_error("down");
    fut.await.expect_err("failed");

    assert_ready_ok!(svc.poll_ready());
    let err = svc.call((A, 2)).await.expect_err("refused");
    assert_eq!(err.downcast_ref::<KnownBad<Req>>().map(|k| k.key), Some(A));
    assert_pending!(handle.poll_request());
    assert_eq!(cache.snapshot(), vec![(A, TTL)]);
}

#[tokio::test(start_paused = true)]
async fn dropped_response_future_records_nothing() {
    let (mut svc, mut handle, cache) = setup();
    assert_ready_ok!(svc.poll_ready());
    let fut = svc.call(A);
    let send = request(&mut handle, A);
    drop(fut); // the caller gives up
    send.send_error("failed after the caller left");

    assert!(!cache.is_bad(&A));
    assert!(cache.is_empty());
    succeed(&mut svc, &mut handle, A).await;
}

#[tokio::test(start_paused = true)]
async fn cancelled_errors_are_not_recorded_and_pass_through() {
    let (mut svc, mut handle, cache) = setup();

    let err = fail(&mut svc, &mut handle, A, Cancelled::new()).await;
    assert!(err.is::<Cancelled>());
    let err = fail(&mut svc, &mut handle, A, Cancelled::wrap(DialError(1))).await;
    let cancelled = err.downcast::<Cancelled>().expect("a Cancelled");
    let source = cancelled.into_source().expect("wrapped error");
    assert_eq!(source.downcast_ref::<DialError>(), Some(&DialError(1)));
    // Deeper in the source chain.
    let err = fail(&mut svc, &mut handle, A, Wrapped(Cancelled::new())).await;
    assert!(err.is::<Wrapped>());
    assert!(!cache.is_bad(&A));

    // A real failure still counts.
    fail(&mut svc, &mut handle, A, DialError(2)).await;
    assert!(cache.is_bad(&A));
}

#[tokio::test(start_paused = true)]
async fn elapsed_is_a_failure_by_default() {
    let (mut svc, mut handle, cache) = setup();
    let err = fail(&mut svc, &mut handle, A, Elapsed::new()).await;
    assert!(err.is::<Elapsed>());
    assert!(cache.is_bad(&A));
}

#[tokio::test(start_paused = true)]
async fn elapsed_is_ignored_when_opted_in() {
    let layer = NegativeCacheLayer::new(RequestAsKey).elapsed_is_cancellation(true);
    let cache = layer.handle();
    let (mut svc, mut handle) = mock::spawn_layer(layer);

    let err = fail(&mut svc, &mut handle, A, Elapsed::new()).await;
    assert!(err.is::<Elapsed>());
    assert!(!cache.is_bad(&A));
    fail(&mut svc, &mut handle, A, Cancelled::new()).await;
    assert!(!cache.is_bad(&A));
    fail(&mut svc, &mut handle, A, "down").await;
    assert!(cache.is_bad(&A));
}

#[tokio::test(start_paused = true)]
async fn inner_attempt_timeout_is_recorded_unless_opted_in() {
    for opt_in in [false, true] {
        let nc = NegativeCacheLayer::new(RequestAsKey).elapsed_is_cancellation(opt_in);
        let cache = nc.handle();
        let stack = ServiceBuilder::new()
            .layer(nc)
            .timeout(Duration::from_secs(5));
        let (mut svc, mut handle) = mock::spawn_layer::<Req, Rsp, _>(stack);

        assert_ready_ok!(svc.poll_ready());
        let mut fut = tokio_test::task::spawn(svc.call(A));
        let _send = request(&mut handle, A);
        advance(Duration::from_secs(5) - NANO).await;
        assert_pending!(fut.poll());
        advance(NANO).await;
        let err = assert_ready_err!(fut.poll());
        assert!(err.is::<Elapsed>());
        assert_eq!(cache.is_bad(&A), !opt_in, "opt_in = {opt_in}");
    }
}

#[tokio::test(start_paused = true)]
async fn outer_timeout_firing_does_not_record() {
    let nc = NegativeCacheLayer::new(RequestAsKey);
    let cache = nc.handle();
    let stack = ServiceBuilder::new()
        .timeout(Duration::from_secs(5))
        .layer(nc);
    let (mut svc, mut handle) = mock::spawn_layer::<Req, Rsp, _>(stack);

    assert_ready_ok!(svc.poll_ready());
    let mut fut = tokio_test::task::spawn(svc.call(A));
    let send = request(&mut handle, A);
    assert_pending!(fut.poll());
    advance(Duration::from_secs(5)).await;
    let err = assert_ready_err!(fut.poll());
    assert!(err.is::<Elapsed>());
    drop(send);

    assert!(!cache.is_bad(&A));
    assert_ready_ok!(svc.poll_ready());
    let fut = svc.call(A);
    request(&mut handle, A).send_response("stream");
    assert_eq!(fut.await.expect("succeeded"), "stream");
}

#[tokio::test(start_paused = true)]
async fn custom_filter_decides_what_counts() {
    let layer = NegativeCacheLayer::new(RequestAsKey)
        .filter(|e: &BoxError| !matches!(e.downcast_ref::<DialError>(), Some(DialError(404))));
    let cache = layer.handle();
    let (mut svc, mut handle) = mock::spawn_layer(layer);

    fail(&mut svc, &mut handle, A, DialError(404)).await;
    assert!(!cache.is_bad(&A));
    // The custom filter replaces the default one: Cancelled now counts.
    fail(&mut svc, &mut handle, A, Cancelled::new()).await;
    assert!(cache.is_bad(&A));
}

#[tokio::test(start_paused = true)]
async fn zero_ttl_disables_caching() {
    let layer = NegativeCacheLayer::new(RequestAsKey).ttl(Duration::ZERO);
    let cache = layer.handle();
    let (mut svc, mut handle) = mock::spawn_layer(layer);
    fail(&mut svc, &mut handle, A, "down").await;
    assert!(!cache.is_bad(&A));
    succeed(&mut svc, &mut handle, A).await;
}

#[tokio::test(start_paused = true)]
async fn size_bound_holds_with_many_keys_and_evicts_closest_to_expiry() {
    const MAX: usize = 1_000;
    let layer = NegativeCacheLayer::new(RequestAsKey).max_entries(MAX);
    let cache = layer.handle();
    let (mut svc, mut handle) = mock::spawn_layer::<u32, (), _>(layer);

    for key in 0..10_000u32 {
        assert_ready_ok!(svc.poll_ready());
        let fut = svc.call(key);
        request(&mut handle, key).send_error("down");
        fut.await.expect_err("failed");
        advance(Duration::from_millis(1)).await;
        if key % 500 == 0 {
            assert!(cache.len() <= MAX);
        }
    }
    assert_eq!(cache.len(), MAX);
    let kept: HashSet<u32> = cache.snapshot().into_iter().map(|(k, _)| k).collect();
    let newest: HashSet<u32> = (9_000..10_000).collect();
    assert_eq!(kept, newest, "the keys closest to expiry were evicted");
    assert!(!cache.is_bad(&8_999));
    assert!(cache.is_bad(&9_000));
}

#[tokio::test(start_paused = true)]
async fn full_cache_drops_expired_entries_before_evicting() {
    let cache = NegativeCacheHandle::<u32>::new();
    cache.set_ttl(Duration::from_secs(10));
    cache.set_max_entries(3);
    cache.insert(1); // expires at 10 s
    advance(Duration::from_secs(1)).await;
    cache.insert(2); // 11 s
    advance(Duration::from_secs(1)).await;
    cache.insert(3); // 12 s
    advance(Duration::from_secs(1)).await;
    cache.insert(4); // 13 s; full and nothing expired: 1 (closest to expiry) is evicted
    assert_eq!(keys(&cache), vec![2, 3, 4]);
    advance(Duration::from_secs(1)).await;
    cache.insert(2); // 4 s: re-mark of a present key: no eviction, fresh TTL (expires at 14 s)
    assert_eq!(keys(&cache), vec![3, 4, 2]);

    advance(Duration::from_secs(8)).await; // 12 s: 3 expired
    cache.insert(5);
    assert_eq!(keys(&cache), vec![4, 2, 5]);
    assert_eq!(cache.raw_len(), 3);
    advance(Duration::from_secs(2)).await; // 14 s: 4 and 2 expired
    cache.insert(6);
    assert_eq!(keys(&cache), vec![5, 6], "every expired entry was dropped");
    assert_eq!(
        cache.raw_len(),
        2,
        "expired entries are gone, not just hidden"
    );

    fn keys(cache: &NegativeCacheHandle<u32>) -> Vec<u32> {
        cache.snapshot().into_iter().map(|(k, _)| k).collect()
    }
}

#[tokio::test(start_paused = true)]
async fn ten_thousand_concurrent_calls_for_a_bad_key_never_reach_inner() {
    let (mut svc, mut handle, cache) = setup();
    fail(&mut svc, &mut handle, A, "down").await;

    // Half the calls are for the bad key A, half for B; all in flight at once.
    let mut calls = Vec::with_capacity(10_000);
    for i in 0..10_000 {
        assert_ready_ok!(svc.poll_ready());
        calls.push(svc.call(if i % 2 == 0 { A } else { B }));
    }
    for _ in 0..5_000 {
        request(&mut handle, B).send_response("stream"); // never A
        tokio::task::yield_now().await; // fresh coop budget for `poll_request`
    }
    // Fresh coop budget, so that `Pending` below means "no request", not "budget spent".
    tokio::task::yield_now().await;
    assert_pending!(handle.poll_request());

    let results = futures_util::future::join_all(calls).await;
    let mut refusals = 0;
    for (i, result) in results.into_iter().enumerate() {
        if i % 2 == 0 {
            let err = result.expect_err("A is bad");
            assert_eq!(err.downcast_ref::<KnownBad<Req>>().map(|k| k.key), Some(A));
            refusals += 1;
        } else {
            assert_eq!(result.expect("B is fine"), "stream");
        }
    }
    assert_eq!(refusals, 5_000);
    assert_eq!(cache.snapshot(), vec![(A, TTL)]);
}

#[tokio::test(start_paused = true)]
async fn backpressure_passes_through() {
    let (mut svc, mut handle, _cache) = setup();
    handle.allow(0);
    assert_pending!(svc.poll_ready());
    handle.allow(1);
    assert!(svc.is_woken());
    assert_ready_ok!(svc.poll_ready());
    succeed(&mut svc, &mut handle, A).await;
    assert_pending!(svc.poll_ready());
}

#[tokio::test(start_paused = true)]
async fn poll_ready_error_passes_through() {
    let (mut svc, mut handle, _cache) = setup();
    handle.send_error(DialError(3));
    let err = assert_ready_err!(svc.poll_ready());
    assert_eq!(err.downcast_ref::<DialError>(), Some(&DialError(3)));
}

#[tokio::test(start_paused = true)]
async fn refusal_keeps_the_inner_readiness_for_the_next_call() {
    let (mut svc, mut handle, cache) = setup();
    cache.insert(A);
    handle.allow(1);
    refused(&mut svc, &mut handle, A);
    // The inner service's reservation was not consumed by the refusal...
    assert_ready_ok!(svc.poll_ready());
    // ...and serves the next call.
    let fut = svc.call(B);
    request(&mut handle, B).send_response("stream");
    fut.await.expect("succeeded");
    assert_pending!(svc.poll_ready());
}

#[tokio::test(start_paused = true)]
async fn inner_error_passes_through_unchanged() {
    let (mut svc, mut handle, _cache) = setup();
    let err = fail(&mut svc, &mut handle, A, DialError(7)).await;
    assert_eq!(err.downcast_ref::<DialError>(), Some(&DialError(7)));
}

#[tokio::test(start_paused = true)]
async fn handle_is_shared_and_inspects_the_cache() {
    let layer = NegativeCacheLayer::new(RequestAsKey);
    let from_layer = layer.handle();
    let (svc, _handle) = mock::spawn_layer::<Req, Rsp, _>(layer.clone());
    let from_service = svc.get_ref().clone().handle();
    assert!(from_layer.same_cache(&from_service));

    from_service.insert(A);
    advance(Duration::from_secs(5)).await;
    from_layer.insert(B);
    assert!(from_layer.is_bad(&A));
    assert_eq!(layer.handle().expires_in(&A), Some(Duration::from_secs(25)));
    assert_eq!(
        from_service.snapshot(),
        vec![(A, Duration::from_secs(25)), (B, TTL)]
    );
    assert_eq!(from_layer.len(), 2);

    let report = from_layer.check().await;
    assert_eq!(report.status, HealthStatus::Ok);
    assert_eq!(report.details, serde_json::json!({ "bad_keys": 2 }));

    advance(Duration::from_secs(25)).await; // A expired
    assert_eq!(from_layer.expires_in(&A), None);
    assert_eq!(from_layer.len(), 1);
    assert_eq!(
        from_layer.check().await.details,
        serde_json::json!({ "bad_keys": 1 })
    );

    from_service.clear();
    assert!(from_layer.is_empty());
    assert_eq!(from_layer.check().await.status, HealthStatus::Ok);
}

#[tokio::test(start_paused = true)]
async fn refused_future_is_ready_at_once() {
    let (mut svc, mut handle, cache) = setup();
    cache.insert(A);
    assert_ready_ok!(svc.poll_ready());
    let mut fut = tokio_test::task::spawn(svc.call(A));
    let err = assert_ready!(fut.poll()).expect_err("refused");
    assert!(err.is::<KnownBad<Req>>());
    assert_pending!(handle.poll_request());
}
