//! The node's control API: HTTP/1 with JSON on a Unix socket that only the node's owner can
//! use (`docs/node.md`).
//!
//! The socket is created in a directory the node makes owner-only (0700) and is itself set to
//! 0600; every connection's peer credentials are checked too, and a peer running as another
//! user is dropped. Nothing is reachable from outside the machine. Connections are bounded
//! ([`MAX_CONNECTIONS`]), as is the time to send a request's headers.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use skytower_transports::dmsg::Client;
use skytower_transports::dmsg::disc::DiscoveryError;
use skytower_transports::identity::PublicKey;
use skytower_transports::task::AbortOnDrop;
use tokio::net::UnixListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::api::{self, ErrorBody, ErrorDetail, NodeHealth, NodeInfo, SessionRow};
use super::fetch::{self, FetchFailure, FetchSpec};

/// Most control connections served at once.
pub const MAX_CONNECTIONS: usize = 16;
/// Largest request body a fetch may post (16 MiB).
pub const MAX_FETCH_BODY: usize = 16 << 20;
/// Bound on `connect-all` (discovery lookup and every session handshake).
pub const CONNECT_ALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the control socket could not be created.
#[derive(Debug, thiserror::Error)]
pub enum ControlBindError {
    /// Another node answers on the socket.
    #[error("a node is already running with control socket {}", path.display())]
    AlreadyRunning {
        /// The socket.
        path: PathBuf,
    },
    /// Something other than a socket is in the way.
    #[error("{} exists and is not a socket; remove it or pass another --control path", path.display())]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// Creating, binding or securing the socket failed.
    #[error("control socket {}: {what}: {source}", path.display())]
    Io {
        /// The socket.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// What the control API knows about its node besides the client.
#[derive(Clone, Debug)]
pub struct ControlContext {
    /// The node's key.
    pub public_key: PublicKey,
    /// The DMSG address served on.
    pub dmsg_addr: String,
    /// The HTTP address (mode dual).
    pub http_addr: Option<std::net::SocketAddr>,
    /// The discovery URL, when known.
    pub discovery: Option<String>,
}

struct ControlState {
    client: Weak<Client>,
    context: ControlContext,
}

/// A running control API. [`shutdown`](Self::shutdown) stops it; dropping it aborts it. Either
/// way the socket file is removed.
#[derive(Debug)]
pub struct ControlServer {
    path: PathBuf,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
    _owner: AbortOnDrop,
}

impl ControlServer {
    /// Creates the socket at `path` (replacing a stale one, refusing if a node answers on it),
    /// sets it to 0600 and serves the API for `client` (held weakly: the API answers
    /// `shutting_down` once the node has closed it).
    ///
    /// # Errors
    ///
    /// [`ControlBindError`].
    pub fn bind(
        path: &Path,
        client: Weak<Client>,
        context: ControlContext,
    ) -> Result<ControlServer, ControlBindError> {
        let io = |what: &'static str| {
            let path = path.to_path_buf();
            move |source| ControlBindError::Io { path, what, source }
        };
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => {
                if std::os::unix::net::UnixStream::connect(path).is_ok() {
                    return Err(ControlBindError::AlreadyRunning {
                        path: path.to_path_buf(),
                    });
                }
                std::fs::remove_file(path).map_err(io("removing the stale socket"))?;
            }
            Ok(_) => {
                return Err(ControlBindError::NotASocket {
                    path: path.to_path_buf(),
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("inspecting")(e)),
        }
        let listener = UnixListener::bind(path).map_err(io("binding"))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(io("setting mode 0600"))?;
        let owner_uid = std::fs::metadata(path).map_err(io("inspecting"))?.uid();
        let state = Arc::new(ControlState { client, context });
        let router = router(state);
        let stop = CancellationToken::new();
        let task = tokio::spawn(serve(listener, router, owner_uid, stop.clone()));
        tracing::info!(path = %path.display(), "control API listening");
        Ok(ControlServer {
            path: path.to_path_buf(),
            stop,
            _owner: AbortOnDrop::new(&task),
            task: Some(task),
        })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops accepting, ends the open control connections and removes the socket file.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Err(e) = std::fs::remove_file(&self.path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.path.display(), error = %e, "could not remove the control socket");
        }
    }
}

async fn serve(listener: UnixListener, router: Router, owner_uid: u32, stop: CancellationToken) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut conns = JoinSet::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10));
    loop {
        while conns.try_join_next().is_some() {}
        let permit = tokio::select! {
            () = stop.cancelled() => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            () = stop.cancelled() => break,
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "control accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        match stream.peer_cred() {
            Ok(cred) if cred.uid() == owner_uid => {}
            Ok(cred) => {
                tracing::warn!(
                    uid = cred.uid(),
                    "control connection from another user refused"
                );
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "control connection without credentials refused");
                continue;
            }
        }
        let conn = builder.serve_connection(
            TokioIo::new(stream),
            TowerToHyperService::new(router.clone()),
        );
        conns.spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "control connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    conns.abort_all();
    while conns.join_next().await.is_some() {}
}

fn router(state: Arc<ControlState>) -> Router {
    Router::new()
        .route(api::HEALTH, get(health))
        .route(api::INFO, get(info))
        .route(api::SESSIONS, get(sessions))
        .route(api::CONNECT_ALL, post(connect_all))
        .route(api::FETCH, post(fetch_handler))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "no such endpoint") })
        .with_state(state)
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = ErrorBody {
        error: ErrorDetail {
            code: code.to_owned(),
            message: message.into(),
        },
    };
    let mut res = (status, axum::Json(body)).into_response();
    if let Ok(v) = HeaderValue::try_from(code) {
        res.headers_mut().insert(api::ERROR_HEADER, v);
    }
    res
}

fn shutting_down() -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "shutting_down",
        "the node is shutting down",
    )
}

fn rows(client: &Client) -> Vec<SessionRow> {
    let mut rows: Vec<SessionRow> = client.sessions().iter().map(SessionRow::from).collect();
    rows.sort_by_key(|r| (r.connected_since_ms, r.server));
    rows
}

async fn health(State(st): State<Arc<ControlState>>) -> Response {
    let Some(client) = st.client.upgrade() else {
        return shutting_down();
    };
    let sessions = client.sessions().len();
    let (status, text) = if sessions > 0 {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "degraded")
    };
    let body = NodeHealth {
        status: text.to_owned(),
        sessions,
    };
    (status, axum::Json(body)).into_response()
}

async fn info(State(st): State<Arc<ControlState>>) -> Response {
    let Some(client) = st.client.upgrade() else {
        return shutting_down();
    };
    let c = &st.context;
    axum::Json(NodeInfo {
        public_key: c.public_key,
        dmsg_addr: c.dmsg_addr.clone(),
        http_addr: c.http_addr,
        discovery: c.discovery.clone(),
        sessions: client.sessions().len(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    })
    .into_response()
}

async fn sessions(State(st): State<Arc<ControlState>>, uri: axum::http::Uri) -> Response {
    let Some(client) = st.client.upgrade() else {
        return shutting_down();
    };
    let ping = uri
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "ping=true" || kv == "ping=1"));
    if ping {
        client.ping_sessions().await;
    }
    axum::Json(rows(&client)).into_response()
}

async fn connect_all(State(st): State<Arc<ControlState>>) -> Response {
    let Some(client) = st.client.upgrade() else {
        return shutting_down();
    };
    match tokio::time::timeout(CONNECT_ALL_TIMEOUT, client.connect_all()).await {
        Ok(Ok(_)) => {}
        Ok(Err(DiscoveryError::Unavailable(m))) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "discovery_unavailable",
                format!("discovery unavailable: {m}"),
            );
        }
        Ok(Err(e)) => {
            return error(StatusCode::BAD_GATEWAY, "discovery", e.to_string());
        }
        Err(_) => {
            return error(
                StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                format!(
                    "connect-all did not finish within {}",
                    humantime::format_duration(CONNECT_ALL_TIMEOUT)
                ),
            );
        }
    }
    client.ping_sessions().await;
    axum::Json(rows(&client)).into_response()
}

/// A refused control request (small, so `Result`s stay small).
struct Reject {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl Reject {
    fn bad_request(message: String) -> Self {
        Reject {
            status: StatusCode::BAD_REQUEST,
            code: "bad_request",
            message,
        }
    }

    fn fetch(f: &FetchFailure) -> Self {
        let status = match f {
            FetchFailure::BadUrl { .. } => StatusCode::BAD_REQUEST,
            FetchFailure::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::BAD_GATEWAY,
        };
        Reject {
            status,
            code: f.code(),
            message: f.to_string(),
        }
    }

    fn into_response(self) -> Response {
        error(self.status, self.code, self.message)
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, Reject> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(Some)
            .map_err(|_| Reject::bad_request(format!("header {name} is not text"))),
    }
}

async fn fetch_handler(
    State(st): State<Arc<ControlState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let spec = match fetch_spec(&headers, body).await {
        Ok(spec) => spec,
        Err(reject) => return reject.into_response(),
    };
    let Some(client) = st.client.upgrade() else {
        return shutting_down();
    };
    match fetch::fetch(client, spec).await {
        Ok(fetched) => {
            let (mut parts, body) = fetched.response.into_parts();
            if let Ok(v) = HeaderValue::try_from(fetched.via.to_string()) {
                parts.headers.insert(api::VIA_HEADER, v);
            }
            parts.headers.remove(api::ERROR_HEADER);
            Response::from_parts(parts, Body::new(body))
        }
        Err(f) => Reject::fetch(&f).into_response(),
    }
}

async fn fetch_spec(headers: &HeaderMap, body: Body) -> Result<FetchSpec, Reject> {
    let url = header(headers, api::URL_HEADER)?
        .ok_or_else(|| Reject::bad_request(format!("missing header {}", api::URL_HEADER)))?;
    let mut spec = FetchSpec::get(url).map_err(|f| Reject::fetch(&f))?;
    if let Some(m) = header(headers, api::METHOD_HEADER)? {
        spec.method = Method::from_bytes(m.as_bytes())
            .map_err(|_| Reject::bad_request(format!("invalid method {m:?}")))?;
    }
    if let Some(f) = header(headers, api::FALLBACK_HEADER)? {
        spec.fallback = Some(fetch::parse_fallback(f).map_err(|f| Reject::fetch(&f))?);
    }
    spec.body = axum::body::to_bytes(body, MAX_FETCH_BODY)
        .await
        .map_err(|e| Reject {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: "bad_request",
            message: format!("request body: {e}"),
        })?;
    Ok(spec)
}
