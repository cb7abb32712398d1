//! yamux over any byte stream, driven by one owner task (`docs/protocol.md` §2.4).
//!
//! yamux 0.14 moves bytes only while its `Connection` is polled, our own writes included, so
//! [`Mux::spawn`] gives the connection to a task that polls it continuously and never blocks on
//! anyone: outbound opens arrive through a channel ([`Opener`]), inbound streams leave through a
//! bounded queue filled with `try_send` (a stream that finds the queue full is reset and counted,
//! the session goes on). The [`Mux`] value owns the task: dropping it (or [`Mux::close`]) closes
//! the connection gracefully (GoAway, bounded by [`MuxConfig::close_timeout`]).
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use skytower_transports::dmsg::mux::{Mux, MuxConfig, Mode};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! let (a, b) = tokio::io::duplex(1 << 16);
//! let client = Mux::spawn(a, Mode::Client, MuxConfig::default());
//! let mut server = Mux::spawn(b, Mode::Server, MuxConfig::default());
//!
//! let mut out = client.opener().open().await.unwrap();
//! out.write_all(b"ping").await.unwrap(); // yamux opens lazily: the dialer writes first
//! let mut inbound = server.accept().await.unwrap();
//! let mut buf = [0u8; 4];
//! inbound.read_exact(&mut buf).await.unwrap();
//! assert_eq!(&buf, b"ping");
//! # });
//! ```

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt, TokioAsyncReadCompatExt};

pub use yamux::Mode;

/// Settings of a multiplexed session.
#[derive(Clone, Debug)]
pub struct MuxConfig {
    /// Most streams open at once on this connection (yamux refuses more). Default 2048.
    pub max_streams: usize,
    /// Largest data frame yamux sends; bigger writes are split. Default 256 KiB (measured best in
    /// `shared/reference/relay-ceiling.md`).
    pub split_send_size: usize,
    /// Inbound streams waiting for [`Mux::accept`]; beyond it new streams are reset. Default 256.
    pub accept_queue: usize,
    /// Outbound open requests waiting for the driver. Default 256.
    pub open_queue: usize,
    /// How long a graceful close may take before the connection is dropped. Default 5 s.
    pub close_timeout: Duration,
}

impl Default for MuxConfig {
    fn default() -> Self {
        MuxConfig {
            max_streams: 2048,
            split_send_size: 256 * 1024,
            accept_queue: 256,
            open_queue: 256,
            close_timeout: Duration::from_secs(5),
        }
    }
}

impl MuxConfig {
    fn yamux(&self) -> yamux::Config {
        let mut cfg = yamux::Config::default();
        // The window cap must be ≥ 256 KiB × max_streams (yamux asserts it): raise it first.
        let window = self.max_streams.max(1) * 256 * 1024;
        cfg.set_max_connection_receive_window(Some(window.max(1 << 30)));
        cfg.set_max_num_streams(self.max_streams.max(1));
        cfg.set_split_send_size(self.split_send_size.max(1024));
        cfg
    }
}

/// Errors of the multiplexer.
#[derive(Debug, thiserror::Error)]
pub enum MuxError {
    /// The session is closed (by us, by the peer, or after an I/O error).
    #[error("session closed")]
    Closed,
    /// yamux refused or failed.
    #[error("yamux: {0}")]
    Yamux(#[from] yamux::ConnectionError),
}

/// Live counters of one multiplexed session (for `/health`, the CLI and leak tests).
#[derive(Debug, Default)]
pub struct MuxStats {
    open_streams: AtomicUsize,
    opened_total: AtomicU64,
    accepted_total: AtomicU64,
    reset_unaccepted: AtomicU64,
}

impl MuxStats {
    /// Streams currently open (not yet dropped) on this session, both directions.
    pub fn open_streams(&self) -> usize {
        self.open_streams.load(Ordering::Relaxed)
    }
    /// Outbound streams opened since the start.
    pub fn opened_total(&self) -> u64 {
        self.opened_total.load(Ordering::Relaxed)
    }
    /// Inbound streams handed to the acceptor since the start.
    pub fn accepted_total(&self) -> u64 {
        self.accepted_total.load(Ordering::Relaxed)
    }
    /// Inbound streams reset because the accept queue was full or nobody accepts.
    pub fn reset_unaccepted(&self) -> u64 {
        self.reset_unaccepted.load(Ordering::Relaxed)
    }
}

type OpenReply = oneshot::Sender<Result<yamux::Stream, MuxError>>;

/// A cloneable handle that opens outbound streams on a session.
#[derive(Clone, Debug)]
pub struct Opener {
    tx: mpsc::Sender<OpenReply>,
    stats: Arc<MuxStats>,
}

impl Opener {
    /// Opens a new outbound stream. Cancel-safe: dropping the future before it completes
    /// leaves nothing open (a stream the driver opened for it is dropped, which sends nothing
    /// because yamux opens lazily).
    pub async fn open(&self) -> Result<MuxStream, MuxError> {
        let (tx, rx) = oneshot::channel();
        // Waits for room in the open queue (callers bound the wait with their dial deadline).
        self.tx.send(tx).await.map_err(|_| MuxError::Closed)?;
        let stream = rx.await.map_err(|_| MuxError::Closed)??;
        self.stats.opened_total.fetch_add(1, Ordering::Relaxed);
        Ok(MuxStream::new(stream, self.stats.clone()))
    }

    /// Whether the session's driver has ended.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// The session's counters.
    pub fn stats(&self) -> &Arc<MuxStats> {
        &self.stats
    }
}

/// A multiplexed session: owns the driver task, yields inbound streams.
#[derive(Debug)]
pub struct Mux {
    opener: Opener,
    inbound: mpsc::Receiver<yamux::Stream>,
    close: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), MuxError>>>,
}

impl Mux {
    /// Starts a yamux session over `io` in `mode` and spawns its driver (needs a tokio runtime).
    pub fn spawn<T>(io: T, mode: Mode, config: MuxConfig) -> Mux
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let conn = yamux::Connection::new(io.compat(), config.yamux(), mode);
        let (open_tx, open_rx) = mpsc::channel(config.open_queue.max(1));
        let (in_tx, in_rx) = mpsc::channel(config.accept_queue.max(1));
        let (close_tx, close_rx) = oneshot::channel();
        let stats = Arc::new(MuxStats::default());
        let task = tokio::spawn(drive(
            conn,
            open_rx,
            in_tx,
            close_rx,
            config.close_timeout,
            stats.clone(),
        ));
        Mux {
            opener: Opener { tx: open_tx, stats },
            inbound: in_rx,
            close: Some(close_tx),
            task: Some(task),
        }
    }

    /// A handle to open outbound streams.
    pub fn opener(&self) -> Opener {
        self.opener.clone()
    }

    /// The session's counters.
    pub fn stats(&self) -> &Arc<MuxStats> {
        &self.opener.stats
    }

    /// The next inbound stream; `None` once the session is closed.
    pub async fn accept(&mut self) -> Option<MuxStream> {
        let s = self.inbound.recv().await?;
        Some(MuxStream::new(s, self.opener.stats.clone()))
    }

    /// Polls for the next inbound stream.
    pub fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<Option<MuxStream>> {
        self.inbound
            .poll_recv(cx)
            .map(|s| s.map(|s| MuxStream::new(s, self.opener.stats.clone())))
    }

    /// Splits off the inbound side, so accepting can run in its own task while this value
    /// keeps owning the session.
    pub fn take_inbound(&mut self) -> Inbound {
        let (_, empty) = mpsc::channel(1);
        Inbound {
            rx: std::mem::replace(&mut self.inbound, empty),
            stats: self.opener.stats.clone(),
        }
    }

    /// Closes the session gracefully and waits for the driver to end. Returns how it ended.
    pub async fn close(mut self) -> Result<(), MuxError> {
        if let Some(tx) = self.close.take() {
            let _ = tx.send(());
        }
        match self.task.take() {
            Some(task) => task.await.unwrap_or(Err(MuxError::Closed)),
            None => Ok(()),
        }
    }

    /// Waits until the session ends on its own (peer closed, I/O error) and returns why.
    pub async fn closed(&mut self) -> Result<(), MuxError> {
        match self.task.as_mut() {
            Some(task) => {
                let r = task.await.unwrap_or(Err(MuxError::Closed));
                self.task = None;
                r
            }
            None => Ok(()),
        }
    }
}

impl Drop for Mux {
    fn drop(&mut self) {
        // Dropping `close` tells the driver to close gracefully; it ends within `close_timeout`.
        self.close.take();
    }
}

/// The inbound half split off a [`Mux`] with [`Mux::take_inbound`].
#[derive(Debug)]
pub struct Inbound {
    rx: mpsc::Receiver<yamux::Stream>,
    stats: Arc<MuxStats>,
}

impl Inbound {
    /// The next inbound stream; `None` once the session is closed.
    pub async fn accept(&mut self) -> Option<MuxStream> {
        let s = self.rx.recv().await?;
        Some(MuxStream::new(s, self.stats.clone()))
    }
}

async fn drive<T>(
    mut conn: yamux::Connection<T>,
    mut open_rx: mpsc::Receiver<OpenReply>,
    in_tx: mpsc::Sender<yamux::Stream>,
    mut close_rx: oneshot::Receiver<()>,
    close_timeout: Duration,
    stats: Arc<MuxStats>,
) -> Result<(), MuxError>
where
    T: futures_util::AsyncRead + futures_util::AsyncWrite + Unpin,
{
    let mut pending: Option<OpenReply> = None;
    let ended = poll_fn(|cx| {
        // The owner asked to close (or went away).
        if Pin::new(&mut close_rx).poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        // Outbound opens, one at a time (yamux returns Pending only on its ACK backlog).
        loop {
            if pending.is_none() {
                match open_rx.poll_recv(cx) {
                    Poll::Ready(Some(reply)) => pending = Some(reply),
                    Poll::Ready(None) | Poll::Pending => break,
                }
            }
            let Some(reply) = pending.take() else { break };
            if reply.is_closed() {
                continue; // the caller gave up
            }
            match conn.poll_new_outbound(cx) {
                Poll::Ready(r) => {
                    // If the caller is gone now, the stream is dropped unused (nothing was sent).
                    let _ = reply.send(r.map_err(MuxError::from));
                }
                Poll::Pending => {
                    pending = Some(reply);
                    break;
                }
            }
        }
        // Inbound streams and all I/O.
        loop {
            match conn.poll_next_inbound(cx) {
                Poll::Ready(Some(Ok(stream))) => match in_tx.try_send(stream) {
                    Ok(()) => {
                        stats.accepted_total.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        drop(e.into_inner()); // reset
                        stats.reset_unaccepted.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!("inbound stream reset: accept queue full or closed");
                    }
                },
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(MuxError::from(e)))),
                Poll::Ready(None) => return Poll::Ready(Some(Ok(()))),
                Poll::Pending => return Poll::Pending,
            }
        }
    })
    .await;
    if let Some(reply) = pending.take() {
        let _ = reply.send(Err(MuxError::Closed));
    }
    open_rx.close();
    match ended {
        Some(result) => {
            tracing::debug!(?result, "session ended");
            result
        }
        None => {
            let closing = poll_fn(|cx| conn.poll_close(cx));
            match tokio::time::timeout(close_timeout, closing).await {
                Ok(r) => r.map_err(MuxError::from),
                Err(_) => {
                    tracing::debug!("graceful close timed out; dropping the connection");
                    Ok(())
                }
            }
        }
    }
}

/// One multiplexed stream: tokio `AsyncRead + AsyncWrite`.
///
/// `shutdown` half-closes (FIN); dropping without shutdown resets the stream.
#[derive(Debug)]
pub struct MuxStream {
    io: Compat<yamux::Stream>,
    stats: Arc<MuxStats>,
}

impl MuxStream {
    fn new(stream: yamux::Stream, stats: Arc<MuxStats>) -> Self {
        stats.open_streams.fetch_add(1, Ordering::Relaxed);
        MuxStream {
            io: stream.compat(),
            stats,
        }
    }

    /// yamux's id of this stream.
    pub fn id(&self) -> u32 {
        self.io.get_ref().id().val()
    }
}

impl Drop for MuxStream {
    fn drop(&mut self) {
        self.stats.open_streams.fetch_sub(1, Ordering::Relaxed);
    }
}

crate::io_delegate::delegate_async_io!(MuxStream, io);

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    fn pair(cfg: MuxConfig) -> (Mux, Mux) {
        let (a, b) = duplex(1 << 20);
        (
            Mux::spawn(a, Mode::Client, cfg.clone()),
            Mux::spawn(b, Mode::Server, cfg),
        )
    }

    #[tokio::test]
    async fn many_concurrent_streams_echo() {
        let (client, mut server) = pair(MuxConfig::default());
        let server_stats = server.stats().clone();
        let echo = tokio::spawn(async move {
            let mut tasks = Vec::new();
            while let Some(mut s) = server.accept().await {
                tasks.push(tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = s.read(&mut buf).await.unwrap();
                        if n == 0 {
                            break;
                        }
                        s.write_all(&buf[..n]).await.unwrap();
                    }
                    s.shutdown().await.unwrap();
                }));
                if tasks.len() == 100 {
                    break;
                }
            }
            for t in tasks {
                t.await.unwrap();
            }
            server
        });
        let opener = client.opener();
        let mut clients = Vec::new();
        for i in 0..100u32 {
            let opener = opener.clone();
            clients.push(tokio::spawn(async move {
                let mut s = opener.open().await.unwrap();
                let data: Vec<u8> = (0..100_000u32).map(|j| (i + j) as u8).collect();
                s.write_all(&data).await.unwrap();
                s.shutdown().await.unwrap();
                let mut back = Vec::new();
                s.read_to_end(&mut back).await.unwrap();
                assert!(back == data);
            }));
        }
        for c in clients {
            c.await.unwrap();
        }
        let server = echo.await.unwrap();
        assert_eq!(client.stats().opened_total(), 100);
        assert_eq!(client.stats().open_streams(), 0);
        assert_eq!(server_stats.accepted_total(), 100);
        assert_eq!(server_stats.open_streams(), 0);
        drop(server);
    }

    #[tokio::test]
    async fn full_accept_queue_resets_only_the_new_stream() {
        let cfg = MuxConfig {
            accept_queue: 1,
            ..MuxConfig::default()
        };
        let (client, mut server) = pair(cfg);
        let opener = client.opener();
        let mut first = opener.open().await.unwrap();
        first.write_all(b"1").await.unwrap();
        first.flush().await.unwrap();
        let mut second = opener.open().await.unwrap();
        second.write_all(b"2").await.unwrap();
        second.flush().await.unwrap();
        // The second stream is reset by the server (queue of 1 holds the first).
        let mut buf = [0u8; 1];
        let r = second.read(&mut buf).await;
        assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
        assert_eq!(server.stats().reset_unaccepted(), 1);
        // The first still works.
        let mut s1 = server.accept().await.unwrap();
        s1.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"1");
        s1.write_all(b"x").await.unwrap();
        s1.flush().await.unwrap();
        first.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"x");
    }

    #[tokio::test]
    async fn closing_one_side_ends_the_other_and_fails_opens() {
        let (client, mut server) = pair(MuxConfig::default());
        let opener = client.opener();
        let mut s = opener.open().await.unwrap();
        s.write_all(b"hi").await.unwrap();
        s.flush().await.unwrap();
        let mut inbound = server.accept().await.unwrap();
        client.close().await.unwrap();
        // The server's session ends cleanly; its streams see EOF or an error, never hang.
        assert!(server.closed().await.is_ok());
        let mut buf = Vec::new();
        let _ = inbound.read_to_end(&mut buf).await;
        assert!(matches!(opener.open().await, Err(MuxError::Closed)));
        assert!(opener.is_closed());
    }

    #[tokio::test]
    async fn broken_transport_ends_the_session_with_an_error() {
        let (a, b) = duplex(1 << 16);
        let mut server = Mux::spawn(b, Mode::Server, MuxConfig::default());
        let mut raw = a;
        // Not a yamux header: version byte 9.
        raw.write_all(&[9u8; 12]).await.unwrap();
        let r = server.closed().await;
        assert!(matches!(r, Err(MuxError::Yamux(_))), "{r:?}");
    }

    #[tokio::test]
    async fn dropped_open_future_leaves_nothing_open() {
        let (client, server) = pair(MuxConfig::default());
        let opener = client.opener();
        for _ in 0..1000 {
            let fut = opener.open();
            // Poll once and drop: either not yet answered or answered-and-dropped.
            let _ = futures_util::FutureExt::now_or_never(fut);
            tokio::task::yield_now().await;
        }
        tokio::task::yield_now().await;
        assert_eq!(client.stats().open_streams(), 0);
        // The session still works.
        let mut s = opener.open().await.unwrap();
        s.write_all(b"ok").await.unwrap();
        drop(server);
    }
}
