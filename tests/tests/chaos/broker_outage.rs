//! The broker stops answering for 30 s while people are being changed: afterwards every
//! acknowledged change's event is on the topic, in order per person, and access control
//! applied them all (nothing in dead letters).
//!
//! The broker is a private tansu, frozen with SIGSTOP and thawed with SIGCONT: its sockets
//! stay open and nothing answers, the harder case for a client (timeouts, not refusals).
//! (It is not killed: this tansu keeps topics in memory only, so a killed one would lose what
//! was published before; the relay's catching up after a restart is covered by the
//! `events` tests.)

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mailroom_proto::events::v1::envelope::Payload;
use mailroom_tests::chaos::cluster::{Cluster, Deps};
use mailroom_tests::chaos::infra::PrivateBroker;
use mailroom_tests::chaos::{report, test_dir, topic};
use mailroom_tests::{authed, identity_pb as pb};

const TEST: &str = "broker_outage";
const PEOPLE: usize = 8;
const OUTAGE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn c_a_broker_outage_delays_events_but_loses_or_reorders_none() {
    let started = Instant::now();
    let dir = test_dir(TEST);
    let broker = PrivateBroker::start(&dir);
    let mut cluster = Cluster::new(
        dir,
        Deps {
            brokers: Some(broker.brokers()),
            ..Deps::default()
        },
    )
    .await;
    let core = cluster.spawn("identity-access", &["identity", "access"], None);
    cluster.ready(core).await;
    let org = cluster.create_org().await;
    let mut people = Vec::new();
    for n in 0..PEOPLE {
        let user = cluster
            .create_user(&org, &format!("p{n}"))
            .await
            .expect("create a person");
        people.push(user.id);
    }
    let pids: Vec<Option<u32>> = cluster.procs.iter().map(|p| p.pid()).collect();

    // Each person's position is changed again and again, one change at a time.
    let acked: Arc<Mutex<BTreeMap<String, Vec<u32>>>> = Arc::default();
    let stop = tokio_util::sync::CancellationToken::new();
    let mut writers = Vec::new();
    for id in people.clone() {
        let (client, token, acked, stop) = (
            cluster.identity(),
            org.admin_token.clone(),
            acked.clone(),
            stop.clone(),
        );
        writers.push(tokio::spawn(async move {
            let mut errors = 0;
            for seq in 1u32.. {
                if stop.is_cancelled() {
                    break;
                }
                let changed = client
                    .clone()
                    .update_user(authed(
                        &token,
                        pb::UpdateUserRequest {
                            user: Some(pb::User {
                                id: id.clone(),
                                position: format!("p{seq:06}"),
                                ..Default::default()
                            }),
                            update_mask: Some(prost_types::FieldMask {
                                paths: vec!["position".into()],
                            }),
                        },
                    ))
                    .await;
                match changed {
                    Ok(_) => acked
                        .lock()
                        .expect("acked")
                        .entry(id.clone())
                        .or_default()
                        .push(seq),
                    Err(_) => errors += 1,
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            errors
        }));
    }
    tokio::time::sleep(Duration::from_secs(8)).await;
    broker.proc.pause();
    let frozen = Instant::now();
    tokio::time::sleep(OUTAGE).await;
    broker.proc.resume();
    let thawed = Instant::now();
    let backlog = cluster.unpublished().await;
    // Recovered when the outage's backlog is gone (no more than the writers' own few left).
    let mut caught_up = None;
    while thawed.elapsed() < Duration::from_secs(8) {
        let left: i64 = cluster.unpublished().await.values().sum();
        if caught_up.is_none() && left <= PEOPLE as i64 {
            caught_up = Some(thawed.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    report(
        TEST,
        format!(
            "broker frozen for {:.1} s; backlog at the thaw {backlog:?}, caught up after {caught_up:?}",
            (thawed - frozen).as_secs_f64()
        ),
    );
    stop.cancel();
    let mut errors = 0;
    for w in writers {
        errors += w.await.unwrap_or(0);
    }
    let acked = acked.lock().expect("acked").clone();
    let total: usize = acked.values().map(Vec::len).sum();

    // Every acknowledged change, in order per person.
    cluster.until_published(Duration::from_secs(90)).await;
    let wanted = acked.clone();
    let events = topic::read_all(
        &cluster.brokers,
        &cluster.topic("identity.events"),
        Duration::from_secs(90),
        Duration::from_secs(10),
        |events| {
            let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
            for e in events {
                if let Some(Payload::UserUpdated(_)) = e.payload {
                    *seen.entry(e.aggregate_id.as_str()).or_default() += 1;
                }
            }
            wanted
                .iter()
                .all(|(id, seqs)| seen.get(id.as_str()).copied().unwrap_or(0) >= seqs.len())
        },
    )
    .await;
    let mut arrived: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for e in &events {
        if let Some(Payload::UserUpdated(u)) = &e.payload {
            let position = u
                .user
                .as_ref()
                .map(|u| u.position.clone())
                .unwrap_or_default();
            if let Some(seq) = position.strip_prefix('p').and_then(|s| s.parse().ok()) {
                arrived.entry(e.aggregate_id.clone()).or_default().push(seq);
            }
        }
    }
    let (mut lost, mut doubled, mut out_of_order) = (0, 0, 0);
    for (id, seqs) in &acked {
        let got = arrived.get(id).cloned().unwrap_or_default();
        lost += seqs.iter().filter(|s| !got.contains(s)).count();
        let mut firsts = Vec::new();
        for s in &got {
            if firsts.contains(s) {
                doubled += 1;
            } else {
                firsts.push(*s);
            }
        }
        out_of_order += firsts.windows(2).filter(|w| w[1] < w[0]).count();
    }
    let dead = cluster.dead_letters().await;
    let same_pids = cluster.procs.iter().map(|p| p.pid()).collect::<Vec<_>>() == pids;
    report(
        TEST,
        format!(
            "{total} changes acknowledged ({errors} refused); on the topic: lost {lost}, out of order {out_of_order}, duplicates {doubled} (consumers drop them by id); dead letters {dead:?}; same processes {same_pids}; total {:.1} s",
            started.elapsed().as_secs_f64()
        ),
    );
    assert!(total > 0, "no change was acknowledged");
    assert_eq!(lost, 0, "acknowledged changes whose event never arrived");
    assert_eq!(out_of_order, 0, "events arrived out of order for a person");
    assert!(dead.is_empty(), "events in dead letters: {dead:?}");
    assert!(
        same_pids && cluster.exited().is_empty(),
        "a process exited: {:?}",
        cluster.exited()
    );
}
