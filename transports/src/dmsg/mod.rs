//! DMSG: a relay network addressed by public key (`docs/protocol.md`).
//!
//! Work in progress (DMSG core issue). Landed so far: [`noise`], the Noise transport framing that
//! sessions and end-to-end streams run over.

pub mod handshake;
pub mod mux;
pub mod noise;
pub mod ports;
pub mod replay;
pub mod server;
pub mod session;
pub mod stream;
pub mod wire;
