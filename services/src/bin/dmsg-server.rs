//! `dmsg-server`: the DMSG relay server. Flags: `dmsg-server --help`; config file:
//! `docs/dmsg-server.md`.

use std::process::ExitCode;

use clap::Parser;
use skytower_services::dmsg_server::{AFTER_HELP, DmsgServerArgs, execute};

/// DMSG relay server: relays end-to-end encrypted streams between the clients connected to it.
#[derive(Debug, Parser)]
#[command(name = "dmsg-server", version, long_about = None, after_help = AFTER_HELP)]
struct Cli {
    #[command(flatten)]
    args: DmsgServerArgs,
}

fn main() -> ExitCode {
    // Fewer page faults per relayed byte (glibc only; see `skytower_transports::malloc`).
    skytower_transports::malloc::tune();
    let cli = Cli::parse();
    skytower_services::cli::init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(execute(cli.args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}", skytower_services::cli::error_report(&e));
            ExitCode::FAILURE
        }
    }
}
