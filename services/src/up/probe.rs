//! Health probes of the components `up` starts.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use skytower_transports::dmsg::disc::{Discovery, DiscoveryError};
use skytower_transports::dmsg::server::ServerStats;
use skytower_transports::identity::PublicKey;

use crate::node::ControlClient;

/// Bound on one probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// A component's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// Working.
    Ok,
    /// Up but not fully working (e.g. no DMSG session yet).
    Degraded,
    /// Not answering.
    Down,
}

impl std::fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HealthStatus::Ok => "ok",
            HealthStatus::Degraded => "degraded",
            HealthStatus::Down => "down",
        })
    }
}

/// One probe's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    /// The state.
    pub status: HealthStatus,
    /// A short explanation.
    pub detail: String,
}

impl Health {
    /// `ok`.
    pub fn ok(detail: impl Into<String>) -> Self {
        Health {
            status: HealthStatus::Ok,
            detail: detail.into(),
        }
    }

    /// `degraded`.
    pub fn degraded(detail: impl Into<String>) -> Self {
        Health {
            status: HealthStatus::Degraded,
            detail: detail.into(),
        }
    }

    /// `down`.
    pub fn down(detail: impl Into<String>) -> Self {
        Health {
            status: HealthStatus::Down,
            detail: detail.into(),
        }
    }
}

/// Asks a component whether it is healthy (bounded; never fails, a failure is `down`).
pub type Probe = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Health> + Send>> + Send + Sync>;

/// Always answers `health`.
pub fn fixed(health: Health) -> Probe {
    Arc::new(move || {
        let h = health.clone();
        Box::pin(async move { h })
    })
}

/// `GET http://<addr>/health`: the service mode's health document (`status` of `ok`,
/// `degraded` or `down`; the detail names the checks that are not `ok`).
pub fn http_probe(addr: SocketAddr) -> Probe {
    Arc::new(move || {
        Box::pin(async move {
            match tokio::time::timeout(PROBE_TIMEOUT, get_health(addr)).await {
                Ok(Ok(h)) => h,
                Ok(Err(e)) => Health::down(e),
                Err(_) => Health::down("/health timed out"),
            }
        })
    })
}

async fn get_health(addr: SocketAddr) -> Result<Health, String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| e.to_string())?;
    let driver = tokio::spawn(conn);
    let _owner = skytower_transports::task::AbortOnDrop::new(&driver);
    let req = Request::get("/health")
        .header(header::HOST, addr.to_string())
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let res = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let body = Limited::new(res.into_body(), 64 << 10)
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let doc: serde_json::Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
    let not_ok: Vec<String> = doc["checks"]
        .as_object()
        .map(|checks| {
            checks
                .iter()
                .filter(|(_, c)| c["status"] != "ok")
                .map(|(name, c)| format!("{name} {}", c["status"].as_str().unwrap_or("?")))
                .collect()
        })
        .unwrap_or_default();
    let detail = if not_ok.is_empty() {
        "/health ok".to_owned()
    } else {
        not_ok.join(", ")
    };
    Ok(match doc["status"].as_str() {
        Some("ok") => Health::ok(detail),
        Some("degraded") => Health::degraded(detail),
        _ => Health::down(detail),
    })
}

/// A relay is healthy once its entry is in discovery.
pub(crate) fn relay(
    discovery: Arc<dyn Discovery>,
    pk: PublicKey,
    stats: Arc<ServerStats>,
) -> Probe {
    Arc::new(move || {
        let discovery = discovery.clone();
        let stats = stats.clone();
        Box::pin(async move {
            let lookup = tokio::time::timeout(PROBE_TIMEOUT, discovery.entry(pk)).await;
            let sessions = stats.sessions();
            match lookup {
                Ok(Ok(e)) if e.server.is_some() => {
                    Health::ok(format!("registered, {sessions} sessions"))
                }
                Ok(Ok(_)) => Health::degraded("its entry is not a server entry"),
                Ok(Err(DiscoveryError::NotFound(_))) => Health::degraded("not registered yet"),
                Ok(Err(e)) => Health::down(e.to_string()),
                Err(_) => Health::down("discovery lookup timed out"),
            }
        })
    })
}

/// `inner`, and once it is `ok`, the component's DMSG entry too: `degraded` until discovery
/// lists `pk` with at least one server. A session alone (what the service's own `/health`
/// checks) is not enough for others to reach it: its entry is published a moment later, and a
/// client dialing before that fails, then avoids the path for a while (negative cache).
pub(crate) fn published(inner: Probe, discovery: Arc<dyn Discovery>, pk: PublicKey) -> Probe {
    Arc::new(move || {
        let inner = inner.clone();
        let discovery = discovery.clone();
        Box::pin(async move {
            let health = inner().await;
            if health.status != HealthStatus::Ok {
                return health;
            }
            match tokio::time::timeout(PROBE_TIMEOUT, discovery.entry(pk)).await {
                Ok(Ok(e))
                    if e.client
                        .as_ref()
                        .is_some_and(|c| !c.delegated_servers.is_empty()) =>
                {
                    health
                }
                Ok(Ok(_)) | Ok(Err(DiscoveryError::NotFound(_))) => {
                    Health::degraded("DMSG entry not published yet")
                }
                Ok(Err(e)) => Health::degraded(format!("DMSG entry: {e}")),
                Err(_) => Health::degraded("DMSG entry: discovery lookup timed out"),
            }
        })
    })
}

/// A node is healthy with at least one session (its control API's `/v1/health`).
pub(crate) fn node(control: ControlClient) -> Probe {
    Arc::new(move || {
        let control = control.clone();
        Box::pin(async move {
            match tokio::time::timeout(PROBE_TIMEOUT, control.health()).await {
                Ok(Ok(h)) if h.status == "ok" => Health::ok(format!("{} sessions", h.sessions)),
                Ok(Ok(h)) => Health::degraded(format!("{} sessions", h.sessions)),
                Ok(Err(e)) => Health::down(e.to_string()),
                Err(_) => Health::down("control API timed out"),
            }
        })
    })
}

#[cfg(test)]
mod tests {
    use skytower_transports::dmsg::disc::{Entry, MemoryDiscovery};
    use skytower_transports::identity::SecretKey;

    use super::*;

    #[tokio::test]
    async fn a_dmsg_component_is_ok_only_once_its_entry_lists_a_server() {
        let discovery = Arc::new(MemoryDiscovery::new(
            Duration::from_secs(60),
            Duration::from_secs(60),
            16,
        ));
        let key = SecretKey::generate().unwrap();
        let server = SecretKey::generate().unwrap().public_key();
        let probe = published(
            fixed(Health::ok("/health ok")),
            discovery.clone(),
            key.public_key(),
        );
        let h = probe().await;
        assert_eq!(
            (h.status, h.detail.as_str()),
            (HealthStatus::Degraded, "DMSG entry not published yet")
        );
        // An entry without servers is not reachable either.
        let mut entry = Entry::new_client(key.public_key(), vec![]);
        entry.sign(&key);
        discovery.post_entry(entry).await.unwrap();
        assert_eq!(probe().await.status, HealthStatus::Degraded);
        let mut entry = Entry::new_client(key.public_key(), vec![server]);
        entry.sequence = 1;
        entry.sign(&key);
        discovery.post_entry(entry).await.unwrap();
        let h = probe().await;
        assert_eq!(
            (h.status, h.detail.as_str()),
            (HealthStatus::Ok, "/health ok")
        );
        // The service's own health comes first.
        let down = published(fixed(Health::down("no")), discovery, key.public_key());
        assert_eq!(down().await.status, HealthStatus::Down);
    }
}
