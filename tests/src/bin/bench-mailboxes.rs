//! The mailbox list at the registry issue's scale: 200k mailboxes owned by 100k users in an
//! 8-level department tree (3,280 departments). Run with `.ci/bench mailboxes`.
//!
//! Measures `ListMailboxes` over gRPC — filter + sort + a page of 50, with `total_size` — for
//! an admin (the whole organisation) and for a supervisor over ~11k subordinates (a level-2
//! head), and next to each the same query as bare SQL on the same pool size (built by the same
//! code, with the scope access control returned), so the registry's overhead reads as a ratio.
//! For the supervisor it also runs the design the registry had before issue 26:
//! the owner array bound into three prepared statements (the page, the bounded count and,
//! above the bound, an `EXPLAIN` for the estimate) — the "before" of the same result.
//! The call and its bare statement swap places every iteration, so neither always runs right
//! after the other; the old design runs after both, in a loop of its own.
//! Then paging through a sorted list to page 100 with keyset tokens, page 1 against page 100.
//! Client, services and PostgreSQL share this machine's two cores.

use std::time::{Duration, Instant};

use clap::Parser;
use mailroom_mailboxes::list;
use mailroom_mailboxes::scope::Scope;
use mailroom_mailboxes::store::list_query::{self, ListQuery, EXACT_COUNT_UP_TO};
use mailroom_mailboxes::store::COLUMNS;
use mailroom_platform::types::OrgId;
use mailroom_tests::{access_pb as apb, authed, mailboxes_pb as mpb, spawn_app_with_mailboxes};
use sqlx::{PgPool, Postgres, QueryBuilder};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 100_000)]
    users: usize,
    #[arg(long, default_value_t = 200_000)]
    mailboxes: usize,
    /// Calls per measured query.
    #[arg(long, default_value_t = 200)]
    iterations: usize,
    /// The filter of the measured list.
    #[arg(long, default_value = "in_crm = true AND disk_mb > 100")]
    filter: String,
    /// The sort of the measured list.
    #[arg(long, default_value = "owner")]
    order_by: String,
}

struct Percentiles {
    p50: f64,
    p95: f64,
    mean: f64,
}

fn percentiles(mut ms: Vec<f64>) -> Percentiles {
    ms.sort_by(|a, b| a.total_cmp(b));
    let at = |p: f64| ms[((ms.len() as f64 - 1.0) * p).round() as usize];
    Percentiles {
        p50: at(0.5),
        p95: at(0.95),
        mean: ms.iter().sum::<f64>() / ms.len() as f64,
    }
}

fn line(name: &str, p: &Percentiles) {
    println!(
        "{name:<58} p50 {:>7.2} ms   p95 {:>7.2} ms   mean {:>7.2} ms",
        p.p50, p.p95, p.mean
    );
}

/// The registry's list as it was before issue 26, for a side-by-side: the page and the
/// bounded count (side by side, each with the scope's arrays bound as `= ANY($n)`, kept
/// prepared), then above the bound an `EXPLAIN` of the same WHERE for the estimate. Returns
/// the page's rows (up to 51) and the total.
async fn three_statements(
    pool: &PgPool,
    org: OrgId,
    scope: &Scope,
    filter: Option<&list::Cond>,
    order: list::Order,
) -> anyhow::Result<(usize, i64)> {
    let reads = Vec::new();
    let mut page: QueryBuilder<Postgres> = QueryBuilder::new(format!(
        "SELECT {COLUMNS}, {} FROM mailboxes",
        list_query::sort_value_sql(order)
    ));
    list_query::push_where(&mut page, org, scope, filter, &reads);
    list_query::push_page(&mut page, order, None, 51);
    let mut count: QueryBuilder<Postgres> =
        QueryBuilder::new("SELECT count(*) FROM (SELECT 1 FROM mailboxes");
    list_query::push_where(&mut count, org, scope, filter, &reads);
    count.push(" LIMIT ");
    count.push_bind(EXACT_COUNT_UP_TO + 1);
    count.push(") AS matching");
    let (rows, mut total) = futures::future::try_join(
        page.build().fetch_all(pool),
        count.build_query_scalar::<i64>().fetch_one(pool),
    )
    .await?;
    if total > EXACT_COUNT_UP_TO {
        let mut explain: QueryBuilder<Postgres> =
            QueryBuilder::new("EXPLAIN (FORMAT JSON) SELECT 1 FROM mailboxes");
        list_query::push_where(&mut explain, org, scope, filter, &reads);
        let plan: sqlx::types::Json<serde_json::Value> =
            explain.build_query_scalar().fetch_one(pool).await?;
        total = (plan.0[0]["Plan"]["Plan Rows"].as_f64().unwrap_or(0.0) as i64)
            .max(EXACT_COUNT_UP_TO + 1);
    }
    Ok((rows.len(), total))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let app = spawn_app_with_mailboxes().await;
    let org = app.create_org(0).await;
    let boss = app.create_user(&org, "boss", "").await;
    let boss_token = app
        .login(&boss.login_email)
        .await
        .expect("boss signs in")
        .access_token;
    app.until_known(&org.admin_id).await;
    app.until_known(&boss.id).await;
    let org_id: Uuid = org.id.parse()?;
    let admin_id: Uuid = org.admin_id.parse()?;
    let boss_id: Uuid = boss.id.parse()?;

    let registry =
        mailroom_tests::bench::seed_mailboxes(&app, org_id, boss_id, args.users, args.mailboxes)
            .await?;

    // A fresh access replica loads the tree from its tables; a registry asks it.
    let stop = CancellationToken::new();
    let (mut access_client, access_endpoint) = app.start_access_replica(stop.clone()).await;
    let registry_client = app
        .start_mailboxes(&access_endpoint, app.sealing_keys.clone(), stop.clone())
        .await;
    let service = app.service_token().await;
    let scope_of = |user: Uuid| apb::LookupMailboxScopeRequest {
        subject: mailroom_tests::access::user(&user.to_string()),
        permission: "mailbox.view".into(),
        only_owner_user_ids: Vec::new(),
        at_least_as_fresh_as: None,
        packed_ids: false,
    };
    let boss_scope = access_client
        .lookup_mailbox_scope(authed(&service, scope_of(boss_id)))
        .await?
        .into_inner();
    println!(
        "supervisor's scope: {} owners (their own and their subordinates')",
        boss_scope.owner_user_ids.len()
    );
    // What the registry pays before its query for each supervisor's call: the scope lookup
    // (packed ids, as the registry asks; and as strings, for comparison).
    for packed in [true, false] {
        let mut scope_ms = Vec::new();
        for i in 0..55 {
            let started = std::time::Instant::now();
            let mut asked = scope_of(boss_id);
            asked.packed_ids = packed;
            access_client
                .lookup_mailbox_scope(authed(&service, asked))
                .await?;
            if i >= 5 {
                scope_ms.push(started.elapsed().as_secs_f64() * 1e3);
            }
        }
        scope_ms.sort_by(f64::total_cmp);
        println!(
            "    its LookupMailboxScope alone over gRPC, ids {}: p50 {:.2} ms, p95 {:.2} ms (50 calls)",
            if packed { "packed" } else { "as strings" },
            scope_ms[scope_ms.len() / 2],
            scope_ms[scope_ms.len() * 95 / 100]
        );
    }
    let admin_scope = access_client
        .lookup_mailbox_scope(authed(&service, scope_of(admin_id)))
        .await?
        .into_inner();
    assert!(
        admin_scope.whole_organization,
        "the admin sees the whole organisation"
    );

    let request = |page_token: String| mpb::ListMailboxesRequest {
        page_size: 50,
        page_token,
        filter: args.filter.clone(),
        order_by: args.order_by.clone(),
        read_mask: Some(prost_types::FieldMask {
            paths: [
                "employee",
                "email",
                "name",
                "last_sync_time",
                "sync_state",
                "unread_count",
                "disk_mb",
                "in_crm",
            ]
            .map(String::from)
            .to_vec(),
        }),
        org_id: String::new(),
    };
    let filter = list::parse_filter(&args.filter)?;
    let order = list::parse_order(&args.order_by)?;
    let bare = |scope: Scope| {
        let registry = registry.clone();
        let filter = filter.clone();
        async move {
            // The registry's own query: for the admin the page and the bounded count (and the
            // estimate above it); for the supervisor the page and the count, both at once.
            let reads = Vec::new();
            let query = ListQuery {
                org: OrgId::from_uuid(org_id),
                scope: &scope,
                filter: filter.as_ref(),
                reads: &reads,
                order,
            };
            let page = query.page(&registry, None, 50).await?;
            anyhow::Ok((page.rows.len(), page.total))
        }
    };
    let supervisor_scope = Scope::Some {
        owners: boss_scope
            .owner_user_ids
            .iter()
            .filter_map(|id| id.parse().ok())
            .collect(),
        mailboxes: Vec::new(),
    };

    println!("\nListMailboxes filter `{}`, order_by `{}`, page of 50 with total_size; {} calls each, one caller", args.filter, args.order_by, args.iterations);
    let mut results = Vec::new();
    for (who, token, scope) in [
        ("admin", org.admin_token.clone(), Scope::WholeOrganization),
        ("supervisor", boss_token.clone(), supervisor_scope.clone()),
    ] {
        // Warm both paths (plans, caches) before measuring.
        for _ in 0..5 {
            registry_client
                .clone()
                .list_mailboxes(authed(&token, request(String::new())))
                .await?;
            bare(scope.clone()).await?;
        }
        let old_design = who == "supervisor";
        if old_design {
            for _ in 0..5 {
                three_statements(
                    &registry,
                    OrgId::from_uuid(org_id),
                    &scope,
                    filter.as_ref(),
                    order,
                )
                .await?;
            }
        }
        let mut grpc_ms = Vec::new();
        let mut sql_ms = Vec::new();
        let mut before_ms = Vec::new();
        let mut total_size = String::new();
        let mut last = None;
        let call = || {
            let mut client = registry_client.clone();
            let asked = authed(&token, request(String::new()));
            async move {
                let t = Instant::now();
                let page = client.list_mailboxes(asked).await?.into_inner();
                anyhow::Ok((page, t.elapsed().as_secs_f64() * 1e3))
            }
        };
        let statement = || {
            let run = bare(scope.clone());
            async move {
                let t = Instant::now();
                let found = run.await?;
                anyhow::Ok((found, t.elapsed().as_secs_f64() * 1e3))
            }
        };
        for i in 0..args.iterations {
            // Interleaved, so both see the same machine; the call and its bare statement swap
            // places every iteration, so neither always runs right after the other.
            let ((page, grpc), ((n, total), sql)) = if i % 2 == 0 {
                let called = call().await?;
                (called, statement().await?)
            } else {
                let ran = statement().await?;
                (call().await?, ran)
            };
            grpc_ms.push(grpc);
            sql_ms.push(sql);
            total_size = if page.total_size_is_estimate {
                format!("~{} match, estimated", page.total_size)
            } else {
                format!("{} match", page.total_size)
            };
            // An estimate may move with the statistics; an exact count may not.
            if !page.total_size_is_estimate {
                assert_eq!(total as i32, page.total_size);
            }
            assert_eq!(n.min(50), page.mailboxes.len());
            last = Some(page);
        }
        // The old design on its own afterwards, not between the two above: its three
        // statements bind and `EXPLAIN` the whole owner array, and whichever ran next paid
        // for the caches they left cold.
        if let (true, Some(page)) = (old_design, &last) {
            for _ in 0..args.iterations {
                let t = Instant::now();
                let (n, total) = three_statements(
                    &registry,
                    OrgId::from_uuid(org_id),
                    &scope,
                    filter.as_ref(),
                    order,
                )
                .await?;
                before_ms.push(t.elapsed().as_secs_f64() * 1e3);
                if !page.total_size_is_estimate {
                    assert_eq!(total as i32, page.total_size);
                } else {
                    assert!(total > EXACT_COUNT_UP_TO, "both estimate above the bound");
                }
                assert_eq!(n.min(50), page.mailboxes.len());
            }
        }
        let (g, s) = (percentiles(grpc_ms), percentiles(sql_ms));
        line(
            &format!("{who}: ListMailboxes over gRPC ({total_size})"),
            &g,
        );
        line(&format!("{who}: the same statement as bare SQL"), &s);
        println!(
            "    gRPC / bare SQL: p50 {:.2}x, p95 {:.2}x",
            g.p50 / s.p50,
            g.p95 / s.p95
        );
        if old_design {
            let b = percentiles(before_ms);
            line(
                &format!("{who}: before issue 26, three statements as bare SQL"),
                &b,
            );
            println!(
                "    before / now (bare SQL): p50 {:.2}x, p95 {:.2}x",
                b.p50 / s.p50,
                b.p95 / s.p95
            );
        }
        results.push((who, g, s));
    }

    // Keyset paging: page 1 against page 100 of a sorted list.
    let paging = |token: String| mpb::ListMailboxesRequest {
        page_size: 50,
        page_token: token,
        filter: String::new(),
        order_by: "email".into(),
        read_mask: Some(prost_types::FieldMask {
            paths: vec!["email".into(), "employee".into()],
        }),
        org_id: String::new(),
    };
    let mut first_pages = Vec::new();
    let mut hundredth = Vec::new();
    for round in 0..5 {
        let mut token = String::new();
        for page in 1..=100 {
            let t = Instant::now();
            let answer = registry_client
                .clone()
                .list_mailboxes(authed(&org.admin_token, paging(token.clone())))
                .await?
                .into_inner();
            let ms = t.elapsed().as_secs_f64() * 1e3;
            if page == 1 && round > 0 {
                first_pages.push(ms);
            }
            if page == 100 && round > 0 {
                hundredth.push(ms);
            }
            token = answer.next_page_token;
        }
    }
    let (p1, p100) = (percentiles(first_pages), percentiles(hundredth));
    println!("\nPaging by email, 50 a page, admin, no filter (4 walks of 100 pages)");
    line("page 1", &p1);
    line("page 100 (keyset token)", &p100);
    println!("    page 100 / page 1: {:.2}x", p100.mean / p1.mean);

    println!("\nGoals: p95 <= 15 ms admin, <= 25 ms supervisor, <= 1.3x bare SQL");
    for (who, g, s) in &results {
        println!(
            "    {who:<10} gRPC p50 {:.2} ms p95 {:.2} ms | bare SQL p50 {:.2} ms p95 {:.2} ms | {:.2}x / {:.2}x",
            g.p50,
            g.p95,
            s.p50,
            s.p95,
            g.p50 / s.p50,
            g.p95 / s.p95
        );
    }
    stop.cancel();
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(())
}
