//! The entry model: what a node registers ([`Registration`]), what the service answers
//! ([`ServiceEntry`]), a query ([`ServiceQuery`]), and their validation limits.

use std::fmt;

use serde::{Deserialize, Serialize};
use skytower_transports::dmsg::wire::Addr;

/// Longest service type name (`[a-z0-9_-]`, starting with a letter or digit).
pub const MAX_TYPE_LEN: usize = 32;
/// Longest version string (`[0-9A-Za-z.+_-]`).
pub const MAX_VERSION_LEN: usize = 32;
/// Longest `geo.region`.
pub const MAX_REGION_LEN: usize = 64;
/// Largest `info` object, serialized as compact JSON.
pub const MAX_INFO_BYTES: usize = 1024;

/// The well-known service types (any other valid name is accepted too).
pub mod types {
    /// A VPN server.
    pub const VPN: &str = "vpn";
    /// A SOCKS proxy (Skywire's `skysocks`, which is accepted as an alias).
    pub const PROXY: &str = "proxy";
    /// A public visor accepting automatic transports.
    pub const VISOR: &str = "visor";
}

/// A service entry as a node registers it (`POST /api/services`).
///
/// ```
/// use skytower_services::service_discovery::{Geo, Registration};
/// use skytower_transports::identity::SecretKey;
///
/// let pk = SecretKey::generate().unwrap().public_key();
/// let json = format!(r#"{{"address":"{pk}:44","type":"VPN","version":"1.3.0",
///     "geo":{{"country":"de","lat":52.5,"lon":13.4}}}}"#);
/// let reg: Registration = serde_json::from_str(&json).unwrap();
/// let reg = reg.validated().unwrap();
/// assert_eq!(reg.kind, "vpn"); // normalized
/// assert_eq!(reg.geo.unwrap().country, "DE");
///
/// let bad = Registration { kind: "no spaces".into(), ..Registration::new(pk, 44, "vpn", "1") };
/// assert_eq!(bad.validated().unwrap_err().code(), "invalid_type");
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    /// `<pk>:<port>`: the node's public key (must be the caller's) and the port it serves on.
    #[serde(with = "addr_text")]
    pub address: Addr,
    /// The service type (`vpn`, `proxy`, `visor`, or another name).
    #[serde(rename = "type")]
    pub kind: String,
    /// The service's version.
    pub version: String,
    /// Where the node is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub geo: Option<Geo>,
    /// Free-form details (a JSON object of at most [`MAX_INFO_BYTES`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Where a node is: an ISO 3166-1 alpha-2 country code and optionally coordinates and a region.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Geo {
    /// Two ASCII letters (upper-cased when stored), e.g. `DE`.
    pub country: String,
    /// Latitude in degrees, −90…90 (given together with `lon`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lat: Option<f64>,
    /// Longitude in degrees, −180…180 (given together with `lat`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lon: Option<f64>,
    /// A region name, at most [`MAX_REGION_LEN`] bytes, no control characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

impl Geo {
    /// Just a country.
    pub fn country(code: &str) -> Self {
        Geo {
            country: code.to_owned(),
            lat: None,
            lon: None,
            region: None,
        }
    }
}

/// A registered service as the service answers it: the registration (normalized) plus when it
/// was last registered and when it expires (Unix milliseconds, the service's wall clock).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceEntry {
    /// `<pk>:<port>`.
    #[serde(with = "addr_text")]
    pub address: Addr,
    /// The service type.
    #[serde(rename = "type")]
    pub kind: String,
    /// The version.
    pub version: String,
    /// Where the node is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub geo: Option<Geo>,
    /// Free-form details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<serde_json::Map<String, serde_json::Value>>,
    /// When the entry was last registered (Unix ms).
    pub updated_at: u64,
    /// When the entry expires unless registered again (Unix ms).
    pub expires_at: u64,
}

impl ServiceEntry {
    /// The entry of a (validated) registration made at `now_ms`, living `ttl_ms`.
    pub fn from_registration(reg: Registration, now_ms: u64, ttl_ms: u64) -> Self {
        ServiceEntry {
            address: reg.address,
            kind: reg.kind,
            version: reg.version,
            geo: reg.geo,
            info: reg.info,
            updated_at: now_ms,
            expires_at: now_ms.saturating_add(ttl_ms),
        }
    }
}

/// The outcome of a registration.
#[derive(Clone, Debug, PartialEq)]
pub struct Registered {
    /// The entry as stored, with its `updated_at` and `expires_at`.
    pub entry: ServiceEntry,
    /// `true` when no live entry existed at the address (answered 201), `false` for a
    /// refresh (200).
    pub created: bool,
}

/// Why a registration or a query was refused; [`code`](Self::code) is the API's error code.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// A bad type name.
    #[error(
        "invalid service type {0:?}: 1–{MAX_TYPE_LEN} characters from a-z, 0-9, '-', '_', \
         starting with a letter or digit"
    )]
    Type(String),
    /// A bad version.
    #[error(
        "invalid version {0:?}: 1–{MAX_VERSION_LEN} characters from A-Z, a-z, 0-9, '.', '+', \
         '-', '_'"
    )]
    Version(String),
    /// A bad geo section.
    #[error("invalid geo: {0}")]
    Geo(String),
    /// `info` too large.
    #[error("info is {0} bytes of JSON, more than {MAX_INFO_BYTES}")]
    InfoTooLarge(usize),
}

impl ValidationError {
    /// The API error code: `invalid_type`, `invalid_version`, `invalid_geo`, `info_too_large`.
    pub fn code(&self) -> &'static str {
        match self {
            ValidationError::Type(_) => "invalid_type",
            ValidationError::Version(_) => "invalid_version",
            ValidationError::Geo(_) => "invalid_geo",
            ValidationError::InfoTooLarge(_) => "info_too_large",
        }
    }
}

/// Normalizes and checks a type name: ASCII letters are lower-cased, `skysocks` becomes
/// `proxy`.
///
/// ```
/// use skytower_services::service_discovery::normalize_type;
/// assert_eq!(normalize_type("SkySocks").unwrap(), "proxy");
/// assert_eq!(normalize_type("my-svc_2").unwrap(), "my-svc_2");
/// assert!(normalize_type("-x").is_err());
/// assert!(normalize_type("a:b").is_err());
/// ```
pub fn normalize_type(kind: &str) -> Result<String, ValidationError> {
    let lower = kind.to_ascii_lowercase();
    let ok = !lower.is_empty()
        && lower.len() <= MAX_TYPE_LEN
        && lower.as_bytes()[0].is_ascii_alphanumeric()
        && lower
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !ok {
        return Err(ValidationError::Type(truncate(kind)));
    }
    Ok(if lower == "skysocks" {
        types::PROXY.to_owned()
    } else {
        lower
    })
}

/// Checks a version string (kept as given; filters match it exactly).
pub fn check_version(version: &str) -> Result<(), ValidationError> {
    let ok = !version.is_empty()
        && version.len() <= MAX_VERSION_LEN
        && version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'-' | b'_'));
    if ok {
        Ok(())
    } else {
        Err(ValidationError::Version(truncate(version)))
    }
}

/// Normalizes and checks a country code: two ASCII letters, upper-cased. (The format is
/// checked, not whether ISO has assigned the code.)
pub fn normalize_country(code: &str) -> Result<String, ValidationError> {
    if code.len() == 2 && code.bytes().all(|b| b.is_ascii_alphabetic()) {
        Ok(code.to_ascii_uppercase())
    } else {
        Err(ValidationError::Geo(format!(
            "country {:?} is not an ISO 3166-1 alpha-2 code (two letters)",
            truncate(code)
        )))
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

impl Geo {
    fn validated(self) -> Result<Geo, ValidationError> {
        let country = normalize_country(&self.country)?;
        match (self.lat, self.lon) {
            (None, None) => {}
            (Some(lat), Some(lon)) => {
                if !(lat.is_finite() && (-90.0..=90.0).contains(&lat)) {
                    return Err(ValidationError::Geo(format!("lat {lat} is not in -90..90")));
                }
                if !(lon.is_finite() && (-180.0..=180.0).contains(&lon)) {
                    return Err(ValidationError::Geo(format!(
                        "lon {lon} is not in -180..180"
                    )));
                }
            }
            _ => {
                return Err(ValidationError::Geo(
                    "lat and lon go together: give both or neither".into(),
                ));
            }
        }
        if let Some(region) = &self.region
            && (region.len() > MAX_REGION_LEN || region.chars().any(char::is_control))
        {
            return Err(ValidationError::Geo(format!(
                "region must be at most {MAX_REGION_LEN} bytes without control characters"
            )));
        }
        Ok(Geo { country, ..self })
    }
}

impl Registration {
    /// A registration without geo or info.
    pub fn new(
        pk: skytower_transports::identity::PublicKey,
        port: u16,
        kind: &str,
        version: &str,
    ) -> Self {
        Registration {
            address: Addr::new(pk, port),
            kind: kind.to_owned(),
            version: version.to_owned(),
            geo: None,
            info: None,
        }
    }

    /// Checks the limits (see the module constants) and normalizes the type and country.
    ///
    /// # Errors
    ///
    /// The first limit broken, in the order type, version, geo, info.
    pub fn validated(self) -> Result<Registration, ValidationError> {
        let kind = normalize_type(&self.kind)?;
        check_version(&self.version)?;
        let geo = self.geo.map(Geo::validated).transpose()?;
        if let Some(info) = &self.info {
            let len = serde_json::to_vec(info).map_or(usize::MAX, |v| v.len());
            if len > MAX_INFO_BYTES {
                return Err(ValidationError::InfoTooLarge(len));
            }
        }
        Ok(Registration { kind, geo, ..self })
    }
}

/// A query: `GET /api/services?type=T[&version=V][&country=CC][&quantity=N]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceQuery {
    /// The service type (required).
    pub kind: String,
    /// Only entries with exactly this version.
    pub version: Option<String>,
    /// Only entries in this country.
    pub country: Option<String>,
    /// A random sample of at most this many (default and maximum: the service's `--max-list`).
    pub quantity: Option<usize>,
}

/// Why a query string was refused (400 `bad_query`, or `missing_type`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// No `type`.
    #[error("the query needs a type: /api/services?type=<type>")]
    MissingType,
    /// Anything else.
    #[error("{0}")]
    Bad(String),
}

impl ServiceQuery {
    /// All entries of `kind` (up to the service's limit).
    pub fn of_type(kind: &str) -> Self {
        ServiceQuery {
            kind: kind.to_owned(),
            ..ServiceQuery::default()
        }
    }

    /// Only this version.
    pub fn version(mut self, version: &str) -> Self {
        self.version = Some(version.to_owned());
        self
    }

    /// Only this country.
    pub fn country(mut self, code: &str) -> Self {
        self.country = Some(code.to_owned());
        self
    }

    /// A random sample of `n`.
    pub fn quantity(mut self, n: usize) -> Self {
        self.quantity = Some(n);
        self
    }

    /// The query string (without `?`), percent-encoded.
    pub fn to_query_string(&self) -> String {
        let mut s = form_urlencoded::Serializer::new(String::new());
        s.append_pair("type", &self.kind);
        if let Some(v) = &self.version {
            s.append_pair("version", v);
        }
        if let Some(c) = &self.country {
            s.append_pair("country", c);
        }
        if let Some(n) = self.quantity {
            s.append_pair("quantity", &n.to_string());
        }
        s.finish()
    }

    /// Parses and normalizes a query string (type lower-cased, country upper-cased).
    ///
    /// ```
    /// use skytower_services::service_discovery::{QueryError, ServiceQuery};
    ///
    /// let q = ServiceQuery::parse("type=VPN&country=de&quantity=3").unwrap();
    /// assert_eq!(q, ServiceQuery::of_type("vpn").country("DE").quantity(3));
    /// assert_eq!(ServiceQuery::parse("country=DE"), Err(QueryError::MissingType));
    /// assert!(ServiceQuery::parse("type=vpn&colour=red").is_err());
    /// ```
    ///
    /// # Errors
    ///
    /// [`QueryError::MissingType`]; [`QueryError::Bad`] for an unknown or repeated parameter,
    /// a bad value, or `quantity` not a positive integer.
    pub fn parse(query: &str) -> Result<Self, QueryError> {
        let mut kind = None;
        let mut version = None;
        let mut country = None;
        let mut quantity = None;
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            let slot = match name.as_ref() {
                "type" => &mut kind,
                "version" => &mut version,
                "country" => &mut country,
                "quantity" => &mut quantity,
                other => {
                    return Err(QueryError::Bad(format!(
                        "unknown query parameter {:?} (expected type, version, country, quantity)",
                        truncate(other)
                    )));
                }
            };
            if slot.replace(value.into_owned()).is_some() {
                return Err(QueryError::Bad(format!(
                    "query parameter {name} given twice"
                )));
            }
        }
        let kind = normalize_type(&kind.ok_or(QueryError::MissingType)?)
            .map_err(|e| QueryError::Bad(e.to_string()))?;
        if let Some(v) = &version {
            check_version(v).map_err(|e| QueryError::Bad(e.to_string()))?;
        }
        let country = country
            .map(|c| normalize_country(&c))
            .transpose()
            .map_err(|e| QueryError::Bad(e.to_string()))?;
        let quantity = quantity
            .map(|q| {
                q.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
                    QueryError::Bad(format!(
                        "quantity {:?} is not a positive integer",
                        truncate(&q)
                    ))
                })
            })
            .transpose()?;
        Ok(ServiceQuery {
            kind,
            version,
            country,
            quantity,
        })
    }
}

impl fmt::Display for ServiceQuery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_query_string())
    }
}

/// `Addr` as its text form `<pk>:<port>` in JSON.
pub(crate) mod addr_text {
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};
    use skytower_transports::dmsg::wire::Addr;

    pub(crate) fn serialize<S: Serializer>(addr: &Addr, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(addr)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Addr, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use skytower_transports::identity::SecretKey;

    use super::*;

    fn reg() -> Registration {
        Registration::new(
            SecretKey::generate().unwrap().public_key(),
            44,
            "vpn",
            "1.3.0",
        )
    }

    #[test]
    fn type_limits() {
        assert_eq!(normalize_type(&"a".repeat(MAX_TYPE_LEN)).unwrap().len(), 32);
        for bad in ["", "_x", "a b", "a:b", "é", &"a".repeat(MAX_TYPE_LEN + 1)] {
            let err = normalize_type(bad).unwrap_err();
            assert_eq!(err.code(), "invalid_type", "{bad:?}");
        }
        assert_eq!(normalize_type("VISOR").unwrap(), "visor");
    }

    #[test]
    fn version_limits() {
        for good in ["1", "v1.3.0", "1.0.0-rc.1+build_5"] {
            check_version(good).unwrap();
        }
        for bad in ["", "1 0", "1:0", "1/0", &"1".repeat(MAX_VERSION_LEN + 1)] {
            assert_eq!(check_version(bad).unwrap_err().code(), "invalid_version");
        }
    }

    #[test]
    fn geo_limits() {
        let with = |geo: Geo| Registration {
            geo: Some(geo),
            ..reg()
        };
        let ok = with(Geo {
            lat: Some(-90.0),
            lon: Some(180.0),
            region: Some("Bayern".into()),
            ..Geo::country("de")
        })
        .validated()
        .unwrap();
        assert_eq!(ok.geo.unwrap().country, "DE");
        let cases = [
            (Geo::country("DEU"), "not an ISO 3166-1 alpha-2"),
            (Geo::country("D1"), "not an ISO 3166-1 alpha-2"),
            (
                Geo {
                    lat: Some(1.0),
                    ..Geo::country("DE")
                },
                "go together",
            ),
            (
                Geo {
                    lat: Some(90.5),
                    lon: Some(0.0),
                    ..Geo::country("DE")
                },
                "lat 90.5",
            ),
            (
                Geo {
                    lat: Some(0.0),
                    lon: Some(-181.0),
                    ..Geo::country("DE")
                },
                "lon -181",
            ),
            (
                Geo {
                    region: Some("x".repeat(MAX_REGION_LEN + 1)),
                    ..Geo::country("DE")
                },
                "region",
            ),
            (
                Geo {
                    region: Some("a\nb".into()),
                    ..Geo::country("DE")
                },
                "control",
            ),
        ];
        for (geo, want) in cases {
            let err = with(geo.clone()).validated().unwrap_err();
            assert_eq!(err.code(), "invalid_geo", "{geo:?}");
            assert!(err.to_string().contains(want), "{geo:?}: {err}");
        }
    }

    #[test]
    fn info_limit() {
        let mut info = serde_json::Map::new();
        info.insert("x".into(), "y".repeat(MAX_INFO_BYTES - 8).into()); // {"x":"…"} = len + 8
        let ok = Registration {
            info: Some(info.clone()),
            ..reg()
        };
        ok.validated().unwrap();
        info.insert("x".into(), "y".repeat(MAX_INFO_BYTES - 7).into());
        let err = Registration {
            info: Some(info),
            ..reg()
        }
        .validated()
        .unwrap_err();
        assert_eq!(err, ValidationError::InfoTooLarge(MAX_INFO_BYTES + 1));
    }

    #[test]
    fn json_shape_round_trips_and_refuses_unknown_fields() {
        let r = reg();
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["address"], format!("{}", r.address));
        assert_eq!(json["type"], "vpn");
        assert!(json.get("geo").is_none());
        let back: Registration = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back, r);
        let mut extra = json;
        extra["updated_at"] = 5.into();
        assert!(serde_json::from_value::<Registration>(extra).is_err());
    }

    #[test]
    fn query_round_trip_and_refusals() {
        let q = ServiceQuery::of_type("vpn")
            .version("1.0+b")
            .country("DE")
            .quantity(2);
        assert_eq!(ServiceQuery::parse(&q.to_query_string()).unwrap(), q);
        for (bad, want) in [
            ("type=vpn&type=proxy", "given twice"),
            ("type=a%20b", "invalid service type"),
            ("type=vpn&quantity=0", "positive integer"),
            ("type=vpn&quantity=-1", "positive integer"),
            ("type=vpn&country=DEU", "alpha-2"),
            ("type=vpn&version=a%2Fb", "invalid version"),
            ("type=vpn&pk=x", "unknown query parameter"),
        ] {
            match ServiceQuery::parse(bad) {
                Err(QueryError::Bad(m)) => assert!(m.contains(want), "{bad}: {m}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
        assert_eq!(ServiceQuery::parse(""), Err(QueryError::MissingType));
    }
}
