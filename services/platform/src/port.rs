//! Ports a process reserves before it listens on them. A process hosting several services binds
//! every port first: the kernel then gives none of the connections its services open (to the
//! database, the broker, their peers) one of those ports as its local (ephemeral) port, as it
//! could before, which stopped a later service with "address already in use". A reserved port
//! refuses connections until it listens, so a caller is told at once that nothing serves it yet
//! rather than kept waiting while the services before it start.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};

/// How many connections may wait to be accepted on a listening port.
const BACKLOG: u32 = 1024;

#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A port bound but not yet listening.
#[derive(Debug)]
pub struct ReservedPort {
    socket: TcpSocket,
    addr: SocketAddr,
}

impl ReservedPort {
    /// Binds `addr` (port 0: a free one) without listening. It binds as `TcpListener::bind`
    /// would (`SO_REUSEADDR`: a port a closed connection of an earlier run still waits on is
    /// bound all the same), then clears `SO_REUSEADDR` until it listens: Linux lets two
    /// sockets that both set it bind one port while neither listens, so another program could
    /// otherwise take the port before this one listens.
    pub fn reserve(addr: SocketAddr) -> Result<Self, PortError> {
        let failed = |source| PortError::Bind { addr, source };
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(failed)?;
        socket.set_reuseaddr(true).map_err(failed)?;
        socket.bind(addr).map_err(failed)?;
        socket.set_reuseaddr(false).map_err(failed)?;
        let addr = socket.local_addr().map_err(failed)?;
        Ok(Self { socket, addr })
    }

    /// The address bound: with port 0, the port the kernel chose.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Starts listening: from now on connections are accepted.
    pub fn listen(self) -> Result<TcpListener, PortError> {
        let addr = self.addr;
        let failed = |source| PortError::Bind { addr, source };
        self.socket.set_reuseaddr(true).map_err(failed)?;
        self.socket.listen(BACKLOG).map_err(failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_reserved_port_refuses_connections_until_it_listens_and_cannot_be_taken() {
        let reserved = ReservedPort::reserve("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = reserved.addr();
        assert_ne!(
            addr.port(),
            0,
            "the kernel's port is known before listening"
        );
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "nothing accepts before it listens"
        );
        assert!(
            TcpListener::bind(addr).await.is_err(),
            "another listener (SO_REUSEADDR, as most servers set) cannot take the reserved port"
        );
        let listener = reserved.listen().unwrap();
        let (connected, accepted) =
            tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
        assert!(connected.is_ok() && accepted.is_ok());
    }

    #[test]
    fn a_port_in_use_is_refused_with_its_address() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap();
        let err = ReservedPort::reserve(addr).unwrap_err();
        assert_eq!(err.to_string(), format!("cannot listen on {addr}"));
        let cause = std::error::Error::source(&err).map(ToString::to_string);
        assert!(
            cause
                .as_deref()
                .is_some_and(|cause| cause.contains("in use")),
            "the kernel's reason follows as the cause: {cause:?}"
        );
    }
}
