//! `dmsg-server` running: in-process (start, a client pings, shutdown), start errors, and the
//! real binary (first stdout line, ping, SIGTERM → exit 0; bad config / bind → exit 1; --help).

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use skytower_services::dmsg_server::{DmsgServer, DmsgServerConfig, RunError, run};
use skytower_services::transports::dmsg::session::{Endpoint, SessionConfig};
use skytower_services::transports::identity::{KeyFormat, PublicKey, SecretKey};

const BIN: &str = env!("CARGO_BIN_EXE_dmsg-server");

fn local_config(dir: &Path) -> DmsgServerConfig {
    DmsgServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        key_file: dir.join("srv.key"),
        generate_key: true,
        ..DmsgServerConfig::default()
    }
}

async fn ping(addr: SocketAddr, server_pk: PublicKey) {
    let client = Endpoint::new(SecretKey::generate().unwrap(), SessionConfig::default());
    let session = client.connect(addr, server_pk).await.expect("session");
    let rtt = session.ping().await.expect("ping");
    assert!(rtt < Duration::from_secs(5));
    session.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_server_serves_a_client_ping_then_shuts_down() {
    let dir = tempfile::tempdir().unwrap();
    let config = local_config(dir.path());
    let server = DmsgServer::start(config.clone()).await.unwrap();
    let addr = server.local_addr();
    let pk = server.public_key();
    assert_ne!(addr.port(), 0);
    assert_eq!(server.public_addr(), addr.to_string());

    // The key was generated, private, and is the server's identity.
    let key = SecretKey::load(&config.key_file).unwrap();
    assert_eq!(key.public_key(), pk);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&config.key_file)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // A client connects and pings; the session is counted.
    let client = Endpoint::new(SecretKey::generate().unwrap(), SessionConfig::default());
    let session = client.connect(addr, pk).await.unwrap();
    session.ping().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.server().stats().sessions() != 1 {
        assert!(Instant::now() < deadline, "session not registered");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(server.server().clients(), vec![client.public_key()]);

    // Shutdown trigger: the run ends within the grace, and the client's session ends.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run_until(async move {
        let _ = stopped.await;
    }));
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(15), running)
        .await
        .expect("shutdown within the grace")
        .unwrap();
    let mut session = session;
    tokio::time::timeout(Duration::from_secs(10), session.closed())
        .await
        .expect("client session ends with the server");

    // Restarting reuses the key file (same identity), on a new port.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let again = DmsgServer::start(config).await.unwrap();
    assert_eq!(again.public_key(), pk);
    let addr = again.local_addr();
    let running = tokio::spawn(again.run_until(async move {
        let _ = stopped.await;
    }));
    ping(addr, pk).await;
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(15), running)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn run_returns_ok_after_the_shutdown_future() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = local_config(dir.path());
    config.stats_interval = Duration::from_millis(5); // the stats log runs too
    let shutdown = tokio::time::sleep(Duration::from_millis(50));
    tokio::time::timeout(Duration::from_secs(15), run(config, shutdown))
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn start_errors_are_typed_and_clear() {
    let dir = tempfile::tempdir().unwrap();

    // Missing key without generate_key: refuses, says how to fix it, creates nothing.
    let mut config = local_config(dir.path());
    config.generate_key = false;
    let e = DmsgServer::start(config.clone()).await.unwrap_err();
    assert!(matches!(e, RunError::KeyMissing { .. }), "{e:?}");
    assert!(e.to_string().contains("--generate-key"), "{e}");
    assert!(!config.key_file.exists());

    // generate_key into a directory that does not exist.
    let mut missing_dir = local_config(dir.path());
    missing_dir.key_file = dir.path().join("nope/srv.key");
    let e = DmsgServer::start(missing_dir).await.unwrap_err();
    assert!(matches!(e, RunError::KeyDirMissing { .. }), "{e:?}");

    // A bad key file is an error even with generate_key (never overwritten).
    std::fs::write(&config.key_file, "not a key\n").unwrap();
    config.generate_key = true;
    let e = DmsgServer::start(config.clone()).await.unwrap_err();
    assert!(matches!(e, RunError::Key(_)), "{e:?}");
    assert!(e.to_string().contains("srv.key"), "{e}");
    assert_eq!(
        std::fs::read_to_string(&config.key_file).unwrap(),
        "not a key\n"
    );

    // Bind failure names the address.
    SecretKey::generate()
        .unwrap()
        .save_replacing(&config.key_file, KeyFormat::Hex)
        .unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    config.listen = taken.local_addr().unwrap();
    let e = DmsgServer::start(config.clone()).await.unwrap_err();
    assert!(matches!(e, RunError::Bind { .. }), "{e:?}");
    assert!(e.to_string().contains(&config.listen.to_string()), "{e}");

    // An invalid config (public fields set by hand) is caught before anything else.
    config.limits.max_sessions = 0;
    let e = DmsgServer::start(config).await.unwrap_err();
    assert_eq!(e.to_string(), "limits.max_sessions: must be at least 1");
}

/// Kills the child on drop (a failing test leaves no server behind).
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn wait_with_deadline(child: &mut Child, bound: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + bound;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "process did not exit within {bound:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn binary_serves_a_ping_and_exits_0_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("dmsg-server.toml");
    // key_file relative to the config file's directory.
    std::fs::write(
        &config,
        "listen = \"127.0.0.1:0\"\nkey_file = \"srv.key\"\ngenerate_key = true\nshutdown_grace = \"5s\"\n",
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
    let child = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut child = Reaper(child);

    // First stdout line: `listening <addr> <pk>`.
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the listening line");
    let mut parts = line.split_whitespace();
    assert_eq!(parts.next(), Some("listening"), "{line:?}");
    let addr: SocketAddr = parts.next().unwrap().parse().unwrap();
    let pk: PublicKey = parts.next().unwrap().parse().unwrap();
    assert_ne!(addr.port(), 0);
    assert_eq!(
        SecretKey::load(dir.path().join("srv.key"))
            .unwrap()
            .public_key(),
        pk
    );

    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(ping(addr, pk));

    let pid = i32::try_from(child.0.id()).unwrap();
    // SAFETY: kill(2) on our own child's pid; no memory is involved.
    let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let status = wait_with_deadline(&mut child.0, Duration::from_secs(15));
    let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap();
    assert!(status.success(), "{status:?}\n{log}");
    assert!(
        log.contains(&format!("dmsg server {pk} listening on {addr}")),
        "{log}"
    );
    assert!(log.contains("received SIGTERM"), "{log}");
    assert!(log.contains("dmsg server stopped"), "{log}");
}

fn run_binary(args: &[&str]) -> (std::process::ExitStatus, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn binary_exits_1_naming_the_bad_field_or_address() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(
        &config,
        "listen = \"127.0.0.1:0\"\n[limits]\nmax_sessions = 0\n",
    )
    .unwrap();
    let (status, _, err) = run_binary(&["--config", config.to_str().unwrap()]);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("error: limits.max_sessions: must be at least 1"),
        "{err}"
    );

    std::fs::write(&config, "[limits]\nmax_sesions = 5\n").unwrap();
    let (status, _, err) = run_binary(&["--config", config.to_str().unwrap()]);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("limits.max_sesions: unknown field `max_sesions`"),
        "{err}"
    );

    let key = dir.path().join("srv.key");
    SecretKey::generate_and_save(&key, KeyFormat::Json).unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (status, _, err) = run_binary(&["--listen", &addr, "--key", key.to_str().unwrap()]);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("cannot listen on {addr}")), "{err}");

    let missing = dir.path().join("missing.key");
    let (status, _, err) = run_binary(&[
        "--listen",
        "127.0.0.1:0",
        "--key",
        missing.to_str().unwrap(),
    ]);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("does not exist; pass --generate-key"), "{err}");
}

/// Every flag, as `--help` must document it.
const FLAGS: &[&str] = &[
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
];

#[test]
fn binary_help_mentions_every_flag_and_discovery_registration() {
    let (status, out, _) = run_binary(&["--help"]);
    assert!(status.success());
    for flag in FLAGS {
        assert!(
            out.contains(&format!("{flag} ")),
            "--help lacks {flag}:\n{out}"
        );
    }
    assert!(out.contains("registers its entry"), "{out}");
    assert!(out.contains("docs/dmsg-server.md"), "{out}");
}

#[test]
fn binary_print_config_prints_the_effective_config_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("srv.toml");
    std::fs::write(
        &config,
        "listen = \"127.0.0.1:9\"\n[limits]\nmax_sessions = 5\n",
    )
    .unwrap();
    let (status, out, err) = run_binary(&[
        "--config",
        config.to_str().unwrap(),
        "--max-streams-per-session",
        "7",
        "--print-config",
    ]);
    assert!(status.success(), "{err}");
    let printed = DmsgServerConfig::from_toml_str(&out).unwrap();
    assert_eq!(printed.listen, "127.0.0.1:9".parse().unwrap());
    assert_eq!(printed.limits.max_sessions, 5);
    assert_eq!(printed.limits.max_streams_per_session, 7);
    assert_eq!(printed.key_file, dir.path().join("dmsg-server.key"));
    assert!(!printed.key_file.exists(), "--print-config creates nothing");
}

/// The relay registers with a real dmsg-discovery over HTTP, stays listed, and removes its entry
/// on shutdown; a DMSG client that only knows the discovery URL finds it and connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_with_dmsg_discovery_and_deletes_its_entry_on_shutdown() {
    use skytower_services::dmsg_discovery::{Config, DiscoveryServer};
    use skytower_services::transports::dmsg::disc::Discovery;
    use skytower_services::transports::dmsg::disc_http::HttpDiscovery;
    use skytower_services::transports::dmsg::{Client, ClientConfig};

    let discovery = DiscoveryServer::bind(Config {
        addr: "127.0.0.1:0".parse().unwrap(),
        allow_loopback: true,
        ..Config::default()
    })
    .await
    .unwrap();
    let disc_addr = discovery.local_addr().unwrap();
    let (stop_disc, disc_stopped) = tokio::sync::oneshot::channel::<()>();
    let disc_task = tokio::spawn(discovery.serve(async {
        let _ = disc_stopped.await;
    }));
    let url = format!("http://{disc_addr}");

    let dir = tempfile::tempdir().unwrap();
    let mut config = DmsgServerConfig {
        discovery: Some(url.clone()),
        ..local_config(dir.path())
    };
    config.limits.max_sessions = 10;
    let server = DmsgServer::start(config).await.unwrap();
    let pk = server.public_key();
    let public_addr = server.public_addr().to_owned();
    let http = HttpDiscovery::new(&url).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let entry = loop {
        if let Ok(entry) = http.entry(pk).await {
            break entry;
        }
        assert!(Instant::now() < deadline, "the server never registered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let section = entry.server.expect("a server entry");
    assert_eq!(section.address, public_addr);
    assert_eq!(section.available_sessions, 10);

    // A client that knows only the discovery finds the server and holds a session.
    let client = Client::start_with_discovery_url(
        SecretKey::generate().unwrap(),
        &url,
        ClientConfig::default(),
    )
    .unwrap();
    assert_eq!(
        client.wait_for_sessions(1, Duration::from_secs(10)).await,
        1
    );
    assert_eq!(client.sessions()[0].server, pk);
    drop(client);

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(server.run_until(async {
        let _ = stopped.await;
    }));
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(15), run)
        .await
        .unwrap()
        .unwrap();
    assert!(
        http.entry(pk).await.is_err(),
        "the entry must be deleted on shutdown"
    );
    stop_disc.send(()).unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(10), disc_task).await;
}
