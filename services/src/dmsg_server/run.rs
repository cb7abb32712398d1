//! Running the server: key, bind, stats log, graceful shutdown.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::pin;

use std::sync::Arc;
use std::time::Duration;

use skytower_transports::dmsg::disc_http::{HttpDiscovery, HttpDiscoveryError};
use skytower_transports::dmsg::server::Server;
use skytower_transports::identity::{KeyFileError, KeyFormat, PublicKey, SecretKey};

use super::args::DmsgServerArgs;
use super::config::{ConfigError, DmsgServerConfig};

/// Why the server could not start (or the command could not run).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The config is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The key file does not exist and `generate_key` is off.
    #[error(
        "key file {} does not exist; pass --generate-key (or set generate_key = true) to create \
         one, or create it with `skytower keygen --out {}`",
        path.display(),
        path.display()
    )]
    KeyMissing {
        /// The configured key file.
        path: PathBuf,
    },
    /// `generate_key` is on but the key file's directory does not exist.
    #[error("cannot create key file {}: directory {} does not exist", path.display(), dir.display())]
    KeyDirMissing {
        /// The configured key file.
        path: PathBuf,
        /// Its missing directory.
        dir: PathBuf,
    },
    /// The key file could not be read, parsed or created.
    #[error(transparent)]
    Key(#[from] KeyFileError),
    /// Binding the listen address failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The configured listen address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The discovery URL cannot be used by the discovery client.
    #[error("discovery {url}: {source}")]
    Discovery {
        /// The URL.
        url: String,
        /// Why.
        #[source]
        source: HttpDiscoveryError,
    },
    /// Installing the SIGINT/SIGTERM handlers, or writing to stdout, failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The cause.
        source: std::io::Error,
    },
}

/// How often the server entry is re-posted (discovery keeps server entries 2 minutes).
pub const REGISTRATION_REFRESH: Duration = Duration::from_secs(60);

/// A started DMSG relay server with its config: what the binaries run, and what tests run
/// in-process.
#[derive(Debug)]
pub struct DmsgServer {
    server: Server,
    config: DmsgServerConfig,
    public_addr: String,
}

impl DmsgServer {
    /// Validates `config`, loads (or, with `generate_key`, creates) the key file, binds
    /// `listen` and starts serving. Logs `dmsg server <pk> listening on <addr>`.
    ///
    /// # Errors
    ///
    /// [`RunError::Config`], [`RunError::KeyMissing`], [`RunError::KeyDirMissing`],
    /// [`RunError::Key`] or [`RunError::Bind`].
    pub async fn start(config: DmsgServerConfig) -> Result<DmsgServer, RunError> {
        config.validate()?;
        let key = load_or_generate_key(&config)?;
        let server = Server::bind(key, config.listen, config.server_config())
            .await
            .map_err(|source| RunError::Bind {
                addr: config.listen,
                source,
            })?;
        let local_addr = server.local_addr();
        let public_addr = config
            .public_addr
            .clone()
            .unwrap_or_else(|| local_addr.to_string());
        tracing::info!(
            public_addr = %public_addr,
            max_sessions = config.limits.max_sessions,
            "dmsg server {} listening on {}",
            server.public_key(),
            local_addr
        );
        if config.public_addr.is_none() && local_addr.ip().is_unspecified() {
            tracing::warn!(
                "public_addr is not set and {local_addr} is a wildcard address: set public_addr \
                 to the host:port clients should dial before registering in discovery"
            );
        }
        let mut server = server;
        if let Some(url) = &config.discovery {
            let discovery = HttpDiscovery::new(url).map_err(|source| RunError::Discovery {
                url: url.clone(),
                source,
            })?;
            server.register(
                Arc::new(discovery),
                public_addr.clone(),
                REGISTRATION_REFRESH,
            );
            tracing::info!(discovery = %url, %public_addr, "registering with discovery");
        }
        Ok(DmsgServer {
            server,
            config,
            public_addr,
        })
    }

    /// The bound address (the real port when `listen` had port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// The server's public key (its DMSG address).
    pub fn public_key(&self) -> PublicKey {
        self.server.public_key()
    }

    /// The address advertised to discovery: `public_addr`, or the bound address.
    pub fn public_addr(&self) -> &str {
        &self.public_addr
    }

    /// The effective config.
    pub fn config(&self) -> &DmsgServerConfig {
        &self.config
    }

    /// The relay server (stats, clients, handshake queue).
    pub fn server(&self) -> &Server {
        &self.server
    }

    /// Serves until `shutdown` completes, logging stats every `stats_interval`; then shuts the
    /// server down within `shutdown_grace` (what is still open then is closed abruptly).
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) {
        let DmsgServer { server, config, .. } = self;
        let mut shutdown = pin!(shutdown);
        let period = config
            .stats_interval
            .max(std::time::Duration::from_millis(1));
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                _ = ticker.tick() => log_stats(&server),
            }
        }
        tracing::info!(
            grace = %humantime::format_duration(config.shutdown_grace),
            sessions = server.stats().sessions(),
            "dmsg server shutting down"
        );
        match tokio::time::timeout(config.shutdown_grace, server.shutdown()).await {
            Ok(()) => tracing::info!("dmsg server stopped"),
            Err(_) => tracing::warn!(
                "dmsg server: graceful shutdown exceeded {}; remaining connections closed",
                humantime::format_duration(config.shutdown_grace)
            ),
        }
    }
}

fn log_stats(server: &Server) {
    let stats = server.stats();
    let queue = server.handshake_queue();
    tracing::info!(
        sessions = stats.sessions(),
        available_sessions = server.available_sessions(),
        bridges = stats.bridges(),
        handshakes_in_flight = queue.in_flight(),
        handshakes_queued = queue.queued(),
        relayed_total = stats.relayed_total(),
        refused_total = stats.refused_total(),
        sessions_refused_total = stats.sessions_refused_total(),
        handshake_failures_total = stats.handshake_failures_total(),
        "dmsg server stats"
    );
}

fn load_or_generate_key(config: &DmsgServerConfig) -> Result<SecretKey, RunError> {
    let path = &config.key_file;
    match SecretKey::load(path) {
        Ok(key) => return Ok(key),
        Err(KeyFileError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound && config.generate_key => {}
        Err(KeyFileError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Err(RunError::KeyMissing { path: path.clone() });
        }
        Err(e) => return Err(e.into()),
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.is_dir() {
            return Err(RunError::KeyDirMissing {
                path: path.clone(),
                dir: dir.to_path_buf(),
            });
        }
    }
    match SecretKey::generate_and_save(path, KeyFormat::Json) {
        Ok(key) => {
            tracing::info!(
                path = %path.display(),
                "generated a new server key; public key {}",
                key.public_key()
            );
            Ok(key)
        }
        // Created by someone else in between: use theirs.
        Err(KeyFileError::AlreadyExists { .. }) => Ok(SecretKey::load(path)?),
        Err(e) => Err(e.into()),
    }
}

/// Runs a server with `config` until `shutdown` completes (see [`DmsgServer::start`] and
/// [`DmsgServer::run_until`]).
///
/// # Errors
///
/// As [`DmsgServer::start`]; once started, it returns `Ok` after the shutdown.
pub async fn run(
    config: DmsgServerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    DmsgServer::start(config).await?.run_until(shutdown).await;
    Ok(())
}

/// What both binaries do with their flags: `--print-config` prints the effective config and
/// returns; otherwise install the SIGINT/SIGTERM handlers, start, print
/// `listening <addr> <public key>` as the first stdout line, and serve until a signal.
///
/// # Errors
///
/// Any [`RunError`]; the binaries print it and exit 1.
pub async fn execute(args: DmsgServerArgs) -> Result<(), RunError> {
    let config = args.resolve()?;
    if args.print_config {
        let text = config.to_toml()?;
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())
            .and_then(|()| out.flush())
            .map_err(|source| RunError::Io {
                what: "writing to stdout",
                source,
            })?;
        return Ok(());
    }
    let shutdown = crate::svcmode::shutdown_signal().map_err(|source| RunError::Io {
        what: "installing signal handlers",
        source,
    })?;
    let server = DmsgServer::start(config).await?;
    {
        let mut out = std::io::stdout().lock();
        // A closed stdout must not stop the server: the line is a convenience.
        let _ = writeln!(
            out,
            "listening {} {}",
            server.local_addr(),
            server.public_key()
        )
        .and_then(|()| out.flush());
    }
    server.run_until(shutdown).await;
    Ok(())
}
