//! The wire types of `GET /config` ([`NetworkConfig`]), shared by the service and its client.
//! Unknown fields are ignored when decoding, so newer services can add fields.

use serde::{Deserialize, Serialize};
use skytower_transports::dmsg::disc::Entry;
use skytower_transports::dmsg::wire::Addr;
use skytower_transports::identity::PublicKey;

/// How fresh a scraped value is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Freshness {
    /// The last scrape succeeded.
    Ok,
    /// The last scrape failed; the value is the last one known (`error` says why).
    Stale,
    /// No scrape has succeeded yet: there is no value.
    Unknown,
}

/// One service as served: its URL and what its `/health` last said.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceInfo {
    /// The HTTP URL (from the bootstrapper's config file).
    pub url: String,
    /// The DMSG address the service answers on (`pk:port`), from its `/health`; absent when it
    /// serves HTTP only (or was never reached).
    #[serde(default, with = "opt_addr", skip_serializing_if = "Option::is_none")]
    pub dmsg_address: Option<Addr>,
    /// Whether `dmsg_address` is current.
    pub status: Freshness,
    /// Unix ms of the last successful scrape.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<u64>,
    /// Why the last scrape failed (`stale` and `unknown`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ServiceInfo {
    /// `dmsg://<pk>:<port>`, the base URL to reach the service over DMSG.
    pub fn dmsg_url(&self) -> Option<String> {
        self.dmsg_address.map(|a| format!("dmsg://{a}"))
    }
}

/// The services of the network, each present when the bootstrapper's config names it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Services {
    /// dmsg-discovery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dmsg_discovery: Option<ServiceInfo>,
    /// Transport discovery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport_discovery: Option<ServiceInfo>,
    /// Address resolver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address_resolver: Option<ServiceInfo>,
    /// Route finder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_finder: Option<ServiceInfo>,
    /// Uptime tracker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime_tracker: Option<ServiceInfo>,
    /// Service discovery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_discovery: Option<ServiceInfo>,
}

/// The DMSG servers, as signed dmsg-discovery entries (a node can verify them and seed its DMSG
/// client with them, then reach every service over DMSG).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DmsgServers {
    /// Server entries (signature verified by the bootstrapper too), most free first.
    pub entries: Vec<Entry>,
    /// Whether the list is current.
    pub status: Freshness,
    /// Unix ms of the last successful fetch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<u64>,
    /// Why the last fetch failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The answer to `GET /config`: what a new node needs to join the network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkConfig {
    /// The services.
    pub services: Services,
    /// The DMSG servers.
    pub dmsg_servers: DmsgServers,
    /// Route setup nodes' keys.
    #[serde(default)]
    pub route_setup_nodes: Vec<PublicKey>,
    /// Transport setup nodes' keys.
    #[serde(default)]
    pub transport_setup: Vec<PublicKey>,
    /// Keys allowed to ask for surveys.
    #[serde(default)]
    pub survey_whitelist: Vec<PublicKey>,
    /// STUN servers (`host:port`).
    #[serde(default)]
    pub stun_servers: Vec<String>,
    /// DNS server for VPN clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_server: Option<String>,
}

/// `Option<Addr>` as an optional `"pk:port"` string.
mod opt_addr {
    use serde::{Deserialize, Deserializer, Serializer};
    use skytower_transports::dmsg::wire::Addr;

    pub(super) fn serialize<S: Serializer>(a: &Option<Addr>, s: S) -> Result<S::Ok, S::Error> {
        match a {
            Some(a) => s.collect_str(a),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Addr>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(s) => s.parse().map(Some).map_err(serde::de::Error::custom),
            None => Ok(None),
        }
    }
}
