//! Configuration ([`Config`]) and flags ([`Args`]).

use std::time::Duration;

use crate::cli::parse_duration as duration;
use crate::svcmode::SvcArgs;
pub use crate::transport_discovery::RunError;
use crate::ttl_store::StoreSpec;

/// Default listen address (`--addr`).
pub const DEFAULT_ADDR: &str = "127.0.0.1:9092";
/// Default shutdown grace period (`--grace`).
pub const DEFAULT_GRACE: &str = "5s";
/// Default transport discovery URL (`--transport-discovery`).
pub const DEFAULT_TPD_URL: &str = "http://127.0.0.1:9091";

/// Where the route finder reads the transports from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceSpec {
    /// The transport discovery's API (`GET /all-transports`) at this `http://` URL.
    Api(String),
    /// The transport discovery's Redis store, read directly (`--store redis://…`), under this
    /// namespace.
    Store(StoreSpec, String),
}

/// Everything the service needs besides the service-mode flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Where the transports come from.
    pub source: SourceSpec,
    /// `--refresh`: how often the graph snapshot is rebuilt (default 5 s). Transports that
    /// expire in between are never routed over (each keeps its deadline).
    pub refresh: Duration,
    /// `--max-transports`: most transports in a snapshot (default 2 000 000).
    pub max_transports: usize,
    /// `--max-pairs`: most source/destination pairs in one request (default 16).
    pub max_pairs: usize,
    /// `--max-paths`: most paths per pair a request may ask for (default 16; a request asks
    /// for 5 unless it says otherwise).
    pub max_paths: usize,
    /// `--max-hops`: the longest path a request may ask for (default 32; a request asks for
    /// 10 unless it says otherwise).
    pub max_hops: u16,
    /// `--max-work`: search budget per pair, in adjacency entries scanned (default 1 000 000).
    pub max_work: u64,
    /// `--max-body`: largest request body (default 64 KiB).
    pub max_body: usize,
    /// `--request-timeout`: deadline of one request, and of one fetch of the transports
    /// (default 10 s).
    pub request_timeout: Duration,
    /// `--max-in-flight`: requests handled at once (default 256; more get 503).
    pub max_in_flight: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            source: SourceSpec::Api(DEFAULT_TPD_URL.to_owned()),
            refresh: Duration::from_secs(5),
            max_transports: 2_000_000,
            max_pairs: 16,
            max_paths: 16,
            max_hops: 32,
            max_work: 1_000_000,
            max_body: 64 * 1024,
            request_timeout: Duration::from_secs(10),
            max_in_flight: 256,
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
            ("--refresh", self.refresh),
            ("--request-timeout", self.request_timeout),
        ] {
            if d.is_zero() {
                return Err(RunError::Config(format!("{flag} must be positive")));
            }
        }
        for (flag, n) in [
            ("--max-transports", self.max_transports as u64),
            ("--max-pairs", self.max_pairs as u64),
            ("--max-paths", self.max_paths as u64),
            ("--max-hops", u64::from(self.max_hops)),
            ("--max-work", self.max_work),
            ("--max-in-flight", self.max_in_flight as u64),
        ] {
            if n == 0 {
                return Err(RunError::Config(format!("{flag} must be positive")));
            }
        }
        if self.max_hops > 1000 {
            return Err(RunError::Config("--max-hops must be at most 1000".into()));
        }
        if self.max_body < 1024 {
            return Err(RunError::Config("--max-body must be at least 1024".into()));
        }
        if let SourceSpec::Api(url) = &self.source
            && !url.starts_with("http://")
        {
            return Err(RunError::Config(format!(
                "--transport-discovery must be an http:// URL, got {url:?}"
            )));
        }
        Ok(())
    }
}

/// The `skytower route-finder` flags: the shared service-mode flags ([`SvcArgs`]; here `--addr`
/// defaults to `127.0.0.1:9092` and `--grace` to `5s`) and the service's own.
#[derive(Clone, Debug, clap::Args)]
#[command(
    mut_arg("addr", |a| a.default_value(DEFAULT_ADDR)),
    mut_arg("grace", |a| a.default_value(DEFAULT_GRACE)),
)]
pub struct Args {
    /// The shared service-mode flags.
    #[command(flatten)]
    pub svc: SvcArgs,
    /// The transport discovery to read the transports from (`GET /all-transports`).
    #[arg(long, default_value = DEFAULT_TPD_URL, value_name = "URL")]
    pub transport_discovery: String,
    /// Read the transport discovery's Redis store directly instead (`redis://host:port[/db]`,
    /// the same as its `--store`).
    #[arg(long, value_name = "redis://…")]
    pub store: Option<StoreSpec>,
    /// Key namespace of the transport discovery in Redis (its `--redis-prefix`).
    #[arg(long, default_value = crate::transport_discovery::DEFAULT_NAMESPACE)]
    pub redis_prefix: String,
    /// How often the graph is rebuilt from the transports.
    #[arg(long, default_value = "5s", value_parser = duration)]
    pub refresh: std::time::Duration,
    /// Most transports in the graph.
    #[arg(long, default_value_t = 2_000_000)]
    pub max_transports: usize,
    /// Most source/destination pairs per request.
    #[arg(long, default_value_t = 16)]
    pub max_pairs: usize,
    /// Most paths per pair a request may ask for.
    #[arg(long, default_value_t = 16)]
    pub max_paths: usize,
    /// Longest path a request may ask for.
    #[arg(long, default_value_t = 32)]
    pub max_hops: u16,
    /// Search budget per pair (adjacency entries scanned).
    #[arg(long, default_value_t = 1_000_000)]
    pub max_work: u64,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = 64 * 1024)]
    pub max_body: usize,
    /// Deadline of one request and of one fetch of the transports.
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub request_timeout: std::time::Duration,
    /// Requests handled at once (more get 503).
    #[arg(long, default_value_t = 256)]
    pub max_in_flight: usize,
}

impl From<&Args> for Config {
    fn from(a: &Args) -> Self {
        let source = match &a.store {
            Some(spec) => SourceSpec::Store(spec.clone(), a.redis_prefix.clone()),
            None => SourceSpec::Api(a.transport_discovery.clone()),
        };
        Config {
            source,
            refresh: a.refresh,
            max_transports: a.max_transports,
            max_pairs: a.max_pairs,
            max_paths: a.max_paths,
            max_hops: a.max_hops,
            max_work: a.max_work,
            max_body: a.max_body,
            request_timeout: a.request_timeout,
            max_in_flight: a.max_in_flight,
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
        assert_eq!(Config::from(&cli.args), Config::default());
        assert_eq!(cli.args.svc.addr, DEFAULT_ADDR.parse().unwrap());
    }

    #[test]
    fn store_flag_reads_redis_directly_and_bad_values_are_refused() {
        let cli = Cli::parse_from([
            "x",
            "--store",
            "redis://127.0.0.1:1/0",
            "--redis-prefix",
            "p:",
        ]);
        let cfg = Config::from(&cli.args);
        assert!(matches!(&cfg.source, SourceSpec::Store(StoreSpec::Redis(_), ns) if ns == "p:"));
        let cfg = Config {
            source: SourceSpec::Api("dmsg://x:80".into()),
            ..Config::default()
        };
        assert!(
            cfg.validate()
                .unwrap_err()
                .to_string()
                .contains("http:// URL")
        );
        let cfg = Config {
            max_pairs: 0,
            ..Config::default()
        };
        assert_eq!(
            cfg.validate().unwrap_err().to_string(),
            "invalid configuration: --max-pairs must be positive"
        );
    }
}
