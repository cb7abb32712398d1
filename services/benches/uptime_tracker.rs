//! uptime-tracker cost benchmark, in-process (no sockets), on one current-thread runtime.
//!
//! `cargo bench -p skytower-services --bench uptime_tracker`
//!
//! Measures, against the embedded store and (when `redis-server` is installed) a private Redis:
//! - `store.heartbeat` alone (the baseline),
//! - a full signed `POST /heartbeat` through the router (client signing, signature check,
//!   JSON, rate limit, store), reported as a ratio to the baseline,
//! - `GET /uptimes` listing every node (7 days) with `BENCH_NODES` nodes (default 10 000); on
//!   Redis also the time the listing's scripts hold Redis (from its command stats), and what
//!   re-validating the keys read back would cost (why the store does not).
//!
//! Prints per-operation means; ratios are taken within the same run.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use http::{Method, Request};
use http_body_util::BodyExt;
use skytower_services::auth;
use skytower_services::dmsg_discovery::RedisConfig;
use skytower_services::uptime_tracker::{
    Accounting, MemoryUptimeStore, RedisUptimeStore, TrackerConfig, UptimeService, UptimeStore,
};
use skytower_transports::dmsg::replay::unix_ms_now;
use skytower_transports::identity::{PublicKey, SecretKey};
use tower::ServiceExt;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn per_op(total: Duration, n: usize) -> Duration {
    total / u32::try_from(n.max(1)).unwrap_or(u32::MAX)
}

struct Redis(Child, u16, #[allow(dead_code)] tempfile::TempDir);

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_redis() -> Option<Redis> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let dir = tempfile::tempdir().ok()?;
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(100));
    Some(Redis(child, port, dir))
}

async fn bench(
    name: &str,
    store: Arc<dyn UptimeStore>,
    nodes: usize,
    beats: usize,
    redis: Option<&str>,
) {
    let config = TrackerConfig {
        rate_per_second: u32::MAX,
        rate_burst: u32::MAX,
        ..TrackerConfig::default()
    };
    let service = UptimeService::new(&config, store.clone());
    let app = service.router();
    let keys: Vec<PublicKey> = (0..nodes)
        .map(|_| SecretKey::generate().expect("key").public_key())
        .collect();
    let now = unix_ms_now();

    // Baseline: the store alone (each node: a first heartbeat, then a crediting one).
    let started = Instant::now();
    for k in &keys {
        store
            .heartbeat(k, "1.0.0", now - 300_000)
            .await
            .expect("heartbeat");
    }
    let fill = started.elapsed();
    let started = Instant::now();
    for k in keys.iter().cycle().take(beats) {
        store.heartbeat(k, "1.0.0", now).await.expect("heartbeat");
    }
    let store_only = per_op(started.elapsed(), beats);

    // The full signed request through the router.
    let signers: Vec<SecretKey> = (0..64)
        .map(|_| SecretKey::generate().expect("key"))
        .collect();
    let body = br#"{"version":"1.0.0"}"#;
    let started = Instant::now();
    for key in signers.iter().cycle().take(beats) {
        let headers = auth::sign_now(key, &Method::POST, "/heartbeat", body).expect("sign");
        let mut req = Request::post("/heartbeat")
            .body(Body::from(&body[..]))
            .expect("request");
        req.headers_mut().extend(headers);
        let res = app.clone().oneshot(req).await.expect("infallible");
        assert!(res.status().is_success(), "{}", res.status());
        let _ = res.into_body().collect().await;
    }
    let full = per_op(started.elapsed(), beats);

    // Listing every node for 7 days (on Redis: how long the script holds Redis, from its
    // command stats, and the cost of validating the keys read back).
    let mut conn = match redis {
        Some(url) => {
            let mut c = redis::Client::open(url)
                .expect("url")
                .get_multiplexed_async_connection()
                .await
                .expect("redis");
            let _: () = redis::cmd("CONFIG")
                .arg("RESETSTAT")
                .query_async(&mut c)
                .await
                .expect("resetstat");
            Some(c)
        }
        None => None,
    };
    let lists = 10;
    let started = Instant::now();
    let mut bytes = 0;
    for _ in 0..lists {
        let res = app
            .clone()
            .oneshot(
                Request::get("/uptimes")
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("infallible");
        assert!(res.status().is_success());
        bytes = res
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
            .len();
    }
    let list = per_op(started.elapsed(), lists);
    let mut redis_note = String::new();
    if let Some(c) = conn.as_mut() {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(c)
            .await
            .expect("info");
        let stat = info
            .lines()
            .find(|l| l.starts_with("cmdstat_evalsha:"))
            .unwrap_or("");
        let field = |name: &str| {
            stat.split(&format!("{name}="))
                .nth(1)
                .and_then(|v| v.split(',').next())
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(f64::NAN)
        };
        let (calls, usec) = (field("calls"), field("usec"));
        let texts: Vec<String> = keys.iter().map(ToString::to_string).collect();
        let started = Instant::now();
        for t in &texts {
            let _: PublicKey = t.parse().expect("key");
        }
        redis_note = format!(
            " (in Redis: {:.2} ms per listing, {:.2} ms per script call; re-validating the \
             {nodes} keys read back, which the store does not do, would add {:.2} ms)",
            usec / 1e3 / lists as f64,
            usec / 1e3 / calls,
            started.elapsed().as_secs_f64() * 1e3
        );
    }

    println!(
        "{name:>6}: fill {nodes} nodes {:>8.1} µs/heartbeat | store.heartbeat {:>7.1} µs (1.00x) | \
         signed POST /heartbeat {:>7.1} µs ({:.2}x) | GET /uptimes ({nodes} nodes, {} KiB) {:>8.2} ms{redis_note}",
        per_op(fill, nodes).as_secs_f64() * 1e6,
        store_only.as_secs_f64() * 1e6,
        full.as_secs_f64() * 1e6,
        full.as_secs_f64() / store_only.as_secs_f64(),
        bytes / 1024,
        list.as_secs_f64() * 1e3,
    );
}

fn main() {
    let nodes = env("BENCH_NODES", 10_000);
    let beats = env("BENCH_BEATS", 20_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let accounting = Accounting {
            max_nodes: nodes * 2,
            ..Accounting::default()
        };
        bench(
            "memory",
            Arc::new(MemoryUptimeStore::new(accounting)),
            nodes,
            beats,
            None,
        )
        .await;
        match start_redis() {
            Some(redis) => {
                let url = format!("redis://127.0.0.1:{}", redis.1);
                let mut config = RedisConfig::new(url.clone());
                config.prefix = "bench:".into();
                let store = RedisUptimeStore::connect(&config, accounting)
                    .await
                    .expect("redis");
                bench("redis", Arc::new(store), nodes, beats / 4, Some(&url)).await;
            }
            None => println!(" redis: skipped (redis-server not installed)"),
        }
    });
}
