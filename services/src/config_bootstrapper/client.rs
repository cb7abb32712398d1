//! [`BootstrapClient`]: the typed client of the config bootstrapper.

use skytower_transports::connector::Connector;

use super::types::NetworkConfig;
use crate::auth::{ClientError, SignedClient, SignedClientConfig};

/// Fetches the network's configuration from a config bootstrapper (`http://` or, through a
/// connector with a DMSG client, `dmsg://`). Requests are not signed. Cheap to clone.
#[derive(Clone, Debug)]
pub struct BootstrapClient {
    http: SignedClient,
}

impl BootstrapClient {
    /// A client of the bootstrapper at `base_url` (`http://host:port`).
    ///
    /// # Errors
    ///
    /// [`ClientError::Url`] for a bad URL.
    pub fn new(base_url: &str) -> Result<Self, ClientError> {
        Ok(BootstrapClient {
            http: SignedClient::new(base_url)?,
        })
    }

    /// A client through `connector` (for `dmsg://` base URLs).
    ///
    /// # Errors
    ///
    /// [`ClientError::Url`] for a bad URL.
    pub fn with_connector(base_url: &str, connector: Connector) -> Result<Self, ClientError> {
        Ok(BootstrapClient {
            http: SignedClient::with_connector(base_url, connector)?,
        })
    }

    /// Other timeouts and limits (default: 10 s per call, 8 MiB answers).
    pub fn with_config(mut self, config: SignedClientConfig) -> Self {
        self.http = self.http.with_config(config);
        self
    }

    /// The underlying client.
    pub fn http(&self) -> &SignedClient {
        &self.http
    }

    /// `GET /config`: the services (URLs, DMSG addresses and their freshness), the DMSG
    /// servers and the lists.
    ///
    /// # Errors
    ///
    /// [`ClientError`]: transport errors and timeouts (retryable, see
    /// [`ClientError::is_retryable`]), `rate_limited`, or [`ClientError::Decode`] when the answer
    /// is not a network config.
    pub async fn fetch(&self) -> Result<NetworkConfig, ClientError> {
        self.http.get_json("/config").await
    }
}
