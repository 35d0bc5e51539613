//! The console's "Manage user mailboxes" page (`GET /mailboxes`) at the registry issue's scale
//! (the same seed as `bench-mailboxes`: 200k mailboxes, 100k users, 3,280 departments). Run
//! with `.ci/bench web`.
//!
//! Measures, on the same data and interleaved (bare, page, bare, page …) so machine noise
//! hits both alike: `ListMailboxes` over gRPC with the page's default view (its filter, order,
//! columns and page of 50), and the whole page through a plain HTTP/1.1 client with a signed-in
//! session — the page's `GetListView` and `ListMailboxes`, the three `LookupMailboxScope`s its
//! row controls come from, and the HTML. Prints both p50/p95, the page / bare ratio (goal ≤ 1.2
//! at p50), the server's own `x-response-time` and its phases (`server-timing`); then what the
//! first view weighs (HTML, CSS, JS, uncompressed). `--supervisor` also measures a level-2 head over ~11k subordinates.
//! No browser is driven (`--without-browser` is the only mode). Client, services, console and
//! PostgreSQL share this machine's cores.

use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use mailroom_tests::{authed, mailboxes_pb as mpb, spawn_app_with, AppOptions, PASSWORD};
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 100_000)]
    users: usize,
    #[arg(long, default_value_t = 200_000)]
    mailboxes: usize,
    /// Measured calls of each kind (bare and page), per person.
    #[arg(long, default_value_t = 200)]
    iterations: usize,
    /// Unmeasured calls of each kind first.
    #[arg(long, default_value_t = 20)]
    warmups: usize,
    /// Also measure a supervisor (a level-2 head, ~1/9 of the organisation).
    #[arg(long)]
    supervisor: bool,
    /// Drive no browser: the page is fetched over plain HTTP (the default and only mode).
    #[arg(long)]
    without_browser: bool,
}

type Http = Client<HttpConnector, Full<Bytes>>;

/// A response read whole.
struct Reply {
    status: u16,
    headers: hyper::HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn set_cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|c| c.starts_with(&format!("{name}=")))
            .map(|c| c.split(';').next().unwrap_or("").trim().to_owned())
    }

    /// The server's own time for the response, ms (`x-response-time: 12.3ms`).
    fn response_time(&self) -> Option<f64> {
        self.headers
            .get("x-response-time")?
            .to_str()
            .ok()?
            .trim_end_matches("ms")
            .parse()
            .ok()
    }

    /// The page's phases from `server-timing` (`name;dur=ms, …`), in order.
    fn phases(&self) -> Vec<(String, f64)> {
        let Some(value) = self
            .headers
            .get("server-timing")
            .and_then(|v| v.to_str().ok())
        else {
            return Vec::new();
        };
        value
            .split(',')
            .filter_map(|part| {
                let (name, rest) = part.trim().split_once(';')?;
                let ms = rest.trim().strip_prefix("dur=")?.parse().ok()?;
                Some((name.to_owned(), ms))
            })
            .collect()
    }
}

async fn http(
    client: &Http,
    method: &str,
    url: &str,
    cookie: &str,
    form: Option<String>,
) -> anyhow::Result<Reply> {
    let mut request = hyper::Request::builder().method(method).uri(url);
    if !cookie.is_empty() {
        request = request.header("cookie", cookie);
    }
    if form.is_some() {
        request = request.header("content-type", "application/x-www-form-urlencoded");
    }
    let response = client
        .request(request.body(Full::new(Bytes::from(form.unwrap_or_default())))?)
        .await?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await?.to_bytes().to_vec();
    Ok(Reply {
        status,
        headers,
        body,
    })
}

/// The value of hidden field `name` (`name="…" value="…"`).
fn hidden(body: &str, name: &str) -> Option<String> {
    let at = body.find(&format!("name=\"{name}\""))?;
    let rest = &body[at..];
    let value = rest.find("value=\"")? + "value=\"".len();
    let end = rest[value..].find('"')?;
    Some(rest[value..value + end].to_owned())
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Signs in as a browser would without JavaScript: the sign-in page (its CSRF cookie and
/// token), then the post. Returns the `Cookie` header of the session.
async fn sign_in(client: &Http, web: &str, email: &str) -> anyhow::Result<String> {
    let page = http(client, "GET", &format!("{web}/sign-in"), "", None).await?;
    anyhow::ensure!(page.status == 200, "GET /sign-in: {}", page.status);
    let csrf = page
        .set_cookie("mr_csrf")
        .ok_or_else(|| anyhow::anyhow!("no CSRF cookie"))?;
    let token = hidden(&page.text(), "_csrf").ok_or_else(|| anyhow::anyhow!("no _csrf"))?;
    let form = format!(
        "_csrf={}&email={}&password={}&next=%2F&org=",
        urlencode(&token),
        urlencode(email),
        urlencode(PASSWORD)
    );
    let posted = http(client, "POST", &format!("{web}/sign-in"), &csrf, Some(form)).await?;
    anyhow::ensure!(
        posted.status == 303,
        "signing in: {} {}",
        posted.status,
        posted.text()
    );
    let session = posted
        .set_cookie("mr_session")
        .ok_or_else(|| anyhow::anyhow!("no session cookie"))?;
    Ok(format!("{csrf}; {session}"))
}

struct Percentiles {
    p50: f64,
    p95: f64,
    mean: f64,
}

fn percentiles(mut ms: Vec<f64>) -> Percentiles {
    ms.sort_by(|a, b| a.total_cmp(b));
    if ms.is_empty() {
        return Percentiles {
            p50: f64::NAN,
            p95: f64::NAN,
            mean: f64::NAN,
        };
    }
    let at = |p: f64| ms[((ms.len() as f64 - 1.0) * p).round() as usize];
    Percentiles {
        p50: at(0.5),
        p95: at(0.95),
        mean: ms.iter().sum::<f64>() / ms.len() as f64,
    }
}

fn line(name: &str, p: &Percentiles) {
    println!(
        "{name:<58} p50 {:>7.2} ms   p95 {:>7.2} ms   mean {:>7.2} ms",
        p.p50, p.p95, p.mean
    );
}

/// The `ListMailboxes` request the page sends on a first visit: the saved (or default) view's
/// filter, order and columns (the address first), plus what every row shows and its owner.
fn page_request(view: &mpb::ListView) -> mpb::ListMailboxesRequest {
    const COLUMNS: &[&str] = &[
        "employee",
        "email",
        "name",
        "sender_name",
        "last_sync_time",
        "sync_state",
        "unread_count",
        "message_count",
        "disk_mb",
        "in_crm",
        "crm_queue",
        "access_by",
    ];
    let mut mask: Vec<String> = std::iter::once("email")
        .chain(
            COLUMNS
                .iter()
                .copied()
                .filter(|c| *c != "email" && view.columns.iter().any(|x| x == c)),
        )
        .map(String::from)
        .collect();
    mask.extend(["email", "unread_count", "last_sync_time", "owner_user_id"].map(String::from));
    let filter = match view.filter.trim() {
        "" => String::new(),
        f => format!("({f})"),
    };
    mpb::ListMailboxesRequest {
        page_size: if view.page_size > 0 {
            view.page_size
        } else {
            50
        },
        page_token: String::new(),
        filter,
        order_by: view
            .order_by
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" "),
        read_mask: Some(prost_types::FieldMask { paths: mask }),
        org_id: String::new(),
    }
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

struct Measured {
    who: &'static str,
    bare: Percentiles,
    page: Percentiles,
    server: Percentiles,
    rows: usize,
    controls: usize,
    total: String,
    /// The page's own phases (`server-timing`), in order, each one's p50.
    phases: Vec<(String, Percentiles)>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // The browser mode is not built; the flag only says so explicitly.
    let _ = args.without_browser;
    let app = spawn_app_with(AppOptions {
        with_web: true,
        ..AppOptions::default()
    })
    .await;
    let org = app.create_org(0).await;
    let boss = app.create_user(&org, "boss", "").await;
    app.until_known(&org.admin_id).await;
    app.until_known(&boss.id).await;
    let org_id: Uuid = org.id.parse()?;
    let boss_id: Uuid = boss.id.parse()?;

    let registry =
        mailroom_tests::bench::seed_mailboxes(&app, org_id, boss_id, args.users, args.mailboxes)
            .await?;
    // The row controls come from access: it learns owners from the registry's events, which
    // a straight seed has none of, so the owners go into its tables as those events would.
    let started = Instant::now();
    let access_db = mailroom_platform::db::connect(
        &SecretString::from(app.database_url().to_owned()),
        "access",
        4,
    )
    .await?;
    sqlx::query(
        "INSERT INTO mailboxes (mailbox_id, org_id) SELECT id, org_id FROM mailboxes.mailboxes \
         WHERE org_id = $1 ON CONFLICT DO NOTHING",
    )
    .bind(org_id)
    .execute(&access_db)
    .await?;
    sqlx::query(
        "INSERT INTO relationships (org_id, kind, object_id, subject_id) \
         SELECT org_id, 'owner', id, owner_user_id FROM mailboxes.mailboxes WHERE org_id = $1 \
         ON CONFLICT DO NOTHING",
    )
    .bind(org_id)
    .execute(&access_db)
    .await?;
    println!(
        "mailbox owners written into access's tables in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    drop(registry);

    // A fresh access replica loads the seeded tree; a registry and a console of their own ask
    // it (the app's were started before the seed and do not see it).
    let stop = CancellationToken::new();
    let (_access, access_endpoint) = app.start_access_replica(stop.clone()).await;
    let (registry_client, registry_endpoint) = app
        .launch_mailboxes(&access_endpoint, app.sealing_keys.clone(), stop.clone())
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let web = format!("http://127.0.0.1:{port}");
    let mut platform = app.platform().clone();
    platform.public_url = Some(web.clone());
    let config = mailroom_web::WebConfig {
        identity_endpoint: app.endpoint.clone(),
        access_endpoint: access_endpoint.clone(),
        mailboxes_endpoint: registry_endpoint,
        sync_endpoint: app
            .sync_endpoint
            .clone()
            .ok_or_else(|| anyhow::anyhow!("sync runs"))?,
        invitations_endpoint: app
            .invitations_endpoint
            .clone()
            .ok_or_else(|| anyhow::anyhow!("invitations run"))?,
        session_keys: vec![SecretString::from(
            mailroom_platform::sealed::SealingKeys::generate("bench"),
        )],
        anonymous_posts_per_minute: 1_000_000,
        server_timing: true,
        ..Default::default()
    };
    let console = mailroom_web::start_on_port(&platform, config, port).await?;
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            if let Err(err) = console.run(listener, &platform, stop).await {
                eprintln!("the console stopped: {err}");
            }
        });
    }

    let client: Http = Client::builder(TokioExecutor::new()).build_http();
    let mut people = vec![("admin", org.admin_email.clone())];
    if args.supervisor {
        people.push(("supervisor", boss.login_email.clone()));
    }
    println!(
        "\nGET /mailboxes (first visit: the default view, page of 50) against ListMailboxes over \
         gRPC with the same request; {} warm-ups, then {} of each interleaved, one caller",
        args.warmups, args.iterations
    );
    let mut results = Vec::new();
    let mut first_view: Option<String> = None;
    for (who, email) in people {
        let token = app
            .login(&email)
            .await
            .map_err(|s| anyhow::anyhow!("{who} signs in: {s}"))?
            .access_token;
        let cookie = sign_in(&client, &web, &email).await?;
        let view = registry_client
            .clone()
            .get_list_view(authed(&token, mpb::GetListViewRequest {}))
            .await?
            .into_inner();
        let request = page_request(&view);
        let url = format!("{web}/mailboxes");
        let bare = || {
            let mut registry = registry_client.clone();
            let request = request.clone();
            let token = token.clone();
            async move {
                let t = Instant::now();
                let page = registry
                    .list_mailboxes(authed(&token, request))
                    .await?
                    .into_inner();
                anyhow::Ok((t.elapsed().as_secs_f64() * 1e3, page))
            }
        };
        let page = || {
            let (client, url, cookie) = (&client, &url, &cookie);
            async move {
                let t = Instant::now();
                let reply = http(client, "GET", url, cookie, None).await?;
                let ms = t.elapsed().as_secs_f64() * 1e3;
                anyhow::ensure!(reply.status == 200, "GET /mailboxes: {}", reply.status);
                anyhow::Ok((ms, reply))
            }
        };
        for _ in 0..args.warmups {
            bare().await?;
            page().await?;
        }
        let (mut bare_ms, mut page_ms, mut server_ms) = (Vec::new(), Vec::new(), Vec::new());
        let mut phase_ms: Vec<(String, Vec<f64>)> = Vec::new();
        let (mut rows, mut controls, mut total) = (0, 0, String::new());
        for i in 0..args.iterations {
            let (ms, answer) = bare().await?;
            bare_ms.push(ms);
            let (ms, reply) = page().await?;
            page_ms.push(ms);
            server_ms.extend(reply.response_time());
            for (name, ms) in reply.phases() {
                match phase_ms.iter_mut().find(|(n, _)| *n == name) {
                    Some((_, all)) => all.push(ms),
                    None => phase_ms.push((name, vec![ms])),
                }
            }
            if i == 0 {
                let html = reply.text();
                rows = count(&html, "<tr data-id=\"");
                controls = count(&html, "class=\"link sync-now\"");
                anyhow::ensure!(
                    rows == answer.mailboxes.len(),
                    "{who}: the page shows {rows} rows, the registry answers {}",
                    answer.mailboxes.len()
                );
                if let Some(m) = answer.mailboxes.first() {
                    anyhow::ensure!(
                        html.contains(&m.id),
                        "{who}: the page lacks the registry's first mailbox {}",
                        m.id
                    );
                }
                total = if answer.total_size_is_estimate {
                    format!("~{} match, estimated", answer.total_size)
                } else {
                    format!("{} match", answer.total_size)
                };
                if first_view.is_none() {
                    first_view = Some(html);
                }
            }
        }
        let m = Measured {
            who,
            bare: percentiles(bare_ms),
            page: percentiles(page_ms),
            server: percentiles(server_ms),
            rows,
            controls,
            total,
            phases: phase_ms
                .into_iter()
                .map(|(name, all)| (name, percentiles(all)))
                .collect(),
        };
        println!(
            "\n{who}: filter `{}`, order_by `{}`, {} a page ({}); page shows {} rows, {} with \
             sync now (row scopes)",
            request.filter, request.order_by, request.page_size, m.total, m.rows, m.controls
        );
        line(&format!("{who}: bare ListMailboxes over gRPC"), &m.bare);
        line(&format!("{who}: GET /mailboxes over HTTP"), &m.page);
        line(
            &format!("{who}: GET /mailboxes, x-response-time"),
            &m.server,
        );
        println!(
            "    page / bare: p50 {:.2}x, p95 {:.2}x",
            m.page.p50 / m.bare.p50,
            m.page.p95 / m.bare.p95
        );
        if !m.phases.is_empty() {
            println!(
                "    the page's phases (server-timing), p50 / p95 ms: {}",
                m.phases
                    .iter()
                    .map(|(n, p)| format!("{n} {:.2} / {:.2}", p.p50, p.p95))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        results.push(m);
    }

    // What a first visit downloads: the HTML and the static files it links.
    let html = first_view.unwrap_or_default();
    let mut linked: Vec<String> = html
        .split("\"/static/")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(|path| format!("/static/{path}"))
        .collect();
    linked.sort();
    linked.dedup();
    let (mut css, mut js, mut other) = (0usize, 0usize, 0usize);
    println!("\nFirst view of /mailboxes (admin), uncompressed");
    println!("{:<58} {:>9} bytes", "HTML", html.len());
    for path in &linked {
        let reply = http(&client, "GET", &format!("{web}{path}"), "", None).await?;
        anyhow::ensure!(reply.status == 200, "GET {path}: {}", reply.status);
        let size = reply.body.len();
        if path.ends_with(".css") {
            css += size;
        } else if path.ends_with(".js") {
            js += size;
        } else {
            other += size;
        }
        println!("{:<58} {:>9} bytes", path, size);
    }
    println!(
        "{:<58} {:>9} bytes (HTML {}, CSS {css}, JS {js}, other {other})",
        "total",
        html.len() + css + js + other,
        html.len()
    );
    let all: usize = mailroom_web::assets::sizes().iter().map(|(_, s)| s).sum();
    println!(
        "    every static file compiled in: {} bytes ({})",
        all,
        mailroom_web::assets::sizes()
            .iter()
            .map(|(n, s)| format!("{n} {s}"))
            .collect::<Vec<_>>()
            .join(", ")
    );

    println!("\nGoal: GET /mailboxes p50 <= 1.2x bare ListMailboxes");
    println!(
        "    {:<10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7}",
        "who", "bare p50", "bare p95", "page p50", "page p95", "server", "ratio"
    );
    for m in &results {
        println!(
            "    {:<10} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>6.2}x {}",
            m.who,
            m.bare.p50,
            m.bare.p95,
            m.page.p50,
            m.page.p95,
            m.server.p50,
            m.page.p50 / m.bare.p50,
            if m.page.p50 / m.bare.p50 <= 1.2 {
                "ok"
            } else {
                "over"
            }
        );
    }
    if !args.supervisor {
        println!("    (supervisor skipped; --supervisor measures a level-2 head too)");
    }
    stop.cancel();
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(())
}
