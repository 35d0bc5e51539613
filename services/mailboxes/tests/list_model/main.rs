//! The mailbox list's SQL against a naive reference, on random rows in a real PostgreSQL (the
//! stack's `DATABASE_URL`; each run makes its own database and drops it).
//!
//! Random mailboxes of two organisations (names with `%`, `_`, `\`, quotes, Cyrillic and
//! accented letters; never-synced and synced mailboxes; shared values, so sorts tie), random
//! filters written in the filter grammar `list.rs` accepts (every field, `:`/`=`/`!=`/`<`…,
//! AND, OR, NOT, parentheses), a random caller scope and `access_by` read scopes, and a random
//! order. The registry's answer — every page walked with its cursor, through a signed page
//! token as `ListMailboxes` does, and the total — must be exactly the reference's: the rows of
//! the organisation the scope covers that the filter holds for, sorted by the key then id.
//!
//! The reference reads each condition straight from its definition on plain Rust values. It
//! compares text as the stack's PostgreSQL does (`initdb --locale=C.UTF-8`: code-point order,
//! Unicode case folding).

mod reference;
mod rows;
mod scoped_totals;

use chrono::Utc;
use mailroom_aip::token::PageTokenKey;
use mailroom_mailboxes::list::{self, Cursor};
use mailroom_mailboxes::scope::Scope;
use mailroom_mailboxes::store::list_query::ListQuery;
use mailroom_types::{MailboxId, OrgId, UserId};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use sqlx::{Executor, PgPool};

use reference::{covers, random_filter, random_scope, sort_key, Filter, ORDERS};
use rows::{id, insert, random_rows, test_database, Row};

/// Data sets (fresh rows each) and filter/order cases per data set.
const DATA_SETS: u64 = 4;
const CASES: usize = 60;

#[tokio::test]
async fn the_list_query_agrees_with_a_naive_filter_and_sort_on_random_rows() {
    let (pool, server, database) = test_database().await;
    let tokens = PageTokenKey::new(b"list model test page tokens, 32+ bytes long");
    let mut cases = 0;
    for seed in 0..DATA_SETS {
        let mut rng = StdRng::seed_from_u64(seed);
        let (org, other) = (id::<OrgId>(&mut rng), id::<OrgId>(&mut rng));
        let now = Utc::now();
        let (users, rows) = random_rows(&mut rng, org, other, now);
        insert(&pool, &rows).await;
        for case in 0..CASES {
            let filter = if rng.gen_bool(0.1) {
                None
            } else {
                Some(random_filter(&mut rng, 2, &rows, &users, now))
            };
            let filter_text = filter.as_ref().map(Filter::render).unwrap_or_default();
            let order_name = *ORDERS.choose(&mut rng).expect("orders");
            let direction = ["", " asc", " desc", " DESC"]
                .choose(&mut rng)
                .expect("dir");
            let descending = direction.eq_ignore_ascii_case(" desc");
            let order_text = format!("{order_name}{direction}");
            let scope = random_scope(&mut rng, &rows, &users);
            let mut named = Vec::new();
            if let Some(f) = &filter {
                f.access_by(&mut named);
            }
            let reads: Vec<(UserId, Scope)> = named
                .into_iter()
                .map(|u| (u, random_scope(&mut rng, &rows, &users)))
                .collect();
            let page_size = rng.gen_range(1..8);
            let context = format!(
                "seed {seed} case {case}: filter `{filter_text}`, order `{order_text}`, page size {page_size}, scope {scope:?}, reads {reads:?}"
            );

            let mut expected: Vec<&Row> = rows
                .iter()
                .filter(|r| r.org == org && covers(&scope, r))
                .filter(|r| filter.as_ref().is_none_or(|f| f.holds(r, now, &reads)))
                .collect();
            expected.sort_by(|a, b| {
                let by = (sort_key(order_name, a), a.id).cmp(&(sort_key(order_name, b), b.id));
                if descending {
                    by.reverse()
                } else {
                    by
                }
            });
            let expected: Vec<MailboxId> = expected.iter().map(|r| r.id).collect();

            let cond = list::parse_filter(&filter_text)
                .unwrap_or_else(|e| panic!("{context}: refused: {e}"));
            let order = list::parse_order(&order_text)
                .unwrap_or_else(|e| panic!("{context}: order refused: {e}"));
            let query = ListQuery {
                org,
                scope: &scope,
                filter: cond.as_ref(),
                reads: &reads,
                order,
            };
            let mut walked: Vec<MailboxId> = Vec::new();
            let mut token = String::new();
            for _ in 0..=rows.len() + 1 {
                let after: Option<Cursor> = tokens
                    .decode(&context, &token)
                    .unwrap_or_else(|e| panic!("{context}: page token refused: {e}"));
                let page = query
                    .page(&pool, after.as_ref(), page_size)
                    .await
                    .unwrap_or_else(|e| panic!("{context}: {e}"));
                assert_eq!(page.total, expected.len() as i64, "{context}: total_size");
                assert!(!page.estimated, "{context}");
                assert!(page.rows.len() as i64 <= page_size, "{context}");
                walked.extend(page.rows.iter().map(|r| r.row.id));
                match &page.next {
                    Some(cursor) => token = tokens.encode(&context, cursor),
                    None => {
                        token.clear();
                        break;
                    }
                }
            }
            assert!(token.is_empty(), "{context}: the pages never end");
            cases += 1;

            assert_eq!(walked, expected, "{context}");
        }
    }
    eprintln!("{cases} cases over {DATA_SETS} data sets, every one equal to the reference");
    pool.close().await;
    if let Ok(admin) = PgPool::connect(&server).await {
        let _ = admin
            .execute(format!("DROP DATABASE IF EXISTS {database}").as_str())
            .await;
    }
}
