//! The client side: [`SigningLayer`] and [`SignedClient`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde::de::DeserializeOwned;
use skytower_transports::connector::Connector;
use skytower_transports::identity::SecretKey;
use tower::{Layer, Service, ServiceExt};

use crate::api::ErrorBody;

/// Signs every request through it with one key (fresh timestamp and nonce each time). The
/// request body is `Bytes` (it must be known to be signed); the inner service gets a
/// `Full<Bytes>` body, as hyper's client takes.
#[derive(Clone)]
pub struct SigningLayer {
    key: Arc<SecretKey>,
}

impl std::fmt::Debug for SigningLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningLayer")
            .field("key", &self.key.public_key())
            .finish()
    }
}

impl SigningLayer {
    /// Signs with `key`.
    pub fn new(key: Arc<SecretKey>) -> Self {
        SigningLayer { key }
    }
}

impl<S> Layer<S> for SigningLayer {
    type Service = Signing<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Signing {
            inner,
            key: self.key.clone(),
        }
    }
}

/// The service of [`SigningLayer`].
#[derive(Clone)]
pub struct Signing<S> {
    inner: S,
    key: Arc<SecretKey>,
}

impl<S> std::fmt::Debug for Signing<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signing")
            .field("key", &self.key.public_key())
            .finish_non_exhaustive()
    }
}

/// Why [`Signing`] failed: no randomness for the nonce, or the inner service's error.
#[derive(Debug, thiserror::Error)]
pub enum SigningError<E> {
    /// The OS random source failed.
    #[error("cannot draw a request nonce: {0}")]
    Random(getrandom::Error),
    /// The inner service failed.
    #[error(transparent)]
    Inner(E),
}

impl<S> Service<Request<Bytes>> for Signing<S>
where
    S: Service<Request<Full<Bytes>>>,
{
    type Response = S::Response;
    type Error = SigningError<S::Error>;
    type Future = SigningFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(SigningError::Inner)
    }

    fn call(&mut self, req: Request<Bytes>) -> Self::Future {
        let (mut parts, body) = req.into_parts();
        let target = parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path(), |pq| pq.as_str());
        match super::sign_now(&self.key, &parts.method, target, &body) {
            Ok(headers) => {
                parts.headers.extend(headers);
                let req = Request::from_parts(parts, Full::new(body));
                SigningFuture::Call(self.inner.call(req))
            }
            Err(e) => SigningFuture::Failed(Some(e)),
        }
    }
}

/// The response future of [`Signing`].
#[pin_project::pin_project(project = SigningFutureProj)]
#[derive(Debug)]
pub enum SigningFuture<F> {
    /// The inner call.
    Call(#[pin] F),
    /// Signing failed.
    Failed(Option<getrandom::Error>),
}

impl<F, T, E> Future for SigningFuture<F>
where
    F: Future<Output = Result<T, E>>,
{
    type Output = Result<T, SigningError<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            SigningFutureProj::Call(f) => f.poll(cx).map_err(SigningError::Inner),
            SigningFutureProj::Failed(e) => match e.take() {
                Some(e) => Poll::Ready(Err(SigningError::Random(e))),
                None => Poll::Pending,
            },
        }
    }
}

/// Timeouts and limits of a [`SignedClient`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignedClientConfig {
    /// Deadline of a whole call, from connecting to the last body byte (default 10 s).
    pub request_timeout: Duration,
    /// Largest response body accepted (default 8 MiB).
    pub max_response_bytes: usize,
}

impl Default for SignedClientConfig {
    fn default() -> Self {
        SignedClientConfig {
            request_timeout: Duration::from_secs(10),
            max_response_bytes: 8 << 20,
        }
    }
}

/// Why a [`SignedClient`] call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The base URL or a path does not make a valid URL.
    #[error("invalid URL {url:?}: {reason}")]
    Url {
        /// The URL.
        url: String,
        /// Why it was refused.
        reason: String,
    },
    /// Connecting or exchanging the request failed.
    #[error("request to {url} failed: {reason}")]
    Transport {
        /// The URL.
        url: String,
        /// What failed (with its causes).
        reason: String,
    },
    /// The call did not finish within the deadline.
    #[error("request to {url} timed out after {timeout:?}")]
    Timeout {
        /// The URL.
        url: String,
        /// The deadline.
        timeout: Duration,
    },
    /// The service answered with an error status.
    #[error("{status} {code}: {message}")]
    Api {
        /// The status.
        status: StatusCode,
        /// The error code from the body (`http_<status>` when the body is not the envelope).
        code: String,
        /// The message.
        message: String,
    },
    /// The answer's body was too large.
    #[error("response from {url} larger than {limit} bytes")]
    BodyTooLarge {
        /// The URL.
        url: String,
        /// The limit.
        limit: usize,
    },
    /// The answer did not decode as expected.
    #[error("unexpected answer from {url}: {reason}")]
    Decode {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// No randomness for a request nonce.
    #[error("cannot draw a request nonce: {0}")]
    Random(getrandom::Error),
}

impl ClientError {
    /// The service's error code, for [`ClientError::Api`].
    pub fn api_code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The status, for [`ClientError::Api`].
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether retrying later could help (transport failures, timeouts, 408/429/5xx).
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Transport { .. } | ClientError::Timeout { .. } => true,
            ClientError::Api { status, .. } => {
                status.is_server_error()
                    || *status == StatusCode::TOO_MANY_REQUESTS
                    || *status == StatusCode::REQUEST_TIMEOUT
            }
            _ => false,
        }
    }
}

/// A small HTTP client for the services' JSON APIs over the
/// [`Connector`] (so `http://host:port` and `dmsg://<pk>:<port>` base URLs both work), signing
/// every request when it has a key. Cheap to clone (the connection pool is shared).
#[derive(Clone)]
pub struct SignedClient {
    base: String,
    key: Option<Arc<SecretKey>>,
    http: Client<Connector, Full<Bytes>>,
    config: SignedClientConfig,
}

impl std::fmt::Debug for SignedClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedClient")
            .field("base", &self.base)
            .field("key", &self.key.as_ref().map(|k| k.public_key()))
            .field("config", &self.config)
            .finish()
    }
}

impl SignedClient {
    /// A client for the service at `base_url` over TCP only (`http://`), without a key.
    pub fn new(base_url: &str) -> Result<Self, ClientError> {
        Self::with_connector(base_url, Connector::new())
    }

    /// A client for `base_url` through `connector` (give it a DMSG client for `dmsg://`).
    pub fn with_connector(base_url: &str, connector: Connector) -> Result<Self, ClientError> {
        let base = base_url.trim_end_matches('/').to_owned();
        let uri: Uri = base.parse().map_err(|e| ClientError::Url {
            url: base.clone(),
            reason: format!("{e}"),
        })?;
        match uri.scheme_str() {
            Some("http" | "dmsg") => {}
            _ => {
                return Err(ClientError::Url {
                    url: base,
                    reason: "expected an http:// or dmsg:// URL".into(),
                });
            }
        }
        if uri.path_and_query().is_some_and(|pq| pq.as_str() != "/") {
            return Err(ClientError::Url {
                url: base,
                reason: "the base URL must not have a path".into(),
            });
        }
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(8)
            .build(connector);
        Ok(SignedClient {
            base,
            key: None,
            http,
            config: SignedClientConfig::default(),
        })
    }

    /// Signs every request with `key`.
    pub fn with_key(mut self, key: impl Into<Arc<SecretKey>>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Other timeouts and limits.
    pub fn with_config(mut self, config: SignedClientConfig) -> Self {
        self.config = config;
        self
    }

    /// The base URL (no trailing slash).
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The signing key, if any.
    pub fn key(&self) -> Option<&Arc<SecretKey>> {
        self.key.as_ref()
    }

    /// Sends `method path` (path with query, starting with `/`) with an optional JSON body and
    /// returns the status and body of a 2xx answer; other statuses are [`ClientError::Api`].
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let url = format!("{}{path}", self.base);
        let timeout = self.config.request_timeout;
        match tokio::time::timeout(timeout, self.exchange(method, &url, body)).await {
            Ok(result) => result,
            Err(_) => Err(ClientError::Timeout { url, timeout }),
        }
    }

    async fn exchange(
        &self,
        method: Method,
        url: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let uri: Uri = url.parse().map_err(|e| ClientError::Url {
            url: url.to_owned(),
            reason: format!("{e}"),
        })?;
        let has_body = body.is_some();
        let mut builder = Request::builder().method(method).uri(uri);
        if has_body {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
        }
        let req = builder
            .body(Bytes::from(body.unwrap_or_default()))
            .map_err(|e| ClientError::Url {
                url: url.to_owned(),
                reason: e.to_string(),
            })?;
        let transport = |e: &(dyn std::error::Error + 'static)| ClientError::Transport {
            url: url.to_owned(),
            reason: skytower_transports::error_chain(e),
        };
        let response = match &self.key {
            Some(key) => SigningLayer::new(key.clone())
                .layer(self.http.clone())
                .oneshot(req)
                .await
                .map_err(|e| match e {
                    SigningError::Random(e) => ClientError::Random(e),
                    SigningError::Inner(e) => transport(&e),
                })?,
            None => {
                let (parts, body) = req.into_parts();
                self.http
                    .request(Request::from_parts(parts, Full::new(body)))
                    .await
                    .map_err(|e| transport(&e))?
            }
        };
        let status = response.status();
        let limit = self.config.max_response_bytes;
        let bytes = Limited::new(response.into_body(), limit)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    ClientError::BodyTooLarge {
                        url: url.to_owned(),
                        limit,
                    }
                } else {
                    ClientError::Transport {
                        url: url.to_owned(),
                        reason: e.to_string(),
                    }
                }
            })?
            .to_bytes();
        if status.is_success() {
            return Ok((status, bytes));
        }
        Err(match ErrorBody::parse(&bytes) {
            Some(ErrorBody { code, message }) => ClientError::Api {
                status,
                code,
                message,
            },
            None => ClientError::Api {
                status,
                code: format!("http_{}", status.as_u16()),
                message: String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned(),
            },
        })
    }

    /// `GET path`, decoding a JSON answer.
    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let (_, body) = self.send(Method::GET, path, None).await?;
        self.decode(path, &body)
    }

    /// `POST path` with a JSON body, decoding a JSON answer.
    pub async fn post_json<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.json_call(Method::POST, path, body).await
    }

    /// `method path` with a JSON body, decoding a JSON answer.
    pub async fn json_call<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let bytes = serde_json::to_vec(body).map_err(|e| ClientError::Decode {
            url: format!("{}{path}", self.base),
            reason: format!("cannot encode the request: {e}"),
        })?;
        let (_, answer) = self.send(method, path, Some(bytes)).await?;
        self.decode(path, &answer)
    }

    /// `DELETE path` without a body; the answer's body is ignored.
    pub async fn delete(&self, path: &str) -> Result<(), ClientError> {
        self.send(Method::DELETE, path, None).await.map(|_| ())
    }

    fn decode<T: DeserializeOwned>(&self, path: &str, body: &[u8]) -> Result<T, ClientError> {
        serde_json::from_slice(body).map_err(|e| ClientError::Decode {
            url: format!("{}{path}", self.base),
            reason: e.to_string(),
        })
    }
}
