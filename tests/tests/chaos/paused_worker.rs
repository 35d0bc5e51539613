//! A sync worker process paused (SIGSTOP) in the middle of a sync for longer than its lease,
//! then resumed (SIGCONT): another worker has taken the mailbox over and finished it, and the
//! resumed one writes nothing — no index row, no checkpoint, no event.

use std::time::{Duration, Instant};

use prost::Message as _;

use mailroom_tests::chaos::infra::FrontMode;
use mailroom_tests::chaos::{maildir, report, topic};

use crate::common::{compare, until_dovecot_has, SyncRig};

const TEST: &str = "paused_worker";
const FIRST: usize = 2_000;
const LATER: usize = 3_000;
/// The lease's time to live in this test; the pause is several times longer.
const LEASE_TTL_MS: u64 = 2_000;
const PAUSE: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn f_a_paused_worker_writes_nothing_after_it_resumes() {
    let started = Instant::now();
    let mut rig = SyncRig::start(
        TEST,
        &[
            ("MAILROOM_SYNC__BATCH", "200".into()),
            ("MAILROOM_SYNC__LEASE_TTL_MS", LEASE_TTL_MS.to_string()),
        ],
        &[
            ("scheduler", "scheduler"),
            ("worker-1", "worker"),
            ("worker-2", "worker"),
        ],
        true,
        FIRST,
        FrontMode::Forward { bytes_per_sec: 0 },
    )
    .await;
    rig.until_synced(
        chrono::Utc::now() - chrono::Duration::hours(1),
        FIRST as i64,
        Instant::now(),
        Duration::from_secs(120),
    )
    .await;

    // New mail, streamed slowly; the worker on it is paused after a few batches.
    rig.front
        .set(FrontMode::Forward {
            bytes_per_sec: 150_000,
        })
        .await;
    maildir::deliver(&rig.user.username, FIRST, FIRST + LATER);
    until_dovecot_has(&rig.user, (FIRST + LATER) as u32).await;
    rig.cluster.sync_now(&rig.org, &rig.mailbox).await;
    rig.until_indexed_at_least((FIRST + 400) as i64, Duration::from_secs(120))
        .await;
    let victim = rig.holder(Duration::from_secs(10)).await;
    let name = rig.cluster.procs[victim].name.clone();
    let at = rig.indexed().await;
    let paused = Instant::now();
    let since = chrono::Utc::now();
    rig.cluster.proc(victim).pause();
    report(
        TEST,
        format!(
            "paused {name} at {at} of {} indexed (lease {LEASE_TTL_MS} ms)",
            FIRST + LATER
        ),
    );

    // The other worker takes over and finishes while it sleeps. (The person asks again once
    // its lease and its partition are gone: a request made before a sync began is answered by
    // that sync, dead or not — the `worker_killed` test covers that on its own.)
    tokio::time::sleep(Duration::from_secs(8)).await;
    rig.cluster.sync_now(&rig.org, &rig.mailbox).await;
    let taken_over = rig
        .until_synced(since, (FIRST + LATER) as i64, paused, PAUSE * 8)
        .await;
    report(
        TEST,
        format!(
            "the other worker finished {:.1} s after the pause",
            taken_over.as_secs_f64()
        ),
    );
    let mut failures = Vec::new();
    // Its events go out meanwhile (whichever process publishes the schema's outbox).
    let published = Instant::now();
    loop {
        let left = rig.cluster.unpublished().await;
        if left.is_empty() {
            report(
                TEST,
                format!(
                    "the other worker's events published {:.1} s after its sync",
                    published.elapsed().as_secs_f64()
                ),
            );
            break;
        }
        if published.elapsed() > Duration::from_secs(20) {
            failures.push(format!(
                "events stayed unpublished while {name} was paused ({left:?} rows): the paused process holds the outbox relay"
            ));
            report(
                TEST,
                format!("events NOT published while {name} is paused: {left:?}"),
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if paused.elapsed() < PAUSE {
        tokio::time::sleep(PAUSE - paused.elapsed()).await;
    }
    let rows_before = rig.row_versions().await;
    let checkpoint_before = rig.checkpoint().await;
    let status_before = rig.cluster.sync_status(&rig.org, &rig.mailbox).await.ok();
    let outbox_before: i64 = sqlx::query_scalar("SELECT coalesce(max(seq), 0) FROM outbox")
        .fetch_one(&rig.index)
        .await
        .expect("the sync outbox");

    // It wakes up with its old view of the mailbox: give it time to do whatever it would.
    rig.cluster.proc(victim).resume();
    report(
        TEST,
        format!(
            "resumed {name} after {:.1} s",
            paused.elapsed().as_secs_f64()
        ),
    );
    tokio::time::sleep(Duration::from_secs(15)).await;

    let rows_after = rig.row_versions().await;
    let checkpoint_after = rig.checkpoint().await;
    let status_after = rig.cluster.sync_status(&rig.org, &rig.mailbox).await.ok();
    // Every event written since about this mailbox (nothing else would write one: the owner's
    // tier syncs it once a day).
    let written: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT payload FROM outbox WHERE seq > $1 AND record_key = $2")
            .bind(outbox_before)
            .bind(&rig.mailbox)
            .fetch_all(&rig.index)
            .await
            .expect("the sync outbox");
    let mut events_written: std::collections::BTreeMap<String, usize> = Default::default();
    for payload in written {
        let kind = mailroom_proto::events::v1::Envelope::decode(payload.as_slice())
            .map(|e| e.r#type.rsplit('.').next().unwrap_or_default().to_owned())
            .unwrap_or_else(|_| "undecodable".into());
        *events_written.entry(kind).or_insert(0) += 1;
    }
    let rows_written = rows_after.symmetric_difference(&rows_before).count();
    let server = rig.server().await;
    let index = rig.index().await;
    let (lost, extra) = compare(&server, &index);
    let waiting = Instant::now();
    while !rig.cluster.unpublished().await.is_empty() && waiting.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let events = topic::read_all(
        &rig.cluster.brokers,
        &rig.cluster.topic("sync.events"),
        Duration::from_secs(30),
        Duration::from_secs(3),
        |_| false,
    )
    .await;
    let fed = topic::fed_messages(&events, &rig.mailbox);
    let doubled = fed.values().filter(|n| **n > 1).count();
    let fed_new = fed.len();
    report(
        TEST,
        format!(
            "after resuming: index rows rewritten {rows_written}, checkpoint {:?} -> {:?}, events written {events_written:?}, status {:?} -> {:?}; index vs server: lost {}, extra {}; feed: {fed_new} fed, doubled {doubled}",
            (checkpoint_before.0, checkpoint_before.1, checkpoint_before.2),
            (checkpoint_after.0, checkpoint_after.1, checkpoint_after.2),
            status_before.as_ref().map(|s| (s.state, s.last_error.clone())),
            status_after.as_ref().map(|s| (s.state, s.last_error.clone())),
            lost.len(),
            extra.len()
        ),
    );
    if !(lost.is_empty() && extra.is_empty()) {
        failures.push(format!(
            "the index differs from the server: lost {}, extra {}",
            lost.len(),
            extra.len()
        ));
    }
    if rows_written > 0 {
        failures.push(format!(
            "the resumed worker rewrote {rows_written} index rows after losing its lease"
        ));
    }
    if checkpoint_after != checkpoint_before {
        failures
            .push("the resumed worker changed the INBOX checkpoint after losing its lease".into());
    }
    if !events_written.is_empty() {
        failures.push(format!(
            "events written after the resumed worker lost its lease: {events_written:?}"
        ));
    }
    let key = |s: &Option<mailroom_tests::sync_pb::SyncStatus>| {
        s.as_ref()
            .map(|s| (s.state, s.last_error.clone(), s.last_sync_time))
    };
    if key(&status_after) != key(&status_before) {
        failures.push(format!(
            "the resumed worker changed the mailbox's sync status: {:?} -> {:?}",
            key(&status_before),
            key(&status_after)
        ));
    }
    if doubled > 0 {
        failures.push(format!("{doubled} messages fed more than once"));
    }
    if fed_new < LATER {
        failures.push(format!(
            "the feed carried {fed_new} of the {LATER} new messages"
        ));
    }
    let proc = rig.cluster.proc(victim);
    if !proc.alive() {
        failures.push(format!("the resumed worker died: {}", proc.log_tail(20)));
    }
    report(
        TEST,
        format!("total {:.1} s", started.elapsed().as_secs_f64()),
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
