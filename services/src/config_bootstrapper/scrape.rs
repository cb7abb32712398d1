//! Scraping: each service's `/health` for its DMSG address, dmsg-discovery's server list, both
//! bounded in time and size, and the cache of what was last known.

use std::time::Duration;

use bytes::Bytes;
use http::{StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use skytower_transports::connector::Connector;
use skytower_transports::dmsg::disc::Entry;
use skytower_transports::dmsg::wire::Addr;

use super::types::Freshness;

/// The HTTP client used for scraping (plain TCP).
pub(crate) type ScrapeClient = Client<Connector, Empty<Bytes>>;

pub(crate) fn client(timeout: Duration) -> ScrapeClient {
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(2)
        .build(Connector::new().connect_timeout(timeout))
}

/// `GET url` under `timeout`, reading at most `max` bytes: the status and body, or why not.
pub(crate) async fn fetch(
    client: &ScrapeClient,
    url: &str,
    timeout: Duration,
    max: usize,
) -> Result<(StatusCode, Bytes), String> {
    let uri: Uri = url.parse().map_err(|e| format!("bad URL {url:?}: {e}"))?;
    let exchange = async {
        let res = client
            .get(uri)
            .await
            .map_err(|e| format!("unreachable: {}", skytower_transports::error_chain(&e)))?;
        let status = res.status();
        let body = Limited::new(res.into_body(), max)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    format!("answer larger than {max} bytes")
                } else {
                    format!("reading the answer: {e}")
                }
            })?
            .to_bytes();
        Ok((status, body))
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

/// The DMSG address in a `/health` document: `checks.dmsg.details.address` (skytower's service
/// mode) or a top-level `dmsg_address` (Go services). `Ok(None)` when the service has none
/// (it serves HTTP only).
pub(crate) fn dmsg_address(health: &[u8]) -> Result<Option<Addr>, String> {
    let doc: serde_json::Value =
        serde_json::from_slice(health).map_err(|e| format!("/health is not JSON: {e}"))?;
    let raw = doc
        .pointer("/checks/dmsg/details/address")
        .or_else(|| doc.get("dmsg_address"));
    match raw {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => s
            .parse()
            .map(Some)
            .map_err(|e| format!("/health has a bad DMSG address {s:?}: {e}")),
        Some(other) => Err(format!(
            "/health has a DMSG address that is not a string: {other}"
        )),
    }
}

/// Scrapes one service's `/health` (200, or 503 when degraded: it still says its address).
pub(crate) async fn health(
    client: &ScrapeClient,
    base: &str,
    timeout: Duration,
    max: usize,
) -> Result<Option<Addr>, String> {
    let url = format!("{}/health", base.trim_end_matches('/'));
    let (status, body) = fetch(client, &url, timeout, max).await?;
    if status != StatusCode::OK && status != StatusCode::SERVICE_UNAVAILABLE {
        return Err(format!("/health answered {status}"));
    }
    dmsg_address(&body)
}

/// Fetches dmsg-discovery's server entries, keeping the valid, signed ones with a server
/// section, at most `keep`.
pub(crate) async fn servers(
    client: &ScrapeClient,
    discovery: &str,
    timeout: Duration,
    max_bytes: usize,
    keep: usize,
) -> Result<Vec<Entry>, String> {
    let url = format!(
        "{}/dmsg-discovery/all_servers",
        discovery.trim_end_matches('/')
    );
    let (status, body) = fetch(client, &url, timeout, max_bytes).await?;
    if status != StatusCode::OK {
        return Err(format!("all_servers answered {status}"));
    }
    let raw: Vec<serde_json::Value> = serde_json::from_slice(&body)
        .map_err(|e| format!("all_servers is not a JSON list: {e}"))?;
    let total = raw.len();
    let entries: Vec<Entry> = raw
        .into_iter()
        .filter_map(|v| serde_json::from_value::<Entry>(v).ok())
        .filter(|e| e.server.is_some() && e.validate().is_ok() && e.verify().is_ok())
        .take(keep)
        .collect();
    if entries.len() < total.min(keep) {
        tracing::debug!(
            total,
            kept = entries.len(),
            "dropped invalid server entries"
        );
    }
    Ok(entries)
}

/// A scraped value with its history: the last good value, when it was fetched, and the last
/// error (cleared by a success).
#[derive(Clone, Debug)]
pub(crate) struct Known<T> {
    pub(crate) value: Option<T>,
    pub(crate) updated_at: Option<u64>,
    pub(crate) error: Option<String>,
}

impl<T> Known<T> {
    pub(crate) fn unknown() -> Self {
        Known {
            value: None,
            updated_at: None,
            error: Some("not fetched yet".into()),
        }
    }

    /// Records a fetch made at `now_ms`: a success replaces the value, a failure keeps it.
    pub(crate) fn record(&mut self, result: Result<T, String>, now_ms: u64) {
        match result {
            Ok(v) => {
                self.value = Some(v);
                self.updated_at = Some(now_ms);
                self.error = None;
            }
            Err(e) => self.error = Some(e),
        }
    }

    pub(crate) fn freshness(&self) -> Freshness {
        match (&self.value, &self.error) {
            (None, _) => Freshness::Unknown,
            (Some(_), Some(_)) => Freshness::Stale,
            (Some(_), None) => Freshness::Ok,
        }
    }
}

#[cfg(test)]
mod tests {
    use skytower_transports::identity::SecretKey;

    use super::*;

    #[test]
    fn dmsg_addresses_in_health_documents() {
        let pk = SecretKey::generate().unwrap().public_key();
        let ours = format!(
            r#"{{"service":"x","checks":{{"dmsg":{{"details":{{"address":"{pk}:80"}}}}}}}}"#
        );
        assert_eq!(
            dmsg_address(ours.as_bytes()).unwrap(),
            Some(Addr::new(pk, 80))
        );
        let go = format!(r#"{{"build_info":{{}},"dmsg_address":"{pk}:8080"}}"#);
        assert_eq!(
            dmsg_address(go.as_bytes()).unwrap(),
            Some(Addr::new(pk, 8080))
        );
        assert_eq!(
            dmsg_address(br#"{"service":"x","checks":{}}"#).unwrap(),
            None
        );
        assert!(dmsg_address(b"<html>").unwrap_err().contains("not JSON"));
        let bad = dmsg_address(br#"{"dmsg_address":"02abc:80"}"#).unwrap_err();
        assert!(bad.contains("bad DMSG address"), "{bad}");
        let bad = dmsg_address(br#"{"dmsg_address":80}"#).unwrap_err();
        assert!(bad.contains("not a string"), "{bad}");
    }

    #[test]
    fn known_values_go_stale_and_recover() {
        let mut k: Known<u32> = Known::unknown();
        assert_eq!(k.freshness(), Freshness::Unknown);
        k.record(Err("down".into()), 1);
        assert_eq!(k.freshness(), Freshness::Unknown);
        k.record(Ok(7), 2);
        assert_eq!(
            (k.freshness(), k.value, k.updated_at),
            (Freshness::Ok, Some(7), Some(2))
        );
        k.record(Err("down".into()), 3);
        assert_eq!(
            (k.freshness(), k.value, k.updated_at),
            (Freshness::Stale, Some(7), Some(2))
        );
        assert_eq!(k.error.as_deref(), Some("down"));
        k.record(Ok(8), 4);
        assert_eq!(
            (k.freshness(), k.value, k.error),
            (Freshness::Ok, Some(8), None)
        );
    }
}
