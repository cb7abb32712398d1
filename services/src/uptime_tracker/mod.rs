//! uptime-tracker: which nodes are online, and their daily uptime.
//!
//! Nodes send a signed heartbeat (`POST /heartbeat {"version": ...}`, see
//! `docs/api/signed-requests.md`) at start-up and then every 5 minutes ([`UptimeClient::run`]).
//! A node is **online** while its last heartbeat is at most the online threshold (6 min) old.
//! **Uptime accounting:** each heartbeat credits the time since the node's previous heartbeat,
//! capped at the online threshold, to the UTC days that time spans ([`store::credit`]): a node
//! heartbeating every 5 minutes all day long gets 100 %, a gap longer than 6 minutes counts
//! only its first 6 minutes, a burst of heartbeats credits only the time between them, and the
//! first heartbeat (or the first after the retention) credits nothing. `GET /uptimes` and
//! `GET /uptime/{pk}` give online status, version and the percentage of each UTC day of a range
//! (default: the last 7 days). The API is in `docs/api/uptime-tracker.md`.
//!
//! - [`TrackerConfig`] / [`Args`]: settings and flags (with the shared
//!   [`SvcArgs`](crate::svcmode::SvcArgs): `--mode http|dmsg|dual`, `--addr` default
//!   `127.0.0.1:9096`);
//! - [`store`]: the [`UptimeStore`] trait with an embedded store (default) and a Redis store
//!   (native key expiry after the retention, default 30 days);
//! - [`UptimeService`]: the router and maintenance (retention purge, rate-limit pruning), with
//!   an injectable [`WallClock`] so tests drive dates with paused tokio time ([`TokioClock`]);
//! - [`UptimeTracker`] / [`run`] / [`run_cli`]: served through [`crate::svcmode`];
//! - [`UptimeClient`]: the typed client (heartbeats, queries) over
//!   [`SignedClient`](crate::auth::SignedClient).
//!
//! # Example
//!
//! ```
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
//! use std::sync::Arc;
//! use skytower_services::svcmode::SvcConfig;
//! use skytower_services::uptime_tracker::{TrackerConfig, UptimeClient, UptimeTracker};
//! use skytower_transports::identity::SecretKey;
//!
//! let svc = SvcConfig { addr: "127.0.0.1:0".parse()?, ..SvcConfig::default() };
//! let tracker = UptimeTracker::bind(svc, TrackerConfig::default()).await?;
//! let url = format!("http://{}", tracker.http_addr().unwrap());
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let task = tokio::spawn(tracker.serve(async { let _ = stopped.await; }));
//!
//! let key = Arc::new(SecretKey::generate()?);
//! let client = UptimeClient::new(&url)?.with_key(key.clone());
//! let ack = client.heartbeat("0.1.0").await?;
//! assert!(ack.first);
//! let me = client.uptime(&key.public_key()).await?;
//! assert!(me.online);
//! assert_eq!(me.version, "0.1.0");
//! assert_eq!(me.daily.len(), 7);
//!
//! stop.send(()).unwrap();
//! task.await??;
//! # Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
//! # }).unwrap();
//! ```

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use skytower_layers::check::{CheckFuture, CheckReport, HealthCheck};
use skytower_transports::identity::PublicKey;
use tokio_util::sync::CancellationToken;

use crate::api::ApiError;
use crate::auth::{SharedVerifier, Verifier};
use crate::dmsg_discovery::KeyedRateLimit;
use crate::svcmode::{Maintain, SvcConfig, SvcHandle, SvcServer};
use crate::ttl_store::StoreSpec;

mod api;
mod client;
mod clock;
mod config;
pub mod store;

pub use api::{Heartbeat, HeartbeatAck, MAX_VERSION_LEN, NodeUptime, Uptimes, percent_of_day};
pub use client::{UptimeClient, UptimeQuery};
pub use clock::{DAY_MS, Day, DayRange, SystemClock, TokioClock, WallClock};
pub use config::{Args, DEFAULT_ADDR, DEFAULT_REDIS_PREFIX, RunError, TrackerConfig};
pub use store::{
    Accounting, HeartbeatOutcome, MemoryUptimeStore, NodeRecord, RedisUptimeStore, UptimeStore,
    UptimeStoreError,
};

/// The service name (`/health`, metrics labels, logs).
pub const NAME: &str = "uptime-tracker";

/// Opens the store `config` names (connecting to Redis if asked).
///
/// # Errors
///
/// [`UptimeStoreError::Unavailable`] when Redis cannot be reached.
pub async fn open_store(config: &TrackerConfig) -> Result<Arc<dyn UptimeStore>, UptimeStoreError> {
    Ok(match &config.store {
        StoreSpec::Memory => Arc::new(MemoryUptimeStore::new(config.accounting)),
        StoreSpec::Redis(redis) => {
            Arc::new(RedisUptimeStore::connect(redis, config.accounting).await?)
        }
    })
}

/// The service: store, clock, rate limiter and signature verifier shared by its router and its
/// maintenance. Cheap to clone.
#[derive(Clone)]
pub struct UptimeService {
    store: Arc<dyn UptimeStore>,
    clock: Arc<dyn WallClock>,
    limit: KeyedRateLimit,
    verifier: SharedVerifier,
    config: Arc<TrackerConfig>,
}

impl std::fmt::Debug for UptimeService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UptimeService")
            .field("store", &self.store)
            .field("clock", &self.clock)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl UptimeService {
    /// A service over `store` (whose [`Accounting`] rules apply), on the system clock, with the
    /// rate limit and signature settings of `config`.
    pub fn new(config: &TrackerConfig, store: Arc<dyn UptimeStore>) -> Self {
        let verifier = Verifier::new(config.auth).with_shared_nonces(store.shared_nonces());
        UptimeService {
            store,
            clock: Arc::new(SystemClock),
            limit: KeyedRateLimit::new(config.rate_per_second, config.rate_burst),
            verifier: Arc::new(verifier),
            config: Arc::new(config.clone()),
        }
    }

    /// Replaces the wall clock (tests: [`TokioClock`]).
    pub fn with_clock(mut self, clock: Arc<dyn WallClock>) -> Self {
        self.clock = clock;
        self
    }

    /// Replaces the rate limiter (tests: one on a `FakeRelativeClock`).
    pub fn with_rate_limit(mut self, limit: KeyedRateLimit) -> Self {
        self.limit = limit;
        self
    }

    /// Replaces the signature verifier (tests: one with a fixed clock).
    pub fn with_verifier(mut self, verifier: SharedVerifier) -> Self {
        self.verifier = verifier;
        self
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn UptimeStore> {
        &self.store
    }

    /// The tracker's time, Unix milliseconds.
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Records a heartbeat of `pk` now (what `POST /heartbeat` does after verifying it).
    ///
    /// # Errors
    ///
    /// The store's, as an API error (503 `store_full` / `store_unavailable`).
    pub async fn record_heartbeat(
        &self,
        pk: &PublicKey,
        version: &str,
    ) -> Result<HeartbeatOutcome, ApiError> {
        Ok(self.store.heartbeat(pk, version, self.now_ms()).await?)
    }

    /// The HTTP router: the API behind the shared limits and per-peer rate limit. (`/health`
    /// is answered by the service mode.)
    pub fn router(&self) -> Router {
        api::router(self.clone())
    }

    /// One maintenance round: purges data past the retention and idle rate-limit state.
    pub async fn maintain_once(&self) {
        match self.store.purge(self.now_ms()).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(removed = n, "purged nodes past the retention"),
            Err(e) => tracing::warn!(error = %e, "purging the uptime store failed"),
        }
        self.limit.prune();
    }

    /// Runs [`maintain_once`](Self::maintain_once) every purge interval until `cancel` fires.
    pub async fn maintain(&self, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(self.config.purge_interval);
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

/// The store's health: `ok` with its kind and live node count, `down` when unreachable.
struct StoreCheck(UptimeService);

impl HealthCheck for StoreCheck {
    fn check(&self) -> CheckFuture<'_> {
        Box::pin(async move {
            let kind = self.0.store.kind();
            match self.0.store.len(self.0.now_ms()).await {
                Ok(nodes) => CheckReport::ok()
                    .with_details(serde_json::json!({"kind": kind, "nodes": nodes})),
                Err(e) => CheckReport::down(serde_json::json!({
                    "kind": kind,
                    "error": e.to_string(),
                })),
            }
        })
    }
}

/// A started tracker (listeners bound), ready to [`serve`](SvcHandle::serve): the shared
/// service-mode handle ([`SvcHandle`]); while it is served the maintenance task runs
/// ([`UptimeService::maintain`]: retention purge, rate-limit pruning), and it is stopped before
/// `serve` returns.
pub type UptimeTracker = SvcHandle<UptimeService>;

impl Maintain for UptimeService {
    type Error = RunError;
    const TASK: &'static str = "maintenance";

    fn maintain(&self, stop: CancellationToken) -> impl Future<Output = ()> + Send {
        UptimeService::maintain(self, stop)
    }
}

impl UptimeTracker {
    /// Validates `config`, opens its store and starts the service mode with `svc`.
    ///
    /// # Errors
    ///
    /// [`RunError::Config`], [`RunError::Store`], or the service mode's [`RunError::Svc`].
    pub async fn bind(svc: SvcConfig, config: TrackerConfig) -> Result<Self, RunError> {
        config.validate()?;
        let store = open_store(&config).await?;
        Self::bind_with(svc, UptimeService::new(&config, store)).await
    }

    /// Starts the service mode with `svc` serving a ready-made `service` (custom store, clock,
    /// rate limiter).
    ///
    /// # Errors
    ///
    /// The service mode's ([`RunError::Svc`]).
    pub async fn bind_with(svc: SvcConfig, service: UptimeService) -> Result<Self, RunError> {
        let mode = svc.mode;
        let server = SvcServer::start(svc, NAME, service.router()).await?;
        server.add_check("store", StoreCheck(service.clone()))?;
        tracing::info!(
            http = ?server.http_addr(),
            dmsg = ?server.dmsg_addr().map(|a| a.to_string()),
            %mode,
            store = service.store.kind(),
            "uptime-tracker listening"
        );
        Ok(SvcHandle::new(server, service))
    }
}

/// Binds and serves until `shutdown` completes.
///
/// # Errors
///
/// As [`UptimeTracker::bind`] and [`UptimeTracker::serve`].
pub async fn run(
    svc: SvcConfig,
    config: TrackerConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RunError> {
    UptimeTracker::bind(svc, config)
        .await?
        .serve(shutdown)
        .await
}

/// The `skytower uptime-tracker` command: runs [`run`] on a multi-threaded runtime until
/// SIGINT or SIGTERM ([`svcmode::shutdown_signal`](crate::svcmode::shutdown_signal)).
///
/// # Errors
///
/// As [`run`]; bad flags are refused before anything starts.
pub fn run_cli(args: Args) -> Result<(), RunError> {
    let config = args.tracker_config();
    config.validate()?;
    let svc = args.svc.resolve()?;
    crate::svcmode::block_on_until_signal(
        |shutdown| async move { run(svc, config, shutdown).await },
    )
}
