//! `skytower node --bootstrap URL`: the node takes its dmsg-discovery from a config
//! bootstrapper, saves the answer, falls back to it when the bootstrapper is gone, and fails
//! with one clear error when there is nothing to fall back to.

use clap::Parser;
use skytower_services::config_bootstrapper::{BootstrapConfig, Bootstrapper, ServiceUrls};
use skytower_services::node::{BOOTSTRAP_FILE, NodeArgs, NodeError};
use skytower_services::svcmode::SvcConfig;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    node: NodeArgs,
}

fn args(dir: &std::path::Path, extra: &[&str]) -> NodeArgs {
    let mut argv = vec!["node", "--dir", dir.to_str().unwrap()];
    argv.extend_from_slice(extra);
    Cli::parse_from(argv).node
}

fn free_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", l.local_addr().unwrap())
}

#[tokio::test]
async fn bootstrap_sets_the_discovery_saves_the_answer_and_falls_back_to_it() {
    // The discovery URL need not answer: the bootstrapper reports it (status unknown).
    let discovery = free_url();
    let config = BootstrapConfig {
        services: ServiceUrls {
            dmsg_discovery: Some(discovery.clone()),
            ..ServiceUrls::default()
        },
        ..BootstrapConfig::default()
    };
    let svc = SvcConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        ..SvcConfig::default()
    };
    let server = Bootstrapper::bind(svc, config).await.unwrap();
    let url = format!("http://{}", server.http_addr().unwrap());
    let stop = CancellationToken::new();
    let running = tokio::spawn(server.serve(stop.clone().cancelled_owned()));

    let tmp = tempfile::tempdir().unwrap();
    let mut node = args(tmp.path(), &["--bootstrap", &url]);
    let fetched = node.bootstrap().await.unwrap().expect("bootstrapped");
    assert_eq!(fetched.services.dmsg_discovery.unwrap().url, discovery);
    assert_eq!(node.svc.discovery.as_deref(), Some(discovery.as_str()));
    let saved = tmp.path().join(BOOTSTRAP_FILE);
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&saved).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // An explicit --discovery wins over the bootstrapper's.
    let mut explicit = args(
        tmp.path(),
        &["--bootstrap", &url, "--discovery", "http://127.0.0.1:9"],
    );
    explicit.bootstrap().await.unwrap();
    assert_eq!(
        explicit.svc.discovery.as_deref(),
        Some("http://127.0.0.1:9")
    );

    // The bootstrapper goes away: the saved answer is used.
    stop.cancel();
    running.await.unwrap().unwrap();
    let mut later = args(tmp.path(), &["--bootstrap", &url]);
    later.bootstrap().await.unwrap();
    assert_eq!(later.svc.discovery.as_deref(), Some(discovery.as_str()));

    // Nothing saved and nothing answering: one error naming the bootstrapper.
    let empty = tempfile::tempdir().unwrap();
    let mut lost = args(empty.path(), &["--bootstrap", &url]);
    let err = lost.bootstrap().await.unwrap_err();
    assert!(matches!(err, NodeError::Bootstrap { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.starts_with(&format!("bootstrap from {url}: ")),
        "{message}"
    );
    assert!(!empty.path().join(BOOTSTRAP_FILE).exists());
}

#[tokio::test]
async fn a_bad_bootstrap_url_is_refused_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let mut node = args(tmp.path(), &["--bootstrap", "ftp://example.org"]);
    let err = node.bootstrap().await.unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("expected an http:// or dmsg:// URL"),
        "{message}"
    );
}

#[tokio::test]
async fn without_bootstrap_nothing_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let mut node = args(tmp.path(), &[]);
    assert!(node.bootstrap().await.unwrap().is_none());
    assert_eq!(node.svc.discovery, None);
}
