//! Invitation mail: its form and link, the Russian template, the own-mail-client way, refusals and
//! a server that is down, and an outcome write cut off mid-way.

use super::*;

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

/// A batch larger than the sender's concurrency, mixing addresses the server takes, ones it
/// refuses and ones already held: every invitee is mailed exactly once, and each mail's
/// outcome is recorded (the outcomes are written together, several per statement).
#[tokio::test]
async fn a_bulk_invitation_mails_each_invitee_once_and_records_every_outcome() {
    let app = spawn_app_with(AppOptions {
        with_access: true,
        ..AppOptions::default()
    })
    .await;
    let server = SmtpServer::start();
    let stop = CancellationToken::new();
    let invitations = app
        .start_invitations(stop.clone(), |c| {
            c.smtp.port = server.port;
            c.smtp.pool_size = 3;
            c.delivery_concurrency = 3;
        })
        .await;
    let org = app.create_org(0).await;
    ready(&app, &org).await;
    let existing = app.create_user(&org, "existing", "").await;
    let welcome: Vec<String> = (0..40)
        .map(|k| org.address(&format!("bulk{k:02}")))
        .collect();
    let refused: Vec<String> = (0..3).map(|k| org.address(&format!("refuse{k}"))).collect();
    let mut list: Vec<String> = welcome.iter().chain(&refused).cloned().collect();
    list.insert(7, existing.login_email.clone());
    let answer = invitations
        .clone()
        .create_invitations(authed(
            &org.admin_token,
            ipb::CreateInvitationsRequest {
                emails: list.join("\n"),
                ..Default::default()
            },
        ))
        .await
        .expect("invite")
        .into_inner();
    // In the order asked, the held address reported with its holder.
    let invited: Vec<&str> = answer
        .invitations
        .iter()
        .map(|i| i.email.as_str())
        .collect();
    let expected: Vec<&str> = welcome.iter().chain(&refused).map(String::as_str).collect();
    assert_eq!(invited, expected);
    assert_eq!(answer.rejected.len(), 1, "{:?}", answer.rejected);
    assert_eq!(
        answer.rejected[0].code,
        ipb::RejectionReason::AlreadyAUser as i32
    );
    assert_eq!(answer.rejected[0].user_id, existing.id);

    for invitation in &answer.invitations {
        let refusal = invitation.email.contains("refuse");
        let done = until(
            &invitations,
            &org,
            &invitation.id,
            "the mail's outcome",
            |i| i.delivery_state != ipb::DeliveryState::Queued as i32,
        )
        .await;
        if refusal {
            assert_eq!(done.state, ipb::InvitationState::Failed as i32, "{done:?}");
            assert!(done.failure_reason.contains("550"), "{done:?}");
        } else {
            assert_eq!(
                done.delivery_state,
                ipb::DeliveryState::Sent as i32,
                "{done:?}"
            );
            assert_eq!(done.state, ipb::InvitationState::Pending as i32, "{done:?}");
            assert_eq!(done.send_count, 1, "{done:?}");
        }
    }
    // Nothing more goes out later: one mail per invitee the server took.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let messages = server.messages();
    assert_eq!(messages.len(), welcome.len(), "one mail each");
    for address in &welcome {
        let to_them = messages
            .iter()
            .filter(|m| m.contains(address.as_str()))
            .count();
        assert_eq!(to_them, 1, "{address} got {to_them} mails");
    }
    stop.cancel();
}

/// A batch of outcomes whose write is cut off (its database connection killed, as in a
/// failover) while the table it writes to stays locked for longer than the lease: the write is
/// tried again, the claims stay renewed until it is recorded, and no other sender takes the
/// rows and mails them again with a new link.
#[tokio::test]
async fn an_outcome_write_cut_off_is_written_again_and_each_invitee_gets_one_mail() {
    let app = spawn_app_with(AppOptions {
        with_access: true,
        ..AppOptions::default()
    })
    .await;
    let (gate, opened) = tokio::sync::watch::channel(false);
    let (port, received) = holding_smtp(opened).await;
    let stop = CancellationToken::new();
    let invitations = app
        .start_invitations(stop.clone(), |c| {
            c.smtp.port = port;
            c.smtp.pool_size = 3;
            c.delivery_concurrency = 3;
            c.delivery_lease_ms = 1_000;
        })
        .await;
    let org = app.create_org(0).await;
    ready(&app, &org).await;
    let invitees: Vec<String> = (0..3).map(|k| org.address(&format!("cutoff{k}"))).collect();
    let answer = invitations
        .clone()
        .create_invitations(authed(
            &org.admin_token,
            ipb::CreateInvitationsRequest {
                emails: invitees.join("\n"),
                ..Default::default()
            },
        ))
        .await
        .expect("invite")
        .into_inner();
    assert_eq!(answer.invitations.len(), invitees.len());
    // Every mail is at the server, not yet answered.
    let started = Instant::now();
    while received.lock().expect("messages").len() < invitees.len() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the mails did not reach the server"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The outbox locked: the outcomes' write (which publishes their events) waits on it.
    let db = sqlx::PgPool::connect(app.database_url()).await.expect("db");
    let mut lock = db.begin().await.expect("begin");
    sqlx::query("LOCK TABLE invitations.outbox IN SHARE MODE")
        .execute(&mut *lock)
        .await
        .expect("lock the outbox");
    gate.send_replace(true);
    let mut killed = 0;
    let started = Instant::now();
    while killed == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no outcome write waited on the locked outbox"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        killed = sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid() \
               AND wait_event_type = 'Lock' AND query ILIKE '%INSERT INTO outbox%'",
        )
        .fetch_one(&db)
        .await
        .expect("cut the write off");
    }
    // Longer than the lease: a claim no longer renewed would be taken again and mailed again.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    lock.commit().await.expect("unlock");
    for invitation in &answer.invitations {
        let done = until(
            &invitations,
            &org,
            &invitation.id,
            "the mail's outcome",
            |i| i.delivery_state == ipb::DeliveryState::Sent as i32,
        )
        .await;
        assert_eq!(done.send_count, 1, "{done:?}");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let messages = received.lock().expect("messages").clone();
    assert_eq!(messages.len(), invitees.len(), "one mail each");
    for address in &invitees {
        let to_them = messages
            .iter()
            .filter(|m| m.contains(address.as_str()))
            .count();
        assert_eq!(to_them, 1, "{address} got {to_them} mails");
    }
    stop.cancel();
}

/// A plain SMTP server on a free port that keeps each message (its envelope and data) as it
/// arrives, and answers the end of its data only once `opened` is true.
async fn holding_smtp(
    opened: tokio::sync::watch::Receiver<bool>,
) -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listen");
    let port = listener.local_addr().expect("address").port();
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = received.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (kept, mut opened) = (kept.clone(), opened.clone());
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                write.write_all(b"220 holding ESMTP\r\n").await?;
                let mut message = String::new();
                while let Some(line) = lines.next_line().await? {
                    let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
                    let answer: &[u8] = match verb.as_str() {
                        "EHLO" => b"250-holding\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n",
                        "HELO" => b"250 holding\r\n",
                        "MAIL" => {
                            message = line.clone();
                            b"250 OK\r\n"
                        }
                        "RCPT" => {
                            message.push('\n');
                            message.push_str(&line);
                            b"250 OK\r\n"
                        }
                        "DATA" => {
                            write.write_all(b"354 go on\r\n").await?;
                            while let Some(data) = lines.next_line().await? {
                                if data == "." {
                                    break;
                                }
                                message.push('\n');
                                message.push_str(&data);
                            }
                            kept.lock()
                                .expect("messages")
                                .push(std::mem::take(&mut message));
                            let _ = opened.wait_for(|open| *open).await;
                            b"250 kept\r\n"
                        }
                        "QUIT" => {
                            write.write_all(b"221 bye\r\n").await?;
                            break;
                        }
                        _ => b"250 OK\r\n",
                    };
                    write.write_all(answer).await?;
                }
                Ok::<_, std::io::Error>(())
            });
        }
    });
    (port, received)
}
