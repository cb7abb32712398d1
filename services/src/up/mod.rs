//! `skytower up`: a whole local network in one process, on loopback, from embedded defaults.
//!
//! The network is an explicit list of [`Component`]s ([`components`]), started in order, each
//! as its own task with its own configuration: today dmsg-discovery (mode `dual`), two
//! dmsg-servers and one [`node`](crate::node::Node). Each component's key is generated into
//! `<dir>/keys/<name>.key` on the first run and reused afterwards (stable DMSG addresses); the
//! dmsg-servers' TOML configs are written to `<dir>/<name>.toml` and reused too. `up` waits
//! until every component's health probe says `ok` (a spinner on a terminal), prints the table
//! (component, HTTP address, DMSG address, health; `--json` for scripts) and writes it to
//! `<dir>/network.json` for the operator commands, then runs until SIGINT/SIGTERM and stops
//! the components in reverse order, each within its grace period.
//!
//! # Adding a component
//!
//! A deployment service served through the service mode is a few lines: a [`StartFn`] that
//! builds its router, starts it with [`ComponentCtx::svc_config`] (mode `dual`, its key, the
//! network's discovery) and hands it to [`ComponentCtx::serve`] (which runs it until the
//! network stops and probes its `/health` over HTTP), and one entry in [`components`]:
//!
//! ```
//! use skytower_services::svcmode::SvcServer;
//! use skytower_services::up::{Component, ComponentCtx, Started, StartFuture, components};
//!
//! fn start_echo(mut ctx: ComponentCtx) -> StartFuture {
//!     Box::pin(async move {
//!         let router = axum::Router::new().route("/", axum::routing::get(|| async { "echo" }));
//!         let server = SvcServer::start(ctx.svc_config()?, "echo", router).await?;
//!         Ok(ctx.serve(server))
//!     })
//! }
//!
//! let mut list = components();
//! let node = list.len() - 1; // the node comes last: it connects to everything before it
//! list.insert(node, Component::new("echo", "echo", start_echo));
//! let names: Vec<_> = list.iter().map(|c| c.name).collect();
//! assert_eq!(names[..3], ["dmsg-discovery", "dmsg-server-1", "dmsg-server-2"]);
//! assert_eq!(names[names.len() - 2..], ["echo", "node"]);
//! ```

mod probe;
mod table;

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use skytower_layers::BoxError;
use skytower_transports::dmsg::ClientConfig;
use skytower_transports::dmsg::disc::Discovery;
use skytower_transports::dmsg::disc_http::HttpDiscovery;
use skytower_transports::dmsg::wire::Addr;
use skytower_transports::identity::{PublicKey, SecretKey};
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

pub use probe::{Health, HealthStatus, Probe, http_probe};
pub use table::{ComponentRow, NETWORK_FILE, NetworkTable};

use crate::address_resolver::{self, AddressResolver};
use crate::config_bootstrapper::{BootstrapConfig, Bootstrapper, ScrapeConfig, ServiceUrls};
use crate::dmsg_discovery::{self, DiscoveryServer, DiscoveryService, DmsgOptions};
use crate::dmsg_server::{DmsgServer, DmsgServerConfig};
use crate::node::{self, ControlClient, Node, NodeConfig, NodeError};
use crate::route_finder::{self, RouteFinderServer};
use crate::service_discovery::{self, ServiceDiscoveryServer};
use crate::svcmode::{Mode, SvcConfig, SvcError, SvcServer};
use crate::transport_discovery::TransportDiscoveryServer;
use crate::uptime_tracker::{TrackerConfig, UptimeTracker};

/// What a [`StartFn`] returns.
pub type StartFuture = Pin<Box<dyn Future<Output = Result<Started, UpError>> + Send>>;
/// Starts one component: binds its listeners, spawns its task (which must end when
/// [`ComponentCtx::shutdown`] is cancelled) and says how to probe its health.
pub type StartFn = fn(ComponentCtx) -> StartFuture;

/// One component of the network.
#[derive(Clone, Copy, Debug)]
pub struct Component {
    /// Unique name (table, key file `<dir>/keys/<name>.key`, logs).
    pub name: &'static str,
    /// What it is (`dmsg-discovery`, `dmsg-server`, `node`, ...).
    pub kind: &'static str,
    /// How to start it.
    pub start: StartFn,
    /// Whether its HTTP address is the network's dmsg-discovery (the components after it get
    /// it as [`ComponentCtx::discovery_url`]).
    pub provides_discovery: bool,
}

impl Component {
    /// A component.
    pub const fn new(name: &'static str, kind: &'static str, start: StartFn) -> Self {
        Component {
            name,
            kind,
            start,
            provides_discovery: false,
        }
    }

    /// Marks it as the network's dmsg-discovery.
    pub const fn provides_discovery(mut self) -> Self {
        self.provides_discovery = true;
        self
    }
}

/// The network `skytower up` starts, in start order (stopped in reverse). Deployment services
/// go between the dmsg-servers and the node, in mode `dual` (see the [module docs](self)).
pub fn components() -> Vec<Component> {
    vec![
        Component::new("dmsg-discovery", "dmsg-discovery", start_discovery).provides_discovery(),
        Component::new("dmsg-server-1", "dmsg-server", start_dmsg_server),
        Component::new("dmsg-server-2", "dmsg-server", start_dmsg_server),
        // Deployment services, in mode dual.
        Component::new(
            "transport-discovery",
            "transport-discovery",
            start_transport_discovery,
        ),
        Component::new("route-finder", "route-finder", start_route_finder),
        Component::new(
            "address-resolver",
            "address-resolver",
            start_address_resolver,
        ),
        Component::new(
            "service-discovery",
            "service-discovery",
            start_service_discovery,
        ),
        Component::new("uptime-tracker", "uptime-tracker", start_uptime_tracker),
        // Last of the services: it serves every earlier one's addresses.
        Component::new(
            "config-bootstrapper",
            "config-bootstrapper",
            start_config_bootstrapper,
        ),
        Component::new("node", "node", start_node),
    ]
}

/// Why the network could not start or stopped badly. One line each.
#[derive(Debug, thiserror::Error)]
pub enum UpError {
    /// The directory or a key could not be prepared.
    #[error(transparent)]
    Prepare(#[from] NodeError),
    /// `--base-port` leaves no room for every component.
    #[error("--base-port {base}: {count} components need ports up to {}, beyond 65535", *base as usize + count - 1)]
    Ports {
        /// The base port.
        base: u16,
        /// How many components.
        count: usize,
    },
    /// A component needs a discovery but none was started before it.
    #[error("{0} needs the network's dmsg-discovery, which must come before it")]
    NoDiscovery(&'static str),
    /// A component needs another kind of component started before it.
    #[error("{name} needs a {needs}, which must come before it in the component list")]
    Missing {
        /// The component.
        name: &'static str,
        /// The kind it needs.
        needs: &'static str,
    },
    /// A component's key was already taken by its start function.
    #[error("{0}: the key was already used")]
    KeyTaken(&'static str),
    /// A component failed to start.
    #[error("starting {name}: {source}")]
    Start {
        /// The component.
        name: &'static str,
        /// Why.
        #[source]
        source: BoxError,
    },
    /// Not every component became healthy in time.
    #[error("not ready after {}: {pending}", humantime::format_duration(*waited))]
    NotReady {
        /// How long `up` waited.
        waited: Duration,
        /// The components that were not `ok`, with their state.
        pending: String,
    },
    /// A network already runs in the directory.
    #[error("a network is already running in {} (its node answers on {}); stop it first or pass another --dir", dir.display(), control.display())]
    AlreadyRunning {
        /// The directory.
        dir: PathBuf,
        /// The live control socket.
        control: PathBuf,
    },
    /// A component stopped on its own.
    #[error("{name} stopped: {reason}")]
    Stopped {
        /// The component.
        name: &'static str,
        /// Why.
        reason: String,
    },
    /// Writing the table failed.
    #[error("{}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The signal handlers could not be installed.
    #[error("installing signal handlers: {0}")]
    Signals(#[source] std::io::Error),
}

impl From<SvcError> for UpError {
    fn from(e: SvcError) -> Self {
        UpError::Start {
            name: "service",
            source: Box::new(e),
        }
    }
}

/// What a start function gets: its identity, its address, the network's discovery, and the
/// token that stops it.
#[derive(Debug)]
pub struct ComponentCtx {
    /// The component's name.
    pub name: &'static str,
    /// The network's directory.
    pub dir: PathBuf,
    /// Where its key is stored.
    pub key_path: PathBuf,
    key: Option<SecretKey>,
    /// Its HTTP (or relay TCP) listen address: `127.0.0.1:<base port + index>`, or port 0.
    pub addr: SocketAddr,
    /// The network's dmsg-discovery (`None` for the discovery itself).
    pub discovery_url: Option<String>,
    /// Its shutdown grace period.
    pub grace: Duration,
    /// Cancelled when the network stops: the component's task must then end.
    pub shutdown: CancellationToken,
    /// The components started before this one, in order (so a service can find another's
    /// address, e.g. the route finder its transport discovery).
    pub earlier: Vec<EarlierComponent>,
}

/// A component started before the one being started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EarlierComponent {
    /// Its name.
    pub name: &'static str,
    /// Its kind.
    pub kind: &'static str,
    /// Its HTTP (or relay TCP) address.
    pub http: Option<SocketAddr>,
    /// Its DMSG address.
    pub dmsg: Option<Addr>,
}

impl ComponentCtx {
    /// Takes the component's identity (once).
    ///
    /// # Errors
    ///
    /// [`UpError::KeyTaken`] the second time.
    pub fn take_key(&mut self) -> Result<SecretKey, UpError> {
        self.key.take().ok_or(UpError::KeyTaken(self.name))
    }

    /// The network's discovery URL.
    ///
    /// # Errors
    ///
    /// [`UpError::NoDiscovery`] before the discovery was started.
    pub fn discovery_url(&self) -> Result<&str, UpError> {
        self.discovery_url
            .as_deref()
            .ok_or(UpError::NoDiscovery(self.name))
    }

    /// A client of the network's discovery.
    ///
    /// # Errors
    ///
    /// [`UpError::NoDiscovery`].
    pub fn discovery(&self) -> Result<Arc<dyn Discovery>, UpError> {
        let url = self.discovery_url()?;
        let d = HttpDiscovery::new(url).map_err(|e| UpError::Start {
            name: self.name,
            source: Box::new(e),
        })?;
        Ok(Arc::new(d))
    }

    /// The HTTP base URL (`http://127.0.0.1:port`) of the first earlier component of `kind`.
    ///
    /// # Errors
    ///
    /// [`UpError::Missing`] when no such component was started before this one.
    pub fn http_url_of(&self, kind: &'static str) -> Result<String, UpError> {
        self.earlier
            .iter()
            .find(|c| c.kind == kind)
            .and_then(|c| c.http)
            .map(|a| format!("http://{a}"))
            .ok_or(UpError::Missing {
                name: self.name,
                needs: kind,
            })
    }

    /// Runs a server until the network stops: `run` gets the shutdown future and returns the
    /// server's serving future (e.g. `|stop| server.serve(stop)`); health is HTTP `/health`
    /// at `http`.
    pub fn serve_with<F, E>(
        &self,
        http: Option<SocketAddr>,
        dmsg: Option<Addr>,
        run: impl FnOnce(WaitForCancellationFutureOwned) -> F,
    ) -> Started
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display,
    {
        let serving = run(self.shutdown.clone().cancelled_owned());
        let task = tokio::spawn(async move { serving.await.map_err(|e| e.to_string()) });
        let probe = match http {
            Some(addr) => http_probe(addr),
            None => probe::fixed(Health::ok("running")),
        };
        // Ready for DMSG callers only once its entry is in discovery.
        let probe = match (dmsg, self.discovery()) {
            (Some(addr), Ok(discovery)) => probe::published(probe, discovery, addr.pk),
            _ => probe,
        };
        Started {
            http,
            dmsg,
            public_key: dmsg.map(|a| a.pk),
            probe,
            task,
        }
    }

    /// DMSG client settings for a local network: the defaults with a quicker reconnect, so
    /// components that start before the relays are up connect soon after.
    pub fn client_config(&self) -> ClientConfig {
        ClientConfig {
            backoff: (Duration::from_millis(200), Duration::from_secs(2)),
            maintain_interval: Duration::from_millis(200),
            publish_debounce: Duration::from_millis(200),
            ..ClientConfig::default()
        }
    }

    /// A service-mode config in mode `dual` on [`addr`](Self::addr) and DMSG port 80, with
    /// the component's key (taken) and the network's discovery.
    ///
    /// # Errors
    ///
    /// [`UpError::NoDiscovery`], [`UpError::KeyTaken`].
    pub fn svc_config(&mut self) -> Result<SvcConfig, UpError> {
        let discovery = self.discovery()?;
        Ok(SvcConfig {
            addr: self.addr,
            key: Some(self.take_key()?),
            discovery: Some(discovery),
            mode: Mode::Dual,
            grace: self.grace,
            client: self.client_config(),
            ..SvcConfig::default()
        })
    }

    /// Runs a started service-mode server until the network stops; its health is its HTTP
    /// `/health`.
    pub fn serve(&self, server: SvcServer) -> Started {
        let (http, dmsg) = (server.http_addr(), server.dmsg_addr());
        self.serve_with(http, dmsg, |stop| server.run_until(stop))
    }

    fn error(&self, e: impl Into<BoxError>) -> UpError {
        UpError::Start {
            name: self.name,
            source: e.into(),
        }
    }
}

/// A started component.
pub struct Started {
    /// Its HTTP address (or, for a relay, its TCP address).
    pub http: Option<SocketAddr>,
    /// Its DMSG address.
    pub dmsg: Option<Addr>,
    /// Its identity (a relay has one but no DMSG address).
    pub public_key: Option<PublicKey>,
    /// How to ask it whether it is healthy.
    pub probe: Probe,
    /// Its task: ends after [`ComponentCtx::shutdown`] is cancelled (an early end is a failure).
    pub task: JoinHandle<Result<(), String>>,
}

impl std::fmt::Debug for Started {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Started")
            .field("http", &self.http)
            .field("dmsg", &self.dmsg)
            .finish_non_exhaustive()
    }
}

fn start_discovery(mut ctx: ComponentCtx) -> StartFuture {
    Box::pin(async move {
        let config = dmsg_discovery::Config {
            addr: ctx.addr,
            mode: Mode::Dual,
            allow_loopback: true,
            grace: ctx.grace,
            ..dmsg_discovery::Config::default()
        };
        let store = dmsg_discovery::open_store(&config)
            .await
            .map_err(|e| ctx.error(e))?;
        let service = DiscoveryService::new(&config, store);
        let options = DmsgOptions {
            key: Some(ctx.take_key()?),
            discovery: None,
            client: ctx.client_config(),
        };
        let server = DiscoveryServer::bind_with_options(&config, service, options)
            .await
            .map_err(|e| ctx.error(e))?;
        let http = server.local_addr().map_err(|e| ctx.error(e))?;
        let dmsg = server.dmsg_addr();
        let shutdown = ctx.shutdown.clone();
        let task = tokio::spawn(async move {
            server
                .serve(shutdown.cancelled_owned())
                .await
                .map_err(|e| e.to_string())
        });
        // Its DMSG side publishes to itself.
        let probe = match dmsg {
            Some(addr) => {
                let own =
                    HttpDiscovery::new(&format!("http://{http}")).map_err(|e| ctx.error(e))?;
                probe::published(http_probe(http), Arc::new(own), addr.pk)
            }
            None => http_probe(http),
        };
        Ok(Started {
            http: Some(http),
            dmsg,
            public_key: dmsg.map(|a| a.pk),
            probe,
            task,
        })
    })
}

fn start_dmsg_server(mut ctx: ComponentCtx) -> StartFuture {
    Box::pin(async move {
        let discovery = ctx.discovery()?;
        let url = ctx.discovery_url()?.to_owned();
        let path = ctx.dir.join(format!("{}.toml", ctx.name));
        let mut config = if path.exists() {
            DmsgServerConfig::load(&path).map_err(|e| ctx.error(e))?
        } else {
            // The file names the key relative to itself, so the directory can move.
            let relative = DmsgServerConfig {
                key_file: Path::new("keys").join(format!("{}.key", ctx.name)),
                shutdown_grace: ctx.grace,
                ..DmsgServerConfig::default()
            };
            let text = relative.to_toml().map_err(|e| ctx.error(e))?;
            let config = DmsgServerConfig {
                key_file: ctx.key_path.clone(),
                ..relative
            };
            let header = "# Written by `skytower up` on its first run and reused afterwards.\n\
                          # `listen` and `discovery` are set by `up` at every start.\n";
            std::fs::write(&path, format!("{header}{text}")).map_err(|e| ctx.error(e))?;
            config
        };
        config.listen = ctx.addr;
        config.public_addr = None;
        config.discovery = Some(url);
        let pk = ctx.take_key()?.public_key();
        let server = DmsgServer::start(config).await.map_err(|e| ctx.error(e))?;
        if server.public_key() != pk {
            tracing::warn!(
                name = ctx.name,
                "the config's key_file is not {}; using it anyway",
                ctx.key_path.display()
            );
        }
        let pk = server.public_key();
        let addr = server.local_addr();
        let stats = server.server().stats().clone();
        let shutdown = ctx.shutdown.clone();
        let task = tokio::spawn(async move {
            server.run_until(shutdown.cancelled_owned()).await;
            Ok(())
        });
        Ok(Started {
            http: Some(addr),
            dmsg: None,
            public_key: Some(pk),
            probe: probe::relay(discovery, pk, stats),
            task,
        })
    })
}

fn start_transport_discovery(mut ctx: ComponentCtx) -> StartFuture {
    Box::pin(async move {
        let server = TransportDiscoveryServer::bind(ctx.svc_config()?, Default::default())
            .await
            .map_err(|e| ctx.error(e))?;
        let (http, dmsg) = (server.http_addr(), server.dmsg_addr());
        Ok(ctx.serve_with(http, dmsg, |stop| server.serve(stop)))
    })
}

fn start_route_finder(mut ctx: ComponentCtx) -> StartFuture {
    Box::pin(async move {
        let config = route_finder::Config {
            source: route_finder::SourceSpec::Api(ctx.http_url_of("transport-discovery")?),
            // A local network changes quickly and the graph is small.
            refresh: Duration::from_secs(1),
            ..route_finder::Config::default()
        };
        let server = RouteFinderServer::bind(ctx.svc_config()?, config)
            .await
            .map_err(|e| ctx.error(e))?;
        let (http, dmsg) = (server.http_addr(), server.dmsg_addr());
        Ok(ctx.serve_with(http, dmsg, |stop| server.serve(stop)))
    })
}

fn start_service_discovery(mut ctx: ComponentCtx) -> StartFuture {
    Box::pin(async move {
        let config = service_discovery::Config::default();
        let server = ServiceDiscoveryServer::start(ctx.svc_config()?, &config)
            .await
            .map_err(|e| ctx.error(e))?;
        let (http, dmsg) = (server.http_addr(), server.dmsg_addr());
        Ok(ctx.serve_with(http, dmsg, |stop| server.serve(stop)))
    })
}

fn start_uptime_tracker(mut ctx: ComponentCtx) -> StartFuture {
    Box::pin(async move {
        let server = UptimeTracker::bind(ctx.svc_config()?, TrackerConfig::default())
            .await
            .map_err(|e| ctx.error(e))?;
        let (http, dmsg) = (server.http_addr(), server.dmsg_addr());
        Ok(ctx.serve_with(http, dmsg, |stop| server.serve(stop)))
    })
}

fn start_config_bootstrapper(mut ctx: ComponentCtx) -> StartFuture {
    Box::pin(async move {
        let url = |kind| ctx.http_url_of(kind).ok();
        let services = ServiceUrls {
            dmsg_discovery: Some(ctx.discovery_url()?.to_owned()),
            transport_discovery: url("transport-discovery"),
            address_resolver: url("address-resolver"),
            route_finder: url("route-finder"),
            uptime_tracker: url("uptime-tracker"),
            service_discovery: url("service-discovery"),
        };
        let config = BootstrapConfig {
            services,
            // A local network changes quickly; its services are one hop away.
            scrape: ScrapeConfig {
                interval: Duration::from_secs(10),
                ..ScrapeConfig::default()
            },
            ..BootstrapConfig::default()
        };
        let server = Bootstrapper::bind(ctx.svc_config()?, config)
            .await
            .map_err(|e| ctx.error(e))?;
        let (http, dmsg) = (server.http_addr(), server.dmsg_addr());
        Ok(ctx.serve_with(http, dmsg, |stop| server.serve(stop)))
    })
}

fn start_address_resolver(mut ctx: ComponentCtx) -> StartFuture {
    Box::pin(async move {
        let config = address_resolver::Config {
            addr: ctx.addr,
            mode: Mode::Dual,
            grace: ctx.grace,
            // Every node of a local network is on loopback.
            allow_loopback: true,
            ..address_resolver::Config::default()
        };
        let options = address_resolver::Options {
            key: Some(ctx.take_key()?),
            discovery: Some(ctx.discovery()?),
            client: ctx.client_config(),
            ..address_resolver::Options::default()
        };
        let server = AddressResolver::bind_with(&config, options)
            .await
            .map_err(|e| ctx.error(e))?;
        let (http, dmsg) = (server.http_addr(), server.dmsg_addr());
        Ok(ctx.serve_with(http, dmsg, |stop| server.serve(stop)))
    })
}

fn start_node(mut ctx: ComponentCtx) -> StartFuture {
    Box::pin(async move {
        let discovery = ctx.discovery()?;
        let mut config = NodeConfig::new(ctx.take_key()?, discovery);
        config.discovery_url = Some(ctx.discovery_url()?.to_owned());
        config.control = ctx.dir.join(node::CONTROL_SOCKET);
        config.grace = ctx.grace;
        config.client = ctx.client_config();
        let node = Node::start(config).await.map_err(|e| ctx.error(e))?;
        let dmsg = node.dmsg_addr();
        let control = ControlClient::new(node.control_path());
        let shutdown = ctx.shutdown.clone();
        let task = tokio::spawn(async move {
            node.run_until(shutdown.cancelled_owned())
                .await
                .map_err(|e| e.to_string())
        });
        Ok(Started {
            http: None,
            dmsg,
            public_key: dmsg.map(|a| a.pk),
            probe: probe::node(control),
            task,
        })
    })
}

/// The `skytower up` flags.
#[derive(Clone, Debug, clap::Args)]
pub struct UpArgs {
    /// Directory of the network's keys, configs, control socket and table (created 0700;
    /// reused by the next run).
    #[arg(long, default_value = node::DEFAULT_DIR, value_name = "DIR")]
    pub dir: PathBuf,
    /// Component i listens on 127.0.0.1:<base-port + i>; 0 picks free ports.
    #[arg(long, default_value_t = 0, value_name = "PORT")]
    pub base_port: u16,
    /// Print the table as one line of JSON (for scripts).
    #[arg(long)]
    pub json: bool,
    /// How long to wait for every health check.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub ready_timeout: Duration,
    /// Shutdown grace period of each component.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub grace: Duration,
}

struct Running {
    component: Component,
    started: Started,
    shutdown: CancellationToken,
}

/// Starts `list` as described by `args`, waits until every component is healthy, prints the
/// table to stdout and writes `<dir>/network.json`, runs until `shutdown` completes, then
/// stops the components in reverse order.
///
/// # Errors
///
/// [`UpError`]; the components already started are stopped first.
pub async fn up(
    args: &UpArgs,
    list: &[Component],
    shutdown: impl Future<Output = ()>,
) -> Result<(), UpError> {
    let began = Instant::now();
    let mut shutdown = std::pin::pin!(shutdown);
    let control = args.dir.join(node::CONTROL_SOCKET);
    if ControlClient::new(&control).info().await.is_ok() {
        return Err(UpError::AlreadyRunning {
            dir: args.dir.clone(),
            control,
        });
    }
    node::ensure_private_dir(&args.dir)?;
    let keys = args.dir.join("keys");
    node::ensure_private_dir(&keys)?;
    if args.base_port != 0 && args.base_port as usize + list.len() > 65_536 {
        return Err(UpError::Ports {
            base: args.base_port,
            count: list.len(),
        });
    }
    let spinner = table::spinner();
    let mut running: Vec<Running> = Vec::new();
    let mut discovery_url: Option<String> = None;
    let mut earlier: Vec<EarlierComponent> = Vec::new();
    let result = async {
        for (i, component) in list.iter().enumerate() {
            spinner.set_message(format!("starting {}", component.name));
            let key_path = keys.join(format!("{}.key", component.name));
            let key = node::load_or_generate_key(&key_path)?;
            let port = if args.base_port == 0 {
                0
            } else {
                args.base_port + i as u16
            };
            let token = CancellationToken::new();
            let ctx = ComponentCtx {
                name: component.name,
                dir: args.dir.clone(),
                key_path,
                key: Some(key),
                addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
                discovery_url: discovery_url.clone(),
                grace: args.grace,
                shutdown: token.clone(),
                earlier: earlier.clone(),
            };
            let started = (component.start)(ctx).await?;
            earlier.push(EarlierComponent {
                name: component.name,
                kind: component.kind,
                http: started.http,
                dmsg: started.dmsg,
            });
            if component.provides_discovery {
                discovery_url = started.http.map(|a| format!("http://{a}"));
            }
            running.push(Running {
                component: *component,
                started,
                shutdown: token,
            });
        }
        Ok::<(), UpError>(())
    }
    .await;
    if let Err(e) = result {
        spinner.finish_and_clear();
        stop_all(running, args.grace).await;
        return Err(e);
    }

    // Wait until every probe says ok.
    let deadline = Instant::now() + args.ready_timeout;
    let rows = loop {
        let rows = probe_all(&running).await;
        if rows.iter().all(|r| r.health == HealthStatus::Ok) {
            break rows;
        }
        let pending = rows
            .iter()
            .filter(|r| r.health != HealthStatus::Ok)
            .map(|r| format!("{} ({}: {})", r.name, r.health, r.detail))
            .collect::<Vec<_>>()
            .join(", ");
        if let Some(e) = ended(&running) {
            spinner.finish_and_clear();
            stop_all(running, args.grace).await;
            return Err(e);
        }
        if Instant::now() >= deadline {
            spinner.finish_and_clear();
            if !args.json {
                println!("{}", table::render(&rows));
            }
            stop_all(running, args.grace).await;
            return Err(UpError::NotReady {
                waited: args.ready_timeout,
                pending,
            });
        }
        spinner.set_message(format!("waiting for {pending}"));
        tokio::select! {
            () = &mut shutdown => {
                spinner.finish_and_clear();
                stop_all(running, args.grace).await;
                return Ok(());
            }
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    };
    spinner.finish_and_clear();

    let network = NetworkTable {
        status: "ready".to_owned(),
        dir: args.dir.clone(),
        discovery: discovery_url,
        control: args.dir.join(node::CONTROL_SOCKET),
        components: rows,
    };
    let table_path = args.dir.join(NETWORK_FILE);
    network.save(&table_path).map_err(|source| UpError::Write {
        path: table_path.clone(),
        source,
    })?;
    table::print(&network, args.json, began.elapsed());

    // Run until the signal, or until a component stops on its own.
    let outcome = loop {
        tokio::select! {
            () = &mut shutdown => break Ok(()),
            () = tokio::time::sleep(Duration::from_millis(200)) => {
                if let Some(e) = ended(&running) {
                    break Err(e);
                }
            }
        }
    };
    if let Err(e) = std::fs::remove_file(&table_path) {
        tracing::debug!(error = %e, "removing the network table");
    }
    if !args.json {
        eprintln!("stopping the network…");
    }
    stop_all(running, args.grace).await;
    outcome
}

/// The component whose task ended before the network stopped, if any.
fn ended(running: &[Running]) -> Option<UpError> {
    running
        .iter()
        .find(|r| r.started.task.is_finished())
        .map(|r| UpError::Stopped {
            name: r.component.name,
            reason: "its task ended (see the log above)".to_owned(),
        })
}

async fn probe_all(running: &[Running]) -> Vec<ComponentRow> {
    let probes = running.iter().map(|r| (r.started.probe)());
    let healths = futures_util::future::join_all(probes).await;
    running
        .iter()
        .zip(healths)
        .map(|(r, h)| ComponentRow {
            name: r.component.name.to_owned(),
            kind: r.component.kind.to_owned(),
            http: r.started.http,
            dmsg: r.started.dmsg.map(|a| a.to_string()),
            public_key: r.started.public_key,
            health: h.status,
            detail: h.detail,
        })
        .collect()
}

/// Stops the components in reverse start order, each within `grace` (plus a margin).
async fn stop_all(running: Vec<Running>, grace: Duration) {
    for r in running.into_iter().rev() {
        r.shutdown.cancel();
        let name = r.component.name;
        let abort = r.started.task.abort_handle();
        match tokio::time::timeout(grace + Duration::from_secs(2), r.started.task).await {
            Ok(Ok(Ok(()))) => tracing::debug!(name, "stopped"),
            Ok(Ok(Err(e))) => tracing::warn!(name, error = %e, "stopped with an error"),
            Ok(Err(e)) => tracing::warn!(name, error = %e, "task failed"),
            Err(_) => {
                tracing::warn!(name, "did not stop within its grace period; aborted");
                abort.abort();
            }
        }
    }
}

/// The `skytower up` command: [`up`] with [`components`] on a multi-threaded runtime until
/// SIGINT/SIGTERM.
///
/// # Errors
///
/// [`UpError`].
pub fn run_cli(args: UpArgs) -> Result<(), UpError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(UpError::Signals)?;
    runtime.block_on(async {
        let shutdown = crate::svcmode::shutdown_signal().map_err(UpError::Signals)?;
        up(&args, &components(), shutdown).await
    })
}

/// The network table `up` wrote into `dir`, if it is running.
pub fn running_network(dir: &Path) -> Option<NetworkTable> {
    NetworkTable::load(&dir.join(NETWORK_FILE))
}
