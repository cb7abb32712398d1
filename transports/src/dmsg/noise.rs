//! Noise transport framing: an `AsyncRead + AsyncWrite` over any byte stream, carrying
//! `u16 length ‖ ciphertext` frames (`docs/protocol.md` §2.3 and §3.6).
//!
//! Writes are buffered into frames of up to [`MAX_PAYLOAD`] plaintext bytes and sealed on
//! [`flush`](tokio::io::AsyncWriteExt::flush) or when a frame is full, so a writer that emits a
//! small header and a body before flushing (yamux does) costs one frame, not two. Reads decrypt
//! straight into the caller's buffer when it is large enough.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! use skytower_transports::dmsg::noise::handshake;
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! const PATTERN: &str = "Noise_NN_25519_ChaChaPoly_BLAKE2s";
//! let (a, b) = tokio::io::duplex(1 << 16);
//! let init = snow::Builder::new(PATTERN.parse().unwrap()).build_initiator().unwrap();
//! let resp = snow::Builder::new(PATTERN.parse().unwrap()).build_responder().unwrap();
//! let (client, server) = tokio::join!(handshake(a, init, &[]), handshake(b, resp, &[]));
//! let (mut client, _) = client.unwrap();
//! let (mut server, _) = server.unwrap();
//! client.write_all(b"hello").await.unwrap();
//! client.flush().await.unwrap();
//! let mut buf = [0u8; 5];
//! server.read_exact(&mut buf).await.unwrap();
//! assert_eq!(&buf, b"hello");
//! # });
//! ```

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// Largest Noise message (the whole frame body): 65 535 bytes.
pub const MAX_MESSAGE: usize = 65_535;
/// Authentication tag size.
pub const TAG_LEN: usize = 16;
/// Largest plaintext carried in one frame: 65 519 bytes.
pub const MAX_PAYLOAD: usize = MAX_MESSAGE - TAG_LEN;
/// Size of a yamux frame header.
const YAMUX_HEADER: usize = 12;
/// Plaintext per frame of an end-to-end stream: 65 489 bytes, so that one sealed frame
/// (`2 + 65 489 + 16` = 65 507 bytes) in one yamux frame (`+ 12`) is exactly one full frame of
/// the session below (65 519 bytes), and the relay, copying 65 507 bytes at a time, forwards one
/// frame per yamux frame too. Larger or misaligned frames made every yamux frame cost a second,
/// tiny session frame: another seal, another TCP segment, another wakeup.
pub const E2E_FRAME_PAYLOAD: usize = MAX_PAYLOAD - YAMUX_HEADER - PREFIX - TAG_LEN;
/// One sealed end-to-end frame on the wire (`E2E_FRAME_PAYLOAD + 18` = 65 507 bytes).
pub const E2E_FRAME: usize = PREFIX + E2E_FRAME_PAYLOAD + TAG_LEN;
const PREFIX: usize = 2;
/// How much the reader asks the inner stream for at once.
const READ_CHUNK: usize = 2 * (MAX_MESSAGE + PREFIX);

/// Errors of the Noise layer, carried inside `io::Error` (`ErrorKind::InvalidData` for
/// protocol violations), so callers can `downcast` the inner error.
#[derive(Debug, thiserror::Error)]
pub enum NoiseError {
    /// A frame's length prefix was shorter than a tag (0 included).
    #[error("noise frame of {0} bytes is shorter than the {TAG_LEN}-byte tag")]
    FrameTooShort(usize),
    /// A frame failed to decrypt or authenticate.
    #[error("noise frame failed to decrypt: {0}")]
    Decrypt(snow::Error),
    /// The handshake failed (wrong key, corrupted message, pattern problem).
    #[error("noise handshake failed: {0}")]
    Handshake(snow::Error),
    /// A handshake payload or message did not fit the limits.
    #[error("noise handshake message too large ({0} bytes)")]
    HandshakeTooLarge(usize),
    /// The peer closed the connection in the middle of a frame.
    #[error("connection closed in the middle of a noise frame")]
    TruncatedFrame,
}

impl From<NoiseError> for io::Error {
    fn from(e: NoiseError) -> Self {
        let kind = match e {
            NoiseError::TruncatedFrame => io::ErrorKind::UnexpectedEof,
            _ => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, e)
    }
}

/// Writes one handshake message framed with a u16 length.
async fn write_frame<T: AsyncWrite + Unpin>(io: &mut T, msg: &[u8]) -> io::Result<()> {
    let len = u16::try_from(msg.len()).map_err(|_| NoiseError::HandshakeTooLarge(msg.len()))?;
    let mut frame = Vec::with_capacity(PREFIX + msg.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(msg);
    io.write_all(&frame).await?;
    io.flush().await
}

/// Runs a whole handshake over `io` (either side: `state` says which) and returns the
/// transport stream and the payloads the peer sent, one per received message.
///
/// `payloads[i]` is the payload of the i-th message this side sends (missing ones are empty).
/// Use [`Handshake`] instead when a payload must be checked before answering.
pub async fn handshake<T>(
    io: T,
    state: snow::HandshakeState,
    payloads: &[&[u8]],
) -> io::Result<(NoiseStream<T>, Vec<Vec<u8>>)>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut hs = Handshake::new(io, state);
    let mut sent = 0;
    let mut received = Vec::new();
    while !hs.is_finished() {
        if hs.is_my_turn() {
            let payload = payloads.get(sent).copied().unwrap_or(&[]);
            hs.write(payload).await?;
            sent += 1;
        } else {
            received.push(hs.read().await?);
        }
    }
    Ok((hs.into_transport()?, received))
}

/// A handshake in progress over `T`, one message at a time, for protocols that look at each
/// payload before answering (the DMSG session handshake does).
pub struct Handshake<T> {
    io: T,
    state: snow::HandshakeState,
    buf: Vec<u8>,
}

impl<T> std::fmt::Debug for Handshake<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handshake")
            .field("initiator", &self.state.is_initiator())
            .field("finished", &self.state.is_handshake_finished())
            .finish_non_exhaustive()
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> Handshake<T> {
    /// Starts a handshake over `io`.
    pub fn new(io: T, state: snow::HandshakeState) -> Self {
        Handshake {
            io,
            state,
            buf: Vec::new(),
        }
    }

    /// Whether the next message is ours to write.
    pub fn is_my_turn(&self) -> bool {
        self.state.is_my_turn()
    }

    /// Whether the handshake is complete.
    pub fn is_finished(&self) -> bool {
        self.state.is_handshake_finished()
    }

    /// The handshake hash so far (binds everything exchanged until now).
    pub fn handshake_hash(&self) -> &[u8] {
        self.state.get_handshake_hash()
    }

    /// The peer's static key, once the pattern has revealed it.
    pub fn remote_static(&self) -> Option<&[u8]> {
        self.state.get_remote_static()
    }

    /// Writes the next handshake message carrying `payload`.
    pub async fn write(&mut self, payload: &[u8]) -> io::Result<()> {
        let mut msg = vec![0u8; MAX_MESSAGE];
        let n = self
            .state
            .write_message(payload, &mut msg)
            .map_err(NoiseError::Handshake)?;
        write_frame(&mut self.io, &msg[..n]).await
    }

    /// Reads the next handshake message and returns its payload.
    pub async fn read(&mut self) -> io::Result<Vec<u8>> {
        let mut len = [0u8; PREFIX];
        self.io.read_exact(&mut len).await?;
        self.read_body(usize::from(u16::from_be_bytes(len))).await
    }

    /// Reads a handshake message whose `len`-byte length prefix the caller already consumed.
    pub async fn read_body(&mut self, len: usize) -> io::Result<Vec<u8>> {
        self.buf.resize(len, 0);
        self.io.read_exact(&mut self.buf).await?;
        let mut payload = vec![0u8; self.buf.len()];
        let n = self
            .state
            .read_message(&self.buf, &mut payload)
            .map_err(NoiseError::Handshake)?;
        payload.truncate(n);
        Ok(payload)
    }

    /// Turns a finished handshake into a transport stream.
    pub fn into_transport(self) -> io::Result<NoiseStream<T>> {
        let state = self
            .state
            .into_transport_mode()
            .map_err(NoiseError::Handshake)?;
        Ok(NoiseStream::new(self.io, state))
    }

    /// The underlying stream (for instance to close it after a refusal).
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.io
    }
}

/// A Noise transport over a byte stream: `AsyncRead + AsyncWrite` of plaintext.
pub struct NoiseStream<T> {
    inner: T,
    state: snow::TransportState,
    /// Ciphertext read from `inner`, not yet decrypted (whole or partial frames).
    /// Ciphertext buffer: initialised once (zeroed when first needed) and reused, so reads never
    /// re-zero it; `rbuf[rstart..rend]` holds unread ciphertext.
    rbuf: Vec<u8>,
    rstart: usize,
    rend: usize,
    /// Decrypted plaintext not yet handed to the reader: `pbuf[pstart..pend]`. Like `rbuf`,
    /// allocated and zeroed once, when a frame first has to be decrypted here (the reader's
    /// buffer was too small for it), then reused without re-zeroing.
    pbuf: Vec<u8>,
    pstart: usize,
    pend: usize,
    /// Plaintext per sealed frame when writes fill frames (at most [`MAX_PAYLOAD`]).
    frame_payload: usize,
    /// Plaintext written but not yet sealed (at most `frame_payload`).
    wplain: Vec<u8>,
    /// The sealed frame not yet written to `inner`: `wbuf[wstart..wend]`. At most one frame is
    /// queued (every seal first drains the previous one), so the buffer is one frame long,
    /// allocated and zeroed on the first seal and reused.
    wbuf: Vec<u8>,
    wstart: usize,
    wend: usize,
    read_eof: bool,
}

impl<T> std::fmt::Debug for NoiseStream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoiseStream")
            .field("buffered_read", &(self.pend - self.pstart))
            .field(
                "buffered_write",
                &(self.wplain.len() + self.wend - self.wstart),
            )
            .finish_non_exhaustive()
    }
}

impl<T> NoiseStream<T> {
    /// Wraps `inner` with a finished handshake's transport state.
    pub fn new(inner: T, state: snow::TransportState) -> Self {
        Self::with_frame_payload(inner, state, MAX_PAYLOAD)
    }

    /// Like [`new`](Self::new), with frames filled to `frame_payload` plaintext bytes (clamped
    /// to 1..=[`MAX_PAYLOAD`]) instead of the maximum. Readers accept any frame size; this only
    /// chooses how writes are cut, e.g. so that one sealed frame plus the framing of the layer
    /// below fills exactly one frame there ([`E2E_FRAME_PAYLOAD`]).
    pub fn with_frame_payload(inner: T, state: snow::TransportState, frame_payload: usize) -> Self {
        let frame_payload = frame_payload.clamp(1, MAX_PAYLOAD);
        NoiseStream {
            inner,
            state,
            frame_payload,
            rbuf: Vec::new(),
            rstart: 0,
            rend: 0,
            pbuf: Vec::new(),
            pstart: 0,
            pend: 0,
            wplain: Vec::with_capacity(frame_payload),
            wbuf: Vec::new(),
            wstart: 0,
            wend: 0,
            read_eof: false,
        }
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// The peer's static public key, if the pattern had one.
    pub fn remote_static(&self) -> Option<&[u8]> {
        self.state.get_remote_static()
    }

    /// Seals the pending plaintext into the (empty) outgoing frame buffer.
    fn seal(&mut self) -> io::Result<()> {
        if self.wplain.is_empty() {
            return Ok(());
        }
        let plain = std::mem::take(&mut self.wplain);
        let sealed = self.seal_from(&plain);
        self.wplain = plain;
        self.wplain.clear();
        sealed
    }

    /// Seals `plain` (at most `MAX_PAYLOAD` bytes) into the outgoing frame buffer, which must
    /// be empty (drained).
    fn seal_from(&mut self, plain: &[u8]) -> io::Result<()> {
        debug_assert!(plain.len() <= MAX_PAYLOAD);
        debug_assert_eq!(self.wstart, self.wend, "a sealed frame is still queued");
        if self.wbuf.is_empty() {
            self.wbuf = vec![0u8; PREFIX + MAX_MESSAGE];
        }
        let len = plain.len() + TAG_LEN;
        // `len` ≤ MAX_MESSAGE because `plain` never exceeds MAX_PAYLOAD.
        self.wbuf[..PREFIX].copy_from_slice(&(len as u16).to_be_bytes());
        let n = self
            .state
            .write_message(plain, &mut self.wbuf[PREFIX..PREFIX + len])
            .map_err(|e| io::Error::other(NoiseError::Handshake(e)))?;
        debug_assert_eq!(n, len);
        self.wstart = 0;
        self.wend = PREFIX + len;
        Ok(())
    }
}

impl<T: AsyncWrite + Unpin> NoiseStream<T> {
    /// Writes out every sealed frame.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.wstart < self.wend {
            let n = ready!(
                Pin::new(&mut self.inner).poll_write(cx, &self.wbuf[self.wstart..self.wend])
            )?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.wstart += n;
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> NoiseStream<T> {
    /// Decrypts one complete frame from `rbuf`, into `out` when it fits, else into `plain`.
    /// Returns `Some(bytes put in out)` when a frame was decrypted.
    fn decrypt_frame(&mut self, out: &mut ReadBuf<'_>) -> io::Result<Option<usize>> {
        let pending = &self.rbuf[self.rstart..self.rend];
        if pending.len() < PREFIX {
            return Ok(None);
        }
        let len = usize::from(u16::from_be_bytes([pending[0], pending[1]]));
        if len < TAG_LEN {
            return Err(NoiseError::FrameTooShort(len).into());
        }
        if pending.len() < PREFIX + len {
            return Ok(None);
        }
        let frame = &self.rbuf[self.rstart + PREFIX..self.rstart + PREFIX + len];
        // The output slice handed to snow is as long as the ciphertext (tag included): snow's
        // ring ciphers then copy the ciphertext there once and open it in place, where a slice
        // of only the plaintext's length makes them allocate and copy a temporary per frame.
        let written = if out.remaining() >= len {
            let dst = out.initialize_unfilled_to(len);
            let n = self
                .state
                .read_message(frame, dst)
                .map_err(NoiseError::Decrypt)?;
            out.advance(n);
            n
        } else {
            if self.pbuf.is_empty() {
                self.pbuf = vec![0u8; MAX_MESSAGE];
            }
            let n = self
                .state
                .read_message(frame, &mut self.pbuf[..len])
                .map_err(NoiseError::Decrypt)?;
            self.pstart = 0;
            self.pend = n;
            0
        };
        self.rstart += PREFIX + len;
        if self.rstart == self.rend {
            self.rstart = 0;
            self.rend = 0;
        }
        Ok(Some(written))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for NoiseStream<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.pstart < this.pend {
                let n = (this.pend - this.pstart).min(buf.remaining());
                buf.put_slice(&this.pbuf[this.pstart..this.pstart + n]);
                this.pstart += n;
                return Poll::Ready(Ok(()));
            }
            if buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            match this.decrypt_frame(buf)? {
                Some(0) => continue, // empty frame, or decrypted into `plain`
                Some(_) => return Poll::Ready(Ok(())),
                None => {}
            }
            if this.read_eof {
                return if this.rstart == this.rend {
                    Poll::Ready(Ok(()))
                } else {
                    Poll::Ready(Err(NoiseError::TruncatedFrame.into()))
                };
            }
            // Need more ciphertext: make room for at least one whole frame after `rend`.
            if this.rbuf.is_empty() {
                this.rbuf = vec![0u8; READ_CHUNK];
            }
            if this.rbuf.len() - this.rend < MAX_MESSAGE + PREFIX {
                this.rbuf.copy_within(this.rstart..this.rend, 0);
                this.rend -= this.rstart;
                this.rstart = 0;
            }
            let mut rb = ReadBuf::new(&mut this.rbuf[this.rend..]);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
            let n = rb.filled().len();
            if n == 0 {
                this.read_eof = true;
            } else {
                this.rend += n;
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for NoiseStream<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let frame = this.frame_payload;
        if this.wplain.len() == frame {
            ready!(this.poll_drain(cx))?;
            this.seal()?;
        }
        // Keep at most one sealed frame queued; push it out opportunistically.
        if this.wstart < this.wend {
            ready!(this.poll_drain(cx))?;
        }
        if this.wplain.is_empty() && buf.len() >= frame {
            // A whole frame's worth: seal it straight from the caller's buffer (one copy less).
            this.seal_from(&buf[..frame])?;
            if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
                return Poll::Ready(Err(e));
            }
            return Poll::Ready(Ok(frame));
        }
        let n = buf.len().min(frame - this.wplain.len());
        this.wplain.extend_from_slice(&buf[..n]);
        if this.wplain.len() == frame {
            this.seal()?;
            // Best effort: start writing the full frame now; Pending is fine, the data is buffered.
            if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
                return Poll::Ready(Err(e));
            }
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        this.seal()?;
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.as_mut().poll_flush(cx))?;
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    const XK: &str = "Noise_XK_25519_ChaChaPoly_BLAKE2s";

    fn keypair() -> snow::Keypair {
        snow::Builder::new(XK.parse().unwrap())
            .generate_keypair()
            .unwrap()
    }

    fn builders(
        server: &snow::Keypair,
        pinned: &[u8],
    ) -> (snow::HandshakeState, snow::HandshakeState) {
        let client = keypair();
        let init = snow::Builder::new(XK.parse().unwrap())
            .local_private_key(&client.private)
            .unwrap()
            .remote_public_key(pinned)
            .unwrap()
            .build_initiator()
            .unwrap();
        let resp = snow::Builder::new(XK.parse().unwrap())
            .local_private_key(&server.private)
            .unwrap()
            .build_responder()
            .unwrap();
        (init, resp)
    }

    /// A handshake over real framed I/O; returns connected transport streams.
    async fn pair<T>(a: T, b: T) -> (NoiseStream<T>, NoiseStream<T>)
    where
        T: AsyncRead + AsyncWrite + Unpin,
    {
        let server = keypair();
        let (init, resp) = builders(&server, &server.public);
        let (c, s) = tokio::join!(
            handshake(a, init, &[b"one", b"three"]),
            handshake(b, resp, &[b"two"]),
        );
        let (c, from_server) = c.unwrap();
        let (s, from_client) = s.unwrap();
        assert_eq!(from_server, vec![b"two".to_vec()]);
        assert_eq!(from_client, vec![b"one".to_vec(), b"three".to_vec()]);
        assert!(s.remote_static().is_some());
        (c, s)
    }

    /// Two transport states from an in-memory handshake, to put over any I/O.
    fn transport_states() -> (snow::TransportState, snow::TransportState) {
        let server = keypair();
        let (mut init, mut resp) = builders(&server, &server.public);
        let mut msg = vec![0u8; MAX_MESSAGE];
        let mut payload = vec![0u8; MAX_MESSAGE];
        let mut turn = 0;
        while !init.is_handshake_finished() {
            let (w, r) = if turn % 2 == 0 {
                (&mut init, &mut resp)
            } else {
                (&mut resp, &mut init)
            };
            let n = w.write_message(&[], &mut msg).unwrap();
            r.read_message(&msg[..n], &mut payload).unwrap();
            turn += 1;
        }
        (
            init.into_transport_mode().unwrap(),
            resp.into_transport_mode().unwrap(),
        )
    }

    fn noise_error(err: io::Error) -> NoiseError {
        *err.into_inner().unwrap().downcast::<NoiseError>().unwrap()
    }

    #[tokio::test]
    async fn large_transfer_both_ways_is_intact() {
        let (a, b) = duplex(1 << 16);
        let (mut c, mut s) = pair(a, b).await;
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let expected = data.clone();
        let writer = tokio::spawn(async move {
            c.write_all(&data).await.unwrap();
            c.shutdown().await.unwrap();
            let mut back = Vec::new();
            c.read_to_end(&mut back).await.unwrap();
            back
        });
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        assert_eq!(got.len(), expected.len());
        assert!(got == expected);
        s.write_all(&got[..100_000]).await.unwrap();
        s.shutdown().await.unwrap();
        let back = writer.await.unwrap();
        assert_eq!(back, expected[..100_000]);
    }

    #[tokio::test]
    async fn tiny_reads_see_every_byte() {
        let (a, b) = duplex(1 << 16);
        let (mut c, mut s) = pair(a, b).await;
        c.write_all(b"abcdefghij").await.unwrap();
        c.flush().await.unwrap();
        let mut got = Vec::new();
        let mut one = [0u8; 3];
        while got.len() < 10 {
            let n = s.read(&mut one).await.unwrap();
            got.extend_from_slice(&one[..n]);
        }
        assert_eq!(got, b"abcdefghij");
    }

    #[tokio::test]
    async fn reads_sized_around_the_frame_length_see_every_byte() {
        // A reader's buffer can be smaller than the plaintext, between plaintext and ciphertext
        // length, or larger: each path (via the plaintext buffer or straight into the caller's
        // buffer) must deliver the same bytes.
        for read_size in [99, 100, 101, 115, 116, 117, 4096] {
            let (a, b) = duplex(1 << 20);
            let (mut c, mut s) = pair(a, b).await;
            let data: Vec<u8> = (0..1000u32).map(|i| (i * 13) as u8).collect();
            for chunk in data.chunks(100) {
                c.write_all(chunk).await.unwrap();
                c.flush().await.unwrap();
            }
            c.shutdown().await.unwrap();
            let mut got = Vec::new();
            let mut buf = vec![0u8; read_size];
            loop {
                let n = s.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            assert_eq!(got, data, "read size {read_size}");
        }
    }

    #[tokio::test]
    async fn large_writes_seal_full_frames_from_the_callers_buffer() {
        // A write of more than a frame is sealed straight from the caller's buffer; the frames
        // and the bytes must be the same as through the coalescing buffer.
        let (a, b) = duplex(1 << 20);
        let (mut c, mut s) = pair(a, b).await;
        let data: Vec<u8> = (0..(2 * MAX_PAYLOAD + 77) as u32)
            .map(|i| (i * 7 + i / 255) as u8)
            .collect();
        let expected = data.clone();
        let writer = tokio::spawn(async move {
            c.write_all(&data[..5]).await.unwrap(); // coalesced with the next write
            c.write_all(&data[5..]).await.unwrap();
            c.shutdown().await.unwrap();
            c
        });
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        assert!(got == expected);
        drop(writer.await.unwrap());
    }

    #[tokio::test]
    async fn small_writes_are_coalesced_until_flush() {
        let (a, b) = duplex(1 << 20);
        let (mut c, s) = pair(a, b).await;
        for _ in 0..10 {
            c.write_all(b"0123456789ab").await.unwrap();
        }
        c.write_all(&[7u8; 1000]).await.unwrap();
        c.flush().await.unwrap();
        // The raw ciphertext holds exactly one frame of 120 + 1000 bytes + tag.
        let mut raw = s.inner;
        let mut len = [0u8; 2];
        raw.read_exact(&mut len).await.unwrap();
        assert_eq!(usize::from(u16::from_be_bytes(len)), 120 + 1000 + TAG_LEN);
    }

    #[tokio::test]
    async fn frames_are_full_size_for_bulk_writes() {
        let (a, b) = duplex(1 << 20);
        let (mut c, s) = pair(a, b).await;
        let writer = tokio::spawn(async move {
            c.write_all(&vec![1u8; 3 * MAX_PAYLOAD]).await.unwrap();
            c.flush().await.unwrap();
            c
        });
        let mut raw = s.inner;
        for _ in 0..3 {
            let mut len = [0u8; 2];
            raw.read_exact(&mut len).await.unwrap();
            assert_eq!(usize::from(u16::from_be_bytes(len)), MAX_MESSAGE);
            let mut body = vec![0u8; MAX_MESSAGE];
            raw.read_exact(&mut body).await.unwrap();
        }
        drop(writer.await.unwrap());
    }

    #[tokio::test]
    async fn end_to_end_frames_fill_one_session_frame_each() {
        // One sealed end-to-end frame plus a yamux header is exactly one full session frame.
        assert_eq!(E2E_FRAME + YAMUX_HEADER, MAX_PAYLOAD);
        let (tc, _ts) = transport_states();
        let (a, mut raw) = duplex(1 << 20);
        let mut c = NoiseStream::with_frame_payload(a, tc, E2E_FRAME_PAYLOAD);
        let data = vec![5u8; 2 * E2E_FRAME_PAYLOAD + 10];
        let writer = tokio::spawn(async move {
            c.write_all(&data).await.unwrap();
            c.flush().await.unwrap();
            c
        });
        for expected in [E2E_FRAME_PAYLOAD, E2E_FRAME_PAYLOAD, 10] {
            let mut len = [0u8; 2];
            raw.read_exact(&mut len).await.unwrap();
            assert_eq!(usize::from(u16::from_be_bytes(len)), expected + TAG_LEN);
            let mut body = vec![0u8; expected + TAG_LEN];
            raw.read_exact(&mut body).await.unwrap();
        }
        drop(writer.await.unwrap());
        // Out-of-range sizes are clamped, never larger than a Noise message allows.
        let (tc, _) = transport_states();
        let (a, _b) = duplex(16);
        assert_eq!(
            NoiseStream::with_frame_payload(a, tc, usize::MAX).frame_payload,
            MAX_PAYLOAD
        );
    }

    #[tokio::test]
    async fn tampered_frame_is_a_decrypt_error() {
        let (tc, ts) = transport_states();
        let (a, mut raw_out) = duplex(1 << 16);
        let (mut raw_in, b) = duplex(1 << 16);
        let mut c = NoiseStream::new(a, tc);
        let mut s = NoiseStream::new(b, ts);
        c.write_all(b"secret payload").await.unwrap();
        c.flush().await.unwrap();
        let mut frame = vec![0u8; 2 + 14 + TAG_LEN];
        raw_out.read_exact(&mut frame).await.unwrap();
        frame[5] ^= 0x01;
        raw_in.write_all(&frame).await.unwrap();
        let mut out = [0u8; 64];
        let err = s.read(&mut out).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(matches!(noise_error(err), NoiseError::Decrypt(_)));
    }

    #[tokio::test]
    async fn replayed_frame_is_a_decrypt_error() {
        let (tc, ts) = transport_states();
        let (a, mut raw_out) = duplex(1 << 16);
        let (mut raw_in, b) = duplex(1 << 16);
        let mut c = NoiseStream::new(a, tc);
        let mut s = NoiseStream::new(b, ts);
        c.write_all(b"once").await.unwrap();
        c.flush().await.unwrap();
        let mut frame = vec![0u8; 2 + 4 + TAG_LEN];
        raw_out.read_exact(&mut frame).await.unwrap();
        raw_in.write_all(&frame).await.unwrap();
        raw_in.write_all(&frame).await.unwrap();
        let mut out = [0u8; 4];
        s.read_exact(&mut out).await.unwrap();
        assert_eq!(&out, b"once");
        let err = s.read(&mut out).await.unwrap_err();
        assert!(matches!(noise_error(err), NoiseError::Decrypt(_)));
    }

    #[tokio::test]
    async fn short_frame_and_truncation_are_typed_errors() {
        let (_, ts) = transport_states();
        let (mut raw, b) = duplex(1 << 16);
        let mut s = NoiseStream::new(b, ts);
        raw.write_all(&[0, 3, 1, 2, 3]).await.unwrap();
        let mut out = [0u8; 8];
        let err = s.read(&mut out).await.unwrap_err();
        assert!(matches!(noise_error(err), NoiseError::FrameTooShort(3)));

        let (_, ts) = transport_states();
        let (mut raw, b) = duplex(1 << 16);
        let mut s = NoiseStream::new(b, ts);
        raw.write_all(&[0, 40, 1, 2, 3]).await.unwrap();
        drop(raw);
        let err = s.read(&mut out).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert!(matches!(noise_error(err), NoiseError::TruncatedFrame));
    }

    #[tokio::test]
    async fn clean_eof_between_frames_reads_zero() {
        let (_, ts) = transport_states();
        let (raw, b) = duplex(1 << 16);
        let mut s = NoiseStream::new(b, ts);
        drop(raw);
        let mut out = [0u8; 8];
        assert_eq!(s.read(&mut out).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn wrong_server_key_fails_the_handshake() {
        let (a, b) = duplex(1 << 16);
        let server = keypair();
        let impostor = keypair();
        let (init, resp) = builders(&impostor, &server.public);
        let (c, s) = tokio::join!(handshake(a, init, &[]), handshake(b, resp, &[]));
        // The responder cannot decrypt msg1 (es with the wrong static key).
        assert!(matches!(
            noise_error(s.unwrap_err()),
            NoiseError::Handshake(_)
        ));
        assert!(c.is_err());
    }
}
