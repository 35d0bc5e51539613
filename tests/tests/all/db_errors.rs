//! Database errors mean the same in every service, by SQLSTATE (issue 20, item 10): a value
//! PostgreSQL refuses is the caller's INVALID_ARGUMENT, a duplicate made by a concurrent call
//! is ALREADY_EXISTS, a reference a concurrent call removed is FAILED_PRECONDITION, a
//! serialization failure or deadlock is ABORTED (retry), and only the rest is INTERNAL.

use mailroom_platform::error::{db_kind, db_message, ErrorKind};
use mailroom_tests::identity_pb as pb;
use mailroom_tests::{authed, spawn_app};
use tonic::Code;

/// Real PostgreSQL errors, one per SQLSTATE class, sorted as a caller should see them.
#[tokio::test]
async fn real_postgresql_errors_are_sorted_by_their_sqlstate() {
    let app = spawn_app().await;
    let raise =
        |code: &str| format!("DO $$ BEGIN RAISE EXCEPTION 'x' USING ERRCODE = '{code}'; END $$");
    let nul = sqlx::query("SELECT $1::text")
        .bind("a\0b")
        .execute(&app.pool)
        .await
        .unwrap_err();
    assert_eq!(db_kind(&nul), ErrorKind::InvalidArgument, "{nul}");
    assert!(db_message(&nul).contains("NUL"), "{}", db_message(&nul));
    let not_a_number = sqlx::query("SELECT 'twelve'::int")
        .execute(&app.pool)
        .await
        .unwrap_err();
    assert_eq!(db_kind(&not_a_number), ErrorKind::InvalidArgument);
    for (code, kind) in [
        ("23505", ErrorKind::AlreadyExists),
        ("23503", ErrorKind::FailedPrecondition),
        ("23514", ErrorKind::InvalidArgument),
        ("40001", ErrorKind::Aborted),
        ("40P01", ErrorKind::Aborted),
        ("53300", ErrorKind::Unavailable),
        ("57014", ErrorKind::Unavailable),
        ("42P01", ErrorKind::Internal),
        ("XX000", ErrorKind::Internal),
    ] {
        let err = sqlx::query(&raise(code))
            .execute(&app.pool)
            .await
            .unwrap_err();
        assert_eq!(db_kind(&err), kind, "SQLSTATE {code}");
        if kind != ErrorKind::Internal {
            assert!(
                db_message(&err).contains("retry") || db_message(&err).contains("unavailable"),
                "{code}: {}",
                db_message(&err)
            );
        }
    }
}

/// Concurrent sign-ups of one address: one wins, the others are told it exists; before the
/// classification the losers' unique violations were INTERNAL.
#[tokio::test]
async fn concurrent_creations_of_one_address_are_one_success_and_already_exists() {
    let app = spawn_app().await;
    let org = app.create_org(0).await;
    let address = org.address("twin");
    let attempts = (0..8).map(|_| app.try_create_user(&org, &address, ""));
    let results = futures::future::join_all(attempts).await;
    let created = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(created, 1, "{results:?}");
    for status in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
    }
}

/// Moving people into a department while it is deleted: each call either succeeds or says
/// what to do; none is INTERNAL.
#[tokio::test]
async fn moving_a_user_into_a_department_being_deleted_is_never_internal() {
    let app = spawn_app().await;
    let org = app.create_org(0).await;
    let user = app.create_user(&org, "mover", "").await;
    let mut identity = app.identity.clone();
    for round in 0..10 {
        let department = app
            .create_department(&org, &format!("Short-lived {round}"), "", "")
            .await;
        let mut moving = identity.clone();
        let (moved, deleted) = tokio::join!(
            moving.update_user(authed(
                &org.admin_token,
                pb::UpdateUserRequest {
                    user: Some(pb::User {
                        id: user.id.clone(),
                        department_id: department.id.clone(),
                        ..Default::default()
                    }),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["department_id".into()],
                    }),
                },
            )),
            identity.delete_department(authed(
                &org.admin_token,
                pb::DeleteDepartmentRequest {
                    id: department.id.clone(),
                },
            )),
        );
        for status in [moved.err(), deleted.err()].into_iter().flatten() {
            assert_ne!(status.code(), Code::Internal, "round {round}: {status:?}");
            assert_ne!(status.code(), Code::Unknown, "round {round}: {status:?}");
        }
        // Put the user back outside any department for the next round.
        let _ = identity
            .update_user(authed(
                &org.admin_token,
                pb::UpdateUserRequest {
                    user: Some(pb::User {
                        id: user.id.clone(),
                        department_id: String::new(),
                        ..Default::default()
                    }),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["department_id".into()],
                    }),
                },
            ))
            .await;
    }
}
