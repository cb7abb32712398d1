//! End-to-end DMSG streams (`docs/protocol.md` §3): the dialer's and the responder's halves of
//! the `StreamRequest`/`StreamResponse` exchange with Noise KK, and [`DmsgStream`], the
//! encrypted `AsyncRead + AsyncWrite` that results.

use std::io;

use tokio::io::AsyncWriteExt;

use super::cipher::{Cipher, protocol_name};
use super::mux::{MuxError, MuxStream, Opener};
use super::noise::{E2E_FRAME_PAYLOAD, NoiseStream};
use super::ports::{PortError, PortGuard, Ports};
use super::replay::{ReplayError, ReplayGuard, unix_ms_now};
use super::wire::{
    self, Addr, Code, Probe, SignedRequest, SignedResponse, StreamRequest, StreamResponse,
    WireError,
};
use crate::identity::{PublicKey, SecretKey};

/// The Noise pattern of end-to-end streams with ChaCha20-Poly1305 (request `cipher` 0; 1 is the
/// same with AES-GCM).
pub const STREAM_PATTERN: &str = "Noise_KK_25519_ChaChaPoly_BLAKE2s";
const PROLOGUE_TAG: &[u8] = b"skytower-dmsg-stream/1";

/// Why a dial failed.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// The destination or the server refused, with a signed reason.
    #[error("refused by {by}: {code}")]
    Refused {
        /// Why.
        code: Code,
        /// Who signed the refusal (the destination or the server).
        by: PublicKey,
    },
    /// The response was not a valid answer to our request.
    #[error("invalid stream response: {0}")]
    BadResponse(&'static str),
    /// A control frame was malformed or badly signed.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The end-to-end Noise handshake failed.
    #[error("end-to-end handshake failed: {0}")]
    Noise(snow::Error),
    /// The session failed.
    #[error("session: {0}")]
    Mux(#[from] MuxError),
    /// No port available.
    #[error(transparent)]
    Port(#[from] PortError),
    /// The stream handshake took longer than its deadline.
    #[error("stream handshake timed out")]
    Timeout,
    /// Stream I/O failed.
    #[error("stream i/o: {0}")]
    Io(#[from] io::Error),
}

impl DialError {
    /// The refusal code, if the dial was refused.
    pub fn code(&self) -> Option<Code> {
        match self {
            DialError::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }
}

fn prologue(src: &Addr, dst: &Addr) -> Vec<u8> {
    let mut p = Vec::with_capacity(PROLOGUE_TAG.len() + 68);
    p.extend_from_slice(PROLOGUE_TAG);
    p.extend_from_slice(src.pk.as_bytes());
    p.extend_from_slice(&src.port.to_be_bytes());
    p.extend_from_slice(dst.pk.as_bytes());
    p.extend_from_slice(&dst.port.to_be_bytes());
    p
}

fn kk(
    local: &SecretKey,
    remote: &PublicKey,
    src: &Addr,
    dst: &Addr,
    initiator: bool,
    cipher: Cipher,
) -> Result<snow::HandshakeState, snow::Error> {
    let secret = local.noise_secret();
    let remote = remote.noise_public();
    let prologue = prologue(src, dst);
    let b = snow::Builder::with_resolver(
        protocol_name("KK", cipher).parse()?,
        super::dh::resolver(Some(local.public_key().noise_public()), Some(remote)),
    )
    .local_private_key(secret.as_bytes())?
    .remote_public_key(&remote)?
    .prologue(&prologue)?;
    if initiator {
        b.build_initiator()
    } else {
        b.build_responder()
    }
}

fn random_nonce() -> Result<[u8; 16], io::Error> {
    let mut n = [0u8; 16];
    getrandom::fill(&mut n).map_err(|e| io::Error::other(format!("os randomness: {e}")))?;
    Ok(n)
}

/// Dials `dst` through the session behind `opener` (whose server is `server`), from the
/// ephemeral port held by `port`. Not time-bounded here: callers wrap it in a deadline. Dropping
/// the future at any point resets the yamux stream and frees the port.
pub(crate) async fn dial(
    opener: &Opener,
    local: &SecretKey,
    server: &PublicKey,
    port: PortGuard,
    dst: Addr,
    cipher: Cipher,
) -> Result<DmsgStream, DialError> {
    let cipher = cipher.resolve();
    let src = Addr::new(local.public_key(), port.port());
    let mut hs = kk(local, &dst.pk, &src, &dst, true, cipher).map_err(DialError::Noise)?;
    let mut msg1 = vec![0u8; 256];
    let n = hs.write_message(&[], &mut msg1).map_err(DialError::Noise)?;
    msg1.truncate(n);
    let request = StreamRequest {
        src,
        dst,
        timestamp_ms: unix_ms_now(),
        nonce: random_nonce()?,
        cipher: cipher.to_wire(),
        noise: msg1,
    }
    .sign(local)?;
    let mut stream = opener.open().await?;
    wire::write_frame(&mut stream, request.as_bytes()).await?;
    let body = wire::read_frame(&mut stream).await?;
    let response = SignedResponse::decode(&body)?;
    let r = response.response();
    if r.request_hash != request.hash() {
        return Err(DialError::BadResponse("response is for another request"));
    }
    if r.signer != dst.pk && r.signer != *server {
        return Err(DialError::BadResponse("response signed by a third party"));
    }
    if r.code != Code::Accepted {
        return Err(DialError::Refused {
            code: r.code,
            by: r.signer,
        });
    }
    if r.signer != dst.pk {
        return Err(DialError::BadResponse(
            "the server cannot accept for the destination",
        ));
    }
    // A payload is never longer than its message (at most MAX_NOISE_LEN bytes).
    let mut payload = vec![0u8; r.noise.len()];
    hs.read_message(&r.noise, &mut payload)
        .map_err(DialError::Noise)?;
    let transport = hs.into_transport_mode().map_err(DialError::Noise)?;
    Ok(DmsgStream {
        io: NoiseStream::with_frame_payload(stream, transport, E2E_FRAME_PAYLOAD),
        local: src,
        remote: dst,
        _port: Some(port),
    })
}

/// Why an inbound stream was not delivered (for logs and counters; the dialer got a signed
/// refusal when one could be written).
#[derive(Debug, thiserror::Error)]
pub enum InboundError {
    /// The request was refused with `code`.
    #[error("refused inbound stream: {0}")]
    Refused(Code),
    /// Reading the request or writing the response failed.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The listener went away between accepting and delivery.
    #[error("listener closed")]
    ListenerClosed,
}

/// What an inbound stream carried.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// A stream delivered to a listener.
    Delivered,
    /// A keep-alive answered.
    Pong,
}

/// Writes a refusal signed by `local` and half-closes the stream.
pub(crate) async fn refuse(
    stream: &mut MuxStream,
    local: &SecretKey,
    request_hash: [u8; 32],
    code: Code,
) -> Result<(), WireError> {
    let resp = StreamResponse {
        request_hash,
        code,
        signer: local.public_key(),
        noise: Vec::new(),
    }
    .sign(local)?;
    wire::write_frame(stream, resp.as_bytes()).await?;
    stream.shutdown().await?;
    Ok(())
}

/// Reads the request on `stream` (whatever it is) and refuses it with `code`.
pub(crate) async fn refuse_unread(
    stream: &mut MuxStream,
    local: &SecretKey,
    code: Code,
) -> Result<(), WireError> {
    let body = wire::read_frame(stream).await?;
    refuse(stream, local, digest(&body), code).await
}

/// SHA-256 of a frame body (what responses refer to).
pub(crate) fn digest(body: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(body).into()
}

/// The responder's half: reads the request on `stream`, checks it, and either delivers an
/// encrypted stream to the listener or writes a signed refusal. Not time-bounded here.
pub(crate) async fn accept(
    mut stream: MuxStream,
    local: &SecretKey,
    ports: &Ports,
    replay: &ReplayGuard,
) -> Result<Inbound, InboundError> {
    let body = wire::read_frame(&mut stream).await?;
    if wire::frame_type(&body) == Some(0x03) {
        if let Probe::Ping(n) = Probe::decode(&body)? {
            wire::write_frame(&mut stream, &Probe::Pong(n).encode()).await?;
            stream.shutdown().await.map_err(WireError::Io)?;
            return Ok(Inbound::Pong);
        }
    }
    let hash = digest(&body);
    let request = match SignedRequest::decode(&body) {
        Ok(r) => r,
        Err(e) => {
            let code = match e {
                WireError::BadSignature(_) => Code::BadSignature,
                _ => Code::Malformed,
            };
            refuse(&mut stream, local, hash, code).await?;
            return Err(InboundError::Refused(code));
        }
    };
    let req = request.request();
    let me = local.public_key();
    let verdict = if req.dst.pk != me {
        Err(Code::WrongDestination)
    } else {
        replay
            .check(&req.src.pk, &req.nonce, req.timestamp_ms)
            .map_err(|e| match e {
                ReplayError::Stale => Code::Stale,
                ReplayError::Replay => Code::Replay,
                ReplayError::Full => Code::OverLimit,
            })
    };
    if let Err(code) = verdict {
        refuse(&mut stream, local, hash, code).await?;
        return Err(InboundError::Refused(code));
    }
    let Some(cipher) = Cipher::from_wire(req.cipher) else {
        refuse(&mut stream, local, hash, Code::Malformed).await?;
        return Err(InboundError::Refused(Code::Malformed));
    };
    let handshake = kk(local, &req.src.pk, &req.src, &req.dst, false, cipher).and_then(|mut hs| {
        let mut payload = vec![0u8; req.noise.len()];
        hs.read_message(&req.noise, &mut payload)?;
        Ok(hs)
    });
    let mut hs = match handshake {
        Ok(hs) => hs,
        Err(_) => {
            refuse(&mut stream, local, hash, Code::BadHandshake).await?;
            return Err(InboundError::Refused(Code::BadHandshake));
        }
    };
    // Reserve the listener slot before answering "accepted", so an accepted stream is
    // always delivered (Go #1803).
    let permit = match ports.reserve(req.dst.port) {
        None => {
            refuse(&mut stream, local, hash, Code::NoListener).await?;
            return Err(InboundError::Refused(Code::NoListener));
        }
        Some(Err(())) => {
            refuse(&mut stream, local, hash, Code::OverLimit).await?;
            return Err(InboundError::Refused(Code::OverLimit));
        }
        Some(Ok(permit)) => permit,
    };
    let mut msg2 = vec![0u8; 256];
    let built = hs.write_message(&[], &mut msg2).and_then(|n| {
        msg2.truncate(n);
        hs.into_transport_mode()
    });
    let transport = match built {
        Ok(t) => t,
        Err(_) => {
            refuse(&mut stream, local, hash, Code::BadHandshake).await?;
            return Err(InboundError::Refused(Code::BadHandshake));
        }
    };
    let response = StreamResponse {
        request_hash: hash,
        code: Code::Accepted,
        signer: me,
        noise: msg2,
    }
    .sign(local)?;
    wire::write_frame(&mut stream, response.as_bytes()).await?;
    permit.send(DmsgStream {
        io: NoiseStream::with_frame_payload(stream, transport, E2E_FRAME_PAYLOAD),
        local: req.dst,
        remote: req.src,
        _port: None,
    });
    Ok(Inbound::Delivered)
}

/// Sends a keep-alive `Ping` on a new stream and waits for the `Pong`.
pub(crate) async fn ping(opener: &Opener) -> Result<(), DialError> {
    let nonce = u64::from_be_bytes(random_nonce()?[..8].try_into().unwrap_or([0; 8]));
    let mut stream = opener.open().await?;
    wire::write_frame(&mut stream, &Probe::Ping(nonce).encode()).await?;
    let body = wire::read_frame(&mut stream).await?;
    match Probe::decode(&body)? {
        Probe::Pong(n) if n == nonce => Ok(()),
        _ => Err(DialError::BadResponse("ping answered with something else")),
    }
}

/// An end-to-end encrypted DMSG stream: tokio `AsyncRead + AsyncWrite`.
///
/// `shutdown` half-closes; dropping it resets the stream and frees its port.
#[derive(Debug)]
pub struct DmsgStream {
    io: NoiseStream<MuxStream>,
    local: Addr,
    remote: Addr,
    _port: Option<PortGuard>,
}

impl DmsgStream {
    /// Our address (an ephemeral port when we dialed, the listener's port when we accepted).
    pub fn local_addr(&self) -> Addr {
        self.local
    }

    /// The peer's address.
    pub fn remote_addr(&self) -> Addr {
        self.remote
    }
}

crate::io_delegate::delegate_async_io!(DmsgStream, io);
