//! [`TpdClient`]: the typed client of the transport discovery.

use std::sync::Arc;

use skytower_transports::connector::Connector;
use skytower_transports::identity::{PublicKey, SecretKey};

use super::api::{Deleted, TransportRecord};
use super::entry::{SignedEntry, TransportId};
use crate::auth::{ClientError, SignedClient, SignedClientConfig};

/// A client of the transport discovery at an `http://` or `dmsg://` base URL. Writes
/// ([`register`](Self::register), [`delete`](Self::delete)) need a key
/// ([`with_key`](Self::with_key)): the node's own, an edge of the transports. Cheap to clone.
#[derive(Clone, Debug)]
pub struct TpdClient {
    http: SignedClient,
}

impl TpdClient {
    /// A client over TCP (`http://host:port`), without a key.
    ///
    /// # Errors
    ///
    /// [`ClientError::Url`] for a bad base URL.
    pub fn new(base_url: &str) -> Result<Self, ClientError> {
        Ok(TpdClient {
            http: SignedClient::new(base_url)?,
        })
    }

    /// A client through `connector` (with a DMSG client for `dmsg://<pk>:<port>`).
    ///
    /// # Errors
    ///
    /// [`ClientError::Url`] for a bad base URL.
    pub fn with_connector(base_url: &str, connector: Connector) -> Result<Self, ClientError> {
        Ok(TpdClient {
            http: SignedClient::with_connector(base_url, connector)?,
        })
    }

    /// Signs requests with `key`.
    #[must_use]
    pub fn with_key(self, key: impl Into<Arc<SecretKey>>) -> Self {
        TpdClient {
            http: self.http.with_key(key),
        }
    }

    /// Other timeouts and limits (e.g. a larger response limit for [`all`](Self::all)).
    #[must_use]
    pub fn with_config(self, config: SignedClientConfig) -> Self {
        TpdClient {
            http: self.http.with_config(config),
        }
    }

    /// `POST /transports`: registers (or refreshes) entries signed by both edges; the caller
    /// must be an edge of each. Returns the stored records.
    ///
    /// # Errors
    ///
    /// [`ClientError::Api`] with the service's code (see `docs/api/transport-discovery.md`),
    /// or a transport error.
    pub async fn register(
        &self,
        entries: &[SignedEntry],
    ) -> Result<Vec<TransportRecord>, ClientError> {
        self.http.post_json("/transports", entries).await
    }

    /// `GET /transports/id:{id}`.
    ///
    /// # Errors
    ///
    /// [`ClientError::Api`] `404 not_found` when unknown or expired.
    pub async fn by_id(&self, id: &TransportId) -> Result<TransportRecord, ClientError> {
        self.http.get_json(&format!("/transports/id:{id}")).await
    }

    /// `GET /transports/edge:{pk}`: the live transports of `pk` (possibly none).
    ///
    /// # Errors
    ///
    /// A transport or API error.
    pub async fn by_edge(&self, pk: &PublicKey) -> Result<Vec<TransportRecord>, ClientError> {
        self.http.get_json(&format!("/transports/edge:{pk}")).await
    }

    /// `GET /all-transports`.
    ///
    /// # Errors
    ///
    /// A transport or API error; [`ClientError::BodyTooLarge`] beyond the response limit.
    pub async fn all(&self) -> Result<Vec<TransportRecord>, ClientError> {
        self.http.get_json("/all-transports").await
    }

    /// `DELETE /transports/id:{id}` (the key must be an edge).
    ///
    /// # Errors
    ///
    /// [`ClientError::Api`] `404 not_found`, `403 caller_not_edge`, or a transport error.
    pub async fn delete(&self, id: &TransportId) -> Result<(), ClientError> {
        let (_, body) = self
            .http
            .send(http::Method::DELETE, &format!("/transports/id:{id}"), None)
            .await?;
        serde_json::from_slice::<Deleted>(&body)
            .map(|_| ())
            .map_err(|e| ClientError::Decode {
                url: format!("{}/transports/id:{id}", self.http.base_url()),
                reason: e.to_string(),
            })
    }

    /// The underlying HTTP client.
    pub fn http(&self) -> &SignedClient {
        &self.http
    }
}
