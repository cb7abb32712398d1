//! skytower transports: identity keys and the DMSG relay transport.
//!
//! - [`identity`]: ed25519 [`SecretKey`](identity::SecretKey) / [`PublicKey`](identity::PublicKey)
//!   (the public key is the address), domain-separated signing, key files, and the Noise keys
//!   derived from the identity (`docs/identity.md`).
//! - [`dmsg`]: the DMSG protocol (`docs/protocol.md`): Noise XK sessions with yamux over the
//!   encrypted transport, end-to-end Noise KK streams relayed by a server, the relay
//!   [`Server`](dmsg::server::Server), the session-level [`Endpoint`](dmsg::session::Endpoint)
//!   and the discovery-driven [`Client`](dmsg::Client) with its dial ladder.
//! - [`connector`]: one [`Connector`](connector::Connector) (`tower::Service<Target>` and
//!   `Service<Uri>` for hyper-util) for `tcp://` and `dmsg://` targets, and one
//!   [`Listener`](connector::Listener) for both.
//! - [`fetch`]: the [`FetchChain`](fetch::FetchChain): DMSG first, HTTP as the fallback,
//!   remembering a fallback for a while.
//! - [`malloc`]: opt-in glibc allocator tuning for binaries that relay (fewer page faults per
//!   byte moved).
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use skytower_transports::dmsg::server::{Server, ServerConfig};
//! use skytower_transports::dmsg::session::{Endpoint, SessionConfig};
//! use skytower_transports::dmsg::wire::Addr;
//! use skytower_transports::identity::SecretKey;
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! // A relay server and two clients on loopback.
//! let server = Server::bind(SecretKey::generate()?, "127.0.0.1:0".parse()?, ServerConfig::default()).await?;
//! let alice = Endpoint::new(SecretKey::generate()?, SessionConfig::default());
//! let bob = Endpoint::new(SecretKey::generate()?, SessionConfig::default());
//! let to_server = alice.connect(server.local_addr(), server.public_key()).await?;
//! let _bob_session = bob.connect(server.local_addr(), server.public_key()).await?;
//! # while !server.clients().contains(&bob.public_key()) { tokio::task::yield_now().await; }
//! let mut listener = bob.listen(80)?;
//!
//! // Alice dials bob:80 through the server; the stream is end-to-end encrypted.
//! let mut stream = to_server.dial(Addr::new(bob.public_key(), 80)).await?;
//! stream.write_all(b"hello bob").await?;
//! stream.flush().await?;
//! let mut incoming = listener.accept().await.unwrap();
//! let mut buf = [0u8; 9];
//! incoming.read_exact(&mut buf).await?;
//! assert_eq!(&buf, b"hello bob");
//! assert_eq!(incoming.remote_addr().pk, alice.public_key());
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

#![warn(missing_docs)]

pub mod connector;
pub mod dmsg;
pub mod fetch;
pub mod identity;
mod io_delegate;
pub mod malloc;
pub mod task;
#[cfg(feature = "testing")]
pub mod testing;

/// An error and its sources on one line, `outer: cause: root cause` (for error messages that
/// must carry the whole story, such as a failed fetch attempt).
///
/// ```
/// let io = std::io::Error::other("connection reset");
/// assert_eq!(skytower_transports::error_chain(&io), "connection reset");
/// ```
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}
