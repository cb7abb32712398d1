//! route-finder: shortest routes over the transport graph.
//!
//! A tower/axum HTTP service (`skytower route-finder`, default `127.0.0.1:9092`) served through
//! the shared service mode ([`crate::svcmode`]); the API is specified in
//! `docs/api/route-finder.md`. The pieces:
//!
//! - [`graph`]: the [`Graph`] snapshot and the k-shortest-simple-paths search (min/max hops,
//!   up to N paths, bounded work);
//! - [`source`]: where the transports come from: the transport discovery's API
//!   (`GET /all-transports`, default) or its Redis store read directly (`--store`);
//! - [`RouteFinder`]: the router (`POST /routes`, unauthenticated, as upstream) over a graph
//!   snapshot rebuilt every `--refresh` (5 s). Each transport keeps its own deadline in the
//!   snapshot, so one that expires between two refreshes is never routed over;
//! - [`RouteFinderServer`] / [`run`] / [`run_cli`]: start through the service mode, serve,
//!   shut down gracefully;
//! - [`RfClient`]: the typed client.
//!
//! # Example
//!
//! ```
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
//! use std::sync::Arc;
//! use skytower_services::route_finder::{self, Pair, RfClient, RouteFinder, RouteFinderServer, RoutesRequest};
//! use skytower_services::route_finder::source::StoreSource;
//! use skytower_services::svcmode::SvcConfig;
//! use skytower_services::transport_discovery::{self as tpd, Label, SignedEntry, TransportEntry, TransportType};
//! use skytower_services::ttl_store::{MemoryTtlStore, Records};
//! use skytower_transports::identity::SecretKey;
//!
//! // The transport discovery's store, shared in-process (a shared Redis in production).
//! let store = Arc::new(MemoryTtlStore::new(1000));
//! let tpd = tpd::TransportDiscovery::new(&tpd::Config::default(), store.clone());
//! let [a, b, c] = [(); 3].map(|_| SecretKey::generate().unwrap());
//! let b = Arc::new(b);
//! let link = |x: &SecretKey, y: &SecretKey| {
//!     let e = TransportEntry::new(x.public_key(), y.public_key(), TransportType::Dmsg, Label::User);
//!     SignedEntry::sign_both(e, x, y).unwrap()
//! };
//! let tpd_server = tpd::TransportDiscoveryServer::bind_with(
//!     SvcConfig { addr: "127.0.0.1:0".parse()?, ..SvcConfig::default() }, tpd).await?;
//! let tpd_url = format!("http://{}", tpd_server.http_addr().unwrap());
//! let (stop_tpd, tpd_stopped) = tokio::sync::oneshot::channel::<()>();
//! let tpd_task = tokio::spawn(tpd_server.serve(async { let _ = tpd_stopped.await; }));
//! tpd::TpdClient::new(&tpd_url)?.with_key(b.clone())
//!     .register(&[link(&a, &b), link(&b, &c)]).await?;
//!
//! let rf = RouteFinder::new(&route_finder::Config::default(), Arc::new(StoreSource(Records::new(store))));
//! rf.refresh_once().await?;
//! let server = RouteFinderServer::bind_with(
//!     SvcConfig { addr: "127.0.0.1:0".parse()?, ..SvcConfig::default() }, rf).await?;
//! let url = format!("http://{}", server.http_addr().unwrap());
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let task = tokio::spawn(server.serve(async { let _ = stopped.await; }));
//!
//! let pair = Pair { src: a.public_key(), dst: c.public_key() };
//! let answer = RfClient::new(&url)?.routes(&RoutesRequest::new(vec![pair])).await?;
//! let path = &answer.routes[0].paths[0];
//! assert_eq!(path.iter().map(|h| h.to).collect::<Vec<_>>(), [b.public_key(), c.public_key()]);
//!
//! let _ = stop.send(());
//! task.await??;
//! let _ = stop_tpd.send(());
//! tpd_task.await??;
//! # Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
//! # }).unwrap();
//! ```

use std::future::Future;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::Router;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::auth::SignedClientConfig;
use crate::svcmode::{Maintain, SvcConfig, SvcHandle, SvcServer};
use crate::transport_discovery::TpdClient;

/// The service name (`/health`, metrics labels, logs).
pub const NAME: &str = "route-finder";

mod api;
mod client;
mod config;
pub mod graph;
pub mod source;

pub use api::{
    DEFAULT_MAX_HOPS, DEFAULT_MAX_PATHS, Pair, PairRoutes, RoutesRequest, RoutesResponse,
};
pub use client::RfClient;
pub use config::{
    Args, Config, DEFAULT_ADDR, DEFAULT_GRACE, DEFAULT_TPD_URL, RunError, SourceSpec,
};
pub use graph::{Graph, Hop, Path, SearchError, SearchOptions};
use source::{ApiSource, SourceError, StoreSource, TransportSource};

/// The current graph snapshot and how the last refresh went.
#[derive(Debug, Default)]
pub struct GraphState {
    current: RwLock<Option<(Arc<Graph>, Instant)>>,
    last_error: Mutex<Option<String>>,
}

/// A summary of [`GraphState`] (for `/health`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GraphStatus {
    /// Nodes in the snapshot.
    pub nodes: usize,
    /// Transports in the snapshot.
    pub transports: usize,
    /// Transports still live now.
    pub live: usize,
    /// Time since the snapshot was built (`None`: never).
    pub age: Option<Duration>,
    /// Why the last refresh failed, if it did.
    pub last_error: Option<String>,
}

impl GraphState {
    /// The current snapshot (`None` before the first successful refresh).
    pub fn current(&self) -> Option<Arc<Graph>> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .map(|(g, _)| g.clone())
    }

    fn replace(&self, graph: Graph) {
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((Arc::new(graph), Instant::now()));
        *self
            .last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }

    fn failed(&self, e: &SourceError) {
        *self
            .last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(e.to_string());
    }

    /// The summary.
    pub fn status(&self) -> GraphStatus {
        let now = Instant::now();
        let current = self
            .current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        GraphStatus {
            nodes: current.as_ref().map_or(0, |(g, _)| g.node_count()),
            transports: current.as_ref().map_or(0, |(g, _)| g.transport_count()),
            live: current.as_ref().map_or(0, |(g, _)| g.live_count(now)),
            age: current.map(|(_, at)| now.saturating_duration_since(at)),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        }
    }
}

/// The service: the graph snapshot, its source, and the router. Cheap to clone.
#[derive(Clone, Debug)]
pub struct RouteFinder {
    state: api::AppState,
    source: Arc<dyn TransportSource>,
}

/// Opens the source `config` names.
///
/// # Errors
///
/// [`RunError::Store`] when the Redis store cannot be reached; [`RunError::Config`] for a bad
/// URL.
pub async fn open_source(config: &Config) -> Result<Arc<dyn TransportSource>, RunError> {
    Ok(match &config.source {
        SourceSpec::Api(url) => {
            let client = TpdClient::new(url)
                .map_err(|e| RunError::Config(format!("--transport-discovery: {e}")))?
                .with_config(SignedClientConfig {
                    request_timeout: config.request_timeout,
                    // ~500 bytes per record in JSON.
                    max_response_bytes: config.max_transports.saturating_mul(600),
                });
            Arc::new(ApiSource(client))
        }
        SourceSpec::Store(spec, namespace) => {
            let store = crate::ttl_store::open(spec, namespace, config.max_transports).await?;
            Arc::new(StoreSource(crate::ttl_store::Records::new(store)))
        }
    })
}

impl RouteFinder {
    /// A service reading the transports from `source` (call
    /// [`refresh_once`](Self::refresh_once) or serve it, which refreshes every
    /// `config.refresh`).
    pub fn new(config: &Config, source: Arc<dyn TransportSource>) -> Self {
        RouteFinder {
            state: api::AppState {
                graph: Arc::new(GraphState::default()),
                config: Arc::new(config.clone()),
            },
            source,
        }
    }

    /// The graph state.
    pub fn graph(&self) -> &Arc<GraphState> {
        &self.state.graph
    }

    /// The API router with its own trace layer, for serving without the service mode.
    pub fn router(&self) -> Router {
        api::router(self.state.clone(), true)
    }

    /// Fetches the transports and replaces the snapshot. On failure the old snapshot stays
    /// (its transports still expire on time) and `/health` reports `degraded`.
    ///
    /// # Errors
    ///
    /// [`SourceError`] when the source cannot be read.
    pub async fn refresh_once(&self) -> Result<(), SourceError> {
        let fetched = match self.source.fetch().await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "route-finder: refreshing the graph failed");
                self.state.graph.failed(&e);
                return Err(e);
            }
        };
        let max = self.state.config.max_transports;
        if fetched.len() > max {
            tracing::warn!(
                fetched = fetched.len(),
                max,
                "route-finder: more transports than --max-transports; the rest are ignored"
            );
        }
        let now = Instant::now();
        let graph = Graph::build(
            fetched
                .into_iter()
                .take(max)
                .map(|t| (t.entry, now + t.remaining)),
        );
        tracing::debug!(
            nodes = graph.node_count(),
            transports = graph.transport_count(),
            "route-finder: graph rebuilt"
        );
        self.state.graph.replace(graph);
        Ok(())
    }

    /// Refreshes every `config.refresh` until `cancel` fires.
    pub async fn maintain(&self, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(self.state.config.refresh);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = tick.tick() => {
                    let _ = self.refresh_once().await;
                }
            }
        }
    }
}

/// A started route finder (listeners bound), ready to [`serve`](SvcHandle::serve): the shared
/// service-mode handle ([`SvcHandle`]); while it is served the graph is refreshed every
/// `--refresh` ([`RouteFinder::maintain`]), and the refresh task is stopped before `serve`
/// returns.
pub type RouteFinderServer = SvcHandle<RouteFinder>;

impl Maintain for RouteFinder {
    type Error = RunError;
    const TASK: &'static str = "refresh";

    fn maintain(&self, stop: CancellationToken) -> impl Future<Output = ()> + Send {
        RouteFinder::maintain(self, stop)
    }
}

impl RouteFinderServer {
    /// Validates `config`, opens its source and starts serving as `svc` says (the first
    /// refresh runs when serving starts; until it succeeds `POST /routes` answers 503).
    ///
    /// # Errors
    ///
    /// [`RunError::Config`], [`RunError::Store`], or [`RunError::Svc`] from the service mode.
    pub async fn bind(svc: SvcConfig, config: Config) -> Result<Self, RunError> {
        config.validate()?;
        let source = open_source(&config).await?;
        Self::bind_with(svc, RouteFinder::new(&config, source)).await
    }

    /// Like [`bind`](Self::bind) with a ready-made service.
    ///
    /// # Errors
    ///
    /// [`RunError::Svc`] from the service mode.
    pub async fn bind_with(svc: SvcConfig, service: RouteFinder) -> Result<Self, RunError> {
        let mode = svc.mode;
        let server = SvcServer::start(svc, NAME, api::router(service.state.clone(), false)).await?;
        server.add_check("graph", api::GraphCheck(service.graph().clone()))?;
        tracing::info!(
            addr = ?server.http_addr(),
            dmsg = ?server.dmsg_addr(),
            %mode,
            "route-finder listening"
        );
        Ok(SvcHandle::new(server, service))
    }
}

/// Binds and serves until `shutdown` completes.
///
/// # Errors
///
/// As [`RouteFinderServer::bind`] and [`RouteFinderServer::serve`].
pub async fn run(
    svc: SvcConfig,
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RunError> {
    RouteFinderServer::bind(svc, config)
        .await?
        .serve(shutdown)
        .await
}

/// The `skytower route-finder` command: runs [`run`] on a multi-threaded runtime until SIGINT
/// or SIGTERM.
///
/// # Errors
///
/// As [`run`]; bad flags are refused before anything starts.
pub fn run_cli(args: Args) -> Result<(), RunError> {
    let config = Config::from(&args);
    config.validate()?;
    let svc = args.svc.resolve()?;
    crate::svcmode::block_on_until_signal(
        |shutdown| async move { run(svc, config, shutdown).await },
    )
}
