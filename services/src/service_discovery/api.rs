//! The HTTP API (`docs/api/service-discovery.md`): routes, handlers, and the tower stack.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, RawQuery, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use axum::{Extension, Json, Router};
use bytes::Bytes;
use http::{StatusCode, header};
use serde::Serialize;
use skytower_layers::health::HealthLayer;
use skytower_transports::dmsg::wire::Addr;
use tower::ServiceBuilder;

use super::directory::{Directory, DirectoryError};
use super::model::{QueryError, Registration, ServiceQuery, ValidationError};
use crate::api::ApiError;
use crate::auth::{RequireSignatureLayer, VerifiedKey};
use crate::dmsg_discovery::{KeyedRateLimit, RateKey};

/// What the handlers share.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) dir: Directory,
    pub(crate) limit: KeyedRateLimit,
    pub(crate) opts: Arc<Options>,
}

/// Limits of the stack (from [`Config`](super::Config)).
#[derive(Clone, Debug)]
pub(crate) struct Options {
    pub(crate) max_list: usize,
    pub(crate) max_body: usize,
    pub(crate) request_timeout: Duration,
    pub(crate) max_in_flight: usize,
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        ApiError::unprocessable(e.code(), e.to_string())
    }
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        let code = match e {
            QueryError::MissingType => "missing_type",
            QueryError::Bad(_) => "bad_query",
        };
        ApiError::bad_request(code, e.to_string())
    }
}

impl From<DirectoryError> for ApiError {
    fn from(e: DirectoryError) -> Self {
        match e {
            DirectoryError::TooManyEntries { .. } => {
                ApiError::new(StatusCode::CONFLICT, "too_many_entries", e.to_string())
            }
            DirectoryError::Store(e) => e.into(),
        }
    }
}

/// The router: the API (writes behind `auth`), `/health` with a `store` check, a JSON 404
/// fallback, and around it: panic → 500, the JSON envelope for bodiless errors, load shedding
/// beyond `max_in_flight` (503), the request deadline (408), the body read deadline and the
/// body size limit (413: at once from `content-length`, else while the signed routes'
/// [`RequireSignatureLayer`] reads the body).
pub(crate) fn router(state: AppState, auth: RequireSignatureLayer, health: HealthLayer) -> Router {
    let health = health.check(
        "store",
        crate::ttl_store::StoreCheck {
            store: state.dir.store().clone(),
            count: "entries",
        },
    );
    let opts = state.opts.clone();
    let signed = |route: MethodRouter<AppState>| route.route_layer(auth.clone());
    let router = Router::new()
        .route("/api/services", get(list).merge(signed(post(register))))
        .route(
            "/api/services/{addr}",
            get(get_one).merge(signed(axum::routing::delete(delete_one))),
        )
        .route_service(
            "/health",
            ServiceBuilder::new()
                .layer(axum::error_handling::HandleErrorLayer::new(
                    |e: tower::BoxError| async move {
                        ApiError::internal(format!("health report failed: {e}"))
                    },
                ))
                .layer(health)
                .service_fn(|_req: Request| async {
                    Ok::<_, Infallible>(ApiError::not_found("no such route").into_response())
                }),
        )
        .fallback(|| async { ApiError::not_found("no such route") })
        .with_state(state);
    crate::http_stack::wrap(
        router,
        crate::http_stack::StackLimits {
            max_in_flight: opts.max_in_flight,
            request_timeout: opts.request_timeout,
            max_body: opts.max_body,
        },
    )
}

fn parse_addr(s: &str) -> Result<Addr, ApiError> {
    s.parse().map_err(|e| {
        ApiError::bad_request(
            "bad_address",
            format!("{e} (expected <64 hex public key>:<port 1-65535>)"),
        )
    })
}

fn parse_registration(body: &[u8]) -> Result<Registration, ApiError> {
    serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => {
            ApiError::unprocessable("malformed_service", format!("malformed service: {e}"))
        }
        _ => ApiError::bad_request("malformed_json", format!("malformed JSON: {e}")),
    })
}

fn forbidden_key(caller: &VerifiedKey, addr: &Addr) -> ApiError {
    ApiError::forbidden(
        "forbidden_key",
        format!(
            "the request is signed by {} but the address belongs to {}: a key can only \
             register and delete its own entries",
            caller.0, addr.pk
        ),
    )
}

fn charge(state: &AppState, caller: &VerifiedKey) -> Result<(), ApiError> {
    state
        .limit
        .check(&RateKey::Key(caller.0))
        .map_err(ApiError::rate_limited)
}

async fn register(
    State(state): State<AppState>,
    Extension(caller): Extension<VerifiedKey>,
    body: Bytes,
) -> Result<Response, ApiError> {
    charge(&state, &caller)?;
    let reg = parse_registration(&body)?;
    if reg.address.pk != caller.0 {
        return Err(forbidden_key(&caller, &reg.address));
    }
    let reg = reg.validated()?;
    let done = state.dir.register(reg).await?;
    tracing::debug!(
        address = %done.entry.address,
        kind = %done.entry.kind,
        created = done.created,
        "service registered"
    );
    let status = if done.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(done.entry)).into_response())
}

/// A JSON answer made of stored entries, without decoding them.
fn json_answer(body: Vec<u8>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

async fn list(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let query = ServiceQuery::parse(query.as_deref().unwrap_or(""))?;
    let limit = query
        .quantity
        .unwrap_or(state.opts.max_list)
        .min(state.opts.max_list);
    let entries = state.dir.query_json(&query, limit).await?;
    let mut body = Vec::with_capacity(2 + entries.iter().map(|e| e.len() + 1).sum::<usize>());
    body.push(b'[');
    for (i, entry) in entries.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(entry);
    }
    body.push(b']');
    Ok(json_answer(body))
}

async fn get_one(
    State(state): State<AppState>,
    Path(addr): Path<String>,
) -> Result<Response, ApiError> {
    let addr = parse_addr(&addr)?;
    match state.dir.get_json(&addr).await? {
        Some(entry) => Ok(json_answer(entry)),
        None => Err(ApiError::not_found(format!("no service at {addr}"))),
    }
}

#[derive(Serialize)]
struct Outcome {
    result: &'static str,
}

async fn delete_one(
    State(state): State<AppState>,
    Extension(caller): Extension<VerifiedKey>,
    Path(addr): Path<String>,
) -> Result<Json<Outcome>, ApiError> {
    charge(&state, &caller)?;
    let addr = parse_addr(&addr)?;
    if addr.pk != caller.0 {
        return Err(forbidden_key(&caller, &addr));
    }
    if state.dir.delete(&addr).await? {
        tracing::debug!(%addr, "service deleted");
        Ok(Json(Outcome { result: "deleted" }))
    } else {
        Err(ApiError::not_found(format!("no service at {addr}")))
    }
}
