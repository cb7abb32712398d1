//! The SUDPH datagram formats (`docs/api/address-resolver.md`, "UDP protocol").
//!
//! Every datagram starts with the 4-byte header `"AR" ‖ version (1) ‖ kind`, then fixed-size
//! fields in network byte order; only [`Answer`] has a variable part (at most
//! [`MAX_LOCAL_ADDRESSES`] addresses). A datagram whose length is not exactly the one its kind
//! and counts imply is malformed. No datagram is longer than [`MAX_DATAGRAM`] bytes.
//!
//! Decoding copies fixed-size fields and checks lengths only: no allocation beyond the
//! answer's address list, no curve arithmetic (public keys stay raw bytes until a handshake
//! verifies them), so a flood of junk costs the receive loop next to nothing.
//!
//! ```
//! use skytower_services::address_resolver::wire::{Answer, Cookie, Datagram};
//! use skytower_transports::identity::SecretKey;
//!
//! let key = SecretKey::generate().unwrap();
//! let hello = Datagram::Hello { pk: key.public_key().to_bytes() };
//! assert_eq!(Datagram::decode(&hello.encode()).unwrap(), hello);
//!
//! let answer = Answer::sign(&key, Cookie([7; 24]), 40_001, vec!["192.168.1.5".parse().unwrap()])
//!     .unwrap();
//! let bytes = Datagram::Answer(answer.clone()).encode();
//! let Datagram::Answer(decoded) = Datagram::decode(&bytes).unwrap() else { unreachable!() };
//! decoded.verify().unwrap();
//! assert_eq!(decoded, answer);
//! ```

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use skytower_transports::identity::{
    PublicKey, PublicKeyError, SecretKey, Signature, VerifyError, contexts,
};

/// The first two bytes of every datagram.
pub const MAGIC: [u8; 2] = *b"AR";
/// The protocol version (third byte).
pub const VERSION: u8 = 1;
/// Header length: magic, version, kind.
pub const HEADER_LEN: usize = 4;
/// Length of a challenge cookie: stamp (issue ms ‖ sequence, 8) ‖ MAC (16).
pub const COOKIE_LEN: usize = 24;
/// Length of a session id.
pub const SESSION_LEN: usize = 16;
/// Most local addresses an [`Answer`] carries.
pub const MAX_LOCAL_ADDRESSES: usize = 8;
/// Length of an encoded socket address: IPv6 (IPv4 as `::ffff:a.b.c.d`) ‖ port.
const ADDR_LEN: usize = 18;
/// `Hello` length: it is padded so that the `Challenge` answering it is smaller (no
/// amplification towards a spoofed source).
pub const HELLO_LEN: usize = 64;
/// `Challenge` length.
pub const CHALLENGE_LEN: usize = HEADER_LEN + COOKIE_LEN;
/// Fixed part of an `Answer` (without addresses): header, pk, cookie, port, count, signature.
pub const ANSWER_MIN_LEN: usize = HEADER_LEN + 32 + COOKIE_LEN + 2 + 1 + Signature::LEN;
/// `Bound` length.
pub const BOUND_LEN: usize = HEADER_LEN + SESSION_LEN + 4 + ADDR_LEN;
/// `Heartbeat` and `Unbind` length.
pub const HEARTBEAT_LEN: usize = HEADER_LEN + 32 + SESSION_LEN;
/// `Alive` length.
pub const ALIVE_LEN: usize = HEADER_LEN + SESSION_LEN + 4;
/// `Punch` length.
pub const PUNCH_LEN: usize = HEADER_LEN + SESSION_LEN + 32 + ADDR_LEN;
/// `Holepunch` length.
pub const HOLEPUNCH_LEN: usize = HEADER_LEN + 32;
/// `Error` length.
pub const ERROR_LEN: usize = HEADER_LEN + 1;
/// The longest datagram of the protocol (an `Answer` with 8 addresses, 255 bytes). Anything
/// longer is malformed.
pub const MAX_DATAGRAM: usize = ANSWER_MIN_LEN + 16 * MAX_LOCAL_ADDRESSES;

/// A challenge cookie: the resolver's stateless proof that it sent a challenge to an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cookie(pub [u8; COOKIE_LEN]);

/// A session id: issued with a binding, carried by the node's heartbeats and unbind, and by
/// the resolver's punch notices (so a node can tell them from forgeries).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SessionId(pub [u8; SESSION_LEN]);

impl SessionId {
    /// A random session id.
    ///
    /// # Errors
    ///
    /// When the OS has no randomness to give.
    pub fn random() -> Result<Self, getrandom::Error> {
        let mut b = [0u8; SESSION_LEN];
        getrandom::fill(&mut b)?;
        Ok(SessionId(b))
    }

    /// Lowercase hex (32 characters).
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Parses [`to_hex`](Self::to_hex) output.
    pub fn from_hex(s: &str) -> Option<Self> {
        if s.len() != SESSION_LEN * 2 || !s.is_ascii() {
            return None;
        }
        let mut b = [0u8; SESSION_LEN];
        for (i, out) in b.iter_mut().enumerate() {
            *out = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(SessionId(b))
    }
}

/// Why the resolver refused a datagram (carried by [`Datagram::Error`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The handshake queue is full: retry after a pause.
    Busy,
    /// The challenge cookie is invalid or expired: start again with `Hello`.
    BadCookie,
    /// The answer's key is invalid or its signature does not verify.
    BadSignature,
    /// No binding with this session at this address: handshake again.
    UnknownSession,
    /// The observed address is not public (the resolver runs without `--allow-loopback`).
    AddressRefused,
    /// The binding store failed or is full.
    StoreFailed,
    /// The handshake did not finish in time on the resolver's side.
    Timeout,
    /// A code this version does not know.
    Other(u8),
}

impl ErrorCode {
    /// The byte on the wire.
    pub const fn to_u8(self) -> u8 {
        match self {
            ErrorCode::Busy => 1,
            ErrorCode::BadCookie => 2,
            ErrorCode::BadSignature => 3,
            ErrorCode::UnknownSession => 4,
            ErrorCode::AddressRefused => 5,
            ErrorCode::StoreFailed => 6,
            ErrorCode::Timeout => 7,
            ErrorCode::Other(b) => b,
        }
    }

    /// From the byte on the wire.
    pub const fn from_u8(b: u8) -> Self {
        match b {
            1 => ErrorCode::Busy,
            2 => ErrorCode::BadCookie,
            3 => ErrorCode::BadSignature,
            4 => ErrorCode::UnknownSession,
            5 => ErrorCode::AddressRefused,
            6 => ErrorCode::StoreFailed,
            7 => ErrorCode::Timeout,
            b => ErrorCode::Other(b),
        }
    }

    /// A snake_case name (logs, docs).
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Busy => "busy",
            ErrorCode::BadCookie => "bad_cookie",
            ErrorCode::BadSignature => "bad_signature",
            ErrorCode::UnknownSession => "unknown_session",
            ErrorCode::AddressRefused => "address_refused",
            ErrorCode::StoreFailed => "store_failed",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Other(_) => "other",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ErrorCode::Other(b) => write!(f, "error code {b}"),
            c => f.write_str(c.as_str()),
        }
    }
}

impl std::error::Error for ErrorCode {}

/// A node's answer to a challenge: its key, the cookie, its local UDP port and addresses, and
/// its signature (context [`contexts::AR_SUDPH`]) over every byte of the datagram before the
/// signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The node's public key (raw bytes; validated by [`verify`](Self::verify)).
    pub pk: [u8; 32],
    /// The cookie of the challenge answered.
    pub cookie: Cookie,
    /// The node's local UDP port (for peers on the same LAN).
    pub local_port: u16,
    /// The node's local addresses (at most [`MAX_LOCAL_ADDRESSES`]).
    pub addresses: Vec<IpAddr>,
    /// The signature.
    pub sig: Signature,
}

impl Answer {
    /// Builds and signs an answer.
    ///
    /// # Errors
    ///
    /// [`DecodeError::TooManyAddresses`] beyond [`MAX_LOCAL_ADDRESSES`].
    pub fn sign(
        key: &SecretKey,
        cookie: Cookie,
        local_port: u16,
        addresses: Vec<IpAddr>,
    ) -> Result<Self, DecodeError> {
        if addresses.len() > MAX_LOCAL_ADDRESSES {
            return Err(DecodeError::TooManyAddresses(addresses.len()));
        }
        let mut answer = Answer {
            pk: key.public_key().to_bytes(),
            cookie,
            local_port,
            addresses,
            sig: Signature::from_bytes([0; Signature::LEN]),
        };
        answer.sig = key.sign(contexts::AR_SUDPH, &answer.unsigned_bytes());
        Ok(answer)
    }

    /// The bytes the signature covers: the encoded datagram up to the signature.
    pub fn unsigned_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(ANSWER_MIN_LEN + 16 * self.addresses.len());
        header(&mut out, Kind::Answer);
        out.extend_from_slice(&self.pk);
        out.extend_from_slice(&self.cookie.0);
        out.extend_from_slice(&self.local_port.to_be_bytes());
        // `sign` and `decode` bound the count to 8.
        out.push(self.addresses.len().min(MAX_LOCAL_ADDRESSES) as u8);
        for ip in self.addresses.iter().take(MAX_LOCAL_ADDRESSES) {
            out.extend_from_slice(&ip16(*ip).octets());
        }
        out
    }

    /// Validates the key and verifies the signature; returns the key.
    ///
    /// # Errors
    ///
    /// [`AnswerError::Key`] for bytes that are not a valid public key, [`AnswerError::Signature`]
    /// when the signature does not verify.
    pub fn verify(&self) -> Result<PublicKey, AnswerError> {
        let pk = PublicKey::from_bytes(&self.pk)?;
        pk.verify(contexts::AR_SUDPH, &self.unsigned_bytes(), &self.sig)?;
        Ok(pk)
    }
}

/// Why an [`Answer`] was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    /// The key bytes are not a valid public key.
    #[error("invalid public key: {0}")]
    Key(#[from] PublicKeyError),
    /// The signature does not verify.
    #[error(transparent)]
    Signature(#[from] VerifyError),
}

/// One datagram of the protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Datagram {
    /// Node → resolver: start a handshake for `pk` (padded to [`HELLO_LEN`] with zeros).
    Hello {
        /// The node's key (raw bytes).
        pk: [u8; 32],
    },
    /// Resolver → node: sign this cookie.
    Challenge {
        /// The cookie.
        cookie: Cookie,
    },
    /// Node → resolver: the signed answer.
    Answer(Answer),
    /// Resolver → node: bound; heartbeat with `session`.
    Bound {
        /// The session id.
        session: SessionId,
        /// Seconds the binding lives without a heartbeat.
        ttl_secs: u32,
        /// The node's address as the resolver sees it (its public UDP mapping).
        observed: SocketAddr,
    },
    /// Node → resolver: keep the binding alive (every 10 s).
    Heartbeat {
        /// The node's key.
        pk: [u8; 32],
        /// The session.
        session: SessionId,
    },
    /// Resolver → node: the heartbeat refreshed the binding.
    Alive {
        /// The session.
        session: SessionId,
        /// Seconds the binding now lives.
        ttl_secs: u32,
    },
    /// Node → resolver: delete my binding.
    Unbind {
        /// The node's key.
        pk: [u8; 32],
        /// The session.
        session: SessionId,
    },
    /// Resolver → node: `peer` at `addr` resolved you; punch a hole towards it.
    Punch {
        /// The session of the node notified (proves the notice comes from the resolver).
        session: SessionId,
        /// The peer that resolved the node.
        peer: [u8; 32],
        /// The peer's observed UDP address.
        addr: SocketAddr,
    },
    /// Node → node: a hole-punching datagram from the SUDPH socket.
    Holepunch {
        /// The sender's key.
        pk: [u8; 32],
    },
    /// Resolver → node: the last datagram was refused.
    Error {
        /// Why.
        code: ErrorCode,
    },
}

/// Why a datagram could not be decoded. Every variant is a malformed datagram: dropped and
/// counted by the resolver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Longer than [`MAX_DATAGRAM`].
    #[error("datagram of {0} bytes is longer than {MAX_DATAGRAM}")]
    TooLarge(usize),
    /// Shorter than a header, or without the `AR` magic.
    #[error("not an address-resolver datagram")]
    BadMagic,
    /// An unknown protocol version.
    #[error("unsupported protocol version {0}")]
    BadVersion(u8),
    /// An unknown kind byte.
    #[error("unknown datagram kind {0}")]
    UnknownKind(u8),
    /// The length does not match the kind.
    #[error("{kind} datagram of {got} bytes (expected {expected})")]
    BadLength {
        /// The kind.
        kind: &'static str,
        /// The length its kind (and counts) imply.
        expected: usize,
        /// The length received.
        got: usize,
    },
    /// A `Hello` whose padding is not zero.
    #[error("hello padding is not zero")]
    BadPadding,
    /// An answer with more than [`MAX_LOCAL_ADDRESSES`] addresses.
    #[error("{0} local addresses (at most {MAX_LOCAL_ADDRESSES})")]
    TooManyAddresses(usize),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Kind {
    Hello = 1,
    Challenge = 2,
    Answer = 3,
    Bound = 4,
    Heartbeat = 5,
    Alive = 6,
    Unbind = 7,
    Punch = 8,
    Holepunch = 9,
    Error = 15,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            1 => Kind::Hello,
            2 => Kind::Challenge,
            3 => Kind::Answer,
            4 => Kind::Bound,
            5 => Kind::Heartbeat,
            6 => Kind::Alive,
            7 => Kind::Unbind,
            8 => Kind::Punch,
            9 => Kind::Holepunch,
            15 => Kind::Error,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Hello => "hello",
            Kind::Challenge => "challenge",
            Kind::Answer => "answer",
            Kind::Bound => "bound",
            Kind::Heartbeat => "heartbeat",
            Kind::Alive => "alive",
            Kind::Unbind => "unbind",
            Kind::Punch => "punch",
            Kind::Holepunch => "holepunch",
            Kind::Error => "error",
        }
    }
}

fn header(out: &mut Vec<u8>, kind: Kind) {
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(kind as u8);
}

/// An IP as 16 bytes (IPv4 mapped into IPv6).
fn ip16(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// The canonical form of an IP: IPv4-mapped IPv6 addresses as IPv4.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// The canonical form of a socket address (see [`canonical_ip`]).
pub fn canonical_addr(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(canonical_ip(addr.ip()), addr.port())
}

fn put_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    out.extend_from_slice(&ip16(addr.ip()).octets());
    out.extend_from_slice(&addr.port().to_be_bytes());
}

/// A cursor over a datagram whose length has already been checked.
struct Reader<'a> {
    buf: &'a [u8],
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        // Lengths are checked before reading; a short buffer would leave zeros, never panic.
        let n = N.min(self.buf.len());
        out[..n].copy_from_slice(&self.buf[..n]);
        self.buf = &self.buf[n..];
        out
    }

    fn u16(&mut self) -> u16 {
        u16::from_be_bytes(self.take())
    }

    fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.take())
    }

    fn ip(&mut self) -> IpAddr {
        canonical_ip(IpAddr::V6(Ipv6Addr::from(self.take::<16>())))
    }

    fn addr(&mut self) -> SocketAddr {
        let ip = self.ip();
        SocketAddr::new(ip, self.u16())
    }
}

impl Datagram {
    /// The encoded datagram.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HELLO_LEN);
        match self {
            Datagram::Hello { pk } => {
                header(&mut out, Kind::Hello);
                out.extend_from_slice(pk);
                out.resize(HELLO_LEN, 0);
            }
            Datagram::Challenge { cookie } => {
                header(&mut out, Kind::Challenge);
                out.extend_from_slice(&cookie.0);
            }
            Datagram::Answer(a) => {
                out = a.unsigned_bytes();
                out.extend_from_slice(a.sig.as_bytes());
            }
            Datagram::Bound {
                session,
                ttl_secs,
                observed,
            } => {
                header(&mut out, Kind::Bound);
                out.extend_from_slice(&session.0);
                out.extend_from_slice(&ttl_secs.to_be_bytes());
                put_addr(&mut out, *observed);
            }
            Datagram::Heartbeat { pk, session } | Datagram::Unbind { pk, session } => {
                let kind = if matches!(self, Datagram::Heartbeat { .. }) {
                    Kind::Heartbeat
                } else {
                    Kind::Unbind
                };
                header(&mut out, kind);
                out.extend_from_slice(pk);
                out.extend_from_slice(&session.0);
            }
            Datagram::Alive { session, ttl_secs } => {
                header(&mut out, Kind::Alive);
                out.extend_from_slice(&session.0);
                out.extend_from_slice(&ttl_secs.to_be_bytes());
            }
            Datagram::Punch {
                session,
                peer,
                addr,
            } => {
                header(&mut out, Kind::Punch);
                out.extend_from_slice(&session.0);
                out.extend_from_slice(peer);
                put_addr(&mut out, *addr);
            }
            Datagram::Holepunch { pk } => {
                header(&mut out, Kind::Holepunch);
                out.extend_from_slice(pk);
            }
            Datagram::Error { code } => {
                header(&mut out, Kind::Error);
                out.push(code.to_u8());
            }
        }
        out
    }

    /// Decodes one datagram.
    ///
    /// # Errors
    ///
    /// A [`DecodeError`] naming what is wrong.
    pub fn decode(buf: &[u8]) -> Result<Datagram, DecodeError> {
        if buf.len() > MAX_DATAGRAM {
            return Err(DecodeError::TooLarge(buf.len()));
        }
        if buf.len() < HEADER_LEN || buf[..2] != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        if buf[2] != VERSION {
            return Err(DecodeError::BadVersion(buf[2]));
        }
        let kind = Kind::from_u8(buf[3]).ok_or(DecodeError::UnknownKind(buf[3]))?;
        let expected = match kind {
            Kind::Hello => HELLO_LEN,
            Kind::Challenge => CHALLENGE_LEN,
            Kind::Answer => {
                // The count byte sits after header, pk, cookie and port.
                let at = HEADER_LEN + 32 + COOKIE_LEN + 2;
                let n = usize::from(*buf.get(at).ok_or(DecodeError::BadLength {
                    kind: kind.name(),
                    expected: ANSWER_MIN_LEN,
                    got: buf.len(),
                })?);
                if n > MAX_LOCAL_ADDRESSES {
                    return Err(DecodeError::TooManyAddresses(n));
                }
                ANSWER_MIN_LEN + 16 * n
            }
            Kind::Bound => BOUND_LEN,
            Kind::Heartbeat | Kind::Unbind => HEARTBEAT_LEN,
            Kind::Alive => ALIVE_LEN,
            Kind::Punch => PUNCH_LEN,
            Kind::Holepunch => HOLEPUNCH_LEN,
            Kind::Error => ERROR_LEN,
        };
        if buf.len() != expected {
            return Err(DecodeError::BadLength {
                kind: kind.name(),
                expected,
                got: buf.len(),
            });
        }
        let mut r = Reader {
            buf: &buf[HEADER_LEN..],
        };
        Ok(match kind {
            Kind::Hello => {
                let pk = r.take::<32>();
                if r.buf.iter().any(|&b| b != 0) {
                    return Err(DecodeError::BadPadding);
                }
                Datagram::Hello { pk }
            }
            Kind::Challenge => Datagram::Challenge {
                cookie: Cookie(r.take()),
            },
            Kind::Answer => {
                let pk = r.take::<32>();
                let cookie = Cookie(r.take());
                let local_port = r.u16();
                let n = usize::from(r.take::<1>()[0]);
                let addresses = (0..n).map(|_| r.ip()).collect();
                let sig = Signature::from_bytes(r.take());
                Datagram::Answer(Answer {
                    pk,
                    cookie,
                    local_port,
                    addresses,
                    sig,
                })
            }
            Kind::Bound => Datagram::Bound {
                session: SessionId(r.take()),
                ttl_secs: r.u32(),
                observed: r.addr(),
            },
            Kind::Heartbeat => Datagram::Heartbeat {
                pk: r.take(),
                session: SessionId(r.take()),
            },
            Kind::Unbind => Datagram::Unbind {
                pk: r.take(),
                session: SessionId(r.take()),
            },
            Kind::Alive => Datagram::Alive {
                session: SessionId(r.take()),
                ttl_secs: r.u32(),
            },
            Kind::Punch => Datagram::Punch {
                session: SessionId(r.take()),
                peer: r.take(),
                addr: r.addr(),
            },
            Kind::Holepunch => Datagram::Holepunch { pk: r.take() },
            Kind::Error => Datagram::Error {
                code: ErrorCode::from_u8(r.take::<1>()[0]),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SecretKey {
        SecretKey::generate().unwrap()
    }

    #[test]
    fn every_kind_round_trips_at_its_documented_length() {
        let k = key();
        let pk = k.public_key().to_bytes();
        let session = SessionId([9; SESSION_LEN]);
        let v4: SocketAddr = "203.0.113.7:40000".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::1]:5".parse().unwrap();
        let answer = Answer::sign(
            &k,
            Cookie([1; COOKIE_LEN]),
            7,
            vec!["10.0.0.2".parse().unwrap(), "fe80::1".parse().unwrap()],
        )
        .unwrap();
        let cases = [
            (Datagram::Hello { pk }, HELLO_LEN),
            (
                Datagram::Challenge {
                    cookie: Cookie([3; COOKIE_LEN]),
                },
                CHALLENGE_LEN,
            ),
            (Datagram::Answer(answer), ANSWER_MIN_LEN + 32),
            (
                Datagram::Bound {
                    session,
                    ttl_secs: 300,
                    observed: v4,
                },
                BOUND_LEN,
            ),
            (Datagram::Heartbeat { pk, session }, HEARTBEAT_LEN),
            (Datagram::Unbind { pk, session }, HEARTBEAT_LEN),
            (
                Datagram::Alive {
                    session,
                    ttl_secs: 1,
                },
                ALIVE_LEN,
            ),
            (
                Datagram::Punch {
                    session,
                    peer: pk,
                    addr: v6,
                },
                PUNCH_LEN,
            ),
            (Datagram::Holepunch { pk }, HOLEPUNCH_LEN),
            (
                Datagram::Error {
                    code: ErrorCode::Busy,
                },
                ERROR_LEN,
            ),
        ];
        for (d, len) in cases {
            let bytes = d.encode();
            assert_eq!(bytes.len(), len, "{d:?}");
            assert!(bytes.len() <= MAX_DATAGRAM);
            assert_eq!(Datagram::decode(&bytes).unwrap(), d);
        }
        assert_eq!(MAX_DATAGRAM, 255);
        // The challenge is smaller than the hello it answers: no amplification.
        const { assert!(CHALLENGE_LEN < HELLO_LEN) };
    }

    #[test]
    fn ipv4_travels_mapped_and_comes_back_as_ipv4() {
        let a: SocketAddr = "198.51.100.1:9".parse().unwrap();
        let d = Datagram::Bound {
            session: SessionId([0; SESSION_LEN]),
            ttl_secs: 0,
            observed: a,
        };
        let bytes = d.encode();
        assert_eq!(
            &bytes[HEADER_LEN + 20..HEADER_LEN + 36],
            &Ipv6Addr::from(0xffff_c633_6401u128).octets()
        );
        let Datagram::Bound { observed, .. } = Datagram::decode(&bytes).unwrap() else {
            panic!("not bound");
        };
        assert_eq!(observed, a);
    }

    #[test]
    fn malformed_datagrams_are_typed_errors() {
        let pk = key().public_key().to_bytes();
        let hello = Datagram::Hello { pk }.encode();
        assert_eq!(
            Datagram::decode(&[0u8; 300]),
            Err(DecodeError::TooLarge(300))
        );
        assert_eq!(Datagram::decode(b""), Err(DecodeError::BadMagic));
        assert_eq!(Datagram::decode(b"AR"), Err(DecodeError::BadMagic));
        assert_eq!(Datagram::decode(b"XX\x01\x01"), Err(DecodeError::BadMagic));
        assert_eq!(
            Datagram::decode(b"AR\x02\x01"),
            Err(DecodeError::BadVersion(2))
        );
        assert_eq!(
            Datagram::decode(b"AR\x01\x63"),
            Err(DecodeError::UnknownKind(0x63))
        );
        assert_eq!(
            Datagram::decode(&hello[..40]),
            Err(DecodeError::BadLength {
                kind: "hello",
                expected: HELLO_LEN,
                got: 40
            })
        );
        let mut padded = hello.clone();
        padded[HELLO_LEN - 1] = 1;
        assert_eq!(Datagram::decode(&padded), Err(DecodeError::BadPadding));
        // An answer claiming 9 addresses, and one whose count does not match its length.
        let answer =
            Datagram::Answer(Answer::sign(&key(), Cookie([0; 24]), 1, vec![]).unwrap()).encode();
        let mut nine = answer.clone();
        nine[HEADER_LEN + 32 + COOKIE_LEN + 2] = 9;
        assert_eq!(
            Datagram::decode(&nine),
            Err(DecodeError::TooManyAddresses(9))
        );
        let mut two = answer.clone();
        two[HEADER_LEN + 32 + COOKIE_LEN + 2] = 2;
        assert_eq!(
            Datagram::decode(&two),
            Err(DecodeError::BadLength {
                kind: "answer",
                expected: ANSWER_MIN_LEN + 32,
                got: ANSWER_MIN_LEN
            })
        );
        // Truncated before the count byte.
        assert!(matches!(
            Datagram::decode(&answer[..20]),
            Err(DecodeError::BadLength { kind: "answer", .. })
        ));
        assert!(matches!(
            Answer::sign(
                &key(),
                Cookie([0; 24]),
                1,
                vec!["10.0.0.1".parse().unwrap(); 9]
            ),
            Err(DecodeError::TooManyAddresses(9))
        ));
    }

    #[test]
    fn every_prefix_and_random_junk_decodes_without_panicking() {
        let k = key();
        let answer = Datagram::Answer(
            Answer::sign(&k, Cookie([5; 24]), 1, vec!["10.0.0.1".parse().unwrap(); 8]).unwrap(),
        )
        .encode();
        for n in 0..answer.len() {
            assert!(Datagram::decode(&answer[..n]).is_err(), "prefix {n}");
        }
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 300) as usize;
            let mut buf: Vec<u8> = (0..len)
                .map(|i| (seed >> ((i % 8) * 8)) as u8 ^ i as u8)
                .collect();
            if len >= 4 {
                buf[..3].copy_from_slice(b"AR\x01");
                buf[3] = (seed >> 40) as u8 % 16;
            }
            let _ = Datagram::decode(&buf);
        }
    }

    #[test]
    fn answer_signatures_cover_every_field() {
        let k = key();
        let a = Answer::sign(&k, Cookie([5; 24]), 1, vec!["10.0.0.1".parse().unwrap()]).unwrap();
        assert_eq!(a.verify().unwrap(), k.public_key());
        let tampered = [
            Answer {
                local_port: 2,
                ..a.clone()
            },
            Answer {
                cookie: Cookie([6; 24]),
                ..a.clone()
            },
            Answer {
                addresses: vec![],
                ..a.clone()
            },
            Answer {
                pk: key().public_key().to_bytes(),
                ..a.clone()
            },
        ];
        for t in tampered {
            assert!(
                matches!(t.verify(), Err(AnswerError::Signature(_))),
                "{t:?}"
            );
        }
        let bad_key = Answer {
            pk: [0xff; 32],
            ..a.clone()
        };
        assert!(matches!(bad_key.verify(), Err(AnswerError::Key(_))));
        // A signature made under another context does not verify.
        let other = Answer {
            sig: k.sign(contexts::HTTP_AUTH, &a.unsigned_bytes()),
            ..a
        };
        assert!(matches!(other.verify(), Err(AnswerError::Signature(_))));
    }

    #[test]
    fn session_hex_round_trips() {
        let s = SessionId::random().unwrap();
        assert_eq!(SessionId::from_hex(&s.to_hex()), Some(s));
        assert_eq!(SessionId::from_hex("zz"), None);
        assert_eq!(SessionId::from_hex(&"é".repeat(16)), None);
    }
}
