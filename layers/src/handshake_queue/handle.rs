//! The state shared by every clone of a handshake queue, and the observable
//! [`HandshakeQueueHandle`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::check::{CheckFuture, CheckReport, HealthCheck};

/// The limits of one handshake queue, after clamping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    pub(crate) max_in_flight: usize,
    pub(crate) max_queued: usize,
    pub(crate) timeout: Duration,
}

impl Limits {
    /// Clamps the limits to what the semaphores accept: `max_in_flight` is at least 1 (a zero
    /// limit would time out every call) and `max_in_flight + max_queued` is at most
    /// [`Semaphore::MAX_PERMITS`].
    pub(crate) fn clamped(max_in_flight: usize, max_queued: usize, timeout: Duration) -> Self {
        let max_in_flight = max_in_flight.clamp(1, Semaphore::MAX_PERMITS);
        let max_queued = max_queued.min(Semaphore::MAX_PERMITS - max_in_flight);
        Limits {
            max_in_flight,
            max_queued,
            timeout,
        }
    }
}

/// One queue: the semaphores and counters every clone of the layer and of the service share.
#[derive(Debug)]
pub(crate) struct Shared {
    /// `max_in_flight + max_queued` permits: one per admitted (queued or running) call.
    pub(crate) admission: Arc<Semaphore>,
    /// `max_in_flight` permits: one per running call (waiting for inner readiness included).
    pub(crate) in_flight: Arc<Semaphore>,
    pub(crate) limits: Limits,
    pub(crate) refused: AtomicU64,
    pub(crate) timed_out: AtomicU64,
}

impl Shared {
    pub(crate) fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Shared {
            admission: Arc::new(Semaphore::new(limits.max_in_flight + limits.max_queued)),
            in_flight: Arc::new(Semaphore::new(limits.max_in_flight)),
            limits,
            refused: AtomicU64::new(0),
            timed_out: AtomicU64::new(0),
        })
    }
}

/// A cloneable view of a handshake queue's counters and limits; a [`HealthCheck`].
///
/// Obtained from [`HandshakeQueueLayer::handle`](super::HandshakeQueueLayer::handle) or
/// [`HandshakeQueue::handle`](super::HandshakeQueue::handle). All handles of one queue observe
/// the same counts. Counts are a snapshot read from atomics: under concurrent traffic the pair
/// (`in_flight`, `queued`) may be momentarily inconsistent by one call in transit.
///
/// As a health check it reports [`HealthStatus::Ok`](crate::check::HealthStatus::Ok) normally
/// and [`HealthStatus::Degraded`](crate::check::HealthStatus::Degraded) while the queue is full,
/// i.e. while new work is being refused with [`Overloaded`](super::Overloaded). The details
/// always carry `in_flight`, `queued`, `max_in_flight`, `max_queued`, `timeout_ms`,
/// `refused_total` and `timed_out_total`.
#[derive(Debug, Clone)]
pub struct HandshakeQueueHandle {
    pub(crate) shared: Arc<Shared>,
}

impl HandshakeQueueHandle {
    /// The number of running handshakes: calls holding an in-flight slot, whether waiting for
    /// the inner service to be ready or running in it. Never more than [`max_in_flight`].
    ///
    /// [`max_in_flight`]: Self::max_in_flight
    pub fn in_flight(&self) -> usize {
        let l = &self.shared.limits;
        l.max_in_flight
            .saturating_sub(self.shared.in_flight.available_permits())
    }

    /// The number of submitted calls waiting for an in-flight slot (at most
    /// [`max_queued`](Self::max_queued), see the snapshot caveat on
    /// [`HandshakeQueueHandle`]).
    pub fn queued(&self) -> usize {
        self.admitted().saturating_sub(self.in_flight())
    }

    /// The maximum number of concurrently running handshakes (default 64).
    pub fn max_in_flight(&self) -> usize {
        self.shared.limits.max_in_flight
    }

    /// The maximum number of waiting calls (default 1024).
    pub fn max_queued(&self) -> usize {
        self.shared.limits.max_queued
    }

    /// The time limit of each handshake, measured from submission (default 10 s).
    pub fn timeout(&self) -> Duration {
        self.shared.limits.timeout
    }

    /// How many calls were refused with [`Overloaded`](super::Overloaded) since creation.
    pub fn refused_total(&self) -> u64 {
        self.shared.refused.load(Ordering::Relaxed)
    }

    /// How many calls failed with [`HandshakeTimeout`](super::HandshakeTimeout) since creation.
    pub fn timed_out_total(&self) -> u64 {
        self.shared.timed_out.load(Ordering::Relaxed)
    }

    /// `true` while the queue is full: a call submitted now would be refused.
    pub fn is_full(&self) -> bool {
        self.shared.admission.available_permits() == 0
    }

    /// Builds the health report described on the type.
    pub fn report(&self) -> CheckReport {
        let details = serde_json::json!({
            "in_flight": self.in_flight(),
            "queued": self.queued(),
            "max_in_flight": self.max_in_flight(),
            "max_queued": self.max_queued(),
            "timeout_ms": u64::try_from(self.timeout().as_millis()).unwrap_or(u64::MAX),
            "refused_total": self.refused_total(),
            "timed_out_total": self.timed_out_total(),
        });
        if self.is_full() {
            CheckReport::degraded(details)
        } else {
            CheckReport::ok().with_details(details)
        }
    }

    fn admitted(&self) -> usize {
        let l = &self.shared.limits;
        (l.max_in_flight + l.max_queued).saturating_sub(self.shared.admission.available_permits())
    }
}

impl HealthCheck for HandshakeQueueHandle {
    fn check(&self) -> CheckFuture<'_> {
        Box::pin(std::future::ready(self.report()))
    }
}
