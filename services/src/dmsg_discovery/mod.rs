//! dmsg-discovery: where DMSG clients and servers publish signed entries and find each other.
//!
//! A plain tower/axum HTTP service (`skytower dmsg-discovery --addr 127.0.0.1:9090`); the API is
//! specified in `docs/api/dmsg-discovery.md`, the entry format in `docs/protocol.md` §7
//! ([`skytower_transports::dmsg::disc`]). The pieces:
//!
//! - [`Config`] / [`Args`]: flags shared by services (`--addr`, `--mode`, `--key`) and the
//!   discovery's own (`--store`, TTLs, `--timestamp-window`, rate limits, `--allow-loopback`...);
//! - [`store`]: the [`Store`] trait, the embedded [`MemoryStore`] (default) and the
//!   [`RedisStore`] (`--store redis://…`, for several instances sharing one Redis);
//! - [`DiscoveryService`]: the router (API, `/health` through
//!   [`HealthLayer`](skytower_layers::HealthLayer), limits) and the background maintenance
//!   (expiry purge, rate-limit state pruning);
//! - [`DiscoveryServer`] / [`run`]: bind, serve, shut down gracefully.
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
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use skytower_layers::health::HealthLayer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

mod api;
mod config;
mod error;
mod limit;
pub mod store;

pub use api::MAX_AVAILABLE_SERVERS;
pub use config::{Args, Config, Mode, StoreSpec};
pub use error::{ApiError, RunError};
pub use governor::clock::FakeRelativeClock;
pub use limit::{KeyedRateLimit, RateKey};
pub use store::{MemoryStore, PutOutcome, RedisConfig, RedisStore, Store, StoreConfig, StoreError};

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
            health: HealthLayer::new("dmsg-discovery").version(env!("CARGO_PKG_VERSION")),
            purge_interval: config.purge_interval,
        }
    }

    /// Replaces the rate limiter (tests: one on a `FakeRelativeClock`).
    pub fn with_rate_limit(mut self, limit: KeyedRateLimit) -> Self {
        self.state.limit = limit;
        self
    }

    /// Replaces the `/health` layer (e.g. to set the binary's commit).
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
    /// [`ConnectInfo<SocketAddr>`](axum::extract::ConnectInfo) extension when present
    /// ([`DiscoveryServer`] serves with it), as [`RateKey::Unknown`] otherwise.
    pub fn router(&self) -> Router {
        api::router(self.state.clone(), self.health.clone())
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

/// A bound discovery server, ready to [`serve`](Self::serve).
#[derive(Debug)]
pub struct DiscoveryServer {
    listener: TcpListener,
    service: DiscoveryService,
    grace: std::time::Duration,
}

impl DiscoveryServer {
    /// Validates `config` (refusing `--mode dmsg` and, for now, `--mode dual`), opens the store
    /// and binds `config.addr`.
    pub async fn bind(config: Config) -> Result<Self, RunError> {
        config.validate()?;
        let store = open_store(&config).await?;
        let service = DiscoveryService::new(&config, store);
        Self::bind_with(&config, service).await
    }

    /// Like [`bind`](Self::bind) with a ready-made service (custom store or rate limiter).
    pub async fn bind_with(config: &Config, service: DiscoveryService) -> Result<Self, RunError> {
        config.validate()?;
        let listener = TcpListener::bind(config.addr).await?;
        Ok(DiscoveryServer {
            listener,
            service,
            grace: config.grace,
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The service.
    pub fn service(&self) -> &DiscoveryService {
        &self.service
    }

    /// Serves until `shutdown` completes, then stops accepting, lets in-flight requests finish
    /// for the grace period, and stops the maintenance task before returning.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), RunError> {
        let addr = self.listener.local_addr()?;
        let store_kind = self.service.store().kind();
        tracing::info!(%addr, store = store_kind, "dmsg-discovery listening");
        let maintenance_stop = CancellationToken::new();
        let maintenance = tokio::spawn({
            let service = self.service.clone();
            let stop = maintenance_stop.clone();
            async move { service.maintain(stop).await }
        });
        let stop_serving = CancellationToken::new();
        let app = self
            .service
            .router()
            .into_make_service_with_connect_info::<SocketAddr>();
        let server = axum::serve(self.listener, app).with_graceful_shutdown({
            let stop = stop_serving.clone();
            async move { stop.cancelled().await }
        });
        let server = std::future::IntoFuture::into_future(server);
        tokio::pin!(server);
        let result = tokio::select! {
            r = &mut server => r,
            () = shutdown => {
                tracing::info!(grace = ?self.grace, "dmsg-discovery shutting down");
                stop_serving.cancel();
                match tokio::time::timeout(self.grace, &mut server).await {
                    Ok(r) => r,
                    Err(_) => {
                        tracing::warn!("grace period over; dropping remaining connections");
                        Ok(())
                    }
                }
            }
        };
        maintenance_stop.cancel();
        if let Err(e) = maintenance.await {
            tracing::error!(error = %e, "maintenance task failed");
        }
        result.map_err(RunError::Io)
    }
}

/// Binds and serves `config` until `shutdown` completes.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RunError> {
    DiscoveryServer::bind(config).await?.serve(shutdown).await
}

/// The `skytower dmsg-discovery` command: runs [`run`] on a multi-threaded runtime until
/// SIGINT or SIGTERM.
pub fn run_cli(args: Args) -> Result<(), RunError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(args.into(), shutdown_signal()))
}

/// Completes on SIGINT (Ctrl-C) or, on Unix, SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
