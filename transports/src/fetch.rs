//! The fetch chain: reach a service known by both a DMSG address and an HTTP URL, DMSG first
//! with a fallback to HTTP, remembering for a while which one worked.
//!
//! [`FetchChain`] tries the DMSG address first (HTTP/1 over a DMSG stream) and, when that
//! attempt fails (no route, refused, timed out, connection lost), the HTTP URL. When it had
//! to fall back, it **remembers** HTTP for [`remember`](FetchChainBuilder::remember)
//! (default 5 min, on the `tokio::time` clock): requests go to HTTP first (DMSG stays the
//! fallback) without paying for a failing DMSG attempt. The memory is not extended by the
//! requests it serves, so once it expires the next request tries DMSG again; if DMSG works it
//! is used from then on, if not the chain falls back and remembers again.
//!
//! Any HTTP response, whatever its status, counts as "worked": the service answered. Only
//! transport failures and the per-attempt timeout make the chain try the other way.
//!
//! DMSG goes through the caller's [`Client`] when given
//! ([`dmsg_client`](FetchChainBuilder::dmsg_client)); otherwise the chain creates, on the first
//! DMSG attempt, a quiet ephemeral client with a fresh key from the given discovery
//! ([`discovery`](FetchChainBuilder::discovery) or
//! [`discovery_url`](FetchChainBuilder::discovery_url)): dial-only (`auto_connect: false`), so
//! it opens sessions only when dialing, and unpublished (`publish: false`), so it never appears in
//! discovery. Both sides use hyper-util's pooled client, so repeated
//! fetches reuse connections (a DMSG stream, a TCP connection).
//!
//! `FetchChain` is also a `tower::Service<FetchRequest>`, so timeouts, retries or a
//! concurrency limit stack on it.
//!
//! ```
//! # tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap().block_on(async {
//! use skytower_transports::fetch::{FetchChain, FetchRequest, Via};
//! use tower::ServiceExt;
//!
//! // A plain HTTP service on loopback.
//! let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let addr = tcp.local_addr()?;
//! tokio::spawn(async move {
//!     while let Ok((io, _)) = tcp.accept().await {
//!         tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(
//!             hyper_util::rt::TokioIo::new(io),
//!             hyper::service::service_fn(|_req| async {
//!                 Ok::<_, std::convert::Infallible>(http::Response::new(
//!                     http_body_util::Full::new(bytes::Bytes::from("hi")),
//!                 ))
//!             }),
//!         ));
//!     }
//! });
//!
//! // Its DMSG address is unreachable here (the discovery is down): the chain falls back.
//! let pk = skytower_transports::identity::SecretKey::generate()?.public_key();
//! let chain = FetchChain::builder()
//!     .dmsg(format!("{pk}:80").parse()?)
//!     .http(format!("http://{addr}").parse()?)
//!     .discovery_url("http://127.0.0.1:1") // the ephemeral DMSG client's discovery
//!     .build()?;
//! let res = chain.clone().oneshot(FetchRequest::get("/hello")).await?;
//! assert_eq!(res.via, Via::Http);
//! assert_eq!(res.body, "hi");
//! assert_eq!(chain.preferred(), Via::Http); // remembered for a while
//! # Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
//! # }).unwrap();
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use tokio::sync::OnceCell;
use tokio::time::Instant;
use tower::Service;

use crate::connector::Connector;
use crate::dmsg::client::{Client, ClientConfig};
use crate::dmsg::disc::Discovery;
use crate::dmsg::disc_http::{HttpDiscovery, HttpDiscoveryError};
use crate::dmsg::wire::Addr;
use crate::identity::SecretKey;

/// Default time a fallback to HTTP is remembered.
pub const DEFAULT_REMEMBER: Duration = Duration::from_secs(300);
/// Default bound on one attempt (connect, request and the whole response body).
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default largest response body accepted.
pub const DEFAULT_MAX_BODY: usize = 16 << 20;

/// Which way a request went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Via {
    /// HTTP over a DMSG stream.
    Dmsg,
    /// Plain HTTP over TCP.
    Http,
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Via::Dmsg => "dmsg",
            Via::Http => "http",
        })
    }
}

/// A request to the service, relative to its base (the same on both transports).
#[derive(Clone, Debug)]
pub struct FetchRequest {
    /// The method.
    pub method: Method,
    /// Path and query, starting with `/`.
    pub path: String,
    /// Request headers (no `host`: each transport sets its own).
    pub headers: HeaderMap,
    /// The request body (cheap to clone for the second attempt).
    pub body: Bytes,
}

impl FetchRequest {
    /// A `GET` of `path` (path and query, starting with `/`).
    pub fn get(path: impl Into<String>) -> Self {
        FetchRequest {
            method: Method::GET,
            path: path.into(),
            headers: HeaderMap::new(),
            body: Bytes::new(),
        }
    }

    /// A `POST` of `body` to `path`.
    pub fn post(path: impl Into<String>, body: impl Into<Bytes>) -> Self {
        FetchRequest {
            method: Method::POST,
            path: path.into(),
            headers: HeaderMap::new(),
            body: body.into(),
        }
    }
}

/// The service's answer.
#[derive(Clone, Debug)]
pub struct FetchResponse {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// The whole body (at most [`max_body`](FetchChainBuilder::max_body) bytes).
    pub body: Bytes,
    /// Which way it came.
    pub via: Via,
}

/// One failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchAttempt {
    /// The way tried.
    pub via: Via,
    /// Why it failed.
    pub error: String,
}

/// Why a fetch or a chain failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Neither a DMSG address nor an HTTP URL was given.
    #[error("a fetch chain needs a DMSG address or an HTTP URL")]
    NoTarget,
    /// A DMSG address, but neither a DMSG client nor a discovery to create one.
    #[error("a DMSG address needs a DMSG client or a discovery (URL) to create one")]
    NoDmsgClient,
    /// The HTTP URL is not `http://host[:port][/prefix]`.
    #[error("invalid HTTP URL {0:?}: expected http://host[:port][/prefix]")]
    HttpUrl(String),
    /// The discovery URL is invalid.
    #[error(transparent)]
    DiscoveryUrl(#[from] HttpDiscoveryError),
    /// The path does not make a valid URI.
    #[error("invalid request path {0:?}")]
    Path(String),
    /// Every way failed.
    #[error("fetch failed every way: {}", fmt_attempts(.0))]
    AllFailed(Vec<FetchAttempt>),
}

fn fmt_attempts(attempts: &[FetchAttempt]) -> String {
    attempts
        .iter()
        .map(|a| format!("{}: {}", a.via, a.error))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Remembers a fallback to HTTP until a deadline on the tokio clock.
#[derive(Debug)]
struct Memory {
    ttl: Duration,
    http_until: Option<Instant>,
}

impl Memory {
    fn new(ttl: Duration) -> Self {
        Memory {
            ttl,
            http_until: None,
        }
    }

    /// The way to try first now.
    fn preferred(&mut self, now: Instant) -> Via {
        match self.http_until {
            Some(until) if now < until => Via::Http,
            Some(_) => {
                self.http_until = None;
                Via::Dmsg
            }
            None => Via::Dmsg,
        }
    }

    /// `via` answered; `first` was the way tried first.
    fn worked(&mut self, via: Via, first: Via, now: Instant) {
        match (first, via) {
            // Fell back from DMSG: remember HTTP (not extended while it is remembered).
            (Via::Dmsg, Via::Http) => self.http_until = Some(now + self.ttl),
            // DMSG worked: it is the default again.
            (_, Via::Dmsg) => self.http_until = None,
            (Via::Http, Via::Http) => {}
        }
    }
}

enum DmsgSource {
    None,
    Client(Arc<Client>),
    Discovery(Arc<dyn Discovery>, Box<ClientConfig>),
}

type Http = HttpClient<Connector, Full<Bytes>>;

struct Inner {
    dmsg: Option<Addr>,
    http: Option<String>,
    source: DmsgSource,
    dmsg_http: OnceCell<Http>,
    tcp_http: Http,
    memory: Mutex<Memory>,
    attempt_timeout: Duration,
    max_body: usize,
}

/// Builds a [`FetchChain`].
pub struct FetchChainBuilder {
    dmsg: Option<Addr>,
    http: Option<Uri>,
    source: DmsgSource,
    discovery_url: Option<String>,
    client_config: ClientConfig,
    remember: Duration,
    attempt_timeout: Duration,
    max_body: usize,
}

impl fmt::Debug for FetchChainBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FetchChainBuilder")
            .field("dmsg", &self.dmsg)
            .field("http", &self.http)
            .field("remember", &self.remember)
            .finish_non_exhaustive()
    }
}

impl FetchChainBuilder {
    /// The service's DMSG address (`pk:port`).
    pub fn dmsg(mut self, addr: Addr) -> Self {
        self.dmsg = Some(addr);
        self
    }

    /// The service's HTTP base URL (`http://host[:port][/prefix]`).
    pub fn http(mut self, url: Uri) -> Self {
        self.http = Some(url);
        self
    }

    /// Dial DMSG through this client (no ephemeral client is created).
    pub fn dmsg_client(mut self, client: Arc<Client>) -> Self {
        self.source = DmsgSource::Client(client);
        self
    }

    /// Create the ephemeral DMSG client from this discovery when needed.
    pub fn discovery(mut self, discovery: Arc<dyn Discovery>) -> Self {
        self.source = DmsgSource::Discovery(discovery, Box::default());
        self
    }

    /// Create the ephemeral DMSG client from the dmsg-discovery at `url` when needed.
    pub fn discovery_url(mut self, url: impl Into<String>) -> Self {
        self.discovery_url = Some(url.into());
        self
    }

    /// Settings of the ephemeral client (`auto_connect` and `publish` are forced off).
    pub fn client_config(mut self, config: ClientConfig) -> Self {
        self.client_config = config;
        self
    }

    /// How long a fallback to HTTP is remembered (default 5 min).
    pub fn remember(mut self, ttl: Duration) -> Self {
        self.remember = ttl;
        self
    }

    /// Bound on one attempt: connect, request and whole response (default 10 s).
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = timeout;
        self
    }

    /// Largest response body accepted (default 16 MiB); a larger one fails the attempt.
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// Builds the chain (no network I/O yet).
    ///
    /// # Errors
    ///
    /// [`FetchError::NoTarget`], [`FetchError::NoDmsgClient`], [`FetchError::HttpUrl`],
    /// [`FetchError::DiscoveryUrl`].
    pub fn build(self) -> Result<FetchChain, FetchError> {
        if self.dmsg.is_none() && self.http.is_none() {
            return Err(FetchError::NoTarget);
        }
        let http = match self.http {
            Some(url) => {
                if url.scheme_str() != Some("http")
                    || url.authority().is_none()
                    || url.query().is_some()
                {
                    return Err(FetchError::HttpUrl(url.to_string()));
                }
                Some(url.to_string().trim_end_matches('/').to_owned())
            }
            None => None,
        };
        let mut client_config = self.client_config;
        client_config.auto_connect = false;
        client_config.publish = false;
        let source = match (self.source, self.discovery_url) {
            (DmsgSource::Client(c), _) => DmsgSource::Client(c),
            (DmsgSource::Discovery(d, _), _) => DmsgSource::Discovery(d, Box::new(client_config)),
            (DmsgSource::None, Some(url)) => {
                DmsgSource::Discovery(Arc::new(HttpDiscovery::new(&url)?), Box::new(client_config))
            }
            (DmsgSource::None, None) if self.dmsg.is_some() => {
                return Err(FetchError::NoDmsgClient);
            }
            (DmsgSource::None, None) => DmsgSource::None,
        };
        let tcp_http = HttpClient::builder(TokioExecutor::new())
            .build(Connector::new().connect_timeout(self.attempt_timeout));
        Ok(FetchChain {
            inner: Arc::new(Inner {
                dmsg: self.dmsg,
                http,
                source,
                dmsg_http: OnceCell::new(),
                tcp_http,
                memory: Mutex::new(Memory::new(self.remember)),
                attempt_timeout: self.attempt_timeout,
                max_body: self.max_body,
            }),
        })
    }
}

/// DMSG first, HTTP as the fallback, with a memory of the fallback. Cheap to clone (clones
/// share the memory and the connection pools). See the [module docs](self).
#[derive(Clone)]
pub struct FetchChain {
    inner: Arc<Inner>,
}

impl fmt::Debug for FetchChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FetchChain")
            .field("dmsg", &self.inner.dmsg)
            .field("http", &self.inner.http)
            .field("preferred", &self.preferred())
            .finish_non_exhaustive()
    }
}

impl FetchChain {
    /// A builder; give at least one of [`dmsg`](FetchChainBuilder::dmsg) and
    /// [`http`](FetchChainBuilder::http).
    pub fn builder() -> FetchChainBuilder {
        FetchChainBuilder {
            dmsg: None,
            http: None,
            source: DmsgSource::None,
            discovery_url: None,
            client_config: ClientConfig::default(),
            remember: DEFAULT_REMEMBER,
            attempt_timeout: DEFAULT_ATTEMPT_TIMEOUT,
            max_body: DEFAULT_MAX_BODY,
        }
    }

    /// The way the next request tries first.
    pub fn preferred(&self) -> Via {
        self.memory().preferred(Instant::now())
    }

    /// Forgets a remembered fallback: the next request tries DMSG first.
    pub fn forget(&self) {
        self.memory().http_until = None;
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.inner
            .memory
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends `req`: the preferred way first, then the other one.
    ///
    /// # Errors
    ///
    /// [`FetchError::AllFailed`] with every attempt when no way answered;
    /// [`FetchError::Path`] for a path that makes no URI.
    pub async fn fetch(&self, req: FetchRequest) -> Result<FetchResponse, FetchError> {
        if !req.path.starts_with('/') {
            return Err(FetchError::Path(req.path));
        }
        let first = self.preferred();
        let order = match first {
            Via::Dmsg => [Via::Dmsg, Via::Http],
            Via::Http => [Via::Http, Via::Dmsg],
        };
        let mut attempts = Vec::new();
        for via in order {
            let result = match via {
                Via::Dmsg if self.inner.dmsg.is_some() => self.attempt_dmsg(&req).await,
                Via::Http if self.inner.http.is_some() => self.attempt_http(&req).await,
                _ => continue,
            };
            match result {
                Ok(mut res) => {
                    res.via = via;
                    self.memory().worked(via, first, Instant::now());
                    if !attempts.is_empty() {
                        tracing::info!(%via, failed = %fmt_attempts(&attempts), "fetch fell back");
                    }
                    return Ok(res);
                }
                Err(error) => {
                    tracing::debug!(%via, %error, path = %req.path, "fetch attempt failed");
                    attempts.push(FetchAttempt { via, error });
                }
            }
        }
        Err(FetchError::AllFailed(attempts))
    }

    async fn dmsg_http(&self) -> Result<&Http, String> {
        self.inner
            .dmsg_http
            .get_or_try_init(|| async {
                let client = match &self.inner.source {
                    DmsgSource::None => {
                        return Err("no DMSG client and no discovery to create one".to_owned());
                    }
                    DmsgSource::Client(c) => c.clone(),
                    DmsgSource::Discovery(d, cfg) => {
                        let key = SecretKey::generate().map_err(|e| e.to_string())?;
                        tracing::debug!(pk = %key.public_key(), "starting an ephemeral DMSG client");
                        Arc::new(Client::start(key, d.clone(), (**cfg).clone()))
                    }
                };
                let connector =
                    Connector::with_dmsg(client).connect_timeout(self.inner.attempt_timeout);
                Ok(HttpClient::builder(TokioExecutor::new()).build(connector))
            })
            .await
    }

    async fn attempt_dmsg(&self, req: &FetchRequest) -> Result<FetchResponse, String> {
        let Some(addr) = self.inner.dmsg else {
            return Err("no DMSG address".to_owned());
        };
        let client = self.dmsg_http().await?;
        self.send(client, format!("dmsg://{addr}{}", req.path), req)
            .await
    }

    async fn attempt_http(&self, req: &FetchRequest) -> Result<FetchResponse, String> {
        let Some(base) = &self.inner.http else {
            return Err("no HTTP URL".to_owned());
        };
        self.send(&self.inner.tcp_http, format!("{base}{}", req.path), req)
            .await
    }

    async fn send(
        &self,
        client: &Http,
        uri: String,
        req: &FetchRequest,
    ) -> Result<FetchResponse, String> {
        let uri: Uri = uri.parse().map_err(|e| format!("{e}"))?;
        let mut request = Request::builder()
            .method(req.method.clone())
            .uri(uri)
            .body(Full::new(req.body.clone()))
            .map_err(|e| e.to_string())?;
        *request.headers_mut() = req.headers.clone();
        let max = self.inner.max_body;
        let work = async move {
            let res = client
                .request(request)
                .await
                .map_err(|e| crate::error_chain(&e))?;
            let (parts, body) = res.into_parts();
            let body = Limited::new(body, max)
                .collect()
                .await
                .map_err(|e| format!("reading the body: {e}"))?
                .to_bytes();
            Ok(FetchResponse {
                status: parts.status,
                headers: parts.headers,
                body,
                via: Via::Http,
            })
        };
        tokio::time::timeout(self.inner.attempt_timeout, work)
            .await
            .map_err(|_| format!("timed out after {:?}", self.inner.attempt_timeout))?
    }
}

impl Service<FetchRequest> for FetchChain {
    type Response = FetchResponse;
    type Error = FetchError;
    type Future = Pin<Box<dyn Future<Output = Result<FetchResponse, FetchError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), FetchError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: FetchRequest) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.fetch(req).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn memory_remembers_a_fallback_until_it_expires() {
        let mut m = Memory::new(Duration::from_secs(60));
        assert_eq!(m.preferred(Instant::now()), Via::Dmsg);
        // DMSG failed, HTTP worked: HTTP first for 60 s.
        m.worked(Via::Http, Via::Dmsg, Instant::now());
        assert_eq!(m.preferred(Instant::now()), Via::Http);
        tokio::time::advance(Duration::from_secs(30)).await;
        // Serving from memory does not extend it.
        m.worked(Via::Http, Via::Http, Instant::now());
        assert_eq!(m.preferred(Instant::now()), Via::Http);
        tokio::time::advance(Duration::from_secs(29)).await;
        assert_eq!(m.preferred(Instant::now()), Via::Http);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(m.preferred(Instant::now()), Via::Dmsg);
        // A remembered HTTP that fails while DMSG works: back to DMSG at once.
        m.worked(Via::Http, Via::Dmsg, Instant::now());
        m.worked(Via::Dmsg, Via::Http, Instant::now());
        assert_eq!(m.preferred(Instant::now()), Via::Dmsg);
    }

    #[tokio::test(start_paused = true)]
    async fn chain_prefers_http_only_while_remembered() {
        let pk = SecretKey::generate().unwrap().public_key();
        let chain = FetchChain::builder()
            .dmsg(Addr::new(pk, 80))
            .http("http://127.0.0.1:1".parse().unwrap())
            .discovery_url("http://127.0.0.1:1")
            .remember(Duration::from_secs(10))
            .build()
            .unwrap();
        assert_eq!(chain.preferred(), Via::Dmsg);
        chain.memory().worked(Via::Http, Via::Dmsg, Instant::now());
        assert_eq!(chain.preferred(), Via::Http);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(chain.preferred(), Via::Dmsg);
        chain.memory().worked(Via::Http, Via::Dmsg, Instant::now());
        chain.forget();
        assert_eq!(chain.preferred(), Via::Dmsg);
    }

    #[test]
    fn build_checks_targets() {
        assert!(matches!(
            FetchChain::builder().build(),
            Err(FetchError::NoTarget)
        ));
        let bad = FetchChain::builder()
            .http("https://example.org".parse().unwrap())
            .build();
        assert!(matches!(bad, Err(FetchError::HttpUrl(_))));
        let bad = FetchChain::builder()
            .http("http://example.org".parse().unwrap())
            .discovery_url("ftp://x")
            .build();
        assert!(matches!(bad, Err(FetchError::DiscoveryUrl(_))));
        let pk = SecretKey::generate().unwrap().public_key();
        let bad = FetchChain::builder().dmsg(Addr::new(pk, 80)).build();
        assert!(matches!(bad, Err(FetchError::NoDmsgClient)));
        // HTTP only needs nothing more.
        FetchChain::builder()
            .http("http://example.org/prefix".parse().unwrap())
            .build()
            .unwrap();
    }
}
