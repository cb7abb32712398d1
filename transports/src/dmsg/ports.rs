//! The port table of one DMSG client (`docs/protocol.md` §3.1): listeners on ports 1–49151,
//! ephemeral dial ports 49152–65535. A port is held by a guard and freed when the guard drops
//! (a listener closed, a stream closed or dropped, a dial cancelled), so ports cannot leak.
//!
//! ```
//! use skytower_transports::dmsg::ports::Ports;
//!
//! let ports = Ports::new();
//! let listener = ports.listen(80, 16).unwrap();
//! assert!(ports.listen(80, 16).is_err()); // taken
//! drop(listener);
//! assert!(ports.listen(80, 16).is_ok()); // freed
//! let eph = ports.ephemeral().unwrap();
//! assert!(eph.port() >= 49152);
//! ```

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::mpsc;

use super::stream::DmsgStream;
use super::wire::EPHEMERAL_PORTS_START;

/// Port-table errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    /// Someone already listens on this port.
    #[error("port {0} is already in use")]
    InUse(u16),
    /// Listener ports are 1–49151.
    #[error("port {0} is not a listener port (1-49151)")]
    NotListenable(u16),
    /// Every ephemeral port is in use.
    #[error("no free ephemeral port")]
    Exhausted,
}

#[derive(Debug, Default)]
struct Table {
    /// Listener queues by port, with the id of the registration.
    listeners: HashMap<u16, (u64, mpsc::Sender<DmsgStream>)>,
    ephemeral: HashSet<u16>,
    next: u16,
    next_id: u64,
}

/// The port table, shared by every session of a client.
#[derive(Clone, Debug, Default)]
pub struct Ports {
    table: Arc<Mutex<Table>>,
}

impl Ports {
    /// An empty table.
    pub fn new() -> Self {
        Ports::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts listening on `port`; accepted streams queue up to `backlog` (beyond it, dialers get
    /// an `OverLimit` refusal).
    pub fn listen(&self, port: u16, backlog: usize) -> Result<Listener, PortError> {
        if port == 0 || port >= EPHEMERAL_PORTS_START {
            return Err(PortError::NotListenable(port));
        }
        let mut t = self.lock();
        if t.listeners.contains_key(&port) {
            return Err(PortError::InUse(port));
        }
        let (tx, rx) = mpsc::channel(backlog.max(1));
        t.next_id += 1;
        let id = t.next_id;
        t.listeners.insert(port, (id, tx));
        Ok(Listener {
            port,
            id,
            rx,
            ports: self.clone(),
        })
    }

    /// Reserves a free ephemeral port.
    pub fn ephemeral(&self) -> Result<PortGuard, PortError> {
        let mut t = self.lock();
        let span = u32::from(u16::MAX - EPHEMERAL_PORTS_START) + 1;
        for _ in 0..span {
            let port = if t.next < EPHEMERAL_PORTS_START {
                EPHEMERAL_PORTS_START
            } else {
                t.next
            };
            t.next = port.checked_add(1).unwrap_or(EPHEMERAL_PORTS_START);
            if t.ephemeral.insert(port) {
                return Ok(PortGuard {
                    port,
                    ports: self.clone(),
                });
            }
        }
        Err(PortError::Exhausted)
    }

    /// A slot in the listener queue of `port`, reserved before accepting a stream so that a
    /// stream answered "accepted" is always delivered. `None` if nobody listens;
    /// `Some(Err(()))` if the queue is full.
    pub(crate) fn reserve(&self, port: u16) -> Option<Result<mpsc::OwnedPermit<DmsgStream>, ()>> {
        let tx = self.lock().listeners.get(&port).map(|(_, tx)| tx.clone())?;
        Some(tx.try_reserve_owned().map_err(|_| ()))
    }

    /// Listener ports in use.
    pub fn listening(&self) -> usize {
        self.lock().listeners.len()
    }

    /// Ephemeral ports in use.
    pub fn ephemeral_in_use(&self) -> usize {
        self.lock().ephemeral.len()
    }
}

/// Holds an ephemeral port; frees it on drop.
#[derive(Debug)]
pub struct PortGuard {
    port: u16,
    ports: Ports,
}

impl PortGuard {
    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for PortGuard {
    fn drop(&mut self) {
        self.ports.lock().ephemeral.remove(&self.port);
    }
}

/// Streams accepted on a port. Dropping it frees the port; streams already accepted live on.
#[derive(Debug)]
pub struct Listener {
    port: u16,
    id: u64,
    rx: mpsc::Receiver<DmsgStream>,
    ports: Ports,
}

impl Listener {
    /// The port listened on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The next accepted stream; `None` after [`close`](Self::close).
    pub async fn accept(&mut self) -> Option<DmsgStream> {
        self.rx.recv().await
    }

    /// Polls for the next accepted stream.
    pub fn poll_accept(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<DmsgStream>> {
        self.rx.poll_recv(cx)
    }

    /// Stops listening: the port is freed and new dials get `NoListener`. Streams already
    /// queued are dropped (reset).
    pub fn close(&mut self) {
        self.unregister();
        self.rx.close();
    }

    fn unregister(&self) {
        let mut t = self.ports.lock();
        // Only remove our own registration (a closed-then-reopened port belongs to someone else).
        if t.listeners
            .get(&self.port)
            .is_some_and(|(id, _)| *id == self.id)
        {
            t.listeners.remove(&self.port);
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.unregister();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_thousand_ephemeral_reservations_do_not_exhaust_ports() {
        let ports = Ports::new();
        for _ in 0..10_000 {
            let g = ports.ephemeral().unwrap();
            assert!(g.port() >= EPHEMERAL_PORTS_START);
        }
        assert_eq!(ports.ephemeral_in_use(), 0);
    }

    #[test]
    fn exhaustion_is_a_typed_error_and_recovers() {
        let ports = Ports::new();
        let span = usize::from(u16::MAX - EPHEMERAL_PORTS_START) + 1;
        let held: Vec<_> = (0..span).map(|_| ports.ephemeral().unwrap()).collect();
        let distinct: HashSet<u16> = held.iter().map(|g| g.port()).collect();
        assert_eq!(distinct.len(), span);
        assert_eq!(ports.ephemeral().unwrap_err(), PortError::Exhausted);
        drop(held);
        assert!(ports.ephemeral().is_ok());
    }

    #[test]
    fn listener_ports_are_checked_and_freed() {
        let ports = Ports::new();
        assert_eq!(ports.listen(0, 1).unwrap_err(), PortError::NotListenable(0));
        assert_eq!(
            ports.listen(49_152, 1).unwrap_err(),
            PortError::NotListenable(49_152)
        );
        let mut l = ports.listen(80, 1).unwrap();
        assert_eq!(ports.listen(80, 1).unwrap_err(), PortError::InUse(80));
        l.close();
        assert_eq!(ports.listening(), 0);
        let _again = ports.listen(80, 1).unwrap();
        drop(l); // dropping the closed old listener must not remove the new one
        assert_eq!(ports.listening(), 1);
    }

    #[test]
    fn reserve_reports_missing_and_full_listeners() {
        let ports = Ports::new();
        assert!(ports.reserve(80).is_none());
        let _l = ports.listen(80, 1).unwrap();
        let permit = ports.reserve(80).unwrap().unwrap();
        assert!(ports.reserve(80).unwrap().is_err());
        drop(permit);
        assert!(ports.reserve(80).unwrap().is_ok());
    }
}
