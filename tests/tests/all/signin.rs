//! Sign-in and password reset as a hostile caller tries them: nothing is learnt about an
//! address without its password, and a reset link is single use, expiring and hashed at rest.

use std::time::{Duration, Instant};

use mailroom_tests::{
    authed, identity_pb as pb, spawn_app, wait_for_mail, wait_for_mail_where, TestApp, PASSWORD,
};
use tonic::Code;

async fn login(
    app: &TestApp,
    email: &str,
    password: &str,
    org_id: &str,
) -> Result<pb::TokenPair, tonic::Status> {
    app.auth
        .clone()
        .login(pb::LoginRequest {
            login_email: email.into(),
            password: password.into(),
            org_id: org_id.into(),
        })
        .await
        .map(|r| r.into_inner())
}

/// The median time of `n` wrong sign-ins, to compare paths with each other.
async fn median_refusal(app: &TestApp, email: &str, n: usize) -> Duration {
    let mut times = Vec::new();
    for _ in 0..n {
        let started = Instant::now();
        let _ = login(app, email, "wrong password!", "").await;
        times.push(started.elapsed());
    }
    times.sort();
    times[n / 2]
}

#[tokio::test]
async fn a_wrong_password_looks_the_same_for_unknown_single_and_ambiguous_addresses() {
    let app = spawn_app().await;
    let first = app.create_org(0).await;
    let second = app.create_org(0).await;
    // One address that signs in to two organisations, and one that signs in to one.
    let shared = first.address("shared");
    let first_shared = app.create_user(&first, "shared", "").await;
    app.try_create_user(&second, &shared, "")
        .await
        .expect("the same address in another organisation");
    let single = first.address("single");
    app.create_user(&first, "single", "").await;
    let unknown = first.address("nobody");

    let refusals: Vec<tonic::Status> = futures::future::join_all(
        [&shared, &single, &unknown].map(|email| login(&app, email, "wrong password!", "")),
    )
    .await
    .into_iter()
    .map(|r| r.expect_err("a wrong password is refused"))
    .collect();
    for refusal in &refusals {
        assert_eq!(refusal.code(), Code::Unauthenticated, "{refusal:?}");
        assert_eq!(refusal.message(), refusals[0].message());
    }
    assert!(
        !refusals[0].message().contains("organisation"),
        "{}",
        refusals[0].message()
    );

    // Each path costs one Argon2id round (one account is tried, however many organisations
    // hold the address), and every refusal is held to the same floor, so none stands out.
    let unknown_time = median_refusal(&app, &unknown, 5).await;
    let single_time = median_refusal(&app, &single, 5).await;
    let shared_time = median_refusal(&app, &shared, 5).await;
    eprintln!("wrong-password medians: unknown {unknown_time:?}, single {single_time:?}, two organisations {shared_time:?}");
    let times = [unknown_time, single_time, shared_time];
    let (fastest, slowest) = (times.iter().min(), times.iter().max());
    if let (Some(fastest), Some(slowest)) = (fastest, slowest) {
        assert!(
            slowest.as_secs_f64() < fastest.as_secs_f64() * 1.25,
            "refusals differ in time: {times:?}"
        );
    }

    // With the right password and no organisation named, the oldest claim on the address
    // signs in (no list of the organisations holding it is given to anyone); naming one
    // signs in there.
    let tokens = login(&app, &shared, PASSWORD, "")
        .await
        .expect("the first organisation's claim is the oldest");
    let me = app
        .identity
        .clone()
        .get_user(authed(
            &tokens.access_token,
            pb::GetUserRequest {
                id: first_shared.id.clone(),
            },
        ))
        .await
        .expect("signed in to the first organisation")
        .into_inner();
    assert_eq!(me.org_id, first.id);
    login(&app, &shared, PASSWORD, &second.id)
        .await
        .expect("signing in to the chosen organisation");
}

#[tokio::test]
async fn a_second_organisation_of_an_address_is_reached_by_naming_it() {
    let app = spawn_app().await;
    let first = app.create_org(0).await;
    let second = app.create_org(0).await;
    let shared = first.address("twice");
    app.create_user(&first, "twice", "").await;
    let mut other = app
        .try_create_user(&second, &shared, "")
        .await
        .expect("same address elsewhere");
    let token = login(&app, &shared, PASSWORD, &second.id)
        .await
        .expect("login")
        .access_token;
    app.auth
        .clone()
        .change_password(authed(
            &token,
            pb::ChangePasswordRequest {
                current_password: PASSWORD.into(),
                new_password: "only the second org knows this".into(),
            },
        ))
        .await
        .expect("change password");
    // Not named: only the oldest claim (the first organisation's) is tried, and the answer is
    // a wrong password's, so nothing is learnt about other organisations.
    let unnamed = login(&app, &shared, "only the second org knows this", "")
        .await
        .expect_err("one account is tried without a name: the oldest claim");
    assert_eq!(unnamed.code(), Code::Unauthenticated);
    assert_eq!(unnamed.message(), "email or password is incorrect");
    let tokens = login(&app, &shared, "only the second org knows this", &second.id)
        .await
        .expect("naming the organisation reaches its user");
    other.state = pb::UserState::Active as i32;
    let me = app
        .identity
        .clone()
        .get_user(authed(
            &tokens.access_token,
            pb::GetUserRequest {
                id: other.id.clone(),
            },
        ))
        .await
        .expect("signed in to the second organisation")
        .into_inner();
    assert_eq!(me.org_id, second.id);
}

/// The token in a password-reset mail's link.
fn reset_token(mail: &str) -> String {
    let unfolded = mail
        .replace("=\r\n", "")
        .replace("=\n", "")
        .replace("=3D", "=");
    let at = unfolded
        .find("token=")
        .expect("the mail carries a reset link");
    unfolded[at + "token=".len()..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

async fn reset(app: &TestApp, token: &str, password: &str) -> Result<(), tonic::Status> {
    app.auth
        .clone()
        .reset_password(pb::ResetPasswordRequest {
            token: token.into(),
            new_password: password.into(),
        })
        .await
        .map(|_| ())
}

#[tokio::test]
async fn a_mailed_reset_link_works_once_and_ends_every_session() {
    let app = spawn_app().await;
    let org = app.create_org(0).await;
    let eve = app.create_user(&org, "eve", "").await;
    let old_token = app
        .login(&eve.login_email)
        .await
        .expect("login")
        .access_token;

    // The same empty answer for an account and for an unknown address.
    for address in [eve.login_email.clone(), org.address("nobody")] {
        app.auth
            .clone()
            .request_password_reset(pb::RequestPasswordResetRequest {
                login_email: address,
            })
            .await
            .expect("the request is accepted whatever the address");
    }
    let mail = wait_for_mail(&app, &eve.login_email, Duration::from_secs(15)).await;
    let token = reset_token(&mail);
    assert!(token.len() >= 40, "a long random token: {token}");
    // Hashed at rest: the token itself is nowhere in the table.
    let stored: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT token_hash FROM identity.password_resets")
            .fetch_all(&app.pool)
            .await
            .expect("read resets");
    assert_eq!(stored.len(), 1, "no link for the unknown address");
    assert!(!stored[0]
        .windows(token.len())
        .any(|w| w == token.as_bytes()));

    let short = reset(&app, &token, "short").await.expect_err("too short");
    assert_eq!(short.code(), Code::InvalidArgument);
    reset(&app, &token, "a brand new password")
        .await
        .expect("reset");
    let again = reset(&app, &token, "another new password")
        .await
        .expect_err("single use");
    assert_eq!(again.code(), Code::Unauthenticated);
    assert!(
        again.message().contains("already used"),
        "{}",
        again.message()
    );

    assert!(
        app.login(&eve.login_email).await.is_err(),
        "the old password is gone"
    );
    login(&app, &eve.login_email, "a brand new password", "")
        .await
        .expect("the new password signs in");
    // The session from before the reset is over.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let status = app
            .identity
            .clone()
            .get_user(authed(
                &old_token,
                pb::GetUserRequest { id: eve.id.clone() },
            ))
            .await;
        if status.is_err_and(|s| s.code() == Code::Unauthenticated) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the old access token still works"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    // A link mailed before a sign-out everywhere is void after it.
    app.auth
        .clone()
        .request_password_reset(pb::RequestPasswordResetRequest {
            login_email: eve.login_email.clone(),
        })
        .await
        .expect("ask again");
    let second = reset_token(
        &wait_for_mail_where(&app, &eve.login_email, Duration::from_secs(15), |m| {
            reset_token(m) != token
        })
        .await,
    );
    let fresh = login(&app, &eve.login_email, "a brand new password", "")
        .await
        .expect("login")
        .access_token;
    app.auth
        .clone()
        .sign_out_everywhere(authed(&fresh, pb::SignOutEverywhereRequest::default()))
        .await
        .expect("sign out everywhere");
    let voided = reset(&app, &second, "yet another password")
        .await
        .expect_err("a sign-out voids open links");
    assert!(
        voided.message().contains("already used"),
        "{}",
        voided.message()
    );

    let forged = reset(&app, "not-a-token-anyone-was-sent", "a brand new password")
        .await
        .expect_err("unknown token");
    assert_eq!(forged.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn an_expired_link_is_refused_and_an_admin_has_one_sent_without_seeing_it() {
    let app = spawn_app().await;
    let org = app.create_org(0).await;
    let fay = app.create_user(&org, "fay", "").await;
    app.identity
        .clone()
        .send_password_reset_link(authed(
            &org.admin_token,
            pb::SendPasswordResetLinkRequest {
                user_id: fay.id.clone(),
            },
        ))
        .await
        .expect("an admin sends a link");
    let mail = wait_for_mail(&app, &fay.login_email, Duration::from_secs(15)).await;
    let token = reset_token(&mail);
    sqlx::query("UPDATE identity.password_resets SET expires_at = now() - interval '1 second'")
        .execute(&app.pool)
        .await
        .expect("age the link");
    let expired = reset(&app, &token, "a brand new password")
        .await
        .expect_err("expired");
    assert!(
        expired.message().contains("expired"),
        "{}",
        expired.message()
    );

    // Only admins send links, and only for their own organisation's users.
    let peer = app.create_user(&org, "gus", "").await;
    let peer_token = app
        .login(&peer.login_email)
        .await
        .expect("login")
        .access_token;
    let denied = app
        .identity
        .clone()
        .send_password_reset_link(authed(
            &peer_token,
            pb::SendPasswordResetLinkRequest {
                user_id: fay.id.clone(),
            },
        ))
        .await
        .expect_err("not an admin");
    assert_eq!(denied.code(), Code::PermissionDenied);
    let other = app.create_org(0).await;
    let foreign = app
        .identity
        .clone()
        .send_password_reset_link(authed(
            &other.admin_token,
            pb::SendPasswordResetLinkRequest {
                user_id: fay.id.clone(),
            },
        ))
        .await
        .expect_err("another organisation's user");
    assert_eq!(foreign.code(), Code::NotFound);
}

#[tokio::test]
async fn reset_requests_are_rate_limited_alike_for_every_address() {
    let app = spawn_app().await;
    let org = app.create_org(0).await;
    let hal = app.create_user(&org, "hal", "").await;
    for address in [hal.login_email.clone(), org.address("nobody")] {
        let mut limited = None;
        for attempt in 0..10 {
            if let Err(status) = app
                .auth
                .clone()
                .request_password_reset(pb::RequestPasswordResetRequest {
                    login_email: address.clone(),
                })
                .await
            {
                limited = Some((attempt, status));
                break;
            }
        }
        let (attempt, status) = limited.expect("requests are limited");
        assert_eq!(attempt, 5, "five an hour, then refused");
        assert_eq!(status.code(), Code::ResourceExhausted);
    }
}

#[tokio::test]
async fn only_the_operator_sets_the_seat_limit_and_admins_see_what_is_used() {
    let app = spawn_app().await;
    let org = app.create_org(10).await;
    app.create_user(&org, "ian", "").await;
    let raise = app
        .identity
        .clone()
        .update_organization(authed(
            &org.admin_token,
            pb::UpdateOrganizationRequest {
                organization: Some(pb::Organization {
                    id: org.id.clone(),
                    seat_limit: 0,
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["seat_limit".into()],
                }),
            },
        ))
        .await
        .expect_err("an admin cannot lift the plan's limit");
    assert_eq!(raise.code(), Code::PermissionDenied);
    assert!(raise.message().contains("operator"), "{}", raise.message());

    let seen = app
        .identity
        .clone()
        .get_organization(authed(
            &org.admin_token,
            pb::GetOrganizationRequest {
                org_id: org.id.clone(),
            },
        ))
        .await
        .expect("an admin reads the organisation")
        .into_inner();
    assert_eq!((seen.seat_limit, seen.seats_used), (10, 2));

    let service = app.service_token().await;
    let raised = app
        .identity
        .clone()
        .update_organization(authed(
            &service,
            pb::UpdateOrganizationRequest {
                organization: Some(pb::Organization {
                    id: org.id.clone(),
                    seat_limit: 20,
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["seat_limit".into()],
                }),
            },
        ))
        .await
        .expect("the operator changes the plan")
        .into_inner();
    assert_eq!(raised.seat_limit, 20);
}
