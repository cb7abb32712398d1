//! A keyed negative cache: remember which keys failed recently and refuse their calls at once.
//!
//! [`NegativeCacheLayer`] wraps a service with [`NegativeCache`]. Each request is keyed by an
//! [`ExtractKey`](crate::key::ExtractKey) (for DMSG dials typically `(destination, server)`).
//!
//! - A call whose error passes the [`FailureFilter`] marks its key bad for the TTL (default
//!   30 s). While `now < marked_at + ttl`, calls for that key fail at once with
//!   [`KnownBad`]`<K>` (the inner service is not called); from `now == marked_at + ttl` on the
//!   key is good again, and a new failure re-marks it with a fresh TTL.
//! - A success clears the key (it can be present if it was marked manually or by a concurrent
//!   call meanwhile).
//! - The caller giving up is not a failure of the key: a response future dropped before it
//!   completes records nothing (so a caller's `Timeout` around the negative cache records
//!   nothing), and the default filter [`IgnoreCancelled`] ignores errors carrying
//!   [`Cancelled`] (and, on opt-in, tower's `Elapsed`).
//! - The cache is bounded (default 10 000 keys; when full, expired entries are dropped, then
//!   the entry closest to expiry is evicted) and uses `tokio::time::Instant`, so paused tokio
//!   time drives it. [`NegativeCacheHandle`] inspects and edits it and is a
//!   [`HealthCheck`](crate::check::HealthCheck).
//! - Errors are [`BoxError`](crate::BoxError)s: inner errors pass through unchanged
//!   (downcast them to their own type), refusals downcast to `KnownBad<K>`.
//! - Readiness is the inner service's; a refusal consumes it without calling the inner service
//!   (see [`NegativeCache`]), so put this layer outside layers that reserve capacity in
//!   `poll_ready`.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use skytower_layers::{BoxError, KnownBad, NegativeCacheLayer};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! #[derive(Clone, Debug)]
//! struct Dial { dst: &'static str, server: &'static str }
//!
//! let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
//! rt.block_on(async {
//!     let layer = NegativeCacheLayer::new(|d: &Dial| (d.dst, d.server)).ttl(Duration::from_secs(30));
//!     let cache = layer.handle();
//!     let dial = service_fn(|d: Dial| async move {
//!         if d.server == "srv-down" { Err::<&str, BoxError>("connection refused".into()) } else { Ok("stream") }
//!     });
//!     let svc = ServiceBuilder::new().layer(layer).service(dial);
//!
//!     let bad = Dial { dst: "pk-a", server: "srv-down" };
//!     // The first failure reaches the dialer and marks (pk-a, srv-down) bad...
//!     let err = svc.clone().oneshot(bad.clone()).await.unwrap_err();
//!     assert_eq!(err.to_string(), "connection refused");
//!     // ...so the next dial fails at once, with the key and the time left.
//!     let err = svc.clone().oneshot(bad).await.unwrap_err();
//!     let known = err.downcast_ref::<KnownBad<(&str, &str)>>().unwrap();
//!     assert_eq!(known.key, ("pk-a", "srv-down"));
//!     assert!(known.expires_in <= Duration::from_secs(30));
//!     // Same destination through another server is still allowed.
//!     let ok = svc.oneshot(Dial { dst: "pk-a", server: "srv-up" }).await.unwrap();
//!     assert_eq!(ok, "stream");
//!     assert_eq!(cache.len(), 1);
//! });
//! ```

mod cache;
mod error;
mod filter;
mod future;
mod layer;
mod service;

pub use cache::{DEFAULT_MAX_ENTRIES, DEFAULT_TTL, NegativeCacheHandle};
pub use error::{Cancelled, KnownBad};
pub use filter::{FailureFilter, IgnoreCancelled};
pub use future::ResponseFuture;
pub use layer::NegativeCacheLayer;
pub use service::NegativeCache;

#[cfg(test)]
mod tests;
