//! Per-call cost of the keyed circuit breaker: a bare service vs the same service behind the
//! breaker, with 10 000 distinct keys rotating through closed circuits.
//!
//! Every service here is always ready and answers at once, so each call is driven by polling
//! once (`now_or_never`), with no runtime in the measurement. Read the added cost per call as
//! `breaker/...` minus `bare`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use skytower_layers::BoxError;
use skytower_layers::circuit_breaker::CircuitBreakerLayer;
use tower::{Layer, Service, ServiceExt, service_fn};

/// Distinct healthy keys the benchmarks rotate through.
const KEYS: u64 = 10_000;
/// Requests at or above this fail at the inner service.
const BAD: u64 = 1_000_000;

fn key(req: &u64) -> u64 {
    *req
}

/// Readies and calls `svc` once, polling each step once.
fn call_once<S: Service<u64>>(svc: &mut S, req: u64) -> Option<Result<S::Response, S::Error>> {
    let svc = svc.ready().now_or_never()?.ok()?;
    svc.call(req).now_or_never()
}

fn inner() -> impl Service<u64, Response = u64, Error = BoxError> + Clone {
    service_fn(|req: u64| async move {
        if req >= BAD {
            Err::<u64, BoxError>("down".into())
        } else {
            Ok(req)
        }
    })
}

/// Calls `svc` with keys 0, 1, ..., KEYS-1, 0, ... and checks every call succeeds.
fn rotate<S>(c: &mut Criterion, name: &str, mut svc: S)
where
    S: Service<u64, Response = u64>,
{
    let mut next = 0u64;
    c.bench_function(name, |b| {
        b.iter(|| {
            next = (next + 1) % KEYS;
            let res = call_once(&mut svc, black_box(next));
            assert!(matches!(res, Some(Ok(n)) if n == next));
        })
    });
}

fn bench(c: &mut Criterion) {
    rotate(c, "circuit_breaker/bare", inner());

    let layer = CircuitBreakerLayer::new(key as fn(&u64) -> u64);
    rotate(
        c,
        "circuit_breaker/breaker_10k_keys_closed",
        layer.layer(inner()),
    );

    // The same, while 1 000 other keys have a failure on record (the lock + lookup path).
    let layer = CircuitBreakerLayer::new(key as fn(&u64) -> u64);
    let handle = layer.handle();
    let mut svc = layer.layer(inner());
    for bad in BAD..BAD + 1_000 {
        assert!(matches!(call_once(&mut svc, bad), Some(Err(_))));
    }
    assert_eq!(handle.len(), 1_000);
    rotate(c, "circuit_breaker/breaker_10k_keys_closed_1k_tracked", svc);

    // An open key: rejected at once with `CircuitOpen` (allocates the boxed error).
    let layer = CircuitBreakerLayer::builder(key as fn(&u64) -> u64)
        .failure_threshold(1)
        .build();
    let mut svc = layer.layer(inner());
    assert!(matches!(call_once(&mut svc, BAD), Some(Err(_))));
    c.bench_function("circuit_breaker/breaker_open_key_rejected", |b| {
        b.iter(|| {
            let res = call_once(&mut svc, black_box(BAD));
            assert!(matches!(res, Some(Err(_))));
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
