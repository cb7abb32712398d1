//! [`UptimeClient`]: the typed client of the uptime tracker.

use std::sync::Arc;
use std::time::Duration;

use skytower_transports::connector::Connector;
use skytower_transports::identity::{PublicKey, SecretKey};
use tokio_util::sync::CancellationToken;

use super::api::{Heartbeat, HeartbeatAck, NodeUptime, Uptimes};
use super::clock::Day;
use crate::auth::{ClientError, SignedClient, SignedClientConfig};

/// A `GET /uptimes` query: nodes (all when empty) and an optional date range (default: the
/// last 7 days, today included).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UptimeQuery {
    /// The nodes asked about; empty for every node.
    pub keys: Vec<PublicKey>,
    /// First day (default: 6 days before `to`).
    pub from: Option<Day>,
    /// Last day (default: today, UTC).
    pub to: Option<Day>,
}

impl UptimeQuery {
    /// The request target (`/uptimes?...`).
    pub fn path(&self) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        if !self.keys.is_empty() {
            let keys: Vec<String> = self.keys.iter().map(ToString::to_string).collect();
            q.append_pair("keys", &keys.join(","));
        }
        if let Some(from) = self.from {
            q.append_pair("from", &from.to_string());
        }
        if let Some(to) = self.to {
            q.append_pair("to", &to.to_string());
        }
        let q = q.finish();
        if q.is_empty() {
            "/uptimes".to_owned()
        } else {
            format!("/uptimes?{q}")
        }
    }
}

/// The uptime tracker's client: heartbeats (signed with the node's key) and queries, over
/// `http://` or `dmsg://` base URLs (see [`SignedClient`]). Cheap to clone.
#[derive(Clone, Debug)]
pub struct UptimeClient {
    http: SignedClient,
}

impl UptimeClient {
    /// A client of the tracker at `base_url` (`http://` only; see
    /// [`with_connector`](Self::with_connector) for `dmsg://`).
    ///
    /// # Errors
    ///
    /// [`ClientError::Url`] for a bad URL.
    pub fn new(base_url: &str) -> Result<Self, ClientError> {
        Ok(UptimeClient {
            http: SignedClient::new(base_url)?,
        })
    }

    /// A client through `connector` (give it a DMSG client for `dmsg://` URLs).
    ///
    /// # Errors
    ///
    /// [`ClientError::Url`] for a bad URL.
    pub fn with_connector(base_url: &str, connector: Connector) -> Result<Self, ClientError> {
        Ok(UptimeClient {
            http: SignedClient::with_connector(base_url, connector)?,
        })
    }

    /// Signs heartbeats with the node's `key`.
    pub fn with_key(mut self, key: impl Into<Arc<SecretKey>>) -> Self {
        self.http = self.http.with_key(key);
        self
    }

    /// Other timeouts and limits.
    pub fn with_config(mut self, config: SignedClientConfig) -> Self {
        self.http = self.http.with_config(config);
        self
    }

    /// The underlying client.
    pub fn http(&self) -> &SignedClient {
        &self.http
    }

    /// Sends one heartbeat reporting `version` (needs a key).
    ///
    /// # Errors
    ///
    /// [`ClientError::Api`] with the tracker's code (`missing_signature` without a key,
    /// `rate_limited`, `invalid_version`...), or a transport error.
    pub async fn heartbeat(&self, version: &str) -> Result<HeartbeatAck, ClientError> {
        let body = Heartbeat {
            version: version.to_owned(),
        };
        self.http.post_json("/heartbeat", &body).await
    }

    /// `GET /uptimes`.
    ///
    /// # Errors
    ///
    /// [`ClientError::Api`] (`bad_key`, `bad_date`, `range_too_long`, `rate_limited`...) or a
    /// transport error.
    pub async fn uptimes(&self, query: &UptimeQuery) -> Result<Uptimes, ClientError> {
        self.http.get_json(&query.path()).await
    }

    /// `GET /uptime/{pk}` for the last 7 days.
    ///
    /// # Errors
    ///
    /// [`ClientError::Api`] with code `not_found` when the tracker has no live heartbeat of
    /// `pk`.
    pub async fn uptime(&self, pk: &PublicKey) -> Result<NodeUptime, ClientError> {
        self.http.get_json(&format!("/uptime/{pk}")).await
    }

    /// `GET /uptime/{pk}?from=&to=`.
    ///
    /// # Errors
    ///
    /// As [`uptime`](Self::uptime), plus `bad_date` / `bad_range` / `range_too_long`.
    pub async fn uptime_between(
        &self,
        pk: &PublicKey,
        from: Day,
        to: Day,
    ) -> Result<NodeUptime, ClientError> {
        self.http
            .get_json(&format!("/uptime/{pk}?from={from}&to={to}"))
            .await
    }

    /// The node side: sends a heartbeat **at once**, then every `interval` (5 min in
    /// production), until `cancel` fires. Failures are logged and retried at the next tick; a
    /// missed tick is not made up in a burst. Spawn it and keep the token (or abort the task)
    /// to stop it.
    pub async fn run(&self, version: String, interval: Duration, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            let sent = tokio::select! {
                () = cancel.cancelled() => return,
                r = self.heartbeat(&version) => r,
            };
            match sent {
                Ok(ack) => tracing::debug!(credited_ms = ack.credited_ms, "heartbeat sent"),
                Err(e) => {
                    tracing::warn!(error = %e, url = self.http.base_url(), "heartbeat failed")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_paths() {
        assert_eq!(UptimeQuery::default().path(), "/uptimes");
        let a = SecretKey::generate().unwrap().public_key();
        let b = SecretKey::generate().unwrap().public_key();
        let q = UptimeQuery {
            keys: vec![a, b],
            from: Day::parse("2026-01-01"),
            to: Day::parse("2026-01-07"),
        };
        assert_eq!(
            q.path(),
            format!("/uptimes?keys={a}%2C{b}&from=2026-01-01&to=2026-01-07")
        );
    }
}
