//! The tower stack around the transport-discovery and route-finder routers (shared by both):
//! panic → 500, a JSON envelope for bodiless errors, load shedding beyond `max_in_flight`
//! (503 `overloaded`), the request deadline (408), the body read deadline and the body size
//! limit (413), plus a JSON 404 fallback and helpers to read bodies and parse JSON.

use axum::Router;
use axum::body::Body;
use tower_http::trace::TraceLayer;

use crate::api::ApiError;

pub(crate) use crate::http_stack::StackLimits;

/// Wraps `router` (whose state is already set) in the shared stack ([`crate::http_stack`])
/// with a JSON 404 fallback; `trace` adds tower-http's trace layer outermost (off under the
/// service mode, which has its own).
pub(crate) fn wrap(router: Router, limits: StackLimits, trace: bool) -> Router {
    let router = crate::http_stack::wrap(
        router.fallback(|| async { ApiError::not_found("no such route") }),
        limits,
    );
    if trace {
        router.layer(TraceLayer::new_for_http())
    } else {
        router
    }
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
