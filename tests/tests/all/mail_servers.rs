//! The local stack's mail servers are real ones, as the mailbox registry's connection checks
//! need: Dovecot's submission service authenticates SMTP logins against the same users as its
//! IMAP, and relays what it accepts to the SMTP sink.

use std::time::Duration;

use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use mailroom_tests::{spawn_app, wait_for_mail};

fn submission(user: &str, password: &str) -> AsyncSmtpTransport<Tokio1Executor> {
    let addr = std::env::var("MAILROOM_SUBMISSION_ADDR")
        .expect("MAILROOM_SUBMISSION_ADDR is set by .ci/test (Dovecot's submission service)");
    let (host, port) = addr.rsplit_once(':').expect("host:port");
    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
        .port(port.parse().expect("port"))
        .credentials(Credentials::new(user.into(), password.into()))
        .timeout(Some(Duration::from_secs(5)))
        .build()
}

#[tokio::test]
async fn submission_checks_the_password_and_relays_to_the_sink() {
    let app = spawn_app().await;
    let password = std::env::var("MAILROOM_DEV_ADMIN_PASSWORD").unwrap_or("mailroom-dev".into());
    let good = submission("ann.lee@acme.test", &password);
    let to = format!("relay-{}@example.test", uuid::Uuid::new_v4().simple());
    let message = Message::builder()
        .from("ann.lee@acme.test".parse().expect("from"))
        .to(to.parse().expect("to"))
        .subject("submission check")
        .body("relayed".to_owned())
        .expect("message");
    good.send(message)
        .await
        .expect("the right password is accepted and the mail relayed");
    let relayed = wait_for_mail(&app, &to, Duration::from_secs(15)).await;
    assert!(relayed.contains("relayed"), "{relayed}");

    let bad = submission("ann.lee@acme.test", "not the password");
    let refused = bad
        .test_connection()
        .await
        .expect_err("a wrong password is refused");
    assert!(
        refused.to_string().contains("535") || refused.to_string().to_lowercase().contains("auth"),
        "{refused}"
    );
}
