//! Registration links and direct registration, and who may invite, register and manage links.

use super::*;

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
    // Inviting is a role's: "Inviters" (what everyone has, and inviting) for the granted one.
    {
        use mailroom_proto::access::v1 as apb;
        let inviters = app
            .access()
            .create_role(authed(
                &org.admin_token,
                apb::CreateRoleRequest {
                    role: Some(apb::Role {
                        display_name: "Inviters".into(),
                        permissions: Some(apb::RolePermissions {
                            view_mailbox_list: apb::Scope::Own as i32,
                            connect_mailboxes: apb::Scope::Own as i32,
                            modify_mailboxes: apb::Scope::Own as i32,
                            grant_read_access: apb::Scope::Own as i32,
                            invite: true,
                            manage_permissions: false,
                        }),
                        ..Default::default()
                    }),
                },
            ))
            .await
            .expect("create the Inviters role")
            .into_inner();
        app.access()
            .assign_role(authed(
                &org.admin_token,
                apb::AssignRoleRequest {
                    role_id: inviters.id,
                    subject: access::user(&granted.id),
                },
            ))
            .await
            .expect("assign Inviters to the granted employee");
    }
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
        refused.message().contains("org.invite")
            && refused
                .message()
                .contains("ask an admin for a role that may invite people"),
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
