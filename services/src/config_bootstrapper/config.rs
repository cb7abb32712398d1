//! The config file ([`BootstrapConfig`], TOML), the flags ([`Args`]) and start-up errors
//! ([`RunError`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use skytower_transports::identity::PublicKey;

use super::types::ServiceKind;
use crate::dmsg_server::ConfigError;
use crate::dmsg_server::config::{duration, parse_toml, validate_host_port};
use crate::svcmode::SvcArgs;

/// Default listen address (`--addr`).
pub const DEFAULT_ADDR: &str = "127.0.0.1:9082";
/// Most entries of each list in the config file.
pub const MAX_LIST: usize = 1024;

/// The services' HTTP URLs (the `[services]` table). Each one's `/health` is scraped for its
/// DMSG address.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceUrls {
    /// dmsg-discovery (also where the DMSG server list comes from).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dmsg_discovery: Option<String>,
    /// Transport discovery.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transport_discovery: Option<String>,
    /// Address resolver.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address_resolver: Option<String>,
    /// Route finder.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route_finder: Option<String>,
    /// Uptime tracker.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uptime_tracker: Option<String>,
    /// Service discovery.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_discovery: Option<String>,
}

impl ServiceUrls {
    /// The URL of `kind`, if configured.
    pub fn get(&self, kind: ServiceKind) -> Option<&str> {
        match kind {
            ServiceKind::DmsgDiscovery => self.dmsg_discovery.as_deref(),
            ServiceKind::TransportDiscovery => self.transport_discovery.as_deref(),
            ServiceKind::AddressResolver => self.address_resolver.as_deref(),
            ServiceKind::RouteFinder => self.route_finder.as_deref(),
            ServiceKind::UptimeTracker => self.uptime_tracker.as_deref(),
            ServiceKind::ServiceDiscovery => self.service_discovery.as_deref(),
        }
    }

    /// `(kind, url)` of each configured service, in [`ServiceKind::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (ServiceKind, &str)> {
        ServiceKind::ALL
            .into_iter()
            .filter_map(|kind| self.get(kind).map(|url| (kind, url)))
    }
}

/// How services are scraped (the `[scrape]` table).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScrapeConfig {
    /// How often every `/health` and the DMSG server list are fetched (default 5 min).
    #[serde(with = "duration")]
    pub interval: Duration,
    /// Deadline of one fetch, connect to last byte (default 5 s).
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// Largest `/health` answer read (default 64 KiB).
    pub max_health_bytes: usize,
    /// Largest DMSG server list read (default 1 MiB).
    pub max_server_list_bytes: usize,
    /// Most DMSG servers served (default 64).
    pub max_dmsg_servers: usize,
}

impl Default for ScrapeConfig {
    fn default() -> Self {
        ScrapeConfig {
            interval: Duration::from_secs(300),
            timeout: Duration::from_secs(5),
            max_health_bytes: 64 * 1024,
            max_server_list_bytes: 1 << 20,
            max_dmsg_servers: 64,
        }
    }
}

/// The config bootstrapper's config file (TOML; unknown fields are errors naming the field).
///
/// ```
/// use skytower_services::config_bootstrapper::BootstrapConfig;
///
/// let config = BootstrapConfig::from_toml_str(r#"
///     stun_servers = ["stun.example.org:3478"]
///     [services]
///     dmsg_discovery = "http://127.0.0.1:9090"
///     uptime_tracker = "http://127.0.0.1:9096"
///     [scrape]
///     interval = "2m"
/// "#)?;
/// assert_eq!(config.services.iter().count(), 2);
/// assert_eq!(config.scrape.interval, std::time::Duration::from_secs(120));
///
/// let err = BootstrapConfig::from_toml_str("[services]\nuptime_trackr = \"http://x:1\"").unwrap_err();
/// assert!(err.to_string().contains("unknown field `uptime_trackr`"), "{err}");
/// # Ok::<(), skytower_services::dmsg_server::ConfigError>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BootstrapConfig {
    /// Route setup nodes' keys.
    pub route_setup_nodes: Vec<PublicKey>,
    /// Transport setup nodes' keys.
    pub transport_setup: Vec<PublicKey>,
    /// Keys allowed to ask for surveys.
    pub survey_whitelist: Vec<PublicKey>,
    /// STUN servers, `host:port`.
    pub stun_servers: Vec<String>,
    /// DNS server for VPN clients.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_server: Option<String>,
    /// The services.
    pub services: ServiceUrls,
    /// Scraping.
    pub scrape: ScrapeConfig,
}

/// The config key of a service's URL (`services.uptime_tracker`).
fn service_field(kind: ServiceKind) -> &'static str {
    match kind {
        ServiceKind::DmsgDiscovery => "services.dmsg_discovery",
        ServiceKind::TransportDiscovery => "services.transport_discovery",
        ServiceKind::AddressResolver => "services.address_resolver",
        ServiceKind::RouteFinder => "services.route_finder",
        ServiceKind::UptimeTracker => "services.uptime_tracker",
        ServiceKind::ServiceDiscovery => "services.service_discovery",
    }
}

/// Checks an `http://host[:port]` URL without a path (the service's base URL).
fn validate_base_url(s: &str) -> Result<(), String> {
    let uri: http::Uri = s
        .parse()
        .map_err(|e| format!("{s:?} is not a valid URL: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!(
            "{s:?}: must be an http:// URL (its /health is scraped over HTTP)"
        ));
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("{s:?}: missing host"));
    }
    if uri.path_and_query().is_some_and(|pq| pq.as_str() != "/") {
        return Err(format!("{s:?}: must not have a path"));
    }
    Ok(())
}

impl BootstrapConfig {
    /// Parses and validates a TOML config.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Parse`] (syntax, unknown field, wrong type, bad key) or
    /// [`ConfigError::Invalid`], naming the field.
    pub fn from_toml_str(toml: &str) -> Result<Self, ConfigError> {
        let config: Self = parse_toml("<config>", toml)?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates the file at `path`.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Read`], [`ConfigError::Parse`] or [`ConfigError::Invalid`].
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let config: Self = parse_toml(&path.display().to_string(), &text)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every value; the error names the field.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] for the first bad field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (kind, url) in self.services.iter() {
            validate_base_url(url).map_err(|r| ConfigError::invalid(service_field(kind), r))?;
        }
        for (field, len) in [
            ("route_setup_nodes", self.route_setup_nodes.len()),
            ("transport_setup", self.transport_setup.len()),
            ("survey_whitelist", self.survey_whitelist.len()),
            ("stun_servers", self.stun_servers.len()),
        ] {
            if len > MAX_LIST {
                return Err(ConfigError::invalid(
                    field,
                    format!("at most {MAX_LIST} entries ({len} given)"),
                ));
            }
        }
        for stun in &self.stun_servers {
            validate_host_port(stun).map_err(|r| ConfigError::invalid("stun_servers", r))?;
        }
        if let Some(dns) = &self.dns_server {
            if dns.is_empty() || dns.len() > 253 || dns.chars().any(char::is_whitespace) {
                return Err(ConfigError::invalid(
                    "dns_server",
                    "must be a host name or address (1-253 characters, no spaces)",
                ));
            }
        }
        let sc = &self.scrape;
        if sc.interval.is_zero() {
            return Err(ConfigError::invalid(
                "scrape.interval",
                "must be greater than 0",
            ));
        }
        if sc.timeout.is_zero() || sc.timeout > sc.interval {
            return Err(ConfigError::invalid(
                "scrape.timeout",
                "must be greater than 0 and at most scrape.interval",
            ));
        }
        if !(1024..=16 << 20).contains(&sc.max_health_bytes) {
            return Err(ConfigError::invalid(
                "scrape.max_health_bytes",
                "must be between 1024 and 16777216",
            ));
        }
        if !(1024..=64 << 20).contains(&sc.max_server_list_bytes) {
            return Err(ConfigError::invalid(
                "scrape.max_server_list_bytes",
                "must be between 1024 and 67108864",
            ));
        }
        if !(1..=MAX_LIST).contains(&sc.max_dmsg_servers) {
            return Err(ConfigError::invalid(
                "scrape.max_dmsg_servers",
                format!("must be between 1 and {MAX_LIST}"),
            ));
        }
        Ok(())
    }
}

/// Why the bootstrapper could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The service mode could not start or serve.
    #[error(transparent)]
    Svc(#[from] crate::svcmode::SvcError),
    /// The config file is missing, malformed or invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A bad flag.
    #[error("invalid setting: {0}")]
    Flag(String),
}

/// The `skytower config-bootstrapper` flags: the shared service-mode flags ([`SvcArgs`], here
/// `--addr` defaults to `127.0.0.1:9082`), the config file, and the rate limit.
#[derive(Clone, Debug, clap::Args)]
#[command(mut_arg("addr", |a| a.default_value(DEFAULT_ADDR)))]
pub struct Args {
    /// The shared service-mode flags.
    #[command(flatten)]
    pub svc: SvcArgs,
    /// The config file (TOML, see docs/api/config-bootstrapper.md).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Requests per second per client IP (DMSG: per key).
    #[arg(long, default_value_t = 10)]
    pub rate_limit: u32,
    /// Burst per client.
    #[arg(long, default_value_t = 50)]
    pub rate_burst: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(toml: &str) -> ConfigError {
        BootstrapConfig::from_toml_str(toml).unwrap_err()
    }

    #[test]
    fn defaults_and_a_full_file() {
        let c = BootstrapConfig::from_toml_str("").unwrap();
        assert_eq!(c, BootstrapConfig::default());
        let pk = skytower_transports::identity::SecretKey::generate()
            .unwrap()
            .public_key()
            .to_string();
        let c = BootstrapConfig::from_toml_str(&format!(
            r#"
            route_setup_nodes = ["{pk}"]
            transport_setup = ["{pk}"]
            survey_whitelist = []
            stun_servers = ["stun.example.org:3478", "[2001:db8::1]:3478"]
            dns_server = "1.1.1.1"
            [services]
            dmsg_discovery = "http://127.0.0.1:9090"
            transport_discovery = "http://tpd.example.org:9091/"
            address_resolver = "http://127.0.0.1:9093"
            route_finder = "http://127.0.0.1:9092"
            uptime_tracker = "http://127.0.0.1:9096"
            service_discovery = "http://127.0.0.1:9098"
            [scrape]
            interval = "1m"
            timeout = "2s"
            max_health_bytes = 4096
            max_server_list_bytes = 65536
            max_dmsg_servers = 8
            "#
        ))
        .unwrap();
        assert_eq!(c.services.iter().count(), 6);
        assert_eq!(c.route_setup_nodes[0].to_string(), pk);
        assert_eq!(c.scrape.max_dmsg_servers, 8);
    }

    #[test]
    fn errors_name_the_field() {
        let e = err("[scrape]\nintervall = \"1m\"");
        assert_eq!(e.field(), Some("scrape.intervall"), "{e}");
        assert!(e.to_string().contains("unknown field `intervall`"), "{e}");
        let e = err("stun = []");
        assert!(e.to_string().contains("unknown field `stun`"), "{e}");
        let e = err("route_setup_nodes = [\"nope\"]");
        assert_eq!(e.field(), Some("route_setup_nodes[0]"), "{e}");
        let e = err("[scrape]\ninterval = \"soon\"");
        assert!(e.to_string().contains("scrape.interval"), "{e}");
        assert!(e.to_string().contains("invalid duration"), "{e}");
        let e = err("[services]\nroute_finder = \"https://rf.example.org\"");
        assert_eq!(e.field(), Some("services.route_finder"), "{e}");
        assert!(e.to_string().contains("must be an http:// URL"), "{e}");
        let e = err("[services]\nroute_finder = \"http://rf.example.org/api\"");
        assert!(e.to_string().contains("must not have a path"), "{e}");
        let e = err("stun_servers = [\"stun.example.org\"]");
        assert_eq!(e.field(), Some("stun_servers"), "{e}");
        let e = err("[scrape]\ntimeout = \"10m\"");
        assert_eq!(e.field(), Some("scrape.timeout"), "{e}");
        let e = err("[scrape]\nmax_health_bytes = 10");
        assert_eq!(e.field(), Some("scrape.max_health_bytes"), "{e}");
        let e = err("dns_server = \"\"");
        assert_eq!(e.field(), Some("dns_server"), "{e}");
        let many: Vec<String> = (0..1025).map(|i| format!("\"h{i}:1\"")).collect();
        let e = err(&format!("stun_servers = [{}]", many.join(",")));
        assert!(e.to_string().contains("at most 1024"), "{e}");
    }
}
