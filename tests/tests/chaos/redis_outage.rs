//! Redis killed, then back (empty) 15 s later: meanwhile Mailroom does what README says it
//! does without Redis, and afterwards it is as before without a restart of its own.
//!
//! README ("Rate limits hold when Redis does not", "Workers"): sign-in is refused
//! (`UNAVAILABLE`), never let through unlimited; authenticated callers go on (counted per
//! process); a mailbox is synced only under its Redis lease, so none is synced meanwhile;
//! activity (one Redis round trip) is unavailable. Services reconnect by themselves.

use std::time::{Duration, Instant};

use mailroom_tests::chaos::cluster::{Cluster, Deps};
use mailroom_tests::chaos::infra::PrivateRedis;
use mailroom_tests::chaos::{maildir, report, test_dir};
use mailroom_tests::mailstore::new_mail_user;
use mailroom_tests::{authed, identity_pb as pb, sync_pb as spb};
use tonic::Code;

use crate::common::{dovecot, until_dovecot_has};

const TEST: &str = "redis_outage";
const OUTAGE: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn d_without_redis_mailroom_behaves_as_documented_and_recovers() {
    let started = Instant::now();
    let dir = test_dir(TEST);
    let mut redis = PrivateRedis::start(&dir);
    let mut cluster = Cluster::new(
        dir,
        Deps {
            redis_url: Some(redis.url()),
            ..Deps::default()
        },
    )
    .await;
    for tier in ["ACTIVE", "RECENT", "IDLE", "DORMANT"] {
        cluster.tune(&format!("MAILROOM_SYNC__TIERS__{tier}_INTERVAL_SECS"), 2);
    }
    cluster.start_core_and_sync(&[("sync", "both")]).await;
    let org = cluster.create_org().await;
    let person = cluster.create_user(&org, "person").await.expect("a user");
    let person_token = cluster
        .login(&org.address("person"))
        .await
        .expect("sign in")
        .access_token;
    let user = new_mail_user();
    maildir::deliver(&user.username, 0, 5);
    until_dovecot_has(&user, 5).await;
    let mailbox = cluster
        .connect_mailbox(&org, &person.id, &user, dovecot().port(), false)
        .await;
    let index = cluster.pool("sync").await;
    let mailbox_id: uuid::Uuid = mailbox.id.parse().expect("a mailbox id");
    let indexed = || {
        let index = index.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM messages WHERE mailbox_id = $1")
                .bind(mailbox_id)
                .fetch_one(&index)
                .await
                .unwrap_or(-1)
        }
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while indexed().await < 5 {
        assert!(Instant::now() < deadline, "the mailbox was never synced");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let activity = |token: String| {
        let client = cluster.sync();
        async move {
            client
                .clone()
                .record_activity(authed(
                    &token,
                    spb::RecordActivityRequest {
                        client: spb::ClientKind::WebTab as i32,
                    },
                ))
                .await
        }
    };
    activity(person_token.clone())
        .await
        .expect("activity is recorded while Redis is up");
    let pids: Vec<Option<u32>> = cluster.procs.iter().map(|p| p.pid()).collect();

    // Redis goes away.
    redis.kill();
    let killed = Instant::now();
    maildir::deliver(&user.username, 5, 6);
    // Sign-in: refused as unavailable (the first calls may still find a limiter's window).
    let mut sign_in = None;
    while killed.elapsed() < Duration::from_secs(8) {
        match tokio::time::timeout(
            Duration::from_secs(5),
            cluster.login(&org.address("person")),
        )
        .await
        {
            Ok(Err(s)) if s.code() == Code::Unavailable => {
                sign_in = Some(s.message().to_owned());
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
    let listed = cluster
        .identity()
        .list_users(authed(&org.admin_token, pb::ListUsersRequest::default()))
        .await;
    let heartbeat = tokio::time::timeout(Duration::from_secs(5), activity(person_token.clone()))
        .await
        .unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("no answer within 5 s")));
    tokio::time::sleep(OUTAGE.saturating_sub(killed.elapsed())).await;
    let synced_meanwhile = indexed().await;
    report(
        TEST,
        format!(
            "without Redis: sign-in {sign_in:?}; list users {:?}; activity {:?}; index {synced_meanwhile} of 6 after {:.0} s",
            listed.as_ref().map(|_| "OK").map_err(|s| s.code()),
            heartbeat.as_ref().map(|_| "OK").map_err(|s| (s.code(), s.message().to_owned())),
            killed.elapsed().as_secs_f64()
        ),
    );
    assert!(
        sign_in.is_some(),
        "sign-in was not refused as UNAVAILABLE without Redis"
    );
    assert!(
        listed.is_ok(),
        "an authenticated call failed without Redis: {listed:?}"
    );
    assert_eq!(
        heartbeat.as_ref().map_err(|s| s.code()).err(),
        Some(Code::Unavailable),
        "activity without Redis: {heartbeat:?}"
    );
    assert_eq!(
        synced_meanwhile, 5,
        "a mailbox was synced without its lease while Redis was away"
    );

    // Redis is back, empty: each behaviour is probed on its own (a call that hangs is given
    // up after 5 s and tried again), for up to a minute.
    redis.restart();
    let back = Instant::now();
    const CALL: Duration = Duration::from_secs(5);
    const WITHIN: Duration = Duration::from_secs(60);
    let sign_in_probe = async {
        while back.elapsed() < WITHIN {
            if let Ok(Ok(_)) =
                tokio::time::timeout(CALL, cluster.login(&org.address("person"))).await
            {
                return Some(back.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        None
    };
    let activity_probe = async {
        while back.elapsed() < WITHIN {
            if let Ok(Ok(_)) = tokio::time::timeout(CALL, activity(person_token.clone())).await {
                return Some(back.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        None
    };
    let sync_probe = async {
        while back.elapsed() < WITHIN {
            if indexed().await == 6 {
                return Some(back.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        None
    };
    let (signed_in, heartbeat, synced) = tokio::join!(sign_in_probe, activity_probe, sync_probe);
    let same_pids = cluster.procs.iter().map(|p| p.pid()).collect::<Vec<_>>() == pids;
    report(
        TEST,
        format!(
            "Redis back: sign-in after {signed_in:?}, activity after {heartbeat:?}, the waiting message indexed after {synced:?}; same processes {same_pids}, exited {:?}; total {:.1} s",
            cluster.exited(),
            started.elapsed().as_secs_f64()
        ),
    );
    assert!(signed_in.is_some(), "sign-in did not come back with Redis");
    assert!(heartbeat.is_some(), "activity did not come back with Redis");
    assert!(
        synced.is_some(),
        "the mailbox did not sync again with Redis"
    );
    assert!(
        same_pids && cluster.exited().is_empty(),
        "a process exited: {:?}",
        cluster.exited()
    );
}
