//! Error types of the [`HandshakeQueue`](super::HandshakeQueue).
//!
//! Both reach callers inside a [`BoxError`](crate::BoxError); test for them with
//! `err.is::<Overloaded>()` / `err.downcast_ref::<HandshakeTimeout>()`.

use std::time::Duration;

/// The queue was full when the work was submitted: it was refused at once, without touching
/// the inner service.
///
/// Returned when `max_in_flight` handshakes are running **and** `max_queued` are already
/// waiting. Callers may retry later or shed the work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, thiserror::Error)]
#[error("handshake queue full: work refused")]
pub struct Overloaded(());

impl Overloaded {
    /// Creates the error.
    pub const fn new() -> Self {
        Overloaded(())
    }
}

/// A handshake did not complete within its time limit.
///
/// The limit is measured from submission (the `call`), so it covers the time spent waiting in
/// the queue, waiting for the inner service to become ready, and the handshake itself. When it
/// fires, the inner call (if one was started) is dropped, i.e. cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("handshake did not complete within {limit:?} of submission")]
pub struct HandshakeTimeout {
    /// The configured limit that was exceeded (time since submission when it fired).
    pub limit: Duration,
}

impl HandshakeTimeout {
    /// Creates the error for a handshake that exceeded `limit`.
    pub const fn new(limit: Duration) -> Self {
        HandshakeTimeout { limit }
    }
}
