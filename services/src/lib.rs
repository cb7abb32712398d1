//! skytower services: the service binaries of the network.
//!
//! - [`dmsg_server`]: the DMSG relay server as a configurable service (binary `dmsg-server`, also
//!   `skytower dmsg-server`).
//! - [`dmsg_discovery`]: the DMSG discovery service (signed entries with TTLs, an embedded store
//!   and a Redis store, per-key rate limits; `skytower dmsg-discovery`).
//! - [`config_bootstrapper`]: serves the network's configuration (service URLs and their DMSG
//!   addresses scraped from `/health`, DMSG servers, lists) to new nodes
//!   (`skytower config-bootstrapper`).
//! - [`uptime_tracker`]: signed node heartbeats, online status and daily uptime (embedded or
//!   Redis store, retention, per-IP rate limit; `skytower uptime-tracker`).
//! - [`address_resolver`]: the address resolver (STCPR bindings over signed HTTP, SUDPH UDP
//!   handshakes through a bounded handshake queue, hole-punch notices; `skytower
//!   address-resolver`), with its node-side clients.
//! - [`service_discovery`]: the directory of services hosted on nodes (VPN, proxy, visor…;
//!   signed registrations with a TTL; `skytower service-discovery`).
//!
//! - [`svcmode`]: the shared service mode: one set of flags (`--addr --key --discovery
//!   --dmsg-port --mode http|dmsg|dual --grace`) and [`svcmode::serve`], which runs the same
//!   tower HTTP service over HTTP, DMSG-HTTP or both, with `/health`, trace and request-id
//!   layers and graceful shutdown.
//!
//! - [`transport_discovery`]: the registry of transports signed by both edges, with TTLs
//!   (`skytower transport-discovery`).
//! - [`route_finder`]: shortest routes over the live transport graph (`skytower route-finder`).
//! - [`node`]: the node daemon (a DMSG client with a control API on a Unix socket) and its typed
//!   client; [`up`]: a whole local network from an explicit component list (`skytower up`);
//!   [`ops`]: the operator commands (`skytower dmsg sessions|connect-all|curl|discovery`).
//!
//! The other services (service discovery, address resolver, ...) arrive with their
//! issues. The crate also re-exports the crates every service
//! builds on.
//!
//! # Example: config parsing
//!
//! ```
//! use std::time::Duration;
//! use skytower_services::dmsg_server::{DmsgServerArgs, DmsgServerConfig};
//!
//! let config = DmsgServerConfig::from_toml_str(r#"
//!     listen = "0.0.0.0:8081"
//!     public_addr = "dmsg.example.org:8081"
//!     key_file = "/var/lib/skytower/dmsg-server.key"
//!     [limits]
//!     handshake_timeout = "5s"
//! "#)?;
//! assert_eq!(config.limits.handshake_timeout, Duration::from_secs(5));
//! assert_eq!(config.limits.max_sessions, 2048); // defaults fill the rest
//!
//! // A typo is an error naming the field.
//! let err = DmsgServerConfig::from_toml_str("[limits]\nmax_sesions = 10").unwrap_err();
//! assert!(err.to_string().contains("unknown field `max_sesions`"));
//!
//! // Flags override the file (here: the defaults).
//! let args = DmsgServerArgs { max_sessions: Some(10), ..Default::default() };
//! assert_eq!(args.resolve()?.limits.max_sessions, 10);
//! # Ok::<(), skytower_services::dmsg_server::ConfigError>(())
//! ```
//!
//! # Example: running a server in-process
//!
//! ```no_run
//! use skytower_services::dmsg_server::{DmsgServer, DmsgServerConfig};
//!
//! # async fn demo() -> Result<(), skytower_services::dmsg_server::RunError> {
//! let mut config = DmsgServerConfig::default();
//! config.listen = "127.0.0.1:0".parse().unwrap();
//! config.key_file = "/tmp/dmsg-server.key".into();
//! config.generate_key = true;
//! let server = DmsgServer::start(config).await?;
//! println!("{} on {}", server.public_key(), server.local_addr());
//! server.run_until(async { let _ = tokio::signal::ctrl_c().await; }).await;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod address_resolver;
pub mod api;
pub mod auth;
pub mod cli;
pub mod config_bootstrapper;
pub mod dmsg_discovery;
pub mod dmsg_server;
mod http_stack;
pub mod node;
pub mod ops;
pub mod route_finder;
pub mod service_discovery;
pub mod svcmode;
pub mod transport_discovery;
pub mod ttl_store;
pub mod up;
pub mod uptime_tracker;

pub use skytower_layers as layers;
pub use skytower_transports as transports;
