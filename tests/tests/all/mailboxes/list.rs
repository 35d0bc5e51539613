//! Who sees which mailboxes, the list's filters, sorts and pages, and list views.

use super::*;

/// Waits until `token`'s list is exactly `expected` (access control learns of departments and
/// heads from identity's events, a moment after identity answers).
async fn until_sees(app: &TestApp, token: &str, expected: &[String]) {
    let mut expected = expected.to_vec();
    expected.sort();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let seen = match try_emails_seen(app, token).await {
            Ok(seen) => seen,
            Err(s) if s.code() == Code::Unavailable => {
                vec![format!("(unavailable: {})", s.message())]
            }
            Err(s) => panic!("list: {s:?}"),
        };
        if seen == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "list is {seen:?}, expected {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Top (head: boss) → Middle (head: lead) → Bottom (worker); Side (head: side_head, clerk).
struct Tree {
    org: TestOrg,
    boss: pb::User,
    lead: pb::User,
    worker: pb::User,
    side_head: pb::User,
    side: pb::Department,
}

async fn tree(app: &TestApp) -> Tree {
    let org = app.create_org(0).await;
    let top = app.create_department(&org, "Top", "", "").await;
    let middle = app.create_department(&org, "Middle", &top.id, "").await;
    let bottom = app.create_department(&org, "Bottom", &middle.id, "").await;
    let side = app.create_department(&org, "Side", "", "").await;
    let boss = app.create_user(&org, "boss", &top.id).await;
    let lead = app.create_user(&org, "lead", &middle.id).await;
    let worker = app.create_user(&org, "worker", &bottom.id).await;
    let side_head = app.create_user(&org, "side.head", &side.id).await;
    app.set_head(&org, &top, &boss.id).await;
    app.set_head(&org, &middle, &lead.id).await;
    let side = app.set_head(&org, &side, &side_head.id).await;
    for (n, user) in [(1, &boss), (2, &lead), (3, &worker), (4, &side_head)] {
        connect_when_known(app, &org.admin_token, &bulk(n), &user.id).await;
    }
    connect_when_known(app, &org.admin_token, &bulk(5), &org.admin_id).await;
    Tree {
        org,
        boss,
        lead,
        worker,
        side_head,
        side,
    }
}

#[tokio::test]
async fn each_caller_sees_exactly_the_mailboxes_access_control_lets_them_view() {
    let app = spawn_app_with_mailboxes().await;
    let t = tree(&app).await;
    let all: Vec<String> = (1..=5).map(bulk).collect();
    until_sees(&app, &t.org.admin_token, &all).await;

    let boss = sign_in(&app, &t.boss).await;
    let lead = sign_in(&app, &t.lead).await;
    let worker = sign_in(&app, &t.worker).await;
    // Two levels down, and one.
    until_sees(&app, &boss, &[bulk(1), bulk(2), bulk(3)]).await;
    until_sees(&app, &lead, &[bulk(2), bulk(3)]).await;
    until_sees(&app, &worker, &[bulk(3)]).await;

    // Another organisation sees nothing, and a mailbox id of this one is not found there.
    let other = app.create_org(0).await;
    assert!(emails_seen(&app, &other.admin_token).await.is_empty());
    let workers = list(
        &app,
        &t.org.admin_token,
        mpb::ListMailboxesRequest {
            filter: format!("owner_user_id = \"{}\"", t.worker.id),
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .mailboxes;
    let worker_box = workers[0].id.clone();
    let err = app
        .mailboxes()
        .get_mailbox(authed(
            &other.admin_token,
            mpb::GetMailboxRequest {
                id: worker_box.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    // …nor by a colleague outside the chain of supervision, in the same words.
    let side = sign_in(&app, &t.side_head).await;
    let err2 = app
        .mailboxes()
        .get_mailbox(authed(
            &side,
            mpb::GetMailboxRequest {
                id: worker_box.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err2.code(), Code::NotFound);
    assert_eq!(err.message(), err2.message());

    // A supervisor sees the subordinate's mailbox but changes nothing.
    let got = app
        .mailboxes()
        .get_mailbox(authed(
            &lead,
            mpb::GetMailboxRequest {
                id: worker_box.clone(),
            },
        ))
        .await
        .expect("a supervisor views a subordinate's mailbox")
        .into_inner();
    assert_eq!(got.owner_user_id, t.worker.id);
    let update = mpb::UpdateMailboxRequest {
        mailbox: Some(mpb::Mailbox {
            id: worker_box.clone(),
            name: "Renamed".into(),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["name".into()],
        }),
        password: String::new(),
    };
    let err = app
        .mailboxes()
        .update_mailbox(authed(&lead, update.clone()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    for refused in [
        app.mailboxes()
            .disconnect_mailbox(authed(
                &lead,
                mpb::DisconnectMailboxRequest {
                    id: worker_box.clone(),
                },
            ))
            .await
            .map(|_| ()),
        app.mailboxes()
            .sync_mailbox_now(authed(
                &lead,
                mpb::SyncMailboxNowRequest {
                    id: worker_box.clone(),
                },
            ))
            .await
            .map(|_| ()),
    ] {
        assert_eq!(refused.unwrap_err().code(), Code::PermissionDenied);
    }
    // The owner changes their own; connecting for someone else takes more than supervising.
    app.mailboxes()
        .update_mailbox(authed(&worker, update))
        .await
        .expect("the owner renames");
    let err = connect(&app, &lead, &bulk(6), &t.worker.id)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    // The worker moves to Side: the lead no longer sees them, Side's head does.
    app.identity
        .clone()
        .update_user(authed(
            &t.org.admin_token,
            pb::UpdateUserRequest {
                user: Some(pb::User {
                    id: t.worker.id.clone(),
                    department_id: t.side.id.clone(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["department_id".into()],
                }),
            },
        ))
        .await
        .expect("move the worker");
    until_sees(&app, &lead, &[bulk(2)]).await;
    until_sees(&app, &side, &[bulk(3), bulk(4)]).await;

    // Narrowing the Supervisor role narrows the list: heads see their own only.
    let supervisor = app
        .access()
        .list_roles(authed(&t.org.admin_token, apb::ListRolesRequest::default()))
        .await
        .expect("list roles")
        .into_inner()
        .roles
        .into_iter()
        .find(|r| r.kind == apb::RoleKind::Supervisor as i32)
        .expect("the default Supervisor role");
    app.access()
        .update_role(authed(
            &t.org.admin_token,
            apb::UpdateRoleRequest {
                role: Some(apb::Role {
                    id: supervisor.id.clone(),
                    permissions: Some(apb::RolePermissions {
                        view_mailbox_list: apb::Scope::Own as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["permissions.view_mailbox_list".into()],
                }),
            },
        ))
        .await
        .expect("narrow the Supervisor's list to their own");
    until_sees(&app, &boss, &[bulk(1)]).await;
    until_sees(&app, &t.org.admin_token, &all).await;
}

#[tokio::test]
async fn the_list_filters_on_every_column_sorts_stably_and_pages_with_tamper_proof_tokens() {
    let app = spawn_app_with_mailboxes().await;
    let org = app.create_org(0).await;
    connect_when_known(&app, &org.admin_token, &bulk(1), "").await;
    let results = app
        .mailboxes()
        .connect_mailboxes(authed(
            &org.admin_token,
            mpb::ConnectMailboxesRequest {
                imap: Some(imap()),
                smtp: Some(smtp()),
                mailboxes: (2..=6)
                    .map(|n| mpb::MailboxCredentials {
                        email: bulk(n),
                        password: BULK_PASSWORD.into(),
                        name: if n % 2 == 0 {
                            "Backup mailbox".into()
                        } else {
                            "Sales".into()
                        },
                        sender_name: format!("Sender {n}"),
                        ..Default::default()
                    })
                    .collect(),
                validate_only: false,
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .results;
    assert!(results.iter().all(|r| r.mailbox.is_some()), "{results:?}");
    until_listable(&app, &org.admin_token).await;
    // What the sync service will fill in: sizes, unread counts, last sync times, the CRM flag.
    sqlx::query(
        "UPDATE mailboxes.mailboxes SET disk_bytes = (substr(email, 4, 2)::int * 50) * 1048576, \
            unread_count = substr(email, 4, 2)::int, in_crm = substr(email, 4, 2)::int % 2 = 1, \
            last_sync_time = CASE WHEN email = 'box06@bulk.test' THEN '-infinity'::timestamptz \
                ELSE now() - make_interval(days => substr(email, 4, 2)::int * 3) END",
    )
    .execute(&app.pool)
    .await
    .expect("counters as sync would set them");

    let emails = |r: &mpb::ListMailboxesResponse| {
        r.mailboxes
            .iter()
            .map(|m| m.email.clone())
            .collect::<Vec<_>>()
    };
    let query = |filter: &str, order: &str| mpb::ListMailboxesRequest {
        filter: filter.into(),
        order_by: order.into(),
        page_size: 50,
        ..Default::default()
    };
    let cases = [
        (r#"email : "BOX0""#, "email", vec![1, 2, 3, 4, 5, 6]),
        (r#"name = "backup mailbox""#, "email", vec![2, 4, 6]),
        (
            "in_crm = true AND disk_mb > 100",
            "disk_mb desc",
            vec![5, 3],
        ),
        ("disk_mb >= 100 AND disk_mb <= 200", "email", vec![2, 3, 4]),
        ("days_since_sync > 10", "email", vec![4, 5, 6]),
        (
            r#"sender_name : "sender 5" OR unread_count = 1"#,
            "email",
            vec![1, 5],
        ),
        (
            r#"NOT name : "sales""#,
            "unread_count desc",
            vec![6, 4, 2, 1],
        ),
        (
            "sync_state = PENDING AND owner_dismissed = false",
            "email desc",
            vec![6, 5, 4, 3, 2, 1],
        ),
        (r#"owner = "admin""#, "email", vec![1, 2, 3, 4, 5, 6]),
    ];
    for (filter, order, expected) in cases {
        let got = list(&app, &org.admin_token, query(filter, order))
            .await
            .unwrap_or_else(|s| panic!("{filter}: {s:?}"));
        let want: Vec<String> = expected.iter().map(|n| bulk(*n)).collect();
        assert_eq!(emails(&got), want, "{filter} / {order}");
        assert_eq!(got.total_size as usize, want.len(), "{filter}");
    }
    let since = list(
        &app,
        &org.admin_token,
        query(
            &format!(
                "last_sync_time > \"{}\"",
                (chrono::Utc::now() - chrono::Duration::days(8)).to_rfc3339()
            ),
            "last_sync_time",
        ),
    )
    .await
    .unwrap();
    assert_eq!(emails(&since), vec![bulk(2), bulk(1)]);
    assert!(since.mailboxes[0].last_sync_time.is_some());

    // Pages of two, sorted on a column with ties (names), stable and complete.
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = list(
            &app,
            &org.admin_token,
            mpb::ListMailboxesRequest {
                order_by: "name".into(),
                page_size: 2,
                page_token: token.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(page.total_size, 6);
        seen.extend(emails(&page));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    // Backup mailbox ×3, Sales ×2, Work mailbox; ties in id order, exactly as one big page.
    let whole = list(
        &app,
        &org.admin_token,
        mpb::ListMailboxesRequest {
            order_by: "name".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(seen, emails(&whole));
    let mut groups: Vec<Vec<String>> =
        vec![seen[..3].to_vec(), seen[3..5].to_vec(), seen[5..].to_vec()];
    groups.iter_mut().for_each(|g| g.sort());
    assert_eq!(
        groups,
        vec![
            vec![bulk(2), bulk(4), bulk(6)],
            vec![bulk(3), bulk(5)],
            vec![bulk(1)]
        ]
    );
    let ids: Vec<String> = whole.mailboxes[..3].iter().map(|m| m.id.clone()).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ties are broken by id: {ids:?}"
    );

    // A token is bound to its query and cannot be edited.
    let first = list(
        &app,
        &org.admin_token,
        mpb::ListMailboxesRequest {
            order_by: "name".into(),
            page_size: 2,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let other_query = list(
        &app,
        &org.admin_token,
        mpb::ListMailboxesRequest {
            order_by: "email".into(),
            page_size: 2,
            page_token: first.next_page_token.clone(),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(other_query.code(), Code::InvalidArgument);
    let (body, tag) = first.next_page_token.split_once('.').unwrap();
    let mut forged = body.to_owned();
    forged.replace_range(0..1, if body.starts_with('e') { "f" } else { "e" });
    let tampered = list(
        &app,
        &org.admin_token,
        mpb::ListMailboxesRequest {
            order_by: "name".into(),
            page_size: 2,
            page_token: format!("{forged}.{tag}"),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(tampered.code(), Code::InvalidArgument);
    // …nor used by someone else.
    let other = app.create_org(0).await;
    let stolen = list(
        &app,
        &other.admin_token,
        mpb::ListMailboxesRequest {
            order_by: "name".into(),
            page_size: 2,
            page_token: first.next_page_token,
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(stolen.code(), Code::InvalidArgument);

    // Malformed filters name the position.
    for (filter, at) in [
        (r#"email : "a" AND colour = 1"#, 16),
        ("disk_mb > ", 10),
        ("(in_crm = true", 14),
    ] {
        let err = list(&app, &org.admin_token, query(filter, ""))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{filter}");
        assert!(
            err.message().contains(&format!("character {at}")),
            "{filter}: {}",
            err.message()
        );
    }
    let err = list(&app, &org.admin_token, query("", "password"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    // The read mask fills only the chosen columns.
    let masked = list(
        &app,
        &org.admin_token,
        mpb::ListMailboxesRequest {
            read_mask: Some(prost_types::FieldMask {
                paths: vec!["email".into(), "disk_mb".into()],
            }),
            order_by: "email".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let m = &masked.mailboxes[0];
    assert!(!m.id.is_empty() && m.email == bulk(1) && m.disk_mb == 50.0);
    assert!(
        m.name.is_empty()
            && m.owner_user_id.is_empty()
            && m.imap.is_none()
            && m.access_by_user_ids.is_empty()
    );
    let with_access = list(
        &app,
        &org.admin_token,
        mpb::ListMailboxesRequest {
            read_mask: Some(prost_types::FieldMask {
                paths: vec!["access_by".into()],
            }),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(
        with_access
            .mailboxes
            .iter()
            .all(|m| m.access_by_user_ids == vec![org.admin_id.clone()]),
        "{:?} (admin {})",
        with_access
            .mailboxes
            .iter()
            .map(|m| &m.access_by_user_ids)
            .collect::<Vec<_>>(),
        org.admin_id
    );

    // Beyond 1,000 matches the total is PostgreSQL's estimate, and says so.
    sqlx::query(
        "INSERT INTO mailboxes.mailboxes (id, org_id, owner_user_id, email, imap_host, imap_port, imap_security, imap_username, \
            smtp_host, smtp_port, smtp_security, smtp_username, password_sealed, password_key) \
         SELECT gen_random_uuid(), org_id, owner_user_id, 'filler' || n || '@bulk.test', imap_host, imap_port, imap_security, imap_username, \
            smtp_host, smtp_port, smtp_security, smtp_username, password_sealed, password_key \
         FROM mailboxes.mailboxes, generate_series(1, 1200) AS n WHERE email = 'box01@bulk.test'",
    )
    .execute(&app.pool)
    .await
    .expect("filler rows");
    sqlx::query("ANALYZE mailboxes.mailboxes")
        .execute(&app.pool)
        .await
        .expect("analyze");
    let many = list(&app, &org.admin_token, query("", "email"))
        .await
        .unwrap();
    assert!(many.total_size_is_estimate, "{} exact?", many.total_size);
    assert!(many.total_size > 1000, "{}", many.total_size);
    let few = list(
        &app,
        &org.admin_token,
        query(r#"name = "backup mailbox""#, "email"),
    )
    .await
    .unwrap();
    assert!(!few.total_size_is_estimate);
    assert_eq!(few.total_size, 3);
}

#[tokio::test]
async fn list_views_are_saved_per_user_and_shape_the_list() {
    let app = spawn_app_with_mailboxes().await;
    let org = app.create_org(0).await;
    connect_when_known(&app, &org.admin_token, &bulk(1), "").await;
    until_listable(&app, &org.admin_token).await;
    let default = app
        .mailboxes()
        .get_list_view(authed(&org.admin_token, mpb::GetListViewRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert!(default.columns.contains(&"email".to_owned()));
    let saved = app
        .mailboxes()
        .update_list_view(authed(
            &org.admin_token,
            mpb::UpdateListViewRequest {
                view: Some(mpb::ListView {
                    columns: vec!["employee".into(), "email".into(), "last_sync_time".into()],
                    filter: "in_crm = false".into(),
                    order_by: "last_sync_time desc".into(),
                    page_size: 25,
                }),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let again = app
        .mailboxes()
        .get_list_view(authed(&org.admin_token, mpb::GetListViewRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(saved, again);
    // Without a read mask the list fills the saved columns only.
    let listed = list(&app, &org.admin_token, mpb::ListMailboxesRequest::default())
        .await
        .unwrap();
    let m = &listed.mailboxes[0];
    assert_eq!(m.email, bulk(1));
    assert_eq!(m.owner_display_name, "Ada Admin");
    assert!(m.name.is_empty() && m.crm.is_none(), "{m:?}");
    for bad in [
        mpb::ListView {
            columns: vec!["colour".into()],
            ..Default::default()
        },
        mpb::ListView {
            filter: "disk_mb >".into(),
            ..Default::default()
        },
        mpb::ListView {
            order_by: "password".into(),
            ..Default::default()
        },
        mpb::ListView {
            columns: vec!["email".into(), "email".into()],
            ..Default::default()
        },
        mpb::ListView {
            page_size: 100_000,
            ..Default::default()
        },
    ] {
        let err = app
            .mailboxes()
            .update_list_view(authed(
                &org.admin_token,
                mpb::UpdateListViewRequest {
                    view: Some(bad.clone()),
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{bad:?}");
    }
}
