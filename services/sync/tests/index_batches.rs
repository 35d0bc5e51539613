//! Batches of new messages written to the index in a real PostgreSQL (the stack's
//! `DATABASE_URL`; run with `.ci/test`): an import's batch is inserted as it is, a batch that
//! repeats messages the index holds only brings their flags up to date, and a UID twice in one
//! batch is indexed once. Each time the folder's `last_uid` covers the batch, and only the
//! messages new to the index are said to be new (what the CRM's feed gets).

use chrono::Utc;
use mailroom_sync::store::fences::{self, Fence};
use mailroom_sync::store::folders;
use mailroom_sync::store::messages::{self, NewRow};
use mailroom_types::MailboxId;
use secrecy::SecretString;
use sqlx::PgPool;

async fn database() -> PgPool {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| {
        panic!("DATABASE_URL is not set: run the tests with .ci/test, which starts PostgreSQL")
    });
    let name = format!("mailroom_test_{}", uuid::Uuid::new_v4().simple());
    let admin = PgPool::connect(&url).await.expect("connect to PostgreSQL");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .expect("create the test database");
    admin.close().await;
    let (base, _) = url.rsplit_once('/').expect("DATABASE_URL ends in /dbname");
    let url = SecretString::from(format!("{base}/{name}"));
    let pool = mailroom_platform::db::connect(&url, mailroom_sync::SCHEMA, 2)
        .await
        .expect("connect to the test database");
    mailroom_platform::db::migrate(&pool, mailroom_sync::SCHEMA, &mailroom_sync::MIGRATIONS)
        .await
        .expect("migrate");
    pool
}

fn row(uid: u32, flags: i16) -> NewRow {
    NewRow {
        uid,
        flags,
        keywords: None,
        size: 100 + uid,
        internal_date: Utc::now(),
        envelope: vec![1, 2, 3],
    }
}

/// Writes `rows` as one batch in a fenced transaction; the UIDs new to the index.
async fn write(pool: &PgPool, fence: &Fence, folder: i32, rows: &[NewRow]) -> Vec<u32> {
    let mut tx = fences::begin(pool, fence)
        .await
        .expect("fenced transaction");
    let new = messages::insert_batch(&mut tx, fence.mailbox, folder, rows, fence.generation)
        .await
        .expect("batch written");
    tx.commit().await.expect("commit");
    new
}

/// The folder's indexed (UID, flags), ascending, and its `last_uid`.
async fn index_of(pool: &PgPool, mailbox: MailboxId, folder: i32) -> (Vec<(u32, i16)>, i64) {
    let rows: Vec<(i64, i16)> = sqlx::query_as(
        "SELECT uid::int8 + 2147483648, flags FROM messages \
         WHERE mailbox_id = $1 AND folder_id = $2 ORDER BY uid",
    )
    .bind(mailbox)
    .bind(folder)
    .fetch_all(pool)
    .await
    .expect("indexed rows");
    let (last_uid,): (i64,) = sqlx::query_as("SELECT last_uid FROM folders WHERE id = $1")
        .bind(folder)
        .fetch_one(pool)
        .await
        .expect("folder row");
    let rows = rows
        .into_iter()
        .map(|(uid, flags)| (u32::try_from(uid).expect("a UID"), flags))
        .collect();
    (rows, last_uid)
}

#[tokio::test]
async fn imports_repeats_and_doubled_uids_are_each_indexed_once_with_the_servers_flags() {
    let pool = database().await;
    let mailbox = MailboxId::new();
    let fence = fences::claim_next(&pool, mailbox).await.expect("claim");
    let mut tx = fences::begin(&pool, &fence)
        .await
        .expect("fenced transaction");
    let folder = folders::ensure_folder(&mut tx, mailbox, "INBOX", "")
        .await
        .expect("folder")
        .id;
    tx.commit().await.expect("commit");

    // An import: everything is new.
    let import: Vec<NewRow> = (1..=5).map(|uid| row(uid, 0)).collect();
    assert_eq!(
        write(&pool, &fence, folder, &import).await,
        vec![1, 2, 3, 4, 5]
    );
    let (rows, last_uid) = index_of(&pool, mailbox, folder).await;
    assert_eq!(
        rows.iter().map(|r| r.0).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(last_uid, 5);

    // A batch that repeats messages the index holds (one now seen): only 6 and 7 are new,
    // and message 3 has the server's flags.
    let repeat = vec![row(3, 1), row(4, 0), row(5, 0), row(6, 0), row(7, 0)];
    assert_eq!(write(&pool, &fence, folder, &repeat).await, vec![6, 7]);
    let (rows, last_uid) = index_of(&pool, mailbox, folder).await;
    assert_eq!(rows.len(), 7, "{rows:?}");
    assert_eq!(rows[2], (3, 1));
    assert_eq!(last_uid, 7);

    // A UID twice in one batch, out of order: indexed once.
    let doubled = vec![row(9, 0), row(8, 0), row(9, 0)];
    assert_eq!(write(&pool, &fence, folder, &doubled).await, vec![8, 9]);
    let (rows, last_uid) = index_of(&pool, mailbox, folder).await;
    assert_eq!(
        rows.iter().map(|r| r.0).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6, 7, 8, 9]
    );
    assert_eq!(last_uid, 9);
}
