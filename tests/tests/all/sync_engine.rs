//! The sync engine against the real Dovecot: the index must equal the server after a first
//! sync, after new mail, flag changes, expunges and a UIDVALIDITY change, and after a sync
//! that was killed half-way; a sync with nothing new fetches nothing; a wrong password is
//! an authentication failure that names no secret.

use std::time::Duration;

use mailroom_mail::{Login, Security};
use mailroom_platform::types::{MailboxId, OrgId, UserId};
use mailroom_sync::engine::{Engine, EngineOptions};
use mailroom_sync::error::{FailureKind, RunError};
use mailroom_tests::mailstore::{
    append_samples, indexed_messages, new_mail_user, server_messages, MailUser,
};
use mailroom_tests::sync_database;
use mailroom_tests::StackEnv;
use secrecy::SecretString;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

fn engine(pool: &PgPool, batch: usize) -> Engine {
    Engine::new(
        pool.clone(),
        EngineOptions {
            batch,
            connect_timeout: Duration::from_secs(10),
            io_timeout: Duration::from_secs(30),
            policy: mailroom_mail::dial::Policy::local(),
        },
    )
}

fn login(user: &MailUser) -> Login {
    Login {
        host: user.host.clone(),
        port: user.port,
        security: Security::None,
        username: user.username.clone(),
        password: SecretString::from(user.password.clone()),
    }
}

async fn unseen_outside_special(
    imap: &mut mailroom_tests::mailstore::Imap,
    folders: &[&str],
) -> i64 {
    let mut total = 0;
    for f in folders {
        let status = imap.status(f, "(UNSEEN)").await.expect("STATUS");
        total += i64::from(status.unseen.unwrap_or(0));
    }
    total
}

#[tokio::test]
async fn the_index_follows_the_server_through_new_mail_flags_expunges_and_uidvalidity() {
    let pool = sync_database().await;
    let engine = engine(&pool, 50);
    let user = new_mail_user();
    let mut imap = user.session().await;
    imap.create("Projects").await.expect("CREATE");
    imap.create("Archive").await.expect("CREATE");
    append_samples(&mut imap, "INBOX", 0, 120, &user.username).await;
    append_samples(&mut imap, "Sent", 200, 230, &user.username).await;
    append_samples(&mut imap, "Projects", 300, 325, &user.username).await;
    append_samples(&mut imap, "Trash", 400, 405, &user.username).await;
    append_samples(&mut imap, "Archive", 500, 510, &user.username).await;
    let mailbox = MailboxId::new();
    let stop = CancellationToken::new();

    // The first sync: everything, as the server has it.
    let first = engine
        .sync(mailbox, &login(&user), false, &stop)
        .await
        .expect("first sync");
    let server = server_messages(&mut imap).await;
    assert_eq!(server.len(), 190);
    assert_eq!(indexed_messages(&pool, mailbox).await, server);
    assert_eq!(first.new_messages, 190);
    assert_eq!(first.message_count, 190);
    // Unread counts leave Sent and Trash (special-use folders) out.
    let unread = unseen_outside_special(
        &mut imap,
        &["INBOX", "Projects", "Archive", "Drafts", "Junk"],
    )
    .await;
    assert!(unread > 0);
    assert_eq!(first.unread_count, unread);
    let sizes: i64 = server.iter().map(|m| i64::from(m.3)).sum();
    // Dovecot's QUOTA answers in KiB.
    assert!(
        (first.disk_bytes - sizes).abs() <= 1024,
        "disk {} vs sizes {sizes}",
        first.disk_bytes
    );

    // Nothing changed: every folder ends at its STATUS.
    let again = engine
        .sync(mailbox, &login(&user), false, &stop)
        .await
        .expect("no-change sync");
    assert_eq!(again.unchanged_folders, again.folders, "{again:?}");
    assert_eq!(again.new_messages + again.flag_changes + again.expunged, 0);
    // The disk figure the first sync read (and kept) is reported again, not asked.
    assert!(first.quota_asked);
    assert!(!again.quota_asked, "{again:?}");
    assert_eq!(again.disk_bytes, first.disk_bytes);

    // New mail, flag changes, expunges, and a folder made again (a new UIDVALIDITY).
    append_samples(&mut imap, "INBOX", 120, 129, &user.username).await;
    // One with keywords beside the system flags.
    let (raw, _) = mailroom_sync::demo::message(129, &user.username);
    imap.append("INBOX", Some("(\\Seen $Label1 Work)"), None, &raw)
        .await
        .expect("APPEND");
    imap.select("INBOX").await.expect("SELECT");
    {
        let stream = imap
            .uid_store("2:5", "+FLAGS (\\Seen \\Answered)")
            .await
            .expect("STORE");
        let _: Vec<_> = futures::StreamExt::collect(stream).await;
    }
    {
        let stream = imap
            .uid_store("7", "-FLAGS (\\Flagged)")
            .await
            .expect("STORE");
        let _: Vec<_> = futures::StreamExt::collect(stream).await;
    }
    imap.select("Projects").await.expect("SELECT");
    {
        let stream = imap
            .uid_store("1,4,9", "+FLAGS (\\Deleted)")
            .await
            .expect("STORE");
        let _: Vec<_> = futures::StreamExt::collect(stream).await;
    }
    {
        let stream = imap.expunge().await.expect("EXPUNGE");
        let _: Vec<_> = futures::StreamExt::collect(stream).await;
    }
    imap.select("INBOX").await.expect("SELECT");
    imap.delete("Archive").await.expect("DELETE");
    imap.create("Archive").await.expect("CREATE");
    append_samples(&mut imap, "Archive", 600, 604, &user.username).await;

    let changed = engine
        .sync(mailbox, &login(&user), false, &stop)
        .await
        .expect("sync after changes");
    let server = server_messages(&mut imap).await;
    assert_eq!(indexed_messages(&pool, mailbox).await, server);
    assert_eq!(changed.new_messages, 14, "{changed:?}");
    assert_eq!(changed.expunged, 3, "{changed:?}");
    assert!(changed.flag_changes >= 4, "{changed:?}");
    // The disk figure follows the changes (asked again, not the one kept).
    assert!(changed.quota_asked);
    let sizes: i64 = server.iter().map(|m| i64::from(m.3)).sum();
    assert!(
        (changed.disk_bytes - sizes).abs() <= 1024,
        "disk {} vs sizes {sizes}",
        changed.disk_bytes
    );
    let (keywords,): (Option<String>,) = sqlx::query_as(
        "SELECT m.keywords FROM messages m JOIN folders f ON f.id = m.folder_id \
         WHERE m.mailbox_id = $1 AND f.name = 'INBOX' ORDER BY m.uid DESC LIMIT 1",
    )
    .bind(mailbox)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(keywords.as_deref(), Some("$Label1 Work"));
    // The remade folder holds only its 4 new messages, UIDs from 1 again.
    let archive: Vec<u32> = server
        .iter()
        .filter(|m| m.0 == "Archive")
        .map(|m| m.1)
        .collect();
    assert_eq!(archive, vec![1, 2, 3, 4]);

    // Rows missing below the checkpoint (a fetch cut off earlier, whose checkpoint was
    // therefore not saved) are fetched again: the index repairs itself.
    sqlx::query(
        "DELETE FROM messages WHERE (mailbox_id, folder_id, uid) IN \
         (SELECT mailbox_id, folder_id, uid FROM messages WHERE mailbox_id = $1 ORDER BY folder_id, uid LIMIT 5)",
    )
    .bind(mailbox)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("UPDATE folders SET messages = -1 WHERE mailbox_id = $1")
        .bind(mailbox)
        .execute(&pool)
        .await
        .unwrap();
    let repaired = engine
        .sync(mailbox, &login(&user), false, &stop)
        .await
        .expect("repairing sync");
    assert_eq!(
        indexed_messages(&pool, mailbox).await,
        server_messages(&mut imap).await
    );
    assert_eq!(repaired.new_messages, 5, "{repaired:?}");
    assert_eq!(repaired.expunged, 0, "{repaired:?}");
    let _ = imap.logout().await;
}

#[tokio::test]
async fn a_sync_killed_half_way_is_finished_by_the_next_without_loss_or_duplicates() {
    let pool = sync_database().await;
    let user = new_mail_user();
    let mut imap = user.session().await;
    append_samples(&mut imap, "INBOX", 0, 1500, &user.username).await;
    let mailbox = MailboxId::new();

    // Small batches so the kill lands between commits.
    let first = engine(&pool, 25);
    let task = {
        let login = login(&user);
        tokio::spawn(async move {
            let stop = CancellationToken::new();
            first.sync(mailbox, &login, false, &stop).await
        })
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM messages WHERE mailbox_id = $1")
            .bind(mailbox)
            .fetch_one(&pool)
            .await
            .unwrap();
        if n >= 200 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first sync made no progress"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Killed: no cleanup, whatever was in flight is lost with it.
    task.abort();
    let _ = task.await;
    let partial = indexed_messages(&pool, mailbox).await.len();
    assert!(
        partial < 1500,
        "the sync finished before it could be killed ({partial})"
    );

    let second = engine(&pool, 200)
        .sync(mailbox, &login(&user), false, &CancellationToken::new())
        .await
        .expect("the second sync");
    let server = server_messages(&mut imap).await;
    assert_eq!(server.len(), 1500);
    assert_eq!(indexed_messages(&pool, mailbox).await, server);
    assert_eq!(
        second.new_messages as usize,
        1500 - partial,
        "the second sync fetched again what was committed"
    );
    let _ = imap.logout().await;
}

#[tokio::test]
async fn a_wrong_password_is_an_authentication_failure_that_names_no_secret() {
    let pool = sync_database().await;
    let user = new_mail_user();
    // The user exists once Dovecot has read it.
    let _ = user.session().await.logout().await;
    let mut wrong = login(&user);
    // Letters no generated address holds (addresses carry hex ids: "4711" once matched one).
    wrong.password = SecretString::from("not-the-password-xyzzy".to_owned());
    let err = engine(&pool, 10)
        .sync(MailboxId::new(), &wrong, false, &CancellationToken::new())
        .await
        .expect_err("a wrong password fails");
    match err {
        RunError::Failed(f) => {
            assert_eq!(f.kind, FailureKind::AuthFailed, "{f:?}");
            assert!(
                f.message.contains("update the mailbox's password"),
                "{}",
                f.message
            );
            assert!(!f.message.contains("xyzzy"), "{}", f.message);
        }
        other => panic!("expected an authentication failure, got {other:?}"),
    }
    // A closed port is unreachable, not an authentication failure.
    let mut closed = login(&user);
    closed.port = 1;
    let err = engine(&pool, 10)
        .sync(MailboxId::new(), &closed, false, &CancellationToken::new())
        .await
        .expect_err("nothing listens on port 1");
    assert!(
        matches!(err, RunError::Failed(ref f) if f.kind == FailureKind::Unreachable),
        "{err:?}"
    );
}

#[tokio::test]
async fn new_connections_to_one_server_are_limited_across_workers() {
    let env = StackEnv::load();
    let redis = mailroom_platform::redis::connect(&SecretString::from(env.redis_url.clone()))
        .await
        .expect("redis");
    // Two workers' limiters over the same Redis: one budget per server between them.
    let limit = |name| {
        mailroom_platform::redis::RateLimiter::new(
            redis.clone(),
            name,
            3,
            Duration::from_secs(2),
            mailroom_platform::redis::WithoutRedis::FallBackLocal { limit: 3 },
        )
    };
    let (a, b) = (
        limit("sync-connects-per-server"),
        limit("sync-connects-per-server"),
    );
    let host = format!("imap-{}.example", Uuid::new_v4().simple());
    let mut allowed = 0;
    for limiter in [&a, &b, &a, &b, &a] {
        if mailroom_sync::connects::connect_allowed(Some(limiter), &host)
            .await
            .is_none()
        {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 3, "the per-server budget is shared");
    let wait = mailroom_sync::connects::connect_allowed(Some(&a), &host.to_uppercase())
        .await
        .expect("over the budget, also spelt in capitals");
    assert!(wait <= Duration::from_secs(3), "{wait:?}");
    // Another server has its own budget.
    let other = format!("other-{}.example", Uuid::new_v4().simple());
    assert!(mailroom_sync::connects::connect_allowed(Some(&a), &other)
        .await
        .is_none());
}

#[tokio::test]
async fn a_failure_with_settings_replaced_meanwhile_does_not_park_the_mailbox() {
    use mailroom_sync::store::schedule::{self as store, Failure, FailureRecorded};
    let pool = sync_database().await;
    let mailbox = MailboxId::new();
    let mut conn = pool.acquire().await.unwrap();
    store::upsert_mailbox(&mut conn, mailbox, OrgId::new(), UserId::new(), false)
        .await
        .unwrap();
    // A sync reads the old password, then the admin fixes it (un-park), then the sync fails.
    let read_old_login = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    store::unpark(&mut conn, mailbox).await.unwrap();
    let later = chrono::Utc::now() + chrono::Duration::minutes(5);
    let failure = |login_read_at| Failure {
        kind: FailureKind::AuthFailed,
        message: "refused",
        park: true,
        next_due: later,
        login_read_at,
    };
    let stale = store::record_failure(&mut conn, mailbox, failure(read_old_login))
        .await
        .unwrap();
    assert_eq!(stale, FailureRecorded::Stale);
    let row = store::schedule_row(&pool, mailbox).await.unwrap().unwrap();
    assert!(!row.parked, "the fixed password must be tried");
    // A failure with the current settings parks it.
    let recorded = store::record_failure(&mut conn, mailbox, failure(chrono::Utc::now()))
        .await
        .unwrap();
    assert_eq!(
        recorded,
        FailureRecorded::Recorded {
            was_parked: false,
            failures: 1
        }
    );
    assert!(
        store::schedule_row(&pool, mailbox)
            .await
            .unwrap()
            .unwrap()
            .parked
    );
}

/// A TCP relay between the engine and the real Dovecot that keeps every command line the
/// engine sends and, `hiding_condstore`, takes CONDSTORE and QRESYNC out of the server's
/// capability lists (a server without them, as far as the engine can tell).
struct Relay {
    addr: std::net::SocketAddr,
    sent: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Relay {
    async fn start(server: (String, u16), hiding_condstore: bool) -> Relay {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sent = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = sent.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let upstream = tokio::net::TcpStream::connect((server.0.as_str(), server.1))
                    .await
                    .expect("Dovecot is listening");
                let (client_read, mut client_write) = client.into_split();
                let (server_read, mut server_write) = upstream.into_split();
                let log = log.clone();
                tokio::spawn(async move {
                    let mut lines = BufReader::new(client_read);
                    let mut line = Vec::new();
                    while lines.read_until(b'\n', &mut line).await.unwrap_or(0) > 0 {
                        log.lock()
                            .unwrap()
                            .push(String::from_utf8_lossy(&line).trim_end().to_owned());
                        if server_write.write_all(&line).await.is_err() {
                            return;
                        }
                        line.clear();
                    }
                });
                tokio::spawn(async move {
                    let mut lines = BufReader::new(server_read);
                    let mut line = Vec::new();
                    while lines.read_until(b'\n', &mut line).await.unwrap_or(0) > 0 {
                        if hiding_condstore && line.windows(10).any(|w| w == b"CAPABILITY") {
                            let text = String::from_utf8_lossy(&line)
                                .replace(" CONDSTORE", "")
                                .replace(" QRESYNC", "");
                            line = text.into_bytes();
                        }
                        if client_write.write_all(&line).await.is_err() {
                            return;
                        }
                        line.clear();
                    }
                });
            }
        });
        Relay { addr, sent, task }
    }

    fn login(&self, user: &MailUser) -> Login {
        Login {
            host: self.addr.ip().to_string(),
            port: self.addr.port(),
            ..login(user)
        }
    }

    /// The command lines sent since the last call (tags and LOGIN's arguments left out).
    fn commands(&self) -> Vec<String> {
        std::mem::take(&mut *self.sent.lock().unwrap())
            .into_iter()
            .map(|line| {
                let command = line.split_once(' ').map(|(_, c)| c).unwrap_or(&line);
                if command.to_ascii_uppercase().starts_with("LOGIN") {
                    "LOGIN".to_owned()
                } else {
                    command.to_owned()
                }
            })
            .collect()
    }
}

/// Whether `commands` lists a folder's every UID or reads its every flag.
fn lists_everything(commands: &[String]) -> bool {
    commands.iter().any(|c| {
        let c = c.to_ascii_uppercase();
        c.starts_with("UID FETCH 1:* (UID)")
            || c.contains("SEARCH")
            || (c.contains("(UID FLAGS)") && !c.contains("CHANGEDSINCE"))
    })
}

async fn store_flags(imap: &mut mailroom_tests::mailstore::Imap, uids: &str, change: &str) {
    let stream = imap.uid_store(uids, change).await.expect("STORE");
    let _: Vec<_> = futures::StreamExt::collect(stream).await;
}

#[tokio::test]
async fn a_flag_change_other_than_seen_and_an_expunge_come_by_condstore_and_qresync_without_a_listing(
) {
    let pool = sync_database().await;
    let user = new_mail_user();
    let mut imap = user.session().await;
    append_samples(&mut imap, "INBOX", 0, 40, &user.username).await;
    let relay = Relay::start((user.host.clone(), user.port), false).await;
    let engine = engine(&pool, 10);
    let mailbox = MailboxId::new();
    let stop = CancellationToken::new();
    engine
        .sync(mailbox, &relay.login(&user), false, &stop)
        .await
        .expect("first sync");
    assert_eq!(
        indexed_messages(&pool, mailbox).await,
        server_messages(&mut imap).await
    );
    let first = relay.commands();
    assert!(
        first.iter().any(|c| c.contains("HIGHESTMODSEQ")),
        "Dovecot has CONDSTORE: {first:?}"
    );

    // Nothing changed: STATUS per folder, nothing fetched, nothing listed.
    let quiet = engine
        .sync(mailbox, &relay.login(&user), false, &stop)
        .await
        .expect("no-change sync");
    let commands = relay.commands();
    assert_eq!(quiet.unchanged_folders, quiet.folders, "{quiet:?}");
    assert_eq!((quiet.listings, quiet.flag_passes), (0, 0), "{quiet:?}");
    assert!(
        !commands
            .iter()
            .any(|c| c.contains("FETCH") || c.contains("EXAMINE") || c.contains("SEARCH")),
        "{commands:?}"
    );

    // \Flagged on one message, \Answered off another: no STATUS figure but HIGHESTMODSEQ moves.
    imap.select("INBOX").await.expect("SELECT");
    store_flags(&mut imap, "5", "+FLAGS (\\Flagged)").await;
    store_flags(&mut imap, "8", "+FLAGS (\\Answered $Important)").await;
    let flagged = engine
        .sync(mailbox, &relay.login(&user), false, &stop)
        .await
        .expect("sync after flag changes");
    let commands = relay.commands();
    assert_eq!(
        indexed_messages(&pool, mailbox).await,
        server_messages(&mut imap).await
    );
    assert_eq!(flagged.flag_changes, 2, "{flagged:?}");
    assert_eq!(
        (flagged.listings, flagged.flag_passes),
        (0, 0),
        "{flagged:?}"
    );
    assert!(
        commands.iter().any(|c| c.contains("CHANGEDSINCE")),
        "{commands:?}"
    );
    assert!(!lists_everything(&commands), "{commands:?}");

    // Three expunged (and one flag changed) by another session: VANISHED names them.
    imap.select("INBOX").await.expect("SELECT");
    store_flags(&mut imap, "2,3,30", "+FLAGS (\\Deleted)").await;
    store_flags(&mut imap, "9", "+FLAGS (\\Seen)").await;
    {
        let stream = imap.expunge().await.expect("EXPUNGE");
        let _: Vec<_> = futures::StreamExt::collect(stream).await;
    }
    let expunged = engine
        .sync(mailbox, &relay.login(&user), false, &stop)
        .await
        .expect("sync after expunges");
    let commands = relay.commands();
    let server = server_messages(&mut imap).await;
    assert_eq!(server.len(), 37);
    assert_eq!(indexed_messages(&pool, mailbox).await, server);
    assert_eq!(
        (expunged.expunged, expunged.vanished),
        (3, 3),
        "{expunged:?}"
    );
    assert_eq!(expunged.listings, 0, "{expunged:?}");
    assert!(
        commands.iter().any(|c| c == "ENABLE QRESYNC"),
        "{commands:?}"
    );
    assert!(
        commands
            .iter()
            .any(|c| c.contains("CHANGEDSINCE") && c.contains("VANISHED")),
        "{commands:?}"
    );
    assert!(!lists_everything(&commands), "{commands:?}");

    // And the checkpoint holds: the next pass is a no-change one again.
    let quiet = engine
        .sync(mailbox, &relay.login(&user), false, &stop)
        .await
        .expect("no-change sync");
    assert_eq!(quiet.unchanged_folders, quiet.folders, "{quiet:?}");
    assert!(
        !relay.commands().iter().any(|c| c.contains("FETCH")),
        "nothing fetched"
    );
    let _ = imap.logout().await;
}

#[tokio::test]
async fn without_condstore_every_nth_quiet_sync_reads_every_flag() {
    let pool = sync_database().await;
    let user = new_mail_user();
    let mut imap = user.session().await;
    append_samples(&mut imap, "INBOX", 0, 20, &user.username).await;
    let relay = Relay::start((user.host.clone(), user.port), true).await;
    let engine = engine(&pool, 10).with_flag_pass_every(3);
    let mailbox = MailboxId::new();
    let stop = CancellationToken::new();
    let through_relay = relay.login(&user);
    let sync = || engine.sync(mailbox, &through_relay, false, &stop);
    sync().await.expect("first sync");
    let commands = relay.commands();
    assert!(
        !commands
            .iter()
            .any(|c| c.contains("MODSEQ") || c.contains("CHANGEDSINCE") || c.contains("ENABLE")),
        "the relay hides CONDSTORE: {commands:?}"
    );
    assert_eq!(
        indexed_messages(&pool, mailbox).await,
        server_messages(&mut imap).await
    );

    // \Flagged moves no STATUS figure: the next sync (the 1st quiet one) does not see it …
    imap.select("INBOX").await.expect("SELECT");
    store_flags(&mut imap, "4", "+FLAGS (\\Flagged)").await;
    let quiet = sync().await.expect("quiet sync");
    assert_eq!(quiet.unchanged_folders, quiet.folders, "{quiet:?}");
    assert_eq!(quiet.flag_passes, 0, "{quiet:?}");
    assert_ne!(
        indexed_messages(&pool, mailbox).await,
        server_messages(&mut imap).await,
        "a quiet sync reads no flags"
    );
    assert!(!relay.commands().iter().any(|c| c.contains("FETCH")));
    let quiet = sync().await.expect("2nd quiet sync");
    assert_eq!(quiet.flag_passes, 0, "{quiet:?}");

    // … the 3rd reads every flag of every folder that has messages, and finds it.
    let third = sync().await.expect("3rd quiet sync");
    assert_eq!(third.flag_passes, 1, "only INBOX has messages: {third:?}");
    assert_eq!(third.flag_changes, 1, "{third:?}");
    assert_eq!(
        indexed_messages(&pool, mailbox).await,
        server_messages(&mut imap).await
    );
    assert!(relay
        .commands()
        .iter()
        .any(|c| c.contains("(UID FLAGS)") && !c.contains("CHANGEDSINCE")));
    // The count starts again.
    let quiet = sync().await.expect("quiet sync after the pass");
    assert_eq!(quiet.flag_passes, 0, "{quiet:?}");

    // A change of \Seen moves UNSEEN: seen at the next sync, whatever the count.
    imap.select("INBOX").await.expect("SELECT");
    store_flags(&mut imap, "1", "+FLAGS (\\Seen)").await;
    store_flags(&mut imap, "2", "+FLAGS (\\Seen)").await;
    let seen = sync().await.expect("sync after \\Seen");
    assert_eq!(seen.flag_passes, 1, "{seen:?}");
    assert_eq!(
        indexed_messages(&pool, mailbox).await,
        server_messages(&mut imap).await
    );
    let _ = imap.logout().await;
}
