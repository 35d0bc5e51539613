//! Benchmark of a bulk invitation: one CreateInvitations call with N addresses (default
//! 1,000), timed until all N mails are in an SMTP server's maildir (an aiosmtpd server of the
//! benchmark's own on loopback). Beside it, the same N mails sent straight through lettre's
//! pooled transport to the same server, so the figure reads as a ratio from one run.
//! Run with `.ci/bench invitations [--addresses N]`.

use std::time::{Duration, Instant};

use clap::Parser;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use mailroom_proto::invitations::v1 as ipb;
use mailroom_tests::{authed, spawn_app_with, AppOptions, SmtpServer};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
struct Args {
    /// Addresses in the one call.
    #[arg(long, default_value_t = 1_000)]
    addresses: usize,
    /// Mails sent at once (the service's delivery concurrency and SMTP pool).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
}

fn delivered(server: &SmtpServer) -> usize {
    std::fs::read_dir(server.maildir.join("new"))
        .map(|d| d.count())
        .unwrap_or(0)
}

async fn until_delivered(server: &SmtpServer, n: usize, started: Instant) -> Duration {
    let deadline = started + Duration::from_secs(300);
    while delivered(server) < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} mails arrived",
            delivered(server)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let n = args.addresses;
    let app = spawn_app_with(AppOptions {
        with_access: true,
        ..Default::default()
    })
    .await;
    let server = SmtpServer::start();
    let stop = CancellationToken::new();
    let invitations = app
        .start_invitations(stop.clone(), |c| {
            c.smtp.port = server.port;
            c.smtp.pool_size = args.concurrency as u32;
            c.delivery_concurrency = args.concurrency;
            c.invites_per_inviter_per_hour = u32::MAX;
            c.invites_per_org_per_hour = u32::MAX;
        })
        .await;
    let org = app.create_org(0).await;
    app.until_known(&org.admin_id).await;
    let emails: Vec<String> = (0..n)
        .map(|k| org.address(&format!("hire{k:05}")))
        .collect();

    // Mailroom: one call, then every mail in the maildir.
    let started = Instant::now();
    let answer = invitations
        .clone()
        .create_invitations(authed(
            &org.admin_token,
            ipb::CreateInvitationsRequest {
                emails: emails.join("\n"),
                message: "Welcome to the team!".into(),
                ..Default::default()
            },
        ))
        .await?
        .into_inner();
    let call = started.elapsed();
    anyhow::ensure!(
        answer.invitations.len() == n,
        "{} invited, {} refused: {:?}",
        answer.invitations.len(),
        answer.rejected.len(),
        answer.rejected.first()
    );
    let mailroom = until_delivered(&server, n, started).await;
    stop.cancel();

    // The same mails straight through lettre, to the same server.
    let raw_server = SmtpServer::start();
    let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(raw_server.port)
        .pool_config(lettre::transport::smtp::PoolConfig::new().max_size(args.concurrency as u32))
        .build();
    let started = Instant::now();
    let sends = futures::stream::iter(emails.iter().map(|to| {
        let transport = transport.clone();
        let message = Message::builder()
            .from("Mailroom <no-reply@mailroom.local>".parse().expect("from"))
            .to(to.parse().expect("to"))
            .subject("Ada Admin invites you to join Acme")
            .body(format!(
                "Hello,\n\nopen https://mailroom.test/invite?token={}\n",
                "x".repeat(43)
            ))
            .expect("message");
        async move { transport.send(message).await }
    }));
    use futures::StreamExt;
    let results: Vec<_> = sends.buffer_unordered(args.concurrency).collect().await;
    anyhow::ensure!(results.iter().all(Result::is_ok), "raw sends failed");
    let raw = until_delivered(&raw_server, n, started).await;

    println!(
        "bulk invitation of {n} addresses in one call ({} at once)",
        args.concurrency
    );
    println!(
        "  CreateInvitations answered in        {:>8.0} ms",
        call.as_secs_f64() * 1e3
    );
    println!(
        "  all {n} mails in the SMTP server in {:>8.0} ms  ({:.0} mails/s)   goal ≤ 10,000 ms",
        mailroom.as_secs_f64() * 1e3,
        n as f64 / mailroom.as_secs_f64()
    );
    println!(
        "  lettre alone, same mails and server   {:>8.0} ms  ({:.0} mails/s)",
        raw.as_secs_f64() * 1e3,
        n as f64 / raw.as_secs_f64()
    );
    println!(
        "  Mailroom / bare SMTP time             {:>8.2}×",
        mailroom.as_secs_f64() / raw.as_secs_f64()
    );
    Ok(())
}
