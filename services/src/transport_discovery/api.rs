//! The HTTP API: the stored record, the handlers and the router.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use skytower_transports::identity::{PublicKey, Signature};

use super::entry::{EntryError, SignedEntry, TransportEntry, TransportId};
use super::http::{StackLimits, clock_ms, parse_json, wrap};
use crate::api::ApiError;
use crate::auth::{RequireSignatureLayer, SharedVerifier, VerifiedKey};
use crate::ttl_store::Records;

/// A registered transport as stored and listed: the signed entry, when it was last registered
/// and when it expires (Unix milliseconds on the service's clock: the wall clock at start-up
/// advanced by the monotonic clock).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransportRecord {
    /// The transport.
    pub entry: TransportEntry,
    /// The edges' signatures (`signatures[i]` by `entry.edges[i]`).
    pub signatures: [Signature; 2],
    /// Unix ms of the last registration.
    pub registered_at: u64,
    /// Unix ms after which the record is gone unless registered again.
    pub expires_at: u64,
}

impl TransportRecord {
    /// The signed entry.
    #[must_use]
    pub fn signed(&self) -> SignedEntry {
        SignedEntry {
            entry: self.entry,
            signatures: self.signatures,
        }
    }

    /// Time left before expiry, measured against `now_ms` (Unix ms).
    #[must_use]
    pub fn remaining(&self, now_ms: u64) -> Duration {
        Duration::from_millis(self.expires_at.saturating_sub(now_ms))
    }
}

/// The index name of the records having `pk` as an edge.
pub(crate) fn edge_index(pk: &PublicKey) -> String {
    format!("edge:{pk}")
}

#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) records: Records<TransportRecord>,
    pub(crate) verifier: SharedVerifier,
    pub(crate) entry_ttl: Duration,
    pub(crate) max_batch: usize,
    pub(crate) max_list: usize,
    pub(crate) limits: StackLimits,
}

/// `{"deleted": "<id>"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deleted {
    /// The removed transport.
    pub deleted: TransportId,
}

pub(crate) fn router(state: AppState, trace: bool) -> Router {
    let sign = RequireSignatureLayer::with_verifier(state.verifier.clone());
    let limits = state.limits;
    let router = Router::new()
        .route("/transports", post(register).route_layer(sign.clone()))
        .route("/transports/", post(register).route_layer(sign.clone()))
        .route(
            "/transports/{selector}",
            delete(delete_transport)
                .route_layer(sign)
                .get(get_transports),
        )
        .route("/all-transports", get(all_transports))
        .with_state(state);
    wrap(router, limits, trace)
}

fn entry_error(i: usize, e: &EntryError) -> ApiError {
    let message = format!("entry {i}: {e}");
    match e {
        EntryError::CallerNotEdge(_) => ApiError::forbidden(e.code(), message),
        _ => ApiError::unprocessable(e.code(), message),
    }
}

async fn register(
    State(state): State<AppState>,
    Extension(VerifiedKey(caller)): Extension<VerifiedKey>,
    body: Bytes,
) -> Result<Json<Vec<TransportRecord>>, ApiError> {
    let entries: Vec<SignedEntry> = parse_json(&body, "malformed_entry", "transport entries")?;
    if entries.is_empty() {
        return Err(ApiError::unprocessable(
            "empty_batch",
            "the body is an empty list; send at least one entry",
        ));
    }
    if entries.len() > state.max_batch {
        return Err(ApiError::unprocessable(
            "batch_too_large",
            format!(
                "{} entries in one request; at most {} are accepted",
                entries.len(),
                state.max_batch
            ),
        ));
    }
    // All or nothing: every entry is checked before any is stored.
    for (i, e) in entries.iter().enumerate() {
        e.verify(Some(&caller))
            .map_err(|err| entry_error(i, &err))?;
    }
    let now = clock_ms();
    let ttl_ms = u64::try_from(state.entry_ttl.as_millis()).unwrap_or(u64::MAX);
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        let record = TransportRecord {
            entry: e.entry,
            signatures: e.signatures,
            registered_at: now,
            expires_at: now.saturating_add(ttl_ms),
        };
        let indexes = e.entry.edges.map(|pk| edge_index(&pk));
        state
            .records
            .put(&e.entry.id.to_string(), &record, state.entry_ttl, &indexes)
            .await?;
        out.push(record);
    }
    tracing::debug!(%caller, count = out.len(), "transports registered");
    Ok(Json(out))
}

enum Selector {
    Id(TransportId),
    Edge(PublicKey),
}

fn parse_selector(s: &str) -> Result<Selector, ApiError> {
    if let Some(id) = s.strip_prefix("id:") {
        id.parse()
            .map(Selector::Id)
            .map_err(|e| ApiError::bad_request("bad_id", e.to_string()))
    } else if let Some(pk) = s.strip_prefix("edge:") {
        pk.parse()
            .map(Selector::Edge)
            .map_err(|e| ApiError::bad_request("bad_key", format!("malformed public key: {e}")))
    } else {
        Err(ApiError::bad_request(
            "bad_selector",
            "expected /transports/id:<transport id> or /transports/edge:<public key>",
        ))
    }
}

async fn get_transports(
    State(state): State<AppState>,
    Path(selector): Path<String>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    match parse_selector(&selector)? {
        Selector::Id(id) => match state.records.get(&id.to_string()).await? {
            Some(r) => Ok(Json(r).into_response()),
            None => Err(ApiError::not_found(format!("no transport {id}"))),
        },
        Selector::Edge(pk) => {
            let mut list: Vec<TransportRecord> = state
                .records
                .by_index(&edge_index(&pk))
                .await?
                .into_iter()
                .map(|(_, r)| r)
                .collect();
            list.sort_unstable_by_key(|r| r.entry.id);
            list.truncate(state.max_list);
            Ok(Json(list).into_response())
        }
    }
}

async fn delete_transport(
    State(state): State<AppState>,
    Extension(VerifiedKey(caller)): Extension<VerifiedKey>,
    Path(selector): Path<String>,
) -> Result<Json<Deleted>, ApiError> {
    let Selector::Id(id) = parse_selector(&selector)? else {
        return Err(ApiError::bad_request(
            "bad_selector",
            "delete one transport at a time: DELETE /transports/id:<transport id>",
        ));
    };
    let key = id.to_string();
    let Some(record) = state.records.get(&key).await? else {
        return Err(ApiError::not_found(format!("no transport {id}")));
    };
    if record.entry.edge_index(&caller).is_none() {
        return Err(ApiError::forbidden(
            "caller_not_edge",
            format!("only an edge of transport {id} may delete it; {caller} is not one"),
        ));
    }
    if !state.records.delete(&key).await? {
        return Err(ApiError::not_found(format!("no transport {id}")));
    }
    tracing::debug!(%caller, %id, "transport deleted");
    Ok(Json(Deleted { deleted: id }))
}

async fn all_transports(
    State(state): State<AppState>,
) -> Result<Json<Vec<TransportRecord>>, ApiError> {
    let mut list: Vec<TransportRecord> = state
        .records
        .all()
        .await?
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    list.sort_unstable_by_key(|r| r.entry.id);
    list.truncate(state.max_list);
    Ok(Json(list))
}
