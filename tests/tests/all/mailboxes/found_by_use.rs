//! Defects found by using the registry as its users would (issue 22, items 3, 4, 5 and 7):
//! a CRM queue that took anyone, `access_by` telling whether an id is a user somewhere,
//! failure reasons in program debug text, and a transfer to a stranger that took five
//! seconds to be refused.

use tokio::io::AsyncWriteExt as _;

use super::*;

/// An id no user has: random (UUIDv4), so nothing about it says it was made a moment ago.
fn unknown_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// An id shaped like Mailroom's own (UUIDv7) but made an hour ago, that no user has.
fn unknown_old_v7_id() -> String {
    let an_hour_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
        - 3600;
    uuid::Uuid::new_v7(uuid::Timestamp::from_unix(uuid::NoContext, an_hour_ago, 0)).to_string()
}

fn with_queue(
    mut request: mpb::ConnectMailboxRequest,
    queue: &[&str],
) -> mpb::ConnectMailboxRequest {
    if let Some(mailbox) = request.mailbox.as_mut() {
        mailbox.crm = Some(mpb::CrmSettings {
            in_crm: true,
            queue_user_ids: queue.iter().map(|id| (*id).to_owned()).collect(),
        });
    }
    request
}

fn crm_update(id: &str, queue: &[&str]) -> mpb::UpdateMailboxRequest {
    mpb::UpdateMailboxRequest {
        mailbox: Some(mpb::Mailbox {
            id: id.into(),
            crm: Some(mpb::CrmSettings {
                in_crm: true,
                queue_user_ids: queue.iter().map(|id| (*id).to_owned()).collect(),
            }),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["crm".into()],
        }),
        password: String::new(),
    }
}

/// Item 3: every queue user is an active user of the caller's organisation; anyone else is
/// refused at their position, in words that do not tell whether the id is a user elsewhere.
#[tokio::test]
async fn a_crm_queue_takes_only_active_users_of_the_organisation() {
    let app = spawn_app_with_mailboxes().await;
    let org = app.create_org(0).await;
    let other = app.create_org(0).await;
    let ann = app.create_user(&org, "ann", "").await;
    let dan = app.create_user(&org, "dan", "").await;
    let fred = app.create_user(&other, "fred", "").await;
    app.identity
        .clone()
        .dismiss_user(authed(
            &org.admin_token,
            pb::DismissUserRequest { id: dan.id.clone() },
        ))
        .await
        .expect("dismiss dan");
    let random = unknown_id();
    let old = unknown_old_v7_id();

    // A queue of the organisation's active users is taken (once the registry knows Ann).
    let deadline = Instant::now() + Duration::from_secs(20);
    let mailbox = loop {
        match app
            .mailboxes()
            .connect_mailbox(authed(
                &org.admin_token,
                with_queue(
                    connect_request(&bulk(11), "", BULK_PASSWORD),
                    &[&ann.id, &org.admin_id],
                ),
            ))
            .await
        {
            Ok(m) => break m.into_inner(),
            Err(s) if Instant::now() < deadline && s.code() != Code::AlreadyExists => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(s) => panic!("a queue of active colleagues is refused: {s:?}"),
        }
    };
    assert_eq!(
        mailbox.crm.as_ref().map(|c| c.queue_user_ids.clone()),
        Some(vec![ann.id.clone(), org.admin_id.clone()])
    );

    // Another organisation's user, a random id, an old-looking id: refused at their position,
    // with one message for all (nothing says which exists elsewhere).
    let mut messages = Vec::new();
    for stranger in [&fred.id, &random, &old] {
        let refused = app
            .mailboxes()
            .connect_mailbox(authed(
                &org.admin_token,
                with_queue(
                    connect_request(&bulk(12), "", BULK_PASSWORD),
                    &[&ann.id, stranger],
                ),
            ))
            .await
            .expect_err("a queue with a stranger is refused");
        assert_eq!(
            refused.code(),
            Code::InvalidArgument,
            "{stranger}: {refused:?}"
        );
        assert!(
            refused.message().contains("crm.queue_user_ids[1]"),
            "{stranger}: {}",
            refused.message()
        );
        assert!(
            !refused.message().contains(stranger.as_str()),
            "{refused:?}"
        );
        messages.push(refused.message().to_owned());
    }
    assert!(
        messages.iter().all(|m| *m == messages[0]),
        "one answer whether the id is a user elsewhere or nobody: {messages:#?}"
    );

    // validate_only checks the queue too; a duplicate before the stranger keeps the position
    // the caller sent.
    let mut request = with_queue(
        connect_request(&bulk(12), "", BULK_PASSWORD),
        &[&ann.id, &ann.id, &fred.id],
    );
    request.validate_only = true;
    let refused = app
        .mailboxes()
        .connect_mailbox(authed(&org.admin_token, request))
        .await
        .expect_err("validate_only refuses a foreign user in the queue");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(
        refused.message().contains("crm.queue_user_ids[2]"),
        "{}",
        refused.message()
    );

    // A dismissed colleague is refused too (once the registry has heard of the dismissal).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let answer = app
            .mailboxes()
            .update_mailbox(authed(
                &org.admin_token,
                crm_update(&mailbox.id, &[&ann.id, &dan.id]),
            ))
            .await;
        match answer {
            Err(refused) if refused.code() == Code::InvalidArgument => {
                assert!(
                    refused.message().contains("crm.queue_user_ids[1]"),
                    "{}",
                    refused.message()
                );
                break;
            }
            other => assert!(
                Instant::now() < deadline,
                "a dismissed user was taken into the queue: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    app.mailboxes()
        .update_mailbox(authed(
            &org.admin_token,
            crm_update(&mailbox.id, &[&ann.id]),
        ))
        .await
        .expect("a queue of one active colleague");

    // UpdateMailbox refuses strangers as ConnectMailbox does, and saves nothing.
    for stranger in [&fred.id, &random] {
        let refused = app
            .mailboxes()
            .update_mailbox(authed(
                &org.admin_token,
                crm_update(&mailbox.id, &[stranger]),
            ))
            .await
            .expect_err("an update naming a stranger is refused");
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
        assert!(
            refused.message().contains("crm.queue_user_ids[0]"),
            "{}",
            refused.message()
        );
    }
    let kept = app
        .mailboxes()
        .get_mailbox(authed(
            &org.admin_token,
            mpb::GetMailboxRequest {
                id: mailbox.id.clone(),
            },
        ))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(
        kept.crm.map(|c| c.queue_user_ids),
        Some(vec![ann.id.clone()]),
        "the refused updates changed nothing"
    );
}

/// Item 4: `access_by` naming an id that is no user of the caller's organisation — nobody,
/// or another organisation's user or admin — is one answer: OK, no rows.
#[tokio::test]
async fn access_by_anyone_outside_the_organisation_is_the_same_empty_answer() {
    let app = spawn_app_with_mailboxes().await;
    let org = app.create_org(0).await;
    let other = app.create_org(0).await;
    let ann = app.create_user(&org, "ann", "").await;
    let fred = app.create_user(&other, "fred", "").await;
    let ann_token = sign_in(&app, &ann).await;
    let mailbox = connect_when_known(&app, &ann_token, &bulk(13), "").await;
    until_listable(&app, &org.admin_token).await;
    // Access control knows Ann's mailbox and the other organisation's people.
    app.eventually(&ann.id, "mailbox.read_mail", &mailbox.id, true)
        .await;
    until_listable(&app, &other.admin_token).await;

    let filtered = |filter: String| {
        let app = &app;
        let token = org.admin_token.clone();
        async move {
            list(
                app,
                &token,
                mpb::ListMailboxesRequest {
                    filter,
                    read_mask: Some(prost_types::FieldMask {
                        paths: vec!["email".into()],
                    }),
                    ..Default::default()
                },
            )
            .await
            .map(|page| {
                page.mailboxes
                    .into_iter()
                    .map(|m| m.email)
                    .collect::<Vec<_>>()
            })
        }
    };

    // The organisation's own reader: her mailbox.
    assert_eq!(
        filtered(format!(r#"access_by = "{}""#, ann.id))
            .await
            .expect("access_by a colleague"),
        vec![bulk(13)]
    );

    for (who, id) in [
        ("nobody (random id)", unknown_id()),
        ("nobody (old v7 id)", unknown_old_v7_id()),
        ("another organisation's user", fred.id.clone()),
        ("another organisation's admin", other.admin_id.clone()),
    ] {
        let rows = filtered(format!(r#"access_by = "{id}""#)).await;
        assert_eq!(
            rows.as_ref()
                .map_err(|s| (s.code(), s.message().to_owned())),
            Ok(&Vec::new()),
            "access_by {who}"
        );
        let rows = filtered(format!(r#"NOT access_by = "{id}""#)).await;
        assert_eq!(
            rows.as_ref()
                .map_err(|s| (s.code(), s.message().to_owned())),
            Ok(&vec![bulk(13)]),
            "NOT access_by {who}"
        );
    }
}

/// A TCP server on loopback that answers every connection with `banner` and closes it: a
/// "mail server" that speaks no mail protocol.
async fn babbler(banner: &'static str) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let port = listener.local_addr().expect("local addr").port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = socket.write_all(banner.as_bytes()).await;
                tokio::time::sleep(Duration::from_millis(300)).await;
            });
        }
    });
    port
}

/// Program debug text that must never reach a person.
fn assert_plain(message: &str) {
    for debug in [
        "code: None",
        "info: Some(",
        "Some(\"",
        "Error(Error",
        "input: [",
        "error Tag",
        "permanent error (",
        "transient error (",
        "response error",
    ] {
        assert!(
            !message.contains(debug),
            "program text `{debug}` in: {message}"
        );
    }
}

/// Item 5: failure reasons are plain words with the server's own text quoted and trimmed.
#[tokio::test]
async fn failure_reasons_are_plain_words_with_the_servers_text_quoted() {
    let app = spawn_app_with_mailboxes().await;
    let org = app.create_org(0).await;

    // The real Dovecot refuses a wrong password, over IMAP and SMTP.
    let deadline = Instant::now() + Duration::from_secs(20);
    let refused = loop {
        match app
            .mailboxes()
            .connect_mailbox(authed(
                &org.admin_token,
                connect_request(&bulk(14), "", "not-the-password"),
            ))
            .await
        {
            Err(s) if s.code() == Code::FailedPrecondition => break s,
            // The registry or access control has not heard of the admin made a moment ago
            // (access control is waited for 3 s at most, then UNAVAILABLE: retry).
            Err(s)
                if Instant::now() < deadline
                    && matches!(s.code(), Code::NotFound | Code::Unavailable) =>
            {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            other => panic!("a wrong password: {other:?}"),
        }
    };
    let message = refused.message();
    assert_plain(message);
    assert!(
        message.contains("IMAP login failed") && message.contains("SMTP login failed"),
        "{message}"
    );
    assert!(
        message.contains("\"[AUTHENTICATIONFAILED] Authentication failed.\""),
        "Dovecot's IMAP answer, quoted: {message}"
    );
    assert!(
        message.contains("535 \"5.7.8 "),
        "the SMTP code and Dovecot's words, quoted: {message}"
    );

    // A "mail server" that answers with something that is no protocol at all.
    let nonsense = "lol, this is not a mail server\r\n";
    let port = babbler(nonsense).await;
    for (step, settings) in [("IMAP", "imap"), ("SMTP", "smtp")] {
        let mut request = connect_request(&bulk(14), "", BULK_PASSWORD);
        let mailbox = request.mailbox.as_mut().expect("mailbox");
        let server = if settings == "imap" {
            mailbox.imap.as_mut()
        } else {
            mailbox.smtp.as_mut()
        }
        .expect("server settings");
        server.host = "127.0.0.1".into();
        server.port = i32::from(port);
        let refused = app
            .mailboxes()
            .connect_mailbox(authed(&org.admin_token, request))
            .await
            .expect_err("no mail server there");
        let message = refused.message();
        assert_plain(message);
        assert!(message.starts_with(step), "{message}");
        assert!(
            message.contains("\"lol, this is not a mail server\""),
            "{step}: the server's words, quoted and trimmed: {message}"
        );
    }

    // ConnectMailboxes reports each item in the same words.
    let answer = app
        .mailboxes()
        .connect_mailboxes(authed(
            &org.admin_token,
            mpb::ConnectMailboxesRequest {
                imap: Some(imap()),
                smtp: Some(smtp()),
                mailboxes: vec![mpb::MailboxCredentials {
                    email: bulk(15),
                    password: "not-the-password".into(),
                    ..Default::default()
                }],
                validate_only: true,
            },
        ))
        .await
        .expect("a bulk answer")
        .into_inner();
    let error = &answer.results[0].error;
    assert_plain(error);
    assert!(
        error.contains("\"[AUTHENTICATIONFAILED] Authentication failed.\""),
        "{error}"
    );
}

/// Item 7: a transfer to someone who is not a user of the organisation — another
/// organisation's user, or nobody — is refused at once, in one answer for both.
#[tokio::test]
async fn a_transfer_to_someone_outside_the_organisation_is_refused_at_once() {
    let app = spawn_app_with_mailboxes().await;
    let other = app.create_org(0).await;
    let fred = app.create_user(&other, "fred", "").await;
    // Fred's id is made now; an id a few seconds old may still be a user identity's event has
    // not brought yet, and may be waited for. Fred is older than that by the time he is used.
    let fred_made = Instant::now();
    let org = app.create_org(0).await;
    let mailbox = connect_when_known(&app, &org.admin_token, &bulk(16), "").await;
    tokio::time::sleep(Duration::from_secs(11).saturating_sub(fred_made.elapsed())).await;

    let mut messages = Vec::new();
    for (who, id) in [
        ("another organisation's user", fred.id.clone()),
        ("another organisation's admin", other.admin_id.clone()),
        ("nobody (random id)", unknown_id()),
        ("nobody (old v7 id)", unknown_old_v7_id()),
    ] {
        let started = Instant::now();
        let refused = app
            .mailboxes()
            .transfer_mailbox(authed(
                &org.admin_token,
                mpb::TransferMailboxRequest {
                    id: mailbox.id.clone(),
                    new_owner_user_id: id.clone(),
                },
            ))
            .await
            .expect_err("no transfer to a stranger");
        let took = started.elapsed();
        assert_eq!(refused.code(), Code::NotFound, "{who}: {refused:?}");
        assert!(
            took < Duration::from_millis(1500),
            "{who}: refused after {took:?}"
        );
        messages.push(refused.message().replace(&id, "<id>"));

        // Connecting a mailbox for them is refused as fast.
        let started = Instant::now();
        let refused = app
            .mailboxes()
            .connect_mailbox(authed(
                &org.admin_token,
                connect_request(&bulk(17), &id, BULK_PASSWORD),
            ))
            .await
            .expect_err("no mailbox for a stranger");
        let took = started.elapsed();
        assert_eq!(refused.code(), Code::NotFound, "{who}: {refused:?}");
        assert!(
            took < Duration::from_millis(1500),
            "{who}: connect refused after {took:?}"
        );
    }
    assert!(
        messages.iter().all(|m| *m == messages[0]),
        "one answer for a stranger and for nobody: {messages:#?}"
    );

    // A colleague made a moment ago is still waited for: the transfer succeeds.
    let heir = app.create_user(&org, "heir", "").await;
    let moved = app
        .mailboxes()
        .transfer_mailbox(authed(
            &org.admin_token,
            mpb::TransferMailboxRequest {
                id: mailbox.id.clone(),
                new_owner_user_id: heir.id.clone(),
            },
        ))
        .await
        .expect("a transfer to a colleague made a moment ago")
        .into_inner();
    assert_eq!(moved.owner_user_id, heir.id);
}
