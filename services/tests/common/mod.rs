//! Helpers shared by the dmsg-discovery tests: backends (embedded store, or a private
//! `redis-server`), signed entries, and one-shot requests against the router.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use skytower_services::dmsg_discovery::{
    Config, DiscoveryService, MemoryStore, RedisConfig, RedisStore, Store, StoreConfig,
};
use skytower_transports::dmsg::disc::{DeleteRequest, Entry};
use skytower_transports::identity::{PublicKey, SecretKey, contexts};
use tower::ServiceExt;

/// Which store a shared test runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Memory,
    Redis,
}

/// A private `redis-server` on a free loopback port, in a temp dir; killed on drop.
pub struct RedisServer {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn redis_installed() -> bool {
    Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn pings(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = [0u8; 16];
    s.write_all(b"PING\r\n").is_ok()
        && s.read(&mut buf)
            .is_ok_and(|n| buf[..n].starts_with(b"+PONG"))
}

impl RedisServer {
    /// Starts one, or returns `None` after saying LOUDLY that the Redis tests are skipped
    /// (in CI, where `CI` is set, a missing `redis-server` fails the test instead).
    pub fn start() -> Option<RedisServer> {
        if !redis_installed() {
            assert!(
                std::env::var_os("CI").is_none(),
                "redis-server is not installed, but CI must run the Redis tests (.ci/run installs it)"
            );
            eprintln!(
                "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
                 !!! SKIPPING a dmsg-discovery Redis test: `redis-server` is not installed.  !!!\n\
                 !!! Install it (Debian: apt-get install redis-server); CI always runs them. !!!\n\
                 !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
            );
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        Some(Self::start_in(dir, free_port()))
    }

    fn start_in(dir: tempfile::TempDir, port: u16) -> RedisServer {
        let child = spawn_redis(dir.path(), port);
        let server = RedisServer { child, port, dir };
        server.wait_ready();
        server
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !pings(self.port) {
            assert!(
                Instant::now() < deadline,
                "redis-server did not start on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (simulating an outage).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.child = spawn_redis(self.dir.path(), self.port);
        self.wait_ready();
    }
}

fn spawn_redis(dir: &Path, port: u16) -> Child {
    Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn redis-server")
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A store (and, for Redis, the server behind it).
pub struct Backend {
    pub store: Arc<dyn Store>,
    pub redis: Option<RedisServer>,
}

/// A config for tests: loopback addresses allowed, generous rate limits.
pub fn config() -> Config {
    Config {
        addr: "127.0.0.1:0".parse().unwrap(),
        allow_loopback: true,
        rate_per_second: 1_000_000,
        rate_burst: 1_000_000,
        ..Config::default()
    }
}

impl Backend {
    /// The backend of `kind` with `config`'s TTLs; `None` when Redis is skipped.
    pub async fn new(kind: Kind, config: &Config) -> Option<Backend> {
        let mut store_config: StoreConfig = config.store_config.clone();
        store_config.tombstone_ttl = store_config.tombstone_ttl.max(config.timestamp_window * 2);
        match kind {
            Kind::Memory => Some(Backend {
                store: Arc::new(MemoryStore::new(store_config)),
                redis: None,
            }),
            Kind::Redis => {
                let redis = RedisServer::start()?;
                let store = redis_store(&redis.url(), store_config).await;
                Some(Backend {
                    store,
                    redis: Some(redis),
                })
            }
        }
    }

    pub fn service(&self, config: &Config) -> DiscoveryService {
        DiscoveryService::new(config, self.store.clone())
    }
}

pub async fn redis_store(url: &str, config: StoreConfig) -> Arc<dyn Store> {
    let mut rc = RedisConfig::new(url);
    // Generous: the concurrency tests send 1000 scripts at once on a loaded 2-core machine
    // (outages are refused connections, which fail at once whatever this is).
    rc.response_timeout = Duration::from_secs(3);
    rc.connection_timeout = Duration::from_millis(500);
    Arc::new(
        RedisStore::connect(rc, config)
            .await
            .expect("connect to the test redis"),
    )
}

/// A signed server entry.
pub fn server_entry(key: &SecretKey, address: &str, free: u32, sequence: u64) -> Entry {
    let mut e = Entry::new_server(key.public_key(), address, free);
    e.sequence = sequence;
    e.sign(key);
    e
}

/// A signed client entry.
pub fn client_entry(key: &SecretKey, servers: Vec<PublicKey>, sequence: u64) -> Entry {
    let mut e = Entry::new_client(key.public_key(), servers);
    e.sequence = sequence;
    e.sign(key);
    e
}

/// A delete request signed at `timestamp` (documented layout: `[32] static ‖ u64 timestamp`).
pub fn delete_at(key: &SecretKey, timestamp: u64) -> DeleteRequest {
    let pk = key.public_key();
    let mut bytes = pk.as_bytes().to_vec();
    bytes.extend_from_slice(&timestamp.to_be_bytes());
    DeleteRequest {
        static_pk: pk,
        timestamp,
        signature: key.sign(contexts::DMSG_ENTRY_DELETE, &bytes),
    }
}

pub fn now_ms() -> u64 {
    skytower_transports::dmsg::replay::unix_ms_now()
}

/// A response, decoded.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub json: serde_json::Value,
}

impl Answer {
    pub fn code(&self) -> &str {
        self.json["error"]["code"].as_str().unwrap_or("")
    }
}

pub async fn send(router: &Router, req: Request<Body>) -> Answer {
    let res = router.clone().oneshot(req).await.expect("infallible");
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = res.into_body().collect().await.expect("body").to_bytes();
    let json = if bytes.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&bytes)))
    };
    Answer {
        status,
        headers,
        json,
    }
}

pub fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

pub fn post_raw(body: impl Into<Body>) -> Request<Body> {
    Request::post("/dmsg-discovery/entry")
        .header("content-type", "application/json")
        .body(body.into())
        .unwrap()
}

pub fn post(entry: &Entry) -> Request<Body> {
    post_raw(serde_json::to_vec(entry).unwrap())
}

pub fn delete(path_pk: &PublicKey, req: &DeleteRequest) -> Request<Body> {
    Request::delete(format!("/dmsg-discovery/entry/{path_pk}"))
        .body(Body::from(serde_json::to_vec(req).unwrap()))
        .unwrap()
}

/// Marks a request as coming from `peer` (what the server's `ConnectInfo` does).
pub fn from(peer: &str, mut req: Request<Body>) -> Request<Body> {
    let addr: SocketAddr = peer.parse().unwrap();
    req.extensions_mut().insert(ConnectInfo(addr));
    req
}
