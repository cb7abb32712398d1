//! HTTP over DMSG for the operator's `dmsg curl`, used by the node's control API and, with no
//! node running, by the CLI itself on an ephemeral client.
//!
//! [`fetch`] dials the destination through a [`Client`] and runs one HTTP/1 exchange on the
//! stream, streaming the response body (so long downloads need no memory). With a
//! [`fallback`](FetchSpec::fallback) HTTP URL for the same service it goes through the
//! [`FetchChain`] instead (DMSG first, HTTP when DMSG fails; the body is then collected, at
//! most 16 MiB), and the answer says which way it came.
//!
//! Failures are [`FetchFailure`]s: one line each, with a stable [`code`](FetchFailure::code).
//!
//! ```
//! use skytower_services::node::fetch::{FetchFailure, parse_dmsg_url};
//!
//! let pk = "a".repeat(64);
//! assert!(matches!(parse_dmsg_url("http://example.org/"), Err(FetchFailure::BadUrl { .. })));
//! let err = parse_dmsg_url("dmsg://abc:80/health").unwrap_err();
//! assert_eq!(err.code(), "bad_url");
//! assert!(err.to_string().contains("expected 64 hex characters, got 3"), "{err}");
//! ```

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, Uri, header};
use http_body::{Body, Frame};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use skytower_layers::BoxError;
use skytower_transports::connector::Target;
use skytower_transports::dmsg::client::{Client, ClientDialError};
use skytower_transports::dmsg::disc::DiscoveryError;
use skytower_transports::dmsg::wire::{Addr, Code};
use skytower_transports::fetch::{FetchChain, FetchRequest, Via};
use skytower_transports::identity::PublicKey;
use skytower_transports::task::AbortOnDrop;

/// Default bound on dialing and on waiting for the response headers.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// A response body (streamed from DMSG, or collected by the fetch chain).
pub type FetchBody = BoxBody<Bytes, BoxError>;

/// What to fetch.
#[derive(Clone, Debug)]
pub struct FetchSpec {
    /// The DMSG address.
    pub target: Addr,
    /// Path and query (starting with `/`).
    pub path: String,
    /// The method.
    pub method: Method,
    /// The request body.
    pub body: Bytes,
    /// The same service's HTTP base URL: go through the fetch chain.
    pub fallback: Option<Uri>,
    /// Bound on dialing and on the response headers (each way).
    pub timeout: Duration,
}

impl FetchSpec {
    /// A `GET` of a `dmsg://<pk>[:port]/path` URL.
    ///
    /// # Errors
    ///
    /// [`FetchFailure::BadUrl`] (see [`parse_dmsg_url`]).
    pub fn get(url: &str) -> Result<Self, FetchFailure> {
        let (target, path) = parse_dmsg_url(url)?;
        Ok(FetchSpec {
            target,
            path,
            method: Method::GET,
            body: Bytes::new(),
            fallback: None,
            timeout: DEFAULT_TIMEOUT,
        })
    }
}

/// Splits `dmsg://<pk>[:port][/path?query]` (port 80 when absent) into the address and the
/// path and query.
///
/// # Errors
///
/// [`FetchFailure::BadUrl`] for another scheme, a bad key or port.
pub fn parse_dmsg_url(url: &str) -> Result<(Addr, String), FetchFailure> {
    let bad = |reason: String| FetchFailure::BadUrl {
        url: url.to_owned(),
        reason,
    };
    if !url.starts_with("dmsg://") {
        return Err(bad("expected dmsg://<public key>[:port]/path".into()));
    }
    let uri: Uri = url.parse().map_err(|e| bad(format!("{e}")))?;
    let target = Target::try_from(&uri).map_err(|e| bad(e.to_string()))?;
    let Target::Dmsg(addr) = target else {
        return Err(bad("expected dmsg://<public key>[:port]/path".into()));
    };
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "/".to_owned());
    Ok((addr, path))
}

/// Checks a fallback base URL (`http://host[:port][/prefix]`).
///
/// # Errors
///
/// [`FetchFailure::BadUrl`].
pub fn parse_fallback(url: &str) -> Result<Uri, FetchFailure> {
    let bad = |reason: &str| FetchFailure::BadUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let uri: Uri = url.parse().map_err(|_| bad("not a URL"))?;
    if uri.scheme_str() != Some("http") || uri.authority().is_none() || uri.query().is_some() {
        return Err(bad("expected http://host[:port][/prefix]"));
    }
    Ok(uri)
}

/// An answer: the response and the way it came.
#[derive(Debug)]
pub struct Fetched {
    /// DMSG, or HTTP after a fallback.
    pub via: Via,
    /// The remote response.
    pub response: Response<FetchBody>,
}

/// Why a fetch got no response. Each is one line; [`code`](Self::code) is stable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FetchFailure {
    /// Not a usable URL.
    #[error("invalid URL {url:?}: {reason}")]
    BadUrl {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The destination has no entry in discovery.
    #[error("unknown destination {0}: it has no entry in discovery")]
    UnknownDestination(PublicKey),
    /// The destination refused the stream (signed refusal).
    #[error("dmsg://{addr} refused the stream: {code}")]
    Refused {
        /// The destination.
        addr: Addr,
        /// Why.
        code: Code,
    },
    /// No route to the destination worked.
    #[error("cannot reach dmsg://{addr}: {reason}")]
    Unreachable {
        /// The destination.
        addr: Addr,
        /// Why.
        reason: String,
    },
    /// The discovery could not be asked.
    #[error("discovery unavailable: {0}")]
    DiscoveryUnavailable(String),
    /// Dialing or the response headers took too long.
    #[error("dmsg://{addr} did not answer within {}", humantime::format_duration(*.timeout))]
    Timeout {
        /// The destination.
        addr: Addr,
        /// The bound.
        timeout: Duration,
    },
    /// The stream opened but the HTTP exchange failed.
    #[error("HTTP over dmsg://{addr} failed: {reason}")]
    Http {
        /// The destination.
        addr: Addr,
        /// Why.
        reason: String,
    },
    /// The fetch chain failed both ways.
    #[error("{0}")]
    AllFailed(String),
}

impl FetchFailure {
    /// The stable code (also the control API's error code).
    pub fn code(&self) -> &'static str {
        match self {
            FetchFailure::BadUrl { .. } => "bad_url",
            FetchFailure::UnknownDestination(_) => "unknown_destination",
            FetchFailure::Refused { .. } => "refused",
            FetchFailure::Unreachable { .. } => "unreachable",
            FetchFailure::DiscoveryUnavailable(_) => "discovery_unavailable",
            FetchFailure::Timeout { .. } => "timeout",
            FetchFailure::Http { .. } => "http",
            FetchFailure::AllFailed(_) => "all_failed",
        }
    }

    /// What a failed dial of `addr` means to the operator.
    pub fn from_dial(addr: Addr, e: ClientDialError) -> Self {
        if let Some(code) = e.destination_refusal() {
            return FetchFailure::Refused { addr, code };
        }
        match e {
            ClientDialError::Lookup(pk, DiscoveryError::NotFound(_)) => {
                FetchFailure::UnknownDestination(pk)
            }
            ClientDialError::Lookup(_, DiscoveryError::Unavailable(m)) => {
                FetchFailure::DiscoveryUnavailable(m)
            }
            other => FetchFailure::Unreachable {
                addr,
                reason: other.to_string(),
            },
        }
    }
}

/// Fetches `spec` through `client`: DMSG only, or the fetch chain when `spec.fallback` is set.
///
/// # Errors
///
/// A [`FetchFailure`] when no response was obtained (an HTTP error status is a response).
pub async fn fetch(client: Arc<Client>, spec: FetchSpec) -> Result<Fetched, FetchFailure> {
    match spec.fallback.clone() {
        Some(fallback) => through_chain(client, spec, fallback).await,
        None => direct(&client, spec).await,
    }
}

async fn direct(client: &Client, spec: FetchSpec) -> Result<Fetched, FetchFailure> {
    let addr = spec.target;
    let timeout = FetchFailure::Timeout {
        addr,
        timeout: spec.timeout,
    };
    let stream = tokio::time::timeout(spec.timeout, client.dial(addr))
        .await
        .map_err(|_| timeout.clone())?
        .map_err(|e| FetchFailure::from_dial(addr, e))?;
    let http = |e: hyper::Error| FetchFailure::Http {
        addr,
        reason: e.to_string(),
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http)?;
    // The connection task lives as long as the response body (or this function, on error).
    let task = tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "dmsg fetch connection ended with an error");
        }
    });
    let owner = AbortOnDrop::new(&task);
    let host = HeaderValue::try_from(addr.to_string()).map_err(|e| FetchFailure::Http {
        addr,
        reason: e.to_string(),
    })?;
    let request = Request::builder()
        .method(spec.method)
        .uri(&spec.path)
        .header(header::HOST, host)
        .header(
            header::USER_AGENT,
            concat!("skytower/", env!("CARGO_PKG_VERSION")),
        )
        .body(Full::new(spec.body))
        .map_err(|e| FetchFailure::BadUrl {
            url: format!("dmsg://{addr}{}", spec.path),
            reason: e.to_string(),
        })?;
    let response = tokio::time::timeout(spec.timeout, sender.send_request(request))
        .await
        .map_err(|_| timeout)?
        .map_err(http)?;
    let (parts, body) = response.into_parts();
    let body = OwnedBody {
        inner: body,
        _conn: owner,
    }
    .boxed();
    Ok(Fetched {
        via: Via::Dmsg,
        response: Response::from_parts(parts, body),
    })
}

async fn through_chain(
    client: Arc<Client>,
    spec: FetchSpec,
    fallback: Uri,
) -> Result<Fetched, FetchFailure> {
    let chain = FetchChain::builder()
        .dmsg(spec.target)
        .http(fallback)
        .dmsg_client(client)
        .attempt_timeout(spec.timeout)
        .build()
        .map_err(|e| FetchFailure::AllFailed(e.to_string()))?;
    let request = FetchRequest {
        method: spec.method,
        path: spec.path,
        headers: http::HeaderMap::new(),
        body: spec.body,
    };
    let answer = chain
        .fetch(request)
        .await
        .map_err(|e| FetchFailure::AllFailed(e.to_string()))?;
    let mut response = Response::new(
        Full::new(answer.body)
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = answer.status;
    *response.headers_mut() = answer.headers;
    Ok(Fetched {
        via: answer.via,
        response,
    })
}

/// A streamed response body that owns its connection task.
struct OwnedBody {
    inner: Incoming,
    _conn: AbortOnDrop,
}

impl Body for OwnedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.inner)
            .poll_frame(cx)
            .map_err(BoxError::from)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
