//! A revoked user is out at once, everywhere: dismissal, demotion, a password change and
//! "sign out everywhere" void the user's access tokens on identity and on every access
//! replica within about a second — tokens those replicas had already verified and remembered
//! included, and also on a replica that was down at the time and comes back.

use std::time::{Duration, Instant};

use mailroom_tests::access::{object, request};
use mailroom_tests::{access_pb as apb, authed, identity_pb as pb, spawn_app_with_access, TestApp};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::Code;

type AccessClient = apb::access_service_client::AccessServiceClient<Channel>;

/// A call a user may make about themselves on identity: read their own profile.
async fn identity_call(app: &TestApp, token: &str, user_id: &str) -> Result<(), tonic::Status> {
    app.identity
        .clone()
        .get_user(authed(token, pb::GetUserRequest { id: user_id.into() }))
        .await
        .map(|_| ())
}

/// A call on access: whether the user may view some mailbox. Anything but UNAUTHENTICATED
/// means the token was accepted.
async fn access_call(client: &AccessClient, token: &str, user_id: &str) -> Code {
    match client
        .clone()
        .check(authed(
            token,
            request(user_id, "mailbox.view", object("mailbox", "m-1"), None),
        ))
        .await
    {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

/// Polls until `refused` holds, and says how long that took.
async fn refused_within<F, Fut, T>(limit: Duration, mut refused: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let started = Instant::now();
    loop {
        let last = match refused().await {
            Ok(_) => return started.elapsed(),
            Err(answer) => answer,
        };
        assert!(
            started.elapsed() < limit,
            "the token was still accepted {limit:?} after the revocation (last answer: {last})"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn refused_on_identity(answer: Result<(), tonic::Status>) -> Result<(), String> {
    match answer {
        Err(s) if s.code() == Code::Unauthenticated && s.message().contains("revoked") => Ok(()),
        other => Err(format!("{other:?}")),
    }
}

fn refused_on_access(code: Code) -> Result<(), String> {
    if code == Code::Unauthenticated {
        Ok(())
    } else {
        Err(format!("{code:?}"))
    }
}

#[tokio::test]
async fn a_dismissed_users_token_is_refused_by_identity_and_every_access_replica_within_two_seconds(
) {
    let app = spawn_app_with_access().await;
    let org = app.create_org(0).await;
    let ann = app.create_user(&org, "ann", "").await;
    let token = app
        .login(&ann.login_email)
        .await
        .expect("login")
        .access_token;

    // A separately deployed access replica, verifying tokens on its own; the token is used on
    // every service first, so each has verified and remembered it.
    let shutdown = CancellationToken::new();
    let replica = app
        .start_access_replica_verifying_itself(shutdown.clone())
        .await;
    identity_call(&app, &token, &ann.id)
        .await
        .expect("the token works before the dismissal");
    assert_ne!(
        access_call(&app.access(), &token, &ann.id).await,
        Code::Unauthenticated
    );
    assert_ne!(
        access_call(&replica, &token, &ann.id).await,
        Code::Unauthenticated
    );

    app.identity
        .clone()
        .dismiss_user(authed(
            &org.admin_token,
            pb::DismissUserRequest { id: ann.id.clone() },
        ))
        .await
        .expect("dismiss");

    let on_identity = refused_within(Duration::from_secs(2), || async {
        refused_on_identity(identity_call(&app, &token, &ann.id).await)
    })
    .await;
    let on_access = refused_within(Duration::from_secs(2), || async {
        refused_on_access(access_call(&app.access(), &token, &ann.id).await)
    })
    .await;
    let on_replica = refused_within(Duration::from_secs(2), || async {
        refused_on_access(access_call(&replica, &token, &ann.id).await)
    })
    .await;
    eprintln!("refused after: identity {on_identity:?}, access {on_access:?}, separate replica {on_replica:?}");

    // A replica that was down during the dismissal refuses the token from its first call
    // (UNAVAILABLE while it has not read the topic to its end yet, never an acceptance).
    let late = app
        .start_access_replica_verifying_itself(shutdown.clone())
        .await;
    refused_by_a_late_replica(&late, &token, &ann.id, Duration::from_secs(20)).await;
    // The admin's own token is untouched.
    accepted_once_caught_up(&late, &org.admin_token, &org.admin_id).await;
    shutdown.cancel();
}

/// Calls `client` with `token` from its first moment until it refuses it as revoked: every
/// answer before is UNAVAILABLE (not caught up yet), never an acceptance. Returns how many
/// calls were answered UNAVAILABLE.
async fn refused_by_a_late_replica(
    client: &AccessClient,
    token: &str,
    user_id: &str,
    limit: Duration,
) -> usize {
    let started = Instant::now();
    let mut unavailable = 0;
    loop {
        match access_call(client, token, user_id).await {
            Code::Unauthenticated => return unavailable,
            Code::Unavailable => unavailable += 1,
            other => panic!(
                "a replica started after the dismissal accepted the dismissed user's token \
                 ({other:?} after {:?}, {unavailable} calls answered UNAVAILABLE before)",
                started.elapsed()
            ),
        }
        assert!(
            started.elapsed() < limit,
            "the late replica was still not caught up after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits (at most 30 s) until `client` accepts `token`, as a caught-up replica does.
async fn accepted_once_caught_up(client: &AccessClient, token: &str, user_id: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match access_call(client, token, user_id).await {
            Code::Unavailable if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            code => {
                assert_ne!(code, Code::Unauthenticated, "a valid token was refused");
                assert_ne!(code, Code::Unavailable, "the replica never caught up");
                return;
            }
        }
    }
}

/// Writes `count` revocations of made-up subjects onto the app's revocations topic, as a
/// busy deployment's topic holds: reading it to its end takes a while.
async fn load_revocations_topic(app: &TestApp, count: usize) {
    use futures::StreamExt;
    use mailroom_platform::kafka::{KafkaSettings, Topic};
    use mailroom_proto::events::v1::{envelope::Payload, Envelope, SessionsRevoked};
    use prost::Message;
    let kafka = KafkaSettings::from_config(app.platform());
    kafka
        .ensure_topics(&[Topic::Revocations])
        .await
        .expect("revocations topic");
    let name = kafka.topics.name(Topic::Revocations);
    let producer = kafka.producer().expect("producer");
    let now = chrono::Utc::now().timestamp_millis();
    let sent = futures::stream::iter(0..count)
        .map(|_| {
            let subject = uuid::Uuid::now_v7().to_string();
            let payload = Envelope {
                id: uuid::Uuid::now_v7().to_string(),
                r#type: "mailroom.events.v1.SessionsRevoked".into(),
                aggregate_id: subject.clone(),
                payload: Some(Payload::SessionsRevoked(SessionsRevoked {
                    subject: subject.clone(),
                    not_before_unix_ms: now,
                    reason: 0,
                })),
                ..Default::default()
            }
            .encode_to_vec();
            let producer = producer.clone();
            let name = name.clone();
            async move {
                producer
                    .send(
                        rdkafka::producer::FutureRecord::to(&name)
                            .key(&subject)
                            .payload(&payload),
                        Duration::from_secs(30),
                    )
                    .await
                    .map(drop)
                    .map_err(|(err, _)| err)
            }
        })
        .buffer_unordered(2_000)
        .filter(|sent| std::future::ready(sent.is_err()))
        .count()
        .await;
    assert_eq!(sent, 0, "revocations not written");
}

#[tokio::test]
async fn a_replica_started_while_the_topic_is_long_answers_no_token_before_it_has_read_it() {
    let app = spawn_app_with_access().await;
    let org = app.create_org(0).await;
    let ann = app.create_user(&org, "ann", "").await;
    let token = app
        .login(&ann.login_email)
        .await
        .expect("login")
        .access_token;
    // Many revocations before the dismissal's: a replica reads for a while before it reaches
    // the dismissal (in its partition, the dismissal comes after a few thousand others).
    let loading = Instant::now();
    load_revocations_topic(&app, 40_000).await;
    eprintln!("40000 revocations written in {:?}", loading.elapsed());
    app.identity
        .clone()
        .dismiss_user(authed(
            &org.admin_token,
            pb::DismissUserRequest { id: ann.id.clone() },
        ))
        .await
        .expect("dismiss");
    // The dismissal has reached the broker: a replica following the topic refuses the token.
    let shutdown = CancellationToken::new();
    let follower = app
        .start_access_replica_verifying_itself(shutdown.clone())
        .await;
    let caught_up = refused_within(Duration::from_secs(30), || async {
        refused_on_access(access_call(&follower, &token, &ann.id).await)
    })
    .await;
    eprintln!("a replica started after the load refused the token after {caught_up:?}");

    // A replica that starts serving at once (no wait at start for the topic: as when the
    // wait ran out on a loaded machine) must still not accept the token from its first call.
    let mut platform = app.platform().clone();
    platform.revocations_catch_up_ms = 0;
    let (late, _) =
        crate::key_rotation::start_access(&platform, &app.endpoint, shutdown.clone()).await;
    let unavailable =
        refused_by_a_late_replica(&late, &token, &ann.id, Duration::from_secs(30)).await;
    eprintln!(
        "the late replica answered UNAVAILABLE {unavailable} times before it refused the token"
    );
    accepted_once_caught_up(&late, &org.admin_token, &org.admin_id).await;
    shutdown.cancel();
}

#[tokio::test]
async fn a_demoted_admins_token_stops_working_and_a_refresh_gives_one_without_admin() {
    let app = spawn_app_with_access().await;
    let org = app.create_org(0).await;
    let bea = app.create_user(&org, "bea", "").await;
    app.identity
        .clone()
        .set_admin(authed(
            &org.admin_token,
            pb::SetAdminRequest {
                id: bea.id.clone(),
                admin: true,
            },
        ))
        .await
        .expect("promote");
    let tokens = app.login(&bea.login_email).await.expect("login");
    identity_call(&app, &tokens.access_token, &org.admin_id)
        .await
        .expect("admin token works");

    app.identity
        .clone()
        .set_admin(authed(
            &org.admin_token,
            pb::SetAdminRequest {
                id: bea.id.clone(),
                admin: false,
            },
        ))
        .await
        .expect("demote");
    refused_within(Duration::from_secs(2), || async {
        refused_on_access(access_call(&app.access(), &tokens.access_token, &bea.id).await)
    })
    .await;
    let refreshed = app
        .auth
        .clone()
        .refresh_token(pb::RefreshTokenRequest {
            refresh_token: tokens.refresh_token.clone(),
        })
        .await
        .expect("a demoted user may still refresh")
        .into_inner();
    identity_call(&app, &refreshed.access_token, &bea.id)
        .await
        .expect("the refreshed token works");
}

#[tokio::test]
async fn a_password_change_and_sign_out_everywhere_end_every_session() {
    let app = spawn_app_with_access().await;
    let org = app.create_org(0).await;
    let cy = app.create_user(&org, "cy", "").await;
    let first = app
        .login(&cy.login_email)
        .await
        .expect("login")
        .access_token;
    let second = app
        .login(&cy.login_email)
        .await
        .expect("login")
        .access_token;
    identity_call(&app, &first, &cy.id).await.expect("works");

    app.auth
        .clone()
        .change_password(authed(
            &second,
            pb::ChangePasswordRequest {
                current_password: mailroom_tests::PASSWORD.into(),
                new_password: "a new long password".into(),
            },
        ))
        .await
        .expect("change password");
    for token in [&first, &second] {
        refused_within(Duration::from_secs(2), || async {
            refused_on_access(access_call(&app.access(), token, &cy.id).await)
        })
        .await;
    }

    // Signing in again after the change works at once (the new token is newer than the
    // revocation, to the millisecond), and "sign out everywhere" ends that too.
    let again = app
        .auth
        .clone()
        .login(pb::LoginRequest {
            login_email: cy.login_email.clone(),
            password: "a new long password".into(),
            org_id: String::new(),
        })
        .await
        .expect("login with the new password")
        .into_inner();
    identity_call(&app, &again.access_token, &cy.id)
        .await
        .expect("a token issued after the revocation works");
    app.auth
        .clone()
        .sign_out_everywhere(authed(
            &again.access_token,
            pb::SignOutEverywhereRequest::default(),
        ))
        .await
        .expect("sign out everywhere");
    refused_within(Duration::from_secs(2), || async {
        refused_on_identity(identity_call(&app, &again.access_token, &cy.id).await)
    })
    .await;
    let refresh = app
        .auth
        .clone()
        .refresh_token(pb::RefreshTokenRequest {
            refresh_token: again.refresh_token,
        })
        .await
        .expect_err("signed out everywhere: the refresh token is revoked too");
    assert_eq!(refresh.code(), Code::Unauthenticated);

    // An admin signs a user out; another organisation's user looks like no user at all.
    let dee = app.create_user(&org, "dee", "").await;
    let dee_token = app
        .login(&dee.login_email)
        .await
        .expect("login")
        .access_token;
    app.auth
        .clone()
        .sign_out_everywhere(authed(
            &org.admin_token,
            pb::SignOutEverywhereRequest {
                user_id: dee.id.clone(),
            },
        ))
        .await
        .expect("an admin signs a user out");
    refused_within(Duration::from_secs(2), || async {
        refused_on_access(access_call(&app.access(), &dee_token, &dee.id).await)
    })
    .await;
    let other = app.create_org(0).await;
    let stranger = app
        .auth
        .clone()
        .sign_out_everywhere(authed(
            &other.admin_token,
            pb::SignOutEverywhereRequest {
                user_id: org.admin_id.clone(),
            },
        ))
        .await
        .expect_err("another organisation's user");
    let nobody = uuid::Uuid::now_v7().to_string();
    let unknown = app
        .auth
        .clone()
        .sign_out_everywhere(authed(
            &other.admin_token,
            pb::SignOutEverywhereRequest {
                user_id: nobody.clone(),
            },
        ))
        .await
        .expect_err("an unknown user");
    assert_eq!(stranger.code(), Code::NotFound);
    assert_eq!(unknown.code(), Code::NotFound);
    assert_eq!(
        stranger.message().replace(&org.admin_id, "<id>"),
        unknown.message().replace(&nobody, "<id>")
    );
}

#[tokio::test]
async fn a_refresh_racing_sign_out_everywhere_never_keeps_a_working_session() {
    let app = spawn_app_with_access().await;
    let org = app.create_org(0).await;
    let kim = app.create_user(&org, "kim", "").await;
    for round in 0..8 {
        let tokens = app.login(&kim.login_email).await.expect("login");
        let mut auth = app.auth.clone();
        let refresh = {
            let mut auth = app.auth.clone();
            let refresh_token = tokens.refresh_token.clone();
            async move {
                auth.refresh_token(pb::RefreshTokenRequest { refresh_token })
                    .await
                    .map(|r| r.into_inner())
            }
        };
        let sign_out = auth.sign_out_everywhere(authed(
            &tokens.access_token,
            pb::SignOutEverywhereRequest::default(),
        ));
        let (refreshed, signed_out) = tokio::join!(refresh, sign_out);
        // The caller's own token is valid until the sign-out commits.
        signed_out.expect("sign out everywhere");
        let Ok(refreshed) = refreshed else { continue };
        // Whatever the order, the session the refresh made is over too.
        refused_within(Duration::from_secs(2), || async {
            refused_on_access(access_call(&app.access(), &refreshed.access_token, &kim.id).await)
        })
        .await;
        let again = app
            .auth
            .clone()
            .refresh_token(pb::RefreshTokenRequest {
                refresh_token: refreshed.refresh_token.clone(),
            })
            .await;
        assert!(
            again.is_err(),
            "round {round}: the refresh token made during the sign-out still works"
        );
    }
}

/// A replica that cannot read the revocations topic (the broker unreachable) is not ready —
/// it refuses every token — but alive: its `liveness` health name answers SERVING, so the
/// liveness probe never restarts a replica that is only behind (it would start reading again).
#[tokio::test]
async fn a_replica_that_has_not_read_the_revocations_is_alive_but_not_ready() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
    let app = spawn_app_with_access().await;
    let mut platform = app.platform().clone();
    // A broker address where nothing listens, and no wait at start for the topic.
    platform.kafka_brokers = format!("127.0.0.1:{}", mailroom_tests::closed_port());
    platform.revocations_catch_up_ms = 0;
    platform.shutdown_drain_ms = 2_000;
    let shutdown = CancellationToken::new();
    let (_, endpoint) =
        crate::key_rotation::start_access(&platform, &app.endpoint, shutdown.clone()).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let channel = loop {
        match Channel::from_shared(endpoint.clone())
            .expect("endpoint")
            .connect()
            .await
        {
            Ok(channel) => break channel,
            Err(err) => {
                assert!(
                    Instant::now() < deadline,
                    "the replica never listened: {err}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let health = HealthClient::new(channel);
    let status = |service: &str| {
        let mut health = health.clone();
        let service = service.to_owned();
        async move {
            health
                .check(HealthCheckRequest { service })
                .await
                .map(|r| r.into_inner().status)
        }
    };
    // Several seconds: the follower goes on failing, and nothing flips.
    for _ in 0..6 {
        assert_eq!(
            status("").await.expect("readiness answers"),
            ServingStatus::NotServing as i32,
            "ready without having read the revocations"
        );
        assert_eq!(
            status("mailroom.access.v1.AccessService")
                .await
                .expect("the service's health answers"),
            ServingStatus::NotServing as i32
        );
        assert_eq!(
            status("liveness").await.expect("liveness answers"),
            ServingStatus::Serving as i32,
            "a replica that is only behind must not look dead"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Still alive while it drains after a stop (readiness stays NOT_SERVING).
    shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        status("").await.expect("readiness answers while draining"),
        ServingStatus::NotServing as i32
    );
    assert_eq!(
        status("liveness")
            .await
            .expect("liveness answers while draining"),
        ServingStatus::Serving as i32
    );
}
