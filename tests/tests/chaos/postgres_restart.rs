//! PostgreSQL crashes (`pg_ctl stop -m immediate`) and comes back 5 s later during a minute of
//! mixed work on all five services, each a process of its own: every acknowledged write is
//! there afterwards, every event took effect once (no dead letters, one invitation mail per
//! invitee, a dismissed person's token refused and their access gone), and the services
//! recovered by themselves (the same processes).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use mailroom_proto::invitations::v1 as ipb;
use mailroom_tests::chaos::cluster::{sink_recipients, Cluster, Deps, Org};
use mailroom_tests::chaos::infra::PrivatePostgres;
use mailroom_tests::chaos::{report, test_dir};
use mailroom_tests::mailstore::new_mail_user;
use mailroom_tests::{authed, identity_pb as pb};
use tokio_util::sync::CancellationToken;
use tonic::Code;

use crate::common::dovecot;

const TEST: &str = "postgres_restart";
const LOAD: Duration = Duration::from_secs(55);
const CRASH_AT: Duration = Duration::from_secs(15);
const DOWN_FOR: Duration = Duration::from_secs(5);

/// What was acknowledged (and when each kind of write first succeeded after the restart).
#[derive(Default)]
struct Ledger {
    /// (index, id, address) of each person created.
    users: Vec<(usize, String, String)>,
    /// (id, their access token from before) of each person dismissed.
    dismissed: Vec<(String, String)>,
    /// (mailbox, owner) of each mailbox connected.
    mailboxes: Vec<(String, String)>,
    /// (invitation, address) of each invitation made.
    invitations: Vec<(String, String)>,
    /// (mailbox, reader) of each grant written.
    grants: Vec<(String, String)>,
    refused: BTreeMap<&'static str, usize>,
    first_ok_after: BTreeMap<&'static str, Duration>,
}

struct Load {
    ledger: Mutex<Ledger>,
    /// Set when PostgreSQL is started again.
    back: Mutex<Option<Instant>>,
}

impl Load {
    fn ok(&self, kind: &'static str) {
        if let Some(back) = *self.back.lock().expect("back") {
            self.ledger
                .lock()
                .expect("ledger")
                .first_ok_after
                .entry(kind)
                .or_insert_with(|| back.elapsed());
        }
    }
    fn refused(&self, kind: &'static str) {
        *self
            .ledger
            .lock()
            .expect("ledger")
            .refused
            .entry(kind)
            .or_insert(0) += 1;
    }
}

async fn people(cluster: Arc<Cluster>, org: Arc<Org>, load: Arc<Load>, stop: CancellationToken) {
    let mut i = 0;
    while !stop.is_cancelled() {
        i += 1;
        let local = format!("u{i}");
        match cluster.create_user(&org, &local).await {
            Ok(user) => {
                load.ok("create user");
                let address = org.address(&local);
                load.ledger.lock().expect("ledger").users.push((
                    i,
                    user.id.clone(),
                    address.clone(),
                ));
                // Every third person is dismissed, signed in first so their token can be
                // tried afterwards.
                if i % 3 == 0 {
                    if let Ok(tokens) = cluster.login(&address).await {
                        let dismissed = cluster
                            .identity()
                            .dismiss_user(authed(
                                &org.admin_token,
                                pb::DismissUserRequest {
                                    id: user.id.clone(),
                                },
                            ))
                            .await;
                        match dismissed {
                            Ok(_) => {
                                load.ok("dismiss user");
                                load.ledger
                                    .lock()
                                    .expect("ledger")
                                    .dismissed
                                    .push((user.id, tokens.access_token));
                            }
                            Err(_) => load.refused("dismiss user"),
                        }
                    }
                }
            }
            Err(_) => load.refused("create user"),
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

async fn mailboxes(cluster: Arc<Cluster>, org: Arc<Org>, load: Arc<Load>, stop: CancellationToken) {
    let mut next = 0;
    while !stop.is_cancelled() {
        let owner = {
            let ledger = load.ledger.lock().expect("ledger");
            let kept: Vec<&(usize, String, String)> =
                ledger.users.iter().filter(|u| u.0 % 3 != 0).collect();
            kept.get(next).map(|u| u.1.clone())
        };
        let Some(owner) = owner else {
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue;
        };
        let user = new_mail_user();
        match cluster
            .try_connect_mailbox(&org, &owner, &user, dovecot().port(), false)
            .await
        {
            Ok(mailbox) => {
                load.ok("connect mailbox");
                next += 1;
                load.ledger
                    .lock()
                    .expect("ledger")
                    .mailboxes
                    .push((mailbox.id, owner));
            }
            // The registry has not heard of a just-made owner yet: not a refusal.
            Err(s) if s.code() == Code::NotFound => {}
            Err(_) => load.refused("connect mailbox"),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn invitations(
    cluster: Arc<Cluster>,
    org: Arc<Org>,
    load: Arc<Load>,
    stop: CancellationToken,
) {
    let mut j = 0;
    while !stop.is_cancelled() {
        j += 1;
        let address = org.address(&format!("inv{j}"));
        let made = cluster
            .invitations()
            .create_invitations(authed(
                &org.admin_token,
                ipb::CreateInvitationsRequest {
                    emails: address.clone(),
                    ..Default::default()
                },
            ))
            .await;
        match made {
            Ok(r) => match r.into_inner().invitations.first() {
                Some(invitation) => {
                    load.ok("invite");
                    load.ledger
                        .lock()
                        .expect("ledger")
                        .invitations
                        .push((invitation.id.clone(), address));
                }
                None => load.refused("invite"),
            },
            Err(_) => load.refused("invite"),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn grants(cluster: Arc<Cluster>, org: Arc<Org>, load: Arc<Load>, stop: CancellationToken) {
    let mut k = 0usize;
    while !stop.is_cancelled() {
        let pick = {
            let ledger = load.ledger.lock().expect("ledger");
            match (ledger.mailboxes.last(), ledger.users.len()) {
                (Some((mailbox, owner)), n) if n > 1 => {
                    let reader = &ledger.users[k % n].1;
                    (reader != owner).then(|| (mailbox.clone(), reader.clone()))
                }
                _ => None,
            }
        };
        k += 1;
        let Some((mailbox, reader)) = pick else {
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue;
        };
        match cluster
            .grant(&org.admin_token, &mailbox, "reader", &reader)
            .await
        {
            Ok(()) => {
                load.ok("grant");
                load.ledger
                    .lock()
                    .expect("ledger")
                    .grants
                    .push((mailbox, reader));
            }
            Err(s) if s.code() == Code::NotFound || s.code() == Code::FailedPrecondition => {}
            Err(_) => load.refused("grant"),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn b_a_postgres_crash_under_load_loses_and_doubles_nothing() {
    let started = Instant::now();
    let since = SystemTime::now();
    let dir = test_dir(TEST);
    let pg = PrivatePostgres::start(&dir);
    let mut cluster = Cluster::new(
        dir,
        Deps {
            database_url: Some(pg.url()),
            ..Deps::default()
        },
    )
    .await;
    cluster.start_each_alone().await;
    let org = Arc::new(cluster.create_org().await);
    let pids: Vec<Option<u32>> = cluster.procs.iter().map(|p| p.pid()).collect();
    let cluster = Arc::new(cluster);
    let load = Arc::new(Load {
        ledger: Mutex::default(),
        back: Mutex::default(),
    });
    let stop = CancellationToken::new();
    let tasks = vec![
        tokio::spawn(people(
            cluster.clone(),
            org.clone(),
            load.clone(),
            stop.clone(),
        )),
        tokio::spawn(mailboxes(
            cluster.clone(),
            org.clone(),
            load.clone(),
            stop.clone(),
        )),
        tokio::spawn(invitations(
            cluster.clone(),
            org.clone(),
            load.clone(),
            stop.clone(),
        )),
        tokio::spawn(grants(
            cluster.clone(),
            org.clone(),
            load.clone(),
            stop.clone(),
        )),
    ];
    let load_started = Instant::now();
    tokio::time::sleep(CRASH_AT).await;
    let pg = Arc::new(pg);
    let crashing = pg.clone();
    tokio::task::spawn_blocking(move || crashing.stop_immediate())
        .await
        .expect("stop PostgreSQL");
    let crashed = Instant::now();
    tokio::time::sleep(DOWN_FOR).await;
    let starting = pg.clone();
    tokio::task::spawn_blocking(move || starting.start_again())
        .await
        .expect("start PostgreSQL");
    *load.back.lock().expect("back") = Some(Instant::now());
    report(
        TEST,
        format!(
            "PostgreSQL crashed at {:.1} s of load, back after {:.1} s",
            (crashed - load_started).as_secs_f64(),
            crashed.elapsed().as_secs_f64()
        ),
    );
    tokio::time::sleep(LOAD.saturating_sub(load_started.elapsed())).await;
    stop.cancel();
    for task in tasks {
        let _ = task.await;
    }
    let settled = Instant::now();
    report(
        TEST,
        "load stopped; waiting for every outbox to be published",
    );

    // Everything published, then checked one by one.
    cluster.until_published(Duration::from_secs(90)).await;
    report(TEST, "published; checking every acknowledged write");
    let ledger = std::mem::take(&mut *load.ledger.lock().expect("ledger"));
    let admin = &org.admin_token;
    let operator_access = cluster.operator_token("access").await;

    let mut users_lost = Vec::new();
    for (_, id, _) in &ledger.users {
        let got = cluster
            .identity()
            .get_user(authed(admin, pb::GetUserRequest { id: id.clone() }))
            .await;
        if got.is_err() {
            users_lost.push(id.clone());
        }
    }
    let mut dismissals_lost = Vec::new();
    for (id, _) in &ledger.dismissed {
        let state = cluster
            .identity()
            .get_user(authed(admin, pb::GetUserRequest { id: id.clone() }))
            .await
            .map(|u| u.into_inner().state)
            .ok();
        if state != Some(pb::UserState::Dismissed as i32) {
            dismissals_lost.push(id.clone());
        }
    }
    // Access control must refuse their tokens (revoked by the dismissals' events): tried in
    // rounds until every one is refused, for a minute at most.
    let mut pending: Vec<&(String, String)> = ledger.dismissed.iter().collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last_answers = BTreeMap::new();
    while !pending.is_empty() && Instant::now() < deadline {
        let mut still = Vec::new();
        for d in pending {
            let (id, token) = (&d.0, &d.1);
            let answer = cluster
                .access()
                .check(authed(
                    token,
                    mailroom_tests::access::request(
                        id,
                        "mailbox.view",
                        mailroom_tests::access::object("mailbox", &uuid::Uuid::nil().to_string()),
                        None,
                    ),
                ))
                .await;
            match answer {
                Err(s) if s.code() == Code::Unauthenticated => {}
                other => {
                    last_answers.insert(
                        id.clone(),
                        format!(
                            "{:?}",
                            other.map(|r| r.into_inner().allowed).map_err(|s| s.code())
                        ),
                    );
                    still.push(d);
                }
            }
        }
        pending = still;
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let tokens_accepted: Vec<(String, String)> = pending
        .iter()
        .map(|d| {
            (
                d.0.clone(),
                last_answers.get(&d.0).cloned().unwrap_or_default(),
            )
        })
        .collect();
    report(TEST, "checked people, dismissals and their tokens");
    let mut mailboxes_lost = Vec::new();
    for (mailbox, _) in &ledger.mailboxes {
        if cluster.mailbox(&org, mailbox).await.is_err() {
            mailboxes_lost.push(mailbox.clone());
        }
    }
    let dismissed: Vec<&String> = ledger.dismissed.iter().map(|d| &d.0).collect();
    let mut pending: Vec<(&String, &String, bool)> = ledger
        .grants
        .iter()
        .map(|(mailbox, reader)| (mailbox, reader, !dismissed.contains(&reader)))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last_answers = BTreeMap::new();
    while !pending.is_empty() && Instant::now() < deadline {
        let mut still = Vec::new();
        for (mailbox, reader, expected) in pending {
            let allowed = cluster
                .check(&operator_access, reader, "mailbox.read_mail", mailbox)
                .await;
            if allowed.as_ref().ok() != Some(&expected) {
                last_answers.insert(
                    (mailbox.clone(), reader.clone()),
                    format!("{:?}", allowed.map_err(|s| s.code())),
                );
                still.push((mailbox, reader, expected));
            }
        }
        pending = still;
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let grants_wrong: Vec<(String, String, bool, String)> = pending
        .iter()
        .map(|(m, r, e)| {
            let last = last_answers
                .get(&((*m).clone(), (*r).clone()))
                .cloned()
                .unwrap_or_default();
            ((*m).clone(), (*r).clone(), *e, last)
        })
        .collect();
    report(TEST, "checked mailboxes and grants");
    let mut invitations_lost = Vec::new();
    let mut sent_twice = Vec::new();
    for (id, _) in &ledger.invitations {
        match cluster
            .invitations()
            .get_invitation(authed(admin, ipb::GetInvitationRequest { id: id.clone() }))
            .await
        {
            Ok(i) if i.get_ref().send_count > 1 => sent_twice.push(id.clone()),
            Ok(_) => {}
            Err(_) => invitations_lost.push(id.clone()),
        }
    }
    // One mail per invitee, each arriving (waiting for the last ones), none twice.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mails_missing, mails_doubled) = loop {
        let mails = sink_recipients(since);
        let count = |a: &String| mails.get(&a.to_ascii_lowercase()).copied().unwrap_or(0);
        let missing: Vec<&String> = ledger
            .invitations
            .iter()
            .map(|i| &i.1)
            .filter(|a| count(a) == 0)
            .collect();
        if missing.is_empty() || Instant::now() >= deadline {
            tokio::time::sleep(Duration::from_secs(3)).await;
            let mails = sink_recipients(since);
            let doubled: Vec<(String, usize)> = ledger
                .invitations
                .iter()
                .filter_map(|(_, a)| {
                    let n = mails.get(&a.to_ascii_lowercase()).copied().unwrap_or(0);
                    (n > 1).then(|| (a.clone(), n))
                })
                .collect();
            break (missing.len(), doubled);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let dead = cluster.dead_letters().await;
    let mut cluster = Arc::try_unwrap(cluster).unwrap_or_else(|_| panic!("the load tasks ended"));
    let same_pids = cluster.procs.iter().map(|p| p.pid()).collect::<Vec<_>>() == pids;
    let exited = cluster.exited();

    report(
        TEST,
        format!(
            "acknowledged: {} people, {} dismissals, {} mailboxes, {} invitations, {} grants; refused during the outage {:?}",
            ledger.users.len(),
            ledger.dismissed.len(),
            ledger.mailboxes.len(),
            ledger.invitations.len(),
            ledger.grants.len(),
            ledger.refused
        ),
    );
    report(
        TEST,
        format!(
            "time to recover (first success after PostgreSQL was back): {:?}",
            ledger
                .first_ok_after
                .iter()
                .map(|(k, d)| format!("{k} {:.1} s", d.as_secs_f64()))
                .collect::<Vec<_>>()
        ),
    );
    report(
        TEST,
        format!(
            "lost: people {}, dismissals {}, mailboxes {}, invitations {}, invitation mails {mails_missing}; doubled: mails {}, sends {}; dismissed tokens still accepted {}; grants wrong {}; dead letters {dead:?}; same processes {same_pids}, exited {exited:?}; checks took {:.1} s; total {:.1} s",
            users_lost.len(),
            dismissals_lost.len(),
            mailboxes_lost.len(),
            invitations_lost.len(),
            mails_doubled.len(),
            sent_twice.len(),
            tokens_accepted.len(),
            grants_wrong.len(),
            settled.elapsed().as_secs_f64(),
            started.elapsed().as_secs_f64()
        ),
    );
    assert!(
        !ledger.users.is_empty() && !ledger.invitations.is_empty(),
        "the load made nothing"
    );
    assert!(
        ledger.first_ok_after.len() >= 3,
        "few kinds of writes succeeded after PostgreSQL came back: {:?}",
        ledger.first_ok_after
    );
    assert!(
        users_lost.is_empty(),
        "acknowledged people lost: {users_lost:?}"
    );
    assert!(
        dismissals_lost.is_empty(),
        "acknowledged dismissals lost: {dismissals_lost:?}"
    );
    assert!(
        mailboxes_lost.is_empty(),
        "acknowledged mailboxes lost: {mailboxes_lost:?}"
    );
    assert!(
        invitations_lost.is_empty(),
        "acknowledged invitations lost: {invitations_lost:?}"
    );
    assert!(dead.is_empty(), "events in dead letters: {dead:?}");
    assert!(
        tokens_accepted.is_empty(),
        "dismissed people's tokens still accepted by access: {tokens_accepted:?}"
    );
    assert!(
        grants_wrong.is_empty(),
        "grants not as written: {grants_wrong:?}"
    );
    assert_eq!(mails_missing, 0, "invitation mails never sent");
    assert!(
        mails_doubled.is_empty() && sent_twice.is_empty(),
        "invitations sent twice: {mails_doubled:?} {sent_twice:?}"
    );
    assert!(
        same_pids && exited.is_empty(),
        "services did not recover by themselves: exited {exited:?}"
    );
}
