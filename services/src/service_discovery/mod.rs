//! service-discovery: the directory of services hosted on nodes (`vpn`, `proxy`, `visor`, and
//! free-form types).
//!
//! A node registers `<pk>:<port>` with a type, a version and optionally geo and info
//! (`POST /api/services`, a signed upsert renewing the entry's TTL, 5 min by default); callers
//! query by type with optional version and country filters and a random sample of N
//! (`GET /api/services?type=vpn&country=DE&quantity=3`). A key can only register and delete its
//! own addresses. The API and its limits are in `docs/api/service-discovery.md`.
//!
//! - [`Config`] / [`Args`]: the shared service-mode flags ([`SvcArgs`](crate::svcmode::SvcArgs):
//!   `--addr` (default `127.0.0.1:9098`), `--mode http|dmsg|dual`, `--key`, `--discovery`,
//!   `--dmsg-port`, `--grace`, `--metrics`) and the service's own (`--store memory|redis://…`,
//!   `--ttl`, `--max-per-key`, …);
//! - [`Directory`]: the entries on a [`TtlStore`] (embedded by default, or Redis under the
//!   namespace `service-discovery:`), with the id and index scheme;
//! - [`ServiceDiscovery`]: the router (writes behind [`RequireSignatureLayer`]) and its
//!   maintenance (expiry purge, rate-limit pruning);
//! - [`ServiceDiscoveryServer`] / [`run`] / [`run_cli`]: served through [`crate::svcmode`]
//!   (`/health`, graceful shutdown);
//! - [`ServiceDiscoveryClient`]: the typed client (over [`SignedClient`](crate::auth::SignedClient):
//!   `http://` or `dmsg://`).
//!
//! # Example
//!
//! ```
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
//! use std::sync::Arc;
//! use skytower_services::service_discovery::{
//!     Config, Geo, Registration, ServiceDiscoveryClient, ServiceDiscoveryServer, ServiceQuery,
//! };
//! use skytower_services::svcmode::SvcConfig;
//! use skytower_transports::identity::SecretKey;
//!
//! let svc = SvcConfig { addr: "127.0.0.1:0".parse().unwrap(), ..SvcConfig::default() };
//! let server = ServiceDiscoveryServer::start(svc, &Config::default()).await.unwrap();
//! let url = format!("http://{}", server.http_addr().unwrap());
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let task = tokio::spawn(server.serve(async { let _ = stopped.await; }));
//!
//! // A node registers its VPN server...
//! let key = Arc::new(SecretKey::generate().unwrap());
//! let node = ServiceDiscoveryClient::new(&url).unwrap().with_key(key.clone());
//! let vpn = Registration {
//!     geo: Some(Geo::country("DE")),
//!     ..Registration::new(key.public_key(), 44, "vpn", "1.3.0")
//! };
//! let done = node.register(&vpn).await.unwrap();
//! assert!(done.created);
//! assert_eq!(done.entry.expires_at - done.entry.updated_at, 300_000); // 5 min
//!
//! // ...and anyone finds it.
//! let anyone = ServiceDiscoveryClient::new(&url).unwrap();
//! let found = anyone.query(&ServiceQuery::of_type("vpn").country("de").quantity(3)).await.unwrap();
//! assert_eq!(found.len(), 1);
//! assert_eq!(found[0].address, vpn.address);
//!
//! // Writes need the address's own key.
//! let err = anyone.register(&vpn).await.unwrap_err();
//! assert_eq!(err.api_code(), Some("missing_signature"));
//!
//! stop.send(()).unwrap();
//! task.await.unwrap().unwrap();
//! # });
//! ```

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use skytower_layers::health::HealthLayer;
use tokio_util::sync::CancellationToken;

use crate::auth::{AuthConfig, RequireSignatureLayer, Verifier};
use crate::dmsg_discovery::KeyedRateLimit;
use crate::svcmode::{Maintain, SvcConfig, SvcError, SvcHandle, SvcServer};
use crate::ttl_store::{self, TtlStore, TtlStoreError};

mod api;
mod client;
mod config;
mod directory;
mod model;

pub use client::ServiceDiscoveryClient;
pub use config::{Args, Config, DEFAULT_ADDR, REDIS_NAMESPACE};
pub use directory::{Directory, DirectoryError};
pub use model::{
    Geo, MAX_INFO_BYTES, MAX_REGION_LEN, MAX_TYPE_LEN, MAX_VERSION_LEN, QueryError, Registered,
    Registration, ServiceEntry, ServiceQuery, ValidationError, check_version, normalize_country,
    normalize_type, types,
};

/// The service name (`/health`, metrics labels, logs).
pub const NAME: &str = "service-discovery";

/// Why the service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The service mode could not start or serve (`--mode dmsg` without `--key`, a bind
    /// failure…).
    #[error(transparent)]
    Svc(#[from] SvcError),
    /// A bad setting.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The store could not be opened.
    #[error("cannot open the store: {0}")]
    Store(#[from] TtlStoreError),
}

/// Opens the store `config` names: the embedded one bounded by `max_entries`, or Redis under
/// [`REDIS_NAMESPACE`].
///
/// # Errors
///
/// [`RunError::Store`] when Redis cannot be reached.
pub async fn open_store(config: &Config) -> Result<Arc<dyn TtlStore>, RunError> {
    Ok(ttl_store::open(&config.store, REDIS_NAMESPACE, config.max_entries).await?)
}

/// The service: the directory, the write rate limit and the signature check, shared by its
/// router and its maintenance. Cheap to clone.
#[derive(Clone)]
pub struct ServiceDiscovery {
    state: api::AppState,
    auth: RequireSignatureLayer,
    health: HealthLayer,
    purge_interval: std::time::Duration,
}

impl std::fmt::Debug for ServiceDiscovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceDiscovery")
            .field("directory", &self.state.dir)
            .field("options", &self.state.opts)
            .finish_non_exhaustive()
    }
}

impl ServiceDiscovery {
    /// A service over `store` with `config`'s limits (writes rate-limited on the real clock,
    /// signatures checked against the wall clock).
    pub fn new(config: &Config, store: Arc<dyn TtlStore>) -> Self {
        let verifier = Verifier::new(AuthConfig {
            window: config.signature_window,
            max_body: config.max_body,
            ..AuthConfig::default()
        })
        .with_shared_nonces(store.shared_nonces());
        let auth = RequireSignatureLayer::with_verifier(Arc::new(verifier));
        ServiceDiscovery {
            state: api::AppState {
                dir: Directory::new(store, config.ttl, config.max_per_key, config.max_entries),
                limit: KeyedRateLimit::new(config.rate_per_second, config.rate_burst),
                opts: Arc::new(api::Options {
                    max_list: config.max_list,
                    max_body: config.max_body,
                    request_timeout: config.request_timeout,
                    max_in_flight: config.max_in_flight,
                }),
            },
            auth,
            health: HealthLayer::new(NAME).version(env!("CARGO_PKG_VERSION")),
            purge_interval: config.purge_interval,
        }
    }

    /// Replaces the write rate limiter (tests: one on a `FakeRelativeClock`).
    pub fn with_rate_limit(mut self, limit: KeyedRateLimit) -> Self {
        self.state.limit = limit;
        self
    }

    /// Replaces the signature check (e.g. a verifier shared with other services).
    pub fn with_auth(mut self, auth: RequireSignatureLayer) -> Self {
        self.auth = auth;
        self
    }

    /// The directory.
    pub fn directory(&self) -> &Directory {
        &self.state.dir
    }

    /// The HTTP router: the API and `/health` (when served by [`ServiceDiscoveryServer`],
    /// `/health` is answered by the service mode's layer, with the same `store` check).
    pub fn router(&self) -> Router {
        api::router(self.state.clone(), self.auth.clone(), self.health.clone())
    }

    /// One maintenance round: purges expired entries and idle rate-limit state.
    pub async fn maintain_once(&self) {
        match self.state.dir.store().purge_expired().await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(removed = n, "purged expired service entries"),
            Err(e) => tracing::warn!(error = %e, "purging expired service entries failed"),
        }
        self.state.limit.prune();
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

/// A started service discovery (listeners bound, in DMSG modes its DMSG client started), ready
/// to [`serve`](SvcHandle::serve): the shared service-mode handle ([`SvcHandle`]); while it is
/// served the maintenance task runs ([`ServiceDiscovery::maintain`]), and it is stopped before
/// `serve` returns.
pub type ServiceDiscoveryServer = SvcHandle<ServiceDiscovery>;

impl Maintain for ServiceDiscovery {
    type Error = RunError;
    const TASK: &'static str = "maintenance";

    fn maintain(&self, stop: CancellationToken) -> impl Future<Output = ()> + Send {
        ServiceDiscovery::maintain(self, stop)
    }
}

impl ServiceDiscoveryServer {
    /// Validates `config`, opens its store and starts serving with `svc` (the service-mode
    /// settings: address, mode, key, discovery…).
    ///
    /// # Errors
    ///
    /// [`RunError::Config`], [`RunError::Store`], and as [`start_with`](Self::start_with).
    pub async fn start(svc: SvcConfig, config: &Config) -> Result<Self, RunError> {
        config.validate()?;
        let store = open_store(config).await?;
        Self::start_with(svc, ServiceDiscovery::new(config, store)).await
    }

    /// Starts serving a ready-made service.
    ///
    /// # Errors
    ///
    /// [`RunError::Svc`]: DMSG modes without a key or discovery, a bind failure, a DMSG port
    /// in use.
    pub async fn start_with(svc: SvcConfig, service: ServiceDiscovery) -> Result<Self, RunError> {
        let mode = svc.mode;
        let server = SvcServer::start(svc, NAME, service.router()).await?;
        server.add_check(
            "store",
            crate::ttl_store::StoreCheck {
                store: service.directory().store().clone(),
                count: "entries",
            },
        )?;
        tracing::info!(
            http = ?server.http_addr(),
            dmsg = ?server.dmsg_addr(),
            %mode,
            store = service.directory().store().kind(),
            "service-discovery listening"
        );
        Ok(SvcHandle::new(server, service))
    }
}

/// Starts the service `args` describe and serves it until `shutdown` completes.
///
/// # Errors
///
/// As [`Args::resolve`], [`ServiceDiscoveryServer::start`] and
/// [`ServiceDiscoveryServer::serve`].
pub async fn run(args: &Args, shutdown: impl Future<Output = ()> + Send) -> Result<(), RunError> {
    let (svc, config) = args.resolve()?;
    ServiceDiscoveryServer::start(svc, &config)
        .await?
        .serve(shutdown)
        .await
}

/// The `skytower service-discovery` command: [`run`] on a multi-threaded runtime until SIGINT
/// or SIGTERM ([`shutdown_signal`](crate::svcmode::shutdown_signal): a second signal exits at
/// once).
///
/// # Errors
///
/// As [`run`]; [`RunError::Svc`] when the signal handlers cannot be installed.
pub fn run_cli(args: Args) -> Result<(), RunError> {
    // Refuse bad flags (and an unreadable key) before anything starts.
    let (svc, config) = args.resolve()?;
    crate::svcmode::block_on_until_signal(|shutdown| async move {
        ServiceDiscoveryServer::start(svc, &config)
            .await?
            .serve(shutdown)
            .await
    })
}
