//! Test doubles for the crate's own tests: a line-based server on loopback (a fake IMAP or
//! SMTP server is its greeting and a reply per line), and a login and a connector to use it
//! with. The login's password is [`PASSWORD`], which no error may contain.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use crate::connector::Connector;
use crate::dial::Policy;
use crate::login::{Login, Security};

pub const PASSWORD: &str = "s3cret-pass";

/// Serves every connection on 127.0.0.1: writes `greeting`, then `reply(line)` for each line
/// read. Returns the address and the number of connections accepted so far.
pub async fn line_server(
    greeting: &'static str,
    reply: impl Fn(&str) -> String + Send + Sync + 'static,
) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let (count, reply) = (accepted.clone(), Arc::new(reply));
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let reply = reply.clone();
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let _ = write.write_all(greeting.as_bytes()).await;
                let mut lines = BufReader::new(read).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if write.write_all(reply(&line).as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, accepted)
}

/// A server on 127.0.0.1 that accepts connections and never says a word.
pub async fn silent_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    addr
}

pub fn login(host: &str, port: u16, security: Security) -> Login {
    Login {
        host: host.into(),
        port,
        security,
        username: "ann@example.com".into(),
        password: SecretString::from(PASSWORD),
    }
}

pub fn connector(allow_local: bool, timeout: Duration) -> Connector {
    let policy = if allow_local {
        Policy::local()
    } else {
        Policy::default()
    };
    Connector::new(policy, timeout)
}
