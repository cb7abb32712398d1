//! [`shutdown_signal`]: SIGINT/SIGTERM for the binaries, with a second signal exiting at once.

use std::future::Future;
use std::pin::Pin;

use super::SvcError;

/// The shutdown future [`block_on_until_signal`] hands to a service.
pub type ShutdownSignal = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// What every service binary's `run_cli` does: builds a multi-threaded tokio runtime, installs
/// [`shutdown_signal`], and runs `serve(shutdown)` on it to the end.
///
/// # Errors
///
/// [`SvcError::Runtime`] or [`SvcError::Signals`] (converted into `E`), or `serve`'s error.
pub fn block_on_until_signal<E, Fut>(serve: impl FnOnce(ShutdownSignal) -> Fut) -> Result<(), E>
where
    Fut: Future<Output = Result<(), E>>,
    E: From<SvcError>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| E::from(SvcError::Runtime(e)))?;
    runtime.block_on(async {
        let shutdown = shutdown_signal().map_err(|e| E::from(SvcError::Signals(e)))?;
        serve(Box::pin(shutdown)).await
    })
}

/// Exit status after a second signal (128 + SIGINT, as shells report an interrupted command).
pub const FORCED_EXIT_CODE: i32 = 130;

/// Installs SIGINT and SIGTERM handlers (Ctrl-C off Unix) now, so a signal arriving right after
/// start is not lost, and returns a future that completes on the first signal. After the first
/// signal, a second one exits the process at once with [`FORCED_EXIT_CODE`] (the watcher task
/// for that lives as long as the process, by design).
///
/// Call it inside a Tokio runtime.
///
/// # Errors
///
/// When the handlers cannot be installed.
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    let mut signals = Signals::install()?;
    Ok(async move {
        let name = signals.recv().await;
        tracing::info!("received {name}; shutting down gracefully (send it again to exit now)");
        tokio::spawn(async move {
            let name = signals.recv().await;
            tracing::warn!("received {name} again; exiting now");
            eprintln!("received {name} again; exiting now");
            std::process::exit(FORCED_EXIT_CODE);
        });
    })
}

struct Signals {
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
}

impl Signals {
    #[cfg(unix)]
    fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
        })
    }

    #[cfg(not(unix))]
    fn install() -> std::io::Result<Signals> {
        Ok(Signals {})
    }

    #[cfg(unix)]
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
        }
    }

    #[cfg(not(unix))]
    async fn recv(&mut self) -> &'static str {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}
