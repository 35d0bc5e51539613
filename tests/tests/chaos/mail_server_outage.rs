//! A mail server that goes away, then is replaced by a tarpit, then hangs in the middle of an
//! answer: its mailboxes back off in a clear state (ERROR, with the reason, retried later),
//! the worker's other mailboxes keep syncing, and all of them recover when it returns.
//!
//! Two affected mailboxes sit behind one front of the stack's Dovecot; a third, healthy one
//! talks to Dovecot directly. One worker with two slots (`WORKER_CONCURRENCY=2`), so two
//! hung syncs would hold every slot if nothing ended them.

use std::time::{Duration, Instant};

use mailroom_tests::chaos::cluster::{Cluster, Deps, Org};
use mailroom_tests::chaos::infra::{Front, FrontMode};
use mailroom_tests::chaos::{maildir, report, test_dir};
use mailroom_tests::mailboxes_pb as mpb;
use mailroom_tests::mailstore::{indexed_messages, new_mail_user, server_messages, MailUser};
use mailroom_tests::sync_pb as spb;
use sqlx::PgPool;

use crate::common::{dovecot, until_dovecot_has};

const TEST: &str = "mail_server_outage";

struct Box_ {
    user: MailUser,
    id: String,
    uuid: uuid::Uuid,
}

async fn failures(index: &PgPool, mailbox: uuid::Uuid) -> i32 {
    sqlx::query_scalar("SELECT failures FROM schedule WHERE mailbox_id = $1")
        .bind(mailbox)
        .fetch_one(index)
        .await
        .unwrap_or(0)
}

async fn indexed(index: &PgPool, mailbox: uuid::Uuid) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM messages WHERE mailbox_id = $1")
        .bind(mailbox)
        .fetch_one(index)
        .await
        .unwrap_or(0)
}

async fn status(cluster: &Cluster, org: &Org, mailbox: &Box_) -> Option<spb::SyncStatus> {
    cluster.sync_status(org, &mailbox.id).await.ok()
}

/// Waits until every mailbox of `boxes` had at least one more failed attempt than in
/// `before`, with the state ERROR and a reason; returns the time it took from `from`.
async fn until_failed(
    (cluster, org, index): (&Cluster, &Org, &PgPool),
    boxes: &[&Box_],
    before: &[i32],
    from: Instant,
    timeout: Duration,
    phase: &str,
) -> Duration {
    let deadline = Instant::now() + timeout;
    loop {
        let mut all = true;
        let mut seen = Vec::new();
        for (b, before) in boxes.iter().zip(before) {
            let n = failures(index, b.uuid).await;
            let s = status(cluster, org, b).await;
            let clear = s.as_ref().is_some_and(|s| {
                s.state == spb::SyncState::Error as i32 && !s.last_error.is_empty()
            });
            all &= n > *before && clear;
            seen.push((n, s.map(|s| (s.state, s.last_error))));
        }
        if all {
            return from.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "{phase}: the affected mailboxes did not fail in a clear state within {timeout:?}: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until a sync of `mailbox` has hung (its lease held by one worker for 6 s, far
/// longer than its sync takes) and then ended as a failure in a clear state; returns the
/// time from `from` until it ended.
async fn until_hung_sync_ends(
    cluster: &Cluster,
    org: &Org,
    index: &PgPool,
    mailbox: &Box_,
    from: Instant,
) -> Duration {
    let timeout = Duration::from_secs(120);
    let mut held: Option<(String, Instant)> = None;
    let mut hung_failures = None;
    loop {
        assert!(
            from.elapsed() < timeout,
            "hanging server: no hung sync of {} ended within {timeout:?} (hung with {:?} failures before)",
            mailbox.id,
            hung_failures
        );
        let holder = crate::common::lease_holder(&cluster.redis_url, &mailbox.id).await;
        match (&held, holder) {
            (Some((h, since)), Some(now)) if *h == now => {
                if hung_failures.is_none() && since.elapsed() >= Duration::from_secs(6) {
                    hung_failures = Some(failures(index, mailbox.uuid).await);
                }
            }
            (_, Some(now)) => held = Some((now, Instant::now())),
            (_, None) => held = None,
        }
        if let Some(before) = hung_failures {
            let s = status(cluster, org, mailbox).await;
            let clear = s.as_ref().is_some_and(|s| {
                s.state == spb::SyncState::Error as i32 && !s.last_error.is_empty()
            });
            if failures(index, mailbox.uuid).await > before && clear {
                return from.elapsed();
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Delivers one more message to the healthy mailbox and waits until it is indexed.
async fn healthy_syncs_on(
    index: &PgPool,
    healthy: &Box_,
    next: &mut usize,
    timeout: Duration,
    phase: &str,
) -> Duration {
    maildir::deliver(&healthy.user.username, *next, *next + 1);
    *next += 1;
    let from = Instant::now();
    loop {
        if indexed(index, healthy.uuid).await >= *next as i64 {
            return from.elapsed();
        }
        assert!(
            from.elapsed() < timeout,
            "{phase}: the healthy mailbox's new message was not indexed within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until each of `boxes` is OK again with everything indexed.
async fn until_ok(
    cluster: &Cluster,
    org: &Org,
    index: &PgPool,
    boxes: &[&Box_],
    expected: &[i64],
    from: Instant,
    timeout: Duration,
) -> Duration {
    let deadline = Instant::now() + timeout;
    loop {
        let mut all = true;
        for (b, n) in boxes.iter().zip(expected) {
            let ok = status(cluster, org, b)
                .await
                .is_some_and(|s| s.state == spb::SyncState::Ok as i32);
            all &= ok && indexed(index, b.uuid).await == *n;
        }
        if all {
            return from.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "the affected mailboxes did not recover within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn e_mailboxes_of_a_dead_or_hanging_server_back_off_and_the_others_sync_on() {
    let started = Instant::now();
    let mut cluster = Cluster::new(test_dir(TEST), Deps::default()).await;
    cluster.tune("MAILROOM_SYNC__WORKER_CONCURRENCY", 2);
    // The whole sync's deadline, scaled down as the I/O timeout is (10 s for 60 s); the
    // per-command deadline stays at its default (600 s).
    cluster.tune("MAILROOM_SYNC__SYNC_DEADLINE_SECS", 30);
    // Back-off scaled down likewise (30 s doubling up to an hour by default), still growing
    // past the length of a failing attempt as the defaults do.
    cluster.tune("MAILROOM_SYNC__RETRY_BASE_SECS", 2);
    cluster.tune("MAILROOM_SYNC__RETRY_CAP_SECS", 30);
    for tier in ["ACTIVE", "RECENT", "IDLE", "DORMANT"] {
        cluster.tune(&format!("MAILROOM_SYNC__TIERS__{tier}_INTERVAL_SECS"), 2);
    }
    cluster
        .start_core_and_sync(&[("scheduler", "scheduler"), ("worker", "worker")])
        .await;
    let org = cluster.create_org().await;
    let owner = cluster.create_user(&org, "owner").await.expect("owner");
    let mut front = Front::start(dovecot(), FrontMode::Forward { bytes_per_sec: 0 }).await;
    let direct = dovecot().port();
    let mut boxes = Vec::new();
    for port in [direct, front.port, front.port] {
        let user = new_mail_user();
        maildir::deliver(&user.username, 0, 10);
        until_dovecot_has(&user, 10).await;
        let mailbox = cluster
            .connect_mailbox(&org, &owner.id, &user, port, false)
            .await;
        boxes.push(Box_ {
            uuid: mailbox.id.parse().expect("a mailbox id"),
            id: mailbox.id,
            user,
        });
    }
    let index = cluster.pool("sync").await;
    let (healthy, affected) = (&boxes[0], [&boxes[1], &boxes[2]]);
    let all: Vec<&Box_> = boxes.iter().collect();
    until_ok(
        &cluster,
        &org,
        &index,
        &all,
        &[10, 10, 10],
        Instant::now(),
        Duration::from_secs(60),
    )
    .await;
    let mut next = 10;

    // 1. Nothing listens any more.
    front.set(FrontMode::Closed).await;
    let down = Instant::now();
    let before = [
        failures(&index, affected[0].uuid).await,
        failures(&index, affected[1].uuid).await,
    ];
    let took = until_failed(
        (&cluster, &org, &index),
        &affected,
        &before,
        down,
        Duration::from_secs(30),
        "server gone",
    )
    .await;
    let synced = healthy_syncs_on(
        &index,
        healthy,
        &mut next,
        Duration::from_secs(30),
        "server gone",
    )
    .await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let attempts = failures(&index, affected[0].uuid).await - before[0];
    let s = status(&cluster, &org, affected[0]).await.expect("status");
    let registry = cluster
        .mailbox(&org, &affected[0].id)
        .await
        .expect("mailbox");
    report(
        TEST,
        format!(
            "server gone: ERROR after {:.1} s ({:?}); {attempts} attempts in {:.0} s; registry {:?}; healthy mailbox synced in {:.1} s",
            took.as_secs_f64(),
            s.last_error,
            down.elapsed().as_secs_f64(),
            mpb::SyncState::try_from(registry.sync_state),
            synced.as_secs_f64()
        ),
    );
    assert!(
        (1..=15).contains(&attempts),
        "the affected mailbox was tried {attempts} times in {:.0} s: no back-off",
        down.elapsed().as_secs_f64()
    );
    let next_sync = s.next_sync_time.map(|t| t.seconds).unwrap_or(0);
    assert!(
        next_sync >= chrono::Utc::now().timestamp() - 1,
        "the status names no next attempt: {s:?}"
    );
    assert_eq!(
        registry.sync_state,
        mpb::SyncState::Error as i32,
        "the registry does not show the failure: {registry:?}"
    );

    // 2. A tarpit where the server was: accepts, then says a line every 5 s and nothing else.
    front
        .set(FrontMode::Tarpit {
            every: Duration::from_secs(5),
        })
        .await;
    let tarpit = Instant::now();
    let before = [
        failures(&index, affected[0].uuid).await,
        failures(&index, affected[1].uuid).await,
    ];
    let took = until_failed(
        (&cluster, &org, &index),
        &affected,
        &before,
        tarpit,
        Duration::from_secs(60),
        "tarpit",
    )
    .await;
    let synced = healthy_syncs_on(
        &index,
        healthy,
        &mut next,
        Duration::from_secs(30),
        "tarpit",
    )
    .await;
    let s = status(&cluster, &org, affected[0]).await.expect("status");
    report(
        TEST,
        format!(
            "tarpit: attempts ended in {:.1} s ({:?}); healthy mailbox synced in {:.1} s",
            took.as_secs_f64(),
            s.last_error,
            synced.as_secs_f64()
        ),
    );

    // 3. The server answers, then hangs in the middle of a large answer, sending an
    //    unsolicited FETCH every 5 s (under the 10 s I/O timeout, as a line every 59 s is under
    //    the default 60 s): only a deadline on the sync ends those syncs.
    for b in affected {
        maildir::deliver(&b.user.username, 10, 2_010);
    }
    front
        .set(FrontMode::Stall {
            after_bytes: 64 * 1024,
            every: Duration::from_secs(5),
        })
        .await;
    let hang = Instant::now();
    let synced = healthy_syncs_on(
        &index,
        healthy,
        &mut next,
        Duration::from_secs(90),
        "hanging server",
    )
    .await;
    let mut took = Duration::ZERO;
    for b in affected {
        took = took.max(until_hung_sync_ends(&cluster, &org, &index, b, hang).await);
    }
    let s = status(&cluster, &org, affected[0]).await.expect("status");
    report(
        TEST,
        format!(
            "hanging server: healthy mailbox synced in {:.1} s; the hung syncs ended in {:.1} s ({:?})",
            synced.as_secs_f64(),
            took.as_secs_f64(),
            s.last_error
        ),
    );

    // 4. The server is back: the affected mailboxes recover, their index equal to the server.
    front.set(FrontMode::Forward { bytes_per_sec: 0 }).await;
    let back = Instant::now();
    let took = until_ok(
        &cluster,
        &org,
        &index,
        &affected,
        &[2_010, 2_010],
        back,
        Duration::from_secs(90),
    )
    .await;
    let mut lost = 0;
    let mut extra = 0;
    for b in affected {
        let mut imap = b.user.session().await;
        let server = server_messages(&mut imap).await;
        let _ = imap.logout().await;
        let indexed = indexed_messages(&index, b.uuid.into()).await;
        lost += server.difference(&indexed).count();
        extra += indexed.difference(&server).count();
    }
    report(
        TEST,
        format!(
            "server back: recovered in {:.1} s; lost {lost}, extra {extra}; processes exited: {:?}; total {:.1} s",
            took.as_secs_f64(),
            cluster.exited(),
            started.elapsed().as_secs_f64()
        ),
    );
    assert_eq!((lost, extra), (0, 0), "the index differs from the server");
    assert!(cluster.exited().is_empty(), "a process exited");
}
