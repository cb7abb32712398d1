//! Runs the registered checks and renders the `/health` response.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::join_all;
use http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Response, StatusCode};
use serde::Serialize;

use super::layer::HealthConfig;
use super::registry::NamedCheck;
use crate::check::{CheckReport, HealthStatus};

/// The boxed future answering one `/health` request (off the hot path, so boxing is fine).
pub(crate) type ReportFuture = Pin<Box<dyn Future<Output = Response<Bytes>> + Send>>;

/// The JSON document served on the health path.
#[derive(Serialize)]
struct Document<'a> {
    service: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    commit: Option<&'a str>,
    status: HealthStatus,
    started_at: &'a str,
    uptime_secs: u64,
    checks: BTreeMap<&'a str, &'a CheckReport>,
}

/// Starts answering a health request: `uptime_secs` is taken now, then every check in
/// `checks` runs concurrently, each under the configured timeout. `head` leaves the body empty
/// (status and headers are those of the `GET` answer).
pub(crate) fn report(
    config: Arc<HealthConfig>,
    checks: Vec<NamedCheck>,
    head: bool,
) -> ReportFuture {
    let uptime_secs = config.started.elapsed().as_secs();
    Box::pin(async move {
        let timeout = config.check_timeout;
        let reports = join_all(checks.into_iter().map(|(name, check)| async move {
            let report = match tokio::time::timeout(timeout, check.check()).await {
                Ok(report) => report,
                Err(_elapsed) => {
                    tracing::warn!(check = %name, ?timeout, "health check timed out");
                    CheckReport::down(serde_json::json!({
                        "error": "timed out",
                        "timeout_ms": u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
                    }))
                }
            };
            (name, report)
        }))
        .await;

        let status = reports
            .iter()
            .map(|(_, report)| report.status)
            .max()
            .unwrap_or(HealthStatus::Ok);
        let document = Document {
            service: &config.service,
            version: config.version.as_deref(),
            commit: config.commit.as_deref(),
            status,
            started_at: &config.started_at,
            uptime_secs,
            checks: reports
                .iter()
                .map(|(name, report)| (name.as_ref(), report))
                .collect(),
        };
        let (code, json) = match serde_json::to_vec(&document) {
            Ok(json) if status == HealthStatus::Ok => (StatusCode::OK, Bytes::from(json)),
            Ok(json) => (StatusCode::SERVICE_UNAVAILABLE, Bytes::from(json)),
            // Unreachable in practice (every key is a string), but never panic on a report.
            Err(err) => {
                tracing::error!(%err, "cannot serialise the health report");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Bytes::from_static(br#"{"status":"down"}"#),
                )
            }
        };
        tracing::debug!(%status, code = code.as_u16(), "health report");

        let len = json.len();
        let mut response = Response::new(if head { Bytes::new() } else { json });
        *response.status_mut() = code;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
        response
    })
}
