//! Random mailboxes of two organisations, written straight into the registry's table, and
//! the test's own database.

use std::collections::HashSet;

use chrono::{DateTime, Duration, Utc};
use mailroom_mailboxes::{MIGRATIONS, SCHEMA};
use mailroom_types::{MailboxId, OrgId, UserId};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;
use sqlx::{Executor, PgPool};
use uuid::Uuid;

pub const STATES: [&str; 5] = ["pending", "ok", "syncing", "auth_failed", "error"];
pub const LOCALS: [&str; 9] = [
    "ann",
    "Bob",
    "ann.lee",
    "SALES_1",
    "50%off",
    "x\\y",
    "работа",
    "info",
    "Émile",
];
pub const DOMAINS: [&str; 3] = ["acme.test", "Example.com", "ACME.test"];
pub const NAMES: [&str; 10] = [
    "",
    "Sales",
    "sales",
    "Backup",
    "Почта",
    "Ünïcode",
    "50%_off",
    "a\\b",
    "Say \"hi\"",
    "Support desk",
];
pub const FIRST: [&str; 5] = ["Ann", "bob", "Олег", "Zoë", ""];
pub const LAST: [&str; 5] = ["Lee", "lee", "Петров", "O'Neil", "van Dijk"];
pub const DISK: [i64; 5] = [0, 1 << 20, 3 << 19, 3 << 20, 10 << 20];
/// `disk_mb` values whose bytes are whole (the filter rounds to bytes).
pub const DISK_MB: [f64; 6] = [0.0, 0.5, 1.0, 1.5, 3.0, 10.0];

#[derive(Debug, Clone)]
pub struct Row {
    pub id: MailboxId,
    pub org: OrgId,
    pub owner: UserId,
    pub email: String,
    pub name: String,
    pub sender_name: String,
    pub first: String,
    pub last: String,
    pub dismissed: bool,
    pub in_crm: bool,
    pub queue: Vec<UserId>,
    pub state: &'static str,
    /// `None`: never synced (stored as `-infinity`).
    pub last_sync: Option<DateTime<Utc>>,
    pub unread: i64,
    pub messages: i64,
    pub disk: i64,
    pub created: DateTime<Utc>,
}

impl Row {
    pub fn owner_key(&self) -> String {
        format!("{} {}", self.last, self.first).to_lowercase()
    }
}

pub struct User {
    pub id: UserId,
    pub first: &'static str,
    pub last: &'static str,
    pub dismissed: bool,
}

/// An id from the seeded generator, so a failing seed reproduces.
pub fn id<T: From<Uuid>>(rng: &mut StdRng) -> T {
    T::from(Uuid::from_u128(rng.gen()))
}

/// A time `days` whole days and a half before `now`, give or take up to 6 hours: never near a
/// day boundary, so `days_since_sync` means the same to the database a moment later.
pub fn days_ago(now: DateTime<Utc>, days: i64, rng: &mut StdRng) -> DateTime<Utc> {
    let jitter = Duration::microseconds(rng.gen_range(-6 * 3_600_000_000i64..6 * 3_600_000_000));
    micros(now - Duration::days(days) - Duration::hours(12) + jitter)
}

/// PostgreSQL keeps microseconds.
pub fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).expect("in range")
}

pub fn random_rows(
    rng: &mut StdRng,
    org: OrgId,
    other: OrgId,
    now: DateTime<Utc>,
) -> (Vec<User>, Vec<Row>) {
    let users: Vec<User> = (0..8)
        .map(|_| User {
            id: id(rng),
            first: FIRST.choose(rng).copied().unwrap_or_default(),
            last: LAST.choose(rng).copied().unwrap_or_default(),
            dismissed: rng.gen_bool(0.2),
        })
        .collect();
    let sync_times: Vec<DateTime<Utc>> = (0..6).map(|d| days_ago(now, d, rng)).collect();
    let created: Vec<DateTime<Utc>> = (0..5).map(|d| days_ago(now, 30 + d, rng)).collect();
    let mut rows = Vec::new();
    let mut taken = HashSet::new();
    for i in 0..rng.gen_range(20..45) {
        let org = if i % 6 == 5 { other } else { org };
        let owner = users.choose(rng).expect("users");
        let mut email = format!(
            "{}@{}",
            LOCALS.choose(rng).expect("locals"),
            DOMAINS.choose(rng).expect("domains")
        );
        if !taken.insert((org, email.to_lowercase())) {
            email = format!("{i}{email}");
            taken.insert((org, email.to_lowercase()));
        }
        let queued = rng.gen_range(0..3);
        let queue = users.choose_multiple(rng, queued).map(|u| u.id).collect();
        rows.push(Row {
            id: id(rng),
            org,
            owner: owner.id,
            email,
            name: NAMES.choose(rng).expect("names").to_string(),
            sender_name: NAMES.choose(rng).expect("names").to_string(),
            first: owner.first.to_owned(),
            last: owner.last.to_owned(),
            dismissed: owner.dismissed,
            in_crm: rng.gen_bool(0.4),
            queue,
            state: STATES.choose(rng).expect("states"),
            last_sync: if rng.gen_bool(0.3) {
                None
            } else {
                sync_times.choose(rng).copied()
            },
            unread: rng.gen_range(0..4),
            messages: rng.gen_range(0..6),
            disk: *DISK.choose(rng).expect("disk"),
            created: *created.choose(rng).expect("created"),
        });
    }
    (users, rows)
}

pub async fn insert(pool: &PgPool, rows: &[Row]) {
    pool.execute("TRUNCATE mailboxes").await.expect("truncate");
    for r in rows {
        sqlx::query(
            "INSERT INTO mailboxes (id, org_id, owner_user_id, email, name, sender_name, \
                imap_host, imap_port, imap_security, imap_username, \
                smtp_host, smtp_port, smtp_security, smtp_username, password_sealed, password_key, \
                in_crm, crm_queue, sync_state, last_sync_time, unread_count, message_count, disk_bytes, \
                owner_first_name, owner_last_name, owner_dismissed, create_time) \
             VALUES ($1, $2, $3, $4, $5, $6, 'imap.test', 993, 'tls', $4, 'smtp.test', 465, 'tls', $4, \
                '\\x00', 'k', $7, $8, $9, COALESCE($10, '-infinity'::timestamptz), $11, $12, $13, $14, $15, $16, $17)",
        )
        .bind(r.id)
        .bind(r.org)
        .bind(r.owner)
        .bind(&r.email)
        .bind(&r.name)
        .bind(&r.sender_name)
        .bind(r.in_crm)
        .bind(&r.queue)
        .bind(r.state)
        .bind(r.last_sync)
        .bind(r.unread)
        .bind(r.messages)
        .bind(r.disk)
        .bind(&r.first)
        .bind(&r.last)
        .bind(r.dismissed)
        .bind(r.created)
        .execute(pool)
        .await
        .expect("insert a mailbox");
    }
}

pub async fn test_database() -> (PgPool, String, String) {
    let server = std::env::var("DATABASE_URL").unwrap_or_else(|_| {
        panic!("DATABASE_URL is not set: run the tests with .ci/test, which starts PostgreSQL")
    });
    let name = format!("mailroom_test_{}", Uuid::new_v4().simple());
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
    let pool = mailroom_platform::db::connect(&url, SCHEMA, 4)
        .await
        .expect("connect to the test database");
    mailroom_platform::db::migrate(&pool, SCHEMA, &MIGRATIONS)
        .await
        .expect("migrate");
    (pool, server, name)
}
