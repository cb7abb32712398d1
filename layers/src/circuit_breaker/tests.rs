use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::join_all;
use std::task::Poll;
use tokio::time::advance;
use tokio_test::{assert_pending, assert_ready_err, assert_ready_ok, task};
use tower::{Layer, Service, ServiceExt, service_fn};

use tower_test::mock;

use super::*;
use crate::BoxError;
use crate::check::{HealthCheck, HealthStatus};
use crate::key::RequestAsKey;

type Key = &'static str;
type Breaker<C> = CircuitBreaker<mock::Mock<Key, Key>, Key, RequestAsKey, C>;
type Call<C> = task::Spawn<<Breaker<C> as Service<Key>>::Future>;

const OPEN: Duration = Duration::from_secs(60);
const NS: Duration = Duration::from_nanos(1);

/// A breaker keyed by the request over a tower-test mock: the service, the mock's handle and
/// the breakers' handle.
struct Harness<C = ErrorsAreFailures> {
    svc: mock::Spawn<Breaker<C>>,
    inner: mock::Handle<Key, Key>,
    breakers: BreakerHandle<Key>,
}

fn setup(threshold: u32) -> Harness {
    harness(
        CircuitBreakerLayer::builder(RequestAsKey)
            .failure_threshold(threshold)
            .open_duration(OPEN)
            .build(),
    )
}

fn harness<C: Clone>(layer: CircuitBreakerLayer<Key, RequestAsKey, C>) -> Harness<C> {
    let breakers = layer.handle();
    let (svc, inner) = mock::spawn_layer(layer);
    Harness {
        svc,
        inner,
        breakers,
    }
}

impl<C> Harness<C>
where
    Breaker<C>: Service<Key, Response = Key, Error = BoxError>,
{
    /// The request the inner service received (already: the mock's `call` is synchronous) must
    /// be `key`. Fails fast, rather than hanging, when the inner service was not called.
    #[track_caller]
    fn inner_got(&mut self, key: Key) -> mock::SendResponse<Key> {
        match self.inner.poll_request() {
            Poll::Ready(Some((req, respond))) => {
                assert_eq!(req, key);
                respond
            }
            _ => panic!("the inner service was not called for {key:?}"),
        }
    }

    /// A call for `key` admitted and passed to the inner service; returns it (not polled yet)
    /// and the inner service's responder.
    #[track_caller]
    fn start(&mut self, key: Key) -> (Call<C>, mock::SendResponse<Key>) {
        assert_ready_ok!(self.svc.poll_ready());
        let call = task::spawn(self.svc.call(key));
        (call, self.inner_got(key))
    }

    /// One call for `key` that reaches the inner service, which fails it.
    #[track_caller]
    fn fail(&mut self, key: Key) {
        let (mut call, respond) = self.start(key);
        assert_pending!(call.poll());
        respond.send_error("boom");
        let err = assert_ready_err!(call.poll());
        assert_eq!(err.to_string(), "boom");
    }

    /// `n` calls for `key` that [`fail`](Self::fail).
    #[track_caller]
    fn fail_times(&mut self, key: Key, n: usize) {
        for _ in 0..n {
            self.fail(key);
        }
    }

    /// One call for `key` that reaches the inner service, which answers it.
    #[track_caller]
    fn succeed(&mut self, key: Key) {
        let (mut call, respond) = self.start(key);
        respond.send_response("ok");
        assert_eq!(assert_ready_ok!(call.poll()), "ok");
    }

    /// One call for `key` that is rejected at once without reaching the inner service; returns
    /// its `retry_after`.
    #[track_caller]
    fn rejected(&mut self, key: Key) -> Duration {
        assert_ready_ok!(self.svc.poll_ready());
        let mut call = task::spawn(self.svc.call(key));
        let err = assert_ready_err!(call.poll());
        assert_pending!(
            self.inner.poll_request(),
            "a rejected call reached the inner service"
        );
        let open = err
            .downcast_ref::<CircuitOpen<Key>>()
            .unwrap_or_else(|| panic!("expected CircuitOpen, got {err}"));
        assert_eq!(open.key, key);
        open.retry_after
    }

    fn state(&self, key: Key) -> CircuitState {
        self.breakers.state(&key)
    }
}

/// One call with `req` through `svc` (ready first), which must succeed; returns the response.
async fn call_ok<S, R>(svc: &mut S, req: R) -> S::Response
where
    S: Service<R, Error = BoxError>,
{
    svc.ready()
        .await
        .expect("ready")
        .call(req)
        .await
        .expect("call")
}

/// One call with `req` through `svc` (ready first), which must fail; returns the error.
async fn call_err<S, R>(svc: &mut S, req: R) -> BoxError
where
    S: Service<R, Error = BoxError>,
    S::Response: std::fmt::Debug,
{
    svc.ready()
        .await
        .expect("ready")
        .call(req)
        .await
        .unwrap_err()
}

fn closed(failures: u32) -> CircuitState {
    CircuitState::Closed {
        consecutive_failures: failures,
    }
}

fn open(retry_after: Duration) -> CircuitState {
    CircuitState::Open { retry_after }
}

#[tokio::test(start_paused = true)]
async fn opens_after_exactly_threshold_consecutive_failures() {
    let mut t = setup(3);
    t.fail_times("a", 2);
    assert_eq!(t.state("a"), closed(2));
    // N-1 failures: still closed, calls still reach the inner service.
    t.fail("a");
    assert_eq!(t.state("a"), open(OPEN));
    assert_eq!(t.rejected("a"), OPEN);
}

#[tokio::test(start_paused = true)]
async fn success_resets_the_failure_count() {
    let mut t = setup(3);
    t.fail_times("a", 2);
    t.succeed("a");
    assert_eq!(t.state("a"), closed(0));
    assert_eq!(t.breakers.len(), 0, "a healthy key is not stored");
    t.fail_times("a", 2);
    // 4 failures in all, but only 2 consecutive: still closed.
    assert_eq!(t.state("a"), closed(2));
    t.succeed("a");
}

#[tokio::test(start_paused = true)]
async fn threshold_zero_is_treated_as_one() {
    let mut t = setup(0);
    t.fail("a");
    assert_eq!(t.state("a"), open(OPEN));
    t.rejected("a");
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_exact_and_decreases_with_time() {
    let mut t = setup(1);
    t.fail("a");
    assert_eq!(t.rejected("a"), OPEN);
    advance(Duration::from_secs(10)).await;
    assert_eq!(t.rejected("a"), Duration::from_secs(50));
    assert_eq!(t.state("a"), open(Duration::from_secs(50)));
    advance(Duration::from_millis(49_999)).await;
    assert_eq!(t.rejected("a"), Duration::from_millis(1));
}

#[tokio::test(start_paused = true)]
async fn half_open_exactly_at_the_boundary() {
    let mut t = setup(1);
    t.fail("a");
    advance(OPEN - NS).await;
    assert_eq!(t.state("a"), open(NS));
    assert_eq!(t.rejected("a"), NS);
    advance(NS).await;
    assert_eq!(t.state("a"), CircuitState::HalfOpen);
    // The probe reaches the inner service.
    t.succeed("a");
}

#[tokio::test(start_paused = true)]
async fn only_one_probe_at_a_time() {
    let mut t = setup(1);
    t.fail("a");
    advance(OPEN).await;
    let (mut probe, respond) = t.start("a");
    assert_pending!(probe.poll());
    for _ in 0..3 {
        assert_eq!(t.rejected("a"), Duration::ZERO);
    }
    assert_eq!(t.state("a"), CircuitState::HalfOpen);
    respond.send_response("ok");
    assert_eq!(assert_ready_ok!(probe.poll()), "ok");
}

#[tokio::test(start_paused = true)]
async fn probe_success_closes_the_circuit() {
    let mut t = setup(2);
    t.fail_times("a", 2);
    advance(OPEN).await;
    t.succeed("a");
    assert_eq!(t.state("a"), closed(0));
    assert_eq!(t.breakers.len(), 0);
    // Closed again: it takes the full threshold to re-open.
    t.fail("a");
    assert_eq!(t.state("a"), closed(1));
    t.succeed("a");
}

#[tokio::test(start_paused = true)]
async fn probe_failure_reopens_for_a_full_period() {
    let mut t = setup(2);
    t.fail_times("a", 2);
    advance(OPEN + Duration::from_secs(5)).await;
    // A single failing probe re-opens, whatever the threshold.
    t.fail("a");
    assert_eq!(t.state("a"), open(OPEN));
    assert_eq!(t.rejected("a"), OPEN);
    advance(OPEN - NS).await;
    assert_eq!(t.rejected("a"), NS);
    advance(NS).await;
    t.succeed("a");
    assert_eq!(t.state("a"), closed(0));
}

#[tokio::test(start_paused = true)]
async fn dropped_probe_releases_the_probe_slot() {
    let mut t = setup(1);
    t.fail("a");
    advance(OPEN).await;
    let (probe, _respond) = t.start("a");
    assert_eq!(t.rejected("a"), Duration::ZERO);
    drop(probe); // the caller gave up
    assert_eq!(t.state("a"), CircuitState::HalfOpen);
    // The next call is the new probe, and its outcome counts.
    t.fail("a");
    assert_eq!(t.state("a"), open(OPEN));
}

#[tokio::test(start_paused = true)]
async fn dropped_ordinary_call_counts_as_nothing() {
    let mut t = setup(2);
    t.fail("a");
    let (call, respond) = t.start("a");
    drop(call);
    respond.send_error("too late");
    assert_eq!(t.state("a"), closed(1));
}

#[tokio::test(start_paused = true)]
async fn outcomes_of_calls_admitted_before_opening_are_ignored() {
    let mut t = setup(2);
    let mut calls = Vec::new();
    for _ in 0..4 {
        calls.push(t.start("a"));
    }
    let mut calls = calls.into_iter();
    for _ in 0..2 {
        let (mut fut, respond) = calls.next().expect("4 calls");
        respond.send_error("boom");
        assert_ready_err!(fut.poll());
    }
    assert_eq!(t.state("a"), open(OPEN));
    // A late success does not close it, a late failure does not extend it.
    let (mut fut, respond) = calls.next().expect("4 calls");
    respond.send_response("late");
    assert_ready_ok!(fut.poll());
    advance(Duration::from_secs(1)).await;
    let (mut fut, respond) = calls.next().expect("4 calls");
    respond.send_error("late");
    assert_ready_err!(fut.poll());
    assert_eq!(t.state("a"), open(OPEN - Duration::from_secs(1)));
}

#[tokio::test(start_paused = true)]
async fn keys_are_independent() {
    let mut t = setup(2);
    t.fail("a");
    t.fail("b");
    t.fail("a");
    assert_eq!(t.state("a"), open(OPEN));
    assert_eq!(t.state("b"), closed(1));
    t.rejected("a");
    t.succeed("c");
    t.succeed("b");
    assert_eq!(t.state("b"), closed(0));
    assert_eq!(t.state("a"), open(OPEN));
}

#[tokio::test(start_paused = true)]
async fn reset_closes_a_key_and_ignores_its_stale_probe() {
    let mut t = setup(1);
    t.fail("a");
    assert!(t.breakers.reset(&"a"));
    assert!(!t.breakers.reset(&"a"), "nothing left to reset");
    assert_eq!(t.state("a"), closed(0));
    t.succeed("a");

    // Reset while a probe is in flight: the probe's late failure is ignored.
    t.fail("a");
    advance(OPEN).await;
    let (mut probe, respond) = t.start("a");
    t.breakers.reset(&"a");
    t.fail("a"); // re-opens (threshold 1)
    advance(OPEN).await;
    let (mut probe2, respond2) = t.start("a");
    respond.send_response("stale success");
    assert_ready_ok!(probe.poll());
    assert_eq!(
        t.state("a"),
        CircuitState::HalfOpen,
        "a stale probe decides nothing"
    );
    respond2.send_error("boom");
    assert_ready_err!(probe2.poll());
    assert_eq!(t.state("a"), open(OPEN));

    t.fail("b");
    t.breakers.reset_all();
    assert!(t.breakers.is_empty());
}

#[tokio::test(start_paused = true)]
async fn idle_failure_counts_expire_exactly_at_the_timeout() {
    let idle = Duration::from_secs(600);
    let layer = CircuitBreakerLayer::builder(RequestAsKey)
        .failure_threshold(2)
        .idle_timeout(idle)
        .build();
    let mut t = harness(layer);
    t.fail("a");
    advance(idle - NS).await;
    assert_eq!(t.state("a"), closed(1));
    assert_eq!(t.breakers.len(), 1);
    advance(NS).await;
    assert_eq!(t.state("a"), closed(0));
    // The expired failure does not add to a new one.
    t.fail("a");
    assert_eq!(t.state("a"), closed(1));
    advance(idle).await;
    assert_eq!(t.breakers.len(), 0, "idle entries are dropped");
}

/// A breaker keyed by `u32` (`threshold`, `max_keys`) whose inner service fails every call,
/// and its handle.
fn failing_u32(
    threshold: u32,
    max_keys: usize,
) -> (
    impl Service<u32, Response = (), Error = BoxError>,
    BreakerHandle<u32>,
) {
    let layer = CircuitBreakerLayer::builder(key_u32 as fn(&u32) -> u32)
        .failure_threshold(threshold)
        .max_keys(max_keys)
        .build();
    let breakers = layer.handle();
    let svc = layer.layer(service_fn(|_: u32| async {
        Err::<(), BoxError>("down".into())
    }));
    (svc, breakers)
}

fn key_u32(req: &u32) -> u32 {
    *req
}

#[tokio::test(start_paused = true)]
async fn eviction_bound_is_never_exceeded_and_open_keys_are_kept() {
    let (mut svc, breakers) = failing_u32(3, 64);
    let opened: Vec<u32> = (0..1_000).step_by(50).collect();
    for key in 0..1_000u32 {
        let tries = if opened.contains(&key) { 3 } else { 1 };
        for _ in 0..tries {
            let err = call_err(&mut svc, key).await;
            assert!(!err.is::<CircuitOpen<u32>>());
        }
        assert!(breakers.len() <= 64, "bound exceeded at key {key}");
        advance(Duration::from_millis(1)).await;
    }
    assert_eq!(breakers.len(), 64);
    for key in &opened {
        assert!(breakers.state(key).is_open(), "open key {key} was evicted");
    }
}

#[tokio::test(start_paused = true)]
async fn eviction_removes_least_recently_touched_closed_key_first() {
    let (mut svc, breakers) = failing_u32(2, 4);
    let tick = Duration::from_secs(1);
    for key in [1, 2, 3] {
        call_err(&mut svc, key).await;
        advance(tick).await;
    }
    // Touch 1 again (it becomes the most recent) and open 9.
    call_err(&mut svc, 1).await;
    call_err(&mut svc, 1).await;
    assert!(breakers.state(&1).is_open());
    breakers.reset(&1);
    call_err(&mut svc, 1).await;
    advance(tick).await;
    for _ in 0..2 {
        call_err(&mut svc, 9).await;
    }
    assert_eq!(breakers.len(), 4);
    // Full: a new key evicts 2, the least recently touched closed key (not the open 9).
    call_err(&mut svc, 5).await;
    assert_eq!(breakers.len(), 4);
    assert_eq!(breakers.state(&2), closed(0));
    assert_eq!(breakers.state(&3), closed(1));
    assert_eq!(breakers.state(&1), closed(1));
    assert!(breakers.state(&9).is_open());
}

#[tokio::test(start_paused = true)]
async fn when_every_key_is_open_the_soonest_to_end_is_evicted() {
    let (mut svc, breakers) = failing_u32(1, 3);
    // 2 opens first, then 1, then 3: 2's open period ends soonest.
    for key in [2, 1, 3] {
        call_err(&mut svc, key).await;
        advance(Duration::from_secs(1)).await;
    }
    call_err(&mut svc, 4).await;
    assert_eq!(breakers.len(), 3);
    assert_eq!(breakers.state(&2), closed(0));
    for key in [1, 3, 4] {
        assert!(breakers.state(&key).is_open(), "{key}");
    }
}

#[tokio::test(start_paused = true)]
async fn server_errors_are_failures_counts_5xx_and_returns_them() {
    let layer = CircuitBreakerLayer::builder(|_: &u16| "peer")
        .classifier(ServerErrorsAreFailures)
        .failure_threshold(2)
        .build();
    let breakers = layer.handle();
    let mut svc = layer.layer(service_fn(|status: u16| async move {
        let mut res = http::Response::new(());
        *res.status_mut() = http::StatusCode::from_u16(status)?;
        Ok::<_, BoxError>(res)
    }));
    for _ in 0..5 {
        let res = call_ok(&mut svc, 404).await;
        assert_eq!(res.status(), 404);
    }
    assert_eq!(breakers.state(&"peer"), closed(0), "4xx are not failures");
    let res = call_ok(&mut svc, 503).await;
    assert_eq!(res.status(), 503);
    assert_eq!(breakers.state(&"peer"), closed(1));
    // Errors count too.
    let err = call_err(&mut svc, 1000).await;
    assert!(!err.is::<CircuitOpen<&str>>());
    assert_eq!(breakers.state(&"peer"), open(OPEN));
    let err = call_err(&mut svc, 200).await;
    assert!(err.is::<CircuitOpen<&str>>());
}

#[tokio::test(start_paused = true)]
async fn closure_classifier_decides_what_counts() {
    let layer = CircuitBreakerLayer::builder(RequestAsKey)
        .classifier(|res: Result<&&'static str, &BoxError>| matches!(res, Ok(r) if *r == "bad"))
        .failure_threshold(2)
        .build();
    let mut t = harness(layer);
    // Errors are not failures for this classifier.
    for _ in 0..3 {
        let (mut fut, respond) = t.start("a");
        respond.send_error("boom");
        assert_ready_err!(fut.poll());
    }
    assert_eq!(t.state("a"), closed(0));
    for _ in 0..2 {
        let (mut fut, respond) = t.start("a");
        respond.send_response("bad");
        assert_eq!(assert_ready_ok!(fut.poll()), "bad", "returned unchanged");
    }
    assert_eq!(t.state("a"), open(OPEN));
}

#[tokio::test(start_paused = true)]
async fn backpressure_passes_through() {
    let mut t = setup(1);
    t.inner.allow(0);
    assert_pending!(t.svc.poll_ready());
    t.inner.allow(1);
    assert!(t.svc.is_woken());
    assert_ready_ok!(t.svc.poll_ready());
    // Inner readiness errors are passed through too.
    let mut t = setup(1);
    t.inner.send_error("not ready");
    let err = assert_ready_err!(t.svc.poll_ready());
    assert_eq!(err.to_string(), "not ready");
}

#[tokio::test(start_paused = true)]
async fn clones_of_layer_and_services_share_one_state() {
    let layer = CircuitBreakerLayer::builder(RequestAsKey)
        .failure_threshold(1)
        .build();
    let mut t1 = harness(layer.clone());
    let mut t2 = harness(layer.clone());
    t1.fail("a");
    t2.rejected("a");
    assert!(layer.handle().state(&"a").is_open());
    assert!(t2.svc.get_ref().handle().state(&"a").is_open());
    let cloned = t1.svc.get_ref().clone();
    assert!(cloned.handle().state(&"a").is_open());
}

#[tokio::test(start_paused = true)]
async fn service_new_uses_defaults() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let mut svc = CircuitBreaker::new(
        service_fn(move |_: u32| {
            counter.fetch_add(1, SeqCst);
            async { Err::<(), BoxError>("down".into()) }
        }),
        key_u32,
    );
    for _ in 0..3 {
        call_err(&mut svc, 7).await;
    }
    let err = call_err(&mut svc, 7).await;
    let open = err
        .downcast_ref::<CircuitOpen<u32>>()
        .expect("open after 3");
    assert_eq!((open.key, open.retry_after), (7, Duration::from_secs(60)));
    assert_eq!(calls.load(SeqCst), 3);
    assert!(svc.get_mut().ready().await.is_ok());
    let _inner = svc.into_inner();
}

#[tokio::test(start_paused = true)]
async fn handle_snapshot_and_health_report() {
    let mut t = setup(2);
    let report = t.breakers.check().await;
    assert_eq!(report.status, HealthStatus::Ok);
    assert_eq!(report.details["open"], 0);

    t.fail_times("a", 2);
    t.fail("b");
    advance(Duration::from_secs(1)).await;
    let mut snapshot = t.breakers.snapshot();
    snapshot.sort_by_key(|(k, _)| *k);
    assert_eq!(
        snapshot,
        vec![("a", open(OPEN - Duration::from_secs(1))), ("b", closed(1))]
    );
    let report = t.breakers.check().await;
    assert_eq!(report.status, HealthStatus::Degraded);
    assert_eq!(report.details["open"], 1);
    assert_eq!(report.details["tracked"], 2);
    assert_eq!(report.details["keys"], serde_json::json!(["\"a\""]));

    // Half-open still counts as not healthy; never `down`.
    advance(OPEN).await;
    assert_eq!(t.breakers.check().await.status, HealthStatus::Degraded);
    t.breakers.reset(&"a");
    assert_eq!(t.breakers.check().await.status, HealthStatus::Ok);
}

#[tokio::test(start_paused = true)]
async fn health_lists_at_most_16_open_keys() {
    let (mut svc, breakers) = failing_u32(1, 10_000);
    for key in 0..40 {
        call_err(&mut svc, key).await;
    }
    let report = breakers.report();
    assert_eq!(report.status, HealthStatus::Degraded);
    assert_eq!(report.details["open"], 40);
    assert_eq!(report.details["keys"].as_array().map(Vec::len), Some(16));
}

/// 10 000 calls in flight at once on one task: none reaches the inner service while the circuit
/// is open, and exactly one (the probe) once it is half-open.
#[tokio::test(start_paused = true)]
async fn ten_thousand_concurrent_calls_respect_open_and_single_probe() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let layer = CircuitBreakerLayer::builder(RequestAsKey)
        .failure_threshold(3)
        .open_duration(OPEN)
        .build();
    let breakers = layer.handle();
    let svc = layer.layer(service_fn(move |_: Key| {
        counter.fetch_add(1, SeqCst);
        async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Err::<(), BoxError>("down".into())
        }
    }));
    for _ in 0..3 {
        svc.clone().oneshot("pk").await.unwrap_err();
    }
    assert_eq!(calls.load(SeqCst), 3);

    let results = join_all((0..10_000).map(|_| svc.clone().oneshot("pk"))).await;
    assert_eq!(
        calls.load(SeqCst),
        3,
        "an open circuit reached the inner service"
    );
    assert!(
        results
            .iter()
            .all(|r| r.as_ref().is_err_and(|e| e.is::<CircuitOpen<Key>>()))
    );

    advance(OPEN).await;
    let results = join_all((0..10_000).map(|_| svc.clone().oneshot("pk"))).await;
    assert_eq!(calls.load(SeqCst), 4, "exactly one probe");
    let rejected = results
        .iter()
        .filter(|r| {
            r.as_ref()
                .err()
                .and_then(|e| e.downcast_ref::<CircuitOpen<Key>>())
                .is_some_and(|o| o.retry_after == Duration::ZERO)
        })
        .count();
    assert_eq!(rejected, 9_999);
    assert_eq!(
        breakers.state(&"pk"),
        open(OPEN),
        "the failed probe re-opened it"
    );
}

/// The same on 2 worker threads with 10 000 spawned tasks: exactly one probe gets through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_calls_on_threads_admit_exactly_one_probe() {
    let calls = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let layer = CircuitBreakerLayer::builder(key_u32 as fn(&u32) -> u32)
        .failure_threshold(1)
        .open_duration(Duration::ZERO) // half-open as soon as it opens
        .build();
    let breakers = layer.handle();
    let svc = layer.layer(service_fn({
        let calls = Arc::clone(&calls);
        let gate = Arc::clone(&gate);
        move |_: u32| {
            let n = calls.fetch_add(1, SeqCst);
            let gate = Arc::clone(&gate);
            async move {
                if n > 0 {
                    // The probe stays in flight until every other call is done.
                    let _permit = gate.acquire().await;
                }
                Err::<(), BoxError>("down".into())
            }
        }
    }));
    svc.clone().oneshot(7).await.unwrap_err();
    assert_eq!(breakers.state(&7), CircuitState::HalfOpen);

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for _ in 0..10_000 {
        let (svc, tx) = (svc.clone(), tx.clone());
        // A combinator, not an `async` block: rustc cannot prove an `async` block holding this
        // closure-made `service_fn`'s future `Send` (tower's own `Timeout` hits the same).
        tokio::spawn(svc.oneshot(7).map(move |result| tx.send(result).is_ok()));
    }
    drop(tx);
    // A guard so a regression (a second probe stuck on the gate) fails instead of hanging.
    let rejections = async {
        for _ in 0..9_999 {
            let result = rx.recv().await.expect("a result per task");
            let err = result.expect_err("every call fails");
            assert!(err.is::<CircuitOpen<u32>>(), "{err}");
        }
    };
    tokio::time::timeout(Duration::from_secs(30), rejections)
        .await
        .expect("9 999 calls rejected at once");
    assert_eq!(
        calls.load(SeqCst),
        2,
        "one opening call and exactly one probe"
    );
    gate.add_permits(1);
    let last = rx.recv().await.expect("the probe's result");
    assert_eq!(last.expect_err("probe fails").to_string(), "down");
    assert!(rx.recv().await.is_none());
}

#[test]
fn classifiers() {
    let err: BoxError = "x".into();
    assert!(ErrorsAreFailures.is_failure(Err::<&(), _>(&err)));
    assert!(!ErrorsAreFailures.is_failure(Ok(&())));
    let ok = http::Response::new(());
    let mut bad = http::Response::new(());
    *bad.status_mut() = http::StatusCode::BAD_GATEWAY;
    assert!(!ServerErrorsAreFailures.is_failure(Ok(&ok)));
    assert!(ServerErrorsAreFailures.is_failure(Ok(&bad)));
    assert!(ServerErrorsAreFailures.is_failure(Err::<&http::Response<()>, _>(&err)));
}

#[test]
fn layer_and_handle_are_debug_and_clone() {
    let layer = CircuitBreakerLayer::<u32, _>::new(key_u32);
    let text = format!("{:?}", layer.clone());
    assert!(text.contains("failure_threshold: 3"), "{text}");
    assert!(text.contains("max_keys: 10000"), "{text}");
    let handle = layer.handle();
    assert!(format!("{:?}", handle.clone()).contains("tracked: 0"));
}
