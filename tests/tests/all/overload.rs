//! Overload (issue 26, item 8): beyond what a service admits at once and lets wait, calls are
//! refused at once with RESOURCE_EXHAUSTED — a status the caller can act on — not queued until
//! their deadline nor shed as broken connections; the calls admitted are answered, health keeps
//! answering, and the same channel serves again once the load is gone.

use std::time::{Duration, Instant};

use mailroom_proto::access::v1::access_service_client::AccessServiceClient;
use mailroom_tests::access::{object, request};
use mailroom_tests::{access_pb as apb, authed, spawn_app_with_access};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::Code;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// Call slots and queue of the replica under test.
const LIMIT: usize = 2;
const QUEUE: usize = 2;
const QUEUE_MS: u64 = 300;

async fn dial(endpoint: &str) -> Channel {
    Channel::from_shared(endpoint.to_owned())
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
        .expect("the replica accepts")
}

fn check(token: &str, user: &str) -> tonic::Request<apb::CheckRequest> {
    authed(
        token,
        request(
            user,
            "mailbox.view",
            object("mailbox", &uuid::Uuid::nil().to_string()),
            None,
        ),
    )
}

/// The outcome of one call of the flood, by kind.
#[derive(Default, Debug)]
struct Tally {
    ok: usize,
    refused: usize,
    other: Vec<String>,
}

impl Tally {
    fn add(&mut self, answer: Result<(), tonic::Status>) {
        match answer {
            Ok(()) => self.ok += 1,
            Err(status) if status.code() == Code::ResourceExhausted => {
                assert!(
                    status.message().contains("at capacity")
                        && !status.message().contains("MAILROOM_"),
                    "a refusal says what to do, not the service's sizes: {status:?}"
                );
                assert!(
                    status.metadata().get("grpc-retry-pushback-ms").is_some(),
                    "a refusal says when to retry: {status:?}"
                );
                self.refused += 1;
            }
            Err(status) => self.other.push(format!("{status:?}")),
        }
    }
}

/// `calls` Checks at once over `channel`, each with `deadline` if given.
async fn flood(channel: &Channel, token: &str, calls: usize, deadline: Option<Duration>) -> Tally {
    let mut running = tokio::task::JoinSet::new();
    for _ in 0..calls {
        let mut client = AccessServiceClient::new(channel.clone());
        let mut asked = check(token, &uuid::Uuid::new_v4().to_string());
        if let Some(deadline) = deadline {
            asked.set_timeout(deadline);
        }
        running.spawn(async move { client.check(asked).await.map(|_| ()) });
    }
    let mut tally = Tally::default();
    while let Some(joined) = running.join_next().await {
        tally.add(joined.expect("a call task"));
    }
    tally
}

#[tokio::test(flavor = "multi_thread")]
async fn beyond_its_slots_and_queue_a_service_refuses_calls_resource_exhausted_and_keeps_its_connections(
) {
    let app = spawn_app_with_access().await;
    let org = app.create_org(0).await;
    let service = app.service_token().await;
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let endpoint = app
        .start_access_replica_on(
            |p| {
                p.concurrency_limit = LIMIT;
                p.concurrency_queue = QUEUE;
                p.concurrency_queue_ms = QUEUE_MS;
            },
            stop.clone(),
        )
        .await;
    let channel = dial(&endpoint).await;
    // The replica knows the admin (whose ListRoles below must reach the database).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut asked = check(&service, &org.admin_id);
        asked.get_mut().explain = true;
        let answer = AccessServiceClient::new(channel.clone())
            .check(asked)
            .await
            .expect("a check before the load")
            .into_inner();
        if !answer.reason.contains("has not heard of this user") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the replica never heard of the admin"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Every slot taken by a slow call: the roles table is held by someone else.
    let mut held = app.pool.begin().await.expect("begin");
    sqlx::query("LOCK TABLE access.roles IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *held)
        .await
        .expect("lock the roles");
    let slow: Vec<_> = (0..LIMIT)
        .map(|_| {
            let mut client = AccessServiceClient::new(channel.clone());
            let token = org.admin_token.clone();
            tokio::spawn(async move {
                client
                    .list_roles(authed(&token, apb::ListRolesRequest::default()))
                    .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        slow.iter().all(|call| !call.is_finished()),
        "the roles calls did not wait"
    );

    // One more waits its time in the queue, then is refused.
    let asked = Instant::now();
    let queued = AccessServiceClient::new(channel.clone())
        .check(check(&service, &org.admin_id))
        .await
        .expect_err("no slot freed");
    let waited = asked.elapsed();
    assert_eq!(queued.code(), Code::ResourceExhausted, "{queued:?}");
    assert!(
        waited >= Duration::from_millis(QUEUE_MS) && waited < Duration::from_secs(5),
        "refused after {waited:?}, not after its {QUEUE_MS} ms in the queue"
    );

    // A flood on the same connection: every call answered, refused with a status (the queue
    // fills at once), none lost to a broken connection; health answers meanwhile. The
    // connection has at most 64 streams open at once; the rest wait in the client's transport.
    let flooded = Instant::now();
    let tally = flood(&channel, &service, 3_000, None).await;
    let took = flooded.elapsed();
    assert!(
        tally.other.is_empty(),
        "{:?}",
        &tally.other[..tally.other.len().min(5)]
    );
    assert_eq!(tally.ok, 0, "no slot was free: {tally:?}");
    assert_eq!(tally.refused, 3_000, "{tally:?}");
    assert!(
        took < Duration::from_secs(20),
        "3000 refusals took {took:?}: they are not early"
    );
    let health = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health answers under load")
        .into_inner();
    assert_eq!(health.status, 1, "SERVING under load");

    // The load gone, the calls admitted are answered and the same channel serves again.
    held.rollback().await.expect("release the roles");
    for call in slow {
        call.await
            .expect("a call task")
            .expect("an admitted call is answered");
    }
    AccessServiceClient::new(channel.clone())
        .check(check(&service, &org.admin_id))
        .await
        .expect("the channel serves after the overload");

    // A flood the replica can partly serve: answered or refused, never a transport error,
    // and still the same connection afterwards.
    let tally = flood(&channel, &service, 5_000, None).await;
    assert!(
        tally.other.is_empty(),
        "{:?}",
        &tally.other[..tally.other.len().min(5)]
    );
    assert!(tally.ok > 0, "{tally:?}");
    assert_eq!(tally.ok + tally.refused, 5_000, "{tally:?}");
    AccessServiceClient::new(channel)
        .check(check(&service, &org.admin_id))
        .await
        .expect("the channel serves after the second flood");
}
