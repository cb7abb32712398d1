//! Signed requests: callers prove their identity on write requests, and services verify it.
//!
//! A signed request carries four headers (`docs/api/signed-requests.md`):
//!
//! | header | value |
//! |---|---|
//! | `SW-Public` | the caller's public key (64 hex) |
//! | `SW-Timestamp` | Unix time in milliseconds when it was signed |
//! | `SW-Nonce` | 16 random bytes (32 hex) |
//! | `SW-Sig` | ed25519 signature (128 hex) under [`contexts::HTTP_AUTH`] over [`signing_bytes`] |
//!
//! The signature covers the **method, the path with its query, the timestamp, the nonce and the
//! SHA-256 of the body**, so a signature cannot be moved to another path, method or body (the Go
//! scheme signed only the body). Replays are refused with a timestamp window (default 30 s either
//! way) plus a bounded seen-set of `(key, nonce)` inside it
//! ([`ReplayGuard`]), and, when the service's store is shared by several instances (Redis), a
//! [`SharedNonces`] set in that store, so a request accepted by one instance is a replay at
//! every other. There is no per-key
//! counter, so concurrent requests from one key never race each other (the Go nonce counter made
//! them fail and retry).
//!
//! - Server side: [`RequireSignatureLayer`] verifies, reads the body (bounded), and puts the
//!   caller's key in the request extensions as [`VerifiedKey`]; failures are `401` with an
//!   [`ApiError`] code (`missing_signature`, `bad_signature_header`, `bad_signature`,
//!   `stale_timestamp`, `replayed_request`), `413 body_too_large` or `503 replay_cache_full`.
//! - Client side: [`SigningLayer`] signs every request going through it;
//!   [`SignedClient`] is a small typed HTTP client over the
//!   [`Connector`](skytower_transports::connector::Connector) (`http://` and `dmsg://` base URLs)
//!   that the services' typed clients build on.
//!
//! # Example
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use axum::{Extension, Router, routing::post};
//! use skytower_services::auth::{AuthConfig, RequireSignatureLayer, SignedClient, VerifiedKey};
//! use skytower_transports::identity::SecretKey;
//!
//! // A service whose POST route needs a signature.
//! let app = Router::new().route(
//!     "/things",
//!     post(|Extension(VerifiedKey(pk)): Extension<VerifiedKey>, body: String| async move {
//!         format!("{pk} posted {body}")
//!     })
//!     .route_layer(RequireSignatureLayer::new(AuthConfig::default())),
//! );
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let url = format!("http://{}", listener.local_addr()?);
//! tokio::spawn(async move { axum::serve(listener, app).await });
//!
//! let key = std::sync::Arc::new(SecretKey::generate()?);
//! let signed = SignedClient::new(&url)?.with_key(key.clone());
//! let (status, body) = signed.send(http::Method::POST, "/things", Some(b"hi".to_vec())).await?;
//! assert_eq!(status, 200);
//! assert_eq!(body, format!("{} posted hi", key.public_key()).as_bytes());
//!
//! // Without a key the same request is refused.
//! let anonymous = SignedClient::new(&url)?;
//! let err = anonymous.send(http::Method::POST, "/things", None).await.unwrap_err();
//! assert_eq!(err.api_code(), Some("missing_signature"));
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use sha2::{Digest, Sha256};
use skytower_transports::dmsg::replay::{ReplayError, ReplayGuard, unix_ms_now};
use skytower_transports::identity::{PublicKey, SecretKey, Signature, contexts};

use crate::api::ApiError;

mod client;
mod server;

pub use client::{ClientError, SignedClient, SignedClientConfig, Signing, SigningLayer};
pub use server::{RequireSignature, RequireSignatureFuture, RequireSignatureLayer};

/// `SW-Public`: the caller's public key.
pub const PUBLIC: HeaderName = HeaderName::from_static("sw-public");
/// `SW-Timestamp`: Unix milliseconds at signing.
pub const TIMESTAMP: HeaderName = HeaderName::from_static("sw-timestamp");
/// `SW-Nonce`: 16 random bytes, hex.
pub const NONCE: HeaderName = HeaderName::from_static("sw-nonce");
/// `SW-Sig`: the signature, hex.
pub const SIG: HeaderName = HeaderName::from_static("sw-sig");

/// The caller's key, verified: put in the request extensions by [`RequireSignature`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VerifiedKey(pub PublicKey);

/// A boxed future of [`SharedNonces::mark_once`].
pub type NonceFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<bool, String>> + Send + 'a>>;

/// Nonces remembered where several service instances see them: a [`Verifier`] with one refuses
/// a request another instance already accepted. Each verifier still keeps its own bounded
/// seen-set in front of it (a replay to the same instance is refused without a round trip).
///
/// [`TtlStore::shared_nonces`](crate::ttl_store::TtlStore::shared_nonces) gives one for stores
/// shared by instances (`RedisTtlStore`: `SET … NX PX`); the services use their store's.
pub trait SharedNonces: Send + Sync + fmt::Debug {
    /// Records `(pk, nonce)` for `ttl` unless it is already there, atomically: `Ok(true)` when
    /// it is new, `Ok(false)` when it was seen. `Err` (the reason) when the store cannot answer:
    /// the request is then refused with 503, never let through unchecked.
    fn mark_once(&self, pk: &PublicKey, nonce: &[u8; 16], ttl: Duration) -> NonceFuture<'_>;
}

/// Limits of the server side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuthConfig {
    /// How far a request's timestamp may be from the service's clock, either way (default 30 s).
    pub window: Duration,
    /// Largest request body read and verified (default 1 MiB); larger ones get 413.
    pub max_body: usize,
    /// Most `(key, nonce)` pairs remembered inside the window (default 65 536); beyond it new
    /// requests get 503 until old ones leave the window.
    pub max_seen: usize,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            window: Duration::from_secs(30),
            max_body: 1 << 20,
            max_seen: 65_536,
        }
    }
}

/// The bytes a request signature covers (under [`contexts::HTTP_AUTH`]):
///
/// ```text
/// METHOD "\n" path-and-query "\n" timestamp (decimal) "\n" nonce (32 hex) "\n" sha256(body) (64 hex)
/// ```
///
/// A request target cannot contain a newline, so the encoding is unambiguous.
pub fn signing_bytes(
    method: &Method,
    path_and_query: &str,
    timestamp_ms: u64,
    nonce: &[u8; 16],
    body: &[u8],
) -> Vec<u8> {
    let digest = Sha256::digest(body);
    let mut out = Vec::with_capacity(method.as_str().len() + path_and_query.len() + 128);
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b'\n');
    out.extend_from_slice(path_and_query.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(timestamp_ms.to_string().as_bytes());
    out.push(b'\n');
    push_hex(&mut out, nonce);
    out.push(b'\n');
    push_hex(&mut out, &digest);
    out
}

fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 15)]);
    }
}

fn parse_nonce(s: &str) -> Option<[u8; 16]> {
    if s.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, pair) in s.as_bytes().chunks_exact(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = u8::try_from(hi * 16 + lo).ok()?;
    }
    Some(out)
}

/// Signs a request: returns the four headers to add.
///
/// ```
/// use http::Method;
/// use skytower_services::auth::{self, sign};
/// use skytower_transports::identity::SecretKey;
///
/// let key = SecretKey::generate().unwrap();
/// let headers = sign(&key, &Method::POST, "/transports", b"[]", 1_700_000_000_000, [7; 16]);
/// assert_eq!(headers[&auth::PUBLIC], key.public_key().to_string().as_str());
/// assert_eq!(headers[&auth::NONCE], "07".repeat(16).as_str());
/// ```
pub fn sign(
    key: &SecretKey,
    method: &Method,
    path_and_query: &str,
    body: &[u8],
    timestamp_ms: u64,
    nonce: [u8; 16],
) -> HeaderMap {
    let msg = signing_bytes(method, path_and_query, timestamp_ms, &nonce, body);
    let sig = key.sign(contexts::HTTP_AUTH, &msg);
    let mut nonce_hex = Vec::with_capacity(32);
    push_hex(&mut nonce_hex, &nonce);
    let mut headers = HeaderMap::with_capacity(4);
    let value =
        |s: String| HeaderValue::try_from(s).expect("hex and digits are valid header values");
    headers.insert(PUBLIC, value(key.public_key().to_string()));
    headers.insert(TIMESTAMP, value(timestamp_ms.to_string()));
    headers.insert(
        NONCE,
        value(String::from_utf8(nonce_hex).expect("hex is ASCII")),
    );
    headers.insert(SIG, value(sig.to_string()));
    headers
}

/// Signs with the current time and a fresh random nonce.
pub fn sign_now(
    key: &SecretKey,
    method: &Method,
    path_and_query: &str,
    body: &[u8],
) -> Result<HeaderMap, getrandom::Error> {
    let mut nonce = [0u8; 16];
    getrandom::fill(&mut nonce)?;
    Ok(sign(
        key,
        method,
        path_and_query,
        body,
        unix_ms_now(),
        nonce,
    ))
}

/// Why a request's signature was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// A signature header is missing.
    #[error("{0} header missing: this request must be signed")]
    Missing(HeaderName),
    /// A signature header does not parse.
    #[error("malformed {header} header: {reason}")]
    BadHeader {
        /// The header.
        header: HeaderName,
        /// Why it was refused.
        reason: String,
    },
    /// The signature does not verify for this key, method, path, timestamp, nonce and body.
    #[error(
        "signature does not verify for {0} (it covers method, path with query, timestamp, nonce and body)"
    )]
    BadSignature(PublicKey),
    /// The timestamp is outside the window.
    #[error("timestamp {timestamp} is more than {window_ms} ms from the service's clock ({now})")]
    Stale {
        /// The request's timestamp.
        timestamp: u64,
        /// The service's clock.
        now: u64,
        /// The window.
        window_ms: u64,
    },
    /// `(key, nonce)` was already used.
    #[error("replayed request: nonce already used by {0}")]
    Replayed(PublicKey),
    /// The seen-set is full.
    #[error("too many signed requests in the replay window; retry later")]
    ReplayCacheFull,
    /// The shared nonce store (see [`SharedNonces`]) did not answer.
    #[error("cannot check the request for replays: {0}")]
    ReplayStoreUnavailable(String),
    /// The body is over the limit.
    #[error("request body larger than {0} bytes")]
    BodyTooLarge(usize),
    /// The body could not be read.
    #[error("cannot read the request body: {0}")]
    Body(String),
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        let message = e.to_string();
        match e {
            AuthError::Missing(_) => ApiError::unauthorized("missing_signature", message),
            AuthError::BadHeader { .. } => ApiError::unauthorized("bad_signature_header", message),
            AuthError::BadSignature(_) => ApiError::unauthorized("bad_signature", message),
            AuthError::Stale { .. } => ApiError::unauthorized("stale_timestamp", message),
            AuthError::Replayed(_) => ApiError::unauthorized("replayed_request", message),
            AuthError::ReplayCacheFull => ApiError {
                retry_after: Some(Duration::from_secs(1)),
                ..ApiError::new(
                    http::StatusCode::SERVICE_UNAVAILABLE,
                    "replay_cache_full",
                    message,
                )
            },
            AuthError::ReplayStoreUnavailable(_) => ApiError {
                retry_after: Some(Duration::from_secs(1)),
                ..ApiError::new(
                    http::StatusCode::SERVICE_UNAVAILABLE,
                    "replay_store_unavailable",
                    message,
                )
            },
            AuthError::BodyTooLarge(limit) => ApiError::body_too_large(limit),
            AuthError::Body(_) => ApiError::bad_request("bad_body", message),
        }
    }
}

/// Verifies signed requests; shared by the clones of a [`RequireSignature`] service.
pub struct Verifier {
    config: AuthConfig,
    guard: ReplayGuard,
    shared: Option<Arc<dyn SharedNonces>>,
    clock: Box<dyn Fn() -> u64 + Send + Sync>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("config", &self.config)
            .field("seen", &self.guard.len())
            .field("shared", &self.shared)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// A verifier on the wall clock.
    pub fn new(config: AuthConfig) -> Self {
        Self::with_clock(config, unix_ms_now)
    }

    /// A verifier reading Unix milliseconds from `clock` (for tests).
    pub fn with_clock(config: AuthConfig, clock: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        Verifier {
            config,
            guard: ReplayGuard::new(config.window, config.max_seen),
            shared: None,
            clock: Box::new(clock),
        }
    }

    /// Also remembers accepted nonces in `shared` (`None`: only in this verifier), so that
    /// instances sharing it refuse each other's replays. Services pass their store's
    /// [`shared_nonces`](crate::ttl_store::TtlStore::shared_nonces).
    #[must_use]
    pub fn with_shared_nonces(mut self, shared: Option<Arc<dyn SharedNonces>>) -> Self {
        self.shared = shared;
        self
    }

    /// The limits.
    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    /// Checks the signature headers of a request with this method, target and body; returns the
    /// caller's key. The nonce is remembered only when the signature verifies, so a forged
    /// request cannot burn a legitimate caller's nonce. With [`SharedNonces`] this awaits one
    /// round trip to the shared store (after every local check has passed).
    pub async fn verify(
        &self,
        method: &Method,
        path_and_query: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<PublicKey, AuthError> {
        let header = |name: HeaderName| -> Result<&str, AuthError> {
            let value = headers.get(&name).ok_or(AuthError::Missing(name.clone()))?;
            value.to_str().map_err(|_| AuthError::BadHeader {
                header: name,
                reason: "not ASCII".into(),
            })
        };
        let bad = |header: HeaderName, reason: String| AuthError::BadHeader { header, reason };
        let pk_s = header(PUBLIC)?;
        let ts_s = header(TIMESTAMP)?;
        let nonce_s = header(NONCE)?;
        let sig_s = header(SIG)?;
        let pk: PublicKey = pk_s.parse().map_err(|e| bad(PUBLIC, format!("{e}")))?;
        let timestamp: u64 = ts_s
            .parse()
            .map_err(|_| bad(TIMESTAMP, "not a decimal Unix time in milliseconds".into()))?;
        let nonce =
            parse_nonce(nonce_s).ok_or_else(|| bad(NONCE, "expected 32 hex characters".into()))?;
        let sig: Signature = sig_s.parse().map_err(|e| bad(SIG, format!("{e}")))?;

        let now = (self.clock)();
        let window_ms = u64::try_from(self.config.window.as_millis()).unwrap_or(u64::MAX);
        if timestamp.abs_diff(now) > window_ms {
            return Err(AuthError::Stale {
                timestamp,
                now,
                window_ms,
            });
        }
        let msg = signing_bytes(method, path_and_query, timestamp, &nonce, body);
        pk.verify(contexts::HTTP_AUTH, &msg, &sig)
            .map_err(|_| AuthError::BadSignature(pk))?;
        match self.guard.check_at(&pk, &nonce, timestamp, now) {
            Ok(()) => {}
            Err(ReplayError::Replay) => return Err(AuthError::Replayed(pk)),
            Err(ReplayError::Full) => return Err(AuthError::ReplayCacheFull),
            Err(ReplayError::Stale) => {
                return Err(AuthError::Stale {
                    timestamp,
                    now,
                    window_ms,
                });
            }
        }
        if let Some(shared) = &self.shared {
            // Kept while any instance could still accept the timestamp: it is within `window`
            // of their clocks, which may differ from ours by up to `window` as well.
            let ttl = self.config.window.saturating_mul(2) + Duration::from_secs(1);
            match shared.mark_once(&pk, &nonce, ttl).await {
                Ok(true) => {}
                Ok(false) => return Err(AuthError::Replayed(pk)),
                Err(e) => return Err(AuthError::ReplayStoreUnavailable(e)),
            }
        }
        Ok(pk)
    }
}

/// A verifier shared by every clone of a layer.
pub type SharedVerifier = Arc<Verifier>;

#[cfg(test)]
mod tests;
