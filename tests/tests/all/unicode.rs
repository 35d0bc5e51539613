//! Addresses and names cannot be spoofed with Unicode: look-alike forms are one claim,
//! invisible and bidi-control characters are refused, and rows stored before that are
//! normalised by a migration that reports, rather than merges, the look-alikes it finds.

use std::borrow::Cow;

use mailroom_tests::{authed, create_database, identity_pb as pb, spawn_app, StackEnv};
use secrecy::SecretString;
use sqlx::migrate::Migrator;
use tonic::Code;
use uuid::Uuid;

#[tokio::test]
async fn nfc_and_nfd_forms_of_an_address_are_one_claim() {
    let app = spawn_app().await;
    let org = app.create_org(0).await;
    let nfc = org.address("jos\u{e9}");
    let nfd = org.address("jose\u{301}");
    let jose = app.try_create_user(&org, &nfc, "").await.expect("create");
    let taken = app
        .try_create_user(&org, &nfd, "")
        .await
        .expect_err("the decomposed form is the same address");
    assert_eq!(taken.code(), Code::AlreadyExists, "{taken:?}");
    // Either form signs in, and usage finds the one claim.
    app.login(&nfd)
        .await
        .expect("sign in with the decomposed form");
    let usage = app
        .identity
        .clone()
        .get_email_address_usage(authed(
            &org.admin_token,
            pb::GetEmailAddressUsageRequest {
                address: nfd.clone(),
            },
        ))
        .await
        .expect("usage")
        .into_inner();
    assert!(usage.uses.iter().any(|u| u.user_id == jose.id), "{usage:?}");
}

#[tokio::test]
async fn invisible_and_direction_characters_are_refused_in_addresses_and_names() {
    let app = spawn_app().await;
    let org = app.create_org(0).await;
    for login in [
        org.address("ann\u{200b}"),
        org.address("ann\u{202e}"),
        format!("ann@{}\u{200d}", org.domain),
    ] {
        let refused = app
            .try_create_user(&org, &login, "")
            .await
            .expect_err("invisible character in an address");
        assert_eq!(refused.code(), Code::InvalidArgument, "{login:?}");
        assert!(refused.message().contains("U+"), "{}", refused.message());
    }
    for (field, value) in [
        ("first_name", "Ann\u{200b}"),
        ("last_name", "Lee\u{2067}"),
        ("position", "\u{202e}reganaM"),
    ] {
        let mut user = pb::User {
            login_email: org.address(&format!("ok-{field}")),
            first_name: "Ann".into(),
            last_name: "Lee".into(),
            ..Default::default()
        };
        match field {
            "first_name" => user.first_name = value.into(),
            "last_name" => user.last_name = value.into(),
            _ => user.position = value.into(),
        }
        let refused = app
            .identity
            .clone()
            .create_user(authed(
                &org.admin_token,
                pb::CreateUserRequest {
                    user: Some(user),
                    password: mailroom_tests::PASSWORD.into(),
                },
            ))
            .await
            .expect_err("invisible character in a name");
        assert_eq!(refused.code(), Code::InvalidArgument);
        assert!(refused.message().contains(field), "{}", refused.message());
    }
    let department = app
        .identity
        .clone()
        .create_department(authed(
            &org.admin_token,
            pb::CreateDepartmentRequest {
                department: Some(pb::Department {
                    name: "Sales\u{feff}".into(),
                    ..Default::default()
                }),
            },
        ))
        .await
        .expect_err("invisible character in a department name");
    assert_eq!(department.code(), Code::InvalidArgument);
    // A name in NFD is stored in NFC, with one kind of space.
    let created = app
        .identity
        .clone()
        .create_user(authed(
            &org.admin_token,
            pb::CreateUserRequest {
                user: Some(pb::User {
                    login_email: org.address("zoe"),
                    first_name: "Zoe\u{308}\u{a0}Ann".into(),
                    last_name: "Lee".into(),
                    ..Default::default()
                }),
                password: mailroom_tests::PASSWORD.into(),
            },
        ))
        .await
        .expect("a name with a combining mark")
        .into_inner();
    assert_eq!(created.first_name, "Zo\u{eb} Ann");
}

/// A migrator of identity's migrations before the normalisation (the platform's are run by
/// `db::migrate` with it).
fn identity_before_normalisation() -> Migrator {
    Migrator {
        migrations: Cow::Owned(
            mailroom_identity::MIGRATIONS
                .iter()
                .filter(|m| m.version < 1002)
                .cloned()
                .collect(),
        ),
        ..Migrator::DEFAULT
    }
}

#[tokio::test]
async fn the_migration_normalises_stored_rows_and_reports_look_alikes_without_merging() {
    let env = StackEnv::load();
    let url = SecretString::from(create_database(&env.database_url).await);
    let pool = mailroom_platform::db::connect(&url, mailroom_identity::SCHEMA, 2)
        .await
        .expect("connect");
    mailroom_platform::db::migrate(&pool, "identity", &identity_before_normalisation())
        .await
        .expect("the older migrations");

    let org = Uuid::now_v7();
    sqlx::query("INSERT INTO organizations (id, display_name) VALUES ($1, 'Acme\u{200b}')")
        .bind(org)
        .execute(&pool)
        .await
        .expect("org");
    let mut tx = pool.begin().await.expect("tx");
    // One address stored decomposed; a pair that are look-alikes of each other.
    let rows = [
        ("rene\u{301}@acme.test", "Rene\u{301}"),
        ("zoe@acme.test", "Zoe"),
        ("zo\u{eb}@acme.test", "Zo\u{eb}"),
        ("zoe\u{308}@acme.test", "Zoe\u{308}"),
    ];
    let mut ids = Vec::new();
    for (address, name) in rows {
        let id = Uuid::now_v7();
        ids.push(id);
        sqlx::query("INSERT INTO address_claims (org_id, address, user_id) VALUES ($1, $2, $3)")
            .bind(org)
            .bind(address)
            .bind(id)
            .execute(&mut *tx)
            .await
            .expect("claim");
        sqlx::query(
            "INSERT INTO users (id, org_id, state, login_email, contact_email, first_name) \
             VALUES ($1, $2, 'active', $3, $3, $4)",
        )
        .bind(id)
        .bind(org)
        .bind(address)
        .bind(name)
        .execute(&mut *tx)
        .await
        .expect("user");
    }
    tx.commit().await.expect("commit");

    mailroom_platform::db::migrate(&pool, "identity", &mailroom_identity::MIGRATIONS)
        .await
        .expect("the normalisation migration");

    let user = |id: Uuid| {
        let pool = pool.clone();
        async move {
            sqlx::query_as::<_, (String, String, String)>(
                "SELECT login_email, contact_email, first_name FROM users WHERE id = $1",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
            .expect("user")
        }
    };
    assert_eq!(
        user(ids[0]).await,
        (
            "ren\u{e9}@acme.test".into(),
            "ren\u{e9}@acme.test".into(),
            "Ren\u{e9}".into()
        )
    );
    // The look-alikes are left as they were and reported together.
    assert_eq!(user(ids[2]).await.0, "zo\u{eb}@acme.test");
    assert_eq!(user(ids[3]).await.0, "zoe\u{308}@acme.test");
    assert_eq!(user(ids[3]).await.2, "Zo\u{eb}", "names are normalised");
    let reported: Vec<(String, Vec<Uuid>)> = sqlx::query_as(
        "SELECT canonical, user_ids FROM address_normalisation_collisions WHERE org_id = $1",
    )
    .bind(org)
    .fetch_all(&pool)
    .await
    .expect("collisions");
    assert_eq!(reported.len(), 1, "{reported:?}");
    assert_eq!(reported[0].0, "zo\u{eb}@acme.test");
    let mut reported_ids = reported[0].1.clone();
    reported_ids.sort();
    let mut expected = vec![ids[2], ids[3]];
    expected.sort();
    assert_eq!(reported_ids, expected);
    let name: String = sqlx::query_scalar("SELECT display_name FROM organizations WHERE id = $1")
        .bind(org)
        .fetch_one(&pool)
        .await
        .expect("org");
    assert_eq!(name, "Acme");
}
