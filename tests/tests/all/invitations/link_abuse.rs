//! A registration link posted where anyone reads it, used by an attacker: registrations hold
//! no seat until their address is confirmed, are limited per link and per client network, a
//! link with a maximum number of uses is used up by confirmations, and the admin's own
//! invitations keep working whatever the link receives (issue 20, item 9).

use super::*;

async fn seats(app: &TestApp, org: &TestOrg) -> ipb::SeatUsage {
    app.invitations()
        .get_seat_usage(authed(&org.admin_token, ipb::GetSeatUsageRequest {}))
        .await
        .expect("seat usage")
        .into_inner()
}

/// A link of `org` made by its admin; returns it and its secret.
async fn link(
    app: &TestApp,
    org: &TestOrg,
    request: ipb::CreateRegistrationLinkRequest,
) -> (ipb::RegistrationLink, String) {
    let link = app
        .invitations()
        .create_registration_link(authed(&org.admin_token, request))
        .await
        .expect("create link")
        .into_inner();
    let secret = link.url.rsplit('=').next().unwrap_or_default().to_owned();
    (link, secret)
}

fn join(secret: &str, email: &str) -> ipb::RegisterWithLinkRequest {
    ipb::RegisterWithLinkRequest {
        link_token: secret.into(),
        email: email.into(),
        first_name: "Spam".into(),
        last_name: "Bot".into(),
        locale: String::new(),
    }
}

/// Every use identity knows of `address` in `org` (empty: no user holds it).
async fn address_uses(app: &TestApp, org: &TestOrg, address: &str) -> Vec<pb::AddressUse> {
    app.identity
        .clone()
        .get_email_address_usage(authed(
            &org.admin_token,
            pb::GetEmailAddressUsageRequest {
                address: address.into(),
            },
        ))
        .await
        .expect("address usage")
        .into_inner()
        .uses
}

/// The invitations of `org` for `address`.
async fn invitations_of(app: &TestApp, org: &TestOrg, address: &str) -> Vec<ipb::Invitation> {
    app.invitations()
        .list_invitations(authed(
            &org.admin_token,
            ipb::ListInvitationsRequest {
                filter: format!("email = \"{address}\""),
                ..Default::default()
            },
        ))
        .await
        .expect("list")
        .into_inner()
        .invitations
}

/// The token of the confirmation mail to `address` (waits for it).
async fn confirmation_token(app: &TestApp, address: &str) -> String {
    let mail = wait_for_mail_where(app, address, Duration::from_secs(30), |m| {
        m.contains("Confirm")
    })
    .await;
    link_token(&parsed(&mail).body_text(0).expect("a text body"))
}

fn usage(s: &ipb::SeatUsage) -> (i32, i32, i32) {
    (s.active_users, s.pending_invitations, s.seats_left)
}

#[tokio::test]
async fn fifteen_registrations_through_a_public_link_take_no_seat_and_the_admin_still_invites() {
    let app = spawn_app_with_invitations().await;
    // Ten seats, the admin holding one.
    let org = app.create_org(10).await;
    ready(&app, &org).await;
    let (_, secret) = link(&app, &org, ipb::CreateRegistrationLinkRequest::default()).await;
    let before = seats(&app, &org).await;
    assert_eq!(usage(&before), (1, 0, 9));

    // The link is posted publicly: fifteen strangers register (before the fix, the tenth
    // took the last seat and the rest were refused for want of seats).
    let strangers: Vec<String> = (0..15).map(|k| org.address(&format!("spam{k}"))).collect();
    for address in &strangers {
        let answer = app
            .invitations()
            .register_with_link(join(&secret, address))
            .await
            .unwrap_or_else(|s| panic!("registering {address}: {s:?}"))
            .into_inner();
        assert!(!answer.awaiting_approval);
    }
    assert_eq!(
        usage(&seats(&app, &org).await),
        usage(&before),
        "unconfirmed registrations took seats"
    );
    for address in &strangers {
        assert!(
            address_uses(&app, &org, address).await.is_empty(),
            "an unconfirmed registration made a user for {address}"
        );
        let listed = invitations_of(&app, &org, address).await;
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(listed[0].kind, ipb::InvitationKind::RegistrationLink as i32);
        assert!(listed[0].user_id.is_empty(), "no user until confirmed");
        // The confirmation window is a day, not the invitation's week.
        let created = listed[0].create_time.expect("create time").seconds;
        let expires = listed[0].expire_time.expect("expire time").seconds;
        assert!(
            (expires - created - 24 * 3600).abs() < 120,
            "open for {} s",
            expires - created
        );
    }

    // Registering an address again does not mail it again (at most once per interval).
    let first = &strangers[0];
    wait_for_mail(&app, first, Duration::from_secs(30)).await;
    for _ in 0..4 {
        app.invitations()
            .register_with_link(join(&secret, first))
            .await
            .expect("the same answer");
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        mails_to(&app, first).len(),
        1,
        "registering again re-mailed"
    );
    assert_eq!(invitations_of(&app, &org, first).await.len(), 1);

    // The admin's own invitations go through — of a new hire, and of an address a stranger
    // registered (the registration does not hold it) — and are accepted.
    let hire = org.address("hire");
    let (_, token) = invited(&app, &org, &hire).await;
    accept(&app, &token)
        .await
        .expect("the admin's invitee joins");
    let claimed = &strangers[1];
    let answer = invite(
        &app,
        &org.admin_token,
        claimed,
        ipb::DeliveryMethod::OwnMailClient,
        "",
    )
    .await
    .expect("invite a registered address");
    assert_eq!(answer.invitations.len(), 1, "{:?}", answer.rejected);
    assert_eq!(usage(&seats(&app, &org).await), (2, 1, 7));
}

#[tokio::test]
async fn registrations_beyond_the_per_link_limit_are_refused() {
    let app = spawn_app_with_invitations().await;
    let org = app.create_org(0).await;
    ready(&app, &org).await;
    let (_, secret) = link(&app, &org, ipb::CreateRegistrationLinkRequest::default()).await;
    // The default: 50 an hour per link (the tests' share per network is unlimited).
    for k in 0..50 {
        app.invitations()
            .register_with_link(join(&secret, &org.address(&format!("r{k}"))))
            .await
            .unwrap_or_else(|s| panic!("registration {k}: {s:?}"));
    }
    let refused = app
        .invitations()
        .register_with_link(join(&secret, &org.address("r50")))
        .await
        .expect_err("the 51st registration in an hour");
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    assert!(
        refused.message().contains("through this link per hour"),
        "{}",
        refused.message()
    );
    assert!(
        invitations_of(&app, &org, &org.address("r50"))
            .await
            .is_empty(),
        "a refused registration left a row"
    );
}

#[tokio::test]
async fn registrations_beyond_the_per_network_limit_are_refused_across_links() {
    let app = spawn_app_with_invitations().await;
    // A replica counting at most 3 registrations an hour per client network. Every test
    // registers from 127.0.0.0/24, on one Redis count; the others' replicas allow plenty, so
    // this one may be refused even sooner, never later.
    let stop = CancellationToken::new();
    let strict = app
        .start_invitations(stop.clone(), |c| c.registrations_per_network_per_hour = 3)
        .await;
    let org = app.create_org(0).await;
    ready(&app, &org).await;
    let mut secrets = Vec::new();
    for _ in 0..4 {
        secrets.push(
            link(&app, &org, ipb::CreateRegistrationLinkRequest::default())
                .await
                .1,
        );
    }
    // One registration through each of four links: each link is far from its own limit.
    let mut allowed = 0;
    let mut refusals = Vec::new();
    for (k, secret) in secrets.iter().enumerate() {
        match strict
            .clone()
            .register_with_link(join(secret, &org.address(&format!("n{k}"))))
            .await
        {
            Ok(_) => allowed += 1,
            Err(s) => refusals.push(s),
        }
    }
    assert!(allowed <= 3, "{allowed} registrations from one network");
    assert!(!refusals.is_empty());
    for s in &refusals {
        assert_eq!(s.code(), tonic::Code::ResourceExhausted, "{s:?}");
        assert!(s.message().contains("from your network"), "{}", s.message());
    }
    stop.cancel();
}

#[tokio::test]
async fn a_link_with_a_maximum_of_uses_is_used_up_by_confirmations() {
    let app = spawn_app_with_invitations().await;
    let org = app.create_org(0).await;
    ready(&app, &org).await;
    let (made, secret) = link(
        &app,
        &org,
        ipb::CreateRegistrationLinkRequest {
            max_uses: Some(1),
            ..Default::default()
        },
    )
    .await;
    assert_eq!((made.max_uses, made.uses), (Some(1), 0));
    // Two register (unconfirmed registrations do not use the link up)…
    let (a, b) = (org.address("first"), org.address("second"));
    for address in [&a, &b] {
        app.invitations()
            .register_with_link(join(&secret, address))
            .await
            .expect("register");
    }
    // …the first to confirm joins, the second finds the link used up and gets no user.
    let token_a = confirmation_token(&app, &a).await;
    let token_b = confirmation_token(&app, &b).await;
    accept(&app, &token_a).await.expect("the first joins");
    let refused = accept(&app, &token_b).await.expect_err("used up");
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert!(
        refused
            .message()
            .contains("this registration link has been used up"),
        "{}",
        refused.message()
    );
    assert!(address_uses(&app, &org, &b).await.is_empty());
    // Registering through it now is refused alike for every address.
    let refused = app
        .invitations()
        .register_with_link(join(&secret, &org.address("third")))
        .await
        .expect_err("used up");
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert!(
        refused
            .message()
            .contains("this registration link has been used up"),
        "{}",
        refused.message()
    );
    let listed = app
        .invitations()
        .list_registration_links(authed(
            &org.admin_token,
            ipb::ListRegistrationLinksRequest::default(),
        ))
        .await
        .expect("list links")
        .into_inner()
        .links;
    let listed = listed.iter().find(|l| l.id == made.id).expect("the link");
    assert_eq!((listed.max_uses, listed.uses), (Some(1), 1));

    // Confirmations racing for the last use: exactly one wins.
    let (_, secret) = link(
        &app,
        &org,
        ipb::CreateRegistrationLinkRequest {
            max_uses: Some(1),
            ..Default::default()
        },
    )
    .await;
    let racers: Vec<String> = (0..4).map(|k| org.address(&format!("racer{k}"))).collect();
    let mut tokens = Vec::new();
    for address in &racers {
        app.invitations()
            .register_with_link(join(&secret, address))
            .await
            .expect("register");
    }
    for address in &racers {
        tokens.push(confirmation_token(&app, address).await);
    }
    let results = futures::future::join_all(tokens.iter().map(|t| accept(&app, t))).await;
    let joined = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(joined, 1, "{results:?}");
    for refused in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(
            refused.code(),
            tonic::Code::FailedPrecondition,
            "{refused:?}"
        );
        assert!(
            refused.message().contains("used up"),
            "{}",
            refused.message()
        );
    }

    // Nonsense limits are refused.
    let refused = app
        .invitations()
        .create_registration_link(authed(
            &org.admin_token,
            ipb::CreateRegistrationLinkRequest {
                max_uses: Some(0),
                ..Default::default()
            },
        ))
        .await
        .expect_err("max_uses 0");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn a_registration_takes_its_seat_when_confirmed_after_approval() {
    let app = spawn_app_with_invitations().await;
    let org = app.create_org(5).await;
    ready(&app, &org).await;
    let (_, secret) = link(
        &app,
        &org,
        ipb::CreateRegistrationLinkRequest {
            requires_approval: true,
            ..Default::default()
        },
    )
    .await;
    let joiner = org.address("joiner");
    let answer = app
        .invitations()
        .register_with_link(join(&secret, &joiner))
        .await
        .expect("register")
        .into_inner();
    assert!(answer.awaiting_approval);
    assert_eq!(usage(&seats(&app, &org).await), (1, 0, 4));
    let awaiting = invitations_of(&app, &org, &joiner).await.remove(0);
    assert_eq!(
        awaiting.state,
        ipb::InvitationState::AwaitingApproval as i32
    );
    app.invitations()
        .approve_registration(authed(
            &org.admin_token,
            ipb::ApproveRegistrationRequest {
                invitation_id: awaiting.id.clone(),
            },
        ))
        .await
        .expect("approve");
    // Approved, still no seat: the address is not confirmed yet.
    assert_eq!(usage(&seats(&app, &org).await), (1, 0, 4));
    let token = confirmation_token(&app, &joiner).await;
    let joined = accept(&app, &token).await.expect("confirm and join");
    assert_eq!(joined.login_email, joiner);
    assert_eq!(usage(&seats(&app, &org).await), (2, 0, 3));
    let user = app
        .identity
        .clone()
        .get_user(authed(
            &org.admin_token,
            pb::GetUserRequest {
                id: joined.user_id.clone(),
            },
        ))
        .await
        .expect("the user")
        .into_inner();
    assert_eq!(user.state, pb::UserState::Active as i32);
    let accepted = invitation(&app.invitations(), &org, &awaiting.id).await;
    assert_eq!(accepted.state, ipb::InvitationState::Accepted as i32);
    assert_eq!(accepted.user_id, joined.user_id);
}

#[tokio::test]
async fn confirming_when_the_seats_are_full_is_refused_and_makes_no_user() {
    let app = spawn_app_with_invitations().await;
    // Two seats: the admin's and one more.
    let org = app.create_org(2).await;
    ready(&app, &org).await;
    let (_, secret) = link(&app, &org, ipb::CreateRegistrationLinkRequest::default()).await;
    let late = org.address("late");
    app.invitations()
        .register_with_link(join(&secret, &late))
        .await
        .expect("register while a seat is free");
    let token = confirmation_token(&app, &late).await;
    // The admin invites someone: the last seat (before the fix the registration held it, and
    // this invitation was refused).
    let colleague = org.address("colleague");
    let (invited, _) = invited(&app, &org, &colleague).await;
    assert_eq!(usage(&seats(&app, &org).await), (1, 1, 0));

    let refused = accept(&app, &token).await.expect_err("no free seat");
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert!(
        refused
            .message()
            .contains("the organisation has no free seats; ask your administrator"),
        "{}",
        refused.message()
    );
    // Nothing half done: no user, the seats as they were, the registration still open.
    assert!(address_uses(&app, &org, &late).await.is_empty());
    assert_eq!(usage(&seats(&app, &org).await), (1, 1, 0));
    let open = invitations_of(&app, &org, &late).await.remove(0);
    assert_eq!(open.state, ipb::InvitationState::Pending as i32);
    assert!(open.user_id.is_empty());

    // A seat frees up: the same link now works.
    app.invitations()
        .revoke_invitation(authed(
            &org.admin_token,
            ipb::RevokeInvitationRequest {
                id: invited.id.clone(),
            },
        ))
        .await
        .expect("revoke");
    let deadline = Instant::now() + Duration::from_secs(30);
    while seats(&app, &org).await.seats_left != 1 {
        assert!(Instant::now() < deadline, "the seat was not freed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    accept(&app, &token)
        .await
        .expect("joins once a seat is free");
    assert_eq!(usage(&seats(&app, &org).await), (2, 0, 0));
}
