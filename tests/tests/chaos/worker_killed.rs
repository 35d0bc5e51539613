//! A sync worker process killed (SIGKILL) in the middle of a sync: another worker finishes
//! it, the index equals the server, and the CRM feed carries every new message exactly once.
//!
//! Two syncs of one mailbox in the CRM, each with a worker killed half-way: the first import
//! of 20,000 messages (which the feed leaves out by design: "none on a first import"), then
//! 3,000 messages that arrive afterwards (each of which the feed must carry once). The
//! server's answers are paced by a front (about 1 MB/s, then 300 kB/s) so the kill lands
//! while batches are being written.

use std::time::{Duration, Instant};

use mailroom_tests::chaos::infra::FrontMode;
use mailroom_tests::chaos::{maildir, report, topic};

use crate::common::{compare, until_dovecot_has, SyncRig};

const TEST: &str = "worker_killed";
const FIRST: usize = 20_000;
const LATER: usize = 3_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sync_worker_killed_mid_sync_loses_and_doubles_nothing() {
    let started = Instant::now();
    let mut rig = SyncRig::start(
        TEST,
        &[("MAILROOM_SYNC__BATCH", "250".into())],
        &[
            ("scheduler", "scheduler"),
            ("worker-1", "worker"),
            ("worker-2", "worker"),
        ],
        true,
        FIRST,
        FrontMode::Forward {
            bytes_per_sec: 1_000_000,
        },
    )
    .await;
    report(
        TEST,
        format!(
            "{FIRST} messages in Dovecot, cluster up in {:.1} s",
            started.elapsed().as_secs_f64()
        ),
    );

    // 1. The first import, its worker killed after a quarter.
    rig.until_indexed_at_least(FIRST as i64 / 4, Duration::from_secs(120))
        .await;
    let victim = rig.holder(Duration::from_secs(10)).await;
    let at = rig.indexed().await;
    let killed = Instant::now();
    let since = chrono::Utc::now();
    rig.cluster.proc(victim).kill();
    report(
        TEST,
        format!(
            "first import: killed {} at {at} of {FIRST} indexed",
            rig.cluster.procs[victim].name
        ),
    );
    let recovered = rig
        .until_synced(since, FIRST as i64, killed, Duration::from_secs(120))
        .await;
    let server = rig.server().await;
    let index = rig.index().await;
    let (lost, extra) = compare(&server, &index);
    report(
        TEST,
        format!(
            "first import: finished by the other worker {:.1} s after the kill; server {}, index {}, lost {}, extra {}",
            recovered.as_secs_f64(),
            server.len(),
            index.len(),
            lost.len(),
            extra.len()
        ),
    );
    assert_eq!(server.len(), FIRST, "Dovecot holds the first import");
    assert!(
        lost.is_empty() && extra.is_empty(),
        "the index differs from the server after the first import: lost {:?}…, extra {:?}…",
        &lost[..lost.len().min(5)],
        &extra[..extra.len().min(5)]
    );
    let first_max_uid = index.iter().map(|m| m.1).max().unwrap_or(0);

    // 2. New mail after the import, its worker killed after a quarter too.
    rig.cluster.proc(victim).restart();
    rig.cluster.ready(victim).await;
    rig.front
        .set(FrontMode::Forward {
            bytes_per_sec: 300_000,
        })
        .await;
    maildir::deliver(&rig.user.username, FIRST, FIRST + LATER);
    until_dovecot_has(&rig.user, (FIRST + LATER) as u32).await;
    rig.cluster.sync_now(&rig.org, &rig.mailbox).await;
    rig.until_indexed_at_least((FIRST + LATER / 4) as i64, Duration::from_secs(120))
        .await;
    let victim = rig.holder(Duration::from_secs(10)).await;
    let at = rig.indexed().await;
    let killed = Instant::now();
    let since = chrono::Utc::now();
    rig.cluster.proc(victim).kill();
    report(
        TEST,
        format!(
            "new mail: killed {} at {at} of {} indexed",
            rig.cluster.procs[victim].name,
            FIRST + LATER
        ),
    );
    let mut failures = Vec::new();
    let recovered = match rig
        .synced_within(
            since,
            (FIRST + LATER) as i64,
            killed,
            Duration::from_secs(45),
        )
        .await
    {
        Ok(took) => took,
        Err(why) => {
            // Recorded; then the person presses "sync now" again, so the rest is still checked.
            failures.push(format!(
                "after the kill during a \"sync now\", no other worker finished the sync: {why}"
            ));
            report(
                TEST,
                format!("new mail: NOT taken over within 45 s; asking again ({why})"),
            );
            let again = Instant::now();
            let since = chrono::Utc::now();
            rig.cluster.sync_now(&rig.org, &rig.mailbox).await;
            let took = rig
                .until_synced(
                    since,
                    (FIRST + LATER) as i64,
                    again,
                    Duration::from_secs(120),
                )
                .await;
            report(
                TEST,
                format!(
                    "new mail: asked again, finished {:.1} s later",
                    took.as_secs_f64()
                ),
            );
            killed.elapsed()
        }
    };
    let server = rig.server().await;
    let index = rig.index().await;
    let (lost, extra) = compare(&server, &index);
    report(
        TEST,
        format!(
            "new mail: finished {:.1} s after the kill; server {}, index {}, lost {}, extra {}",
            recovered.as_secs_f64(),
            server.len(),
            index.len(),
            lost.len(),
            extra.len()
        ),
    );
    if !(lost.is_empty() && extra.is_empty()) {
        failures.push(format!(
            "the index differs from the server after the new mail: lost {:?}…, extra {:?}…",
            &lost[..lost.len().min(5)],
            &extra[..extra.len().min(5)]
        ));
    }

    // 3. The feed, read from the topic: each new message once, nothing of the import twice.
    let new_uids: Vec<u32> = server
        .iter()
        .filter(|m| m.0 == "INBOX" && m.1 > first_max_uid)
        .map(|m| m.1)
        .collect();
    assert_eq!(new_uids.len(), LATER, "Dovecot numbered the new mail");
    rig.cluster.until_published(Duration::from_secs(60)).await;
    let events = topic::read_all(
        &rig.cluster.brokers,
        &rig.cluster.topic("sync.events"),
        Duration::from_secs(60),
        Duration::from_secs(3),
        |_| false,
    )
    .await;
    let fed = topic::fed_messages(&events, &rig.mailbox);
    let missing = new_uids
        .iter()
        .filter(|uid| !fed.contains_key(&("INBOX".to_owned(), **uid)))
        .count();
    let doubled: Vec<_> = fed.iter().filter(|(_, n)| **n > 1).collect();
    let of_import = fed
        .keys()
        .filter(|(folder, uid)| folder == "INBOX" && *uid <= first_max_uid)
        .count();
    report(
        TEST,
        format!(
            "feed: {} new messages, fed {} distinct, lost {missing}, doubled {}, from the first import {of_import} (documented: none)",
            new_uids.len(),
            fed.len(),
            doubled.len()
        ),
    );
    if missing > 0 {
        failures.push(format!(
            "new messages never reached the feed: lost {missing} of {LATER}"
        ));
    }
    if !doubled.is_empty() {
        failures.push(format!(
            "messages fed more than once: {} (e.g. {:?})",
            doubled.len(),
            &doubled[..doubled.len().min(5)]
        ));
    }
    if of_import > 0 {
        failures.push(format!(
            "the feed carried {of_import} messages of the first import as new mail"
        ));
    }
    report(
        TEST,
        format!("total {:.1} s", started.elapsed().as_secs_f64()),
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
