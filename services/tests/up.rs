//! `up` in-process: the component list is extensible (a service-mode component added with a
//! few lines comes up in dual mode, healthy, reachable over DMSG through the node), a failing
//! component stops the ones already started, and the ready timeout names what was not ready.

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use http_body_util::BodyExt;
use skytower_services::node::ControlClient;
use skytower_services::node::fetch::FetchSpec;
use skytower_services::svcmode::SvcServer;
use skytower_services::up::{
    self, Component, ComponentCtx, HealthStatus, NetworkTable, StartFuture, UpArgs, UpError,
};
use tokio::sync::oneshot;

const T: Duration = Duration::from_secs(30);

fn args(dir: &std::path::Path) -> UpArgs {
    UpArgs {
        dir: dir.to_path_buf(),
        base_port: 0,
        json: true,
        ready_timeout: Duration::from_secs(20),
        grace: Duration::from_secs(2),
    }
}

fn start_echo(mut ctx: ComponentCtx) -> StartFuture {
    Box::pin(async move {
        let router = Router::new().route("/hello", get(|| async { "hello from echo" }));
        let server = SvcServer::start(ctx.svc_config()?, "echo", router).await?;
        Ok(ctx.serve(server))
    })
}

fn start_broken(_ctx: ComponentCtx) -> StartFuture {
    Box::pin(async move {
        Err(UpError::Start {
            name: "broken",
            source: "no such thing".into(),
        })
    })
}

async fn wait_for_table(path: &std::path::Path) -> NetworkTable {
    let start = std::time::Instant::now();
    loop {
        if let Some(t) = NetworkTable::load(path) {
            return t;
        }
        assert!(start.elapsed() < T, "no network table");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_added_service_comes_up_in_dual_mode_and_answers_over_dmsg() {
    let dir = tempfile::tempdir().unwrap();
    let mut list = up::components();
    let node = list.len() - 1;
    list.insert(node, Component::new("echo", "echo", start_echo));
    let (stop, stopped) = oneshot::channel::<()>();
    let args = args(dir.path());
    let task = tokio::spawn(async move {
        up::up(&args, &list, async {
            let _ = stopped.await;
        })
        .await
    });

    let table = wait_for_table(&dir.path().join(up::NETWORK_FILE)).await;
    let echo = table.components.iter().find(|c| c.name == "echo").unwrap();
    assert_eq!(echo.health, HealthStatus::Ok, "{echo:?}");
    assert!(echo.http.is_some(), "dual mode listens on HTTP");
    let dmsg = echo.dmsg.clone().expect("dual mode listens on DMSG");
    assert!(dmsg.ends_with(":80"));
    // Its key was generated into the directory.
    assert!(dir.path().join("keys").join("echo.key").exists());

    // Reachable over DMSG through the network's node.
    let control = ControlClient::new(&table.control);
    let spec = FetchSpec::get(&format!("dmsg://{dmsg}/hello")).unwrap();
    let fetched = control.fetch(&spec).await.unwrap();
    let body = fetched
        .response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(body, "hello from echo");

    stop.send(()).unwrap();
    tokio::time::timeout(T, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(!dir.path().join(up::NETWORK_FILE).exists());
    assert!(!table.control.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_that_fails_to_start_stops_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let mut list = up::components();
    list.insert(1, Component::new("broken", "broken", start_broken));
    let err = tokio::time::timeout(T, up::up(&args(dir.path()), &list, std::future::pending()))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.to_string(), "starting broken: no such thing");
    // Nothing was left running: the node was never started and the table never written.
    assert!(!dir.path().join("node.sock").exists());
    assert!(!dir.path().join(up::NETWORK_FILE).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_in_time_names_the_component() {
    let dir = tempfile::tempdir().unwrap();
    // A node without relays never gets a session.
    let list: Vec<Component> = up::components()
        .into_iter()
        .filter(|c| c.kind != "dmsg-server")
        .collect();
    let mut args = args(dir.path());
    args.ready_timeout = Duration::from_millis(1500);
    let err = tokio::time::timeout(T, up::up(&args, &list, std::future::pending()))
        .await
        .unwrap()
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, UpError::NotReady { .. }), "{err:?}");
    assert!(text.starts_with("not ready after 1s 500ms: "), "{text}");
    assert!(text.contains("node (degraded: 0 sessions)"), "{text}");
    assert!(!dir.path().join("node.sock").exists());
}
