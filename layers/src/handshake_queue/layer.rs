use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use super::handle::{HandshakeQueueHandle, Limits, Shared};
use super::service::HandshakeQueue;

/// Default maximum number of concurrently running handshakes.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 64;
/// Default maximum number of calls waiting for an in-flight slot.
pub const DEFAULT_MAX_QUEUED: usize = 1024;
/// Default time limit of one handshake, measured from submission.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Applies a [`HandshakeQueue`] to services; every service it produces shares ONE queue.
///
/// Like tower's `GlobalConcurrencyLimitLayer`, the layer owns the queue: applying it to several
/// services (for example one per target) and cloning it or the services all share the same
/// in-flight limit, wait queue and counters.
///
/// Defaults: [`max_in_flight`](Self::max_in_flight) 64, [`max_queued`](Self::max_queued) 1024,
/// [`timeout`](Self::timeout) 10 s.
///
/// The configuration methods build a **fresh** queue (new limits cannot be applied to a queue
/// that may already be in use): configure first, then clone / apply the layer and take its
/// [`handle`](Self::handle).
#[derive(Debug, Clone)]
pub struct HandshakeQueueLayer {
    shared: Arc<Shared>,
}

impl HandshakeQueueLayer {
    /// A layer with the default limits (64 in flight, 1024 queued, 10 s).
    pub fn new() -> Self {
        Self::from_limits(Limits::clamped(
            DEFAULT_MAX_IN_FLIGHT,
            DEFAULT_MAX_QUEUED,
            DEFAULT_TIMEOUT,
        ))
    }

    /// Sets the maximum number of concurrently running handshakes (default 64; clamped to at
    /// least 1). A call holds its in-flight slot from the moment it leaves the queue, while it
    /// waits for the inner service's readiness and while the inner call runs.
    pub fn max_in_flight(self, max: usize) -> Self {
        let l = self.shared.limits;
        Self::from_limits(Limits::clamped(max, l.max_queued, l.timeout))
    }

    /// Sets the maximum number of calls waiting for an in-flight slot (default 1024; 0 means
    /// "refuse whenever all in-flight slots are busy"). When it is reached, new calls fail at
    /// once with [`Overloaded`](super::Overloaded).
    pub fn max_queued(self, max: usize) -> Self {
        let l = self.shared.limits;
        Self::from_limits(Limits::clamped(l.max_in_flight, max, l.timeout))
    }

    /// Sets the time limit of each handshake, measured from submission (`call`), queue wait
    /// and inner readiness included (default 10 s). Exceeding it fails the call with
    /// [`HandshakeTimeout`](super::HandshakeTimeout).
    pub fn timeout(self, timeout: Duration) -> Self {
        let l = self.shared.limits;
        Self::from_limits(Limits::clamped(l.max_in_flight, l.max_queued, timeout))
    }

    /// A handle observing this layer's queue (counts, limits, health).
    pub fn handle(&self) -> HandshakeQueueHandle {
        HandshakeQueueHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    fn from_limits(limits: Limits) -> Self {
        HandshakeQueueLayer {
            shared: Shared::new(limits),
        }
    }
}

impl Default for HandshakeQueueLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Layer<S> for HandshakeQueueLayer {
    type Service = HandshakeQueue<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HandshakeQueue::with_shared(inner, Arc::clone(&self.shared))
    }
}
