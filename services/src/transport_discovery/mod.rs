//! transport-discovery: the registry of transports (links between two nodes).
//!
//! A tower/axum HTTP service (`skytower transport-discovery`, default `127.0.0.1:9091`) served
//! through the shared service mode ([`crate::svcmode`]: `--mode http|dmsg|dual`, `/health`,
//! graceful shutdown); the API is specified in `docs/api/transport-discovery.md`. The pieces:
//!
//! - [`entry`]: the entry model: [`TransportId`] derived from the edges and the type, the
//!   canonical bytes both edges sign, [`SignedEntry::verify`] (sorted distinct edges, derived
//!   id, both signatures, caller is an edge) with typed [`EntryError`]s;
//! - [`Config`] / [`Args`]: the service's flags (`--store memory|redis://…`, `--entry-ttl`
//!   (5 min), bounds) next to the shared [`SvcArgs`](crate::svcmode::SvcArgs);
//! - [`TransportDiscovery`]: the router (writes need a signed request, [`crate::auth`]) over a
//!   [`TtlStore`] of [`TransportRecord`]s indexed by edge, and the periodic purge;
//! - [`TransportDiscoveryServer`] / [`run`] / [`run_cli`]: start through the service mode,
//!   serve, shut down gracefully;
//! - [`TpdClient`]: the typed client (over HTTP or DMSG).
//!
//! # Example
//!
//! ```
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
//! use std::sync::Arc;
//! use skytower_services::svcmode::SvcConfig;
//! use skytower_services::transport_discovery::{
//!     Config, Label, SignedEntry, TpdClient, TransportDiscoveryServer, TransportEntry,
//!     TransportType,
//! };
//! use skytower_transports::identity::SecretKey;
//!
//! let svc = SvcConfig { addr: "127.0.0.1:0".parse()?, ..SvcConfig::default() };
//! let server = TransportDiscoveryServer::bind(svc, Config::default()).await?;
//! let url = format!("http://{}", server.http_addr().unwrap());
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let task = tokio::spawn(server.serve(async { let _ = stopped.await; }));
//!
//! // Both edges sign; either registers.
//! let (a, b) = (Arc::new(SecretKey::generate()?), SecretKey::generate()?);
//! let entry = TransportEntry::new(a.public_key(), b.public_key(), TransportType::Stcpr, Label::User);
//! let signed = SignedEntry::sign_both(entry, &a, &b)?;
//! let client = TpdClient::new(&url)?.with_key(a.clone());
//! client.register(&[signed]).await?;
//!
//! let found = client.by_edge(&b.public_key()).await?;
//! assert_eq!(found.len(), 1);
//! assert_eq!(found[0].entry.id, entry.id);
//! assert_eq!(client.by_id(&entry.id).await?.signed(), signed);
//! client.delete(&entry.id).await?;
//! assert!(client.all().await?.is_empty());
//!
//! let _ = stop.send(());
//! task.await??;
//! # Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
//! # }).unwrap();
//! ```

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio_util::sync::CancellationToken;

use crate::auth::{AuthConfig, SharedVerifier, Verifier};
use crate::svcmode::{Maintain, SvcConfig, SvcHandle, SvcServer};
use crate::ttl_store::{Records, TtlStore};

/// The service name (`/health`, metrics labels, logs).
pub const NAME: &str = "transport-discovery";

mod api;
mod client;
mod config;
pub mod entry;
pub(crate) mod http;

pub use api::{Deleted, TransportRecord};
pub use client::TpdClient;
pub use config::{Args, Config, DEFAULT_ADDR, DEFAULT_GRACE, DEFAULT_NAMESPACE, Mode, RunError};
pub use entry::{
    EntryError, Label, SignedEntry, TransportEntry, TransportId, TransportIdError, TransportType,
};

/// The service: the router's state and the purge interval. Cheap to clone.
#[derive(Clone)]
pub struct TransportDiscovery {
    state: api::AppState,
    purge_interval: Duration,
}

impl std::fmt::Debug for TransportDiscovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransportDiscovery")
            .field("store", &self.state.records.store().kind())
            .field("entry_ttl", &self.state.entry_ttl)
            .finish_non_exhaustive()
    }
}

/// Opens the store `config` names (the embedded one, or Redis under `config.namespace`).
///
/// # Errors
///
/// [`RunError::Store`] when Redis cannot be reached.
pub async fn open_store(config: &Config) -> Result<Arc<dyn TtlStore>, RunError> {
    Ok(crate::ttl_store::open(&config.store, &config.namespace, config.max_entries).await?)
}

impl TransportDiscovery {
    /// A service over `store`, verifying signed requests on the wall clock.
    pub fn new(config: &Config, store: Arc<dyn TtlStore>) -> Self {
        let verifier = Arc::new(
            Verifier::new(AuthConfig {
                window: config.timestamp_window,
                max_body: config.max_body,
                max_seen: config.max_seen,
            })
            .with_shared_nonces(store.shared_nonces()),
        );
        TransportDiscovery {
            state: api::AppState {
                records: Records::new(store),
                verifier,
                entry_ttl: config.entry_ttl,
                max_batch: config.max_batch,
                max_list: config.max_list,
                limits: http::StackLimits {
                    max_body: config.max_body,
                    request_timeout: config.request_timeout,
                    max_in_flight: config.max_in_flight,
                },
            },
            purge_interval: config.purge_interval,
        }
    }

    /// Replaces the signed-request verifier (tests: one on a fixed clock).
    #[must_use]
    pub fn with_verifier(mut self, verifier: SharedVerifier) -> Self {
        self.state.verifier = verifier;
        self
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn TtlStore> {
        self.state.records.store()
    }

    /// The API router with its own trace layer, for serving without the service mode (no
    /// `/health`: the service mode answers it).
    pub fn router(&self) -> Router {
        api::router(self.state.clone(), true)
    }

    /// Purges expired records every purge interval until `cancel` fires.
    pub async fn maintain(&self, cancel: CancellationToken) {
        crate::ttl_store::purge_periodically(self.store().clone(), self.purge_interval, cancel)
            .await;
    }
}

/// A started transport discovery (listeners bound), ready to [`serve`](SvcHandle::serve): the
/// shared service-mode handle ([`SvcHandle`]); while it is served expired records are purged
/// every purge interval ([`TransportDiscovery::maintain`]), and the purge task is stopped
/// before `serve` returns.
pub type TransportDiscoveryServer = SvcHandle<TransportDiscovery>;

impl Maintain for TransportDiscovery {
    type Error = RunError;
    const TASK: &'static str = "purge";

    fn maintain(&self, stop: CancellationToken) -> impl Future<Output = ()> + Send {
        TransportDiscovery::maintain(self, stop)
    }
}

impl TransportDiscoveryServer {
    /// Validates `config`, opens its store and starts serving it as `svc` says.
    ///
    /// # Errors
    ///
    /// [`RunError::Config`], [`RunError::Store`], or [`RunError::Svc`] from the service mode.
    pub async fn bind(svc: SvcConfig, config: Config) -> Result<Self, RunError> {
        config.validate()?;
        let store = open_store(&config).await?;
        Self::bind_with(svc, TransportDiscovery::new(&config, store)).await
    }

    /// Like [`bind`](Self::bind) with a ready-made service (shared store, test verifier).
    ///
    /// # Errors
    ///
    /// [`RunError::Svc`] from the service mode.
    pub async fn bind_with(svc: SvcConfig, service: TransportDiscovery) -> Result<Self, RunError> {
        let mode = svc.mode;
        let server = SvcServer::start(svc, NAME, api::router(service.state.clone(), false)).await?;
        server.add_check(
            "store",
            crate::ttl_store::StoreCheck {
                store: service.store().clone(),
                count: "transports",
            },
        )?;
        tracing::info!(
            addr = ?server.http_addr(),
            dmsg = ?server.dmsg_addr(),
            %mode,
            store = service.store().kind(),
            "transport-discovery listening"
        );
        Ok(SvcHandle::new(server, service))
    }
}

/// Binds and serves until `shutdown` completes.
///
/// # Errors
///
/// As [`TransportDiscoveryServer::bind`] and [`TransportDiscoveryServer::serve`].
pub async fn run(
    svc: SvcConfig,
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RunError> {
    TransportDiscoveryServer::bind(svc, config)
        .await?
        .serve(shutdown)
        .await
}

/// The `skytower transport-discovery` command: runs [`run`] on a multi-threaded runtime until
/// SIGINT or SIGTERM ([`svcmode::shutdown_signal`](crate::svcmode::shutdown_signal)).
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
