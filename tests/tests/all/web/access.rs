//! Access permissions in a browser (design §4.7): an admin edits a default role's scope in the
//! role's form and gives it to a department (the change read back over gRPC); a delegated
//! configurer is refused beyond their reach, in access control's own words next to the
//! control; "why can X see this?" renders the path as a chain of names and the role that
//! granted it, and refuses a person asking about others; an owner gives and takes away read
//! access to their mailbox.
//!
//! Mailboxes are real Dovecot users connected through the registry; every decision is access
//! control's.

use mailroom_tests::access::object;
use mailroom_tests::browser::{Browser, BrowserOptions};
use mailroom_tests::mailstore::{new_mail_user, MailUser};
use mailroom_tests::{
    access_pb as apb, authed, identity_pb as pb, mailboxes_pb as mpb, TestApp, TestOrg, PASSWORD,
};
use tonic::Code;

use super::{connect_test_mailbox, spawn_web, web_org};

/// The admin connects a fresh Dovecot user's mailbox for `owner` (retrying while the registry
/// has not heard of them), and waits until access control knows it is theirs.
async fn mailbox_of(app: &TestApp, org: &TestOrg, owner: &pb::User) -> (mpb::Mailbox, MailUser) {
    let mail = new_mail_user();
    let mailbox = connect_test_mailbox(
        app,
        org,
        mpb::Mailbox {
            email: mail.username.clone(),
            owner_user_id: owner.id.clone(),
            name: "Work".into(),
            sender_name: owner.first_name.clone(),
            ..Default::default()
        },
        &mail.username,
        &mail.password,
    )
    .await;
    app.eventually(&owner.id, "mailbox.read_mail", &mailbox.id, true)
        .await;
    (mailbox, mail)
}

async fn token(app: &TestApp, email: &str) -> String {
    app.login(email).await.expect("signs in").access_token
}

fn subject(kind: &str, id: &str, relation: &str) -> Option<apb::SubjectRef> {
    Some(apb::SubjectRef {
        object: object(kind, id),
        relation: relation.into(),
    })
}

/// The organisation's role of `kind`, as `token` reads it.
async fn role_of_kind(app: &TestApp, token: &str, kind: apb::RoleKind) -> apb::Role {
    app.access()
        .list_roles(authed(
            token,
            apb::ListRolesRequest {
                show_hidden: true,
                ..Default::default()
            },
        ))
        .await
        .expect("list roles")
        .into_inner()
        .roles
        .into_iter()
        .find(|r| r.kind == kind as i32)
        .unwrap_or_else(|| panic!("no {kind:?} role"))
}

#[tokio::test]
async fn edit_role_and_assign_to_department() {
    let app = spawn_web().await;
    let org = web_org(&app, 20).await;
    let sales = app.create_department(&org, "Sales", "", "").await;
    let east = app.create_department(&org, "East", &sales.id, "").await;
    let emil = app.create_user(&org, "emil", &east.id).await;
    app.until_known(&emil.id).await;

    let b = Browser::start().await;
    b.sign_in(&app, &org.admin_email, PASSWORD).await;
    b.goto(&app, "/access/roles").await;
    let matrix = b.text("#roles-matrix").await;
    for name in ["Administrator", "Supervisor", "Manager"] {
        assert!(matrix.contains(name), "the matrix lists {name}: {matrix}");
    }
    assert!(
        b.exists("form#create-title, #create-name").await,
        "an admin may create roles"
    );
    b.screenshot("roles-matrix").await;
    b.axe().await;

    // Supervisor's "change mailbox settings" from Own to Department, in the role's form.
    b.click_link("Supervisor").await;
    b.wait_for("#grants-title").await;
    b.select("Change mailbox settings", "Department").await;
    b.screenshot("supervisor-modify-department").await;
    b.click_button("Save").await;
    b.wait_for_text("The role was saved.").await;
    let supervisor = role_of_kind(&app, &org.admin_token, apb::RoleKind::Supervisor).await;
    let permissions = supervisor.permissions.expect("permissions");
    assert_eq!(
        permissions.modify_mailboxes,
        apb::Scope::Department as i32,
        "GetRole shows the saved scope: {supervisor:?}"
    );
    assert_eq!(
        permissions.view_mailbox_list,
        apb::Scope::Subordinates as i32,
        "nothing else changed"
    );
    assert_eq!(supervisor.etag, "2", "one update");
    b.axe().await;

    // Given to Sales and every department below it.
    b.select("Department", "Sales").await;
    b.check("With its sub-departments").await;
    b.click_button("Give to a department").await;
    b.wait_for_text("The role was given.").await;
    let assignments = b.text("#assignments").await;
    assert!(
        assignments.contains("Sales and its sub-departments")
            && assignments.contains("Everyone heading a department"),
        "both assignments are listed: {assignments}"
    );
    b.screenshot("supervisor-assigned-to-sales").await;
    let listed = app
        .access()
        .list_role_assignments(authed(
            &org.admin_token,
            apb::ListRoleAssignmentsRequest {
                role_id: supervisor.id.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("assignments")
        .into_inner()
        .assignments;
    assert!(
        listed
            .iter()
            .any(|a| a.subject == subject("department", &sales.id, "all_members")),
        "{listed:?}"
    );
    // Emil (East, below Sales) now holds Supervisor explicitly.
    let held = app
        .access()
        .list_role_assignments(authed(
            &org.admin_token,
            apb::ListRoleAssignmentsRequest {
                user_id: emil.id.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("Emil's roles")
        .into_inner()
        .assignments;
    let names: Vec<&str> = held.iter().map(|a| a.role_display_name.as_str()).collect();
    assert_eq!(names, ["Supervisor"], "{held:?}");

    // The matrix shows the new scope in Supervisor's row.
    b.goto(&app, "/access/roles").await;
    let row = b.text(&format!("#role-{}", supervisor.id)).await;
    assert!(row.contains("Supervisor"), "{row}");
    b.screenshot("matrix-after").await;
    b.close().await;

    // The same page in Russian.
    let ru = Browser::start_with(BrowserOptions {
        lang: Some("ru-RU"),
        ..BrowserOptions::default()
    })
    .await;
    ru.sign_in(&app, &org.admin_email, PASSWORD).await;
    ru.goto(&app, &format!("/access/roles/{}", supervisor.id))
        .await;
    ru.wait_for_text("Что разрешает роль").await;
    let assignments = ru.text("#assignments").await;
    assert!(
        assignments.contains("Отдел «Sales» и вложенные отделы"),
        "{assignments}"
    );
    ru.screenshot("supervisor-ru").await;
    ru.axe().await;
    ru.close().await;
}

#[tokio::test]
async fn delegated_configurator_is_refused_beyond_reach() {
    let app = spawn_web().await;
    let org = web_org(&app, 20).await;
    let hanna = app.create_user(&org, "hanna", "").await;
    let oleg = app.create_user(&org, "oleg", "").await;
    let east = app.create_department(&org, "East", "", &hanna.id).await;
    let other = app.create_department(&org, "Other", "", &oleg.id).await;
    let emil = app.create_user(&org, "emil", &east.id).await;
    let _ = other;
    for user in [&hanna, &oleg, &emil] {
        app.until_known(&user.id).await;
    }
    // The admin makes Hanna a configurer within her own department and below.
    let configurers = app
        .access()
        .create_role(authed(
            &org.admin_token,
            apb::CreateRoleRequest {
                role: Some(apb::Role {
                    display_name: "Configurers".into(),
                    permissions: Some(apb::RolePermissions {
                        view_mailbox_list: apb::Scope::Department as i32,
                        manage_permissions: true,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            },
        ))
        .await
        .expect("create Configurers")
        .into_inner();
    app.access()
        .assign_role(authed(
            &org.admin_token,
            apb::AssignRoleRequest {
                role_id: configurers.id.clone(),
                subject: subject("user", &hanna.id, ""),
            },
        ))
        .await
        .expect("assign Configurers");
    let hanna_token = token(&app, &hanna.login_email).await;

    let b = Browser::start().await;
    b.sign_in(&app, &hanna.login_email, PASSWORD).await;
    b.goto(&app, "/access/roles").await;
    assert!(
        !b.exists("#read-only").await,
        "a configurer gets the editable page"
    );
    b.fill("Role name", "East viewers").await;
    b.click_button("Create role").await;
    b.wait_for_text("The role was created.").await;
    let path = b.path().await;
    let role_id = path
        .trim_start_matches("/access/roles/")
        .split('?')
        .next()
        .unwrap_or_default()
        .to_owned();
    assert!(!role_id.is_empty(), "on the new role's page: {path}");
    b.screenshot("new-role").await;

    // Giving it to every department head reaches beyond her department: refused, and the
    // page says what access control says.
    b.click_button("Give to everyone heading a department")
        .await;
    let shown = b.text("#heads-error").await;
    let said = app
        .access()
        .assign_role(authed(
            &hanna_token,
            apb::AssignRoleRequest {
                role_id: role_id.clone(),
                subject: subject("org", &org.id, "head"),
            },
        ))
        .await
        .expect_err("refused over gRPC too");
    assert_eq!(said.code(), Code::PermissionDenied, "{said:?}");
    assert_eq!(
        shown,
        said.message(),
        "the service's words, next to the button"
    );
    b.screenshot("refused-heads").await;
    b.axe().await;

    // So is giving it to Oleg, who heads another department.
    b.fill("Person's email address", &oleg.login_email).await;
    b.click_button("Give to a person").await;
    let shown = b.text("#user-error").await;
    let said = app
        .access()
        .assign_role(authed(
            &hanna_token,
            apb::AssignRoleRequest {
                role_id: role_id.clone(),
                subject: subject("user", &oleg.id, ""),
            },
        ))
        .await
        .expect_err("refused over gRPC too");
    assert_eq!(shown, said.message());
    assert_eq!(
        b.find("#assign-email")
            .await
            .prop("value")
            .await
            .ok()
            .flatten()
            .as_deref(),
        Some(oleg.login_email.as_str()),
        "the address typed is kept"
    );
    b.screenshot("refused-person").await;

    // And a scope wider than her own: the form is shown again with her values and the words.
    b.select("See mailboxes in the list", "All").await;
    b.click_button("Save").await;
    let shown = b.text("#save-error").await;
    let current = app
        .access()
        .get_role(authed(
            &hanna_token,
            apb::GetRoleRequest {
                id: role_id.clone(),
            },
        ))
        .await
        .expect("get")
        .into_inner();
    let said = app
        .access()
        .update_role(authed(
            &hanna_token,
            apb::UpdateRoleRequest {
                role: Some(apb::Role {
                    permissions: Some(apb::RolePermissions {
                        view_mailbox_list: apb::Scope::All as i32,
                        ..Default::default()
                    }),
                    ..current.clone()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["permissions.view_mailbox_list".into()],
                }),
            },
        ))
        .await
        .expect_err("refused over gRPC too");
    assert_eq!(said.code(), Code::PermissionDenied, "{said:?}");
    assert_eq!(shown, said.message());
    assert_eq!(
        current.permissions.map(|p| p.view_mailbox_list),
        Some(apb::Scope::None as i32),
        "nothing was saved"
    );
    let selected = b
        .find("#grant-view_mailbox_list option:checked")
        .await
        .text()
        .await
        .unwrap_or_default();
    assert_eq!(selected, "All", "the form keeps what she chose");
    b.screenshot("refused-scope").await;

    // Within her reach it works: Emil, in East.
    b.fill("Person's email address", &emil.login_email).await;
    b.click_button("Give to a person").await;
    b.wait_for_text("The role was given.").await;
    assert!(b.text("#assignments").await.contains("emil Tester"));
    b.close().await;
}

#[tokio::test]
async fn why_can_x_see_this_explains_the_path() {
    let app = spawn_web().await;
    let org = web_org(&app, 20).await;
    let hanna = app.create_user(&org, "hanna", "").await;
    let east = app.create_department(&org, "East", "", &hanna.id).await;
    let emil = app.create_user(&org, "emil", &east.id).await;
    let peer = app.create_user(&org, "peer", &east.id).await;
    for user in [&hanna, &emil, &peer] {
        app.until_known(&user.id).await;
    }
    let (mailbox, _mail) = mailbox_of(&app, &org, &emil).await;
    app.eventually(&hanna.id, "mailbox.view", &mailbox.id, true)
        .await;

    let b = Browser::start().await;
    b.sign_in(&app, &org.admin_email, PASSWORD).await;
    b.goto(&app, "/access/explain").await;
    b.screenshot("explain-form").await;
    b.axe().await;
    b.fill("Person's email address", &hanna.login_email).await;
    b.select("What they would do", "see the mailbox in the list")
        .await;
    b.fill("Mailbox (address or id)", &mailbox.email).await;
    b.click_button("Explain").await;
    let verdict = b.text("#answer-title").await;
    assert!(
        verdict.starts_with("Yes: hanna Tester may see the mailbox in the list"),
        "{verdict}"
    );
    let chain = b.text("#chain").await;
    for step in [
        format!("mailbox {}", mailbox.email),
        "owner emil Tester".into(),
        "headed by hanna Tester".into(),
    ] {
        assert!(chain.contains(&step), "the chain names {step:?}: {chain}");
    }
    assert!(chain.contains('→'), "{chain}");
    let granted = b.text("#granted-by").await;
    assert!(
        granted.contains("Supervisor")
            && granted.contains("Subordinates")
            && granted.contains("Everyone heading a department"),
        "{granted}"
    );
    b.screenshot("explain-supervisor-sees").await;
    b.axe().await;

    // Reading mail is no role's: denied, with the service's reason.
    b.select("What they would do", "read its mail").await;
    b.click_button("Explain").await;
    b.wait_for_text("No: hanna Tester may not read its mail")
        .await;
    let reason = b.text("#reason").await;
    assert!(reason.contains("reader grant"), "{reason}");
    b.screenshot("explain-read-mail-denied").await;
    b.close().await;

    // A person asking about someone else is refused the page.
    let p = Browser::start().await;
    p.sign_in(&app, &peer.login_email, PASSWORD).await;
    p.goto(
        &app,
        &format!(
            "/access/explain?email={}&permission=mailbox.view&mailbox={}",
            hanna.login_email, mailbox.id
        ),
    )
    .await;
    p.wait_for_text("You may not do this").await;
    assert!(!p.exists("#answer").await);
    p.screenshot("explain-refused").await;
    // About themselves they may ask.
    p.goto(
        &app,
        &format!(
            "/access/explain?email={}&permission=mailbox.view&mailbox={}",
            peer.login_email, mailbox.id
        ),
    )
    .await;
    p.wait_for_text("No: peer Tester may not see the mailbox in the list")
        .await;
    p.close().await;
}

#[tokio::test]
async fn grant_and_remove_a_reader() {
    let app = spawn_web().await;
    let org = web_org(&app, 20).await;
    let emil = app.create_user(&org, "emil", "").await;
    let olga = app.create_user(&org, "olga", "").await;
    for user in [&emil, &olga] {
        app.until_known(&user.id).await;
    }
    let (mailbox, _mail) = mailbox_of(&app, &org, &emil).await;

    let b = Browser::start().await;
    b.sign_in(&app, &emil.login_email, PASSWORD).await;
    let page = format!("/mailboxes/{}/access", mailbox.id);
    b.goto(&app, &page).await;
    let readers = b.text("#readers").await;
    assert!(
        readers.contains("emil Tester") && readers.contains("Owner"),
        "{readers}"
    );
    assert!(!readers.contains("olga Tester"), "{readers}");
    b.screenshot("readers-owner-only").await;
    b.axe().await;

    // An address nobody has: said next to the field.
    b.fill("Person's email address", &org.address("nobody"))
        .await;
    b.click_button("Give read access").await;
    let error = b.text("#add-error").await;
    assert!(error.contains("Nobody in your organisation"), "{error}");

    b.fill("Person's email address", &olga.login_email).await;
    b.click_button("Give read access").await;
    b.wait_for_text("Read access was given.").await;
    let readers = b.text("#readers").await;
    assert!(readers.contains("olga Tester"), "{readers}");
    assert!(app.can(&olga.id, "mailbox.read_mail", &mailbox.id).await);
    b.screenshot("readers-olga-added").await;
    b.axe().await;

    b.click_button("Take read access away from olga Tester")
        .await;
    b.wait_for_text("Read access was taken away.").await;
    let readers = b.text("#readers").await;
    assert!(!readers.contains("olga Tester"), "{readers}");
    assert!(!app.can(&olga.id, "mailbox.read_mail", &mailbox.id).await);
    b.screenshot("readers-olga-removed").await;

    // Emil configures nothing: the roles page is a read-only list, with his own roles.
    b.goto(&app, "/access/roles").await;
    b.wait_for("#read-only").await;
    assert!(!b.exists("#roles-matrix select").await, "nothing editable");
    assert!(!b.exists("#create-name").await, "no create form");
    let mine = b.text("#my-roles").await;
    assert!(mine.contains("Manager"), "{mine}");
    b.screenshot("roles-read-only").await;
    b.axe().await;
    b.close().await;
}
