//! Seats and an invitation's life: the seat race, expiry, addresses still claimed, invitees
//! dismissed in identity.

use super::*;

async fn seats(app: &TestApp, org: &TestOrg) -> ipb::SeatUsage {
    app.invitations()
        .get_seat_usage(authed(&org.admin_token, ipb::GetSeatUsageRequest {}))
        .await
        .expect("seat usage")
        .into_inner()
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
