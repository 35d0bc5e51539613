//! "Manage user mailboxes" in a browser: the admin's table with its controls, the filter bar,
//! sorting and pages, columns saved as the person's list view, sync now, connecting with a
//! wrong password, the supervisor who sees their people's rows and nothing to change, and the
//! whole page with JavaScript off. Mailboxes are Dovecot's `boxNN@bulk.test`, connected over
//! gRPC as the admin (set-up, not the thing under test).

use std::time::{Duration, Instant};

use mailroom_proto::identity::v1 as pb;
use mailroom_proto::mailboxes::v1 as mpb;
use mailroom_tests::browser::{Browser, BrowserOptions};
use mailroom_tests::{access, authed, TestApp, TestOrg, PASSWORD};

use super::{connect_test_mailbox, dovecot_server, spawn_web, web_org};

/// Dovecot's users box01..box24@bulk.test share this password.
const BULK_PASSWORD: &str = "bulk-pass";

fn bulk(n: u32) -> String {
    format!("box{n:02}@bulk.test")
}

fn server(var: &str) -> mpb::ServerSettings {
    dovecot_server(var, "")
}

/// Connects `email` for `owner` (the admin when empty), retrying while the registry has not
/// heard of a just-made user.
async fn connect(
    app: &TestApp,
    org: &TestOrg,
    email: &str,
    owner: &str,
    name: &str,
) -> mpb::Mailbox {
    connect_test_mailbox(
        app,
        org,
        mpb::Mailbox {
            email: email.into(),
            owner_user_id: owner.into(),
            name: name.into(),
            sender_name: format!("Sender {name}"),
            ..Default::default()
        },
        "",
        BULK_PASSWORD,
    )
    .await
}

/// The addresses of the table's rows, in order.
async fn rows(b: &Browser) -> Vec<String> {
    b.texts("#mailbox-table tbody th[scope=row] .address").await
}

/// Reloads `path` until the table shows `n` rows (access control learns of people and
/// heads from events, a moment after identity answers).
async fn until_rows(b: &Browser, app: &TestApp, path: &str, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        b.goto(app, path).await;
        b.wait_for("#mailbox-table").await;
        let seen = rows(b).await;
        if seen.len() == n {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "expected {n} rows on {path}, see {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn admin_sees_rows_and_controls() {
    let app = spawn_web().await;
    let org = web_org(&app, 0).await;
    let worker = app.create_user(&org, "worker", "").await;
    connect(&app, &org, &bulk(1), "", "Admin box").await;
    connect(&app, &org, &bulk(2), &worker.id, "Worker box").await;

    let b = Browser::start().await;
    b.sign_in(&app, &org.admin_email, PASSWORD).await;
    let seen = until_rows(&b, &app, "/mailboxes", 2).await;
    assert_eq!(seen, vec![bulk(1), bulk(2)]);
    let table = b.text("#mailbox-table").await;
    assert!(table.contains("2 mailboxes"), "{table}");
    assert!(table.contains("worker Tester"), "the owner's name: {table}");
    assert!(table.contains("Worker box"), "{table}");
    // Every row has its sync icon and its menu; the page offers connecting.
    assert_eq!(b.texts("#mailbox-table td.synced button").await.len(), 2);
    assert_eq!(b.texts("#mailbox-table details.menu").await.len(), 2);
    assert!(b.exists("a[href='/mailboxes/connect']").await);
    assert!(b.exists("a[href='/mailboxes/connect/many']").await);
    // The admin owns box01, so may read its mail; not the worker's.
    let row1 = "tr:has(th .address) a[href$='/mail']";
    assert_eq!(
        b.texts(row1).await.len(),
        1,
        "one Mail link: the admin's own"
    );
    b.screenshot("admin-table").await;
    b.axe().await;

    // The row menu opens and leads to the edit page.
    b.find("#mailbox-table tbody tr:nth-child(2) details.menu summary")
        .await
        .click()
        .await
        .expect("open the row menu");
    b.screenshot("row-menu").await;
    b.find("#mailbox-table tbody tr:nth-child(2) details.menu a[href$='/edit']")
        .await
        .click()
        .await
        .expect("edit");
    b.wait_for_text("Edit mailbox").await;
    b.fill("Sender name", "Worker Renamed").await;
    b.screenshot("edit").await;
    b.axe().await;
    b.click_button("Save").await;
    b.wait_for_text("The mailbox is saved.").await;
    assert!(b.text("#mailbox-table").await.contains("Worker box"));

    // A dismissed owner is marked (the registry hears of it from identity's events).
    app.identity
        .clone()
        .dismiss_user(authed(
            &org.admin_token,
            pb::DismissUserRequest {
                id: worker.id.clone(),
            },
        ))
        .await
        .expect("the admin dismisses the worker");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !b.exists("#mailbox-table .tag.warn").await {
        assert!(
            Instant::now() < deadline,
            "no dismissed tag within 20 s: {}",
            b.text("#mailbox-table").await
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        b.goto(&app, "/mailboxes").await;
    }
    assert_eq!(b.text("#mailbox-table .tag.warn").await, "dismissed");
    b.screenshot("dismissed-owner").await;
    b.close().await;
}

#[tokio::test]
async fn filter_and_sort_narrow_the_table() {
    let app = spawn_web().await;
    let org = web_org(&app, 0).await;
    let ann = app.create_user(&org, "ann", "").await;
    connect(&app, &org, &bulk(3), "", "Alpha").await;
    connect(&app, &org, &bulk(4), &ann.id, "Backup mailbox").await;
    connect(&app, &org, &bulk(5), "", "Gamma").await;

    let b = Browser::start().await;
    b.sign_in(&app, &org.admin_email, PASSWORD).await;
    let all = until_rows(&b, &app, "/mailboxes", 3).await;
    assert_eq!(all, vec![bulk(3), bulk(4), bulk(5)]);

    // Mailbox name.
    b.fill("Mailbox name", "backup").await;
    b.click_button("Apply filter").await;
    b.wait_for_text("1 mailbox").await;
    assert_eq!(rows(&b).await, vec![bulk(4)]);
    assert!(
        b.url().await.as_str().contains("mailbox=backup"),
        "the query is the state"
    );
    b.screenshot("filtered-by-name").await;

    // Address, and an address with a quote in it matches nothing rather than everything.
    b.goto(&app, "/mailboxes").await;
    b.fill("Email address", "box05").await;
    b.click_button("Apply filter").await;
    b.wait_for_text("1 mailbox").await;
    assert_eq!(rows(&b).await, vec![bulk(5)]);
    b.goto(&app, "/mailboxes").await;
    b.fill("Email address", r#"a" OR email:""#).await;
    b.click_button("Apply filter").await;
    b.wait_for_text("0 mailboxes").await;

    // Access by (an address, resolved to the person): ann reads her own.
    b.goto(&app, "/mailboxes").await;
    b.fill("Access by (email)", &ann.login_email).await;
    b.click_button("Apply filter").await;
    b.wait_for_text("1 mailbox").await;
    assert_eq!(rows(&b).await, vec![bulk(4)]);

    // Not synced for 0+ days keeps all; in CRM = yes keeps none.
    b.goto(&app, "/mailboxes").await;
    b.select("In CRM", "Yes").await;
    b.click_button("Apply filter").await;
    b.wait_for_text("0 mailboxes").await;

    // Sort by address, then again: descending, with aria-sort.
    b.goto(&app, "/mailboxes?sort=").await;
    b.click_link("Email address").await;
    b.wait_for("th[aria-sort=ascending]").await;
    assert_eq!(rows(&b).await, vec![bulk(3), bulk(4), bulk(5)]);
    b.click_link("Email address ▲").await;
    b.wait_for("th[aria-sort=descending]").await;
    assert_eq!(rows(&b).await, vec![bulk(5), bulk(4), bulk(3)]);
    b.screenshot("sorted-desc").await;

    // The advanced filter's mistakes are the registry's words, under the field, 422.
    b.goto(&app, "/mailboxes").await;
    b.find("details:has(#f-advanced) summary")
        .await
        .click()
        .await
        .expect("open the advanced filter");
    b.fill("Filter expression", r#"colour = "red""#).await;
    b.click_button("Apply filter").await;
    b.wait_for("#e-advanced").await;
    let said = b.text("#e-advanced").await;
    assert!(
        said.contains("colour"),
        "the registry names the field: {said}"
    );
    b.screenshot("advanced-error").await;
    b.axe().await;

    // Keyset pages of two: Next, Next is absent on the last, Previous comes back.
    app.mailboxes()
        .update_list_view(authed(
            &org.admin_token,
            mpb::UpdateListViewRequest {
                view: Some(mpb::ListView {
                    columns: vec!["employee".into(), "email".into(), "name".into()],
                    filter: String::new(),
                    order_by: "email".into(),
                    page_size: 2,
                }),
            },
        ))
        .await
        .expect("a page size of two");
    b.goto(&app, "/mailboxes").await;
    assert_eq!(rows(&b).await, vec![bulk(3), bulk(4)]);
    b.click_link("Next").await;
    b.wait_for("a[rel=prev]").await;
    assert_eq!(rows(&b).await, vec![bulk(5)]);
    assert!(!b.exists("a[rel=next]").await);
    b.screenshot("page-two").await;
    b.click_link("Previous").await;
    b.wait_for("a[rel=next]").await;
    assert_eq!(rows(&b).await, vec![bulk(3), bulk(4)]);
    b.close().await;
}

#[tokio::test]
async fn columns_saved_and_restored() {
    let app = spawn_web().await;
    let org = web_org(&app, 0).await;
    connect(&app, &org, &bulk(6), "", "Columns").await;

    let b = Browser::start().await;
    b.sign_in(&app, &org.admin_email, PASSWORD).await;
    until_rows(&b, &app, "/mailboxes", 1).await;
    let headers = b.texts("#mailbox-table thead th").await;
    assert!(
        headers.iter().any(|h| h.starts_with("Disk space")),
        "{headers:?}"
    );
    assert!(!headers.iter().any(|h| h == "Sender name"), "{headers:?}");

    b.find("details.columns summary")
        .await
        .click()
        .await
        .expect("open ⚙");
    // (The filter bar has a "Sender name" field too: the column's box by its id.)
    b.find("#col-sender_name")
        .await
        .click()
        .await
        .expect("tick the Sender name column");
    b.uncheck("Disk space (MB)").await;
    b.screenshot("columns-menu").await;
    b.click_button("Save columns").await;
    b.wait_for_text("Your columns are saved.").await;
    let headers = b.texts("#mailbox-table thead th").await;
    assert!(headers.iter().any(|h| h == "Sender name"), "{headers:?}");
    assert!(
        !headers.iter().any(|h| h.starts_with("Disk space")),
        "{headers:?}"
    );
    assert!(b.text("#mailbox-table").await.contains("Sender Columns"));
    b.close().await;

    // Saved as the person's list view: another browser shows the same.
    let view = app
        .mailboxes()
        .get_list_view(authed(&org.admin_token, mpb::GetListViewRequest {}))
        .await
        .expect("the saved view")
        .into_inner();
    assert!(view.columns.contains(&"sender_name".to_owned()), "{view:?}");
    assert!(!view.columns.contains(&"disk_mb".to_owned()), "{view:?}");
    let again = Browser::start().await;
    again.sign_in(&app, &org.admin_email, PASSWORD).await;
    again.goto(&app, "/mailboxes").await;
    let headers = again.texts("#mailbox-table thead th").await;
    assert!(headers.iter().any(|h| h == "Sender name"), "{headers:?}");
    again.screenshot("restored").await;
    again.close().await;
}

/// The row's last sync time (`<time datetime>`), empty while never synced.
async fn last_synced(app: &TestApp, org: &TestOrg, id: &str) -> Option<prost_types::Timestamp> {
    app.mailboxes()
        .get_mailbox(authed(
            &org.admin_token,
            mpb::GetMailboxRequest { id: id.into() },
        ))
        .await
        .ok()
        .and_then(|m| m.into_inner().last_sync_time)
}

#[tokio::test]
async fn sync_now_changes_last_synced() {
    let app = spawn_web().await;
    let org = web_org(&app, 0).await;
    let mailbox = connect(&app, &org, &bulk(7), "", "Sync me").await;
    // The first sync happens by itself; wait for it so "now" has something to change.
    let deadline = Instant::now() + Duration::from_secs(40);
    let first = loop {
        if let Some(t) = last_synced(&app, &org, &mailbox.id).await {
            break Some(t);
        }
        if Instant::now() > deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };

    let b = Browser::start().await;
    b.sign_in(&app, &org.admin_email, PASSWORD).await;
    until_rows(&b, &app, "/mailboxes", 1).await;
    let before = b
        .find("#mailbox-table td.synced time")
        .await
        .attr("datetime")
        .await
        .ok()
        .flatten()
        .unwrap_or_default();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    b.find("#mailbox-table details.menu summary")
        .await
        .click()
        .await
        .expect("open the row menu");
    b.click_button("Sync now").await;
    b.wait_for_text("Sync requested").await;
    b.screenshot("sync-requested").await;
    if first.is_none() {
        // No first sync within 40 s: the request reaching the registry is what can be shown.
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        b.goto(&app, "/mailboxes").await;
        let now = b
            .find("#mailbox-table td.synced time")
            .await
            .attr("datetime")
            .await
            .ok()
            .flatten()
            .unwrap_or_default();
        if now != before && !now.is_empty() {
            b.screenshot("synced").await;
            break;
        }
        assert!(
            Instant::now() < deadline,
            "last synced stayed {before} for 30 s after Sync now"
        );
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    b.close().await;
}

#[tokio::test]
async fn connect_with_wrong_password_shows_the_reason() {
    let app = spawn_web().await;
    let org = web_org(&app, 0).await;
    let (imap, smtp) = (
        server("MAILROOM_IMAP_ADDR"),
        server("MAILROOM_SUBMISSION_ADDR"),
    );

    let b = Browser::start().await;
    b.sign_in(&app, &org.admin_email, PASSWORD).await;
    b.goto(&app, "/mailboxes").await;
    b.click_link("Connect a mailbox").await;
    b.wait_for_text("Connect a mailbox").await;
    b.fill("Email address", &bulk(8)).await;
    b.fill("Password", "wrong-password").await;
    b.fill("IMAP server", &imap.host).await;
    b.fill("IMAP port", &imap.port.to_string()).await;
    b.select("IMAP security", "None (plain text)").await;
    b.fill("SMTP server", &smtp.host).await;
    b.fill("SMTP port", &smtp.port.to_string()).await;
    b.select("SMTP security", "None (plain text)").await;
    b.click_button("Connect").await;
    b.wait_for(".alert[role=alert]").await;
    let said = b.text(".alert[role=alert]").await;
    assert!(said.contains("IMAP login failed"), "{said}");
    assert!(said.contains("password"), "{said}");
    // What was typed stays, except the password.
    let source = b.source().await;
    assert!(source.contains(&bulk(8)));
    assert!(
        !source.contains("wrong-password"),
        "the password is not written back"
    );
    b.screenshot("wrong-password").await;
    b.axe().await;

    // The right one connects and lands on the list with a notice.
    b.fill("Password", BULK_PASSWORD).await;
    b.click_button("Connect").await;
    b.wait_for_text("The mailbox is connected.").await;
    assert_eq!(rows(&b).await, vec![bulk(8)]);
    b.close().await;
}

#[tokio::test]
async fn supervisor_sees_subordinates_and_nothing_editable() {
    let app = spawn_web().await;
    let org = web_org(&app, 0).await;
    let sales = app.create_department(&org, "Sales", "", "").await;
    let boss = app.create_user(&org, "boss", &sales.id).await;
    let worker: pb::User = app.create_user(&org, "worker", &sales.id).await;
    app.set_head(&org, &sales, &boss.id).await;
    connect(&app, &org, &bulk(9), &worker.id, "Worker's").await;
    connect(&app, &org, &bulk(10), "", "Admin's").await;

    let b = Browser::start().await;
    b.sign_in(&app, &boss.login_email, PASSWORD).await;
    let seen = until_rows(&b, &app, "/mailboxes", 1).await;
    assert_eq!(seen, vec![bulk(9)], "only the subordinate's mailbox");
    assert!(
        !b.exists("#mailbox-table details.menu").await,
        "no row menu"
    );
    assert!(
        !b.exists("#mailbox-table td.synced button").await,
        "no sync icon"
    );
    assert!(
        !b.exists("a[href^='/mailboxes/connect']").await,
        "no connect"
    );
    assert!(!b.exists("a[href$='/edit']").await);
    b.screenshot("supervisor").await;
    b.axe().await;

    // A direct post is refused by the registry, not just hidden.
    b.goto(
        &app,
        &format!("/mailboxes/{}/edit", "00000000-0000-0000-0000-000000000000"),
    )
    .await;
    let text = b.body_text().await;
    assert!(!text.contains("Edit mailbox"), "{text}");
    b.close().await;
}

/// The controls a row offers follow the person's scopes (asked of access control while the
/// registry lists): a supervisor changes and syncs their own mailbox, not their worker's, and
/// reads the worker's mail once granted; the access-by column names the granted reader.
#[tokio::test]
async fn controls_follow_the_persons_scopes() {
    let app = spawn_web().await;
    let org = web_org(&app, 0).await;
    let sales = app.create_department(&org, "Sales", "", "").await;
    let boss = app.create_user(&org, "boss", &sales.id).await;
    let worker: pb::User = app.create_user(&org, "worker", &sales.id).await;
    app.set_head(&org, &sales, &boss.id).await;
    let own = connect(&app, &org, &bulk(16), &boss.id, "Boss's").await;
    let theirs = connect(&app, &org, &bulk(17), &worker.id, "Worker's").await;
    app.write_when_known(
        &org.admin_token,
        vec![access::on_mailbox(&theirs.id, "reader", &boss.id)],
    )
    .await;

    let b = Browser::start().await;
    b.sign_in(&app, &boss.login_email, PASSWORD).await;
    until_rows(&b, &app, "/mailboxes", 2).await;
    let own_row = format!("#mailbox-table tr[data-id='{}']", own.id);
    let their_row = format!("#mailbox-table tr[data-id='{}']", theirs.id);
    // The grant reaches access control's replica a moment after it is written.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !b.exists(&format!("{their_row} a[href$='/mail']")).await {
        assert!(
            Instant::now() < deadline,
            "no Mail link on the granted row within 20 s: {}",
            b.text(&their_row).await
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        b.goto(&app, "/mailboxes").await;
    }
    assert!(b.exists(&format!("{own_row} a[href$='/edit']")).await);
    assert!(b.exists(&format!("{own_row} a[href$='/transfer']")).await);
    assert!(b.exists(&format!("{own_row} td.synced button")).await);
    assert!(
        b.exists(&format!("{own_row} a[href$='/mail']")).await,
        "the owner reads their own mail"
    );
    assert!(!b.exists(&format!("{their_row} a[href$='/edit']")).await);
    assert!(
        !b.exists(&format!("{their_row} a[href$='/disconnect']"))
            .await
    );
    assert!(!b.exists(&format!("{their_row} td.synced button")).await);
    assert_eq!(
        b.texts(&format!("{their_row} details.menu .menu-body a"))
            .await
            .len(),
        1,
        "only Mail on the worker's row"
    );
    let their_text = b.text(&their_row).await;
    assert!(
        their_text.contains("boss Tester") && their_text.contains("worker Tester"),
        "access by names the reader and the owner: {their_text}"
    );
    assert!(
        b.exists("a[href='/mailboxes/connect']").await,
        "connecting is offered to who may change a listed mailbox"
    );
    b.screenshot("scoped-controls").await;
    b.axe().await;
    b.close().await;
}

#[tokio::test]
async fn works_without_javascript() {
    let app = spawn_web().await;
    let org = web_org(&app, 0).await;
    connect(&app, &org, &bulk(11), "", "One").await;
    connect(&app, &org, &bulk(12), "", "Two").await;

    let b = Browser::start_with(BrowserOptions {
        javascript: false,
        ..BrowserOptions::default()
    })
    .await;
    b.sign_in(&app, &org.admin_email, PASSWORD).await;
    until_rows(&b, &app, "/mailboxes", 2).await;
    // Filter (a plain GET), sort (a link), sync (a POST and a 303 back with the filter kept).
    b.fill("Mailbox name", "two").await;
    b.click_button("Apply filter").await;
    b.wait_for_text("1 mailbox").await;
    assert_eq!(rows(&b).await, vec![bulk(12)]);
    b.goto(&app, "/mailboxes?sort=").await;
    b.click_link("Email address").await;
    b.click_link("Email address ▲").await;
    b.wait_for("th[aria-sort=descending]").await;
    assert_eq!(rows(&b).await, vec![bulk(12), bulk(11)]);
    b.find("#mailbox-table td.synced button")
        .await
        .click()
        .await
        .expect("the sync icon");
    b.wait_for_text("Sync requested").await;
    assert!(
        b.url().await.as_str().contains("sort=email+desc"),
        "back where the person was"
    );
    assert_eq!(rows(&b).await, vec![bulk(12), bulk(11)]);
    b.screenshot("no-js-synced").await;
    b.close().await;
}
