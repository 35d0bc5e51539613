//! Identity's people, departments and mailboxes reaching the graph through Kafka, and what they let
//! read.

use super::*;

#[tokio::test]
async fn supervision_follows_identity_and_a_move_re_parents_it() {
    let app = spawn_app_with_access().await;
    let o = org(&app).await;
    app.eventually(&o.ceo.id, "mailbox.view", &o.mailbox, true)
        .await;
    // East's head arrives in an event of its own, maybe after the chain the CEO's view needs.
    app.eventually(&o.east_head.id, "mailbox.view", &o.mailbox, true)
        .await;
    assert!(!app.can(&o.other_head.id, "mailbox.view", &o.mailbox).await);
    assert!(
        !app.can(&o.ceo.id, "mailbox.modify", &o.mailbox).await,
        "supervisors change nothing"
    );
    assert!(!app.can(&o.peer.id, "mailbox.view", &o.mailbox).await);

    // Move East under Other in identity: the CEO loses it, Other's head gains it.
    app.identity
        .clone()
        .update_department(authed(
            &o.org.admin_token,
            pb::UpdateDepartmentRequest {
                department: Some(pb::Department {
                    id: o.east.id.clone(),
                    parent_id: o.other.id.clone(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["parent_id".into()],
                }),
            },
        ))
        .await
        .expect("move East");
    app.eventually(&o.other_head.id, "mailbox.view", &o.mailbox, true)
        .await;
    assert!(!app.can(&o.ceo.id, "mailbox.view", &o.mailbox).await);
    assert!(
        app.can(&o.east_head.id, "mailbox.view", &o.mailbox).await,
        "the direct head stays"
    );

    // Dismissing a user takes every permission away, even on their own mailbox.
    app.identity
        .clone()
        .dismiss_user(authed(
            &o.org.admin_token,
            pb::DismissUserRequest {
                id: o.owner.id.clone(),
            },
        ))
        .await
        .expect("dismiss");
    app.eventually(&o.owner.id, "mailbox.view", &o.mailbox, false)
        .await;
    assert!(!app.can(&o.owner.id, "mailbox.read_mail", &o.mailbox).await);
}

#[tokio::test]
async fn a_mailbox_belongs_to_one_organisation_and_read_access_needs_its_owner() {
    use mailroom_access::error::AccessError;
    use mailroom_access::store::Writer;
    use mailroom_access::Relationship;
    use mailroom_platform::types::{MailboxId, OrgId, UserId};

    let app = spawn_app_with_access().await;
    let o = org(&app).await;
    app.eventually(&o.ceo.id, "mailbox.view", &o.mailbox, true)
        .await;
    let service = app.service_token().await;
    let write = |rel: apb::Relationship| {
        let mut access = app.access();
        let service = service.clone();
        async move {
            access
                .write_relationships(authed(
                    &service,
                    apb::WriteRelationshipsRequest {
                        relationships: vec![rel],
                    },
                ))
                .await
        }
    };

    // Read access to a mailbox nobody owns yet is refused: it would bind the mailbox to
    // whichever organisation wrote first. It is answered as a mailbox that is not there.
    let unowned = uuid::Uuid::new_v4().to_string();
    let unowned_err = write(on_mailbox(&unowned, "reader", &o.ceo.id))
        .await
        .unwrap_err();
    assert_eq!(unowned_err.code(), Code::NotFound, "{unowned_err:?}");
    assert!(
        unowned_err.message().starts_with("relationships[0]: "),
        "{}",
        unowned_err.message()
    );

    // Another organisation cannot take the mailbox, through the API or past it.
    let stranger = app.create_org(0).await;
    for relation in ["owner", "reader"] {
        // Until access hears of the stranger from identity it answers UNAVAILABLE; then,
        // not found.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let err = loop {
            let err = write(on_mailbox(&o.mailbox, relation, &stranger.admin_id))
                .await
                .unwrap_err();
            if err.code() != Code::Unavailable || std::time::Instant::now() > deadline {
                break err;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(err.code(), Code::NotFound, "{relation}: {err:?}");
        // Exactly the answer for a mailbox that does not exist.
        assert_eq!(
            err.message().replace(&o.mailbox, "<mailbox>"),
            unowned_err.message().replace(&unowned, "<mailbox>"),
            "{relation}"
        );
    }
    let pool = access_pool(&app).await;
    let mailbox: MailboxId = o.mailbox.parse().expect("uuid");
    let stranger_org: OrgId = stranger.id.parse().expect("uuid");
    let stranger_admin: UserId = stranger.admin_id.parse().expect("uuid");
    for rel in [
        Relationship::Owner(mailbox, stranger_admin),
        Relationship::Reader(mailbox, stranger_admin),
    ] {
        let mut tx = pool.begin().await.expect("tx");
        let mut w = Writer::begin(&mut tx, stranger_org).await.expect("writer");
        let refused = w.write(rel).await;
        assert!(
            matches!(refused, Err(AccessError::NotFound(_))),
            "{rel:?}: {refused:?}"
        );
    }
    let asked = app
        .check(
            &service,
            request(
                &stranger.admin_id,
                "mailbox.view",
                object("mailbox", &o.mailbox),
                None,
            ),
        )
        .await
        .expect("check");
    assert!(!asked.allowed, "another organisation's admin sees nothing");

    // Even a row that names the mailbox from another organisation (left from before writers
    // checked) grants nothing there: a replica takes the mailbox's organisation from its
    // binding, and a check refuses a mailbox outside the user's organisation.
    sqlx::query(
        "INSERT INTO relationships (org_id, kind, object_id, subject_id) VALUES ($1, 'owner', $2, $3)",
    )
    .bind(stranger_org)
    .bind(mailbox)
    .bind(stranger_admin)
    .execute(&pool)
    .await
    .expect("a stray row");
    let fresh = loaded_access(&app).await;
    let service_principal = mailroom_platform::auth::Principal::Service {
        name: "test".into(),
    };
    for permission in ["mailbox.view", "mailbox.read_mail"] {
        let asked = fresh
            .check(
                &service_principal,
                request(
                    &stranger.admin_id,
                    permission,
                    object("mailbox", &o.mailbox),
                    None,
                ),
            )
            .await
            .expect("check");
        assert!(!asked.allowed, "{permission} through a stray row");
    }
    let owner_still = fresh
        .check(
            &service_principal,
            request(
                &o.owner.id,
                "mailbox.modify",
                object("mailbox", &o.mailbox),
                None,
            ),
        )
        .await
        .expect("check");
    assert!(owner_still.allowed, "the real owner keeps the mailbox");
}

#[tokio::test]
async fn identitys_invite_flag_is_the_everyone_invites_relationship() {
    let app = spawn_app_with_access().await;
    let pool = access_pool(&app).await;
    let org = mailroom_platform::types::OrgId::new();
    let handle = |payload: ev::envelope::Payload| {
        let pool = pool.clone();
        async move {
            let event = ev::Envelope {
                id: uuid::Uuid::now_v7().to_string(),
                r#type: mailroom_platform::outbox::payload_type(&payload).into(),
                org_id: org.to_string(),
                aggregate_id: org.to_string(),
                payload: Some(payload),
                ..Default::default()
            };
            let mut tx = pool.begin().await.expect("tx");
            IdentityEvents
                .handle(&mut tx, &event)
                .await
                .expect("handle");
            tx.commit().await.expect("commit");
        }
    };
    let updated = |name: &str, everyone: bool| {
        ev::envelope::Payload::OrganizationUpdated(ev::OrganizationUpdated {
            display_name: name.into(),
            allow_everyone_to_invite: everyone,
            ..Default::default()
        })
    };
    // Whether the organisation has the stored `org#inviter@org#member` row.
    let everyone_invites = || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, bool>(
                "SELECT EXISTS (SELECT 1 FROM relationships WHERE org_id = $1 AND kind = 'everyone_invites')",
            )
            .bind(org)
            .fetch_one(&pool)
            .await
            .expect("query")
        }
    };

    handle(ev::envelope::Payload::OrganizationCreated(
        ev::OrganizationCreated {
            display_name: "Acme".into(),
            allow_everyone_to_invite: true,
            ..Default::default()
        },
    ))
    .await;
    assert!(everyone_invites().await);
    // A rename keeps it; the flag turned off removes it, on brings it back.
    handle(updated("Acme Ltd", true)).await;
    assert!(everyone_invites().await, "a rename");
    handle(updated("Acme Ltd", false)).await;
    assert!(!everyone_invites().await);
    handle(updated("Acme Ltd", true)).await;
    assert!(everyone_invites().await);
    handle(updated("Acme Group", false)).await;
    assert!(!everyone_invites().await);
    // The organisation has its three default roles from its first event.
    let builtins: Vec<String> = sqlx::query_scalar(
        "SELECT builtin FROM roles WHERE org_id = $1 AND builtin IS NOT NULL ORDER BY builtin",
    )
    .bind(org)
    .fetch_all(&pool)
    .await
    .expect("roles");
    assert_eq!(builtins, ["administrator", "manager", "supervisor"]);
}

#[tokio::test]
async fn a_scope_asked_packed_names_the_same_owners_as_one_asked_as_strings() {
    let app = spawn_app_with_access().await;
    let o = org(&app).await;
    app.eventually(&o.ceo.id, "mailbox.view", &o.mailbox, true)
        .await;
    let service = app.service_token().await;
    let scope = |packed_ids: bool| {
        let mut access = app.access();
        let service = service.clone();
        let ceo = o.ceo.id.clone();
        async move {
            access
                .lookup_mailbox_scope(authed(
                    &service,
                    apb::LookupMailboxScopeRequest {
                        subject: user(&ceo),
                        permission: "mailbox.view".into(),
                        packed_ids,
                        ..Default::default()
                    },
                ))
                .await
                .expect("the CEO's scope")
                .into_inner()
        }
    };
    let strings = scope(false).await;
    let packed = scope(true).await;
    assert!(!strings.owner_user_ids.is_empty(), "{strings:?}");
    assert!(packed.owner_user_ids.is_empty(), "{packed:?}");
    assert_eq!(packed.packed_owner_user_ids.len() % 16, 0);
    let unpacked: Vec<String> = packed
        .packed_owner_user_ids
        .chunks_exact(16)
        .map(|b| uuid::Uuid::from_slice(b).expect("16 bytes").to_string())
        .collect();
    // Same people, same (sorted) order: the CEO and everyone under them, the owner too.
    assert_eq!(unpacked, strings.owner_user_ids);
    assert!(unpacked.contains(&o.owner.id), "{unpacked:?}");
    assert_eq!(packed.org_id, strings.org_id);
}
