//! What every skytower binary does the same way: logging setup and the one-line error report.
//!
//! ```
//! use skytower_services::cli::error_report;
//!
//! let inner = std::io::Error::other("connection refused");
//! let outer = std::io::Error::new(std::io::ErrorKind::Other, OuterError(inner));
//! # #[derive(Debug)] struct OuterError(std::io::Error);
//! # impl std::fmt::Display for OuterError {
//! #     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str("dial failed") }
//! # }
//! # impl std::error::Error for OuterError {
//! #     fn source(&self) -> Option<&(dyn std::error::Error + 'static)> { Some(&self.0) }
//! # }
//! assert_eq!(error_report(&outer), "error: dial failed\n  caused by: connection refused");
//! ```

use std::error::Error;
use std::time::Duration;

/// Logs to stderr through `tracing`, filtered by `RUST_LOG` (default `info`), coloured only on a
/// terminal.
pub fn init_logging() {
    init_logging_with_default("info");
}

/// Like [`init_logging`] with another default filter when `RUST_LOG` is not set (the
/// interactive commands, `up` and `dmsg …`, use `warn`: their output is the table).
pub fn init_logging_with_default(default: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// `error: <message>` followed by one `  caused by:` line per source that adds something the
/// messages above do not already say (our errors often carry their cause in the message).
pub fn error_report(e: &dyn Error) -> String {
    let mut shown = e.to_string();
    let mut out = format!("error: {shown}");
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !shown.contains(&text) {
            out.push_str("\n  caused by: ");
            out.push_str(&text);
            shown.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// The parser of the services' duration flags (`90s`, `5m`, `1h 30m`).
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

/// Tests of a service's flags: its flag group `A` as a whole command line.
#[cfg(test)]
#[derive(Debug, clap::Parser)]
pub(crate) struct TestCli<A: clap::Args> {
    /// The flags.
    #[command(flatten)]
    pub(crate) args: A,
}
