//! The network table: what `up` prints and writes to `<dir>/network.json`.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use comfy_table::{Table, presets};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};
use skytower_transports::dmsg::wire::Addr;
use skytower_transports::identity::PublicKey;

use super::probe::HealthStatus;

/// File name of the table in the network's directory (present while `up` runs).
pub const NETWORK_FILE: &str = "network.json";

/// One component in the table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentRow {
    /// Its name.
    pub name: String,
    /// What it is.
    pub kind: String,
    /// Its HTTP address (a relay: its TCP address).
    pub http: Option<SocketAddr>,
    /// Its DMSG address (`pk:port`).
    pub dmsg: Option<String>,
    /// Its public key (a relay has one but no DMSG address).
    pub public_key: Option<PublicKey>,
    /// Its health when the table was made.
    pub health: HealthStatus,
    /// The probe's explanation.
    pub detail: String,
}

/// The whole table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkTable {
    /// `ready`.
    pub status: String,
    /// The network's directory.
    pub dir: PathBuf,
    /// The dmsg-discovery URL.
    pub discovery: Option<String>,
    /// The node's control socket.
    pub control: PathBuf,
    /// The components, in start order.
    pub components: Vec<ComponentRow>,
}

impl NetworkTable {
    /// Reads a table file; `None` when missing or unreadable.
    pub fn load(path: &Path) -> Option<NetworkTable> {
        let text = std::fs::read(path).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Writes the table (owner-only), replacing the file atomically.
    ///
    /// # Errors
    ///
    /// I/O errors.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        crate::node::write_private(path, &json)
    }

    /// The component serving at DMSG address `addr`.
    pub fn by_dmsg(&self, addr: &Addr) -> Option<&ComponentRow> {
        let want = addr.to_string();
        self.components
            .iter()
            .find(|c| c.dmsg.as_deref() == Some(want.as_str()))
    }
}

/// A spinner on stderr (hidden when stderr is not a terminal).
pub(crate) fn spinner() -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

/// The human table.
pub(crate) fn render(rows: &[ComponentRow]) -> String {
    let mut table = Table::new();
    table.load_preset(presets::UTF8_FULL_CONDENSED).set_header([
        "COMPONENT",
        "HTTP",
        "DMSG",
        "HEALTH",
    ]);
    for r in rows {
        table.add_row([
            r.name.clone(),
            r.http.map(|a| a.to_string()).unwrap_or_else(|| "-".into()),
            match (&r.dmsg, &r.public_key) {
                (Some(addr), _) => addr.clone(),
                (None, Some(pk)) => format!("{pk} (relay)"),
                (None, None) => "-".into(),
            },
            r.health.to_string(),
        ]);
    }
    table.to_string()
}

/// Prints the ready table: one JSON line, or the human table and a hint.
pub(crate) fn print(network: &NetworkTable, json: bool, elapsed: Duration) {
    let mut out = std::io::stdout().lock();
    let text = if json {
        serde_json::to_string(network).unwrap_or_default()
    } else {
        let secs = Duration::from_millis(elapsed.as_millis() as u64);
        format!(
            "{}\nready: {} components in {} (dir {}). Try `skytower dmsg sessions`; Ctrl-C stops the network.",
            render(&network.components),
            network.components.len(),
            humantime::format_duration(secs),
            network.dir.display(),
        )
    };
    // A closed stdout must not stop the network.
    let _ = writeln!(out, "{text}").and_then(|()| out.flush());
}
