//! The `dmsg-server` config file (TOML): types, defaults, parsing and validation.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use skytower_transports::dmsg::server::ServerConfig;

/// Default TCP listen address (Skywire's dmsg-server port).
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::UNSPECIFIED,
    8081,
));

/// Default key file name.
pub const DEFAULT_KEY_FILE: &str = "dmsg-server.key";

/// Default bound on the graceful shutdown.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Default period of the stats log line.
pub const DEFAULT_STATS_INTERVAL: Duration = Duration::from_secs(60);

/// The effective configuration of a `dmsg-server`: file values over defaults, flags over both
/// (see [`DmsgServerArgs`](super::DmsgServerArgs)). `docs/dmsg-server.md` documents each field.
///
/// Deserializing rejects unknown fields (a typo is an error naming it); the values are checked
/// by [`validate`](Self::validate), which [`from_toml_str`](Self::from_toml_str),
/// [`load`](Self::load) and [`DmsgServer::start`](super::DmsgServer::start) call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DmsgServerConfig {
    /// TCP address to listen on. Default `0.0.0.0:8081`; port 0 picks a free port.
    pub listen: SocketAddr,
    /// `host:port` advertised to discovery (clients dial it). Default: the bound address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_addr: Option<String>,
    /// The server's secret key file (its public key is the server's DMSG address). Default
    /// `dmsg-server.key`; a relative path in a config file is relative to the file's directory.
    pub key_file: PathBuf,
    /// Create `key_file` (mode 0600, JSON) if it does not exist. Default `false`: a missing key
    /// file is an error, so a mistyped path never silently gives the server a new identity.
    pub generate_key: bool,
    /// Discovery URL (`http://` or `https://`). Validated only: registration arrives with the
    /// DMSG client issue.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discovery: Option<String>,
    /// Bound on the graceful shutdown after SIGINT/SIGTERM; what is still open then is closed
    /// abruptly. Default 10 s; 0 closes at once.
    #[serde(with = "duration")]
    pub shutdown_grace: Duration,
    /// Period of the stats log line (sessions, bridges, handshake queue). Default 60 s.
    #[serde(with = "duration")]
    pub stats_interval: Duration,
    /// Resource limits of the relay server.
    pub limits: Limits,
}

impl Default for DmsgServerConfig {
    fn default() -> Self {
        DmsgServerConfig {
            listen: DEFAULT_LISTEN,
            public_addr: None,
            key_file: PathBuf::from(DEFAULT_KEY_FILE),
            generate_key: false,
            discovery: None,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            stats_interval: DEFAULT_STATS_INTERVAL,
            limits: Limits::default(),
        }
    }
}

/// The `[limits]` table: mapped onto [`ServerConfig`] (defaults are its defaults,
/// `docs/protocol.md` §4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Sessions at once (at least 1). Default 2048.
    pub max_sessions: usize,
    /// Relayed streams at once per session (1–65535). Default 2048.
    pub max_streams_per_session: u16,
    /// Session handshakes in flight (at least 1). Default 64.
    pub handshake_concurrency: usize,
    /// Session handshakes waiting for a slot (0: none wait). Default 1024.
    pub handshake_queue: usize,
    /// Deadline of a session handshake, from accept. Default 10 s.
    #[serde(with = "duration")]
    pub handshake_timeout: Duration,
    /// Deadline of each step of the stream forward path. Default 10 s.
    #[serde(with = "duration")]
    pub forward_timeout: Duration,
    /// A bridge idle this long either way is closed. Default 5 min.
    #[serde(with = "duration")]
    pub bridge_idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        let d = ServerConfig::default();
        Limits {
            max_sessions: d.max_sessions,
            max_streams_per_session: d.max_streams_per_session,
            handshake_concurrency: d.handshake_concurrency,
            handshake_queue: d.handshake_queue,
            handshake_timeout: d.handshake_timeout,
            forward_timeout: d.forward_timeout,
            bridge_idle_timeout: d.bridge_idle_timeout,
        }
    }
}

/// A config that could not be read, parsed or validated. Every variant names the field (or
/// the file) at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The config is not valid TOML, has an unknown field, or a value of the wrong type.
    #[error("{origin}{}: {}{message}", location(*line, *column), field_prefix(field.as_deref()))]
    Parse {
        /// The file, or `<config>` for a string.
        origin: String,
        /// 1-based line of the error, if known.
        line: Option<usize>,
        /// 1-based column of the error, if known.
        column: Option<usize>,
        /// Dotted path of the field at fault (`limits.max_sessions`), if known.
        field: Option<String>,
        /// What is wrong.
        message: String,
    },
    /// A value is out of range or malformed.
    #[error("{field}: {reason}")]
    Invalid {
        /// Dotted path of the field (`limits.max_sessions`).
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

fn location(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(":{l}:{c}"),
        (Some(l), None) => format!(":{l}"),
        _ => String::new(),
    }
}

fn field_prefix(field: Option<&str>) -> String {
    match field {
        Some(f) if !f.is_empty() && f != "." => format!("{f}: "),
        _ => String::new(),
    }
}

impl ConfigError {
    /// The dotted path of the field at fault, when the error is about one field.
    pub fn field(&self) -> Option<&str> {
        match self {
            ConfigError::Read { .. } => None,
            ConfigError::Parse { field, .. } => field.as_deref(),
            ConfigError::Invalid { field, .. } => Some(field),
        }
    }

    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            field,
            reason: reason.into(),
        }
    }
}

impl DmsgServerConfig {
    /// Parses and validates a TOML config. Relative paths are kept as written.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Parse`] (syntax, unknown field, wrong type) or [`ConfigError::Invalid`].
    pub fn from_toml_str(toml: &str) -> Result<Self, ConfigError> {
        let config = Self::parse("<config>", toml)?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates the config file at `path`. A relative `key_file` is taken
    /// relative to the file's directory.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Read`], [`ConfigError::Parse`] or [`ConfigError::Invalid`].
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let config = Self::load_unvalidated(path.as_ref())?;
        config.validate()?;
        Ok(config)
    }

    /// Reads and parses without validating (flags may still fix a value).
    pub(crate) fn load_unvalidated(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config = Self::parse(&path.display().to_string(), &text)?;
        if config.key_file.is_relative() {
            if let Some(dir) = path.parent() {
                config.key_file = dir.join(&config.key_file);
            }
        }
        Ok(config)
    }

    fn parse(origin: &str, text: &str) -> Result<Self, ConfigError> {
        parse_toml(origin, text)
    }

    /// Checks every value; the error names the field (`limits.max_sessions: must be at least 1`).
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] for the first bad field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(addr) = &self.public_addr {
            validate_host_port(addr).map_err(|r| ConfigError::invalid("public_addr", r))?;
        }
        if self.key_file.as_os_str().is_empty() {
            return Err(ConfigError::invalid("key_file", "must not be empty"));
        }
        if let Some(url) = &self.discovery {
            validate_http_url(url).map_err(|r| ConfigError::invalid("discovery", r))?;
        }
        positive("stats_interval", self.stats_interval)?;
        let l = &self.limits;
        at_least_one("limits.max_sessions", l.max_sessions)?;
        at_least_one(
            "limits.max_streams_per_session",
            usize::from(l.max_streams_per_session),
        )?;
        at_least_one("limits.handshake_concurrency", l.handshake_concurrency)?;
        positive("limits.handshake_timeout", l.handshake_timeout)?;
        positive("limits.forward_timeout", l.forward_timeout)?;
        positive("limits.bridge_idle_timeout", l.bridge_idle_timeout)?;
        Ok(())
    }

    /// The relay server settings: `[limits]` over [`ServerConfig::default`].
    pub fn server_config(&self) -> ServerConfig {
        let l = &self.limits;
        ServerConfig {
            max_sessions: l.max_sessions,
            max_streams_per_session: l.max_streams_per_session,
            handshake_concurrency: l.handshake_concurrency,
            handshake_queue: l.handshake_queue,
            handshake_timeout: l.handshake_timeout,
            forward_timeout: l.forward_timeout,
            bridge_idle_timeout: l.bridge_idle_timeout,
            ..ServerConfig::default()
        }
    }

    /// The config as TOML (what `--print-config` prints); parsing it back gives the same config.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] if `key_file` is not valid UTF-8 (TOML strings are).
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        toml::to_string(self).map_err(|e| {
            let field = if self.key_file.to_str().is_none() {
                "key_file"
            } else {
                "config"
            };
            ConfigError::invalid(field, format!("cannot be written as TOML: {e}"))
        })
    }
}

/// Parses TOML into `T`, the error naming the origin, line, column and dotted field path
/// (shared by the services' config files).
pub(crate) fn parse_toml<T: serde::de::DeserializeOwned>(
    origin: &str,
    text: &str,
) -> Result<T, ConfigError> {
    let parse_error = |e: toml::de::Error, field: Option<String>| {
        let (line, column) = match e.span() {
            Some(span) => {
                let (l, c) = line_column(text, span.start);
                (Some(l), Some(c))
            }
            None => (None, None),
        };
        ConfigError::Parse {
            origin: origin.to_owned(),
            line,
            column,
            field,
            message: e.message().trim().to_owned(),
        }
    };
    let de = toml::Deserializer::parse(text).map_err(|e| parse_error(e, None))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        parse_error(e.into_inner(), Some(field))
    })
}

/// Durations as humane strings (`"10s"`, `"5m"`, `"1h 30m"`), via `humantime`.
pub(crate) mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*d))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration {text:?}: {e} (e.g. \"10s\", \"5m\", \"1h 30m\")"
            ))
        })
    }
}

fn at_least_one(field: &'static str, v: usize) -> Result<(), ConfigError> {
    if v == 0 {
        return Err(ConfigError::invalid(field, "must be at least 1"));
    }
    Ok(())
}

fn positive(field: &'static str, d: Duration) -> Result<(), ConfigError> {
    if d.is_zero() {
        return Err(ConfigError::invalid(
            field,
            "must be greater than 0 (e.g. \"10s\")",
        ));
    }
    Ok(())
}

/// 1-based line and column (in characters) of byte offset `at` in `text`.
fn line_column(text: &str, at: usize) -> (usize, usize) {
    let at = at.min(text.len());
    let before = text.get(..at).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// Checks `host:port` (`[v6]:port` for IPv6 literals), port 1–65535.
pub(crate) fn validate_host_port(s: &str) -> Result<(), String> {
    let expect = "expected host:port, e.g. \"dmsg.example.org:8081\" or \"[2001:db8::1]:8081\"";
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!("{s:?}: missing port; {expect}"));
    };
    match port.parse::<u16>() {
        Ok(p) if p != 0 => {}
        _ => return Err(format!("{s:?}: port must be 1-65535; {expect}")),
    }
    let host_ok = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        v6.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_')
    };
    if !host_ok {
        return Err(format!("{s:?}: invalid host; {expect}"));
    }
    Ok(())
}

/// Checks an absolute `http://` or `https://` URL with a host.
pub(crate) fn validate_http_url(s: &str) -> Result<(), String> {
    let uri: http::Uri = s
        .parse()
        .map_err(|e| format!("{s:?} is not a valid URL: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(other) => {
            return Err(format!(
                "{s:?}: scheme must be http or https, not {other:?}"
            ));
        }
        None => {
            return Err(format!(
                "{s:?}: must be an absolute http(s) URL, e.g. \"http://dmsgd.example.org:9090\""
            ));
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("{s:?}: missing host"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_column_counts_from_one() {
        assert_eq!(line_column("a = 1\nbb = 2\n", 0), (1, 1));
        assert_eq!(line_column("a = 1\nbb = 2\n", 6), (2, 1));
        assert_eq!(line_column("a = 1\nbb = 2\n", 9), (2, 4));
        assert_eq!(line_column("x", 99), (1, 2));
    }

    #[test]
    fn host_port_forms() {
        for ok in [
            "a.example:1",
            "10.0.0.1:8081",
            "[::1]:8081",
            "host-1_x:65535",
        ] {
            assert!(validate_host_port(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "host",
            "host:",
            ":80",
            "host:0",
            "host:70000",
            "[::1:80",
            "a b:1",
            "::1:80",
            "h/x:1",
        ] {
            assert!(validate_host_port(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn http_urls() {
        for ok in [
            "http://a:9090",
            "https://dmsgd.example.org",
            "http://[::1]:1/x",
        ] {
            assert!(validate_http_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "dmsgd.example.org",
            "ftp://a",
            "http://",
            "/path",
            "http//a",
        ] {
            assert!(validate_http_url(bad).is_err(), "{bad}");
        }
    }
}
