//! placeholder, filled by the handshake_queue work
