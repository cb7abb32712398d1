//! [`AddressResolverClient`]: the typed HTTP client of the resolver's API, over
//! [`SignedClient`] (so over `http://` or `dmsg://` base URLs). The UDP side has its own
//! client, [`SudphClient`](super::SudphClient).

use std::net::IpAddr;
use std::sync::Arc;

use skytower_transports::connector::Connector;
use skytower_transports::identity::{PublicKey, SecretKey};

use super::api::{BindRequest, BindResponse, Resolved, TransportsList};
use super::bindings::Transport;
use crate::auth::{ClientError, SignedClient};

/// A node's client of the address resolver's HTTP API. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AddressResolverClient {
    http: SignedClient,
}

impl AddressResolverClient {
    /// A client of the resolver at `base_url` (`http://host:9093` or `dmsg://<pk>:80`), signing
    /// with `key`. `dmsg://` needs a connector with a DMSG client:
    /// [`with_connector`](Self::with_connector).
    ///
    /// # Errors
    ///
    /// [`ClientError::Url`] for a bad URL.
    pub fn new(base_url: &str, key: Arc<SecretKey>) -> Result<Self, ClientError> {
        Self::with_connector(base_url, Connector::new(), key)
    }

    /// Like [`new`](Self::new) over `connector` (e.g. one with a DMSG client).
    ///
    /// # Errors
    ///
    /// [`ClientError::Url`] for a bad URL.
    pub fn with_connector(
        base_url: &str,
        connector: Connector,
        key: Arc<SecretKey>,
    ) -> Result<Self, ClientError> {
        Ok(AddressResolverClient {
            http: SignedClient::with_connector(base_url, connector)?.with_key(key),
        })
    }

    /// The underlying signed HTTP client.
    pub fn http(&self) -> &SignedClient {
        &self.http
    }

    /// Binds this node's STCPR listener: `port` at the public IP the resolver sees, with the
    /// node's local addresses for peers behind the same IP. Renew it before `ttl_secs` ends.
    ///
    /// # Errors
    ///
    /// [`ClientError`]; the resolver's refusals are [`ClientError::Api`] (`address_refused`,
    /// `bad_port`, `too_many_addresses`, `no_observed_ip`, 401 codes...).
    pub async fn bind_stcpr(
        &self,
        port: u16,
        addresses: Vec<IpAddr>,
    ) -> Result<BindResponse, ClientError> {
        self.bind_stcpr_with(&BindRequest {
            port,
            addresses,
            public_ip: None,
        })
        .await
    }

    /// [`bind_stcpr`](Self::bind_stcpr) with a full request (e.g. a declared `public_ip` over
    /// DMSG, for resolvers on trusted networks).
    ///
    /// # Errors
    ///
    /// As [`bind_stcpr`](Self::bind_stcpr).
    pub async fn bind_stcpr_with(&self, req: &BindRequest) -> Result<BindResponse, ClientError> {
        self.http.post_json("/bind/stcpr", req).await
    }

    /// Deletes this node's STCPR binding.
    ///
    /// # Errors
    ///
    /// [`ClientError`]; 404 `no_binding` when there was none.
    pub async fn unbind_stcpr(&self) -> Result<(), ClientError> {
        self.http.delete("/bind/stcpr").await
    }

    /// Where `pk` can be reached on `transport`. Resolving SUDPH also makes the resolver tell
    /// `pk` to punch a hole towards this node's own SUDPH binding (`punched`).
    ///
    /// # Errors
    ///
    /// [`ClientError`]; 404 `no_binding` when `pk` has no live binding.
    pub async fn resolve(
        &self,
        transport: Transport,
        pk: &PublicKey,
    ) -> Result<Resolved, ClientError> {
        self.http
            .get_json(&format!("/resolve/{transport}/{pk}"))
            .await
    }

    /// The keys with a live binding, per transport.
    ///
    /// # Errors
    ///
    /// [`ClientError`].
    pub async fn transports(&self) -> Result<TransportsList, ClientError> {
        self.http.get_json("/transports").await
    }
}
