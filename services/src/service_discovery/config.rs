//! The service's own settings ([`Config`]) and the command-line flags ([`Args`]: the shared
//! service-mode flags plus these).

use std::time::Duration;

use crate::cli::parse_duration as duration;
use crate::svcmode::{SvcArgs, SvcConfig};
use crate::ttl_store::StoreSpec;

use super::RunError;

/// Default listen address (`--addr`).
pub const DEFAULT_ADDR: &str = "127.0.0.1:9098";
/// Key namespace in Redis.
pub const REDIS_NAMESPACE: &str = "service-discovery:";

/// The service's settings (the transport side is the service mode's
/// [`SvcConfig`]). [`Config::default`] is what the flags default to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// `--store`: `memory` (embedded, default) or `redis://…` (namespace `service-discovery:`).
    pub store: StoreSpec,
    /// `--ttl`: entries expire this long after their last registration (default 5 min).
    pub ttl: Duration,
    /// `--max-per-key`: live entries one key may have (default 16).
    pub max_per_key: usize,
    /// `--max-entries`: live entries in all (default 100 000).
    pub max_entries: usize,
    /// `--max-list`: most entries one query answers; also the default `quantity`
    /// (default 1000).
    pub max_list: usize,
    /// `--max-body`: largest request body (default 16 KiB).
    pub max_body: usize,
    /// `--signature-window`: how far a signed request's timestamp may be from the service's
    /// clock (default 30 s).
    pub signature_window: Duration,
    /// `--rate-limit`: writes per second allowed per key (default 5).
    pub rate_per_second: u32,
    /// `--rate-burst`: write burst per key (default 20).
    pub rate_burst: u32,
    /// `--request-timeout`: deadline of one request (default 10 s; then 408).
    pub request_timeout: Duration,
    /// `--max-in-flight`: requests handled at once (default 1024; more get 503).
    pub max_in_flight: usize,
    /// `--purge-interval`: how often expired entries are purged (default 10 s).
    pub purge_interval: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            store: StoreSpec::Memory,
            ttl: Duration::from_secs(300),
            max_per_key: 16,
            max_entries: 100_000,
            max_list: 1000,
            max_body: 16 * 1024,
            signature_window: Duration::from_secs(30),
            rate_per_second: 5,
            rate_burst: 20,
            request_timeout: Duration::from_secs(10),
            max_in_flight: 1024,
            purge_interval: Duration::from_secs(10),
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
        let positive_durations = [
            ("--ttl", self.ttl),
            ("--signature-window", self.signature_window),
            ("--request-timeout", self.request_timeout),
            ("--purge-interval", self.purge_interval),
        ];
        for (flag, d) in positive_durations {
            if d.is_zero() {
                return Err(RunError::Config(format!("{flag} must be positive")));
            }
        }
        let positive_counts = [
            ("--max-per-key", self.max_per_key),
            ("--max-entries", self.max_entries),
            ("--max-list", self.max_list),
            ("--max-in-flight", self.max_in_flight),
        ];
        for (flag, n) in positive_counts {
            if n == 0 {
                return Err(RunError::Config(format!("{flag} must be at least 1")));
            }
        }
        if self.max_body < 1024 {
            return Err(RunError::Config("--max-body must be at least 1024".into()));
        }
        Ok(())
    }
}

/// The `skytower service-discovery` flags: the shared service-mode flags ([`SvcArgs`]; here
/// `--addr` defaults to `127.0.0.1:9098`) and the service's own.
#[derive(Clone, Debug, clap::Args)]
#[command(mut_arg("addr", |a| a.default_value(DEFAULT_ADDR)))]
pub struct Args {
    /// The shared service-mode flags.
    #[command(flatten)]
    pub svc: SvcArgs,
    /// `memory` (embedded, default) or `redis://host:port[/db]` (keys under `service-discovery:`).
    #[arg(long, default_value = "memory")]
    pub store: StoreSpec,
    /// Entries expire this long after their last registration.
    #[arg(long, default_value = "5m", value_parser = duration)]
    pub ttl: Duration,
    /// Live entries one key may have.
    #[arg(long, default_value_t = 16)]
    pub max_per_key: usize,
    /// Live entries in all.
    #[arg(long, default_value_t = 100_000)]
    pub max_entries: usize,
    /// Most entries one query answers (also the default `quantity`).
    #[arg(long, default_value_t = 1000)]
    pub max_list: usize,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = 16 * 1024)]
    pub max_body: usize,
    /// Accepted clock difference of signed requests.
    #[arg(long, default_value = "30s", value_parser = duration)]
    pub signature_window: Duration,
    /// Writes per second per key.
    #[arg(long, default_value_t = 5)]
    pub rate_limit: u32,
    /// Write burst per key.
    #[arg(long, default_value_t = 20)]
    pub rate_burst: u32,
    /// Deadline of one request.
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub request_timeout: Duration,
    /// Requests handled at once (more get 503).
    #[arg(long, default_value_t = 1024)]
    pub max_in_flight: usize,
    /// How often expired entries are purged.
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub purge_interval: Duration,
}

impl Args {
    /// The service's own settings.
    pub fn config(&self) -> Config {
        Config {
            store: self.store.clone(),
            ttl: self.ttl,
            max_per_key: self.max_per_key,
            max_entries: self.max_entries,
            max_list: self.max_list,
            max_body: self.max_body,
            signature_window: self.signature_window,
            rate_per_second: self.rate_limit,
            rate_burst: self.rate_burst,
            request_timeout: self.request_timeout,
            max_in_flight: self.max_in_flight,
            purge_interval: self.purge_interval,
        }
    }

    /// Checks everything and loads the key: the service-mode configuration and the service's.
    ///
    /// # Errors
    ///
    /// [`RunError::Config`] for a bad number; [`RunError::Svc`] for `--mode dmsg|dual` without
    /// `--key`/`--discovery`, an unreadable key, or a bad discovery URL.
    pub fn resolve(&self) -> Result<(SvcConfig, Config), RunError> {
        let config = self.config();
        config.validate()?;
        Ok((self.svc.resolve()?, config))
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::svcmode::Mode;

    type Cli = crate::cli::TestCli<Args>;

    #[test]
    fn flag_defaults_match_config_defaults() {
        let args = Cli::parse_from(["x"]).args;
        assert_eq!(args.config(), Config::default());
        let (svc, _) = args.resolve().unwrap();
        assert_eq!(svc.addr, DEFAULT_ADDR.parse().unwrap());
        assert_eq!(svc.mode, Mode::Http);
    }

    #[test]
    fn flags_parse() {
        let args = Cli::parse_from([
            "x",
            "--store",
            "redis://127.0.0.1:6379/2",
            "--ttl",
            "90s",
            "--max-per-key",
            "3",
            "--addr",
            "0.0.0.0:1",
        ])
        .args;
        let (svc, config) = args.resolve().unwrap();
        assert_eq!(config.ttl, Duration::from_secs(90));
        assert_eq!(config.max_per_key, 3);
        assert!(matches!(config.store, StoreSpec::Redis(_)));
        assert_eq!(svc.addr, "0.0.0.0:1".parse().unwrap());
        assert!(Cli::try_parse_from(["x", "--store", "mysql://x"]).is_err());
        assert!(Cli::try_parse_from(["x", "--ttl", "soon"]).is_err());
    }

    #[test]
    fn bad_numbers_name_their_flag() {
        for (flags, want) in [
            (vec!["--ttl", "0s"], "--ttl must be positive"),
            (
                vec!["--max-per-key", "0"],
                "--max-per-key must be at least 1",
            ),
            (vec!["--max-list", "0"], "--max-list must be at least 1"),
            (vec!["--max-body", "10"], "--max-body must be at least 1024"),
        ] {
            let args = Cli::parse_from(std::iter::once("x").chain(flags)).args;
            let err = args.resolve().unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
        }
    }

    #[test]
    fn dmsg_modes_need_a_key() {
        let args = Cli::parse_from(["x", "--mode", "dmsg"]).args;
        let err = args.resolve().unwrap_err().to_string();
        assert!(err.contains("--mode dmsg needs a DMSG key"), "{err}");
    }
}
