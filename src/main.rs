//! The `skytower` command: a thin clap front end over `skytower_services`.
//!
//! `up` (a whole local network), `node` (the node daemon), the operator commands
//! (`dmsg sessions|connect-all|curl|discovery`), each service alone (`dmsg-discovery`,
//! `dmsg-server`, ...), and key management (`keygen`, `pubkey`). See `docs/cli.md`.
//!
//! Invoked under a service's name (a link: `ln -s skytower route-finder`), the binary runs that
//! service, so deployments can keep the Go system's binary names ([`MULTICALL`]).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use skytower::services::dmsg_server::{self, DmsgServerArgs};
use skytower::services::node::NodeArgs;
use skytower::services::ops::DmsgCommand;
use skytower::services::up::UpArgs;
use skytower::transports::identity::{KeyFormat, SecretKey};

const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("SKYTOWER_GIT_COMMIT"),
    ")"
);

/// skytower: overlay networks out of tower services.
#[derive(Debug, Parser)]
#[command(name = "skytower", version = VERSION, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a whole local network (dmsg-discovery, two dmsg-servers, a node) on loopback.
    Up(UpArgs),
    /// Run a node: a long-running DMSG client with a local control API.
    Node(Box<NodeArgs>),
    /// Operator commands: talk to a node's control API, or read discovery.
    Dmsg {
        #[command(subcommand)]
        command: DmsgCommand,
    },
    /// Generate an identity key and write it to a key file (mode 0600).
    Keygen {
        /// Where to write the key file.
        #[arg(long, short, default_value = "skytower.key")]
        out: PathBuf,
        /// Key file format.
        #[arg(long, value_enum, default_value_t = Format::Json)]
        format: Format,
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Print the public key (the DMSG address) of a key file.
    Pubkey {
        /// The key file to read.
        #[arg(long, short)]
        key: PathBuf,
    },
    /// Run a DMSG relay server (the same flags and config file as the `dmsg-server` binary).
    #[command(after_help = dmsg_server::AFTER_HELP)]
    DmsgServer(Box<DmsgServerArgs>),
    /// Run the DMSG discovery service (`docs/api/dmsg-discovery.md`).
    DmsgDiscovery(Box<skytower::services::dmsg_discovery::Args>),
    /// Run the uptime tracker (`docs/api/uptime-tracker.md`).
    UptimeTracker(Box<skytower::services::uptime_tracker::Args>),
    /// Run the config bootstrapper (`docs/api/config-bootstrapper.md`).
    ConfigBootstrapper(Box<skytower::services::config_bootstrapper::Args>),
    /// Run the service discovery (`docs/api/service-discovery.md`).
    ServiceDiscovery(Box<skytower::services::service_discovery::Args>),
    /// Run the transport discovery (`docs/api/transport-discovery.md`).
    TransportDiscovery(Box<skytower::services::transport_discovery::Args>),
    /// Run the route finder (`docs/api/route-finder.md`).
    RouteFinder(Box<skytower::services::route_finder::Args>),
    /// Run the address resolver (`docs/api/address-resolver.md`): HTTP and UDP on one port.
    AddressResolver(Box<skytower::services::address_resolver::Args>),
}

/// The service commands that also answer to their own name when the binary is invoked under
/// it (busybox style): `route-finder --mode dual ...` is `skytower route-finder --mode dual ...`.
const MULTICALL: &[&str] = &[
    "dmsg-server",
    "dmsg-discovery",
    "transport-discovery",
    "route-finder",
    "address-resolver",
    "service-discovery",
    "uptime-tracker",
    "config-bootstrapper",
];

/// The command line, with the service's name put in as the subcommand when the binary was
/// invoked under one of the [`MULTICALL`] names.
fn command_line() -> Vec<OsString> {
    let mut args: Vec<OsString> = std::env::args_os().collect();
    let invoked = args
        .first()
        .and_then(|a| Path::new(a).file_name())
        .and_then(|n| n.to_str())
        .and_then(|n| MULTICALL.iter().find(|m| **m == n));
    if let Some(name) = invoked {
        args.splice(0..1, [OsString::from("skytower"), OsString::from(*name)]);
    }
    args
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    /// `{"public_key": "...", "secret_key": "..."}`
    Json,
    /// One line: the 64-hex-char secret seed.
    Hex,
}

impl From<Format> for KeyFormat {
    fn from(f: Format) -> Self {
        match f {
            Format::Json => KeyFormat::Json,
            Format::Hex => KeyFormat::Hex,
        }
    }
}

fn main() -> ExitCode {
    // Fewer page faults per relayed byte (glibc only; see `transports::malloc`).
    skytower::transports::malloc::tune();
    let cli = Cli::parse_from(command_line());
    // The interactive commands print tables; their logs stay quiet unless RUST_LOG says more.
    // (`up`'s health probes get 503s while components start; tower-http logs those as errors.)
    let default_log = match cli.command {
        Command::Up(_) => "warn,tower_http::trace::on_failure=off",
        Command::Dmsg { .. } | Command::Keygen { .. } | Command::Pubkey { .. } => "warn",
        _ => "info",
    };
    skytower::services::cli::init_logging_with_default(default_log);
    if let Command::Dmsg { command } = cli.command {
        return match skytower::services::ops::run_cli(command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(e.exit_code())
            }
        };
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}", skytower::services::cli::error_report(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    match cli.command {
        Command::Up(args) => skytower::services::up::run_cli(args)?,
        Command::Node(args) => skytower::services::node::run_cli(*args)?,
        Command::Dmsg { .. } => {} // handled in main
        Command::Keygen { out, format, force } => {
            let key = SecretKey::generate()?;
            if force {
                key.save_replacing(&out, format.into())?;
            } else {
                key.save(&out, format.into())?;
            }
            println!("{}", key.public_key());
            tracing::info!(path = %out.display(), "wrote key file");
        }
        Command::Pubkey { key } => {
            let key = SecretKey::load(&key)?;
            println!("{}", key.public_key());
        }
        Command::DmsgServer(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(dmsg_server::execute(*args))?;
        }
        Command::DmsgDiscovery(args) => skytower::services::dmsg_discovery::run_cli(*args)?,
        Command::UptimeTracker(args) => skytower::services::uptime_tracker::run_cli(*args)?,
        Command::ConfigBootstrapper(args) => {
            skytower::services::config_bootstrapper::run_cli(*args)?
        }
        Command::ServiceDiscovery(args) => skytower::services::service_discovery::run_cli(*args)?,
        Command::TransportDiscovery(args) => {
            skytower::services::transport_discovery::run_cli(*args)?
        }
        Command::RouteFinder(args) => skytower::services::route_finder::run_cli(*args)?,
        Command::AddressResolver(args) => skytower::services::address_resolver::run_cli(*args)?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn every_multicall_name_is_a_subcommand() {
        let cli = Cli::command();
        for name in MULTICALL {
            assert!(cli.find_subcommand(name).is_some(), "{name}");
        }
    }
}
