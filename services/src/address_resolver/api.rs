//! The HTTP API (`docs/api/address-resolver.md`): request and answer types, the axum router,
//! and the tower stack around it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use skytower_transports::connector::Peer;
use skytower_transports::identity::PublicKey;

use super::bindings::{Binding, Bindings, Transport};
use super::udp::{Puncher, address_allowed};
use super::wire::canonical_ip;
use crate::api::ApiError;
use crate::auth::{AuthConfig, RequireSignatureLayer, VerifiedKey, Verifier};
use crate::http_stack::{StackLimits, wrap};
use crate::svcmode::metrics::RouteLabelLayer;

/// Most local addresses a STCPR binding may carry.
pub const MAX_STCPR_ADDRESSES: usize = 16;

/// `POST /bind/stcpr`: the node's TCP listening port and local addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindRequest {
    /// The TCP port the node listens on (reachable at the observed public IP).
    pub port: u16,
    /// The node's local addresses (given to peers behind the same public IP; at most 16).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<IpAddr>,
    /// The node's public IP, for binds over DMSG (where no IP is observable). Accepted only by
    /// a resolver running with `--allow-loopback` (a trusted network); ignored over HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_ip: Option<IpAddr>,
}

/// The answer to `POST /bind/stcpr`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindResponse {
    /// Always `"bound"`.
    pub result: String,
    /// Where peers will dial: the observed public IP and the bound port.
    pub remote_addr: SocketAddr,
    /// Seconds the binding lives without being renewed (bind again before it ends).
    pub ttl_secs: u64,
}

/// The answer to `GET /resolve/{transport}/{pk}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolved {
    /// The resolved node.
    pub pk: PublicKey,
    /// The transport.
    pub transport: Transport,
    /// Where to dial it: STCPR the public IP and bound port; SUDPH its observed UDP address.
    pub remote_addr: SocketAddr,
    /// Its local listening port.
    pub port: u16,
    /// Whether the caller is behind the same public IP (then `addresses` are given: try
    /// `addresses[i]:port` first).
    pub is_local: bool,
    /// Its local addresses (only when `is_local`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<IpAddr>,
    /// SUDPH: whether the resolved node was told to punch a hole towards the caller (the
    /// caller needs a live SUDPH binding of its own for that).
    #[serde(default)]
    pub punched: bool,
}

/// The answer to `GET /transports`: the keys with a live binding, per transport.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransportsList {
    /// Keys with an STCPR binding (sorted).
    pub stcpr: Vec<PublicKey>,
    /// Keys with a SUDPH binding (sorted).
    pub sudph: Vec<PublicKey>,
}

/// Options of the handlers.
#[derive(Clone, Debug)]
pub(crate) struct ApiOptions {
    pub(crate) allow_loopback: bool,
    pub(crate) max_list: usize,
    pub(crate) max_body: usize,
    pub(crate) request_timeout: Duration,
    pub(crate) max_in_flight: usize,
    pub(crate) auth: AuthConfig,
}

#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) bindings: Bindings,
    pub(crate) puncher: Option<Puncher>,
    pub(crate) opts: Arc<ApiOptions>,
}

/// The router: signed routes behind one [`RequireSignatureLayer`], `/transports`, a JSON 404
/// fallback; around it: panic → 500, a JSON envelope for bodiless errors, load shedding (503)
/// beyond `max_in_flight`, the request deadline (408), the body read deadline and size limit
/// (413). `/health` is answered by the service mode in front of it.
pub(crate) fn router(state: AppState) -> Router {
    let opts = state.opts.clone();
    let verifier =
        Verifier::new(opts.auth).with_shared_nonces(state.bindings.store().shared_nonces());
    let auth = RequireSignatureLayer::with_verifier(Arc::new(verifier));
    let router = Router::new()
        .route(
            "/bind/stcpr",
            post(bind_stcpr)
                .delete(unbind_stcpr)
                .route_layer(auth.clone()),
        )
        .route("/resolve/{transport}/{pk}", get(resolve).route_layer(auth))
        .route("/transports", get(transports))
        .route_layer(RouteLabelLayer)
        .fallback(|| async { ApiError::not_found("no such route") })
        .with_state(state);
    wrap(
        router,
        StackLimits {
            max_in_flight: opts.max_in_flight,
            request_timeout: opts.request_timeout,
            max_body: opts.max_body,
        },
    )
}

fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => {
            ApiError::unprocessable("malformed_request", format!("malformed request: {e}"))
        }
        _ => ApiError::bad_request("malformed_json", format!("malformed JSON: {e}")),
    })
}

/// The caller's IP as seen on the connection; `None` over DMSG.
fn observed_ip(req: &Request) -> Option<IpAddr> {
    match req.extensions().get::<Peer>() {
        Some(Peer::Tcp(addr)) => Some(canonical_ip(addr.ip())),
        _ => req
            .extensions()
            .get::<axum::extract::ConnectInfo<SocketAddr>>()
            .map(|c| canonical_ip(c.0.ip())),
    }
}

async fn bind_stcpr(
    State(state): State<AppState>,
    Extension(VerifiedKey(pk)): Extension<VerifiedKey>,
    req: Request,
) -> Result<Json<BindResponse>, ApiError> {
    let observed = observed_ip(&req);
    let body = axum::body::to_bytes(req.into_body(), state.opts.max_body)
        .await
        .map_err(|e| ApiError::bad_request("bad_body", e.to_string()))?;
    let bind: BindRequest = parse_json(&body)?;
    let ip = match (observed, bind.public_ip) {
        (Some(ip), _) => ip,
        (None, Some(ip)) if state.opts.allow_loopback => canonical_ip(ip),
        (None, _) => {
            return Err(ApiError::bad_request(
                "no_observed_ip",
                "no IP is observable over DMSG: bind STCPR over HTTP (a resolver running with \
                 --allow-loopback also accepts a declared public_ip)",
            ));
        }
    };
    if bind.port == 0 {
        return Err(ApiError::unprocessable("bad_port", "port must not be 0"));
    }
    if bind.addresses.len() > MAX_STCPR_ADDRESSES {
        return Err(ApiError::unprocessable(
            "too_many_addresses",
            format!(
                "{} local addresses (at most {MAX_STCPR_ADDRESSES})",
                bind.addresses.len()
            ),
        ));
    }
    if !address_allowed(ip, state.opts.allow_loopback) {
        return Err(ApiError::unprocessable(
            "address_refused",
            format!(
                "{ip} is not a public address (start the resolver with --allow-loopback for \
                 local networks)"
            ),
        ));
    }
    let remote = SocketAddr::new(ip, bind.port);
    let binding = Binding {
        pk,
        transport: Transport::Stcpr,
        remote,
        port: bind.port,
        addresses: bind.addresses.into_iter().map(canonical_ip).collect(),
        session: None,
    };
    state.bindings.put(&binding).await?;
    tracing::debug!(%pk, %remote, "STCPR bound");
    Ok(Json(BindResponse {
        result: "bound".into(),
        remote_addr: remote,
        ttl_secs: state.bindings.ttl().as_secs(),
    }))
}

#[derive(Serialize)]
struct Outcome {
    result: &'static str,
}

async fn unbind_stcpr(
    State(state): State<AppState>,
    Extension(VerifiedKey(pk)): Extension<VerifiedKey>,
) -> Result<Response, ApiError> {
    if state.bindings.delete(Transport::Stcpr, &pk).await? {
        Ok(Json(Outcome { result: "deleted" }).into_response())
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_binding",
            format!("{pk} has no STCPR binding"),
        ))
    }
}

async fn resolve(
    State(state): State<AppState>,
    Extension(VerifiedKey(caller)): Extension<VerifiedKey>,
    Path((transport, pk)): Path<(String, String)>,
    req: Request,
) -> Result<Json<Resolved>, ApiError> {
    let transport: Transport = transport
        .parse()
        .map_err(|e: String| ApiError::bad_request("bad_transport", e))?;
    let pk: PublicKey = pk
        .parse()
        .map_err(|e| ApiError::bad_request("bad_key", format!("malformed public key: {e}")))?;
    let Some(target) = state.bindings.get(transport, &pk).await? else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_binding",
            format!("{pk} has no {transport} binding"),
        ));
    };
    // The caller's own SUDPH binding: where the target should punch to.
    let caller_sudph = match transport {
        Transport::Sudph => state.bindings.get(Transport::Sudph, &caller).await?,
        Transport::Stcpr => None,
    };
    // The caller's public IP: the connection's, or (over DMSG) that of one of its bindings.
    let caller_ip = match observed_ip(&req) {
        Some(ip) => Some(ip),
        None => match &caller_sudph {
            Some(b) => Some(b.remote.ip()),
            None => {
                let mut ip = None;
                for t in [Transport::Stcpr, Transport::Sudph] {
                    if let Some(b) = state.bindings.get(t, &caller).await? {
                        ip = Some(b.remote.ip());
                        break;
                    }
                }
                ip
            }
        },
    };
    let is_local = caller_ip == Some(target.remote.ip()) && caller != pk;
    let punched = match (&caller_sudph, &state.puncher) {
        (Some(c), Some(p)) if caller != pk => p.punch(&target, c),
        _ => false,
    };
    Ok(Json(Resolved {
        pk,
        transport,
        remote_addr: target.remote,
        port: target.port,
        is_local,
        addresses: if is_local {
            target.addresses
        } else {
            Vec::new()
        },
        punched,
    }))
}

async fn transports(State(state): State<AppState>) -> Result<Json<TransportsList>, ApiError> {
    let max = state.opts.max_list;
    Ok(Json(TransportsList {
        stcpr: state.bindings.list(Transport::Stcpr, max).await?,
        sudph: state.bindings.list(Transport::Sudph, max).await?,
    }))
}
