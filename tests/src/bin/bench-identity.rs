//! Benchmark of identity over gRPC on loopback: `Login`, `GetUser` and `GetEmailAddressUsage`
//! with 100k users. Run with `.ci/bench` (release build, starts the stack).
//!
//! Each RPC is measured next to a baseline doing the same core work without Mailroom in the
//! way (the bare SQL lookup of the same rows, on the same pool; a bare Argon2id verify), so the
//! figures read as ratios from one run, which holds on a noisy shared machine where absolute
//! numbers drift. The workloads run in `--rounds` interleaved rounds (each RPC next to its
//! baseline: the baseline first in odd rounds, second in even ones) and the ratios are the
//! medians of the rounds' ratios. GetEmailAddressUsage's own baseline is the address's
//! holders (its claim and connected mailboxes, joined to their users); its ratio to the user
//! lookup is shown too.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use futures::FutureExt as _;
use mailroom_tests::bench::drive;
use mailroom_tests::identity_pb as pb;
use mailroom_tests::{authed, spawn_app_with, AppOptions, PASSWORD};
use rand::seq::SliceRandom;

#[derive(Parser)]
struct Args {
    /// Users seeded into the organisation.
    #[arg(long, default_value_t = 100_000)]
    users: i64,
    /// Seconds each workload runs in each round.
    #[arg(long, default_value_t = 4)]
    seconds: u64,
    /// Interleaved rounds of every workload; the ratios are their medians.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Concurrent callers for the lookups.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Concurrent callers for Login (CPU-bound: Argon2id).
    #[arg(long, default_value_t = 4)]
    login_concurrency: usize,
    /// HTTP/2 connections for the second GetUser workload (callers spread over them); the
    /// first uses one, as a `PeerChannel` to one address does.
    #[arg(long, default_value_t = 4)]
    connections: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let duration = Duration::from_secs(args.seconds);
    let app = spawn_app_with(AppOptions {
        login_attempts_per_minute: Some(u32::MAX),
        ..Default::default()
    })
    .await;
    let org = app.create_org(0).await;
    let org_id: uuid::Uuid = org.id.parse()?;

    let seeding = Instant::now();
    let hash = mailroom_identity::passwords::hash(PASSWORD.to_owned()).await?;
    let mut tx = app.pool.begin().await?;
    sqlx::query(
        "INSERT INTO users (id, org_id, state, login_email, contact_email, first_name, last_name, position, password_hash) \
         SELECT gen_random_uuid(), $1, 'active', 'user' || i || '@' || $2, 'user' || i || '@' || $2, \
                'First' || i, 'Last' || lpad(i::text, 7, '0'), 'Engineer', $3 \
         FROM generate_series(1, $4) AS i",
    )
    .bind(org_id)
    .bind(&org.domain)
    .bind(&hash)
    .bind(args.users)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO address_claims (org_id, address, user_id) \
         SELECT org_id, login_email, id FROM users WHERE org_id = $1 AND login_email LIKE 'user%'",
    )
    .bind(org_id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    for table in ["users", "address_claims"] {
        sqlx::query(&format!("ANALYZE {table}"))
            .execute(&app.pool)
            .await?;
    }
    let mut sample: Vec<(uuid::Uuid, String)> =
        sqlx::query_as("SELECT id, login_email FROM users WHERE org_id = $1 AND login_email LIKE 'user%' ORDER BY random() LIMIT 20000")
            .bind(org_id)
            .fetch_all(&app.pool)
            .await?;
    sample.shuffle(&mut rand::thread_rng());
    let sample = Arc::new(sample);
    println!(
        "seeded {} users in {:.1} s; {} rounds of {} s per workload, {} callers ({} for Login), gRPC over loopback",
        args.users,
        seeding.elapsed().as_secs_f64(),
        args.rounds,
        args.seconds,
        args.concurrency,
        args.login_concurrency
    );
    let token = Arc::new(org.admin_token.clone());
    let mut channels = Vec::new();
    for _ in 0..args.connections.max(1) {
        channels.push(
            tonic::transport::Channel::from_shared(app.endpoint.clone())?
                .connect()
                .await?,
        );
    }
    let spread: Arc<Vec<pb::identity_service_client::IdentityServiceClient<_>>> = Arc::new(
        channels
            .into_iter()
            .map(pb::identity_service_client::IdentityServiceClient::new)
            .collect(),
    );
    let health = tonic_health::pb::health_client::HealthClient::new(
        tonic::transport::Channel::from_shared(app.endpoint.clone())?
            .connect()
            .await?,
    );
    let mut rounds: Vec<[f64; 6]> = Vec::new();
    for round in 1..=args.rounds.max(1) {
        println!(
            "\n{:<44} {:>8} {:>10} {:>9} {:>9} {:>7}",
            "workload", "calls", "calls/s", "p50 ms", "p99 ms", "errors"
        );
        // Each workload is a future, not started until awaited: every pair (baseline, RPC)
        // runs in the round's order, the baseline first in odd rounds and second in even ones,
        // so neither always gets the machine as the other left it.
        let base_user = async {
            let (pool, sample) = (app.pool.clone(), sample.clone());
            drive(
                "baseline: SELECT user by id (sqlx)",
                args.concurrency,
                duration,
                move |i| {
                    let (pool, sample) = (pool.clone(), sample.clone());
                    async move {
                        let (id, _) = &sample[i % sample.len()];
                        sqlx::query("SELECT * FROM users WHERE org_id = $1 AND id = $2")
                            .bind(org_id)
                            .bind(id)
                            .fetch_optional(&pool)
                            .await
                            .is_ok_and(|r| r.is_some())
                    }
                },
            )
            .await
        };
        let get_user = async {
            let (client, sample, token) = (app.identity.clone(), sample.clone(), token.clone());
            drive("GetUser (gRPC)", args.concurrency, duration, move |i| {
                let (mut client, sample, token) = (client.clone(), sample.clone(), token.clone());
                async move {
                    let (id, _) = &sample[i % sample.len()];
                    client
                        .get_user(authed(&token, pb::GetUserRequest { id: id.to_string() }))
                        .await
                        .is_ok()
                }
            })
            .await
        };
        // The floor of any call: the health check on the same server, over one connection,
        // through the request-context layer (no call slot, no token), no database.
        let floor = async {
            let health = health.clone();
            drive(
                "floor: grpc.health.v1 Check (gRPC)",
                args.concurrency,
                duration,
                move |_| {
                    let mut health = health.clone();
                    async move {
                        health
                            .check(tonic_health::pb::HealthCheckRequest {
                                service: String::new(),
                            })
                            .await
                            .is_ok()
                    }
                },
            )
            .await
        };
        let get_user_spread = async {
            let (clients, sample, token) = (spread.clone(), sample.clone(), token.clone());
            let name = format!("GetUser (gRPC, {} connections)", clients.len());
            drive(&name, args.concurrency, duration, move |i| {
                let mut client = clients[i % clients.len()].clone();
                let (sample, token) = (sample.clone(), token.clone());
                async move {
                    let (id, _) = &sample[i % sample.len()];
                    client
                        .get_user(authed(&token, pb::GetUserRequest { id: id.to_string() }))
                        .await
                        .is_ok()
                }
            })
            .await
        };
        let base_usage = async {
            let (pool, sample) = (app.pool.clone(), sample.clone());
            drive(
                    "baseline: SELECT holders of address (sqlx)",
                    args.concurrency,
                    duration,
                    move |i| {
                        let (pool, sample) = (pool.clone(), sample.clone());
                        async move {
                            let (_, email) = &sample[i % sample.len()];
                            sqlx::query(
                                "SELECT false AS mailbox, u.* FROM address_claims c JOIN users u ON u.id = c.user_id \
                                 WHERE c.org_id = $1 AND c.address = $2 \
                                 UNION ALL \
                                 SELECT true, u.* FROM mailbox_addresses m JOIN users u ON u.id = m.owner_user_id \
                                 WHERE m.org_id = $1 AND m.address = $2",
                            )
                            .bind(org_id)
                            .bind(email)
                            .fetch_all(&pool)
                            .await
                            .is_ok_and(|rows| rows.len() == 1)
                        }
                    },
                )
                .await
        };
        let usage = async {
            let (client, sample, token) = (app.identity.clone(), sample.clone(), token.clone());
            drive(
                "GetEmailAddressUsage (gRPC)",
                args.concurrency,
                duration,
                move |i| {
                    let (mut client, sample, token) =
                        (client.clone(), sample.clone(), token.clone());
                    async move {
                        let (_, email) = &sample[i % sample.len()];
                        client
                            .get_email_address_usage(authed(
                                &token,
                                pb::GetEmailAddressUsageRequest {
                                    address: email.clone(),
                                },
                            ))
                            .await
                            .is_ok_and(|r| r.into_inner().uses.len() == 2)
                    }
                },
            )
            .await
        };
        let base_verify = async {
            let hash = Arc::new(hash.clone());
            drive(
                "baseline: Argon2id verify (blocking pool)",
                args.login_concurrency,
                duration,
                move |_| {
                    let hash = hash.clone();
                    async move {
                        mailroom_identity::passwords::verify(PASSWORD.to_owned(), (*hash).clone())
                            .await
                            .unwrap_or(false)
                    }
                },
            )
            .await
        };
        let login = async {
            let (auth, sample) = (app.auth.clone(), sample.clone());
            drive("Login (gRPC)", args.login_concurrency, duration, move |i| {
                let (mut auth, sample) = (auth.clone(), sample.clone());
                async move {
                    let (_, email) = &sample[i % sample.len()];
                    auth.login(pb::LoginRequest {
                        login_email: email.clone(),
                        password: PASSWORD.into(),
                        org_id: String::new(),
                    })
                    .await
                    .is_ok()
                }
            })
            .await
        };
        let baseline_first = round % 2 == 1;
        let pairs = [
            (base_user.boxed_local(), get_user.boxed_local()),
            (base_usage.boxed_local(), usage.boxed_local()),
            (base_verify.boxed_local(), login.boxed_local()),
            (floor.boxed_local(), get_user_spread.boxed_local()),
        ];
        let mut results = Vec::new();
        for (baseline, rpc) in pairs {
            let (baseline, rpc) = if baseline_first {
                let baseline = baseline.await;
                (baseline, rpc.await)
            } else {
                let rpc = rpc.await;
                (baseline.await, rpc)
            };
            results.push(baseline);
            results.push(rpc);
        }
        for stats in &results {
            stats.print();
        }
        let ratio = |a: usize, b: usize| {
            results[a].throughput() / results[b].throughput().max(f64::EPSILON)
        };
        rounds.push([
            ratio(1, 0),
            ratio(3, 2),
            ratio(3, 0),
            ratio(5, 4),
            ratio(7, 0),
            ratio(6, 0),
        ]);
        let r = &rounds[rounds.len() - 1];
        println!(
            "round {round}: GetUser {:.2}, GetEmailAddressUsage {:.2} ({:.2} of the user lookup), Login {:.2}; \
             GetUser over {} connections {:.2}; the health check {:.2} of the bare lookup\n",
            r[0], r[1], r[2], r[3], spread.len(), r[4], r[5]
        );
    }
    let median = |i: usize| {
        let mut v: Vec<f64> = rounds.iter().map(|r| r[i]).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let by_round = |i: usize| {
        rounds
            .iter()
            .map(|r| format!("{:.2}", r[i]))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!("medians of {} rounds (by round):", rounds.len());
    println!(
        "GetUser throughput / bare SQL lookup:         {:.2}   ({})",
        median(0),
        by_round(0)
    );
    println!(
        "GetEmailAddressUsage throughput / bare SQL:    {:.2}   ({}; {:.2} of the user lookup)",
        median(1),
        by_round(1),
        median(2)
    );
    println!(
        "Login throughput / bare Argon2id verify:       {:.2}   ({})",
        median(3),
        by_round(3)
    );
    println!(
        "GetUser over {} connections / bare SQL:         {:.2}   ({})",
        spread.len(),
        median(4),
        by_round(4)
    );
    println!(
        "health check (no database) / bare SQL:         {:.2}   ({}): the gRPC floor on this machine",
        median(5),
        by_round(5)
    );
    Ok(())
}
