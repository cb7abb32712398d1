//! The HTTP API: axum routes, handlers, and the tower stack around them.

use std::any::Any;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http::{StatusCode, header};
use serde::Serialize;
use skytower_layers::check::{CheckFuture, CheckReport, HealthCheck};
use skytower_layers::health::HealthLayer;
use skytower_transports::connector::Peer;
use skytower_transports::dmsg::disc::{DeleteRequest, Entry};
use skytower_transports::dmsg::replay::unix_ms_now;
use skytower_transports::identity::PublicKey;
use tower::ServiceBuilder;
use tower_http::trace::TraceLayer;

use super::error::ApiError;
use super::limit::{KeyedRateLimit, RateKey};
use super::store::{EntryJson, Store};

/// Most entries `available_servers` returns.
pub const MAX_AVAILABLE_SERVERS: usize = 512;

/// Options of the handlers (from [`Config`](super::Config)).
#[derive(Clone, Debug)]
pub(crate) struct ApiOptions {
    pub(crate) window_ms: u64,
    pub(crate) allow_loopback: bool,
    pub(crate) max_body: usize,
    pub(crate) max_list: usize,
    pub(crate) request_timeout: Duration,
    pub(crate) max_in_flight: usize,
}

#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) limit: KeyedRateLimit,
    pub(crate) opts: Arc<ApiOptions>,
}

#[derive(Serialize)]
struct Outcome {
    result: &'static str,
}

/// The full router: API routes (rate-limited per peer), `/health` through the layers crate's
/// [`HealthLayer`], a JSON 404 fallback, and around all of it: trace, panic → 500, a JSON error
/// envelope for bodiless errors, load shedding (503) beyond `max_in_flight`, the request
/// deadline (408), the body read deadline, and the body size limit (413). `trace` adds
/// tower-http's trace layer outermost (off under the service mode, which has its own).
pub(crate) fn router(state: AppState, health: HealthLayer, trace: bool) -> Router {
    let health = health.check("store", StoreCheck(state.store.clone()));
    let opts = state.opts.clone();
    let router = Router::new()
        .route("/dmsg-discovery/entry", post(post_entry))
        .route("/dmsg-discovery/entry/", post(post_entry))
        .route(
            "/dmsg-discovery/entry/{pk}",
            get(get_entry).delete(delete_entry),
        )
        .route("/dmsg-discovery/available_servers", get(available_servers))
        .route("/dmsg-discovery/all_servers", get(all_servers))
        .route("/dmsg-discovery/entries", get(client_entries))
        .layer(middleware::from_fn_with_state(state.clone(), limit_by_peer))
        .route_service(
            "/health",
            ServiceBuilder::new()
                .layer(axum::error_handling::HandleErrorLayer::new(
                    |e: tower::BoxError| async move {
                        ApiError::new(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "internal",
                            format!("health report failed: {e}"),
                        )
                    },
                ))
                .layer(health)
                .service_fn(|_req: Request| async {
                    Ok::<_, Infallible>(not_found("no such route").into_response())
                }),
        )
        .fallback(|| async { not_found("no such route") })
        .with_state(state);
    let router = crate::http_stack::wrap(
        router,
        crate::http_stack::StackLimits {
            max_in_flight: opts.max_in_flight,
            request_timeout: opts.request_timeout,
            max_body: opts.max_body,
        },
    );
    if trace {
        router.layer(TraceLayer::new_for_http())
    } else {
        router
    }
}

fn not_found(message: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
}

pub(crate) fn panic_response(_: Box<dyn Any + Send + 'static>) -> Response {
    tracing::error!("handler panicked");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "internal error",
    )
    .into_response()
}

/// Gives the error responses made by layers (413, 408, 405...) the JSON envelope.
pub(crate) async fn json_envelope(res: Response) -> Response {
    let status = res.status();
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return res;
    }
    let (code, message) = match status {
        StatusCode::PAYLOAD_TOO_LARGE => ("body_too_large", "request body too large"),
        StatusCode::REQUEST_TIMEOUT => ("timeout", "request timed out"),
        StatusCode::METHOD_NOT_ALLOWED => ("method_not_allowed", "method not allowed"),
        StatusCode::NOT_FOUND => ("not_found", "no such route"),
        s if s.is_client_error() => ("bad_request", "bad request"),
        _ => ("internal", "internal error"),
    };
    let mut out = ApiError::new(status, code, message).into_response();
    for name in [header::ALLOW, header::RETRY_AFTER] {
        if let Some(v) = res.headers().get(&name) {
            out.headers_mut().insert(name, v.clone());
        }
    }
    out
}

/// The rate-limit key of a peer: its IPv4 address, or its IPv6 /64 (one subscriber's range).
fn peer_key(addr: SocketAddr) -> RateKey {
    match addr.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => RateKey::Ip(IpAddr::V4(v4)),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                RateKey::Ip(IpAddr::V6(Ipv6Addr::from(prefix)))
            }
        },
        ip => RateKey::Ip(ip),
    }
}

/// Who a request is charged to: the TCP peer's address range, or the DMSG peer's public key
/// (the service mode's [`Peer`]; axum's `ConnectInfo` when served by plain axum).
pub(crate) fn request_key(req: &Request) -> RateKey {
    if let Some(ConnectInfo(addr)) = req.extensions().get::<ConnectInfo<SocketAddr>>() {
        return peer_key(*addr);
    }
    match req.extensions().get::<Peer>() {
        Some(Peer::Tcp(addr)) => peer_key(*addr),
        Some(Peer::Dmsg(addr)) => RateKey::Dmsg(addr.pk),
        None => RateKey::Unknown,
    }
}

async fn limit_by_peer(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let key = request_key(&req);
    if let Err(wait) = state.limit.check(&key) {
        tracing::debug!(?key, ?wait, "rate limited");
        return ApiError::rate_limited(wait).into_response();
    }
    next.run(req).await
}

fn parse_pk(s: &str) -> Result<PublicKey, ApiError> {
    s.parse()
        .map_err(|e| ApiError::bad_request("bad_key", format!("malformed public key: {e}")))
}

/// Whether a server address points at this machine (loopback or unspecified).
pub(crate) fn is_loopback_address(address: &str) -> bool {
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let lower = host.to_ascii_lowercase();
    if lower == "localhost" || lower.ends_with(".localhost") {
        return true;
    }
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.is_loopback() || v4.is_unspecified(),
            None => v6.is_loopback() || v6.is_unspecified(),
        },
        Ok(ip) => ip.is_loopback() || ip.is_unspecified(),
        Err(_) => false,
    }
}

async fn read_body(body: Body, max: usize) -> Result<bytes::Bytes, ApiError> {
    axum::body::to_bytes(body, max).await.map_err(|e| {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(s) = source {
            if s.is::<http_body_util::LengthLimitError>() {
                return ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    format!("request body larger than {max} bytes"),
                );
            }
            source = s.source();
        }
        ApiError::bad_request("bad_body", format!("cannot read the request body: {e}"))
    })
}

fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => {
            ApiError::unprocessable("malformed_entry", format!("malformed {what}: {e}"))
        }
        _ => ApiError::bad_request("malformed_json", format!("malformed JSON: {e}")),
    })
}

fn check_window(timestamp: u64, window_ms: u64, what: &str) -> Result<(), ApiError> {
    let now = unix_ms_now();
    if timestamp.abs_diff(now) > window_ms {
        return Err(ApiError::unprocessable(
            "timestamp_window",
            format!(
                "{what} timestamp {timestamp} is more than {window_ms} ms from the service's \
                 clock ({now})"
            ),
        ));
    }
    Ok(())
}

async fn get_entry(
    State(state): State<AppState>,
    Path(pk): Path<String>,
) -> Result<Json<Entry>, ApiError> {
    let pk = parse_pk(&pk)?;
    match state.store.get(pk).await? {
        Some(e) => Ok(Json(e)),
        None => Err(not_found(&format!("no entry for {pk}"))),
    }
}

async fn post_entry(State(state): State<AppState>, body: Body) -> Result<Response, ApiError> {
    let bytes = read_body(body, state.opts.max_body).await?;
    let entry: Entry = parse_json(&bytes, "entry")?;
    entry
        .validate()
        .map_err(|e| ApiError::unprocessable("invalid_entry", e.to_string()))?;
    if !state.opts.allow_loopback
        && let Some(s) = &entry.server
        && is_loopback_address(&s.address)
    {
        return Err(ApiError::unprocessable(
            "loopback_address",
            format!(
                "server address {:?} is a loopback address (start the discovery with \
                 --allow-loopback for local networks)",
                s.address
            ),
        ));
    }
    check_window(entry.timestamp, state.opts.window_ms, "entry")?;
    entry
        .verify()
        .map_err(|e| ApiError::new(StatusCode::UNAUTHORIZED, "bad_signature", e.to_string()))?;
    let pk = entry.static_pk;
    state
        .limit
        .check(&RateKey::Key(pk))
        .map_err(ApiError::rate_limited)?;
    let outcome = state.store.put(entry).await?;
    tracing::debug!(%pk, outcome = outcome.as_str(), "entry stored");
    Ok(Json(Outcome {
        result: outcome.as_str(),
    })
    .into_response())
}

async fn delete_entry(
    State(state): State<AppState>,
    Path(pk): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let pk = parse_pk(&pk)?;
    let bytes = read_body(body, state.opts.max_body).await?;
    let req: DeleteRequest = parse_json(&bytes, "delete request")?;
    if req.static_pk != pk {
        return Err(ApiError::bad_request(
            "key_mismatch",
            "the delete request's key is not the key in the path",
        ));
    }
    check_window(req.timestamp, state.opts.window_ms, "delete")?;
    req.verify()
        .map_err(|e| ApiError::new(StatusCode::UNAUTHORIZED, "bad_signature", e.to_string()))?;
    state
        .limit
        .check(&RateKey::Key(pk))
        .map_err(ApiError::rate_limited)?;
    state.store.delete(pk, req.timestamp).await?;
    tracing::debug!(%pk, "entry deleted");
    Ok(Json(Outcome { result: "deleted" }).into_response())
}

async fn available_servers(
    State(state): State<AppState>,
) -> Result<Json<Vec<EntryJson>>, ApiError> {
    Ok(Json(
        state
            .store
            .available_servers_json(MAX_AVAILABLE_SERVERS)
            .await?,
    ))
}

async fn all_servers(State(state): State<AppState>) -> Result<Json<Vec<EntryJson>>, ApiError> {
    Ok(Json(
        state.store.all_servers_json(state.opts.max_list).await?,
    ))
}

async fn client_entries(State(state): State<AppState>) -> Result<Json<Vec<PublicKey>>, ApiError> {
    Ok(Json(state.store.client_keys(state.opts.max_list).await?))
}

/// The store's health: `ok` with its kind and index sizes, `down` when it cannot be reached.
pub(crate) struct StoreCheck(pub(crate) Arc<dyn Store>);

impl HealthCheck for StoreCheck {
    fn check(&self) -> CheckFuture<'_> {
        Box::pin(async move {
            let kind = self.0.kind();
            match self.0.stats().await {
                Ok(stats) => CheckReport::ok().with_details(serde_json::json!({
                    "kind": kind,
                    "servers": stats.servers,
                    "clients": stats.clients,
                })),
                Err(e) => CheckReport::down(serde_json::json!({
                    "kind": kind,
                    "error": e.to_string(),
                })),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_addresses() {
        for a in [
            "127.0.0.1:1",
            "127.8.9.10:80",
            "localhost:1",
            "LOCALHOST:1",
            "a.localhost:1",
            "[::1]:1",
            "0.0.0.0:1",
            "[::]:1",
            "[::ffff:127.0.0.1]:1",
        ] {
            assert!(is_loopback_address(a), "{a}");
        }
        for a in [
            "192.0.2.1:1",
            "example.com:1",
            "[2001:db8::1]:1",
            "10.0.0.1:8081",
        ] {
            assert!(!is_loopback_address(a), "{a}");
        }
    }

    #[test]
    fn ipv6_peers_are_keyed_by_their_64() {
        let a: SocketAddr = "[2001:db8:1:2:aaaa::1]:5".parse().unwrap();
        let b: SocketAddr = "[2001:db8:1:2:bbbb::2]:6".parse().unwrap();
        let c: SocketAddr = "[2001:db8:1:3::1]:6".parse().unwrap();
        assert_eq!(peer_key(a), peer_key(b));
        assert_ne!(peer_key(a), peer_key(c));
        let m: SocketAddr = "[::ffff:192.0.2.1]:1".parse().unwrap();
        assert_eq!(peer_key(m), RateKey::Ip("192.0.2.1".parse().unwrap()));
    }
}
