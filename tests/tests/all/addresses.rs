//! The address story of the identity issue, end to end over gRPC against the real stack.

use std::time::Duration;

use mailroom_platform::kafka::Topic;
use mailroom_proto::events::v1::envelope::Payload;
use mailroom_tests::identity_pb as pb;
use mailroom_tests::{authed, spawn_app, wait_for_mail};
use tonic::Code;

#[tokio::test]
async fn a_dismissed_users_address_stays_claimed_until_an_admin_transfers_it() {
    let app = spawn_app().await;
    let org = app.create_org(0).await;
    let mut identity = app.identity.clone();
    let ann = app.create_user(&org, "ann", "").await;
    let address = org.address("ann");

    // Dismiss Ann: she keeps her address.
    let dismissed = identity
        .dismiss_user(authed(
            &org.admin_token,
            pb::DismissUserRequest { id: ann.id.clone() },
        ))
        .await
        .expect("dismiss")
        .into_inner();
    assert_eq!(dismissed.state, pb::UserState::Dismissed as i32);
    assert_eq!(dismissed.login_email, address);

    // Usage shows both of her claims, with her state.
    let usage = identity
        .get_email_address_usage(authed(
            &org.admin_token,
            pb::GetEmailAddressUsageRequest {
                address: address.to_uppercase(),
            },
        ))
        .await
        .expect("usage")
        .into_inner();
    assert_eq!(usage.address, address, "compared case-insensitively");
    let kinds: Vec<i32> = usage.uses.iter().map(|u| u.kind).collect();
    assert!(
        kinds.contains(&(pb::AddressUseKind::Login as i32))
            && kinds.contains(&(pb::AddressUseKind::Contact as i32))
    );
    assert!(usage
        .uses
        .iter()
        .all(|u| u.user_id == ann.id && u.user_state == pb::UserState::Dismissed as i32));

    // A newcomer cannot take it: the refusal names the holder's state and the way out.
    let refused = app
        .try_create_user(&org, &address, "")
        .await
        .expect_err("address is taken");
    assert_eq!(refused.code(), Code::AlreadyExists);
    assert!(
        refused.message().contains("dismissed"),
        "{}",
        refused.message()
    );
    assert!(
        refused.message().contains("TransferEmailAddress"),
        "{}",
        refused.message()
    );

    // Transfer it to Bob as his login, in one audited step.
    let bob = app.create_user(&org, "bob", "").await;
    let transfer = identity
        .transfer_email_address(authed(
            &org.admin_token,
            pb::TransferEmailAddressRequest {
                address: address.clone(),
                from_user_id: ann.id.clone(),
                destination: Some(pb::transfer_email_address_request::Destination::ToUserId(
                    bob.id.clone(),
                )),
                as_kind: pb::AddressUseKind::Login as i32,
            },
        ))
        .await
        .expect("transfer")
        .into_inner();
    let from = transfer.from_user.expect("from user");
    let to = transfer.to_user.expect("to user");
    assert!(
        from.login_email.ends_with("@tombstone.invalid"),
        "{}",
        from.login_email
    );
    assert_eq!(
        from.login_email, from.contact_email,
        "both of Ann's fields get the same tombstone"
    );
    assert_eq!(to.login_email, address);

    // Bob signs in with it; his old login is free again; Ann's is not usable.
    app.login(&address)
        .await
        .expect("bob signs in with the transferred address");
    let usage = identity
        .get_email_address_usage(authed(
            &org.admin_token,
            pb::GetEmailAddressUsageRequest {
                address: address.clone(),
            },
        ))
        .await
        .expect("usage")
        .into_inner();
    assert_eq!(usage.uses.len(), 1);
    assert_eq!(usage.uses[0].user_id, bob.id);
    let old_bob = app.try_create_user(&org, &org.address("bob"), "").await;
    assert!(old_bob.is_err(), "bob's contact address is still his");

    // The audit event is on the topic and decodes.
    let event = app
        .wait_for_event(Topic::IdentityEvents, Duration::from_secs(30), |e| {
            e.org_id == org.id && matches!(e.payload, Some(Payload::EmailAddressTransferred(_)))
        })
        .await
        .expect("EmailAddressTransferred reaches Kafka");
    let Some(Payload::EmailAddressTransferred(t)) = event.payload else {
        unreachable!()
    };
    assert_eq!(t.address, address);
    assert_eq!(t.from_user_id, ann.id);
    assert_eq!(t.to_user_id, bob.id);
    assert_eq!(t.as_kind, "LOGIN");
    assert_eq!(event.r#type, "mailroom.events.v1.EmailAddressTransferred");
    assert_eq!(event.aggregate_id, ann.id);
}

#[tokio::test]
async fn an_active_users_login_cannot_be_transferred_but_a_contact_can_be_released() {
    let app = spawn_app().await;
    let org = app.create_org(0).await;
    let mut identity = app.identity.clone();
    let carl = app.create_user(&org, "carl", "").await;
    let refused = identity
        .transfer_email_address(authed(
            &org.admin_token,
            pb::TransferEmailAddressRequest {
                address: carl.login_email.clone(),
                from_user_id: carl.id.clone(),
                destination: Some(pb::transfer_email_address_request::Destination::Release(
                    true,
                )),
                as_kind: 0,
            },
        ))
        .await
        .expect_err("active login stays");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused.message().contains("dismissed"),
        "{}",
        refused.message()
    );

    // Give Carl a separate contact address, then release it while he is active.
    let contact = org.address("carl.contact");
    identity
        .update_user(authed(
            &org.admin_token,
            pb::UpdateUserRequest {
                user: Some(pb::User {
                    id: carl.id.clone(),
                    contact_email: contact.clone(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["contact_email".into()],
                }),
            },
        ))
        .await
        .expect("set contact");
    identity
        .transfer_email_address(authed(
            &org.admin_token,
            pb::TransferEmailAddressRequest {
                address: contact.clone(),
                from_user_id: carl.id.clone(),
                destination: Some(pb::transfer_email_address_request::Destination::Release(
                    true,
                )),
                as_kind: 0,
            },
        ))
        .await
        .expect("release contact");
    app.try_create_user(&org, &contact, "")
        .await
        .expect("released address is free for someone new");
}

#[tokio::test]
async fn only_admins_see_usage_and_transfer() {
    let app = spawn_app().await;
    let org = app.create_org(0).await;
    let dana = app.create_user(&org, "dana", "").await;
    let token = app
        .login(&dana.login_email)
        .await
        .expect("login")
        .access_token;
    let denied = app
        .identity
        .clone()
        .get_email_address_usage(authed(
            &token,
            pb::GetEmailAddressUsageRequest {
                address: org.admin_email.clone(),
            },
        ))
        .await
        .expect_err("employee is refused");
    assert_eq!(denied.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn malformed_addresses_and_header_injection_are_invalid_argument() {
    let app = spawn_app().await;
    let org = app.create_org(0).await;
    for bad in [
        format!("eve@{}\r\nBcc: everyone@{}", org.domain, org.domain),
        format!("eve@{}\n", org.domain),
        format!("Eve <eve@{}>", org.domain),
        "eve".to_string(),
        "eve@localhost".to_string(),
        format!("{}@{}", "e".repeat(65), org.domain),
    ] {
        let status = app
            .try_create_user(&org, &bad, "")
            .await
            .expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{bad:?}: {status:?}");
        assert!(
            status.message().contains("login_email"),
            "the message names the field: {}",
            status.message()
        );
    }
    // A name with a line break could end up in a mail header: refused too.
    let status = app
        .identity
        .clone()
        .create_user(authed(
            &org.admin_token,
            pb::CreateUserRequest {
                user: Some(pb::User {
                    login_email: org.address("frank"),
                    first_name: "Frank\r\nBcc: x@y.test".into(),
                    ..Default::default()
                }),
                password: String::new(),
            },
        ))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    // IDN domains are accepted and stored in ASCII form.
    let idn = app
        .try_create_user(&org, "ivan@пример.рф", "")
        .await
        .expect("IDN accepted");
    assert_eq!(idn.login_email, "ivan@xn--e1afmkfd.xn--p1ai");
}

#[tokio::test]
async fn a_login_changes_only_with_the_code_mailed_to_the_new_address() {
    let app = spawn_app().await;
    let org = app.create_org(0).await;
    let gina = app.create_user(&org, "gina", "").await;
    let token = app
        .login(&gina.login_email)
        .await
        .expect("login")
        .access_token;
    let mut identity = app.identity.clone();
    let new_login = org.address("gina.new");

    // An admin cannot change someone's login.
    let denied = identity
        .update_user(authed(
            &org.admin_token,
            pb::UpdateUserRequest {
                user: Some(pb::User {
                    id: gina.id.clone(),
                    login_email: new_login.clone(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["login_email".into()],
                }),
            },
        ))
        .await
        .expect_err("admin cannot change a login");
    assert_eq!(denied.code(), Code::PermissionDenied);

    identity
        .request_login_email_change(authed(
            &token,
            pb::RequestLoginEmailChangeRequest {
                new_login_email: new_login.clone(),
            },
        ))
        .await
        .expect("request change");
    let mail = wait_for_mail(&app, &new_login, Duration::from_secs(15)).await;
    // The code is on its own line of the body; headers (Message-ID, peer port) hold digits too.
    let code = mail
        .lines()
        .find_map(|line| line.trim().strip_prefix("Your confirmation code: "))
        .map(str::trim)
        .filter(|c| c.len() == 6 && c.bytes().all(|b| b.is_ascii_digit()))
        .expect("the mail carries a 6-digit confirmation code")
        .to_owned();

    let wrong = if code == "000000" { "111111" } else { "000000" };
    let status = identity
        .confirm_login_email_change(authed(
            &token,
            pb::ConfirmLoginEmailChangeRequest { code: wrong.into() },
        ))
        .await
        .expect_err("wrong code");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("attempt"), "{}", status.message());
    assert!(app.login(&new_login).await.is_err(), "not changed yet");

    let user = identity
        .confirm_login_email_change(authed(&token, pb::ConfirmLoginEmailChangeRequest { code }))
        .await
        .expect("right code")
        .into_inner();
    assert_eq!(user.login_email, new_login);
    assert_eq!(
        user.contact_email, gina.login_email,
        "the contact address stays"
    );
    app.login(&new_login)
        .await
        .expect("signs in with the new login");
    assert_eq!(
        app.login(&gina.login_email).await.unwrap_err().code(),
        Code::Unauthenticated
    );
}

/// GetEmailAddressUsage reads the caller's standing and the address's holders in one
/// statement: an admin of another organisation learns nothing of this one's addresses, and a
/// caller whose row no longer says active admin is refused, whatever the token says.
#[tokio::test]
async fn address_usage_stays_in_the_callers_org_and_follows_the_callers_row() {
    async fn usage(
        app: &mailroom_tests::TestApp,
        token: &str,
        address: &str,
    ) -> Result<pb::EmailAddressUsage, tonic::Status> {
        app.identity
            .clone()
            .get_email_address_usage(authed(
                token,
                pb::GetEmailAddressUsageRequest {
                    address: address.into(),
                },
            ))
            .await
            .map(|r| r.into_inner())
    }
    let app = spawn_app().await;
    let org = app.create_org(0).await;
    let other = app.create_org(0).await;
    let dana = app.create_user(&org, "dana", "").await;

    let seen = usage(&app, &org.admin_token, &dana.login_email)
        .await
        .expect("the org's admin sees its address");
    assert!(
        seen.uses
            .iter()
            .any(|u| u.kind == pb::AddressUseKind::Login as i32 && u.user_id == dana.id),
        "{seen:?}"
    );
    assert!(seen.uses.iter().all(|u| u.user_id == dana.id), "{seen:?}");

    let foreign = usage(&app, &other.admin_token, &dana.login_email)
        .await
        .expect("another org's admin may ask");
    assert!(
        foreign.uses.is_empty(),
        "another organisation's address is not shown: {foreign:?}"
    );
    let own = usage(&app, &other.admin_token, &other.admin_email)
        .await
        .expect("own address");
    assert!(!own.uses.is_empty(), "{own:?}");

    // The row decides, not the token's `admin` claim: no longer admin, then dismissed.
    let admin_id: uuid::Uuid = org.admin_id.parse().expect("admin id");
    sqlx::query("UPDATE users SET is_admin = false WHERE id = $1")
        .bind(admin_id)
        .execute(&app.pool)
        .await
        .expect("demote in the database");
    let refused = usage(&app, &org.admin_token, &dana.login_email)
        .await
        .expect_err("no longer admin");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let other_admin: uuid::Uuid = other.admin_id.parse().expect("admin id");
    sqlx::query("UPDATE users SET state = 'dismissed' WHERE id = $1")
        .bind(other_admin)
        .execute(&app.pool)
        .await
        .expect("dismiss in the database");
    let refused = usage(&app, &other.admin_token, &other.admin_email)
        .await
        .expect_err("dismissed");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
}
