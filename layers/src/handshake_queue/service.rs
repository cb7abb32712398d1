use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use tower_service::Service;

use super::error::Overloaded;
use super::future::ResponseFuture;
use super::handle::{HandshakeQueueHandle, Limits, Shared};
use crate::BoxError;

/// Bounds the number of concurrent handshakes, the number of waiting ones, and the time of
/// each, measured from submission. See the [module docs](super) for the semantics.
///
/// Clones share the queue of the original.
#[derive(Debug, Clone)]
pub struct HandshakeQueue<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> HandshakeQueue<S> {
    /// Wraps `inner` in a new queue of its own (`max_in_flight` is clamped to at least 1).
    /// To share one queue among several services, use a [`HandshakeQueueLayer`](super::HandshakeQueueLayer).
    pub fn new(inner: S, max_in_flight: usize, max_queued: usize, timeout: Duration) -> Self {
        Self::with_shared(
            inner,
            Shared::new(Limits::clamped(max_in_flight, max_queued, timeout)),
        )
    }

    pub(crate) fn with_shared(inner: S, shared: Arc<Shared>) -> Self {
        HandshakeQueue { inner, shared }
    }

    /// A handle observing this service's queue (counts, limits, health).
    pub fn handle(&self) -> HandshakeQueueHandle {
        HandshakeQueueHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Gets a reference to the inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Gets a mutable reference to the inner service.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes `self`, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, Req> Service<Req> for HandshakeQueue<S>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req, S::Future>;

    /// Always ready: like tower's `LoadShed`, a full queue is reported by `call` refusing the
    /// work at once with [`Overloaded`], not by withholding readiness. The inner service's
    /// readiness is awaited inside the response future, after an in-flight slot is granted.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let shared = &self.shared;
        match Arc::clone(&shared.admission).try_acquire_owned() {
            Ok(admission) => {
                // Start at once when a slot is free (no allocation, no wait); otherwise the
                // future joins the in-flight semaphore's FIFO queue when first polled.
                let in_flight = Arc::clone(&shared.in_flight).try_acquire_owned().ok();
                ResponseFuture::admitted(
                    self.inner.clone(),
                    req,
                    admission,
                    in_flight,
                    Arc::clone(shared),
                )
            }
            Err(_) => {
                let refused_total = shared.refused.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::debug!(
                    max_in_flight = shared.limits.max_in_flight,
                    max_queued = shared.limits.max_queued,
                    refused_total,
                    "handshake queue full; refusing work"
                );
                ResponseFuture::refused(Overloaded::new())
            }
        }
    }
}
