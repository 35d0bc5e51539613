//! Sign-in and password changes as a guesser tries them, past the per-address limits: one
//! network spraying a password over many addresses and organisations, a botnet guessing one
//! account faster than its pace, and a stolen access token guessing its owner's password
//! through ChangePassword. Each is refused before any hashing; the owner still gets in.

use std::time::{Duration, Instant};

use mailroom_tests::{authed, identity_pb as pb, spawn_app_with, AppOptions, TestApp, PASSWORD};
use tonic::{Code, Request};

use crate::signin_abuse::ThrowawayRedis;

/// A client network no other test (or run) uses this minute: a random IPv6 /64 of the
/// documentation range; `host` picks an address in it.
fn fresh_network() -> impl Fn(u16) -> String {
    let id = uuid::Uuid::new_v4();
    let b = id.as_bytes();
    let (x, y) = (
        u16::from_be_bytes([b[0], b[1]]),
        u16::from_be_bytes([b[2], b[3]]),
    );
    move |host| format!("2001:db8:{x:x}:{y:x}::{host:x}")
}

async fn login_from(
    app: &TestApp,
    client: &str,
    email: &str,
    password: &str,
    org_id: &str,
) -> Result<pb::TokenPair, tonic::Status> {
    let mut request = Request::new(pb::LoginRequest {
        login_email: email.into(),
        password: password.into(),
        org_id: org_id.into(),
    });
    request.metadata_mut().insert(
        "x-forwarded-for",
        client.parse().expect("an address is ASCII"),
    );
    app.auth
        .clone()
        .login(request)
        .await
        .map(|r| r.into_inner())
}

/// Loopback is the trusted proxy: each call names its client in `x-forwarded-for`. 60
/// attempts a minute from one network, whatever the addresses.
fn sixty_a_minute_per_network(config: &mut mailroom_identity::IdentityConfig) {
    config.trusted_proxies = vec!["127.0.0.0/8".into()];
    config.login_attempts_per_network_per_minute = 60;
    config.login_failure_floor_ms = 0;
}

#[tokio::test]
async fn one_network_spraying_a_password_over_a_hundred_addresses_is_refused_after_its_limit() {
    // A Redis of its own: the test's own calls from loopback (making the organisation, its
    // admin signing in) are not counted with every other test's.
    let mut redis = ThrowawayRedis::on_a_free_port();
    redis.start();
    let app = spawn_app_with(AppOptions {
        identity: Some(sixty_a_minute_per_network),
        redis_url: Some(redis.url()),
        ..Default::default()
    })
    .await;
    let org = app.create_org(0).await;
    let owner = app.create_user(&org, "owner", "").await;
    let attacker = fresh_network();

    // One password tried on a hundred addresses (before the fix each address had its own
    // count from this network: all hundred were hashed and answered as wrong).
    let mut codes = Vec::new();
    for k in 0..100u16 {
        let address = org.address(&format!("employee{k}"));
        // Any host of the /64 is the same network.
        let refused = login_from(&app, &attacker(k + 1), &address, "Summer2024!", "")
            .await
            .expect_err("no such user");
        codes.push(refused.code());
        if k == 60 {
            assert!(
                refused
                    .message()
                    .contains("too many attempts; try again in"),
                "{}",
                refused.message()
            );
        }
    }
    let answered = codes
        .iter()
        .filter(|c| **c == Code::Unauthenticated)
        .count();
    eprintln!("100 addresses sprayed from one network: {answered} answered, the rest refused");
    assert!(
        codes[..60].iter().all(|c| *c == Code::Unauthenticated),
        "{codes:?}"
    );
    assert!(
        codes[60..].iter().all(|c| *c == Code::ResourceExhausted),
        "{codes:?}"
    );
    // Naming organisations (real or made up) does not open a new count.
    for org_id in [org.id.clone(), uuid::Uuid::new_v4().to_string()] {
        let refused = login_from(&app, &attacker(999), &owner.login_email, PASSWORD, &org_id)
            .await
            .expect_err("that network is spent for the minute");
        assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    }

    // The owner, on another network, is not affected.
    login_from(&app, &fresh_network()(1), &owner.login_email, PASSWORD, "")
        .await
        .expect("the owner signs in from her own network");
}

/// Loopback is the trusted proxy; past 5 attempts in 15 minutes an account takes one attempt
/// a second from all networks together.
fn paced_after_five(config: &mut mailroom_identity::IdentityConfig) {
    config.trusted_proxies = vec!["127.0.0.0/8".into()];
    config.login_slowdown_after_attempts = 5;
    config.login_slowdown_ms = 1_000;
}

#[tokio::test]
async fn past_its_threshold_an_account_takes_one_attempt_a_second_and_its_owner_still_gets_in() {
    let app = spawn_app_with(AppOptions {
        identity: Some(paced_after_five),
        ..Default::default()
    })
    .await;
    let org = app.create_org(0).await;
    let victim = app.create_user(&org, "victim", "").await;
    let home = fresh_network()(1);
    login_from(&app, &home, &victim.login_email, PASSWORD, "")
        .await
        .expect("the owner signs in at home");

    // A botnet: every guess from a network of its own (no per-network limit is reached); with
    // the owner's sign-in, five attempts reach the threshold.
    for _ in 0..4 {
        let refused = login_from(&app, &fresh_network()(1), &victim.login_email, "guess", "")
            .await
            .expect_err("a wrong password");
        assert_eq!(refused.code(), Code::Unauthenticated);
    }
    // Past the threshold, twenty guesses at once: before the fix each was only delayed and
    // all twenty were hashed; now about one a second is let through.
    let started = Instant::now();
    let guesses = futures::future::join_all((0..20).map(|_| {
        let app = &app;
        let email = victim.login_email.clone();
        async move { login_from(app, &fresh_network()(1), &email, "guess", "").await }
    }))
    .await;
    let took = started.elapsed();
    let paced: Vec<_> = guesses
        .iter()
        .filter_map(|g| g.as_ref().err())
        .filter(|s| s.code() == Code::ResourceExhausted)
        .collect();
    let hashed = guesses
        .iter()
        .filter(|g| matches!(g, Err(s) if s.code() == Code::Unauthenticated))
        .count();
    eprintln!(
        "20 concurrent guesses past the threshold in {took:?}: {hashed} checked, {} refused",
        paced.len()
    );
    assert_eq!(hashed + paced.len(), 20, "{guesses:?}");
    assert!(
        hashed <= 1 + took.as_secs() as usize + 1,
        "{hashed} guesses checked in {took:?}"
    );
    assert!(
        paced[0].message().contains("try again in 1 s"),
        "{}",
        paced[0].message()
    );

    // The owner at home is not paced; elsewhere she waits seconds, not minutes.
    login_from(&app, &home, &victim.login_email, PASSWORD, "")
        .await
        .expect("the owner signs in from a network she used");
    let away = fresh_network()(1);
    let started = Instant::now();
    loop {
        match login_from(&app, &away, &victim.login_email, PASSWORD, "").await {
            Ok(_) => break,
            Err(s) if s.code() == Code::ResourceExhausted => {
                assert!(started.elapsed() < Duration::from_secs(5), "{s:?}");
                tokio::time::sleep(Duration::from_millis(1_100)).await;
            }
            Err(s) => panic!("{s:?}"),
        }
    }
    eprintln!(
        "owner on a new network got in after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_stolen_access_token_cannot_guess_its_owners_password_through_change_password() {
    let app = spawn_app_with(AppOptions::default()).await;
    let org = app.create_org(0).await;
    let victim = app.create_user(&org, "victim", "").await;
    let other = app.create_user(&org, "other", "").await;
    let stolen = app
        .login(&victim.login_email)
        .await
        .expect("sign in")
        .access_token;
    let change = |token: &str, current: &str| {
        let mut auth = app.auth.clone();
        let request = authed(
            token,
            pb::ChangePasswordRequest {
                current_password: current.into(),
                new_password: "a brand new passphrase".into(),
            },
        );
        async move { auth.change_password(request).await }
    };

    // The default: 10 attempts an hour per user (before the fix: every guess was hashed).
    let mut codes = Vec::new();
    for k in 0..15 {
        let refused = change(&stolen, &format!("guess {k}"))
            .await
            .expect_err("a wrong current password");
        codes.push(refused.code());
    }
    assert!(
        codes[..10].iter().all(|c| *c == Code::Unauthenticated),
        "{codes:?}"
    );
    assert!(
        codes[10..].iter().all(|c| *c == Code::ResourceExhausted),
        "{codes:?}"
    );
    // Even the right guess is not checked now: no oracle.
    let refused = change(&stolen, PASSWORD)
        .await
        .expect_err("the limit holds for the right password too");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    // The password is unchanged, and another user's changes are not counted with these.
    app.login(&victim.login_email)
        .await
        .expect("the old password still works");
    let token = app
        .login(&other.login_email)
        .await
        .expect("sign in")
        .access_token;
    change(&token, PASSWORD)
        .await
        .expect("another user changes her password");
}
