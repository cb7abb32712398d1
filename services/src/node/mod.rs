//! The node: a long-running DMSG client (the seed of a visor) with a local control API.
//!
//! A [`Node`] keeps DMSG sessions (at least `--min-sessions`, 0 for every server), publishes
//! its client entry, serves a small HTTP endpoint over DMSG on its port (`/health` with the
//! `dmsg` check, `/` with its identity) through the shared service mode
//! ([`crate::svcmode`], modes `dmsg` (default) and `dual`), and exposes the control API
//! ([`ControlServer`]) on a Unix socket only its owner can use: sessions, connect-all, info,
//! health, and HTTP-over-DMSG fetches. [`ControlClient`] is the typed client the operator
//! commands ([`crate::ops`]) use. See `docs/node.md`.
//!
//! # Example
//!
//! ```no_run
//! use skytower_services::node::{ControlClient, Node, NodeConfig};
//! use skytower_transports::dmsg::disc_http::HttpDiscovery;
//! use skytower_transports::identity::SecretKey;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let discovery = HttpDiscovery::new("http://127.0.0.1:9090")?;
//! let mut config = NodeConfig::new(SecretKey::generate()?, std::sync::Arc::new(discovery));
//! config.control = "/tmp/skytower-node/node.sock".into();
//! let node = Node::start(config).await?;
//! let control = ControlClient::new(node.control_path());
//! for session in control.sessions(true).await? {
//!     println!("{} rtt {:?}", session.server, session.rtt());
//! }
//! node.run_until(async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```

pub mod api;
mod client;
mod control;
pub mod fetch;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use skytower_transports::dmsg::ClientConfig;
use skytower_transports::dmsg::disc::Discovery;
use skytower_transports::dmsg::disc_http::HttpDiscovery;
use skytower_transports::dmsg::wire::Addr;
use skytower_transports::identity::{KeyFileError, KeyFormat, PublicKey, SecretKey};

pub use client::{ControlClient, ControlError, REQUEST_TIMEOUT};
pub use control::{
    CONNECT_ALL_TIMEOUT, ControlBindError, ControlContext, ControlServer, MAX_CONNECTIONS,
    MAX_FETCH_BODY,
};

use crate::svcmode::{Mode, SvcArgs, SvcConfig, SvcError, SvcServer};

/// The service name (`/health`, logs).
pub const NAME: &str = "node";
/// Default directory of the node's key and control socket (and of `skytower up`).
pub const DEFAULT_DIR: &str = ".skytower";
/// File name of the control socket in that directory.
pub const CONTROL_SOCKET: &str = "node.sock";
/// File name of the node's key in that directory.
pub const KEY_FILE: &str = "node.key";
/// Default grace period of a node's shutdown.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);

/// Why a node could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// `--mode http`.
    #[error("a node is a DMSG client: --mode http is not supported (use dmsg or dual)")]
    HttpMode,
    /// No discovery.
    #[error(
        "skytower node needs a dmsg-discovery: pass --discovery URL (`skytower up` starts one)"
    )]
    DiscoveryRequired,
    /// The key could not be loaded or created.
    #[error("node key {}: {source}", path.display())]
    Key {
        /// The key file.
        path: PathBuf,
        /// Why.
        #[source]
        source: KeyFileError,
    },
    /// The node's directory could not be created.
    #[error("directory {}: {source}", path.display())]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `--bootstrap` failed and no earlier answer was saved.
    #[error("bootstrap from {url}: {reason}")]
    Bootstrap {
        /// The bootstrapper's URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The control socket could not be created.
    #[error(transparent)]
    Control(#[from] ControlBindError),
    /// The service mode failed.
    #[error(transparent)]
    Svc(#[from] SvcError),
}

/// Everything a [`Node`] needs.
pub struct NodeConfig {
    /// The identity.
    pub key: SecretKey,
    /// The discovery the DMSG client uses.
    pub discovery: Arc<dyn Discovery>,
    /// The discovery's URL, reported by `/v1/info` (informational).
    pub discovery_url: Option<String>,
    /// The control socket (default `.skytower/node.sock`).
    pub control: PathBuf,
    /// `dmsg` (default) or `dual` (also plain HTTP on `addr`).
    pub mode: Mode,
    /// HTTP address (mode dual).
    pub addr: SocketAddr,
    /// DMSG port of the node's HTTP endpoint (default 80).
    pub dmsg_port: u16,
    /// Shutdown grace period (default 5 s).
    pub grace: Duration,
    /// Prometheus metrics address.
    pub metrics: Option<SocketAddr>,
    /// DMSG client settings (default: [`ClientConfig::default`], one session).
    pub client: ClientConfig,
}

impl std::fmt::Debug for NodeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeConfig")
            .field("key", &self.key.public_key())
            .field("discovery_url", &self.discovery_url)
            .field("control", &self.control)
            .field("mode", &self.mode)
            .field("dmsg_port", &self.dmsg_port)
            .finish_non_exhaustive()
    }
}

impl NodeConfig {
    /// Defaults around a key and a discovery.
    pub fn new(key: SecretKey, discovery: Arc<dyn Discovery>) -> Self {
        NodeConfig {
            key,
            discovery,
            discovery_url: None,
            control: Path::new(DEFAULT_DIR).join(CONTROL_SOCKET),
            mode: Mode::Dmsg,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            dmsg_port: crate::svcmode::DEFAULT_DMSG_PORT,
            grace: DEFAULT_GRACE,
            metrics: None,
            client: ClientConfig::default(),
        }
    }
}

/// A started node: DMSG client up (sessions open in the background), its HTTP endpoint
/// listening on DMSG, the control socket bound.
#[derive(Debug)]
pub struct Node {
    server: SvcServer,
    control: ControlServer,
    pk: PublicKey,
}

impl Node {
    /// Starts the node.
    ///
    /// # Errors
    ///
    /// [`NodeError::HttpMode`], [`NodeError::Control`] (e.g. another node on the socket),
    /// [`NodeError::Svc`].
    pub async fn start(config: NodeConfig) -> Result<Node, NodeError> {
        if !config.mode.dmsg() {
            return Err(NodeError::HttpMode);
        }
        let pk = config.key.public_key();
        let router = Router::new().route(
            "/",
            get(move || async move {
                axum::Json(serde_json::json!({ "service": NAME, "public_key": pk }))
            }),
        );
        let svc = SvcConfig {
            addr: config.addr,
            key: Some(config.key),
            discovery: Some(config.discovery),
            dmsg_port: config.dmsg_port,
            mode: config.mode,
            grace: config.grace,
            metrics: config.metrics,
            client: config.client,
            ..SvcConfig::default()
        };
        let server = SvcServer::start(svc, NAME, router).await?;
        let weak = server.dmsg_client_weak().ok_or(NodeError::HttpMode)?;
        let context = ControlContext {
            public_key: pk,
            dmsg_addr: server
                .dmsg_addr()
                .map(|a| a.to_string())
                .unwrap_or_default(),
            http_addr: server.http_addr(),
            discovery: config.discovery_url,
        };
        let control = ControlServer::bind(&config.control, weak, context)?;
        Ok(Node {
            server,
            control,
            pk,
        })
    }

    /// The node's public key.
    pub fn public_key(&self) -> PublicKey {
        self.pk
    }

    /// The DMSG address of its HTTP endpoint.
    pub fn dmsg_addr(&self) -> Option<Addr> {
        self.server.dmsg_addr()
    }

    /// The HTTP address (mode dual).
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.server.http_addr()
    }

    /// The control socket.
    pub fn control_path(&self) -> &Path {
        self.control.path()
    }

    /// The service-mode server (health registry, DMSG client).
    pub fn svc(&self) -> &SvcServer {
        &self.server
    }

    /// Runs until `shutdown` completes, then stops the control API (removing its socket) and
    /// shuts the service down gracefully (its discovery entry withdrawn first).
    ///
    /// # Errors
    ///
    /// [`NodeError::Svc`] when every listener failed.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> Result<(), NodeError> {
        let Node {
            server, control, ..
        } = self;
        let mut control = Some(control);
        let result = server
            .run_until(async {
                shutdown.await;
                if let Some(c) = control.take() {
                    c.shutdown().await;
                }
            })
            .await;
        drop(control);
        result.map_err(NodeError::from)
    }
}

/// Writes `bytes` to `path` owner-only (0600), replacing it atomically (a temporary file
/// beside it, then a rename).
///
/// # Errors
///
/// I/O errors.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Creates `dir` (and its parents) owner-only (0700) when missing.
///
/// # Errors
///
/// [`NodeError::Dir`].
pub fn ensure_private_dir(dir: &Path) -> Result<(), NodeError> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| NodeError::Dir {
            path: dir.to_path_buf(),
            source,
        })
}

/// Loads the key at `path`, or generates it (0600, JSON) when the file does not exist.
///
/// # Errors
///
/// [`NodeError::Key`].
pub fn load_or_generate_key(path: &Path) -> Result<SecretKey, NodeError> {
    let err = |source| NodeError::Key {
        path: path.to_path_buf(),
        source,
    };
    match SecretKey::load(path) {
        Ok(k) => Ok(k),
        Err(KeyFileError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            match SecretKey::generate_and_save(path, KeyFormat::Json) {
                Ok(k) => {
                    tracing::info!(path = %path.display(), pk = %k.public_key(), "generated a key");
                    Ok(k)
                }
                Err(KeyFileError::AlreadyExists { .. }) => SecretKey::load(path).map_err(err),
                Err(e) => Err(err(e)),
            }
        }
        Err(e) => Err(err(e)),
    }
}

/// The `skytower node` flags: the shared service-mode flags (here `--mode` defaults to `dmsg`,
/// `--key` to `<dir>/node.key`, generated when missing, `--grace` to 5 s) and the node's own.
#[derive(Clone, Debug, clap::Args)]
#[command(
    mut_arg("mode", |a| a.default_value("dmsg").help("dmsg (default), or dual to also serve the node's endpoint on --addr")),
    mut_arg("grace", |a| a.default_value("5s")),
    mut_arg("addr", |a| a.default_value("127.0.0.1:0")),
    mut_arg("key", |a| a.help("The node's key file (default <dir>/node.key, generated when missing)")),
)]
pub struct NodeArgs {
    /// The shared service-mode flags.
    #[command(flatten)]
    pub svc: SvcArgs,
    /// Directory of the node's key and control socket (created 0700).
    #[arg(long, default_value = DEFAULT_DIR, value_name = "DIR")]
    pub dir: PathBuf,
    /// The control socket (default `<dir>/node.sock`).
    #[arg(long, value_name = "PATH")]
    pub control: Option<PathBuf>,
    /// DMSG sessions to keep; 0 keeps one with every available server.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub min_sessions: usize,
    /// Fetch the network's configuration from a config bootstrapper (`http://host:port`) at
    /// start-up and take the dmsg-discovery from it (an explicit --discovery wins). The answer
    /// is saved as `<dir>/bootstrap.json` and used when the bootstrapper cannot be reached.
    #[arg(long, value_name = "URL")]
    pub bootstrap: Option<String>,
}

/// File name of the saved bootstrap answer in the node's directory.
pub const BOOTSTRAP_FILE: &str = "bootstrap.json";

/// Attempts (and the pause before the next) when fetching the bootstrap configuration.
const BOOTSTRAP_ATTEMPTS: [Duration; 3] = [
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::ZERO,
];

impl NodeArgs {
    /// With `--bootstrap` and no `--discovery`: fetches the network's configuration (a few
    /// attempts on retryable errors), saves it as `<dir>/bootstrap.json` (0600), and sets
    /// `--discovery` from it; when the bootstrapper cannot be reached, the saved answer of an
    /// earlier run is used instead (with a warning). Returns the configuration used, if any.
    ///
    /// # Errors
    ///
    /// [`NodeError::Bootstrap`] when nothing could be fetched or read, or when the answer names
    /// no dmsg-discovery; [`NodeError::Dir`].
    pub async fn bootstrap(
        &mut self,
    ) -> Result<Option<crate::config_bootstrapper::NetworkConfig>, NodeError> {
        use crate::config_bootstrapper::{BootstrapClient, NetworkConfig};
        let Some(url) = self.bootstrap.clone() else {
            return Ok(None);
        };
        let failed = |reason: String| NodeError::Bootstrap {
            url: url.clone(),
            reason,
        };
        ensure_private_dir(&self.dir)?;
        let saved = self.dir.join(BOOTSTRAP_FILE);
        let client = BootstrapClient::new(&url).map_err(|e| failed(e.to_string()))?;
        let mut fetched = Err(failed("not attempted".into()));
        for pause in BOOTSTRAP_ATTEMPTS {
            match client.fetch().await {
                Ok(config) => {
                    fetched = Ok(config);
                    break;
                }
                Err(e) => {
                    let retry = e.is_retryable();
                    fetched = Err(failed(e.to_string()));
                    if !retry || pause.is_zero() {
                        break;
                    }
                    tracing::debug!(error = %e, "bootstrap attempt failed; retrying");
                    tokio::time::sleep(pause).await;
                }
            }
        }
        let config: NetworkConfig = match fetched {
            Ok(config) => {
                let json = serde_json::to_vec_pretty(&config)
                    .map_err(|e| failed(format!("cannot encode the answer: {e}")))?;
                write_private(&saved, &json).map_err(|source| NodeError::Dir {
                    path: saved.clone(),
                    source,
                })?;
                config
            }
            Err(e) => {
                let bytes = std::fs::read(&saved).map_err(|_| e)?;
                let config = serde_json::from_slice(&bytes).map_err(|err| {
                    failed(format!("saved {} is unreadable: {err}", saved.display()))
                })?;
                tracing::warn!(%url, saved = %saved.display(), "bootstrapper unreachable; using the saved configuration");
                config
            }
        };
        if self.svc.discovery.is_none() {
            let discovery = config
                .services
                .dmsg_discovery
                .as_ref()
                .ok_or_else(|| failed("the answer names no dmsg-discovery".into()))?;
            self.svc.discovery = Some(discovery.url.clone());
        }
        Ok(Some(config))
    }

    /// Checks the flags, prepares the directory and the key.
    ///
    /// # Errors
    ///
    /// [`NodeError`].
    pub fn resolve(&self) -> Result<NodeConfig, NodeError> {
        if !self.svc.mode.dmsg() {
            return Err(NodeError::HttpMode);
        }
        let url = self
            .svc
            .discovery
            .clone()
            .ok_or(NodeError::DiscoveryRequired)?;
        let discovery = HttpDiscovery::new(&url).map_err(SvcError::DiscoveryUrl)?;
        ensure_private_dir(&self.dir)?;
        let key_path = self
            .svc
            .key
            .clone()
            .unwrap_or_else(|| self.dir.join(KEY_FILE));
        let key = load_or_generate_key(&key_path)?;
        let control = self
            .control
            .clone()
            .unwrap_or_else(|| self.dir.join(CONTROL_SOCKET));
        if let Some(parent) = control.parent() {
            ensure_private_dir(parent)?;
        }
        let mut config = NodeConfig::new(key, Arc::new(discovery));
        config.discovery_url = Some(url);
        config.control = control;
        config.mode = self.svc.mode;
        config.addr = self.svc.addr;
        config.dmsg_port = self.svc.dmsg_port;
        config.grace = self.svc.grace;
        config.metrics = self.svc.metrics;
        config.client.min_sessions = self.min_sessions;
        Ok(config)
    }
}

/// The `skytower node` command: starts the node, prints `node <pk> dmsg <addr> control <path>`
/// on stdout, and runs until SIGINT/SIGTERM.
///
/// # Errors
///
/// [`NodeError`].
pub fn run_cli(mut args: NodeArgs) -> Result<(), NodeError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| NodeError::Svc(SvcError::Signals(e)))?;
    runtime.block_on(async {
        args.bootstrap().await?;
        let config = args.resolve()?;
        let shutdown = crate::svcmode::shutdown_signal().map_err(SvcError::Signals)?;
        let node = Node::start(config).await?;
        {
            use std::io::Write as _;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(
                out,
                "node {} dmsg {} control {}",
                node.public_key(),
                node.dmsg_addr().map(|a| a.to_string()).unwrap_or_default(),
                node.control_path().display()
            )
            .and_then(|()| out.flush());
        }
        node.run_until(shutdown).await
    })
}
