//! Defects found by using invitations as inviters and invitees would (issue 22, items 14–20),
//! each acted out over gRPC and real SMTP: mail that spam filters refuse, an address the relay
//! cannot take retried for half an hour, an inviter's name that mail readers decode into
//! control characters, resends that flood the invitee, an unknown delivery method, a pasted
//! address that vanishes, and an address held by an admin-made user refused with "try again".

use super::*;
use mail_parser::MimeHeaders;

/// The header block of a raw mail, and how often a header appears in it.
fn header_count(raw: &str, name: &str) -> usize {
    let headers = raw
        .split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .split("\n\n")
        .next()
        .unwrap_or_default();
    let wanted = format!("{}:", name.to_ascii_lowercase());
    headers
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with(&wanted))
        .count()
}

/// Checks one mail as a receiving provider would: every header RFC 5322 and MIME ask of it,
/// once, with values that parse. Returns its Message-ID.
fn assert_standards_complete(raw: &str) -> String {
    for name in [
        "Date",
        "From",
        "To",
        "Subject",
        "Message-ID",
        "MIME-Version",
        "Content-Type",
        "Content-Transfer-Encoding",
    ] {
        assert_eq!(header_count(raw, name), 1, "one {name} header: {raw}");
    }
    let mail = parsed(raw);
    let from = mail
        .from()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .expect("a From address");
    let sender_domain = from.rsplit_once('@').map(|(_, d)| d).expect("From has @");
    let id = mail.message_id().expect("a Message-ID").to_owned();
    let (unique, id_domain) = id.rsplit_once('@').expect("Message-ID is unique@domain");
    assert!(unique.len() >= 16, "a unique left part: {id}");
    assert_eq!(
        id_domain, sender_domain,
        "the Message-ID is in the sender's domain"
    );
    assert!(mail.date().is_some(), "a Date that parses: {raw}");
    assert_eq!(
        mail.mime_version().as_text().map(str::trim),
        Some("1.0"),
        "MIME-Version: {raw}"
    );
    let content_type = mail.content_type().expect("a Content-Type");
    assert_eq!(content_type.ctype(), "text");
    assert_eq!(content_type.subtype(), Some("plain"));
    assert_eq!(
        content_type
            .attribute("charset")
            .map(|c| c.to_ascii_lowercase()),
        Some("utf-8".into())
    );
    let encoding = mail
        .content_transfer_encoding()
        .expect("a Content-Transfer-Encoding")
        .to_ascii_lowercase();
    assert!(
        ["7bit", "quoted-printable", "base64"].contains(&encoding.as_str()),
        "{encoding}"
    );
    assert!(raw.is_ascii(), "the mail is 7-bit as its headers say");
    let body = mail.body_text(0).expect("a text body");
    assert!(
        body.contains("https://mailroom.test/invite?token="),
        "{body}"
    );
    id
}

/// Item 14: both languages' mail is complete, and the own-mail-client message decodes as
/// written.
#[tokio::test]
async fn invitation_mail_is_standards_complete_on_both_paths() {
    let app = spawn_app_with_invitations().await;
    let org = app.create_org(0).await;
    ready(&app, &org).await;
    let mut ids = Vec::new();
    for (local, locale) in [("mail-en", ""), ("mail-ru", "ru")] {
        let address = org.address(local);
        invite(
            &app,
            &org.admin_token,
            &address,
            ipb::DeliveryMethod::SystemMail,
            locale,
        )
        .await
        .expect("invite");
        let raw = wait_for_mail(&app, &address, Duration::from_secs(30)).await;
        ids.push(assert_standards_complete(&raw));
    }
    assert_ne!(ids[0], ids[1], "every mail has its own Message-ID");

    // The inviter's own mail client: what it is given is a subject, a body and mailto: URLs
    // (RFC 6068) that decode to exactly them, with this invitee's link.
    let address = org.address("own-client");
    let answer = invite(
        &app,
        &org.admin_token,
        &address,
        ipb::DeliveryMethod::OwnMailClient,
        "ru",
    )
    .await
    .expect("invite");
    let composed = answer.composed.expect("a composed message");
    assert!(!composed.subject.contains(['\r', '\n']));
    let url = url::Url::parse(&composed.mailto_links[0]).expect("the mailto: parses");
    assert_eq!(url.scheme(), "mailto");
    assert_eq!(url.path(), address);
    let query: std::collections::HashMap<String, String> = url.query_pairs().into_owned().collect();
    assert_eq!(query.len(), 2, "only subject and body: {query:?}");
    assert_eq!(query["subject"], composed.subject);
    assert_eq!(
        query["body"],
        composed
            .body
            .replace("{link}", &composed.invitation_links[0])
            .replace('\n', "\r\n")
    );
}

/// Item 15: an address the relay cannot take is refused when invited; where the operator says
/// the relay takes it and it does not, the invitation fails at once with the reason.
#[tokio::test]
async fn a_non_ascii_local_part_is_refused_at_once_not_retried_for_half_an_hour() {
    let app = spawn_app_with_invitations().await;
    let org = app.create_org(0).await;
    ready(&app, &org).await;
    let address = format!("анна.ли@{}", org.domain);

    let answer = invite(
        &app,
        &org.admin_token,
        &format!("{address} {}", org.address("plain")),
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
    assert_eq!(invited, [org.address("plain").as_str()]);
    assert_eq!(answer.rejected.len(), 1, "{:?}", answer.rejected);
    assert_eq!(answer.rejected[0].input, address);
    assert_eq!(
        answer.rejected[0].code,
        ipb::RejectionReason::Malformed as i32
    );
    assert!(
        answer.rejected[0].reason.contains("cannot deliver"),
        "{}",
        answer.rejected[0].reason
    );

    let refused = app
        .invitations()
        .register_user(authed(
            &org.admin_token,
            ipb::RegisterUserRequest {
                email: address.clone(),
                first_name: "Анна".into(),
                ..Default::default()
            },
        ))
        .await
        .expect_err("a registration is mailed too");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused.message().contains("cannot deliver"),
        "{}",
        refused.message()
    );

    // A relay said to take such addresses that does not (the stack's sink has no SMTPUTF8):
    // FAILED at the first attempt, with the reason, though many slow retries were allowed.
    let stop = CancellationToken::new();
    let trusting = app
        .start_invitations(stop.clone(), |c| {
            c.smtputf8_addresses = true;
            c.delivery_attempts = 8;
            c.delivery_retry_ms = 2_000;
        })
        .await;
    let answer = trusting
        .clone()
        .create_invitations(authed(
            &org.admin_token,
            ipb::CreateInvitationsRequest {
                emails: address.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("invite")
        .into_inner();
    assert_eq!(answer.invitations.len(), 1, "{:?}", answer.rejected);
    let started = Instant::now();
    let failed = until(
        &trusting,
        &org,
        &answer.invitations[0].id,
        "the refusal",
        |i| i.state == ipb::InvitationState::Failed as i32,
    )
    .await;
    // Retried, it would take minutes (2 s doubling over 8 attempts: about 254 s).
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(
        failed.failure_reason.contains("SMTPUTF8") && !failed.failure_reason.contains("gave up"),
        "{}",
        failed.failure_reason
    );
    assert_eq!(failed.delivery_state, ipb::DeliveryState::Failed as i32);
    stop.cancel();
}

/// Item 16: an inviter whose name is written as encoded words sees it in the subject as
/// written, never decoded into a line break or a text-direction override.
#[tokio::test]
async fn an_encoded_word_in_the_inviters_name_is_shown_literally() {
    let app = spawn_app_with_invitations().await;
    let org = app.create_org(0).await;
    ready(&app, &org).await;
    let first = "=?utf-8?q?=E2=80=AE=0D=0ABcc:_x@evil.test?=";
    let login = org.address("mallory");
    let user = app
        .identity
        .clone()
        .create_user(authed(
            &org.admin_token,
            pb::CreateUserRequest {
                user: Some(pb::User {
                    login_email: login.clone(),
                    first_name: first.into(),
                    last_name: "=?utf-8?b?4oCu?=".into(),
                    ..Default::default()
                }),
                password: mailroom_tests::PASSWORD.into(),
            },
        ))
        .await
        .expect("identity takes the name: it is printable text")
        .into_inner();
    app.until_known(&user.id).await;
    let token = app.login(&login).await.expect("signs in").access_token;
    let address = org.address("target");
    invite(&app, &token, &address, ipb::DeliveryMethod::SystemMail, "")
        .await
        .expect("invite");
    let raw = wait_for_mail(&app, &address, Duration::from_secs(30)).await;
    let mail = parsed(&raw);
    let subject = mail.subject().expect("a subject");
    assert_eq!(
        subject,
        format!(
            "{first} =?utf-8?b?4oCu?= invites you to join Org {}",
            org.domain
        )
    );
    assert!(!subject.contains(['\r', '\n', '\u{202E}']), "{subject:?}");
    assert_eq!(header_count(&raw, "Bcc"), 0);
    assert_standards_complete(&raw);
}

/// Item 17: twenty resends in a row send no mail within the cooldown; after it one does.
#[tokio::test]
async fn resending_in_a_burst_mails_once_per_cooldown() {
    let app = spawn_app_with_invitations().await;
    let org = app.create_org(0).await;
    ready(&app, &org).await;
    let address = org.address("patient");
    let (invitation, _) = invited(&app, &org, &address).await;
    let resend = |client: Client| {
        let id = invitation.id.clone();
        let token = org.admin_token.clone();
        async move {
            client
                .clone()
                .resend_invitation(authed(&token, ipb::ResendInvitationRequest { id }))
                .await
        }
    };
    let mut refusals = Vec::new();
    for _ in 0..20 {
        if let Err(status) = resend(app.invitations()).await {
            refusals.push(status);
        }
    }
    assert_eq!(
        refusals.len(),
        20,
        "every resend within the cooldown is refused"
    );
    for status in &refusals {
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(
            status.message().contains("was sent") && status.message().contains("resend it after"),
            "{}",
            status.message()
        );
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        mails_to(&app, &address).len(),
        1,
        "one mail, not one per click"
    );

    // A replica with a short cooldown: once it has passed, the resend mails again, and the
    // next click is refused once more.
    let stop = CancellationToken::new();
    let quick = app
        .start_invitations(stop.clone(), |c| c.resend_cooldown_secs = 1)
        .await;
    resend(quick.clone()).await.expect("after the cooldown");
    wait_for_mail_where(&app, &address, Duration::from_secs(30), |_| {
        mails_to(&app, &address).len() >= 2
    })
    .await;
    let again = resend(quick.clone()).await.expect_err("too soon again");
    assert_eq!(again.code(), tonic::Code::ResourceExhausted);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(mails_to(&app, &address).len(), 2);
    stop.cancel();
}

/// Item 18: a delivery method the API does not have is refused, and nothing is mailed.
#[tokio::test]
async fn an_unknown_delivery_method_is_refused_and_sends_nothing() {
    let app = spawn_app_with_invitations().await;
    let org = app.create_org(0).await;
    ready(&app, &org).await;
    let address = org.address("nobody");
    for delivery in [7, -1, 3] {
        let refused = app
            .invitations()
            .create_invitations(authed(
                &org.admin_token,
                ipb::CreateInvitationsRequest {
                    emails: address.clone(),
                    delivery,
                    ..Default::default()
                },
            ))
            .await
            .expect_err("an unknown delivery method is refused");
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        assert!(
            refused.message().contains("delivery"),
            "{}",
            refused.message()
        );
    }
    let listed = app
        .invitations()
        .list_invitations(authed(
            &org.admin_token,
            ipb::ListInvitationsRequest::default(),
        ))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.total_size, 0);
    // Enum values in the list's filter are checked too.
    for filter in ["state = 7", "kind = 9", "state = UNSPECIFIED"] {
        let refused = app
            .invitations()
            .list_invitations(authed(
                &org.admin_token,
                ipb::ListInvitationsRequest {
                    filter: filter.into(),
                    ..Default::default()
                },
            ))
            .await
            .expect_err("an unknown value is refused");
        assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{filter}");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(mails_to(&app, &address).is_empty());
}

/// Item 19: every address pasted is invited or reported, however names and brackets mix.
#[tokio::test]
async fn every_pasted_address_is_invited_or_reported() {
    let app = spawn_app_with_invitations().await;
    let org = app.create_org(0).await;
    ready(&app, &org).await;
    let a = |l: &str| org.address(l);
    let paste = format!(
        "Ann Lee <{}> {}\n{} Cy Doe <{}>\n<{}><{}> trailing-junk\nEve <{}> Fay <{}>",
        a("ann"),
        a("bob"),
        a("cy-before"),
        a("cy"),
        a("dee"),
        a("dan"),
        a("eve"),
        a("fay")
    );
    let answer = invite(
        &app,
        &org.admin_token,
        &paste,
        ipb::DeliveryMethod::OwnMailClient,
        "",
    )
    .await
    .expect("invite");
    let invited: Vec<String> = answer.invitations.iter().map(|i| i.email.clone()).collect();
    assert_eq!(
        invited,
        [
            a("ann"),
            a("bob"),
            a("cy-before"),
            a("cy"),
            a("dee"),
            a("dan"),
            a("eve"),
            a("fay")
        ]
    );
    let reported: Vec<(&str, i32)> = answer
        .rejected
        .iter()
        .map(|r| (r.input.as_str(), r.code))
        .collect();
    assert_eq!(
        reported,
        [("trailing-junk", ipb::RejectionReason::Malformed as i32)]
    );
}

/// Item 20: an address held by a user an admin made (INVITED, no invitation) is reported with
/// who holds it, not as an invitation to wait for.
#[tokio::test]
async fn an_address_held_by_an_admin_made_user_names_its_holder() {
    let app = spawn_app_with_invitations().await;
    let org = app.create_org(0).await;
    ready(&app, &org).await;
    let address = org.address("made-by-admin");
    let holder = app
        .identity
        .clone()
        .create_user(authed(
            &org.admin_token,
            pb::CreateUserRequest {
                user: Some(pb::User {
                    login_email: address.clone(),
                    first_name: "Hal".into(),
                    last_name: "Holder".into(),
                    ..Default::default()
                }),
                password: String::new(),
            },
        ))
        .await
        .expect("an admin makes a user without a password")
        .into_inner();
    assert_eq!(holder.state, pb::UserState::Invited as i32);
    for _ in 0..2 {
        let answer = invite(
            &app,
            &org.admin_token,
            &address,
            ipb::DeliveryMethod::SystemMail,
            "",
        )
        .await
        .expect("invite");
        assert!(answer.invitations.is_empty());
        let refused = &answer.rejected[0];
        assert_eq!(refused.code, ipb::RejectionReason::AlreadyAUser as i32);
        assert_eq!(refused.user_id, holder.id);
        assert_eq!(refused.user_state, "INVITED");
        assert!(
            refused.reason.contains("Hal Holder") && !refused.reason.contains("try again"),
            "{}",
            refused.reason
        );
    }
}

/// Item 20 where a registrant meets it: confirming a registration through a link whose address
/// an admin has meanwhile given to a user (INVITED, no invitation) says so, and never sends
/// them looking for an invitation mail that does not exist.
#[tokio::test]
async fn confirming_an_address_an_admin_gave_away_meanwhile_says_so() {
    let app = spawn_app_with_invitations().await;
    let org = app.create_org(0).await;
    ready(&app, &org).await;
    let link = app
        .invitations()
        .create_registration_link(authed(
            &org.admin_token,
            ipb::CreateRegistrationLinkRequest::default(),
        ))
        .await
        .expect("create link")
        .into_inner();
    let secret = link.url.rsplit('=').next().unwrap_or_default().to_owned();
    let address = org.address("registrant");
    app.invitations()
        .register_with_link(ipb::RegisterWithLinkRequest {
            link_token: secret,
            email: address.clone(),
            first_name: "Rae".into(),
            last_name: "Registrant".into(),
            locale: String::new(),
        })
        .await
        .expect("register through the link");
    let token = mailed_token(&app, &address).await;
    app.identity
        .clone()
        .create_user(authed(
            &org.admin_token,
            pb::CreateUserRequest {
                user: Some(pb::User {
                    login_email: address.clone(),
                    first_name: "Hal".into(),
                    last_name: "Holder".into(),
                    ..Default::default()
                }),
                password: String::new(),
            },
        ))
        .await
        .expect("an admin makes a user with the address meanwhile");
    let refused = accept(&app, &token)
        .await
        .expect_err("the address is taken");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(
        refused.message().contains("an admin made")
            && !refused.message().contains("invitation's mail"),
        "{}",
        refused.message()
    );
}
