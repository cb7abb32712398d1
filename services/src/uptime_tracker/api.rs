//! The HTTP API (`docs/api/uptime-tracker.md`): wire types, routes and handlers.

use std::collections::BTreeMap;

use axum::extract::{Path, RawQuery, State};
use axum::routing::{get, post};
use axum::{Extension, Json, Router, middleware};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use skytower_transports::identity::PublicKey;

use super::UptimeService;
use super::clock::{DAY_MS, Day, DayRange};
use super::store::NodeRecord;
use crate::api::ApiError;
use crate::auth::{RequireSignatureLayer, VerifiedKey};
use crate::dmsg_discovery::RateKey;
use crate::http_stack::{StackLimits, limit_by_peer, wrap};

/// Longest accepted version string.
pub const MAX_VERSION_LEN: usize = 64;

/// The body of `POST /heartbeat`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    /// The node's software version (1–64 printable ASCII characters).
    pub version: String,
}

/// The answer to `POST /heartbeat`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatAck {
    /// Milliseconds of uptime this heartbeat credited.
    pub credited_ms: u64,
    /// Whether the tracker had no live previous heartbeat of this node.
    pub first: bool,
    /// When to send the next one, in seconds.
    pub interval_secs: u64,
}

/// One node's uptime (as clients decode it; the service writes the same JSON from its
/// store's records without re-validating the keys).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeUptime {
    /// The node.
    pub pk: PublicKey,
    /// Whether it sent a heartbeat within the online threshold.
    pub online: bool,
    /// Unix milliseconds of its last heartbeat.
    pub last_heartbeat: u64,
    /// The version its last heartbeat reported.
    pub version: String,
    /// Percent of each UTC day of the range it was online (`YYYY-MM-DD` → 0–100, two
    /// decimals); every day of the range is present.
    pub daily: BTreeMap<String, f64>,
}

/// What the service writes for a node: [`NodeUptime`]'s JSON.
#[derive(Serialize)]
struct NodeUptimeOut {
    pk: String,
    online: bool,
    last_heartbeat: u64,
    version: String,
    daily: BTreeMap<String, f64>,
}

/// What the service writes for `GET /uptimes`: [`Uptimes`]' JSON.
#[derive(Serialize)]
struct UptimesOut {
    from: String,
    to: String,
    truncated: bool,
    nodes: Vec<NodeUptimeOut>,
}

/// The answer to `GET /uptimes`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Uptimes {
    /// First day of the range.
    pub from: String,
    /// Last day of the range (inclusive).
    pub to: String,
    /// Whether nodes were left out (more than the service's list limit; the most recently
    /// seen are kept).
    pub truncated: bool,
    /// The nodes, sorted by key.
    pub nodes: Vec<NodeUptime>,
}

/// The percentage (two decimals, rounded half up, at most 100) of a day `ms` covers.
pub fn percent_of_day(ms: u64) -> f64 {
    let hundredths = (ms.saturating_mul(10_000) + DAY_MS / 2) / DAY_MS;
    hundredths.min(10_000) as f64 / 100.0
}

pub(crate) fn router(service: UptimeService) -> Router {
    let limits = StackLimits {
        max_in_flight: service.config.max_in_flight,
        request_timeout: service.config.request_timeout,
        max_body: service.config.max_body,
    };
    let limit = service.limit.clone();
    let signed = RequireSignatureLayer::with_verifier(service.verifier.clone());
    let api = Router::new()
        .route("/heartbeat", post(heartbeat).route_layer(signed))
        .route("/uptimes", get(uptimes))
        .route("/uptime/{pk}", get(uptime))
        .fallback(|| async { ApiError::not_found("no such route") })
        .with_state(service)
        .layer(middleware::from_fn_with_state(limit, limit_by_peer));
    wrap(api, limits)
}

fn parse_pk(s: &str) -> Result<PublicKey, ApiError> {
    s.parse()
        .map_err(|e| ApiError::bad_request("bad_key", format!("malformed public key {s:?}: {e}")))
}

fn validate_version(v: &str) -> Result<(), ApiError> {
    if v.is_empty() || v.len() > MAX_VERSION_LEN || !v.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::unprocessable(
            "invalid_version",
            format!(
                "version must be 1 to {MAX_VERSION_LEN} printable ASCII characters without spaces"
            ),
        ));
    }
    Ok(())
}

async fn heartbeat(
    State(service): State<UptimeService>,
    Extension(VerifiedKey(pk)): Extension<VerifiedKey>,
    body: Bytes,
) -> Result<Json<HeartbeatAck>, ApiError> {
    service
        .limit
        .check(&RateKey::Key(pk))
        .map_err(ApiError::rate_limited)?;
    let hb: Heartbeat = serde_json::from_slice(&body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => {
            ApiError::unprocessable("malformed_heartbeat", format!("malformed heartbeat: {e}"))
        }
        _ => ApiError::bad_request("malformed_json", format!("malformed JSON: {e}")),
    })?;
    validate_version(&hb.version)?;
    let outcome = service.record_heartbeat(&pk, &hb.version).await?;
    tracing::debug!(%pk, version = %hb.version, credited_ms = outcome.credited_ms, "heartbeat");
    Ok(Json(HeartbeatAck {
        credited_ms: outcome.credited_ms,
        first: outcome.first,
        interval_secs: service.config.heartbeat_interval.as_secs(),
    }))
}

/// The query of `/uptimes` and `/uptime/{pk}`.
struct Query {
    keys: Option<Vec<PublicKey>>,
    range: DayRange,
}

fn parse_query(
    raw: Option<&str>,
    service: &UptimeService,
    allow_keys: bool,
) -> Result<Query, ApiError> {
    let (mut keys, mut from, mut to) = (None, None, None);
    for (name, value) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        let slot = match name.as_ref() {
            "keys" if allow_keys => &mut keys,
            "from" => &mut from,
            "to" => &mut to,
            other => {
                return Err(ApiError::bad_request(
                    "unknown_parameter",
                    format!(
                        "unknown query parameter {other:?} (expected {})",
                        if allow_keys {
                            "keys, from, to"
                        } else {
                            "from, to"
                        }
                    ),
                ));
            }
        };
        if slot.is_some() {
            return Err(ApiError::bad_request(
                "duplicate_parameter",
                format!("query parameter {name:?} given twice"),
            ));
        }
        *slot = Some(value.into_owned());
    }
    let keys = match keys {
        None => None,
        Some(list) => {
            let parts: Vec<&str> = list.split(',').filter(|s| !s.is_empty()).collect();
            if parts.is_empty() {
                return Err(ApiError::bad_request("bad_key", "keys is empty"));
            }
            if parts.len() > service.config.max_keys {
                return Err(ApiError::bad_request(
                    "too_many_keys",
                    format!("at most {} keys per query", service.config.max_keys),
                ));
            }
            Some(
                parts
                    .into_iter()
                    .map(parse_pk)
                    .collect::<Result<Vec<_>, _>>()?,
            )
        }
    };
    let day = |name: &str, v: Option<String>| -> Result<Option<Day>, ApiError> {
        v.map(|s| {
            Day::parse(&s).ok_or_else(|| {
                ApiError::bad_request(
                    "bad_date",
                    format!("{name}={s:?} is not a date (expected YYYY-MM-DD)"),
                )
            })
        })
        .transpose()
    };
    let today = Day::of_ms(service.now_ms());
    let to = day("to", to)?.unwrap_or(today);
    let from = day("from", from)?.unwrap_or(to.minus(6));
    if from > to {
        return Err(ApiError::bad_request(
            "bad_range",
            format!("from ({from}) is after to ({to})"),
        ));
    }
    let max = service.config.max_days;
    if to.0 - from.0 >= max {
        return Err(ApiError::bad_request(
            "range_too_long",
            format!("the range {from}..{to} is longer than {max} days"),
        ));
    }
    Ok(Query {
        keys,
        range: DayRange { from, to },
    })
}

fn node_uptime(
    service: &UptimeService,
    rec: NodeRecord,
    range: DayRange,
    now: u64,
) -> NodeUptimeOut {
    let threshold = crate::uptime_tracker::store::millis(service.store.accounting().credit_cap);
    NodeUptimeOut {
        pk: rec.pk,
        online: now.saturating_sub(rec.last_heartbeat_ms) <= threshold,
        last_heartbeat: rec.last_heartbeat_ms,
        version: rec.version,
        daily: range
            .days()
            .map(|d| {
                let ms = rec.daily_ms.get(&d).copied().unwrap_or(0);
                (d.to_string(), percent_of_day(ms))
            })
            .collect(),
    }
}

async fn uptimes(
    State(service): State<UptimeService>,
    RawQuery(raw): RawQuery,
) -> Result<Json<UptimesOut>, ApiError> {
    let q = parse_query(raw.as_deref(), &service, true)?;
    let now = service.now_ms();
    let (records, truncated) = service
        .store
        .nodes(q.keys.as_deref(), q.range, now, service.config.max_list)
        .await?;
    Ok(Json(UptimesOut {
        from: q.range.from.to_string(),
        to: q.range.to.to_string(),
        truncated,
        nodes: records
            .into_iter()
            .map(|r| node_uptime(&service, r, q.range, now))
            .collect(),
    }))
}

async fn uptime(
    State(service): State<UptimeService>,
    Path(pk): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<NodeUptimeOut>, ApiError> {
    let pk = parse_pk(&pk)?;
    let q = parse_query(raw.as_deref(), &service, false)?;
    let now = service.now_ms();
    match service.store.node(&pk, q.range, now).await? {
        Some(rec) => Ok(Json(node_uptime(&service, rec, q.range, now))),
        None => Err(ApiError::not_found(format!(
            "no heartbeat from {pk} within the retention"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_round_to_hundredths_and_cap_at_100() {
        assert_eq!(percent_of_day(0), 0.0);
        assert_eq!(percent_of_day(DAY_MS), 100.0);
        assert_eq!(percent_of_day(2 * DAY_MS), 100.0);
        assert_eq!(percent_of_day(600_000), 0.69); // 10 min = 0.6944 %
        assert_eq!(percent_of_day(DAY_MS / 2), 50.0);
        assert_eq!(percent_of_day(4_320), 0.01); // 0.005 % rounds up
        assert_eq!(percent_of_day(4_319), 0.0);
    }

    #[test]
    fn versions() {
        assert!(validate_version("1.2.3-rc.1+abc").is_ok());
        for bad in ["", "a b", "x\n", &"9".repeat(65), "é"] {
            assert_eq!(
                validate_version(bad).unwrap_err().code,
                "invalid_version",
                "{bad:?}"
            );
        }
    }
}
