//! A scripted hostile IMAP server for tests: a real TCP listener on 127.0.0.1 speaking plain
//! IMAP, which greets, accepts any LOGIN (and counts them) and then misbehaves as its
//! [`Attack`] says, the way a mail server a user points Mailroom at may: a 2 GiB literal,
//! endless untagged lines, a million folders, poisonous folder names, a hundred million UIDs,
//! a 5 MB subject, a line every 59 s, a line that is no IMAP.
//!
//! Whatever is large is streamed from a small buffer as it is written (the server allocates
//! nothing of its size, so the test process's memory is the client's), and stops when the
//! client hangs up. Also here: the test process's memory ([`Memory`], from /proc/self/status).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// How the server misbehaves once logged in.
#[derive(Debug, Clone)]
pub enum Attack {
    /// None: INBOX holds `messages` ordinary messages (for bodies and for counting logins).
    Polite { messages: u32 },
    /// Every FETCH of a message answers with a literal of `bytes` (the subject's, or the
    /// body's), streamed; with `then_garbage`, its bytes are 0xFF and what follows it is no
    /// IMAP (async-imap's report of such a response copies the literal several times over).
    Literal { bytes: u64, then_garbage: bool },
    /// LIST is answered with `* OK` lines, never ending.
    EndlessUntagged,
    /// LIST names INBOX and `count` folders more.
    Folders { count: u64 },
    /// LIST names INBOX (with 3 messages) and these names, each sent as a literal.
    FolderNames(Vec<Vec<u8>>),
    /// INBOX claims 5 messages but shows none, so the sync lists its UIDs: UID SEARCH (one
    /// line) and `UID FETCH 1:* (UID)` (a line each) name `count` UIDs, streamed.
    Uids { count: u64 },
    /// INBOX's one message has a subject of `bytes`, as a literal or quoted (one long line);
    /// it begins with an RFC 2047 word that is never closed and hides a `=?` every 4 bytes.
    Subject { bytes: u64, literal: bool },
    /// A FETCH is answered with one untagged line now and one every `every`, never ending.
    Drip { every: Duration },
    /// LIST is answered with a line of `bytes` that is no IMAP.
    Unparsable { bytes: usize },
}

/// A running hostile server; it stops when dropped.
pub struct HostileImap {
    pub addr: SocketAddr,
    logins: Arc<AtomicU64>,
    streamed: Arc<AtomicU64>,
    stop: CancellationToken,
}

impl Drop for HostileImap {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl HostileImap {
    /// Listens on a free loopback port and answers every connection with `attack`.
    pub async fn start(attack: Attack) -> HostileImap {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let logins = Arc::new(AtomicU64::new(0));
        let streamed = Arc::new(AtomicU64::new(0));
        let stop = CancellationToken::new();
        let server = Connection {
            attack,
            logins: logins.clone(),
            streamed: streamed.clone(),
        };
        let stopped = stop.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    _ = stopped.cancelled() => return,
                };
                let Ok((socket, _)) = accepted else { continue };
                let server = server.clone();
                let stopped = stopped.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = server.serve(socket) => {}
                        _ = stopped.cancelled() => {}
                    }
                });
            }
        });
        HostileImap {
            addr,
            logins,
            streamed,
            stop,
        }
    }

    pub fn host(&self) -> String {
        self.addr.ip().to_string()
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// LOGINs accepted so far.
    pub fn logins(&self) -> u64 {
        self.logins.load(Ordering::SeqCst)
    }

    /// Bytes of attack data written so far (what the client was offered).
    pub fn streamed(&self) -> u64 {
        self.streamed.load(Ordering::SeqCst)
    }
}

#[derive(Clone)]
struct Connection {
    attack: Attack,
    logins: Arc<AtomicU64>,
    streamed: Arc<AtomicU64>,
}

/// What a write to a client that hung up returns: the connection is over.
type Io = std::io::Result<()>;

const DATE: &str = "01-Jan-2024 10:00:00 +0000";
const CHUNK: usize = 64 * 1024;

impl Connection {
    async fn serve(self, socket: TcpStream) {
        let _ = socket.set_nodelay(true);
        let (read, mut write) = socket.into_split();
        let mut lines = BufReader::new(read);
        if write
            .write_all(b"* OK [CAPABILITY IMAP4rev1] hostile IMAP ready\r\n")
            .await
            .is_err()
        {
            return;
        }
        let mut line = String::new();
        loop {
            line.clear();
            match lines.read_line(&mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if self.answer(&mut write, line.trim_end()).await.is_err() {
                return;
            }
        }
    }

    /// INBOX's message count as STATUS and EXAMINE give it.
    fn inbox_messages(&self) -> u32 {
        match &self.attack {
            Attack::Polite { messages } => *messages,
            Attack::FolderNames(_) => 3,
            Attack::Uids { .. } => 5,
            Attack::Literal { .. } | Attack::Subject { .. } | Attack::Drip { .. } => 1,
            _ => 0,
        }
    }

    async fn answer(&self, w: &mut OwnedWriteHalf, line: &str) -> Io {
        let mut words = line.split(' ');
        let tag = words.next().unwrap_or("*");
        let mut command = words.next().unwrap_or("").to_ascii_uppercase();
        if command == "UID" {
            command = format!("UID {}", words.next().unwrap_or("").to_ascii_uppercase());
        }
        let args: Vec<&str> = words.collect();
        let n = self.inbox_messages();
        match command.as_str() {
            "LOGIN" => {
                self.logins.fetch_add(1, Ordering::SeqCst);
                send(w, &format!("{tag} OK LOGIN done\r\n")).await
            }
            "CAPABILITY" => send(w, &format!("* CAPABILITY IMAP4rev1\r\n{tag} OK done\r\n")).await,
            "LOGOUT" => {
                send(w, &format!("* BYE bye\r\n{tag} OK done\r\n")).await?;
                Err(std::io::ErrorKind::ConnectionAborted.into())
            }
            "LIST" => self.list(w, tag).await,
            "STATUS" => {
                let name = args.first().copied().unwrap_or("INBOX");
                let messages = if name.trim_matches('"') == "INBOX" {
                    n
                } else {
                    0
                };
                send(
                    w,
                    &format!(
                        "* STATUS {name} (MESSAGES {messages} UIDNEXT {} UIDVALIDITY 7 UNSEEN 0)\r\n{tag} OK done\r\n",
                        messages + 1
                    ),
                )
                .await
            }
            "EXAMINE" | "SELECT" => {
                let name = args.first().copied().unwrap_or("INBOX");
                let exists = if name.trim_matches('"') == "INBOX" {
                    n
                } else {
                    0
                };
                send(
                    w,
                    &format!(
                        "* {exists} EXISTS\r\n* FLAGS (\\Seen)\r\n* OK [UIDVALIDITY 7] ok\r\n* OK [UIDNEXT {}] ok\r\n{tag} OK [READ-ONLY] done\r\n",
                        exists + 1
                    ),
                )
                .await
            }
            "UID SEARCH" | "SEARCH" => match self.attack {
                Attack::Uids { count } => {
                    self.stream(w, b"* SEARCH", count, |i, out| {
                        out.extend_from_slice(format!(" {i}").as_bytes())
                    })
                    .await?;
                    send(w, &format!("\r\n{tag} OK done\r\n")).await
                }
                _ => {
                    let uids: String = (1..=n).map(|u| format!(" {u}")).collect();
                    send(w, &format!("* SEARCH{uids}\r\n{tag} OK done\r\n")).await
                }
            },
            "UID FETCH" | "FETCH" => self.fetch(w, tag, &args).await,
            _ => send(w, &format!("{tag} OK done\r\n")).await,
        }
    }

    async fn list(&self, w: &mut OwnedWriteHalf, tag: &str) -> Io {
        send(w, "* LIST () \"/\" \"INBOX\"\r\n").await?;
        match &self.attack {
            Attack::EndlessUntagged => loop {
                let mut out = Vec::with_capacity(CHUNK + 64);
                while out.len() < CHUNK {
                    out.extend_from_slice(b"* OK still listing\r\n");
                }
                self.write_counted(w, &out).await?;
            },
            Attack::Folders { count } => {
                self.stream(w, b"", *count, |i, out| {
                    out.extend_from_slice(format!("* LIST () \"/\" \"f{i:08}\"\r\n").as_bytes())
                })
                .await?;
            }
            Attack::FolderNames(names) => {
                for name in names {
                    send(w, &format!("* LIST () \"/\" {{{}}}\r\n", name.len())).await?;
                    self.write_counted(w, name).await?;
                    send(w, "\r\n").await?;
                }
            }
            Attack::Unparsable { bytes } => {
                let mut out = b"* LIST (\\Weird) \"/\" ".to_vec();
                while out.len() < *bytes {
                    out.extend_from_slice(b"\x01)(\"\\ not IMAP ");
                }
                out.extend_from_slice(b"\r\n");
                self.write_counted(w, &out).await?;
            }
            _ => {}
        }
        send(w, &format!("{tag} OK LIST done\r\n")).await
    }

    async fn fetch(&self, w: &mut OwnedWriteHalf, tag: &str, args: &[&str]) -> Io {
        let set = args.first().copied().unwrap_or("");
        let what = args[1..].join(" ").to_ascii_uppercase();
        let n = self.inbox_messages();
        if what == "(UID)" {
            if let Attack::Uids { count } = self.attack {
                self.stream(w, b"", count, |i, out| {
                    out.extend_from_slice(format!("* {i} FETCH (UID {i})\r\n").as_bytes())
                })
                .await?;
                return send(w, &format!("{tag} OK done\r\n")).await;
            }
        }
        let wants_body = what.contains("BODY");
        let wants_envelope = what.contains("ENVELOPE");
        match (&self.attack, wants_body || wants_envelope) {
            (
                Attack::Literal {
                    bytes,
                    then_garbage,
                },
                true,
            ) => {
                let field = if wants_body {
                    "BODY[]"
                } else {
                    "ENVELOPE (\"date\""
                };
                send(w, &format!("* 1 FETCH (UID 1 {field} {{{bytes}}}\r\n")).await?;
                let filler = if *then_garbage { 0xFF } else { b'a' };
                self.filled(w, *bytes, filler).await?;
                if *then_garbage {
                    send(w, "\x01\x02 no IMAP here\r\n").await?;
                }
                send(w, &format!(")\r\n{tag} OK done\r\n")).await
            }
            (Attack::Subject { bytes, literal }, true) if wants_envelope => {
                let head = format!(
                    "* 1 FETCH (UID 1 FLAGS () RFC822.SIZE 100 INTERNALDATE \"{DATE}\" ENVELOPE (\"Mon, 1 Jan 2024 10:00:00 +0000\" "
                );
                send(w, &head).await?;
                match literal {
                    true => send(w, &format!("{{{bytes}}}\r\n")).await?,
                    false => send(w, "\"").await?,
                }
                let mut sent = 0u64;
                let mut out = Vec::with_capacity(CHUNK + 16);
                out.extend_from_slice(b"=?utf-8?q?");
                while sent < *bytes {
                    while out.len() < CHUNK {
                        out.extend_from_slice(b"a=?b");
                    }
                    let take = out
                        .len()
                        .min(usize::try_from(bytes - sent).unwrap_or(CHUNK));
                    self.write_counted(w, &out[..take]).await?;
                    sent += take as u64;
                    out.clear();
                }
                if !literal {
                    send(w, "\"").await?;
                }
                send(
                    w,
                    &format!(
                        " {} NIL NIL NIL \"<1@hostile.test>\"))\r\n{tag} OK done\r\n",
                        addresses()
                    ),
                )
                .await
            }
            (Attack::Drip { every }, _) => loop {
                self.write_counted(w, b"* 1 FETCH (FLAGS (\\Seen))\r\n")
                    .await?;
                tokio::time::sleep(*every).await;
            },
            (Attack::Uids { .. }, _) => send(w, &format!("{tag} OK done\r\n")).await,
            _ => {
                let from = set
                    .split(':')
                    .next()
                    .and_then(|u| u.parse::<u32>().ok())
                    .unwrap_or(1)
                    .max(1);
                let mut out = String::new();
                for uid in from..=n {
                    if wants_body {
                        let raw = polite_message(uid);
                        out.push_str(&format!(
                            "* {uid} FETCH (UID {uid} BODY[] {{{}}}\r\n{raw})\r\n",
                            raw.len()
                        ));
                    } else if wants_envelope {
                        out.push_str(&format!(
                            "* {uid} FETCH (UID {uid} FLAGS (\\Seen) RFC822.SIZE {} INTERNALDATE \"{DATE}\" ENVELOPE (\"Mon, 1 Jan 2024 10:00:00 +0000\" \"Message {uid}\" {} NIL NIL NIL \"<{uid}@hostile.test>\"))\r\n",
                            polite_message(uid).len(),
                            addresses()
                        ));
                    } else {
                        out.push_str(&format!("* {uid} FETCH (UID {uid} FLAGS (\\Seen))\r\n"));
                    }
                }
                out.push_str(&format!("{tag} OK done\r\n"));
                send(w, &out).await
            }
        }
    }

    /// Writes `head` and then `count` items as `item` formats them, a chunk at a time.
    async fn stream(
        &self,
        w: &mut OwnedWriteHalf,
        head: &[u8],
        count: u64,
        item: impl Fn(u64, &mut Vec<u8>),
    ) -> Io {
        let mut out = Vec::with_capacity(CHUNK + 128);
        out.extend_from_slice(head);
        for i in 1..=count {
            item(i, &mut out);
            if out.len() >= CHUNK {
                self.write_counted(w, &out).await?;
                out.clear();
            }
        }
        self.write_counted(w, &out).await
    }

    async fn filled(&self, w: &mut OwnedWriteHalf, bytes: u64, filler: u8) -> Io {
        let chunk = vec![filler; CHUNK];
        let mut left = bytes;
        while left > 0 {
            let take = usize::try_from(left).unwrap_or(CHUNK).min(CHUNK);
            self.write_counted(w, &chunk[..take]).await?;
            left -= take as u64;
        }
        Ok(())
    }

    async fn write_counted(&self, w: &mut OwnedWriteHalf, bytes: &[u8]) -> Io {
        w.write_all(bytes).await?;
        self.streamed
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

async fn send(w: &mut OwnedWriteHalf, text: &str) -> Io {
    w.write_all(text.as_bytes()).await
}

/// An ENVELOPE's from, sender, reply-to and to.
fn addresses() -> &'static str {
    "((\"Ann\" NIL \"ann\" \"hostile.test\")) ((\"Ann\" NIL \"ann\" \"hostile.test\")) ((\"Ann\" NIL \"ann\" \"hostile.test\")) ((\"Bob\" NIL \"bob\" \"hostile.test\"))"
}

/// An ordinary message of the polite server.
pub fn polite_message(uid: u32) -> String {
    format!(
        "From: Ann <ann@hostile.test>\r\nTo: Bob <bob@hostile.test>\r\nSubject: Message {uid}\r\nMessage-ID: <{uid}@hostile.test>\r\n\r\nBody of message {uid}.\r\n"
    )
}

/// The test process's memory, from /proc/self/status, in KiB.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    /// Resident now.
    pub rss_kib: u64,
    /// The most resident since the process started, or since [`Memory::reset_peak`].
    pub peak_kib: u64,
}

impl Memory {
    pub fn now() -> Memory {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Memory {
            rss_kib: field("VmRSS:"),
            peak_kib: field("VmHWM:"),
        }
    }

    /// Starts the peak afresh from now (Linux: `5` to /proc/self/clear_refs); false if the
    /// kernel does not allow it (the peak then counts from the process's start).
    pub fn reset_peak() -> bool {
        std::fs::write("/proc/self/clear_refs", "5").is_ok()
    }
}
