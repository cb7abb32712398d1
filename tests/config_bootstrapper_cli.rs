//! `skytower config-bootstrapper`: the flags, config file errors naming the field, and a run
//! answering `/config` until SIGTERM.

mod common;

use common::{Running, free_port, refused, service_help};

#[test]
fn help_has_the_shared_flags_and_the_config_file() {
    let help = service_help("config-bootstrapper", &["--config", "--rate-limit"]);
    assert!(help.contains("127.0.0.1:9082"), "{help}");
}

#[test]
fn config_file_errors_name_the_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("boot.toml");
    std::fs::write(
        &path,
        "[services]\nuptime_trackr = \"http://127.0.0.1:9096\"\n",
    )
    .unwrap();
    let err = refused(&["config-bootstrapper", "--config", path.to_str().unwrap()]);
    assert!(err.contains("boot.toml:2:1"), "{err}");
    assert!(
        err.contains("services.uptime_trackr: unknown field `uptime_trackr`"),
        "{err}"
    );

    let err = refused(&["config-bootstrapper", "--config", "/nonexistent/boot.toml"]);
    assert!(err.contains("/nonexistent/boot.toml"), "{err}");

    let err = refused(&["config-bootstrapper"]);
    assert!(err.contains("--config"), "{err}");
}

#[test]
fn serves_the_config_until_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("boot.toml");
    std::fs::write(&path, "stun_servers = [\"stun.example.org:3478\"]\n").unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let service = Running::spawn(&[
        "config-bootstrapper",
        "--addr",
        &addr,
        "--config",
        path.to_str().unwrap(),
        "--grace",
        "1s",
    ]);
    let answer = service.wait_for_get(port, "/config", "the bootstrapper");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("stun.example.org:3478"), "{answer}");
    let status = service.sigterm();
    assert!(status.success(), "{status}");
}
