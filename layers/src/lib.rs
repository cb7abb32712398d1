//! Composable tower resilience layers, usable on any [`tower::Service`].
//!
//! | layer | what it does | refuses with |
//! |---|---|---|
//! | [`CircuitBreakerLayer`] | per key: opens after N consecutive failures (3), fails fast while open (60 s), one half-open probe | [`CircuitOpen`] |
//! | [`NegativeCacheLayer`] | per key: a failure marks the key bad for a TTL (30 s); bad keys fail fast | [`KnownBad`] |
//! | [`HandshakeQueueLayer`] | bounds work in flight (64) and its time from submission (10 s) with a bounded wait queue | [`Overloaded`](handshake_queue::Overloaded), [`HandshakeTimeout`](handshake_queue::HandshakeTimeout) |
//! | [`HealthLayer`] | answers `GET`/`HEAD /health` with JSON from registered [`check::HealthCheck`]s | — |
//!
//! Each is a `Layer` + `Service` + named response future; errors are [`BoxError`]s that callers
//! downcast to the typed error. Keyed layers pick keys with [`key::ExtractKey`] (any closure).
//! Every time-based behaviour uses `tokio::time`, so tests can drive it with paused time. The
//! breaker, the negative cache and the queue expose handles that implement
//! [`check::HealthCheck`], so they can be registered with [`HealthLayer`].
//!
//! ```
//! use std::time::Duration;
//! use skytower_layers::{BoxError, HandshakeQueueLayer, NegativeCacheLayer};
//! use skytower_layers::circuit_breaker::{CircuitBreakerLayer, CircuitOpen};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! // Requests are (destination, server); the dialer fails for destination "down".
//! let dial = service_fn(|(dst, _server): (&'static str, &'static str)| async move {
//!     if dst == "down" { Err::<(), BoxError>("unreachable".into()) } else { Ok(()) }
//! });
//! let svc = ServiceBuilder::new()
//!     .layer(CircuitBreakerLayer::builder(|r: &(&'static str, &'static str)| r.0)
//!         .failure_threshold(3)
//!         .build())
//!     .layer(NegativeCacheLayer::new(|r: &(&'static str, &'static str)| *r)
//!         .ttl(Duration::from_secs(30)))
//!     .layer(HandshakeQueueLayer::new().max_in_flight(64).timeout(Duration::from_secs(10)))
//!     .service(dial);
//!
//! for server in ["s1", "s2", "s3"] {
//!     assert!(svc.clone().oneshot(("down", server)).await.is_err());
//! }
//! // Three consecutive failures to "down": its circuit is open, whatever the server.
//! let err = svc.clone().oneshot(("down", "s4")).await.unwrap_err();
//! assert!(err.is::<CircuitOpen<&str>>());
//! assert!(svc.oneshot(("up", "s1")).await.is_ok());
//! # });
//! ```

#![warn(missing_docs)]

pub mod check;
pub mod circuit_breaker;
pub mod handshake_queue;
pub mod health;
pub mod key;
pub mod negative_cache;

pub use circuit_breaker::{BreakerHandle, CircuitBreaker, CircuitBreakerLayer, CircuitOpen};
pub use handshake_queue::{HandshakeQueue, HandshakeQueueHandle, HandshakeQueueLayer};
pub use health::{Health, HealthLayer, HealthRegistry};
pub use negative_cache::{KnownBad, NegativeCache, NegativeCacheHandle, NegativeCacheLayer};
/// The boxed error type every layer in this crate returns (tower's `BoxError`).
pub use tower::BoxError;
