//! A recording listener: a real TCP server on loopback that speaks just enough IMAP (greeting,
//! CAPABILITY, LOGIN or AUTHENTICATE PLAIN, LOGOUT) or SMTP (banner, EHLO offering AUTH PLAIN
//! and LOGIN, AUTH, QUIT) to be handed a login, accepts every login, and keeps every byte a
//! client sends. Tests point a mailbox at it, as an attacker would point it at a server of
//! theirs, and then look for a password in what arrived ([`RecordingListener::holds_secret`]).
//! Started [holding](RecordingListener::start_holding), it keeps each client waiting before
//! its greeting and counts how many it held at once: how many logins a caller runs together.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Which protocol the listener plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speaks {
    Imap,
    Smtp,
}

/// The most bytes one connection is recorded for (a client cannot grow the test without end).
const MAX_RECORDED: usize = 1 << 20;

#[derive(Default)]
struct Record {
    bytes: Vec<u8>,
    connections: usize,
    /// Clients waiting for their greeting now, and the most at once.
    held: usize,
    most_held: usize,
}

/// A listening recorder; stops listening when dropped.
pub struct RecordingListener {
    pub addr: SocketAddr,
    record: Arc<Mutex<Record>>,
    task: JoinHandle<()>,
}

impl RecordingListener {
    /// Listens on a free loopback port.
    pub async fn start(speaks: Speaks) -> Self {
        Self::start_on(speaks, SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind loopback")
    }

    /// Listens on `addr` (another loopback address than 127.0.0.1 with a mail server's port,
    /// say, so that only the host differs from it).
    pub async fn start_on(speaks: Speaks, addr: SocketAddr) -> std::io::Result<Self> {
        Self::start_holding(speaks, addr, Duration::ZERO).await
    }

    /// As [`RecordingListener::start_on`], keeping each client `hold` before its greeting.
    pub async fn start_holding(
        speaks: Speaks,
        addr: SocketAddr,
        hold: Duration,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let record = Arc::new(Mutex::new(Record::default()));
        let shared = record.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                shared.lock().unwrap().connections += 1;
                let shared = shared.clone();
                tokio::spawn(async move {
                    let _ = serve(stream, speaks, hold, shared).await;
                });
            }
        });
        Ok(Self { addr, record, task })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The most clients held before their greeting at once.
    pub fn most_held(&self) -> usize {
        self.record.lock().unwrap().most_held
    }

    /// How many connections were accepted.
    pub fn connections(&self) -> usize {
        self.record.lock().unwrap().connections
    }

    /// Every byte every client sent, in arrival order per connection.
    pub fn recorded(&self) -> Vec<u8> {
        self.record.lock().unwrap().bytes.clone()
    }

    /// Whether `secret` arrived in any form a login carries it: as is (IMAP LOGIN, quoted or
    /// as a literal) or inside a base64 word (SMTP AUTH PLAIN's `\0user\0secret`, AUTH LOGIN,
    /// IMAP AUTHENTICATE PLAIN).
    pub fn holds_secret(&self, secret: &str) -> bool {
        holds_secret(&self.recorded(), secret)
    }
}

impl Drop for RecordingListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// See [`RecordingListener::holds_secret`].
pub fn holds_secret(recorded: &[u8], secret: &str) -> bool {
    let needle = secret.as_bytes();
    let contains =
        |hay: &[u8]| !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle);
    if contains(recorded) {
        return true;
    }
    recorded
        .split(|b| b.is_ascii_whitespace())
        .filter(|word| word.len() >= 4)
        .filter_map(|word| base64::engine::general_purpose::STANDARD.decode(word).ok())
        .any(|decoded| contains(&decoded))
}

async fn serve(
    stream: TcpStream,
    speaks: Speaks,
    hold: Duration,
    record: Arc<Mutex<Record>>,
) -> std::io::Result<()> {
    if !hold.is_zero() {
        {
            let mut r = record.lock().unwrap();
            r.held += 1;
            r.most_held = r.most_held.max(r.held);
        }
        tokio::time::sleep(hold).await;
        record.lock().unwrap().held -= 1;
    }
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    let greeting: &[u8] = match speaks {
        Speaks::Imap => b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] recorder ready\r\n",
        Speaks::Smtp => b"220 recorder ESMTP ready\r\n",
    };
    write.write_all(greeting).await?;
    let mut recorded_here = 0usize;
    // An SMTP AUTH in progress: how many more base64 lines to take before 235.
    let mut smtp_auth_lines = 0u8;
    // An IMAP AUTHENTICATE in progress: its tag.
    let mut imap_auth_tag: Option<String> = None;
    loop {
        let mut line = Vec::new();
        if lines.read_until(b'\n', &mut line).await? == 0 {
            return Ok(());
        }
        if recorded_here < MAX_RECORDED {
            recorded_here += line.len();
            record.lock().unwrap().bytes.extend_from_slice(&line);
        }
        let text = String::from_utf8_lossy(&line).trim_end().to_owned();
        let reply = match speaks {
            Speaks::Imap => imap_reply(&text, &mut imap_auth_tag),
            Speaks::Smtp => smtp_reply(&text, &mut smtp_auth_lines),
        };
        write.write_all(reply.text.as_bytes()).await?;
        if reply.close {
            let _ = write.shutdown().await;
            return Ok(());
        }
    }
}

struct Reply {
    text: String,
    close: bool,
}

fn reply(text: impl Into<String>) -> Reply {
    Reply {
        text: text.into(),
        close: false,
    }
}

fn imap_reply(line: &str, auth_tag: &mut Option<String>) -> Reply {
    if let Some(tag) = auth_tag.take() {
        return reply(format!("{tag} OK authenticated\r\n"));
    }
    // A literal's announcement: ask for it (it arrives as the next line(s)).
    if line.ends_with('}') && line.contains('{') {
        return reply("+ go ahead\r\n");
    }
    let mut words = line.splitn(3, ' ');
    let tag = words.next().unwrap_or("*").to_owned();
    let command = words.next().unwrap_or("").to_ascii_uppercase();
    match command.as_str() {
        "CAPABILITY" => reply(format!(
            "* CAPABILITY IMAP4rev1 AUTH=PLAIN AUTH=LOGIN\r\n{tag} OK done\r\n"
        )),
        "AUTHENTICATE" => {
            if words.next().is_some_and(|rest| rest.contains(' ')) {
                reply(format!("{tag} OK authenticated\r\n"))
            } else {
                *auth_tag = Some(tag);
                reply("+ \r\n")
            }
        }
        "LOGIN" => reply(format!("{tag} OK logged in\r\n")),
        "LOGOUT" => Reply {
            text: format!("* BYE recorder\r\n{tag} OK bye\r\n"),
            close: true,
        },
        _ => reply(format!("{tag} OK done\r\n")),
    }
}

fn smtp_reply(line: &str, auth_lines: &mut u8) -> Reply {
    if *auth_lines > 0 {
        *auth_lines -= 1;
        return match *auth_lines {
            0 => reply("235 2.7.0 authenticated\r\n"),
            _ => reply("334 UGFzc3dvcmQ6\r\n"),
        };
    }
    let upper = line.to_ascii_uppercase();
    let words: Vec<&str> = upper.split_whitespace().collect();
    match words.as_slice() {
        ["EHLO", ..] | ["HELO", ..] => {
            reply("250-recorder\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n")
        }
        ["AUTH", "PLAIN"] => {
            *auth_lines = 1;
            reply("334 \r\n")
        }
        ["AUTH", "PLAIN", _] => reply("235 2.7.0 authenticated\r\n"),
        ["AUTH", "LOGIN"] => {
            *auth_lines = 2;
            reply("334 VXNlcm5hbWU6\r\n")
        }
        ["AUTH", "LOGIN", _] => {
            *auth_lines = 1;
            reply("334 UGFzc3dvcmQ6\r\n")
        }
        ["STARTTLS", ..] => reply("454 4.7.0 TLS not available\r\n"),
        ["QUIT", ..] => Reply {
            text: "221 2.0.0 bye\r\n".into(),
            close: true,
        },
        _ => reply("250 2.0.0 ok\r\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_found_plain_or_in_base64() {
        let plain = b"a1 LOGIN \"ann@x.test\" \"s3cret-pw\"\r\n";
        assert!(holds_secret(plain, "s3cret-pw"));
        let auth = base64::engine::general_purpose::STANDARD.encode("\0ann@x.test\0s3cret-pw");
        assert!(holds_secret(
            format!("AUTH PLAIN {auth}\r\n").as_bytes(),
            "s3cret-pw"
        ));
        assert!(!holds_secret(b"EHLO host\r\nQUIT\r\n", "s3cret-pw"));
    }
}
