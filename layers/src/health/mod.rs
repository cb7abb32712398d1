//! A `/health` endpoint as a tower layer, for HTTP services.
//!
//! [`HealthLayer`] wraps an HTTP service (`Service<http::Request<B>, Response =
//! http::Response<B2>>`). `GET` and `HEAD` on the health path (default `/health`, matched
//! exactly, query string ignored) are answered by the layer itself; every other request (another
//! path, or another method on the health path) goes to the inner service untouched, and its
//! response comes back unchanged apart from the body being wrapped in [`ResponseBody`].
//!
//! The answer is a JSON document:
//!
//! ```json
//! {"service":"dmsg-discovery","version":"0.1.0","commit":"abc1234","status":"degraded",
//!  "started_at":"2025-01-01T00:00:00Z","uptime_secs":12,
//!  "checks":{"breaker":{"status":"degraded","details":{"open":1}},"db":{"status":"ok"}}}
//! ```
//!
//! - `version` and `commit` are omitted when not configured. Binaries pass
//!   `env!("CARGO_PKG_VERSION")` and a commit exported by their build script.
//! - `started_at` is the layer's creation time (RFC 3339, UTC, whole seconds), `uptime_secs`
//!   the whole seconds since then on the tokio clock (so it follows paused test time).
//! - `checks` holds the report of every registered [`HealthCheck`](crate::check::HealthCheck),
//!   by name (sorted); `status` is the worst of them (`ok` when there are none).
//! - The status code is `200 OK` when `status` is `ok`, `503 Service Unavailable` otherwise.
//!   Headers: `content-type: application/json`, `cache-control: no-store`, `content-length`.
//!   `HEAD` gets the same status and headers and an empty body.
//!
//! **Checks** are registered by name when the layer is built ([`HealthLayer::check`]) or at
//! runtime through the shared [`HealthRegistry`] ([`HealthLayer::registry`]), which every clone
//! of the layer and every service made from it sees. The registry is bounded (64 checks by
//! default, no eviction: registering beyond it fails with [`TooManyChecks`]). On each health
//! request all checks run concurrently, each under a timeout (default 2 s, see
//! [`HealthLayer::check_timeout`]); a check that times out is reported `down` with details
//! `{"error":"timed out","timeout_ms":..}`. Running checks need a Tokio runtime with the time
//! driver enabled (as any hyper or axum server has).
//!
//! **Readiness:** [`Health::poll_ready`](tower_service::Service::poll_ready) delegates to the
//! inner service; a health request consumes that readiness without calling the inner service.
//!
//! **Cost:** a pass-through request costs a method and path comparison; the response future and
//! body are enums over the inner ones (no boxing). Only health requests allocate.
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//!
//! use bytes::Bytes;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::{BodyExt, Full};
//! use skytower_layers::BoxError;
//! use skytower_layers::check::CheckReport;
//! use skytower_layers::health::HealthLayer;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! let rt = tokio::runtime::Builder::new_current_thread().enable_time().build()?;
//! rt.block_on(async {
//!     let layer = HealthLayer::new("dmsg-discovery")
//!         .version("0.1.0") // a binary passes env!("CARGO_PKG_VERSION")
//!         .commit("abc1234")
//!         .check("db", CheckReport::ok);
//!     let registry = layer.registry();
//!     let app = ServiceBuilder::new().layer(layer).service(service_fn(
//!         |_req: Request<Full<Bytes>>| async {
//!             Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("hello"))))
//!         },
//!     ));
//!
//!     // A component started later registers its own check.
//!     registry.register("breaker", || {
//!         CheckReport::degraded(serde_json::json!({ "open": 1 }))
//!     })?;
//!
//!     let res = app.clone().oneshot(Request::get("/health").body(Full::default())?).await?;
//!     assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
//!     assert_eq!(res.headers()["content-type"], "application/json");
//!     let json: serde_json::Value =
//!         serde_json::from_slice(&res.into_body().collect().await?.to_bytes())?;
//!     assert_eq!(json["service"], "dmsg-discovery");
//!     assert_eq!(json["status"], "degraded");
//!     assert_eq!(json["checks"]["db"]["status"], "ok");
//!     assert_eq!(json["checks"]["breaker"]["details"]["open"], 1);
//!
//!     // Everything else reaches the inner service.
//!     let res = app.oneshot(Request::get("/api").body(Full::default())?).await?;
//!     assert_eq!(res.into_body().collect().await?.to_bytes(), "hello");
//!     Ok::<_, BoxError>(())
//! })?;
//! # Ok::<_, BoxError>(())
//! ```

mod body;
mod error;
mod future;
mod layer;
mod registry;
mod report;
mod service;

pub use body::ResponseBody;
pub use error::TooManyChecks;
pub use future::ResponseFuture;
pub use layer::HealthLayer;
pub use registry::HealthRegistry;
pub use service::Health;

#[cfg(test)]
mod tests;
