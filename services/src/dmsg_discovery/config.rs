//! Configuration ([`Config`]) and the command-line flags that build it ([`Args`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::error::RunError;
use super::store::{RedisConfig, StoreConfig};
use crate::cli::parse_duration as duration;
pub use crate::svcmode::Mode;
use crate::svcmode::SvcArgs;

/// Default listen address of dmsg-discovery (`--addr`).
pub const DEFAULT_ADDR: &str = "127.0.0.1:9090";
/// Default shutdown grace period of dmsg-discovery (`--grace`).
pub const DEFAULT_GRACE: &str = "5s";

/// Which store holds the entries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum StoreSpec {
    /// The embedded in-memory store.
    #[default]
    Memory,
    /// A Redis server.
    Redis(RedisConfig),
}

impl std::str::FromStr for StoreSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "memory" {
            Ok(StoreSpec::Memory)
        } else if s.starts_with("redis://") || s.starts_with("rediss://") {
            Ok(StoreSpec::Redis(RedisConfig::new(s)))
        } else {
            Err(format!("expected `memory` or a redis://… URL, got {s:?}"))
        }
    }
}

/// Everything the service needs. [`Config::default`] is the production default on
/// `127.0.0.1:9090`.
///
/// The first fields are the service-mode flags shared by every service
/// ([`SvcArgs`](crate::svcmode::SvcArgs)); the rest are the discovery's own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// HTTP listen address (`--addr`).
    pub addr: SocketAddr,
    /// `--mode`: `http` (default) or `dual`; `dmsg` is refused (discovery is the bootstrap
    /// dependency and must stay reachable over HTTP).
    pub mode: Mode,
    /// The service's DMSG identity key file (`--key`; required by `--mode dual`).
    pub key: Option<PathBuf>,
    /// The dmsg-discovery the DMSG side registers in (`--discovery`, mode dual). Default: this
    /// service itself, at `http://<bound HTTP address>` (an unspecified bind address such as
    /// `0.0.0.0` is reached over loopback).
    pub discovery: Option<String>,
    /// DMSG port served on in mode dual (`--dmsg-port`, default 80).
    pub dmsg_port: u16,
    /// Serve Prometheus metrics on this address (`--metrics`).
    pub metrics: Option<SocketAddr>,
    /// The store (`--store`).
    pub store: StoreSpec,
    /// TTLs and bounds of the store (its `tombstone_ttl` is raised to twice
    /// `timestamp_window` at start-up: a delete or entry timestamped up to one window ahead
    /// stays replayable for up to two windows).
    pub store_config: StoreConfig,
    /// Entries and deletes must be timestamped within ± this of the service's clock (default
    /// 60 s); also how long deletes are remembered.
    pub timestamp_window: Duration,
    /// Requests per second allowed per key (default 100).
    pub rate_per_second: u32,
    /// Burst allowed per key (default 200).
    pub rate_burst: u32,
    /// Accept loopback / unspecified server addresses (local networks, tests).
    pub allow_loopback: bool,
    /// Largest request body (default 64 KiB; larger gets 413).
    pub max_body_bytes: usize,
    /// Deadline of a whole request (default 10 s; then 408).
    pub request_timeout: Duration,
    /// Requests handled at once; more are refused with 503 (default 1024).
    pub max_in_flight: usize,
    /// Most entries returned by `all_servers` and `entries` (default 10 000).
    pub max_list: usize,
    /// How often expired entries and idle rate-limit state are purged (default 10 s).
    pub purge_interval: Duration,
    /// How long in-flight requests may finish after shutdown is requested (`--grace`,
    /// default 5 s).
    pub grace: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            addr: SocketAddr::from(([127, 0, 0, 1], 9090)),
            mode: Mode::Http,
            key: None,
            discovery: None,
            dmsg_port: crate::svcmode::DEFAULT_DMSG_PORT,
            metrics: None,
            store: StoreSpec::Memory,
            store_config: StoreConfig::default(),
            timestamp_window: Duration::from_secs(60),
            rate_per_second: 100,
            rate_burst: 200,
            allow_loopback: false,
            max_body_bytes: 64 * 1024,
            request_timeout: Duration::from_secs(10),
            max_in_flight: 1024,
            max_list: 10_000,
            purge_interval: Duration::from_secs(10),
            grace: Duration::from_secs(5),
        }
    }
}

impl Config {
    /// Checks the mode and the numbers; called by [`DiscoveryServer::bind`](super::DiscoveryServer::bind).
    ///
    /// # Errors
    ///
    /// [`RunError::DmsgOnly`] for `--mode dmsg`, [`RunError::Config`] for a bad number.
    /// (`--mode dual` without `--key` is refused when the server starts, with the service
    /// mode's message.)
    pub fn validate(&self) -> Result<(), RunError> {
        if self.mode == Mode::Dmsg {
            return Err(RunError::DmsgOnly);
        }
        let positive = [
            ("--server-ttl", self.store_config.server_ttl),
            ("--client-ttl", self.store_config.client_ttl),
            ("--timestamp-window", self.timestamp_window),
            ("--request-timeout", self.request_timeout),
            ("--purge-interval", self.purge_interval),
        ];
        for (flag, d) in positive {
            if d.is_zero() {
                return Err(RunError::Config(format!("{flag} must be positive")));
            }
        }
        if self.max_body_bytes < 1024 {
            return Err(RunError::Config("--max-body must be at least 1024".into()));
        }
        if self.max_in_flight == 0 || self.store_config.max_entries == 0 {
            return Err(RunError::Config(
                "--max-in-flight and --max-entries must be positive".into(),
            ));
        }
        Ok(())
    }
}

/// The `skytower dmsg-discovery` flags: the service-mode flags shared by every service
/// ([`SvcArgs`]: `--addr`, `--key`, `--discovery`, `--dmsg-port`, `--mode`, `--grace`,
/// `--metrics`; here `--addr` defaults to `127.0.0.1:9090` and `--grace` to `5s`) and the
/// discovery's own.
#[derive(Clone, Debug, clap::Args)]
#[command(
    mut_arg("addr", |a| a.default_value(DEFAULT_ADDR)),
    mut_arg("grace", |a| a.default_value(DEFAULT_GRACE)),
    mut_arg("discovery", |a| a.help(
        "dmsg-discovery the DMSG side registers in (mode dual); default: this service itself, \
         at http://<bound --addr>"
    )),
)]
pub struct Args {
    /// The shared service-mode flags (`--mode dmsg` is refused at start-up).
    #[command(flatten)]
    pub svc: SvcArgs,
    /// `memory` (embedded, default) or `redis://host:port[/db]`.
    #[arg(long, default_value = "memory")]
    pub store: StoreSpec,
    /// Key prefix in Redis.
    #[arg(long, default_value = "dmsgd:")]
    pub redis_prefix: String,
    /// Lifetime of server entries.
    #[arg(long, default_value = "2m", value_parser = duration)]
    pub server_ttl: Duration,
    /// Lifetime of client entries.
    #[arg(long, default_value = "60m", value_parser = duration)]
    pub client_ttl: Duration,
    /// Accepted clock difference of entry and delete timestamps.
    #[arg(long, default_value = "60s", value_parser = duration)]
    pub timestamp_window: Duration,
    /// Most entries in the embedded store.
    #[arg(long, default_value_t = 100_000)]
    pub max_entries: usize,
    /// Requests per second per key (client IP; entry owner for writes).
    #[arg(long, default_value_t = 100)]
    pub rate_limit: u32,
    /// Burst per key.
    #[arg(long, default_value_t = 200)]
    pub rate_burst: u32,
    /// Accept loopback server addresses (local networks and tests).
    #[arg(long)]
    pub allow_loopback: bool,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = 64 * 1024)]
    pub max_body: usize,
    /// Deadline of one request.
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub request_timeout: Duration,
    /// Requests handled at once (more get 503).
    #[arg(long, default_value_t = 1024)]
    pub max_in_flight: usize,
    /// Most entries returned by `all_servers` and `entries`.
    #[arg(long, default_value_t = 10_000)]
    pub max_list: usize,
    /// How often expired entries are purged.
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub purge_interval: Duration,
}

impl From<Args> for Config {
    fn from(a: Args) -> Self {
        let store = match a.store {
            StoreSpec::Redis(mut r) => {
                r.prefix = a.redis_prefix;
                StoreSpec::Redis(r)
            }
            StoreSpec::Memory => StoreSpec::Memory,
        };
        Config {
            addr: a.svc.addr,
            mode: a.svc.mode,
            key: a.svc.key,
            discovery: a.svc.discovery,
            dmsg_port: a.svc.dmsg_port,
            metrics: a.svc.metrics,
            grace: a.svc.grace,
            store,
            store_config: StoreConfig {
                server_ttl: a.server_ttl,
                client_ttl: a.client_ttl,
                tombstone_ttl: a.timestamp_window * 2,
                max_entries: a.max_entries,
            },
            timestamp_window: a.timestamp_window,
            rate_per_second: a.rate_limit,
            rate_burst: a.rate_burst,
            allow_loopback: a.allow_loopback,
            max_body_bytes: a.max_body,
            request_timeout: a.request_timeout,
            max_in_flight: a.max_in_flight,
            max_list: a.max_list,
            purge_interval: a.purge_interval,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    type Cli = crate::cli::TestCli<Args>;

    #[test]
    fn flag_defaults_match_config_defaults() {
        let cfg: Config = Cli::parse_from(["x"]).args.into();
        assert_eq!(cfg, Config::default());
    }

    #[test]
    fn flags_parse() {
        let cli = Cli::parse_from([
            "x",
            "--addr",
            "0.0.0.0:1",
            "--store",
            "redis://127.0.0.1:6379/2",
            "--redis-prefix",
            "p:",
            "--server-ttl",
            "30s",
            "--mode",
            "dual",
        ]);
        let cfg: Config = cli.args.into();
        assert_eq!(cfg.store_config.server_ttl, Duration::from_secs(30));
        match &cfg.store {
            StoreSpec::Redis(r) => assert_eq!(r.prefix, "p:"),
            StoreSpec::Memory => panic!("expected redis"),
        }
        assert_eq!(cfg.mode, Mode::Dual);
        assert!(cfg.validate().is_ok());
        assert!("mysql://x".parse::<StoreSpec>().is_err());
    }

    #[test]
    fn shared_service_flags_parse() {
        let cli = Cli::parse_from([
            "x",
            "--mode",
            "dual",
            "--key",
            "/tmp/k.key",
            "--discovery",
            "http://127.0.0.1:1",
            "--dmsg-port",
            "8080",
            "--grace",
            "3s",
            "--metrics",
            "127.0.0.1:9100",
        ]);
        let cfg: Config = cli.args.into();
        assert_eq!(cfg.mode, Mode::Dual);
        assert_eq!(cfg.key, Some(PathBuf::from("/tmp/k.key")));
        assert_eq!(cfg.discovery.as_deref(), Some("http://127.0.0.1:1"));
        assert_eq!(cfg.dmsg_port, 8080);
        assert_eq!(cfg.grace, Duration::from_secs(3));
        assert_eq!(cfg.metrics, Some("127.0.0.1:9100".parse().unwrap()));
        // The discovery's own defaults for the shared flags.
        let cfg: Config = Cli::parse_from(["x"]).args.into();
        assert_eq!(cfg.addr, DEFAULT_ADDR.parse().unwrap());
        assert_eq!(cfg.grace, Duration::from_secs(5));
        assert_eq!(cfg.mode, Mode::Http);
        assert_eq!(cfg.dmsg_port, 80);
        // dmsg parses (it is refused by validate, with the reason), other values do not.
        let cfg: Config = Cli::parse_from(["x", "--mode", "dmsg"]).args.into();
        assert!(matches!(cfg.validate(), Err(RunError::DmsgOnly)));
        assert!(Cli::try_parse_from(["x", "--mode", "tcp"]).is_err());
    }

    #[test]
    fn dmsg_mode_is_refused_with_the_reason() {
        let cfg = Config {
            mode: Mode::Dmsg,
            ..Config::default()
        };
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("bootstrap dependency"), "{err}");
        assert!(err.contains("HTTP"), "{err}");
    }
}
