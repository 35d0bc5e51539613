//! Access control over gRPC on loopback, at the access issue's scale: 100k users, 200k
//! mailboxes, 3,280 departments in 8 levels. Run with `.ci/bench access`.
//!
//! Measures: the restart cost (loading every relationship from PostgreSQL into the graph) and
//! the memory the service holds; `Check` flat out (closed loop) and at a fixed 15k/s (open
//! loop, latency counted from when each call was due); a supervisor's `LookupResources` over
//! ~11k subordinates; `LookupSubjects`. Next to them, the gRPC health check on the same
//! server and channels — the transport with no work — so the figures read as ratios.
//! Client and server share this process and the machine's two cores.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use mailroom_tests::access::{object, user};
use mailroom_tests::bench::{drive, drive_at_rate, rss_kib};
use mailroom_tests::{access_pb as apb, authed, spawn_app};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::transport::Channel;
use uuid::Uuid;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 100_000)]
    users: usize,
    #[arg(long, default_value_t = 200_000)]
    mailboxes: usize,
    /// Seconds each workload runs.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Concurrent callers of the closed-loop runs (each level is run against the health
    /// baseline at the same level); the open-loop runs use the largest.
    #[arg(long, value_delimiter = ',', default_value = "8,16,64")]
    concurrency: Vec<usize>,
    /// HTTP/2 connections the callers share.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Calls per second in the open-loop run.
    #[arg(long, default_value_t = 15_000.0)]
    rate: f64,
    /// Checks per CheckBulk call.
    #[arg(long, default_value_t = 10)]
    batch: usize,
}

struct Seeded {
    org: Uuid,
    users: Vec<Uuid>,
    mailboxes: Vec<Uuid>,
    boss: Uuid,
    relationships: usize,
}

/// Writes the organisation straight into access's tables (as identity's events and the
/// mailbox registry would have, only faster), plus one changelog record.
async fn seed(pool: &sqlx::PgPool, args: &Args) -> anyhow::Result<Seeded> {
    let mut rng = StdRng::seed_from_u64(7);
    let (fanout, depth) = (3usize, 8u32);
    let org = Uuid::new_v4();
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
    let users: Vec<Uuid> = (0..args.users).map(|_| Uuid::new_v4()).collect();
    let mailboxes: Vec<Uuid> = (0..args.mailboxes).map(|_| Uuid::new_v4()).collect();
    // The same shape as the engine benchmark: a head per department, everyone a member,
    // 5 admins, 20 managers, two mailboxes per user, a reader grant on one in ten.
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
    for u in users.iter().rev().take(5) {
        rows.push(("admin", org, *u));
    }
    for u in users.iter().rev().skip(5).take(20) {
        rows.push(("mailbox_manager", org, *u));
    }
    for (i, m) in mailboxes.iter().enumerate() {
        rows.push(("owner", *m, users[(i / 2) % users.len()]));
        if i % 10 == 0 {
            rows.push(("reader", *m, users[rng.gen_range(0..users.len())]));
        }
    }
    for chunk in users.chunks(20_000) {
        sqlx::query(
            "INSERT INTO users (user_id, org_id, active) SELECT u, $1, true FROM unnest($2::uuid[]) AS u",
        )
        .bind(org)
        .bind(chunk)
        .execute(pool)
        .await?;
    }
    for chunk in rows.chunks(20_000) {
        let kinds: Vec<&str> = chunk.iter().map(|r| r.0).collect();
        let objects: Vec<Uuid> = chunk.iter().map(|r| r.1).collect();
        let subjects: Vec<Uuid> = chunk.iter().map(|r| r.2).collect();
        sqlx::query(
            "INSERT INTO relationships (org_id, kind, object_id, subject_id) \
             SELECT $1, k, o, s FROM unnest($2::text[], $3::uuid[], $4::uuid[]) AS t(k, o, s)",
        )
        .bind(org)
        .bind(&kinds)
        .bind(&objects)
        .bind(&subjects)
        .execute(pool)
        .await?;
    }
    sqlx::query(
        "INSERT INTO changelog (revision, org_id, changes) VALUES (nextval('revisions'), $1, '[]')",
    )
    .bind(org)
    .execute(pool)
    .await?;
    // The head of a level-2 department supervises 1/9 of the tree (~11k people).
    let boss = users[departments
        .iter()
        .position(|d| *d == levels[2][0])
        .unwrap_or(0)];
    Ok(Seeded {
        org,
        users,
        mailboxes,
        boss,
        relationships: rows.len(),
    })
}

fn header() {
    println!(
        "{:<44} {:>8} {:>10} {:>9} {:>9} {:>7}",
        "workload", "calls", "calls/s", "p50 ms", "p99 ms", "errors"
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let duration = Duration::from_secs(args.seconds);
    let app = spawn_app().await;
    let pool = mailroom_platform::db::connect(
        &secrecy::SecretString::from(app.database_url().to_owned()),
        mailroom_access::SCHEMA,
        4,
    )
    .await?;
    mailroom_platform::db::migrate(&pool, mailroom_access::SCHEMA, &mailroom_access::MIGRATIONS)
        .await?;
    let seeding = Instant::now();
    let seeded = Arc::new(seed(&pool, &args).await?);
    println!(
        "seeded {} users, {} mailboxes, {} relationships in {:.1} s",
        seeded.users.len(),
        seeded.mailboxes.len(),
        seeded.relationships,
        seeding.elapsed().as_secs_f64()
    );

    // The restart: a new replica loads everything from PostgreSQL.
    let before = rss_kib();
    let loading = Instant::now();
    let stop = tokio_util::sync::CancellationToken::new();
    let (_, endpoint) = app.start_access_replica(stop.clone()).await;
    let load = loading.elapsed();
    let memory_mib = rss_kib().saturating_sub(before) as f64 / 1024.0;
    println!(
        "restart (load every relationship, serve): {:.2} s;  memory held by the service: {memory_mib:.0} MiB (RSS growth)",
        load.as_secs_f64()
    );

    let mut channels = Vec::new();
    for _ in 0..args.connections {
        channels.push(Channel::from_shared(endpoint.clone())?.connect().await?);
    }
    let channels = Arc::new(channels);
    let token = Arc::new(app.service_token().await);
    let perms = [
        "mailbox.view",
        "mailbox.modify",
        "mailbox.read_mail",
        "mailbox.sync",
    ];
    let check_op = {
        let (channels, token, seeded) = (channels.clone(), token.clone(), seeded.clone());
        move |i: usize| {
            let mut client = apb::access_service_client::AccessServiceClient::new(
                channels[i % channels.len()].clone(),
            );
            let token = token.clone();
            // A fixed pseudo-random walk over users, mailboxes and permissions.
            let h = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let u = seeded.users[(h as usize) % seeded.users.len()];
            let m = seeded.mailboxes[((h >> 20) as usize) % seeded.mailboxes.len()];
            let permission = perms[i % perms.len()];
            async move {
                client
                    .check(authed(
                        &token,
                        apb::CheckRequest {
                            subject: user(&u.to_string()),
                            permission: permission.into(),
                            resource: object("mailbox", &m.to_string()),
                            at_least_as_fresh_as: None,
                            explain: false,
                        },
                    ))
                    .await
                    .is_ok()
            }
        }
    };
    let health_op = {
        let channels = channels.clone();
        move |i: usize| {
            let mut client = tonic_health::pb::health_client::HealthClient::new(
                channels[i % channels.len()].clone(),
            );
            async move {
                client
                    .check(tonic_health::pb::HealthCheckRequest {
                        service: "mailroom.access.v1.AccessService".into(),
                    })
                    .await
                    .is_ok()
            }
        }
    };
    let most = args.concurrency.iter().copied().max().unwrap_or(64);
    // Warm up connections and the token memo.
    drive("warm-up", most, Duration::from_secs(1), check_op.clone()).await;

    header();
    let mut ratios = Vec::new();
    for &callers in &args.concurrency {
        let health = drive(
            &format!("baseline: grpc.health.v1 Check, {callers} callers"),
            callers,
            duration,
            health_op.clone(),
        )
        .await;
        health.print();
        let closed = drive(
            &format!("Check, {callers} callers (closed loop)"),
            callers,
            duration,
            check_op.clone(),
        )
        .await;
        closed.print();
        ratios.push(format!(
            "{callers} callers: throughput {:.2}x, p99 {:.2}x",
            closed.throughput() / health.throughput(),
            closed.percentile(0.99) / health.percentile(0.99)
        ));
    }
    let open = drive_at_rate(
        &format!("Check at {:.0}/s (open loop)", args.rate),
        args.rate,
        most,
        duration,
        check_op,
    )
    .await;
    open.print();

    // The same load as CheckBulk calls of `batch` checks (how a list filter asks).
    let batch = args.batch;
    let bulk_op = {
        let (channels, token, seeded) = (channels.clone(), token.clone(), seeded.clone());
        move |i: usize| {
            let mut client = apb::access_service_client::AccessServiceClient::new(
                channels[i % channels.len()].clone(),
            );
            let token = token.clone();
            let checks = (0..batch)
                .map(|j| {
                    let h = ((i * batch + j) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                    apb::CheckRequest {
                        subject: user(&seeded.users[(h as usize) % seeded.users.len()].to_string()),
                        permission: perms[j % perms.len()].into(),
                        resource: object(
                            "mailbox",
                            &seeded.mailboxes[((h >> 20) as usize) % seeded.mailboxes.len()]
                                .to_string(),
                        ),
                        at_least_as_fresh_as: None,
                        explain: false,
                    }
                })
                .collect();
            async move {
                client
                    .check_bulk(authed(
                        &token,
                        apb::CheckBulkRequest {
                            checks,
                            at_least_as_fresh_as: None,
                        },
                    ))
                    .await
                    .is_ok_and(|r| r.into_inner().results.len() == batch)
            }
        }
    };
    let bulk = drive_at_rate(
        &format!("CheckBulk x{batch} at {:.0} checks/s (open)", args.rate),
        args.rate / batch as f64,
        (most / 4).max(1),
        duration,
        bulk_op,
    )
    .await;
    bulk.print();

    let lookup_op = {
        let (channels, token, seeded) = (channels.clone(), token.clone(), seeded.clone());
        move |i: usize| {
            let mut client = apb::access_service_client::AccessServiceClient::new(
                channels[i % channels.len()].clone(),
            );
            let (token, boss) = (token.clone(), seeded.boss);
            async move {
                client
                    .lookup_resources(authed(
                        &token,
                        apb::LookupResourcesRequest {
                            subject: user(&boss.to_string()),
                            permission: "mailbox.view".into(),
                            resource_type: "mailbox".into(),
                            page_size: 50_000,
                            page_token: String::new(),
                            at_least_as_fresh_as: None,
                        },
                    ))
                    .await
                    .is_ok_and(|r| r.into_inner().resource_ids.len() > 10_000)
            }
        }
    };
    let lookup = drive(
        "LookupResources, supervisor (~22k mailboxes)",
        2,
        duration,
        lookup_op,
    )
    .await;
    let subjects_op = {
        let (channels, token, seeded) = (channels.clone(), token.clone(), seeded.clone());
        move |i: usize| {
            let mut client = apb::access_service_client::AccessServiceClient::new(
                channels[i % channels.len()].clone(),
            );
            let token = token.clone();
            let m = seeded.mailboxes[(i * 7919) % seeded.mailboxes.len()];
            async move {
                client
                    .lookup_subjects(authed(
                        &token,
                        apb::LookupSubjectsRequest {
                            resource: object("mailbox", &m.to_string()),
                            permission: "mailbox.view".into(),
                            subject_type: "user".into(),
                            at_least_as_fresh_as: None,
                        },
                    ))
                    .await
                    .is_ok()
            }
        }
    };
    let subjects = drive(
        "LookupSubjects (access-by column)",
        most,
        duration,
        subjects_op,
    )
    .await;
    subjects.print();
    println!(
        "{:<44} {:>8} {:>10.0} {:>9.2} {:>9.2} {:>7}   p95 {:.2} ms",
        lookup.name,
        lookup.calls,
        lookup.throughput(),
        lookup.percentile(0.5),
        lookup.percentile(0.99),
        lookup.errors,
        lookup.percentile(0.95)
    );
    println!();
    println!(
        "ratios to the health check on the same channels (same run): {};  open loop achieved {:.0}/s of {:.0}/s asked;  CheckBulk achieved {:.0} checks/s",
        ratios.join("; "),
        open.throughput(),
        args.rate,
        bulk.throughput() * batch as f64
    );
    println!("organisation {}: {} users", seeded.org, seeded.users.len());
    stop.cancel();
    Ok(())
}
