//! Errors: the API's error responses ([`ApiError`]) and start-up errors ([`RunError`]).

use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;

use super::store::StoreError;

/// An error answered by the API as `{"error": {"code": "...", "message": "..."}}`.
///
/// `code` is a stable snake_case word (listed in `docs/api/dmsg-discovery.md`); `message` is for
/// humans.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The machine-readable code.
    pub code: &'static str,
    /// The human-readable message.
    pub message: String,
    /// `Retry-After` (seconds, rounded up), for 429 and 503.
    pub retry_after: Option<Duration>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: Body<'a>,
}

#[derive(Serialize)]
struct Body<'a> {
    code: &'a str,
    message: &'a str,
}

impl ApiError {
    /// An error without `Retry-After`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 400.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 422.
    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    /// 429 with `Retry-After`.
    pub fn rate_limited(wait: Duration) -> Self {
        ApiError {
            retry_after: Some(wait),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many requests; retry later",
            )
        }
    }

    /// The JSON envelope as bytes.
    pub fn body(&self) -> Vec<u8> {
        serde_json::to_vec(&Envelope {
            error: Body {
                code: self.code,
                message: &self.message,
            },
        })
        .unwrap_or_else(|_| br#"{"error":{"code":"internal","message":""}}"#.to_vec())
    }
}

/// `Retry-After` in whole seconds, at least 1.
pub(crate) fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0).max(u64::from(wait.is_zero()))
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = (self.status, self.body()).into_response();
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(wait) = self.retry_after {
            res.headers_mut()
                .insert(header::RETRY_AFTER, retry_after_secs(wait).into());
        }
        res
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let msg = e.to_string();
        match e {
            StoreError::StaleSequence { .. } => Self::unprocessable("stale_sequence", msg),
            StoreError::OlderTimestamp { .. } => Self::unprocessable("stale_timestamp", msg),
            StoreError::Deleted { .. } => Self::unprocessable("deleted", msg),
            StoreError::StaleDelete { .. } => Self::unprocessable("stale_delete", msg),
            StoreError::NotFound(_) => Self::new(StatusCode::NOT_FOUND, "not_found", msg),
            StoreError::Full(_) => ApiError {
                retry_after: Some(Duration::from_secs(10)),
                ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "store_full", msg)
            },
            StoreError::Unavailable(_) => ApiError {
                retry_after: Some(Duration::from_secs(1)),
                ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", msg)
            },
            StoreError::Corrupt(_) => {
                tracing::error!(error = %msg, "store returned corrupt data");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", msg)
            }
        }
    }
}

/// Why the service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// `--mode dmsg` is refused.
    #[error(
        "--mode dmsg is refused: dmsg-discovery is the bootstrap dependency of the DMSG network \
         (clients and servers find DMSG servers through it before they have any DMSG session), \
         so it must stay reachable over plain HTTP; use --mode http"
    )]
    DmsgOnly,
    /// The service mode could not start or serve (e.g. `--mode dual` without `--key`, a bind
    /// failure).
    #[error(transparent)]
    Svc(#[from] crate::svcmode::SvcError),
    /// The configuration is inconsistent.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The store could not be opened.
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
    /// Binding or serving failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
    }

    #[test]
    fn envelope_shape() {
        let e = ApiError::bad_request("bad_key", "nope \"quoted\"");
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(v["error"]["code"], "bad_key");
        assert_eq!(v["error"]["message"], "nope \"quoted\"");
    }
}
