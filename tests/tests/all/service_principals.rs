//! Service principals are least privilege (issue 20, item 5), tried as the attacker holding a
//! stolen service credential: every service principal (each workload's own, `identity`'s and
//! `access`'s, and the operator's) against a representative set of each service's RPCs, with
//! real tokens from identity (`IssueServiceToken`, one audience per token). Each call is either
//! let through to the handler, or refused by the service's callers table with
//! PERMISSION_DENIED before any handler runs; and a token addressed to one service is refused
//! UNAUTHENTICATED by every other (a service cannot replay a token it was sent).
//!
//! The expected matrix is written out here on its own, as the specification; the services'
//! `callers.rs` tables are what it tests.

use futures::future::BoxFuture;
use mailroom_platform::auth::{OPERATOR, SERVICES};
use mailroom_proto::invitations::v1 as ipb;
use mailroom_tests::{
    access_pb as apb, authed, identity_pb as pb, mailboxes_pb as mpb, spawn_app_with,
    sync_pb as spb, AppOptions, TestApp, TEST_CLIENTS,
};
use tonic::{Code, Status};

type Call = Box<dyn Fn(String) -> BoxFuture<'static, Result<(), Status>>>;

/// One RPC of one service, with the service principals allowed to call it.
struct Rpc {
    service: &'static str,
    method: &'static str,
    allowed: &'static [&'static str],
    call: Call,
}

/// `Rpc { … }` for `client.$rpc(authed(token, $message))`.
macro_rules! rpc {
    ($service:literal, $method:literal, $allowed:expr, $client:expr, $rpc:ident, $message:expr) => {{
        let client = $client;
        Rpc {
            service: $service,
            method: $method,
            allowed: $allowed,
            call: Box::new(move |token: String| {
                let mut client = client.clone();
                let message = $message;
                Box::pin(async move { client.$rpc(authed(&token, message)).await.map(drop) })
            }),
        }
    }};
}

const NOBODY: &[&str] = &[];

fn some_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// The representative RPCs of each service, and who may call each (the deprecated settings
/// RPC included: still refused to every service).
#[allow(deprecated)]
fn matrix(app: &TestApp, org_id: &str, admin_id: &str) -> Vec<Rpc> {
    let (org, admin) = (org_id.to_owned(), admin_id.to_owned());
    let identity = app.identity.clone();
    let access = app.access();
    let mailboxes = app.mailboxes();
    let sync = app.sync();
    let invitations = app.invitations();
    let subject = move |id: &str| {
        Some(apb::SubjectRef {
            object: Some(apb::ObjectRef {
                r#type: "user".into(),
                id: id.to_owned(),
            }),
            relation: String::new(),
        })
    };
    let (a1, a2, a3, a4) = (admin.clone(), admin.clone(), admin.clone(), admin.clone());
    let (o1, o2, o3, o4, o5) = (
        org.clone(),
        org.clone(),
        org.clone(),
        org.clone(),
        org.clone(),
    );
    vec![
        // identity
        rpc!(
            "identity",
            "CreateOrganization",
            &[OPERATOR],
            identity.clone(),
            create_organization,
            {
                let domain = format!("p{}.test", &uuid::Uuid::new_v4().simple().to_string()[..12]);
                pb::CreateOrganizationRequest {
                    display_name: format!("Made by a service {domain}"),
                    seat_limit: 5,
                    settings: None,
                    first_admin: Some(pb::NewAdmin {
                        login_email: format!("boss@{domain}"),
                        first_name: "Mallory".into(),
                        last_name: "Boss".into(),
                        password: mailroom_tests::PASSWORD.into(),
                    }),
                }
            }
        ),
        rpc!(
            "identity",
            "GetOrganization",
            &["invitations", OPERATOR],
            identity.clone(),
            get_organization,
            pb::GetOrganizationRequest { org_id: o1.clone() }
        ),
        rpc!(
            "identity",
            "UpdateOrganization",
            &[OPERATOR],
            identity.clone(),
            update_organization,
            pb::UpdateOrganizationRequest {
                organization: Some(pb::Organization {
                    id: o2.clone(),
                    seat_limit: 1000,
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["seat_limit".into()],
                }),
            }
        ),
        rpc!(
            "identity",
            "AdmitInvitees",
            &["invitations"],
            identity.clone(),
            admit_invitees,
            pb::AdmitInviteesRequest {
                org_id: o3.clone(),
                ..Default::default()
            }
        ),
        rpc!(
            "identity",
            "ActivateInvitee",
            &["invitations"],
            identity.clone(),
            activate_invitee,
            pb::ActivateInviteeRequest {
                org_id: o4.clone(),
                user_id: some_id(),
                ..Default::default()
            }
        ),
        rpc!(
            "identity",
            "CreateUser",
            NOBODY,
            identity.clone(),
            create_user,
            pb::CreateUserRequest {
                user: Some(pb::User {
                    org_id: o5.clone(),
                    login_email: format!("planted-{}@example.com", some_id()),
                    first_name: "Planted".into(),
                    ..Default::default()
                }),
                password: mailroom_tests::PASSWORD.into(),
            }
        ),
        rpc!(
            "identity",
            "GetUser",
            NOBODY,
            identity.clone(),
            get_user,
            pb::GetUserRequest { id: a1.clone() }
        ),
        rpc!(
            "identity",
            "SetAdmin",
            NOBODY,
            identity.clone(),
            set_admin,
            pb::SetAdminRequest {
                id: a2.clone(),
                admin: false,
            }
        ),
        // access
        rpc!(
            "access",
            "Check",
            &["invitations", OPERATOR],
            access.clone(),
            check,
            apb::CheckRequest {
                subject: subject(&a3),
                permission: "org.invite".into(),
                resource: Some(apb::ObjectRef {
                    r#type: "org".into(),
                    id: some_id(),
                }),
                ..Default::default()
            }
        ),
        rpc!(
            "access",
            "LookupMailboxScope",
            &["mailboxes", "sync", OPERATOR],
            access.clone(),
            lookup_mailbox_scope,
            apb::LookupMailboxScopeRequest {
                subject: subject(&a4),
                permission: "mailbox.view".into(),
                ..Default::default()
            }
        ),
        rpc!(
            "access",
            "LookupSubjects",
            &["mailboxes", OPERATOR],
            access.clone(),
            lookup_subjects,
            apb::LookupSubjectsRequest {
                resource: Some(apb::ObjectRef {
                    r#type: "mailbox".into(),
                    id: some_id(),
                }),
                permission: "mailbox.read_mail".into(),
                subject_type: "user".into(),
                ..Default::default()
            }
        ),
        rpc!(
            "access",
            "WriteRelationships",
            &[OPERATOR],
            access.clone(),
            write_relationships,
            apb::WriteRelationshipsRequest {
                relationships: vec![apb::Relationship {
                    resource: Some(apb::ObjectRef {
                        r#type: "mailbox".into(),
                        id: some_id(),
                    }),
                    relation: "reader".into(),
                    subject: subject(&some_id()),
                }],
            }
        ),
        rpc!(
            "access",
            "ListRelationships",
            &[OPERATOR],
            access.clone(),
            list_relationships,
            apb::ListRelationshipsRequest::default()
        ),
        rpc!(
            "access",
            "ListRoles",
            &[OPERATOR],
            access.clone(),
            list_roles,
            apb::ListRolesRequest {
                org_id: org.clone(),
                ..Default::default()
            }
        ),
        rpc!(
            "access",
            "GetRole",
            &[OPERATOR],
            access.clone(),
            get_role,
            apb::GetRoleRequest { id: some_id() }
        ),
        rpc!(
            "access",
            "UpdatePermissionSettings",
            NOBODY,
            access.clone(),
            update_permission_settings,
            apb::UpdatePermissionSettingsRequest::default()
        ),
        // mailboxes
        rpc!(
            "mailboxes",
            "GetMailboxCredentials",
            &["sync"],
            mailboxes.clone(),
            get_mailbox_credentials,
            mpb::GetMailboxCredentialsRequest {
                mailbox_id: some_id(),
            }
        ),
        rpc!(
            "mailboxes",
            "ResealCredentials",
            &[OPERATOR],
            mailboxes.clone(),
            reseal_credentials,
            mpb::ResealCredentialsRequest { batch_size: 1 }
        ),
        rpc!(
            "mailboxes",
            "ListMailboxes",
            NOBODY,
            mailboxes.clone(),
            list_mailboxes,
            mpb::ListMailboxesRequest::default()
        ),
        rpc!(
            "mailboxes",
            "ConnectMailbox",
            NOBODY,
            mailboxes.clone(),
            connect_mailbox,
            mpb::ConnectMailboxRequest {
                validate_only: true,
                ..Default::default()
            }
        ),
        rpc!(
            "mailboxes",
            "DisconnectMailbox",
            NOBODY,
            mailboxes.clone(),
            disconnect_mailbox,
            mpb::DisconnectMailboxRequest { id: some_id() }
        ),
        // sync
        rpc!(
            "sync",
            "GetSyncStatus",
            NOBODY,
            sync.clone(),
            get_sync_status,
            spb::GetSyncStatusRequest {
                mailbox_id: some_id(),
            }
        ),
        rpc!(
            "sync",
            "ListMessages",
            NOBODY,
            sync.clone(),
            list_messages,
            spb::ListMessagesRequest {
                mailbox_id: some_id(),
                ..Default::default()
            }
        ),
        rpc!(
            "sync",
            "RecordActivity",
            NOBODY,
            sync.clone(),
            record_activity,
            spb::RecordActivityRequest { client: 1 }
        ),
        // invitations
        rpc!(
            "invitations",
            "CreateInvitations",
            NOBODY,
            invitations.clone(),
            create_invitations,
            ipb::CreateInvitationsRequest {
                emails: "someone@example.com".into(),
                ..Default::default()
            }
        ),
        rpc!(
            "invitations",
            "ListInvitations",
            NOBODY,
            invitations.clone(),
            list_invitations,
            ipb::ListInvitationsRequest::default()
        ),
        rpc!(
            "invitations",
            "GetSeatUsage",
            NOBODY,
            invitations.clone(),
            get_seat_usage,
            ipb::GetSeatUsageRequest::default()
        ),
    ]
}

/// Whether `answer` is the callers table's refusal of `principal`.
fn refused_by_the_table(answer: &Result<(), Status>, principal: &str) -> bool {
    matches!(answer, Err(s) if s.code() == Code::PermissionDenied
        && s.message().starts_with(&format!("the {principal} service may not call ")))
}

#[tokio::test]
async fn each_service_principal_reaches_only_the_rpcs_its_work_needs() {
    let app = spawn_app_with(AppOptions {
        with_sync: true,
        with_invitations: true,
        ..AppOptions::default()
    })
    .await;
    let org = app.create_org(10).await;
    let rpcs = matrix(&app, &org.id, &org.admin_id);

    let mut wrong = Vec::new();
    let mut asked = 0;
    for principal in TEST_CLIENTS {
        for rpc in &rpcs {
            let token = app
                .service_token_as(principal, rpc.service)
                .await
                .unwrap_or_else(|s| panic!("{principal}'s token for {}: {s:?}", rpc.service));
            let answer = (rpc.call)(token).await;
            asked += 1;
            let allowed = rpc.allowed.contains(&principal);
            let reached = !refused_by_the_table(&answer, principal)
                && !matches!(&answer, Err(s) if s.code() == Code::Unauthenticated);
            if allowed != reached {
                wrong.push(format!(
                    "{principal} → {}.{}: expected {}, got {:?}",
                    rpc.service,
                    rpc.method,
                    if allowed {
                        "to reach the handler"
                    } else {
                        "PERMISSION_DENIED"
                    },
                    answer.map_err(|s| (s.code(), s.message().to_owned()))
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {asked} calls were answered wrongly:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    assert_eq!(asked, TEST_CLIENTS.len() * rpcs.len());
}

/// The attacks of the issue, one by one, with what each must get.
#[tokio::test]
async fn a_stolen_workload_credential_opens_no_password_and_creates_no_organisation() {
    let app = spawn_app_with(AppOptions {
        with_sync: true,
        with_invitations: true,
        ..AppOptions::default()
    })
    .await;
    let org = app.create_org(10).await;

    // The sync's credential cannot create an organisation (nor can any other workload's).
    for workload in ["identity", "access", "mailboxes", "sync", "invitations"] {
        let token = app.service_token_as(workload, "identity").await.unwrap();
        let refused = app
            .identity
            .clone()
            .create_organization(authed(
                &token,
                pb::CreateOrganizationRequest {
                    display_name: "Evil Corp".into(),
                    seat_limit: 1,
                    settings: None,
                    first_admin: Some(pb::NewAdmin {
                        login_email: format!("evil@{}", org.domain),
                        first_name: "Eve".into(),
                        last_name: "Vil".into(),
                        password: mailroom_tests::PASSWORD.into(),
                    }),
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(
            refused.code(),
            Code::PermissionDenied,
            "{workload}: {refused:?}"
        );
        assert_eq!(
            refused.message(),
            format!("the {workload} service may not call /mailroom.identity.v1.IdentityService/CreateOrganization: a service token reaches only the RPCs the identity service lists for its client"),
        );
    }

    // Only the sync opens a stored password: the invitations' or the registry's own
    // credential is refused before the handler looks the mailbox up.
    for workload in ["identity", "access", "mailboxes", "invitations", OPERATOR] {
        let token = app.service_token_as(workload, "mailboxes").await.unwrap();
        let refused = app
            .mailboxes()
            .get_mailbox_credentials(authed(
                &token,
                mpb::GetMailboxCredentialsRequest {
                    mailbox_id: some_id(),
                },
            ))
            .await
            .unwrap_err();
        assert!(
            refused_by_the_table(&Err(refused.clone()), workload),
            "{workload}: {refused:?}"
        );
    }

    // A token is for one service: the sync's token for the registry, replayed by the registry
    // (or anyone who took it from there) at access control, identity or anywhere else, is
    // not accepted; nor is the operator's token for identity at the registry.
    let sync_for_registry = app.service_token_as("sync", "mailboxes").await.unwrap();
    let replayed = app
        .access()
        .lookup_mailbox_scope(authed(
            &sync_for_registry,
            apb::LookupMailboxScopeRequest {
                subject: Some(apb::SubjectRef {
                    object: Some(apb::ObjectRef {
                        r#type: "user".into(),
                        id: org.admin_id.clone(),
                    }),
                    relation: String::new(),
                }),
                permission: "mailbox.view".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(replayed.code(), Code::Unauthenticated, "{replayed:?}");
    assert!(
        replayed.message().contains("audience is `access`"),
        "{replayed:?}"
    );
    let operator_for_identity = app.service_token_as(OPERATOR, "identity").await.unwrap();
    let replayed = app
        .mailboxes()
        .reseal_credentials(authed(
            &operator_for_identity,
            mpb::ResealCredentialsRequest { batch_size: 1 },
        ))
        .await
        .unwrap_err();
    assert_eq!(replayed.code(), Code::Unauthenticated, "{replayed:?}");

    // Every principal's token for each service is refused by each other service.
    for principal in TEST_CLIENTS {
        for audience in SERVICES {
            let token = app.service_token_as(principal, audience).await.unwrap();
            for (target, answer) in [
                (
                    "identity",
                    app.identity
                        .clone()
                        .get_organization(authed(
                            &token,
                            pb::GetOrganizationRequest {
                                org_id: org.id.clone(),
                            },
                        ))
                        .await
                        .map(drop),
                ),
                (
                    "access",
                    app.access()
                        .list_relationships(authed(
                            &token,
                            apb::ListRelationshipsRequest::default(),
                        ))
                        .await
                        .map(drop),
                ),
                (
                    "mailboxes",
                    app.mailboxes()
                        .reseal_credentials(authed(
                            &token,
                            mpb::ResealCredentialsRequest { batch_size: 1 },
                        ))
                        .await
                        .map(drop),
                ),
                (
                    "sync",
                    app.sync()
                        .record_activity(authed(&token, spb::RecordActivityRequest { client: 1 }))
                        .await
                        .map(drop),
                ),
                (
                    "invitations",
                    app.invitations()
                        .get_seat_usage(authed(&token, ipb::GetSeatUsageRequest::default()))
                        .await
                        .map(drop),
                ),
            ] {
                if target == audience {
                    continue;
                }
                assert!(
                    matches!(&answer, Err(s) if s.code() == Code::Unauthenticated),
                    "{principal}'s token for {audience} at {target}: {answer:?}"
                );
            }
        }
    }

    // Identity names the audience a token may have, and issues none without one.
    for audience in ["", "mailroom", "billing", "mailroom:sync"] {
        let refused = app.service_token_as("sync", audience).await.unwrap_err();
        assert_eq!(
            refused.code(),
            Code::InvalidArgument,
            "{audience:?}: {refused:?}"
        );
    }
    // A wrong secret is refused as before, whatever the audience.
    let refused = app
        .auth
        .clone()
        .issue_service_token(pb::IssueServiceTokenRequest {
            client_id: OPERATOR.into(),
            client_secret: "guessed".into(),
            audience: "identity".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
}
