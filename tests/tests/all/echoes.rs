//! Caller text echoed back is bounded and escaped (issue 20, item 11): whatever a caller
//! sends — 4,000 bytes with an ESC, a NUL, a newline — no service answers with it whole or raw.

use mailroom_proto::invitations::v1 as ipb;
use mailroom_tests::{access_pb, authed, identity_pb, mailboxes_pb, spawn_app_with, AppOptions};

/// An answer a person or a terminal may be shown: short, and no control character but space.
fn assert_bounded(what: &str, status: &tonic::Status) {
    let message = status.message();
    assert!(
        message.chars().count() <= 600,
        "{what}: {} characters: {message}",
        message.chars().count()
    );
    assert!(
        !message.chars().any(|c| c.is_control()),
        "{what}: a raw control character in {message:?}"
    );
    assert!(
        !message.contains(&"x".repeat(100)),
        "{what}: the caller's text came back whole: {message}"
    );
}

#[tokio::test]
async fn no_service_echoes_a_long_or_raw_caller_text() {
    let app = spawn_app_with(AppOptions {
        with_sync: true,
        with_invitations: true,
        ..Default::default()
    })
    .await;
    let org = app.create_org(0).await;
    let hostile = format!("\u{1b}[2J{}\r\nInjected: yes", "x".repeat(4_000));
    let token = &org.admin_token;

    let users = app
        .identity
        .clone()
        .list_users(authed(
            token,
            identity_pb::ListUsersRequest {
                filter: format!("first_name = \"{hostile}\" AND {hostile}"),
                ..Default::default()
            },
        ))
        .await
        .expect_err("a hostile filter is refused");
    assert_bounded("ListUsers filter", &users);
    let users = app
        .identity
        .clone()
        .list_users(authed(
            token,
            identity_pb::ListUsersRequest {
                order_by: hostile.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect_err("a hostile order_by is refused");
    assert_bounded("ListUsers order_by", &users);

    let check = app
        .access()
        .check(authed(
            token,
            access_pb::CheckRequest {
                subject: mailroom_tests::access::user(&org.admin_id),
                permission: hostile.clone(),
                resource: mailroom_tests::access::object("mailbox", &hostile),
                ..Default::default()
            },
        ))
        .await
        .expect_err("an unknown permission is refused");
    assert_bounded("Check permission", &check);

    for (what, request) in [
        (
            "ListMailboxes filter",
            mailboxes_pb::ListMailboxesRequest {
                filter: format!("email = \"{hostile}\""),
                ..Default::default()
            },
        ),
        (
            "ListMailboxes order_by",
            mailboxes_pb::ListMailboxesRequest {
                order_by: hostile.clone(),
                ..Default::default()
            },
        ),
        (
            "ListMailboxes days_since_sync",
            mailboxes_pb::ListMailboxesRequest {
                filter: format!("days_since_sync > {hostile}"),
                ..Default::default()
            },
        ),
    ] {
        let status = app
            .mailboxes()
            .list_mailboxes(authed(token, request))
            .await
            .expect_err(what);
        assert_bounded(what, &status);
    }

    let invitations = app
        .invitations()
        .list_invitations(authed(
            token,
            ipb::ListInvitationsRequest {
                filter: format!("email = \"{hostile}\" OR {hostile}"),
                ..Default::default()
            },
        ))
        .await
        .expect_err("a hostile filter is refused");
    assert_bounded("ListInvitations filter", &invitations);

    let messages = app
        .sync()
        .list_messages(authed(
            token,
            mailroom_tests::sync_pb::ListMessagesRequest {
                mailbox_id: hostile.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect_err("a hostile mailbox id is refused");
    assert_bounded("ListMessages mailbox_id", &messages);

    let user = app
        .identity
        .clone()
        .get_user(authed(
            token,
            identity_pb::GetUserRequest {
                id: hostile.clone(),
            },
        ))
        .await
        .expect_err("a hostile user id is refused");
    assert_bounded("GetUser id", &user);
}
