//! Configuration ([`Config`]), the command-line flags that build it ([`Args`]) and start-up
//! errors ([`RunError`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::cli::parse_duration as duration;
pub use crate::svcmode::Mode;
use crate::svcmode::{SvcArgs, SvcError};
use crate::ttl_store::{StoreSpec, TtlStoreError};

use super::udp::UdpConfig;

/// Default listen address (`--addr`): TCP for HTTP and UDP for SUDPH, on the same port number.
pub const DEFAULT_ADDR: &str = "127.0.0.1:9093";
/// Default shutdown grace period (`--grace`).
pub const DEFAULT_GRACE: &str = "5s";
/// Default Redis key namespace (`--redis-prefix`).
pub const DEFAULT_REDIS_PREFIX: &str = "address-resolver:";

/// Everything the resolver needs. [`Config::default`] is the production default on
/// `127.0.0.1:9093`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// HTTP listen address (`--addr`); the UDP socket takes the same IP and port number unless
    /// [`udp_addr`](Self::udp_addr) says otherwise.
    pub addr: SocketAddr,
    /// `--mode http|dmsg|dual`: where the HTTP API is served. The UDP side always listens on
    /// UDP.
    pub mode: Mode,
    /// DMSG key file (`--key`; modes dmsg and dual).
    pub key: Option<PathBuf>,
    /// dmsg-discovery URL (`--discovery`; modes dmsg and dual).
    pub discovery: Option<String>,
    /// DMSG port of the API (`--dmsg-port`, default 80).
    pub dmsg_port: u16,
    /// Prometheus metrics listener (`--metrics`).
    pub metrics: Option<SocketAddr>,
    /// Shutdown grace period (`--grace`, default 5 s).
    pub grace: Duration,
    /// The UDP (SUDPH) address (`--udp-addr`); default: the bound HTTP address's IP and port
    /// (`--addr` in mode dmsg).
    pub udp_addr: Option<SocketAddr>,
    /// `memory` (default) or `redis://…` (`--store`).
    pub store: StoreSpec,
    /// Key namespace in Redis (`--redis-prefix`).
    pub redis_prefix: String,
    /// Most bindings in the embedded store (`--max-bindings`, default 100 000).
    pub max_bindings: usize,
    /// Bindings expire this long after their last write or heartbeat (`--binding-ttl`,
    /// default 5 min).
    pub binding_ttl: Duration,
    /// Accept non-public addresses (loopback, private, link-local) for bindings, and a declared
    /// `public_ip` on binds over DMSG (`--allow-loopback`: local networks and tests).
    pub allow_loopback: bool,
    /// The UDP side's limits (handshake queue, store operations).
    pub udp: UdpConfig,
    /// Signed requests: accepted clock difference (`--timestamp-window`, default 30 s).
    pub timestamp_window: Duration,
    /// Largest request body (default 16 KiB; larger gets 413).
    pub max_body_bytes: usize,
    /// Deadline of one HTTP request (default 10 s; then 408).
    pub request_timeout: Duration,
    /// HTTP requests handled at once; more get 503 (default 1024).
    pub max_in_flight: usize,
    /// Most keys listed per transport by `GET /transports` (default 10 000).
    pub max_list: usize,
    /// How often expired bindings are purged from the embedded store (default 30 s).
    pub purge_interval: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            addr: SocketAddr::from(([127, 0, 0, 1], 9093)),
            mode: Mode::Http,
            key: None,
            discovery: None,
            dmsg_port: crate::svcmode::DEFAULT_DMSG_PORT,
            metrics: None,
            grace: Duration::from_secs(5),
            udp_addr: None,
            store: StoreSpec::Memory,
            redis_prefix: DEFAULT_REDIS_PREFIX.to_owned(),
            max_bindings: 100_000,
            binding_ttl: Duration::from_secs(300),
            allow_loopback: false,
            udp: UdpConfig::default(),
            timestamp_window: Duration::from_secs(30),
            max_body_bytes: 16 * 1024,
            request_timeout: Duration::from_secs(10),
            max_in_flight: 1024,
            max_list: 10_000,
            purge_interval: Duration::from_secs(30),
        }
    }
}

/// Why the resolver could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The service mode failed (key, discovery, bind, listeners).
    #[error(transparent)]
    Svc(#[from] SvcError),
    /// The store could not be opened.
    #[error("opening the binding store: {0}")]
    Store(#[from] TtlStoreError),
    /// The UDP socket could not be bound.
    #[error("binding UDP {addr}: {source}")]
    Udp {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A configuration value out of range.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The runtime could not be built.
    #[error("starting the runtime: {0}")]
    Runtime(#[from] std::io::Error),
}

impl Config {
    /// Checks the numbers.
    ///
    /// # Errors
    ///
    /// [`RunError::Config`] naming the flag.
    pub fn validate(&self) -> Result<(), RunError> {
        let positive = [
            ("--binding-ttl", self.binding_ttl),
            ("--timestamp-window", self.timestamp_window),
            ("--request-timeout", self.request_timeout),
            ("--purge-interval", self.purge_interval),
            ("--handshake-timeout", self.udp.handshake_timeout),
        ];
        for (flag, d) in positive {
            if d.is_zero() {
                return Err(RunError::Config(format!("{flag} must be positive")));
            }
        }
        if self.binding_ttl < Duration::from_secs(1) {
            return Err(RunError::Config(
                "--binding-ttl must be at least 1s (it is announced in whole seconds)".into(),
            ));
        }
        let counts = [
            ("--max-bindings", self.max_bindings),
            ("--max-in-flight", self.max_in_flight),
            ("--handshake-concurrency", self.udp.handshake_concurrency),
            ("--max-store-ops", self.udp.max_store_ops),
        ];
        for (flag, n) in counts {
            if n == 0 {
                return Err(RunError::Config(format!("{flag} must be positive")));
            }
        }
        if self.max_body_bytes < 1024 {
            return Err(RunError::Config("--max-body must be at least 1024".into()));
        }
        Ok(())
    }
}

/// The `skytower address-resolver` flags: the shared service-mode flags ([`SvcArgs`]; here
/// `--addr` defaults to `127.0.0.1:9093` and `--grace` to `5s`) and the resolver's own.
#[derive(Clone, Debug, clap::Args)]
#[command(
    mut_arg("addr", |a| a.default_value(DEFAULT_ADDR).help(
        "HTTP listen address; the UDP (SUDPH) socket takes the same IP and port number \
         unless --udp-addr is given"
    )),
    mut_arg("grace", |a| a.default_value(DEFAULT_GRACE)),
)]
pub struct Args {
    /// The shared service-mode flags.
    #[command(flatten)]
    pub svc: SvcArgs,
    /// UDP address of the SUDPH handshakes (default: the HTTP address's IP and port).
    #[arg(long, value_name = "ADDR")]
    pub udp_addr: Option<SocketAddr>,
    /// `memory` (embedded, default) or `redis://host:port[/db]`.
    #[arg(long, default_value = "memory")]
    pub store: StoreSpec,
    /// Key prefix in Redis.
    #[arg(long, default_value = DEFAULT_REDIS_PREFIX)]
    pub redis_prefix: String,
    /// Most bindings in the embedded store.
    #[arg(long, default_value_t = 100_000)]
    pub max_bindings: usize,
    /// Bindings expire this long after their last refresh.
    #[arg(long, default_value = "5m", value_parser = duration)]
    pub binding_ttl: Duration,
    /// Accept loopback and other non-public addresses (local networks and tests).
    #[arg(long)]
    pub allow_loopback: bool,
    /// Most SUDPH handshakes running at once.
    #[arg(long, default_value_t = 64)]
    pub handshake_concurrency: usize,
    /// Most SUDPH handshakes waiting for a slot (beyond: refused at once).
    #[arg(long, default_value_t = 256)]
    pub handshake_queue: usize,
    /// Time limit of one SUDPH handshake, and lifetime of a challenge.
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub handshake_timeout: Duration,
    /// Most heartbeat/unbind store operations at once (more are dropped).
    #[arg(long, default_value_t = 256)]
    pub max_store_ops: usize,
    /// Accepted clock difference of signed requests.
    #[arg(long, default_value = "30s", value_parser = duration)]
    pub timestamp_window: Duration,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = 16 * 1024)]
    pub max_body: usize,
    /// Deadline of one HTTP request.
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub request_timeout: Duration,
    /// HTTP requests handled at once (more get 503).
    #[arg(long, default_value_t = 1024)]
    pub max_in_flight: usize,
    /// Most keys listed per transport by `GET /transports`.
    #[arg(long, default_value_t = 10_000)]
    pub max_list: usize,
    /// How often expired bindings are purged from the embedded store.
    #[arg(long, default_value = "30s", value_parser = duration)]
    pub purge_interval: Duration,
}

impl From<Args> for Config {
    fn from(a: Args) -> Self {
        Config {
            addr: a.svc.addr,
            mode: a.svc.mode,
            key: a.svc.key,
            discovery: a.svc.discovery,
            dmsg_port: a.svc.dmsg_port,
            metrics: a.svc.metrics,
            grace: a.svc.grace,
            udp_addr: a.udp_addr,
            store: a.store,
            redis_prefix: a.redis_prefix,
            max_bindings: a.max_bindings,
            binding_ttl: a.binding_ttl,
            allow_loopback: a.allow_loopback,
            udp: UdpConfig {
                handshake_concurrency: a.handshake_concurrency,
                handshake_queue: a.handshake_queue,
                handshake_timeout: a.handshake_timeout,
                allow_loopback: a.allow_loopback,
                max_store_ops: a.max_store_ops,
                ..UdpConfig::default()
            },
            timestamp_window: a.timestamp_window,
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
        assert!(cfg.validate().is_ok());
    }

    #[test]
    fn flags_parse() {
        let cfg: Config = Cli::parse_from([
            "x",
            "--addr",
            "0.0.0.0:1",
            "--udp-addr",
            "0.0.0.0:2",
            "--store",
            "redis://127.0.0.1:6379/2",
            "--binding-ttl",
            "90s",
            "--allow-loopback",
            "--handshake-concurrency",
            "8",
            "--mode",
            "dual",
        ])
        .args
        .into();
        assert_eq!(cfg.binding_ttl, Duration::from_secs(90));
        assert_eq!(cfg.udp_addr, Some("0.0.0.0:2".parse().unwrap()));
        assert!(matches!(cfg.store, StoreSpec::Redis(_)));
        assert!(cfg.allow_loopback && cfg.udp.allow_loopback);
        assert_eq!(cfg.udp.handshake_concurrency, 8);
        assert_eq!(cfg.mode, Mode::Dual);
    }

    #[test]
    fn bad_numbers_name_their_flag() {
        let cases = [
            (
                Config {
                    binding_ttl: Duration::ZERO,
                    ..Config::default()
                },
                "--binding-ttl must be positive",
            ),
            (
                Config {
                    binding_ttl: Duration::from_millis(500),
                    ..Config::default()
                },
                "--binding-ttl must be at least 1s",
            ),
            (
                Config {
                    udp: UdpConfig {
                        handshake_concurrency: 0,
                        ..UdpConfig::default()
                    },
                    ..Config::default()
                },
                "--handshake-concurrency must be positive",
            ),
            (
                Config {
                    max_body_bytes: 10,
                    ..Config::default()
                },
                "--max-body must be at least 1024",
            ),
        ];
        for (cfg, msg) in cases {
            let err = cfg.validate().unwrap_err().to_string();
            assert!(err.contains(msg), "{err}");
        }
    }
}
