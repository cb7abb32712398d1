//! The DMSG session handshake (`docs/protocol.md` §2.1–2.3): preamble, Noise XK with the
//! server's admission decision in message 2 and the client's identity proof in message 3.
//!
//! Both functions take any `AsyncRead + AsyncWrite` (a `TcpStream` in production) and return
//! the encrypted [`NoiseStream`] over which yamux runs. They set no timeout themselves: the server
//! runs [`accept`] under its `HandshakeQueue` (64 concurrent, 10 s), the client under its dial
//! timeout.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! use skytower_transports::dmsg::handshake::{accept, connect, Admission};
//! use skytower_transports::identity::SecretKey;
//!
//! let server = SecretKey::generate().unwrap();
//! let client = SecretKey::generate().unwrap();
//! let server_pk = server.public_key();
//! let (a, b) = tokio::io::duplex(1 << 16);
//! let (c, s) = tokio::join!(
//!     connect(a, &client, &server_pk),
//!     accept(b, &server, || Admission::Accept { max_streams: 2048 }),
//! );
//! let (_stream, params) = c.unwrap();
//! let (_stream, client_pk) = s.unwrap();
//! assert_eq!(client_pk, client.public_key());
//! assert_eq!(params.max_streams, 2048);
//! # });
//! ```

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::cipher::{Cipher, protocol_name};
use super::noise::{Handshake, NoiseError, NoiseStream};
use crate::identity::{PublicKey, SecretKey, Signature, contexts};

/// Magic bytes that open every DMSG session.
pub const MAGIC: &[u8; 6] = b"SKYDMS";
/// The protocol version this implementation speaks.
pub const PROTOCOL_VERSION: u8 = 1;
/// The Noise pattern of sessions with ChaCha20-Poly1305 (preamble flags 0).
pub const SESSION_PATTERN: &str = "Noise_XK_25519_ChaChaPoly_BLAKE2s";
/// Preamble flag: the session uses AES-256-GCM instead of ChaCha20-Poly1305.
pub const FLAG_AES_GCM: u8 = 0x01;

const PREAMBLE: [u8; 8] = [b'S', b'K', b'Y', b'D', b'M', b'S', PROTOCOL_VERSION, 0];

fn preamble(cipher: Cipher) -> [u8; 8] {
    let mut p = PREAMBLE;
    if cipher.resolve() == Cipher::AesGcm {
        p[7] = FLAG_AES_GCM;
    }
    p
}

/// A server's decision about a new session, made after message 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Accept, announcing the per-session stream cap.
    Accept {
        /// Streams the client may have open on this session.
        max_streams: u16,
    },
    /// Refuse with a reason.
    Refuse(RefuseReason),
}

/// Why a server refused a session (`docs/protocol.md` §6.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RefuseReason {
    /// The server is at its session limit.
    #[error("server is at its session limit")]
    MaxSessions,
    /// The server is shutting down.
    #[error("server is shutting down")]
    ShuttingDown,
    /// A code this implementation does not know.
    #[error("unknown refusal code {0}")]
    Unknown(u8),
}

impl RefuseReason {
    fn to_u8(self) -> u8 {
        match self {
            RefuseReason::MaxSessions => 1,
            RefuseReason::ShuttingDown => 2,
            RefuseReason::Unknown(c) => c,
        }
    }
    fn from_u8(c: u8) -> Self {
        match c {
            1 => RefuseReason::MaxSessions,
            2 => RefuseReason::ShuttingDown,
            c => RefuseReason::Unknown(c),
        }
    }
}

/// What the server announced in an accepted handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionParams {
    /// Streams this client may have open on the session.
    pub max_streams: u16,
}

/// Why a session handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The peer does not speak DMSG (wrong magic).
    #[error("peer is not a DMSG endpoint (bad preamble)")]
    BadMagic,
    /// The peer speaks another protocol version.
    #[error("unsupported DMSG protocol version {theirs} (we speak {ours})")]
    UnsupportedVersion {
        /// Their version (for a client: the server's highest supported).
        theirs: u8,
        /// Ours.
        ours: u8,
    },
    /// The server refused the session (authenticated refusal).
    #[error("server refused the session: {0}")]
    Refused(RefuseReason),
    /// A handshake payload had the wrong shape.
    #[error("malformed handshake payload: {0}")]
    Malformed(&'static str),
    /// The client's claimed identity does not match its Noise key or signature.
    #[error("client identity proof failed: {0}")]
    BadIdentity(&'static str),
    /// Noise failed (wrong server key, corrupted message).
    #[error(transparent)]
    Noise(#[from] NoiseError),
    /// I/O failed (connection closed, reset).
    #[error("handshake i/o: {0}")]
    Io(#[source] io::Error),
}

/// Maps an I/O error to a handshake error, surfacing a [`NoiseError`] it carries as itself.
fn io_err(e: io::Error) -> HandshakeError {
    if !e.get_ref().is_some_and(|r| r.is::<NoiseError>()) {
        return HandshakeError::Io(e);
    }
    let kind = e.kind();
    match e.into_inner().map(|inner| inner.downcast::<NoiseError>()) {
        Some(Ok(noise)) => HandshakeError::Noise(*noise),
        Some(Err(other)) => HandshakeError::Io(io::Error::new(kind, other)),
        None => HandshakeError::Io(kind.into()),
    }
}

fn builder<'a>(
    key: &'a [u8; 32],
    public: [u8; 32],
    preamble: &'a [u8; 8],
    cipher: Cipher,
) -> Result<snow::Builder<'a>, HandshakeError> {
    let params = protocol_name("XK", cipher)
        .parse()
        .map_err(|e| HandshakeError::Noise(NoiseError::Handshake(e)))?;
    snow::Builder::with_resolver(params, super::dh::resolver(Some(public), None))
        .local_private_key(key)
        .and_then(|b| b.prologue(preamble))
        .map_err(|e| HandshakeError::Noise(NoiseError::Handshake(e)))
}

/// Client side: sends the preamble, runs XK pinned to `server`'s derived Noise key, and proves
/// our identity in message 3. The cipher is [`Cipher::Auto`]; see [`connect_with`].
pub async fn connect<T>(
    io: T,
    local: &SecretKey,
    server: &PublicKey,
) -> Result<(NoiseStream<T>, SessionParams), HandshakeError>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    connect_with(io, local, server, Cipher::Auto).await
}

/// Like [`connect`] with an explicit cipher choice (announced in the preamble's flags).
pub async fn connect_with<T>(
    io: T,
    local: &SecretKey,
    server: &PublicKey,
    cipher: Cipher,
) -> Result<(NoiseStream<T>, SessionParams), HandshakeError>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    connect_claiming(io, local, local.public_key(), server, cipher).await
}

async fn connect_claiming<T>(
    mut io: T,
    local: &SecretKey,
    claimed: PublicKey,
    server: &PublicKey,
    cipher: Cipher,
) -> Result<(NoiseStream<T>, SessionParams), HandshakeError>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let cipher = cipher.resolve();
    let preamble = preamble(cipher);
    io.write_all(&preamble).await.map_err(io_err)?;
    let secret = local.noise_secret();
    let server_noise = server.noise_public();
    let state = builder(
        secret.as_bytes(),
        local.public_key().noise_public(),
        &preamble,
        cipher,
    )?
    .remote_public_key(&server_noise)
    .and_then(|b| b.build_initiator())
    .map_err(|e| HandshakeError::Noise(NoiseError::Handshake(e)))?;
    let mut hs = Handshake::new(io, state);
    hs.write(&[]).await.map_err(io_err)?;
    // Message 2, or the server's plaintext version refusal ("SKYDMS" 0 <version>), whose first
    // two bytes ("SK") can never be a message-2 length prefix (message 2 is < 100 bytes).
    let mut prefix = [0u8; 2];
    hs.get_mut().read_exact(&mut prefix).await.map_err(io_err)?;
    if prefix == MAGIC[..2] {
        let mut rest = [0u8; 6];
        hs.get_mut().read_exact(&mut rest).await.map_err(io_err)?;
        if rest[..4] != MAGIC[2..] || rest[4] != 0 {
            return Err(HandshakeError::BadMagic);
        }
        return Err(HandshakeError::UnsupportedVersion {
            theirs: rest[5],
            ours: PROTOCOL_VERSION,
        });
    }
    let status = hs
        .read_body(usize::from(u16::from_be_bytes(prefix)))
        .await
        .map_err(io_err)?;
    let params = match status.as_slice() {
        [0, hi, lo] => SessionParams {
            max_streams: u16::from_be_bytes([*hi, *lo]),
        },
        [code, ..] if *code != 0 => {
            return Err(HandshakeError::Refused(RefuseReason::from_u8(*code)));
        }
        _ => return Err(HandshakeError::Malformed("session status")),
    };
    let proof = local.sign(contexts::DMSG_HANDSHAKE, hs.handshake_hash());
    let mut auth = Vec::with_capacity(96);
    auth.extend_from_slice(claimed.as_bytes());
    auth.extend_from_slice(proof.as_bytes());
    hs.write(&auth).await.map_err(io_err)?;
    Ok((hs.into_transport().map_err(io_err)?, params))
}

/// Server side: reads the preamble, runs XK as responder, decides admission after message 1
/// (`admit` is called once), and checks the client's identity proof in message 3. Returns the
/// transport and the client's authenticated public key.
pub async fn accept<T, F>(
    mut io: T,
    local: &SecretKey,
    admit: F,
) -> Result<(NoiseStream<T>, PublicKey), HandshakeError>
where
    T: AsyncRead + AsyncWrite + Unpin,
    F: FnOnce() -> Admission,
{
    let mut preamble = [0u8; 8];
    io.read_exact(&mut preamble).await.map_err(io_err)?;
    if &preamble[..6] != MAGIC {
        return Err(HandshakeError::BadMagic);
    }
    if preamble[6] != PROTOCOL_VERSION {
        let mut answer = [0u8; 8];
        answer[..6].copy_from_slice(MAGIC);
        answer[7] = PROTOCOL_VERSION;
        // Best effort: tell the client which version we speak, then close.
        let _ = io.write_all(&answer).await;
        let _ = io.shutdown().await;
        return Err(HandshakeError::UnsupportedVersion {
            theirs: preamble[6],
            ours: PROTOCOL_VERSION,
        });
    }
    let cipher = match preamble[7] {
        0 => Cipher::ChaChaPoly,
        FLAG_AES_GCM => Cipher::AesGcm,
        _ => return Err(HandshakeError::Malformed("preamble flags")),
    };
    let secret = local.noise_secret();
    let state = builder(
        secret.as_bytes(),
        local.public_key().noise_public(),
        &preamble,
        cipher,
    )?
    .build_responder()
    .map_err(|e| HandshakeError::Noise(NoiseError::Handshake(e)))?;
    let mut hs = Handshake::new(io, state);
    let first = hs.read().await.map_err(io_err)?;
    if !first.is_empty() {
        return Err(HandshakeError::Malformed("message 1 payload"));
    }
    match admit() {
        Admission::Accept { max_streams } => {
            let [hi, lo] = max_streams.to_be_bytes();
            hs.write(&[0, hi, lo]).await.map_err(io_err)?;
        }
        Admission::Refuse(reason) => {
            hs.write(&[reason.to_u8()]).await.map_err(io_err)?;
            let _ = hs.get_mut().shutdown().await;
            return Err(HandshakeError::Refused(reason));
        }
    }
    let hash_before = hs.handshake_hash().to_vec();
    let auth = hs.read().await.map_err(io_err)?;
    if auth.len() != 96 {
        return Err(HandshakeError::Malformed("session auth"));
    }
    let claimed = PublicKey::from_slice(&auth[..32])
        .map_err(|_| HandshakeError::BadIdentity("claimed key is not a valid public key"))?;
    let remote = hs
        .remote_static()
        .ok_or(HandshakeError::BadIdentity("no static key"))?;
    if !claimed.matches_noise_key(remote) {
        return Err(HandshakeError::BadIdentity(
            "claimed key does not match the noise static key",
        ));
    }
    let sig = Signature::from_slice(&auth[32..])
        .map_err(|_| HandshakeError::Malformed("session auth signature"))?;
    claimed
        .verify(contexts::DMSG_HANDSHAKE, &hash_before, &sig)
        .map_err(|_| HandshakeError::BadIdentity("signature over the handshake hash"))?;
    Ok((hs.into_transport().map_err(io_err)?, claimed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{DuplexStream, duplex};

    type Connected = Result<(NoiseStream<DuplexStream>, SessionParams), HandshakeError>;
    type Accepted = Result<(NoiseStream<DuplexStream>, PublicKey), HandshakeError>;

    fn accept_all() -> Admission {
        Admission::Accept { max_streams: 7 }
    }

    /// A fresh client key connects with `cipher` to a fresh server key that admits with
    /// `admit`, over an in-memory duplex: both sides' results and the client's public key.
    async fn handshake(
        cipher: Cipher,
        admit: impl FnOnce() -> Admission,
    ) -> (Connected, Accepted, PublicKey) {
        let server = SecretKey::generate().unwrap();
        let client = SecretKey::generate().unwrap();
        let server_pk = server.public_key();
        let (a, b) = duplex(1 << 16);
        let (c, s) = tokio::join!(
            connect_with(a, &client, &server_pk, cipher),
            accept(b, &server, admit)
        );
        (c, s, client.public_key())
    }

    /// Writes `msg` on the client side `c` and reads as many bytes on the server side `s`.
    async fn carried(
        c: &mut NoiseStream<DuplexStream>,
        s: &mut NoiseStream<DuplexStream>,
        msg: &[u8],
    ) -> Vec<u8> {
        c.write_all(msg).await.unwrap();
        c.flush().await.unwrap();
        let mut buf = vec![0u8; msg.len()];
        s.read_exact(&mut buf).await.unwrap();
        buf
    }

    #[tokio::test]
    async fn handshake_authenticates_both_sides_and_carries_data() {
        let (c, s, client_pk) = handshake(Cipher::Auto, accept_all).await;
        let (mut c, params) = c.unwrap();
        let (mut s, pk) = s.unwrap();
        assert_eq!(params.max_streams, 7);
        assert_eq!(pk, client_pk);
        assert_eq!(carried(&mut c, &mut s, b"over noise").await, b"over noise");
    }

    #[tokio::test]
    async fn both_ciphers_work_and_unknown_flags_are_refused() {
        for cipher in [Cipher::ChaChaPoly, Cipher::AesGcm] {
            let (c, s, _) = handshake(cipher, accept_all).await;
            let (mut c, _) = c.unwrap();
            let (mut s, _) = s.unwrap();
            let got = carried(&mut c, &mut s, b"cipher ok").await;
            assert_eq!(got, b"cipher ok", "{cipher:?}");
        }
        let server = SecretKey::generate().unwrap();
        let (mut a, b) = duplex(1 << 16);
        a.write_all(b"SKYDMS\x01\x80").await.unwrap();
        let s = accept(b, &server, accept_all).await;
        assert!(
            matches!(s, Err(HandshakeError::Malformed("preamble flags"))),
            "{s:?}"
        );
    }

    #[tokio::test]
    async fn wrong_server_key_fails_at_the_server_and_the_client() {
        let server = SecretKey::generate().unwrap();
        let expected = SecretKey::generate().unwrap();
        let client = SecretKey::generate().unwrap();
        let expected_pk = expected.public_key();
        let (a, b) = duplex(1 << 16);
        let (c, s) = tokio::join!(
            connect(a, &client, &expected_pk),
            accept(b, &server, accept_all)
        );
        assert!(
            matches!(s, Err(HandshakeError::Noise(NoiseError::Handshake(_)))),
            "{s:?}"
        );
        assert!(c.is_err());
    }

    #[tokio::test]
    async fn refusal_is_typed_on_both_sides() {
        let refuse = || Admission::Refuse(RefuseReason::MaxSessions);
        let (c, s, _) = handshake(Cipher::Auto, refuse).await;
        assert!(matches!(
            c,
            Err(HandshakeError::Refused(RefuseReason::MaxSessions))
        ));
        assert!(matches!(
            s,
            Err(HandshakeError::Refused(RefuseReason::MaxSessions))
        ));
    }

    #[tokio::test]
    async fn claiming_another_identity_is_refused() {
        let server = SecretKey::generate().unwrap();
        let client = SecretKey::generate().unwrap();
        let victim = SecretKey::generate().unwrap().public_key();
        let server_pk = server.public_key();
        let (a, b) = duplex(1 << 16);
        let (_c, s) = tokio::join!(
            connect_claiming(a, &client, victim, &server_pk, Cipher::Auto),
            accept(b, &server, accept_all)
        );
        assert!(matches!(s, Err(HandshakeError::BadIdentity(_))), "{s:?}");
    }

    #[tokio::test]
    async fn bad_magic_and_version_are_typed() {
        let server = SecretKey::generate().unwrap();
        let (mut a, b) = duplex(1 << 16);
        a.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let s = accept(b, &server, accept_all).await;
        assert!(matches!(s, Err(HandshakeError::BadMagic)));

        let (mut a, b) = duplex(1 << 16);
        a.write_all(b"SKYDMS\x09\x00").await.unwrap();
        let s = accept(b, &server, accept_all).await;
        assert!(matches!(
            s,
            Err(HandshakeError::UnsupportedVersion { theirs: 9, ours: 1 })
        ));
        let mut answer = [0u8; 8];
        a.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"SKYDMS\x00\x01");
    }

    #[tokio::test]
    async fn client_reports_the_servers_version() {
        let client = SecretKey::generate().unwrap();
        let server = SecretKey::generate().unwrap().public_key();
        let (a, mut b) = duplex(1 << 16);
        let fake_server = async move {
            let mut pre = [0u8; 8];
            b.read_exact(&mut pre).await.unwrap();
            assert_eq!(&pre[..7], &PREAMBLE[..7]);
            b.write_all(b"SKYDMS\x00\x00").await.unwrap();
            b
        };
        let (c, _b) = tokio::join!(connect(a, &client, &server), fake_server);
        assert!(matches!(
            c,
            Err(HandshakeError::UnsupportedVersion { theirs: 0, ours: 1 })
        ));
    }

    #[tokio::test]
    async fn garbage_after_preamble_is_a_noise_error() {
        let server = SecretKey::generate().unwrap();
        let (mut a, b) = duplex(1 << 16);
        a.write_all(&PREAMBLE).await.unwrap();
        a.write_all(&[0, 48]).await.unwrap();
        a.write_all(&[0xAB; 48]).await.unwrap();
        let s = accept(b, &server, accept_all).await;
        assert!(matches!(s, Err(HandshakeError::Noise(_))), "{s:?}");
    }

    #[tokio::test]
    async fn peer_closing_early_is_an_io_error() {
        let server = SecretKey::generate().unwrap();
        let (a, b) = duplex(1 << 16);
        drop(a);
        let s = accept(b, &server, accept_all).await;
        assert!(matches!(s, Err(HandshakeError::Io(_))), "{s:?}");
    }
}
