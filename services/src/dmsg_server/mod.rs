//! The `dmsg-server` service: a config file and flags around the DMSG relay server
//! ([`skytower_transports::dmsg::server::Server`]).
//!
//! - [`DmsgServerConfig`]: the TOML config file (`docs/dmsg-server.md`), unknown fields
//!   rejected, every value validated with an error naming its field;
//! - [`DmsgServerArgs`]: the clap flags shared by the `dmsg-server` binary and
//!   `skytower dmsg-server`; flags override the file, the file overrides the defaults;
//! - [`DmsgServer::start`] / [`DmsgServer::run_until`] and [`run`]: load or generate the key,
//!   bind, log stats periodically, shut down gracefully (bounded) when the given future
//!   completes; [`execute`] is what the binaries run (signals, `--print-config`).
//!
//! With a `discovery` URL the server registers its entry with that dmsg-discovery, keeps it fresh
//! and deletes it on shutdown (`transports::dmsg::server::Server::register`).
//!
//! ```
//! use skytower_services::dmsg_server::DmsgServerConfig;
//!
//! let config = DmsgServerConfig::from_toml_str(r#"
//!     listen = "127.0.0.1:0"
//!     [limits]
//!     max_sessions = 100
//!     bridge_idle_timeout = "2m"
//! "#).unwrap();
//! assert_eq!(config.server_config().max_sessions, 100);
//! assert_eq!(config.limits.bridge_idle_timeout.as_secs(), 120);
//!
//! let err = DmsgServerConfig::from_toml_str("[limits]\nmax_sessions = 0").unwrap_err();
//! assert_eq!(err.to_string(), "limits.max_sessions: must be at least 1");
//! ```

mod args;
pub(crate) mod config;
mod run;

pub use args::{AFTER_HELP, DmsgServerArgs};
pub use config::{
    ConfigError, DEFAULT_KEY_FILE, DEFAULT_LISTEN, DEFAULT_SHUTDOWN_GRACE, DEFAULT_STATS_INTERVAL,
    DmsgServerConfig, Limits,
};
pub use run::{DmsgServer, RunError, execute, run};
