//! address-resolver: maps a node's public key to the addresses where it can be reached
//! directly (STCPR: a TCP listener; SUDPH: a UDP hole-punched socket), and coordinates hole
//! punching.
//!
//! `skytower address-resolver --addr 127.0.0.1:9093` serves the HTTP API through the shared
//! service mode ([`crate::svcmode`]: `--mode http|dmsg|dual`, `/health`, graceful shutdown)
//! and the SUDPH handshakes on UDP, on the same port number. API and datagram formats:
//! `docs/api/address-resolver.md`. The pieces:
//!
//! - [`Config`] / [`Args`]: the shared service flags and the resolver's own (`--store`,
//!   `--binding-ttl`, `--allow-loopback`, the handshake queue's limits...);
//! - [`bindings`]: the bindings table on the shared [`TtlStore`]
//!   (embedded by default, `--store redis://…` with native TTLs);
//! - [`udp`]: the UDP side: one receive loop, stateless challenge [`cookie`]s, every
//!   handshake through a [`HandshakeQueue`](skytower_layers::handshake_queue::HandshakeQueue)
//!   (64 in flight, 10 s each, refused at once beyond the queue), counters ([`UdpStats`]);
//! - [`wire`]: the datagram formats; [`sudph`]: the node's UDP client ([`SudphClient`]);
//! - [`client`]: the node's HTTP client ([`AddressResolverClient`]);
//! - [`AddressResolver`] / [`run`] / [`run_cli`]: start, serve, shut down.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use skytower_services::address_resolver::{
//!     AddressResolver, AddressResolverClient, Config, SudphClient, SudphConfig, Transport,
//! };
//! use skytower_transports::identity::SecretKey;
//!
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
//! let config = Config {
//!     addr: "127.0.0.1:0".parse().unwrap(),
//!     allow_loopback: true, // loopback nodes, for this example
//!     ..Config::default()
//! };
//! let resolver = AddressResolver::bind(config).await.unwrap();
//! let url = format!("http://{}", resolver.http_addr().unwrap());
//! let udp = resolver.udp_addr();
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let task = tokio::spawn(resolver.serve(async { let _ = stopped.await; }));
//!
//! // Node A binds its TCP listener; node B binds its UDP socket.
//! let a = Arc::new(SecretKey::generate().unwrap());
//! let b = Arc::new(SecretKey::generate().unwrap());
//! let a_http = AddressResolverClient::new(&url, a.clone()).unwrap();
//! a_http.bind_stcpr(40_000, vec![]).await.unwrap();
//! let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
//! let b_udp = SudphClient::connect(b.clone(), socket, SudphConfig::new(udp)).await.unwrap();
//!
//! // B resolves A's STCPR address; A resolves B's UDP address.
//! let b_http = AddressResolverClient::new(&url, b.clone()).unwrap();
//! let found = b_http.resolve(Transport::Stcpr, &a.public_key()).await.unwrap();
//! assert_eq!(found.remote_addr, "127.0.0.1:40000".parse().unwrap());
//! let found = a_http.resolve(Transport::Sudph, &b.public_key()).await.unwrap();
//! assert_eq!(found.remote_addr, b_udp.binding().observed);
//!
//! b_udp.close().await;
//! stop.send(()).unwrap();
//! task.await.unwrap().unwrap();
//! # });
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use skytower_transports::dmsg::ClientConfig;
use skytower_transports::dmsg::disc::Discovery;
use skytower_transports::dmsg::disc_http::HttpDiscovery;
use skytower_transports::dmsg::wire::Addr;
use skytower_transports::identity::SecretKey;
use tokio::net::UdpSocket;

use crate::auth::AuthConfig;
use crate::svcmode::{SvcConfig, SvcError, SvcServer};
use crate::ttl_store::{self, TtlStore};

/// The service name (`/health`, metrics labels, logs).
pub const NAME: &str = "address-resolver";

pub mod api;
pub mod bindings;
pub mod client;
mod config;
pub mod cookie;
pub mod sudph;
pub mod udp;
pub mod wire;

pub use api::{BindRequest, BindResponse, Resolved, TransportsList};
pub use bindings::{Binding, Bindings, Transport};
pub use client::AddressResolverClient;
pub use config::{Args, Config, DEFAULT_ADDR, DEFAULT_GRACE, DEFAULT_REDIS_PREFIX, Mode, RunError};
pub use sudph::{BindingInfo, SudphClient, SudphConfig, SudphError, SudphEvent};
pub use udp::{Puncher, UdpCheck, UdpConfig, UdpServer, UdpSnapshot, UdpStats};

/// Settings flags cannot express (tests and embedders).
#[derive(Default)]
pub struct Options {
    /// A store to use instead of opening [`Config::store`].
    pub store: Option<Arc<dyn TtlStore>>,
    /// The DMSG identity instead of loading [`Config::key`].
    pub key: Option<SecretKey>,
    /// The discovery instead of [`Config::discovery`].
    pub discovery: Option<Arc<dyn Discovery>>,
    /// Settings of the DMSG client the service owns.
    pub client: ClientConfig,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("store", &self.store)
            .field("key", &self.key.as_ref().map(SecretKey::public_key))
            .finish_non_exhaustive()
    }
}

/// A started resolver (HTTP/DMSG listeners bound, UDP side running), ready to
/// [`serve`](Self::serve).
#[derive(Debug)]
pub struct AddressResolver {
    server: SvcServer,
    udp: UdpServer,
    bindings: Bindings,
    purge_interval: std::time::Duration,
}

impl AddressResolver {
    /// Validates `config`, opens the store, binds the listeners and starts the UDP side.
    ///
    /// # Errors
    ///
    /// See [`bind_with`](Self::bind_with).
    pub async fn bind(config: Config) -> Result<Self, RunError> {
        Self::bind_with(&config, Options::default()).await
    }

    /// Like [`bind`](Self::bind) with [`Options`].
    ///
    /// # Errors
    ///
    /// [`RunError::Config`] for bad numbers, [`RunError::Store`] when the store cannot be
    /// opened, [`RunError::Udp`] when the UDP socket cannot be bound, [`RunError::Svc`] for a
    /// DMSG mode without key or discovery, an unreadable key file, or an HTTP bind failure.
    pub async fn bind_with(config: &Config, options: Options) -> Result<Self, RunError> {
        config.validate()?;
        let Options {
            store,
            key,
            discovery,
            client,
        } = options;
        let dmsg = config.mode.dmsg();
        let key = crate::svcmode::load_key(config.mode, key, config.key.as_deref())?;
        let discovery = match (dmsg, discovery, &config.discovery) {
            (false, _, _) => None,
            (true, Some(d), _) => Some(d),
            (true, None, Some(url)) => {
                let d = HttpDiscovery::new(url).map_err(SvcError::DiscoveryUrl)?;
                Some(Arc::new(d) as Arc<dyn Discovery>)
            }
            (true, None, None) => {
                return Err(SvcError::DiscoveryRequired { mode: config.mode }.into());
            }
        };
        let store = match store {
            Some(s) => s,
            None => {
                ttl_store::open(&config.store, &config.redis_prefix, config.max_bindings).await?
            }
        };
        let bindings = Bindings::new(store, config.binding_ttl);

        let (listener, bound) = if config.mode.http() {
            let (l, bound) = crate::svcmode::bind_tcp(config.addr).await?;
            (Some(l), bound)
        } else {
            (None, config.addr)
        };
        let udp_addr = config.udp_addr.unwrap_or(bound);
        let socket = UdpSocket::bind(udp_addr)
            .await
            .map_err(|source| RunError::Udp {
                addr: udp_addr,
                source,
            })?;
        let udp_config = UdpConfig {
            allow_loopback: config.allow_loopback,
            ..config.udp.clone()
        };
        let udp = UdpServer::start(socket, bindings.clone(), udp_config).map_err(|source| {
            RunError::Udp {
                addr: udp_addr,
                source,
            }
        })?;

        let state = api::AppState {
            bindings: bindings.clone(),
            puncher: Some(udp.puncher()),
            opts: Arc::new(api::ApiOptions {
                allow_loopback: config.allow_loopback,
                max_list: config.max_list,
                max_body: config.max_body_bytes,
                request_timeout: config.request_timeout,
                max_in_flight: config.max_in_flight,
                auth: AuthConfig {
                    window: config.timestamp_window,
                    max_body: config.max_body_bytes,
                    ..AuthConfig::default()
                },
            }),
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
            http_listener: listener,
            ..SvcConfig::default()
        };
        let server = SvcServer::start(svc_config, NAME, api::router(state)).await?;
        server.add_check(
            "store",
            ttl_store::StoreCheck {
                store: bindings.store().clone(),
                count: "bindings",
            },
        )?;
        server.add_check("udp", udp.health_check())?;
        let queue = udp.queue().clone();
        server.on_scrape(move || {
            crate::svcmode::metrics::record_handshake_queue(NAME, "sudph", &queue);
        })?;
        tracing::info!(
            http = ?server.http_addr(),
            dmsg = ?server.dmsg_addr().map(|a| a.to_string()),
            udp = %udp.local_addr(),
            mode = %config.mode,
            store = bindings.store().kind(),
            "address-resolver listening"
        );
        Ok(AddressResolver {
            server,
            udp,
            bindings,
            purge_interval: config.purge_interval,
        })
    }

    /// The bound HTTP address (modes http and dual).
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.server.http_addr()
    }

    /// The bound UDP (SUDPH) address.
    pub fn udp_addr(&self) -> SocketAddr {
        self.udp.local_addr()
    }

    /// The DMSG address of the API (modes dmsg and dual).
    pub fn dmsg_addr(&self) -> Option<Addr> {
        self.server.dmsg_addr()
    }

    /// The service-mode server (health registry, DMSG client).
    pub fn svc(&self) -> &SvcServer {
        &self.server
    }

    /// The UDP side (counters, handshake queue).
    pub fn udp(&self) -> &UdpServer {
        &self.udp
    }

    /// The bindings table.
    pub fn bindings(&self) -> &Bindings {
        &self.bindings
    }

    /// Serves until `shutdown` completes, then shuts down gracefully: the service mode stops
    /// accepting and drains HTTP requests for the grace period (closing the DMSG side), the
    /// purge task stops, and the UDP side stops with every handshake it was running.
    ///
    /// # Errors
    ///
    /// [`RunError::Svc`] when every listener failed.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), RunError> {
        let AddressResolver {
            server,
            udp,
            bindings,
            purge_interval,
        } = self;
        let store = bindings.store().clone();
        let result = server
            .run_beside(shutdown, "purge", move |stop| {
                ttl_store::purge_periodically(store, purge_interval, stop)
            })
            .await;
        udp.shutdown().await;
        result.map_err(RunError::Svc)
    }
}

/// Binds and serves `config` until `shutdown` completes.
///
/// # Errors
///
/// As [`AddressResolver::bind`] and [`AddressResolver::serve`].
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RunError> {
    AddressResolver::bind(config).await?.serve(shutdown).await
}

/// The `skytower address-resolver` command: runs [`run`] on a multi-threaded runtime until
/// SIGINT or SIGTERM ([`svcmode::shutdown_signal`](crate::svcmode::shutdown_signal): a second
/// signal exits at once).
///
/// # Errors
///
/// As [`run`]; [`RunError::Svc`] when the signal handlers cannot be installed.
pub fn run_cli(args: Args) -> Result<(), RunError> {
    let config = Config::from(args);
    config.validate()?;
    crate::svcmode::block_on_until_signal(|shutdown| async move { run(config, shutdown).await })
}
