//! The shared service mode: one set of flags for every service binary, and [`serve`], which
//! runs the same tower HTTP service over plain HTTP, over HTTP on DMSG, or both.
//!
//! - **Flags** ([`SvcArgs`], flattened into each binary's parser): `--addr` (HTTP listen
//!   address), `--key` (DMSG key file), `--discovery` (dmsg-discovery URL), `--dmsg-port`
//!   (default 80), `--mode http|dmsg|dual` (default `http`; `dmsg` and `dual` need `--key`
//!   and `--discovery`, else [`SvcArgs::resolve`] fails with a message saying so), `--grace`
//!   (shutdown grace period, default 10 s), `--metrics ADDR` (Prometheus text metrics on a
//!   separate listener, see [`metrics`]).
//! - **Serving** ([`serve`] / [`SvcServer`]): in DMSG modes the service starts and owns a
//!   [`dmsg::Client`](skytower_transports::dmsg::Client) (sessions from discovery, its entry
//!   published) listening on `--dmsg-port`; it is closed, and its entry removed, at the end.
//!   Each deployment service's server type is a [`SvcHandle`] over the service (accessors and
//!   `serve` shared), and its [`Maintain`] task (purge, refresh, scrape) runs beside it while
//!   it is served ([`SvcServer::run_beside`]).
//!   Every connection (TCP or DMSG) runs hyper's HTTP/1 server over a clone of the stack
//!   `SetRequestId(x-request-id) ▸ Trace ▸ PropagateRequestId ▸ request metrics ▸ Health ▸
//!   your service`; each
//!   request carries its [`Peer`](skytower_transports::connector::Peer) in its extensions.
//!   Connections are bounded ([`SvcConfig::max_connections`]), as is the time to send headers.
//! - **`/health`** (the [`HealthLayer`](skytower_layers::HealthLayer), service name and
//!   version): in DMSG modes a `dmsg` check reports the DMSG address (`pk:port`), the
//!   connected servers, sessions and streams (`degraded` while no session is up).
//! - **Graceful shutdown**: when the shutdown future completes ([`shutdown_signal`] for
//!   binaries: SIGINT/SIGTERM, a second one exits at once), every listener stops accepting,
//!   in-flight requests finish for up to `--grace` (hyper-util's `GracefulShutdown` under a
//!   timeout; idle keep-alive connections are closed), the rest are closed, and the DMSG
//!   client is closed, deleting its discovery entry.
//!
//! See `docs/service-mode.md`.
//!
//! # Example
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use axum::{Router, routing::get};
//! use skytower_services::svcmode::{SvcConfig, SvcServer};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! let app = Router::new().route("/hello", get(|| async { "hello" }));
//! let config = SvcConfig { addr: "127.0.0.1:0".parse()?, ..SvcConfig::default() };
//! let server = SvcServer::start(config, "example", app).await?;
//! let addr = server.http_addr().expect("mode http listens on TCP");
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let running = tokio::spawn(server.run_until(async { let _ = stopped.await; }));
//!
//! let mut tcp = tokio::net::TcpStream::connect(addr).await?;
//! tcp.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await?;
//! let mut response = String::new();
//! tcp.read_to_string(&mut response).await?;
//! assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
//! assert!(response.contains("x-request-id"));
//! assert!(response.contains(r#""service":"example""#));
//!
//! let _ = stop.send(());
//! running.await??;
//! # Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
//! # }).unwrap();
//! ```
//!
//! A binary:
//!
//! ```no_run
//! use clap::Parser;
//! use skytower_services::svcmode::{self, SvcArgs};
//!
//! #[derive(Parser)]
//! struct Cli {
//!     #[command(flatten)]
//!     svc: SvcArgs,
//! }
//!
//! #[tokio::main]
//! async fn main() -> std::process::ExitCode {
//!     let cli = Cli::parse();
//!     let app = axum::Router::new().route("/", axum::routing::get(|| async { "hi" }));
//!     let run = async {
//!         let config = cli.svc.resolve()?;
//!         let shutdown = svcmode::shutdown_signal().map_err(svcmode::SvcError::Signals)?;
//!         svcmode::serve(config, "my-service", app, shutdown).await
//!     };
//!     match run.await {
//!         Ok(()) => std::process::ExitCode::SUCCESS,
//!         Err(e) => {
//!             eprintln!("error: {e}");
//!             std::process::ExitCode::FAILURE
//!         }
//!     }
//! }
//! ```

mod config;
mod handle;
pub mod metrics;
mod serve;
mod signal;

use std::borrow::Cow;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use skytower_layers::BoxError;
use tower::Service;

pub use config::{
    DEFAULT_ADDR, DEFAULT_DMSG_PORT, DEFAULT_GRACE, DEFAULT_MAX_CONNECTIONS, Mode, SvcArgs,
    SvcConfig,
};
pub(crate) use config::{bind_tcp, load_key};
pub use handle::{Maintain, SvcHandle};
pub use serve::SvcServer;
pub use signal::{FORCED_EXIT_CODE, ShutdownSignal, block_on_until_signal, shutdown_signal};

/// Why a service could not be started or served.
#[derive(Debug, thiserror::Error)]
pub enum SvcError {
    /// `--mode dmsg|dual` without a key.
    #[error(
        "--mode {mode} needs a DMSG key: pass --key FILE (create one with `skytower keygen`), or use --mode http"
    )]
    KeyRequired {
        /// The mode asked for.
        mode: Mode,
    },
    /// `--mode dmsg|dual` without a discovery.
    #[error("--mode {mode} needs a dmsg-discovery: pass --discovery URL, or use --mode http")]
    DiscoveryRequired {
        /// The mode asked for.
        mode: Mode,
    },
    /// The Prometheus recorder could not be installed (another global `metrics` recorder?).
    #[error("installing the metrics recorder: {0}")]
    Metrics(String),
    /// Too many scrape hooks.
    #[error("too many on_scrape hooks (at most {0})")]
    TooManyHooks(usize),
    /// The key file could not be read.
    #[error("reading the DMSG key {}: {source}", path.display())]
    Key {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: skytower_transports::identity::KeyFileError,
    },
    /// A bad `--discovery` URL.
    #[error("--discovery: {0}")]
    DiscoveryUrl(#[source] skytower_transports::dmsg::disc_http::HttpDiscoveryError),
    /// A configuration value out of range.
    #[error("invalid service configuration: {0}")]
    Invalid(&'static str),
    /// The HTTP address could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The DMSG port could not be listened on.
    #[error("listening on DMSG port {port}: {source}")]
    DmsgListen {
        /// The port.
        port: u16,
        /// Why.
        #[source]
        source: skytower_transports::dmsg::ports::PortError,
    },
    /// The health check could not be registered.
    #[error("registering the dmsg health check: {0}")]
    Health(String),
    /// Every listener failed before the shutdown.
    #[error("every listener closed")]
    ListenersClosed,
    /// The signal handlers could not be installed.
    #[error("installing signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    /// The tokio runtime could not be built.
    #[error("starting the tokio runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// Starts `service` as `name` with `config` (see [`SvcServer::start`]) and serves it until
/// `shutdown` completes, then shuts down gracefully (see [`SvcServer::run_until`]). Binaries
/// pass [`shutdown_signal`].
///
/// # Errors
///
/// As [`SvcServer::start`] and [`SvcServer::run_until`].
pub async fn serve<S, B>(
    config: SvcConfig,
    name: impl Into<Cow<'static, str>>,
    service: S,
    shutdown: impl Future<Output = ()>,
) -> Result<(), SvcError>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError> + std::fmt::Display,
{
    SvcServer::start(config, name, service)
        .await?
        .run_until(shutdown)
        .await
}
