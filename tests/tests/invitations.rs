//! The invitations service against real parts: identity, access control, PostgreSQL, Redis,
//! the Kafka-protocol broker, and real SMTP servers on loopback (the stack's sink, and
//! aiosmtpd servers of the tests' own that refuse or are down).

use std::time::{Duration, Instant};

use mailroom_platform::kafka::Topic;
use mailroom_proto::identity::v1 as pb;
use mailroom_proto::invitations::v1 as ipb;
use mailroom_tests::{
    access, authed, mails_to, spawn_app_with, spawn_app_with_invitations, wait_for_mail,
    wait_for_mail_where, AppOptions, SmtpServer, TestApp, TestOrg,
};
use tokio_util::sync::CancellationToken;

const NEW_PASSWORD: &str = "a-new-employee-password";

async fn invite(
    app: &TestApp,
    token: &str,
    emails: &str,
    delivery: ipb::DeliveryMethod,
    locale: &str,
) -> Result<ipb::CreateInvitationsResponse, tonic::Status> {
    app.invitations()
        .create_invitations(authed(
            token,
            ipb::CreateInvitationsRequest {
                emails: emails.into(),
                department_id: String::new(),
                message: "Welcome aboard!\nSee you on Monday.".into(),
                delivery: delivery as i32,
                locale: locale.into(),
            },
        ))
        .await
        .map(|r| r.into_inner())
}

/// Waits until access control knows the org's admin (it follows identity's events).
async fn ready(app: &TestApp, org: &TestOrg) {
    app.until_known(&org.admin_id).await;
}

/// The token in the first invitation link of a mail's text (quoted-printable soft breaks
/// undone by the parser).
fn link_token(body: &str) -> String {
    let start = body
        .find("https://mailroom.test/invite?token=")
        .expect("the mail carries an invitation link")
        + "https://mailroom.test/invite?token=".len();
    body[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

fn parsed(raw: &str) -> mail_parser::Message<'_> {
    mail_parser::MessageParser::default()
        .parse(raw.as_bytes())
        .expect("the mail parses")
}

/// The token of the invitation link in the mail to `address` (waits for it).
async fn mailed_token(app: &TestApp, address: &str) -> String {
    let raw = wait_for_mail(app, address, Duration::from_secs(30)).await;
    link_token(&parsed(&raw).body_text(0).expect("a text body"))
}

/// Invites `address` by Mailroom's mail as the org's admin; returns the invitation and the
/// token its mail carries.
async fn invited(app: &TestApp, org: &TestOrg, address: &str) -> (ipb::Invitation, String) {
    let answer = invite(
        app,
        &org.admin_token,
        address,
        ipb::DeliveryMethod::SystemMail,
        "",
    )
    .await
    .expect("invite");
    assert_eq!(answer.invitations.len(), 1, "{:?}", answer.rejected);
    let token = mailed_token(app, address).await;
    (answer.invitations[0].clone(), token)
}

async fn accept(
    app: &TestApp,
    token: &str,
) -> Result<ipb::AcceptInvitationResponse, tonic::Status> {
    app.invitations()
        .accept_invitation(ipb::AcceptInvitationRequest {
            token: token.into(),
            first_name: "Nia".into(),
            last_name: "Newhire".into(),
            password: NEW_PASSWORD.into(),
        })
        .await
        .map(|r| r.into_inner())
}

async fn seats(app: &TestApp, org: &TestOrg) -> ipb::SeatUsage {
    app.invitations()
        .get_seat_usage(authed(&org.admin_token, ipb::GetSeatUsageRequest {}))
        .await
        .expect("seat usage")
        .into_inner()
}

type Client = ipb::invitation_service_client::InvitationServiceClient<tonic::transport::Channel>;

async fn invitation(client: &Client, org: &TestOrg, id: &str) -> ipb::Invitation {
    client
        .clone()
        .get_invitation(authed(
            &org.admin_token,
            ipb::GetInvitationRequest { id: id.into() },
        ))
        .await
        .expect("get invitation")
        .into_inner()
}

/// Polls an invitation until `done` holds.
async fn until(
    client: &Client,
    org: &TestOrg,
    id: &str,
    what: &str,
    done: impl Fn(&ipb::Invitation) -> bool,
) -> ipb::Invitation {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let i = invitation(client, org, id).await;
        if done(&i) {
            return i;
        }
        assert!(Instant::now() < deadline, "{what} did not happen: {i:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn an_invitation_mail_arrives_well_formed_and_its_link_works_exactly_once() {
    let app = spawn_app_with_invitations().await;
    let org = app.create_org(0).await;
    ready(&app, &org).await;
    let existing = app.create_user(&org, "existing", "").await;
    let nia = org.address("nia");
    let answer = invite(
        &app,
        &org.admin_token,
        &format!(
            "Nia N <{nia}>, not-an-address {} ; {nia}\n{}",
            org.address("bob"),
            existing.login_email
        ),
        ipb::DeliveryMethod::SystemMail,
        "",
    )
    .await
    .expect("invite");
    let invited: Vec<&str> = answer
        .invitations
        .iter()
        .map(|i| i.email.as_str())
        .collect();
    assert_eq!(invited, [nia.as_str(), org.address("bob").as_str()]);
    let codes: Vec<(String, i32)> = answer
        .rejected
        .iter()
        .map(|r| (r.input.clone(), r.code))
        .collect();
    assert_eq!(
        codes,
        [
            (
                "not-an-address".into(),
                ipb::RejectionReason::Malformed as i32
            ),
            (nia.clone(), ipb::RejectionReason::Duplicate as i32),
            (
                existing.login_email.clone(),
                ipb::RejectionReason::AlreadyAUser as i32
            ),
        ]
    );
    assert_eq!(answer.rejected[2].user_state, "ACTIVE");
    assert_eq!(answer.rejected[2].user_id, existing.id);

    // The invitee is identity's INVITED user, so the employee list's "Invited" filter shows them.
    let invited_users = app
        .identity
        .clone()
        .list_users(authed(
            &org.admin_token,
            pb::ListUsersRequest {
                filter: "state = INVITED".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("list invited")
        .into_inner();
    let mut emails: Vec<String> = invited_users
        .users
        .iter()
        .map(|u| u.contact_email.clone())
        .collect();
    emails.sort();
    let mut expected = vec![nia.clone(), org.address("bob")];
    expected.sort();
    assert_eq!(emails, expected);
    // "Where is this address used?" names the pending invitation.
    let usage = app
        .identity
        .clone()
        .get_email_address_usage(authed(
            &org.admin_token,
            pb::GetEmailAddressUsageRequest {
                address: nia.clone(),
            },
        ))
        .await
        .expect("usage")
        .into_inner();
    assert!(usage
        .uses
        .iter()
        .any(|u| u.kind == pb::AddressUseKind::PendingInvitation as i32));

    let raw = wait_for_mail(&app, &nia, Duration::from_secs(30)).await;
    let mail = parsed(&raw);
    assert_eq!(
        mail.subject(),
        Some(format!("Ada Admin invites you to join Org {}", org.domain).as_str())
    );
    let to = mail
        .to()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .expect("To");
    assert_eq!(to, nia);
    assert!(mail
        .from()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .is_some());
    assert!(mail.message_id().is_some() || mail.date().is_some());
    let body = mail.body_text(0).expect("a text body").into_owned();
    assert!(
        body.contains("Welcome aboard!\nSee you on Monday."),
        "{body}"
    );
    let token = link_token(&body);
    assert_eq!(token.len(), 43);

    let preview = app
        .invitations()
        .preview_invitation(ipb::PreviewInvitationRequest {
            token: token.clone(),
        })
        .await
        .expect("preview without a token")
        .into_inner();
    assert_eq!(preview.email, nia);
    assert_eq!(preview.inviter_name, "Ada Admin");
    assert_eq!(preview.organization_name, format!("Org {}", org.domain));

    let accepted = accept(&app, &token).await.expect("accept");
    assert_eq!(accepted.login_email, nia);
    // Signs in with the password chosen, as an ACTIVE user with the names given.
    let tokens = app
        .auth
        .clone()
        .login(pb::LoginRequest {
            login_email: nia.clone(),
            password: NEW_PASSWORD.into(),
            org_id: String::new(),
        })
        .await
        .expect("the new employee signs in")
        .into_inner();
    let me = app
        .identity
        .clone()
        .get_user(authed(
            &tokens.access_token,
            pb::GetUserRequest {
                id: accepted.user_id.clone(),
            },
        ))
        .await
        .expect("own profile")
        .into_inner();
    assert_eq!(me.state, pb::UserState::Active as i32);
    assert_eq!(
        (me.first_name.as_str(), me.last_name.as_str()),
        ("Nia", "Newhire")
    );

    // Never again.
    let again = accept(&app, &token)
        .await
        .expect_err("a used link is refused");
    assert_eq!(again.code(), tonic::Code::FailedPrecondition);
    assert!(
        again.message().contains("already used"),
        "{}",
        again.message()
    );
    let junk = accept(&app, "not-a-token")
        .await
        .expect_err("junk is refused");
    assert_eq!(junk.code(), tonic::Code::NotFound);

    let list = app
        .invitations()
        .list_invitations(authed(
            &org.admin_token,
            ipb::ListInvitationsRequest {
                filter: "state = ACCEPTED".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(list.total_size, 1);
    assert_eq!(list.invitations[0].email, nia);
    assert_eq!(list.invitations[0].send_count, 1);

    let event = app
        .wait_for_event(Topic::InvitationsEvents, Duration::from_secs(30), |e| {
            e.r#type == "mailroom.events.v1.InvitationAccepted"
                && e.aggregate_id == list.invitations[0].id
        })
        .await;
    assert!(event.is_some(), "InvitationAccepted was published");
}

#[tokio::test]
async fn the_russian_template_renders_in_utf8_with_encoded_headers() {
    let app = spawn_app_with_invitations().await;
    let org = app.create_org(0).await;
    ready(&app, &org).await;
    let address = org.address("ivan");
    invite(
        &app,
        &org.admin_token,
        &address,
        ipb::DeliveryMethod::SystemMail,
        "ru",
    )
    .await
    .expect("invite");
    let raw = wait_for_mail(&app, &address, Duration::from_secs(30)).await;
    let subject_line = raw
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("subject:"))
        .expect("a Subject header");
    assert!(
        subject_line.is_ascii(),
        "headers stay 7-bit: {subject_line}"
    );
    assert!(
        subject_line.contains("=?utf-8?"),
        "RFC 2047 encoded: {subject_line}"
    );
    let mail = parsed(&raw);
    assert_eq!(
        mail.subject(),
        Some(format!("Ada Admin приглашает вас в Org {}", org.domain).as_str())
    );
    let body = mail.body_text(0).expect("a text body");
    assert!(body.contains("Здравствуйте!"), "{body}");
    assert!(body.contains("Ссылка действует один раз"), "{body}");
    assert!(raw.to_ascii_lowercase().contains("charset=utf-8"));
}

#[tokio::test]
async fn own_mail_client_gets_a_mailto_per_invitee_with_their_own_link() {
    let app = spawn_app_with_invitations().await;
    let org = app.create_org(0).await;
    ready(&app, &org).await;
    let (a, b) = (org.address("ann"), org.address("ben"));
    let answer = invite(
        &app,
        &org.admin_token,
        &format!("{a} {b}"),
        ipb::DeliveryMethod::OwnMailClient,
        "",
    )
    .await
    .expect("invite");
    let composed = answer.composed.expect("a composed message");
    assert_eq!(composed.mailto_links.len(), 2);
    assert!(composed.body.contains("{link}"));
    for (k, (mailto, email)) in composed.mailto_links.iter().zip([&a, &b]).enumerate() {
        let url = url::Url::parse(mailto).expect("the mailto: parses");
        assert_eq!(url.scheme(), "mailto");
        assert_eq!(url.path(), email.as_str());
        let query: std::collections::HashMap<String, String> =
            url.query_pairs().into_owned().collect();
        assert_eq!(query["subject"], composed.subject);
        let body = &query["body"];
        assert!(body.contains("\r\n"), "line breaks are CRLF");
        assert!(body.contains(&composed.invitation_links[k]), "{body}");
        // Each link is that invitee's.
        let token = composed.invitation_links[k]
            .rsplit('=')
            .next()
            .unwrap_or_default();
        let preview = app
            .invitations()
            .preview_invitation(ipb::PreviewInvitationRequest {
                token: token.into(),
            })
            .await
            .expect("the link works")
            .into_inner();
        assert_eq!(&preview.email, email);
    }
    assert_ne!(composed.invitation_links[0], composed.invitation_links[1]);
    // Pending all the same, and Mailroom sent nothing.
    assert!(answer
        .invitations
        .iter()
        .all(|i| i.state == ipb::InvitationState::Pending as i32));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(mails_to(&app, &a).is_empty());
}

#[tokio::test]
async fn a_dismissed_users_address_is_refused_naming_the_transfer_until_it_is_released() {
    let app = spawn_app_with_invitations().await;
    let org = app.create_org(0).await;
    ready(&app, &org).await;
    let leaver = app.create_user(&org, "leaver", "").await;
    app.identity
        .clone()
        .dismiss_user(authed(
            &org.admin_token,
            pb::DismissUserRequest {
                id: leaver.id.clone(),
            },
        ))
        .await
        .expect("dismiss");
    let answer = invite(
        &app,
        &org.admin_token,
        &leaver.login_email,
        ipb::DeliveryMethod::SystemMail,
        "",
    )
    .await
    .expect("the call succeeds, the address is refused");
    assert!(answer.invitations.is_empty());
    let refused = &answer.rejected[0];
    assert_eq!(refused.code, ipb::RejectionReason::AlreadyAUser as i32);
    assert_eq!(refused.user_state, "DISMISSED");
    assert_eq!(refused.user_id, leaver.id);
    assert!(
        refused.reason.contains("TransferEmailAddress"),
        "{}",
        refused.reason
    );

    app.identity
        .clone()
        .transfer_email_address(authed(
            &org.admin_token,
            pb::TransferEmailAddressRequest {
                address: leaver.login_email.clone(),
                from_user_id: leaver.id.clone(),
                destination: Some(pb::transfer_email_address_request::Destination::Release(
                    true,
                )),
                as_kind: 0,
            },
        ))
        .await
        .expect("release the address");
    let answer = invite(
        &app,
        &org.admin_token,
        &leaver.login_email,
        ipb::DeliveryMethod::SystemMail,
        "",
    )
    .await
    .expect("invite again");
    assert_eq!(answer.invitations.len(), 1, "{:?}", answer.rejected);
    wait_for_mail(&app, &leaver.login_email, Duration::from_secs(30)).await;
}

#[tokio::test]
async fn fifty_concurrent_invites_against_ten_free_seats_admit_exactly_ten_every_time() {
    let app = spawn_app_with_invitations().await;
    for round in 0..20 {
        // The admin takes one seat of eleven.
        let org = app.create_org(11).await;
        ready(&app, &org).await;
        let calls = (0..50).map(|k| {
            let app = &app;
            let org = &org;
            async move {
                invite(
                    app,
                    &org.admin_token,
                    &org.address(&format!("racer{k}")),
                    ipb::DeliveryMethod::OwnMailClient,
                    "",
                )
                .await
            }
        });
        let results = futures::future::join_all(calls).await;
        let won = results
            .iter()
            .filter(|r| matches!(r, Ok(a) if a.invitations.len() == 1))
            .count();
        let refused: Vec<&tonic::Status> =
            results.iter().filter_map(|r| r.as_ref().err()).collect();
        assert_eq!(won, 10, "round {round}: {refused:?}");
        assert_eq!(refused.len(), 40, "round {round}");
        for status in refused {
            assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
            assert!(
                status
                    .message()
                    .contains("0 of the organisation's 11 seats are left"),
                "{}",
                status.message()
            );
        }
        let usage = seats(&app, &org).await;
        assert_eq!(
            (
                usage.active_users,
                usage.pending_invitations,
                usage.seats_left
            ),
            (1, 10, 0)
        );
    }
}

#[tokio::test]
async fn who_may_invite_register_and_manage_links() {
    let app = spawn_app_with_invitations().await;
    let org = app.create_org(0).await;
    let other = app.create_org(0).await;
    ready(&app, &org).await;
    ready(&app, &other).await;
    // Inviting narrowed to admins (and whoever is granted it).
    app.identity
        .clone()
        .update_organization(authed(
            &org.admin_token,
            pb::UpdateOrganizationRequest {
                organization: Some(pb::Organization {
                    settings: Some(pb::OrganizationSettings {
                        allow_everyone_to_invite: false,
                    }),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["settings.allow_everyone_to_invite".into()],
                }),
            },
        ))
        .await
        .expect("narrow inviting");
    let plain = app.create_user(&org, "plain", "").await;
    let granted = app.create_user(&org, "granted", "").await;
    app.until_known(&plain.id).await;
    app.until_known(&granted.id).await;
    app.write_when_known(
        &org.admin_token,
        vec![mailroom_proto::access::v1::Relationship {
            resource: access::object("org", &org.id),
            relation: "inviter".into(),
            subject: access::user(&granted.id),
        }],
    )
    .await;
    let plain_token = app
        .login(&plain.login_email)
        .await
        .expect("login")
        .access_token;
    let granted_token = app
        .login(&granted.login_email)
        .await
        .expect("login")
        .access_token;

    // The admin invites; the granted employee invites; the plain one is refused, eventually
    // (access follows identity's settings event).
    let by_admin = invite(
        &app,
        &org.admin_token,
        &org.address("a1"),
        ipb::DeliveryMethod::OwnMailClient,
        "",
    )
    .await
    .expect("admin invites");
    let by_granted = invite(
        &app,
        &granted_token,
        &org.address("g1"),
        ipb::DeliveryMethod::SystemMail,
        "",
    )
    .await
    .expect("a granted employee invites");
    // Composing for their own mail client would hand them every invitee's link: admins only.
    let own_client = invite(
        &app,
        &granted_token,
        &org.address("g2"),
        ipb::DeliveryMethod::OwnMailClient,
        "",
    )
    .await
    .expect_err("own mail client needs org.register_users");
    assert_eq!(own_client.code(), tonic::Code::PermissionDenied);
    assert!(
        own_client.message().contains("org.register_users"),
        "{}",
        own_client.message()
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let refused = loop {
        match invite(
            &app,
            &plain_token,
            &org.address("p1"),
            ipb::DeliveryMethod::SystemMail,
            "",
        )
        .await
        {
            Err(s) => break s,
            Ok(_) => assert!(
                Instant::now() < deadline,
                "the plain employee could still invite"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert!(
        refused.message().contains("org.invite"),
        "{}",
        refused.message()
    );

    // An inviter sees and manages their own invitations only; the admin sees all.
    let id_admin = &by_admin.invitations[0].id;
    let id_granted = &by_granted.invitations[0].id;
    let list = |token: String| {
        let app = &app;
        async move {
            app.invitations()
                .list_invitations(authed(&token, ipb::ListInvitationsRequest::default()))
                .await
                .expect("list")
                .into_inner()
                .invitations
                .into_iter()
                .map(|i| i.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(list(granted_token.clone()).await, vec![id_granted.clone()]);
    assert_eq!(
        list(org.admin_token.clone()).await.len(),
        2 + usize::from(false)
    );
    let hidden = app
        .invitations()
        .revoke_invitation(authed(
            &granted_token,
            ipb::RevokeInvitationRequest {
                id: id_admin.clone(),
            },
        ))
        .await
        .expect_err("not theirs");
    assert_eq!(hidden.code(), tonic::Code::NotFound);

    // Another organisation's admin learns nothing: not found, and an empty list.
    let outsider = app
        .invitations()
        .get_invitation(authed(
            &other.admin_token,
            ipb::GetInvitationRequest {
                id: id_admin.clone(),
            },
        ))
        .await
        .expect_err("other org");
    assert_eq!(outsider.code(), tonic::Code::NotFound);
    assert!(list(other.admin_token.clone()).await.is_empty());
    let outsider_revoke = app
        .invitations()
        .revoke_invitation(authed(
            &other.admin_token,
            ipb::RevokeInvitationRequest {
                id: id_granted.clone(),
            },
        ))
        .await
        .expect_err("other org");
    assert_eq!(outsider_revoke.code(), tonic::Code::NotFound);

    // Registering directly and links need org.register_users (admins).
    for token in [&plain_token, &granted_token] {
        let s = app
            .invitations()
            .register_user(authed(
                token,
                ipb::RegisterUserRequest {
                    email: org.address("direct"),
                    first_name: "Dee".into(),
                    ..Default::default()
                },
            ))
            .await
            .expect_err("not an admin");
        assert_eq!(s.code(), tonic::Code::PermissionDenied);
        let s = app
            .invitations()
            .create_registration_link(authed(token, ipb::CreateRegistrationLinkRequest::default()))
            .await
            .expect_err("not an admin");
        assert_eq!(s.code(), tonic::Code::PermissionDenied);
    }
    // No token at all.
    let anonymous = app
        .invitations()
        .create_invitations(ipb::CreateInvitationsRequest {
            emails: org.address("x"),
            ..Default::default()
        })
        .await
        .expect_err("no token");
    assert_eq!(anonymous.code(), tonic::Code::Unauthenticated);
}

#[tokio::test]
async fn expiry_is_applied_unasked_refuses_the_link_and_frees_the_seat() {
    let app = spawn_app_with_invitations().await;
    let org = app.create_org(2).await;
    ready(&app, &org).await;
    let address = org.address("late");
    let (invitation, token) = invited(&app, &org, &address).await;
    let id = invitation.id;
    assert_eq!(seats(&app, &org).await.seats_left, 0);
    // A week passes.
    let invitations_db = sqlx::PgPool::connect(app.database_url()).await.expect("db");
    sqlx::query("UPDATE invitations.invitations SET expires_at = now() - interval '1 second' WHERE id = $1::uuid")
        .bind(&id)
        .execute(&invitations_db)
        .await
        .expect("age the invitation");
    until(&app.invitations(), &org, &id, "expiry", |i| {
        i.state == ipb::InvitationState::Expired as i32
    })
    .await;
    let refused = accept(&app, &token)
        .await
        .expect_err("an expired link is refused");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(
        refused.message().contains("expired"),
        "{}",
        refused.message()
    );
    // Identity removes the INVITED user: the seat and the address are free again.
    let deadline = Instant::now() + Duration::from_secs(30);
    while seats(&app, &org).await.seats_left != 1 {
        assert!(Instant::now() < deadline, "the seat was not freed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let again = invite(
        &app,
        &org.admin_token,
        &address,
        ipb::DeliveryMethod::SystemMail,
        "",
    )
    .await
    .expect("invite again");
    assert_eq!(again.invitations.len(), 1, "{:?}", again.rejected);
}

#[tokio::test]
async fn a_refused_recipient_fails_with_the_reason_and_a_down_server_delivers_once_back() {
    let app = spawn_app_with(AppOptions {
        with_access: true,
        ..AppOptions::default()
    })
    .await;
    // A server that refuses some recipients, and a port where nothing listens yet.
    let refusing = SmtpServer::start();
    let down_port = SmtpServer::free_port();
    let stop = CancellationToken::new();
    let mut with_refusing = app
        .start_invitations(stop.clone(), |c| c.smtp.port = refusing.port)
        .await;
    let org = app.create_org(0).await;
    ready(&app, &org).await;
    let make = |emails: String| ipb::CreateInvitationsRequest {
        emails,
        ..Default::default()
    };
    let answer = with_refusing
        .create_invitations(authed(
            &org.admin_token,
            make(format!(
                "{} {}",
                org.address("refuse-me"),
                org.address("welcome")
            )),
        ))
        .await
        .expect("invite")
        .into_inner();
    let invitations = with_refusing.clone();
    let refused = until(
        &invitations,
        &org,
        &answer.invitations[0].id,
        "the refusal",
        |i| i.state == ipb::InvitationState::Failed as i32,
    )
    .await;
    assert!(
        refused.failure_reason.contains("550"),
        "{}",
        refused.failure_reason
    );
    assert!(
        refused.failure_reason.contains("User unknown"),
        "{}",
        refused.failure_reason
    );
    // A 5xx is final at once: no retries were spent on it.
    assert!(
        !refused.failure_reason.contains("gave up"),
        "{}",
        refused.failure_reason
    );
    assert_eq!(refused.delivery_state, ipb::DeliveryState::Failed as i32);
    let delivered = until(
        &invitations,
        &org,
        &answer.invitations[1].id,
        "the delivery",
        |i| i.delivery_state == ipb::DeliveryState::Sent as i32,
    )
    .await;
    assert_eq!(delivered.state, ipb::InvitationState::Pending as i32);
    assert!(refusing
        .messages()
        .iter()
        .any(|m| m.contains(&org.address("welcome"))));
    stop.cancel();

    // The server is down: retried, then FAILED with the reason.
    let stop = CancellationToken::new();
    let with_down = app
        .start_invitations(stop.clone(), |c| {
            c.smtp.port = down_port;
            c.delivery_attempts = 2;
        })
        .await;
    let invitations = with_down.clone();
    let address = org.address("patient");
    let answer = with_down
        .clone()
        .create_invitations(authed(&org.admin_token, make(address.clone())))
        .await
        .expect("invite")
        .into_inner();
    let id = answer.invitations[0].id.clone();
    let failed = until(&invitations, &org, &id, "giving up", |i| {
        i.state == ipb::InvitationState::Failed as i32
    })
    .await;
    assert!(
        failed.failure_reason.contains("gave up after 2 attempts"),
        "{}",
        failed.failure_reason
    );
    assert!(
        failed.failure_reason.to_lowercase().contains("connect"),
        "{}",
        failed.failure_reason
    );
    // It comes back; the retry delivers.
    let back = SmtpServer::start_on(down_port);
    with_down
        .clone()
        .resend_invitation(authed(
            &org.admin_token,
            ipb::ResendInvitationRequest { id: id.clone() },
        ))
        .await
        .expect("resend");
    let sent = until(
        &invitations,
        &org,
        &id,
        "the delivery after the outage",
        |i| i.delivery_state == ipb::DeliveryState::Sent as i32,
    )
    .await;
    assert_eq!(sent.state, ipb::InvitationState::Pending as i32);
    assert_eq!(sent.failure_reason, "");
    assert!(back.messages().iter().any(|m| m.contains(&address)));
    stop.cancel();
}

#[tokio::test]
async fn direct_registration_and_a_link_that_needs_approval() {
    let app = spawn_app_with_invitations().await;
    let org = app.create_org(0).await;
    ready(&app, &org).await;

    // Registered by the admin: a set-password mail; the names given are kept.
    let dee = org.address("dee");
    let registered = app
        .invitations()
        .register_user(authed(
            &org.admin_token,
            ipb::RegisterUserRequest {
                email: dee.clone(),
                first_name: "Dee".into(),
                last_name: "Direct".into(),
                position: "Buyer".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("register")
        .into_inner();
    assert_eq!(
        registered.kind,
        ipb::InvitationKind::DirectRegistration as i32
    );
    let token = mailed_token(&app, &dee).await;
    let done = app
        .invitations()
        .accept_invitation(ipb::AcceptInvitationRequest {
            token,
            password: NEW_PASSWORD.into(),
            ..Default::default()
        })
        .await
        .expect("set the password")
        .into_inner();
    let user = app
        .identity
        .clone()
        .get_user(authed(
            &org.admin_token,
            pb::GetUserRequest { id: done.user_id },
        ))
        .await
        .expect("user")
        .into_inner();
    assert_eq!(
        (user.first_name.as_str(), user.position.as_str()),
        ("Dee", "Buyer")
    );
    assert_eq!(user.state, pb::UserState::Active as i32);

    // A link for the org's domain that needs approval.
    let link = app
        .invitations()
        .create_registration_link(authed(
            &org.admin_token,
            ipb::CreateRegistrationLinkRequest {
                allowed_domains: vec![org.domain.clone()],
                requires_approval: true,
                ..Default::default()
            },
        ))
        .await
        .expect("create link")
        .into_inner();
    let secret = link.url.rsplit('=').next().unwrap_or_default().to_owned();
    let join = |email: String| ipb::RegisterWithLinkRequest {
        link_token: secret.clone(),
        email,
        first_name: "Lin".into(),
        last_name: "Joiner".into(),
        locale: String::new(),
    };
    let wrong = app
        .invitations()
        .register_with_link(join("someone@elsewhere.test".into()))
        .await
        .expect_err("another domain");
    assert_eq!(wrong.code(), tonic::Code::InvalidArgument);
    assert!(wrong.message().contains(&org.domain));
    let lin = org.address("lin");
    let joined = app
        .invitations()
        .register_with_link(join(lin.clone()))
        .await
        .expect("join")
        .into_inner();
    assert!(joined.awaiting_approval);
    // The same answer for an address that cannot join (it tells a link holder nothing).
    let taken = app
        .invitations()
        .register_with_link(join(dee.clone()))
        .await
        .expect("same answer")
        .into_inner();
    assert_eq!(taken, joined);

    let awaiting = app
        .invitations()
        .list_invitations(authed(
            &org.admin_token,
            ipb::ListInvitationsRequest {
                filter: "state = AWAITING_APPROVAL".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(awaiting.invitations.len(), 1);
    assert_eq!(awaiting.invitations[0].email, lin);
    assert!(
        mails_to(&app, &lin).is_empty(),
        "nothing is mailed before approval"
    );
    app.invitations()
        .approve_registration(authed(
            &org.admin_token,
            ipb::ApproveRegistrationRequest {
                invitation_id: awaiting.invitations[0].id.clone(),
            },
        ))
        .await
        .expect("approve");
    let mail = wait_for_mail_where(&app, &lin, Duration::from_secs(30), |m| {
        m.contains("Confirm")
    })
    .await;
    let token = link_token(&parsed(&mail).body_text(0).expect("body"));
    accept(&app, &token).await.expect("confirm and join");

    // A rejected registration takes its INVITED user with it.
    let rex = org.address("rex");
    app.invitations()
        .register_with_link(join(rex.clone()))
        .await
        .expect("join");
    let rex_invitation = app
        .invitations()
        .list_invitations(authed(
            &org.admin_token,
            ipb::ListInvitationsRequest {
                filter: format!("email = \"{rex}\""),
                ..Default::default()
            },
        ))
        .await
        .expect("list")
        .into_inner()
        .invitations
        .remove(0);
    app.invitations()
        .reject_registration(authed(
            &org.admin_token,
            ipb::RejectRegistrationRequest {
                invitation_id: rex_invitation.id.clone(),
            },
        ))
        .await
        .expect("reject");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let usage = app
            .identity
            .clone()
            .get_email_address_usage(authed(
                &org.admin_token,
                pb::GetEmailAddressUsageRequest {
                    address: rex.clone(),
                },
            ))
            .await
            .expect("usage")
            .into_inner();
        if usage.uses.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the rejected registrant's address stayed claimed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Disabled, the link stops working.
    app.invitations()
        .disable_registration_link(authed(
            &org.admin_token,
            ipb::DisableRegistrationLinkRequest {
                id: link.id.clone(),
            },
        ))
        .await
        .expect("disable");
    let gone = app
        .invitations()
        .register_with_link(join(org.address("late")))
        .await
        .expect_err("disabled");
    assert_eq!(gone.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn an_invitee_dismissed_in_identity_has_their_invitation_revoked() {
    let app = spawn_app_with_invitations().await;
    let org = app.create_org(0).await;
    ready(&app, &org).await;
    let address = org.address("gone");
    let (invitation, token) = invited(&app, &org, &address).await;
    // The admin dismisses the INVITED user in identity, not through invitations.
    app.identity
        .clone()
        .dismiss_user(authed(
            &org.admin_token,
            pb::DismissUserRequest {
                id: invitation.user_id.clone(),
            },
        ))
        .await
        .expect("dismiss the invited user");
    let revoked = until(
        &app.invitations(),
        &org,
        &invitation.id,
        "the revocation that follows the dismissal",
        |i| i.state == ipb::InvitationState::Revoked as i32,
    )
    .await;
    assert_eq!(revoked.failure_reason, "the invited account was dismissed");
    let refused = accept(&app, &token)
        .await
        .expect_err("the link of a dismissed invitee is refused");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(
        refused.message().contains("revoked"),
        "{}",
        refused.message()
    );
}

#[tokio::test]
async fn hostile_inputs_get_refusals_that_say_what_is_wrong() {
    let app = spawn_app_with_invitations().await;
    let org = app.create_org(0).await;
    ready(&app, &org).await;
    let code_and_message = |r: Result<ipb::CreateInvitationsResponse, tonic::Status>| {
        let s = r.expect_err("refused");
        (s.code(), s.message().to_owned())
    };

    // More addresses than one call takes.
    let many: Vec<String> = (0..2_001).map(|k| org.address(&format!("m{k}"))).collect();
    let (code, message) = code_and_message(
        invite(
            &app,
            &org.admin_token,
            &many.join(","),
            ipb::DeliveryMethod::SystemMail,
            "",
        )
        .await,
    );
    assert_eq!(code, tonic::Code::InvalidArgument);
    assert!(message.contains("at most 2000"), "{message}");

    // An oversized message, and one with a text-direction control that could disguise it.
    for (text, words) in [
        ("x".repeat(5_000), "longer than"),
        ("pay \u{202E}gnp.exe".into(), "text-direction"),
    ] {
        let refused = app
            .invitations()
            .create_invitations(authed(
                &org.admin_token,
                ipb::CreateInvitationsRequest {
                    emails: org.address("ok"),
                    message: text,
                    ..Default::default()
                },
            ))
            .await
            .expect_err("refused");
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        assert!(
            refused.message().contains("message") && refused.message().contains(words),
            "{}",
            refused.message()
        );
    }

    // A look-alike address (Cyrillic "а") is its own address, never matched to the Latin one,
    // and an invisible character is refused in place.
    let answer = invite(
        &app,
        &org.admin_token,
        &format!(
            "ann@{} \u{430}nn@{} a\u{200B}nn@{}",
            org.domain, org.domain, org.domain
        ),
        ipb::DeliveryMethod::SystemMail,
        "",
    )
    .await
    .expect("invite");
    assert_eq!(answer.invitations.len(), 2, "{:?}", answer.rejected);
    assert_eq!(answer.rejected.len(), 1);
    assert_eq!(
        answer.rejected[0].code,
        ipb::RejectionReason::Malformed as i32
    );
    assert!(
        answer.rejected[0].reason.contains("invisible"),
        "{}",
        answer.rejected[0].reason
    );

    // A huge or junk token is simply not a link: NOT_FOUND, no query, no panic.
    for token in [
        "x".repeat(100_000),
        "'; DROP TABLE invitations; --".into(),
        String::new(),
    ] {
        let s = app
            .invitations()
            .preview_invitation(ipb::PreviewInvitationRequest { token })
            .await
            .expect_err("not a link");
        assert_eq!(s.code(), tonic::Code::NotFound);
        assert!(s.message().contains("not valid"), "{}", s.message());
    }

    // A dismissed employee's token stops working here too.
    let leaver = app.create_user(&org, "leaver", "").await;
    let token = app
        .login(&leaver.login_email)
        .await
        .expect("login")
        .access_token;
    app.identity
        .clone()
        .dismiss_user(authed(
            &org.admin_token,
            pb::DismissUserRequest {
                id: leaver.id.clone(),
            },
        ))
        .await
        .expect("dismiss");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match invite(
            &app,
            &token,
            &org.address("late"),
            ipb::DeliveryMethod::SystemMail,
            "",
        )
        .await
        {
            Err(s) if s.code() == tonic::Code::Unauthenticated => break,
            other => assert!(
                Instant::now() < deadline,
                "a dismissed user's token still works: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
