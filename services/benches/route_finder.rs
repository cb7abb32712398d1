//! route-finder benchmark: route queries on a random transport graph.
//!
//! `cargo bench -p skytower-services --bench route_finder`
//!
//! Builds a graph of `BENCH_NODES` nodes (default 10 000) and `BENCH_TRANSPORTS` transports
//! (default 50 000; uniformly random pairs, random types), then on one thread answers
//! `BENCH_QUERIES` (default 2 000) route queries of 2 pairs each (A→B and B→A, as a node asks
//! before dialling a route), with the service's default bounds (0–10 hops, 5 paths per pair).
//! Reports queries/s and per-query p50/p99, next to a same-run baseline: one plain BFS from A
//! until B is reached (the distance only) per pair. With `SKYTOWER_BENCH_QUICK=1` it runs a
//! tenth of the queries.

#[path = "../../transports/benches/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{env_num, percentile, print_table, quick, thread_cpu};
use skytower_services::route_finder::{Graph, SearchOptions};
use skytower_services::transport_discovery::{Label, TransportEntry, TransportType};
use skytower_transports::identity::{PublicKey, SecretKey};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

struct Run {
    name: &'static str,
    samples: Vec<Duration>,
    wall: Duration,
    cpu: Duration,
    paths: usize,
}

fn summarise(r: &Run, queries: usize, base_qps: f64) -> Vec<String> {
    let mut s = r.samples.clone();
    s.sort_unstable();
    let qps = queries as f64 / r.wall.as_secs_f64();
    vec![
        r.name.to_owned(),
        format!("{qps:.0}"),
        format!("{:.0}", queries as f64 / r.cpu.as_secs_f64()),
        format!("{:.1}", percentile(&s, 0.5).as_secs_f64() * 1e6),
        format!("{:.1}", percentile(&s, 0.99).as_secs_f64() * 1e6),
        format!("{:.1}", percentile(&s, 1.0).as_secs_f64() * 1e6),
        format!("{:.2}", r.paths as f64 / queries as f64),
        format!("{:.2}", base_qps / qps),
    ]
}

fn main() {
    let n_nodes: usize = env_num("BENCH_NODES", 10_000);
    let n_transports: usize = env_num("BENCH_TRANSPORTS", 50_000);
    let mut queries: usize = env_num("BENCH_QUERIES", 2_000);
    if quick() {
        queries = (queries / 10).max(10);
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);

    let t = Instant::now();
    let keys: Vec<PublicKey> = (0..n_nodes)
        .map(|i| {
            SecretKey::from_hex(&format!("{:064x}", i + 1))
                .expect("a valid seed")
                .public_key()
        })
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3600);
    let mut entries = Vec::with_capacity(n_transports);
    while entries.len() < n_transports {
        let (a, b) = (rng.below(n_nodes), rng.below(n_nodes));
        if a == b {
            continue;
        }
        let kind = TransportType::ALL[rng.below(4)];
        entries.push((
            TransportEntry::new(keys[a], keys[b], kind, Label::Automatic),
            deadline,
        ));
    }
    let keygen = t.elapsed();
    let t = Instant::now();
    let graph = Graph::build(entries);
    let build = t.elapsed();
    println!(
        "graph: {} nodes, {} transports (keys + entries {:.2} s, Graph::build {:.1} ms)",
        graph.node_count(),
        graph.transport_count(),
        keygen.as_secs_f64(),
        build.as_secs_f64() * 1e3
    );

    let pairs: Vec<(PublicKey, PublicKey)> = (0..queries)
        .map(|_| {
            loop {
                let (a, b) = (rng.below(n_nodes), rng.below(n_nodes));
                if a != b {
                    break (keys[a], keys[b]);
                }
            }
        })
        .collect();
    let opts = SearchOptions::default();

    let run = |name: &'static str, f: &dyn Fn(&PublicKey, &PublicKey) -> usize| {
        // Warm-up.
        for (a, b) in pairs.iter().take(queries / 10) {
            std::hint::black_box(f(a, b));
        }
        let mut samples = Vec::with_capacity(queries);
        let mut paths = 0;
        let cpu0 = thread_cpu();
        let t = Instant::now();
        for (a, b) in &pairs {
            let q = Instant::now();
            paths += f(a, b) + f(b, a);
            samples.push(q.elapsed());
        }
        Run {
            name,
            samples,
            wall: t.elapsed(),
            cpu: thread_cpu() - cpu0,
            paths,
        }
    };

    let bfs = run("baseline: plain BFS A→B (distance only) ×2", &|a, b| {
        let now = tokio::time::Instant::now();
        usize::from(graph.distance(a, b, now).is_some())
    });
    let shortest = run("route query, 2 pairs, 1 path each", &|a, b| {
        let o = SearchOptions {
            max_paths: 1,
            ..opts
        };
        graph
            .find(a, b, &o, tokio::time::Instant::now())
            .map_or(0, |p| p.len())
    });
    let routes = run("route query, 2 pairs, 5 paths each (default)", &|a, b| {
        graph
            .find(a, b, &opts, tokio::time::Instant::now())
            .map_or(0, |p| p.len())
    });
    let base_qps = queries as f64 / bfs.wall.as_secs_f64();
    println!("\n{queries} queries (2 pairs each), one thread:\n");
    print_table(
        &[
            "workload",
            "queries/s",
            "queries/CPU-s",
            "p50 µs",
            "p99 µs",
            "max µs",
            "paths/query",
            "time vs BFS",
        ],
        &[
            summarise(&bfs, queries, base_qps),
            summarise(&shortest, queries, base_qps),
            summarise(&routes, queries, base_qps),
        ],
    );
}
