//! An in-process DMSG network for tests (feature `testing`): a discovery, N relay servers and
//! any number of clients on loopback, built with one call, with knobs to stop or restart a
//! server, drop sessions, or make discovery fail.
//!
//! ```
//! # tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap().block_on(async {
//! use skytower_transports::testing::TestNetwork;
//! use skytower_transports::dmsg::wire::Addr;
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! let net = TestNetwork::start(2).await;
//! let alice = net.client().await;
//! let bob = net.client().await;
//! let mut listener = bob.listen(80).unwrap();
//! net.wait_published(&bob).await;
//!
//! let mut stream = alice.dial(Addr::new(bob.public_key(), 80)).await.unwrap();
//! stream.write_all(b"hi").await.unwrap();
//! stream.flush().await.unwrap();
//! let mut inbound = listener.accept().await.unwrap();
//! let mut buf = [0u8; 2];
//! inbound.read_exact(&mut buf).await.unwrap();
//! assert_eq!(&buf, b"hi");
//! # });
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::dmsg::client::{Client, ClientConfig};
use crate::dmsg::disc::{
    DeleteRequest, Discovery, DiscoveryError, DiscoveryFuture, Entry, MemoryDiscovery,
};
use crate::dmsg::server::{Server, ServerConfig};
use crate::dmsg::session::SessionConfig;
use crate::identity::{PublicKey, SecretKey};

/// A [`Discovery`] wrapper that can be switched off and counts posts per key.
#[derive(Clone, Debug, Default)]
pub struct TestDiscovery {
    store: MemoryDiscovery,
    down: Arc<AtomicBool>,
    posts: Arc<Mutex<HashMap<PublicKey, usize>>>,
}

impl TestDiscovery {
    /// The underlying store.
    pub fn store(&self) -> &MemoryDiscovery {
        &self.store
    }

    /// Makes every call fail with `Unavailable` (true) or work again (false).
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::Relaxed);
    }

    /// Accepted and refused posts made by `pk` so far.
    pub fn posts(&self, pk: &PublicKey) -> usize {
        self.posts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(pk)
            .copied()
            .unwrap_or(0)
    }

    fn check(&self) -> Result<(), DiscoveryError> {
        if self.down.load(Ordering::Relaxed) {
            Err(DiscoveryError::Unavailable(
                "discovery is down (test)".into(),
            ))
        } else {
            Ok(())
        }
    }
}

impl Discovery for TestDiscovery {
    fn entry(&self, pk: PublicKey) -> DiscoveryFuture<'_, Entry> {
        match self.check() {
            Ok(()) => self.store.entry(pk),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }

    fn post_entry(&self, entry: Entry) -> DiscoveryFuture<'_, ()> {
        *self
            .posts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(entry.static_pk)
            .or_default() += 1;
        match self.check() {
            Ok(()) => self.store.post_entry(entry),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }

    fn delete_entry(&self, request: DeleteRequest) -> DiscoveryFuture<'_, ()> {
        match self.check() {
            Ok(()) => self.store.delete_entry(request),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }

    fn available_servers(&self) -> DiscoveryFuture<'_, Vec<Entry>> {
        match self.check() {
            Ok(()) => self.store.available_servers(),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }
}

struct ServerSlot {
    key_hex: String,
    addr: SocketAddr,
    server: Option<Server>,
}

/// An in-process DMSG network on loopback.
pub struct TestNetwork {
    discovery: TestDiscovery,
    servers: Vec<ServerSlot>,
    server_config: ServerConfig,
    client_config: ClientConfig,
}

impl std::fmt::Debug for TestNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestNetwork")
            .field("servers", &self.servers.len())
            .finish_non_exhaustive()
    }
}

/// Client settings suited to tests: short keep-alive, debounce and backoff.
pub fn test_client_config() -> ClientConfig {
    ClientConfig {
        session: SessionConfig {
            handshake_timeout: Duration::from_secs(5),
            stream_handshake_timeout: Duration::from_secs(5),
            ..SessionConfig::default()
        },
        keepalive: Duration::from_secs(1),
        publish_debounce: Duration::from_millis(100),
        backoff: (Duration::from_millis(50), Duration::from_millis(500)),
        maintain_interval: Duration::from_millis(50),
        ..ClientConfig::default()
    }
}

impl TestNetwork {
    /// `n` servers registered with a fresh discovery; clients get [`test_client_config`].
    pub async fn start(n: usize) -> TestNetwork {
        Self::with_config(n, ServerConfig::default(), test_client_config()).await
    }

    /// Like [`start`](Self::start) with explicit configs.
    pub async fn with_config(
        n: usize,
        server_config: ServerConfig,
        client_config: ClientConfig,
    ) -> TestNetwork {
        let mut net = TestNetwork {
            discovery: TestDiscovery::default(),
            servers: Vec::new(),
            server_config,
            client_config,
        };
        for _ in 0..n {
            let key = SecretKey::generate().expect("OS randomness");
            let key_hex = key.to_hex().to_string();
            let server = Self::spawn_server(
                &net.discovery,
                key,
                "127.0.0.1:0".parse().expect("addr"),
                &net.server_config,
            )
            .await;
            net.servers.push(ServerSlot {
                key_hex,
                addr: server.local_addr(),
                server: Some(server),
            });
        }
        let discovery = net.discovery.clone();
        for slot in &net.servers {
            let pk = slot.server.as_ref().map(|s| s.public_key());
            wait_until(|| pk.is_some_and(|pk| discovery.store().get(&pk).is_some())).await;
        }
        net
    }

    async fn spawn_server(
        discovery: &TestDiscovery,
        key: SecretKey,
        addr: SocketAddr,
        config: &ServerConfig,
    ) -> Server {
        let mut server = Server::bind(key, addr, config.clone())
            .await
            .expect("bind a loopback server");
        let public = server.local_addr().to_string();
        server.register(Arc::new(discovery.clone()), public, Duration::from_secs(60));
        server
    }

    /// The discovery (switch it off with [`TestDiscovery::set_down`]).
    pub fn discovery(&self) -> &TestDiscovery {
        &self.discovery
    }

    /// Server `i`, if running.
    pub fn server(&self, i: usize) -> Option<&Server> {
        self.servers.get(i).and_then(|s| s.server.as_ref())
    }

    /// Public keys of all servers (running or not).
    pub fn server_keys(&self) -> Vec<PublicKey> {
        self.servers
            .iter()
            .filter_map(|s| SecretKey::from_hex(&s.key_hex).ok().map(|k| k.public_key()))
            .collect()
    }

    /// Starts a client and waits until it has its sessions.
    pub async fn client(&self) -> Client {
        self.client_with(self.client_config.clone()).await
    }

    /// Starts a client with `config` and waits until it has `min_sessions` sessions (all
    /// servers when 0).
    pub async fn client_with(&self, config: ClientConfig) -> Client {
        let want = if !config.auto_connect {
            0
        } else if config.min_sessions == 0 {
            self.servers.len()
        } else {
            config.min_sessions
        };
        let client = Client::start(
            SecretKey::generate().expect("OS randomness"),
            Arc::new(self.discovery.clone()),
            config,
        );
        client
            .wait_for_sessions(want, Duration::from_secs(10))
            .await;
        client
    }

    /// Waits (bounded) until `client`'s entry lists all its current sessions and every
    /// server has registered the client.
    pub async fn wait_published(&self, client: &Client) {
        let pk = client.public_key();
        let store = self.discovery.store().clone();
        let servers: Vec<_> = self
            .servers
            .iter()
            .filter_map(|s| s.server.as_ref())
            .collect();
        wait_until(|| {
            let mut sessions: Vec<_> = client.sessions().iter().map(|s| s.server).collect();
            sessions.sort();
            let published = store.get(&pk).and_then(|e| e.client).map(|c| {
                let mut s = c.delegated_servers;
                s.sort();
                s
            });
            let registered = sessions.iter().all(|srv| {
                servers
                    .iter()
                    .find(|s| s.public_key() == *srv)
                    .is_none_or(|s| s.clients().contains(&pk))
            });
            !sessions.is_empty() && published.as_ref() == Some(&sessions) && registered
        })
        .await;
    }

    /// Stops server `i` (its sessions and streams end; its entry is deleted).
    pub async fn stop_server(&mut self, i: usize) {
        if let Some(server) = self.servers.get_mut(i).and_then(|s| s.server.take()) {
            server.shutdown().await;
        }
    }

    /// Starts server `i` again with the same key on the same address.
    pub async fn restart_server(&mut self, i: usize) {
        self.stop_server(i).await;
        let Some(slot) = self.servers.get(i) else {
            return;
        };
        let key = SecretKey::from_hex(&slot.key_hex).expect("stored key");
        let server = Self::spawn_server(&self.discovery, key, slot.addr, &self.server_config).await;
        let pk = server.public_key();
        self.servers[i].server = Some(server);
        let store = self.discovery.store().clone();
        wait_until(|| store.get(&pk).is_some()).await;
    }
}

/// Polls `f` every 5 ms for up to 10 s.
async fn wait_until(mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !f() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub mod alloc {
    //! A global allocator that counts the heap of marked threads, to measure one component (a
    //! relay server on its own thread) inside a process that also runs its clients.
    //!
    //! ```ignore
    //! #[global_allocator]
    //! static ALLOC: ThreadCountingAlloc = ThreadCountingAlloc;
    //! // on the server's thread:
    //! mark_current_thread();
    //! ```
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;
    use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

    /// Allocations at least this large are also counted in [`large_heap`].
    pub const LARGE: usize = 32 * 1024;

    static HEAP: AtomicI64 = AtomicI64::new(0);
    static HEAP_LARGE: AtomicI64 = AtomicI64::new(0);
    static PEAK: AtomicI64 = AtomicI64::new(0);
    static ALLOCS: AtomicU64 = AtomicU64::new(0);

    thread_local! {
        static MARKED: Cell<bool> = const { Cell::new(false) };
    }

    /// Counts this thread's allocations from now on.
    pub fn mark_current_thread() {
        MARKED.with(|c| c.set(true));
    }

    /// Bytes allocated minus bytes freed by marked threads.
    pub fn heap() -> i64 {
        HEAP.load(Relaxed)
    }

    /// The part of [`heap`] in allocations of at least [`LARGE`] bytes.
    pub fn large_heap() -> i64 {
        HEAP_LARGE.load(Relaxed)
    }

    /// The highest [`heap`] since the start or the last [`reset_peak`].
    pub fn peak() -> i64 {
        PEAK.load(Relaxed)
    }

    /// Restarts [`peak`] from the current heap.
    pub fn reset_peak() {
        PEAK.store(HEAP.load(Relaxed), Relaxed);
    }

    /// Allocations (and reallocations) made by marked threads.
    pub fn allocations() -> u64 {
        ALLOCS.load(Relaxed)
    }

    fn marked() -> bool {
        MARKED.try_with(Cell::get).unwrap_or(false)
    }

    fn account(size: usize, sign: i64) {
        let bytes = sign * size as i64;
        let now = HEAP.fetch_add(bytes, Relaxed) + bytes;
        PEAK.fetch_max(now, Relaxed);
        if size >= LARGE {
            HEAP_LARGE.fetch_add(bytes, Relaxed);
        }
    }

    /// The counting allocator (forwards to [`System`]).
    #[derive(Debug, Clone, Copy, Default)]
    pub struct ThreadCountingAlloc;

    // SAFETY: every call is forwarded unchanged to `System`; the wrapper only updates counters.
    unsafe impl GlobalAlloc for ThreadCountingAlloc {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            // SAFETY: same contract as ours.
            let p = unsafe { System.alloc(layout) };
            if !p.is_null() && marked() {
                account(layout.size(), 1);
                ALLOCS.fetch_add(1, Relaxed);
            }
            p
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            // SAFETY: same contract as ours.
            let p = unsafe { System.alloc_zeroed(layout) };
            if !p.is_null() && marked() {
                account(layout.size(), 1);
                ALLOCS.fetch_add(1, Relaxed);
            }
            p
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            if marked() {
                account(layout.size(), -1);
            }
            // SAFETY: same contract as ours.
            unsafe { System.dealloc(ptr, layout) }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            // SAFETY: same contract as ours.
            let p = unsafe { System.realloc(ptr, layout, new_size) };
            if !p.is_null() && marked() {
                account(layout.size(), -1);
                account(new_size, 1);
                ALLOCS.fetch_add(1, Relaxed);
            }
            p
        }
    }
}
