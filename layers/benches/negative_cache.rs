//! Per-call cost of the negative cache: a bare `service_fn` vs the same service wrapped in
//! `NegativeCacheLayer`, in the same run. Keys are DMSG-like `(destination, server)` pairs of
//! two 32-byte public keys; 10 000 distinct keys rotate, none of them cached.
//!
//! - `bare`: the inner service alone.
//! - `negative_cache/empty`: wrapped, empty cache (the common case).
//! - `negative_cache/10k_other_bad`: wrapped, the cache full of 10 000 *other* bad keys (the
//!   lookup misses in a full map).
//! - `negative_cache/refused`: every call for a cached key (the refusal path).
//!
//! Added ns per call = `negative_cache/*` − `bare`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use skytower_layers::{BoxError, NegativeCacheLayer};
use tower::{Service, ServiceExt, service_fn};

type Key = ([u8; 32], [u8; 32]);

#[derive(Clone, Copy)]
struct Dial {
    dst: [u8; 32],
    server: [u8; 32],
}

const KEYS: usize = 10_000;

fn key(i: usize, salt: u8) -> Key {
    let mut dst = [salt; 32];
    dst[..8].copy_from_slice(&(i as u64).to_le_bytes());
    let mut server = [0xAA; 32];
    server[..2].copy_from_slice(&((i % 64) as u16).to_le_bytes());
    (dst, server)
}

fn dials(salt: u8) -> Vec<Dial> {
    (0..KEYS)
        .map(|i| {
            let (dst, server) = key(i, salt);
            Dial { dst, server }
        })
        .collect()
}

/// One `ready` + `call`, driven to completion by polling once (every future here is ready).
fn one_call<S>(svc: &mut S, req: Dial) -> Result<u8, BoxError>
where
    S: Service<Dial, Response = u8, Error = BoxError>,
{
    svc.ready()
        .now_or_never()
        .expect("always ready")
        .expect("never fails")
        .call(req)
        .now_or_never()
        .expect("completes at once")
}

fn bench(c: &mut Criterion) {
    let inner = || service_fn(|d: Dial| async move { Ok::<u8, BoxError>(d.dst[0]) });
    let layer = || NegativeCacheLayer::new(|d: &Dial| -> Key { (d.dst, d.server) });
    let reqs = dials(1);

    let mut group = c.benchmark_group("negative_cache_per_call");

    let mut bare = inner();
    let mut i = 0;
    group.bench_function("bare", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            black_box(one_call(&mut bare, black_box(reqs[i]))).ok()
        })
    });

    let nc = layer();
    let mut svc = tower::Layer::layer(&nc, inner());
    group.bench_function("negative_cache/empty", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            black_box(one_call(&mut svc, black_box(reqs[i]))).ok()
        })
    });

    // Long TTL: the bad keys must stay bad for the whole run.
    let nc = layer().ttl(Duration::from_secs(3_600));
    let cache = nc.handle();
    for i in 0..KEYS {
        cache.insert(key(i, 2)); // other keys, all bad
    }
    assert_eq!(cache.len(), KEYS);
    let mut svc = tower::Layer::layer(&nc, inner());
    group.bench_function("negative_cache/10k_other_bad", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            black_box(one_call(&mut svc, black_box(reqs[i]))).ok()
        })
    });

    let bad = dials(2);
    assert!(
        one_call(&mut svc, bad[0]).is_err(),
        "cached keys are refused"
    );
    group.bench_function("negative_cache/refused", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            black_box(one_call(&mut svc, black_box(bad[i]))).err()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
