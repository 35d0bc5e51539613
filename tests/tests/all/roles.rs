//! The roles page's three examples end to end (issue 23, design §9), over gRPC as the people in
//! them, with tokens from `login`, against the real stack (Dovecot mailboxes, Kafka events):
//!
//! 1. "A supervisor can see their team's mailboxes but cannot change their settings" — the
//!    default roles, nothing configured;
//! 2. "A department head connects email for new employees to speed up onboarding" — a custom
//!    "Department heads" role assigned to every head;
//! 3. "An administrator restricts access for those who do not work with email" — a "No mail"
//!    role over a department and its sub-departments, and an "HR" role that sees every mailbox
//!    and changes none.
//!
//! Reading mail is never a role's: it takes the owner or an explicit reader grant, for the
//! supervisor, the department head and HR alike.

use std::future::Future;
use std::time::{Duration, Instant};

use mailroom_platform::kafka::Topic;
use mailroom_proto::events::v1 as ev;
use mailroom_tests::access::{object, on_mailbox, request};
use mailroom_tests::mailstore::{append_samples, new_mail_user, MailUser};
use mailroom_tests::{
    access_pb as apb, authed, identity_pb as pb, mailboxes_pb as mpb, spawn_app_with_mailboxes,
    spawn_app_with_sync, sync_pb as spb, TestApp, TestOrg,
};
use tonic::Code;

/// How long anything that follows events (access hearing of identity's changes, sync of a
/// connect) is waited for.
const WAIT: Duration = Duration::from_secs(45);

/// Polls `attempt` until it answers `Ok`, for at most [`WAIT`]; the last `Err` says what was
/// seen instead.
async fn eventually<T, Fut>(what: &str, mut attempt: impl FnMut() -> Fut) -> T
where
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        match attempt().await {
            Ok(value) => return value,
            Err(last) if Instant::now() < deadline => {
                let _ = last;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(last) => panic!("{what}: still {last} after {WAIT:?}"),
        }
    }
}

/// Someone of the organisation, signed in.
struct Person {
    user: pb::User,
    token: String,
}

impl Person {
    fn id(&self) -> &str {
        &self.user.id
    }

    /// Their name as the registry shows it (the harness's users are "<local> Tester").
    fn name(&self) -> String {
        format!("{} {}", self.user.first_name, self.user.last_name)
    }
}

/// A user in `department`, signed in, once access control has heard of them.
async fn person(app: &TestApp, org: &TestOrg, local: &str, department: &str) -> Person {
    let user = app.create_user(org, local, department).await;
    let token = app
        .login(&user.login_email)
        .await
        .expect("signs in")
        .access_token;
    app.until_known(&user.id).await;
    Person { user, token }
}

/// A Dovecot user of this test's own, known to Dovecot, with `messages` sample messages in
/// its INBOX.
async fn mail_user(messages: usize) -> MailUser {
    let user = new_mail_user();
    let mut imap = user.session().await;
    if messages > 0 {
        append_samples(&mut imap, "INBOX", 0, messages, &user.username).await;
    }
    let _ = imap.logout().await;
    user
}

fn server(var: &str, username: &str) -> mpb::ServerSettings {
    let value = std::env::var(var).unwrap_or_else(|_| panic!("{var} is set by .ci/test"));
    let (host, port) = value.rsplit_once(':').expect("host:port");
    mpb::ServerSettings {
        host: host.to_owned(),
        port: port.parse().expect("port"),
        security: mpb::Security::None as i32,
        username: username.into(),
    }
}

/// A request to connect `mail`'s mailbox for `owner` (empty: the caller).
fn connect_request(
    owner: &str,
    mail: &MailUser,
    validate_only: bool,
) -> mpb::ConnectMailboxRequest {
    mpb::ConnectMailboxRequest {
        mailbox: Some(mpb::Mailbox {
            email: mail.username.clone(),
            owner_user_id: owner.into(),
            name: "Work".into(),
            sender_name: "Tester".into(),
            imap: Some(server("MAILROOM_IMAP_ADDR", &mail.username)),
            smtp: Some(server("MAILROOM_SUBMISSION_ADDR", &mail.username)),
            ..Default::default()
        }),
        password: mail.password.clone(),
        validate_only,
    }
}

/// Connects `mail`'s mailbox for `owner` (empty: the caller) with `token`.
async fn connect(
    app: &TestApp,
    token: &str,
    owner: &str,
    mail: &MailUser,
) -> Result<mpb::Mailbox, tonic::Status> {
    app.mailboxes()
        .connect_mailbox(authed(token, connect_request(owner, mail, false)))
        .await
        .map(|r| r.into_inner())
}

/// Waits until the registry has heard of `owner` from identity (so its refusals name them):
/// the admin's validate-only connect of `mail` for them passes.
async fn until_registry_knows(app: &TestApp, org: &TestOrg, owner: &str, mail: &MailUser) {
    eventually("the registry hears of the new user", || async {
        app.mailboxes()
            .connect_mailbox(authed(&org.admin_token, connect_request(owner, mail, true)))
            .await
            .map(|_| ())
            .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
    })
    .await
}

/// Connects, retrying while the registry or access control has not yet heard of a user or
/// change made a moment ago (NOT_FOUND, UNAVAILABLE, or PERMISSION_DENIED while a role change
/// or a move is on its way).
async fn connect_eventually(
    app: &TestApp,
    token: &str,
    owner: &str,
    mail: &MailUser,
) -> mpb::Mailbox {
    eventually(&format!("connect {}", mail.username), || async {
        connect(app, token, owner, mail)
            .await
            .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
    })
    .await
}

/// Waits until connecting is refused with PERMISSION_DENIED, and returns the refusal.
async fn connect_refused(
    app: &TestApp,
    token: &str,
    owner: &str,
    mail: &MailUser,
) -> tonic::Status {
    eventually(
        &format!("a refused connect of {}", mail.username),
        || async {
            match connect(app, token, owner, mail).await {
                Err(s) if s.code() == Code::PermissionDenied => Ok(s),
                Err(s) => Err(format!("{:?}: {}", s.code(), s.message())),
                Ok(m) => Err(format!("connected {}", m.id)),
            }
        },
    )
    .await
}

async fn try_emails_seen(app: &TestApp, token: &str) -> Result<Vec<String>, tonic::Status> {
    let mut emails: Vec<String> = app
        .mailboxes()
        .list_mailboxes(authed(
            token,
            mpb::ListMailboxesRequest {
                page_size: 500,
                read_mask: Some(prost_types::FieldMask {
                    paths: vec!["email".into()],
                }),
                ..Default::default()
            },
        ))
        .await?
        .into_inner()
        .mailboxes
        .into_iter()
        .map(|m| m.email)
        .collect();
    emails.sort();
    Ok(emails)
}

/// Waits until `token`'s list of mailboxes is exactly `expected`.
async fn until_sees(app: &TestApp, token: &str, expected: &[&str]) {
    let mut expected: Vec<String> = expected.iter().map(|e| (*e).to_owned()).collect();
    expected.sort();
    eventually(&format!("the list {expected:?}"), || async {
        match try_emails_seen(app, token).await {
            Ok(seen) if seen == expected => Ok(()),
            Ok(seen) => Err(format!("{seen:?}")),
            Err(s) => Err(format!("{:?}: {}", s.code(), s.message())),
        }
    })
    .await
}

async fn get(app: &TestApp, token: &str, id: &str) -> Result<mpb::Mailbox, tonic::Status> {
    app.mailboxes()
        .get_mailbox(authed(token, mpb::GetMailboxRequest { id: id.into() }))
        .await
        .map(|r| r.into_inner())
}

async fn set_sender_name(
    app: &TestApp,
    token: &str,
    id: &str,
    sender_name: &str,
) -> Result<mpb::Mailbox, tonic::Status> {
    app.mailboxes()
        .update_mailbox(authed(
            token,
            mpb::UpdateMailboxRequest {
                mailbox: Some(mpb::Mailbox {
                    id: id.into(),
                    sender_name: sender_name.into(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["sender_name".into()],
                }),
                password: String::new(),
            },
        ))
        .await
        .map(|r| r.into_inner())
}

/// `Check` with explain, asked by `token` about `user` on a mailbox.
async fn explain(
    app: &TestApp,
    token: &str,
    user: &str,
    permission: &str,
    mailbox: &str,
) -> apb::CheckResponse {
    let mut asked = request(user, permission, object("mailbox", mailbox), None);
    asked.explain = true;
    app.check(token, asked)
        .await
        .unwrap_or_else(|s| panic!("check {permission}: {s:?}"))
}

/// Waits until `Check` (explained) answers `allowed`, and returns that answer.
async fn explain_until(
    app: &TestApp,
    token: &str,
    user: &str,
    permission: &str,
    mailbox: &str,
    allowed: bool,
) -> apb::CheckResponse {
    eventually(&format!("{permission} = {allowed}"), || async {
        let answer = explain(app, token, user, permission, mailbox).await;
        if answer.allowed == allowed {
            Ok(answer)
        } else {
            Err(format!("{answer:?}"))
        }
    })
    .await
}

/// A relationship as text: `type:id#relation@type:id[#relation]`.
fn shown(r: &apb::Relationship) -> String {
    let resource = r.resource.clone().unwrap_or_default();
    let subject = r.subject.clone().unwrap_or_default();
    let object = subject.object.unwrap_or_default();
    let set = if subject.relation.is_empty() {
        String::new()
    } else {
        format!("#{}", subject.relation)
    };
    format!(
        "{}:{}#{}@{}:{}{set}",
        resource.r#type, resource.id, r.relation, object.r#type, object.id
    )
}

fn subject(kind: &str, id: &str, relation: &str) -> Option<apb::SubjectRef> {
    Some(apb::SubjectRef {
        object: object(kind, id),
        relation: relation.into(),
    })
}

fn permissions(view: apb::Scope, connect: apb::Scope, modify: apb::Scope) -> apb::RolePermissions {
    apb::RolePermissions {
        view_mailbox_list: view as i32,
        connect_mailboxes: connect as i32,
        modify_mailboxes: modify as i32,
        grant_read_access: apb::Scope::None as i32,
        invite: false,
        manage_permissions: false,
    }
}

async fn create_role(
    app: &TestApp,
    token: &str,
    name: &str,
    permissions: apb::RolePermissions,
) -> apb::Role {
    let role = app
        .access()
        .create_role(authed(
            token,
            apb::CreateRoleRequest {
                role: Some(apb::Role {
                    display_name: name.into(),
                    permissions: Some(permissions),
                    ..Default::default()
                }),
            },
        ))
        .await
        .unwrap_or_else(|s| panic!("create role {name}: {s:?}"))
        .into_inner();
    assert_eq!(role.display_name, name);
    assert_eq!(role.kind, apb::RoleKind::Custom as i32);
    role
}

async fn assign(
    app: &TestApp,
    token: &str,
    role: &apb::Role,
    to: Option<apb::SubjectRef>,
) -> apb::RoleAssignment {
    app.access()
        .assign_role(authed(
            token,
            apb::AssignRoleRequest {
                role_id: role.id.clone(),
                subject: to,
            },
        ))
        .await
        .unwrap_or_else(|s| panic!("assign {}: {s:?}", role.display_name))
        .into_inner()
}

/// Company → Sales → East (head: Hanna; Emil) and Other (Olga); Company → Warehouse → Night
/// shift. Emil and Olga connected their own mailboxes (Emil's holds `emil_messages` messages).
struct Company {
    org: TestOrg,
    company: pb::Department,
    sales: pb::Department,
    east: pb::Department,
    warehouse: pb::Department,
    night: pb::Department,
    hanna: Person,
    emil: Person,
    olga: Person,
    emil_box: mpb::Mailbox,
    olga_box: mpb::Mailbox,
}

async fn company(app: &TestApp, emil_messages: usize) -> Company {
    let org = app.create_org(0).await;
    let company = app.create_department(&org, "Company", "", "").await;
    let sales = app.create_department(&org, "Sales", &company.id, "").await;
    let east = app.create_department(&org, "East", &sales.id, "").await;
    let other = app.create_department(&org, "Other", &sales.id, "").await;
    let warehouse = app
        .create_department(&org, "Warehouse", &company.id, "")
        .await;
    let night = app
        .create_department(&org, "Night shift", &warehouse.id, "")
        .await;
    let hanna = person(app, &org, "hanna", &east.id).await;
    let emil = person(app, &org, "emil", &east.id).await;
    let olga = person(app, &org, "olga", &other.id).await;
    let east = app.set_head(&org, &east, hanna.id()).await;
    // Each connects their own (the default Manager role lets everyone connect their own).
    let emil_mail = mail_user(emil_messages).await;
    let olga_mail = mail_user(0).await;
    let emil_box = connect_eventually(app, &emil.token, "", &emil_mail).await;
    let olga_box = connect_eventually(app, &olga.token, "", &olga_mail).await;
    assert_eq!(emil_box.owner_user_id, emil.id());
    assert_eq!(olga_box.owner_user_id, olga.id());
    Company {
        org,
        company,
        sales,
        east,
        warehouse,
        night,
        hanna,
        emil,
        olga,
        emil_box,
        olga_box,
    }
}

/// Example 1: the default roles, nothing configured.
#[tokio::test]
async fn a_supervisor_sees_their_teams_mailboxes_but_cannot_change_their_settings() {
    let app = spawn_app_with_sync().await;
    let c = company(&app, 3).await;
    let emil_box = c.emil_box.id.as_str();

    // Hanna (Supervisor, as head of East) lists Emil's mailbox; Olga's is not hers to see.
    until_sees(&app, &c.hanna.token, &[&c.emil_box.email]).await;
    let seen = get(&app, &c.hanna.token, emil_box)
        .await
        .expect("a supervisor views a subordinate's mailbox");
    assert_eq!(seen.owner_user_id, c.emil.id());
    let hidden = get(&app, &c.hanna.token, &c.olga_box.id)
        .await
        .expect_err("Olga's is outside Hanna's team");
    assert_eq!(hidden.code(), Code::NotFound);

    // She changes nothing, and is told so in words she can act on.
    let refused = set_sender_name(&app, &c.hanna.token, emil_box, "Hanna")
        .await
        .expect_err("a supervisor does not change settings");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(
        refused
            .message()
            .contains("you may see this mailbox but not change it"),
        "{}",
        refused.message()
    );
    assert!(
        refused.message().contains(&c.emil.name()) && refused.message().contains("ask an admin"),
        "{}",
        refused.message()
    );
    let refused = app
        .mailboxes()
        .sync_mailbox_now(authed(
            &c.hanna.token,
            mpb::SyncMailboxNowRequest {
                id: emil_box.into(),
            },
        ))
        .await
        .expect_err("nor syncs");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(
        refused
            .message()
            .contains("may see this mailbox but not sync it"),
        "{}",
        refused.message()
    );
    // Access learns the owner from the registry's events: once it lets her view the
    // mailbox, a refusal to modify it is about her roles, not about a mailbox it has not
    // heard of yet.
    explain_until(
        &app,
        &c.hanna.token,
        c.hanna.id(),
        "mailbox.view",
        emil_box,
        true,
    )
    .await;
    let modify = explain(
        &app,
        &c.hanna.token,
        c.hanna.id(),
        "mailbox.modify",
        emil_box,
    )
    .await;
    assert!(!modify.allowed);
    assert!(
        modify.reason.contains("Supervisor"),
        "the refusal names her role: {}",
        modify.reason
    );

    // Why she sees it: the Supervisor role, held as a head, reaching her subordinate.
    let view = explain_until(
        &app,
        &c.hanna.token,
        c.hanna.id(),
        "mailbox.view",
        emil_box,
        true,
    )
    .await;
    let grant = view.granted_by.clone().expect("a role granted it");
    assert_eq!(grant.role_display_name, "Supervisor");
    assert_eq!(grant.scope, apb::Scope::Subordinates as i32);
    assert_eq!(
        grant.assignment.as_ref().map(shown),
        Some(format!(
            "role:{}#assignee@org:{}#head",
            grant.role_id, c.org.id
        ))
    );
    let path: Vec<String> = view.path.iter().map(shown).collect();
    for step in [
        format!("mailbox:{emil_box}#owner@user:{}", c.emil.id()),
        format!("user:{}#member@department:{}", c.emil.id(), c.east.id),
        format!("department:{}#head@user:{}", c.east.id, c.hanna.id()),
    ] {
        assert!(path.contains(&step), "{step} not in {path:?}");
    }

    // Reading the mail is not a role's: refused until Emil grants it.
    let read = explain(
        &app,
        &c.hanna.token,
        c.hanna.id(),
        "mailbox.read_mail",
        emil_box,
    )
    .await;
    assert!(!read.allowed);
    let uid = eventually("Emil's mail synced", || async {
        match app
            .sync()
            .list_messages(authed(
                &c.emil.token,
                spb::ListMessagesRequest {
                    mailbox_id: emil_box.into(),
                    page_size: 10,
                    ..Default::default()
                },
            ))
            .await
        {
            Ok(list) => match list.into_inner().messages.first() {
                Some(m) => Ok(m.uid),
                None => Err("no messages yet".to_owned()),
            },
            Err(s) => Err(format!("{:?}: {}", s.code(), s.message())),
        }
    })
    .await;
    let body = |token: String| {
        let app = &app;
        async move {
            app.sync()
                .get_message_body(authed(
                    &token,
                    spb::GetMessageBodyRequest {
                        mailbox_id: emil_box.into(),
                        folder: "INBOX".into(),
                        uid,
                    },
                ))
                .await
                .map(|r| r.into_inner())
        }
    };
    body(c.emil.token.clone())
        .await
        .expect("the owner reads the body");
    let refused = body(c.hanna.token.clone())
        .await
        .expect_err("a supervisor reads no mail");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");

    // Emil (Manager: grants read access to his own) lets Hanna read.
    app.write_when_known(
        &c.emil.token,
        vec![on_mailbox(emil_box, "reader", c.hanna.id())],
    )
    .await;
    let read = explain_until(
        &app,
        &c.hanna.token,
        c.hanna.id(),
        "mailbox.read_mail",
        emil_box,
        true,
    )
    .await;
    assert!(
        read.granted_by.is_none(),
        "no role grants reading: {read:?}"
    );
    let raw = eventually("Hanna reads the granted body", || async {
        body(c.hanna.token.clone())
            .await
            .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
    })
    .await;
    assert!(!raw.raw.is_empty());
}

/// Example 2: heads connect and edit mailboxes for their department through a custom role.
#[tokio::test]
async fn a_department_head_connects_mailboxes_for_new_employees() {
    let app = spawn_app_with_mailboxes().await;
    let c = company(&app, 0).await;
    let nina = person(&app, &c.org, "nina", &c.east.id).await;
    let nina_mail = mail_user(0).await;
    until_registry_knows(&app, &c.org, nina.id(), &nina_mail).await;

    // Control: as Supervisor, Hanna connects her own only.
    let refused = connect_refused(&app, &c.hanna.token, nina.id(), &nina_mail).await;
    assert!(
        refused
            .message()
            .contains(&format!("connect mailboxes for {}", nina.name()))
            && refused
                .message()
                .contains("ask an admin for a role that may connect mailboxes"),
        "{}",
        refused.message()
    );

    // The admin gives every head their department.
    let heads = create_role(
        &app,
        &c.org.admin_token,
        "Department heads",
        apb::RolePermissions {
            grant_read_access: apb::Scope::Own as i32,
            ..permissions(
                apb::Scope::Department,
                apb::Scope::Department,
                apb::Scope::Department,
            )
        },
    )
    .await;
    let to_heads = subject("org", &c.org.id, "head");
    let assigned = assign(&app, &c.org.admin_token, &heads, to_heads.clone()).await;
    assert_eq!(assigned.role_id, heads.id);

    // Hanna connects Nina's mailbox, sees it and edits it.
    let nina_box = connect_eventually(&app, &c.hanna.token, nina.id(), &nina_mail).await;
    assert_eq!(nina_box.owner_user_id, nina.id());
    until_sees(&app, &c.hanna.token, &[&c.emil_box.email, &nina_box.email]).await;
    let edited = set_sender_name(&app, &c.hanna.token, &nina_box.id, "Nina, East")
        .await
        .expect("a head edits her department's mailbox");
    assert_eq!(edited.sender_name, "Nina, East");

    // Not for another department: neither connecting nor giving one. Olga's mailboxes are
    // out of Hanna's sight too, so the refusal does not tell her who the id is.
    let refused = connect_refused(&app, &c.hanna.token, c.olga.id(), &mail_user(0).await).await;
    assert!(
        refused
            .message()
            .contains(&format!("connect mailboxes for user `{}`", c.olga.id()))
            && !refused.message().contains(&c.olga.name()),
        "{}",
        refused.message()
    );
    let refused = app
        .mailboxes()
        .transfer_mailbox(authed(
            &c.hanna.token,
            mpb::TransferMailboxRequest {
                id: nina_box.id.clone(),
                new_owner_user_id: c.olga.id().into(),
            },
        ))
        .await
        .expect_err("not to another department");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(
        refused.message().contains("you may not give them one"),
        "{}",
        refused.message()
    );

    // Nor may she take Nina's mailbox (and with it Nina's mail) for herself, or give it to
    // Emil in her own department: a transfer gives its mail, which her role may not grant.
    let transfer = |token: String, to: String| {
        let app = &app;
        let id = nina_box.id.clone();
        async move {
            app.mailboxes()
                .transfer_mailbox(authed(
                    &token,
                    mpb::TransferMailboxRequest {
                        id,
                        new_owner_user_id: to,
                    },
                ))
                .await
                .map(|r| r.into_inner())
        }
    };
    let refused = transfer(c.hanna.token.clone(), c.hanna.id().into())
        .await
        .expect_err("not to herself");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(
        refused
            .message()
            .contains("you may not transfer a mailbox to yourself")
            && refused.message().contains("ask an admin"),
        "{}",
        refused.message()
    );
    let refused = transfer(c.hanna.token.clone(), c.emil.id().into())
        .await
        .expect_err("not without granting mail reading");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(
        refused
            .message()
            .contains("it needs the right to grant mail reading on this mailbox"),
        "{}",
        refused.message()
    );
    let still = get(&app, &c.org.admin_token, &nina_box.id)
        .await
        .expect("the admin sees it");
    assert_eq!(still.owner_user_id, nina.id(), "the refusals moved nothing");

    // Nor does the role read mail.
    let read = explain(
        &app,
        &c.hanna.token,
        c.hanna.id(),
        "mailbox.read_mail",
        &nina_box.id,
    )
    .await;
    assert!(!read.allowed);

    // Why she may: "Department heads", not Supervisor (whose connect is her own).
    let why = explain_until(
        &app,
        &c.hanna.token,
        c.hanna.id(),
        "mailbox.connect",
        &nina_box.id,
        true,
    )
    .await;
    let grant = why.granted_by.expect("a role granted it");
    assert_eq!(grant.role_display_name, "Department heads");
    assert_eq!(grant.role_id, heads.id);
    assert_eq!(grant.scope, apb::Scope::Department as i32);
    assert_eq!(
        grant.assignment.as_ref().map(shown),
        Some(format!("role:{}#assignee@org:{}#head", heads.id, c.org.id))
    );

    // Both changes are events, by the admin.
    let admin = Some(ev::actor::Kind::UserId(c.org.admin_id.clone()));
    let created = app
        .wait_for_event(Topic::AccessEvents, WAIT, |e| {
            matches!(&e.payload, Some(ev::envelope::Payload::RoleCreated(r))
                if r.role.as_ref().is_some_and(|r| r.id == heads.id))
        })
        .await
        .expect("RoleCreated on the access topic");
    assert_eq!(created.actor.and_then(|a| a.kind), admin);
    assert_eq!(created.org_id, c.org.id);
    let Some(ev::envelope::Payload::RoleCreated(created)) = created.payload else {
        unreachable!()
    };
    let record = created.role.expect("the role");
    assert_eq!(record.display_name, "Department heads");
    assert_eq!(record.kind, "custom");
    let assigned = app
        .wait_for_event(Topic::AccessEvents, WAIT, |e| {
            matches!(&e.payload, Some(ev::envelope::Payload::RoleAssigned(r)) if r.role_id == heads.id)
        })
        .await
        .expect("RoleAssigned on the access topic");
    assert_eq!(assigned.actor.and_then(|a| a.kind), admin);
    let Some(ev::envelope::Payload::RoleAssigned(assigned)) = assigned.payload else {
        unreachable!()
    };
    let assignment = assigned.assignment.expect("the assignment");
    assert_eq!(
        (
            assignment.subject_type.as_str(),
            assignment.subject_id.as_str(),
            assignment.subject_relation.as_str()
        ),
        ("org", c.org.id.as_str(), "head")
    );

    // Unassigned, she is back to Supervisor: refused again, and sees without changing.
    app.access()
        .unassign_role(authed(
            &c.org.admin_token,
            apb::UnassignRoleRequest {
                role_id: heads.id.clone(),
                subject: to_heads,
            },
        ))
        .await
        .expect("unassign");
    let refused = connect_refused(&app, &c.hanna.token, nina.id(), &mail_user(0).await).await;
    assert!(
        refused.message().contains("ask an admin"),
        "{}",
        refused.message()
    );
    let refused = set_sender_name(&app, &c.hanna.token, &nina_box.id, "Hanna again")
        .await
        .expect_err("no longer changes it");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(
        refused
            .message()
            .contains("you may see this mailbox but not change it"),
        "{}",
        refused.message()
    );

    // An admin still transfers between people: Nina's mailbox goes to Emil.
    let moved = transfer(c.org.admin_token.clone(), c.emil.id().into())
        .await
        .expect("an admin transfers");
    assert_eq!(moved.owner_user_id, c.emil.id());
}

/// Example 3: "No mail" for a department and below; and HR, who sees everything and changes
/// nothing.
#[tokio::test]
async fn an_admin_restricts_access_for_those_who_do_not_work_with_email() {
    let app = spawn_app_with_mailboxes().await;
    let c = company(&app, 0).await;
    let walt = person(&app, &c.org, "walt", &c.night.id).await;
    let vera = person(&app, &c.org, "vera", &c.warehouse.id).await;
    let walt_box = connect_eventually(&app, &walt.token, "", &mail_user(0).await).await;

    let no_mail = create_role(
        &app,
        &c.org.admin_token,
        "No mail",
        permissions(apb::Scope::None, apb::Scope::None, apb::Scope::None),
    )
    .await;
    assign(
        &app,
        &c.org.admin_token,
        &no_mail,
        subject("department", &c.warehouse.id, "all_members"),
    )
    .await;

    // Vera may not connect even her own, and is told which role says so.
    let vera_mail = mail_user(0).await;
    let refused = connect_refused(&app, &vera.token, "", &vera_mail).await;
    assert!(
        refused.message().contains("not even your own"),
        "{}",
        refused.message()
    );
    // (Walt's mailbox reaches access through the registry's events: wait until it is known.)
    let why = eventually("the refusal to be about her roles", || async {
        let why = explain(
            &app,
            &vera.token,
            vera.id(),
            "mailbox.connect",
            &walt_box.id,
        )
        .await;
        if why.reason.contains("mailboxes") && !why.reason.contains("not one of") {
            Ok(why)
        } else {
            Err(why.reason)
        }
    })
    .await;
    assert!(!why.allowed);
    assert!(
        why.reason.contains("No mail") && !why.reason.contains("Manager"),
        "her only role is No mail: {}",
        why.reason
    );
    let held = app
        .access()
        .list_role_assignments(authed(
            &vera.token,
            apb::ListRoleAssignmentsRequest {
                user_id: vera.id().into(),
                ..Default::default()
            },
        ))
        .await
        .expect("her own roles")
        .into_inner()
        .assignments;
    assert_eq!(
        held.iter()
            .map(|a| a.role_display_name.as_str())
            .collect::<Vec<_>>(),
        vec!["No mail"],
        "{held:?}"
    );

    // Walt's mailbox is gone from his view; the admin still has it.
    until_sees(&app, &walt.token, &[]).await;
    let missing = get(&app, &walt.token, &walt_box.id)
        .await
        .expect_err("not his to see");
    assert_eq!(missing.code(), Code::NotFound);
    let missing = set_sender_name(&app, &walt.token, &walt_box.id, "Walt")
        .await
        .expect_err("nor to change");
    assert_eq!(missing.code(), Code::NotFound);
    until_sees(
        &app,
        &c.org.admin_token,
        &[&c.emil_box.email, &c.olga_box.email, &walt_box.email],
    )
    .await;

    // Vera moves to Sales: with no role of her own she is a Manager again, and connects.
    app.identity
        .clone()
        .update_user(authed(
            &c.org.admin_token,
            pb::UpdateUserRequest {
                user: Some(pb::User {
                    id: vera.id().into(),
                    department_id: c.sales.id.clone(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["department_id".into()],
                }),
            },
        ))
        .await
        .expect("move Vera");
    let vera_box = connect_eventually(&app, &vera.token, "", &vera_mail).await;
    assert_eq!(vera_box.owner_user_id, vera.id());

    // HR sees every mailbox of the organisation, changes none but her own, reads none.
    let hilda = person(&app, &c.org, "hilda", &c.company.id).await;
    let hr = create_role(
        &app,
        &c.org.admin_token,
        "HR",
        permissions(apb::Scope::All, apb::Scope::Own, apb::Scope::Own),
    )
    .await;
    assign(
        &app,
        &c.org.admin_token,
        &hr,
        subject("user", hilda.id(), ""),
    )
    .await;
    until_sees(
        &app,
        &hilda.token,
        &[
            &c.emil_box.email,
            &c.olga_box.email,
            &walt_box.email,
            &vera_box.email,
        ],
    )
    .await;
    let refused = set_sender_name(&app, &hilda.token, &c.emil_box.id, "HR")
        .await
        .expect_err("HR changes no one else's");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(
        refused
            .message()
            .contains("you may see this mailbox but not change it"),
        "{}",
        refused.message()
    );
    let read = explain(
        &app,
        &hilda.token,
        hilda.id(),
        "mailbox.read_mail",
        &c.emil_box.id,
    )
    .await;
    assert!(!read.allowed, "HR reads no mail: {read:?}");
}
