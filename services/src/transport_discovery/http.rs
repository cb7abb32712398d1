//! The tower stack around the transport-discovery and route-finder routers (shared by both):
//! panic → 500, a JSON envelope for bodiless errors, load shedding beyond `max_in_flight`
//! (503 `overloaded`), the request deadline (408), the body read deadline and the body size
//! limit (413), plus a JSON 404 fallback and helpers to read bodies and parse JSON.

use std::any::Any;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};
use tower::ServiceBuilder;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::{RequestBodyTimeoutLayer, TimeoutLayer};
use tower_http::trace::TraceLayer;

use crate::api::ApiError;

/// Limits of the stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StackLimits {
    pub(crate) max_body: usize,
    pub(crate) request_timeout: Duration,
    pub(crate) max_in_flight: usize,
}

/// Wraps `router` (whose state is already set) in the stack; `trace` adds tower-http's trace
/// layer outermost (off under the service mode, which has its own).
pub(crate) fn wrap(router: Router, limits: StackLimits, trace: bool) -> Router {
    let router = router
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(
            ServiceBuilder::new()
                .layer(CatchPanicLayer::custom(panic_response))
                .layer(axum::middleware::map_response(json_envelope))
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
        );
    if trace {
        router.layer(TraceLayer::new_for_http())
    } else {
        router
    }
}

fn panic_response(_: Box<dyn Any + Send + 'static>) -> Response {
    ApiError::internal("handler panicked").into_response()
}

/// Gives the error responses made by layers (413, 408, 405...) the JSON envelope.
async fn json_envelope(res: Response) -> Response {
    let status = res.status();
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return res;
    }
    let (code, message) = match status {
        StatusCode::PAYLOAD_TOO_LARGE => ("body_too_large", "request body too large"),
        StatusCode::REQUEST_TIMEOUT => ("timeout", "request timed out"),
        StatusCode::METHOD_NOT_ALLOWED => ("method_not_allowed", "method not allowed"),
        StatusCode::NOT_FOUND => ("not_found", "no such route"),
        s if s.is_client_error() => ("bad_request", "bad request"),
        _ => ("internal", "internal error"),
    };
    let mut out = ApiError::new(status, code, message).into_response();
    for name in [header::ALLOW, header::RETRY_AFTER] {
        if let Some(v) = res.headers().get(&name) {
            out.headers_mut().insert(name, v.clone());
        }
    }
    out
}

/// Reads a body of at most `max` bytes (413 `body_too_large` beyond).
pub(crate) async fn read_body(body: Body, max: usize) -> Result<bytes::Bytes, ApiError> {
    axum::body::to_bytes(body, max).await.map_err(|e| {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(s) = source {
            if s.is::<http_body_util::LengthLimitError>() {
                return ApiError::body_too_large(max);
            }
            source = s.source();
        }
        ApiError::bad_request("bad_body", format!("cannot read the request body: {e}"))
    })
}

/// Parses JSON: 400 `malformed_json` when it is not JSON, 422 `malformed_<what>` when it is JSON
/// of the wrong shape.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    code: &'static str,
    what: &str,
) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => {
            ApiError::unprocessable(code, format!("malformed {what}: {e}"))
        }
        _ => ApiError::bad_request("malformed_json", format!("malformed JSON: {e}")),
    })
}

/// The duration flag parser (`5m`, `90s`).
pub(crate) fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

/// Unix milliseconds on the service's clock: the wall clock read once, advanced by tokio's
/// monotonic clock. Records' `registered_at`/`expires_at` and the route finder's remaining
/// lifetimes use it, so they agree with the store's expiry (on `tokio::time::Instant`), also
/// under paused time in tests; it does not jump when the wall clock is stepped.
pub(crate) fn clock_ms() -> u64 {
    static BASE: std::sync::OnceLock<(u64, std::time::Instant)> = std::sync::OnceLock::new();
    let (unix, at) = *BASE.get_or_init(|| {
        (
            skytower_transports::dmsg::replay::unix_ms_now(),
            std::time::Instant::now(),
        )
    });
    let elapsed = tokio::time::Instant::now()
        .into_std()
        .saturating_duration_since(at);
    unix.saturating_add(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
}
