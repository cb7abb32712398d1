//! The shared flags ([`SvcArgs`]) and the resolved configuration ([`SvcConfig`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use skytower_transports::dmsg::ClientConfig;
use skytower_transports::dmsg::disc::Discovery;
use skytower_transports::dmsg::disc_http::HttpDiscovery;
use skytower_transports::identity::SecretKey;

use super::SvcError;

/// Which transports a service answers on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Mode {
    /// Plain HTTP on `--addr` only.
    #[default]
    Http,
    /// HTTP over DMSG only (on `--dmsg-port` of the service's key); no TCP listener at all.
    Dmsg,
    /// Both: the same service on HTTP and on DMSG-HTTP.
    Dual,
}

impl Mode {
    /// Whether this mode listens on TCP.
    pub const fn http(self) -> bool {
        matches!(self, Mode::Http | Mode::Dual)
    }

    /// Whether this mode listens on DMSG (and so needs a key and a discovery).
    pub const fn dmsg(self) -> bool {
        matches!(self, Mode::Dmsg | Mode::Dual)
    }

    /// The flag value (`http`, `dmsg`, `dual`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Mode::Http => "http",
            Mode::Dmsg => "dmsg",
            Mode::Dual => "dual",
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Default HTTP listen address.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8080";
/// Default DMSG port.
pub const DEFAULT_DMSG_PORT: u16 = 80;
/// Default shutdown grace period.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);
/// Default bound on concurrently served connections (all listeners together).
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

/// The flags every service binary shares (`#[command(flatten)]` them into the binary's parser).
///
/// ```
/// use clap::Parser;
/// use skytower_services::svcmode::{Mode, SvcArgs};
///
/// #[derive(Parser)]
/// struct Cli {
///     #[command(flatten)]
///     svc: SvcArgs,
/// }
///
/// let cli = Cli::parse_from(["svc", "--addr", "127.0.0.1:0", "--grace", "3s"]);
/// let config = cli.svc.resolve().unwrap();
/// assert_eq!(config.mode, Mode::Http);
/// assert_eq!(config.grace, std::time::Duration::from_secs(3));
///
/// // dmsg and dual need a key: a clear error (the binaries print it and exit 1).
/// let cli = Cli::parse_from(["svc", "--mode", "dual"]);
/// let err = cli.svc.resolve().unwrap_err();
/// assert!(err.to_string().contains("--mode dual needs a DMSG key"), "{err}");
/// ```
#[derive(Clone, Debug, clap::Args)]
pub struct SvcArgs {
    /// HTTP listen address (modes http and dual).
    #[arg(long, default_value = DEFAULT_ADDR, value_name = "ADDR")]
    pub addr: SocketAddr,
    /// DMSG identity key file (required by modes dmsg and dual; see `skytower keygen`).
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// dmsg-discovery URL, e.g. `http://127.0.0.1:9090` (required by modes dmsg and dual).
    #[arg(long, value_name = "URL")]
    pub discovery: Option<String>,
    /// DMSG port the service listens on (modes dmsg and dual).
    #[arg(long, default_value_t = DEFAULT_DMSG_PORT, value_name = "PORT")]
    pub dmsg_port: u16,
    /// Where to serve: plain HTTP, HTTP over DMSG, or both.
    #[arg(long, value_enum, default_value_t = Mode::Http)]
    pub mode: Mode,
    /// Shutdown grace period: in-flight requests get this long to finish (e.g. `10s`, `500ms`).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub grace: Duration,
    /// Serve Prometheus text metrics on this address (`GET /metrics`), on a separate listener.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
}

impl Default for SvcArgs {
    fn default() -> Self {
        SvcArgs {
            addr: DEFAULT_ADDR
                .parse()
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8080))),
            key: None,
            discovery: None,
            dmsg_port: DEFAULT_DMSG_PORT,
            mode: Mode::Http,
            grace: DEFAULT_GRACE,
            metrics: None,
        }
    }
}

impl SvcArgs {
    /// Checks the flags, loads the key file and builds the HTTP discovery client.
    ///
    /// # Errors
    ///
    /// [`SvcError::KeyRequired`] / [`SvcError::DiscoveryRequired`] for `--mode dmsg|dual`
    /// without `--key` / `--discovery`; [`SvcError::Key`] when the key file cannot be read;
    /// [`SvcError::DiscoveryUrl`] for a bad URL.
    pub fn resolve(&self) -> Result<SvcConfig, SvcError> {
        if self.mode.dmsg() && self.key.is_none() {
            return Err(SvcError::KeyRequired { mode: self.mode });
        }
        if self.mode.dmsg() && self.discovery.is_none() {
            return Err(SvcError::DiscoveryRequired { mode: self.mode });
        }
        let key = load_key(self.mode, None, self.key.as_deref())?;
        let discovery = match (&self.discovery, self.mode.dmsg()) {
            (Some(url), true) => {
                let d = HttpDiscovery::new(url).map_err(SvcError::DiscoveryUrl)?;
                Some(Arc::new(d) as Arc<dyn Discovery>)
            }
            _ => None,
        };
        Ok(SvcConfig {
            addr: self.addr,
            key,
            discovery,
            dmsg_port: self.dmsg_port,
            mode: self.mode,
            grace: self.grace,
            metrics: self.metrics,
            ..SvcConfig::default()
        })
    }
}

/// The DMSG identity a service in `mode` serves with: none in mode http; else `given`, or the
/// key file at `path` loaded.
///
/// # Errors
///
/// [`SvcError::KeyRequired`] for a DMSG mode with neither; [`SvcError::Key`] when the file
/// cannot be read.
pub(crate) fn load_key(
    mode: Mode,
    given: Option<SecretKey>,
    path: Option<&Path>,
) -> Result<Option<SecretKey>, SvcError> {
    match (mode.dmsg(), given, path) {
        (false, _, _) => Ok(None),
        (true, Some(key), _) => Ok(Some(key)),
        (true, None, Some(path)) => {
            SecretKey::load(path)
                .map(Some)
                .map_err(|source| SvcError::Key {
                    path: path.to_owned(),
                    source,
                })
        }
        (true, None, None) => Err(SvcError::KeyRequired { mode }),
    }
}

/// Binds a TCP listener on `addr` and returns it with its bound address (the port chosen for
/// port 0).
///
/// # Errors
///
/// [`SvcError::Bind`].
pub(crate) async fn bind_tcp(
    addr: SocketAddr,
) -> Result<(tokio::net::TcpListener, SocketAddr), SvcError> {
    let bind_error = |source| SvcError::Bind { addr, source };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(bind_error)?;
    let bound = listener.local_addr().map_err(bind_error)?;
    Ok((listener, bound))
}

/// The resolved service-mode configuration: what [`serve`](super::serve) and
/// [`SvcServer::start`](super::SvcServer::start) take. Built from [`SvcArgs::resolve`], or
/// directly (tests and embedders pass their own discovery and client settings).
pub struct SvcConfig {
    /// HTTP listen address (modes http and dual).
    pub addr: SocketAddr,
    /// The DMSG identity (modes dmsg and dual).
    pub key: Option<SecretKey>,
    /// The discovery the DMSG client uses (modes dmsg and dual).
    pub discovery: Option<Arc<dyn Discovery>>,
    /// DMSG port to listen on.
    pub dmsg_port: u16,
    /// Where to serve.
    pub mode: Mode,
    /// Shutdown grace period for in-flight requests.
    pub grace: Duration,
    /// Serve Prometheus metrics on this address (see [`metrics`](super::metrics)).
    pub metrics: Option<SocketAddr>,
    /// The service version reported by `/health` (default: this crate's version).
    pub version: String,
    /// Settings of the DMSG client the service owns (default [`ClientConfig::default`]).
    pub client: ClientConfig,
    /// Most connections served at once, all listeners together; accepting waits while full.
    pub max_connections: usize,
    /// How long a connection may take to send a request's headers (default 30 s).
    pub header_read_timeout: Duration,
    /// An already-bound TCP listener to serve HTTP on instead of binding [`addr`](Self::addr)
    /// (modes http and dual; ignored in mode dmsg). Lets a service know its bound address
    /// before it starts, e.g. dmsg-discovery in dual mode registering in itself.
    pub http_listener: Option<tokio::net::TcpListener>,
}

impl Default for SvcConfig {
    fn default() -> Self {
        SvcConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            key: None,
            discovery: None,
            dmsg_port: DEFAULT_DMSG_PORT,
            mode: Mode::Http,
            grace: DEFAULT_GRACE,
            metrics: None,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            client: ClientConfig::default(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_read_timeout: Duration::from_secs(30),
            http_listener: None,
        }
    }
}

impl std::fmt::Debug for SvcConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SvcConfig")
            .field("addr", &self.addr)
            .field("key", &self.key.as_ref().map(|k| k.public_key()))
            .field("discovery", &self.discovery.as_ref().map(|_| "..."))
            .field("dmsg_port", &self.dmsg_port)
            .field("mode", &self.mode)
            .field("grace", &self.grace)
            .field("metrics", &self.metrics)
            .field("version", &self.version)
            .field("max_connections", &self.max_connections)
            .field("header_read_timeout", &self.header_read_timeout)
            .field(
                "http_listener",
                &self.http_listener.as_ref().map(|l| l.local_addr().ok()),
            )
            .finish_non_exhaustive()
    }
}

impl SvcConfig {
    /// Checks the combination: DMSG modes need a key and a discovery; limits must be non-zero.
    ///
    /// # Errors
    ///
    /// [`SvcError::KeyRequired`], [`SvcError::DiscoveryRequired`], [`SvcError::Invalid`].
    pub fn validate(&self) -> Result<(), SvcError> {
        if self.mode.dmsg() && self.key.is_none() {
            return Err(SvcError::KeyRequired { mode: self.mode });
        }
        if self.mode.dmsg() && self.discovery.is_none() {
            return Err(SvcError::DiscoveryRequired { mode: self.mode });
        }
        if self.max_connections == 0 {
            return Err(SvcError::Invalid("max_connections must be at least 1"));
        }
        if self.header_read_timeout.is_zero() {
            return Err(SvcError::Invalid("header_read_timeout must be positive"));
        }
        Ok(())
    }
}
