//! Command-line flags of `dmsg-server` (and of `skytower dmsg-server`, which flattens the same
//! struct).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::config::{ConfigError, DmsgServerConfig, validate_host_port, validate_http_url};

/// Extra help printed after the flags by both binaries.
pub const AFTER_HELP: &str = "\
Precedence: flags override the config file; the config file overrides the defaults.
[file: NAME] after a flag names its field in the config file.
The config file format is documented in docs/dmsg-server.md; --print-config prints the
effective config as TOML.

On start the server prints one line on stdout, `listening <bound addr> <public key>`, and logs
to stderr (RUST_LOG sets the level; default info). SIGINT or SIGTERM shuts it down gracefully
within --grace and exits 0 (a second signal exits at once, status 130). Errors in the config, the key file or the bind exit 1.

With --discovery / `discovery` set, the server registers its entry (public_addr, free sessions)
with that dmsg-discovery, refreshes it every minute and when its free sessions change, and
deletes it on shutdown.";

/// Flags of the DMSG relay server. Every value flag overrides the same field of the config
/// file (named in brackets); [`resolve`](Self::resolve) merges them.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct DmsgServerArgs {
    /// TOML config file (format: docs/dmsg-server.md). Without it the defaults apply.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// TCP address to listen on; port 0 picks a free port [file: listen; default 0.0.0.0:8081].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// host:port advertised to discovery [file: public_addr; default: the bound address].
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_host_port)]
    pub public_addr: Option<String>,

    /// Secret key file of the server; its public key is the server's address
    /// [file: key_file; default dmsg-server.key].
    #[arg(long, visible_alias = "key-file", value_name = "FILE")]
    pub key: Option<PathBuf>,

    /// Create the key file (mode 0600) if it does not exist, and log its public key
    /// [file: generate_key]. Without it a missing key file is an error.
    #[arg(long)]
    pub generate_key: bool,

    /// dmsg-discovery URL to register with, http:// [file: discovery; default: not registered].
    #[arg(long, value_name = "URL", value_parser = parse_url)]
    pub discovery: Option<String>,

    /// Sessions at once, at least 1 [file: limits.max_sessions; default 2048].
    #[arg(long, value_name = "N", value_parser = parse_at_least_one)]
    pub max_sessions: Option<usize>,

    /// Relayed streams at once per session, 1-65535 [file: limits.max_streams_per_session;
    /// default 2048].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub max_streams_per_session: Option<u16>,

    /// Session handshakes in flight, at least 1 [file: limits.handshake_concurrency; default 64].
    #[arg(long, value_name = "N", value_parser = parse_at_least_one)]
    pub handshake_concurrency: Option<usize>,

    /// Session handshakes waiting for a slot; 0: none wait [file: limits.handshake_queue;
    /// default 1024].
    #[arg(long, value_name = "N")]
    pub handshake_queue: Option<usize>,

    /// Deadline of a session handshake from accept, e.g. 10s [file: limits.handshake_timeout;
    /// default 10s].
    #[arg(long, value_name = "DURATION", value_parser = parse_positive_duration)]
    pub handshake_timeout: Option<Duration>,

    /// Deadline of each step of the stream forward path [file: limits.forward_timeout; default 10s].
    #[arg(long, value_name = "DURATION", value_parser = parse_positive_duration)]
    pub forward_timeout: Option<Duration>,

    /// Close a bridge idle this long, e.g. 5m [file: limits.bridge_idle_timeout; default 5m].
    #[arg(long, value_name = "DURATION", value_parser = parse_positive_duration)]
    pub bridge_idle_timeout: Option<Duration>,

    /// Bound on the graceful shutdown after SIGINT/SIGTERM; 0 closes at once
    /// [file: shutdown_grace; default 10s].
    #[arg(long, visible_alias = "shutdown-grace", value_name = "DURATION", value_parser = parse_duration)]
    pub grace: Option<Duration>,

    /// Period of the stats log line [file: stats_interval; default 60s].
    #[arg(long, value_name = "DURATION", value_parser = parse_positive_duration)]
    pub stats_interval: Option<Duration>,

    /// Print the effective config (file + flags + defaults) as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
}

impl DmsgServerArgs {
    /// The effective config: the file (if `--config`) or the defaults, with every given flag
    /// applied on top, then validated.
    ///
    /// # Errors
    ///
    /// Whatever loading the file or [`DmsgServerConfig::validate`] reports.
    pub fn resolve(&self) -> Result<DmsgServerConfig, ConfigError> {
        let mut c = match &self.config {
            Some(path) => DmsgServerConfig::load_unvalidated(path)?,
            None => DmsgServerConfig::default(),
        };
        self.apply(&mut c);
        c.validate()?;
        Ok(c)
    }

    /// Applies the given flags to `config` (no validation).
    pub fn apply(&self, config: &mut DmsgServerConfig) {
        fn set<T: Clone>(dst: &mut T, src: &Option<T>) {
            if let Some(v) = src {
                *dst = v.clone();
            }
        }
        set(&mut config.listen, &self.listen);
        if self.public_addr.is_some() {
            config.public_addr.clone_from(&self.public_addr);
        }
        set(&mut config.key_file, &self.key);
        config.generate_key |= self.generate_key;
        if self.discovery.is_some() {
            config.discovery.clone_from(&self.discovery);
        }
        set(&mut config.shutdown_grace, &self.grace);
        set(&mut config.stats_interval, &self.stats_interval);
        let l = &mut config.limits;
        set(&mut l.max_sessions, &self.max_sessions);
        set(
            &mut l.max_streams_per_session,
            &self.max_streams_per_session,
        );
        set(&mut l.handshake_concurrency, &self.handshake_concurrency);
        set(&mut l.handshake_queue, &self.handshake_queue);
        set(&mut l.handshake_timeout, &self.handshake_timeout);
        set(&mut l.forward_timeout, &self.forward_timeout);
        set(&mut l.bridge_idle_timeout, &self.bridge_idle_timeout);
    }
}

fn parse_host_port(s: &str) -> Result<String, String> {
    validate_host_port(s).map(|()| s.to_owned())
}

fn parse_url(s: &str) -> Result<String, String> {
    validate_http_url(s).map(|()| s.to_owned())
}

fn parse_at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_owned()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (e.g. \"10s\", \"5m\", \"1h 30m\")"))
}

fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err("must be greater than 0".to_owned());
    }
    Ok(d)
}
