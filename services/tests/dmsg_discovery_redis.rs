//! dmsg-discovery on Redis only: real TTL expiry, outages (503, then reconnection), and two
//! discovery instances sharing one Redis. Each test starts its own `redis-server` and skips
//! loudly when it is not installed (CI installs it).

mod common;

use std::time::Duration;

use common::*;
use http::StatusCode;
use skytower_services::dmsg_discovery::{
    Config, DiscoveryServer, RedisConfig, StoreConfig, StoreSpec,
};
use skytower_transports::dmsg::disc::{DeleteRequest, Discovery, DiscoveryError};
use skytower_transports::dmsg::disc_http::HttpDiscovery;
use skytower_transports::identity::SecretKey;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_ttl_expiry_is_real_and_purged() {
    let cfg = Config {
        store_config: StoreConfig {
            server_ttl: Duration::from_millis(400),
            client_ttl: Duration::from_millis(1200),
            ..StoreConfig::default()
        },
        ..config()
    };
    let Some(b) = Backend::new(Kind::Redis, &cfg).await else {
        return;
    };
    let service = b.service(&cfg);
    let app = service.router();
    let server = SecretKey::generate().unwrap();
    let client = SecretKey::generate().unwrap();
    send(&app, post(&server_entry(&server, "192.0.2.1:1", 3, 1))).await;
    send(&app, post(&client_entry(&client, vec![], 1))).await;
    let server_path = format!("/dmsg-discovery/entry/{}", server.public_key());
    let client_path = format!("/dmsg-discovery/entry/{}", client.public_key());
    assert_eq!(send(&app, get(&server_path)).await.status, StatusCode::OK);

    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        send(&app, get(&server_path)).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        send(&app, get("/dmsg-discovery/available_servers"))
            .await
            .json,
        serde_json::json!([])
    );
    assert_eq!(send(&app, get(&client_path)).await.status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(
        send(&app, get(&client_path)).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        send(&app, get("/dmsg-discovery/entries")).await.json,
        serde_json::json!([])
    );

    // The index members are left until the purge removes them.
    let before = service.store().stats().await.unwrap();
    assert_eq!((before.servers, before.clients), (1, 1));
    service.maintain_once().await;
    let after = service.store().stats().await.unwrap();
    assert_eq!((after.servers, after.clients), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_answers_503_then_reconnects() {
    let cfg = config();
    let Some(mut b) = Backend::new(Kind::Redis, &cfg).await else {
        return;
    };
    let app = b.service(&cfg).router();
    let key = SecretKey::generate().unwrap();
    let path = format!("/dmsg-discovery/entry/{}", key.public_key());
    send(&app, post(&server_entry(&key, "192.0.2.1:1", 3, 1))).await;

    b.redis.as_mut().unwrap().stop();
    for req in [get(&path), post(&server_entry(&key, "192.0.2.1:1", 4, 2))] {
        let a = send(&app, req).await;
        assert_eq!(
            (a.status, a.code()),
            (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable")
        );
        assert!(a.headers.contains_key("retry-after"));
    }
    let health = send(&app, get("/health")).await;
    assert_eq!(health.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(health.json["checks"]["store"]["status"], "down");

    // Redis comes back (empty: no persistence); the service reconnects by itself.
    b.redis.as_mut().unwrap().restart();
    let mut ok = false;
    for _ in 0..50 {
        let a = send(&app, post(&server_entry(&key, "192.0.2.1:1", 5, 3))).await;
        if a.status == StatusCode::OK {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "the store reconnected after the restart");
    assert_eq!(send(&app, get(&path)).await.status, StatusCode::OK);
    assert_eq!(send(&app, get("/health")).await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_redis_see_each_others_writes() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let cfg = Config {
        store: StoreSpec::Redis(RedisConfig::new(redis.url())),
        ..config()
    };
    let mut tasks = Vec::new();
    let mut stops = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..2 {
        let server = DiscoveryServer::bind(cfg.clone()).await.unwrap();
        clients
            .push(HttpDiscovery::new(&format!("http://{}", server.local_addr().unwrap())).unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        stops.push(stop);
        tasks.push(tokio::spawn(server.serve(async {
            let _ = stopped.await;
        })));
    }
    let (a, b) = (&clients[0], &clients[1]);
    let key = SecretKey::generate().unwrap();
    let pk = key.public_key();

    let e1 = server_entry(&key, "192.0.2.1:8081", 10, 1);
    a.post_entry(e1.clone()).await.unwrap();
    assert_eq!(b.entry(pk).await.unwrap(), e1);
    assert_eq!(b.available_servers().await.unwrap(), vec![e1.clone()]);
    // The sequence high-water mark is shared: B refuses A's replay.
    assert!(matches!(
        b.post_entry(e1).await,
        Err(DiscoveryError::Rejected(_))
    ));
    let e2 = server_entry(&key, "192.0.2.1:8081", 20, 2);
    b.post_entry(e2.clone()).await.unwrap();
    assert_eq!(a.entry(pk).await.unwrap(), e2);
    b.delete_entry(DeleteRequest::new(&key)).await.unwrap();
    assert!(matches!(
        a.entry(pk).await,
        Err(DiscoveryError::NotFound(_))
    ));

    for s in stops {
        let _ = s.send(());
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    drop(redis);
}

/// `available_servers` and `all_servers` send Redis's stored JSON as it is (no re-parsing):
/// the same lists, in the same order, as the typed store methods; a corrupt stored entry is a
/// 500 for the list that contains it, and the rest of the API is unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_lists_are_the_stored_json_and_corruption_is_an_error() {
    let cfg = config();
    let Some(b) = Backend::new(Kind::Redis, &cfg).await else {
        return;
    };
    let app = b.service(&cfg).router();
    let keys: Vec<SecretKey> = (0..3).map(|_| SecretKey::generate().unwrap()).collect();
    for (key, free) in keys.iter().zip([5, 0, 9]) {
        let answer = send(&app, post(&server_entry(key, "192.0.2.1:1", free, 1))).await;
        assert!(answer.status.is_success(), "{answer:?}");
    }
    let available = send(&app, get("/dmsg-discovery/available_servers")).await;
    assert_eq!(available.status, StatusCode::OK);
    let typed = b.store.available_servers(512).await.unwrap();
    assert_eq!(available.json, serde_json::to_value(&typed).unwrap());
    let order: Vec<String> = typed.iter().map(|e| e.static_pk.to_string()).collect();
    assert_eq!(
        order,
        [
            keys[2].public_key().to_string(),
            keys[0].public_key().to_string()
        ],
        "most free first, none without free sessions"
    );
    let all = send(&app, get("/dmsg-discovery/all_servers")).await;
    let typed_all = b.store.all_servers(10_000).await.unwrap();
    assert_eq!(typed_all.len(), 3);
    assert_eq!(all.json, serde_json::to_value(&typed_all).unwrap());

    // Corrupt the stored entry of the server with no free sessions: only `all_servers` lists it.
    let url = b.redis.as_ref().unwrap().url();
    let mut conn = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let corrupt_key = format!("dmsgd:{}:e", keys[1].public_key());
    let _: () = redis::cmd("SET")
        .arg(&corrupt_key)
        .arg("{not json")
        .query_async(&mut conn)
        .await
        .unwrap();
    let all = send(&app, get("/dmsg-discovery/all_servers")).await;
    assert_eq!(all.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(all.code(), "internal");
    assert!(
        all.json["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("stored entry")),
        "{all:?}"
    );
    // Unaffected: the other list and single entries.
    let available = send(&app, get("/dmsg-discovery/available_servers")).await;
    assert_eq!(available.status, StatusCode::OK);
    assert_eq!(available.json.as_array().map(Vec::len), Some(2));
    let path = format!("/dmsg-discovery/entry/{}", keys[0].public_key());
    assert_eq!(send(&app, get(&path)).await.status, StatusCode::OK);
}
