//! Health checks: the contract between components that know their own health (a circuit
//! breaker, a handshake queue, a session pool, a database) and the [`Health`](crate::Health)
//! layer that reports them on `GET /health`.
//!
//! A check is anything implementing [`HealthCheck`]; every `Fn() -> CheckReport` closure is one.
//!
//! ```
//! use skytower_layers::check::{CheckReport, HealthCheck, HealthStatus};
//!
//! let check = || CheckReport::degraded(serde_json::json!({ "sessions": 0 }));
//! let report = futures_executor_block_on(check.check());
//! assert_eq!(report.status, HealthStatus::Degraded);
//! # fn futures_executor_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;

use serde::Serialize;

/// The health of one component, ordered by severity: `Ok < Degraded < Down`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// Working normally.
    Ok,
    /// Working, with reduced capacity or some failing peers.
    Degraded,
    /// Not working.
    Down,
}

impl HealthStatus {
    /// The lowercase name used in JSON (`ok`, `degraded`, `down`).
    pub const fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Ok => "ok",
            HealthStatus::Degraded => "degraded",
            HealthStatus::Down => "down",
        }
    }
}

impl std::fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The result of one health check: a status and free-form JSON details.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CheckReport {
    /// The component's status.
    pub status: HealthStatus,
    /// Details for operators (counts, open keys, last error...). `null` when there are none.
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    pub details: serde_json::Value,
}

impl CheckReport {
    /// A report with `status` and no details.
    pub fn new(status: HealthStatus) -> Self {
        CheckReport {
            status,
            details: serde_json::Value::Null,
        }
    }

    /// `ok`, no details.
    pub fn ok() -> Self {
        Self::new(HealthStatus::Ok)
    }

    /// `degraded` with details.
    pub fn degraded(details: serde_json::Value) -> Self {
        Self::new(HealthStatus::Degraded).with_details(details)
    }

    /// `down` with details.
    pub fn down(details: serde_json::Value) -> Self {
        Self::new(HealthStatus::Down).with_details(details)
    }

    /// Replaces the details.
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }
}

/// The future returned by [`HealthCheck::check`].
pub type CheckFuture<'a> = Pin<Box<dyn Future<Output = CheckReport> + Send + 'a>>;

/// A component that can report its health.
///
/// Checks should be cheap and bounded: the [`Health`](crate::Health) layer runs every registered
/// check on each `/health` request (under a timeout).
pub trait HealthCheck: Send + Sync + 'static {
    /// Runs the check.
    fn check(&self) -> CheckFuture<'_>;
}

impl<F> HealthCheck for F
where
    F: Fn() -> CheckReport + Send + Sync + 'static,
{
    fn check(&self) -> CheckFuture<'_> {
        let report = self();
        Box::pin(std::future::ready(report))
    }
}
