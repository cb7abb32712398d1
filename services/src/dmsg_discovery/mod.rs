//! dmsg-discovery: where DMSG clients and servers publish signed entries and find each other.
//!
//! A tower/axum HTTP service (`skytower dmsg-discovery --addr 127.0.0.1:9090`) served through the
//! shared service mode ([`crate::svcmode`]: `--mode http|dual`; `--mode dmsg` is refused, the
//! discovery being the bootstrap dependency of DMSG; in `dual` mode the DMSG side registers in
//! the service itself unless `--discovery` says otherwise); the API is
//! specified in `docs/api/dmsg-discovery.md`, the entry format in `docs/protocol.md` §7
//! ([`skytower_transports::dmsg::disc`]). The pieces:
//!
//! - [`Config`] / [`Args`]: flags shared by services ([`SvcArgs`](crate::svcmode::SvcArgs):
//!   `--addr`, `--mode`, `--key`, `--discovery`, `--dmsg-port`, `--grace`, `--metrics`) and the
//!   discovery's own (`--store`, TTLs, `--timestamp-window`, rate limits, `--allow-loopback`...);
//! - [`store`]: the [`Store`] trait, the embedded [`MemoryStore`] (default) and the
//!   [`RedisStore`] (`--store redis://…`, for several instances sharing one Redis);
//! - [`DiscoveryService`]: the router (API, `/health` through
//!   [`HealthLayer`], limits) and the background maintenance
//!   (expiry purge, rate-limit state pruning);
//! - [`DiscoveryServer`] / [`run`]: start through the service mode, serve, shut down
//!   gracefully.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use skytower_services::dmsg_discovery::{Config, DiscoveryServer};
//! use skytower_transports::dmsg::disc::{Discovery, Entry};
//! use skytower_transports::dmsg::disc_http::HttpDiscovery;
//! use skytower_transports::identity::SecretKey;
//!
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
//! let config = Config {
//!     addr: "127.0.0.1:0".parse().unwrap(),
//!     allow_loopback: true,
//!     ..Config::default()
//! };
//! let server = DiscoveryServer::bind(config).await.unwrap();
//! let url = format!("http://{}", server.local_addr().unwrap());
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let task = tokio::spawn(server.serve(async { let _ = stopped.await; }));
//!
//! let disc = HttpDiscovery::new(&url).unwrap();
//! let key = SecretKey::generate().unwrap();
//! let mut entry = Entry::new_server(key.public_key(), "127.0.0.1:8081", 100);
//! entry.sign(&key);
//! disc.post_entry(entry.clone()).await.unwrap();
//! assert_eq!(disc.entry(key.public_key()).await.unwrap(), entry);
//! assert_eq!(disc.available_servers().await.unwrap().len(), 1);
//!
//! stop.send(()).unwrap();
//! task.await.unwrap().unwrap();
//! # });
//! ```

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use skytower_layers::health::HealthLayer;
use skytower_transports::dmsg::ClientConfig;
use skytower_transports::dmsg::disc::Discovery;
use skytower_transports::dmsg::disc_http::HttpDiscovery;
use skytower_transports::identity::SecretKey;
use tokio_util::sync::CancellationToken;

use crate::svcmode::{Maintain, SvcConfig, SvcError, SvcHandle, SvcServer};

/// The service name (`/health`, metrics labels, logs).
pub const NAME: &str = "dmsg-discovery";

pub(crate) mod api;
mod config;
mod error;
mod limit;
pub mod store;

pub use api::MAX_AVAILABLE_SERVERS;
pub use config::{Args, Config, DEFAULT_ADDR, DEFAULT_GRACE, Mode, StoreSpec};
pub use error::{ApiError, RunError};
pub use governor::clock::FakeRelativeClock;
pub use limit::{KeyedRateLimit, RateKey};
pub use store::{
    EntryJson, MemoryStore, PutOutcome, RedisConfig, RedisStore, Store, StoreConfig, StoreError,
};

/// The service: state shared by its router and its maintenance task. Cheap to clone.
#[derive(Clone)]
pub struct DiscoveryService {
    state: api::AppState,
    health: HealthLayer,
    purge_interval: std::time::Duration,
}

impl std::fmt::Debug for DiscoveryService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiscoveryService")
            .field("store", &self.state.store.kind())
            .field("options", &self.state.opts)
            .finish_non_exhaustive()
    }
}

/// Opens the store `config` names (connecting to Redis if asked).
pub async fn open_store(config: &Config) -> Result<Arc<dyn Store>, RunError> {
    let mut store_config = config.store_config.clone();
    store_config.tombstone_ttl = store_config
        .tombstone_ttl
        .max(config.timestamp_window.saturating_mul(2));
    Ok(match &config.store {
        StoreSpec::Memory => Arc::new(MemoryStore::new(store_config)),
        StoreSpec::Redis(redis) => {
            Arc::new(RedisStore::connect(redis.clone(), store_config).await?)
        }
    })
}

impl DiscoveryService {
    /// A service over `store`, with the rate limit of `config` on the real clock.
    pub fn new(config: &Config, store: Arc<dyn Store>) -> Self {
        DiscoveryService {
            state: api::AppState {
                store,
                limit: KeyedRateLimit::new(config.rate_per_second, config.rate_burst),
                opts: Arc::new(api::ApiOptions {
                    window_ms: config.timestamp_window.as_millis() as u64,
                    allow_loopback: config.allow_loopback,
                    max_body: config.max_body_bytes,
                    max_list: config.max_list,
                    request_timeout: config.request_timeout,
                    max_in_flight: config.max_in_flight,
                }),
            },
            health: HealthLayer::new(NAME).version(env!("CARGO_PKG_VERSION")),
            purge_interval: config.purge_interval,
        }
    }

    /// Replaces the rate limiter (tests: one on a `FakeRelativeClock`).
    pub fn with_rate_limit(mut self, limit: KeyedRateLimit) -> Self {
        self.state.limit = limit;
        self
    }

    /// Replaces the `/health` layer of [`router`](Self::router) (e.g. to set the binary's
    /// commit). When served by [`DiscoveryServer`], `/health` is answered by the service mode's
    /// layer (with the same `store` check) before the router sees it.
    pub fn with_health(mut self, health: HealthLayer) -> Self {
        self.health = health;
        self
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.state.store
    }

    /// The rate limiter.
    pub fn rate_limit(&self) -> &KeyedRateLimit {
        &self.state.limit
    }

    /// The HTTP router (API and `/health`). Peers are rate-limited by the
    /// [`ConnectInfo<SocketAddr>`](axum::extract::ConnectInfo) extension when present, else by
    /// the service mode's [`Peer`](skytower_transports::connector::Peer) (TCP: address range;
    /// DMSG: public key, [`RateKey::Dmsg`]), as [`RateKey::Unknown`] otherwise.
    pub fn router(&self) -> Router {
        api::router(self.state.clone(), self.health.clone(), true)
    }

    /// [`router`](Self::router) without its trace layer, for the service mode (which traces
    /// every request itself).
    fn svcmode_router(&self) -> Router {
        api::router(self.state.clone(), self.health.clone(), false)
    }

    /// One maintenance round: purges expired entries and idle rate-limit state.
    pub async fn maintain_once(&self) {
        match self.state.store.purge_expired().await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(removed = n, "purged expired entries"),
            Err(e) => tracing::warn!(error = %e, "purging expired entries failed"),
        }
        let tracked = self.state.limit.prune();
        tracing::trace!(tracked, "pruned rate-limit state");
    }

    /// Runs [`maintain_once`](Self::maintain_once) every purge interval until `cancel` fires.
    pub async fn maintain(&self, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(self.purge_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = tick.tick() => self.maintain_once().await,
            }
        }
    }
}

/// DMSG-side settings that flags cannot express (tests and embedders): they override
/// [`Config::key`] / [`Config::discovery`] and set the owned DMSG client's settings.
#[derive(Default)]
pub struct DmsgOptions {
    /// The identity to use instead of loading [`Config::key`].
    pub key: Option<SecretKey>,
    /// The discovery to register in instead of [`Config::discovery`] (or the service itself).
    pub discovery: Option<Arc<dyn Discovery>>,
    /// Settings of the DMSG client the service owns (default [`ClientConfig::default`]).
    pub client: ClientConfig,
}

impl std::fmt::Debug for DmsgOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DmsgOptions")
            .field("key", &self.key.as_ref().map(SecretKey::public_key))
            .field("discovery", &self.discovery.as_ref().map(|_| "..."))
            .finish_non_exhaustive()
    }
}

/// The URL the service reaches itself at: `http://<addr>`, with an unspecified address
/// (`0.0.0.0`, `[::]`) replaced by loopback.
fn self_url(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, addr.port()))
}

/// A started discovery server (listeners bound, in mode dual its DMSG client started), ready
/// to [`serve`](SvcHandle::serve): the shared service-mode handle ([`SvcHandle`],
/// [`crate::svcmode`]); while it is served the maintenance task runs
/// ([`DiscoveryService::maintain`]), and it is stopped before `serve` returns.
pub type DiscoveryServer = SvcHandle<DiscoveryService>;

impl Maintain for DiscoveryService {
    type Error = RunError;
    const TASK: &'static str = "maintenance";

    fn maintain(&self, stop: CancellationToken) -> impl Future<Output = ()> + Send {
        DiscoveryService::maintain(self, stop)
    }
}

impl DiscoveryServer {
    /// Validates `config` (refusing `--mode dmsg`), opens the store and starts the server.
    ///
    /// # Errors
    ///
    /// As [`Config::validate`], [`open_store`] and [`bind_with`](Self::bind_with).
    pub async fn bind(config: Config) -> Result<Self, RunError> {
        config.validate()?;
        let store = open_store(&config).await?;
        let service = DiscoveryService::new(&config, store);
        Self::bind_with(&config, service).await
    }

    /// Like [`bind`](Self::bind) with a ready-made service (custom store or rate limiter).
    ///
    /// # Errors
    ///
    /// As [`bind_with_options`](Self::bind_with_options).
    pub async fn bind_with(config: &Config, service: DiscoveryService) -> Result<Self, RunError> {
        Self::bind_with_options(config, service, DmsgOptions::default()).await
    }

    /// Like [`bind_with`](Self::bind_with) with explicit DMSG-side settings.
    ///
    /// Binds `config.addr`, then starts the service mode on that listener. In mode dual the
    /// DMSG side registers in `options.discovery`, else `config.discovery`, else the service
    /// itself at `http://<bound address>`.
    ///
    /// # Errors
    ///
    /// [`RunError::DmsgOnly`] / [`RunError::Config`] from [`Config::validate`];
    /// [`RunError::Svc`] for `--mode dual` without a key ([`SvcError::KeyRequired`]), an
    /// unreadable key file, a bad `--discovery` URL, or a bind failure.
    pub async fn bind_with_options(
        config: &Config,
        service: DiscoveryService,
        options: DmsgOptions,
    ) -> Result<Self, RunError> {
        config.validate()?;
        let DmsgOptions {
            key,
            discovery,
            client,
        } = options;
        let dual = config.mode.dmsg();
        let key = crate::svcmode::load_key(config.mode, key, config.key.as_deref())?;
        let (listener, bound) = crate::svcmode::bind_tcp(config.addr).await?;
        let discovery = match (dual, discovery, &config.discovery) {
            (false, _, _) => None,
            (true, Some(d), _) => Some(d),
            (true, None, url) => {
                let url = url.clone().unwrap_or_else(|| self_url(bound));
                tracing::info!(%url, "dmsg-discovery: the DMSG side registers in");
                let d = HttpDiscovery::new(&url).map_err(SvcError::DiscoveryUrl)?;
                Some(Arc::new(d) as Arc<dyn Discovery>)
            }
        };
        let svc_config = SvcConfig {
            addr: bound,
            key,
            discovery,
            dmsg_port: config.dmsg_port,
            mode: config.mode,
            grace: config.grace,
            metrics: config.metrics,
            client,
            http_listener: Some(listener),
            ..SvcConfig::default()
        };
        let server = SvcServer::start(svc_config, NAME, service.svcmode_router()).await?;
        server.add_check("store", api::StoreCheck(service.store().clone()))?;
        tracing::info!(
            addr = %bound,
            mode = %config.mode,
            store = service.store().kind(),
            "dmsg-discovery listening"
        );
        Ok(SvcHandle::new(server, service))
    }

    /// The bound HTTP address (useful with port 0).
    ///
    /// # Errors
    ///
    /// Never in practice (modes http and dual always listen on TCP); kept fallible for
    /// compatibility.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.http_addr()
            .ok_or_else(|| std::io::Error::other("dmsg-discovery has no HTTP listener"))
    }
}

/// Binds and serves `config` until `shutdown` completes.
///
/// # Errors
///
/// As [`DiscoveryServer::bind`] and [`DiscoveryServer::serve`].
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RunError> {
    DiscoveryServer::bind(config).await?.serve(shutdown).await
}

/// The `skytower dmsg-discovery` command: runs [`run`] on a multi-threaded runtime until
/// SIGINT or SIGTERM ([`svcmode::shutdown_signal`](crate::svcmode::shutdown_signal): a
/// second signal exits at once).
///
/// # Errors
///
/// As [`run`]; [`RunError::Svc`] when the signal handlers cannot be installed.
pub fn run_cli(args: Args) -> Result<(), RunError> {
    let config = Config::from(args);
    // Refuse `--mode dmsg` before anything starts.
    config.validate()?;
    crate::svcmode::block_on_until_signal(|shutdown| async move { run(config, shutdown).await })
}
