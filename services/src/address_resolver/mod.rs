//! address-resolver (WIP).

pub mod bindings;
pub mod cookie;
pub mod sudph;
pub mod udp;
pub mod wire;

pub use bindings::{Binding, Bindings, Transport};
pub use sudph::{BindingInfo, SudphClient, SudphConfig, SudphError, SudphEvent};
pub use udp::{UdpCheck, UdpConfig, UdpServer, UdpSnapshot, UdpStats};
