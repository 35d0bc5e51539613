//! A hostile caller: too many addresses, oversized and disguised input, junk tokens.

use super::*;

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
    // and an invisible character is refused in place. (The inviter's own mail client: Mailroom's
    // relay is not assumed to take a non-ASCII local part, see found_by_use.)
    let answer = invite(
        &app,
        &org.admin_token,
        &format!(
            "ann@{} \u{430}nn@{} a\u{200B}nn@{}",
            org.domain, org.domain, org.domain
        ),
        ipb::DeliveryMethod::OwnMailClient,
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
