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
    /// Binds `addr` (port 0: a free one) without listening, and without `SO_REUSEADDR`: while
    /// it is reserved, no other socket can bind the port (Linux lets two sockets that both set
    /// it bind one port while neither listens, and some kernels keep allowing it after the
    /// first clears it). Only if that bind finds the port in use is it bound again with
    /// `SO_REUSEADDR`, as `TcpListener::bind` would: a port that a closed connection of an
    /// earlier run still waits on (TIME_WAIT) binds then; one that a program listens on does not.
    pub fn reserve(addr: SocketAddr) -> Result<Self, PortError> {
        let failed = |source| PortError::Bind { addr, source };
        let socket = match Self::bind(addr, false) {
            Err(err) if err.kind() == std::io::ErrorKind::AddrInUse => {
                let socket = Self::bind(addr, true).map_err(failed)?;
                socket.set_reuseaddr(false).map_err(failed)?;
                socket
            }
            bound => bound.map_err(failed)?,
        };
        let addr = socket.local_addr().map_err(failed)?;
        Ok(Self { socket, addr })
    }

    fn bind(addr: SocketAddr, reuse: bool) -> std::io::Result<TcpSocket> {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }?;
        socket.set_reuseaddr(reuse)?;
        socket.bind(addr)?;
        Ok(socket)
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
        assert!(
            ReservedPort::reserve(addr).is_err(),
            "nor can another reservation"
        );
        let listener = reserved.listen().unwrap();
        let (connected, accepted) =
            tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
        assert!(connected.is_ok() && accepted.is_ok());
    }

    #[tokio::test]
    async fn a_port_a_closed_connection_still_waits_on_is_reserved_again() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) =
            tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
        let (server_side, _) = accepted.unwrap();
        // The server closes first: its side of the connection waits (TIME_WAIT) on the port.
        drop(server_side);
        let mut client = client.unwrap();
        let _ = tokio::io::AsyncReadExt::read(&mut client, &mut [0u8; 1]).await;
        drop(client);
        drop(listener);
        let reserved = ReservedPort::reserve(addr)
            .expect("the port is reserved again, as a restarted server binds it");
        assert_eq!(reserved.addr(), addr);
        reserved.listen().expect("and listened on");
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
