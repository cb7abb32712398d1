//! A keyed circuit breaker: stop calling a peer that keeps failing, probe it now and then.
//!
//! [`CircuitBreakerLayer`] keeps one circuit per key, picked from each request by an
//! [`ExtractKey`](crate::key::ExtractKey) (for example the destination public key):
//!
//! - **Closed**: calls go through. After `failure_threshold` (default 3) *consecutive*
//!   failures the circuit opens; a success resets the count.
//! - **Open**: calls fail at once with [`CircuitOpen`] (carrying the key and the time left)
//!   without reaching the inner service, for `open_duration` (default 60 s).
//! - **Half-open**: when the open period ends, exactly one call is let through as a probe; the
//!   others still fail at once (`retry_after` zero). The probe's success closes the circuit, its
//!   failure re-opens it for another full period. A probe whose response future is dropped
//!   releases its slot: the next call probes instead.
//!
//! Only the probe decides a half-open circuit; the outcomes of calls admitted before the
//! circuit opened are ignored once it is open.
//!
//! What counts as a failure is up to a [`Classify`]er: [`ErrorsAreFailures`] (default),
//! [`ServerErrorsAreFailures`] (for `http::Response`: errors and 5xx), or any
//! `Fn(Result<&Res, &BoxError>) -> bool`. Responses are returned unchanged either way.
//!
//! **State is bounded.** Only keys with failures, open or half-open are stored; a key back to
//! healthy is forgotten. At most `max_keys` (default 10 000) are stored: when full, the least
//! recently touched closed keys are evicted first (a batch of 1/64 of the capacity at a time,
//! to amortise the scan), and an open key only when every stored key is open (the one whose open
//! period ends soonest). Failure counts untouched for `idle_timeout` (default 10 min) expire.
//!
//! **Readiness** is the inner service's: an open key is rejected in `call`, so readiness the
//! inner service reserved in `poll_ready` is not used. Place the breaker outside layers that
//! reserve capacity in `poll_ready`.
//!
//! A [`BreakerHandle`] (from the layer or the service) reads and resets the state, shared by
//! every clone, and is a [`HealthCheck`](crate::check::HealthCheck): `degraded` while any
//! circuit is open, `ok` otherwise.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use skytower_layers::circuit_breaker::{CircuitBreakerLayer, CircuitOpen, CircuitState};
//! use skytower_layers::BoxError;
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! // Requests are (destination, payload); the breaker is keyed by destination.
//! let layer = CircuitBreakerLayer::builder(|req: &(&'static str, u32)| req.0)
//!     .failure_threshold(2)
//!     .open_duration(Duration::from_secs(30))
//!     .build();
//! let breakers = layer.handle();
//! let inner = service_fn(|(dst, n): (&'static str, u32)| async move {
//!     if dst == "down" { Err::<u32, BoxError>("unreachable".into()) } else { Ok(n) }
//! });
//! let mut svc = ServiceBuilder::new().layer(layer).service(inner);
//!
//! for _ in 0..2 {
//!     assert!(svc.ready().await?.call(("down", 1)).await.is_err());
//! }
//! // Open now: rejected at once, without calling the inner service.
//! let err = svc.ready().await?.call(("down", 1)).await.unwrap_err();
//! let open = err.downcast_ref::<CircuitOpen<&str>>().unwrap();
//! assert_eq!(open.key, "down");
//! assert!(matches!(breakers.state(&"down"), CircuitState::Open { .. }));
//! // Other keys are unaffected.
//! assert_eq!(svc.ready().await?.call(("up", 7)).await?, 7);
//! breakers.reset(&"down");
//! assert_eq!(breakers.state(&"down"), CircuitState::Closed { consecutive_failures: 0 });
//! # Ok::<_, BoxError>(())
//! # }).unwrap();
//! ```

mod classify;
mod error;
mod future;
mod layer;
mod service;
mod state;

pub use classify::{Classify, ErrorsAreFailures, ServerErrorsAreFailures};
pub use error::CircuitOpen;
pub use future::ResponseFuture;
pub use layer::{CircuitBreakerBuilder, CircuitBreakerLayer};
pub use service::CircuitBreaker;
pub use state::{BreakerHandle, CircuitState};

#[cfg(test)]
mod tests;
