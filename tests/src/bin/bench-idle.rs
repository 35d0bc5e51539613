//! IMAP IDLE at a worker's scale: `--connections` distinct users of a second, tuned Dovecot
//! (started by `.ci/bench idle`) held in IDLE by the sync's own code path
//! (`mailroom_sync::idle::hold`, what each watch runs), from one process. Prints the time to
//! have them all idling, the process's memory per connection, how fast new mail dropped into
//! ten of the mailboxes is noticed, and how long closing them all takes.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use mailroom_mail::{Login, Security};
use mailroom_sync::engine::{Engine, EngineOptions};
use mailroom_sync::idle::{hold, IdleEvent, IdleOptions};
use mailroom_tests::bench::rss_kib;
use mailroom_tests::{create_database, StackEnv};
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 2_000)]
    connections: usize,
    /// New connections per second.
    #[arg(long, default_value_t = 300)]
    rate: u32,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let addr = std::env::var("MAILROOM_IDLE_IMAP_ADDR").map_err(|_| {
        anyhow::anyhow!("run through `.ci/bench idle`, which starts the tuned Dovecot")
    })?;
    let mail_dir = PathBuf::from(std::env::var("MAILROOM_IDLE_MAIL_DIR")?);
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| anyhow::anyhow!("host:port"))?;
    let port: u16 = port.parse()?;
    let env = StackEnv::load();
    // The engine needs a pool; IDLE itself never touches it.
    let url = create_database(&env.database_url).await;
    let pool =
        mailroom_platform::db::connect(&SecretString::from(url), mailroom_sync::SCHEMA, 2).await?;
    let engine = Engine::new(
        pool,
        EngineOptions {
            policy: mailroom_mail::dial::Policy::local(),
            connect_timeout: Duration::from_secs(60),
            ..EngineOptions::default()
        },
    );
    let options = IdleOptions::default();
    let user = |i: usize| format!("idle{:04}@idle.test", i + 1);

    let before = rss_kib();
    let idling = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let news: Arc<Vec<AtomicUsize>> =
        Arc::new((0..args.connections).map(|_| AtomicUsize::new(0)).collect());
    let stop = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    let started = Instant::now();
    let pace = Duration::from_secs(1) / args.rate.max(1);
    for i in 0..args.connections {
        let login = Login {
            host: host.to_owned(),
            port,
            security: Security::None,
            username: user(i),
            password: SecretString::from("idle-pass".to_owned()),
        };
        let (engine, options, stop) = (engine.clone(), options.clone(), stop.clone());
        let (idling, failed, news) = (idling.clone(), failed.clone(), news.clone());
        tasks.spawn(async move {
            let mut first = true;
            let result = hold(&engine, &options, &login, &stop, |event| match event {
                IdleEvent::Idling if first => {
                    first = false;
                    idling.fetch_add(1, Ordering::Relaxed);
                }
                IdleEvent::Idling => {}
                IdleEvent::News => {
                    news[i].fetch_add(1, Ordering::Relaxed);
                }
            })
            .await;
            if let Err(err) = result {
                if failed.fetch_add(1, Ordering::Relaxed) < 3 {
                    eprintln!("{}: {err}", login.username);
                }
            }
        });
        tokio::time::sleep(pace).await;
    }
    let deadline = Instant::now() + Duration::from_secs(180);
    while idling.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) < args.connections {
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {} of {} idling after 180 s",
            idling.load(Ordering::Relaxed),
            args.connections
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all_idle = started.elapsed();
    // Let buffers settle, then measure.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib();
    let held = idling.load(Ordering::Relaxed);
    println!(
        "== IDLE: {held} of {} connections idling in {:.1} s ({} failed)",
        args.connections,
        all_idle.as_secs_f64(),
        failed.load(Ordering::Relaxed)
    );
    println!(
        "process RSS {} KiB -> {} KiB: {:.1} KiB per connection (goal <= 64)",
        before,
        after,
        (after.saturating_sub(before)) as f64 / held.max(1) as f64
    );

    // New mail for ten of them, dropped as a delivery would (maildir new/).
    let chosen: Vec<usize> = (0..10).map(|k| k * args.connections / 10).collect();
    let delivered = Instant::now();
    for &i in &chosen {
        let dir = mail_dir.join(user(i)).join("new");
        std::fs::create_dir_all(&dir)?;
        let (raw, _) = mailroom_sync::demo::message(i, &user(i));
        let path = dir.join(format!("{}.bench{i}.idle", delivered.elapsed().as_nanos()));
        std::fs::write(&path, raw)?;
        std::process::Command::new("chown")
            .args(["-R", "nobody:nogroup"])
            .arg(mail_dir.join(user(i)))
            .status()?;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while chosen.iter().any(|&i| news[i].load(Ordering::Relaxed) == 0) {
        anyhow::ensure!(
            Instant::now() < deadline,
            "new mail not noticed within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "new mail in 10 of the mailboxes noticed by all 10 within {:.0} ms",
        delivered.elapsed().as_secs_f64() * 1000.0
    );

    let closing = Instant::now();
    stop.cancel();
    while tasks.join_next().await.is_some() {}
    println!(
        "DONE + LOGOUT of all connections: {:.1} s",
        closing.elapsed().as_secs_f64()
    );
    Ok(())
}
