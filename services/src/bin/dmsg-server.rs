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
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
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
            // The messages already carry their causes; print a cause only if it adds something.
            let mut shown = e.to_string();
            eprintln!("error: {shown}");
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                let text = s.to_string();
                if !shown.contains(&text) {
                    eprintln!("  caused by: {text}");
                    shown.push_str(&text);
                }
                source = s.source();
            }
            ExitCode::FAILURE
        }
    }
}
