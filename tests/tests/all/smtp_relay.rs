//! The services' own mail (invitations, password resets) through the SMTP sender's pool of
//! connections, against real SMTP servers (aiosmtpd) on loopback: mails reach the relay over
//! the connections it keeps, a relay that restarts between mails costs no mail, and a relay
//! that is down is an error the callers treat as "try again". A relay of the test's own that
//! speaks SMTP line by line shows what the sender says: one connection for mails one after
//! another, nothing sent when STARTTLS is required and not offered, and a deadline for a
//! relay that never greets.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use mailroom_mail::smtp::{Relay, SendError, Sender};
use mailroom_tests::SmtpServer;

fn sender(port: u16, pool_size: u32) -> Sender {
    sender_with(port, pool_size, "none", Duration::from_secs(5))
}

fn sender_with(port: u16, pool_size: u32, security: &str, timeout: Duration) -> Sender {
    let password = secrecy::SecretString::from("relay-password");
    Sender::new(
        &Relay {
            host: "127.0.0.1",
            port,
            security,
            username: Some("mailroom"),
            password: (security != "none").then_some(&password),
            timeout,
            pool_size: Some(pool_size),
        },
        "Mailroom <no-reply@mailroom.test>",
    )
    .expect("the relay settings are valid")
}

/// A relay of the test's own on loopback that answers SMTP line by line (no STARTTLS, no
/// AUTH offered), or, `silent`, accepts connections and never greets. It keeps every
/// command line it was sent and counts connections.
struct LineRelay {
    port: u16,
    connections: Arc<AtomicUsize>,
    heard: Arc<Mutex<Vec<String>>>,
}

impl LineRelay {
    async fn start(silent: bool) -> LineRelay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let port = listener.local_addr().expect("local addr").port();
        let connections = Arc::new(AtomicUsize::new(0));
        let heard = Arc::new(Mutex::new(Vec::new()));
        let (count, log) = (connections.clone(), heard.clone());
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let log = log.clone();
                tokio::spawn(async move {
                    if silent {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                        drop(socket);
                        return;
                    }
                    let _ = converse(socket, log).await;
                });
            }
        });
        LineRelay {
            port,
            connections,
            heard,
        }
    }

    fn heard(&self) -> Vec<String> {
        self.heard.lock().expect("log").clone()
    }
}

async fn converse(
    socket: tokio::net::TcpStream,
    log: Arc<Mutex<Vec<String>>>,
) -> std::io::Result<()> {
    let (read, mut write) = socket.into_split();
    let mut lines = BufReader::new(read).lines();
    write.write_all(b"220 relay.test ESMTP\r\n").await?;
    let mut in_data = false;
    while let Some(line) = lines.next_line().await? {
        if in_data {
            if line == "." {
                in_data = false;
                write.write_all(b"250 queued\r\n").await?;
            }
            continue;
        }
        log.lock().expect("log").push(line.clone());
        let verb = line.split(' ').next().unwrap_or("").to_ascii_uppercase();
        let answer: &[u8] = match verb.as_str() {
            "EHLO" => b"250-relay.test\r\n250 8BITMIME\r\n",
            "DATA" => {
                in_data = true;
                b"354 go ahead\r\n"
            }
            "QUIT" => {
                write.write_all(b"221 bye\r\n").await?;
                return Ok(());
            }
            "MAIL" | "RCPT" | "NOOP" | "RSET" => b"250 ok\r\n",
            _ => b"502 not implemented\r\n",
        };
        write.write_all(answer).await?;
    }
    Ok(())
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

#[tokio::test(flavor = "multi_thread")]
async fn mails_one_after_another_go_over_one_connection() {
    let relay = LineRelay::start(false).await;
    let sender = sender(relay.port, 4);
    for n in 0..5 {
        sender
            .send(mail(&sender, "ann@example.test", n))
            .await
            .expect("the relay takes the mail");
    }
    assert_eq!(
        relay.connections.load(Ordering::SeqCst),
        1,
        "{:?}",
        relay.heard()
    );
    let heard = relay.heard();
    assert_eq!(
        heard.iter().filter(|l| l.starts_with("EHLO")).count(),
        1,
        "{heard:?}"
    );
    assert_eq!(
        heard.iter().filter(|l| l.starts_with("MAIL FROM")).count(),
        5,
        "{heard:?}"
    );
    // Each mail after the first asks whether the kept connection still answers.
    assert_eq!(
        heard.iter().filter(|l| *l == "NOOP").count(),
        4,
        "{heard:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_relay_that_does_not_offer_starttls_when_it_is_required_gets_no_login_and_no_mail() {
    let relay = LineRelay::start(false).await;
    let sender = sender_with(relay.port, 2, "starttls", Duration::from_secs(5));
    let err = sender
        .send(mail(&sender, "ann@example.test", 1))
        .await
        .expect_err("STARTTLS is required");
    assert!(matches!(err, SendError::Setup(_)), "{err:?}");
    assert!(!err.is_client(), "not an address problem: {err}");
    let heard = relay.heard();
    assert!(
        heard
            .iter()
            .all(|l| !l.starts_with("AUTH") && !l.starts_with("MAIL") && !l.starts_with("RCPT")),
        "nothing but the greeting in plain text: {heard:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_relay_that_never_greets_is_given_up_at_the_deadline() {
    let relay = LineRelay::start(true).await;
    let sender = sender_with(relay.port, 2, "none", Duration::from_millis(500));
    let started = Instant::now();
    let err = sender
        .send(mail(&sender, "ann@example.test", 1))
        .await
        .expect_err("the relay never greets");
    assert!(matches!(err, SendError::Timeout { .. }), "{err:?}");
    assert!(!err.is_permanent(), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}
