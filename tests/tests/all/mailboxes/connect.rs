//! Connecting one mailbox and many at once, and what each failure says.

use super::*;

#[tokio::test]
async fn connect_logs_in_to_imap_and_smtp_and_each_failure_says_what_went_wrong() {
    let app = spawn_app_with_mailboxes().await;
    let org = app.create_org(0).await;

    let mailbox = connect_when_known(&app, &org.admin_token, &bulk(1), "").await;
    assert_eq!(mailbox.email, bulk(1));
    assert_eq!(
        mailbox.owner_user_id, org.admin_id,
        "the caller owns it by default"
    );
    assert_eq!(mailbox.sync_state, mpb::SyncState::Pending as i32);
    assert_eq!(
        mailbox.imap.as_ref().unwrap().username,
        bulk(1),
        "username defaults to the address"
    );

    // Wrong password: both servers refuse it, and the message says so for each.
    let err = app
        .mailboxes()
        .connect_mailbox(authed(
            &org.admin_token,
            connect_request(&bulk(2), "", "wrong-password"),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("IMAP login failed"),
        "{}",
        err.message()
    );
    assert!(
        err.message().contains("SMTP login failed"),
        "{}",
        err.message()
    );
    assert!(err.message().contains("password"), "{}", err.message());

    // Right password, SMTP port closed: only SMTP is named, as unreachable, and fast.
    let mut req = connect_request(&bulk(3), "", BULK_PASSWORD);
    req.mailbox.as_mut().unwrap().smtp.as_mut().unwrap().port = 9;
    let started = Instant::now();
    let err = app
        .mailboxes()
        .connect_mailbox(authed(&org.admin_token, req))
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        err.message().starts_with("SMTP server unreachable"),
        "{}",
        err.message()
    );
    assert!(!err.message().contains("IMAP"), "{}", err.message());

    // TLS asked of a plain-text port.
    let mut req = connect_request(&bulk(3), "", BULK_PASSWORD);
    req.mailbox
        .as_mut()
        .unwrap()
        .imap
        .as_mut()
        .unwrap()
        .security = mpb::Security::Tls as i32;
    let err = app
        .mailboxes()
        .connect_mailbox(authed(&org.admin_token, req))
        .await
        .unwrap_err();
    assert!(
        err.message().contains("IMAP TLS failed"),
        "{}",
        err.message()
    );

    // A server that accepts the connection and never speaks: a timeout, in the configured 4 s.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let mut req = connect_request(&bulk(3), "", BULK_PASSWORD);
    req.mailbox.as_mut().unwrap().imap.as_mut().unwrap().port = i32::from(silent_port);
    let started = Instant::now();
    let err = app
        .mailboxes()
        .connect_mailbox(authed(&org.admin_token, req))
        .await
        .unwrap_err();
    assert!(
        err.message().starts_with("IMAP server did not answer"),
        "{}",
        err.message()
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?}",
        started.elapsed()
    );

    // validate_only checks for real and saves nothing.
    let mut req = connect_request(&bulk(3), "", BULK_PASSWORD);
    req.validate_only = true;
    let validated = app
        .mailboxes()
        .connect_mailbox(authed(&org.admin_token, req))
        .await
        .expect("valid settings")
        .into_inner();
    assert!(validated.id.is_empty());
    assert_eq!(emails_seen(&app, &org.admin_token).await, vec![bulk(1)]);

    // The same address twice in one organisation.
    let err = connect(&app, &org.admin_token, &bulk(1), "")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");

    // A header-injecting sender name is refused before any login.
    let mut req = connect_request(&bulk(4), "", BULK_PASSWORD);
    req.mailbox.as_mut().unwrap().sender_name = "Sales\r\nBcc: x@evil.test".into();
    let err = app
        .mailboxes()
        .connect_mailbox(authed(&org.admin_token, req))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("sender_name"), "{}", err.message());
}

#[tokio::test]
async fn bulk_connect_of_twenty_with_two_bad_passwords_connects_eighteen_in_one_call() {
    let app = spawn_app_with_mailboxes().await;
    let org = app.create_org(0).await;
    // The admin must be known to the registry before a bulk call (no retry inside it).
    connect_when_known(&app, &org.admin_token, &bulk(24), "").await;

    let mailboxes: Vec<mpb::MailboxCredentials> = (1..=20)
        .map(|n| mpb::MailboxCredentials {
            email: bulk(n),
            password: if n == 7 || n == 13 {
                "nope".into()
            } else {
                BULK_PASSWORD.into()
            },
            name: format!("Box {n}"),
            ..Default::default()
        })
        .collect();
    let started = Instant::now();
    let results = app
        .mailboxes()
        .connect_mailboxes(authed(
            &org.admin_token,
            mpb::ConnectMailboxesRequest {
                imap: Some(imap()),
                smtp: Some(smtp()),
                mailboxes,
                validate_only: false,
            },
        ))
        .await
        .expect("one call")
        .into_inner()
        .results;
    let took = started.elapsed();
    until_listable(&app, &org.admin_token).await;
    assert_eq!(results.len(), 20);
    let failed: Vec<&mpb::ConnectResult> = results.iter().filter(|r| r.mailbox.is_none()).collect();
    assert_eq!(failed.len(), 2, "{results:?}");
    for (r, n) in failed.iter().zip([7, 13]) {
        assert_eq!(r.email, bulk(n), "results keep the request's order");
        assert_eq!(
            r.failure,
            mpb::ConnectFailure::WrongPassword as i32,
            "{r:?}"
        );
        assert_eq!(r.failed_step, mpb::ConnectStep::Imap as i32);
        assert!(
            r.error.contains("refused the username or password"),
            "{}",
            r.error
        );
    }
    assert_eq!(results.iter().filter(|r| r.mailbox.is_some()).count(), 18);
    // Dovecot delays each refusal by about 2 s; run one after another, two refusals and 18
    // logins of each protocol would take far longer than checked side by side.
    assert!(took < Duration::from_secs(15), "took {took:?}");
    assert_eq!(emails_seen(&app, &org.admin_token).await.len(), 19);

    // Mixed domains are refused per item, and a repeated address too.
    let results = app
        .mailboxes()
        .connect_mailboxes(authed(
            &org.admin_token,
            mpb::ConnectMailboxesRequest {
                imap: Some(imap()),
                smtp: Some(smtp()),
                mailboxes: vec![
                    mpb::MailboxCredentials {
                        email: bulk(21),
                        password: BULK_PASSWORD.into(),
                        ..Default::default()
                    },
                    mpb::MailboxCredentials {
                        email: "ann@elsewhere.test".into(),
                        password: "x".into(),
                        ..Default::default()
                    },
                    mpb::MailboxCredentials {
                        email: bulk(21),
                        password: BULK_PASSWORD.into(),
                        ..Default::default()
                    },
                ],
                validate_only: false,
            },
        ))
        .await
        .expect("one call")
        .into_inner()
        .results;
    assert!(results[0].mailbox.is_some(), "{:?}", results[0]);
    assert!(
        results[1].error.contains("share one domain"),
        "{:?}",
        results[1]
    );
    assert!(results[2].error.contains("twice"), "{:?}", results[2]);
}
