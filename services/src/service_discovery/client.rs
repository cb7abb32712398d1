//! [`ServiceDiscoveryClient`]: the typed client, over [`SignedClient`] (so `http://` and
//! `dmsg://` base URLs both work).

use std::sync::Arc;

use http::{Method, StatusCode};
use skytower_transports::connector::Connector;
use skytower_transports::dmsg::wire::Addr;
use skytower_transports::identity::SecretKey;

use super::model::{Registered, Registration, ServiceEntry, ServiceQuery};
use crate::auth::{ClientError, SignedClient};

/// A typed client of the service discovery API. Reads need no key; [`register`](Self::register)
/// and [`delete`](Self::delete) need one ([`with_key`](Self::with_key)), and only work for the
/// key's own addresses. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ServiceDiscoveryClient {
    http: SignedClient,
}

impl ServiceDiscoveryClient {
    /// A client of the service at `base_url` (`http://host:port`), over TCP, without a key.
    ///
    /// # Errors
    ///
    /// [`ClientError::Url`] for a bad URL.
    pub fn new(base_url: &str) -> Result<Self, ClientError> {
        Ok(Self::from_signed(SignedClient::new(base_url)?))
    }

    /// A client of `base_url` through `connector` (give it a DMSG client for `dmsg://pk:port`).
    ///
    /// # Errors
    ///
    /// [`ClientError::Url`] for a bad URL.
    pub fn with_connector(base_url: &str, connector: Connector) -> Result<Self, ClientError> {
        Ok(Self::from_signed(SignedClient::with_connector(
            base_url, connector,
        )?))
    }

    /// A client over a configured [`SignedClient`].
    pub fn from_signed(http: SignedClient) -> Self {
        ServiceDiscoveryClient { http }
    }

    /// Signs writes with `key`.
    pub fn with_key(self, key: impl Into<Arc<SecretKey>>) -> Self {
        ServiceDiscoveryClient {
            http: self.http.with_key(key),
        }
    }

    /// The underlying client.
    pub fn signed_client(&self) -> &SignedClient {
        &self.http
    }

    /// Registers (or refreshes, renewing its TTL) `registration`, whose address must be the
    /// key's.
    ///
    /// # Errors
    ///
    /// [`ClientError::Api`] with the service's code (`forbidden_key`, `invalid_type`,
    /// `too_many_entries`, `missing_signature` without a key…), transport errors.
    pub async fn register(&self, registration: &Registration) -> Result<Registered, ClientError> {
        let body = serde_json::to_vec(registration).map_err(|e| ClientError::Decode {
            url: format!("{}/api/services", self.http.base_url()),
            reason: format!("cannot encode the request: {e}"),
        })?;
        let (status, answer) = self
            .http
            .send(Method::POST, "/api/services", Some(body))
            .await?;
        let entry = serde_json::from_slice(&answer).map_err(|e| ClientError::Decode {
            url: format!("{}/api/services", self.http.base_url()),
            reason: e.to_string(),
        })?;
        Ok(Registered {
            entry,
            created: status == StatusCode::CREATED,
        })
    }

    /// The entry at `addr`, `None` when there is none (or it expired).
    ///
    /// # Errors
    ///
    /// Transport errors and API errors other than 404.
    pub async fn get(&self, addr: &Addr) -> Result<Option<ServiceEntry>, ClientError> {
        match self.http.get_json(&format!("/api/services/{addr}")).await {
            Ok(entry) => Ok(Some(entry)),
            Err(e) if e.status() == Some(StatusCode::NOT_FOUND) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Deletes the key's entry at `addr`; `false` when there was none.
    ///
    /// # Errors
    ///
    /// [`ClientError::Api`] (`forbidden_key` for another key's address, 401 without a key),
    /// transport errors.
    pub async fn delete(&self, addr: &Addr) -> Result<bool, ClientError> {
        match self.http.delete(&format!("/api/services/{addr}")).await {
            Ok(()) => Ok(true),
            Err(e) if e.api_code() == Some("not_found") => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The entries matching `query` (a random sample when `quantity` is set or more than the
    /// service's limit match).
    ///
    /// # Errors
    ///
    /// [`ClientError::Api`] (`bad_query`…), transport errors.
    pub async fn query(&self, query: &ServiceQuery) -> Result<Vec<ServiceEntry>, ClientError> {
        self.http
            .get_json(&format!("/api/services?{}", query.to_query_string()))
            .await
    }
}
