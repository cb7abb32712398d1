//! Configuration ([`Config`]), its flags ([`Args`]) and start-up errors ([`RunError`]).

use std::time::Duration;

use crate::cli::parse_duration as duration;
pub use crate::svcmode::Mode;
use crate::svcmode::SvcArgs;
use crate::ttl_store::{StoreSpec, TtlStoreError};

/// Default listen address (`--addr`).
pub const DEFAULT_ADDR: &str = "127.0.0.1:9091";
/// Default shutdown grace period (`--grace`).
pub const DEFAULT_GRACE: &str = "5s";
/// Default Redis key namespace (`--redis-prefix`); the route finder reads the same one.
pub const DEFAULT_NAMESPACE: &str = "tpd:";

/// Everything the service needs besides the service-mode flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// `--store`: `memory` (embedded, default) or `redis://…`.
    pub store: StoreSpec,
    /// `--redis-prefix`: key namespace in Redis.
    pub namespace: String,
    /// `--entry-ttl`: how long a registration lives (default 5 min; nodes re-register every
    /// 90 s).
    pub entry_ttl: Duration,
    /// `--max-entries`: most transports in the embedded store (default 1 000 000).
    pub max_entries: usize,
    /// `--max-batch`: most entries in one `POST /transports` (default 64).
    pub max_batch: usize,
    /// `--max-list`: most records in one listing (default 1 000 000).
    pub max_list: usize,
    /// `--timestamp-window`: accepted clock difference of signed requests (default 30 s).
    pub timestamp_window: Duration,
    /// `--max-body`: largest request body (default 256 KiB).
    pub max_body: usize,
    /// `--request-timeout`: deadline of one request (default 10 s).
    pub request_timeout: Duration,
    /// `--max-in-flight`: requests handled at once (default 1024; more get 503).
    pub max_in_flight: usize,
    /// `--max-seen`: most signed-request nonces remembered inside the window (default 65 536).
    pub max_seen: usize,
    /// `--purge-interval`: how often expired records are purged (default 30 s).
    pub purge_interval: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            store: StoreSpec::Memory,
            namespace: DEFAULT_NAMESPACE.to_owned(),
            entry_ttl: Duration::from_secs(300),
            max_entries: 1_000_000,
            max_batch: 64,
            max_list: 1_000_000,
            timestamp_window: Duration::from_secs(30),
            max_body: 256 * 1024,
            request_timeout: Duration::from_secs(10),
            max_in_flight: 1024,
            max_seen: 65_536,
            purge_interval: Duration::from_secs(30),
        }
    }
}

impl Config {
    /// Checks the numbers.
    ///
    /// # Errors
    ///
    /// [`RunError::Config`] naming the flag.
    pub fn validate(&self) -> Result<(), RunError> {
        for (flag, d) in [
            ("--entry-ttl", self.entry_ttl),
            ("--timestamp-window", self.timestamp_window),
            ("--request-timeout", self.request_timeout),
            ("--purge-interval", self.purge_interval),
        ] {
            if d.is_zero() {
                return Err(RunError::Config(format!("{flag} must be positive")));
            }
        }
        for (flag, n) in [
            ("--max-entries", self.max_entries),
            ("--max-batch", self.max_batch),
            ("--max-list", self.max_list),
            ("--max-in-flight", self.max_in_flight),
            ("--max-seen", self.max_seen),
        ] {
            if n == 0 {
                return Err(RunError::Config(format!("{flag} must be positive")));
            }
        }
        if self.max_body < 1024 {
            return Err(RunError::Config("--max-body must be at least 1024".into()));
        }
        Ok(())
    }
}

/// The `skytower transport-discovery` flags: the shared service-mode flags ([`SvcArgs`]; here
/// `--addr` defaults to `127.0.0.1:9091` and `--grace` to `5s`) and the service's own.
#[derive(Clone, Debug, clap::Args)]
#[command(
    mut_arg("addr", |a| a.default_value(DEFAULT_ADDR)),
    mut_arg("grace", |a| a.default_value(DEFAULT_GRACE)),
)]
pub struct Args {
    /// The shared service-mode flags.
    #[command(flatten)]
    pub svc: SvcArgs,
    /// `memory` (embedded, default) or `redis://host:port[/db]` (shared with other instances
    /// and the route finder).
    #[arg(long, default_value = "memory")]
    pub store: StoreSpec,
    /// Key namespace in Redis.
    #[arg(long, default_value = DEFAULT_NAMESPACE)]
    pub redis_prefix: String,
    /// Lifetime of a registration (nodes re-register every 90 s).
    #[arg(long, default_value = "5m", value_parser = duration)]
    pub entry_ttl: Duration,
    /// Most transports in the embedded store.
    #[arg(long, default_value_t = 1_000_000)]
    pub max_entries: usize,
    /// Most entries in one registration.
    #[arg(long, default_value_t = 64)]
    pub max_batch: usize,
    /// Most records in one listing.
    #[arg(long, default_value_t = 1_000_000)]
    pub max_list: usize,
    /// Accepted clock difference of signed requests.
    #[arg(long, default_value = "30s", value_parser = duration)]
    pub timestamp_window: Duration,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = 256 * 1024)]
    pub max_body: usize,
    /// Deadline of one request.
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub request_timeout: Duration,
    /// Requests handled at once (more get 503).
    #[arg(long, default_value_t = 1024)]
    pub max_in_flight: usize,
    /// Most signed-request nonces remembered inside the timestamp window.
    #[arg(long, default_value_t = 65_536)]
    pub max_seen: usize,
    /// How often expired records are purged.
    #[arg(long, default_value = "30s", value_parser = duration)]
    pub purge_interval: Duration,
}

impl From<&Args> for Config {
    fn from(a: &Args) -> Self {
        Config {
            store: a.store.clone(),
            namespace: a.redis_prefix.clone(),
            entry_ttl: a.entry_ttl,
            max_entries: a.max_entries,
            max_batch: a.max_batch,
            max_list: a.max_list,
            timestamp_window: a.timestamp_window,
            max_body: a.max_body,
            request_timeout: a.request_timeout,
            max_in_flight: a.max_in_flight,
            max_seen: a.max_seen,
            purge_interval: a.purge_interval,
        }
    }
}

/// Why a service (transport discovery or route finder) could not start, or stopped with an
/// error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The service mode could not start or serve (`--mode dual` without `--key`, a bind
    /// failure...).
    #[error(transparent)]
    Svc(#[from] crate::svcmode::SvcError),
    /// The configuration is inconsistent.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The store could not be opened.
    #[error("cannot open the store: {0}")]
    Store(#[from] TtlStoreError),
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    type Cli = crate::cli::TestCli<Args>;

    #[test]
    fn flag_defaults_match_config_defaults() {
        let cli = Cli::parse_from(["x"]);
        assert_eq!(Config::from(&cli.args), Config::default());
        assert_eq!(cli.args.svc.addr, DEFAULT_ADDR.parse().unwrap());
        assert_eq!(cli.args.svc.grace, Duration::from_secs(5));
        assert_eq!(cli.args.svc.mode, Mode::Http);
    }

    #[test]
    fn flags_parse_and_bad_values_are_refused() {
        let cli = Cli::parse_from([
            "x",
            "--store",
            "redis://127.0.0.1:6379/1",
            "--entry-ttl",
            "2m",
            "--mode",
            "dual",
            "--max-batch",
            "8",
        ]);
        let cfg = Config::from(&cli.args);
        assert!(matches!(cfg.store, StoreSpec::Redis(_)));
        assert_eq!(cfg.entry_ttl, Duration::from_secs(120));
        assert_eq!(cfg.max_batch, 8);
        assert_eq!(cli.args.svc.mode, Mode::Dual);
        cfg.validate().unwrap();
        let zero = Config {
            entry_ttl: Duration::ZERO,
            ..Config::default()
        };
        assert_eq!(
            zero.validate().unwrap_err().to_string(),
            "invalid configuration: --entry-ttl must be positive"
        );
        let zero = Config {
            max_batch: 0,
            ..Config::default()
        };
        assert!(
            zero.validate()
                .unwrap_err()
                .to_string()
                .contains("--max-batch")
        );
        assert!(Cli::try_parse_from(["x", "--store", "mysql://x"]).is_err());
        assert!(Cli::try_parse_from(["x", "--entry-ttl", "soon"]).is_err());
    }
}
