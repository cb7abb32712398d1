//! `skytower up` as a real process on free ports: ready table as JSON, the operator commands
//! against it (sessions, connect-all, curl over DMSG and with an HTTP fallback, discovery
//! reads), each bad-input path's exact one-line message and exit code, the control socket's
//! permissions, and a clean exit on SIGTERM. Every wait is bounded.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::mpsc;
use std::time::Duration;

use common::{skytower, spawn_piped, text, wait};
use serde_json::Value;

/// Bound on `up` becoming ready (it takes well under a second on an idle machine).
const READY: Duration = Duration::from_secs(40);

/// A running `skytower up`; killed if the test fails before stopping it.
struct Network {
    child: Child,
    table: Value,
    stderr: mpsc::Receiver<String>,
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Network {
    fn start(dir: &Path) -> Network {
        let dir = dir.to_str().expect("a UTF-8 temporary directory");
        let mut child = spawn_piped(&[
            "up",
            "--json",
            "--base-port",
            "0",
            "--grace",
            "3s",
            "--dir",
            dir,
        ]);
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (etx, stderr) = mpsc::channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                let _ = etx.send(line);
            }
        });
        let mut network = Network {
            child,
            table: Value::Null,
            stderr,
        };
        let line = match lines.recv_timeout(READY) {
            Ok(line) => line,
            Err(e) => panic!(
                "up not ready within {READY:?} ({e}): {}",
                network.stderr_text()
            ),
        };
        network.table = serde_json::from_str(&line).unwrap();
        network
    }

    fn stderr_text(&self) -> String {
        self.stderr.try_iter().collect::<Vec<_>>().join("\n")
    }

    fn component(&self, name: &str) -> &Value {
        self.table["components"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {}", self.table))
    }
}

fn random_pk() -> String {
    skytower::transports::identity::SecretKey::generate()
        .unwrap()
        .public_key()
        .to_string()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn up_runs_a_network_the_operator_commands_work_and_sigterm_stops_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("net");
    let d = dir.to_str().unwrap();
    let mut net = Network::start(&dir);

    // The table: every component healthy, with its addresses.
    assert_eq!(net.table["status"], "ready");
    let names: Vec<&str> = net.table["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "dmsg-discovery",
            "dmsg-server-1",
            "dmsg-server-2",
            "transport-discovery",
            "route-finder",
            "address-resolver",
            "service-discovery",
            "uptime-tracker",
            "config-bootstrapper",
            "node"
        ]
    );
    for c in net.table["components"].as_array().unwrap() {
        assert_eq!(c["health"], "ok", "{c}");
    }
    let disc_http = net.component("dmsg-discovery")["http"]
        .as_str()
        .unwrap()
        .to_owned();
    let disc_dmsg = net.component("dmsg-discovery")["dmsg"]
        .as_str()
        .unwrap()
        .to_owned();
    let node_pk = net.component("node")["public_key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(net.component("node")["dmsg"], format!("{node_pk}:80"));
    let mut relays: Vec<String> = ["dmsg-server-1", "dmsg-server-2"]
        .iter()
        .map(|n| net.component(n)["public_key"].as_str().unwrap().to_owned())
        .collect();
    relays.sort();
    assert_eq!(net.table["discovery"], format!("http://{disc_http}"));

    // Owner-only: the directory, the keys, the control socket, the table.
    let control = dir.join("node.sock");
    assert_eq!(net.table["control"], control.to_str().unwrap());
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&control), 0o600);
    assert_eq!(mode(&dir.join("keys").join("node.key")), 0o600);
    assert_eq!(mode(&dir.join("network.json")), 0o600);

    // Sessions: pinged, so each has an RTT.
    let out = skytower(&["dmsg", "sessions", "--json", "--dir", d]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!rows.is_empty());
    for row in &rows {
        assert!(
            relays.contains(&row["server"].as_str().unwrap().to_owned()),
            "{row}"
        );
        assert!(row["rtt_us"].is_u64(), "{row}");
        assert!(row["connected_since_ms"].as_u64().unwrap() > 0);
    }
    // The human table names the columns.
    let out = skytower(&["dmsg", "sessions", "--dir", d]);
    assert!(out.status.success());
    let table = text(&out.stdout);
    for col in ["SERVER", "CONNECTED", "STREAMS", "IN", "OUT", "RTT"] {
        assert!(table.contains(col), "{table}");
    }

    // connect-all: a session with each relay.
    let out = skytower(&["dmsg", "connect-all", "--json", "--dir", d]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let mut servers: Vec<String> = rows
        .iter()
        .map(|r| r["server"].as_str().unwrap().to_owned())
        .collect();
    servers.sort();
    assert_eq!(servers, relays);

    // curl: the discovery's /health over DMSG, through the node (the fetch chain: DMSG first).
    let url = format!("dmsg://{disc_dmsg}/health");
    let out = skytower(&["dmsg", "curl", "-v", &url, "--dir", d]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let health: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(health["service"], "dmsg-discovery");
    let err = text(&out.stderr);
    assert!(err.contains("* via dmsg"), "{err}");
    assert!(err.contains("< HTTP/1.1 200 OK"), "{err}");

    // Every deployment service answers its /health over DMSG too (mode dual).
    for service in [
        "transport-discovery",
        "route-finder",
        "address-resolver",
        "service-discovery",
        "uptime-tracker",
        "config-bootstrapper",
    ] {
        let dmsg = net.component(service)["dmsg"].as_str().unwrap().to_owned();
        let out = skytower(&["dmsg", "curl", &format!("dmsg://{dmsg}/health"), "--dir", d]);
        assert!(out.status.success(), "{service}: {}", text(&out.stderr));
        let health: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(health["service"], service);
        assert_eq!(health["status"], "ok", "{health}");
    }

    // The config bootstrapper serves every service's URL and DMSG address (as `up` reports
    // them), so a node can bootstrap over DMSG only.
    let boot = net.component("config-bootstrapper")["dmsg"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = skytower(&["dmsg", "curl", &format!("dmsg://{boot}/config"), "--dir", d]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let config: Value = serde_json::from_slice(&out.stdout).unwrap();
    for (key, service) in [
        ("transport_discovery", "transport-discovery"),
        ("route_finder", "route-finder"),
        ("address_resolver", "address-resolver"),
        ("service_discovery", "service-discovery"),
        ("uptime_tracker", "uptime-tracker"),
        ("dmsg_discovery", "dmsg-discovery"),
    ] {
        let info = &config["services"][key];
        let row = net.component(service);
        assert_eq!(
            info["url"],
            format!("http://{}", row["http"].as_str().unwrap()),
            "{key}"
        );
        assert_eq!(info["dmsg_address"], row["dmsg"], "{key}: {info}");
    }

    // A fetch that falls back to HTTP: this DMSG address is unknown, the HTTP URL answers.
    let nobody = random_pk();
    let url = format!("dmsg://{nobody}/health");
    let fallback = format!("http://{disc_http}");
    let out = skytower(&[
        "dmsg",
        "curl",
        "-v",
        &url,
        "--fallback",
        &fallback,
        "--dir",
        d,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let health: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(health["service"], "dmsg-discovery");
    assert!(
        text(&out.stderr).contains("* via http (fallback)"),
        "{}",
        text(&out.stderr)
    );

    // -d posts (the discovery parses the body: JSON but not an entry), -X POST without data.
    let url = format!("dmsg://{disc_dmsg}/dmsg-discovery/entry");
    let out = skytower(&[
        "dmsg",
        "curl",
        "--no-fallback",
        "-d",
        "{}",
        &url,
        "--dir",
        d,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("malformed_entry"),
        "{}",
        text(&out.stdout)
    );
    let out = skytower(&[
        "dmsg",
        "curl",
        "--no-fallback",
        "-X",
        "post",
        &url,
        "--dir",
        d,
    ]);
    assert!(
        text(&out.stdout).contains("malformed_json"),
        "{}",
        text(&out.stdout)
    );

    // -o writes the body to a file.
    let file = tmp.path().join("health.json");
    let url = format!("dmsg://{disc_dmsg}/health");
    let out = skytower(&[
        "dmsg",
        "curl",
        &url,
        "-o",
        file.to_str().unwrap(),
        "--dir",
        d,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty());
    let saved: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(saved["service"], "dmsg-discovery");

    // With no node running (another directory): an ephemeral key, quietly.
    let elsewhere = tmp.path().join("elsewhere");
    let out = skytower(&[
        "dmsg",
        "curl",
        &url,
        "--discovery",
        &fallback,
        "--dir",
        elsewhere.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "");
    let health: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(health["service"], "dmsg-discovery");

    // Unknown destination: one line, exit 1.
    let out = skytower(&["dmsg", "curl", &format!("dmsg://{nobody}/"), "--dir", d]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        format!("error: unknown destination {nobody}: it has no entry in discovery\n")
    );
    // Refused stream: nothing listens on the node's port 81.
    let out = skytower(&["dmsg", "curl", &format!("dmsg://{node_pk}:81/"), "--dir", d]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        format!(
            "error: dmsg://{node_pk}:81 refused the stream: no listener on the destination port\n"
        )
    );

    // Discovery reads: the node's entry lists the relays it connected to.
    let out = skytower(&["dmsg", "discovery", "entry", &node_pk, "--json", "--dir", d]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let entry: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(entry["static"], node_pk);
    assert!(entry["client"]["delegated_servers"].is_array(), "{entry}");
    let out = skytower(&["dmsg", "discovery", "servers", "--json", "--dir", d]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let servers: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let mut listed: Vec<String> = servers
        .iter()
        .map(|s| s["static"].as_str().unwrap().to_owned())
        .collect();
    listed.sort();
    assert_eq!(listed, relays);
    let out = skytower(&["dmsg", "discovery", "entry", &random_pk(), "--dir", d]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).starts_with("error: no discovery entry for "),
        "{}",
        text(&out.stderr)
    );

    // A second `up` on the same directory is refused.
    let out = skytower(&["up", "--json", "--dir", d]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        format!(
            "error: a network is already running in {d} (its node answers on {}); stop it first or pass another --dir\n",
            control.display()
        )
    );

    // SIGTERM: a clean exit within the grace period; the socket and the table are removed.
    let pid = net.child.id().to_string();
    let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(sent.success());
    let status = wait(&mut net.child, Duration::from_secs(20)).expect("up did not exit");
    assert!(status.success(), "{status:?}: {}", net.stderr_text());
    assert!(!control.exists());
    assert!(!dir.join("network.json").exists());
    // The keys stay for the next run.
    assert!(dir.join("keys").join("node.key").exists());
}

#[test]
fn operator_errors_are_one_line_with_an_exit_code() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().to_str().unwrap();
    let socket = tmp.path().join("node.sock");
    let no_node = format!(
        "error: no node running: no control socket at {} (start one with `skytower node` or `skytower up`)\n",
        socket.display()
    );
    for cmd in ["sessions", "connect-all"] {
        let out = skytower(&["dmsg", cmd, "--dir", d]);
        assert_eq!(out.status.code(), Some(1), "{cmd}");
        assert_eq!(text(&out.stderr), no_node, "{cmd}");
        assert!(out.stdout.is_empty());
    }

    // Bad keys: exit 2.
    let out = skytower(&[
        "dmsg",
        "discovery",
        "entry",
        "zz",
        "--discovery",
        "http://127.0.0.1:1",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr),
        "error: invalid public key \"zz\": public key has the wrong length: expected 64 hex characters, got 2\n"
    );
    let out = skytower(&["dmsg", "curl", "dmsg://zz:80/health", "--dir", d]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr),
        "error: invalid URL \"dmsg://zz:80/health\": invalid public key in address: public key has the wrong length: expected 64 hex characters, got 2\n"
    );
    let out = skytower(&["dmsg", "curl", "http://example.org/", "--dir", d]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr),
        "error: invalid URL \"http://example.org/\": expected dmsg://<public key>[:port]/path\n"
    );

    // No node and no discovery known.
    let pk = random_pk();
    let out = skytower(&["dmsg", "curl", &format!("dmsg://{pk}/"), "--dir", d]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr),
        format!(
            "error: no dmsg-discovery known: pass --discovery URL (or start `skytower up`, whose network.json in {d} names one)\n"
        )
    );

    // Discovery down.
    let out = skytower(&[
        "dmsg",
        "discovery",
        "servers",
        "--discovery",
        "http://127.0.0.1:1",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.starts_with("error: discovery unavailable: "), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");

    // The node needs a discovery.
    let out = skytower(&["node", "--dir", d]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "error: skytower node needs a dmsg-discovery: pass --discovery URL (`skytower up` starts one)\n"
    );
}
