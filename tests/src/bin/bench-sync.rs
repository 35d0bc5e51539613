//! The sync engine beside the reference points, in one run. Run with `.ci/bench sync`.
//!
//! On a generated mailbox of `--messages` messages in the stack's Dovecot (maildir files
//! written straight into a fresh user's `cur/`):
//! - **raw**: `UID FETCH 1:* (UID FLAGS RFC822.SIZE ENVELOPE)` over a plain socket, read to
//!   the tagged OK and nothing else done: what IMAP itself costs; for the no-change pass,
//!   connect, LOGIN, LIST and every folder's STATUS the same way;
//! - **mbsync** (Debian `isync`, `FSync no`): a full pull into a fresh maildir, then a
//!   no-change pass;
//! - **mailroom**: the sync engine's first sync into a fresh index in PostgreSQL, then a
//!   no-change sync.
//!
//! Each round runs the three in turn (after one warm-up fetch, so Dovecot's cache is equally
//! warm for all); the medians of `--rounds` are compared as ratios. Then the index's bytes
//! per message, and the scheduler's cost per tick with the same due work over 10k, 100k and
//! 1M scheduled mailboxes (no IMAP).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use clap::Parser;
use mailroom_mail::{Login, Security};
use mailroom_platform::types::MailboxId;
use mailroom_sync::engine::{Engine, EngineOptions};
use mailroom_tests::mailstore::new_mail_user;
use mailroom_tests::{create_database, StackEnv};
use secrecy::SecretString;
use sqlx::PgPool;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 20_000)]
    messages: usize,
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Mailboxes in the scheduler's largest schedule.
    #[arg(long, default_value_t = 1_000_000)]
    scheduled: i64,
    /// Mailboxes due per measured tick.
    #[arg(long, default_value_t = 1_000)]
    due: i64,
    /// Skip the mbsync side (when isync is not installed).
    #[arg(long)]
    without_mbsync: bool,
}

/// Where one sync's time went, in ms, on one line.
fn phases(report: &mailroom_sync::engine::SyncReport) -> String {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let p = &report.phases;
    format!(
        "{:.1} ms: connect {:.1}, prepare {:.1}, folders {:.1} (fetch: read {:.1}, blocked on writer {:.1}, writing {:.1}), finish {:.1}",
        ms(report.duration),
        ms(p.connect),
        ms(p.prepare),
        ms(p.folders),
        ms(p.fetch_read),
        ms(p.fetch_blocked),
        ms(p.fetch_write),
        ms(p.finish),
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Writes `count` sample messages into the user's maildir `cur/`, as Dovecot would store
/// delivered mail (sizes in the names, every third seen), owned by Dovecot's user.
fn fill_maildir(user: &str, count: usize) -> anyhow::Result<PathBuf> {
    let users = std::env::var("MAILROOM_DOVECOT_USERS")?;
    let root = Path::new(&users)
        .parent()
        .ok_or_else(|| anyhow::anyhow!("users file has no folder"))?
        .join("mail")
        .join(user);
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(root.join(sub))?;
    }
    for n in 0..count {
        let (raw, date) = mailroom_sync::demo::message(n, user);
        let flags = if n % 3 == 0 { "S" } else { "" };
        let name = format!(
            "{}.M{}P{}.bench,S={}:2,{flags}",
            date.timestamp(),
            n,
            std::process::id(),
            raw.len()
        );
        let path = root.join("cur").join(name);
        std::fs::write(&path, &raw)?;
    }
    let status = Command::new("chown")
        .args(["-R", "nobody:nogroup"])
        .arg(&root)
        .status()?;
    anyhow::ensure!(status.success(), "chown of the maildir failed");
    Ok(root)
}

/// Reads a plain-socket IMAP answer to the line tagged `tag`; how many FETCH lines came.
async fn until_tag(
    reader: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
    tag: &[u8],
) -> anyhow::Result<usize> {
    let mut fetches = 0;
    let mut line = Vec::with_capacity(4096);
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).await? == 0 {
            anyhow::bail!("connection closed");
        }
        if line.starts_with(b"* ") && line.windows(7).any(|w| w == b" FETCH ") {
            fetches += 1;
        }
        if line.starts_with(tag) && line.get(tag.len()) == Some(&b' ') {
            anyhow::ensure!(
                line[tag.len()..].starts_with(b" OK"),
                "{}",
                String::from_utf8_lossy(&line)
            );
            return Ok(fetches);
        }
    }
}

/// A plain-socket IMAP session, greeted and logged in (tag `a1`), read through a buffer of
/// `buffer` bytes.
async fn raw_login(
    host: &str,
    port: u16,
    user: &str,
    password: &str,
    buffer: usize,
) -> anyhow::Result<(
    BufReader<tokio::net::tcp::OwnedReadHalf>,
    tokio::net::tcp::OwnedWriteHalf,
)> {
    let tcp = tokio::net::TcpStream::connect((host, port)).await?;
    tcp.set_nodelay(true)?;
    let (read, mut write) = tcp.into_split();
    let mut reader = BufReader::with_capacity(buffer, read);
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line).await?;
    anyhow::ensure!(
        line.starts_with(b"* OK"),
        "greeting: {}",
        String::from_utf8_lossy(&line)
    );
    write
        .write_all(format!("a1 LOGIN \"{user}\" \"{password}\"\r\n").as_bytes())
        .await?;
    until_tag(&mut reader, b"a1").await?;
    Ok((reader, write))
}

/// What a no-change check costs IMAP itself: connect, greeting, LOGIN, LIST and every
/// selectable folder's STATUS (sent together), over a plain socket, in ms. The bench's
/// mailbox has the server's default folders; a name this simple reader cannot take (a
/// literal) fails the run rather than being measured wrong.
async fn raw_no_change(host: &str, port: u16, user: &str, password: &str) -> anyhow::Result<f64> {
    let started = Instant::now();
    let (mut reader, mut write) = raw_login(host, port, user, password, 64 * 1024).await?;
    let mut line = Vec::new();
    write.write_all(b"a2 LIST \"\" \"*\"\r\n").await?;
    let mut folders = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).await? == 0 {
            anyhow::bail!("connection closed");
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end();
        if let Some(status) = text.strip_prefix("a2 ") {
            anyhow::ensure!(status.starts_with("OK"), "LIST: {text}");
            break;
        }
        // `* LIST (\HasNoChildren) "/" INBOX` or `* LIST () "/" "Some name"`
        anyhow::ensure!(
            !text.ends_with('}'),
            "a folder name sent as a literal: {text}"
        );
        if text.contains("\\Noselect") || text.contains("\\NonExistent") {
            continue;
        }
        let name = match text.strip_suffix('"') {
            Some(quoted) => match quoted.rfind(" \"") {
                Some(at) => quoted[at + 2..].to_owned(),
                None => anyhow::bail!("LIST line: {text}"),
            },
            None => text.rsplit(' ').next().unwrap_or_default().to_owned(),
        };
        folders.push(name);
    }
    let mut commands = String::new();
    for (i, name) in folders.iter().enumerate() {
        commands.push_str(&format!(
            "s{i} STATUS \"{name}\" (MESSAGES UIDNEXT UIDVALIDITY UNSEEN HIGHESTMODSEQ)\r\n"
        ));
    }
    write.write_all(commands.as_bytes()).await?;
    for i in 0..folders.len() {
        until_tag(&mut reader, format!("s{i}").as_bytes()).await?;
    }
    let ms = started.elapsed().as_secs_f64() * 1e3;
    write.write_all(b"a3 LOGOUT\r\n").await?;
    Ok(ms)
}

/// The raw fetch: messages answered and seconds taken.
async fn raw_fetch(
    host: &str,
    port: u16,
    user: &str,
    password: &str,
) -> anyhow::Result<(usize, f64)> {
    let (mut reader, mut write) = raw_login(host, port, user, password, 256 * 1024).await?;
    write.write_all(b"a2 EXAMINE INBOX\r\n").await?;
    until_tag(&mut reader, b"a2").await?;
    let started = Instant::now();
    write
        .write_all(b"a3 UID FETCH 1:* (UID FLAGS RFC822.SIZE ENVELOPE)\r\n")
        .await?;
    let n = until_tag(&mut reader, b"a3").await?;
    let secs = started.elapsed().as_secs_f64();
    write.write_all(b"a4 LOGOUT\r\n").await?;
    Ok((n, secs))
}

struct Mbsync {
    dir: PathBuf,
    config: PathBuf,
}

impl Mbsync {
    fn new(host: &str, port: u16, user: &str, password: &str) -> anyhow::Result<Self> {
        let dir =
            std::env::temp_dir().join(format!("mailroom-bench-mbsync-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir)?;
        let config = dir.join("mbsyncrc");
        std::fs::write(
            &config,
            format!(
                "FSync no\n\nIMAPAccount bench\nHost {host}\nPort {port}\nUser {user}\nPass {password}\nSSLType None\nAuthMechs LOGIN\n\n\
                 IMAPStore far\nAccount bench\n\nMaildirStore near\nPath {dir}/mail/\nInbox {dir}/mail/INBOX\n\n\
                 Channel bench\nFar :far:\nNear :near:\nPatterns INBOX\nSync Pull\nCreate Near\nSyncState *\n",
                dir = dir.display()
            ),
        )?;
        Ok(Self { dir, config })
    }

    fn reset(&self) -> anyhow::Result<()> {
        let _ = std::fs::remove_dir_all(self.dir.join("mail"));
        std::fs::create_dir_all(self.dir.join("mail"))?;
        Ok(())
    }

    fn run(&self) -> anyhow::Result<f64> {
        let started = Instant::now();
        let out = Command::new("mbsync")
            .arg("-q")
            .arg("-c")
            .arg(&self.config)
            .arg("bench")
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "mbsync failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(started.elapsed().as_secs_f64())
    }

    fn messages(&self) -> usize {
        ["cur", "new"]
            .iter()
            .map(|d| {
                std::fs::read_dir(self.dir.join("mail/INBOX").join(d))
                    .map(|r| r.count())
                    .unwrap_or(0)
            })
            .sum()
    }
}

impl Drop for Mbsync {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn sync_db(env: &StackEnv) -> anyhow::Result<PgPool> {
    let url = create_database(&env.database_url).await;
    let pool =
        mailroom_platform::db::connect(&SecretString::from(url), mailroom_sync::SCHEMA, 16).await?;
    mailroom_platform::db::migrate(&pool, mailroom_sync::SCHEMA, &mailroom_sync::MIGRATIONS)
        .await?;
    Ok(pool)
}

async fn index_bytes(pool: &PgPool) -> anyhow::Result<(i64, i64, i64)> {
    let (rows, table, total): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM messages), \
                sum(pg_relation_size(c.oid))::int8, sum(pg_total_relation_size(c.oid))::int8 \
         FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'messages'",
    )
    .fetch_one(pool)
    .await?;
    Ok((rows, table, total))
}

/// The scheduler's tick with `due` mailboxes due out of `total`, in ms (median of 5).
async fn tick_cost(pool: &PgPool, total: i64, due: i64) -> anyhow::Result<(f64, f64)> {
    sqlx::query("TRUNCATE schedule, outbox")
        .execute(pool)
        .await?;
    sqlx::query(
        "INSERT INTO schedule (mailbox_id, org_id, owner_user_id, next_due, tier) \
         SELECT gen_random_uuid(), '00000000-0000-0000-0000-000000000001', gen_random_uuid(), \
                now() + interval '1 hour' + (random() * interval '1 day'), (1 + (g % 4))::int2 \
         FROM generate_series(1, $1) g",
    )
    .bind(total)
    .execute(pool)
    .await?;
    sqlx::query("ANALYZE schedule").execute(pool).await?;
    let scheduler = mailroom_sync::scheduler::Scheduler {
        pool: pool.clone(),
        activity: None,
        tick: Duration::from_secs(1),
        batch: due,
        hold: Duration::from_secs(300),
        overdue: Default::default(),
    };
    let mut busy = Vec::new();
    let mut idle = Vec::new();
    for _ in 0..5 {
        // `due` mailboxes become due, as a minute of a large organisation's work would.
        sqlx::query(
            "UPDATE schedule SET next_due = now() - interval '1 second' WHERE mailbox_id IN \
             (SELECT mailbox_id FROM schedule WHERE next_due > now() + interval '1 hour' LIMIT $1)",
        )
        .bind(due)
        .execute(pool)
        .await?;
        let started = Instant::now();
        let issued = scheduler.tick_once().await?;
        busy.push(started.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(issued as i64 == due, "issued {issued}, expected {due}");
        let started = Instant::now();
        let issued = scheduler.tick_once().await?;
        idle.push(started.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(issued == 0, "a second tick issued {issued}");
    }
    Ok((median(busy), median(idle)))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let env = StackEnv::load();
    println!(
        "== sync benchmark: {} messages, {} rounds",
        args.messages, args.rounds
    );
    let user = new_mail_user();
    let started = Instant::now();
    fill_maildir(&user.username, args.messages)?;
    println!(
        "maildir written in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // Dovecot indexes the new maildir on first access: a warm-up fetch, outside the figures.
    let (n, secs) = raw_fetch(&user.host, user.port, &user.username, &user.password).await?;
    anyhow::ensure!(
        n == args.messages,
        "Dovecot shows {n} of {} messages",
        args.messages
    );
    println!("warm-up raw fetch: {n} messages in {secs:.2} s");

    let login = Login {
        host: user.host.clone(),
        port: user.port,
        security: Security::None,
        username: user.username.clone(),
        password: SecretString::from(user.password.clone()),
    };
    let pool = sync_db(&env).await?;
    let engine = Engine::new(
        pool.clone(),
        EngineOptions {
            policy: mailroom_mail::dial::Policy::local(),
            ..EngineOptions::default()
        },
    );
    let mbsync = if args.without_mbsync {
        None
    } else {
        Some(Mbsync::new(
            &user.host,
            user.port,
            &user.username,
            &user.password,
        )?)
    };
    let (mut raw, mut ours, mut ours_nc, mut mb, mut mb_nc, mut raw_nc) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    // The no-change pass of a worker that did not sync the mailbox before (another replica,
    // a restart): no QUOTA figure of its own to report, so it asks.
    let mut other_nc = vec![];
    let mut ratios = Vec::new();
    let stop = CancellationToken::new();
    for round in 1..=args.rounds {
        let (n, secs) = raw_fetch(&user.host, user.port, &user.username, &user.password).await?;
        raw.push(n as f64 / secs);
        if let Some(m) = &mbsync {
            m.reset()?;
            let secs = m.run()?;
            anyhow::ensure!(
                m.messages() == args.messages,
                "mbsync pulled {} messages",
                m.messages()
            );
            mb.push(args.messages as f64 / secs);
            mb_nc.push(m.run()? * 1000.0);
        }
        let mailbox = MailboxId::new();
        let started = Instant::now();
        let report = engine.sync(mailbox, &login, false, &stop).await?;
        let secs = started.elapsed().as_secs_f64();
        anyhow::ensure!(
            report.new_messages as usize == args.messages,
            "indexed {}",
            report.new_messages
        );
        ours.push(args.messages as f64 / secs);
        raw_nc.push(
            tokio::time::timeout(
                Duration::from_secs(30),
                raw_no_change(&user.host, user.port, &user.username, &user.password),
            )
            .await??,
        );
        let started = Instant::now();
        let again = engine.sync(mailbox, &login, false, &stop).await?;
        ours_nc.push(started.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(again.new_messages == 0 && again.unchanged_folders == again.folders);
        anyhow::ensure!(
            again.listings == 0 && again.flag_passes == 0,
            "the no-change sync listed UIDs or read every flag: {again:?}"
        );
        let other = Engine::new(
            pool.clone(),
            EngineOptions {
                policy: mailroom_mail::dial::Policy::local(),
                ..EngineOptions::default()
            },
        );
        let started = Instant::now();
        let again_elsewhere = other.sync(mailbox, &login, false, &stop).await?;
        other_nc.push(started.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(again_elsewhere.unchanged_folders == again_elsewhere.folders);
        let ratio = ours[ours.len() - 1] / raw[raw.len() - 1];
        ratios.push(ratio);
        println!(
            "round {round}: raw {:.0} msg/s, mbsync {} msg/s, mailroom {:.0} msg/s = {ratio:.2}x raw; no-change: raw {:.1} ms, mbsync {} ms, mailroom {:.1} ms (another worker {:.1} ms)",
            raw[raw.len() - 1],
            mb.last().map(|v| format!("{v:.0}")).unwrap_or("-".into()),
            ours[ours.len() - 1],
            raw_nc[raw_nc.len() - 1],
            mb_nc.last().map(|v| format!("{v:.1}")).unwrap_or("-".into()),
            ours_nc[ours_nc.len() - 1],
            other_nc[other_nc.len() - 1],
        );
        println!("  first sync {}", phases(&report));
        println!("  no-change  {}", phases(&again));
    }
    let held = ratios.iter().filter(|r| **r >= 0.5).count();
    println!(
        "mailroom / raw by round: {} ({held} of {} rounds >= 0.50; lowest {:.2})",
        ratios
            .iter()
            .map(|r| format!("{r:.2}"))
            .collect::<Vec<_>>()
            .join(", "),
        ratios.len(),
        ratios.iter().copied().fold(f64::INFINITY, f64::min),
    );
    println!(
        "no-change sync by round (ms): {} (goal <= 20); by a worker new to the mailbox: {}",
        ours_nc
            .iter()
            .map(|t| format!("{t:.1}"))
            .collect::<Vec<_>>()
            .join(", "),
        other_nc
            .iter()
            .map(|t| format!("{t:.1}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let (raw_m, ours_m, ours_nc_m, raw_nc_m) =
        (median(raw), median(ours), median(ours_nc), median(raw_nc));
    println!(
        "\n== initial sync of {} messages (median of {} rounds)",
        args.messages, args.rounds
    );
    println!("raw UID FETCH (no storage)       {raw_m:>9.0} msg/s");
    if !mb.is_empty() {
        println!(
            "mbsync (FSync no) into maildir   {:>9.0} msg/s",
            median(mb.clone())
        );
    }
    println!("mailroom into PostgreSQL         {ours_m:>9.0} msg/s");
    println!(
        "mailroom / raw                   {:>9.2}   (goal >= 0.50)",
        ours_m / raw_m
    );
    if !mb.is_empty() {
        let mb_m = median(mb);
        let mb_nc_m = median(mb_nc);
        println!(
            "mailroom / mbsync                {:>9.2}   (goal >= 2)",
            ours_m / mb_m
        );
        println!("\n== no-change resync");
        println!("raw connect, LOGIN, LIST, STATUS {raw_nc_m:>9.1} ms   (what IMAP itself takes)");
        println!("mbsync                           {mb_nc_m:>9.1} ms");
        println!(
            "mailroom (STATUS per folder)     {ours_nc_m:>9.1} ms   (goal <= 20 ms and <= mbsync; {:.2}x mbsync, {:.2}x raw)",
            ours_nc_m / mb_nc_m,
            ours_nc_m / raw_nc_m
        );
    } else {
        println!("raw connect, LOGIN, LIST, STATUS {raw_nc_m:>9.1} ms");
        println!("mailroom no-change resync        {ours_nc_m:>9.1} ms");
    }
    let (rows, table, total) = index_bytes(&pool).await?;
    println!(
        "\n== message index: {rows} rows, {:.0} bytes/message in the table, {:.0} with its indexes",
        table as f64 / rows as f64,
        total as f64 / rows as f64
    );

    println!(
        "\n== scheduler: one tick with {} due (and an idle tick), by schedule size",
        args.due
    );
    let sched = sync_db(&env).await?;
    let mut first = None;
    for total in [10_000i64, 100_000, args.scheduled] {
        let (busy, idle) = tick_cost(&sched, total, args.due).await?;
        let base = *first.get_or_insert(busy);
        println!(
            "{total:>9} scheduled: tick {busy:>7.1} ms ({:.2}x of 10k), idle tick {idle:.2} ms",
            busy / base
        );
    }
    Ok(())
}
