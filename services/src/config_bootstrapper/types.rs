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

impl Services {
    /// The service of `kind`.
    pub fn get(&self, kind: ServiceKind) -> Option<&ServiceInfo> {
        match kind {
            ServiceKind::DmsgDiscovery => self.dmsg_discovery.as_ref(),
            ServiceKind::TransportDiscovery => self.transport_discovery.as_ref(),
            ServiceKind::AddressResolver => self.address_resolver.as_ref(),
            ServiceKind::RouteFinder => self.route_finder.as_ref(),
            ServiceKind::UptimeTracker => self.uptime_tracker.as_ref(),
            ServiceKind::ServiceDiscovery => self.service_discovery.as_ref(),
        }
    }

    /// The slot of `kind`.
    pub fn slot_mut(&mut self, kind: ServiceKind) -> &mut Option<ServiceInfo> {
        match kind {
            ServiceKind::DmsgDiscovery => &mut self.dmsg_discovery,
            ServiceKind::TransportDiscovery => &mut self.transport_discovery,
            ServiceKind::AddressResolver => &mut self.address_resolver,
            ServiceKind::RouteFinder => &mut self.route_finder,
            ServiceKind::UptimeTracker => &mut self.uptime_tracker,
            ServiceKind::ServiceDiscovery => &mut self.service_discovery,
        }
    }
}

impl ServiceInfo {
    /// `dmsg://<pk>:<port>`, the base URL to reach the service over DMSG.
    pub fn dmsg_url(&self) -> Option<String> {
        self.dmsg_address.map(|a| format!("dmsg://{a}"))
    }
}

/// The services a bootstrapper knows about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ServiceKind {
    /// dmsg-discovery.
    DmsgDiscovery,
    /// Transport discovery.
    TransportDiscovery,
    /// Address resolver.
    AddressResolver,
    /// Route finder.
    RouteFinder,
    /// Uptime tracker.
    UptimeTracker,
    /// Service discovery.
    ServiceDiscovery,
}

impl ServiceKind {
    /// Every kind, in the order of the JSON members.
    pub const ALL: [ServiceKind; 6] = [
        ServiceKind::DmsgDiscovery,
        ServiceKind::TransportDiscovery,
        ServiceKind::AddressResolver,
        ServiceKind::RouteFinder,
        ServiceKind::UptimeTracker,
        ServiceKind::ServiceDiscovery,
    ];

    /// The JSON member and config key (`uptime_tracker`).
    pub const fn name(self) -> &'static str {
        match self {
            ServiceKind::DmsgDiscovery => "dmsg_discovery",
            ServiceKind::TransportDiscovery => "transport_discovery",
            ServiceKind::AddressResolver => "address_resolver",
            ServiceKind::RouteFinder => "route_finder",
            ServiceKind::UptimeTracker => "uptime_tracker",
            ServiceKind::ServiceDiscovery => "service_discovery",
        }
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
