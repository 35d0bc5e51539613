//! Stopping a real service (issue 21, item 6): once its shutdown is asked for, its health says
//! NOT_SERVING at once, but it goes on accepting connections and answering calls for the
//! configured drain — with its background work (the changelog tailer, the consumers) still
//! running, so what it answers is current — then stops listening; a call in flight when the
//! listener closes still gets its answer.

use std::time::{Duration, Instant};

use mailroom_proto::access::v1::access_service_client::AccessServiceClient;
use mailroom_tests::access::{object, request};
use mailroom_tests::{access_pb as apb, authed, spawn_app_with_access};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// The drain the stopping replica is configured with.
const DRAIN: Duration = Duration::from_secs(6);

/// A new connection to `endpoint` (each call below opens its own, as a caller that has just
/// resolved the service would).
async fn dial(endpoint: &str) -> Result<Channel, tonic::transport::Error> {
    Channel::from_shared(endpoint.to_owned())
        .expect("endpoint")
        .connect_timeout(Duration::from_millis(500))
        .connect()
        .await
}

async fn health(endpoint: &str) -> ServingStatus {
    let channel = dial(endpoint).await.expect("the listener accepts");
    let answer = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health answers")
        .into_inner();
    ServingStatus::try_from(answer.status).unwrap_or(ServingStatus::Unknown)
}

/// Whether the replica at `endpoint` has heard of `user` (it answers a check about them).
async fn knows(endpoint: &str, token: &str, user: &str) -> bool {
    let channel = dial(endpoint).await.expect("the listener accepts");
    let mut asked = request(
        user,
        "mailbox.view",
        object("mailbox", &uuid::Uuid::nil().to_string()),
        None,
    );
    asked.explain = true;
    let answer = AccessServiceClient::new(channel)
        .check(authed(token, asked))
        .await
        .expect("a check during the drain is answered")
        .into_inner();
    !answer.reason.contains("has not heard of this user")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopping_service_answers_through_its_drain_then_closes_and_finishes_calls_in_flight() {
    let app = spawn_app_with_access().await;
    let org = app.create_org(0).await;
    let service = app.service_token().await;
    let stop = CancellationToken::new();
    let endpoint = app
        .start_access_replica_on(
            |p| p.shutdown_drain_ms = DRAIN.as_millis() as u64,
            stop.clone(),
        )
        .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !knows(&endpoint, &service, &org.admin_id).await {
        assert!(
            Instant::now() < deadline,
            "the replica never heard of the admin"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(health(&endpoint).await, ServingStatus::Serving);

    // A slow call: the roles table is held by someone else until released below.
    let mut held = app.pool.begin().await.expect("begin");
    sqlx::query("LOCK TABLE access.roles IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *held)
        .await
        .expect("lock the roles");
    let slow = {
        let channel = dial(&endpoint).await.expect("connect");
        let token = org.admin_token.clone();
        tokio::spawn(async move {
            AccessServiceClient::new(channel)
                .list_roles(authed(&token, apb::ListRolesRequest::default()))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!slow.is_finished(), "the roles call did not wait");

    // Stop.
    stop.cancel();
    let stopped = Instant::now();
    let until_not_serving = Instant::now() + Duration::from_secs(2);
    while health(&endpoint).await != ServingStatus::NotServing {
        assert!(
            Instant::now() < until_not_serving,
            "health still SERVING 2 s after the stop"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // During the drain a caller that still has this address connects and is answered, about
    // a person recorded after the stop: the replica still follows the changelog. (Recorded
    // directly: every writer reads the held roles table, so identity's mirror waits for it.)
    let newcomer = mailroom_platform::types::UserId::new();
    {
        let pool = mailroom_platform::db::connect(
            &secrecy::SecretString::from(app.database_url().to_owned()),
            mailroom_access::SCHEMA,
            1,
        )
        .await
        .expect("access pool");
        let mut conn = pool.acquire().await.expect("conn");
        mailroom_access::store::changelog::record(
            &mut conn,
            org.id.parse().expect("org id"),
            &[mailroom_access::store::Change::User {
                user: newcomer,
                active: true,
            }],
        )
        .await
        .expect("record a newcomer");
    }
    let newcomer = newcomer.to_string();
    while !knows(&endpoint, &service, &newcomer).await {
        assert!(
            stopped.elapsed() < DRAIN - Duration::from_secs(1),
            "during the drain the stopping replica never heard of a person made after the stop ({:?} in)",
            stopped.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        stopped.elapsed() < DRAIN,
        "the drain check ran past the drain"
    );
    assert_eq!(health(&endpoint).await, ServingStatus::NotServing);

    // After the drain the listener closes (no new connection), while the slow call is still
    // in flight.
    let until_closed = stopped + DRAIN + Duration::from_secs(5);
    let closed_after = loop {
        if dial(&endpoint).await.is_err() {
            break stopped.elapsed();
        }
        assert!(
            Instant::now() < until_closed,
            "still accepting connections {:?} after the stop (drain {DRAIN:?})",
            stopped.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        closed_after >= DRAIN - Duration::from_millis(200),
        "stopped listening {closed_after:?} after the stop, before the {DRAIN:?} drain ended"
    );
    assert!(
        !slow.is_finished(),
        "the slow call ended before it was let go"
    );

    // The call in flight gets its answer.
    held.rollback().await.expect("release");
    let answered = tokio::time::timeout(Duration::from_secs(10), slow)
        .await
        .expect("the slow call finishes")
        .expect("task")
        .expect("the call in flight when the listener closed is answered")
        .into_inner();
    assert!(!answered.roles.is_empty(), "{answered:?}");
    assert!(
        answered.roles.iter().all(|r| r.org_id == org.id),
        "{answered:?}"
    );
}
