//! Another organisation's objects look exactly like objects that do not exist: for every RPC
//! that takes an id, an admin naming another organisation's user, department or mailbox gets
//! the same code and the same message (the id aside) as for an id nobody has.

use futures::future::BoxFuture;
use mailroom_tests::access::{object, on_mailbox, user};
use mailroom_tests::{access_pb as apb, authed, identity_pb as pb, spawn_app_with_access};
use tonic::Status;

type Probe<'a> = Box<dyn Fn(String) -> BoxFuture<'a, Status> + 'a>;

/// Calls `probe` with `theirs` (another organisation's id) and with an id nobody has, and
/// asserts both answers are the same once the id is blanked out.
async fn same_as_unknown(name: &str, probe: &Probe<'_>, theirs: &str) {
    let nobody = uuid::Uuid::now_v7().to_string();
    let foreign = probe(theirs.to_owned()).await;
    let unknown = probe(nobody.clone()).await;
    assert_eq!(
        (foreign.code(), foreign.message().replace(theirs, "<id>")),
        (unknown.code(), unknown.message().replace(&nobody, "<id>")),
        "{name}: another organisation's id is answered differently from an unknown one"
    );
}

fn mask(paths: &[&str]) -> Option<prost_types::FieldMask> {
    Some(prost_types::FieldMask {
        paths: paths.iter().map(|p| (*p).to_owned()).collect(),
    })
}

/// A probe: `client.method(authed(token, request))` for an id, its failure as the answer.
macro_rules! probe {
    ($client:expr, $token:expr, |$id:ident| $method:ident($request:expr)) => {
        Box::new(|$id: String| {
            let mut client = $client.clone();
            let request = authed(&$token, $request);
            Box::pin(async move { failure(client.$method(request)).await })
        })
    };
}

async fn failure<T>(call: impl std::future::Future<Output = Result<T, Status>>) -> Status {
    match call.await {
        Ok(_) => Status::ok("the call succeeded"),
        Err(status) => status,
    }
}

#[tokio::test]
async fn identity_answers_another_organisations_ids_as_unknown_ones() {
    let app = spawn_app_with_access().await;
    let ours = app.create_org(0).await;
    let theirs = app.create_org(0).await;
    let their_user = app.create_user(&theirs, "tess", "").await;
    let their_department = app.create_department(&theirs, "Sales", "", "").await;
    let token = ours.admin_token.clone();
    let (identity, auth) = (app.identity.clone(), app.auth.clone());
    let probe_login = ours.address("probe");

    let users: Vec<(&str, Probe)> = vec![
        (
            "GetUser",
            probe!(identity, token, |id| get_user(pb::GetUserRequest { id })),
        ),
        (
            "UpdateUser",
            probe!(identity, token, |id| update_user(pb::UpdateUserRequest {
                user: Some(pb::User {
                    id,
                    position: "x".into(),
                    ..Default::default()
                }),
                update_mask: mask(&["position"]),
            })),
        ),
        (
            "DismissUser",
            probe!(identity, token, |id| dismiss_user(pb::DismissUserRequest {
                id
            })),
        ),
        (
            "RehireUser",
            probe!(identity, token, |id| rehire_user(pb::RehireUserRequest {
                id
            })),
        ),
        (
            "SetAdmin",
            probe!(identity, token, |id| set_admin(pb::SetAdminRequest {
                id,
                admin: true
            })),
        ),
        (
            "ListSupervisors",
            probe!(identity, token, |id| list_supervisors(
                pb::ListSupervisorsRequest { user_id: id }
            )),
        ),
        (
            "ListSubordinates",
            probe!(identity, token, |id| list_subordinates(
                pb::ListSubordinatesRequest {
                    user_id: id,
                    ..Default::default()
                }
            )),
        ),
        (
            "SendPasswordResetLink",
            probe!(identity, token, |id| send_password_reset_link(
                pb::SendPasswordResetLinkRequest { user_id: id }
            )),
        ),
        (
            "SignOutEverywhere",
            probe!(auth, token, |id| sign_out_everywhere(
                pb::SignOutEverywhereRequest { user_id: id }
            )),
        ),
        (
            "CreateDepartment(head)",
            probe!(identity, token, |id| create_department(
                pb::CreateDepartmentRequest {
                    department: Some(pb::Department {
                        name: "Probe".into(),
                        head_user_id: id,
                        ..Default::default()
                    }),
                }
            )),
        ),
    ];
    for (name, probe) in &users {
        same_as_unknown(name, probe, &their_user.id).await;
    }

    let departments: Vec<(&str, Probe)> = vec![
        (
            "GetDepartment",
            probe!(identity, token, |id| get_department(
                pb::GetDepartmentRequest { id }
            )),
        ),
        (
            "UpdateDepartment",
            probe!(identity, token, |id| update_department(
                pb::UpdateDepartmentRequest {
                    department: Some(pb::Department {
                        id,
                        name: "Renamed".into(),
                        ..Default::default()
                    }),
                    update_mask: mask(&["name"]),
                }
            )),
        ),
        (
            "DeleteDepartment",
            probe!(identity, token, |id| delete_department(
                pb::DeleteDepartmentRequest { id }
            )),
        ),
        (
            "CreateUser(department)",
            probe!(identity, token, |id| create_user(pb::CreateUserRequest {
                user: Some(pb::User {
                    login_email: probe_login.clone(),
                    department_id: id,
                    ..Default::default()
                }),
                password: mailroom_tests::PASSWORD.into(),
            })),
        ),
        (
            "CreateDepartment(parent)",
            probe!(identity, token, |id| create_department(
                pb::CreateDepartmentRequest {
                    department: Some(pb::Department {
                        name: "Probe".into(),
                        parent_id: id,
                        ..Default::default()
                    }),
                }
            )),
        ),
    ];
    for (name, probe) in &departments {
        same_as_unknown(name, probe, &their_department.id).await;
    }

    let org: Probe = probe!(identity, token, |id| get_organization(
        pb::GetOrganizationRequest { org_id: id }
    ));
    same_as_unknown("GetOrganization", &org, &theirs.id).await;
}

#[tokio::test]
async fn access_answers_another_organisations_mailboxes_and_users_as_unknown_ones() {
    let app = spawn_app_with_access().await;
    let ours = app.create_org(0).await;
    let theirs = app.create_org(0).await;
    let their_owner = app.create_user(&theirs, "tess", "").await;
    let service = app.service_token().await;
    let their_mailbox = uuid::Uuid::now_v7().to_string();
    app.write_when_known(
        &service,
        vec![on_mailbox(&their_mailbox, "owner", &their_owner.id)],
    )
    .await;
    // Our own people and mailbox are known to access before probing.
    let our_user = app.create_user(&ours, "otto", "").await;
    let our_mailbox = uuid::Uuid::now_v7().to_string();
    app.write_when_known(
        &service,
        vec![on_mailbox(&our_mailbox, "owner", &our_user.id)],
    )
    .await;
    let token = ours.admin_token.clone();
    let admin = ours.admin_id.clone();
    let access = app.access();

    let mailboxes: Vec<(&str, Probe)> = vec![
        (
            "WriteRelationships(reader)",
            probe!(access, token, |id| write_relationships(
                apb::WriteRelationshipsRequest {
                    relationships: vec![on_mailbox(&id, "reader", &admin)],
                }
            )),
        ),
        (
            "DeleteRelationships(reader)",
            probe!(access, token, |id| delete_relationships(
                apb::DeleteRelationshipsRequest {
                    relationships: vec![on_mailbox(&id, "reader", &admin)],
                }
            )),
        ),
        (
            "LookupSubjects",
            probe!(access, token, |id| lookup_subjects(
                apb::LookupSubjectsRequest {
                    resource: object("mailbox", &id),
                    permission: "mailbox.read_mail".into(),
                    subject_type: "user".into(),
                    at_least_as_fresh_as: None,
                    page_size: 0,
                    page_token: String::new(),
                }
            )),
        ),
    ];
    for (name, probe) in &mailboxes {
        same_as_unknown(name, probe, &their_mailbox).await;
    }
    // A check about another organisation's mailbox says what it says of a mailbox nobody has.
    let check = |id: String| {
        let (token, admin) = (token.clone(), admin.clone());
        let app = &app;
        async move {
            app.check(
                &token,
                apb::CheckRequest {
                    subject: user(&admin),
                    permission: "mailbox.view".into(),
                    resource: object("mailbox", &id),
                    at_least_as_fresh_as: None,
                    explain: true,
                },
            )
            .await
            .expect("check")
        }
    };
    let foreign = check(their_mailbox.clone()).await;
    let unknown = check(uuid::Uuid::now_v7().to_string()).await;
    assert_eq!(foreign.allowed, unknown.allowed);
    assert_eq!(foreign.reason, unknown.reason);
    assert_eq!(foreign.path, unknown.path);

    let users: Vec<(&str, Probe)> = vec![
        (
            "LookupResources",
            probe!(access, token, |id| lookup_resources(
                apb::LookupResourcesRequest {
                    subject: user(&id),
                    permission: "mailbox.view".into(),
                    resource_type: "mailbox".into(),
                    ..Default::default()
                }
            )),
        ),
        (
            "Check(subject)",
            probe!(access, token, |id| check(apb::CheckRequest {
                subject: user(&id),
                permission: "mailbox.view".into(),
                resource: object("mailbox", &our_mailbox),
                at_least_as_fresh_as: None,
                explain: false,
            })),
        ),
        (
            "WriteRelationships(reader user)",
            probe!(access, token, |id| write_relationships(
                apb::WriteRelationshipsRequest {
                    relationships: vec![on_mailbox(&our_mailbox, "reader", &id)],
                }
            )),
        ),
    ];
    for (name, probe) in &users {
        same_as_unknown(name, probe, &their_owner.id).await;
    }
}
