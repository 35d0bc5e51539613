//! Departments, supervisors, the user directory, seats and admins.

use mailroom_tests::identity_pb as pb;
use mailroom_tests::{authed, spawn_app};
use tonic::Code;

fn mask(path: &str) -> Option<prost_types::FieldMask> {
    Some(prost_types::FieldMask {
        paths: vec![path.into()],
    })
}

#[tokio::test]
async fn moving_a_department_under_its_own_subtree_is_refused() {
    let app = spawn_app().await;
    let org = app.create_org(0).await;
    let top = app.create_department(&org, "Top", "", "").await;
    let mid = app.create_department(&org, "Mid", &top.id, "").await;
    let leaf = app.create_department(&org, "Leaf", &mid.id, "").await;
    let mut identity = app.identity.clone();
    for (parent, code) in [
        (&leaf.id, Code::FailedPrecondition),
        (&mid.id, Code::FailedPrecondition),
        (&top.id, Code::InvalidArgument),
    ] {
        let status = identity
            .update_department(authed(
                &org.admin_token,
                pb::UpdateDepartmentRequest {
                    department: Some(pb::Department {
                        id: top.id.clone(),
                        parent_id: parent.clone(),
                        ..Default::default()
                    }),
                    update_mask: mask("parent_id"),
                },
            ))
            .await
            .expect_err("cycle refused");
        assert_eq!(status.code(), code, "{}", status.message());
    }
    // A legal move still works: Leaf to the top level.
    let moved = identity
        .update_department(authed(
            &org.admin_token,
            pb::UpdateDepartmentRequest {
                department: Some(pb::Department {
                    id: leaf.id.clone(),
                    parent_id: String::new(),
                    ..Default::default()
                }),
                update_mask: mask("parent_id"),
            },
        ))
        .await
        .expect("move to top")
        .into_inner();
    assert_eq!(moved.parent_id, "");
    // Deleting a department with sub-departments or members is refused, then allowed when empty.
    let status = identity
        .delete_department(authed(
            &org.admin_token,
            pb::DeleteDepartmentRequest { id: top.id.clone() },
        ))
        .await
        .expect_err("top still has Mid");
    assert_eq!(status.code(), Code::FailedPrecondition);
    identity
        .delete_department(authed(
            &org.admin_token,
            pb::DeleteDepartmentRequest {
                id: leaf.id.clone(),
            },
        ))
        .await
        .expect("empty department deleted");
}

#[tokio::test]
async fn supervisors_are_the_heads_above_transitively_and_subordinates_the_subtree() {
    let app = spawn_app().await;
    let org = app.create_org(0).await;
    let company = app.create_department(&org, "Company", "", "").await;
    let sales = app.create_department(&org, "Sales", &company.id, "").await;
    let east = app.create_department(&org, "East", &sales.id, "").await;
    let ceo = app.create_user(&org, "ceo", &company.id).await;
    let vp = app.create_user(&org, "vp", &sales.id).await;
    let lead = app.create_user(&org, "lead", &east.id).await;
    let rep = app.create_user(&org, "rep", &east.id).await;
    let outsider = app.create_user(&org, "outsider", "").await;
    app.set_head(&org, &company, &ceo.id).await;
    app.set_head(&org, &sales, &vp.id).await;
    app.set_head(&org, &east, &lead.id).await;
    let mut identity = app.identity.clone();

    let supervisors = |user: &pb::User| pb::ListSupervisorsRequest {
        user_id: user.id.clone(),
    };
    let ids = |users: Vec<pb::User>| users.into_iter().map(|u| u.id).collect::<Vec<_>>();
    let of_rep = identity
        .list_supervisors(authed(&org.admin_token, supervisors(&rep)))
        .await
        .expect("rep")
        .into_inner();
    assert_eq!(
        ids(of_rep.supervisors),
        vec![lead.id.clone(), vp.id.clone(), ceo.id.clone()],
        "nearest first"
    );
    let of_lead = identity
        .list_supervisors(authed(&org.admin_token, supervisors(&lead)))
        .await
        .expect("lead")
        .into_inner();
    assert_eq!(
        ids(of_lead.supervisors),
        vec![vp.id.clone(), ceo.id.clone()],
        "a head is not their own supervisor"
    );
    let of_outsider = identity
        .list_supervisors(authed(&org.admin_token, supervisors(&outsider)))
        .await
        .expect("o")
        .into_inner();
    assert!(of_outsider.supervisors.is_empty());

    let subordinates = |user: &pb::User| pb::ListSubordinatesRequest {
        user_id: user.id.clone(),
        page_size: 0,
        page_token: String::new(),
    };
    let mut of_vp = ids(identity
        .list_subordinates(authed(&org.admin_token, subordinates(&vp)))
        .await
        .expect("vp")
        .into_inner()
        .users);
    of_vp.sort();
    let mut expected = vec![lead.id.clone(), rep.id.clone()];
    expected.sort();
    assert_eq!(
        of_vp, expected,
        "two levels down, not the VP himself, not the outsider"
    );
    let of_ceo = identity
        .list_subordinates(authed(&org.admin_token, subordinates(&ceo)))
        .await
        .expect("ceo")
        .into_inner();
    assert_eq!(of_ceo.total_size, 3);

    // Moving East directly under Company takes the VP out of the chain at once.
    identity
        .update_department(authed(
            &org.admin_token,
            pb::UpdateDepartmentRequest {
                department: Some(pb::Department {
                    id: east.id.clone(),
                    parent_id: company.id.clone(),
                    ..Default::default()
                }),
                update_mask: mask("parent_id"),
            },
        ))
        .await
        .expect("move");
    let of_rep = identity
        .list_supervisors(authed(&org.admin_token, supervisors(&rep)))
        .await
        .expect("rep")
        .into_inner();
    assert_eq!(
        ids(of_rep.supervisors),
        vec![lead.id.clone(), ceo.id.clone()]
    );

    // A dismissed head supervises no one.
    identity
        .dismiss_user(authed(
            &org.admin_token,
            pb::DismissUserRequest {
                id: lead.id.clone(),
            },
        ))
        .await
        .expect("dismiss lead");
    let of_rep = identity
        .list_supervisors(authed(&org.admin_token, supervisors(&rep)))
        .await
        .expect("rep")
        .into_inner();
    assert_eq!(ids(of_rep.supervisors), vec![ceo.id.clone()]);
}

#[tokio::test]
async fn listing_filters_by_state_department_and_name_and_pages_without_gaps() {
    let app = spawn_app().await;
    let org = app.create_org(0).await;
    let dept = app.create_department(&org, "Support", "", "").await;
    let mut identity = app.identity.clone();
    for i in 0..7 {
        app.create_user(&org, &format!("agent{i}"), &dept.id).await;
    }
    // Two invited users (no password yet).
    for local in ["inv1", "inv2"] {
        identity
            .create_user(authed(
                &org.admin_token,
                pb::CreateUserRequest {
                    user: Some(pb::User {
                        login_email: org.address(local),
                        last_name: "Newcomer".into(),
                        ..Default::default()
                    }),
                    password: String::new(),
                },
            ))
            .await
            .expect("invite");
    }
    let list = |filter: &str, page_size: i32, page_token: String| pb::ListUsersRequest {
        page_size,
        page_token,
        filter: filter.into(),
        order_by: String::new(),
    };
    let invited = identity
        .list_users(authed(
            &org.admin_token,
            list("state = INVITED", 0, String::new()),
        ))
        .await
        .expect("invited")
        .into_inner();
    assert_eq!(invited.total_size, 2);
    assert!(invited
        .users
        .iter()
        .all(|u| u.state == pb::UserState::Invited as i32));

    let filter = format!("department_id = \"{}\"", dept.id);
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = identity
            .list_users(authed(&org.admin_token, list(&filter, 3, token)))
            .await
            .expect("page")
            .into_inner();
        assert!(page.users.len() <= 3);
        assert_eq!(page.total_size, 7);
        seen.extend(page.users.into_iter().map(|u| u.login_email));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        7,
        "every member exactly once across pages: {seen:?}"
    );

    let named = identity
        .list_users(authed(
            &org.admin_token,
            list("name : \"agent3\"", 0, String::new()),
        ))
        .await
        .expect("name")
        .into_inner();
    assert_eq!(named.users.len(), 1);

    let bad = identity
        .list_users(authed(
            &org.admin_token,
            list("salary > 5", 0, String::new()),
        ))
        .await
        .expect_err("unknown field");
    assert_eq!(bad.code(), Code::InvalidArgument);
    let bad_token = identity
        .list_users(authed(&org.admin_token, list("", 0, "garbage".into())))
        .await
        .expect_err("bad token");
    assert_eq!(bad_token.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn the_seat_limit_holds_under_concurrent_creation() {
    let app = spawn_app().await;
    let org = app.create_org(5).await; // the admin takes one seat
    let attempts = (0..12).map(|i| {
        let app = &app;
        let org = &org;
        async move {
            app.try_create_user(org, &org.address(&format!("seat{i}")), "")
                .await
        }
    });
    let results = futures::future::join_all(attempts).await;
    let created = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(created, 4, "5 seats, 1 used by the admin");
    for refused in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(
            refused.code(),
            Code::ResourceExhausted,
            "{}",
            refused.message()
        );
        assert!(refused.message().contains("seat"), "{}", refused.message());
    }
}

#[tokio::test]
async fn the_last_admin_cannot_be_removed_and_employees_cannot_administer() {
    let app = spawn_app().await;
    let org = app.create_org(0).await;
    let mut identity = app.identity.clone();
    let status = identity
        .set_admin(authed(
            &org.admin_token,
            pb::SetAdminRequest {
                id: org.admin_id.clone(),
                admin: false,
            },
        ))
        .await
        .expect_err("last admin");
    assert_eq!(status.code(), Code::FailedPrecondition);
    let status = identity
        .dismiss_user(authed(
            &org.admin_token,
            pb::DismissUserRequest {
                id: org.admin_id.clone(),
            },
        ))
        .await
        .expect_err("last admin");
    assert_eq!(status.code(), Code::FailedPrecondition);

    let emp = app.create_user(&org, "emp", "").await;
    let token = app
        .login(&emp.login_email)
        .await
        .expect("login")
        .access_token;
    let status = identity
        .dismiss_user(authed(
            &token,
            pb::DismissUserRequest {
                id: org.admin_id.clone(),
            },
        ))
        .await
        .expect_err("employee");
    assert_eq!(status.code(), Code::PermissionDenied);

    // Promote, and the promoted user can act at once with the token they already hold.
    identity
        .set_admin(authed(
            &org.admin_token,
            pb::SetAdminRequest {
                id: emp.id.clone(),
                admin: true,
            },
        ))
        .await
        .expect("promote");
    identity
        .set_admin(authed(
            &token,
            pb::SetAdminRequest {
                id: org.admin_id.clone(),
                admin: false,
            },
        ))
        .await
        .expect("new admin demotes the old one");
    let status = identity
        .create_department(authed(
            &org.admin_token,
            pb::CreateDepartmentRequest {
                department: Some(pb::Department {
                    name: "X".into(),
                    ..Default::default()
                }),
            },
        ))
        .await
        .expect_err("demoted admin's token no longer administers");
    // The token that said `admin` is revoked outright (a refresh gives one without it).
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains("revoked"), "{}", status.message());
}

#[tokio::test]
async fn dismissal_ends_sign_in_and_rehiring_restores_it() {
    let app = spawn_app().await;
    let org = app.create_org(0).await;
    let mut identity = app.identity.clone();
    let hal = app.create_user(&org, "hal", "").await;
    let pair = app.login(&hal.login_email).await.expect("login");
    identity
        .dismiss_user(authed(
            &org.admin_token,
            pb::DismissUserRequest { id: hal.id.clone() },
        ))
        .await
        .expect("dismiss");
    assert_eq!(
        app.login(&hal.login_email).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    let refresh = app
        .auth
        .clone()
        .refresh_token(pb::RefreshTokenRequest {
            refresh_token: pair.refresh_token,
        })
        .await
        .expect_err("refresh revoked");
    assert_eq!(refresh.code(), Code::Unauthenticated);
    let rehired = identity
        .rehire_user(authed(
            &org.admin_token,
            pb::RehireUserRequest { id: hal.id.clone() },
        ))
        .await
        .expect("rehire")
        .into_inner();
    assert_eq!(rehired.state, pb::UserState::Active as i32);
    assert_eq!(
        rehired.login_email, hal.login_email,
        "kept the address through dismissal"
    );
    app.login(&hal.login_email).await.expect("signs in again");
}

#[tokio::test]
async fn get_user_shows_a_change_at_once_whoever_made_it() {
    // GetUser answers from the replica's memory once a user has been read; a change must still
    // show at once to the caller who made it, and soon to everyone when made elsewhere.
    let app = spawn_app().await;
    let org = app.create_org(0).await;
    let kept = app.create_user(&org, "kept", "").await;
    let mut identity = app.identity.clone();
    let read = |identity: &mut pb::identity_service_client::IdentityServiceClient<_>| {
        let mut identity = identity.clone();
        let (token, id) = (org.admin_token.clone(), kept.id.clone());
        async move {
            identity
                .get_user(authed(&token, pb::GetUserRequest { id }))
                .await
                .expect("get user")
                .into_inner()
        }
    };
    for round in 0..20 {
        read(&mut identity).await;
        read(&mut identity).await;
        let name = format!("Renamed{round}");
        identity
            .update_user(authed(
                &org.admin_token,
                pb::UpdateUserRequest {
                    user: Some(pb::User {
                        id: kept.id.clone(),
                        first_name: name.clone(),
                        ..Default::default()
                    }),
                    update_mask: mask("first_name"),
                },
            ))
            .await
            .expect("rename");
        let after = read(&mut identity).await;
        assert_eq!(
            after.first_name, name,
            "round {round}: GetUser right after UpdateUser answered the name before it"
        );
    }

    // Changed behind this replica's back (another replica, an operator's SQL): shown once
    // PostgreSQL's notification arrives, never kept stale.
    read(&mut identity).await;
    let id: uuid::Uuid = kept.id.parse().expect("user id");
    sqlx::query("UPDATE users SET position = 'Set in SQL' WHERE id = $1")
        .bind(id)
        .execute(&app.pool)
        .await
        .expect("update in the database");
    let changed = std::time::Instant::now();
    loop {
        if read(&mut identity).await.position == "Set in SQL" {
            break;
        }
        assert!(
            changed.elapsed() < std::time::Duration::from_secs(5),
            "GetUser still answers the row from before a change made in the database 5 s ago"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    eprintln!(
        "[read model] a change made in the database showed after {:?}",
        changed.elapsed()
    );
}
