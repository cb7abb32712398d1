//! The HTTP API: request and answer types, the handler and the router.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use skytower_layers::check::{CheckFuture, CheckReport, HealthCheck};
use skytower_transports::identity::PublicKey;

use super::graph::{Path, SearchError, SearchOptions};
use super::{Config, GraphState};
use crate::api::ApiError;
use crate::transport_discovery::http::{StackLimits, parse_json, read_body, wrap};

/// Hop bounds a request gets when it does not say (`max_hops`).
pub const DEFAULT_MAX_HOPS: u16 = 10;
/// Paths per pair a request gets when it does not say (`max_paths`).
pub const DEFAULT_MAX_PATHS: usize = 5;

/// One source/destination pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pair {
    /// Where the route starts.
    pub src: PublicKey,
    /// Where it ends.
    pub dst: PublicKey,
}

/// `POST /routes` body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutesRequest {
    /// The pairs to find routes for (e.g. forward and reverse).
    pub pairs: Vec<Pair>,
    /// Shortest route wanted, in hops (default 0: any).
    #[serde(default)]
    pub min_hops: u16,
    /// Longest route wanted (default 10).
    #[serde(default = "default_max_hops")]
    pub max_hops: u16,
    /// Most routes per pair (default 5).
    #[serde(default = "default_max_paths")]
    pub max_paths: usize,
}

fn default_max_hops() -> u16 {
    DEFAULT_MAX_HOPS
}

fn default_max_paths() -> usize {
    DEFAULT_MAX_PATHS
}

impl RoutesRequest {
    /// A request for `pairs` with the default bounds.
    #[must_use]
    pub fn new(pairs: Vec<Pair>) -> Self {
        RoutesRequest {
            pairs,
            min_hops: 0,
            max_hops: DEFAULT_MAX_HOPS,
            max_paths: DEFAULT_MAX_PATHS,
        }
    }
}

/// The routes of one pair, shortest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PairRoutes {
    /// The source.
    pub src: PublicKey,
    /// The destination.
    pub dst: PublicKey,
    /// Up to `max_paths` routes.
    pub paths: Vec<Path>,
}

/// `POST /routes` answer: one entry per requested pair, in request order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutesResponse {
    /// The routes.
    pub routes: Vec<PairRoutes>,
}

#[derive(Clone, Debug)]
pub(crate) struct AppState {
    pub(crate) graph: Arc<GraphState>,
    pub(crate) config: Arc<Config>,
}

pub(crate) fn router(state: AppState, trace: bool) -> Router {
    let limits = StackLimits {
        max_body: state.config.max_body,
        request_timeout: state.config.request_timeout,
        max_in_flight: state.config.max_in_flight,
    };
    let router = Router::new()
        .route("/routes", post(routes))
        .with_state(state);
    wrap(router, limits, trace)
}

fn search_error(p: &Pair, e: &SearchError) -> ApiError {
    let code = match e {
        SearchError::UnknownSource(_) => "unknown_source",
        SearchError::UnknownDestination(_) => "unknown_destination",
        SearchError::SameNode(_) => "same_node",
        SearchError::NoPath { .. } => "no_route",
        SearchError::WorkLimit(_) => "search_limit",
    };
    let message = match e {
        SearchError::NoPath { .. } | SearchError::WorkLimit(_) => {
            format!("from {} to {}: {e}", p.src, p.dst)
        }
        _ => e.to_string(),
    };
    ApiError::new(StatusCode::NOT_FOUND, code, message)
}

async fn routes(
    State(state): State<AppState>,
    body: Body,
) -> Result<Json<RoutesResponse>, ApiError> {
    let config = &state.config;
    let bytes = read_body(body, config.max_body).await?;
    let req: RoutesRequest = parse_json(&bytes, "malformed_request", "routes request")?;
    if req.pairs.is_empty() {
        return Err(ApiError::unprocessable("no_pairs", "`pairs` is empty"));
    }
    if req.pairs.len() > config.max_pairs {
        return Err(ApiError::unprocessable(
            "too_many_pairs",
            format!(
                "{} pairs in one request; at most {} are accepted",
                req.pairs.len(),
                config.max_pairs
            ),
        ));
    }
    if req.max_hops == 0 || req.max_hops > config.max_hops || req.min_hops > req.max_hops {
        return Err(ApiError::unprocessable(
            "bad_hops",
            format!(
                "need min_hops ≤ max_hops and 1 ≤ max_hops ≤ {}; got {}..{}",
                config.max_hops, req.min_hops, req.max_hops
            ),
        ));
    }
    if req.max_paths == 0 || req.max_paths > config.max_paths {
        return Err(ApiError::unprocessable(
            "bad_max_paths",
            format!(
                "max_paths must be 1 to {}; got {}",
                config.max_paths, req.max_paths
            ),
        ));
    }
    if let Some(p) = req.pairs.iter().find(|p| p.src == p.dst) {
        return Err(ApiError::unprocessable(
            "same_node",
            format!("source and destination are the same node ({})", p.src),
        ));
    }
    let Some(graph) = state.graph.current() else {
        return Err(ApiError {
            retry_after: Some(std::time::Duration::from_secs(1)),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "graph_unavailable",
                "the transports have not been loaded yet",
            )
        });
    };
    let opts = SearchOptions {
        min_hops: req.min_hops,
        max_hops: req.max_hops,
        max_paths: req.max_paths,
        max_work: config.max_work,
    };
    let now = tokio::time::Instant::now();
    let mut routes = Vec::with_capacity(req.pairs.len());
    for p in &req.pairs {
        let paths = graph
            .find(&p.src, &p.dst, &opts, now)
            .map_err(|e| search_error(p, &e))?;
        routes.push(PairRoutes {
            src: p.src,
            dst: p.dst,
            paths,
        });
    }
    Ok(Json(RoutesResponse { routes }))
}

/// The graph's health: `ok` with its size and age, `degraded` while the last refresh failed,
/// `down` before the first one succeeded.
pub(crate) struct GraphCheck(pub(crate) Arc<GraphState>);

impl HealthCheck for GraphCheck {
    fn check(&self) -> CheckFuture<'_> {
        Box::pin(async move {
            let status = self.0.status();
            let details = serde_json::json!({
                "nodes": status.nodes,
                "transports": status.transports,
                "live": status.live,
                "age_ms": status.age.map(|a| a.as_millis() as u64),
                "last_error": status.last_error,
            });
            match (status.age, &status.last_error) {
                (None, _) => CheckReport::down(details),
                (Some(_), Some(_)) => CheckReport::degraded(details),
                (Some(_), None) => CheckReport::ok().with_details(details),
            }
        })
    }
}
