//! A real IMAP mailbox of a test's own on the stack's Dovecot: a fresh user added to its
//! passwd-file, filled over IMAP APPEND, changed by a second client, and read back to compare
//! with Mailroom's message index.

use std::collections::BTreeSet;
use std::io::Write as _;

use async_imap::Session;
use futures::StreamExt;
use mailroom_platform::types::MailboxId;
use sqlx::PgPool;
use tokio::net::TcpStream;
use uuid::Uuid;

pub type Imap = Session<TcpStream>;

/// One message as both sides must agree on it: folder, UID, system flags (bits as the index
/// keeps them), size.
pub type MessageKey = (String, u32, i16, u32);

/// A Dovecot user of this test's own.
#[derive(Debug, Clone)]
pub struct MailUser {
    pub username: String,
    pub password: String,
    pub host: String,
    pub port: u16,
}

/// Adds a fresh user to the stack's Dovecot (it re-reads its passwd-file) and returns it.
pub fn new_mail_user() -> MailUser {
    let addr = std::env::var("MAILROOM_IMAP_ADDR").expect("MAILROOM_IMAP_ADDR");
    let (host, port) = addr.rsplit_once(':').expect("host:port");
    let username = format!("t{}@sync.test", &Uuid::new_v4().simple().to_string()[..12]);
    let password = format!("pw-{}", Uuid::new_v4().simple());
    with_users_file(|file| {
        file.write_all(format!("{username}:{{PLAIN}}{password}::::::\n").as_bytes())
            .expect("add a Dovecot user");
    });
    MailUser {
        username,
        password,
        host: host.to_owned(),
        port: port.parse().expect("port"),
    }
}

/// Runs `f` on Dovecot's users file (opened to append) under an exclusive lock, so tests
/// adding users and changing passwords in parallel do not lose each other's lines.
fn with_users_file<T>(f: impl FnOnce(&mut std::fs::File) -> T) -> T {
    use std::os::fd::AsRawFd as _;
    let users = std::env::var("MAILROOM_DOVECOT_USERS")
        .expect("MAILROOM_DOVECOT_USERS is not set: run the tests with .ci/test");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(format!("{users}.lock"))
        .expect("open the users file's lock");
    // SAFETY: flock on a descriptor this function owns for the duration of the call.
    let locked = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(locked, 0, "lock the Dovecot users file");
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&users)
        .expect("open the Dovecot users file");
    let out = f(&mut file);
    // SAFETY: as above; closing the lock file would release it too.
    unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_UN) };
    out
}

impl MailUser {
    /// Changes this user's password on the server (the registry still has the old one), and
    /// waits until Dovecot refuses the old one (it looks at its users file about once a
    /// second).
    pub async fn set_server_password(&mut self, password: &str) {
        let old = self.password.clone();
        self.write_password(password);
        for _ in 0..100 {
            let tcp = TcpStream::connect((self.host.as_str(), self.port))
                .await
                .expect("Dovecot is listening");
            let mut client = async_imap::Client::new(tcp);
            let _greeting = client.read_response().await;
            match client.login(&self.username, &old).await {
                Ok(mut session) => {
                    let _ = session.logout().await;
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(_) => return,
            }
        }
        panic!(
            "Dovecot kept accepting the old password of {}",
            self.username
        );
    }

    fn write_password(&mut self, password: &str) {
        let users = std::env::var("MAILROOM_DOVECOT_USERS").expect("MAILROOM_DOVECOT_USERS");
        let prefix = format!("{}:", self.username);
        with_users_file(|_| {
            let text = std::fs::read_to_string(&users).expect("read the users file");
            let changed: String = text
                .lines()
                .map(|line| {
                    if line.starts_with(&prefix) {
                        format!("{}:{{PLAIN}}{password}::::::\n", self.username)
                    } else {
                        format!("{line}\n")
                    }
                })
                .collect();
            // Replaced whole, so Dovecot never reads half a file.
            let temp = format!("{users}.{}", Uuid::new_v4().simple());
            std::fs::write(&temp, changed).expect("write the users file");
            std::fs::rename(&temp, &users).expect("replace the users file");
        });
        self.password = password.to_owned();
    }

    /// A plain IMAP session as this user (retrying while Dovecot picks the user up).
    pub async fn session(&self) -> Imap {
        let mut last = String::new();
        for _ in 0..50 {
            let tcp = TcpStream::connect((self.host.as_str(), self.port))
                .await
                .expect("Dovecot is listening");
            let mut client = async_imap::Client::new(tcp);
            let _greeting = client.read_response().await;
            match client.login(&self.username, &self.password).await {
                Ok(session) => return session,
                Err((e, _)) => last = e.to_string(),
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("cannot log in as {}: {last}", self.username);
    }
}

/// Appends sample messages `from..to` to `folder`; every third is seen, every seventh flagged.
pub async fn append_samples(imap: &mut Imap, folder: &str, from: usize, to: usize, rcpt: &str) {
    for n in from..to {
        let (raw, date) = mailroom_sync::demo::message(n, rcpt);
        let mut flags = Vec::new();
        if n % 3 == 0 {
            flags.push("\\Seen");
        }
        if n % 7 == 0 {
            flags.push("\\Flagged");
        }
        let flags = format!("({})", flags.join(" "));
        imap.append(
            folder,
            Some(&flags),
            Some(&mailroom_sync::demo::imap_date(date)),
            &raw,
        )
        .await
        .expect("APPEND");
    }
}

fn bits(fetch: &async_imap::types::Fetch) -> i16 {
    use async_imap::types::Flag;
    fetch.flags().fold(0, |acc, f| {
        acc | match f {
            Flag::Seen => 1,
            Flag::Answered => 2,
            Flag::Flagged => 4,
            Flag::Deleted => 8,
            Flag::Draft => 16,
            _ => 0,
        }
    })
}

/// Every message on the server, as the index should hold it.
pub async fn server_messages(imap: &mut Imap) -> BTreeSet<MessageKey> {
    let mut folders = Vec::new();
    {
        let mut names = imap.list(Some(""), Some("*")).await.expect("LIST");
        while let Some(name) = names.next().await {
            folders.push(name.expect("LIST entry").name().to_owned());
        }
    }
    let mut out = BTreeSet::new();
    for folder in folders {
        let selected = imap.examine(&folder).await.expect("EXAMINE");
        if selected.exists == 0 {
            continue;
        }
        let mut fetches = imap
            .uid_fetch("1:*", "(UID FLAGS RFC822.SIZE)")
            .await
            .expect("UID FETCH");
        while let Some(fetch) = fetches.next().await {
            let fetch = fetch.expect("FETCH entry");
            out.insert((
                folder.clone(),
                fetch.uid.expect("UID"),
                bits(&fetch),
                fetch.size.expect("size"),
            ));
        }
    }
    out
}

/// Every message the index holds for `mailbox`; panics on a duplicate.
pub async fn indexed_messages(pool: &PgPool, mailbox: MailboxId) -> BTreeSet<MessageKey> {
    let rows: Vec<(String, i32, i16, i32)> = sqlx::query_as(
        "SELECT f.name, m.uid, m.flags, m.size FROM messages m JOIN folders f ON f.id = m.folder_id \
         WHERE m.mailbox_id = $1",
    )
    .bind(mailbox)
    .fetch_all(pool)
    .await
    .expect("read the index");
    let count = rows.len();
    let set: BTreeSet<MessageKey> = rows
        .into_iter()
        .map(|(f, uid, flags, size)| {
            (
                f,
                mailroom_sync::domain::uid_from_db(uid),
                flags,
                size as u32,
            )
        })
        .collect();
    assert_eq!(set.len(), count, "the index holds a message twice");
    set
}
