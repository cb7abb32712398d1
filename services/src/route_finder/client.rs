//! [`RfClient`]: the typed client of the route finder.

use skytower_transports::connector::Connector;

use super::api::{RoutesRequest, RoutesResponse};
use crate::auth::{ClientError, SignedClient};

/// A client of the route finder at an `http://` or `dmsg://` base URL. Cheap to clone.
#[derive(Clone, Debug)]
pub struct RfClient {
    http: SignedClient,
}

impl RfClient {
    /// A client over TCP (`http://host:port`).
    ///
    /// # Errors
    ///
    /// [`ClientError::Url`] for a bad base URL.
    pub fn new(base_url: &str) -> Result<Self, ClientError> {
        Ok(RfClient {
            http: SignedClient::new(base_url)?,
        })
    }

    /// A client through `connector` (with a DMSG client for `dmsg://<pk>:<port>`).
    ///
    /// # Errors
    ///
    /// [`ClientError::Url`] for a bad base URL.
    pub fn with_connector(base_url: &str, connector: Connector) -> Result<Self, ClientError> {
        Ok(RfClient {
            http: SignedClient::with_connector(base_url, connector)?,
        })
    }

    /// `POST /routes`.
    ///
    /// # Errors
    ///
    /// [`ClientError::Api`]: `404` with `no_route`, `unknown_source`, `unknown_destination` or
    /// `search_limit` when a pair has no route; `422` for a bad request; or a transport error.
    pub async fn routes(&self, request: &RoutesRequest) -> Result<RoutesResponse, ClientError> {
        self.http.post_json("/routes", request).await
    }

    /// The underlying HTTP client.
    pub fn http(&self) -> &SignedClient {
        &self.http
    }
}
