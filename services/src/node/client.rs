//! [`ControlClient`]: the typed client of a node's control API (what `skytower dmsg …` uses).

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use skytower_transports::fetch::Via;
use skytower_transports::task::AbortOnDrop;
use tokio::net::UnixStream;

use super::api::{self, ErrorBody, NodeHealth, NodeInfo, SessionRow};
use super::fetch::{FetchBody, FetchSpec, Fetched};

/// Bound on a control request (answers to `connect-all` and fetch headers included).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(45);
/// Largest JSON answer accepted.
const MAX_JSON: usize = 4 << 20;

/// Why a control request failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Nothing listens on the socket (no file, or a stale one).
    #[error(
        "no node running: no control socket at {} (start one with `skytower node` or `skytower up`)",
        path.display()
    )]
    NoNode {
        /// The socket path.
        path: PathBuf,
    },
    /// Connecting to the socket failed otherwise (e.g. permission denied).
    #[error("control socket {}: {source}", path.display())]
    Io {
        /// The socket path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP exchange with the node failed.
    #[error("control API: {0}")]
    Http(String),
    /// The node did not answer in time.
    #[error(
        "the node did not answer within {}",
        humantime::format_duration(REQUEST_TIMEOUT)
    )]
    Timeout,
    /// The node answered with an error.
    #[error("{message}")]
    Api {
        /// The HTTP status.
        status: StatusCode,
        /// The stable code (see [`ErrorDetail`](super::api::ErrorDetail)).
        code: String,
        /// The one-line message.
        message: String,
    },
    /// The node answered something that is not the API.
    #[error("control API answered something unexpected: {0}")]
    BadResponse(String),
}

/// A client of the control API at a socket path. Each call opens one connection.
#[derive(Clone, Debug)]
pub struct ControlClient {
    path: PathBuf,
}

impl ControlClient {
    /// A client of the node whose control socket is `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        ControlClient { path: path.into() }
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The node's identity and addresses.
    ///
    /// # Errors
    ///
    /// [`ControlError`].
    pub async fn info(&self) -> Result<NodeInfo, ControlError> {
        self.json(Method::GET, api::INFO).await
    }

    /// The node's health (`degraded` while it has no session; not an error).
    ///
    /// # Errors
    ///
    /// [`ControlError`].
    pub async fn health(&self) -> Result<NodeHealth, ControlError> {
        let (res, _conn) = self.send(self.request(Method::GET, api::HEALTH)?).await?;
        if res.headers().contains_key(api::ERROR_HEADER) {
            return Err(api_error(res).await);
        }
        let body = collect(res.into_body()).await?;
        serde_json::from_slice(&body).map_err(|e| ControlError::BadResponse(e.to_string()))
    }

    /// The node's sessions; with `ping`, every session is pinged first (fresh RTT).
    ///
    /// # Errors
    ///
    /// [`ControlError`].
    pub async fn sessions(&self, ping: bool) -> Result<Vec<SessionRow>, ControlError> {
        let path = if ping {
            format!("{}?ping=true", api::SESSIONS)
        } else {
            api::SESSIONS.to_owned()
        };
        self.json(Method::GET, &path).await
    }

    /// Opens sessions to every available server now, then lists the sessions.
    ///
    /// # Errors
    ///
    /// [`ControlError`].
    pub async fn connect_all(&self) -> Result<Vec<SessionRow>, ControlError> {
        self.json(Method::POST, api::CONNECT_ALL).await
    }

    /// Fetches `spec` through the node (its identity, its sessions); the body streams.
    ///
    /// # Errors
    ///
    /// [`ControlError::Api`] carries the node's [`FetchFailure`](super::fetch::FetchFailure)
    /// code and message.
    pub async fn fetch(&self, spec: &FetchSpec) -> Result<Fetched, ControlError> {
        let mut req = self.request(Method::POST, api::FETCH)?;
        *req.body_mut() = Full::new(spec.body.clone());
        let url = format!("dmsg://{}{}", spec.target, spec.path);
        let headers = req.headers_mut();
        headers.insert(api::URL_HEADER, value(&url)?);
        headers.insert(api::METHOD_HEADER, value(spec.method.as_str())?);
        if let Some(f) = &spec.fallback {
            headers.insert(api::FALLBACK_HEADER, value(&f.to_string())?);
        }
        let (res, conn) = self.send(req).await?;
        if res.headers().contains_key(api::ERROR_HEADER) {
            return Err(api_error(res).await);
        }
        let via = match res.headers().get(api::VIA_HEADER).map(|v| v.as_bytes()) {
            Some(b"http") => Via::Http,
            Some(b"dmsg") => Via::Dmsg,
            _ => {
                return Err(ControlError::BadResponse(format!(
                    "fetch answer without {}",
                    api::VIA_HEADER
                )));
            }
        };
        let (mut parts, body) = res.into_parts();
        parts.headers.remove(api::VIA_HEADER);
        let body: FetchBody = ConnBody {
            inner: body,
            _conn: conn,
        }
        .boxed();
        Ok(Fetched {
            via,
            response: Response::from_parts(parts, body),
        })
    }

    fn request(&self, method: Method, path: &str) -> Result<Request<Full<Bytes>>, ControlError> {
        Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "node")
            .body(Full::new(Bytes::new()))
            .map_err(|e| ControlError::Http(e.to_string()))
    }

    async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
    ) -> Result<T, ControlError> {
        let (res, _conn) = self.send(self.request(method, path)?).await?;
        if !res.status().is_success() {
            return Err(api_error(res).await);
        }
        let body = collect(res.into_body()).await?;
        serde_json::from_slice(&body).map_err(|e| ControlError::BadResponse(e.to_string()))
    }

    async fn send(
        &self,
        req: Request<Full<Bytes>>,
    ) -> Result<(Response<Incoming>, AbortOnDrop), ControlError> {
        let work = async {
            let stream =
                UnixStream::connect(&self.path)
                    .await
                    .map_err(|source| match source.kind() {
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                            ControlError::NoNode {
                                path: self.path.clone(),
                            }
                        }
                        _ => ControlError::Io {
                            path: self.path.clone(),
                            source,
                        },
                    })?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| ControlError::Http(e.to_string()))?;
            let task = tokio::spawn(async move {
                let _ = conn.await;
            });
            let owner = AbortOnDrop::new(&task);
            let res = sender
                .send_request(req)
                .await
                .map_err(|e| ControlError::Http(e.to_string()))?;
            Ok((res, owner))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, work)
            .await
            .map_err(|_| ControlError::Timeout)?
    }
}

fn value(s: &str) -> Result<HeaderValue, ControlError> {
    HeaderValue::try_from(s).map_err(|e| ControlError::Http(format!("{s:?}: {e}")))
}

async fn collect(body: Incoming) -> Result<Bytes, ControlError> {
    let work = Limited::new(body, MAX_JSON).collect();
    match tokio::time::timeout(REQUEST_TIMEOUT, work).await {
        Ok(Ok(c)) => Ok(c.to_bytes()),
        Ok(Err(e)) => Err(ControlError::Http(e.to_string())),
        Err(_) => Err(ControlError::Timeout),
    }
}

async fn api_error(res: Response<Incoming>) -> ControlError {
    let status = res.status();
    match collect(res.into_body()).await {
        Ok(body) => match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(e) => ControlError::Api {
                status,
                code: e.error.code,
                message: e.error.message,
            },
            Err(_) => ControlError::BadResponse(format!("status {status}")),
        },
        Err(e) => e,
    }
}

/// A streamed fetch body that keeps its control connection alive.
struct ConnBody {
    inner: Incoming,
    _conn: AbortOnDrop,
}

impl http_body::Body for ConnBody {
    type Data = Bytes;
    type Error = skytower_layers::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        std::pin::Pin::new(&mut self.inner)
            .poll_frame(cx)
            .map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
