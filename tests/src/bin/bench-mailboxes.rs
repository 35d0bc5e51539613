//! The mailbox list at the registry issue's scale: 200k mailboxes owned by 100k users in an
//! 8-level department tree (3,280 departments). Run with `.ci/bench mailboxes`.
//!
//! Measures `ListMailboxes` over gRPC — filter + sort + a page of 50, with `total_size` — for
//! an admin (the whole organisation) and for a supervisor over ~11k subordinates (a level-2
//! head), and next to each the same query as bare SQL on the same pool size (built by the same
//! code, with the scope access control returned), so the registry's overhead reads as a ratio.
//! Then paging through a sorted list to page 100 with keyset tokens, page 1 against page 100.
//! Client, services and PostgreSQL share this machine's two cores.

use std::time::{Duration, Instant};

use clap::Parser;
use mailroom_mailboxes::list;
use mailroom_mailboxes::scope::Scope;
use mailroom_mailboxes::store::list_query::ListQuery;
use mailroom_platform::types::OrgId;
use mailroom_tests::{access_pb as apb, authed, mailboxes_pb as mpb, spawn_app_with_mailboxes};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
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

const FIRST: &[&str] = &[
    "Ann", "Ivan", "Maria", "Tom", "Yuki", "Olivia", "Sam", "Erin", "Dev", "Lee", "Nora", "Omar",
];
const LAST: &[&str] = &[
    "Lee", "Petrov", "Garcia", "Baker", "Tanaka", "Chen", "Ortiz", "Park", "Patel", "Kim", "Novak",
    "Haddad", "Smith", "Jones", "Müller", "Rossi",
];
const NAMES: &[&str] = &[
    "Work mailbox",
    "Backup mailbox",
    "Sales",
    "Support",
    "Billing",
    "Personal",
];

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

    // The tree, written straight into access's tables (as identity's events would have), and
    // the mailboxes into the registry's (as connects and sync would have), only faster.
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(9);
    let (fanout, depth) = (3usize, 8u32);
    let mut levels: Vec<Vec<Uuid>> = vec![vec![Uuid::new_v4()]];
    for _ in 1..depth {
        let next: Vec<Uuid> = levels
            .last()
            .map(|l| {
                l.iter()
                    .flat_map(|_| (0..fanout).map(|_| Uuid::new_v4()))
                    .collect()
            })
            .unwrap_or_default();
        levels.push(next);
    }
    let departments: Vec<Uuid> = levels.iter().flatten().copied().collect();
    let mut users: Vec<Uuid> = (0..args.users).map(|_| Uuid::new_v4()).collect();
    // The boss heads the first level-2 department: ~1/9 of the tree.
    let boss_at = departments
        .iter()
        .position(|d| *d == levels[2][0])
        .unwrap_or(0);
    users[boss_at] = boss_id;
    let mut rows: Vec<(&str, Uuid, Uuid)> = Vec::new();
    for (level, depts) in levels.iter().enumerate().skip(1) {
        for (i, d) in depts.iter().enumerate() {
            rows.push(("parent", *d, levels[level - 1][i / fanout]));
        }
    }
    for (i, d) in departments.iter().enumerate() {
        rows.push(("head", *d, users[i]));
    }
    for (i, u) in users.iter().enumerate() {
        rows.push(("member", *u, departments[i % departments.len()]));
    }
    let access = mailroom_platform::db::connect(
        &secrecy::SecretString::from(app.database_url().to_owned()),
        "access",
        4,
    )
    .await?;
    for chunk in users.chunks(20_000) {
        sqlx::query("INSERT INTO users (user_id, org_id, active) SELECT u, $1, true FROM unnest($2::uuid[]) AS u ON CONFLICT DO NOTHING")
            .bind(org_id)
            .bind(chunk)
            .execute(&access)
            .await?;
    }
    for chunk in rows.chunks(20_000) {
        let kinds: Vec<&str> = chunk.iter().map(|r| r.0).collect();
        let objects: Vec<Uuid> = chunk.iter().map(|r| r.1).collect();
        let subjects: Vec<Uuid> = chunk.iter().map(|r| r.2).collect();
        sqlx::query("INSERT INTO relationships (org_id, kind, object_id, subject_id) SELECT $1, k, o, s FROM unnest($2::text[], $3::uuid[], $4::uuid[]) AS t(k, o, s) ON CONFLICT DO NOTHING")
            .bind(org_id)
            .bind(&kinds)
            .bind(&objects)
            .bind(&subjects)
            .execute(&access)
            .await?;
    }

    let registry = mailroom_platform::db::connect(
        &secrecy::SecretString::from(app.database_url().to_owned()),
        "mailboxes",
        4,
    )
    .await?;
    let firsts: Vec<String> = users
        .iter()
        .map(|_| FIRST[rng.gen_range(0..FIRST.len())].to_owned())
        .collect();
    let lasts: Vec<String> = users
        .iter()
        .map(|_| LAST[rng.gen_range(0..LAST.len())].to_owned())
        .collect();
    for (start, chunk) in users
        .chunks(20_000)
        .enumerate()
        .map(|(i, c)| (i * 20_000, c))
    {
        sqlx::query("INSERT INTO users (user_id, org_id, first_name, last_name, active) SELECT u, $1, f, l, true FROM unnest($2::uuid[], $3::text[], $4::text[]) AS t(u, f, l) ON CONFLICT DO NOTHING")
            .bind(org_id)
            .bind(chunk)
            .bind(&firsts[start..start + chunk.len()])
            .bind(&lasts[start..start + chunk.len()])
            .execute(&registry)
            .await?;
    }
    let total = args.mailboxes;
    let mut batch = Vec::new();
    for i in 0..total {
        let owner = (i / 2) % users.len();
        batch.push(i);
        if batch.len() == 10_000 || i + 1 == total {
            let ids: Vec<Uuid> = batch.iter().map(|_| Uuid::now_v7()).collect();
            let owners: Vec<Uuid> = batch.iter().map(|i| users[(i / 2) % users.len()]).collect();
            let emails: Vec<String> = batch
                .iter()
                .map(|i| {
                    format!(
                        "{}.{}.{i}@acme.example",
                        firsts[(i / 2) % users.len()].to_lowercase(),
                        lasts[(i / 2) % users.len()].to_lowercase()
                    )
                })
                .collect();
            let names: Vec<String> = batch
                .iter()
                .map(|_| NAMES[rng.gen_range(0..NAMES.len())].to_owned())
                .collect();
            let senders: Vec<String> = batch
                .iter()
                .map(|i| {
                    format!(
                        "{} {}",
                        firsts[(i / 2) % users.len()],
                        lasts[(i / 2) % users.len()]
                    )
                })
                .collect();
            let first_names: Vec<String> = batch
                .iter()
                .map(|i| firsts[(i / 2) % users.len()].clone())
                .collect();
            let last_names: Vec<String> = batch
                .iter()
                .map(|i| lasts[(i / 2) % users.len()].clone())
                .collect();
            let crm: Vec<bool> = batch.iter().map(|_| rng.gen_bool(0.3)).collect();
            let disk: Vec<i64> = batch
                .iter()
                .map(|_| rng.gen_range(0..2_000i64) * 1_048_576)
                .collect();
            let unread: Vec<i64> = batch.iter().map(|_| rng.gen_range(0..500i64)).collect();
            let synced: Vec<Option<chrono::DateTime<chrono::Utc>>> = batch
                .iter()
                .map(|_| {
                    if rng.gen_bool(0.05) {
                        None
                    } else {
                        Some(
                            chrono::Utc::now()
                                - chrono::Duration::minutes(rng.gen_range(0..60 * 24 * 30)),
                        )
                    }
                })
                .collect();
            sqlx::query(
                "INSERT INTO mailboxes (id, org_id, owner_user_id, email, name, sender_name, \
                    imap_host, imap_port, imap_security, imap_username, smtp_host, smtp_port, smtp_security, smtp_username, \
                    password_sealed, password_key, in_crm, disk_bytes, unread_count, message_count, last_sync_time, \
                    sync_state, owner_first_name, owner_last_name) \
                 SELECT id, $1, o, e, n, s, 'imap.acme.example', 993, 'tls', e, 'smtp.acme.example', 465, 'tls', e, \
                    '\\x00'::bytea, 'bench', c, d, u, u * 10, COALESCE(t, '-infinity'), 'ok', fname, lname \
                 FROM unnest($2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[], $7::bool[], $8::bigint[], $9::bigint[], $10::timestamptz[], $11::text[], $12::text[]) \
                    AS x(id, o, e, n, s, c, d, u, t, fname, lname)",
            )
            .bind(org_id)
            .bind(&ids)
            .bind(&owners)
            .bind(&emails)
            .bind(&names)
            .bind(&senders)
            .bind(&crm)
            .bind(&disk)
            .bind(&unread)
            .bind(&synced)
            .bind(&first_names)
            .bind(&last_names)
            .execute(&registry)
            .await?;
            batch.clear();
        }
        let _ = owner;
    }
    sqlx::query("ANALYZE mailboxes").execute(&registry).await?;
    println!(
        "seeded {} users, {} departments in {depth} levels, {} mailboxes in {:.1} s",
        users.len(),
        departments.len(),
        total,
        started.elapsed().as_secs_f64()
    );

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
    };
    let boss_scope = access_client
        .lookup_mailbox_scope(authed(&service, scope_of(boss_id)))
        .await?
        .into_inner();
    println!(
        "supervisor's scope: {} owners (their own and their subordinates')",
        boss_scope.owner_user_ids.len()
    );
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
            // The registry's own query: the page, the bounded count, the estimate above it.
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
        let mut grpc_ms = Vec::new();
        let mut sql_ms = Vec::new();
        let mut total_size = String::new();
        for _ in 0..args.iterations {
            // Interleaved, so both see the same machine.
            let t = Instant::now();
            let page = registry_client
                .clone()
                .list_mailboxes(authed(&token, request(String::new())))
                .await?
                .into_inner();
            grpc_ms.push(t.elapsed().as_secs_f64() * 1e3);
            total_size = if page.total_size_is_estimate {
                format!("~{} match, estimated", page.total_size)
            } else {
                format!("{} match", page.total_size)
            };
            let t = Instant::now();
            let (n, total) = bare(scope.clone()).await?;
            sql_ms.push(t.elapsed().as_secs_f64() * 1e3);
            // An estimate may move with the statistics; an exact count may not.
            if !page.total_size_is_estimate {
                assert_eq!(total as i32, page.total_size);
            }
            assert_eq!(n.min(50), page.mailboxes.len());
        }
        let (g, s) = (percentiles(grpc_ms), percentiles(sql_ms));
        line(
            &format!("{who}: ListMailboxes over gRPC ({total_size})"),
            &g,
        );
        line(&format!("{who}: the same query as bare SQL"), &s);
        println!(
            "    gRPC / bare SQL: p50 {:.2}x, p95 {:.2}x",
            g.p50 / s.p50,
            g.p95 / s.p95
        );
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
            "    {who:<10} p95 {:.2} ms, {:.2}x bare SQL",
            g.p95,
            g.p95 / s.p95
        );
    }
    stop.cancel();
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(())
}
