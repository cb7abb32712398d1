//! skytower services: the service binaries of the network.
//!
//! - [`dmsg_server`]: the DMSG relay server as a configurable service (binary `dmsg-server`, also
//!   `skytower dmsg-server`).
//! - [`dmsg_discovery`]: the DMSG discovery service (signed entries with TTLs, an embedded store
//!   and a Redis store, per-key rate limits; `skytower dmsg-discovery`).
//!
//! - [`service_discovery`]: the directory of services hosted on nodes (VPN, proxy, visor…;
//!   signed registrations with a TTL; `skytower service-discovery`).
//! - [`svcmode`]: the shared service mode: one set of flags (`--addr --key --discovery
//!   --dmsg-port --mode http|dmsg|dual --grace`) and [`svcmode::serve`], which runs the same
//!   tower HTTP service over HTTP, DMSG-HTTP or both, with `/health`, trace and request-id
//!   layers and graceful shutdown.
//!
//! The other services (transport/service discovery, address resolver, ...) arrive with their
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

pub mod api;
pub mod auth;
pub mod cli;
pub mod dmsg_discovery;
pub mod dmsg_server;
pub mod service_discovery;
pub mod svcmode;
pub mod ttl_store;

pub use skytower_layers as layers;
pub use skytower_transports as transports;
