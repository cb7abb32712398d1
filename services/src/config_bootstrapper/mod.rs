//! config-bootstrapper: serves the network's configuration to new nodes.
//!
//! `GET /config` answers a [`NetworkConfig`]: the URL **and DMSG address** of every service
//! named in the config file, the DMSG servers (signed dmsg-discovery entries), and the lists
//! the config file gives (route setup nodes, transport setup nodes, survey whitelist, STUN
//! servers, DNS server). The DMSG addresses come from each service's `/health`
//! (`checks.dmsg.details.address`, or Go's `dmsg_address`), the servers from dmsg-discovery's
//! `all_servers`; both are fetched at start-up and then every `scrape.interval` (5 min), each
//! fetch bounded in time (`scrape.timeout`, 5 s) and size, and **cached**: requests never wait
//! for a scrape. When a fetch fails the last known value is served, marked `"status":"stale"`
//! with the error; a value never fetched is `"unknown"`. So a node that got the config once can
//! bootstrap over DMSG only.
//!
//! The API and the config file are in `docs/api/config-bootstrapper.md`; the typed client is
//! [`BootstrapClient`] (what `skytower node --bootstrap URL` uses).
//!
//! # Example
//!
//! ```
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
//! use skytower_services::config_bootstrapper::{BootstrapClient, BootstrapConfig, Bootstrapper};
//! use skytower_services::svcmode::SvcConfig;
//!
//! let config = BootstrapConfig::from_toml_str(r#"stun_servers = ["stun.example.org:3478"]"#)?;
//! let svc = SvcConfig { addr: "127.0.0.1:0".parse()?, ..SvcConfig::default() };
//! let server = Bootstrapper::bind(svc, config).await?;
//! let url = format!("http://{}", server.http_addr().unwrap());
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let task = tokio::spawn(server.serve(async { let _ = stopped.await; }));
//!
//! let network = BootstrapClient::new(&url)?.fetch().await?;
//! assert_eq!(network.stun_servers, ["stun.example.org:3478"]);
//!
//! stop.send(()).unwrap();
//! task.await??;
//! # Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
//! # }).unwrap();
//! ```

use std::future::Future;
use std::sync::{Arc, PoisonError, RwLock};

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router, middleware};
use futures_util::future::join_all;
use skytower_layers::check::{CheckFuture, CheckReport, HealthCheck};
use skytower_transports::dmsg::disc::Entry;
use skytower_transports::dmsg::replay::unix_ms_now;
use skytower_transports::dmsg::wire::Addr;
use tokio_util::sync::CancellationToken;

use crate::api::ApiError;
use crate::dmsg_discovery::KeyedRateLimit;
use crate::http_stack::{StackLimits, limit_by_peer, wrap};
use crate::svcmode::{Maintain, SvcConfig, SvcHandle, SvcServer};

mod client;
mod config;
mod scrape;
mod types;

pub use client::BootstrapClient;
pub use config::{
    Args, BootstrapConfig, DEFAULT_ADDR, MAX_LIST, RunError, ScrapeConfig, ServiceUrls,
};
pub use types::{DmsgServers, Freshness, NetworkConfig, ServiceInfo, ServiceKind, Services};

/// The service name (`/health`, metrics labels, logs).
pub const NAME: &str = "config-bootstrapper";

#[derive(Debug)]
struct Cache {
    /// `(kind, url, DMSG address)` per configured service, in [`ServiceUrls::iter`] order.
    services: Vec<(ServiceKind, String, scrape::Known<Option<Addr>>)>,
    servers: scrape::Known<Vec<Entry>>,
}

/// The service: the config, the scrape cache, the rate limiter. Cheap to clone.
#[derive(Clone)]
pub struct BootstrapService {
    config: Arc<BootstrapConfig>,
    cache: Arc<RwLock<Cache>>,
    client: scrape::ScrapeClient,
    limit: KeyedRateLimit,
}

impl std::fmt::Debug for BootstrapService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootstrapService")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl BootstrapService {
    /// A service serving `config`, with a rate limit of `per_second` requests per client
    /// (bursts of `burst`). Nothing is scraped until [`refresh_once`](Self::refresh_once) or
    /// [`refresh`](Self::refresh) runs.
    pub fn new(config: BootstrapConfig, per_second: u32, burst: u32) -> Self {
        let services = config
            .services
            .iter()
            .map(|(kind, url)| (kind, url.to_owned(), scrape::Known::unknown()))
            .collect();
        let servers = if config.services.dmsg_discovery.is_some() {
            scrape::Known::unknown()
        } else {
            scrape::Known {
                value: None,
                updated_at: None,
                error: Some("no services.dmsg_discovery in the config".into()),
            }
        };
        BootstrapService {
            client: scrape::client(config.scrape.timeout),
            config: Arc::new(config),
            cache: Arc::new(RwLock::new(Cache { services, servers })),
            limit: KeyedRateLimit::new(per_second, burst),
        }
    }

    /// Replaces the rate limiter (tests: one on a `FakeRelativeClock`).
    pub fn with_rate_limit(mut self, limit: KeyedRateLimit) -> Self {
        self.limit = limit;
        self
    }

    /// The config.
    pub fn config(&self) -> &BootstrapConfig {
        &self.config
    }

    /// Scrapes every service's `/health` and the DMSG server list once, concurrently (each
    /// fetch bounded by `scrape.timeout`), and updates the cache.
    pub async fn refresh_once(&self) {
        let sc = &self.config.scrape;
        let urls: Vec<String> = self
            .config
            .services
            .iter()
            .map(|(_, u)| u.to_owned())
            .collect();
        let healths = join_all(
            urls.iter()
                .map(|url| scrape::health(&self.client, url, sc.timeout, sc.max_health_bytes)),
        );
        let servers = async {
            match &self.config.services.dmsg_discovery {
                Some(url) => Some(
                    scrape::servers(
                        &self.client,
                        url,
                        sc.timeout,
                        sc.max_server_list_bytes,
                        sc.max_dmsg_servers,
                    )
                    .await,
                ),
                None => None,
            }
        };
        let (healths, servers) = tokio::join!(healths, servers);
        let now = unix_ms_now();
        let mut cache = self.cache.write().unwrap_or_else(PoisonError::into_inner);
        for ((kind, url, known), result) in cache.services.iter_mut().zip(healths) {
            if let Err(e) = &result {
                tracing::warn!(service = kind.name(), %url, error = %e, "scraping /health failed");
            }
            known.record(result, now);
        }
        if let Some(result) = servers {
            if let Err(e) = &result {
                tracing::warn!(error = %e, "fetching the DMSG server list failed");
            }
            cache.servers.record(result, now);
        }
    }

    /// Runs [`refresh_once`](Self::refresh_once) at once and then every `scrape.interval`,
    /// until `cancel` fires.
    pub async fn refresh(&self, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(self.config.scrape.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = self.refresh_once() => {}
            }
            self.limit.prune();
        }
    }

    /// What `GET /config` answers now.
    pub fn network_config(&self) -> NetworkConfig {
        let cache = self.cache.read().unwrap_or_else(PoisonError::into_inner);
        let mut services = Services::default();
        for (kind, url, known) in &cache.services {
            *services.slot_mut(*kind) = Some(ServiceInfo {
                url: url.clone(),
                dmsg_address: known.value.flatten(),
                status: known.freshness(),
                updated_at: known.updated_at,
                error: known.error.clone(),
            });
        }
        let c = &self.config;
        NetworkConfig {
            services,
            dmsg_servers: DmsgServers {
                entries: cache.servers.value.clone().unwrap_or_default(),
                status: cache.servers.freshness(),
                updated_at: cache.servers.updated_at,
                error: cache.servers.error.clone(),
            },
            route_setup_nodes: c.route_setup_nodes.clone(),
            transport_setup: c.transport_setup.clone(),
            survey_whitelist: c.survey_whitelist.clone(),
            stun_servers: c.stun_servers.clone(),
            dns_server: c.dns_server.clone(),
        }
    }

    /// The HTTP router: `GET /config` behind the shared limits and the per-peer rate limit
    /// (`/health` is answered by the service mode).
    pub fn router(&self) -> Router {
        let limits = StackLimits {
            max_in_flight: 1024,
            request_timeout: std::time::Duration::from_secs(10),
            max_body: 1024,
        };
        let api = Router::new()
            .route("/config", get(network_config))
            .fallback(|| async { ApiError::not_found("no such route") })
            .with_state(self.clone())
            .layer(middleware::from_fn_with_state(
                self.limit.clone(),
                limit_by_peer,
            ));
        wrap(api, limits)
    }
}

async fn network_config(State(service): State<BootstrapService>) -> Json<NetworkConfig> {
    Json(service.network_config())
}

/// The scrape state in `/health`: always `ok` (the bootstrapper serves what it knows), with
/// the services whose DMSG address is stale or unknown.
struct ScrapeCheck(BootstrapService);

impl HealthCheck for ScrapeCheck {
    fn check(&self) -> CheckFuture<'_> {
        let config = self.0.network_config();
        let mut stale = Vec::new();
        let mut unknown = Vec::new();
        for kind in ServiceKind::ALL {
            match config.services.get(kind).map(|i| i.status) {
                Some(Freshness::Stale) => stale.push(kind.name()),
                Some(Freshness::Unknown) => unknown.push(kind.name()),
                _ => {}
            }
        }
        let report = CheckReport::ok().with_details(serde_json::json!({
            "stale": stale,
            "unknown": unknown,
            "dmsg_servers": config.dmsg_servers.entries.len(),
            "dmsg_servers_status": config.dmsg_servers.status,
        }));
        Box::pin(std::future::ready(report))
    }
}

/// A started bootstrapper (listeners bound), ready to [`serve`](SvcHandle::serve): the shared
/// service-mode handle ([`SvcHandle`]); while it is served the services are scraped at once
/// and every `scrape.interval` ([`BootstrapService::refresh`]), and the scraping is stopped
/// before `serve` returns.
pub type Bootstrapper = SvcHandle<BootstrapService>;

impl Maintain for BootstrapService {
    type Error = RunError;
    const TASK: &'static str = "scrape";

    fn maintain(&self, stop: CancellationToken) -> impl Future<Output = ()> + Send {
        self.refresh(stop)
    }
}

impl Bootstrapper {
    /// Validates `config` and starts the service mode with `svc` (rate limit: 10/s, burst 50).
    ///
    /// # Errors
    ///
    /// [`RunError::Config`] or the service mode's [`RunError::Svc`].
    pub async fn bind(svc: SvcConfig, config: BootstrapConfig) -> Result<Self, RunError> {
        config.validate()?;
        Self::bind_with(svc, BootstrapService::new(config, 10, 50)).await
    }

    /// Starts the service mode with `svc` serving a ready-made `service`.
    ///
    /// # Errors
    ///
    /// The service mode's ([`RunError::Svc`]).
    pub async fn bind_with(svc: SvcConfig, service: BootstrapService) -> Result<Self, RunError> {
        let mode = svc.mode;
        let server = SvcServer::start(svc, NAME, service.router()).await?;
        server.add_check("scrape", ScrapeCheck(service.clone()))?;
        tracing::info!(
            http = ?server.http_addr(),
            dmsg = ?server.dmsg_addr().map(|a| a.to_string()),
            %mode,
            services = service.config.services.iter().count(),
            "config-bootstrapper listening"
        );
        Ok(SvcHandle::new(server, service))
    }
}

/// Binds and serves until `shutdown` completes.
///
/// # Errors
///
/// As [`Bootstrapper::bind`] and [`Bootstrapper::serve`].
pub async fn run(
    svc: SvcConfig,
    service: BootstrapService,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RunError> {
    Bootstrapper::bind_with(svc, service)
        .await?
        .serve(shutdown)
        .await
}

/// The `skytower config-bootstrapper` command: loads `--config`, then runs [`run`] on a
/// multi-threaded runtime until SIGINT or SIGTERM.
///
/// # Errors
///
/// As [`run`]; a bad config file or flag is refused before anything starts.
pub fn run_cli(args: Args) -> Result<(), RunError> {
    let config = BootstrapConfig::load(&args.config)?;
    let svc = args.svc.resolve()?;
    crate::svcmode::block_on_until_signal(|shutdown| async move {
        let service = BootstrapService::new(config, args.rate_limit, args.rate_burst);
        run(svc, service, shutdown).await
    })
}
