//! All four skytower resilience layers composed with `ServiceBuilder` around a small "dialer"
//! service, each shown acting. Uses only the public API, as a downstream crate would.
//!
//! Run: `cargo run --release --example resilience`
//!
//! The stack, outermost first:
//! - `CircuitBreakerLayer` keyed by destination (opens after 3 consecutive failures, 60 s);
//! - `NegativeCacheLayer` keyed by `(destination, server)` (30 s);
//! - `HandshakeQueueLayer` bounding handshakes in flight (here 2, with 2 waiting, 1 s each);
//! - the dialer.
//!
//! A separate HTTP service is wrapped in `HealthLayer`, with the breaker, the negative cache and
//! the queue registered as health checks, and `GET /health` is called on it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use skytower::layers::circuit_breaker::{CircuitBreakerLayer, CircuitOpen};
use skytower::layers::handshake_queue::Overloaded;
use skytower::layers::{BoxError, HandshakeQueueLayer, HealthLayer, KnownBad, NegativeCacheLayer};
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

/// A dial request: reach `dst` through relay `server`.
#[derive(Clone, Debug)]
struct Dial {
    dst: &'static str,
    server: &'static str,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let dials = Arc::new(AtomicUsize::new(0));
    let counter = dials.clone();
    // The dialer: "mallory" is unreachable everywhere, "bob" is unreachable through srv-2,
    // "slow" takes 300 ms.
    let dialer = service_fn(move |d: Dial| {
        counter.fetch_add(1, Ordering::Relaxed);
        async move {
            if d.dst == "slow" {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            if d.dst == "mallory" || (d.dst == "bob" && d.server == "srv-2") {
                return Err::<String, BoxError>(
                    format!("{} unreachable via {}", d.dst, d.server).into(),
                );
            }
            Ok(format!("stream to {} via {}", d.dst, d.server))
        }
    });

    let breaker = CircuitBreakerLayer::builder(|d: &Dial| d.dst)
        .failure_threshold(3)
        .open_duration(Duration::from_secs(60))
        .build();
    let negative =
        NegativeCacheLayer::new(|d: &Dial| (d.dst, d.server)).ttl(Duration::from_secs(30));
    let queue = HandshakeQueueLayer::new()
        .max_in_flight(2)
        .max_queued(2)
        .timeout(Duration::from_secs(1));
    let (breakers, known_bad, handshakes) = (breaker.handle(), negative.handle(), queue.handle());

    let svc = ServiceBuilder::new()
        .layer(breaker)
        .layer(negative)
        .layer(queue)
        .service(dialer);

    println!("== a working dial");
    let ok = svc
        .clone()
        .oneshot(Dial {
            dst: "alice",
            server: "srv-1",
        })
        .await?;
    println!("   {ok}");

    println!("== NegativeCache: a failed (destination, server) pair is skipped for 30 s");
    let bad = Dial {
        dst: "bob",
        server: "srv-2",
    };
    let err = svc.clone().oneshot(bad.clone()).await.unwrap_err();
    println!("   first dial reached the dialer and failed: {err}");
    let before = dials.load(Ordering::Relaxed);
    let err = svc.clone().oneshot(bad).await.unwrap_err();
    let kb = err
        .downcast_ref::<KnownBad<(&str, &str)>>()
        .ok_or("expected KnownBad")?;
    assert_eq!(
        dials.load(Ordering::Relaxed),
        before,
        "a known-bad pair must not be dialed"
    );
    println!(
        "   second dial refused at once: {err} (key {:?}, {:?} left)",
        kb.key, kb.expires_in
    );
    let ok = svc
        .clone()
        .oneshot(Dial {
            dst: "bob",
            server: "srv-3",
        })
        .await?;
    println!("   the same destination through another server still works: {ok}");

    println!("== CircuitBreaker: 3 consecutive failures to one destination open its circuit");
    for server in ["srv-1", "srv-2", "srv-3"] {
        let err = svc
            .clone()
            .oneshot(Dial {
                dst: "mallory",
                server,
            })
            .await
            .unwrap_err();
        println!("   mallory via {server}: {err}");
    }
    let before = dials.load(Ordering::Relaxed);
    let err = svc
        .clone()
        .oneshot(Dial {
            dst: "mallory",
            server: "srv-4",
        })
        .await
        .unwrap_err();
    let open = err
        .downcast_ref::<CircuitOpen<&str>>()
        .ok_or("expected CircuitOpen")?;
    assert_eq!(
        dials.load(Ordering::Relaxed),
        before,
        "an open circuit must not dial"
    );
    println!(
        "   mallory via srv-4 (a fresh server): {err} (retry in {:?})",
        open.retry_after
    );
    println!("   breaker state: {:?}", breakers.state(&"mallory"));

    println!("== HandshakeQueue: 2 in flight, 2 waiting, the rest refused at once");
    let mut calls = Vec::new();
    for _ in 0..5 {
        let mut s = svc.clone();
        let fut = s.ready().await?.call(Dial {
            dst: "slow",
            server: "srv-1",
        });
        calls.push(tokio::spawn(fut));
    }
    tokio::task::yield_now().await;
    println!(
        "   in flight {}, queued {} (limits {}/{})",
        handshakes.in_flight(),
        handshakes.queued(),
        handshakes.max_in_flight(),
        handshakes.max_queued()
    );
    let mut refused = 0;
    for call in calls {
        match call.await? {
            Ok(_) => {}
            Err(e) if e.is::<Overloaded>() => refused += 1,
            Err(e) => return Err(e),
        }
    }
    println!("   4 dials completed, {refused} refused with Overloaded");
    assert_eq!(refused, 1);

    println!("== Health: GET /health reports every registered check");
    let app = service_fn(|_req: Request<Empty<Bytes>>| async {
        Ok::<_, BoxError>(Response::new(Full::new(Bytes::from_static(b"hello"))))
    });
    let health = HealthLayer::new("resilience-example")
        .version(env!("CARGO_PKG_VERSION"))
        .check("circuit_breaker", breakers.clone())
        .check("negative_cache", known_bad.clone())
        .check("handshake_queue", handshakes.clone());
    let mut http = ServiceBuilder::new().layer(health).service(app);
    let resp = http
        .ready()
        .await?
        .call(Request::get("/health").body(Empty::new())?)
        .await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body)?;
    println!("   {status}\n{}", serde_json::to_string_pretty(&json)?);
    // The breaker has an open circuit, so the service reports degraded.
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let resp = http
        .ready()
        .await?
        .call(Request::get("/").body(Empty::new())?)
        .await?;
    println!("   other paths pass through: {}", resp.status());

    println!("== reset the breaker for mallory");
    breakers.reset(&"mallory");
    println!("   state now {:?}", breakers.state(&"mallory"));
    Ok(())
}
