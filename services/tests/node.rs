//! The node daemon and its control API, on an in-process DMSG network: sessions, connect-all,
//! fetches through the node (and each refusal with its code and message), the control
//! socket's permissions and lifecycle.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use http::StatusCode;
use http_body_util::BodyExt;
use skytower_services::node::fetch::FetchSpec;
use skytower_services::node::{
    ControlBindError, ControlClient, ControlError, Node, NodeConfig, NodeError,
};
use skytower_services::svcmode::{Mode, SvcConfig, SvcServer};
use skytower_transports::fetch::Via;
use skytower_transports::identity::SecretKey;
use skytower_transports::testing::{TestNetwork, test_client_config};
use tokio::sync::oneshot;

const T: Duration = Duration::from_secs(20);

fn node_config(net: &TestNetwork, control: &std::path::Path, min_sessions: usize) -> NodeConfig {
    let mut config = NodeConfig::new(
        SecretKey::generate().unwrap(),
        Arc::new(net.discovery().clone()),
    );
    config.control = control.to_path_buf();
    config.client = test_client_config();
    config.client.min_sessions = min_sessions;
    config
}

fn spawn_node(
    node: Node,
) -> (
    oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), NodeError>>,
) {
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(node.run_until(async {
        let _ = stopped.await;
    }));
    (stop, task)
}

/// The whole body of a fetched response.
async fn body_of(fetched: skytower_services::node::fetch::Fetched) -> bytes::Bytes {
    fetched
        .response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
}

async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while !f().await {
        assert!(start.elapsed() < T, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A DMSG-only service answering `/hello` on port 80 of a fresh key.
async fn dmsg_service(net: &TestNetwork) -> (SvcServer, skytower_transports::dmsg::wire::Addr) {
    let config = SvcConfig {
        key: Some(SecretKey::generate().unwrap()),
        discovery: Some(Arc::new(net.discovery().clone())),
        mode: Mode::Dmsg,
        client: test_client_config(),
        ..SvcConfig::default()
    };
    let app = Router::new()
        .route("/hello", get(|| async { "hello over dmsg" }))
        .route("/big", get(|| async { vec![7u8; 4 << 20] }));
    let server = SvcServer::start(config, "svc", app).await.unwrap();
    let addr = server.dmsg_addr().unwrap();
    (server, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_connect_all_and_info_through_the_control_socket() {
    let net = TestNetwork::start(2).await;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("node.sock");
    let node = Node::start(node_config(&net, &socket, 1)).await.unwrap();
    let pk = node.public_key();
    assert_eq!(node.control_path(), socket);
    // Owner-only socket.
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let (stop, task) = spawn_node(node);

    let control = ControlClient::new(&socket);
    eventually("one session", || async {
        control.sessions(false).await.unwrap().len() == 1
    })
    .await;
    let health = control.health().await.unwrap();
    assert_eq!((health.status.as_str(), health.sessions), ("ok", 1));
    let info = control.info().await.unwrap();
    assert_eq!(info.public_key, pk);
    assert_eq!(info.dmsg_addr, format!("{pk}:80"));

    // min_sessions 1: connect-all opens the second one.
    let rows = control.connect_all().await.unwrap();
    assert_eq!(rows.len(), 2);
    let mut servers: Vec<_> = rows.iter().map(|r| r.server).collect();
    servers.sort();
    let mut expected = net.server_keys();
    expected.sort();
    assert_eq!(servers, expected);
    for row in &rows {
        assert!(row.rtt().is_some(), "connect-all pings: {row:?}");
        assert!(row.bytes_in > 0 && row.bytes_out > 0, "{row:?}");
        assert!(row.connected_since_ms > 0);
    }
    // Unpinged listing keeps the measured RTTs.
    let listed = control.sessions(false).await.unwrap();
    assert_eq!(listed.len(), 2);

    stop.send(()).unwrap();
    tokio::time::timeout(T, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    // The socket is gone, and the client says so in one line.
    assert!(!socket.exists());
    let err = control.sessions(false).await.unwrap_err();
    assert!(matches!(err, ControlError::NoNode { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "no node running: no control socket at {} (start one with `skytower node` or `skytower up`)",
            socket.display()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_through_the_node_and_its_refusals() {
    let net = TestNetwork::start(1).await;
    let (service, addr) = dmsg_service(&net).await;
    // Dial only once the service is reachable: its entry published and its server holding its
    // session. Dialing earlier fails on the path ("not connected to this server"), which the
    // node's negative cache then remembers for seconds: retrying through it cannot succeed
    // sooner, which made this test flaky under load.
    net.wait_published(service.dmsg_client().unwrap()).await;
    let (service_stop, service_stopped) = oneshot::channel::<()>();
    let service_task = tokio::spawn(service.run_until(async {
        let _ = service_stopped.await;
    }));
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("node.sock");
    let node = Node::start(node_config(&net, &socket, 1)).await.unwrap();
    let (stop, task) = spawn_node(node);
    let control = ControlClient::new(&socket);

    // Dial only once the service is reachable (above) and the node's own session is up.
    eventually("the node's session", || async {
        control.sessions(false).await.is_ok_and(|s| !s.is_empty())
    })
    .await;
    let spec = FetchSpec::get(&format!("dmsg://{addr}/hello")).unwrap();
    let start = std::time::Instant::now();
    let fetched = loop {
        match control.fetch(&spec).await {
            Ok(f) => break f,
            Err(e) => {
                assert!(start.elapsed() < T, "service unreachable: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    assert_eq!(fetched.via, Via::Dmsg);
    assert_eq!(fetched.response.status(), StatusCode::OK);
    let body = body_of(fetched).await;
    assert_eq!(body, "hello over dmsg");

    // A large body streams through the node (and its control connection) intact.
    let spec = FetchSpec::get(&format!("dmsg://{addr}/big")).unwrap();
    let fetched = control.fetch(&spec).await.unwrap();
    let body = body_of(fetched).await;
    assert_eq!(body.len(), 4 << 20);
    assert!(body.iter().all(|b| *b == 7));

    // Nothing listens on port 81: the destination's signed refusal.
    let spec = FetchSpec::get(&format!("dmsg://{}:81/", addr.pk)).unwrap();
    match control.fetch(&spec).await.unwrap_err() {
        ControlError::Api { code, message, .. } => {
            assert_eq!(code, "refused");
            assert_eq!(
                message,
                format!(
                    "dmsg://{}:81 refused the stream: no listener on the destination port",
                    addr.pk
                )
            );
        }
        other => panic!("{other:?}"),
    }
    // A key nobody registered.
    let unknown = SecretKey::generate().unwrap().public_key();
    let spec = FetchSpec::get(&format!("dmsg://{unknown}/")).unwrap();
    match control.fetch(&spec).await.unwrap_err() {
        ControlError::Api {
            code,
            message,
            status,
        } => {
            assert_eq!(code, "unknown_destination");
            assert_eq!(status, StatusCode::BAD_GATEWAY);
            assert_eq!(
                message,
                format!("unknown destination {unknown}: it has no entry in discovery")
            );
        }
        other => panic!("{other:?}"),
    }

    stop.send(()).unwrap();
    tokio::time::timeout(T, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    service_stop.send(()).unwrap();
    tokio::time::timeout(T, service_task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_socket_refuses_a_second_node_replaces_a_stale_socket_and_never_a_file() {
    let net = TestNetwork::start(1).await;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("node.sock");

    // A stale socket (its listener gone, the file left behind) is replaced.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    let node = Node::start(node_config(&net, &socket, 1)).await.unwrap();

    // A second node on the same socket is refused, naming it.
    let err = Node::start(node_config(&net, &socket, 1))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            NodeError::Control(ControlBindError::AlreadyRunning { .. })
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "a node is already running with control socket {}",
            socket.display()
        )
    );
    // The first one still answers.
    let control = ControlClient::new(&socket);
    control.info().await.unwrap();
    let (stop, task) = spawn_node(node);
    stop.send(()).unwrap();
    tokio::time::timeout(T, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();

    // A regular file in the way is never removed.
    let file = dir.path().join("not-a-socket");
    std::fs::write(&file, b"precious").unwrap();
    let err = Node::start(node_config(&net, &file, 1)).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{} exists and is not a socket; remove it or pass another --control path",
            file.display()
        )
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"precious");
}

#[tokio::test]
async fn http_mode_is_refused() {
    let mut config = NodeConfig::new(
        SecretKey::generate().unwrap(),
        Arc::new(skytower_transports::dmsg::disc::MemoryDiscovery::default()),
    );
    config.mode = Mode::Http;
    let err = Node::start(config).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "a node is a DMSG client: --mode http is not supported (use dmsg or dual)"
    );
}
