//! Benchmark of a bulk invitation: one CreateInvitations call with N addresses (default
//! 1,000), timed until all N mails are in an SMTP server's maildir (an aiosmtpd server of the
//! benchmark's own on loopback). Beside it, the same N mails sent straight through lettre's
//! pooled transport to the same server, so the figure reads as a ratio from one run. With
//! `--rounds R` (default 3) both are run R times, in alternating order (Mailroom first in odd
//! rounds, lettre first in even ones, so neither always gets the warmer machine), each round
//! with an organisation and SMTP servers of its own; the median ratio is the figure.
//! Each round also sends the same mails through Mailroom's mail layer alone (its
//! `smtp::Sender`, whose sockets set `TCP_NODELAY`, which lettre's pool does not), right
//! after lettre: Mailroom against that is what the service adds to its own sending.
//! Run with `.ci/bench invitations [--addresses N --rounds R]`.

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
    /// Rounds of both, in alternating order; the median ratio is reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

fn delivered(server: &SmtpServer) -> usize {
    std::fs::read_dir(server.maildir.join("new"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// When the mails arrived: (time since the start, mails in the maildir), every 20 ms.
struct Arrivals {
    samples: Vec<(Duration, usize)>,
}

impl Arrivals {
    /// When the `k`th mail was in the maildir (the first sample that saw it).
    fn at(&self, k: usize) -> Duration {
        self.samples
            .iter()
            .find(|(_, count)| *count >= k)
            .map(|(t, _)| *t)
            .unwrap_or_default()
    }
}

async fn until_delivered(server: &SmtpServer, n: usize, started: Instant) -> (Duration, Arrivals) {
    let deadline = started + Duration::from_secs(300);
    let mut samples = Vec::new();
    loop {
        let count = delivered(server);
        samples.push((started.elapsed(), count));
        if count >= n {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {count} of {n} mails arrived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (started.elapsed(), Arrivals { samples })
}

/// CPU time (user + system) of process `pid` so far.
fn cpu_of(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse().ok())
        .collect();
    // Clock ticks of 10 ms (USER_HZ 100 on Linux).
    Duration::from_millis(fields.iter().sum::<u64>() * 10)
}

/// The busy and total CPU time of the whole machine so far (all cores).
fn machine_cpu() -> (Duration, Duration) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: u64 = ticks.iter().sum();
    let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
    (
        Duration::from_millis((total - idle) * 10),
        Duration::from_millis(total * 10),
    )
}

/// The process of the SMTP server writing into `server`'s maildir.
fn server_pid(server: &SmtpServer) -> Option<u32> {
    let wanted = server.maildir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            String::from_utf8_lossy(&cmdline)
                .contains(&wanted)
                .then_some(pid)
        })
}

/// (SMTP server, this process, machine busy, machine total).
type CpuSpent = [Duration; 4];

/// CPU spent by the SMTP server, this process (the services) and the machine during a phase.
struct Cpu {
    server: Option<u32>,
    server_at: Duration,
    me_at: Duration,
    machine_at: (Duration, Duration),
}

impl Cpu {
    fn start(server: &SmtpServer) -> Self {
        let server = server_pid(server);
        Self {
            server,
            server_at: server.map(cpu_of).unwrap_or_default(),
            me_at: cpu_of(std::process::id()),
            machine_at: machine_cpu(),
        }
    }

    /// (SMTP server, this process, machine busy, machine total) since the start.
    fn spent(&self) -> CpuSpent {
        let (busy, total) = machine_cpu();
        [
            self.server.map(cpu_of).unwrap_or_default() - self.server_at,
            cpu_of(std::process::id()) - self.me_at,
            busy - self.machine_at.0,
            total - self.machine_at.1,
        ]
    }
}

/// The bytes of every mail in `server`'s maildir.
fn delivered_bytes(server: &SmtpServer) -> Vec<Vec<u8>> {
    std::fs::read_dir(server.maildir.join("new"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read(e.path()).ok())
                .collect()
        })
        .unwrap_or_default()
}

fn breakdown(
    name: &str,
    n: usize,
    took: Duration,
    arrivals: &Arrivals,
    cpu: [Duration; 4],
    sizes: &[Vec<u8>],
) {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let (tenth, ninetieth) = (arrivals.at(n / 10), arrivals.at(n * 9 / 10));
    let steady = (n * 8 / 10) as f64 / (ninetieth - tenth).as_secs_f64().max(1e-3);
    let mean = sizes.iter().map(Vec::len).sum::<usize>() as f64 / sizes.len().max(1) as f64;
    println!(
        "  {name}: first mail {:.0} ms, 10 % {:.0} ms, 90 % {:.0} ms, last {:.0} ms; \
         steady {steady:.0} mails/s, last 10 % in {:.0} ms; mail {mean:.0} bytes; \
         CPU ms/mail: SMTP server {:.2}, bench process {:.2}, machine {:.2} (of {:.2})",
        ms(arrivals.at(1)),
        ms(tenth),
        ms(ninetieth),
        ms(took),
        ms(took - ninetieth),
        ms(cpu[0]) / n as f64,
        ms(cpu[1]) / n as f64,
        ms(cpu[2]) / n as f64,
        ms(cpu[3]) / n as f64,
    );
}

/// What one round of Mailroom's side measured.
struct MailroomRun {
    call: Duration,
    took: Duration,
    arrivals: Arrivals,
    cpu: CpuSpent,
    mails: Vec<Vec<u8>>,
}

/// One CreateInvitations of `emails` by `org`'s admin, timed until every mail is in `server`.
async fn mailroom_round(
    invitations: &ipb::invitation_service_client::InvitationServiceClient<
        tonic::transport::Channel,
    >,
    org: &mailroom_tests::TestOrg,
    emails: &[String],
    server: &SmtpServer,
) -> anyhow::Result<MailroomRun> {
    let n = emails.len();
    let cpu = Cpu::start(server);
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
    let (took, arrivals) = until_delivered(server, n, started).await;
    Ok(MailroomRun {
        call,
        took,
        arrivals,
        cpu: cpu.spent(),
        mails: delivered_bytes(server),
    })
}

/// The mails of a round as bare lettre sends them (the same addresses and wording).
fn lettre_messages(emails: &[String]) -> Vec<(String, Vec<u8>)> {
    emails
        .iter()
        .map(|to| {
            let message = Message::builder()
                .from("Mailroom <no-reply@mailroom.local>".parse().expect("from"))
                .to(to.parse().expect("to"))
                .subject("Ada Admin invites you to join Acme")
                .body(format!(
                    "Hello,\n\nopen https://mailroom.test/invite?token={}\n",
                    "x".repeat(43)
                ))
                .expect("message");
            (to.clone(), message.formatted())
        })
        .collect()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let n = args.addresses;
    let rounds = args.rounds.max(1);
    let app = spawn_app_with(AppOptions {
        with_access: true,
        ..Default::default()
    })
    .await;
    // One SMTP server port for the service (its setting); each round empties its maildir.
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

    println!(
        "bulk invitation of {n} addresses in one call ({} at once), {rounds} rounds in alternating order",
        args.concurrency
    );
    let mut ratios = Vec::new();
    let mut layer_ratios = Vec::new();
    let mut last = None;
    for round in 1..=rounds {
        let org = app.create_org(0).await;
        app.until_known(&org.admin_id).await;
        let emails: Vec<String> = (0..n)
            .map(|k| org.address(&format!("hire{k:05}")))
            .collect();
        empty_maildir(&server);
        let raw_server = SmtpServer::start();
        let lettre_first = round % 2 == 0;
        let layer_server = SmtpServer::start();
        // The two references back to back, lettre first in rounds 1, 4, 5, 8, …, the mail
        // layer first in the others, so neither always follows Mailroom.
        let layer_first = round % 4 == 2 || round % 4 == 3;
        let references = || async {
            let layer_run =
                || through_mail_layer(&layer_server, args.concurrency, lettre_messages(&emails));
            let lettre_run =
                || through_lettre(&raw_server, args.concurrency, lettre_messages(&emails));
            if layer_first {
                let layer = layer_run().await?;
                anyhow::Ok((lettre_run().await?, layer))
            } else {
                let raw = lettre_run().await?;
                anyhow::Ok((raw, layer_run().await?))
            }
        };
        let (mailroom, (raw, layer)) = if lettre_first {
            let references = references().await?;
            let mailroom = mailroom_round(&invitations, &org, &emails, &server).await?;
            (mailroom, references)
        } else {
            let mailroom = mailroom_round(&invitations, &org, &emails, &server).await?;
            (mailroom, references().await?)
        };
        let ratio = mailroom.took.as_secs_f64() / raw.0.as_secs_f64();
        let layer_ratio = mailroom.took.as_secs_f64() / layer.as_secs_f64();
        println!(
            "  round {round} ({} first): Mailroom {:>6.0} ms (call {:.0} ms), lettre {:>6.0} ms, {ratio:.2}×; the mail layer alone {:>6.0} ms, {layer_ratio:.2}×",
            if lettre_first { "lettre" } else { "Mailroom" },
            mailroom.took.as_secs_f64() * 1e3,
            mailroom.call.as_secs_f64() * 1e3,
            raw.0.as_secs_f64() * 1e3,
            layer.as_secs_f64() * 1e3,
        );
        ratios.push(ratio);
        layer_ratios.push(layer_ratio);
        last = Some((mailroom, raw, raw_server, emails));
    }
    stop.cancel();
    let Some((mailroom, (raw, raw_arrivals, raw_cpu), raw_server, emails)) = last else {
        anyhow::bail!("no round ran");
    };
    let raw_mails = delivered_bytes(&raw_server);

    // Mailroom's own delivered bytes (last round) replayed through lettre (`send_raw`): the
    // same work for the server as Mailroom's mails, which are larger (complete headers, the
    // whole wording).
    let replay_server = SmtpServer::start();
    let replayed: Vec<(String, Vec<u8>)> = emails
        .iter()
        .cloned()
        .zip(mailroom.mails.iter().cloned())
        .collect();
    let (replay, replay_arrivals, replay_cpu) =
        through_lettre(&replay_server, args.concurrency, replayed).await?;
    let replay_mails = delivered_bytes(&replay_server);
    if let Ok(dir) = std::env::var("BENCH_SAMPLE_DIR") {
        for (name, mails) in [("mailroom", &mailroom.mails), ("lettre", &raw_mails)] {
            if let Some(mail) = mails.first() {
                std::fs::write(format!("{dir}/{name}.eml"), mail)?;
            }
        }
    }

    let listed: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
    println!(
        "  Mailroom / bare lettre (its pool, Nagle on), median of {rounds} rounds {:>6.2}×   (rounds: {})   goal ≤ 1.3×",
        median(ratios.clone()),
        listed.join(", ")
    );
    let listed: Vec<String> = layer_ratios.iter().map(|r| format!("{r:.2}")).collect();
    println!(
        "  Mailroom / its mail layer alone (the same sockets: what the service adds), median {:>6.2}×   (rounds: {})",
        median(layer_ratios.clone()),
        listed.join(", ")
    );
    println!("last round:");
    println!(
        "  CreateInvitations answered in        {:>8.0} ms",
        mailroom.call.as_secs_f64() * 1e3
    );
    println!(
        "  all {n} mails in the SMTP server in {:>8.0} ms  ({:.0} mails/s)   goal ≤ 10,000 ms",
        mailroom.took.as_secs_f64() * 1e3,
        n as f64 / mailroom.took.as_secs_f64()
    );
    println!(
        "  lettre alone, same mails and server   {:>8.0} ms  ({:.0} mails/s)",
        raw.as_secs_f64() * 1e3,
        n as f64 / raw.as_secs_f64()
    );
    breakdown(
        "Mailroom",
        n,
        mailroom.took,
        &mailroom.arrivals,
        mailroom.cpu,
        &mailroom.mails,
    );
    breakdown("lettre  ", n, raw, &raw_arrivals, raw_cpu, &raw_mails);
    println!(
        "  lettre replaying Mailroom's bytes     {:>8.0} ms  ({:.0} mails/s); Mailroom / that {:.2}×",
        replay.as_secs_f64() * 1e3,
        n as f64 / replay.as_secs_f64(),
        mailroom.took.as_secs_f64() / replay.as_secs_f64()
    );
    breakdown(
        "replayed",
        n,
        replay,
        &replay_arrivals,
        replay_cpu,
        &replay_mails,
    );
    Ok(())
}

/// Removes the mails a round left in `server`'s maildir.
fn empty_maildir(server: &SmtpServer) {
    if let Ok(entries) = std::fs::read_dir(server.maildir.join("new")) {
        for entry in entries.flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Sends `messages` (recipient, the whole message) through Mailroom's mail layer alone (the
/// `smtp::Sender` the services send with, a pool of `concurrency`), `concurrency` at once,
/// to `server`; timed until all are in its maildir.
async fn through_mail_layer(
    server: &SmtpServer,
    concurrency: usize,
    messages: Vec<(String, Vec<u8>)>,
) -> anyhow::Result<Duration> {
    use futures::StreamExt;
    let n = messages.len();
    let sender = mailroom_mail::smtp::Sender::new(
        &mailroom_mail::smtp::Relay {
            host: "127.0.0.1",
            port: server.port,
            security: "none",
            username: None,
            password: None,
            timeout: Duration::from_secs(30),
            pool_size: Some(concurrency as u32),
        },
        "no-reply@mailroom.local",
    )?;
    let from: lettre::Address = "no-reply@mailroom.local".parse()?;
    let started = Instant::now();
    let sends = futures::stream::iter(messages.into_iter().map(|(to, bytes)| {
        let sender = sender.clone();
        let envelope =
            lettre::address::Envelope::new(Some(from.clone()), vec![to.parse().expect("to")]);
        async move { sender.send_raw(&envelope.expect("envelope"), &bytes).await }
    }))
    .buffer_unordered(concurrency)
    .collect::<Vec<_>>();
    let (results, (took, _)) = tokio::join!(sends, until_delivered(server, n, started));
    anyhow::ensure!(
        results.iter().all(Result::is_ok),
        "the mail layer's sends failed"
    );
    Ok(took)
}

/// Sends `messages` (recipient, the whole message) straight through lettre's pooled
/// transport, `concurrency` at once, to `server`; timed until all are in its maildir.
async fn through_lettre(
    server: &SmtpServer,
    concurrency: usize,
    messages: Vec<(String, Vec<u8>)>,
) -> anyhow::Result<(Duration, Arrivals, CpuSpent)> {
    use futures::StreamExt;
    let n = messages.len();
    let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(server.port)
        .pool_config(lettre::transport::smtp::PoolConfig::new().max_size(concurrency as u32))
        .build();
    let from: lettre::Address = "no-reply@mailroom.local".parse()?;
    let cpu = Cpu::start(server);
    let started = Instant::now();
    let sends = futures::stream::iter(messages.into_iter().map(|(to, bytes)| {
        let transport = transport.clone();
        let envelope =
            lettre::address::Envelope::new(Some(from.clone()), vec![to.parse().expect("to")]);
        async move {
            transport
                .send_raw(&envelope.expect("envelope"), &bytes)
                .await
        }
    }))
    .buffer_unordered(concurrency)
    .collect::<Vec<_>>();
    let (results, (took, arrivals)) = tokio::join!(sends, until_delivered(server, n, started));
    anyhow::ensure!(results.iter().all(Result::is_ok), "lettre's sends failed");
    Ok((took, arrivals, cpu.spent()))
}
