//! The operator commands (`skytower dmsg …`): they talk to a node's control API
//! ([`ControlClient`]) or, for reads of discovery and for `curl` with no node running, directly
//! to the network. Human tables by default, `--json` for scripts (`docs/cli.md`).
//!
//! Every failure a user can cause is one line on stderr and an exit code ([`OpError`]): 2 for
//! bad input (a bad key or URL), 1 for everything else (no node running, unknown destination,
//! refused stream, discovery down).
//!
//! ```
//! use skytower_services::ops::{OpError, parse_public_key};
//!
//! let err = parse_public_key("zz").unwrap_err();
//! assert_eq!(err.exit_code(), 2);
//! assert_eq!(
//!     err.to_string(),
//!     "invalid public key \"zz\": public key has the wrong length: expected 64 hex characters, got 2"
//! );
//! ```

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use comfy_table::{Table, presets};
use http::Method;
use http_body_util::BodyExt;
use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};
use skytower_transports::dmsg::disc::{Discovery, DiscoveryError, Entry};
use skytower_transports::dmsg::disc_http::HttpDiscovery;
use skytower_transports::dmsg::{Client, ClientConfig};
use skytower_transports::fetch::Via;
use skytower_transports::identity::{PublicKey, SecretKey};
use tokio::io::AsyncWriteExt;

use crate::node::api::SessionRow;
use crate::node::fetch::{self, FetchFailure, FetchSpec, Fetched};
use crate::node::{self, ControlClient, ControlError};
use crate::up::{NETWORK_FILE, NetworkTable};

/// A failed operator command: one line, and the process exit code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct OpError {
    message: String,
    exit: u8,
}

impl OpError {
    /// A failure (exit code 1).
    pub fn failure(message: impl Into<String>) -> Self {
        OpError {
            message: message.into(),
            exit: 1,
        }
    }

    /// Bad input (exit code 2).
    pub fn usage(message: impl Into<String>) -> Self {
        OpError {
            message: message.into(),
            exit: 2,
        }
    }

    /// The exit code: 2 for bad input, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        self.exit
    }
}

impl From<ControlError> for OpError {
    fn from(e: ControlError) -> Self {
        match &e {
            ControlError::Api { code, .. } if code == "bad_url" || code == "bad_request" => {
                OpError::usage(e.to_string())
            }
            _ => OpError::failure(e.to_string()),
        }
    }
}

impl From<FetchFailure> for OpError {
    fn from(f: FetchFailure) -> Self {
        match f {
            FetchFailure::BadUrl { .. } => OpError::usage(f.to_string()),
            _ => OpError::failure(f.to_string()),
        }
    }
}

/// Parses a public key given on the command line.
///
/// # Errors
///
/// A usage [`OpError`] naming the input.
pub fn parse_public_key(s: &str) -> Result<PublicKey, OpError> {
    s.parse::<PublicKey>()
        .map_err(|e| OpError::usage(format!("invalid public key {s:?}: {e}")))
}

/// Where the node and the network are.
#[derive(Clone, Debug, clap::Args)]
pub struct NodeTarget {
    /// The network's directory (`skytower up --dir`, `skytower node --dir`).
    #[arg(long, default_value = node::DEFAULT_DIR, value_name = "DIR")]
    pub dir: PathBuf,
    /// The node's control socket (default `<dir>/node.sock`).
    #[arg(long, value_name = "PATH")]
    pub control: Option<PathBuf>,
}

impl NodeTarget {
    /// The control socket path.
    pub fn control_path(&self) -> PathBuf {
        self.control
            .clone()
            .unwrap_or_else(|| self.dir.join(node::CONTROL_SOCKET))
    }

    fn network(&self) -> Option<NetworkTable> {
        NetworkTable::load(&self.dir.join(NETWORK_FILE))
    }
}

/// `skytower dmsg …`.
#[derive(Debug, clap::Subcommand)]
pub enum DmsgCommand {
    /// Every DMSG session of the node: server, connected since, streams, bytes, round-trip time.
    Sessions {
        /// Where the node is.
        #[command(flatten)]
        target: NodeTarget,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Open sessions to every available server now, then print the sessions.
    ConnectAll {
        /// Where the node is.
        #[command(flatten)]
        target: NodeTarget,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// HTTP over DMSG: `dmsg://<pk>[:port]/path` (port 80 by default).
    Curl(Box<CurlArgs>),
    /// Read the dmsg-discovery.
    Discovery {
        /// What to read.
        #[command(subcommand)]
        command: DiscoveryCommand,
    },
}

/// `skytower dmsg discovery …`.
#[derive(Debug, clap::Subcommand)]
pub enum DiscoveryCommand {
    /// The entry of a public key.
    Entry {
        /// The public key (64 hex characters).
        pk: String,
        /// Where the discovery is.
        #[command(flatten)]
        discovery: DiscoveryTarget,
    },
    /// The servers with free sessions.
    Servers {
        /// Where the discovery is.
        #[command(flatten)]
        discovery: DiscoveryTarget,
    },
}

/// Which discovery to read.
#[derive(Clone, Debug, clap::Args)]
pub struct DiscoveryTarget {
    /// The dmsg-discovery URL (default: the running network's, from `<dir>/network.json`, or
    /// the running node's).
    #[arg(long, value_name = "URL")]
    pub discovery: Option<String>,
    /// Where the node and network are.
    #[command(flatten)]
    pub target: NodeTarget,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `skytower dmsg curl`.
#[derive(Clone, Debug, clap::Args)]
pub struct CurlArgs {
    /// `dmsg://<pk>[:port]/path`.
    pub url: String,
    /// Write the body to FILE (a progress bar on a terminal) instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// POST DATA (`@FILE` reads it from a file).
    #[arg(short, long, value_name = "DATA")]
    pub data: Option<String>,
    /// The method (default GET, or POST with --data).
    #[arg(short = 'X', long = "request", value_name = "METHOD")]
    pub method: Option<String>,
    /// Say which way the answer came (dmsg or http), the status and the headers, on stderr.
    #[arg(short, long)]
    pub verbose: bool,
    /// The service's HTTP base URL: use the fetch chain (DMSG first, this as the fallback).
    /// Default: the HTTP address `up` lists for the same DMSG address, if any.
    #[arg(long, value_name = "URL")]
    pub fallback: Option<String>,
    /// DMSG only, even for a service also known by HTTP.
    #[arg(long, conflicts_with = "fallback")]
    pub no_fallback: bool,
    /// With no node running: the discovery for the ephemeral key (default: the running
    /// network's).
    #[arg(long, value_name = "URL")]
    pub discovery: Option<String>,
    /// Bound on dialing and on the response headers.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub timeout: Duration,
    /// Where the node and network are.
    #[command(flatten)]
    pub target: NodeTarget,
}

/// Runs a `skytower dmsg` command on a fresh runtime.
///
/// # Errors
///
/// [`OpError`].
pub fn run_cli(command: DmsgCommand) -> Result<(), OpError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| OpError::failure(format!("starting the runtime: {e}")))?;
    runtime.block_on(run(command))
}

/// Runs a `skytower dmsg` command.
///
/// # Errors
///
/// [`OpError`].
pub async fn run(command: DmsgCommand) -> Result<(), OpError> {
    match command {
        DmsgCommand::Sessions { target, json } => {
            let rows = ControlClient::new(target.control_path())
                .sessions(true)
                .await?;
            print_sessions(&rows, json)
        }
        DmsgCommand::ConnectAll { target, json } => {
            let rows = ControlClient::new(target.control_path())
                .connect_all()
                .await?;
            print_sessions(&rows, json)
        }
        DmsgCommand::Curl(args) => curl(*args).await,
        DmsgCommand::Discovery { command } => discovery(command).await,
    }
}

fn out(text: &str) -> Result<(), OpError> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{text}")
        .and_then(|()| stdout.flush())
        .map_err(|e| OpError::failure(format!("writing to stdout: {e}")))
}

fn json<T: serde::Serialize>(value: &T) -> Result<(), OpError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| OpError::failure(format!("encoding JSON: {e}")))?;
    out(&text)
}

/// The human table of sessions.
pub fn sessions_table(rows: &[SessionRow], now: SystemTime) -> String {
    let mut table = Table::new();
    table.load_preset(presets::UTF8_FULL_CONDENSED).set_header([
        "SERVER",
        "CONNECTED",
        "STREAMS",
        "IN",
        "OUT",
        "RTT",
    ]);
    for r in rows {
        let age = Duration::from_secs(r.age(now).as_secs());
        table.add_row([
            r.server.to_string(),
            format!("{} ago", humantime::format_duration(age)),
            r.open_streams.to_string(),
            HumanBytes(r.bytes_in).to_string(),
            HumanBytes(r.bytes_out).to_string(),
            r.rtt()
                .map(|d| format!("{:.2} ms", d.as_secs_f64() * 1e3))
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    table.to_string()
}

fn print_sessions(rows: &[SessionRow], as_json: bool) -> Result<(), OpError> {
    if as_json {
        return json(&rows);
    }
    if rows.is_empty() {
        return out("no DMSG sessions (try `skytower dmsg connect-all`)");
    }
    out(&sessions_table(rows, SystemTime::now()))
}

async fn discovery_url(explicit: Option<String>, target: &NodeTarget) -> Result<String, OpError> {
    if let Some(url) = explicit {
        return Ok(url);
    }
    if let Some(url) = target.network().and_then(|n| n.discovery) {
        return Ok(url);
    }
    if let Ok(info) = ControlClient::new(target.control_path()).info().await
        && let Some(url) = info.discovery
    {
        return Ok(url);
    }
    Err(OpError::usage(format!(
        "no dmsg-discovery known: pass --discovery URL (or start `skytower up`, whose {} in {} names one)",
        NETWORK_FILE,
        target.dir.display()
    )))
}

fn http_discovery(url: &str) -> Result<HttpDiscovery, OpError> {
    HttpDiscovery::new(url).map_err(|e| OpError::usage(format!("--discovery: {e}")))
}

fn discovery_error(e: DiscoveryError) -> OpError {
    OpError::failure(e.to_string())
}

async fn discovery(command: DiscoveryCommand) -> Result<(), OpError> {
    match command {
        DiscoveryCommand::Entry { pk, discovery } => {
            let pk = parse_public_key(&pk)?;
            let url = discovery_url(discovery.discovery, &discovery.target).await?;
            let entry = http_discovery(&url)?
                .entry(pk)
                .await
                .map_err(discovery_error)?;
            if discovery.json {
                return json(&entry);
            }
            out(&entry_table(&entry))
        }
        DiscoveryCommand::Servers { discovery } => {
            let url = discovery_url(discovery.discovery, &discovery.target).await?;
            let servers = http_discovery(&url)?
                .available_servers()
                .await
                .map_err(discovery_error)?;
            if discovery.json {
                return json(&servers);
            }
            let mut table = Table::new();
            table.load_preset(presets::UTF8_FULL_CONDENSED).set_header([
                "SERVER",
                "ADDRESS",
                "AVAILABLE SESSIONS",
            ]);
            for e in &servers {
                if let Some(s) = &e.server {
                    table.add_row([
                        e.static_pk.to_string(),
                        s.address.clone(),
                        s.available_sessions.to_string(),
                    ]);
                }
            }
            out(&table.to_string())
        }
    }
}

/// The human view of a discovery entry.
pub fn entry_table(entry: &Entry) -> String {
    let mut table = Table::new();
    table.load_preset(presets::UTF8_FULL_CONDENSED);
    table.add_row(["public key".to_owned(), entry.static_pk.to_string()]);
    table.add_row(["sequence".to_owned(), entry.sequence.to_string()]);
    let at = SystemTime::UNIX_EPOCH + Duration::from_millis(entry.timestamp);
    table.add_row([
        "updated".to_owned(),
        humantime::format_rfc3339_seconds(at).to_string(),
    ]);
    if let Some(s) = &entry.server {
        table.add_row(["server address".to_owned(), s.address.clone()]);
        table.add_row([
            "available sessions".to_owned(),
            s.available_sessions.to_string(),
        ]);
    }
    if let Some(c) = &entry.client {
        let servers: Vec<String> = c.delegated_servers.iter().map(|s| s.to_string()).collect();
        table.add_row(["delegated servers".to_owned(), servers.join("\n")]);
    }
    table.to_string()
}

fn say(verbose: bool, line: impl std::fmt::Display) {
    if verbose {
        eprintln!("* {line}");
    }
}

async fn curl(args: CurlArgs) -> Result<(), OpError> {
    let mut spec = FetchSpec::get(&args.url)?;
    spec.timeout = args.timeout;
    if let Some(data) = &args.data {
        spec.body = match data.strip_prefix('@') {
            Some(file) => Bytes::from(
                std::fs::read(file).map_err(|e| OpError::usage(format!("--data @{file}: {e}")))?,
            ),
            None => Bytes::from(data.clone()),
        };
        spec.method = Method::POST;
    }
    if let Some(m) = &args.method {
        spec.method = Method::from_bytes(m.to_ascii_uppercase().as_bytes())
            .map_err(|_| OpError::usage(format!("invalid method {m:?}")))?;
    }
    let network = args.target.network();
    if let Some(f) = &args.fallback {
        spec.fallback = Some(fetch::parse_fallback(f)?);
    } else if !args.no_fallback
        && let Some(row) = network.as_ref().and_then(|n| n.by_dmsg(&spec.target))
        && let Some(http) = row.http
    {
        say(
            args.verbose,
            format!(
                "{} is also at http://{http}: DMSG first, HTTP as the fallback",
                row.name
            ),
        );
        spec.fallback = Some(fetch::parse_fallback(&format!("http://{http}"))?);
    }

    let control = ControlClient::new(args.target.control_path());
    // The ephemeral client (no node running) must outlive the streamed body: its sessions carry it.
    let mut ephemeral: Option<Arc<Client>> = None;
    let fetched = match control.fetch(&spec).await {
        Ok(f) => {
            say(
                args.verbose,
                format!("through the node ({})", control.path().display()),
            );
            f
        }
        Err(ControlError::NoNode { .. }) => {
            let url = discovery_url(args.discovery.clone(), &args.target).await?;
            say(args.verbose, "no node running: using an ephemeral key");
            let key = SecretKey::generate()
                .map_err(|e| OpError::failure(format!("generating a key: {e}")))?;
            let config = ClientConfig {
                auto_connect: false,
                publish: false,
                ..ClientConfig::default()
            };
            let client = Arc::new(Client::start(key, Arc::new(http_discovery(&url)?), config));
            ephemeral = Some(client.clone());
            fetch::fetch(client, spec.clone()).await?
        }
        Err(e) => return Err(e.into()),
    };
    let written = write_response(fetched, &args).await;
    drop(ephemeral);
    written
}

async fn write_response(fetched: Fetched, args: &CurlArgs) -> Result<(), OpError> {
    let Fetched { via, response } = fetched;
    let verbose = args.verbose;
    match via {
        Via::Dmsg => say(verbose, "via dmsg"),
        Via::Http => say(verbose, "via http (fallback)"),
    }
    if verbose {
        eprintln!("< {:?} {}", response.version(), response.status());
        for (name, value) in response.headers() {
            eprintln!("< {name}: {}", value.to_str().unwrap_or("<binary>"));
        }
    }
    let length = response
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut body = response.into_body();
    match &args.output {
        None => {
            let mut stdout = tokio::io::stdout();
            while let Some(frame) = body.frame().await {
                let frame =
                    frame.map_err(|e| OpError::failure(format!("reading the body: {e}")))?;
                if let Ok(data) = frame.into_data() {
                    stdout
                        .write_all(&data)
                        .await
                        .map_err(|e| OpError::failure(format!("writing to stdout: {e}")))?;
                }
            }
            stdout
                .flush()
                .await
                .map_err(|e| OpError::failure(format!("writing to stdout: {e}")))
        }
        Some(path) => download(&mut body, path, length).await,
    }
}

async fn download(
    body: &mut fetch::FetchBody,
    path: &Path,
    length: Option<u64>,
) -> Result<(), OpError> {
    let write_err = |e: std::io::Error| OpError::failure(format!("{}: {e}", path.display()));
    let mut file = tokio::fs::File::create(path).await.map_err(write_err)?;
    let bar = ProgressBar::with_draw_target(length, ProgressDrawTarget::stderr());
    let style = match length {
        Some(_) => ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        ),
        None => ProgressStyle::with_template("{spinner} {bytes} {binary_bytes_per_sec}"),
    };
    if let Ok(style) = style {
        bar.set_style(style);
    }
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| OpError::failure(format!("reading the body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            file.write_all(&data).await.map_err(write_err)?;
            bar.inc(data.len() as u64);
        }
    }
    file.flush().await.map_err(write_err)?;
    bar.finish_and_clear();
    Ok(())
}
