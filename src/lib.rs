//! # skytower
//!
//! Overlay networks out of tower services: a Skywire-style DMSG relay transport, TCP and DMSG
//! behind one connector, composable resilience layers, and the services of the network.
//!
//! This facade re-exports the member crates:
//!
//! - [`layers`] (`skytower-layers`): `CircuitBreakerLayer`, `NegativeCacheLayer`,
//!   `HandshakeQueueLayer`, `HealthLayer`: tower middleware usable on any service;
//! - [`transports`] (`skytower-transports`): identity keys, and DMSG (sessions, end-to-end
//!   streams, the relay server);
//! - [`services`] (`skytower-services`): the service binaries' shared service mode (upcoming).
//!
//! See `docs/architecture.md` for how they fit together.
//!
//! ## Example: resilience layers on any service
//!
//! ```
//! use std::time::Duration;
//! use skytower::layers::{BoxError, HandshakeQueueLayer, KnownBad, NegativeCacheLayer};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! let dial = service_fn(|(dst, server): (&'static str, &'static str)| async move {
//!     if server == "down" { Err::<(), BoxError>("refused".into()) } else { Ok(()) }
//! });
//! let svc = ServiceBuilder::new()
//!     .layer(NegativeCacheLayer::new(|req: &(&'static str, &'static str)| *req))
//!     .layer(HandshakeQueueLayer::new().max_in_flight(64).timeout(Duration::from_secs(10)))
//!     .service(dial);
//!
//! assert!(svc.clone().oneshot(("pk", "down")).await.is_err());
//! let err = svc.clone().oneshot(("pk", "down")).await.unwrap_err();
//! assert!(err.is::<KnownBad<(&str, &str)>>()); // skipped without dialing
//! assert!(svc.oneshot(("pk", "up")).await.is_ok());
//! # });
//! ```

pub use skytower_layers as layers;
pub use skytower_services as services;
pub use skytower_transports as transports;
