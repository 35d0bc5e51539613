//! Grants, who may write and ask what, explanations, lookups, roles in place of the old settings
//! and the relationship list over gRPC.

use super::*;

#[tokio::test]
async fn nobody_reads_mail_without_a_grant_and_a_grant_is_seen_at_its_revision() {
    let app = spawn_app_with_access().await;
    let o = org(&app).await;
    app.eventually(&o.ceo.id, "mailbox.view", &o.mailbox, true)
        .await;
    let admin = &o.org.admin_id;
    assert!(app.can(admin, "mailbox.view", &o.mailbox).await);
    assert!(app.can(admin, "mailbox.modify", &o.mailbox).await);
    for who in [admin.as_str(), o.ceo.id.as_str(), o.east_head.id.as_str()] {
        assert!(
            !app.can(who, "mailbox.read_mail", &o.mailbox).await,
            "{who} reads without a grant"
        );
    }
    assert!(app.can(&o.owner.id, "mailbox.read_mail", &o.mailbox).await);

    // The admin grants the CEO read access; the check that passes the revision sees it.
    let written = app
        .access()
        .write_relationships(authed(
            &o.org.admin_token,
            apb::WriteRelationshipsRequest {
                relationships: vec![on_mailbox(&o.mailbox, "reader", &o.ceo.id)],
            },
        ))
        .await
        .expect("grant")
        .into_inner()
        .written_at
        .expect("revision");
    let service = app.service_token().await;
    let answer = app
        .check(
            &service,
            request(
                &o.ceo.id,
                "mailbox.read_mail",
                object("mailbox", &o.mailbox),
                Some(&written),
            ),
        )
        .await
        .expect("check");
    assert!(answer.allowed);
    assert!(
        !app.can(admin, "mailbox.read_mail", &o.mailbox).await,
        "the grant is the CEO's only"
    );

    // "Access by": owner and the reader, not the admin or the supervisors.
    let who = app
        .access()
        .lookup_subjects(authed(
            &service,
            apb::LookupSubjectsRequest {
                resource: object("mailbox", &o.mailbox),
                permission: "mailbox.read_mail".into(),
                subject_type: "user".into(),
                at_least_as_fresh_as: Some(written.clone()),
                page_size: 0,
                page_token: String::new(),
            },
        ))
        .await
        .expect("lookup subjects")
        .into_inner();
    let mut expected = vec![o.owner.id.clone(), o.ceo.id.clone()];
    expected.sort();
    assert_eq!(who.subject_ids, expected);

    // Revoked: gone at the delete's revision.
    let deleted = app
        .access()
        .delete_relationships(authed(
            &o.org.admin_token,
            apb::DeleteRelationshipsRequest {
                relationships: vec![on_mailbox(&o.mailbox, "reader", &o.ceo.id)],
            },
        ))
        .await
        .expect("revoke")
        .into_inner()
        .deleted_at
        .expect("revision");
    let answer = app
        .check(
            &service,
            request(
                &o.ceo.id,
                "mailbox.read_mail",
                object("mailbox", &o.mailbox),
                Some(&deleted),
            ),
        )
        .await
        .expect("check");
    assert!(!answer.allowed);
}

#[tokio::test]
async fn who_may_write_and_ask_what() {
    let app = spawn_app_with_access().await;
    let o = org(&app).await;
    app.eventually(&o.ceo.id, "mailbox.view", &o.mailbox, true)
        .await;
    let peer = token(&app, &o, "peer").await;
    let owner = token(&app, &o, "owner").await;
    let ceo = token(&app, &o, "ceo").await;
    let write = |token: String, rel: apb::Relationship| {
        let mut access = app.access();
        async move {
            access
                .write_relationships(authed(
                    &token,
                    apb::WriteRelationshipsRequest {
                        relationships: vec![rel],
                    },
                ))
                .await
        }
    };

    // A peer cannot grant themselves read access; a supervisor cannot either.
    let err = write(peer.clone(), on_mailbox(&o.mailbox, "reader", &o.peer.id))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let err = write(ceo.clone(), on_mailbox(&o.mailbox, "reader", &o.ceo.id))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    // The owner shares read access to their own mailbox.
    write(owner.clone(), on_mailbox(&o.mailbox, "reader", &o.peer.id))
        .await
        .expect("owner shares");
    // Users never set ownership; identity's relations are identity's.
    let err = write(
        o.org.admin_token.clone(),
        on_mailbox(&o.mailbox, "owner", &o.peer.id),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let head = apb::Relationship {
        resource: object("department", &o.east.id),
        relation: "head".into(),
        subject: user(&o.peer.id),
    };
    let err = write(o.org.admin_token.clone(), head).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("identity"), "{}", err.message());
    // A relation access does not know is refused with the ones it does.
    let err = write(
        o.org.admin_token.clone(),
        on_mailbox(&o.mailbox, "writer", &o.peer.id),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("mailbox#reader@user"),
        "{}",
        err.message()
    );

    // The legacy delegations are roles now.
    let err = write(
        o.org.admin_token.clone(),
        apb::Relationship {
            resource: object("org", &o.org.id),
            relation: "mailbox_manager".into(),
            subject: user(&o.peer.id),
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("AssignRole"), "{}", err.message());

    // The organisation stops owners sharing: now only admins grant.
    only_admins_grant_read_access(&app, &o).await;
    let err = write(owner.clone(), on_mailbox(&o.mailbox, "reader", &o.ceo.id))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    // The owner may still give up a grant of their own; the peer gives up the one shared.
    app.access()
        .delete_relationships(authed(
            &peer,
            apb::DeleteRelationshipsRequest {
                relationships: vec![on_mailbox(&o.mailbox, "reader", &o.peer.id)],
            },
        ))
        .await
        .expect("a reader gives up their own grant");
    let err = write(owner.clone(), on_mailbox(&o.mailbox, "reader", &o.peer.id))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    // Roles are changed by admins and those whose role configures access.
    let mut manager = builtin_role(&app, &peer, apb::RoleKind::Manager).await;
    manager.hidden = true;
    let err = update_role(&app, &peer, manager, &["hidden"])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    // The peer's grant is gone; the admin shares it again for what follows.
    app.access()
        .write_relationships(authed(
            &o.org.admin_token,
            apb::WriteRelationshipsRequest {
                relationships: vec![on_mailbox(&o.mailbox, "reader", &o.peer.id)],
            },
        ))
        .await
        .expect("the admin grants");

    // A user asks about themselves; about others only as an admin.
    let err = app
        .check(
            &peer,
            request(
                &o.ceo.id,
                "mailbox.view",
                object("mailbox", &o.mailbox),
                None,
            ),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let mine = app
        .check(
            &peer,
            request(
                &o.peer.id,
                "mailbox.read_mail",
                object("mailbox", &o.mailbox),
                None,
            ),
        )
        .await
        .expect("own check");
    assert!(mine.allowed, "the owner shared read access with the peer");
    assert!(
        app.check(
            &o.org.admin_token,
            request(
                &o.ceo.id,
                "mailbox.view",
                object("mailbox", &o.mailbox),
                None
            )
        )
        .await
        .expect("admin asks")
        .allowed
    );

    // Another organisation's admin sees none of it.
    let stranger = app.create_org(0).await;
    let err = app
        .check(
            &stranger.admin_token,
            request(
                &o.ceo.id,
                "mailbox.view",
                object("mailbox", &o.mailbox),
                None,
            ),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = app
        .access()
        .write_relationships(authed(
            &stranger.admin_token,
            apb::WriteRelationshipsRequest {
                relationships: vec![on_mailbox(&o.mailbox, "reader", &stranger.admin_id)],
            },
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(err.code(), Code::NotFound | Code::FailedPrecondition),
        "{err:?}"
    );
}

#[tokio::test]
async fn explanations_lookups_and_roles_over_grpc() {
    let app = spawn_app_with_access().await;
    let o = org(&app).await;
    app.eventually(&o.ceo.id, "mailbox.view", &o.mailbox, true)
        .await;
    let service = app.service_token().await;

    let mut why = request(
        &o.ceo.id,
        "mailbox.view",
        object("mailbox", &o.mailbox),
        None,
    );
    why.explain = true;
    let answer = app.check(&service, why.clone()).await.expect("explain");
    assert!(answer.allowed);
    let granted_by = answer.granted_by.clone().expect("a role granted it");
    assert_eq!(granted_by.role_display_name, "Supervisor");
    assert_eq!(granted_by.scope, apb::Scope::Subordinates as i32);
    let relations: Vec<&str> = answer.path.iter().map(|r| r.relation.as_str()).collect();
    assert_eq!(relations.first(), Some(&"owner"), "{:?}", answer.path);
    for relation in ["member", "parent", "head"] {
        assert!(relations.contains(&relation), "{:?}", answer.path);
    }
    why.permission = "mailbox.read_mail".into();
    let answer = app.check(&service, why).await.expect("explain a denial");
    assert!(!answer.allowed);
    assert!(answer.reason.contains("reader grant"), "{}", answer.reason);

    // Five more mailboxes for the peer; the CEO's list pages through all six.
    let mut all = vec![o.mailbox.clone()];
    let mut last = None;
    for _ in 0..5 {
        let m = uuid::Uuid::new_v4().to_string();
        last = Some(
            app.write_when_known(&service, vec![on_mailbox(&m, "owner", &o.peer.id)])
                .await,
        );
        all.push(m);
    }
    all.sort();
    let mut seen = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = app
            .access()
            .lookup_resources(authed(
                &service,
                apb::LookupResourcesRequest {
                    subject: user(&o.ceo.id),
                    permission: "mailbox.view".into(),
                    resource_type: "mailbox".into(),
                    page_size: 4,
                    page_token: page_token.clone(),
                    at_least_as_fresh_as: last.clone(),
                },
            ))
            .await
            .expect("lookup resources")
            .into_inner();
        assert!(page.resource_ids.len() <= 4);
        seen.extend(page.resource_ids);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(seen, all, "every page in order, nothing twice");

    // Supervisors lose the list when the organisation narrows their role.
    let mut supervisor = builtin_role(&app, &o.org.admin_token, apb::RoleKind::Supervisor).await;
    if let Some(p) = supervisor.permissions.as_mut() {
        p.view_mailbox_list = apb::Scope::Own as i32;
    }
    let updated = update_role(
        &app,
        &o.org.admin_token,
        supervisor,
        &["permissions.view_mailbox_list"],
    )
    .await
    .expect("narrow the list");
    let permissions = updated.permissions.expect("permissions");
    assert_eq!(permissions.view_mailbox_list, apb::Scope::Own as i32);
    assert_eq!(
        permissions.modify_mailboxes,
        apb::Scope::Own as i32,
        "fields outside the mask keep their value"
    );
    assert!(!app.can(&o.ceo.id, "mailbox.view", &o.mailbox).await);
    assert!(app.can(&o.org.admin_id, "mailbox.view", &o.mailbox).await);

    // A role that manages every mailbox gives view and modify, never mail.
    let managers = create_role(
        &app,
        &o.org.admin_token,
        "Mailbox managers",
        scopes(
            apb::Scope::All,
            apb::Scope::All,
            apb::Scope::All,
            apb::Scope::Own,
        ),
    )
    .await
    .expect("create a role");
    assign(
        &app,
        &o.org.admin_token,
        &managers.id,
        subject("user", &o.ceo.id, ""),
    )
    .await
    .expect("assign it");
    assert!(app.can(&o.ceo.id, "mailbox.modify", &o.mailbox).await);
    assert!(!app.can(&o.ceo.id, "mailbox.read_mail", &o.mailbox).await);
    let org_ref = object("org", &o.org.id);

    // identity's "everyone may invite" flag (on by default) is the invite audience.
    let invite = |id: &str| request(id, "org.invite", org_ref.clone(), None);
    assert!(
        app.check(&service, invite(&o.peer.id))
            .await
            .expect("check")
            .allowed
    );
    app.identity
        .clone()
        .update_organization(authed(
            &o.org.admin_token,
            pb::UpdateOrganizationRequest {
                organization: Some(pb::Organization {
                    id: o.org.id.clone(),
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
        .expect("stop everyone inviting");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while app
        .check(&service, invite(&o.peer.id))
        .await
        .expect("check")
        .allowed
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the invite flag did not reach access"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        app.check(&service, invite(&o.org.admin_id))
            .await
            .expect("check")
            .allowed
    );
}

#[tokio::test]
async fn an_admin_lists_relationships_page_by_page() {
    let app = spawn_app_with_access().await;
    let o = org(&app).await;
    app.eventually(&o.ceo.id, "mailbox.view", &o.mailbox, true)
        .await;
    let list = |token: String, filter: apb::Relationship, page_size: i32, page_token: String| {
        let mut access = app.access();
        async move {
            access
                .list_relationships(authed(
                    &token,
                    apb::ListRelationshipsRequest {
                        filter: Some(filter),
                        page_size,
                        page_token,
                        org_id: String::new(),
                    },
                ))
                .await
                .map(|r| r.into_inner())
        }
    };
    let admin = o.org.admin_token.clone();
    // identity's events reach access in no fixed order across users and departments: wait
    // until every relationship the fixture makes there is listed, so the list holds still
    // while it is paged.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let everything = loop {
        let everything = list(admin.clone(), Default::default(), 1_000, String::new())
            .await
            .expect("list");
        let has = |relation: &str, subject: &str| {
            everything
                .relationships
                .iter()
                .any(|r| r.relation == relation && r.subject == user(subject))
        };
        let people = [&o.ceo, &o.east_head, &o.other_head, &o.owner, &o.peer];
        // The organisation's own event (everyone may invite, by default) included.
        let everyone_invites = everything.relationships.iter().any(|r| {
            r.relation == "inviter" && r.subject.as_ref().is_some_and(|s| s.relation == "member")
        });
        let settled = everyone_invites
            && has("admin", &o.org.admin_id)
            && [&o.ceo, &o.east_head, &o.other_head]
                .iter()
                .all(|u| has("head", &u.id))
            && people.iter().all(|u| {
                everything
                    .relationships
                    .iter()
                    .any(|r| r.relation == "member" && r.resource == object("user", &u.id))
            })
            && everything
                .relationships
                .iter()
                .filter(|r| r.relation == "parent")
                .count()
                == 2;
        if settled {
            break everything;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "identity's changes did not reach access"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(everything.next_page_token.is_empty());
    let key = |r: &apb::Relationship| format!("{r:?}");
    // identity lets everyone invite by default: listed as a relationship. The default roles'
    // assignments are listed too.
    let has_assignment = |relation: &str| {
        everything.relationships.iter().any(|r| {
            r.relation == "assignee"
                && r.resource.as_ref().is_some_and(|o| o.r#type == "role")
                && r.subject.as_ref().is_some_and(|s| s.relation == relation)
        })
    };
    assert!(has_assignment("head"), "{everything:?}");
    assert!(has_assignment("everyone_else"), "{everything:?}");
    assert!(everything
        .relationships
        .contains(&on_mailbox(&o.mailbox, "owner", &o.owner.id)));
    assert!(everything.relationships.iter().any(|r| r.relation == "head"
        && r.subject == user(&o.east_head.id)
        && r.resource == object("department", &o.east.id)));

    // Pages of two: the same relationships, in order.
    let mut paged = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = list(admin.clone(), Default::default(), 2, page_token)
            .await
            .expect("page");
        assert!(page.relationships.len() <= 2, "{page:?}");
        paged.extend(page.relationships);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(
        paged.iter().map(key).collect::<Vec<_>>(),
        everything.relationships.iter().map(key).collect::<Vec<_>>()
    );

    // A filter narrows it; only admins list.
    let owners = list(
        admin.clone(),
        apb::Relationship {
            relation: "owner".into(),
            ..Default::default()
        },
        10,
        String::new(),
    )
    .await
    .expect("owners");
    assert_eq!(
        owners.relationships,
        vec![on_mailbox(&o.mailbox, "owner", &o.owner.id)]
    );
    let err = list(
        token(&app, &o, "peer").await,
        Default::default(),
        10,
        String::new(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
}
