//! The JSON types of the node's control API (`docs/node.md`), shared by the server
//! ([`ControlServer`](super::ControlServer)) and the typed client
//! ([`ControlClient`](super::ControlClient)).

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use skytower_transports::dmsg::client::SessionInfo;
use skytower_transports::identity::PublicKey;

/// `GET /v1/sessions?ping=true`: ping every session first, so `rtt_us` is fresh.
pub const SESSIONS: &str = "/v1/sessions";
/// `POST /v1/connect-all`: open a session to every available server, then answer as
/// [`SESSIONS`] (pinged).
pub const CONNECT_ALL: &str = "/v1/connect-all";
/// `GET /v1/info`: [`NodeInfo`].
pub const INFO: &str = "/v1/info";
/// `GET /v1/health`: [`NodeHealth`] (200 when at least one session is up, 503 otherwise).
pub const HEALTH: &str = "/v1/health";
/// `POST /v1/fetch`: HTTP over DMSG through the node (headers [`URL_HEADER`],
/// [`METHOD_HEADER`], [`FALLBACK_HEADER`]; the request body is sent on). The answer is the
/// remote response (status, headers, streamed body) with [`VIA_HEADER`], or an
/// [`ErrorBody`] with [`ERROR_HEADER`] when the node could not get one.
pub const FETCH: &str = "/v1/fetch";

/// The `dmsg://<pk>[:port]/path` URL to fetch.
pub const URL_HEADER: &str = "x-skytower-url";
/// The method of the fetch (default `GET`).
pub const METHOD_HEADER: &str = "x-skytower-method";
/// The HTTP base URL of the same service: fetch through the fetch chain (DMSG first, this as
/// the fallback).
pub const FALLBACK_HEADER: &str = "x-skytower-fallback";
/// On a fetch answer: which way it came (`dmsg` or `http`).
pub const VIA_HEADER: &str = "x-skytower-via";
/// On a fetch answer: set (to the error code) when the answer is the node's own error.
pub const ERROR_HEADER: &str = "x-skytower-error";

/// One DMSG session of the node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRow {
    /// The relay server's public key.
    pub server: PublicKey,
    /// When the session was established (Unix time, milliseconds).
    pub connected_since_ms: u64,
    /// Streams open on the session now.
    pub open_streams: usize,
    /// Bytes received on the session's connection.
    pub bytes_in: u64,
    /// Bytes sent on the session's connection.
    pub bytes_out: u64,
    /// The last keep-alive round-trip time, microseconds.
    pub rtt_us: Option<u64>,
}

impl From<&SessionInfo> for SessionRow {
    fn from(s: &SessionInfo) -> Self {
        SessionRow {
            server: s.server,
            connected_since_ms: unix_ms(s.connected_since),
            open_streams: s.open_streams,
            bytes_in: s.bytes_in,
            bytes_out: s.bytes_out,
            rtt_us: s
                .last_rtt
                .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
        }
    }
}

impl SessionRow {
    /// The round-trip time.
    pub fn rtt(&self) -> Option<Duration> {
        self.rtt_us.map(Duration::from_micros)
    }

    /// How long the session has been up at `now`.
    pub fn age(&self, now: SystemTime) -> Duration {
        Duration::from_millis(unix_ms(now).saturating_sub(self.connected_since_ms))
    }
}

/// Milliseconds since the Unix epoch (0 before it).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// `GET /v1/info`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The node's public key (its DMSG address).
    pub public_key: PublicKey,
    /// The DMSG address its HTTP endpoint (`/health`, `/`) is served on.
    pub dmsg_addr: String,
    /// Its HTTP address (mode dual only).
    pub http_addr: Option<SocketAddr>,
    /// The dmsg-discovery it uses, when known as a URL.
    pub discovery: Option<String>,
    /// Sessions up now.
    pub sessions: usize,
    /// The software version.
    pub version: String,
}

/// `GET /v1/health`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeHealth {
    /// `ok` with at least one session, else `degraded`.
    pub status: String,
    /// Sessions up now.
    pub sessions: usize,
}

/// The error envelope of the control API: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// One error: a stable code for scripts and a one-line message for people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable code (`unknown_destination`, `refused`, `unreachable`, `timeout`, `bad_url`,
    /// `http`, `all_failed`, `discovery_unavailable`, `shutting_down`, `bad_request`).
    pub code: String,
    /// One line, for people.
    pub message: String,
}
