//! Sync exactly once, on the real stack: every new message of a mailbox in the CRM reaches
//! the feed (`NewMessages` on `mailroom.sync.events`) once, whatever fails when (a server
//! connection cut after some batches, a run killed, a holder overtaken mid-run), and a
//! folder's import never does, even when a later run finishes it; a holder of a mailbox's
//! lease that was overtaken writes nothing (index, checkpoints, feed), nor does a sync of a
//! mailbox disconnected under it; only the current holder moves a checkpoint, and it follows
//! the server down (an index rebuild), so flags keep syncing; one process never runs one
//! mailbox twice at once; a mail server that trickles ends its mailbox's sync within the
//! deadline, in a clear state, while the same worker syncs the others, and a large import
//! the deadline cuts short is no failure and carries on.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use mailroom_mail::{Login, Security};
use mailroom_platform::kafka::Topic;
use mailroom_platform::proto::events::v1 as ev;
use mailroom_platform::types::{MailboxId, OrgId, UserId};
use mailroom_sync::engine::{Engine, EngineOptions};
use mailroom_sync::error::{FailureKind, RunError};
use mailroom_sync::lease::Leases;
use mailroom_sync::store::fences::{self, Claim, Fence};
use mailroom_sync::store::folders;
use mailroom_tests::hostile_imap::{Attack, HostileImap};
use mailroom_tests::mailstore::{append_samples, indexed_messages, new_mail_user, MailUser};
use mailroom_tests::sync_database;
use mailroom_tests::{
    authed, mailboxes_pb as mpb, spawn_app_with, AppOptions, StackEnv, TestApp, TestOrg,
};
use prost::Message as _;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::Message as _;
use secrecy::SecretString;
use sqlx::PgPool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tonic::Code;

fn engine(pool: &PgPool, batch: usize, io_timeout: Duration) -> Engine {
    Engine::new(
        pool.clone(),
        EngineOptions {
            batch,
            connect_timeout: Duration::from_secs(10),
            io_timeout,
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

/// A mailbox of the schedule (so its organisation is known and its feed can be written).
async fn scheduled_mailbox(pool: &PgPool) -> MailboxId {
    let mailbox = MailboxId::new();
    let mut conn = pool.acquire().await.expect("connection");
    mailroom_sync::store::schedule::upsert_mailbox(
        &mut conn,
        mailbox,
        OrgId::new(),
        UserId::new(),
        true,
    )
    .await
    .expect("schedule");
    mailbox
}

/// Everything of a mailbox a stale writer could change: its folders with their checkpoints,
/// its index, and the events waiting in the outbox.
async fn snapshot(pool: &PgPool, mailbox: MailboxId) -> (String, usize, i64) {
    let folders = folders::folders(pool, mailbox).await.expect("folders");
    let (outbox,): (i64,) = sqlx::query_as("SELECT count(*) FROM outbox")
        .fetch_one(pool)
        .await
        .expect("outbox");
    (
        format!("{folders:?}"),
        indexed_messages(pool, mailbox).await.len(),
        outbox,
    )
}

/// Every message of the feed in the outbox (what the relay publishes, in order):
/// (folder, UIDVALIDITY, UID), each as often as it was written.
async fn outbox_feed(pool: &PgPool) -> Vec<(String, u32, u32)> {
    let rows: Vec<(Vec<u8>,)> = sqlx::query_as("SELECT payload FROM outbox ORDER BY seq")
        .fetch_all(pool)
        .await
        .expect("outbox");
    let events: Vec<ev::Envelope> = rows
        .into_iter()
        .map(|(p,)| ev::Envelope::decode(p.as_slice()).expect("an envelope"))
        .collect();
    fed(&events)
}

/// What the worker does after it took `leases`' lease on `mailbox` with `generation`: claims
/// the mailbox, which must succeed.
async fn claimed(pool: &PgPool, leases: &Leases, mailbox: MailboxId, generation: i64) -> Fence {
    match mailroom_sync::worker::claim(pool, leases, mailbox, generation)
        .await
        .expect("claim")
    {
        Ok(fence) => fence,
        Err(stale) => panic!("generation {generation} could not claim: {stale}"),
    }
}

async fn leases(ttl_a: Duration) -> (Leases, Leases) {
    let env = StackEnv::load();
    let redis = mailroom_platform::redis::connect(&SecretString::from(env.redis_url.clone()))
        .await
        .expect("redis");
    let prefix = format!("tests:sync-fencing:{}", uuid::Uuid::new_v4().simple());
    (
        Leases::new(redis.clone(), &prefix, "holder-a", ttl_a),
        Leases::new(redis, &prefix, "holder-b", Duration::from_secs(30)),
    )
}

#[tokio::test]
async fn an_overtaken_lease_holder_writes_nothing() {
    let pool = sync_database().await;
    let user = new_mail_user();
    let mut imap = user.session().await;
    imap.create("Old").await.expect("CREATE");
    append_samples(&mut imap, "INBOX", 0, 20, &user.username).await;
    append_samples(&mut imap, "Old", 100, 105, &user.username).await;
    let mailbox = scheduled_mailbox(&pool).await;
    let name = mailbox.to_string();
    let (a, b) = leases(Duration::from_millis(300)).await;

    // A takes the lease and claims the mailbox, then stalls (a pause, a late renewal) past
    // its time to live.
    let first = a.acquire(&name).await.expect("lease").expect("free");
    let stale_fence = claimed(&pool, &a, mailbox, first).await;
    let first = stale_fence.generation;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // B takes over with a higher generation, and syncs.
    let second = b.acquire(&name).await.expect("lease").expect("expired");
    assert!(second > first, "generations {first} then {second}");
    let fence = claimed(&pool, &b, mailbox, second).await;
    let stop = CancellationToken::new();
    engine(&pool, 10, Duration::from_secs(30))
        .sync_fenced(fence, &login(&user), true, &stop)
        .await
        .expect("the new holder's sync");
    let before = snapshot(&pool, mailbox).await;
    assert_eq!(before.1, 25);
    let written: BTreeSet<i64> = folders::folders(&pool, mailbox)
        .await
        .expect("folders")
        .iter()
        .map(|f| f.generation)
        .collect();
    assert_eq!(
        written,
        BTreeSet::from([second]),
        "checkpoints written by B"
    );

    // Meanwhile the server changes: new mail, a folder gone, a folder new.
    append_samples(&mut imap, "INBOX", 20, 30, &user.username).await;
    imap.delete("Old").await.expect("DELETE");
    imap.create("New").await.expect("CREATE");
    append_samples(&mut imap, "New", 200, 203, &user.username).await;

    // A wakes up and goes on as if it still held the lease: nothing of it may land.
    let stale = engine(&pool, 10, Duration::from_secs(30))
        .sync_fenced(stale_fence, &login(&user), true, &stop)
        .await;
    match stale {
        Err(RunError::Fenced(refused)) => {
            assert_eq!((refused.mine, refused.current), (first, second));
            assert!(refused.to_string().contains("newer holder"), "{refused}");
        }
        other => panic!("the overtaken holder was not refused: {other:?}"),
    }
    let after = snapshot(&pool, mailbox).await;
    assert_eq!(
        after, before,
        "the overtaken holder changed the index, a checkpoint or the feed"
    );
    // Nor can it claim again, or lift its generation, without the lease.
    assert_eq!(
        fences::claim(&pool, mailbox, first).await.expect("claim"),
        Claim::Behind { current: second }
    );
    assert_eq!(a.advance(&name, second).await.expect("advance"), None);
    let _ = imap.logout().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_overtaken_mid_run_stops_at_its_next_write_and_the_feed_stays_exact() {
    let pool = sync_database().await;
    let user = new_mail_user();
    let mut imap = user.session().await;
    append_samples(&mut imap, "INBOX", 0, 3, &user.username).await;
    let mailbox = scheduled_mailbox(&pool).await;
    let name = mailbox.to_string();
    // The first sync, an import: not for the feed.
    engine(&pool, 25, Duration::from_secs(30))
        .sync(mailbox, &login(&user), true, &CancellationToken::new())
        .await
        .expect("first sync");
    assert!(outbox_feed(&pool).await.is_empty());
    const NEW: usize = 1500;
    append_samples(&mut imap, "INBOX", 3, 3 + NEW, &user.username).await;

    let (a, b) = leases(Duration::from_millis(100)).await;
    let first = a.acquire(&name).await.expect("lease").expect("free");
    let acquired = Instant::now();
    let stale_fence = claimed(&pool, &a, mailbox, first).await;
    // A reads the server through a paced relay, so the takeover lands in its fetch.
    let relay = Relay::start(format!("{}:{}", user.host, user.port)).await;
    let task = {
        let mut login = login(&user);
        login.host = "127.0.0.1".into();
        login.port = relay.addr.port();
        let engine = engine(&pool, 25, Duration::from_secs(30));
        tokio::spawn(async move {
            engine
                .sync_fenced(stale_fence, &login, true, &CancellationToken::new())
                .await
        })
    };
    let count = || async {
        let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM messages WHERE mailbox_id = $1")
            .bind(mailbox)
            .fetch_one(&pool)
            .await
            .expect("count");
        n
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while count().await < 3 + 100 {
        assert!(Instant::now() < deadline, "A made no progress");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // B takes over in the middle of A's run (A's lease ran out while it worked).
    tokio::time::sleep(
        (acquired + Duration::from_millis(150)).saturating_duration_since(Instant::now()),
    )
    .await;
    let second = b.acquire(&name).await.expect("lease").expect("expired");
    let fence = claimed(&pool, &b, mailbox, second).await;
    // Whatever A committed did so before the claim returned; nothing after.
    let at_claim = count().await;
    let stale = task.await.expect("A's task");
    assert!(
        matches!(stale, Err(RunError::Fenced(_))),
        "A was not stopped by the takeover: {stale:?}"
    );
    assert_eq!(count().await, at_claim, "A wrote after B's claim");
    eprintln!(
        "A indexed {} of {NEW} new messages before B took over",
        at_claim - 3
    );
    assert!(
        at_claim < (3 + NEW) as i64,
        "A finished before the takeover"
    );

    let report = engine(&pool, 200, Duration::from_secs(30))
        .sync_fenced(fence, &login(&user), true, &CancellationToken::new())
        .await
        .expect("B's sync");
    assert_eq!(report.new_messages, (3 + NEW) as i64 - at_claim);
    assert_eq!(indexed_messages(&pool, mailbox).await.len(), 3 + NEW);
    let feed = outbox_feed(&pool).await;
    let distinct: BTreeSet<u32> = feed.iter().map(|m| m.2).collect();
    assert_eq!(
        feed.len(),
        NEW,
        "fed {} times for {NEW} new messages",
        feed.len()
    );
    assert_eq!(distinct, (4..=(3 + NEW) as u32).collect::<BTreeSet<u32>>());
    let _ = imap.logout().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_cut_off_and_finished_by_the_next_run_is_not_news_but_later_mail_is() {
    let pool = sync_database().await;
    let user = new_mail_user();
    let mut imap = user.session().await;
    append_samples(&mut imap, "INBOX", 0, 1500, &user.username).await;
    let mailbox = scheduled_mailbox(&pool).await;
    // The first import, killed half-way (no cleanup).
    let relay = Relay::start(format!("{}:{}", user.host, user.port)).await;
    let task = {
        let mut login = login(&user);
        login.host = "127.0.0.1".into();
        login.port = relay.addr.port();
        let engine = engine(&pool, 25, Duration::from_secs(30));
        tokio::spawn(async move {
            engine
                .sync(mailbox, &login, true, &CancellationToken::new())
                .await
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while indexed_messages(&pool, mailbox).await.len() < 100 {
        assert!(Instant::now() < deadline, "the import made no progress");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    task.abort();
    let _ = task.await;
    let partial = indexed_messages(&pool, mailbox).await.len();
    assert!(partial < 1500, "the import finished before it was killed");
    // The next run finishes the import: none of it is news for the CRM.
    engine(&pool, 200, Duration::from_secs(30))
        .sync(mailbox, &login(&user), true, &CancellationToken::new())
        .await
        .expect("the import finished");
    assert_eq!(indexed_messages(&pool, mailbox).await.len(), 1500);
    let feed = outbox_feed(&pool).await;
    assert!(
        feed.is_empty(),
        "{} messages of the import (cut at {partial}) were fed as new mail",
        feed.len()
    );
    // Mail that comes afterwards is, once.
    append_samples(&mut imap, "INBOX", 1500, 1510, &user.username).await;
    engine(&pool, 200, Duration::from_secs(30))
        .sync(mailbox, &login(&user), true, &CancellationToken::new())
        .await
        .expect("new mail");
    let uids: Vec<u32> = outbox_feed(&pool).await.iter().map(|m| m.2).collect();
    assert_eq!(uids, (1501..=1510).collect::<Vec<u32>>());
    let _ = imap.logout().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mailbox_disconnected_mid_run_is_not_written_again() {
    let pool = sync_database().await;
    let user = new_mail_user();
    let mut imap = user.session().await;
    append_samples(&mut imap, "INBOX", 0, 1500, &user.username).await;
    let mailbox = scheduled_mailbox(&pool).await;
    // Through a paced relay, so the disconnection lands in the fetch.
    let relay = Relay::start(format!("{}:{}", user.host, user.port)).await;
    let task = {
        let mut login = login(&user);
        login.host = "127.0.0.1".into();
        login.port = relay.addr.port();
        let engine = engine(&pool, 25, Duration::from_secs(30));
        tokio::spawn(async move {
            engine
                .sync(mailbox, &login, true, &CancellationToken::new())
                .await
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while indexed_messages(&pool, mailbox).await.len() < 100 {
        assert!(Instant::now() < deadline, "the sync made no progress");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Disconnected while it syncs (the registry's event, or the worker finding it gone).
    let mut tx = pool.begin().await.expect("begin");
    mailroom_sync::store::schedule::forget_mailbox(&mut tx, mailbox)
        .await
        .expect("forget");
    tx.commit().await.expect("commit");
    let ended = task.await.expect("the sync's task");
    assert!(
        matches!(ended, Err(RunError::Fenced(_))),
        "the sync went on: {ended:?}"
    );
    assert!(indexed_messages(&pool, mailbox).await.is_empty());
    assert!(folders::folders(&pool, mailbox)
        .await
        .expect("folders")
        .is_empty());
    let _ = imap.logout().await;
}

#[tokio::test]
async fn a_checkpoint_follows_the_server_but_a_stale_holder_cannot_move_it() {
    let pool = sync_database().await;
    let user = new_mail_user();
    let mut imap = user.session().await;
    append_samples(&mut imap, "INBOX", 0, 12, &user.username).await;
    let mailbox = scheduled_mailbox(&pool).await;
    engine(&pool, 5, Duration::from_secs(30))
        .sync(mailbox, &login(&user), false, &CancellationToken::new())
        .await
        .expect("sync");
    let inbox = || async {
        folders::folders(&pool, mailbox)
            .await
            .expect("folders")
            .into_iter()
            .find(|f| f.name == "INBOX")
            .expect("INBOX")
    };
    let saved = inbox().await;
    assert_eq!(saved.uid_next, 13);
    let lower = folders::Checkpoint {
        uid_validity: u32::try_from(saved.uid_validity).unwrap(),
        uid_next: 9,
        highest_modseq: 1,
        messages: 8,
        unseen: 5,
    };
    let newer = folders::Checkpoint {
        uid_next: 14,
        messages: 13,
        ..lower
    };
    let mut conn = pool.acquire().await.expect("connection");
    // A writer of an older generation moves it neither back nor on.
    for cp in [lower, newer] {
        let taken = folders::save_checkpoint(&mut conn, saved.id, cp, saved.generation - 1)
            .await
            .expect("save");
        assert!(!taken, "an older generation's checkpoint was taken: {cp:?}");
    }
    let now = inbox().await;
    assert_eq!(
        (now.uid_next, now.highest_modseq, now.messages, now.unseen),
        (
            saved.uid_next,
            saved.highest_modseq,
            saved.messages,
            saved.unseen
        ),
        "a stale writer moved the checkpoint"
    );
    // Nor can a holder whose generation was overtaken open a fenced transaction at all.
    let stale = Fence {
        mailbox,
        generation: saved.generation,
    };
    fences::claim_next(&pool, mailbox)
        .await
        .expect("a newer claim");
    assert!(
        fences::begin(&pool, &stale).await.is_err(),
        "an overtaken holder could still write"
    );
    // The current holder follows the server, lower values included (an index rebuild).
    let current = fences::claim_next(&pool, mailbox).await.expect("claim");
    let taken = folders::save_checkpoint(&mut conn, saved.id, lower, current.generation)
        .await
        .expect("save");
    assert!(taken, "the server's lower values were refused");
    let now = inbox().await;
    assert_eq!((now.uid_next, now.highest_modseq, now.messages), (9, 1, 8));
    // last_uid never goes down.
    folders::advance_last_uid(&mut conn, mailbox, saved.id, 3, current.generation)
        .await
        .expect("advance");
    assert_eq!(inbox().await.last_uid, saved.last_uid);
    let _ = imap.logout().await;
}

/// What the index says of `uid`'s flags in INBOX.
async fn indexed_flags(pool: &PgPool, mailbox: MailboxId, uid: u32) -> i16 {
    let (flags,): (i16,) = sqlx::query_as(
        "SELECT m.flags FROM messages m JOIN folders f ON f.id = m.folder_id \
         WHERE m.mailbox_id = $1 AND f.name = 'INBOX' AND m.uid = $2",
    )
    .bind(mailbox)
    .bind(mailroom_sync::domain::uid_to_db(uid))
    .fetch_one(pool)
    .await
    .expect("the message is indexed");
    flags
}

#[tokio::test]
async fn flags_and_counts_keep_syncing_after_the_server_lowers_highestmodseq() {
    let pool = sync_database().await;
    let user = new_mail_user();
    let mut imap = user.session().await;
    append_samples(&mut imap, "INBOX", 0, 12, &user.username).await;
    let mailbox = scheduled_mailbox(&pool).await;
    let engine = engine(&pool, 5, Duration::from_secs(30));
    let sync = || async {
        engine
            .sync(mailbox, &login(&user), false, &CancellationToken::new())
            .await
            .expect("sync")
    };
    sync().await;
    let inbox = || async {
        folders::folders(&pool, mailbox)
            .await
            .expect("folders")
            .into_iter()
            .find(|f| f.name == "INBOX")
            .expect("INBOX")
    };
    let before = inbox().await;
    assert!(
        before.highest_modseq > 0,
        "the test server has no CONDSTORE"
    );
    // Dovecot rebuilt its index: the server's HIGHESTMODSEQ is now far below the saved one
    // (the same state, seen from the index: the saved value far above the server's).
    sqlx::query("UPDATE folders SET highest_modseq = highest_modseq + 100000 WHERE id = $1")
        .bind(before.id)
        .execute(&pool)
        .await
        .expect("rebuild");
    // Then someone reads message 2 (unread: 2 % 3 != 0) and flags message 4.
    let seen = mailroom_sync::domain::flags::SEEN;
    let flagged = mailroom_sync::domain::flags::FLAGGED;
    assert_eq!(indexed_flags(&pool, mailbox, 2).await & seen, 0);
    imap.select("INBOX").await.expect("select");
    for (uid, flag) in [("2", "+FLAGS (\\Seen)"), ("4", "+FLAGS (\\Flagged)")] {
        let done: Vec<_> = imap
            .uid_store(uid, flag)
            .await
            .expect("store")
            .collect()
            .await;
        assert!(done.iter().all(|r| r.is_ok()));
    }
    for round in 0..2 {
        sync().await;
        assert_ne!(
            indexed_flags(&pool, mailbox, 2).await & seen,
            0,
            "round {round}: a read message stays unread in the index"
        );
        assert_ne!(indexed_flags(&pool, mailbox, 4).await & flagged, 0);
    }
    let after = inbox().await;
    assert!(
        after.highest_modseq < before.highest_modseq + 100000,
        "the checkpoint did not follow the server: {}",
        after.highest_modseq
    );
    assert_eq!(after.unseen, before.unseen - 1, "the unread count is stale");
    let _ = imap.logout().await;
}

#[tokio::test]
async fn a_second_run_of_a_mailbox_in_the_same_process_is_refused_until_the_first_returns_the_lease(
) {
    let (a, b) = leases(Duration::from_secs(30)).await;
    let name = MailboxId::new().to_string();
    let first = a.acquire(&name).await.expect("lease").expect("free");
    // A replayed request and a live one, in the same worker (clones share the process).
    let again = a.clone();
    assert_eq!(
        again.acquire(&name).await.expect("lease"),
        None,
        "a second run of the same holder took the lease"
    );
    assert_eq!(b.acquire(&name).await.expect("lease"), None);
    assert!(a.working_on(&name));
    // The first run returns it: the mailbox can be taken again, with a newer generation.
    a.release(&name).await.expect("release");
    assert!(!a.working_on(&name));
    let next = again
        .acquire(&name)
        .await
        .expect("lease")
        .expect("free again");
    assert!(next > first);
    again.release(&name).await.expect("release");
    assert_eq!(a.holder_of(&name).await.expect("holder"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_import_cut_short_by_the_deadline_is_no_failure_and_the_next_run_finishes_it() {
    let pool = sync_database().await;
    let user = new_mail_user();
    let mut imap = user.session().await;
    append_samples(&mut imap, "INBOX", 0, 300, &user.username).await;
    let mailbox = scheduled_mailbox(&pool).await;
    // A slow but healthy server: about 25 KB/s, so 300 envelopes take several seconds.
    let relay = Relay::paced(
        format!("{}:{}", user.host, user.port),
        256,
        Duration::from_millis(10),
    )
    .await;
    let slow = Login {
        host: relay.addr.ip().to_string(),
        port: relay.addr.port(),
        ..login(&user)
    };
    let engine = engine(&pool, 10, Duration::from_secs(30)).with_deadline(Duration::from_secs(3));
    let started = Instant::now();
    let report = engine
        .sync(mailbox, &slow, false, &CancellationToken::new())
        .await
        .expect("a run that made progress is no failure");
    let took = started.elapsed();
    let indexed = indexed_messages(&pool, mailbox).await.len();
    eprintln!("first run: {took:?}, {indexed} indexed, {report:?}");
    assert!(report.cut_short, "the import fit in one run: {report:?}");
    assert!(took < Duration::from_secs(6), "took {took:?}");
    assert!(indexed > 0 && indexed < 300, "{indexed} indexed");
    assert!(report.note().contains("carries on"), "{}", report.note());
    // Runs go on where the last one stopped until the import is done.
    let mut runs = 1;
    loop {
        let report = engine
            .sync(mailbox, &slow, false, &CancellationToken::new())
            .await
            .expect("no failure");
        runs += 1;
        if !report.cut_short {
            assert_eq!(report.message_count, 300);
            break;
        }
        assert!(runs < 20, "the import does not advance");
    }
    assert_eq!(indexed_messages(&pool, mailbox).await.len(), 300);
    eprintln!("imported in {runs} runs");
    let _ = imap.logout().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_keeps_sending_lines_is_cut_off_at_the_sync_deadline() {
    let pool = sync_database().await;
    // A line every 200 ms (each nothing the sync asked for), far below the 120 s wait for
    // progress and the 600 s command deadline: only the whole sync's deadline ends it.
    let server = HostileImap::start(Attack::Drip {
        every: Duration::from_millis(200),
    })
    .await;
    let engine = engine(&pool, 10, Duration::from_secs(120)).with_deadline(Duration::from_secs(3));
    let login = Login {
        host: server.host(),
        port: server.port(),
        security: Security::None,
        username: "victim@hostile.test".into(),
        password: SecretString::from("pw".to_owned()),
    };
    let started = Instant::now();
    let outcome = tokio::time::timeout(
        Duration::from_secs(30),
        engine.sync(MailboxId::new(), &login, false, &CancellationToken::new()),
    )
    .await;
    let took = started.elapsed();
    let Ok(result) = outcome else {
        panic!("the sync still held its slot after {took:?}");
    };
    let RunError::Failed(failure) = result.expect_err("a server that never finishes fails") else {
        panic!("expected a failure of the mailbox");
    };
    eprintln!("ended after {took:?}: {}", failure.message);
    assert_eq!(failure.kind, FailureKind::Timeout, "{failure:?}");
    for said in [
        "stopped answering",
        "within 3 s",
        "MAILROOM_SYNC__SYNC_DEADLINE_SECS",
    ] {
        assert!(failure.message.contains(said), "{}", failure.message);
    }
    assert!(took < Duration::from_secs(6), "took {took:?}");
}

/// A TCP relay to a real mail server that can cut every connection it carries at once (the
/// server's connection dropped in the middle of a sync), then carries new ones again. The
/// server's side is paced (about 1 MB/s), so a large answer is still streaming when it cuts.
struct Relay {
    addr: SocketAddr,
    cut: Arc<tokio::sync::watch::Sender<u64>>,
    stop: CancellationToken,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Relay {
    async fn start(upstream: String) -> Relay {
        Relay::paced(upstream, 2048, Duration::from_millis(2)).await
    }

    /// A relay whose server side passes at most `bytes` every `every` (a slow mail server).
    async fn paced(upstream: String, bytes: usize, every: Duration) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (cut, _) = tokio::sync::watch::channel(0u64);
        let cut = Arc::new(cut);
        let stop = CancellationToken::new();
        let (cuts, stopped) = (cut.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    _ = stopped.cancelled() => return,
                };
                let Ok((client, _)) = accepted else { continue };
                let mut cut = cuts.subscribe();
                let upstream = upstream.clone();
                let stopped = stopped.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let up = tokio::io::copy(&mut cr, &mut sw);
                    let down = async {
                        let mut buf = vec![0u8; bytes];
                        loop {
                            let n = sr.read(&mut buf).await?;
                            if n == 0 {
                                return Ok::<_, std::io::Error>(());
                            }
                            cw.write_all(&buf[..n]).await?;
                            tokio::time::sleep(every).await;
                        }
                    };
                    tokio::select! {
                        _ = up => {}
                        _ = down => {}
                        _ = cut.changed() => {}
                        _ = stopped.cancelled() => {}
                    }
                });
            }
        });
        Relay { addr, cut, stop }
    }

    /// Drops every connection now open.
    fn cut(&self) {
        self.cut.send_modify(|n| *n += 1);
    }
}

fn submission(username: &str) -> mpb::ServerSettings {
    let addr = std::env::var("MAILROOM_SUBMISSION_ADDR").expect("set by .ci/test");
    let (host, port) = addr.rsplit_once(':').expect("host:port");
    mpb::ServerSettings {
        host: host.to_owned(),
        port: port.parse().expect("port"),
        security: mpb::Security::None as i32,
        username: username.into(),
    }
}

/// Connects `user`'s mailbox for the org's admin, its IMAP at `imap` (host, port), in the CRM.
async fn connect(app: &TestApp, org: &TestOrg, user: &MailUser, imap: (String, u16)) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let request = mpb::ConnectMailboxRequest {
            mailbox: Some(mpb::Mailbox {
                email: user.username.clone(),
                owner_user_id: org.admin_id.clone(),
                name: "Feed".into(),
                sender_name: "Tester".into(),
                imap: Some(mpb::ServerSettings {
                    host: imap.0.clone(),
                    port: i32::from(imap.1),
                    security: mpb::Security::None as i32,
                    username: user.username.clone(),
                }),
                smtp: Some(submission(&user.username)),
                crm: Some(mpb::CrmSettings {
                    in_crm: true,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            password: user.password.clone(),
            validate_only: false,
        };
        match app
            .mailboxes()
            .connect_mailbox(authed(&org.admin_token, request))
            .await
        {
            Ok(m) => return m.into_inner().id,
            Err(s)
                if matches!(s.code(), Code::NotFound | Code::Unavailable)
                    && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(s) => panic!("connect {}: {s:?}", user.username),
        }
    }
}

/// Waits until the registry shows `mailbox` as `wanted` says.
async fn registry_until(
    app: &TestApp,
    org: &TestOrg,
    mailbox: &str,
    within: Duration,
    what: &str,
    wanted: impl Fn(&mpb::Mailbox) -> bool,
) -> mpb::Mailbox {
    let deadline = Instant::now() + within;
    loop {
        let got = app
            .mailboxes()
            .get_mailbox(authed(
                &org.admin_token,
                mpb::GetMailboxRequest { id: mailbox.into() },
            ))
            .await;
        match got {
            Ok(got) => {
                let got = got.into_inner();
                if wanted(&got) {
                    return got;
                }
                assert!(
                    Instant::now() < deadline,
                    "the registry never showed {what}: {got:?}"
                );
            }
            Err(s) if s.code() == Code::Unavailable && Instant::now() < deadline => {}
            Err(s) => panic!("get mailbox: {s:?}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The sync events of `mailbox` on the app's topic: read from the start until `enough` says
/// so, then `quiet` longer (a duplicate would come then), or until `within` has passed.
async fn sync_events(
    app: &TestApp,
    mailbox: &str,
    within: Duration,
    quiet: Duration,
    enough: impl Fn(&[ev::Envelope]) -> bool,
) -> Vec<ev::Envelope> {
    let consumer: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &app.kafka_brokers)
        .set("group.id", format!("test-{}", uuid::Uuid::new_v4()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .set("fetch.wait.max.ms", "10")
        .set("topic.metadata.refresh.interval.ms", "1000")
        .create()
        .expect("test consumer");
    consumer
        .subscribe(&[&app.topics.name(Topic::SyncEvents)])
        .expect("subscribe");
    let mut out = Vec::new();
    let deadline = Instant::now() + within;
    let mut until = deadline;
    while Instant::now() < until {
        if let Ok(Ok(message)) =
            tokio::time::timeout(Duration::from_millis(300), consumer.recv()).await
        {
            if let Some(envelope) = message.payload().and_then(|p| ev::Envelope::decode(p).ok()) {
                if envelope.aggregate_id == mailbox {
                    out.push(envelope);
                }
            }
        }
        if until == deadline && enough(&out) {
            until = Instant::now() + quiet;
        }
    }
    out
}

/// Every message of the feed in `events`: (folder, UIDVALIDITY, UID), each as often as sent.
fn fed(events: &[ev::Envelope]) -> Vec<(String, u32, u32)> {
    events
        .iter()
        .filter_map(|e| match &e.payload {
            Some(ev::envelope::Payload::NewMessages(n)) => Some(n),
            _ => None,
        })
        .flat_map(|n| {
            n.messages
                .iter()
                .map(|m| (n.folder.clone(), n.uid_validity, m.uid))
        })
        .collect()
}

async fn indexed_count(app: &TestApp, mailbox: &str) -> i64 {
    let id = uuid::Uuid::parse_str(mailbox).expect("mailbox id");
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM sync.messages WHERE mailbox_id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .expect("count the index");
    n
}

/// The registry and a sync replica with `tweak`ed settings (stopped when the guard drops).
async fn app_with_sync(
    tweak: impl FnOnce(&mut mailroom_sync::SyncConfig),
) -> (TestApp, tokio_util::sync::DropGuard) {
    let mut app = spawn_app_with(AppOptions {
        with_mailboxes: true,
        ..AppOptions::default()
    })
    .await;
    let shutdown = CancellationToken::new();
    let client = app.start_sync(shutdown.clone(), tweak).await;
    app.sync = Some(client);
    (app, shutdown.drop_guard())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_cut_off_after_its_first_batches_leaves_every_new_message_in_the_feed_once() {
    let (app, _sync) = app_with_sync(|c| c.batch = 25).await;
    let org = app.create_org(50).await;
    let user = new_mail_user();
    let mut imap = user.session().await;
    append_samples(&mut imap, "INBOX", 0, 3, &user.username).await;
    let relay = Relay::start(std::env::var("MAILROOM_IMAP_ADDR").expect("set by .ci/test")).await;
    let mailbox = connect(&app, &org, &user, ("127.0.0.1".into(), relay.addr.port())).await;
    // The first sync is an import: not for the feed.
    registry_until(
        &app,
        &org,
        &mailbox,
        Duration::from_secs(90),
        "the first sync",
        |m| m.message_count == 3,
    )
    .await;

    const NEW: usize = 1500;
    append_samples(&mut imap, "INBOX", 3, 3 + NEW, &user.username).await;
    app.mailboxes()
        .sync_mailbox_now(authed(
            &org.admin_token,
            mpb::SyncMailboxNowRequest {
                id: mailbox.clone(),
            },
        ))
        .await
        .expect("sync now");
    // Once a few batches are committed, the server's connection drops.
    let deadline = Instant::now() + Duration::from_secs(60);
    while indexed_count(&app, &mailbox).await < 3 + 60 {
        assert!(
            Instant::now() < deadline,
            "the sync after the new mail never began"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    relay.cut();
    let at_cut = indexed_count(&app, &mailbox).await;
    eprintln!("cut the server's connection with {at_cut} messages indexed");

    // The failed run is retried after its back-off and finishes.
    registry_until(
        &app,
        &org,
        &mailbox,
        Duration::from_secs(90),
        "every message after the retry",
        |m| m.message_count == (3 + NEW) as i64,
    )
    .await;
    let events = sync_events(
        &app,
        &mailbox,
        Duration::from_secs(60),
        Duration::from_secs(3),
        |events| fed(events).len() >= NEW,
    )
    .await;
    let failed = events
        .iter()
        .filter(|e| matches!(e.payload, Some(ev::envelope::Payload::MailboxSyncFailed(_))))
        .count();
    assert!(failed >= 1, "the cut did not fail a run: {events:?}");
    let feed = fed(&events);
    let distinct: BTreeSet<_> = feed.iter().cloned().collect();
    let uids: BTreeSet<u32> = distinct.iter().map(|m| m.2).collect();
    eprintln!(
        "feed: {} messages in {} events, {} distinct; {failed} failed run(s)",
        feed.len(),
        events.len(),
        distinct.len()
    );
    assert_eq!(distinct.len(), feed.len(), "a message was fed twice");
    let wanted: BTreeSet<u32> = (4..=(3 + NEW) as u32).collect();
    let lost: Vec<u32> = wanted.difference(&uids).copied().collect();
    assert!(
        lost.is_empty(),
        "the feed lost {} messages (UIDs {:?} … {:?})",
        lost.len(),
        lost.first(),
        lost.last()
    );
    assert_eq!(uids, wanted, "the feed has messages that are not new");
    let _ = imap.logout().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_server_fails_its_mailbox_clearly_while_the_worker_syncs_the_others() {
    // Progress due within 1.5 s; the whole sync within 20 s.
    let (app, _sync) = app_with_sync(|c| {
        c.io_timeout_ms = 1_500;
        c.sync_deadline_secs = 20;
    })
    .await;
    let org = app.create_org(50).await;
    // A FETCH answered with a line every 300 ms that is never a message.
    let server = HostileImap::start(Attack::Drip {
        every: Duration::from_millis(300),
    })
    .await;
    let victim = new_mail_user();
    drop(victim.session().await);
    let started = Instant::now();
    let slow = connect(&app, &org, &victim, (server.host(), server.port())).await;
    // A healthy mailbox of the same worker, connected after the slow one began.
    let user = new_mail_user();
    let mut imap = user.session().await;
    append_samples(&mut imap, "INBOX", 0, 5, &user.username).await;
    let addr = std::env::var("MAILROOM_IMAP_ADDR").expect("set by .ci/test");
    let (host, port) = addr.rsplit_once(':').expect("host:port");
    let healthy = connect(
        &app,
        &org,
        &user,
        (host.into(), port.parse().expect("port")),
    )
    .await;
    registry_until(
        &app,
        &org,
        &healthy,
        Duration::from_secs(30),
        "the healthy mailbox synced",
        |m| m.message_count == 5,
    )
    .await;
    let shown = registry_until(
        &app,
        &org,
        &slow,
        Duration::from_secs(30),
        "the trickling mailbox failed",
        |m| m.sync_state == mpb::SyncState::Error as i32,
    )
    .await;
    let took = started.elapsed();
    eprintln!(
        "the trickling mailbox failed after {took:?}: {}",
        shown.sync_error
    );
    assert!(
        shown.sync_error.contains("stopped answering"),
        "{}",
        shown.sync_error
    );
    // Backed off: the next attempt is planned, not immediate and not never.
    let status = app
        .sync()
        .get_sync_status(authed(
            &org.admin_token,
            mailroom_tests::sync_pb::GetSyncStatusRequest {
                mailbox_id: slow.clone(),
            },
        ))
        .await
        .expect("status")
        .into_inner();
    assert!(
        status.last_error.contains("stopped answering"),
        "{status:?}"
    );
    assert!(status.next_sync_time.is_some(), "{status:?}");
    let _ = imap.logout().await;
}
