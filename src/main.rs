//! The `skytower` command.
//!
//! Today it manages identity keys and runs the DMSG relay server (`skytower dmsg-server`, the
//! same flags and config file as the `dmsg-server` binary); the network commands (`up`, the node
//! daemon, `sessions`, `connect-all`, fetch) and the other services arrive with their issues.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use skytower::services::dmsg_server::{self, DmsgServerArgs};
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
    skytower::services::cli::init_logging();
    let cli = Cli::parse();
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
    }
    Ok(())
}
