//! The mailboxes-per-organisation limit under concurrency, against a real PostgreSQL (the
//! stack's `DATABASE_URL`; the test makes its own database): many connects of one
//! organisation released at the same instant, each in its own transaction, save exactly as
//! many mailboxes as the limit leaves room for; another organisation is not held up by it.

use std::sync::Arc;

use mailroom_mailboxes::domain::{Crm, Security, ServerSettings};
use mailroom_mailboxes::store::{self, Admitted, NewMailbox, Owner};
use mailroom_mailboxes::{MIGRATIONS, SCHEMA};
use mailroom_types::{MailboxId, OrgId, UserId};
use sqlx::{Executor, PgPool};

const LIMIT: u64 = 5;
const RACERS: usize = 24;

async fn test_database() -> PgPool {
    let server = std::env::var("DATABASE_URL").unwrap_or_else(|_| {
        panic!("DATABASE_URL is not set: run the tests with .ci/test, which starts PostgreSQL")
    });
    let name = format!("mailroom_test_{}", uuid::Uuid::new_v4().simple());
    let admin = PgPool::connect(&server)
        .await
        .expect("connect to the stack's PostgreSQL");
    admin
        .execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .expect("create the test database");
    admin.close().await;
    let (base, _) = server
        .rsplit_once('/')
        .expect("DATABASE_URL ends in /dbname");
    let url = secrecy::SecretString::from(format!("{base}/{name}"));
    let pool = mailroom_platform::db::connect(&url, SCHEMA, RACERS as u32 + 2)
        .await
        .expect("connect to the test database");
    mailroom_platform::db::migrate(&pool, SCHEMA, &MIGRATIONS)
        .await
        .expect("migrate");
    pool
}

/// One connect's transaction: insert within the limit, hold the transaction a moment (as a
/// connect does while it writes its events), commit.
async fn connect(pool: &PgPool, org: OrgId, n: usize, start: &tokio::sync::Barrier) -> bool {
    let owner = Owner {
        user_id: UserId::new(),
        org_id: org,
        first_name: "Ann".into(),
        last_name: "Racer".into(),
        dismissed: false,
        active: true,
    };
    let server = ServerSettings {
        host: "mail.example.com".into(),
        port: 993,
        security: Security::Tls,
        username: format!("box{n}@example.com"),
    };
    let email = format!("box{n}@example.com");
    let mut conn = pool.acquire().await.expect("a connection");
    start.wait().await;
    let mut tx = sqlx::Acquire::begin(&mut *conn).await.expect("begin");
    let admitted = store::insert_within_limit(
        &mut tx,
        &NewMailbox {
            id: MailboxId::new(),
            org_id: org,
            owner: &owner,
            email: &email,
            name: "",
            sender_name: "",
            imap: &server,
            smtp: &server,
            crm: &Crm::default(),
            sealed_password: b"sealed",
            key_id: "k1",
        },
        LIMIT,
    )
    .await
    .expect("insert within the limit");
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    tx.commit().await.expect("commit");
    matches!(admitted, Admitted::Inserted(_))
}

#[tokio::test]
async fn concurrent_connects_save_no_more_than_the_limit() {
    let pool = test_database().await;
    let (org, other) = (OrgId::new(), OrgId::new());
    let start = Arc::new(tokio::sync::Barrier::new(RACERS + 1));
    let mut racers = tokio::task::JoinSet::new();
    for n in 0..RACERS {
        let (pool, start) = (pool.clone(), start.clone());
        racers.spawn(async move { connect(&pool, org, n, &start).await });
    }
    let (pool2, start2) = (pool.clone(), start.clone());
    let outsider = tokio::spawn(async move { connect(&pool2, other, 0, &start2).await });
    let mut saved = 0;
    while let Some(done) = racers.join_next().await {
        saved += usize::from(done.expect("a racer"));
    }
    assert_eq!(saved, LIMIT as usize, "saved of {RACERS} racing connects");
    assert!(
        outsider.await.expect("the outsider"),
        "another organisation connects"
    );
    let stored = store::count_in_org(&pool, org).await.expect("count");
    assert_eq!(stored, LIMIT as i64);
}
