//! A scoped caller's total against PostgreSQL at sizes past the exact bound: exact up to
//! `EXACT_COUNT_UP_TO`, estimated from the owners walked above it, right when a page after a
//! cursor comes back empty, and never taking in a row outside the scope.

use mailroom_mailboxes::list::{self, Cursor};
use mailroom_mailboxes::scope::Scope;
use mailroom_mailboxes::store::list_query::{ListQuery, EXACT_COUNT_UP_TO};
use mailroom_types::{MailboxId, OrgId, UserId};
use sqlx::{Executor, PgPool};

use crate::rows::test_database;

/// Ten mailboxes for each owner, every other one in the CRM.
async fn seed(pool: &PgPool, org: OrgId, owners: &[UserId]) {
    sqlx::query(
        "INSERT INTO mailboxes (id, org_id, owner_user_id, email, imap_host, imap_port, imap_security, \
            imap_username, smtp_host, smtp_port, smtp_security, smtp_username, password_sealed, \
            password_key, in_crm, owner_first_name, owner_last_name) \
         SELECT gen_random_uuid(), $1, o, 'box' || n || '.' || o || '@example.test', 'imap.test', 993, \
            'tls', 'u', 'smtp.test', 465, 'tls', 'u', '\\x00', 'k', n % 2 = 0, 'Ann', 'Lee' \
         FROM unnest($2::uuid[]) AS o, generate_series(1, 10) AS n",
    )
    .bind(org)
    .bind(UserId::uuids(owners))
    .execute(pool)
    .await
    .expect("seed mailboxes");
}

async fn page(
    pool: &PgPool,
    org: OrgId,
    scope: &Scope,
    after: Option<&Cursor>,
    size: i64,
) -> mailroom_mailboxes::store::list_query::Page {
    let filter = list::parse_filter("in_crm = true").expect("filter");
    let reads = Vec::new();
    ListQuery {
        org,
        scope,
        filter: filter.as_ref(),
        reads: &reads,
        order: list::parse_order("email").expect("order"),
    }
    .page(pool, after, size)
    .await
    .expect("page")
}

#[tokio::test]
async fn a_scoped_total_is_exact_to_the_bound_and_estimated_from_the_owners_above_it() {
    let (pool, server, database) = test_database().await;
    let (org, other) = (OrgId::new(), OrgId::new());
    let owners: Vec<UserId> = (0..400).map(|_| UserId::new()).collect();
    seed(&pool, org, &owners).await;
    // The same people as owners in another organisation: never counted or listed here.
    seed(&pool, other, &owners).await;
    let foreign: MailboxId =
        sqlx::query_scalar("SELECT id FROM mailboxes WHERE org_id = $1 LIMIT 1")
            .bind(other)
            .fetch_one(&pool)
            .await
            .expect("another organisation's mailbox");

    // 200 owners: exactly the bound, counted exactly.
    let at_bound = Scope::Some {
        owners: owners[..200].to_vec(),
        mailboxes: vec![foreign],
    };
    let p = page(&pool, org, &at_bound, None, 50).await;
    assert_eq!((p.total, p.estimated), (EXACT_COUNT_UP_TO, false));
    assert!(p.rows.iter().all(|r| r.row.org_id == org));

    // 400 owners, 2,000 matches: estimated from the owners walked (five matches each here).
    let all = Scope::Some {
        owners: owners.clone(),
        mailboxes: vec![foreign],
    };
    let p = page(&pool, org, &all, None, 50).await;
    assert!(p.estimated, "{}", p.total);
    assert!((1_900..=2_100).contains(&p.total), "{}", p.total);
    assert_eq!(p.rows.len(), 50);

    // Every page of 150 owners (750 matches) with the exact total, rows in the scope only.
    let some = Scope::Some {
        owners: owners[..150].to_vec(),
        mailboxes: Vec::new(),
    };
    let mut after: Option<Cursor> = None;
    let mut seen = 0;
    let mut first_cursor = None;
    loop {
        let p = page(&pool, org, &some, after.as_ref(), 100).await;
        assert_eq!((p.total, p.estimated), (750, false));
        assert!(p
            .rows
            .iter()
            .all(|r| r.row.org_id == org && owners[..150].contains(&r.row.owner_user_id)));
        seen += p.rows.len();
        first_cursor.get_or_insert_with(|| p.next.clone());
        match p.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, 750);

    // The rows after page 1 go; page 2 comes back empty and still tells the total.
    let cursor = first_cursor.flatten().expect("a second page");
    sqlx::query("DELETE FROM mailboxes WHERE org_id = $1 AND email_key > $2")
        .bind(org)
        .bind(&cursor.value)
        .execute(&pool)
        .await
        .expect("delete");
    let p = page(&pool, org, &some, Some(&cursor), 100).await;
    assert!(p.rows.is_empty() && p.next.is_none());
    assert_eq!((p.total, p.estimated), (100, false));

    // Nobody in scope: nothing, without asking.
    let p = page(&pool, org, &Scope::nothing(), None, 10).await;
    assert_eq!((p.rows.len(), p.total, p.estimated), (0, 0, false));

    pool.close().await;
    if let Ok(admin) = PgPool::connect(&server).await {
        let _ = admin
            .execute(format!("DROP DATABASE IF EXISTS {database}").as_str())
            .await;
    }
}
