//! Sync requests, transfers and dismissal reaching the topics, access control and the list.

use super::*;

#[tokio::test]
async fn sync_now_transfer_and_dismissal_reach_the_topics_access_control_and_the_list() {
    let app = spawn_app_with_mailboxes().await;
    let org = app.create_org(0).await;
    let heir = app.create_user(&org, "heir", "").await;
    let leaver = app.create_user(&org, "leaver", "").await;
    let leaver_token = sign_in(&app, &leaver).await;
    let mailbox = connect_when_known(&app, &leaver_token, &bulk(1), "").await;

    // Ownership reaches access control from the registry's events…
    app.eventually(&leaver.id, "mailbox.read_mail", &mailbox.id, true)
        .await;
    // …and identity's "where is this address used" names the mailbox and its owner.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let usage = app
            .identity
            .clone()
            .get_email_address_usage(authed(
                &org.admin_token,
                pb::GetEmailAddressUsageRequest { address: bulk(1) },
            ))
            .await
            .expect("address usage")
            .into_inner();
        if let Some(used) = usage
            .uses
            .iter()
            .find(|u| u.kind == pb::AddressUseKind::Mailbox as i32)
        {
            assert_eq!(used.user_id, leaver.id);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "identity never listed the mailbox address: {usage:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let queued = app
        .mailboxes()
        .sync_mailbox_now(authed(
            &leaver_token,
            mpb::SyncMailboxNowRequest {
                id: mailbox.id.clone(),
            },
        ))
        .await
        .expect("the owner syncs now")
        .into_inner();
    assert!(queued.queued_time.is_some());
    let request = app.wait_for_event(Topic::SyncRequests, Duration::from_secs(20), |e| {
        matches!(&e.payload, Some(ev::envelope::Payload::SyncRequested(r)) if r.mailbox_id == mailbox.id && r.reason == "sync_now")
    })
    .await
    .expect("a sync request keyed by the mailbox");
    assert_eq!(request.aggregate_id, mailbox.id);
    let Some(ev::envelope::Payload::SyncRequested(r)) = request.payload else {
        unreachable!()
    };
    assert_eq!(r.priority, ev::SyncPriority::High as i32);

    // Dismissed: the mailbox stays and shows the owner as dismissed.
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
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let listed = list(
            &app,
            &org.admin_token,
            mpb::ListMailboxesRequest {
                filter: "owner_dismissed = true".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        if listed.mailboxes.len() == 1 {
            assert!(listed.mailboxes[0].owner_dismissed);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the dismissal never reached the list"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Transferred to the heir: the heir owns it here and in access control.
    let err = app
        .mailboxes()
        .transfer_mailbox(authed(
            &org.admin_token,
            mpb::TransferMailboxRequest {
                id: mailbox.id.clone(),
                new_owner_user_id: leaver.id.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
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
        .expect("transfer")
        .into_inner();
    assert_eq!(moved.owner_user_id, heir.id);
    assert!(!moved.owner_dismissed);
    app.eventually(&heir.id, "mailbox.read_mail", &mailbox.id, true)
        .await;
    app.wait_for_event(Topic::MailboxesEvents, Duration::from_secs(20), |e| {
        matches!(&e.payload, Some(ev::envelope::Payload::MailboxTransferred(t)) if t.previous_owner_user_id == leaver.id)
    })
    .await
    .expect("a MailboxTransferred event");

    // Disconnected: gone from the list and from access control.
    app.mailboxes()
        .disconnect_mailbox(authed(
            &org.admin_token,
            mpb::DisconnectMailboxRequest {
                id: mailbox.id.clone(),
            },
        ))
        .await
        .expect("disconnect");
    assert!(emails_seen(&app, &org.admin_token).await.is_empty());
    app.eventually(&heir.id, "mailbox.read_mail", &mailbox.id, false)
        .await;
}
