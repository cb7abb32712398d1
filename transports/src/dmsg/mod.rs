//! DMSG: a relay network addressed by public key (`docs/protocol.md`).
//!
//! Discovery entries and the client trait are in [`disc`]. Layers, bottom up: [`noise`] (Noise
//! transport framing), [`dh`] (the X25519 the handshakes use), [`handshake`] (the session handshake:
//! preamble, XK, admission, identity proof), [`mux`] (yamux driven by one owner task),
//! [`wire`] (control frames), [`replay`] (replay guard), [`ports`] (listeners and ephemeral
//! ports), [`stream`] (end-to-end KK streams), [`session`] (client sessions), [`server`] (the
//! relay server).

pub mod cipher;
pub mod client;
mod copy;
pub mod dh;
pub mod disc;
pub mod disc_http;
pub mod handshake;
pub mod mux;
pub mod noise;
pub mod ports;
pub mod replay;
pub mod server;
pub mod session;
pub mod stream;
pub mod wire;

pub use client::{Client, ClientConfig, ClientDialError};
