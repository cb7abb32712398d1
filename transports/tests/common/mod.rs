//! Helpers shared by the transports integration tests (`mod common;` in each).

#![allow(dead_code)]

use std::time::{Duration, Instant};

use skytower_transports::dmsg::ports::Listener;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The bound on every wait in these tests.
pub const T: Duration = Duration::from_secs(20);

/// Waits (polling every 5 ms) until `f` holds; panics after [`T`].
pub async fn eventually(what: &str, f: impl FnMut() -> bool) {
    eventually_within(T, what, f).await
}

/// Waits (polling every 5 ms) until `f` holds; panics after `limit`.
pub async fn eventually_within(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Echoes every stream accepted on `listener` (a client's or an endpoint's `listen`) until it
/// ends; returns its task.
pub fn echo(mut listener: Listener) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(mut s) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = tokio::io::split(&mut s);
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    })
}

/// Writes `msg` on `s`, shuts its write side and reads until EOF (within [`T`]): what the peer
/// sent back.
pub async fn send_and_read_back<S>(s: &mut S, msg: &[u8]) -> Vec<u8>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    s.write_all(msg).await.unwrap();
    s.shutdown().await.unwrap();
    let mut back = Vec::new();
    tokio::time::timeout(T, s.read_to_end(&mut back))
        .await
        .unwrap()
        .unwrap();
    back
}
