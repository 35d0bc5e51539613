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
//! sets `SO_REUSEADDR` when the connection's did not (psql's, a test's), so a restarted server
//! (or CI's `serve all` after a busy test run) failed at once. [`ReservedPort::reserve_patiently`]
//! looks at who holds a port in use (Linux's `/proc/net/tcp` and `tcp6`) and waits only for
//! connections that are closing; a listener, an open connection or a socket it cannot see (another
//! process's reservation) is reported at once.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;

/// How many connections may wait to be accepted on a listening port.
const BACKLOG: u32 = 1024;

/// How long ports that only closing connections hold are waited for: Linux keeps a closed
/// connection in TIME_WAIT for 60 s (a constant of the kernel), and a little more covers the
/// retries' spacing.
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
        "cannot listen on {addr}: no program listens there, but other programs' connections use \
         it as their local port ({holders}; waited {waited_s} s); choose a port below the \
         ephemeral range (sysctl net.ipv4.ip_local_port_range) or reserve it \
         (net.ipv4.ip_local_reserved_ports)"
    )]
    HeldByConnections {
        addr: SocketAddr,
        holders: &'static str,
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

    /// [`reserve`](Self::reserve), but a port in use only by closing connections (closed by
    /// their programs, waiting out TIME_WAIT) is tried again every 250 ms until `until`; one a
    /// program listens on, an open connection uses, or a socket not shown by the kernel holds
    /// is refused at once. `Ok(None)`: `shutdown` was cancelled while waiting.
    pub async fn reserve_patiently(
        addr: SocketAddr,
        until: Instant,
        shutdown: &CancellationToken,
    ) -> Result<Option<Self>, PortError> {
        let started = Instant::now();
        let mut warned = false;
        loop {
            let source = match Self::reserve(addr) {
                Err(PortError::Bind { source, .. })
                    if source.kind() == std::io::ErrorKind::AddrInUse =>
                {
                    source
                }
                done => return done.map(Some),
            };
            let waited_s = started.elapsed().as_secs();
            let holders = match Holders::of_port(addr.port()) {
                Holders::Closing if Instant::now() < until => "closing",
                Holders::Closing => {
                    return Err(PortError::HeldByConnections {
                        addr,
                        holders: "closed ones, still closing (TIME_WAIT)",
                        waited_s,
                        source,
                    })
                }
                Holders::Open => {
                    return Err(PortError::HeldByConnections {
                        addr,
                        holders: "open ones",
                        waited_s,
                        source,
                    })
                }
                // The last closing connection may have gone between the bind and the look:
                // one more try tells that from a holder the kernel does not show.
                Holders::Unseen => return Self::reserve(addr).map(Some),
                Holders::Listener => return Err(PortError::Bind { addr, source }),
            };
            if !warned {
                tracing::warn!(
                    %addr,
                    holders,
                    wait_s = until.saturating_duration_since(Instant::now()).as_secs(),
                    "the port is in use by other programs' closed connections (TIME_WAIT, \
                     which SO_REUSEADDR does not bind); waiting for it to come free"
                );
                warned = true;
            }
            tokio::select! {
                () = shutdown.cancelled() => return Ok(None),
                () = tokio::time::sleep(RETRY_EVERY) => {}
            }
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

/// What holds a TCP port in use, as far as the kernel shows (the strongest found).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Holders {
    /// Nothing shown: a socket bound without listening (another process's reservation), or
    /// no `/proc/net/tcp` to read.
    Unseen,
    /// Connections closed by this side, waiting to be gone (FIN_WAIT, TIME_WAIT, CLOSING…).
    Closing,
    /// An open connection (or one being opened, or closed only by its peer).
    Open,
    /// A listening socket.
    Listener,
}

impl Holders {
    /// Reads `/proc/net/tcp` and `/proc/net/tcp6` (this network namespace's sockets).
    fn of_port(port: u16) -> Self {
        ["/proc/net/tcp", "/proc/net/tcp6"]
            .iter()
            .filter_map(|path| std::fs::read_to_string(path).ok())
            .map(|table| Self::in_table(&table, port))
            .max()
            .unwrap_or(Self::Unseen)
    }

    /// The strongest holder of local `port` in one `/proc/net/tcp`-format table.
    fn in_table(table: &str, port: u16) -> Self {
        table
            .lines()
            .skip(1)
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                let local = fields.nth(1)?;
                let state = fields.nth(1)?;
                // After the state: queues, timer, retransmits, uid, timeout, then the inode of
                // the socket's file: 0 once no process has the socket open.
                let inode = fields.nth(5)?;
                let (_, local_port) = local.rsplit_once(':')?;
                (u16::from_str_radix(local_port, 16).ok()? == port).then_some((state, inode))
            })
            .map(|(state, inode)| match u8::from_str_radix(state, 16) {
                // TCP_LISTEN
                Ok(0x0A) => Self::Listener,
                // FIN_WAIT1, FIN_WAIT2, TIME_WAIT, CLOSE, LAST_ACK, CLOSING of a socket no
                // process holds any more: gone within TIME_WAIT's minute. (A live process's
                // half-closed socket can stay in FIN_WAIT2: it counts as open.)
                Ok(0x04..=0x07 | 0x09 | 0x0B) if inode == "0" => Self::Closing,
                // ESTABLISHED, SYN_SENT, SYN_RECV, CLOSE_WAIT, a live half-closed one, and
                // anything unknown
                _ => Self::Open,
            })
            .max()
            .unwrap_or(Self::Unseen)
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

    /// A connection from a client socket bound to a port of its own (no `SO_REUSEADDR`, as
    /// psql's), closed by the client first: its port is held while the connection closes.
    /// Returns the port and the server's side (still open: the client's side waits in
    /// FIN_WAIT2 until that side closes or resets).
    async fn closed_by_the_client() -> (SocketAddr, tokio::net::TcpStream) {
        let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpSocket::new_v4().unwrap();
        client.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = client.local_addr().unwrap();
        let (client, accepted) = tokio::join!(
            client.connect(server.local_addr().unwrap()),
            server.accept()
        );
        drop(client.unwrap());
        let (server_side, _) = accepted.unwrap();
        (port, server_side)
    }

    #[tokio::test]
    async fn a_port_only_closing_connections_hold_is_waited_for_until_it_comes_free() {
        let (port, server_side) = closed_by_the_client().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            ReservedPort::reserve(port).is_err(),
            "the closing connection holds the port"
        );
        let started = Instant::now();
        let release = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(600)).await;
            // A reset ends the client's side at once.
            server_side.set_zero_linger().unwrap();
            drop(server_side);
        });
        let reserved = ReservedPort::reserve_patiently(
            port,
            Instant::now() + Duration::from_secs(20),
            &CancellationToken::new(),
        )
        .await
        .expect("the port comes free")
        .expect("not cancelled");
        assert!(
            started.elapsed() >= Duration::from_millis(600),
            "it waited for the connection to be gone"
        );
        assert_eq!(reserved.addr(), port);
        release.await.unwrap();
    }

    #[tokio::test]
    async fn a_port_closed_connections_hold_past_the_wait_is_refused_with_advice() {
        let (port, mut server_side) = closed_by_the_client().await;
        // The server closes too: the client's side waits out TIME_WAIT (60 s).
        let _ = tokio::io::AsyncReadExt::read(&mut server_side, &mut [0u8; 1]).await;
        drop(server_side);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = Instant::now();
        let err = ReservedPort::reserve_patiently(
            port,
            Instant::now() + Duration::from_millis(700),
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();
        assert!(started.elapsed() >= Duration::from_millis(700), "it waited");
        let message = err.to_string();
        assert!(
            matches!(err, PortError::HeldByConnections { .. })
                && message.contains(&port.to_string())
                && message.contains("TIME_WAIT")
                && message.contains("ip_local_port_range"),
            "the error says why and what to do: {message}"
        );
    }

    #[tokio::test]
    async fn a_shutdown_ends_the_wait_for_a_port() {
        let (port, mut server_side) = closed_by_the_client().await;
        let _ = tokio::io::AsyncReadExt::read(&mut server_side, &mut [0u8; 1]).await;
        drop(server_side);
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            stop.cancel();
        });
        let started = Instant::now();
        let reserved = ReservedPort::reserve_patiently(
            port,
            Instant::now() + Duration::from_secs(60),
            &shutdown,
        )
        .await
        .unwrap();
        assert!(reserved.is_none(), "a stop asked for ends the wait");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[tokio::test]
    async fn a_port_a_program_listens_on_or_another_reservation_holds_is_refused_without_waiting() {
        let listened = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let reservation = ReservedPort::reserve("127.0.0.1:0".parse().unwrap()).unwrap();
        for addr in [listened.local_addr().unwrap(), reservation.addr()] {
            let started = Instant::now();
            let err = ReservedPort::reserve_patiently(
                addr,
                Instant::now() + Duration::from_secs(60),
                &CancellationToken::new(),
            )
            .await
            .unwrap_err();
            assert!(matches!(err, PortError::Bind { .. }), "{err}");
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{addr} is not waited for: {:?}",
                started.elapsed()
            );
        }
    }

    #[test]
    fn the_strongest_holder_of_a_port_is_read_from_the_kernels_table() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:C3A6 0100007F:3C28 06 00000000:00000000 03:00000F5A 00000000     0        0 0 3 0000000000000000
   1: 0100007F:C3A6 0100007F:3C29 05 00000000:00000000 00:00000000 00000000     0        0 0 3 0000000000000000
   2: 00000000:C3A7 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000
   3: 0100007F:C3A8 0100007F:3C28 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000
   4: 0100007F:C3A8 0100007F:3C2A 06 00000000:00000000 00:00000000 00000000     0        0 0 3 0000000000000000
   5: 0100007F:C3A9 0100007F:3C2B 05 00000000:00000000 00:00000000 00000000  1000        0 48151 1 0000000000000000
   6: garbage
";
        assert_eq!(Holders::in_table(table, 0xC3A6), Holders::Closing);
        assert_eq!(Holders::in_table(table, 0xC3A7), Holders::Listener);
        assert_eq!(
            Holders::in_table(table, 0xC3A8),
            Holders::Open,
            "an open connection outweighs a closing one"
        );
        assert_eq!(
            Holders::in_table(table, 0x3C28),
            Holders::Unseen,
            "remote ports are not ours"
        );
        assert_eq!(
            Holders::in_table(table, 0xC3A9),
            Holders::Open,
            "a half-closed socket a process still holds may stay so"
        );
        assert_eq!(Holders::in_table("", 1), Holders::Unseen);
    }
}
