//! A bounded handshake queue: at most `max_in_flight` concurrent handshakes (default 64), at
//! most `max_queued` waiting ones (default 1024), each bounded in time (default 10 s) from the
//! moment it is **submitted**.
//!
//! # Semantics
//!
//! * **Admission** happens in `call`. If `max_in_flight + max_queued` calls are already admitted,
//!   the call is refused **at once** with [`Overloaded`], without touching the inner service.
//! * **Readiness.** [`HandshakeQueue::poll_ready`](tower_service::Service::poll_ready) is always
//!   `Ready(Ok)` (load-shed semantics, like tower's `LoadShed`): a full queue is reported by
//!   refusing in `call`, never by withholding readiness. The inner service's readiness is awaited
//!   inside the response future after an in-flight slot is granted, and counts against the
//!   deadline (a call whose inner service never becomes ready times out).
//! * **In flight.** An admitted call starts at once if a slot is free, else it waits in FIFO order
//!   (among futures that have been polled) for one. It keeps its slot while it waits for the inner
//!   service's readiness and while the inner call runs.
//! * **Deadline.** One [`tokio::time::Sleep`] is started at `call`: queue wait + inner readiness +
//!   handshake together must finish within `timeout`, else the call fails with
//!   [`HandshakeTimeout`] and the inner call is dropped (cancelled). Work completing in the same
//!   poll as the deadline wins.
//! * **Cancellation.** Dropping a response future (waiting or running) frees its queue place and
//!   its in-flight slot immediately; the next waiting call is granted the slot.
//! * **Sharing.** All clones of a [`HandshakeQueueLayer`] and of the services it produces share
//!   one queue, even when the layer is applied to several services (for example per target).
//! * **Observability.** [`HandshakeQueueHandle`] (from [`HandshakeQueueLayer::handle`] or
//!   [`HandshakeQueue::handle`]) exposes `in_flight()`, `queued()`, `max_in_flight()`,
//!   `max_queued()`, refusal/timeout totals, and implements
//!   [`HealthCheck`](crate::check::HealthCheck): `ok`, or `degraded` while the queue is full.
//! * **Bounded state.** Two semaphores and two counters per queue; no per-call state outside the
//!   caller's own future. The inner service must be `Clone`: each admitted call takes its own
//!   clone at `call` (the `Buffer` pattern), whose `poll_ready` is driven only once the call holds
//!   an in-flight slot; it is called once, then dropped. A call that starts at once allocates
//!   nothing; one that has to wait boxes its semaphore-acquire future (`PollSemaphore`).
//! * `call` must run inside a tokio runtime with the time driver enabled (it starts the deadline
//!   timer), like tower's `Timeout`.
//!
//! Refusals and timeouts are logged with `tracing::debug!`.
//!
//! # Why not `LoadShed + Timeout + Buffer + GlobalConcurrencyLimit`
//!
//! That stack (tower 0.5.3) comes close but does not give these semantics exactly:
//!
//! * **Drop does not free a queue place.** `Buffer`'s bound is a bounded mpsc channel: a cancelled
//!   request stays in the channel (holding its slot) until the worker dequeues and discards it,
//!   which happens only after every request ahead of it got an in-flight permit.
//! * **Not shared when re-layered.** Each `Buffer` has its own channel and worker, so a layer
//!   applied per target gets one queue bound per target; only the concurrency half
//!   (`GlobalConcurrencyLimit`) would be global.
//! * **Counts not observable.** `Buffer` exposes no queue length.
//! * **Readiness errors poison the queue.** An inner `poll_ready` error fails the `Buffer` worker
//!   for good (every later call gets `ServiceError`/`Closed`); here it only fails that call.
//! * It also needs a spawned worker task per service, and serialises inner readiness through it.
//!
//! What *is* reused: tokio's `Semaphore` (fair, FIFO, cancel-safe waiters) via
//! `tokio_util::sync::PollSemaphore`, and tokio's timer. The timeout error is our own
//! [`HandshakeTimeout`] rather than tower's `timeout::error::Elapsed`: it carries the limit and
//! cannot be confused with an `Elapsed` raised by a `Timeout` inside the inner service.
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use std::time::Duration;
//!
//! use skytower_layers::handshake_queue::{HandshakeQueueLayer, Overloaded};
//! use tower::{Layer, Service, ServiceExt, service_fn};
//!
//! fn main() -> Result<(), tower::BoxError> {
//!     let rt = tokio::runtime::Builder::new_current_thread().enable_time().build()?;
//!     rt.block_on(async {
//!         // One handshake at a time, nobody waiting; applied to two per-target services.
//!         let layer = HandshakeQueueLayer::new()
//!             .max_in_flight(1)
//!             .max_queued(0)
//!             .timeout(Duration::from_secs(10));
//!         let handle = layer.handle();
//!         let dial = |peer: &'static str| async move {
//!             Ok::<_, Infallible>(format!("session with {peer}"))
//!         };
//!         let mut to_a = layer.layer(service_fn(dial));
//!         let mut to_b = layer.layer(service_fn(dial));
//!
//!         // The first handshake takes the only slot...
//!         let first = to_a.ready().await?.call("pk-a");
//!         assert_eq!(handle.in_flight(), 1);
//!
//!         // ...so the shared queue is full and other work is refused at once.
//!         let err = to_b.ready().await?.call("pk-b").await.unwrap_err();
//!         assert!(err.is::<Overloaded>());
//!         assert_eq!(handle.refused_total(), 1);
//!
//!         assert_eq!(first.await?, "session with pk-a");
//!         assert_eq!(handle.in_flight(), 0);
//!         Ok(())
//!     })
//! }
//! ```

pub mod error;
pub mod future;
mod handle;
mod layer;
mod service;

pub use self::error::{HandshakeTimeout, Overloaded};
pub use self::future::ResponseFuture;
pub use self::handle::HandshakeQueueHandle;
pub use self::layer::{
    DEFAULT_MAX_IN_FLIGHT, DEFAULT_MAX_QUEUED, DEFAULT_TIMEOUT, HandshakeQueueLayer,
};
pub use self::service::HandshakeQueue;

#[cfg(test)]
mod tests;
