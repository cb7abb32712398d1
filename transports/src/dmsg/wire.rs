//! DMSG control frames: fixed binary layouts of `StreamRequest`, `StreamResponse`, `Ping` and
//! `Pong` (`docs/protocol.md` §3). No serde, no JSON: every field has a fixed place, every
//! length is bounded, and decoding rejects trailing bytes.
//!
//! ```
//! use skytower_transports::dmsg::wire::{Addr, StreamRequest, SignedRequest};
//! use skytower_transports::identity::SecretKey;
//!
//! let a = SecretKey::generate().unwrap();
//! let b = SecretKey::generate().unwrap();
//! let req = StreamRequest {
//!     src: Addr::new(a.public_key(), 49152),
//!     dst: Addr::new(b.public_key(), 80),
//!     timestamp_ms: 1_700_000_000_000,
//!     nonce: [7; 16],
//!     cipher: 0,
//!     noise: vec![1, 2, 3],
//! };
//! let signed = req.sign(&a).unwrap();
//! let decoded = SignedRequest::decode(signed.as_bytes()).unwrap();
//! assert_eq!(decoded.request(), signed.request());
//! ```

use std::fmt;
use std::io;
use std::str::FromStr;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::identity::{PublicKey, PublicKeyError, SecretKey, Signature, SigningContext, contexts};

/// Protocol version carried in control frames.
pub const VERSION: u8 = 1;
/// Largest control frame body.
pub const MAX_CONTROL_FRAME: usize = 1024;
/// Largest Noise message carried in a control frame.
pub const MAX_NOISE_LEN: usize = 256;
/// First ephemeral port.
pub const EPHEMERAL_PORTS_START: u16 = 49_152;

/// Signing context of stream requests.
pub const STREAM_REQUEST_CONTEXT: SigningContext = contexts::DMSG_STREAM_REQUEST;
/// Signing context of stream responses (accepts and refusals).
pub const STREAM_RESPONSE_CONTEXT: SigningContext = contexts::DMSG_STREAM_RESPONSE;

const T_REQUEST: u8 = 0x01;
const T_RESPONSE: u8 = 0x02;
const T_PING: u8 = 0x03;
const T_PONG: u8 = 0x04;
const SIG_LEN: usize = 64;
const PK_LEN: usize = 32;

/// Why a control frame was rejected.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The frame is larger than [`MAX_CONTROL_FRAME`].
    #[error("control frame of {0} bytes exceeds the {MAX_CONTROL_FRAME}-byte limit")]
    TooLarge(usize),
    /// The frame ended before a field.
    #[error("control frame truncated")]
    Truncated,
    /// Bytes after the last field.
    #[error("{0} unexpected trailing bytes in control frame")]
    Trailing(usize),
    /// The type byte is not the one expected here.
    #[error("unexpected control frame type {0:#04x}")]
    UnexpectedType(u8),
    /// A version this implementation does not speak.
    #[error("unsupported protocol version {0}")]
    Version(u8),
    /// A public key field is not a valid key.
    #[error("invalid public key: {0}")]
    Key(#[from] PublicKeyError),
    /// Port 0.
    #[error("port 0 is not a valid port")]
    ZeroPort,
    /// A Noise message longer than [`MAX_NOISE_LEN`].
    #[error("noise message of {0} bytes exceeds {MAX_NOISE_LEN}")]
    NoiseTooLarge(usize),
    /// The signature does not verify.
    #[error("bad signature on {0}")]
    BadSignature(&'static str),
    /// Signing with a key that is not the frame's source/signer.
    #[error("the signing key is not the frame's {0}")]
    WrongSigner(&'static str),
    /// Reading or writing the frame failed.
    #[error("control frame i/o: {0}")]
    Io(#[from] io::Error),
}

/// A DMSG address: a public key and a port, written `<64 hex>:<port>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Addr {
    /// The node's public key.
    pub pk: PublicKey,
    /// The port (1–65535).
    pub port: u16,
}

impl Addr {
    /// An address.
    pub const fn new(pk: PublicKey, port: u16) -> Self {
        Addr { pk, port }
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.pk, self.port)
    }
}

impl fmt::Debug for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why an address string was rejected.
#[derive(Debug, thiserror::Error)]
pub enum AddrParseError {
    /// No `:` between key and port.
    #[error("address must be <public key>:<port>")]
    Shape,
    /// The key part is invalid.
    #[error("invalid public key in address: {0}")]
    Key(#[from] PublicKeyError),
    /// The port is not a number in 1–65535.
    #[error("invalid port in address: {0:?}")]
    Port(String),
}

impl FromStr for Addr {
    type Err = AddrParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (pk, port) = s.rsplit_once(':').ok_or(AddrParseError::Shape)?;
        let pk = pk.parse::<PublicKey>()?;
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| AddrParseError::Port(port.to_owned()))?;
        Ok(Addr { pk, port })
    }
}

/// Response codes (`docs/protocol.md` §6.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Code {
    /// The stream is open.
    Accepted,
    /// Nothing listens on the destination port.
    NoListener,
    /// The destination has no session at this server.
    NotConnected,
    /// The request's signature is invalid.
    BadSignature,
    /// The request was already seen.
    Replay,
    /// The request's timestamp is outside the window.
    Stale,
    /// The request's source is not the session's key.
    WrongSource,
    /// The request's destination is not the responder.
    WrongDestination,
    /// A limit was reached.
    OverLimit,
    /// The request could not be decoded.
    Malformed,
    /// The Noise handshake message was invalid.
    BadHandshake,
    /// The server could not reach the destination in time.
    ForwardFailed,
    /// The refusing party is shutting down.
    ShuttingDown,
    /// A code this implementation does not know.
    Unknown(u8),
}

impl Code {
    /// The wire value.
    pub const fn to_u8(self) -> u8 {
        match self {
            Code::Accepted => 0,
            Code::NoListener => 1,
            Code::NotConnected => 2,
            Code::BadSignature => 3,
            Code::Replay => 4,
            Code::Stale => 5,
            Code::WrongSource => 6,
            Code::WrongDestination => 7,
            Code::OverLimit => 8,
            Code::Malformed => 9,
            Code::BadHandshake => 10,
            Code::ForwardFailed => 11,
            Code::ShuttingDown => 12,
            Code::Unknown(c) => c,
        }
    }

    /// From the wire value.
    pub const fn from_u8(v: u8) -> Self {
        match v {
            0 => Code::Accepted,
            1 => Code::NoListener,
            2 => Code::NotConnected,
            3 => Code::BadSignature,
            4 => Code::Replay,
            5 => Code::Stale,
            6 => Code::WrongSource,
            7 => Code::WrongDestination,
            8 => Code::OverLimit,
            9 => Code::Malformed,
            10 => Code::BadHandshake,
            11 => Code::ForwardFailed,
            12 => Code::ShuttingDown,
            c => Code::Unknown(c),
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Code::Accepted => "accepted",
            Code::NoListener => "no listener on the destination port",
            Code::NotConnected => "destination not connected to this server",
            Code::BadSignature => "bad request signature",
            Code::Replay => "replayed request",
            Code::Stale => "request timestamp outside the window",
            Code::WrongSource => "source key is not the session's key",
            Code::WrongDestination => "destination key is not the responder",
            Code::OverLimit => "over a limit",
            Code::Malformed => "malformed request",
            Code::BadHandshake => "invalid noise handshake message",
            Code::ForwardFailed => "server could not reach the destination",
            Code::ShuttingDown => "shutting down",
            Code::Unknown(c) => return write!(f, "unknown code {c}"),
        };
        f.write_str(s)
    }
}

/// A cursor over a frame body.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.0.len() < n {
            return Err(WireError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, WireError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u64(&mut self) -> Result<u64, WireError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(a))
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn pk(&mut self) -> Result<PublicKey, WireError> {
        Ok(PublicKey::from_slice(self.take(PK_LEN)?)?)
    }
    fn port(&mut self) -> Result<u16, WireError> {
        match self.u16()? {
            0 => Err(WireError::ZeroPort),
            p => Ok(p),
        }
    }
    fn noise(&mut self) -> Result<Vec<u8>, WireError> {
        let len = usize::from(self.u16()?);
        if len > MAX_NOISE_LEN {
            return Err(WireError::NoiseTooLarge(len));
        }
        Ok(self.take(len)?.to_vec())
    }
    fn finish(self) -> Result<(), WireError> {
        match self.0.len() {
            0 => Ok(()),
            n => Err(WireError::Trailing(n)),
        }
    }
}

fn header(r: &mut Reader<'_>, expected: u8) -> Result<(), WireError> {
    let t = r.u8()?;
    if t != expected {
        return Err(WireError::UnexpectedType(t));
    }
    match r.u8()? {
        VERSION => Ok(()),
        v => Err(WireError::Version(v)),
    }
}

/// The fields of a stream request (A → S → B).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamRequest {
    /// The initiator's address (ephemeral port).
    pub src: Addr,
    /// The responder's address (listening port).
    pub dst: Addr,
    /// Unix time at the initiator, milliseconds.
    pub timestamp_ms: u64,
    /// Random nonce (replay protection with `src.pk`).
    pub nonce: [u8; 16],
    /// The end-to-end AEAD the dialer chose (0 ChaCha20-Poly1305, 1 AES-256-GCM).
    pub cipher: u8,
    /// Noise KK message 1.
    pub noise: Vec<u8>,
}

impl StreamRequest {
    fn encode_unsigned(&self) -> Result<Vec<u8>, WireError> {
        if self.noise.len() > MAX_NOISE_LEN {
            return Err(WireError::NoiseTooLarge(self.noise.len()));
        }
        if self.src.port == 0 || self.dst.port == 0 {
            return Err(WireError::ZeroPort);
        }
        let mut out =
            Vec::with_capacity(2 + 2 * (PK_LEN + 2) + 8 + 16 + 2 + self.noise.len() + SIG_LEN);
        out.extend_from_slice(&[T_REQUEST, VERSION]);
        out.extend_from_slice(self.src.pk.as_bytes());
        out.extend_from_slice(&self.src.port.to_be_bytes());
        out.extend_from_slice(self.dst.pk.as_bytes());
        out.extend_from_slice(&self.dst.port.to_be_bytes());
        out.extend_from_slice(&self.timestamp_ms.to_be_bytes());
        out.extend_from_slice(&self.nonce);
        out.push(self.cipher);
        out.extend_from_slice(&(self.noise.len() as u16).to_be_bytes());
        out.extend_from_slice(&self.noise);
        Ok(out)
    }

    /// Signs the request with the source's key.
    pub fn sign(self, key: &SecretKey) -> Result<SignedRequest, WireError> {
        if key.public_key() != self.src.pk {
            return Err(WireError::WrongSigner("source"));
        }
        let mut raw = self.encode_unsigned()?;
        let sig = key.sign(STREAM_REQUEST_CONTEXT, &raw);
        raw.extend_from_slice(sig.as_bytes());
        Ok(SignedRequest { request: self, raw })
    }
}

/// A stream request with its signature and exact encoded bytes (which the server forwards as is).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedRequest {
    request: StreamRequest,
    raw: Vec<u8>,
}

impl SignedRequest {
    /// Decodes a request frame body and verifies its signature against `src.pk`.
    pub fn decode(body: &[u8]) -> Result<Self, WireError> {
        if body.len() > MAX_CONTROL_FRAME {
            return Err(WireError::TooLarge(body.len()));
        }
        let mut r = Reader(body);
        header(&mut r, T_REQUEST)?;
        let src = Addr::new(r.pk()?, r.port()?);
        let dst = Addr::new(r.pk()?, r.port()?);
        let timestamp_ms = r.u64()?;
        let nonce = r.array::<16>()?;
        let cipher = r.u8()?;
        let noise = r.noise()?;
        let signed_len = body.len() - r.0.len();
        let sig = Signature::from(r.array::<SIG_LEN>()?);
        r.finish()?;
        src.pk
            .verify(STREAM_REQUEST_CONTEXT, &body[..signed_len], &sig)
            .map_err(|_| WireError::BadSignature("stream request"))?;
        Ok(SignedRequest {
            request: StreamRequest {
                src,
                dst,
                timestamp_ms,
                nonce,
                cipher,
                noise,
            },
            raw: body.to_vec(),
        })
    }

    /// The request's fields.
    pub fn request(&self) -> &StreamRequest {
        &self.request
    }

    /// The exact signed bytes (the frame body).
    pub fn as_bytes(&self) -> &[u8] {
        &self.raw
    }

    /// SHA-256 of the frame body, which responses refer to.
    pub fn hash(&self) -> [u8; 32] {
        Sha256::digest(&self.raw).into()
    }
}

/// The fields of a stream response (B → S → A, or a refusal by S).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamResponse {
    /// [`SignedRequest::hash`] of the request answered.
    pub request_hash: [u8; 32],
    /// Accepted, or why not.
    pub code: Code,
    /// Who signs: the destination, or the server for a server refusal.
    pub signer: PublicKey,
    /// Noise KK message 2 when accepted; empty otherwise.
    pub noise: Vec<u8>,
}

impl StreamResponse {
    /// Signs the response with the signer's key.
    pub fn sign(self, key: &SecretKey) -> Result<SignedResponse, WireError> {
        if key.public_key() != self.signer {
            return Err(WireError::WrongSigner("signer"));
        }
        if self.noise.len() > MAX_NOISE_LEN {
            return Err(WireError::NoiseTooLarge(self.noise.len()));
        }
        let mut raw = Vec::with_capacity(2 + 32 + 1 + PK_LEN + 2 + self.noise.len() + SIG_LEN);
        raw.extend_from_slice(&[T_RESPONSE, VERSION]);
        raw.extend_from_slice(&self.request_hash);
        raw.push(self.code.to_u8());
        raw.extend_from_slice(self.signer.as_bytes());
        raw.extend_from_slice(&(self.noise.len() as u16).to_be_bytes());
        raw.extend_from_slice(&self.noise);
        let sig = key.sign(STREAM_RESPONSE_CONTEXT, &raw);
        raw.extend_from_slice(sig.as_bytes());
        Ok(SignedResponse {
            response: self,
            raw,
        })
    }
}

/// A stream response with its signature and encoded bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedResponse {
    response: StreamResponse,
    raw: Vec<u8>,
}

impl SignedResponse {
    /// Decodes a response frame body and verifies its signature against `signer`.
    pub fn decode(body: &[u8]) -> Result<Self, WireError> {
        Self::decode_inner(body, true)
    }

    /// Decodes a response without verifying its signature. For the relay only: it receives
    /// the response on the destination's authenticated session, and the dialer verifies the
    /// signature itself, so a second verification at the relay buys nothing.
    pub(crate) fn decode_unverified(body: &[u8]) -> Result<Self, WireError> {
        Self::decode_inner(body, false)
    }

    fn decode_inner(body: &[u8], verify: bool) -> Result<Self, WireError> {
        if body.len() > MAX_CONTROL_FRAME {
            return Err(WireError::TooLarge(body.len()));
        }
        let mut r = Reader(body);
        header(&mut r, T_RESPONSE)?;
        let request_hash = r.array::<32>()?;
        let code = Code::from_u8(r.u8()?);
        let signer = r.pk()?;
        let noise = r.noise()?;
        let signed_len = body.len() - r.0.len();
        let sig = Signature::from(r.array::<SIG_LEN>()?);
        r.finish()?;
        if verify {
            signer
                .verify(STREAM_RESPONSE_CONTEXT, &body[..signed_len], &sig)
                .map_err(|_| WireError::BadSignature("stream response"))?;
        }
        Ok(SignedResponse {
            response: StreamResponse {
                request_hash,
                code,
                signer,
                noise,
            },
            raw: body.to_vec(),
        })
    }

    /// The response's fields.
    pub fn response(&self) -> &StreamResponse {
        &self.response
    }

    /// The exact signed bytes (the frame body).
    pub fn as_bytes(&self) -> &[u8] {
        &self.raw
    }
}

/// A keep-alive probe or its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// `Ping(nonce)`.
    Ping(u64),
    /// `Pong(nonce)`.
    Pong(u64),
}

impl Probe {
    /// Encodes the frame body.
    pub fn encode(self) -> [u8; 9] {
        let (t, n) = match self {
            Probe::Ping(n) => (T_PING, n),
            Probe::Pong(n) => (T_PONG, n),
        };
        let mut out = [0u8; 9];
        out[0] = t;
        out[1..].copy_from_slice(&n.to_be_bytes());
        out
    }

    /// Decodes a frame body.
    pub fn decode(body: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader(body);
        let t = r.u8()?;
        let n = r.u64()?;
        r.finish()?;
        match t {
            T_PING => Ok(Probe::Ping(n)),
            T_PONG => Ok(Probe::Pong(n)),
            t => Err(WireError::UnexpectedType(t)),
        }
    }
}

/// The type byte of a frame body (to dispatch before decoding).
pub fn frame_type(body: &[u8]) -> Option<u8> {
    body.first().copied()
}

/// Writes one control frame: `u16 length ‖ body`, then flushes.
pub async fn write_frame<W: AsyncWrite + Unpin>(io: &mut W, body: &[u8]) -> Result<(), WireError> {
    if body.len() > MAX_CONTROL_FRAME {
        return Err(WireError::TooLarge(body.len()));
    }
    let mut frame = Vec::with_capacity(2 + body.len());
    frame.extend_from_slice(&(body.len() as u16).to_be_bytes());
    frame.extend_from_slice(body);
    io.write_all(&frame).await?;
    io.flush().await?;
    Ok(())
}

/// Reads one control frame body; refuses lengths over [`MAX_CONTROL_FRAME`] before reading them.
pub async fn read_frame<R: AsyncRead + Unpin>(io: &mut R) -> Result<Vec<u8>, WireError> {
    let mut len = [0u8; 2];
    io.read_exact(&mut len).await?;
    let len = usize::from(u16::from_be_bytes(len));
    if len > MAX_CONTROL_FRAME {
        return Err(WireError::TooLarge(len));
    }
    let mut body = vec![0u8; len];
    io.read_exact(&mut body).await?;
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> (SecretKey, SecretKey) {
        (
            SecretKey::generate().unwrap(),
            SecretKey::generate().unwrap(),
        )
    }

    fn request(a: &SecretKey, b: &SecretKey) -> StreamRequest {
        StreamRequest {
            src: Addr::new(a.public_key(), 49_152),
            dst: Addr::new(b.public_key(), 80),
            timestamp_ms: 1_700_000_000_123,
            nonce: [9; 16],
            cipher: 1,
            noise: vec![5; 48],
        }
    }

    #[test]
    fn request_round_trips_and_layout_is_fixed() {
        let (a, b) = keys();
        let signed = request(&a, &b).sign(&a).unwrap();
        // 2 + (32+2)*2 + 8 + 16 + 1 + 2 + 48 + 64
        assert_eq!(signed.as_bytes().len(), 209);
        assert_eq!(&signed.as_bytes()[..2], &[0x01, 0x01]);
        assert_eq!(&signed.as_bytes()[2..34], a.public_key().as_bytes());
        let decoded = SignedRequest::decode(signed.as_bytes()).unwrap();
        assert_eq!(decoded, signed);
        assert_eq!(decoded.hash(), signed.hash());
    }

    #[test]
    fn every_flipped_bit_is_rejected() {
        let (a, b) = keys();
        let signed = request(&a, &b).sign(&a).unwrap();
        let raw = signed.as_bytes();
        for i in 0..raw.len() {
            let mut bad = raw.to_vec();
            bad[i] ^= 0x40;
            assert!(
                SignedRequest::decode(&bad).is_err(),
                "byte {i} flip accepted"
            );
        }
    }

    #[test]
    fn typed_errors_for_bad_frames() {
        let (a, b) = keys();
        let raw = request(&a, &b).sign(&a).unwrap().as_bytes().to_vec();
        assert!(matches!(
            SignedRequest::decode(&raw[..100]),
            Err(WireError::Truncated)
        ));
        let mut trailing = raw.clone();
        trailing.push(0);
        assert!(matches!(
            SignedRequest::decode(&trailing),
            Err(WireError::Trailing(1))
        ));
        let mut version = raw.clone();
        version[1] = 2;
        assert!(matches!(
            SignedRequest::decode(&version),
            Err(WireError::Version(2))
        ));
        assert!(matches!(
            SignedRequest::decode(&vec![1u8; MAX_CONTROL_FRAME + 1]),
            Err(WireError::TooLarge(_))
        ));
        assert!(matches!(
            SignedResponse::decode(&raw),
            Err(WireError::UnexpectedType(1))
        ));
        let mut sig = raw.clone();
        let last = sig.len() - 1;
        sig[last] ^= 1;
        assert!(matches!(
            SignedRequest::decode(&sig),
            Err(WireError::BadSignature(_))
        ));
        let mut port = raw.clone();
        port[34] = 0;
        port[35] = 0;
        assert!(matches!(
            SignedRequest::decode(&port),
            Err(WireError::ZeroPort)
        ));
        // Signing with someone else's key is refused before anything is sent.
        assert!(matches!(
            request(&a, &b).sign(&b),
            Err(WireError::WrongSigner(_))
        ));
    }

    #[test]
    fn a_request_signature_does_not_verify_as_a_response() {
        let (a, b) = keys();
        let req = request(&a, &b).sign(&a).unwrap();
        let resp = StreamResponse {
            request_hash: req.hash(),
            code: Code::Accepted,
            signer: b.public_key(),
            noise: vec![1; 48],
        }
        .sign(&b)
        .unwrap();
        assert_eq!(SignedResponse::decode(resp.as_bytes()).unwrap(), resp);
        // Re-sign the same response bytes under the request context: must not verify.
        let body = &resp.as_bytes()[..resp.as_bytes().len() - 64];
        let forged = b.sign(STREAM_REQUEST_CONTEXT, body);
        let mut bad = body.to_vec();
        bad.extend_from_slice(forged.as_bytes());
        assert!(matches!(
            SignedResponse::decode(&bad),
            Err(WireError::BadSignature(_))
        ));
    }

    #[test]
    fn codes_round_trip() {
        for v in 0..=255u8 {
            assert_eq!(Code::from_u8(v).to_u8(), v);
        }
        assert_eq!(Code::from_u8(200), Code::Unknown(200));
    }

    #[test]
    fn addresses_parse_and_print() {
        let (a, _) = keys();
        let addr = Addr::new(a.public_key(), 8080);
        let s = addr.to_string();
        assert_eq!(s.parse::<Addr>().unwrap(), addr);
        assert!(matches!(
            "nokey".parse::<Addr>(),
            Err(AddrParseError::Shape)
        ));
        assert!(matches!(
            format!("{}:0", a.public_key()).parse::<Addr>(),
            Err(AddrParseError::Port(_))
        ));
        assert!(matches!(
            format!("{}:70000", a.public_key()).parse::<Addr>(),
            Err(AddrParseError::Port(_))
        ));
        assert!(matches!(
            "abcd:80".parse::<Addr>(),
            Err(AddrParseError::Key(_))
        ));
    }

    #[test]
    fn probes_round_trip() {
        for p in [Probe::Ping(7), Probe::Pong(u64::MAX)] {
            assert_eq!(Probe::decode(&p.encode()).unwrap(), p);
        }
        assert!(matches!(Probe::decode(&[3, 1]), Err(WireError::Truncated)));
    }

    #[tokio::test]
    async fn frames_are_length_bounded_on_read() {
        let (mut a, mut b) = tokio::io::duplex(4096);
        write_frame(&mut a, b"hello").await.unwrap();
        assert_eq!(read_frame(&mut b).await.unwrap(), b"hello");
        a.write_all(&[0xff, 0xff]).await.unwrap();
        assert!(matches!(
            read_frame(&mut b).await,
            Err(WireError::TooLarge(65535))
        ));
        assert!(matches!(
            write_frame(&mut a, &vec![0u8; MAX_CONTROL_FRAME + 1]).await,
            Err(WireError::TooLarge(_))
        ));
    }
}
