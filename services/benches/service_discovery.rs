//! service-discovery directory benchmark: what a query costs against the size of the index it
//! reads, as a ratio to a single-entry GET measured in the same run.
//!
//! `cargo bench -p skytower-services --bench service_discovery`
//!
//! For each size in `BENCH_SIZES` (default `1000,10000,100000`; Redis: `BENCH_REDIS_SIZES`,
//! default `1000,10000`) the directory is filled with that many `vpn` entries (16 per key, with
//! geo), then, for `BENCH_ITERS` iterations (default 200), it times what the API handlers call:
//! `get_json(addr)` (baseline), `query_json(type=vpn, quantity=3)`, `query_json(type=vpn,
//! country=DE, quantity=3)` (a tenth of the entries) and a refresh `register`. Reported: mean µs per operation and the ratio to `get`.
//! Runs on one current-thread runtime; Redis runs when `redis-server` is installed.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use skytower_services::service_discovery::{Directory, Geo, Registration, ServiceQuery};
use skytower_services::ttl_store::{self, MemoryTtlStore, RedisConfig, StoreSpec, TtlStore};
use skytower_transports::dmsg::wire::Addr;
use skytower_transports::identity::SecretKey;

fn sizes(name: &str, default: &str) -> Vec<usize> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_owned())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

fn iters() -> usize {
    std::env::var("BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
}

async fn fill(dir: &Directory, n: usize) -> Vec<Registration> {
    let mut regs = Vec::with_capacity(n);
    let mut key = SecretKey::generate().expect("key");
    for i in 0..n {
        if i % 16 == 0 {
            key = SecretKey::generate().expect("key");
        }
        let port = u16::try_from(i % 16 + 1).expect("port");
        let country = if i % 10 == 0 { "DE" } else { "US" };
        let reg = Registration {
            geo: Some(Geo::country(country)),
            ..Registration::new(key.public_key(), port, "vpn", "1.3.0")
        }
        .validated()
        .expect("valid");
        dir.register(reg.clone()).await.expect("register");
        regs.push(reg);
    }
    regs
}

async fn time<F, Fut>(n: usize, mut f: F) -> f64
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let started = Instant::now();
    for i in 0..n {
        f(i).await;
    }
    started.elapsed().as_secs_f64() * 1e6 / n as f64
}

async fn run(label: &str, store: Arc<dyn TtlStore>, size: usize) {
    let dir = Directory::new(store, Duration::from_secs(3600), 16, usize::MAX);
    let regs = fill(&dir, size).await;
    let addrs: Vec<Addr> = regs.iter().map(|r| r.address).collect();
    let n = iters();
    let all = ServiceQuery::of_type("vpn").quantity(3);
    let de = ServiceQuery::of_type("vpn").country("DE").quantity(3);
    let get = time(n, |i| {
        let dir = &dir;
        let addr = addrs[i % addrs.len()];
        async move {
            assert!(dir.get_json(&addr).await.expect("get").is_some());
        }
    })
    .await;
    let query_all = time(n, |_| {
        let (dir, q) = (&dir, &all);
        async move {
            assert_eq!(
                dir.query_json(q, 3).await.expect("query").len(),
                3.min(size)
            );
        }
    })
    .await;
    let query_de = time(n, |_| {
        let (dir, q) = (&dir, &de);
        async move {
            dir.query_json(q, 3).await.expect("query");
        }
    })
    .await;
    let refresh = time(n, |i| {
        let dir = &dir;
        let reg = regs[i % regs.len()].clone();
        async move {
            assert!(!dir.register(reg).await.expect("refresh").created);
        }
    })
    .await;
    println!(
        "| {label} | {size} | {get:.1} | {query_all:.1} ({:.1}×) | {query_de:.1} ({:.1}×) | {refresh:.1} ({:.1}×) |",
        query_all / get,
        query_de / get,
        refresh / get,
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!("| store | entries | get µs | query vpn, 3 µs | query vpn+DE, 3 µs | refresh µs |");
    println!("|---|---|---|---|---|---|");
    for size in sizes("BENCH_SIZES", "1000,10000,100000") {
        runtime.block_on(run("memory", Arc::new(MemoryTtlStore::new(size)), size));
    }
    let installed = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !installed {
        println!("[redis] skipped: redis-server is not installed");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    for size in sizes("BENCH_REDIS_SIZES", "1000,10000") {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("port");
        let mut redis = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server");
        let url = format!("redis://127.0.0.1:{port}");
        runtime.block_on(async {
            let mut connected = None;
            for _ in 0..100 {
                let spec = StoreSpec::Redis(RedisConfig::new(url.clone()));
                if let Ok(store) = ttl_store::open(&spec, "service-discovery:", 0).await {
                    connected = Some(store);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            run("redis", connected.expect("redis did not start"), size).await;
        });
        let _ = redis.kill();
        let _ = redis.wait();
    }
}
