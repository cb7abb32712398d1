//! The tower stack the deployment services put around their routers (crate-private): panic →
//! 500, the JSON error envelope for bodiless errors, load shedding, request and body deadlines,
//! the body size limit, and per-peer rate limiting. The same layers dmsg-discovery uses.

use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use tower::ServiceBuilder;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::{RequestBodyTimeoutLayer, TimeoutLayer};

use crate::api::ApiError;
use crate::dmsg_discovery::KeyedRateLimit;
use crate::dmsg_discovery::api::{json_envelope, panic_response, request_key};

/// Limits of [`wrap`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct StackLimits {
    pub(crate) max_in_flight: usize,
    pub(crate) request_timeout: Duration,
    pub(crate) max_body: usize,
}

/// `router` inside the shared stack: 503 `overloaded` beyond `max_in_flight`, 408 after
/// `request_timeout`, 413 beyond `max_body`, panics as 500, every error in the JSON envelope.
pub(crate) fn wrap(router: Router, limits: StackLimits) -> Router {
    router.layer(
        ServiceBuilder::new()
            .layer(CatchPanicLayer::custom(panic_response))
            .layer(middleware::map_response(json_envelope))
            .layer(axum::error_handling::HandleErrorLayer::new(
                |_: tower::BoxError| async {
                    ApiError {
                        retry_after: Some(Duration::from_secs(1)),
                        ..ApiError::new(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "overloaded",
                            "too many requests in flight",
                        )
                    }
                },
            ))
            .load_shed()
            .layer(GlobalConcurrencyLimitLayer::new(limits.max_in_flight))
            .layer(TimeoutLayer::with_status_code(
                StatusCode::REQUEST_TIMEOUT,
                limits.request_timeout,
            ))
            .layer(RequestBodyTimeoutLayer::new(limits.request_timeout))
            .layer(RequestBodyLimitLayer::new(limits.max_body)),
    )
}

/// Middleware (`middleware::from_fn_with_state(limit, limit_by_peer)`): charges each request to
/// its peer (TCP: IPv4 address or IPv6 /64; DMSG: public key) and answers 429 `rate_limited`
/// with `Retry-After` when the peer is over its budget.
pub(crate) async fn limit_by_peer(
    State(limit): State<KeyedRateLimit>,
    req: Request,
    next: Next,
) -> Response {
    let key = request_key(&req);
    if let Err(wait) = limit.check(&key) {
        tracing::debug!(?key, ?wait, "rate limited");
        return ApiError::rate_limited(wait).into_response();
    }
    next.run(req).await
}
