//! `dmsg-server` config: parsing, defaults, durations, unknown fields, validation errors that
//! name their field, and flag/file/default precedence.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use skytower_services::dmsg_server::{ConfigError, DmsgServerArgs, DmsgServerConfig, Limits};
use skytower_services::transports::dmsg::server::ServerConfig;

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    args: DmsgServerArgs,
}

fn args(flags: &[&str]) -> Result<DmsgServerArgs, clap::Error> {
    Cli::try_parse_from(std::iter::once("dmsg-server").chain(flags.iter().copied())).map(|c| c.args)
}

#[test]
fn empty_config_is_the_defaults_and_maps_onto_server_config_defaults() {
    let c = DmsgServerConfig::from_toml_str("").unwrap();
    assert_eq!(c, DmsgServerConfig::default());
    assert_eq!(c.listen, "0.0.0.0:8081".parse().unwrap());
    assert_eq!(c.public_addr, None);
    assert_eq!(c.key_file, PathBuf::from("dmsg-server.key"));
    assert!(!c.generate_key);
    assert_eq!(c.discovery, None);
    assert_eq!(c.shutdown_grace, Duration::from_secs(10));
    assert_eq!(c.stats_interval, Duration::from_secs(60));

    let d = ServerConfig::default();
    let s = c.server_config();
    assert_eq!(s.max_sessions, d.max_sessions);
    assert_eq!(s.max_streams_per_session, d.max_streams_per_session);
    assert_eq!(s.handshake_concurrency, d.handshake_concurrency);
    assert_eq!(s.handshake_queue, d.handshake_queue);
    assert_eq!(s.handshake_timeout, d.handshake_timeout);
    assert_eq!(s.forward_timeout, d.forward_timeout);
    assert_eq!(s.bridge_idle_timeout, d.bridge_idle_timeout);
    // An empty [limits] table is the defaults too.
    assert_eq!(
        DmsgServerConfig::from_toml_str("[limits]").unwrap(),
        DmsgServerConfig::default()
    );
}

const FULL: &str = r#"
listen = "127.0.0.1:9000"
public_addr = "dmsg.example.org:9000"
key_file = "/var/lib/skytower/dmsg-server.key"
generate_key = true
discovery = "https://dmsgd.example.org"
shutdown_grace = "3s"
stats_interval = "30s"

[limits]
max_sessions = 10
max_streams_per_session = 20
handshake_concurrency = 3
handshake_queue = 0
handshake_timeout = "1500ms"
forward_timeout = "2s"
bridge_idle_timeout = "1h 30m"
"#;

#[test]
fn every_field_parses_and_reaches_server_config() {
    let c = DmsgServerConfig::from_toml_str(FULL).unwrap();
    assert_eq!(
        c,
        DmsgServerConfig {
            listen: "127.0.0.1:9000".parse().unwrap(),
            public_addr: Some("dmsg.example.org:9000".into()),
            key_file: "/var/lib/skytower/dmsg-server.key".into(),
            generate_key: true,
            discovery: Some("https://dmsgd.example.org".into()),
            shutdown_grace: Duration::from_secs(3),
            stats_interval: Duration::from_secs(30),
            limits: Limits {
                max_sessions: 10,
                max_streams_per_session: 20,
                handshake_concurrency: 3,
                handshake_queue: 0,
                handshake_timeout: Duration::from_millis(1500),
                forward_timeout: Duration::from_secs(2),
                bridge_idle_timeout: Duration::from_secs(5400),
            },
        }
    );
    let s = c.server_config();
    assert_eq!(s.max_sessions, 10);
    assert_eq!(s.max_streams_per_session, 20);
    assert_eq!(s.handshake_concurrency, 3);
    assert_eq!(s.handshake_queue, 0);
    assert_eq!(s.handshake_timeout, Duration::from_millis(1500));
    assert_eq!(s.forward_timeout, Duration::from_secs(2));
    assert_eq!(s.bridge_idle_timeout, Duration::from_secs(5400));
    // Settings without a config field keep the server defaults.
    assert_eq!(s.replay_window, ServerConfig::default().replay_window);
}

#[test]
fn durations_are_humane_strings() {
    for (text, want) in [
        ("10s", Duration::from_secs(10)),
        ("5m", Duration::from_secs(300)),
        ("250ms", Duration::from_millis(250)),
        ("1h 30m", Duration::from_secs(5400)),
        ("2days", Duration::from_secs(2 * 86400)),
    ] {
        let c = DmsgServerConfig::from_toml_str(&format!("[limits]\nforward_timeout = {text:?}"))
            .unwrap();
        assert_eq!(c.limits.forward_timeout, want, "{text}");
    }
    // No unit, or a number instead of a string: an error naming the field, with an example.
    let e = DmsgServerConfig::from_toml_str("[limits]\nforward_timeout = \"10\"").unwrap_err();
    assert_eq!(e.field(), Some("limits.forward_timeout"));
    assert!(e.to_string().contains("\"10s\""), "{e}");
    let e = DmsgServerConfig::from_toml_str("shutdown_grace = 10").unwrap_err();
    assert_eq!(e.field(), Some("shutdown_grace"));
}

#[test]
fn unknown_fields_are_errors_naming_them() {
    let e = DmsgServerConfig::from_toml_str("listen = \"127.0.0.1:1\"\nlisten_adr = \"x\"")
        .unwrap_err();
    assert_eq!(e.field(), Some("listen_adr"));
    let msg = e.to_string();
    assert!(
        msg.starts_with("<config>:2:1: listen_adr: unknown field `listen_adr`"),
        "{msg}"
    );

    let e = DmsgServerConfig::from_toml_str("[limits]\nmax_sesions = 1").unwrap_err();
    assert_eq!(e.field(), Some("limits.max_sesions"));
    assert!(
        e.to_string()
            .contains("unknown field `max_sesions`, expected one of"),
        "{e}"
    );

    let e = DmsgServerConfig::from_toml_str("[limit]\nmax_sessions = 1").unwrap_err();
    assert_eq!(e.field(), Some("limit"));
}

#[test]
fn wrong_types_and_syntax_errors_name_the_place() {
    let e = DmsgServerConfig::from_toml_str("[limits]\nmax_sessions = \"many\"").unwrap_err();
    assert_eq!(e.field(), Some("limits.max_sessions"));
    assert!(
        e.to_string()
            .starts_with("<config>:2:16: limits.max_sessions: invalid type"),
        "{e}"
    );
    let e =
        DmsgServerConfig::from_toml_str("[limits]\nmax_streams_per_session = 70000").unwrap_err();
    assert_eq!(e.field(), Some("limits.max_streams_per_session"));
    let e = DmsgServerConfig::from_toml_str("listen = \"localhost\"").unwrap_err();
    assert_eq!(e.field(), Some("listen"));
    let e = DmsgServerConfig::from_toml_str("listen = [").unwrap_err();
    assert!(
        matches!(e, ConfigError::Parse { line: Some(1), .. }),
        "{e:?}"
    );
}

#[test]
fn each_validation_error_names_its_field() {
    let cases = [
        (
            "[limits]\nmax_sessions = 0",
            "limits.max_sessions: must be at least 1",
        ),
        (
            "[limits]\nmax_streams_per_session = 0",
            "limits.max_streams_per_session: must be at least 1",
        ),
        (
            "[limits]\nhandshake_concurrency = 0",
            "limits.handshake_concurrency: must be at least 1",
        ),
        (
            "[limits]\nhandshake_timeout = \"0s\"",
            "limits.handshake_timeout: must be greater than 0",
        ),
        (
            "[limits]\nforward_timeout = \"0s\"",
            "limits.forward_timeout: must be greater than 0",
        ),
        (
            "[limits]\nbridge_idle_timeout = \"0s\"",
            "limits.bridge_idle_timeout: must be greater than 0",
        ),
        (
            "stats_interval = \"0s\"",
            "stats_interval: must be greater than 0",
        ),
        (
            "public_addr = \"no-port\"",
            "public_addr: \"no-port\": missing port",
        ),
        (
            "public_addr = \"host:0\"",
            "public_addr: \"host:0\": port must be 1-65535",
        ),
        (
            "public_addr = \"bad host:1\"",
            "public_addr: \"bad host:1\": invalid host",
        ),
        ("key_file = \"\"", "key_file: must not be empty"),
        (
            "discovery = \"ftp://d.example\"",
            "discovery: \"ftp://d.example\": scheme must be http or https",
        ),
        (
            "discovery = \"d.example:9090\"",
            "discovery: \"d.example:9090\": ",
        ),
        (
            "discovery = \"not a url\"",
            "discovery: \"not a url\" is not a valid URL",
        ),
    ];
    for (toml, want) in cases {
        let e = DmsgServerConfig::from_toml_str(toml).unwrap_err();
        assert!(matches!(e, ConfigError::Invalid { .. }), "{toml}: {e:?}");
        let field = want.split(':').next().unwrap();
        assert_eq!(e.field(), Some(field), "{toml}");
        assert!(
            e.to_string().starts_with(want),
            "{toml}: got {e}, want {want}"
        );
    }
    // Allowed edge values.
    let c = DmsgServerConfig::from_toml_str(
        "shutdown_grace = \"0s\"\npublic_addr = \"[2001:db8::1]:8081\"\n[limits]\nhandshake_queue = 0",
    )
    .unwrap();
    assert_eq!(c.shutdown_grace, Duration::ZERO);
}

#[test]
fn printed_config_parses_back_to_the_same_config() {
    for c in [
        DmsgServerConfig::default(),
        DmsgServerConfig::from_toml_str(FULL).unwrap(),
    ] {
        let text = c.to_toml().unwrap();
        assert_eq!(DmsgServerConfig::from_toml_str(&text).unwrap(), c, "{text}");
    }
    let text = DmsgServerConfig::default().to_toml().unwrap();
    assert!(text.contains("bridge_idle_timeout = \"5m\""), "{text}");
    assert!(
        !text.contains("discovery"),
        "unset options are omitted: {text}"
    );
}

#[test]
fn flags_override_the_file_which_overrides_the_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dmsg-server.toml");
    std::fs::write(
        &path,
        "listen = \"127.0.0.1:7000\"\nkey_file = \"/k/file.key\"\n[limits]\nmax_sessions = 5\nforward_timeout = \"7s\"\n",
    )
    .unwrap();
    let p = path.to_str().unwrap();

    // File only: file values, defaults elsewhere.
    let c = args(&["--config", p]).unwrap().resolve().unwrap();
    assert_eq!(c.listen, "127.0.0.1:7000".parse().unwrap());
    assert_eq!(c.limits.max_sessions, 5);
    assert_eq!(c.limits.forward_timeout, Duration::from_secs(7));
    assert_eq!(c.limits.handshake_queue, 1024);

    // Every flag over the file.
    let a = args(&[
        "-c",
        p,
        "--listen",
        "127.0.0.1:7001",
        "--public-addr",
        "pub.example:7001",
        "--key",
        "flag.key",
        "--generate-key",
        "--discovery",
        "http://d.example:9090",
        "--max-sessions",
        "6",
        "--max-streams-per-session",
        "7",
        "--handshake-concurrency",
        "8",
        "--handshake-queue",
        "9",
        "--handshake-timeout",
        "11s",
        "--forward-timeout",
        "12s",
        "--bridge-idle-timeout",
        "13m",
        "--grace",
        "14s",
        "--stats-interval",
        "15s",
    ])
    .unwrap();
    let c = a.resolve().unwrap();
    assert_eq!(
        c,
        DmsgServerConfig {
            listen: "127.0.0.1:7001".parse().unwrap(),
            public_addr: Some("pub.example:7001".into()),
            key_file: "flag.key".into(), // a flag path is relative to the working directory
            generate_key: true,
            discovery: Some("http://d.example:9090".into()),
            shutdown_grace: Duration::from_secs(14),
            stats_interval: Duration::from_secs(15),
            limits: Limits {
                max_sessions: 6,
                max_streams_per_session: 7,
                handshake_concurrency: 8,
                handshake_queue: 9,
                handshake_timeout: Duration::from_secs(11),
                forward_timeout: Duration::from_secs(12),
                bridge_idle_timeout: Duration::from_secs(13 * 60),
            },
        }
    );

    // No file: flags over the defaults.
    let c = args(&["--max-sessions", "3"]).unwrap().resolve().unwrap();
    assert_eq!(c.limits.max_sessions, 3);
    assert_eq!(c.listen, "0.0.0.0:8081".parse().unwrap());
}

#[test]
fn validation_runs_after_the_flags_are_applied() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[limits]\nmax_sessions = 0\n").unwrap();
    let p = path.to_str().unwrap();
    let e = args(&["-c", p]).unwrap().resolve().unwrap_err();
    assert_eq!(e.to_string(), "limits.max_sessions: must be at least 1");
    // A flag fixes the file's bad value.
    let c = args(&["-c", p, "--max-sessions", "2"])
        .unwrap()
        .resolve()
        .unwrap();
    assert_eq!(c.limits.max_sessions, 2);
    // A parse error in the file names the file, line and field.
    std::fs::write(&path, "\n[limits]\nmax_sessions = -1\n").unwrap();
    let e = DmsgServerConfig::load(&path).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("{p}:3:16: limits.max_sessions: ")),
        "{e}"
    );
}

#[test]
fn bad_flag_values_are_rejected_naming_the_flag() {
    for (flags, flag) in [
        (&["--max-sessions", "0"][..], "--max-sessions"),
        (
            &["--max-streams-per-session", "0"],
            "--max-streams-per-session",
        ),
        (
            &["--max-streams-per-session", "65536"],
            "--max-streams-per-session",
        ),
        (&["--handshake-concurrency", "0"], "--handshake-concurrency"),
        (&["--handshake-timeout", "0s"], "--handshake-timeout"),
        (&["--forward-timeout", "10"], "--forward-timeout"),
        (&["--bridge-idle-timeout", "soon"], "--bridge-idle-timeout"),
        (&["--stats-interval", "0s"], "--stats-interval"),
        (&["--listen", "localhost:1"], "--listen"),
        (&["--public-addr", "x"], "--public-addr"),
        (&["--discovery", "ftp://x"], "--discovery"),
        (&["--no-such-flag"], "--no-such-flag"),
    ] {
        let e = args(flags).unwrap_err().to_string();
        assert!(e.contains(flag), "{flags:?}: {e}");
    }
    assert_eq!(
        args(&["--grace", "0s"]).unwrap().grace,
        Some(Duration::ZERO)
    );
}

#[test]
fn relative_key_file_in_a_config_file_is_relative_to_its_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("srv.toml");
    std::fs::write(&path, "key_file = \"keys/srv.key\"\n").unwrap();
    let c = DmsgServerConfig::load(&path).unwrap();
    assert_eq!(c.key_file, dir.path().join("keys/srv.key"));
    // The default key file sits next to the config file too.
    std::fs::write(&path, "").unwrap();
    let c = DmsgServerConfig::load(&path).unwrap();
    assert_eq!(c.key_file, dir.path().join("dmsg-server.key"));
    // Absolute paths are kept.
    std::fs::write(&path, "key_file = \"/abs/srv.key\"\n").unwrap();
    assert_eq!(
        DmsgServerConfig::load(&path).unwrap().key_file,
        PathBuf::from("/abs/srv.key")
    );
}

#[test]
fn a_missing_config_file_is_a_read_error_naming_it() {
    let e = DmsgServerConfig::load("/nonexistent/dmsg-server.toml").unwrap_err();
    assert!(matches!(e, ConfigError::Read { .. }));
    assert!(
        e.to_string().contains("/nonexistent/dmsg-server.toml"),
        "{e}"
    );
}
