//! The services' own mail (invitations, password resets) through the SMTP sender's pool of
//! connections, against real SMTP servers (aiosmtpd) on loopback: mails reach the relay over
//! the connections it keeps, a relay that restarts between mails costs no mail, and a relay
//! that is down is an error the callers treat as "try again". What the pool says line by line
//! (one connection for mails one after another, nothing sent when STARTTLS is required and not
//! offered, a deadline for a relay that never greets) is tested in `mailroom-mail`'s
//! `smtp::pool`.

use std::time::Duration;

use mailroom_mail::smtp::{Relay, SendError, Sender};
use mailroom_tests::SmtpServer;

fn sender(port: u16, pool_size: u32) -> Sender {
    Sender::new(
        &Relay {
            host: "127.0.0.1",
            port,
            security: "none",
            username: None,
            password: None,
            timeout: Duration::from_secs(5),
            pool_size: Some(pool_size),
        },
        "Mailroom <no-reply@mailroom.test>",
    )
    .expect("the relay settings are valid")
}

fn mail(sender: &Sender, to: &str, n: usize) -> lettre::Message {
    sender
        .message()
        .to(to.parse().expect("an address"))
        .subject(format!("mail {n}"))
        .body(format!("body of mail {n}\r\n"))
        .expect("a message")
}

/// Waits until `server` holds `n` messages.
async fn until_kept(server: &SmtpServer, n: usize) -> Vec<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let kept = server.messages();
        if kept.len() >= n || std::time::Instant::now() > deadline {
            return kept;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn mails_sent_at_once_all_arrive_and_a_restarted_relay_costs_no_mail() {
    let mut server = SmtpServer::start();
    let sender = sender(server.port, 3);
    let sends = (0..12).map(|n| {
        let sender = sender.clone();
        async move { sender.send(mail(&sender, "ann@example.test", n)).await }
    });
    for sent in futures::future::join_all(sends).await {
        sent.expect("the relay takes every mail");
    }
    let kept = until_kept(&server, 12).await;
    assert_eq!(kept.len(), 12, "each mail once");
    for n in 0..12 {
        assert!(
            kept.iter()
                .any(|m| m.contains(&format!("Subject: mail {n}\r\n"))
                    || m.contains(&format!("Subject: mail {n}\n"))),
            "mail {n} arrived"
        );
    }

    // The relay restarts: the connections the sender kept are dead. The next mail finds
    // that out before it is handed over (a NOOP) and goes over a new connection.
    let port = server.port;
    server.stop();
    drop(server);
    let server = SmtpServer::start_on(port);
    sender
        .send(mail(&sender, "bob@example.test", 99))
        .await
        .expect("a mail after the relay restarted goes out");
    let kept = until_kept(&server, 1).await;
    assert_eq!(kept.len(), 1);
    assert!(kept[0].contains("mail 99"), "{}", kept[0]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_relay_that_is_down_is_not_a_refusal_and_its_address_stays_out_of_the_error() {
    let port = SmtpServer::free_port();
    let sender = sender(port, 2);
    let err = sender
        .send(mail(&sender, "ann@example.test", 1))
        .await
        .expect_err("nothing listens");
    assert!(matches!(err, SendError::Connect(_)), "{err:?}");
    assert!(!err.is_permanent(), "worth trying again: {err}");
    // The text reaches organisation admins (an invitation's failure reason): the operator's
    // relay is named in the log, not there.
    assert!(
        err.to_string().contains("could not be reached")
            && !err.to_string().contains(&port.to_string()),
        "{err}"
    );
}
