//! `skytower dmsg-server`: the facade subcommand has the same flags as the `dmsg-server` binary
//! and runs the same code.

mod common;

use common::{help_with_flags, skytower};
use skytower::services::dmsg_server::DmsgServerConfig;

#[test]
fn dmsg_server_help_documents_every_flag() {
    let help = help_with_flags(
        "dmsg-server",
        &[
            "--config",
            "--listen",
            "--public-addr",
            "--key",
            "--generate-key",
            "--discovery",
            "--max-sessions",
            "--max-streams-per-session",
            "--handshake-concurrency",
            "--handshake-queue",
            "--handshake-timeout",
            "--forward-timeout",
            "--bridge-idle-timeout",
            "--grace",
            "--stats-interval",
            "--print-config",
        ],
    );
    assert!(help.contains("registers its entry"), "{help}");
}

#[test]
fn dmsg_server_print_config_applies_flags_and_errors_name_the_field() {
    let out = skytower(&[
        "dmsg-server",
        "--listen",
        "127.0.0.1:9",
        "--bridge-idle-timeout",
        "90s",
        "--print-config",
    ]);
    assert!(out.status.success());
    let config = DmsgServerConfig::from_toml_str(&String::from_utf8_lossy(&out.stdout)).unwrap();
    assert_eq!(config.listen, "127.0.0.1:9".parse().unwrap());
    assert_eq!(config.limits.bridge_idle_timeout.as_secs(), 90);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[limits]\nhandshake_concurrency = 0\n").unwrap();
    let out = skytower(&["dmsg-server", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("error: limits.handshake_concurrency: must be at least 1"),
        "{err}"
    );
}
