//! The invitations service against real parts: identity, access control, PostgreSQL, Redis,
//! the Kafka-protocol broker, and real SMTP servers on loopback (the stack's sink, and
//! aiosmtpd servers of the tests' own that refuse or are down).

use mailroom_platform::kafka::Topic;
use mailroom_proto::identity::v1 as pb;
use mailroom_proto::invitations::v1 as ipb;
use mailroom_tests::{
    access, authed, mails_to, spawn_app_with, spawn_app_with_invitations, wait_for_mail,
    wait_for_mail_where, AppOptions, SmtpServer, TestApp, TestOrg,
};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

mod delivery;
mod found_by_use;
mod hostile;
mod link_abuse;
mod link_networks;
mod links;
mod seats;

const NEW_PASSWORD: &str = "a-new-employee-password";

async fn invite(
    app: &TestApp,
    token: &str,
    emails: &str,
    delivery: ipb::DeliveryMethod,
    locale: &str,
) -> Result<ipb::CreateInvitationsResponse, tonic::Status> {
    app.invitations()
        .create_invitations(authed(
            token,
            ipb::CreateInvitationsRequest {
                emails: emails.into(),
                department_id: String::new(),
                message: "Welcome aboard!\nSee you on Monday.".into(),
                delivery: delivery as i32,
                locale: locale.into(),
            },
        ))
        .await
        .map(|r| r.into_inner())
}

/// Waits until access control knows the org's admin (it follows identity's events).
async fn ready(app: &TestApp, org: &TestOrg) {
    app.until_known(&org.admin_id).await;
}

/// The token in the first invitation link of a mail's text (quoted-printable soft breaks
/// undone by the parser).
fn link_token(body: &str) -> String {
    let start = body
        .find("https://mailroom.test/invite?token=")
        .expect("the mail carries an invitation link")
        + "https://mailroom.test/invite?token=".len();
    body[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

fn parsed(raw: &str) -> mail_parser::Message<'_> {
    mail_parser::MessageParser::default()
        .parse(raw.as_bytes())
        .expect("the mail parses")
}

/// The token of the invitation link in the mail to `address` (waits for it).
async fn mailed_token(app: &TestApp, address: &str) -> String {
    let raw = wait_for_mail(app, address, Duration::from_secs(30)).await;
    link_token(&parsed(&raw).body_text(0).expect("a text body"))
}

/// Invites `address` by Mailroom's mail as the org's admin; returns the invitation and the
/// token its mail carries.
async fn invited(app: &TestApp, org: &TestOrg, address: &str) -> (ipb::Invitation, String) {
    let answer = invite(
        app,
        &org.admin_token,
        address,
        ipb::DeliveryMethod::SystemMail,
        "",
    )
    .await
    .expect("invite");
    assert_eq!(answer.invitations.len(), 1, "{:?}", answer.rejected);
    let token = mailed_token(app, address).await;
    (answer.invitations[0].clone(), token)
}

async fn accept(
    app: &TestApp,
    token: &str,
) -> Result<ipb::AcceptInvitationResponse, tonic::Status> {
    app.invitations()
        .accept_invitation(ipb::AcceptInvitationRequest {
            token: token.into(),
            first_name: "Nia".into(),
            last_name: "Newhire".into(),
            password: NEW_PASSWORD.into(),
        })
        .await
        .map(|r| r.into_inner())
}

type Client = ipb::invitation_service_client::InvitationServiceClient<tonic::transport::Channel>;

async fn invitation(client: &Client, org: &TestOrg, id: &str) -> ipb::Invitation {
    client
        .clone()
        .get_invitation(authed(
            &org.admin_token,
            ipb::GetInvitationRequest { id: id.into() },
        ))
        .await
        .expect("get invitation")
        .into_inner()
}

/// Polls an invitation until `done` holds.
async fn until(
    client: &Client,
    org: &TestOrg,
    id: &str,
    what: &str,
    done: impl Fn(&ipb::Invitation) -> bool,
) -> ipb::Invitation {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let i = invitation(client, org, id).await;
        if done(&i) {
            return i;
        }
        assert!(Instant::now() < deadline, "{what} did not happen: {i:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An admin made a moment ago, whose account access control has not heard of yet, is told to
/// retry shortly (UNAVAILABLE), not that their roles forbid inviting: the soak saw the second,
/// about once in 25 minutes, when it invited right after creating an organisation. The access
/// replica here has a database and topics of its own, so it never hears of anyone; against
/// the app's own replica the same admin may invite.
#[tokio::test(flavor = "multi_thread")]
async fn an_admin_access_has_not_heard_of_yet_is_told_to_retry_not_refused() {
    let app = spawn_app_with_invitations().await;
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let empty_database = mailroom_tests::create_database(&app.env.database_url).await;
    let deaf_access = app
        .start_access_replica_on(
            |p| {
                p.database_url = empty_database.into();
                p.kafka_topic_prefix = format!("tests.deaf{}", uuid::Uuid::new_v4().simple());
            },
            stop.clone(),
        )
        .await;
    let (behind, _) = app
        .launch_invitations(stop.clone(), |c| c.access_endpoint = deaf_access)
        .await;
    let org = app.create_org(0).await;
    ready(&app, &org).await;

    let emails = format!("{} {}", org.address("new1"), org.address("new2"));
    let request = |emails: &str| {
        authed(
            &org.admin_token,
            ipb::CreateInvitationsRequest {
                emails: emails.into(),
                delivery: ipb::DeliveryMethod::SystemMail as i32,
                ..Default::default()
            },
        )
    };
    let refused = behind
        .clone()
        .create_invitations(request(&emails))
        .await
        .expect_err("access has not heard of the admin");
    assert_eq!(
        refused.code(),
        tonic::Code::Unavailable,
        "told to retry, not refused: {refused:?}"
    );
    assert!(
        refused.message().contains("retry shortly"),
        "the message says what to do: {}",
        refused.message()
    );
    // Nothing was recorded, and once access knows the admin the same call is taken.
    let listed = app
        .invitations()
        .list_invitations(authed(
            &org.admin_token,
            ipb::ListInvitationsRequest::default(),
        ))
        .await
        .expect("list invitations")
        .into_inner();
    assert!(listed.invitations.is_empty(), "{listed:?}");
    let taken = invite(
        &app,
        &org.admin_token,
        &emails,
        ipb::DeliveryMethod::SystemMail,
        "en",
    )
    .await
    .expect("the app's own access knows the admin");
    assert_eq!(taken.invitations.len(), 2, "{taken:?}");
}
