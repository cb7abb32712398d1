//! [`HttpDiscovery`]: the [`Discovery`] trait over the dmsg-discovery HTTP API
//! (`docs/api/dmsg-discovery.md`).
//!
//! hyper 1 with the hyper-util legacy (pooled) client, plain `http://` only. Every call is
//! bounded: a connect timeout, a whole-request deadline (headers and body), and a cap on the
//! response body size. Errors map onto [`DiscoveryError`]:
//!
//! | answer | error |
//! |---|---|
//! | 404 | [`DiscoveryError::NotFound`] |
//! | other 4xx except 408 and 429 (bad signature, stale sequence, malformed entry...) | [`DiscoveryError::Rejected`] with the service's `code: message` |
//! | 408, 429, 5xx, connection errors, timeouts, unreadable answers | [`DiscoveryError::Unavailable`] |
//!
//! ```no_run
//! use skytower_transports::dmsg::disc::Discovery;
//! use skytower_transports::dmsg::disc_http::HttpDiscovery;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let disc = HttpDiscovery::new("http://127.0.0.1:9090")?;
//! let servers = disc.available_servers().await?;
//! # Ok(()) }
//! ```

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;

use super::disc::{DeleteRequest, Discovery, DiscoveryError, DiscoveryFuture, Entry};
use crate::identity::PublicKey;

/// Why an [`HttpDiscovery`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum HttpDiscoveryError {
    /// The base URL does not parse.
    #[error("invalid discovery URL {url:?}: {reason}")]
    Url {
        /// The URL given.
        url: String,
        /// Why it was refused.
        reason: String,
    },
}

/// Timeouts and limits of an [`HttpDiscovery`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpDiscoveryConfig {
    /// TCP connect timeout (default 5 s).
    pub connect_timeout: Duration,
    /// Deadline of a whole call, from sending to the last body byte (default 10 s).
    pub request_timeout: Duration,
    /// Largest response body accepted (default 4 MiB).
    pub max_response_bytes: usize,
    /// Idle pooled connections kept per host (default 8).
    pub max_idle_per_host: usize,
}

impl Default for HttpDiscoveryConfig {
    fn default() -> Self {
        HttpDiscoveryConfig {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            max_response_bytes: 4 << 20,
            max_idle_per_host: 8,
        }
    }
}

/// A dmsg-discovery client over HTTP. Cheap to clone (the connection pool is shared).
#[derive(Clone, Debug)]
pub struct HttpDiscovery {
    client: Client<HttpConnector, Full<Bytes>>,
    /// `http://host:port` without a trailing slash.
    base: String,
    config: HttpDiscoveryConfig,
}

#[derive(serde::Deserialize)]
struct Envelope {
    error: ErrorBody,
}

#[derive(serde::Deserialize)]
struct ErrorBody {
    code: String,
    message: String,
}

impl HttpDiscovery {
    /// A client of the discovery at `base_url` (`http://host:port`, optionally with a path
    /// prefix), with the default timeouts.
    pub fn new(base_url: &str) -> Result<Self, HttpDiscoveryError> {
        Self::with_config(base_url, HttpDiscoveryConfig::default())
    }

    /// A client with explicit timeouts and limits.
    pub fn with_config(
        base_url: &str,
        config: HttpDiscoveryConfig,
    ) -> Result<Self, HttpDiscoveryError> {
        let bad = |reason: &str| HttpDiscoveryError::Url {
            url: base_url.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: Uri = base_url.parse().map_err(|_| bad("not a URI"))?;
        if uri.scheme_str() != Some("http") {
            return Err(bad("only http:// is supported"));
        }
        if uri.authority().is_none() {
            return Err(bad("missing host"));
        }
        if uri.query().is_some() {
            return Err(bad("a query string is not allowed"));
        }
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(config.max_idle_per_host)
            .build(connector);
        Ok(HttpDiscovery {
            client,
            base: base_url.trim_end_matches('/').to_owned(),
            config,
        })
    }

    /// The base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), DiscoveryError> {
        let uri = format!("{}/dmsg-discovery/{path}", self.base);
        let mut req = Request::builder().method(method).uri(&uri);
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| DiscoveryError::Unavailable(format!("bad request to {uri}: {e}")))?;
        let max = self.config.max_response_bytes;
        let exchange = async {
            let res = self
                .client
                .request(req)
                .await
                .map_err(|e| DiscoveryError::Unavailable(format!("{uri}: {e}")))?;
            let status = res.status();
            let body = Limited::new(res.into_body(), max)
                .collect()
                .await
                .map_err(|e| DiscoveryError::Unavailable(format!("{uri}: reading answer: {e}")))?
                .to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(self.config.request_timeout, exchange)
            .await
            .map_err(|_| {
                DiscoveryError::Unavailable(format!(
                    "{uri}: no answer within {:?}",
                    self.config.request_timeout
                ))
            })?
    }

    /// Maps a non-2xx answer to an error (`pk`: the key a 404 is about).
    fn error(status: StatusCode, body: &[u8], pk: Option<PublicKey>) -> DiscoveryError {
        let detail = serde_json::from_slice::<Envelope>(body)
            .map(|e| format!("{}: {}", e.error.code, e.error.message))
            .unwrap_or_else(|_| format!("HTTP {status}"));
        match (status, pk) {
            (StatusCode::NOT_FOUND, Some(pk)) => DiscoveryError::NotFound(pk),
            (StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_MANY_REQUESTS, _) => {
                DiscoveryError::Unavailable(detail)
            }
            (s, _) if s.is_client_error() => DiscoveryError::Rejected(detail),
            _ => DiscoveryError::Unavailable(detail),
        }
    }

    fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, DiscoveryError> {
        serde_json::from_slice(body)
            .map_err(|e| DiscoveryError::Unavailable(format!("unreadable answer: {e}")))
    }

    async fn get_entry(&self, pk: PublicKey) -> Result<Entry, DiscoveryError> {
        let (status, body) = self.call(Method::GET, &format!("entry/{pk}"), None).await?;
        if !status.is_success() {
            return Err(Self::error(status, &body, Some(pk)));
        }
        let entry: Entry = Self::decode(&body)?;
        // Never trust the service with someone else's entry.
        if entry.static_pk != pk || entry.verify().is_err() {
            return Err(DiscoveryError::Unavailable(format!(
                "the discovery answered an invalid entry for {pk}"
            )));
        }
        Ok(entry)
    }

    async fn post(&self, entry: Entry) -> Result<(), DiscoveryError> {
        let body = serde_json::to_vec(&entry)
            .map_err(|e| DiscoveryError::Rejected(format!("cannot encode the entry: {e}")))?;
        let (status, body) = self.call(Method::POST, "entry", Some(body)).await?;
        if !status.is_success() {
            return Err(Self::error(status, &body, None));
        }
        Ok(())
    }

    async fn delete(&self, request: DeleteRequest) -> Result<(), DiscoveryError> {
        let pk = request.static_pk;
        let body = serde_json::to_vec(&request)
            .map_err(|e| DiscoveryError::Rejected(format!("cannot encode the delete: {e}")))?;
        let (status, body) = self
            .call(Method::DELETE, &format!("entry/{pk}"), Some(body))
            .await?;
        if !status.is_success() {
            return Err(Self::error(status, &body, Some(pk)));
        }
        Ok(())
    }

    async fn servers(&self) -> Result<Vec<Entry>, DiscoveryError> {
        let (status, body) = self.call(Method::GET, "available_servers", None).await?;
        if !status.is_success() {
            return Err(Self::error(status, &body, None));
        }
        let entries: Vec<Entry> = Self::decode(&body)?;
        // Drop anything that does not verify rather than failing the whole list.
        Ok(entries
            .into_iter()
            .filter(|e| e.server.is_some() && e.verify().is_ok())
            .collect())
    }
}

impl Discovery for HttpDiscovery {
    fn entry(&self, pk: PublicKey) -> DiscoveryFuture<'_, Entry> {
        Box::pin(self.get_entry(pk))
    }

    fn post_entry(&self, entry: Entry) -> DiscoveryFuture<'_, ()> {
        Box::pin(self.post(entry))
    }

    fn delete_entry(&self, request: DeleteRequest) -> DiscoveryFuture<'_, ()> {
        Box::pin(self.delete(request))
    }

    fn available_servers(&self) -> DiscoveryFuture<'_, Vec<Entry>> {
        Box::pin(self.servers())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_urls() {
        assert!(HttpDiscovery::new("https://x:1").is_err());
        assert!(HttpDiscovery::new("not a url").is_err());
        assert!(HttpDiscovery::new("http://x:1/?q=1").is_err());
        let d = HttpDiscovery::new("http://127.0.0.1:9090/").unwrap();
        assert_eq!(d.base_url(), "http://127.0.0.1:9090");
    }

    #[test]
    fn error_mapping() {
        let pk = crate::identity::SecretKey::generate().unwrap().public_key();
        let body = br#"{"error":{"code":"stale_sequence","message":"no"}}"#;
        assert!(matches!(
            HttpDiscovery::error(StatusCode::NOT_FOUND, b"", Some(pk)),
            DiscoveryError::NotFound(k) if k == pk
        ));
        match HttpDiscovery::error(StatusCode::UNPROCESSABLE_ENTITY, body, None) {
            DiscoveryError::Rejected(m) => assert_eq!(m, "stale_sequence: no"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            HttpDiscovery::error(StatusCode::TOO_MANY_REQUESTS, b"", None),
            DiscoveryError::Unavailable(_)
        ));
        assert!(matches!(
            HttpDiscovery::error(StatusCode::SERVICE_UNAVAILABLE, b"", None),
            DiscoveryError::Unavailable(_)
        ));
    }

    #[tokio::test]
    async fn unreachable_service_is_unavailable_not_a_hang() {
        // A port that was just free: connection refused, quickly.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let d = HttpDiscovery::with_config(
            &format!("http://127.0.0.1:{port}"),
            HttpDiscoveryConfig {
                request_timeout: Duration::from_secs(2),
                ..HttpDiscoveryConfig::default()
            },
        )
        .unwrap();
        assert!(matches!(
            d.available_servers().await,
            Err(DiscoveryError::Unavailable(_))
        ));
    }
}
