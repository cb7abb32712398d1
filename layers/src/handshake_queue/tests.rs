use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use serde_json::json;
use tokio::time::{Instant, advance};
use tokio_test::{assert_pending, assert_ready_err, assert_ready_ok, task};
use tower::{Layer, Service, ServiceExt, service_fn};
use tower_test::mock;

use super::*;
use crate::BoxError;
use crate::check::{HealthCheck, HealthStatus};

const MS: Duration = Duration::from_millis(1);
const SECS_10: Duration = Duration::from_secs(10);

type Svc = mock::Spawn<HandshakeQueue<mock::Mock<&'static str, &'static str>>>;
type Inner = mock::Handle<&'static str, &'static str>;
type Call = task::Spawn<
    <HandshakeQueue<mock::Mock<&'static str, &'static str>> as Service<&'static str>>::Future,
>;

fn layer(max_in_flight: usize, max_queued: usize) -> HandshakeQueueLayer {
    HandshakeQueueLayer::new()
        .max_in_flight(max_in_flight)
        .max_queued(max_queued)
}

/// `l` over a tower-test mock: the queue's handle, the service, and the inner mock's handle.
fn spawn(l: HandshakeQueueLayer) -> (HandshakeQueueHandle, Svc, Inner) {
    let h = l.handle();
    let (svc, inner) = mock::spawn_layer(l);
    (h, svc, inner)
}

/// Calls `svc` with `req` and polls once: admitted (running or queued), still pending.
#[track_caller]
fn admitted(svc: &mut Svc, req: &'static str) -> Call {
    let mut call = task::spawn(svc.call(req));
    assert_pending!(call.poll());
    call
}

/// Calls `svc` with `req`: refused with [`Overloaded`] on its first poll.
#[track_caller]
fn refused(svc: &mut Svc, req: &'static str) {
    assert_overloaded(assert_ready_err!(task::spawn(svc.call(req)).poll()));
}

/// With one slot: `a` is admitted and reaches inner (its responder is returned), `b` is
/// admitted and waits in the queue.
#[track_caller]
fn a_runs_b_queued(
    svc: &mut Svc,
    inner: &mut Inner,
) -> (Call, Call, mock::SendResponse<&'static str>) {
    let a = admitted(svc, "a");
    let b = admitted(svc, "b");
    let rsp_a = take_request(inner, "a");
    (a, b, rsp_a)
}

/// Takes the request the inner mock must have received by now; panics (instead of waiting
/// forever, like `assert_request_eq!`) if there is none.
#[track_caller]
fn take_request(inner: &mut Inner, expected: &'static str) -> mock::SendResponse<&'static str> {
    match inner.poll_request() {
        Poll::Ready(Some((req, rsp))) => {
            assert_eq!(req, expected);
            rsp
        }
        Poll::Ready(None) => panic!("expected request {expected:?}: inner handle closed"),
        Poll::Pending => panic!("expected request {expected:?}: inner received nothing"),
    }
}

fn assert_overloaded(err: BoxError) {
    assert!(err.is::<Overloaded>(), "expected Overloaded, got {err:?}");
}

fn assert_timeout(err: BoxError, limit: Duration) {
    assert_eq!(
        err.downcast_ref::<HandshakeTimeout>(),
        Some(&HandshakeTimeout { limit }),
        "expected HandshakeTimeout, got {err:?}"
    );
}

#[derive(Debug, PartialEq, thiserror::Error)]
#[error("dial failed: {0}")]
struct DialError(&'static str);

/// An inner service recording how many calls run at once, and the maximum ever seen.
#[derive(Clone, Default)]
struct Tracker {
    current: Arc<AtomicUsize>,
    max: Arc<AtomicUsize>,
}

impl Tracker {
    fn enter(&self) -> TrackerGuard {
        let now = self.current.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(now, Ordering::SeqCst);
        TrackerGuard(Arc::clone(&self.current))
    }

    fn max(&self) -> usize {
        self.max.load(Ordering::SeqCst)
    }
}

struct TrackerGuard(Arc<AtomicUsize>);

impl Drop for TrackerGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[test]
fn defaults_and_configuration() {
    let h = HandshakeQueueLayer::new().handle();
    assert_eq!(
        (h.max_in_flight(), h.max_queued(), h.timeout()),
        (64, 1024, SECS_10)
    );
    let h = HandshakeQueueLayer::default()
        .max_in_flight(3)
        .max_queued(7)
        .timeout(MS)
        .handle();
    assert_eq!((h.max_in_flight(), h.max_queued(), h.timeout()), (3, 7, MS));
    // Zero in flight would time out every call: clamped to 1.
    assert_eq!(layer(0, 0).handle().max_in_flight(), 1);
    assert_eq!((h.in_flight(), h.queued(), h.refused_total()), (0, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn at_most_n_in_flight_and_the_next_waits() {
    let (h, mut svc, mut inner) = spawn(layer(2, 10));

    assert_ready_ok!(svc.poll_ready());
    let mut a = admitted(&mut svc, "a");
    let mut b = admitted(&mut svc, "b");
    let mut c = admitted(&mut svc, "c");

    let rsp_a = take_request(&mut inner, "a");
    let rsp_b = take_request(&mut inner, "b");
    assert_pending!(inner.poll_request(), "the third call must wait");
    assert_eq!((h.in_flight(), h.queued()), (2, 1));

    rsp_a.send_response("A");
    assert_eq!(assert_ready_ok!(a.poll()), "A");
    // Completion releases the slot at once (the future is still alive) and hands it to `c`.
    assert!(c.is_woken());
    assert_eq!((h.in_flight(), h.queued()), (2, 0));
    assert_pending!(c.poll());
    let rsp_c = take_request(&mut inner, "c");

    rsp_b.send_response("B");
    rsp_c.send_response("C");
    assert_eq!(assert_ready_ok!(b.poll()), "B");
    assert_eq!(assert_ready_ok!(c.poll()), "C");
    assert_eq!((h.in_flight(), h.queued()), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn queue_full_refuses_at_once_without_touching_inner() {
    let (h, mut svc, mut inner) = spawn(layer(1, 1));
    let (mut a, _b, rsp_a) = a_runs_b_queued(&mut svc, &mut inner);
    assert!(h.is_full());

    // Still ready (load-shed semantics), but the call is refused on its first poll, no time passing.
    assert_ready_ok!(svc.poll_ready());
    let start = Instant::now();
    refused(&mut svc, "c");
    assert_eq!(Instant::now(), start);
    assert_pending!(inner.poll_request(), "inner must not see refused work");
    assert_eq!(h.refused_total(), 1);
    assert_eq!((h.in_flight(), h.queued()), (1, 1));

    // Once there is room again, work is admitted.
    rsp_a.send_response("A");
    assert_ready_ok!(a.poll());
    assert!(!h.is_full());
    let _d = admitted(&mut svc, "d");
    assert_eq!((h.in_flight(), h.queued()), (1, 1));
    assert_eq!(h.refused_total(), 1);
}

#[tokio::test(start_paused = true)]
async fn deadline_counts_from_submission_including_queue_wait() {
    let (h, mut svc, mut inner) = spawn(layer(1, 1).timeout(SECS_10));
    let submitted = Instant::now();
    let (mut a, mut b, rsp_a) = a_runs_b_queued(&mut svc, &mut inner);

    // `b` waits 6 s in the queue...
    advance(Duration::from_secs(6)).await;
    assert_pending!(b.poll());
    rsp_a.send_response("A");
    assert_ready_ok!(a.poll());

    // ...then runs: it has only 4 s left.
    assert_pending!(b.poll());
    let _rsp_b = take_request(&mut inner, "b");
    advance(Duration::from_secs(4) - MS).await;
    assert_pending!(b.poll(), "1 ms before the deadline it is still pending");
    assert_eq!(h.in_flight(), 1);

    advance(MS).await;
    assert_timeout(assert_ready_err!(b.poll()), SECS_10);
    assert_eq!(Instant::now() - submitted, SECS_10);
    assert_eq!((h.in_flight(), h.queued(), h.timed_out_total()), (0, 0, 1));
}

#[tokio::test(start_paused = true)]
async fn queued_call_that_never_starts_times_out() {
    let (h, mut svc, mut inner) = spawn(layer(1, 1).timeout(SECS_10));
    let (mut a, mut b, _rsp_a) = a_runs_b_queued(&mut svc, &mut inner);

    advance(SECS_10 - MS).await;
    assert_pending!(a.poll());
    assert_pending!(b.poll());
    advance(MS).await;
    assert_timeout(assert_ready_err!(b.poll()), SECS_10);
    assert_timeout(assert_ready_err!(a.poll()), SECS_10);
    assert_pending!(inner.poll_request(), "the queued call never reached inner");
    assert_eq!((h.in_flight(), h.queued(), h.timed_out_total()), (0, 0, 2));
}

#[tokio::test(start_paused = true)]
async fn work_completing_at_the_deadline_wins() {
    let (_h, mut svc, mut inner) = spawn(layer(1, 0).timeout(SECS_10));
    let mut a = admitted(&mut svc, "a");
    let rsp = take_request(&mut inner, "a");
    advance(SECS_10).await;
    rsp.send_response("A");
    assert_eq!(assert_ready_ok!(a.poll()), "A");
}

#[tokio::test(start_paused = true)]
async fn dropping_a_queued_call_frees_its_queue_place() {
    let (h, mut svc, mut inner) = spawn(layer(1, 1));
    let (mut a, b, rsp_a) = a_runs_b_queued(&mut svc, &mut inner);
    refused(&mut svc, "c");
    assert_eq!(h.queued(), 1);

    drop(b);
    assert_eq!((h.in_flight(), h.queued()), (1, 0));
    assert!(!h.is_full());

    // The freed place is usable at once, and the dropped call never runs.
    let mut d = admitted(&mut svc, "d");
    assert_eq!(h.queued(), 1);
    rsp_a.send_response("A");
    assert_ready_ok!(a.poll());
    assert!(d.is_woken());
    assert_pending!(d.poll());
    take_request(&mut inner, "d").send_response("D");
    assert_eq!(assert_ready_ok!(d.poll()), "D");
    assert_pending!(inner.poll_request());
}

#[tokio::test(start_paused = true)]
async fn dropping_a_running_call_frees_its_slot_and_the_next_starts() {
    let (h, mut svc, mut inner) = spawn(layer(1, 1));
    let (a, mut b, _rsp_a) = a_runs_b_queued(&mut svc, &mut inner);
    assert_pending!(inner.poll_request());

    drop(a);
    assert!(b.is_woken(), "the next queued call is woken");
    assert_eq!((h.in_flight(), h.queued()), (1, 0));
    assert_pending!(b.poll());
    take_request(&mut inner, "b").send_response("B");
    assert_eq!(assert_ready_ok!(b.poll()), "B");
    assert_eq!((h.in_flight(), h.queued()), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn clones_and_relayering_share_one_limit() {
    let l = layer(1, 1);
    let h = l.handle();
    let (mock1, mut inner1) = mock::pair::<&str, &str>();
    let (mock2, mut inner2) = mock::pair::<&str, &str>();
    // The same layer applied to two services (e.g. two targets), plus a clone of the first.
    let mut svc1 = mock::Spawn::new(l.clone().layer(mock1));
    let mut svc2 = mock::Spawn::new(l.layer(mock2));
    let mut svc1b = mock::Spawn::new(svc1.get_ref().clone());

    let mut a = admitted(&mut svc1, "a");
    let mut b = admitted(&mut svc2, "b");
    let rsp_a = take_request(&mut inner1, "a");
    assert_pending!(inner2.poll_request(), "one slot in total, taken by svc1");
    assert_eq!((h.in_flight(), h.queued()), (1, 1));
    refused(&mut svc1b, "c");
    assert_eq!(svc2.get_ref().handle().refused_total(), 1);

    rsp_a.send_response("A");
    assert_ready_ok!(a.poll());
    assert_pending!(b.poll());
    take_request(&mut inner2, "b").send_response("B");
    assert_eq!(assert_ready_ok!(b.poll()), "B");

    // A service built with `new` has a queue of its own.
    let (mock3, _inner3) = mock::pair::<&str, &str>();
    let own = HandshakeQueue::new(mock3, 5, 6, MS);
    assert_eq!(
        (own.handle().max_in_flight(), own.handle().max_queued()),
        (5, 6)
    );
}

#[tokio::test(start_paused = true)]
async fn inner_call_errors_pass_through_unchanged() {
    let (h, mut svc, mut inner) = spawn(layer(1, 1));

    let mut a = admitted(&mut svc, "a");
    take_request(&mut inner, "a").send_error(DialError("refused by peer"));
    let err = assert_ready_err!(a.poll());
    assert_eq!(
        err.downcast_ref::<DialError>(),
        Some(&DialError("refused by peer"))
    );
    assert!(!err.is::<Overloaded>() && !err.is::<HandshakeTimeout>());
    assert_eq!((h.in_flight(), h.queued()), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn inner_poll_ready_errors_pass_through_and_do_not_poison() {
    let (h, mut svc, mut inner) = spawn(layer(1, 1));

    inner.send_error(DialError("no route"));
    let mut a = task::spawn(svc.call("a"));
    let err = assert_ready_err!(a.poll());
    assert_eq!(
        err.downcast_ref::<DialError>(),
        Some(&DialError("no route"))
    );
    assert_pending!(inner.poll_request());
    assert_eq!((h.in_flight(), h.queued()), (0, 0));

    // The next call works normally.
    let mut b = admitted(&mut svc, "b");
    take_request(&mut inner, "b").send_response("B");
    assert_eq!(assert_ready_ok!(b.poll()), "B");
}

#[tokio::test(start_paused = true)]
async fn inner_backpressure_is_awaited_while_holding_the_slot() {
    let (h, mut svc, mut inner) = spawn(layer(1, 1));

    inner.allow(0);
    // Documented: the queue is always ready; the inner's backpressure is awaited in the future.
    assert_ready_ok!(svc.poll_ready());
    let mut a = admitted(&mut svc, "a");
    let mut b = admitted(&mut svc, "b");
    assert_pending!(inner.poll_request(), "inner not ready: not called");
    assert_eq!((h.in_flight(), h.queued()), (1, 1));

    inner.allow(1);
    assert!(a.is_woken(), "inner readiness wakes the waiting call");
    assert_pending!(a.poll());
    take_request(&mut inner, "a").send_response("A");
    assert_eq!(assert_ready_ok!(a.poll()), "A");

    // Budget used up: `b` now holds the slot and waits for inner readiness.
    assert_pending!(b.poll());
    assert_pending!(inner.poll_request());
    assert_eq!((h.in_flight(), h.queued()), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn inner_never_ready_times_out() {
    let (h, mut svc, mut inner) = spawn(layer(1, 1).timeout(SECS_10));

    inner.allow(0);
    let mut a = admitted(&mut svc, "a");
    advance(SECS_10 - MS).await;
    assert_pending!(a.poll());
    advance(MS).await;
    assert_timeout(assert_ready_err!(a.poll()), SECS_10);
    assert_pending!(inner.poll_request(), "inner was never called");
    assert_eq!((h.in_flight(), h.timed_out_total()), (0, 1));
}

#[tokio::test(start_paused = true)]
async fn ten_thousand_concurrent_calls_never_exceed_the_limit() {
    let tracker = Tracker::default();
    let l = layer(64, 10_000);
    let h = l.handle();
    let over_limit = Arc::new(AtomicUsize::new(0));
    let svc = l.layer(service_fn({
        let (tracker, h, over_limit) = (tracker.clone(), h.clone(), Arc::clone(&over_limit));
        move |i: usize| {
            let guard = tracker.enter();
            if h.in_flight() > 64 {
                over_limit.fetch_add(1, Ordering::SeqCst);
            }
            async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                drop(guard);
                Ok::<_, BoxError>(i)
            }
        }
    }));

    let tasks: Vec<_> = (0..10_000)
        .map(|i| tokio::spawn(svc.clone().oneshot(i)))
        .collect();
    let mut done = 0;
    for (i, t) in tasks.into_iter().enumerate() {
        assert_eq!(t.await.expect("task").expect("call"), i);
        done += 1;
    }
    assert_eq!(done, 10_000);
    assert_eq!(tracker.max(), 64, "the limit is reached but never exceeded");
    assert_eq!(over_limit.load(Ordering::SeqCst), 0);
    assert_eq!((h.in_flight(), h.queued(), h.refused_total()), (0, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn burst_of_ten_thousand_refuses_exactly_the_excess() {
    let tracker = Tracker::default();
    let l = layer(64, 1000);
    let h = l.handle();
    let mut svc = l.layer(service_fn({
        let tracker = tracker.clone();
        move |i: usize| {
            let guard = tracker.enter();
            async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                drop(guard);
                Ok::<_, BoxError>(i)
            }
        }
    }));

    let mut admitted = Vec::new();
    let mut refused = 0;
    for i in 0..10_000 {
        let mut fut = task::spawn(Box::pin(svc.call(i)));
        match fut.poll() {
            Poll::Ready(Err(e)) => {
                assert_overloaded(e);
                refused += 1;
            }
            Poll::Ready(Ok(_)) => panic!("nothing completes before time passes"),
            Poll::Pending => admitted.push(fut.into_inner()),
        }
    }
    assert_eq!((admitted.len(), refused), (1064, 10_000 - 1064));
    assert_eq!(h.refused_total(), 10_000 - 1064);
    assert_eq!((h.in_flight(), h.queued()), (64, 1000));
    assert_eq!(h.report().status, HealthStatus::Degraded);

    let results = futures_util::future::join_all(admitted).await;
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(tracker.max(), 64);
    assert_eq!((h.in_flight(), h.queued()), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_on_two_threads_never_exceed_the_limit() {
    let tracker = Tracker::default();
    let l = layer(8, 10_000);
    let h = l.handle();
    let svc = l.layer(service_fn({
        let tracker = tracker.clone();
        move |i: usize| {
            let guard = tracker.enter();
            async move {
                for _ in 0..3 {
                    tokio::task::yield_now().await;
                }
                drop(guard);
                Ok::<_, BoxError>(i)
            }
        }
    }));
    let tasks: Vec<_> = (0..2_000)
        .map(|i| tokio::spawn(svc.clone().oneshot(i)))
        .collect();
    for t in tasks {
        t.await.expect("task").expect("call");
    }
    assert!(tracker.max() <= 8, "max in flight {}", tracker.max());
    assert!(tracker.max() >= 1);
    assert_eq!((h.in_flight(), h.queued()), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn health_report_degrades_while_full() {
    let (h, mut svc, mut inner) = spawn(layer(1, 1).timeout(SECS_10));

    let report = h.check().await;
    assert_eq!(report.status, HealthStatus::Ok);
    assert_eq!(
        report.details,
        json!({"in_flight": 0, "queued": 0, "max_in_flight": 1, "max_queued": 1,
               "timeout_ms": 10_000, "refused_total": 0, "timed_out_total": 0})
    );

    let mut a = admitted(&mut svc, "a");
    let rsp_a = take_request(&mut inner, "a");
    assert_eq!(
        h.check().await.status,
        HealthStatus::Ok,
        "room left in queue"
    );

    let b = admitted(&mut svc, "b");
    refused(&mut svc, "c");
    let report = h.check().await;
    assert_eq!(report.status, HealthStatus::Degraded);
    assert_eq!(report.details["in_flight"], 1);
    assert_eq!(report.details["queued"], 1);
    assert_eq!(report.details["refused_total"], 1);

    rsp_a.send_response("A");
    assert_ready_ok!(a.poll());
    let report = h.check().await;
    assert_eq!(report.status, HealthStatus::Ok);
    assert_eq!(report.details["refused_total"], 1, "totals are kept");
    drop(b);
    assert_eq!(h.report().details["in_flight"], 0);
}
