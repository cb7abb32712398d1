//! Configuration ([`TrackerConfig`]), the command-line flags ([`Args`]) and start-up errors
//! ([`RunError`]).

use std::time::Duration;

use crate::auth::AuthConfig;
use crate::cli::parse_duration as duration;
use crate::svcmode::SvcArgs;
use crate::ttl_store::StoreSpec;

use super::store::{Accounting, UptimeStoreError};

/// Default listen address (`--addr`).
pub const DEFAULT_ADDR: &str = "127.0.0.1:9096";
/// Default Redis key prefix (`--redis-prefix`).
pub const DEFAULT_REDIS_PREFIX: &str = "uptime-tracker:";

/// The tracker's own settings (the service-mode ones are [`SvcConfig`](crate::svcmode::SvcConfig)).
/// [`TrackerConfig::default`] is the production default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackerConfig {
    /// The store (`--store memory|redis://…`; the Redis key prefix is in its `RedisConfig`).
    pub store: StoreSpec,
    /// Credit cap (= the online threshold, `--online-threshold`, default 6 min), retention
    /// (`--retention`, default 30 days) and the embedded store's bound (`--max-nodes`).
    pub accounting: Accounting,
    /// How often nodes are told to send heartbeats (`--heartbeat-interval`, default 5 min;
    /// must be below the online threshold).
    pub heartbeat_interval: Duration,
    /// Longest date range of a query, in days (`--max-days`, default 31).
    pub max_days: u32,
    /// Most keys in one `GET /uptimes?keys=` (`--max-keys`, default 1000).
    pub max_keys: usize,
    /// Most nodes one `GET /uptimes` returns (`--max-list`, default 10 000).
    pub max_list: usize,
    /// Requests per second per client IP (DMSG: per key), and per node key for heartbeats
    /// (`--rate-limit`, default 10).
    pub rate_per_second: u32,
    /// Burst (`--rate-burst`, default 50).
    pub rate_burst: u32,
    /// Largest request body (default 4 KiB).
    pub max_body: usize,
    /// Deadline of a request (default 10 s; then 408).
    pub request_timeout: Duration,
    /// Requests handled at once; more get 503 (default 1024).
    pub max_in_flight: usize,
    /// How often data past the retention is purged (default 10 min).
    pub purge_interval: Duration,
    /// Signature checks of heartbeats (timestamp window, replay set).
    pub auth: AuthConfig,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            store: StoreSpec::Memory,
            accounting: Accounting::default(),
            heartbeat_interval: Duration::from_secs(300),
            max_days: 31,
            max_keys: 1000,
            max_list: 10_000,
            rate_per_second: 10,
            rate_burst: 50,
            max_body: 4096,
            request_timeout: Duration::from_secs(10),
            max_in_flight: 1024,
            purge_interval: Duration::from_secs(600),
            auth: AuthConfig {
                max_body: 4096,
                ..AuthConfig::default()
            },
        }
    }
}

impl TrackerConfig {
    /// Checks the values.
    ///
    /// # Errors
    ///
    /// [`RunError::Config`] naming the flag.
    pub fn validate(&self) -> Result<(), RunError> {
        let bad = |m: &str| Err(RunError::Config(m.to_owned()));
        for (flag, d) in [
            ("--online-threshold", self.accounting.credit_cap),
            ("--retention", self.accounting.retention),
            ("--heartbeat-interval", self.heartbeat_interval),
            ("--request-timeout", self.request_timeout),
            ("--purge-interval", self.purge_interval),
        ] {
            if d.is_zero() {
                return Err(RunError::Config(format!("{flag} must be positive")));
            }
        }
        if self.heartbeat_interval >= self.accounting.credit_cap {
            return bad(
                "--heartbeat-interval must be shorter than --online-threshold (else nodes flap \
                 offline between heartbeats)",
            );
        }
        if self.max_days == 0 || self.max_keys == 0 || self.max_list == 0 {
            return bad("--max-days, --max-keys and --max-list must be positive");
        }
        if self.accounting.max_nodes == 0 || self.max_in_flight == 0 {
            return bad("--max-nodes and --max-in-flight must be positive");
        }
        if self.max_body < 256 {
            return bad("the body limit must be at least 256 bytes");
        }
        Ok(())
    }
}

/// Why the tracker could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The service mode could not start or serve (e.g. `--mode dual` without `--key`).
    #[error(transparent)]
    Svc(#[from] crate::svcmode::SvcError),
    /// A bad setting.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The store could not be opened.
    #[error("cannot open the store: {0}")]
    Store(#[from] UptimeStoreError),
}

/// The `skytower uptime-tracker` flags: the shared service-mode flags ([`SvcArgs`], here
/// `--addr` defaults to `127.0.0.1:9096`) and the tracker's own.
#[derive(Clone, Debug, clap::Args)]
#[command(mut_arg("addr", |a| a.default_value(DEFAULT_ADDR)))]
pub struct Args {
    /// The shared service-mode flags.
    #[command(flatten)]
    pub svc: SvcArgs,
    /// `memory` (embedded, default) or `redis://host:port[/db]`.
    #[arg(long, default_value = "memory")]
    pub store: StoreSpec,
    /// Key prefix in Redis.
    #[arg(long, default_value = DEFAULT_REDIS_PREFIX)]
    pub redis_prefix: String,
    /// How long data is kept after the heartbeat that wrote it (e.g. `30days`).
    #[arg(long, default_value = "30days", value_parser = duration)]
    pub retention: Duration,
    /// A node is online this long after a heartbeat; also the most one heartbeat credits.
    #[arg(long, default_value = "6m", value_parser = duration)]
    pub online_threshold: Duration,
    /// The heartbeat period nodes are told to use (shorter than --online-threshold).
    #[arg(long, default_value = "5m", value_parser = duration)]
    pub heartbeat_interval: Duration,
    /// Most nodes in the embedded store.
    #[arg(long, default_value_t = 200_000)]
    pub max_nodes: usize,
    /// Longest date range of a query, in days.
    #[arg(long, default_value_t = 31)]
    pub max_days: u32,
    /// Most keys in one `GET /uptimes?keys=`.
    #[arg(long, default_value_t = 1000)]
    pub max_keys: usize,
    /// Most nodes one `GET /uptimes` returns.
    #[arg(long, default_value_t = 10_000)]
    pub max_list: usize,
    /// Requests per second per client IP (and heartbeats per node key).
    #[arg(long, default_value_t = 10)]
    pub rate_limit: u32,
    /// Burst per client IP / node key.
    #[arg(long, default_value_t = 50)]
    pub rate_burst: u32,
    /// Deadline of one request.
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub request_timeout: Duration,
    /// Requests handled at once (more get 503).
    #[arg(long, default_value_t = 1024)]
    pub max_in_flight: usize,
    /// How often data past the retention is purged.
    #[arg(long, default_value = "10m", value_parser = duration)]
    pub purge_interval: Duration,
}

impl Args {
    /// The tracker settings these flags give (the service-mode ones come from
    /// [`SvcArgs::resolve`]).
    pub fn tracker_config(&self) -> TrackerConfig {
        let store = match &self.store {
            StoreSpec::Redis(r) => {
                let mut r = r.clone();
                r.prefix.clone_from(&self.redis_prefix);
                StoreSpec::Redis(r)
            }
            StoreSpec::Memory => StoreSpec::Memory,
        };
        TrackerConfig {
            store,
            accounting: Accounting {
                credit_cap: self.online_threshold,
                retention: self.retention,
                max_nodes: self.max_nodes,
            },
            heartbeat_interval: self.heartbeat_interval,
            max_days: self.max_days,
            max_keys: self.max_keys,
            max_list: self.max_list,
            rate_per_second: self.rate_limit,
            rate_burst: self.rate_burst,
            request_timeout: self.request_timeout,
            max_in_flight: self.max_in_flight,
            purge_interval: self.purge_interval,
            ..TrackerConfig::default()
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
        let cli = Cli::parse_from(["x"]);
        assert_eq!(cli.args.tracker_config(), TrackerConfig::default());
        assert_eq!(cli.args.svc.addr, DEFAULT_ADDR.parse().unwrap());
    }

    #[test]
    fn flags_parse_and_bad_values_are_refused_naming_the_flag() {
        let cli = Cli::parse_from([
            "x",
            "--store",
            "redis://127.0.0.1:6379/1",
            "--redis-prefix",
            "ut:",
            "--retention",
            "7days",
            "--online-threshold",
            "3m",
            "--heartbeat-interval",
            "2m",
        ]);
        let cfg = cli.args.tracker_config();
        assert_eq!(cfg.accounting.retention, Duration::from_secs(7 * 86_400));
        assert_eq!(cfg.accounting.credit_cap, Duration::from_secs(180));
        match &cfg.store {
            StoreSpec::Redis(r) => assert_eq!(r.prefix, "ut:"),
            StoreSpec::Memory => panic!("expected redis"),
        }
        assert!(cfg.validate().is_ok());
        let cfg = Cli::parse_from(["x", "--heartbeat-interval", "6m"])
            .args
            .tracker_config();
        let err = cfg.validate().unwrap_err().to_string();
        assert!(
            err.contains("--heartbeat-interval must be shorter"),
            "{err}"
        );
        let cfg = Cli::parse_from(["x", "--retention", "0s"])
            .args
            .tracker_config();
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("--retention must be positive"), "{err}");
        assert!(Cli::try_parse_from(["x", "--retention", "soon"]).is_err());
    }
}
