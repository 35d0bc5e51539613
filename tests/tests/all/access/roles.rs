//! The roles API over gRPC, as the people using it: create, read, update with a field mask and
//! an etag, clone, delete; the built-in roles' protections; a configurer who is not an admin
//! passing on no more than they hold; assignments listed by role and by person; the events on
//! the topic; a write's revision honoured by Check on another replica; explanations naming the
//! role; the settings RPCs that roles replaced; and what review asked for: taking a role away
//! leaves nobody with more than the configurer holds, a configurer asks only about people
//! within their reach, hidden roles are the admins', names hide no invisible characters, and
//! an update mask's repeated paths count once.

use super::*;
use mailroom_proto::events::v1::envelope::Payload;
use mailroom_tests::access_pb::Scope;
use tokio_util::sync::CancellationToken;

/// Everything in `token`'s organisation's role list, `page_size` at a time.
async fn all_pages(app: &TestApp, token: &str, page_size: i32, hidden: bool) -> Vec<apb::Role> {
    let mut roles = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = app
            .access()
            .list_roles(authed(
                token,
                apb::ListRolesRequest {
                    page_size,
                    page_token,
                    show_hidden: hidden,
                    ..Default::default()
                },
            ))
            .await
            .expect("list roles")
            .into_inner();
        assert!(page.roles.len() <= page_size as usize, "{page:?}");
        roles.extend(page.roles);
        if page.next_page_token.is_empty() {
            return roles;
        }
        page_token = page.next_page_token;
    }
}

async fn get_role(app: &TestApp, token: &str, id: &str) -> Result<apb::Role, tonic::Status> {
    app.access()
        .get_role(authed(token, apb::GetRoleRequest { id: id.into() }))
        .await
        .map(|r| r.into_inner())
}

async fn delete_role(
    app: &TestApp,
    token: &str,
    id: &str,
    etag: &str,
) -> Result<apb::DeleteRoleResponse, tonic::Status> {
    app.access()
        .delete_role(authed(
            token,
            apb::DeleteRoleRequest {
                id: id.into(),
                etag: etag.into(),
            },
        ))
        .await
        .map(|r| r.into_inner())
}

fn names(roles: &[apb::Role]) -> Vec<&str> {
    roles.iter().map(|r| r.display_name.as_str()).collect()
}

#[tokio::test]
async fn roles_are_created_read_updated_cloned_and_deleted_and_the_builtins_are_kept() {
    let app = spawn_app_with_access().await;
    let o = org(&app).await;
    let admin = o.org.admin_token.clone();
    let peer = token(&app, &o, "peer").await;

    // Everyone in the organisation sees its three roles, built-in first.
    let defaults = list_roles(&app, &peer).await;
    assert_eq!(
        names(&defaults),
        ["Administrator", "Supervisor", "Manager"],
        "{defaults:?}"
    );
    let kinds: Vec<i32> = defaults.iter().map(|r| r.kind).collect();
    assert_eq!(
        kinds,
        [
            apb::RoleKind::Administrator as i32,
            apb::RoleKind::Supervisor as i32,
            apb::RoleKind::Manager as i32
        ]
    );
    let supervisor = defaults[1].clone();
    assert_eq!(
        supervisor.permissions.as_ref().map(|p| p.view_mailbox_list),
        Some(Scope::Subordinates as i32)
    );
    assert_eq!(supervisor.assignment_count, 1, "org#head");

    // Create: a custom role, etag "1", with the revision to pass on.
    let hr = create_role(
        &app,
        &admin,
        "  HR  ",
        scopes(Scope::All, Scope::Own, Scope::Own, Scope::Unspecified),
    )
    .await
    .expect("create HR");
    assert_eq!(hr.display_name, "HR", "trimmed");
    assert_eq!(hr.kind, apb::RoleKind::Custom as i32);
    assert_eq!(hr.etag, "1");
    assert_eq!(hr.org_id, o.org.id);
    assert!(hr.written_at.is_some());
    assert!(hr.create_time.is_some());
    assert_eq!(
        hr.permissions.as_ref().map(|p| p.grant_read_access),
        Some(Scope::None as i32),
        "UNSPECIFIED is NONE"
    );
    // Names are unique in the organisation whatever their case; 1–100 characters, no
    // control characters.
    let err = create_role(&app, &admin, "hr", Default::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    for bad in ["   ", "two\nlines", &"x".repeat(101)] {
        let err = create_role(&app, &admin, bad, Default::default())
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{bad:?}: {err:?}");
    }
    // Only those who configure access create roles.
    let err = create_role(&app, &peer, "Mine", Default::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    // Get: the organisation's own; another organisation's role is simply not found.
    assert_eq!(get_role(&app, &peer, &hr.id).await.expect("get"), {
        let mut read = hr.clone();
        read.written_at = None;
        read
    });
    let stranger = app.create_org(0).await;
    let theirs = get_role(&app, &stranger.admin_token, &hr.id)
        .await
        .unwrap_err();
    let unknown_id = uuid::Uuid::new_v4().to_string();
    let unknown = get_role(&app, &admin, &unknown_id).await.unwrap_err();
    assert_eq!(theirs.code(), Code::NotFound);
    assert_eq!(unknown.code(), Code::NotFound);
    assert_eq!(
        theirs.message().replace(&hr.id, "<id>"),
        unknown.message().replace(&unknown_id, "<id>"),
        "the same answer for another organisation's role and for none"
    );

    // Update: the mask is required and names only what exists.
    let mut renamed = hr.clone();
    renamed.display_name = "People".into();
    let err = update_role(&app, &admin, renamed.clone(), &[])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = update_role(&app, &admin, renamed.clone(), &["name"])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("display_name")
            && err.message().contains("permissions.grant_read_access"),
        "the allowed paths are listed: {}",
        err.message()
    );
    // Only the masked field changes (the permissions sent along are ignored).
    renamed.permissions = Some(scopes(Scope::None, Scope::None, Scope::None, Scope::None));
    let people = update_role(&app, &admin, renamed.clone(), &["display_name"])
        .await
        .expect("rename");
    assert_eq!(people.display_name, "People");
    assert_eq!(people.permissions, hr.permissions);
    assert_eq!(people.etag, "2");
    // A change made meanwhile: the etag read before is stale.
    renamed.display_name = "Staff".into();
    let err = update_role(&app, &admin, renamed, &["display_name"])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Aborted, "{err:?}");
    // A name another role has is refused on update too.
    let mut clash = people.clone();
    clash.display_name = "manager".into();
    let err = update_role(&app, &admin, clash, &["display_name"])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");

    // Hidden roles are listed only when asked for.
    let mut hide = people.clone();
    hide.hidden = true;
    let hidden = update_role(&app, &admin, hide, &["hidden"])
        .await
        .expect("hide");
    assert!(hidden.hidden);
    assert!(!names(&all_pages(&app, &peer, 100, false).await).contains(&"People"));
    let everything = all_pages(&app, &peer, 100, true).await;
    assert!(names(&everything).contains(&"People"));

    // Clone: a custom copy named "<name> (copy)".
    let copy = app
        .access()
        .clone_role(authed(
            &admin,
            apb::CloneRoleRequest {
                id: supervisor.id.clone(),
                display_name: String::new(),
            },
        ))
        .await
        .expect("clone")
        .into_inner();
    assert_eq!(copy.display_name, "Supervisor (copy)");
    assert_eq!(copy.kind, apb::RoleKind::Custom as i32);
    assert_eq!(copy.permissions, supervisor.permissions);
    assert_eq!(copy.assignment_count, 0, "a copy has no assignments");

    // Pages of two hold the same roles, in order.
    let everything = all_pages(&app, &peer, 100, true).await;
    let paged = all_pages(&app, &peer, 2, true).await;
    assert_eq!(names(&paged), names(&everything));
    assert_eq!(everything.len(), 5);

    // Administrator is identity's admin flag; Supervisor and Manager are unassigned, not
    // deleted.
    let administrator = defaults[0].clone();
    let mut edited = administrator.clone();
    edited.display_name = "Boss".into();
    let err = update_role(&app, &admin, edited, &["display_name"])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("SetAdmin"), "{}", err.message());
    let err = delete_role(&app, &admin, &administrator.id, "")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let err = assign(
        &app,
        &admin,
        &administrator.id,
        subject("user", &o.peer.id, ""),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("SetAdmin"), "{}", err.message());
    let err = delete_role(&app, &admin, &supervisor.id, "")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("cannot be deleted"),
        "{}",
        err.message()
    );
    // But Supervisor may be renamed.
    let mut renamed_supervisor = supervisor.clone();
    renamed_supervisor.display_name = "Team lead".into();
    update_role(&app, &admin, renamed_supervisor, &["display_name"])
        .await
        .expect("rename Supervisor");

    // Delete: a stale etag is refused; then the role and its assignments go.
    assign(&app, &admin, &copy.id, subject("user", &o.peer.id, ""))
        .await
        .expect("assign the copy");
    let err = delete_role(&app, &admin, &copy.id, "7").await.unwrap_err();
    assert_eq!(err.code(), Code::Aborted, "{err:?}");
    let deleted = delete_role(&app, &admin, &copy.id, &copy.etag)
        .await
        .expect("delete");
    assert!(deleted.deleted_at.is_some());
    assert_eq!(
        get_role(&app, &admin, &copy.id).await.unwrap_err().code(),
        Code::NotFound
    );
    let peer_roles = app
        .access()
        .list_role_assignments(authed(
            &peer,
            apb::ListRoleAssignmentsRequest {
                user_id: o.peer.id.clone(),
                at_least_as_fresh_as: deleted.deleted_at.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("my roles")
        .into_inner();
    let held: Vec<&str> = peer_roles
        .assignments
        .iter()
        .map(|a| a.role_display_name.as_str())
        .collect();
    assert_eq!(held, ["Manager"], "back to everyone else's role");

    // Role assignments are not relationships one writes directly.
    let err = app
        .access()
        .write_relationships(authed(
            &admin,
            apb::WriteRelationshipsRequest {
                relationships: vec![apb::Relationship {
                    resource: object("role", &hidden.id),
                    relation: "assignee".into(),
                    subject: user(&o.peer.id),
                }],
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("AssignRole"), "{}", err.message());

    // The settings RPCs that roles replaced say where they went.
    #[allow(deprecated)]
    let get = app
        .access()
        .get_permission_settings(authed(&admin, apb::GetPermissionSettingsRequest::default()))
        .await
        .unwrap_err();
    #[allow(deprecated)]
    let update = app
        .access()
        .update_permission_settings(authed(
            &admin,
            apb::UpdatePermissionSettingsRequest::default(),
        ))
        .await
        .unwrap_err();
    for err in [get, update] {
        assert_eq!(err.code(), Code::FailedPrecondition);
        assert!(err.message().contains("ListRoles"), "{}", err.message());
    }
}

#[tokio::test]
async fn a_configurer_passes_on_no_more_than_they_hold_and_everyone_sees_the_change() {
    let app = spawn_app_with_access().await;
    let o = org(&app).await;
    let admin = o.org.admin_token.clone();
    let service = app.service_token().await;

    // A head sees a subordinate's mailbox through Supervisor, and the explanation says so.
    let mut why = request(
        &o.ceo.id,
        "mailbox.view",
        object("mailbox", &o.mailbox),
        None,
    );
    why.explain = true;
    let answer = app.check(&service, why).await.expect("explain");
    assert!(answer.allowed);
    let granted_by = answer.granted_by.expect("granted by a role");
    assert_eq!(granted_by.role_display_name, "Supervisor");
    let assignment = granted_by.assignment.expect("the assignment");
    assert_eq!(assignment.relation, "assignee");
    assert_eq!(
        assignment.subject.as_ref().map(|s| s.relation.as_str()),
        Some("head")
    );
    // A denial names the roles held and what they give.
    let mut why_not = request(
        &o.peer.id,
        "mailbox.modify",
        object("mailbox", &o.mailbox),
        None,
    );
    why_not.explain = true;
    let answer = app.check(&service, why_not).await.expect("explain");
    assert!(!answer.allowed);
    assert!(answer.granted_by.is_none());
    assert!(
        answer
            .reason
            .contains("Manager (change mailbox settings: own)"),
        "{}",
        answer.reason
    );

    // The admin makes the East head a configurer: their own department and below.
    let configurers = create_role(
        &app,
        &admin,
        "Configurers",
        apb::RolePermissions {
            manage_permissions: true,
            ..scopes(Scope::Department, Scope::None, Scope::None, Scope::None)
        },
    )
    .await
    .expect("create");
    assign(
        &app,
        &admin,
        &configurers.id,
        subject("user", &o.east_head.id, ""),
    )
    .await
    .expect("assign");
    let head = token(&app, &o, "east.head").await;

    // D2: the power to configure stays with admins; so do heads and everyone else.
    let err = create_role(
        &app,
        &head,
        "Deputies",
        apb::RolePermissions {
            manage_permissions: true,
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    // D3: no wider than their own scope.
    let err = create_role(
        &app,
        &head,
        "Everything",
        scopes(Scope::All, Scope::None, Scope::None, Scope::None),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let viewers = create_role(
        &app,
        &head,
        "East viewers",
        scopes(Scope::Department, Scope::None, Scope::None, Scope::None),
    )
    .await
    .expect("a role within their own grants");
    let err = assign(&app, &head, &viewers.id, subject("org", &o.org.id, "head"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    // Only to people within their reach.
    let err = assign(
        &app,
        &head,
        &viewers.id,
        subject("user", &o.other_head.id, ""),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let supervisor = builtin_role(&app, &head, apb::RoleKind::Supervisor).await;
    let err = app
        .access()
        .unassign_role(authed(
            &head,
            apb::UnassignRoleRequest {
                role_id: supervisor.id.clone(),
                subject: subject("org", &o.org.id, "head"),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    // A subject of no known form is refused with the forms; another organisation's people
    // and unknown departments are not found.
    let err = assign(&app, &head, &viewers.id, subject("user", &o.peer.id, "x"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("all_members"), "{}", err.message());
    let stranger = app.create_org(0).await;
    let err = assign(
        &app,
        &admin,
        &viewers.id,
        subject("user", &stranger.admin_id, ""),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let err = assign(
        &app,
        &head,
        &viewers.id,
        subject("department", &uuid::Uuid::new_v4().to_string(), "member"),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");

    // The peer in East gets the role: they see the owner's mailbox at the assignment's
    // revision, on another replica too.
    assert!(!app.can(&o.peer.id, "mailbox.view", &o.mailbox).await);
    let assigned = assign(&app, &head, &viewers.id, subject("user", &o.peer.id, ""))
        .await
        .expect("assign within reach");
    assert_eq!(assigned.role_display_name, "East viewers");
    let written_at = assigned.written_at.clone().expect("revision");
    let stop = CancellationToken::new();
    let (mut other, _) = app.start_access_replica(stop.clone()).await;
    let answer = other
        .check(authed(
            &service,
            request(
                &o.peer.id,
                "mailbox.view",
                object("mailbox", &o.mailbox),
                Some(&written_at),
            ),
        ))
        .await
        .expect("check on another replica")
        .into_inner();
    assert!(answer.allowed, "{answer:?}");

    // Assignments by role (for configurers) and by person (for themselves).
    let by_role = app
        .access()
        .list_role_assignments(authed(
            &head,
            apb::ListRoleAssignmentsRequest {
                role_id: viewers.id.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("by role")
        .into_inner();
    assert_eq!(
        by_role
            .assignments
            .iter()
            .map(|a| a.subject.clone())
            .collect::<Vec<_>>(),
        vec![subject("user", &o.peer.id, "")]
    );
    let peer = token(&app, &o, "peer").await;
    let err = app
        .access()
        .list_role_assignments(authed(
            &peer,
            apb::ListRoleAssignmentsRequest {
                role_id: viewers.id.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let mine = app
        .access()
        .list_role_assignments(authed(
            &peer,
            apb::ListRoleAssignmentsRequest {
                user_id: o.peer.id.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("by person")
        .into_inner();
    let held: Vec<&str> = mine
        .assignments
        .iter()
        .map(|a| a.role_display_name.as_str())
        .collect();
    assert_eq!(held, ["East viewers"], "an explicit role replaces Manager");
    // The head's own roles say how they hold them: Supervisor through heading East.
    let theirs = app
        .access()
        .list_role_assignments(authed(
            &admin,
            apb::ListRoleAssignmentsRequest {
                user_id: o.east_head.id.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("the head's roles")
        .into_inner();
    let as_supervisor = theirs
        .assignments
        .iter()
        .find(|a| a.role_id == supervisor.id)
        .expect("Supervisor");
    assert!(
        as_supervisor.via.iter().any(|r| r.relation == "head"),
        "{as_supervisor:?}"
    );
    let err = app
        .access()
        .list_role_assignments(authed(
            &admin,
            apb::ListRoleAssignmentsRequest {
                user_id: o.peer.id.clone(),
                role_id: viewers.id.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "exactly one of the two");

    // The events name the change and who made it.
    let head_actor = Some(ev::actor::Kind::UserId(o.east_head.id.clone()));
    let created = app
        .wait_for_event(Topic::AccessEvents, Duration::from_secs(30), |e| {
            matches!(&e.payload, Some(Payload::RoleCreated(c))
                if c.role.as_ref().is_some_and(|r| r.id == viewers.id))
        })
        .await
        .expect("RoleCreated");
    assert_eq!(created.actor.and_then(|a| a.kind), head_actor);
    let assigned_event = app
        .wait_for_event(
            Topic::AccessEvents,
            Duration::from_secs(30),
            |e| matches!(&e.payload, Some(Payload::RoleAssigned(a)) if a.role_id == viewers.id),
        )
        .await
        .expect("RoleAssigned");
    assert_eq!(assigned_event.actor.and_then(|a| a.kind), head_actor);
    let Some(Payload::RoleAssigned(a)) = assigned_event.payload else {
        unreachable!()
    };
    assert_eq!(Some(a.revision.as_str()), Some(written_at.token.as_str()));

    // Unassigned, the peer is back to their own mailboxes, at once on the other replica.
    let unassigned = app
        .access()
        .unassign_role(authed(
            &head,
            apb::UnassignRoleRequest {
                role_id: viewers.id.clone(),
                subject: subject("user", &o.peer.id, ""),
            },
        ))
        .await
        .expect("unassign")
        .into_inner()
        .unassigned_at
        .expect("revision");
    let answer = other
        .check(authed(
            &service,
            request(
                &o.peer.id,
                "mailbox.view",
                object("mailbox", &o.mailbox),
                Some(&unassigned),
            ),
        ))
        .await
        .expect("check")
        .into_inner();
    assert!(!answer.allowed);
    stop.cancel();
}

/// The admin makes the East head a configurer whose reach is their own department and below
/// (besides Supervisor, which heads hold: connect, change and grant reading for their own); the
/// role and the head's token.
async fn east_configurer(app: &TestApp, o: &Org) -> (apb::Role, String) {
    let configurers = create_role(
        app,
        &o.org.admin_token,
        "Configurers",
        apb::RolePermissions {
            manage_permissions: true,
            ..scopes(Scope::Department, Scope::None, Scope::None, Scope::None)
        },
    )
    .await
    .expect("create Configurers");
    assign(
        app,
        &o.org.admin_token,
        &configurers.id,
        subject("user", &o.east_head.id, ""),
    )
    .await
    .expect("assign Configurers");
    (configurers, token(app, o, "east.head").await)
}

/// The names of the roles `user_id` holds, as an admin sees them.
async fn held_by(app: &TestApp, o: &Org, user_id: &str) -> Vec<String> {
    app.access()
        .list_role_assignments(authed(
            &o.org.admin_token,
            apb::ListRoleAssignmentsRequest {
                user_id: user_id.into(),
                ..Default::default()
            },
        ))
        .await
        .expect("roles held")
        .into_inner()
        .assignments
        .into_iter()
        .map(|a| a.role_display_name)
        .collect()
}

async fn unassign(
    app: &TestApp,
    token: &str,
    role_id: &str,
    from: Option<apb::SubjectRef>,
) -> Result<apb::UnassignRoleResponse, tonic::Status> {
    app.access()
        .unassign_role(authed(
            token,
            apb::UnassignRoleRequest {
                role_id: role_id.into(),
                subject: from,
            },
        ))
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn taking_a_role_away_never_leaves_someone_with_more_than_the_configurer_holds() {
    let app = spawn_app_with_access().await;
    let o = org(&app).await;
    let admin = o.org.admin_token.clone();
    let (_, head) = east_configurer(&app, &o).await;
    let viewers = create_role(
        &app,
        &head,
        "East viewers",
        scopes(Scope::Department, Scope::None, Scope::None, Scope::None),
    )
    .await
    .expect("create");
    assign(&app, &head, &viewers.id, subject("user", &o.peer.id, ""))
        .await
        .expect("assign");

    // The admin lets everyone else (Manager) see every mailbox in the list: the peer, left
    // with no role of their own, would see more than the head may show anyone.
    let mut manager = builtin_role(&app, &admin, apb::RoleKind::Manager).await;
    if let Some(p) = manager.permissions.as_mut() {
        p.view_mailbox_list = Scope::All as i32;
    }
    update_role(&app, &admin, manager, &["permissions.view_mailbox_list"])
        .await
        .expect("widen Manager");
    let err = unassign(&app, &head, &viewers.id, subject("user", &o.peer.id, ""))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert_eq!(
        err.message(),
        format!(
            "unassigning this role would leave user {} with the roles of everyone else (Manager: see mailboxes in the list for everyone), more than you hold; ask an org admin",
            o.peer.id
        )
    );
    let err = delete_role(&app, &head, &viewers.id, "").await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(
        err.message().starts_with(&format!(
            "deleting this role would leave user {} with the roles of everyone else (Manager: see mailboxes in the list for everyone)",
            o.peer.id
        )),
        "{}",
        err.message()
    );
    assert_eq!(held_by(&app, &o, &o.peer.id).await, ["East viewers"]);

    // Someone who keeps another role of their own does not fall back to everyone else.
    let kept = create_role(&app, &admin, "Kept", Default::default())
        .await
        .expect("create Kept");
    assign(&app, &admin, &kept.id, subject("user", &o.peer.id, ""))
        .await
        .expect("assign Kept");
    unassign(&app, &head, &viewers.id, subject("user", &o.peer.id, ""))
        .await
        .expect("the peer keeps Kept");
    assert_eq!(held_by(&app, &o, &o.peer.id).await, ["Kept"]);

    // With Manager back to each one's own, the head may take roles away again.
    assign(&app, &head, &viewers.id, subject("user", &o.owner.id, ""))
        .await
        .expect("assign to the owner");
    let mut manager = builtin_role(&app, &admin, apb::RoleKind::Manager).await;
    if let Some(p) = manager.permissions.as_mut() {
        p.view_mailbox_list = Scope::Own as i32;
    }
    update_role(&app, &admin, manager, &["permissions.view_mailbox_list"])
        .await
        .expect("narrow Manager");
    let current = get_role(&app, &head, &viewers.id).await.expect("get");
    delete_role(&app, &head, &viewers.id, &current.etag)
        .await
        .expect("delete within reach");
    assert_eq!(held_by(&app, &o, &o.owner.id).await, ["Manager"]);
}

#[tokio::test]
async fn a_configurer_asks_within_reach_and_makes_no_hidden_or_look_alike_roles() {
    let app = spawn_app_with_access().await;
    let o = org(&app).await;
    let admin = o.org.admin_token.clone();
    let (_, head) = east_configurer(&app, &o).await;
    let outside = format!(
        "your roles let you ask only about people within your reach (your own department and below); user {} is outside it",
        o.other_head.id
    );

    // S3: about people in East, yes; about the Other head, no.
    let view = |who: &str| request(who, "mailbox.view", object("mailbox", &o.mailbox), None);
    assert!(
        app.check(&head, view(&o.owner.id))
            .await
            .expect("check")
            .allowed
    );
    let err = app.check(&head, view(&o.other_head.id)).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert_eq!(err.message(), outside);
    let err = app
        .access()
        .lookup_resources(authed(
            &head,
            apb::LookupResourcesRequest {
                subject: user(&o.other_head.id),
                permission: "mailbox.view".into(),
                resource_type: "mailbox".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let err = app
        .access()
        .lookup_mailbox_scope(authed(
            &head,
            apb::LookupMailboxScopeRequest {
                subject: user(&o.ceo.id),
                permission: "mailbox.view".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let roles_of = |who: String| {
        let mut access = app.access();
        let head = head.clone();
        async move {
            access
                .list_role_assignments(authed(
                    &head,
                    apb::ListRoleAssignmentsRequest {
                        user_id: who,
                        ..Default::default()
                    },
                ))
                .await
        }
    };
    roles_of(o.peer.id.clone()).await.expect("a peer in East");
    let err = roles_of(o.other_head.id.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert_eq!(err.message(), outside);
    // The organisation's relationships are for its admins only.
    let list = |token: String| {
        let mut access = app.access();
        async move {
            access
                .list_relationships(authed(&token, apb::ListRelationshipsRequest::default()))
                .await
        }
    };
    let err = list(head.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(
        err.message().starts_with("only org admins may list"),
        "{}",
        err.message()
    );
    list(admin.clone()).await.expect("the admin lists");

    // S6: invisible and control characters in names are refused by code point.
    for (name, code) in [
        ("H\u{200B}R", "U+200B"),
        ("\u{202E}RH", "U+202E"),
        ("H\u{AD}R", "U+00AD"),
        ("H\tR", "U+0009"),
    ] {
        let err = create_role(&app, &admin, name, Default::default())
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{name:?}: {err:?}");
        assert!(err.message().contains(code), "{name:?}: {}", err.message());
    }

    // S7: hidden roles are the admins'.
    let hidden_create = app
        .access()
        .create_role(authed(
            &head,
            apb::CreateRoleRequest {
                role: Some(apb::Role {
                    display_name: "Quiet".into(),
                    hidden: true,
                    permissions: Some(scopes(Scope::Own, Scope::None, Scope::None, Scope::None)),
                    ..Default::default()
                }),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(hidden_create.code(), Code::PermissionDenied);
    assert!(
        hidden_create
            .message()
            .starts_with("only org admins may create hidden roles"),
        "{}",
        hidden_create.message()
    );
    let east = create_role(
        &app,
        &head,
        "East",
        scopes(Scope::Own, Scope::None, Scope::None, Scope::None),
    )
    .await
    .expect("a visible role");
    let mut hide = east.clone();
    hide.hidden = true;
    let err = update_role(&app, &head, hide.clone(), &["hidden"])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let secret = app
        .access()
        .create_role(authed(
            &admin,
            apb::CreateRoleRequest {
                role: Some(apb::Role {
                    display_name: "Secret".into(),
                    hidden: true,
                    ..Default::default()
                }),
            },
        ))
        .await
        .expect("an admin hides a role")
        .into_inner();
    let err = app
        .access()
        .clone_role(authed(
            &head,
            apb::CloneRoleRequest {
                id: secret.id.clone(),
                display_name: "Not so secret".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(
        err.message().contains("copy a hidden role"),
        "{}",
        err.message()
    );
    let mut renamed = secret.clone();
    renamed.display_name = "Open".into();
    let err = update_role(&app, &head, renamed, &["display_name"])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(
        update_role(&app, &admin, hide, &["hidden"])
            .await
            .expect("the admin hides it")
            .hidden
    );

    // S9: a path named twice is changed, and reported, once.
    let mut named = get_role(&app, &admin, &east.id).await.expect("get");
    named.display_name = "East team".into();
    named.hidden = false;
    let updated = update_role(
        &app,
        &admin,
        named,
        &["display_name", "hidden", "display_name"],
    )
    .await
    .expect("update");
    assert_eq!(updated.display_name, "East team");
    let revision = updated.written_at.expect("revision").token;
    let event = app
        .wait_for_event(
            Topic::AccessEvents,
            Duration::from_secs(30),
            |e| matches!(&e.payload, Some(Payload::RoleUpdated(u)) if u.revision == revision),
        )
        .await
        .expect("RoleUpdated");
    let Some(Payload::RoleUpdated(u)) = event.payload else {
        unreachable!()
    };
    assert_eq!(u.changed_paths, ["display_name", "hidden"]);
}
