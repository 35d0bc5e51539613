//! Ports a process reserves before it listens on them. A process hosting several services binds
//! every port first: the kernel then gives none of the connections its services open (to the
//! database, the broker, their peers) one of those ports as its local (ephemeral) port, as it
//! could before, which stopped a later service with "address already in use". A reserved port
//! refuses connections until it listens, so a caller is told at once that nothing serves it yet
//! rather than kept waiting while the services before it start.
//!
//! A port can also be held by no listener at all: by another program's connection that took it
//! as its local port (the default ports lie in Linux's ephemeral range) and, once closed by that
//! program, waits there for 60 s (TIME_WAIT). Linux refuses such a port even to a socket that
//! sets `SO_REUSEADDR` when the connection's did not (psql's, a test's). A restarted server
//! (or CI's `serve all` after a busy test run) then failed at once; [`ReservedPort::reserve_patiently`]
//! waits for such a port to come free and fails at once only when a program listens on it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpSocket};

/// How many connections may wait to be accepted on a listening port.
const BACKLOG: u32 = 1024;

/// How long a port that only connections hold is waited for: Linux keeps a closed connection in
/// TIME_WAIT for 60 s (a constant of the kernel), and a little more covers the retries' spacing.
pub const CLOSED_CONNECTIONS_PATIENCE: Duration = Duration::from_secs(65);

/// How often a port held by connections is tried again.
const RETRY_EVERY: Duration = Duration::from_millis(250);

#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "cannot listen on {addr}: no program listens there, but other sockets (connections that \
         took it as their local port, or closed ones waiting out TIME_WAIT) still held it after \
         {waited_s} s; choose a port below the ephemeral range (sysctl net.ipv4.ip_local_port_range) \
         or reserve it (net.ipv4.ip_local_reserved_ports)"
    )]
    HeldByConnections {
        addr: SocketAddr,
        waited_s: u64,
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

    /// [`reserve`](Self::reserve), but a port in use where no program listens (only connections
    /// hold it) is tried again every 250 ms for up to `patience`; one a program listens on is
    /// refused at once.
    pub async fn reserve_patiently(
        addr: SocketAddr,
        patience: Duration,
    ) -> Result<Self, PortError> {
        let started = Instant::now();
        let mut warned = false;
        loop {
            let source = match Self::reserve(addr) {
                Err(PortError::Bind { source, .. })
                    if source.kind() == std::io::ErrorKind::AddrInUse =>
                {
                    source
                }
                done => return done,
            };
            if Self::someone_listens(addr).await {
                return Err(PortError::Bind { addr, source });
            }
            if started.elapsed() >= patience {
                return Err(PortError::HeldByConnections {
                    addr,
                    waited_s: started.elapsed().as_secs(),
                    source,
                });
            }
            if !warned {
                tracing::warn!(
                    %addr,
                    patience_s = patience.as_secs(),
                    "the port is in use though no program listens on it (another program's \
                     connections hold it as their local port, or closed ones wait out TIME_WAIT); \
                     waiting for it to come free"
                );
                warned = true;
            }
            tokio::time::sleep(RETRY_EVERY).await;
        }
    }

    /// Whether a program accepts connections on `addr` (on loopback for an unspecified host).
    async fn someone_listens(addr: SocketAddr) -> bool {
        let mut target = addr;
        if target.ip().is_unspecified() {
            target.set_ip(match target.ip() {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
            });
        }
        // A listener answers loopback at once; a filtered address is taken as one (refused fast).
        match tokio::time::timeout(
            Duration::from_secs(1),
            tokio::net::TcpStream::connect(target),
        )
        .await
        {
            Ok(Ok(_)) | Err(_) => true,
            Ok(Err(err)) => err.kind() != std::io::ErrorKind::ConnectionRefused,
        }
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

    #[tokio::test]
    async fn a_port_no_program_listens_on_is_waited_for_until_it_comes_free() {
        let holder = ReservedPort::reserve("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = holder.addr();
        let started = Instant::now();
        let release = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(600)).await;
            drop(holder);
        });
        let reserved = ReservedPort::reserve_patiently(addr, Duration::from_secs(20))
            .await
            .expect("the port is reserved once its holder lets it go");
        assert!(
            started.elapsed() >= Duration::from_millis(600),
            "it waited for the holder"
        );
        assert_eq!(reserved.addr(), addr);
        release.await.unwrap();
    }

    #[tokio::test]
    async fn a_port_a_closed_client_connection_holds_is_refused_after_the_patience_with_advice() {
        let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
        // A client socket as psql's: no SO_REUSEADDR. It closes first, so its side of the
        // connection waits out TIME_WAIT on its local port, which not even SO_REUSEADDR binds.
        let client = TcpSocket::new_v4().unwrap();
        client.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = client.local_addr().unwrap();
        let (client, accepted) = tokio::join!(
            client.connect(server.local_addr().unwrap()),
            server.accept()
        );
        drop(client.unwrap());
        let (mut server_side, _) = accepted.unwrap();
        let _ = tokio::io::AsyncReadExt::read(&mut server_side, &mut [0u8; 1]).await;
        drop(server_side);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            ReservedPort::reserve(port).is_err(),
            "the closed connection holds the port"
        );

        let started = Instant::now();
        let err = ReservedPort::reserve_patiently(port, Duration::from_millis(700))
            .await
            .unwrap_err();
        assert!(started.elapsed() >= Duration::from_millis(700), "it waited");
        let message = err.to_string();
        assert!(
            matches!(err, PortError::HeldByConnections { .. })
                && message.contains(&port.to_string())
                && message.contains("no program listens there")
                && message.contains("ip_local_port_range"),
            "the error says why and what to do: {message}"
        );
    }

    #[tokio::test]
    async fn a_port_a_program_listens_on_is_refused_without_waiting() {
        let held = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = held.local_addr().unwrap();
        let started = Instant::now();
        let err = ReservedPort::reserve_patiently(addr, Duration::from_secs(60))
            .await
            .unwrap_err();
        assert!(matches!(err, PortError::Bind { .. }), "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "a listener's port is not waited for: {:?}",
            started.elapsed()
        );
    }
}
