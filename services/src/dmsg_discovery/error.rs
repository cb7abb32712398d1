//! Errors: the API's error responses ([`ApiError`]) and start-up errors ([`RunError`]).

use std::time::Duration;

use http::StatusCode;

pub use crate::api::ApiError;

use super::store::StoreError;

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
}
