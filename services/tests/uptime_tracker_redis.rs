//! The uptime tracker's Redis store: the same suite as the embedded store, real short TTLs
//! (native key expiry), namespaces kept apart, an outage reported as 503, and the API on top
//! of it. Each test starts its own `redis-server` (skipped loudly when it is not installed).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::RedisServer;
use skytower_services::api::ApiError;
use skytower_services::dmsg_discovery::RedisConfig;
use skytower_services::uptime_tracker::store::suite;
use skytower_services::uptime_tracker::{
    Accounting, RedisUptimeStore, TrackerConfig, UptimeService, UptimeStore, UptimeStoreError,
};
use skytower_transports::identity::SecretKey;

async fn open(redis: &RedisServer, prefix: &str, accounting: Accounting) -> RedisUptimeStore {
    let mut config = RedisConfig::new(redis.url());
    config.prefix = prefix.to_owned();
    config.response_timeout = Duration::from_millis(500);
    config.connection_timeout = Duration::from_millis(500);
    RedisUptimeStore::connect(&config, accounting)
        .await
        .unwrap()
}

const MONTH: Duration = Duration::from_secs(30 * 86_400);

#[tokio::test]
async fn accounting_rules_on_redis() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let store = open(&redis, "ut:", suite::accounting(MONTH)).await;
    assert_eq!(store.kind(), "redis");
    suite::accounting_rules(&store).await;
}

#[tokio::test]
async fn listing_on_redis() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    suite::listing(&open(&redis, "ut:", suite::accounting(MONTH)).await).await;
}

#[tokio::test]
async fn real_ttl_expiry_on_redis() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let retention = Duration::from_millis(1000);
    let store = open(&redis, "ut:", suite::accounting(retention)).await;
    suite::retention(&store, retention, tokio::time::sleep).await;
    // The silent node's hashes are gone natively, not just hidden.
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    tokio::time::sleep(retention + Duration::from_millis(200)).await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("ut:n:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(keys.is_empty(), "expired node hashes left: {keys:?}");
}

#[tokio::test]
async fn old_days_are_dropped_on_redis() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let store = open(
        &redis,
        "ut:",
        suite::accounting(Duration::from_secs(2 * 86_400)),
    )
    .await;
    suite::old_days_are_dropped(&store).await;
}

#[tokio::test]
async fn namespaces_are_apart_and_an_outage_is_503() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let a = open(&redis, "a:", suite::accounting(MONTH)).await;
    let b = open(&redis, "b:", suite::accounting(MONTH)).await;
    let pk = SecretKey::generate().unwrap().public_key();
    a.heartbeat(&pk, "v", suite::MONDAY).await.unwrap();
    assert_eq!(b.len(suite::MONDAY).await.unwrap(), 0);
    assert_eq!(a.len(suite::MONDAY).await.unwrap(), 1);

    redis.stop();
    let started = std::time::Instant::now();
    let err = a.heartbeat(&pk, "v", suite::MONDAY + 1).await.unwrap_err();
    assert!(matches!(err, UptimeStoreError::Unavailable(_)), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let api = ApiError::from(err);
    assert_eq!((api.status.as_u16(), api.code), (503, "store_unavailable"));
}

#[tokio::test]
async fn the_api_over_redis() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let config = TrackerConfig::default();
    let store = Arc::new(open(&redis, "ut:", config.accounting).await);
    let service = UptimeService::new(&config, store);
    let key = SecretKey::generate().unwrap();
    let pk = key.public_key();
    let first = service.record_heartbeat(&pk, "1.2.3").await.unwrap();
    assert!(first.first);
    let app = service.router();
    let res = tower::ServiceExt::oneshot(
        app,
        http::Request::get(format!("/uptime/{pk}"))
            .body(axum::body::Body::empty())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    let body = http_body_util::BodyExt::collect(res.into_body())
        .await
        .unwrap()
        .to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["version"], "1.2.3");
    assert_eq!(json["online"], true);
}

#[tokio::test]
async fn listings_larger_than_a_read_batch_are_complete_and_sorted() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let store = open(&redis, "ut:", suite::accounting(MONTH)).await;
    let mut keys: Vec<String> = Vec::new();
    for i in 0..1200u64 {
        let pk = SecretKey::generate().unwrap().public_key();
        store.heartbeat(&pk, "v", suite::MONDAY + i).await.unwrap();
        keys.push(pk.to_string());
    }
    let now = suite::MONDAY + 2000;
    let today = skytower_services::uptime_tracker::Day::of_ms(now);
    let range = skytower_services::uptime_tracker::DayRange {
        from: today,
        to: today,
    };
    let (all, truncated) = store.nodes(None, range, now, 5000).await.unwrap();
    assert!(!truncated);
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(all.iter().map(|r| r.pk.clone()).collect::<Vec<_>>(), sorted);
    // Truncated to the 700 most recently seen (the last 700 written).
    let (some, truncated) = store.nodes(None, range, now, 700).await.unwrap();
    assert!(truncated);
    let mut newest = keys[500..].to_vec();
    newest.sort();
    assert_eq!(
        some.iter().map(|r| r.pk.clone()).collect::<Vec<_>>(),
        newest
    );
}
